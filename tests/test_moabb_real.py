"""Both estimators inside MOABB evaluations on the real Kalunga2016 SSVEP recordings.

Held-out subjects 9 and 10 only (the packaged checkpoint never saw them), arrays with
``ch_names`` and ``mne.Epochs`` (``return_epochs=True``). Scores are checked for shape and
sanity here; the figures quoted in benchmarks/RESULTS.md come from benchmarks/moabb_eval.py.
"""


import numpy as np
import pytest
from conftest import use_shared_data
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from leaf_sk import LeafEncoder, LeafInstructionClassifier

pytest.importorskip("moabb")
pytestmark = [
    pytest.mark.data,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

SUBJECTS = [9, 10]
TEXTS = {"13": "13 Hz flicker", "17": "17 Hz flicker", "21": "21 Hz flicker", "rest": "Resting"}


@pytest.fixture
def kalunga(monkeypatch):
    use_shared_data(monkeypatch, "MNE-ssvepexo-data")
    from moabb.datasets import Kalunga2016
    from moabb.paradigms import SSVEP

    return Kalunga2016(subjects=SUBJECTS), SSVEP(n_classes=4)


def _pipelines(ch_names=None, sfreq=None, label_texts=None):
    common = dict(ch_names=ch_names, sfreq=sfreq, device="cpu")
    return {
        "leaf+lr": make_pipeline(LeafEncoder(**common), LogisticRegression(max_iter=500)),
        "leaf-iqf": LeafInstructionClassifier(
            instruction="which flicker frequency was attended", label_texts=label_texts,
            max_epochs=1, random_state=0, **common),
    }


@pytest.mark.parametrize("evaluation_name", ["WithinSessionEvaluation", "CrossSubjectEvaluation"])
@pytest.mark.parametrize("return_epochs", [False, True])
def test_kalunga_in_moabb(kalunga, tmp_path, evaluation_name, return_epochs):
    import moabb.evaluations

    dataset, paradigm = kalunga
    if return_epochs:
        # MNE labels are the event names; the Epochs carry channel names and rate.
        pipes = _pipelines(label_texts=TEXTS)
        kwargs = dict(return_epochs=True, mne_labels=True)
    else:
        # MOABB label-encodes y (sorted event names) for arrays.
        epochs, _, _ = paradigm.get_data(dataset, SUBJECTS[:1], return_epochs=True)
        pipes = _pipelines(list(epochs.ch_names), epochs.info["sfreq"],
                           {i: TEXTS[e] for i, e in enumerate(sorted(TEXTS))})
        kwargs = {}
    evaluation = getattr(moabb.evaluations, evaluation_name)(
        paradigm=paradigm, datasets=[dataset], overwrite=True, hdf5_path=str(tmp_path),
        random_state=0, n_splits=2 if evaluation_name == "WithinSessionEvaluation" else None,
        **kwargs)
    results = evaluation.process(pipes)
    assert set(results.pipeline) == set(pipes)
    assert sorted(results.subject.astype(int).unique()) == SUBJECTS
    assert len(results) == len(pipes) * len(SUBJECTS)
    assert np.isfinite(results.score).all() and results.score.between(0, 1).all()
