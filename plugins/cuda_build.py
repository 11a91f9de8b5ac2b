"""Ahead-of-time build of vitrt's CUDA kernels: one fatbin per op source, checked arch by arch.

Each op folder holds one ``*.cu`` source (``plugins/token_fusion/token_fusion.cu``,
``plugins/lsh_attention/scatterbrain.cu``) that includes ``plugins/cuda_common.cuh``. ``build_fatbins``
runs nvcc once per source and writes ``<out>/<source stem>.fatbin`` holding

* a cubin (SASS) for each of ``DEFAULT_ARCHS``: sm_87 (Jetson Orin), sm_90 (H100), sm_100 (B200),
  sm_110 (Thor), sm_120 (RTX Blackwell). A cubin also runs on later minor versions of its major
  (sm_89 runs sm_87's, sm_103 sm_100's, sm_121 sm_120's);
* PTX for ``PTX_ARCH`` = compute_80, the lowest virtual architecture the kernels need (they use
  nothing past Ampere: no TMA, no wgmma). The driver JIT-compiles it for any GPU of compute
  capability >= 8.0 that no cubin covers (A100 and A10 / RTX 30xx at 8.0 / 8.6, and architectures
  newer than this toolkit): the widest forward compatibility one PTX gives. A compute_120 PTX would
  only add JIT for GPUs newer than sm_120, which compute_80's PTX covers too.

The launcher (``vitrt.plugins.cuda_launcher``) loads these fatbins and compiles the source with NVRTC only
where the fatbin holds nothing for the GPU. Builds are cached: a fatbin is rebuilt only when the key
(sources, nvcc version, architectures, flags) recorded beside it changes. ``vitrt plugins build`` is the
command-line face of ``build_fatbins``. ``$VITRT_CUDA_ARCHS`` (e.g. ``sm_87`` on a Jetson Orin, or
``sm_90,sm_100``) replaces ``DEFAULT_ARCHS`` wherever no architectures are given: a machine that builds for
its own GPU compiles one target in place of five (``default_archs``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vitrt.errors import VitrtError
from vitrt.fileio import cache_dir

PLUGINS_DIR = Path(__file__).resolve().parent


def default_build_dir() -> Path:
    """Where fatbins (and the NVRTC and emulator caches) go by default: ``vitrt.fileio.cache_dir()``
    / ``plugins``, i.e. ``build/plugins`` in a source checkout (``build/`` is git-ignored: binaries are
    never committed) and ``~/.cache/vitrt/plugins`` for an installed wheel; ``$VITRT_CACHE_DIR``
    overrides both."""
    return cache_dir() / "plugins"


DEFAULT_ARCHS = ("sm_87", "sm_90", "sm_100", "sm_110", "sm_120")
PTX_ARCH = "compute_80"
ARCHS_ENV = "VITRT_CUDA_ARCHS"

COMMON_HEADER = PLUGINS_DIR / "cuda_common.cuh"
NVCC_FLAGS = ("-O3", "--std=c++17", "-lineinfo", "--resource-usage")
"""No --use_fast_math: the kernels rely on IEEE division, sqrt, expf and logf to stay within 1e-4 of
the float32 reference and to make the same matching decisions. --resource-usage: ptxas reports each
kernel's registers, stack, spills and static shared memory per architecture (``kernel_resources``)."""

FATBIN_MAGIC = 0xBA55ED50
_KIND_PTX, _KIND_ELF = 1, 2


def default_archs() -> tuple[str, ...]:
    """The cubin architectures built when none are given: those listed in ``$VITRT_CUDA_ARCHS`` (comma- or
    space-separated, e.g. ``"sm_87"``), else ``DEFAULT_ARCHS``. Raises VitrtError naming a malformed entry
    (it would otherwise reach nvcc as a bad ``-gencode``)."""
    value = os.environ.get(ARCHS_ENV, "").strip()
    if not value:
        return DEFAULT_ARCHS
    archs = tuple(a for a in re.split(r"[,\s]+", value) if a)
    bad = [a for a in archs if not (a.startswith("sm_") and a[3:].isdigit())]  # nvcc_command's rule
    if bad:
        raise VitrtError(
            f"${ARCHS_ENV}={value!r}: {', '.join(map(repr, bad))} is not a cubin architecture; "
            f"name them as nvcc does, e.g. {ARCHS_ENV}=sm_87 or {ARCHS_ENV}=sm_90,sm_100 (or unset it for "
            f"{' '.join(DEFAULT_ARCHS)})"
        )
    return tuple(dict.fromkeys(archs))


