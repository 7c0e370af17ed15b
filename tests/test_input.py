"""The shared input path: validation, channel map, resampling, per-trial scaling, windows."""

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from leaf_sk._input import (
    ChannelMap,
    EEGTrials,
    check_same_channels,
    make_channel_map,
    pad_or_crop,
    prepare_unlabelled,
    read_trials,
    scale_trials,
    to_template,
)
from leaf_sk.montage import TEMPLATE_CH_NAMES

BCI_IV_2A = ("Fz FC3 FC1 FCz FC2 FC4 C5 C3 C1 Cz C2 C4 C6 CP3 CP1 CPz CP2 CP4 P1 Pz P2 POz").split()
ROW = {name: row for row, name in enumerate(TEMPLATE_CH_NAMES)}
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def trials_uv(rng):
    """Four 4-s trials at 250 Hz on the 22 BCI-IV-2a channels, in microvolts."""
    return rng.standard_normal((4, len(BCI_IV_2A), 1000)) * 10.0


def _epochs(data_volts, ch_names, sfreq):
    info = mne.create_info(list(ch_names), sfreq, "eeg")
    return mne.EpochsArray(data_volts, info, verbose=False)


# --- read_trials --------------------------------------------------------------------------

def test_read_trials_array(trials_uv):
    trials = read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=250)
    assert isinstance(trials, EEGTrials)
    assert trials.data.dtype == np.float64 and trials.data.flags.c_contiguous
    assert trials.ch_names == tuple(BCI_IV_2A) and trials.sfreq == 250.0
    np.testing.assert_array_equal(trials.data, trials_uv)
    assert trials.data is not trials_uv


@pytest.mark.filterwarnings("ignore:The EEG amplitudes look implausible:UserWarning")
@pytest.mark.parametrize("units, factor", [("V", 1e6), ("mV", 1e3), ("uV", 1.0), ("µV", 1.0)])
def test_read_trials_units(trials_uv, units, factor):
    trials = read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=250, units=units)
    np.testing.assert_allclose(trials.data, trials_uv * factor)


def test_read_trials_epochs_volts_to_microvolts_and_eeg_only(trials_uv):
    info = mne.create_info(BCI_IV_2A + ["EOG1"], 250.0, ["eeg"] * 22 + ["eog"])
    data = np.concatenate([trials_uv, trials_uv[:, :1]], axis=1) * 1e-6
    trials = read_trials(mne.EpochsArray(data, info, verbose=False))
    assert trials.ch_names == tuple(BCI_IV_2A) and trials.sfreq == 250.0
    np.testing.assert_allclose(trials.data, trials_uv)


def test_read_trials_epochs_conflicts(trials_uv):
    epochs = _epochs(trials_uv * 1e-6, BCI_IV_2A, 250.0)
    with pytest.raises(ValueError, match=r"disagrees with the EEG channels.*leave ch_names=None"):
        read_trials(epochs, ch_names=BCI_IV_2A[::-1])
    with pytest.raises(ValueError, match=r"sfreq=128 disagrees.*250.*leave sfreq=None"):
        read_trials(epochs, sfreq=128)
    assert read_trials(epochs, ch_names=BCI_IV_2A, sfreq=250.0).sfreq == 250.0


def test_read_trials_epochs_without_eeg(trials_uv):
    info = mne.create_info(["EOG1"], 250.0, "eog")
    epochs = mne.EpochsArray(trials_uv[:, :1], info, verbose=False)
    with pytest.raises(ValueError, match=r"no good EEG channel.*set_channel_types"):
        read_trials(epochs)


def test_read_trials_rejects_raw(trials_uv):
    raw = mne.io.RawArray(trials_uv[0] * 1e-6, mne.create_info(BCI_IV_2A, 250.0, "eeg"), verbose=False)
    with pytest.raises(TypeError, match=r"continuous mne.io.Raw.*make_fixed_length_epochs"):
        read_trials(raw)


