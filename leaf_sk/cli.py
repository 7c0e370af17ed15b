"""The ``leaf-sk`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

#: Exit status of a run stopped by Ctrl-C (SIGINT), as shells report it: 128 + 2.
EXIT_INTERRUPTED = 130


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default; "none" where an option has no value by default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or action.default is argparse.SUPPRESS or action.required
                or not action.option_strings):
            return text
        if action.default is None or action.default == []:
            return text + " (default: none)"
        return text + " (default: %(default)s)"


def _build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="leaf-sk", description="LEAF EEG foundation model tools.",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the leaf-sk version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    pre = sub.add_parser(
        "pretrain", help="STR-pretrain the LEAF Tower on unlabelled EEG.",
        description="STR-pretrain the LEAF Tower on unlabelled EEG. Rerunning the same command "
                    "continues the run in --out from its last complete epoch.",
        formatter_class=_HelpFormatter)
    pre.add_argument("--moabb", action="append", default=[], metavar="NAME:SUBJECTS",
                     help="a MOABB dataset and its subjects, e.g. PhysionetMI:1-3,5-14 "
                          "(repeatable)")
    pre.add_argument("--files", nargs="+", default=[], metavar="PATH",
                     help="EEG files (Muse CSV or any format MNE reads), or folders: a folder "
                          "gives the EEG files in it and its sub-folders, sorted")
    pre.add_argument("--out", required=True, metavar="DIR",
                     help="folder for resume.pt, tower.safetensors and history.json (required)")
    pre.add_argument("--size", default="small", choices=["tiny", "small", "base"],
                     help="network size; base is the paper's, small is sized for CPUs")
    pre.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="start from these Tower weights (a packaged name or a .safetensors "
                          "file) instead of random ones")
    pre.add_argument("--l-freq", type=float, default=None, metavar="HZ", help="high-pass edge, Hz")
    pre.add_argument("--h-freq", type=float, default=None, metavar="HZ",
                     help="low-pass edge, Hz (skipped for recordings whose Nyquist frequency "
                          "it reaches)")
    pre.add_argument("--segment-seconds", type=float, default=4.0, metavar="S",
                     help="recordings are cut into segments of this length, s")
    pre.add_argument("--n-windows", type=int, default=8, metavar="N",
                     help="0.5-s windows per training example")
    pre.add_argument("--max-epochs", type=int, default=10, metavar="N",
                     help="epochs in total, counting those of a resumed run")
    pre.add_argument("--batch-size", type=int, default=64, metavar="N",
                     help="segments per training step")
    pre.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    pre.add_argument("--lr-tokenizer", type=float, default=1e-3, metavar="LR",
                     help="peak learning rate of the tokenizer")
    pre.add_argument("--device", default="auto",
                     help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    pre.add_argument("--distributed", action="store_true",
                     help="train under Accelerate; launch with torchrun or accelerate launch")
    pre.add_argument("--no-resume", action="store_true",
                     help="start over even if --out holds a run")
    pre.add_argument("--seed", type=int, default=0, metavar="N",
                     help="seeds initialisation, shuffling, masks and dropout")
    pre.add_argument("--quiet", action="store_true",
                     help="print no data summary, progress bar or per-epoch lines")

    bench = sub.add_parser(
        "benchmark", help="Compare LEAF with the usual baselines in MOABB evaluations.",
        description="Score the LEAF pipelines beside the baselines of the dataset's paradigm "
                    "in the same MOABB evaluation objects: within each test subject's sessions "
                    "and across subjects (trained on the training subjects, tested on each "
                    "test subject). Prints the table and writes scores.csv, summary.csv, "
                    "summary.md and PNG plots to --out. Rerunning the same command continues "
                    "an interrupted run.",
        epilog="Pipelines. LEAF: LEAF+LR (frozen LeafEncoder, logvar pooling, + logistic "
               "regression), LEAF-finetuned (LeafInstructionClassifier trained per fold), "
               "LEAF-zeroshot (direct inference from the label texts); not by default: "
               "LEAF-direct (LEAF-zeroshot on each call's trials re-centred, for checkpoints "
               "tuned on aligned EEG such as `leaf-sk tune` writes), LEAF-aligned+LR (LEAF+LR on each call's trials re-centred, alignment='euclidean'), "
               "LEAF-meanstd+LR, LEAF-random+LR, LEAF-random-meanstd+LR. Baselines, motor "
               "imagery: CSP+LDA, TS+LR, MDM, frontal-control (the eye-movement control); SSVEP: "
               "TS+LR, MDM, FB-TS+LR, CCA; P300: Xdawn+TS+LR, ERPCov+MDM; not by default, for "
               "motor imagery and SSVEP: ShallowFBCSPNet, EEGNet (trained from scratch). Groups: "
               "default, all, leaf, baselines.",
        formatter_class=_HelpFormatter)
    bench.add_argument("dataset", metavar="DATASET",
                       help="a MOABB dataset class name, e.g. Kalunga2016 or PhysionetMI")
    bench.add_argument("--subjects", default=None, metavar="SUBJECTS",
                       help="test subjects, e.g. 9-11; none means leaf-sk's split for "
                            "Kalunga2016 (9-11) and PhysionetMI (15-18,42), and is an error "
                            "for other datasets")
    bench.add_argument("--train-subjects", default=None, metavar="SUBJECTS",
                       help="training subjects of the cross-subject evaluation, e.g. 1-8; "
                            "none means leaf-sk's split for Kalunga2016 (1-8) and "
                            "PhysionetMI (1-3,5-14)")
    bench.add_argument("--evaluation", default="both", choices=["within", "cross", "both"],
                       help="within-session, cross-subject, or both")
    bench.add_argument("--pipelines", nargs="+", default=None, metavar="NAME",
                       help="pipelines or groups to run (names below; comma-separated also "
                            "works); none means the group 'default': the LEAF pipelines and "
                            "the paradigm's baselines")
    bench.add_argument("--checkpoint", default="leaf-small-bci", metavar="NAME|PATH",
                       help="LEAF checkpoint: a packaged name, a .safetensors file or a "
                            "`leaf-sk pretrain` folder; 'none' for random weights. Refused "
                            "when its provenance lists a test subject")
    bench.add_argument("--fine-tune-epochs", type=int, default=5, metavar="N",
                       help="training epochs of LEAF-finetuned")
    bench.add_argument("--out", default=None, metavar="DIR",
                       help="folder for the scores, tables and plots; none means "
                            "results/benchmark-DATASET")
    bench.add_argument("--no-resume", action="store_true",
                       help="recompute every score even if --out holds some")
    bench.add_argument("--seed", type=int, default=0, metavar="N",
                       help="seeds the folds, the LEAF pipelines and the networks trained from "
                            "scratch")
    bench.add_argument("--threads", type=int, default=1, metavar="N",
                       help="torch threads (0: torch's default, one per core). The benchmark "
                            "trains many small models; on a busy 2-core machine two threads "
                            "waited on each other, 13 times slower per training step than one")
    bench.add_argument("--quiet", action="store_true",
                       help="no progress bar; print only the table and the files written")
    tune = sub.add_parser(
        "tune", help="Instruction-tune one LEAF model on several labelled MOABB datasets.",
        description="Instruction-tune one LEAF model (Tower and Q-Former) on labelled MOABB "
                    "datasets at once, each read with its paradigm as `leaf-sk benchmark` reads "
                    "it (motor imagery left/right: LeftRightImagery, 8-32 Hz; SSVEP: the "
                    "stimulated classes). All label texts form one label space. Writes "
                    "tuned.safetensors (load it with LeafInstructionClassifier or LeafEncoder) "
                    "and history.json to --out; rerunning continues an interrupted run.",
        formatter_class=_HelpFormatter)
    tune.add_argument("--moabb", action="append", default=[], metavar="NAME:SUBJECTS",
                      help="a MOABB dataset and its training subjects, e.g. PhysionetMI:1-3,5-14 "
                           "(repeatable, at least one)")
    tune.add_argument("--out", required=True, metavar="DIR", help="output folder (required)")
    tune.add_argument("--checkpoint", default="none", metavar="NAME|PATH",
                      help="starting weights; 'none' for random weights of --size")
    tune.add_argument("--size", default="small", choices=["tiny", "small", "base"],
                      help="network size with --checkpoint none")
    tune.add_argument("--config", default=None, metavar="JSON",
                      help='network config overrides for --checkpoint none, e.g. '
                           '\'{"temporal_kernel": 100}\'')
    tune.add_argument("--no-power-memory", action="store_true",
                      help="no band-power tokens for the Q-Former (the release's network)")
    tune.add_argument("--no-spectral-memory", action="store_true",
                      help="no spectral tokens (per-window log spectra of learned spatial "
                           "filters of the occipital sites) for the Q-Former")
    tune.add_argument("--no-alignment", action="store_true",
                      help="no Euclidean alignment of each subject's trials")
    tune.add_argument("--mirror", action="store_true",
                      help="augment left/right hand imagery with the montage's mirror image, "
                           "hands swapped (on PhysioNet it stopped the Q-Former path from "
                           "learning at all: off by default)")
    tune.add_argument("--softmax-over", default="task", choices=["task", "all"],
                      help="cross-entropy over each task's own label texts, or over all of them")
    tune.add_argument("--distributed", action="store_true",
                      help="train under Accelerate; launch with torchrun or accelerate launch")
    tune.add_argument("--batch-lengths", default="shortest", choices=["shortest", "own"],
                      help="crop each step's batches to the shortest task's trials (the "
                           "release), or keep each task's own length")
    tune.add_argument("--positions", default="start", choices=["start", "random", "crop"],
                      help="first positional index of each training batch: 0 (the release), "
                           "random, or where its crop starts in the trials")
    tune.add_argument("--crop-step", action="append", default=None, metavar="[DATASET=]N",
                      help="granularity of the training crops' start in samples at 200 Hz: "
                           "100 (default) keeps the 0.5-s window grid, 1 shifts by any sample; "
                           "DATASET=N sets one dataset's (repeatable), e.g. Kalunga2016=1")
    tune.add_argument("--max-epochs", type=int, default=8, metavar="N", help="epochs in total")
    tune.add_argument("--branches", type=int, default=1, metavar="N",
                      help="after --branch-epoch epochs, train N continuations with their own "
                           "batches and average their weights (1: one run)")
    tune.add_argument("--branch-epoch", type=int, default=2, metavar="N",
                      help="epochs trained before the run branches (below --max-epochs)")
    tune.add_argument("--batch-size", type=int, default=32, metavar="N",
                      help="trials per dataset per step")
    tune.add_argument("--lr", type=float, default=2e-4, help="peak learning rate")
    tune.add_argument("--lr-tokenizer", type=float, default=1e-3, metavar="LR",
                      help="peak learning rate of the tokenizer")
    tune.add_argument("--threads", type=int, default=1, metavar="N",
                      help="torch threads (0: torch's default)")
    tune.add_argument("--seed", type=int, default=0, metavar="N",
                      help="seeds initialisation, batches, crops and dropout (default 0)")
    tune.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    ensemble = sub.add_parser(
        "ensemble", help="Combine instruction-tuned checkpoints into one ensemble file.",
        description="Write several instruction-tuned checkpoints of one config (e.g. `leaf-sk "
                    "tune` runs with other --seed) as one file whose members' embeddings are "
                    "averaged by LeafInstructionClassifier and LeafEncoder.")
    ensemble.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                          help="two or more tuned.safetensors files (or packaged names)")
    ensemble.add_argument("--out", required=True, metavar="FILE", help="the ensemble file")
    storage = ensemble.add_mutually_exclusive_group()
    storage.add_argument("--float16", action="store_true",
                         help="store the weights as float16 (half the size; loaded as float32)")
    storage.add_argument("--int8", action="store_true",
                         help="store each weight matrix as int8 with one float16 scale per row, "
                              "the rest as float16 (a quarter of the size; loaded as float32)")
    ensemble.add_argument("--no-reconstruction-heads", action="store_true",
                          help="leave out the Towers' STR reconstruction heads, which inference "
                               "never runs (0.34 M parameters per 'small' member)")
    return parser


class _UsageError(ValueError):
    """A problem with the command line itself."""


class _Interrupted(Exception):
    """Ctrl-C outside training; the message says what was (not) written."""


def _is_main_process():
    """False in the processes of a torchrun launch other than rank 0."""
    return os.environ.get("RANK", "0") == "0"


def _load_data(args):
    """The recordings and, per dataset or file group, what was loaded (JSON-able)."""
    import mne

    from .datasets import band_pass, find_eeg_files, load_files, load_moabb, parse_subjects

    groups = []
    with mne.utils.use_log_level("warning"):  # MNE's per-run notes would drown the summary
        for spec in args.moabb:
            name, _, subjects = spec.partition(":")
            if not subjects:
                raise _UsageError(f"--moabb {spec!r} needs subjects, e.g. {name}:1-5")
            raws, description = load_moabb(name, parse_subjects(subjects))
            groups.append((raws, description))
        if args.files:
            files, folders = find_eeg_files(args.files)
            raws = load_files(files)
            recordings = [{"file": str(path), "seconds": raw.n_times / raw.info["sfreq"],
                           "sfreq": float(raw.info["sfreq"])} for path, raw in zip(files, raws)]
            groups.append((raws, {"source": "files", "files": [str(path) for path in files],
                                  "folders": folders, "recordings": recordings}))
        for raws, _ in groups:
            band_pass(raws, args.l_freq, args.h_freq)
    return groups


def _band_text(raws, l_freq, h_freq):
    """The band applied to these recordings, saying where a low-pass edge was skipped."""
    from .datasets import applied_band, describe_band

    by_band = {}
    for raw in raws:
        by_band.setdefault(applied_band(raw.info["sfreq"], l_freq, h_freq), set()).add(
            raw.info["sfreq"])
    parts = []
    for (low, high), rates in sorted(by_band.items(), key=lambda item: min(item[1])):
        text = describe_band(low, high)
        if h_freq is not None and high is None:
            text += (f" (low-pass {h_freq:g} Hz skipped: at or above the Nyquist frequency, "
                     f"{min(rates) / 2:g} Hz)")
        if len(by_band) > 1:
            text += " at " + ", ".join(f"{rate:g}" for rate in sorted(rates)) + " Hz"
        parts.append(text)
    return "; ".join(parts)


def _ranges(numbers):
    """``[1, 2, 3, 5]`` to ``"1-3, 5"``."""
    numbers, parts, start = sorted(numbers), [], None
    for index, number in enumerate(numbers):
        if start is None:
            start = number
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            parts.append(f"{start}" if start == number else f"{start}-{number}")
            start = None
    return ", ".join(parts)


def _duration(seconds):
    """``"1.92 h"``, ``"12.5 min"`` or ``"15 s"``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _runs_text(description):
    """``"12 runs (3 per subject)"``; the PhysioNet run numbers for PhysionetMI."""
    from collections import Counter

    recordings = description["recordings"]
    per_subject = Counter(r["subject"] for r in recordings)
    usual, _ = Counter(per_subject.values()).most_common(1)[0]
    others = sorted((n, s) for s, n in per_subject.items() if n != usual)
    text = f"{len(recordings)} runs ({usual} per subject"
    text += "".join(f"; {n} for subject {s}" for n, s in others) + ")"
    numbers = sorted({r["physionet_run"] for r in recordings if "physionet_run" in r})
    if numbers:
        text += f": PhysioNet runs {', '.join(map(str, numbers))}"
    return text


