"""Each of vitrt's kernels at the models' shapes, once after a warm-up, for Nsight Compute:

    ncu --clock-control none -k regex:vitrt_ --launch-skip 0 python tests/gpu/profile_kernels.py

(--clock-control none: the clocks the benchmarks run at.) Shapes: TokenFusion at DeiT-S (N = 197,
C = 384, r = 16, MCTF) at batch 1 and 64; a fused block's attention_info at batch 64 (6 heads), from q k^T
and from q and k; Scatterbrain at T2T-ViT-t-14's first token attention (N = 3136) at batch 8. float16.
The warm-up runs before ``torch.cuda.profiler.start()``; profile with ``--profile-from-start off`` to
skip it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests._support.kernel_checks import MCTF, _fixed, attention_attrs, attn_inputs, fusion_inputs
from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda
from vitrt.plugins.lsh_attention.spec import Mode
from vitrt.plugins.token_fusion.cuda import attention_info_cuda, attention_info_qk_cuda, token_fusion_cuda
from vitrt.plugins.token_fusion.spec import TokenFusionAttrs


def main() -> int:
    dtype = torch.float16
    fusion = {b: fusion_inputs(b, 197, 384, dtype, "cuda") for b in (1, 64)}
    attrs = TokenFusionAttrs(r=16, **MCTF)
    logits = torch.randn(64, 6, 197, 197, device="cuda").mul(3).to(dtype)
    size = torch.ones(64, 197, device="cuda", dtype=dtype)
    qkv = torch.randn(64, 197, 3, 6, 64, device="cuda").mul(1.7).to(dtype).permute(2, 0, 3, 1, 4)
    sb_attrs = attention_attrs(Mode.SCATTERBRAIN, 24, 2, 12, 147**-0.5)
    hv, proj = _fixed(2, 12, 64, "cuda")
    q, k, v = attn_inputs(8, 3136, 64, dtype, "cuda")

    def once() -> None:
        for b in (1, 64):
            token_fusion_cuda(*fusion[b], attrs)
        attention_info_cuda(logits, size, 0.125)
        attention_info_qk_cuda(qkv[0], qkv[1], size, 0.125)
        scatterbrain_cuda(q, k, v, hv, proj, sb_attrs)

    once()  # warm-up: module loads, kernel attributes
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    once()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print("profile_kernels: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
