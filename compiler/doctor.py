"""``vitrt doctor``: what this machine has for each stage, what is missing, and the command that fixes it.

Every check imports or runs something real (a package import, ``nvcc --version``, the fatbin headers,
``torch.cuda``), never a guess from file names, and none of them fails: a missing piece is a finding.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    """One component: ``ok`` whether it is usable here, ``detail`` its version / location / reason,
    ``fix`` the command or step that makes it usable ("" when ok), ``needed_for`` the stages it serves."""

    name: str
    ok: bool
    detail: str
    fix: str
    needed_for: str


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package(name: str, dist: str, fix: str, needed_for: str) -> Finding:
    try:
        importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything at import
        return Finding(name, False, f"import {name} failed ({exc})", fix, needed_for)
    return Finding(name, True, _version(dist) or "installed", "", needed_for)


def _torch() -> Finding:
    import torch

    cuda = (
        f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
        if torch.cuda.is_available()
        else f"no CUDA device ({'CPU build' if torch.version.cuda is None else 'CUDA ' + torch.version.cuda})"
    )
    return Finding("torch", True, f"{torch.__version__}; {cuda}", "", "everything")


def _onnxruntime() -> Finding:
    found = _package("onnxruntime", "onnxruntime", "pip install 'vitrt[onnx]'", "verify, calibrate")
    if found.ok:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
        return Finding(found.name, True, f"{found.detail}; providers {providers}", "", found.needed_for)
    return found


def _tensorrt() -> Finding:
    from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

    reason = tensorrt_missing_reason()
    if reason:
        fix = "pip install tensorrt (>= 10.0; on Jetson it comes with JetPack)"
        return Finding("tensorrt", False, reason, fix, "engines, TensorRT plugins")
    import tensorrt

    return Finding("tensorrt", True, str(tensorrt.__version__), "", "engines, TensorRT plugins")


def _cuda_python() -> Finding:
    from vitrt.errors import VitrtError
    from vitrt.plugins.cuda_launcher import cuda_driver

    try:
        module = cuda_driver()  # the launcher's own import (cuda.bindings.driver, or cuda.cuda)
    except VitrtError as err:
        return Finding("cuda-python", False, str(err), "pip install cuda-python", "GPU kernels")
    return Finding("cuda-python", True, _version("cuda-python") or module.__name__, "", "GPU kernels")


def _toolkit() -> Finding:
    from vitrt.errors import VitrtError
    from vitrt.plugins.cuda_build import find_cuda_home, nvcc_version

    try:
        home = find_cuda_home()
    except VitrtError as err:
        return Finding(
            "CUDA toolkit", False, str(err), "install the CUDA toolkit or set CUDA_HOME", "kernel build"
        )
    return Finding("CUDA toolkit", True, f"{home} ({nvcc_version(home)})", "", "kernel build")


def _fatbins() -> Finding:
    from vitrt.plugins.cuda_build import fatbin_archs, fatbin_is_current, fatbin_path, kernel_sources

    built, problems = [], []
    for src in kernel_sources():
        path = fatbin_path(src.name)
        if not path.is_file():
            problems.append(f"{src.name} not built")
            continue
        cubins, ptx = fatbin_archs(path)
        built.append(f"{src.name}: {' '.join(cubins + ptx)}")
        if fatbin_is_current(src) is False:
            problems.append(f"{src.name} is older than its sources")
    need = "GPU kernels, TensorRT plugins"
    if problems:
        detail = "; ".join(problems) + (f" (built: {'; '.join(built)})" if built else "")
        return Finding("kernel fatbins", False, detail, "vitrt plugins build", need)
    return Finding("kernel fatbins", True, "; ".join(built), "", need)


def _emulator() -> Finding:
    from vitrt.plugins.cuda_emulation import KernelEmulationError, compiler_version, host_compiler

    try:
        cxx = host_compiler()
    except KernelEmulationError as err:
        return Finding("kernel emulator", False, str(err), "install g++ >= 12", "kernel tests without a GPU")
    return Finding(
        "kernel emulator", True, f"{cxx} ({compiler_version(cxx)})", "", "kernel tests without a GPU"
    )


CHECKS: tuple[Callable[[], Finding], ...] = (
    _torch,
    lambda: _package("onnx", "onnx", "pip install 'vitrt[onnx]'", "export"),
    _onnxruntime,
    lambda: _package("openvino", "openvino", "pip install 'vitrt[openvino]'", "cpu target (OpenVINO)"),
    lambda: _package("onnxsim", "onnxsim", "pip install 'vitrt[onnx]'", "export (simplification)"),
    lambda: _package("polygraphy", "polygraphy", "pip install 'vitrt[onnx]'", "verify (I/O files)"),
    _tensorrt,
    _cuda_python,
    _toolkit,
    _fatbins,
    _emulator,
)


def diagnose() -> list[Finding]:
    """One Finding per component, in pipeline order (see ``CHECKS``)."""
    return [check() for check in CHECKS]


def report(findings: list[Finding]) -> str:
    """The findings as the text ``vitrt doctor`` prints: a line each, then what to do."""
    head = f"vitrt {_version('vitrt') or '(not installed)'} on {platform.system()} {platform.machine()}"
    lines = [f"{head}, Python {platform.python_version()}"]
    width = max(len(f.name) for f in findings)
    for f in findings:
        lines.append(f"  {'ok ' if f.ok else '-- '} {f.name:<{width}}  {f.detail}")
    todo = [f for f in findings if not f.ok]
    if todo:
        lines.append("to enable the rest:")
        lines += [f"  {f.name} ({f.needed_for}): {f.fix}" for f in todo]
    return "\n".join(lines)


def to_json(findings: list[Finding]) -> str:
    """The findings as JSON: {"python": ..., "platform": ..., "findings": [Finding fields]}."""
    payload = {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "findings": [asdict(f) for f in findings],
    }
    return json.dumps(payload, indent=2)