def _summarize(groups, args):
    """Per group, what was loaded, as printed lines and as the checkpoint's data record."""
    from .datasets import count_segments

    lines, records = [], []
    total_segments, total_seconds = 0, 0.0
    for raws, description in groups:
        segments = count_segments(raws, args.segment_seconds)
        seconds = sum(raw.n_times / raw.info["sfreq"] for raw in raws)
        rates = ", ".join(f"{rate:g}" for rate in sorted({raw.info["sfreq"] for raw in raws}))
        band = _band_text(raws, args.l_freq, args.h_freq)
        amount = (f"{segments} segments, {_duration(seconds)} of EEG at {rates} Hz; "
                  f"filter: {band}")
        if description["source"] == "moabb":
            subjects = description["subjects"]
            lines.append(f"  {description['name']}: subjects {_ranges(subjects)} "
                         f"({len(subjects)}); {_runs_text(description)}; {amount}")
            for skipped in description["skipped_runs"]:
                lines.append(f"    not loaded: runs {', '.join(map(str, skipped['runs']))} of "
                             f"each subject ({skipped['why']})")
        else:
            found = "".join(f"; {f['n_files']} EEG files found in {f['folder']}"
                            + (f" ({f['n_ignored']} other files ignored)" if f["n_ignored"] else "")
                            for f in description["folders"])
            lines.append(f"  files: {len(raws)} recordings{found}; {amount}")
        records.append({**description, "n_segments": segments, "hours": seconds / 3600,
                        "band": band})
        total_segments += segments
        total_seconds += seconds
    if len(groups) > 1:
        lines.append(f"  total: {total_segments} segments, {_duration(total_seconds)} of EEG")
    lines.insert(0, f"data (segments of {args.segment_seconds:g} s):")
    record = {"datasets": records, "band": {"l_freq": args.l_freq, "h_freq": args.h_freq},
              "segment_seconds": args.segment_seconds, "n_segments": total_segments,
              "hours": total_seconds / 3600}
    return lines, record


