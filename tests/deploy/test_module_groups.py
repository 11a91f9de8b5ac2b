"""Module groups of vitrt node names, by hand and on real exports (every node in a named group)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vitrt.deploy.module_groups import (
    OTHER,
    ModuleGroup,
    group_nodes,
    module_group,
    part_totals,
    split_node_name,
)


@pytest.mark.parametrize(
    ("node", "group"),
    [
        ("patch_embed.proj/Conv_1", ModuleGroup("patch_embed")),
        ("tokens_to_token.soft_split2/Gather_1", ModuleGroup("tokens_to_token", "soft_split")),
        ("tokens_to_token.attention1.kqv/MatMul_1", ModuleGroup("tokens_to_token", "attention1")),
        ("tokens_to_token.attention2/ScatterbrainAttention_1", ModuleGroup("tokens_to_token", "attention2")),
        ("tokens_to_token.project/MatMul_1", ModuleGroup("tokens_to_token", "project")),
        ("tokens_to_token/Transpose_3", ModuleGroup("tokens_to_token", "reshape")),
        ("blocks.11.attn.core/Softmax_1", ModuleGroup("blocks.11", "attn")),
        ("blocks.3.mlp.act/Erf_1", ModuleGroup("blocks.3", "mlp")),
        ("blocks.3.norm2/LayerNormalization_1", ModuleGroup("blocks.3", "norm")),
        ("blocks.1.fusion/TokenFusion_1", ModuleGroup("blocks.1", "fusion")),
        ("blocks.1/TokenFusion_1", ModuleGroup("blocks.1", "fusion")),  # files exported before the scopes
        ("blocks.1.fusion/TopK_2", ModuleGroup("blocks.1", "fusion")),
        ("blocks.1.inline_attn/Softmax_1", ModuleGroup("blocks.1", "attn")),
        ("blocks.1/Add_2", ModuleGroup("blocks.1", "block")),
        ("norm/LayerNormalization_1", ModuleGroup("head", "norm")),
        ("head/Gemm_1", ModuleGroup("head", "head")),
        ("pre_logits.fc/Gemm_1", ModuleGroup("head", "pre_logits")),
        ("model/Concat_1", None),
        ("/blocks.0/attn/MatMul", OTHER),  # PyTorch's own exporter's names
        ("Conv_0", OTHER),
    ],
)
def test_module_group(node: str, group: ModuleGroup | None) -> None:
    assert module_group(node) == group


def test_split_node_name() -> None:
    assert split_node_name("blocks.3.attn.qkv/MatMul_12") == ("blocks.3.attn.qkv", "MatMul")
    assert split_node_name("blocks.1/TokenFusion_1/ort_Cast_float32") == ("blocks.1", "TokenFusion")
    assert split_node_name("Conv_0") == ("", "Conv_0")


def test_model_scope_nodes_are_placed_by_position() -> None:
    nodes = ["tokens_to_token.soft_split0/Pad_1", "model/Split_1", "tokens_to_token.attention1/Mul_1",
             "model/Concat_1", "blocks.0/Add_1", "model/Gather_1", "head/Gemm_1"]  # fmt: skip
    groups = group_nodes(nodes)
    assert groups["model/Split_1"] == ModuleGroup("tokens_to_token", "root")
    assert groups["model/Concat_1"] == ModuleGroup("tokens_to_token", "root")
    assert groups["model/Gather_1"] == ModuleGroup("head", "cls_token")
    assert group_nodes(["model/Add_1"]) == {"model/Add_1": OTHER}  # no blocks: nowhere to place it


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "lowering", "stem", "stem_parts"),
    [
        ("deit_tiny_patch16_224", "plugin", "patch_embed", {"", "root"}),
        ("deit_tiny_patch16_224", "portable", "patch_embed", {"", "root"}),
        ("t2t_vit_7", "plugin", "tokens_to_token",
         {"soft_split", "attention1", "attention2", "project", "reshape", "root"}),
    ],
)  # fmt: skip
def test_real_export_every_node_in_a_named_group(
    tmp_path: Path, model: str, lowering: str, stem: str, stem_parts: set[str]
) -> None:
    import onnx

    import vitrt

    path = vitrt.export_onnx(model, tmp_path / "m.onnx", lowering=lowering, img_size=64, fusion="mctf")
    nodes = [n.name for n in onnx.load(path).graph.node]
    groups = group_nodes(nodes)
    assert [n for n, g in groups.items() if g.group == "other"] == []
    depth = 12 if model.startswith("deit") else 7
    assert {g.group for g in groups.values()} == {stem, "head"} | {f"blocks.{i}" for i in range(depth)}
    assert {g.part for g in groups.values() if g.group == stem} == stem_parts
    assert {g.part for g in groups.values() if g.group == "head"} == {"norm", "head", "cls_token"}
    parts = Counter(g.part for g in groups.values() if g.group == "blocks.0")  # blocks.0 does not fuse
    assert set(parts) == {"attn", "mlp", "norm", "block"} and parts["norm"] == 2 and parts["block"] == 2
    # at 64 x 64 (16 patches + the class token) mctf fuses in block 1 only (17 -> 10 tokens, and at
    # least 10 stay): one TokenFusion plugin node there, or the portable lowering's ops, all in "fusion";
    # the block's inline attention is "attn", and "block" holds its two residual adds alone, as in blocks.0
    fusion = [n for n, g in groups.items() if g.part == "fusion"]
    assert {groups[n].group for n in fusion} == {"blocks.1"}
    if lowering == "plugin":
        assert fusion == ["blocks.1.fusion/TokenFusion_1"]
    else:
        ops = Counter(split_node_name(n)[1] for n in fusion)
        assert ops["TopK"] >= 2 and ops["ScatterElements"] >= 2 and "TokenFusion" not in ops
    fused_block = Counter(g.part for g in groups.values() if g.group == "blocks.1")
    assert set(fused_block) == {"attn", "fusion", "mlp", "norm", "block"} and fused_block["block"] == 2
    assert any(n.startswith("blocks.1.inline_attn/Softmax") for n in nodes)


def test_part_totals_sum_each_part_over_the_blocks() -> None:
    layers = {
        "blocks.0.attn": 0.75,
        "blocks.1.fusion": 0.5,
        "blocks.1.attn": 1.25,
        "patch_embed": 0.25,
        "blocks.1": 0.125,  # a block-level label (group level) stays as it is
        "tokens_to_token.attention1": 1.5,
        "blocks.1.mlp": 0.5,
    }
    assert list(part_totals(layers).items()) == [
        ("blocks.*.attn", 2.0),
        ("tokens_to_token.attention1", 1.5),
        ("blocks.*.fusion", 0.5),
        ("blocks.*.mlp", 0.5),
        ("patch_embed", 0.25),
        ("blocks.1", 0.125),
    ]
    assert part_totals({}) == {}


def test_nodes_a_runtime_named_take_the_group_of_the_node_they_feed() -> None:
    from onnx import helper

    from vitrt.deploy.module_groups import group_graph

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["qkv"], name="blocks.0.attn.qkv/MatMul_1"),
        helper.make_node("Transpose", ["qkv"], ["t"], name="Transpose_token_4"),  # ORT's transpose optimizer
        helper.make_node("Squeeze", ["t"], ["q"], name="Squeeze_token_40"),  # a chain of two
        helper.make_node("Softmax", ["q"], ["p"], name="blocks.0.attn/Softmax_1"),
        helper.make_node("MatMul", ["p", "w2"], ["y"], name="blocks.0.mlp.fc1/MatMul_1"),
        helper.make_node("Identity", ["y"], ["z"], name="Identity_token_9"),  # feeds nothing: its producer's
    ]
    groups = group_graph(nodes)
    assert groups["Transpose_token_4"].label == groups["Squeeze_token_40"].label == "blocks.0.attn"
    assert groups["Identity_token_9"].label == "blocks.0.mlp"
