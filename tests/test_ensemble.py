"""Ensemble checkpoints: several tuned models in one file, their outputs averaged."""

import numpy as np
import pytest
import torch

from leaf_sk import LeafEncoder, LeafInstructionClassifier, LeafPretrainer
from leaf_sk.checkpoint import combine_checkpoints, load_checkpoint, read_metadata, save_checkpoint
from leaf_sk.nn import LeafConfig, LeafEnsemble, LeafModel, members_of
from leaf_sk.tuner import LeafInstructionTuner

TINY = LeafConfig.from_size("tiny", d_text=64)  # the hashing text encoder is 64-d
INSTRUCTION = "motor imagery: left or right hand"


def _member(tmp_path, seed, config=TINY, tower_only=False, data=("PhysionetMI", [1, 2]),
            alignment="euclidean"):
    torch.manual_seed(seed)
    model = LeafModel(config).eval()
    with torch.no_grad():  # BatchNorm statistics that differ between members
        norm = model.tower.tokenizer.enc_conv[2]
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(tmp_path / f"member{seed}.safetensors",
                           model.tower if tower_only else model, text_encoder="hashing",
                           provenance={"seed": seed, "data": {"datasets": [list(data)]},
                                       "params": {"alignment": alignment, "random_state": seed}})


@pytest.fixture
def members(tmp_path):
    return [_member(tmp_path, seed) for seed in (0, 1, 2)]


