"""LeafEncoder: features of EEG trials, the shared input path, and its errors."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline, make_union
from sklearn.utils._param_validation import InvalidParameterError

from leaf_sk import LeafEncoder

# 22 channels fill only a third of the 65-site template; the estimators rightly warn.
pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")

CV = StratifiedKFold(2, shuffle=True, random_state=0)


@pytest.fixture
def trials(make_trials):
    return make_trials(n_trials=6)


@pytest.fixture
def encoder(make_estimator):
    return make_estimator(LeafEncoder, pooling="mean")


# --- features -----------------------------------------------------------------------------

def test_transform_gives_pooled_tokens(encoder, trials):
    X, _ = trials
    features = encoder.fit(X).transform(X)
    d_model = encoder.model_.config.d_model
    assert features.shape == (len(X), d_model) == (len(X), encoder.n_features_out_)
    assert features.dtype == np.float32 and np.isfinite(features).all()
    assert not encoder.model_.training
    assert encoder.get_feature_names_out().tolist() == [f"leafencoder{i}" for i in range(d_model)]


def test_mean_std_pooling_doubles_the_features(make_estimator, trials):
    X, _ = trials
    mean = make_estimator(LeafEncoder, pooling="mean").fit_transform(X)
    both = make_estimator(LeafEncoder, pooling="mean+std").fit_transform(X)
    assert both.shape == (len(X), 2 * mean.shape[1])
    np.testing.assert_allclose(both[:, : mean.shape[1]], mean, rtol=1e-5, atol=1e-6)


def test_instruction_gives_unit_text_space_features(make_estimator, trials):
    X, _ = trials
    encoder = make_estimator(LeafEncoder, instruction="motor imagery: left or right hand")
    features = encoder.fit(X).transform(X)
    assert features.shape == (len(X), 64)  # the hashing text encoder is 64-d
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(encoder.instruction_vector_), 1.0, rtol=1e-5)


def test_instruction_levels_change_the_features(make_estimator, trials):
    X, _ = trials
    common = dict(instruction="motor imagery: left or right hand", label_texts=["Left", "Right"])
    levels = [make_estimator(LeafEncoder, instruction_level=level, **common).fit_transform(X)
              for level in (0, 1, 2)]
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert not np.allclose(levels[a], levels[b])


def test_level2_needs_label_texts(make_estimator, trials):
    X, _ = trials
    encoder = make_estimator(LeafEncoder, instruction="motor imagery", instruction_level=2)
    with pytest.raises(ValueError, match="instruction_level=2 blends.*label_texts is None; pass label_texts.*instruction_level=1"):
        encoder.fit(X)


def test_each_trial_is_embedded_alone(make_estimator, trials):
    X, _ = trials
    X = X * np.arange(1, len(X) + 1)[:, None, None]  # neighbours on very different scales
    for params in ({}, {"instruction": "motor imagery"}):
        encoder = make_estimator(LeafEncoder, batch_size=4, **params).fit(X)
        features = encoder.transform(X)
        for i in range(len(X)):
            np.testing.assert_allclose(encoder.transform(X[i:i + 1])[0], features[i],
                                       rtol=1e-5, atol=1e-6)


def test_fitted_attributes(ch_names, encoder, trials):
    X, _ = trials
    encoder.fit(X)
    assert encoder.n_features_in_ == len(ch_names)
    assert encoder.ch_names_ == ch_names and encoder.sfreq_ == 250.0
    assert encoder.channel_map_.matrix.shape == (65, len(ch_names))
    assert encoder.device_ == "cpu"


def test_channel_matrix_is_computed_once_in_fit(encoder, trials, monkeypatch):
    from leaf_sk import _base

    X, _ = trials
    features = encoder.fit(X).transform(X)

    def fail(*args, **kwargs):
        raise AssertionError("make_channel_map called after fit")

    monkeypatch.setattr(_base, "make_channel_map", fail)
    np.testing.assert_array_equal(encoder.transform(X), features)


def test_device_auto(make_estimator, trials):
    import torch

    X, _ = trials
    encoder = make_estimator(LeafEncoder, device="auto").fit(X)
    assert encoder.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    assert encoder.transform(X).shape[0] == len(X)


def test_same_seed_same_features_other_seed_other(make_estimator, trials):
    X, _ = trials
    a = make_estimator(LeafEncoder, random_state=0).fit_transform(X)
    b = make_estimator(LeafEncoder, random_state=0).fit_transform(X)
    c = make_estimator(LeafEncoder, random_state=1).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_does_not_touch_torch_global_rng(encoder, trials):
    import torch

    X, _ = trials
    state = torch.random.get_rng_state()
    encoder.fit(X).transform(X)
    assert torch.equal(torch.random.get_rng_state(), state)


# --- the input path -----------------------------------------------------------------------

def test_epochs_and_microvolt_arrays_give_the_same_features(ch_names, make_epochs, make_estimator):
    epochs, _ = make_epochs(n_trials=4)
    X_uv = epochs.get_data() * 1e6
    from_epochs = LeafEncoder(None, size="tiny", device="cpu", precision="float32",
                              random_state=0).fit(epochs)
    from_array = make_estimator(LeafEncoder).fit(X_uv)
    assert from_epochs.ch_names_ == ch_names and from_epochs.sfreq_ == 250.0
    assert from_epochs.n_features_in_ == len(ch_names)
    np.testing.assert_allclose(from_epochs.transform(epochs), from_array.transform(X_uv),
                               rtol=1e-4, atol=1e-5)


def test_units_parameter_for_arrays_in_volts(make_estimator, trials):
    X, _ = trials
    in_uv = make_estimator(LeafEncoder).fit_transform(X)
    in_v = make_estimator(LeafEncoder, units="V").fit_transform(X * 1e-6)
    np.testing.assert_allclose(in_v, in_uv, rtol=1e-4, atol=1e-5)


def test_flattened_trials_with_ch_names(encoder, trials):
    X, _ = trials
    features = encoder.fit(X).transform(X)
    flat = encoder.fit(X.reshape(len(X), -1))
    assert flat.n_features_in_ == X.shape[1] * X.shape[2]
    np.testing.assert_allclose(flat.transform(X.reshape(len(X), -1)), features, rtol=1e-5)


def test_trial_length_may_change_after_fit(encoder, make_trials):
    X, _ = make_trials(n_trials=4, duration=1.2)
    longer, _ = make_trials(n_trials=3, duration=2.0)
    assert encoder.fit(X).transform(longer).shape == (3, encoder.n_features_out_)


def test_resampling_other_rates(make_estimator, make_trials):
    X, _ = make_trials(n_trials=3, duration=1.2, sfreq=512.0)
    encoder = make_estimator(LeafEncoder, sfreq=512.0)
    assert encoder.fit_transform(X).shape == (3, encoder.n_features_out_)


# --- scikit-learn ---------------------------------------------------------------------------

def test_pipeline_with_logistic_regression(encoder, make_trials):
    X, y = make_trials(n_trials=8)
    scores = cross_val_score(make_pipeline(encoder, LogisticRegression()), X, y, cv=CV)
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_beside_csp_and_tangent_space(encoder, make_trials):
    from mne.decoding import CSP
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace

    X, y = make_trials(n_trials=8)
    union = make_union(encoder, CSP(n_components=2),
                       make_pipeline(Covariances("oas"), TangentSpace()))
    scores = cross_val_score(make_pipeline(union, LogisticRegression()), X, y, cv=CV)
    assert np.isfinite(scores).all()


def test_fit_keeps_the_parameters(ch_names, make_estimator, trials):
    X, _ = trials
    ch_names = list(ch_names)
    encoder = make_estimator(LeafEncoder, ch_names=ch_names)
    params = encoder.get_params()
    encoder.fit(X)
    assert encoder.get_params() == params and encoder.ch_names is ch_names


def test_transform_before_fit(encoder, trials):
    with pytest.raises(NotFittedError, match="not fitted yet.*fit"):
        encoder.transform(trials[0])


# --- bad input ------------------------------------------------------------------------------

def _raised_before_torch(excinfo):
    """The error comes from leaf-sk's checks, not from deep inside torch."""
    return not any("torch" in str(entry.path).split("site-packages")[-1]
                   for entry in excinfo.traceback)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values(encoder, trials, value):
    X, _ = trials
    X[2, 5, 10] = value
    with pytest.raises(ValueError, match=r"NaN or Inf values, in 1 trial\(s\) \[2\].*drop") as exc:
        encoder.fit(X)
    assert _raised_before_torch(exc)
    encoder.fit(np.nan_to_num(X, posinf=0.0))
    with pytest.raises(ValueError, match="NaN or Inf.*replace the values"):
        encoder.transform(X)