@pytest.mark.parametrize("X, message", [
    (np.zeros((22, 1000)), r"must be 3-D.*got shape \(22, 1000\).*X\[np.newaxis\]"),
    (np.zeros((2, 2, 22, 10)), r"must be 3-D.*got shape \(2, 2, 22, 10\).*Pass a 3-D array"),
    (np.zeros((0, 22, 1000)), r"X is empty \(shape \(0, 22, 1000\)\).*at least one trial"),
])
def test_read_trials_shape_errors(X, message):
    with pytest.raises(ValueError, match=message):
        read_trials(X, ch_names=BCI_IV_2A, sfreq=250)


def test_read_trials_complex():
    with pytest.raises(ValueError, match=r"Complex data not supported.*pass the real-valued"):
        read_trials(np.zeros((1, 22, 10), dtype=complex), ch_names=BCI_IV_2A, sfreq=250)


@pytest.mark.parametrize("X", [
    np.full((1, 22, 10), "a"),
    [[[1.0, 2.0]] * 22, [[1.0]] * 22],  # ragged
])
def test_read_trials_non_numeric(X):
    with pytest.raises(TypeError, match=r"(real numbers|could not be read).*pass"):
        read_trials(X, ch_names=BCI_IV_2A, sfreq=250)


def test_read_trials_nan_and_inf_counted_per_trial(trials_uv):
    trials_uv[1, 3, 5] = np.nan
    trials_uv[3, 0, :2] = np.inf
    message = r"3 NaN or Inf values, in 2 trial\(s\) \[1, 3\].*drop those trials"
    with pytest.raises(ValueError, match=message):
        read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=250)


def test_read_trials_ch_names_errors(trials_uv):
    with pytest.raises(ValueError, match=r"ch_names is required.*pass ch_names=.*or pass mne.Epochs"):
        read_trials(trials_uv, sfreq=250)
    with pytest.raises(ValueError, match=r"X has 22 channels but ch_names lists 20; pass one name "
                                         r"per row of X, or pass mne.Epochs"):
        read_trials(trials_uv, ch_names=BCI_IV_2A[:20], sfreq=250)
    with pytest.raises(ValueError, match=r"more than once: \['C3', 'Cz'\].*drop or rename"):
        read_trials(trials_uv, ch_names=BCI_IV_2A[:20] + ["C3", "Cz"], sfreq=250)
    with pytest.raises(TypeError, match=r"list, tuple or 1-D array of strings.*ch_names=\['C3'"):
        read_trials(trials_uv, ch_names="C3", sfreq=250)


@pytest.mark.parametrize("sfreq, error, message", [
    (None, ValueError, r"sfreq is required.*pass sfreq="),
    ("250", TypeError, r"sfreq must be a number in Hz, got '250'.*sfreq=250.0"),
    (0, ValueError, r"positive number of Hz, got 0.*sfreq=250.0"),
    (-250.0, ValueError, r"positive number of Hz, got -250.0"),
    (np.inf, ValueError, r"positive number of Hz, got inf"),
])
def test_read_trials_sfreq_errors(trials_uv, sfreq, error, message):
    with pytest.raises(error, match=message):
        read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=sfreq)


def test_read_trials_unknown_units(trials_uv):
    message = r"units='nV' is not supported; pass one of \('V', 'mV', 'uV', 'µV'\)"
    with pytest.raises(ValueError, match=message):
        read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=250, units="nV")


# --- make_channel_map ---------------------------------------------------------------------

def test_channel_map_puts_recorded_channels_unchanged_on_their_rows(trials_uv):
    channel_map = make_channel_map(BCI_IV_2A)
    assert isinstance(channel_map, ChannelMap) and channel_map.matrix.shape == (65, 22)
    mapped = np.matmul(channel_map.matrix, trials_uv)
    for column, name in enumerate(BCI_IV_2A):
        np.testing.assert_array_equal(mapped[:, ROW[name]], trials_uv[:, column])
        one_hot = np.zeros(22)
        one_hot[column] = 1.0
        np.testing.assert_array_equal(channel_map.matrix[ROW[name]], one_hot)
    assert set(channel_map.interpolated) == set(TEMPLATE_CH_NAMES) - set(BCI_IV_2A)


