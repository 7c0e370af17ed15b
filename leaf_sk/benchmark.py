"""LEAF beside the baselines practitioners run, in the same MOABB evaluation objects.

:func:`run_benchmark` is what ``leaf-sk benchmark`` calls: it evaluates the LEAF pipelines
(frozen ``LeafEncoder`` features with a logistic regression, ``LeafInstructionClassifier``
fine-tuned, and its direct, zero-shot inference) and the usual baselines of the dataset's
paradigm (among them ShallowFBCSPNet and EEGNet, trained from scratch) within each test
subject's sessions and across subjects, with named training and test subjects, and returns one
row per evaluation, pipeline, subject and session.
:func:`summarize` turns those rows into the comparison table, :func:`write_report` into CSV,
markdown and PNG files.

Every pipeline is a list of steps in MOABB's pipeline-file format (:func:`pipeline_configs`),
so the same pipelines can be written as YAML files (:func:`write_pipeline_files`) that
``moabb.benchmark(pipelines=...)`` runs beside a user's own.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import json
import logging
import math
import re
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils.metaestimators import available_if

from ._atomic import atomic_path, write_text_atomic
from ._input import _listed
from .datasets import _data_roots, _directories, _get_subject_data, moabb_dataset, parse_subjects

logger = logging.getLogger("leaf_sk")

#: ``evaluation`` argument to the label in the results.
EVALUATIONS = {"within": "within-session", "cross": "cross-subject"}

#: The training and test subjects of leaf-sk's own evaluation (``../shared/docs``), used when
#: no subjects are given for these datasets. Any other dataset needs explicit subjects.
DEFAULT_SPLITS = {
    "Kalunga2016": {"train": [1, 2, 3, 4, 5, 6, 7, 8], "test": [9, 10, 11]},
    "PhysionetMI": {"train": [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
                    "test": [15, 16, 17, 18, 42]},
}

#: Subject numbers of a dataset that hold the same recording: a split keeps them on one side.
SAME_RECORDING = {"Kalunga2016": [(3, 7)]}  # subject03_run1 is subject07_run1

#: The eye-movement control's channels (frontal, where eye movements dominate).
FRONTAL_CHANNELS = ("Fp1", "Fp2", "AF7", "AF8", "F7", "F8", "FT7", "FT8")

#: What a trial is about, per paradigm family: the instruction of the LEAF classifiers.
INSTRUCTIONS = {"imagery": "which imagined movement is this",
                "ssvep": "which flicker frequency was attended",
                "p300": "is this a target or a non-target stimulus"}

#: Pipeline roles, in the order the table lists them.
ROLES = ("leaf", "baseline", "control", "user")

_LEAF_CITATION = "Jiang et al. (2025), LEAF, arXiv:2509.24302"


# --- transformers the baseline pipelines need ------------------------------------------------


def _is_epochs(X):
    from mne import BaseEpochs

    return isinstance(X, BaseEpochs)


class EpochsToArray(TransformerMixin, BaseEstimator):
    """``mne.Epochs`` to an array in microvolts, as MOABB gives arrays; arrays pass unchanged.

    Lets array pipelines (pyRiemann, CSP) run in an evaluation that hands every pipeline
    ``mne.Epochs`` (as MOABB does when a pipeline such as ``SSVEP_CCA`` needs them).

    Parameters
    ----------
    units : str
        Unit of the returned EEG values, as ``mne.Epochs.get_data`` takes it.
    """

    def __init__(self, units="uV"):
        self.units = units

    def fit(self, X, y=None):
        """Nothing to learn; returns self."""
        return self

    def transform(self, X):
        """Epochs to ``(n_trials, n_channels, n_times)`` float64 in ``units``; arrays as given."""
        if _is_epochs(X):
            return X.get_data(units=self.units)
        return np.asarray(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.three_d_array = True
        return tags


def _names_and_rate(estimator, X):
    """Channel names and sampling rate: from Epochs, else the estimator's parameters."""
    if _is_epochs(X):
        return list(X.ch_names), float(X.info["sfreq"])
    if estimator.ch_names is None or estimator.sfreq is None:
        raise ValueError(f"{type(estimator).__name__} got an array without ch_names and sfreq; "
                         "pass both, or pass mne.Epochs.")
    return list(estimator.ch_names), float(estimator.sfreq)


class WindowMeans(TransformerMixin, BaseEstimator):
    """Mean of chosen channels over consecutive windows: the eye-movement control's features.

    Parameters
    ----------
    channels : list of str
        Channels to keep (matched exactly, then case-insensitively); those absent are skipped.
    window_seconds : float
        Window length, s. The trial is cut into whole windows from its start.
    ch_names : list of str or None
        Channel names of array input (read from ``mne.Epochs`` otherwise).
    sfreq : float or None
        Sampling rate of array input, Hz.

    Attributes
    ----------
    picks_ : list of int
        Rows of ``X`` used.
    step_ : int
        Samples per window.
    """

    def __init__(self, channels=FRONTAL_CHANNELS, window_seconds=0.5, ch_names=None, sfreq=None):
        self.channels = channels
        self.window_seconds = window_seconds
        self.ch_names = ch_names
        self.sfreq = sfreq

    def fit(self, X, y=None):
        """Find the channels and the window length."""
        names, sfreq = _names_and_rate(self, X)
        lower = {name.lower(): i for i, name in enumerate(names)}
        self.picks_ = [names.index(c) if c in names else lower[c.lower()]
                       for c in self.channels if c in names or c.lower() in lower]
        if not self.picks_:
            raise ValueError(f"None of the channels {list(self.channels)} is in the data "
                             f"{_listed(names)}; pass channels that the recordings have.")
        self.step_ = max(1, int(round(sfreq * self.window_seconds)))
        return self

    def transform(self, X):
        """``(n_trials, n_channels, n_times)`` to ``(n_trials, n_picked * n_windows)``."""
        data = EpochsToArray().transform(X)[:, self.picks_]
        n_windows = data.shape[2] // self.step_
        if n_windows == 0:
            raise ValueError(f"Trials of {data.shape[2]} samples are shorter than one window "
                             f"of {self.step_}; lower window_seconds.")
        data = data[:, :, : n_windows * self.step_]
        return data.reshape(len(data), len(self.picks_), n_windows, self.step_).mean(-1).reshape(
            len(data), -1)


class FilterBank(TransformerMixin, BaseEstimator):
    """Band-pass each trial around each frequency and stack the bands as channels.

    The filter bank of MOABB's ``FilterBankSSVEP`` paradigm (one band of ``f ± half_width``
    per stimulus frequency), applied to the trials of the evaluation's own input, so that
    filter-bank pipelines run on the same folds and data as the others. Zero-phase
    Butterworth filters (``scipy.signal.sosfiltfilt``).

    Parameters
    ----------
    frequencies : list of float
        Band centres, Hz.
    half_width : float
        Half the band width, Hz.
    order : int
        Butterworth order of each band-pass.
    sfreq : float or None
        Sampling rate of array input, Hz (read from ``mne.Epochs`` otherwise).
    """

    def __init__(self, frequencies=(13.0, 17.0, 21.0), half_width=0.5, order=4, sfreq=None):
        self.frequencies = frequencies
        self.half_width = half_width
        self.order = order
        self.sfreq = sfreq

    def fit(self, X, y=None):
        """Design the band-pass filters."""
        from scipy.signal import butter

        sfreq = float(X.info["sfreq"]) if _is_epochs(X) else self.sfreq
        if sfreq is None:
            raise ValueError("FilterBank got an array without sfreq; pass sfreq, or mne.Epochs.")
        self.sos_ = []
        for frequency in self.frequencies:
            low, high = frequency - self.half_width, frequency + self.half_width
            if low <= 0 or high >= sfreq / 2:
                raise ValueError(f"The band {low:g}-{high:g} Hz does not fit below the Nyquist "
                                 f"frequency ({sfreq / 2:g} Hz); drop {frequency:g} Hz.")
            self.sos_.append(butter(self.order, [low, high], btype="bandpass", fs=sfreq,
                                    output="sos"))
        return self

    def transform(self, X):
        """``(n, n_channels, n_times)`` to ``(n, n_channels * n_bands, n_times)``, band-major."""
        from scipy.signal import sosfiltfilt

        data = EpochsToArray().transform(X)
        return np.concatenate([sosfiltfilt(sos, data, axis=-1) for sos in self.sos_], axis=1)


