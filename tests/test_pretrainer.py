"""LeafPretrainer: inputs, training, schedule, checkpoints, resume (also after a real kill)."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from sklearn.base import clone

from leaf_sk import _net
from leaf_sk.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from leaf_sk.nn import LeafConfig, STRPretrainer
from leaf_sk.pretrainer import MODEL_FILE, RESUME_FILE, LeafPretrainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*template channels .* are interpolated:UserWarning")

REPO = Path(__file__).resolve().parents[1]
CH_NAMES = ["Fz", "C3", "Cz", "C4", "Pz", "O1", "O2", "FCz"]
# Tiny network, 1-s trials of 2 windows, 4 training batches and 1 validation batch per epoch.
PARAMS = dict(ch_names=CH_NAMES, sfreq=200.0, n_windows=2, batch_size=4, valid_every=5,
              verbose=0, random_state=0)




def make_trials(n_trials=20, n_times=200, sfreq=200.0, n_channels=len(CH_NAMES), seed=0):
    """Unlabelled trials in µV, shape (n_trials, n_channels, n_times)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / sfreq
    alpha = np.sin(2 * np.pi * 10 * t) * rng.uniform(5, 20, (n_trials, n_channels, 1))
    return alpha + rng.standard_normal((n_trials, n_channels, n_times)) * 10.0


def make_raw(ch_names, sfreq, seconds, seed=0):
    import mne

    data = np.random.default_rng(seed).standard_normal((len(ch_names), int(seconds * sfreq))) * 1e-5
    return mne.io.RawArray(data, mne.create_info(ch_names, sfreq, "eeg"), verbose=False)


def weights(pretrainer):
    return {k: v.detach().clone() for k, v in pretrainer.module_.state_dict().items()}


def assert_same_weights(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-6, atol=1e-7,
                                   msg=lambda m, key=key: f"{key}: {m}")


LOSS_KEYS = ("train_loss", "valid_loss", "train_L_S", "train_L_T", "valid_L_S", "valid_L_T",
             "train_zero_S", "train_zero_T", "valid_zero_S", "valid_zero_T", "lr")


def assert_same_losses(actual, expected):
    assert len(actual) == len(expected)
    for row_a, row_e in zip(actual, expected):
        for key in LOSS_KEYS:
            torch.testing.assert_close(row_a[key], row_e[key], rtol=1e-6, atol=1e-9)
        assert row_a["epoch"] == row_e["epoch"]
        assert row_a["train_loss_best"] == row_e["train_loss_best"]
        assert row_a["valid_loss_best"] == row_e["valid_loss_best"]


class _Probe(Callback):
    """Per training step: the learning rate of every parameter group."""

    def initialize(self):
        self.lrs_ = []
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.lrs_.append([group["lr"] for group in net.optimizer_.param_groups])


class _StopAfter(Callback):
    """Raise KeyboardInterrupt (a user's Ctrl-C) at the end of an epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture
def add_callback(monkeypatch):
    """Append a callback to the net that the next fits build."""
    def add(callback):
        make_net = LeafPretrainer._make_net

        def patched(self, module, seed):
            net = make_net(self, module, seed)
            net.callbacks.append((type(callback).__name__, callback))
            return net

        monkeypatch.setattr(LeafPretrainer, "_make_net", patched)
        return callback
    return add


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 4-epoch run: fitted estimator and its checkpoint folder."""
    folder = tmp_path_factory.mktemp("reference")
    pretrainer = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(folder), resume=True,
                                **PARAMS)
    return pretrainer.fit(make_trials()), folder


# --- fitting ------------------------------------------------------------------------------------


