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
    CLUSTER_MMA_CASES,
    CLUSTER_TILED_CASES,
    MATCHING_TIE_CASES,
    MCTF,
    SCORES_MATCH_CASES,
    TOME,
    check_attention_info,
    check_attention_info_qk,
    check_cluster_tensor_cores,
    check_cluster_tiled,
    check_fusion_norm,
    check_matching_ties,
    check_merge384,
    check_mma_tiles,
    check_random_attention,
    check_random_fusion,
    check_row_layer_norm,
    check_row_layer_norm_groups,
    check_row_layer_norm_padded,
    check_scatterbrain,
    check_scores_match,
    check_token_fusion,
    check_unfold_layer_norm,
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


@pytest.mark.parametrize(("b", "n", "cm", "protected"), [(64, 197, 384, 0), (8, 131, 64, 2), (3, 20, 136, 1)])
def test_tensor_core_score_tiles_agree(b: int, n: int, cm: int, protected: int) -> None:
    check_mma_tiles(b, n, cm, protected, "cuda")


@pytest.mark.parametrize(("b", "n", "c"), [(64, 197, 384), (8, 101, 264), (1, 197, 320)])
def test_merge_in_narrow_vectors(b: int, n: int, c: int) -> None:
    check_merge384(b, n, c, "cuda")


# The one-launch scores and matching at the emulated cases, and at DeiT-S's batches 64 and 300 (one wave of
# blocks, then more blocks than fit the GPU at once).
@pytest.mark.parametrize(
    ("b", "n", "cm", "r", "preset", "protected"),
    [*SCORES_MATCH_CASES, (64, 197, 64, 16, MCTF, 0), (300, 197, 64, 16, TOME, 0)],
)
def test_scores_and_matching_in_one_launch(
    b: int, n: int, cm: int, r: int, preset: dict[str, Any], protected: int
) -> None:
    check_scores_match(b, n, cm, r, preset, protected, "cuda")


