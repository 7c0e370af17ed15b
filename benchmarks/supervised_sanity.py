"""Sanity check: can supervised training of the whole LEAF network fit its own training trials?

Trains :class:`~leaf_sk.LeafInstructionClassifier` (Tower, tokenizer included, and Q-Former) on
PhysioNet MI left/right hand imagery, MOABB ``LeftRightImagery()`` (8-32 Hz, 0-3 s), of the
training subjects 1-3, 5-11 (the fit), and validates every epoch on training subjects 12-14, held
out of the fit. No test subject (15-18, 42) is loaded. Per epoch it prints the training loss,
the training accuracy (in training mode on the batches as they were trained, and in eval mode
after the epoch), validation loss, accuracy and ROC AUC, and diagnostics: the spread of the
cosine similarities across trials, gradient norms per part of the network and the tokenizer's
BatchNorm statistics.

Run from the repository root::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/supervised_sanity.py

The classifier's defaults are used (class-balanced batches, ``logit_scale=10``) unless
``--shuffled`` or ``--logit-scale`` say otherwise. Columns: ``tr_acc(b)`` training
accuracy on the batches in training mode (dropout, batch BatchNorm statistics); ``tr_acc``,
``tr_auc`` the fit trials in eval mode after the epoch; ``tr_f1`` the fraction predicted as the
second class; ``trdiff_sd`` the standard deviation of ``cos1 - cos0`` over the fit trials;
``cos0_sd`` that of ``cos0``; ``g_*`` mean gradient norm per step of the tokenizer, the rest of the
Tower and the Q-Former; ``bnVr`` the variance of the tokenizer's convolution outputs on 64 fit
trials over the BatchNorm running variance (1 when eval mode normalises like training mode).

The EEG arrays are cached in ``$TMPDIR/leaf_sk_physionet_lr_fit_valid.npz`` after the first run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from sklearn.metrics import roc_auc_score

from leaf_sk import LeafInstructionClassifier
from leaf_sk._input import make_channel_map, read_trials, to_template
from leaf_sk.alignment import euclidean_alignment

FIT_SUBJECTS = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
VALID_SUBJECTS = [12, 13, 14]
INSTRUCTION = "which imagined movement is this"
LABEL_TEXTS = {"left_hand": "Left hand", "right_hand": "Right hand"}
CACHE = Path(tempfile.gettempdir()) / "leaf_sk_physionet_lr_fit_valid.npz"
PARTS = ("tokenizer", "tower", "qformer")


def load_data(cache=CACHE):
    """PhysioNet MI left/right (MOABB ``LeftRightImagery``, 8-32 Hz) of the fit and validation subjects."""
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        return d["X"], d["y"], d["subject"], [str(c) for c in d["ch_names"]], float(d["sfreq"])
    from moabb.datasets import PhysionetMI
    from moabb.paradigms import LeftRightImagery

    subjects = FIT_SUBJECTS + VALID_SUBJECTS
    dataset = PhysionetMI(imagined=True, subjects=subjects)
    dataset.feet_runs = []
    epochs, y, meta = LeftRightImagery().get_data(dataset, subjects, return_epochs=True)
    X = epochs.get_data(units="uV").astype(np.float32)
    subject = meta.subject.to_numpy().astype(int)
    ch_names, sfreq = list(epochs.ch_names), float(epochs.info["sfreq"])
    np.savez(cache, X=X, y=np.asarray(y).astype(str), subject=subject, ch_names=np.asarray(ch_names),
             sfreq=sfreq)
    return X, np.asarray(y).astype(str), subject, ch_names, sfreq


def part_of(name):
    if ".tokenizer." in name:
        return "tokenizer"
    if ".tower." in name:
        return "tower"
    return "qformer"


@torch.no_grad()
def similarities(module, X, batch_size=64):
    """Eval-mode cosines of every trial with each prototype, shape (n, n_classes)."""
    was_training = module.training
    module.eval()
    out = [module.similarities(torch.as_tensor(X[i:i + batch_size])) for i in range(0, len(X), batch_size)]
    module.train(was_training)
    return torch.cat(out).numpy().astype(np.float64)


class Monitor(Callback):
    """Per-epoch accuracy, AUC and diagnostics, recorded in the history and printed as a table."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.t0_ = time.time()
        print(header(), flush=True)
        # Before any step: how much do the cosines vary between trials at initialisation?
        cos = similarities(net.module_, X[:128])
        diff = cos[:, 1] - cos[:, 0]
        print(f"# init (eval mode, 128 fit trials): cos0 mean {cos[:, 0].mean():.4f} sd {cos[:, 0].std():.2e}; "
              f"cos1-cos0 mean {diff.mean():.2e} sd {diff.std():.2e} range {np.ptp(diff):.2e}", flush=True)

    def on_epoch_begin(self, net, **kwargs):
        self.grad_sq_ = defaultdict(list)
        self.correct_ = self.seen_ = 0
        self.epoch_t0_ = time.time()

    def on_grad_computed(self, net, named_parameters, batch=None, training=False, **kwargs):
        sq = defaultdict(float)
        for name, param in named_parameters:
            if param.grad is not None:
                sq[part_of(name)] += float(param.grad.detach().pow(2).sum())
        for part, value in sq.items():
            self.grad_sq_[part].append(value ** 0.5)

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training and y_pred is not None:
            yi = batch[1]
            self.correct_ += int((y_pred.argmax(1).cpu() == yi.cpu()).sum())
            self.seen_ += len(yi)

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        train_time = time.time() - self.epoch_t0_
        h = net.history
        module = net.module_
        h.record("train_acc_batch", self.correct_ / max(1, self.seen_))
        for prefix, ds in (("train", dataset_train), ("valid", dataset_valid)):
            if ds is None:
                continue
            X, y = np.asarray(ds.X), np.asarray(ds.y)
            cos = similarities(module, X)
            diff = cos[:, 1] - cos[:, 0]
            h.record(f"{prefix}_acc", float(np.mean((diff > 0) == (y == 1))))
            h.record(f"{prefix}_auc", float(roc_auc_score(y, diff)))
            h.record(f"{prefix}_frac1", float(np.mean(diff > 0)))
            h.record(f"{prefix}_diff_sd", float(diff.std()))
            h.record(f"{prefix}_diff_mean", float(diff.mean()))
            h.record(f"{prefix}_cos0_sd", float(cos[:, 0].std()))
        for part in PARTS:
            values = self.grad_sq_.get(part)
            h.record(f"grad_{part}", float(np.mean(values)) if values else 0.0)
        bn = module.model.tower.tokenizer.enc_conv[2]
        with torch.no_grad():
            sample = torch.as_tensor(np.asarray(dataset_train.X)[::7][:64])  # trials of every subject
            outputs = module.model.tower.tokenizer.filter_outputs(sample)  # (B, N, F, L)
            batch_var = outputs.permute(2, 0, 1, 3).reshape(outputs.shape[2], -1).var(dim=1)
        h.record("bn_var_ratio", float((batch_var / (bn.running_var + bn.eps)).mean()))
        h.record("bn_running_var", float(bn.running_var.mean()))
        h.record("lr_last", net.optimizer_.param_groups[-1]["lr"])
        h.record("epoch_s", train_time)
        print(row(h[-1]), flush=True)