def test_channel_map_interpolated_rows_reproduce_constants():
    # MNE's spherical spline carries a constant term, so each interpolated row sums to 1.
    channel_map = make_channel_map(BCI_IV_2A)
    rows = [ROW[name] for name in channel_map.interpolated]
    np.testing.assert_allclose(channel_map.matrix[rows].sum(axis=1), 1.0, atol=1e-6)
    assert not channel_map.matrix.flags.writeable


def test_channel_map_full_cap_is_a_permutation():
    names = list(TEMPLATE_CH_NAMES[::-1])
    channel_map = make_channel_map(names)
    assert channel_map.interpolated == ()
    np.testing.assert_array_equal(channel_map.matrix, np.eye(65)[:, ::-1])


def test_channel_map_averages_sources_on_one_site():
    names = BCI_IV_2A + ["T3", "T7"]
    channel_map = make_channel_map(names)
    row = channel_map.matrix[ROW["T7"]]
    assert row[names.index("T3")] == row[names.index("T7")] == 0.5
    assert row.sum() == 1.0
    assert "T7" not in channel_map.interpolated


def test_channel_map_ignores_reference_and_eog_with_warning():
    with pytest.warns(UserWarning, match=r"Ignoring 2 .*\['A1', 'HEOG'\].*drop them"):
        channel_map = make_channel_map(BCI_IV_2A + ["A1", "HEOG"])
    assert channel_map.ignored == ("A1", "HEOG")
    np.testing.assert_array_equal(channel_map.matrix[:, -2:], 0.0)
    np.testing.assert_array_equal(channel_map.used, [True] * 22 + [False] * 2)


def test_channel_map_warns_when_most_of_the_template_is_interpolated():
    message = r"61 of 65 template channels \(94%\) are interpolated.*more 10-10"
    with pytest.warns(UserWarning, match=message):
        make_channel_map(["TP9", "AF7", "AF8", "TP10"])


def test_channel_map_release_compat():
    names = BCI_IV_2A + ["CB1"]
    assert make_channel_map(names).matrix[ROW["O1"], -1] == 1.0
    assert make_channel_map(names, release_compat=True).matrix[ROW["O2"], -1] == 1.0


def test_channel_map_errors():
    message = r"Unknown EEG channel name\(s\) \['Foo', 'Bar'\].*rename_channels.*drop them"
    with pytest.raises(ValueError, match=message):
        make_channel_map(["C3", "Foo", "Bar"])
    with pytest.raises(ValueError, match=r"more than once: \['C3'\]"):
        make_channel_map(["C3", "C4", "C3"])
    with pytest.raises(ValueError, match=r"None of the channels \['EOG', 'ECG'\].*pass EEG channels"):
        make_channel_map(["EOG", "ECG"])
    with pytest.raises(ValueError, match=r"ch_names is empty; pass one name"):
        make_channel_map([])


# --- to_template --------------------------------------------------------------------------

@pytest.mark.parametrize("sfreq, n_times, n_out", [(250, 1000, 800), (160, 480, 600), (200, 950, 900)])
def test_to_template_resamples_to_200_hz_whole_windows(rng, sfreq, n_times, n_out):
    trials = read_trials(rng.standard_normal((2, 22, n_times)), ch_names=BCI_IV_2A, sfreq=sfreq)
    out = to_template(trials, make_channel_map(BCI_IV_2A))
    assert out.shape == (2, 65, n_out) and out.dtype == np.float32


def test_to_template_each_trial_alone(trials_uv):
    trials_uv[2] *= 1000.0  # a neighbour on another scale must not matter
    channel_map = make_channel_map(BCI_IV_2A)
    full = to_template(read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=250), channel_map)
    for i in range(len(trials_uv)):
        alone = to_template(read_trials(trials_uv[i:i + 1], ch_names=BCI_IV_2A, sfreq=250), channel_map)
        np.testing.assert_array_equal(full[i], alone[0])


def test_to_template_epochs_in_volts_equal_array_in_microvolts(trials_uv):
    channel_map = make_channel_map(BCI_IV_2A)
    from_array = to_template(read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=250), channel_map)
    from_epochs = to_template(read_trials(_epochs(trials_uv * 1e-6, BCI_IV_2A, 250.0)), channel_map)
    np.testing.assert_allclose(from_epochs, from_array, atol=1e-5)


