"""STR pretraining of the LEAF Tower as a scikit-learn style estimator."""

from __future__ import annotations

import json
import math
import os
import pickle
import time
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from skorch.callbacks import Callback
from sklearn.utils.validation import check_is_fitted

from . import _net
from ._base import Interval, StrOptions, _fit_context, check_torch_device, torch_seed
from ._input import pad_or_crop, prepare_unlabelled
from ._rng import seeded
from .checkpoint import load_checkpoint, save_checkpoint
from .montage import WINDOW_SAMPLES
from .nn import SIZES, LeafConfig, LeafEnsemble, STRPretrainer

RESUME_FILE = "resume.pt"
MODEL_FILE = "tower.safetensors"
#: What an interrupted run writes instead of :data:`MODEL_FILE`: its last complete epoch.
EPOCH_MODEL_FILE = "tower-epoch{epoch:03d}.safetensors"


class _CompleteEpochs(Callback):
    """Count the epochs whose history row is complete (every epoch-end value recorded)."""

    def initialize(self):
        self.epochs_ = None
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs_ = len(net.history)


class LeafPretrainer(BaseEstimator):
    """Self-supervised STR pretraining of the LEAF Tower on unlabelled EEG.

    Every trial is mapped onto the 65-electrode template, resampled to 200 Hz, scaled on its
    own and cut to ``n_windows`` windows of 0.5 s. The contextual branch rebuilds the clean
    waveform from 50 %-masked tokens of an input with one random 6-Hz band removed (``L_S``),
    the causal branch predicts the next clean window (``L_T``); the loss is ``L_S + L_T``,
    trained with AdamW, a linear warm-up and a cosine decay, through skorch.

    Parameters
    ----------
    size : {"small", "base", "tiny"}
        Network size (``"base"`` is the paper's; ``"small"`` is sized for CPUs).
    config : dict or None
        Overrides of :class:`~leaf_sk.nn.LeafConfig` fields, e.g. ``{"n_layers": 2}``.
    checkpoint : str or None
        Start from these Tower weights (a packaged name or a path) instead of random ones.
    ch_names : list of str or None
        Channel names, required when ``X`` is an array.
    sfreq : float or None
        Sampling rate of ``X`` in Hz, required when ``X`` is an array.
    units : {"uV", "V", "mV"} or None
        Units of ``X``; None means µV for arrays (what MOABB returns) and V for MNE objects.
    segment_seconds : float
        Length of the segments that continuous ``mne.io.Raw`` recordings are cut into, s.
    n_windows : int
        Windows of 0.5 s per training example (8 = 4 s); shorter trials are zero-padded.
    max_epochs : int
        Epochs of training (in total, counting those of a resumed run).
    batch_size : int
        Trials per step (per process when distributed).
    lr : float
        Peak learning rate of everything but the tokenizer.
    lr_tokenizer : float
        Peak learning rate of the tokenizer (the release uses 10 x ``lr``).
    weight_decay : float
        AdamW weight decay, applied to every parameter.
    warmup_epochs : float
        Linear warm-up length, epochs.
    final_lr_ratio : float
        The cosine decay ends at this fraction of the peak rate.
    valid_every : int
        Every ``valid_every``-th trial is held out for validation; 0 disables it.
    checkpoint_dir : str or None
        Folder for the per-epoch resume file (``resume.pt``) and the final Tower checkpoint
        (``tower.safetensors``); an interrupted run writes its last complete epoch there as
        ``tower-epochNNN.safetensors`` instead.
    resume : bool
        Continue from ``checkpoint_dir``'s resume file when one exists (off by default, so that
        a refit never silently returns an earlier run). Needs an int ``random_state``: every
        epoch runs under a seed drawn from it, which is what makes a resumed run reach the
        same weights as an uninterrupted one. Continuing with another ``max_epochs`` than the
        run that wrote the file recomputes the warm-up/cosine schedule; a warning says how the
        learning rate changes.
    distributed : bool
        Train under Hugging Face Accelerate (launch the script with ``torchrun`` or
        ``accelerate launch``); needs the ``distributed`` extra.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    verbose : int
        0 silent, 1 a progress bar and one line per epoch.
    random_state : int, RandomState instance or None
        Seeds initialisation, shuffling, masks, perturbations and dropout.

    Attributes
    ----------
    module_ : STRPretrainer
        The trained Tower with its reconstruction heads.
    net_ : skorch.NeuralNet
        The skorch net that trained it.
    config_ : LeafConfig
    history_ : list of dict
        Per complete epoch: ``train_L_S``, ``train_L_T``, ``train_zero_S``, ``train_zero_T``
        (the loss of predicting zeros), the same with ``valid_``, ``lr`` and ``dur`` (seconds).
        The epoch an interruption cut short is not in it.
    interrupted_ : bool
        Whether training stopped before ``max_epochs`` (a KeyboardInterrupt, e.g. Ctrl-C,
        which skorch catches). With ``checkpoint_dir``, the estimator then holds the last
        complete epoch, restored from the resume file; without it, the weights of the
        interrupted epoch's last step.
    checkpoint_path_ : Path or None
        The Tower checkpoint this fit wrote: ``checkpoint_dir/tower.safetensors`` after a
        complete run, ``checkpoint_dir/tower-epochNNN.safetensors`` (NNN: the last complete
        epoch) after an interruption; None without ``checkpoint_dir``, on the processes of a
        distributed run that do not write, or when no epoch was complete.
    data_description_ : dict or None
        The ``data_description`` passed to :meth:`fit`, stored in the checkpoint.
    n_windows_seen_ : int
        Training windows processed in this call to ``fit``.
    windows_per_second_ : float
        Training throughput of this call to ``fit``, 0.5-s windows per second of wall time.
    """

    _parameter_constraints = {
        "size": [StrOptions(set(SIZES))],
        "config": [dict, None],
        "checkpoint": [str, os.PathLike, None],
        "ch_names": [list, tuple, None],
        "sfreq": [Interval(Real, 0, None, closed="neither"), None],
        "units": [StrOptions({"uV", "µV", "V", "mV"}), None],
        "segment_seconds": [Interval(Real, 1.0, None, closed="left")],
        "n_windows": [Interval(Integral, 2, 20, closed="both")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "lr_tokenizer": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "warmup_epochs": [Interval(Real, 0, None, closed="left")],
        "final_lr_ratio": [Interval(Real, 0, 1, closed="both")],
        "valid_every": [Interval(Integral, 0, None, closed="left")],
        "checkpoint_dir": [str, os.PathLike, None],
        "resume": ["boolean"],
        "distributed": ["boolean"],
        "device": [str],
        "verbose": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, size="small", *, config=None, checkpoint=None, ch_names=None, sfreq=None,
                 units=None, segment_seconds=4.0, n_windows=8, max_epochs=10, batch_size=64,
                 lr=1e-4, lr_tokenizer=1e-3, weight_decay=0.01, warmup_epochs=1.0,
                 final_lr_ratio=0.1, valid_every=10, checkpoint_dir=None, resume=False,
                 distributed=False, device="auto", verbose=1, random_state=None):
        self.size = size
        self.config = config
        self.checkpoint = checkpoint
        self.ch_names = ch_names
        self.sfreq = sfreq
        self.units = units
        self.segment_seconds = segment_seconds
        self.n_windows = n_windows
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_tokenizer = lr_tokenizer
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.final_lr_ratio = final_lr_ratio
        self.valid_every = valid_every
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.distributed = distributed
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    def _make_module(self, seed):
        config = LeafConfig.from_size(self.size, **(self.config or {}))
        with seeded(seed):
            module = STRPretrainer(config)
        if self.checkpoint is not None:
            loaded, _ = load_checkpoint(self.checkpoint)
            if isinstance(loaded, LeafEnsemble):
                raise ValueError(
                    f"checkpoint {self.checkpoint!r} is an ensemble of {len(loaded.members)} "
                    "models; pretraining continues one Tower: pass one of its member files.")
            if not loaded.config.reconstruction_heads:
                raise ValueError(
                    f"checkpoint {self.checkpoint!r} was saved without the Tower's reconstruction "
                    "heads, which STR pretraining trains; start from a file that has them.")
            if loaded.config.replace(d_text=config.d_text) != config.replace(d_text=config.d_text):
                raise ValueError(
                    f"checkpoint {self.checkpoint!r} holds a network of another size than "
                    f"size={self.size!r}, config={self.config!r}; pass the matching size.")
            module.tower.load_state_dict(loaded.tower.state_dict())
        return module

    def _make_net(self, module, seed):
        net_cls = _net.STRNet
        kwargs = {}
        if self.distributed:
            try:
                from accelerate import Accelerator
            except ImportError as exc:
                raise ImportError(
                    "distributed=True needs Hugging Face Accelerate: pip install 'leaf-sk[distributed]'."
                ) from exc
            net_cls = _net.accelerated(_net.STRNet)
            # Accelerate runs several CPU processes (gloo) only when told ``cpu=True``; without
            # it, torchrun on a machine without GPU starts independent single-process runs.
            cpu = check_torch_device(self.device) == "cpu"
            kwargs.update(accelerator=Accelerator(cpu=cpu), device=None)
        else:
            kwargs["device"] = check_torch_device(self.device)
        callbacks = [("epoch_means", _net.EpochMeans()),
                     ("lr_schedule", _net.WarmupCosineLR(self.warmup_epochs, self.final_lr_ratio)),
                     # after every callback that records a value of the epoch's history row
                     ("complete_epochs", _CompleteEpochs())]
        if self.checkpoint_dir is not None:
            callbacks.append(("resume_checkpoint",
                              _net.ResumeCheckpoint(Path(self.checkpoint_dir) / RESUME_FILE)))
        if self.verbose:
            from skorch.callbacks import ProgressBar

            callbacks.append(("progress", ProgressBar()))
        callbacks.append(("log", _net.LogEpoch(
            ["train_L_S", "train_L_T", "valid_L_S", "valid_L_T", "valid_zero_S", "valid_zero_T"])))
        return net_cls(
            module,
            criterion=_net.ModuleComputedLoss,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            optimizer__param_groups=[("tower.tokenizer.*", {"lr": self.lr_tokenizer})],
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train__shuffle=True,
            train_split=_net.EveryKthSplit(self.valid_every),
            callbacks=callbacks,
            callbacks__print_log__sink=_net.logger.debug,
            predict_nonlinearity=None,
            verbose=self.verbose,
            seed=seed,
            **kwargs,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, data_description=None):
        """Pretrain on unlabelled EEG.

        Parameters
        ----------
        X : array of shape (n_trials, n_channels, n_times), mne.Epochs, mne.io.Raw or list
            Unlabelled EEG. Arrays need ``ch_names`` and ``sfreq``; continuous recordings are
            cut into ``segment_seconds`` segments. A list may mix Raw and Epochs of different
            montages and rates. Every trial must give two 0.5-s windows at 200 Hz (1 s).
        y : None
            Ignored.
        data_description : dict or None
            What ``X`` is (datasets, subjects, files, band-pass filter, ...), any JSON-able
            dict; stored as ``provenance["data"]`` in the checkpoints this fit writes.

        Returns
        -------
        self

        Warns
        -----
        UserWarning
            When training stops early (a KeyboardInterrupt, which skorch catches; see
            ``interrupted_``): the fit then holds the complete epochs, and a fit with
            ``resume=True`` continues the run. When a resumed run's ``max_epochs`` differs
            from the one the resume file was written with (the learning-rate schedule
            changes), or is smaller than the epochs the file holds.
        """
        if self.resume and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(
                f"resume=True needs an int random_state to continue the same run, got "
                f"random_state={self.random_state!r}; pass e.g. random_state=0.")
        if data_description is not None:
            if not isinstance(data_description, dict):
                raise TypeError(
                    f"data_description must be a dict or None, got "
                    f"{type(data_description).__name__}; pass e.g. "
                    "{'datasets': [...], 'band': [1.0, 40.0]}.")
            try:
                data_description = json.loads(json.dumps(data_description))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"data_description must be JSON-serialisable (it is stored in the "
                    f"checkpoint), but {exc}; use str, int, float, bool, None, lists and "
                    "dicts with str keys.") from exc
        data = self._training_data(X)
        seed = torch_seed(self.random_state)
        module = self._make_module(seed)
        net = self._make_net(module, seed)
        net.initialize()
        done = 0
        resume_path = Path(self.checkpoint_dir) / RESUME_FILE if self.checkpoint_dir else None
        if self.resume and resume_path is not None and resume_path.exists():
            try:
                state = torch.load(resume_path, map_location="cpu", weights_only=True)
                done = _net.load_resume_state(net, state)
            except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as exc:
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                summary = " ".join(lines[:3]) + (f" ... ({len(lines) - 3} more lines)"
                                                 if len(lines) > 3 else "")
                raise ValueError(
                    f"The resume file {resume_path} does not fit this run ({summary}); it was "
                    "written with other parameters or is damaged. Pass the parameters of that "
                    "run, another checkpoint_dir, or resume=False to start over.") from exc
            self._warn_schedule_change(net, state, len(data), resume_path)
        remaining = max(0, self.max_epochs - done)
        start = time.perf_counter()
        if remaining:
            net.partial_fit(data, None, epochs=remaining)  # returns quietly on KeyboardInterrupt
        elapsed = time.perf_counter() - start
        processes = getattr(getattr(net, "accelerator", None), "num_processes", 1)
        trials_seen = sum(batch.get("train_batch_size", 0) for row in net.history[done:]
                          for batch in row["batches"])
        self.n_windows_seen_ = trials_seen * processes * self.n_windows
        self.windows_per_second_ = (self.n_windows_seen_ / elapsed if trials_seen
                                    else float("nan"))
        complete, n_rows = self._complete_epochs(net, done), len(net.history)
        self.interrupted_ = bool(remaining) and complete < self.max_epochs
        self.net_ = net
        self.data_description_ = data_description
        self.checkpoint_path_ = None
        if self.interrupted_:
            self._keep_complete_epochs(net, complete, resume_path)
        self.module_ = _net._unwrapped_module(net)
        self.module_.eval()
        self.config_ = self.module_.config
        self.history_ = _net.plain_values([{k: v for k, v in row.items() if k != "batches"}
                                           for row in net.history.to_list()])
        if self.checkpoint_dir is not None and self._is_main_process():
            if not self.interrupted_:
                self.checkpoint_path_ = self.save(Path(self.checkpoint_dir) / MODEL_FILE)
            elif complete:
                self.checkpoint_path_ = self.save(
                    Path(self.checkpoint_dir) / EPOCH_MODEL_FILE.format(epoch=complete))
        if self.interrupted_:
            self._warn_interrupted(complete, n_rows, resume_path)
        return self

    def _complete_epochs(self, net, done):
        """Epochs of ``net.history`` whose row is complete (in the resume file, if any)."""
        callbacks = dict(net.callbacks_)
        saved = getattr(callbacks.get("resume_checkpoint"), "epochs_saved_", None)
        if "resume_checkpoint" in callbacks:
            return done if saved is None else saved
        counted = callbacks["complete_epochs"].epochs_
        return done if counted is None else counted

    def _keep_complete_epochs(self, net, complete, resume_path):
        """After an interruption: the net back to its last complete epoch, where possible."""
        from skorch.history import History

        if resume_path is not None and complete and self._is_main_process():
            # The resume file holds the last complete epoch: weights, optimizer and history.
            # (Other processes of a distributed run do not read it: it may still be written.)
            _net.load_resume_state(net, resume_path)
        else:
            net.history_ = History(list(net.history)[:complete])

    def _warn_interrupted(self, complete, n_rows, resume_path):
        partial = (f"; epoch {complete + 1} was cut short and is not in history_"
                   if n_rows > complete else "")
        if resume_path is None:
            within = f" (within epoch {complete + 1})" if n_rows > complete else ""
            warnings.warn(
                f"Training was interrupted after epoch {complete} of {self.max_epochs}{partial}; "
                f"module_ holds the weights of the last training step{within}. Pass "
                "checkpoint_dir= to keep the last complete epoch and to be able to resume an "
                "interrupted run.", UserWarning, stacklevel=4)
            return
        if self.checkpoint_path_ is not None:
            holds = (f"; the estimator holds epoch {complete}, the last complete one, also "
                     f"written to {self.checkpoint_path_} ({MODEL_FILE} is written when the run "
                     "ends)")
        elif complete:
            holds = f"; the estimator holds epoch {complete}, the last complete one"
        else:
            holds = "; no epoch was complete, so no checkpoint was written"
        warnings.warn(
            f"Training was interrupted after epoch {complete} of {self.max_epochs}; fit again "
            f"with the same parameters and resume=True to continue from {resume_path}"
            f"{partial}{holds}.", UserWarning, stacklevel=4)

    def _steps_per_epoch(self, net, n_trials):
        """Training steps per epoch (per process), as the learning-rate schedule counts them."""
        n_train = len(_net.EveryKthSplit(self.valid_every)(range(n_trials))[0])
        world = getattr(getattr(net, "accelerator", None), "num_processes", 1)
        return max(1, math.ceil(n_train / (self.batch_size * world)))

    def _warn_schedule_change(self, net, state, n_trials, resume_path):
        """Warn when a resumed run's ``max_epochs`` changes its learning-rate schedule."""
        done, history = len(state["history"]), state["history"]
        if done > self.max_epochs:
            warnings.warn(
                f"The resume file {resume_path} holds {done} epochs, more than max_epochs="
                f"{self.max_epochs}: nothing is trained and the fit holds the run's {done} "
                f"epochs. Pass max_epochs={done} or more to train on, or resume=False to start "
                "over.", UserWarning, stacklevel=4)
            return
        trained_for = state.get("max_epochs")  # absent from files of older leaf-sk versions
        if trained_for is None or trained_for == self.max_epochs:
            return
        if done == self.max_epochs:  # nothing to train, but the run stops before its schedule ends
            warnings.warn(
                f"The resume file {resume_path} was written by a run of max_epochs="
                f"{trained_for}; with max_epochs={self.max_epochs} it ends at epoch {done}, "
                f"before its warm-up/cosine schedule ended. Pass max_epochs={trained_for} to "
                "finish that schedule.", UserWarning, stacklevel=4)
            return
        schedule = dict(net.callbacks_)["lr_schedule"]
        steps = self._steps_per_epoch(net, n_trials)
        new_lr = self.lr * schedule.factor(done * steps, steps * self.max_epochs, steps)
        if done < trained_for:
            own_lr = self.lr * schedule.factor(done * steps, steps * trained_for, steps)
            own = f" (the run's own schedule gives {own_lr:.3g})"
            fix = f"Pass max_epochs={trained_for} to keep the run's schedule."
        else:
            own = ""
            fix = (f"The run's schedule ended at epoch {trained_for}; to train on with a fresh "
                   "warm-up instead, start a new run from its weights (checkpoint=<its "
                   f"{MODEL_FILE}>, resume=False).")
        last_lr = history[-1].get("lr") if history else None
        if last_lr is None:
            change = f"the learning rate of epoch {done + 1} is {new_lr:.3g}"
        else:
            direction = "back up" if new_lr > last_lr else "down"
            change = (f"the learning rate goes from {last_lr:.3g} at epoch {done} {direction} to "
                      f"{new_lr:.3g} at epoch {done + 1}")
        warnings.warn(
            f"The resume file {resume_path} was written by a run of max_epochs={trained_for}; "
            f"continuing to max_epochs={self.max_epochs} recomputes the warm-up/cosine schedule "
            f"over {self.max_epochs} epochs: {change}{own}. {fix}", UserWarning, stacklevel=4)

    def _training_data(self, X):
        """``X`` on the template, ``(n, 65, n_windows * 100)``; every trial must give 2 windows."""
        elements = list(X) if isinstance(X, (list, tuple)) and len(X) else [X]
        arrays = []
        for index, element in enumerate(elements):
            data = prepare_unlabelled(
                element, ch_names=self.ch_names, sfreq=self.sfreq, units=self.units,
                segment_seconds=self.segment_seconds, n_windows=None)
            n_windows = data.shape[-1] // WINDOW_SAMPLES
            if n_windows < 2:
                which = f"X[{index}]" if len(elements) > 1 else "X"
                raise ValueError(
                    f"The trials of {which} are too short for STR pretraining: at 200 Hz they "
                    f"give {n_windows} whole 0.5-s window(s), and the causal objective L_T "
                    "predicts the next window, so at least 2 windows (trials of at least 1 s) "
                    "are needed. Pass longer trials (epoch with a wider tmin/tmax) or drop the "
                    "short ones.")
            arrays.append(pad_or_crop(data, self.n_windows * WINDOW_SAMPLES))
        return np.concatenate(arrays)

    def _is_main_process(self):
        accelerator = getattr(getattr(self, "net_", None), "accelerator", None)
        return accelerator is None or accelerator.is_main_process

    def loss(self, X):
        """Mean STR losses on ``X``: the module's objective in eval mode (no dropout).

        Any randomness of the objective (the removed band, the masked tokens) is drawn under
        a fixed seed in a forked RNG state, so repeated calls agree and the caller's global
        RNG is left untouched.

        Parameters
        ----------
        X : array, mne.Epochs, mne.io.Raw or list
            As in :meth:`fit`; every trial must give at least two 0.5-s windows.

        Returns
        -------
        dict
            ``L_S``, ``L_T`` and the losses of predicting zeros, ``zero_S``, ``zero_T``.
        """
        check_is_fitted(self, "module_")
        data = self._training_data(X)
        device = next(self.module_.parameters()).device
        totals = np.zeros(4)
        self.module_.eval()
        with torch.no_grad(), seeded(0):
            for start in range(0, len(data), self.batch_size):
                batch = torch.from_numpy(data[start:start + self.batch_size]).to(device)
                totals += self.module_(batch).cpu().numpy() * len(batch)
        return dict(zip(_net.STR_COMPONENTS, (totals / len(data)).tolist()))

    def save(self, path):
        """Write the Tower (with its reconstruction heads) as a leaf-sk checkpoint, atomically.

        Parameters
        ----------
        path : str or Path
            Target ``.safetensors`` file.

        Returns
        -------
        Path
        """
        check_is_fitted(self, "module_")
        from . import __version__

        provenance = {"trainer": "LeafPretrainer", "leaf_sk_version": __version__,
                      "params": {k: v for k, v in self.get_params().items()
                                 if isinstance(v, (str, int, float, bool, type(None)))},
                      "epochs": len(self.history_),
                      "interrupted": bool(getattr(self, "interrupted_", False))}
        data = getattr(self, "data_description_", None)
        if data is not None:
            provenance["data"] = data
        return save_checkpoint(path, self.module_, provenance=provenance, history=self.history_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.non_deterministic = not torch.backends.cudnn.deterministic
        return tags