def _report_interrupted(pretrainer, args):
    """What an interrupted run left in --out and how to continue it, on stderr."""
    from .pretrainer import MODEL_FILE, RESUME_FILE

    out = Path(args.out)
    epochs = len(pretrainer.history_)
    how = ("run the same command without --no-resume" if args.no_resume
           else "run the same command again")
    lines = [f"leaf-sk pretrain: interrupted after epoch {epochs} of {args.max_epochs}."]
    if pretrainer.checkpoint_path_ is not None:
        lines.append(f"  The last complete epoch, {epochs}, is in {pretrainer.checkpoint_path_} "
                     f"(its history in {out / 'history.json'}); {MODEL_FILE} is written when "
                     "the run ends.")
        lines.append(f"  To continue, {how}: it resumes from {out / RESUME_FILE}.")
    else:
        lines.append("  No epoch was complete: no checkpoint was written.")
        lines.append(f"  To start again, {how}.")
    model = out / MODEL_FILE
    if model.is_file():
        try:
            from .checkpoint import read_metadata

            ended = f" (epoch {read_metadata(model)['provenance']['epochs']})"
        except (ValueError, KeyError, OSError):
            ended = ""
        lines.append(f"  {model} is the result of an earlier run{ended}, not of this one.")
    print("\n".join(lines), file=sys.stderr)


