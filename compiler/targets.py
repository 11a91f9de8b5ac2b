"""Target profiles: the devices vitrt builds for, as plain data (``vitrt targets``).

A target is what an engine is tied to: the GPU architecture (SM), the TensorRT and CUDA versions the
device's software stack ships, and the hardware's limits (memory, DLA cores, precisions with hardware
support). The build plan (``vitrt.compiler.build_plan``) reads these facts and refuses what a target
cannot do (FP8 on an Orin, DLA on a Thor) before any TensorRT call.

Sources (ARCHITECTURE.md section 3, and NVIDIA's support matrices and JetPack release notes):

- JetPack -> TensorRT / CUDA: 6.1-6.2.x -> 10.3 / 12.6; 7.0-7.1 (Thor) -> 10.13 / 13.0; 7.2 -> 10.16 /
  13.2; TensorRT 11.4.1 supports AGX Orin and Thor from JetPack 7.2.2 (and DLA on AGX Orin there). So
  Orin on JetPack 6 stays on TensorRT 10.x, while Thor and the datacenter wheels move to 11.x.
- Orin is sm_87 (Ampere: FP16 / BF16 / INT8 tensor cores, no FP8); DLA v2 on AGX Orin (2 cores) and
  Orin NX 16 GB (2 cores; the 8 GB module has 1), none on the Orin Nano. Thor is sm_110 (CUDA 13's name;
  CUDA 12.8 called it sm_101): FP8 and FP4, no DLA. A100 sm_80 (no FP8), L4 sm_89 (Ada: FP8), H100 sm_90
  (FP8, no FP4: FP4 is Blackwell).
- Engines are tied to the TensorRT version (major, minor, patch and build must match unless built
  version-compatible), the GPU architecture (unless hardware-compatible) and the OS.

Memory budgets are the module's (Jetson: unified CPU + GPU memory) or the card's; the default
workspace is the TensorRT WORKSPACE pool limit a build gets unless ``--workspace`` says otherwise, kept
to an eighth of the smaller boards' memory so that the build leaves room for the rest of the system.
The builder optimisation level is TensorRT's default (3) everywhere: higher levels multiply build time,
which matters most on the device that builds its own engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vitrt.errors import ConfigError

HARDWARE_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8", "fp4")
"""Compute precisions a target's hardware may support (``Target.precisions`` is a subset)."""


@dataclass(frozen=True)
class SoftwareStack:
    """One software release a target runs: ``name`` (e.g. "JetPack 6.2"), the TensorRT major.minor it
    ships (an engine needs the exact patch and build too, which the device's install decides) and its CUDA
    version. ``jetpack`` is None off Jetson."""

    name: str
    tensorrt: str
    cuda: str
    jetpack: str | None = None

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])


@dataclass(frozen=True)
class Target:
    """A device profile (module docstring for the sources).

    kind: "jetson", "datacenter" or "cpu". sm / compute_capability: the GPU architecture ("sm_87",
    (8, 7)); None for "cpu". memory_gib: device memory (unified on Jetson). dla_cores: DLA cores
    (0: none). precisions: compute precisions with hardware support (``HARDWARE_PRECISIONS``).
    stacks: the software releases it runs, the default first (Orin: JetPack 6.2 with TensorRT 10.3; Thor
    and the datacenter GPUs: TensorRT 11.4), then the others; a bundle is planned for each.
    workspace_mib: default TensorRT WORKSPACE pool limit in MiB.
    optimization_level: default builder optimisation level (0-5).
    """

    name: str
    description: str
    kind: str
    gpu: str | None
    sm: str | None
    compute_capability: tuple[int, int] | None
    memory_gib: float
    dla_cores: int
    precisions: tuple[str, ...]
    stacks: tuple[SoftwareStack, ...]
    workspace_mib: int
    optimization_level: int = 3
    notes: str = ""

    @property
    def uses_tensorrt(self) -> bool:
        return self.kind != "cpu"

    @property
    def default_stack(self) -> SoftwareStack | None:
        return self.stacks[0] if self.stacks else None

    def supports(self, precision: str) -> bool:
        """Whether the hardware computes in ``precision`` ("int8+fp16" needs both)."""
        return all(p in self.precisions for p in precision.split("+"))

    def tensorrt_versions(self) -> tuple[str, ...]:
        """The TensorRT major.minor versions of ``stacks``, in order, without repeats."""
        return tuple(dict.fromkeys(s.tensorrt for s in self.stacks))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability) if self.compute_capability else None
        return data


