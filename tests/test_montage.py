"""The 65-site template: order, positions, aliases, dropped channels."""

import re

import mne
import numpy as np
import pytest

from leaf_sk import montage
from leaf_sk.montage import (
    ALIASES,
    DROPPED_CHANNELS,
    TEMPLATE_CH_NAMES,
    TEMPLATE_POSITIONS,
    resolve_channel,
    template_montage,
)

# Spec section 2, copied by hand: the row order of the released model's spatial convolution.
SPEC_ORDER = """Fpz AFz Fz FCz Cz CPz Pz POz Oz | Fp1 Fp2 | AF7 AF3 AF4 AF8 | F7 F5 F3 F1 F2 F4 F6 F8 |
FT9 FT7 FC5 FC3 FC1 FC2 FC4 FC6 FT8 FT10 | T7 C5 C3 C1 C2 C4 C6 T8 |
TP9 TP7 CP5 CP3 CP1 CP2 CP4 CP6 TP8 TP10 | P7 P5 P3 P1 P2 P4 P6 P8 | PO7 PO3 PO4 PO8 | O1 O2"""


def test_template_has_65_unique_names_in_spec_order():
    expected = tuple(name for name in SPEC_ORDER.split() if name != "|")
    assert TEMPLATE_CH_NAMES == expected
    assert len(set(TEMPLATE_CH_NAMES)) == 65


def test_constants():
    assert montage.TEMPLATE_SFREQ == 200.0
    assert montage.WINDOW_SAMPLES == 100
    assert montage.MAX_WINDOWS == 20


@pytest.mark.parametrize("name, theta_phi", [
    ("Cz", (0, 0)), ("FCz", (23, 90)), ("Fp1", (-90, -72)), ("FT9", (-113, -18)),
    ("CP2", (31, -46)), ("TP10", (113, -18)), ("O2", (90, -72)),
])
def test_positions_follow_the_spec(name, theta_phi):
    assert set(TEMPLATE_POSITIONS) == set(TEMPLATE_CH_NAMES)
    assert TEMPLATE_POSITIONS[name] == theta_phi


def _mne_1005_head_positions():
    info = mne.create_info(list(TEMPLATE_CH_NAMES), 200.0, "eeg")
    available = mne.channels.get_builtin_montages()
    kind = next(k for k in ("colin27_1005", "standard_1005") if k in available)
    info.set_montage(kind)
    return np.array([ch["loc"][:3] for ch in info["chs"]])


def test_montage_points_where_mne_10_05_points():
    pos = template_montage().get_positions()
    assert pos["coord_frame"] == "head"
    ours = np.array([pos["ch_pos"][name] for name in TEMPLATE_CH_NAMES])
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), montage.HEAD_RADIUS_M)
    ref = _mne_1005_head_positions()
    # Centre MNE's points on their best-fitting sphere, then compare directions.
    design = np.column_stack([2 * ref, np.ones(len(ref))])
    centre = np.linalg.lstsq(design, (ref ** 2).sum(axis=1), rcond=None)[0][:3]
    unit = lambda p: p / np.linalg.norm(p, axis=1, keepdims=True)  # noqa: E731
    angle = np.degrees(np.arccos(np.clip((unit(ours) * unit(ref - centre)).sum(axis=1), -1, 1)))
    assert angle.max() < 20, dict(zip(TEMPLATE_CH_NAMES, angle.round(1)))


def test_montage_sides():
    ch_pos = template_montage().get_positions()["ch_pos"]
    assert ch_pos["C3"][0] < 0 < ch_pos["C4"][0]          # x: left to right
    assert ch_pos["Oz"][1] < 0 < ch_pos["Fz"][1]          # y: back to front
    assert ch_pos["O1"][0] < 0 and ch_pos["O1"][1] < 0
    assert ch_pos["Cz"][2] == pytest.approx(montage.HEAD_RADIUS_M)
    assert abs(ch_pos["Cz"][0]) < 1e-12 and abs(ch_pos["Pz"][0]) < 1e-12


@pytest.mark.parametrize("source, site", [
    ("T3", "T7"), ("T4", "T8"), ("T5", "P7"), ("T6", "P8"), ("Iz", "Oz"), ("P9", "TP9"),
    ("P12", "TP10"), ("AF1", "AF3"), ("AF10", "AF8"), ("F9", "F7"), ("T9", "T7"),
    ("FTT8", "T8"), ("PO1", "PO3"), ("PO11", "PO7"), ("I2", "O2"),
    ("FCC3h", "C3"), ("CCP3h", "CP3"), ("FFC1", "FC1"), ("FCC4h", "C4"),
])
def test_aliases(source, site):
    assert ALIASES[source] == site
    assert resolve_channel(source) == site


@pytest.mark.parametrize("raw_name, site", [
    ("cz", "Cz"), ("CZ", "Cz"), (" Fp1 ", "Fp1"), ("Fc5.", "FC5"), ("Cz..", "Cz"),
    ("Afz.", "AFz"), ("t3", "T7"), ("fcc3H", "C3"),
])
def test_resolve_ignores_case_blanks_and_edf_dots(raw_name, site):
    assert resolve_channel(raw_name) == site


def test_every_alias_lands_on_the_template_and_midline_stays_midline():
    assert set(ALIASES.values()) <= set(TEMPLATE_CH_NAMES)
    assert not set(ALIASES) & set(TEMPLATE_CH_NAMES)
    midline = {name for name in ALIASES if name.endswith("z")}
    assert midline and all(ALIASES[name].endswith("z") for name in midline)


def test_aliases_are_left_right_symmetric():
    def mirror(name):
        match = re.fullmatch(r"([A-Za-z]+?)(\d+)(h?)", name)
        if match is None:
            return name
        k = int(match[2])
        return f"{match[1]}{k + 1 if k % 2 else k - 1}{match[3]}"

    for name, site in ALIASES.items():
        if mirror(name) in ALIASES:
            assert ALIASES[mirror(name)] == mirror(site), name


def test_cerebellar_channels_default_anatomical_and_release_swapped():
    assert resolve_channel("CB1") == "O1" and resolve_channel("CB2") == "O2"
    assert resolve_channel("cb1", release_compat=True) == "O2"
    assert resolve_channel("CB2", release_compat=True) == "O1"


@pytest.mark.parametrize("name", ["A1", "m2", "VEO", "HEOG", "EOG", "ECG", "EMG", "STI 014",
                                  "Status", "TRIGGER", "EOG-left", "emg2", "Stim"])
def test_dropped_channels_resolve_to_none(name):
    assert resolve_channel(name) is None


def test_dropped_set_is_upper_case():
    assert all(name == name.upper() for name in DROPPED_CHANNELS)


def test_unknown_channel_names_problem_and_fix():
    message = r"Unknown EEG channel name 'Foo'.*mne\.rename_channels.*drop it"
    with pytest.raises(ValueError, match=message):
        resolve_channel("Foo")


def test_non_string_name():
    with pytest.raises(TypeError, match=r"must be strings, got 3"):
        resolve_channel(3)
