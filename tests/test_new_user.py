"""What a new user hits first: one trial given 2-D, units, flat data, parameter forms, warnings
that come once, and the size of a pickled classifier."""

import pickle
import warnings

import numpy as np
import pytest

from leaf_sk import LeafEncoder, LeafInstructionClassifier
from leaf_sk._input import make_channel_map, read_trials

INTERPOLATED = "ignore:.*template channels.*are interpolated:UserWarning"
pytestmark = pytest.mark.filterwarnings(INTERPOLATED)


def _tiny(cls, **params):
    defaults = dict(checkpoint=None, size="tiny", text_encoder="hashing", device="cpu",
                    random_state=0)
    if cls is LeafInstructionClassifier:
        defaults.update(max_epochs=1, batch_size=4)
    return cls(**{**defaults, **params})


# --- one 2-D trial ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 1024), (8, 1024), (64, 641)])
def test_one_2d_trial_is_refused_with_the_newaxis_hint(shape):
    names = ["TP9", "AF7", "AF8", "TP10"] if shape[0] == 4 else None
    if names is None:
        names = list(make_channel_map.__globals__["TEMPLATE_CH_NAMES"][: shape[0]])
    rng = np.random.default_rng(0)
    trial = rng.standard_normal(shape) * 10
    encoder = _tiny(LeafEncoder, ch_names=names, sfreq=256.0)
    with pytest.raises(ValueError, match=rf"2-D X of shape \({shape[0]}, {shape[1]}\) looks like one "
                                         r"trial.*pass X\[np.newaxis\]"):
        encoder.fit(trial)
    features = encoder.fit_transform(trial[np.newaxis])
    assert features.shape[0] == 1


def test_flattened_trials_are_still_read():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3, 300)) * 10
    flat = _tiny(LeafEncoder, ch_names=["C3", "Cz", "C4"], sfreq=250.0).fit_transform(X.reshape(5, -1))
    np.testing.assert_array_equal(
        flat, _tiny(LeafEncoder, ch_names=["C3", "Cz", "C4"], sfreq=250.0).fit_transform(X))


# --- units --------------------------------------------------------------------------------

def test_volts_given_as_microvolts_warn_naming_volts(make_trials, ch_names):
    X, _ = make_trials(n_trials=3)
    with pytest.warns(UserWarning, match=r"implausible for units=None, i.e. 'uV'.*If X is in V, "
                                         r"pass units='V'"):
        read_trials(X * 1e-6, ch_names=ch_names, sfreq=250.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_trials(X * 1e-6, ch_names=ch_names, sfreq=250.0, units="V")
        read_trials(X, ch_names=ch_names, sfreq=250.0)
        read_trials(X * 2e-6, ch_names=ch_names, sfreq=250.0)  # warned once per process


def test_microvolt_epochs_read_as_volts_warn_naming_microvolts(make_epochs):
    epochs, _ = make_epochs(n_trials=3)
    microvolt_epochs = epochs.copy()
    microvolt_epochs._data *= 1e6
    with pytest.warns(UserWarning, match=r"implausible for units=None, i.e. 'V'.*If X is in uV, "
                                         r"pass units='uV'"):
        read_trials(microvolt_epochs)
    with pytest.warns(UserWarning, match=r"implausible for units='mV'.*If X is in uV"):
        read_trials(microvolt_epochs.get_data(), ch_names=epochs.ch_names, sfreq=250.0, units="mV")


# --- flat trials and channels -------------------------------------------------------------

def test_flat_trial_and_flat_channel_are_named(make_trials, ch_names):
    X, _ = make_trials(n_trials=4)
    X[1] = 0.0
    X[2, ch_names.index("Cz")] = 5.0
    encoder = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0)
    with pytest.warns(UserWarning, match=r"trial\(s\) \[1\] are flat on every channel.*"
                                         r"'Cz' in trial\(s\) \[2\]") as record:
        encoder.fit(X)
    assert sum("flat" in str(w.message) for w in record) == 1


# --- parameters agree across estimators ---------------------------------------------------

@pytest.mark.parametrize("form", [tuple, np.array])
@pytest.mark.parametrize("cls", [LeafEncoder, LeafInstructionClassifier], ids=lambda c: c.__name__)
def test_ch_names_as_tuple_or_array(cls, form, make_trials, ch_names):
    X, y = make_trials(n_trials=4)
    as_list = _tiny(cls, ch_names=ch_names, sfreq=250.0).fit(X, y)
    other = _tiny(cls, ch_names=form(ch_names), sfreq=250.0).fit(X, y)
    assert other.ch_names_ == ch_names and all(type(n) is str for n in other.ch_names_)
    method = "transform" if cls is LeafEncoder else "decision_function"
    np.testing.assert_array_equal(getattr(other, method)(X), getattr(as_list, method)(X))


