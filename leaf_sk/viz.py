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


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("Plotting needs matplotlib: pip install 'leaf-sk[viz]'.") from exc
    return plt


def plot_instruction_levels(rows):
    """Figure 3 of the paper: balanced accuracy of direct inference at instruction levels 0-2.

    Parameters
    ----------
    rows : list of dict
        One per dataset and pipeline, with ``dataset``, ``pipeline``, ``level`` (0, 1, 2, or
        None for a baseline), ``balanced_accuracy`` and ``chance`` (as
        ``benchmarks/instruction_levels.py`` writes them). Baselines become horizontal lines.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if not datasets:
        raise ValueError("rows is empty: nothing to plot.")
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        mine = [r for r in rows if r["dataset"] == name]
        levels = [r for r in mine if r["level"] is not None]
        ax.bar([str(r["level"]) for r in levels], [r["balanced_accuracy"] for r in levels],
               color=["#9ecae1", "#4292c6", "#08519c"][:len(levels)])
        for r in levels:
            ax.text(str(r["level"]), r["balanced_accuracy"] + 0.01, f"{r['balanced_accuracy']:.2f}",
                    ha="center", fontsize=8)
        ax.axhline(mine[0]["chance"], color="grey", linestyle=":", label="chance")
        for r, style in zip([r for r in mine if r["level"] is None], ["--", "-.", "-"]):
            ax.axhline(r["balanced_accuracy"], color="black", linestyle=style, label=r["pipeline"])
        ax.set_title(name)
        ax.set_xlabel("instruction level")
        ax.set_ylabel("balanced accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Direct inference on the test subjects")
    fig.tight_layout()
    return fig


def _class_geometry(embeddings, y):
    """Mean within-class variance and mean distance between class means of unit embeddings."""
    import numpy as np

    classes = np.unique(y)
    means = np.stack([embeddings[y == c].mean(axis=0) for c in classes])
    within = float(np.mean([((embeddings[y == c] - m) ** 2).sum(axis=1).mean()
                            for c, m in zip(classes, means)]))
    pairs = [np.linalg.norm(means[i] - means[j]) for i in range(len(means))
             for j in range(i + 1, len(means))]
    return within, float(np.mean(pairs)) if pairs else 0.0


def plot_embedding_geometry(embeddings, text_encoder):
    """Figure 4 of the paper: class geometry of the Q-Former embeddings per instruction level.

    Parameters
    ----------
    embeddings : dict
        ``{(dataset, level): (Z, y, label_texts, classes)}``: embeddings ``Z`` of shape
        (n_trials, d_text) (unit rows, ``LeafEncoder(instruction=...)`` output), their labels,
        and the label text of each class in ``classes`` order.
    text_encoder : str
        Sentence encoder of the label-text prototypes (the checkpoint's).

    Returns
    -------
    matplotlib.figure.Figure
        Top row: within-class variance and distance between class means per level and dataset.
        Bottom row: per dataset, the level-2 class means and trials in the first two principal
        components of the trials, with the label-text prototypes projected alike.
    """
    import numpy as np

    from .instructions import label_prototypes

    plt = _pyplot()
    datasets = list(dict.fromkeys(name for name, _ in embeddings))
    fig, axes = plt.subplots(2, max(2, len(datasets)), figsize=(4.4 * max(2, len(datasets)), 7.5),
                             squeeze=False)
    for column, quantity in enumerate(("within-class variance", "distance between class means")):
        ax = axes[0][column]
        for name in datasets:
            levels = sorted(level for n, level in embeddings if n == name)
            values = [_class_geometry(*embeddings[(name, level)][:2])[column] for level in levels]
            ax.plot(levels, values, marker="o", label=name)
        ax.set_xlabel("instruction level")
        ax.set_ylabel(quantity)
        ax.set_xticks([0, 1, 2])
        ax.legend(fontsize=7)
    for ax, name in zip(axes[1], datasets):
        level = max(level for n, level in embeddings if n == name)
        Z, y, texts, classes = embeddings[(name, level)]
        centre = Z.mean(axis=0)
        _, _, components = np.linalg.svd(Z - centre, full_matrices=False)
        project = lambda A: (A - centre) @ components[:2].T  # noqa: E731
        prototypes = label_prototypes(text_encoder, list(texts))
        for c, text, colour in zip(classes, texts, plt.cm.tab10.colors):
            points = project(Z[y == c])
            ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.35, color=colour)
            mean = project(Z[y == c].mean(axis=0, keepdims=True))[0]
            ax.scatter(*mean, s=80, marker="o", edgecolor="black", color=colour,
                       label=f"{text} (mean of trials)")
        for text, p, colour in zip(texts, project(prototypes), plt.cm.tab10.colors):
            ax.scatter(*p, s=120, marker="*", edgecolor="black", color=colour, label=f"{text} (text)")
        ax.set_title(f"{name}, level {level}", fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=6)
    for ax in axes[1][len(datasets):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_query_states(encoder, X, y, title=""):
    """Figure 5 of the paper: PCA of the Q-Former's query states, layer by layer.

    Parameters
    ----------
    encoder : LeafEncoder
        Fitted, with an ``instruction`` (so that its output is the Q-Former's).
    X : array-like or mne.Epochs
        Trials as ``encoder.transform`` takes them.
    y : array-like of shape (n_trials,)
        Labels, for the colours.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        One panel per Q-Former layer: every trial's queries (flattened), in the first two
        principal components of that layer, coloured by class (for an ensemble checkpoint,
        its first member's Q-Former).
    """
    import numpy as np
    import torch

    plt = _pyplot()
    if getattr(encoder, "instruction_vector_", None) is None:
        raise ValueError("plot_query_states needs a LeafEncoder fitted with an instruction.")
    from .nn import members_of

    model = members_of(encoder.model_)[0]
    states = {i: [] for i in range(len(model.qformer.layers))}
    handles = [layer.register_forward_hook(
        lambda module, inputs, output, i=i: states[i].append(output.detach().flatten(1).float().cpu()))
        for i, layer in enumerate(model.qformer.layers)]
    try:
        encoder.transform(X)
    finally:
        for handle in handles:
            handle.remove()
    y = np.asarray(y)
    fig, axes = plt.subplots(1, len(states), figsize=(3.6 * len(states), 3.4), squeeze=False)
    for ax, (i, chunks) in zip(axes[0], states.items()):
        S = torch.cat(chunks).numpy()[: len(y)]
        S = S - S.mean(axis=0)
        _, _, components = np.linalg.svd(S, full_matrices=False)
        points = S @ components[:2].T
        for c, colour in zip(np.unique(y), plt.cm.tab10.colors):
            ax.scatter(points[y == c, 0], points[y == c, 1], s=8, alpha=0.6, color=colour, label=str(c))
        ax.set_title(f"Q-Former layer {i + 1}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "Q-Former query states")
    fig.tight_layout()
    return fig
