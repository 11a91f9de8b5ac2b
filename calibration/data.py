"""Representative data for calibration: batches of model-ready tensors from one source.

>>> data = open_source("images/", model.preprocess, num_samples=256, batch_size=32, seed=0)
>>> for batch in data:          # torch.float32, (B, C, H, W), B = batch_size except the last
...     ...

A source is an image folder (jpg/png, recursive), a ``.npy``/``.npz`` file, one of the image sets
that packages ship offline (``skimage``, ``sklearn-digits``, ``sklearn-images``) or ``synthetic``.
Samples are decoded one at a time when their batch is built (a ``.npy`` is memory-mapped), so
memory stays at one batch plus one decoded image. The sample order is a permutation seeded by
``seed``: the same arguments give the same batches on every machine and every iteration.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vitrt.errors import ConfigError
from vitrt.models.config import PreprocessConfig
from vitrt.progress import progress_bar

from ._optional import import_optional
from .errors import ChannelMismatchError, DataSourceError
from .preprocess import check_preprocess, normalize, preprocess_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
BUILTIN_SOURCES = ("skimage", "sklearn-digits", "sklearn-images", "synthetic")
_SPEC_HELP = "an image folder (jpg/png, searched recursively), a .npy/.npz file, or one of " + ", ".join(
    BUILTIN_SOURCES
)

# skimage.data images that ship inside the scikit-image wheel (no download), by channel count.
# chelsea is the same picture as cat; binary/float test patterns are left out.
SKIMAGE_RGB = (
    "astronaut", "cat", "coffee", "colorwheel", "hubble_deep_field", "immunohistochemistry",
    "retina", "rocket",
)  # fmt: skip
SKIMAGE_GRAY = (
    "brick", "camera", "cell", "checkerboard", "clock", "coins", "grass", "gravel",
    "microaneurysms", "moon", "page", "text",
)  # fmt: skip
SKIMAGE_RGBA = ("logo",)

# How a source's samples reach the model: "image" goes through the full preprocessing,
# "sized" is already H x W (only normalised), "ready" is already the model's input tensor.
Kind = Literal["image", "sized", "ready"]


@dataclass(frozen=True)
class _Source:
    """Random access to the samples of one source. ``load(i)`` returns (C, h, w) float32."""

    name: str
    kind: Kind
    size: int | None  # None: unbounded (synthetic)
    load: Callable[[int], torch.Tensor]
    describe: Callable[[int], str]
    channels: int | None = None  # known channel count of every sample, where the source knows it


# ---------------------------------------------------------------------------------------------
# Channel handling


def match_channels(image: torch.Tensor, channels: int, *, convert: bool, where: str) -> torch.Tensor:
    """(c, h, w) -> (channels, h, w).

    Unchanged when c == channels. With ``convert``: grayscale is replicated, an alpha channel is
    dropped, RGB becomes luma (0.299 R + 0.587 G + 0.114 B) for 1-channel models. Otherwise a
    mismatch raises ChannelMismatchError.
    """
    c = int(image.shape[0])
    if c == channels:
        return image
    if convert:
        if c in (2, 4):  # gray + alpha, RGB + alpha
            image, c = image[: c - 1], c - 1
        if c == channels:
            return image
        if c == 1:
            return image.expand(channels, -1, -1).contiguous()
        if c == 3 and channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
            return (image * weights).sum(0, keepdim=True)
    names = {1: "grayscale", 2: "grayscale+alpha", 3: "RGB", 4: "RGBA"}
    hint = (
        "ask for conversion (convert_channels=True / --convert-channels: replicates grayscale, drops alpha)"
        if not convert
        else "give images with the model's channel count"
    )
    raise ChannelMismatchError(
        f"{where}: {names.get(c, str(c) + '-channel')} image ({c} channels), but the model takes "
        f"{channels} channels. Fix: {hint}"
    )


def _hwc_to_chw(array: np.ndarray, scale: float) -> torch.Tensor:
    """(h, w) or (h, w, c) array -> (c, h, w) float32 tensor divided by ``scale``."""
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensor.permute(2, 0, 1).contiguous() / scale


# ---------------------------------------------------------------------------------------------
# Sources


def _pil() -> Any:
    return import_optional("PIL.Image", pip_name="Pillow", purpose="Reading jpg/png calibration images")


def _decode_image(path: Path) -> torch.Tensor:
    """Decode one jpg/png file -> (c, h, w) float32 on [0, 1], c = 1, 2, 3 or 4 as stored."""
    image_mod = _pil()
    try:
        with image_mod.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":  # palette: a colour encoding; transparency becomes alpha
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode == "PA":
                im = im.convert("RGBA")
            elif mode == "1":
                im = im.convert("L")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode not in ("L", "LA", "RGB", "RGBA"):
                raise DataSourceError(
                    f"{path}: pixel mode {mode!r} (more than 8 bits per channel or not an image "
                    "mode vitrt reads). Fix: save it as 8-bit RGB jpg/png"
                )
            array = np.asarray(im)
    except DataSourceError:
        raise
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataSourceError(
            f"{path}: cannot decode the image ({type(exc).__name__}: {exc}). Fix: re-save it as "
            "jpg/png, or leave it out (remove it from the data folder, or from the images named)"
        ) from exc
    return _hwc_to_chw(array, 255.0)


def _list_images(folder: Path) -> list[Path]:
    """Every jpg/jpeg/png under ``folder`` (recursive, hidden entries skipped), in sorted order."""
    errors: list[OSError] = []
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, onerror=errors.append, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(root) / f
            for f in sorted(files)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    if errors:
        raise DataSourceError(
            f"cannot read the data folder: {errors[0]}. Fix: check that the folder and its "
            "subfolders exist and are readable"
        )
    return found


decode_image = _decode_image
"""Public name of the jpg/png decoder (``vitrt run`` decodes with it): path -> (c, h, w) float32 on [0, 1]."""
list_images = _list_images
"""Public name of the recursive image listing (``vitrt run`` lists a folder with it)."""


def _folder_source(folder: Path) -> _Source:
    files = _list_images(folder)
    if not files:
        raise DataSourceError(
            f"no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images under {folder} (searched "
            "recursively, hidden files skipped). Fix: point the data source at a folder of images, "
            "or use 'synthetic' / 'skimage' for a quick run"
        )
    _pil()  # fail now, not at the first batch, when Pillow is missing
    return _Source(
        name=str(folder),
        kind="image",
        size=len(files),
        load=lambda i: _decode_image(files[i]),
        describe=lambda i: str(files[i]),
    )


def _array_source(path: Path, cfg: PreprocessConfig, key: str | None) -> _Source:
    """A .npy (memory-mapped) or .npz array (the member is read whole) of samples.

    Accepted layouts: floating (N, C, H, W) equal to cfg.input_size: model-ready tensors used as
    they are; uint8 (N, h, w) grayscale, (N, h, w, c) or (N, c, h, w) images (channels-last first)
    that go through the preprocessing.
    """
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.files)
                if key is None and len(keys) != 1:
                    raise DataSourceError(
                        f"{path} holds {len(keys)} arrays {keys}; say which one to use. Fix: pass "
                        "npz_key=NAME (--npz-key NAME)"
                    )
                name = key if key is not None else keys[0]
                if name not in keys:
                    raise DataSourceError(f"{path} has no array {name!r}; it holds {keys}")
                array = npz[name]
    except DataSourceError:
        raise
    except Exception as exc:
        raise DataSourceError(
            f"{path}: cannot read the array file ({type(exc).__name__}: {exc}). Fix: save it with "
            "numpy.save / numpy.savez (no pickled objects)"
        ) from exc

    c, h, w = cfg.input_size
    where = f"{path}"
    if np.issubdtype(array.dtype, np.floating):
        if array.ndim != 4 or tuple(array.shape[1:]) != (c, h, w):
            raise DataSourceError(
                f"{where}: floating array of shape {array.shape}; floating arrays must be model-ready "
                f"tensors (N, {c}, {h}, {w}), already preprocessed. Fix: save preprocessed tensors of "
                f"that shape, or raw images as uint8 (N, height, width, channels)"
            )
        return _Source(
            name=where,
            kind="ready",
            size=int(array.shape[0]),
            load=lambda i: torch.from_numpy(np.array(array[i], dtype=np.float32)),
            describe=lambda i: f"{where}[{i}]",
            channels=c,
        )
    if array.dtype != np.uint8:
        raise DataSourceError(
            f"{where}: dtype {array.dtype}; image arrays must be uint8 (0..255) and model-ready "
            "tensors floating point. Fix: convert the array before saving it"
        )
    if array.ndim == 3:
        layout = "NHW"
    elif array.ndim == 4 and array.shape[-1] in (1, 2, 3, 4):
        layout = "NHWC"
    elif array.ndim == 4 and array.shape[1] in (1, 2, 3, 4):
        layout = "NCHW"
    else:
        raise DataSourceError(
            f"{where}: uint8 array of shape {array.shape} is not (N, h, w), (N, h, w, c) or "
            "(N, c, h, w) with c in 1..4. Fix: save images as (N, height, width, channels)"
        )

    def load(i: int) -> torch.Tensor:
        sample = np.asarray(array[i])
        if layout == "NCHW":
            return torch.from_numpy(np.array(sample, dtype=np.float32)) / 255.0
        return _hwc_to_chw(sample, 255.0)

    return _Source(where, "image", int(array.shape[0]), load, lambda i: f"{where}[{i}]")


def _skimage_source(channels: int, convert: bool) -> _Source:
    data = import_optional(
        "skimage.data", pip_name="scikit-image", purpose="The 'skimage' calibration source"
    )
    names: tuple[str, ...]
    if convert:
        names = SKIMAGE_RGB + SKIMAGE_GRAY + SKIMAGE_RGBA
    else:
        names = SKIMAGE_RGB if channels == 3 else SKIMAGE_GRAY if channels == 1 else ()
    if not names:
        raise ChannelMismatchError(
            f"skimage ships no {channels}-channel images. Fix: use another source, or convert_channels=True"
        )

    def load(i: int) -> torch.Tensor:
        try:
            array = np.asarray(getattr(data, names[i])())
        except Exception as exc:
            raise DataSourceError(
                f"skimage.data.{names[i]}() failed ({type(exc).__name__}: {exc}). Fix: reinstall "
                "scikit-image (pip install --force-reinstall scikit-image)"
            ) from exc
        return _hwc_to_chw(array, 255.0)

    return _Source("skimage", "image", len(names), load, lambda i: f"skimage.data.{names[i]}")


def _sklearn_source(which: str) -> _Source:
    datasets = import_optional(
        "sklearn.datasets", pip_name="scikit-learn", purpose=f"The {which!r} calibration source"
    )
    if which == "sklearn-digits":
        images = np.asarray(datasets.load_digits().images)  # (1797, 8, 8) float64, values 0..16
        return _Source(
            which,
            "image",
            int(images.shape[0]),
            lambda i: _hwc_to_chw(images[i], 16.0),
            lambda i: f"sklearn digits[{i}]",
            channels=1,
        )
    _pil()  # load_sample_images decodes its jpgs with Pillow
    bunch = datasets.load_sample_images()  # china.jpg, flower.jpg: (427, 640, 3) uint8
    pictures = [np.asarray(a) for a in bunch.images]
    names = [Path(f).name for f in bunch.filenames]
    return _Source(
        which,
        "image",
        len(pictures),
        lambda i: _hwc_to_chw(pictures[i], 255.0),
        lambda i: f"sklearn sample image {names[i]}",
        channels=3,
    )


def synthetic_image(index: int, seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Sample ``index`` of the synthetic source: (C, H, W) float32 on [0, 1].

    Smooth random structure (noise upsampled from 1/16 of the size) plus pixel noise; a function of
    (seed, index) alone, so batching does not change the samples.
    """
    c, h, w = (int(s) for s in shape)
    gen = torch.Generator().manual_seed((seed * 1_000_003 + index) % (2**63))
    coarse = torch.rand((1, c, max(h // 16, 2), max(w // 16, 2)), generator=gen)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    fine = torch.rand((c, h, w), generator=gen)
    return (0.8 * smooth + 0.2 * fine).clamp_(0.0, 1.0)


def _synthetic_source(cfg: PreprocessConfig, seed: int) -> _Source:
    return _Source(
        "synthetic",
        "sized",
        None,
        lambda i: synthetic_image(i, seed, cfg.input_size),
        lambda i: f"synthetic[{i}]",
        channels=cfg.input_size[0],
    )


# ---------------------------------------------------------------------------------------------
# The entry point


class CalibrationData:
    """A fixed, seeded selection of samples from one source, iterated in batches.

    Iterating yields torch.float32 tensors of shape (B, C, H, W) = (batch_size, *input_size); the
    last batch is smaller when batch_size does not divide num_samples. Every iteration yields the
    same batches. Built by ``open_source``.
    """

    def __init__(
        self,
        source: _Source,
        preprocess: PreprocessConfig,
        indices: np.ndarray,
        batch_size: int,
        *,
        spec: str,
        seed: int,
        convert_channels: bool,
        progress: bool,
    ) -> None:
        self._source = source
        self.preprocess = preprocess
        self.indices = indices
        self.batch_size = batch_size
        self.spec = spec
        self.seed = seed
        self.convert_channels = convert_channels
        self.progress = progress

    @property
    def num_samples(self) -> int:
        """Number of samples one iteration yields."""
        return int(self.indices.size)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every sample, in pixels."""
        c, h, w = self.preprocess.input_size
        return (c, h, w)

    def num_batches(self, drop_last: bool = False) -> int:
        """Batches per iteration; with ``drop_last`` only full batches count."""
        if drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches()

    def sample(self, index: int) -> torch.Tensor:
        """Sample ``index`` of the source (not of the order), preprocessed: (C, H, W) float32."""
        src = self._source
        image = src.load(index)
        where = src.describe(index)
        if src.kind == "ready":
            return image
        channels = self.preprocess.input_size[0]
        image = match_channels(image, channels, convert=self.convert_channels, where=where)
        if src.kind == "sized":
            return normalize(image, self.preprocess)
        return preprocess_image(image, self.preprocess, where=where)

    def batches(self, drop_last: bool = False) -> Iterator[torch.Tensor]:
        """Yield (B, C, H, W) float32 batches in the seeded order; see the class docstring."""
        n = self.num_batches(drop_last) * self.batch_size if drop_last else self.num_samples
        bar = progress_bar(n, f"calibration data ({self.spec})", self.progress)
        try:
            for start in range(0, n, self.batch_size):
                chunk = self.indices[start : min(start + self.batch_size, n)]
                batch = torch.empty((len(chunk), *self.sample_shape), dtype=torch.float32)
                for j, index in enumerate(chunk):
                    batch[j] = self.sample(int(index))
                bar.update(len(chunk))
                yield batch
        finally:
            bar.close()

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.batches()

    def following(self, num_samples: int) -> CalibrationData | None:
        """The next ``num_samples`` samples of the same seeded order: disjoint from this selection,
        for held-out evaluation. Fewer when the source runs out; None when nothing is left."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
        start = self.num_samples
        if self._source.size is None:
            indices = np.arange(start, start + num_samples, dtype=np.int64)
        else:
            order = np.random.default_rng(self.seed).permutation(self._source.size)
            indices = order[start : start + num_samples].astype(np.int64)
        if indices.size == 0:
            return None
        return CalibrationData(
            self._source,
            self.preprocess,
            indices,
            self.batch_size,
            spec=self.spec,
            seed=self.seed,
            convert_channels=self.convert_channels,
            progress=self.progress,
        )

    def describe(self) -> dict[str, Any]:
        """What the calibration saw, for reports: source, counts, seed, preprocessing."""
        return {
            "source": self.spec,
            "num_samples": self.num_samples,
            "available": self._source.size,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "convert_channels": self.convert_channels,
            "preprocess": self.preprocess.to_dict(),
        }


def open_source(
    spec: str | os.PathLike[str],
    preprocess: PreprocessConfig,
    num_samples: int,
    batch_size: int = 32,
    seed: int = 0,
    *,
    convert_channels: bool = False,
    npz_key: str | None = None,
    progress: bool = True,
) -> CalibrationData:
    """Open a representative data source for a model with preprocessing ``preprocess``.

    ``spec``: a folder of jpg/png images (recursive), a jpg/png file, a ``.npy``/``.npz`` file, or
    ``"skimage"``, ``"sklearn-digits"``, ``"sklearn-images"``, ``"synthetic"``.
    ``num_samples``: how many samples one iteration yields; a source with fewer yields all it has
    (warning on the "vitrt" logger). ``batch_size``: samples per batch. ``seed``: the sample order
    (a seeded permutation of the source) and the synthetic pixels.
    ``convert_channels``: replicate grayscale / drop alpha to reach the model's channel count;
    without it an image of another channel count raises ChannelMismatchError.
    ``npz_key``: the array to use in an .npz with several. ``progress``: show a progress bar.

    Returns a CalibrationData yielding float32 (B, C, H, W) batches, C, H, W = input_size. Raises
    DataSourceError (missing/empty/unreadable source, first sample unusable), ConfigError
    (bad counts), MissingDependencyError (Pillow, scikit-learn or scikit-image missing).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_preprocess(preprocess)
    channels = preprocess.input_size[0]
    text = os.fspath(spec)

    source: _Source
    if text == "synthetic":
        source = _synthetic_source(preprocess, seed)
    elif text == "skimage":
        source = _skimage_source(channels, convert_channels)
    elif text in ("sklearn-digits", "sklearn-images"):
        source = _sklearn_source(text)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            source = _folder_source(path)
        elif path.is_file() and path.suffix.lower() in (".npy", ".npz"):
            source = _array_source(path, preprocess, npz_key)
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            _pil()
            source = _Source(str(path), "image", 1, lambda i: _decode_image(path), lambda i: str(path))
        elif path.exists():
            raise DataSourceError(f"{path}: not a data source vitrt reads. Fix: give {_SPEC_HELP}")
        else:
            raise DataSourceError(f"{text!r}: no such file or folder. Fix: give {_SPEC_HELP}")

    if source.channels is not None and source.channels != channels and not convert_channels:
        kind = "grayscale" if source.channels == 1 else f"{source.channels}-channel"
        raise ChannelMismatchError(
            f"{source.name}: {kind} images, but the model takes {channels} channels. Fix: ask for "
            "conversion (convert_channels=True / --convert-channels) to replicate them"
        )

    if source.size is None:
        indices = np.arange(num_samples, dtype=np.int64)
    else:
        if source.size < num_samples:
            log.warning(
                "calibration data %s has %d samples, fewer than the %d asked for; calibrating on %d",
                source.name,
                source.size,
                num_samples,
                source.size,
            )
        order = np.random.default_rng(seed).permutation(source.size)
        indices = order[: min(num_samples, source.size)].astype(np.int64)

    data = CalibrationData(
        source,
        preprocess,
        indices,
        batch_size,
        spec=text,
        seed=seed,
        convert_channels=convert_channels,
        progress=progress,
    )
    data.sample(int(indices[0]))  # fail at open, not in the middle of calibration
    return data
