"""Which part of a vision transformer an ONNX node belongs to, from its vitrt node name.

vitrt names every node ``<module path>/<OpType>_<k>`` (``compiler.passes.name_nodes``), so the module
path says where it came from. The groups, top-level ``group`` and its ``part``:

- ``patch_embed`` (DeiT's patch projection and its reshapes);
- ``tokens_to_token`` (T2T-ViT's stage), parts ``soft_split`` (the three unfolds), ``attention1``,
  ``attention2`` (the token transformers or performers, Scatterbrain plugin nodes included),
  ``project``, and ``reshape`` (the stage's own transposes / reshapes between them);
- ``blocks.<i>``, parts ``attn`` (in a token-fusion block also its inline attention, ``inline_attn``:
  q k^T, softmax, the attention received, the one-step-ahead merge), ``mlp``, ``norm`` (norm1, norm2),
  ``fusion`` (a token-fusion block's ``fusion`` scope: the ``vitrt::TokenFusion`` plugin node, or the
  standard ops the portable lowering makes of it, with the metric) and ``block`` (nodes at the block's
  own scope: the residual adds). The fused blocks' scopes are ``ExportScope`` children
  (``vitrt.plugins.lowering``); files exported before them name the inline attention and the portable
  fusion ``blocks.<i>/...``, which land in ``block`` (their plugin node in ``fusion``);
- ``head``, parts ``norm``, ``head``, ``pre_logits``, ``cls_token``;
- ``other``: a name that is not vitrt's.

Nodes at the model's own scope (``model/Concat_1``: the class-token concat, the position-embedding
add, T2T's kqv splits, the class-token read-out) carry no module path: ``group_nodes`` places them by
their position in the graph (before the first block: the stem, part ``root``; after the last block:
``head``, part ``cls_token``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

ROOT_SCOPE = "model"
"""The scope ``name_nodes`` gives nodes made by the model's own forward."""

_BLOCK = re.compile(r"blocks\.(\d+)(?:\.([^.]+)(?:\..*)?)?")
_BLOCK_LABEL = re.compile(r"blocks\.\d+\.([^.]+)")  # a ModuleGroup label with a part
_OP = re.compile(r"(.+?)_\d+$")
_HEAD_PARTS = ("norm", "head", "pre_logits", "fc_norm")
_BLOCK_PARTS = {"norm1": "norm", "norm2": "norm", "inline_attn": "attn"}
_T2T_PARTS = {"attention1": "attention1", "attention2": "attention2", "project": "project"}
STEMS = ("patch_embed", "tokens_to_token")


@dataclass(frozen=True, order=True)
class ModuleGroup:
    """A node's place in the model: ``group`` (``blocks.3``) and ``part`` (``attn``)."""

    group: str
    part: str = ""

    @property
    def label(self) -> str:
        """``group.part`` (``blocks.3.attn``), or ``group`` alone where there is no part."""
        return f"{self.group}.{self.part}" if self.part else self.group


OTHER = ModuleGroup("other")


class NodeLike(Protocol):
    """What ``group_graph`` reads of an ONNX ``NodeProto``."""

    name: str

    @property
    def input(self) -> Sequence[str]: ...

    @property
    def output(self) -> Sequence[str]: ...


def split_node_name(node: str) -> tuple[str, str]:
    """``blocks.3.attn.qkv/MatMul_1`` -> (``blocks.3.attn.qkv``, ``MatMul``); ("", name) without a
    scope."""
    scope, slash, op = node.partition("/")
    if not slash:
        return "", node
    op = op.split("/")[0]  # vitrt's ONNX Runtime casts append "/ort_Cast_float32" to a tensor name
    match = _OP.match(op)
    return scope, match.group(1) if match else op


