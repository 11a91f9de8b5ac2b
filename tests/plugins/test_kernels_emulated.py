"""The CUDA kernels on the CPU emulator (plugins/cuda_emulation.h): the GPU tests' checks at the models'
real token counts and widths (smaller batches) and on randomised configurations, run in CI where no GPU
exists, plus tests that the emulator's own checks fire. Skipped where no host C++ compiler is found.

What this does and does not show: the kernels' logic, indexing, barriers and the host code that sizes
and orders the launches, against the PyTorch references. Not the GPU's rounding of expf / logf / powf
(the host's is used), races, or speed: those need tests/gpu on a GPU.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
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
    attention_attrs,
    attn_inputs,
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
    qk_inputs,
)
from vitrt.plugins.cuda_build import KernelSource
from vitrt.plugins.cuda_emulation import (
    KernelEmulationError,
    emulated_kernels,
    emulated_module,
    host_compiler,
    open_emulated,
)
from vitrt.plugins.cuda_launcher import i32, launch, load_module, ptr
from vitrt.plugins.lsh_attention.spec import Mode
from vitrt.plugins.token_fusion.spec import removed_tokens


@pytest.fixture(autouse=True, scope="module")
def _compiler() -> None:
    try:
        host_compiler()
    except KernelEmulationError as exc:
        print(f"SKIP: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def emulated() -> Any:
    with emulated_kernels():
        yield


# DeiT-S / T2T-ViT-14 blocks (N = 197, C = 384) at batch 2: MCTF, ToMe, the largest r, a late block
# (N = 37), the identity, and a channel count that is not a multiple of 4 (the scalar merge path).
# Score kernels: the launcher picks tensor cores for these float16 metrics and the 64-tile CUDA-core
# kernel for float32 (no GPU to fill on the emulator); the 32-tile kernel is named.
FUSION_CASES = [
    ("deit_s_mctf_b2", 2, 197, 384, 16, MCTF, None),
    ("deit_s_mctf_b2_tile32", 2, 197, 384, 16, MCTF, 32),
    ("t2t_vit_14_tome_b2", 2, 197, 384, 16, TOME, None),
    ("deit_s_rmax_b2", 2, 197, 384, removed_tokens(197, 0.5), MCTF, None),
    ("late_block_b2", 2, 37, 384, 16, MCTF, 32),
    ("odd_width_b2", 2, 64, 190, 8, MCTF, None),
    ("identity_b1", 1, 197, 384, 0, MCTF, None),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("name", "b", "n", "c", "r", "preset", "tile"), FUSION_CASES, ids=[c[0] for c in FUSION_CASES]
)
def test_token_fusion_emulated(
    name: str,
    b: int,
    n: int,
    c: int,
    r: int,
    preset: dict[str, Any],
    tile: int | None,
    dtype: torch.dtype,
    emulated: None,
) -> None:
    check_token_fusion(b, n, c, r, preset, dtype, "cpu", tile)


@pytest.mark.parametrize(("b", "n", "cm", "r", "preset", "protected"), SCORES_MATCH_CASES)
def test_scores_and_matching_in_one_launch_emulated(
    b: int, n: int, cm: int, r: int, preset: dict[str, Any], protected: int, emulated: None
) -> None:
    check_scores_match(b, n, cm, r, preset, protected, "cpu")


@pytest.mark.parametrize(("b", "n", "cm", "protected"), [(2, 197, 384, 0), (1, 131, 64, 2), (1, 20, 136, 1)])
def test_tensor_core_score_tiles_agree_emulated(
    b: int, n: int, cm: int, protected: int, emulated: None
) -> None:
    check_mma_tiles(b, n, cm, protected, "cpu")


def test_one_launch_from_a_fifth_of_the_sms(emulated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU of 132 SMs (an H100) the launcher takes the one-launch scores and matching from a batch of
    27 (SCORES_MATCH_MIN_BATCH_PER_SM = 0.2) and the split launches below it."""
    from vitrt.plugins.token_fusion import cuda as tf_cuda
    from vitrt.plugins.token_fusion.spec import TokenFusionAttrs

    monkeypatch.setattr(tf_cuda, "_multiprocessors", lambda: 132)
    module = emulated_module("token_fusion")
    for batch, kernel in ((26, "vitrt_tf_match"), (27, "vitrt_tf_scores_match_f16")):
        x, metric = torch.randn(batch, 21, 8).half(), torch.randn(batch, 21, 16).half()
        info, size = torch.full((batch, 21), 0.05).half(), torch.ones(batch, 21).half()
        before = module.launches[kernel]
        tf_cuda.token_fusion_cuda(x, metric, info, size, TokenFusionAttrs(r=4, **MCTF))
        assert module.launches[kernel] == before + 1, batch


def test_launcher_picks_the_one_launch_scores_and_matching(emulated: None) -> None:
    """A float16 metric of at most 128 channels takes the one-launch kernel by default (the emulator has no
    SMs to fill, so any batch); a wider or float32 metric the split launches; forcing the one launch where
    it cannot run names the reason."""
    from vitrt.plugins.token_fusion.cuda import token_fusion_cuda
    from vitrt.plugins.token_fusion.spec import TokenFusionAttrs

    module = emulated_module("token_fusion")
    attrs = TokenFusionAttrs(r=4, **MCTF)
    for cm, dtype, kernel in ((64, torch.float16, "vitrt_tf_scores_match_f16"),
                              (136, torch.float16, "vitrt_tf_scores_mma64_f16"),
                              (64, torch.float32, "vitrt_tf_scores64_f32")):  # fmt: skip
        x, metric = torch.randn(2, 21, 8).to(dtype), torch.randn(2, 21, cm).to(dtype)
        info, size = torch.full((2, 21), 0.05).to(dtype), torch.ones(2, 21).to(dtype)
        before = dict(module.launches)
        token_fusion_cuda(x, metric, info, size, attrs)
        launched = {k for k, v in module.launches.items() if v != before.get(k, 0)}
        one_launch = kernel == "vitrt_tf_scores_match_f16"
        assert kernel in launched and ("vitrt_tf_match" in launched) != one_launch, launched
        if not one_launch:
            reason = "136 channels, more than 128" if cm > 128 else "not float16"
            with pytest.raises(ValueError, match=reason):
                token_fusion_cuda(x, metric, info, size, attrs, fused_match=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("b", "n", "c", "r", "affine", "offset"),
    [(2, 197, 384, 16, True, 30.0), (1, 64, 190, 8, True, 0.0), (1, 37, 768, 8, False, -4.0)],
    ids=["deit_s", "odd_width", "two_sweeps_no_affine"],
)
def test_fusion_with_the_norm_after_it_emulated(
    b: int, n: int, c: int, r: int, affine: bool, offset: float, dtype: torch.dtype, emulated: None
) -> None:
    check_fusion_norm(b, n, c, r, dtype, "cpu", affine, offset)


