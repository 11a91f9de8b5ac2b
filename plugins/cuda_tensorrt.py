"""What vitrt's TensorRT plugins share: importing TensorRT, the plugin fields of an op's attribute
dataclass (created from ONNX node attributes, serialised into engines), the capability methods that
are the same for every op, and registration.

Each op folder's ``tensorrt_plugin.py`` defines its ``IPluginV3`` class (with ``IPluginV3OneCore``,
``IPluginV3OneBuild``, ``IPluginV3OneRuntime``) inside a cached factory function, with its
``IPluginCreatorV3One`` from ``creator_class``, because the base classes only exist once ``tensorrt``
is imported and every vitrt module must import without it. Names, versions, namespaces and field
names come from the op's spec.

The TensorRT ONNX parser (onnx-tensorrt ``loadFields``) turns a node's INT attributes into INT32
plugin fields and FLOAT attributes into FLOAT32 fields, for the field names the creator declares; the
same types are used here for serialisation, so one parser reads both.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from vitrt.errors import VitrtError
from vitrt.plugins.lowering import attribute_kinds

if TYPE_CHECKING:
    import tensorrt as trt

A = TypeVar("A")


def tensorrt_missing_reason() -> str | None:
    """Why the TensorRT Python package cannot be used here, or None when it can.

    A ``tensorrt`` that imports but has no ``Builder`` is the type-stubs package (tensorrt-stubs
    installs ``tensorrt/__init__.pyi`` only, which Python imports as an empty namespace package).
    """
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        return f"import tensorrt failed ({exc})"
    if not hasattr(module, "Builder") or not hasattr(module, "IPluginV3"):
        return "the importable 'tensorrt' is not TensorRT (only type stubs?): no tensorrt.Builder / IPluginV3"
    return None


def import_tensorrt() -> Any:
    """The TensorRT module (>= 10.0, for IPluginV3); raises VitrtError naming the fix otherwise."""
    reason = tensorrt_missing_reason()
    if reason:
        raise VitrtError(
            f"vitrt's TensorRT plugins need TensorRT >= 10.0: {reason}. Fix: pip install tensorrt"
        )
    return importlib.import_module("tensorrt")


def field_names(attrs_type: type) -> trt.PluginFieldCollection_:
    """The creator's ``field_names``: one field per attribute of the spec's dataclass, INT32 for ints
    and FLOAT32 for floats (what the ONNX parser produces from INT / FLOAT node attributes)."""
    t = import_tensorrt()
    fields = [
        t.PluginField(
            name, np.array([], dtype=np.int32 if kind == "int" else np.float32), _field_type(t, kind)
        )
        for name, kind in attribute_kinds(attrs_type)
    ]
    # TensorRT converts the Python list type to the C struct (as NVIDIA's samples rely on).
    return cast("trt.PluginFieldCollection_", t.PluginFieldCollection(fields))


def _field_type(t: Any, kind: str) -> Any:
    return t.PluginFieldType.INT32 if kind == "int" else t.PluginFieldType.FLOAT32


def fields_of(attrs: Any) -> trt.PluginFieldCollection_:
    """An attribute dataclass instance as the plugin fields to serialise into an engine."""
    t = import_tensorrt()
    fields = []
    for name, kind in attribute_kinds(type(attrs)):
        value = getattr(attrs, name)
        data = (
            np.array([int(value)], dtype=np.int32) if kind == "int" else np.array([value], dtype=np.float32)
        )
        fields.append(t.PluginField(name, data, _field_type(t, kind)))
    return cast("trt.PluginFieldCollection_", t.PluginFieldCollection(fields))


def attrs_from_fields(attrs_type: type[A], collection: Any) -> A:
    """The spec's attribute dataclass from plugin fields (from the ONNX parser or an engine).

    Accepts any integer / float field width; unknown fields are ignored (e.g. ``plugin_version``);
    attributes without a field keep their dataclass default, and a missing required one raises
    VitrtError naming it.
    """
    kinds = dict(attribute_kinds(attrs_type))
    values: dict[str, Any] = {}
    for i in range(len(collection)):
        f = collection[i]
        name = str(f.name)
        if name not in kinds:
            continue
        data = np.asarray(f.data).reshape(-1)
        if data.size < 1:
            raise VitrtError(f"plugin field {name!r} is empty")
        values[name] = int(data[0]) if kinds[name] == "int" else float(data[0])
    try:
        return attrs_type(**values)
    except TypeError as exc:
        raise VitrtError(
            f"plugin fields {sorted(values)} do not make a {attrs_type.__name__}: {exc}"
        ) from exc


def dtype_name(t: Any, data_type: Any) -> str:
    """A TensorRT DataType as the torch / numpy dtype name the kernels' launchers take."""
    if data_type == t.DataType.FLOAT:
        return "float32"
    if data_type == t.DataType.HALF:
        return "float16"
    raise VitrtError(f"unsupported tensor type {data_type}")


