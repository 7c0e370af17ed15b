"""Instruction texts, instruction levels and label texts for LEAF.

LEAF conditions its Q-Former on one instruction vector per trial (spec section 6):

- level 0: the generic placeholder ``"None"``;
- level 1: a task-family sentence, e.g. ``instruction_pool("motor_imagery")[0]``;
- level 2: that sentence blended with the mean of all candidate label embeddings,
  ``normalize((v_ins + normalize(mean(v_label))) / 2)``. The mean covers every
  candidate, so the vector carries no information about the true label.

Pools and default label texts are packaged JSON files in ``leaf_sk/data``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from functools import lru_cache
from importlib.resources import files

import numpy as np

from .text import TextEncoder, _check_texts, _l2_normalize, get_text_encoder

INSTRUCTION_LEVEL0 = "None"
LEVELS = (0, 1, 2)
_DUPLICATE_COSINE = 1.0 - 1e-6


@lru_cache(maxsize=None)
def _load_json(filename: str) -> dict:
    return json.loads(files("leaf_sk").joinpath("data", filename).read_text(encoding="utf-8"))


def _family_key(family: str) -> str:
    key = family.strip().lower().replace("-", "_").replace(" ", "_")
    return _load_json("instructions.json")["aliases"].get(key, key)


def instruction_families() -> list[str]:
    """Names of the packaged instruction families.

    Returns
    -------
    families : list of str
        E.g. ``["default", "motor_imagery", "emotion", ...]``.
    """
    return list(_load_json("instructions.json")["families"])


def instruction_pool(family: str) -> list[str]:
    """Instruction phrasings of one task family.

    Parameters
    ----------
    family : str
        One of :func:`instruction_families` (case-insensitive; short aliases such as
        ``"mi"`` or ``"cs"`` work too).

    Returns
    -------
    pool : list of str
        A new list; the first entry is a good fixed choice for inference.
    """
    if not isinstance(family, str):
        raise TypeError(f"family must be a string such as 'motor_imagery', got {type(family).__name__}")
    pools = _load_json("instructions.json")["families"]
    key = _family_key(family)
    if key not in pools:
        raise ValueError(
            f"unknown instruction family {family!r}; use one of {', '.join(pools)}, "
            "or pass your own list of sentences"
        )
    return list(pools[key])


def default_label_text(label) -> str:
    """Default text for a class label (e.g. a MOABB event name).

    Looks ``str(label)`` up in the packaged map (exact, then case-insensitive):
    ``left_hand`` → ``"Left"``, ``right_hand`` → ``"Right"``, ``feet`` → ``"Foot"``,
    ``tongue`` → ``"Tongue"``, ``rest`` → ``"Resting"``, ``hands`` → ``"Hands"``, the
    OpenBMI SSVEP frequencies ``"8.57"`` → ``"8.6"`` etc. (the LEAF release's strings;
    other frequencies stay numbers such as ``"13"``). Anything else is ``str(label)``.

    Parameters
    ----------
    label : object
        A class label.

    Returns
    -------
    text : str
    """
    text = str(label)
    mapping = _load_json("label_texts.json")["labels"]
    return mapping.get(text, mapping.get(text.strip().lower(), text))


def _check_label_texts(label_texts: Sequence[str]) -> list[str]:
    if label_texts is None:
        raise ValueError("label_texts is None; pass one text per class, e.g. ['Left', 'Right']")
    texts = _check_texts(label_texts)
    if not texts:
        raise ValueError("label_texts is empty; pass one text per class, e.g. ['Left', 'Right']")
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"label_texts[{i}] is blank; give every class a non-empty text")
    return texts


def _warn_duplicates(texts: list[str], prototypes: np.ndarray) -> None:
    cosine = prototypes @ prototypes.T
    for i, j in zip(*np.triu_indices(len(texts), k=1)):
        if cosine[i, j] >= _DUPLICATE_COSINE:
            warnings.warn(
                f"label texts {texts[i]!r} (class {i}) and {texts[j]!r} (class {j}) have the same "
                "embedding, so these classes cannot be told apart; give them distinct label_texts",
                UserWarning,
                stacklevel=3,
            )


def label_prototypes(encoder: str | TextEncoder, label_texts: Sequence[str]) -> np.ndarray:
    """Embed the candidate label texts (the classifier's prototypes).

    Warns when two labels get the same embedding (e.g. identical texts).

    Parameters
    ----------
    encoder : str or TextEncoder
        Encoder or its name (see :func:`leaf_sk.text.get_text_encoder`).
    label_texts : sequence of str, length k
        One non-empty text per class.

    Returns
    -------
    prototypes : ndarray of shape (k, dim), float32
        Unit rows, in the order of ``label_texts``.
    """
    texts = _check_label_texts(label_texts)
    prototypes = get_text_encoder(encoder).encode(texts)
    _warn_duplicates(texts, prototypes)
    return prototypes


def _label_centroid(encoder: TextEncoder, label_texts: Sequence[str]) -> np.ndarray:
    """Normalised mean of all candidate label embeddings, shape (dim,).

    Does not warn about duplicate texts: :func:`label_prototypes` does, once, where the
    prototypes are made.
    """
    return _l2_normalize(encoder.encode(_check_label_texts(label_texts)).mean(axis=0))


def _blend_level2(v_ins: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """``normalize((v_ins + centroid) / 2)`` row-wise; shapes (..., dim)."""
    return _l2_normalize((v_ins + centroid) / 2.0)


def _check_level(level) -> int:
    if isinstance(level, bool) or level not in LEVELS:
        raise ValueError(
            f"instruction_level must be 0 (generic 'None'), 1 (task instruction) or "
            f"2 (instruction + candidate labels); got {level!r}"
        )
    return int(level)


def _check_instruction(instruction) -> str:
    if instruction is None:
        return INSTRUCTION_LEVEL0
    if not isinstance(instruction, str):
        raise TypeError(
            f"instruction must be a string, got {type(instruction).__name__}; pass one sentence, "
            "e.g. instruction_pool('motor_imagery')[0], or use level=0 to ignore it"
        )
    if not instruction.strip():
        raise ValueError("instruction is blank; pass a sentence, or None for the generic 'None'")
    return instruction


def instruction_vector(
    encoder: str | TextEncoder,
    instruction: str | None,
    level: int,
    label_texts: Sequence[str] | None = None,
) -> np.ndarray:
    """The instruction vector fed to LEAF's FiLM layer.

    Parameters
    ----------
    encoder : str or TextEncoder
        Encoder or its name (see :func:`leaf_sk.text.get_text_encoder`).
    instruction : str or None
        Task sentence; ignored at level 0, ``None`` means ``"None"``.
    level : {0, 1, 2}
        0: embedding of ``"None"``; 1: embedding of ``instruction``; 2: that embedding
        blended with the normalised mean of all candidate label embeddings.
    label_texts : sequence of str, length k, optional
        Candidate label texts; required at level 2, ignored otherwise.

    Returns
    -------
    vector : ndarray of shape (dim,), float32
        Unit norm.
    """
    level = _check_level(level)
    encoder = get_text_encoder(encoder)
    text = INSTRUCTION_LEVEL0 if level == 0 else _check_instruction(instruction)
    vector = encoder.encode([text])[0]
    if level < 2:
        return vector
    if label_texts is None:
        raise ValueError("instruction_level=2 blends the instruction with the candidate label texts, "
                         "but label_texts is None; pass label_texts (one text per class), or use "
                         "instruction_level=1")
    return _blend_level2(vector, _label_centroid(encoder, label_texts))


def _resolve_pool(family_or_pool: str | Sequence[str]) -> list[str]:
    if isinstance(family_or_pool, str):
        return instruction_pool(family_or_pool)
    pool = _check_texts(family_or_pool)
    if not pool:
        raise ValueError("the instruction pool is empty; pass a family name or at least one sentence")
    return [_check_instruction(text) for text in pool]


def _check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_rng(rng):
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    raise TypeError(
        f"rng must be None, an int seed, a numpy Generator or RandomState, got {type(rng).__name__}; "
        "e.g. pass sklearn.utils.check_random_state(random_state)"
    )


def sample_training_instructions(
    encoder: str | TextEncoder,
    family_or_pool: str | Sequence[str],
    label_texts: Sequence[str] | None,
    n: int,
    rng=None,
    p_default: float = 0.1,
    p_level2: float = 0.9,
) -> np.ndarray:
    """Random instruction vectors as in the release's instruction tuning.

    Per sample: with probability ``p_default`` a phrasing from the ``"default"`` pool,
    otherwise a random phrasing from the family pool; then, independently, with
    probability ``p_level2`` the level-2 blend with all candidate labels (also for
    default phrasings).

    Parameters
    ----------
    encoder : str or TextEncoder
        Encoder or its name.
    family_or_pool : str or sequence of str
        A family name (see :func:`instruction_families`) or a custom list of sentences.
    label_texts : sequence of str, length k, or None
        Candidate label texts; may be None only when ``p_level2 == 0``.
    n : int
        Number of vectors.
    rng : None, int, numpy.random.Generator or numpy.random.RandomState
        Source of randomness; a Generator or RandomState is advanced in place.
    p_default : float, default=0.1
        Probability of a default-pool phrasing.
    p_level2 : float, default=0.9
        Probability of the level-2 blend.

    Returns
    -------
    vectors : ndarray of shape (n, dim), float32
        Unit rows.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    p_default = _check_probability("p_default", p_default)
    p_level2 = _check_probability("p_level2", p_level2)
    rng = _check_rng(rng)
    if label_texts is None and p_level2 > 0:
        raise ValueError("p_level2 > 0 needs the candidate label_texts; pass them, or set p_level2=0")
    encoder = get_text_encoder(encoder)
    default_vectors = encoder.encode(instruction_pool("default"))
    family_vectors = encoder.encode(_resolve_pool(family_or_pool))
    centroid = None if label_texts is None else _label_centroid(encoder, label_texts)

    use_default = rng.uniform(size=n) < p_default
    default_pick = default_vectors[rng.choice(len(default_vectors), size=n)]
    family_pick = family_vectors[rng.choice(len(family_vectors), size=n)]
    vectors = np.where(use_default[:, None], default_pick, family_pick).astype(np.float32)

    blend = rng.uniform(size=n) < p_level2
    if blend.any():
        vectors[blend] = _blend_level2(vectors[blend], centroid)
    return vectors
