"""The names of the 65 template sites, in the row order of LEAF's spatial convolution.

Kept free of any import so that the torch network (:mod:`leaf_sk.nn`) can name rows without
loading MNE; :mod:`leaf_sk.montage` holds the positions and the aliases.
"""

TEMPLATE_CH_NAMES: tuple[str, ...] = (
    "Fpz", "AFz", "Fz", "FCz", "Cz", "CPz", "Pz", "POz", "Oz",
    "Fp1", "Fp2",
    "AF7", "AF3", "AF4", "AF8",
    "F7", "F5", "F3", "F1", "F2", "F4", "F6", "F8",
    "FT9", "FT7", "FC5", "FC3", "FC1", "FC2", "FC4", "FC6", "FT8", "FT10",
    "T7", "C5", "C3", "C1", "C2", "C4", "C6", "T8",
    "TP9", "TP7", "CP5", "CP3", "CP1", "CP2", "CP4", "CP6", "TP8", "TP10",
    "P7", "P5", "P3", "P1", "P2", "P4", "P6", "P8",
    "PO7", "PO3", "PO4", "PO8",
    "O1", "O2",
)
"""The 65 template names, in the model's channel (row) order."""

TEMPLATE_SFREQ = 200.0
"""Sampling rate of the model input, in Hz."""
