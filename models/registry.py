"""Model registry: ``create_model``, ``list_models`` and the per-family checkpoint converters."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from vitrt.errors import ConfigError

from .base import ClassTokenViT

CheckpointFilter = Callable[[Mapping[str, Tensor], nn.Module], dict[str, Tensor]]


@dataclass(frozen=True)
class _Entry:
    constructor: Callable[..., ClassTokenViT]
    family: str
    checkpoint_filter: CheckpointFilter


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str, *, family: str, checkpoint_filter: CheckpointFilter
) -> Callable[[Callable[..., ClassTokenViT]], Callable[..., ClassTokenViT]]:
    """Register ``constructor(**kwargs) -> model`` under ``name``."""

    def wrap(constructor: Callable[..., ClassTokenViT]) -> Callable[..., ClassTokenViT]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = _Entry(constructor, family, checkpoint_filter)
        return constructor

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (all models: vitrt list-models)")
    return _REGISTRY[name]


def checkpoint_filter_for(model: nn.Module) -> CheckpointFilter:
    """The converter that maps the model family's foreign checkpoint keys onto vitrt's."""
    spec = getattr(model, "spec", None)
    if spec is None or spec.name not in _REGISTRY:
        return lambda state_dict, _model: dict(state_dict)
    return _REGISTRY[spec.name].checkpoint_filter


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    img_size: int = 224,
    fusion: Any = None,
    attention: Any = None,
    **kwargs: Any,
) -> ClassTokenViT:
    """Build a registered model with fresh weights (load them with ``load_checkpoint``).

    Args:
        name: a name from ``list_models()``, e.g. ``"t2t_vit_14"`` or ``"deit_small_patch16_224"``.
        num_classes: classifier outputs (0 for a feature extractor).
        img_size: square input side in pixels.
        fusion: token fusion (``None``, a preset name such as ``"mctf"``, or a dict / config object);
            see ``vitrt.plugins.token_fusion``.
        attention: attention replacement (``None``/``"dense"``, ``"scatterbrain"``, ``"lsh"``,
            ``"performer"``, or a dict); see ``vitrt.plugins.lsh_attention``.
        kwargs: architecture overrides passed to the constructor (``drop_path_rate``, ``qk_scale``...).
    Returns:
        the model in eval mode; ``model.preprocess`` says how to prepare its input.
    """
    entry = _entry(name)
    model = entry.constructor(num_classes=num_classes, img_size=img_size, **kwargs)
    if attention is not None and attention != "dense":
        from vitrt.plugins.lsh_attention.integration import apply_attention

        apply_attention(model, attention)
    if fusion is not None:
        from vitrt.plugins.token_fusion.integration import apply_fusion

        apply_fusion(model, fusion)
    return model.eval()