def _pretrain(args):
    from . import LeafPretrainer
    from ._atomic import write_text_atomic
    from ._base import check_torch_device
    from .pretrainer import MODEL_FILE, RESUME_FILE

    if not args.moabb and not args.files:
        raise _UsageError("give data with --moabb NAME:SUBJECTS and/or --files PATH ...")
    pretrainer = LeafPretrainer(
        args.size, checkpoint=args.checkpoint, segment_seconds=args.segment_seconds,
        n_windows=args.n_windows, max_epochs=args.max_epochs, batch_size=args.batch_size,
        lr=args.lr, lr_tokenizer=args.lr_tokenizer, checkpoint_dir=args.out,
        resume=not args.no_resume, distributed=args.distributed, device=args.device,
        verbose=0 if args.quiet else 1, random_state=args.seed)
    # Bad values fail before minutes of data loading.
    pretrainer._validate_params()
    check_torch_device(args.device)
    try:
        groups = _load_data(args)
    except KeyboardInterrupt:
        raise _Interrupted("interrupted while loading the data; nothing was trained or "
                           "written.") from None
    lines, data_description = _summarize(groups, args)
    resume_file = Path(args.out) / RESUME_FILE
    if not args.no_resume and resume_file.is_file():
        lines.append(f"continuing the run in {resume_file} (--no-resume starts over)")
    if not args.quiet and _is_main_process():
        print("\n".join(lines), flush=True)
    with warnings.catch_warnings():
        # The command reports an interruption itself, below.
        warnings.filterwarnings("ignore", message="Training was interrupted",
                                category=UserWarning)
        pretrainer.fit([raw for raws, _ in groups for raw in raws],
                       data_description=data_description)
    if not pretrainer._is_main_process():
        return EXIT_INTERRUPTED if pretrainer.interrupted_ else 0
    write_text_atomic(Path(args.out) / "history.json", json.dumps(pretrainer.history_, indent=1))
    if pretrainer.interrupted_:
        _report_interrupted(pretrainer, args)
        return EXIT_INTERRUPTED
    last = pretrainer.history_[-1] if pretrainer.history_ else {}
    print(f"trained {len(pretrainer.history_)} epochs; last: "
          + (", ".join(f"{k} {last[k]:.4f}" for k in
                       ("train_L_S", "train_L_T", "valid_L_S", "valid_L_T", "valid_zero_S",
                        "valid_zero_T") if k in last) or "none"))
    print(f"training windows per second: {pretrainer.windows_per_second_:.0f}")
    print(f"wrote {Path(args.out) / MODEL_FILE}")
    return 0


