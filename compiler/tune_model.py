"""What ``vitrt tune`` searches over: the model (a registered name or a checkpoint with its metadata) and
the data its trials are judged on.

MODEL is either
- a registered name (``vitrt list-models``), with fresh weights or ``checkpoint=``; or
- a checkpoint file whose metadata JSON lies beside it (``<stem>.json`` with ``arch: {class, kwargs}`` and
  ``preprocess``), as ``benchmarks/train_digits.py`` writes them:
  ``benchmarks/digits/digits_t2t_vit.safetensors``.
  Only vitrt's own model classes are accepted as ``arch.class``.

Eval data: labelled data gives top-1 accuracy against the labels; otherwise accuracy is the top-1 agreement
(%) with the unfused FP32 PyTorch model on the same images. "auto" (default) is the held-out split of the
digits for a digits checkpoint (its JSON's ``data`` names scikit-learn's digits and ``split.json`` lies beside
it, with the held-out indices), else "skimage" without labels. An ``.npz`` holding ``images`` (N, C, H, W,
preprocessed float32) and ``labels`` (N,) is labelled; any other ``open_source`` spec (folder, .npy,
"skimage", "synthetic") is not.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import ConfigError

log = logging.getLogger(__name__)

ARCH_CLASSES = {
    "vitrt.models.t2t_vit.T2TViT": ("vitrt.models.t2t_vit", "T2TViT"),
    "vitrt.models.deit.VisionTransformer": ("vitrt.models.deit", "VisionTransformer"),
}
"""Model classes a checkpoint's metadata may name (nothing else is imported from a JSON file)."""

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".tar")


@dataclass(frozen=True)
class ModelSource:
    """A model to tune, as plain data (sent to Ray workers).

    name: the registered name, or the checkpoint's stem; spec: MODEL as the user gave it (for the printed
    command line); arch: {"class", "kwargs"} of a checkpoint model, None for a registered one;
    preprocess: PreprocessConfig fields; checkpoint: weights path or None (random init, seed 0);
    meta: the checkpoint's metadata JSON ({} for a registered model).
    """

    name: str
    spec: str
    img_size: int
    num_classes: int
    preprocess: dict[str, Any]
    arch: dict[str, Any] | None = None
    checkpoint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def build(self, *, fusion: Any = None, attention: Any = None, state_dict: Any = None) -> Any:
        """The PyTorch model (eval mode) with ``state_dict`` loaded (None: a seeded random init), then
        ``attention`` and ``fusion`` applied as ``vitrt.create_model`` applies them."""
        import torch

        import vitrt.plugins  # registers the fusion / attention options
        from vitrt.models import load_checkpoint
        from vitrt.models.config import PreprocessConfig
        from vitrt.plugins.lsh_attention.integration import apply_attention
        from vitrt.plugins.token_fusion.integration import apply_fusion

        torch.manual_seed(0)
        if self.arch is None:
            model = vitrt.plugins.create_model(
                self.name, img_size=self.img_size, num_classes=self.num_classes
            )
        else:
            module, attr = ARCH_CLASSES[self.arch["class"]]
            model = getattr(importlib.import_module(module), attr)(**self.arch["kwargs"])
            pre = dict(self.preprocess)
            pre["input_size"], pre["mean"], pre["std"] = (
                tuple(pre[k]) for k in ("input_size", "mean", "std")
            )
            model.preprocess = PreprocessConfig(**pre)
        if state_dict is not None:
            load_checkpoint(model, state_dict)
        if attention is not None:
            apply_attention(model, attention)
        if fusion is not None:
            apply_fusion(model, fusion)
        return model.eval()

    def read_weights(self) -> dict[str, Any] | None:
        """The checkpoint's tensors (None for a random init), read once on the driver and shipped."""
        if self.checkpoint is None:
            return None
        from vitrt.models.checkpoint import read_state_dict

        return read_state_dict(self.checkpoint)

    @property
    def labelled_digits(self) -> bool:
        """Whether this is a digits checkpoint with its held-out split beside it."""
        data = str(self.meta.get("data", ""))
        return (
            self.checkpoint is not None
            and data.startswith("sklearn digits")
            and (Path(self.checkpoint).parent / "split.json").is_file()
        )


