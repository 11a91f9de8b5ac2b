"""The precision recipe: what a precision file holds, saved in its ONNX metadata beside the ExportConfig.

Every file ``vitrt calibrate`` and ``vitrt fp16`` write carries one ``PrecisionRecipe`` as JSON under
the metadata key ``vitrt.precision_recipe``: which layers are INT8 (Q/DQ on their inputs), what the
rest computes in (float32 or float16), and the float32 keep-list, node by node with op type and
reason. TensorRT 11 builds the numerics from the graph alone (Q/DQ and casts are in it); a TensorRT
10 builder reads the same keep-list as layer precision constraints, so both build the same
numerics from one file. The schema (``format`` 1), for such a builder:

    {"format": 1, "precision": "int8" | "fp16" | "int8+fp16",
     "float_type": "float32" | "float16",     # every layer not listed below
     "io_type": "float32" | "float16",        # graph inputs and outputs
     "int8_layers": ["blocks.0.attn.qkv/MatMul_1", ...],     # Q/DQ on their inputs
     "keep_fp32": [{"node": "blocks.0.norm1/LayerNormalization_1", "op_type": "LayerNormalization",
                    "reason": "..."}, ...],
     "keep_fp32_patterns": ["head/*"],        # what the user asked for (fnmatch)
     "plugins": [{"node": ..., "op_type": "TokenFusion", "io_type": "float16",
                  "accumulate": "float32"}],
     "residual_adds": [...], "attention_matmuls": {"node": "scores" | "context"},
     "not_quantized": [{"node": ..., "op_type": "MatMul", "reason": ...}],
     "prepared": {... vitrt.compiler.prepare.PrepareReport ...},
     "agreement": {...}}                      # vs the float32 file on ONNX Runtime, where measured

``PrecisionRecipe.layer_constraints()`` is that keep-list in the form a TensorRT 10 builder applies
(``layer.precision`` and ``layer.set_output_type`` = float32 for every layer whose ``[ONNX Layer: name]``
metadata names a listed node, with ``OBEY_PRECISION_CONSTRAINTS``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vitrt.errors import VitrtError

if TYPE_CHECKING:
    from onnx import ModelProto

RECIPE_KEY = "vitrt.precision_recipe"
RECIPE_FORMAT = 1
PRECISIONS = ("int8", "fp16", "int8+fp16")


@dataclass(frozen=True)
class NodePrecision:
    """One node of a keep-list: its name, op type and why it is where it is."""

    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class PrecisionRecipe:
    """What a precision file holds (module docstring for the JSON schema)."""

    precision: str
    float_type: str = "float32"
    io_type: str = "float32"
    int8_layers: tuple[str, ...] = ()
    keep_fp32: tuple[NodePrecision, ...] = ()
    keep_fp32_patterns: tuple[str, ...] = ()
    plugins: tuple[dict[str, str], ...] = ()
    residual_adds: tuple[str, ...] = ()
    attention_matmuls: dict[str, str] = field(default_factory=dict)
    not_quantized: tuple[NodePrecision, ...] = ()
    prepared: dict[str, Any] | None = None
    agreement: dict[str, Any] | None = None
    format: int = RECIPE_FORMAT

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise VitrtError(f"unknown precision {self.precision!r}; one of {PRECISIONS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionRecipe:
        if data.get("format") != RECIPE_FORMAT:
            raise VitrtError(
                f"precision recipe format {data.get('format')!r} is not {RECIPE_FORMAT}; "
                "this vitrt cannot read it (upgrade vitrt)"
            )
        data = dict(data)
        for key in ("keep_fp32", "not_quantized"):
            data[key] = tuple(NodePrecision(**n) for n in data.get(key, ()))
        for key in ("int8_layers", "keep_fp32_patterns", "residual_adds"):
            data[key] = tuple(data.get(key, ()))
        data["plugins"] = tuple(dict(p) for p in data.get("plugins", ()))
        return cls(**data)

    def with_changes(self, **changes: Any) -> PrecisionRecipe:
        return replace(self, **changes)

    def layer_constraints(self) -> list[dict[str, str]]:
        """Per-node constraints for a TensorRT 10 builder: ``[{"node", "op_type", "precision",
        "output_type"}]``, float32 for each keep-list node. Empty when the file is all float32 outside
        its INT8 layers (``float_type`` float32): nothing to constrain then."""
        if self.float_type == "float32":
            return []
        return [
            {"node": n.node, "op_type": n.op_type, "precision": "float32", "output_type": "float32"}
            for n in self.keep_fp32
        ]


def read_recipe(model: ModelProto) -> PrecisionRecipe | None:
    """The recipe stored in ``model``'s metadata, or None (a float32 file)."""
    for prop in model.metadata_props:
        if prop.key == RECIPE_KEY:
            return PrecisionRecipe.from_dict(json.loads(prop.value))
    return None


def write_recipe(model: ModelProto, recipe: PrecisionRecipe) -> None:
    """Store ``recipe`` in ``model``'s metadata (in place), replacing an earlier one; the ExportConfig,
    if any, records the precision too (``ExportConfig.precision``)."""
    from vitrt.compiler.export import METADATA_KEY

    kept = [p for p in model.metadata_props if p.key != RECIPE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    prop = model.metadata_props.add()
    prop.key, prop.value = RECIPE_KEY, recipe.to_json()
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            config = json.loads(prop.value)
            config["precision"] = recipe.precision
            prop.value = json.dumps(config, sort_keys=True)
