"""`leaf-sk benchmark` and leaf_sk.benchmark: pipelines, split, checkpoint guard, resume, report.

Fast tests use synthetic trials or MOABB's FakeDataset; tests on the Kalunga2016 recordings
(``data``) use test subject 9 and at most two training subjects with cheap pipelines.
"""

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import offline_without_data, use_shared_data

from leaf_sk import benchmark as lb
from leaf_sk.cli import main

pytest.importorskip("moabb")
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Creating a dataset without passing data"),
              pytest.mark.filterwarnings("ignore:.*template channels.*:UserWarning"),
              pytest.mark.filterwarnings("ignore:The EEG amplitudes look:UserWarning")]

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FOLDER = REPO / "benchmarks" / "pipelines"
KALUNGA_CHANNELS = ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]


# --- pipelines ------------------------------------------------------------------------------


@pytest.mark.parametrize("family, events", [
    ("imagery", ["left_hand", "right_hand"]),
    ("ssvep", ["13", "17", "21"]),
    ("p300", ["NonTarget", "Target"]),
])
def test_every_pipeline_is_yaml_and_builds(family, events):
    configs = lb.pipeline_configs(family, events, ch_names=KALUNGA_CHANNELS, sfreq=256.0)
    roles = {c["role"] for c in configs.values()}
    assert {"leaf", "baseline"} <= roles
    assert {"LEAF+LR", "LEAF-finetuned", "LEAF-zeroshot"} <= set(configs)
    for name, config in configs.items():
        # MOABB passes file parameters straight to each class: they must survive YAML.
        assert yaml.safe_load(yaml.safe_dump(config["steps"])) == config["steps"], name
        pipeline = lb.build_pipeline(config["steps"])
        assert len(pipeline.steps) == len(config["steps"])
    assert (family == "imagery") == ("frontal-control" in configs)
    nets = {"ShallowFBCSPNet", "EEGNet"}
    assert (family != "p300") == (nets <= set(configs))
    for name in nets & set(configs):
        assert configs[name]["role"] == "baseline" and not configs[name]["default"]
        (step,) = configs[name]["steps"]
        assert step["from"] == "leaf_sk.baselines"
        assert step["parameters"] == {"sfreq": 256.0, "random_state": 0}
        assert "doi:" in configs[name]["citations"][0]


def test_label_texts_and_cca_frequencies_follow_moabb_label_encoding():
    configs = lb.pipeline_configs("ssvep", ["13", "17", "21"])
    (cca,) = configs["CCA"]["steps"]
    assert cca["parameters"]["freq_map"] == {0: 13.0, 1: 17.0, 2: 21.0,
                                             "13": 13.0, "17": 17.0, "21": 21.0}
    (tuned,) = configs["LEAF-finetuned"]["steps"]
    assert tuned["parameters"]["label_texts"] == {0: "13 Hz flicker", 1: "17 Hz flicker",
                                                  2: "21 Hz flicker"}
    assert tuned["parameters"]["max_epochs"] == 5
    assert configs["LEAF-zeroshot"]["steps"][0]["parameters"]["max_epochs"] == 0
    with_rest = lb.pipeline_configs("ssvep", ["13", "17", "21", "rest"])
    assert "CCA" not in with_rest  # it cannot recognise a class without a frequency
    assert with_rest["FB-TS+LR"]["steps"][0]["parameters"]["frequencies"] == [13.0, 17.0, 21.0]
    assert with_rest["LEAF-finetuned"]["steps"][0]["parameters"]["label_texts"][3] == "Resting"
    mi = lb.pipeline_configs("imagery", ["left_hand", "right_hand"])
    assert mi["LEAF-finetuned"]["steps"][0]["parameters"]["label_texts"] == {
        0: "Left hand", 1: "Right hand"}


def _ssvep_epochs(n_per_class=6, sfreq=256.0, seconds=2.0, seed=0):
    """Occipital trials of 13, 17 and 21 Hz sinusoids in noise, labels encoded 0, 1, 2."""
    import mne

    rng = np.random.default_rng(seed)
    times = np.arange(int(sfreq * seconds)) / sfreq
    y = np.repeat(np.arange(3), n_per_class)
    X = rng.standard_normal((len(y), len(KALUNGA_CHANNELS), len(times))) * 2e-6
    for trial, label in enumerate(y):
        phase = rng.uniform(0, 2 * np.pi)
        X[trial] += 1e-6 * np.sin(2 * np.pi * (13.0, 17.0, 21.0)[label] * times + phase)
    info = mne.create_info(KALUNGA_CHANNELS, sfreq, "eeg")
    return mne.EpochsArray(X, info, verbose=False), y


