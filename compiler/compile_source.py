"""What ``vitrt compile`` starts from: a PyTorch model (to export) or an ONNX file (exported elsewhere).

A PyTorch model is named three ways: a registered name (``vitrt list-models``), a model description file, or
(from Python) an ``nn.Module``. A description is JSON with an ``arch`` entry, ``{"class": ..., "kwargs":
{...}}``, naming one of vitrt's model classes, and optionally ``preprocess`` (``PreprocessConfig`` fields):
the ``<name>.json`` files ``benchmarks/train_digits.py`` writes beside its checkpoints are such files. Only
vitrt's own classes are accepted, so a description never imports arbitrary code.

``ModelSource.identity`` is what the export stage's cache key hashes: the name or architecture, the
checkpoint's SHA-256 (or, for a module given in Python, the SHA-256 of its weights), options and image size.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitrt.errors import ConfigError
from vitrt.fileio import file_sha256

if TYPE_CHECKING:
    from torch import nn

    from vitrt.models.config import PreprocessConfig

PathLike = str | os.PathLike[str]

MODEL_CLASSES = {
    "vitrt.models.t2t_vit.T2TViT": ("vitrt.models.t2t_vit", "T2TViT"),
    "vitrt.models.deit.VisionTransformer": ("vitrt.models.deit", "VisionTransformer"),
}
"""The classes a model description may name (``arch.class``) -> (module, attribute)."""


@dataclass
class ModelSource:
    """A PyTorch model to compile (module docstring).

    kind: "registered", "description" or "module"; name: what reports call it; arch: the description's
    ``arch`` entry (None otherwise); checkpoint: weights file or None (random init from seed 0, or a module's
    own weights); preprocess: the model's preprocessing; img_size / num_classes: its input side in pixels and
    classes.
    """

    kind: str
    name: str
    fusion: Any = None
    attention: Any = None
    checkpoint: Path | None = None
    img_size: int = 224
    num_classes: int = 1000
    arch: dict[str, Any] | None = None
    preprocess_dict: dict[str, Any] | None = None
    module: Any = None
    _identity: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies the model's function: the export stage's cache key hashes it."""
        if not self._identity:
            ident: dict[str, Any] = {
                "kind": self.kind,
                "name": self.name,
                "arch": self.arch,
                "fusion": self.fusion,
                "attention": self.attention,
                "img_size": self.img_size,
                "num_classes": self.num_classes,
                "checkpoint_sha256": file_sha256(self.checkpoint) if self.checkpoint else None,
                "preprocess": self.preprocess_dict,
            }
            if self.module is not None:
                ident["weights_sha256"] = weights_sha256(self.module)
                ident["class"] = f"{type(self.module).__module__}.{type(self.module).__qualname__}"
            self._identity = ident
        return self._identity

    def describe(self) -> dict[str, Any]:
        """The report's description of the input model."""
        return {
            "kind": "model",
            "source": self.kind,
            "name": self.name,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "fusion": self.fusion,
            "attention": self.attention,
            "img_size": self.img_size,
            "num_classes": self.num_classes,
        }

    def build(self, seed: int = 0) -> nn.Module:
        """The PyTorch model in eval mode, float32 on the CPU: weights loaded, fusion / attention applied;
        without a checkpoint, a registered name's or a description's weights are drawn after
        ``torch.manual_seed(seed)``."""
        import torch

        from vitrt.models import load_checkpoint
        from vitrt.models.config import PreprocessConfig
        from vitrt.plugins import create_model, load_model_options

        if self.kind == "registered":
            torch.manual_seed(seed)
            model = create_model(
                self.name,
                img_size=self.img_size,
                num_classes=self.num_classes,
                fusion=self.fusion,
                attention=self.attention,
            )
            if self.checkpoint is not None:
                load_checkpoint(model, self.checkpoint)
            return model.eval()
        if self.kind == "description":
            assert self.arch is not None
            module_name, attribute = MODEL_CLASSES[self.arch["class"]]
            import importlib

            torch.manual_seed(seed)
            model = getattr(importlib.import_module(module_name), attribute)(**self.arch.get("kwargs", {}))
            if self.preprocess_dict is not None:
                data = dict(self.preprocess_dict)
                for key in ("input_size", "mean", "std"):
                    if key in data:
                        data[key] = tuple(data[key])
                model.preprocess = PreprocessConfig(**data)
            if self.checkpoint is not None:
                load_checkpoint(model, self.checkpoint)
        else:
            import copy

            model = copy.deepcopy(self.module)
            if self.checkpoint is not None:
                load_checkpoint(model, self.checkpoint)
        load_model_options()
        from vitrt.models.registry import apply_model_options

        apply_model_options(model, fusion=self.fusion, attention=self.attention)
        return model.eval()

    def preprocess(self, model: nn.Module) -> PreprocessConfig:
        """The preprocessing ``model`` (built from this source) expects; ConfigError when it has none."""
        pre = getattr(model, "preprocess", None)
        if pre is None:
            raise ConfigError(
                f"{self.name} has no preprocessing (model.preprocess); set it on the module (a "
                "vitrt.models.config.PreprocessConfig) or give it in the description's 'preprocess' entry"
            )
        return pre


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes, bytes), in key order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def read_description(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(arch, preprocess) of a model description file; ConfigError naming what is wrong."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable model description (JSON): {err}") from err
    arch = check_arch(data.get("arch") if isinstance(data, dict) else None, str(path))
    pre = data.get("preprocess")
    return arch, pre if isinstance(pre, dict) else None


