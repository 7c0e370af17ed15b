"""Where SSVEP information lives: logistic regression on fixed spectra, Kalunga2016 inner split.

Fit subjects 1-5, validation 6 and 8, or another fold of ``tune_inner.FOLDS`` with ``--fold``
(training subjects only; no test subject is loaded).
Each subject's trials are Euclidean-aligned on their own; features are the log of the power
averaged over non-overlapping 0.5-s Hann-tapered windows, standardised, then
``LogisticRegression(C=0.1)``. Rows: the recorded channels before the template, their rows of
the 65-site template, all template rows, and the mean over the template rows.

Run from the repository root (after ``benchmarks/tune_inner.py`` has cached the arrays, or
with the MOABB environment of that script)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/spectral_probe.py
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from leaf_sk._input import make_channel_map, read_trials, to_template
from leaf_sk.alignment import align_trials
from leaf_sk.montage import TEMPLATE_CH_NAMES

from tune_inner import FOLDS, SPLITS, load, use_fold


def window_power(data, window):
    """Power spectrum averaged over non-overlapping Hann-tapered windows, (n, rows, freqs)."""
    n_windows = data.shape[-1] // window
    segments = data[..., : n_windows * window].reshape(*data.shape[:-1], n_windows, window)
    spectrum = np.fft.rfft(segments * np.hanning(window), axis=-1)
    return (np.abs(spectrum) ** 2).mean(axis=-2)


def score(features, y, subject, split):
    fit = np.isin(subject, split["fit"])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    model.fit(features[fit], y[fit])
    return {int(s): float((model.predict(features[subject == s]) == y[subject == s]).mean())
            for s in split["valid"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0, choices=range(len(FOLDS["Kalunga2016"])),
                        help="which training subjects validate (tune_inner.FOLDS)")
    use_fold(parser.parse_args(argv).fold)
    warnings.simplefilter("ignore")
    split = SPLITS["Kalunga2016"]
    X, y, subject, ch_names, sfreq = load("Kalunga2016")
    raw, template = [None] * len(X), [None] * len(X)
    for s in np.unique(subject):
        rows = np.flatnonzero(subject == s)
        trials = align_trials(read_trials(X[rows], ch_names=ch_names, sfreq=sfreq, units="uV"))
        for i, a, b in zip(rows, window_power(trials.data, int(sfreq / 2)), window_power(
                to_template(trials, make_channel_map(trials.ch_names)), 100)):
            raw[i], template[i] = a, b
    raw, template = np.stack(raw), np.stack(template)
    raw_freqs = np.fft.rfftfreq(int(sfreq / 2), 1 / sfreq)
    band = (raw_freqs >= 5) & (raw_freqs <= 45)
    bins = slice(2, 23)  # 4-44 Hz at 200 Hz with 100-sample windows
    recorded = [TEMPLATE_CH_NAMES.index(name) for name in ch_names]
    rows = {
        "recorded channels, 5-45 Hz, before the template": np.log(raw[..., band]),
        "recorded channels' template rows, 4-44 Hz": np.log(template[:, recorded, bins]),
        "all 65 template rows, 4-44 Hz": np.log(template[..., bins]),
        "mean over the 65 template rows, 4-44 Hz": np.log(template[..., bins].mean(axis=1)),
    }
    for name, features in rows.items():
        scores = score(features.reshape(len(X), -1), y, subject, split)
        print(f"{name}: {np.mean(list(scores.values())):.3f} ("
              + ", ".join(f"s{s} {v:.3f}" for s, v in scores.items()) + ")", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