def test_fit_array(reference_run):
    pretrainer, folder = reference_run
    assert isinstance(pretrainer.module_, STRPretrainer) and not pretrainer.module_.training
    assert pretrainer.config_ == LeafConfig.from_size("tiny")
    assert [row["epoch"] for row in pretrainer.history_] == [1, 2, 3, 4]
    for row in pretrainer.history_:
        for key in LOSS_KEYS:
            assert isinstance(row[key], float) and math.isfinite(row[key]), key
        assert row["train_loss"] == pytest.approx(row["train_L_S"] + row["train_L_T"], rel=1e-5)
        assert row["train_batch_count"] == 4 and row["valid_batch_count"] == 1
    assert pretrainer.n_windows_seen_ == 16 * 2 * 4
    assert pretrainer.windows_per_second_ > 0
    json.dumps(pretrainer.history_)  # plain Python values


def test_loss_is_repeatable(reference_run):
    pretrainer, _ = reference_run
    state = torch.random.get_rng_state()
    first = pretrainer.loss(make_trials(n_trials=6, seed=5))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert set(first) == {"L_S", "L_T", "zero_S", "zero_T"}
    assert all(math.isfinite(v) for v in first.values())
    assert pretrainer.loss(make_trials(n_trials=6, seed=5)) == first
    with pytest.raises(ValueError, match="too short for STR pretraining"):
        pretrainer.loss(make_trials(n_times=150))


def test_training_data_on_the_template():
    pretrainer = LeafPretrainer("tiny", **{**PARAMS, "sfreq": 250.0, "n_windows": 4})
    data = pretrainer._training_data(make_trials(n_times=375, sfreq=250.0))  # 1.5 s at 250 Hz
    assert data.shape == (20, 65, 400) and data.dtype == np.float32
    assert np.all(data[..., 300:] == 0)  # 3 windows, zero-padded to 4
    assert np.abs(np.median(data[:, :, :300], axis=(1, 2))).max() < 0.2  # robust-scaled


def test_fit_epochs():
    import mne

    info = mne.create_info(CH_NAMES, 250.0, "eeg")
    epochs = mne.EpochsArray(make_trials(n_times=500, sfreq=250.0) * 1e-6, info, verbose=False)
    pretrainer = LeafPretrainer("tiny", max_epochs=1, n_windows=4, batch_size=8, verbose=0,
                                random_state=0)
    assert pretrainer._training_data(epochs).shape == (20, 65, 400)
    pretrainer.fit(epochs)
    assert len(pretrainer.history_) == 1


def test_fit_list_of_raw_cut_into_segments():
    raws = [make_raw(CH_NAMES, 250.0, 10.0, seed=1),
            make_raw(["Fp1", "Fp2", "C3", "C4", "O1", "O2"], 128.0, 6.0, seed=2)]
    pretrainer = LeafPretrainer("tiny", segment_seconds=2.0, n_windows=4, max_epochs=1,
                                batch_size=4, valid_every=0, verbose=0, random_state=0)
    assert pretrainer._training_data(raws).shape == (5 + 3, 65, 400)
    pretrainer.fit(raws)
    assert "valid_L_S" not in pretrainer.history_[0]


def test_same_seed_same_weights_and_global_rng_untouched():
    X = make_trials()
    state = torch.random.get_rng_state()
    first = LeafPretrainer("tiny", max_epochs=2, **PARAMS).fit(X)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = LeafPretrainer("tiny", max_epochs=2, **PARAMS).fit(X)
    assert_same_weights(weights(second), weights(first))
    other = LeafPretrainer("tiny", max_epochs=2, **{**PARAMS, "random_state": 1}).fit(X)
    assert not torch.equal(other.module_.tower.mask_inProj.weight,
                           first.module_.tower.mask_inProj.weight)


def test_clone_and_params():
    pretrainer = LeafPretrainer("tiny", max_epochs=3, **PARAMS)
    copy = clone(pretrainer)
    assert copy.get_params() == pretrainer.get_params()
    assert not hasattr(copy, "module_")


# --- optimiser and learning-rate schedule --------------------------------------------------------