class HeldOutSubjects(BaseCrossValidator):
    """One fold per test subject: train on every training subject, test on that subject.

    Parameters
    ----------
    subjects : array-like of int
        The subject of every trial (MOABB resolves a callable of the metadata).
    train_subjects, test_subjects : list of int
        Disjoint; test subjects absent from ``subjects`` get no fold.
    """

    def __init__(self, subjects, train_subjects, test_subjects):
        self.subjects = subjects
        self.train_subjects = train_subjects
        self.test_subjects = test_subjects

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of test subjects."""
        return len(self.test_subjects)

    def split(self, X, y=None, groups=None):
        """Yield ``(training indices, indices of one test subject)``."""
        overlap = sorted(set(self.train_subjects) & set(self.test_subjects))
        if overlap:
            raise ValueError(f"Subjects {overlap} are both training and test subjects.")
        subjects = np.asarray(self.subjects).astype(int)
        train = np.flatnonzero(np.isin(subjects, self.train_subjects))
        for subject in self.test_subjects:
            test = np.flatnonzero(subjects == subject)
            if len(test):
                yield train, test


#: Fitted pipelines of the running cross-subject evaluations, by run token and training set.
_FITS = {}


def _has(method):
    return lambda self: hasattr(self.estimator, method)


class SharedFit(BaseEstimator):
    """Fit ``estimator`` once per training set: folds that train on the same trials share it.

    In the cross-subject evaluation every fold trains on the same training subjects, so each
    fold's fresh clone would learn the same model; this wrapper learns it once per run (held
    in a registry under ``token``) and gives it to every fold.

    Parameters
    ----------
    estimator : estimator
    token : str
        Key of the run's registry entry; :func:`run_benchmark` clears it at the end.
    """

    def __init__(self, estimator, token):
        self.estimator = estimator
        self.token = token

    def fit(self, X, y=None):
        """Fit a clone of ``estimator``, or take the one fitted on the same ``X`` and ``y``."""
        import joblib
        from sklearn.base import clone

        data = X.get_data() if _is_epochs(X) else np.asarray(X)
        key = joblib.hash((data, None if y is None else np.asarray(y)))
        fits = _FITS.setdefault(self.token, {})
        if key not in fits:
            fits[key] = clone(self.estimator).fit(X, y)
        self.estimator_ = fits[key]
        return self

    @property
    def classes_(self):
        return self.estimator_.classes_

    def predict(self, X):
        return self.estimator_.predict(X)

    @available_if(_has("predict_proba"))
    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)

    @available_if(_has("decision_function"))
    def decision_function(self, X):
        return self.estimator_.decision_function(X)

    @available_if(_has("transform"))
    def transform(self, X):
        return self.estimator_.transform(X)

    def __sklearn_tags__(self):
        from sklearn.utils import get_tags

        return get_tags(self.estimator)


def _subject_column(metadata):
    """The subject of every trial, for :class:`HeldOutSubjects` inside MOABB."""
    return metadata["subject"].to_numpy()


# --- datasets, paradigms and pipelines -------------------------------------------------------


def get_dataset(dataset):
    """A MOABB dataset instance from its class name (or the instance itself).

    ``PhysionetMI`` is the imagined-movement version with its hands/feet runs disabled (the
    left/right imagery runs are what every copy of a subject has).

    Raises
    ------
    ValueError
        For a name that is not a MOABB dataset; the message suggests close names.
    """
    try:
        import moabb.datasets as moabb_datasets
        from moabb.datasets.base import BaseDataset
    except ImportError as exc:
        raise ImportError("leaf-sk benchmark needs MOABB: pip install 'leaf-sk[moabb]'.") from exc
    if isinstance(dataset, BaseDataset):
        return dataset
    names = sorted(n for n in dir(moabb_datasets) if isinstance(getattr(moabb_datasets, n), type)
                   and issubclass(getattr(moabb_datasets, n), BaseDataset)
                   and n not in {"BaseDataset", "FakeDataset", "FakeVirtualRealityDataset"})
    if dataset not in names:
        by_lower = {n.lower(): n for n in names}
        close = difflib.get_close_matches(str(dataset).lower(), list(by_lower), n=3, cutoff=0.6)
        hint = (f"did you mean {', '.join(by_lower[c] for c in close)}?" if close else
                "e.g. Kalunga2016 (SSVEP) or PhysionetMI (motor imagery)")
        raise ValueError(f"MOABB has no dataset {dataset!r}; {hint} Names are the classes of "
                         "moabb.datasets.")
    return moabb_dataset(getattr(moabb_datasets, dataset))[0]


def dataset_name(dataset):
    """The MOABB class name of a dataset instance (``"PhysionetMI"``, ``"Kalunga2016"``)."""
    return type(dataset).__name__


def _frequency_events(events):
    """Event names that are stimulus frequencies (``"13"``, ``"8.57"``), by frequency."""
    def as_float(name):
        try:
            return float(name)
        except ValueError:
            return None
    return sorted((e for e in events if as_float(e) is not None), key=float)


def choose_paradigm(dataset):
    """The MOABB paradigm that fits a dataset, and its family.

    - motor imagery with left and right hand: ``LeftRightImagery`` (8-32 Hz, ROC AUC);
      other motor imagery: ``MotorImagery`` with all its classes;
    - SSVEP: ``SSVEP`` with the stimulated classes only (for Kalunga2016 13, 17 and 21 Hz,
      without its resting class), so that CCA, which recognises frequencies, applies to
      every class;
    - P300: ``P300``.

    With more than two classes the score is accuracy, with balanced accuracy and Cohen's
    kappa beside it.

    Returns
    -------
    paradigm : moabb paradigm
    family : {"imagery", "ssvep", "p300"}
    """
    from moabb import paradigms
    from sklearn.metrics import cohen_kappa_score, make_scorer

    multi = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
             "kappa": make_scorer(cohen_kappa_score)}
    events = list(dataset.event_id)
    family = str(dataset.paradigm).lower()
    if family == "imagery":
        if {"left_hand", "right_hand"} <= set(events):
            return paradigms.LeftRightImagery(), family
        return paradigms.MotorImagery(n_classes=len(events), scorer=multi), family
    if family == "ssvep":
        stimulated = _frequency_events(events)
        if len(stimulated) < 2:
            raise ValueError(f"{dataset_name(dataset)} has fewer than two frequency events "
                             f"({events}); an SSVEP benchmark needs two or more.")
        scorer = multi if len(stimulated) > 2 else None
        return paradigms.SSVEP(events=stimulated, n_classes=len(stimulated),
                               scorer=scorer), family
    if family == "p300":
        return paradigms.P300(), family
    raise ValueError(f"{dataset_name(dataset)} is a {dataset.paradigm!r} dataset; leaf-sk "
                     "benchmark runs motor imagery, SSVEP and P300 datasets.")


def _class_events(paradigm, dataset):
    """The event names of the classes, in the order of MOABB's label encoding (sorted)."""
    return sorted(paradigm.used_events(dataset))