def volume(dims: Any) -> int:
    """Number of elements of a ``trt.Dims``."""
    n = 1
    for i in range(len(dims)):
        n *= int(dims[i])
    return n


class PluginCommon:
    """The ``IPluginV3`` capability methods that are the same for every vitrt plugin (listed first in a
    plugin's bases, so that they are what TensorRT calls). Subclasses set ``attrs`` and implement
    ``clone``."""

    attrs: Any

    def init_plugin(
        self, trt: Any, attrs: Any, name: str, version: str, namespace: str, num_outputs: int
    ) -> None:
        """What every plugin's ``__init__`` does: initialise the four TensorRT bases (pybind11 needs
        each called explicitly) and set the spec's identity and attributes."""
        for base in (trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
            base.__init__(self)
        self.attrs = attrs
        self.num_outputs = num_outputs
        self.plugin_name, self.plugin_version, self.plugin_namespace = name, version, namespace
        self.timing_cache_id = ""
        self.metadata_string = ""

    def get_capability_interface(self, type: trt.PluginCapabilityType) -> Any:
        """One object implements the core, build and runtime capabilities."""
        return self

    def get_fields_to_serialize(self) -> trt.PluginFieldCollection_:
        """The attributes, restored by the creator's ``create_plugin`` when an engine is loaded."""
        return fields_of(self.attrs)

    def configure_plugin(
        self, inp: list[trt.DynamicPluginTensorDesc], out: list[trt.DynamicPluginTensorDesc]
    ) -> None:
        """Nothing to configure: every size is read from the descriptors in ``enqueue``."""

    def on_shape_change(self, inp: list[trt.PluginTensorDesc], out: list[trt.PluginTensorDesc]) -> None:
        """Nothing cached per shape."""

    def get_valid_tactics(self) -> list[int]:
        """One implementation: no custom tactics."""
        return []

    def set_tactic(self, tactic: int) -> None:
        """Only the default tactic (0) exists."""

    def clone(self) -> Any:
        """A copy with the same attributes (each op's plugin class implements it)."""
        raise NotImplementedError

    def attach_to_context(self, resource_context: Any) -> Any:
        """A fresh copy per execution context (kernels are loaded per CUDA context by the launcher)."""
        return self.clone()


def creator_class(
    plugin: type[trt.IPluginV3], attrs_type: type, name: str, version: str, namespace: str
) -> type[trt.IPluginCreatorV3One]:
    """The ``IPluginCreatorV3One`` of an op: identity from the spec, ``field_names`` from its attribute
    dataclass, and ``create_plugin`` = ``plugin(attrs)`` from the fields (an ONNX node's attributes or
    an engine's serialised fields). ``plugin``'s constructor takes the attributes."""
    import_tensorrt()
    import tensorrt as trt

    class Creator(trt.IPluginCreatorV3One):
        def __init__(self) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = name
            self.plugin_version = version
            self.plugin_namespace = namespace
            self.field_names = field_names(attrs_type)

        def create_plugin(
            self, name: str, field_collection: trt.PluginFieldCollection_, phase: trt.TensorRTPhase
        ) -> trt.IPluginV3:
            return plugin(attrs_from_fields(attrs_type, field_collection))

    Creator.__name__ = Creator.__qualname__ = f"{name}Creator"
    Creator.__doc__ = f"Creates {name} plugins from ONNX node attributes or serialised engine fields."
    return Creator


_REGISTERED: dict[tuple[int, str], Any] = {}


def register_creator(registry: Any, creator: Any, namespace: str) -> Any:
    """Register ``creator`` in ``registry`` under ``namespace`` once per registry; keeps the creator
    alive (the registry does not own Python objects). Returns the registered creator."""
    key = (id(registry), f"{namespace}::{creator.name}")
    if key not in _REGISTERED:
        if not registry.register_creator(creator, namespace):
            existing = registry.get_creator(creator.name, creator.plugin_version, namespace)
            if existing is None:
                raise VitrtError(
                    f"TensorRT refused to register the {namespace}::{creator.name} plugin creator"
                )
            creator = existing
        _REGISTERED[key] = creator
    return _REGISTERED[key]
