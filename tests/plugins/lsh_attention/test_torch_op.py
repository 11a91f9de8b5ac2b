"""The torch op ``torch.ops.vitrt.scatterbrain_attention``: CPU dispatch = the reference, and a model's
attention cores take the kernel path where the kernels apply (checked on the CPU emulator, where CPU
tensors dispatch to the emulated kernels: CI has no GPU)."""

from __future__ import annotations

import pytest
import torch

from vitrt import create_model
from vitrt.plugins.cuda_emulation import (
    KernelEmulationError,
    emulated_kernels,
    emulated_module,
    host_compiler,
)
from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection
from vitrt.plugins.lsh_attention.reference import attention_by_mode
from vitrt.plugins.lsh_attention.spec import Mode, ScatterbrainAttrs
from vitrt.plugins.lsh_attention.torch_op import scatterbrain_call


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.name.lower())
def test_cpu_dispatch_is_the_reference(mode: Mode) -> None:
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 2, 50, 16, generator=g) for _ in range(3))
    hv, proj = draw_hash_vectors(2, 16, g), draw_projection(4, 16, g)
    sparse, low_rank = mode != Mode.PERFORMER, mode != Mode.LSH
    attrs = ScatterbrainAttrs(mode, 8 if sparse else 0, 2 if sparse else 0, 8 if low_rank else 0, 0.25)
    hv_in, proj_in = (hv if sparse else None), (proj if low_rank else None)
    got = scatterbrain_call(q, k, v, hv_in, proj_in, attrs)
    assert torch.equal(got, attention_by_mode(q, k, v, hv_in, proj_in, attrs))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["scatterbrain", "lsh", "performer"])
def test_model_takes_the_kernel_path(method: str) -> None:
    """Under emulated_kernels() the T2T token attentions of t2t_vit_t_14 (64 pixels: 256 and 64 tokens)
    run the kernels (launch counts) and give the reference path's logits within 1e-4; without it, no
    kernel is launched."""
    try:
        host_compiler()
    except KernelEmulationError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    model = create_model("t2t_vit_t_14", img_size=64, num_classes=10, attention=method).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    module = emulated_module("scatterbrain")
    before = sum(module.launches.values())
    with torch.no_grad():
        expected = model(images)
        assert sum(module.launches.values()) == before, "the reference path launched kernels"
        with emulated_kernels():
            got = model(images)
    combine = {k: v for k, v in module.launches.items() if k.startswith("vitrt_sb_combine")}
    assert sum(combine.values()) >= 2, module.launches  # one op call per T2T token attention
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_model_at_384_pixels_takes_the_sort_in_tiles() -> None:
    """t2t_vit_t_14 + Scatterbrain from 384 x 384 pixels: its first token attention has 9216 tokens, more than
    one tile of the radix sort (8192), so the kernel path sorts in tiles (vitrt_sb_sort_tiles), and the logits
    equal the reference path's within 1e-4 (on the emulator: 4.2e-7 of 1.13 at most)."""
    try:
        host_compiler()
    except KernelEmulationError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    model = create_model("t2t_vit_t_14", img_size=384, num_classes=10, attention="scatterbrain").eval()
    images = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(3))
    module = emulated_module("scatterbrain")
    before = module.launches.get("vitrt_sb_sort_tiles", 0)
    with torch.no_grad():
        expected = model(images)
        with emulated_kernels():
            got = model(images)
    assert module.launches.get("vitrt_sb_sort_tiles", 0) == before + 1, module.launches
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
