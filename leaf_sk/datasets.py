"""Recordings for pretraining: MOABB datasets by name, and EEG files of any MNE format or Muse CSV.

Besides the recordings, the loaders describe what they loaded (subjects, runs, files, runs
skipped), which ``leaf-sk pretrain`` prints and stores in the checkpoint's provenance.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
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
    """The recordings of :func:`load_moabb` without the description: a list of ``mne.io.Raw``."""
    return load_moabb(name, subjects)[0]


def load_moabb(name, subjects):
    """Continuous recordings of a MOABB dataset and a description of what was loaded.

    Parameters
    ----------
    name : str
        A class name in ``moabb.datasets`` (e.g. ``"Kalunga2016"``, ``"PhysionetMI"``).
    subjects : list of int
        Subjects to load; always explicit, so that nothing unexpected is downloaded.

    Returns
    -------
    raws : list of mne.io.Raw
        One per run, EEG channels only, loaded into memory.
    description : dict
        JSON-able: ``source`` ("moabb"), ``name``, ``subjects``, ``recordings`` (per run:
        ``subject``, ``session``, ``run``, ``file`` relative to its MNE data folder when it
        lies in one, ``seconds``, ``sfreq``) and ``skipped_runs`` (runs of the dataset that
        this loader does not read, with why; empty for most datasets).

    Raises
    ------
    FileNotFoundError
        When a subject is not on disk and cannot be downloaded (e.g. offline). The message
        names the dataset, the subject and the folder looked in; the empty folders MOABB
        created for the download are removed.

    Notes
    -----
    ``PhysionetMI`` is loaded with ``imagined=True`` and its hands/feet runs (6, 10, 14)
    disabled: the left/right imagery runs are what every subject has.
    """
    try:
        import moabb.datasets as moabb_datasets
    except ImportError as exc:
        raise ImportError("Loading MOABB datasets needs MOABB: pip install 'leaf-sk[moabb]'.") from exc
    cls = getattr(moabb_datasets, name, None)
    if cls is None:
        raise ValueError(f"moabb.datasets has no dataset {name!r}; use a class name such as "
                         "'Kalunga2016' or 'PhysionetMI'.")
    dataset, skipped_runs = moabb_dataset(cls)
    unknown = sorted(set(subjects) - set(dataset.subject_list))
    if unknown:
        raise ValueError(f"{name} has no subjects {unknown}; it has {dataset.subject_list[:5]}...")
    roots = _data_roots()
    before = _directories(roots)
    raws, recordings = [], []
    for subject in subjects:
        data = _get_subject_data(dataset, name, subject, roots, before)
        for session, runs in data.items():
            for index, (run, raw) in enumerate(runs.items()):
                raws.append(raw.copy().pick("eeg").load_data())
                recording = {"subject": int(subject), "session": str(session), "run": str(run),
                             "file": _relative_file(raw, roots),
                             "seconds": raw.n_times / raw.info["sfreq"],
                             "sfreq": float(raw.info["sfreq"])}
                if name == "PhysionetMI":  # MOABB numbers the runs 0, 1, 2; PhysioNet 4, 8, 12
                    recording["physionet_run"] = (dataset.hand_runs + dataset.feet_runs)[index]
                recordings.append(recording)
                logger.info("loaded %s subject %s %s %s", name, subject, session, run)
    description = {"source": "moabb", "name": name, "subjects": [int(s) for s in subjects],
                   "recordings": recordings, "skipped_runs": skipped_runs}
    return raws, description


def moabb_dataset(cls):
    """An instance of a MOABB dataset class as leaf-sk reads it, and the runs it leaves out.

    ``PhysionetMI`` is read with ``imagined=True`` and without its hands/feet runs (not every
    copy of a subject has them); every other class with its defaults.

    Returns
    -------
    dataset : moabb.datasets.base.BaseDataset
    skipped_runs : list of dict
        Groups of runs not read (``runs``, ``why``); empty for most datasets.
    """
    if cls.__name__ != "PhysionetMI":
        return cls(), []
    dataset = cls(imagined=True)
    skipped_runs = _physionet_skipped_runs(dataset)
    dataset.feet_runs = []
    return dataset, skipped_runs


def _physionet_skipped_runs(dataset):
    """The runs of PhysionetMI that this loader does not read, in groups with their reason."""
    feet = sorted(dataset.feet_runs)
    loaded = set(dataset.hand_runs)
    others = sorted(set(range(1, 15)) - loaded - set(feet))
    groups = []
    if feet:
        groups.append({"runs": feet, "why": "imagined both fists / both feet; this loader "
                       "sets feet_runs = [], as not every copy of a subject has them"})
    if others:
        groups.append({"runs": others, "why": "baselines and executed movements; not among "
                       "MOABB's imagined=True runs"})
    return groups


def _data_roots():
    """The folders MNE and MOABB keep datasets in, each with the setting that names it.

    ``MNE_DATA`` (default ``~/mne_data``) first, then any ``MNE_DATASETS_*_PATH`` of the
    environment or the MNE config; ``{resolved folder: setting name}``.
    """
    import mne

    named = [("MNE_DATA", mne.get_config("MNE_DATA") or Path.home() / "mne_data")]
    config = {**(mne.get_config() or {}), **os.environ}
    named += [(key, value) for key, value in sorted(config.items())
              if key.startswith("MNE_DATASETS_") and key.endswith("_PATH") and value]
    roots = {}
    for key, value in named:
        roots.setdefault(Path(value).expanduser().resolve(), key)
    return roots


def _relative_file(raw, roots):
    """The recording's file, relative to the data folder it lies in (else its name)."""
    filenames = [f for f in (getattr(raw, "filenames", None) or ()) if f]
    if not filenames:
        return None
    path = Path(filenames[0]).resolve()
    root = _root_of(path, roots)
    return path.name if root is None else path.relative_to(root).as_posix()