@dataclass(frozen=True)
class KernelSource:
    """One op's CUDA source: ``name`` (the file stem, e.g. "token_fusion") and its ``path``."""

    name: str
    path: Path


@dataclass(frozen=True)
class FatbinEntry:
    """One image in a fatbin: ``kind`` "cubin" or "ptx", ``arch`` as an int (87 = sm_87 / compute_87)."""

    kind: str
    arch: int


@dataclass(frozen=True)
class BuildResult:
    """A built (or cached) fatbin: its path, whether the cache was used, and nvcc's wall time in s."""

    source: KernelSource
    path: Path
    cached: bool
    seconds: float


def kernel_sources() -> tuple[KernelSource, ...]:
    """The ``*.cu`` source of every op folder (a folder of ``plugins`` with a ``spec.py``), one per op."""
    sources = []
    for folder in sorted(p.parent for p in PLUGINS_DIR.glob("*/spec.py")):
        found = sorted(folder.glob("*.cu"))
        if len(found) != 1:
            raise VitrtError(f"{folder} must hold exactly one .cu source, found {[p.name for p in found]}")
        sources.append(KernelSource(found[0].stem, found[0]))
    return tuple(sources)


def kernel_source(name: str) -> KernelSource:
    """The source of op ``name`` ("token_fusion", "scatterbrain"); VitrtError listing the known ones."""
    for src in kernel_sources():
        if src.name == name:
            return src
    raise VitrtError(f"no CUDA source named {name!r}; known: {[s.name for s in kernel_sources()]}")


def find_cuda_home() -> Path:
    """The CUDA toolkit: ``$CUDA_HOME``, else ``/usr/local/cuda``, else the folder of ``nvcc`` on PATH.

    Raises VitrtError naming the fix when no ``bin/nvcc`` is found.
    """
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent.parent))
    for c in candidates:
        if c and (Path(c) / "bin" / "nvcc").is_file():
            return Path(c)
    raise VitrtError(
        "no CUDA toolkit found (looked at $CUDA_HOME, /usr/local/cuda and nvcc on PATH); install the CUDA "
        "toolkit (12.8 or newer for sm_120, 13.0 or newer for sm_110) or set CUDA_HOME"
    )


