"""Whole networks: the STR pretraining module and the instruction-tuned LEAF model."""

from __future__ import annotations

import torch
from torch import nn

from .losses import draw_token_mask, remove_band, str_losses
from .qformer import QFormer
from .spectral import SpectralMemory
from .tower import Tower


class STRPretrainer(nn.Module):
    """The Tower with its STR objectives computed inside ``forward``.

    Computing the loss in the module (not in a criterion module) keeps the criterion free of
    parameters, which is what DDP under Accelerate needs.

    Parameters
    ----------
    config : LeafConfig
    band_width : float
        Width of the removed band, Hz.
    max_band_start : int
        The band's lower edge is drawn uniformly from ``1..max_band_start`` Hz, once per batch.
    sfreq : float
        Sampling rate of the input, Hz.
    """

    def __init__(self, config, band_width=6.0, max_band_start=50, sfreq=200.0):
        super().__init__()
        if not config.reconstruction_heads:
            raise ValueError("STR pretraining rebuilds waveforms with the Tower's reconstruction "
                             "heads, which LeafConfig(reconstruction_heads=False) leaves out; "
                             "pretrain a model with its heads.")
        self.config = config
        self.band_width = band_width
        self.max_band_start = max_band_start
        self.sfreq = sfreq
        self.tower = Tower(config)

    def forward(self, x):
        """STR losses of one batch.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples), n_windows >= 2
            Clean EEG on the template.

        Returns
        -------
        Tensor, shape (4,)
            ``[L_S, L_T, zero_S, zero_T]`` (see :func:`~leaf_sk.nn.losses.str_losses`).
        """
        cfg = self.config
        n_windows = x.shape[-1] // cfg.window_samples
        if n_windows < 2:
            raise ValueError(f"STR pretraining needs at least 2 windows per trial, got {n_windows}.")
        x = x[..., : n_windows * cfg.window_samples]
        # The objective is defined on corrupted input, in training and in evaluation alike
        # (evaluation differs only by dropout and by its seed).
        f_low = int(torch.randint(1, self.max_band_start + 1, ()).item())
        with torch.no_grad():
            perturbed = remove_band(x, f_low, self.band_width, self.sfreq)
        token_mask = draw_token_mask(x.shape[:1] + (n_windows,), cfg.mask_prob, device=x.device)
        tower = self.tower
        tokens = tower.tokenizer(perturbed)
        recon_s = tower.reconstruct(tower.contextual(tokens, token_mask), "mask")
        recon_t = tower.reconstruct(tower.causal(tokens), "next")
        return str_losses(recon_s, recon_t, x, cfg.window_samples)


class LeafModel(nn.Module):
    """Tower plus IQF: EEG and an instruction vector to a unit vector in the text space.

    Parameters
    ----------
    config : LeafConfig
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tower = Tower(config)
        self.qformer = QFormer(config)
        if config.spectral_memory:
            self.spectral = SpectralMemory(config)

    def forward(self, x, instruction, first_position=0, tower_outputs=None):
        """Embed EEG.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples), or a list of them
            A list holds batches whose lengths may differ: their windows are tokenized in one
            pass (in training, one set of BatchNorm statistics for all), then each batch goes
            through the Transformers and the Q-Former at its own length. The rows come back
            in the list's order.
        instruction : Tensor, shape (batch, d_text) or (d_text,), or a list, one per batch
        first_position : int, or a list of int, one per batch
            Positional index of the first window in the Tower and the Q-Former (0 at
            inference, as in the release; set in training by
            ``LeafInstructionTuner(positions=...)``).
        tower_outputs : tuple, optional
            ``tower_outputs(x, first_position)`` computed beforehand (a Tensor ``x`` only): the
            Tower is then not run, as when it is frozen and its outputs are kept between epochs.

        Returns
        -------
        Tensor, shape (batch, d_text), unit rows (``sum(batch_i)`` rows for a list).
        """
        cfg, tokenizer = self.config, self.tower.tokenizer
        if not isinstance(x, (list, tuple)):
            hidden, power = (self.tower_outputs(x, first_position) if tower_outputs is None
                             else tower_outputs)
            return self._readout(x, hidden, power, instruction, first_position)
        if isinstance(first_position, int):
            first_position = [first_position] * len(x)
        tokens = tokenizer.tokenize_together(x) if cfg.tower_memory else [None] * len(x)
        power = [tokenizer.log_power(part) if cfg.power_memory else None for part in x]
        return torch.cat([self._embed(*part) for part in zip(x, tokens, power, instruction,
                                                              first_position)])

    def _tokens_and_power(self, x):
        """The tokenizer's tokens and band power of ``x``, each None where the config has no use."""
        cfg, tokenizer = self.config, self.tower.tokenizer
        if cfg.tower_memory and cfg.power_memory:
            return tokenizer.tokens_and_log_power(x)
        return (tokenizer(x) if cfg.tower_memory else None,
                tokenizer.log_power(x) if cfg.power_memory else None)

    def tower_outputs(self, x, first_position=0):
        """What the Q-Former reads from the Tower.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)
        first_position : int

        Returns
        -------
        hidden : Tensor, shape (batch, 2 * n_windows, d_model)
            Both branches' outputs (no tokens, shape (batch, 0, d_model), without
            ``tower_memory``).
        power : Tensor of shape (batch, n_windows, n_filters), or None without ``power_memory``
            Log band power of the tokenizer's filters.
        """
        tokens, power = self._tokens_and_power(x)
        return self._encoded(x, tokens, first_position), power

    def _encoded(self, x, tokens, first_position):
        if not self.config.tower_memory:
            return x.new_zeros(len(x), 0, self.config.d_model)
        return self.tower.encode(tokens, first_position)

    def _embed(self, x, tokens, power, instruction, first_position):
        return self._readout(x, self._encoded(x, tokens, first_position), power, instruction,
                             first_position)

    def _readout(self, x, hidden, power, instruction, first_position):
        spectrum = self.spectral(x) if self.config.spectral_memory else None
        return self.qformer(hidden, instruction, power, spectrum, first_position)