def test_attention_info_qk_shared_memory_fits_every_target() -> None:
    """The q, k attention_info kernel's dynamic shared memory at its largest N, for every head dim it
    takes, within the 99 KiB a block gets on sm_120 (the smallest of the targets): 8-warp blocks would not
    fit at E = 128, which keeps 4."""
    from vitrt.plugins.token_fusion.cuda import (
        INFO_QK_HEAD_DIMS,
        INFO_QK_KEY_SPLITS,
        INFO_QK_MAX_TOKENS,
        info_qk_shared_bytes,
        info_qk_warps,
    )

    for e in INFO_QK_HEAD_DIMS:
        for splits in INFO_QK_KEY_SPLITS:
            if splits <= info_qk_warps(e):
                assert info_qk_shared_bytes(INFO_QK_MAX_TOKENS, e, splits) <= 99 * 1024, (e, splits)
    assert info_qk_warps(128) == 4 and info_qk_warps(64) == 8


@pytest.mark.parametrize(
    ("b", "h", "n", "e", "splits"),
    [(2, 3, 197, 64, 2), (1, 2, 197, 64, 4), (1, 2, 61, 64, 8), (1, 2, 256, 128, 4), (2, 1, 9, 32, 8)],
)
def test_attention_info_key_splits_emulated(
    b: int, h: int, n: int, e: int, splits: int, emulated: None
) -> None:
    """Key splits (a row group's keys swept by several warps, their row maxima and sums merged through shared
    memory) give the reference's info, and within float32 rounding of one split's: the (max, sum) merges
    run in another order, and the column sums are grouped into more, smaller chunks. N = 9 with 8 splits
    leaves most warps an empty key range."""
    from vitrt.plugins.token_fusion import reference
    from vitrt.plugins.token_fusion.cuda import attention_info_qk_cuda

    q, k = qk_inputs(b, h, n, e, torch.float16, "cpu", "qkv")
    size = torch.randint(1, 5, (b, n)).half()
    one = attention_info_qk_cuda(q, k, size, e**-0.5, key_splits=1)
    split = attention_info_qk_cuda(q, k, size, e**-0.5, key_splits=splits)
    want = reference.attention_info(q.float() @ k.float().transpose(-2, -1), size, e**-0.5)
    torch.testing.assert_close(split.float(), want, rtol=0, atol=1e-2 * float(want.abs().max()))
    torch.testing.assert_close(split, one, rtol=2e-3, atol=1e-6)  # float16 info: an ulp or two


def test_the_launcher_splits_keys_where_the_blocks_leave_sms_idle() -> None:
    """info_qk_key_splits: the most splits whose blocks (batch x heads x chunks) stay within two per SM, as
    timed on an H200 (132 SMs) for a fused DeiT-S block; never more than the block's warps (4 at E = 128);
    1 on the emulator (0 SMs), whose bit-exact checks stay on the unsplit kernel."""
    from vitrt.plugins.token_fusion.cuda import info_qk_chunks, info_qk_key_splits

    assert [info_qk_chunks(197, 64, s) for s in (1, 2, 4, 8)] == [2, 4, 7, 13]
    assert [info_qk_key_splits(b, 6, 197, 64, 132) for b in (1, 8, 64)] == [8, 2, 1]  # 78, 192, 768 blocks
    assert [info_qk_key_splits(b, 6, 197, 64, 16) for b in (1, 2)] == [2, 1]  # a 16-SM Jetson Orin
    assert info_qk_key_splits(1, 12, 197, 128, 132) == 4  # 8 splits would exceed E = 128's 4 warps
    assert info_qk_key_splits(1, 6, 197, 64, 0) == 1


def test_attention_info_key_splits_are_checked(emulated: None) -> None:
    from vitrt.plugins.token_fusion.cuda import attention_info_qk_cuda

    q, k = qk_inputs(1, 1, 33, 128, torch.float16, "cpu", "qkv")
    with pytest.raises(ValueError, match="key splits must be one of"):
        attention_info_qk_cuda(q, k, None, 0.1, key_splits=8)  # E = 128: 4 warps
    with pytest.raises(ValueError, match="key splits must be one of"):
        attention_info_qk_cuda(q, k, None, 0.1, key_splits=3)


@pytest.mark.parametrize(("b", "n", "c"), [(2, 197, 384), (1, 37, 264)])
def test_merge_in_narrow_vectors_emulated(b: int, n: int, c: int, emulated: None) -> None:
    check_merge384(b, n, c, "cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_merge_of_many_tokens_emulated(dtype: torch.dtype, emulated: None) -> None:
    """The merge kernel at N = 1100: 35 chunks of 32 tokens, so each slot's member bitmasks span two
    groups of 32 chunks. Slot 0 has members in both groups (tokens 0 and 1090), slot 7 thirty more, the
    other slots one or two: merge_tokens_cuda equals the reference's merge within the dtype's rounding
    (kernel_checks.TOL) and merge_add_norm_cuda's sum is torch's add of it to the base, bit for bit."""
    from tests._support.kernel_checks import _close
    from vitrt.plugins.token_fusion import reference as tf_ref
    from vitrt.plugins.token_fusion.cuda import merge_add_norm_cuda, merge_tokens_cuda
    from vitrt.plugins.token_fusion.spec import Pooling

    b, n, c, n_out = 2, 1100, 64, 1000
    g = torch.Generator().manual_seed(7)
    extra = torch.randint(0, n_out, (b, n - n_out), generator=g)
    extra[:, -10] = 0  # token 1090
    extra[:, :30] = 7
    dest = torch.cat([torch.arange(n_out).expand(b, n_out), extra], dim=1)
    x = torch.randn(b, n, c, generator=g).to(dtype)
    info = (torch.rand(b, n, generator=g) + 0.1).to(dtype)
    size = torch.randint(1, 5, (b, n), generator=g).to(dtype)
    pooling = int(Pooling.ATTN_SIZE)
    merged = merge_tokens_cuda(x, dest, info, size, pooling, n_out)
    weight = tf_ref.pooling_weights(info, size, Pooling.ATTN_SIZE)
    _close(merged, tf_ref.merge_tokens(x, dest, weight, n_out), dtype, "merge of 1100 tokens")
    base = torch.randn(b, n_out, c, generator=g).to(dtype)
    total, _ = merge_add_norm_cuda(x, dest, info, size, pooling, base, None, None, 1e-5)
    assert torch.equal(total, base + merged)


@pytest.mark.parametrize("bidirectional", [True, False], ids=["mctf", "tome"])
@pytest.mark.parametrize(("n", "r"), MATCHING_TIE_CASES)
def test_matching_ties_emulated(n: int, r: int, bidirectional: bool, emulated: None) -> None:
    check_matching_ties(n, r, bidirectional, "cpu")


@pytest.mark.parametrize("bidirectional", [True, False], ids=["mctf", "tome"])
def test_matching_phase_clock_emulated(bidirectional: bool, emulated: None) -> None:
    """The matching kernel's diagnostic clock marks: written once per batch element in phase order
    (non-decreasing), the two phase-2 marks only for bidirectional matching; dest is unchanged by them."""
    from vitrt.plugins.token_fusion import reference
    from vitrt.plugins.token_fusion.cuda import MATCH_PHASES, bipartite_matching_cuda

    scores = torch.randn(2, 99, 98, generator=torch.Generator().manual_seed(8))
    clock = torch.full((2, len(MATCH_PHASES)), -1, dtype=torch.int64)
    dest = bipartite_matching_cuda(scores, 16, bidirectional, phase_clock=clock)
    assert torch.equal(dest, bipartite_matching_cuda(scores, 16, bidirectional))
    assert torch.equal(dest, reference.bipartite_matching(scores, 16, bidirectional))
    phase2 = [MATCH_PHASES.index("best A slot of each B token"), MATCH_PHASES.index("B ranks")]
    written = [i for i in range(len(MATCH_PHASES)) if bidirectional or i not in phase2]
    assert (clock[:, written] > 0).all() and (clock[:, written].diff(dim=1) >= 0).all(), clock
    if not bidirectional:
        assert (clock[:, phase2] == -1).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("rows", "c", "affine", "residual"),
    [(300, 147, True, False), (64, 384, True, False), (37, 147, False, False), (64, 384, True, True),
     (37, 147, False, True)],
    ids=["t2t", "deit", "no_affine", "add_deit", "add_scalar_no_affine"],
)  # fmt: skip
def test_row_layer_norm_emulated(
    rows: int, c: int, affine: bool, residual: bool, dtype: torch.dtype, emulated: None
) -> None:
    module = emulated_module("token_fusion")
    kernel = f"vitrt_tf_layer_norm_{'f16' if dtype == torch.float16 else 'f32'}"
    before = module.launches.get(kernel, 0)
    check_row_layer_norm(rows, c, dtype, "cpu", affine, residual)
    assert module.launches[kernel] == before + 1  # the kernel ran, not torch's add and layer_norm


