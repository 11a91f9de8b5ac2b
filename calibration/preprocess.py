"""The model's own preprocessing (PreprocessConfig) in torch: resize, center crop, normalise.

The same recipe as timm's eval transform (Resize(floor(H / crop_pct)), CenterCrop(H), ToTensor,
Normalize), written with ``torch.nn.functional.interpolate`` because torchvision cannot be imported
on the CPU set-up (see ARCHITECTURE.md section 7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from vitrt.errors import ConfigError
from vitrt.models.config import PreprocessConfig

from .errors import ChannelMismatchError

# PreprocessConfig.interpolation -> (torch mode, antialias). torch's antialiased bilinear/bicubic
# follow PIL's filters (what timm's transforms use on PIL images); "nearest-exact" is PIL's nearest.
INTERPOLATIONS: dict[str, tuple[str, bool]] = {
    "bicubic": ("bicubic", True),
    "bilinear": ("bilinear", True),
    "nearest": ("nearest-exact", False),
}


def check_preprocess(cfg: PreprocessConfig) -> None:
    """Raise ConfigError when ``cfg`` cannot be applied (unknown interpolation, bad sizes)."""
    c, h, w = cfg.input_size
    if min(c, h, w) < 1:
        raise ConfigError(f"input_size {cfg.input_size} must be positive (channels, height, width)")
    if cfg.interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"interpolation {cfg.interpolation!r} is not supported; use one of {sorted(INTERPOLATIONS)}"
        )
    if len(cfg.mean) != c or len(cfg.std) != c:
        raise ConfigError(f"mean {cfg.mean} and std {cfg.std} must have one value per input channel ({c})")
    if any(s <= 0 for s in cfg.std):
        raise ConfigError(f"std {cfg.std} must be positive")
    if not cfg.crop_pct > 0:
        raise ConfigError(f"crop_pct {cfg.crop_pct} must be positive")


def with_overrides(
    base: PreprocessConfig,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> PreprocessConfig:
    """``base`` with what the user gave on the command line (``--mean/--std/--crop-pct/--interpolation``),
    checked (``check_preprocess``). One value of mean / std stands for every channel."""
    channels = base.input_size[0]

    def per_channel(values: Sequence[float] | None, current: tuple[float, ...]) -> tuple[float, ...]:
        if values is None:
            return current
        vals = tuple(float(v) for v in values)
        return vals * channels if len(vals) == 1 else vals

    cfg = replace(
        base,
        mean=per_channel(mean, base.mean),
        std=per_channel(std, base.std),
        crop_pct=base.crop_pct if crop_pct is None else float(crop_pct),
        interpolation=base.interpolation if interpolation is None else interpolation,
    )
    check_preprocess(cfg)
    return cfg


def resize_size(height: int, width: int, cfg: PreprocessConfig) -> tuple[int, int]:
    """Size (height, width) in pixels that an image of ``height`` x ``width`` is resized to.

    Square inputs: the shorter side becomes floor(H / crop_pct) and the longer side keeps the aspect
    ratio (truncated), as torchvision's Resize(int). Non-square inputs: exactly
    (floor(H / crop_pct), floor(W / crop_pct)), as timm does.
    """
    _, out_h, out_w = cfg.input_size
    if out_h != out_w:
        return math.floor(out_h / cfg.crop_pct), math.floor(out_w / cfg.crop_pct)
    short = math.floor(out_h / cfg.crop_pct)
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def center_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Center crop (C, h, w) -> (C, height, width); zero padding where the image is smaller.

    The crop offset is round((h - height) / 2), as torchvision's CenterCrop.
    """
    _, h, w = image.shape
    if h < height or w < width:
        pad_h, pad_w = max(height - h, 0), max(width - w, 0)
        image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        _, h, w = image.shape
    top = round((h - height) / 2.0)
    left = round((w - width) / 2.0)
    return image[:, top : top + height, left : left + width]


def normalize(image: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """(C, H, W) values on [0, 1] -> (x - mean) / std per channel, float32."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(-1, 1, 1)
    return (image.to(torch.float32) - mean) / std


def preprocess_image(image: torch.Tensor, cfg: PreprocessConfig, *, where: str = "image") -> torch.Tensor:
    """One decoded image -> the model's input tensor.

    ``image``: (C, h, w) float values on [0, 1] (pixel value / 255), C equal to cfg.input_size[0].
    Returns (C, H, W) float32, H x W = cfg.input_size[1:]: resized with cfg.interpolation
    (antialiased; clamped back to [0, 1] like 8-bit resampling), center-cropped, normalised.
    ``where`` names the image in error messages.
    """
    c, out_h, out_w = cfg.input_size
    if image.dim() != 3 or image.shape[0] != c:
        raise ChannelMismatchError(
            f"{where}: shape {tuple(image.shape)} is not (channels={c}, height, width). Fix: give "
            f"{c}-channel images, or ask for conversion (convert_channels=True / --convert-channels)"
        )
    image = image.to(torch.float32)
    size = resize_size(int(image.shape[1]), int(image.shape[2]), cfg)
    if size != (int(image.shape[1]), int(image.shape[2])):
        mode, antialias = INTERPOLATIONS[cfg.interpolation]
        align = False if mode in ("bilinear", "bicubic") else None
        image = F.interpolate(image[None], size=size, mode=mode, align_corners=align, antialias=antialias)[
            0
        ].clamp_(0.0, 1.0)
    image = center_crop(image, out_h, out_w)
    return normalize(image, cfg)
