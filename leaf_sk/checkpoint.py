"""Checkpoints: leaf-sk's own format, and the authors' release (PyTorch or Lightning files).

Our format is one ``.safetensors`` file: the weights under the release's key names
(``tower.*``, ``qformer.*``) and, in the safetensors header, a JSON document with the
network config, the electrode template, the sampling rate, the text encoder and the
training provenance. It is written atomically and read without unpickling anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import torch

from ._atomic import atomic_path
from ._int8 import dequantize_state, quantize_state
from .nn import SIZES, LeafConfig, LeafEnsemble, LeafModel

FORMAT_NAME = "leaf-sk"
FORMAT_VERSION = 1
_METADATA_KEY = "leaf_sk"
_PACKAGED_DIR = "data"
# What ``leaf-sk pretrain --out DIR`` writes (the names of leaf_sk.pretrainer and leaf_sk.cli,
# repeated here because the pretrainer imports this module).
MODEL_FILE = "tower.safetensors"
RESUME_FILE = "resume.pt"
_EPOCH_NUMBER = re.compile(r"epoch[-_]?(\d+)\.safetensors$")


def packaged_checkpoints():
    """Names of the checkpoints shipped inside the package, e.g. ``["leaf-small"]``."""
    folder = resources.files("leaf_sk") / _PACKAGED_DIR
    return sorted(p.name[: -len(".safetensors")] for p in folder.iterdir()
                  if p.name.endswith(".safetensors"))


_DIGESTS_FILE = "checkpoints.sha256.json"
_VERIFIED = {}


def _check_packaged_digest(name, path):
    """Refuse a packaged checkpoint whose SHA-256 differs from the one recorded at release.

    Each file is hashed once per process (again if its size or time stamp changes).
    """
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(name) == key:
        return
    recorded = json.loads((resources.files("leaf_sk") / _PACKAGED_DIR / _DIGESTS_FILE).read_text())
    expected = recorded.get(f"{name}.safetensors")
    if expected is None:
        raise ValueError(
            f"Packaged checkpoint {name!r} has no SHA-256 in leaf_sk/{_PACKAGED_DIR}/{_DIGESTS_FILE}; "
            "every file shipped in the package needs one (add it when adding the file).")
    digest = _sha256(path)
    if digest != expected:
        raise ValueError(
            f"Packaged checkpoint {name!r} ({path}) is damaged: its SHA-256 is {digest}, but "
            f"{expected} was recorded when it was released. Reinstall leaf-sk "
            "(pip install --force-reinstall leaf-sk, or from your clone: pip install -e .).")
    _VERIFIED[name] = key


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resolve_checkpoint(checkpoint):
    """Path of a checkpoint given as a packaged name, a file or a ``leaf-sk pretrain`` folder.

    Parameters
    ----------
    checkpoint : str or os.PathLike
        A name from :func:`packaged_checkpoints`, a file path, or the ``--out`` folder of
        ``leaf-sk pretrain`` (its ``tower.safetensors`` is taken).

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        Naming the path tried and the packaged names; for a folder without
        ``tower.safetensors``, what the folder holds and which file to pass instead.
    TypeError
        When ``checkpoint`` is neither a string nor a path.
    """
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be a packaged name or a path, got {type(checkpoint).__name__}.")
    name = os.fspath(checkpoint)
    if not isinstance(name, str):
        raise TypeError(f"checkpoint must be a packaged name or a path, got bytes {name!r}.")
    if name in packaged_checkpoints():
        path = Path(str(resources.files("leaf_sk") / _PACKAGED_DIR / f"{name}.safetensors"))
        _check_packaged_digest(name, path)
        return path
    path = Path(name).expanduser()
    if path.is_dir():
        return _checkpoint_in_folder(path)
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"Checkpoint {name!r} is neither a file, a folder nor a packaged checkpoint; packaged "
        f"names are {packaged_checkpoints()}. Pass one of them, the path of a .safetensors file "
        "written by leaf-sk (or the --out folder of `leaf-sk pretrain`), or of a LEAF release "
        ".ckpt file.")


def _listing(names, limit=6):
    """``a, b, c, ... (12 in all)``."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _epoch_number(name):
    match = _EPOCH_NUMBER.search(name)
    return int(match.group(1)) if match else None


