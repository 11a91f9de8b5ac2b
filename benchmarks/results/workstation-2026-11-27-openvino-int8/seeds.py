"""OpenVINO against ONNX Runtime cosine of the INT8 / INT8+FP16 DeiT-T files (as tests/conftest.py's
precision_files builds them), over init seeds, with torch 2.13's trunc_normal_ ("theirs") and vitrt's
("ours"). Usage: seeds.py theirs ours"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import vitrt
import vitrt.models.deit as deit
import vitrt.models.layers as layers
from vitrt.calibration.metrics import agreement
from vitrt.compiler.build import build
from vitrt.compiler.export import ExportConfig, export_model, model_from_config
from vitrt.deploy.runners import OnnxRuntimeRunner

OURS = layers.trunc_normal_


def theirs(t: torch.Tensor, std: float = 0.02, a: float = -0.04, b: float = 0.04) -> torch.Tensor:
    return torch.nn.init.trunc_normal_(t, std=std, a=a, b=b)


FEED = {"images": np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)}


def cosines(folder: Path, seed: int) -> list[float]:
    config = ExportConfig(
        "deit_tiny_patch16_224",
        lowering="portable",
        input_size=(3, 32, 32),
        img_size=32,
        num_classes=10,
        seed=seed,
    )
    fp32 = export_model(model_from_config(config), folder / "deit_t.onnx", config)
    int8, int8_fp16 = folder / "deit_t.int8.onnx", folder / "deit_t.int8.fp16.onnx"
    vitrt.calibrate(
        fp32, "synthetic", int8, num_samples=8, batch_size=8, eval_samples=4,
        sensitivity=False, progress=False,
    )  # fmt: skip
    vitrt.fp16(int8, int8_fp16, check=False)
    row = []
    for source in (int8, int8_fp16):
        build(source, folder / f"art_{source.stem}", target="cpu", runtime="openvino")
        reference = OnnxRuntimeRunner(source).infer(FEED)["logits"]
        got = vitrt.load_artifact(folder / f"art_{source.stem}").infer(FEED)["logits"]
        row.append(agreement(reference, got).mean_cosine)
    return row


def main() -> None:
    for init in sys.argv[1:]:
        layers.trunc_normal_ = deit.trunc_normal_ = OURS if init == "ours" else theirs  # type: ignore[assignment]
        for seed in range(8):
            with tempfile.TemporaryDirectory() as tmp:
                row = cosines(Path(tmp), seed)
            print(init, seed, " ".join(f"{c:.4f}" for c in row), flush=True)


if __name__ == "__main__":
    main()