def _benchmark(args):
    out = Path(args.out if args.out is not None else f"results/benchmark-{args.dataset}")
    try:
        return _run_benchmark(args, out)
    except KeyboardInterrupt:
        saved = out / "scores.csv"
        kept = (f"the scores finished so far are in {saved}" if saved.is_file()
                else "no score was finished")
        raise _Interrupted(f"interrupted; {kept}. Run the same command again to continue from "
                           "them.") from None


def _quiet_model_loading():
    """No per-file progress bars of Hugging Face libraries under the benchmark's own bar."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


def _run_benchmark(args, out):
    from .benchmark import (describe_run, format_table, get_dataset, run_benchmark,
                            write_report)
    from .datasets import parse_subjects

    def subjects(text, option):
        if text is None:
            return None
        try:
            return parse_subjects(text)
        except ValueError as exc:
            raise _UsageError(f"{option}: {exc}") from None

    test = subjects(args.subjects, "--subjects")
    train = subjects(args.train_subjects, "--train-subjects")
    if args.fine_tune_epochs < 1:
        raise _UsageError(f"--fine-tune-epochs {args.fine_tune_epochs}: give 1 or more")
    if args.threads < 0:
        raise _UsageError(f"--threads {args.threads}: give 0 (torch's default) or more")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    checkpoint = None if str(args.checkpoint).lower() == "none" else args.checkpoint
    dataset = get_dataset(args.dataset)
    _quiet_model_loading()
    scores = run_benchmark(
        dataset, subjects=test, train_subjects=train, evaluation=args.evaluation,
        pipelines=args.pipelines, checkpoint=checkpoint, fine_tune_epochs=args.fine_tune_epochs,
        out=out, resume=not args.no_resume, progress=not args.quiet, random_state=args.seed)
    table, files = write_report(scores, out)
    lines = describe_run(scores)
    for evaluation, part in table.groupby("evaluation", sort=False):
        lines += ["", f"{evaluation}:", format_table(part.drop(columns="evaluation"))]
    lines += ["", f"wrote {out / 'scores.csv'}, {files['summary_csv']}, {files['summary_md']}",
              f"plot: {files['plot']}"]
    if files["moabb_plots"]:
        lines.append("MOABB plots: " + ", ".join(str(p) for p in files["moabb_plots"]))
    print("\n".join(lines), flush=True)
    return 0


def _json_option(text, option):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _UsageError(f"{option} {text!r} is not JSON ({exc}); e.g. "
                          f"{option} '{{\"temporal_kernel\": 100}}'") from None
    if not isinstance(value, dict):
        raise _UsageError(f"{option} {text!r} must be a JSON object of config keys")
    return value


def _ensemble(args):
    import torch

    from .checkpoint import combine_checkpoints

    dtype = torch.float16 if args.float16 else torch.int8 if args.int8 else None
    path = combine_checkpoints(args.checkpoints, args.out, dtype=dtype,
                               reconstruction_heads=not args.no_reconstruction_heads)
    print(f"wrote {path} ({len(args.checkpoints)} members, {path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _tune(args):
    import mne
    import numpy as np

    from .benchmark import _check_on_disk, choose_paradigm, get_dataset, label_text
    from .datasets import parse_subjects
    from .tuner import MODEL_FILE, LeafInstructionTuner, TuningTask

    if not args.moabb:
        raise _UsageError("give at least one --moabb NAME:SUBJECTS")
    if args.max_epochs < 1:
        raise _UsageError(f"--max-epochs {args.max_epochs}: give 1 or more")
    if args.branches < 1:
        raise _UsageError(f"--branches {args.branches}: give 1 or more")
    if args.branches > 1 and args.max_epochs < 2:
        raise _UsageError(f"--branches {args.branches} needs --max-epochs 2 or more (an epoch "
                          "before the run branches, one after)")
    if args.branches > 1 and not 1 <= args.branch_epoch < args.max_epochs:
        raise _UsageError(f"--branch-epoch {args.branch_epoch}: give 1 to {args.max_epochs - 1} "
                          f"(below --max-epochs {args.max_epochs})")
    config = _json_option(args.config, "--config")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    families = {"imagery": "motor_imagery", "ssvep": "ssvep", "p300": "default"}
    tasks, described = [], []
    _quiet_model_loading()
    for spec in args.moabb:
        name, _, text = spec.partition(":")
        if not text:
            raise _UsageError(f"--moabb {spec!r} needs subjects, e.g. {name}:1-5")
        try:
            subjects = parse_subjects(text)
        except ValueError as exc:
            raise _UsageError(f"--moabb {spec!r}: {exc}") from None
        dataset = get_dataset(name)
        paradigm, family = choose_paradigm(dataset)
        with mne.utils.use_log_level("error"):
            _check_on_disk(dataset, subjects)  # an absent subject: one message naming it
            epochs, labels, metadata = paradigm.get_data(dataset, subjects, return_epochs=True)
        labels = np.asarray(labels).astype(str)
        texts = {str(event): label_text(str(event), family) for event in np.unique(labels)}
        mirror = ({"left_hand": "right_hand", "right_hand": "left_hand"}
                  if args.mirror and set(texts) == {"left_hand", "right_hand"} else None)
        tasks.append(TuningTask(epochs, labels, families[family], texts,
                                groups=metadata["subject"].to_numpy(), mirror_labels=mirror,
                                name=type(dataset).__name__))
        described.append({"source": "moabb", "name": type(dataset).__name__,
                          "subjects": [int(s) for s in subjects],
                          "paradigm": type(paradigm).__name__, "trials": int(len(labels)),
                          "label_texts": texts})
        if not args.quiet and _is_main_process():
            print(f"{type(dataset).__name__}: subjects {text}, {len(labels)} trials, "
                  f"classes {texts}", flush=True)
    out = Path(args.out)
    crop_step = _crop_step(args.crop_step, [task.name for task in tasks])
    tuner = LeafInstructionTuner(
        checkpoint=None if str(args.checkpoint).lower() == "none" else args.checkpoint,
        size=args.size, config=config,
        power_memory=not args.no_power_memory, spectral_memory=not args.no_spectral_memory,
        alignment=None if args.no_alignment else "euclidean", max_epochs=args.max_epochs,
        lr=args.lr, lr_tokenizer=args.lr_tokenizer, batch_size=args.batch_size,
        softmax_over=args.softmax_over, batch_lengths=args.batch_lengths,
        positions=args.positions, crop_step=crop_step, n_branches=args.branches,
        branch_epoch=args.branch_epoch, checkpoint_dir=str(out), distributed=args.distributed,
        verbose=0 if args.quiet or not _is_main_process() else 1, random_state=args.seed)
    tuner.fit(tasks)
    if not _is_main_process():
        return 0
    tuner.save(out / MODEL_FILE, provenance={"data": {"datasets": described}})
    from ._atomic import write_text_atomic

    write_text_atomic(out / "history.json", json.dumps(tuner.history_, indent=1))
    print(f"wrote {out / MODEL_FILE} and {out / 'history.json'}", flush=True)
    return 0


def _crop_step(values, names):
    """``--crop-step`` as the tuner's ``crop_step``: an int, or a dict of dataset name to int."""
    if not values:
        return 100
    steps, default = {}, None
    for value in values:
        name, _, text = value.rpartition("=")
        if name and name not in names:
            raise _UsageError(f"--crop-step {value!r}: {name!r} is not a dataset of this run "
                              f"(datasets: {names}).")
        try:
            step = int(text)
        except ValueError:
            raise _UsageError(f"--crop-step {value!r}: the step must be an integer number of "
                              "samples, e.g. --crop-step 1 or --crop-step Kalunga2016=1") from None
        if not 1 <= step <= 100:
            raise _UsageError(f"--crop-step {value!r}: the step must be from 1 to 100 samples.")
        if name:
            steps[name] = step
        else:
            default = step
    if not steps:
        return default
    if default is not None:
        steps = {**{name: default for name in names}, **steps}
    return steps


