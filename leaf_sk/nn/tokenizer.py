"""The LEAF tokenizer: one token per 0.5-s window of all channels."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Tokenizer(nn.Module):
    """Temporal conv, spatial conv across all electrodes, BatchNorm, GELU, max-pool, dropout.

    The two convolutions are linear and adjacent, so ``forward`` composes them into one
    convolution with kernel ``(n_channels, temporal_kernel)`` computed from the two stored
    weights at every call: the parameters and their gradients are exactly those of the
    unfused pair (``enc_conv.0`` and ``enc_conv.1``, the release's checkpoint names).

    Parameters
    ----------
    config : LeafConfig
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        k = config.temporal_kernel
        self.enc_conv = nn.Sequential(
            nn.Conv2d(1, config.n_filters, (1, k), padding=(0, k // 2)),
            nn.Conv2d(config.n_filters, config.n_filters, (config.n_channels, 1)),
            nn.BatchNorm2d(config.n_filters),
            nn.GELU(),
            nn.MaxPool2d((1, config.pool_size)),
            nn.Dropout(config.tokenizer_dropout),
        )

    def fused_kernel(self):
        """Weight ``(n_filters, n_channels, temporal_kernel)`` and bias ``(n_filters,)`` of both convs."""
        temporal, spatial = self.enc_conv[0], self.enc_conv[1]
        w1 = temporal.weight[:, 0, 0, :]             # (F_in, k)
        w2 = spatial.weight[:, :, :, 0]              # (F_out, F_in, C)
        weight = torch.einsum("oic,ik->ock", w2, w1)
        bias = spatial.bias + torch.einsum("oic,i->o", w2, temporal.bias)
        return weight, bias

    def _windows(self, x):
        cfg = self.config
        batch, n_channels, n_times = x.shape
        n_windows = n_times // cfg.window_samples
        windows = (x[..., : n_windows * cfg.window_samples]
                   .reshape(batch, n_channels, n_windows, cfg.window_samples)
                   .transpose(1, 2)
                   .reshape(batch * n_windows, n_channels, cfg.window_samples))
        return windows, batch, n_windows

    def filter_outputs(self, x):
        """Outputs of the fused spatio-temporal convolution, before BatchNorm and pooling.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)

        Returns
        -------
        Tensor, shape (batch, n_windows, n_filters, window_samples + 1)
        """
        windows, batch, n_windows = self._windows(x)
        weight, bias = self.fused_kernel()
        h = F.conv1d(windows, weight, bias, padding=self.config.temporal_kernel // 2)
        return h.reshape(batch, n_windows, *h.shape[1:])

    def log_power(self, x, eps=1e-6):
        """Log-variance of each filter's output in each window: a band-power readout.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)
        eps : float
            Added to the variance before the log.

        Returns
        -------
        Tensor, shape (batch, n_windows, n_filters)
        """
        return torch.log(self.filter_outputs(x).var(dim=-1) + eps)

    def forward(self, x):
        """Tokenize EEG.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)
            Template-mapped, scaled EEG at 200 Hz.

        Returns
        -------
        tokens : Tensor, shape (batch, n_windows, token_dim)
            Feature-major flattening (index ``filter * samples_per_filter + t``).
        """
        cfg = self.config
        windows, batch, n_windows = self._windows(x)
        weight, bias = self.fused_kernel()
        h = F.conv1d(windows, weight, bias, padding=cfg.temporal_kernel // 2)  # (B*N, F, L)
        h = h.unsqueeze(2)                                                       # (B*N, F, 1, L)
        for layer in self.enc_conv[2:]:
            h = layer(h)
        return h.reshape(batch, n_windows, cfg.token_dim)
