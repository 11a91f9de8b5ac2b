"""vitrt's MCTF computes the official MCTF code's function (mlvlab/MCTF) for the same weights.

Runs only where the developer points VITRT_MCTF_SRC at a checkout of mlvlab/MCTF and VITRT_TIMM_PATH
at a folder holding timm 0.5.4 (``pip install --no-deps --target DIR timm==0.5.4``; see
tests/_support/official.py); skipped otherwise, CI included. No official code is vendored.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from tests._support.official import official_checkout
from vitrt import create_model, load_checkpoint

# The official command lines (run/eval_deit_*_mctf*.sh): mctf_type = [r, r_teacher_max, trace_source,
# prop_attn, one_step_ahead, tau_sim, tau_info, tau_size, bidirection, pooling_type, -].
SETTINGS = {
    "mctf": ([16, 0, 0, 1, 1, 1, 20, 40, 1, 1, 0], list(range(1, 12)), 16),
    "mctf-fast": ([0.35, 0, 0, 1, 1, 1, 20, 40, 1, 1, 0], [3, 6, 9], 0.35),
}
MODELS = {"deit_tiny_patch16_224": "deit_tiny", "deit_small_patch16_224": "deit_small"}
# The other modes of the official code, as vitrt dict configs (DeiT-T only, to keep the run short).
VARIANTS: dict[str, tuple[dict[str, object], list[float], list[int], float]] = {
    "one_step_ahead=0": ({"one_step_ahead": 0}, [12, 0, 0, 1, 0, 1, 20, 40, 1, 1, 0], [1, 4, 7, 10], 12),
    "one_step_ahead=2": ({"one_step_ahead": 2}, [12, 0, 0, 1, 2, 1, 20, 40, 1, 1, 0], [2, 5, 8], 12),
    "one-way, size pooling, no prop": (
        {"bidirectional": False, "pooling": "size", "prop_attn": False, "tau_info": 5, "tau_size": 0},
        [0.3, 0, 0, 0, 1, 1, 5, 0, 0, 0, 0],
        [1, 3, 5, 7, 9],
        0.3,
    ),
    "mean pooling, tau_sim 2": (
        {"pooling": "mean", "tau_sim": 2, "tau_info": 0},
        [10, 0, 0, 1, 1, 2, 0, 40, 1, 3, 0],
        [0, 6, 11],
        10,
    ),
}
_ALIASES = ("models", "utils")  # top-level package names of the official repo that clash with vitrt's


def _official_deit(root: Path) -> ModuleType:
    # The official code imports its own "models" package absolutely; swap vitrt's out of
    # sys.modules while it imports, then put it back (the official modules keep their globals).
    if "mctf_official_deit" not in sys.modules:
        saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in _ALIASES}
        try:
            sys.path.insert(0, str(root))
            deit = importlib.import_module("vitrt.models.deit")
        finally:
            sys.path.remove(str(root))
            for k in [k for k in sys.modules if k.split(".")[0] in _ALIASES]:
                del sys.modules[k]
            sys.modules.update(saved)
        sys.modules["mctf_official_deit"] = deit
    return sys.modules["mctf_official_deit"]


def _spread_weights(model: nn.Module) -> None:
    # Fresh DeiT weights (std 0.02) give almost uniform attention, where informativeness and the
    # matching barely matter; larger weights make attention peaked and the comparison meaningful.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim >= 2 else 0.05))


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", list(MODELS))
def test_mctf_matches_official(name: str, setting: str) -> None:
    mctf_type, activate, r_eval = SETTINGS[setting]
    _compare(name, setting, setting, mctf_type, activate, r_eval)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mctf_modes_match_official(variant: str) -> None:
    options, mctf_type, activate, r_eval = VARIANTS[variant]
    fusion = {**options, "r": {i: r_eval for i in activate}}
    _compare("deit_tiny_patch16_224", variant, fusion, mctf_type, activate, r_eval)


def _compare(
    name: str, label: str, fusion: object, mctf_type: list[float], activate: list[int], r_eval: float
) -> None:
    root = official_checkout("VITRT_MCTF_SRC", "utils/mctf.py")
    official = _official_deit(root)
    torch.manual_seed(0)
    ref = getattr(official, MODELS[name])(
        task_type=[1, 0, 0, 0], mctf_type=mctf_type, use_mctf=True, activate_layer=activate
    ).eval()
    _spread_weights(ref)
    ours = load_checkpoint(create_model(name, fusion=fusion), {"model": ref.state_dict()})
    plain = load_checkpoint(create_model(name), {"model": ref.state_dict()})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x, r_eval=r_eval)
        got = ours(x)
        unfused = plain(x)
    diff = (got - expected).abs().max().item()
    print(
        f"{name} {label}: max |logit| {expected.abs().max().item():.3f}, max abs diff {diff:.3e}, "
        f"fusion changes logits by {(unfused - expected).abs().max().item():.3f}"
    )
    # The comparison discriminates: fusing changes the logits far beyond the tolerance.
    assert (unfused - expected).abs().max().item() > 1e-2
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert ref.info["student_size"].shape[1] == ours.token_schedule()[-1]
