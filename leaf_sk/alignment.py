"""Euclidean alignment: re-centring each subject's (or session's) trials before the network."""

from __future__ import annotations

import warnings

import numpy as np

ALIGNMENTS = ("euclidean",)
#: Parameter values of the estimators: an alignment, None, or "auto" (the checkpoint's).
ALIGNMENT_OPTIONS = ("auto", *ALIGNMENTS)
#: What the trials of a call are aligned on: their own covariance, or that of the fit trials.
ALIGNMENT_REFERENCES = ("call", "fit")

# Eigenvalues of the mean covariance below this fraction of the largest are raised to it, so
# that rank-deficient recordings (average reference, interpolated channels) stay finite.
_EIGENVALUE_FLOOR = 1e-6
# Groups of fewer trials warn: their mean covariance is mostly each trial's own, so aligning
# erases the trials' spatial patterns (benchmarks/RESULTS.md, "trials per call").
FEWEST_TRIALS_TO_ALIGN = 5


def checkpoint_alignment(checkpoint):
    """The alignment a checkpoint was trained with: ``"euclidean"`` or None.

    Read from the provenance that :class:`~leaf_sk.LeafInstructionTuner` records
    (``params["alignment"]``); None for random weights, release files and checkpoints that do
    not say.
    """
    if checkpoint is None:
        return None
    from .checkpoint import read_metadata

    try:
        provenance = read_metadata(checkpoint).get("provenance") or {}
    except (ValueError, OSError):
        return None
    alignment = (provenance.get("params") or {}).get("alignment")
    return alignment if alignment in ALIGNMENTS else None


def resolve_alignment(alignment, checkpoint):
    """An estimator's ``alignment`` parameter as used: ``"auto"`` becomes the checkpoint's."""
    return checkpoint_alignment(checkpoint) if alignment == "auto" else alignment


def align_trials(trials, groups=None):
    """:class:`~leaf_sk._input.EEGTrials` with each group's data re-centred (see below).

    Warns when a group has fewer than ``FEWEST_TRIALS_TO_ALIGN`` trials.
    """
    import dataclasses

    data = euclidean_alignment(trials.data, groups)
    _warn_if_small(np.zeros(len(data), dtype=int) if groups is None else np.asarray(groups))
    return dataclasses.replace(trials, data=data)


def reference_whitener(trials, groups=None):
    """The whitener of ``alignment_reference="fit"``: that of the fit trials, one group.

    Parameters
    ----------
    trials : EEGTrials
    groups : array-like of shape (n_trials,), optional
        Must hold one value: every later call is aligned on this one reference.

    Returns
    -------
    ndarray of shape (n_channels, n_channels), or None for flat trials (nothing to whiten).
    """
    groups = check_groups(groups, len(trials.data))
    if groups is not None and len(np.unique(groups)) > 1:
        raise ValueError(
            f"alignment_reference='fit' aligns every later call on the covariance of the fit "
            f"trials, so fit takes one subject's (or session's) trials; got "
            f"{len(np.unique(groups))} groups. Fit on one subject's calibration trials, or set "
            "alignment_reference='call' to align each call (each group) on its own.")
    _warn_if_small(np.zeros(len(trials.data), dtype=int))
    return euclidean_whitener(np.asarray(trials.data, dtype=np.float64))


def whiten_trials(trials, whitener):
    """:class:`~leaf_sk._input.EEGTrials` with ``whitener`` (:func:`reference_whitener`) applied."""
    import dataclasses

    data = np.asarray(trials.data, dtype=np.float64)
    return dataclasses.replace(trials, data=data if whitener is None else np.matmul(whitener, data))


def _warn_if_small(labels):
    sizes = np.unique(labels, return_counts=True)[1]
    if not len(labels) or sizes.min() >= FEWEST_TRIALS_TO_ALIGN:
        return
    what = (f"these {len(labels)} trial(s)" if len(sizes) == 1 else
            f"{int((sizes < FEWEST_TRIALS_TO_ALIGN).sum())} of {len(sizes)} groups (the "
            f"smallest: {sizes.min()} trial(s))")
    warnings.warn(
        f"Euclidean alignment re-centres {what} on their own mean covariance; with fewer "
        f"than {FEWEST_TRIALS_TO_ALIGN} trials per subject that reference is mostly each "
        "trial's own, which erases its spatial pattern, and each output depends on the other "
        "trials of the call. Pass all of a subject's trials in one call (with groups= in "
        "fit for several subjects), fit on a subject's calibration trials with "
        "alignment_reference='fit' to decode later trials one by one, or set alignment=None.",
        UserWarning, stacklevel=7)


