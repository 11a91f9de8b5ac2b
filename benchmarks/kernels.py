"""GPU timings of vitrt's CUDA kernels against the PyTorch references on the same GPU, and of
Scatterbrain against dense attention (``scaled_dot_product_attention``), as ratios; per-kernel times; and
the fraction of the memory-bandwidth floor each op reaches.

    python benchmarks/kernels.py [--out results.json] [--iters 50]

Cases: TokenFusion at DeiT-S shapes (N = 197, C = 384, r = 16, the MCTF attributes) at batch 1, 8 and 64,
with metric = x (Cm = 384, the targets' case) and, in float16, with the models' 64-channel metric (scores
and matching in one launch, timed against the split launches in the same run); a fused block's
attention_info at the same shapes (6 heads, E = 64) from q and k against q k^T + the logits kernel, and
in float16 with the q, k kernel's keys split between 1, 2, 4 and 8 warps (each against 1 split);
ScatterbrainAttention at the T2T-ViT-t-14 first token attention (N = 3136, E = 64, cluster 24, 2 hashes, 12
projection rows = 24 features, scale 147^-0.5) at batch 1, 8 and 32; float16 and float32 I/O; in float16 also
with the cluster kernel on CUDA cores instead of tensor cores (timed against it in the same run).

Two times per op. "enqueue": CUDA events around one call of the raw-pointer ``enqueue`` (buffers and
workspace allocated once, as TensorRT does), so the host's launch overhead is in it. "graph": the same
call captured 20 times in one CUDA graph, replayed, divided by 20: the GPU time of the op's launches
back to back, what an engine or a model run as a CUDA graph sees. Targets (issue 15, judged on the graph
time, float16): TokenFusion <= 30 us at batch 64 and <= 15 us at batch 1; Scatterbrain <= 0.5x SDPA at
batch 32. The references are the eager PyTorch functions on CUDA tensors. Per-kernel times come from
torch.profiler (CUPTI) over 20 calls. Bandwidth floor: the bytes an op must move at least (every input
read once, every output written once) over the measured device-to-device copy bandwidth. Exit status 2
without a CUDA GPU (the reason printed).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import platform
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_results  # noqa: E402
from vitrt.deploy.cuda_timing import capture_graph, event_median_ms  # noqa: E402

GRAPH_CALLS = 20


def graph_ms(fn: Callable[[], object], iters: int) -> float:
    """Milliseconds per call of ``fn`` replayed from a CUDA graph of GRAPH_CALLS calls (median replay)."""
    graph, _ = capture_graph(lambda: [fn() for _ in range(GRAPH_CALLS)], warmup=1)
    return event_median_ms(graph.replay, iters) / GRAPH_CALLS


def kernel_breakdown(fn: Callable[[], object], calls: int = 20) -> dict[str, float]:
    """Microseconds per call spent in each CUDA kernel ``fn`` launches (torch.profiler / CUPTI)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type.name == "CUDA":
            totals[event.name] += event.time_range.elapsed_us() / calls
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def copy_bandwidth() -> float:
    """Measured device-to-device copy bandwidth in bytes/s (bytes read + written), 1 GiB buffers."""
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = event_median_ms(lambda: dst.copy_(src), 20)
    return 2 * src.numel() * 4 / (ms / 1e3)


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def bench_token_fusion(
    batch: int, dtype: torch.dtype, iters: int, metric_channels: int | None = None
) -> dict[str, Any]:
    """TokenFusion at DeiT-S shapes with metric = x (the issue's case), or with a random metric of
    ``metric_channels`` (64: the models' metric, the keys' mean over heads), where the scores and the
    matching can be one launch: then also the split launches in the same run (``ratio_to_split``)."""
    from vitrt.plugins.token_fusion import reference
    from vitrt.plugins.token_fusion.cuda import FusionDims, enqueue, workspace_bytes
    from vitrt.plugins.token_fusion.spec import Pooling, TokenFusionAttrs

    n, c, r = 197, 384, 16
    attrs = TokenFusionAttrs(r=r, tau_sim=1.0, tau_info=20.0, tau_size=40.0, bidirectional=1,
                             pooling=int(Pooling.ATTN_SIZE))  # fmt: skip
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, n, c, device="cuda", generator=g).to(dtype)
    cm = metric_channels or c
    metric = torch.randn(batch, n, cm, device="cuda", generator=g).to(dtype) if metric_channels else x.clone()
    info = (torch.rand(batch, n, device="cuda", generator=g) / n + 1e-4).to(dtype)
    size = torch.ones(batch, n, device="cuda", dtype=dtype)
    d = FusionDims(batch, n, c, cm, r)
    x_f = x.new_empty(batch, n - r, c)
    size_f = x.new_empty(batch, n - r)
    dest = torch.empty(batch, n, dtype=torch.int64, device="cuda")
    work = torch.empty(workspace_bytes(d), dtype=torch.uint8, device="cuda")
    name = str(dtype).removeprefix("torch.")

    def launches(fused_match: bool | None) -> Callable[[], None]:
        choice = {} if fused_match is None else {"fused_match": fused_match}

        def kernel() -> None:
            stream = torch.cuda.current_stream().cuda_stream
            enqueue(x.data_ptr(), metric.data_ptr(), info.data_ptr(), size.data_ptr(), x_f.data_ptr(),
                    size_f.data_ptr(), dest.data_ptr(), work.data_ptr(), d, attrs, name, stream,
                    **choice)  # fmt: skip

        return kernel

    kernel = launches(None)
    enqueue_ms = event_median_ms(kernel, iters)
    graph = graph_ms(kernel, iters)
    ref_ms = event_median_ms(lambda: reference.token_fusion(x, metric, info, size, attrs), iters)
    row = {
        "match_phase_cycles": match_phases(metric, info, size, attrs),
        "op": "token_fusion",
        "shape": f"B={batch} N={n} C={c} Cm={cm} r={r}",
        "batch": batch,
        "metric_channels": cm,
        "dtype": name,
        "enqueue_ms": enqueue_ms,
        "graph_ms": graph,
        "reference_ms": ref_ms,
        "speedup_vs_reference": ref_ms / graph,
        "kernels_us": kernel_breakdown(kernel),
        "floor_bytes": _bytes(x, metric, info, size, x_f, size_f, dest),
    }
    # An older plugins/ (tests/gpu/ab_kernels.sh's base) has no one launch: its row is the split launches.
    if metric_channels and "fused_match" in inspect.signature(enqueue).parameters:
        launches(True)()
        fused_dest = dest.clone()
        split = launches(False)
        split()
        assert torch.equal(dest, fused_dest), "the split launches' dest differs from the one launch's"
        row["split_graph_ms"] = graph_ms(split, iters)
        row["ratio_to_split"] = graph / row["split_graph_ms"]
        row["fused_graph_ms"] = graph_ms(launches(True), iters)
    return row


