"""The one input path of every estimator: Epochs or arrays → ``(n, 65, T)`` float32 at 200 Hz.

Steps, each a function so that estimators and tests can use them alone:

1. :func:`read_trials` validates ``X`` (Epochs or array) and returns microvolts.
2. :func:`make_channel_map` turns channel names into one ``(65, n_channels)`` matrix:
   aliases, averaging of several sources on one site, spherical-spline interpolation.
3. :func:`to_template` resamples to 200 Hz, scales each trial alone, applies the matrix
   and keeps whole 0.5-s windows.

:func:`prepare_unlabelled` chains them for Raw recordings (pretraining).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .montage import (
    MAX_WINDOWS,
    TEMPLATE_CH_NAMES,
    TEMPLATE_SFREQ,
    WINDOW_SAMPLES,
    resolve_channel,
    template_montage,
)

_UNIT_TO_MICROVOLT = {"V": 1e6, "mV": 1e3, "uV": 1.0, "µV": 1.0, "μV": 1.0}
_ACCEPTED_UNITS = ("V", "mV", "uV", "µV")
_INTERPOLATION_WARN_FRACTION = 0.5
_CLIP_PERCENTILES = (0.1, 99.9)
# From this many values per trial on, the quartiles are computed with the clipping bounds.
_ONE_PASS_MIN_VALUES = 64
_MAX_LISTED = 10


@dataclass(frozen=True, eq=False)
class EEGTrials:
    """Validated trials, in microvolts.

    Attributes
    ----------
    data : ndarray, shape (n_trials, n_channels, n_times)
        float64, microvolts, C-contiguous.
    ch_names : tuple of str, length n_channels
        Names of the rows of each trial, as given.
    sfreq : float
        Sampling rate, in Hz.
    """

    data: np.ndarray
    ch_names: tuple[str, ...]
    sfreq: float


@dataclass(frozen=True, eq=False)
class ChannelMap:
    """Linear map from the input channels onto the 65 template sites.

    Attributes
    ----------
    ch_names : tuple of str, length n_in
        Input channel names, in the order of the rows of the input.
    matrix : ndarray, shape (65, n_in)
        float64, read-only. Row ``i`` gives template site ``TEMPLATE_CH_NAMES[i]`` as a
        weighted sum of input channels: ``1/k`` for each of the ``k`` channels recorded at
        that site, spherical-spline weights for a site that was not recorded. The columns
        of ignored channels are zero.
    interpolated : tuple of str
        Template sites filled by interpolation.
    ignored : tuple of str
        Input channels that were dropped (reference, EOG, ECG, EMG, trigger).
    """

    ch_names: tuple[str, ...]
    matrix: np.ndarray
    interpolated: tuple[str, ...]
    ignored: tuple[str, ...]

    @property
    def used(self):
        """Boolean mask, shape (n_in,): input channels that contribute to the template."""
        return np.any(self.matrix != 0, axis=0)


def _listed(items):
    """Short printable list: the first few items and how many more."""
    items = list(items)
    shown = ", ".join(repr(item) for item in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


def _check_units(units, default):
    if units is None:
        return default
    if units not in _UNIT_TO_MICROVOLT:
        raise ValueError(
            f"units={units!r} is not supported; pass one of {_ACCEPTED_UNITS} (the unit of the "
            "values in X), or units=None for µV with arrays and V with mne.Epochs.")
    return units


def _check_sfreq(sfreq):
    if sfreq is None:
        raise ValueError(
            "sfreq is required when X is an array; pass sfreq=<sampling rate in Hz>, "
            "or pass mne.Epochs, which carry it.")
    if isinstance(sfreq, (bool, np.bool_)) or not isinstance(sfreq, (int, float, np.number)):
        raise TypeError(
            f"sfreq must be a number in Hz, got {sfreq!r} ({type(sfreq).__name__}); "
            "pass e.g. sfreq=250.0.")
    if not np.isfinite(sfreq) or sfreq <= 0:
        raise ValueError(
            f"sfreq must be a positive number of Hz, got {sfreq!r}; pass e.g. sfreq=250.0.")
    return float(sfreq)


def _check_ch_names(ch_names):
    if ch_names is None:
        raise ValueError(
            "ch_names is required when X is an array; pass ch_names=[...] with one 10-10 name "
            "per row of X, or pass mne.Epochs, which carry them.")
    if isinstance(ch_names, np.ndarray) and ch_names.ndim != 1:
        raise TypeError(
            f"ch_names must be one name per channel, got an array of shape {ch_names.shape}; "
            "pass a list, tuple or 1-D array of strings, e.g. ch_names=['C3', 'Cz', 'C4'].")
    if isinstance(ch_names, str) or not all(isinstance(name, str) for name in ch_names):
        raise TypeError(
            f"ch_names must be a list, tuple or 1-D array of strings, one per channel, got "
            f"{ch_names!r}; pass e.g. ch_names=['C3', 'Cz', 'C4'].")
    names = tuple(str(name) for name in ch_names)
    seen, duplicates = set(), []
    for name in names:
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    if duplicates:
        raise ValueError(
            f"ch_names lists these channels more than once: {_listed(duplicates)}; "
            "give each row of X its own name (drop or rename the repeated channels).")
    return names


def _epochs_to_array(epochs, ch_names, sfreq):
    """EEG channels not marked bad, shape (n, c, t) in volts, with their names and the rate."""
    import mne

    picks = mne.pick_types(epochs.info, eeg=True, exclude="bads")
    if len(picks) == 0:
        raise ValueError(
            f"The Epochs have no good EEG channel (channel types: "
            f"{sorted(set(epochs.get_channel_types()))}, bads: {epochs.info['bads']}); set "
            "the EEG channel types with epochs.set_channel_types({name: 'eeg'}).")
    info_names = tuple(epochs.ch_names[pick] for pick in picks)
    info_sfreq = float(epochs.info["sfreq"])
    if ch_names is not None and tuple(ch_names) != info_names:
        raise ValueError(
            f"ch_names={_listed(ch_names)} disagrees with the EEG channels of the Epochs "
            f"{_listed(info_names)}; leave ch_names=None with mne.Epochs (they are read from "
            "epochs.info), or rename the channels with epochs.rename_channels.")
    if sfreq is not None and not np.isclose(float(sfreq), info_sfreq):
        raise ValueError(
            f"sfreq={sfreq!r} disagrees with epochs.info['sfreq']={info_sfreq}; leave sfreq=None "
            "with mne.Epochs (it is read from epochs.info), or resample the Epochs.")
    return epochs.get_data(picks=picks), info_names, info_sfreq


def is_epochs_sequence(X):
    """Whether ``X`` is a non-empty list or tuple of ``mne.Epochs``.

    scikit-learn's splitters and searches index ``mne.Epochs`` (which have no ``shape``)
    into a list of one-trial Epochs; such a list is read as one set of trials.
    """
    import mne

    return (isinstance(X, (list, tuple)) and len(X) > 0
            and all(isinstance(element, mne.BaseEpochs) for element in X))


def _epochs_sequence_to_array(sequence, ch_names, sfreq):
    """Trials of several Epochs with one channel set and one rate, stacked: (n, c, t) in volts."""
    parts = [_epochs_to_array(epochs, ch_names, sfreq) for epochs in sequence]
    data, names, rate = parts[0]
    for index, (other, other_names, other_rate) in enumerate(parts[1:], start=1):
        if other_names != names:
            raise ValueError(
                f"X[{index}] has other EEG channels than X[0] ({_listed(other_names)} against "
                f"{_listed(names)}); a list of Epochs is read as one set of trials, so all must "
                "have the same good EEG channels in the same order (epochs.reorder_channels, "
                "or mark the same channels bad).")
        if not np.isclose(other_rate, rate):
            raise ValueError(
                f"X[{index}] is sampled at {other_rate:g} Hz and X[0] at {rate:g} Hz; a list of "
                "Epochs is read as one set of trials, so resample them to one rate first "
                "(epochs.resample).")
        if other.shape[-1] != data.shape[-1]:
            raise ValueError(
                f"X[{index}] has trials of {other.shape[-1]} samples and X[0] of "
                f"{data.shape[-1]}; crop the Epochs to one length (epochs.crop) first.")
    return np.concatenate([part[0] for part in parts]), names, rate


def as_numeric_array(X):
    """Read array-like ``X`` as a real numeric ndarray, any number of dimensions.

    Object arrays of numbers become float64. Sparse matrices, complex values, strings
    and ragged lists of trials are refused with a message that says what to pass.
    """
    from scipy import sparse

    if sparse.issparse(X):
        raise TypeError(
            f"X is a sparse {type(X).__name__}, but EEG trials must be dense; pass "
            "X.toarray() reshaped to (n_trials, n_channels, n_times), or mne.Epochs.")
    try:
        data = np.asarray(X)
    except (ValueError, TypeError) as exc:
        raise TypeError(
            f"X could not be read as an array ({exc}); pass a numeric array of shape "
            "(n_trials, n_channels, n_times) with trials of equal length, or mne.Epochs.") from exc
    if data.dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: X must hold real numbers, got dtype {data.dtype}; "
            "pass the real-valued signal (e.g. X.real), or mne.Epochs.")
    if data.dtype.kind == "O":
        try:
            data = data.astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise TypeError(
                f"X holds values that are not numbers ({exc}); pass a float array of shape "
                "(n_trials, n_channels, n_times) (ragged lists of trials become object arrays: "
                "crop trials to one length first), or mne.Epochs.") from exc
    if data.dtype.kind not in "iuf":
        raise TypeError(
            f"X must hold real numbers, got dtype {data.dtype}; pass a float array of shape "
            "(n_trials, n_channels, n_times), or mne.Epochs.")
    return data


def _check_array(X):
    data = as_numeric_array(X)
    if data.ndim != 3:
        if data.ndim == 2:
            hint = (" For a single trial use X[np.newaxis]; the estimators also take trials "
                    "flattened with X.reshape(len(X), -1) when ch_names is set.")
        else:
            hint = (" Reshape your data: e.g. X[np.newaxis, np.newaxis] is one single-channel "
                    "trial.")
        raise ValueError(
            f"X must be 3-D (n_trials, n_channels, n_times), got shape {data.shape}.{hint} "
            "Pass a 3-D array or mne.Epochs.")
    if 0 in data.shape:
        raise ValueError(
            f"X is empty (shape {data.shape}); pass at least one trial with at least one "
            "channel and one sample.")
    return data


def _check_finite(data, first_trial=0):
    bad = ~np.isfinite(data)
    if bad.any():
        trials = np.flatnonzero(bad.any(axis=(1, 2))) + first_trial
        raise ValueError(
            f"X contains {int(bad.sum())} NaN or Inf values, in {len(trials)} trial(s) "
            f"{_listed(trials.tolist())}; drop those trials or replace the values "
            "(e.g. interpolate the bad samples) before passing X.")


def read_trials(X, *, ch_names=None, sfreq=None, units=None, first_trial=0):
    """Validate trials given as Epochs or as an array.

    Parameters
    ----------
    X : mne.Epochs, list of mne.Epochs, or array-like, shape (n_trials, n_channels, n_times)
        With Epochs, only EEG channels not marked bad are kept, and names and rate come
        from ``info``. A list of Epochs (what scikit-learn's splitters make of Epochs) is
        one set of trials: all must share channels, rate and length.
    ch_names : list of str, length n_channels, optional
        Required for arrays; for Epochs it must agree with ``info`` if given.
    sfreq : float, optional
        Sampling rate in Hz. Required for arrays; for Epochs it must agree with ``info``.
    units : {"V", "mV", "uV", "µV"}, optional
        Unit of the values of ``X``. Default: ``"uV"`` for arrays (as MOABB returns them),
        ``"V"`` for Epochs (MNE's unit).
    first_trial : int
        Index of ``X``'s first trial in the caller's numbering (a block of a larger array),
        used in messages that name trials.

    Returns
    -------
    trials : EEGTrials
        Data in microvolts, float64.

    Raises
    ------
    TypeError, ValueError
        Naming the problem, the value received and the fix.

    Warns
    -----
    UserWarning
        When the amplitudes are implausible for EEG in the given unit (a channel's typical
        standard deviation within a trial outside 0.05-5000 µV), naming the likely unit; once
        per process for each unit and likely unit.
    """
    import mne

    if isinstance(X, mne.io.BaseRaw):
        raise TypeError(
            "X is a continuous mne.io.Raw, not trials; cut it into epochs first "
            "(mne.Epochs or mne.make_fixed_length_epochs), or use prepare_unlabelled for "
            "unlabelled recordings.")
    if isinstance(X, mne.BaseEpochs) or is_epochs_sequence(X):
        unit = _check_units(units, "V")
        if isinstance(X, mne.BaseEpochs):
            data, names, rate = _epochs_to_array(X, ch_names, sfreq)
        else:
            data, names, rate = _epochs_sequence_to_array(X, ch_names, sfreq)
        data = _check_array(data)
    else:
        unit = _check_units(units, "uV")
        data = _check_array(X)
        names = _check_ch_names(ch_names)
        rate = _check_sfreq(sfreq)
        if len(names) != data.shape[1]:
            raise ValueError(
                f"X has {data.shape[1]} channels but ch_names lists {len(names)}; pass one name "
                "per row of X, or pass mne.Epochs.")
    _check_ch_names(names)
    _check_finite(data, first_trial)
    data = np.multiply(data, _UNIT_TO_MICROVOLT[unit], dtype=np.float64)  # a new C-ordered array
    _check_amplitude(data, unit, given=units is not None)
    return EEGTrials(data=data, ch_names=tuple(names), sfreq=rate)


# Implausible amplitudes already warned about, by (unit, given, likely unit): once per process,
# not at every fit and transform of a cross-validation.
_WARNED_AMPLITUDES = set()
# Typical EEG: a channel's standard deviation within a trial is a few to a few hundred µV.
_PLAUSIBLE_STD_UV = (0.05, 5000.0)
_TYPICAL_STD_UV = 20.0


def _check_amplitude(data, unit, *, given):
    """Warn when the amplitudes in µV are implausible for EEG, naming the likely unit.

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_channels, n_times)
        Microvolts, as read with ``unit``.
    unit : str
        The unit the values were read in.
    given : bool
        Whether the user passed ``units`` (otherwise it is the default of the input type).
    """
    spread = data.std(axis=-1)
    live = spread[spread > 0]
    if live.size == 0:
        return
    typical = float(np.median(live))
    low, high = _PLAUSIBLE_STD_UV
    if low <= typical <= high:
        return
    # The unit that would bring the typical spread nearest to that of EEG.
    likely = min(_ACCEPTED_UNITS, key=lambda u: abs(np.log10(
        typical / _UNIT_TO_MICROVOLT[unit] * _UNIT_TO_MICROVOLT[u] / _TYPICAL_STD_UV)))
    if (unit, given, likely) in _WARNED_AMPLITUDES:
        return
    _WARNED_AMPLITUDES.add((unit, given, likely))
    how = f"units={unit!r}" if given else f"units=None, i.e. {unit!r} for this input"
    fix = (f"pass units={likely!r}" if likely != unit else
           "check the scaling of X (EEG channels typically vary by 1-500 µV)")
    warnings.warn(
        f"The EEG amplitudes look implausible for {how}: a channel's standard deviation within a "
        f"trial is typically {typical:.3g} µV (EEG: about 1-500 µV). If X is in {likely}, "
        f"{fix}. Each trial is scaled on its own, so the output does not change, but the data "
        "may not be what you think it is.", UserWarning, stacklevel=3)


def _check_flat(data, ch_names, used=None, first_trial=0):
    """Warn naming the trials and channels that are constant (flat) in time.

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_channels, n_times)
    ch_names : sequence of str, length n_channels
    used : ndarray of bool, shape (n_channels,), optional
        Only these channels are checked (the others do not reach the model).
    first_trial : int
        Index of the first trial in the messages.
    """
    flat = np.ptp(data, axis=-1) == 0
    if used is not None:
        flat &= used[None, :]
    if not flat.any():
        return
    n_checked = flat.shape[1] if used is None else int(used.sum())
    whole = np.flatnonzero(flat.sum(axis=1) == n_checked)
    parts = []
    if whole.size:
        parts.append(f"trial(s) {_listed((whole + first_trial).tolist())} are flat on every "
                     "channel (all-zero or constant): they carry no signal, and their output is meaningless")
    partly = flat.copy()
    partly[whole] = False
    channels = np.flatnonzero(partly.any(axis=0))
    if channels.size:
        listing = "; ".join(
            f"{str(ch_names[c])!r} in trial(s) {_listed((np.flatnonzero(partly[:, c]) + first_trial).tolist())}"
            for c in channels[:_MAX_LISTED])
        more = f"; ... ({channels.size - _MAX_LISTED} more channels)" if channels.size > _MAX_LISTED else ""
        parts.append(f"these channels are flat (constant): {listing}{more}; a disconnected "
                     "electrode distorts the spatial filters")
    warnings.warn(
        "; ".join(parts) + ". Drop those trials, or mark the channels bad (Epochs) or remove "
        "them from X and ch_names so that they are interpolated.", UserWarning, stacklevel=3)


def make_channel_map(ch_names, *, release_compat=False):
    """Map input channels onto the 65-site template, interpolating missing sites.

    Parameters
    ----------
    ch_names : list of str, length n_in
        Input channel names (10-20/10-10/10-05, aliases and case accepted).
    release_compat : bool
        Map CB1/CB2 as the released model did (swapped); see
        :func:`leaf_sk.montage.resolve_channel`.

    Returns
    -------
    channel_map : ChannelMap
        ``matrix`` has shape (65, n_in).

    Raises
    ------
    ValueError
        For unknown or duplicate names, or when no channel can be placed on the template.

    Warns
    -----
    UserWarning
        When input channels are ignored, and when more than half of the template is
        interpolated; once per channel set in a process.

    Notes
    -----
    The interpolation is MNE's spherical spline (``interpolate_bads``, mode ``"fast"``)
    over the template's θ/φ positions. It is linear, so it is computed once, on the
    direct-mapping matrix itself, and applied to the data as one matrix product.
    """
    names = _check_ch_names(ch_names)
    if not names:
        raise ValueError("ch_names is empty; pass one name per channel of X.")
    channel_map = _cached_channel_map(names, bool(release_compat))
    if names in _WARNED_CHANNEL_SETS:
        return channel_map
    _WARNED_CHANNEL_SETS.add(names)
    if channel_map.ignored:
        warnings.warn(
            f"Ignoring {len(channel_map.ignored)} non-EEG or reference channel(s) "
            f"{_listed(channel_map.ignored)}; drop them before fitting to silence this warning.",
            UserWarning, stacklevel=2)
    fraction = len(channel_map.interpolated) / len(TEMPLATE_CH_NAMES)
    if fraction > _INTERPOLATION_WARN_FRACTION:
        warnings.warn(
            f"{len(channel_map.interpolated)} of {len(TEMPLATE_CH_NAMES)} template channels "
            f"({fraction:.0%}) are interpolated from {len(names) - len(channel_map.ignored)} "
            "recorded ones; the spline estimate is unreliable so far from the electrodes. "
            "Use a cap with more 10-10 channels if you can.", UserWarning, stacklevel=2)
    return channel_map


# Channel sets whose map warnings were given: once per channel set and process.
_WARNED_CHANNEL_SETS = set()


@lru_cache(maxsize=64)
def _cached_channel_map(names, release_compat):
    sites, ignored, unknown = [], [], []
    for name in names:
        try:
            sites.append(resolve_channel(name, release_compat=release_compat))
        except ValueError:
            unknown.append(name)
            continue
        if sites[-1] is None:
            ignored.append(name)
    if unknown:
        raise ValueError(
            f"Unknown EEG channel name(s) {_listed(unknown)}: they are not 10-20/10-10/10-05 "
            "names that can be placed on the LEAF template. Rename them to their 10-10 names "
            "with mne.rename_channels (or pass ch_names that use 10-10 names), or drop them.")
    if len(ignored) == len(names):
        raise ValueError(
            f"None of the channels {_listed(names)} is an EEG electrode of the template "
            "(all are reference, EOG, ECG, EMG or trigger channels); pass EEG channels with "
            "10-10 names.")
    direct = _direct_matrix(sites)
    missing = tuple(name for name, row in zip(TEMPLATE_CH_NAMES, direct) if not row.any())
    matrix = _interpolate_missing(direct, missing) if missing else direct
    matrix.flags.writeable = False
    return ChannelMap(ch_names=names, matrix=matrix, interpolated=missing, ignored=tuple(ignored))


def _direct_matrix(sites):
    """(65, n_in) matrix averaging the inputs recorded at each site; None sites give zeros."""
    index = {name: row for row, name in enumerate(TEMPLATE_CH_NAMES)}
    matrix = np.zeros((len(TEMPLATE_CH_NAMES), len(sites)))
    for column, site in enumerate(sites):
        if site is not None:
            matrix[index[site], column] = 1.0
    counts = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, counts, out=matrix, where=counts > 0)


def _interpolate_missing(direct, missing):
    """Fill the rows of ``missing`` sites of ``direct`` (65, n_in) by spherical splines.

    The columns of ``direct`` go through ``interpolate_bads`` as if they were time samples,
    so each output row is the spline combination of the recorded rows.
    """
    import mne

    info = mne.create_info(list(TEMPLATE_CH_NAMES), TEMPLATE_SFREQ, ch_types="eeg")
    raw = mne.io.RawArray(direct, info, verbose=False)
    raw.set_montage(template_montage(), verbose=False)
    raw.info["bads"] = list(missing)
    raw.interpolate_bads(reset_bads=True, mode="fast", origin=(0.0, 0.0, 0.0), verbose=False)
    return raw.get_data()


def check_same_channels(fitted_ch_names, new_ch_names):
    """Raise if the channels of new data differ from those seen in ``fit``.

    Parameters
    ----------
    fitted_ch_names, new_ch_names : sequence of str
        Channel names at fit time and now.

    Raises
    ------
    ValueError
        Naming the channels added, removed or reordered.
    """
    fitted, new = tuple(fitted_ch_names), tuple(new_ch_names)
    if fitted == new:
        return
    added = [name for name in new if name not in fitted]
    removed = [name for name in fitted if name not in new]
    problems = []
    if added:
        problems.append(f"added {_listed(added)}")
    if removed:
        problems.append(f"removed {_listed(removed)}")
    if not added and not removed:
        moved = [f for f, n in zip(fitted, new) if f != n]
        problems.append(f"reordered {_listed(moved)}")
    raise ValueError(
        f"The channels differ from those seen in fit ({len(fitted)} then, {len(new)} now): "
        f"{'; '.join(problems)}. Pass the same channels in the same order as in fit "
        "(epochs.reorder_channels(ch_names_) or index the rows of X), or refit.")


def _resample(data, sfreq):
    """(n, c, t) at ``sfreq`` Hz → (n, c, t') at 200 Hz, along the last axis (MNE FFT)."""
    import mne

    if np.isclose(sfreq, TEMPLATE_SFREQ):
        return data
    return mne.filter.resample(data, up=TEMPLATE_SFREQ, down=sfreq, axis=-1, verbose=False)


def scale_trials(data, used=None):
    """Robust-scale each trial on its own.

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_channels, n_times)
        Any unit.
    used : ndarray of bool, shape (n_channels,), optional
        Channels whose values enter the statistics; the others are scaled alike.

    Returns
    -------
    scaled : ndarray, shape (n_trials, n_channels, n_times)
        Unitless, float64. Per trial, pooled over channels and samples: clipped to the
        0.1th/99.9th percentiles, then ``(x - median) / (q75 - q25)``. A trial whose
        interquartile range is 0 is divided by its standard deviation instead, and a
        constant trial becomes zeros.
    """
    n_trials = data.shape[0]
    pooled = (data if used is None else data[:, used]).reshape(n_trials, -1)
    if pooled.shape[1] >= _ONE_PASS_MIN_VALUES:
        # One partition for all five percentiles: with this many values the quartiles' order
        # statistics lie between the clipping bounds, so clipping would not move them.
        low, q25, median, q75, high = np.percentile(
            pooled, (_CLIP_PERCENTILES[0], 25, 50, 75, _CLIP_PERCENTILES[1]), axis=1)
    else:
        low, high = np.percentile(pooled, _CLIP_PERCENTILES, axis=1)
        q25, median, q75 = np.percentile(np.clip(pooled, low[:, None], high[:, None]),
                                         (25, 50, 75), axis=1)
    spread = q75 - q25
    flat = spread <= 0
    if flat.any():
        spread[flat] = np.clip(pooled[flat], low[flat, None], high[flat, None]).std(axis=1)
    scale = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)
    out = np.clip(data, low[:, None, None], high[:, None, None])
    out -= median[:, None, None]
    out *= scale[:, None, None]
    return out


