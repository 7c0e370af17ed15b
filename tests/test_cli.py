"""The ``leaf-sk`` command line: pretraining from files, and clear errors with exit status 2."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import block_network, write_muse_csv

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


def _empty_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("not EEG\n")
    return path


@pytest.mark.parametrize("arguments, match", [
    ([], r"give data with --moabb NAME:SUBJECTS and/or --files"),
    (["--moabb", "PhysionetMI"], r"--moabb 'PhysionetMI' needs subjects, e.g. PhysionetMI:1-5"),
    (["--moabb", "PhysionetMI:1-x"], r"Cannot read subjects '1-x'; write them like '1-3,5,7-8'"),
    (["--files", "{tmp}/missing.edf"], r"EEG file .*missing\.edf does not exist"),
    (["--files", "{bad_csv}"], r"is not a Muse CSV file"),
    (["--files", "{text}"], r"Cannot read .*notes\.txt as EEG .*\.fif, \.edf"),
    (["--files", "{empty}"], r"The folder .*empty holds no EEG file \(looked for \.csv, \.edf.*"
                             r"--files .*empty/\*\.edf"),
    (["--files", "{csv}", "--max-epochs", "-1"], r"'max_epochs' parameter of LeafPretrainer"),
    (["--files", "{csv}", "--n-windows", "30"], r"'n_windows' parameter of LeafPretrainer"),
    (["--files", "{csv}", "--lr", "0"], r"'lr' parameter of LeafPretrainer"),
    (["--files", "{csv}", "--segment-seconds", "60"], r"shorter than segment_seconds=60"),
    (["--files", "{csv}", "--device", "tpu"], r"device='tpu' is not a torch device"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, arguments, match):
    paths = {"tmp": tmp_path, "csv": write_muse_file(tmp_path / "rec.csv", seconds=4.0),
             "bad_csv": _bad_csv(tmp_path / "other.csv"),
             "text": _text_file(tmp_path / "notes.txt"), "empty": _empty_folder(tmp_path / "empty")}
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


# --- help and version ----------------------------------------------------------------------------


def _help_entries(text):
    """``{"--max-epochs": "--max-epochs N  epochs in total ... (default: 10)", ...}``."""
    entries, current = {}, None
    for line in text.splitlines():
        match = re.match(r"  (-[-\w]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line.strip()
        elif current is not None and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {option: " ".join(text.split()) for option, text in entries.items()}


def test_help_shows_every_default_and_the_version(capsys):
    from leaf_sk import __version__
    from leaf_sk.cli import _build_parser

    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out == f"leaf-sk {__version__}\n"
    with pytest.raises(SystemExit) as excinfo:
        main(["pretrain", "--help"])
    assert excinfo.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    subparsers = next(a for a in _build_parser()._actions if a.dest == "command")
    options = [a for a in subparsers.choices["pretrain"]._actions if a.dest != "help"]
    assert len(options) >= 17
    for action in options:
        option = action.option_strings[-1]
        entry = entries[option]
        assert len(entry.split()) >= 4, entry  # the option, and words that explain it
        if action.required:
            assert "(required)" in entry, entry
        else:
            shown = "none" if action.default in (None, []) else str(action.default)
            assert entry.endswith(f"(default: {shown})"), entry
    assert entries["--max-epochs"].endswith("(default: 10)")
    assert entries["--l-freq"].endswith("(default: none)")
    assert entries["--segment-seconds"].endswith("(default: 4.0)")


# --- what was loaded -----------------------------------------------------------------------------


def test_files_folder_is_read_and_summarized_and_recorded(tmp_path, capsys):
    folder = tmp_path / "recordings"
    (folder / "b").mkdir(parents=True)
    write_muse_file(folder / "b" / "second.csv", seconds=6.0)
    write_muse_file(folder / "first.csv", seconds=4.0)
    write_fif(folder / "b" / "third_raw.fif", seconds=5.0)
    (folder / "notes.txt").write_text("not EEG\n")
    (folder / "b" / "third-eve.fif").write_bytes(b"")  # events, not a recording
    out = tmp_path / "run"
    status = main(["pretrain", "--files", str(folder), "--out", str(out), "--segment-seconds",
                   "2", "--l-freq", "1", "--h-freq", "40", *TINY_RUN[:-1]])
    assert status == 0
    printed = capsys.readouterr().out
    summary = printed[:printed.index("trained 1 epochs")]
    assert summary.startswith("data (segments of 2 s):\n")
    assert (f"  files: 3 recordings; 3 EEG files found in {folder} (2 other files ignored); "
            "7 segments, 15 s of EEG at 200, 256 Hz; filter: band-pass 1-40 Hz") in summary
    files = [str(folder / "b" / "second.csv"), str(folder / "b" / "third_raw.fif"),
             str(folder / "first.csv")]
    data = read_metadata(out / "tower.safetensors")["provenance"]["data"]
    assert data["band"] == {"l_freq": 1.0, "h_freq": 40.0}
    assert data["segment_seconds"] == 2.0 and data["n_segments"] == 7
    (group,) = data["datasets"]
    assert group["source"] == "files" and group["files"] == files
    assert [r["seconds"] for r in group["recordings"]] == pytest.approx([6.0, 5.0, 4.0], abs=0.01)
    assert group["band"] == "band-pass 1-40 Hz"


@pytest.mark.data
def test_summary_names_the_physionet_runs_not_loaded(tmp_path, capsys, monkeypatch):
    """PhysionetMI subject 1 of the shared data: runs 4, 8, 12 loaded, 6, 10, 14 not (said)."""
    data = Path(os.environ.get("MNE_DATA", REPO.parent / "shared" / "data" / "mne_data"))
    if not (data / "MNE-eegbci-data" / "files" / "eegmmidb" / "1.0.0" / "S001").is_dir():
        pytest.skip(f"PhysionetMI subject 1 is not in {data}; set MNE_DATA to ../shared/data/"
                    "mne_data")
    monkeypatch.setenv("MNE_DATA", str(data))
    monkeypatch.setenv("MOABB_DOWNLOAD_PROVIDER", "upstream")
    out = tmp_path / "run"
    status = main(["pretrain", "--moabb", "PhysionetMI:1", "--out", str(out), "--size", "tiny",
                   "--max-epochs", "0", "--l-freq", "1", "--h-freq", "100"])
    assert status == 0
    printed = capsys.readouterr().out
    assert ("  PhysionetMI: subjects 1 (1); 3 runs (3 per subject): PhysioNet runs 4, 8, 12; "
            "93 segments, 6.2 min of EEG at 160 Hz; filter: high-pass 1 Hz (low-pass 100 Hz "
            "skipped: at or above the Nyquist frequency, 80 Hz)") in printed
    assert ("    not loaded: runs 6, 10, 14 of each subject (imagined both fists / both feet"
            in printed)
    provenance = read_metadata(out / "tower.safetensors")["provenance"]
    (group,) = provenance["data"]["datasets"]
    assert group["name"] == "PhysionetMI" and group["subjects"] == [1]
    assert [r["file"] for r in group["recordings"]] == [
        f"MNE-eegbci-data/files/eegmmidb/1.0.0/S001/S001R{run:02d}.edf" for run in (4, 8, 12)]
    assert group["skipped_runs"][0]["runs"] == [6, 10, 14]


# --- a MOABB subject that is not on this machine, offline ---------------------------------------


@pytest.mark.parametrize("spec, provider, looked_in", [
    ("PhysionetMI:30", "upstream", "MNE-eegbci-data/files/eegmmidb/1.0.0/S030/S030R04.edf"),
    ("Kalunga2016:12", "upstream", "MNE-ssvepexo-data/zenodo/2392979/subject12_run1_raw.fif"),
    # MOABB's default provider first asks NEMAR, retrying for about a minute.
    pytest.param("Kalunga2016:12", "auto",
                 "MNE-ssvepexo-data/zenodo/2392979/subject12_run1_raw.fif",
                 marks=pytest.mark.slow),
])
def test_moabb_subject_missing_offline_one_message_no_folder_left(
        tmp_path, monkeypatch, capsys, spec, provider, looked_in):
    pytest.importorskip("moabb")
    data = tmp_path / "mne_data"
    (data / "MNE-eegbci-data").mkdir(parents=True)  # empty, but not made by this call: kept
    monkeypatch.setenv("MNE_DATA", str(data))
    monkeypatch.setenv("_MNE_FAKE_HOME_DIR", str(tmp_path / "home"))  # no MNE config of the user
    monkeypatch.setenv("MOABB_DOWNLOAD_PROVIDER", provider)
    for key in list(os.environ):
        if key.startswith("MNE_DATASETS_"):
            monkeypatch.delenv(key)
    block_network(monkeypatch)
    assert main(["pretrain", "--moabb", spec, "--out", str(tmp_path / "run"), "--size",
                 "tiny"]) == 2
    err = capsys.readouterr().err
    name, subject = spec.split(":")
    lines = [line for line in err.splitlines() if line.startswith("leaf-sk pretrain: error:")]
    assert len(lines) == 1, err
    assert re.search(
        rf"{name} subject {subject} is not on this machine: its file {re.escape(str(data))}/"
        rf"{re.escape(looked_in)} is missing \(MNE_DATA={re.escape(str(data))}\), and "
        r"downloading it failed \(OSError: network blocked in test\)\. Run this again with "
        rf"internet access to download it, or set MNE_DATA to a folder that holds {name}'s "
        r"files\.$", lines[0])
    assert "Traceback" not in err and "HTTPSConnectionPool" not in err
    # The folders MOABB made for the download are gone, the one that was there is not.
    assert [(p.relative_to(data), list(p.iterdir())) for p in data.iterdir()] == [
        (Path("MNE-eegbci-data"), [])]
    assert not (tmp_path / "run").exists()


# --- Ctrl-C --------------------------------------------------------------------------------------


_SIGINT_CHILD = """
import sys, time
from pathlib import Path
from skorch.callbacks import Callback
from leaf_sk.cli import main
from leaf_sk.pretrainer import LeafPretrainer

