"""LeafInstructionClassifier: EEG decoding by matching LEAF embeddings to label texts."""

from __future__ import annotations

import copy
import warnings
from numbers import Integral

import numpy as np
from scipy.special import softmax
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from . import _net
from ._base import (SHARED_CONSTRAINTS, TRAINING_CONSTRAINTS, Interval, LeafInputMixin, StrOptions,
                    _fit_context, build_model, check_torch_device, predict_in_batches, torch_seed,
                    warn_if_qformer_untrained)
from ._precision import resolve_precision
from .instructions import default_label_text, instruction_vector, label_prototypes
from .nn import crop_averaged, members_of
from .text import DEFAULT_TEXT_ENCODER, get_text_encoder


class AlignmentModule(torch.nn.Module):
    """LEAF model plus fixed prototypes: EEG to scaled cosine similarities with each label text.

    Parameters
    ----------
    model : LeafModel or LeafEnsemble
    prototypes : Tensor, shape (n_classes, d_text)
        Unit label-text embeddings.
    instruction : Tensor, shape (d_text,)
        Unit instruction embedding.
    logit_scale : float
    freeze : {"none", "encoder", "tokenizer"}
        Frozen parts stay in eval mode and get no gradient.
    """

    def __init__(self, model, prototypes, instruction, logit_scale=1.0, freeze="none"):
        super().__init__()
        self.model = model
        self.register_buffer("prototypes", prototypes)
        self.register_buffer("instruction", instruction)
        self.logit_scale = logit_scale
        self.freeze = freeze
        for param in self._frozen().parameters():
            param.requires_grad_(False)

    def _frozen(self):
        towers = [member.tower for member in members_of(self.model)]
        if self.freeze == "encoder":
            return torch.nn.ModuleList(towers)
        if self.freeze == "tokenizer":
            return torch.nn.ModuleList(tower.tokenizer for tower in towers)
        return torch.nn.Identity()

    def train(self, mode=True):
        super().train(mode)
        self._frozen().eval()
        return self

    def similarities(self, x, hidden=None, power=None):
        """Cosine similarities, shape (batch, n_classes).

        ``hidden`` and ``power`` are the model's ``tower_outputs(x)`` computed beforehand
        (:meth:`tower_inputs`); the Towers are then not run.
        """
        kept = None if hidden is None else (hidden, power)
        return self.model(x, self.instruction, tower_outputs=kept) @ self.prototypes.T

    def forward(self, x, hidden=None, power=None):
        """Logits ``logit_scale * cos``, shape (batch, n_classes)."""
        return self.logit_scale * self.similarities(x, hidden, power)

    def tower_inputs(self, data, batch_size, device):
        """Training inputs with the frozen Towers' outputs computed once, not at every epoch.

        Parameters
        ----------
        data : ndarray, shape (n_trials, n_channels, n_times)
            Trials on the template.
        batch_size : int
            Trials per Tower pass (the outputs do not depend on it).
        device : torch.device

        Returns
        -------
        dict or ndarray
            ``{"x": data, "hidden": ..., "power": ...}`` (``power`` left out where the
            config has no band power), the keyword arguments of :meth:`forward`; ``data``
            itself unless ``freeze="encoder"``.
        """
        if self.freeze != "encoder":
            return data
        was_training = self.training
        self.to(device).eval()
        hidden, power = [], []
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                batch = torch.from_numpy(data[start:start + batch_size]).to(device)
                batch_hidden, batch_power = self.model.tower_outputs(batch)
                hidden.append(batch_hidden.cpu().numpy())
                if batch_power is not None:
                    power.append(batch_power.cpu().numpy())
        self.train(was_training)
        inputs = {"x": data, "hidden": np.concatenate(hidden)}
        if power:
            inputs["power"] = np.concatenate(power)
        return inputs


