"""vitrt's models compute the official implementations' function for the same weights.

Runs only where the developer points VITRT_T2T_SRC at a checkout of yitu-opensource/T2T-ViT and
VITRT_TIMM_PATH at a folder holding timm (see tests/_support/official.py); skipped otherwise, CI
included.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests._support.official import official_checkout
from vitrt.models import create_model, load_checkpoint

T2T_CASES = [(n, 224) for n in ("t2t_vit_7", "t2t_vit_14", "t2t_vit_t_14", "t2t_vit_19", "t2t_vit_t_24")]
T2T_CASES.append(("t2t_vit_14", 384))


def _official_t2t(root: Path) -> ModuleType:
    # The official package is also called "models": load it under another name so that it does not
    # shadow vitrt's.
    if "t2t_official" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "t2t_official", root / "models" / "__init__.py", submodule_search_locations=[str(root / "models")]
        )
        assert spec is not None and spec.loader is not None
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["t2t_official"] = pkg
        spec.loader.exec_module(pkg)
    return importlib.import_module("t2t_official.t2t_vit")


@pytest.mark.parametrize(("name", "img_size"), T2T_CASES)
def test_t2t_vit_matches_official(name: str, img_size: int) -> None:
    official = _official_t2t(official_checkout("VITRT_T2T_SRC", "models/t2t_vit.py"))
    torch.manual_seed(0)
    ref = getattr(official, name)(img_size=img_size).eval()
    ours = load_checkpoint(create_model(name, img_size=img_size), {"state_dict_ema": ref.state_dict()})
    assert [(k, v.shape) for k, v in ref.state_dict().items()] == [
        (k, v.shape) for k, v in ours.state_dict().items()
    ]
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit_small_patch16_224"])
def test_deit_matches_timm(name: str) -> None:
    official_checkout("VITRT_TIMM_PATH", "timm/__init__.py")
    timm = importlib.import_module("timm")
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    ours = load_checkpoint(create_model(name), {"model": ref.state_dict()})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)
