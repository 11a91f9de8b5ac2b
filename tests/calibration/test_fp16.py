"""FP16 and INT8+FP16 graphs (vitrt.calibration.fp16): the float32 islands, verification against PyTorch
FP32 on ONNX Runtime for the export matrix, the trained digits models' held-out top-1, the recipe, bad
input. Tolerances are stated where they are asserted; inputs are fresh random draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tests.compiler.test_prepare import DIGITS, train_digits
from vitrt.calibration.calibrate import calibrate_onnx
from vitrt.calibration.errors import CalibrationError
from vitrt.calibration.fp16 import (
    FLOAT16,
    PrecisionError,
    convert_to_fp16,
    fp16_model,
    fp16_onnx,
    fp32_islands,
)
from vitrt.calibration.recipe import read_recipe
from vitrt.compiler.cli import main
from vitrt.compiler.export import METADATA_KEY, export_onnx, model_from_config, read_export_config
from vitrt.compiler.prepare import run_onnxruntime
from vitrt.compiler.verify import verify_onnx
from vitrt.deploy.runners import TorchRunner
from vitrt.errors import ConfigError


class _BigActivations(nn.Module):
    """Linear -> LayerNorm -> Linear whose LayerNorm input reaches |x| ~ 1e4: x^2 ~ 1e8 > 65504."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(3 * 8 * 8, 64), nn.LayerNorm(64), nn.Linear(64, 10)
        with torch.no_grad():
            self.fc1.weight.mul_(5000.0)
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x.flatten(1))))


def test_naive_fp16_layernorm_overflows_where_vitrt_islands_do_not(tmp_path: Path) -> None:
    torch.manual_seed(0)
    td = train_digits()
    path = td.export_foreign(_BigActivations(), tmp_path / "big.onnx", 8)  # type: ignore[attr-defined]
    source = onnx.load(str(path))  # opset 14: LayerNorm as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div
    x = np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32)
    reference = run_onnxruntime(source, {"pixel_values": x})["logits"]
    hidden = run_onnxruntime(_with_output(source, "fc1"), {"pixel_values": x})
    assert np.abs(next(v for k, v in hidden.items() if k != "logits")).max() > 256  # x^2 > float16 max

    def error(model: onnx.ModelProto) -> float:
        # onnx's reference evaluator computes each op in the tensor types the graph gives (numpy
        # float16), as a strongly typed engine must; ONNX Runtime's CPU kernels upcast float16 math
        # inside some ops (and its optimizer fuses the primitive LayerNorm), which hides the overflow.
        from onnx.reference import ReferenceEvaluator

        (out,) = ReferenceEvaluator(model).run(None, {"pixel_values": x})
        out = np.asarray(out, np.float64)
        return float(np.abs(out - reference).max() / np.abs(reference).max())

    naive = convert_to_fp16(source, keep=())  # every op float16, no islands
    assert not np.isfinite(error(naive)) or error(naive) > 0.5  # the variance overflowed
    prepared, _ = fp16_model(source)  # LayerNorm fused, kept float32
    assert error(prepared) < 1e-2
    unprepared, recipe = fp16_model(source, prepare=False)  # the square span found in primitive ops
    assert {n.op_type for n in recipe.keep_fp32} >= {"Pow", "ReduceMean", "Sqrt", "Div"}
    assert error(unprepared) < 1e-2


def _with_output(model: onnx.ModelProto, scope: str) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    node = next(
        n for n in copy.graph.node if f"/{scope}/" in n.name and n.op_type in ("Gemm", "Add", "MatMul")
    )
    copy.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    return copy


# -- the export matrix: FP16 and INT8+FP16 verified against PyTorch FP32 --------------------------------