def _checkpoint_in_folder(folder):
    """``folder/tower.safetensors``, or a FileNotFoundError saying what the folder holds."""
    model = folder / MODEL_FILE
    if model.is_file():
        return model
    names = sorted(p.name for p in folder.iterdir())
    visible = [n for n in names if not n.startswith(".")]
    weights = [n for n in visible if n.endswith(".safetensors")]
    epochs = sorted((n for n in weights if _epoch_number(n) is not None), key=_epoch_number)
    finish = (f"or finish the run: `leaf-sk pretrain` with the same arguments and --out {folder} "
              f"resumes it and writes {MODEL_FILE}")
    if epochs:
        also = f" and {RESUME_FILE}" if RESUME_FILE in visible else ""
        raise FileNotFoundError(
            f"The folder {folder} holds no {MODEL_FILE} (which `leaf-sk pretrain` writes when "
            f"a run ends) but per-epoch checkpoints ({_listing(epochs)}){also}: the run did not "
            f"finish. Pass the latest, {folder / epochs[-1]}, {finish}.")
    if RESUME_FILE in visible:
        raise FileNotFoundError(
            f"The folder {folder} holds no {MODEL_FILE} (which `leaf-sk pretrain` writes when "
            f"a run ends) but {RESUME_FILE}, the resume file of an unfinished run. Pass "
            f"{folder / RESUME_FILE} to load the weights of its last finished epoch, {finish}.")
    if weights:
        raise FileNotFoundError(
            f"The folder {folder} holds no {MODEL_FILE} but other .safetensors files "
            f"({_listing(weights)}); pass one of them as the checkpoint.")
    if not names:
        raise FileNotFoundError(
            f"The folder {folder} is empty: no {MODEL_FILE} to load. Pass the --out folder of a "
            "finished `leaf-sk pretrain` run, a checkpoint file, or a packaged name "
            f"({packaged_checkpoints()}).")
    raise FileNotFoundError(
        f"The folder {folder} holds no checkpoint: no {MODEL_FILE}, no .safetensors file and no "
        f"{RESUME_FILE} (it holds {_listing(names)}). Pass the --out folder of a finished "
        "`leaf-sk pretrain` run, a checkpoint file, or a packaged name "
        f"({packaged_checkpoints()}).")


def save_checkpoint(path, model, *, text_encoder=None, sfreq=200.0, ch_names=None,
                    provenance=None, history=None, dtype=None):
    """Write a model to a ``.safetensors`` file with its JSON config, atomically.

    Parameters
    ----------
    path : str or Path
        Target file; the folder is created if needed.
    model : LeafModel or LeafEnsemble or STRPretrainer or Tower
        Any module with a ``config`` and the release's attribute names. An ensemble's
        members are stored under ``members.<i>.``, with ``n_members`` in the JSON.
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
        Storage dtype for floating-point tensors: ``torch.float16`` halves the file;
        ``torch.int8`` quarters it, storing each weight matrix as int8 with one float16 scale
        per row (the row's largest magnitude maps to 127) and the small tensors as float16.
        Loading returns float32 either way.

    Returns
    -------
    Path
    """
    from . import __version__
    from .montage import TEMPLATE_CH_NAMES

    state = {k: v.detach().cpu() for k, v in _prefixed_state_dict(model).items()}
    ensemble = isinstance(model, LeafEnsemble)
    parts = sorted({(key.split(".", 2)[2] if ensemble else key).split(".", 1)[0] for key in state})
    if dtype == torch.int8:
        state = quantize_state(state)
    elif dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype or torch.int8, got {dtype}.")
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
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
    if ensemble:
        meta["n_members"] = len(model.members)
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(meta)})
    return Path(path)


def _prefixed_state_dict(model):
    if isinstance(model, LeafEnsemble) or (hasattr(model, "tower") and hasattr(model, "qformer")):
        return dict(model.state_dict())
    if hasattr(model, "tower"):
        return {f"tower.{k}": v for k, v in model.tower.state_dict().items()}
    return {f"tower.{k}": v for k, v in model.state_dict().items()}


