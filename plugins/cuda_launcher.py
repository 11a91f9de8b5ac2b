"""Loads vitrt's CUDA kernels and launches them on a stream, through cuda-python's driver API.

Used by the TensorRT plugins (``enqueue`` gets device pointers and TensorRT's stream as ints) and by the
torch entry points (``tensor.data_ptr()``, ``torch.cuda.current_stream().cuda_stream``). Kernels are
``extern "C"`` functions looked up by name.

Module images, per CUDA context and op source:

1. the fatbin built by ``vitrt.plugins.cuda_build`` (``<default_build_dir()>/<source>.fatbin``, i.e.
   ``build/plugins`` in a source checkout, ``~/.cache/vitrt/plugins`` for a wheel) when it holds a cubin
   of the GPU's major version and a minor version <= the GPU's, or a PTX the driver can JIT
   (``cuModuleLoadData``; the driver picks the image);
2. otherwise NVRTC compiles the op's ``.cu`` source for the GPU's exact ``sm_XY`` at run time (needs the
   ``nvidia-cuda-nvrtc`` wheel), cached in memory and under ``<default_build_dir()>/nvrtc/``.

``load_module(...).origin`` says which path was taken. Inside
``vitrt.plugins.cuda_emulation.emulated_kernels()`` ``load_module`` returns the CPU-emulated kernels
instead and the torch-face helpers at the end of this module accept CPU tensors. cuda-python is
imported lazily (``cuda.bindings.driver``, or ``cuda.cuda`` before cuda-python 12.6), so this module
imports on machines without it; the functions raise ``VitrtError`` naming ``pip install cuda-python`` there.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import hashlib
import importlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitrt.errors import VitrtError

from .cuda_build import (
    COMMON_HEADER,
    PLUGINS_DIR,
    FatbinEntry,
    KernelSource,
    default_build_dir,
    fatbin_entries,
    fatbin_path,
    kernel_source,
)
from .cuda_emulation import EmulatedModule, emulated_module, emulating

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

DEFAULT_SHARED_MEMORY = 48 * 1024
"""Dynamic shared memory a kernel may use without opting in (cuFuncSetAttribute)."""


class CudaError(VitrtError):
    """A CUDA driver or NVRTC call failed; the message names the call and the error."""


def _import_first(names: Sequence[str], what: str) -> Any:
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as exc:  # also covers a cuda-python without this submodule
            errors.append(f"{name}: {exc}")
    raise VitrtError(
        f"{what} needs cuda-python, which cannot be imported here ({'; '.join(errors)}). "
        "Fix: pip install cuda-python"
    )


def cuda_driver() -> Any:
    """cuda-python's driver API module (``cuda.bindings.driver``, or ``cuda.cuda`` before 12.6)."""
    return _import_first(("cuda.bindings.driver", "cuda.cuda"), "launching vitrt's CUDA kernels")


def cuda_nvrtc() -> Any:
    """cuda-python's NVRTC module (``cuda.bindings.nvrtc``, or ``cuda.nvrtc`` before 12.6)."""
    return _import_first(("cuda.bindings.nvrtc", "cuda.nvrtc"), "compiling vitrt's kernels with NVRTC")


def check(result: Any, call: str) -> Any:
    """Unwrap a cuda-python result tuple ``(error, *values)``: raise CudaError unless the error is
    success; return None, the single value, or the tuple of values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise CudaError(f"{call} failed: {name} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


_INIT_LOCK = threading.Lock()
_INITIALISED = False


def _init_driver() -> Any:
    global _INITIALISED
    drv = cuda_driver()
    with _INIT_LOCK:
        if not _INITIALISED:
            try:
                result = drv.cuInit(0)
            except Exception as exc:  # cuda-python raises when libcuda itself is missing
                raise CudaError(f"cuInit failed: no usable NVIDIA driver ({exc})") from exc
            check(result, "cuInit")
            _INITIALISED = True
    return drv


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU of the current context: ordinal, name, compute capability and limits that launches need.

    max_shared_optin: largest dynamic shared memory per block after opting in (bytes);
    peak_bandwidth: theoretical DRAM bandwidth in bytes/s from the driver's memory clock and bus width
    (None where the driver does not report them).
    """

    ordinal: int
    name: str
    capability: tuple[int, int]
    multiprocessors: int
    max_shared_optin: int
    peak_bandwidth: float | None

    @property
    def arch(self) -> str:
        """``sm_XY`` of the GPU, e.g. ``sm_90``."""
        return f"sm_{self.capability[0]}{self.capability[1]}"