def label_text(event, family):
    """Words for a class, for the LEAF classifiers: ``"13"`` -> ``"13 Hz flicker"``,
    ``"left_hand"`` -> ``"Left hand"``, ``"rest"`` -> ``"Resting"``."""
    from .instructions import default_label_text

    if family == "ssvep" and _frequency_events([event]):
        return f"{float(event):g} Hz flicker"
    if "_" in event:
        return event.replace("_", " ").capitalize()
    text = default_label_text(event)
    return text if text != event else event.capitalize()


def _step(name, module, **parameters):
    step = {"name": name, "from": module}
    if parameters:
        step["parameters"] = parameters
    return step


def pipeline_configs(family, events, *, checkpoint="leaf-small-bci", fine_tune_epochs=5,
                     ch_names=None, sfreq=None, random_state=0):
    """Every pipeline ``leaf-sk benchmark`` knows for a paradigm family, in MOABB's file format.

    Parameters
    ----------
    family : {"imagery", "ssvep", "p300"}
    events : list of str
        Class event names in the order of MOABB's label encoding (sorted); they give the
        label texts and, for SSVEP, the stimulus frequencies.
    checkpoint : str or None
        LEAF checkpoint of the LEAF pipelines (None: random weights).
    fine_tune_epochs : int
        Training epochs of the fine-tuned ``LeafInstructionClassifier``.
    ch_names, sfreq : list of str, float or None
        Channel names and rate, written into the steps that need them for array input (for
        YAML files that ``moabb.benchmark`` feeds arrays); None for ``mne.Epochs`` input.
    random_state : int
        Seed of the LEAF pipelines and of the networks trained from scratch.

    Returns
    -------
    dict
        ``{name: {"role", "default", "citations", "steps"}}``; ``steps`` is the ``pipeline``
        list of a MOABB pipeline file (``name``, ``from``, ``parameters``). CCA also has
        ``moabb_name``, its name in pipeline files.
    """
    names = {} if ch_names is None else {"ch_names": list(ch_names), "sfreq": float(sfreq)}
    texts = {i: label_text(e, family) for i, e in enumerate(events)}
    instruction = INSTRUCTIONS[family]
    scaled_lr = [_step("StandardScaler", "sklearn.preprocessing"),
                 _step("LogisticRegression", "sklearn.linear_model", max_iter=1000)]

    def encoder(weights, pooling, alignment=None):
        params = {"checkpoint": weights, "pooling": pooling, **names}
        if alignment is not None:
            params["alignment"] = alignment
        if weights is None:
            params.update(size="small", random_state=random_state)
        return [_step("LeafEncoder", "leaf_sk", **params), *scaled_lr]

    def classifier(epochs, alignment=None):
        aligned = {} if alignment is None else {"alignment": alignment}
        return [_step("LeafInstructionClassifier", "leaf_sk", checkpoint=checkpoint,
                      instruction=instruction, instruction_level=2, label_texts=texts,
                      max_epochs=epochs, batch_size=32, random_state=random_state, **aligned,
                      **names)]

    leaf = [_LEAF_CITATION]
    configs = {
        "LEAF+LR": dict(role="leaf", default=True, citations=leaf,
                        steps=encoder(checkpoint, "logvar")),
        "LEAF-finetuned": dict(role="leaf", default=True, citations=leaf,
                               steps=classifier(fine_tune_epochs)),
        "LEAF-zeroshot": dict(role="leaf", default=True, citations=leaf, steps=classifier(0)),
        "LEAF-direct": dict(role="leaf", default=False, citations=leaf,
                            steps=classifier(0, "euclidean")),
        "LEAF-aligned+LR": dict(role="leaf", default=False, citations=leaf,
                                steps=encoder(checkpoint, "logvar", "euclidean")),
        "LEAF-meanstd+LR": dict(role="leaf", default=False, citations=leaf,
                                steps=encoder(checkpoint, "mean+std")),
        "LEAF-random+LR": dict(role="leaf", default=False, citations=leaf,
                               steps=encoder(None, "logvar")),
        "LEAF-random-meanstd+LR": dict(role="leaf", default=False, citations=leaf,
                                       steps=encoder(None, "mean+std")),
    }
    to_array = _step("EpochsToArray", "leaf_sk.benchmark")
    covariances = _step("Covariances", "pyriemann.estimation", estimator="oas")
    tangent_lr = [_step("TangentSpace", "pyriemann.tangentspace", metric="riemann"),
                  _step("LogisticRegression", "sklearn.linear_model", max_iter=1000)]
    barachant = "Barachant et al. (2012), doi:10.1109/TBME.2011.2172210"
    baselines = {}
    if family in {"imagery", "ssvep"}:
        baselines["TS+LR"] = ([barachant], [to_array, covariances, *tangent_lr])
        baselines["MDM"] = ([barachant], [to_array, covariances,
                                          _step("MDM", "pyriemann.classification",
                                                metric="riemann")])
    if family == "imagery":
        baselines["CSP+LDA"] = (["Koles et al. (1990), doi:10.1007/BF01129656"], [
            to_array, _step("CSP", "mne.decoding", n_components=8),
            _step("LinearDiscriminantAnalysis", "sklearn.discriminant_analysis")])
    if family == "ssvep":
        frequencies = [float(e) for e in _frequency_events(events)]
        filter_bank = {"frequencies": frequencies, "half_width": 0.5}
        if sfreq is not None:
            filter_bank["sfreq"] = float(sfreq)
        baselines["FB-TS+LR"] = (["Kalunga et al. (2016), doi:10.1016/j.neucom.2016.01.007"], [
            _step("FilterBank", "leaf_sk.benchmark", **filter_bank), covariances, *tangent_lr])
        if len(frequencies) == len(events):  # CCA cannot recognise a class without a frequency
            # MOABB label-encodes y (0, 1, ...); without this map SSVEP_CCA cannot tell the
            # frequencies. The event names are keys too, for moabb.benchmark's Epochs group.
            freq_map = {**{i: float(e) for i, e in enumerate(events)},
                        **{e: float(e) for e in events}}
            baselines["CCA"] = (["Lin et al. (2006), doi:10.1109/TBME.2006.886577"], [
                _step("SSVEP_CCA", "moabb.pipelines.classification", n_harmonics=3,
                      freq_map=freq_map)])
    if family in {"imagery", "ssvep"}:
        # Trained from scratch on the evaluation's training trials, at the data's own rate.
        rate = {} if sfreq is None else {"sfreq": float(sfreq)}
        baselines["ShallowFBCSPNet"] = (
            ["Schirrmeister et al. (2017), doi:10.1002/hbm.23730"],
            [_step("ShallowFBCSPNetClassifier", "leaf_sk.baselines", **rate,
                   random_state=random_state)])
        baselines["EEGNet"] = (
            ["Lawhern et al. (2018), doi:10.1088/1741-2552/aace8c"],
            [_step("EEGNetClassifier", "leaf_sk.baselines", **rate, random_state=random_state)])
    if family == "p300":
        baselines["Xdawn+TS+LR"] = ([barachant], [
            to_array, _step("XdawnCovariances", "pyriemann.estimation", nfilter=4,
                            estimator="oas", xdawn_estimator="scm"), *tangent_lr])
        baselines["ERPCov+MDM"] = ([barachant], [
            to_array, _step("ERPCovariances", "pyriemann.estimation", estimator="oas"),
            _step("MDM", "pyriemann.classification", metric="riemann")])
    for name, (citations, steps) in baselines.items():
        # The two networks train for minutes per fold: run by name or with "baselines"/"all".
        default = name not in {"ShallowFBCSPNet", "EEGNet"}
        configs[name] = dict(role="baseline", default=default, citations=citations, steps=steps)
    if "CCA" in configs:
        # moabb.benchmark hands mne.Epochs and event-name labels to the pipelines whose name
        # holds "SSVEP CCA", and arrays to the others: a user's array pipelines stay as they are.
        configs["CCA"]["moabb_name"] = "SSVEP CCA"
    if family == "imagery":
        control = {"channels": list(FRONTAL_CHANNELS), "window_seconds": 0.5, **names}
        configs["frontal-control"] = dict(
            role="control", default=True, citations=["../shared/docs/EVALUATION.md, rule 5"],
            steps=[_step("WindowMeans", "leaf_sk.benchmark", **control), *scaled_lr])
    return configs