def read_metadata(path):
    """The JSON document of a leaf-sk checkpoint, without loading the weights.

    Parameters
    ----------
    path : str or os.PathLike
        A packaged name, a leaf-sk ``.safetensors`` file, or the ``--out`` folder of
        ``leaf-sk pretrain``.

    Returns
    -------
    dict
        ``config``, ``parts``, ``ch_names``, ``sfreq``, ``text_encoder``, ``provenance``,
        ``history``, format name and versions.

    Raises
    ------
    ValueError
        For a file that is not a leaf-sk checkpoint; the message says what the file is.
    """
    from safetensors import safe_open

    path = resolve_checkpoint(path)
    if _file_format(path) != "safetensors":
        raise ValueError(
            f"{path} is a PyTorch file (a LEAF release file, or the {RESUME_FILE} of "
            "`leaf-sk pretrain`), not a leaf-sk checkpoint: it carries no metadata document. "
            "load_checkpoint reads its weights; pass a leaf-sk .safetensors file for the metadata.")
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


def is_release_checkpoint(checkpoint):
    """Whether ``checkpoint`` is a file of the authors' release (not a leaf-sk file).

    A packaged name, a leaf-sk ``.safetensors`` file or a ``leaf-sk pretrain`` folder is not;
    None (random weights) is not.
    """
    if checkpoint is None:
        return False
    path = resolve_checkpoint(checkpoint)
    if path.name == RESUME_FILE:
        return False
    try:
        read_metadata(path)
    except ValueError:
        return True
    return False


def load_checkpoint(checkpoint, *, config=None, d_text=None):
    """Load a leaf-sk checkpoint or a LEAF release file into a :class:`LeafModel` (or ensemble).

    Parameters
    ----------
    checkpoint : str or os.PathLike
        A packaged name, a leaf-sk ``.safetensors`` file, the ``--out`` folder of
        ``leaf-sk pretrain`` (its ``tower.safetensors``), the ``resume.pt`` file of such a run
        (the Tower of its last finished epoch), or a release file (a bare state dict or a
        Lightning file with ``state_dict`` and ``model.`` prefixes; full model or Tower only).
    config : LeafConfig, optional
        For release and resume files: the network config; by default inferred from the tensor
        shapes (see :func:`infer_config` for what shapes cannot tell).
    d_text : int, optional
        Text dimension of the Q-Former when the file holds the Tower only (default: config's).

    Returns
    -------
    model : LeafModel or LeafEnsemble
        In eval mode, float32; a :class:`~leaf_sk.nn.LeafEnsemble` for a file written by
        :func:`combine_checkpoints`. Parts absent from the file (the Q-Former of a Tower-only
        file) keep their random initialisation.
    info : dict
        The checkpoint's JSON document (for release files: ``format="leaf-release"``,
        ``parts``; for resume files: ``format="leaf-sk-resume"``, ``parts`` and the
        ``history`` of the finished epochs).

    Raises
    ------
    ValueError
        For a file that is neither ours nor the release's (the message says what it is: a
        training history, a text file, an EEG recording, ...), or whose keys or shapes disagree
        with the network; the message lists the missing, unexpected and mismatched keys.
    """
    path = resolve_checkpoint(checkpoint)
    if _file_format(path) == "safetensors":
        from safetensors.torch import load_file

        info = read_metadata(path)
        config = LeafConfig.from_dict(info["config"])
        n_members = info.get("n_members")
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path}: reading the weights failed ({exc}); the file is damaged "
                             "or truncated, write it again.") from exc
        try:
            state = dequantize_state(state)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    else:
        state, resume = _read_torch_file(path)
        parts = sorted({k.split(".", 1)[0] for k in state})
        if config is None:
            try:
                config, size = _infer_config(state, d_text=d_text)
            except ValueError as exc:
                shown = ", ".join(sorted(state)[:5]) + (", ..." if len(state) > 5 else "")
                raise ValueError(
                    f"{path} holds a state dict, but not of the LEAF network (keys: {shown}): "
                    f"{exc} Pass a leaf-sk checkpoint or a LEAF release file (tower.*/qformer.* "
                    "keys, or the Tower's keys alone).") from exc
            if resume is not None and size is None:
                raise ValueError(
                    f"{path} is the {RESUME_FILE} of a `leaf-sk pretrain` run whose network is "
                    f"of no named size ({', '.join(SIZES)}): the file holds no config, and head "
                    f"counts cannot be read from its shapes (d_model={config.d_model}). Pass the "
                    f"{MODEL_FILE} of the run (it carries the config; an unfinished run writes "
                    "it once resumed to the end), or config= with the run's LeafConfig.")
        n_members = None
        info = {"format": "leaf-release", "parts": parts, "config": config.to_dict(),
                "sfreq": 200.0, "text_encoder": {"name": None, "dim": config.d_text}}
        if resume is not None:
            info.update(format="leaf-sk-resume", history=resume["history"])
    if d_text is not None and "qformer" not in info["parts"] and d_text != config.d_text:
        config = config.replace(d_text=d_text)
        info["config"] = config.to_dict()
    model = LeafEnsemble(config, n_members) if n_members else LeafModel(config)
    load_state_dict_checked(model, state, source=path)
    return model.float().eval(), info


