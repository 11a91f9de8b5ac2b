"""Errors of the calibration stage: each names the problem and the fix (see vitrt.errors)."""

from __future__ import annotations

from vitrt.errors import VitrtError


class CalibrationError(VitrtError):
    """A calibration input or intermediate result that the user can fix."""


class DataSourceError(CalibrationError):
    """Representative data that cannot be found, read or fed to the model."""


class ChannelMismatchError(DataSourceError):
    """An image whose channel count differs from the model's input channels."""


class CacheError(CalibrationError):
    """A TensorRT calibration cache that cannot be written or parsed."""


class MissingDependencyError(CalibrationError):
    """An optional Python package that this feature needs is not installed."""


class NoQuantizableOpError(CalibrationError):
    """A model with no MatMul, Gemm or Conv that can be quantized (or all of them excluded)."""
