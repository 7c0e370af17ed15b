"""LEAF pipelines beside Riemannian baselines in the same MOABB evaluations: RESULTS.md's tables.

A front end to :func:`leaf_sk.benchmark.run_benchmark` (``leaf-sk benchmark`` on the command
line) with every pipeline, on leaf-sk's split (../shared/docs/EVALUATION.md): Kalunga2016
subjects 1-8 and PhysioNet 1-3, 5-14 are the training side (also the pretraining data of the
packaged checkpoint); scores are only for subjects no training stage saw (Kalunga 9-11,
PhysioNet 15-18, 42).

- within-session: MOABB's 5-fold CV inside each session of each test subject;
- cross-subject: train on the training subjects, test on each test subject in turn.

``--dataset kalunga`` keeps RESULTS.md's four classes (``SSVEP(n_classes=4)``, with the
resting class, so no CCA) and 20 fine-tuning epochs; ``leaf-sk benchmark Kalunga2016`` uses the
three stimulated classes with CCA. ``--dataset physionet`` is ``leaf-sk benchmark PhysionetMI
--pipelines all``. Run from the repository root (``MNE_DATA`` must point at the recordings)::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        .venv/bin/python benchmarks/moabb_eval.py --dataset physionet --out benchmarks/results

Writes ``<out>/<dataset>/`` (scores.csv, summary.csv, summary.md, plots; a rerun continues
from scores.csv) and prints the table.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pandas as pd

from leaf_sk.benchmark import format_table, run_benchmark, summarize, write_report

DATASETS = {"kalunga": ("Kalunga2016", 20), "physionet": ("PhysionetMI", 10)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="kalunga")
    parser.add_argument("--evaluation", choices=["within", "cross", "both"], default="both")
    parser.add_argument("--checkpoint", default="leaf-small",
                        help="LEAF checkpoint (packaged name or path; 'none': random weights)")
    parser.add_argument("--epochs-tuned", type=int, default=None,
                        help="epochs of LEAF-finetuned (default: 20 kalunga, 10 physionet)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--summarise", type=Path, default=None,
                        help="only print the summary of a scores.csv written earlier")
    args = parser.parse_args(argv)
    if args.summarise:
        print(format_table(summarize(pd.read_csv(args.summarise))))
        return
    warnings.filterwarnings("ignore", category=UserWarning)
    name, epochs = DATASETS[args.dataset]
    paradigm = None
    if args.dataset == "kalunga":
        from moabb.paradigms import SSVEP

        paradigm = SSVEP(n_classes=4)
    out = args.out / name
    scores = run_benchmark(
        name, evaluation=args.evaluation, pipelines=["all"], paradigm=paradigm,
        checkpoint=None if args.checkpoint.lower() == "none" else args.checkpoint,
        fine_tune_epochs=args.epochs_tuned or epochs, out=out, progress=True)
    table, _ = write_report(scores, out)
    print(format_table(table))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
