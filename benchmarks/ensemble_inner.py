"""Inner folds: tuned models alone against their ensemble (training subjects only).

For every fold of :data:`tune_inner.FOLDS`, loads the fold models that ``tune_inner.py`` wrote
(one folder per model, ``{fold}`` in its name standing for the fold number), combines them with
:func:`leaf_sk.checkpoint.combine_checkpoints` (as ``leaf-sk ensemble`` does, in float32 and in
float16) and scores direct inference on the fold's validation subjects exactly as
``tune_inner.py`` does (level 2, whole trials, each subject aligned on its own). Run from the
repository root, after ``tune_inner.py --fold K --seed S --out runs/seedS-fK`` for K = 0-3::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensemble_inner.py \\
        runs/seed0-f{fold} runs/seed1-f{fold} runs/seed2-f{fold}

Prints, per dataset, the mean over all validation subjects (13 PhysioNet, 7 Kalunga2016) of
each model alone, of the ensemble and of its float16 file, with the per-subject scores.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

import tune_inner
from leaf_sk.checkpoint import combine_checkpoints, load_checkpoint, read_metadata
from leaf_sk.text import get_text_encoder
from leaf_sk.tuner import MODEL_FILE


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", metavar="FOLDER",
                        help="a tune_inner.py --out folder per model, with {fold} for the fold")
    args = parser.parse_args(argv)
    if len(args.folders) < 2 or any("{fold}" not in f for f in args.folders):
        parser.error("give two or more folders, each with {fold} in its name")
    torch.set_num_threads(1)
    scores, encoder = {}, None
    for fold in range(len(tune_inner.FOLDS["PhysionetMI"])):
        tune_inner.use_fold(fold)
        paths = [f"{folder.format(fold=fold)}/{MODEL_FILE}" for folder in args.folders]
        encoder = encoder or get_text_encoder(read_metadata(paths[0])["text_encoder"]["name"])
        with tempfile.TemporaryDirectory() as tmp:
            models = {f"model {i}": load_checkpoint(p)[0] for i, p in enumerate(paths)}
            models["ensemble"] = load_checkpoint(combine_checkpoints(paths, f"{tmp}/e.safetensors"))[0]
            models["ensemble, float16 file"] = load_checkpoint(combine_checkpoints(
                paths, f"{tmp}/h.safetensors", dtype=torch.float16))[0]
        for name in tune_inner.SPLITS:
            X, y, subject, ch_names, sfreq = tune_inner.load(name)
            key = "auc" if name == "PhysionetMI" else "accuracy"
            for label, model in models.items():
                valid = tune_inner.direct_scores(model, encoder, name, X, y, subject, ch_names,
                                                 sfreq, tune_inner.SPLITS[name]["valid"])
                scores.setdefault((name, label), {}).update({s: r[key] for s, r in valid.items()})
    for (name, label), per_subject in scores.items():
        print(f"{name} {label}: mean {np.mean(list(per_subject.values())):.3f} over "
              f"{len(per_subject)} subjects; " + ", ".join(
                  f"s{s} {v:.3f}" for s, v in sorted(per_subject.items())), flush=True)


if __name__ == "__main__":
    main()