def test_to_template_robust_scale_on_recorded_rows(trials_uv):
    channel_map = make_channel_map(BCI_IV_2A)
    trials = read_trials(trials_uv[..., :800], ch_names=BCI_IV_2A, sfreq=200)
    out = to_template(trials, channel_map)
    recorded = out[:, [ROW[name] for name in BCI_IV_2A]].reshape(len(out), -1)
    q25, median, q75 = np.percentile(recorded, [25, 50, 75], axis=1)
    np.testing.assert_allclose(median, 0.0, atol=1e-6)
    np.testing.assert_allclose(q75 - q25, 1.0, rtol=1e-5)


def test_scale_trials_degenerate_trials_give_no_nan():
    data = np.zeros((3, 4, 1000))
    data[1, 0, :5] = 100.0                  # IQR 0, std > 0: divided by the std
    data[2] = 7.0                           # constant: left at zero
    out = scale_trials(data)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[2], 0.0)
    assert out[1].max() > 0 and out[1, 1:].max() == 0.0


def test_to_template_windows_crop_and_limits(rng):
    channel_map = make_channel_map(BCI_IV_2A)
    long = read_trials(rng.standard_normal((1, 22, 2500)), ch_names=BCI_IV_2A, sfreq=200)
    assert to_template(long, channel_map).shape[-1] == 2000
    assert to_template(long, channel_map, max_windows=None).shape[-1] == 2500
    assert to_template(long, channel_map, max_windows=4).shape[-1] == 400
    with pytest.raises(ValueError, match=r"max_windows must be None or an integer >= min_windows=2"):
        to_template(long, channel_map, max_windows=1)


def test_to_template_too_short(rng):
    trials = read_trials(rng.standard_normal((1, 22, 200)), ch_names=BCI_IV_2A, sfreq=250)
    message = (r"too short: 0.8 s \(200 samples at 250 Hz, 160 samples at 200 Hz\) give 1 whole "
               r"0.5-s window\(s\), and at least 2 are needed, i.e. trials of at least 1 s.*tmin/tmax")
    with pytest.raises(ValueError, match=message):
        to_template(trials, make_channel_map(BCI_IV_2A))
    assert to_template(trials, make_channel_map(BCI_IV_2A), min_windows=1).shape == (1, 65, 100)


def test_to_template_channel_mismatch(trials_uv):
    trials = read_trials(trials_uv, ch_names=BCI_IV_2A, sfreq=250)
    message = r"trials have 22 channels but the channel map was made for 21.*make_channel_map"
    with pytest.raises(ValueError, match=message):
        to_template(trials, make_channel_map(BCI_IV_2A[:21]))
    message = r"differ from those the channel map was made for.*make_channel_map"
    with pytest.raises(ValueError, match=message):
        to_template(trials, make_channel_map(BCI_IV_2A[::-1]))


# --- check_same_channels ------------------------------------------------------------------

def test_check_same_channels():
    check_same_channels(["C3", "Cz"], ("C3", "Cz"))
    with pytest.raises(ValueError, match=r"added \['C4'\]; removed \['Cz'\].*same order as in fit"):
        check_same_channels(["C3", "Cz"], ["C3", "C4"])
    with pytest.raises(ValueError, match=r"removed \['Cz'\].*or refit"):
        check_same_channels(["C3", "Cz"], ["C3"])
    with pytest.raises(ValueError, match=r"reordered \['C3', 'Cz'\].*reorder_channels"):
        check_same_channels(["C3", "Cz"], ["Cz", "C3"])


# --- pad_or_crop --------------------------------------------------------------------------

def test_pad_or_crop_deterministic():
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5) + 1
    padded = pad_or_crop(x, 8)
    np.testing.assert_array_equal(padded[..., :5], x)
    np.testing.assert_array_equal(padded[..., 5:], 0)
    np.testing.assert_array_equal(pad_or_crop(x, 3), x[..., :3])
    assert padded.dtype == np.float32


