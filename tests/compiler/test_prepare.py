"""The graph preparation (vitrt.compiler.prepare) on foreign exports of the trained digits models and on
vitrt's own plugin exports: same function on ONNX Runtime (fresh random inputs, stated tolerance),
LayerNorm / GELU fused, stable readable names, the ViT structure recognised."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from vitrt.compiler.cli import main
from vitrt.compiler.prepare import PreparationError, prepare_model, prepare_onnx
from vitrt.deploy.runners import OnnxRuntimeRunner

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "benchmarks" / "digits"
NAME = re.compile(r"^[A-Za-z0-9_.]+/[A-Za-z0-9]+_[0-9]+$")


def train_digits() -> object:
    """benchmarks/train_digits.py as a module (the digits models and the foreign exporter)."""
    if "train_digits" not in sys.modules:
        spec = importlib.util.spec_from_file_location("train_digits", ROOT / "benchmarks" / "train_digits.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["train_digits"] = module
        spec.loader.exec_module(module)
    return sys.modules["train_digits"]


@pytest.fixture(scope="module")
def foreign_deit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    td = train_digits()
    model, _ = td.load_trained(DIGITS, "digits_deit")  # type: ignore[attr-defined]
    return td.export_foreign(model, tmp_path_factory.mktemp("foreign") / "deit.onnx", 64)  # type: ignore[attr-defined]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    runner = OnnxRuntimeRunner(path, threads=1)
    name = next(iter(runner.input_shapes))
    return runner.infer({name: x})["logits"]


def test_foreign_export_is_prepared_without_changing_its_function(foreign_deit: Path, tmp_path: Path) -> None:
    source = onnx.load(str(foreign_deit))
    assert source.opset_import[0].version == 14 and not any(
        n.op_type == "LayerNormalization" for n in source.graph.node
    )
    out, report = prepare_onnx(foreign_deit, tmp_path / "prepared.onnx")
    prepared = onnx.load(str(out))
    # opset raised for LayerNormalization; 4 blocks x 2 norms + the final norm fused; shape math folded
    assert report.opset == (14, 17)
    assert sum(n.op_type == "LayerNormalization" for n in prepared.graph.node) == 9
    assert report.fused == {"LayerNormalization": 9}
    assert report.nodes[1] < report.nodes[0] / 2
    assert not any(n.op_type in ("Pow", "Sqrt") for n in prepared.graph.node)
    # the structure: q k^T and probs v in every block, two residual adds per block
    assert sorted(report.attention_matmuls.values()) == ["context"] * 4 + ["scores"] * 4
    assert all(re.match(r"blocks\.[0-3]\.attn", n) for n in report.attention_matmuls)
    assert len(report.residual_adds) == 8
    # readable, unique, module-path names; interface kept (dynamic batch, names)
    names = [n.name for n in prepared.graph.node]
    assert len(set(names)) == len(names) and all(NAME.match(n) for n in names), names[:5]
    assert "blocks.2.attn.core/Softmax_1" in names
    # every Linear and LayerNorm named after its module, also where onnxsim rebuilt a MatMul + Add as a Gemm
    layers = [n for n in names if n.split("/")[1].rsplit("_", 1)[0] in ("Gemm", "LayerNormalization")]
    assert [n for n in layers if n.startswith("blocks.1.")] == [
        "blocks.1.norm1/LayerNormalization_1",
        "blocks.1.attn.qkv/Gemm_1",
        "blocks.1.attn.proj/Gemm_1",
        "blocks.1.norm2/LayerNormalization_1",
        "blocks.1.mlp.fc1/Gemm_1",
        "blocks.1.mlp.fc2/Gemm_1",
    ]
    assert [i.name for i in prepared.graph.input] == ["pixel_values"]
    assert prepared.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # same function on fresh inputs at another batch size (float32 reordering only)
    x = np.random.default_rng(7).standard_normal((3, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(foreign_deit, x), atol=1e-4, rtol=1e-4)
    # preparing again renames nothing (onnxsim may reorder the nodes)
    again, _ = prepare_model(prepared)
    assert sorted(n.name for n in again.graph.node) == sorted(names)


def test_opset_20_fuses_gelu_into_the_standard_op(foreign_deit: Path) -> None:
    prepared, report = prepare_model(onnx.load(str(foreign_deit)), opset=20)
    gelus = [n for n in prepared.graph.node if n.op_type == "Gelu"]
    assert len(gelus) == 4 and {n.domain for n in gelus} == {""}
    assert report.fused == {"LayerNormalization": 9, "Gelu": 4} and report.opset == (14, 20)
    assert not any(n.op_type == "Erf" for n in prepared.graph.node)
    assert all(o.domain != "com.microsoft" for o in prepared.opset_import)


def test_a_change_of_function_is_caught(foreign_deit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitrt.compiler import prepare as module

    real = module._ort_fusions

    def broken(model: onnx.ModelProto, gelu: bool) -> onnx.ModelProto:
        fused = real(model, gelu)
        for node in fused.graph.node:  # a wrong epsilon: small, but a different function
            if node.op_type == "LayerNormalization":
                for attr in node.attribute:
                    if attr.name == "epsilon":
                        attr.f = 0.5
        return fused

    monkeypatch.setattr(module, "_ort_fusions", broken)
    with pytest.raises(PreparationError, match="changed the function: output 'logits'"):
        prepare_model(onnx.load(str(foreign_deit)))


@pytest.mark.slow
def test_plugin_nodes_stay_opaque_and_named(tmp_path: Path) -> None:
    from vitrt.compiler.export import export_onnx

    path = export_onnx("deit_tiny_patch16_224", tmp_path / "mctf.onnx", img_size=64, fusion="mctf")
    source = onnx.load(str(path))
    prepared, report = prepare_model(source)
    plugins = [n for n in prepared.graph.node if n.domain == "vitrt"]
    assert len(plugins) == sum(n.domain == "vitrt" for n in source.graph.node) > 0
    assert all(NAME.match(n.name) and n.op_type == "TokenFusion" for n in plugins)
    assert report.opset == (18, 18) and report.check["logits"] <= 1e-4
    assert {p.key for p in prepared.metadata_props} == {p.key for p in source.metadata_props}


def test_cli_prepare(foreign_deit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.onnx"
    assert main(["prepare", str(foreign_deit), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "opset 14 -> 17" in text and "9 LayerNormalization" in text and "same function" in text
    assert main(["prepare", str(foreign_deit), "-o", str(foreign_deit)]) == 2  # never over its input
