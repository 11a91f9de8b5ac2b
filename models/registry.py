"""Model registry: ``create_model``, ``list_models``, the per-family checkpoint converters, and the
model options (``fusion=``, ``attention=``) that op packages provide.

The models sit below the plugin ops: an op package (``vitrt.plugins.token_fusion``...) imports the
models it changes and registers the ``create_model`` option it implements with
``register_model_option``; this module never imports op code. ``vitrt.create_model`` loads every op
package first (``vitrt.plugins.load_model_options``), so its options are always there.
"""

from __future__ import annotations

import difflib
import fnmatch
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from vitrt.errors import ConfigError

from .base import ClassTokenViT

CheckpointFilter = Callable[[Mapping[str, Tensor], nn.Module], dict[str, Tensor]]
SizeCheck = Callable[[int], None]
"""``check(img_size)``: ConfigError naming sizes that work when the family's models cannot take it."""
ModelOption = Callable[[nn.Module, Any], None]
"""``apply(model, value)``: changes the model in place as the option's value says (ConfigError if bad)."""

MODEL_OPTIONS = ("attention", "fusion")
"""The ``create_model`` options op packages provide, in the order they are applied: attention first,
since token fusion needs to know which blocks keep dense attention."""
_OFF: dict[str, tuple[Any, ...]] = {"attention": (None, "dense"), "fusion": (None,)}
"""Values of each option that leave the model as built (the option's op is not needed then)."""


@dataclass(frozen=True)
class _Entry:
    constructor: Callable[..., ClassTokenViT]
    family: str
    checkpoint_filter: CheckpointFilter
    check_img_size: SizeCheck
    overrides: frozenset[str]


_REGISTRY: dict[str, _Entry] = {}
_OPTIONS: dict[str, ModelOption] = {}


def register_model(
    name: str,
    *,
    family: str,
    checkpoint_filter: CheckpointFilter,
    check_img_size: SizeCheck,
    overrides: Iterable[str],
) -> Callable[[Callable[..., ClassTokenViT]], Callable[..., ClassTokenViT]]:
    """Register ``constructor(img_size=, num_classes=, **overrides) -> model`` under ``name``;
    ``check_img_size`` is the family's rule for the input side (the one its constructor applies), and
    ``overrides`` the architecture keywords the constructor takes besides img_size and num_classes."""

    def wrap(constructor: Callable[..., ClassTokenViT]) -> Callable[..., ClassTokenViT]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = _Entry(constructor, family, checkpoint_filter, check_img_size, frozenset(overrides))
        return constructor

    return wrap