def main(argv=None):
    """Entry point of ``leaf-sk``.

    Returns
    -------
    int
        0 on success, 2 for bad arguments or data (with a one-message explanation on
        stderr), 130 when interrupted (Ctrl-C).
    """
    parser = _build_parser()
    args = parser.parse_args(argv)  # exits with status 2 and a usage line on bad syntax
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    command = args.command

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"leaf-sk {command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            # Deprecation notes of the libraries underneath are not for the command's user.
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(?!leaf_sk)")
            if command == "pretrain":
                return _pretrain(args)
            if command == "benchmark":
                return _benchmark(args)
            if command == "tune":
                return _tune(args)
            if command == "ensemble":
                return _ensemble(args)
    except _UsageError as exc:
        print(f"usage: leaf-sk {command} ... (see leaf-sk {command} --help)\n"
              f"leaf-sk {command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError) as exc:
        # Bad values (sizes, files, channels, rates): a message, not a traceback.
        print(f"leaf-sk {command}: error: {exc}", file=sys.stderr)
        return 2
    except _Interrupted as exc:
        print(f"leaf-sk {command}: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"leaf-sk {command}: interrupted. Run the same command again to continue: a run "
              f"resumes from the last complete epoch in {getattr(args, 'out', '--out')}.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1


if __name__ == "__main__":
    sys.exit(main())