COLUMNS = [("epoch", "ep", "{:>3d}"), ("train_loss", "trloss", "{:.4f}"),
           ("train_acc_batch", "tr_acc(b)", "{:.3f}"), ("train_acc", "tr_acc", "{:.3f}"),
           ("train_auc", "tr_auc", "{:.3f}"), ("valid_loss", "vaLoss", "{:.4f}"),
           ("valid_acc", "va_acc", "{:.3f}"), ("valid_auc", "va_auc", "{:.3f}"),
           ("train_frac1", "tr_f1", "{:.2f}"), ("train_diff_sd", "trdiff_sd", "{:.2e}"),
           ("train_cos0_sd", "cos0_sd", "{:.2e}"), ("grad_tokenizer", "g_tok", "{:.2e}"),
           ("grad_tower", "g_tow", "{:.2e}"), ("grad_qformer", "g_qf", "{:.2e}"),
           ("bn_var_ratio", "bnVr", "{:.2f}"), ("epoch_s", "s", "{:.0f}")]


def header():
    return " ".join(f"{short:>9s}" for _, short, _ in COLUMNS)


def row(values):
    cells = []
    for key, _, fmt in COLUMNS:
        value = values.get(key)
        cells.append(f"{'-':>9s}" if value is None else f"{fmt.format(value):>9s}")
    return " ".join(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="leaf-small",
                        help="packaged name or path; 'none' for random initial weights of size small")
    parser.add_argument("--logit-scale", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-tokenizer", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--freeze", choices=["none", "encoder", "tokenizer"], default="none")
    parser.add_argument("--instruction-level", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shuffled", action="store_true",
                        help="shuffled training batches instead of class-balanced ones "
                             "(balance_classes=False, the behaviour before this option existed)")
    parser.add_argument("--align", action="store_true",
                        help="alignment='euclidean' with each subject as a group (fit and validation)")
    parser.add_argument("--out", type=Path, default=None, help="write the history as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)

    t = time.time()
    X, y, subject, ch_names, sfreq = load_data()
    fit, valid = np.isin(subject, FIT_SUBJECTS), np.isin(subject, VALID_SUBJECTS)
    assert set(np.unique(subject)) <= set(FIT_SUBJECTS + VALID_SUBJECTS)
    classes = np.unique(y[fit])
    print(f"# data: {fit.sum()} fit trials (subjects {FIT_SUBJECTS}), {valid.sum()} validation trials "
          f"(subjects {VALID_SUBJECTS}), {X.shape[1]} channels, {X.shape[2]} samples at {sfreq:g} Hz; "
          f"classes {dict(zip(*np.unique(y[fit], return_counts=True)))}; loaded in {time.time() - t:.0f} s",
          flush=True)
    # The validation trials go through the classifier's own input path: the channel map of the
    # fit channels (identical here) and the per-trial scaling of to_template.
    channel_map = make_channel_map(ch_names)
    X_valid = X[valid]
    if args.align:
        X_valid = euclidean_alignment(X_valid, subject[valid])
    X_valid = to_template(read_trials(X_valid, ch_names=ch_names, sfreq=sfreq, units="uV"), channel_map)
    y_valid = np.searchsorted(classes, y[valid]).astype(np.int64)
    checkpoint = None if args.checkpoint.lower() == "none" else args.checkpoint
    clf = LeafInstructionClassifier(
        checkpoint, size="small", ch_names=ch_names, sfreq=sfreq, units="uV",
        instruction=INSTRUCTION, instruction_level=args.instruction_level, label_texts=LABEL_TEXTS,
        max_epochs=args.max_epochs, lr=args.lr, lr_tokenizer=args.lr_tokenizer,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
        freeze=args.freeze, logit_scale=args.logit_scale, balance_classes=not args.shuffled,
        train_split=predefined_split(Dataset(X_valid, y_valid)), callbacks=[("monitor", Monitor())],
        alignment="euclidean" if args.align else None, device="cpu", random_state=args.seed)
    print(f"# config: {vars(args)}", flush=True)
    t = time.time()
    clf.fit(X[fit], y[fit], groups=subject[fit] if args.align else None)
    total = time.time() - t
    P = clf.prototypes_
    print(f"# fit {total:.0f} s; cos between the two prototypes {float(P[0] @ P[1]):.4f}, "
          f"|p1 - p0| {float(np.linalg.norm(P[1] - P[0])):.4f} (max logit gap = logit_scale x this)")
    last = clf.history_[-1]
    print(f"# final: train_acc {last['train_acc']:.3f}, valid_acc {last['valid_acc']:.3f}, "
          f"valid_auc {last['valid_auc']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                        "fit_subjects": FIT_SUBJECTS, "valid_subjects": VALID_SUBJECTS,
                                        "history": clf.history_}, indent=1, default=float))
    return clf


if __name__ == "__main__":
    sys.exit(main() and 0)
