"""Plots (matplotlib, imported lazily): the pretraining loss curves."""

from __future__ import annotations


def plot_pretraining_history(history, ax=None):
    """Plot STR losses per epoch, relative to the loss of predicting zeros.

    Parameters
    ----------
    history : list of dict
        ``LeafPretrainer.history_`` or the ``history`` of a checkpoint's metadata.
    ax : matplotlib Axes or None
        Where to draw; a new figure when None.

    Returns
    -------
    matplotlib.figure.Figure
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("Plotting needs matplotlib: pip install 'leaf-sk[viz]'.") from exc
    if not history:
        raise ValueError("history is empty: fit the pretrainer for at least one epoch.")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    for prefix, style in (("train", "-"), ("valid", "--")):
        for loss in ("S", "T"):
            key, zero = f"{prefix}_L_{loss}", f"{prefix}_zero_{loss}"
            if all(key in row and zero in row for row in history):
                ax.plot(epochs, [row[key] / row[zero] for row in history], style,
                        label=f"{prefix} L_{loss}")
    ax.axhline(1.0, color="grey", lw=0.8, label="predicting zeros")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / loss of predicting zeros")
    ax.legend()
    return ax.figure
