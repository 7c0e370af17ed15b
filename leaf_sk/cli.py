"""The ``leaf-sk`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _build_parser():
    parser = argparse.ArgumentParser(prog="leaf-sk", description="LEAF EEG foundation model tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="STR-pretrain the LEAF Tower on unlabelled EEG.")
    pre.add_argument("--moabb", action="append", default=[], metavar="NAME:SUBJECTS",
                     help="a MOABB dataset and its subjects, e.g. PhysionetMI:1-3,5-14 (repeatable)")
    pre.add_argument("--files", nargs="+", default=[], metavar="PATH",
                     help="EEG files: Muse CSV or any format MNE reads")
    pre.add_argument("--out", required=True, help="folder for resume.pt, tower.safetensors and history.json")
    pre.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    pre.add_argument("--l-freq", type=float, default=None, help="high-pass edge, Hz")
    pre.add_argument("--h-freq", type=float, default=None, help="low-pass edge, Hz")
    pre.add_argument("--segment-seconds", type=float, default=4.0)
    pre.add_argument("--n-windows", type=int, default=8)
    pre.add_argument("--max-epochs", type=int, default=10)
    pre.add_argument("--batch-size", type=int, default=64)
    pre.add_argument("--lr", type=float, default=1e-4)
    pre.add_argument("--lr-tokenizer", type=float, default=1e-3)
    pre.add_argument("--device", default="auto")
    pre.add_argument("--distributed", action="store_true",
                     help="train under Accelerate; launch with torchrun or accelerate launch")
    pre.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--quiet", action="store_true")
    return parser


class _UsageError(ValueError):
    """A problem with the command line itself."""


def _pretrain(args):
    from . import LeafPretrainer
    from ._atomic import write_text_atomic
    from .datasets import band_pass, load_files, load_moabb_raws, parse_subjects

    if not args.moabb and not args.files:
        raise _UsageError("give data with --moabb NAME:SUBJECTS and/or --files PATH ...")
    raws = []
    for spec in args.moabb:
        name, _, subjects = spec.partition(":")
        if not subjects:
            raise _UsageError(f"--moabb {spec!r} needs subjects, e.g. {name}:1-5")
        raws += load_moabb_raws(name, parse_subjects(subjects))
    raws += load_files(args.files)
    band_pass(raws, args.l_freq, args.h_freq)
    pretrainer = LeafPretrainer(
        args.size, segment_seconds=args.segment_seconds, n_windows=args.n_windows,
        max_epochs=args.max_epochs, batch_size=args.batch_size, lr=args.lr,
        lr_tokenizer=args.lr_tokenizer, checkpoint_dir=args.out, resume=not args.no_resume,
        distributed=args.distributed, device=args.device, verbose=0 if args.quiet else 1,
        random_state=args.seed)
    pretrainer.fit(raws)
    if pretrainer._is_main_process():
        write_text_atomic(Path(args.out) / "history.json", json.dumps(pretrainer.history_, indent=1))
        last = pretrainer.history_[-1] if pretrainer.history_ else {}
        print(f"trained {len(pretrainer.history_)} epochs; last: "
              + (", ".join(f"{k} {last[k]:.4f}" for k in
                           ("train_L_S", "train_L_T", "valid_L_S", "valid_L_T", "valid_zero_S",
                            "valid_zero_T") if k in last) or "none"))
        print(f"training windows per second: {pretrainer.windows_per_second_:.0f}")
        print(f"wrote {Path(args.out) / 'tower.safetensors'}")
    return 0


def main(argv=None):
    """Entry point of ``leaf-sk``."""
    parser = _build_parser()
    args = parser.parse_args(argv)  # exits with status 2 and a usage line on bad syntax
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.command == "pretrain":
            return _pretrain(args)
    except _UsageError as exc:
        print(f"usage: leaf-sk {args.command} ... (see leaf-sk {args.command} --help)\n"
              f"leaf-sk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError) as exc:
        # Bad values (sizes, files, channels, rates): a message, not a traceback.
        print(f"leaf-sk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
