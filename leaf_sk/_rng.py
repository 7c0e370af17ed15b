"""Seeded randomness that leaves the caller's global torch RNG state untouched."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed):
    """Run a block under ``torch.manual_seed(seed)`` in a forked RNG state.

    The CPU generator and those of every visible CUDA device are restored on exit
    (``torch.manual_seed`` seeds them all, so all of them are forked).

    Parameters
    ----------
    seed : int
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
