"""Two-process STR pretraining under Accelerate; ``tests/test_distributed.py`` launches it.

Usage::

    python -m torch.distributed.run --nproc_per_node 2 tests/_distributed_pretrain.py OUT \\
        [--max-epochs N] [--stop-after K] [--module-criterion]

Each rank writes what the test checks into ``OUT``: ``rank<r>.json`` (its history, the files
it wrote, what it trained through, its per-step learning rates) and ``rank<r>.safetensors``
(its final weights). ``--stop-after K`` ends training with a KeyboardInterrupt after epoch K
(what skorch does on Ctrl-C); ``--module-criterion`` swaps in a parameter-free ``nn.Module``
criterion to show the trap that ``_net.ModuleComputedLoss`` avoids.
"""

import argparse
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback

from leaf_sk import _net, checkpoint
from leaf_sk.pretrainer import LeafPretrainer

CH_NAMES = ["Fz", "C3", "Cz", "C4", "Pz", "O1", "O2", "FCz"]
N_TRIALS = 22  # every 5th for validation: 18 training trials, 4 validation trials
PARAMS = dict(ch_names=CH_NAMES, sfreq=200.0, n_windows=2, batch_size=4, valid_every=5,
              lr=1e-4, lr_tokenizer=1e-3, warmup_epochs=1.0, final_lr_ratio=0.1, verbose=0,
              random_state=0)


def make_data(seed=0):
    """Synthetic EEG in µV, shape (22, 8, 200): 1-s trials at 200 Hz."""
    return np.random.default_rng(seed).standard_normal((N_TRIALS, len(CH_NAMES), 200)) * 10.0


class Probe(Callback):
    """Record what the net trains through and the learning rates of every training step."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after

    def initialize(self):
        self.seen_ = {}
        self.lrs_ = []
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.seen_ = {"module": type(net.module_).__name__,
                          "criterion": type(net.criterion_).__name__,
                          "criterion_is_module": isinstance(net.criterion_, torch.nn.Module)}
            self.lrs_.append([group["lr"] for group in net.optimizer_.param_groups])

    def on_epoch_end(self, net, **kwargs):
        if self.stop_after is not None and len(net.history) == self.stop_after:
            raise KeyboardInterrupt


class ParameterFreeLoss(torch.nn.Module):
    """An ``nn.Module`` criterion without parameters: what Accelerate must not wrap in DDP."""

    def forward(self, y_pred, y_true=None):
        return y_pred[0] + y_pred[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--module-criterion", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    rank = int(os.environ["RANK"])
    written = []

    def recording(original):
        @contextmanager
        def wrapper(path):
            written.append(Path(path).name)
            with original(path) as tmp:
                yield tmp
        return wrapper

    # Every file the package writes goes through atomic_path: record which rank writes what.
    _net.atomic_path = recording(_net.atomic_path)
    checkpoint.atomic_path = recording(checkpoint.atomic_path)
    probe = Probe(args.stop_after)
    make_net = LeafPretrainer._make_net

    def make_net_with_probe(self, module, seed):
        net = make_net(self, module, seed)
        net.callbacks.append(("probe", probe))
        if args.module_criterion:
            net.criterion = ParameterFreeLoss
        return net

    LeafPretrainer._make_net = make_net_with_probe
    warnings.simplefilter("ignore", UserWarning)
    pretrainer = LeafPretrainer("tiny", max_epochs=args.max_epochs, checkpoint_dir=str(out), resume=True,
                                distributed=True, **PARAMS)
    pretrainer.fit(make_data())
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in pretrainer.module_.state_dict().items()},
              str(out / f"rank{rank}.safetensors"))
    accelerator = pretrainer.net_.accelerator
    report = {
        "rank": rank,
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "written": written,
        "history": pretrainer.history_,
        "seen": probe.seen_,
        "lrs": probe.lrs_,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
