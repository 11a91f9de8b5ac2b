"""End-to-end GPU inference in PyTorch: vitrt's models (dense, MCTF and ToMe on the token-fusion kernels,
T2T-ViT-t-14 with Scatterbrain on its kernels) against timm's DeiT-S with fused attention, as ratios
measured in one process.

    python benchmarks/gpu_models.py [--batches 1 8 64] [--iters 50] [--out F] [--skip-t2t | --skip-deit]

Rows (float16, 224 x 224, random weights and images, eval mode):
- DeiT-S: timm dense (``timm.create_model("deit_small_patch16_224")``, when timm imports), official ToMe
  r = 16 on it (when ``VITRT_TOME_SRC`` names a checkout of facebookresearch/ToMe that imports here),
  vitrt dense (timm's weights loaded, so its logits are checked against timm's), vitrt mctf and vitrt tome
  (presets "mctf", "tome": the fusion runs on vitrt's CUDA kernels through torch.ops.vitrt.token_fusion).
- T2T-ViT-t-14: vitrt dense (scaled_dot_product_attention in the T2T module and the blocks) and vitrt
  with attention="scatterbrain" (the two T2T token attentions on vitrt's Scatterbrain kernels).
Each at every batch size, eager and replayed as a CUDA graph. Ratios: against timm dense at the same
batch and mode for DeiT-S (vitrt dense where timm is missing), against vitrt dense for T2T-ViT-t-14.

Each vitrt row is timed again on the path before the 2026-11-26 GPU-path changes (``previous_path``;
``--no-previous-path`` skips it), and the ratio now / before is printed: the same run's baseline.

Timing: CUDA events around each call (eager) or graph replay, after warm-up; the median of ``--iters``
in ms. Eager times include the host's launch overhead, as an application sees it. Each row is printed as
it is measured; a row that fails prints its traceback and the run goes on (its group's ratios are left
out where the baseline row failed). Exit status 2 without a CUDA GPU, 1 if any row failed. Checks
printed with the table: vitrt dense vs timm logits (same weights), and the fused models' top-1
agreement with their own float32 reference path on the CPU (token fusion decisions can flip between
float16 and float32, so this is reported, not asserted).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_results  # noqa: E402
from vitrt.deploy.cuda_timing import capture_graph, event_median_ms  # noqa: E402

DTYPE = torch.float16
T = TypeVar("T")
FAILED: list[str] = []  # what _guarded saw fail in this run


@contextlib.contextmanager
def _on_path(folder: str | None) -> Iterator[None]:
    if folder:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder and folder in sys.path:
            sys.path.remove(folder)


def timm_models() -> tuple[nn.Module | None, nn.Module | None, str]:
    """(timm DeiT-S, official ToMe on a second timm DeiT-S or None, note)."""
    try:
        import timm
    except ImportError as exc:
        return None, None, f"timm not importable ({exc}): DeiT-S ratios are against vitrt dense"
    dense = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    note = f"timm {timm.__version__}"
    src = os.environ.get("VITRT_TOME_SRC")
    if not src:
        return dense, None, note + "; official ToMe skipped (set VITRT_TOME_SRC to a ToMe checkout)"
    try:
        with _on_path(src):
            tome = importlib.import_module("tome")
            merged = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
            merged.load_state_dict(dense.state_dict())
            tome.patch.timm(merged)
            merged.r = 16
            merged.cpu()(torch.randn(1, 3, 224, 224))  # does the patch run on this timm?
    except Exception as exc:  # the official patch targets older timm releases
        return dense, None, note + f"; official ToMe skipped ({type(exc).__name__}: {exc})"
    return dense, merged, note + "; official ToMe r = 16"


def deit_rows(dense_timm: nn.Module | None, tome_timm: nn.Module | None) -> list[tuple[str, nn.Module]]:
    from vitrt import create_model

    rows: list[tuple[str, nn.Module]] = []
    if dense_timm is not None:
        rows.append(("timm DeiT-S dense (SDPA)", dense_timm))
    if tome_timm is not None:
        rows.append(("official ToMe r=16 on timm", tome_timm))
    for label, fusion in (
        ("vitrt DeiT-S dense", None),
        ("vitrt DeiT-S mctf", "mctf"),
        ("vitrt DeiT-S tome", "tome"),
    ):
        model = create_model("deit_small_patch16_224", fusion=fusion)
        if dense_timm is not None:
            model.load_state_dict(dense_timm.state_dict(), strict=False)
        rows.append((label, model.eval()))
    return rows


def t2t_rows() -> list[tuple[str, nn.Module]]:
    from vitrt import create_model

    dense = create_model("t2t_vit_t_14").eval()
    sparse = create_model("t2t_vit_t_14", attention="scatterbrain").eval()
    sparse.load_state_dict(dense.state_dict(), strict=False)  # same weights; the cores keep their seeds
    return [("vitrt T2T-ViT-t-14 dense (SDPA)", dense), ("vitrt T2T-ViT-t-14 scatterbrain", sparse)]


@contextlib.contextmanager
def previous_path(model: nn.Module) -> Iterator[None]:
    """Run ``model`` the way vitrt did when it was last timed on a GPU (issue 15,
    benchmarks/results/h100-2026-11-26), to time the GPU-path changes since then against it in one
    process: a fused block's info from q k^T through a GEMM and the logits kernel (not the kernel reading
    q and k), the norm after a fusion as its own LayerNorm (not written by the merge kernel, and gathered
    by dest in the one-step-ahead attention), ToMe's add before its fusion by torch (not formed by the
    merge kernel), proportional attention's log size by torch's log (not written with info or by the
    merge), the patch conv and the soft splits as conv / im2col (not a GEMM / strided copy),
    T2T's 147-channel norms by torch's layer_norm (not the row kernel), and each residual add and the norm
    after it as torch's add and layer_norm (not one add_layer_norm kernel, nor the merge of MCTF's
    one-step-ahead attention; its projection stays before that merge, on the unfused tokens: 16 % more
    rows than on the previous path over DeiT-S + MCTF's fused blocks), ToMe's metric as torch's mean
    of the keys (not rows of the qkv projection), and proportional attention's bias as SDPA's mask at
    every batch size (not folded into the keys from ``FusionBlock.fold_bias_min_batch`` images up)."""
    from vitrt.models import layers
    from vitrt.models.deit import PatchEmbed
    from vitrt.models.layers import RowLayerNorm
    from vitrt.models.t2t_vit import T2TModule
    from vitrt.plugins.token_fusion import cuda as tf_cuda
    from vitrt.plugins.token_fusion.module import FusionBlock

    def unfused_norm(
        block: FusionBlock,
        x: Any,
        metric: Any,
        info: Any,
        size: Any,
        attrs: Any,
        norm: Any,
        by_token: bool = False,
        residual: Any = None,
    ) -> Any:  # the add, the fusion, the norm of the fused rows (the one-step-ahead attention gathers)
        x = x if residual is None else x + residual
        x_f, size_f, dest = block._fuse(x, metric, info, size, attrs)
        return x_f, size_f, dest, norm(x_f), None  # no log size: the next block takes torch's log

    def info_then_log(block: FusionBlock, q: Any, k: Any, size: Any) -> Any:  # log size as its own kernel
        info, _ = info_with_log(block, q, k, size)
        return info, None if size is None else block._log_size(size, q)

    reformulated = [m for m in model.modules() if isinstance(m, PatchEmbed | T2TModule | RowLayerNorm)]
    saved = (tf_cuda.info_qk_applies, FusionBlock._fuse_norm, FusionBlock._info, layers.add_norm_fuses)
    saved_norm_on_merge, saved_key_mean = FusionBlock._norm_on_merge, FusionBlock._key_mean_in_qkv
    saved_fold = FusionBlock.fold_bias_min_batch
    FusionBlock.fold_bias_min_batch = 1 << 30  # proportional attention's bias as SDPA's mask
    info_with_log = FusionBlock._info
    tf_cuda.info_qk_applies = lambda *args: False
    FusionBlock._fuse_norm = unfused_norm  # type: ignore[assignment,method-assign]
    FusionBlock._info = info_then_log  # type: ignore[method-assign]
    FusionBlock._norm_on_merge = lambda *args: False  # type: ignore[method-assign]
    FusionBlock._key_mean_in_qkv = lambda *args: False  # type: ignore[method-assign]
    layers.add_norm_fuses = lambda *args: False
    for m in reformulated:
        m.lowering = "portable"  # only these modules: attention keeps its eager path
    try:
        yield
    finally:
        tf_cuda.info_qk_applies, layers.add_norm_fuses = saved[0], saved[3]
        FusionBlock._fuse_norm, FusionBlock._info = saved[1], saved[2]  # type: ignore[method-assign]
        FusionBlock._norm_on_merge = saved_norm_on_merge  # type: ignore[method-assign]
        FusionBlock._key_mean_in_qkv = saved_key_mean  # type: ignore[method-assign]
        FusionBlock.fold_bias_min_batch = saved_fold
        for m in reformulated:
            m.lowering = "eager"


def measure(model: nn.Module, batch: int, iters: int) -> dict[str, float]:
    """Eager and CUDA-graph medians in ms for one model at one batch size (float16 on the GPU)."""
    g = torch.Generator(device="cuda").manual_seed(batch)
    x = torch.randn(batch, 3, 224, 224, device="cuda", generator=g, dtype=DTYPE)
    with torch.inference_mode():
        eager = event_median_ms(lambda: model(x), iters, warmup=10)
        graph, _ = capture_graph(lambda: model(x))
        replay = event_median_ms(graph.replay, iters, warmup=10)
    return {"eager_ms": eager, "graph_ms": replay}


def measure_other_bias(model: nn.Module, batch: int, iters: int) -> dict[str, Any]:
    """``measure`` with the choice of proportional attention's bias that ``FusionBlock.fold_bias_min_batch``
    does not make at this batch: the mask where it folds the bias into the keys, the keys where it masks."""
    from vitrt.plugins.token_fusion.module import FusionBlock

    saved = FusionBlock.fold_bias_min_batch
    folds = batch >= saved
    FusionBlock.fold_bias_min_batch = 1 << 30 if folds else 1
    try:
        return {"choice": "bias as mask" if folds else "bias in keys", **measure(model, batch, iters)}
    finally:
        FusionBlock.fold_bias_min_batch = saved


def top_kernels(
    model: nn.Module, batch: int, calls: int = 5, top: int = 12
) -> list[tuple[str, float, float]]:
    """The ``top`` CUDA kernels of ``model`` at ``batch`` by GPU time: (name, microseconds per forward,
    share of the forward's kernel time), from torch.profiler (CUPTI) over ``calls`` eager forwards."""
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=DTYPE)
    with torch.inference_mode():
        model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                model(x)
            torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type.name == "CUDA":
            totals[event.name] += event.time_range.elapsed_us() / calls
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [(name[:90], us, us / whole) for name, us in ranked]


