"""Inner folds: a fold model's direct inference on whole trials against shorter inputs.

``leaf-sk tune --batch-lengths shortest`` crops each batch to the shortest task's trials (1.5 s,
three 0.5-s windows, for PhysioNet with Kalunga2016), so a model scored on whole trials (3 s for
PhysioNet, 2 s for Kalunga2016) reads positional embeddings it never trained. This script scores
direct inference (level 2, each subject aligned on its own, as ``tune_inner.py``) of the fold
models given, per input:

- ``whole``: the whole trial;
- ``first-N``: its first N samples at 200 Hz (``first-300``: the training crop's length);
- ``crops5``: the whole trial and 5 crops one window shorter (the classifier's ``test_crops=5``);
- ``win3-S``: the mean over 3-window crops starting every S samples.

Run from the repository root, after ``tune_inner.py --fold K --seed S --out runs/NAME-sS-fK``::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/input_length_inner.py \\
        runs/l2-s6-f{fold} --folds 0 --subjects fit --inputs whole first-300 first-400

Prints, per model, dataset and input, the mean accuracy and ROC AUC over the subjects and the
mean and standard deviation of ``cos(class 1) - cos(class 0)`` (two classes), and, over several
models, the same for their ensemble (the mean of their similarities).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import tune_inner
from leaf_sk.checkpoint import load_checkpoint, read_metadata
from leaf_sk.nn import crop_averaged
from leaf_sk.text import get_text_encoder
from leaf_sk.tuner import MODEL_FILE


class _Input(torch.nn.Module):
    """The model applied to one form of the input; the mean embedding over crops."""

    def __init__(self, model, form):
        super().__init__()
        self.model, self.form = model, form

    def forward(self, x, instruction):
        embed = lambda z: self.model(z, instruction)  # noqa: E731
        if self.form == "whole":
            return embed(x)
        if self.form == "crops5":
            return crop_averaged(embed, x, 5)
        kind, value = self.form.split("-")
        if kind == "first":
            return embed(x[..., :int(value)])
        offsets = range(0, x.shape[-1] - 300 + 1, int(value))
        return torch.stack([embed(x[..., o:o + 300]) for o in offsets]).mean(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", metavar="FOLDER",
                        help="a tune_inner.py --out folder per model, with {fold} for the fold")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--subjects", choices=("valid", "fit"), default="valid",
                        help="score the fold's validation subjects (default) or its fit subjects")
    parser.add_argument("--datasets", nargs="+", default=list(tune_inner.SPLITS))
    parser.add_argument("--inputs", nargs="+", default=["whole", "crops5", "win3-25"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # records[(dataset, input)][subject] = (list of per-model similarities, true class indices)
    records, encoder = {}, None
    for fold in args.folds:
        tune_inner.use_fold(fold)
        paths = [f"{folder.format(fold=fold)}/{MODEL_FILE}" for folder in args.folders]
        encoder = encoder or get_text_encoder(read_metadata(paths[0])["text_encoder"]["name"])
        models = [load_checkpoint(p)[0] for p in paths]
        for name in args.datasets:
            X, y, subject, ch_names, sfreq = tune_inner.load(name)
            subjects = tune_inner.SPLITS[name][args.subjects]
            for form in args.inputs:
                for model in models:
                    scores = tune_inner.direct_scores(_Input(model, form), encoder, name, X, y,
                                                      subject, ch_names, sfreq, subjects,
                                                      keep_outputs=True)
                    for s, record in scores.items():
                        entry = records.setdefault((name, form), {}).setdefault(
                            (fold, s), ([], record["truth"]))
                        entry[0].append(record["cos"])
    n_models = len(args.folders)
    choices = {f"model {i}": [i] for i in range(n_models)}
    if n_models > 1:
        choices[f"ensemble of {n_models}"] = list(range(n_models))
    for (name, form), per_subject in records.items():
        for label, chosen in choices.items():
            accuracy, auc, differences = [], [], []
            for cos_list, truth in per_subject.values():
                cos = np.mean([cos_list[i] for i in chosen], axis=0)
                accuracy.append(float((cos.argmax(1) == truth).mean()))
                if cos.shape[1] == 2:
                    auc.append(roc_auc_score(truth, cos[:, 1] - cos[:, 0]))
                    differences.append(cos[:, 1] - cos[:, 0])
            line = (f"{name} {form} {label}: accuracy {np.mean(accuracy):.3f}"
                    f" over {len(accuracy)} subjects")
            if auc:
                difference = np.concatenate(differences)
                line += (f", ROC AUC {np.mean(auc):.3f}, cos difference mean "
                         f"{difference.mean():+.3f} sd {difference.std():.3f}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