def test_warmup_cosine_factor_shape():
    schedule = _net.WarmupCosineLR(warmup_epochs=1.0, final_ratio=0.1)
    steps_per_epoch, total = 5, 20
    factors = [schedule.factor(step, total, steps_per_epoch) for step in range(total)]
    np.testing.assert_allclose(factors[:5], [0.2, 0.4, 0.6, 0.8, 1.0])  # linear warm-up
    assert factors[5] == pytest.approx(1.0)  # cosine starts at the peak
    assert all(a > b for a, b in zip(factors[5:], factors[6:]))  # then decreases
    assert factors[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))
    assert schedule.factor(total, total, steps_per_epoch) == pytest.approx(0.1)  # the end point
    midpoint = 5 + 15 / 2
    assert schedule.factor(midpoint, total, steps_per_epoch) == pytest.approx(0.55)
    half_epoch = _net.WarmupCosineLR(warmup_epochs=0.5, final_ratio=0.0)
    assert [half_epoch.factor(s, 10, 4) for s in range(3)] == [0.5, 1.0, 1.0]


def test_lr_schedule_per_step_and_tokenizer_group(add_callback):
    probe = add_callback(_Probe())
    params = {**PARAMS, "lr": 1e-3, "lr_tokenizer": 5e-3, "weight_decay": 0.05,
              "warmup_epochs": 1.0, "final_lr_ratio": 0.2}
    pretrainer = LeafPretrainer("tiny", max_epochs=3, **params).fit(make_trials())
    optimizer = pretrainer.net_.optimizer_
    assert isinstance(optimizer, torch.optim.AdamW)
    tokenizer_params = {id(p) for p in pretrainer.module_.tower.tokenizer.parameters()}
    groups = optimizer.param_groups
    assert {id(p) for p in groups[0]["params"]} == tokenizer_params
    assert not tokenizer_params & {id(p) for p in groups[1]["params"]}
    assert all(group["weight_decay"] == 0.05 for group in groups)
    lrs = np.array(probe.lrs_)  # (steps, groups)
    schedule = _net.WarmupCosineLR(1.0, 0.2)
    factors = np.array([schedule.factor(step, 12, 4) for step in range(12)])
    assert lrs.shape == (12, 2)
    np.testing.assert_allclose(lrs[:, 0], 5e-3 * factors)
    np.testing.assert_allclose(lrs[:, 1], 1e-3 * factors)
    assert lrs[:, 1].argmax() == 3 and lrs[-1, 1] < lrs[4, 1]
    assert [row["lr"] for row in pretrainer.history_] == pytest.approx(list(lrs[3::4, 1]))


# --- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_dir_holds_tower_and_history(reference_run):
    pretrainer, folder = reference_run
    assert sorted(p.name for p in folder.iterdir()) == sorted([MODEL_FILE, RESUME_FILE])
    info = read_metadata(folder / MODEL_FILE)
    assert info["parts"] == ["tower"]
    assert info["history"] == pretrainer.history_
    assert info["provenance"]["trainer"] == "LeafPretrainer"
    assert info["provenance"]["epochs"] == 4
    assert info["provenance"]["params"]["max_epochs"] == 4
    loaded, _ = load_checkpoint(folder / MODEL_FILE)
    x = torch.from_numpy(pretrainer._training_data(make_trials(n_trials=3)))
    with torch.no_grad():
        torch.testing.assert_close(loaded.tower(x), pretrainer.module_.tower(x), rtol=0, atol=0)
    resume = torch.load(folder / RESUME_FILE, weights_only=True)
    assert len(resume["history"]) == 4


def test_start_from_checkpoint(tmp_path, reference_run):
    pretrainer, folder = reference_run
    start = LeafPretrainer("tiny", checkpoint=str(folder / MODEL_FILE), max_epochs=0, **PARAMS)
    start.fit(make_trials())
    assert start.history_ == [] and math.isnan(start.windows_per_second_)
    assert_same_weights(weights(start), weights(pretrainer))
    with pytest.raises(ValueError, match="another size than size='small'"):
        LeafPretrainer("small", checkpoint=str(folder / MODEL_FILE), **PARAMS).fit(make_trials())


