"""vitrt INT8 vs onnxruntime.quantization.quantize_static: agreement with FP32 and ORT CPU latency.

    .venv/bin/python benchmarks/int8.py
        [--models digits_t2t_vit digits_deit deit_small_patch16_224 t2t_vit_14]
        [--threads 1] [--iterations 30] [--rounds 3] [--json results.json]

For each model: export FP32 ONNX with vitrt; quantize it twice from the same calibration images,
(a) ``vitrt.calibration.calibrate_onnx`` (vitrt: explicit Q/DQ on MatMul/Gemm/Conv inputs, entropy
ranges, Softmax by min-max, performer/plugin spans float) and (b) ``quantize_static`` (QDQ,
per_channel=True, everything else its defaults: MinMax calibration, int8 asymmetric activations,
all op types); compare each with FP32 on held-out images (top-1 agreement, mean cosine of the
logits) and time all three on ONNX Runtime's CPU provider at batch 1 (median ms, interleaved
rounds; ratios to FP32).

Data (offline only):
- digits models (trained by benchmarks/train_digits.py, checkpoints in benchmarks/digits): 256
  calibration images drawn (seeded) from the training split, the 500 held-out images for
  agreement and for top-1 accuracy against the labels;
- deit_small_patch16_224 and t2t_vit_14 at 224: no pretrained weights can be downloaded here, so
  they are random-init (seed 0) exports; no 256 natural images ship offline either (scikit-image 21
  with grayscale converted, scikit-learn 2): 256 calibration crops are cut (seeded random resized
  crops) from 16 of those 23 images and 64 held-out crops from the other 7.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import train_digits as td  # noqa: E402

from vitrt.calibration.calibrate import calibrate_onnx  # noqa: E402
from vitrt.calibration.data import match_channels  # noqa: E402
from vitrt.calibration.metrics import agreement  # noqa: E402
from vitrt.calibration.preprocess import preprocess_image  # noqa: E402
from vitrt.compiler.export import ExportConfig, export_model, model_from_config  # noqa: E402
from vitrt.deploy.latency import measure_latency  # noqa: E402
from vitrt.deploy.runners import OnnxRuntimeRunner  # noqa: E402
from vitrt.models.config import PreprocessConfig  # noqa: E402

DIGITS = ROOT / "benchmarks" / "digits"
NUM_CALIB = 256
log = logging.getLogger("vitrt")


# -- data ---------------------------------------------------------------------------------------


def digits_data(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(calibration (256, 3, S, S), held-out (500, 3, S, S), held-out labels, description) for digits model
    ``name`` (S: its input side)."""
    x, y = td.digits_tensors(name)
    train_idx, held_idx = td.digits_split(seed)
    calib_idx = np.random.default_rng(seed + 1).choice(train_idx, NUM_CALIB, replace=False)
    text = f"sklearn digits: {NUM_CALIB} calibration images from the training split, {len(held_idx)} held-out"
    return x[calib_idx].numpy(), x[held_idx].numpy(), y[held_idx].numpy(), text


