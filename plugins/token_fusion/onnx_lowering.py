"""TokenFusion's plugin lowering: the ``vitrt::token_fusion`` torch op (``torch_op``) exported as the ONNX
node ``vitrt::TokenFusion`` (the TensorRT plugin's name, version and fields), and its ONNX Runtime CPU
kernel. Every piece calls ``reference.token_fusion``: the op has one definition.

No ``from __future__ import annotations`` here: ``torch.library.custom_op`` reads the annotations.
"""

import numpy as np
import onnx
import onnxscript
import torch

from vitrt.plugins.lowering import PluginLowering, attribute_kinds, register_onnx_schema

from . import torch_op  # noqa: F401  (registers torch.ops.vitrt.token_fusion, exported below)
from .reference import token_fusion
from .spec import INPUT_NAMES, OUTPUT_NAMES, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, TokenFusionAttrs

# Node attributes = the spec's TokenFusionAttrs fields, in order (ints and floats only).
ATTRIBUTES = attribute_kinds(TokenFusionAttrs)


_VITRT = onnxscript.values.Opset("vitrt", int(PLUGIN_VERSION))


def _translation(
    x: onnxscript.FLOAT,
    metric: onnxscript.FLOAT,
    info: onnxscript.FLOAT,
    size: onnxscript.FLOAT,
    r: int,
    num_protected: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirectional: int,
    pooling: int,
) -> tuple[onnxscript.FLOAT, onnxscript.FLOAT, onnxscript.INT64]:
    fields = TokenFusionAttrs(r, num_protected, tau_sim, tau_info, tau_size, bidirectional, pooling)
    attrs = fields.onnx_attributes()
    return _VITRT.TokenFusion(x, metric, info, size, **attrs, _outputs=list(OUTPUT_NAMES))


def _shape_rule(
    shapes: list[list[object] | None], attrs: dict[str, object]
) -> list[tuple[int | None, list[object]]]:
    assert shapes[0] is not None
    (b, n, c), r = shapes[0], attrs.get("r", 0)
    n_out = n - r if isinstance(n, int) and isinstance(r, int) else f"{n}-r"
    return [(None, [b, n_out, c]), (None, [b, n_out]), (onnx.TensorProto.INT64, [b, n])]


def _ort_kernel(
    x: np.ndarray, metric: np.ndarray, info: np.ndarray, size: np.ndarray, **attrs: object
) -> tuple[np.ndarray, ...]:
    fields = TokenFusionAttrs(**{name: attrs[name] for name, _ in ATTRIBUTES})  # type: ignore[arg-type]
    x_t, metric_t, info_t, size_t = (
        torch.from_numpy(np.ascontiguousarray(a)) for a in (x, metric, info, size)
    )
    with torch.no_grad():
        outs = token_fusion(x_t, metric_t, info_t, size_t, fields)
    return tuple(o.numpy() for o in outs)


LOWERING = PluginLowering(
    name=PLUGIN_NAME,
    version=PLUGIN_VERSION,
    namespace=PLUGIN_NAMESPACE,
    inputs=INPUT_NAMES,
    optional_inputs=frozenset(),
    outputs=(("x_fused", "T"), ("size_fused", "T"), ("dest", "tensor(int64)")),
    attributes=ATTRIBUTES,
    shape_rule=_shape_rule,
    torch_op=torch.ops.vitrt.token_fusion.default,
    translation=_translation,
    ort_kernel=_ort_kernel,
)
assert tuple(n for n, _ in LOWERING.outputs) == OUTPUT_NAMES
register_onnx_schema(LOWERING)
