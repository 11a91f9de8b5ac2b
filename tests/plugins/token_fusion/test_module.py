"""FusionBlock inside models: weights unchanged, invariants, precision, gradients, export.

Small models keep this fast on 2 CPU cores: a DeiT-like net with 8-pixel patches on 64-pixel images
(65 tokens, 4 blocks, width 32) and t2t_vit_7 at 64 pixels. Tolerances: 1e-5 for float32 paths that
differ only in summation order; 1e-4 for ONNX Runtime against PyTorch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from vitrt import create_model
from vitrt.models.deit import VisionTransformer
from vitrt.models.layers import Block
from vitrt.plugins.token_fusion.config import FusionBlockConfig
from vitrt.plugins.token_fusion.integration import apply_fusion
from vitrt.plugins.token_fusion.module import FusionBlock, TokenFusionOp
from vitrt.plugins.token_fusion.reference import merge_attention, tome_merge
from vitrt.plugins.token_fusion.spec import INPUT_NAMES, OUTPUT_NAMES, TokenFusionAttrs

F32 = {"atol": 1e-5, "rtol": 1e-5}
MODES = [{"one_step_ahead": 1}, {"one_step_ahead": 2}, {"one_step_ahead": 0}, {"preset": "tome", "r": 8}]


def _small(qkv_bias: bool = True, fusion: object = None) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=64, patch_size=8, num_classes=10, embed_dim=32, depth=4, num_heads=2, qkv_bias=qkv_bias
    )
    # larger weights than the 0.02 init, so attention (and thus the fusion decisions) is not uniform
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.2)
    if fusion is not None:
        apply_fusion(model, fusion)
    return model.eval()


def _images(b: int = 2, side: int = 64) -> torch.Tensor:
    return torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(7))


def test_r0_block_is_the_plain_block() -> None:
    block = Block(32, 2, qkv_bias=True).eval()
    x = torch.randn(2, 20, 32)
    fused = FusionBlock(block, FusionBlockConfig(r=0)).eval()
    out, size = fused(x, None)
    assert size is None
    torch.testing.assert_close(out, block(x, None)[0], **F32)
    assert fused.num_tokens_out(20) == 20


def test_r0_config_leaves_model_unchanged() -> None:
    plain, zero = _small(), _small(fusion={"r": 0})
    assert not any(isinstance(b, FusionBlock) for b in zero.blocks)
    x = _images()
    torch.testing.assert_close(zero(x), plain(x), atol=0, rtol=0)


def test_state_dict_keys_unchanged() -> None:
    plain, fused = _small(), _small(fusion="mctf")
    assert isinstance(fused.blocks[1], FusionBlock) and not isinstance(fused.blocks[0], FusionBlock)
    assert list(plain.state_dict()) == list(fused.state_dict())
    fused.load_state_dict(plain.state_dict())  # strict


@pytest.mark.parametrize("options", MODES, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_modes_schedule_sizes_and_class_token(options: dict[str, object]) -> None:
    model = _small(fusion={"r": 8, **options})
    x = _images()
    with torch.no_grad():
        tokens, size = model.forward_blocks(model.embed(x))
    schedule = model.token_schedule()
    assert tokens.shape[1] == schedule[-1] < schedule[0] == 65
    assert size is not None and size.shape == (2, schedule[-1])
    torch.testing.assert_close(size.sum(-1), torch.full((2,), 65.0))  # every patch is counted once
    assert (size[:, 0] == 1).all()  # the class token is never merged
    assert torch.isfinite(model(x)).all()


def test_schedule_matches_forward_per_block() -> None:
    model = _small(fusion={"r": [0, 0.3, 5, 12]})
    x = model.embed(_images())
    counts, size = [x.shape[1]], None
    with torch.no_grad():
        for blk in model.blocks:
            x, size = blk(x, size)
            counts.append(x.shape[1])
    assert counts == model.token_schedule() == [65, 65, 46, 41, 29]


def test_batch_independence() -> None:
    model = _small(fusion="mctf")
    x = _images(b=3)
    with torch.no_grad():
        full = model(x)
        for i in range(3):
            torch.testing.assert_close(full[i : i + 1], model(x[i : i + 1]), **F32)


def test_tome_block_placement() -> None:
    """ToMe: attention with proportional attention, merge (keys as metric) before the MLP."""
    block = Block(32, 2, qkv_bias=True).eval()
    cfg = FusionBlockConfig(
        r=6,
        tau_info=0,
        tau_size=0,
        bidirectional=False,
        pooling=0,
        one_step_ahead=0,
        metric="keys",
        merge_after="attention",
    )
    fused = FusionBlock(block, cfg).eval()
    x = torch.randn(2, 21, 32)
    size = torch.randint(1, 4, (2, 21)).float()
    with torch.no_grad():
        out, out_size = fused(x, size)
        h = block.norm1(x)
        q, k, v = block.attn.split_heads(h)
        attn = ((q * block.attn.scale) @ k.transpose(-2, -1) + size.log()[:, None, None, :]).softmax(-1)
        x1 = x + block.attn.merge_heads(attn @ v)
        x_f, size_f = tome_merge(x1, k.mean(1), size, r=6)
        expected = x_f + block.mlp(block.norm2(x_f))
    torch.testing.assert_close(out, expected, **F32)
    torch.testing.assert_close(out_size, size_f)


def test_float16_no_nan() -> None:
    model = _small(fusion="mctf")
    x = _images()
    with torch.no_grad():
        ref = model(x)
        half = model.half()(x.half())
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("options", MODES, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_gradients_flow(options: dict[str, object]) -> None:
    model = _small(fusion={"r": 8, **options}).train()
    loss = model(_images()).logsumexp(-1).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if ".attn.qkv." in name or ".mlp." in name:
            assert p.grad.abs().sum() > 0, name


def test_t2t_vit_with_mctf() -> None:
    """T2T-ViT blocks have no qkv bias (the official MCTF attention assumes one)."""
    torch.manual_seed(0)
    model = create_model("t2t_vit_7", img_size=64, fusion={"r": 3})
    assert model.blocks[0].attn.qkv.bias is None
    assert model.token_schedule() == [17, 17, 14, 11, 10, 10, 10, 10]
    x = _images()
    out = model.train()(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and model.blocks[3].attn.qkv.weight.grad is not None
    # no bias behaves as a zero bias
    no_bias, zero_bias = _small(qkv_bias=False, fusion="mctf"), _small(qkv_bias=True, fusion="mctf")
    state = no_bias.state_dict()
    state.update(
        {k: torch.zeros_like(v) for k, v in zero_bias.state_dict().items() if k.endswith("qkv.bias")}
    )
    zero_bias.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(no_bias(x), zero_bias(x), **F32)


def test_torch_export_of_fused_model() -> None:
    """Static token counts, dynamic batch: the fused model exports as one graph."""
    model = _small(fusion="mctf")
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (_images(),), dynamic_shapes={"x": {0: batch}})
    x = _images(b=3)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), **F32)


@pytest.mark.parametrize("lowering", ["portable", "plugin"])
def test_exported_one_step_ahead_attention_is_reassociated(
    lowering: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exported graphs (any lowering but eager) compute the one-step-ahead attention as merge(A V'[dest])
    (``FusionBlock._attend_merged``), never forming the merged [B, H, N', N'] matrix, and give the logits of
    eager's merged form (the official code's) within 1e-5 relative in float32 (the reassociated sums round
    differently; the fusion decisions come before and are the same). ``export_merged_matrix`` brings the
    merged form back, with the same logits as eager."""
    from vitrt.plugins.lowering import set_lowering
    from vitrt.plugins.token_fusion import module

    calls: list[tuple[int, ...]] = []

    def counted(attn: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(tuple(attn.shape))
        return merge_attention(attn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "merge_attention", counted)
    model = _small(fusion={"r": 8, "one_step_ahead": 1})
    fusing = sum(isinstance(b, FusionBlock) for b in model.blocks)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        eager = model(x)
        assert len(calls) == fusing >= 2
        set_lowering(model, lowering)
        reassociated = model(x)
        assert len(calls) == fusing  # no merged matrix
        monkeypatch.setattr(FusionBlock, "export_merged_matrix", True)
        merged = model(x)
        assert len(calls) == 2 * fusing
    scale = eager.abs().max()
    assert (reassociated - eager).abs().max() / scale <= 1e-5
    assert (merged - eager).abs().max() / scale <= 1e-6


def _ort_outputs(path: Path, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {k: v.numpy() for k, v in feeds.items()})]


