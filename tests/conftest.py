"""Shared test settings: deterministic, thread-limited torch so the CPU suite is fast and stable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores on CI, shared by two pytest-xdist workers: more threads than cores only adds contention.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def precision_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """DeiT-T at 32 x 32 (4 patches + the class token, 10 classes, random init, portable lowering) as
    ``vitrt export`` writes it, and its INT8 (``vitrt calibrate``, 8 synthetic samples), FP16 and INT8+FP16
    (``vitrt fp16``) files: {"fp32": path, "int8": ..., "fp16": ..., "int8+fp16": ...}."""
    import vitrt
    from vitrt.compiler.export import ExportConfig, export_model, model_from_config

    folder = tmp_path_factory.mktemp("precision_files")
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
    fp16, int8_fp16 = folder / "deit_t.fp16.onnx", folder / "deit_t.int8.fp16.onnx"
    vitrt.fp16(fp32, fp16, check=False)
    vitrt.fp16(int8, int8_fp16, check=False)
    return {"fp32": fp32, "int8": int8, "fp16": fp16, "int8+fp16": int8_fp16}