def _root_of(path, roots):
    """The data root ``path`` lies in (the deepest, if nested), or None."""
    path = Path(path).resolve()
    inside = [root for root in roots if root == path or root in path.parents]
    return max(inside, key=lambda root: len(root.parts), default=None)


def _directories(roots):
    """Every existing folder at or under the roots, and the roots' existing ancestors."""
    found = set()
    for root in roots:
        found.update(p for p in [root, *root.parents] if p.is_dir())
        if root.is_dir():
            for folder, _, _ in os.walk(root):
                found.add(Path(folder))
    return found


def _remove_new_empty_folders(roots, before):
    """Remove the folders below or at the roots that did not exist before and are empty."""
    removed = []
    for root in roots:
        candidates = [root, *root.parents]
        if root.is_dir():
            candidates += [Path(folder) for folder, _, _ in os.walk(root)]
        # deepest first, so that a folder emptied by removing its child goes too
        for folder in sorted(set(candidates), key=lambda p: len(p.parts), reverse=True):
            if folder in before or not folder.is_dir():
                continue
            try:
                folder.rmdir()  # fails (and is left) unless empty
                removed.append(folder)
            except OSError:
                pass
    return removed


def _is_download_error(exc):
    """Whether ``exc`` (or an exception it came from) is a network or HTTP failure."""
    import socket
    import urllib.error

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        module = type(exc).__module__.split(".")[0]
        if module in {"requests", "urllib3", "http", "ssl", "socket", "pooch"} or isinstance(
                exc, (ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _innermost_reason(exc):
    """The first line of the deepest exception of the chain, shortened."""
    seen = set()
    while id(exc) not in seen and (exc.__cause__ or exc.__context__) is not None:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _DownloadLog(logging.Handler):
    """Collects pooch's "Downloading data from URL to file PATH" records instead of printing."""

    def __init__(self):
        super().__init__()
        self.targets = []

    def emit(self, record):
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 3 and "to file" in str(record.msg):
            self.targets.append((str(args[1]), Path(str(args[2]))))


def _get_subject_data(dataset, name, subject, roots, before):
    """``dataset.get_data([subject])[subject]``; offline and missing: a clear FileNotFoundError.

    On any failure, the folders under the data roots that are not in ``before`` (the folders
    that existed when loading began) and are empty are removed.
    """
    try:
        import pooch

        pooch_logger = pooch.get_logger()
    except ImportError:  # pragma: no cover - MOABB depends on pooch
        pooch_logger = None
    log = _DownloadLog()
    saved = []
    if pooch_logger is not None:
        saved = pooch_logger.handlers[:]
        for handler in saved:
            pooch_logger.removeHandler(handler)
        pooch_logger.addHandler(log)
    try:
        with warnings.catch_warnings():
            # With MOABB's default download provider ("auto"), a subject NEMAR cannot serve is
            # announced and then fetched from the dataset's own host; a failure of both ends in
            # the one error below, so the announcement is noise.
            warnings.filterwarnings("ignore", message=r"Could not fetch .* from NEMAR",
                                    category=RuntimeWarning)
            return dataset.get_data([subject])[subject]
    except Exception as exc:
        removed = _remove_new_empty_folders(roots, before)
        if not _is_download_error(exc):
            raise
        missing = log.targets[-1][1] if log.targets else max(
            removed, key=lambda p: len(p.parts), default=None)
        root = _root_of(missing, roots) if missing is not None else None
        root = root if root is not None else next(iter(roots))
        setting = roots[root]
        where = (f"its file {missing} is missing" if log.targets else
                 f"its files are missing from {missing if missing is not None else root}")
        raise FileNotFoundError(
            f"{name} subject {subject} is not on this machine: {where} ({setting}={root}), "
            f"and downloading it failed ({_innermost_reason(exc)}). Run this again with internet "
            f"access to download it, or set {setting} to a folder that holds {name}'s files."
        ) from exc
    finally:
        if pooch_logger is not None:
            pooch_logger.removeHandler(log)
            for handler in saved:
                pooch_logger.addHandler(handler)
        for url, path in log.targets:
            if path.is_file():
                logger.info("downloaded %s to %s", url, path)


#: File suffixes taken from a folder passed to :func:`load_files` (Muse CSV, and formats
#: MNE reads whose name says "EEG recording").
EEG_SUFFIXES = (".csv", ".edf", ".bdf", ".gdf", ".vhdr", ".fif", ".fif.gz", ".set", ".cnt",
                ".nxe", ".nedf")
# MNE's file-name endings of FIF files that are not raw recordings (epochs, evoked, events,
# covariances, solutions, ICA, ...), skipped when a folder is scanned.
_NOT_RAW_FIF = re.compile(
    r"[-_](epo|ave|eve|cov|fwd|inv|trans|ica|proj|sol|annot|bem|src|morph|dip|tfr)"
    r"\.fif(\.gz)?$", re.IGNORECASE)


def _eeg_suffix(path):
    name = path.name.lower()
    return next((s for s in EEG_SUFFIXES if name.endswith(s)), None)


def find_eeg_files(paths):
    """Files to read: each path as given, a folder replaced by the EEG files in it.

    Parameters
    ----------
    paths : list of str or Path
        Files, or folders: a folder is searched with its sub-folders for files whose name
        ends in one of :data:`EEG_SUFFIXES` (FIF files of epochs, events, ... excluded; hidden
        files and folders skipped), in sorted order.

    Returns
    -------
    files : list of Path
    folders : list of dict
        Per folder given: ``folder`` (as given), ``n_files`` taken and ``n_ignored`` (other
        files in it).

    Raises
    ------
    FileNotFoundError
        When a path does not exist, or a folder holds no EEG file.
    """
    files, folders = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            if not path.is_file():
                raise FileNotFoundError(f"EEG file {path} does not exist.")
            files.append(path)
            continue
        found, ignored = [], 0
        for folder, subfolders, names in os.walk(path):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in names:
                candidate = Path(folder) / name
                if (name.startswith(".") or _eeg_suffix(candidate) is None
                        or _NOT_RAW_FIF.search(name)):
                    ignored += 1
                else:
                    found.append(candidate)
        if not found:
            raise FileNotFoundError(
                f"The folder {path} holds no EEG file (looked for {', '.join(EEG_SUFFIXES)}, "
                f"also in its sub-folders; {ignored} other file(s) there). Pass a folder of "
                f"recordings or the files themselves, e.g. --files {path / '*.edf'}.")
        found.sort()
        files += found
        folders.append({"folder": str(path), "n_files": len(found), "n_ignored": ignored})
    return files, folders


def load_files(paths):
    """EEG files to ``mne.io.Raw``: Muse CSV (by the ``.csv`` suffix) or any format MNE reads.

    Parameters
    ----------
    paths : list of str or Path
        Files, or folders of them (see :func:`find_eeg_files`).

    Returns
    -------
    list of mne.io.Raw
        EEG channels only, one per file.
    """
    import mne

    from .io import read_muse_csv

    raws = []
    for path in find_eeg_files(paths)[0]:
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


def applied_band(sfreq, l_freq, h_freq):
    """The band edges :func:`band_pass` applies to a recording sampled at ``sfreq``.

    Parameters
    ----------
    sfreq : float
        Sampling rate, Hz.
    l_freq, h_freq : float or None
        Requested high-pass and low-pass edges, Hz.

    Returns
    -------
    tuple of (float or None, float or None)
        ``(l_freq, h_freq)``, with ``h_freq`` None when it is at or above Nyquist.
    """
    high = h_freq if h_freq is not None and h_freq < sfreq / 2 else None
    return l_freq, high


def band_pass(raws, l_freq, h_freq):
    """Filter recordings in place (MNE FIR), skipping a band edge at or above Nyquist."""
    for raw in raws:
        low, high = applied_band(raw.info["sfreq"], l_freq, h_freq)
        if low is not None or high is not None:
            raw.filter(low, high, verbose="error")
    return raws


def describe_band(l_freq, h_freq):
    """``"band-pass 1-40 Hz"``, ``"high-pass 1 Hz"``, ``"low-pass 40 Hz"`` or ``"none"``."""
    if l_freq is not None and h_freq is not None:
        return f"band-pass {l_freq:g}-{h_freq:g} Hz"
    if l_freq is not None:
        return f"high-pass {l_freq:g} Hz"
    if h_freq is not None:
        return f"low-pass {h_freq:g} Hz"
    return "none"


def count_segments(raws, segment_seconds):
    """Segments of ``segment_seconds`` that pretraining cuts from the recordings.

    Parameters
    ----------
    raws : list of mne.io.Raw
    segment_seconds : float

    Returns
    -------
    int
        Non-overlapping fixed-length segments, as ``mne.make_fixed_length_epochs`` cuts them
        (before any rejection by ``BAD`` annotations).
    """
    import mne

    total = 0
    for raw in raws:
        if raw.n_times / raw.info["sfreq"] >= segment_seconds:
            total += len(mne.make_fixed_length_events(raw, duration=segment_seconds))
    return total
