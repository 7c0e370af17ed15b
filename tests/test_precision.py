"""The precision parameter: bfloat16 only where the hardware computes it natively."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import leaf_sk._precision as precision_module
from leaf_sk import LeafEncoder, LeafInstructionClassifier
from leaf_sk._precision import bf16_is_native, cpu_flags, resolve_precision

pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")


def _with_flags(monkeypatch, flags):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma"}, "float32"),
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "amx_bf16", "amx_tile"}, "bfloat16"),
    (set(), "float32"),
])
def test_auto_picks_bf16_only_on_cpus_that_have_it(monkeypatch, flags, expected):
    _with_flags(monkeypatch, flags)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("float32", "cpu") == "float32"


def test_bf16_where_it_is_emulated_warns(monkeypatch):
    _with_flags(monkeypatch, {"avx2", "fma"})
    with pytest.warns(UserWarning, match="no native bfloat16.*precision='auto' or 'float32'"):
        assert resolve_precision("bfloat16", "cpu") == "bfloat16"


def test_cpu_flags_are_read_once():
    assert cpu_flags() is cpu_flags()
    assert isinstance(cpu_flags(), frozenset)


@pytest.mark.parametrize("cls", [LeafEncoder, LeafInstructionClassifier], ids=lambda c: c.__name__)
def test_estimators_resolve_precision_on_this_machine(cls, make_estimator, make_trials):
    X, y = make_trials(n_trials=4)
    fitted = make_estimator(cls, precision="auto").fit(X, y)
    assert fitted.precision_ == ("bfloat16" if bf16_is_native("cpu") else "float32")
    with pytest.raises(InvalidParameterError, match="precision"):
        make_estimator(cls, precision="float16").fit(X, y)


def _cosine(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.filterwarnings("ignore:precision='bfloat16':UserWarning")
def test_bf16_embeddings_are_close_to_float32(make_estimator, make_trials):
    X, _ = make_trials(n_trials=3, duration=2.0)
    fp32 = make_estimator(LeafEncoder, size="small", precision="float32").fit(X)
    bf16 = make_estimator(LeafEncoder, size="small", precision="bfloat16").fit(X)
    assert bf16.precision_ == "bfloat16"
    a, b = fp32.transform(X), bf16.transform(X)
    assert a.dtype == b.dtype == np.float32
    assert not np.array_equal(a, b)          # bf16 did run
    assert _cosine(a, b).min() > 0.999
