"""Per-layer profiles mapped back to the model: TensorRT engine layers and ONNX Runtime nodes -> the
ONNX nodes they ran -> module groups (``vitrt.deploy.module_groups``).

TensorRT. The engine inspector (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``
on an engine built with ``ProfilingVerbosity.DETAILED``; trtexec ``--exportLayerInfo``) lists the
engine's layers as objects with ``Name``, ``LayerType``, ``Inputs``, ``Outputs``, ``TacticName`` and,
since TensorRT 10.0, ``Metadata``: the ONNX parser writes ``[ONNX Layer: <node name>]`` (plus
`` | <function node> (<function>)`` entries for ONNX local functions) on every layer it creates, and a
layer fused from several keeps each one's entry, separated by ASCII record / unit separators
(``\\x1e`` / ``\\x1f``: NVIDIA's trt-engine-explorer ``trex/parser.py`` replaces both). Without
DETAILED the ``Layers`` list holds names only. The ONNX nodes of a layer come from its metadata; where
there is none (a TensorRT 8 engine, names-only information, layers TensorRT adds itself), from its
name: fused names join node names with `` + ``, Myelin regions read ``{ForeignNode[<first>...<last>]}``
(the nodes from first to last in graph order), ``Reformatting CopyNode for Input Tensor 0 to <layer>``
belongs to the layer it feeds.

ONNX Runtime. ``SessionOptions.enable_profiling`` writes a Chrome trace; each node execution is an
event with ``"cat": "Node"``, ``"name": "<node name>_kernel_time"``, ``"dur"`` in microseconds and
``"args": {"op_name": ...}``. Node names are the graph's own (after ORT's graph optimisations, which
may fuse nodes under a new name: profile with optimisations off for an exact mapping).

Limits: TensorRT reports one time per engine layer, not per ONNX node, so a fused layer's time is split
evenly among the groups it covers and such layers are flagged (``GroupTime.shared_layers``); the split
says nothing about which node cost what.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitrt.errors import VitrtError

from .layer_timing import LayerTiming, layer_timings
from .module_groups import OTHER, ModuleGroup

METADATA_SEPARATORS = re.compile("[\x1e\x1f]")
_ONNX_LAYER = "[ONNX Layer: "
_FOREIGN = re.compile(r"\{ForeignNode\[(.*?)\.\.\.(.*?)\]\}")
_REFORMAT = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (.+)$")
_PROFILE_SUFFIX = re.compile(r" \[profile \d+\]$")


@dataclass(frozen=True)
class EngineLayer:
    """One layer of a TensorRT engine as the engine inspector reports it; ``metadata`` is the raw
    ``Metadata`` string ("" where absent)."""

    name: str
    layer_type: str = ""
    metadata: str = ""
    tactic: str = ""

    @property
    def onnx_nodes(self) -> list[str]:
        """The ONNX node names in the metadata (``parse_metadata``)."""
        return parse_metadata(self.metadata)


def parse_metadata(metadata: str) -> list[str]:
    """``[ONNX Layer: a]\\x1e[ONNX Layer: b | f_node (f)]`` -> ``["a", "b"]``: the ONNX node of each
    entry, in order, without repeats; entries of other kinds are skipped."""
    nodes: list[str] = []
    for entry in METADATA_SEPARATORS.split(metadata):
        entry = entry.strip()
        if entry.startswith(_ONNX_LAYER) and entry.endswith("]"):
            node = entry[len(_ONNX_LAYER) : -1].split(" | ")[0]
            if node and node not in nodes:
                nodes.append(node)
    return nodes


def read_engine_layers(information: str | os.PathLike[str] | Mapping[str, Any]) -> list[EngineLayer]:
    """The layers of engine-inspector JSON: the JSON text, a file holding it (trtexec
    ``--exportLayerInfo``) or the parsed object. Both schemas read alike (TensorRT 10's ``Bindings``,
    11's ``"I/O Tensors"``: only ``Layers`` is used). Names-only information (an engine built without
    ``ProfilingVerbosity.DETAILED``) gives layers with no metadata."""
    data: Any = information
    if isinstance(information, os.PathLike) or (
        isinstance(information, str) and not information.lstrip().startswith("{")
    ):
        data = Path(information).read_text()
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as err:
            raise VitrtError(f"engine inspector output is not JSON: {err}") from err
    if not isinstance(data, Mapping) or not isinstance(data.get("Layers"), list):
        raise VitrtError('engine inspector JSON must be an object with a "Layers" list')
    layers = []
    for entry in data["Layers"]:
        if isinstance(entry, str):  # LAYER_NAMES_ONLY
            layers.append(EngineLayer(name=entry))
        else:
            layers.append(
                EngineLayer(
                    name=str(entry["Name"]),
                    layer_type=str(entry.get("LayerType", "")),
                    metadata=str(entry.get("Metadata", "")),
                    tactic=str(entry.get("TacticName", "")),
                )
            )
    return layers


def nodes_from_layer_name(name: str, graph_nodes: Sequence[str]) -> list[str]:
    """The nodes of ``graph_nodes`` (the ONNX graph's node names, in graph order) that a TensorRT
    layer name names: `` + ``-joined names, ``{ForeignNode[first...last]}`` ranges, names wrapped in
    ``PWN(...)``, and a reformatting layer's target. Unknown pieces are dropped."""
    name = _PROFILE_SUFFIX.sub("", name)
    reformat = _REFORMAT.match(name)
    if reformat:
        name = reformat.group(1)
    known = {n: i for i, n in enumerate(graph_nodes)}
    found: list[str] = []

    def add(node: str) -> None:
        if node in known and node not in found:
            found.append(node)

    for first, last in _FOREIGN.findall(name):
        if first in known and last in known:
            for node in graph_nodes[known[first] : known[last] + 1]:
                add(node)
    rest = _FOREIGN.sub(" + ", name)
    for piece in re.split(r" \+ |PWN\(|\)|, ", rest):
        add(piece.strip())
    return found


def layer_nodes(layers: Iterable[EngineLayer], graph_nodes: Sequence[str] = ()) -> dict[str, list[str]]:
    """``{engine layer name: [ONNX node names]}``: from the metadata, else from the layer's name
    (``nodes_from_layer_name``, which needs ``graph_nodes``). A reformatting layer without metadata
    takes the nodes of the layer it feeds. ``[]`` where neither says anything."""
    layers = list(layers)
    mapping: dict[str, list[str]] = {}
    for layer in layers:
        nodes = layer.onnx_nodes or nodes_from_layer_name(layer.name, graph_nodes)
        mapping[layer.name] = nodes
    for layer in layers:  # reformatting layers: the target's nodes, once every layer is known
        target = _REFORMAT.match(_PROFILE_SUFFIX.sub("", layer.name))
        if not mapping[layer.name] and target and mapping.get(target.group(1)):
            mapping[layer.name] = list(mapping[target.group(1)])
    return mapping


def read_ort_profile(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """``{node name: [ms per run, ...]}`` from an ONNX Runtime profile (the JSON file
    ``InferenceSession.end_profiling()`` returns), in first-execution order: every ``cat == "Node"``
    event named ``<node>_kernel_time``, its ``dur`` (us) in ms. Session events (model loading,
    ``model_run``) and the ``_fence_before`` / ``_fence_after`` markers are left out."""
    try:
        events = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise VitrtError(f"cannot read ONNX Runtime profile {path}: {err}") from err
    samples: dict[str, list[float]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            samples.setdefault(name[: -len("_kernel_time")], []).append(float(event["dur"]) / 1e3)
    return samples


def ort_layer_timings(path: str | os.PathLike[str]) -> list[LayerTiming]:
    """trtexec-style per-node records (``layer_timings``) of an ONNX Runtime profile; each record's
    name is its ONNX node, so it maps to itself."""
    return layer_timings(read_ort_profile(path))


@dataclass(frozen=True)
class GroupTime:
    """The time of one module group (``label``): ``total_ms`` over all profiled inferences,
    ``percentage`` of the profile (0-100), the engine layers counted in it, and those of them whose
    time was shared with other groups (a fused layer spanning several groups: its time is split
    evenly, since TensorRT does not report time per original node)."""

    label: str
    total_ms: float
    percentage: float
    layers: tuple[str, ...] = ()
    shared_layers: tuple[str, ...] = field(default=())


def group_times(
    timings: Sequence[LayerTiming],
    nodes_of_layer: Mapping[str, Sequence[str]],
    node_groups: Mapping[str, ModuleGroup],
    *,
    level: str = "part",
) -> list[GroupTime]:
    """Per-group totals of per-layer ``timings``, largest first.

    ``nodes_of_layer``: each layer's ONNX nodes (``layer_nodes``; for ONNX Runtime each node is its own
    layer: pass ``{}`` and the layer name is taken as the node). ``node_groups``: each node's group
    (``module_groups.group_nodes``). ``level``: "group" (``blocks.3``) or "part" (``blocks.3.attn``).
    A layer whose nodes span k groups adds total / k to each and is listed in their ``shared_layers``;
    a layer with no known node goes to ``other``. Percentages are of the sum of all layers' totals.
    """
    if level not in ("group", "part"):
        raise ValueError(f'level must be "group" or "part", got {level!r}')
    totals: dict[str, float] = defaultdict(float)
    members: dict[str, list[str]] = defaultdict(list)
    shared: dict[str, list[str]] = defaultdict(list)
    grand = sum(t.total_ms for t in timings)
    for t in timings:
        nodes = nodes_of_layer.get(t.name) or ([t.name] if t.name in node_groups else [])
        labels: list[str] = []
        for node in nodes:
            g = node_groups.get(node, OTHER)
            label = g.label if level == "part" else g.group
            if label not in labels:
                labels.append(label)
        labels = labels or [OTHER.label]
        for label in labels:
            totals[label] += t.total_ms / len(labels)
            members[label].append(t.name)
            if len(labels) > 1:
                shared[label].append(t.name)
    result = [
        GroupTime(
            label=label,
            total_ms=total,
            percentage=100.0 * total / grand if grand > 0 else 0.0,
            layers=tuple(members[label]),
            shared_layers=tuple(shared[label]),
        )
        for label, total in totals.items()
    ]
    return sorted(result, key=lambda g: (-g.total_ms, g.label))
