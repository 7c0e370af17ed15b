"""Tests for leaf_sk.instructions: pools, label texts, levels 0/1/2, training sampling."""

import warnings

import numpy as np
import pytest

from leaf_sk.instructions import (
    INSTRUCTION_LEVEL0,
    default_label_text,
    instruction_families,
    instruction_pool,
    instruction_vector,
    label_prototypes,
    sample_training_instructions,
)
from leaf_sk.text import HashingTextEncoder, get_text_encoder

ENC = "hashing"
LABELS = ["Left", "Right", "Foot", "Tongue"]
MI = "This is a motor imagery decoding task."


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --- packaged data -----------------------------------------------------------------------


def test_pool_sizes_match_release():
    sizes = {family: len(instruction_pool(family)) for family in instruction_families()}
    assert sizes == {
        "default": 2, "motor_imagery": 10, "emotion": 10, "covert_speech": 10,
        "ssvep": 9, "workload": 2, "adhd": 3,
    }
    assert instruction_pool("default") == [INSTRUCTION_LEVEL0, "Default"]
    every = [text for family in instruction_families() for text in instruction_pool(family)]
    assert len(set(every)) == len(every)
    assert all(isinstance(text, str) and text.strip() for text in every)


def test_pool_aliases_and_copies():
    assert instruction_pool("MI") == instruction_pool("Motor-Imagery") == instruction_pool("motor_imagery")
    assert instruction_pool("cs") == instruction_pool("covert_speech")
    instruction_pool("ssvep").append("changed")
    assert len(instruction_pool("ssvep")) == 9


def test_unknown_family_lists_families():
    with pytest.raises(ValueError, match=r"unknown instruction family 'p300'; use one of default, "
                       r"motor_imagery.*adhd, or pass your own list"):
        instruction_pool("p300")
    with pytest.raises(TypeError, match=r"family must be a string.*got int"):
        instruction_pool(3)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("left_hand", "Left"), ("right_hand", "Right"), ("feet", "Foot"), ("tongue", "Tongue"),
        ("rest", "Resting"), ("hands", "Hands"), ("Left_Hand", "Left"), ("8.57", "8.6"),
        ("12.0", "12.0"), ("13", "13"), ("thank_you", "thank-you"), ("NonTarget", "Non-target"),
        ("right_elbow_flexion", "right_elbow_flexion"), (2, "2"), (np.str_("feet"), "Foot"),
    ],
)
def test_default_label_text(label, expected):
    assert default_label_text(label) == expected


# --- prototypes ----------------------------------------------------------------------------


def test_label_prototypes_shape_and_norm():
    protos = label_prototypes(ENC, LABELS)
    assert protos.shape == (4, 64) and protos.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(protos, HashingTextEncoder().encode(LABELS))


def test_label_prototypes_warns_on_identical_texts():
    with pytest.warns(UserWarning, match=r"'Left' \(class 0\) and 'Left' \(class 2\).*give them distinct"):
        label_prototypes(ENC, ["Left", "Right", "Left"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        label_prototypes(ENC, LABELS)


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        ([], ValueError, r"label_texts is empty; pass one text per class"),
        (None, ValueError, r"label_texts is None; pass one text per class"),
        (["Left", ""], ValueError, r"label_texts\[1\] is blank; give every class"),
        (["Left", 1], TypeError, r"texts\[1\] is int.*default_label_text"),
        ("Left", TypeError, r"single str.*wrap it in a list"),
    ],
)
def test_label_prototypes_errors(texts, error, match):
    with pytest.raises(error, match=match):
        label_prototypes(ENC, texts)


# --- levels --------------------------------------------------------------------------------


def test_level0_ignores_instruction():
    enc = get_text_encoder(ENC)
    expected = enc.encode(["None"])[0]
    np.testing.assert_array_equal(instruction_vector(ENC, MI, 0, LABELS), expected)
    np.testing.assert_array_equal(instruction_vector(enc, 123, 0), expected)


def test_level1_is_instruction_embedding():
    enc = get_text_encoder(ENC)
    vector = instruction_vector(ENC, MI, 1, LABELS)
    assert vector.shape == (64,) and vector.dtype == np.float32
    np.testing.assert_array_equal(vector, enc.encode([MI])[0])
    np.testing.assert_array_equal(instruction_vector(ENC, None, 1), enc.encode(["None"])[0])


