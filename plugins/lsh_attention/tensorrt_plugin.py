"""ScatterbrainAttention as a TensorRT plugin: an ``IPluginV3`` (``IPluginV3OneCore``,
``IPluginV3OneBuild``, ``IPluginV3OneRuntime``) whose ``enqueue`` launches the kernels of
``scatterbrain.cu`` on TensorRT's stream, and its ``IPluginCreatorV3One``. Registered by
``vitrt.plugins.register_tensorrt_plugins()``.

The ONNX node ``vitrt::ScatterbrainAttention`` (``onnx_lowering``) is what the creator accepts: op_type
``spec.PLUGIN_NAME``, ``plugin_version`` / ``plugin_namespace`` = ``spec.PLUGIN_VERSION`` /
``spec.PLUGIN_NAMESPACE``, fields = ``spec.ScatterbrainAttrs`` (INT32 / FLOAT32). Inputs, as
``ScatterbrainAttrs.input_names`` lays them out: q, k, v (float32 or float16, one type), then the fixed
tensors as initializers, float32: hash_vectors and projection (SCATTERBRAIN), hash_vectors (LSH), an
omitted input "" then projection (PERFORMER: the ONNX parser passes the omitted input as an empty
slot; if a TensorRT version drops it instead, the projection is the fourth input and that works too).
Output [B, H, N, Dv] in q's type (expression builder: q's first three dims and v's last).
TensorRT is imported when ``plugin_classes()`` is first called, never at module import.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from vitrt.plugins.cuda_tensorrt import PluginCommon, creator_class, dtype_name, import_tensorrt

from .cuda import AttentionDims, enqueue, workspace_bytes
from .spec import OUTPUT_NAMES, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, Mode, ScatterbrainAttrs

if TYPE_CHECKING:
    import tensorrt as trt


def input_roles(mode: int, num_inputs: int) -> list[str]:
    """What each plugin input is: "q", "k", "v", "hash_vectors", "projection", or "unused" (the omitted
    optional input of mode PERFORMER when TensorRT keeps its slot)."""
    m = Mode(mode)
    if m == Mode.SCATTERBRAIN:
        fixed = ["hash_vectors", "projection"]
    elif m == Mode.LSH:
        fixed = ["hash_vectors"]
    else:
        fixed = ["unused", "projection"] if num_inputs == 5 else ["projection"]
    roles = ["q", "k", "v", *fixed]
    if len(roles) != num_inputs:
        raise ValueError(f"{PLUGIN_NAME} mode {m.name} takes {len(roles)} inputs ({roles}), got {num_inputs}")
    return roles


@cache
def plugin_classes() -> tuple[type[trt.IPluginV3], type[trt.IPluginCreatorV3One]]:
    """(ScatterbrainPlugin, ScatterbrainCreator), defined on first use (they subclass TensorRT's classes)."""
    import_tensorrt()  # a clear error where TensorRT is missing (or only its type stubs are)
    import tensorrt as trt

    class ScatterbrainPlugin(
        PluginCommon, trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime
    ):
        """One ScatterbrainAttention node: the spec's attributes, kernels launched in ``enqueue``."""

        def __init__(self, attrs: ScatterbrainAttrs) -> None:
            self.init_plugin(trt, attrs, PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE, len(OUTPUT_NAMES))

        def clone(self) -> ScatterbrainPlugin:
            return ScatterbrainPlugin(self.attrs)

        def get_output_data_types(self, input_types: list[trt.DataType]) -> list[trt.DataType]:
            return [input_types[0]]

        def get_output_shapes(
            self,
            inputs: list[trt.DimsExprs],
            shape_inputs: list[trt.DimsExprs],
            expr_builder: trt.IExprBuilder,
        ) -> list[trt.DimsExprs]:
            q, v = inputs[0], inputs[2]
            return [trt.DimsExprs([q[0], q[1], q[2], v[3]])]

        def supports_format_combination(
            self, pos: int, in_out: list[trt.DynamicPluginTensorDesc], num_inputs: int
        ) -> bool:
            desc = in_out[pos].desc
            role = input_roles(self.attrs.mode, num_inputs)[pos] if pos < num_inputs else "out"
            if role == "unused":
                return True  # the omitted input's slot: never read
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if role == "q":
                return bool(desc.type in (trt.DataType.FLOAT, trt.DataType.HALF))
            if role in ("hash_vectors", "projection"):
                return bool(desc.type == trt.DataType.FLOAT)  # fixed tensors stay float32
            return bool(desc.type == in_out[0].desc.type)  # k, v, out

        def _dims(self, q: Any, v: Any) -> AttentionDims:
            return AttentionDims.of(int(q[0]), int(q[1]), int(q[2]), int(q[3]), int(v[3]), self.attrs)

        def get_workspace_size(
            self, inp: list[trt.DynamicPluginTensorDesc], out: list[trt.DynamicPluginTensorDesc]
        ) -> int:
            return workspace_bytes(self._dims(inp[0].max, inp[2].max))  # an upper bound for the profile

        def enqueue(
            self,
            input_desc: list[trt.PluginTensorDesc],
            output_desc: list[trt.PluginTensorDesc],
            inputs: list[int],
            outputs: list[int],
            workspace: int,
            stream: int,
        ) -> None:
            roles = dict(zip(input_roles(self.attrs.mode, len(inputs)), inputs, strict=True))
            enqueue(
                roles["q"],
                roles["k"],
                roles["v"],
                roles.get("hash_vectors", 0),
                roles.get("projection", 0),
                outputs[0],
                workspace,
                self._dims(input_desc[0].dims, input_desc[2].dims),
                self.attrs.scale,
                dtype_name(trt, input_desc[0].type),
                stream,
            )

    creator = creator_class(
        ScatterbrainPlugin, ScatterbrainAttrs, PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE
    )
    return ScatterbrainPlugin, creator


def create_creator() -> trt.IPluginCreatorV3One:
    """A new ScatterbrainAttention plugin creator (register it with
    ``vitrt.plugins.register_tensorrt_plugins``)."""
    return plugin_classes()[1]()
