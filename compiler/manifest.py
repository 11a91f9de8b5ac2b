"""``manifest.json``: what an artifact (an engine, a CPU model) or a bundle is and what it needs, and the
check of it against the machine that loads it.

Every artifact folder ``vitrt build`` writes holds its model file and a manifest; every bundle ``vitrt
bundle`` writes holds a ``bundle.json`` of the same schema (``kind`` "bundle", the fields the device's build
will record filled with what is expected). Schema (``format`` 1):

    {"format": 1, "kind": "engine" | "cpu" | "bundle", "vitrt_version": "0.1.0",
     "created": "2026-11-26T12:00:00Z", "build_seconds": 41.2,
     "target": {... vitrt.compiler.targets.Target ...},
     "runtime": {"name": "tensorrt" | "onnxruntime" | "openvino", "version": "10.3.0.30",
                 "inference_precision": "f32" | "bf16" | null, "threads": 2 | null, ...},
     "environment": {... EnvironmentFacts of the building machine: TensorRT, CUDA driver, JetPack / L4T,
                     GPU name and SM, CPU name and flags ...},
     "precision": "int8", "precision_recipe": {... PrecisionRecipe ...} | null,
     "plugins": [{"name": "TokenFusion", "version": "1", "namespace": "vitrt", "source": "token_fusion",
                  "source_sha256": "...", "fatbin_sha256": "..." | null, "fatbin_archs": ["sm_87", ...]}],
     "needs_python_plugins": true, "python_plugins": "... runs only inside Python ...",
     "model": {"file": "model.plan", "source": "deit_s.int8.onnx", "source_sha256": "...",
               "built_from_sha256": "...", "export_config": {...} | null},
     "build_options": {... BuildOptions ...}, "plan": {... BuildPlan or CpuPlan ...},
     "files": {"model.plan": {"bytes": 23456789, "sha256": "..."}},
     "io": [{"name": "images", "mode": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}, ...],
     "notes": ["..."], "extra": {"timings": ..., "agreement": ..., "expected": ...}}

``compare(manifest, facts)`` lists every ``Difference`` between a manifest and ``EnvironmentFacts`` (pure
data in, data out); ``require_compatible`` raises ``IncompatibleArtifactError`` naming each fatal one and
its fix, so a user reads "engine built with TensorRT 10.3.0.30 for sm_87, this machine has 10.7.0.23 on
sm_90" instead of TensorRT's deserialisation error.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_write_bytes, file_sha256

from .environment import EnvironmentFacts

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
BUNDLE_NAME = "bundle.json"
MANIFEST_FORMAT = 1
KINDS = ("engine", "cpu", "bundle")


class IncompatibleArtifactError(VitrtError):
    """An engine, CPU artifact or bundle that this machine cannot run or build; the message lists what
    differs and the fix."""


@dataclass(frozen=True)
class Manifest:
    """The manifest of an artifact or a bundle (module docstring for the JSON schema)."""

    kind: str
    target: dict[str, Any]
    runtime: dict[str, Any]
    environment: dict[str, Any]
    precision: str
    model: dict[str, Any]
    build_options: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    precision_recipe: dict[str, Any] | None = None
    plugins: list[dict[str, Any]] = field(default_factory=list)
    needs_python_plugins: bool = False
    python_plugins: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    io: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    vitrt_version: str = ""
    created: str = ""
    format: int = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise VitrtError(f"manifest kind {self.kind!r} is not one of {KINDS}")
        # Held as the JSON it is written as (tuples become lists), so a manifest read back equals the one
        # written; this also fails early on anything JSON cannot hold.
        for key, value in json.loads(json.dumps(asdict(self))).items():
            object.__setattr__(self, key, value)

    @property
    def target_name(self) -> str:
        return str(self.target.get("name", "?"))

    @property
    def sm(self) -> str | None:
        sm = self.target.get("sm")
        return str(sm) if sm else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "manifest") -> Manifest:
        if data.get("format") != MANIFEST_FORMAT:
            raise VitrtError(
                f"{source}: manifest format {data.get('format')!r} is not {MANIFEST_FORMAT}; this vitrt "
                "cannot "
                "read it. Fix: use the vitrt version that wrote it (its vitrt_version field), or rebuild"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("%s: ignoring fields this vitrt does not know: %s", source, ", ".join(unknown))
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as err:
            raise VitrtError(f"{source} is not a vitrt manifest: {err}") from err


def stamp(manifest_fields: dict[str, Any]) -> dict[str, Any]:
    """``manifest_fields`` with vitrt's version and the UTC creation time added."""
    import vitrt

    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {**manifest_fields, "vitrt_version": vitrt.__version__, "created": created}


