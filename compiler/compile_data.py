"""Data for ``vitrt compile``: the evaluation set (images and, where known, labels) and the content identity
of a data source for the stage cache.

Evaluation sources are the calibration sources (``vitrt.calibration.open_source``: image folders, ``.npy`` /
``.npz``, ``skimage``, ``sklearn-digits``, ``sklearn-images``, ``synthetic``). Labels come with two of them:

- an ``.npz`` holding ``images`` and ``labels`` (int class indices, one per image): ``images`` is read as any
  ``.npz`` member is (model-ready float32 (N, C, H, W), or uint8 images that get the model's preprocessing);
- ``sklearn-digits``: scikit-learn's digit classes.

With labels the verify stage reports top-1 accuracy; without, agreement with the FP32 reference.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrt.calibration.errors import DataSourceError
from vitrt.fileio import file_sha256

if TYPE_CHECKING:
    from vitrt.models.config import PreprocessConfig

PathLike = str | os.PathLike[str]

IMAGES_KEY, LABELS_KEY = "images", "labels"
DEFAULT_EVAL = "synthetic"


@dataclass(frozen=True)
class EvalSet:
    """Evaluation samples: ``images`` float32 (N, C, H, W), model-ready; ``labels`` int64 (N,) or None;
    ``source``: the spec they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def data_identity(spec: PathLike) -> dict[str, Any]:
    """What a data source's content is, for cache keys: the name of a built-in source, a file's SHA-256, or a
    folder's SHA-256 over its files' relative paths and SHA-256s (sorted)."""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return {"file": path.name, "sha256": file_sha256(path)}
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path).as_posix()}:{file_sha256(f)}\n".encode())
        return {"folder": path.name, "sha256": digest.hexdigest()}
    return {"builtin": text}


def _npz_labels(path: Path) -> np.ndarray | None:
    if path.suffix.lower() != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if LABELS_KEY not in npz.files:
                return None
            return np.asarray(npz[LABELS_KEY]).astype(np.int64).reshape(-1)
    except (OSError, ValueError) as err:
        raise DataSourceError(f"{path}: cannot read its labels ({err})") from err


def open_eval_set(
    spec: PathLike,
    preprocess: PreprocessConfig,
    num_samples: int,
    *,
    convert_channels: bool = False,
    seed: int = 0,
) -> EvalSet:
    """Up to ``num_samples`` evaluation samples of ``spec`` in ``preprocess``'s form, with labels where the
    source has them (module docstring). The samples are a seeded selection as in calibration. Raises
    DataSourceError (unreadable source, label count that differs from the image count)."""
    from vitrt.calibration.data import open_source

    text = os.fspath(spec)
    path = Path(text).expanduser()
    labels_all = _npz_labels(path) if path.is_file() else None
    npz_key = IMAGES_KEY if labels_all is not None else None
    data = open_source(
        text,
        preprocess,
        num_samples,
        batch_size=64,
        seed=seed,
        convert_channels=convert_channels,
        npz_key=npz_key,
        progress=False,
    )
    images = np.concatenate([b.numpy() for b in data.batches()]).astype(np.float32)
    labels: np.ndarray | None = None
    if labels_all is not None:
        available = data.describe()["available"]
        if available is not None and labels_all.shape[0] != available:
            raise DataSourceError(
                f"{path}: {labels_all.shape[0]} labels for {available} images. Fix: one label per image"
            )
        labels = labels_all[data.indices]
    elif text == "sklearn-digits":
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]

        labels = np.asarray(load_digits().target, dtype=np.int64)[data.indices]
    return EvalSet(images, labels, text)
