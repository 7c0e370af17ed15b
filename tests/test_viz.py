import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from leaf_sk.checkpoint import read_metadata  # noqa: E402
from leaf_sk.viz import plot_pretraining_history  # noqa: E402


def test_plot_packaged_history(tmp_path):
    history = read_metadata("leaf-small")["history"]
    fig = plot_pretraining_history(history)
    ax = fig.axes[0]
    assert len(ax.lines) == 5  # train/valid x L_S/L_T, and the zero line
    assert ax.lines[0].get_ydata()[-1] < 1.0
    fig.savefig(tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 0


def test_plot_empty_history():
    with pytest.raises(ValueError, match="history is empty"):
        plot_pretraining_history([])
