"""Per-model configuration that travels with the model: preprocessing and architecture facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are prepared for the model.

    input_size is (channels, height, width) in pixels; mean/std are per channel on [0, 1] values;
    an image is resized so that its shorter side is height / crop_pct with ``interpolation``, then
    center-cropped to height x width.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.9
    interpolation: str = "bicubic"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelSpec:
    """What a registered constructor builds: family, architecture arguments, preprocessing."""

    name: str
    family: str
    arch: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)