def _is_int_at_least(value, lowest):
    """Whether ``value`` is an integer (not a bool) >= ``lowest``."""
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and value >= lowest)


def _check_window_counts(min_windows, max_windows):
    if not _is_int_at_least(min_windows, 1):
        raise ValueError(f"min_windows must be a positive integer, got {min_windows!r}.")
    if max_windows is not None and not _is_int_at_least(max_windows, min_windows):
        raise ValueError(
            f"max_windows must be None or an integer >= min_windows={min_windows}, "
            f"got {max_windows!r}.")


def to_template(trials, channel_map, *, min_windows=2, max_windows=MAX_WINDOWS, first_trial=0):
    """Bring validated trials onto the model input: 65 sites, 200 Hz, whole windows.

    Parameters
    ----------
    trials : EEGTrials
        From :func:`read_trials`; ``data`` shape (n_trials, n_in, n_times).
    channel_map : ChannelMap
        From :func:`make_channel_map` for ``trials.ch_names``.
    min_windows : int
        Fewest 0.5-s windows a trial must give.
    max_windows : int or None
        Most windows kept (the first ones); None keeps all.
    first_trial : int
        Index of the first trial in messages (see :func:`read_trials`).

    Returns
    -------
    X : ndarray, shape (n_trials, 65, n_windows * 100)
        float32, unitless (robust-scaled per trial), 200 Hz, rows in
        :data:`~leaf_sk.montage.TEMPLATE_CH_NAMES` order. Each trial's output depends
        on that trial only.

    Raises
    ------
    ValueError
        If the channels disagree with ``channel_map`` or trials are too short.

    Warns
    -----
    UserWarning
        Naming the trials and channels that are flat (constant in time).
    """
    _check_window_counts(min_windows, max_windows)
    n_in = trials.data.shape[1]
    if n_in != len(channel_map.ch_names):
        raise ValueError(
            f"The trials have {n_in} channels but the channel map was made for "
            f"{len(channel_map.ch_names)}; make the map from the same channels "
            "(make_channel_map(trials.ch_names)).")
    if tuple(trials.ch_names) != tuple(channel_map.ch_names):
        raise ValueError(
            f"The trials' channels {_listed(trials.ch_names)} differ from those the channel map "
            f"was made for {_listed(channel_map.ch_names)}; make the map from the same channels "
            "(make_channel_map(trials.ch_names)).")
    data = _resample(trials.data, trials.sfreq)
    n_windows = data.shape[-1] // WINDOW_SAMPLES
    if n_windows < min_windows:
        n_times = trials.data.shape[-1]
        raise ValueError(
            f"Trials are too short: {n_times / trials.sfreq:.3g} s ({n_times} samples at "
            f"{trials.sfreq:g} Hz, {data.shape[-1]} samples at {TEMPLATE_SFREQ:g} Hz) give "
            f"{n_windows} whole 0.5-s window(s), and at least {min_windows} are needed, "
            f"i.e. trials of at least {min_windows * WINDOW_SAMPLES / TEMPLATE_SFREQ:g} s. "
            "Epoch longer trials (a wider tmin/tmax).")
    if max_windows is not None and n_windows > max_windows:
        warnings.warn(
            f"Trials last {data.shape[-1] / TEMPLATE_SFREQ:g} s; LEAF takes at most "
            f"{max_windows * WINDOW_SAMPLES / TEMPLATE_SFREQ:g} s, so only the first "
            f"{max_windows} windows are used. Segment longer trials to use all of them.",
            UserWarning, stacklevel=2)
        n_windows = max_windows
    _check_flat(trials.data, trials.ch_names, channel_map.used, first_trial)
    kept = data[..., : n_windows * WINDOW_SAMPLES]
    scaled = scale_trials(kept, channel_map.used)
    # One BLAS thread: the products are small, and idle BLAS threads spin, taking the cores
    # from the network that runs next (preprocessing ran 2x slower on a busy 2-core machine).
    with _blas_controller().limit(limits=1, user_api="blas"):
        return np.matmul(channel_map.matrix, scaled).astype(np.float32)


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def pad_or_crop(x, n_samples, *, rng=None):
    """Bring every trial to ``n_samples`` samples by zero-padding or cropping.

    Parameters
    ----------
    x : ndarray, shape (n_trials, n_channels, n_times)
    n_samples : int
        Target length.
    rng : numpy.random.Generator, optional
        None: pad on the right and keep the first ``n_samples`` (validation). A Generator:
        per trial, a random split of the padding between left and right, or a random
        crop start (training).

    Returns
    -------
    out : ndarray, shape (n_trials, n_channels, n_samples)
        Same dtype as ``x``.
    """
    if not _is_int_at_least(n_samples, 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be None or a numpy.random.Generator, got {type(rng).__name__}; "
            "pass rng=np.random.default_rng(seed).")
    x = np.asarray(x)
    n_trials, n_times = x.shape[0], x.shape[-1]
    if n_times == n_samples:
        return x.copy()
    out = np.zeros(x.shape[:-1] + (n_samples,), dtype=x.dtype)
    slack = abs(n_times - n_samples)
    offsets = np.zeros(n_trials, int) if rng is None else rng.integers(0, slack + 1, n_trials)
    for trial, offset in enumerate(offsets):
        if n_times < n_samples:
            out[trial, ..., offset: offset + n_times] = x[trial]
        else:
            out[trial] = x[trial, ..., offset: offset + n_samples]
    return out


