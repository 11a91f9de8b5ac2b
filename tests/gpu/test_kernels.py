"""The CUDA kernels against the PyTorch references, on the GPU, at the models' real shapes.

Skipped (with the reason printed) where torch has no CUDA device or cuda-python is missing. Run on a GPU
machine with ``bash tests/gpu/run_all.sh`` (builds the fatbins first; without nvcc the launcher falls
back to NVRTC).

How exactness is judged. The kernels sum in their own order, so float32 results differ from the
reference by rounding; decisions that rank floats (the token-fusion matching, the LSH sorts) can then
differ where two values are within rounding of each other. So every data-dependent decision is checked
twice: exactly, by running the reference's decision code on the kernel's own float values (the
kernel's matching on the kernel's scores must equal ``reference.bipartite_matching`` of those scores,
the kernel's sort must equal ``reference.stable_argsort`` of the kernel's hashes), and end to end,
where almost every batch element / row must agree with the untouched reference. The outputs are
checked within 1e-4 (float32) and 1e-2 (float16) relative (atol = rtol x the largest reference value)
given the same decisions, and every output element must be written (outputs are pre-filled with NaN or
-1).
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from plugins.lsh_attention import reference as sb_ref
from plugins.lsh_attention.spec import Mode, ScatterbrainAttrs, padded_length
from plugins.token_fusion import reference as tf_ref
from plugins.token_fusion.spec import Pooling, TokenFusionAttrs, removed_tokens

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 1e-4, torch.float16: 1e-2}


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: no CUDA GPU (or a CPU build of torch)"
    try:
        importlib.import_module("cuda.bindings.driver")
    except ImportError:
        try:
            importlib.import_module("cuda.cuda")
        except ImportError as exc:
            return f"cuda-python is not installed ({exc}): pip install cuda-python"
    return None


@pytest.fixture(autouse=True, scope="module")
def _gpu() -> None:
    reason = _skip_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    from plugins.cuda_build import build_fatbins, find_cuda_home

    try:
        find_cuda_home()
    except Exception as exc:  # no toolkit: the launcher compiles with NVRTC instead
        print(f"no nvcc ({exc}); kernels come from NVRTC")
    else:
        build_fatbins()


def _close(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
    tol = TOL[dtype]
    scale = float(expected.float().abs().max())
    torch.testing.assert_close(
        actual.float(), expected.float(), rtol=tol, atol=tol * max(scale, 1e-30), msg=lambda m: f"{what}: {m}"
    )


# ---- token fusion ---------------------------------------------------------------------------------------

MCTF: dict[str, Any] = dict(
    tau_sim=1.0, tau_info=20.0, tau_size=40.0, bidirectional=1, pooling=int(Pooling.ATTN_SIZE)
)
TOME: dict[str, Any] = dict(
    tau_sim=1.0, tau_info=0.0, tau_size=0.0, bidirectional=0, pooling=int(Pooling.SIZE)
)

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


def _fusion_inputs(b: int, n: int, c: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator(device="cuda").manual_seed(1234 + n)
    x = torch.randn(b, n, c, device="cuda", generator=g)
    info = torch.rand(b, n, device="cuda", generator=g) / n + 1e-4  # attention received ~ 1/N
    size = torch.randint(1, 4, (b, n), device="cuda", generator=g).float()  # tokens fused earlier
    return x.to(dtype), x.to(dtype), info.to(dtype), size.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("name", "b", "n", "c", "r", "preset"), FUSION_CASES, ids=[c[0] for c in FUSION_CASES]
)
def test_token_fusion(
    name: str, b: int, n: int, c: int, r: int, preset: dict[str, Any], dtype: torch.dtype
) -> None:
    from plugins.token_fusion.cuda import bipartite_matching_cuda, fusion_scores_cuda, token_fusion_cuda

    attrs = TokenFusionAttrs(r=r, **preset)
    x, metric, info, size = _fusion_inputs(b, n, c, dtype)
    n_out = n - r

    out = (
        torch.full((b, n_out, c), math.nan, dtype=dtype, device="cuda"),
        torch.full((b, n_out), math.nan, dtype=dtype, device="cuda"),
        torch.full((b, n), -1, dtype=torch.int64, device="cuda"),
    )
    x_f, size_f, dest = token_fusion_cuda(x, metric, info, size, attrs, out=out)
    torch.cuda.synchronize()
    assert not x_f.isnan().any() and not size_f.isnan().any(), "an output element was not written"
    assert int(dest.min()) >= 0 and int(dest.max()) < n_out
    # every output slot receives at least one token
    assert bool(
        (torch.zeros(b, n_out, device="cuda").scatter_add_(1, dest, torch.ones_like(dest).float()) > 0).all()
    )

    ref_x, ref_size, ref_dest = tf_ref.token_fusion(x, metric, info, size, attrs)
    if r == 0:
        assert torch.equal(dest, ref_dest) and torch.equal(x_f, ref_x) and torch.equal(size_f, ref_size)
        return

    # 1. scores: float32 values within rounding of the reference's
    scores = fusion_scores_cuda(metric, info, size, attrs)
    ref_scores = tf_ref.fusion_scores(
        metric, info, size, attrs.tau_sim, attrs.tau_info, attrs.tau_size, attrs.num_protected
    )
    masked = ref_scores == torch.finfo(torch.float32).min
    assert torch.equal(scores == torch.finfo(torch.float32).min, masked)
    torch.testing.assert_close(scores[~masked], ref_scores[~masked], rtol=1e-5, atol=1e-7)

    # 2. matching: exactly the reference's decisions on the kernel's own scores (ties included)
    assert torch.equal(bipartite_matching_cuda(scores, r, bool(attrs.bidirectional)), dest)
    assert torch.equal(tf_ref.bipartite_matching(scores, r, bool(attrs.bidirectional)), dest)

    # 3. pooling given the same groups: the reference's merge of the kernel's dest
    weight = tf_ref.pooling_weights(info, size, attrs.pooling)
    _close(x_f, tf_ref.merge_tokens(x, dest, weight, n_out), dtype, "x_fused")
    _close(size_f, tf_ref.merge_sizes(size, dest, n_out), dtype, "size_fused")

    # 4. end to end: the untouched reference agrees on (nearly) every batch element; where it does not,
    # two best-partner scores are within float32 rounding of each other (checked exactly in 2.)
    same = (dest == ref_dest).all(dim=1)
    assert float(same.float().mean()) >= 0.9, f"dest agrees on {int(same.sum())} of {b} batch elements"
    if bool(same.any()):
        _close(x_f[same], ref_x[same], dtype, "x_fused end to end")
        _close(size_f[same], ref_size[same], dtype, "size_fused end to end")


def test_token_fusion_is_deterministic() -> None:
    from plugins.token_fusion.cuda import token_fusion_cuda

    attrs = TokenFusionAttrs(r=16, **MCTF)
    inputs = _fusion_inputs(64, 197, 384, torch.float16)
    first = token_fusion_cuda(*inputs, attrs)
    for _ in range(3):
        again = token_fusion_cuda(*inputs, attrs)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


# ---- Scatterbrain ---------------------------------------------------------------------------------------

# (name, batch, tokens, E, cluster, hashes, projection rows, scale): the two T2T token attentions of
# T2T-ViT-t-14 with Scatterbrain (3136 tokens, 147-dim patches; 784 tokens, 576-dim patches).
ATTN_CASES = [
    ("t2t_stage1_b1", 1, 3136, 64, 24, 2, 12, 147**-0.5),
    ("t2t_stage1_b4", 4, 3136, 64, 24, 2, 12, 147**-0.5),
    ("t2t_stage2_b8", 8, 784, 64, 6, 2, 3, 576**-0.5),
]


def _attn_inputs(b: int, n: int, e: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator(device="cuda").manual_seed(99 + n)
    q, k, v = (torch.randn(b, 1, n, e, device="cuda", generator=g) for _ in range(3))
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _fixed(r: int, m: int, e: int) -> tuple[Tensor, Tensor]:
    from plugins.lsh_attention.module import draw_hash_vectors, draw_projection

    g = torch.Generator().manual_seed(7)
    return draw_hash_vectors(r, e, g).cuda(), draw_projection(m, e, g).cuda()


def _attrs(mode: Mode, c: int, r: int, m: int, scale: float) -> ScatterbrainAttrs:
    sparse, low_rank = mode != Mode.PERFORMER, mode != Mode.LSH
    return ScatterbrainAttrs(mode, c if sparse else 0, r if sparse else 0, 2 * m if low_rank else 0, scale)


def _by_mode(q: Tensor, k: Tensor, v: Tensor, hv: Tensor, proj: Tensor, attrs: ScatterbrainAttrs) -> Tensor:
    from plugins.lsh_attention.onnx_lowering import attention_by_mode

    return attention_by_mode(
        q, k, v, hv if attrs.mode != Mode.PERFORMER else None, proj if attrs.mode != Mode.LSH else None, attrs
    )


@pytest.mark.parametrize("mode", list(Mode), ids=[m.name.lower() for m in Mode])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize(
    ("name", "b", "n", "e", "c", "r", "m", "scale"), ATTN_CASES, ids=[c[0] for c in ATTN_CASES]
)
def test_scatterbrain(
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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugins.lsh_attention.cuda import scatterbrain_cuda, scatterbrain_cuda_debug

    attrs = _attrs(mode, c, r, m, scale)
    q, k, v = _attn_inputs(b, n, e, dtype)
    hv, proj = _fixed(r, m, e)
    hv_in = hv if mode != Mode.PERFORMER else None
    proj_in = proj if mode != Mode.LSH else None

    out = torch.full((b, 1, n, e), math.nan, dtype=dtype, device="cuda")
    scatterbrain_cuda(q, k, v, hv_in, proj_in, attrs, out=out)
    torch.cuda.synchronize()
    assert not out.isnan().any(), "an output element was not written (or is NaN)"
    again, views = scatterbrain_cuda_debug(q, k, v, hv_in, proj_in, attrs)
    assert torch.equal(again, out), "not deterministic"

    if mode == Mode.PERFORMER:
        _close(out, _by_mode(q, k, v, hv, proj, attrs), dtype, "performer output")
        return

    p = padded_length(n, c)
    qf, kf, _, valid, _ = sb_ref._prepare(q, k, v, c)
    # 1. hashes within float32 rounding of the reference's XBOX+ projections
    hv32 = hv.float().t()
    for side, x_t in zip(("q_hash", "k_hash"), sb_ref.xbox_plus(qf, kf), strict=True):
        ref_h = torch.matmul(x_t, hv32).transpose(-1, -2).masked_fill(~valid, math.inf)
        got = views[side]
        assert torch.equal(got.isinf(), ref_h.isinf())
        fin = ~ref_h.isinf()
        torch.testing.assert_close(got[fin], ref_h[fin], rtol=1e-5, atol=1e-5 * float(ref_h[fin].abs().max()))
    # 2. the sort: exactly the reference's stable argsort of the kernel's hashes
    for side in ("q", "k"):
        assert torch.equal(views[f"{side}_perm"], sb_ref.stable_argsort(views[f"{side}_hash"])), side
    # 3. features (SCATTERBRAIN)
    if mode == Mode.SCATTERBRAIN:
        ref_qp, ref_kp, ref_pls = sb_ref.performer_features(qf, kf, proj, scale, valid)
        torch.testing.assert_close(views["q_prime"][:, :, :n], ref_qp[:, :, :n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(views["k_prime"], ref_kp, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(views["pls"][:, :, :n], ref_pls[:, :, :n, 0], rtol=1e-5, atol=1e-4)

    # 4. the output given the kernel's clusters: the reference run on the kernel's permutations
    kernel_orders = (views["q_perm"], views["k_perm"])
    with monkeypatch.context() as patch:
        patch.setattr(sb_ref, "_hash_orders", lambda *args: kernel_orders)
        expected = _by_mode(q, k, v, hv, proj, attrs)
    _close(out, expected, dtype, f"{mode.name} output on the kernel's clusters")

    # 5. end to end: rows (queries) within tolerance of the untouched reference
    ref = _by_mode(q, k, v, hv, proj, attrs).float()
    tol = TOL[dtype]
    ok = ((out.float() - ref).abs() <= tol * ref.abs() + tol * float(ref.abs().max())).all(dim=-1)
    # A key whose hash is within rounding of a cluster boundary changes two clusters (2 c rows): rare,
    # and bounded here at 3 % of the rows.
    assert float(ok.float().mean()) >= 0.97, f"{float(ok.float().mean()):.4f} of the rows agree end to end"
    assert p >= n