def file_record(path: Path) -> dict[str, Any]:
    """{"bytes", "sha256"} of a file, for ``Manifest.files``."""
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def plugin_entries(used: tuple[str, ...] | list[str], fatbin_dir: Path | None = None) -> list[dict[str, Any]]:
    """Manifest records of the plugins ``used`` (op types): this vitrt's spec identity and kernel source hash
    (``environment.plugin_records``), plus the SHA-256 and architectures of the kernel fatbin where one is
    built (``vitrt plugins build``; None: the device compiles the sources with NVRTC at first use)."""
    from vitrt.plugins.cuda_build import fatbin_archs, fatbin_path

    from .environment import plugin_records

    entries = []
    for record in plugin_records().values():
        if record["name"] not in used:
            continue
        fatbin = fatbin_path(record["source"], fatbin_dir)
        archs = fatbin_archs(fatbin) if fatbin.is_file() else ([], [])
        entries.append(
            {
                **record,
                "fatbin_sha256": file_sha256(fatbin) if fatbin.is_file() else None,
                "fatbin_archs": archs[0] + archs[1],
            }
        )
    return entries


def write_manifest(folder: Path, manifest: Manifest, name: str = MANIFEST_NAME) -> Path:
    """Write ``manifest`` as ``folder/name`` (atomically; inside an artifact's temporary folder)."""
    return atomic_write_bytes(folder / name, (manifest.to_json() + "\n").encode())


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """The manifest of an artifact folder, of a file inside one (``OUT/model.plan``), or of a bundle."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    for name in (MANIFEST_NAME, BUNDLE_NAME):
        if (folder / name).is_file():
            return folder / name
    if not p.exists():
        raise VitrtError(f"{p} does not exist")
    if p.is_file():
        hint = f"; to make one of it: vitrt build {p} --target T -o OUT/" if p.suffix == ".onnx" else ""
        raise VitrtError(
            f"{p} is a file, not an artifact or bundle folder, and its folder holds no {MANIFEST_NAME} or "
            f"{BUNDLE_NAME}. Fix: give the folder `vitrt build` or `vitrt bundle` wrote (or a file in it)"
            + hint
        )
    raise VitrtError(
        f"{folder} holds no {MANIFEST_NAME} or {BUNDLE_NAME}: not a vitrt artifact or bundle, so nothing can "
        "say what it needs. Fix: build it with `vitrt build` (or `vitrt bundle`)"
    )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The Manifest of an artifact or bundle folder (or of a file inside one)."""
    where = manifest_path(path)
    try:
        data = json.loads(where.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise VitrtError(
            f"{where} is not readable JSON ({err}); the artifact is damaged: rebuild it"
        ) from err
    if not isinstance(data, dict):
        raise VitrtError(f"{where} is not a vitrt manifest (not a JSON object)")
    return Manifest.from_dict(data, source=str(where))


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Raise IncompatibleArtifactError when a file the manifest lists is missing or has other bytes."""
    for name, record in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise IncompatibleArtifactError(
                f"{folder}: {name} is missing (listed in its manifest); rebuild it"
            )
        if "sha256" in record and file_sha256(path) != record["sha256"]:
            raise IncompatibleArtifactError(
                f"{folder}: {name} changed since it was written (SHA-256 differs from the manifest's); "
                "rebuild "
                "it or copy it again"
            )


@dataclass(frozen=True)
class Difference:
    """One way the loading machine differs from what an artifact needs: ``what`` ("TensorRT version"),
    ``expected`` (as recorded), ``found`` (here), ``fix``; ``fatal`` when it cannot run at all."""

    what: str
    expected: str
    found: str
    fix: str
    fatal: bool = True

    def format(self) -> str:
        return f"{self.what}: needs {self.expected}, this machine has {self.found}. Fix: {self.fix}"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:4] if p.isdigit())


def _sm_number(sm: str) -> int:
    return int(sm.removeprefix("sm_"))


def _tensorrt_fix(manifest: Manifest, version: str) -> str:
    rebuild = "rebuild the engine on this machine (`vitrt build` from the ONNX, or `vitrt build --bundle`)"
    return f"{rebuild}, or install TensorRT {version} (JetPack's version on a Jetson)"


def _compare_plugins(manifest: Manifest, facts: EnvironmentFacts) -> list[Difference]:
    out = []
    for p in manifest.plugins:
        key = f"{p.get('namespace', 'vitrt')}::{p['name']}"
        here = facts.plugins.get(key)
        if here is None:
            out.append(
                Difference(
                    f"plugin {key} (version {p.get('version')})",
                    "it in vitrt's plugin registry",
                    f"no such plugin in vitrt {facts.vitrt} (plugins: {', '.join(facts.plugins) or 'none'})",
                    f"install the vitrt that built it ({manifest.vitrt_version})",
                )
            )
            continue
        if here.get("version") != p.get("version"):
            out.append(
                Difference(
                    f"plugin {key} version",
                    str(p.get("version")),
                    str(here.get("version")),
                    f"install vitrt {manifest.vitrt_version}, or rebuild from the ONNX with this vitrt",
                )
            )
        if p.get("source_sha256") and here.get("source_sha256") != p["source_sha256"]:
            out.append(
                Difference(
                    f"plugin {key} kernels ({p.get('source')}.cu)",
                    f"sources {p['source_sha256'][:12]}... (vitrt {manifest.vitrt_version})",
                    f"{str(here.get('source_sha256'))[:12]}... (vitrt {facts.vitrt})",
                    f"install vitrt {manifest.vitrt_version}, or rebuild the engine / bundle with this vitrt "
                    "(the Python plugin launches this vitrt's kernels)",
                )
            )
    return out


def _compare_engine(manifest: Manifest, facts: EnvironmentFacts) -> list[Difference]:
    out: list[Difference] = []
    built_on = manifest.environment
    platform_built = f"{built_on.get('os')} {built_on.get('machine')}"
    platform_here = f"{facts.os} {facts.machine}"
    if platform_built != platform_here:
        out.append(
            Difference(
                "platform",
                platform_built,
                platform_here,
                "engines do not move between platforms: rebuild on this machine",
            )
        )
    version = str(manifest.runtime.get("version", ""))
    plan = manifest.plan or {}
    if facts.tensorrt is None:
        out.append(
            Difference(
                "TensorRT",
                f"TensorRT {version}",
                "no importable TensorRT",
                f"pip install tensorrt=={version} (on a Jetson it comes with JetPack)",
            )
        )
    elif plan.get("version_compatible"):
        built, here = _version_tuple(version), _version_tuple(facts.tensorrt)
        if built[:1] != here[:1] or here < built:
            out.append(
                Difference(
                    "TensorRT version (version-compatible engine)",
                    f"TensorRT {built[0]}.x from {version} on",
                    f"TensorRT {facts.tensorrt}",
                    _tensorrt_fix(manifest, version),
                )
            )
    elif _version_tuple(version) != _version_tuple(facts.tensorrt):
        out.append(
            Difference(
                "TensorRT version",
                f"TensorRT {version} exactly (an engine is tied to major, minor, patch and build)",
                f"TensorRT {facts.tensorrt}",
                _tensorrt_fix(manifest, version),
            )
        )
    sm = manifest.sm
    compat = plan.get("hardware_compatibility", "NONE")
    if facts.sm is None:
        out.append(
            Difference("GPU", f"a {sm} GPU", "no GPU (no CUDA driver answered)", "run it on its target")
        )
    elif sm and facts.sm != sm:
        portable = compat == "AMPERE_PLUS" and _sm_number(facts.sm) >= 80
        if not portable:
            out.append(
                Difference(
                    "GPU architecture",
                    f"{sm} ({manifest.target_name})",
                    f"{facts.sm} ({facts.gpu_name})",
                    "build an engine for this GPU (`vitrt build --target ...` on it, or a bundle for its "
                    "target), "
                    "or build with --hardware-compat ampere_plus",
                )
            )
    if manifest.needs_python_plugins:
        out += _compare_plugins(manifest, facts)
    return out


def _compare_cpu(manifest: Manifest, facts: EnvironmentFacts) -> list[Difference]:
    out: list[Difference] = []
    runtime = str(manifest.runtime.get("name"))
    built = manifest.runtime.get("version")
    here = facts.openvino if runtime == "openvino" else facts.onnxruntime
    extra = "vitrt[openvino]" if runtime == "openvino" else "vitrt[onnx]"
    if here is None:
        out.append(Difference(runtime, f"{runtime} {built}", "none installed", f"pip install '{extra}'"))
    elif built and here != built:
        out.append(
            Difference(
                f"{runtime} version",
                str(built),
                here,
                f"pip install {runtime}=={built} for the measured speed (the model loads either way)",
                fatal=False,
            )
        )
    built_on = manifest.environment
    if built_on.get("machine") and built_on.get("machine") != facts.machine:
        out.append(
            Difference(
                "CPU architecture",
                str(built_on.get("machine")),
                facts.machine,
                "rebuild here to re-time the runtimes (the model file itself is portable)",
                fatal=False,
            )
        )
    if manifest.runtime.get("inference_precision") == "bf16" and not {
        "avx512_bf16",
        "amx_bf16",
    } & set(facts.cpu_flags):
        out.append(
            Difference(
                "bf16 inference",
                "a CPU with AVX512_BF16 or AMX",
                f"{facts.cpu_name} without them",
                "OpenVINO computes in f32 here (slower than measured); rebuild with --inference-precision "
                "f32",
                fatal=False,
            )
        )
    return out


def _compare_bundle(manifest: Manifest, facts: EnvironmentFacts) -> list[Difference]:
    out: list[Difference] = []
    sm = manifest.sm
    if facts.sm is None:
        out.append(
            Difference(
                "GPU",
                f"a {sm} GPU ({manifest.target_name})",
                "no GPU (no CUDA driver answered)",
                "run it on the device",
            )
        )
    elif facts.sm != sm:
        out.append(
            Difference(
                "GPU architecture",
                f"{sm} ({manifest.target_name})",
                f"{facts.sm} ({facts.gpu_name})",
                "make a bundle for this device's target: vitrt bundle MODEL.onnx --target <target with "
                f"{facts.sm}>",
            )
        )
    plans: dict[str, Any] = (manifest.plan or {}).get("by_tensorrt", {})
    if facts.tensorrt is None:
        out.append(
            Difference(
                "TensorRT",
                f"TensorRT {' or '.join(plans) or '>= 10'}",
                "no importable TensorRT",
                "pip install tensorrt (on a Jetson it comes with JetPack)",
            )
        )
    else:
        here = ".".join(facts.tensorrt.split(".")[:2])
        majors = {v.split(".")[0] for v in plans}
        if plans and here not in plans and here.split(".")[0] not in majors:
            out.append(
                Difference(
                    "TensorRT version",
                    f"TensorRT {' or '.join(plans)} (what the bundle was planned for)",
                    f"TensorRT {facts.tensorrt}",
                    "make the bundle again for this target (a calibration-cache bundle plans TensorRT "
                    "10.x only)",
                )
            )
    out += _compare_plugins(manifest, facts)
    return out


def compare(manifest: Manifest, facts: EnvironmentFacts) -> list[Difference]:
    """Every Difference between what ``manifest`` needs and the machine ``facts`` describe (pure)."""
    if manifest.kind == "engine":
        return _compare_engine(manifest, facts)
    if manifest.kind == "cpu":
        return _compare_cpu(manifest, facts)
    return _compare_bundle(manifest, facts)


def check_artifact(
    path: str | os.PathLike[str], environment: EnvironmentFacts | None = None
) -> tuple[Manifest, list[Difference]]:
    """``vitrt check`` as a function (``vitrt.check_artifact``): the manifest of an artifact or bundle folder
    (or of a file inside one), its files checked against their recorded SHA-256s (IncompatibleArtifactError
    when one is missing or changed), and every Difference from the machine ``environment`` describes (default:
    this one)."""
    from .environment import gather_environment

    folder = manifest_path(path).parent
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    return manifest, compare(manifest, environment or gather_environment())


def require_compatible(
    manifest: Manifest, facts: EnvironmentFacts | None = None, *, where: str = "artifact"
) -> list[Difference]:
    """Raise IncompatibleArtifactError listing the fatal Differences (and the fix for each); log the others
    as warnings and return them. ``facts``: default ``gather_environment()``."""
    from .environment import gather_environment

    found = compare(manifest, facts or gather_environment())
    fatal = [d for d in found if d.fatal]
    for d in found:
        if not d.fatal:
            log.warning("%s: %s", where, d.format())
    if fatal:
        what = {"engine": "engine", "cpu": "CPU artifact", "bundle": "bundle"}[manifest.kind]
        lines = "\n".join(f"  - {d.format()}" for d in fatal)
        raise IncompatibleArtifactError(
            f"{where}: this {what} (target {manifest.target_name}, vitrt {manifest.vitrt_version}) cannot "
            f"{'be built' if manifest.kind == 'bundle' else 'run'} here:\n{lines}"
        )
    return found
