"""INT8 calibration: representative data, activation ranges, explicit Q/DQ, TensorRT calibration cache.

>>> from vitrt.calibration import calibrate_onnx
>>> result = calibrate_onnx("model.onnx", "images/", "model.int8.onnx", method="entropy",
...                         num_samples=256, error_budget=0.005, cache="model.calib.cache",
...                         report="model.int8.json")

The pieces, for other uses:

>>> from vitrt.calibration import open_source, ActivationRanges, write_cache
>>> data = open_source("images/", model.preprocess, num_samples=256, batch_size=32, seed=0)
>>> ranges = ActivationRanges()
>>> for batch in data:
...     ranges.update("input", batch)
>>> write_cache("model.calib.cache", ranges.scales("entropy"), trt_version="10.3.0")

Optional packages are imported on first use: onnx + onnxruntime (graph work, range collection),
Pillow (image files, sklearn-images), scikit-learn, scikit-image, tqdm (progress bar), tensorrt +
cuda-python (trt_calibrator).
"""

if __name__.partition(".")[0] != "vitrt":  # the repository root on sys.path exposes the folder too
    raise ImportError(f"import vitrt.{__name__}, not {__name__}: vitrt's stages have one import name")

from .cache import CalibrationCache, read_cache, write_cache
from .calibrate import CalibrationResult, calibrate_onnx
from .collect import collect_ranges, default_runner_factory
from .data import CalibrationData, open_source
from .errors import (
    CacheError,
    CalibrationError,
    ChannelMismatchError,
    DataSourceError,
    NoQuantizableOpError,
)
from .graph import Layer, find_layers
from .metrics import Agreement, agreement
from .qdq import insert_qdq
from .ranges import METHODS, ActivationRanges, RangeCollector, RangeMethod, scale_from_amax, weight_scales

__all__ = [
    "METHODS",
    "ActivationRanges",
    "Agreement",
    "CacheError",
    "CalibrationCache",
    "CalibrationData",
    "CalibrationError",
    "CalibrationResult",
    "ChannelMismatchError",
    "DataSourceError",
    "Layer",
    "NoQuantizableOpError",
    "RangeCollector",
    "RangeMethod",
    "agreement",
    "calibrate_onnx",
    "collect_ranges",
    "default_runner_factory",
    "find_layers",
    "insert_qdq",
    "open_source",
    "read_cache",
    "scale_from_amax",
    "weight_scales",
    "write_cache",
]