def test_label_texts_as_dict_or_list_in_both_estimators(make_trials, ch_names):
    X, y = make_trials(n_trials=4)
    common = dict(ch_names=ch_names, sfreq=250.0, instruction="motor imagery", instruction_level=2)
    as_dict = {"left_hand": "left hand", "right_hand": "right hand"}
    as_list = ["left hand", "right hand"]
    encoded = [_tiny(LeafEncoder, label_texts=texts, **common).fit(X).transform(X)
               for texts in (as_dict, as_list)]
    np.testing.assert_array_equal(*encoded)
    fitted = [_tiny(LeafInstructionClassifier, label_texts=texts, **common).fit(X, y)
              for texts in (as_dict, as_list)]
    assert fitted[0].label_texts_ == fitted[1].label_texts_ == as_list
    np.testing.assert_array_equal(fitted[0].decision_function(X), fitted[1].decision_function(X))
    with pytest.raises(ValueError, match=r"label_texts lists 3 text\(s\) but y has 2 classes.*"
                                         r"np.unique\(y\)"):
        _tiny(LeafInstructionClassifier, label_texts=as_list + ["feet"], **common).fit(X, y)
    zero_shot = _tiny(LeafInstructionClassifier, label_texts=as_list, max_epochs=0, **common)
    with pytest.warns(UserWarning, match="Q-Former is untrained"):
        zero_shot.fit(X)
    assert list(zero_shot.classes_) == as_list
    assert set(zero_shot.predict(X)) <= set(as_list)


def test_level2_error_names_instruction_level(make_trials, ch_names):
    X, _ = make_trials(n_trials=4)
    encoder = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, instruction="motor imagery",
                    instruction_level=2)
    with pytest.raises(ValueError, match=r"instruction_level=2 .*pass label_texts.*instruction_level=1"):
        encoder.fit(X)


def test_duplicate_label_text_warns_once(make_trials, ch_names):
    X, y = make_trials(n_trials=4)
    clf = _tiny(LeafInstructionClassifier, ch_names=ch_names, sfreq=250.0, instruction="motor",
                label_texts={"left_hand": "hand", "right_hand": "hand"})
    with pytest.warns(UserWarning) as record:
        clf.fit(X, y)
    assert sum("same embedding" in str(w.message) for w in record) == 1


def test_pooling_with_an_instruction_is_refused(make_trials, ch_names):
    X, _ = make_trials(n_trials=4)
    encoder = _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0, instruction="motor imagery",
                    pooling="logvar")
    with pytest.raises(ValueError, match=r"pooling='logvar' pools the Tower tokens, but with "
                                         r"instruction=.*leave pooling='auto'"):
        encoder.fit(X)


@pytest.mark.filterwarnings("default:.*template channels.*are interpolated:UserWarning")
def test_interpolation_warning_once_per_channel_set(make_trials, ch_names):
    X, _ = make_trials(n_trials=4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            _tiny(LeafEncoder, ch_names=ch_names, sfreq=250.0).fit(X)
        _tiny(LeafEncoder, ch_names=ch_names[:10], sfreq=250.0).fit(X[:, :10])
    messages = [str(w.message) for w in record if "are interpolated" in str(w.message)]
    assert len(messages) == 2
    assert messages[0].startswith("43 of 65") and messages[1].startswith("55 of 65")


# --- a pickled classifier holds what predict needs ----------------------------------------

def test_pickle_drops_the_training_state_unless_warm_start(make_trials, ch_names):
    X, y = make_trials(n_trials=8)
    params = dict(checkpoint="leaf-small", ch_names=ch_names, sfreq=250.0, max_epochs=1)
    lean = _tiny(LeafInstructionClassifier, **params).fit(X, y)
    warm = _tiny(LeafInstructionClassifier, warm_start=True, **params).fit(X, y)
    lean_size, warm_size = len(pickle.dumps(lean)), len(pickle.dumps(warm))
    weights = sum(p.numel() * p.element_size() for p in lean.module_.parameters())
    assert lean.net_ is None and warm.net_ is not None
    assert lean_size < 1.2 * weights < warm_size
    assert all(p.grad is None for p in lean.module_.parameters())
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lean)).decision_function(X),
                                  lean.decision_function(X))
    warm.fit(X, y)
    assert len(warm.history_) == 2
    with pytest.raises(ValueError, match="warm_start=True continues the previous fit, but the "
                                         "channels differ"):
        warm.set_params(ch_names=ch_names[:20]).fit(X[:, :20], y)
