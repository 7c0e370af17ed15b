"""Inner-split experiments for ``leaf-sk tune`` recipes (training subjects only).

Tunes one model with :class:`~leaf_sk.tuner.LeafInstructionTuner` on the fit subjects of the
inner split and scores its direct inference (level 2, each subject's trials aligned on their
own, no training on the subject) on the validation subjects:

- PhysioNet MI left/right (MOABB ``LeftRightImagery``, 8-32 Hz): fit 1-3, 5-11, validation 12-14;
- Kalunga2016, SSVEP 13/17/21 Hz (MOABB ``SSVEP``): fit 1-5, validation 6 and 8 (7 shares a
  recording with 3 and is left out).

No test subject (PhysioNet 15-18, 42; Kalunga2016 9-11) and no reserved PhysioNet subject
(4, 19-23) is loaded. Run from the repository root::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_inner.py --epochs 8 \
        --config '{"temporal_kernel": 100}' --out runs/inner-k100

Prints per-epoch training lines, then per validation subject the accuracy (and ROC AUC for
PhysioNet), and writes ``scores.json`` beside the tuned model. The EEG arrays are cached in
``$TMPDIR`` after the first run. ``--fold 1``, ``2`` or ``3`` hold out other training subjects
(:data:`FOLDS`; fold 0 is the split above); ``--baseline EEGNet`` or ``ShallowFBCSPNet``
scores that network trained from scratch on the fit subjects instead of a tuned LEAF.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from leaf_sk._atomic import write_text_atomic
from leaf_sk._input import make_channel_map, read_trials, to_template
from leaf_sk.alignment import align_trials
from leaf_sk.benchmark import label_text
from leaf_sk.instructions import instruction_pool, instruction_vector, label_prototypes
from leaf_sk.text import get_text_encoder
from leaf_sk.tuner import MODEL_FILE, LeafInstructionTuner, TuningTask

# Folds of the training subjects: fold 0 is the split above; the others hold out other subjects
# (Kalunga2016 7 shares a recording with 3 and stays out of every fold).
FOLDS = {
    "PhysionetMI": [[12, 13, 14], [1, 2, 3], [5, 6, 7], [8, 9, 10, 11]],
    "Kalunga2016": [[6, 8], [1, 2], [3, 4], [5]],
}

SPLITS = {
    "PhysionetMI": dict(fit=[1, 2, 3, 5, 6, 7, 8, 9, 10, 11], valid=[12, 13, 14],
                        family="motor_imagery", paradigm_family="imagery"),
    "Kalunga2016": dict(fit=[1, 2, 3, 4, 5], valid=[6, 8], family="ssvep",
                        paradigm_family="ssvep"),
}


def use_fold(fold):
    """Set ``SPLITS`` to fold ``fold`` of :data:`FOLDS`: those subjects validate, the rest fit."""
    for name, folds in FOLDS.items():
        every = sorted(s for f in folds for s in f)
        SPLITS[name]["valid"] = folds[fold]
        SPLITS[name]["fit"] = [s for s in every if s not in folds[fold]]


def load(name):
    """Arrays in µV of the fit and validation subjects of one dataset (cached)."""
    split = SPLITS[name]
    cache = Path(tempfile.gettempdir()) / f"leaf_sk_tune_inner_{name}.npz"
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        return (d["X"], d["y"].astype(str), d["subject"], [str(c) for c in d["ch_names"]],
                float(d["sfreq"]))
    from leaf_sk.benchmark import choose_paradigm, get_dataset

    dataset = get_dataset(name)
    paradigm, _ = choose_paradigm(dataset)
    subjects = sorted(s for f in FOLDS[name] for s in f)
    epochs, y, meta = paradigm.get_data(dataset, subjects, return_epochs=True)
    X = epochs.get_data(units="uV").astype(np.float32)
    y = np.asarray(y).astype(str)
    subject = meta["subject"].to_numpy().astype(int)
    ch_names, sfreq = list(epochs.ch_names), float(epochs.info["sfreq"])
    np.savez(cache, X=X, y=y, subject=subject, ch_names=np.asarray(ch_names), sfreq=sfreq)
    return X, y, subject, ch_names, sfreq


def direct_scores(model, encoder, name, X, y, subject, ch_names, sfreq, subjects,
                  keep_outputs=False):
    """Level-2 direct inference per subject, trials aligned per subject (with
    ``keep_outputs``, each record also holds the cosine similarities ``cos`` of shape
    (n_trials, n_classes) and the true class indices ``truth``)."""
    split = SPLITS[name]
    events = sorted(np.unique(y))
    texts = [label_text(e, split["paradigm_family"]) for e in events]
    prototypes = torch.from_numpy(label_prototypes(encoder, texts))
    vector = torch.from_numpy(instruction_vector(
        encoder, instruction_pool(split["family"])[0], 2, texts))
    scores = {}
    model.eval()
    for s in subjects:
        rows = subject == s
        trials = align_trials(read_trials(X[rows], ch_names=ch_names, sfreq=sfreq, units="uV"),
                              None)
        data = torch.from_numpy(to_template(trials, make_channel_map(trials.ch_names)))
        with torch.no_grad():
            cos = torch.cat([model(data[i:i + 128], vector) @ prototypes.T
                             for i in range(0, len(data), 128)]).numpy()
        truth = np.searchsorted(events, y[rows])
        record = {"accuracy": float((cos.argmax(1) == truth).mean()), "n": int(rows.sum())}
        if keep_outputs:
            record.update(cos=cos, truth=truth)
        if len(events) == 2:
            record["auc"] = float(roc_auc_score(truth, cos[:, 1] - cos[:, 0]))
        scores[int(s)] = record
    return scores


def baseline_scores(name, estimator, X, y, subject, sfreq):
    """A from-scratch network fitted on the fit subjects, scored per validation subject."""
    from sklearn.base import clone

    split = SPLITS[name]
    rows = np.isin(subject, split["fit"])
    model = clone(estimator).set_params(sfreq=sfreq).fit(X[rows], y[rows])
    scores = {}
    for s in split["valid"]:
        rows = subject == s
        record = {"accuracy": float((model.predict(X[rows]) == y[rows]).mean()),
                  "n": int(rows.sum())}
        if len(model.classes_) == 2:
            record["auc"] = float(roc_auc_score(y[rows] == model.classes_[1],
                                                model.decision_function(X[rows])))
        scores[int(s)] = record
    return scores


def run_baseline(args, data):
    """``--baseline``: ShallowFBCSPNet or EEGNet from scratch, per dataset, on the same split."""
    from leaf_sk.baselines import EEGNetClassifier, ShallowFBCSPNetClassifier

    estimator = {"ShallowFBCSPNet": ShallowFBCSPNetClassifier,
                 "EEGNet": EEGNetClassifier}[args.baseline](random_state=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"args": vars(args)}
    for name, (X, y, subject, ch_names, sfreq) in data.items():
        valid = baseline_scores(name, estimator, X, y, subject, sfreq)
        report[name] = {"valid": valid}
        key = "auc" if "auc" in next(iter(valid.values())) else "accuracy"
        print(f"{name} {args.baseline}: validation {key} " + ", ".join(
            f"s{s} {v[key]:.3f}" for s, v in valid.items())
            + f"; mean {np.mean([v[key] for v in valid.values()]):.3f}", flush=True)
    write_text_atomic(out / "scores.json", json.dumps(report, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--config", default=None, help="LeafConfig overrides, JSON")
    parser.add_argument("--tuner", default=None, help="LeafInstructionTuner parameters, JSON")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", choices=["ShallowFBCSPNet", "EEGNet"], default=None,
                        help="score this network trained from scratch instead of a tuned LEAF")
    parser.add_argument("--fold", type=int, default=0, choices=range(4),
                        help="which subjects validate (FOLDS); 0 is the first inner split")
    args = parser.parse_args(argv)
    use_fold(args.fold)
    torch.set_num_threads(1)
    data = {name: load(name) for name in args.datasets}
    if args.baseline:
        return run_baseline(args, data)
    tasks = []
    for name, (X, y, subject, ch_names, sfreq) in data.items():
        split = SPLITS[name]
        rows = np.isin(subject, split["fit"])
        texts = {e: label_text(e, split["paradigm_family"]) for e in np.unique(y)}
        tasks.append(TuningTask(X[rows], y[rows], split["family"], texts, ch_names=ch_names,
                                sfreq=sfreq, units="uV", groups=subject[rows], name=name))
    out = Path(args.out)
    tuner = LeafInstructionTuner(config=json.loads(args.config) if args.config else None,
                                 max_epochs=args.epochs, checkpoint_dir=str(out),
                                 random_state=args.seed, **json.loads(args.tuner or "{}"))
    start = time.time()
    tuner.fit(tasks)
    seconds = time.time() - start
    tuner.save(out / MODEL_FILE)
    model = tuner.model_
    encoder = get_text_encoder(tuner.text_encoder)
    report = {"args": vars(args), "seconds": round(seconds, 1), "history": tuner.history_}
    for name, (X, y, subject, ch_names, sfreq) in data.items():
        split = SPLITS[name]
        valid = direct_scores(model, encoder, name, X, y, subject, ch_names, sfreq, split["valid"])
        fit = direct_scores(model, encoder, name, X, y, subject, ch_names, sfreq, split["fit"])
        report[name] = {"valid": valid, "fit": fit}
        key = "auc" if "auc" in next(iter(valid.values())) else "accuracy"
        print(f"{name}: validation {key} " + ", ".join(
            f"s{s} {v[key]:.3f}" for s, v in valid.items())
            + f"; mean {np.mean([v[key] for v in valid.values()]):.3f}"
            + f"; fit subjects (aligned per subject) mean "
            f"{np.mean([v[key] for v in fit.values()]):.3f}", flush=True)
    write_text_atomic(out / "scores.json", json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
