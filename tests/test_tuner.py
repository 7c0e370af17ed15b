"""LeafInstructionTuner: several labelled datasets, one label space, resume, bad inputs."""

import contextlib

import numpy as np
import pytest
import torch

import leaf_sk.tuner as tuner_module
from leaf_sk import LeafInstructionClassifier
from leaf_sk.checkpoint import read_metadata
from leaf_sk.tuner import RESUME_FILE, LeafInstructionTuner, TuningTask

pytestmark = pytest.mark.filterwarnings("ignore:.*template channels.*are interpolated:UserWarning")

MOTOR = ["C3", "Cz", "C4", "FC3", "FC4", "CP3", "CP4", "Pz"]
VISUAL = ["Oz", "O1", "O2", "POz", "PO3", "PO4", "PO7", "PO8"]
HANDS = {"left_hand": "Left hand", "right_hand": "Right hand"}
FLICKER = {"13": "13 Hz flicker", "17": "17 Hz flicker"}


def _tasks(seed=0):
    rng = np.random.default_rng(seed)
    mi = TuningTask(rng.standard_normal((16, 8, 480)) * 10, np.array(list(HANDS) * 8),
                    "motor_imagery", HANDS, ch_names=MOTOR, sfreq=160.0,
                    groups=np.repeat([1, 2], 8), mirror_labels={"left_hand": "right_hand",
                                                                "right_hand": "left_hand"},
                    name="mi")
    ssvep = TuningTask(rng.standard_normal((12, 8, 400)) * 10, np.array(list(FLICKER) * 6),
                       "ssvep", FLICKER, ch_names=["Oz", "O1", "O2", "POz", "PO3", "PO4", "Pz", "PO8"],
                       sfreq=200.0, name="ssvep")  # shares Pz with the motor task
    return [mi, ssvep]


def _tuner(**params):
    defaults = dict(checkpoint=None, size="tiny", text_encoder="hashing", max_epochs=2, batch_size=4,
                    device="cpu", verbose=0, random_state=0)
    return LeafInstructionTuner(**{**defaults, **params})


