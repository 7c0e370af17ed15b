"""LEAF pipelines beside Riemannian baselines in the same MOABB evaluations, on real EEG.

Follows ../shared/docs/EVALUATION.md: Kalunga2016 subjects 1-8 and PhysioNet 1-3, 5-14 are
the training side (also the pretraining data of the packaged checkpoint); scores are only
reported for subjects no training stage saw (Kalunga 9-11, PhysioNet 15-18, 42).

- within-session: MOABB's 5-fold CV inside each session of each test subject;
- cross-subject: train on the training subjects, test on each test subject in turn
  (``cv_class=HeldOutSubjects``).

Run from the repository root (``MNE_DATA`` must point at the recordings)::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \
        .venv/bin/python benchmarks/moabb_eval.py --dataset kalunga --out benchmarks/results

Writes ``<out>/<dataset>_scores.csv`` and prints a table of mean and spread per pipeline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pyriemann.classification import MDM
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import BaseCrossValidator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from leaf_sk import LeafEncoder, LeafInstructionClassifier

SPLITS = {
    "kalunga": dict(train=list(range(1, 9)), test=[9, 10, 11]),
    "physionet": dict(train=[1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], test=[15, 16, 17, 18, 42]),
}
LABEL_WORDS = {
    "kalunga": {"13": "13 Hz flicker", "17": "17 Hz flicker", "21": "21 Hz flicker",
                "rest": "Resting"},
    "physionet": {"left_hand": "Left hand", "right_hand": "Right hand"},
}
INSTRUCTIONS = {"kalunga": "which flicker frequency was attended",
                "physionet": "which imagined movement is this"}
FRONTAL = ["Fp1", "Fp2", "AF7", "AF8", "F7", "F8", "FT7", "FT8"]


class HeldOutSubjects(BaseCrossValidator):
    """One fold per test subject: train on all training subjects, test on that subject.

    ``subjects`` is the subject of every sample (MOABB resolves a callable of the metadata).
    """

    def __init__(self, subjects, train_subjects, test_subjects):
        self.subjects = subjects
        self.train_subjects = train_subjects
        self.test_subjects = test_subjects

    def get_n_splits(self, X=None, y=None, groups=None):
        return len(self.test_subjects)

    def split(self, X, y=None, groups=None):
        subjects = np.asarray(self.subjects).astype(int)
        train = np.flatnonzero(np.isin(subjects, self.train_subjects))
        for subject in self.test_subjects:
            yield train, np.flatnonzero(subjects == subject)


def dataset_and_paradigm(name, subjects=None):
    from moabb.datasets import Kalunga2016, PhysionetMI
    from moabb.paradigms import SSVEP, LeftRightImagery

    subjects = subjects or SPLITS[name]["train"] + SPLITS[name]["test"]
    if name == "kalunga":
        return Kalunga2016(subjects=subjects), SSVEP(n_classes=4)
    dataset = PhysionetMI(imagined=True, subjects=subjects)
    dataset.feet_runs = []
    return dataset, LeftRightImagery()


def channel_info(dataset, paradigm, subject):
    epochs, _, _ = paradigm.get_data(dataset, [subject], return_epochs=True)
    return list(epochs.ch_names), float(epochs.info["sfreq"])


def label_texts(name, paradigm, dataset):
    # MOABB label-encodes y (sorted event names) for array input.
    events = sorted(paradigm.used_events(dataset))
    return {i: LABEL_WORDS[name].get(e, e) for i, e in enumerate(events)}


def frontal_control(ch_names, sfreq):
    """EVALUATION.md's eye-movement control: 8 frontal channels, 0.5-s means, logistic regression."""
    idx = [ch_names.index(c) for c in FRONTAL if c in ch_names]
    step = int(round(sfreq / 2))

    def windows(X):
        X = X[:, idx, : (X.shape[2] // step) * step]
        return X.reshape(len(X), len(idx), -1, step).mean(-1).reshape(len(X), -1)

    return make_pipeline(FunctionTransformer(windows), StandardScaler(), LogisticRegression(max_iter=1000))


def pipelines(name, ch_names, sfreq, checkpoint, texts, epochs_tuned):
    common = dict(ch_names=ch_names, sfreq=sfreq, device="cpu")
    instruction = INSTRUCTIONS[name]
    pipes = {
        "TS+LR": make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression(max_iter=1000)),
        "MDM": make_pipeline(Covariances("oas"), MDM()),
    }
    if name == "physionet":
        from mne.decoding import CSP

        pipes["CSP+LDA"] = make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis())
        pipes["frontal control"] = frontal_control(ch_names, sfreq)
    for pooling in ("mean+std", "logvar"):
        pipes[f"LEAF random {pooling}+LR"] = make_pipeline(
            LeafEncoder(None, size="small", pooling=pooling, random_state=0, **common),
            StandardScaler(), LogisticRegression(max_iter=1000))
        if checkpoint:
            pipes[f"LEAF pretrained {pooling}+LR"] = make_pipeline(
                LeafEncoder(checkpoint, pooling=pooling, **common),
                StandardScaler(), LogisticRegression(max_iter=1000))
    if checkpoint:
        pipes["LEAF IQF (pretrained, tuned)"] = LeafInstructionClassifier(
            checkpoint, instruction=instruction, instruction_level=2, label_texts=texts,
            max_epochs=epochs_tuned, batch_size=32, random_state=0, **common)
    return pipes


