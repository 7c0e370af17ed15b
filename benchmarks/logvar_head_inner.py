"""Inner-split experiment: LEAF's tokenizer with a log-variance head, trained with labels.

The shape of ShallowFBCSPNet on LEAF's tokenizer: the fused spatio-temporal filters, the
log-variance of each filter's output in every 0.5-s window, then a linear layer (over the mean
of the windows, ``--readout mean``, or all windows, ``flat``), trained end to end with
cross-entropy on PhysioNet MI training subjects 1-3, 5-11 and scored every 5 epochs on training
subjects 12-14, held out of the fit (no test subject is loaded). CSP+LDA and TS+LR, trained on
the same fit trials, are scored on the same validation trials in the same run.

Reads the array cache written by benchmarks/supervised_sanity.py (run that once first)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/logvar_head_inner.py --init random \\
        --epochs 40 --lr 1e-3 --readout mean --weight-decay 1e-2 --crop-windows 1
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
from sklearn.pipeline import make_pipeline

from leaf_sk._input import make_channel_map, read_trials, to_template
from leaf_sk.checkpoint import load_checkpoint
from leaf_sk.nn import LeafConfig, Tower

VALID_SUBJECTS = (12, 13, 14)
CACHE = Path(tempfile.gettempdir()) / "leaf_sk_physionet_lr_fit_valid.npz"


def per_subject_auc(y, score, subject):
    return {int(s): roc_auc_score(y[subject == s], score[subject == s]) for s in VALID_SUBJECTS}


def line(name, aucs):
    cells = ", ".join(f"{s}: {a:.3f}" for s, a in aucs.items())
    return f"{name}: mean per-subject AUC {np.mean(list(aucs.values())):.3f} ({cells})"


def baselines(X, y, subject, fit):
    pipelines = {  # new instances per call
        "CSP+LDA": make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis()),
        "TS+LR": make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"), LogisticRegression()),
    }
    for name, pipeline in pipelines.items():
        pipeline.fit(X[fit], y[fit])
        print(line(name, per_subject_auc(y[~fit], pipeline.predict_proba(X[~fit])[:, 1], subject[~fit])),
              flush=True)


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", choices=["leaf-small", "random"], default="random")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--readout", choices=["mean", "flat"], default="mean")
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--crop-windows", type=int, default=0,
                        help="train on random crops this many 0.5-s windows shorter")
    parser.add_argument("--align", action="store_true",
                        help="Euclidean alignment: whiten each subject's trials by the inverse square "
                             "root of its mean spatial covariance (unlabelled, per subject)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    mne.set_log_level("error")
    data = np.load(CACHE, allow_pickle=True)
    subject = data["subject"]
    assert set(np.unique(subject)) <= {1, 2, 3, 5, 6, 7, 8, 9, 10, 11, *VALID_SUBJECTS}
    y = (data["y"] == "right_hand").astype(np.int64)
    fit = ~np.isin(subject, VALID_SUBJECTS)
    baselines(data["X"], y, subject, fit)

    raw = euclidean_alignment(data["X"], subject) if args.align else data["X"]
    if args.align:
        print("with Euclidean alignment:")
        baselines(raw, y, subject, fit)
    trials = read_trials(raw, ch_names=list(data["ch_names"]), sfreq=float(data["sfreq"]))
    X = to_template(trials, make_channel_map(trials.ch_names))
    n_windows = X.shape[-1] // 100
    torch.manual_seed(args.seed)
    if args.init == "leaf-small":
        tokenizer = load_checkpoint("leaf-small")[0].tower.tokenizer
    else:
        tokenizer = Tower(LeafConfig.from_size("small")).tokenizer
    n_features = tokenizer.config.n_filters * (n_windows if args.readout == "flat" else 1)
    head = torch.nn.Linear(n_features, 2)
    optimizer = torch.optim.AdamW([*tokenizer.parameters(), *head.parameters()], lr=args.lr,
                                  weight_decay=args.weight_decay)
    X_fit, y_fit, X_valid = torch.from_numpy(X[fit]), torch.from_numpy(y[fit]), torch.from_numpy(X[~fit])
    steps = args.epochs * int(np.ceil(len(X_fit) / 32))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.05)

    def features(x):
        power = tokenizer.log_power(x)  # (n, windows, filters)
        return power.flatten(1) if args.readout == "flat" else power.mean(dim=1)

    rng = np.random.default_rng(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        tokenizer.train()
        order = rng.permutation(len(X_fit))
        for first in range(0, len(order), 32):
            index = order[first:first + 32]
            x = X_fit[index]
            if args.crop_windows:
                offset = int(rng.integers(0, args.crop_windows + 1)) * 100
                x = x[..., offset: offset + x.shape[-1] - args.crop_windows * 100]
            loss = torch.nn.functional.cross_entropy(head(features(x)), y_fit[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            tokenizer.eval()
            with torch.no_grad():
                train_score = torch.softmax(head(features(X_fit)), 1)[:, 1].numpy()
                valid_score = torch.softmax(head(features(X_valid)), 1)[:, 1].numpy()
            print(f"epoch {epoch + 1}: train AUC {roc_auc_score(y[fit], train_score):.3f}; "
                  + line(f"{args.init} tokenizer + log-variance head ({args.readout}"
                         f"{', aligned' if args.align else ''})",
                         per_subject_auc(y[~fit], valid_score, subject[~fit]))
                  + f"; {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
