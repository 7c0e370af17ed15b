"""The Instruction-conditioned Q-Former (IQF)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class IQFLayer(nn.Module):
    """Pre-LN query self-attention, cross-attention to the tokens, feed-forward; no dropout."""

    def __init__(self, d_model, n_heads, d_ff):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, queries, tokens):
        h = self.norm1(queries)
        queries = queries + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm2(queries)
        queries = queries + self.cross_attn(h, tokens, tokens, need_weights=False)[0]
        return queries + self.ff(self.norm3(queries))


class QFormer(nn.Module):
    """Instruction-conditioned Q-Former (LEAF_SPEC.md section 6).

    Parameters
    ----------
    config : LeafConfig
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        d = config.d_model
        self.base_queries = nn.Parameter(torch.randn(config.n_queries, d) / 16)
        self.pos_embedding = nn.Parameter(torch.randn(1, 2 * config.max_windows, d))
        self.film = nn.Linear(config.d_text, 2 * d)
        self.layers = nn.ModuleList(
            IQFLayer(d, config.iqf_heads, config.iqf_d_ff) for _ in range(config.iqf_layers))
        self.final_norm = nn.LayerNorm(d)
        self.output_embed = nn.Sequential(
            nn.Flatten(1), nn.Dropout(config.iqf_dropout), nn.Linear(config.n_queries * d, config.d_text))
        if config.power_memory:
            self.power_embed = nn.Sequential(nn.LayerNorm(config.n_filters), nn.Linear(config.n_filters, d))
        if config.spectral_memory:
            self.spectral_embed = nn.Sequential(nn.LayerNorm(config.spectral_dim),
                                                nn.Linear(config.spectral_dim, d))

    def positions(self, n_windows, device=None, first_position=0):
        """Position indices of ``[S_1..S_N, T_1..T_N]``, shape (2 * n_windows,)."""
        idx = torch.arange(first_position, first_position + n_windows, device=device)
        offset = n_windows if self.config.iqf_positions == "contiguous" else self.config.max_windows
        return torch.cat([idx, idx + offset])

    def forward(self, tokens, instruction, power=None, spectrum=None, first_position=0):
        """Embed Tower tokens conditioned on an instruction.

        Parameters
        ----------
        tokens : Tensor, shape (batch, 2 * n_windows, d_model)
        instruction : Tensor, shape (batch, d_text) or (d_text,)
            Unit sentence embedding of the instruction.
        power : Tensor, shape (batch, n_windows, n_filters), optional
            Log band power per window and tokenizer filter; required when
            ``config.power_memory``, refused otherwise.
        spectrum : Tensor, shape (batch, n_spectral_tokens, spectral_dim), optional
            Log power spectra per window or per trial
            (:func:`~leaf_sk.nn.spectral.window_log_spectrum`); required when
            ``config.spectral_memory``, refused otherwise.
        first_position : int
            Window position of the first token pair (0, as in the release; see
            :meth:`Tower.contextual`).

        Returns
        -------
        Tensor, shape (batch, d_text)
            L2-normalised embedding in the text space.
        """
        batch, n_tokens, _ = tokens.shape
        if instruction.dim() == 1:
            # One instruction for every trial: its FiLM parameters are computed once and
            # broadcast, so each trial's output does not depend on the batch around it.
            instruction = instruction.unsqueeze(0)
        gamma, beta = self.film(instruction.to(tokens.dtype)).unsqueeze(1).chunk(2, dim=-1)
        tokens = (1 + gamma) * tokens + beta
        tokens = tokens + self.pos_embedding[:, self.positions(n_tokens // 2, tokens.device,
                                                                first_position)]
        if (power is not None) != self.config.power_memory:
            raise ValueError("QFormer: pass `power` exactly when config.power_memory is True "
                             f"(power_memory={self.config.power_memory}).")
        if (spectrum is not None) != self.config.spectral_memory:
            raise ValueError("QFormer: pass `spectrum` exactly when config.spectral_memory is "
                             f"True (spectral_memory={self.config.spectral_memory}).")
        extra = []
        if power is not None:
            extra.append(self.power_embed(power.to(tokens.dtype)))
        if spectrum is not None:
            extra.append(self.spectral_embed(spectrum.to(tokens.dtype)))
        if extra:
            tokens = torch.cat([tokens, *((1 + gamma) * part + beta for part in extra)], dim=1)
        queries = self.base_queries.unsqueeze(0).expand(batch, -1, -1)
        for layer in self.layers:
            queries = layer(queries, tokens)
        flat, dropout, linear = self.output_embed
        return F.normalize(_rowwise_linear(dropout(flat(self.final_norm(queries))), linear), dim=-1)


def _rowwise_linear(x, linear):
    """``linear(x)`` for ``x`` of shape (batch, in), each row as its own product.

    One (batch, in) matrix product rounds a row differently depending on where it falls in
    the kernel's row blocks; a batch of (1, in) products does not, so a trial's output does
    not depend on its position in the batch.
    """
    weight = linear.weight.T.unsqueeze(0).expand(len(x), -1, -1)
    return torch.baddbmm(linear.bias.view(1, 1, -1), x.unsqueeze(1), weight).squeeze(1)