def test_cca_with_the_frequency_map_decodes_and_without_it_scores_chance():
    # MOABB's SSVEP_CCA on encoded labels cannot tell frequencies from the labels 0, 1, 2.
    from moabb.pipelines.classification import SSVEP_CCA

    epochs, y = _ssvep_epochs()
    (step,) = lb.pipeline_configs("ssvep", ["13", "17", "21"])["CCA"]["steps"]
    cca = lb.build_pipeline([step]).fit(epochs, y)
    assert (cca.predict(epochs) == y).mean() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            blind = SSVEP_CCA(n_harmonics=3).fit(epochs, y)
            accuracy = (blind.predict(epochs) == y).mean()
        except (ValueError, KeyError):
            accuracy = None  # refusing is as good as not decoding; either way the map is needed
    assert accuracy is None or accuracy < 0.6


def test_filter_bank_and_window_means_on_epochs_and_arrays():
    epochs, y = _ssvep_epochs()
    data = epochs.get_data(units="uV")
    assert np.allclose(lb.EpochsToArray().fit_transform(epochs), data)
    bank = lb.FilterBank([13.0, 17.0, 21.0]).fit(epochs)
    out = bank.transform(epochs)
    assert out.shape == (len(y), 3 * len(KALUNGA_CHANNELS), data.shape[2])
    # Each band keeps its own frequency: the 13 Hz trials carry most power in band 1.
    power = (out.reshape(len(y), 3, len(KALUNGA_CHANNELS), -1) ** 2).mean(axis=(2, 3))
    assert (power.argmax(axis=1) == y).all()
    array_bank = lb.FilterBank([13.0, 17.0, 21.0], sfreq=256.0).fit(data)
    assert np.allclose(array_bank.transform(data), out)
    means = lb.WindowMeans(["O1", "o2", "Fp1"], window_seconds=0.5).fit(epochs)
    assert means.picks_ == [1, 2] and means.step_ == 128
    features = means.transform(epochs)
    assert features.shape == (len(y), 2 * 4)
    assert np.allclose(features[0, :4], data[0, 1].reshape(4, 128).mean(-1))
    with pytest.raises(ValueError, match=r"None of the channels \['Fp1'\] is in the data"):
        lb.WindowMeans(["Fp1"]).fit(epochs)
    with pytest.raises(ValueError, match="without ch_names and sfreq; pass both"):
        lb.WindowMeans().fit(data)


def test_held_out_subjects_folds():
    subjects = np.array([1, 1, 2, 2, 3, 3, 4])
    cv = lb.HeldOutSubjects(subjects, train_subjects=[1, 2], test_subjects=[3, 4, 9])
    folds = list(cv.split(np.zeros(7)))
    assert [(list(train), list(test)) for train, test in folds] == [
        ([0, 1, 2, 3], [4, 5]), ([0, 1, 2, 3], [6])]
    with pytest.raises(ValueError, match=r"Subjects \[2\] are both"):
        list(lb.HeldOutSubjects(subjects, [1, 2], [2]).split(np.zeros(7)))


@pytest.mark.parametrize("wanted, expected", [
    (None, ["LEAF+LR", "LEAF-finetuned", "LEAF-zeroshot", "TS+LR", "MDM", "FB-TS+LR", "CCA"]),
    (["ts+lr,CCA", "mdm"], ["TS+LR", "CCA", "MDM"]),
    (["leaf"], ["LEAF+LR", "LEAF-finetuned", "LEAF-zeroshot", "LEAF-direct", "LEAF-aligned+LR",
                "LEAF-meanstd+LR", "LEAF-random+LR", "LEAF-random-meanstd+LR"]),
    (["baselines", "LEAF+LR"], ["TS+LR", "MDM", "FB-TS+LR", "CCA", "ShallowFBCSPNet", "EEGNet",
                                "LEAF+LR"]),
    (["eegnet", "shallowfbcspnet"], ["EEGNet", "ShallowFBCSPNet"]),
])
def test_select_pipelines(wanted, expected):
    configs = lb.pipeline_configs("ssvep", ["13", "17", "21"])
    assert lb.select_pipelines(configs, wanted) == expected