def test_pad_or_crop_random_keeps_contiguous_content():
    x = np.arange(4 * 2 * 6, dtype=float).reshape(4, 2, 6) + 1
    padded = pad_or_crop(x, 10, rng=np.random.default_rng(1))
    cropped = pad_or_crop(x, 3, rng=np.random.default_rng(1))
    for trial in range(4):
        nonzero = np.flatnonzero(padded[trial, 0])
        np.testing.assert_array_equal(padded[trial, :, nonzero[0]: nonzero[0] + 6], x[trial])
        start = int(cropped[trial, 0, 0] - x[trial, 0, 0])
        np.testing.assert_array_equal(cropped[trial], x[trial, :, start: start + 3])
    np.testing.assert_array_equal(padded, pad_or_crop(x, 10, rng=np.random.default_rng(1)))


def test_pad_or_crop_errors():
    message = r"numpy.random.Generator, got int; pass rng=np.random.default_rng"
    with pytest.raises(TypeError, match=message):
        pad_or_crop(np.zeros((1, 2, 3)), 5, rng=0)
    with pytest.raises(ValueError, match=r"n_samples must be a positive integer, got 0"):
        pad_or_crop(np.zeros((1, 2, 3)), 0)


# --- prepare_unlabelled -------------------------------------------------------------------

def _raw(rng, ch_names, sfreq, seconds):
    info = mne.create_info(list(ch_names), sfreq, "eeg")
    return mne.io.RawArray(rng.standard_normal((len(ch_names), int(seconds * sfreq))) * 1e-5,
                           info, verbose=False)


def test_prepare_unlabelled_mixes_raw_epochs_and_arrays(rng, trials_uv):
    raw = _raw(rng, ["TP9", "AF7", "AF8", "TP10"], 256.0, 13.0)
    epochs = _epochs(trials_uv[:2, :, :750] * 1e-6, BCI_IV_2A, 250.0)   # 3 s → 6 windows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = prepare_unlabelled([raw, epochs], segment_seconds=4.0)
        assert out.shape == (3 + 2, 65, 600) and out.dtype == np.float32
        assert prepare_unlabelled(raw, n_windows=20).shape == (3, 65, 2000)
        array = prepare_unlabelled(trials_uv, ch_names=BCI_IV_2A, sfreq=250)
    assert array.shape == (4, 65, 800)


def test_prepare_unlabelled_errors(rng):
    with pytest.raises(ValueError, match=r"empty list; pass at least one mne.io.Raw"):
        prepare_unlabelled([])
    with pytest.raises(ValueError, match=r"lasts 2 s, shorter than segment_seconds=4; pass a smaller"):
        prepare_unlabelled(_raw(rng, ["C3", "C4"], 100.0, 2.0))
    with pytest.raises(ValueError, match=r"n_windows must be None or an integer from 1 to 20, got 21"):
        prepare_unlabelled(_raw(rng, ["C3", "C4"], 100.0, 8.0), n_windows=21)


# --- real data ----------------------------------------------------------------------------

@pytest.mark.data
def test_physionet_edf_resolves_and_maps():
    edf = DATA / "mne_data/MNE-eegbci-data/files/eegmmidb/1.0.0/S001/S001R04.edf"
    if not edf.is_file():
        pytest.skip(f"PhysioNet file not found at {edf}; see shared/data/README.md")
    raw = mne.io.read_raw_edf(edf, preload=True, verbose=False)
    assert "Fc5." in raw.ch_names
    epochs = mne.Epochs(raw, *mne.events_from_annotations(raw, verbose=False), tmin=0.0,
                        tmax=3.0 - 1 / raw.info["sfreq"], baseline=None, preload=True, verbose=False)
    trials = read_trials(epochs)
    channel_map = make_channel_map(trials.ch_names)
    assert set(channel_map.interpolated) == {"FT9", "FT10", "TP9", "TP10"}
    assert channel_map.ignored == ()
    assert channel_map.matrix[ROW["T7"], trials.ch_names.index("T9..")] == 0.5
    out = to_template(trials, channel_map)
    assert out.shape == (len(epochs), 65, 600) and np.isfinite(out).all()
