"""Per-window log power spectra of learned spatial filters (leaf-sk's spectral memory)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._template import TEMPLATE_CH_NAMES, TEMPLATE_SFREQ

SPECTRAL_BAND_HZ = (4.0, 44.0)
# Where steady-state visual evoked potentials are recorded (10-10 sites of the template).
OCCIPITAL_SITES = ("O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8")


def spectral_bins(window_samples, sfreq=TEMPLATE_SFREQ, band=SPECTRAL_BAND_HZ):
    """Real-FFT bins of one window whose frequency lies in ``band``.

    At 200 Hz with 0.5-s windows these are 4, 6, ..., 44 Hz (2-Hz resolution): the mu and beta
    rhythms, and SSVEP stimuli with their second harmonics up to 22 Hz.
    """
    step = sfreq / window_samples
    return range(math.ceil(band[0] / step - 1e-9), math.floor(band[1] / step + 1e-9) + 1)


def window_log_spectrum(x, window_samples, eps=1e-6, tokens="window"):
    """Log power of each row at each kept frequency bin, per non-overlapping window.

    Each window is tapered by a Hann window before its real FFT.

    Parameters
    ----------
    x : Tensor, shape (batch, n_rows, n_windows * window_samples)
        Signals at 200 Hz, scaled (unitless).
    window_samples : int
        Samples per window (100 = 0.5 s at 200 Hz).
    eps : float
        Added to the power before the log.
    tokens : {"window", "trial", "both"}
        One log spectrum per window; one per trial, the log of the power averaged over the
        windows (Welch's estimate, steadier than any single window's); or the windows' then
        the trial's.

    Returns
    -------
    Tensor, shape (batch, n_tokens, n_rows * n_bins)
        ``n_tokens`` is ``n_windows``, 1 or ``n_windows + 1``. Row-major: index
        ``row * n_bins + bin``, bins as in :func:`spectral_bins`.
    """
    batch, n_rows, n_times = x.shape
    n_windows = n_times // window_samples
    windows = x[..., : n_windows * window_samples].reshape(batch, n_rows, n_windows,
                                                            window_samples)
    taper = torch.hann_window(window_samples, periodic=False, dtype=torch.float32,
                              device=x.device)
    spectrum = torch.fft.rfft(windows.float() * taper, dim=-1)
    bins = spectral_bins(window_samples)
    power = spectrum[..., bins.start:bins.stop].abs().square() / window_samples
    parts = []
    if tokens in ("window", "both"):
        parts.append(power)
    if tokens in ("trial", "both"):
        parts.append(power.mean(dim=2, keepdim=True))
    if not parts:
        raise ValueError(f"tokens must be 'window', 'trial' or 'both', got {tokens!r}.")
    log_power = torch.log(torch.cat(parts, dim=2) + eps).to(x.dtype)
    return log_power.transpose(1, 2).reshape(batch, log_power.shape[2], n_rows * len(bins))


class SpectralMemory(nn.Module):
    """Learned spatial filters of the template's channels, then their log power spectra.

    Parameters
    ----------
    config : LeafConfig
        Uses ``n_channels``, ``spectral_filters``, ``spectral_sites`` and ``window_samples``.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        rows = (range(config.n_channels) if config.spectral_sites is None
                else [TEMPLATE_CH_NAMES.index(site) for site in config.spectral_sites])
        self.register_buffer("rows", torch.as_tensor(list(rows), dtype=torch.long),
                             persistent=False)
        self.spatial = nn.Linear(len(self.rows), config.spectral_filters, bias=False)

    def forward(self, x):
        """Spectral tokens before their projection.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)

        Returns
        -------
        Tensor, shape (batch, n_tokens, spectral_dim)
            ``n_tokens`` as ``config.spectral_tokens`` says (see :func:`window_log_spectrum`).
        """
        filtered = torch.einsum("kc,bct->bkt", self.spatial.weight, x[:, self.rows])
        return window_log_spectrum(filtered, self.config.window_samples,
                                   tokens=self.config.spectral_tokens)