# --- resume --------------------------------------------------------------------------------------


def test_resume_after_keyboard_interrupt(tmp_path, reference_run, add_callback):
    reference, _ = reference_run
    add_callback(_StopAfter(2))
    interrupted = r"interrupted after epoch 2 of 4; fit again .*resume=True"
    with pytest.warns(UserWarning, match=interrupted):
        stopped = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(tmp_path), resume=True, **PARAMS)
        stopped.fit(make_trials())
    assert len(stopped.history_) == 2
    assert len(torch.load(tmp_path / RESUME_FILE, weights_only=True)["history"]) == 2
    add_callback(Callback())  # no more interruptions
    resumed = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(tmp_path), resume=True, **PARAMS)
    resumed.fit(make_trials())
    assert resumed.n_windows_seen_ == 16 * 2 * 2  # only the two remaining epochs ran
    assert_same_weights(weights(resumed), weights(reference))
    assert_same_losses(resumed.history_, reference.history_)


class _StopInEpoch(Callback):
    """Raise KeyboardInterrupt (a user's Ctrl-C) after the first training step of an epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == self.epoch:
            self.weights_ = {k: v.detach().clone() for k, v in net.module_.state_dict().items()}
            raise KeyboardInterrupt


def test_interrupt_within_an_epoch_keeps_the_last_complete_one(tmp_path, reference_run,
                                                               add_callback):
    """Ctrl-C in epoch 3: the fit, and the file it writes, are epoch 2, named as such."""
    reference, _ = reference_run
    stop = add_callback(_StopInEpoch(3))
    stopped = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(tmp_path), resume=True,
                             **PARAMS)
    with pytest.warns(UserWarning, match=r"interrupted after epoch 2 of 4; fit again .*"
                      r"resume=True .*epoch 3 was cut short.*holds epoch 2.*tower-epoch002"):
        stopped.fit(make_trials())
    assert stopped.interrupted_
    assert [row["epoch"] for row in stopped.history_] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESUME_FILE,
                                                          "tower-epoch002.safetensors"]
    assert stopped.checkpoint_path_ == tmp_path / "tower-epoch002.safetensors"
    # The estimator holds epoch 2 (the resume file's state), not the step taken in epoch 3.
    resume = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    assert len(resume["history"]) == 2
    assert_same_weights(weights(stopped), resume["module"])
    assert any(not torch.equal(stop.weights_[k], resume["module"][k]) for k in stop.weights_)
    info = read_metadata(stopped.checkpoint_path_)
    assert info["history"] == stopped.history_
    assert info["provenance"]["epochs"] == 2 and info["provenance"]["interrupted"] is True
    loaded, _ = load_checkpoint(stopped.checkpoint_path_)
    for key, value in loaded.tower.state_dict().items():
        assert torch.equal(value, resume["module"][f"tower.{key}"]), key
    stop.epoch = None  # no more interruptions
    resumed = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(tmp_path), resume=True,
                             **PARAMS).fit(make_trials())
    assert not resumed.interrupted_
    assert_same_weights(weights(resumed), weights(reference))
    assert_same_losses(resumed.history_, reference.history_)
    assert resumed.checkpoint_path_ == tmp_path / MODEL_FILE


def test_interrupt_without_checkpoint_dir_drops_the_cut_epoch(add_callback):
    add_callback(_StopInEpoch(2))
    stopped = LeafPretrainer("tiny", max_epochs=3, **PARAMS)
    with pytest.warns(UserWarning, match=r"interrupted after epoch 1 of 3; epoch 2 was cut short"
                      r".*last training step \(within epoch 2\).*checkpoint_dir="):
        stopped.fit(make_trials())
    assert stopped.interrupted_ and stopped.checkpoint_path_ is None
    assert [row["epoch"] for row in stopped.history_] == [1]
    assert stopped.n_windows_seen_ == (16 + 4) * 2  # one epoch and one step of the next


def test_fit_stores_the_data_description(tmp_path):
    description = {"datasets": [{"name": "synthetic", "subjects": [1, 2]}],
                   "band": {"l_freq": 1.0, "h_freq": None}}
    pretrainer = LeafPretrainer("tiny", max_epochs=1, checkpoint_dir=str(tmp_path), **PARAMS)
    pretrainer.fit(make_trials(), data_description=description)
    assert pretrainer.data_description_ == description and not pretrainer.interrupted_
    provenance = read_metadata(tmp_path / MODEL_FILE)["provenance"]
    assert provenance["data"] == description and provenance["interrupted"] is False
    with pytest.raises(ValueError, match=r"data_description must be JSON-serialisable"):
        pretrainer.fit(make_trials(), data_description={"band": np.float32(1.0)})
    with pytest.raises(TypeError, match=r"data_description must be a dict or None, got str"):
        pretrainer.fit(make_trials(), data_description="PhysionetMI")


def test_resume_with_another_max_epochs_says_how_the_schedule_changes(tmp_path, add_callback):
    first = LeafPretrainer("tiny", max_epochs=2, checkpoint_dir=str(tmp_path), resume=True,
                           **PARAMS).fit(make_trials())
    assert torch.load(tmp_path / RESUME_FILE, weights_only=True)["max_epochs"] == 2
    last_lr = first.history_[-1]["lr"]
    probe = add_callback(_Probe())
    longer = LeafPretrainer("tiny", max_epochs=3, checkpoint_dir=str(tmp_path), resume=True,
                            **PARAMS)
    with pytest.warns(UserWarning) as record:
        longer.fit(make_trials())
    next_lr = probe.lrs_[0][1]  # the first step of epoch 3, the main parameter group
    assert next_lr > last_lr
    messages = [str(w.message) for w in record if "schedule" in str(w.message)]
    assert len(messages) == 1, messages
    assert re.search(
        rf"written by a run of max_epochs=2; continuing to max_epochs=3 recomputes the warm-up/"
        rf"cosine schedule over 3 epochs: the learning rate goes from {last_lr:.3g} at epoch 2 "
        rf"back up to {next_lr:.3g} at epoch 3\. .*schedule ended at epoch 2", messages[0]), \
        messages[0]
    # Fewer epochs than the file holds: nothing to train, said so.
    with pytest.warns(UserWarning, match=r"holds 3 epochs, more than max_epochs=2: nothing is "
                      r"trained.*max_epochs=3"):
        LeafPretrainer("tiny", max_epochs=2, checkpoint_dir=str(tmp_path), resume=True,
                       **PARAMS).fit(make_trials())
    # A resume file of an earlier leaf-sk (no max_epochs in it) still loads, without a warning.
    state = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    del state["max_epochs"]
    torch.save(state, tmp_path / RESUME_FILE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*template channels .* are interpolated")
        old = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(tmp_path), resume=True,
                             **PARAMS).fit(make_trials())
    assert [row["epoch"] for row in old.history_] == [1, 2, 3, 4]


_CHILD = """
import sys, time
from pathlib import Path
import numpy as np
from skorch.callbacks import Callback
from leaf_sk.pretrainer import LeafPretrainer