def agreement(model: nn.Module, batch: int = 8) -> dict[str, float]:
    """The CUDA float16 model (kernel path) against the same model in float32 on the CPU (reference
    path): top-1 agreement and the largest logit difference relative to the largest logit."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(batch, 3, 224, 224, generator=g)
    with torch.inference_mode():
        gpu = model(x.cuda().to(DTYPE)).float().cpu()
        try:
            ref = model.float().cpu()(x)
        finally:  # back on the GPU even if the reference fails: the timings that follow need it there
            model.cuda().to(DTYPE)
    top1 = float((gpu.argmax(-1) == ref.argmax(-1)).float().mean())
    rel = float((gpu - ref).abs().max() / ref.abs().max())
    return {"top1_agreement": top1, "max_rel_logit_diff": rel}


def _row_line(r: dict[str, Any]) -> str:
    def ratio(x: float | None) -> str:
        return f"{x:7.2f}" if x is not None else f"{'-':>7}"

    return (
        f"{r['model']:36} {r['batch']:5d} {r['eager_ms']:9.3f} {ratio(r['eager_ratio'])} "
        f"{r['graph_ms']:9.3f} {ratio(r['graph_ratio'])}"
    )


def _guarded(what: str, fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)``, or None after printing the traceback: one failing row does not end the run."""
    try:
        return fn(*args)
    except Exception:  # a benchmark reports every failure and goes on
        print(f"FAILED: {what}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        FAILED.append(what)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--iters", type=int, default=50, help="timed runs per case (default 50)")
    parser.add_argument(
        "--out", default=None, help="JSON results (default $OUT/gpu_models.json when OUT is set)"
    )
    parser.add_argument("--skip-t2t", action="store_true", help="DeiT-S rows only")
    parser.add_argument("--skip-deit", action="store_true", help="T2T-ViT-t-14 rows only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print each vitrt efficient model's top kernels at batch 1, 8 and 64",
    )
    parser.add_argument(
        "--fold-other",
        action="store_true",
        help="time each fused vitrt model again with the other choice of proportional attention's bias "
        "(in the keys where it takes SDPA's mask, and the reverse): the evidence for fold_bias_min_batch",
    )
    parser.add_argument(
        "--no-previous-path",
        action="store_true",
        help="skip timing every vitrt model again on the path before issue 15's 2026-11-26 changes",
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: torch.cuda.is_available() is False; nothing to benchmark", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # float16 models: no effect on the timed paths

    if args.skip_deit and args.skip_t2t:
        parser.error("--skip-deit and --skip-t2t leave no rows")
    dense_timm, tome_timm, note = (None, None, "no DeiT-S rows") if args.skip_deit else timm_models()
    groups = {} if args.skip_deit else {"DeiT-S": deit_rows(dense_timm, tome_timm)}
    if not args.skip_t2t:
        groups["T2T-ViT-t-14"] = t2t_rows()
    checks: dict[str, Any] = {}
    if dense_timm is not None:
        x = torch.randn(4, 3, 224, 224)
        with torch.inference_mode():
            vitrt_dense = dict(groups["DeiT-S"])["vitrt DeiT-S dense"]
            diff = (vitrt_dense(x) - dense_timm(x)).abs().max()
        checks["vitrt dense vs timm, float32 CPU, max abs logit diff"] = float(diff)
    for rows in groups.values():
        for _, model in rows:
            model.cuda().to(DTYPE)
    for label, model in groups.get("DeiT-S", [])[-2:] + groups.get("T2T-ViT-t-14", [])[1:]:
        key = f"{label}: CUDA float16 vs CPU float32 reference"
        checks[key] = _guarded(label, agreement, model)
        print(f"check: {key}: {checks[key]}", flush=True)

    # Each row is printed as it is measured, and a row that fails prints its error and the run goes on:
    # device time is scarce, and a run cut short by its time limit still leaves every row it finished.
    results: list[dict[str, Any]] = []
    previous: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for group, rows in groups.items():
        for batch in args.batches:
            base: dict[str, float] | None = None  # the group's first row; no ratios if it failed
            for k, (label, model) in enumerate(rows):
                t = _guarded(f"{label} B={batch}", measure, model, batch, args.iters)
                if k == 0:
                    base = t
                if t is None:
                    continue
                results.append(
                    {"group": group, "model": label, "batch": batch, **t,
                     "eager_ratio": t["eager_ms"] / base["eager_ms"] if base else None,
                     "graph_ratio": t["graph_ms"] / base["graph_ms"] if base else None}
                )  # fmt: skip
                print(f"row: {_row_line(results[-1])}", flush=True)
                if label.startswith("vitrt") and not args.no_previous_path:
                    with previous_path(model):
                        what = f"{label} B={batch} previous path"
                        before = _guarded(what, measure, model, batch, args.iters)
                    if before is not None:
                        previous.append(
                            {"model": label, "batch": batch, "previous": before, "now": t,
                             "graph_ratio": t["graph_ms"] / before["graph_ms"],
                             "eager_ratio": t["eager_ms"] / before["eager_ms"]}
                        )  # fmt: skip
                        print(f"row: {what}: graph ms {before['graph_ms']:.3f}", flush=True)
                if args.fold_other and label.startswith("vitrt") and ("mctf" in label or "tome" in label):
                    other = _guarded(
                        f"{label} B={batch} other bias", measure_other_bias, model, batch, args.iters
                    )
                    if other is not None:
                        others.append({"model": label, "batch": batch, **other, "now": t})
                        print(
                            f"row: {label} B={batch} {other['choice']}: graph ms {other['graph_ms']:.3f}, "
                            f"now / that {t['graph_ms'] / other['graph_ms']:.2f}",
                            flush=True,
                        )
                torch.cuda.empty_cache()

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {note}; float16, 224 x 224")
    for name, value in checks.items():
        print(f"check: {name}: {value}")
    print(f"{'model':36} {'batch':>5} {'eager ms':>9} {'x base':>7} {'graph ms':>9} {'x base':>7}")
    for r in results:
        print(_row_line(r))
    if previous:
        print("now vs the previous path (previous_path(): before issue 15's 2026-11-26 changes), same run:")
        print(f"{'model':36} {'batch':>5} {'graph ms':>9} {'before':>9} {'ratio':>6} {'eager ratio':>11}")
        for r in previous:
            now, before = r["now"]["graph_ms"], r["previous"]["graph_ms"]
            print(
                f"{r['model']:36} {r['batch']:5d} {now:9.3f} {before:9.3f} {r['graph_ratio']:6.2f} "
                f"{r['eager_ratio']:11.2f}"
            )
    profiles: dict[str, list[tuple[str, float, float]]] = {}
    if args.profile:
        efficient = [r for rows in groups.values() for r in rows if "vitrt" in r[0] and "dense" not in r[0]]
        for label, model in efficient:
            for batch in (1, 8, 64):
                key = f"{label} B={batch}"
                ranked = _guarded(f"profile of {key}", top_kernels, model, batch)
                if ranked is None:
                    continue
                profiles[key] = ranked
                print(f"top kernels, {key} (us per forward, share):")
                for name, us, share in profiles[key]:
                    print(f"  {us:9.1f} {100 * share:5.1f}%  {name}")
    payload = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "note": note,
        "checks": checks,
        "rows": results,
        "previous_path": previous,
        "top_kernels": profiles,
        "other_bias_choice": others,
    }
    write_results(args.out, "gpu_models.json", payload)
    if FAILED:
        print(f"{len(FAILED)} failed: {', '.join(FAILED)}", file=sys.stderr)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
