"""LeafEncoder: LEAF embeddings of EEG trials as a scikit-learn transformer."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._base import (SHARED_CONSTRAINTS, Interval, LeafInputMixin, StrOptions, _fit_context,
                    build_model, check_torch_device,
                    predict_in_batches, torch_seed, warn_if_qformer_untrained)
from ._precision import resolve_precision
from .instructions import instruction_vector
from .nn import members_of
from .text import DEFAULT_TEXT_ENCODER, get_text_encoder


class LeafEncoder(LeafInputMixin, TransformerMixin, BaseEstimator):
    """Embed EEG trials with a (pretrained) LEAF network.

    ``fit`` only validates the input and computes the channel matrix (mapping onto the
    65-electrode template and spherical-spline interpolation of the missing sites); the
    network is frozen. ``transform`` returns one feature vector per trial: the pooled Tower
    tokens, or, with an ``instruction``, the Q-Former's instruction-conditioned embedding.

    Parameters
    ----------
    checkpoint : str or None
        A packaged checkpoint name, the path of a leaf-sk ``.safetensors`` file or of a LEAF
        release file, or None for random weights of ``size``. Packaged: ``"leaf-small-bci"``
        (default; Tower and Q-Former instruction-tuned with labels on PhysioNet MI and
        Kalunga2016 training subjects, with band-power tokens, on aligned EEG: doc/leaf-small-bci.md)
        and ``"leaf-small"`` (a Tower STR-pretrained without labels).
    size : {"small", "base", "tiny"}
        Network size when ``checkpoint`` is None.
    ch_names : list of str or None
        Channel names, one per row of each trial; required for arrays, read from ``info``
        for ``mne.Epochs``.
    sfreq : float or None
        Sampling rate in Hz; required for arrays.
    units : {"uV", "µV", "V", "mV"} or None
        Units of ``X``. None means microvolts for arrays (what MOABB returns) and volts for
        ``mne.Epochs``. Each trial is robust-scaled on its own, so the unit does not change the
        output; it is checked for plausibility (a warning names the likely unit).
    alignment : {"auto", "euclidean"} or None
        ``"euclidean"`` re-centres the trials of each subject or session before the network:
        each group is whitened by the inverse square root of its mean spatial covariance
        (:func:`~leaf_sk.alignment.euclidean_alignment`, no labels used). A group is one value of
        ``groups`` in ``fit``; without it, one subject of ``mne.Epochs`` (or a list of them)
        whose metadata has a ``subject`` column (MOABB's, with ``return_epochs=True``), and
        otherwise all the trials of one call: pass one subject's or session's trials per call
        (as MOABB's evaluations do at test time). A trial's output then depends on the trials
        that come with it. ``"auto"`` (default) does what the checkpoint was trained with:
        ``"euclidean"`` for ``"leaf-small-bci"``, None for ``"leaf-small"``, release files and
        random weights.
    alignment_reference : {"call", "fit"}, default="call"
        What Euclidean alignment re-centres on. ``"call"``: each call's (each group's) own
        trials, as above. ``"fit"``: the covariance of the fit trials, one subject's or
        session's (``fit`` refuses several groups), for every later call, so that a trial's
        output no longer depends on the trials that come with it: online decoding, one trial
        at a time, after fitting on a calibration run. Without alignment it does nothing.
    release_compat : {"auto"} or bool
        Behave as the authors' release: channels CB1/CB2 mapped as the release maps them (to O2
        and O1), and the Q-Former's positions indexed ``0..2N-1`` as at the release's direct
        inference (leaf-sk's own indexing puts the causal tokens at ``20 + i``, which equals it
        for 10-s trials). ``"auto"`` (default) is True for a release file and False otherwise.
    instruction : str or None
        Task in words (e.g. ``"motor imagery: left or right hand"``). When given, features are
        the Q-Former output conditioned on it, shape ``(n, d_text)``; otherwise pooled tokens.
    instruction_level : {0, 1, 2}
        0: the placeholder instruction; 1: ``instruction``; 2: ``instruction`` blended with the
        mean of ``label_texts`` (needs ``label_texts``).
    label_texts : list of str, dict or None
        Candidate label texts for ``instruction_level=2``: a list, or a dict
        ``{label: text}`` as :class:`LeafInstructionClassifier` takes (its texts are used).
    pooling : {"auto", "mean", "mean+std", "logvar"}
        How a trial becomes one vector when no instruction is given: the mean (and standard
        deviation) of the 2N Tower tokens, or ``"logvar"``, the log-variance of each tokenizer
        filter's output (its fused spatio-temporal convolution) averaged over the windows, a
        band-power readout of ``n_filters`` features. An ensemble checkpoint gives its
        members' pooled features side by side (``n_members`` times as many). ``"auto"``
        (default) is ``"logvar"`` without an instruction (the readout that scored best on the
        training subjects' inner split, benchmarks/RESULTS.md) and the Q-Former's embedding
        with one. With an ``instruction`` it must be ``"auto"`` or ``"mean"``.
    text_encoder : str
        Sentence encoder name or path (default all-MiniLM-L6-v2, offline when the ``offline``
        extra is installed), or ``"hashing"`` / ``"hashing-<dim>"`` for a tiny deterministic stand-in.
    batch_size : int
        Trials per forward pass. ``transform`` reads, preprocesses and embeds the trials a
        block at a time, so its memory does not grow with their number (numpy memmaps are
        read block by block). 1 gives the lowest latency for a single trial.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:i]"``.
    precision : {"auto", "float32", "bfloat16"}
        Numeric precision of the network at inference. ``"auto"`` is bfloat16 on a GPU and on a
        CPU with native bf16 matrix products (AVX-512 BF16 or AMX), float32 elsewhere; asking
        for bfloat16 where it is emulated warns (it is much slower there).
    random_state : int, RandomState instance or None
        Seeds random weights when ``checkpoint`` is None.

    Attributes
    ----------
    model_ : LeafModel or LeafEnsemble
        The frozen network, in eval mode. With an instruction, an ensemble's features are the
        mean of its members' unit embeddings (norm at most 1).
    channel_map_ : ChannelMap
        Input channels to template matrix, shape (65, n_channels).
    ch_names_ : list of str
    sfreq_ : float
    n_features_in_ : int
        Number of input channels (columns, for flattened 2-D input).
    n_features_out_ : int
        Length of each output vector.
    instruction_vector_ : ndarray of shape (d_text,) or None
    precision_ : {"float32", "bfloat16"}
        The precision in use.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = make_pipeline(LeafEncoder(ch_names=["C3", "Cz", "C4"], sfreq=250.0),
    ...                     LogisticRegression())  # doctest: +SKIP
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "label_texts": [list, tuple, dict, np.ndarray, None],
        "pooling": [StrOptions({"auto", "mean", "mean+std", "logvar"})],
        "text_encoder": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
    }

    def __init__(self, checkpoint="leaf-small-bci", *, size="small", ch_names=None, sfreq=None,
                 units=None, alignment="auto", alignment_reference="call",
                 release_compat="auto", instruction=None,
                 instruction_level=1, label_texts=None, pooling="auto",
                 text_encoder=DEFAULT_TEXT_ENCODER, batch_size=64, device="auto", precision="auto",
                 random_state=None):
        self.checkpoint = checkpoint
        self.size = size
        self.ch_names = ch_names
        self.sfreq = sfreq
        self.units = units
        self.alignment = alignment
        self.alignment_reference = alignment_reference
        self.release_compat = release_compat
        self.instruction = instruction
        self.instruction_level = instruction_level
        self.label_texts = label_texts
        self.pooling = pooling
        self.text_encoder = text_encoder
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None):
        """Validate ``X``, compute the channel matrix and load the network.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs
            EEG trials of at least 1 s.
        y : None
            Ignored.
        groups : array-like of shape (n_trials,), optional
            Subject or session of each trial, for ``alignment="euclidean"``; None takes the
            subjects of ``mne.Epochs`` metadata, else treats the trials as one group.

        Returns
        -------
        self
        """
        for _ in self._fit(X, groups):  # every block is read and checked; nothing is kept
            pass
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, groups=None):
        """Fit, then embed ``X``, mapping and resampling it once.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs
        y : None
            Ignored.
        groups : array-like of shape (n_trials,), optional
            Subject or session of each trial, for ``alignment="euclidean"``; None takes the
            subjects of ``mne.Epochs`` metadata, else treats the trials as one group.

        Returns
        -------
        ndarray of shape (n_trials, n_features_out_), float32
        """
        return self._predict(self._fit(X, groups))

    def _fit(self, X, groups=None):
        """Fitted state from ``X``; returns the blocks of ``X`` on the template for a transform."""
        if self.instruction is not None and self.pooling not in ("auto", "mean"):
            raise ValueError(
                f"pooling={self.pooling!r} pools the Tower tokens, but with instruction="
                f"{self.instruction!r} the features are the Q-Former's embedding, which is not "
                "pooled; leave pooling='auto' (the default) with an instruction, or set "
                "instruction=None to use pooled tokens.")
        self.pooling_ = ("logvar" if self.pooling == "auto" and self.instruction is None
                         else "mean" if self.pooling == "auto" else self.pooling)
        data = (self._template_blocks(X, fit=True) if groups is None
                else self._template_data(X, fit=True, groups=groups))
        self.device_ = check_torch_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        if self.instruction is not None:
            encoder = get_text_encoder(self.text_encoder)
            d_text = encoder.dim
            texts = self.label_texts
            if isinstance(texts, dict):
                texts = list(texts.values())
            self.instruction_vector_ = instruction_vector(
                encoder, self.instruction, int(self.instruction_level), texts)
        else:
            d_text = None
            self.instruction_vector_ = None
        model, info = build_model(self.checkpoint, self.size, d_text, torch_seed(self.random_state),
                                  release_compat=self.release_compat_)
        if self.instruction is not None:
            warn_if_qformer_untrained(info, self.checkpoint, "LeafEncoder(instruction=...)")
        self.model_ = model.to(self.device_).eval()
        if self.instruction_vector_ is not None:
            self.n_features_out_ = model.config.d_text
        else:
            self.n_features_out_ = len(members_of(model)) * (
                model.config.n_filters if self.pooling_ == "logvar" else
                model.config.d_model * (2 if self.pooling_ == "mean+std" else 1))
        return data

    def _embed(self, batch):
        if self.instruction_vector_ is not None:
            instruction = torch.as_tensor(self.instruction_vector_, device=batch.device)
            return self.model_(batch, instruction)
        return torch.cat([self._pool(member.tower, batch) for member in members_of(self.model_)],
                         dim=1)

    def _pool(self, tower, batch):
        if self.pooling_ == "logvar":
            return tower.tokenizer.log_power(batch).mean(dim=1)
        tokens = tower(batch)
        if self.pooling_ == "mean+std":
            return torch.cat([tokens.mean(dim=1), tokens.std(dim=1)], dim=1)
        return tokens.mean(dim=1)

    def transform(self, X):
        """Embed trials, batch by batch, in eval mode without gradients.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs
            Same channels as in ``fit``.

        Returns
        -------
        ndarray of shape (n_trials, n_features_out_), float32
        """
        check_is_fitted(self, "model_")
        return self._predict(self._template_blocks(X))

    def _predict(self, data):
        return predict_in_batches(self._embed, data, self.batch_size, self.device_,
                                  getattr(self, "precision_", "float32"))

    def get_feature_names_out(self, input_features=None):
        """``leafencoder0``, ``leafencoder1``, ..."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"leafencoder{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        # Embeddings are float32 whatever the input dtype.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
