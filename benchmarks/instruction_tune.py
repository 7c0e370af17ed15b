"""Instruction tuning (LEAF stage 2) of a pretrained Tower on the labelled training subjects.

Trains the whole model (Tower and Q-Former) on Kalunga2016 subjects 1-8 (SSVEP, 4 classes)
and PhysioNet MI subjects 1-3, 5-14 (left/right hand) together, as the release does across its
datasets: one global prototype matrix of all label texts, cross-entropy over cosine
similarities, and per trial a random phrasing of its task family, blended with the mean of its
dataset's candidate labels with p = 0.9 (level 2) or replaced by a Default instruction with
p = 0.1. Trials are mapped by the package's input path and zero-padded to 3 s.

Then scores direct inference (zero-shot: no training on the test subjects) on the held-out
subjects, Kalunga 9-11 (accuracy) and PhysioNet 15-18, 42 (ROC AUC)::

    MNE_DATA=../shared/data/mne_data MOABB_DOWNLOAD_PROVIDER=upstream HF_HUB_OFFLINE=1 \
        .venv/bin/python benchmarks/instruction_tune.py --out runs/instruct/leaf-small-instruct.safetensors
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from leaf_sk import LeafInstructionClassifier, __version__
from leaf_sk import _net
from leaf_sk._input import make_channel_map, pad_or_crop, read_trials, to_template
from leaf_sk.checkpoint import load_checkpoint, save_checkpoint
from leaf_sk.classifier import AlignmentNet
from leaf_sk.instructions import label_prototypes, sample_training_instructions
from leaf_sk.text import DEFAULT_TEXT_ENCODER, get_text_encoder
from moabb_eval import INSTRUCTIONS, LABEL_WORDS, SPLITS, dataset_and_paradigm  # this folder; run as a script

FAMILIES = {"kalunga": "ssvep", "physionet": "motor_imagery"}
TASKS = {name: dict(family=family, instruction=INSTRUCTIONS[name], texts=LABEL_WORDS[name],
                    **SPLITS[name])
         for name, family in FAMILIES.items()}
N_SAMPLES = 600  # 3 s at 200 Hz


def load(name, subjects):
    dataset, paradigm = dataset_and_paradigm(name, subjects)
    epochs, y, meta = paradigm.get_data(dataset, subjects, return_epochs=True)
    return epochs.get_data(units="uV"), np.asarray(y), list(epochs.ch_names), epochs.info["sfreq"], meta


class GlobalAlignment(torch.nn.Module):
    """LEAF model scored against one global prototype matrix, with a per-trial instruction."""

    def __init__(self, model, prototypes, logit_scale=1.0):
        super().__init__()
        self.model = model
        self.register_buffer("prototypes", prototypes)
        self.logit_scale = logit_scale

    def forward(self, x, instruction):
        return self.logit_scale * self.model(x, instruction) @ self.prototypes.T


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="leaf-small")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-tokenizer", type=float, default=1e-3)
    parser.add_argument("--logit-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(args.seed)
    encoder = get_text_encoder(DEFAULT_TEXT_ENCODER)
    all_texts = sorted({t for task in TASKS.values() for t in task["texts"].values()})
    prototypes = label_prototypes(encoder, all_texts)

    xs, instructions, targets = [], [], []
    for name, task in TASKS.items():
        X, y, ch_names, sfreq, _ = load(name, task["train"])
        data = to_template(read_trials(X, ch_names=ch_names, sfreq=sfreq), make_channel_map(ch_names))
        xs.append(pad_or_crop(data, N_SAMPLES))
        candidates = sorted(set(task["texts"].values()))
        instructions.append(sample_training_instructions(encoder, task["family"], candidates, len(y), rng))
        targets.append(np.array([all_texts.index(task["texts"][label]) for label in y]))
        print(f"{name}: {len(y)} training trials of subjects {task['train']}", flush=True)
    X = {"x": np.concatenate(xs), "instruction": np.concatenate(instructions).astype(np.float32)}
    y = np.concatenate(targets).astype(np.int64)

    model, _ = load_checkpoint(args.checkpoint, d_text=encoder.dim)
    module = GlobalAlignment(model, torch.from_numpy(prototypes), args.logit_scale)

    net = AlignmentNet(
        module, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.AdamW, lr=args.lr,
        optimizer__weight_decay=1e-3,
        optimizer__param_groups=[("model.tower.tokenizer.*", {"lr": args.lr_tokenizer})],
        max_epochs=args.max_epochs, batch_size=64, iterator_train__shuffle=True,
        train_split=_net.EveryKthSplit(5),
        callbacks=[("lr_schedule", _net.WarmupCosineLR(2.0, 0.1)),
                   ("log", _net.LogEpoch(["train_loss", "valid_loss"]))],
        callbacks__print_log__sink=_net.logger.debug, device="cpu", verbose=1, seed=args.seed)
    start = time.time()
    net.fit(X, y)
    print(f"instruction tuning: {args.max_epochs} epochs in {time.time() - start:.0f} s", flush=True)
    model = module.model.eval()
    provenance = {
        "name": args.out.stem, "trainer": "benchmarks/instruction_tune.py",
        "leaf_sk_version": __version__, "start": args.checkpoint,
        "data": {name: f"subjects {task['train']}" for name, task in TASKS.items()},
        "held_out_for_evaluation": {name: f"subjects {task['test']}" for name, task in TASKS.items()},
        "label_texts": {name: task["texts"] for name, task in TASKS.items()},
        "instructions": {name: task["instruction"] for name, task in TASKS.items()},
        "epochs": args.max_epochs, "seed": args.seed, "lr": args.lr, "logit_scale": args.logit_scale,
    }
    history = _net.plain_values([{k: v for k, v in row.items() if k != "batches"}
                                 for row in net.history.to_list()])
    save_checkpoint(args.out, model, text_encoder=DEFAULT_TEXT_ENCODER, provenance=provenance,
                    history=history)
    print(f"wrote {args.out}")

    for name, task in TASKS.items():
        X, y, ch_names, sfreq, meta = load(name, task["test"])
        clf = LeafInstructionClassifier(str(args.out), ch_names=ch_names, sfreq=sfreq, max_epochs=0,
                                        instruction=task["instruction"], instruction_level=2,
                                        label_texts=task["texts"], device="cpu").fit(X, y)
        for subject in task["test"]:
            mask = meta.subject.values == subject
            if name == "kalunga":
                score = accuracy_score(y[mask], clf.predict(X[mask]))
            else:
                score = roc_auc_score(y[mask] == "right_hand", clf.predict_proba(X[mask])[:, 1])
            print(f"zero-shot {name} subject {subject}: {'accuracy' if name == 'kalunga' else 'ROC AUC'} "
                  f"{score:.3f} ({mask.sum()} trials)", flush=True)


if __name__ == "__main__":
    main()
