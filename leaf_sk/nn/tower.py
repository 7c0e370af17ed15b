"""The LEAF Tower: tokenizer plus a contextual and a causal Transformer branch."""

from __future__ import annotations

import torch
from torch import nn

from .tokenizer import Tokenizer

BRANCHES = ("mask", "next")


def _transformer(config):
    layer = nn.TransformerEncoderLayer(
        config.d_model, config.n_heads, config.d_ff, dropout=config.dropout,
        activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, config.n_layers, norm=nn.LayerNorm(config.d_model),
                                 enable_nested_tensor=False)


def _reconstruction_head(config):
    return nn.Sequential(
        nn.Linear(config.d_model, config.n_channels * config.recon_hidden),
        nn.GELU(),
        nn.Unflatten(-1, (config.n_channels, config.recon_hidden)),
        nn.Linear(config.recon_hidden, config.window_samples),
    )


class Tower(nn.Module):
    """EEG encoder of LEAF (LEAF_SPEC.md section 4).

    Attribute names follow the release's checkpoint (``tokenizer.enc_conv``, ``mask_inProj``,
    ``next_transformer``, ...) so that its weights load strictly.

    Parameters
    ----------
    config : LeafConfig
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        d = config.d_model
        self.tokenizer = Tokenizer(config)
        self.pos_embedding = nn.Parameter(torch.randn(1, config.max_windows, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        causal = torch.triu(torch.full((config.max_windows, config.max_windows), float("-inf")), 1)
        self.register_buffer("causal_mask", causal)
        self.mask_inProj = nn.Linear(config.token_dim, d)
        self.next_inProj = nn.Linear(config.token_dim, d)
        self.mask_transformer = _transformer(config)
        self.next_transformer = _transformer(config)
        if config.reconstruction_heads:
            self.mask_outProj = _reconstruction_head(config)
            self.next_outProj = _reconstruction_head(config)

    def _positions(self, n_windows, first_position):
        """Positional embeddings of ``n_windows`` windows from ``first_position``, shape
        (1, n_windows, d_model); a clear error when the table ends before them."""
        if n_windows < 1 or first_position + n_windows > self.config.max_windows:
            raise ValueError(
                f"The Tower takes 1 to {self.config.max_windows - first_position} windows of "
                f"{self.config.window_samples} samples (from position {first_position}), got "
                f"{n_windows}; crop or segment the input.")
        return self.pos_embedding[:, first_position:first_position + n_windows]

    def contextual(self, tokens, token_mask=None, first_position=0):
        """Run the bidirectional branch.

        Parameters
        ----------
        tokens : Tensor, shape (batch, n_windows, token_dim)
        token_mask : BoolTensor, shape (batch, n_windows), optional
            True where a token is replaced by the learned mask token.
        first_position : int
            Index of the positional embedding of the first window (0, as in the release;
            ``LeafInstructionTuner(positions=...)`` sets it in training).

        Returns
        -------
        Tensor, shape (batch, n_windows, d_model)
        """
        positions = self._positions(tokens.shape[1], first_position)
        h = self.mask_inProj(tokens)
        if token_mask is not None:
            h = torch.where(token_mask.unsqueeze(-1), self.mask_token.to(h.dtype), h)
        return self.mask_transformer(h + positions)

    def causal(self, tokens, first_position=0):
        """Run the causal branch: output ``i`` sees windows ``0..i`` only.

        Parameters
        ----------
        tokens : Tensor, shape (batch, n_windows, token_dim)
        first_position : int
            As in :meth:`contextual`.

        Returns
        -------
        Tensor, shape (batch, n_windows, d_model)
        """
        n_windows = tokens.shape[1]
        h = self.next_inProj(tokens) + self._positions(n_windows, first_position)
        mask = self.causal_mask[:n_windows, :n_windows].to(h.dtype)
        return self.next_transformer(h, mask=mask, is_causal=True)

    def reconstruct(self, hidden, branch):
        """Decode tokens to waveforms.

        Parameters
        ----------
        hidden : Tensor, shape (batch, n_windows, d_model)
        branch : {"mask", "next"}

        Returns
        -------
        Tensor, shape (batch, n_channels, n_windows * window_samples)
        """
        if not self.config.reconstruction_heads:
            raise ValueError("This Tower has no reconstruction heads "
                             "(LeafConfig(reconstruction_heads=False)); it can embed EEG but not "
                             "rebuild waveforms. Use a model with its heads for STR pretraining.")
        head = self.mask_outProj if branch == "mask" else self.next_outProj
        out = head(hidden)                                   # (B, N, C, W)
        batch, n_windows, n_channels, width = out.shape
        return out.permute(0, 2, 1, 3).reshape(batch, n_channels, n_windows * width)

    def forward(self, x, first_position=0):
        """Inference embedding: both branches on the clean input, concatenated.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_windows * window_samples)
        first_position : int
            As in :meth:`contextual`.

        Returns
        -------
        Tensor, shape (batch, 2 * n_windows, d_model)
            ``[S_1..S_N, T_1..T_N]``: contextual tokens, then causal tokens.
        """
        return self.encode(self.tokenizer(x), first_position)

    def encode(self, tokens, first_position=0):
        """Both branches on tokens, concatenated (:meth:`forward` after the tokenizer).

        Parameters
        ----------
        tokens : Tensor, shape (batch, n_windows, token_dim)
        first_position : int
            As in :meth:`contextual`.

        Returns
        -------
        Tensor, shape (batch, 2 * n_windows, d_model)
        """
        return torch.cat([self.contextual(tokens, first_position=first_position),
                          self.causal(tokens, first_position)], dim=1)
