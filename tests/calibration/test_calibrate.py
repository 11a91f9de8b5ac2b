"""End to end: exported models calibrate, the INT8 model runs on ONNX Runtime close to FP32, the
outputs (Q/DQ ONNX, TensorRT cache, JSON report) are consistent; the CLI's bad-input cases exit 2
with a message and write nothing.

Exports: the trained digits T2T-ViT shipped in benchmarks/digits (real data: sklearn digits), and
deit_tiny at 64 px with MCTF token fusion in the plugin lowering (vitrt::TokenFusion nodes run by
ONNX Runtime through vitrt.plugins.lowering's CPU kernels). Bounds: cosine to FP32 > 0.99 and top-1
agreement >= 95% on held-out digits; cosine > 0.99 on the random-init plugin graph.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.calibration._graphs import no_layers, save, two_layers, vit_like
from vitrt.calibration.cache import read_cache
from vitrt.calibration.calibrate import METADATA_KEY, calibrate_onnx
from vitrt.calibration.ranges import scale_from_amax
from vitrt.calibration.recipe import read_recipe
from vitrt.compiler.cli import main
from vitrt.compiler.export import METADATA_KEY as EXPORT_KEY
from vitrt.deploy.runners import OnnxRuntimeRunner
from vitrt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "benchmarks" / "digits"

pytestmark = pytest.mark.usefixtures("quiet_logs")


def _train_digits() -> object:
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "benchmarks" / "train_digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits_t2t(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (DIGITS / "digits_t2t_vit.safetensors").is_file():
        pytest.skip(
            "benchmarks/digits/digits_t2t_vit.safetensors is missing (run benchmarks/train_digits.py)"
        )
    td = _train_digits()
    return td.export_digits("digits_t2t_vit", DIGITS, tmp_path_factory.mktemp("digits") / "t2t.onnx")  # type: ignore[attr-defined]


def test_trained_t2t_calibrates_on_digits_end_to_end(digits_t2t: Path, tmp_path: Path) -> None:
    out, cache, report = tmp_path / "t2t.int8.onnx", tmp_path / "t2t.cache", tmp_path / "t2t.json"
    result = calibrate_onnx(
        digits_t2t,
        "sklearn-digits",
        out,
        convert_channels=True,
        num_samples=64,
        eval_samples=96,
        sensitivity_samples=8,
        cache=cache,
        report=report,
        progress=False,
    )
    # the performer's feature span stays float; every block's linear layers are INT8
    reasons = {layer.name: layer.reason for layer in result.layers}
    assert reasons["tokens_to_token.attention1/MatMul_1"] == "exp span: its output feeds an Exp"
    assert reasons["tokens_to_token.attention2/MatMul_5"] == "exp span: multiplies values derived from an Exp"
    assert {"blocks.3.attn.core/MatMul_1", "blocks.3.attn.core/MatMul_2", "head/Gemm_1"} <= set(
        result.quantized
    )
    # the INT8 file runs on ONNX Runtime and agrees with FP32 on held-out digits
    assert result.agreement is not None
    assert result.agreement.mean_cosine > 0.99 and result.agreement.top1_agreement >= 0.95
    saved = onnx.load(str(out))
    meta = {p.key: p.value for p in saved.metadata_props}
    exported = {p.key: p.value for p in onnx.load(str(digits_t2t)).metadata_props}
    # ExportConfig preserved, its precision now says what the file holds; the recipe beside it
    assert json.loads(meta[EXPORT_KEY]) == {**json.loads(exported[EXPORT_KEY]), "precision": "int8"}
    recipe = read_recipe(saved)
    assert recipe is not None and recipe.precision == "int8" and recipe.float_type == "float32"
    assert read_recipe(out) == read_recipe(str(out)) == recipe  # a path reads the same
    assert set(recipe.int8_layers) == set(result.quantized)
    assert {n.node for n in recipe.not_quantized} == {k for k, v in reasons.items() if v}
    assert recipe.layer_constraints() == []  # nothing to constrain: the rest is float32
    record = json.loads(meta[METADATA_KEY])
    assert record["held_out"] and record["data"]["source"] == "sklearn-digits"
    assert record["layers"]["quantized"] == len(result.quantized)
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert OnnxRuntimeRunner(out, threads=1).infer({"images": x})["logits"].shape == (1, 10)
    # the cache holds the scales of the quantized layers' inputs and outputs, bit for bit
    parsed = read_cache(cache)
    assert parsed.version == 100300 and parsed.algorithm == "EntropyCalibration2"
    for name, amax in result.amax.items():
        assert parsed.scales[name] == scale_from_amax(amax)
    assert len(parsed.scales) > len(result.amax)  # + layer outputs for TensorRT's implicit INT8
    # the report: ranges per tensor, sensitivity per layer, agreement
    data = json.loads(report.read_text())
    assert data["agreement"]["samples"] == 96
    assert set(data["tensors"]) >= set(result.amax)
    assert data["tensors"]["blocks.0.norm1/LayerNormalization_1:0"]["method"] == "entropy"
    softmax = next(t for t in data["tensors"].values() if t["method"] == "minmax")  # Softmax outputs
    assert 0 < softmax["amax"] <= 1.0
    ranked = [row for row in data["layers"] if row["sensitivity"] is not None]
    assert len(ranked) == len(result.quantized)


def test_plugin_graph_calibrates(tmp_path: Path) -> None:
    if importlib.util.find_spec("vitrt.plugins.lowering") is None:
        pytest.skip("vitrt.plugins.lowering (ONNX Runtime kernels of vitrt's plugin ops) is not available")
    from vitrt.compiler.export import ExportConfig, export_model, model_from_config

    config = ExportConfig("deit_tiny_patch16_224", input_size=(3, 64, 64), img_size=64, fusion="mctf")
    path = export_model(model_from_config(config), tmp_path / "fused.onnx", config)
    plugin_nodes = [n for n in onnx.load(str(path)).graph.node if n.domain == "vitrt"]
    assert plugin_nodes, "the plugin lowering should emit vitrt::TokenFusion nodes"
    result = calibrate_onnx(
        path,
        "synthetic",
        tmp_path / "fused.int8.onnx",
        num_samples=8,
        eval_samples=8,
        sensitivity=False,
        progress=False,
    )
    assert result.agreement is not None and result.agreement.mean_cosine > 0.99
    assert [n.name for n in result.model.graph.node if n.domain == "vitrt"] == [n.name for n in plugin_nodes]
    # plugin inputs and outputs are never quantized
    producer = {o: n for n in result.model.graph.node for o in n.output}
    for node in result.model.graph.node:
        if node.domain == "vitrt":
            assert all(
                producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input
            )
        if node.op_type == "QuantizeLinear":
            assert producer.get(node.input[0]) is None or producer[node.input[0]].domain != "vitrt"


# -- the command line --------------------------------------------------------------------------------


def _png_folder(root: Path, count: int, mode: str) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape = (20, 24, 3) if mode == "RGB" else (20, 24)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(root / f"img{i}.png")
    return root


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_cli_calibrate_writes_model_cache_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(vit_like(), tmp_path / "m.onnx")
    args = ["calibrate", str(model), "--data", "synthetic", "--num-samples", "8", "--eval-samples", "8"]
    args += ["--mean", "0.5", "--std", "0.5"]  # the hand-built graph has no ExportConfig
    args += [
        "-o",
        str(tmp_path / "m.int8.onnx"),
        "--cache",
        str(tmp_path / "m.cache"),
        "--trt-version",
        "10.13.3",
    ]
    args += ["--report", str(tmp_path / "m.json"), "--exclude", "head/*", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "8 of 12 MatMul/Gemm/Conv layers INT8" in out and "vs FP32 on 8 held-out samples: top-1" in out
    assert _files(tmp_path) == ["m.cache", "m.int8.onnx", "m.json", "m.onnx"]
    assert read_cache(tmp_path / "m.cache").version == 101303
    layers = {row["name"]: row for row in json.loads((tmp_path / "m.json").read_text())["layers"]}
    assert layers["head/Gemm_1"]["reason"] == "excluded by pattern 'head/*'"


def test_onnxruntime_form_records_its_form_and_the_layers_its_cost_model_keeps_float(
    tmp_path: Path,
) -> None:
    from vitrt.calibration.cost import OrtCostModel
    from vitrt.calibration.fp16 import PrecisionError, fp16_onnx

    model = save(vit_like(seed=2, linear_bias=True), tmp_path / "m.onnx")
    # vit_like's layers are tiny (4 tokens of 16): thresholds scaled down to its sizes
    cost = OrtCostModel(min_macs=1000, min_width=16, min_activation_macs=10**6)
    options = {"num_samples": 8, "eval_samples": 8, "progress": False, "mean": (0.5,), "std": (0.5,)}
    out = tmp_path / "m.ort.onnx"
    result = calibrate_onnx(
        model, "synthetic", out, report=tmp_path / "r.json", runtime="onnxruntime", cost_model=cost, **options
    )
    reasons = {layer.name: layer.reason for layer in result.layers}
    assert set(result.quantized) == {
        "blocks.0.attn.qkv/Gemm_1",  # 4 x 16 x 48 = 3072 MACs (Linear + bias: a Gemm once prepared)
        "blocks.0.attn.proj/Gemm_1",  # 1024
        "blocks.0.mlp.fc1/Gemm_1",
        "blocks.0.mlp.fc2/Gemm_1",
        "perf.proj/MatMul_1",
    }
    assert reasons["head/Gemm_1"] == "ONNX Runtime cost model: 160 MACs per sample, below 1,000"
    assert reasons["blocks.0.attn.core/MatMul_1"] == (
        "ONNX Runtime cost model: 256 MACs per sample, below 1,000,000 for a product of two activations"
    )
    assert str(reasons["patch_embed.proj/Conv_1"]).startswith("ONNX Runtime cost model: no int8 Conv")
    assert reasons["perf/MatMul_1"] == "exp span: its output feeds an Exp"  # the graph's reasons come first
    assert result.agreement is not None and result.agreement.mean_cosine > 0.98  # random weights, 8 samples
    saved = onnx.load(str(out))
    recipe = read_recipe(saved)
    assert recipe is not None and recipe.int8_form == "onnxruntime" and recipe.format == 2
    assert {n.node: n.reason for n in recipe.not_quantized} == {k: v for k, v in reasons.items() if v}
    stored = json.loads(next(p.value for p in saved.metadata_props if p.key == "vitrt.precision_recipe"))
    assert stored["format"] == 2 and stored["int8_form"] == "onnxruntime"
    record = json.loads(next(p.value for p in saved.metadata_props if p.key == METADATA_KEY))
    assert record["int8_form"] == "onnxruntime" and record["cost_model"]["min_macs"] == 1000
    rows = {row["name"]: row for row in json.loads((tmp_path / "r.json").read_text())["layers"]}
    assert rows["blocks.0.mlp.fc1/Gemm_1"]["size"] == {
        "op_type": "Gemm", "macs": 4 * 16 * 32, "reduce": 16, "width": 32, "weighted": True,
        "transposed_input": False,
    }  # fmt: skip
    int32 = {i.name for i in saved.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    # the four quantized Linear biases (perf.proj has none; the head is float), values and zero points
    assert {name.split("/")[0] for name in int32} == {
        "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"
    }  # fmt: skip
    # INT8 + FP16 is TensorRT's: the ONNX Runtime form is refused with what to do instead
    with pytest.raises(PrecisionError, match=r"ONNX Runtime form.*--for tensorrt"):
        fp16_onnx(out, tmp_path / "m.ort.fp16.onnx")
    # and the preparation is the float32 file's (ONNX Runtime failed inside on this one)
    from vitrt.compiler.prepare import PreparationError, prepare_onnx

    with pytest.raises(
        PreparationError,
        match=r"m.ort.onnx already holds QuantizeLinear / DequantizeLinear nodes \(already quantized\): "
        r"prepare the float32 file it came from",
    ):
        prepare_onnx(out, tmp_path / "m.prepared.onnx")
    assert not (tmp_path / "m.prepared.onnx").exists()
    # the TensorRT form (default): format 1 without the key, as before, every layer the graph allows
    trt = calibrate_onnx(model, "synthetic", tmp_path / "m.trt.onnx", **options)
    trt_meta = onnx.load(str(tmp_path / "m.trt.onnx")).metadata_props
    stored = json.loads(next(p.value for p in trt_meta if p.key == "vitrt.precision_recipe"))
    assert stored["format"] == 1 and "int8_form" not in stored
    assert len(trt.quantized) == 9
    assert trt.agreement is not None and abs(trt.agreement.mean_cosine - result.agreement.mean_cosine) < 0.01
    with pytest.raises(ConfigError, match="cost_model is the ONNX Runtime form's"):
        calibrate_onnx(model, "synthetic", cost_model=cost, **options)


def test_recipe_format_follows_the_int8_form() -> None:
    from vitrt.calibration.recipe import PrecisionRecipe
    from vitrt.errors import VitrtError

    trt = PrecisionRecipe("int8", int8_layers=("fc/MatMul_1",))
    ort = trt.with_changes(int8_form="onnxruntime")
    assert trt.to_dict()["format"] == 1 and "int8_form" not in trt.to_dict()  # what earlier vitrt reads
    assert ort.to_dict()["format"] == 2 and ort.to_dict()["int8_form"] == "onnxruntime"
    assert PrecisionRecipe.from_dict(json.loads(trt.to_json())) == trt
    assert PrecisionRecipe.from_dict(json.loads(ort.to_json())) == ort
    with pytest.raises(VitrtError, match="format 3 is not 1 or 2"):
        PrecisionRecipe.from_dict({**trt.to_dict(), "format": 3})
    with pytest.raises(VitrtError, match="unknown INT8 form 'tflite'"):
        trt.with_changes(int8_form="tflite")


def test_calibrate_options_that_contradict_each_other(tmp_path: Path) -> None:
    from vitrt.calibration.collect import default_runner_factory
    from vitrt.calibration.ranges import RangeMethod

    model = save(two_layers(), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="percentile goes with a method name"):
        calibrate_onnx(model, "synthetic", method=RangeMethod("percentile"), percentile=99.9, mean=(0.5,))
    # the default method (entropy) would ignore a percentile
    with pytest.raises(
        ConfigError,
        match=r"^percentile=99.9 applies to method='percentile' only; method='entropy' would ignore it. Fix: "
        r"drop percentile, or pass method='percentile' \(--method percentile\)$",
    ):
        calibrate_onnx(model, "synthetic", percentile=99.9, mean=(0.5,))
    # one string is one pattern, not a pattern per character
    with pytest.raises(ConfigError, match=r"^--exclude 'nomatch\*' matches no MatMul/Gemm/Conv node"):
        calibrate_onnx(model, "synthetic", exclude="nomatch*", mean=(0.5,), std=(0.5,), progress=False)
    with pytest.raises(ConfigError, match="threads / custom_ops_library or a runner_factory, not both"):
        calibrate_onnx(model, "synthetic", threads=1, runner_factory=default_runner_factory(1))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty folder", "no jpg/jpeg/png images under"),
        ("corrupt image", "cannot decode the image"),
        ("grayscale images", "grayscale image (1 channels), but the model takes 3 channels"),
        ("missing data", "no such file or folder"),
        ("no quantizable op", "has no MatMul, Gemm or Conv node"),
        ("unknown method", "calibration method 'kl' is unknown"),
        ("impossible budget", "holds only with every layer in float"),
        ("missing output folder", "does not exist (create it first)"),
        ("not onnx", "is not an ONNX model"),
        ("nothing gains on onnxruntime", "is large enough to gain from INT8 on ONNX Runtime"),
        (
            "exclude matches nothing",
            "--exclude 'nomatch/*', 'flatten/*' matches no MatMul/Gemm/Conv node of the model (the layers "
            "vitrt quantizes). Their names look like 'fc2/MatMul_1'\n",
        ),
        (
            "budget without sensitivity",
            "--error-budget needs the sensitivity pass (the layers it ranks most harmful are the ones kept "
            "float): drop --no-sensitivity (sensitivity=False) or --error-budget\n",
        ),
        (
            "cache for TensorRT 11",
            "--trt-version 11.0: TensorRT 11 has no calibrators, so it reads no calibration cache (its INT8 "
            "is explicit: it builds the Q/DQ ONNX this writes). Fix: drop --cache, or give the TensorRT 10.x "
            "version that builds the engine\n",
        ),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(
    case: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    model = save(no_layers() if case == "no quantizable op" else two_layers(), work / "m.onnx")
    data = "synthetic"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    elif case == "corrupt image":
        folder = _png_folder(tmp_path / "imgs", 2, "RGB")
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        data = str(folder)
    elif case == "grayscale images":
        data = str(_png_folder(tmp_path / "gray", 3, "L"))
    elif case == "missing data":
        data = str(tmp_path / "nowhere")
    elif case == "not onnx":
        model.write_text("not a model")
    output = work / ("missing" if case == "missing output folder" else ".") / "out.onnx"
    args = ["calibrate", str(model), "--data", data, "-o", str(output), "--report", str(work / "r.json")]
    args += ["--num-samples", "4", "--eval-samples", "4", "--no-progress", "--threads", "1"]
    args += ["--mean", "0.5", "--std", "0.5"]
    if case == "unknown method":
        args += ["--method", "kl"]
    if case == "impossible budget":
        args += ["--error-budget", "0"]
    if case == "nothing gains on onnxruntime":
        args += ["--for", "onnxruntime"]  # two 48 -> 32 -> 10 layers: far below the cost model's sizes
    if case == "exclude matches nothing":  # a typo, and a node that is no layer (never quantized anyway)
        args += ["--exclude", "fc1/*", "nomatch/*", "flatten/*"]
    if case == "budget without sensitivity":
        args += ["--error-budget", "0.01", "--no-sensitivity"]
    if case == "cache for TensorRT 11":
        args += ["--cache", str(work / "c.cache"), "--trt-version", "11.0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "vitrt calibrate: error:" in err and message in err, err
    assert _files(work) == ["m.onnx"]  # no output, no report, no temporary file


def test_cli_fewer_samples_than_asked_warns_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(two_layers(), tmp_path / "m.onnx")
    folder = _png_folder(tmp_path / "imgs", 3, "RGB")
    args = [
        "calibrate",
        str(model),
        "--data",
        str(folder),
        "--num-samples",
        "10",
        "-o",
        str(tmp_path / "q.onnx"),
        "--mean",
        "0.5",
        "--std",
        "0.5",
    ]
    with caplog.at_level(logging.WARNING, logger="vitrt"):
        assert main([*args, "--no-progress", "--threads", "1"]) == 0
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "has 3 samples, fewer than the 10 asked for; calibrating on 3" in warnings
    assert "not held-out ones" in warnings  # nothing left for held-out evaluation: said so
    out = capsys.readouterr().out  # and the summary does not call them held out
    assert "vs FP32 on 3 calibration (none held out) samples: top-1 agreement" in out
    assert "held-out samples" not in out
    recipe = read_recipe(onnx.load(str(tmp_path / "q.onnx")))
    assert recipe is not None and recipe.agreement["vs"] == "float32, calibration samples (none held out)"