def match_phases(
    metric: torch.Tensor, info: torch.Tensor, size: torch.Tensor, attrs: Any, calls: int = 20
) -> dict[str, float]:
    """SM cycles the matching kernel spends in each of its steps (its diagnostic clock marks,
    ``cuda.MATCH_PHASES``): the median over ``calls`` launches of the mean over batch elements. For
    bidirectional matching with r > 0, where the kernel writes every mark."""
    from vitrt.plugins.token_fusion.cuda import MATCH_PHASES, bipartite_matching_cuda, fusion_scores_cuda

    scores = fusion_scores_cuda(metric, info, size, attrs)
    clock = torch.zeros(calls, scores.shape[0], len(MATCH_PHASES), dtype=torch.int64, device="cuda")
    for i in range(calls):
        bipartite_matching_cuda(scores, attrs.r, bool(attrs.bidirectional), phase_clock=clock[i])
    steps = clock.diff(dim=2).double().mean(dim=1).median(dim=0).values.tolist()
    return dict(zip(MATCH_PHASES[1:], steps, strict=True))


def bench_attention_info(batch: int, dtype: torch.dtype, iters: int) -> dict[str, Any]:
    """A fused DeiT-S block's ``info`` (H = 6, N = 197, E = 64): the kernel that reads q and k (views of the
    qkv projection) against the path it replaced, q k^T by a GEMM then the logits kernel, timed in the same
    run (float32 has no q, k kernel: both rows time the GEMM path)."""
    from vitrt.plugins.token_fusion import reference
    from vitrt.plugins.token_fusion.cuda import (
        INFO_QK_KEY_SPLITS,
        attention_info_cuda,
        attention_info_qk_cuda,
    )

    h, n, e = 6, 197, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(batch, n, 3, h, e, device="cuda", generator=g).to(dtype).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    size = torch.randint(1, 4, (batch, n), device="cuda", generator=g).to(dtype)
    scale = e**-0.5
    out = attention_info_qk_cuda(q, k, size, scale)

    def fused() -> None:
        attention_info_qk_cuda(q, k, size, scale)

    def gemm_path() -> None:
        attention_info_cuda(q @ k.transpose(-2, -1), size, scale)

    graph = graph_ms(fused, iters)
    gemm = graph_ms(gemm_path, iters)
    ref_ms = event_median_ms(lambda: reference.attention_info(q @ k.transpose(-2, -1), size, scale), iters)
    splits = {}  # the q, k kernel with its keys split between warps (float16), each timed in this run
    if dtype == torch.float16:
        for s in INFO_QK_KEY_SPLITS:
            call = functools.partial(attention_info_qk_cuda, q, k, size, scale, key_splits=s)
            splits[s] = graph_ms(call, iters)
    return {
        "op": "attention_info",
        "shape": f"B={batch} H={h} N={n} E={e} (q, k views of qkv)",
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),
        "enqueue_ms": event_median_ms(fused, iters),
        "graph_ms": graph,
        "reference_ms": ref_ms,
        "speedup_vs_reference": ref_ms / graph,
        "gemm_path_graph_ms": gemm,
        "ratio_to_gemm_path": graph / gemm,
        "kernels_us": kernel_breakdown(fused),
        "floor_bytes": _bytes(q, k, size, out),
        "key_splits_graph_ms": splits,
    }


SB_SHAPE = {"n": 3136, "e": 64, "c": 24, "r": 2, "scale": 147**-0.5}
"""Scatterbrain's benchmark shape: T2T-ViT-t-14's first token attention at 224 x 224 (one head)."""


def scatterbrain_case(batch: int, dtype: torch.dtype, m: int, n: int | None = None) -> dict[str, Any]:
    """Seeded inputs, output and workspace of a SCATTERBRAIN call at SB_SHAPE (``n`` tokens instead where
    given) with m projection rows (2 m features), its AttentionDims ``d``, and ``launches(cluster=None,
    sort_items=None)``: a function that enqueues the op on the current stream."""
    from vitrt.plugins.lsh_attention.cuda import AttentionDims, enqueue, workspace_bytes
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection
    from vitrt.plugins.lsh_attention.spec import Mode, ScatterbrainAttrs

    e, c, r, scale = (SB_SHAPE[key] for key in ("e", "c", "r", "scale"))
    n = SB_SHAPE["n"] if n is None else n
    attrs = ScatterbrainAttrs(Mode.SCATTERBRAIN, c, r, 2 * m, scale)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(batch, 1, n, e, device="cuda", generator=g).to(dtype) for _ in range(3))
    gen = torch.Generator().manual_seed(0)
    hv, proj = draw_hash_vectors(r, e, gen).cuda(), draw_projection(m, e, gen).cuda()
    d = AttentionDims.of(batch, 1, n, e, e, attrs)
    out = q.new_empty(batch, 1, n, e)
    work = torch.empty(workspace_bytes(d), dtype=torch.uint8, device="cuda")
    name = str(dtype).removeprefix("torch.")

    def launches(cluster: str | None = None, sort_items: int | None = None) -> Callable[[], None]:
        # sort_items only when asked: tests/gpu/ab_kernels.sh runs this file on plugins/ of older commits
        extra = {} if sort_items is None else {"sort_items": sort_items}

        def kernel() -> None:
            stream = torch.cuda.current_stream().cuda_stream
            enqueue(q.data_ptr(), k.data_ptr(), v.data_ptr(), hv.data_ptr(), proj.data_ptr(), out.data_ptr(),
                    work.data_ptr(), d, scale, name, stream, cluster=cluster, **extra)  # fmt: skip

        return kernel

    return {"q": q, "k": k, "v": v, "hv": hv, "proj": proj, "out": out, "d": d, "name": name,
            "workspace_bytes": work.numel(), "launches": launches}  # fmt: skip


