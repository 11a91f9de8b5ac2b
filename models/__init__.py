"""vitrt's PyTorch models: T2T-ViT and DeiT with official state-dict layouts.

>>> from vitrt import create_model, load_checkpoint
>>> model = load_checkpoint(create_model("t2t_vit_14"), "81.5_T2T_ViT_14.pth.tar")

This package imports no op code: token fusion and Scatterbrain attention register themselves as
model options (``register_model_option``), and ``vitrt.create_model`` loads them. Its own
``create_model`` builds the plain models and raises ConfigError for an option whose op is not loaded.
"""

if __name__.partition(".")[0] != "vitrt":  # the repository root on sys.path exposes the folder too
    raise ImportError(f"import vitrt.{__name__}, not {__name__}: vitrt's stages have one import name")

from . import deit, t2t_vit  # noqa: F401  (registers the constructors)
from .checkpoint import load_checkpoint, read_state_dict
from .config import PreprocessConfig
from .registry import MODEL_OPTIONS, create_model, list_models, register_model_option

__all__ = [
    "MODEL_OPTIONS",
    "PreprocessConfig",
    "create_model",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
    "register_model_option",
]
