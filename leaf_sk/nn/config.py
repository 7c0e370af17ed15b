"""Sizes of the LEAF network, in one frozen config object."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .._template import TEMPLATE_CH_NAMES

_SIZES = {
    # The paper's sizes (LEAF_SPEC.md sections 3-6): 20.2 M Tower + 6.2 M IQF with a 768-d text encoder.
    "base": {},
    # Sized for CPU training: 2.1 M Tower parameters, about 700 training windows/s on 2 cores.
    "small": dict(n_filters=32, d_model=128, n_layers=4, n_heads=4, d_ff=512,
                  iqf_layers=2, iqf_heads=4, iqf_d_ff=512),
    # For unit tests and examples only: about 60 k parameters (56 k Tower).
    "tiny": dict(n_filters=4, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                 n_queries=2, iqf_layers=1, iqf_heads=2, iqf_d_ff=32),
}


@dataclass(frozen=True)
class LeafConfig:
    """Shapes and hyper-parameters of the LEAF network.

    Parameters
    ----------
    n_channels : int
        Rows of the electrode template (65).
    window_samples : int
        Samples per token window (100 = 0.5 s at 200 Hz).
    max_windows : int
        Length of the positional tables, in windows (20 = 10 s).
    n_filters : int
        Filters of the tokenizer's temporal and spatial convolutions.
    temporal_kernel : int
        Temporal kernel length, in samples (40 = 200 ms).
    pool_size : int
        Max-pooling width, in samples.
    d_model, n_layers, n_heads, d_ff : int
        Width, depth, attention heads and feed-forward width of each Tower branch.
    recon_hidden : int
        Per-channel hidden size of the reconstruction heads (20 in the release, whose first
        layer is then 256 -> 65 x 20 = 1300).
    dropout, tokenizer_dropout : float
        Dropout in the Transformers and after the tokenizer.
    mask_prob : float
        Probability that the contextual branch replaces a token by the mask token in pretraining.
    n_queries, iqf_layers, iqf_heads, iqf_d_ff : int
        Learned queries, depth, heads and feed-forward width of the Q-Former.
    iqf_dropout : float
        Dropout before the Q-Former's output projection.
    d_text : int
        Dimension of the sentence-embedding space (768 for all-mpnet-base-v2, 384 for all-MiniLM-L6-v2).
    iqf_positions : {"branch", "contiguous"}
        Q-Former position indices of the 2N tokens: ``"branch"`` puts the causal tokens at
        ``max_windows + i`` (as in training on 10-s inputs); ``"contiguous"`` uses ``0..2N-1`` as the
        release does at direct inference.
    power_memory : bool
        leaf-sk's option, not the paper's (False for release files): the Q-Former also
        cross-attends to one band-power token per 0.5-s window, the log-variance of each
        tokenizer filter's output (layer-normalised over the filters, then projected to
        ``d_model``). It gives the instruction path the mu/beta and SSVEP power that STR's
        reconstruction leaves out of the Tower's tokens.
    spectral_memory : bool
        leaf-sk's option, not the paper's (False for release files): the Q-Former also
        cross-attends to one spectral token per 0.5-s window: ``spectral_filters`` learned
        spatial filters of the ``spectral_sites``, the log power spectrum of each at 2-Hz
        resolution from 4 to 44 Hz (:class:`~leaf_sk.nn.spectral.SpectralMemory`),
        layer-normalised and projected to ``d_model``. Unlike ``power_memory`` it resolves
        neighbouring SSVEP frequencies, which a 200-ms temporal filter cannot.
    spectral_filters : int
        Spatial filters of the spectral memory.
    spectral_sites : list of str or None
        Template sites the spectral memory's filters read (None: all 65).
    spectral_tokens : {"window", "trial", "both"}
        The spectral memory's tokens: one per 0.5-s window (default), one per trial (the log
        of the power averaged over the windows, Welch's estimate), or both.
    tower_memory : bool
        Whether the Q-Former cross-attends to the Tower's 2N tokens (True, as in the paper).
        False, leaf-sk's option, leaves the Tower out of the instruction path: the Q-Former
        reads only the band-power and spectral tokens (one of ``power_memory`` and
        ``spectral_memory`` must be on), and the Tower is not run.
    reconstruction_heads : bool
        Whether the Tower has its STR reconstruction heads (``mask_outProj``, ``next_outProj``;
        True, as in the release). False, leaf-sk's option, leaves them out of a model used only
        for instruction-following inference, which never runs them (0.34 M parameters of
        "small"); such a model cannot be STR-pretrained.
    """

    n_channels: int = 65
    window_samples: int = 100
    max_windows: int = 20
    n_filters: int = 64
    temporal_kernel: int = 40
    pool_size: int = 10
    d_model: int = 256
    n_layers: int = 12
    n_heads: int = 8
    d_ff: int = 1024
    recon_hidden: int = 20
    dropout: float = 0.1
    tokenizer_dropout: float = 0.5
    mask_prob: float = 0.5
    n_queries: int = 8
    iqf_layers: int = 4
    iqf_heads: int = 8
    iqf_d_ff: int = 1024
    iqf_dropout: float = 0.3
    d_text: int = 768
    iqf_positions: str = "branch"
    power_memory: bool = False
    spectral_memory: bool = False
    spectral_filters: int = 16
    spectral_sites: list | None = None
    spectral_tokens: str = "window"
    tower_memory: bool = True
    reconstruction_heads: bool = True

    def __post_init__(self):
        for name in ("n_channels", "window_samples", "max_windows", "n_filters", "temporal_kernel",
                     "pool_size", "d_model", "n_layers", "n_heads", "d_ff", "recon_hidden",
                     "n_queries", "iqf_layers", "iqf_heads", "iqf_d_ff", "d_text",
                     "spectral_filters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LeafConfig.{name} must be a positive integer, got {value!r}.")
        if self.d_model % self.n_heads or self.d_model % self.iqf_heads:
            raise ValueError(
                f"LeafConfig.d_model={self.d_model} must be divisible by n_heads={self.n_heads} "
                f"and iqf_heads={self.iqf_heads}.")
        if self.spectral_tokens not in ("window", "trial", "both"):
            raise ValueError("LeafConfig.spectral_tokens must be 'window', 'trial' or 'both', "
                             f"got {self.spectral_tokens!r}.")
        if self.iqf_positions not in ("branch", "contiguous"):
            raise ValueError(
                f"LeafConfig.iqf_positions must be 'branch' or 'contiguous', got {self.iqf_positions!r}.")
        for name in ("power_memory", "spectral_memory", "tower_memory", "reconstruction_heads"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"LeafConfig.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}.")
        if not (self.tower_memory or self.power_memory or self.spectral_memory):
            raise ValueError(
                "LeafConfig(tower_memory=False) leaves the Q-Former nothing to read; turn on "
                "power_memory or spectral_memory, or keep tower_memory=True.")
        if self.spectral_sites is not None:
            unknown = [s for s in self.spectral_sites if s not in TEMPLATE_CH_NAMES]
            if unknown or not self.spectral_sites or isinstance(self.spectral_sites, str):
                raise ValueError(
                    f"LeafConfig.spectral_sites must be a non-empty list of template sites; "
                    f"{unknown or self.spectral_sites!r} is not (sites: {TEMPLATE_CH_NAMES}).")
        for name in ("dropout", "tokenizer_dropout", "mask_prob", "iqf_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"LeafConfig.{name} must lie in [0, 1), got {getattr(self, name)!r}.")

    @classmethod
    def from_size(cls, size="small", **overrides):
        """Config of a named size (``"base"``, ``"small"`` or ``"tiny"``), with overrides."""
        if size not in _SIZES:
            raise ValueError(f"Unknown LEAF size {size!r}; choose one of {sorted(_SIZES)}.")
        return cls(**{**_SIZES[size], **overrides})

    @property
    def conv_samples(self):
        """Samples of one window's temporal convolution output (101 in the release; padding
        ``temporal_kernel // 2`` on both sides)."""
        return self.window_samples + 2 * (self.temporal_kernel // 2) - self.temporal_kernel + 1

    @property
    def samples_per_filter(self):
        """Samples per filter after pooling one window (10 in the release)."""
        return self.conv_samples // self.pool_size

    @property
    def spectral_dim(self):
        """Length of one spectral token before its projection (16 filters x 21 bins = 336)."""
        from .spectral import spectral_bins

        return self.spectral_filters * len(spectral_bins(self.window_samples))

    @property
    def token_dim(self):
        """Length of one flattened tokenizer output (640 in the release)."""
        return self.n_filters * self.samples_per_filter

    def to_dict(self):
        """Plain dict, JSON-serialisable."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError that lists them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown LeafConfig keys {unknown}; known keys are {sorted(known)}.")
        return cls(**values)

    def replace(self, **changes):
        """Copy with some fields changed."""
        return replace(self, **changes)


SIZES = tuple(_SIZES)
