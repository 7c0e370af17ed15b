"""Muse CSV reader and file finder."""

from pathlib import Path

import numpy as np
import pytest
from conftest import MUSE_HEADER, write_muse_csv

from leaf_sk._input import prepare_unlabelled
from leaf_sk.io import MUSE_EEG_CHANNELS, find_muse_files, read_muse_csv

MUSE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "muse"


def test_read_muse_csv(tmp_path):
    path = tmp_path / "rec.csv"
    table = write_muse_csv(path)
    raw = read_muse_csv(path)
    assert raw.ch_names == list(MUSE_EEG_CHANNELS)
    assert set(raw.get_channel_types()) == {"eeg"}
    assert raw.info["sfreq"] == 256.0 and raw.n_times == 1024
    np.testing.assert_allclose(raw.get_data(), table[:, 1:5].T * 1e-6)
    assert list(raw.annotations.description) == ["1", "2", "1"]
    np.testing.assert_allclose(raw.annotations.onset, np.array([10, 300, 700]) / 256.0, atol=1e-6)
    positions = raw.get_montage().get_positions()["ch_pos"]
    assert positions["TP9"][0] < 0 < positions["TP10"][0]


def test_read_muse_csv_marker_column_variant(tmp_path):
    path = tmp_path / "rec.csv"
    write_muse_csv(path, header=MUSE_HEADER[:-1] + ["Marker"])
    assert len(read_muse_csv(path).annotations) == 3


def test_read_muse_csv_off_nominal_rate_warns(tmp_path):
    path = tmp_path / "rec.csv"
    write_muse_csv(path, sfreq=220.0)
    with pytest.warns(UserWarning, match=r"timestamps give 220.0\d Hz, not the Muse's nominal 256 Hz"):
        raw = read_muse_csv(path)
    assert raw.info["sfreq"] == pytest.approx(220.0, rel=1e-3)


def test_read_muse_csv_wrong_columns(tmp_path):
    path = tmp_path / "other.csv"
    write_muse_csv(path, header=["time", "C3", "C4", "Cz", "Pz", "x", "y"])
    with pytest.raises(ValueError, match=r"not a Muse CSV file.*lacks the column\(s\) \['timestamps', "
                                         r"'TP9'.*wrap them in mne.io.RawArray"):
        read_muse_csv(path)


def test_find_muse_files(tmp_path):
    for name in ["b/s1/rec.csv.csv", "a/rec.csv", "a/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert find_muse_files(tmp_path) == [tmp_path / "a/rec.csv", tmp_path / "b/s1/rec.csv.csv"]
    with pytest.raises(FileNotFoundError, match=r"is not a folder; pass the folder"):
        find_muse_files(tmp_path / "missing")


@pytest.mark.data
def test_real_muse_recording():
    if not MUSE_DIR.is_dir():
        pytest.skip(f"Muse recordings not found at {MUSE_DIR}; see shared/data/README.md")
    paths = find_muse_files(MUSE_DIR)
    assert len(paths) == 10
    raw = read_muse_csv(paths[0])
    assert raw.info["sfreq"] == 256.0
    assert 60.0 < raw.times[-1] < 125.0
    assert set(raw.annotations.description) <= {"1", "2"} and len(raw.annotations) > 0
    assert 1e-6 < np.median(np.std(raw.get_data(), axis=1)) < 1e-3  # volts
    with pytest.warns(UserWarning, match=r"61 of 65 template channels"):
        X = prepare_unlabelled(raw, segment_seconds=4.0)
    assert X.shape == (int(raw.times[-1] // 4), 65, 800) and np.isfinite(X).all()
