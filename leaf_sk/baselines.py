"""ShallowFBCSPNet and EEGNet trained from scratch, as scikit-learn classifiers.

The deep-learning baselines of ``leaf-sk benchmark``: the networks of :mod:`leaf_sk.nn.baselines`
trained on the evaluation's training trials through skorch (AdamW, cosine learning-rate
schedule, a fixed number of epochs or of steps, seeded), at the input's own sampling rate.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from scipy.special import softmax
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from skorch import NeuralNetClassifier

from . import _net
from ._base import (Interval, StrOptions, _fit_context, check_torch_device, predict_in_batches,
                    torch_seed)
from ._input import (_check_finite, _epochs_sequence_to_array, _epochs_to_array,
                     as_numeric_array, is_epochs_sequence)
from ._rng import seeded
from .nn.baselines import EEGNet, ShallowFBCSPNet

# Standardisation of each trial before the network, see the estimators' docstring.
STANDARDIZE_OPTIONS = ("trial", "channel", "none")


class _SeededClassifierNet(_net.SeededEpochsMixin, NeuralNetClassifier):
    """skorch classifier whose every epoch runs under its own seed (deterministic fits)."""


class _ConvNetClassifier(ClassifierMixin, BaseEstimator):
    """What both network classifiers share; subclasses set ``_network`` and ``__init__``."""

    _network = None

    _parameter_constraints = {
        "sfreq": [Interval(Real, 0, None, closed="neither"), None],
        "standardize": [StrOptions(set(STANDARDIZE_OPTIONS))],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "min_steps": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "drop_prob": [Interval(Real, 0, 1, closed="left")],
        "module_kwargs": [dict, None],
        "device": [str],
        "verbose": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def _read(self, X):
        """Trials as float64 ``(n_trials, n_channels, n_times)`` and the rate (None if unknown)."""
        import mne

        if isinstance(X, mne.BaseEpochs) or is_epochs_sequence(X):
            read = _epochs_sequence_to_array if is_epochs_sequence(X) else _epochs_to_array
            data, _, sfreq = read(X, None, self.sfreq)  # EEG channels not marked bad
            data = np.asarray(data, dtype=np.float64)
        else:
            data = as_numeric_array(X).astype(np.float64, copy=False)
            sfreq = None if self.sfreq is None else float(self.sfreq)
            if data.ndim != 3:
                raise ValueError(
                    f"{type(self).__name__} takes X of shape (n_trials, n_channels, n_times), got "
                    f"an array of shape {data.shape}; for a single trial use X[np.newaxis], or "
                    "pass mne.Epochs.")
            if 0 in data.shape:
                raise ValueError(f"X is empty (shape {data.shape}); pass at least one trial.")
        _check_finite(data)
        return data, sfreq

    def _standardized(self, data):
        """float32 input of the network: ``data`` scaled as ``standardize`` says."""
        if self.standardize == "trial":
            data = data - data.mean(axis=2, keepdims=True)
            scale = data.std(axis=(1, 2), keepdims=True)
            data = data / np.where(scale > 0, scale, 1.0)
        elif self.standardize == "channel":
            data = (data - self.channel_mean_[:, None]) / self.channel_scale_[:, None]
        return data.astype(np.float32)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the network from scratch on labelled trials.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs
            EEG trials, any unit (see ``standardize``).
        y : array-like of shape (n_trials,)
            Labels (strings or integers), two classes or more.

        Returns
        -------
        self
        """
        data, sfreq = self._read(X)
        y = column_or_1d(y, warn=True)
        if len(y) != len(data):
            raise ValueError(f"X has {len(data)} trials but y has {len(y)} labels; pass one "
                             "label per trial.")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y has one class ({self.classes_.tolist()}); a classifier needs at "
                             "least two. Pass trials of two or more classes.")
        _, self.n_channels_, self.n_times_ = data.shape
        self.sfreq_ = sfreq
        for name in ("channel_mean_", "channel_scale_"):  # from an earlier fit
            self.__dict__.pop(name, None)
        if self.standardize == "channel":
            self.channel_mean_ = data.mean(axis=(0, 2))
            spread = data.std(axis=(0, 2))
            self.channel_scale_ = np.where(spread > 0, spread, 1.0)
        self.device_ = check_torch_device(self.device)
        seed = torch_seed(self.random_state)
        lengths = {} if sfreq is None else self._network.lengths_at(sfreq)
        options = {**lengths, "drop_prob": self.drop_prob, **(self.module_kwargs or {})}
        with seeded(seed):
            module = self._network(self.n_channels_, len(self.classes_), self.n_times_, **options)
        net = _SeededClassifierNet(
            module,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            max_epochs=self._n_epochs(len(data)),
            batch_size=self.batch_size,
            iterator_train__shuffle=True,
            train_split=None,
            callbacks=[("lr_schedule", _net.WarmupCosineLR(warmup_epochs=0.0, final_ratio=0.0))],
            callbacks__print_log__sink=_net.logger.debug,
            device=self.device_,
            verbose=self.verbose,
            seed=seed,
        )
        targets = np.searchsorted(self.classes_, y).astype(np.int64)
        net.fit(self._standardized(data), targets)
        self.history_ = [{k: v for k, v in row.items() if k != "batches"}
                         for row in net.history.to_list()]
        self.module_ = net.module_.eval()
        return self

    def _n_epochs(self, n_trials):
        """``max_epochs``, or more when they make fewer than ``min_steps`` optimizer steps."""
        steps_per_epoch = math.ceil(n_trials / self.batch_size)
        return max(self.max_epochs, math.ceil(self.min_steps / steps_per_epoch))

    def _logits(self, X):
        check_is_fitted(self, "module_")
        data, sfreq = self._read(X)
        if data.shape[1:] != (self.n_channels_, self.n_times_):
            raise ValueError(
                f"X has trials of {data.shape[1]} channels x {data.shape[2]} samples, but "
                f"{type(self).__name__} was fitted on {self.n_channels_} x {self.n_times_}; pass "
                "trials of the same channels and length.")
        if sfreq is not None and self.sfreq_ is not None and not np.isclose(sfreq, self.sfreq_):
            raise ValueError(f"X is sampled at {sfreq:g} Hz, but {type(self).__name__} was "
                             f"fitted at {self.sfreq_:g} Hz; resample X to {self.sfreq_:g} Hz.")
        return predict_in_batches(self.module_, self._standardized(data), self.batch_size,
                                  self.device_).astype(np.float64)

    def decision_function(self, X):
        """The network's logits.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs

        Returns
        -------
        ndarray of shape (n_trials, n_classes), or (n_trials,) for two classes
            For two classes, ``logit(class 1) - logit(class 0)`` (positive means
            ``classes_[1]``), as scikit-learn's binary convention asks.
        """
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if len(self.classes_) == 2 else logits

    def predict_proba(self, X):
        """Softmax of the logits.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs

        Returns
        -------
        ndarray of shape (n_trials, n_classes), rows sum to 1, columns in ``classes_`` order.
        """
        return softmax(self._logits(X), axis=1)

    def predict(self, X):
        """The class of highest logit.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs

        Returns
        -------
        ndarray of shape (n_trials,), values of ``classes_``.
        """
        return self.classes_[np.argmax(self._logits(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


def _parameters_doc(network, lengths, example, min_steps_note):
    """The Parameters and Attributes sections both classifiers share, for ``network``."""
    return f"""
    Parameters
    ----------
    sfreq : float or None
        Sampling rate of array input, Hz (read from ``mne.Epochs`` otherwise). The temporal
        kernels and pools keep the paper's durations at this rate (``{network}.lengths_at``);
        None with arrays uses the paper's lengths in samples ({lengths}). Nothing is resampled.
    standardize : {{"trial", "channel", "none"}}
        Scaling of the input. ``"trial"``: each channel's mean removed, then each trial divided
        by its standard deviation over all channels and samples (relative channel amplitudes
        stay; scale differences between subjects and sessions go). ``"channel"``: each channel
        z-scored with the mean and standard deviation of the training trials. ``"none"``: as
        given (scale the input to about unit variance yourself). With ``"trial"`` and
        ``"channel"`` the unit of ``X`` does not matter.
    max_epochs : int
        Training epochs (passes over the training trials); there is no early stopping.
    min_steps : int
        Fewest optimizer steps: a fit on few trials runs more than ``max_epochs`` epochs to
        make them (time grows with epochs times trials, so this costs little where it
        applies). {min_steps_note}
    lr : float
        Peak learning rate of AdamW; it follows a cosine from ``lr`` to 0 over the steps.
    weight_decay : float
        AdamW's decoupled weight decay.
    batch_size : int
        Trials per training step (and per prediction block).
    drop_prob : float
        Dropout probability of the network.
    module_kwargs : dict or None
        Further arguments of :class:`leaf_sk.nn.{network}` (e.g. ``{example}``); lengths given
        here replace the ones scaled to ``sfreq``.
    device : str
        ``"auto"`` (CUDA when visible), ``"cpu"`` or ``"cuda[:i]"``.
    verbose : int
        skorch's per-epoch log on stdout when positive.
    random_state : int, RandomState or None
        Seeds the initial weights, the shuffling and dropout. With an int seed two fits on the
        CPU give the same network (torch's CPU kernels are deterministic for a fixed number of
        threads).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted.
    module_ : leaf_sk.nn.{network}
        The trained network, in evaluation mode.
    history_ : list of dict
        skorch's record of every epoch run (``train_loss``, ``lr``, ``dur`` in seconds).
    n_channels_, n_times_ : int
        Trial shape seen in ``fit``; ``predict`` and friends need the same.
    sfreq_ : float or None
        Sampling rate seen in ``fit``, Hz (None for arrays without ``sfreq``).
    channel_mean_, channel_scale_ : ndarray of shape (n_channels,)
        The per-channel statistics, with ``standardize="channel"`` only.
    device_ : str
    """


class ShallowFBCSPNetClassifier(_ConvNetClassifier):
    __doc__ = """ShallowFBCSPNet (Schirrmeister et al. 2017) trained from scratch.

    :class:`leaf_sk.nn.ShallowFBCSPNet` (temporal and spatial convolution, squaring, mean
    pooling, logarithm: a learned filter-bank CSP) trained with AdamW and a cosine schedule
    for ``max_epochs`` epochs on all the trials given to ``fit`` (no validation split).
    Defaults follow braindecode's examples: learning rate 0.0625 x 0.01, no weight decay,
    batch 64.
    """ + _parameters_doc(
        "ShallowFBCSPNet", "kernel 25, pool 75, stride 15: 100, 300 and 60 ms at 250 Hz",
        "{'n_filters_time': 60}",
        "Off by default: on PhysioNet within-session folds (36 trials) 150 epochs scored as 40 "
        "did.")

    _network = ShallowFBCSPNet

    def __init__(self, *, sfreq=None, standardize="trial", max_epochs=40, min_steps=0,
                 lr=6.25e-4, weight_decay=0.0, batch_size=64, drop_prob=0.5,
                 module_kwargs=None, device="auto", verbose=0, random_state=None):
        self.sfreq = sfreq
        self.standardize = standardize
        self.max_epochs = max_epochs
        self.min_steps = min_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.drop_prob = drop_prob
        self.module_kwargs = module_kwargs
        self.device = device
        self.verbose = verbose
        self.random_state = random_state


class EEGNetClassifier(_ConvNetClassifier):
    __doc__ = """EEGNet-4,2 (Lawhern et al. 2018) trained from scratch.

    :class:`leaf_sk.nn.EEGNet` (temporal convolution, depthwise spatial convolution, separable
    convolution, ELU, mean pooling) trained with AdamW and a cosine schedule for
    ``max_epochs`` epochs, or ``min_steps`` steps, on all the trials given to ``fit`` (no
    validation split). Defaults: learning rate 1e-3 (Adam's, as in the paper), no weight
    decay, batch 16 (the paper's code; with batches of 64, 40 epochs left EEGNet undertrained
    across PhysioNet subjects), dropout 0.25 (the paper's cross-subject setting).
    """ + _parameters_doc(
        "EEGNet", "kernel 64 and first pool 4: 0.5 s and 31 ms at 128 Hz",
        "{'F1': 16, 'D': 2, 'F2': 32}",
        "On Kalunga2016 within-session folds of training subjects 1 and 4 (38 trials, 3 steps "
        "an epoch) EEGNet scored chance (0.32 accuracy) after 40 epochs, 0.50 after 100 and "
        "0.63 after 200 (600 steps).")

    _network = EEGNet

    def __init__(self, *, sfreq=None, standardize="trial", max_epochs=40, min_steps=600,
                 lr=1e-3, weight_decay=0.0, batch_size=16, drop_prob=0.25,
                 module_kwargs=None, device="auto", verbose=0, random_state=None):
        self.sfreq = sfreq
        self.standardize = standardize
        self.max_epochs = max_epochs
        self.min_steps = min_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.drop_prob = drop_prob
        self.module_kwargs = module_kwargs
        self.device = device
        self.verbose = verbose
        self.random_state = random_state
