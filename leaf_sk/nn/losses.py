"""Spectral perturbation and the STR objectives (LEAF_SPEC.md section 5)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def remove_band(x, f_low, band_width=6.0, sfreq=200.0):
    """Zero one frequency band of every channel.

    Parameters
    ----------
    x : Tensor, shape (..., n_times)
        Signal in time; the FFT runs over the last axis in float32.
    f_low : float or Tensor, shape (batch,)
        Lower band edge in Hz; bins with ``f_low <= f < f_low + band_width`` are zeroed.
        A tensor gives one band per trial (the first axis).
    band_width : float
        Width of the removed band in Hz.
    sfreq : float
        Sampling rate in Hz.

    Returns
    -------
    Tensor, same shape and dtype as ``x``.
    """
    n_times = x.shape[-1]
    spectrum = torch.fft.rfft(x.float(), dim=-1)
    freqs = torch.fft.rfftfreq(n_times, d=1.0 / sfreq).to(x.device)
    f_low = torch.as_tensor(f_low, dtype=freqs.dtype, device=x.device)
    if f_low.dim() == 1:
        f_low = f_low.reshape(-1, *([1] * (x.dim() - 1)))
    keep = ~((freqs >= f_low) & (freqs < f_low + band_width))
    return torch.fft.irfft(spectrum * keep, n=n_times, dim=-1).to(x.dtype)


def draw_token_mask(shape, prob, device=None, generator=None):
    """Bernoulli(prob) mask of tokens to replace, shape ``shape`` (batch, n_windows), bool."""
    return torch.rand(shape, device=device, generator=generator) < prob


def str_losses(recon_contextual, recon_causal, clean, window_samples):
    """The two STR objectives, and the loss of predicting zeros for each.

    Parameters
    ----------
    recon_contextual : Tensor, shape (batch, n_channels, n_windows * window_samples)
    recon_causal : Tensor, shape (batch, n_channels, n_windows * window_samples)
        Decoded causal outputs; position ``i`` predicts window ``i + 1``.
    clean : Tensor, shape (batch, n_channels, n_windows * window_samples)
    window_samples : int

    Returns
    -------
    Tensor, shape (4,)
        ``[L_S, L_T, zero_S, zero_T]``: mean squared errors, and the same errors for an
        all-zero prediction (the mean square of each target).
    """
    w = window_samples
    target_next = clean[..., w:]
    loss_s = F.mse_loss(recon_contextual.float(), clean.float())
    loss_t = F.mse_loss(recon_causal[..., :-w].float(), target_next.float())
    return torch.stack([loss_s, loss_t, clean.float().pow(2).mean(), target_next.float().pow(2).mean()])