@pytest.mark.parametrize(("dtype", "pitch"), [(torch.float32, 148), (torch.float16, 152)], ids=["f32", "f16"])
def test_row_layer_norm_pads_its_rows_emulated(dtype: torch.dtype, pitch: int, emulated: None) -> None:
    module = emulated_module("token_fusion")
    kernel = f"vitrt_tf_layer_norm_{'f16' if dtype == torch.float16 else 'f32'}"
    before = module.launches.get(kernel, 0)
    check_row_layer_norm_padded(37, 147, pitch, dtype, "cpu")
    assert module.launches[kernel] == before + 3  # the dirty call, the padded one, the plain one


@pytest.mark.parametrize(
    ("c", "dtype", "group"),
    [(64, torch.float16, 8), (128, torch.float16, 16), (64, torch.float32, 16), (24, torch.float32, 8)],
    ids=["t2t_64_f16", "128_f16", "t2t_64_f32", "24_f32"],
)
def test_row_layer_norm_packs_narrow_rows_emulated(
    c: int, dtype: torch.dtype, group: int, emulated: None
) -> None:
    check_row_layer_norm_groups(37, c, dtype, "cpu", group)


@pytest.mark.parametrize(
    ("c", "side", "split", "tokens", "dtype"),
    [(3, 32, (7, 4, 2), False, torch.float16), (3, 29, (7, 4, 2), False, torch.float32),
     (64, 8, (3, 2, 1), True, torch.float16), (5, 9, (3, 2, 1), True, torch.float32),
     (80, 6, (3, 2, 1), True, torch.float32)],
    ids=["image_f16", "image_odd_f32", "tokens_f16", "tokens_odd_f32", "wider_than_the_kernel"],
)  # fmt: skip
def test_unfold_layer_norm_emulated(
    c: int, side: int, split: tuple[int, int, int], tokens: bool, dtype: torch.dtype, emulated: None
) -> None:
    check_unfold_layer_norm(2, c, side, split, dtype, "cpu", tokens)


# The two T2T token attentions of T2T-ViT-t-14 with Scatterbrain: N = 3136 (c = 24, 2 hashes, m = 12)
# and N = 784 (c = 6, 2 hashes, m = 3); both N leave a padded last cluster.
ATTN_CASES = [
    ("t2t_stage1_b1", 1, 3136, 64, 24, 2, 12, 147**-0.5),
    ("t2t_stage2_b2", 2, 784, 64, 6, 2, 3, 576**-0.5),
]


@pytest.mark.parametrize("mode", list(Mode), ids=[m.name.lower() for m in Mode])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("name", "b", "n", "e", "c", "r", "m", "scale"), ATTN_CASES, ids=[c[0] for c in ATTN_CASES]
)
def test_scatterbrain_emulated(
    name: str,
    b: int,
    n: int,
    e: int,
    c: int,
    r: int,
    m: int,
    scale: float,
    dtype: torch.dtype,
    mode: Mode,
    emulated: None,
) -> None:
    check_scatterbrain(b, n, e, c, r, m, scale, dtype, mode, "cpu")


@pytest.mark.parametrize("mode", [Mode.SCATTERBRAIN, Mode.LSH], ids=["scatterbrain", "lsh"])
def test_scatterbrain_large_clusters_emulated(mode: Mode, emulated: None) -> None:
    """float16 clusters of more than 64 tokens run on the staged CUDA-core cluster kernel where it fits (no
    tensor-core entry)."""
    from vitrt.plugins.cuda_launcher import load_module

    module, kernel = load_module("scatterbrain"), "vitrt_sb_cluster_f16"
    before = module.launches.get(kernel, 0)
    check_scatterbrain(1, 200, 16, 72, 2, 3, 0.2, torch.float16, mode, "cpu")  # 82 KB of shared memory
    assert module.launches.get(kernel, 0) == before + 2  # check_scatterbrain runs the op twice


@pytest.mark.parametrize(("b", "n", "e", "dv", "c", "r", "m", "mode"), CLUSTER_MMA_CASES)
def test_cluster_on_tensor_cores_emulated(
    b: int, n: int, e: int, dv: int, c: int, r: int, m: int, mode: Mode, emulated: None
) -> None:
    check_cluster_tensor_cores(b, n, e, dv, c, r, m, mode, "cpu")


def test_cluster_on_tensor_cores_where_it_can(emulated: None) -> None:
    """Tensor cores for float16 with c <= 64, F < 2^15 and rows that fit shared memory only: asking for them
    elsewhere names the limits."""
    from vitrt.plugins.lsh_attention.cuda import MMA_MAX_CLUSTER, AttentionDims, cluster_on_tensor_cores
    from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda as run
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection

    def dims(c: int, m: int = 12) -> AttentionDims:
        return AttentionDims.of(1, 1, 100, 64, 64, attention_attrs(Mode.SCATTERBRAIN, c, 2, m, 0.125))

    assert cluster_on_tensor_cores(dims(MMA_MAX_CLUSTER), "float16")
    assert not cluster_on_tensor_cores(dims(MMA_MAX_CLUSTER + 1), "float16")
    assert not cluster_on_tensor_cores(dims(24), "float32")
    assert not cluster_on_tensor_cores(dims(24, m=2**14), "float16")  # F = 2^15: weights past float16
    wide = AttentionDims.of(1, 1, 100, 1024, 1024, attention_attrs(Mode.SCATTERBRAIN, 1, 2, 3, 0.125))
    assert not cluster_on_tensor_cores(wide, "float16")  # 16 rows of 1024 channels: past 96 KiB
    performer = AttentionDims.of(1, 1, 100, 64, 64, attention_attrs(Mode.PERFORMER, 24, 2, 3, 0.125))
    assert not cluster_on_tensor_cores(performer, "float16")  # no clusters at all
    for dtype, c in ((torch.float32, 24), (torch.float16, 65)):
        attrs = attention_attrs(Mode.SCATTERBRAIN, c, 2, 3, 0.125)
        q, k, v = attn_inputs(1, 70, 16, dtype, "cpu")
        g = torch.Generator().manual_seed(c)
        hv, proj = draw_hash_vectors(2, 16, g), draw_projection(3, 16, g)
        got = f"got {str(dtype).removeprefix('torch.')}, mode SCATTERBRAIN, cluster size {c}"
        with pytest.raises(ValueError, match=f"clusters of at most 64 tokens.*{got}.*'staged', 'tiled'"):
            run(q, k, v, hv, proj, attrs, cluster="mma")


