"""Inner-split experiment: LEAF's tokenizer with a log-variance head, trained with labels.

The shape of ShallowFBCSPNet on LEAF's tokenizer: the fused spatio-temporal filters, the
log-variance of each filter's output in every 0.5-s window, then a linear layer over the mean of
the windows, trained end to end with cross-entropy on PhysioNet MI left/right imagery (MOABB
``LeftRightImagery``, 8-32 Hz). Only the training subjects of our split are loaded (1-3, 5-14);
they are cut into three inner folds (1-3 + 5, 6-9, 10-14): each fold is validated once with the
network trained on the other two, so every choice rests on all 13 training subjects. CSP+LDA
and TS+LR, trained on the same fit trials, are scored on the same validation trials in the same
run, and so are the variants with each subject's trials re-centred (``--align``).

Reads the array cache written by benchmarks/supervised_sanity.py (run that once first)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/logvar_head_inner.py --epochs 15 --align --mirror
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import mne
import numpy as np
import torch
from mne.decoding import CSP
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from leaf_sk._input import make_channel_map, read_trials, to_template
from leaf_sk.checkpoint import load_checkpoint
from leaf_sk.montage import TEMPLATE_CH_NAMES, _mirror_name
from leaf_sk.nn import LeafConfig, Tower

TRAINING_SUBJECTS = (1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
INNER_FOLDS = ((1, 2, 3, 5), (6, 7, 8, 9), (10, 11, 12, 13, 14))
CACHE = Path(tempfile.gettempdir()) / "leaf_sk_physionet_lr_fit_valid.npz"
MIRROR = [TEMPLATE_CH_NAMES.index(_mirror_name(name)) for name in TEMPLATE_CH_NAMES]


def per_subject_auc(y, score, subject):
    return {int(s): roc_auc_score(y[subject == s], score[subject == s]) for s in np.unique(subject)}


def line(name, aucs):
    cells = ", ".join(f"{s}: {a:.2f}" for s, a in sorted(aucs.items()))
    return f"{name}: mean per-subject AUC {np.mean(list(aucs.values())):.3f} ({cells})"


def baseline_scores(X, y, subject, fit):
    pipelines = {
        "CSP+LDA": make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis()),
        "TS+LR": make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"), LogisticRegression()),
    }
    scores = {}
    for name, pipeline in pipelines.items():
        pipeline.fit(X[fit], y[fit])
        scores[name] = per_subject_auc(y[~fit], pipeline.predict_proba(X[~fit])[:, 1], subject[~fit])
    return scores


def within_session(make, X, y, subject):
    """5-fold stratified CV ROC AUC inside each subject, as MOABB's WithinSessionEvaluation."""
    folds = StratifiedKFold(5, shuffle=True, random_state=42)
    return {int(s): cross_val_score(make(), X[subject == s], y[subject == s], cv=folds,
                                    scoring="roc_auc").mean() for s in np.unique(subject)}


def scaled_lr():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def euclidean_alignment(X, subject):
    """Each subject's trials times ``R^-1/2``, ``R`` the mean of its trials' covariances."""
    from scipy.linalg import fractional_matrix_power

    aligned = np.empty_like(X)
    for s in np.unique(subject):
        trials = X[subject == s]
        mean_cov = np.mean([t @ t.T / t.shape[-1] for t in trials], axis=0)
        whitener = np.real(fractional_matrix_power(mean_cov, -0.5))
        aligned[subject == s] = whitener @ trials
    return aligned * np.median(np.abs(X)) / np.median(np.abs(aligned))