def nvcc_version(cuda_home: Path) -> str:
    """nvcc's last version line, e.g. "Build cuda_13.0.r13.0/compiler.36424714_0"."""
    out = subprocess.run(
        [str(cuda_home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip().splitlines()[-1]


def fatbin_path(name: str, out_dir: Path | None = None) -> Path:
    """Where the fatbin of source ``name`` lives: ``<out_dir or default_build_dir()>/<name>.fatbin``."""
    return Path(out_dir or default_build_dir()) / f"{name}.fatbin"


def _record_path(name: str, out_dir: Path | None = None) -> Path:
    """The build record beside source ``name``'s fatbin: key, architectures, seconds, resource usage."""
    out = fatbin_path(name, out_dir)
    return out.with_name(out.name + ".json")


def _check_arch(arch: str, prefix: str) -> int:
    if not arch.startswith(prefix) or not arch[len(prefix) :].isdigit():
        raise VitrtError(f"architecture {arch!r} must look like {prefix}90")
    return int(arch[len(prefix) :])


def source_hash(source: KernelSource) -> str:
    """Hex SHA-256 over the SHA-256s of ``source``'s ``.cu`` file and ``cuda_common.cuh``: what its kernels
    are built from (recorded in manifests and bundles, compared on the device)."""
    digest = hashlib.sha256()
    for part in (source.path.read_bytes(), COMMON_HEADER.read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _build_key(source: KernelSource, version: str, archs: Sequence[str], ptx: str | None) -> str:
    digest = hashlib.sha256(bytes.fromhex(source_hash(source)))
    digest.update(json.dumps([version, list(archs), ptx, list(NVCC_FLAGS)]).encode())
    return digest.hexdigest()


def nvcc_command(
    source: KernelSource, output: Path, archs: Sequence[str], ptx: str | None, cuda_home: Path, threads: int
) -> list[str]:
    """The nvcc command line that builds ``source`` into the fatbin ``output``."""
    cmd = [str(cuda_home / "bin" / "nvcc"), "-fatbin", *NVCC_FLAGS, f"-I{PLUGINS_DIR}"]
    for arch in archs:
        n = _check_arch(arch, "sm_")
        cmd += ["-gencode", f"arch=compute_{n},code=sm_{n}"]
    if ptx:
        n = _check_arch(ptx, "compute_")
        cmd += ["-gencode", f"arch=compute_{n},code=compute_{n}"]
    return [*cmd, "--threads", str(threads), "-o", str(output), str(source.path)]


def build_fatbin(
    source: KernelSource,
    out_dir: Path | None = None,
    archs: Sequence[str] | None = None,
    ptx: str | None = PTX_ARCH,
    *,
    force: bool = False,
    threads: int = 0,
    niceness: int = 0,
    cuda_home: Path | None = None,
) -> BuildResult:
    """Build one source's fatbin (or reuse the cached one whose build key matches); ``archs`` None means
    ``default_archs()``.

    threads: nvcc ``--threads`` (0 = one per core: the gencode targets compile in parallel);
    niceness: added to nvcc's scheduling niceness (the CI machine's cores are shared).
    Raises VitrtError with nvcc's output when compilation fails.
    """
    archs = default_archs() if archs is None else tuple(archs)
    home = cuda_home or find_cuda_home()
    out = fatbin_path(source.name, out_dir)
    meta = _record_path(source.name, out_dir)
    key = _build_key(source, nvcc_version(home), archs, ptx)
    if not force and out.is_file() and meta.is_file():
        try:
            if json.loads(meta.read_text()).get("key") == key:
                return BuildResult(source, out, cached=True, seconds=0.0)
        except json.JSONDecodeError:
            pass
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    cmd = nvcc_command(source, tmp, archs, ptx, home, threads)
    nice = shutil.which("nice") if niceness > 0 else None
    start = time.perf_counter()
    proc = subprocess.run([nice, "-n", str(niceness), *cmd] if nice else cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise VitrtError(f"nvcc failed on {source.path} ({' '.join(cmd)}):\n{proc.stderr}{proc.stdout}")
    os.replace(tmp, out)  # atomic: a reader never sees half a fatbin
    record = {
        "key": key,
        "archs": list(archs),
        "ptx": ptx,
        "seconds": round(seconds, 2),
        "resources": parse_resource_usage(proc.stdout + proc.stderr),
    }
    meta.write_text(json.dumps(record, indent=1))
    return BuildResult(source, out, cached=False, seconds=seconds)


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_PROPERTIES = re.compile(r"Function properties for (\w+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_resource_usage(log: str) -> dict[str, dict[str, dict[str, int]]]:
    """ptxas's ``--resource-usage`` report as {arch: {kernel: {"registers", "stack_bytes", "spill_stores",
    "spill_loads", "static_smem_bytes"}}} (bytes; registers per thread). Cubin targets only: the PTX
    target has no register allocation."""
    usage: dict[str, dict[str, dict[str, int]]] = {}
    current: dict[str, int] | None = None
    kernel = ""
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            kernel = m.group(1)
            current = usage.setdefault(m.group(2), {}).setdefault(kernel, {})
        elif (m := _PROPERTIES.search(line)) and m.group(1) != kernel:
            current = None  # another architecture's report interleaved (parallel ptxas): skip it
        elif current is not None and (m := _FRAME.search(line)):
            current.update(stack_bytes=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif current is not None and (m := _USED.search(line)):
            current.update(registers=int(m[1]), static_smem_bytes=int(m[2] or 0))
    return usage


def kernel_resources(name: str, out_dir: Path | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """The resource usage recorded when source ``name``'s fatbin was built ({} for an older build)."""
    meta = _record_path(name, out_dir)
    try:
        return dict(json.loads(meta.read_text()).get("resources", {}))
    except (OSError, json.JSONDecodeError):
        return {}


def fatbin_is_current(source: KernelSource, out_dir: Path | None = None) -> bool | None:
    """Whether ``source``'s fatbin was built from the current sources with this machine's nvcc and the
    architectures recorded beside it: True / False, or None where that cannot be told (no fatbin, no
    build record, or no CUDA toolkit)."""
    out = fatbin_path(source.name, out_dir)
    meta = _record_path(source.name, out_dir)
    try:
        record = json.loads(meta.read_text())
        home = find_cuda_home()
    except (OSError, json.JSONDecodeError, VitrtError):
        return None
    if not out.is_file():
        return None
    return bool(record.get("key") == _build_key(source, nvcc_version(home), record["archs"], record["ptx"]))


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` across processes (pytest-xdist workers, parallel builds), so that
    one process compiles and the others then find the cached fatbins. A no-op where fcntl is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_fatbins(
    out_dir: Path | None = None,
    archs: Sequence[str] | None = None,
    ptx: str | None = PTX_ARCH,
    *,
    force: bool = False,
    jobs: int = 2,
    threads: int | None = None,
    niceness: int = 0,
) -> list[BuildResult]:
    """Build the fatbin of every op source: ``jobs`` nvcc processes at once, each compiling its gencode
    targets on ``threads`` threads (default: one per core); see ``build_fatbin``.

    Each process gets every core rather than a share: scatterbrain.cu takes about three times the CPU
    time of token_fusion.cu, and with a share the cores of the one that finishes first would idle while
    the other compiled its targets on the rest (benchmarks/kernel_build.py times both ways). At most
    ``jobs`` x min(cores, targets) compilers run at once, 140 to 230 MB each (cicc, ptxas).
    """
    archs = default_archs() if archs is None else tuple(archs)
    home = find_cuda_home()
    sources = kernel_sources()
    threads = threads or os.cpu_count() or 1

    def one(src: KernelSource) -> BuildResult:
        return build_fatbin(
            src, out_dir, archs, ptx, force=force, threads=threads, niceness=niceness, cuda_home=home
        )

    with (
        build_lock(Path(out_dir or default_build_dir())),
        ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
    ):
        return list(pool.map(one, sources))


def fatbin_entries(data: bytes) -> list[FatbinEntry]:
    """The images listed in a fatbin's headers (the ``cuobjdump --list-elf / --list-ptx`` information).

    Layout (little-endian, as written by nvcc/fatbinary): a 16-byte header (magic 0xBA55ED50, u16
    version, u16 header size, u64 size of the entries), then entries, each a header (u16 kind: 1 = PTX,
    2 = ELF cubin; u16 version; u32 header size; u64 payload size; ...; u32 arch at byte 28) followed
    by its payload. Several fatbins may be concatenated. Raises VitrtError on anything else.
    """
    entries: list[FatbinEntry] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 16:
            raise VitrtError(f"truncated fatbin header at byte {pos}")
        magic, _version, header_size, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            raise VitrtError(f"not a fatbin: magic {magic:#x} at byte {pos}")
        entry, end = pos + header_size, pos + header_size + size
        if end > len(data):
            raise VitrtError("truncated fatbin")
        while entry < end:
            kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            if kind in (_KIND_PTX, _KIND_ELF):
                entries.append(FatbinEntry("ptx" if kind == _KIND_PTX else "cubin", arch))
            entry += entry_header + payload
        pos = end
    return entries


def fatbin_archs(path: Path) -> tuple[list[str], list[str]]:
    """(cubin architectures ["sm_87", ...], PTX architectures ["compute_80", ...]) of a fatbin file."""
    entries = fatbin_entries(Path(path).read_bytes())
    cubins = sorted({e.arch for e in entries if e.kind == "cubin"})
    ptx = sorted({e.arch for e in entries if e.kind == "ptx"})
    return [f"sm_{a}" for a in cubins], [f"compute_{a}" for a in ptx]


def cuobjdump_archs(path: Path, cuda_home: Path | None = None) -> list[str] | None:
    """The cubin architectures ``cuobjdump --list-elf`` reports, or None where cuobjdump is missing
    (a cross-check of ``fatbin_archs`` on machines with the full toolkit)."""
    try:
        home = cuda_home or find_cuda_home()
    except VitrtError:
        return None
    tool = home / "bin" / "cuobjdump"
    if not tool.is_file():
        return None
    out = subprocess.run([str(tool), "--list-elf", str(path)], capture_output=True, text=True, check=True)
    archs = set()
    for line in out.stdout.splitlines():
        for part in line.replace(".", " ").split():
            if part.startswith("sm_") and part[3:].isdigit():
                archs.add(part)
    return sorted(archs, key=lambda a: int(a[3:]))
