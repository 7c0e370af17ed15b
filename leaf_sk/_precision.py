"""Numeric precision of inference: float32, or bfloat16 where the hardware computes it natively."""

from __future__ import annotations

import contextlib
import warnings
from functools import lru_cache

import torch

PRECISIONS = ("float32", "bfloat16", "auto")
# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 matrix products.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags():
    """The CPU's feature flags, read once from ``/proc/cpuinfo``.

    Returns
    -------
    frozenset of str
        Empty where ``/proc/cpuinfo`` is not available (then no CPU counts as bf16-native).
    """
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return frozenset()
    return frozenset(line.split(":", 1)[1].split())


def cpu_model():
    """The CPU's model name, from ``/proc/cpuinfo``, or ``"unknown"``."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"
    return line.split(":", 1)[1].strip()


def bf16_is_native(device):
    """Whether ``device`` multiplies bfloat16 matrices natively.

    A CUDA GPU that supports bf16, or a CPU with AVX-512 BF16 or AMX. Elsewhere bf16 products
    are emulated: on an AVX2-only CPU they ran about 100 times slower than float32.

    Parameters
    ----------
    device : str or torch.device
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)
    return False


def resolve_precision(precision, device):
    """``"float32"`` or ``"bfloat16"`` for an estimator's ``precision`` on ``device``.

    Parameters
    ----------
    precision : {"float32", "bfloat16", "auto"}
        ``"auto"`` picks bfloat16 where it is native (:func:`bf16_is_native`), else float32.
    device : str or torch.device

    Returns
    -------
    str

    Warns
    -----
    UserWarning
        When bfloat16 is asked for on a device that does not compute it natively.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; use one of {PRECISIONS}.")
    native = bf16_is_native(device)
    if precision == "auto":
        return "bfloat16" if native else "float32"
    if precision == "bfloat16" and not native:
        warnings.warn(
            f"precision='bfloat16' on {device!r}, which has no native bfloat16 matrix products "
            f"(CPU flags {' or '.join(NATIVE_BF16_FLAGS)} absent): they are emulated and much "
            "slower than float32. Use precision='auto' or 'float32' here.", UserWarning, stacklevel=3)
    return precision


def autocast(precision, device):
    """Context in which ``precision`` applies: bfloat16 autocast, or nothing for float32.

    Parameters
    ----------
    precision : {"float32", "bfloat16"}
        As resolved by :func:`resolve_precision`.
    device : str or torch.device
    """
    if precision != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
