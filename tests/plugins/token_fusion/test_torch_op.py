"""The torch ops (``torch.ops.vitrt.token_fusion`` / ``token_merge``): CPU dispatch = the reference,
gradients = the reference's, and the model's kernel path taken where the kernels apply (checked on the
CPU emulator, where CPU tensors dispatch to the emulated kernels: CI has no GPU).

Tolerances: float32 paths that differ only in summation order within 1e-5; the model's kernel path
(which also reassociates the one-step-ahead attention, see ``FusionBlock``) within 1e-4 of the
reference path.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests._support.kernel_checks import MCTF, fusion_inputs
from vitrt.models.deit import VisionTransformer
from vitrt.plugins.cuda_emulation import (
    KernelEmulationError,
    emulated_kernels,
    emulated_module,
    host_compiler,
)
from vitrt.plugins.token_fusion import reference
from vitrt.plugins.token_fusion.integration import apply_fusion
from vitrt.plugins.token_fusion.module import FusionBlock
from vitrt.plugins.token_fusion.spec import Pooling, TokenFusionAttrs
from vitrt.plugins.token_fusion.torch_op import token_fusion_call, token_merge_op

F32 = {"atol": 1e-5, "rtol": 1e-5}


def _attrs(r: int = 12, **kw: Any) -> TokenFusionAttrs:
    return TokenFusionAttrs(r=r, **{**MCTF, **kw})


def test_cpu_dispatch_is_the_reference() -> None:
    x, metric, info, size = fusion_inputs(3, 65, 32, torch.float32, "cpu")
    attrs = _attrs()
    got = token_fusion_call(x, metric, info, size, attrs)
    want = reference.token_fusion(x, metric, info, size, attrs)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    dest = want[2]
    merged = token_merge_op(x, dest, info, size, int(Pooling.ATTN_SIZE), 65 - attrs.r)
    weight = reference.pooling_weights(info, size, Pooling.ATTN_SIZE)
    assert torch.equal(merged, reference.merge_tokens(x, dest, weight, 65 - attrs.r))


@pytest.mark.parametrize("pooling", list(Pooling), ids=lambda p: p.name.lower())
def test_gradients_equal_the_references(pooling: Pooling) -> None:
    x, metric, info, size = fusion_inputs(2, 41, 24, torch.float32, "cpu")
    attrs = _attrs(r=9, pooling=int(pooling))
    g = torch.Generator().manual_seed(3)
    upstream = torch.randn(2, 41 - 9, 24, generator=g)

    x_op = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    (token_fusion_call(x_op, metric, info, size, attrs)[0] * upstream).sum().backward()
    x_f, _, dest = reference.token_fusion(x_ref, metric, info, size, attrs)
    (x_f * upstream).sum().backward()
    assert x_op.grad is not None and x_ref.grad is not None
    torch.testing.assert_close(x_op.grad, x_ref.grad, **F32)

    x_merge = x.clone().requires_grad_(True)
    (token_merge_op(x_merge, dest, info, size, int(pooling), 41 - 9) * upstream).sum().backward()
    assert x_merge.grad is not None
    torch.testing.assert_close(x_merge.grad, x_ref.grad, **F32)


# ---- the model's kernel path, on the CPU emulator -------------------------------------------------------


@pytest.fixture(scope="module")
def _emulator() -> None:
    try:
        host_compiler()
    except KernelEmulationError as exc:
        pytest.skip(str(exc))


def _model(fusion: object | None, embed_dim: int = 32) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=64, patch_size=8, num_classes=10, embed_dim=embed_dim, depth=4, num_heads=2, qkv_bias=True
    )
    with torch.no_grad():  # larger weights than the init: attention (and the decisions) not uniform
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.2)
    if fusion is not None:
        apply_fusion(model, fusion)
    return model.eval()


FUSIONS = {
    "mctf": "mctf",
    "mctf_r8": {"r": 8},
    "recompute": {"r": 8, "one_step_ahead": 2},
    "mode0": {"r": 8, "one_step_ahead": 0},
    "tome": {"preset": "tome", "r": 8},
}


@pytest.mark.slow
@pytest.mark.parametrize("fusion", list(FUSIONS.values()), ids=list(FUSIONS))
def test_model_takes_the_kernel_path(fusion: object, _emulator: None) -> None:
    """Under emulated_kernels() a fused model calls the ops, which run the kernels (launch counts), and
    gives the reference path's logits; outside it, the same model runs the reference (no launches)."""
    from unittest import mock

    from vitrt.plugins.token_fusion import cuda as tf_cuda

    model = _model(fusion)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    module = emulated_module("token_fusion")
    before = dict(module.launches)
    with torch.no_grad():
        expected = model(images)
        assert dict(module.launches) == before, "the reference path launched kernels"
        with (
            emulated_kernels(),
            mock.patch.object(
                tf_cuda, "token_fusion_norm_cuda", wraps=tf_cuda.token_fusion_norm_cuda
            ) as fused,
        ):
            got = model(images)
    launched = {k: v - before.get(k, 0) for k, v in module.launches.items() if v != before.get(k, 0)}
    schedule = model.token_schedule()
    fusing = sum(1 for n_in, n_out in itertools.pairwise(schedule) if n_out < n_in)
    assert launched.get("vitrt_tf_match", 0) == fusing, launched
    assert launched.get("vitrt_tf_merge_f32", 0) >= fusing, launched
    # the norm after a block's fusion rides on the merge kernel: norm1 (one-step-ahead modes), norm2
    # (ToMe: fusion between attention and MLP) or, after an MLP (MCTF mode 0), the next block's norm1
    config = next(b.config for b in model.modules() if isinstance(b, FusionBlock))
    assert fused.call_count == fusing
    # the other norms after a residual add are one kernel with it (models.layers.add_norm): each block's
    # norm2 and the norm after the block (the next block's norm1 or the final norm), except those above
    # and norm2 after the one-step-ahead attention, which the merge of its output writes
    on_merge = fusing if config.one_step_ahead in (0, 1) else 0
    assert launched.get("vitrt_tf_layer_norm_f32", 0) == 2 * len(model.blocks) - on_merge, launched
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_plain_blocks_add_and_norm_in_one_kernel(dtype: torch.dtype, _emulator: None) -> None:
    """A model of plain blocks (no fusion) on the kernel path runs each residual add and the norm after it
    (norm2, the next block's norm1, the final norm) as one ``add_layer_norm`` kernel and gives the logits
    of torch's adds and layer_norms within 1e-5 (float32; the norm's sums in another order) / 1e-2
    (float16) relative; a set_lowering other than "eager" (exports) and gradients keep torch's ops."""
    from vitrt.plugins.lowering import set_lowering

    model = _model(None).to(dtype)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9)).to(dtype)
    kernel = f"vitrt_tf_layer_norm_{'f16' if dtype == torch.float16 else 'f32'}"
    module = emulated_module("token_fusion")
    with emulated_kernels():
        with torch.no_grad():
            before = module.launches.get(kernel, 0)
            got = model(images)
            assert module.launches.get(kernel, 0) - before == 2 * len(model.blocks)
            set_lowering(model, "portable")
            expected = model(images)
            set_lowering(model, "eager")
        model(images)  # with gradients: torch's ops
    assert module.launches.get(kernel, 0) - before == 2 * len(model.blocks)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    error = (got.float() - expected.float()).abs().max() / expected.float().abs().max()
    assert error <= tol, error


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("tokens_type", ["transformer", "performer"])
def test_t2t_token_norm_feeds_the_product_aligned_rows(
    tokens_type: str, dtype: torch.dtype, _emulator: None
) -> None:
    """On the kernel path T2T-ViT's first token block (147 channels) runs norm1 as the row-norm kernel with
    its rows zero-padded to 16 bytes (148 float32 / 152 float16 channels), its qkv product on those rows
    with a zero-padded weight, and norm2 (64 channels) on the row-norm kernel too: two launches. It gives
    the reference path's output within 1e-5 (float32; the norms' sums in another order) / 1e-2 (float16)
    relative. The padded weight is built once, and again after an in-place change of the weights (as
    load_state_dict makes); exports (set_lowering "portable") and gradients keep torch's norms and the
    unpadded product."""
    from vitrt.models.t2t_vit import T2TModule
    from vitrt.plugins.lowering import set_lowering

    torch.manual_seed(0)
    block = T2TModule(64, tokens_type, 32).attention1.eval().to(dtype)
    products = block.attn.qkv if tokens_type == "transformer" else block.kqv
    x = (torch.randn(2, 50, 147, generator=torch.Generator().manual_seed(6)) * 2 + 1).to(dtype)
    widths: list[int] = []
    products.register_forward_pre_hook(lambda _m, args: widths.append(args[0].shape[-1]))
    kernel = f"vitrt_tf_layer_norm_{'f16' if dtype == torch.float16 else 'f32'}"
    module = emulated_module("token_fusion")
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for scale in (1.0, 0.5):
        with torch.no_grad():
            products.weight.mul_(scale)  # the second round: the padded weight is stale
            expected = block(x)
            with emulated_kernels():
                before = module.launches.get(kernel, 0)
                got = block(x)
                assert module.launches.get(kernel, 0) - before == 2
                set_lowering(block, "portable")
                exported = block(x)
                set_lowering(block, "eager")
        error = (got.float() - expected.float()).abs().max() / expected.float().abs().max()
        assert error <= tol, error
        assert torch.equal(exported, expected)
    with emulated_kernels():
        before = module.launches.get(kernel, 0)
        with_grad = block(x)
        assert module.launches.get(kernel, 0) == before
    assert torch.equal(with_grad.detach(), expected)
    assert widths == [147] * 5  # the padded product does not call the Linear module: only the others did


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("tokens_type", ["transformer", "performer"])
def test_t2t_soft_splits_and_norms_are_one_kernel(
    tokens_type: str, dtype: torch.dtype, _emulator: None
) -> None:
    """On the kernel path T2T-ViT's token module runs each soft split and the token block's norm1 as one
    ``unfold_layer_norm`` kernel (two launches: the image, then the first block's tokens read in place) and
    gives the reference path's output within 1e-5 (float32) / 1e-2 (float16) relative; with
    ``T2TModule.fused_splits`` off it copies the patches out first (no such launch) and gives the fused
    module's output within the same tolerances (the 576-channel norm sums in another order unfused: its
    vector path; check_unfold_layer_norm checks the 147-channel rows bit for bit)."""
    from vitrt.models.t2t_vit import T2TModule

    torch.manual_seed(0)
    t2t = T2TModule(64, tokens_type, 32).eval().to(dtype)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7)).to(dtype)
    kernel = f"vitrt_tf_unfold_layer_norm_{'f16' if dtype == torch.float16 else 'f32'}"
    module = emulated_module("token_fusion")
    with torch.no_grad():
        expected = t2t(images)
        with emulated_kernels():
            before = module.launches.get(kernel, 0)
            got = t2t(images)
            assert module.launches.get(kernel, 0) - before == 2
            T2TModule.fused_splits = False
            try:
                unfused = t2t(images)
            finally:
                T2TModule.fused_splits = True
            assert module.launches.get(kernel, 0) - before == 2
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for other in (expected, unfused):
        error = (got.float() - other.float()).abs().max() / other.float().abs().max()
        assert error <= tol, error


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["mctf", {"r": 8}], ids=["mctf", "mctf_r8"])
def test_float16_model_reads_q_and_k_in_one_kernel(fusion: object, _emulator: None) -> None:
    """A float16 fused model (head dim 32) computes every fused block's info with the kernel that reads q
    and k (one launch and one mean per fusing block, no q k^T), and gives the logits of the path it
    replaced (q k^T rounded to float16, then the logits kernel) within float16's 1e-2 relative on all but
    at most two of 8 images (a block's decision may flip on the logits' rounding: these random-weight
    models are far more sensitive than trained ones), with a median within 3e-3."""
    from unittest import mock

    from vitrt.plugins.token_fusion import cuda as tf_cuda

    model = _model(fusion, embed_dim=64).half()
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(5)).half()
    module = emulated_module("token_fusion")
    with torch.no_grad(), emulated_kernels():
        before = dict(module.launches)
        got = model(images)
        launched = {k: v - before.get(k, 0) for k, v in module.launches.items() if v != before.get(k, 0)}
        with mock.patch.object(tf_cuda, "info_qk_applies", lambda *args: False):
            replaced = model(images)
    fusing = sum(1 for n_in, n_out in itertools.pairwise(model.token_schedule()) if n_out < n_in)
    assert launched.get("vitrt_tf_attention_info_qk2_f16") == fusing, launched
    assert launched.get("vitrt_tf_info_mean_f16") == fusing, launched
    assert not any(name.startswith("vitrt_tf_attention_info8") for name in launched), launched
    assert launched.get("vitrt_tf_layer_norm_f16") == 2 * len(model.blocks) - fusing, launched  # see above
    error = (got.float() - replaced.float()).abs().amax(dim=1) / replaced.float().abs().amax(dim=1)
    assert int((error > 1e-2).sum()) <= 2 and float(error.median()) <= 3e-3, error


