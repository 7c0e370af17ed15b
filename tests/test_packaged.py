"""The checkpoint shipped inside the package."""

import warnings

import numpy as np
import pytest

from conftest import BCI_IV_2A, SFREQ

from leaf_sk import LeafEncoder, LeafInstructionClassifier
from leaf_sk.checkpoint import load_checkpoint, packaged_checkpoints, read_metadata, resolve_checkpoint
from leaf_sk.montage import TEMPLATE_CH_NAMES


def test_leaf_small_is_packaged_and_documented():
    assert "leaf-small" in packaged_checkpoints()
    path = resolve_checkpoint("leaf-small")
    assert path.stat().st_size < 25 * 2**20
    meta = read_metadata("leaf-small")
    assert meta["parts"] == ["tower"]
    assert meta["ch_names"] == list(TEMPLATE_CH_NAMES) and meta["sfreq"] == 200.0
    provenance = meta["provenance"]
    assert "Kalunga2016" in str(provenance["data"]) and "held_out_for_evaluation" in provenance
    history = meta["history"]
    assert len(history) == provenance["epochs"]
    # What the closing note quotes: both objectives well below the loss of predicting zeros.
    last = history[-1]
    assert last["valid_L_S"] < 0.8 * last["valid_zero_S"]
    assert last["valid_L_T"] < 0.9 * last["valid_zero_T"]


def test_leaf_small_bci_is_the_default_and_embeds(make_trials):
    X, y = make_trials(n_trials=6)
    encoder = LeafEncoder(ch_names=BCI_IV_2A, sfreq=SFREQ, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = encoder.fit_transform(X)
    model, _ = load_checkpoint("leaf-small-bci")
    assert encoder.checkpoint == "leaf-small-bci" == LeafInstructionClassifier().checkpoint
    assert (encoder.alignment_, encoder.pooling_) == ("euclidean", "logvar")
    assert len(model.members) == 12  # the band power of every member's filters
    assert features.shape == (6, 12 * model.config.n_filters)
    assert np.isfinite(features).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = LeafEncoder("leaf-small", pooling="mean", ch_names=BCI_IV_2A, sfreq=SFREQ,
                           device="cpu").fit_transform(X)
    assert mean.shape == (6, load_checkpoint("leaf-small")[0].config.d_model)


def test_leaf_small_bci_is_documented_and_saw_no_test_subject():
    meta = read_metadata("leaf-small-bci")
    assert meta["parts"] == ["qformer", "spectral", "tower"] and meta["n_members"] == 12
    config = meta["config"]
    assert config["n_layers"] == 2 and config["reconstruction_heads"] is False
    assert config["power_memory"] is True and config["spectral_memory"] is True
    assert config["spectral_sites"] == ["O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8"]
    assert meta["text_encoder"] == {"name": "all-MiniLM-L6-v2", "dim": 384}
    provenance = meta["provenance"]
    seen = {d["name"]: set(d["subjects"]) for d in provenance["data"]["datasets"]}
    assert seen == {"PhysionetMI": {1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14},
                    "Kalunga2016": set(range(1, 9))}
    assert provenance["params"]["alignment"] == "euclidean"
    members = provenance["members"]
    # Seeds 0-5 of the recipe, then seeds 0-5 with Kalunga2016's crops shifted by any sample.
    params = [m["provenance"]["params"] for m in members]
    assert [p["random_state"] for p in params] == [0, 1, 2, 3, 4, 5] * 2
    assert [p["crop_step"] for p in params] == [100] * 6 + [{"Kalunga2016": 1}] * 6
    assert resolve_checkpoint("leaf-small-bci").stat().st_size < 25 * 10**6
    for member in members:
        assert member["provenance"]["data"] == provenance["data"]
        assert len(member["history"]) == provenance["params"]["max_epochs"]
        last = member["history"][-1]
        assert last["PhysionetMI_train_acc"] > 0.85 and last["Kalunga2016_train_acc"] > 0.7


def test_untrained_qformer_warns(make_trials):
    X, y = make_trials(n_trials=6)
    with pytest.warns(UserWarning, match="Q-Former is untrained"):
        LeafEncoder("leaf-small", ch_names=BCI_IV_2A, sfreq=SFREQ, instruction="motor imagery",
                    text_encoder="hashing", device="cpu").fit(X)
    with pytest.warns(UserWarning, match="Q-Former is untrained"):
        LeafInstructionClassifier("leaf-small", ch_names=BCI_IV_2A, sfreq=SFREQ,
                                  text_encoder="hashing", max_epochs=0, device="cpu").fit(X, y)


def test_every_packaged_checkpoint_matches_its_recorded_sha256():
    names = packaged_checkpoints()
    assert "leaf-small" in names
    for name in names:
        assert resolve_checkpoint(name).is_file()  # hashes it against the record


def test_a_damaged_packaged_checkpoint_is_refused(tmp_path, monkeypatch):
    import leaf_sk.checkpoint as checkpoint

    damaged = tmp_path / "leaf-small.safetensors"
    data = bytearray(checkpoint.resolve_checkpoint("leaf-small").read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(checkpoint, "_VERIFIED", {})
    with pytest.raises(ValueError, match="is damaged: its SHA-256 is .* Reinstall leaf-sk"):
        checkpoint._check_packaged_digest("leaf-small", damaged)
