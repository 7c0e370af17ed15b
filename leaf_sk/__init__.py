"""leaf-sk: LEAF, the Language-EEG Aligned Foundation model, as scikit-learn estimators."""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "LeafEncoder": "leaf_sk.encoder",
    "LeafInstructionClassifier": "leaf_sk.classifier",
    "LeafPretrainer": "leaf_sk.pretrainer",
    "LeafConfig": "leaf_sk.nn",
    "load_checkpoint": "leaf_sk.checkpoint",
    "save_checkpoint": "leaf_sk.checkpoint",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    # Lazy so that `import leaf_sk` stays cheap and `leaf_sk.nn` never pulls sklearn or MNE.
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'leaf_sk' has no attribute {name!r}")


def __dir__():
    return __all__
