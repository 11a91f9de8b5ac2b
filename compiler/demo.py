"""`make demo`: the whole CPU pipeline on one model, printing what happened at each stage.

model card -> export (plugin and portable lowerings) -> verify both on ONNX Runtime against PyTorch
-> INT8 calibration (explicit Q/DQ) on the images scikit-image ships -> CPU latency of PyTorch,
ONNX Runtime FP32 and INT8. TensorRT engines join when a TensorRT machine runs it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch


def run_demo(
    model_name: str = "t2t_vit_7",
    img_size: int = 224,
    fusion: str | None = "mctf",
    workdir: str = "artifacts/demo",
    iterations: int = 20,
) -> int:
    """Run the pipeline on ``model_name`` (random init, seed 0); returns the exit status (0: every
    verification passed). Artifacts go to ``workdir``."""
    import onnx

    from vitrt.calibration import calibrate_onnx
    from vitrt.deploy.latency import measure_interleaved
    from vitrt.deploy.runners import OnnxRuntimeRunner

    from .export import ExportConfig, export_onnx, model_from_config
    from .inspect import model_card
    from .verify import verify_onnx

    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    print(model_card(model_name, img_size=img_size, fusion=fusion), flush=True)
    status = 0
    paths = {}
    for lowering in ("plugin", "portable"):
        timings: dict[str, float] = {}
        paths[lowering] = export_onnx(
            model_name,
            out / f"{model_name}.{lowering}.onnx",
            lowering=lowering,
            img_size=img_size,
            fusion=fusion,
            timings=timings,
        )
        ops = Counter(n.op_type for n in onnx.load(str(paths[lowering])).graph.node if n.domain == "vitrt")
        report, _, _ = verify_onnx(paths[lowering], atol=1e-4, rtol=1e-3, iterations=2)
        status |= 0 if report.passed else 1
        print(
            f"\nexport {lowering}: {paths[lowering]} in {timings['trace']:.1f} s "
            f"(+{timings['simplify']:.1f} s simplify), plugin nodes {dict(ops) or 'none'}\n{report.format()}",
            flush=True,
        )
    int8_path = out / f"{model_name}.int8.onnx"
    # The offline images: scikit-image's 8 colour photos calibrate, scikit-learn's 2 (disjoint) evaluate.
    result = calibrate_onnx(
        paths["portable"],
        "skimage",
        int8_path,
        num_samples=8,
        eval_data="sklearn-images",
        eval_samples=2,
        sensitivity=False,
        progress=False,
    )
    kept = len(result.layers) - len(result.quantized)
    print(
        f"\nINT8 (explicit Q/DQ, entropy ranges, scikit-image's 8 photos): {int8_path}; "
        f"{len(result.quantized)} layers INT8, {kept} kept float",
        flush=True,
    )
    if result.agreement is not None:
        agree = result.agreement
        print(
            f"  vs FP32 on scikit-learn's {agree.samples} sample photos: top-1 agreement "
            f"{100 * agree.top1_agreement:.0f} %, mean cosine {agree.mean_cosine:.5f}"
        )
    model = model_from_config(ExportConfig(model_name, fusion=fusion, img_size=img_size))
    x = torch.randn(1, 3, img_size, img_size)
    feed = {"images": x.numpy().astype(np.float32)}
    fp32, int8 = OnnxRuntimeRunner(paths["portable"]), OnnxRuntimeRunner(int8_path)

    def eager() -> object:
        with torch.no_grad():
            return model(x)

    stats = measure_interleaved(
        {
            "pytorch eager": eager,
            "onnxrt fp32": lambda: fp32.infer(feed),
            "onnxrt int8": lambda: int8.infer(feed),
        },
        iterations=iterations,
    )
    base = stats["pytorch eager"].median
    print(f"\nCPU latency, batch 1, {torch.get_num_threads()} threads:")
    for name, st in stats.items():
        print(f"  {name:<14} {st.format()}  ({st.median / base:.2f} x eager)")
    print("\nTensorRT engines (plugin lowering) need a TensorRT machine: see README, issue 7.")
    return status