def build_pipeline(steps):
    """A scikit-learn pipeline from MOABB pipeline-file steps (the steps are not changed)."""
    from sklearn.pipeline import make_pipeline

    components = []
    for step in steps:
        module = importlib.import_module(step["from"])
        components.append(getattr(module, step["name"])(**copy.deepcopy(step.get("parameters",
                                                                                  {}))))
    return make_pipeline(*components)


def select_pipelines(configs, pipelines=None):
    """Names of the pipelines to run, from names and the groups ``default``, ``all``,
    ``leaf`` and ``baselines`` (case-insensitive; comma-separated values are split).

    Raises
    ------
    ValueError
        For an empty list or an unknown name; the message lists the names there are.
    """
    if pipelines is None:
        return [name for name, config in configs.items() if config["default"]]
    if isinstance(pipelines, str):
        pipelines = [pipelines]
    wanted = [part.strip() for item in pipelines for part in str(item).split(",")]
    wanted = [w for w in wanted if w]
    known = ", ".join(configs)
    if not wanted:
        raise ValueError(f"The pipeline list is empty; name one or more of {known}, or a group "
                         "(default, all, leaf, baselines).")
    by_lower = {name.lower(): name for name in configs}
    groups = {"default": [n for n, c in configs.items() if c["default"]],
              "all": list(configs),
              "leaf": [n for n, c in configs.items() if c["role"] == "leaf"],
              "baselines": [n for n, c in configs.items() if c["role"] != "leaf"]}
    chosen = []
    for item in wanted:
        names = groups.get(item.lower()) or [by_lower.get(item.lower())]
        if names == [None]:
            close = difflib.get_close_matches(item.lower(), list(by_lower), n=2, cutoff=0.5)
            hint = f" (did you mean {', '.join(by_lower[c] for c in close)}?)" if close else ""
            raise ValueError(f"Unknown pipeline {item!r}{hint}; this paradigm's pipelines are "
                             f"{known}, or a group: default, all, leaf, baselines.")
        chosen += [n for n in names if n not in chosen]
    return chosen


def write_pipeline_files(folder, dataset, *, checkpoint="leaf-small-bci", fine_tune_epochs=5,
                         pipelines="all"):
    """Write the pipelines for a dataset as MOABB pipeline files (YAML), one per pipeline.

    The files carry the dataset's channel names and rate, since ``moabb.benchmark`` feeds
    arrays; load them with ``moabb.pipelines.utils.parse_pipelines_from_directory``.

    Parameters
    ----------
    folder : str or Path
    dataset : str or MOABB dataset
        Its channels and rate are read from its first subject (which must be on disk).
    checkpoint, fine_tune_epochs
        As in :func:`pipeline_configs`.
    pipelines : list of str or str
        Names or groups, as in :func:`select_pipelines`.

    Returns
    -------
    list of Path
    """
    import yaml

    dataset = get_dataset(dataset)
    paradigm, family = choose_paradigm(dataset)
    events = _class_events(paradigm, dataset)
    epochs, _, _ = paradigm.get_data(dataset, dataset.subject_list[:1], return_epochs=True)
    configs = pipeline_configs(family, events, checkpoint=checkpoint,
                               fine_tune_epochs=fine_tune_epochs, ch_names=epochs.ch_names,
                               sfreq=epochs.info["sfreq"])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in select_pipelines(configs, pipelines):
        config = configs[name]
        document = {"name": config.get("moabb_name", name),
                    "paradigms": [type(paradigm).__name__],
                    "citations": config["citations"], "pipeline": config["steps"]}
        path = folder / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".yml")
        write_text_atomic(path, yaml.safe_dump(document, sort_keys=False, width=100))
        written.append(path)
    return written


# --- the split and the checkpoint guard ------------------------------------------------------


def _ranges(numbers):
    """``[1, 2, 3, 5]`` to ``"1-3, 5"``."""
    numbers, parts, start = sorted(numbers), [], None
    for index, number in enumerate(numbers):
        start = number if start is None else start
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            parts.append(f"{start}" if start == number else f"{start}-{number}")
            start = None
    return ", ".join(parts)


def resolve_split(dataset, subjects=None, train_subjects=None, evaluation="both"):
    """Test and training subjects, checked against the dataset and against each other.

    Without ``subjects`` (``train_subjects``), the datasets of :data:`DEFAULT_SPLITS` take
    their test (training) subjects from there; other datasets need them given.

    Returns
    -------
    test : list of int
    train : list of int
        Empty when only the within-session evaluation runs.
    """
    name = dataset_name(dataset)
    kinds = evaluation_kinds(evaluation)
    split = DEFAULT_SPLITS.get(name)
    if subjects is None:
        if split is None:
            raise ValueError(f"Pass the test subjects of {name} (--subjects, e.g. 1-3): only "
                             f"{', '.join(DEFAULT_SPLITS)} have a default split.")
        subjects = split["test"]
    if "cross" in kinds and train_subjects is None:
        if split is None:
            raise ValueError(f"Pass the training subjects of {name} for the cross-subject "
                             "evaluation (--train-subjects, e.g. 4-9).")
        train_subjects = split["train"]
    test = sorted({int(s) for s in subjects})
    train = sorted({int(s) for s in train_subjects}) if "cross" in kinds else []
    if not test:
        raise ValueError("No test subjects given; pass one or more, e.g. --subjects 1-3.")
    if "cross" in kinds and not train:
        raise ValueError("No training subjects given; pass one or more, e.g. "
                         "--train-subjects 4-9.")
    unknown = sorted(set(test + train) - set(dataset.subject_list))
    if unknown:
        raise ValueError(f"{name} has no subject(s) {unknown}; its subjects are "
                         f"{_ranges(dataset.subject_list)}.")
    both = sorted(set(test) & set(train))
    if both:
        raise ValueError(f"Subject(s) {both} are both test and training subjects; a subject "
                         "that the cross-subject pipelines train on cannot be scored. Take them "
                         "out of --subjects or --train-subjects.")
    for a, b in SAME_RECORDING.get(name, []):
        for first, second in ((a, b), (b, a)):
            if first in test and second in train:
                raise ValueError(f"{name} subjects {a} and {b} share a recording; keep them on "
                                 f"one side of the split (subject {first} is a test subject, "
                                 f"{second} a training subject).")
    return test, train


def evaluation_kinds(evaluation):
    """``"within"``, ``"cross"`` or ``"both"`` to a list of ``"within"``/``"cross"``."""
    kinds = {"within": ["within"], "cross": ["cross"], "both": ["within", "cross"]}
    if evaluation not in kinds:
        raise ValueError(f"evaluation={evaluation!r}; use 'within', 'cross' or 'both'.")
    return kinds[evaluation]


_SUBJECTS_TEXT = re.compile(r"subjects?\s+((?:\d+\s*(?:[-\u2013]\s*\d+)?\s*,?\s*)+)", re.I)