def register_model_option(name: str, apply: ModelOption) -> None:
    """Make ``create_model(..., <name>=value)`` call ``apply(model, value)``; ``name`` is one of
    ``MODEL_OPTIONS``. Op packages call it when their ``integration`` module is imported; registering
    the same function again (a reloaded module) is a no-op."""
    if name not in MODEL_OPTIONS:
        raise ValueError(f"unknown model option {name!r}; create_model has {', '.join(MODEL_OPTIONS)}")
    known = _OPTIONS.get(name)
    if known is not None and _qualified(known) != _qualified(apply):
        raise ValueError(f"model option {name!r} registered twice: {_qualified(known)}, {_qualified(apply)}")
    _OPTIONS[name] = apply


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _option(name: str) -> ModelOption:
    if name not in _OPTIONS:
        raise ConfigError(
            f"create_model({name}=...) needs the op package that provides {name!r}, and none is loaded. "
            "Fix: call vitrt.create_model (it loads every op), or vitrt.plugins.load_model_options() "
            "once before vitrt.models.create_model"
        )
    return _OPTIONS[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (all models: vitrt list-models)")
    return _REGISTRY[name]


def _model_name(name: Any, function: str) -> str:
    """``name`` if it is a string; ConfigError otherwise (a built model passed where a name belongs)."""
    if isinstance(name, nn.Module):
        raise ConfigError(
            f"{function} takes a model name (vitrt list-models); you passed a built model "
            f'({type(name).__name__}). Fix: pass its name, e.g. {function}("deit_tiny_patch16_224", ...)'
        )
    if not isinstance(name, str):
        raise ConfigError(f"{function} takes a model name (vitrt list-models), got {name!r}")
    return name


def check_img_size(name: str, img_size: Any) -> int:
    """``img_size`` as an int if the registered model ``name`` can take it: ConfigError (naming sizes that
    work) for a value that is not a whole number of pixels, or that the family's rule refuses (DeiT: a
    multiple of the patch; T2T-ViT: its soft split). Cheap: no model is built."""
    entry = _entry(_model_name(name, "create_model"))
    if isinstance(img_size, bool) or not isinstance(img_size, numbers.Integral):
        raise ConfigError(f"img_size must be a whole number of pixels such as 224, got {img_size!r}")
    entry.check_img_size(int(img_size))
    return int(img_size)


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an int: ConfigError unless it is a whole number >= 0 (0: a feature extractor)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
        raise ConfigError(
            f"num_classes must be a whole number >= 0 (classifier outputs; 0: features only), got "
            f"{num_classes!r}"
        )
    return int(num_classes)


def checkpoint_filter_for(model: nn.Module) -> CheckpointFilter:
    """The converter that maps the model family's foreign checkpoint keys onto vitrt's."""
    spec = getattr(model, "spec", None)
    if spec is None or spec.name not in _REGISTRY:
        return lambda state_dict, _model: dict(state_dict)
    return _REGISTRY[spec.name].checkpoint_filter


def apply_model_options(model: nn.Module, *, fusion: Any = None, attention: Any = None) -> nn.Module:
    """Apply ``create_model``'s op options (``fusion=``, ``attention=``) to a model built elsewhere (a model
    class called directly, as ``benchmarks/train_digits.py`` does), in place; returns it. ConfigError as
    ``create_model`` (an unknown value, or the op package not loaded)."""
    values = {"attention": attention, "fusion": fusion}
    wanted = [n for n in MODEL_OPTIONS if not any(values[n] is off or values[n] == off for off in _OFF[n])]
    for option, apply in [(n, _option(n)) for n in wanted]:
        apply(model, values[option])
    return model


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
        name: a name from ``list_models()``, e.g. ``"t2t_vit_14"`` or ``"deit_small_patch16_224"``
            (ConfigError for anything else, a built model included).
        num_classes: classifier outputs (0 for a feature extractor).
        img_size: square input side in pixels; ConfigError (naming sizes that work) for one the
            model cannot take (not positive, not a multiple of DeiT's patch, not T2T's soft split).
        fusion: token fusion (``None``, a preset name such as ``"mctf"``, or a dict / config object);
            see ``vitrt.plugins.token_fusion``.
        attention: attention replacement (``None``/``"dense"``, ``"scatterbrain"``, ``"lsh"``,
            ``"performer"``, or a dict); see ``vitrt.plugins.lsh_attention``.
            fusion and attention are model options of op packages: ConfigError if the one asked for is
            not loaded (``vitrt.create_model`` loads them all).
        kwargs: architecture overrides passed to the constructor (``drop_path_rate``, ``qk_scale``...);
            ConfigError for a keyword the constructor does not take.
    Returns:
        the model in eval mode; ``model.preprocess`` says how to prepare its input.
    """
    entry = _entry(_model_name(name, "create_model"))
    size, classes = check_img_size(name, img_size), check_num_classes(num_classes)
    unknown = sorted(set(kwargs) - entry.overrides)
    if unknown:
        raise ConfigError(
            f"{name} has no option {', '.join(map(repr, unknown))}; create_model takes num_classes, "
            f"img_size, fusion, attention and the architecture overrides {', '.join(sorted(entry.overrides))}"
        )
    values = {"attention": attention, "fusion": fusion}
    wanted = [n for n in MODEL_OPTIONS if not any(values[n] is off or values[n] == off for off in _OFF[n])]
    applies = [_option(n) for n in wanted]  # all known before the (possibly large) model is built
    model = entry.constructor(num_classes=classes, img_size=size, **kwargs)
    for option, apply in zip(wanted, applies, strict=True):
        apply(model, values[option])
    return model.eval()