def test_one_label_space_history_and_a_checkpoint_the_classifier_loads(tmp_path):
    tuner = _tuner().fit(_tasks())
    assert tuner.label_space_ == ["Left hand", "Right hand", "13 Hz flicker", "17 Hz flicker"]
    assert [row["epoch"] for row in tuner.history_] == [1, 2]
    assert {"mi_loss", "mi_train_acc", "ssvep_loss", "ssvep_train_acc"} <= set(tuner.history_[0])
    path = tuner.save(tmp_path / "tuned.safetensors", provenance={"data": "synthetic"})
    meta = read_metadata(path)
    assert meta["parts"] == ["qformer", "spectral", "tower"] and meta["config"]["power_memory"] is True
    assert meta["provenance"]["label_space"] == tuner.label_space_
    X, y = _tasks()[0].X, _tasks()[0].y
    clf = LeafInstructionClassifier(str(path), text_encoder="hashing", ch_names=MOTOR, sfreq=160.0,
                                    max_epochs=0, instruction="Which imagined movement is this?",
                                    label_texts=HANDS, alignment="euclidean", device="cpu").fit(X, y)
    assert clf.predict_proba(X).shape == (16, 2)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = _tuner(max_epochs=3).fit(_tasks())
    real_atomic_path = tuner_module.atomic_path

    @contextlib.contextmanager
    def killed_after_writing(path):  # Ctrl-C right after the first resume file is complete
        with real_atomic_path(path) as tmp:
            yield tmp
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner_module, "atomic_path", killed_after_writing)
    with pytest.raises(KeyboardInterrupt):
        _tuner(max_epochs=3, checkpoint_dir=str(tmp_path)).fit(_tasks())
    monkeypatch.undo()
    assert torch.load(tmp_path / RESUME_FILE, weights_only=False)["epoch"] == 1
    resumed = _tuner(max_epochs=3, checkpoint_dir=str(tmp_path)).fit(_tasks())
    assert [row["epoch"] for row in resumed.history_] == [1, 2, 3]
    for (name, a), b in zip(whole.model_.state_dict().items(), resumed.model_.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_resume_with_other_settings_is_refused(tmp_path):
    _tuner(max_epochs=1, checkpoint_dir=str(tmp_path)).fit(_tasks())
    with pytest.raises(ValueError, match="other tasks or settings"):
        _tuner(max_epochs=2, checkpoint_dir=str(tmp_path), lr=1e-3).fit(_tasks())
    # A file written before a setting existed ran it at its default: it resumes under the
    # default and is refused under another value.
    state = torch.load(tmp_path / RESUME_FILE, weights_only=False)
    del state["params"]["ft_surrogate"]
    torch.save(state, tmp_path / RESUME_FILE)
    assert len(_tuner(max_epochs=2, checkpoint_dir=str(tmp_path)).fit(_tasks()).history_) == 2
    torch.save(state, tmp_path / RESUME_FILE)
    with pytest.raises(ValueError, match="other tasks or settings"):
        _tuner(max_epochs=2, checkpoint_dir=str(tmp_path), ft_surrogate=0.5).fit(_tasks())


def test_unknown_family_is_refused():
    tasks = _tasks()
    tasks[1].family = "telepathy"
    with pytest.raises(ValueError, match=r"ssvep: unknown task family 'telepathy'; known families"):
        _tuner().fit(tasks)


def test_missing_label_text_is_refused():
    tasks = _tasks()
    tasks[0].label_texts = {"left_hand": "Left hand"}
    with pytest.raises(ValueError, match=r"mi: label\(s\) \['right_hand'\] of y have no text"):
        _tuner().fit(tasks)


def test_tasks_without_a_common_channel_are_refused():
    tasks = _tasks()
    tasks[1].ch_names = VISUAL
    with pytest.raises(ValueError, match="share no electrode site"):
        _tuner().fit(tasks)


def test_fit_needs_a_list_of_tasks():
    with pytest.raises(TypeError, match="list of TuningTask"):
        _tuner().fit(_tasks()[0])


def test_config_overrides_shape_random_weights():
    tuner = _tuner(max_epochs=1, config={"temporal_kernel": 20}).fit(_tasks())
    assert tuner.model_.config.temporal_kernel == 20 and tuner.model_.config.power_memory


def test_spectral_memory_is_trained_saved_and_loaded(tmp_path):
    tuner = _tuner(max_epochs=1, spectral_memory=True).fit(_tasks())
    assert tuner.model_.config.spectral_memory
    path = tuner.save(tmp_path / "tuned.safetensors")
    X, y = _tasks()[0].X, _tasks()[0].y
    clf = LeafInstructionClassifier(path, max_epochs=0, instruction="motor imagery",
                                    ch_names=_tasks()[0].ch_names, sfreq=_tasks()[0].sfreq,
                                    text_encoder="hashing").fit(X, y)
    assert clf.module_.model.config.spectral_memory
    weights = clf.module_.model.spectral.spatial.weight
    assert torch.equal(weights, tuner.model_.spectral.spatial.weight)
    # Without alignment, a trial's output does not depend on the trials around it.
    clf.set_params(alignment=None, batch_size=3).fit(X, y)
    full = clf.decision_function(X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(clf.decision_function(X[order]), full[order])
    np.testing.assert_array_equal(clf.decision_function(X[[5]])[0], full[5])


def test_a_tower_free_instruction_path_is_tuned_saved_and_loaded(tmp_path):
    tuner = _tuner(max_epochs=1, config={"tower_memory": False}).fit(_tasks())
    config = tuner.model_.config
    assert not config.tower_memory and config.power_memory and config.spectral_memory
    path = tuner.save(tmp_path / "tuned.safetensors")
    assert read_metadata(path)["config"]["tower_memory"] is False
    X, y = _tasks()[0].X, _tasks()[0].y
    clf = LeafInstructionClassifier(path, max_epochs=0, instruction="motor imagery",
                                    ch_names=_tasks()[0].ch_names, sfreq=_tasks()[0].sfreq,
                                    text_encoder="hashing").fit(X, y)
    assert not clf.module_.model.config.tower_memory
    assert clf.predict_proba(X).shape == (16, 2)
    with pytest.raises(ValueError, match="nothing to read"):
        _tuner(config={"tower_memory": False}, power_memory=False,
               spectral_memory=False).fit(_tasks())


def test_cli_tune_refuses_a_config_that_is_not_json(capsys):
    from leaf_sk.cli import main

    assert main(["tune", "--moabb", "Kalunga2016:1", "--out", "unused", "--config", "{kernel"]) == 2
    assert "--config '{kernel' is not JSON" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--branches", "0"], "--branches 0: give 1 or more"),
    (["--branches", "3", "--branch-epoch", "8"], "--branch-epoch 8: give 1 to 7"),
    (["--branches", "2", "--max-epochs", "1"], "--branches 2 needs --max-epochs 2 or more"),
])
def test_cli_tune_refuses_branches_that_cannot_run(capsys, options, message):
    from leaf_sk.cli import main

    assert main(["tune", "--moabb", "Kalunga2016:1", "--out", "unused", *options]) == 2
    assert message in capsys.readouterr().err


