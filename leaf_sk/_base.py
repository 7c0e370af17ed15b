"""What every leaf-sk estimator shares: the input path, the model loading, the device."""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real

import numpy as np
import torch
# sklearn's private helpers, imported in this one module and re-exported to the estimators.
from sklearn.base import _fit_context  # noqa: F401
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .alignment import (ALIGNMENT_OPTIONS, ALIGNMENT_REFERENCES, align_trials, metadata_groups,
                        reference_whitener, resolve_alignment, whiten_trials)
from ._input import (_listed, as_numeric_array, check_same_channels, is_epochs_sequence,
                     make_channel_map, read_trials, to_template)
from ._precision import PRECISIONS, autocast
from .checkpoint import is_release_checkpoint, load_checkpoint
from ._rng import seeded
from .nn import SIZES, LeafConfig, LeafModel, members_of

# Parameter constraints of the input, network and instruction shared by the estimators.
SHARED_CONSTRAINTS = {
    "checkpoint": [str, os.PathLike, None],
    "size": [StrOptions(set(SIZES))],
    "ch_names": [list, tuple, np.ndarray, None],
    "sfreq": [Interval(Real, 0, None, closed="neither"), None],
    "units": [StrOptions({"uV", "µV", "V", "mV"}), None],
    "instruction": [str, None],
    "instruction_level": [Interval(Integral, 0, 2, closed="both")],
    "precision": [StrOptions(set(PRECISIONS))],
    "alignment": [StrOptions(set(ALIGNMENT_OPTIONS)), None],
    "alignment_reference": [StrOptions(set(ALIGNMENT_REFERENCES))],
    "release_compat": [StrOptions({"auto"}), "boolean"],
}

