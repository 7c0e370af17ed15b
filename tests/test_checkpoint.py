"""Checkpoints: the authors' release layout (LEAF_SPEC.md section 10) and leaf-sk's own format."""

import json
import pickle

import pytest
import torch

from leaf_sk.checkpoint import (
    infer_config,
    load_checkpoint,
    read_metadata,
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
    (_text_file, r"not a leaf-sk checkpoint .*nor a LEAF release file .*not a PyTorch file"),
    (_short_file, r"too small to be a checkpoint"),
    (_json_file, r"not a leaf-sk checkpoint .*nor a LEAF release file"),
    (_foreign_safetensors, r"safetensors file but not a leaf-sk checkpoint .*save_checkpoint"),
    (_damaged_safetensors, r"not a readable safetensors file"),
    (_list_of_tensors, r"holds a list, not a state dict of tensors"),
    (_foreign_state_dict, r"holds a state dict, but not of the LEAF network .*encoder\.bias"),
])
def test_not_a_checkpoint_gives_a_clear_error(tmp_path, writer, match):
    path = tmp_path / "file.bin"
    writer(path)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_packaged_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a packaged checkpoint"):
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