@pytest.mark.parametrize("method", ["scatter", "onehot"])
def test_onnx_export_of_the_op(tmp_path: Path, method: str) -> None:
    """The default (dynamo) exporter handles the reference as it is: no custom symbolic needed."""
    if importlib.util.find_spec("onnxscript") is None:
        pytest.skip("onnxscript is needed by torch's dynamo ONNX exporter")
    op = TokenFusionOp(TokenFusionAttrs(r=9), method=method)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    args = (
        torch.randn(2, 25, 16, generator=g),
        torch.randn(2, 25, 16, generator=g),
        torch.rand(2, 25, generator=g),
        torch.randint(1, 4, (2, 25), generator=g).float(),
    )
    path = tmp_path / "token_fusion.onnx"
    torch.onnx.export(
        op,
        args,
        str(path),
        dynamo=True,
        opset_version=18,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        verbose=False,
    )
    got = _ort_outputs(path, dict(zip(INPUT_NAMES, args, strict=True)))
    for o, r in zip(got, op(*args), strict=True):
        torch.testing.assert_close(o.to(r.dtype), r, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:Constant folding:UserWarning")
def test_onnx_export_of_fused_model(tmp_path: Path) -> None:
    """The whole fused model to ONNX, run by ONNX Runtime. The TorchScript exporter (dynamo=False)
    takes ~1 s here; the dynamo exporter works too (checked by hand: 3e-8 max difference) but takes
    ~10 s on 2 cores, so the op-level test above covers it."""
    model: nn.Module = _small(fusion="mctf")
    x = _images()
    path = tmp_path / "fused.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"])
    with torch.no_grad():
        torch.testing.assert_close(_ort_outputs(path, {"images": x})[0], model(x), atol=1e-4, rtol=1e-4)
