"""Checkpoints: leaf-sk's own format, and the authors' release (PyTorch or Lightning files).

Our format is one ``.safetensors`` file: the weights under the release's key names
(``tower.*``, ``qformer.*``) and, in the safetensors header, a JSON document with the
network config, the electrode template, the sampling rate, the text encoder and the
training provenance. It is written atomically and read without unpickling anything.
"""

from __future__ import annotations

import json
import re
import warnings
from importlib import resources
from pathlib import Path

import torch

from ._atomic import atomic_path
from .nn import LeafConfig, LeafModel

FORMAT_NAME = "leaf-sk"
FORMAT_VERSION = 1
_METADATA_KEY = "leaf_sk"
_PACKAGED_DIR = "data"


def packaged_checkpoints():
    """Names of the checkpoints shipped inside the package, e.g. ``["leaf-small"]``."""
    folder = resources.files("leaf_sk") / _PACKAGED_DIR
    return sorted(p.name[: -len(".safetensors")] for p in folder.iterdir()
                  if p.name.endswith(".safetensors"))


def resolve_checkpoint(checkpoint):
    """Path of a checkpoint given as a packaged name or a path.

    Parameters
    ----------
    checkpoint : str or Path
        A name from :func:`packaged_checkpoints` or a file path.

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        Naming the path tried and the packaged names.
    """
    if isinstance(checkpoint, (str, Path)):
        name = str(checkpoint)
        if name in packaged_checkpoints():
            return Path(str(resources.files("leaf_sk") / _PACKAGED_DIR / f"{name}.safetensors"))
        path = Path(checkpoint).expanduser()
        if path.is_file():
            return path
        raise FileNotFoundError(
            f"Checkpoint {name!r} is neither a file nor a packaged checkpoint; packaged names are "
            f"{packaged_checkpoints()}. Pass one of them or the path of a .safetensors file "
            "written by leaf-sk, or of a LEAF release .ckpt file.")
    raise TypeError(f"checkpoint must be a packaged name or a path, got {type(checkpoint).__name__}.")


def save_checkpoint(path, model, *, text_encoder=None, sfreq=200.0, ch_names=None,
                    provenance=None, history=None, dtype=None):
    """Write a model to a ``.safetensors`` file with its JSON config, atomically.

    Parameters
    ----------
    path : str or Path
        Target file; the folder is created if needed.
    model : LeafModel or STRPretrainer or Tower
        Any module with a ``config`` and the release's attribute names.
    text_encoder : str, optional
        Name of the sentence encoder the Q-Former was trained with.
    sfreq : float
        Sampling rate the network expects, Hz.
    ch_names : sequence of str, optional
        The electrode template (rows of the input); defaults to the 65-channel template.
    provenance : dict, optional
        JSON-serialisable facts about training (data, subjects, epochs, package version).
    history : list of dict, optional
        Per-epoch losses.
    dtype : torch.dtype, optional
        Storage dtype for floating-point tensors (e.g. ``torch.float16`` to halve the file).

    Returns
    -------
    Path
    """
    from . import __version__
    from .montage import TEMPLATE_CH_NAMES

    state = _prefixed_state_dict(model)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    parts = sorted({key.split(".", 1)[0] for key in state})
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "leaf_sk_version": __version__,
        "config": model.config.to_dict(),
        "parts": parts,
        "ch_names": list(ch_names if ch_names is not None else TEMPLATE_CH_NAMES),
        "sfreq": float(sfreq),
        "text_encoder": {"name": text_encoder,
                         "dim": model.config.d_text if "qformer" in parts else None},
        "provenance": provenance or {},
        "history": history or [],
    }
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(meta)})
    return Path(path)


def _prefixed_state_dict(model):
    if hasattr(model, "tower") and hasattr(model, "qformer"):
        return dict(model.state_dict())
    if hasattr(model, "tower"):
        return {f"tower.{k}": v for k, v in model.tower.state_dict().items()}
    return {f"tower.{k}": v for k, v in model.state_dict().items()}


