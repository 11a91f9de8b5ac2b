"""TokenFusion's plugin lowering: the ``vitrt::token_fusion`` torch op, its ONNX node
``vitrt::TokenFusion`` (the TensorRT plugin's name, version and fields), and its ONNX Runtime CPU
kernel. Every piece calls ``reference.token_fusion``: the op has one definition.

No ``from __future__ import annotations`` here: ``torch.library.custom_op`` reads the annotations.
"""

import numpy as np
import onnx
import onnxscript
import torch
from torch import Tensor

from vitrt.plugins.lowering import PluginLowering, attribute_kinds, register_onnx_schema

from .reference import token_fusion
from .spec import INPUT_NAMES, OUTPUT_NAMES, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, TokenFusionAttrs

# Node attributes = the spec's TokenFusionAttrs fields, in order (ints and floats only).
ATTRIBUTES = attribute_kinds(TokenFusionAttrs)


@torch.library.custom_op("vitrt::token_fusion", mutates_args=())
def token_fusion_op(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    r: int,
    num_protected: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirectional: int,
    pooling: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The TokenFusion op as one opaque torch op (see ``spec``); exported as one ONNX node."""
    attrs = TokenFusionAttrs(r, num_protected, tau_sim, tau_info, tau_size, bidirectional, pooling)
    x_f, size_f, dest = token_fusion(x, metric, info, size, attrs)
    # A custom op's outputs may not alias its inputs (r = 0 returns x and size themselves).
    return x_f.clone(), size_f.clone(), dest.clone()


@token_fusion_op.register_fake
def _fake(
    x: Tensor,
    metric: Tensor,
    info: Tensor,
    size: Tensor,
    r: int,
    num_protected: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirectional: int,
    pooling: int,
) -> tuple[Tensor, Tensor, Tensor]:
    b, n, c = x.shape
    return x.new_empty(b, n - r, c), size.new_empty(b, n - r), x.new_empty(b, n, dtype=torch.int64)


def token_fusion_plugin(
    x: Tensor, metric: Tensor, info: Tensor, size: Tensor, attrs: TokenFusionAttrs
) -> tuple[Tensor, Tensor, Tensor]:
    """``reference.token_fusion`` through the custom op (what the plugin lowering traces)."""
    values = [getattr(attrs, name) for name, _ in ATTRIBUTES]
    return token_fusion_op(
        x,
        metric,
        info,
        size,
        *[int(v) if k == "int" else float(v) for v, (_, k) in zip(values, ATTRIBUTES, strict=True)],
    )


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