def natural_images() -> list[tuple[str, torch.Tensor]]:
    """Every natural image that ships offline: skimage.data (21, grayscale/RGBA converted to RGB)
    and scikit-learn's 2 sample images, as (name, (3, h, w) float on [0, 1])."""
    import skimage.data
    from sklearn.datasets import load_sample_images  # type: ignore[import-untyped]

    from vitrt.calibration.data import SKIMAGE_GRAY, SKIMAGE_RGB, SKIMAGE_RGBA

    out = []
    for name in (*SKIMAGE_RGB, *SKIMAGE_GRAY, *SKIMAGE_RGBA):
        array = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        image = (
            torch.from_numpy(array if array.ndim == 3 else array[:, :, None]).permute(2, 0, 1).contiguous()
        )
        out.append((f"skimage.{name}", match_channels(image, 3, convert=True, where=name)))
    bunch = load_sample_images()
    for name, array in zip(bunch.filenames, bunch.images, strict=True):
        image = torch.from_numpy(np.asarray(array, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        out.append((f"sklearn.{Path(name).name}", image))
    return out


def random_crops(
    images: list[tuple[str, torch.Tensor]], count: int, cfg: PreprocessConfig, rng: np.random.Generator
) -> np.ndarray:
    """``count`` random resized crops (side 30-100 % of the shorter side), spread evenly over the
    images, each through the model's preprocessing: (count, 3, H, W) float32."""
    out = []
    for k in range(count):
        _, image = images[k % len(images)]
        _, h, w = image.shape
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(preprocess_image(image[:, top : top + side, left : left + side], cfg).numpy())
    return np.stack(out).astype(np.float32)


def natural_data(cfg: PreprocessConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    images = natural_images()
    order = np.random.default_rng(seed).permutation(len(images))
    calib_imgs, held_imgs = [images[i] for i in order[:16]], [images[i] for i in order[16:]]
    rng = np.random.default_rng(seed + 1)
    calib, held = random_crops(calib_imgs, NUM_CALIB, cfg, rng), random_crops(held_imgs, 64, cfg, rng)
    text = (
        f"{len(images)} natural images ship offline (skimage 21 incl. converted grayscale, sklearn 2): "
        f"{NUM_CALIB} calibration crops from {len(calib_imgs)} of them, {len(held)} held-out crops from "
        f"the other {len(held_imgs)} ({', '.join(n for n, _ in held_imgs)})"
    )
    return calib, held, text


# -- one model ----------------------------------------------------------------------------------


def ort_quantize_static(fp32: Path, out: Path, calib: np.ndarray) -> float:
    """quantize_static: QDQ, per-channel, its default (MinMax) calibration on ``calib``. Returns s."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"images": x[None]}

    t0 = time.perf_counter()
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns per LayerNorm weight
    # CalibMaxIntermediateOutputs only bounds memory (MinMax merges running min/max: same result);
    # without it quantize_static keeps every intermediate of all 256 runs in memory. It must not
    # divide the sample count: onnxruntime 1.31 then ends on an empty chunk ("No data is collected").
    chunk = next(k for k in range(24, 64) if len(calib) % k)
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        extra_options={"CalibMaxIntermediateOutputs": chunk},
    )
    return time.perf_counter() - t0


def run_all(runner: OnnxRuntimeRunner, x: np.ndarray) -> np.ndarray:
    return np.concatenate([runner.infer({"images": x[i : i + 1]})["logits"] for i in range(len(x))])


def latencies(
    paths: dict[str, Path], x: np.ndarray, threads: int, iterations: int, rounds: int
) -> dict[str, float]:
    """Median ms per variant over ``rounds`` interleaved rounds (median of the round medians)."""
    runners = {k: OnnxRuntimeRunner(p, threads=threads) for k, p in paths.items()}
    feed = {"images": x[:1]}
    medians: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, runner in runners.items():

            def call(r: OnnxRuntimeRunner = runner) -> object:
                return r.infer(feed)

            medians[k].append(measure_latency(call, warmup=5, iterations=iterations).median)
    return {k: float(np.median(v)) for k, v in medians.items()}


def bench(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    fp32 = tmp / f"{name}.onnx"
    labels = None
    if name.startswith("digits_"):
        td.export_digits(name, DIGITS, fp32)
        calib, held, labels, data_text = digits_data(name)
        weights = f"trained on sklearn digits ({DIGITS.relative_to(ROOT)}/{name}.safetensors)"
    else:
        config = ExportConfig(name, seed=0)
        export_model(model_from_config(config), fp32, config)
        calib, held, data_text = natural_data(PreprocessConfig(input_size=(3, 224, 224)))
        weights = "random init (seed 0): no pretrained weights offline"
    np.save(tmp / "calib.npy", calib)
    np.save(tmp / "held.npy", held)
    t_vitrt = time.perf_counter()
    result = calibrate_onnx(
        fp32,
        tmp / "calib.npy",
        tmp / f"{name}.vitrt.onnx",
        num_samples=len(calib),
        eval_data=tmp / "held.npy",
        eval_samples=len(held),
        sensitivity_samples=args.sensitivity_samples,
        error_budget=args.error_budget,
        report=tmp / f"{name}.vitrt.json",
        progress=False,
    )
    t_vitrt = time.perf_counter() - t_vitrt
    t_ort = ort_quantize_static(fp32, tmp / f"{name}.ort.onnx", calib)
    paths = {"fp32": fp32, "vitrt": tmp / f"{name}.vitrt.onnx", "ort": tmp / f"{name}.ort.onnx"}
    eval_runners = {k: OnnxRuntimeRunner(p, threads=args.threads) for k, p in paths.items()}
    logits = {k: run_all(r, held) for k, r in eval_runners.items()}
    del eval_runners
    row: dict[str, Any] = {
        "model": name,
        "weights": weights,
        "data": data_text,
        "held_out": len(held),
        "calibration_s": {"vitrt": round(t_vitrt, 1), "ort": round(t_ort, 1)},
        "vitrt_layers": f"{len(result.quantized)}/{len(result.layers)} INT8",
        "vitrt_fallen_back": result.fallen_back,
    }
    for k in ("vitrt", "ort"):
        a = agreement(logits["fp32"], logits[k])
        row[k] = {
            "top1_agreement": a.top1_agreement,
            "mean_cosine": a.mean_cosine,
            "max_abs_error": a.max_abs_error,
        }
    if labels is not None:
        row["top1_accuracy"] = {k: float((v.argmax(1) == labels).mean()) for k, v in logits.items()}
    ms = latencies(paths, held, args.threads, args.iterations, args.rounds)
    row["latency_ms"] = ms
    row["latency_ratio"] = {
        "vitrt/fp32": ms["vitrt"] / ms["fp32"],
        "ort/fp32": ms["ort"] / ms["fp32"],
        "vitrt/ort": ms["vitrt"] / ms["ort"],
    }
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | weights | model file | top-1 agree | mean cos | top-1 acc | latency ms | vs FP32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        short = "trained" if r["weights"].startswith("trained") else "random"
        acc = r.get("top1_accuracy")
        ms = r["latency_ms"]

        def accuracy(key: str, acc: dict[str, float] | None = acc) -> str:
            return "-" if acc is None else f"{100 * acc[key]:.1f}"

        lines.append(
            f"| {r['model']} | {short} | FP32 | - | - | {accuracy('fp32')} | {ms['fp32']:.2f} | 1.00 |"
        )
        for key, label in (("vitrt", "vitrt INT8"), ("ort", "quantize_static INT8")):
            lines.append(
                f"| {r['model']} | {short} | {label} | {100 * r[key]['top1_agreement']:.1f} | "
                f"{r[key]['mean_cosine']:.5f} | {accuracy(key)} | {ms[key]:.2f} | "
                f"{ms[key] / ms['fp32']:.2f} |"
            )
    return "\n".join(lines)


def machine_line(
    packages: Sequence[str], threads: int, *, with_flags: bool = False, batch: bool = True
) -> str:
    """The header line of a CPU benchmark: CPU name, architecture, cores (and instruction-set flags), the
    ``packages``' versions, threads (and "batch 1")."""
    import importlib.metadata as md
    import os

    from vitrt.compiler.environment import cpu_facts

    cpu, flags = cpu_facts()
    cores = f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    if with_flags:
        cores += f"; flags {' '.join(flags)}"
    versions = ", ".join(f"{p} {md.version(p)}" for p in packages)
    return f"{cpu} ({cores}), {versions}, {threads} threads" + (", batch 1" if batch else "")


def run_models(
    models: Sequence[str],
    bench_one: Callable[[str, argparse.Namespace, Path], dict[str, Any]],
    to_table: Callable[[list[dict[str, Any]]], str],
    args: argparse.Namespace,
    header: str,
) -> None:
    """Print ``header``, run ``bench_one`` per model in one temporary folder (each model's table as it
    finishes, then all), and write ``{"machine": header, "results": [...]}`` to ``args.json`` if given."""
    print(header, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            results.append(bench_one(name, args, Path(tmp)))
            print(to_table(results[-1:]), flush=True)
    print()
    print(to_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": header, "results": results}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["digits_t2t_vit", "digits_deit", "deit_small_patch16_224", "t2t_vit_14"],
    )
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    parser.add_argument("--iterations", type=int, default=30, help="timed runs per round (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds (default 3)")
    parser.add_argument("--sensitivity-samples", type=int, default=16)
    parser.add_argument(
        "--error-budget", type=float, default=None, help="vitrt's cosine-distance budget (default none)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(
        f"# {platform.processor() or platform.machine()}, {args.threads} ORT thread(s), onnxruntime "
        f"{onnxruntime.__version__}, batch 1, median of {args.rounds} interleaved rounds x "
        f"{args.iterations} runs",
        flush=True,
    )
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix="vitrt-int8-bench-") as tmp:
            row = bench(name, args, Path(tmp))
        rows.append(row)
        print(f"# {name}: {row['weights']}; {row['data']}; vitrt {row['vitrt_layers']}", flush=True)
        print(
            json.dumps({k: row[k] for k in ("vitrt", "ort", "latency_ms", "latency_ratio", "calibration_s")}),
            flush=True,
        )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