def read_metadata(path):
    """The JSON document of a leaf-sk checkpoint, without loading the weights.

    Parameters
    ----------
    path : str or Path
        A packaged name or a leaf-sk ``.safetensors`` file.

    Returns
    -------
    dict
        ``config``, ``parts``, ``ch_names``, ``sfreq``, ``text_encoder``, ``provenance``,
        ``history``, format name and versions.
    """
    from safetensors import safe_open

    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ValueError(
            f"{path} is not a readable safetensors file ({exc}); pass a leaf-sk checkpoint "
            "or a LEAF release .ckpt file.") from exc
    if _METADATA_KEY not in meta:
        raise ValueError(
            f"{path} is a safetensors file but not a leaf-sk checkpoint (no {_METADATA_KEY!r} "
            "entry in its header); write checkpoints with leaf_sk.save_checkpoint.")
    return json.loads(meta[_METADATA_KEY])


def load_checkpoint(checkpoint, *, config=None, d_text=None):
    """Load a leaf-sk checkpoint or a LEAF release file into a :class:`LeafModel`.

    Parameters
    ----------
    checkpoint : str or Path
        A packaged name, a leaf-sk ``.safetensors`` file, or a release file (a bare state dict
        or a Lightning file with ``state_dict`` and ``model.`` prefixes; full model or Tower only).
    config : LeafConfig, optional
        For release files: the network config; by default inferred from the tensor shapes.
    d_text : int, optional
        Text dimension of the Q-Former when the file holds the Tower only (default: config's).

    Returns
    -------
    model : LeafModel
        In eval mode, float32. Parts absent from the file (the Q-Former of a Tower-only
        file) keep their random initialisation.
    info : dict
        The checkpoint's JSON document (for release files: ``format="leaf-release"``, ``parts``).

    Raises
    ------
    ValueError
        For a file that is neither ours nor the release's, or whose keys or shapes disagree
        with the network; the message lists the missing, unexpected and mismatched keys.
    """
    path = resolve_checkpoint(checkpoint)
    if _is_safetensors(path):
        from safetensors.torch import load_file

        info = read_metadata(path)
        config = LeafConfig.from_dict(info["config"])
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path}: reading the weights failed ({exc}); the file is damaged "
                             "or truncated, write it again.") from exc
    else:
        state = _read_release(path)
        parts = sorted({k.split(".", 1)[0] for k in state})
        if config is None:
            try:
                config = infer_config(state, d_text=d_text)
            except ValueError as exc:
                shown = ", ".join(sorted(state)[:5]) + (", ..." if len(state) > 5 else "")
                raise ValueError(
                    f"{path} holds a state dict, but not of the LEAF network (keys: {shown}): "
                    f"{exc} Pass a leaf-sk checkpoint or a LEAF release file (tower.*/qformer.* "
                    "keys, or the Tower's keys alone).") from exc
        info = {"format": "leaf-release", "parts": parts, "config": config.to_dict(),
                "sfreq": 200.0, "text_encoder": {"name": None, "dim": config.d_text}}
    if d_text is not None and "qformer" not in info["parts"] and d_text != config.d_text:
        config = config.replace(d_text=d_text)
        info["config"] = config.to_dict()
    model = LeafModel(config)
    load_state_dict_checked(model, state, source=path)
    return model.float().eval(), info


def _is_safetensors(path):
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise ValueError(f"{path} is too small to be a checkpoint ({len(head)} bytes).")
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len < 100_000_000