def run(name, kinds, checkpoint, out, epochs_tuned):
    from moabb.evaluations import CrossSubjectEvaluation, WithinSessionEvaluation

    dataset, paradigm = dataset_and_paradigm(name)
    split = SPLITS[name]
    ch_names, sfreq = channel_info(dataset, paradigm, split["test"][0])
    pipes = pipelines(name, ch_names, sfreq, checkpoint, label_texts(name, paradigm, dataset), epochs_tuned)
    frames = []
    with tempfile.TemporaryDirectory() as hdf5:
        if "within" in kinds:
            test_only, _ = dataset_and_paradigm(name, split["test"])
            evaluation = WithinSessionEvaluation(paradigm=paradigm, datasets=[test_only], overwrite=True,
                                                 hdf5_path=hdf5, random_state=0)
            t = time.time()
            frames.append(evaluation.process(pipes).assign(evaluation="within-session"))
            print(f"within-session done in {time.time() - t:.0f} s", file=sys.stderr)
        if "cross" in kinds:
            evaluation = CrossSubjectEvaluation(
                paradigm=paradigm, datasets=[dataset], overwrite=True, hdf5_path=hdf5, random_state=0,
                cv_class=HeldOutSubjects,
                cv_kwargs={"subjects": lambda meta: meta.subject.values,
                           "train_subjects": split["train"], "test_subjects": split["test"]})
            t = time.time()
            frames.append(evaluation.process(pipes).assign(evaluation="cross-subject"))
            print(f"cross-subject done in {time.time() - t:.0f} s", file=sys.stderr)
    scores = pd.concat(frames, ignore_index=True)
    scores = scores[scores.subject.astype(int).isin(split["test"])]
    out.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out / f"{name}_scores.csv", index=False)
    table = summarise(scores)
    print(f"\n{name}: test subjects {split['test']}, metric {paradigm.scoring}")
    print(table.to_string())
    return scores


def summarise(scores):
    """Mean and spread over test subjects; for accuracy, a one-sided binomial test against chance.

    Every test trial is scored once (within-session: once across the CV folds), so the pooled
    count of correct trials over all test subjects is binomial under chance level 1 / n_classes.
    """
    from scipy.stats import binomtest

    rows = []
    for (evaluation, pipeline), group in scores.groupby(["evaluation", "pipeline"]):
        row = dict(evaluation=evaluation, pipeline=pipeline, mean=group.score.mean(),
                   std=group.score.std(), min=group.score.min(), max=group.score.max(),
                   subjects=len(group))
        n_trials = group.samples if evaluation == "within-session" else group.samples_test
        n_classes = int(group.n_classes.iloc[0])
        if n_classes > 2:
            correct = int(round((group.score * n_trials).sum()))
            row.update(trials=int(n_trials.sum()), chance=1 / n_classes,
                       p_above_chance=binomtest(correct, int(n_trials.sum()), 1 / n_classes,
                                                alternative="greater").pvalue)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["evaluation", "pipeline"]).round(4)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(SPLITS), default="kalunga")
    parser.add_argument("--evaluations", default="within,cross")
    parser.add_argument("--checkpoint", default=None, help="LEAF checkpoint (packaged name or path)")
    parser.add_argument("--epochs-tuned", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--summarise", type=Path, default=None,
                        help="only print the summary of a scores CSV written earlier")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise(pd.read_csv(args.summarise)).to_string())
        return
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    run(args.dataset, args.evaluations.split(","), args.checkpoint, args.out, args.epochs_tuned)


if __name__ == "__main__":
    main()