# Every model family, op and lowering at least once (deit_small and t2t_vit_14 without options added 70 s
# of the CPU suite's time and nothing that deit_small + MCTF and t2t_vit_7 do not cover).
MATRIX = [
    ("deit_tiny_patch16_224", {}),
    ("t2t_vit_7", {}),
    ("t2t_vit_t_14", {"attention": "scatterbrain"}),
    ("deit_small_patch16_224", {"fusion": "mctf"}),
    # the portable lowering: token fusion's matching scores are graph ops, kept float32 (ranking span)
    ("deit_tiny_patch16_224", {"fusion": "mctf", "lowering": "portable"}),
]
# Random-init logits are O(1). FP16 (float32 islands) vs PyTorch float32: |a - b| <= 2e-2 + 2e-2 |b|
# (float16 has an 11-bit significand, ~5e-4 relative per rounding, over 7-14 blocks). INT8+FP16 adds the
# INT8 error: |a - b| <= 0.25 + 0.1 |b|, cosine of the logits >= 0.995 to the INT8 file and >= 0.97 to
# PyTorch FP32.
FP16_TOL = {"atol": 2e-2, "rtol": 2e-2}
INT8_FP16_TOL = {"atol": 0.25, "rtol": 0.1}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options"), MATRIX, ids=[f"{n}-{'-'.join(o.values()) or 'dense'}" for n, o in MATRIX]
)
def test_export_matrix_fp16_and_int8_fp16_verify_against_pytorch(
    name: str, options: dict[str, str], tmp_path: Path
) -> None:
    fp32 = export_onnx(name, tmp_path / "m.onnx", img_size=64, **options)  # plugin lowering
    fp16 = fp16_onnx(fp32, tmp_path / "m.fp16.onnx")
    # vitrt verify reads the recipe: an FP16 file gets the FP16 tolerances unless told otherwise
    report, feeds, _ = verify_onnx(tmp_path / "m.fp16.onnx", iterations=2)
    assert report.passed and report.precision == "fp16", report.format()
    assert (report.atol, report.rtol) == (FP16_TOL["atol"], FP16_TOL["rtol"])
    calibrate_onnx(
        fp32, "synthetic", tmp_path / "m.int8.onnx", num_samples=16, eval_samples=8, sensitivity=False,
        progress=False, threads=1,
    )  # fmt: skip
    mixed = fp16_onnx(tmp_path / "m.int8.onnx", tmp_path / "m.int8.fp16.onnx")
    report, _, actual = verify_onnx(tmp_path / "m.int8.fp16.onnx", inputs=feeds)
    assert report.passed and report.precision == "int8+fp16", report.format()
    assert (report.atol, report.rtol) == (INT8_FP16_TOL["atol"], INT8_FP16_TOL["rtol"])
    _, _, int8 = verify_onnx(tmp_path / "m.int8.onnx", inputs=feeds)
    expected = [
        TorchRunner(model_from_config(read_export_config(onnx.load(str(fp32))))).infer(f) for f in feeds
    ]
    for a, q, e in zip(actual, int8, expected, strict=True):
        # the float16 step adds little to the INT8 file's own error (random init, 16 synthetic samples)
        assert _cosine(a["logits"], q["logits"]) >= 0.995
        assert _cosine(a["logits"], e["logits"]) >= 0.97
    # what each file holds
    assert fp16.recipe.precision == "fp16" and mixed.recipe.precision == "int8+fp16"
    assert mixed.recipe.int8_layers and set(mixed.recipe.int8_layers) <= {
        n.name for n in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node
    }
    kept = {n.op_type for n in fp16.recipe.keep_fp32}
    assert {"LayerNormalization", "Softmax"} <= kept
    if name.startswith("t2t_vit_") and "attention" not in options:
        assert "Exp" in kept  # the token performer's exponentials
    plugins = {p["op_type"] for p in fp16.recipe.plugins}
    if options.get("lowering") == "portable":
        assert not plugins and any(n.reason.startswith("ranking scores of") for n in fp16.recipe.keep_fp32)
    else:
        expected = {"TokenFusion"} if "fusion" in options else {"ScatterbrainAttention"} if options else set()
        assert plugins == expected
    saved = onnx.load(str(tmp_path / "m.int8.fp16.onnx"))
    assert (
        json.loads({p.key: p.value for p in saved.metadata_props}[METADATA_KEY])["precision"] == "int8+fp16"
    )
    assert any(t.data_type == FLOAT16 for t in saved.graph.initializer)
    assert saved.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stay float32


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


# -- trained digits: held-out top-1 unchanged -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_deit", "digits_t2t_vit"])
def test_trained_digits_keep_their_held_out_top1_in_fp16_and_int8_fp16(name: str, tmp_path: Path) -> None:
    from vitrt.deploy.runners import OnnxRuntimeRunner

    td = train_digits()
    fp32 = td.export_digits(name, DIGITS, tmp_path / "m.onnx")  # type: ignore[attr-defined]
    fp16_onnx(fp32, tmp_path / "m.fp16.onnx")
    calibrate_onnx(
        fp32, "sklearn-digits", tmp_path / "m.int8.onnx", num_samples=256, eval_samples=64,
        convert_channels=True, sensitivity=False, progress=False, threads=1,
    )  # fmt: skip
    fp16_onnx(tmp_path / "m.int8.onnx", tmp_path / "m.int8.fp16.onnx")
    x, y = td.digits_tensors(name)  # type: ignore[attr-defined]
    _, held = td.digits_split()  # type: ignore[attr-defined]
    images, labels = x[held].numpy(), y[held].numpy()
    accuracy = {}
    for kind in ("m", "m.fp16", "m.int8.fp16"):
        runner = OnnxRuntimeRunner(tmp_path / f"{kind}.onnx", threads=1)
        logits = np.concatenate(
            [runner.infer({"images": images[i : i + 1]})["logits"] for i in range(len(images))]
        )
        accuracy[kind] = float((logits.argmax(1) == labels).mean())
    # 500 held-out digits: FP16 unchanged; INT8+FP16 within one image (0.2 points)
    assert accuracy["m.fp16"] == accuracy["m"], accuracy
    assert abs(accuracy["m.int8.fp16"] - accuracy["m"]) <= 0.002 + 1e-9, accuracy


# -- the recipe, options and bad input ------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    td = train_digits()
    return td.export_digits("digits_deit", DIGITS, tmp_path_factory.mktemp("d") / "deit.onnx")  # type: ignore[attr-defined]