def _read_release(path):
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" for a plain pickle
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        message = str(exc)
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        refused = re.search(r"WeightsUnpickler error:\s*(.+?)(\n\n|$)", message, re.S)
        safe_loader = ("leaf-sk unpickles nothing but tensors and plain containers "
                       "(torch.load weights_only=True)")
        if blocked:
            reason = f"it pickles a Python object ({blocked.group(1)}), and {safe_loader}"
        elif "Weights only load failed" in message:
            detail = refused.group(1).strip() if refused else "unsupported content"
            reason = f"it is a pickle that the safe loader refuses ({detail}); {safe_loader}"
        else:
            first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
            reason = f"it is not a PyTorch file either (torch.load: {first})"
        raise ValueError(
            f"{path} is not a leaf-sk checkpoint (.safetensors with a leaf_sk header) nor a LEAF "
            f"release file (a PyTorch state dict): {reason}.") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = {k[len("model."):] if k.startswith("model.") else k: v
               for k, v in obj["state_dict"].items()}
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors; pass a leaf-sk "
            "checkpoint or a LEAF release .ckpt file.")
    if not any(k.startswith(("tower.", "qformer.")) for k in obj):
        obj = {f"tower.{k}": v for k, v in obj.items()}
    return obj


def infer_config(state, d_text=None):
    """Network config from the tensor shapes of a release state dict.

    Parameters
    ----------
    state : dict of str to Tensor
        ``tower.``-prefixed (and optionally ``qformer.``-prefixed) keys.
    d_text : int, optional
        Text dimension when the state holds no Q-Former.

    Returns
    -------
    LeafConfig
        Head counts cannot be read from shapes; they are taken as ``d_model // 32`` (the
        release's 32 dimensions per head). Pass ``config=`` to :func:`load_checkpoint` otherwise.
    """
    def shape(key):
        if key not in state:
            raise ValueError(f"Cannot infer the network size: key {key!r} is missing from the file.")
        return tuple(state[key].shape)

    n_filters, _, _, kernel = shape("tower.tokenizer.enc_conv.0.weight")
    n_channels = shape("tower.tokenizer.enc_conv.1.weight")[2]
    _, max_windows, d_model = shape("tower.pos_embedding")
    layer_ids = {int(m.group(1)) for k in state
                 if (m := re.match(r"tower\.mask_transformer\.layers\.(\d+)\.", k))}
    d_ff = shape("tower.mask_transformer.layers.0.linear1.weight")[0]
    recon_out, _ = shape("tower.mask_outProj.0.weight")
    window = shape("tower.mask_outProj.3.weight")[0]
    values = dict(n_channels=n_channels, window_samples=window, max_windows=max_windows,
                  n_filters=n_filters, temporal_kernel=kernel, d_model=d_model,
                  n_layers=len(layer_ids), n_heads=max(1, d_model // 32), d_ff=d_ff,
                  recon_hidden=recon_out // n_channels)
    if "qformer.film.weight" in state:
        q_ids = {int(m.group(1)) for k in state if (m := re.match(r"qformer\.layers\.(\d+)\.", k))}
        values.update(d_text=shape("qformer.film.weight")[1], n_queries=shape("qformer.base_queries")[0],
                      iqf_layers=len(q_ids), iqf_heads=max(1, d_model // 32),
                      iqf_d_ff=shape("qformer.layers.0.ff.0.weight")[0])
    elif d_text is not None:
        values["d_text"] = d_text
    return LeafConfig(**values)


def load_state_dict_checked(model, state, source="state dict"):
    """Load ``state`` into ``model`` strictly for the parts the file holds.

    A file holding only the Tower leaves the Q-Former untouched. Missing, unexpected and
    shape-mismatched keys are collected and reported together.
    """
    own = model.state_dict()
    parts = {k.split(".", 1)[0] for k in state}
    expected = {k for k in own if k.split(".", 1)[0] in parts}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
                        for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        def listing(title, keys):
            if not keys:
                return ""
            shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
            return f"\n  {title} ({len(keys)}): {shown}"
        raise ValueError(
            f"{source} does not fit the LEAF network of config {model.config}:"
            + listing("missing keys", missing) + listing("unexpected keys", unexpected)
            + listing("shape mismatches", mismatched)
            + "\nPass the matching config (or size), or a checkpoint of this network.")
    converted = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(converted, strict=False)
    return model