@pytest.mark.parametrize("wanted, match", [
    ([], r"The pipeline list is empty; name one or more of LEAF\+LR, .*CCA"),
    ([" , "], r"The pipeline list is empty"),
    (["CSP+LDA"], r"Unknown pipeline 'CSP\+LDA'.*this paradigm's pipelines are LEAF\+LR"),
    (["TS-LR"], r"did you mean TS\+LR"),
])
def test_select_pipelines_errors(wanted, match):
    configs = lb.pipeline_configs("ssvep", ["13", "17", "21"])
    with pytest.raises(ValueError, match=match):
        lb.select_pipelines(configs, wanted)


# --- datasets, split and checkpoint guard ----------------------------------------------------


def test_paradigm_per_dataset():
    from moabb.paradigms import SSVEP, LeftRightImagery

    kalunga, family = lb.choose_paradigm(lb.get_dataset("Kalunga2016"))
    assert isinstance(kalunga, SSVEP) and family == "ssvep"
    assert kalunga.used_events(lb.get_dataset("Kalunga2016")) == {"13": 2, "17": 4, "21": 3}
    assert list(kalunga.scoring) == ["accuracy", "balanced_accuracy", "kappa"]
    physionet = lb.get_dataset("PhysionetMI")
    assert physionet.feet_runs == [] and physionet.imagined
    paradigm, family = lb.choose_paradigm(physionet)
    assert isinstance(paradigm, LeftRightImagery) and paradigm.scoring == "roc_auc"
    assert paradigm.filters == [[8, 32]]


@pytest.mark.parametrize("name, match", [
    ("Kalunga2017", r"MOABB has no dataset 'Kalunga2017'; did you mean Kalunga2016"),
    ("NotADataset", r"MOABB has no dataset 'NotADataset'; e\.g\. Kalunga2016"),
])
def test_unknown_dataset(name, match):
    with pytest.raises(ValueError, match=match):
        lb.get_dataset(name)


@pytest.mark.parametrize("kwargs, match", [
    (dict(subjects=[9], train_subjects=[8, 9]), r"Subject\(s\) \[9\] are both test and training"),
    (dict(subjects=[3], train_subjects=[7, 8]), r"subjects 3 and 7 share a recording"),
    (dict(subjects=[13], train_subjects=[1]), r"Kalunga2016 has no subject\(s\) \[13\]; its "
                                              r"subjects are 1-12"),
    (dict(subjects=[], train_subjects=[1]), r"No test subjects given"),
])
def test_split_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lb.resolve_split(lb.get_dataset("Kalunga2016"), **kwargs)


def test_default_split_and_explicit_subjects_elsewhere():
    assert lb.resolve_split(lb.get_dataset("Kalunga2016")) == ([9, 10, 11], list(range(1, 9)))
    assert lb.resolve_split(lb.get_dataset("PhysionetMI"), evaluation="within") == (
        [15, 16, 17, 18, 42], [])
    with pytest.raises(ValueError, match=r"Pass the test subjects of BNCI2014_001 \(--subjects"):
        lb.resolve_split(lb.get_dataset("BNCI2014_001"))
    with pytest.raises(ValueError, match=r"Pass the training subjects of BNCI2014_001"):
        lb.resolve_split(lb.get_dataset("BNCI2014_001"), subjects=[1])


def test_guard_reads_the_packaged_checkpoint_provenance():
    found, notes = lb.checkpoint_training_data("leaf-small")
    assert found["Kalunga2016"] == set(range(1, 9)) and notes == []
    assert found["PhysionetMI"] == {1, 2, 3, *range(5, 15)}
    assert lb.check_checkpoint("leaf-small", lb.get_dataset("Kalunga2016"), [9, 10, 11]) == []
    with pytest.raises(ValueError, match=r"Checkpoint 'leaf-small' was trained on PhysionetMI "
                                         r"subjects 1-3, 5-14 \(its provenance\), which include "
                                         r"the test subject\(s\) 14"):
        lb.check_checkpoint("leaf-small", lb.get_dataset("PhysionetMI"), [14, 15])
    found, notes = lb.checkpoint_training_data("leaf-small-bci")
    assert found == {"PhysionetMI": {1, 2, 3, *range(5, 15)}, "Kalunga2016": set(range(1, 9))}
    assert lb.check_checkpoint("leaf-small-bci", lb.get_dataset("PhysionetMI"), [15, 42]) == []


