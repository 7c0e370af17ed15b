"""Two convolutional networks for EEG trials, trained from scratch: the benchmark's baselines.

:class:`ShallowFBCSPNet` (Schirrmeister et al. 2017) and :class:`EEGNet` (EEGNet-4,2, Lawhern
et al. 2018), written from the papers. Plain PyTorch: they take a float tensor of trials
``(batch, n_chans, n_times)`` and return one logit per class ``(batch, n_outputs)``; input
scaling, training and the scikit-learn interface are :mod:`leaf_sk.baselines`' job.

Temporal lengths (kernels, pools) are numbers of samples. The defaults are the papers', at
the papers' sampling rates (``REFERENCE_SFREQ``); ``lengths_at(sfreq)`` gives them scaled to
another rate, so that a kernel keeps its duration in seconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _scaled(samples, ratio):
    """``samples`` times ``ratio``, rounded, at least 1."""
    return max(1, int(round(samples * ratio)))


def _max_norm_(weight, max_norm):
    """Rescale, in place, each output unit's incoming weights to an L2 norm of at most
    ``max_norm`` (Keras' ``max_norm`` constraint; the first axis indexes the output units)."""
    with torch.no_grad():
        weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=max_norm))


class ShallowFBCSPNet(nn.Module):
    """Shallow ConvNet of Schirrmeister et al. (2017), doi:10.1002/hbm.23730.

    A learned filter-bank common spatial pattern: temporal convolution, spatial convolution
    (no non-linearity between them), batch normalisation, squaring, mean pooling, logarithm,
    dropout and a dense classifier. The temporal and the spatial convolution are applied as
    one convolution whose kernel is their product (the same function and gradients as two
    convolutions in a row, at the cost of the first alone).

    Parameters
    ----------
    n_chans : int
        EEG channels of the input.
    n_outputs : int
        Classes.
    n_times : int
        Samples of each trial; at least ``filter_time_length + pool_time_length - 1``.
    n_filters_time : int
        Temporal filters.
    filter_time_length : int
        Temporal kernel length, samples (25, i.e. 100 ms at 250 Hz).
    n_filters_spat : int
        Spatial filters.
    pool_time_length, pool_time_stride : int
        Mean-pooling window and stride, samples (75 and 15: 300 ms and 60 ms at 250 Hz).
    drop_prob : float
        Dropout probability before the classifier.
    batch_norm_momentum : float
        Momentum of the running statistics of the batch normalisation.

    Attributes
    ----------
    n_pooled : int
        Time steps after pooling (the classifier sees ``n_filters_spat * n_pooled`` features).
    """

    #: Sampling rate, Hz, of the paper's lengths (the defaults).
    REFERENCE_SFREQ = 250.0

    def __init__(self, n_chans, n_outputs, n_times, *, n_filters_time=40, filter_time_length=25,
                 n_filters_spat=40, pool_time_length=75, pool_time_stride=15, drop_prob=0.5,
                 batch_norm_momentum=0.1):
        super().__init__()
        n_conv = n_times - filter_time_length + 1
        if n_conv < pool_time_length:
            raise ValueError(
                "ShallowFBCSPNet needs trials of at least "
                f"{filter_time_length + pool_time_length - 1} samples (temporal kernel "
                f"{filter_time_length} + pooling window "
                f"{pool_time_length} - 1), got {n_times}; pass longer trials or shorter "
                "filter_time_length / pool_time_length.")
        self.n_pooled = (n_conv - pool_time_length) // pool_time_stride + 1
        # Shapes as a (out, in, kernel) convolution weight, for their fans in Xavier's rule.
        self.temporal_weight = nn.Parameter(torch.empty(n_filters_time, 1, filter_time_length))
        self.temporal_bias = nn.Parameter(torch.zeros(n_filters_time))
        self.spatial_weight = nn.Parameter(torch.empty(n_filters_spat, n_filters_time, n_chans))
        self.batch_norm = nn.BatchNorm1d(n_filters_spat, momentum=batch_norm_momentum)
        self.pool = nn.AvgPool1d(pool_time_length, pool_time_stride)
        self.dropout = nn.Dropout(drop_prob)
        self.classifier = nn.Linear(n_filters_spat * self.n_pooled, n_outputs)
        for weight in (self.temporal_weight, self.spatial_weight, self.classifier.weight):
            nn.init.xavier_uniform_(weight)
        nn.init.zeros_(self.classifier.bias)

    @classmethod
    def lengths_at(cls, sfreq):
        """The paper's temporal lengths in samples at ``sfreq`` Hz (same durations).

        Returns
        -------
        dict
            ``filter_time_length``, ``pool_time_length`` and ``pool_time_stride``.
        """
        ratio = float(sfreq) / cls.REFERENCE_SFREQ
        return {"filter_time_length": _scaled(25, ratio), "pool_time_length": _scaled(75, ratio),
                "pool_time_stride": _scaled(15, ratio)}

    def forward(self, x):
        """``(batch, n_chans, n_times)`` float to logits ``(batch, n_outputs)``."""
        # spatial (s, f, c) after temporal (f, k): one kernel (s, c, k); the temporal bias
        # passes through the spatial filters.
        kernel = torch.einsum("sfc,fk->sck", self.spatial_weight, self.temporal_weight[:, 0])
        bias = torch.einsum("sfc,f->s", self.spatial_weight, self.temporal_bias)
        h = self.batch_norm(F.conv1d(x, kernel, bias))
        h = torch.log(torch.clamp(self.pool(h * h), min=1e-6))
        return self.classifier(self.dropout(h).flatten(1))


