"""transform and predict stream the trials: memory does not grow with their number."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from leaf_sk import LeafEncoder
from leaf_sk._base import TrialBlocks, predict_in_batches

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# The bound: 100,000 4-s trials of 65 channels within 500 MB of growth beyond the
# input and the model. Measured on fewer trials; what grows with the count (the output) is
# extrapolated, the rest (blocks, batches, activations) must not depend on it.
_BOUND_TRIALS, _BOUND_BYTES = 100_000, 500 * 2**20

_MEMORY_SCRIPT = textwrap.dedent("""
    import ctypes, ctypes.util, gc, sys, tracemalloc, warnings
    import numpy as np
    from leaf_sk import LeafEncoder, LeafInstructionClassifier
    from leaf_sk.montage import TEMPLATE_CH_NAMES

    warnings.simplefilter("ignore")
    libc = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None
    libc = libc if libc is not None and hasattr(libc, "malloc_trim") else None
    path, n_trials = sys.argv[1], int(sys.argv[2])
    shape = (n_trials, 65, 800)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    rng = np.random.default_rng(0)
    for start in range(0, n_trials, 50):
        X[start:start + 50] = rng.standard_normal((len(X[start:start + 50]), 65, 800)) * 20
    X.flush()
    del X
    X = np.load(path, mmap_mode="r")
    in_memory = np.array(X)

    def rss(field):
        with open("/proc/self/status") as f:
            return 1024 * int(next(l for l in f if l.startswith(field)).split()[1])

    # float32 on every CPU: with bfloat16 autocast (precision="auto" where it is native) the
    # peak moved by tens of MB from run to run (75-194 MB against 85-113 in float32, 600 trials).
    common = dict(checkpoint=None, size="small", ch_names=list(TEMPLATE_CH_NAMES), sfreq=200.0,
                  device="cpu", precision="float32", batch_size=32, random_state=0)
    estimators = {
        "transform": LeafEncoder(**common),
        "predict": LeafInstructionClassifier(max_epochs=0, text_encoder="hashing",
                                             label_texts=["left hand", "right hand"], **common),
    }
    for method, estimator in estimators.items():
        estimator.fit(in_memory[:8])
        getattr(estimator, method)(in_memory[:40])          # libraries, bank and buffers warm
        # Numpy allocations while a memmap is read: it must never be copied whole.
        tracemalloc.start()
        out = getattr(estimator, method)(X)
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # Everything (numpy, torch's allocator, malloc) as the peak resident anonymous memory
        # of an in-memory input: the input is resident before the peak is reset.
        del out
        # Freed heap memory goes back to the system first, or reusing it would hide the peak.
        gc.collect()
        if libc is not None:
            libc.malloc_trim(0)
        before = rss("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        out = getattr(estimator, method)(in_memory)
        peak = rss("VmHWM") - before
        print(method, X.nbytes, traced, peak, out.nbytes)
""")


def test_transform_and_predict_memory_stays_flat(tmp_path):
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident memory")
    n_trials = 1200  # 250 MB: twice the working set of a batch of 32, a copy of it far more
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "x.npy"),
                             str(n_trials)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in
            (["transform"], ["predict"])]
    assert [row[0] for row in rows] == ["transform", "predict"]
    for method, input_bytes, traced, peak, output_bytes in rows:
        input_bytes, traced, peak, output_bytes = map(int, (input_bytes, traced, peak, output_bytes))
        # The memmap was read a block at a time: far less than its size was allocated.
        assert traced < input_bytes / 2, (method, traced, input_bytes)
        # Converting the whole input to float64 alone would take twice its size.
        assert peak < input_bytes, (method, peak, input_bytes)
        per_trial_output = output_bytes / n_trials
        extrapolated = peak - output_bytes + _BOUND_TRIALS * per_trial_output
        assert extrapolated < _BOUND_BYTES, (method, peak, output_bytes)


def test_memmap_input_in_small_blocks_gives_the_in_memory_result(tmp_path, make_trials,
                                                                 make_estimator, monkeypatch):
    import leaf_sk._base

    X, _ = make_trials(n_trials=9)
    path = tmp_path / "trials.npy"
    np.save(path, X)
    encoder = make_estimator(LeafEncoder, batch_size=4).fit(X)
    expected = encoder.transform(X)
    monkeypatch.setattr(leaf_sk._base, "_BLOCK_BYTES", 1)  # one trial per block
    np.testing.assert_array_equal(encoder.transform(np.load(path, mmap_mode="r")), expected)


def test_blocks_of_any_size_give_the_same_fixed_batches():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((23, 3)).astype(np.float32)
    seen = []

    def fn(batch):
        seen.append(tuple(batch.shape))
        return batch * 2

    whole = predict_in_batches(fn, data, 5, "cpu")
    sizes = [1, 7, 2, 9, 4]
    starts = np.cumsum([0] + sizes)
    blocks = TrialBlocks(23, iter([data[a:b] for a, b in zip(starts[:-1], starts[1:])]))
    streamed = predict_in_batches(fn, blocks, 5, "cpu")
    np.testing.assert_array_equal(streamed, whole)
    np.testing.assert_array_equal(whole, data * 2)
    assert set(seen) == {(5, 3)}


def test_errors_name_trials_in_the_whole_input(make_estimator, make_trials, monkeypatch):
    import leaf_sk._base

    X, y = make_trials(n_trials=12)
    encoder = make_estimator(LeafEncoder).fit(X)
    monkeypatch.setattr(leaf_sk._base, "_BLOCK_BYTES", 1)  # one trial per block
    X = X.copy()
    X[10, 2, 5] = np.nan
    with pytest.raises(ValueError, match=r"in 1 trial\(s\) \[10\]"):
        encoder.transform(X)
