"""The CUDA kernels compile: nvcc builds one fatbin per op with a cubin for every listed architecture
and the PTX, and every kernel the launchers use is in it. No GPU needed (nvcc only; NVRTC where its
wheel is installed). Also the pure-Python parts of the launcher and the TensorRT glue.

The build is cached under build/plugins by a key of the sources, nvcc's version and the flags. `make test`
builds it before the suite (its ``kernels`` step, beside lint and type check); run alone, this module's
fixture builds it where it is missing: about 6 CPU-minutes on the 2-core workstation, most of it
scatterbrain.cu (about 50 s of cicc and ptxas for each of its five cubins, 25 s for the PTX).
"""

from __future__ import annotations

import importlib
import struct
from pathlib import Path

import pytest

from vitrt.errors import VitrtError
from vitrt.plugins.cuda_build import (
    DEFAULT_ARCHS,
    PTX_ARCH,
    FatbinEntry,
    build_fatbins,
    cuobjdump_archs,
    default_archs,
    fatbin_archs,
    fatbin_entries,
    find_cuda_home,
    kernel_resources,
    kernel_sources,
    parse_resource_usage,
)
from vitrt.plugins.cuda_launcher import compatible_image


def _nvcc_missing() -> str | None:
    try:
        find_cuda_home()
    except VitrtError as exc:
        return str(exc)
    return None


NVCC_MISSING = _nvcc_missing()


@pytest.fixture(scope="module")
def fatbins() -> dict[str, Path]:
    if NVCC_MISSING:
        print(f"SKIP: {NVCC_MISSING}")
        pytest.skip(NVCC_MISSING)
    # the default architectures, whatever $VITRT_CUDA_ARCHS says: these tests check the default build
    return {r.source.name: r.path for r in build_fatbins(archs=DEFAULT_ARCHS, niceness=10)}


def test_one_source_per_op() -> None:
    from vitrt.plugins import OP_PACKAGES

    folders = {s.path.parent.name for s in kernel_sources()}
    assert folders == {pkg.split(".")[-1] for pkg in OP_PACKAGES}


def test_every_listed_architecture_has_a_cubin(fatbins: dict[str, Path]) -> None:
    for name, path in fatbins.items():
        cubins, ptx = fatbin_archs(path)
        assert cubins == list(DEFAULT_ARCHS), name
        assert ptx == [PTX_ARCH], name
        listed = cuobjdump_archs(path)  # None where the toolkit has no cuobjdump (as here)
        if listed is not None:
            assert listed == list(DEFAULT_ARCHS), name


KERNEL_MODULES = {
    "token_fusion": "vitrt.plugins.token_fusion.cuda",
    "scatterbrain": "vitrt.plugins.lsh_attention.cuda",
}


def test_every_launched_kernel_is_in_the_fatbin(fatbins: dict[str, Path]) -> None:
    for source, pkg in KERNEL_MODULES.items():
        data = fatbins[source].read_bytes()
        for kernel in importlib.import_module(pkg).KERNELS:
            assert kernel.encode() + b"\0" in data, f"{kernel} missing from {source}.fatbin"


def test_no_kernel_spills_registers_on_any_architecture(fatbins: dict[str, Path]) -> None:
    # ptxas's report, recorded at build time: a spill or a stack frame would put per-thread data in
    # local (DRAM-backed) memory, and __launch_bounds__ would have forced it where the block size
    # does not fit the register file.
    for name in fatbins:
        usage = kernel_resources(name)
        assert sorted(usage) == sorted(DEFAULT_ARCHS), name
        for arch, kernels in usage.items():
            assert len(kernels) == len(importlib.import_module(KERNEL_MODULES[name]).KERNELS), (name, arch)
            for kernel, u in kernels.items():
                assert u["spill_stores"] == u["spill_loads"] == u["stack_bytes"] == 0, (arch, kernel, u)
                assert 0 < u["registers"] <= 255, (arch, kernel, u)