class LeafEnsemble(nn.Module):
    """Several LEAF models of one config whose embeddings are averaged.

    The mean of the members' unit embeddings has, with any unit label-text prototype, the
    members' mean cosine as its dot product: matching it to prototypes averages the members'
    similarities (an output ensemble; Lakshminarayanan et al. 2017).

    Parameters
    ----------
    config : LeafConfig
        Every member's config.
    n_members : int
    """

    def __init__(self, config, n_members):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(LeafModel(config) for _ in range(n_members))

    def forward(self, x, instruction, tower_outputs=None):
        """Inputs as :meth:`LeafModel.forward` (``tower_outputs`` as :meth:`tower_outputs`
        gives them); the mean of the members' unit rows, shape (batch, d_text) (norm at most 1)."""
        total = self.members[0](x, instruction, tower_outputs=_member_part(tower_outputs, 0))
        for i, member in enumerate(self.members[1:], start=1):
            total = total + member(x, instruction, tower_outputs=_member_part(tower_outputs, i))
        return total / len(self.members)

    def tower_outputs(self, x):
        """Every member's :meth:`LeafModel.tower_outputs`, stacked on dimension 1.

        Returns
        -------
        hidden : Tensor, shape (batch, n_members, 2 * n_windows, d_model)
        power : Tensor of shape (batch, n_members, n_windows, n_filters), or None
        """
        outputs = [member.tower_outputs(x) for member in self.members]
        power = None if outputs[0][1] is None else torch.stack([p for _, p in outputs], 1)
        return torch.stack([hidden for hidden, _ in outputs], 1), power


def _member_part(tower_outputs, i):
    """Member ``i``'s part of :meth:`LeafEnsemble.tower_outputs` (None stays None)."""
    if tower_outputs is None:
        return None
    hidden, power = tower_outputs
    return hidden[:, i], None if power is None else power[:, i]


def members_of(model):
    """The single models of a :class:`LeafEnsemble`, or ``[model]`` for one model."""
    return list(model.members) if isinstance(model, LeafEnsemble) else [model]


def crop_averaged(fn, x, n_crops, window_samples=100):
    """Mean of ``fn`` over the whole trial and ``n_crops`` crops one window shorter.

    The crops start at ``n_crops`` evenly spaced offsets from 0 to one window, so their token
    windows fall between those of the whole trial: averaging over them makes the output depend
    less on where the 0.5-s token grid happens to cut the trial (test-time augmentation, as in
    cropped decoding). Each trial is processed on its own, so the mean of a trial does not
    depend on the batch around it.

    Parameters
    ----------
    fn : callable
        Tensor of shape (batch, n_channels, n_times) to a tensor of shape (batch, ...).
    x : Tensor, shape (batch, n_channels, n_windows * window_samples)
    n_crops : int
        Crops averaged with the whole trial; 0 is ``fn(x)`` alone. Trials of fewer than two
        windows have no shorter crop and get ``fn(x)``.
    window_samples : int

    Returns
    -------
    Tensor, shape of ``fn(x)``.
    """
    n_windows = x.shape[-1] // window_samples
    if n_crops < 1 or n_windows < 2:
        return fn(x)
    length = (n_windows - 1) * window_samples
    offsets = ([0] if n_crops == 1 else
               [round(i * window_samples / (n_crops - 1)) for i in range(n_crops)])
    total = fn(x[..., : n_windows * window_samples])
    for offset in offsets:
        total = total + fn(x[..., offset: offset + length])
    return total / (len(offsets) + 1)
