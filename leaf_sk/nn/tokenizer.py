"""The LEAF tokenizer: one token per 0.5-s window of all channels."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


# Windows whose unfolded rows go through one matrix product at inference: 16 windows of
# base trials make a (1616, 2600) float32 block (17 MB), whatever the batch size.
_WINDOWS_PER_PRODUCT = 16
# BatchNorm scales (weight / sqrt(running_var + eps)) at or below this are not divided back out
# of the folded outputs (Tokenizer.log_power).
_SMALLEST_FOLDED_SCALE = 1e-3


class Tokenizer(nn.Module):
    """Temporal conv, spatial conv across all electrodes, BatchNorm, GELU, max-pool, dropout.

    The two convolutions are linear and adjacent, so ``forward`` composes them into one
    convolution with kernel ``(n_channels, temporal_kernel)`` computed from the two stored
    weights at every call: the parameters and their gradients are exactly those of the
    unfused pair (``enc_conv.0`` and ``enc_conv.1``, the release's checkpoint names).

    In eval mode the eval-mode BatchNorm is folded in as well, giving one filter bank
    (:meth:`folded_bank`), and every window of the batch goes through it as a matrix product
    of unfolded windows. Without gradients the bank is computed once and kept until a weight
    or BatchNorm statistic changes (in place or replaced); it is not part of the state dict
    and is not pickled.

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

    def _fold_sources(self):
        conv0, conv1, norm = self.enc_conv[0], self.enc_conv[1], self.enc_conv[2]
        return (conv0.weight, conv0.bias, conv1.weight, conv1.bias, norm.weight, norm.bias,
                norm.running_mean, norm.running_var)

    def _fold(self):
        weight, bias = self.fused_kernel()
        norm = self.enc_conv[2]
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = (bias - norm.running_mean) * scale + norm.bias
        # Row k * n_channels + c holds tap k of channel c: the order of an unfolded window.
        bank = (weight * scale[:, None, None]).permute(2, 1, 0).reshape(-1, len(scale))
        # The folded outputs are the filters' times the scale, plus a shift: their variance over
        # the scale squared is the filters'. A scale near zero leaves too little to divide back.
        power_scale = scale if bool((scale.abs() > _SMALLEST_FOLDED_SCALE).all()) else None
        return bank.contiguous(), bias, power_scale

    def folded_bank(self):
        """Both convolutions and eval-mode BatchNorm as one filter bank.

        Returns
        -------
        bank : Tensor, shape (temporal_kernel * n_channels, n_filters)
            Row ``k * n_channels + c`` holds tap ``k`` of channel ``c``.
        bias : Tensor, shape (n_filters,)
        """
        return self._folded()[:2]

    def _folded(self):
        """:meth:`folded_bank` and the BatchNorm scale, shape (n_filters,), or None where a
        scale is too small to divide the bank's outputs by."""
        sources = self._fold_sources()
        if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
            return self._fold()
        stamp = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in sources)
        cache = self.__dict__.get("_fold_cache")
        if cache is None or cache[0] != stamp:
            # Plain tensors (not inference tensors), so that the bank can enter autograd
            # graphs of the input (e.g. saliency) after an inference-mode call.
            with torch.inference_mode(False), torch.no_grad():
                folded = self._fold()
            # The sources are held so that no new tensor can take their addresses.
            cache = (stamp, tuple(t.detach() for t in sources), *folded)
            self.__dict__["_fold_cache"] = cache
        return cache[2:]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_fold_cache", None)
        return state

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
        Tensor, shape (batch, n_windows, n_filters, conv_samples)
            ``conv_samples`` is ``window_samples + 1`` for an even ``temporal_kernel``.
        """
        windows, batch, n_windows = self._windows(x)
        weight, bias = self.fused_kernel()
        h = F.conv1d(windows, weight, bias, padding=self.config.temporal_kernel // 2)
        return h.reshape(batch, n_windows, *h.shape[1:])

    def log_power(self, x, eps=1e-6):
        """Log-variance of each filter's output in each window: a band-power readout.

        In eval mode it is read from the folded bank's outputs (:meth:`tokens_and_log_power`).

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)
        eps : float
            Added to the variance before the log.

        Returns
        -------
        Tensor, shape (batch, n_windows, n_filters)
        """
        if self.training:
            return self._log_power_by_convolution(x, eps)
        return self._folded_outputs_and_log_power(x, eps)[1]

    def tokens_and_log_power(self, x, eps=1e-6):
        """Tokens (:meth:`forward`) and :meth:`log_power` of the same input.

        In eval mode both come from one matrix product of the unfolded windows with the
        folded bank (benchmarks/speed.py: x1.8 for the packaged classifier's ``predict``); in
        training mode, and where a BatchNorm scale is near zero, the log-power is computed
        apart.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)
        eps : float
            As in :meth:`log_power`.

        Returns
        -------
        tokens : Tensor, shape (batch, n_windows, token_dim)
        log_power : Tensor, shape (batch, n_windows, n_filters)
        """
        if self.training:
            return self(x), self._log_power_by_convolution(x, eps)
        outputs, power = self._folded_outputs_and_log_power(x, eps)
        return self._tokens_of(*outputs), power

    def _log_power_by_convolution(self, x, eps):
        return torch.log(self.filter_outputs(x).var(dim=-1) + eps)

    def _folded_outputs_and_log_power(self, x, eps):
        """:meth:`_folded_outputs` and the log-power read from them (eval mode)."""
        bank, bias, scale = self._folded()
        outputs = self._folded_outputs(x, bank, bias)
        if scale is None:
            return outputs, self._log_power_by_convolution(x, eps)
        h, batch, n_windows = outputs
        variance = h.var(dim=1) / scale ** 2                                # (B*N, F)
        return outputs, torch.log(variance + eps).reshape(batch, n_windows, -1)

    def unfused(self, x):
        """The release's computation: the two convolutions, BatchNorm, GELU and pooling as layers.

        Slower; kept as the reference of the fused paths.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)

        Returns
        -------
        Tensor, shape (batch, n_windows, token_dim)
        """
        windows, batch, n_windows = self._windows(x)
        return self.enc_conv(windows.unsqueeze(1)).reshape(batch, n_windows, self.config.token_dim)

    def _folded_outputs(self, x, bank, bias):
        """Eval-mode BatchNorm outputs of the fused filters at every output sample, before GELU.

        One matrix product of unfolded windows with the folded bank per block of windows.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)
        bank, bias : Tensor
            As :meth:`folded_bank` returns them.

        Returns
        -------
        h : Tensor, shape (batch * n_windows, conv_samples, n_filters)
        batch, n_windows : int
        """
        cfg = self.config
        windows, batch, n_windows = self._windows(x)
        n_rows, n_channels, width = windows.shape
        kernel, left = cfg.temporal_kernel, cfg.temporal_kernel // 2
        # Time-major, zero-padded windows: the taps of output t, for all channels, are the
        # contiguous run [t * C, (t + kernel) * C) of a window's memory.
        padded = windows.new_zeros(n_rows, cfg.conv_samples + kernel - 1, n_channels)
        padded[:, left:left + width] = windows.transpose(1, 2)
        size = (n_rows, cfg.conv_samples, kernel * n_channels)
        unfolded = padded.as_strided(size, (padded.stride(0), n_channels, 1))
        h = torch.cat([torch.matmul(unfolded[start:start + _WINDOWS_PER_PRODUCT], bank)
                       for start in range(0, n_rows, _WINDOWS_PER_PRODUCT)])
        return h + bias, batch, n_windows

    def _tokens_of(self, h, batch, n_windows):
        """GELU, max-pool and feature-major flattening of :meth:`_folded_outputs`.

        Parameters
        ----------
        h : Tensor, shape (batch * n_windows, conv_samples, n_filters)
        batch, n_windows : int

        Returns
        -------
        Tensor, shape (batch, n_windows, token_dim)
        """
        cfg = self.config
        n_kept = cfg.samples_per_filter * cfg.pool_size   # outputs the pooling reads
        h = F.gelu(h[:, :n_kept])
        h = h.reshape(len(h), cfg.samples_per_filter, cfg.pool_size, -1).amax(dim=2)
        return h.transpose(1, 2).reshape(batch, n_windows, cfg.token_dim)

    def tokenize_together(self, xs):
        """Tokens of batches whose lengths may differ, from one pass over all their windows.

        In training, BatchNorm then normalises every batch's windows with one set of batch
        statistics, as it does for one batch of all the trials.

        Parameters
        ----------
        xs : sequence of Tensor, shapes (batch_i, n_channels, n_windows_i * window_samples)

        Returns
        -------
        list of Tensor, shapes (batch_i, n_windows_i, token_dim)
        """
        pieces = [self._windows(x) for x in xs]
        tokens = self(torch.cat([windows for windows, _, _ in pieces]))   # (sum, 1, token_dim)
        out, first = [], 0
        for windows, batch, n_windows in pieces:
            out.append(tokens[first:first + len(windows)].reshape(batch, n_windows, -1))
            first += len(windows)
        return out

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
        if not self.training:
            return self._tokens_of(*self._folded_outputs(x, *self.folded_bank()))
        cfg = self.config
        windows, batch, n_windows = self._windows(x)
        weight, bias = self.fused_kernel()
        h = F.conv1d(windows, weight, bias, padding=cfg.temporal_kernel // 2)  # (B*N, F, L)
        h = h.unsqueeze(2)                                                       # (B*N, F, 1, L)
        for layer in self.enc_conv[2:]:
            h = layer(h)
        return h.reshape(batch, n_windows, cfg.token_dim)
