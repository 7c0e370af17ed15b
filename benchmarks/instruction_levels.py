"""Direct inference at instruction levels 0, 1 and 2 on the test subjects (the paper's Figure 3).

A model instruction-tuned on the training subjects of our split (``leaf-sk tune``) decodes the
test subjects of each dataset with no training on them: ``LeafInstructionClassifier(checkpoint,
max_epochs=0, alignment="euclidean", test_crops=0)`` (whole trials, as the paper's direct
inference), one call per test subject (each subject's trials are
re-centred on their own), at level 0 (the placeholder instruction), 1 (the task's instruction)
and 2 (the instruction blended with the label texts). TS+LR, trained cross-subject on the same
training subjects, runs in the same script on the same trials. Per dataset: balanced accuracy,
ROC AUC for two classes, chance, and a one-sided binomial p of the number of correct trials
against chance. Also writes the Figure 3-5 plots of ``leaf_sk.viz``.

Run from the repository root::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        .venv/bin/python benchmarks/instruction_levels.py --checkpoint runs/tune-full/tuned.safetensors \\
        --out results/instruction-levels
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import mne
import numpy as np
import torch
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline

from leaf_sk import LeafEncoder, LeafInstructionClassifier
from leaf_sk._atomic import write_text_atomic
from leaf_sk.benchmark import INSTRUCTIONS, choose_paradigm, get_dataset, label_text

SPLITS = {"Kalunga2016": ([1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11]),
          "PhysionetMI": ([1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [15, 16, 17, 18, 42])}


def load(name, subjects):
    dataset = get_dataset(name)
    paradigm, family = choose_paradigm(dataset)
    with mne.utils.use_log_level("error"):
        X, labels, metadata = paradigm.get_data(dataset, subjects)
    return X, np.asarray(labels).astype(str), metadata["subject"].to_numpy(), family


def scores(y, predicted, decision, classes):
    k = len(classes)
    correct = int(np.sum(predicted == y))
    row = {"balanced_accuracy": balanced_accuracy_score(y, predicted), "accuracy": correct / len(y),
           "chance": 1 / k, "n_trials": len(y),
           "p_binomial": binomtest(correct, len(y), 1 / k, alternative="greater").pvalue}
    if k == 2:
        row["roc_auc"] = roc_auc_score(y == classes[1], decision)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by leaf-sk tune")
    parser.add_argument("--out", default="results/instruction-levels")
    parser.add_argument("--datasets", nargs="+", default=list(SPLITS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, embeddings, query_inputs = [], {}, {}
    for name in args.datasets:
        train_subjects, test_subjects = SPLITS[name]
        X_train, y_train, _, family = load(name, train_subjects)
        X, y, subject, _ = load(name, test_subjects)
        classes = np.unique(y_train)
        texts = {c: label_text(c, family) for c in classes}
        dataset = get_dataset(name)
        paradigm, _ = choose_paradigm(dataset)
        with mne.utils.use_log_level("error"):
            epochs, _, _ = paradigm.get_data(dataset, test_subjects[:1], return_epochs=True)
        info = dict(ch_names=list(epochs.ch_names), sfreq=float(epochs.info["sfreq"]))
        tsl = make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"),
                            LogisticRegression(max_iter=1000)).fit(X_train, y_train)
        proba = tsl.predict_proba(X)
        rows.append({"dataset": name, "pipeline": "TS+LR (cross-subject)", "level": None,
                     **scores(y, tsl.classes_[proba.argmax(1)], proba[:, -1], classes)})
        for level in (0, 1, 2):
            clf = LeafInstructionClassifier(args.checkpoint, instruction=INSTRUCTIONS[family],
                                            instruction_level=level, label_texts=texts, max_epochs=0,
                                            alignment="euclidean", test_crops=0, device="cpu",
                                            **info)
            clf.fit(X[:len(classes)], None)
            predicted = np.empty(len(y), dtype=object)
            decision = np.zeros(len(y))
            for s in test_subjects:  # one call per subject: each is re-centred on its own trials
                mine = subject == s
                predicted[mine] = clf.predict(X[mine])
                if len(classes) == 2:
                    decision[mine] = clf.decision_function(X[mine])
            rows.append({"dataset": name, "pipeline": "LEAF direct inference", "level": level,
                         **scores(y, predicted.astype(str), decision, classes)})
            encoder = LeafEncoder(args.checkpoint, instruction=INSTRUCTIONS[family],
                                  instruction_level=level, label_texts=texts, alignment="euclidean",
                                  device="cpu", **info).fit(X[:len(classes)])
            embeddings[(name, level)] = (np.concatenate([encoder.transform(X[subject == s])
                                                         for s in test_subjects]),
                                         np.concatenate([y[subject == s] for s in test_subjects]),
                                         [texts[c] for c in classes], classes)
            first = subject == test_subjects[0]
            query_inputs[name] = (encoder, X[first], y[first])
        for row in rows[-4:]:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                  flush=True)
    write_text_atomic(out / "instruction_levels.json", json.dumps(rows, indent=1, default=str))
    lines = ["| dataset | pipeline | level | balanced accuracy | ROC AUC | chance | p (binomial) | trials |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        auc = f"{r['roc_auc']:.3f}" if "roc_auc" in r else "-"
        level = "-" if r["level"] is None else r["level"]
        lines.append(f"| {r['dataset']} | {r['pipeline']} | {level} | {r['balanced_accuracy']:.3f} | "
                     f"{auc} | {r['chance']:.3f} | {r['p_binomial']:.2g} | {r['n_trials']} |")
    write_text_atomic(out / "instruction_levels.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    from leaf_sk import viz

    viz.plot_instruction_levels(rows).savefig(out / "figure3_instruction_levels.png", dpi=120)
    from leaf_sk.checkpoint import read_metadata

    text_encoder = read_metadata(args.checkpoint)["text_encoder"]["name"]
    viz.plot_embedding_geometry(embeddings, text_encoder).savefig(
        out / "figure4_embedding_geometry.png", dpi=120)
    for name, (encoder, X, y) in query_inputs.items():
        viz.plot_query_states(encoder, X, y, f"{name}, test subject {SPLITS[name][1][0]}, level 2"
                              ).savefig(out / f"figure5_query_states_{name}.png", dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
