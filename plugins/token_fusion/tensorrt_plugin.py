"""TokenFusion as a TensorRT plugin: an ``IPluginV3`` (``IPluginV3OneCore``, ``IPluginV3OneBuild``,
``IPluginV3OneRuntime``) whose ``enqueue`` launches the kernels of ``token_fusion.cu`` on TensorRT's
stream, and its ``IPluginCreatorV3One``. Registered by ``vitrt.plugins.register_tensorrt_plugins()``.

The ONNX node ``vitrt::TokenFusion`` (``onnx_lowering``) is what the creator accepts: op_type =
``spec.PLUGIN_NAME``, ``plugin_version`` / ``plugin_namespace`` attributes = ``spec.PLUGIN_VERSION`` /
``spec.PLUGIN_NAMESPACE``, the other attributes = the fields of ``spec.TokenFusionAttrs`` (INT32 /
FLOAT32 plugin fields). Inputs x, metric, info, size share one type (float32 or float16, linear
format); outputs x_fused, size_fused (that type) and dest (int64: TensorRT >= 10.0 plugins take INT64
I/O, as TensorRT's own ScatterElements plugin does in 10.3, so dest keeps the spec's dtype).

Output shapes via the expression builder: [B, N - r, C], [B, N - r], [B, N] with r the attribute.
TensorRT is imported when ``plugin_classes()`` is first called, never at module import.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from vitrt.plugins.cuda_tensorrt import PluginCommon, creator_class, dtype_name, import_tensorrt

from .cuda import FusionDims, enqueue, workspace_bytes
from .spec import INPUT_NAMES, OUTPUT_NAMES, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, TokenFusionAttrs

if TYPE_CHECKING:
    import tensorrt as trt


@cache
def plugin_classes() -> tuple[type[trt.IPluginV3], type[trt.IPluginCreatorV3One]]:
    """(TokenFusionPlugin, TokenFusionCreator), defined on first use (they subclass TensorRT's classes)."""
    import_tensorrt()  # a clear error where TensorRT is missing (or only its type stubs are)
    import tensorrt as trt

    class TokenFusionPlugin(
        PluginCommon, trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime
    ):
        """One TokenFusion node: the spec's attributes, kernels launched in ``enqueue``."""

        def __init__(self, attrs: TokenFusionAttrs) -> None:
            self.init_plugin(trt, attrs, PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE, len(OUTPUT_NAMES))

        def clone(self) -> TokenFusionPlugin:
            return TokenFusionPlugin(self.attrs)

        def get_output_data_types(self, input_types: list[trt.DataType]) -> list[trt.DataType]:
            return [input_types[0], input_types[0], trt.DataType.INT64]

        def get_output_shapes(
            self,
            inputs: list[trt.DimsExprs],
            shape_inputs: list[trt.DimsExprs],
            expr_builder: trt.IExprBuilder,
        ) -> list[trt.DimsExprs]:
            b, n, c = inputs[0][0], inputs[0][1], inputs[0][2]
            n_out = expr_builder.operation(trt.DimensionOperation.SUB, n, expr_builder.constant(self.attrs.r))
            return [trt.DimsExprs([b, n_out, c]), trt.DimsExprs([b, n_out]), trt.DimsExprs([b, n])]

        def supports_format_combination(
            self, pos: int, in_out: list[trt.DynamicPluginTensorDesc], num_inputs: int
        ) -> bool:
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return bool(desc.type in (trt.DataType.FLOAT, trt.DataType.HALF))
            if pos == num_inputs + 2:  # dest
                return bool(desc.type == trt.DataType.INT64)
            return bool(desc.type == in_out[0].desc.type)  # metric, info, size, x_fused, size_fused

        def _dims(self, x: Any, metric: Any) -> FusionDims:
            return FusionDims(int(x[0]), int(x[1]), int(x[2]), int(metric[2]), self.attrs.r)

        def get_workspace_size(
            self, inp: list[trt.DynamicPluginTensorDesc], out: list[trt.DynamicPluginTensorDesc]
        ) -> int:
            return workspace_bytes(self._dims(inp[0].max, inp[1].max))  # an upper bound for the profile

        def enqueue(
            self,
            input_desc: list[trt.PluginTensorDesc],
            output_desc: list[trt.PluginTensorDesc],
            inputs: list[int],
            outputs: list[int],
            workspace: int,
            stream: int,
        ) -> None:
            d = self._dims(input_desc[0].dims, input_desc[1].dims)
            x, metric, info, size = inputs[: len(INPUT_NAMES)]
            enqueue(
                x, metric, info, size, outputs[0], outputs[1], outputs[2], workspace, d, self.attrs,
                dtype_name(trt, input_desc[0].type), stream,
            )  # fmt: skip

    creator = creator_class(
        TokenFusionPlugin, TokenFusionAttrs, PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE
    )
    return TokenFusionPlugin, creator


def create_creator() -> trt.IPluginCreatorV3One:
    """A new TokenFusion plugin creator (register it with ``vitrt.plugins.register_tensorrt_plugins``)."""
    return plugin_classes()[1]()
