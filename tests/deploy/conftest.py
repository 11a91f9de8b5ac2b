"""Fixtures of the runtime and profiling tests: one tiny vitrt export (DeiT-T at 32 x 32: 4 patches + the
class token, 10 classes, random init, portable lowering, batch 1), its INT8 file, and their cpu artifacts on
ONNX Runtime (one thread), made once per test session (per pytest-xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, precision_files: dict[str, Path]) -> dict[str, Path]:
    """{"fp32" / "int8" / "fp16": .onnx, "fp32.cpu" / "int8.cpu" / "fp16.cpu": artifact folders}: the shared
    DeiT-T export, its INT8 and FP16 files (``precision_files``) built as cpu artifacts on ONNX Runtime."""
    import vitrt

    folder = tmp_path_factory.mktemp("tiny")
    files = {key: precision_files[key] for key in ("fp32", "int8", "fp16")}
    for key, path in list(files.items()):
        out = folder / f"{key}.cpu"
        vitrt.build(path, out, target="cpu", runtime="onnxruntime", threads=1)
        files[f"{key}.cpu"] = out
    return files
