"""INT8 calibration: representative data, activation ranges, scales, TensorRT calibration cache.

>>> from calibration import open_source, ActivationRanges, write_cache
>>> data = open_source("images/", model.preprocess, num_samples=256, batch_size=32, seed=0)
>>> ranges = ActivationRanges()
>>> for batch in data:
...     ranges.update("input", batch)
>>> write_cache("model.calib.cache", ranges.scales("entropy"), trt_version="10.3.0")

Optional packages are imported on first use: Pillow (image files, sklearn-images), scikit-learn,
scikit-image, tqdm (progress bar), tensorrt + cuda-python (trt_calibrator).
"""

from .cache import CalibrationCache, read_cache, write_cache
from .data import CalibrationData, open_source
from .errors import CacheError, CalibrationError, ChannelMismatchError, DataSourceError
from .ranges import METHODS, ActivationRanges, RangeCollector, RangeMethod, scale_from_amax, weight_scales

__all__ = [
    "METHODS",
    "ActivationRanges",
    "CacheError",
    "CalibrationCache",
    "CalibrationData",
    "CalibrationError",
    "ChannelMismatchError",
    "DataSourceError",
    "RangeCollector",
    "RangeMethod",
    "open_source",
    "read_cache",
    "scale_from_amax",
    "weight_scales",
    "write_cache",
]