def test_2d_without_ch_names(make_estimator, trials):
    X, _ = trials
    encoder = make_estimator(LeafEncoder, ch_names=None)
    with pytest.raises(ValueError, match=r"must be 3-D.*got shape \(6, 6600\).*ch_names is set"):
        encoder.fit(X.reshape(len(X), -1))


def test_4d(encoder, trials):
    X, _ = trials
    with pytest.raises(ValueError, match=r"must be 3-D \(n_trials, n_channels, n_times\).*Pass a"):
        encoder.fit(X[:, None])


def test_1d(encoder, trials):
    with pytest.raises(ValueError, match="must be 3-D.*Reshape your data"):
        encoder.fit(trials[0][0, 0])


def test_array_without_ch_names_or_sfreq(make_estimator, trials):
    X, _ = trials
    with pytest.raises(ValueError, match="ch_names is required.*pass ch_names="):
        make_estimator(LeafEncoder, ch_names=None).fit(X)
    with pytest.raises(ValueError, match="sfreq is required.*pass sfreq="):
        make_estimator(LeafEncoder, sfreq=None).fit(X)


def test_ch_names_of_the_wrong_length(ch_names, make_estimator, trials):
    X, _ = trials
    with pytest.raises(ValueError, match="X has 22 channels but ch_names lists 21; pass one name"):
        make_estimator(LeafEncoder, ch_names=ch_names[:-1]).fit(X)