def resolve_model(
    model: str, *, checkpoint: str | None = None, img_size: int | None = None, num_classes: int | None = None
) -> ModelSource:
    """A ModelSource from MODEL (module docstring). ConfigError naming the fix for an unknown name, a
    checkpoint without its JSON, or a class vitrt does not own."""
    path = Path(model)
    if path.suffix in CHECKPOINT_SUFFIXES or path.is_file():
        if checkpoint is not None:
            raise ConfigError("MODEL is already a checkpoint file; drop --checkpoint")
        meta_path = path.with_suffix(".json")
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} does not exist")
        if not meta_path.is_file():
            raise ConfigError(
                f"{path} has no metadata beside it ({meta_path.name} with 'arch' and 'preprocess', as "
                "benchmarks/train_digits.py writes); or give a registered name with --checkpoint"
            )
        meta = json.loads(meta_path.read_text())
        arch = meta.get("arch") or {}
        if arch.get("class") not in ARCH_CLASSES:
            raise ConfigError(
                f"{meta_path}: arch.class {arch.get('class')!r} is not one of vitrt's model classes "
                f"({', '.join(ARCH_CLASSES)})"
            )
        kwargs = arch.get("kwargs", {})
        pre = meta.get("preprocess") or {}
        if not pre:
            raise ConfigError(
                f"{meta_path} has no 'preprocess' (input_size, mean, std, crop_pct, interpolation)"
            )
        fixed = {
            "img_size": int(kwargs.get("img_size", pre["input_size"][-1])),
            "num_classes": int(kwargs.get("num_classes", 1000)),
        }
        for key, value in (("img_size", img_size), ("num_classes", num_classes)):
            if value is not None and value != fixed[key]:  # the weights are trained for the JSON's value
                flag = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{path} is trained with {key} {fixed[key]} ({meta_path.name}); {flag} {value} does not "
                    f"apply to it: leave {flag} out (it is for a registered name)"
                )
        return ModelSource(
            name=str(meta.get("name", path.stem)),
            spec=model,
            img_size=fixed["img_size"],
            num_classes=fixed["num_classes"],
            preprocess=dict(pre),
            arch={"class": arch["class"], "kwargs": dict(kwargs)},
            checkpoint=str(path),
            meta=meta,
        )
    from vitrt.models import list_models

    if model not in list_models():
        raise ConfigError(
            f"unknown model {model!r}: give a name from `vitrt list-models` or a checkpoint file with its "
            "metadata JSON beside it (e.g. benchmarks/digits/digits_t2t_vit.safetensors)"
        )
    size = img_size or 224
    return ModelSource(
        name=model,
        spec=model,
        img_size=size,
        num_classes=num_classes if num_classes is not None else 1000,
        preprocess={"input_size": [3, size, size]},
        checkpoint=checkpoint,
    )


@dataclass(frozen=True)
class EvalData:
    """Calibration images and the held-out images trials are judged on (float32 (N, C, H, W), preprocessed).

    labels: (N,) int64 class indices, or None (accuracy = agreement with the FP32 model); description: what
    the images are, for the report; calib_source: the data source the calibration images came from, as
    ``vitrt compile --calib-data`` takes it (None: not one compile reads, the images of a labelled .npz).
    """

    calibration: np.ndarray
    images: np.ndarray
    labels: np.ndarray | None
    description: str
    calib_source: str | None = None