def test_resource_usage_parser_skips_interleaved_reports() -> None:
    log = """ptxas info    : Compiling entry function 'a' for 'sm_90'
ptxas info    : Function properties for a
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 8448 bytes smem, 416 bytes cmem[0]
ptxas info    : Compiling entry function 'b' for 'sm_87'
ptxas info    : Function properties for a
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 428 bytes cmem[0]
"""
    assert parse_resource_usage(log) == {
        "sm_90": {
            "a": dict(stack_bytes=0, spill_stores=8, spill_loads=4, registers=64, static_smem_bytes=8448)
        },
        "sm_87": {"b": {}},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT_ARCHS),
        ("  ", DEFAULT_ARCHS),
        ("sm_87", ("sm_87",)),
        ("sm_90, sm_100 sm_90", ("sm_90", "sm_100")),
    ],
)
def test_the_environment_chooses_the_architectures(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: tuple[str, ...]
) -> None:
    if value is None:
        monkeypatch.delenv("VITRT_CUDA_ARCHS", raising=False)
    else:
        monkeypatch.setenv("VITRT_CUDA_ARCHS", value)
    assert default_archs() == expected


def test_a_malformed_architecture_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRT_CUDA_ARCHS", "sm_90,90,compute_80")
    with pytest.raises(VitrtError) as err:
        default_archs()
    message = str(err.value)
    assert message.startswith("$VITRT_CUDA_ARCHS='sm_90,90,compute_80': '90', 'compute_80' is not a cubin")
    assert "VITRT_CUDA_ARCHS=sm_87" in message
    with pytest.raises(VitrtError, match="VITRT_CUDA_ARCHS"):
        build_fatbins(Path("/nonexistent"))  # refused before nvcc is looked for or anything is written