@pytest.mark.parametrize(("b", "n", "e", "dv", "c", "r", "m", "mode", "dtype"), CLUSTER_TILED_CASES)
def test_cluster_tiled_emulated(
    b: int, n: int, e: int, dv: int, c: int, r: int, m: int, mode: Mode, dtype: torch.dtype, emulated: None
) -> None:
    check_cluster_tiled(b, n, e, dv, c, r, m, mode, dtype, "cpu")


def test_cluster_kernels_by_size(emulated: None) -> None:
    """Which forms of the cluster kernel can run, by cluster size and row width: the staged kernel up to the
    c where one cluster's c x c scores and rows pass 96 KiB, the tiled one at any c; asking for a form that
    cannot run, or for one that does not exist, names the limit and the forms that can."""
    from vitrt.plugins.lsh_attention.cuda import AttentionDims, cluster_kernels, shared_bytes
    from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda as run
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection

    def dims(c: int, e: int = 64, mode: Mode = Mode.SCATTERBRAIN) -> AttentionDims:
        return AttentionDims.of(2, 3, 3136, e, e, attention_attrs(mode, c, 2, 12, 0.125))

    assert cluster_kernels(dims(24), "float16") == ("mma", "staged", "tiled")
    assert cluster_kernels(dims(57), "float32") == ("staged", "tiled")
    assert cluster_kernels(dims(58), "float32") == ("tiled",)  # staged: 98,880 bytes
    assert cluster_kernels(dims(64), "float16") == ("mma", "tiled")
    assert cluster_kernels(dims(73, mode=Mode.LSH), "float32") == ("staged", "tiled")
    assert cluster_kernels(dims(74, mode=Mode.LSH), "float32") == ("tiled",)
    assert cluster_kernels(dims(24, mode=Mode.PERFORMER), "float32") == ()
    for c in (58, 4096):  # the tiled kernel's shared memory does not grow with c
        assert dims(c).tiled_rows == (32, 16) and shared_bytes(dims(c))["cluster_tiled"] == 36_928
    assert dims(6).tiled_rows == (6, 6)  # smaller clusters: smaller blocks
    assert dims(24, e=640).tiled_rows == (8, 8)  # wide rows: smaller tiles, past 48 KiB
    assert cluster_kernels(dims(24, e=768), "float32") == ()

    g = torch.Generator().manual_seed(3)
    attrs = attention_attrs(Mode.SCATTERBRAIN, 100, 2, 12, 0.125)
    q, k, v = attn_inputs(1, 110, 64, torch.float32, "cpu")
    hv, proj = draw_hash_vectors(2, 64, g), draw_projection(12, 64, g)
    with pytest.raises(ValueError, match=r"'staged' cluster kernel needs .* cluster size 100.*\['tiled'\]"):
        run(q, k, v, hv, proj, attrs, cluster="staged")
    with pytest.raises(ValueError, match="cluster must be None or one of"):
        run(q, k, v, hv, proj, attrs, cluster="flash")
    q, k, v = attn_inputs(1, 20, 768, torch.float32, "cpu")
    hv, proj = draw_hash_vectors(2, 768, g), draw_projection(12, 768, g)
    with pytest.raises(ValueError, match=r"no cluster kernel can run .* E=768.*narrower heads"):
        run(q, k, v, hv, proj, attrs)