def _same_padding(x, kernel_length):
    """Zeros around the last axis so that a convolution keeps its length ("same" padding,
    the extra zero of an even kernel on the right, as in PyTorch and Keras)."""
    return F.pad(x, ((kernel_length - 1) // 2, kernel_length // 2))


def _smooth_length(n):
    """The smallest ``2**a * 3**b * 5**c`` at least ``n``: a length the FFT handles fast."""
    while True:
        rest = n
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return n
        n += 1


def _padded_moments(xp, n_times, kernel_length):
    """First and second moments of every sample window that a temporal kernel meets.

    For ``z[t] = sum_j w[j] * xp[t + j]`` over ``t < n_times`` and every row of ``xp``,
    ``sum z = w @ first`` and ``sum z**2 = w @ second @ w``: the statistics that a batch
    normalisation of ``z`` needs, without computing ``z``. ``second`` comes from the
    autocorrelation (by FFT) less the products that fall outside the windows, which lie in
    the first and last ``kernel_length - 1`` samples.

    Parameters
    ----------
    xp : torch.Tensor, shape (n_rows, n_times + kernel_length - 1)
        Zero-padded signals.
    n_times, kernel_length : int

    Returns
    -------
    first : torch.Tensor, shape (kernel_length,)
        float64; ``first[j] = sum of xp[:, j:j + n_times]``.
    second : torch.Tensor, shape (kernel_length, kernel_length)
        float64; ``second[i, j] = sum of xp[:, i:i + n_times] * xp[:, j:j + n_times]``.
    """
    k = kernel_length
    xp = xp.detach().double()
    n_rows, length = xp.shape
    cumulative = F.pad(xp.sum(0).cumsum(0), (1, 0))
    first = cumulative[n_times:n_times + k] - cumulative[:k]
    n_fft = _smooth_length(length + k - 1)  # no circular wrap-around for lags below k
    power = torch.view_as_real(torch.fft.rfft(xp, n=n_fft)).square().sum((0, 2))
    lagged = torch.fft.irfft(power, n=n_fft)[:k]
    extended = F.pad(xp, (0, k - 1))

    def products(start):
        """``[s, d]``: sum over rows of ``xp[:, start + s] * xp[:, start + s + d]``, s < k - 1."""
        if k == 1:
            return xp.new_zeros(0, 1)
        windows = extended[:, start:start + 2 * k - 2].unfold(1, k, 1)
        return torch.einsum("ns,nsd->sd", extended[:, start:start + k - 1], windows)

    zero = xp.new_zeros(1, k)
    before = torch.cat([zero, products(0)]).cumsum(0)  # [i, d]: the sum over s < i
    after = torch.cat([products(n_times).flip(0).cumsum(0).flip(0), zero])  # s >= n_times + i
    diagonals = lagged - before - after  # [i, d]: second[i, i + d]
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    second = diagonals[torch.minimum(i, j), (j - i).abs()]
    return first, second


class EEGNet(nn.Module):
    """EEGNet-4,2 of Lawhern et al. (2018), doi:10.1088/1741-2552/aace8c.

    Temporal convolution (``F1`` band-pass-like filters), batch normalisation, depthwise
    spatial convolution (``D`` spatial filters per temporal filter, max-norm 1), batch
    normalisation, ELU, mean pooling by ``pool1``, dropout; separable convolution (depthwise
    temporal, then pointwise to ``F2`` maps), batch normalisation, ELU, mean pooling by
    ``pool2``, dropout; dense classifier (max-norm 0.25). Convolutions have no bias, as in
    the paper; temporal convolutions keep the length ("same" padding, applied in ``forward``).

    The first three layers are linear along the channels, so they are computed in another
    order with the same result: spatial filters first, then the temporal kernels on the
    ``F1 * D`` spatially filtered signals, with the batch statistics of the temporal
    convolution's output taken from the moments of the input (:func:`_padded_moments`).
    This avoids the ``F1 x n_chans`` maps of the temporal convolution, which dominate the
    cost of the plain order.

    Parameters
    ----------
    n_chans : int
        EEG channels of the input.
    n_outputs : int
        Classes.
    n_times : int
        Samples of each trial; at least ``pool1 * pool2``.
    F1, D, F2 : int
        Temporal filters, spatial filters per temporal filter, pointwise filters.
    kernel_length : int
        Temporal kernel length, samples (64, i.e. 0.5 s at 128 Hz).
    pool1 : int
        First pooling factor (4 at 128 Hz: the separable convolution then runs at 32 Hz).
    separable_kernel_length : int
        Kernel of the depthwise temporal convolution, samples after ``pool1`` (16: 0.5 s).
    pool2 : int
        Second pooling factor, samples after ``pool1``.
    drop_prob : float
        Dropout probability (the paper: 0.5 within subject, 0.25 across subjects).
    spatial_max_norm, dense_max_norm : float or None
        Max-norm of each spatial filter and of each class's dense weights (None: none).
    batch_norm_momentum : float
        Momentum of the running statistics of every batch normalisation, which only
        prediction uses. PyTorch's default, not the paper's 0.01 (Keras' 0.99): that one
        assumes hundreds of epochs, and after the few hundred steps of a small fit it left
        the running statistics far from the data's and the predictions at chance.
    batch_norm_eps : float
        Keras' default, as in the paper's code.

    Attributes
    ----------
    n_pooled : int
        Time steps after both poolings (the classifier sees ``F2 * n_pooled`` features).
    """

    #: Sampling rate, Hz, of the paper's lengths (the defaults).
    REFERENCE_SFREQ = 128.0

    def __init__(self, n_chans, n_outputs, n_times, *, F1=8, D=2, F2=16, kernel_length=64,
                 pool1=4, separable_kernel_length=16, pool2=8, drop_prob=0.25,
                 spatial_max_norm=1.0, dense_max_norm=0.25, batch_norm_momentum=0.1,
                 batch_norm_eps=1e-3):
        super().__init__()
        self.n_pooled = n_times // pool1 // pool2
        if self.n_pooled < 1:
            raise ValueError(
                f"EEGNet needs trials of at least pool1 * pool2 = {pool1 * pool2} samples, got "
                f"{n_times}; pass longer trials or smaller pool1 / pool2.")
        self.D = D
        self.spatial_max_norm = spatial_max_norm
        self.dense_max_norm = dense_max_norm

        def batch_norm(n):
            return nn.BatchNorm2d(n, momentum=batch_norm_momentum, eps=batch_norm_eps)

        # The layers of the plain order (their parameters and state), applied in forward.
        self.temporal = nn.Conv2d(1, F1, (1, kernel_length), bias=False)
        self.batch_norm1 = batch_norm(F1)
        self.spatial = nn.Conv2d(F1, F1 * D, (n_chans, 1), groups=F1, bias=False)
        self.batch_norm2 = batch_norm(F1 * D)
        self.pool1 = nn.AvgPool2d((1, pool1))
        self.separable_depthwise = nn.Conv2d(F1 * D, F1 * D, (1, separable_kernel_length),
                                             groups=F1 * D, bias=False)
        self.separable_pointwise = nn.Conv2d(F1 * D, F2, 1, bias=False)
        self.batch_norm3 = batch_norm(F2)
        self.pool2 = nn.AvgPool2d((1, pool2))
        self.dropout = nn.Dropout(drop_prob)
        self.classifier = nn.Linear(F2 * self.n_pooled, n_outputs)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)  # Keras' default, as in the paper's code
        nn.init.zeros_(self.classifier.bias)

    @classmethod
    def lengths_at(cls, sfreq):
        """The paper's temporal lengths in samples at ``sfreq`` Hz (same durations).

        The temporal kernel and ``pool1`` scale with the rate, so that the separable block
        runs at about 32 Hz whatever the input rate; its kernel and ``pool2`` stay.

        Returns
        -------
        dict
            ``kernel_length`` and ``pool1``.
        """
        ratio = float(sfreq) / cls.REFERENCE_SFREQ
        return {"kernel_length": _scaled(64, ratio), "pool1": _scaled(4, ratio)}

    def _temporal_norm_spatial(self, x):
        """temporal convolution, batch_norm1 and spatial convolution, spatial filters first.

        ``(batch, n_chans, n_times)`` to ``(batch, F1 * D, n_times)``.
        """
        n_batch, n_chans, n_times = x.shape
        k = self.temporal.kernel_size[1]
        xp = _same_padding(x, k)
        kernels = self.temporal.weight[:, 0, 0]  # (F1, k)
        spatial = self.spatial.weight[:, 0, :, 0]  # (F1 * D, n_chans); row o uses kernel o // D
        norm = self.batch_norm1
        if self.training:
            first, second = _padded_moments(xp.reshape(-1, xp.shape[-1]), n_times, k)
            count = n_batch * n_chans * n_times
            w = kernels.double()
            mean = w @ first / count
            var = torch.einsum("fi,ij,fj->f", w, second, w) / count - mean ** 2
            with torch.no_grad():
                norm.num_batches_tracked += 1
                m = norm.momentum
                norm.running_mean.mul_(1 - m).add_(m * mean.to(x.dtype))
                norm.running_var.mul_(1 - m).add_(m * var.to(x.dtype) * count / max(1, count - 1))
            mean, var = mean.to(x.dtype), var.to(x.dtype)
        else:
            mean, var = norm.running_mean, norm.running_var
        scale = norm.weight / torch.sqrt(var + norm.eps)  # (F1,)
        shift = norm.bias - scale * mean
        filtered = torch.einsum("oc,bcl->bol", spatial, xp)
        per_output = kernels.repeat_interleave(self.D, 0)[:, None]  # (F1 * D, 1, k)
        convolved = F.conv1d(filtered, per_output, groups=len(spatial))
        return (scale.repeat_interleave(self.D)[:, None] * convolved
                + (shift.repeat_interleave(self.D) * spatial.sum(1))[:, None])

    def forward(self, x):
        """``(batch, n_chans, n_times)`` float to logits ``(batch, n_outputs)``."""
        if self.spatial_max_norm is not None:
            _max_norm_(self.spatial.weight, self.spatial_max_norm)
        if self.dense_max_norm is not None:
            _max_norm_(self.classifier.weight, self.dense_max_norm)
        h = self._temporal_norm_spatial(x).unsqueeze(2)  # (batch, F1 * D, 1, n_times)
        h = self.dropout(self.pool1(F.elu(self.batch_norm2(h))))
        h = _same_padding(h, self.separable_depthwise.kernel_size[1])
        h = self.separable_pointwise(self.separable_depthwise(h))
        h = self.dropout(self.pool2(F.elu(self.batch_norm3(h))))
        return self.classifier(h.flatten(1))
