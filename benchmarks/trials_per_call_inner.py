"""How many trials a predict call needs for Euclidean alignment (training subjects only).

With ``alignment="euclidean"`` (the default for ``leaf-small-bci``) the trials of one call are
re-centred on their mean covariance. This scores direct inference (level 2, whole trials) of a
``benchmarks/tune_inner.py`` fold model on each validation subject's trials passed ``K`` at a
time (in a random order, seed 0), for ``K`` = 1, 2, 5, 10, 20 and all of them in one call.
Then online decoding: the first half of each subject's trials (in recording order) is the
calibration run, and the second half is scored one trial per call, aligned on the calibration
trials (``alignment_reference="fit"``, fitted on them) or on itself, and in one call.

Run from the repository root::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trials_per_call_inner.py --fold K --model runs/X

Prints one line per dataset and ``K``: the mean over validation subjects (ROC AUC for PhysioNet,
accuracy for Kalunga2016), then each subject's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readout_inner import fit, pipelines  # noqa: E402
from tune_inner import SPLITS, load, use_fold  # noqa: E402

from leaf_sk.benchmark import label_text  # noqa: E402
from leaf_sk.tuner import MODEL_FILE  # noqa: E402

CALL_SIZES = (1, 2, 5, 10, 20, None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, required=True, choices=range(4))
    parser.add_argument("--model", required=True, help="folder of a tune_inner.py run")
    args = parser.parse_args(argv)
    use_fold(args.fold)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for name, split in SPLITS.items():
        X, y, subject, ch_names, sfreq = load(name)
        texts = {e: label_text(e, split["paradigm_family"]) for e in np.unique(y)}
        direct = pipelines(str(Path(args.model) / MODEL_FILE), split["paradigm_family"], texts,
                           ch_names, sfreq, [])["direct"]
        fit_rows = np.isin(subject, split["fit"])
        model = fit(clone(direct), X[fit_rows][:len(texts) * 2], np.repeat(sorted(texts), 2))
        for size in CALL_SIZES:
            scores = []
            for s in split["valid"]:
                rows = rng.permutation(np.flatnonzero(subject == s))
                calls = [rows] if size is None else np.array_split(
                    rows, np.arange(size, len(rows), size))
                scores.append(score(model, X, y, calls, len(texts) == 2))
            report(f"{name} trials per call {size or 'all'}", split["valid"], scores)
        online = {"calibration reference, one trial per call": [],
                  "own reference, one trial per call": [], "own reference, one call": []}
        for s in split["valid"]:
            rows = np.flatnonzero(subject == s)
            calibration, later = rows[:len(rows) // 2], rows[len(rows) // 2:]
            assert set(y[calibration]) == set(texts), "a class is missing from the calibration"
            reference = clone(direct).set_params(alignment_reference="fit").fit(
                X[calibration], y[calibration])
            for label, estimator, calls in (
                    ("calibration reference, one trial per call", reference, later[:, None]),
                    ("own reference, one trial per call", model, later[:, None]),
                    ("own reference, one call", model, [later])):
                online[label].append(score(estimator, X, y, calls, len(texts) == 2))
        for label, scores in online.items():
            report(f"{name} second half, {label}", split["valid"], scores)


def score(model, X, y, calls, binary):
    """ROC AUC (two classes) or accuracy of ``model`` on the trials of ``calls``, one call each."""
    order = np.concatenate(calls)
    if binary:
        p = np.concatenate([model.predict_proba(X[c])[:, 1] for c in calls])
        return float(roc_auc_score(y[order] == model.classes_[1], p))
    return float((np.concatenate([model.predict(X[c]) for c in calls]) == y[order]).mean())


def report(what, subjects, scores):
    print(f"{what}: {np.mean(scores):.3f} "
          f"({', '.join(f's{s} {v:.2f}' for s, v in zip(subjects, scores))})", flush=True)


if __name__ == "__main__":
    main()
