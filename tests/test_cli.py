"""The ``leaf-sk`` command line: pretraining from files, and clear errors with exit status 2."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_muse_csv

from leaf_sk.checkpoint import load_checkpoint, read_metadata
from leaf_sk.cli import main

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*template channels .* are interpolated:UserWarning")

REPO = Path(__file__).resolve().parents[1]
FIF_CHANNELS = ["Fz", "C3", "Cz", "C4", "Pz", "O1", "O2", "FCz"]
TINY_RUN = ["--size", "tiny", "--max-epochs", "1", "--n-windows", "2", "--batch-size", "4",
            "--quiet"]




def write_muse_file(path, seconds=12.0, sfreq=256.0):
    write_muse_csv(path, n_samples=int(seconds * sfreq), sfreq=sfreq)
    return path


def write_fif(path, seconds=10.0, sfreq=200.0, seed=0):
    import mne

    data = np.random.default_rng(seed).standard_normal((len(FIF_CHANNELS), int(seconds * sfreq)))
    raw = mne.io.RawArray(data * 1e-5, mne.create_info(FIF_CHANNELS, sfreq, "eeg"), verbose=False)
    raw.save(path, verbose=False)
    return path


def test_pretrain_from_muse_csv(tmp_path, capsys):
    csv = write_muse_file(tmp_path / "rec.csv")
    out = tmp_path / "run"
    status = main(["pretrain", "--files", str(csv), "--out", str(out), "--segment-seconds", "2",
                   "--l-freq", "1", "--h-freq", "40", *TINY_RUN])
    assert status == 0
    printed = capsys.readouterr().out
    assert "trained 1 epochs; last: train_L_S" in printed
    assert f"wrote {out / 'tower.safetensors'}" in printed
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["train_batch_count"] == 2  # 6 segments of 2 s
    assert read_metadata(out / "tower.safetensors")["history"] == history
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "resume.pt",
                                                     "tower.safetensors"]


def test_pretrain_from_fif_with_python_m_then_resume(tmp_path):
    fif = write_fif(tmp_path / "rec_raw.fif")
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    process = subprocess.run(
        [sys.executable, "-m", "leaf_sk.cli", "pretrain", "--files", str(fif), "--out", str(out),
         "--max-epochs", "2", *TINY_RUN[:2], *TINY_RUN[4:]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    assert "trained 2 epochs" in process.stdout
    model, info = load_checkpoint(out / "tower.safetensors")
    assert info["parts"] == ["tower"] and info["config"]["d_model"] == 16
    first = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in first] == [1, 2]
    # A second call with more epochs continues the run in --out. Mark the resume file, so that
    # a run that started over (and, seeded, recomputed the same epoch 1) cannot pass.
    import torch

    state = torch.load(out / "resume.pt", weights_only=True)
    state["history"][0]["marker"] = "from resume.pt"
    torch.save(state, out / "resume.pt")
    assert main(["pretrain", "--files", str(fif), "--out", str(out), "--max-epochs", "3",
                 *TINY_RUN[:2], *TINY_RUN[4:]]) == 0
    resumed = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in resumed] == [1, 2, 3]
    assert resumed[0]["train_L_S"] == first[0]["train_L_S"]
    assert resumed[0]["marker"] == "from resume.pt" and "marker" not in resumed[2]


def _bad_csv(path):
    path.write_text("time,ch1,ch2\n0,1,2\n")
    return path


def _text_file(path):
    path.write_text("not EEG\n")
    return path


@pytest.mark.parametrize("arguments, match", [
    ([], r"give data with --moabb NAME:SUBJECTS and/or --files"),
    (["--moabb", "PhysionetMI"], r"--moabb 'PhysionetMI' needs subjects, e.g. PhysionetMI:1-5"),
    (["--moabb", "PhysionetMI:1-x"], r"Cannot read subjects '1-x'; write them like '1-3,5,7-8'"),
    (["--files", "{tmp}/missing.edf"], r"EEG file .*missing\.edf does not exist"),
    (["--files", "{bad_csv}"], r"is not a Muse CSV file"),
    (["--files", "{text}"], r"Cannot read .*notes\.txt as EEG .*\.fif, \.edf"),
    (["--files", "{csv}", "--max-epochs", "-1"], r"'max_epochs' parameter of LeafPretrainer"),
    (["--files", "{csv}", "--n-windows", "30"], r"'n_windows' parameter of LeafPretrainer"),
    (["--files", "{csv}", "--lr", "0"], r"'lr' parameter of LeafPretrainer"),
    (["--files", "{csv}", "--segment-seconds", "60"], r"shorter than segment_seconds=60"),
    (["--files", "{csv}", "--device", "tpu"], r"device='tpu' is not a torch device"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, arguments, match):
    paths = {"tmp": tmp_path, "csv": write_muse_file(tmp_path / "rec.csv", seconds=4.0),
             "bad_csv": _bad_csv(tmp_path / "other.csv"),
             "text": _text_file(tmp_path / "notes.txt")}
    argv = ["pretrain", "--out", str(tmp_path / "run"), "--size", "tiny", "--quiet",
            *[a.format(**paths) for a in arguments]]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("leaf-sk pretrain: error: ") or captured.err.startswith("usage:")
    assert len(captured.err.strip().splitlines()) <= 3, captured.err
    assert re.search(match, captured.err), captured.err
    assert not (tmp_path / "run" / "tower.safetensors").exists()


@pytest.mark.parametrize("argv, match", [
    ([], r"the following arguments are required: command"),
    (["pretrain"], r"the following arguments are required: --out"),
    (["pretrain", "--out", "x", "--size", "huge"], r"argument --size: invalid choice: 'huge'"),
    (["pretrain", "--out", "x", "--max-epochs", "two"], r"argument --max-epochs: invalid int"),
    (["train"], r"invalid choice: 'train'"),
])
def test_bad_syntax_exits_2_with_usage(capsys, argv, match):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: leaf-sk")
    assert re.search(match, err), err


def test_console_script_reports_errors_without_traceback(tmp_path):
    script = Path(sys.executable).with_name("leaf-sk")
    if not script.exists():
        pytest.skip("the leaf-sk console script is not installed in this environment")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.run([str(script), "pretrain", "--out", str(tmp_path / "run"), "--files",
                              str(tmp_path / "missing.edf")], env=env, capture_output=True,
                             text=True, timeout=120)
    assert process.returncode == 2
    assert "does not exist" in process.stderr and "Traceback" not in process.stderr
    process = subprocess.run([str(script), "pretrain", "--help"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert process.returncode == 0 and "--max-epochs" in process.stdout
