"""Private skorch pieces: the nets, the schedule, epoch seeding, loss bookkeeping, resume files."""

from __future__ import annotations

import logging
import math
import zlib

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.history import History
from torch.utils.data import Subset

from ._atomic import atomic_path
from ._rng import seeded

logger = logging.getLogger("leaf_sk")

STR_COMPONENTS = ("L_S", "L_T", "zero_S", "zero_T")


def epoch_seed(seed, epoch, prefix):
    """A 32-bit seed that depends only on the run's seed, the epoch index and train/valid."""
    return zlib.crc32(f"{seed}:{epoch}:{prefix}".encode())


class SeededEpochsMixin:
    """Run every epoch under its own seed, in a forked RNG state.

    Shuffling, masks, perturbations and dropout of epoch ``e`` then depend only on
    ``(seed, e)``: a run resumed from the checkpoint of epoch ``e - 1`` reaches the same
    weights as an uninterrupted one, and the caller's global RNG state is left untouched.
    """

    def __init__(self, *args, seed=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed

    def _process_tag(self):
        """Distinguishes the RNG streams of the processes of a distributed run ("" alone)."""
        return ""

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        epoch = len(self.history) - 1
        # A sampler with its own generator (Accelerate gives the shuffling sampler one, seeded
        # once from the global RNG when the loader is prepared) is reseeded per epoch too.
        # All processes must shuffle alike, so this seed ignores the process.
        generator = getattr(iterator, "synchronized_generator", None)
        if generator is None:
            generator = getattr(getattr(iterator, "sampler", None), "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_seed(self.seed, epoch, f"{prefix}:sampler"))
        with seeded(epoch_seed(self.seed, epoch, prefix + self._process_tag())):
            return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)


class ModuleComputedLoss:
    """Criterion for modules that compute their losses in ``forward``.

    Deliberately not an ``nn.Module``: Accelerate would wrap a parameter-free module in DDP,
    which fails under several processes.
    """

    def __call__(self, y_pred, y_true=None):
        return y_pred[0] + y_pred[1]


class STRNet(SeededEpochsMixin, NeuralNet):
    """skorch net for :class:`~leaf_sk.nn.STRPretrainer`; the loss is ``L_S + L_T``."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        self._record_components(y_pred, "train" if training else "valid")
        if y_pred.dim() == 2:
            y_pred = y_pred.mean(dim=0)
        return self.criterion_(y_pred)

    def _record_components(self, y_pred, prefix):
        values = y_pred.detach().float().cpu().numpy()
        if values.ndim == 2:  # gathered across processes: one row per process
            values = values.mean(axis=0)
        for name, value in zip(STR_COMPONENTS, values):
            self.history.record_batch(f"{prefix}_{name}", float(value))


def accelerated(net_cls):
    """``net_cls`` with skorch's ``AccelerateMixin`` (Hugging Face Accelerate) mixed in."""
    from skorch.dataset import unpack_data
    from skorch.hf import AccelerateMixin

    class AcceleratedNet(AccelerateMixin, net_cls):
        def evaluation_step(self, batch, training=False):
            # The STR module returns 4 scalars per process; gather them as one row each.
            output = NeuralNet.evaluation_step(self, batch, training=training)
            return self.accelerator.gather_for_metrics(output.unsqueeze(0))

        def validation_step(self, batch, **fit_params):
            # skorch validates through ``infer``, not ``evaluation_step``: without this, each
            # process would record the losses of its own shard only. The last batch's rows
            # of padding processes are dropped by ``gather_for_metrics``.
            self._set_training(False)
            Xi, yi = unpack_data(batch)
            with torch.no_grad():
                y_pred = self.infer(Xi, **fit_params)
                y_pred = self.accelerator.gather_for_metrics(y_pred.unsqueeze(0))
                loss = self.get_loss(y_pred, yi, X=Xi, training=False)
            return {"loss": loss, "y_pred": y_pred}

        def _process_tag(self):
            # Masks, removed bands and dropout differ between processes, as in one big batch.
            n = self.accelerator.num_processes
            return f"@{self.accelerator.process_index}/{n}" if n > 1 else ""

        # Training losses are averaged over the processes for the history only (the gradient
        # is DDP's business), so that every process records the same, whole-batch values.
        def train_step_single(self, batch, **fit_params):
            step = super().train_step_single(batch, **fit_params)
            if self.accelerator.num_processes > 1:
                step["loss"] = self.accelerator.gather(step["loss"].detach().reshape(1)).mean()
            return step

        def _record_components(self, y_pred, prefix):
            if prefix == "train" and self.accelerator.num_processes > 1:
                y_pred = self.accelerator.gather(y_pred.detach().unsqueeze(0))
            super()._record_components(y_pred, prefix)

    AcceleratedNet.__name__ = f"Accelerated{net_cls.__name__}"
    return AcceleratedNet


class ClassBalancedSampler(torch.utils.data.Sampler):
    """Indices whose consecutive runs hold every class about equally often.

    Each epoch draws ``len(targets)`` indices: classes take turns (in an order shuffled every
    turn), and each class walks through its own shuffled trials, reshuffled when used up. A
    batch of ``b`` consecutive indices then holds ``b / n_classes`` trials of each class (±1),
    whatever the class frequencies, so a minibatch's class imbalance cannot push the
    output towards one class. Draws use torch's global RNG (seeded per epoch by
    :class:`SeededEpochsMixin`).

    Parameters
    ----------
    targets : array-like of int, shape (n_samples,)
        Class index of every sample of the dataset the loader reads.
    """

    def __init__(self, targets):
        self.targets = np.asarray(targets)

    def __len__(self):
        return len(self.targets)

    def __iter__(self):
        pools = [torch.from_numpy(np.flatnonzero(self.targets == c)) for c in np.unique(self.targets)]
        queues = [pool[torch.randperm(len(pool))].tolist() for pool in pools]
        drawn = []
        while len(drawn) < len(self.targets):
            for c in torch.randperm(len(pools)).tolist():
                if not queues[c]:
                    queues[c] = pools[c][torch.randperm(len(pools[c]))].tolist()
                drawn.append(queues[c].pop())
        return iter(drawn[: len(self.targets)])


def dataset_targets(dataset):
    """The ``y`` of a skorch ``Dataset`` or of a ``Subset`` of one, as an array."""
    if isinstance(dataset, Subset):
        return np.asarray(dataset_targets(dataset.dataset))[dataset.indices]
    return np.asarray(dataset.y)


class EveryKthSplit:
    """Validation split: every ``k``-th sample (the release's rule), deterministic.

    Parameters
    ----------
    k : int
        One sample in ``k`` goes to validation; ``k = 0`` means no validation set.
    """

    def __init__(self, k=10):
        self.k = k

    def __call__(self, dataset, y=None, **fit_params):
        n = len(dataset)
        if not self.k or n < 2 * self.k:
            return dataset, None
        idx = np.arange(n)
        is_valid = idx % self.k == self.k - 1
        return Subset(dataset, idx[~is_valid]), Subset(dataset, idx[is_valid])


class EpochMeans(Callback):
    """Record the batch-size-weighted epoch mean of per-batch values (e.g. ``train_L_S``)."""

    def __init__(self, names=STR_COMPONENTS):
        self.names = names

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        for prefix in ("train", "valid"):
            sizes = [b.get(f"{prefix}_batch_size") for b in row["batches"]]
            for name in self.names:
                key = f"{prefix}_{name}"
                values = [b[key] for b in row["batches"] if key in b]
                if values:
                    weights = [s for s, b in zip(sizes, row["batches"]) if key in b]
                    net.history.record(key, float(np.average(values, weights=weights)))


class WarmupCosineLR(Callback):
    """Per-step learning rate: linear warm-up 0 to 1, then cosine from 1 to ``final_ratio``.

    The factor multiplies each parameter group's ``initial_lr``. The step count is derived
    from the epoch index, so a resumed run continues on the same curve.

    Parameters
    ----------
    warmup_epochs : float
        Length of the warm-up, in epochs.
    final_ratio : float
        Factor reached at the last step.
    """

    def __init__(self, warmup_epochs=1.0, final_ratio=0.1):
        self.warmup_epochs = warmup_epochs
        self.final_ratio = final_ratio

    def factor(self, step, total_steps, steps_per_epoch):
        warmup = max(1, int(round(self.warmup_epochs * steps_per_epoch)))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def on_train_begin(self, net, **kwargs):
        for group in net.optimizer_.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        world = getattr(getattr(net, "accelerator", None), "num_processes", 1)
        self.steps_per_epoch_ = max(1, math.ceil(len(dataset_train) / (net.batch_size * world)))
        self.total_steps_ = self.steps_per_epoch_ * max(net.max_epochs, len(net.history))
        self.step_ = (len(net.history) - 1) * self.steps_per_epoch_

    def on_batch_begin(self, net, training=False, **kwargs):
        if not training:
            return
        f = self.factor(self.step_, self.total_steps_, self.steps_per_epoch_)
        for group in net.optimizer_.param_groups:
            group["lr"] = group["initial_lr"] * f
        self.step_ += 1

    def on_epoch_end(self, net, **kwargs):
        net.history.record("lr", net.optimizer_.param_groups[-1]["lr"])


def _unwrapped_module(net):
    module = net.module_
    accelerator = getattr(net, "accelerator", None)
    if accelerator is not None:
        module = accelerator.unwrap_model(module)
    return getattr(module, "module", module) if isinstance(
        module, torch.nn.parallel.DistributedDataParallel) else module


class ResumeCheckpoint(Callback):
    """After every epoch, write module, optimizer and history to one file, atomically.

    The file also records the run's ``max_epochs`` (the length of its learning-rate
    schedule), so that a run continued with another ``max_epochs`` can say how its schedule
    changes.

    Parameters
    ----------
    path : str or Path
        The resume file (a PyTorch file of tensors and plain values, read with
        ``weights_only=True``).

    Attributes
    ----------
    epochs_saved_ : int or None
        Epochs of the history in the file this callback last wrote during the current fit
        (on the processes of a distributed run that do not write, the epochs the main
        process writes); None before the first write. An interrupted run's last complete
        epoch is the one in the file.
    """

    def __init__(self, path):
        self.path = path

    def initialize(self):
        self.epochs_saved_ = None
        return self

    def on_epoch_end(self, net, **kwargs):
        accelerator = getattr(net, "accelerator", None)
        if accelerator is not None:
            accelerator.wait_for_everyone()
            if not accelerator.is_main_process:
                self.epochs_saved_ = len(net.history)
                return
        state = {
            "module": _unwrapped_module(net).state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            # numpy scalars (skorch records np.float64 losses) are not allowed by weights_only
            "history": plain_values(net.history.to_list()),
            "max_epochs": int(net.max_epochs),
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self.epochs_saved_ = len(net.history)


def plain_values(obj):
    """``obj`` with numpy and 0-d torch scalars turned into Python ones, recursively."""
    if isinstance(obj, dict):
        return {key: plain_values(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_values(value) for value in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if torch.is_tensor(obj) and obj.dim() == 0:
        return obj.item()
    return obj


def load_resume_state(net, path):
    """Restore a net (initialized) from a :class:`ResumeCheckpoint` file; returns epochs done.

    Parameters
    ----------
    net : skorch.NeuralNet
        An initialized net of the same module and optimizer.
    path : str, Path or dict
        The resume file, or its content (``torch.load(path, weights_only=True)``).

    Returns
    -------
    int
        The number of epochs in the restored history.
    """
    state = (path if isinstance(path, dict)
             else torch.load(path, map_location="cpu", weights_only=True))
    _unwrapped_module(net).load_state_dict(state["module"])
    net.optimizer_.load_state_dict(state["optimizer"])
    net.history_ = History(state["history"])
    # skorch's scoring callbacks keep the best score seen; recompute it from the history so
    # that the ``*_best`` flags of the resumed epochs are those of an uninterrupted run.
    for _, callback in net.callbacks_:
        name = getattr(callback, "name", None)
        if hasattr(callback, "best_score_") and isinstance(name, str):
            values = [row[name] for row in state["history"] if name in row]
            if values:
                callback.best_score_ = (min(values) if getattr(callback, "lower_is_better", True)
                                        else max(values))
    return len(state["history"])


class LogEpoch(Callback):
    """Log one line per epoch to the ``leaf_sk`` logger and, with ``verbose``, a tqdm bar line."""

    def __init__(self, keys):
        self.keys = keys

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        parts = [f"epoch {row['epoch']}"] + [f"{k} {row[k]:.4f}" for k in self.keys if k in row]
        line = "  ".join(parts)
        logger.info(line)
        if net.verbose:
            from tqdm.auto import tqdm

            tqdm.write(line)