def _checkpoint(path, provenance):
    from leaf_sk import LeafConfig, save_checkpoint
    from leaf_sk.nn import LeafModel

    return save_checkpoint(path, LeafModel(LeafConfig.from_size("tiny")), provenance=provenance)


def test_guard_reads_the_pretrain_record_and_follows_the_starting_weights(tmp_path):
    first = _checkpoint(tmp_path / "first.safetensors", {"data": {"datasets": [
        {"source": "moabb", "name": "Kalunga2016", "subjects": [1, 2]}]}})
    second = _checkpoint(tmp_path / "second.safetensors", {
        "params": {"checkpoint": str(first)},
        "data": {"datasets": [{"source": "files", "files": ["a.csv"]},
                              {"source": "moabb", "name": "PhysionetMI", "subjects": [5]}]}})
    found, _ = lb.checkpoint_training_data(second)
    assert found == {"PhysionetMI": {5}, "Kalunga2016": {1, 2}}
    kalunga = lb.get_dataset("Kalunga2016")
    lb.check_checkpoint(second, kalunga, [3, 4])
    with pytest.raises(ValueError, match=r"trained on Kalunga2016 subjects 1-2 .* test "
                                         r"subject\(s\) 2"):
        lb.check_checkpoint(second, kalunga, [2, 3])
    vague = _checkpoint(tmp_path / "vague.safetensors", {"data": {"Kalunga2016": "all runs"}})
    with pytest.raises(ValueError, match="without saying which subjects"):
        lb.check_checkpoint(vague, kalunga, [9])
    lost = _checkpoint(tmp_path / "lost.safetensors", {"params": {"checkpoint": "gone.pt"}})
    with pytest.warns(UserWarning, match="started from 'gone.pt', which is not on this machine"):
        lb.check_checkpoint(lost, kalunga, [9])
    assert lb.check_checkpoint(None, kalunga, [1]) == []


# --- run, resume and report on MOABB's FakeDataset -------------------------------------------


def _fake_dataset(monkeypatch, tmp_path):
    from moabb.datasets.fake import FakeDataset

    monkeypatch.setenv("MNE_DATA", str(tmp_path / "mne_data"))
    before = set(os.environ)
    dataset = FakeDataset(event_list=("left_hand", "right_hand"), n_sessions=1, n_runs=1,
                          n_subjects=4, n_events=40, duration=130, paradigm="imagery",
                          channels=("C3", "Cz", "C4", "Fp1", "Fp2"), sfreq=128, seed=0)
    for key in set(os.environ) - before:  # the temporary folder FakeDataset made and named
        Path(os.environ[key]).rmdir()
        monkeypatch.setenv(key, str(tmp_path))
    return dataset


class _Interrupt:
    """A spy on WithinSessionEvaluation.process: counts calls, Ctrl-C at call ``at``."""

    def __init__(self, monkeypatch, at=None):
        from moabb.evaluations import WithinSessionEvaluation

        self.calls, self.at, original = [], at, WithinSessionEvaluation.process

        def process(evaluation, pipelines, *args, **kwargs):
            self.calls.append((list(pipelines), list(evaluation.datasets[0].subject_list)))
            if len(self.calls) == self.at:
                raise KeyboardInterrupt
            return original(evaluation, pipelines, *args, **kwargs)

        monkeypatch.setattr(WithinSessionEvaluation, "process", process)