def combine_checkpoints(paths, path, *, dtype=None, reconstruction_heads=True, provenance=None):
    """Write instruction-tuned checkpoints of one config as one :class:`LeafEnsemble` file.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Two or more leaf-sk checkpoints (or packaged names) holding Tower and Q-Former, of the
        same network config, text encoder, sampling rate and template.
    path : str or Path
        The ensemble file, written atomically.
    dtype : torch.dtype, optional
        Storage dtype (``torch.float16`` halves the file, ``torch.int8`` quarters it; see
        :func:`save_checkpoint`; loading returns float32).
    reconstruction_heads : bool
        False leaves out the members' STR reconstruction heads, which instruction-following
        inference never runs (``LeafConfig(reconstruction_heads=False)``): a smaller file of
        the same predictions.
    provenance : dict, optional
        Extra facts merged into the recorded provenance. What every member's provenance
        agrees on is recorded at the top (``data``, ``trainer``, the shared ``params``, so that
        the estimators' ``alignment="auto"`` and the benchmark's test-subject check read it as
        for one model); each member's own provenance and the sha256 of its file are recorded
        under ``members``. Members trained on other data, from other starting weights or on
        other alignments are refused: one record could not say which subjects the ensemble saw,
        nor how to prepare its input.

    Returns
    -------
    Path
    """
    paths = list(paths)
    if len(paths) < 2:
        raise ValueError(f"an ensemble needs two or more checkpoints; got {len(paths)}.")
    models, members, first = [], [], None
    for source in paths:
        model, info = load_checkpoint(source)
        if info["format"] != FORMAT_NAME:
            raise ValueError(f"{source}: an ensemble member must be a leaf-sk checkpoint; this is "
                             f"a {info['format']} file. Tune from it with `leaf-sk tune "
                             "--checkpoint` first, or use it on its own.")
        if isinstance(model, LeafEnsemble) or "qformer" not in info["parts"]:
            raise ValueError(f"{source}: an ensemble member must be one instruction-tuned model "
                             f"(Tower and Q-Former); this file holds {info['parts']}"
                             + (f" of {info['n_members']} members" if info.get("n_members") else "")
                             + ".")
        # Configs compared as LeafConfig: files written before a key existed hold its default.
        key = {"config": model.config,
               **{k: info.get(k) for k in ("text_encoder", "sfreq", "ch_names")}}
        if first is None:
            first = key
        for name, value in key.items():
            if value != first[name]:
                raise ValueError(f"{source}: its {name} differs from that of {paths[0]}; the "
                                 "members of an ensemble must share config, text encoder, "
                                 "sampling rate and template.")
        models.append(model)
        resolved = resolve_checkpoint(source)
        digest = _sha256(resolved)
        if any(m["sha256"] == digest for m in members):
            raise ValueError(f"{source} is the same file as an earlier member; an ensemble of "
                             "copies averages nothing. Give each model once.")
        members.append({"file": resolved.name, "sha256": digest,
                        "provenance": info.get("provenance", {}),
                        "history": info.get("history", [])})
    records = [m["provenance"] for m in members]
    for key in ("data", "checkpoint", "alignment"):
        values = [(r if key == "data" else r.get("params") or {}).get(key) for r in records]
        for source, value in zip(paths[1:], values[1:]):
            if value != values[0]:
                raise ValueError(
                    f"{source}: its provenance differs from that of {paths[0]} in {key!r}; "
                    "combine models trained on the same data, from the same starting weights and "
                    "on the same alignment.")
    shared = {k: v for k, v in records[0].items() if all(r.get(k) == v for r in records)}
    params = [r.get("params") or {} for r in records]
    shared["params"] = {k: v for k, v in params[0].items() if all(p.get(k) == v for p in params)}
    config = models[0].config
    if not reconstruction_heads:
        config = config.replace(reconstruction_heads=False)
    ensemble = LeafEnsemble(config, len(models))
    kept = set(ensemble.members[0].state_dict())
    for member, model in zip(ensemble.members, models):
        member.load_state_dict({k: v for k, v in model.state_dict().items() if k in kept})
    return save_checkpoint(path, ensemble, text_encoder=first["text_encoder"]["name"],
                           sfreq=first["sfreq"], ch_names=first["ch_names"], dtype=dtype,
                           provenance={**shared, **(provenance or {}), "members": members})