flag = Path(sys.argv[1])

class PauseInEpoch2(Callback):
    # A long epoch: Ctrl-C arrives after the first training step of epoch 2.
    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == 2:
            flag.write_text("")
            time.sleep(600)

make_net = LeafPretrainer._make_net
def with_pause(self, module, seed):
    net = make_net(self, module, seed)
    net.callbacks.append(("pause", PauseInEpoch2()))
    return net
LeafPretrainer._make_net = with_pause
sys.exit(main(sys.argv[2:]))
"""


def test_sigint_stops_pretrain_with_status_130_and_the_last_complete_epoch(tmp_path, capsys):
    """A real SIGINT in epoch 2: exit 130, epoch 1 kept and named, the same command resumes."""
    import torch

    csv = write_muse_file(tmp_path / "rec.csv")
    out = tmp_path / "run"
    argv = ["pretrain", "--files", str(csv), "--out", str(out), "--segment-seconds", "2",
            "--size", "tiny", "--max-epochs", "2", "--n-windows", "2", "--batch-size", "4",
            "--quiet"]
    script = tmp_path / "child.py"
    script.write_text(_SIGINT_CHILD)
    flag = tmp_path / "in-epoch-2"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, str(script), str(flag), *argv], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not flag.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached epoch 2"
            time.sleep(0.05)
        assert (out / "resume.pt").is_file()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == 130, stderr
    assert "trained" not in stdout and "Traceback" not in stderr, stdout + stderr
    assert "leaf-sk pretrain: interrupted after epoch 1 of 2." in stderr
    assert f"The last complete epoch, 1, is in {out / 'tower-epoch001.safetensors'}" in stderr
    assert f"To continue, run the same command again: it resumes from {out / 'resume.pt'}" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "resume.pt",
                                                     "tower-epoch001.safetensors"]
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1]
    resume = torch.load(out / "resume.pt", weights_only=True)
    assert len(resume["history"]) == 1
    model, info = load_checkpoint(out / "tower-epoch001.safetensors")
    assert info["history"] == history and info["provenance"]["interrupted"] is True
    for key, value in model.tower.state_dict().items():
        assert torch.equal(value, resume["module"][f"tower.{key}"]), key
    # The same command continues from the resume file (marked, so a fresh start cannot pass).
    resume["history"][0]["marker"] = "from resume.pt"
    torch.save(resume, out / "resume.pt")
    capsys.readouterr()
    assert main(argv) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    resumed = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in resumed] == [1, 2]
    assert resumed[0]["marker"] == "from resume.pt"
    assert resumed[0]["train_L_S"] == history[0]["train_L_S"]
    assert (out / "tower.safetensors").is_file()