def _subjects_from_text(text):
    """``"subjects 1-3, 5-14"`` to ``{1, 2, 3, 5, ..., 14}``; None when no subjects are named."""
    match = _SUBJECTS_TEXT.search(str(text))
    if not match:
        return None
    return set(parse_subjects(match.group(1).replace("\u2013", "-")))


def checkpoint_training_data(checkpoint, _seen=None):
    """What a checkpoint's provenance says it was trained on, per MOABB dataset.

    Reads both forms of ``provenance["data"]``: the record ``leaf-sk pretrain`` writes
    (``{"datasets": [{"source": "moabb", "name": ..., "subjects": [...]}, ...]}``) and a
    description by hand (``{"PhysionetMI (MOABB, ...)": "subjects 1-3, 5-14"}``, as in
    ``leaf-small``), and follows ``params["checkpoint"]`` (the weights a run started from).

    Returns
    -------
    datasets : dict
        ``{dataset name: set of subjects, or None when the provenance names the dataset but
        not which subjects}``.
    notes : list of str
        What could not be checked (no provenance, starting weights not found).
    """
    from .checkpoint import read_metadata, resolve_checkpoint

    _seen = set() if _seen is None else _seen
    try:
        path = resolve_checkpoint(checkpoint)
        if path in _seen:
            return {}, []
        _seen.add(path)
        provenance = read_metadata(path).get("provenance") or {}
    except ValueError:
        return {}, [f"checkpoint {checkpoint!r} carries no leaf-sk provenance: the data it "
                    "was trained on cannot be checked against the test subjects"]
    found, notes = {}, []

    def add(name, subjects):
        name = str(name)
        if subjects is None or found.get(name, set()) is None:
            found[name] = None
        else:
            found[name] = found.get(name, set()) | set(int(s) for s in subjects)

    data = provenance.get("data")
    if isinstance(data, dict) and isinstance(data.get("datasets"), list):
        for group in data["datasets"]:
            if isinstance(group, dict) and group.get("source") == "moabb":
                add(group.get("name"), group.get("subjects"))
    elif isinstance(data, dict):
        for key, value in data.items():
            name = re.split(r"[\s(]", str(key).strip(), maxsplit=1)[0]
            add(name, _subjects_from_text(value))
    elif data is not None:
        notes.append(f"checkpoint {checkpoint!r} describes its data as {str(data)[:80]!r}, "
                     "which names no MOABB dataset and subjects")
    start = (provenance.get("params") or {}).get("checkpoint")
    if start is not None:
        try:
            more, more_notes = checkpoint_training_data(start, _seen)
        except (FileNotFoundError, TypeError):
            more, more_notes = {}, [f"checkpoint {checkpoint!r} started from {start!r}, which "
                                    "is not on this machine: what that one saw is not checked"]
        for name, subjects in more.items():
            add(name, subjects)
        notes += more_notes
    return found, notes


def _same_dataset(name, dataset):
    def key(text):
        return re.sub(r"[^a-z0-9]", "", str(text).lower())
    return key(name) in {key(dataset_name(dataset)), key(getattr(dataset, "code", ""))}


def check_checkpoint(checkpoint, dataset, test_subjects):
    """Refuse a checkpoint whose provenance lists a test subject of the dataset.

    Parameters
    ----------
    checkpoint : str, path or None
        None (random weights) is not checked.
    dataset : MOABB dataset
    test_subjects : list of int

    Returns
    -------
    list of str
        Notes on what could not be checked (also warned).

    Raises
    ------
    ValueError
        When the checkpoint was trained on a test subject, or on the dataset without its
        provenance saying which subjects.
    """
    if checkpoint is None:
        return []
    found, notes = checkpoint_training_data(checkpoint)
    for name, subjects in found.items():
        if not _same_dataset(name, dataset):
            continue
        if subjects is None:
            raise ValueError(
                f"Checkpoint {checkpoint!r} was trained on {name} (its provenance), without "
                "saying which subjects: any test subject may have been seen. Use a checkpoint "
                "whose provenance lists its subjects, or benchmark another dataset.")
        seen = sorted(set(test_subjects) & subjects)
        if seen:
            raise ValueError(
                f"Checkpoint {checkpoint!r} was trained on {name} subjects {_ranges(subjects)} "
                f"(its provenance), which include the test subject(s) {_ranges(seen)}: their "
                "scores would not be on unseen subjects. Pass other test subjects with "
                "--subjects, or a checkpoint that did not see them.")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return notes


