"""Silence other packages' chatter while a vitrt command runs (``vitrt compile``, ``vitrt demo``).

onnx_ir and onnxscript log every pass of the exporter's optimizer (``export_model`` itself drops the
exporter's "torchvision is not installed" warnings), onnxscript and the exporter raise deprecation and
tracer warnings, ONNX Runtime's C++ logger prints graph warnings to stderr, and NNCF / OpenVINO log their
own progress. None of it is about the user's model, and vitrt reports what it did itself, so the command
hides it unless ``-v`` is given; errors still raise.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

THIRD_PARTY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "onnxscript",
    "onnx_ir",
    "onnxruntime",
    "onnxsim",
    "onnxslim",
    "polygraphy",
    "nncf",
    "openvino",
)
ORT_ERROR_SEVERITY = 3  # ONNX Runtime's C++ logger: 0 verbose, 1 info, 2 warning (default), 3 error


@contextmanager
def quiet_third_party(enabled: bool = True) -> Iterator[None]:
    """Within the block, drop Python warnings, log only errors from ``THIRD_PARTY_LOGGERS`` and only errors
    from ONNX Runtime's C++ logger; restore all three afterwards. A no-op when ``enabled`` is False."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in THIRD_PARTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    ort = _onnxruntime()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        if ort is not None:
            ort.set_default_logger_severity(ORT_ERROR_SEVERITY)
        # torch re-initialises its loggers' levels (torch._logging._init_logs) when parts of it load, which
        # undoes a plain setLevel on "torch.onnx"; its own log state survives that.
        torch_logging = _torch_logging()
        if torch_logging is not None:
            torch_logging.set_logs(onnx=logging.ERROR, export=logging.ERROR)
        try:
            yield
        finally:
            if torch_logging is not None:
                torch_logging.set_logs()  # torch's defaults
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            if ort is not None:
                ort.set_default_logger_severity(2)


def _torch_logging() -> Any:
    # Imported here, not lazily by the work in the block: importing torch resets its loggers' levels.
    try:
        import torch._logging
    except ImportError:
        return None
    return torch._logging


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime
