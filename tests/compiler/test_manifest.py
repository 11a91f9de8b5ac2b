"""Manifest checks against recorded environment facts: what differs between an engine (or a CPU artifact,
or a bundle) and the machine loading it, said before TensorRT would fail. No TensorRT or GPU needed: the
environments are EnvironmentFacts as ``gather_environment()`` returns them on each machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vitrt.compiler.build_plan import BuildOptions, ModelFacts, TensorInfo, plan_build
from vitrt.compiler.environment import EnvironmentFacts, gather_environment, plugin_records
from vitrt.compiler.manifest import (
    IncompatibleArtifactError,
    Manifest,
    check_artifact,
    compare,
    plugin_entries,
    read_manifest,
    require_compatible,
    verify_files,
    write_manifest,
)
from vitrt.compiler.targets import get_target
from vitrt.errors import VitrtError

PLUGINS = plugin_records()
ORIN = EnvironmentFacts(
    vitrt="0.1.0",
    os="Linux",
    machine="aarch64",
    python="3.10.12",
    tensorrt="10.3.0.30",
    cuda_driver="12.6",
    gpu_name="Orin (nvgpu)",
    sm="sm_87",
    jetpack="6.2+b77",
    l4t="36.4.3",
    cpu_name="Cortex-A78AE",
    cpu_flags=("asimd",),
    plugins=PLUGINS,
)
"""A Jetson Orin Nano on JetPack 6.2."""
H100 = EnvironmentFacts(
    vitrt="0.1.0",
    os="Linux",
    machine="x86_64",
    python="3.12.3",
    tensorrt="11.4.0.11",
    cuda_driver="13.0",
    gpu_name="NVIDIA H100 80GB HBM3",
    sm="sm_90",
    cpu_name="Intel(R) Xeon(R) Platinum 8480+",
    cpu_flags=("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"),
    onnxruntime="1.31.1",
    plugins=PLUGINS,
)
"""A datacenter machine with the TensorRT 11 wheel."""
WORKSTATION = EnvironmentFacts(
    vitrt="0.1.0",
    os="Linux",
    machine="x86_64",
    python="3.11.7",
    cpu_name="AMD EPYC",
    cpu_flags=("avx2", "avx512f"),
    onnxruntime="1.31.1",
    plugins=PLUGINS,
)
"""No GPU, no TensorRT, no OpenVINO."""
FACTS = ModelFacts(
    "fp16",
    (TensorInfo("images", (1, 3, 224, 224), "float32"),),
    (TensorInfo("logits", (1, 1000), "float32"),),
    plugins=("TokenFusion",),
)


def engine_manifest(env: EnvironmentFacts, target: str, **options: object) -> Manifest:
    """The manifest ``vitrt build`` writes for an engine built on ``env``."""
    plan = plan_build(target, FACTS, env.tensorrt or "10.3", BuildOptions(**options))  # type: ignore[arg-type]
    return Manifest(
        kind="engine",
        target=get_target(target).to_dict(),
        runtime={"name": "tensorrt", "version": env.tensorrt},
        environment=env.to_dict(),
        precision="fp16",
        model={"file": "model.plan"},
        plan=plan.to_dict(),
        plugins=plugin_entries(plan.plugins),
        needs_python_plugins=plan.needs_python_plugins,
        vitrt_version="0.1.0",
    )


def test_an_engine_matches_the_machine_it_was_built_on() -> None:
    manifest = engine_manifest(ORIN, "jetson-orin-nano")
    assert compare(manifest, ORIN) == []
    assert require_compatible(manifest, ORIN) == []


def test_another_tensorrt_version_is_named_with_both_versions() -> None:
    manifest = engine_manifest(ORIN, "jetson-orin-nano")
    (diff,) = compare(manifest, ORIN.with_changes(tensorrt="10.7.0.23"))
    assert diff.what == "TensorRT version" and diff.fatal
    assert "10.3.0.30 exactly" in diff.expected and diff.found == "TensorRT 10.7.0.23"
    assert "rebuild the engine on this machine" in diff.fix
    # only the build number differs: TensorRT still refuses it
    assert [d.what for d in compare(manifest, ORIN.with_changes(tensorrt="10.3.0.26"))] == [
        "TensorRT version"
    ]


def test_version_compatible_engines_run_on_newer_tensorrt_of_the_same_major() -> None:
    portable = ModelFacts("fp32", FACTS.inputs, FACTS.outputs)  # no Python plugin: the lean runtime allows it
    plan = plan_build("jetson-orin-nano", portable, "10.3.0.30", BuildOptions(version_compatible=True))
    engine = engine_manifest(ORIN, "jetson-orin-nano").to_dict()
    manifest = Manifest(**{**engine, "plan": plan.to_dict(), "plugins": [], "needs_python_plugins": False})
    assert compare(manifest, ORIN.with_changes(tensorrt="10.7.0.23")) == []
    (diff,) = compare(manifest, ORIN.with_changes(tensorrt="11.4.1.2"))
    assert diff.what == "TensorRT version (version-compatible engine)"
    assert diff.expected == "TensorRT 10.x from 10.3.0.30 on"
    assert compare(manifest, ORIN.with_changes(tensorrt="10.2.0.1"))  # older than the build: refused


def test_an_engine_on_another_gpu_or_platform() -> None:
    manifest = engine_manifest(H100, "h100")
    assert compare(manifest, H100) == []
    diffs = {d.what: d for d in compare(manifest, ORIN)}
    assert set(diffs) == {"platform", "TensorRT version", "GPU architecture"}
    assert diffs["GPU architecture"].expected == "sm_90 (h100)"
    assert diffs["GPU architecture"].found == "sm_87 (Orin (nvgpu))"
    assert diffs["platform"].expected == "Linux x86_64" and diffs["platform"].found == "Linux aarch64"
    a100 = H100.with_changes(sm="sm_80", gpu_name="NVIDIA A100-SXM4-80GB")
    assert [d.what for d in compare(manifest, a100)] == ["GPU architecture"]
    portable = engine_manifest(H100, "h100", hardware_compatibility="ampere_plus")
    assert compare(portable, a100) == []  # AMPERE_PLUS engines run on any Ampere or newer GPU


def test_no_tensorrt_or_no_gpu_says_what_to_install() -> None:
    manifest = engine_manifest(H100, "h100")
    diffs = {d.what: d for d in compare(manifest, WORKSTATION)}
    assert diffs["TensorRT"].fix == "pip install tensorrt==11.4.0.11 (on a Jetson it comes with JetPack)"
    assert diffs["GPU"].found == "no GPU (no CUDA driver answered)"
    with pytest.raises(IncompatibleArtifactError) as err:
        require_compatible(manifest, WORKSTATION, where="deit.h100")
    message = str(err.value)
    assert message.startswith("deit.h100: this engine (target h100, vitrt 0.1.0) cannot run here:")
    assert "  - TensorRT: needs TensorRT 11.4.0.11, this machine has no importable TensorRT" in message
    assert "  - GPU: needs a sm_90 GPU" in message


def test_plugin_kernels_of_another_vitrt_or_a_missing_plugin() -> None:
    manifest = engine_manifest(ORIN, "jetson-orin-nano")
    changed = {k: {**v, "source_sha256": "0" * 64} for k, v in PLUGINS.items()}
    (diff,) = compare(manifest, ORIN.with_changes(plugins=changed))
    assert diff.what == "plugin vitrt::TokenFusion kernels (token_fusion.cu)"
    assert diff.found == "000000000000... (vitrt 0.1.0)" and "install vitrt 0.1.0" in diff.fix
    missing = {k: v for k, v in PLUGINS.items() if not k.endswith("TokenFusion")}
    (diff,) = compare(manifest, ORIN.with_changes(plugins=missing))
    assert diff.what == "plugin vitrt::TokenFusion (version 1)" and "no such plugin" in diff.found


def cpu_manifest(runtime: str, inference: str = "f32") -> Manifest:
    return Manifest(
        kind="cpu",
        target=get_target("cpu").to_dict(),
        runtime={
            "name": runtime,
            "version": "2026.4.1" if runtime == "openvino" else "1.31.1",
            "inference_precision": inference,
        },
        environment=H100.to_dict(),
        precision="int8",
        model={"file": "model.xml"},
    )


def test_cpu_artifacts_need_their_runtime() -> None:
    assert compare(cpu_manifest("onnxruntime"), WORKSTATION) == []
    (diff,) = compare(cpu_manifest("openvino"), WORKSTATION)
    assert diff.fatal and diff.fix == "pip install 'vitrt[openvino]'"
    here = WORKSTATION.with_changes(openvino="2026.4.1")
    (diff,) = compare(cpu_manifest("openvino", "bf16"), here)  # no avx512_bf16 / amx here
    assert not diff.fatal and diff.what == "bf16 inference" and "computes in f32 here" in diff.fix
    assert compare(cpu_manifest("openvino", "bf16"), here.with_changes(cpu_flags=("avx512_bf16",))) == []
    (diff,) = compare(cpu_manifest("onnxruntime"), WORKSTATION.with_changes(onnxruntime="1.30.0"))
    assert not diff.fatal and diff.what == "onnxruntime version"


def test_manifest_files_round_trip_and_damage(tmp_path: Path) -> None:
    manifest = Manifest(**{**cpu_manifest("onnxruntime").to_dict(), "files": {}})
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    from vitrt.compiler.manifest import file_record

    manifest = Manifest(
        **{**manifest.to_dict(), "files": {"model.onnx": file_record(tmp_path / "model.onnx")}}
    )
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest == read_manifest(tmp_path / "model.onnx")
    verify_files(tmp_path, manifest)
    (tmp_path / "model.onnx").write_bytes(b"other bytes")
    with pytest.raises(IncompatibleArtifactError, match=r"model.onnx changed since it was written"):
        verify_files(tmp_path, manifest)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(IncompatibleArtifactError, match=r"model.onnx is missing"):
        verify_files(tmp_path, manifest)
    data = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "format": 2}))
    with pytest.raises(VitrtError, match=r"manifest format 2 is not 1"):
        read_manifest(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VitrtError, match=r"holds no manifest.json or bundle.json: not a vitrt artifact"):
        read_manifest(tmp_path / "empty")


def test_check_of_a_file_outside_an_artifact_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vitrt.compiler.cli import main

    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx bytes")
    assert main(["check", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vitrt check: error: {model} is a file, not an artifact or bundle folder, and ")
    assert "Fix: give the folder `vitrt build` or `vitrt bundle` wrote (or a file in it); to make one" in err
    assert f"vitrt build {model} --target T -o OUT/" in err and f"{tmp_path} holds" not in err
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(VitrtError, match=r"notes.txt is a file, not an artifact .*\(or a file in it\)$"):
        check_artifact(notes)
    # load_artifact names the path given too (it named its folder, "."), and a missing one as missing
    import vitrt

    with pytest.raises(VitrtError, match=rf"^{re.escape(str(model))} is a file, not an artifact or bundle"):
        vitrt.load_artifact(model)
    with pytest.raises(VitrtError, match=rf"^{re.escape(str(tmp_path / 'nope.cpu'))} does not exist$"):
        vitrt.load_artifact(tmp_path / "nope.cpu")
    with pytest.raises(VitrtError, match=rf"^{re.escape(str(tmp_path))} holds no manifest.json or bundle"):
        vitrt.load_artifact(tmp_path)


def test_this_machine_facts_are_plain_data() -> None:
    facts = gather_environment()
    assert EnvironmentFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    assert set(facts.plugins) == {"vitrt::TokenFusion", "vitrt::ScatterbrainAttention"}
    assert all(len(p["source_sha256"]) == 64 for p in facts.plugins.values())
