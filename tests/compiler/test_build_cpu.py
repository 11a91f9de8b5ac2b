"""``vitrt build --target cpu``: FP32, INT8, FP16 and INT8+FP16 files build, load and run on both CPU
runtimes (ONNX Runtime and OpenVINO) against ONNX Runtime on the file they came from; the runtime choice,
the inference precision and the CPU are recorded; a failed build leaves nothing; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import vitrt
from vitrt.calibration.metrics import agreement
from vitrt.compiler.build import build
from vitrt.compiler.build_plan import BuildPlanError, ModelFacts, TensorInfo
from vitrt.compiler.cli import main
from vitrt.compiler.cpu_build import plan_cpu
from vitrt.compiler.environment import cpu_facts, gather_environment
from vitrt.compiler.manifest import IncompatibleArtifactError, read_manifest
from vitrt.deploy.runners import OnnxRuntimeRunner
from vitrt.errors import ConfigError, VitrtError

pytest.importorskip("openvino", reason="the cpu target's second runtime: pip install 'vitrt[openvino]'")

FEED = {"images": np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)}
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.9999, "int8": 0.99, "int8+fp16": 0.99}
"""Least cosine of the artifact's logits to ONNX Runtime on its source file: FP32 and FP16 compute the same
function (float32 / float16 rounding), INT8 on OpenVINO rounds activations its own way (measured 0.9994 on
DeiT-T at 64 x 64)."""
_FLAGS = set(cpu_facts()[1])
INT8_DOTS_EXACT = bool({"avx512_vnni", "avx_vnni"} & _FLAGS) or "avx2" not in _FLAGS
"""Whether the CPU has int8 dot products without intermediate saturation (VNNI, or not x86): without them,
int8 GEMMs that multiply u8 by s8 (VPMADDUBSW) saturate their int16 pair sums. ONNX Runtime then promotes
them (vitrt's runner sets session.x64quantprecision); OpenVINO does not, and its INT8 and INT8+FP16 files'
cosines then depend on the weights: 0.906 to 0.995 over 16 random-init draws of this DeiT-T (init seeds 0
to 7, with torch 2.13's trunc_normal_ and with vitrt's) on a 2-core AMD EPYC with AVX2 and no VNNI."""
MIN_COSINE_INT8_OPENVINO_NO_VNNI = 0.85


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16", "int8+fp16"])
def test_every_precision_file_builds_loads_and_runs_on_both_runtimes(
    precision_files: dict[str, Path], tmp_path: Path, precision: str, runtime: str
) -> None:
    source = precision_files[precision]
    result = build(source, tmp_path / "art", target="cpu", runtime=runtime)
    m = read_manifest(tmp_path / "art")
    assert m == result.manifest and m.kind == "cpu" and m.precision == precision
    assert m.runtime["name"] == runtime and m.runtime["inference_precision"] == "f32"
    expected_files = {"onnxruntime": ["model.onnx"], "openvino": ["model.bin", "model.xml"]}[runtime]
    assert (
        sorted(m.files)
        == expected_files
        == sorted(p.name for p in (tmp_path / "art").iterdir() if p.suffix != ".json")
    )
    assert m.extra["timings"] == {}  # one runtime asked: nothing to time
    reference = OnnxRuntimeRunner(source).infer(FEED)["logits"]
    got = vitrt.load_artifact(tmp_path / "art").infer(FEED)["logits"]
    a = agreement(reference, got)
    least = MIN_COSINE[precision]
    if precision.startswith("int8") and runtime == "openvino" and not INT8_DOTS_EXACT:
        least = MIN_COSINE_INT8_OPENVINO_NO_VNNI
    assert a.mean_cosine >= least, a
    if runtime == "onnxruntime":  # its own graph, optimised offline: the same numbers up to fusion order
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4 * float(np.abs(reference).max()))
    recorded = m.extra["agreement"]["outputs"]["logits"]
    assert recorded["cosine"] >= least and m.extra["agreement"]["vs"].startswith(source.name)
    assert m.model["source_sha256"] == m.model["built_from_sha256"]  # no rewrite
    assert (m.precision_recipe or {}).get("precision", "fp32") == precision


def test_auto_times_both_runtimes_and_keeps_the_faster(
    precision_files: dict[str, Path], tmp_path: Path
) -> None:
    m = build(precision_files["int8"], tmp_path / "art", target="cpu", threads=1).manifest
    timings = m.extra["timings"]
    assert set(timings["ms"]) == {"onnxruntime", "openvino"} and timings["batch"] == 1
    medians = {r: s["median"] for r, s in timings["ms"].items()}
    assert m.runtime["name"] == timings["chosen"] == min(medians, key=lambda r: medians[r])
    assert all(s["iterations"] >= 20 for s in timings["ms"].values()) and m.runtime["threads"] == 1
    name, flags = cpu_facts()
    assert (m.environment["cpu_name"], tuple(m.environment["cpu_flags"])) == (name, flags)
    assert m.plan is not None and m.plan["candidates"] == ["onnxruntime", "openvino"]


def test_bf16_is_an_explicit_recorded_choice(precision_files: dict[str, Path], tmp_path: Path) -> None:
    m = build(precision_files["fp32"], tmp_path / "art", target="cpu", inference_precision="bf16").manifest
    assert m.runtime["name"] == "openvino" and m.runtime["inference_precision"] == "bf16"
    assert any("onnxruntime not used: ONNX Runtime's CPU provider has no bf16" in n for n in m.notes)
    runner = vitrt.load_artifact(tmp_path / "art")
    has_bf16 = {"avx512_bf16", "amx_bf16"} & set(cpu_facts()[1])
    assert runner.effective_inference_precision == m.runtime["effective_inference_precision"]
    assert m.runtime["effective_inference_precision"] == ("bf16" if has_bf16 else "f32")
    assert m.extra["agreement"]["outputs"]["logits"]["cosine"] >= 0.99
    with pytest.raises(BuildPlanError, match=r"no CPU runtime can run this build: onnxruntime: .*no bf16"):
        build(
            precision_files["fp32"],
            tmp_path / "x",
            target="cpu",
            runtime="onnxruntime",
            inference_precision="bf16",
        )


def test_fp16_from_an_fp32_file_is_made_on_the_way(precision_files: dict[str, Path], tmp_path: Path) -> None:
    m = build(
        precision_files["fp32"], tmp_path / "art", target="cpu", precision="fp16", runtime="onnxruntime"
    ).manifest
    assert m.precision == "fp16" and m.plan is not None and m.plan["rewrites"] == ["fp16"]
    assert m.precision_recipe is not None and m.precision_recipe["keep_fp32"]  # LayerNorms, Softmaxes
    assert m.model["built_from_sha256"] != m.model["source_sha256"]
    assert m.extra["agreement"]["outputs"]["logits"]["cosine"] >= MIN_COSINE["fp16"]


def facts(precision: str = "fp32", plugins: tuple[str, ...] = ()) -> ModelFacts:
    image = TensorInfo("images", (1, 3, 32, 32), "float32")
    return ModelFacts(precision, (image,), (TensorInfo("logits", (1, 10), "float32"),), plugins)


def test_cpu_plan_as_data() -> None:
    both = {"onnxruntime": True, "openvino": True}
    plan = plan_cpu(facts(), available=both)
    assert (plan.runtime, plan.candidates, plan.inference_precision) == (
        "auto",
        ("onnxruntime", "openvino"),
        "f32",
    )
    plan = plan_cpu(facts(plugins=("TokenFusion",)), available=both)
    assert plan.runtime == "onnxruntime" and "OpenVINO cannot run" in plan.dropped["openvino"]
    plan = plan_cpu(facts(), available={"onnxruntime": True, "openvino": False})
    assert plan.runtime == "onnxruntime" and "pip install 'vitrt[openvino]'" in plan.dropped["openvino"]
    with pytest.raises(
        BuildPlanError, match=r"openvino: OpenVINO is not installed \(pip install 'vitrt\[openvino\]'\)"
    ):
        plan_cpu(facts(), runtime="openvino", available={"onnxruntime": True, "openvino": False})
    with pytest.raises(BuildPlanError, match=r"FP32 and holds no INT8 scales. Fix: vitrt calibrate"):
        plan_cpu(facts(), precision="int8", available=both)
    with pytest.raises(BuildPlanError, match=r"not FP8 / FP4"):
        plan_cpu(facts("fp8"), available=both)
    with pytest.raises(BuildPlanError, match=r"unknown CPU runtime 'tvm'"):
        plan_cpu(facts(), runtime="tvm", available=both)


def test_the_cpu_target_times_the_batch_a_fixed_batch_axis_takes() -> None:
    both = {"onnxruntime": True, "openvino": True}
    batch = int(np.random.default_rng().integers(2, 9))
    pair = ModelFacts("fp32", (TensorInfo("images", (batch, 3, 32, 32), "float32"),), (), ())
    assert plan_cpu(pair, available=both).batch == batch  # not 1: the file cannot run batch 1
    assert plan_cpu(pair, batch=batch, available=both).batch == batch
    with pytest.raises(
        BuildPlanError,
        match=rf"^the model's input has a fixed batch of {batch}, so --opt {batch + 1} \(the batch to time\) "
        rf"cannot be run. Fix: leave out --opt \(or --opt {batch}\), or re-export with .*--dynamic-batch",
    ):
        plan_cpu(pair, batch=batch + 1, available=both)
    dynamic = ModelFacts("fp32", (TensorInfo("images", ("batch", 3, 32, 32), "float32"),), (), ())
    assert plan_cpu(dynamic, batch=batch + 1, available=both).batch == batch + 1
    assert plan_cpu(dynamic, available=both).batch == 1


def test_a_failed_build_leaves_no_artifact(
    precision_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vitrt.compiler.cpu_build as cpu_build

    def broken(source: Path, dest: Path) -> list[str]:
        (dest / "model.xml").write_text("half")
        raise VitrtError("disk full")

    monkeypatch.setattr(cpu_build, "save_openvino", broken)
    with pytest.raises(VitrtError, match=r"disk full"):
        build(precision_files["fp32"], tmp_path / "art", target="cpu", runtime="openvino")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(VitrtError, match=r"exists and is not a vitrt artifact"):
        build(precision_files["fp32"], tmp_path / "mine", target="cpu", runtime="onnxruntime")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_new_build_replaces_an_earlier_artifact(precision_files: dict[str, Path], tmp_path: Path) -> None:
    build(precision_files["fp32"], tmp_path / "art", target="cpu", runtime="openvino")
    build(precision_files["fp32"], tmp_path / "art", target="cpu", runtime="onnxruntime")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["manifest.json", "model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_loading_checks_the_manifest_against_the_machine(
    precision_files: dict[str, Path], tmp_path: Path
) -> None:
    build(precision_files["int8"], tmp_path / "art", target="cpu", runtime="openvino")
    elsewhere = gather_environment().with_changes(openvino=None)
    with pytest.raises(
        IncompatibleArtifactError, match=r"openvino: needs openvino .*pip install 'vitrt\[openvino\]'"
    ):
        vitrt.load_artifact(tmp_path / "art", environment=elsewhere)
    manifest, differences = vitrt.check_artifact(tmp_path / "art")
    assert manifest.runtime["name"] == "openvino" and differences == []


def test_cli_build_check_and_errors(
    precision_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "art"
    assert (
        main(
            [
                "build",
                str(precision_files["int8"]),
                "--target",
                "cpu",
                "--runtime",
                "onnxruntime",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        printed.startswith(f"wrote {out} for cpu: int8 on onnxruntime ")
        and "logits vs the ONNX file" in printed
    )
    assert main(["check", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"kind": "cpu", "target": "cpu", "differences": []}
    text = tmp_path / "model.onnx"
    text.write_text("not a model")
    assert main(["build", str(text), "--target", "cpu", "-o", str(tmp_path / "x")]) == 2
    assert "is not an ONNX model" in capsys.readouterr().err
    fp32 = str(precision_files["fp32"])
    message = r"^threads must be a positive integer \(intra-op threads\), got '1'$"
    with pytest.raises(ConfigError, match=message):
        build(fp32, tmp_path / "x", target="cpu", threads="1")  # type: ignore[arg-type]
    assert main(["build", fp32, "--target", "cpu", "--workspace", "512", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "error: --workspace (workspace_mib): TensorRT options, which the cpu target" in err
    flags = ["--opt-level", "3", "--hardware-compat", "ampere_plus", "--no-strongly-typed", "--min", "1"]
    assert main(["build", fp32, "--target", "cpu", *flags, "-o", str(tmp_path / "x")]) == 2
    assert (
        "error: --min (min_batch), --opt-level (optimization_level), --hardware-compat "
        "(hardware_compatibility), --[no-]strongly-typed (strongly_typed): TensorRT options"
    ) in capsys.readouterr().err
    # the file's batch axis is fixed at 1: --opt 4 cannot be timed (it was, at batch 1, and recorded as 4)
    assert main(["build", fp32, "--target", "cpu", "--opt", "4", "-o", str(tmp_path / "x")]) == 2
    assert "fixed batch of 1, so --opt 4 (the batch to time) cannot be run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tensorrt_targets_without_tensorrt_say_the_three_ways_forward(
    precision_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

    if tensorrt_missing_reason() is None:
        pytest.skip("TensorRT is installed here")
    fp32, out = str(precision_files["fp32"]), str(tmp_path / "engine")
    assert main(["build", fp32, "--target", "jetson-orin-nano", "--precision", "fp16", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "building for jetson-orin-nano needs TensorRT, which cannot be imported here" in err
    assert "sudo apt install nvidia-jetpack" in err and "--target cpu" in err
    assert "vitrt bundle MODEL.onnx --target jetson-orin-nano -o BUNDLE/" in err
    assert "vitrt build --bundle BUNDLE/" in err
    # what the target cannot do is said first, TensorRT or not
    assert main(["build", fp32, "--target", "jetson-orin-nano", "--precision", "fp8", "-o", out]) == 2
    assert "jetson-orin-nano (sm_87) has no FP8 hardware support" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                fp32,
                "--target",
                "jetson-orin-nano",
                "--precision",
                "fp16",
                "--dla-core",
                "0",
                "-o",
                out,
            ]
        )
        == 2
    )
    assert "jetson-orin-nano has no DLA" in capsys.readouterr().err
    assert not (tmp_path / "engine").exists()