def load_eval_data(
    source: ModelSource,
    preprocess: Any,
    eval_data: str | None = "auto",
    *,
    eval_samples: int = 500,
    calib_samples: int = 256,
    seed: int = 0,
) -> EvalData:
    """The calibration and eval images for ``source`` (``preprocess``: its PreprocessConfig) per the module
    docstring: at most ``eval_samples`` judged and ``calib_samples`` calibrated on, never overlapping. From a
    source with fewer than both, at most half of it (rounded up) is judged and the rest calibrates, with a
    warning saying so. ``calib_samples=0`` (no INT8 trial): no calibration images are read, and a short
    source is judged whole."""
    from vitrt.calibration.data import open_source

    spec = "auto" if eval_data is None else str(eval_data)
    if spec == "auto" and source.labelled_digits:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]

        assert source.checkpoint is not None
        split = json.loads((Path(source.checkpoint).parent / "split.json").read_text())
        held = np.asarray(split["held_out"], dtype=np.int64)[:eval_samples]
        all_idx = np.setdiff1d(np.arange(1797), np.asarray(split["held_out"]))
        calib_idx = np.random.default_rng(seed + 1).choice(
            all_idx, min(calib_samples, all_idx.size), replace=False
        )
        data = open_source("sklearn-digits", preprocess, 1797, convert_channels=True, progress=False)
        images = np.stack([data.sample(int(i)).numpy() for i in held])
        calib = _stack([data.sample(int(i)).numpy() for i in calib_idx], images)
        labels = np.asarray(load_digits().target, dtype=np.int64)[held]
        return EvalData(
            calib,
            images,
            labels,
            f"held-out digits ({len(held)} of split.json, labelled); {len(calib_idx)} calibration images "
            "from the training split",
            "sklearn-digits",
        )
    if spec == "auto":
        spec = "skimage"
    path = Path(spec)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            if "images" in npz.files and "labels" in npz.files:
                images = np.asarray(npz["images"], dtype=np.float32)[:eval_samples]
                labels = np.asarray(npz["labels"], dtype=np.int64)[:eval_samples]
                calib = np.asarray(npz["images"], dtype=np.float32)[
                    eval_samples : eval_samples + calib_samples
                ]
                if calib.size == 0 and calib_samples > 0:
                    raise ConfigError(
                        f"{path} holds {len(images)} images, all used for evaluation: add more than "
                        f"eval_samples={eval_samples} images, or lower eval_samples, so some calibrate"
                    )
                return EvalData(calib, images, labels, f"{path}: {len(images)} labelled images")
    wanted = calib_samples + eval_samples
    quiet = logging.getLogger("vitrt.calibration.data")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "fewer than asked for" counts both parts as calibration: said below
    try:
        data = open_source(spec, preprocess, wanted, seed=seed, convert_channels=True, progress=False)
    finally:
        quiet.setLevel(level)
    order = [int(i) for i in data.indices]
    if len(order) < 2:
        raise ConfigError(f"eval data {spec!r} has {len(order)} image(s); at least 2 are needed")
    n_eval, n_calib = eval_samples, calib_samples
    if len(order) < wanted and calib_samples == 0:
        n_eval = len(order)
        log.warning(
            "eval data %s has %d images, fewer than the %d evaluation images tune asks for; judging trials "
            "on all of them",
            spec,
            len(order),
            eval_samples,
        )
    elif len(order) < wanted:
        # a short source: at most half of it (rounded up) is judged, the rest calibrates
        n_eval = min(eval_samples, len(order) - len(order) // 2)
        n_calib = min(calib_samples, len(order) - n_eval)
        log.warning(
            "eval data %s has %d images, fewer than the %d tune asks for (%d calibration + %d evaluation "
            "images); judging trials on %d and calibrating INT8 on %d others",
            spec,
            len(order),
            wanted,
            calib_samples,
            eval_samples,
            n_eval,
            n_calib,
        )
    images = np.stack([data.sample(i).numpy() for i in order[n_calib : n_calib + n_eval]])
    calib = _stack([data.sample(i).numpy() for i in order[:n_calib]], images)
    return EvalData(
        calib,
        images,
        None,
        f"{spec}: {len(images)} images without labels (accuracy = top-1 agreement with the unfused FP32 "
        f"model)" + (f", {n_calib} others for calibration" if n_calib else ""),
        spec,
    )


def _stack(samples: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    """``samples`` stacked, or none: a (0, C, H, W) array of ``like``'s image shape and dtype."""
    return np.stack(samples) if samples else np.empty((0, *like.shape[1:]), dtype=like.dtype)