def metadata_groups(X):
    """The subject of each trial of ``mne.Epochs`` whose metadata has a ``subject`` column.

    MOABB's evaluations pass such Epochs (with ``return_epochs=True``); its cross-subject
    evaluation fits on many subjects in one call, and aligning them as one group would train on
    trials re-centred unlike the test subject's. A list of such Epochs (scikit-learn's
    cross-validation indexes Epochs into one) gives its elements' subjects in order. None for
    anything else.
    """
    if isinstance(X, (list, tuple)):
        parts = [metadata_groups(part) for part in X]
        return np.concatenate(parts) if parts and all(p is not None for p in parts) else None
    metadata = getattr(X, "metadata", None)
    if metadata is None or "subject" not in metadata.columns:
        return None
    return metadata["subject"].to_numpy()


def check_groups(groups, n_trials):
    """``groups`` as a 1-D array of ``n_trials`` labels, or None."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n_trials:
        raise ValueError(
            f"groups must be one label (subject or session) per trial, shape ({n_trials},); "
            f"got shape {groups.shape}.")
    missing = _missing(groups)
    if missing.any():
        raise ValueError(
            f"groups has no subject or session for {int(missing.sum())} of {n_trials} trials "
            f"(first: trial {int(np.argmax(missing))}); give every trial one (for Epochs, fill "
            "metadata['subject']) or pass groups to fit.")
    return groups


def _missing(groups):
    """Which labels are missing (None, NaN, pandas.NA)."""
    if groups.dtype.kind == "f":
        return np.isnan(groups)
    if groups.dtype.kind != "O":
        return np.zeros(len(groups), dtype=bool)

    def missing(value):
        try:
            return value is None or bool(value != value)
        except TypeError:  # pandas.NA has no truth value
            return True

    return np.array([missing(value) for value in groups], dtype=bool)


def euclidean_alignment(data, groups=None):
    """Whiten each group's trials by the inverse square root of its mean spatial covariance.

    After alignment the trials of every group have an identity mean covariance (up to one
    scale, the mean variance before alignment, kept so that amplitudes stay in their unit), which
    removes much of the between-subject shift that a model trained on other subjects meets
    (He & Wu 2020, doi:10.1109/TBME.2019.2913914). It uses no labels. The covariance is that of
    the trials handed in together, so a trial's output depends on the trials of its group.

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_channels, n_times)
    groups : array-like of shape (n_trials,), optional
        Subject or session of each trial; None aligns all trials as one group.

    Returns
    -------
    ndarray, shape (n_trials, n_channels, n_times)
        float64.
    """
    data = np.asarray(data, dtype=np.float64)
    groups = check_groups(groups, len(data))
    labels = np.zeros(len(data), dtype=int) if groups is None else groups
    aligned = np.empty_like(data)
    for label in np.unique(labels):
        members = labels == label
        trials = data[members]
        whitener = euclidean_whitener(trials)
        # A flat group has nothing to whiten; flat data is reported later.
        aligned[members] = trials if whitener is None else np.matmul(whitener, trials)
    return aligned


def euclidean_whitener(data):
    """The inverse square root of the trials' mean spatial covariance, times their mean variance.

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_channels, n_times), float64

    Returns
    -------
    ndarray of shape (n_channels, n_channels), or None when every channel is flat.
    """
    centred = data - data.mean(axis=-1, keepdims=True)
    mean_cov = np.einsum("nct,ndt->cd", centred, centred) / (centred.shape[-1] * len(data))
    eigenvalues, eigenvectors = np.linalg.eigh(mean_cov)
    top = eigenvalues.max()
    if not top > 0:
        return None
    eigenvalues = np.maximum(eigenvalues, _EIGENVALUE_FLOOR * top)
    scale = np.sqrt(eigenvalues.mean())
    return (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T * scale