def test_tome_metric_rides_on_the_qkv_projection(_emulator: None) -> None:
    """On the kernel path a ToMe block takes its metric, the keys' mean over heads, from E more rows of the
    qkv projection: no mean is launched, the metric equals torch's mean within 1e-5 (float32), the block
    gives the reference path's output within 1e-5, and after an in-place change of the weights (as
    load_state_dict makes) the extended weight is built again."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Means(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            Means.count += func.overloadpacket.__name__ == "mean"
            return func(*args, **(kwargs or {}))

    model = _model({"preset": "tome", "r": 8})
    block = next(b for b in model.blocks if isinstance(b, FusionBlock))
    x = torch.randn(2, 65, 32, generator=torch.Generator().manual_seed(4))
    h = block.norm1(x)
    for scale in (1.0, 2.0):
        with torch.no_grad():
            block.attn.qkv.weight.mul_(scale)  # the second round: the cached weight is stale
            q, k, v, mean = block._qkv_kernel_path(h, False, True, True)
            torch.testing.assert_close(mean, k.mean(dim=1), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(torch.stack((q, k, v)), torch.stack(block.attn.split_heads(h)))
            expected, _ = block(x)
            with emulated_kernels(), Means():
                got, _ = block(x)
        assert Means.count == 0
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@contextlib.contextmanager
def _sdpa_masks() -> Iterator[list[bool]]:
    """A list that receives, for every ``scaled_dot_product_attention`` a FusionBlock calls in the
    context, whether it was given a mask."""
    from unittest import mock

    from vitrt.plugins.token_fusion import module as tf_module

    sdpa = F.scaled_dot_product_attention
    masks: list[bool] = []

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        masks.append(kwargs.get("attn_mask") is not None)
        return sdpa(*args, **kwargs)

    with mock.patch.object(tf_module.F, "scaled_dot_product_attention", spy):
        yield masks


@pytest.mark.parametrize("qkv_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("head_dim", [64, 24])
def test_folded_bias_is_the_masked_attention(head_dim: int, qkv_bias: bool) -> None:
    """Proportional attention with its bias log(size) in the keys (``FusionBlock._qkv_kernel_path`` with
    the fold, then ``_fold_log_size``): q and k come out of one product ``_folded_dim`` wide, their first E
    channels equal the plain projection's, and SDPA of the folded q, k with no mask equals SDPA with the
    mask log(size) within 1e-5 (float32), with and without a qkv bias (T2T-ViT's blocks have none) and
    for a head dim whose scale is not a power of two (24)."""
    from vitrt.models.layers import Attention, Block

    heads = 2
    block = Block(heads * head_dim, heads, qkv_bias=qkv_bias)
    fused = FusionBlock(block, next(b.config for b in _model("mctf").modules() if isinstance(b, FusionBlock)))
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in fused.parameters():
            p.normal_(0, 0.2, generator=g)
    assert isinstance(fused.attn, Attention)
    h = torch.randn(3, 37, heads * head_dim, generator=g)
    size = torch.randint(1, 9, (3, 37), generator=g).float()
    with torch.no_grad():
        q, k, v = fused.attn.split_heads(h)
        fq, fk, fv, mean = fused._qkv_kernel_path(h, True, True, False)
        assert fv is not None and mean is None
        assert fq.shape[-1] == fused._folded_dim() and fused._folded_dim() % 8 == 0
        torch.testing.assert_close(
            torch.stack((fq[..., :head_dim], fk[..., :head_dim], fv)), torch.stack((q, k, v))
        )
        fused._fold_log_size(fk, size.log()[:, None, None, :])
        scale = fused.attn.scale
        got = F.scaled_dot_product_attention(fq, fk, fv, scale=scale)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=size.log()[:, None, None, :], scale=scale)
    torch.testing.assert_close(got, want, **F32)


@pytest.mark.parametrize("fusion", ["mctf", {"preset": "tome", "r": 8}], ids=["mctf", "tome"])
def test_folded_bias_model_equals_the_masked_one_float32(fusion: object, _emulator: None) -> None:
    """The fold's wiring in whole models, where float32 leaves only summation-order differences: with
    float32 allowed to fold (``fold_bias_dtypes``) from batch 1, a fused model on the kernel path gives
    the masked path's logits within 1e-5, SDPA is never given a mask, and the model still pickles whole
    (``torch.save``) after the fold built its projection cache, and gives the same logits unpickled."""
    import pickle
    from unittest import mock

    model = _model(fusion, embed_dim=128)  # head dim 64
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), emulated_kernels():
        expected = model(images)
        with (
            mock.patch.object(FusionBlock, "fold_bias_dtypes", (torch.float32,)),
            mock.patch.object(FusionBlock, "fold_bias_min_batch", 1),
            _sdpa_masks() as masks,
        ):
            got = model(images)
            again = pickle.loads(pickle.dumps(model))(images)
    assert masks and not any(masks), masks
    torch.testing.assert_close(got, expected, **F32)
    assert torch.equal(again, got)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["mctf", {"preset": "tome", "r": 8}], ids=["mctf", "tome"])
def test_float16_model_folds_the_bias_from_batch_8(fusion: object, _emulator: None) -> None:
    """On the float16 kernel path, from ``fold_bias_min_batch`` images (8) up, every attention with
    proportional attention's bias gets it in the keys: SDPA is never given a mask, and the logits equal
    the masked path's within float16's 1e-2 relative on all but at most two of 8 images (later blocks' fusion
    decisions may flip on the rounding of the attention outputs), with a median within 3e-3; below it,
    every such attention takes the mask."""
    from unittest import mock

    model = _model(fusion, embed_dim=128).half()  # head dim 64, as DeiT-S
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(5)).half()
    with torch.no_grad(), emulated_kernels(), _sdpa_masks() as masks:
        got = model(images)
        folded = masks[:]
        masks.clear()
        with mock.patch.object(FusionBlock, "fold_bias_min_batch", 9):
            expected = model(images)
    assert folded and not any(folded), folded
    assert sum(masks) >= 2, masks  # the same attentions, masked
    error = (got.float() - expected.float()).abs().amax(dim=1) / expected.float().abs().amax(dim=1)
    assert int((error > 1e-2).sum()) <= 2 and float(error.median()) <= 3e-3, error


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["mctf", "tome"])
def test_gpu_benchmark_previous_path(fusion: str, _emulator: None) -> None:
    """``benchmarks/gpu_models.previous_path`` (the same-run baseline of the GPU timings, which only a GPU
    session runs) on the emulator: inside it the model launches none of the kernels that replaced the old
    path (the add + norm kernel; in float16 the q, k info kernel) and gives the kernel path's logits within
    1e-5 (float32); after it, the model takes the kernel path again, bit for bit."""
    import copy
    import importlib.util
    from pathlib import Path

    import vitrt

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_models.py"
    spec = importlib.util.spec_from_file_location("gpu_models", path)
    assert spec is not None and spec.loader is not None
    gpu_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_models)
    model = vitrt.create_model("deit_tiny_patch16_224", fusion=fusion, img_size=96)
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    module = emulated_module("token_fusion")
    with torch.inference_mode(), emulated_kernels():
        now = model(images)
        start = dict(module.launches)
        half = copy.deepcopy(model).half()
        with gpu_models.previous_path(model), gpu_models.previous_path(half):
            before = model(images)
            half(images.half())
        launched = {k: v - start.get(k, 0) for k, v in module.launches.items() if v != start.get(k, 0)}
        again = model(images)
    assert launched.get("vitrt_tf_merge_f32", 0) > 0 and launched.get("vitrt_tf_merge_f16", 0) > 0, launched
    assert not any(k.startswith(("vitrt_tf_layer_norm", "vitrt_tf_attention_info_qk")) for k in launched)
    torch.testing.assert_close(before, now, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, now)
