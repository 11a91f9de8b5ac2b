"""T2T-ViT's token module on a GPU: its 147-channel norm and qkv product with the rows padded to 16 bytes and
without, and torch's layer_norm against vitrt's row norm at the module's other widths; ratios in one run.

    python benchmarks/t2t_norms.py [--batches 1 8 64] [--iters 50] [--out results.json]

Float16, each case one CUDA graph, median of ``--iters`` replays. Rows, at each batch:
- "qkv 147" / "qkv 152": attention1's qkv product (147 -> 192) on 147-channel rows, what ran before (cuBLAS
  took an align1 kernel there), and on the same rows padded with zeros to 152 with a zero-padded weight;
- "norm1+qkv unpadded" / "padded": the row-norm kernel and that product, as attention1 runs them with
  ``RowLayerNorm.pad_rows`` off and on;
- "T2T module unpadded" / "padded": T2T-ViT-t-14's whole token module (224 pixels -> 196 tokens), the same
  model with ``pad_rows`` off and on;
- "T2T module splits copied" / "fused": the same with ``T2TModule.fused_splits`` off (each soft split's
  patches copied out, then normed) and on (``unfold_layer_norm``: split and norm in one kernel);
- "norm 64 torch" / "vitrt", "norm 576 torch" / "vitrt": ``F.layer_norm`` against
  ``torch.ops.vitrt.row_layer_norm`` at the module's other norms (64 channels on 3136 tokens: norm2 of
  attention1; 576 on 784: norm1 of attention2), which torch's kernel runs one block per row;
- "norm 64 lanes 32" / "8": vitrt's row norm at 64 channels, a warp per row against 8 lanes per row (four
  rows a warp: what it takes).
Each ratio is against the first row of its pair. Each pair's two outputs are compared (max abs difference;
exit status 1 above ``MAX_DIFF``). Exit status 2 without a CUDA GPU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import write_results  # noqa: E402
from vitrt import create_model  # noqa: E402
from vitrt.deploy.cuda_timing import capture_graph, event_median_ms  # noqa: E402
from vitrt.models.layers import RowLayerNorm, padded_linear  # noqa: E402
from vitrt.models.t2t_vit import T2TModule  # noqa: E402
from vitrt.plugins.token_fusion.cuda import layer_norm_rows_cuda  # noqa: E402

Case = tuple[str, Callable[[], torch.Tensor]]
MAX_DIFF = 2e-2  # float16 outputs of magnitude up to ~10: a few units of rounding (other summation orders)


def timed(fn: Callable[[], Any], iters: int) -> tuple[float, Any]:
    """(microseconds per replay of ``fn`` captured as a CUDA graph, its output)."""
    graph, out = capture_graph(fn)
    return 1000 * event_median_ms(graph.replay, iters, warmup=10), out


def switched(flag: tuple[type, str], on: bool, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``fn`` run with the class attribute ``flag`` (class, name: a switch that defaults to True) set to
    ``on``, and True again after."""
    owner, name = flag

    def run() -> torch.Tensor:
        setattr(owner, name, on)
        try:
            return fn()
        finally:
            setattr(owner, name, True)

    return run


PAD_ROWS = (RowLayerNorm, "pad_rows")
FUSED_SPLITS = (T2TModule, "fused_splits")


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def cases(model: torch.nn.Module, batch: int) -> list[tuple[str, Case, Case]]:
    """The pairs timed at ``batch``: (name, (label, fn) of the baseline, (label, fn) of the other)."""
    t2t = model.tokens_to_token
    block = t2t.attention1
    qkv = block.attn.qkv
    w152 = F.pad(qkv.weight, (0, 5)).contiguous()
    g = torch.Generator(device="cuda").manual_seed(batch)
    images = torch.randn(batch, 3, 224, 224, device="cuda", generator=g).half()
    patches = t2t.soft_split(0, images)  # [B, 3136, 147]
    norm1, derived = block.norm1, block.attn.derived
    h = torch.ops.vitrt.row_layer_norm(patches, norm1.weight, norm1.bias, norm1.eps)
    h152 = F.pad(h, (0, 5))

    def norm_qkv() -> torch.Tensor:  # attention1's norm1 and qkv product, as it runs them
        return padded_linear(qkv, norm1.padded_or_plain(patches), derived)

    pairs = [
        ("qkv", ("147", lambda: F.linear(h, qkv.weight)), ("152", lambda: F.linear(h152, w152))),
        (
            "norm1+qkv",
            ("unpadded", switched(PAD_ROWS, False, norm_qkv)),
            ("padded", switched(PAD_ROWS, True, norm_qkv)),
        ),
        (
            "T2T module",
            ("unpadded", switched(PAD_ROWS, False, lambda: t2t(images))),
            ("padded", switched(PAD_ROWS, True, lambda: t2t(images))),
        ),
        (
            "T2T module splits",
            ("copied", switched(FUSED_SPLITS, False, lambda: t2t(images))),
            ("fused", lambda: t2t(images)),
        ),
    ]
    for width, tokens in ((64, 3136), (576, 784)):
        x = torch.randn(batch, tokens, width, device="cuda", generator=g).half() * 3 + 1
        w = torch.rand(width, device="cuda", generator=g).half() + 0.5
        b = torch.randn(width, device="cuda", generator=g).half()
        pairs.append(
            (
                f"norm {width}",
                ("torch", lambda x=x, w=w, b=b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)),
                ("vitrt", lambda x=x, w=w, b=b: torch.ops.vitrt.row_layer_norm(x, w, b, 1e-5)),
            )
        )
        if width == 64:  # vitrt's narrow rows: 8 lanes a row (what it takes) against a warp a row
            pairs.append(
                (
                    "norm 64 lanes",
                    ("32", lambda x=x, w=w, b=b: layer_norm_rows_cuda(x, w, b, 1e-5, group=32)),
                    ("8", lambda x=x, w=w, b=b: layer_norm_rows_cuda(x, w, b, 1e-5)),
                )
            )
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--iters", type=int, default=50, help="graph replays timed per case (default 50)")
    parser.add_argument("--out", default=None, help="JSON results (default $OUT/t2t_norms.json with OUT set)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: torch.cuda.is_available() is False; nothing to benchmark", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = create_model("t2t_vit_t_14").cuda().half().eval()  # registers torch.ops.vitrt's ops too
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; T2T-ViT-t-14's token module, float16")
    print(f"{'batch':>5} {'case':24} {'us':>8} {'ratio':>6}")
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for batch in args.batches:
        with torch.inference_mode():
            for name, base, other in cases(model, batch):
                t0, out0 = timed(base[1], args.iters)
                t1, out1 = timed(other[1], args.iters)
                for label, us in ((base[0], t0), (other[0], t1)):
                    rows.append({"batch": batch, "case": f"{name} {label}", "us": us, "ratio": us / t0})
                    print(f"{batch:5d} {name + ' ' + label:24} {us:8.1f} {us / t0:6.2f}", flush=True)
                difference = diff(out0, out1)
                rows.append({"batch": batch, "case": f"{name} max abs diff", "value": difference})
                print(f"      {name}: max abs difference {difference:.2e}")
                if difference > MAX_DIFF:
                    failed.append(f"{name} at batch {batch}")
    write_results(args.out, "t2t_norms.json", {"device": torch.cuda.get_device_name(), "rows": rows})
    if failed:
        print(f"padded or vitrt output off by more than {MAX_DIFF}: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
