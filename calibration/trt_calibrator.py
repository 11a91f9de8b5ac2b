"""An IInt8EntropyCalibrator2 that feeds vitrt's calibration data to TensorRT 10.x.

Implicit INT8 (calibrators, caches) was deprecated in TensorRT 10.1 and removed in 11.0; vitrt's
main INT8 path is the Q/DQ ONNX. This calibrator is for TensorRT 10.x targets (JetPack 6: 10.3).
``tensorrt`` and cuda-python are imported inside ``make_entropy_calibrator`` only, so this module
imports on machines without them.

>>> import tensorrt as trt
>>> data = open_source("images/", preprocess, num_samples=512, batch_size=16)
>>> calibrator = make_entropy_calibrator(data, "model.calib.cache")
>>> config.set_flag(trt.BuilderFlag.INT8)
>>> config.int8_calibrator = calibrator
>>> plan = builder.build_serialized_network(network, config)
>>> calibrator.raise_if_failed(); calibrator.close()
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import import_optional
from .cache import ENTROPY_CALIBRATION_2, atomic_write_bytes, loads, trt_version_number
from .data import CalibrationData
from .errors import CacheError, CalibrationError

log = logging.getLogger(__name__)


def _import_cudart() -> Any:
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (12.6+), else ``cuda.cudart``.

    Typed Any: cuda-python is not installed where vitrt is type-checked.
    """
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return import_optional(
            "cuda.cudart", pip_name="cuda-python", purpose="Feeding calibration batches to TensorRT"
        )


def _cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python call's (error, *values) and raise CalibrationError on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise CalibrationError(f"{what} failed: {err}. Fix: check the GPU, its driver and free memory")
    return values[0] if len(values) == 1 else tuple(values)


def make_entropy_calibrator(data: CalibrationData | None, cache_path: str | os.PathLike[str]) -> Any:
    """Build a ``tensorrt.IInt8EntropyCalibrator2`` subclass instance over ``data``.

    ``data``: batches of float32 (B, C, H, W) for the network's single input; only full batches are
    fed (TensorRT needs a fixed batch size), B = data.batch_size. ``None``: cache only, the cache at
    ``cache_path`` must be valid. ``cache_path``: read if it exists and was written for this
    TensorRT version with EntropyCalibration2 (else ignored with a warning and recomputed), written
    atomically after calibration.

    Returns the calibrator (typed Any: tensorrt is not installed where vitrt is type-checked). It
    has ``close()`` (frees the device buffer), ``raise_if_failed()`` (re-raises an error from a
    callback, which TensorRT would otherwise only log) and ``batches_fed``.
    Raises MissingDependencyError without tensorrt / cuda-python, CalibrationError on TensorRT 11+.
    """
    trt = import_optional("tensorrt", pip_name="tensorrt", purpose="TensorRT INT8 calibration")
    version = str(trt.__version__)
    if int(version.split(".")[0]) >= 11 or not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise CalibrationError(
            f"TensorRT {version} has no implicit INT8 calibration (removed in 11.0). Fix: build "
            "from vitrt's Q/DQ INT8 ONNX (explicit quantization) instead of a calibrator"
        )
    cudart: Any = _import_cudart() if data is not None else None
    if data is not None and data.num_batches(drop_last=True) == 0:
        raise CalibrationError(
            f"{data.num_samples} calibration samples do not fill one batch of {data.batch_size}. "
            "Fix: use more samples or a smaller batch size"
        )
    path = Path(cache_path)
    version_number = trt_version_number(version)

    base: Any = trt.IInt8EntropyCalibrator2  # Any: tensorrt is not installed for type checking

    class VitrtEntropyCalibrator(base):
        """Feeds CalibrationData batches through one device buffer; caches via vitrt.calibration.cache."""

        def __init__(self) -> None:
            base.__init__(self)
            self.data = data
            self.cache_path = path
            self.error: BaseException | None = None
            self.batches_fed = 0
            self._batches: Any = None
            self._device_ptr = 0
            self._nbytes = 0

        def get_batch_size(self) -> int:
            return self.data.batch_size if self.data is not None else 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            """Device pointers (one per input name) of the next batch; None when done."""
            if self.data is None or self.error is not None:
                return None
            try:
                if len(names) != 1:
                    raise CalibrationError(
                        f"the network has inputs {list(names)}; vitrt's calibrator feeds one image input"
                    )
                if self._batches is None:
                    self._batches = self.data.batches(drop_last=True)
                batch = next(self._batches, None)
                if batch is None:
                    return None
                host = np.ascontiguousarray(batch.numpy(), dtype=np.float32)
                if self._device_ptr == 0:
                    self._device_ptr = int(_cuda_check(cudart, cudart.cudaMalloc(host.nbytes), "cudaMalloc"))
                    self._nbytes = host.nbytes
                if host.nbytes != self._nbytes:
                    raise CalibrationError(f"batch of {host.nbytes} bytes, buffer of {self._nbytes}")
                kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                _cuda_check(
                    cudart,
                    cudart.cudaMemcpy(self._device_ptr, host.ctypes.data, host.nbytes, kind),
                    "cudaMemcpy (calibration batch to device)",
                )
                self.batches_fed += 1
                return [self._device_ptr]
            except Exception as exc:  # TensorRT only logs exceptions raised in callbacks
                self.error = exc
                log.error("calibration batch %d failed: %s", self.batches_fed + 1, exc)
                return None

        def read_calibration_cache(self) -> bytes | None:
            """The cache's bytes when it exists and fits this TensorRT, else None (calibrate)."""
            if not self.cache_path.exists():
                if self.data is None:
                    self.error = CacheError(
                        f"no calibration cache at {self.cache_path} and no calibration data. Fix: "
                        "give calibration data, or the path of a cache written for this TensorRT"
                    )
                return None
            try:
                raw = self.cache_path.read_bytes()
                parsed = loads(raw, source=str(self.cache_path))
            except (OSError, CacheError) as exc:
                log.warning("ignoring calibration cache %s: %s", self.cache_path, exc)
                return None
            if parsed.version != version_number or parsed.algorithm != ENTROPY_CALIBRATION_2:
                log.warning(
                    "ignoring calibration cache %s: header %s, this TensorRT %s expects TRT-%d-%s",
                    self.cache_path,
                    parsed.header,
                    version,
                    version_number,
                    ENTROPY_CALIBRATION_2,
                )
                return None
            log.info("using calibration cache %s (%d tensors)", self.cache_path, len(parsed.scales))
            return raw

        def write_calibration_cache(self, cache: Any) -> None:
            """Store TensorRT's cache bytes unchanged, atomically."""
            raw = bytes(cache)
            try:
                loads(raw, source="TensorRT's calibration cache")
            except CacheError as exc:
                log.warning("TensorRT wrote a cache vitrt cannot parse (%s); saving it as is", exc)
            try:
                atomic_write_bytes(self.cache_path, raw)
            except CacheError as exc:
                self.error = exc
                log.error("%s", exc)

        def raise_if_failed(self) -> None:
            """Re-raise the first error a callback hit (TensorRT only logs them)."""
            if self.error is not None:
                if isinstance(self.error, CalibrationError):
                    raise self.error
                raise CalibrationError(f"calibration failed: {self.error}") from self.error

        def close(self) -> None:
            """Free the device buffer (idempotent)."""
            if self._device_ptr and cudart is not None:
                _cuda_check(cudart, cudart.cudaFree(self._device_ptr), "cudaFree")
            self._device_ptr = 0

        def __enter__(self) -> VitrtEntropyCalibrator:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    return VitrtEntropyCalibrator()
