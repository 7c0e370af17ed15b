"""Train ``leaf-small-bci``: LEAF's tokenizer trained with the labels of both training sets.

STR pretraining leaves the tokenizer's filters blind to mu/beta and SSVEP power
(benchmarks/RESULTS.md, issue 14). This supervised stage trains the tokenizer (LEAF's
ShallowFBCSPNet-like front end: fused temporal and spatial convolution) end to end through a
band-power readout, the log-variance of each filter's output in every 0.5-s window averaged over
the windows, with one linear head per dataset, on every labelled trial of the training
subjects of our split (EVALUATION.md):

- PhysioNet MI left/right imagery, MOABB ``LeftRightImagery`` (8-32 Hz), subjects 1-3, 5-14;
- Kalunga2016, MOABB ``SSVEP`` with the stimulated classes 13, 17 and 21 Hz, subjects 1-8.

Each training step sums the cross-entropy of one batch of each dataset. Choices (mirror
augmentation of the motor-imagery trials, epochs, weight decay) were made on the inner folds of
the training subjects (benchmarks/logvar_head_inner.py); no test subject is loaded. The heads are
not saved: the checkpoint is a Tower whose tokenizer feeds ``LeafEncoder(pooling="logvar")``; its
Transformer layers are those of the starting checkpoint and were not trained here.

Run from the repository root (about 10 minutes on one CPU thread)::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_leaf_bci.py --out runs/leaf-small-bci.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import mne
import numpy as np
import torch

from leaf_sk import __version__
from leaf_sk._input import make_channel_map, read_trials, to_template
from leaf_sk.alignment import euclidean_alignment
from leaf_sk.checkpoint import load_checkpoint, save_checkpoint
from leaf_sk.datasets import moabb_dataset
from leaf_sk.montage import TEMPLATE_CH_NAMES, _mirror_name
from leaf_sk.nn import LeafConfig, Tower

PHYSIONET_SUBJECTS = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
KALUNGA_SUBJECTS = [1, 2, 3, 4, 5, 6, 7, 8]
MIRROR = [TEMPLATE_CH_NAMES.index(_mirror_name(name)) for name in TEMPLATE_CH_NAMES]


def load_training_sets(physionet_subjects, kalunga_subjects, align):
    """Template-mapped trials, integer labels and class names of both datasets.

    With ``align`` each subject's trials are re-centred first (Euclidean alignment).
    """
    from moabb.datasets import Kalunga2016, PhysionetMI
    from moabb.paradigms import SSVEP, LeftRightImagery

    physionet, _ = moabb_dataset(PhysionetMI)
    kalunga, _ = moabb_dataset(Kalunga2016)
    sets = {}
    for name, dataset, paradigm, subjects in (
            ("PhysionetMI", physionet, LeftRightImagery(), physionet_subjects),
            ("Kalunga2016", kalunga, SSVEP(events=["13", "17", "21"], n_classes=3), kalunga_subjects)):
        epochs, labels, metadata = paradigm.get_data(dataset, subjects, return_epochs=True)
        classes, y = np.unique(np.asarray(labels).astype(str), return_inverse=True)
        data = epochs.get_data(units="uV")
        if align:
            data = euclidean_alignment(data, metadata["subject"].to_numpy())
        trials = read_trials(data, ch_names=epochs.ch_names, sfreq=epochs.info["sfreq"], units="uV")
        X = to_template(trials, make_channel_map(trials.ch_names))
        sets[name] = dict(X=torch.from_numpy(X), y=torch.from_numpy(y.astype(np.int64)),
                          classes=classes.tolist(), mirror=name == "PhysionetMI",
                          band=f"{paradigm.filters[0][0]}-{paradigm.filters[0][1]} Hz")
        print(f"{name}: {len(y)} trials, classes {classes.tolist()}, X {tuple(X.shape)}", flush=True)
    return sets


def batches(n_trials, batch_size, rng):
    order = rng.permutation(n_trials)
    return [order[i:i + batch_size] for i in range(0, n_trials - batch_size + 1, batch_size)]


def augment(x, y, mirror, crop_windows, rng, window_samples):
    if mirror:  # the montage's mirror image, left and right hand swapped
        flip = torch.from_numpy(rng.random(len(y)) < 0.5)
        x = torch.where(flip[:, None, None], x[:, MIRROR], x)
        y = torch.where(flip, 1 - y, y)
    if crop_windows and x.shape[-1] // window_samples > crop_windows:
        offset = int(rng.integers(0, crop_windows + 1)) * window_samples
        x = x[..., offset: offset + x.shape[-1] - crop_windows * window_samples]
    return x, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    parser.add_argument("--init", choices=["leaf-small", "random"], default="random")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crop-windows", type=int, default=1)
    parser.add_argument("--no-mirror", action="store_true")
    parser.add_argument("--no-align", action="store_true",
                        help="no Euclidean alignment of each subject's trials")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    mne.set_log_level("error")
    sets = load_training_sets(PHYSIONET_SUBJECTS, KALUNGA_SUBJECTS, align=not args.no_align)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.init == "leaf-small":
        tower = load_checkpoint("leaf-small")[0].tower
    else:
        tower = Tower(LeafConfig.from_size("small"))
    tokenizer = tower.tokenizer
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(tokenizer.config.n_filters, len(s["classes"]))
                                 for name, s in sets.items()})
    optimizer = torch.optim.AdamW([*tokenizer.parameters(), *heads.parameters()], lr=args.lr,
                                  weight_decay=args.weight_decay)
    steps_per_epoch = max(len(s["y"]) for s in sets.values()) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, pct_start=0.05,
                                                   total_steps=args.epochs * steps_per_epoch)
    history, start = [], time.time()
    for epoch in range(1, args.epochs + 1):
        tokenizer.train()
        heads.train()
        plans = {name: [] for name in sets}
        losses = {name: [] for name in sets}
        for _ in range(steps_per_epoch):
            loss = 0.0
            for name, s in sets.items():
                if not plans[name]:
                    plans[name] = batches(len(s["y"]), args.batch_size, rng)
                index = torch.from_numpy(plans[name].pop())
                x, y = augment(s["X"][index], s["y"][index], s["mirror"] and not args.no_mirror,
                               args.crop_windows, rng, tokenizer.config.window_samples)
                part = torch.nn.functional.cross_entropy(
                    heads[name](tokenizer.log_power(x).mean(dim=1)), y)
                losses[name].append(part.item())
                loss = loss + part
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        tokenizer.eval()
        heads.eval()
        record = {"epoch": epoch, "seconds": round(time.time() - start, 1)}
        with torch.no_grad():
            for name, s in sets.items():
                logits = torch.cat([heads[name](tokenizer.log_power(s["X"][i:i + 256]).mean(dim=1))
                                    for i in range(0, len(s["y"]), 256)])
                record[f"{name}_loss"] = round(float(np.mean(losses[name])), 4)
                record[f"{name}_train_accuracy"] = round(float((logits.argmax(1) == s["y"]).float().mean()), 4)
        history.append(record)
        print(json.dumps(record), flush=True)
    provenance = {
        "trainer": "benchmarks/train_leaf_bci.py", "leaf_sk_version": __version__,
        "stage": "supervised tokenizer (log-variance readout, one linear head per dataset)",
        "alignment": None if args.no_align else "euclidean, per subject",
        "params": {**vars(args), "checkpoint": "leaf-small" if args.init == "leaf-small" else None},
        "data": {"datasets": [
            {"source": "moabb", "name": name, "subjects": subjects, "trials": int(len(sets[name]["y"])),
             "classes": sets[name]["classes"], "band": sets[name]["band"]}
            for name, subjects in (("PhysionetMI", PHYSIONET_SUBJECTS), ("Kalunga2016", KALUNGA_SUBJECTS))]},
        "wall_seconds": round(time.time() - start, 1),
        "threads": torch.get_num_threads(),
    }
    save_checkpoint(args.out, tower, provenance=provenance, history=history)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
