"""Euclidean alignment: the function, and the ``alignment`` parameter of both estimators."""

import numpy as np
import pytest

from leaf_sk import LeafEncoder, LeafInstructionClassifier
from leaf_sk.alignment import euclidean_alignment

pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")


def _mean_covariance(trials):
    centred = trials - trials.mean(axis=-1, keepdims=True)
    return np.einsum("nct,ndt->cd", centred, centred) / (centred.shape[-1] * len(trials))


def _subjects(n_per_subject=6, n_channels=5, n_times=400, seed=0):
    """Two subjects whose trials share nothing but their channel count: different mixings."""
    rng = np.random.default_rng(seed)
    data, groups = [], []
    for subject, gain in ((1, 3.0), (2, 40.0)):
        mixing = rng.standard_normal((n_channels, n_channels)) * gain
        data.append(mixing @ rng.standard_normal((n_per_subject, n_channels, n_times)))
        groups += [subject] * n_per_subject
    return np.concatenate(data), np.asarray(groups)


def test_each_group_gets_an_isotropic_mean_covariance():
    data, groups = _subjects()
    aligned = euclidean_alignment(data, groups)
    for subject in (1, 2):
        cov = _mean_covariance(aligned[groups == subject])
        scale = np.trace(cov) / len(cov)
        np.testing.assert_allclose(cov / scale, np.eye(len(cov)), atol=1e-8)
        # the amplitude stays that of the subject (mean variance kept)
        assert np.isclose(scale, np.trace(_mean_covariance(data[groups == subject])) / len(cov))


def test_groups_are_aligned_independently_and_in_place():
    data, groups = _subjects()
    together = euclidean_alignment(data, groups)
    for subject in (1, 2):
        alone = euclidean_alignment(data[groups == subject])
        np.testing.assert_allclose(together[groups == subject], alone, rtol=1e-10, atol=1e-10)
    # one group for all trials is not the same as one per subject
    assert not np.allclose(euclidean_alignment(data), together)


def test_rank_deficient_data_stays_finite():
    data, _ = _subjects()
    data = data - data.mean(axis=1, keepdims=True)  # average reference: rank n_channels - 1
    assert np.isfinite(euclidean_alignment(data)).all()


def test_groups_of_the_wrong_length_are_refused():
    data, groups = _subjects()
    with pytest.raises(ValueError, match=r"one label .* per trial, shape \(12,\)"):
        euclidean_alignment(data, groups[:-1])


def _tiny(cls, **params):
    defaults = dict(checkpoint=None, size="tiny", text_encoder="hashing", device="cpu", random_state=0)
    if cls is LeafInstructionClassifier:
        defaults.update(max_epochs=1, batch_size=4)
    return cls(**{**defaults, **params})


def test_encoder_aligns_the_trials_of_each_call(make_trials, ch_names):
    X, _ = make_trials(n_trials=8)
    aligned = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, alignment="euclidean",
                    pooling="logvar").fit(X)
    plain = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, pooling="logvar").fit(X)
    np.testing.assert_allclose(aligned.transform(X), plain.transform(euclidean_alignment(X)),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(aligned.transform(X), plain.transform(X))


def test_groups_of_few_trials_warn(make_trials, ch_names):
    """Fewer than 5 trials are aligned mostly on their own covariance: the user hears of it."""
    import warnings

    X, _ = make_trials(n_trials=8)
    encoder = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, alignment="euclidean",
                    pooling="logvar").fit(X)
    with pytest.warns(UserWarning, match="these 2 trial.*fewer than 5 trials per subject"):
        encoder.transform(X[:2])
    with pytest.warns(UserWarning, match="1 of 2 groups .the smallest: 3 trial"):
        encoder.fit(X, groups=np.repeat([1, 2], [5, 3]))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Euclidean alignment")
        encoder.transform(X[:5])
        encoder.fit(X, groups=np.repeat([1, 2], 4) * 0)
    plain = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, pooling="logvar").fit(X)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Euclidean alignment")
        plain.transform(X[:1])


def test_fit_reference_aligns_every_call_on_the_fit_trials(make_trials, ch_names, monkeypatch):
    """alignment_reference='fit': one trial at a time gives what the whole call gives."""
    import warnings

    import leaf_sk._base
    from leaf_sk.alignment import euclidean_whitener

    X, _ = make_trials(n_trials=12)
    online = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, alignment="euclidean",
                   alignment_reference="fit", pooling="logvar").fit(X[:8])
    plain = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, pooling="logvar").fit(X[:8])
    whitener = euclidean_whitener(X[:8].astype(np.float64))
    np.testing.assert_allclose(online.alignment_whitener_, whitener)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Euclidean alignment")
        one_by_one = np.concatenate([online.transform(X[i:i + 1]) for i in range(8, 12)])
    np.testing.assert_array_equal(one_by_one, online.transform(X[8:]))
    monkeypatch.setattr(leaf_sk._base, "_BLOCK_BYTES", 1)  # read one trial per block
    np.testing.assert_array_equal(one_by_one, online.transform(X[8:]))
    np.testing.assert_allclose(one_by_one, plain.transform(np.matmul(whitener, X[8:])),
                               rtol=1e-5, atol=1e-6)
    per_call = online.set_params(alignment_reference="call")
    assert not np.allclose(per_call.transform(X[8:]), one_by_one)