@pytest.mark.parametrize("with_size", [False, True], ids=["plain", "prop"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(("b", "h", "n"), [(2, 6, 197), (1, 2, 37), (1, 1, 300)])
def test_attention_info_emulated(
    b: int, h: int, n: int, dtype: torch.dtype, with_size: bool, emulated: None
) -> None:
    check_attention_info(b, h, n, dtype, "cpu", with_size)


@pytest.mark.parametrize(
    ("b", "h", "n", "e", "dtype", "with_size", "layout", "kernel"),
    [
        (2, 6, 197, 64, torch.float16, True, "qkv", "vitrt_tf_attention_info_qk4_f16"),
        (1, 2, 37, 32, torch.float16, False, "contiguous", "vitrt_tf_attention_info_qk2_f16"),
        (1, 1, 256, 128, torch.float16, True, "unaligned", "vitrt_tf_attention_info_qk8_f16"),
        (1, 2, 5, 64, torch.float16, True, "qkv", "vitrt_tf_attention_info_qk4_f16"),
        (1, 2, 300, 64, torch.float16, True, "qkv", "vitrt_tf_attention_info24_f16"),
        (1, 2, 65, 48, torch.float16, False, "qkv", "vitrt_tf_attention_info8_f16"),
        (2, 3, 197, 64, torch.float32, True, "qkv", "vitrt_tf_attention_info8_f32"),
    ],
    ids=["f16-qkv-197", "f16-37-e32", "f16-256-e128-unaligned", "f16-5", "f16-300-gemm", "f16-e48-gemm",
         "f32-gemm"],
)  # fmt: skip
def test_attention_info_from_q_and_k_emulated(
    b: int,
    h: int,
    n: int,
    e: int,
    dtype: torch.dtype,
    with_size: bool,
    layout: str,
    kernel: str,
    emulated: None,
) -> None:
    """float16 with E in 32 / 64 / 128 and N <= 256 reads q and k in one kernel; the rest goes through q k^T
    and the logits kernel. Either way one mean kernel finishes, and the result is the reference's."""
    module = emulated_module("token_fusion")
    before = dict(module.launches)
    check_attention_info_qk(b, h, n, e, dtype, "cpu", with_size, layout)
    launched = {name: count - before.get(name, 0) for name, count in module.launches.items()}
    sfx = "f16" if dtype == torch.float16 else "f32"
    assert {name: count for name, count in launched.items() if count} == {
        kernel: 1,
        f"vitrt_tf_info_mean_{sfx}": 1,
    }


@pytest.mark.parametrize(
    ("mode", "n", "c", "threads"),
    [(Mode.SCATTERBRAIN, 300, 24, 1024), (Mode.LSH, 3136, 24, 64), (Mode.SCATTERBRAIN, 1000, 7, 32)],
    ids=["one-tile", "7-tiles", "4-tiles-one-warp"],
)
def test_scatterbrain_sort_in_tiles_emulated(
    mode: Mode, n: int, c: int, threads: int, emulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The radix sort in tiles serves P > 8192 (T2T's first attention from 384 x 384 pixels up): run it at a
    # small P by lowering the one-tile sort's limit, and over several tiles by shrinking them (8 keys per
    # thread). check_scatterbrain asserts the permutations equal reference.stable_argsort of the hashes.
    from vitrt.plugins.cuda_launcher import load_module
    from vitrt.plugins.lsh_attention import cuda as sb_cuda

    monkeypatch.setattr(sb_cuda, "_RADIX_MAX_P", 0)
    monkeypatch.setattr(sb_cuda, "_SORT_TILE_THREADS", threads)
    module = load_module("scatterbrain")
    before = module.launches.get("vitrt_sb_sort_tiles", 0)
    check_scatterbrain(2, n, 33, c, 2, 12, 0.2, torch.float16, mode, "cpu")
    assert module.launches.get("vitrt_sb_sort_tiles", 0) == before + 2  # check_scatterbrain runs the op twice


def test_scatterbrain_sort_keys_per_thread_emulated(emulated: None) -> None:
    """The one-tile radix sort at 1, 2, 4 and 8 keys per thread (blocks of 320, 160, 96 and 64 threads at
    P = 312): the same permutations, reference.stable_argsort of the kernel's hashes with ties (duplicated
    tokens hash alike) in index order, and the same output bits. The block scan adds the earlier warps'
    totals by a warp reduction: 10 warps at one key per thread."""
    from vitrt.plugins.lsh_attention import cuda as sb_cuda
    from vitrt.plugins.lsh_attention import reference as sb_ref
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection

    n, e = 300, 32
    attrs = attention_attrs(Mode.SCATTERBRAIN, 24, 2, 12, e**-0.5)
    q, k, v = (torch.randn(1, 2, n, e) for _ in range(3))
    dup = torch.randperm(n)[:60]
    q[:, :, dup[:30]] = q[:, :, dup[30:]]  # equal tokens: equal hashes, ties for the sort
    k[:, :, dup[:30]] = k[:, :, dup[30:]]
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    hv, proj = draw_hash_vectors(2, e, g), draw_projection(12, e, g)
    assert sb_cuda.AttentionDims.of(1, 2, n, e, e, attrs).sort_items == 1
    module = load_module("scatterbrain")
    outs = []
    for items in sb_cuda.SORT_ITEMS:
        kernel = "vitrt_sb_sort" if items >= 4 else "vitrt_sb_sort_few"
        before = module.launches.get(kernel, 0)
        out, views = sb_cuda.scatterbrain_cuda_debug(q, k, v, hv, proj, attrs, sort_items=items)
        assert module.launches.get(kernel, 0) == before + 1
        for side in ("q", "k"):
            hashes = views[f"{side}_hash"]
            assert int((hashes[..., :n].unsqueeze(-1) == hashes[..., :n].unsqueeze(-2)).sum()) > 4 * n
            assert torch.equal(views[f"{side}_perm"], sb_ref.stable_argsort(hashes)), (items, side)
        outs.append(out)
    assert all(torch.equal(o, outs[0]) for o in outs[1:])


@pytest.mark.parametrize(
    ("mode", "dtype", "heads", "c"),
    [
        (Mode.SCATTERBRAIN, torch.float16, 1, 24),
        (Mode.SCATTERBRAIN, torch.float16, 2, 6),
        (Mode.SCATTERBRAIN, torch.float32, 2, 24),
        (Mode.SCATTERBRAIN, torch.float16, 1, 80),
        (Mode.LSH, torch.float16, 2, 6),
        (Mode.LSH, torch.float16, 1, 80),
        (Mode.PERFORMER, torch.float16, 2, 0),
    ],
    ids=["sb-f16-mma", "sb-f16-2-heads-mma", "sb-f32-staged", "sb-f16-tiled", "lsh-f16-2-heads-mma",
         "lsh-f16-tiled", "performer-f16-2-heads"],
)  # fmt: skip
def test_scatterbrain_reads_views_of_a_qkv_projection_in_place_emulated(
    mode: Mode, dtype: torch.dtype, heads: int, c: int, emulated: None
) -> None:
    """q, k, v as views of one qkv output [B, N, 3, H, E] (T2T-ViT's token attentions; rows 3 H E apart):
    the kernels read them where they lie (QKVLayout) and give the bits of the same values made contiguous,
    for each form of the cluster kernel (tensor cores, staged, tiled at c = 80) and each mode."""
    from vitrt.plugins.lsh_attention import cuda as sb_cuda
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection

    b, n, e = 2, 200, 32
    qkv = torch.randn(b, n, 3, heads, e).to(dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, E], token stride 3 H E
    layout = sb_cuda._qkv_layout(q, k, v)
    assert layout == sb_cuda.QKVLayout(
        heads, (n * 3 * heads * e, e, 3 * heads * e), (n * 3 * heads * e, e, 3 * heads * e)
    )
    sparse, low_rank = mode != Mode.PERFORMER, mode != Mode.LSH
    attrs = attention_attrs(mode, c if sparse else 0, 2 if sparse else 0, 8 if low_rank else 0, e**-0.5)
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    hv = draw_hash_vectors(2, e, g) if sparse else None
    proj = draw_projection(8, e, g) if low_rank else None
    d = sb_cuda.AttentionDims.of(b, heads, n, e, e, attrs)
    forms = (
        sb_cuda.cluster_kernels(d, "float16" if dtype == torch.float16 else "float32") if sparse else [None]
    )
    assert forms
    for form in forms:
        packed = sb_cuda.scatterbrain_cuda(
            q.contiguous(), k.contiguous(), v.contiguous(), hv, proj, attrs, cluster=form
        )
        in_place = sb_cuda.scatterbrain_cuda(q, k, v, hv, proj, attrs, cluster=form)
        assert torch.equal(in_place, packed), form


@pytest.mark.parametrize(
    ("mode", "kernels"),
    [
        (Mode.SCATTERBRAIN, ["features_f16", "kv_reduce", "sort", "cluster_mma3_f16", "combine_f16"]),
        (Mode.LSH, ["features_f16", "sort", "cluster_mma3_f16", "combine_f16"]),
        (Mode.PERFORMER, ["features_f16", "kv_reduce", "combine_f16"]),
    ],
)
def test_scatterbrain_launches_once_per_stage_emulated(
    mode: Mode, kernels: list[str], emulated: None
) -> None:
    """One launch per stage and no more: the key maxima come from the features kernel (vitrt_sb_stats, a
    launch and a read of k of its own, is gone) and kv_reduce finishes k' and pls; the output is the
    reference's on the kernel's permutations."""
    from vitrt.plugins.lsh_attention import reference as sb_ref
    from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda_debug
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection

    n, e = 1100, 64  # P = 1104: two keys per thread, so the sort is vitrt_sb_sort_few
    attrs = attention_attrs(mode, 24 if mode != Mode.PERFORMER else 0, 2 if mode != Mode.PERFORMER else 0,
                            12 if mode != Mode.LSH else 0, e**-0.5)  # fmt: skip
    q, k, v = (torch.randn(1, 1, n, e).half() for _ in range(3))
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    hv = draw_hash_vectors(2, e, g) if mode != Mode.PERFORMER else None
    proj = draw_projection(12, e, g) if mode != Mode.LSH else None
    module = load_module("scatterbrain")
    before = dict(module.launches)
    out, views = scatterbrain_cuda_debug(q, k, v, hv, proj, attrs)
    launched = {name: count - before.get(name, 0) for name, count in module.launches.items()}
    want = {f"vitrt_sb_{name}" if name != "sort" else "vitrt_sb_sort_few": 1 for name in kernels}
    assert {name: count for name, count in launched.items() if count} == want
    with pytest.MonkeyPatch.context() as patch:
        if mode != Mode.PERFORMER:
            orders = (views["q_perm"], views["k_perm"])
            patch.setattr(sb_ref, "_hash_orders", lambda *args: orders)
        ref = sb_ref.attention_by_mode(q.float(), k.float(), v.float(), hv, proj, attrs)
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2e-3 * float(ref.abs().max()))


@pytest.mark.parametrize(
    ("tokens", "items", "threads"),
    [
        (312, 1, 320),
        (792, 1, 800),
        (1008, 1, 1024),
        (1032, 2, 544),
        (3144, 4, 800),
        (4104, 8, 544),
        (8184, 8, 1024),
    ],
)
def test_the_sort_takes_the_fewest_keys_per_thread_within_1024_threads(
    tokens: int, items: int, threads: int
) -> None:
    """T2T-ViT's attentions at 224 pixels (P = 792 and 3144 at c = 24) get 25-warp sort blocks; a forced
    count whose block would pass 1024 threads is refused, naming the counts that fit."""
    from vitrt.plugins.lsh_attention import cuda as sb_cuda

    d = sb_cuda.AttentionDims(bh=1, n=tokens, e=64, dv=64, mode=int(Mode.SCATTERBRAIN), c=24, r=2, m=12)
    assert d.p == tokens
    assert (d.sort_items, d.sort_threads) == (items, threads)
    assert sb_cuda._sort_items_choice(d, None) == items
    if items > 1:
        fits = ", ".join(str(i) for i in sb_cuda.SORT_ITEMS if i >= items)
        with pytest.raises(ValueError, match=rf"one of \[{fits}\] for {tokens} positions, got 1"):
            sb_cuda._sort_items_choice(d, 1)


@pytest.mark.parametrize(
    ("width", "plan"), [(64, (16, True)), (128, (64, False))], ids=["staged-state", "state-in-global"]
)
@pytest.mark.parametrize("mode", [Mode.PERFORMER, Mode.SCATTERBRAIN], ids=["performer", "scatterbrain"])
def test_scatterbrain_many_features_emulated(
    mode: Mode, width: int, plan: tuple[int, bool], emulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """256 features: the combine kernel's low-rank state is F x Dv floats. At Dv = 64 (64 KiB) it is staged
    with 16 queries a block, where 64 queries need 133 KB of shared memory (more than 99 KiB); at Dv = 128
    (128 KiB) it cannot be staged, and the kernel reads it from global memory. Neither the plan nor the
    queries per block changes a bit of the output."""
    from tests._support.kernel_checks import _fixed
    from vitrt.plugins.cuda_launcher import load_module
    from vitrt.plugins.lsh_attention import cuda as sb_cuda
    from vitrt.plugins.lsh_attention import reference as sb_ref

    attrs = attention_attrs(mode, 24, 2, 128, width**-0.5)
    q, k, v = attn_inputs(1, 150, width, torch.float32, "cpu")
    hv, proj = _fixed(2, 128, width, "cpu")
    hv_in = hv if mode != Mode.PERFORMER else None
    assert sb_cuda.AttentionDims.of(1, 1, 150, width, width, attrs).combine_plan == plan
    out, views = sb_cuda.scatterbrain_cuda_debug(q, k, v, hv_in, proj, attrs)
    orders = (views["q_perm"], views["k_perm"]) if mode != Mode.PERFORMER else None
    with pytest.MonkeyPatch.context() as patch:
        if orders is not None:
            patch.setattr(sb_ref, "_hash_orders", lambda *args: orders)
        want = sb_ref.attention_by_mode(q, k, v, hv_in, proj, attrs)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # Other plans: 8 queries a block with the state in global memory, then staged where it fits (Dv = 64);
    # each takes its own kernel.
    launches = load_module("scatterbrain").launches
    monkeypatch.setattr(sb_cuda, "_QUERIES_PER_BLOCK", (8,))
    for least_staged, forced in ((16, (8, False)), (0, (8, width == 64))):
        monkeypatch.setattr(sb_cuda, "_STAGED_QUERIES_MIN", least_staged)
        assert sb_cuda.AttentionDims.of(1, 1, 150, width, width, attrs).combine_plan == forced
        kernel = "vitrt_sb_combine_f32" if forced[1] else "vitrt_sb_combine_global_f32"
        before = launches.get(kernel, 0)
        assert torch.equal(sb_cuda.scatterbrain_cuda(q, k, v, hv_in, proj, attrs), out)
        assert launches.get(kernel, 0) == before + 1


def test_scatterbrain_token_limit(emulated: None) -> None:
    """More tokens than the sort takes: a ValueError naming the limit and the fix, before any launch."""
    from vitrt.plugins.cuda_launcher import load_module
    from vitrt.plugins.lsh_attention.cuda import MAX_SORT_TOKENS, scatterbrain_cuda
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors

    assert MAX_SORT_TOKENS == 524_288
    module = load_module("scatterbrain")
    before = sum(module.launches.values())
    q, k, v = (torch.zeros(1, 1, MAX_SORT_TOKENS + 1, 8) for _ in range(3))
    hv = draw_hash_vectors(1, 8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"524289 tokens per attention .* \(524288\); use fewer tokens"):
        scatterbrain_cuda(q, k, v, hv, None, attention_attrs(Mode.LSH, 1, 1, 0, 0.3))
    assert sum(module.launches.values()) == before


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("mode", list(Mode), ids=[m.name.lower() for m in Mode])
def test_scatterbrain_misaligned_pointers_emulated(mode: Mode, dtype: torch.dtype, emulated: None) -> None:
    # Tensors 2 or 4 bytes off a 16-byte boundary take the kernels' scalar loads and stores: the same
    # result, bit for bit, as the vector ones.
    from tests._support.kernel_checks import _fixed, attention_attrs, attn_inputs
    from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda

    def shifted(x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(x.numel() + 1, dtype=x.dtype)[1:].view(x.shape)
        return y.copy_(x)

    attrs = attention_attrs(mode, 24, 2, 12, 147**-0.5)
    hv, proj = _fixed(2, 12, 64, "cpu")
    q, k, v = attn_inputs(1, 100, 64, dtype, "cpu")
    fixed = (hv if mode != Mode.PERFORMER else None, proj if mode != Mode.LSH else None)
    aligned = scatterbrain_cuda(q, k, v, *fixed, attrs)
    out = shifted(torch.empty_like(aligned))
    scatterbrain_cuda(shifted(q), shifted(k), shifted(v), *fixed, attrs, out=out)
    assert torch.equal(out, aligned)


@pytest.mark.parametrize("seed", range(32))
def test_random_fusion_configurations_emulated(seed: int, emulated: None) -> None:
    check_random_fusion(seed, "cpu")


@pytest.mark.parametrize("seed", range(32))
def test_random_attention_configurations_emulated(seed: int, emulated: None) -> None:
    check_random_attention(seed, "cpu")


def test_cpu_tensors_need_the_emulator() -> None:
    from vitrt.plugins.token_fusion.cuda import bipartite_matching_cuda

    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        bipartite_matching_cuda(torch.rand(1, 4, 4), 2)
    with emulated_kernels():
        assert load_module("token_fusion").origin == "cpu emulation"


# ---- the emulator's own checks, on small kernels of this test ------------------------------------------

SELFTEST = r"""
#include "cuda_common.cuh"
using namespace vitrt;

// In-place exclusive prefix sum of data[0, n) (shared memory) by the whole block; returns the total.
// `scratch` holds >= 33 ints of shared memory. No kernel uses a block scan any more (the matching's slots
// are one warp's ballots); it stays here as a check of the emulator's barriers and __shfl_up_sync.
__device__ int block_exclusive_scan(int* data, int n, int* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  int carry = 0;
  for (int base = 0; base < n; base += blockDim.x) {
    const int idx = base + threadIdx.x;
    const int x = idx < n ? data[idx] : 0;
    int incl = x;
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(kFullMask, incl, o);
      if (lane >= o) incl += y;
    }
    __syncthreads();  // the previous chunk's readers of scratch are done
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      int w = lane < warps ? scratch[lane] : 0;
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(kFullMask, w, o);
        if (lane >= o) w += y;
      }
      scratch[lane] = w;  // inclusive warp totals
    }
    __syncthreads();
    const int warp_offset = warp > 0 ? scratch[warp - 1] : 0;
    if (idx < n) data[idx] = carry + warp_offset + incl - x;
    carry += scratch[warps - 1];
  }
  __syncthreads();
  return carry;
}

// out[0] = block max of x, out[1 + i] = exclusive prefix sum of counts (block-wide helpers).
extern "C" __global__ void helpers(const float* x, const int* counts, float* maxout, int* scan, int n) {
  __shared__ float fscratch[32];
  __shared__ int iscratch[33];
  VITRT_DYNAMIC_SHARED(int, data);
  float m = neg_inf();
  for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i]);
  m = block_max(m, fscratch);
  for (int i = threadIdx.x; i < n; i += blockDim.x) data[i] = counts[i];
  __syncthreads();
  const int total = block_exclusive_scan(data, n, iscratch);
  for (int i = threadIdx.x; i < n; i += blockDim.x) scan[i] = data[i];
  if (threadIdx.x == 0) {
    maxout[0] = m;
    scan[n] = total;
  }
}

// A 16 x 24 float16 tile staged by cp_async16 (vector 5 of its 48 zero-filled instead), copied back to
// staged, and the mma fragments of its first 16 x 16 (A) and 8 x 16 (B) taken by ldmatrix at
// a_fragment_row / b_fragment_row and by the 32-bit loads mma_16816 documents: out[12 lane ..]: A by
// ldmatrix (4), A by loads (4), B by ldmatrix (2), B by loads (2). One warp.
extern "C" __global__ void fragments(const half_bits* tile, half_bits* staged, unsigned* out) {
  __shared__ __align__(16) half_bits t[16][24];
  const int lane = threadIdx.x, g = lane >> 2, q = lane & 3;
  for (int v = lane; v < 48; v += 32) cp_async16(&t[0][0] + 8 * v, tile + 8 * v, v != 5);
  cp_async_wait_all();
  __syncthreads();
  for (int i = lane; i < 16 * 24; i += 32) staged[i] = (&t[0][0])[i];
  unsigned a[4], b[2];
  ldmatrix<4>(a, a_fragment_row(&t[0][0], 24));
  ldmatrix<2>(b, b_fragment_row(&t[0][0], 24));
  auto word = [&](int row, int col) { return *reinterpret_cast<const unsigned*>(&t[row][col]); };
  const unsigned la[4] = {word(g, 2 * q), word(g + 8, 2 * q), word(g, 2 * q + 8), word(g + 8, 2 * q + 8)};
  const unsigned lb[2] = {word(g, 2 * q), word(g, 2 * q + 8)};
  for (int k = 0; k < 4; ++k) {
    out[12 * lane + k] = a[k];
    out[12 * lane + 4 + k] = la[k];
  }
  for (int k = 0; k < 2; ++k) {
    out[12 * lane + 8 + k] = b[k];
    out[12 * lane + 10 + k] = lb[k];
  }
}

// out[4 i + u] = a[4 i + u] / b[i] by divide_by (one reciprocal per b), one thread per i.
extern "C" __global__ void divide(const float* a, const float* b, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v[4] = {a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]};
  divide_by<4>(v, b[i], division_reciprocal(b[i]));
  for (int u = 0; u < 4; ++u) out[4 * i + u] = v[u];
}

// Half of warp 0 waits in __syncthreads, the other half in __syncwarp: no thread can proceed.
extern "C" __global__ void divergent(int* out) {
  if (threadIdx.x < 16) __syncthreads(); else __syncwarp();
  out[threadIdx.x] = 1;
}

// Lane 3 exits, then the warp shuffles with the full mask (undefined behaviour on a GPU).
extern "C" __global__ void shuffle_after_exit(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = warp_sum(1.0f);
}

// Reads dynamic shared memory nothing wrote.
extern "C" __global__ void unwritten_shared(float* out) {
  VITRT_DYNAMIC_SHARED(float, sm);
  out[threadIdx.x] = sm[threadIdx.x];
}

// Reads the next thread's slot with no barrier after the writes (the bug the two orders expose).
extern "C" __global__ void missing_barrier(float* out) {
  VITRT_DYNAMIC_SHARED(float, sm);
  sm[threadIdx.x] = (float)threadIdx.x;
  out[blockIdx.x * blockDim.x + threadIdx.x] = sm[(threadIdx.x + 1) % blockDim.x];
}

// Writes one float past the dynamic shared memory the launch asked for.
extern "C" __global__ void shared_overflow(int n) {
  VITRT_DYNAMIC_SHARED(float, sm);
  if (threadIdx.x == 0) sm[n] = 1.0f;
}
"""


@pytest.fixture(scope="module")
def selftest(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("emulator")
    path = folder / "selftest.cu"
    path.write_text(SELFTEST)
    return open_emulated(KernelSource("selftest", path), folder)


@pytest.mark.parametrize(("n", "threads"), [(1, 32), (200, 64), (1000, 96), (4099, 1024)])
def test_block_helpers_match_torch(selftest: Any, n: int, threads: int) -> None:
    x = torch.randn(n)
    counts = torch.randint(0, 5, (n,), dtype=torch.int32)
    maxout = torch.full((1,), math.nan)
    scan = torch.full((n + 1,), -7, dtype=torch.int32)
    launch(
        selftest, "helpers", (1, 1, 1), (threads, 1, 1),
        [ptr(x.data_ptr()), ptr(counts.data_ptr()), ptr(maxout.data_ptr()), ptr(scan.data_ptr()), i32(n)],
        stream=0, shared_mem=4 * n,
    )  # fmt: skip
    assert float(maxout) == float(x.max())
    expected = torch.cat([torch.zeros(1, dtype=torch.int64), counts.long().cumsum(0)])
    assert torch.equal(scan.long(), expected)


def test_ldmatrix_and_cp_async_emulation(selftest: Any) -> None:
    """The emulated ldmatrix gives each lane the fragments that 32-bit loads of the mma_16816 layout give
    (x4 for A, x2 for B), and cp_async16 copies 16 bytes or zero-fills them."""
    tile = torch.randint(-(2**15), 2**15, (16 * 24,), dtype=torch.int16)  # float16 bits
    staged = torch.zeros_like(tile)
    words = torch.zeros(32 * 12, dtype=torch.int32)  # the kernel's unsigned words, bit for bit
    launch(
        selftest, "fragments", (1, 1, 1), (32, 1, 1),
        [ptr(tile.data_ptr()), ptr(staged.data_ptr()), ptr(words.data_ptr())], stream=0,
    )  # fmt: skip
    expected = tile.clone()
    expected[40:48] = 0
    assert torch.equal(staged, expected)
    w = words.view(32, 12)
    assert torch.equal(w[:, 0:4], w[:, 4:8]) and torch.equal(w[:, 8:10], w[:, 10:12])
    assert bool((w[:, 4:8] != 0).any())


def test_divide_by_one_reciprocal_equals_division(selftest: Any) -> None:
    """divide_by (division_reciprocal's y for four quotients, each corrected by an fma) gives the bits of IEEE
    division: quotients in its corrected range, near-exact and exact ones, and the values that take the
    division (zero, subnormal, huge, infinite, NaN, divisors outside [2^-40, 2^40))."""
    n = 1 << 16
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))

    def floats(count: int, lo: int, hi: int) -> torch.Tensor:  # random sign and mantissa, |x| in [2^lo, 2^hi)
        exponent = torch.randint(lo, hi, (count,), generator=g).float()
        mantissa = 1.0 + torch.randint(0, 2**23, (count,), generator=g).float() / 2**23
        sign = torch.randint(0, 2, (count,), generator=g).float() * 2 - 1
        return sign * mantissa * torch.exp2(exponent)

    b = floats(n, -40, 40).abs()
    b[: n // 8] = floats(n // 8, -60, 60).abs()  # some divisors outside the corrected range
    a = floats(4 * n, -60, 60).view(n, 4)
    near = b[:, None] * floats(4 * n, -24, 24).view(n, 4)  # quotients close to representable ones
    a[n // 4 : n // 2] = near[n // 4 : n // 2]
    a[n // 2 : n // 2 + 64] = b[n // 2 : n // 2 + 64, None] * 3  # exact quotients
    specials = torch.tensor([0.0, -0.0, 1e-42, -3e-39, 2.0**-61, 2.0**61, math.inf, -math.inf, math.nan])
    where = torch.randint(0, 4 * n, (512,), generator=g)
    a.view(-1)[where] = specials[torch.randint(0, len(specials), (512,), generator=g)]
    out = torch.full_like(a, 7.0)
    launch(
        selftest, "divide", ((n + 127) // 128, 1, 1), (128, 1, 1),
        [ptr(a.data_ptr()), ptr(b.data_ptr()), ptr(out.data_ptr()), i32(n)], stream=0,
    )  # fmt: skip
    expected = a / b[:, None]
    same = (out.view(torch.int32) == expected.view(torch.int32)) | (out.isnan() & expected.isnan())
    assert bool(same.all()), (a[~same][:5], b[:, None].expand_as(a)[~same][:5])


def test_divergent_barriers_are_reported(selftest: Any) -> None:
    out = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(KernelEmulationError, match=r"deadlock.*thread \(0,0,0\) in __syncthreads"):
        launch(selftest, "divergent", (1, 1, 1), (64, 1, 1), [ptr(out.data_ptr())], stream=0)


def test_shuffle_after_a_lane_exited_is_reported(selftest: Any) -> None:
    out = torch.zeros(32)
    with pytest.raises(KernelEmulationError, match="a lane exited before a full-mask warp operation"):
        launch(selftest, "shuffle_after_exit", (1, 1, 1), (32, 1, 1), [ptr(out.data_ptr())], stream=0)


def test_unwritten_shared_memory_reads_as_nan(selftest: Any) -> None:
    out = torch.zeros(64)
    launch(
        selftest, "unwritten_shared", (2, 1, 1), (64, 1, 1), [ptr(out.data_ptr())], stream=0, shared_mem=256
    )
    assert bool(out.isnan().all())


def test_shared_memory_beyond_the_smallest_target_is_refused(selftest: Any) -> None:
    with pytest.raises(KernelEmulationError, match="more than the 101376"):
        launch(selftest, "shared_overflow", (1, 1, 1), (32, 1, 1), [i32(0)], stream=0, shared_mem=100 * 1024)


def test_shared_memory_overflow_crashes(selftest: Any) -> None:
    # In a child process: the guard page after the dynamic shared memory turns the write past its end
    # into SIGSEGV, while the last float inside is fine.
    code = textwrap.dedent(
        f"""
        import ctypes, sys
        lib = ctypes.CDLL({selftest.library._name!r})
        n = ctypes.c_int32(int(sys.argv[1]))
        params = (ctypes.c_void_p * 1)(ctypes.addressof(n))
        err = ctypes.create_string_buffer(256)
        dims = (ctypes.c_uint * 3)(1, 1, 1), (ctypes.c_uint * 3)(32, 1, 1)
        print("rc", lib.vitrt_emu_launch(b"shared_overflow", *dims, ctypes.c_size_t(4096), params, err, 256))
        """
    )
    inside = subprocess.run([sys.executable, "-c", code, "1023"], capture_output=True, text=True)
    assert inside.returncode == 0 and "rc 0" in inside.stdout, inside.stderr
    past = subprocess.run([sys.executable, "-c", code, "1024"], capture_output=True, text=True)
    assert past.returncode < 0, f"no crash: {past.stdout} {past.stderr}"


def test_a_missing_barrier_changes_the_results(selftest: Any) -> None:
    # Every thread writes its slot, then (without __syncthreads) reads the next one: a correct kernel
    # gives (t + 1) % 64 everywhere. Block 0 (threads in increasing order) reads poison in all but the
    # last thread, block 1 (decreasing order) in the last thread only: both orders expose the bug.
    out = torch.zeros(2, 64)
    launch(
        selftest, "missing_barrier", (2, 1, 1), (64, 1, 1), [ptr(out.data_ptr())], stream=0, shared_mem=256
    )
    assert bool(out[0, :63].isnan().all()) and float(out[0, 63]) == 0.0
    assert torch.equal(out[1, :63], torch.arange(1.0, 64.0)) and bool(out[1, 63].isnan())
