"""vitrt's TensorRT plugins: one-node networks per plugin, parsed from ONNX by TensorRT's ONNX parser,
built, serialised, deserialised and run, against the PyTorch reference; and a whole exported model with
both plugins against PyTorch.

Skipped, with the reason printed, where TensorRT cannot be imported (or only its type stubs can) or
there is no CUDA GPU. TensorRT is never mocked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from tests._support.kernel_checks import prepare_gpu_kernels
from vitrt.plugins.lsh_attention.spec import Mode, ScatterbrainAttrs
from vitrt.plugins.token_fusion.spec import Pooling, TokenFusionAttrs

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


def _skip_reason() -> str | None:
    from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

    reason = tensorrt_missing_reason()
    if reason:
        return f"{reason}; these tests need TensorRT >= 10.0 and a GPU"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: TensorRT needs a CUDA GPU"
    return None


@pytest.fixture(autouse=True, scope="module")
def trt() -> Any:
    reason = _skip_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    import tensorrt

    from vitrt.plugins import register_tensorrt_plugins

    prepare_gpu_kernels()
    torch.cuda.init()
    register_tensorrt_plugins()
    return tensorrt


_TORCH = {"FLOAT": torch.float32, "HALF": torch.float16, "INT64": torch.int64, "INT32": torch.int32}


def _engine(trt: Any, onnx_bytes: bytes) -> Any:
    """Parse, build, serialise and deserialise (the round trip restores the plugins from their fields)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AssertionError("ONNX parse failed: " + "; ".join(errors))
    config = builder.create_builder_config()
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "engine build failed (see TensorRT's log above)"
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    assert engine is not None
    return engine


