"""Inner folds: tuned models alone against their ensembles (training subjects only).

For every fold of :data:`tune_inner.FOLDS`, loads the fold models that ``tune_inner.py`` wrote
(one folder per model, ``{fold}`` in its name standing for the fold number) and scores direct
inference on the fold's validation subjects exactly as ``tune_inner.py`` does (level 2, whole
trials, each subject aligned on its own). An ensemble's similarities are its members' mean
cosine similarities (what :class:`~leaf_sk.nn.LeafEnsemble` computes), so every ensemble of the
models is scored from each model's similarities, computed once. Run from the repository root,
after ``tune_inner.py --fold K --seed S --out runs/seedS-fK`` for K = 0-3::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensemble_inner.py \\
        runs/seed0-f{fold} runs/seed1-f{fold} runs/seed2-f{fold}

Prints, per dataset, the mean over all validation subjects (13 PhysioNet, 7 Kalunga2016) of
each model alone and of the ensemble of all of them, with the per-subject scores; with
``--subsets``, the mean score of every ensemble of k of the models, for each k; with
``--check-file``, the ensemble written as ``leaf-sk ensemble --float16
--no-reconstruction-heads`` writes it (``--storage int8``: as ``--int8`` writes it), loaded and
scored as one model.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import tune_inner
from leaf_sk.checkpoint import combine_checkpoints, load_checkpoint, read_metadata
from leaf_sk.text import get_text_encoder
from leaf_sk.tuner import MODEL_FILE


def _score(name, cos, truth):
    if name == "PhysionetMI":
        return float(roc_auc_score(truth, cos[:, 1] - cos[:, 0]))
    return float((cos.argmax(1) == truth).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", metavar="FOLDER",
                        help="a tune_inner.py --out folder per model, with {fold} for the fold")
    parser.add_argument("--subsets", action="store_true",
                        help="also the mean score of the ensembles of every k of the models")
    parser.add_argument("--check-file", action="store_true",
                        help="also score the ensemble file (no reconstruction heads)")
    parser.add_argument("--storage", choices=("float16", "int8"), default="float16",
                        help="storage of the --check-file ensemble (default float16)")
    args = parser.parse_args(argv)
    if len(args.folders) < 2 or any("{fold}" not in f for f in args.folders):
        parser.error("give two or more folders, each with {fold} in its name")
    torch.set_num_threads(1)
    n_models = len(args.folders)
    # cosines[(dataset, subject)] = (list of per-model similarity arrays, true class indices)
    cosines, file_scores, encoder = {}, {}, None
    for fold in range(len(tune_inner.FOLDS["PhysionetMI"])):
        tune_inner.use_fold(fold)
        paths = [f"{folder.format(fold=fold)}/{MODEL_FILE}" for folder in args.folders]
        encoder = encoder or get_text_encoder(read_metadata(paths[0])["text_encoder"]["name"])
        models = [load_checkpoint(p)[0] for p in paths]
        ensemble = None
        if args.check_file:
            with tempfile.TemporaryDirectory() as tmp:
                ensemble = load_checkpoint(combine_checkpoints(
                    paths, f"{tmp}/e.safetensors", dtype=getattr(torch, args.storage),
                    reconstruction_heads=False))[0]
        for name in tune_inner.SPLITS:
            X, y, subject, ch_names, sfreq = tune_inner.load(name)
            valid = tune_inner.SPLITS[name]["valid"]
            for model in models:
                for s, record in tune_inner.direct_scores(model, encoder, name, X, y, subject,
                                                          ch_names, sfreq, valid,
                                                          keep_outputs=True).items():
                    entry = cosines.setdefault((name, s), ([], record["truth"]))
                    entry[0].append(record["cos"])
            if ensemble is not None:
                for s, record in tune_inner.direct_scores(ensemble, encoder, name, X, y, subject,
                                                          ch_names, sfreq, valid,
                                                          keep_outputs=True).items():
                    file_scores[(name, s)] = _score(name, record["cos"], record["truth"])
    for name in tune_inner.SPLITS:
        keys = sorted(k for k in cosines if k[0] == name)

        def report(label, per_subject):
            print(f"{name} {label}: mean {np.mean(per_subject):.3f} over {len(keys)} subjects; "
                  + ", ".join(f"s{k[1]} {v:.3f}" for k, v in zip(keys, per_subject)), flush=True)

        def ensemble_scores(members):
            return [_score(name, np.mean([cosines[k][0][i] for i in members], axis=0),
                           cosines[k][1]) for k in keys]

        for i in range(n_models):
            report(f"model {i}", ensemble_scores([i]))
        report(f"ensemble of all {n_models}", ensemble_scores(range(n_models)))
        if file_scores:
            report(f"ensemble file ({args.storage}, no reconstruction heads)",
                   [file_scores[k] for k in keys])
        if args.subsets:
            means = [np.mean([np.mean(ensemble_scores(c))
                              for c in itertools.combinations(range(n_models), k)])
                     for k in range(1, n_models + 1)]
            print(f"{name} mean over the ensembles of k models, k = 1..{n_models}: "
                  + ", ".join(f"{m:.3f}" for m in means), flush=True)


if __name__ == "__main__":
    main()