def current_context() -> tuple[int, int]:
    """(context handle, device ordinal) current on this thread; makes device 0's primary context current
    when none is (TensorRT and torch both work in the primary context)."""
    drv = _init_driver()
    ctx = check(drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if int(ctx) == 0:
        dev = check(drv.cuDeviceGet(0), "cuDeviceGet")
        ctx = check(drv.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        check(drv.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    dev = check(drv.cuCtxGetDevice(), "cuCtxGetDevice")
    return int(ctx), int(dev)


def device_info(ordinal: int | None = None) -> DeviceInfo:
    """Properties of GPU ``ordinal`` (default: the current context's)."""
    drv = _init_driver()
    if ordinal is None:
        ordinal = current_context()[1]
    dev = check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
    attr = drv.CUdevice_attribute

    def get(name: str) -> int | None:
        value = getattr(attr, name, None)
        if value is None:
            return None
        try:
            return int(check(drv.cuDeviceGetAttribute(value, dev), f"cuDeviceGetAttribute({name})"))
        except CudaError:
            return None

    major = get("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR") or 0
    minor = get("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR") or 0
    clock_khz = get("CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE")
    bus_bits = get("CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH")
    raw_name = check(drv.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = bytes(raw_name).split(b"\0", 1)[0].decode(errors="replace")
    return DeviceInfo(
        ordinal=ordinal,
        name=name,
        capability=(major, minor),
        multiprocessors=get("CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT") or 0,
        max_shared_optin=get("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN")
        or DEFAULT_SHARED_MEMORY,
        # double data rate: two transfers per memory clock
        peak_bandwidth=2.0 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None,
    )


def compatible_image(entries: Sequence[FatbinEntry], capability: tuple[int, int]) -> FatbinEntry | None:
    """The fatbin image the driver will run on a GPU of ``capability``: the newest cubin of the same major
    version and a minor version <= the GPU's (cubins are binary compatible within a major version), else
    the newest PTX of a compute capability <= the GPU's (JIT-compiled), else None."""
    major, minor = capability
    cc = major * 10 + minor
    cubins = [e for e in entries if e.kind == "cubin" and e.arch // 10 == major and e.arch % 10 <= minor]
    if cubins:
        return max(cubins, key=lambda e: e.arch)
    ptx = [e for e in entries if e.kind == "ptx" and e.arch <= cc]
    return max(ptx, key=lambda e: e.arch) if ptx else None


def nvrtc_options(arch: str) -> list[bytes]:
    """NVRTC options for an op source: the GPU's exact ``sm_XY``, vitrt's include folder, C++17, and
    device code by default.

    ``-default-device``: NVRTC 13.0 takes a lambda defined inside a ``__device__`` function (the norm's
    store callbacks) for a host function and refuses it ("host functions are not allowed in JIT mode");
    nvcc and NVRTC 13.5 accept it. Every function in an op source runs on the device, so the option
    changes nothing else.
    """
    return [
        f"--gpu-architecture={arch}".encode(),
        f"-I{PLUGINS_DIR}".encode(),
        b"--std=c++17",
        b"-default-device",
    ]


def nvrtc_compile(source: KernelSource, arch: str) -> bytes:
    """Compile ``source`` with NVRTC into a cubin for ``arch`` (``sm_XY``), or into PTX for a virtual
    ``compute_XY`` (NVRTC's front end without ptxas: half the time, which is how the test suite checks that
    NVRTC takes the sources); no GPU needed.

    Raises CudaError with NVRTC's log when compilation fails.
    """
    nvrtc = cuda_nvrtc()
    text = source.path.read_bytes()
    try:
        prog = check(
            nvrtc.nvrtcCreateProgram(text, str(source.path).encode(), 0, [], []), "nvrtcCreateProgram"
        )
    except CudaError:
        raise
    except Exception as exc:  # the NVRTC library itself is missing
        raise CudaError(
            f"NVRTC is not usable here ({exc}); pip install nvidia-cuda-nvrtc, or build the fatbins "
            "with `vitrt plugins build`"
        ) from exc
    try:
        opts = nvrtc_options(arch)
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(err) != 0:
            size = check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            buf = b" " * size
            check(nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
            log = buf.rstrip(b"\0").decode(errors="replace")  # the log's size counts its NUL
            raise CudaError(f"NVRTC failed on {source.path} for {arch}:\n{log}")
        if arch.startswith("compute_"):
            size = check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
            ptx = b" " * size
            check(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
            return ptx.rstrip(b"\0")  # its size counts the terminating NUL
        size = check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        return cubin
    finally:
        check(nvrtc.nvrtcDestroyProgram(prog), "nvrtcDestroyProgram")


def _nvrtc_cubin(source: KernelSource, arch: str) -> bytes:
    """NVRTC cubin for ``arch``, cached on disk by what it is built from: the source, the common header,
    the NVRTC options and NVRTC's version (best effort: a read-only tree still works)."""
    try:
        version = repr(cuda_nvrtc().nvrtcVersion())
    except Exception:  # the library is missing: nvrtc_compile says so below
        version = "unknown"
    key = source.path.read_bytes() + COMMON_HEADER.read_bytes() + b"\0".join(nvrtc_options(arch))
    digest = hashlib.sha256(key + version.encode()).hexdigest()[:16]
    cache = default_build_dir() / "nvrtc" / f"{source.name}-{arch}-{digest}.cubin"
    if cache.is_file():
        return cache.read_bytes()
    cubin = nvrtc_compile(source, arch)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_bytes(cubin)
        tmp.replace(cache)
    except OSError:
        pass
    return cubin


@dataclass
class LoadedModule:
    """One op source's kernels loaded in one CUDA context; ``origin`` says where the image came from
    ("fatbin cubin sm_90", "fatbin ptx compute_80 (JIT)", "nvrtc sm_89")."""

    source: KernelSource
    module: Any
    origin: str
    device: DeviceInfo
    functions: dict[str, Any] = field(default_factory=dict)
    shared_set: dict[str, int] = field(default_factory=dict)
    launches: collections.Counter[str] = field(default_factory=collections.Counter)
    """Launches so far, per kernel name (tests read it to see which path a model took)."""
    programmatic: bool = False
    """Whether ``launch`` uses programmatic dependent launch (``programmatic_launch``)."""
    configs: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    """``CUlaunchConfig`` per (grid, block, shared memory, stream), built once per key (host time)."""

    def function(self, name: str) -> Any:
        """The ``CUfunction`` of kernel ``name`` (cached)."""
        f = self.functions.get(name)
        if f is None:
            drv = cuda_driver()
            f = check(drv.cuModuleGetFunction(self.module, name.encode()), f"cuModuleGetFunction({name})")
            self.functions[name] = f
        return f


PROGRAMMATIC_ENV = "VITRT_PROGRAMMATIC_LAUNCH"


def programmatic_launch(image_arch: int) -> bool:
    """Whether kernels compiled for ``image_arch`` (90 for an sm_90 cubin; 0 for PTX compiled by the driver)
    are launched with programmatic dependent launch: from sm_90, where each kernel's prologue waits for the
    kernel before it (``VITRT_KERNEL_PROLOGUE`` in cuda_common.cuh), unless ``$VITRT_PROGRAMMATIC_LAUNCH`` is
    "0". Not for PTX: compute_80's has no such prologue, so its kernels must not start early."""
    return image_arch >= 90 and os.environ.get(PROGRAMMATIC_ENV, "1") != "0"


_MODULES: dict[tuple[int, str, str | None], LoadedModule] = {}
_MODULES_LOCK = threading.Lock()


def load_module(name: str, kernel_dir: Path | None = None) -> LoadedModule | EmulatedModule:
    """The kernels of op source ``name`` ("token_fusion", "scatterbrain") in the current context.

    kernel_dir: where the fatbins are (default ``default_build_dir()``). Loads the fatbin when it holds an
    image for this GPU, else compiles with NVRTC (see the module docstring). Under
    ``emulated_kernels()``: the source compiled for the CPU (``kernel_dir/emulated``).
    """
    if emulating():
        return emulated_module(name, kernel_dir)
    ctx, ordinal = current_context()
    # None (the default folder) is its own key: resolving default_build_dir() stats the file system, and
    # this runs for every launch.
    key = (ctx, name, None if kernel_dir is None else str(kernel_dir))
    with _MODULES_LOCK:
        loaded = _MODULES.get(key)
        if loaded is None:
            loaded = _load(kernel_source(name), device_info(ordinal), kernel_dir)
            log.info("vitrt kernels %s: %s on %s", name, loaded.origin, loaded.device.name)
            _MODULES[key] = loaded
        return loaded


_NO_IMAGE_ERRORS = {
    "CUDA_ERROR_NO_BINARY_FOR_GPU",
    "CUDA_ERROR_INVALID_PTX",
    "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
}


def _load(source: KernelSource, device: DeviceInfo, kernel_dir: Path | None) -> LoadedModule:
    drv = cuda_driver()
    fatbin = fatbin_path(source.name, kernel_dir)
    reason = f"no fatbin at {fatbin} (run `vitrt plugins build`)"
    if fatbin.is_file():
        data = fatbin.read_bytes()
        image = compatible_image(fatbin_entries(data), device.capability)
        if image is None:
            reason = f"{fatbin} holds no image for {device.arch}"
        else:
            err, module = drv.cuModuleLoadData(data)
            if int(err) == 0:
                how = f"cubin sm_{image.arch}" if image.kind == "cubin" else f"ptx compute_{image.arch} (JIT)"
                programmatic = programmatic_launch(image.arch if image.kind == "cubin" else 0)
                return LoadedModule(source, module, f"fatbin {how}", device, programmatic=programmatic)
            name = getattr(err, "name", str(err))
            if name not in _NO_IMAGE_ERRORS:
                raise CudaError(f"cuModuleLoadData({fatbin}) failed: {name}")
            reason = f"the driver rejected {fatbin} ({name})"
    log.warning("vitrt kernels %s: %s; compiling with NVRTC for %s", source.name, reason, device.arch)
    cubin = _nvrtc_cubin(source, device.arch)
    module = check(drv.cuModuleLoadData(cubin), f"cuModuleLoadData(NVRTC {source.name})")
    programmatic = programmatic_launch(10 * device.capability[0] + device.capability[1])
    return LoadedModule(source, module, f"nvrtc {device.arch}", device, programmatic=programmatic)


def ptr(value: int) -> ctypes.c_uint64:
    """A pointer kernel argument (a device address as an int; 0 for an unused one)."""
    return ctypes.c_uint64(int(value))


def i32(value: int) -> ctypes.c_int32:
    """An ``int`` kernel argument."""
    return ctypes.c_int32(int(value))


def f32(value: float) -> ctypes.c_float:
    """A ``float`` kernel argument."""
    return ctypes.c_float(float(value))


KernelArg = ctypes.c_uint64 | ctypes.c_int32 | ctypes.c_float


def launch(
    module: LoadedModule | EmulatedModule,
    kernel: str,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    args: Sequence[KernelArg],
    stream: int,
    shared_mem: int = 0,
) -> None:
    """Launch ``kernel`` of ``module`` on ``stream`` (a CUstream / cudaStream_t as an int; 0 = default).

    args: in the kernel's parameter order, built with ``ptr``, ``i32``, ``f32`` (the types must match
    the C signature: the driver copies as many bytes as each parameter has). shared_mem: dynamic shared
    memory in bytes; above 48 KiB the kernel is opted in up to the device's limit. An emulated module
    runs the launch on the CPU before returning (``stream`` is ignored). On a module whose kernels wait for
    the kernel before them (``LoadedModule.programmatic``: sm_90 and later) it is a programmatic dependent
    launch (``cuLaunchKernelEx``), which lets the GPU schedule its blocks while that kernel finishes.
    """
    if min(*grid, *block) <= 0:
        return  # an empty launch (a zero-sized input)
    module.launches[kernel] += 1
    if isinstance(module, EmulatedModule):
        module.launch(kernel, grid, block, args, shared_mem)
        return
    drv = cuda_driver()
    f = module.function(kernel)
    if shared_mem > DEFAULT_SHARED_MEMORY and module.shared_set.get(kernel, 0) < shared_mem:
        if shared_mem > module.device.max_shared_optin:
            raise VitrtError(
                f"{kernel} needs {shared_mem} bytes of shared memory per block, more than the "
                f"{module.device.max_shared_optin} that {module.device.name} allows: the input is too large "
                "for it (fewer features, narrower heads or fewer channels shrink it; a GPU with more shared "
                "memory per block, such as an H100 or a Jetson Orin, takes more)"
            )
        attr = drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        check(drv.cuFuncSetAttribute(f, attr, shared_mem), f"cuFuncSetAttribute({kernel})")
        module.shared_set[kernel] = shared_mem
    params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
    if module.programmatic:
        config = _launch_config(module, grid, block, shared_mem, stream)
        check(drv.cuLaunchKernelEx(config, f, ctypes.addressof(params), 0), f"cuLaunchKernelEx({kernel})")
        return
    check(
        drv.cuLaunchKernel(
            f, *grid, *block, shared_mem, drv.CUstream(int(stream)), ctypes.addressof(params), 0
        ),
        f"cuLaunchKernel({kernel})",
    )


def _launch_config(
    module: LoadedModule,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    shared_mem: int,
    stream: int,
) -> Any:
    """The ``CUlaunchConfig`` of a programmatic dependent launch (cached on the module; at most 512 kept,
    since a model's token counts change the grids from block to block)."""
    key = (grid, block, shared_mem, int(stream))
    config = module.configs.get(key)
    if config is None:
        drv = cuda_driver()
        attr = drv.CUlaunchAttribute()
        attr.id = drv.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attr.value.programmaticStreamSerializationAllowed = 1
        config = drv.CUlaunchConfig()
        config.gridDimX, config.gridDimY, config.gridDimZ = grid
        config.blockDimX, config.blockDimY, config.blockDimZ = block
        config.sharedMemBytes = shared_mem
        config.hStream = drv.CUstream(int(stream))
        config.attrs = [attr]
        config.numAttrs = 1
        if len(module.configs) >= 512:
            module.configs.clear()
        module.configs[key] = config
    return config


KERNEL_SUFFIX = {"float32": "f32", "float16": "f16"}
"""Kernel-name suffix of each I/O dtype the kernels take (torch / numpy dtype names; float16 travels as
raw bits, see cuda_common.cuh)."""


def kernel_suffix(dtype: str, op: str) -> str:
    """The kernel-name suffix of ``dtype`` ("float32" -> "f32"); TypeError naming ``op`` otherwise."""
    if dtype not in KERNEL_SUFFIX:
        raise TypeError(f"{op} supports {sorted(KERNEL_SUFFIX)}, got {dtype}")
    return KERNEL_SUFFIX[dtype]


WORKSPACE_ALIGN = 256
"""Byte alignment of each workspace region (cudaMalloc's own alignment)."""


def aligned_layout(sizes: dict[str, int]) -> dict[str, int]:
    """Byte offset of each named region of ``sizes`` (bytes) packed in order, each region starting
    on a ``WORKSPACE_ALIGN`` boundary, plus ``"end"``: the total workspace in bytes."""
    offsets, pos = {}, 0
    for name, size in sizes.items():
        offsets[name] = pos
        pos += -(-size // WORKSPACE_ALIGN) * WORKSPACE_ALIGN
    offsets["end"] = pos
    return offsets


# ---- torch faces: CUDA tensors, or CPU tensors under emulated_kernels() -------------------------------


def kernels_apply(t: Tensor) -> bool:
    """Whether an op called on ``t`` runs the kernels: a CUDA tensor, or any tensor while they are emulated
    (what the ops' torch dispatch and the models' kernel paths key on)."""
    return bool(t.is_cuda) or emulating()


def check_kernel_tensor(name: str, t: Tensor, device: Any) -> None:
    """Raise ValueError unless ``t`` can feed the kernels: a CUDA tensor on ``device``, or while emulating
    a CPU tensor (the emulator dereferences host addresses: a CUDA tensor there would crash it)."""
    emulated = emulating()
    if not (t.device.type == "cpu" if emulated else t.is_cuda):
        if emulated:
            raise ValueError(
                f"{name} must be a CPU tensor (kernels are emulated), got a tensor on {t.device}"
            )
        raise ValueError(
            f"{name} must be a CUDA tensor, got a tensor on {t.device}: move the inputs to the GPU"
        )
    if t.device != device:
        raise ValueError(
            f"{name} must be on {device}, the device of the other inputs, got a tensor on {t.device}"
        )


def kernel_stream(t: Tensor) -> int:
    """torch's current CUDA stream on ``t``'s device as an int (0 for a CPU tensor: emulated launches run
    synchronously)."""
    import torch

    return int(torch.cuda.current_stream(t.device).cuda_stream) if t.is_cuda else 0


def kernel_device(t: Tensor) -> contextlib.AbstractContextManager[Any]:
    """``torch.cuda.device(t.device)`` for a CUDA tensor (the launches need its context current), else a
    no-op."""
    import torch

    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def tensor_dtype_name(t: Tensor) -> str:
    """``t``'s dtype as the enqueue functions take it ("float32", "float16")."""
    return str(t.dtype).removeprefix("torch.")


def new_workspace(nbytes: int, like: Tensor) -> Tensor:
    """A uint8 workspace of ``nbytes`` on ``like``'s device. While emulating it is filled with 0xff (NaN
    as float32, -1 as int32), so a kernel reading workspace nothing wrote shows up in its results."""
    import torch

    if emulating():
        return torch.full((nbytes,), 0xFF, dtype=torch.uint8, device=like.device)
    return torch.empty(nbytes, dtype=torch.uint8, device=like.device)
