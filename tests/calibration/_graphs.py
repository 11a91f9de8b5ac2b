"""Small hand-built ONNX graphs with the structure of a ViT, for Q/DQ placement and calibration tests.

``vit_like``: images [1, 3, 8, 8] -> Conv patch embedding (4 tokens of 16) -> pre-norm attention
block (LayerNormalization, qkv MatMul, q k^T and attn v MatMuls, Softmax, proj) -> MLP with exact
GELU (Div, Erf, Add, Mul) -> a T2T-performer-like span (MatMul by a random-feature matrix, Sub,
Exp, activation x activation MatMuls, output projection) -> optionally a ``vitrt::TestPlugin``
node (a stand-in for TokenFusion / ScatterbrainAttention: placement only looks at the domain)
followed by a MatMul on its reshaped output -> LayerNormalization -> class token -> Gemm
head (transB=1, with a bias) -> logits [1, 10]. Node names are module paths like vitrt's exports.
``linear_bias``: the block's qkv, proj, fc1 and fc2 MatMuls get a bias Add, as exporters write a
Linear on a 3-D input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PLUGIN_DOMAIN = "vitrt"
# Not a registered op: the real TokenFusion's ONNX schema (4 inputs) is registered once plugins load.
PLUGIN_OP = "TestPlugin"
IR_VERSION = 10  # what torch.onnx writes; onnx 1.23 would default to 14, newer than ONNX Runtime 1.31 reads


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


class _G:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(
        self, op: str, name: str, inputs: Sequence[str], n_out: int = 1, domain: str = "", **attrs: Any
    ) -> list[str]:
        outs = [f"{name}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs

    def one(self, op: str, name: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.node(op, name, inputs, **attrs)[0]


def vit_like(
    seed: int = 0, plugin: bool = False, opset: int = 18, linear_bias: bool = False
) -> onnx.ModelProto:
    g = _G(seed)
    r = g.rng

    def bias(x: str, module: str, width: int) -> str:
        if not linear_bias:
            return x
        return g.one("Add", f"{module}/Add_1", [x, g.init(f"{module}.bias", _w(r, width))])

    d, n = 16, 4
    x = g.one(
        "Conv",
        "patch_embed.proj/Conv_1",
        ["images", g.init("conv.w", _w(r, d, 3, 4, 4)), g.init("conv.b", _w(r, d))],
        strides=[4, 4],
    )
    x = g.one(
        "Reshape", "patch_embed/Reshape_1", [x, g.init("shape_tokens", np.array([1, d, n], dtype=np.int64))]
    )
    x = g.one("Transpose", "patch_embed/Transpose_1", [x], perm=[0, 2, 1])  # [1, 4, 16]
    ln_w, ln_b = g.init("ln.w", np.ones(d, np.float32)), g.init("ln.b", np.zeros(d, np.float32))
    # attention block
    h = g.one("LayerNormalization", "blocks.0.norm1/LayerNormalization_1", [x, ln_w, ln_b], axis=-1)
    qkv = g.one("MatMul", "blocks.0.attn.qkv/MatMul_1", [h, g.init("w_qkv", _w(r, d, 3 * d))])
    qkv = bias(qkv, "blocks.0.attn.qkv", 3 * d)
    q, k, v = g.node(
        "Split",
        "blocks.0.attn/Split_1",
        [qkv, g.init("split3", np.array([d] * 3, np.int64))],
        n_out=3,
        axis=2,
    )
    q = g.one("Mul", "blocks.0.attn.core/Mul_1", [q, g.init("qscale", np.array(0.25, np.float32))])
    kt = g.one("Transpose", "blocks.0.attn.core/Transpose_1", [k], perm=[0, 2, 1])
    s = g.one("MatMul", "blocks.0.attn.core/MatMul_1", [q, kt])
    a = g.one("Softmax", "blocks.0.attn.core/Softmax_1", [s], axis=-1)
    o = g.one("MatMul", "blocks.0.attn.core/MatMul_2", [a, v])
    o = g.one("MatMul", "blocks.0.attn.proj/MatMul_1", [o, g.init("w_proj", _w(r, d, d))])
    o = bias(o, "blocks.0.attn.proj", d)
    x = g.one("Add", "blocks.0/Add_1", [x, o])
    # MLP with exact GELU
    h = g.one("LayerNormalization", "blocks.0.norm2/LayerNormalization_1", [x, ln_w, ln_b], axis=-1)
    h = g.one("MatMul", "blocks.0.mlp.fc1/MatMul_1", [h, g.init("w_fc1", _w(r, d, 2 * d))])
    h = bias(h, "blocks.0.mlp.fc1", 2 * d)
    e = g.one("Div", "blocks.0.mlp.act/Div_1", [h, g.init("sqrt2", np.array(np.sqrt(2.0), np.float32))])
    e = g.one("Erf", "blocks.0.mlp.act/Erf_1", [e])
    e = g.one("Add", "blocks.0.mlp.act/Add_1", [e, g.init("one", np.array(1.0, np.float32))])
    e = g.one("Mul", "blocks.0.mlp.act/Mul_1", [e, g.init("half", np.array(0.5, np.float32))])
    h = g.one("Mul", "blocks.0.mlp.act/Mul_2", [h, e])
    h = g.one("MatMul", "blocks.0.mlp.fc2/MatMul_1", [h, g.init("w_fc2", _w(r, 2 * d, d))])
    h = bias(h, "blocks.0.mlp.fc2", d)
    x = g.one("Add", "blocks.0/Add_2", [x, h])
    # performer-like span: phi = exp(x w - c); y = phi (phi^T x); proj(y)
    f = g.one("MatMul", "perf/MatMul_1", [x, g.init("w_feat", _w(r, d, 8, scale=0.1))])
    f = g.one("Sub", "perf/Sub_1", [f, g.init("c", np.array(1.0, np.float32))])
    phi = g.one("Exp", "perf/Exp_1", [f])  # [1, 4, 8]
    pt = g.one("Transpose", "perf/Transpose_1", [phi], perm=[0, 2, 1])  # [1, 8, 4]
    kv = g.one("MatMul", "perf/MatMul_2", [pt, x])  # [1, 8, 16]
    y = g.one("MatMul", "perf/MatMul_3", [phi, kv])  # [1, 4, 16]
    y = g.one("Div", "perf/Div_1", [y, g.init("norm", np.array(4.0, np.float32))])
    y = g.one("MatMul", "perf.proj/MatMul_1", [y, g.init("w_pproj", _w(r, d, d))])
    x = g.one("Add", "perf/Add_1", [x, y])
    if plugin:
        x = g.one(PLUGIN_OP, "blocks.1/TestPlugin_1", [x], domain=PLUGIN_DOMAIN, r=0)
        z = g.one("Reshape", "blocks.1/Reshape_1", [x, g.init("shape_same", np.array([1, n, d], np.int64))])
        x = g.one("MatMul", "blocks.1.attn.qkv/MatMul_1", [z, g.init("w_after", _w(r, d, d))])
    h = g.one("LayerNormalization", "norm/LayerNormalization_1", [x, ln_w, ln_b], axis=-1)
    cls = g.one("Gather", "model/Gather_1", [h, g.init("zero", np.array(0, np.int64))], axis=1)  # [1, 16]
    g.nodes.append(
        helper.make_node(
            "Gemm",
            [cls, g.init("head.weight", _w(r, 10, d)), g.init("head.bias", _w(r, 10))],
            ["logits"],
            name="head/Gemm_1",
            transB=1,
        )
    )
    graph = helper.make_graph(
        g.nodes,
        "vit_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        g.inits,
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(PLUGIN_DOMAIN, 1)] if plugin else [])
    return helper.make_model(graph, opset_imports=opsets, producer_name="vitrt-tests", ir_version=IR_VERSION)


def two_layers(seed: int = 0, outlier: float = 300.0, dynamic: bool = False) -> onnx.ModelProto:
    """images [B, 3, 4, 4] -> flatten (48) -> MatMul ``fc1`` (48 -> 32) -> MatMul ``fc2`` (32 -> 10).

    B = 1, or a dynamic axis ``batch`` with ``dynamic``.

    ``fc1``'s weight has one output column ``outlier`` times larger than the others, so fc2's
    input has one huge channel: per-tensor int8 on that input rounds the other channels away, and
    fc2 is by far the most sensitive layer. fc2's rows for the other channels carry the signal.
    """
    g = _G(seed)
    r = g.rng
    x = g.one("Flatten", "flatten/Flatten_1", ["images"], axis=1)
    w1 = _w(r, 48, 32)
    w1[:, 0] *= outlier
    h = g.one("MatMul", "fc1/MatMul_1", [x, g.init("w1", w1)])
    w2 = _w(r, 32, 10)
    w2[0] /= outlier
    g.nodes.append(helper.make_node("MatMul", [h, g.init("w2", w2)], ["logits"], name="fc2/MatMul_1"))
    graph = helper.make_graph(
        g.nodes,
        "two_layers",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch" if dynamic else 1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch" if dynamic else 1, 10])],
        g.inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="vitrt-tests", ir_version=IR_VERSION
    )


def no_layers() -> onnx.ModelProto:
    """images [1, 3, 4, 4] -> Relu -> out: nothing to quantize."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["out"], name="act/Relu_1")],
        "no_layers",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)


def save(model: onnx.ModelProto, path: Path, check: bool = True) -> Path:
    if check:
        onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def plugins_as_identity(path: Path) -> Path:
    """A copy of the model at ``path`` whose vitrt plugin nodes are Identity: stands in for a
    session with vitrt's custom-op kernels (the stand-in plugin is the identity)."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.domain == PLUGIN_DOMAIN:
            node.domain, node.op_type = "", "Identity"
            del node.attribute[:]
    out = path.with_name(path.stem + ".ort.onnx")
    onnx.save_model(model, str(out))
    return out