def test_the_file_holds_every_member_and_averages_their_embeddings(tmp_path, members):
    path = combine_checkpoints(members, tmp_path / "ensemble.safetensors")
    ensemble, info = load_checkpoint(path)
    assert isinstance(ensemble, LeafEnsemble) and len(ensemble.members) == 3
    assert info["n_members"] == 3 and info["parts"] == ["qformer", "tower"]
    assert [m["provenance"]["seed"] for m in info["provenance"]["members"]] == [0, 1, 2]
    assert all(len(m["sha256"]) == 64 for m in info["provenance"]["members"])
    # What the members agree on is read as for one model (alignment="auto", leak checks).
    assert info["provenance"]["data"] == {"datasets": [["PhysionetMI", [1, 2]]]}
    assert info["provenance"]["params"] == {"alignment": "euclidean"}
    from leaf_sk.alignment import checkpoint_alignment

    assert checkpoint_alignment(str(path)) == "euclidean"
    singles = [load_checkpoint(p)[0] for p in members]
    x = torch.randn(5, 65, 400)
    instruction = torch.nn.functional.normalize(torch.randn(64), dim=0)
    with torch.no_grad():
        expected = torch.stack([m(x, instruction) for m in singles]).mean(0)
        torch.testing.assert_close(ensemble(x, instruction), expected)
    assert members_of(ensemble) == list(ensemble.members) and members_of(singles[0]) == [singles[0]]


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path, members):
    full = combine_checkpoints(members, tmp_path / "full.safetensors")
    half = combine_checkpoints(members, tmp_path / "half.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    a, b = load_checkpoint(full)[0], load_checkpoint(half)[0]
    for (name, value), other in zip(a.state_dict().items(), b.state_dict().values()):
        assert other.dtype == value.dtype, name
        torch.testing.assert_close(other, value, rtol=1e-3, atol=1e-3, msg=name)


def test_the_estimators_use_every_member(tmp_path, members, make_estimator, make_trials):
    X, y = make_trials()
    path = str(combine_checkpoints(members, tmp_path / "ensemble.safetensors"))
    common = dict(instruction=INSTRUCTION, label_texts=["Left", "Right"])
    embedded = [make_estimator(LeafEncoder, checkpoint=str(p), **common).fit(X).transform(X)
                for p in members]
    ensemble = make_estimator(LeafEncoder, checkpoint=path, **common).fit(X).transform(X)
    np.testing.assert_allclose(ensemble, np.mean(embedded, axis=0), rtol=1e-5, atol=1e-6)
    pooled = [make_estimator(LeafEncoder, checkpoint=str(p), pooling="logvar").fit_transform(X)
              for p in members]
    encoder = make_estimator(LeafEncoder, checkpoint=path, pooling="logvar").fit(X)
    assert encoder.n_features_out_ == 3 * TINY.n_filters
    np.testing.assert_allclose(encoder.transform(X), np.hstack(pooled), rtol=1e-5, atol=1e-6)

    whole = make_estimator(LeafInstructionClassifier, checkpoint=path, max_epochs=1,
                           freeze="none", warm_start=True, lr_tokenizer=0.5).fit(X, y)
    tokenizer_group = whole.net_.optimizer_.param_groups[0]
    assert tokenizer_group["lr"] == 0.5  # every member's tokenizer on its own learning rate
    assert len(tokenizer_group["params"]) == 3 * len(list(
        whole.module_.model.members[0].tower.tokenizer.parameters()))

    clf = make_estimator(LeafInstructionClassifier, checkpoint=path, max_epochs=1).fit(X, y)
    assert clf.freeze_ == "encoder" and clf.predict_proba(X).shape == (len(X), 2)
    tuned = clf.module_.model
    for member, source in zip(tuned.members, members):
        start = load_checkpoint(source)[0]
        for name, value in start.tower.state_dict().items():  # frozen: every member's Tower
            torch.testing.assert_close(member.tower.state_dict()[name], value, msg=name)
        assert any(not torch.equal(value, start.qformer.state_dict()[name])
                   for name, value in member.qformer.state_dict().items())


@pytest.mark.parametrize("n_members", [1, 2])
def test_frozen_towers_run_once_and_train_exactly_as_when_run_every_step(
        tmp_path, make_estimator, make_trials, monkeypatch, n_members):
    """Fine-tuning with frozen Towers reads their outputs computed before the first epoch."""
    from leaf_sk.classifier import AlignmentModule

    config = TINY.replace(power_memory=True, spectral_memory=True)
    paths = [_member(tmp_path, seed, config=config) for seed in range(n_members)]
    path = paths[0] if n_members == 1 else combine_checkpoints(paths, tmp_path / "e.safetensors")
    X, y = make_trials(n_trials=12)
    params = dict(checkpoint=str(path), max_epochs=2, batch_size=4, freeze="encoder")
    calls = []
    tower_class = type(members_of(load_checkpoint(path)[0])[0].tower)
    encode = tower_class.encode
    monkeypatch.setattr(tower_class, "encode",
                        lambda self, *a, **k: calls.append(1) or encode(self, *a, **k))
    kept = make_estimator(LeafInstructionClassifier, **params).fit(X, y)
    assert len(calls) == n_members * 3  # one pass over the 12 trials in batches of 4
    monkeypatch.setattr(AlignmentModule, "tower_inputs", lambda self, data, *args: data)
    rerun = make_estimator(LeafInstructionClassifier, **params).fit(X, y)
    assert [row["train_loss"] for row in kept.history_] == [row["train_loss"] for row in rerun.history_]
    for name, value in kept.module_.state_dict().items():
        assert torch.equal(value, rerun.module_.state_dict()[name]), name
    np.testing.assert_array_equal(kept.predict_proba(X), rerun.predict_proba(X))


def test_release_compat_reaches_every_member(tmp_path, members):
    from leaf_sk._base import build_model

    model, _ = build_model(str(combine_checkpoints(members, tmp_path / "e.safetensors")), "tiny",
                           64, 0, release_compat=True)
    assert all(m.qformer.config.iqf_positions == "contiguous" for m in model.members)


def test_an_ensemble_is_no_starting_point_for_tuning_or_pretraining(tmp_path, members):
    path = str(combine_checkpoints(members, tmp_path / "ensemble.safetensors"))
    with pytest.raises(ValueError, match="ensemble of 3 models; tuning starts from one model"):
        LeafInstructionTuner(path, text_encoder="hashing")._build(
            type("Encoder", (), {"dim": 64})(), 0)
    with pytest.raises(ValueError, match="ensemble of 3 models; pretraining continues one"):
        LeafPretrainer(checkpoint=path, size="tiny")._make_module(0)


def test_members_that_do_not_fit_together_are_refused(tmp_path, members):
    with pytest.raises(ValueError, match="two or more checkpoints"):
        combine_checkpoints(members[:1], tmp_path / "one.safetensors")
    other = _member(tmp_path, 5, config=TINY.replace(n_queries=TINY.n_queries + 1))
    with pytest.raises(ValueError, match="its config differs"):
        combine_checkpoints([members[0], other], tmp_path / "mixed.safetensors")
    tower = _member(tmp_path, 6, tower_only=True)
    with pytest.raises(ValueError, match=r"holds \['tower'\]"):
        combine_checkpoints([members[0], tower], tmp_path / "tower.safetensors")
    nested = combine_checkpoints(members, tmp_path / "ensemble.safetensors")
    with pytest.raises(ValueError, match="of 3 members"):
        combine_checkpoints([members[0], nested], tmp_path / "nested.safetensors")
    assert read_metadata(members[0]).get("n_members") is None
    elsewhere = _member(tmp_path, 7, data=("PhysionetMI", [1, 15]))
    with pytest.raises(ValueError, match="differs from that of .* in 'data'"):
        combine_checkpoints([members[0], elsewhere], tmp_path / "leak.safetensors")
    unaligned = _member(tmp_path, 8, alignment=None)
    with pytest.raises(ValueError, match="in 'alignment'"):
        combine_checkpoints([members[0], unaligned], tmp_path / "unaligned.safetensors")
    with pytest.raises(ValueError, match="same file as an earlier member"):
        combine_checkpoints([members[0], members[1], members[0]], tmp_path / "twice.safetensors")


def test_cli_writes_an_ensemble_and_names_a_bad_member(tmp_path, members, capsys):
    from leaf_sk.cli import main

    out = tmp_path / "ensemble.safetensors"
    assert main(["ensemble", *map(str, members), "--out", str(out), "--float16"]) == 0
    assert "3 members" in capsys.readouterr().out and read_metadata(out)["n_members"] == 3
    lean = tmp_path / "lean.safetensors"
    assert main(["ensemble", *map(str, members), "--out", str(lean), "--float16",
                 "--no-reconstruction-heads"]) == 0
    assert not read_metadata(lean)["config"]["reconstruction_heads"]
    assert main(["ensemble", str(members[0]), str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "none.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "bad.safetensors").exists()


def test_members_written_before_a_config_key_existed_still_combine(tmp_path, members):
    """A config key added later is absent from older files, which hold its default."""
    import json

    from safetensors.torch import load_file, save_file

    meta = read_metadata(members[1])
    for key in ("tower_memory", "spectral_tokens"):
        assert meta["config"].pop(key) == getattr(TINY, key)
    older = tmp_path / "older.safetensors"
    save_file(load_file(str(members[1])), str(older), metadata={"leaf_sk": json.dumps(meta)})
    path = combine_checkpoints([members[0], older], tmp_path / "ensemble.safetensors")
    assert read_metadata(path)["config"] == TINY.to_dict()


def test_an_ensemble_without_reconstruction_heads_is_smaller_and_predicts_the_same(tmp_path,
                                                                                  members):
    full = combine_checkpoints(members, tmp_path / "full.safetensors")
    lean = combine_checkpoints(members, tmp_path / "lean.safetensors", reconstruction_heads=False)
    assert lean.stat().st_size < full.stat().st_size
    a, b = load_checkpoint(full)[0], load_checkpoint(lean)[0]
    assert not any("outProj" in key for key in b.state_dict())
    assert all(not m.config.reconstruction_heads for m in b.members)
    x = torch.randn(4, 65, 400)
    instruction = torch.nn.functional.normalize(torch.randn(64), dim=0)
    with torch.no_grad():
        torch.testing.assert_close(b(x, instruction), a(x, instruction))
    with pytest.raises(ValueError, match="no reconstruction heads"):
        b.members[0].tower.reconstruct(torch.zeros(1, 2, TINY.d_model), "mask")
    lone = save_checkpoint(tmp_path / "lone.safetensors", b.members[0], text_encoder="hashing")
    with pytest.raises(ValueError, match="without the Tower's reconstruction heads"):
        LeafPretrainer(checkpoint=str(lone), size="tiny")._make_module(0)


def test_int8_storage_quarters_the_weight_matrices_and_loads_as_float32(tmp_path, members):
    from safetensors import safe_open

    from leaf_sk._int8 import SCALE_SUFFIX

    half = combine_checkpoints(members, tmp_path / "half.safetensors", dtype=torch.float16)
    int8 = combine_checkpoints(members, tmp_path / "int8.safetensors", dtype=torch.int8)
    assert int8.stat().st_size < 0.8 * half.stat().st_size
    with safe_open(str(int8), framework="pt") as f:
        stored = {key: f.get_tensor(key) for key in f.keys()}
    quantized = [k for k, v in stored.items() if v.dtype == torch.int8]
    assert "members.0.qformer.film.weight" in quantized
    assert all(k + SCALE_SUFFIX in stored for k in quantized)
    a, b = load_checkpoint(combine_checkpoints(members, tmp_path / "full.safetensors"))[0], \
        load_checkpoint(int8)[0]
    for (name, value), other in zip(a.state_dict().items(), b.state_dict().values()):
        assert other.dtype == value.dtype, name
        if name in quantized:  # half a step of the row's scale, the scale itself rounded
            rows = value.reshape(value.shape[0], -1)
            step = rows.abs().amax(dim=1, keepdim=True) / 127
            assert ((other.reshape(rows.shape) - rows).abs() <= 0.51 * step + 1e-6).all(), name
    x = torch.randn(4, 65, 400)
    instruction = torch.nn.functional.normalize(torch.randn(64), dim=0)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(b(x, instruction), a(x, instruction), dim=-1)
    assert cosine.min() > 0.99


def test_a_damaged_int8_file_is_refused_with_the_key_it_lacks(tmp_path, members):
    import json

    from safetensors.torch import load_file, save_file

    int8 = combine_checkpoints(members, tmp_path / "int8.safetensors", dtype=torch.int8)
    tensors = load_file(str(int8))
    del tensors["members.1.qformer.film.weight.int8_scale"]
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata={"leaf_sk": json.dumps(read_metadata(int8))})
    with pytest.raises(ValueError, match=r"damaged.safetensors.*'members.1.qformer.film.weight' "
                                         "has no scales"):
        load_checkpoint(damaged)
    with pytest.raises(ValueError, match="floating-point dtype or torch.int8"):
        combine_checkpoints(members, tmp_path / "e.safetensors", dtype=torch.int16)


def test_cli_storage_options_exclude_each_other(tmp_path, members, capsys):
    from leaf_sk.cli import main

    out = tmp_path / "ensemble.safetensors"
    assert main(["ensemble", *map(str, members), "--out", str(out), "--int8"]) == 0
    assert load_checkpoint(out)[0].members[0].qformer.film.weight.dtype == torch.float32
    with pytest.raises(SystemExit) as exit_:
        main(["ensemble", *map(str, members), "--out", str(out), "--int8", "--float16"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err
