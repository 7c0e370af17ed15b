"""Training-time augmentation of EEG trials (leaf-sk's options, not the paper's)."""

from __future__ import annotations

import torch


def phase_randomized(x, phases):
    """Fourier-transform surrogates of trials: every frequency's phase shifted at random.

    The same shift at a frequency on every channel keeps each trial's amplitude spectrum and
    cross-spectrum (band power and spatial covariance per frequency, what motor imagery and SSVEP
    are decoded from) and scrambles its time course (the FT surrogate of Schwabedal et al. 2019,
    as braindecode's ``FTSurrogate`` with ``channel_indep=False``).

    Parameters
    ----------
    x : Tensor of shape (n_trials, n_channels, n_times)
    phases : Tensor of shape (n_trials, n_times // 2 + 1)
        Phase shifts in radians, one per trial and real-FFT bin. The zero-frequency bin (and
        the Nyquist bin of an even ``n_times``) is left unshifted so that the result stays real.

    Returns
    -------
    Tensor of the shape and dtype of ``x``
    """
    n_times = x.shape[-1]
    if phases.shape != (x.shape[0], n_times // 2 + 1):
        raise ValueError(f"phases must have shape {(x.shape[0], n_times // 2 + 1)} for trials of "
                         f"shape {tuple(x.shape)}, got {tuple(phases.shape)}.")
    phases = phases.to(torch.float64).clone()
    phases[:, 0] = 0.0
    if n_times % 2 == 0:
        phases[:, -1] = 0.0
    spectrum = torch.fft.rfft(x.to(torch.float64), dim=-1)
    shifted = spectrum * torch.polar(torch.ones_like(phases), phases)[:, None, :]
    return torch.fft.irfft(shifted, n=n_times, dim=-1).to(x.dtype)