def _as_elements(X):
    if isinstance(X, (list, tuple)):
        if not X:
            raise ValueError(
                "X is an empty list; pass at least one mne.io.Raw, mne.Epochs or array.")
        return list(X)
    return [X]


def _element_to_trials(element, segment_seconds, **kwargs):
    import mne

    if isinstance(element, mne.io.BaseRaw):
        duration = element.n_times / element.info["sfreq"]
        if duration < segment_seconds:
            raise ValueError(
                f"A Raw recording lasts {duration:.3g} s, shorter than segment_seconds="
                f"{segment_seconds:g}; pass a smaller segment_seconds or drop that recording.")
        element = mne.make_fixed_length_epochs(
            element, duration=segment_seconds, preload=True, verbose=False)
    return read_trials(element, **kwargs)


def prepare_unlabelled(X, *, ch_names=None, sfreq=None, units=None, segment_seconds=4.0,
                       n_windows=None):
    """Turn recordings of any cap into one unlabelled model-input array (pretraining).

    Parameters
    ----------
    X : mne.io.Raw, mne.Epochs, array-like, or a list of them
        Raws are cut into non-overlapping ``segment_seconds`` segments. Arrays have shape
        (n_trials, n_channels, n_times) and need ``ch_names`` and ``sfreq``.
    ch_names, sfreq, units
        As in :func:`read_trials`, applied to every element.
    segment_seconds : float
        Segment length for Raws, in seconds.
    n_windows : int, optional
        0.5-s windows per output trial, 1 to 20. Default: the fewest windows any element
        gives, at most 20. Longer trials keep their first windows; shorter ones are
        zero-padded on the right.

    Returns
    -------
    X : ndarray, shape (n_segments, 65, n_windows * 100)
        float32, robust-scaled per segment, 200 Hz. Each element gets its own channel map.
    """
    if not np.isfinite(segment_seconds) or segment_seconds <= 0:
        raise ValueError(
            f"segment_seconds must be a positive number of seconds, got {segment_seconds!r}.")
    if n_windows is not None and not (_is_int_at_least(n_windows, 1) and n_windows <= MAX_WINDOWS):
        raise ValueError(
            f"n_windows must be None or an integer from 1 to {MAX_WINDOWS}, got {n_windows!r}.")
    arrays = []
    for element in _as_elements(X):
        trials = _element_to_trials(element, segment_seconds, ch_names=ch_names,
                                    sfreq=sfreq, units=units)
        channel_map = make_channel_map(trials.ch_names)
        arrays.append(to_template(trials, channel_map, min_windows=1, max_windows=None))
    if n_windows is None:
        n_windows = min(MAX_WINDOWS, min(a.shape[-1] for a in arrays) // WINDOW_SAMPLES)
    n_samples = n_windows * WINDOW_SAMPLES
    return np.concatenate([pad_or_crop(a, n_samples) for a in arrays])