folder, pause_after = Path(sys.argv[1]), int(sys.argv[2])
params = {params!r}

class PauseAfter(Callback):
    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == pause_after:
            (folder / "paused").write_text("")
            time.sleep(600)  # killed here

make_net = LeafPretrainer._make_net
def with_pause(self, module, seed):
    net = make_net(self, module, seed)
    net.callbacks.append(("pause", PauseAfter()))
    return net
LeafPretrainer._make_net = with_pause
X = np.load(folder / "X.npy")
LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(folder / "run"), resume=True, **params).fit(X)
"""


def test_resume_after_sigkill(tmp_path, reference_run):
    """A run killed (SIGKILL) after epoch 2 continues to the uninterrupted run's final state."""
    reference, _ = reference_run
    np.save(tmp_path / "X.npy", make_trials())
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(params=PARAMS)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen([sys.executable, str(script), str(tmp_path), "2"], cwd=REPO,
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not (tmp_path / "paused").exists():
                assert child.poll() is None, (tmp_path / "child.log").read_text()
                assert time.monotonic() < deadline, "the child never reached epoch 2"
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [RESUME_FILE]  # no final file, no temp file
    assert len(torch.load(run / RESUME_FILE, weights_only=True)["history"]) == 2
    resumed = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(run), resume=True, **PARAMS)
    resumed.fit(np.load(tmp_path / "X.npy"))
    assert_same_weights(weights(resumed), weights(reference))
    assert_same_losses(resumed.history_, reference.history_)
    assert read_metadata(run / MODEL_FILE)["history"] == resumed.history_