# --- what a file is, from its first bytes ---------------------------------------------------

_SNIFF_BYTES = 4096
_RECORDING = ("not network weights; EEG recordings are data, for fit/transform or "
              "`leaf-sk pretrain --files`")
# Leading bytes of formats that are recognisably no checkpoint.
_SIGNATURES = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (h5py, Keras or MATLAB v7.3), not a PyTorch or "
                           "safetensors file"),
    (b"\x00\x00\x00\x64\x00\x00\x00\x1f\x00\x00\x00\x14",
     f"an EEG recording in MNE's FIF format, {_RECORDING}"),
    (b"0       ", f"an EEG recording in EDF format, {_RECORDING}"),
    (b"\xffBIOSEMI", f"an EEG recording in BDF (BioSemi) format, {_RECORDING}"),
    (b"GDF ", f"an EEG recording in GDF format, {_RECORDING}"),
    (b"\x93NUMPY", "a NumPy array file (.npy), not network weights"),
    (b"\x1f\x8b", "a gzip-compressed file; decompress it first if it holds a checkpoint"),
)
_FIX = ("pass a leaf-sk checkpoint (.safetensors), the --out folder of `leaf-sk pretrain`, a "
        "LEAF release file (.ckpt or .pt) or a packaged name")


def _not_a_checkpoint(path, reason, fix=_FIX):
    return ValueError(
        f"{path} is not a leaf-sk checkpoint (.safetensors with a leaf_sk header) nor a LEAF "
        f"release file (a PyTorch state dict): {reason}; {fix}.")


def _file_format(path):
    """``"safetensors"`` or ``"torch"`` (zip, pickle or unknown: for torch.load to judge).

    Raises a ValueError that names the format of empty, text (JSON, CSV, ...), HDF5, EEG
    recording and other recognisable files that hold no checkpoint.
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        raise ValueError(
            f"{path} is empty (0 bytes), not a checkpoint: a copy, download or save that did not "
            "finish? Write or fetch the checkpoint again.")
    if len(head) < 9:
        raise ValueError(f"{path} is too small to be a checkpoint ({len(head)} bytes).")
    header_len = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < header_len < 100_000_000:
        return "safetensors"
    for signature, reason in _SIGNATURES:
        if head.startswith(signature):
            raise _not_a_checkpoint(path, f"it is {reason}")
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    text = _as_text(head)
    if text is not None:
        raise _not_a_checkpoint(path, *_describe_text(path, text))
    return "torch"


def _zip_format(path):
    """torch.save's zip format holds ``<name>/data.pkl``; other archives are named."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "torch"  # a damaged archive: torch.load's message says more
    if any(name.endswith("data.pkl") for name in names):
        return "torch"
    if names and all(name.endswith(".npy") for name in names):
        raise _not_a_checkpoint(path, "it is a NumPy archive (.npz), not network weights")
    holding = f"holding {_listing(names)}" if names else "empty"
    raise _not_a_checkpoint(
        path, f"it is a zip archive ({holding}) but not a PyTorch file (those hold a data.pkl)")


