"""Both estimators inside MOABB evaluations, on its generated FakeDataset (nothing downloaded)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from leaf_sk import LeafEncoder, LeafInstructionClassifier

pytest.importorskip("moabb")
pytestmark = [
    # Three channels fill only part of the 65-site template; the estimators rightly warn.
    pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning"),
    # MOABB's own deprecations, not ours.
    pytest.mark.filterwarnings("ignore:Montage name 'standard_1005' is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Creating a dataset without passing data or dtype"),
]

N_SUBJECTS = 2
CHANNELS = ("C3", "Cz", "C4")


@pytest.fixture
def moabb_env(monkeypatch):
    monkeypatch.setenv("MOABB_DOWNLOAD_PROVIDER", "upstream")


@pytest.fixture
def dataset(moabb_env):
    from moabb.datasets.fake import FakeDataset

    # 1.5-s trials at 128 Hz: 10 per subject, one session.
    return FakeDataset(event_list=("left_hand", "right_hand"), n_sessions=1, n_runs=1,
                       n_subjects=N_SUBJECTS, channels=CHANNELS, duration=30, n_events=10,
                       sfreq=128, seed=0)


@pytest.fixture
def paradigm():
    from moabb.paradigms import LeftRightImagery

    return LeftRightImagery(tmin=0.0, tmax=1.5, resample=None)


@pytest.fixture
def recording(dataset, paradigm):
    """Channel names and rate as MOABB hands them to the pipelines."""
    epochs, _, _ = paradigm.get_data(dataset, dataset.subject_list[:1], return_epochs=True)
    return dict(ch_names=list(epochs.ch_names), sfreq=epochs.info["sfreq"])


TINY = dict(checkpoint=None, size="tiny", text_encoder="hashing", batch_size=4, device="cpu", random_state=0)


def _pipelines(**input_params):
    return {
        "leaf+lr": make_pipeline(LeafEncoder(**TINY, **input_params), LogisticRegression()),
        "leaf-clf": LeafInstructionClassifier(
            **TINY, max_epochs=1, instruction="motor imagery: left or right hand",
            **input_params),
    }


def _check_results(results, n_rows_per_pipeline):
    assert sorted(results["pipeline"].unique()) == ["leaf+lr", "leaf-clf"]
    counts = results.groupby("pipeline").size()
    assert (counts == n_rows_per_pipeline).all(), counts
    assert np.isfinite(results["score"].to_numpy(float)).all()
    assert ((results["score"] >= 0) & (results["score"] <= 1)).all()


@pytest.mark.parametrize("evaluation_name", ["WithinSessionEvaluation", "CrossSubjectEvaluation"])
def test_arrays_with_channel_names(dataset, paradigm, recording, tmp_path, evaluation_name):
    from moabb import evaluations

    pipelines = _pipelines(**recording)
    # Arrays come with y label-encoded to 0..K-1 (alphabetical event names).
    pipelines["leaf-clf"].set_params(label_texts={0: "left hand", 1: "right hand"})
    evaluation = getattr(evaluations, evaluation_name)(
        paradigm=paradigm, datasets=[dataset], overwrite=True, hdf5_path=str(tmp_path),
        **({"n_splits": 2} if evaluation_name == "WithinSessionEvaluation" else {}))
    results = evaluation.process(pipelines)
    # one score per subject (one session each; or one left-out subject per fold)
    _check_results(results, N_SUBJECTS)
    assert sorted(results["subject"].astype(str).unique()) == ["1", "2"]


@pytest.mark.parametrize("evaluation_name", ["WithinSessionEvaluation", "CrossSubjectEvaluation"])
def test_epochs_with_event_names(dataset, paradigm, tmp_path, evaluation_name):
    from moabb import evaluations

    evaluation = getattr(evaluations, evaluation_name)(
        paradigm=paradigm, datasets=[dataset], overwrite=True, hdf5_path=str(tmp_path),
        return_epochs=True, mne_labels=True,
        **({"n_splits": 2} if evaluation_name == "WithinSessionEvaluation" else {}))
    # Epochs carry names, rate and volts; y holds the event names (label_texts keyed by
    # them would raise "have no text" if MOABB passed integers instead).
    pipelines = _pipelines()
    pipelines["leaf-clf"].set_params(label_texts={"left_hand": "left hand",
                                                  "right_hand": "right hand"})
    results = evaluation.process(pipelines)
    _check_results(results, N_SUBJECTS)


def test_cross_subject_fit_aligns_each_training_subject_on_its_own(moabb_env, paradigm, tmp_path,
                                                                   monkeypatch):
    """MOABB fits without groups; the subjects come from the Epochs' metadata."""
    import leaf_sk._base
    from moabb.datasets.fake import FakeDataset
    from moabb.evaluations import CrossSubjectEvaluation

    dataset = FakeDataset(event_list=("left_hand", "right_hand"), n_sessions=1, n_runs=1,
                          n_subjects=3, channels=CHANNELS, duration=30, n_events=10, sfreq=128,
                          seed=0)
    seen = []
    align = leaf_sk._base.align_trials
    monkeypatch.setattr(leaf_sk._base, "align_trials",
                        lambda trials, groups=None: seen.append(groups) or align(trials, groups))
    evaluation = CrossSubjectEvaluation(paradigm=paradigm, datasets=[dataset], overwrite=True,
                                        hdf5_path=str(tmp_path), return_epochs=True,
                                        mne_labels=True)
    pipelines = {"leaf+lr": make_pipeline(LeafEncoder(**TINY, alignment="euclidean"),
                                          LogisticRegression())}
    results = evaluation.process(pipelines)
    assert len(results) == 3
    assert seen and all(groups is not None for groups in seen)
    # each of the 3 folds: fit_transform of the two training subjects, transform of the third
    assert sorted(len(set(groups)) for groups in seen) == [1, 1, 1, 2, 2, 2]