def test_run_resume_and_report_on_fake_data(monkeypatch, tmp_path):
    dataset = _fake_dataset(monkeypatch, tmp_path)
    out = tmp_path / "out"
    kwargs = dict(subjects=[3, 4], train_subjects=[1, 2], pipelines=["TS+LR", "MDM"], out=out,
                  checkpoint=None)
    spy = _Interrupt(monkeypatch, at=3)
    with pytest.raises(KeyboardInterrupt):
        lb.run_benchmark(dataset, **kwargs)
    # Two within-session fits finished and were saved before Ctrl-C; the dataset is as it was.
    saved = pd.read_csv(out / "scores.csv")
    assert sorted(zip(saved.pipeline, saved.subject)) == [("TS+LR", 3), ("TS+LR", 4)]
    assert dataset.subject_list == [1, 2, 3, 4]
    saved.loc[0, "score"] = 0.123456  # a marker: a rerun that recomputed it could not keep it
    saved.to_csv(out / "scores.csv", index=False)
    spy = _Interrupt(monkeypatch)
    scores = lb.run_benchmark(dataset, **kwargs)
    assert spy.calls == [(["MDM"], [3]), (["MDM"], [4])]  # only what was missing
    assert 0.123456 in set(scores.score)
    assert len(scores) == 8 and set(scores.evaluation) == {"within-session", "cross-subject"}
    assert set(scores.role) == {"baseline"} and (scores.chance == 0.5).all()
    assert (scores.metric == "roc_auc").all() and scores.train_subjects.iloc[-1] in {"", "1-2"}
    # Everything done: a third run computes nothing; other settings recompute.
    spy = _Interrupt(monkeypatch)
    pd.testing.assert_frame_equal(lb.run_benchmark(dataset, **kwargs), scores, check_dtype=False)
    assert spy.calls == []
    again = lb.run_benchmark(dataset, **{**kwargs, "random_state": 1, "evaluation": "within"})
    assert len(spy.calls) == 4 and 0.123456 not in set(again.score)
    spy = _Interrupt(monkeypatch)
    lb.run_benchmark(dataset, **{**kwargs, "resume": False, "evaluation": "within"})
    assert len(spy.calls) == 4

    table, files = lb.write_report(scores, out)
    assert list(table.columns[:8]) == ["evaluation", "pipeline", "role", "metric", "mean", "sd",
                                       "s3", "s4"]
    for path in (files["summary_csv"], files["summary_md"], files["plot"], *files["moabb_plots"]):
        assert path.is_file() and path.stat().st_size > 0
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = files["summary_md"].read_text()
    assert "## within-session" in markdown and "| pipeline | mean | sd | s3 | s4 |" in markdown


def test_networks_trained_from_scratch_run_in_both_evaluations(monkeypatch, tmp_path):
    # The nets take the evaluation's mne.Epochs and give MOABB's ROC AUC scorer its scores.
    dataset = _fake_dataset(monkeypatch, tmp_path)
    configs = lb.pipeline_configs

    def short(*args, **kwargs):  # two epochs: this tests the wiring, not the learning
        found = configs(*args, **kwargs)
        for name in ("ShallowFBCSPNet", "EEGNet"):
            found[name]["steps"][0]["parameters"].update(max_epochs=2, min_steps=0)
        return found

    monkeypatch.setattr(lb, "pipeline_configs", short)
    scores = lb.run_benchmark(dataset, subjects=[3], train_subjects=[1, 2], checkpoint=None,
                              pipelines=["ShallowFBCSPNet", "EEGNet"])
    assert sorted(zip(scores.evaluation, scores.pipeline)) == [
        ("cross-subject", "EEGNet"), ("cross-subject", "ShallowFBCSPNet"),
        ("within-session", "EEGNet"), ("within-session", "ShallowFBCSPNet")]
    assert set(scores.role) == {"baseline"} and scores.score.between(0, 1).all()
    assert (scores.metric == "roc_auc").all()


def test_extra_pipelines_and_the_eye_movement_control(monkeypatch, tmp_path):
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import make_pipeline

    dataset = _fake_dataset(monkeypatch, tmp_path)
    mine = make_pipeline(lb.WindowMeans(["C3"]), DummyClassifier())
    scores = lb.run_benchmark(dataset, subjects=[4], evaluation="within", checkpoint=None,
                              pipelines=["frontal-control"], extra_pipelines={"mine": mine})
    assert list(scores.pipeline) == ["frontal-control", "mine"]
    assert list(scores.role) == ["control", "user"] and scores.score.iloc[1] == 0.5
    with pytest.raises(ValueError, match=r"reuses the name\(s\) \['MDM'\]"):
        lb.run_benchmark(dataset, subjects=[4], evaluation="within",
                         pipelines=["MDM"], extra_pipelines={"MDM": mine})