def test_fit_reference_needs_one_group_and_a_fit_with_it(make_trials, ch_names):
    from sklearn.exceptions import NotFittedError

    X, y = make_trials(n_trials=8)
    clf = _tiny(LeafInstructionClassifier, ch_names=ch_names, sfreq=250.0,
                alignment="euclidean", alignment_reference="fit")
    with pytest.raises(ValueError, match="one subject's.*got 2 groups.*alignment_reference='call'"):
        clf.fit(X, y, groups=np.repeat([1, 2], 4))
    clf.set_params(alignment_reference="call").fit(X, y)
    clf.set_params(alignment_reference="fit")
    with pytest.raises(NotFittedError, match="fitted with alignment_reference='call'; fit it again"):
        clf.predict(X)
    assert set(clf.fit(X, y).predict(X[:1])) <= set(y)
    with pytest.raises(ValueError, match="alignment_reference"):
        clf.set_params(alignment_reference="session").fit(X, y)


def test_fit_groups_align_per_subject(make_trials, ch_names):
    X, _ = make_trials(n_trials=8)
    X[4:] *= np.random.default_rng(1).uniform(0.5, 2.0, size=(len(ch_names), 1))  # a second "subject"
    groups = np.repeat([1, 2], 4)
    encoder = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, alignment="euclidean",
                    pooling="logvar")
    per_group = encoder.fit_transform(X, groups=groups)
    expected = np.concatenate([encoder.transform(X[:4]), encoder.transform(X[4:])])
    np.testing.assert_allclose(per_group, expected, rtol=1e-5, atol=1e-6)


def test_epochs_metadata_subjects_are_aligned_per_subject(make_epochs):
    """MOABB's cross-subject fit: Epochs of many subjects, the subject in their metadata."""
    import mne
    import pandas as pd

    epochs, _ = make_epochs(n_trials=8)
    data = epochs.get_data()
    data[4:] *= np.random.default_rng(1).uniform(0.5, 2.0, size=(len(epochs.ch_names), 1))
    epochs = mne.EpochsArray(data, epochs.info, verbose=False)
    groups = np.repeat([1, 2], 4)
    encoder = _tiny(LeafEncoder, alignment="euclidean", pooling="logvar")
    explicit = encoder.fit_transform(epochs, groups=groups)
    pooled = encoder.transform(epochs)
    epochs.metadata = pd.DataFrame({"subject": groups, "session": "0"})
    np.testing.assert_array_equal(encoder.fit_transform(epochs), explicit)
    np.testing.assert_array_equal(encoder.transform(epochs), explicit)
    assert not np.allclose(explicit, pooled)


def test_a_list_of_epochs_keeps_its_subjects(make_epochs):
    """scikit-learn's cross-validation indexes Epochs into a list of Epochs."""
    import pandas as pd

    epochs, _ = make_epochs(n_trials=8)
    encoder = _tiny(LeafEncoder, alignment="euclidean", pooling="logvar")
    pooled = encoder.fit_transform([epochs[:3], epochs[3:]])
    epochs.metadata = pd.DataFrame({"subject": np.repeat([1, 2], 4)})
    whole = encoder.fit_transform(epochs)
    np.testing.assert_array_equal(encoder.fit_transform([epochs[:3], epochs[3:]]), whole)
    assert not np.allclose(whole, pooled)


@pytest.mark.parametrize("missing", [np.nan, None])
def test_a_missing_subject_is_refused(make_epochs, missing):
    import pandas as pd

    epochs, _ = make_epochs(n_trials=8)
    epochs.metadata = pd.DataFrame({"subject": [1, 1, 1, missing, 2, 2, 2, 2]})
    with pytest.raises(ValueError, match="no subject or session for 1 of 8 trials .first: trial 3"):
        _tiny(LeafEncoder, alignment="euclidean").fit(epochs)


def test_groups_without_alignment_are_refused(make_trials, ch_names):
    X, y = make_trials(n_trials=8)
    with pytest.raises(ValueError, match="only used with Euclidean alignment"):
        _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0).fit(X, groups=np.repeat([1, 2], 4))
    with pytest.raises(ValueError, match="only used with Euclidean alignment"):
        _tiny(LeafInstructionClassifier, ch_names=ch_names, sfreq=250.0).fit(
            X, y, groups=np.repeat([1, 2], 4))


def test_classifier_trains_and_predicts_with_alignment(make_trials, ch_names):
    X, y = make_trials(n_trials=8)
    clf = _tiny(LeafInstructionClassifier, ch_names=ch_names, sfreq=250.0, alignment="euclidean")
    clf.fit(X, y, groups=np.repeat([1, 2], 4))
    assert set(clf.predict(X)) <= set(y)


def test_unknown_alignment_is_refused(make_trials, ch_names):
    X, _ = make_trials(n_trials=4)
    with pytest.raises(ValueError, match="alignment"):
        _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, alignment="riemann").fit(X)


def test_auto_alignment_follows_the_checkpoint(make_trials, ch_names, tmp_path):
    from leaf_sk.alignment import checkpoint_alignment

    assert checkpoint_alignment("leaf-small-bci") == "euclidean"
    assert checkpoint_alignment("leaf-small") is None
    assert checkpoint_alignment(None) is None
    X, _ = make_trials(n_trials=4)
    assert _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0).fit(X).alignment_ is None
    encoder = LeafEncoder("leaf-small-bci", ch_names=ch_names, sfreq=250.0, device="cpu").fit(X)
    assert encoder.alignment_ == "euclidean" and encoder.pooling_ == "logvar"
