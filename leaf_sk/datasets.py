"""Recordings for pretraining: MOABB datasets by name, and EEG files of any MNE format or Muse CSV."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger("leaf_sk")


def parse_subjects(text):
    """``"1-3,5,7-8"`` to ``[1, 2, 3, 5, 7, 8]``.

    Raises
    ------
    ValueError
        For anything but comma-separated integers and ranges.
    """
    subjects = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                subjects.extend(range(lo, hi + 1))
            elif part:
                subjects.append(int(part))
        except ValueError as exc:
            raise ValueError(f"Cannot read subjects {text!r}; write them like '1-3,5,7-8'.") from exc
    if not subjects:
        raise ValueError(f"No subjects in {text!r}; write them like '1-3,5,7-8'.")
    return subjects


def load_moabb_raws(name, subjects):
    """Continuous recordings of a MOABB dataset, one ``mne.io.Raw`` per run.

    Parameters
    ----------
    name : str
        A class name in ``moabb.datasets`` (e.g. ``"Kalunga2016"``, ``"PhysionetMI"``).
    subjects : list of int
        Subjects to load; always explicit, so that nothing unexpected is downloaded.

    Returns
    -------
    list of mne.io.Raw
        EEG channels only, loaded into memory.

    Notes
    -----
    ``PhysionetMI`` is loaded with ``imagined=True`` and its hands/feet runs disabled: the
    left/right imagery runs are what every subject has.
    """
    try:
        import moabb.datasets as moabb_datasets
    except ImportError as exc:
        raise ImportError("Loading MOABB datasets needs MOABB: pip install 'leaf-sk[moabb]'.") from exc
    cls = getattr(moabb_datasets, name, None)
    if cls is None:
        raise ValueError(f"moabb.datasets has no dataset {name!r}; use a class name such as "
                         "'Kalunga2016' or 'PhysionetMI'.")
    dataset = cls(imagined=True) if name == "PhysionetMI" else cls()
    if name == "PhysionetMI":
        dataset.feet_runs = []
    unknown = sorted(set(subjects) - set(dataset.subject_list))
    if unknown:
        raise ValueError(f"{name} has no subjects {unknown}; it has {dataset.subject_list[:5]}...")
    raws = []
    for subject, sessions in dataset.get_data(subjects).items():
        for session, runs in sessions.items():
            for run, raw in runs.items():
                raws.append(raw.copy().pick("eeg").load_data())
                logger.info("loaded %s subject %s %s %s", name, subject, session, run)
    return raws


def load_files(paths):
    """EEG files to ``mne.io.Raw``: Muse CSV (by the ``.csv`` suffix) or any format MNE reads."""
    import mne

    from .io import read_muse_csv

    raws = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"EEG file {path} does not exist.")
        if path.suffix.lower() == ".csv":
            raws.append(read_muse_csv(path))
            continue
        try:
            raw = mne.io.read_raw(path, preload=True, verbose="error")
        except Exception as exc:  # MNE raises anything from ValueError to AssertionError
            raise ValueError(
                f"Cannot read {path} as EEG ({type(exc).__name__}: {exc}); pass a Muse CSV file "
                "(.csv) or a recording MNE reads (.fif, .edf, .bdf, .set, .vhdr, ...).") from exc
        if "eeg" not in raw.get_channel_types():
            raise ValueError(
                f"{path} holds no EEG channel (channel types: "
                f"{sorted(set(raw.get_channel_types()))}); set the types of the EEG channels "
                "(raw.set_channel_types) and save the file again.")
        raws.append(raw.pick("eeg"))
    return raws


def band_pass(raws, l_freq, h_freq):
    """Filter recordings in place (MNE FIR), skipping a band edge at or above Nyquist."""
    for raw in raws:
        nyquist = raw.info["sfreq"] / 2
        high = h_freq if h_freq is not None and h_freq < nyquist else None
        if l_freq is not None or high is not None:
            raw.filter(l_freq, high, verbose="error")
    return raws
