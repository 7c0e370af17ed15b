"""Readers for recordings that MNE does not read itself: Muse headband CSV files.

The muse-lsl CSV format (as in the NeuroTechX eeg-notebooks data) has one header line and
one row per sample: ``timestamps`` (LSL seconds), ``TP9``, ``AF7``, ``AF8``, ``TP10``
(microvolts), ``Right AUX`` (unused auxiliary input) and ``Marker0`` or ``Marker``
(stimulus code, 0 = none).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from .montage import template_montage

MUSE_EEG_CHANNELS = ("TP9", "AF7", "AF8", "TP10")
MUSE_SFREQ = 256.0
_TIMESTAMP_COLUMN = "timestamps"
_MARKER_COLUMNS = ("Marker0", "Marker")
_SFREQ_TOLERANCE = 0.02


def _read_header(path):
    with open(path, newline="") as stream:
        header = next(csv.reader(stream), None)
    return [] if header is None else [column.strip() for column in header]


def _check_columns(path, header):
    required = (_TIMESTAMP_COLUMN, *MUSE_EEG_CHANNELS)
    missing = [column for column in required if column not in header]
    if missing:
        raise ValueError(
            f"{path} is not a Muse CSV file: its header {header} lacks the column(s) {missing}. "
            f"A Muse file has the columns {list(required)} (plus 'Right AUX' and 'Marker0' or "
            "'Marker'); read other CSV layouts with numpy and wrap them in mne.io.RawArray.")


def _sampling_rate(path, timestamps):
    """Nominal 256 Hz when the timestamps agree within 2 %, else the measured rate (warned).

    The rate is measured over the whole recording: muse-lsl writes timestamps rounded to
    the millisecond, so single intervals of 1/256 s read 3 or 4 ms and their median 4 ms.
    """
    span = timestamps[-1] - timestamps[0] if timestamps.size else 0.0
    if timestamps.size < 2 or not span > 0:
        raise ValueError(
            f"{path} holds {timestamps.size} sample(s) spanning {span:g} s; a Muse recording needs "
            "at least two samples with increasing timestamps.")
    measured = (timestamps.size - 1) / span
    if abs(measured - MUSE_SFREQ) <= _SFREQ_TOLERANCE * MUSE_SFREQ:
        return MUSE_SFREQ
    warnings.warn(
        f"{path}: the timestamps give {measured:.2f} Hz, not the Muse's nominal {MUSE_SFREQ:g} Hz; "
        "using the measured rate. Check the recording if that is unexpected.", UserWarning,
        stacklevel=3)
    return float(measured)


def read_muse_csv(path):
    """Read a Muse headband CSV recording.

    Parameters
    ----------
    path : str or Path
        A muse-lsl CSV file.

    Returns
    -------
    raw : mne.io.RawArray
        The four EEG channels TP9, AF7, AF8, TP10 in volts, type ``eeg``, with template
        montage positions; sampling rate 256 Hz (or the one the timestamps give, if more
        than 2 % off). Each nonzero stimulus code becomes a zero-duration annotation whose
        description is the code (``"1"``, ``"2"``). ``Right AUX`` is dropped.

    Raises
    ------
    ValueError
        If the file lacks the columns of the Muse format.
    """
    import mne

    path = Path(path)
    header = _read_header(path)
    _check_columns(path, header)
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if table.shape[1] != len(header):
        raise ValueError(
            f"{path}: rows have {table.shape[1]} values but the header names {len(header)} "
            "columns; the file is truncated or not a Muse CSV recording.")
    column = {name: index for index, name in enumerate(header)}
    sfreq = _sampling_rate(path, table[:, column[_TIMESTAMP_COLUMN]])
    data = table[:, [column[name] for name in MUSE_EEG_CHANNELS]].T * 1e-6
    info = mne.create_info(list(MUSE_EEG_CHANNELS), sfreq, ch_types="eeg")
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_montage(template_montage(), verbose=False)
    marker = next((name for name in _MARKER_COLUMNS if name in column), None)
    if marker is not None:
        raw.set_annotations(_marker_annotations(table[:, column[marker]], sfreq))
    return raw


def _marker_annotations(codes, sfreq):
    """Zero-duration annotations at the samples whose stimulus code is nonzero."""
    import mne

    samples = np.flatnonzero(codes)
    descriptions = [f"{code:g}" for code in codes[samples]]
    return mne.Annotations(onset=samples / sfreq, duration=np.zeros(samples.size),
                           description=descriptions)


def find_muse_files(root):
    """All CSV files below a folder, sorted.

    Parameters
    ----------
    root : str or Path
        Folder searched recursively.

    Returns
    -------
    paths : list of Path
        Files whose names end in ``.csv`` (``.csv.csv`` included), sorted.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder; pass the folder that holds the Muse CSV files.")
    return sorted(path for path in root.rglob("*.csv") if path.is_file())