def test_cli_tune_names_a_subject_that_is_not_on_disk(capsys, monkeypatch, tmp_path):
    from conftest import offline_without_data

    from leaf_sk.cli import main

    offline_without_data(monkeypatch, tmp_path)
    assert main(["tune", "--moabb", "Kalunga2016:12", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Kalunga2016 subject 12 is not on this machine" in err and "Traceback" not in err


def test_crops_start_on_the_window_grid_unless_crop_step_is_smaller():
    tuner = _tuner(crop_windows=1)
    task = {"data": torch.arange(600.0).expand(8, 2, 600), "targets": torch.zeros(8, dtype=int),
            "mirror": None}
    index = torch.arange(8)

    def starts(step, seed=0):
        rng = np.random.default_rng(seed)
        crops = [tuner._augment(dict(task, crop_step=step), index, rng) for _ in range(40)]
        assert all(int(x[0, 0, 0]) == offset for x, _, offset in crops)
        return {offset for _, _, offset in crops}

    assert starts(100) == {0, 100}
    shifted = starts(1)
    assert len(shifted) > 10 and max(shifted) <= 100 and any(s % 100 for s in shifted)
    assert tuner._augment(dict(task, crop_step=100), index,
                          np.random.default_rng(0))[0].shape[-1] == 500
    with pytest.raises(ValueError, match="crop_step"):
        _tuner(crop_step=0).fit(_tasks())
    tuner.set_params(crop_step={"ssvep": 1})
    assert tuner._crop_steps(["mi", "ssvep"]) == [100, 1]
    assert _tuner(crop_step=25)._crop_steps(["mi", "ssvep"]) == [25, 25]


def test_a_crop_step_per_task_must_name_tasks_of_the_run():
    names = [task.name for task in _tasks()]
    _tuner(crop_step={names[0]: 1}, max_epochs=1).fit(_tasks())
    with pytest.raises(ValueError, match="not tasks of this run"):
        _tuner(crop_step={"nope": 1}).fit(_tasks())
    with pytest.raises(ValueError, match="integer from 1 to 100"):
        _tuner(crop_step={names[0]: 0}).fit(_tasks())


def test_branches_average_their_weights_and_the_first_continues_the_single_run(tmp_path,
                                                                               monkeypatch):
    single = _tuner(max_epochs=3).fit(_tasks())
    soup = _tuner(max_epochs=3, n_branches=2, branch_epoch=1, checkpoint_dir=str(tmp_path)).fit(_tasks())
    assert [(row["epoch"], row.get("branch")) for row in soup.history_] == [
        (1, None), (2, 0), (3, 0), (2, 1), (3, 1)]
    first, second = (torch.load(tmp_path / tuner_module.BRANCH_RESUME_FILE.format(k),
                                weights_only=False)["model"] for k in (0, 1))
    for name, value in single.model_.state_dict().items():
        torch.testing.assert_close(first[name], value, msg=name)
    differs = False
    for name, value in soup.model_.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (first[name] + second[name]) / 2, msg=name)
            differs |= not torch.equal(first[name], second[name])
    assert differs  # the second branch drew other batches
    writes = _count_resume_writes(monkeypatch)
    again = _tuner(max_epochs=3, n_branches=2, branch_epoch=1, checkpoint_dir=str(tmp_path)).fit(_tasks())
    assert writes == []  # nothing trained again: read back from the finished branches' files
    assert again.history_ == soup.history_
    for (name, a), b in zip(soup.model_.state_dict().items(), again.model_.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    # The first part trained again on other trials (same labels): its branch files are stale.
    (tmp_path / RESUME_FILE).unlink()
    with pytest.raises(ValueError, match="continues another first part of the run"):
        _tuner(max_epochs=3, n_branches=2, branch_epoch=1,
               checkpoint_dir=str(tmp_path)).fit(_tasks(seed=1))


def _count_resume_writes(monkeypatch):
    """The list of resume files written from now on, in order."""
    real_atomic_path, written = tuner_module.atomic_path, []

    @contextlib.contextmanager
    def counted(path):
        with real_atomic_path(path) as tmp:
            yield tmp
        written.append(path.name)

    monkeypatch.setattr(tuner_module, "atomic_path", counted)
    return written


def test_a_killed_branched_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = _tuner(max_epochs=3, n_branches=2, branch_epoch=1).fit(_tasks())
    real_atomic_path = tuner_module.atomic_path
    written = []

    @contextlib.contextmanager
    def killed_in_the_second_branch(path):
        with real_atomic_path(path) as tmp:
            yield tmp
        written.append(path)
        if len(written) == 4:  # trunk epoch 1, branch 0 epochs 2-3, branch 1 epoch 2
            raise KeyboardInterrupt

    monkeypatch.setattr(tuner_module, "atomic_path", killed_in_the_second_branch)
    with pytest.raises(KeyboardInterrupt):
        _tuner(max_epochs=3, n_branches=2, branch_epoch=1, checkpoint_dir=str(tmp_path)).fit(_tasks())
    monkeypatch.undo()
    writes = _count_resume_writes(monkeypatch)
    resumed = _tuner(max_epochs=3, n_branches=2, branch_epoch=1,
                     checkpoint_dir=str(tmp_path)).fit(_tasks())
    assert writes == [tuner_module.BRANCH_RESUME_FILE.format(1)]  # the one epoch left
    assert [
        {k: v for k, v in r.items() if k != "seconds"} for r in resumed.history_] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in whole.history_]
    for (name, a), b in zip(whole.model_.state_dict().items(), resumed.model_.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("params, match", [
    (dict(n_branches=2, branch_epoch=2, max_epochs=2), "branch_epoch=2 leaves no epoch"),
    (dict(n_branches=2, branch_epoch=1, distributed=True), "does not run with distributed"),
])
def test_branch_settings_that_cannot_run_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        _tuner(**params).fit(_tasks())


def test_ft_surrogate_replaces_about_its_share_of_trials_and_keeps_their_power():
    task = {"data": torch.randn(400, 2, 400), "targets": torch.zeros(400, dtype=int),
            "mirror": None}
    index = torch.arange(400)
    x, _, _ = _tuner(crop_windows=0, ft_surrogate=0.25)._augment(task, index,
                                                                 np.random.default_rng(0))
    changed = (x - task["data"]).abs().amax(dim=(1, 2)) > 1e-4
    assert 0.15 < changed.float().mean() < 0.35
    power = lambda v: torch.fft.rfft(v).abs()  # noqa: E731
    torch.testing.assert_close(power(x), power(task["data"]), atol=1e-3, rtol=1e-4)
    same, _, _ = _tuner(crop_windows=0)._augment(task, index, np.random.default_rng(0))
    assert torch.equal(same, task["data"])
    with pytest.raises(ValueError, match="ft_surrogate"):
        _tuner(ft_surrogate=1.5).fit(_tasks())


def test_positions_that_whole_trials_use_are_trained_with_own_lengths_and_crop_positions():
    """The tasks' trials are 6 and 4 windows long, cropped by one. Batches cropped to the
    shorter task train positions 0-2 only (the others keep their initial values, the same for
    two learning rates from the same seed); each task at its own length, at the positions of
    its crop, trains 0-5, every position a whole trial uses, and no other."""
    def trained_positions(**params):
        a, b = (_tuner(weight_decay=0.0, lr=lr, **params).fit(_tasks()).model_
                for lr in (1e-4, 1e-3))
        a, b = a.tower.pos_embedding[0], b.tower.pos_embedding[0]
        return ((a - b).abs().amax(dim=1) > 0).tolist()

    plain = trained_positions()
    assert plain[:3] == [True] * 3 and not any(plain[3:])
    assert sum(trained_positions(positions="random")[3:]) >= 3
    own = trained_positions(batch_lengths="own", positions="crop")
    assert own[:6] == [True] * 6 and not any(own[6:])
    assert trained_positions(batch_lengths="own")[:5] == [True] * 5


def test_cli_tune_passes_batch_lengths_positions_and_crop_steps_to_the_tuner(monkeypatch,
                                                                             tmp_path, capsys):
    from conftest import use_shared_data

    from leaf_sk.cli import main

    use_shared_data(monkeypatch, "MNE-ssvepexo-data")
    seen = []

    def record(self, tasks):
        seen.append((self.batch_lengths, self.positions, self.crop_step))
        raise RuntimeError("stop after the settings were read")

    monkeypatch.setattr(LeafInstructionTuner, "fit", record)
    for options in ([], ["--batch-lengths", "own", "--positions", "crop"], ["--crop-step", "25"],
                    ["--crop-step", "Kalunga2016=1"]):
        with contextlib.suppress(RuntimeError):
            main(["tune", "--moabb", "Kalunga2016:1", "--out", str(tmp_path / "run"), "--quiet",
                  *options])
    assert seen == [("shortest", "start", 100), ("own", "crop", 100), ("shortest", "start", 25),
                    ("shortest", "start", {"Kalunga2016": 1})]
    for bad, message in (("Nope=1", "not a dataset of this run"), ("x", "must be an integer"),
                         ("0", "from 1 to 100")):
        assert main(["tune", "--moabb", "Kalunga2016:1", "--out", str(tmp_path / "run"),
                     "--quiet", "--crop-step", bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("loss, accuracy, warns", [(0.07, 0.52, True), (0.07, 0.95, False),
                                                   (0.69, 0.52, False)])
def test_a_fit_that_eval_mode_does_not_reproduce_warns(loss, accuracy, warns):
    """A seed of the packaged recipe fitted its PhysioNet crops (loss 0.07) and classified 52 %
    of its own training trials whole, in eval mode (benchmarks/RESULTS.md, sixth round)."""
    import warnings

    tuner = _tuner()
    tuner.history_ = [{"epoch": 8, "mi_loss": loss, "mi_train_acc": accuracy}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner._warn_if_eval_mode_misses_what_training_fitted(
            [{"name": "mi", "texts": ["Left hand", "Right hand"]}])
    messages = [str(w.message) for w in caught]
    assert bool(messages) == warns
    if warns:
        assert "'mi' fell to 0.070" in messages[0] and "52.0% of its own training" in messages[0]
        assert "batch_lengths='own', positions='crop'" in messages[0]
