"""The facts of the machine an engine is built or run on, as plain data (``EnvironmentFacts``).

``gather_environment()`` reads them without failing: TensorRT's version where ``import tensorrt`` works,
the GPU's name and SM and the driver's CUDA version through cuda-python where a driver answers, the
JetPack / L4T release on a Jetson, the CPU's name and the instruction-set flags the CPU runtimes care
about, the CPU runtimes' versions, and the hashes of this vitrt's kernel sources. Anything missing is
None. Manifest checks (``vitrt.compiler.manifest``) compare a manifest with these facts as data, so tests
use recorded facts (an Orin with TensorRT 10.3, an H100 with 11.4) instead of mocking TensorRT.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import platform
import subprocess
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CPU_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "asimd",
    "sve",
)
"""The /proc/cpuinfo flags that decide CPU inference speed (AVX-512 / VNNI for INT8, BF16 / AMX for the
bf16 path; asimd / SVE on Arm), recorded in CPU manifests."""


@dataclass(frozen=True)
class EnvironmentFacts:
    """Where vitrt runs. tensorrt: ``tensorrt.__version__`` ("10.3.0.30") or None; cuda_driver: the driver's
    CUDA version ("13.0") or None; gpu_name / sm ("sm_87"): device 0, or None without a GPU; jetpack: the
    nvidia-jetpack package version, l4t: the L4T release ("36.4.3"), None off Jetson; cpu_flags: those of
    ``CPU_FLAGS`` the CPU has; plugins: this vitrt's plugin ops, "namespace::name" -> {"name", "version",
    "namespace", "source" (kernel source name), "source_sha256"} (``plugin_records``)."""

    vitrt: str
    os: str
    machine: str
    python: str
    tensorrt: str | None = None
    cuda_driver: str | None = None
    gpu_name: str | None = None
    sm: str | None = None
    jetpack: str | None = None
    l4t: str | None = None
    cpu_name: str = ""
    cpu_flags: tuple[str, ...] = ()
    onnxruntime: str | None = None
    openvino: str | None = None
    plugins: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvironmentFacts:
        data = dict(data)
        data["cpu_flags"] = tuple(data.get("cpu_flags", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_changes(self, **changes: Any) -> EnvironmentFacts:
        return replace(self, **changes)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorrt_version() -> str | None:
    """``tensorrt.__version__`` where TensorRT (not just its type stubs) imports, else None."""
    from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

    if tensorrt_missing_reason():
        return None
    return str(importlib.import_module("tensorrt").__version__)


def gpu_facts() -> tuple[str | None, str | None, str | None]:
    """(GPU name, "sm_XY", driver CUDA version) of device 0 through cuda-python's driver API, or Nones
    where cuda-python or a driver is missing."""
    from vitrt.errors import VitrtError
    from vitrt.plugins.cuda_launcher import check, cuda_driver, device_info

    try:
        info = device_info(0)
        version = int(check(cuda_driver().cuDriverGetVersion(), "cuDriverGetVersion"))
    except (VitrtError, RuntimeError, OSError) as err:
        log.debug("no GPU facts: %s", err)
        return None, None, None
    return info.name, info.arch, f"{version // 1000}.{version % 1000 // 10}"


def jetson_release() -> tuple[str | None, str | None]:
    """(nvidia-jetpack package version, L4T release) on a Jetson, else (None, None)."""
    l4t = None
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        # "# R36 (release), REVISION: 4.3, GCID: ..." -> "36.4.3"
        text = release.read_text(errors="replace")
        major = text.split("(release)")[0].split("R")[-1].strip()
        revision = text.split("REVISION:")[1].split(",")[0].strip() if "REVISION:" in text else ""
        l4t = f"{major}.{revision}" if major.isdigit() and revision else None
    jetpack = None
    if l4t is not None:
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            jetpack = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            jetpack = None
    return jetpack, l4t


@cache
def cpu_facts() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, the ``CPU_FLAGS`` it has) from /proc/cpuinfo (Linux), else platform's words."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and name in ("", platform.processor() or platform.machine()):
                name = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return name, tuple(f for f in CPU_FLAGS if f in flags)


def plugin_records() -> dict[str, dict[str, str]]:
    """This vitrt's plugin ops: "namespace::name" -> {"name", "version", "namespace", "source",
    "source_sha256"}:
    each op's spec (``vitrt.plugins.OP_PACKAGES``) and the kernel source in its folder, hashed with
    ``vitrt.plugins.cuda_build.source_hash`` (what a fatbin or an NVRTC build of this vitrt compiles)."""
    from vitrt.plugins import OP_PACKAGES
    from vitrt.plugins.cuda_build import kernel_sources, source_hash

    sources = {src.path.parent: src for src in kernel_sources()}
    records = {}
    for pkg in OP_PACKAGES:
        spec = importlib.import_module(f"{pkg}.spec")
        src = sources[Path(str(spec.__file__)).resolve().parent]
        records[f"{spec.PLUGIN_NAMESPACE}::{spec.PLUGIN_NAME}"] = {
            "name": spec.PLUGIN_NAME,
            "version": spec.PLUGIN_VERSION,
            "namespace": spec.PLUGIN_NAMESPACE,
            "source": src.name,
            "source_sha256": source_hash(src),
        }
    return records


def gather_environment() -> EnvironmentFacts:
    """This machine's EnvironmentFacts (never raises: what cannot be found is None)."""
    import vitrt

    gpu_name, sm, driver = gpu_facts()
    jetpack, l4t = jetson_release()
    cpu_name, flags = cpu_facts()
    return EnvironmentFacts(
        vitrt=vitrt.__version__,
        os=platform.system(),
        machine=platform.machine(),
        python=platform.python_version(),
        tensorrt=tensorrt_version(),
        cuda_driver=driver,
        gpu_name=gpu_name,
        sm=sm,
        jetpack=jetpack,
        l4t=l4t,
        cpu_name=cpu_name,
        cpu_flags=flags,
        onnxruntime=_version("onnxruntime"),
        openvino=_version("openvino"),
        plugins=plugin_records(),
    )
