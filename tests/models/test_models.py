"""Model zoo: official layouts, parameter counts, checkpoints, preprocessing, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vitrt.errors import CheckpointError, ConfigError
from vitrt.models import create_model, list_models, load_checkpoint, read_state_dict, register_model_option
from vitrt.models.layers import trunc_normal_
from vitrt.models.t2t_vit import check_img_size, soft_split_grid

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
# From the official code (issue 2): all parameters, frozen `w` and `pos_embed` included.
PARAM_COUNTS = {
    "t2t_vit_7": 4_310_222,
    "t2t_vit_10": 5_889_230,
    "t2t_vit_12": 6_941_902,
    "t2t_vit_14": 21_545_550,
    "t2t_vit_19": 39_177_422,
    "t2t_vit_24": 64_105_934,
    "t2t_vit_t_14": 21_541_070,
    "t2t_vit_t_19": 39_172_942,
    "t2t_vit_t_24": 64_101_454,
    # timm's VisionTransformer
    "deit_tiny_patch16_224": 5_717_416,
    "deit_small_patch16_224": 22_050_664,
    "deit_base_patch16_224": 86_567_656,
}


def test_registry_lists_every_model() -> None:
    assert list_models() == sorted(PARAM_COUNTS)
    assert list_models("t2t_vit_t_*") == ["t2t_vit_t_14", "t2t_vit_t_19", "t2t_vit_t_24"]


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count_and_official_layout(name: str) -> None:
    with torch.device("meta"):  # shapes only: no weights allocated or initialised (deit_base: 87 M)
        model = create_model(name)
    assert {t.device.type for t in model.state_dict().values()} == {"meta"}  # T2T's sinusoid table too
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
    # Key order and shapes recorded from the official T2T-ViT code and timm (see test_official_equivalence).
    layout = json.loads((FIXTURES / "official_state_dict_layout.json").read_text())[name]
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == layout


def _small(name: str = "t2t_vit_7", **kwargs: object) -> torch.nn.Module:
    return create_model(name, img_size=64, num_classes=10, **kwargs)


def _wrap(layout: str, state: dict[str, torch.Tensor]) -> object:
    if layout == "raw":
        return state
    if layout == "module.":
        return {f"module.{k}": v for k, v in state.items()}
    return {layout: state, "epoch": 3, "arch": "t2t_vit_7"}


@pytest.mark.parametrize("layout", ["state_dict_ema", "state_dict", "model", "raw", "module."])
@pytest.mark.parametrize("suffix", [".pth", ".pth.tar", ".safetensors"])
def test_checkpoint_round_trip(tmp_path: Path, layout: str, suffix: str) -> None:
    src = _small().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = src(x)
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        if layout not in ("raw", "module."):
            pytest.skip("safetensors files hold a flat tensor dict only")
        save_file({k: v.contiguous() for k, v in _wrap(layout, src.state_dict()).items()}, str(path))  # type: ignore[union-attr]
    else:
        torch.save(_wrap(layout, src.state_dict()), path)
    torch.manual_seed(123)  # a different random init, so a no-op load would fail the comparison
    dst = load_checkpoint(_small(), path)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), expected, atol=0, rtol=0)


def test_performer_matrix_and_pos_embed_come_from_the_checkpoint() -> None:
    src = _small()
    torch.manual_seed(99)
    dst = _small()
    w = "tokens_to_token.attention1.w"
    assert not torch.equal(src.state_dict()[w], dst.state_dict()[w])
    load_checkpoint(dst, {"state_dict_ema": src.state_dict()})
    torch.testing.assert_close(dst.state_dict()[w], src.state_dict()[w], atol=0, rtol=0)
    pos = src.state_dict()["pos_embed"] * 2  # a checkpoint's table wins over the sinusoid default
    load_checkpoint(dst, {**src.state_dict(), "pos_embed": pos})
    torch.testing.assert_close(dst.pos_embed.detach(), pos, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["t2t_vit_7", "t2t_vit_t_14", "deit_tiny_patch16_224"])
def test_batch_independence(name: str) -> None:
    model = create_model(name, img_size=64 if name.startswith("t2t") else 224, num_classes=10)
    x = torch.randn(3, *model.preprocess.input_size)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("std", "a", "b"), [(0.02, -0.04, 0.04), (1.0, -0.5, 2.0)])
def test_truncated_normal_init_draws_the_truncated_normal(std: float, a: float, b: float) -> None:
    # Reference: the truncated normal's CDF from its definition, (Phi(x/std) - Phi(a/std)) / (Phi(b/std) -
    # Phi(a/std)), in float64. Kolmogorov-Smirnov distance of 10^6 draws: P(D > 0.003) ~ 2 exp(-18) = 3e-8.
    x = trunc_normal_(torch.empty(1000, 1000), std=std, a=a, b=b).double().flatten().sort().values
    assert a <= x[0] and x[-1] <= b
    lo, hi = (torch.special.ndtr(torch.tensor(v / std, dtype=torch.float64)) for v in (a, b))
    cdf = (torch.special.ndtr(x / std) - lo) / (hi - lo)
    n = x.numel()
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    distance = torch.maximum(ranks / n - cdf, cdf - (ranks - 1) / n).max()
    assert distance < 3e-3
    model = create_model("deit_tiny_patch16_224")
    for p in (model.pos_embed, model.cls_token, model.blocks[0].mlp.fc1.weight):
        assert p.abs().max() <= 0.04 and 0.015 < p.std() < 0.02  # truncated at +-2 std: std 0.88 x 0.02


def test_t2t_vit_14_at_384() -> None:
    model = create_model("t2t_vit_14", img_size=384)
    assert model.tokens_to_token.grid == [96, 48, 24]
    assert model.token_schedule()[0] == 24 * 24 + 1
    assert model.pos_embed.shape == (1, 577, 384)
    assert model.preprocess.input_size == (3, 384, 384)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 384, 384))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_soft_split_sizes() -> None:
    assert soft_split_grid(224) == [56, 28, 14]
    for ok in (32, 64, 224, 384):
        check_img_size(ok)
    with pytest.raises(ConfigError, match=r"img_size 70 .*sizes close to it that work: \[.*64.*\]"):
        create_model("t2t_vit_7", img_size=70)
    with pytest.raises(
        ConfigError, match="img_size 100 is not a positive multiple of the patch size 16; use 96 or 112"
    ):
        create_model("deit_tiny_patch16_224", img_size=100)


SIZE_CASES = [
    ("deit_tiny_patch16_224", 0, "img_size 0 is not a positive multiple of the patch size 16; use 16$"),
    (
        "deit_tiny_patch16_224",
        -32,
        "img_size -32 is not a positive multiple of the patch size 16; use 16$",
    ),
    ("deit_tiny_patch16_224", 8, "img_size 8 is not a positive multiple of the patch size 16; use 16$"),
    (
        "t2t_vit_7",
        0,
        r"img_size 0 is below T2T-ViT's smallest input, 16 pixels .*work: \[16, 17, 18, 32, 33, 34\]",
    ),
    ("t2t_vit_7", -32, r"img_size -32 is below T2T-ViT's smallest input, 16 pixels .*work: \[16, 17,"),
    ("t2t_vit_7", 8, r"img_size 8 is below T2T-ViT's smallest input"),
    ("t2t_vit_7", 64.0, "img_size must be a whole number of pixels such as 224, got 64.0"),
    ("deit_tiny_patch16_224", True, "img_size must be a whole number of pixels such as 224, got True"),
]


@pytest.mark.parametrize(("name", "img_size", "message"), SIZE_CASES)
def test_sizes_a_model_cannot_take_name_sizes_that_work(name: str, img_size: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model(name, img_size=img_size)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "img_size", "message"), SIZE_CASES)
def test_check_img_size_is_the_constructors_rule_without_building(
    name: str, img_size: object, message: str
) -> None:
    from vitrt.models.registry import check_img_size as check

    with pytest.raises(ConfigError, match=message):
        check(name, img_size)
    assert check("deit_tiny_patch16_224", 48) == 48 and check("t2t_vit_7", 17) == 17


def test_create_model_refuses_a_module_a_wrong_type_and_an_unknown_keyword() -> None:
    model = _small()
    with pytest.raises(
        ConfigError,
        match=r"^create_model takes a model name \(vitrt list-models\); you passed a built model \(T2TViT\)",
    ):
        create_model(model)  # type: ignore[arg-type]
    for value in ("10", -1, 2.0, True):
        with pytest.raises(ConfigError, match=rf"^num_classes must be a whole number >= 0 .*got {value!r}$"):
            create_model("t2t_vit_7", num_classes=value)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError,
        match=r"^t2t_vit_7 has no option 'foo'; create_model takes num_classes, img_size, fusion, attention "
        r"and the architecture overrides attn_drop_rate, drop_path_rate, drop_rate, in_chans, qk_scale, "
        r"qkv_bias, token_dim$",
    ):
        create_model("t2t_vit_7", foo=1)
    with pytest.raises(ConfigError, match="deit_tiny_patch16_224 has no option 'depth'"):  # fixed by the name
        create_model("deit_tiny_patch16_224", depth=2)
    model = create_model("deit_tiny_patch16_224", img_size=32, num_classes=0, drop_path_rate=0.1)
    assert (model.img_size, model.num_classes, model.blocks[-1].drop_path.p) == (32, 0, pytest.approx(0.1))


def test_load_checkpoint_names_its_signature_for_arguments_of_the_wrong_kind(tmp_path: Path) -> None:
    model = _small()
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"^load_checkpoint\(model, checkpoint\) takes the built model first, got '.*w.pth'; the "
        r"arguments are swapped. Fix: load_checkpoint\(model, checkpoint\)$",
    ):
        load_checkpoint(str(path), model)  # type: ignore[arg-type]
    with pytest.raises(
        CheckpointError,
        match=r"got 't2t_vit_7' and a checkpoint. Fix: load_checkpoint\(vitrt.create_model\(name, ...\), ",
    ):
        load_checkpoint("t2t_vit_7", path)  # type: ignore[arg-type]
    with pytest.raises(
        CheckpointError, match=r"takes a checkpoint file .* or a state dict second, got a int"
    ):
        load_checkpoint(model, 3)  # type: ignore[arg-type]


def test_the_smallest_suggested_sizes_run() -> None:
    for name, size in (("deit_tiny_patch16_224", 16), ("t2t_vit_7", 16), ("t2t_vit_7", 17)):
        model = create_model(name, img_size=size)
        with torch.no_grad():
            out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("img_size", [224, 64])
def test_gpu_forms_of_the_soft_splits_and_patch_embedding_equal_the_official_ops(img_size: int) -> None:
    """What the models run eagerly on CUDA (unfold_rows; the patch conv as a GEMM) against what they run
    elsewhere (nn.Unfold then transpose; the conv): the soft splits bit for bit (pure data movement), the
    patch embedding within 1e-12 relative in float64 (the products are summed in another order)."""
    from vitrt.models.layers import unfold_rows, unfold_token_rows
    from vitrt.models.t2t_vit import SOFT_SPLITS

    t2t = create_model("t2t_vit_t_14", img_size=img_size).tokens_to_token
    g = torch.Generator().manual_seed(img_size)
    channels, side = 3, img_size
    for i, (k, s, p) in enumerate(SOFT_SPLITS):
        x = torch.randn(2, channels, side, side, generator=g)
        want = getattr(t2t, f"soft_split{i}")(x).transpose(1, 2)
        got = unfold_rows(x, k, s, p)
        assert got.is_contiguous() and torch.equal(got, want)
        if i > 0:  # the stages after the first split their tokens [B, side^2, C] where they lie
            tokens = x.flatten(2).transpose(1, 2).contiguous()
            assert torch.equal(t2t.soft_split(i, tokens), want)  # a CPU tensor: the official ops
            assert torch.equal(unfold_token_rows(tokens, side, k, s, p), want)
        channels, side = 64, t2t.grid[i]

    deit = create_model("deit_small_patch16_224", img_size=img_size).double()
    x = torch.randn(2, 3, img_size, img_size, generator=g, dtype=torch.float64)
    with torch.no_grad():
        conv = deit.patch_embed(x)  # a CPU tensor: the conv
        got = deit.patch_embed.as_gemm(x)
    torch.testing.assert_close(got, conv, rtol=1e-12, atol=1e-12 * float(conv.abs().max()))


def test_preprocessing_config() -> None:
    for name in list_models():
        with torch.device("meta"):
            pre = create_model(name, img_size=64 if name.startswith("t2t") else 224).preprocess
        assert pre.crop_pct == 0.9 and pre.interpolation == "bicubic"
        assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)


def test_unknown_model_lists_close_names() -> None:
    with pytest.raises(ConfigError, match="t2t_vit_14") as err:
        create_model("t2t_vit14")
    assert "unknown model 't2t_vit14'" in str(err.value)


def test_checkpoint_mismatch_lists_keys_and_shapes() -> None:
    state = _small().state_dict()
    state.pop("head.weight")
    state["extra.weight"] = torch.zeros(1)
    state["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    for i in range(12):
        state[f"junk.{i}"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_small(), state)
    msg = str(err.value)
    assert "missing keys (1): head.weight" in msg
    assert "unexpected keys (13)" in msg and "(and 3 more)" in msg
    assert "blocks.0.attn.qkv.weight (3, 3) vs model (768, 256)" in msg
    assert msg.endswith(
        "Fix: the model name and img_size/num_classes the checkpoint was trained with (in Python, "
        "load_checkpoint(..., strict=False) loads what matches)"
    )
    model = load_checkpoint(_small(), state, strict=False)
    assert len(model.load_report) == 3


def test_wrong_model_for_checkpoint() -> None:
    with pytest.raises(CheckpointError, match="does not match t2t_vit_t_14"):
        load_checkpoint(create_model("t2t_vit_t_14", img_size=64), _small().state_dict())


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        read_state_dict(text)
    fake = tmp_path / "w.safetensors"
    fake.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(fake)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    pickled = tmp_path / "obj.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match="will not unpickle"):
        read_state_dict(pickled)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(CheckpointError, match="no tensors found"):
        read_state_dict(empty)


def test_training_mode_backpropagates() -> None:
    model = create_model("t2t_vit_t_14", img_size=64, num_classes=10, drop_path_rate=0.1).train()
    loss = model(torch.randn(2, 3, 64, 64)).logsumexp(-1).mean()
    loss.backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert model.tokens_to_token.attention1.attn.qkv.weight.grad is not None


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "cut.pth.tar"
    torch.save({"state_dict_ema": _small().state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        read_state_dict(path)


def test_models_import_no_op_code_and_name_the_fix_for_a_missing_option() -> None:
    # A fresh interpreter: in this one, other tests have loaded the op packages already.
    script = """
        import sys
        from vitrt.errors import ConfigError
        from vitrt.models import create_model
        create_model("deit_tiny_patch16_224", img_size=32, attention="dense")  # the off values need no op
        assert not [m for m in sys.modules if m.startswith("vitrt.plugins.")], sorted(sys.modules)
        try:
            create_model("deit_tiny_patch16_224", img_size=32, fusion="mctf")
        except ConfigError as err:
            print(err)
        import vitrt
        print(vitrt.create_model("deit_tiny_patch16_224", img_size=64, fusion="mctf").token_schedule())
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "create_model(fusion=...) needs the op package that provides 'fusion'" in out
    assert "Fix: call vitrt.create_model" in out
    assert out.splitlines()[-1] == str([17, 17] + [10] * 11)  # fused after the first block


def test_model_options_are_registered_once() -> None:
    import vitrt
    from vitrt.plugins.token_fusion.integration import apply_fusion

    vitrt.plugins.load_model_options()
    register_model_option("fusion", apply_fusion)  # the same function again: a no-op
    with pytest.raises(ValueError, match="registered twice"):
        register_model_option("fusion", lambda model, value: None)
    with pytest.raises(ValueError, match="unknown model option 'depth'"):
        register_model_option("depth", apply_fusion)
