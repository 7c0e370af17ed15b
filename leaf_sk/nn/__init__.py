"""The LEAF network, and the baselines ShallowFBCSPNet and EEGNet, in plain PyTorch: no
scikit-learn, skorch or MNE here."""

from .augment import phase_randomized
from .baselines import EEGNet, ShallowFBCSPNet
from .config import SIZES, LeafConfig
from .losses import draw_token_mask, remove_band, str_losses
from .model import LeafEnsemble, LeafModel, STRPretrainer, crop_averaged, members_of
from .qformer import QFormer
from .tokenizer import Tokenizer
from .tower import Tower

__all__ = ["EEGNet", "SIZES", "LeafConfig", "LeafEnsemble", "LeafModel", "QFormer",
           "STRPretrainer", "ShallowFBCSPNet", "Tokenizer", "Tower", "crop_averaged",
           "draw_token_mask", "members_of", "phase_randomized", "remove_band", "str_losses"]
