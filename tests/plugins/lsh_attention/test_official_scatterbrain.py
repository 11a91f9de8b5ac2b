"""scatterbrain_attention / lsh_attention compute the official Scatterbrain code's function.

Runs only where the developer points VITRT_SCATTERBRAIN_SRC at a checkout of
HazyResearch/scatterbrain (its ``src/`` package must import: it needs ``einops``, e.g.
``pip install --target DIR einops`` and DIR on PYTHONPATH); skipped otherwise, CI included. Nothing of
that code is vendored here.

The official modules draw their randomness on every call; the test replaces the draws by ours:
``E2LSH`` (the per-round Gaussian hash vectors; its uniform shift beta is the same for every query and
key of a round, so it cannot change the argsort and is set to 0) and
``gaussian_orthogonal_random_matrix`` (the feature projection). Layouts differ: the official modules
take [B, N, H, E], ours [B, H, N, E].
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from vitrt.plugins.lsh_attention.reference import lsh_attention, scatterbrain_attention

MARKER = "src/models/attention/sbsmyrf_attention.py"

# (B, H, N, E, Dv, n_hashes, cluster_size, projection rows, scale, q/k magnitude)
CASES = [
    (2, 3, 64, 16, 16, 1, 8, 4, None, 1.0),
    (2, 3, 50, 16, 12, 2, 8, 4, None, 1.0),  # padding: 50 -> 56
    (1, 2, 47, 21, 17, 3, 6, 13, 0.235, 2.0),  # padding, three rounds, sharper logits
    (1, 1, 784, 64, 64, 2, 6, 3, 576**-0.5, 3.0),  # attention2 budget at 224 (786 padded)
    (1, 1, 3136, 64, 64, 2, 24, 12, 147**-0.5, 3.0),  # attention1 budget at 224 (3144 padded)
]


def _official() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    root = os.environ.get("VITRT_SCATTERBRAIN_SRC")
    if not root:
        pytest.skip(
            "set VITRT_SCATTERBRAIN_SRC to a checkout of HazyResearch/scatterbrain to compare against it"
        )
    if not (Path(root) / MARKER).is_file():
        pytest.fail(f"VITRT_SCATTERBRAIN_SRC={root} has no {MARKER}: not a scatterbrain checkout")
    pytest.importorskip("einops", reason="the official code imports einops (pip install --target DIR einops)")
    if root not in sys.path:
        sys.path.insert(0, root)
    names = ("sbsmyrf_attention", "smyrf_attention", "hash_utils", "feature_maps_sb")
    sb, smyrf, hashing, features = (importlib.import_module(f"src.models.attention.{n}") for n in names)
    return sb, smyrf, hashing, features


def _fixed_draws(
    monkeypatch: pytest.MonkeyPatch,
    hashing: ModuleType,
    features: ModuleType,
    hv: torch.Tensor,
    proj: torch.Tensor,
) -> None:
    class FixedE2LSH:
        def __init__(self, n_hashes: int, dim: int, r: float, device: object = None) -> None:
            assert (n_hashes, dim) == tuple(hv.shape), "official hashing asked for another shape"
            self.alpha = hv.t()

        def __call__(self, vecs: torch.Tensor) -> torch.Tensor:
            return (vecs @ self.alpha).permute(2, 0, 1)

    def fixed_projection(nrows: int, ncols: int, **_: object) -> torch.Tensor:
        assert (nrows, ncols) == tuple(proj.shape), "official feature map asked for another shape"
        return proj.clone()

    monkeypatch.setattr(hashing, "E2LSH", FixedE2LSH)
    monkeypatch.setattr(features, "gaussian_orthogonal_random_matrix", fixed_projection)


def _inputs(case: tuple) -> tuple[torch.Tensor, ...]:
    b, h, n, e, dv, r, _, m, _, mag = case
    g = torch.Generator().manual_seed(n * 1000 + e)
    q = torch.randn(b, h, n, e, generator=g) * mag
    k = torch.randn(b, h, n, e, generator=g) * mag
    v = torch.randn(b, h, n, dv, generator=g)
    hv = torch.randn(r, e + 2, generator=g)
    proj = torch.randn(m, e, generator=g)
    return q, k, v, hv, proj


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[2]}-E{c[3]}-R{c[5]}-c{c[6]}-m{c[7]}")
def test_scatterbrain_matches_sbsmyrf(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    sb, _, hashing, features = _official()
    q, k, v, hv, proj = _inputs(case)
    _, _, _, e, _, r, c, m, scale, _ = case
    _fixed_draws(monkeypatch, hashing, features, hv, proj)
    official = sb.SBSmyrfAttention(r, c, c, e, nb_features=2 * m, softmax_temp=scale).eval()
    with torch.no_grad():
        ref, _ = official(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        ours = scatterbrain_attention(q, k, v, hash_vectors=hv, projection=proj, cluster_size=c, scale=scale)
    err = _rel(ours, ref.transpose(1, 2))
    print(f"scatterbrain vs SBSmyrfAttention {case[:8]}: rel err {err:.2e}")
    assert err <= 1e-4


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[2]}-E{c[3]}-R{c[5]}-c{c[6]}")
def test_lsh_matches_smyrf(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    _, smyrf, hashing, features = _official()
    q, k, v, hv, proj = _inputs(case)
    _, _, _, _, _, r, c, _, scale, _ = case
    _fixed_draws(monkeypatch, hashing, features, hv, proj)
    official = smyrf.SmyrfAttention(r, c, c, softmax_temp=scale).eval()
    with torch.no_grad():
        ref, _ = official(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        ours = lsh_attention(q, k, v, hash_vectors=hv, cluster_size=c, scale=scale)
    err = _rel(ours, ref.transpose(1, 2))
    print(f"lsh vs SmyrfAttention {case[:7]}: rel err {err:.2e}")
    assert err <= 1e-4