_JETPACK_6 = SoftwareStack("JetPack 6.2", "10.3", "12.6", "6.2")
_JETPACK_7_THOR = SoftwareStack("JetPack 7.0 / 7.1", "10.13", "13.0", "7.0")
_JETPACK_7_2 = SoftwareStack("JetPack 7.2", "10.16", "13.2", "7.2")
_JETPACK_7_2_2 = SoftwareStack("JetPack 7.2.2+", "11.4.1", "13.x", "7.2.2")
_WHEEL_10 = SoftwareStack("pip tensorrt 10.x", "10.16", "12.x or 13.x")
_WHEEL_11 = SoftwareStack("pip tensorrt 11.x", "11.4", "13.x")
_ORIN = ("fp32", "tf32", "fp16", "bf16", "int8")

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "jetson-orin-nano",
            "Jetson Orin Nano 8 GB (Super)",
            "jetson",
            "Orin (nvgpu)",
            "sm_87",
            (8, 7),
            8.0,
            0,
            _ORIN,
            (_JETPACK_6,),
            1024,
            notes="no DLA; the 4 GB module has half the memory (pass --workspace 512)",
        ),
        Target(
            "jetson-orin-nx",
            "Jetson Orin NX 16 GB",
            "jetson",
            "Orin (nvgpu)",
            "sm_87",
            (8, 7),
            16.0,
            2,
            _ORIN,
            (_JETPACK_6,),
            2048,
            notes="the 8 GB module has 1 DLA core",
        ),
        Target(
            "jetson-agx-orin",
            "Jetson AGX Orin 64 GB",
            "jetson",
            "Orin (nvgpu)",
            "sm_87",
            (8, 7),
            64.0,
            2,
            _ORIN,
            (_JETPACK_6, _JETPACK_7_2, _JETPACK_7_2_2),
            4096,
            notes="DLA on TensorRT 10.x (JetPack 6) and on 11.4.1+ (JetPack 7.2.2); the 32 GB module has "
            "half the memory",
        ),
        Target(
            "jetson-thor",
            "Jetson AGX Thor (T5000)",
            "jetson",
            "Thor (Blackwell)",
            "sm_110",
            (11, 0),
            128.0,
            0,
            ("fp32", "tf32", "fp16", "bf16", "int8", "fp8", "fp4"),
            (_JETPACK_7_2_2, _JETPACK_7_2, _JETPACK_7_THOR),
            8192,
            notes="sm_110 since CUDA 13 (sm_101 in CUDA 12.8); no DLA",
        ),
        Target(
            "a100",
            "NVIDIA A100 80 GB",
            "datacenter",
            "A100",
            "sm_80",
            (8, 0),
            80.0,
            0,
            ("fp32", "tf32", "fp16", "bf16", "int8"),
            (_WHEEL_11, _WHEEL_10),
            8192,
        ),
        Target(
            "h100",
            "NVIDIA H100 80 GB",
            "datacenter",
            "H100",
            "sm_90",
            (9, 0),
            80.0,
            0,
            ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"),
            (_WHEEL_11, _WHEEL_10),
            8192,
        ),
        Target(
            "l4",
            "NVIDIA L4 24 GB",
            "datacenter",
            "L4",
            "sm_89",
            (8, 9),
            24.0,
            0,
            ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"),
            (_WHEEL_11, _WHEEL_10),
            3072,
        ),
        Target(
            "cpu",
            "this machine's CPU: ONNX Runtime or OpenVINO, whichever is faster",
            "cpu",
            None,
            None,
            None,
            0.0,
            0,
            ("fp32", "fp16", "bf16", "int8"),
            (),
            0,
            optimization_level=0,
            notes="FP32, INT8 (Q/DQ) and FP16 files; OpenVINO is the optional extra vitrt[openvino]",
        ),
    )
}
"""Every target, by name."""


def targets(names: Sequence[str] = ()) -> list[Target]:
    """The targets called ``names`` (all of them when empty), in that order: ``vitrt targets`` as a function
    (``vitrt.targets``). ConfigError listing the known names for an unknown one."""
    return [get_target(n) for n in names] if names else list(TARGETS.values())


def list_targets() -> list[str]:
    """The target names, in the order of ``TARGETS`` (Jetsons, datacenter GPUs, cpu)."""
    return list(TARGETS)


def get_target(name: str) -> Target:
    """The target called ``name``; ConfigError listing the known ones otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown target {name!r}; one of: {', '.join(TARGETS)} (`vitrt targets`)"
        ) from None


def targets_with(precision: str | None = None, *, dla: bool = False) -> list[str]:
    """Names of the TensorRT targets with hardware ``precision`` and, if ``dla``, DLA cores (for errors
    that say where to go instead)."""
    return [
        t.name
        for t in TARGETS.values()
        if t.uses_tensorrt and (precision is None or t.supports(precision)) and (not dla or t.dla_cores)
    ]


def format_targets(rows: Sequence[Target] = ()) -> str:
    """The table ``vitrt targets`` prints, one line per target (default: all)."""
    rows = rows or list(TARGETS.values())
    lines = [
        f"{'target':<17} {'SM':<7} {'memory':>7} {'DLA':>3}  {'precisions':<32} {'workspace':>9}  TensorRT "
        "/ CUDA"
    ]
    for t in rows:
        memory = f"{t.memory_gib:g} GiB" if t.memory_gib else "-"
        workspace = f"{t.workspace_mib} MiB" if t.workspace_mib else "-"
        stacks = (
            "; ".join(f"{s.tensorrt} / {s.cuda} ({s.name})" for s in t.stacks) or "ONNX Runtime / OpenVINO"
        )
        lines.append(
            f"{t.name:<17} {t.sm or '-':<7} {memory:>7} {t.dla_cores:>3}  {' '.join(t.precisions):<32} "
            f"{workspace:>9}  {stacks}"
        )
    return "\n".join(lines)