def _run(trt: Any, engine: Any, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
    context = engine.create_execution_context()
    outputs: dict[str, Tensor] = {}
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            t = feeds[name].contiguous()
            feeds[name] = t
            context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, t.data_ptr())
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(context.get_tensor_shape(name))
            dtype = _TORCH[engine.get_tensor_dtype(name).name]
            fill = -1 if dtype in (torch.int64, torch.int32) else math.nan
            outputs[name] = torch.full(shape, fill, dtype=dtype, device="cuda")  # poisoned
            context.set_tensor_address(name, outputs[name].data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return outputs


def _onnx_type(dtype: torch.dtype) -> int:
    from onnx import TensorProto

    return {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16}[dtype]


def _one_node_model(
    op: str,
    attrs: dict[str, Any],
    inputs: list[tuple[str, Tensor]],
    node_inputs: list[str],
    outputs: list[tuple[str, int, list[int]]],
    initializers: dict[str, Tensor],
) -> bytes:
    """A one-node ONNX graph ``vitrt::<op>`` as the exporter writes it (fixed tensors as initializers)."""
    from onnx import helper, numpy_helper

    node = helper.make_node(op, node_inputs, [n for n, _, _ in outputs], domain="vitrt", **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(n, _onnx_type(t.dtype), list(t.shape)) for n, t in inputs],
        [helper.make_tensor_value_info(n, ty, shape) for n, ty, shape in outputs],
        [numpy_helper.from_array(t.detach().cpu().numpy(), n) for n, t in initializers.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vitrt", 1)]
    )
    return bytes(model.SerializeToString())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("bidirectional", [1, 0], ids=["mctf", "tome"])
def test_token_fusion_plugin(trt: Any, dtype: torch.dtype, bidirectional: int) -> None:
    from onnx import TensorProto

    from vitrt.plugins.token_fusion.reference import token_fusion
    from vitrt.plugins.token_fusion.spec import INPUT_NAMES, OUTPUT_NAMES, PLUGIN_NAME

    b, n, c = 4, 197, 384
    attrs = TokenFusionAttrs(
        r=16,
        tau_info=20.0 if bidirectional else 0.0,
        tau_size=40.0 if bidirectional else 0.0,
        bidirectional=bidirectional,
        pooling=int(Pooling.ATTN_SIZE if bidirectional else Pooling.SIZE),
    )
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randn(b, n, c, device="cuda", generator=g).to(dtype)
    info = (torch.rand(b, n, device="cuda", generator=g) / n + 1e-4).to(dtype)
    size = torch.randint(1, 4, (b, n), device="cuda", generator=g).to(dtype)
    feeds = dict(zip(INPUT_NAMES, (x, x.clone(), info, size), strict=True))
    elem = _onnx_type(dtype)
    n_out = n - attrs.r
    model = _one_node_model(
        PLUGIN_NAME,
        attrs.onnx_attributes(),
        list(feeds.items()),
        list(INPUT_NAMES),
        [(OUTPUT_NAMES[0], elem, [b, n_out, c]), (OUTPUT_NAMES[1], elem, [b, n_out]),
         (OUTPUT_NAMES[2], TensorProto.INT64, [b, n])],
        {},
    )  # fmt: skip
    out = _run(trt, _engine(trt, model), dict(feeds))
    ref = token_fusion(x, x, info, size, attrs)
    for name, expected in zip(OUTPUT_NAMES, ref, strict=True):
        got = out[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        if got.dtype == torch.int64:
            # decisions may differ only on a float32 near-tie of two best-partner scores (tests/gpu)
            assert float((got == expected).all(dim=1).float().mean()) >= 0.75, name
        else:
            same = (out[OUTPUT_NAMES[2]] == ref[2]).all(dim=1)
            tol = 1e-4 if dtype == torch.float32 else 1e-2
            torch.testing.assert_close(
                got[same].float(), expected[same].float(), rtol=tol, atol=tol * float(expected.abs().max())
            )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("mode", list(Mode), ids=[m.name.lower() for m in Mode])
def test_scatterbrain_plugin(
    trt: Any, mode: Mode, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitrt.plugins.lsh_attention import reference
    from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda_debug
    from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection
    from vitrt.plugins.lsh_attention.reference import attention_by_mode
    from vitrt.plugins.lsh_attention.spec import OUTPUT_NAMES, PLUGIN_NAME

    b, h, n, e, c, r, m, scale = 2, 1, 784, 64, 6, 2, 3, 576**-0.5
    sparse, low_rank = mode != Mode.PERFORMER, mode != Mode.LSH
    attrs = ScatterbrainAttrs(mode, c if sparse else 0, r if sparse else 0, 2 * m if low_rank else 0, scale)
    g = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = (torch.randn(b, h, n, e, device="cuda", generator=g).to(dtype) for _ in range(3))
    gen = torch.Generator().manual_seed(7)
    hv = draw_hash_vectors(r, e, gen).cuda() if sparse else None
    proj = draw_projection(m, e, gen).cuda() if low_rank else None
    names = attrs.input_names()
    fixed = {n_: t for n_, t in (("hash_vectors", hv), ("projection", proj)) if t is not None and n_ in names}
    model = _one_node_model(
        PLUGIN_NAME,
        attrs.onnx_attributes(),
        [("q", q), ("k", k), ("v", v)],
        list(names),
        [(OUTPUT_NAMES[0], _onnx_type(dtype), [b, h, n, e])],
        fixed,
    )
    out = _run(trt, _engine(trt, model), {"q": q, "k": k, "v": v})[OUTPUT_NAMES[0]]
    assert not out.isnan().any()
    # The plugin runs the same kernels as scatterbrain_cuda: compare with the reference on the kernels'
    # clusters (the hash sort is checked exactly in tests/gpu).
    _, views = scatterbrain_cuda_debug(q, k, v, hv, proj, attrs)
    if sparse:
        orders = (views["q_perm"], views["k_perm"])
        monkeypatch.setattr(reference, "_hash_orders", lambda *args: orders)
    expected = attention_by_mode(q, k, v, hv, proj, attrs)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(
        out.float(), expected.float(), rtol=tol, atol=tol * float(expected.float().abs().max())
    )


def test_exported_model_with_both_plugins(trt: Any, tmp_path: Path) -> None:
    """A whole T2T-ViT exported by ``vitrt.compiler.export`` (plugin lowering: Scatterbrain in the T2T module,
    MCTF token fusion in the blocks) runs in TensorRT like the PyTorch model."""
    from vitrt.compiler.export import ExportConfig, export_model, model_from_config

    config = ExportConfig(
        "t2t_vit_t_14",  # Scatterbrain replaces the 'transformer' T2T attentions (t2t_vit_7 has 'performer')
        lowering="plugin",
        input_size=(3, 64, 64),
        img_size=64,
        fusion="mctf",
        attention="scatterbrain",
    )
    model = model_from_config(config).eval()
    path = export_model(model, tmp_path / "t2t.onnx", config)
    engine = _engine(trt, path.read_bytes())
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    logits = _run(trt, engine, {"images": images.cuda()})["logits"].cpu()
    with torch.no_grad():
        expected = model(images)
    # Same function; float32 rounding differs (and a fusion near-tie could change a decision), so the
    # check is the prediction and a loose tolerance.
    assert int(logits.argmax()) == int(expected.argmax())
    np.testing.assert_allclose(
        logits.numpy(), expected.numpy(), rtol=1e-2, atol=1e-2 * float(expected.abs().max())
    )
