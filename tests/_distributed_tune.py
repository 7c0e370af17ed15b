"""Two-process instruction tuning under Accelerate; ``tests/test_distributed_tune.py`` launches it.

Usage::

    python -m torch.distributed.run --nproc_per_node 2 tests/_distributed_tune.py OUT \\
        [--max-epochs N] [--stop-after K]

Rank 0 saves the tuned model into ``OUT``; every rank writes ``rank<r>.json`` (world size,
history, the batches it drew) and ``rank<r>.safetensors`` (its final weights).
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from test_tuner import _tasks, _tuner  # noqa: E402

import leaf_sk.tuner as tuner_module  # noqa: E402
from leaf_sk.tuner import MODEL_FILE  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=None,
                        help="every process stops (KeyboardInterrupt) after this epoch's resume file")
    args = parser.parse_args()
    out = Path(args.out)
    rank = int(os.environ["RANK"])
    warnings.simplefilter("ignore")
    drawn = []
    real_batches = tuner_module._balanced_batches

    def recorded_batches(targets, batch_size, rng):
        batches = real_batches(targets, batch_size, rng)
        drawn.append([b.tolist() for b in batches])
        return batches

    tuner_module._balanced_batches = recorded_batches
    steps = []
    real_step = torch.optim.AdamW.step

    def counted_step(self, *step_args, **step_kwargs):
        steps.append(1)
        return real_step(self, *step_args, **step_kwargs)

    torch.optim.AdamW.step = counted_step
    if args.stop_after is not None:
        from accelerate import Accelerator

        real_wait, epochs = Accelerator.wait_for_everyone, []

        def stop_after(self):  # the tuner's last call of an epoch, after the resume file
            real_wait(self)
            epochs.append(1)
            if len(epochs) == args.stop_after:
                raise KeyboardInterrupt

        Accelerator.wait_for_everyone = stop_after
    tuner = _tuner(max_epochs=args.max_epochs, distributed=True,
                   checkpoint_dir=str(out)).fit(_tasks())
    if rank == 0:
        tuner.save(out / MODEL_FILE)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world_size": int(os.environ["WORLD_SIZE"]), "history": tuner.history_,
        "drawn": drawn, "steps": len(steps)}))
    save_file({k: v.contiguous() for k, v in tuner.model_.state_dict().items()},
              str(out / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