# (name, batch, tokens, E, cluster, hashes, projection rows, scale): the two T2T token attentions of
# T2T-ViT-t-14 with Scatterbrain (3136 tokens, 147-dim patches; 784 tokens, 576-dim patches), and the first
# from 384 x 384 and 512 x 512 pixels (9216 and 16384 tokens: the sort in tiles of 8192 keys).
ATTN_CASES = [
    ("t2t_stage1_b1", 1, 3136, 64, 24, 2, 12, 147**-0.5),
    ("t2t_stage1_b4", 4, 3136, 64, 24, 2, 12, 147**-0.5),
    ("t2t_stage2_b8", 8, 784, 64, 6, 2, 3, 576**-0.5),
    ("t2t_384_stage1_b1", 1, 9216, 64, 24, 2, 12, 147**-0.5),
    ("t2t_512_stage1_b1", 1, 16384, 64, 24, 2, 12, 147**-0.5),
    ("head128_f256_b2", 2, 3136, 128, 24, 2, 128, 128**-0.5),  # combine reads the 128 KiB state from global
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


@pytest.mark.parametrize(
    ("b", "n", "e", "dv", "c", "r", "m", "mode"),
    [
        *CLUSTER_MMA_CASES,
        (4, 3136, 64, 64, 24, 2, 12, Mode.SCATTERBRAIN),
        (4, 3136, 64, 64, 24, 2, 12, Mode.LSH),
        (8, 784, 64, 64, 6, 2, 3, Mode.SCATTERBRAIN),
    ],
)
def test_cluster_on_tensor_cores(b: int, n: int, e: int, dv: int, c: int, r: int, m: int, mode: Mode) -> None:
    check_cluster_tensor_cores(b, n, e, dv, c, r, m, mode, "cuda")


@pytest.mark.parametrize(
    ("b", "n", "e", "dv", "c", "r", "m", "mode", "dtype"),
    [*CLUSTER_TILED_CASES, (4, 3136, 64, 64, 128, 2, 12, Mode.SCATTERBRAIN, torch.float32)],
)
def test_cluster_tiled(
    b: int, n: int, e: int, dv: int, c: int, r: int, m: int, mode: Mode, dtype: torch.dtype
) -> None:
    check_cluster_tiled(b, n, e, dv, c, r, m, mode, dtype, "cuda")


@pytest.mark.parametrize("with_size", [False, True], ids=["plain", "prop"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(("b", "h", "n"), [(64, 6, 197), (8, 6, 101), (1, 3, 577)])
def test_attention_info(b: int, h: int, n: int, dtype: torch.dtype, with_size: bool) -> None:
    check_attention_info(b, h, n, dtype, "cuda", with_size)


@pytest.mark.parametrize("with_size", [False, True], ids=["plain", "prop"])
@pytest.mark.parametrize(
    ("b", "h", "n", "e", "dtype", "layout"),
    [
        (64, 6, 197, 64, torch.float16, "qkv"),
        (8, 3, 101, 64, torch.float16, "contiguous"),
        (4, 12, 256, 128, torch.float16, "unaligned"),
        (2, 4, 65, 32, torch.float16, "qkv"),
        (8, 6, 197, 64, torch.float32, "qkv"),
        (1, 3, 577, 64, torch.float16, "qkv"),
    ],
    ids=["f16-b64", "f16-101", "f16-e128-unaligned", "f16-e32", "f32-gemm", "f16-577-gemm"],
)
def test_attention_info_from_q_and_k(
    b: int, h: int, n: int, e: int, dtype: torch.dtype, layout: str, with_size: bool
) -> None:
    check_attention_info_qk(b, h, n, e, dtype, "cuda", with_size, layout)


@pytest.mark.parametrize(
    ("b", "n", "e", "splits"),
    [(1, 197, 64, 2), (1, 197, 64, 4), (8, 197, 64, 8), (2, 256, 128, 4), (1, 9, 32, 8)],
)
def test_attention_info_key_splits(b: int, n: int, e: int, splits: int) -> None:
    """The q, k kernel with its keys split between warps (the small-batch option) gives the reference's."""
    check_attention_info_qk(b, 6, n, e, torch.float16, "cuda", True, "qkv", key_splits=splits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("b", "n", "c", "r", "affine", "offset"),
    [(64, 197, 384, 16, True, 30.0), (8, 101, 190, 16, True, 0.0), (4, 197, 768, 16, False, -4.0)],
    ids=["deit_s_b64", "odd_width", "deit_b_no_affine"],
)
def test_fusion_with_the_norm_after_it(
    b: int, n: int, c: int, r: int, affine: bool, offset: float, dtype: torch.dtype
) -> None:
    check_fusion_norm(b, n, c, r, dtype, "cuda", affine, offset)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("rows", "c", "affine", "residual"),
    [(3136 * 8, 147, True, False), (784, 576, True, False), (101, 147, False, False),
     (197 * 64, 384, True, True), (101, 147, False, True)],
    ids=["t2t_b8", "t2t_576", "no_affine", "add_deit_s_b64", "add_scalar_no_affine"],
)  # fmt: skip
def test_row_layer_norm(rows: int, c: int, affine: bool, residual: bool, dtype: torch.dtype) -> None:
    check_row_layer_norm(rows, c, dtype, "cuda", affine, residual)


@pytest.mark.parametrize(("dtype", "pitch"), [(torch.float32, 148), (torch.float16, 152)], ids=["f32", "f16"])
def test_row_layer_norm_pads_its_rows(dtype: torch.dtype, pitch: int) -> None:
    check_row_layer_norm_padded(3136 * 2, 147, pitch, dtype, "cuda")


@pytest.mark.parametrize(
    ("c", "dtype", "group"),
    [(64, torch.float16, 8), (128, torch.float16, 16), (64, torch.float32, 16)],
    ids=["t2t_64_f16", "128_f16", "t2t_64_f32"],
)
def test_row_layer_norm_packs_narrow_rows(c: int, dtype: torch.dtype, group: int) -> None:
    check_row_layer_norm_groups(3136 * 2 + 5, c, dtype, "cuda", group)


@pytest.mark.parametrize(
    ("c", "side", "split", "tokens", "dtype"),
    [(3, 224, (7, 4, 2), False, torch.float16), (3, 224, (7, 4, 2), False, torch.float32),
     (64, 56, (3, 2, 1), True, torch.float16), (64, 28, (3, 2, 1), True, torch.float32)],
    ids=["t2t_split0_f16", "t2t_split0_f32", "t2t_split1_f16", "t2t_split2_f32"],
)  # fmt: skip
def test_unfold_layer_norm(
    c: int, side: int, split: tuple[int, int, int], tokens: bool, dtype: torch.dtype
) -> None:
    check_unfold_layer_norm(4, c, side, split, dtype, "cuda", tokens)


@pytest.mark.parametrize("seed", range(64))
def test_random_fusion_configurations(seed: int) -> None:
    check_random_fusion(seed, "cuda")


@pytest.mark.parametrize("seed", range(64))
def test_random_attention_configurations(seed: int) -> None:
    check_random_attention(seed, "cuda")


# ---- the ops as models use them: torch dispatch, CUDA graphs --------------------------------------------


def _small_deit(fusion: object) -> torch.nn.Module:
    from vitrt.models.deit import VisionTransformer
    from vitrt.plugins.token_fusion.integration import apply_fusion

    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=64, patch_size=8, num_classes=10, embed_dim=64, depth=4, num_heads=2, qkv_bias=True
    )
    with torch.no_grad():  # larger weights than the init: attention (and the decisions) not uniform
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.2)
    apply_fusion(model, fusion)
    return model.eval()


