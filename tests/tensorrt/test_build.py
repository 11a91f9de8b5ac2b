"""``vitrt.build`` for a TensorRT target: a small exported model with both plugins (Scatterbrain attention in
the T2T module, MCTF token fusion in the blocks, plugin lowering) built as FP32, FP16 and INT8 engines for
the target of this GPU, loaded through their manifest and run against ONNX Runtime on the same ONNX file.

Skipped, with the reason printed, where TensorRT cannot be imported (or only its type stubs can), where there
is no CUDA GPU, or where no vitrt target has this GPU's SM. TensorRT is never mocked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.slow]

MIN_COSINE = {"fp16": 0.99, "int8": 0.99}
"""Least cosine of the engine's logits to ONNX Runtime on the same file: FP16 rounds (with float32 islands),
INT8 runs TensorRT's int8 kernels on the file's Q/DQ scales where ONNX Runtime runs its own."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, target: str) -> dict[str, Path]:
    """T2T-ViT-t-14 at 64 x 64 with Scatterbrain and MCTF (plugin lowering, 10 classes, random init) and its
    INT8 file (``vitrt calibrate``, 16 synthetic samples)."""
    import vitrt
    from vitrt.compiler.export import ExportConfig, export_model, model_from_config

    folder = tmp_path_factory.mktemp("engine_files")
    config = ExportConfig(
        "t2t_vit_t_14",
        lowering="plugin",
        input_size=(3, 64, 64),
        img_size=64,
        num_classes=10,
        fusion="mctf",
        attention="scatterbrain",
    )
    fp32 = export_model(model_from_config(config), folder / "t2t.onnx", config)
    int8 = folder / "t2t.int8.onnx"
    vitrt.calibrate(fp32, "synthetic", int8, num_samples=16, batch_size=8, eval_samples=8, sensitivity=False,
                    progress=False)  # fmt: skip
    return {"fp32": fp32, "int8": int8}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_with_both_plugins_matches_onnx_runtime(
    files: dict[str, Path], target: str, tmp_path: Path, precision: str
) -> None:
    import vitrt
    from vitrt.deploy.runners import OnnxRuntimeRunner

    source = files["int8" if precision == "int8" else "fp32"]
    timing = tmp_path / "timing.cache"
    result = vitrt.build(source, tmp_path / "engine", target=target, precision=precision, timing_cache=timing)
    m = result.manifest
    assert m.kind == "engine" and m.precision == precision and m.needs_python_plugins
    assert {p["name"] for p in m.plugins} == {"TokenFusion", "ScatterbrainAttention"}
    assert "not under trtexec" in m.python_plugins
    assert (tmp_path / "engine" / "model.plan").stat().st_size == m.extra["engine_bytes"] > 0
    assert timing.stat().st_size > 0  # persisted for the next build
    assert [t["name"] for t in m.io if t["mode"] == "input"] == ["images"]
    layers = json.loads((tmp_path / "engine" / "layers.json").read_text())
    assert "blocks." in json.dumps(layers)  # DETAILED: layers keep the module paths of their ONNX nodes
    plan: dict[str, Any] = m.plan or {}
    if precision == "fp16" and plan["tensorrt"].startswith("10."):
        assert m.extra["layer_constraints_matched"] > 0  # the float32 islands, constrained on 10.x
    images = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = vitrt.load_artifact(tmp_path / "engine").infer({"images": images})["logits"]
    expected = OnnxRuntimeRunner(source).infer({"images": images})["logits"]
    assert got.shape == expected.shape == (1, 10)
    if precision == "fp32":
        # the same function; float32 rounding differs (and a fusion near-tie could change a decision)
        assert int(got.argmax()) == int(expected.argmax())
        np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2 * float(np.abs(expected).max()))
    else:
        assert _cosine(got, expected) >= MIN_COSINE[precision]


def test_loading_an_engine_checks_its_manifest_first(
    files: dict[str, Path], target: str, tmp_path: Path
) -> None:
    import vitrt
    from vitrt.compiler.environment import gather_environment
    from vitrt.compiler.manifest import IncompatibleArtifactError

    vitrt.build(files["fp32"], tmp_path / "engine", target=target)
    here = gather_environment()
    with pytest.raises(IncompatibleArtifactError, match=r"TensorRT version: needs TensorRT .* exactly"):
        vitrt.load_artifact(tmp_path / "engine", environment=here.with_changes(tensorrt="10.0.0.1"))
    with pytest.raises(IncompatibleArtifactError, match="GPU architecture"):
        vitrt.load_artifact(tmp_path / "engine", environment=here.with_changes(sm="sm_72"))