def test_cli_fp16_writes_the_recipe_a_tensorrt_10_builder_reads(
    digits_fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deit.fp16.onnx"
    assert main(["fp16", str(digits_fp32), "-o", str(out), "--keep-fp32", "head/*", "Erf"]) == 0
    assert "fp16, " in capsys.readouterr().out
    model = onnx.load(str(out))
    recipe = read_recipe(model)
    assert recipe is not None and recipe.keep_fp32_patterns == ("head/*", "Erf")
    constraints = {c["node"]: c for c in recipe.layer_constraints()}
    names = {n.name: n for n in model.graph.node}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Erf") or node.name.startswith("head/"):
            assert constraints[node.name]["precision"] == "float32", node.name
    assert all(names[n].op_type != "MatMul" or n.startswith("head/") for n in constraints)
    # the islands compute in float32 in the graph too: their float inputs are float32 tensors
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types |= {i.name: i.data_type for i in model.graph.initializer}
    for name in constraints:
        for tensor in names[name].input:
            assert types.get(tensor, onnx.TensorProto.FLOAT) != FLOAT16, (name, tensor)
    # everything else that multiplies is float16
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in constraints]
    assert matmuls and all(types[n.output[0]] == FLOAT16 for n in matmuls)


def test_io_fp16_makes_float16_inputs_and_outputs(digits_fp32: Path) -> None:
    model, recipe = fp16_model(onnx.load(str(digits_fp32)), io_fp16=True)
    assert recipe.io_type == "float16"
    assert model.graph.input[0].type.tensor_type.elem_type == FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == FLOAT16
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float16)
    assert run_onnxruntime(model, {"images": x})["logits"].dtype == np.float16


def test_bad_input_is_refused_and_nothing_is_written(digits_fp32: Path, tmp_path: Path) -> None:
    fp16 = tmp_path / "a.fp16.onnx"
    fp16_onnx(digits_fp32, fp16, check=False)
    out = tmp_path / "out.onnx"
    with pytest.raises(PrecisionError, match="already holds float16"):
        fp16_onnx(fp16, out)
    with pytest.raises(CalibrationError, match="already holds float16"):
        calibrate_onnx(fp16, "synthetic", out, num_samples=4, progress=False)
    int8 = tmp_path / "a.int8.onnx"
    calibrate_onnx(
        digits_fp32, "synthetic", int8, num_samples=4, eval_samples=4, sensitivity=False, progress=False
    )
    with pytest.raises(CalibrationError, match="already holds QuantizeLinear"):
        calibrate_onnx(int8, "synthetic", out, num_samples=4, progress=False)
    with pytest.raises(ConfigError, match="'Convolution' matches no node name and no op type"):
        fp16_onnx(digits_fp32, out, keep_fp32=["Convolution"])
    assert main(["fp16", str(digits_fp32), "-o", str(out), "--keep-fp32", "Convolution"]) == 2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fp16.onnx", "a.int8.onnx"]


def test_a_graph_without_an_image_input(tmp_path: Path) -> None:
    """fp16 converts any float graph (documented: it needs no image input); calibrate needs one."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc/MatMul_1"),
         helper.make_node("Softmax", ["y"], ["p"], name="fc/Softmax_1")],
        "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 4])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / "plain.onnx"
    onnx.save(model, str(path))
    result = fp16_onnx(path, tmp_path / "plain.fp16.onnx")
    assert [n.node for n in result.recipe.keep_fp32] == ["fc/Softmax_1"]
    assert result.agreement["p"]["max_abs"] < 1e-2
    one = fp16_onnx(path, keep_fp32="MatMul", check=False)  # one string: one pattern (an op type here)
    assert one.recipe.keep_fp32_patterns == ("MatMul",)
    assert [n.node for n in one.recipe.keep_fp32] == ["fc/MatMul_1", "fc/Softmax_1"]
    with pytest.raises(CalibrationError, match="not a float32 \\[batch, channels, height, width\\]"):
        calibrate_onnx(
            path, "synthetic", tmp_path / "q.onnx", num_samples=4, progress=False, mean=(0.5,), std=(0.5,)
        )


def test_the_islands_of_a_deit_are_its_norms_and_softmaxes(digits_fp32: Path) -> None:
    islands = fp32_islands(onnx.load(str(digits_fp32)))  # 4 blocks: 2 norms + 1 softmax each, + final norm
    kinds = [n.op_type for n in islands.values()]
    assert sorted(kinds) == ["LayerNormalization"] * 9 + ["Softmax"] * 4


def test_control_flow_is_refused() -> None:
    """Subgraphs read outer tensors by name: changing their types from outside would break them."""
    from onnx import TensorProto, helper

    def branch(name: str, op: str) -> onnx.GraphProto:
        node = helper.make_node(op, ["x"], [f"{name}_y"], name=f"{name}/{op}_1")
        return helper.make_graph(
            [node], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2])]
        )

    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="model/If_1", then_branch=branch("a", "Relu"),
                          else_branch=branch("b", "Neg"))],
        "flow",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(PrecisionError, match=r"control flow \(If\)"):
        fp16_model(model, prepare=False)
