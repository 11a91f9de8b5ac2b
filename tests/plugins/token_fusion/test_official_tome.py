"""vitrt's "tome" preset computes the official ToMe code's function (facebookresearch/ToMe).

Runs only where the developer points VITRT_TOME_SRC at a checkout of facebookresearch/ToMe and
VITRT_TIMM_PATH at a folder holding timm (0.5.4 tested; see tests/_support/official.py); skipped
otherwise. No official code is vendored.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from tests._support.official import official_checkout
from vitrt import create_model, load_checkpoint


@pytest.mark.parametrize("r", [16, 8])
def test_tome_matches_official(r: int) -> None:
    official_checkout("VITRT_TOME_SRC", "tome/patch/timm.py")
    timm = importlib.import_module("timm")
    tome = importlib.import_module("tome")
    torch.manual_seed(0)
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # peaked attention, distinct keys: see test_official_mctf._spread_weights
        for p in ref.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    ours = load_checkpoint(
        create_model("deit_tiny_patch16_224", fusion={"preset": "tome", "r": r}), {"model": ref.state_dict()}
    )
    plain = load_checkpoint(create_model("deit_tiny_patch16_224"), {"model": ref.state_dict()})
    tome.patch.timm(ref)
    ref.r = r
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got, unfused = ref(x), ours(x), plain(x)
    print(
        f"ToMe r={r}: max |logit| {expected.abs().max().item():.3f}, "
        f"max abs diff {(got - expected).abs().max().item():.3e}"
    )
    assert (unfused - expected).abs().max().item() > 1e-2
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