def test_resume_false_starts_over(reference_run, tmp_path):
    reference, folder = reference_run
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / RESUME_FILE).write_bytes((folder / RESUME_FILE).read_bytes())
    done = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(copy), resume=True, **PARAMS)
    done.fit(make_trials())  # nothing left to do: the history is the file's
    assert done.n_windows_seen_ == 0
    assert_same_weights(weights(done), weights(reference))
    assert_same_losses(done.history_, reference.history_)
    again = LeafPretrainer("tiny", max_epochs=1, checkpoint_dir=str(copy), resume=False, **PARAMS)
    again.fit(make_trials())
    assert len(again.history_) == 1


def test_resume_file_of_another_run_gives_a_clear_error(reference_run, tmp_path):
    _, folder = reference_run
    (tmp_path / RESUME_FILE).write_bytes((folder / RESUME_FILE).read_bytes())
    other = LeafPretrainer("tiny", config={"d_model": 32}, max_epochs=5,
                           checkpoint_dir=str(tmp_path), resume=True, **PARAMS)
    with pytest.raises(ValueError, match=r"resume file .* does not fit this run .*resume=False"):
        other.fit(make_trials())


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("X, params, error, match", [
    (make_trials()[0], {}, ValueError, r"X must be 3-D .*got shape \(8, 200\).*X\[np.newaxis\]"),
    (make_trials()[..., 0], {}, ValueError, r"X must be 3-D"),
    (np.where(np.arange(200) == 7, np.nan, make_trials()), {}, ValueError,
     r"NaN or Inf values.*drop those trials or replace"),
    (np.where(np.arange(200) == 7, np.inf, make_trials()), {}, ValueError, r"NaN or Inf"),
    (make_trials(n_times=199), {}, ValueError,
     r"too short for STR pretraining.*give 1 whole 0.5-s window.*at least 1 s"),
    (make_trials(n_times=240, sfreq=250.0), {"sfreq": 250.0}, ValueError,
     r"too short for STR pretraining"),
    (make_trials(n_times=50), {}, ValueError, r"too short"),
    (make_trials(), {"ch_names": None}, ValueError, r"ch_names is required when X is an array"),
    (make_trials(), {"ch_names": CH_NAMES[:-1]}, ValueError,
     r"X has 8 channels but ch_names lists 7"),
    (make_trials(), {"ch_names": CH_NAMES[:-1] + ["Foo1"]}, ValueError,
     r"Unknown EEG channel name\(s\) \['Foo1'\].*rename"),
    (make_trials(), {"ch_names": CH_NAMES[:-1] + ["C3"]}, ValueError,
     r"ch_names lists these channels more than once: \['C3'\]"),
    (make_trials(), {"sfreq": None}, ValueError, r"sfreq is required when X is an array"),
    (make_trials(), {"sfreq": -200.0}, ValueError, r"'sfreq' parameter of LeafPretrainer"),
    (make_trials(), {"sfreq": 0}, ValueError, r"'sfreq' parameter of LeafPretrainer"),
    (make_trials(), {"n_windows": 1}, ValueError, r"'n_windows' parameter"),
])
def test_bad_input(X, params, error, match):
    with pytest.raises(error, match=match):
        LeafPretrainer("tiny", max_epochs=1, **{**PARAMS, **params}).fit(X)