@pytest.fixture
def _no_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    """float32 convolutions and matmuls in float32 (cuDNN allows TF32 by default: 1e-3 relative errors
    upstream of the fusion decisions)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _reference_path(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` computing the same function the reference way on any device: the "portable"
    lowering (the reference ops, explicit attention), as exports do."""
    import copy

    from vitrt.plugins.lowering import set_lowering

    return set_lowering(copy.deepcopy(model), "portable")


@pytest.mark.parametrize(
    "fusion", ["mctf", "tome", {"r": 8, "one_step_ahead": 2}], ids=["mctf", "tome", "osa2"]
)
def test_fused_model_on_cuda_equals_the_reference_path(fusion: object, _no_tf32: None) -> None:
    """create_model(..., fusion=...).cuda() takes the kernel path (torch.ops.vitrt.token_fusion dispatches
    to the kernels on CUDA tensors) and gives the reference path's logits on the same GPU (float32;
    1e-4: the kernels sum in their own order and the one-step-ahead attention is reassociated, see
    FusionBlock)."""
    from vitrt.plugins.cuda_launcher import load_module

    model = _small_deit(fusion).cuda()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)).cuda()
    launches = load_module("token_fusion").launches
    with torch.no_grad():
        expected = _reference_path(model)(images)
        before = launches["vitrt_tf_match"]
        got = model(images)
    assert launches["vitrt_tf_match"] > before, "the model did not launch the token-fusion kernels"
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fusion", ["mctf", "tome"])
def test_float16_model_folds_the_bias_and_fuses_scores_and_matching(
    fusion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float16 fused model at batch 8 on CUDA runs proportional attention with the bias in the keys
    (SDPA on cuDNN without a mask) and, with the batch threshold lowered, each fusion's scores and
    matching as one launch, and gives the logits of the path with the bias as a mask and the split
    launches within float16's 1e-2 relative on all but at most two of 8 images (a decision may flip on the
    logits' rounding: random-weight models are far more sensitive than trained ones), with a median
    within 3e-3."""
    from unittest import mock

    from vitrt.plugins.cuda_launcher import load_module
    from vitrt.plugins.token_fusion import cuda as tf_cuda
    from vitrt.plugins.token_fusion.module import FusionBlock

    monkeypatch.setattr(tf_cuda, "SCORES_MATCH_MIN_BATCH_PER_SM", 0.0)
    model = _small_deit(fusion).cuda().half()
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(6)).cuda().half()
    launches = load_module("token_fusion").launches
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with (
        torch.no_grad(),
        mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", wraps=sdpa) as spy,
    ):
        before = launches["vitrt_tf_scores_match_f16"]
        got = model(images)
        assert launches["vitrt_tf_scores_match_f16"] > before, "no one-launch scores and matching"
        assert spy.call_count > 0 and all(c.kwargs.get("attn_mask") is None for c in spy.call_args_list)
        monkeypatch.setattr(FusionBlock, "fold_bias_min_batch", 10**9)
        real = tf_cuda.enqueue
        monkeypatch.setattr(tf_cuda, "enqueue", lambda *a, **k: real(*a, **{**k, "fused_match": False}))
        spy.reset_mock()
        masked = model(images)
        assert any(c.kwargs.get("attn_mask") is not None for c in spy.call_args_list)
    error = (got.float() - masked.float()).abs().amax(dim=1) / masked.float().abs().amax(dim=1)
    assert int((error > 1e-2).sum()) <= 2 and float(error.median()) <= 3e-3, error


def test_cuda_graph_replay_equals_eager() -> None:
    """The op's launches are capturable (no host synchronisation, workspace from torch's allocator): a
    replayed graph gives the eager results bit for bit, also for a whole fused model in float16."""
    from vitrt.plugins.token_fusion.cuda import token_fusion_cuda

    attrs = TokenFusionAttrs(r=16, **MCTF)
    inputs = fusion_inputs(8, 197, 384, torch.float16, "cuda")
    eager, captured = _eager_and_replayed(lambda: token_fusion_cuda(*inputs, attrs))
    assert all(torch.equal(a, b) for a, b in zip(eager, captured, strict=True))

    model = _small_deit("mctf").cuda().half()
    x = torch.randn(8, 3, 64, 64, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        eager_out, out = _eager_and_replayed(lambda: model(x))
    assert torch.equal(out, eager_out)


def _eager_and_replayed(fn: Any) -> tuple[Any, Any]:
    """(``fn()`` run eagerly, its outputs from a replay of ``fn`` captured as a CUDA graph: ``capture_graph``,
    which warms up on a side stream first)."""
    from vitrt.deploy.cuda_timing import capture_graph

    eager = fn()
    graph, captured = capture_graph(fn)
    graph.replay()
    torch.cuda.synchronize()
    return eager, captured


def test_t2t_token_module_graph_replay_equals_eager() -> None:
    """T2T-ViT-t-14's token module on the kernels (soft splits fused with their norms, padded 147-channel rows
    and product, narrow-row norms) captures: a replayed graph gives the eager output bit for bit, and that
    output is the reference path's (exports' ops) within float16 rounding."""
    from vitrt import create_model
    from vitrt.plugins.lowering import set_lowering

    torch.manual_seed(0)
    model = create_model("t2t_vit_t_14", img_size=64, num_classes=10).eval().cuda().half()
    x = torch.randn(4, 3, 64, 64, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        eager_out, out = _eager_and_replayed(lambda: model(x))
        assert torch.equal(out, eager_out)
        set_lowering(model, "portable")
        reference = model(x)
    error = (eager_out.float() - reference.float()).abs().max() / reference.float().abs().max()
    assert error <= 2e-2, error


def test_scatterbrain_model_on_cuda_equals_the_reference_path(_no_tf32: None) -> None:
    """t2t_vit_t_14 + scatterbrain on CUDA runs the attention kernels (torch dispatch) and gives the
    reference path's logits on the same GPU (float32, 96 pixels: 576 and 144 tokens in the T2T
    attentions; 1e-3: a key whose hash is within rounding of a cluster boundary changes two clusters)."""
    from vitrt import create_model
    from vitrt.plugins.cuda_launcher import load_module

    torch.manual_seed(0)
    model = create_model("t2t_vit_t_14", img_size=96, num_classes=10, attention="scatterbrain")
    model = model.eval().cuda()
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(4)).cuda()
    launches = load_module("scatterbrain").launches
    with torch.no_grad():
        expected = _reference_path(model)(images)
        before = launches["vitrt_sb_combine_f32"]
        got = model(images)
    assert launches["vitrt_sb_combine_f32"] == before + 2, "the T2T attentions did not launch the kernels"
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("bidirectional", [True, False], ids=["mctf", "tome"])
@pytest.mark.parametrize(("n", "r"), MATCHING_TIE_CASES)
def test_matching_breaks_exact_ties_by_index(n: int, r: int, bidirectional: bool) -> None:
    check_matching_ties(n, r, bidirectional, "cuda")