def test_flattened_columns_not_a_multiple(encoder, trials):
    X, _ = trials
    with pytest.raises(ValueError, match="not a multiple of the 22 channels.*reshape"):
        encoder.fit(X.reshape(len(X), -1)[:, :-1])


def test_too_short_trials(encoder, make_trials):
    X, _ = make_trials(n_trials=2, duration=0.9)
    with pytest.raises(ValueError, match=r"too short: 0\.9 s.*at least 1 s.*Epoch longer") as exc:
        encoder.fit(X)
    assert _raised_before_torch(exc)


def test_unknown_channel(ch_names, make_estimator, trials):
    X, _ = trials
    names = ch_names[:-1] + ["XYZ"]
    with pytest.raises(ValueError, match=r"Unknown EEG channel name\(s\) \['XYZ'\].*Rename"):
        make_estimator(LeafEncoder, ch_names=names).fit(X)


def test_duplicated_channel(ch_names, make_estimator, trials):
    X, _ = trials
    names = ch_names[:-1] + ["Cz"]
    with pytest.raises(ValueError, match=r"more than once: \['Cz'\].*give each row"):
        make_estimator(LeafEncoder, ch_names=names).fit(X)


def test_other_channel_count_after_fit(encoder, trials):
    X, _ = trials
    encoder.fit(X)
    message = ("X has 21 channels, but LeafEncoder is expecting 22 channels.*same channels in "
               "the same order, or refit")
    with pytest.raises(ValueError, match=message) as exc:
        encoder.transform(X[:, :-1])
    assert _raised_before_torch(exc)


def test_other_channel_names_after_fit(ch_names, encoder, trials):
    X, _ = trials
    encoder.fit(X)
    encoder.set_params(ch_names=ch_names[:-1] + ["Oz"])
    with pytest.raises(ValueError, match=r"channels differ from those seen in fit.*added \['Oz'\]"
                                         r".*removed \['POz'\].*or refit"):
        encoder.transform(X)


def test_other_epochs_channels_after_fit(ch_names, make_epochs):
    epochs, _ = make_epochs(n_trials=3)
    encoder = LeafEncoder(None, size="tiny", device="cpu", random_state=0).fit(epochs)
    with pytest.raises(ValueError, match=r"removed \['Fz'\].*reorder_channels"):
        encoder.transform(epochs.copy().drop_channels(["Fz"]))
    reordered = epochs.copy().reorder_channels(ch_names[::-1])
    with pytest.raises(ValueError, match="reordered.*same order as in fit"):
        encoder.transform(reordered)


def test_epochs_with_conflicting_ch_names(ch_names, make_epochs):
    epochs, _ = make_epochs(n_trials=3)
    encoder = LeafEncoder(None, size="tiny", device="cpu", ch_names=ch_names[::-1])
    with pytest.raises(ValueError, match="disagrees with the EEG channels of the Epochs.*leave "
                                         "ch_names=None"):
        encoder.fit(epochs)


def test_sparse_input(encoder):
    from scipy import sparse

    with pytest.raises(TypeError, match="sparse.*dense.*toarray"):
        encoder.fit(sparse.csr_matrix(np.ones((3, 22))))


@pytest.mark.parametrize("param, value, message", [
    ("instruction", 3, "'instruction' parameter of LeafEncoder must be an instance of 'str'"),
    ("pooling", "max", "'pooling' parameter of LeafEncoder must be a str among"),
    ("size", "huge", "'size' parameter of LeafEncoder must be a str among"),
    ("instruction_level", 3, "'instruction_level' parameter of LeafEncoder must be an int in"),
])
def test_invalid_parameters(make_estimator, trials, param, value, message):
    X, _ = trials
    with pytest.raises(InvalidParameterError, match=message):
        make_estimator(LeafEncoder, **{param: value}).fit(X)


def test_device_that_does_not_exist(make_estimator, trials, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="asks for CUDA, but no GPU is visible; use 'auto' or"):
        make_estimator(LeafEncoder, device="cuda").fit(trials[0])


def test_pooled_tokens_accept_any_qformer_size(tmp_path, make_trials):
    from conftest import BCI_IV_2A as BCI_IV_2A_NAMES

    from leaf_sk.checkpoint import save_checkpoint
    from leaf_sk.nn import LeafConfig, LeafModel

    path = save_checkpoint(tmp_path / "full.safetensors", LeafModel(LeafConfig.from_size("tiny", d_text=24)))
    X, _ = make_trials(n_trials=3)
    encoder = LeafEncoder(str(path), ch_names=BCI_IV_2A_NAMES, sfreq=250.0, pooling="mean",
                          device="cpu")
    assert encoder.fit_transform(X).shape == (3, 16)


def test_logvar_pooling(make_estimator, make_trials):
    X, _ = make_trials(n_trials=4)
    encoder = make_estimator(LeafEncoder, pooling="logvar").fit(X)
    features = encoder.transform(X)
    assert features.shape == (4, encoder.model_.config.n_filters) == (4, encoder.n_features_out_)
    np.testing.assert_allclose(features[1:2], encoder.transform(X[1:2]), rtol=1e-5, atol=1e-5)
