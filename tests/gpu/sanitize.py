"""Every kernel of both ops once, at small shapes, for compute-sanitizer (racecheck, synccheck, memcheck):

    compute-sanitizer --tool racecheck python tests/gpu/sanitize.py

tests/gpu/run_all.sh runs it under memcheck, racecheck and synccheck when SANITIZE=1. Shapes are the models'
token counts at batch 2 (N = 197 for token fusion, both score tiles, both dtypes, the scores and the
matching in one launch (float16, a 64-channel metric, and its largest, N = 256 and 128 channels), the
64-tile tensor-core scores, the merge of 384 and of 512 channels, with and without the norm after the merge
(by merged row and by token, with a residual and log size, on the vector and scalar paths), the merge added
to a base and normed, the row norm alone and after a residual add; a fused block's attention_info from q and
k, with log size, which is the tensor-core kernel in float16 (also with its keys split between warps) and
q k^T + the logits kernel in float32; N = 784 and 300 for Scatterbrain in every mode, with every form of
its cluster kernel that can run, and N = 3136 with the sort in tiles), small enough for the sanitizer's
slowdown.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests._support.kernel_checks import MCTF, _fixed, attention_attrs, attn_inputs, fusion_inputs, qk_inputs
from vitrt.plugins.cuda_launcher import tensor_dtype_name
from vitrt.plugins.lsh_attention import cuda as sb_cuda
from vitrt.plugins.lsh_attention.cuda import AttentionDims, cluster_kernels, scatterbrain_cuda
from vitrt.plugins.lsh_attention.spec import Mode
from vitrt.plugins.token_fusion import torch_op  # noqa: F401  (registers torch.ops.vitrt.*)
from vitrt.plugins.token_fusion.cuda import (
    attention_info_qk_cuda,
    fusion_scores_cuda,
    merge_add_norm_cuda,
    token_fusion_cuda,
    token_fusion_norm_cuda,
)
from vitrt.plugins.token_fusion.spec import TokenFusionAttrs


def main() -> int:
    for dtype in (torch.float16, torch.float32):
        for tile in (32, 64):
            for r in (16, 0):
                token_fusion_cuda(
                    *fusion_inputs(2, 197, 384, dtype, "cuda"), TokenFusionAttrs(r=r, **MCTF), tile=tile
                )
        if dtype == torch.float16:  # the scores and the matching in one launch (a 64-channel metric)
            x, metric, info, size = fusion_inputs(2, 197, 64, dtype, "cuda")
            token_fusion_cuda(x, metric, info, size, TokenFusionAttrs(r=16, **MCTF), fused_match=True)
            x, metric, info, size = fusion_inputs(2, 256, 128, dtype, "cuda")  # its largest N and Cm
            token_fusion_cuda(x, metric, info, size, TokenFusionAttrs(r=64, **MCTF), fused_match=True)
            fusion_scores_cuda(metric, info, size, TokenFusionAttrs(r=64, **MCTF), mma_tile=64)
            # 512 channels: the merge in 8-half vectors (384 take the 4-half kernel)
            token_fusion_cuda(*fusion_inputs(2, 197, 512, dtype, "cuda"), TokenFusionAttrs(r=16, **MCTF))
        weight, bias = (
            torch.ones(384, dtype=dtype, device="cuda"),
            torch.zeros(384, dtype=dtype, device="cuda"),
        )
        for c, by_token, residual in ((384, False, False), (384, True, True), (147, True, True)):
            inputs = fusion_inputs(2, 197, c, dtype, "cuda")
            params = (weight, bias) if c == 384 else (None, None)
            rest = torch.randn_like(inputs[0]) if residual else None
            log_size = torch.empty(2, 197 - 16, dtype=dtype, device="cuda")
            attrs = TokenFusionAttrs(r=16, **MCTF)
            x_f, _, dest, _ = token_fusion_norm_cuda(*inputs, attrs, *params, 1e-6, by_token, rest, log_size)
            merge_add_norm_cuda(inputs[0], dest, inputs[2], inputs[3], attrs.pooling, x_f, *params, 1e-6)
        for c, pitch in ((147, 0), (147, 152), (64, 0)):  # a warp a row, padded rows, 8 lanes a row
            rows = torch.randn(2, 65, c, device="cuda").to(dtype)
            torch.ops.vitrt.row_layer_norm(rows, None, None, 1e-5, pitch)
        image = torch.randn(2, 3, 30, 30, device="cuda").to(dtype)
        torch.ops.vitrt.unfold_layer_norm(image, 7, 4, 2, None, None, 1e-5, 152)  # a soft split and its norm
        tokens = torch.randn(2, 7 * 7, 64, device="cuda").to(dtype).reshape(2, 7, 7, 64).permute(0, 3, 1, 2)
        torch.ops.vitrt.unfold_layer_norm(tokens, 3, 2, 1, None, None, 1e-5)  # tokens read in place
        for c, affine in ((384, True), (147, False)):  # vector and scalar paths
            pair = torch.randn(2, 2, 197, c, device="cuda").to(dtype)
            params = (weight, bias) if affine else (None, None)
            torch.ops.vitrt.add_layer_norm(pair[0], pair[1], *params, 1e-5)
        q, k = qk_inputs(2, 6, 197, 64, dtype, "cuda", "qkv")
        ones = torch.ones(2, 197, dtype=dtype, device="cuda")
        attention_info_qk_cuda(q, k, ones, 0.125, torch.empty_like(ones))  # info and log size
        if dtype == torch.float16:  # keys split between warps: the (max, sum) exchange in shared memory
            attention_info_qk_cuda(q, k, ones, 0.125, key_splits=4)
        # every form of the cluster kernel that can run (float16 on tensor cores, c = 6: one key step,
        # c = 24: two; staged and tiled on CUDA cores), and c = 100 where only the tiled one can
        for mode, (n, c, m) in itertools.product(Mode, ((784, 6, 3), (300, 24, 12), (300, 100, 12))):
            attrs = attention_attrs(mode, c, 2, m, 576**-0.5)
            hv, proj = _fixed(2, m, 64, "cuda")
            q, k, v = attn_inputs(2, n, 64, dtype, "cuda")
            dims = AttentionDims.of(2, 1, n, 64, 64, attrs)
            for form in cluster_kernels(dims, tensor_dtype_name(q)) or (None,):
                scatterbrain_cuda(
                    q, k, v, hv if mode != Mode.PERFORMER else None, proj if mode != Mode.LSH else None,
                    attrs, cluster=form,
                )  # fmt: skip
        # 256 features at Dv = 128: the combine reads its 128 KiB low-rank state from global memory
        attrs = attention_attrs(Mode.SCATTERBRAIN, 24, 2, 128, 128**-0.5)
        hv, proj = _fixed(2, 128, 128, "cuda")
        scatterbrain_cuda(*attn_inputs(1, 300, 128, dtype, "cuda"), hv, proj, attrs)
        # the one-tile sort at each count of keys per thread: 1 (above), 2 (P = 1104), 4 (P = 3144) and 8
        attrs = attention_attrs(Mode.SCATTERBRAIN, 24, 2, 12, 147**-0.5)
        hv, proj = _fixed(2, 12, 64, "cuda")
        for n, items in ((1100, None), (3136, None), (3136, 8)):
            scatterbrain_cuda(*attn_inputs(1, n, 64, dtype, "cuda"), hv, proj, attrs, sort_items=items)
        # the sort in tiles (P > 8192 in use): here over 4 tiles of 1024 keys, its limits lowered
        sort_limits = sb_cuda._RADIX_MAX_P, sb_cuda._SORT_TILE_THREADS
        sb_cuda._RADIX_MAX_P, sb_cuda._SORT_TILE_THREADS = 0, 128
        try:
            attrs = attention_attrs(Mode.SCATTERBRAIN, 24, 2, 12, 147**-0.5)
            hv, proj = _fixed(2, 12, 64, "cuda")
            scatterbrain_cuda(*attn_inputs(1, 3136, 64, dtype, "cuda"), hv, proj, attrs)
        finally:
            sb_cuda._RADIX_MAX_P, sb_cuda._SORT_TILE_THREADS = sort_limits
    torch.cuda.synchronize()
    print("sanitize: all kernels ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
