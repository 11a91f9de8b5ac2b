"""vitrt's PyTorch models: T2T-ViT and DeiT with official state-dict layouts.

>>> from models import create_model, load_checkpoint
>>> model = load_checkpoint(create_model("t2t_vit_14"), "81.5_T2T_ViT_14.pth.tar")
"""

from . import deit, t2t_vit  # noqa: F401  (registers the constructors)
from .checkpoint import load_checkpoint, read_state_dict
from .config import PreprocessConfig
from .registry import create_model, list_models

__all__ = ["PreprocessConfig", "create_model", "list_models", "load_checkpoint", "read_state_dict"]
