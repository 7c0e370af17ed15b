"""scikit-learn's estimator checks, and the API round trips every estimator must survive."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from leaf_sk import LeafEncoder, LeafInstructionClassifier

# One or 22 channels fill only part of the 65-site template; the estimators rightly warn.
pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")

# sklearn's checks pass 2-D arrays of a few columns. With one channel, each row is one
# flattened trial; at 1 Hz even a single column lasts 1 s, the two 0.5-s windows a trial
# needs once resampled to 200 Hz. The data is meaningless as EEG: these instances test
# the API only.
CHECK_PARAMS = dict(checkpoint=None, size="tiny", text_encoder="hashing", ch_names=["Cz"], sfreq=1.0,
                    batch_size=16, device="cpu", random_state=0)

# Every check passes; a check that cannot would be listed here with its reason.
EXPECTED_FAILED = {"LeafEncoder": {}, "LeafInstructionClassifier": {}}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED[type(estimator).__name__]


@parametrize_with_checks(
    [LeafEncoder(**CHECK_PARAMS), LeafInstructionClassifier(max_epochs=1, **CHECK_PARAMS)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# --- round trips on EEG-shaped data ----------------------------------------------------------

def _output(estimator, X):
    method = "transform" if hasattr(estimator, "transform") else "decision_function"
    return getattr(estimator, method)(X)


@pytest.fixture(params=[LeafEncoder, LeafInstructionClassifier], ids=lambda cls: cls.__name__)
def fitted(request, make_estimator, make_trials):
    X, y = make_trials(n_trials=6)
    estimator = make_estimator(request.param, instruction="motor imagery").fit(X, y)
    return estimator, X, y


def test_clone_gives_an_unfitted_equal_copy(fitted):
    estimator, X, y = fitted
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    assert not hasattr(copy, "n_features_in_")
    np.testing.assert_array_equal(_output(copy.fit(X, y), X), _output(estimator, X))


def test_get_and_set_params(fitted):
    estimator, _, _ = fitted
    params = estimator.get_params()
    assert all(not name.endswith("_") for name in params)
    estimator.set_params(batch_size=2, random_state=5)
    assert estimator.get_params()["batch_size"] == 2 and estimator.random_state == 5
    with pytest.raises(ValueError, match="Invalid parameter 'btch_size'"):
        estimator.set_params(btch_size=2)


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_fitted_round_trip_gives_identical_outputs(fitted, tmp_path, how):
    estimator, X, _ = fitted
    expected = _output(estimator, X)
    path = tmp_path / "estimator.bin"
    if how == "pickle":
        path.write_bytes(pickle.dumps(estimator))
        loaded = pickle.loads(path.read_bytes())
    else:
        joblib.dump(estimator, path)
        loaded = joblib.load(path)
    np.testing.assert_array_equal(_output(loaded, X), expected)
    assert loaded.get_params().keys() == estimator.get_params().keys()
    if hasattr(estimator, "predict"):
        np.testing.assert_array_equal(loaded.predict(X), estimator.predict(X))
        np.testing.assert_array_equal(loaded.classes_, estimator.classes_)


def test_grid_search_over_instruction_level_and_lr(make_estimator, make_trials):
    X, y = make_trials(n_trials=8)
    clf = make_estimator(LeafInstructionClassifier, instruction="motor imagery")
    grid = {"instruction_level": [0, 2], "lr": [1e-4, 1e-3]}
    search = GridSearchCV(clf, grid, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # Refit on all data with the best parameters: its predictions are those of that estimator.
    best = clone(clf).set_params(**search.best_params_).fit(X, y)
    np.testing.assert_array_equal(search.predict(X), best.predict(X))
    assert clf.get_params()["lr"] == 2e-4 and not hasattr(clf, "classes_")
    assert search.predict(X).shape == (len(X),)


def test_pipeline_of_encoder_and_logistic_regression(make_estimator, make_trials):
    X, y = make_trials(n_trials=8)
    pipeline = make_pipeline(make_estimator(LeafEncoder), LogisticRegression()).fit(X, y)
    assert set(pipeline.predict(X)) <= set(y)
    assert pipeline.predict_proba(X).shape == (len(X), 2)
    refit = clone(pipeline).fit(X, y)
    np.testing.assert_allclose(refit.predict_proba(X), pipeline.predict_proba(X), rtol=1e-6)
