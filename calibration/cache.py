"""TensorRT's INT8 calibration cache (the text file IInt8EntropyCalibrator2 reads and writes).

Format, as found in public sources (no NVIDIA document specifies it):

    TRT-<version>-EntropyCalibration2
    <tensor name>: <scale as 8 hex digits>
    ...

- The scale is the per-tensor symmetric int8 scale (amax / 127), written as the bits of its IEEE-754
  float32 value in hex, most significant first: 1/127 = 0.007874 -> ``3c010204``. onnxruntime's
  TensorRT execution provider parses it so (``ReadDynamicRange`` in
  microsoft/onnxruntime onnxruntime/core/providers/tensorrt/tensorrt_execution_provider_utils.h:
  "tensor name : scale in 32-bit single precision IEEE754 format", example
  ``TRT-7103-EntropyCalibration2`` / ``data_0: 4000889d``; it takes dynamic range = scale * 127),
  and NVIDIA's TAO exporters write it from amax / 127 with
  ``hex(struct.unpack("i", struct.pack("f", scale)))``.
- ``<version>`` is NV_TENSORRT_VERSION of the TensorRT that wrote it: major * 10000 + minor * 100 +
  patch from TensorRT 10 (NvInferVersion.h, ``NV_TENSORRT_VERSION_INT``), so 10.3.0 ->
  ``TRT-100300-EntropyCalibration2`` as seen in caches of JetPack 6 users; major * 1000 + minor *
  100 + patch before (8.6.1 -> 8601, 7.1.3 -> 7103). TensorRT 10 rejects a cache whose header names
  another version (reported by users who edit the header of old caches), so write the version
  of the TensorRT that will build the engine.
- Tensor names may contain ':' (TensorFlow's ``input_1:0``): the value follows the last ':'.

Writes are atomic (temporary file in the same folder, fsync, rename): a failure leaves any previous
file as it was and no partial file.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_write_bytes

from .errors import CacheError

ENTROPY_CALIBRATION_2 = "EntropyCalibration2"
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,8}$")


def trt_version_number(version: str | int) -> int:
    """NV_TENSORRT_VERSION for a version string: "10.3.0" -> 100300, "8.6.1.6" -> 8601.

    An int is returned unchanged (already the number).
    """
    if isinstance(version, int):
        return version
    parts = version.strip().split(".")
    try:
        major, minor, patch = (int(p) for p in [*parts, "0", "0"][:3])
    except ValueError as exc:
        raise CacheError(f"TensorRT version {version!r} is not like '10.3.0'") from exc
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def format_header(trt_version: str | int, algorithm: str = ENTROPY_CALIBRATION_2) -> str:
    """The first line: ``TRT-<NV_TENSORRT_VERSION>-<algorithm>`` (no newline)."""
    if algorithm not in ALGORITHMS:
        raise CacheError(f"calibration algorithm {algorithm!r} is not one of {list(ALGORITHMS)}")
    return f"TRT-{trt_version_number(trt_version)}-{algorithm}"


def encode_scale(scale: float) -> str:
    """A positive finite scale -> 8 hex digits of its float32 bits, big-endian (1/127 -> 3c010204)."""
    if not (math.isfinite(scale) and scale > 0):
        raise CacheError(f"scale {scale!r} must be positive and finite")
    try:
        packed = struct.pack(">f", scale)
    except OverflowError:
        packed = b""
    if not packed or struct.unpack(">f", packed)[0] == 0.0:
        raise CacheError(f"scale {scale!r} is outside float32's positive range")
    return packed.hex()


def decode_scale(text: str) -> float:
    """8 (or fewer, zero-padded on the left) hex digits of float32 bits -> the float value."""
    text = text.strip()
    if not _HEX.match(text):
        raise CacheError(f"{text!r} is not the hex of a float32 (up to 8 hex digits)")
    return float(struct.unpack(">f", bytes.fromhex(text.rjust(8, "0")))[0])


@dataclass
class CalibrationCache:
    """A parsed cache: header fields and {tensor name: float32 scale} in file order."""

    version: int
    algorithm: str
    scales: dict[str, float] = field(default_factory=dict)

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}"

    def amaxes(self) -> dict[str, float]:
        """{tensor name: amax = scale * 127}, the dynamic range TensorRT uses."""
        return {name: scale * 127.0 for name, scale in self.scales.items()}


def dumps(
    scales: Mapping[str, float], *, trt_version: str | int, algorithm: str = ENTROPY_CALIBRATION_2
) -> str:
    """The cache text for {tensor name: scale} (scales rounded to float32), newline-terminated."""
    lines = [format_header(trt_version, algorithm)]
    for name, scale in scales.items():
        if not name or "\n" in name or "\r" in name:
            raise CacheError(f"tensor name {name!r} cannot be written in a calibration cache")
        try:
            lines.append(f"{name}: {encode_scale(float(scale))}")
        except CacheError as exc:
            raise CacheError(f"tensor {name!r}: {exc}") from None
    return "\n".join(lines) + "\n"


def loads(text: str | bytes, *, source: str = "calibration cache") -> CalibrationCache:
    """Parse cache text. Raises CacheError naming the line for a bad header, line or duplicate."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CacheError(f"{source}: not a text file ({exc}); is it an engine or timing cache?") from exc
    lines = text.splitlines()
    if not lines:
        raise CacheError(f"{source}: empty file. Fix: delete it and calibrate again")
    match = _HEADER.match(lines[0].strip())
    if not match:
        raise CacheError(
            f"{source}: first line {lines[0][:80]!r} is not a TensorRT calibration header like "
            "'TRT-100300-EntropyCalibration2'"
        )
    cache = CalibrationCache(int(match.group(1)), match.group(2))
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        if not sep or not name:
            raise CacheError(f"{source}, line {number}: {line[:80]!r} is not 'tensor name: hex scale'")
        try:
            scale = decode_scale(value)
        except CacheError as exc:
            raise CacheError(f"{source}, line {number}: {exc}") from None
        if name in cache.scales:
            raise CacheError(f"{source}, line {number}: tensor {name!r} appears twice")
        cache.scales[name] = scale
    return cache


def write_cache(
    path: str | os.PathLike[str],
    scales: Mapping[str, float],
    *,
    trt_version: str | int,
    algorithm: str = ENTROPY_CALIBRATION_2,
) -> Path:
    """Write {tensor name: int8 scale (amax / 127)} as a TensorRT calibration cache, atomically.

    ``trt_version``: the TensorRT that will read it ("10.3.0" for JetPack 6.1/6.2), which must match.
    Everything is validated before the file is touched. Returns the path.
    """
    text = dumps(scales, trt_version=trt_version, algorithm=algorithm)
    try:
        return atomic_write_bytes(path, text.encode("utf-8"))
    except VitrtError as err:
        raise CacheError(str(err)) from err


def read_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    """Parse the calibration cache at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CacheError(f"cannot read calibration cache {path}: {exc}") from exc
    return loads(data, source=str(path))
