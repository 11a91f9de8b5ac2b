"""The CUDA kernels against the PyTorch references, on the GPU, at the models' real shapes.

Skipped (with the reason printed) where torch has no CUDA device or cuda-python is missing. Run on a GPU
machine with ``bash tests/gpu/run_all.sh`` (builds the fatbins first; without nvcc the launcher falls
back to NVRTC). The checks themselves (and how exactness is judged) are in
``tests/_support/kernel_checks.py``; tests/plugins/test_kernels_emulated.py runs them on the CPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests._support.kernel_checks import (
    MCTF,
    TOME,
    check_random_attention,
    check_random_fusion,
    check_scatterbrain,
    check_token_fusion,
    fusion_inputs,
    gpu_skip_reason,
    prepare_gpu_kernels,
)
from vitrt.plugins.lsh_attention.spec import Mode
from vitrt.plugins.token_fusion.spec import TokenFusionAttrs, removed_tokens

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True, scope="module")
def _gpu() -> None:
    reason = gpu_skip_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    prepare_gpu_kernels()


# (name, batch, tokens, channels, r, attribute preset): DeiT-S and T2T-ViT-14 blocks (N = 197, C = 384;
# T2T-ViT-14's embedding is 384 wide too), at batch 1, 8 and 64, the largest r, and a later block.
FUSION_CASES = [
    ("deit_s_b1", 1, 197, 384, 16, MCTF),
    ("deit_s_b64", 64, 197, 384, 16, MCTF),
    ("t2t_vit_14_b8", 8, 197, 384, 16, MCTF),
    ("t2t_vit_14_tome_b8", 8, 197, 384, 16, TOME),
    ("deit_s_rmax_b8", 8, 197, 384, removed_tokens(197, 0.5), MCTF),
    ("deit_s_late_block_b8", 8, 37, 384, 16, MCTF),
    ("deit_s_identity_b2", 2, 197, 384, 0, MCTF),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("name", "b", "n", "c", "r", "preset"), FUSION_CASES, ids=[c[0] for c in FUSION_CASES]
)
def test_token_fusion(
    name: str, b: int, n: int, c: int, r: int, preset: dict[str, Any], dtype: torch.dtype
) -> None:
    check_token_fusion(b, n, c, r, preset, dtype, "cuda")


def test_token_fusion_is_deterministic() -> None:
    from vitrt.plugins.token_fusion.cuda import token_fusion_cuda

    attrs = TokenFusionAttrs(r=16, **MCTF)
    inputs = fusion_inputs(64, 197, 384, torch.float16, "cuda")
    first = token_fusion_cuda(*inputs, attrs)
    for _ in range(3):
        again = token_fusion_cuda(*inputs, attrs)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


# (name, batch, tokens, E, cluster, hashes, projection rows, scale): the two T2T token attentions of
# T2T-ViT-t-14 with Scatterbrain (3136 tokens, 147-dim patches; 784 tokens, 576-dim patches).
ATTN_CASES = [
    ("t2t_stage1_b1", 1, 3136, 64, 24, 2, 12, 147**-0.5),
    ("t2t_stage1_b4", 4, 3136, 64, 24, 2, 12, 147**-0.5),
    ("t2t_stage2_b8", 8, 784, 64, 6, 2, 3, 576**-0.5),
]


@pytest.mark.parametrize("mode", list(Mode), ids=[m.name.lower() for m in Mode])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("name", "b", "n", "e", "c", "r", "m", "scale"), ATTN_CASES, ids=[c[0] for c in ATTN_CASES]
)
def test_scatterbrain(
    name: str, b: int, n: int, e: int, c: int, r: int, m: int, scale: float, dtype: torch.dtype, mode: Mode
) -> None:
    check_scatterbrain(b, n, e, c, r, m, scale, dtype, mode, "cuda")


@pytest.mark.parametrize("seed", range(64))
def test_random_fusion_configurations(seed: int) -> None:
    check_random_fusion(seed, "cuda")


@pytest.mark.parametrize("seed", range(64))
def test_random_attention_configurations(seed: int) -> None:
    check_random_attention(seed, "cuda")
