"""Fixtures of the runtime and profiling tests: one tiny vitrt export (DeiT-T at 32 x 32: 4 patches + the
class token, 10 classes, random init, portable lowering, batch 1), its INT8 file, and their cpu artifacts on
ONNX Runtime (one thread), made once per test session (per pytest-xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"fp32": .onnx, "int8": .onnx, "fp32.cpu": artifact folder, "int8.cpu": artifact folder}."""
    import vitrt
    from vitrt.compiler.export import ExportConfig, export_model, model_from_config

    folder = tmp_path_factory.mktemp("tiny")
    config = ExportConfig(
        "deit_tiny_patch16_224", lowering="portable", input_size=(3, 32, 32), img_size=32, num_classes=10
    )
    fp32 = export_model(model_from_config(config), folder / "deit_t.onnx", config)
    int8 = folder / "deit_t.int8.onnx"
    vitrt.calibrate(
        fp32,
        "synthetic",
        int8,
        num_samples=8,
        batch_size=8,
        eval_samples=4,
        sensitivity=False,
        progress=False,
    )
    files = {"fp32": fp32, "int8": int8}
    for key, path in list(files.items()):
        out = folder / f"{key}.cpu"
        vitrt.build(path, out, target="cpu", runtime="onnxruntime", threads=1)
        files[f"{key}.cpu"] = out
    return files
