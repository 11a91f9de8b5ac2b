"""Deployment: runners (TensorRT, ONNX Runtime, OpenVINO, PyTorch) behind one interface, ``vitrt run`` and
latency profiling with trtexec's definitions, reports and plots.

``vitrt.deploy.open_runner(path_or_name, **options)`` opens an artifact folder, an ONNX file, a TensorRT
engine or a model name (``vitrt.deploy.sources``); it is imported on first access, so importing this
package loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

if __name__.partition(".")[0] != "vitrt":  # the repository root on sys.path exposes the folder too
    raise ImportError(f"import vitrt.{__name__}, not {__name__}: vitrt's stages have one import name")

_LAZY = {"open_runner": "sources", "resolve_source": "sources", "Runner": "runners", "TensorSpec": "runners"}


def __getattr__(name: str) -> Any:
    """``open_runner`` and friends from their modules on first access (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