def train_head(X, y, fit, args, seed):
    """Tokenizer + log-variance head trained on ``X[fit]``.

    Returns the head's validation scores per 5 epochs, the mean log-power features of every
    trial after the last epoch, shape (n_trials, n_filters), and the tokenizer.
    """
    torch.manual_seed(seed)
    if args.init == "leaf-small":
        tokenizer = load_checkpoint("leaf-small")[0].tower.tokenizer
    else:
        tokenizer = Tower(LeafConfig.from_size("small", n_filters=args.filters)).tokenizer
    head = torch.nn.Sequential(torch.nn.Dropout(args.feature_dropout),
                               torch.nn.Linear(tokenizer.config.n_filters, 2))
    optimizer = torch.optim.AdamW([*tokenizer.parameters(), *head.parameters()], lr=args.lr,
                                  weight_decay=args.weight_decay)
    X_fit, y_fit, X_valid = torch.from_numpy(X[fit]), torch.from_numpy(y[fit]), torch.from_numpy(X[~fit])
    steps = args.epochs * int(np.ceil(len(X_fit) / 32))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    valid_scores = {}
    for epoch in range(args.epochs):
        tokenizer.train()
        head.train()
        order = rng.permutation(len(X_fit))
        for first in range(0, len(order), 32):
            index = order[first:first + 32]
            x, target = X_fit[index], y_fit[index]
            if args.mirror:  # left/right mirror image of the montage, with the hand label swapped
                flip = torch.from_numpy(rng.random(len(index)) < 0.5)
                x = torch.where(flip[:, None, None], x[:, MIRROR], x)
                target = torch.where(flip, 1 - target, target)
            if args.crop_windows:
                offset = int(rng.integers(0, args.crop_windows + 1)) * 100
                x = x[..., offset: offset + x.shape[-1] - args.crop_windows * 100]
            if args.noise:
                x = x + args.noise * x.std() * torch.randn_like(x)
            logits = head(tokenizer.log_power(x).mean(dim=1))
            loss = torch.nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            tokenizer.eval()
            head.eval()
            with torch.no_grad():
                valid_scores[epoch + 1] = torch.softmax(
                    head(tokenizer.log_power(X_valid).mean(dim=1)), 1)[:, 1].numpy()
    with torch.no_grad():
        features = torch.cat([tokenizer.log_power(torch.from_numpy(X[i:i + 256])).mean(dim=1)
                              for i in range(0, len(X), 256)]).numpy()
    return valid_scores, features, tokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", choices=["leaf-small", "random"], default="random")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--filters", type=int, default=32, help="tokenizer filters (random init)")
    parser.add_argument("--crop-windows", type=int, default=1,
                        help="train on random crops this many 0.5-s windows shorter")
    parser.add_argument("--align", action="store_true",
                        help="Euclidean alignment: whiten each subject's trials by the inverse square "
                             "root of its mean spatial covariance (unlabelled, per subject)")
    parser.add_argument("--mirror", action="store_true",
                        help="augment: mirror half of each batch across the midline, hands swapped")
    parser.add_argument("--feature-dropout", type=float, default=0.0,
                        help="dropout on the log-power features before the linear head")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="Gaussian noise added to the template input, in units of its std")
    parser.add_argument("--seeds", type=int, default=1, help="ensemble of this many seeds")
    parser.add_argument("--folds", default="0,1,2", help="inner folds to validate")
    parser.add_argument("--within", action="store_true",
                        help="also score within-session (5-fold CV inside each validation subject): "
                             "CSP+LDA, TS+LR, and the trained filters' log-variance + LR")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    mne.set_log_level("error")
    data = np.load(CACHE, allow_pickle=True)
    subject = data["subject"]
    assert set(np.unique(subject)) <= set(TRAINING_SUBJECTS)
    y = (data["y"] == "right_hand").astype(np.int64)
    raw = euclidean_alignment(data["X"], subject) if args.align else data["X"]
    trials = read_trials(raw, ch_names=list(data["ch_names"]), sfreq=float(data["sfreq"]))
    X = to_template(trials, make_channel_map(trials.ch_names))
    print(vars(args), flush=True)
    totals = {}
    start = time.time()
    for fold in map(int, args.folds.split(",")):
        fit = ~np.isin(subject, INNER_FOLDS[fold])
        for name, aucs in baseline_scores(data["X"], y, subject, fit).items():
            totals.setdefault(name, {}).update(aucs)
        if args.align:
            for name, aucs in baseline_scores(raw, y, subject, fit).items():
                totals.setdefault(name + " (aligned)", {}).update(aucs)
        ensemble, features = {}, []
        for seed in range(args.seeds):
            scores, seed_features, tokenizer = train_head(X, y, fit, args, seed)
            features.append(seed_features)
            if args.align and seed == 0:  # what a pipeline fitted on the pooled subjects sees
                pooled = euclidean_alignment(data["X"][fit], np.zeros(fit.sum()))
                trials = read_trials(pooled, ch_names=list(data["ch_names"]), sfreq=float(data["sfreq"]))
                with torch.no_grad():
                    pooled = tokenizer.log_power(torch.from_numpy(
                        to_template(trials, make_channel_map(trials.ch_names)))).mean(dim=1).numpy()
                lr = scaled_lr().fit(pooled, y[fit])
                totals.setdefault("net features + LR fitted on the fit subjects aligned as one group",
                                  {}).update(per_subject_auc(
                                      y[~fit], lr.predict_proba(seed_features[~fit])[:, 1], subject[~fit]))
            for epoch, score in scores.items():
                ensemble[epoch] = ensemble.get(epoch, 0) + score
        for epoch, score in ensemble.items():
            name = f"net epoch {epoch}"
            totals.setdefault(name, {}).update(per_subject_auc(y[~fit], score, subject[~fit]))
        features = np.concatenate(features, axis=1)
        lr = scaled_lr().fit(features[fit], y[fit])
        totals.setdefault("net features + LR fitted on the fit subjects", {}).update(
            per_subject_auc(y[~fit], lr.predict_proba(features[~fit])[:, 1], subject[~fit]))
        if args.within:
            valid = ~fit
            for name, make, inputs in (
                    ("CSP+LDA", lambda: make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis()),
                     data["X"]),
                    ("TS+LR", lambda: make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"),
                                                    LogisticRegression()), data["X"]),
                    ("net features + LR", scaled_lr, features)):
                totals.setdefault(f"within-session {name}", {}).update(
                    within_session(make, inputs[valid], y[valid], subject[valid]))
        print(f"fold {fold} done, {time.time() - start:.0f} s", flush=True)
    for name, aucs in totals.items():
        print(line(name, aucs), flush=True)


if __name__ == "__main__":
    main()
