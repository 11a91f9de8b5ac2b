"""vitrt's CUDA kernels run on the CPU: the same ``.cu`` sources and the same launch code, no GPU.

``with emulated_kernels():`` makes ``vitrt.plugins.cuda_launcher.load_module`` hand out an ``EmulatedModule``:
the op's source compiled by the host C++ compiler (``$CXX``, default ``g++``) with
``plugins/cuda_emulation.h`` force-included, which runs every launch block by block, each thread a
fiber that switches only at ``__syncthreads`` and warp operations. The ops' enqueue functions and torch
faces (``token_fusion_cuda``, ``scatterbrain_cuda``) then take CPU tensors, so CI checks the kernels'
logic and the host code that sizes and orders the launches against the PyTorch references. See the
header for what is checked (barrier divergence, warp operations after a lane exited, reads of unwritten
shared memory, shared memory overflow, the 99 KiB per-block limit) and what is not (races, timing:
emulated launches say nothing about speed).

Libraries are cached under ``<default_build_dir()>/emulated/`` (``build/plugins/emulated/`` in a source
checkout) by a hash of the sources, the header, the
compiler version and the flags; a build takes a few seconds.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vitrt.errors import VitrtError

from .cuda_build import (
    COMMON_HEADER,
    PLUGINS_DIR,
    KernelSource,
    build_lock,
    default_build_dir,
    kernel_source,
)

EMULATION_HEADER = PLUGINS_DIR / "cuda_emulation.h"
CXX_FLAGS = (
    "-std=c++20", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-ffp-contract=off", "-Wall",
    "-Wno-unknown-pragmas",
)  # fmt: skip
"""-ffp-contract=off: a * b + c stays two roundings, as the kernels' __fmul_rn / __fadd_rn promise;
-fvisibility=hidden: each library keeps its own emulator state (only vitrt_emu_launch is exported)."""

_ENTRY = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(')


class KernelEmulationError(VitrtError):
    """An emulated launch broke a rule of the CUDA execution model (the message names the kernel, the
    block and the thread), or the emulator could not be built."""


def host_compiler() -> str:
    """The C++ compiler for emulated kernels: ``$CXX`` or ``g++`` (needs C++20 and ``_Float16``)."""
    cxx = os.environ.get("CXX", "g++")
    found = shutil.which(cxx)
    if found is None:
        raise KernelEmulationError(
            f"no host C++ compiler {cxx!r} on PATH to emulate the CUDA kernels; install g++ 12 or newer, "
            "or point $CXX at one"
        )
    return found


def entry_points(source: KernelSource) -> list[str]:
    """The ``extern "C"`` kernels of ``source``, found by preprocessing it (macros expanded, no system
    headers: the sources include only ``cuda_common.cuh``)."""
    cmd = [
        host_compiler(), "-E", "-P", "-x", "c++", "-nostdinc", "-DVITRT_CPU_EMULATION", "-D__global__=",
        "-D__launch_bounds__(...)=", f"-I{PLUGINS_DIR}", str(source.path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelEmulationError(f"preprocessing {source.path} failed:\n{proc.stderr}")
    names = _ENTRY.findall(proc.stdout)
    if not names:
        raise KernelEmulationError(f'no extern "C" kernels found in {source.path}')
    return names


def compiler_version(cxx: str) -> str:
    """The first line of ``cxx --version`` (e.g. "g++ (Debian 12.2.0-14) 12.2.0")."""
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def build_emulated(source: KernelSource, out_dir: Path | None = None) -> Path:
    """Compile ``source`` for the CPU into ``<out_dir>/emulated/<name>-<hash>.so`` (cached); returns it.

    Raises KernelEmulationError with the compiler's output when compilation fails.
    """
    cxx = host_compiler()
    digest = hashlib.sha256()
    for part in (source.path, COMMON_HEADER, EMULATION_HEADER):
        digest.update(hashlib.sha256(part.read_bytes()).digest())
    digest.update(json.dumps([compiler_version(cxx), list(CXX_FLAGS)]).encode())
    folder = Path(out_dir or default_build_dir()) / "emulated"
    lib = folder / f"{source.name}-{digest.hexdigest()[:16]}.so"
    with build_lock(folder):
        if lib.is_file():
            return lib
        table = ", ".join(f'{{"{n}", &vitrt_emu::entry<&{n}>}}' for n in entry_points(source))
        unit = folder / f"{source.name}.emulated.cpp"
        unit.write_text(f'#include "{source.path}"\nVITRT_EMULATED_KERNELS({table})\n')
        tmp = lib.with_suffix(f".tmp{os.getpid()}")
        cmd = [cxx, *CXX_FLAGS, f"-I{PLUGINS_DIR}", "-include", str(EMULATION_HEADER), str(unit), "-o"]
        proc = subprocess.run([*cmd, str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise KernelEmulationError(
                f"compiling {source.path} for the CPU failed ({' '.join(cmd)}):\n{proc.stderr}"
            )
        os.replace(tmp, lib)  # atomic: another process never loads half a library
    return lib


@dataclass
class EmulatedModule:
    """One op source's kernels compiled for the CPU; ``launch`` runs a launch to completion."""

    source: KernelSource
    library: ctypes.CDLL
    origin: str = "cpu emulation"
    launches: collections.Counter[str] = field(default_factory=collections.Counter)
    """Launches so far, per kernel name (counted by ``cuda_launcher.launch``; tests read it to see which
    path a model took)."""

    def launch(
        self,
        kernel: str,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        args: Sequence[ctypes.c_uint64 | ctypes.c_int32 | ctypes.c_float],
        shared_mem: int,
    ) -> None:
        """Run ``kernel`` over ``grid`` x ``block`` with ``args`` (as for cuLaunchKernel; pointers are host
        addresses) and ``shared_mem`` bytes of dynamic shared memory. Synchronous; raises
        KernelEmulationError when the kernel breaks a rule the emulator checks."""
        params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        err = ctypes.create_string_buffer(1024)
        with _LAUNCH_LOCK:  # the emulator runs one launch at a time (ctypes releases the GIL)
            rc = self.library.vitrt_emu_launch(
                kernel.encode(), (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
                ctypes.c_size_t(shared_mem),
                params, err, ctypes.c_size_t(len(err)),
            )  # fmt: skip
        if rc != 0:
            raise KernelEmulationError(f"emulated launch failed: {err.value.decode(errors='replace')}")


_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("vitrt_kernel_emulation", default=False)
_MODULES: dict[tuple[str, str], EmulatedModule] = {}
_LOCK = threading.Lock()
_LAUNCH_LOCK = threading.Lock()


def emulating() -> bool:
    """Whether kernel launches in this context run on the CPU emulator."""
    return _ACTIVE.get()


@contextlib.contextmanager
def emulated_kernels() -> Iterator[None]:
    """Within the block, ``load_module`` returns emulated modules and the torch faces accept CPU tensors."""
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def open_emulated(source: KernelSource, out_dir: Path | None = None) -> EmulatedModule:
    """Build (or reuse) and load the emulated kernels of any ``source`` (an op's, or a test's own)."""
    library = ctypes.CDLL(str(build_emulated(source, out_dir)))
    library.vitrt_emu_launch.restype = ctypes.c_int
    return EmulatedModule(source, library)


def emulated_module(name: str, out_dir: Path | None = None) -> EmulatedModule:
    """The emulated kernels of op source ``name`` ("token_fusion", "scatterbrain"), loaded once per
    process."""
    with _LOCK:
        key = (name, str(out_dir or default_build_dir()))
        module = _MODULES.get(key)
        if module is None:
            module = _MODULES[key] = open_emulated(kernel_source(name), out_dir)
        return module