def _as_text(head):
    """``head`` decoded as UTF-8 text, or None for binary data."""
    if b"\x00" in head:
        return None
    data = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= len(data) - 3:
            return data[:exc.start].decode("utf-8")  # a character cut by the sniffed length
        return None


def _describe_text(path, text):
    """(reason, fix) for a text file given as a checkpoint."""
    stripped = text.lstrip()
    first = stripped[:1]
    if first in ("[", "{"):
        if _is_history(path):
            beside = Path(path).parent / MODEL_FILE
            fix = (f"pass {beside} or the folder {beside.parent}" if beside.is_file() else
                   f"pass the {MODEL_FILE} that the same run writes in its --out folder, or "
                   "that folder")
            return (f"it is a JSON text file (it starts with {first!r}): the training history "
                    f"that `leaf-sk pretrain` writes beside the checkpoint, not weights", fix)
        return f"it is a JSON text file (it starts with {first!r}), not weights", _FIX
    line = stripped.splitlines()[0] if stripped else ""
    if "Vision Data Exchange Header File" in line:
        return f"it is the header of an EEG recording in BrainVision format, {_RECORDING}", _FIX
    shown = line[:40] + ("..." if len(line) > 40 else "")
    return f"it is a text file (it starts with {shown!r}), not weights", _FIX


def _is_history(path):
    """Whether ``path`` holds a JSON list of per-epoch rows, as ``leaf-sk pretrain`` writes."""
    if Path(path).stat().st_size > 64 * 2**20:
        return False
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (ValueError, OSError):
        return False
    return (isinstance(rows, list) and bool(rows) and all(isinstance(r, dict) for r in rows)
            and any("epoch" in r for r in rows))


def _read_torch_file(path):
    """The ``tower.``/``qformer.`` state dict of a release or resume file, and the resume document.

    Returns
    -------
    state : dict of str to Tensor
    resume : dict or None
        For the ``resume.pt`` of ``leaf-sk pretrain``: ``{"history": [...]}`` (rows without
        their per-batch records); None for release files.
    """
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
    resume = None
    if isinstance(obj, dict) and {"module", "optimizer", "history"} <= set(obj):
        module = obj["module"]
        if not isinstance(module, dict) or not module or not all(
                isinstance(k, str) and torch.is_tensor(v) for k, v in module.items()):
            raise ValueError(
                f"{path} has the layout of a `leaf-sk pretrain` resume file (module, optimizer, "
                f"history), but its module entry is a {type(module).__name__}, not a state dict "
                f"of tensors; the file is damaged. Pass the {MODEL_FILE} of the run instead.")
        history = obj["history"] if isinstance(obj["history"], list) else []
        resume = {"history": [{k: v for k, v in row.items() if k != "batches"}
                              for row in history if isinstance(row, dict)]}
        obj = module
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
    return obj, resume


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
        Head counts cannot be read from shapes. When the shapes are those of a named size
        (``"base"``, ``"small"``, ``"tiny"``, see :meth:`LeafConfig.from_size`), that size's
        head counts (and, for a Tower-only state, its Q-Former) are taken; otherwise the
        head counts are ``d_model // 32`` (the release's 32 dimensions per head). Pass
        ``config=`` to :func:`load_checkpoint` for other networks.
    """
    return _infer_config(state, d_text)[0]


def _infer_config(state, d_text=None):
    """:func:`infer_config`, and the named size whose shapes ``state`` has (or None)."""
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
    guessed = ("n_heads", "iqf_heads", "d_text")
    for size in SIZES:
        named = LeafConfig.from_size(size)
        if all(getattr(named, k) == v for k, v in values.items() if k not in guessed):
            heads = {k: getattr(named, k) for k in ("n_heads", "iqf_heads") if k in values}
            return named.replace(**{**values, **heads}), size
    return LeafConfig(**values), None


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
