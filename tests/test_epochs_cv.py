"""mne.Epochs through scikit-learn's splitters and searches.

scikit-learn indexes Epochs (which have no ``shape``) into a list of one-trial Epochs; the
estimators read such a list as one set of trials.
"""

from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import use_shared_data
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, ShuffleSplit, cross_val_score
from sklearn.pipeline import make_pipeline

from leaf_sk import LeafEncoder, LeafInstructionClassifier

pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")


def test_cross_val_score_and_grid_search_on_epochs(make_epochs, tiny_params):
    epochs, y = make_epochs(n_trials=12)
    encoder = LeafEncoder(checkpoint=None, size="tiny", device="cpu", random_state=0)
    pipeline = make_pipeline(encoder, LogisticRegression())
    cv = ShuffleSplit(3, test_size=0.25, random_state=0)
    on_epochs = cross_val_score(pipeline, epochs, y, cv=cv, error_score="raise")
    array_pipeline = make_pipeline(
        LeafEncoder(checkpoint=None, size="tiny", device="cpu", random_state=0,
                    ch_names=epochs.ch_names, sfreq=epochs.info["sfreq"], units="V"),
        LogisticRegression())
    on_arrays = cross_val_score(array_pipeline, epochs.get_data(), y, cv=cv, error_score="raise")
    np.testing.assert_array_equal(on_epochs, on_arrays)

    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0]}, cv=2,
                          error_score="raise").fit(epochs, y)
    assert search.predict(epochs).shape == (12,)

    classifier = LeafInstructionClassifier(**tiny_params)
    scores = cross_val_score(classifier, epochs, y, cv=cv, error_score="raise")
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_list_of_epochs_must_share_channels_and_rate(make_epochs):
    epochs, y = make_epochs(n_trials=4)
    encoder = LeafEncoder(checkpoint=None, size="tiny", device="cpu").fit(epochs)
    trials = [epochs[i] for i in range(4)]
    np.testing.assert_array_equal(encoder.transform(trials), encoder.transform(epochs))
    other = epochs.copy().drop_channels(["Fz"])
    with pytest.raises(ValueError, match=r"X\[1\] has other EEG channels than X\[0\].*same good EEG"):
        encoder.transform([epochs[0], other[1]])
    resampled = epochs.copy().resample(200.0)
    with pytest.raises(ValueError, match=r"X\[1\] is sampled at 200 Hz and X\[0\] at 250 Hz"):
        encoder.transform([epochs[0], resampled[1]])


@pytest.mark.data
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_mne_csp_example_runs_with_leaf_encoder_on_real_epochs(monkeypatch):
    """MNE's CSP example (PhysioNet subject 1, hands vs feet) with LeafEncoder on the Epochs."""
    use_shared_data(monkeypatch, "MNE-eegbci-data")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        from mne_csp_example_with_leaf import load_epochs
    finally:
        sys.path.pop(0)
    epochs, labels = load_epochs()
    assert isinstance(epochs, mne.BaseEpochs) and len(epochs) == 45
    pipeline = make_pipeline(LeafEncoder(device="cpu"), LogisticRegression(max_iter=1000))
    cv = ShuffleSplit(4, test_size=0.2, random_state=42)
    scores = cross_val_score(pipeline, epochs, labels, cv=cv, error_score="raise")
    assert scores.shape == (4,) and np.all(np.isfinite(scores))
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0]}, cv=3,
                          error_score="raise").fit(epochs, labels)
    assert set(search.predict(epochs)) <= {0, 1}
