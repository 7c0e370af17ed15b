"""Pretraining under Accelerate (skorch's AccelerateMixin): two CPU processes under torchrun."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from leaf_sk import _net
from leaf_sk.checkpoint import load_checkpoint, read_metadata
from leaf_sk.pretrainer import MODEL_FILE, RESUME_FILE

pytest.importorskip("accelerate")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("_distributed_pretrain.py")
N_PROCESSES = 2
# 18 training trials, 4 per process and step: ceil(18 / 8) = 3 steps per epoch on each process.
STEPS_PER_EPOCH = 3


def launch(out, *args, timeout=240, script=SCRIPT.name):
    """Run the helper script under torchrun with two processes; returns (process, seconds).

    ``--standalone`` picks a free port for the rendezvous. The launcher and its workers run
    in their own process group, killed as a whole on timeout (no orphaned workers).
    """
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(N_PROCESSES), str(SCRIPT.with_name(script)), str(out), *args]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{stdout[-2000:]}{stderr[-2000:]}")
    seconds = time.perf_counter() - start
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), seconds


def reports(out):
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(N_PROCESSES)]


def rank_weights(out, rank):
    from safetensors.torch import load_file

    return load_file(str(out / f"rank{rank}.safetensors"))


def assert_same_weights(actual, expected, exact=False):
    assert actual.keys() == expected.keys()
    for key in expected:
        tolerance = dict(rtol=0, atol=0) if exact else dict(rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(actual[key], expected[key], **tolerance,
                                   msg=lambda m, key=key: f"{key}: {m}")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    process, seconds = launch(out, "--max-epochs", "2")
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return out, seconds


def test_two_processes_train_one_model(two_process_run):
    out, seconds = two_process_run
    first, second = reports(out)
    assert [r["world_size"] for r in (first, second)] == [2, 2]
    assert first["distributed_type"] == "DistributedType.MULTI_CPU"
    # DDP keeps the processes in step: parameters and BatchNorm buffers agree exactly.
    assert_same_weights(rank_weights(out, 1), rank_weights(out, 0), exact=True)
    loaded, info = load_checkpoint(out / MODEL_FILE)
    tower = {f"tower.{k}": v for k, v in loaded.tower.state_dict().items()}
    assert_same_weights(tower, rank_weights(out, 0), exact=True)
    assert len(info["history"]) == 2
    print(f"2-process run: {seconds:.1f} s wall")


def test_only_rank_zero_writes(two_process_run):
    out, _ = two_process_run
    first, second = reports(out)
    assert first["written"] == [RESUME_FILE, RESUME_FILE, MODEL_FILE]  # 2 epochs, then the model
    assert second["written"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODEL_FILE, RESUME_FILE, "rank0.json", "rank1.json", "rank0.safetensors",
         "rank1.safetensors"])  # no temporary file left behind


def test_criterion_is_not_wrapped(two_process_run):
    """The mixin wraps nn.Module criteria in DDP; ours is a plain callable. The module is."""
    out, _ = two_process_run
    for report in reports(out):
        assert report["seen"] == {"module": "DistributedDataParallel",
                                  "criterion": "ModuleComputedLoss",
                                  "criterion_is_module": False}


def test_history_is_gathered_over_processes(two_process_run):
    """Validation losses are gathered (evaluation_step), training losses averaged: one history."""
    out, _ = two_process_run
    first, second = reports(out)
    for row0, row1 in zip(first["history"], second["history"]):
        for key in ("train_loss", "train_L_S", "train_L_T", "valid_loss", "valid_L_S",
                    "valid_L_T", "valid_zero_S", "valid_zero_T", "lr"):
            assert math.isfinite(row0[key])
            assert row0[key] == pytest.approx(row1[key], rel=1e-6), key
        assert row0["train_loss"] == pytest.approx(row0["train_L_S"] + row0["train_L_T"],
                                                   rel=1e-5)
        assert row0["valid_batch_count"] == 1 and row0["train_batch_count"] == STEPS_PER_EPOCH
    assert read_metadata(out / MODEL_FILE)["history"] == first["history"]


def test_lr_schedule_per_process(two_process_run):
    """Warm-up and cosine count the steps of one process (the dataset split in two)."""
    out, _ = two_process_run
    schedule = _net.WarmupCosineLR(warmup_epochs=1.0, final_ratio=0.1)
    total = 2 * STEPS_PER_EPOCH
    expected = [[1e-3 * f, 1e-4 * f] for f in
                (schedule.factor(step, total, STEPS_PER_EPOCH) for step in range(total))]
    for report in reports(out):
        assert len(report["lrs"]) == total
        for lrs, expected_lrs in zip(report["lrs"], expected):
            assert lrs == pytest.approx(expected_lrs)


def test_resume_under_two_processes(two_process_run, tmp_path):
    """Stopped after epoch 1, relaunched: the same weights and losses as the uninterrupted run."""
    reference, _ = two_process_run
    process, _ = launch(tmp_path, "--max-epochs", "2", "--stop-after", "1")
    assert process.returncode == 0, process.stderr[-3000:]
    assert [len(r["history"]) for r in reports(tmp_path)] == [1, 1]
    assert len(torch.load(tmp_path / RESUME_FILE, weights_only=True)["history"]) == 1
    process, _ = launch(tmp_path, "--max-epochs", "2")
    assert process.returncode == 0, process.stderr[-3000:]
    assert_same_weights(rank_weights(tmp_path, 0), rank_weights(reference, 0))
    assert_same_weights(rank_weights(tmp_path, 1), rank_weights(reference, 0))
    resumed, expected = reports(tmp_path)[0]["history"], reports(reference)[0]["history"]
    for row, row_expected in zip(resumed, expected, strict=True):
        for key in ("train_loss", "valid_loss", "train_L_S", "valid_L_T", "lr"):
            assert row[key] == pytest.approx(row_expected[key], rel=1e-6), key


def test_parameter_free_module_criterion_is_the_trap(tmp_path):
    """Why the criterion is no nn.Module: Accelerate would wrap it in DDP, which refuses it."""
    process, _ = launch(tmp_path, "--max-epochs", "1", "--module-criterion")
    assert process.returncode != 0
    assert "DistributedDataParallel is not needed when a module doesn't have any parameter" in (
        process.stdout + process.stderr)
