"""LeafInstructionTuner: instruction tuning of one LEAF model on several labelled datasets."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import time
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from . import _net
from ._atomic import atomic_path
from ._base import (TRAINING_CONSTRAINTS, Interval, StrOptions, _fit_context, build_model,
                    check_torch_device, torch_seed)
from ._input import make_channel_map, read_trials, to_template
from .alignment import ALIGNMENTS, align_trials
from .checkpoint import save_checkpoint
from .instructions import instruction_families, label_prototypes, sample_training_instructions
from ._rng import seeded
from .montage import TEMPLATE_CH_NAMES, _mirror_name
from .nn import SIZES, LeafEnsemble, LeafModel, phase_randomized
from .nn.spectral import OCCIPITAL_SITES
from .text import DEFAULT_TEXT_ENCODER, get_text_encoder

RESUME_FILE = "tune-resume.pt"
BRANCH_RESUME_FILE = "tune-resume-branch{}.pt"
MODEL_FILE = "tuned.safetensors"
_MIRROR = [TEMPLATE_CH_NAMES.index(_mirror_name(name)) for name in TEMPLATE_CH_NAMES]


@dataclasses.dataclass
class TuningTask:
    """One labelled dataset for :class:`LeafInstructionTuner`.

    Parameters
    ----------
    X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs
    y : array-like of shape (n_trials,)
    family : str
        Task family of the instruction pool (:func:`~leaf_sk.instructions.instruction_families`,
        e.g. ``"motor_imagery"``, ``"ssvep"``).
    label_texts : dict
        ``{label: text}`` for every class of ``y``. Equal texts across tasks are one class of the
        global label space.
    ch_names, sfreq, units
        As for the estimators (needed for arrays).
    groups : array-like of shape (n_trials,), optional
        Subject (or session) of each trial, for the tuner's ``alignment``.
    mirror_labels : dict, optional
        ``{label: label}`` under a left-right mirror of the montage (e.g. the two hands swap);
        given, half of each batch of this task is mirrored across the midline.
    name : str, optional
        Shown in the history; default ``"task<i>"``.
    """

    X: object
    y: object
    family: str
    label_texts: dict
    ch_names: list | None = None
    sfreq: float | None = None
    units: str | None = None
    groups: object = None
    mirror_labels: dict | None = None
    name: str | None = None


class LeafInstructionTuner(BaseEstimator):
    """Instruction-tune one LEAF model on several labelled datasets at once (spec sections 6-7).

    All label texts form one global label space; each trial's embedding (Tower, then the
    Q-Former conditioned on a sampled instruction of its task's family) is matched by scaled
    cosine to every label text with cross-entropy. Instructions as in the release: a
    default-pool phrasing with probability ``p_default``, the level-2 blend with the task's
    label texts with probability ``p_level2``. Every step takes one class-balanced batch of each
    task (their channel sets and rates may differ) and runs them as one batch, cropped to the
    shortest trial of the step (``batch_lengths="shortest"``, as the release does). AdamW with
    the tokenizer on its own learning rate, linear warm-up then cosine to a tenth.

    Parameters
    ----------
    checkpoint : str or None
        Starting weights: a packaged name, a leaf-sk or release file, or None (default) for
        random weights of ``size``. On the inner split of our training subjects, random weights
        learned faster than the STR-pretrained ``"leaf-small"`` (benchmarks/RESULTS.md).
    size : {"small", "base", "tiny"}
        Network size when ``checkpoint`` is None.
    config : dict or None
        Overrides of :class:`~leaf_sk.nn.LeafConfig` for random weights (e.g.
        ``{"temporal_kernel": 100}``); ignored with a ``checkpoint``.
    power_memory : bool
        Give the Q-Former band-power tokens (:class:`~leaf_sk.nn.LeafConfig`'s ``power_memory``,
        leaf-sk's option, not the paper's); a starting checkpoint without them gets them freshly
        initialised.
    spectral_memory : bool
        Give the Q-Former per-window log power spectra of learned spatial filters of the
        occipital sites (:class:`~leaf_sk.nn.LeafConfig`'s ``spectral_memory`` with
        ``spectral_sites`` :data:`~leaf_sk.nn.spectral.OCCIPITAL_SITES` unless ``config`` names
        others; leaf-sk's option); added freshly initialised to a starting checkpoint without
        them. On the inner split it lifted Kalunga2016's direct inference from 0.35 to 0.52
        (two seeds; benchmarks/RESULTS.md).
    alignment : {"euclidean"} or None
        Re-centre each task's trials per group (``TuningTask.groups``) before the network.
    text_encoder : str
    max_epochs : int
        An epoch is as many steps as the largest task has batches.
    lr, lr_tokenizer, weight_decay, warmup_epochs : float
    batch_size : int
        Trials per task per step.
    logit_scale : float
    softmax_over : {"task", "all"}
        ``"all"``: each trial's cross-entropy runs over every label text of every task (the
        paper's global prototypes); ``"task"``: over its own task's label texts only.
        Across tasks, ``"all"`` can be lowered by naming the task alone (the instruction's
        level-2 blend carries the task's label texts), and on PhysioNet with Kalunga2016 that is
        what it learned: loss ln(2) and ln(3), chance within each task (benchmarks/RESULTS.md).
    p_default, p_level2 : float
    crop_windows : int
        Random crops this many 0.5-s windows shorter (for trials of more windows than that + 1).
    crop_step : int or dict
        Granularity of the crops' start, in samples at 200 Hz: 100 (default) starts them on
        the 0.5-s window grid; smaller steps shift the windows themselves (1: any sample). A
        dict gives tasks their own step by ``TuningTask.name`` (e.g. ``{"Kalunga2016": 1}``:
        a steady-state response shifted within the window, a motor imagery task kept on the
        grid); tasks it does not name keep 100.
    ft_surrogate : float
        Probability that a training trial is replaced by its Fourier-transform surrogate
        (:func:`~leaf_sk.nn.phase_randomized`: every frequency's phase shifted at random, the
        same on every channel, so band power and spatial covariance per frequency stay and the
        time course does not). 0 (default) leaves the trials as they are. leaf-sk's option,
        not the paper's.
    batch_lengths : {"shortest", "own"}
        ``"shortest"`` (default, as the release): each step's batches of all tasks are cropped
        to the shortest of them (1.5 s for PhysioNet with Kalunga2016's 2-s trials cropped by a
        window), so the positional embeddings of longer trials' later windows are never
        trained, yet whole trials use them at inference. ``"own"``: each task's batch keeps its
        own length; their windows go through the tokenizer (and its BatchNorm) together, then
        each batch through the Transformers and the Q-Former. leaf-sk's option.
    positions : {"start", "random", "crop"}
        First positional index (Tower and Q-Former) of each training batch: ``"start"``
        (default, as the release) 0; ``"random"`` one random index per step, 0 to
        ``max_windows`` minus the longest batch's windows; ``"crop"`` the window where the
        batch's crop starts in its trials, so that each window keeps the position it has in a
        whole trial (with ``batch_lengths="own"``, every position of whole trials is trained).
        leaf-sk's option.
    n_branches : int
        1 (default) trains one run. More: after ``branch_epoch`` epochs the run splits into
        this many branches that continue from the same weights and optimizer state with their
        own batches and dropout draws (the first branch continues the single run's), and the
        tuned model is the average of the branches' weights, BatchNorm statistics included (a
        model soup, Wortsman et al. 2022). It costs ``n_branches`` times the epochs after
        ``branch_epoch``. leaf-sk's option, not the paper's; not with ``distributed``.
    branch_epoch : int
        Epochs trained before the run branches (with ``n_branches > 1``; below
        ``max_epochs``).
    checkpoint_dir : str or None
        Folder for ``tune-resume.pt`` (with branches, also ``tune-resume-branch<k>.pt``),
        written after every epoch; a later ``fit`` with the same folder continues from it.
    distributed : bool
        Train under Hugging Face Accelerate (launch with ``torchrun`` or ``accelerate launch``;
        needs the ``distributed`` extra): each process draws its own batches, gradients are
        averaged, an epoch's steps are shared among the processes, and only the first process
        writes the resume file.
    device : str
    verbose : int
        1 shows a progress bar of each epoch's steps and prints one line per epoch.
    random_state : int or None

    Attributes
    ----------
    model_ : LeafModel
    label_space_ : list of str
        The global label texts, in prototype order.
    history_ : list of dict
        Per epoch: loss and training accuracy (eval mode, level 2) of each task; with
        branches, the epochs after ``branch_epoch`` once per branch, with its ``branch``.
    """

    _parameter_constraints = {
        **TRAINING_CONSTRAINTS,
        "checkpoint": [str, os.PathLike, None],
        "size": [StrOptions(set(SIZES))],
        "config": [dict, None],
        "power_memory": ["boolean"],
        "spectral_memory": ["boolean"],
        "alignment": [StrOptions(set(ALIGNMENTS)), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "softmax_over": [StrOptions({"task", "all"})],
        "p_default": [Interval(Real, 0, 1, closed="both")],
        "p_level2": [Interval(Real, 0, 1, closed="both")],
        "crop_windows": [Interval(Integral, 0, None, closed="left")],
        "crop_step": [Interval(Integral, 1, 100, closed="both"), dict],
        "ft_surrogate": [Interval(Real, 0, 1, closed="both")],
        "batch_lengths": [StrOptions({"shortest", "own"})],
        "positions": [StrOptions({"start", "random", "crop"})],
        "n_branches": [Interval(Integral, 1, None, closed="left")],
        "branch_epoch": [Interval(Integral, 1, None, closed="left")],
        "checkpoint_dir": [str, None],
        "distributed": ["boolean"],
        "device": [str],
        "verbose": [Interval(Integral, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, checkpoint=None, *, size="small", config=None, power_memory=True,
                 spectral_memory=True, alignment="euclidean", text_encoder=DEFAULT_TEXT_ENCODER,
                 max_epochs=8, lr=2e-4, lr_tokenizer=1e-3, weight_decay=1e-3, warmup_epochs=1.0,
                 batch_size=32, logit_scale=10.0, softmax_over="task", p_default=0.1, p_level2=0.9,
                 crop_windows=1, crop_step=100, ft_surrogate=0.0, batch_lengths="shortest",
                 positions="start", n_branches=1, branch_epoch=2, checkpoint_dir=None,
                 distributed=False, device="auto", verbose=1, random_state=0):
        self.checkpoint = checkpoint
        self.size = size
        self.config = config
        self.power_memory = power_memory
        self.spectral_memory = spectral_memory
        self.alignment = alignment
        self.text_encoder = text_encoder
        self.max_epochs = max_epochs
        self.lr = lr
        self.lr_tokenizer = lr_tokenizer
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.logit_scale = logit_scale
        self.softmax_over = softmax_over
        self.p_default = p_default
        self.p_level2 = p_level2
        self.crop_windows = crop_windows
        self.crop_step = crop_step
        self.ft_surrogate = ft_surrogate
        self.batch_lengths = batch_lengths
        self.positions = positions
        self.n_branches = n_branches
        self.branch_epoch = branch_epoch
        self.checkpoint_dir = checkpoint_dir
        self.distributed = distributed
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    # --- data -------------------------------------------------------------------------------

    def _prepare(self, tasks):
        """Validated tasks as template tensors with global targets; sets ``label_space_``."""
        if isinstance(tasks, TuningTask) or not isinstance(tasks, (list, tuple)) or not tasks:
            raise TypeError("fit takes a non-empty list of TuningTask (one per labelled dataset).")
        families = instruction_families()
        prepared, space, used_sites = [], [], []
        for index, task in enumerate(tasks):
            if not isinstance(task, TuningTask):
                task = TuningTask(**task) if isinstance(task, dict) else task
            if not isinstance(task, TuningTask):
                raise TypeError(f"task {index} is a {type(task).__name__}; pass TuningTask objects "
                                "(or dicts of their fields).")
            name = task.name or f"task{index}"
            family = str(task.family).strip().lower().replace("-", "_").replace(" ", "_")
            if family not in families:
                raise ValueError(
                    f"{name}: unknown task family {task.family!r}; known families are {families}. "
                    "Pick one, or add a family to leaf_sk/data/instructions.json.")
            y = np.asarray(task.y)
            classes = np.unique(y)
            texts = {str(k): v for k, v in dict(task.label_texts or {}).items()}
            missing = [str(c) for c in classes if str(c) not in texts]
            if missing:
                raise ValueError(
                    f"{name}: label(s) {missing} of y have no text in label_texts (keys "
                    f"{list(texts)}); give every class words, e.g. label_texts={{{missing[0]!r}: ...}}.")
            trials = read_trials(task.X, ch_names=task.ch_names, sfreq=task.sfreq, units=task.units)
            if len(trials.data) != len(y):
                raise ValueError(f"{name}: X has {len(trials.data)} trials but y has {len(y)} labels.")
            if self.alignment == "euclidean":
                trials = align_trials(trials, task.groups)
            channel_map = make_channel_map(trials.ch_names)
            used_sites.append((name, set(TEMPLATE_CH_NAMES) - set(channel_map.interpolated)))
            data = to_template(trials, channel_map)
            for c in classes:
                if texts[str(c)] not in space:
                    space.append(texts[str(c)])
            targets = np.asarray([space.index(texts[str(label)]) for label in y], dtype=np.int64)
            mirror = None
            if task.mirror_labels:
                swap = {str(k): str(v) for k, v in task.mirror_labels.items()}
                mirror = {space.index(texts[str(c)]): space.index(texts[swap.get(str(c), str(c))])
                          for c in classes}
            prepared.append(dict(name=name, family=family, data=torch.from_numpy(data),
                                 targets=torch.from_numpy(targets), mirror=mirror,
                                 classes=torch.from_numpy(np.unique(targets)),
                                 texts=[texts[str(c)] for c in classes]))
        _check_common_channels(used_sites)
        steps = self._crop_steps([task["name"] for task in prepared])
        for task, step in zip(prepared, steps):
            task["crop_step"] = step
        self.label_space_ = space
        return prepared

    def _crop_steps(self, names):
        """Each task's crop step; refuses a ``crop_step`` dict that names no task of the run
        or holds a bad step."""
        if not isinstance(self.crop_step, dict):
            return [self.crop_step] * len(names)
        unknown = [key for key in self.crop_step if key not in names]
        if unknown:
            raise ValueError(f"crop_step names {unknown}, which are not tasks of this run "
                             f"(tasks: {names}); key it by TuningTask.name.")
        bad = {key: step for key, step in self.crop_step.items()
               if isinstance(step, bool) or not isinstance(step, Integral) or not 1 <= step <= 100}
        if bad:
            raise ValueError(f"crop_step {bad}: each step must be an integer from 1 to 100 "
                             "samples at 200 Hz.")
        return [self.crop_step.get(name, 100) for name in names]

    # --- model and training -----------------------------------------------------------------

    def _build(self, encoder, seed):
        overrides = dict(self.config or {})
        # Applied with the memories below: without them the Q-Former would have nothing to read.
        tower_memory = overrides.pop("tower_memory", None)
        model, info = build_model(self.checkpoint, self.size, encoder.dim, seed,
                                  config=overrides or None)
        if isinstance(model, LeafEnsemble):
            raise ValueError(
                f"checkpoint {self.checkpoint!r} is an ensemble of {len(model.members)} models; "
                "tuning starts from one model: pass one of its member files, or None.")
        added = {name: True for name in ("power_memory", "spectral_memory")
                 if getattr(self, name) and not getattr(model.config, name)}
        if "spectral_memory" in added and "spectral_sites" not in overrides:
            added["spectral_sites"] = list(OCCIPITAL_SITES)
        if tower_memory is not None and tower_memory != model.config.tower_memory:
            added["tower_memory"] = tower_memory
        if added:
            with seeded(seed):
                bigger = LeafModel(model.config.replace(**added))
            missing, unexpected = bigger.load_state_dict(model.state_dict(), strict=False)
            assert not unexpected and all(key.startswith(("qformer.power_embed", "spectral.",
                                                          "qformer.spectral_embed"))
                                          for key in missing)
            model = bigger
        return model, info

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, tasks, y=None):
        """Tune on every task; resumes from ``checkpoint_dir`` when it holds an unfinished run.

        Parameters
        ----------
        tasks : list of TuningTask
        y : None
            Ignored (labels are in the tasks).

        Returns
        -------
        self
        """
        branched = self.n_branches > 1
        if branched and self.branch_epoch >= self.max_epochs:
            raise ValueError(f"branch_epoch={self.branch_epoch} leaves no epoch to branch: it must "
                             f"be below max_epochs={self.max_epochs}.")
        if branched and self.distributed:
            raise ValueError("n_branches > 1 does not run with distributed=True; train the "
                             "branches in one process, or use n_branches=1.")
        prepared = self._prepare(tasks)
        device = check_torch_device(self.device)
        accelerator = self._accelerator(device)
        rank, world = ((accelerator.process_index, accelerator.num_processes)
                       if accelerator is not None else (0, 1))
        encoder = get_text_encoder(self.text_encoder)
        seed = torch_seed(self.random_state)
        model, self.start_info_ = self._build(encoder, seed)
        model.to(device)
        prototypes = torch.from_numpy(label_prototypes(encoder, self.label_space_)).to(device)
        tokenizer_params = list(model.tower.tokenizer.parameters())
        ids = {id(p) for p in tokenizer_params}
        optimizer = torch.optim.AdamW(
            [{"params": tokenizer_params, "lr": self.lr_tokenizer},
             {"params": [p for p in model.parameters() if id(p) not in ids], "lr": self.lr}],
            weight_decay=self.weight_decay)
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        if accelerator is not None:
            model, optimizer = accelerator.prepare(model, optimizer)
        largest = max(len(t["targets"]) for t in prepared)
        steps_per_epoch = max(1, largest // (self.batch_size * world))
        # The first process draws what a single-process run draws; the others their own.
        rng = np.random.default_rng(seed if rank == 0 else [seed, rank])
        resume = Path(self.checkpoint_dir) / RESUME_FILE if self.checkpoint_dir else None
        # Dropout draws from torch's global generator: seeded here, restored on exit, saved and
        # reloaded with the resume file, so that a resumed run repeats the uninterrupted one.
        with seeded(seed + rank):
            self.history_ = []
            run = (model, prepared, encoder, prototypes, optimizer, base_lrs, steps_per_epoch)
            self._train(*run, rng, resume, device, accelerator,
                        last_epoch=self.branch_epoch if branched else self.max_epochs)
            if branched:
                self._train_branches(run, rng, seed, device)
        if accelerator is not None:
            model = accelerator.unwrap_model(model)
        self.model_ = model.eval()
        self.tasks_ = [{"name": t["name"], "family": t["family"], "label_texts": t["texts"],
                        "n_trials": int(len(t["targets"]))} for t in prepared]
        if rank == 0:
            self._warn_if_eval_mode_misses_what_training_fitted(prepared)
        return self

    def _warn_if_eval_mode_misses_what_training_fitted(self, prepared):
        """Warn when a task's training loss fell well below chance's but the model, in eval
        mode on whole trials, classifies its own training trials little better than chance."""
        last = self.history_[-1]
        for task in prepared:
            n_classes = len(task["texts"])
            chance = 1.0 / n_classes
            loss, accuracy = last[f"{task['name']}_loss"], last[f"{task['name']}_train_acc"]
            if loss < 0.5 * np.log(n_classes) and accuracy < (1.0 + chance) / 2:
                warnings.warn(
                    f"LeafInstructionTuner: the training loss of task {task['name']!r} fell to "
                    f"{loss:.3f} (chance: {np.log(n_classes):.3f}), yet in eval mode on whole "
                    f"trials the tuned model classifies {accuracy:.1%} of its own training "
                    f"trials (chance {chance:.1%}). What it fitted on the training crops does not "
                    "carry to whole trials: with batch_lengths='shortest', batches are cropped "
                    "to the shortest task's trials, and the positions of longer trials' later "
                    "windows stay untrained. Train with batch_lengths='own', positions='crop', "
                    "or another random_state, and check history_.", UserWarning, stacklevel=3)

    def _accelerator(self, device):
        """An Accelerate ``Accelerator`` when ``distributed``, else None."""
        if not self.distributed:
            return None
        try:
            from accelerate import Accelerator, DistributedDataParallelKwargs
        except ImportError as exc:
            raise ImportError("distributed=True needs Hugging Face Accelerate: "
                              "pip install 'leaf-sk[distributed]'.") from exc
        # The Tower's reconstruction heads take no part in tuning: DDP must be told. Several
        # CPU processes (gloo) need ``cpu=True``; without it torchrun on a machine without
        # GPU starts independent single-process runs.
        return Accelerator(cpu=device == "cpu", kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True)])

    def _train_branches(self, run, rng, seed, device):
        """Train ``n_branches`` continuations of the trunk; the model gets their mean weights."""
        model, _prepared, _encoder, _prototypes, optimizer, *_ = run
        trunk = {"model": copy.deepcopy(model.state_dict()),
                 "optimizer": copy.deepcopy(optimizer.state_dict()),
                 "random_states": (rng.bit_generator.state, torch.get_rng_state())}
        # A branch file continues only the trunk it branched from (not one trained again).
        digest = hashlib.sha256()
        for value in trunk["model"].values():
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        fingerprint = digest.hexdigest()
        states = []
        for branch in range(self.n_branches):
            model.load_state_dict(trunk["model"])
            optimizer.load_state_dict(trunk["optimizer"])
            if branch == 0:
                rng.bit_generator.state = trunk["random_states"][0]
                torch.set_rng_state(trunk["random_states"][1])
            else:
                rng = np.random.default_rng([seed, 1000 + branch])
                torch.manual_seed(seed + 1000 + branch)
            resume = (Path(self.checkpoint_dir) / BRANCH_RESUME_FILE.format(branch)
                      if self.checkpoint_dir else None)
            self._train(*run, rng, resume, device, first_epoch=self.branch_epoch + 1,
                        last_epoch=self.max_epochs, branch=branch, trunk=fingerprint)
            states.append(copy.deepcopy(model.state_dict()))
        model.load_state_dict({
            key: (torch.stack([state[key] for state in states]).mean(0)
                  if value.is_floating_point() else value)
            for key, value in states[0].items()})

    def _train(self, model, prepared, encoder, prototypes, optimizer, base_lrs, steps_per_epoch,
               rng, resume, device, accelerator=None, *, first_epoch=1, last_epoch=None,
               branch=None, trunk=None):
        """Epochs ``first_epoch`` to ``last_epoch`` of :meth:`fit` (or of one branch, whose
        resume file must come from the trunk of fingerprint ``trunk``), from the resume file's
        when there is one; appends to ``history_``."""
        rank, world = ((accelerator.process_index, accelerator.num_processes)
                       if accelerator is not None else (0, 1))
        network = accelerator.unwrap_model(model) if accelerator is not None else model
        if resume is not None and resume.exists():
            state = torch.load(resume, map_location=device, weights_only=False)
            # A file written before a setting existed ran it at its default.
            stored = {**self._resume_params(type(self)().get_params()), **state["params"]}
            if state["label_space"] != self.label_space_ or stored != self._resume_params():
                raise ValueError(
                    f"{resume} is a tuning run with other tasks or settings; use another "
                    f"checkpoint_dir, or delete its {RESUME_FILE.replace('.pt', '*.pt')} files to "
                    "start over.")
            if state.get("trunk") != trunk:
                raise ValueError(
                    f"{resume} continues another first part of the run than the one in "
                    f"{RESUME_FILE} (trained again since); delete the "
                    f"{BRANCH_RESUME_FILE.format('*')} files to train the branches again.")
            if len(state["random_states"]) != world:
                raise ValueError(
                    f"{resume} was written by a run of {len(state['random_states'])} "
                    f"process(es); resume it with as many, or use another checkpoint_dir.")
            network.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            rng.bit_generator.state, torch_rng = state["random_states"][rank]
            torch.set_rng_state(torch_rng)
            self.history_, first_epoch = state["history"], state["epoch"] + 1
        schedule = _net.WarmupCosineLR(self.warmup_epochs, final_ratio=0.1)
        last_epoch = self.max_epochs if last_epoch is None else last_epoch
        for epoch in range(first_epoch, last_epoch + 1):
            start = time.time()
            model.train()
            plans = {t["name"]: [] for t in prepared}
            losses = {t["name"]: [] for t in prepared}
            steps = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{self.max_epochs}"
                         + ("" if branch is None else f" (branch {branch + 1}/{self.n_branches})"),
                         unit="step", leave=False, disable=not self.verbose or rank != 0,
                         dynamic_ncols=True)
            for step in steps:
                factor = schedule.factor((epoch - 1) * steps_per_epoch + step,
                                         self.max_epochs * steps_per_epoch, steps_per_epoch)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                parts = []
                for task in prepared:
                    if not plans[task["name"]]:
                        plans[task["name"]] = _balanced_batches(task["targets"].numpy(),
                                                                self.batch_size, rng)
                    index = torch.from_numpy(plans[task["name"]].pop())
                    x, target, offset = self._augment(task, index, rng)
                    instructions = torch.from_numpy(sample_training_instructions(
                        encoder, task["family"], task["texts"], len(index), rng,
                        p_default=self.p_default, p_level2=self.p_level2))
                    parts.append((task, x, target, instructions, offset))
                embedding = self._embed_step(model, network.config, parts, rng, device)
                loss, first = 0.0, 0
                for task, x, target, _, _ in parts:
                    rows = embedding[first:first + len(target)]
                    first += len(target)
                    target = target.to(device)
                    if self.softmax_over == "task":
                        own = task["classes"].to(device)
                        logits = rows @ prototypes[own].T
                        target = torch.searchsorted(own, target)
                    else:
                        logits = rows @ prototypes.T
                    part = torch.nn.functional.cross_entropy(self.logit_scale * logits, target)
                    losses[task["name"]].append(part.item())
                    loss = loss + part
                optimizer.zero_grad()
                if accelerator is not None:
                    accelerator.backward(loss)
                else:
                    loss.backward()
                optimizer.step()
            if world > 1:
                _average_buffers(network, world)
            record = {"epoch": epoch, "seconds": round(time.time() - start, 1)}
            if branch is not None:
                record["branch"] = branch
            mean_losses = torch.tensor([np.mean(losses[t["name"]]) for t in prepared],
                                       dtype=torch.float64)
            if world > 1:  # the history holds the mean over every process's batches
                torch.distributed.all_reduce(mean_losses, op=torch.distributed.ReduceOp.SUM)
                mean_losses /= world
            for task, mean_loss in zip(prepared, mean_losses.tolist()):
                record[f"{task['name']}_loss"] = mean_loss
            for task in prepared:
                record[f"{task['name']}_train_acc"] = self._accuracy(network, task, encoder,
                                                                     prototypes, device)
            self.history_.append(record)
            if self.verbose and rank == 0:
                tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in record.items()))
            random_states = [(rng.bit_generator.state, torch.get_rng_state())]
            if world > 1:
                random_states = [None] * world
                torch.distributed.all_gather_object(
                    random_states, (rng.bit_generator.state, torch.get_rng_state()))
            if resume is not None and rank == 0:
                resume.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(resume) as tmp:
                    torch.save({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                                "random_states": random_states,
                                "history": self.history_, "epoch": epoch,
                                "label_space": self.label_space_, "params": self._resume_params(),
                                "trunk": trunk},
                               tmp)
            if accelerator is not None:
                accelerator.wait_for_everyone()

    def _resume_params(self, params=None):
        """The settings a resume file must share with this run (of ``params``, default this
        tuner's)."""
        params = self.get_params() if params is None else params
        # Without branches their settings change nothing.
        unused = ("n_branches", "branch_epoch") if params["n_branches"] == 1 else ()
        return {k: v for k, v in params.items()
                if k not in ("checkpoint_dir", "device", "verbose", "max_epochs", "distributed",
                             *unused)}

    def _embed_step(self, model, config, parts, rng, device):
        """Embeddings of one step's batches (``parts``), in their order.

        Every task's batch goes through one forward pass: BatchNorm then sees the same mixture
        of tasks in training as its running statistics hold at inference (a pass per task left
        them fitting the last task only)."""
        xs = [x for _, x, _, _, _ in parts]
        if self.batch_lengths == "shortest":
            n_samples = min(x.shape[-1] for x in xs)
            xs = [x[..., :n_samples] for x in xs]
        if self.positions == "random":
            n_windows = max(x.shape[-1] for x in xs) // config.window_samples
            firsts = [int(rng.integers(0, config.max_windows - n_windows + 1))] * len(xs)
        elif self.positions == "crop":
            firsts = [round(offset / config.window_samples) for *_, offset in parts]
        else:
            firsts = [0] * len(xs)
        instructions = [instr.to(device) for _, _, _, instr, _ in parts]
        if len({x.shape[-1] for x in xs}) == 1 and len(set(firsts)) == 1:
            return model(torch.cat(xs).to(device), torch.cat(instructions),
                         first_position=firsts[0])
        return model([x.to(device) for x in xs], instructions, first_position=firsts)

    def _augment(self, task, index, rng):
        """A batch's trials and targets after mirroring, cropping and surrogates, and the
        crop's start in samples (0 without a crop)."""
        x, target = task["data"][index], task["targets"][index]
        if task["mirror"] is not None:
            flip = torch.from_numpy(rng.random(len(index)) < 0.5)
            swapped = torch.tensor([task["mirror"][int(t)] for t in target])
            x = torch.where(flip[:, None, None], x[:, _MIRROR], x)
            target = torch.where(flip, swapped, target)
        n_windows, offset = x.shape[-1] // 100, 0
        if self.crop_windows and n_windows > self.crop_windows + 1:
            step = task["crop_step"]
            offset = int(rng.integers(0, self.crop_windows * 100 // step + 1)) * step
            x = x[..., offset: offset + (n_windows - self.crop_windows) * 100]
        if self.ft_surrogate:
            chosen = torch.from_numpy(rng.random(len(index)) < self.ft_surrogate)
            n_bins = x.shape[-1] // 2 + 1
            phases = torch.from_numpy(rng.uniform(0.0, 2 * np.pi, (len(index), n_bins)))
            x = x.clone()
            x[chosen] = phase_randomized(x[chosen], phases[chosen])
        return x, target, offset

    def _accuracy(self, model, task, encoder, prototypes, device):
        """Training accuracy in eval mode at level 2, among the task's own classes."""
        from .instructions import instruction_pool, instruction_vector

        vector = torch.from_numpy(instruction_vector(
            encoder, instruction_pool(task["family"])[0], 2, task["texts"])).to(device)
        own = sorted({int(t) for t in task["targets"]})
        model.eval()
        with torch.no_grad():
            cos = torch.cat([model(task["data"][i:i + 256].to(device), vector) @ prototypes[own].T
                             for i in range(0, len(task["targets"]), 256)])
        model.train()
        predicted = torch.tensor(own)[cos.argmax(1).cpu()]
        return float((predicted == task["targets"]).float().mean())

    def save(self, path, *, provenance=None):
        """Write the tuned model (Tower and Q-Former) as a leaf-sk checkpoint, atomically.

        Parameters
        ----------
        path : str or Path
        provenance : dict, optional
            Extra facts (data description, subjects) merged into the recorded provenance.

        Returns
        -------
        Path
        """
        check_is_fitted(self, "model_")
        from . import __version__

        record = {"trainer": "LeafInstructionTuner", "leaf_sk_version": __version__,
                  "params": {k: v for k, v in self.get_params().items()},
                  "tasks": self.tasks_, "label_space": self.label_space_,
                  **(provenance or {})}
        return save_checkpoint(path, self.model_, text_encoder=self.text_encoder,
                               provenance=record, history=self.history_)


def _average_buffers(model, world):
    """Average BatchNorm's running statistics over the processes.

    DDP hands every forward pass the first process's buffers, but each process's last step
    of an epoch updated its own; averaging makes every process evaluate and save one model.
    """
    for buffer in model.buffers():
        if buffer.is_floating_point():
            torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
            buffer.div_(world)


def _check_common_channels(used_sites):
    """Refuse tasks whose measured template sites do not overlap with every other task's."""
    for i, (name_a, sites_a) in enumerate(used_sites):
        for name_b, sites_b in used_sites[i + 1:]:
            if not sites_a & sites_b:
                raise ValueError(
                    f"Tasks {name_a!r} ({sorted(sites_a)}) and {name_b!r} ({sorted(sites_b)}) "
                    "share no electrode site, so one network cannot relate them; tune them "
                    "separately, or add a task that covers both montages.")


def _balanced_batches(targets, batch_size, rng):
    """Batches of ``batch_size`` indices with every class about equally often."""
    pools = [rng.permutation(np.flatnonzero(targets == c)) for c in np.unique(targets)]
    order, queues = [], [list(p) for p in pools]
    while len(order) < len(targets):
        for c in rng.permutation(len(pools)):
            if not queues[c]:
                queues[c] = list(rng.permutation(pools[c]))
            order.append(queues[c].pop())
    batches = [np.asarray(order[i:i + batch_size]) for i in range(0, len(order) - batch_size + 1,
                                                                  batch_size)]
    return batches or [np.asarray(order)]