def test_level2_blends_with_mean_of_all_labels():
    enc = get_text_encoder(ENC)
    v_ins = enc.encode([MI])[0].astype(np.float64)
    centroid = _unit(enc.encode(LABELS).astype(np.float64).mean(axis=0))
    expected = _unit((v_ins + centroid) / 2)
    vector = instruction_vector(ENC, MI, 2, LABELS)
    assert vector.dtype == np.float32
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-6)
    # Every candidate enters symmetrically: the order of labels does not matter.
    np.testing.assert_allclose(instruction_vector(ENC, MI, 2, LABELS[::-1]), vector, atol=1e-6)
    assert not np.allclose(vector, instruction_vector(ENC, MI, 1))


@pytest.mark.parametrize("level", [3, -1, "1", True, None])
def test_bad_level(level):
    with pytest.raises(ValueError, match=rf"level must be 0 .*1 .*or 2 .*; got {level!r}"):
        instruction_vector(ENC, MI, level, LABELS)


def test_instruction_errors():
    with pytest.raises(TypeError, match=r"instruction must be a string, got list; pass one sentence.*level=0"):
        instruction_vector(ENC, ["a"], 1)
    with pytest.raises(ValueError, match=r"instruction is blank; pass a sentence, or None"):
        instruction_vector(ENC, "  ", 2, LABELS)
    with pytest.raises(ValueError, match=r"instruction_level=2 blends.*label_texts is None.*or use instruction_level=1"):
        instruction_vector(ENC, MI, 2)


# --- training sampling ---------------------------------------------------------------------


def _pool_vectors(family):
    return get_text_encoder(ENC).encode(instruction_pool(family))


def test_sampling_shape_and_reproducibility():
    a = sample_training_instructions(ENC, "motor_imagery", LABELS, 50, np.random.default_rng(0))
    b = sample_training_instructions(ENC, "motor_imagery", LABELS, 50, 0)
    assert a.shape == (50, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    c = sample_training_instructions(ENC, "mi", LABELS, 50, np.random.RandomState(0))
    assert c.shape == (50, 64)
    assert sample_training_instructions(ENC, "mi", LABELS, 0, 0).shape == (0, 64)


def test_sampling_extremes_match_levels():
    family = _pool_vectors("motor_imagery")
    level1 = sample_training_instructions(ENC, "motor_imagery", None, 40, 1, p_default=0, p_level2=0)
    assert all((family == row).all(axis=1).any() for row in level1)
    defaults = sample_training_instructions(ENC, "ssvep", None, 40, 1, p_default=1, p_level2=0)
    assert all((_pool_vectors("default") == row).all(axis=1).any() for row in defaults)
    level2 = sample_training_instructions(ENC, "motor_imagery", LABELS, 40, 1, p_default=0, p_level2=1)
    blended = {tuple(instruction_vector(ENC, text, 2, LABELS)) for text in instruction_pool("mi")}
    for row in level2:
        assert min(np.abs(np.array(b) - row).max() for b in blended) < 1e-6


def test_sampling_probabilities():
    n = 2000
    vectors = sample_training_instructions(ENC, "motor_imagery", LABELS, n, 2)
    level1_rows = np.concatenate([_pool_vectors("motor_imagery"), _pool_vectors("default")])
    unblended = (np.abs(vectors[:, None, :] - level1_rows[None]).max(axis=2) < 1e-6).any(axis=1)
    assert 0.07 < unblended.mean() < 0.13  # p_level2 = 0.9


def test_sampling_custom_pool():
    pool = ["decode the movement", "which hand"]
    vectors = sample_training_instructions(ENC, pool, None, 20, 3, p_default=0, p_level2=0)
    expected = get_text_encoder(ENC).encode(pool)
    assert all((expected == row).all(axis=1).any() for row in vectors)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": -1}, ValueError, r"n must be a non-negative integer, got -1"),
        ({"p_default": 1.5}, ValueError, r"p_default must be a probability in \[0, 1\], got 1.5"),
        ({"p_level2": -0.1}, ValueError, r"p_level2 must be a probability in \[0, 1\], got -0.1"),
        ({"label_texts": None}, ValueError, r"p_level2 > 0 needs the candidate label_texts.*p_level2=0"),
        ({"rng": "seed"}, TypeError, r"rng must be None, an int seed.*got str; e\.g\. pass sklearn"),
        ({"family_or_pool": []}, ValueError, r"instruction pool is empty; pass a family name"),
        ({"family_or_pool": "p300"}, ValueError, r"unknown instruction family 'p300'"),
    ],
)
def test_sampling_errors(kwargs, error, match):
    args = {"family_or_pool": "mi", "label_texts": LABELS, "n": 4, "rng": 0, **kwargs}
    with pytest.raises(error, match=match):
        sample_training_instructions(ENC, **args)
