"""Int8 storage of a state dict: weight matrices as int8 with one float16 scale per row."""

from __future__ import annotations

import torch

# Tensors smaller than this (biases, norms, BatchNorm statistics) stay float16: they are a
# small share of the file, and some (running variances) span magnitudes a row scale would crush.
MIN_NUMEL = 1024
SCALE_SUFFIX = ".int8_scale"


def _rows(tensor):
    """The tensor as a 2-D (rows, values) view: rows along the first dimension above 1."""
    shape = list(tensor.shape)
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    return tensor.reshape(shape[0], -1) if len(shape) > 1 else None


def quantize_state(state):
    """Weight matrices of ``state`` as int8 with per-row scales; other floats as float16.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        A float state dict.

    Returns
    -------
    tensors : dict of str to torch.Tensor
        Each quantized key holds int8 values (same shape) and ``key + SCALE_SUFFIX`` its
        float16 scales, shape (rows,): the value of a row is ``int8 * scale``, with the row's
        largest magnitude mapped to 127.
    """
    tensors = {}
    for key, value in state.items():
        if not value.is_floating_point():
            tensors[key] = value
            continue
        rows = _rows(value.float()) if value.numel() >= MIN_NUMEL else None
        if rows is None:
            tensors[key] = value.to(torch.float16)
            continue
        scale = (rows.abs().amax(dim=1) / 127.0).to(torch.float16).float()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        values = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
        tensors[key] = values.reshape(value.shape)
        tensors[key + SCALE_SUFFIX] = scale.to(torch.float16)
    return tensors


def dequantize_state(tensors):
    """Float32 values of the int8 tensors of :func:`quantize_state`'s output; others as given.

    Raises
    ------
    ValueError
        When an int8 tensor has no scales or scales have no int8 tensor, or their shapes disagree.
    """
    state = {k: v for k, v in tensors.items() if not k.endswith(SCALE_SUFFIX)}
    scaled = {k[:-len(SCALE_SUFFIX)] for k in tensors if k.endswith(SCALE_SUFFIX)}
    unscaled = sorted(k for k, v in state.items() if v.dtype == torch.int8 and k not in scaled)
    if unscaled:
        raise ValueError(f"the int8 tensor {unscaled[0]!r} has no scales; the file is damaged, "
                         "write it again.")
    for key in sorted(scaled):
        scale, values = tensors[key + SCALE_SUFFIX], state.get(key)
        if values is None or values.dtype != torch.int8:
            raise ValueError(f"the scales {key + SCALE_SUFFIX!r} belong to no int8 tensor; the "
                             "file is damaged, write it again.")
        rows = _rows(values)
        if rows is None or scale.shape != (rows.shape[0],):
            raise ValueError(f"the scales of the int8 tensor {key!r} do not match its rows; the "
                             "file is damaged, write it again.")
        state[key] = (rows.float() * scale.float()[:, None]).reshape(values.shape)
    return state