def test_one_second_trials_are_enough():
    pretrainer = LeafPretrainer("tiny", max_epochs=1, **{**PARAMS, "sfreq": 256.0})
    assert pretrainer._training_data(make_trials(n_times=256, sfreq=256.0)).shape == (20, 65, 200)


def test_short_element_of_a_list_is_named():
    X = [make_trials(), make_trials(n_times=150)]
    with pytest.raises(ValueError, match=r"trials of X\[1\] are too short"):
        LeafPretrainer("tiny", max_epochs=1, **PARAMS).fit(X)


def test_checkpoint_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not weights\n" * 10)
    with pytest.raises(ValueError, match="not a leaf-sk checkpoint .*nor a LEAF release file"):
        LeafPretrainer("tiny", checkpoint=str(path), max_epochs=1, **PARAMS).fit(make_trials())


def test_checkpoint_saved_from_a_model(tmp_path):
    """A LeafModel checkpoint (Tower + Q-Former) also seeds pretraining; only the Tower is used."""
    from leaf_sk.nn import LeafModel

    torch.manual_seed(3)
    model = LeafModel(LeafConfig.from_size("tiny", d_text=24))
    path = save_checkpoint(tmp_path / "model.safetensors", model)
    start = LeafPretrainer("tiny", checkpoint=str(path), max_epochs=0, **PARAMS).fit(make_trials())
    for key, value in model.tower.state_dict().items():
        assert torch.equal(start.module_.tower.state_dict()[key], value), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_gpu(tmp_path, add_callback):
    """On CUDA too (the per-epoch seeds fork the CUDA RNG), resuming reaches the same weights."""
    params = {**PARAMS, "device": "cuda"}
    reference = LeafPretrainer("tiny", max_epochs=3, **params).fit(make_trials())
    assert next(reference.module_.parameters()).is_cuda
    add_callback(_StopAfter(1))
    with pytest.warns(UserWarning, match="interrupted after epoch 1 of 3"):
        LeafPretrainer("tiny", max_epochs=3, checkpoint_dir=str(tmp_path), resume=True, **params).fit(
            make_trials())
    add_callback(Callback())
    resumed = LeafPretrainer("tiny", max_epochs=3, checkpoint_dir=str(tmp_path), resume=True, **params)
    resumed.fit(make_trials())
    for key, value in weights(reference).items():
        torch.testing.assert_close(weights(resumed)[key], value, rtol=1e-5, atol=1e-6)
    loaded, _ = load_checkpoint(tmp_path / MODEL_FILE)
    assert not next(loaded.parameters()).is_cuda


def test_resume_needs_an_int_random_state(tmp_path):
    with pytest.raises(ValueError, match=r"resume=True needs an int random_state.*random_state=0"):
        LeafPretrainer("tiny", checkpoint_dir=str(tmp_path), resume=True,
                       **{**PARAMS, "random_state": None}).fit(make_trials())


def test_refit_without_resume_trains_again(reference_run, tmp_path):
    import shutil

    reference, folder = reference_run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    refit = LeafPretrainer("tiny", max_epochs=4, checkpoint_dir=str(copy), **PARAMS)
    refit.fit(make_trials(seed=5))  # default resume=False: a finished run is not handed back
    assert refit.n_windows_seen_ > 0
    assert len(refit.history_) == 4
