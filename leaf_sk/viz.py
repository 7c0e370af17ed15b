"""Plots (matplotlib, imported lazily): the pretraining loss curves."""

from __future__ import annotations

import json
import math
import os
import warnings
from numbers import Real
from pathlib import Path

_CURVES = tuple((prefix, loss, style) for prefix, style in (("train", "-"), ("valid", "--"))
                for loss in ("S", "T"))


def plot_pretraining_history(history, ax=None):
    """Plot STR losses per epoch, relative to the loss of predicting zeros.

    Parameters
    ----------
    history : list of dict, str or os.PathLike
        ``LeafPretrainer.history_`` (or the ``history`` of a checkpoint's metadata); the path of
        a JSON history file (the ``history.json`` that ``leaf-sk pretrain --out DIR`` writes);
        or a checkpoint whose metadata holds the history: a packaged name, a leaf-sk
        ``.safetensors`` file, a ``leaf-sk pretrain`` folder or its ``resume.pt``.
    ax : matplotlib Axes or None
        Where to draw; a new figure when None.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For an empty history, rows that are not dicts, a file that is neither a JSON history nor
        a leaf-sk checkpoint, or a history without any loss to plot.

    Warns
    -----
    UserWarning
        When some rows hold no losses (the row of an interrupted epoch): they are left out.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("Plotting needs matplotlib: pip install 'leaf-sk[viz]'.") from exc
    source = None
    if isinstance(history, (str, os.PathLike)):
        source = os.fspath(history)
        history = _read_history(source)
    where = f" of {source}" if source is not None else ""
    if not isinstance(history, (list, tuple)):
        raise ValueError(
            f"history{where} must be a list of per-epoch dicts, got {type(history).__name__}; "
            "pass LeafPretrainer.history_, a history.json path or a checkpoint.")
    if not history:
        raise ValueError(f"history{where} is empty: fit the pretrainer for at least one epoch.")
    bad = [i for i, row in enumerate(history) if not isinstance(row, dict)]
    if bad:
        raise ValueError(
            f"history{where} must hold one dict per epoch, but row {bad[0]} is not a dict "
            f"({type(history[bad[0]]).__name__}; {len(bad)} such rows); pass "
            "LeafPretrainer.history_, a history.json path or a checkpoint.")
    curves = []
    for prefix, loss, style in _CURVES:
        key, zero = f"{prefix}_L_{loss}", f"{prefix}_zero_{loss}"
        points = [(row.get("epoch", i + 1), row[key] / row[zero]) for i, row in enumerate(history)
                  if _usable(row.get(key)) and _usable(row.get(zero)) and row[zero] != 0]
        if points:
            curves.append((f"{prefix} L_{loss}", style, points))
    if not curves:
        raise ValueError(
            f"history{where} holds no losses to plot: no row has both train_L_S and "
            "train_zero_S (or the L_T / valid_ pairs), as LeafPretrainer.history_ does.")
    lossless = [row.get("epoch", i + 1) for i, row in enumerate(history)
                if not any(_usable(row.get(f"{p}_L_{s}")) for p, s, _ in _CURVES)]
    if lossless:
        warnings.warn(
            f"history{where}: the rows of epoch(s) {lossless} hold no losses (an interrupted "
            "epoch?); they are left out of the plot.", UserWarning, stacklevel=2)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for label, style, points in curves:
        epochs, ratios = zip(*points)
        ax.plot(epochs, ratios, style, label=label)
    ax.axhline(1.0, color="grey", lw=0.8, label="predicting zeros")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / loss of predicting zeros")
    ax.legend()
    return ax.figure


def _usable(value):
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _read_history(source):
    """The rows of a JSON history file, or the history of a checkpoint (name, file or folder)."""
    from .checkpoint import (
        _file_format,
        _read_torch_file,
        packaged_checkpoints,
        read_metadata,
        resolve_checkpoint,
    )

    path = Path(source).expanduser()
    if source not in packaged_checkpoints() and path.is_file() and _is_json(path):
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig"))
        except (ValueError, OSError) as exc:
            raise ValueError(
                f"{source} looks like a JSON file but cannot be read as one ({exc}); pass the "
                "history.json that `leaf-sk pretrain` writes, intact.") from exc
        if isinstance(document, dict) and isinstance(document.get("history"), list):
            return document["history"]  # a checkpoint's metadata document, saved as JSON
        if not isinstance(document, list):
            raise ValueError(
                f"{source} holds a JSON {type(document).__name__}, not a list of per-epoch "
                "rows; pass the history.json that `leaf-sk pretrain` writes.")
        return document
    try:
        checkpoint = resolve_checkpoint(source)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"history {source!r} is neither a JSON history file nor a checkpoint: {exc}") from exc
    try:
        if _file_format(checkpoint) == "torch":
            _, resume = _read_torch_file(checkpoint)
            if resume is None:
                raise ValueError(
                    f"{checkpoint} is a PyTorch state dict without a training history; pass "
                    "a history.json, a leaf-sk checkpoint or the resume.pt of `leaf-sk pretrain`.")
            return resume["history"]
        return read_metadata(checkpoint)["history"]
    except ValueError as exc:
        raise ValueError(
            f"Cannot plot the history of {source}: {exc} For the plot pass the history.json "
            "that `leaf-sk pretrain` writes, a leaf-sk checkpoint, or LeafPretrainer.history_."
        ) from exc


def _is_json(path):
    with open(path, "rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf").lstrip()
    return head[:1] in (b"[", b"{")
