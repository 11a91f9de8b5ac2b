"""``vitrt bundle``: a bundle builds for every TensorRT target without TensorRT, holds a plan for each
TensorRT version the target ships, and validates on the device it was made for (recorded device facts);
on another device it says exactly what differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vitrt
from vitrt.calibration.cache import write_cache
from vitrt.compiler.build_plan import BuildPlan, BuildPlanError
from vitrt.compiler.bundle import BUNDLE_NAME, check_bundle
from vitrt.compiler.cli import main
from vitrt.compiler.environment import EnvironmentFacts, gather_environment
from vitrt.compiler.manifest import IncompatibleArtifactError
from vitrt.compiler.targets import TARGETS, get_target
from vitrt.errors import ConfigError

TENSORRT_TARGETS = [name for name, t in TARGETS.items() if t.uses_tensorrt]


def device(target: str, tensorrt: str) -> EnvironmentFacts:
    """The facts of ``target``'s device with TensorRT ``tensorrt`` installed (this vitrt's plugins)."""
    t = get_target(target)
    here = gather_environment()
    machine = "aarch64" if t.kind == "jetson" else "x86_64"
    return here.with_changes(tensorrt=tensorrt, sm=t.sm, gpu_name=t.gpu, machine=machine, cuda_driver="13.0")


@pytest.mark.parametrize("target", TENSORRT_TARGETS)
def test_bundles_build_for_every_tensorrt_target_and_validate(
    precision_files: dict[str, Path], tmp_path: Path, target: str
) -> None:
    out = tmp_path / "bundle"
    result = vitrt.bundle(precision_files["int8"], out, target=target, precision="int8+fp16")
    spec = get_target(target)
    assert list(result.plans) == list(spec.tensorrt_versions())  # every TensorRT the target ships
    for version, plan in result.plans.items():
        assert plan.precision == "int8+fp16" and plan.rewrites == ("fp16",)  # done here, on the workstation
        if version.startswith("10."):
            assert plan.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS")
            assert len(plan.layer_constraints) > 0  # the INT8+FP16 graph's float32 keep-list
        else:
            assert plan.builder_flags == () and plan.layer_constraints == ()
    m = json.loads((out / BUNDLE_NAME).read_text())
    assert m["kind"] == "bundle" and m["target"]["sm"] == spec.sm
    expected = {"sm": spec.sm, "gpu": spec.gpu, "tensorrt": list(spec.tensorrt_versions()), "plugins": {}}
    assert m["extra"]["expected"] == expected
    assert {v: BuildPlan.from_dict(p) for v, p in m["plan"]["by_tensorrt"].items()} == result.plans
    assert sorted(m["files"]) == ["README.md", "model.onnx"]
    assert "vitrt build --bundle BUNDLE/" in (out / "README.md").read_text()
    assert m["precision_recipe"]["precision"] == "int8+fp16"
    for version in spec.tensorrt_versions():
        check_bundle(out, device(target, f"{version}.0.1"))


def test_a_bundle_on_the_wrong_device_says_what_differs(
    precision_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    vitrt.bundle(precision_files["fp16"], out, target="jetson-orin-nano")
    with pytest.raises(IncompatibleArtifactError) as err:
        check_bundle(out, device("h100", "10.3.0.30"))
    assert "this bundle (target jetson-orin-nano, vitrt 0.1.0) cannot be built here" in str(err.value)
    assert "GPU architecture: needs sm_87 (jetson-orin-nano), this machine has sm_90 (H100)" in str(err.value)
    with pytest.raises(IncompatibleArtifactError, match=r"TensorRT version: needs TensorRT 10\.3 "):
        check_bundle(out, device("jetson-orin-nano", "11.4.1.2"))  # no 11.x plan for an Orin on JetPack 6
    check_bundle(out, device("jetson-orin-nano", "10.7.0.23"))  # another 10.x: planned again on the device
    with pytest.raises(IncompatibleArtifactError, match=r"TensorRT: needs TensorRT 10\.3, .*no importable"):
        check_bundle(out, device("jetson-orin-nano", "10.3.0.30").with_changes(tensorrt=None))
    (out / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(IncompatibleArtifactError, match=r"model\.onnx changed since it was written"):
        check_bundle(out, device("jetson-orin-nano", "10.3.0.30"))


def test_here_building_a_bundle_stops_before_tensorrt(
    precision_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    assert (
        main(
            [
                "bundle",
                str(precision_files["fp32"]),
                "--target",
                "h100",
                "--precision",
                "fp16",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "TensorRT 11.4: precision from the graph; flags none; 0 layer constraints" in printed
    assert (
        "TensorRT 10.16: precision from the builder flags; flags FP16 OBEY_PRECISION_CONSTRAINTS" in printed
    )
    assert printed.rstrip().endswith(f"on the device: vitrt build --bundle {out}")
    if gather_environment().sm is None:
        assert main(["build", "--bundle", str(out)]) == 2
        assert "GPU: needs a sm_90 GPU (h100), this machine has no GPU" in capsys.readouterr().err
        assert not (out / "engine").exists()
    with pytest.raises(ConfigError, match="a bundle fixes the model and its build options; drop precision"):
        vitrt.build(bundle=out, precision="int8")


def test_calibration_cache_bundles_plan_the_tensorrt_that_reads_the_cache(
    precision_files: dict[str, Path], tmp_path: Path
) -> None:
    cache = write_cache(tmp_path / "model.cache", {"images": 0.02}, trt_version="10.3.0")
    out = tmp_path / "bundle"
    result = vitrt.bundle(
        precision_files["fp32"], out, target="jetson-agx-orin", precision="int8", calib_cache=cache
    )
    assert list(result.plans) == ["10.3"] and result.plans["10.3"].precision_source == "calibration cache"
    refused = result.manifest.plan["not_buildable"]  # type: ignore[index]
    assert "header is TRT-100300-EntropyCalibration2; TensorRT 10.16 rejects it" in refused["10.16"]
    assert "TensorRT 11.4.1 has no calibration caches" in refused["11.4.1"]
    assert (out / "calib.cache").read_bytes() == cache.read_bytes()
    assert result.manifest.build_options["calib_cache"] == "calib.cache"
    with pytest.raises(BuildPlanError, match=r"TensorRT 11\.4 has no calibration caches"):
        vitrt.bundle(
            precision_files["fp32"], tmp_path / "b2", target="h100", precision="int8", calib_cache=cache
        )
    assert not (tmp_path / "b2").exists()


def test_plugin_bundles_carry_kernel_sources_and_their_hashes(plugin_graph: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = vitrt.bundle(plugin_graph, out, target="jetson-thor")
    names = sorted(p.name for p in (out / "kernels").iterdir())
    assert {"cuda_common.cuh", "token_fusion.cu"} <= set(names) and "scatterbrain.cu" not in names
    (plugin,) = result.manifest.plugins
    here = gather_environment().plugins["vitrt::TokenFusion"]
    assert plugin["source_sha256"] == here["source_sha256"] and plugin["version"] == "1"
    assert result.manifest.needs_python_plugins and "not under trtexec" in result.manifest.python_plugins
    if "token_fusion.fatbin" not in names:
        assert any("kernel sources only" in n and "NVRTC" in n for n in result.manifest.notes)
    thor = device("jetson-thor", "11.4.1.2")
    check_bundle(out, thor)
    changed = {k: {**v, "source_sha256": "f" * 64} for k, v in thor.plugins.items()}
    with pytest.raises(
        IncompatibleArtifactError, match=r"plugin vitrt::TokenFusion kernels \(token_fusion\.cu\)"
    ):
        check_bundle(out, thor.with_changes(plugins=changed))
    with pytest.raises(BuildPlanError, match="lean runtime"):
        vitrt.bundle(plugin_graph, tmp_path / "b2", target="h100", version_compatible=True)


def test_bundle_refusals(precision_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BuildPlanError, match=r"jetson-orin-nx \(sm_87\) has no FP8"):
        vitrt.bundle(precision_files["fp32"], tmp_path / "b", target="jetson-orin-nx", precision="fp8")
    with pytest.raises(ConfigError, match="a bundle is for a TensorRT target"):
        vitrt.bundle(precision_files["fp32"], tmp_path / "b", target="cpu")
    assert not (tmp_path / "b").exists()
    with pytest.raises(BuildPlanError, match="h100 has no DLA"):
        vitrt.bundle(precision_files["fp16"], tmp_path / "b", target="h100", dla_core=0)
    assert not (tmp_path / "b").exists()
    # DLA on an AGX Orin: TensorRT 10.x on JetPack 6 / 7.2, and 11.4.1 on JetPack 7.2.2
    dla = vitrt.bundle(precision_files["fp16"], tmp_path / "b", target="jetson-agx-orin", dla_core=0)
    assert list(dla.plans) == ["10.3", "10.16", "11.4.1"]
    assert {p.device for p in dla.plans.values()} == {"DLA"} and dla.plans["11.4.1"].builder_flags == (
        "GPU_FALLBACK",
    )


def test_the_help_names_only_targets_a_bundle_is_for(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrap inside a target's name
    with pytest.raises(SystemExit):
        main(["bundle", "--help"])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("--target")]
    assert (
        line.split(None, 2)[2]
        == "a TensorRT target from `vitrt targets` (jetson-orin-nano, jetson-thor, h100, ...)"
    )
