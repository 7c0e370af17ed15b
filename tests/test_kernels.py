"""A trial's output depends on that trial only: not on the batch around it, on any CPU kernel.

Matrix and convolution kernels choose their blocking, hence their float32 rounding, from the
shapes they are given and from the instruction set of the CPU. The estimators therefore run
fixed-shape blocks and row-wise small products; these tests pin that down exactly
(``assert_array_equal``), here and under capped instruction sets (oneDNN's
``DNNL_MAX_CPU_ISA``, ATen's ``ATEN_CPU_CAPABILITY``), which reproduce other CPUs' kernel paths.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from leaf_sk import LeafEncoder, LeafInstructionClassifier

pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")


def _output(estimator, X):
    method = "transform" if hasattr(estimator, "transform") else "decision_function"
    return getattr(estimator, method)(X)


@pytest.mark.parametrize("batch_size", [3, 7])
@pytest.mark.parametrize("cls", [LeafEncoder, LeafInstructionClassifier], ids=lambda c: c.__name__)
def test_outputs_do_not_depend_on_the_batch(cls, batch_size, make_estimator, make_trials):
    X, y = make_trials(n_trials=11)
    estimator = make_estimator(cls, instruction="motor imagery", batch_size=batch_size).fit(X, y)
    full = _output(estimator, X)
    for trial in range(len(X)):
        np.testing.assert_array_equal(_output(estimator, X[[trial]])[0], full[trial])
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(_output(estimator, X[order]), full[order])
    np.testing.assert_array_equal(_output(estimator, X[2:7]), full[2:7])


_CHECK_SCRIPT = textwrap.dedent("""
    import warnings
    import numpy as np
    from sklearn.utils.estimator_checks import (check_methods_sample_order_invariance,
                                                check_methods_subset_invariance)
    from leaf_sk import LeafEncoder, LeafInstructionClassifier

    warnings.simplefilter("ignore")
    params = dict(checkpoint=None, size="tiny", text_encoder="hashing", ch_names=["Cz"],
                  sfreq=1.0, device="cpu", random_state=0)
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(13, 3)) * 3
    y = (X[:, 0] > 1.5).astype(int)
    for batch_size in (4,):
        for estimator in (LeafEncoder(batch_size=batch_size, **params),
                          LeafEncoder(batch_size=batch_size, pooling="logvar", **params),
                          LeafInstructionClassifier(max_epochs=1, batch_size=batch_size, **params)):
            name = type(estimator).__name__
            check_methods_sample_order_invariance(name, estimator)
            check_methods_subset_invariance(name, estimator)
            fitted = estimator.fit(X, y)
            method = getattr(fitted, "transform", None) or fitted.decision_function
            full = method(X)
            for trial in range(len(X)):
                np.testing.assert_array_equal(method(X[[trial]])[0], full[trial])
    print("invariant")
""")


@pytest.mark.parametrize("cap", [
    {},
    {"DNNL_MAX_CPU_ISA": "SSE41"},
    {"ATEN_CPU_CAPABILITY": "default"},
    {"DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
], ids=lambda cap: ",".join(f"{k}={v}" for k, v in cap.items()) or "native")
def test_estimator_checks_hold_under_capped_kernels(cap):
    # One thread: on a busy 2-core machine two OpenMP threads wait at every barrier.
    env = {**os.environ, **cap, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "invariant" in result.stdout