def module_group(node: str) -> ModuleGroup | None:
    """The group of one vitrt node name (module docstring); None for the model's own scope (placed
    by ``group_nodes``), ``OTHER`` for a name vitrt did not make."""
    path, op = split_node_name(node)
    head, _, rest = path.partition(".")
    if path == ROOT_SCOPE:
        return None
    if head == "patch_embed":
        return ModuleGroup("patch_embed")
    if head == "tokens_to_token":
        sub = rest.split(".")[0]
        if not sub:
            return ModuleGroup("tokens_to_token", "reshape")
        if sub.startswith("soft_split"):
            return ModuleGroup("tokens_to_token", "soft_split")
        return ModuleGroup("tokens_to_token", _T2T_PARTS.get(sub, sub))
    block = _BLOCK.fullmatch(path)
    if block is not None:
        index, sub = block.group(1), block.group(2)
        if sub is None:
            part = "fusion" if op == "TokenFusion" else "block"
        else:
            part = _BLOCK_PARTS.get(sub, sub)
        return ModuleGroup(f"blocks.{index}", part)
    if head in _HEAD_PARTS:
        return ModuleGroup("head", "norm" if head == "fc_norm" else head)
    return OTHER


def part_totals(layers: Mapping[str, float]) -> dict[str, float]:
    """Per-part totals over the blocks: ``{"blocks.3.attn": ms, ...}`` (a per-block split, as a profile
    report's ``layers``) -> ``{"blocks.*.attn": sum over the blocks, ...}``, every other label as it is;
    largest first. Where the time of a fused model goes across blocks (attention, MLP, fusion), which
    the per-block rows leave to the reader to add up."""
    totals: dict[str, float] = {}
    for label, ms in layers.items():
        block = _BLOCK_LABEL.fullmatch(label)
        kind = f"blocks.*.{block.group(1)}" if block else label
        totals[kind] = totals.get(kind, 0.0) + ms
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def group_nodes(nodes: Sequence[str]) -> dict[str, ModuleGroup]:
    """The group of every node of a graph, ``nodes`` in the graph's (topological) order: as
    ``module_group``, the model-scope nodes placed by position (module docstring)."""
    groups = [module_group(node) for node in nodes]
    in_blocks = [i for i, g in enumerate(groups) if g is not None and g.group.startswith("blocks.")]
    stems = [(i, g.group) for i, g in enumerate(groups) if g is not None and g.group in STEMS]
    placed: dict[str, ModuleGroup] = {}
    for i, (node, g) in enumerate(zip(nodes, groups, strict=True)):
        if g is not None:
            placed[node] = g
        elif in_blocks and i > in_blocks[-1]:
            placed[node] = ModuleGroup("head", "cls_token")
        elif in_blocks and i < in_blocks[0] and stems:
            # the stem that ran last before this node (the first one if none ran yet)
            stem = next((s for j, s in reversed(stems) if j < i), stems[0][1])
            placed[node] = ModuleGroup(stem, "root")
        else:
            placed[node] = OTHER
    return placed


def group_graph(nodes: Sequence[NodeLike]) -> dict[str, ModuleGroup]:
    """``group_nodes`` for ONNX nodes (``graph.node``, topological order), with the nodes a runtime added
    under its own names placed too: ONNX Runtime's saved optimised models hold transposes and squeezes
    named ``Transpose_token_4`` / ``Squeeze_token_40`` (its transpose optimizer's) in the middle of a block.
    Such a node takes the group of the nearest named node it feeds (else the one that feeds it), so its time
    is counted where the work belongs instead of under ``other``."""
    groups = group_nodes([n.name for n in nodes])
    consumers: dict[str, list[str]] = {}
    producer: dict[str, str] = {}
    for n in nodes:
        for tensor in n.input:
            consumers.setdefault(tensor, []).append(n.name)
        for tensor in n.output:
            producer[tensor] = n.name
    by_name = {n.name: n for n in nodes}

    def neighbours(name: str) -> list[str]:
        node = by_name[name]
        after = [c for t in node.output for c in consumers.get(t, [])]
        before = [producer[t] for t in node.input if t in producer]
        return after + before

    for _ in range(8):  # a chain of runtime-named nodes resolves one link per pass
        changed = False
        for n in nodes:
            if groups.get(n.name, OTHER) != OTHER:
                continue
            known = [groups[m] for m in neighbours(n.name) if groups.get(m, OTHER) != OTHER]
            if known:
                groups[n.name] = known[0]
                changed = True
        if not changed:
            break
    return groups