# Constraints of the training parameters the classifier and the tuner share.
TRAINING_CONSTRAINTS = {
    "text_encoder": [str],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "lr_tokenizer": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "warmup_epochs": [Interval(Real, 0, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "logit_scale": [Interval(Real, 0, None, closed="neither")],
}

# Trials read and preprocessed at a time by transform and predict: about this many bytes of
# float64 per block, so that memory does not grow with the number of trials.
_BLOCK_BYTES = 8 * 2**20


def check_torch_device(device):
    """Resolve ``"auto"`` and check that a requested CUDA device exists.

    Parameters
    ----------
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Returns
    -------
    str
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'.") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA, but no GPU is visible; use 'auto' or 'cpu'.")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} asks for GPU {parsed.index}, but only "
                         f"{torch.cuda.device_count()} are visible; use 'cuda:0' or 'auto'.")
    return device


def torch_seed(random_state):
    """An int seed for torch drawn from a sklearn ``random_state`` (int, RandomState or None)."""
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


class LeafInputMixin:
    """The one input path of every estimator: EEG in any accepted form to template tensors.

    Expects the estimator parameters ``checkpoint``, ``ch_names``, ``sfreq``, ``units``,
    ``alignment``, ``alignment_reference`` and ``release_compat``; ``fit`` sets ``alignment_``
    and ``release_compat_``, their values in use, and with Euclidean alignment on the fit
    trials' covariance, ``alignment_whitener_``.
    ``fit`` computes the channel matrix (mapping plus spherical-spline interpolation) once;
    ``transform``, ``predict`` and friends reuse it and refuse another channel set.
    """

    def _template_data(self, X, *, fit, groups=None):
        """EEG to float32 ``(n_trials, 65, n_windows * 100)`` at 200 Hz, each trial scaled alone.

        A 2-D ``X`` of shape ``(n_trials, n_channels * n_times)`` (trials flattened channel by
        channel, as ``X.reshape(len(X), -1)`` gives) is accepted when ``ch_names`` is set. With
        ``alignment="euclidean"`` the trials of each group are re-centred first
        (:func:`~leaf_sk.alignment.euclidean_alignment`); without ``groups``, each subject of
        Epochs metadata or a list of Epochs (:func:`~leaf_sk.alignment.metadata_groups`), else
        all trials as one.
        """
        if not fit:
            check_is_fitted(self, "channel_map_")
        else:
            self._resolve_input_options()
        X, n_flat_features = self._unflatten(X)
        return self._template_part(X, n_flat_features, fit=fit, groups=groups)

    def _resolve_input_options(self):
        """``alignment_`` and ``release_compat_``: the ``"auto"`` parameters as used."""
        self.alignment_ = resolve_alignment(self.alignment, self.checkpoint)
        self.release_compat_ = (is_release_checkpoint(self.checkpoint)
                                if self.release_compat == "auto" else bool(self.release_compat))

    def _template_blocks(self, X, *, fit=False):
        """As :meth:`_template_data`, read and preprocessed a block of trials at a time.

        Arrays (numpy memmaps included) are read block by block, so the whole input is never
        copied or converted at once; Epochs are read whole and preprocessed by blocks. The
        first block is processed at once (fitting the channel map with ``fit=True`` and
        raising on bad input early), the others while the result is consumed.

        With Euclidean alignment on each call's covariance (and in ``fit``) the whole call is
        read at once: its mean covariance needs every trial before the first can be aligned.

        Returns
        -------
        TrialBlocks
            ``len`` is the number of trials; iterating gives float32 blocks of shape
            ``(n_block, 65, n_windows * 100)`` in order.
        """
        if not fit:
            check_is_fitted(self, "channel_map_")
        else:
            self._resolve_input_options()
        X, n_flat_features = self._unflatten(X)
        if (not (isinstance(X, np.ndarray) and X.ndim == 3 and X.size)
                or (self.alignment_ == "euclidean"
                    and (fit or self.alignment_reference == "call"))):
            data = self._template_part(X, n_flat_features, fit=fit)
            return TrialBlocks(len(data), iter([data]))
        per_trial = 8 * max(X.shape[1], 65) * X.shape[2] * max(1.0, 200.0 / (self.sfreq or 200.0))
        block = max(1, int(_BLOCK_BYTES // per_trial))
        first = self._template_part(X[:block], n_flat_features, fit=fit)

        def blocks():
            yield first
            for start in range(block, len(X), block):
                yield self._template_part(X[start:start + block], n_flat_features, fit=False,
                                          first_trial=start)
        return TrialBlocks(len(X), blocks())

    def _template_part(self, X, n_flat_features, *, fit, first_trial=0, groups=None):
        if not fit and isinstance(X, np.ndarray) and X.ndim == 3:
            self._check_n_features(n_flat_features or X.shape[1], flat=n_flat_features is not None)
        trials = read_trials(X, ch_names=self.ch_names, sfreq=self.sfreq, units=self.units,
                             first_trial=first_trial)
        n_features = n_flat_features or len(trials.ch_names)
        if fit:
            self.channel_map_ = make_channel_map(trials.ch_names,
                                                 release_compat=self.release_compat_)
            self.ch_names_ = list(trials.ch_names)
            self.sfreq_ = float(trials.sfreq)
            self.n_features_in_ = n_features
        else:
            check_same_channels(self.ch_names_, trials.ch_names)
            self._check_n_features(n_features, flat=n_flat_features is not None)
        if self.alignment_ == "euclidean":
            groups = metadata_groups(X) if groups is None else groups
            if self.alignment_reference == "call":
                trials = align_trials(trials, groups)
            else:
                if fit:
                    self.alignment_whitener_ = reference_whitener(trials, groups)
                elif not hasattr(self, "alignment_whitener_"):
                    raise NotFittedError(
                        f"alignment_reference='fit' aligns on the covariance of the fit trials, "
                        f"but this {type(self).__name__} was fitted with "
                        f"alignment_reference='call'; fit it again.")
                trials = whiten_trials(trials, self.alignment_whitener_)
        elif groups is not None:
            raise ValueError(
                f"groups are only used with Euclidean alignment (alignment={self.alignment!r}, "
                f"here {self.alignment_!r}); set alignment='euclidean' to re-centre each group's "
                "trials, or leave groups out.")
        return to_template(trials, self.channel_map_, first_trial=first_trial)

    def _check_n_features(self, n_features, *, flat):
        if n_features == self.n_features_in_:
            return
        if flat:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (flattened trials of "
                f"{len(self.ch_names_)} channel(s) as in fit); pass trials of the channels and "
                "length used in fit, or refit.")
        raise ValueError(
            f"X has {n_features} channels, but {type(self).__name__} is expecting "
            f"{self.n_features_in_} channels as input (those seen in fit: "
            f"{_listed(self.ch_names_)}); pass the same channels in the same order, or refit.")

    def _unflatten(self, X):
        """Read array-likes as arrays and undo a channel-major flattening of 2-D input.

        Returns ``(X, n_columns)``; ``n_columns`` is None unless ``X`` was flattened.
        """
        import mne

        if isinstance(X, (mne.BaseEpochs, mne.io.BaseRaw)) or is_epochs_sequence(X):
            return X, None
        X = as_numeric_array(X)
        if X.ndim != 2 or self.ch_names is None:
            return X, None
        n_channels = len(self.ch_names)
        if n_channels > 1 and len(X) == n_channels:
            raise ValueError(
                f"2-D X of shape {X.shape} looks like one trial of the {n_channels} channels in "
                f"ch_names ({X.shape[1]} samples), but 2-D input is read as flattened trials "
                "(n_trials, n_channels * n_times). For one trial pass X[np.newaxis]; for "
                f"{n_channels} flattened trials pass them 3-D, X.reshape({n_channels}, "
                f"{n_channels}, -1).")
        if X.shape[1] == 0:
            raise ValueError(
                f"2-D X has 0 feature(s) (shape={X.shape}) while a minimum of {n_channels} is "
                "required; pass trials of shape (n_trials, n_channels, n_times), or flattened "
                "with X.reshape(len(X), -1).")
        if X.shape[1] % n_channels:
            raise ValueError(
                f"2-D X has {X.shape[1]} columns, not a multiple of the {n_channels} channels in "
                "ch_names; pass X of shape (n_trials, n_channels, n_times), or one flattened with "
                "X.reshape(len(X), -1).")
        return X.reshape(len(X), n_channels, -1), X.shape[1]


def build_model(checkpoint, size, d_text, seed, config=None, release_compat=False):
    """The LEAF model of an estimator: from a checkpoint, or freshly initialised.

    Parameters
    ----------
    checkpoint : str, Path or None
        A packaged name or a path; None gives random weights of ``size``.
    size : str
        Named size for random weights.
    d_text : int or None
        Dimension of the text encoder in use; None when no text is used (any Q-Former size is
        then accepted, and random weights get a 384-d one).
    seed : int
        Seeds the random initialisation (the caller's global RNG state is left untouched).
    config : dict or None
        Overrides of :class:`~leaf_sk.nn.LeafConfig` for random weights.
    release_compat : bool
        Index the Q-Former's positions as the release does at direct inference
        (``iqf_positions="contiguous"``).

    Returns
    -------
    model : LeafModel or LeafEnsemble
    info : dict
        The checkpoint's document (empty for random weights).
    """
    with seeded(seed):
        if checkpoint is None:
            return LeafModel(LeafConfig.from_size(size, **(config or {}), d_text=d_text or 384)), {}
        model, info = load_checkpoint(checkpoint, d_text=d_text)
    if d_text is not None and model.config.d_text != d_text:
        raise ValueError(
            f"checkpoint {checkpoint!r} has a Q-Former for {model.config.d_text}-d text embeddings, "
            f"but the text encoder gives {d_text}-d ones; use the text encoder it was trained with "
            f"({info.get('text_encoder', {}).get('name')!r}) or a Tower-only checkpoint.")
    if release_compat:
        for member in members_of(model):
            member.qformer.config = member.config.replace(iqf_positions="contiguous")
    return model, info


def warn_if_qformer_untrained(info, checkpoint, what):
    """Warn when the Q-Former in use was never instruction-tuned (random weights)."""
    if "qformer" in info.get("parts", []):
        return
    source = "random weights" if checkpoint is None else f"checkpoint {checkpoint!r} holds the Tower only"
    warnings.warn(
        f"{what} uses the Q-Former, but {source}: its Q-Former is untrained, so the result is "
        "not meaningful. Train it (LeafInstructionClassifier with max_epochs > 0), use pooled "
        "tokens (LeafEncoder without instruction), or load an instruction-tuned checkpoint.",
        UserWarning, stacklevel=3)


class TrialBlocks:
    """Consecutive blocks of trials, read once, with the total number of trials.

    Parameters
    ----------
    n_trials : int
    blocks : iterator of ndarray
        Blocks of shape (n_block, ...) whose lengths sum to ``n_trials``.
    """

    def __init__(self, n_trials, blocks):
        self.n_trials = n_trials
        self._blocks = blocks

    def __len__(self):
        return self.n_trials

    def __iter__(self):
        return self._blocks


def _fixed_blocks(data, batch_size):
    """Blocks of exactly ``batch_size`` trials (the last may be shorter) from ``data``.

    ``data`` is an array or an iterable of arrays (e.g. :class:`TrialBlocks`).
    """
    if isinstance(data, np.ndarray):
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size]
        return
    pending, n_pending = [], 0
    for block in data:
        start = 0
        while start < len(block):
            take = min(batch_size - n_pending, len(block) - start)
            pending.append(block[start:start + take])
            n_pending += take
            start += take
            if n_pending == batch_size:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, n_pending = [], 0
    if pending:
        yield np.concatenate(pending)


def predict_in_batches(fn, data, batch_size, device, precision="float32"):
    """Apply ``fn`` to float32 ``data`` in blocks of exactly ``batch_size`` trials.

    Every forward pass has the same shape: the last block is zero-padded to ``batch_size``
    rows and the padding's outputs are dropped. Matrix and convolution kernels pick their
    blocking (hence their float32 rounding) from the shapes they are given, so this is what
    makes a trial's output independent of which, and how many, trials share its call
    (``fn`` must treat rows independently, as the networks do in eval mode).

    Parameters
    ----------
    fn : callable
        Tensor of shape (batch_size, ...) to a tensor with ``batch_size`` rows.
    data : ndarray, shape (n_trials, ...), or TrialBlocks
        float32; blocks are consumed as they come, so only one block and one batch are in
        memory beside the output.
    batch_size : int
        Trials per forward pass. 1 gives the lowest latency for a single trial.
    device : str or torch.device
    precision : {"float32", "bfloat16"}
        bfloat16 runs ``fn`` under autocast.

    Returns
    -------
    ndarray, shape (n_trials, ...), the outputs in order (float32).
    """
    output, done = None, 0
    with torch.inference_mode(), autocast(precision, device):
        for block in _fixed_blocks(data, batch_size):
            block = np.ascontiguousarray(block, dtype=np.float32)
            n_rows = len(block)
            if n_rows < batch_size:
                padding = np.zeros((batch_size - n_rows,) + block.shape[1:], dtype=block.dtype)
                block = np.concatenate([block, padding])
            batch = torch.from_numpy(block).to(device)
            result = fn(batch)[:n_rows].float().cpu().numpy()
            if output is None:
                output = np.empty((len(data),) + result.shape[1:], dtype=np.float32)
            output[done:done + n_rows] = result
            done += n_rows
    return output
