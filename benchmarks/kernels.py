"""GPU timings of vitrt's CUDA kernels against the PyTorch references on the same GPU, and of
Scatterbrain against dense attention (``scaled_dot_product_attention``), as ratios; plus the fraction of
the memory-bandwidth floor each kernel reaches.

    python benchmarks/kernels.py [--out results.json] [--iters 50]

Cases: TokenFusion at DeiT-S shapes (N = 197, C = 384, r = 16, the MCTF attributes) at batch 1 and 64;
ScatterbrainAttention at the T2T-ViT-t-14 first token attention (N = 3136, E = 64, cluster 24, 2 hashes,
12 projection rows = 24 features, scale 147^-0.5) at batch 1 and 32; float16 and float32 I/O each.
Targets (printed as PASS / MISS): TokenFusion >= 5x faster than its reference at batch 64, float16;
Scatterbrain >= 3x faster than its reference at N = 3136, batch 32.

Timing: CUDA events around each call on torch's current stream, after warm-up; the median of
``--iters`` runs in ms. The kernels are timed through their raw-pointer ``enqueue`` (buffers and
workspace allocated once, as TensorRT does); the references are the eager PyTorch functions on CUDA
tensors. Bandwidth floor: the bytes an op must move at least (every input read once, every output
written once) divided by the peak DRAM bandwidth; reported against the driver's theoretical peak and
against a measured device-to-device copy. Exit status 2 without a CUDA GPU (the reason printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"token_fusion": 5.0, "scatterbrain": 3.0}


def _time(fn: Callable[[], object], iters: int, warmup: int = 5) -> float:
    """Median milliseconds of ``fn`` on the current stream (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(statistics.median(times))


def copy_bandwidth() -> float:
    """Measured device-to-device copy bandwidth in bytes/s (bytes read + written), 1 GiB buffers."""
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = _time(lambda: dst.copy_(src), 20)
    return 2 * src.numel() * 4 / (ms / 1e3)


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def bench_token_fusion(batch: int, dtype: torch.dtype, iters: int) -> dict[str, Any]:
    from vitrt.plugins.token_fusion import reference
    from vitrt.plugins.token_fusion.cuda import FusionDims, enqueue, workspace_bytes
    from vitrt.plugins.token_fusion.spec import Pooling, TokenFusionAttrs

    n, c, r = 197, 384, 16
    attrs = TokenFusionAttrs(r=r, tau_sim=1.0, tau_info=20.0, tau_size=40.0, bidirectional=1,
                             pooling=int(Pooling.ATTN_SIZE))  # fmt: skip
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, n, c, device="cuda", generator=g).to(dtype)
    metric = x.clone()
    info = (torch.rand(batch, n, device="cuda", generator=g) / n + 1e-4).to(dtype)
    size = torch.ones(batch, n, device="cuda", dtype=dtype)
    d = FusionDims(batch, n, c, c, r)
    x_f = x.new_empty(batch, n - r, c)
    size_f = x.new_empty(batch, n - r)
    dest = torch.empty(batch, n, dtype=torch.int64, device="cuda")
    work = torch.empty(workspace_bytes(d), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    name = str(dtype).removeprefix("torch.")

    def kernel() -> None:
        enqueue(x.data_ptr(), metric.data_ptr(), info.data_ptr(), size.data_ptr(), x_f.data_ptr(),
                size_f.data_ptr(), dest.data_ptr(), work.data_ptr(), d, attrs, name, stream)  # fmt: skip

    kernel_ms = _time(kernel, iters)
    ref_ms = _time(lambda: reference.token_fusion(x, metric, info, size, attrs), iters)
    return {
        "op": "token_fusion",
        "shape": f"B={batch} N={n} C={c} r={r}",
        "batch": batch,
        "dtype": name,
        "kernel_ms": kernel_ms,
        "reference_ms": ref_ms,
        "speedup_vs_reference": ref_ms / kernel_ms,
        "floor_bytes": _bytes(x, metric, info, size, x_f, size_f, dest),
    }


def bench_scatterbrain(batch: int, dtype: torch.dtype, iters: int) -> dict[str, Any]:
    import torch.nn.functional as F

    from vitrt.plugins.lsh_attention import reference
    from vitrt.plugins.lsh_attention.cuda import AttentionDims, enqueue, workspace_bytes
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection
    from vitrt.plugins.lsh_attention.spec import Mode, ScatterbrainAttrs

    n, e, c, r, m, scale = 3136, 64, 24, 2, 12, 147**-0.5
    attrs = ScatterbrainAttrs(Mode.SCATTERBRAIN, c, r, 2 * m, scale)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(batch, 1, n, e, device="cuda", generator=g).to(dtype) for _ in range(3))
    gen = torch.Generator().manual_seed(0)
    hv, proj = draw_hash_vectors(r, e, gen).cuda(), draw_projection(m, e, gen).cuda()
    d = AttentionDims.of(batch, 1, n, e, e, attrs)
    out = q.new_empty(batch, 1, n, e)
    work = torch.empty(workspace_bytes(d), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    name = str(dtype).removeprefix("torch.")

    def kernel() -> None:
        enqueue(q.data_ptr(), k.data_ptr(), v.data_ptr(), hv.data_ptr(), proj.data_ptr(), out.data_ptr(),
                work.data_ptr(), d, scale, name, stream)  # fmt: skip

    kernel_ms = _time(kernel, iters)
    ref_ms = _time(
        lambda: reference.scatterbrain_attention(
            q, k, v, hash_vectors=hv, projection=proj, cluster_size=c, scale=scale
        ),
        max(5, iters // 5),
    )
    dense_ms = _time(lambda: F.scaled_dot_product_attention(q, k, v, scale=scale), iters)
    return {
        "op": "scatterbrain",
        "shape": f"B={batch} H=1 N={n} E={e} c={c} R={r} features={2 * m}",
        "batch": batch,
        "dtype": name,
        "kernel_ms": kernel_ms,
        "reference_ms": ref_ms,
        "dense_sdpa_ms": dense_ms,
        "speedup_vs_reference": ref_ms / kernel_ms,
        "speedup_vs_dense": dense_ms / kernel_ms,
        "floor_bytes": _bytes(q, k, v, hv, proj, out),
        "workspace_bytes": workspace_bytes(d),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="JSON results (default $OUT/kernels.json when OUT is set)"
    )
    parser.add_argument("--iters", type=int, default=50, help="timed runs per case (default 50)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: torch.cuda.is_available() is False; nothing to benchmark", file=sys.stderr)
        return 2
    from vitrt.plugins.cuda_build import build_fatbins, find_cuda_home
    from vitrt.plugins.cuda_launcher import device_info, load_module

    try:
        find_cuda_home()
        build_fatbins()
    except Exception as exc:  # no toolkit: NVRTC
        print(f"no fatbin build ({exc}); the launcher uses NVRTC")
    torch.cuda.init()
    info = device_info()
    origins = {name: load_module(name).origin for name in ("token_fusion", "scatterbrain")}
    measured = copy_bandwidth()
    peak = info.peak_bandwidth
    rows = []
    for dtype in (torch.float16, torch.float32):
        for batch in (1, 64):
            rows.append(bench_token_fusion(batch, dtype, args.iters))
        for batch in (1, 32):
            rows.append(bench_scatterbrain(batch, dtype, args.iters))
    for row in rows:
        floor = row["floor_bytes"]
        row["floor_fraction_measured_copy"] = floor / measured / (row["kernel_ms"] / 1e3)
        row["floor_fraction_peak"] = floor / peak / (row["kernel_ms"] / 1e3) if peak else None
        big = row["batch"] in (32, 64)
        target = TARGETS[row["op"]]
        applies = big and (row["op"] == "scatterbrain" or row["dtype"] == "float16")
        row["target"] = f">= {target}x vs reference" if applies else None
        row["target_met"] = row["speedup_vs_reference"] >= target if applies else None

    cc = f"sm_{info.capability[0]}{info.capability[1]}"
    print(f"{info.name} ({cc}, {info.multiprocessors} SMs); kernels: {origins}")
    peak_tb = peak / 1e12 if peak else float("nan")
    print(f"DRAM peak {peak_tb:.2f} TB/s (driver), copy {measured / 1e12:.2f} TB/s")
    print(
        f"{'op':13} {'dtype':8} {'shape':44} {'kernel ms':>10} {'ref ms':>9} {'x ref':>7} {'x dense':>8} "
        f"{'floor%':>7}"
    )
    for row in rows:
        dense = f"{row['speedup_vs_dense']:8.2f}" if "speedup_vs_dense" in row else f"{'-':>8}"
        verdict = ""
        if row["target_met"] is not None:
            verdict = ("  PASS " if row["target_met"] else "  MISS ") + row["target"]
        print(
            f"{row['op']:13} {row['dtype']:8} {row['shape']:44} {row['kernel_ms']:10.4f} "
            f"{row['reference_ms']:9.3f} {row['speedup_vs_reference']:7.1f} {dense} "
            f"{100 * row['floor_fraction_measured_copy']:6.1f}%{verdict}"
        )
    result = {
        "device": info.name,
        "capability": list(info.capability),
        "peak_bandwidth_bytes_per_s": peak,
        "copy_bandwidth_bytes_per_s": measured,
        "kernel_origin": origins,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rows": rows,
    }
    out = args.out or (str(Path(os.environ["OUT"]) / "kernels.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
