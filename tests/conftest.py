"""Shared, seeded fixtures: pyRiemann-style factories for EEG trials, Epochs and tiny estimators."""

import os
from pathlib import Path

import mne
import numpy as np
import pytest
import torch

# The tiny test networks do many small matrix products; with two OpenMP threads on a busy
# 2-core machine every one of them waits at a barrier (measured: 1.3 s against 0.014 s per
# training step). One thread keeps the test run fast and its timing stable.
torch.set_num_threads(1)

# The 22 EEG channels of BCI Competition IV 2a, in the dataset's order.
BCI_IV_2A = ("Fz FC3 FC1 FCz FC2 FC4 C5 C3 C1 Cz C2 C4 C6 CP3 CP1 CPz CP2 CP4 P1 Pz P2 POz").split()
SFREQ = 250.0
CLASSES = ("left_hand", "right_hand")
MUSE_HEADER = ["timestamps", "TP9", "AF7", "AF8", "TP10", "Right AUX", "Marker0"]


def write_muse_csv(path, *, n_samples=1024, sfreq=256.0, header=MUSE_HEADER, seed=0):
    """A small muse-lsl style file: ms-rounded timestamps, µV values, codes at 3 samples.

    Returns the written table, shape (n_samples, len(header)).
    """
    rng = np.random.default_rng(seed)
    table = np.zeros((n_samples, len(header)))
    table[:, 0] = np.round(1000.0 + np.arange(n_samples) / sfreq, 3)
    table[:, 1:6] = np.round(rng.standard_normal((n_samples, 5)) * 20.0, 3)
    table[[10, 300, 700], -1] = [1, 2, 1]
    np.savetxt(path, table, delimiter=",", header=",".join(header), comments="", fmt="%.3f")
    return table


@pytest.fixture
def ch_names():
    """The 22 BCI-IV-2a channel names of ``make_trials`` (a new list each time)."""
    return list(BCI_IV_2A)


@pytest.fixture
def make_trials():
    """Factory: ``(X, y)`` with X in µV, shape (n_trials, 22, duration * 250), string labels.

    Class ``left_hand`` carries a 10 Hz rhythm over the right motor cortex (C4, CP4, FC4),
    ``right_hand`` over the left (C3, CP3, FC3), on top of seeded white noise.
    """
    def _make_trials(n_trials=8, duration=1.2, sfreq=SFREQ, ch_names=BCI_IV_2A, seed=0):
        rng = np.random.default_rng(seed)
        n_times = int(round(duration * sfreq))
        y = np.array([CLASSES[i % 2] for i in range(n_trials)])
        X = rng.standard_normal((n_trials, len(ch_names), n_times)) * 10.0
        rhythm = 20.0 * np.sin(2 * np.pi * 10.0 * np.arange(n_times) / sfreq)
        sides = {"left_hand": ("C4", "CP4", "FC4"), "right_hand": ("C3", "CP3", "FC3")}
        for trial, label in enumerate(y):
            for name in sides[label]:
                if name in ch_names:
                    X[trial, list(ch_names).index(name)] += rhythm
        return X, y

    return _make_trials


@pytest.fixture
def make_epochs(make_trials):
    """Factory: ``(epochs, y)``, an ``mne.EpochsArray`` in volts with a standard 10-20 montage.

    Events are coded 1 (``left_hand``) and 2 (``right_hand``), with those event names.
    """
    def _make_epochs(n_trials=8, duration=1.2, sfreq=SFREQ, ch_names=BCI_IV_2A, seed=0):
        X, y = make_trials(n_trials=n_trials, duration=duration, sfreq=sfreq, ch_names=ch_names,
                           seed=seed)
        info = mne.create_info(list(ch_names), sfreq, "eeg")
        codes = np.array([CLASSES.index(label) + 1 for label in y])
        events = np.column_stack([np.arange(n_trials) * 1000, np.zeros(n_trials, int), codes])
        epochs = mne.EpochsArray(X * 1e-6, info, events=events,
                                 event_id={name: i + 1 for i, name in enumerate(CLASSES)},
                                 verbose=False)
        # MNE 1.13 renamed standard_1020 to colin27_1020; older versions know the old name.
        builtin = mne.channels.get_builtin_montages()
        epochs.set_montage("colin27_1020" if "colin27_1020" in builtin else "standard_1020",
                           verbose=False)
        return epochs, y

    return _make_epochs


@pytest.fixture
def tiny_params():
    """Parameters for fast, deterministic CPU runs: tiny network, hashing text, one epoch,
    float32 (``precision="auto"`` is bfloat16 on bf16-native CPUs: tests of it say so)."""
    return dict(checkpoint=None, size="tiny", text_encoder="hashing", max_epochs=1, batch_size=4, device="cpu",
                precision="float32", random_state=0)


@pytest.fixture
def make_estimator(tiny_params):
    """Factory: ``make_estimator(cls, **overrides)``, a tiny instance for 22-channel arrays.

    Keeps the ``tiny_params`` that ``cls`` takes (``LeafEncoder`` has no ``max_epochs``) and
    sets ``ch_names`` and ``sfreq`` for the arrays of ``make_trials``.
    """
    def _make_estimator(cls, **overrides):
        names = cls().get_params()
        params = {k: v for k, v in tiny_params.items() if k in names}
        params.update(ch_names=list(BCI_IV_2A), sfreq=SFREQ)
        params.update(overrides)
        return cls(**params)

    return _make_estimator


@pytest.fixture(autouse=True)
def _fresh_channel_warnings():
    """Channel-map and amplitude warnings come once per process; each test starts afresh."""
    from leaf_sk import _input

    _input._WARNED_CHANNEL_SETS.clear()
    _input._WARNED_AMPLITUDES.clear()
    yield


def block_network(monkeypatch):
    """Make every socket connection and name lookup of this test fail, as offline."""
    import socket

    def blocked(*args, **kwargs):
        raise OSError("network blocked in test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)


def offline_without_data(monkeypatch, tmp_path):
    """An empty MNE data folder, no network: every dataset subject is absent. Returns the folder."""
    import os

    data = tmp_path / "mne_data"
    data.mkdir()
    monkeypatch.setenv("MNE_DATA", str(data))
    monkeypatch.setenv("_MNE_FAKE_HOME_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("MOABB_DOWNLOAD_PROVIDER", "upstream")
    for key in [k for k in os.environ if k.startswith("MNE_DATASETS_")]:
        monkeypatch.delenv(key)
    block_network(monkeypatch)
    return data


# The recordings laid out for MOABB beside the repository (../shared/data/mne_data).
SHARED_MNE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mne_data"


def use_shared_data(monkeypatch, folder):
    """Point MNE and MOABB at the data folder holding ``folder``, or skip the test.

    The folder is ``$MNE_DATA`` if set, else ../shared/data/mne_data; MOABB is told not to
    try its mirror. Returns the data folder.
    """
    data = Path(os.environ.get("MNE_DATA", SHARED_MNE_DATA))
    if not (data / folder).is_dir():
        pytest.skip(f"{folder} is not in {data}; set MNE_DATA to a MOABB data folder that holds it "
                    "(../shared/data/mne_data)")
    monkeypatch.setenv("MNE_DATA", str(data))
    monkeypatch.setenv("MOABB_DOWNLOAD_PROVIDER", "upstream")
    return data