def check_arch(arch: Any, where: str) -> dict[str, Any]:
    """A description's ``arch`` entry, checked: a dict naming one of ``MODEL_CLASSES`` (nothing else is ever
    imported) with a dict of ``kwargs``; ConfigError naming ``where`` it came from otherwise."""
    if (
        not isinstance(arch, dict)
        or arch.get("class") not in MODEL_CLASSES
        or not isinstance(arch.get("kwargs", {}), dict)
    ):
        raise ConfigError(
            f"{where}: a model description needs an 'arch' entry {{'class': ..., 'kwargs': {{...}}}} naming "
            f"one of {', '.join(MODEL_CLASSES)} (as benchmarks/train_digits.py writes)"
        )
    return arch


def model_source(
    model: Any,
    *,
    checkpoint: PathLike | None = None,
    fusion: Any = None,
    attention: Any = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    name: str | None = None,
) -> ModelSource:
    """The ModelSource for ``model`` (a registered name, a description ``.json``, or an ``nn.Module``).

    ``img_size`` / ``num_classes`` default to 224 / 1000 for a registered name, to the description's
    ``kwargs`` for a description and to the module's own for a module (``module_sizes``). Raises ConfigError,
    before any model is built, for an unknown name, a bad description, an ``img_size`` / ``num_classes``
    other than a description's or a module's (they fix them: their weights and preprocessing are made for
    them), an ``img_size`` the registered model cannot take, or a fusion / attention it cannot take.
    """
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.is_file():
        raise ConfigError(f"checkpoint {ckpt} does not exist")
    fusion = None if fusion in ("none", "") else fusion
    if not isinstance(model, (str, os.PathLike)):
        size, classes = module_sizes(model, img_size, num_classes)
        return ModelSource(
            "module", name or type(model).__name__, fusion, attention, ckpt, size, classes, module=model
        )
    text = os.fspath(model)
    if text.endswith(".json"):
        path = Path(text)
        arch, pre = read_description(path)
        kwargs = arch.get("kwargs", {})
        fixed = {
            "img_size": int(kwargs.get("img_size", 224)),
            "num_classes": int(kwargs.get("num_classes", 1000)),
        }
        for key, value in (("img_size", img_size), ("num_classes", num_classes)):
            # the model is built from the description's kwargs: another value would only reach the export
            # config, which then disagrees with the model (a shape error deep inside the export)
            if value is not None and value != fixed[key]:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{path} describes a model with {key} {fixed[key]} (arch.kwargs); {flag} {value} does "
                    f"not apply to a description. Leave {flag} out (or give {fixed[key]}); for another "
                    f"{key}, compile a registered name, or write a description with that value (and a "
                    "preprocess entry to match)"
                )
        return ModelSource(
            "description",
            name or path.stem,
            fusion,
            attention,
            ckpt,
            fixed["img_size"],
            fixed["num_classes"],
            arch=arch,
            preprocess_dict=pre,
        )
    from vitrt.models import list_models

    known = list_models()
    if text not in known:
        import difflib

        close = difflib.get_close_matches(text, known, n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown model {text!r}{hint}. Give a registered name (vitrt list-models), a model description "
            ".json, or an .onnx file"
        )
    from vitrt.models.registry import check_img_size, check_num_classes

    size = check_img_size(text, 224 if img_size is None else img_size)
    classes = check_num_classes(1000 if num_classes is None else num_classes)
    check_fusion_and_attention(text, size, classes, fusion=fusion, attention=attention)
    return ModelSource("registered", name or text, fusion, attention, ckpt, size, classes)


def module_sizes(module: Any, img_size: Any = None, num_classes: Any = None) -> tuple[int, int]:
    """(img_size, num_classes) of a built module: its own (vitrt's models: ``img_size`` and ``num_classes``;
    otherwise ``preprocess.input_size`` and the ``head``'s ``out_features``; 224 / 1000 where it has none),
    or the given ones where it has none. ConfigError for a given value other than the module's own (it is
    built for its own: another would only reach the export config, then fail deep inside the export)."""
    from vitrt.models.registry import check_num_classes

    pre = getattr(module, "preprocess", None)
    own_classes = _int_or_none(getattr(module, "num_classes", None))
    own = {
        "img_size": _int_or_none(getattr(module, "img_size", None))
        or _int_or_none(getattr(pre, "input_size", (None,))[-1]),
        "num_classes": own_classes
        if own_classes is not None
        else _int_or_none(getattr(getattr(module, "head", None), "out_features", None)),
    }
    given = {"img_size": img_size, "num_classes": num_classes}
    for key, value in given.items():
        if value is None:
            continue
        if key == "num_classes":
            check_num_classes(value)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"img_size must be a whole number of pixels such as 224, got {value!r}")
        if own[key] is not None and value != own[key]:
            raise ConfigError(
                f"the module was built with {key} {own[key]}; {key}={value} does not apply to a built "
                f"module. Fix: leave {key} out (the module's own is used), or build the module with "
                f"{key}={value}"
            )
    size = own["img_size"] or img_size or 224
    classes = own["num_classes"] if own["num_classes"] is not None else num_classes
    return int(size), int(1000 if classes is None else classes)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def check_fusion_and_attention(
    name: str, img_size: int, num_classes: int, *, fusion: Any, attention: Any
) -> None:
    """ConfigError now, not when the model is built, for a fusion or attention the registered model ``name``
    cannot take at ``img_size``: the model is built on the meta device (no weights; about 0.3 s) with the
    options applied. Only vitrt's errors count: anything else is left for the real build to report."""
    if fusion is None and attention in (None, "dense"):
        return
    import torch

    from vitrt.errors import VitrtError
    from vitrt.plugins import create_model

    try:
        with torch.device("meta"):
            create_model(name, img_size=img_size, num_classes=num_classes, fusion=fusion, attention=attention)
    except VitrtError:
        raise
    except Exception:  # an op that needs real tensors: the real build reports it
        pass
