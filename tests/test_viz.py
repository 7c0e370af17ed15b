import json

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from leaf_sk.checkpoint import read_metadata, save_checkpoint  # noqa: E402
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


ROWS = [{"epoch": epoch, "train_L_S": 0.5 / epoch, "train_L_T": 0.8 / epoch,
         "train_zero_S": 1.0, "train_zero_T": 1.0, "valid_L_S": 0.6 / epoch,
         "valid_L_T": 0.9 / epoch, "valid_zero_S": 1.0, "valid_zero_T": 1.0, "lr": 1e-4}
        for epoch in (1, 2, 3)]


def _curves(fig):
    return [(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
            for line in fig.axes[0].lines]


def _write_history(path, rows=ROWS):
    path.write_text(json.dumps(rows, indent=1))  # as `leaf-sk pretrain` writes history.json
    return path


def test_plot_history_json_file(tmp_path):
    path = _write_history(tmp_path / "history.json")
    expected = _curves(plot_pretraining_history(ROWS))
    assert len(expected) == 5 and expected[0][1] == [1, 2, 3]
    assert _curves(plot_pretraining_history(str(path))) == expected
    assert _curves(plot_pretraining_history(path)) == expected


def test_plot_history_of_a_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from leaf_sk.nn import LeafConfig, STRPretrainer

    run = tmp_path / "run"
    save_checkpoint(run / "tower.safetensors", STRPretrainer(LeafConfig.from_size("tiny")),
                    history=ROWS)
    torch.save({"module": {"tower.pos_embedding": torch.zeros(1, 20, 16)}, "optimizer": {},
                "history": [{**row, "batches": [{"train_loss": 1.0}]} for row in ROWS]},
               run / "resume.pt")
    expected = _curves(plot_pretraining_history(ROWS))
    for source in (run / "tower.safetensors", str(run), run / "resume.pt"):
        assert _curves(plot_pretraining_history(source)) == expected, source
    assert len(plot_pretraining_history("leaf-small").axes[0].lines) == 5


def test_plot_skips_rows_without_losses(tmp_path):
    rows = ROWS[:2] + [{"epoch": 3, "lr": 1e-4, "dur": 0.5}]  # an interrupted epoch
    path = _write_history(tmp_path / "history.json", rows)
    with pytest.warns(UserWarning, match=r"rows of epoch\(s\) \[3\] hold no losses"):
        fig = plot_pretraining_history(path)
    curves = _curves(fig)
    assert curves[0][0] == "train L_S" and curves[0][1] == [1, 2]
    assert curves[0][2] == pytest.approx([0.5, 0.25])


def _write(content):
    def writer(path):
        path.write_text(content)
        return path
    return writer


@pytest.mark.parametrize("make, error, match", [
    (lambda tmp: tmp / "missing.json", FileNotFoundError,
     r"neither a JSON history file nor a checkpoint"),
    (lambda tmp: _write('{"a": 1}')(tmp / "h.json"), ValueError,
     r"holds a JSON dict, not a list of per-epoch rows; pass the history\.json"),
    (lambda tmp: _write('[{"epoch": 1,')(tmp / "h.json"), ValueError,
     r"looks like a JSON file but cannot be read as one"),
    (lambda tmp: _write("epoch,loss\n1,0.5\n")(tmp / "h.csv"), ValueError,
     r"Cannot plot the history of .*h\.csv: .*it is a text file"),
    (lambda tmp: _write("[1, 2]")(tmp / "h.json"), ValueError,
     r"must hold one dict per epoch, but row 0 is not a dict \(int; 2 such rows\)"),
    (lambda tmp: _write('[{"epoch": 1, "lr": 0.1}]')(tmp / "h.json"), ValueError,
     r"holds no losses to plot"),
    (lambda tmp: 3, ValueError, r"history must be a list of per-epoch dicts, got int"),
])
def test_plot_bad_history_gives_a_clear_error(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        plot_pretraining_history(make(tmp_path))


def test_plot_release_state_dict_has_no_history(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "release.ckpt"
    torch.save({"tower.pos_embedding": torch.zeros(1, 20, 16)}, path)
    with pytest.raises(ValueError, match=r"PyTorch state dict without a training history"):
        plot_pretraining_history(path)


def test_instruction_level_figure_has_one_panel_per_dataset_and_the_baselines():
    from leaf_sk.viz import plot_instruction_levels

    rows = [{"dataset": d, "pipeline": "LEAF direct inference", "level": level,
             "balanced_accuracy": 0.4 + 0.1 * level, "chance": chance}
            for d, chance in (("A", 0.5), ("B", 1 / 3)) for level in (0, 1, 2)]
    rows.append({"dataset": "A", "pipeline": "TS+LR", "level": None, "balanced_accuracy": 0.7,
                 "chance": 0.5})
    fig = plot_instruction_levels(rows)
    assert [ax.get_title() for ax in fig.axes] == ["A", "B"]
    assert len(fig.axes[0].patches) == 3
    assert {line.get_label() for line in fig.axes[0].lines} == {"chance", "TS+LR"}
    with pytest.raises(ValueError, match="empty"):
        plot_instruction_levels([])


def test_embedding_geometry_and_query_states_figures(make_trials, ch_names):
    import numpy as np

    from leaf_sk import LeafEncoder
    from leaf_sk.viz import _class_geometry, plot_embedding_geometry, plot_query_states

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 10)
    Z = rng.standard_normal((20, 8)) + np.where(y == "a", 2.0, -2.0)[:, None]
    within, between = _class_geometry(Z, y)
    assert between > 3 and 0 < within < 20
    embeddings = {("A", level): (Z, y, ["left", "right"], np.array(["a", "b"])) for level in (0, 1, 2)}
    fig = plot_embedding_geometry(embeddings, "hashing-8")
    assert len(fig.axes) >= 3

    X, labels = make_trials(n_trials=6)
    encoder = LeafEncoder(None, size="tiny", text_encoder="hashing", instruction="which hand",
                          ch_names=ch_names, sfreq=250.0, device="cpu", random_state=0).fit(X)
    fig = plot_query_states(encoder, X, labels, "tiny")
    assert [ax.get_title() for ax in fig.axes] == ["Q-Former layer 1"]
    with pytest.raises(ValueError, match="fitted with an instruction"):
        plot_query_states(LeafEncoder(None, size="tiny", ch_names=ch_names, sfreq=250.0,
                                      device="cpu").fit(X), X, labels)