def _checkpoint_digest(checkpoint):
    """The checkpoint file's SHA-256 (so a retrained file at the same path is a new config)."""
    from .checkpoint import resolve_checkpoint

    if checkpoint is None:
        return None
    digest = hashlib.sha256()
    with open(resolve_checkpoint(checkpoint), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- running the evaluations -----------------------------------------------------------------


def _digest(document):
    def keyed(value):  # JSON keys are text; mixed int and str keys (freq_map) cannot be sorted
        if isinstance(value, dict):
            return {f"{type(k).__name__}:{k}": keyed(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [keyed(v) for v in value]
        return value

    text = json.dumps(keyed(document), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _estimator_digest(estimator):
    """A digest of an estimator's parameters (for pipelines given as objects)."""
    import joblib
    from sklearn.base import clone

    try:
        return joblib.hash(clone(estimator))
    except Exception:  # unpicklable parameters: fall back to the parameter text
        from moabb.analysis.results import get_string_rep

        return hashlib.sha256(get_string_rep(estimator)).hexdigest()


@contextmanager
def _quiet_libraries():
    """MNE, MOABB and the libraries below them say less while the evaluations run."""
    import mne

    moabb_logger = logging.getLogger("moabb")
    level = moabb_logger.level
    moabb_logger.setLevel(logging.ERROR)
    try:
        with mne.utils.use_log_level("error"), warnings.catch_warnings():
            # Every fold would repeat the same note (channels interpolated, untrained Q-Former).
            shown, show = set(), warnings.showwarning

            def show_once(message, category, *args, **kwargs):
                if (str(message), category) not in shown:
                    shown.add((str(message), category))
                    show(message, category, *args, **kwargs)

            warnings.showwarning = show_once
            for category in (FutureWarning, DeprecationWarning, RuntimeWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(?!leaf_sk)")
            # MOABB's own notes on how it resolves the cross-validation are not for the user.
            warnings.filterwarnings("ignore", module=r"moabb")
            yield
    finally:
        moabb_logger.setLevel(level)


def _check_on_disk(dataset, subjects):
    """Load each subject once, before any evaluation runs.

    A subject that is absent and cannot be downloaded is a FileNotFoundError naming it (the
    folders made for the download are removed).

    Returns
    -------
    list of str
        The EEG channel names of the first subject's first run.
    """

    roots = _data_roots()
    before = _directories(roots)
    ch_names = None
    for subject in subjects:
        data = _get_subject_data(dataset, dataset_name(dataset), subject, roots, before)
        if ch_names is None:
            raw = next(iter(next(iter(data.values())).values()))
            ch_names = [raw.ch_names[i] for i in _eeg_picks(raw)]
    return ch_names


def _eeg_picks(raw):
    import mne

    return mne.pick_types(raw.info, eeg=True, exclude=[])


def _chance(n_classes, metric):
    if metric == "kappa":
        return 0.0
    if metric == "roc_auc":
        return 0.5
    return 1.0 / n_classes


class _Units:
    """The work of a run, (evaluation, pipeline, subject), and what is already done."""

    def __init__(self, rows, digests):
        self.rows = rows
        self.digests = digests

    def done(self, kind, pipeline, subject):
        label = EVALUATIONS[kind]
        return any(r["evaluation"] == label and r["pipeline"] == pipeline
                   and int(r["subject"]) == subject and r["digest"] == self.digests[kind, pipeline]
                   for r in self.rows)


def run_benchmark(dataset, *, subjects=None, train_subjects=None, evaluation="both",
                  pipelines=None, extra_pipelines=None, checkpoint="leaf-small-bci",
                  fine_tune_epochs=5, paradigm=None, out=None, resume=True, progress=False,
                  random_state=0):
    """Evaluate LEAF pipelines beside the baselines in the same MOABB evaluation objects.

    Within-session: MOABB's 5-fold cross-validation inside each session of each test subject.
    Cross-subject: trained on all ``train_subjects``, tested on each test subject in turn
    (:class:`HeldOutSubjects`), so that no score is on a subject that a pipeline trained on.
    Every pipeline gets the same ``mne.Epochs`` from the paradigm (array pipelines convert
    them with :class:`EpochsToArray`), on the same folds.

    Parameters
    ----------
    dataset : str or MOABB dataset
        A class name in ``moabb.datasets`` (``"Kalunga2016"``, ``"PhysionetMI"``, ...).
    subjects : list of int or None
        Test subjects; None for the default split of :data:`DEFAULT_SPLITS`.
    train_subjects : list of int or None
        Training subjects of the cross-subject evaluation; None for the default split.
    evaluation : {"within", "cross", "both"}
    pipelines : list of str or None
        Names or groups (``default``, ``all``, ``leaf``, ``baselines``) of
        :func:`pipeline_configs`; None for the default set.
    extra_pipelines : dict or None
        ``{name: estimator}``: your own pipelines, run in the same evaluations. They receive
        ``mne.Epochs`` (start them with :class:`EpochsToArray` for arrays in µV) and labels
        encoded 0..K-1 in the order of the sorted event names.
    checkpoint : str or None
        LEAF checkpoint (packaged name or path; None: random weights). Refused when its
        provenance lists a test subject.
    fine_tune_epochs : int
        Epochs of the fine-tuned classifier.
    paradigm : MOABB paradigm or None
        Overrides :func:`choose_paradigm` (its family is read from the dataset).
    out : str, Path or None
        Folder for ``scores.csv``, written after every finished (evaluation, pipeline,
        subject); a rerun with the same settings continues from it. None keeps nothing.
    resume : bool
        False recomputes everything even when ``out`` holds scores.
    progress : bool
        A progress bar over subjects and pipelines on stderr.
    random_state : int
        Seeds the folds, the LEAF pipelines and the networks trained from scratch.

    Returns
    -------
    pandas.DataFrame
        One row per evaluation, pipeline, subject and session: ``evaluation``, ``dataset``,
        ``paradigm``, ``pipeline``, ``role`` (leaf, baseline, control, user), ``subject``,
        ``session``, ``score`` and ``metric``, further metrics (``score_balanced_accuracy``,
        ``score_kappa`` for more than two classes), ``chance``, ``n_classes``,
        ``samples_test``, ``samples`` (training trials), ``time`` (s), ``checkpoint``, the
        training subjects and ``digest`` (the configuration that produced the row).
    """
    import pandas as pd

    dataset = get_dataset(dataset)
    name = dataset_name(dataset)
    kinds = evaluation_kinds(evaluation)
    test, train = resolve_split(dataset, subjects, train_subjects, evaluation)
    if isinstance(fine_tune_epochs, bool) or not isinstance(fine_tune_epochs, int) or \
            fine_tune_epochs < 1:
        raise ValueError(f"fine_tune_epochs={fine_tune_epochs!r}; pass an integer >= 1.")
    check_checkpoint(checkpoint, dataset, test)
    chosen, family = choose_paradigm(dataset)
    paradigm = chosen if paradigm is None else paradigm
    events = _class_events(paradigm, dataset)
    configs = pipeline_configs(family, events, checkpoint=checkpoint,
                               fine_tune_epochs=fine_tune_epochs, random_state=random_state)
    extra = dict(extra_pipelines or {})
    names = [] if extra and pipelines is not None and not list(pipelines) else \
        select_pipelines(configs, pipelines)
    clash = sorted(set(extra) & set(names))
    if clash:
        raise ValueError(f"extra_pipelines reuses the name(s) {clash}; rename them.")
    if not names and not extra:
        raise ValueError("No pipeline to run; name one or more pipelines.")

    # Everything that makes a row: a change of any of these recomputes it on a rerun.
    common = {"dataset": name, "paradigm": _paradigm_text(paradigm), "events": events,
              "random_state": random_state, "checkpoint": _checkpoint_digest(checkpoint),
              "versions": _versions()}
    estimators = {**{pipe: build_pipeline(configs[pipe]["steps"]) for pipe in names}, **extra}
    digests = {}
    for kind in kinds:
        split = {"train": train} if kind == "cross" else {}
        for pipe in names:
            steps = configs[pipe]["steps"]
            uses_checkpoint = any(s.get("parameters", {}).get("checkpoint") for s in steps)
            # The built estimators' parameters cover the defaults the steps leave out: a
            # changed default recomputes the rows it produced.
            digests[kind, pipe] = _digest({**common, "kind": kind, **split, "steps": steps,
                                           "estimator": _estimator_digest(estimators[pipe]),
                                           "checkpoint": common["checkpoint"]
                                           if uses_checkpoint else None})
        for pipe, estimator in extra.items():
            digests[kind, pipe] = _digest({**common, "kind": kind, **split,
                                           "estimator": _estimator_digest(estimator)})
    roles = {**{pipe: configs[pipe]["role"] for pipe in names}, **{pipe: "user" for pipe in extra}}

    scores_file = None if out is None else Path(out) / "scores.csv"
    rows = []
    if scores_file is not None and resume and scores_file.is_file():
        saved = pd.read_csv(scores_file, dtype={"session": str, "train_subjects": str,
                                                "checkpoint": str})
        text_columns = [c for c in ("train_subjects", "checkpoint") if c in saved]
        saved[text_columns] = saved[text_columns].fillna("")
        rows = saved.to_dict("records")
        current = set(digests.values())
        stale = [r for r in rows if (r["evaluation"], r["pipeline"]) in
                 {(EVALUATIONS[k], p) for k, p in digests} and r["digest"] not in current]
        if stale:
            logger.info("%d scores in %s come from other settings; recomputing them",
                        len(stale), scores_file)
        rows = [r for r in rows if r not in stale]
    units = _Units(rows, digests)
    todo = [(kind, pipe, subject) for kind in kinds for pipe in estimators for subject in test
            if not units.done(kind, pipe, subject)]
    if todo:
        with _quiet_libraries():
            ch_names = _check_on_disk(dataset, sorted(
                {s for kind, _, s in todo for s in ([s] if kind == "within" else [s, *train])}))
        control = [p for p in estimators if roles[p] == "control"]
        frontal = {c.lower() for c in FRONTAL_CHANNELS} & {c.lower() for c in ch_names}
        if control and not frontal:
            explicit = pipelines is not None and any(
                "control" in str(item).lower() for item in np.atleast_1d(pipelines))
            if explicit:
                raise ValueError(f"{name} has none of the eye-movement control's channels "
                                 f"({', '.join(FRONTAL_CHANNELS)}); leave frontal-control out.")
            logger.info("%s has no frontal channel: the eye-movement control is left out", name)
            todo = [u for u in todo if u[1] not in control]
            for pipe in control:
                del estimators[pipe]
        subject_list = list(dataset.subject_list)
        try:
            _run_units(dataset, paradigm, kinds, test, train, estimators, todo, units, roles,
                       checkpoint, random_state, scores_file, progress)
        finally:
            dataset.subject_list = subject_list
    wanted = {(EVALUATIONS[k], p): d for (k, p), d in digests.items()}
    frame = pd.DataFrame([r for r in units.rows
                          if wanted.get((r["evaluation"], r["pipeline"])) == r["digest"]
                          and int(r["subject"]) in test])
    order = {**{p: i for i, p in enumerate(estimators)},
             **{e: i for i, e in enumerate(EVALUATIONS.values())}}
    return frame.sort_values(["evaluation", "pipeline", "subject", "session"],
                             key=lambda c: c.map(order) if c.name in {"evaluation", "pipeline"}
                             else c, ignore_index=True)


def _paradigm_text(paradigm):
    """The paradigm's class and settings as text (no memory addresses)."""
    settings = {key: re.sub(r" at 0x[0-9a-f]+", "", repr(value))
                for key, value in sorted(vars(paradigm).items())}
    return f"{type(paradigm).__name__}({settings})"


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("leaf-sk", "moabb", "pyriemann", "scikit-learn", "mne"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _run_units(dataset, paradigm, kinds, test, train, estimators, todo, units, roles,
               checkpoint, random_state, scores_file, progress):
    """Run the pending (evaluation, pipeline, subject) units; save after each."""
    from moabb.evaluations import CrossSubjectEvaluation, WithinSessionEvaluation
    from tqdm.auto import tqdm


    name = dataset_name(dataset)
    metric = paradigm.scoring if isinstance(paradigm.scoring, str) else next(iter(
        paradigm.scoring))
    bar = tqdm(total=len(todo), disable=not progress, unit="fit", dynamic_ncols=True,
               desc="benchmark")

    def save():
        if scores_file is None:
            return
        import pandas as pd

        with atomic_path(scores_file) as tmp:
            pd.DataFrame(units.rows).to_csv(tmp, index=False)

    def record(frame, kind, pipe):
        for row in frame.to_dict("records"):
            score = {k: v for k, v in row.items() if k.startswith("score")}
            n_classes = int(row["n_classes"])
            units.rows.append({
                "evaluation": EVALUATIONS[kind], "dataset": name,
                "paradigm": type(paradigm).__name__, "pipeline": pipe, "role": roles[pipe],
                "subject": int(row["subject"]), "session": str(row["session"]), "metric": metric,
                **score, "chance": _chance(n_classes, metric), "n_classes": n_classes,
                "samples_test": row.get("samples_test"), "samples": row.get("samples"),
                "time": row.get("time"),
                "checkpoint": "" if checkpoint is None else str(checkpoint),
                "train_subjects": _ranges(train) if kind == "cross" else "",
                "digest": units.digests[kind, pipe]})

    try:
        with tempfile.TemporaryDirectory(prefix="leaf-sk-moabb-") as hdf5, _quiet_libraries():
            settings = dict(paradigm=paradigm, datasets=[dataset], overwrite=True,
                            hdf5_path=hdf5, random_state=random_state, return_epochs=True)
            for kind in kinds:
                pending = [(p, s) for k, p, s in todo if k == kind]
                if not pending:
                    continue
                if kind == "within":
                    evaluation = WithinSessionEvaluation(**settings)
                    for pipe in estimators:
                        for subject in [s for p, s in pending if p == pipe]:
                            bar.set_postfix_str(f"within-session, {pipe}, subject {subject}")
                            dataset.subject_list = [subject]
                            frame = evaluation.process({pipe: estimators[pipe]})
                            record(frame[frame.subject.astype(int) == subject], kind, pipe)
                            save()
                            bar.update(1)
                else:
                    dataset.subject_list = sorted(set(train) | {s for _, s in pending})
                    evaluation = CrossSubjectEvaluation(
                        **settings, cv_class=HeldOutSubjects,
                        cv_kwargs={"subjects": _subject_column, "train_subjects": train,
                                   "test_subjects": test})
                    for pipe in estimators:
                        subjects = [s for p, s in pending if p == pipe]
                        if not subjects:
                            continue
                        bar.set_postfix_str(f"cross-subject, {pipe}, subjects "
                                            f"{_ranges(subjects)}")
                        dataset.subject_list = sorted(set(train) | set(subjects))
                        token = f"{id(units)}-{pipe}"
                        try:
                            frame = evaluation.process(
                                {pipe: SharedFit(estimators[pipe], token)})
                        finally:
                            _FITS.pop(token, None)
                        record(frame[frame.subject.astype(int).isin(subjects)], kind, pipe)
                        save()
                        bar.update(len(subjects))
    finally:
        bar.close()


# --- the table, the tests and the report -----------------------------------------------------


def _subject_scores(scores, column="score"):
    """Per (evaluation, pipeline, subject): the mean over sessions."""
    return scores.groupby(["evaluation", "pipeline", "subject"], sort=False)[column].mean()


def _best_baseline(frame):
    """The baseline of highest mean score in one evaluation (None without baselines)."""
    baselines = frame[frame.role == "baseline"]
    if baselines.empty:
        return None
    means = baselines.groupby("pipeline", sort=False).score.mean()
    return means.idxmax()


def paired_test(scores, pipeline, reference, evaluation):
    """One-sided exact paired permutation test over subjects: ``pipeline`` > ``reference``.

    MOABB's test (``moabb.analysis.meta_analysis.compute_pvals_perm``: every sign flip of
    the per-subject differences when there are 13 subjects or fewer). With ``n`` subjects the
    smallest possible p-value is ``1 / 2**n``.

    Returns
    -------
    p : float
    difference : float
        Mean over subjects of ``pipeline - reference``.
    wins : int
        Subjects where ``pipeline`` scores higher.
    """
    from moabb.analysis.meta_analysis import compute_pvals_perm

    per_subject = _subject_scores(scores[scores.evaluation == evaluation]).unstack("pipeline") \
        .loc[evaluation][[pipeline, reference]].dropna()
    differences = per_subject[pipeline] - per_subject[reference]
    p = float(compute_pvals_perm(per_subject, [pipeline, reference], seed=0)[0, 1])
    return p, float(differences.mean()), int((differences > 0).sum())


def summarize(scores):
    """The comparison table: one row per evaluation and pipeline.

    Columns: ``role``, ``metric``, ``mean`` and ``sd`` over subjects, one column per subject
    (``s9``, ...; sessions averaged), ``chance``, further metrics' means for more than two
    classes, and for LEAF pipelines the paired test against the best baseline of the same
    evaluation (``best baseline``, ``difference``, ``wins`` as "k/n", ``p``).
    Rows are ordered by evaluation, then mean score (highest first).
    """
    import pandas as pd

    rows = []
    for evaluation, frame in scores.groupby("evaluation", sort=False):
        best = _best_baseline(frame)
        for pipeline, group in frame.groupby("pipeline", sort=False):
            per_subject = group.groupby("subject").score.mean()
            row = {"evaluation": evaluation, "pipeline": pipeline, "role": group.role.iloc[0],
                   "metric": group.metric.iloc[0], "mean": per_subject.mean(),
                   "sd": per_subject.std(ddof=1) if len(per_subject) > 1 else math.nan}
            row.update({f"s{int(s)}": v for s, v in per_subject.items()})
            row["chance"] = group.chance.iloc[0]
            for column in sorted(c for c in group.columns if c.startswith("score_")):
                if column != f"score_{row['metric']}":
                    row[column[len("score_"):]] = group.groupby("subject")[column].mean().mean()
            if group.role.iloc[0] == "leaf" and best is not None:
                p, difference, wins = paired_test(frame, pipeline, best, evaluation)
                row.update({"best baseline": best, "difference": difference,
                            "wins": f"{wins}/{len(per_subject)}", "p": p})
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {e: i for i, e in enumerate(EVALUATIONS.values())}
    table = table.sort_values(["evaluation", "mean"], ascending=[True, False],
                              key=lambda c: c.map(order) if c.name == "evaluation" else c)
    subject_columns = sorted((c for c in table.columns if re.fullmatch(r"s\d+", c)),
                             key=lambda c: int(c[1:]))
    first = ["evaluation", "pipeline", "role", "metric", "mean", "sd", *subject_columns, "chance"]
    return table[first + [c for c in table.columns if c not in first]].reset_index(drop=True)


def format_table(table, markdown=False):
    """The summary as plain text (aligned columns) or a markdown table, 3 decimals."""
    def cell(value):
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.3f}".replace("-0.000", "0.000")
        return "" if value is None else str(value)

    columns = [c for c in table.columns if c not in {"role", "metric"}]
    cells = [[cell(v) for v in row] for row in table[columns].itertuples(index=False)]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths))]
    text += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in text)


def describe_run(scores):
    """Lines that say what the scores are: data, subjects, metric, checkpoint, protocol."""
    first = scores.iloc[0]
    metric = first.metric
    tests = sorted(scores.subject.astype(int).unique())
    lines = [f"{first.dataset}, {first.paradigm}; test subjects {_ranges(tests)}; metric: "
             f"{metric} (chance {first.chance:.3g})"]
    if "within-session" in set(scores.evaluation):
        lines.append("within-session: 5-fold cross-validation inside each test subject's "
                     "session")
    if "cross-subject" in set(scores.evaluation):
        trains = scores.loc[scores.evaluation == "cross-subject", "train_subjects"].iloc[0]
        lines.append(f"cross-subject: trained on subjects {trains}, tested on each test "
                     "subject")
    checkpoints = scores.loc[scores.role == "leaf", "checkpoint"].unique()
    if len(checkpoints):
        lines.append("LEAF checkpoint: " + ", ".join(str(c) or "none (random weights)"
                                                     for c in checkpoints))
    lines.append("p: one-sided exact paired permutation test over subjects, LEAF pipeline > "
                 "the best baseline of the same evaluation (chosen on these scores)")
    return lines


def plot_scores(scores, table=None):
    """Scores per pipeline and subject, one panel per evaluation, with the chance level.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    table = summarize(scores) if table is None else table
    evaluations = list(dict.fromkeys(table.evaluation))
    subjects = sorted(scores.subject.astype(int).unique())
    colours = {s: f"C{i % 10}" for i, s in enumerate(subjects)}
    width = max(6.0, 0.55 * table.groupby("evaluation").size().max() + 2.0)
    fig = Figure(figsize=(width * len(evaluations), 5.2), layout="constrained")
    axes = fig.subplots(1, len(evaluations), sharey=True, squeeze=False)[0]
    per_subject = _subject_scores(scores)
    order = {p: i for i, p in enumerate(dict.fromkeys(scores.pipeline))}
    for ax, evaluation in zip(axes, evaluations):
        rows = table[table.evaluation == evaluation]
        rows = rows.sort_values("pipeline", key=lambda c: c.map(order)).reset_index(drop=True)
        for x, row in rows.iterrows():
            values = per_subject.loc[evaluation, row.pipeline]
            offsets = np.linspace(-0.18, 0.18, len(subjects)) if len(subjects) > 1 else [0.0]
            for offset, subject in zip(offsets, subjects):
                if subject in values.index:
                    ax.scatter(x + offset, values[subject], color=colours[subject], s=28,
                               zorder=3, label=f"subject {subject}" if x == 0 else None)
            ax.hlines(row["mean"], x - 0.3, x + 0.3, color="black", linewidth=2, zorder=4)
        ax.axhline(rows.chance.iloc[0], color="grey", linestyle="--", linewidth=1,
                   label="chance")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(rows.pipeline, rotation=40, ha="right")
        for label, role in zip(ax.get_xticklabels(), rows.role):
            if role == "leaf":
                label.set_fontweight("bold")
        ax.set_title(evaluation)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{table.metric.iloc[0]} per subject (bar: mean)")
    axes[-1].legend(loc="best", fontsize="small")
    first = scores.iloc[0]
    fig.suptitle(f"{first.dataset} ({first.paradigm}): LEAF (bold) and baselines, "
                 f"test subjects {_ranges(subjects)}")
    return fig


def _moabb_figures(scores, table, folder):
    """MOABB's score plot per evaluation and its paired plot of LEAF+LR (else the first LEAF
    pipeline) against the best baseline; returns the files written."""
    import matplotlib.pyplot as plt
    from moabb.analysis.plotting import paired_plot, score_plot

    def save(fig, path):
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)

    written = []
    moabb_logger = logging.getLogger("moabb")
    level = moabb_logger.level
    moabb_logger.setLevel(logging.ERROR)  # its notes on shortening dataset names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for evaluation, frame in scores.groupby("evaluation", sort=False):
                slug = evaluation.replace("-", "_")
                chance = float(frame.chance.iloc[0])
                save(score_plot(frame, chance_level=chance)[0],
                     folder / f"moabb_score_plot_{slug}.png")
                rows = table[table.evaluation == evaluation]
                rows = rows[rows["best baseline"].notna()] if "best baseline" in rows else \
                    rows.iloc[:0]
                leaf = rows[rows.pipeline == "LEAF+LR"] if "LEAF+LR" in set(rows.pipeline) \
                    else rows
                if len(leaf) and frame.subject.nunique() > 1:
                    row = leaf.iloc[0]
                    pair = frame[frame.pipeline.isin([row["best baseline"], row.pipeline])]
                    fig = paired_plot(pair, row["best baseline"], row.pipeline)
                    # MOABB's axes start at chance and would hide subjects below it.
                    low = 10 * math.floor(10 * min(chance, pair.score.min()))
                    ax = fig.axes[0]
                    ax.set_xlim(low, 100)
                    ax.set_ylim(low, 100)
                    ax.plot([low, 100], [low, 100], ls="--", c="grey", linewidth=1)
                    ax.axhline(100 * chance, color="tab:red", ls=":", linewidth=1)
                    ax.axvline(100 * chance, color="tab:red", ls=":", linewidth=1,
                               label=f"chance ({100 * chance:.3g} %)")
                    ax.legend(loc="lower right")
                    save(fig, folder / f"moabb_paired_plot_{slug}.png")
    finally:
        moabb_logger.setLevel(level)
    return written


def write_report(scores, out, *, moabb_plots=True):
    """Write the summary (CSV, markdown) and the plots into ``out``.

    Files: ``summary.csv``, ``summary.md``, ``scores.png`` (:func:`plot_scores`) and, with
    ``moabb_plots``, ``moabb_score_plot_<evaluation>.png`` and
    ``moabb_paired_plot_<evaluation>.png`` (``scores.csv`` is written by
    :func:`run_benchmark`).

    Returns
    -------
    table : pandas.DataFrame
        :func:`summarize`'s table.
    files : dict
        ``{"summary_csv", "summary_md", "plot", "moabb_plots"}`` to paths.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summarize(scores)
    files = {"summary_csv": out / "summary.csv", "summary_md": out / "summary.md",
             "plot": out / "scores.png"}
    with atomic_path(files["summary_csv"]) as tmp:
        table.to_csv(tmp, index=False)
    text = ["# leaf-sk benchmark", ""] + [f"- {line}" for line in describe_run(scores)]
    for evaluation, part in table.groupby("evaluation", sort=False):
        text += ["", f"## {evaluation}", "", format_table(part.drop(columns="evaluation"),
                                                            markdown=True)]
    write_text_atomic(files["summary_md"], "\n".join(text) + "\n")
    fig = plot_scores(scores, table)
    with atomic_path(files["plot"]) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    files["moabb_plots"] = _moabb_figures(scores, table, out) if moabb_plots else []
    return table, files
