"""vitrt doctor reports what this machine really has (each finding checked against the same fact
found another way) and never fails."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from vitrt.compiler.cli import main
from vitrt.compiler.doctor import diagnose
from vitrt.plugins.cuda_build import KernelSource, build_fatbin, fatbin_is_current
from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason


def test_findings_match_the_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    found = {f["name"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    assert found["torch"]["ok"] and found["torch"]["detail"].startswith(torch.__version__)
    assert ("no CUDA device" in found["torch"]["detail"]) != torch.cuda.is_available()
    assert found["onnx"]["ok"]
    assert found["openvino"]["ok"] == (importlib.util.find_spec("openvino") is not None)
    trt = found["tensorrt"]
    assert trt["ok"] == (tensorrt_missing_reason() is None)
    if not trt["ok"]:
        assert trt["detail"] == tensorrt_missing_reason() and "pip install tensorrt" in trt["fix"]
    assert found["kernel emulator"]["ok"] == (shutil.which("g++") is not None)
    assert all(f["fix"] == "" for f in found.values() if f["ok"])
    assert all(f["fix"] for f in found.values() if not f["ok"])


def test_text_report_lists_every_missing_piece_with_its_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for f in diagnose():
        assert f.name in out
        if not f.ok:
            assert f"{f.name} ({f.needed_for}): {f.fix}" in out


def test_a_fatbin_older_than_its_source_is_found(tmp_path: Path) -> None:
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("no CUDA toolkit: nvcc is needed to build a fatbin")
    source = KernelSource("tiny", tmp_path / "tiny.cu")
    source.path.write_text('extern "C" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; }\n')
    build_fatbin(source, tmp_path, archs=("sm_90",), ptx=None)
    assert fatbin_is_current(source, tmp_path) is True
    source.path.write_text('extern "C" __global__ void k(float* x) { x[threadIdx.x] = 2.0f; }\n')
    assert fatbin_is_current(source, tmp_path) is False
    assert fatbin_is_current(KernelSource("other", tmp_path / "other.cu"), tmp_path) is None
