"""SDPA with proportional attention's bias as a mask, folded into the keys, and with none, on a GPU.

What the bias costs torch's ``scaled_dot_product_attention`` as a mask, and what folding it into the keys
costs instead (``FusionBlock._folds_bias``), as ratios measured in one run.

    python benchmarks/sdpa_bias.py [--batches 1 8 64] [--iters 50] [--out results.json]

Workload: the 12 attentions of DeiT-S + MCTF (r = 16: N = 197, 181, ..., 21 tokens; 6 heads, head dim
64; float16), each as the model runs it, q, k and v views of one projection; timed as one CUDA graph of
the 12, median of ``--iters`` replays. Rows:
- "no bias": SDPA with no mask, the floor (attention without proportional attention);
- "mask": SDPA with the [B, 1, 1, N] mask log(size), what vitrt ran for every batch size before;
- "folded": q and k 72 wide (q[..., 64] = 1, the rest of the padding 0) with k[..., 64] = log(size) / scale
  written by one strided multiply, then SDPA with no mask: what ``FusionBlock`` runs from
  ``fold_bias_min_batch`` images up (the write included in the time).
Ratios are against "mask" at the same batch. The folded attention's output is checked against the
masked one's (max abs difference, float16; exit status 1 above ``MAX_DIFF``). Exit status 2 without a CUDA
GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_results  # noqa: E402
from vitrt.deploy.cuda_timing import capture_graph, event_median_ms  # noqa: E402

HEADS, E, EP = 6, 64, 72
SCALE = E**-0.5
TOKENS = [197 - 16 * i for i in range(12)]
MAX_DIFF = 1e-2  # folded vs masked output, float16: outputs of magnitude ~1, a few units of rounding


def layer(batch: int, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One attention's inputs: q, k, v [B, H, N, E] as views of a [B, N, 3, H, E] projection, the folded
    q', k' [B, H, N, EP] as views of a [B, N, 2, H, EP] one (same values in the first E channels), and
    log(size) [B, N] for integer sizes 1 .. 8."""
    kw: dict[str, Any] = {"device": "cuda", "dtype": torch.float16}
    qkv = torch.randn(batch, n, 3, HEADS, E, generator=g, **kw).permute(2, 0, 3, 1, 4)
    folded = torch.zeros(batch, n, 2, HEADS, EP, **kw).permute(2, 0, 3, 1, 4)
    folded[0, ..., :E] = qkv[0]
    folded[1, ..., :E] = qkv[1]
    folded[0, ..., E] = 1.0
    size = torch.randint(1, 9, (batch, n), device="cuda", generator=g).half()
    return {"q": qkv[0], "k": qkv[1], "v": qkv[2], "fq": folded[0], "fk": folded[1], "log_size": size.log()}


def attention(t: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
    if mode == "no bias":
        return F.scaled_dot_product_attention(t["q"], t["k"], t["v"], scale=SCALE)
    if mode == "mask":
        mask = t["log_size"][:, None, None, :]
        return F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=mask, scale=SCALE)
    column = t["fk"][..., E]
    torch.mul(t["log_size"][:, None, :].expand_as(column), 1.0 / SCALE, out=column)
    return F.scaled_dot_product_attention(t["fq"], t["fk"], t["v"], scale=SCALE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--iters", type=int, default=50, help="graph replays timed per case (default 50)")
    parser.add_argument(
        "--out", default=None, help="JSON results (default $OUT/sdpa_bias.json when OUT is set)"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: torch.cuda.is_available() is False; nothing to benchmark", file=sys.stderr)
        return 2
    g = torch.Generator(device="cuda").manual_seed(0)
    rows: list[dict[str, Any]] = []
    failed: list[int] = []
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}; DeiT-S + MCTF's 12 attentions, float16"
    )
    print(f"{'batch':>5} {'mode':8} {'us':>8} {'x mask':>7}")
    for batch in args.batches:
        layers = [layer(batch, n, g) for n in TOKENS]
        with torch.inference_mode():
            diff = (attention(layers[0], "folded") - attention(layers[0], "mask")).abs().max().item()
            times = {}
            for mode in ("mask", "no bias", "folded"):
                graph, _ = capture_graph(
                    lambda mode=mode, layers=layers: [attention(t, mode) for t in layers]
                )
                times[mode] = 1000 * event_median_ms(graph.replay, args.iters, warmup=10)
        for mode, us in times.items():
            rows.append({"batch": batch, "mode": mode, "us": us, "ratio_to_mask": us / times["mask"]})
            print(f"{batch:5d} {mode:8} {us:8.1f} {us / times['mask']:7.2f}", flush=True)
        print(f"      folded vs mask, first attention: max abs difference {diff:.2e}")
        rows.append({"batch": batch, "folded_vs_mask_max_abs_diff": diff})
        if diff > MAX_DIFF:
            failed.append(batch)
    write_results(args.out, "sdpa_bias.json", {"device": torch.cuda.get_device_name(), "rows": rows})
    if failed:
        print(f"folded output off the masked one by more than {MAX_DIFF} at batch {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
