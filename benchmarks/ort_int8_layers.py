"""One layer on ONNX Runtime's CPU kernels, float vs INT8 in vitrt's ONNX Runtime form: the measurements
behind the cost model of ``vitrt calibrate --for onnxruntime`` (``vitrt/calibration/cost.py``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ort_int8_layers.py [--threads 2] [--rounds 5]
        [--iterations 200] [--json out.json]

Each case is a one-layer graph at batch 1, timed interleaved (``vitrt.deploy.latency.measure_interleaved``)
against its float twin over ``--rounds`` rounds; the ratio (INT8 / float median) is reported as the
median of the rounds with its range:

- weight layers, M x K x N (M rows per sample, K inputs, N outputs): float ``Gemm(x, W, b)`` vs
  ``QuantizeLinear(x) -> DequantizeLinear -> Gemm(., DQ(W_int8, per channel), DQ(b_int32))``, which ONNX
  Runtime fuses into one QGemm, so the INT8 side pays its QuantizeLinear pass as a quantized layer does
  in a model. The shapes are those of the digits models (64 x 64, 96 wide), of DeiT-S / T2T-ViT-14 at 224
  and the narrow layers of the T2T token performer;
- products of two activations (attention scores q k^T and context p v, heads batched): float MatMul vs
  both inputs through Q/DQ (ONNX Runtime's MatMulIntegerToFloat).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vitrt.deploy.latency import measure_interleaved  # noqa: E402

WEIGHT_SHAPES = (
    (256, 147, 96),  # T2T token performer 1: kqv (digits)
    (256, 32, 32),  # its proj and MLP
    (64, 288, 96),  # performer 2: kqv
    (64, 32, 32),
    (16, 288, 96),  # T2T project
    (17, 96, 288),  # T2T blocks (17 tokens): qkv
    (17, 96, 192),  # fc1
    (17, 192, 96),  # fc2
    (17, 96, 96),  # proj
    (65, 96, 288),  # DeiT digits (65 tokens)
    (65, 96, 96),
    (65, 96, 192),
    (1, 96, 10),  # digits head
    (197, 384, 1152),  # DeiT-S / T2T-ViT-14 at 224: qkv
    (197, 384, 384),  # proj
    (197, 384, 1536),  # fc1
)
ATTENTION_SHAPES = ((4, 17, 24), (4, 65, 24), (6, 197, 64))  # heads, tokens, head width


def _session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _model(nodes: list[Any], inputs: list[Any], inits: list[Any]) -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "layer", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def weight_layer(m: int, k: int, n: int, int8: bool, rng: np.random.Generator) -> Any:
    """Gemm(x [m, k], W [k, n], b [n]): float, or vitrt's ONNX Runtime form (int32 bias)."""
    from onnx import TensorProto, helper, numpy_helper

    from vitrt.calibration.qdq import quantize_weight

    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
    if not int8:
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
        return _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], [x], inits)
    qw = quantize_weight(w, axis=1)
    sx = np.float32(4.0 / 127)
    sb = (sx * qw.scale).astype(np.float32)
    arrays = {
        "wq": qw.values, "sw": qw.scale, "zw": np.zeros(n, np.int8),
        "sx": np.array(sx), "zx": np.array(0, np.int8),
        "bq": np.rint(b / sb).astype(np.int32), "sb": sb, "zb": np.zeros(n, np.int32),
    }  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=1),
        helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"], axis=0),
        helper.make_node("Gemm", ["xd", "wd", "bd"], ["y"]),
    ]
    return _model(nodes, [x], [numpy_helper.from_array(v, k) for k, v in arrays.items()])


def activation_product(a_shape: list[int], b_shape: list[int], int8: bool) -> Any:
    """MatMul(a, b) of two graph inputs: float, or both through Q/DQ."""
    from onnx import TensorProto, helper, numpy_helper

    inputs = [
        helper.make_tensor_value_info(t, TensorProto.FLOAT, s) for t, s in (("a", a_shape), ("b", b_shape))
    ]
    if not int8:
        return _model([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, [])
    nodes = []
    for t in ("a", "b"):
        nodes += [
            helper.make_node("QuantizeLinear", [t, "s", "z"], [f"{t}q"]),
            helper.make_node("DequantizeLinear", [f"{t}q", "s", "z"], [f"{t}d"]),
        ]
    nodes.append(helper.make_node("MatMul", ["ad", "bd"], ["y"]))
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    return _model(nodes, inputs, inits)


def compare(
    float_model: Any, int8_model: Any, feed: dict[str, np.ndarray], args: argparse.Namespace
) -> dict[str, Any]:
    """Interleaved timing of the two models: medians (us) and the INT8 / float ratio per round."""
    sessions = {"float": _session(float_model, args.threads), "int8": _session(int8_model, args.threads)}
    calls = {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}
    rounds = [measure_interleaved(calls, warmup=10, iterations=args.iterations) for _ in range(args.rounds)]
    ratios = [r["int8"].median / r["float"].median for r in rounds]
    return {
        "float_us": float(np.median([1e3 * r["float"].median for r in rounds])),
        "int8_us": float(np.median([1e3 * r["int8"].median for r in rounds])),
        "ratio": float(np.median(ratios)),
        "ratio_range": [float(min(ratios)), float(max(ratios))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case (default 5)")
    parser.add_argument("--iterations", type=int, default=200, help="timed runs per round (default 200)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    import onnxruntime

    print(
        f"# {platform.processor() or platform.machine()}, {args.threads} ORT thread(s), onnxruntime "
        f"{onnxruntime.__version__}, batch 1; ratio = INT8 (ONNX Runtime form) / float, median [range] of "
        f"{args.rounds} interleaved rounds",
        flush=True,
    )
    print("| layer | M x K x N or heads x tokens x width | MACs | float us | INT8 us | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    rows = []
    cases: list[tuple[str, str, int, Any, Any, dict[str, np.ndarray]]] = []
    for m, k, n in WEIGHT_SHAPES:
        x = {"x": rng.standard_normal((m, k)).astype(np.float32)}
        cases.append(
            (
                "weight",
                f"{m} x {k} x {n}",
                m * k * n,
                weight_layer(m, k, n, False, rng),
                weight_layer(m, k, n, True, rng),
                x,
            )
        )
    for h, t, d in ATTENTION_SHAPES:
        for kind, a, b in (("scores", [1, h, t, d], [1, h, d, t]), ("context", [1, h, t, t], [1, h, t, d])):
            feed = {
                "a": rng.standard_normal(a).astype(np.float32),
                "b": rng.standard_normal(b).astype(np.float32),
            }
            cases.append(
                (
                    kind,
                    f"{h} x {t} x {d}",
                    h * t * t * d,
                    activation_product(a, b, False),
                    activation_product(a, b, True),
                    feed,
                )
            )
    for kind, shape, macs, f, q, feed in cases:
        row = {"layer": kind, "shape": shape, "macs": macs, **compare(f, q, feed, args)}
        rows.append(row)
        lo, hi = row["ratio_range"]
        print(
            f"| {kind} | {shape} | {macs:,} | {row['float_us']:.1f} | {row['int8_us']:.1f} | "
            f"{row['ratio']:.2f} [{lo:.2f}-{hi:.2f}] |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
