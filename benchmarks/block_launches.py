"""Kernels one transformer block launches on the GPU path, counted on the CPU: DeiT-S blocks at 224 x 224
(197 tokens in, 384 channels, 6 heads, float16, batch 1) as the models run them eagerly on CUDA tensors,
with the kernels run by the CPU emulator (``emulated_kernels``), so no GPU is needed.

    python benchmarks/block_launches.py [--json out.json]

Rows: a fused block with r = 0 and no proportional attention (the plain block on the kernel path:
scaled_dot_product_attention; the baseline), a fused block of the "mctf" preset (r = 16, one-step-ahead
attention) and of "tome" (r = 16), each given token sizes as every block after a model's first fused one
is, each printed with its ratio to the baseline. At small batch a block's time on a GPU is mostly
the number of kernels it launches (each is a few microseconds however little it does), which is why this
count is worth keeping down; it is a count, not a time.

How a count is taken: the block's forward runs under a torch dispatch mode that sees every torch op.
An op counts as a kernel unless it launches none on CUDA: views and allocations (by name), and ops
whose output shares its input's storage (a ``reshape`` or ``contiguous`` that was a view, a ``to`` that
changed nothing). A vitrt op (``torch.ops.vitrt.*``) counts the kernels it launched, read from the
emulator, plus the torch ops inside it. torch ops that are several kernels on CUDA count once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NO_KERNEL = {
    "view", "_unsafe_view", "_reshape_alias", "permute", "transpose", "t", "select", "slice", "expand",
    "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind", "alias", "as_strided", "detach",
    "empty", "empty_like", "new_empty", "empty_strided", "lift_fresh", "dropout", "sym_size", "sym_stride",
}  # fmt: skip
"""Ops that launch no kernel on CUDA (views, allocations, dropout in eval)."""
MAYBE_VIEW = {"reshape", "contiguous", "to", "_to_copy", "clone_if_needed", "flatten"}
"""Ops that launch a copy only when their output does not share the input's storage."""


class KernelCounter(TorchDispatchMode):
    """Counts, by op name, the torch ops of a forward that launch a kernel on CUDA (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.namespace == "vitrt" or name in NO_KERNEL:
            return out
        if name in MAYBE_VIEW and isinstance(out, torch.Tensor) and isinstance(args[0], torch.Tensor):
            if out.untyped_storage().data_ptr() == args[0].untyped_storage().data_ptr():
                return out
        self.ops[name] += 1
        return out


def count_block(block: torch.nn.Module, x: torch.Tensor, size: torch.Tensor) -> dict[str, int]:
    """Kernels launched by one forward of ``block`` on tokens ``x`` with token sizes ``size``, as the model
    chains it (``Block.forward_chain``): its norm1 of x and the log of its sizes come from the block before
    (not counted) and its last residual add writes the norm after it (the next block's norm1, a LayerNorm of
    the width). Torch ops by name and vitrt kernels by name."""
    from vitrt.models.layers import Carry
    from vitrt.plugins.cuda_emulation import emulated_kernels, emulated_module
    from vitrt.plugins.token_fusion import cuda as tf_cuda

    inner: Counter[str] = Counter()
    depth = [0]  # only the outermost wrapped function counts (they call each other)

    def wrap(original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return original(*args, **kwargs)
            depth[0] += 1
            try:
                with KernelCounter() as counter:
                    result = original(*args, **kwargs)
            finally:
                depth[0] -= 1
            inner.update(counter.ops)
            return result

        return counted

    names = ["token_fusion_cuda", "token_fusion_norm_cuda", "merge_tokens_cuda", "attention_info_cuda"]
    names += ["attention_info_qk_cuda", "layer_norm_rows_cuda", "add_layer_norm_rows_cuda"]
    originals = {name: getattr(tf_cuda, name) for name in names if hasattr(tf_cuda, name)}
    # The emulator fills workspaces with 0xff to expose reads of unwritten memory; on CUDA they are
    # torch.empty: no kernel.
    originals["new_workspace"] = tf_cuda.new_workspace
    module = emulated_module("token_fusion")
    try:
        for name, original in originals.items():
            setattr(tf_cuda, name, wrap(original) if name != "new_workspace" else _empty_workspace)
        with torch.inference_mode(), emulated_kernels():
            carry = Carry(block.norm1(x), size.log())  # what the block before wrote for this one
            next_norm = torch.nn.LayerNorm(x.shape[-1]).to(x.dtype)
            block.forward_chain(x, size, carry, next_norm)  # loads the emulated kernels
            before = Counter(module.launches)
            inner.clear()
            with KernelCounter() as counter:
                block.forward_chain(x, size, carry, next_norm)
    finally:
        for name, original in originals.items():
            setattr(tf_cuda, name, original)
    launched = Counter(module.launches)
    launched.subtract(before)
    result = dict(counter.ops + inner)
    result.update({name: n for name, n in launched.items() if n > 0})
    return result


def _empty_workspace(nbytes: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, device=like.device)


def blocks() -> dict[str, torch.nn.Module]:
    """The three DeiT-S blocks (float16, eval): plain on the kernel path, first MCTF, first ToMe."""
    import vitrt
    from vitrt.plugins.token_fusion.module import FusionBlock

    mctf = vitrt.create_model("deit_small_patch16_224", fusion="mctf").half().eval()
    tome = vitrt.create_model("deit_small_patch16_224", fusion="tome").half().eval()
    first_mctf = mctf.blocks[1]
    assert isinstance(first_mctf, FusionBlock)
    plain = FusionBlock(mctf.blocks[0], dataclasses.replace(first_mctf.config, r=0, prop_attn=False))
    return {"plain block (r = 0, SDPA)": plain.eval(), "mctf block": first_mctf, "tome block": tome.blocks[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the counts here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(1, 197, 384, dtype=torch.float16)
    size = torch.ones(1, 197, dtype=torch.float16)  # as every block after the first fused one gets
    counts = {name: count_block(block, x, size) for name, block in blocks().items()}
    base = sum(next(iter(counts.values())).values())
    print("kernels per block forward, DeiT-S at 224 (197 tokens), float16, batch 1 (CPU emulator)")
    for name, ops in counts.items():
        total = sum(ops.values())
        detail = ", ".join(f"{op} {n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
        print(f"{name:28} {total:3d} kernels ({total / base:.2f}x the plain block): {detail}")
    if args.json:
        Path(args.json).write_text(json.dumps(counts, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
