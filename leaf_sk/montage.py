"""The 65-electrode LEAF template: names, positions and the aliases that map other caps onto it.

The template is a Brain Products/EasyCap 64-channel 10-10 cap plus FCz, in the row order of
the released model's spatial convolution (``configs/LEAF-ch65/LEAF-ch65.json`` of the
authors' code). Positions are the cap file's EasyCap θ/φ degrees on a unit sphere, scaled
to a 95-mm head.

Every input channel name is resolved by :func:`resolve_channel` to a template site, to
``None`` (a reference, EOG, ECG, EMG or trigger channel that is ignored) or to an error.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

# Re-exported: the template's names and rate live in an import-free module.
from ._template import TEMPLATE_CH_NAMES, TEMPLATE_SFREQ

WINDOW_SAMPLES = 100
"""Samples per token window (0.5 s at :data:`TEMPLATE_SFREQ`)."""

MAX_WINDOWS = 20
"""Windows the positional tables hold (10 s)."""

HEAD_RADIUS_M = 0.095
"""Radius of the head sphere the θ/φ positions are placed on, in metres."""

# EasyCap convention: θ = angle from Cz in degrees, its sign the hemisphere (negative = left);
# φ = azimuth in degrees, counter-clockwise from the right ear (T8) axis.
TEMPLATE_POSITIONS: dict[str, tuple[float, float]] = {
    "Fpz": (90, 90), "AFz": (67, 90), "Fz": (45, 90), "FCz": (23, 90), "Cz": (0, 0),
    "CPz": (22, -90), "Pz": (45, -90), "POz": (67, -90), "Oz": (90, -90),
    "Fp1": (-90, -72), "Fp2": (90, 72),
    "AF7": (-90, -54), "AF3": (-74, -68), "AF4": (74, 68), "AF8": (90, 54),
    "F7": (-90, -36), "F5": (-74, -41), "F3": (-60, -51), "F1": (-49, -68),
    "F2": (49, 68), "F4": (60, 51), "F6": (74, 41), "F8": (90, 36),
    "FT9": (-113, -18), "FT7": (-90, -18), "FC5": (-69, -21), "FC3": (-49, -29),
    "FC1": (-31, -46), "FC2": (31, 46), "FC4": (49, 29), "FC6": (69, 21),
    "FT8": (90, 18), "FT10": (113, 18),
    "T7": (-90, 0), "C5": (-68, 0), "C3": (-45, 0), "C1": (-23, 0),
    "C2": (23, 0), "C4": (45, 0), "C6": (68, 0), "T8": (90, 0),
    "TP9": (-113, 18), "TP7": (-90, 18), "CP5": (-69, 21), "CP3": (-49, 29),
    "CP1": (-31, 46), "CP2": (31, -46), "CP4": (49, -29), "CP6": (69, -21),
    "TP8": (90, -18), "TP10": (113, -18),
    "P7": (-90, 36), "P5": (-74, 41), "P3": (-60, 51), "P1": (-49, 68),
    "P2": (49, -68), "P4": (60, -51), "P6": (74, -41), "P8": (90, -36),
    "PO7": (-90, 54), "PO3": (-74, 68), "PO4": (74, -68), "PO8": (90, -54),
    "O1": (-90, 72), "O2": (90, -72),
}
"""EasyCap (θ, φ) in degrees for every template site, radius 1 (the release's cap file)."""

# Fiducials in the same convention, as MNE places them for EasyCap layouts.
_FIDUCIAL_POSITIONS = {"nasion": (115, 90), "lpa": (-115, 0), "rpa": (115, 0)}

# Aliases the release's channel policy names explicitly (spec section 2), plus the
# spec's 10-05 examples and their mirror images. These take precedence over the
# nearest-site rule, which is ambiguous for names halfway between two sites.
_EXPLICIT_ALIASES = {
    "T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8",
    "Iz": "Oz",
    "P9": "TP9", "P11": "TP9", "P10": "TP10", "P12": "TP10",
    "AF1": "AF3", "AF2": "AF4", "AF5": "AF7", "AF9": "AF7", "AF6": "AF8", "AF10": "AF8",
    "F9": "F7", "F10": "F8",
    "T9": "T7", "FTT7": "T7", "T10": "T8", "FTT8": "T8",
    "PO1": "PO3", "PO5": "PO3", "PO2": "PO4", "PO6": "PO4",
    "PO9": "PO7", "PO11": "PO7", "PO10": "PO8", "PO12": "PO8",
    "I1": "O1", "I2": "O2",
    "FCC3h": "C3", "FCC4h": "C4", "CCP3h": "CP3", "CCP4h": "CP4",
    "FFC1": "FC1", "FFC2": "FC2",
}

# Cerebellar electrodes of SEED-family caps: anatomically CB1 is left, CB2 right.
# The release maps them the other way round (spec open point 11).
_CEREBELLAR_ALIASES = {"CB1": "O1", "CB2": "O2"}
_CEREBELLAR_RELEASE = {"CB1": "O2", "CB2": "O1"}

DROPPED_CHANNELS: frozenset[str] = frozenset({
    "A1", "A2", "M1", "M2", "REF", "GND",
    "VEO", "HEO", "VEOG", "HEOG", "EOG", "ECG", "EKG", "EMG",
    "STI 014", "STI014", "STATUS", "TRIGGER", "TRIG", "STIM", "MARKER",
})
"""Reference, ocular, cardiac, muscle and trigger channels, ignored with a warning.

Upper case; matched case-insensitively, as are names starting with ``EOG``, ``ECG``,
``EKG``, ``EMG`` or ``STI`` (``EOG-left``, ``EMG2``, ``STI 101``).
"""

_DROPPED_PREFIXES = ("EOG", "ECG", "EKG", "EMG", "STI")

# Candidate montage files for 10-05 positions; MNE 1.13 renamed standard_1005.
_MNE_1005_MONTAGES = ("colin27_1005", "standard_1005")


def template_positions_cartesian(radius=HEAD_RADIUS_M):
    """Cartesian positions of the template sites.

    Parameters
    ----------
    radius : float
        Radius of the head sphere, in metres.

    Returns
    -------
    pos : ndarray, shape (65, 3)
        x (towards the right ear), y (towards the nasion), z (up), in metres, in
        :data:`TEMPLATE_CH_NAMES` order, centred on the sphere's centre.
    """
    theta_phi = np.array([TEMPLATE_POSITIONS[name] for name in TEMPLATE_CH_NAMES], float)
    return _easycap_to_cartesian(theta_phi, radius)


def _easycap_to_cartesian(theta_phi_deg, radius):
    """(θ, φ) EasyCap degrees, shape (n, 2) → Cartesian points on a sphere, shape (n, 3)."""
    theta, phi = np.deg2rad(np.asarray(theta_phi_deg, float)).T
    return radius * np.column_stack(
        [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def template_montage():
    """The template cap as an MNE montage.

    Returns
    -------
    montage : mne.channels.DigMontage
        The 65 template sites and the nasion/LPA/RPA fiducials, in the ``head``
        coordinate frame, on a sphere of radius :data:`HEAD_RADIUS_M` (metres)
        centred on the origin.
    """
    import mne

    pos = template_positions_cartesian()
    fiducials = {key: _easycap_to_cartesian([value], HEAD_RADIUS_M)[0]
                 for key, value in _FIDUCIAL_POSITIONS.items()}
    return mne.channels.make_dig_montage(
        ch_pos=dict(zip(TEMPLATE_CH_NAMES, pos)), coord_frame="head", **fiducials)


def _mirror_name(name):
    """Name of the electrode mirrored across the midline (``FCC3h`` ↔ ``FCC4h``)."""
    match = re.fullmatch(r"([A-Za-z]+?)(\d+)(h?)", name)
    if match is None:
        return name
    number = int(match[2])
    return f"{match[1]}{number + 1 if number % 2 else number - 1}{match[3]}"


def _mne_1005_positions():
    """Positions of MNE's 10-05 montage, as a dict name → (3,) array in metres."""
    import mne

    available = mne.channels.get_builtin_montages()
    kind = next(name for name in _MNE_1005_MONTAGES if name in available)
    return mne.channels.make_standard_montage(kind).get_positions()["ch_pos"]


def _nearest_site_aliases():
    """Map every 10-05 name in MNE's montage to the nearest template site.

    Positions are made left-right symmetric first (each point averaged with its mirror
    image's mirrored point), so that a name and its mirror image map to mirror sites.
    """
    pos = _mne_1005_positions()
    flip = np.array([-1.0, 1.0, 1.0])

    def symmetric(name):
        mirror = _mirror_name(name)
        return (pos[name] + flip * pos[mirror]) / 2 if mirror in pos else pos[name]

    sites = np.array([symmetric(name) for name in TEMPLATE_CH_NAMES])
    template = set(TEMPLATE_CH_NAMES)
    aliases = {}
    for name in pos:
        if name in template or name.upper() in DROPPED_CHANNELS:
            continue
        distance = np.linalg.norm(sites - symmetric(name), axis=1)
        aliases[name] = TEMPLATE_CH_NAMES[int(np.argmin(distance))]
    return aliases


def _build_aliases():
    aliases = _nearest_site_aliases()
    aliases.update(_EXPLICIT_ALIASES)
    aliases.update(_CEREBELLAR_ALIASES)
    return dict(sorted(aliases.items(), key=lambda item: item[0].casefold()))


ALIASES: dict[str, str] = _build_aliases()
"""Source name → template name for names that are not template names themselves.

The release's explicit table (T3→T7, Iz→Oz, P9→TP9, ...), every 10-05 name of MNE's
10-05 montage mapped to the nearest template site (FCC3h→C3, CCP3h→CP3, FFC1→FC1), and
the anatomically correct CB1→O1, CB2→O2 (``resolve_channel(..., release_compat=True)``
gives the release's swapped mapping). Matched case-insensitively.
"""


def _normalise(name):
    """Casefolded name without blanks around it or trailing EDF dots: ``"Fc5."`` → ``"fc5"``."""
    return name.strip().rstrip(".").strip().casefold()


@lru_cache(maxsize=2)
def _lookup(release_compat):
    table = dict(ALIASES)
    if release_compat:
        table.update(_CEREBELLAR_RELEASE)
    table.update({name: name for name in TEMPLATE_CH_NAMES})
    return {key.casefold(): value for key, value in table.items()}


def is_dropped(name):
    """Whether ``name`` is a reference/EOG/ECG/EMG/trigger channel that is ignored."""
    key = _normalise(name).upper()
    return key in DROPPED_CHANNELS or key.startswith(_DROPPED_PREFIXES)


def resolve_channel(name, release_compat=False):
    """Template site of one input channel.

    Parameters
    ----------
    name : str
        Channel name as recorded. Case, surrounding blanks and trailing dots (PhysioNet
        EDF names such as ``"Fc5."`` or ``"Cz.."``) are ignored.
    release_compat : bool
        If True, map CB1→O2 and CB2→O1 as the released model's data did; the default
        maps them to the same-side O1/O2.

    Returns
    -------
    site : str or None
        A name of :data:`TEMPLATE_CH_NAMES`, or None for a channel in
        :data:`DROPPED_CHANNELS` (reference, EOG, ECG, EMG, trigger).

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If the name is neither a 10-20/10-10/10-05 name nor a dropped channel.
    """
    if not isinstance(name, str):
        raise TypeError(f"Channel names must be strings, got {name!r} ({type(name).__name__}).")
    site = _lookup(bool(release_compat)).get(_normalise(name))
    if site is not None:
        return site
    if is_dropped(name):
        return None
    raise ValueError(
        f"Unknown EEG channel name {name!r}: it is not a 10-20/10-10/10-05 electrode name "
        "that can be placed on the LEAF template. Rename it to its 10-10 name with "
        f"mne.rename_channels(info, {{{name!r}: '<10-10 name>'}}) or pass ch_names that use "
        "10-10 names; or drop it (epochs.drop_channels, or remove its row from X).")