def test_summary_paired_test_against_the_best_baseline():
    rows = []
    for pipeline, role, values in [("LEAF+LR", "leaf", [0.9, 0.8, 0.7, 0.95, 0.85]),
                                   ("TS+LR", "baseline", [0.6, 0.7, 0.5, 0.65, 0.55]),
                                   ("MDM", "baseline", [0.5, 0.5, 0.5, 0.5, 0.5]),
                                   ("frontal-control", "control", [0.99] * 5)]:
        for subject, value in zip([15, 16, 17, 18, 42], values):
            rows.append(dict(evaluation="cross-subject", dataset="PhysionetMI",
                             paradigm="LeftRightImagery", pipeline=pipeline, role=role,
                             subject=subject, session="0", metric="roc_auc", score=value,
                             chance=0.5, checkpoint="leaf-small", train_subjects="1-3"))
    table = lb.summarize(pd.DataFrame(rows))
    assert list(table.pipeline) == ["frontal-control", "LEAF+LR", "TS+LR", "MDM"]
    leaf = table.set_index("pipeline").loc["LEAF+LR"]
    assert leaf["best baseline"] == "TS+LR" and leaf["wins"] == "5/5"
    assert leaf["p"] == pytest.approx(1 / 32) and leaf["difference"] == pytest.approx(0.24)
    assert leaf["mean"] == pytest.approx(0.84) and leaf["s42"] == 0.85
    text = lb.format_table(table)
    assert re.search(r"LEAF\+LR\s+0\.840\s+0\.096\s+0\.900", text)


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("argv, match", [
    (["Kalunga2017"], r"MOABB has no dataset 'Kalunga2017'; did you mean Kalunga2016"),
    (["Kalunga2016", "--pipelines", ""], r"The pipeline list is empty"),
    (["Kalunga2016", "--pipelines", "CSP+LDA"], r"Unknown pipeline 'CSP\+LDA'"),
    (["Kalunga2016", "--subjects", "9-x"], r"--subjects: Cannot read subjects '9-x'"),
    (["Kalunga2016", "--subjects", "8-9"], r"Subject\(s\) \[8\] are both test and training"),
    (["Kalunga2016", "--subjects", "5", "--train-subjects", "1-2"],
     r"Checkpoint 'leaf-small-bci' was trained on Kalunga2016 subjects 1-8"),
    (["Kalunga2016", "--fine-tune-epochs", "0"], r"--fine-tune-epochs 0: give 1 or more"),
    (["BNCI2014_001"], r"Pass the test subjects of BNCI2014_001"),
    (["Kalunga2016", "--checkpoint", "missing.safetensors"], r"Checkpoint 'missing.safetensors'"
                                                            r" is neither a file"),
])
def test_cli_bad_arguments_exit_2_with_one_message(tmp_path, capsys, argv, match):
    assert main(["benchmark", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.search(match, errors[0]), captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, match", [
    (["benchmark"], r"the following arguments are required: DATASET"),
    (["benchmark", "Kalunga2016", "--pipelines"], r"argument --pipelines: expected at least one"),
    (["benchmark", "Kalunga2016", "--evaluation", "all"], r"argument --evaluation: invalid choice"),
])
def test_cli_bad_syntax_exits_2_with_usage(capsys, argv, match):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: leaf-sk benchmark") and re.search(match, err), err


def test_cli_help_explains_every_option_with_its_default(capsys):
    from leaf_sk.cli import _build_parser

    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    subparsers = next(a for a in _build_parser()._actions if a.dest == "command")
    options = [a for a in subparsers.choices["benchmark"]._actions
               if a.dest != "help" and a.option_strings]
    assert len(options) == 11
    for action in options:
        shown = "none" if action.default in (None, []) else str(action.default)
        assert re.search(re.escape(action.option_strings[-1]) + r".{10,}?\(default: "
                         + re.escape(shown) + r"\)", text), action.option_strings
    assert "LEAF-zeroshot (direct inference" in text and "CCA" in text