def bench_scatterbrain(batch: int, dtype: torch.dtype, iters: int) -> dict[str, Any]:
    import torch.nn.functional as F

    from vitrt.plugins.lsh_attention import reference
    from vitrt.plugins.lsh_attention.cuda import cluster_kernels

    m = 12
    case = scatterbrain_case(batch, dtype, m)
    q, k, v, hv, proj, out = (case[key] for key in ("q", "k", "v", "hv", "proj", "out"))
    d, name, launches = case["d"], case["name"], case["launches"]
    n, e, c, r, scale = (SB_SHAPE[key] for key in ("n", "e", "c", "r", "scale"))

    kernel = launches(None)
    enqueue_ms = event_median_ms(kernel, iters)
    graph = graph_ms(kernel, iters)
    # every form of the cluster kernel that can run (float16: tensor cores, staged, tiled), same run
    forms = cluster_kernels(d, name)
    form_ms = {form: graph_ms(launches(form), iters) for form in forms}
    form_us = {form: kernel_breakdown(launches(form)) for form in forms}
    ref_ms = event_median_ms(
        lambda: reference.scatterbrain_attention(
            q, k, v, hash_vectors=hv, projection=proj, cluster_size=c, scale=scale
        ),
        max(5, iters // 5),
    )
    dense_ms = graph_ms(lambda: F.scaled_dot_product_attention(q, k, v, scale=scale), iters)
    return {
        "op": "scatterbrain",
        "shape": f"B={batch} H=1 N={n} E={e} c={c} R={r} features={2 * m}",
        "batch": batch,
        "dtype": name,
        "enqueue_ms": enqueue_ms,
        "graph_ms": graph,
        "reference_ms": ref_ms,
        "dense_sdpa_ms": dense_ms,
        "speedup_vs_reference": ref_ms / graph,
        "ratio_to_dense": graph / dense_ms,
        "cluster_form": forms[0],
        "cluster_forms_graph_ms": form_ms,
        "cluster_forms_kernels_us": form_us,
        "kernels_us": kernel_breakdown(kernel),
        "floor_bytes": _bytes(q, k, v, hv, proj, out),
        "workspace_bytes": case["workspace_bytes"],
    }


def bench_sort_items(batch: int, n: int, iters: int) -> dict[str, Any] | None:
    """Scatterbrain (float16, SB_SHAPE at ``n`` tokens) with its one-tile radix sort at each count of keys per
    thread whose block fits (``AttentionDims.sort_item_counts``; the launcher's is the fewest): the whole op
    (graph ms) and the sort kernel alone (profiler us). The counts before 2026-11-28 were 4 up to P = 2048,
    else 8, and could not be chosen: None on such plugins."""
    from vitrt.plugins.lsh_attention import cuda as sb_cuda

    if not hasattr(sb_cuda.AttentionDims, "sort_item_counts"):
        return None
    case = scatterbrain_case(batch, torch.float16, 12, n)
    d, launches = case["d"], case["launches"]
    counts = d.sort_item_counts  # the launcher's count, the fewest, first: the baseline
    graph = {i: graph_ms(launches(sort_items=i), iters) for i in counts}
    sort_us = {
        i: sum(us for name, us in kernel_breakdown(launches(sort_items=i)).items() if "vitrt_sb_sort" in name)
        for i in counts
    }
    return {"batch": batch, "tokens": n, "positions": d.p, "graph_ms": graph, "sort_us": sort_us}


COMBINE_PLANS = ((16, True), (64, False), (16, False))
"""(queries per block, low-rank state staged) plans of Scatterbrain's combine kernel timed at 256 features."""


def bench_combine_plans(batch: int, iters: int) -> dict[str, Any]:
    """Scatterbrain at 256 features (E = Dv = 64, float16): the combine kernel's plans (the launcher's is
    the first of COMBINE_PLANS), each as the whole op (graph ms) and the combine kernel alone (profiler
    us)."""
    from vitrt.plugins.lsh_attention import cuda as sb_cuda

    m = 128
    case = scatterbrain_case(batch, torch.float16, m)
    d, kernel = case["d"], case["launches"]()

    # The plan follows the module's limits (as tests/gpu/sanitize.py lowers the sort's): set, timed, restored.
    assert d.combine_plan == COMBINE_PLANS[0], d.combine_plan  # the launcher's own plan is the baseline
    saved = sb_cuda._QUERIES_PER_BLOCK, sb_cuda._STAGED_QUERIES_MIN
    graph, combine_us = {}, {}
    try:
        for qpb, staged in COMBINE_PLANS:
            sb_cuda._QUERIES_PER_BLOCK, sb_cuda._STAGED_QUERIES_MIN = (qpb,), (0 if staged else qpb + 1)
            assert d.combine_plan == (qpb, staged), d.combine_plan
            key = f"{qpb} {'staged' if staged else 'global'}"
            graph[key] = graph_ms(kernel, iters)
            combine_us[key] = sum(
                us for name, us in kernel_breakdown(kernel).items() if "vitrt_sb_combine" in name
            )
    finally:
        sb_cuda._QUERIES_PER_BLOCK, sb_cuda._STAGED_QUERIES_MIN = saved
    return {"batch": batch, "features": 2 * m, "graph_ms": graph, "combine_us": combine_us}


def _target(row: dict[str, Any]) -> tuple[str, bool] | None:
    """(target, met) of issue 15 for this row, or None where none applies (float16 only)."""
    if row["dtype"] != "float16":
        return None
    us = 1e3 * row["graph_ms"]
    if row["op"] == "token_fusion" and row["batch"] in (1, 64) and row["metric_channels"] == 384:
        limit = 15.0 if row["batch"] == 1 else 30.0
        return f"<= {limit:.0f} us", us <= limit
    if row["op"] == "scatterbrain" and row["batch"] == 32:
        return "<= 0.5x SDPA", row["ratio_to_dense"] <= 0.5
    return None


def _against_first(graph_ms: dict[Any, float], kernel_us: dict[Any, float], kernel: str) -> str:
    """One line of variants, each as the whole op (graph us) and one kernel (profiler us), with its ratio to
    the first variant (the launcher's choice)."""
    first = next(iter(graph_ms))
    return ", ".join(
        f"{key}: op {1e3 * ms:.1f} ({ms / graph_ms[first]:.2f}x), {kernel} {kernel_us[key]:.1f} "
        f"({kernel_us[key] / kernel_us[first]:.2f}x)"
        for key, ms in graph_ms.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    rows = []

    def measured_row(row: dict[str, Any]) -> None:
        # printed as measured: a run cut short by its time limit still shows every row it finished
        rows.append(row)
        print(f"row: {row['op']} {row['dtype']} B={row['batch']}: graph {row['graph_ms']:.4f} ms", flush=True)

    for dtype in (torch.float16, torch.float32):
        for batch in (1, 8, 64):
            measured_row(bench_token_fusion(batch, dtype, args.iters))
            if dtype == torch.float16:
                measured_row(bench_token_fusion(batch, dtype, args.iters, metric_channels=64))
            measured_row(bench_attention_info(batch, dtype, args.iters))
        for batch in (1, 8, 32):
            measured_row(bench_scatterbrain(batch, dtype, args.iters))
    combine_plans = [bench_combine_plans(batch, args.iters) for batch in (1, 8)]
    # T2T-ViT-t-14's two attentions at 224 pixels: P = 3144 and 792
    sort_items = [
        sorts
        for n in (3136, 784)
        for batch in (1, 8, 32)
        if (sorts := bench_sort_items(batch, n, args.iters)) is not None
    ]
    for row in rows:
        row["floor_fraction_measured_copy"] = row["floor_bytes"] / measured / (row["graph_ms"] / 1e3)
        target = _target(row)
        row["target"], row["target_met"] = target if target else (None, None)

    cc = f"sm_{info.capability[0]}{info.capability[1]}"
    print(f"{info.name} ({cc}, {info.multiprocessors} SMs); kernels: {origins}")
    peak_tb = info.peak_bandwidth / 1e12 if info.peak_bandwidth else float("nan")
    print(f"DRAM peak {peak_tb:.2f} TB/s (driver), copy {measured / 1e12:.2f} TB/s")
    print(
        f"{'op':14} {'dtype':8} {'shape':44} {'enqueue ms':>10} {'graph ms':>9} {'ref ms':>8} {'x ref':>7} "
        f"{'x base':>8} {'floor%':>7}"
    )
    print(
        "x base (graph times): Scatterbrain / dense SDPA; attention_info from q, k / q k^T + logits kernel; "
        "token_fusion with Cm=64 / its split launches (scores, then matching)"
    )
    for row in rows:
        base = row.get("ratio_to_dense", row.get("ratio_to_gemm_path", row.get("ratio_to_split")))
        dense = f"{base:8.2f}" if base is not None else f"{'-':>8}"
        verdict = ""
        if row["target_met"] is not None:
            verdict = ("  PASS " if row["target_met"] else "  MISS ") + row["target"]
        print(
            f"{row['op']:14} {row['dtype']:8} {row['shape']:44} {row['enqueue_ms']:10.4f} "
            f"{row['graph_ms']:9.4f} {row['reference_ms']:8.3f} {row['speedup_vs_reference']:7.1f} {dense} "
            f"{100 * row['floor_fraction_measured_copy']:6.1f}%{verdict}"
        )
    print("per-kernel us per call (float16):")
    for row in rows:
        if row["dtype"] == "float16":
            parts = ", ".join(f"{k} {v:.1f}" for k, v in row["kernels_us"].items())
            print(f"  {row['op']} B={row['batch']}: {parts}")
    print("vitrt_tf_match, SM cycles per step (float16; share of the kernel's cycles):")
    for row in rows:
        if row["dtype"] == "float16" and "match_phase_cycles" in row:
            steps = row["match_phase_cycles"]
            total = sum(steps.values())
            parts = ", ".join(f"{k} {v:.0f} ({100 * v / total:.0f}%)" for k, v in steps.items())
            print(f"  B={row['batch']}: {total:.0f} cycles: {parts}")
    print("attention_info from q, k with its keys split between warps (float16, graph us; x of 1 split):")
    for row in rows:
        if row.get("key_splits_graph_ms"):
            times = row["key_splits_graph_ms"]
            parts = ", ".join(f"{s}: {1e3 * ms:.1f} ({ms / times[1]:.2f}x)" for s, ms in times.items())
            print(f"  B={row['batch']}: {parts}")
    print(
        "Scatterbrain by form of its cluster kernel (mma: tensor cores; staged, tiled: CUDA cores): the "
        "whole op (graph us) and the cluster kernel alone (profiler us), x of the launcher's form"
    )
    for row in rows:
        if row["op"] != "scatterbrain":
            continue
        first = row["cluster_form"]

        def cluster_us(form: str, row: dict[str, Any] = row) -> float:
            return sum(
                us for name, us in row["cluster_forms_kernels_us"][form].items() if "vitrt_sb_cluster" in name
            )

        op_ms = row["cluster_forms_graph_ms"]
        parts = ", ".join(
            f"{form} op {1e3 * ms:.1f} ({ms / op_ms[first]:.2f}x), kernel {cluster_us(form):.1f} "
            f"({cluster_us(form) / cluster_us(first):.2f}x)"
            for form, ms in op_ms.items()
        )
        print(f"  B={row['batch']} {row['dtype']}: {parts}")
    print(
        "Scatterbrain's combine kernel at 256 features by plan (queries per block, low-rank state staged in "
        "shared memory or read from global memory; float16, the launcher's plan first): the whole op (graph "
        "us) and the combine kernel alone (profiler us), x of the launcher's plan"
    )
    for plans in combine_plans:
        print(f"  B={plans['batch']}: {_against_first(plans['graph_ms'], plans['combine_us'], 'combine')}")
    print(
        "Scatterbrain's radix sort by keys per thread (float16; the launcher's count first; before "
        "2026-11-28: 4 up to P = 2048, else 8): the whole op (graph us) and the sort alone (profiler us), x "
        "of the first"
    )
    for sorts in sort_items:
        parts = _against_first(sorts["graph_ms"], sorts["sort_us"], "sort")
        print(f"  N={sorts['tokens']} (P={sorts['positions']}) B={sorts['batch']}: {parts}")
    result = {
        "device": info.name,
        "capability": list(info.capability),
        "peak_bandwidth_bytes_per_s": info.peak_bandwidth,
        "copy_bandwidth_bytes_per_s": measured,
        "kernel_origin": origins,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rows": rows,
        "combine_plans": combine_plans,
        "sort_items": sort_items,
    }
    write_results(args.out, "kernels.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
