"""Fixtures of the runtime and profiling tests: one tiny vitrt export (DeiT-T at 32 x 32: 4 patches + the
class token, 10 classes, random init, portable lowering, batch 1), its INT8 file, and their cpu artifacts on
ONNX Runtime (one thread), made once per test session (per pytest-xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, precision_files: dict[str, Path]) -> dict[str, Path]:
    """{"fp32": .onnx, "int8": .onnx, "fp32.cpu": artifact folder, "int8.cpu": artifact folder}: the shared
    DeiT-T export and its INT8 file (``precision_files``) built as cpu artifacts on ONNX Runtime."""
    import vitrt

    folder = tmp_path_factory.mktemp("tiny")
    files = {"fp32": precision_files["fp32"], "int8": precision_files["int8"]}
    for key, path in list(files.items()):
        out = folder / f"{key}.cpu"
        vitrt.build(path, out, target="cpu", runtime="onnxruntime", threads=1)
        files[f"{key}.cpu"] = out
    return files
