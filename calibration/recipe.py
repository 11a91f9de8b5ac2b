"""The precision recipe: what a precision file holds, saved in its ONNX metadata beside the ExportConfig.

Every file ``vitrt calibrate`` and ``vitrt fp16`` write carries one ``PrecisionRecipe`` as JSON under
the metadata key ``vitrt.precision_recipe``: which layers are INT8 (Q/DQ on their inputs), what the
rest computes in (float32 or float16), and the float32 keep-list, node by node with op type and
reason. TensorRT 11 builds the numerics from the graph alone (Q/DQ and casts are in it); a TensorRT
10 builder reads the same keep-list as layer precision constraints, so both build the same
numerics from one file. The schema (``format`` 1, or 2 for an INT8 file in the ONNX Runtime form),
for such a builder:

    {"format": 1 | 2, "precision": "int8" | "fp16" | "int8+fp16",
     "int8_form": "onnxruntime",              # format 2 only; absent: the TensorRT form
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

``int8_form`` says which INT8 graph form the file holds (``vitrt.calibration.qdq``): "tensorrt", float
biases, the form every TensorRT reads, written as format 1 without the key so that earlier vitrt
reads it as before; "onnxruntime", int32 bias DequantizeLinear nodes (which TensorRT does not read)
and layers too small to gain on ONNX Runtime kept float, written as format 2 (an earlier vitrt refuses
it rather than take it for a TensorRT file).

``PrecisionRecipe.layer_constraints()`` is that keep-list in the form a TensorRT 10 builder applies
(``layer.precision`` and ``layer.set_output_type`` = float32 for every layer whose ``[ONNX Layer: name]``
metadata names a listed node, with ``OBEY_PRECISION_CONSTRAINTS``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vitrt.errors import VitrtError

if TYPE_CHECKING:
    from onnx import ModelProto

RECIPE_KEY = "vitrt.precision_recipe"
RECIPE_FORMAT = 1
RECIPE_FORMAT_ORT = 2  # format 1 + "int8_form": "onnxruntime"
PRECISIONS = ("int8", "fp16", "int8+fp16")
INT8_FORMS = ("tensorrt", "onnxruntime")  # see vitrt.calibration.qdq


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
    int8_form: str = "tensorrt"
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

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise VitrtError(f"unknown precision {self.precision!r}; one of {PRECISIONS}")
        if self.int8_form not in INT8_FORMS:
            raise VitrtError(f"unknown INT8 form {self.int8_form!r}; one of {INT8_FORMS}")

    @property
    def format(self) -> int:
        """The schema version: 1, or 2 for the ONNX Runtime form (what an earlier vitrt reads stays 1)."""
        return RECIPE_FORMAT if self.int8_form == "tensorrt" else RECIPE_FORMAT_ORT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.int8_form == "tensorrt":
            del data["int8_form"]
        return {**data, "format": self.format}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionRecipe:
        if data.get("format") not in (RECIPE_FORMAT, RECIPE_FORMAT_ORT):
            raise VitrtError(
                f"precision recipe format {data.get('format')!r} is not {RECIPE_FORMAT} or "
                f"{RECIPE_FORMAT_ORT}; this vitrt cannot read it (upgrade vitrt)"
            )
        data = dict(data)
        data.pop("format")
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


def read_recipe(model: ModelProto | str | os.PathLike[str]) -> PrecisionRecipe | None:
    """The recipe stored in ``model``'s metadata (a ModelProto, or the path of an .onnx file), or None (a
    float32 file)."""
    from vitrt.fileio import load_onnx

    proto: ModelProto = load_onnx(model) if isinstance(model, (str, os.PathLike)) else model
    for prop in proto.metadata_props:
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