class AlignmentNet(_net.SeededEpochsMixin, _net.NeuralNet):
    """skorch net for instruction tuning: cross-entropy over cosine logits.

    With ``balance_classes=True`` the training batches are class-balanced
    (:class:`~leaf_sk._net.ClassBalancedSampler`); validation batches are not.
    """

    def __init__(self, *args, balance_classes=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.balance_classes = balance_classes

    def get_iterator(self, dataset, training=False):
        if not (training and self.balance_classes):
            return super().get_iterator(dataset, training=training)
        kwargs = self.get_params_for("iterator_train")
        kwargs.pop("shuffle", None)
        kwargs.setdefault("batch_size", self.batch_size)
        sampler = _net.ClassBalancedSampler(_net.dataset_targets(dataset))
        return self.iterator_train(dataset, sampler=sampler, **kwargs)


class LeafInstructionClassifier(LeafInputMixin, ClassifierMixin, BaseEstimator):
    """Decode EEG by matching LEAF embeddings to sentence embeddings of the label texts.

    Each class is words (``label_texts``), embedded by a frozen sentence encoder into a
    prototype. The Instruction-conditioned Q-Former embeds a trial, conditioned on the task
    ``instruction``, into the same space; the class is the prototype of highest cosine
    similarity. ``fit`` trains the Q-Former (and, unless frozen, the Tower) with cross-entropy
    over these similarities through skorch; ``max_epochs=0`` decodes from the label texts alone
    (zero-shot, direct inference).

    Parameters
    ----------
    checkpoint : str or None
        A packaged checkpoint name, a leaf-sk ``.safetensors`` path, a LEAF release file, or
        None for random weights of ``size``. Packaged: ``"leaf-small-bci"`` (default;
        instruction-tuned on PhysioNet MI and Kalunga2016 training subjects, so ``max_epochs=0``
        decodes from label texts with no training: doc/leaf-small-bci.md) and ``"leaf-small"``
        (a Tower STR-pretrained by us; its Q-Former is untrained).
    size : {"small", "base", "tiny"}
        Network size when ``checkpoint`` is None.
    ch_names : list of str or None
        Channel names; required for arrays, read from ``info`` for ``mne.Epochs``.
    sfreq : float or None
        Sampling rate in Hz; required for arrays.
    units : {"uV", "µV", "V", "mV"} or None
        None means microvolts for arrays (MOABB's) and volts for ``mne.Epochs``.
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
        The task in words, e.g. ``"motor imagery: left or right hand"``.
    instruction_level : {0, 1, 2}
        0: the placeholder instruction "None"; 1: ``instruction``; 2: ``instruction`` blended
        with the mean embedding of all candidate label texts (the paper's levels).
    label_texts : dict, list of str or None
        The words of each class: a dict mapping each value of ``y`` to its words, e.g.
        ``{1: "left hand", 2: "right hand"}``, or a list of one text per class in the order
        of ``np.unique(y)``. With ``y=None`` (zero-shot) the classes are the dict's keys, or
        the texts of a list. Default: the packaged text for common MOABB event names
        (``"left_hand"`` to "Left"), else ``str(label)``.
    text_encoder : str
        Sentence encoder name or path (default all-MiniLM-L6-v2), or ``"hashing"``.
    max_epochs : int
        Training epochs; 0 is direct inference from the label texts (zero-shot). The default,
        5 with ``freeze="auto"``, was the one setting tried (0 epochs; 5 epochs with or
        without the Tower frozen) that was not below direct inference in either evaluation on
        the training subjects' inner folds (benchmarks/RESULTS.md, "Inner folds").
    lr : float
        Peak learning rate of everything but the tokenizer (AdamW).
    lr_tokenizer : float
        Peak learning rate of the tokenizer.
    weight_decay : float
        AdamW weight decay.
    warmup_epochs : float
        Linear warm-up length before the cosine decay, epochs.
    batch_size : int
        Trials per training step and per forward pass at prediction, which reads,
        preprocesses and scores the trials a block at a time (numpy memmaps are read block
        by block).
    freeze : {"auto", "none", "encoder", "tokenizer"}
        Parts of the network kept fixed during training: the Tower (``"encoder"``), its
        tokenizer, or nothing. ``"auto"`` (default) is ``"encoder"`` when the checkpoint holds
        an instruction-tuned Q-Former (``"leaf-small-bci"``, release files with a Q-Former), so
        that fitting adapts only the Q-Former; ``"none"`` otherwise (random weights, a Tower
        alone). With ``"encoder"`` the Towers' outputs are computed once before the first epoch
        (they cannot change), which makes fitting faster and keeps them in memory (for
        ``"leaf-small-bci"``'s twelve members, about half the size of the trials on the
        template). See ``max_epochs``.
    logit_scale : float
        Multiplies the cosine similarities before the softmax. The release uses 1 (no
        temperature); here that cannot fit close label texts: "Left hand" and "Right hand"
        have cosine 0.95, so their logits differ by at most 0.32 and no probability exceeds
        0.58. With 10 the whole network fitted its training trials (benchmarks/RESULTS.md).
    balance_classes : bool
        Draw class-balanced training batches (each class about ``batch_size / n_classes``
        times per batch). With shuffled batches the class imbalance of each batch moved every
        output alike and training collapsed to one class (benchmarks/RESULTS.md).
    test_crops : int
        At prediction, the cosine similarities are averaged over the whole trial and this many
        crops one 0.5-s window shorter, shifted by a fraction of a window
        (:func:`~leaf_sk.nn.crop_averaged`); 0 scores the whole trial alone. Each crop costs
        one more forward pass. The default, 5, was chosen on the training subjects' inner
        folds, where it raised direct inference by 0.031 accuracy on Kalunga2016 and 0.009
        ROC AUC on PhysioNet (benchmarks/RESULTS.md, "Inner folds").
    warm_start : bool
        Keep the training state (the skorch net with its optimizer) after ``fit``, and let the
        next ``fit`` continue from it for ``max_epochs`` more epochs (at the schedule's final
        learning rate) on data of the same channels and classes. False (default) keeps only
        what prediction needs, so a fitted classifier pickles several times smaller.

    callbacks : list or None
        Extra skorch callbacks, e.g. ``[EarlyStopping()]``.
    train_split : callable or None
        skorch validation split (e.g. ``skorch.dataset.ValidSplit(5)``); None trains on all.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:i]"``.
    precision : {"auto", "float32", "bfloat16"}
        Numeric precision of the network at prediction (training is float32). ``"auto"`` is
        bfloat16 on a GPU and on a CPU with native bf16 matrix products (AVX-512 BF16 or AMX),
        float32 elsewhere; asking for bfloat16 where it is emulated warns.
    verbose : int
        0 silent, 1 one line per epoch.
    random_state : int, RandomState instance or None
        Seeds the initial weights, shuffling and dropout.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, as in ``y``.
    label_texts_ : list of str
        The words of each class.
    prototypes_ : ndarray of shape (n_classes, d_text)
        Unit sentence embeddings of ``label_texts_``.
    instruction_vector_ : ndarray of shape (d_text,)
    module_ : AlignmentModule
        The network with its prototypes.
    net_ : skorch.NeuralNet or None
        The net that trained it, with its optimizer state; kept only with ``warm_start=True``
        (None otherwise).
    history_ : list of dict
        Per-epoch training record.
    precision_ : {"float32", "bfloat16"}
        The precision of prediction.
    freeze_ : {"none", "encoder", "tokenizer"}
        The parts kept fixed in training (``freeze`` with ``"auto"`` resolved).
    channel_map_, ch_names_, sfreq_, n_features_in_
        As in :class:`LeafEncoder`.

    Notes
    -----
    Training uses one instruction vector for every trial (``instruction`` at
    ``instruction_level``), not the release's per-trial random phrasings: a fitted classifier
    serves one task. ``benchmarks/instruction_tune.py`` shows the release's multi-task sampling.
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        **TRAINING_CONSTRAINTS,
        "label_texts": [dict, list, tuple, np.ndarray, None],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "freeze": [StrOptions({"auto", "none", "encoder", "tokenizer"})],
        "balance_classes": ["boolean"],
        "test_crops": [Interval(Integral, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "callbacks": [list, None],
        "train_split": [callable, None],
        "device": [str],
        "verbose": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, checkpoint="leaf-small-bci", *, size="small", ch_names=None, sfreq=None,
                 units=None, alignment="auto", alignment_reference="call",
                 release_compat="auto", instruction=None,
                 instruction_level=2, label_texts=None,
                 text_encoder=DEFAULT_TEXT_ENCODER, max_epochs=5, lr=2e-4, lr_tokenizer=1e-3,
                 weight_decay=1e-3, warmup_epochs=1.0, batch_size=32, freeze="auto",
                 logit_scale=10.0, balance_classes=True, test_crops=5, warm_start=False,
                 callbacks=None,
                 train_split=None, device="auto", precision="auto", verbose=0, random_state=None):
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
        self.text_encoder = text_encoder
        self.max_epochs = max_epochs
        self.lr = lr
        self.lr_tokenizer = lr_tokenizer
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.freeze = freeze
        self.logit_scale = logit_scale
        self.balance_classes = balance_classes
        self.test_crops = test_crops
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.train_split = train_split
        self.device = device
        self.precision = precision
        self.verbose = verbose
        self.random_state = random_state

    def _texts_for(self, labels, *, from_y=True):
        """The words of each of ``labels`` (the sorted classes) from ``label_texts``."""
        if self.label_texts is None:
            return [default_label_text(label) for label in labels]
        if not isinstance(self.label_texts, dict):
            given = list(self.label_texts)
            if not from_y:  # the classes are the texts themselves
                return [str(label) for label in labels]
            if len(given) != len(labels):
                raise ValueError(
                    f"label_texts lists {len(given)} text(s) but y has {len(labels)} classes "
                    f"{[_plain(c) for c in labels]}; pass one text per class in the order of "
                    "np.unique(y), or a dict {label: text}.")
            texts = dict(zip([_plain(label) for label in labels], given))
        else:
            texts = {_plain(k): v for k, v in self.label_texts.items()}
        missing = [label for label in labels if _plain(label) not in texts]
        if missing:
            raise ValueError(
                f"label(s) {[_plain(m) for m in missing]} have no text in label_texts (keys "
                f"{list(self.label_texts)}); add an entry per class, e.g. label_texts="
                f"{{{', '.join(f'{_plain(m)!r}: ...' for m in missing[:2])}}}.")
        for label in labels:
            if not isinstance(texts[_plain(label)], str) or not texts[_plain(label)].strip():
                raise TypeError(f"label_texts[{_plain(label)!r}] must be non-empty words, got "
                                f"{texts[_plain(label)]!r}.")
        return [texts[_plain(label)] for label in labels]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None):
        """Embed the label texts, then train the network to match trials to them.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs
            EEG trials of at least 1 s.
        y : array-like of shape (n_trials,) or None
            Labels (strings or integers). None is allowed with ``max_epochs=0`` and
            ``label_texts``: the classes are then the keys of a dict ``label_texts``, or the
            texts of a list.
        groups : array-like of shape (n_trials,), optional
            Subject or session of each trial, for ``alignment="euclidean"``; None takes the
            subjects of ``mne.Epochs`` metadata, else treats the trials as one group.

        Returns
        -------
        self
        """
        previous = self._warm_state()
        data = self._template_data(X, fit=True, groups=groups)
        if y is None:
            if self.max_epochs or self.label_texts is None:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None; "
                    "pass y, or use max_epochs=0 with label_texts for zero-shot decoding.")
            self.classes_ = np.unique(np.asarray(
                list(self.label_texts) if isinstance(self.label_texts, dict)
                else [str(text) for text in self.label_texts]))
        else:
            y = column_or_1d(y, warn=True)
            if len(y) != len(data):
                raise ValueError(f"X has {len(data)} trials but y has {len(y)} labels; pass one label per trial.")
            check_classification_targets(y)
            self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has one class ({self.classes_.tolist()}); a classifier needs at least two. "
                "Pass trials of two or more classes.")
        self.label_texts_ = self._texts_for(self.classes_, from_y=y is not None)
        if self.max_epochs == 0 and self.label_texts is None and np.issubdtype(self.classes_.dtype, np.number):
            warnings.warn(
                "Zero-shot decoding (max_epochs=0) with numeric labels compares EEG with the texts "
                f"{self.label_texts_}, which carry no meaning; pass label_texts, e.g. "
                "{1: 'left hand', 2: 'right hand'}.", UserWarning, stacklevel=2)
        encoder = get_text_encoder(self.text_encoder)
        self.prototypes_ = label_prototypes(encoder, self.label_texts_)
        self.instruction_vector_ = instruction_vector(
            encoder, self.instruction, int(self.instruction_level), self.label_texts_)
        self.device_ = check_torch_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        if previous is not None:
            self._continue_training(previous, data, y)
            return self
        seed = torch_seed(self.random_state)
        model, info = build_model(self.checkpoint, self.size, encoder.dim, seed,
                                  release_compat=self.release_compat_)
        if not self.max_epochs:
            warn_if_qformer_untrained(info, self.checkpoint, "Zero-shot decoding (max_epochs=0)")
        self.freeze_ = (self.freeze if self.freeze != "auto"
                        else "encoder" if "qformer" in info.get("parts", []) else "none")
        module = AlignmentModule(model, torch.from_numpy(self.prototypes_),
                                 torch.from_numpy(self.instruction_vector_), self.logit_scale,
                                 self.freeze_)
        self.net_ = None
        self.history_ = []
        if self.max_epochs:
            targets = np.searchsorted(self.classes_, y).astype(np.int64)
            net = self._make_net(module, seed)
            net.fit(module.tower_inputs(data, self.batch_size, self.device_), targets)
            self._keep_training_state(net)
        self.module_ = module.to(self.device_).eval()
        return self

    def _warm_state(self):
        """What a ``warm_start`` fit continues from, or None for a fit from scratch."""
        if not self.warm_start or getattr(self, "net_", None) is None:
            return None
        return {"ch_names": list(self.ch_names_), "classes": self.classes_,
                "label_texts": list(self.label_texts_), "instruction": self.instruction_vector_}

    def _continue_training(self, previous, data, y):
        """``warm_start``: train the kept net ``max_epochs`` more epochs on the new data."""
        changed = [what for what, same in (
            ("channels", previous["ch_names"] == self.ch_names_),
            ("classes", np.array_equal(previous["classes"], self.classes_)),
            ("label texts", previous["label_texts"] == self.label_texts_),
            ("instruction", np.array_equal(previous["instruction"], self.instruction_vector_)))
            if not same]
        if changed:
            raise ValueError(
                f"warm_start=True continues the previous fit, but the {', '.join(changed)} "
                "differ from it; pass data of the same channels and classes with the same texts "
                "and instruction, or set warm_start=False to fit from scratch.")
        if self.max_epochs:
            targets = np.searchsorted(self.classes_, y).astype(np.int64)
            module = self.net_.module_
            self.net_.partial_fit(module.tower_inputs(data, self.batch_size, self.device_),
                                  targets, epochs=self.max_epochs)
            self._keep_training_state(self.net_)
        self.module_ = self.net_.module_.to(self.device_).eval()

    def _keep_training_state(self, net):
        """Record the history; keep the net (with its optimizer) only for ``warm_start``."""
        self.history_ = [{k: v for k, v in row.items() if k != "batches"}
                         for row in net.history.to_list()]
        net.module_.zero_grad(set_to_none=True)
        self.net_ = net if self.warm_start else None

    def _make_net(self, module, seed):
        callbacks = [("lr_schedule", _net.WarmupCosineLR(self.warmup_epochs, 0.1)),
                     ("log", _net.LogEpoch(["train_loss", "valid_loss"]))]
        # skorch initialises callbacks in place; copies leave the parameter as the user set it.
        callbacks += copy.deepcopy(list(self.callbacks or []))
        return AlignmentNet(
            module,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            # "model.*" also reaches the members of an ensemble ("model.members.0.tower...").
            optimizer__param_groups=[("model.*tower.tokenizer.*", {"lr": self.lr_tokenizer})],
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train__shuffle=not self.balance_classes,
            balance_classes=self.balance_classes,
            train_split=self.train_split,
            callbacks=callbacks,
            callbacks__print_log__sink=_net.logger.debug,
            device=self.device_,
            verbose=self.verbose,
            seed=seed,
        )

    def decision_function(self, X):
        """Cosine similarity of each trial's embedding with each label text.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs

        Returns
        -------
        ndarray of shape (n_trials, n_classes), or (n_trials,) for two classes
            For two classes, ``cos(class 1) - cos(class 0)`` (positive means ``classes_[1]``),
            as scikit-learn's binary convention asks.
        """
        scores = self._similarities(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def _similarities(self, X):
        check_is_fitted(self, "module_")
        module = self.module_
        window = module.model.config.window_samples

        def similarities(batch):
            return crop_averaged(module.similarities, batch, self.test_crops, window)

        return predict_in_batches(similarities, self._template_blocks(X), self.batch_size,
                                  self.device_, getattr(self, "precision_", "float32"))

    def predict_proba(self, X):
        """Softmax of ``logit_scale`` times the cosine similarities.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs

        Returns
        -------
        ndarray of shape (n_trials, n_classes), rows sum to 1.
        """
        return softmax(self.logit_scale * self._similarities(X).astype(np.float64), axis=1)

    def predict(self, X):
        """Label of the most similar label text.

        Parameters
        ----------
        X : ndarray of shape (n_trials, n_channels, n_times) or mne.Epochs

        Returns
        -------
        ndarray of shape (n_trials,), values of ``classes_``.
        """
        similarities = self._similarities(X)
        return self.classes_[np.argmax(similarities, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy; labels of ``y`` that were not among the classes in ``fit`` are an error."""
        check_is_fitted(self, "classes_")
        unknown = sorted({_plain(v) for v in np.asarray(y).ravel()} - {_plain(c) for c in self.classes_},
                         key=str)
        if unknown:
            raise ValueError(
                f"y holds label(s) {unknown} that have no text: the classifier knows {self.classes_.tolist()}. "
                "Refit with those labels (and their label_texts) to score them.")
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.poor_score = True
        return tags


def _plain(value):
    """numpy scalars to Python ones, so that 1, np.int64(1) and 1.0 key the same text."""
    return value.item() if isinstance(value, np.generic) else value
