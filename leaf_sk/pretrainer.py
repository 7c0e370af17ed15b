"""STR pretraining of the LEAF Tower as a scikit-learn style estimator."""

from __future__ import annotations

import os
import pickle
import time
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from . import _net
from ._base import Interval, StrOptions, _fit_context, check_torch_device, torch_seed
from ._input import pad_or_crop, prepare_unlabelled
from ._rng import seeded
from .checkpoint import load_checkpoint, save_checkpoint
from .montage import WINDOW_SAMPLES
from .nn import SIZES, LeafConfig, STRPretrainer

RESUME_FILE = "resume.pt"
MODEL_FILE = "tower.safetensors"


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
        Folder for the per-epoch resume file and the final Tower checkpoint.
    resume : bool
        Continue from ``checkpoint_dir``'s resume file when one exists (off by default, so that
        a refit never silently returns an earlier run). Needs an int ``random_state``: every
        epoch runs under a seed drawn from it, which is what makes a resumed run reach the
        same weights as an uninterrupted one.
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
        Per epoch: ``train_L_S``, ``train_L_T``, ``train_zero_S``, ``train_zero_T`` (the loss of
        predicting zeros), the same with ``valid_``, ``lr`` and ``dur`` (seconds).
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
                     ("lr_schedule", _net.WarmupCosineLR(self.warmup_epochs, self.final_lr_ratio))]
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
    def fit(self, X, y=None):
        """Pretrain on unlabelled EEG.

        Parameters
        ----------
        X : array of shape (n_trials, n_channels, n_times), mne.Epochs, mne.io.Raw or list
            Unlabelled EEG. Arrays need ``ch_names`` and ``sfreq``; continuous recordings are
            cut into ``segment_seconds`` segments. A list may mix Raw and Epochs of different
            montages and rates. Every trial must give two 0.5-s windows at 200 Hz (1 s).
        y : None
            Ignored.

        Returns
        -------
        self

        Warns
        -----
        UserWarning
            When training stops early (a KeyboardInterrupt, which skorch catches): the fit
            then holds the epochs done, and a fit with ``resume=True`` continues the run.
        """
        if self.resume and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(
                f"resume=True needs an int random_state to continue the same run, got "
                f"random_state={self.random_state!r}; pass e.g. random_state=0.")
        data = self._training_data(X)
        seed = torch_seed(self.random_state)
        module = self._make_module(seed)
        net = self._make_net(module, seed)
        net.initialize()
        done = 0
        resume_path = Path(self.checkpoint_dir) / RESUME_FILE if self.checkpoint_dir else None
        if self.resume and resume_path is not None and resume_path.exists():
            try:
                done = _net.load_resume_state(net, resume_path)
            except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as exc:
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                summary = " ".join(lines[:3]) + (f" ... ({len(lines) - 3} more lines)"
                                                 if len(lines) > 3 else "")
                raise ValueError(
                    f"The resume file {resume_path} does not fit this run ({summary}); it was "
                    "written with other parameters or is damaged. Pass the parameters of that "
                    "run, another checkpoint_dir, or resume=False to start over.") from exc
        remaining = max(0, self.max_epochs - done)
        start = time.perf_counter()
        if remaining:
            net.partial_fit(data, None, epochs=remaining)
        elapsed = time.perf_counter() - start
        n_epochs_run = len(net.history) - done
        if n_epochs_run < remaining:  # skorch ends training quietly on KeyboardInterrupt
            where = (f"; fit again with the same parameters and resume=True to continue from "
                     f"{resume_path}" if resume_path is not None else
                     "; pass checkpoint_dir= to be able to resume an interrupted run")
            warnings.warn(
                f"Training was interrupted after epoch {len(net.history)} of {self.max_epochs}"
                + where + ".", UserWarning, stacklevel=2)
        self.net_ = net
        self.module_ = _net._unwrapped_module(net)
        self.module_.eval()
        self.config_ = self.module_.config
        self.history_ = _net.plain_values([{k: v for k, v in row.items() if k != "batches"}
                                           for row in net.history.to_list()])
        processes = getattr(getattr(net, "accelerator", None), "num_processes", 1)
        trials_seen = sum(batch.get("train_batch_size", 0) for row in net.history[done:]
                          for batch in row["batches"])
        self.n_windows_seen_ = trials_seen * processes * self.n_windows
        self.windows_per_second_ = (self.n_windows_seen_ / elapsed if n_epochs_run
                                    else float("nan"))
        if self.checkpoint_dir is not None and self._is_main_process():
            self.save(Path(self.checkpoint_dir) / MODEL_FILE)
        return self

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
                      "epochs": len(self.history_)}
        return save_checkpoint(path, self.module_, provenance=provenance, history=self.history_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.non_deterministic = not torch.backends.cudnn.deterministic
        return tags