def test_cli_subject_absent_offline_one_message(tmp_path, monkeypatch, capsys):
    data = offline_without_data(monkeypatch, tmp_path)
    status = main(["benchmark", "Kalunga2016", "--subjects", "12", "--evaluation", "within",
                   "--pipelines", "MDM", "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("leaf-sk benchmark: error:")]
    assert len(lines) == 1, err
    assert re.search(r"Kalunga2016 subject 12 is not on this machine: its file .*subject12_run1"
                     r"_raw\.fif is missing \(MNE_DATA=.*\), and downloading it failed \(OSError:"
                     r" network blocked in test\)\. Run this again with internet access", lines[0])
    assert "Traceback" not in err and list(data.iterdir()) == []


def test_demo_without_data_or_network_says_what_to_set(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo", REPO / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    offline_without_data(monkeypatch, tmp_path)
    assert demo.main(out=tmp_path / "demo") == 0
    captured = capsys.readouterr()
    assert "MOABB downloads it there (about 70 MB)" in captured.out
    assert "Kalunga2016 subject 1 is not on this machine" in captured.err
    assert "make demo needs the Kalunga2016 recordings: put this repository beside shared/" \
        in captured.out and "set MNE_DATA" in captured.out
    assert "Traceback" not in captured.err and not (tmp_path / "demo").exists()
    assert list((tmp_path / "mne_data").iterdir()) == []


# --- real recordings ---------------------------------------------------------------------------


@pytest.fixture
def kalunga_data(monkeypatch):
    return use_shared_data(monkeypatch, "MNE-ssvepexo-data")


@pytest.mark.data
def test_cli_on_kalunga_prints_the_table_writes_the_files_and_resumes(
        kalunga_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = ["benchmark", "Kalunga2016", "--subjects", "9", "--train-subjects", "1-2",
            "--pipelines", "CCA", "TS+LR", "LEAF+LR", "--out", str(out), "--quiet"]
    spy = _Interrupt(monkeypatch, at=2)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert re.search(r"leaf-sk benchmark: interrupted; the scores finished so far are in .*"
                     r"scores\.csv\. Run the same command again to continue", err), err
    assert list(pd.read_csv(out / "scores.csv").pipeline) == ["CCA"]
    spy = _Interrupt(monkeypatch)
    assert main(argv) == 0
    assert spy.calls == [(["TS+LR"], [9]), (["LEAF+LR"], [9])]
    printed = capsys.readouterr().out
    assert "Kalunga2016, SSVEP; test subjects 9; metric: accuracy (chance 0.333)" in printed
    assert re.search(r"within-session:\npipeline\s+mean\s+sd\s+s9\s+chance\s+"
                     r"balanced_accuracy\s+kappa\s+best baseline\s+difference\s+wins\s+p", printed)
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 6 and set(scores.evaluation) == {"within-session", "cross-subject"}
    # CCA with MOABB's encoded labels decodes: not the silent chance of a missing freq_map.
    assert (scores[scores.pipeline == "CCA"].score > 0.6).all()
    assert (scores.n_classes == 3).all() and (scores.samples_test == 48).any()
    assert set(scores.loc[scores.evaluation == "cross-subject", "samples"]) == {96}
    for name in ("summary.csv", "summary.md", "scores.png", "moabb_score_plot_within_session.png",
                 "moabb_score_plot_cross_subject.png"):
        assert (out / name).is_file(), name
    assert f"plot: {out / 'scores.png'}" in printed


@pytest.mark.data
def test_pipeline_files_are_current_and_run_in_moabb(kalunga_data, tmp_path):
    from moabb.evaluations import WithinSessionEvaluation
    from moabb.pipelines.utils import parse_pipelines_from_directory

    for dataset in ("Kalunga2016", "PhysionetMI"):
        if dataset == "PhysionetMI" and not (kalunga_data / "MNE-eegbci-data").is_dir():
            continue
        written = lb.write_pipeline_files(tmp_path / dataset, dataset)
        committed = sorted((PIPELINE_FOLDER / dataset).glob("*.yml"))
        assert [p.name for p in committed] == sorted(p.name for p in written)
        for path in written:
            assert path.read_text() == (PIPELINE_FOLDER / dataset / path.name).read_text(), path
    # MOABB leaves a .lock file beside every file it reads: read copies.
    folder = tmp_path / "Kalunga2016"
    configs = parse_pipelines_from_directory(str(folder))
    assert {c["paradigms"][0] for c in configs} == {"SSVEP"}
    pipes = {c["name"]: c["pipeline"] for c in configs}
    pipes["CCA"] = pipes.pop("SSVEP CCA")
    dataset = lb.get_dataset("Kalunga2016")
    dataset.subject_list = [9]
    paradigm, _ = lb.choose_paradigm(dataset)
    evaluation = WithinSessionEvaluation(paradigm=paradigm, datasets=[dataset], overwrite=True,
                                         hdf5_path=str(tmp_path / "hdf5"), random_state=0,
                                         n_splits=2)
    # Arrays, as moabb.benchmark gives them: the files carry channel names and rate.
    scores = evaluation.process({"LEAF+LR": pipes["LEAF+LR"]}).set_index("pipeline").score
    assert 0.0 <= scores["LEAF+LR"] <= 1.0
    # CCA makes MOABB hand over mne.Epochs; the file's freq_map reads the encoded labels.
    scores = evaluation.process({"CCA": pipes["CCA"]}).set_index("pipeline").score
    assert scores["CCA"] > 0.6


def test_moabb_benchmark_runs_the_pipeline_files(monkeypatch, tmp_path):
    # moabb.benchmark(pipelines=folder) beside a user's own files; FakeDataset stands in for
    # Kalunga2016 (same channels and rate), as moabb.benchmark cannot restrict subjects.
    import shutil

    import moabb
    from moabb.datasets.fake import FakeDataset

    folder = tmp_path / "pipelines"
    folder.mkdir()
    for name in ("TS_LR.yml", "CCA.yml", "LEAF_LR.yml"):
        shutil.copy(PIPELINE_FOLDER / "Kalunga2016" / name, folder)
    (folder / "mine.yml").write_text(yaml.safe_dump({
        "name": "my MDM", "paradigms": ["SSVEP"],
        "pipeline": [{"name": "Covariances", "from": "pyriemann.estimation"},
                     {"name": "MDM", "from": "pyriemann.classification"}]}))
    monkeypatch.setenv("MNE_DATA", str(tmp_path / "mne_data"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))  # MOABB's temporary folders
    before = set(os.environ)
    fake = FakeDataset(event_list=("13", "17", "21"), n_sessions=1, n_runs=1, n_subjects=2,
                       n_events=30, duration=100, paradigm="ssvep", channels=KALUNGA_CHANNELS,
                       sfreq=256, seed=0)
    for key in set(os.environ) - before:
        Path(os.environ[key]).rmdir()
        monkeypatch.setenv(key, str(tmp_path))
    results = moabb.benchmark(pipelines=str(folder), evaluations=["WithinSession"],
                              include_datasets=[fake], results=str(tmp_path / "results"),
                              output=str(tmp_path / "output"), n_jobs=1)
    assert sorted(set(results.pipeline)) == ["LEAF+LR", "SSVEP CCA", "TS+LR", "my MDM"]
    assert len(results) == 8 and results.score.between(0, 1).all()


@pytest.mark.slow
@pytest.mark.data
def test_physionet_reproduces_the_results_table(tmp_path, monkeypatch):
    # benchmarks/RESULTS.md, PhysioNet MI, test subjects 15-18 and 42 (ROC AUC, per subject).
    use_shared_data(monkeypatch, "MNE-eegbci-data")
    expected = {
        ("within-session", "CSP+LDA"): [0.890, 0.530, 0.590, 0.790, 0.990],
        ("within-session", "TS+LR"): [0.880, 0.560, 0.310, 0.490, 0.990],
        ("within-session", "MDM"): [0.610, 0.470, 0.320, 0.330, 0.890],
        ("within-session", "frontal-control"): [0.590, 0.680, 0.620, 0.670, 0.420],
        ("within-session", "LEAF+LR"): [0.960, 0.870, 0.640, 0.490, 0.960],  # leaf-small-bci
        ("cross-subject", "TS+LR"): [0.937, 0.575, 0.607, 0.706, 0.883],
        ("cross-subject", "CSP+LDA"): [0.905, 0.646, 0.613, 0.413, 0.980],
        ("cross-subject", "MDM"): [0.619, 0.615, 0.571, 0.571, 0.787],
        ("cross-subject", "frontal-control"): [0.492, 0.478, 0.474, 0.425, 0.435],
        ("cross-subject", "LEAF+LR"): [0.919, 0.757, 0.559, 0.753, 0.903],
    }
    scores = lb.run_benchmark("PhysionetMI", pipelines=["CSP+LDA", "TS+LR", "MDM",
                                                        "frontal-control", "LEAF+LR"])
    table = lb.summarize(scores).set_index(["evaluation", "pipeline"])
    for key, values in expected.items():
        got = table.loc[key, ["s15", "s16", "s17", "s18", "s42"]].astype(float).to_numpy()
        # LEAF predicts in bfloat16 on bf16-native CPUs (precision="auto") and in float32
        # elsewhere: one trial pair of a within-session fold moves a subject's AUC by 0.01.
        tolerance = 0.011 if key[1].startswith("LEAF") else 0.0015
        assert np.allclose(got, values, atol=tolerance), (key, got)
