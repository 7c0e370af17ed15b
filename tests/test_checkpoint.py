"""Checkpoints: the authors' release layout (LEAF_SPEC.md section 10) and leaf-sk's own format."""

import json
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
from conftest import BCI_IV_2A, SFREQ

from leaf_sk.checkpoint import (
    infer_config,
    load_checkpoint,
    read_metadata,
    resolve_checkpoint,
    save_checkpoint,
)
from leaf_sk.nn import LeafConfig, LeafModel, STRPretrainer

D_TEXT = 24
TINY = LeafConfig.from_size("tiny", d_text=D_TEXT)
# Tiny, but with 32 dimensions per head like the release, so that its size can be inferred.
TINY_INFERABLE = LeafConfig.from_size("tiny", d_model=32, n_heads=1, iqf_heads=1, d_text=D_TEXT)




def _random_model(config=TINY, seed=0):
    """A LeafModel whose every tensor (BatchNorm statistics included) holds random values."""
    generator = torch.Generator().manual_seed(seed)
    model = LeafModel(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("causal_mask"):
                continue
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return model.eval()


def _inputs(config, n_windows=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, config.n_channels, n_windows * config.window_samples, generator=generator)
    instruction = torch.nn.functional.normalize(
        torch.randn(3, config.d_text, generator=generator), dim=-1)
    return x, instruction


def _assert_same_outputs(expected, actual, parts=("tower", "qformer")):
    x, instruction = _inputs(expected.config)
    expected.eval()
    actual.eval()
    with torch.no_grad():
        if "qformer" in parts:
            torch.testing.assert_close(actual(x, instruction), expected(x, instruction),
                                       rtol=0, atol=0)
        torch.testing.assert_close(actual.tower(x), expected.tower(x), rtol=0, atol=0)


def _release_state(model, layout):
    """The model's weights as the release (or a Lightning wrapper around it) stores them."""
    full = {k: v.clone() for k, v in model.state_dict().items()}
    tower = {k[len("tower."):]: v for k, v in full.items() if k.startswith("tower.")}
    if layout == "full":
        return full
    if layout == "tower":
        return tower
    lightning_extras = {"epoch": 9, "global_step": 1234, "pytorch-lightning_version": "2.1.0",
                        "optimizer_states": [], "lr_schedulers": [],
                        "hyper_parameters": {"lr": 1e-3, "size": "base"}}
    if layout == "lightning-full":
        return {"state_dict": {f"model.{k}": v for k, v in full.items()}, **lightning_extras}
    if layout == "lightning-tower":
        return {"state_dict": {f"model.{k}": v for k, v in tower.items()}, **lightning_extras}
    raise AssertionError(layout)


# --- the release layout ------------------------------------------------------------------------


def test_base_layout_has_the_release_keys_and_shapes():
    with torch.device("meta"):
        model = LeafModel(LeafConfig())
    state = model.state_dict()
    tower_keys = [k for k in state if k.startswith("tower.")]
    assert len(state) == 396 and len(tower_keys) == 316
    assert {k.split(".", 1)[0] for k in state} == {"tower", "qformer"}
    expected_shapes = {
        "tower.pos_embedding": (1, 20, 256),
        "tower.mask_token": (1, 1, 256),
        "tower.causal_mask": (20, 20),
        "tower.tokenizer.enc_conv.0.weight": (64, 1, 1, 40),
        "tower.tokenizer.enc_conv.1.weight": (64, 64, 65, 1),
        "tower.tokenizer.enc_conv.2.running_var": (64,),
        "tower.tokenizer.enc_conv.2.num_batches_tracked": (),
        "tower.mask_inProj.weight": (256, 640),
        "tower.next_inProj.bias": (256,),
        "tower.next_transformer.layers.11.self_attn.in_proj_weight": (768, 256),
        "tower.mask_transformer.layers.0.self_attn.out_proj.weight": (256, 256),
        "tower.mask_transformer.layers.5.linear1.weight": (1024, 256),
        "tower.next_transformer.layers.3.linear2.weight": (256, 1024),
        "tower.mask_transformer.layers.7.norm2.bias": (256,),
        "tower.next_transformer.norm.weight": (256,),
        "tower.mask_outProj.0.weight": (1300, 256),
        "tower.next_outProj.3.weight": (100, 20),
        "qformer.base_queries": (8, 256),
        "qformer.pos_embedding": (1, 40, 256),
        "qformer.film.weight": (512, 768),
        "qformer.layers.3.cross_attn.in_proj_weight": (768, 256),
        "qformer.layers.0.self_attn.out_proj.bias": (256,),
        "qformer.layers.2.norm3.weight": (256,),
        "qformer.layers.1.ff.0.weight": (1024, 256),
        "qformer.layers.1.ff.2.weight": (256, 1024),
        "qformer.final_norm.bias": (256,),
        "qformer.output_embed.2.weight": (768, 2048),
    }
    assert {k: tuple(state[k].shape) for k in expected_shapes} == expected_shapes
    # Parameter counts of LEAF_SPEC.md section 8 (buffers excluded).
    n_tower = sum(p.numel() for p in model.tower.parameters())
    n_qformer = sum(p.numel() for p in model.qformer.parameters())
    assert (n_tower, n_qformer) == (20_230_288, 6_193_920)
    # The release's size is recovered from the shapes alone.
    assert infer_config(state) == LeafConfig()
    tower_only = {k: v for k, v in state.items() if k.startswith("tower.")}
    assert infer_config(tower_only, d_text=768) == LeafConfig()


@pytest.mark.parametrize("layout", ["full", "tower", "lightning-full", "lightning-tower"])
def test_release_file_loads_by_path(tmp_path, layout):
    model = _random_model()
    path = tmp_path / "leaf-release.ckpt"
    torch.save(_release_state(model, layout), path)
    loaded, info = load_checkpoint(path, config=TINY)
    assert info["format"] == "leaf-release"
    assert info["parts"] == (["qformer", "tower"] if layout.endswith("full") else ["tower"])
    assert not loaded.training
    _assert_same_outputs(model, loaded, parts=("tower",) if layout.endswith("tower") else
                         ("tower", "qformer"))
    for key, value in model.tower.state_dict().items():
        assert torch.equal(loaded.tower.state_dict()[key], value), key


def test_release_file_size_inferred_from_shapes(tmp_path):
    model = _random_model(TINY_INFERABLE)
    path = tmp_path / "full.ckpt"
    torch.save(_release_state(model, "full"), path)
    loaded, info = load_checkpoint(path)
    assert loaded.config == TINY_INFERABLE
    assert info["config"] == TINY_INFERABLE.to_dict()
    _assert_same_outputs(model, loaded)


def test_release_tower_only_takes_the_text_dimension(tmp_path):
    model = _random_model(TINY_INFERABLE)
    path = tmp_path / "pretrain.ckpt"
    torch.save(_release_state(model, "tower"), path)
    loaded, info = load_checkpoint(path, d_text=12)
    assert info["parts"] == ["tower"]
    # The Q-Former's depth cannot be read from a Tower-only file: it keeps the defaults.
    tower_fields = ("n_filters", "d_model", "n_layers", "n_heads", "d_ff", "recon_hidden")
    assert all(getattr(loaded.config, f) == getattr(TINY_INFERABLE, f) for f in tower_fields)
    assert loaded.config.d_text == 12
    assert loaded.qformer.film.weight.shape == (2 * TINY_INFERABLE.d_model, 12)
    _assert_same_outputs(model, loaded, parts=("tower",))


def test_release_file_with_wrong_keys_lists_them(tmp_path):
    state = _release_state(_random_model(), "full")
    del state["tower.mask_inProj.bias"]
    del state["qformer.final_norm.weight"]
    state["tower.extra_head.weight"] = torch.zeros(3)
    state["tower.next_inProj.weight"] = torch.zeros(5, 7)
    path = tmp_path / "broken.ckpt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="does not fit the LEAF network") as excinfo:
        load_checkpoint(path, config=TINY)
    message = str(excinfo.value)
    assert "missing keys (2): qformer.final_norm.weight, tower.mask_inProj.bias" in message
    assert "unexpected keys (1): tower.extra_head.weight" in message
    assert "tower.next_inProj.weight: file (5, 7) vs network" in message
    assert "Pass the matching config" in message


def test_release_file_of_another_size_lists_shape_mismatches(tmp_path):
    path = tmp_path / "tiny.ckpt"
    torch.save(_release_state(_random_model(), "tower"), path)
    with pytest.raises(ValueError, match=r"shape mismatches \(\d+\): .*tower\.mask_inProj\.weight"):
        load_checkpoint(path, config=LeafConfig.from_size("tiny", d_model=32, d_text=D_TEXT))


def test_release_file_with_wrong_keys_in_tower_only_file(tmp_path):
    state = _release_state(_random_model(), "tower")
    del state["tokenizer.enc_conv.2.running_mean"]
    path = tmp_path / "pretrain.ckpt"
    torch.save(state, path)
    missing = r"missing keys \(1\): tower\.tokenizer\.enc_conv\.2\.running_mean"
    with pytest.raises(ValueError, match=missing):
        load_checkpoint(path, config=TINY)


# --- files that are no checkpoint --------------------------------------------------------------


class _Trap:
    """Unpickling this object would create a file: a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_objects_are_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled.txt"
    torch_file = tmp_path / "object.pt"
    torch.save({"tower.pos_embedding": torch.zeros(1), "hook": _Trap(marker)}, torch_file)
    with pytest.raises(ValueError, match=r"pickles a Python object .*weights_only=True"):
        load_checkpoint(torch_file)
    pickle_file = tmp_path / "object.pkl"
    pickle_file.write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(ValueError, match=r"not a leaf-sk checkpoint .*nor a LEAF release file"):
        load_checkpoint(pickle_file)
    assert not marker.exists()


def _text_file(path):
    path.write_text("epoch,loss\n1,0.5\n")


def _empty_file(path):
    path.write_bytes(b"")


def _hdf5_file(path):
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # the HDF5 superblock signature


def _raw(n_times=200):
    import mne

    info = mne.create_info(["Fz", "Cz", "Pz"], 100.0, "eeg")
    return mne.io.RawArray(np.zeros((3, n_times)), info, verbose=False)


def _fif_recording(path):
    fif = path.with_name("rec_raw.fif")  # MNE insists on its own file names
    _raw().save(fif, verbose=False)
    fif.rename(path)


def _edf_recording(path):
    import mne

    pytest.importorskip("edfio")
    edf = path.with_name("rec.edf")
    mne.export.export_raw(edf, _raw(), verbose=False)
    edf.rename(path)


def _bdf_recording(path):
    path.write_bytes(b"\xffBIOSEMI" + b" " * 248)


def _brainvision_header(path):
    path.write_text("Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\n")


def _zip_archive(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not weights")


def _npz_archive(path):
    with open(path, "wb") as f:
        np.savez(f, weights=np.zeros(3))


def _short_file(path):
    path.write_bytes(b"LEAF")


def _json_file(path):
    path.write_text(json.dumps({"tower": [1, 2, 3]}))


def _foreign_safetensors(path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})


def _damaged_safetensors(path):
    path.write_bytes((20).to_bytes(8, "little") + b"{not json at all ...")


def _list_of_tensors(path):
    torch.save([torch.zeros(3), torch.ones(3)], path)


def _foreign_state_dict(path):
    torch.save({"encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)}, path)


@pytest.mark.parametrize("writer, match", [
    (_text_file, r"not a leaf-sk checkpoint .*nor a LEAF release file .*: it is a text file "
                 r"\(it starts with 'epoch,loss'\), not weights; pass a leaf-sk checkpoint"),
    (_short_file, r"too small to be a checkpoint"),
    (_empty_file, r"is empty \(0 bytes\), not a checkpoint: .* Write or fetch"),
    (_json_file, r"not a leaf-sk checkpoint .*nor a LEAF release file .*: it is a JSON text file "
                 r"\(it starts with '\{'\), not weights"),
    (_hdf5_file, r"it is an HDF5 file .*, not a PyTorch or safetensors file"),
    (_fif_recording, r"it is an EEG recording in MNE's FIF format, not network weights; .*fit"),
    (_edf_recording, r"it is an EEG recording in EDF format, not network weights"),
    (_bdf_recording, r"it is an EEG recording in BDF \(BioSemi\) format"),
    (_brainvision_header, r"it is the header of an EEG recording in BrainVision format"),
    (_zip_archive, r"it is a zip archive \(holding readme\.txt\) but not a PyTorch file"),
    (_npz_archive, r"it is a NumPy archive \(\.npz\)"),
    (_foreign_safetensors, r"safetensors file but not a leaf-sk checkpoint .*save_checkpoint"),
    (_damaged_safetensors, r"not a readable safetensors file"),
    (_list_of_tensors, r"holds a list, not a state dict of tensors"),
    (_foreign_state_dict, r"holds a state dict, but not of the LEAF network .*encoder\.bias"),
])
def test_not_a_checkpoint_gives_a_clear_error(tmp_path, writer, match):
    path = tmp_path / "file.bin"
    writer(path)
    with pytest.raises(ValueError, match=match) as excinfo:
        load_checkpoint(path)
    assert "pickle" not in str(excinfo.value) and "Traceback" not in str(excinfo.value)


def test_missing_checkpoint_names_the_packaged_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file, a folder nor a packaged"):
        load_checkpoint(tmp_path / "nothing-here.safetensors")
    with pytest.raises(TypeError, match="packaged name or a path"):
        load_checkpoint(3)


# --- our own format ----------------------------------------------------------------------------


def test_own_format_round_trip(tmp_path):
    model = _random_model()
    history = [{"epoch": 1, "train_L_S": 0.5, "valid_L_S": 0.625}]
    provenance = {"trainer": "test", "subjects": [1, 2]}
    path = save_checkpoint(tmp_path / "sub" / "leaf.safetensors", model, text_encoder="hashing",
                           sfreq=200.0, provenance=provenance, history=history)
    assert path.is_file()
    loaded, info = load_checkpoint(path)
    _assert_same_outputs(model, loaded)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert info["format"] == "leaf-sk" and info["format_version"] == 1
    assert info["config"] == TINY.to_dict()
    assert info["parts"] == ["qformer", "tower"]
    assert len(info["ch_names"]) == 65 and info["ch_names"][:3] == ["Fpz", "AFz", "Fz"]
    assert info["sfreq"] == 200.0
    assert info["text_encoder"] == {"name": "hashing", "dim": D_TEXT}
    assert info["provenance"] == provenance
    assert info["history"] == history
    assert read_metadata(path) == info


def test_own_format_header_is_plain_json(tmp_path):
    """The config sits in the safetensors header as JSON: nothing to unpickle."""
    path = save_checkpoint(tmp_path / "leaf.safetensors", _random_model(), text_encoder="hashing")
    raw = path.read_bytes()
    header = json.loads(raw[8: 8 + int.from_bytes(raw[:8], "little")])
    document = json.loads(header["__metadata__"]["leaf_sk"])
    assert document["config"]["d_model"] == TINY.d_model
    assert "tower.tokenizer.enc_conv.0.weight" in header
    assert b"\x80\x04" not in raw[:16]  # no pickle protocol marker at the start


def test_own_format_tower_only_round_trip(tmp_path):
    torch.manual_seed(0)
    pretrainer = STRPretrainer(TINY).eval()
    path = save_checkpoint(tmp_path / "tower.safetensors", pretrainer)
    loaded, info = load_checkpoint(path)
    assert info["parts"] == ["tower"]
    x, _ = _inputs(TINY)
    with torch.no_grad():
        torch.testing.assert_close(loaded.tower(x), pretrainer.tower(x), rtol=0, atol=0)


def test_own_format_half_precision_storage(tmp_path):
    model = _random_model()
    path = save_checkpoint(tmp_path / "half.safetensors", model, dtype=torch.float16)
    loaded, _ = load_checkpoint(path)
    assert loaded.tower.mask_inProj.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.tower.mask_inProj.weight, model.tower.mask_inProj.weight,
                               rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, error):
    import safetensors.torch

    path = save_checkpoint(tmp_path / "leaf.safetensors", _random_model(seed=0))
    before = path.read_bytes()

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # a partial file, then the failure
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(type(error)):
        save_checkpoint(path, _random_model(seed=1))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaf.safetensors"]
    loaded, _ = load_checkpoint(path)
    _assert_same_outputs(_random_model(seed=0), loaded)


# --- what `leaf-sk pretrain --out DIR` writes -------------------------------------------------

ROWS = [{"epoch": epoch, "train_L_S": 0.5 / epoch, "train_L_T": 0.6 / epoch, "train_zero_S": 1.0,
         "train_zero_T": 1.0, "lr": 1e-4, "dur": 0.1} for epoch in (1, 2)]


def _tiny_pretrainer(config=TINY, seed=0):
    torch.manual_seed(seed)
    return STRPretrainer(config).eval()


def _write_run(folder, pretrainer, *, tower=True, resume=True, history=True, epochs=()):
    """A folder as `leaf-sk pretrain --out folder` leaves it; ``epochs``: per-epoch files."""
    folder.mkdir(parents=True, exist_ok=True)
    if tower:
        save_checkpoint(folder / "tower.safetensors", pretrainer, history=ROWS)
    for epoch in epochs:
        save_checkpoint(folder / f"tower-epoch{epoch:03d}.safetensors", pretrainer,
                        history=ROWS[:epoch])
    if resume:  # the layout of leaf_sk._net.ResumeCheckpoint
        optimizer = torch.optim.AdamW(pretrainer.parameters())
        batches = [{"train_loss": 1.0, "train_batch_size": 4}]
        torch.save({"module": pretrainer.state_dict(), "optimizer": optimizer.state_dict(),
                    "history": [{**row, "batches": batches} for row in ROWS]},
                   folder / "resume.pt")
    if history:
        (folder / "history.json").write_text(json.dumps(ROWS, indent=1))
    return folder


def _same_tower(expected, loaded):
    x, _ = _inputs(TINY)
    with torch.no_grad():
        torch.testing.assert_close(loaded.tower(x), expected.tower(x), rtol=0, atol=0)


def test_history_json_is_named_as_the_training_history(tmp_path):
    run = _write_run(tmp_path / "run", _tiny_pretrainer())
    expected = (r"it is a JSON text file \(it starts with '\['\): the training history that "
                r"`leaf-sk pretrain` writes beside the checkpoint, not weights; pass ")
    for reader in (load_checkpoint, read_metadata):
        with pytest.raises(ValueError, match=expected) as excinfo:
            reader(run / "history.json")
        message = str(excinfo.value)
        assert f"pass {run / 'tower.safetensors'} or the folder {run}." in message
        assert "pickle" not in message


def test_pretrain_folder_loads_its_tower(tmp_path, make_trials):
    from leaf_sk import LeafEncoder

    pretrainer = _tiny_pretrainer()
    run = _write_run(tmp_path / "run", pretrainer, epochs=(1, 2))
    assert resolve_checkpoint(run) == run / "tower.safetensors"
    assert resolve_checkpoint(str(run)) == run / "tower.safetensors"
    loaded, info = load_checkpoint(run)
    assert info["format"] == "leaf-sk" and info["history"] == ROWS
    _same_tower(pretrainer, loaded)
    X, _ = make_trials(n_trials=3)
    encoder = LeafEncoder(checkpoint=str(run), ch_names=list(BCI_IV_2A), sfreq=SFREQ,
                          pooling="mean", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # channel interpolation
        features = encoder.fit_transform(X)
    assert features.shape == (3, TINY.d_model) and np.isfinite(features).all()


def test_resume_file_loads_the_tower_of_its_last_epoch(tmp_path):
    pretrainer = _tiny_pretrainer()
    run = _write_run(tmp_path / "run", pretrainer, tower=False)
    loaded, info = load_checkpoint(run / "resume.pt")
    assert info["format"] == "leaf-sk-resume" and info["parts"] == ["tower"]
    assert info["history"] == ROWS  # without the per-batch records
    # A named size: its head counts are taken, not guessed from d_model (tiny: 8 per head).
    assert loaded.config.n_heads == TINY.n_heads == 2
    _same_tower(pretrainer, loaded)


def test_resume_file_of_an_unnamed_size_asks_for_the_config(tmp_path):
    config = LeafConfig.from_size("tiny", d_model=32, n_heads=4, d_text=D_TEXT)
    pretrainer = _tiny_pretrainer(config)
    run = _write_run(tmp_path / "run", pretrainer, tower=False)
    with pytest.raises(ValueError, match=r"resume\.pt of a `leaf-sk pretrain` run whose network "
                                         r"is of no named size .*Pass the tower\.safetensors of "
                                         r"the run .*or config="):
        load_checkpoint(run / "resume.pt")
    loaded, _ = load_checkpoint(run / "resume.pt", config=config)
    x, _ = _inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.tower(x), pretrainer.tower(x), rtol=0, atol=0)


def _unfinished_with_epochs(folder):
    _write_run(folder, _tiny_pretrainer(), tower=False, epochs=(1, 2, 3))


def _unfinished_with_resume_only(folder):
    _write_run(folder, _tiny_pretrainer(), tower=False)


def _other_safetensors(folder):
    folder.mkdir()
    save_checkpoint(folder / "leaf.safetensors", _tiny_pretrainer())


def _empty_folder(folder):
    folder.mkdir()


def _unrelated_folder(folder):
    folder.mkdir()
    for index in range(8):
        (folder / f"notes{index}.txt").write_text("x")


@pytest.mark.parametrize("layout, match", [
    (_unfinished_with_epochs,
     r"holds no tower\.safetensors \(which `leaf-sk pretrain` writes when a run ends\) but "
     r"per-epoch checkpoints \(tower-epoch001\.safetensors, tower-epoch002\.safetensors, "
     r"tower-epoch003\.safetensors\) and resume\.pt: the run did not finish\. Pass the latest, "
     r".*tower-epoch003\.safetensors, or finish the run"),
    (_unfinished_with_resume_only,
     r"holds no tower\.safetensors .* but resume\.pt, the resume file of an unfinished run\. "
     r"Pass .*resume\.pt to load the weights of its last finished epoch"),
    (_other_safetensors, r"holds no tower\.safetensors but other \.safetensors files "
                         r"\(leaf\.safetensors\); pass one of them"),
    (_empty_folder, r"is empty: no tower\.safetensors to load\. Pass the --out folder"),
    (_unrelated_folder, r"holds no checkpoint: .*\(it holds notes0\.txt, notes1\.txt, .*, "
                        r"notes5\.txt, \.\.\. \(8 in all\)\)\. Pass the --out folder"),
])
def test_folder_without_tower_says_what_it_holds(tmp_path, layout, match):
    folder = tmp_path / "run"
    layout(folder)
    with pytest.raises(FileNotFoundError, match=match):
        resolve_checkpoint(folder)
    with pytest.raises(FileNotFoundError, match=match):
        load_checkpoint(folder)


@pytest.mark.filterwarnings("ignore:.*template channels .* are interpolated:UserWarning")
def test_pretrain_cli_out_folder_end_to_end(tmp_path):
    """What the user report did, on a real (tiny, one-epoch) `leaf-sk pretrain` run."""
    from conftest import write_muse_csv

    from leaf_sk.cli import main

    csv = tmp_path / "rec.csv"
    write_muse_csv(csv, n_samples=8 * 256)
    out = tmp_path / "run"
    assert main(["pretrain", "--files", str(csv), "--out", str(out), "--segment-seconds", "2",
                 "--size", "tiny", "--max-epochs", "1", "--n-windows", "2", "--batch-size", "4",
                 "--quiet"]) == 0
    from_folder, info = load_checkpoint(out)
    assert info["history"] == json.loads((out / "history.json").read_text())
    with pytest.raises(ValueError, match="the training history that `leaf-sk pretrain` writes"):
        load_checkpoint(out / "history.json")
    from_resume, resume_info = load_checkpoint(out / "resume.pt")
    assert resume_info["history"] == info["history"]
    assert from_resume.config == from_folder.config
    x, _ = _inputs(from_folder.config)
    with torch.no_grad():
        torch.testing.assert_close(from_resume.tower(x), from_folder.tower(x), rtol=0, atol=0)


def test_release_file_behaves_as_the_release_in_the_estimators(tmp_path, make_trials):
    from leaf_sk import LeafEncoder
    from leaf_sk.checkpoint import is_release_checkpoint
    from leaf_sk.montage import TEMPLATE_CH_NAMES

    path = tmp_path / "leaf-release.ckpt"
    torch.save(_release_state(_random_model(TINY_INFERABLE), "full"), path)
    assert is_release_checkpoint(str(path))
    assert not is_release_checkpoint("leaf-small-bci") and not is_release_checkpoint(None)
    names = ["C3", "Cz", "C4", "CB1", "CB2", "Pz", "O1", "O2"]
    X = make_trials(n_trials=3, ch_names=names)[0]
    o1, o2 = TEMPLATE_CH_NAMES.index("O1"), TEMPLATE_CH_NAMES.index("O2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # interpolation
        release = LeafEncoder(str(path), ch_names=names, sfreq=SFREQ, pooling="mean",
                              device="cpu").fit(X)
        ours = LeafEncoder(str(path), ch_names=names, sfreq=SFREQ, pooling="mean",
                           release_compat=False, device="cpu").fit(X)
    assert release.release_compat_ and not ours.release_compat_
    assert release.model_.qformer.config.iqf_positions == "contiguous"
    assert ours.model_.qformer.config.iqf_positions == "branch"
    # CB1 feeds O2 in the release's mapping (with O2 itself), O1 in ours
    cb1 = names.index("CB1")
    assert release.channel_map_.matrix[o2, cb1] > 0 and release.channel_map_.matrix[o1, cb1] == 0
    assert ours.channel_map_.matrix[o1, cb1] > 0 and ours.channel_map_.matrix[o2, cb1] == 0
