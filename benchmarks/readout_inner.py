"""Inner-split choice of the estimators' defaults (training subjects only).

Takes the model that ``benchmarks/tune_inner.py --fold K`` tuned on the fold's fit subjects and
scores the readouts a user can pick on the fold's validation subjects, as MOABB's two
evaluations would:

- within-session: 5-fold stratified cross-validation inside each validation subject;
- cross-subject: fitted on every fit subject's trials (one alignment group per subject;
  ``--cross-alignment pooled``: all of them as one group), scored per validation subject
  (``--test-time-batchnorm``: also with the tokenizers' BatchNorm statistics re-estimated on
  each validation subject's aligned trials, AdaBN, stored as ``PIPELINE@adabn``).

Pipelines (every one with Euclidean alignment, as the checkpoint was trained):

- ``direct``: ``LeafInstructionClassifier(max_epochs=0, test_crops=0)``, level 2 (nothing
  fitted; ``direct+crops``: with ``test_crops=5``, similarities averaged over shifted crops;
  ``direct+crops10``, ``direct+crops20``: over 10 or 20);
- ``finetuned-E[-PART]``: the same classifier fine-tuned ``E`` epochs from the fold's model
  (``PART`` frozen: ``tokenizer`` or ``encoder``, the whole Tower), ``test_crops=0``;
- ``logvar+LR``: ``LeafEncoder(pooling="logvar")``, scaler, logistic regression;
- ``qformer+LR``: ``LeafEncoder(instruction=..., instruction_level=2)``, scaler, logistic
  regression on the Q-Former's embedding (``qformer0+LR``: at level 0, the placeholder
  instruction, which names no task);
- baselines of the same folds: ``TS+LR`` (OAS covariances, tangent space, logistic
  regression) and ``CSP+LDA`` (8 components).

Run from the repository root after ``tune_inner.py --fold K --out runs/X``::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/readout_inner.py --fold K --model runs/X

Prints one line per dataset, evaluation and pipeline (mean over validation subjects, ROC AUC for
PhysioNet, accuracy for Kalunga2016) and adds them to ``readouts.json`` in the model's folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from mne.decoding import CSP
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_inner import SPLITS, load, use_fold  # noqa: E402

from leaf_sk import LeafEncoder, LeafInstructionClassifier  # noqa: E402
from leaf_sk._atomic import write_text_atomic  # noqa: E402
from leaf_sk.benchmark import INSTRUCTIONS, label_text  # noqa: E402
from leaf_sk.nn.tokenizer import Tokenizer  # noqa: E402
from leaf_sk.tuner import MODEL_FILE  # noqa: E402


def pipelines(checkpoint, family, texts, ch_names, sfreq, epochs, freezes=("none",)):
    """``{name: estimator}`` of the candidates in the module docstring, for one dataset."""
    common = dict(checkpoint=checkpoint, ch_names=ch_names, sfreq=sfreq, alignment="euclidean")
    instruction = INSTRUCTIONS[family]

    def classifier(n, freeze="none", crops=0):
        return LeafInstructionClassifier(**common, instruction=instruction, instruction_level=2,
                                         label_texts=texts, max_epochs=n, batch_size=32,
                                         freeze=freeze, test_crops=crops, random_state=0,
                                         verbose=0)

    def lr():
        return [StandardScaler(), LogisticRegression(max_iter=1000)]

    out = {"direct": classifier(0),
           "direct+crops": classifier(0, crops=5),
           "direct+crops10": classifier(0, crops=10),
           "direct+crops20": classifier(0, crops=20),
           "logvar+LR": make_pipeline(LeafEncoder(**common, pooling="logvar"), *lr()),
           "qformer+LR": make_pipeline(LeafEncoder(**common, instruction=instruction,
                                                   instruction_level=2,
                                                   label_texts=list(texts.values())), *lr()),
           "qformer0+LR": make_pipeline(LeafEncoder(**common, instruction=instruction,
                                                    instruction_level=0), *lr())}
    for n in epochs:
        for freeze in freezes:
            out[f"finetuned-{n}" + ("" if freeze == "none" else f"-{freeze}")] = classifier(
                n, freeze)
    out["TS+LR"] = make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"),
                                 LogisticRegression(max_iter=1000))
    out["CSP+LDA"] = make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis())
    return out


def score(model, X, y, binary):
    if binary:
        return float(roc_auc_score(y == model.classes_[1], model.predict_proba(X)[:, 1]))
    return float((model.predict(X) == y).mean())


def fit(model, X, y, groups=None):
    """``model.fit``, with ``groups`` routed to the LEAF step (one alignment group each)."""
    first = model.steps[0][1] if hasattr(model, "steps") else model
    if groups is None or not isinstance(first, (LeafEncoder, LeafInstructionClassifier)):
        return model.fit(X, y)
    key = f"{model.steps[0][0]}__groups" if hasattr(model, "steps") else "groups"
    return model.fit(X, y, **{key: groups})


def with_batchnorm_of(model, X):
    """A copy of the fitted LEAF classifier ``model`` whose tokenizers' BatchNorm statistics are
    the mean and variance of their filter outputs on ``X`` (aligned as ``model`` aligns it)."""
    adapted = copy.deepcopy(model)
    trials = torch.as_tensor(np.concatenate(list(model._template_blocks(X))))
    with torch.no_grad():
        for tokenizer in (m for m in adapted.module_.modules() if isinstance(m, Tokenizer)):
            outputs = tokenizer.filter_outputs(trials).transpose(0, 2)   # (F, N, B, T)
            outputs = outputs.reshape(len(outputs), -1)
            norm = tokenizer.enc_conv[2]
            norm.running_mean.copy_(outputs.mean(1))
            norm.running_var.copy_(outputs.var(1))
    return adapted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, required=True, choices=range(4))
    parser.add_argument("--model", required=True, help="folder of a tune_inner.py run")
    parser.add_argument("--datasets", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--finetune-epochs", nargs="*", type=int, default=[5, 20])
    parser.add_argument("--freeze", nargs="+", default=["none"],
                        choices=["none", "tokenizer", "encoder"],
                        help="frozen parts of the fine-tuned classifiers")
    parser.add_argument("--pipelines", nargs="*", default=None, help="only these")
    parser.add_argument("--evaluations", nargs="+", default=["within", "cross"],
                        choices=["within", "cross"])
    parser.add_argument("--cross-alignment", default="per-subject",
                        choices=["per-subject", "pooled"],
                        help="alignment groups of the cross-subject fit; results of 'pooled' "
                             "are stored under the pipeline's name with '@pooled' added")
    parser.add_argument("--test-time-batchnorm", action="store_true",
                        help="cross-subject LEAF classifiers also scored with BatchNorm statistics "
                             "re-estimated on each validation subject (PIPELINE@adabn)")
    args = parser.parse_args(argv)
    use_fold(args.fold)
    torch.set_num_threads(1)
    folder = Path(args.model)
    checkpoint = str(folder / MODEL_FILE)
    path = folder / "readouts.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report["args"] = vars(args)
    for name in args.datasets:
        X, y, subject, ch_names, sfreq = load(name)
        split = SPLITS[name]
        texts = {e: label_text(e, split["paradigm_family"]) for e in np.unique(y)}
        binary = len(texts) == 2
        candidates = pipelines(checkpoint, split["paradigm_family"], texts, ch_names, sfreq,
                               args.finetune_epochs, args.freeze)
        if args.pipelines:
            candidates = {k: v for k, v in candidates.items() if k in args.pipelines}
        fit_rows = np.isin(subject, split["fit"])
        report.setdefault(name, {})
        for label, estimator in candidates.items():
            first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
            if args.cross_alignment == "pooled" and (
                    label.startswith("direct")
                    or not isinstance(first, (LeafEncoder, LeafInstructionClassifier))):
                continue  # nothing fitted on aligned trials: the same as per subject
            within, cross = {}, {}
            for s in split["valid"] if "within" in args.evaluations else []:
                rows = subject == s
                Xs, ys = X[rows], y[rows]
                folds = StratifiedKFold(5, shuffle=True, random_state=42).split(Xs, ys)
                within[int(s)] = float(np.mean([
                    score(fit(clone(estimator), Xs[train], ys[train]), Xs[test], ys[test], binary)
                    for train, test in folds]))
            if "cross" in args.evaluations:
                if label.startswith("direct"):
                    model = fit(clone(estimator), X[fit_rows][:len(texts) * 2],
                                np.repeat(sorted(texts), 2))
                else:
                    groups = subject[fit_rows] if args.cross_alignment == "per-subject" else None
                    model = fit(clone(estimator), X[fit_rows], y[fit_rows], groups)
                adabn = {}
                for s in split["valid"]:
                    rows = subject == s
                    cross[int(s)] = score(model, X[rows], y[rows], binary)
                    if args.test_time_batchnorm and isinstance(model, LeafInstructionClassifier):
                        adabn[int(s)] = score(with_batchnorm_of(model, X[rows]), X[rows], y[rows],
                                              binary)
                if adabn:
                    report[name][f"{label}@adabn"] = {"cross": adabn}
                    print(f"{name} {label}@adabn: cross {np.mean(list(adabn.values())):.3f} "
                          f"({', '.join(f's{k} {x:.2f}' for k, x in adabn.items())})", flush=True)
            if args.cross_alignment == "pooled":
                label = f"{label}@pooled"
            report[name][label] = {**report[name].get(label, {}),
                                   **({"within": within} if within else {}),
                                   **({"cross": cross} if cross else {})}
            print(f"{name} {label}: " + "; ".join(
                f"{kind} {np.mean(list(v.values())):.3f} "
                f"({', '.join(f's{k} {x:.2f}' for k, x in v.items())})"
                for kind, v in (("within", within), ("cross", cross)) if v), flush=True)
            write_text_atomic(path, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
