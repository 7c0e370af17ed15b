"""Instruction tuning under Accelerate: two CPU processes under torchrun."""

import json

import pytest
import torch

from leaf_sk.checkpoint import load_checkpoint
from leaf_sk.tuner import MODEL_FILE, RESUME_FILE

from test_distributed import assert_same_weights, launch, rank_weights

pytest.importorskip("accelerate")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed-tune")
    process, _ = launch(out, "--max-epochs", "2", script="_distributed_tune.py")
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_processes_tune_one_model(tuned):
    out, (first, second) = tuned
    assert first["world_size"] == second["world_size"] == 2
    # DDP keeps the processes in step: parameters and BatchNorm buffers agree exactly.
    assert_same_weights(rank_weights(out, 1), rank_weights(out, 0), exact=True)
    model, info = load_checkpoint(out / MODEL_FILE)
    assert_same_weights({k: v for k, v in model.state_dict().items()}, rank_weights(out, 0),
                        exact=True)
    assert [row["epoch"] for row in info["history"]] == [1, 2]
    assert info["history"] == first["history"]
    for row0, row1 in zip(first["history"], second["history"]):  # one history, losses averaged
        row0.pop("seconds"), row1.pop("seconds")
        assert row0 == pytest.approx(row1, rel=1e-12)


def test_processes_draw_different_batches_and_share_the_epoch(tuned):
    out, (first, second) = tuned
    assert first["drawn"] != second["drawn"]
    # 16 trials of the largest task, 4 per process and step: 2 steps per epoch, not 4.
    assert first["steps"] == second["steps"] == 2 * 2
    checkpoint = torch.load(out / RESUME_FILE, weights_only=False)
    assert len(checkpoint["random_states"]) == 2 and checkpoint["epoch"] == 2


def test_a_killed_two_process_run_resumes_to_the_same_weights(tuned, tmp_path):
    out, _ = tuned
    stopped, _ = launch(tmp_path, "--max-epochs", "2", "--stop-after", "1",
                        script="_distributed_tune.py")
    assert stopped.returncode != 0 and not (tmp_path / MODEL_FILE).exists()
    assert torch.load(tmp_path / RESUME_FILE, weights_only=False)["epoch"] == 1
    resumed, _ = launch(tmp_path, "--max-epochs", "2", script="_distributed_tune.py")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_same_weights(rank_weights(tmp_path, 0), rank_weights(out, 0), exact=True)