def test_programmatic_launch_only_where_the_kernels_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Programmatic dependent launch lets a kernel start before the one ahead of it has finished, so the
    launcher asks for it only for cubins of sm_90 and later, whose prologue waits (never for PTX, whose
    compute_80 code has no prologue), and $VITRT_PROGRAMMATIC_LAUNCH=0 turns it off."""
    from vitrt.plugins.cuda_launcher import PROGRAMMATIC_ENV, programmatic_launch

    monkeypatch.delenv(PROGRAMMATIC_ENV, raising=False)
    assert [programmatic_launch(a) for a in (0, 80, 87, 89, 90, 100, 120)] == [False] * 4 + [True] * 3
    monkeypatch.setenv(PROGRAMMATIC_ENV, "0")
    assert not programmatic_launch(90)


def test_every_kernel_waits_for_the_one_before_first() -> None:
    """Each kernel's first statement is VITRT_KERNEL_PROLOGUE (griddepcontrol.wait from sm_90): with a
    programmatic launch a kernel that read or wrote memory before it would race the kernel ahead of it."""
    import re

    entry = re.compile(r'extern "C" __global__[^{]*\{\s*(?:\\\s*)?(\w+)')
    for source in kernel_sources():
        text = source.path.read_text()
        firsts = entry.findall(text)
        assert len(firsts) == text.count("__global__") > 0, source.name
        assert set(firsts) == {"VITRT_KERNEL_PROLOGUE"}, (source.name, firsts)


def test_a_rebuild_is_cached(fatbins: dict[str, Path]) -> None:
    again = build_fatbins(archs=DEFAULT_ARCHS)
    assert all(r.cached for r in again)
    assert {r.source.name: r.path for r in again} == fatbins


def test_nvrtc_compiles_the_sources_where_installed() -> None:
    from vitrt.plugins.cuda_launcher import CudaError, nvrtc_compile

    try:
        importlib.import_module("cuda.bindings.nvrtc")
    except ImportError as exc:
        reason = f"cuda-python's NVRTC bindings are not installed ({exc})"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    # token_fusion.cu is NVRTC-compiled into a cubin from the installed wheel by test_packaging (13 s each
    # time on the 2-core workstation), so each source is compiled once in the suite; the others into PTX:
    # NVRTC's own part (the front end) without ptxas, which the fatbin build runs (24 s for scatterbrain.cu
    # where its sm_90 cubin took 53 s).
    for source in (s for s in kernel_sources() if s.name != "token_fusion"):
        try:
            ptx = nvrtc_compile(source, "compute_90")
        except CudaError as exc:
            if "NVRTC is not usable" in str(exc):
                pytest.skip(str(exc))
            raise
        assert b".target sm_90" in ptx and b".entry vitrt_sb_features_f16" in ptx


def _fatbin(entries: list[tuple[int, int]]) -> bytes:
    body = b""
    for kind, arch in entries:
        payload = b"x" * 8
        header = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + b"\0" * 12 + struct.pack("<I", arch)
        body += header + b"\0" * (64 - len(header)) + payload
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_fatbin_parser_reads_kinds_and_archs() -> None:
    data = _fatbin([(2, 87), (2, 90), (1, 80)])
    assert fatbin_entries(data) == [
        FatbinEntry("cubin", 87),
        FatbinEntry("cubin", 90),
        FatbinEntry("ptx", 80),
    ]
    assert fatbin_entries(data + _fatbin([(2, 120)]))[-1] == FatbinEntry("cubin", 120)  # concatenated
    with pytest.raises(VitrtError, match="magic"):
        fatbin_entries(b"\x7fELF" + data[4:])
    with pytest.raises(VitrtError, match="truncated"):
        fatbin_entries(data[:-3])


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((9, 0), FatbinEntry("cubin", 90)),
        ((8, 9), FatbinEntry("cubin", 87)),  # Ada runs the Orin cubin (same major, higher minor)
        ((8, 6), FatbinEntry("ptx", 80)),  # A10 / RTX 30xx: no cubin, PTX JIT
        ((10, 3), FatbinEntry("cubin", 100)),
        ((12, 1), FatbinEntry("cubin", 120)),
        ((13, 0), FatbinEntry("ptx", 80)),  # a future GPU: PTX JIT
        ((7, 5), None),  # Turing: nothing in the fatbin -> NVRTC
    ],
)
def test_the_image_the_driver_runs(capability: tuple[int, int], expected: FatbinEntry | None) -> None:
    entries = fatbin_entries(_fatbin([(2, 87), (2, 90), (2, 100), (2, 110), (2, 120), (1, 80)]))
    assert compatible_image(entries, capability) == expected


def test_launcher_errors_name_the_missing_piece() -> None:
    # cuda-python is needed only when a kernel is launched, and without a driver the first CUDA call
    # says so (CI has cuda-python but no GPU).
    import torch

    from vitrt.plugins import cuda_launcher

    try:
        importlib.import_module("cuda.bindings.driver")
    except ImportError:
        with pytest.raises(VitrtError, match="pip install cuda-python"):
            cuda_launcher.cuda_driver()
        return
    if torch.cuda.is_available():
        pytest.skip("a GPU and its driver are present here")
    with pytest.raises(cuda_launcher.CudaError, match="cuInit failed"):
        cuda_launcher.current_context()


def test_tensorrt_glue_reports_a_missing_tensorrt() -> None:
    from vitrt.plugins import register_tensorrt_plugins
    from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

    reason = tensorrt_missing_reason()
    if reason is None:
        pytest.skip("TensorRT is installed here (tests/tensorrt covers it)")
    with pytest.raises(VitrtError, match="pip install tensorrt"):
        register_tensorrt_plugins()


def test_workspace_regions_are_aligned_and_disjoint() -> None:
    from vitrt.plugins.lsh_attention.cuda import AttentionDims, shared_bytes, workspace_layout
    from vitrt.plugins.lsh_attention.spec import Mode, ScatterbrainAttrs
    from vitrt.plugins.token_fusion.cuda import FusionDims
    from vitrt.plugins.token_fusion.cuda import workspace_layout as fusion_layout

    for mode in Mode:
        attrs = ScatterbrainAttrs(
            mode,
            24 if mode != Mode.PERFORMER else 0,
            2 if mode != Mode.PERFORMER else 0,
            24 if mode != Mode.LSH else 0,
            147**-0.5,
        )
        d = AttentionDims.of(32, 1, 3136, 64, 64, attrs)
        lay = workspace_layout(d)
        offsets = sorted(lay.values())
        assert all(o % 256 == 0 for o in offsets)
        assert len(set(offsets)) == len(offsets)
        assert d.p == (3144 if mode != Mode.PERFORMER else 3136)
        # T2T sizes: no shared-memory opt-in but for the sort, whose 25 warps of 4 keys (P = 3144) take
        # 51,200 bytes (8 keys per thread took 39,936), within what every target allows
        smem = shared_bytes(d)
        assert max(v for k, v in smem.items() if k != "sort") <= 48 * 1024, smem
        assert smem["sort"] == (51_200 if d.sparse else 0)
    lay = fusion_layout(FusionDims(64, 197, 384, 384, 16))
    assert lay["end"] >= 4 * 64 * 99 * 98
