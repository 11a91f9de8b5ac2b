"""Fusion presets, the dict / dataclass forms, token schedules and configuration errors.

Only model construction here (no forward passes), so full-size models are cheap enough.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
from torch import Tensor, nn

from vitrt import create_model
from vitrt.errors import ConfigError
from vitrt.plugins.token_fusion.config import FusionConfig, parse, preset, resolve
from vitrt.plugins.token_fusion.integration import apply_fusion
from vitrt.plugins.token_fusion.module import FusionBlock

DEIT_T = "deit_tiny_patch16_224"


@pytest.fixture(scope="module")
def deit_tiny() -> nn.Module:
    return create_model(DEIT_T)


def test_mctf_schedule_deit_tiny() -> None:
    model = create_model(DEIT_T, fusion="mctf")
    assert model.token_schedule() == [197, 197, *range(181, 20, -16)]
    assert model.token_schedule()[-1] == 21 and len(model.token_schedule()) == 13
    assert not isinstance(model.blocks[0], FusionBlock)
    assert all(isinstance(b, FusionBlock) and b.config.r == 16 for b in model.blocks[1:])
    assert model.fusion_config.preset == "mctf"


def test_mctf_fast_schedule_deit_tiny() -> None:
    model = create_model(DEIT_T, fusion="mctf-fast")
    # r = int(0.35 * (N - 1)) in blocks 3, 6, 9: 196 * 0.35 = 68.6 -> 68, 128 -> 44, 84 -> 29
    assert model.token_schedule() == [197] * 4 + [129] * 3 + [85] * 3 + [56] * 3
    # blocks 4, 5, 7, ... do not fuse but are FusionBlocks: they need proportional attention
    assert [isinstance(b, FusionBlock) for b in model.blocks] == [False] * 3 + [True] * 9


def test_tome_schedule_deit_tiny() -> None:
    model = create_model(DEIT_T, fusion="tome")
    assert model.token_schedule() == [*range(197, 20, -16), 11]  # the last block is capped (21 -> 11)


def test_presets_relative_to_depth() -> None:
    model = create_model("t2t_vit_7", fusion="mctf")  # 7 blocks, 197 tokens at 224
    assert model.token_schedule() == [197, 197, 181, 165, 149, 133, 117, 101]
    fast = create_model("t2t_vit_7", fusion="mctf-fast")  # blocks 7 // 4, 7 // 2, 21 // 4 = 1, 3, 5
    assert fast.token_schedule() == [197, 197, 129, 129, 85, 85, 56, 56]
    assert preset("mctf-fast", 14).blocks == (3, 7, 10) and preset("mctf-fast", 12).blocks == (3, 6, 9)
    assert preset("mctf", 14).blocks == tuple(range(1, 14)) and preset("tome", 10).blocks == tuple(range(10))


def test_dict_and_dataclass_forms() -> None:
    a = create_model(DEIT_T, fusion={"r": 8, "blocks": [2, 4], "tau_info": 10, "one_step_ahead": 2})
    assert a.token_schedule()[:6] == [197, 197, 197, 189, 189, 181]
    assert a.blocks[2].config.tau_info == 10 and a.blocks[2].config.one_step_ahead == 2
    b = create_model(DEIT_T, fusion=FusionConfig(r={5: 0.25, 7: 20}, pooling="mean", bidirectional=False))
    assert b.token_schedule()[5:9] == [197, 148, 148, 128]
    c = create_model(DEIT_T, fusion={"preset": "tome", "r": 4})
    assert c.token_schedule()[:3] == [197, 193, 189] and c.blocks[0].config.metric == "keys"
    d = create_model(DEIT_T, fusion={"r": [0] * 11 + [12]})
    assert d.token_schedule()[-2:] == [197, 185]
    assert parse("MCTF", 12) == preset("mctf", 12)
    cfgs = resolve(parse({"r": 0.5, "blocks": [0]}, 12), 12, 197)
    assert cfgs[0].removed(197) == 98


@pytest.mark.parametrize(
    ("fusion", "message"),
    [
        ("mctff", "did you mean 'mctf'"),
        ("tom", "did you mean 'tome'"),
        ({"r": 99}, "too large"),
        ({"r": 0.7}, "fraction above 0.5"),
        ({"r": -1}, "negative"),
        ({"r": 2.5}, "whole"),
        ({"tau_info": -1}, "tau_info"),
        ({"tau_sim": -0.5}, "tau_sim"),
        ({"r": 8, "blocks": [12]}, "block 12 does not exist"),
        ({"r": {13: 4}}, "block 13 does not exist"),
        ({"r": [16] * 5}, "one per block"),
        ({"r": {1: 4}, "blocks": [1]}, "not both"),
        ({"pooling": "max"}, "pooling"),
        ({"one_step_ahead": 3}, "one_step_ahead"),
        ({"metric": "queries"}, "metric"),
        ({"merge_after": "attention"}, "one_step_ahead=0"),
        ({"tau_inf": 20}, "did you mean 'tau_info'"),
        (42, "preset name"),
    ],
)
def test_bad_config(deit_tiny: nn.Module, fusion: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_fusion(deit_tiny, fusion)
    assert not any(isinstance(b, FusionBlock) for b in deit_tiny.blocks)  # validated before changing


def test_bad_config_through_create_model() -> None:
    with pytest.raises(ConfigError, match="block 12 does not exist"):
        create_model(DEIT_T, fusion={"r": 8, "blocks": [3, 12]})


def test_fusion_needs_dense_attention(deit_tiny: nn.Module) -> None:
    class OtherCore(nn.Module):
        def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
            return v

    model = copy.deepcopy(deit_tiny)
    model.blocks[5].attn.core = OtherCore()
    with pytest.raises(ConfigError, match="dense attention"):
        apply_fusion(model, "mctf")


def test_preset_caps_instead_of_errors_on_small_inputs() -> None:
    # 17 tokens at 64 pixels: "mctf" asks r = 16, the caps take it down (presets never raise) ...
    assert create_model(DEIT_T, img_size=64, fusion="mctf").token_schedule()[:4] == [17, 17, 10, 10]
    # ... while a count of the user's own that cannot fit is an error that says what fits
    with pytest.raises(ConfigError, match="at most 7"):
        create_model(DEIT_T, img_size=64, fusion={"r": 12, "tau_info": 10})


def test_dict_round_trip() -> None:
    """A config saved as a dict (e.g. in an export manifest) builds the same model again."""
    for name in ("mctf", "mctf-fast", "tome"):
        config = preset(name, 12)
        again = parse(dataclasses.asdict(config), 12)
        assert again == config and again.preset == name
        small = create_model(DEIT_T, img_size=64, fusion=dataclasses.asdict(config))
        assert small.token_schedule() == create_model(DEIT_T, img_size=64, fusion=name).token_schedule()
