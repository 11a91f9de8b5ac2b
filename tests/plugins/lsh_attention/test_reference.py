"""The functional references compute the function spec.py defines.

Ground truth here is an independent dense oracle in float64: from the same hash vectors it builds
the [N, N] attention numerator A explicitly (exp(t q.k) on pairs that share a cluster in some round,
phi(q).phi(k) elsewhere for Scatterbrain; sum over rounds of exp(t q.k) on each round's clusters for
SMYRF) and returns A v / A 1.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from vitrt.errors import ConfigError
from vitrt.plugins.lsh_attention.module import draw_projection
from vitrt.plugins.lsh_attention.reference import (
    exact_attention,
    halving_sum,
    hashes,
    lsh_attention,
    performer_attention,
    scatterbrain_attention,
    stable_argsort,
    xbox_plus,
)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _qkv(
    b: int, h: int, n: int, e: int, seed: int, mag: float = 1.0, dv: int | None = None
) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, e, generator=g) * mag
    k = torch.randn(b, h, n, e, generator=g) * mag
    v = torch.randn(b, h, n, dv or e, generator=g)
    return q, k, v


def _phi(x: Tensor, proj: Tensor, t: float) -> Tensor:
    xw = (x * math.sqrt(t)) @ proj.t()
    f = torch.cat([xw, -xw], dim=-1)
    return torch.exp(f - t * x.square().sum(-1, keepdim=True) / 2) / math.sqrt(f.shape[-1])


def _buckets(x_t: Tensor, hv: Tensor, c: int) -> Tensor:
    """Cluster index [B, H, R, N] of every token per round, padding appended as +inf hashes."""
    n = x_t.shape[-2]
    p = (n + c - 1) // c * c
    h = (x_t @ hv.t()).transpose(-1, -2)
    h = torch.cat([h, torch.full((*h.shape[:-1], p - n), math.inf, dtype=h.dtype)], dim=-1)
    slot = torch.argsort(torch.argsort(h, dim=-1, stable=True), dim=-1)
    return (slot // c)[..., :n]


def _oracle(q: Tensor, k: Tensor, v: Tensor, hv: Tensor, proj: Tensor | None, c: int, t: float) -> Tensor:
    q, k, v, hv = q.double(), k.double(), v.double(), hv.double()
    q_t, k_t = xbox_plus(q, k)
    same = _buckets(q_t, hv, c).unsqueeze(-1) == _buckets(k_t, hv, c).unsqueeze(-2)  # [B, H, R, N, N]
    exact = torch.exp(t * q @ k.transpose(-1, -2))
    if proj is None:  # SMYRF: every round's cluster pairs, duplicates summed
        a = (same.double() * exact.unsqueeze(2)).sum(2)
    else:
        low_rank = _phi(q, proj.double(), t) @ _phi(k, proj.double(), t).transpose(-1, -2)
        a = torch.where(same.any(2), exact, low_rank)
    return (a @ v) / a.sum(-1, keepdim=True)


PROJECTIONS = ["orthogonal-1", "orthogonal-12", "orthogonal-32", "orthogonal-100", "gaussian-8", "zeros-4"]


def _projection(kind: str, e: int, seed: int) -> Tensor:
    name, m = kind.split("-")
    g = torch.Generator().manual_seed(seed)
    if name == "orthogonal":
        return draw_projection(int(m), e, g)
    if name == "gaussian":
        return torch.randn(int(m), e, generator=g)
    return torch.zeros(int(m), e)


@pytest.mark.parametrize("kind", PROJECTIONS)
@pytest.mark.parametrize(("n", "cluster_size", "scale"), [(40, 40, None), (40, 47, 147**-0.5), (33, 64, 0.3)])
def test_one_round_full_cluster_is_exact_attention(
    kind: str, n: int, cluster_size: int, scale: float | None
) -> None:
    """One hash round, one cluster covering all tokens: the sparse part is the whole matrix, so the
    low-rank estimate cancels (up to float32 rounding) whatever projection is used."""
    q, k, v = _qkv(2, 2, n, 64, seed=n)
    proj = _projection(kind, 64, seed=7)
    hv = torch.randn(1, 66, generator=torch.Generator().manual_seed(3))
    out = scatterbrain_attention(
        q, k, v, hash_vectors=hv, projection=proj, cluster_size=cluster_size, scale=scale
    )
    assert _rel(out, exact_attention(q, k, v, scale=scale)) <= 1e-4
    out = lsh_attention(q, k, v, hash_vectors=hv, cluster_size=cluster_size, scale=scale)
    assert _rel(out, exact_attention(q, k, v, scale=scale)) <= 1e-4


# (N, cluster_size, rounds): N not a multiple of the cluster size in all but the first
ORACLE_CASES = [(48, 8, 1), (50, 8, 2), (47, 6, 3), (37, 5, 2), (21, 20, 2), (3, 2, 1), (1, 4, 2)]


@pytest.mark.parametrize(("n", "c", "r"), ORACLE_CASES)
def test_scatterbrain_matches_dense_oracle(n: int, c: int, r: int) -> None:
    q, k, v = _qkv(2, 2, n, 16, seed=n, mag=1.3, dv=12)
    hv, proj = torch.randn(r, 18), torch.randn(6, 16)
    out = scatterbrain_attention(q, k, v, hash_vectors=hv, projection=proj, cluster_size=c, scale=0.2)
    assert out.shape == (2, 2, n, 12)
    torch.testing.assert_close(out.double(), _oracle(q, k, v, hv, proj, c, 0.2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("n", "c", "r"), ORACLE_CASES)
def test_lsh_matches_dense_oracle(n: int, c: int, r: int) -> None:
    q, k, v = _qkv(2, 2, n, 16, seed=n, mag=1.3, dv=12)
    hv = torch.randn(r, 18)
    out = lsh_attention(q, k, v, hash_vectors=hv, cluster_size=c, scale=0.2)
    torch.testing.assert_close(out.double(), _oracle(q, k, v, hv, None, c, 0.2), rtol=1e-4, atol=1e-5)


def test_performer_matches_feature_formula() -> None:
    q, k, v = _qkv(2, 3, 30, 16, seed=1, mag=1.5)
    proj = draw_projection(10, 16, torch.Generator().manual_seed(0))
    out = performer_attention(q, k, v, projection=proj, scale=0.25)
    qd, kd = _phi(q.double(), proj.double(), 0.25), _phi(k.double(), proj.double(), 0.25)
    expected = (qd @ (kd.transpose(-1, -2) @ v.double())) / (qd @ kd.sum(-2, keepdim=True).transpose(-1, -2))
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n", [13, 15, 9])
def test_padding_is_never_attended(n: int) -> None:
    """The zero tokens the op appends (13 -> 16 with clusters of 8) carry no weight: outputs are
    weighted means of the real values only (weights summing to 1), so shifting every value by 100
    shifts every output by exactly 100; attended zero padding would pull outputs towards 0."""
    q, k, v = _qkv(1, 2, n, 8, seed=5)
    kw = {"hash_vectors": torch.randn(2, 10), "cluster_size": 8, "scale": 0.4}
    out = lsh_attention(q, k, v, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(lsh_attention(q, k, v + 100.0, **kw) - 100.0, out, rtol=0, atol=1e-4)  # type: ignore[arg-type]
    kw["projection"] = torch.randn(4, 8)
    out = scatterbrain_attention(q, k, v, **kw)  # type: ignore[arg-type]
    shifted = scatterbrain_attention(q, k, v + 100.0, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(shifted - 100.0, out, rtol=0, atol=1e-3)


@pytest.mark.parametrize("fn", ["scatterbrain", "lsh", "performer"])
def test_batch_and_head_independence(fn: str) -> None:
    q, k, v = _qkv(2, 3, 29, 16, seed=2)
    kw: dict[str, object] = {"scale": 0.3}
    if fn != "performer":
        kw.update(hash_vectors=torch.randn(2, 18), cluster_size=6)
    if fn != "lsh":
        kw["projection"] = torch.randn(5, 16)
    op = {"scatterbrain": scatterbrain_attention, "lsh": lsh_attention, "performer": performer_attention}[fn]
    full = op(q, k, v, **kw)
    for b in range(2):
        for h in range(3):
            sl = (slice(b, b + 1), slice(h, h + 1))
            torch.testing.assert_close(full[sl], op(q[sl], k[sl], v[sl], **kw), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mag", [1.0, 8.0, 40.0])
def test_float16_is_finite_and_matches_float32(mag: float) -> None:
    """float16 inputs whose squared norms and logits overflow float16 (40^2 * 32 > 65504): the op
    computes in float32, so the result is the float32 result rounded."""
    q, k, v = (t.half() for t in _qkv(2, 2, 45, 32, seed=3, mag=mag))
    hv, proj = torch.randn(2, 34), torch.randn(8, 32)
    for op, kw in (
        (scatterbrain_attention, {"hash_vectors": hv, "projection": proj, "cluster_size": 8}),
        (lsh_attention, {"hash_vectors": hv, "cluster_size": 8}),
        (performer_attention, {"projection": proj}),
    ):
        out = op(q, k, v, **kw)  # type: ignore[operator]
        assert out.dtype == torch.float16
        assert torch.isfinite(out).all()
        ref = op(q.float(), k.float(), v.float(), **kw)  # type: ignore[operator]
        torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2e-3)


def test_equal_tokens_sort_in_index_order() -> None:
    """Identical tokens tie in every hash: the stable order (ties by index) decides their clusters."""
    x = torch.tensor([[3.0, 1.0, 3.0, 1.0, 2.0, 1.0]])
    torch.testing.assert_close(stable_argsort(x), torch.tensor([[1, 3, 5, 4, 0, 2]]))
    x = torch.randint(0, 4, (3, 2, 57)).float()
    torch.testing.assert_close(stable_argsort(x), torch.argsort(x, dim=-1, stable=True))


def _with_copies(x: Tensor, src: int, every: int) -> tuple[Tensor, Tensor]:
    """x [B, H, N, E] with token ``src`` copied to every ``every``-th position; the [N] mask of copies."""
    x = x.clone()
    copies = torch.zeros(x.shape[2], dtype=torch.bool)
    copies[src::every] = True
    x[:, :, copies] = x[:, :, src : src + 1]
    return x, copies


@pytest.mark.parametrize(("n", "e", "r"), [(50, 16, 2), (57, 7, 3), (333, 64, 2), (3136, 64, 2)])
def test_equal_tokens_hash_bitwise_alike(n: int, e: int, r: int) -> None:
    """Copies of a token, wherever they lie, get bitwise equal XBOX+ vectors and hashes, so they tie and
    the stable sort keeps them in index order. (A matmul does not promise that: MKL's sgemm rounds equal
    rows differently by position on some x86 CPUs.)"""
    q, k, _ = _qkv(2, 2, n, e, seed=n)
    q, copies = _with_copies(q, 3, 5)
    k, _ = _with_copies(k, 3, 5)
    hv = torch.randn(r, e + 2, generator=torch.Generator().manual_seed(e))
    for x_t in xbox_plus(q, k):
        assert (x_t[:, :, copies] == x_t[:, :, 3:4]).all()
        h = hashes(x_t, hv)  # [B, H, R, N]
        assert (h[..., copies] == h[..., 3:4]).all()
        exact = (x_t.double() @ hv.double().t()).transpose(-1, -2)
        torch.testing.assert_close(h.double(), exact, rtol=1e-5, atol=1e-5 * float(exact.abs().max()))
        slots = torch.argsort(stable_argsort(h), dim=-1)[..., copies]
        assert (slots.diff(dim=-1) == 1).all(), "copies must be consecutive, in index order"


@pytest.mark.parametrize("d", [1, 2, 3, 7, 16, 18, 33, 66, 130])
def test_halving_sum_is_a_sum(d: int) -> None:
    x = torch.randn(4, 5, d, generator=torch.Generator().manual_seed(d))
    torch.testing.assert_close(halving_sum(x).double(), x.double().sum(-1), rtol=1e-6, atol=1e-6 * d)


def test_default_scale_is_inverse_sqrt_head_dim() -> None:
    q, k, v = _qkv(1, 2, 20, 16, seed=4)
    hv, proj = torch.randn(2, 18), torch.randn(4, 16)
    a = scatterbrain_attention(q, k, v, hash_vectors=hv, projection=proj, cluster_size=5)
    b = scatterbrain_attention(q, k, v, hash_vectors=hv, projection=proj, cluster_size=5, scale=0.25)
    torch.testing.assert_close(a, b)


def _good() -> dict[str, Tensor]:
    q, k, v = _qkv(1, 2, 10, 8, seed=0)
    return {"q": q, "k": k, "v": v, "hash_vectors": torch.randn(2, 10), "projection": torch.randn(3, 8)}


BAD_INPUTS = [
    ({"hash_vectors": torch.randn(2, 8)}, ValueError, r"hash_vectors must be \[n_hashes, E \+ 2\].*E=8"),
    ({"hash_vectors": torch.randn(10)}, ValueError, "hash_vectors"),
    ({"projection": torch.randn(3, 9)}, ValueError, r"projection must be \[m, E\]"),
    ({"q": torch.randn(2, 10, 8)}, ValueError, "q must have rank 4"),
    ({"k": torch.randn(1, 2, 11, 8)}, ValueError, "same shape"),
    ({"v": torch.randn(1, 2, 9, 8)}, ValueError, "v must be"),
    ({"q": torch.randint(0, 3, (1, 2, 10, 8))}, TypeError, "q has dtype torch.int64"),
    ({"v": torch.randn(1, 2, 10, 8, dtype=torch.float64)}, TypeError, "float64"),
    ({"hash_vectors": torch.ones(2, 10, dtype=torch.int64)}, TypeError, "floating-point"),
    ({"cluster_size": 0}, ConfigError, "cluster_size must be an int >= 1"),
    ({"cluster_size": 2.5}, ConfigError, "cluster_size"),
    ({"scale": -1.0}, ConfigError, "scale must be a positive"),
]


@pytest.mark.parametrize(("change", "error", "match"), BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(change: dict[str, object], error: type[Exception], match: str) -> None:
    kw: dict[str, object] = {**_good(), "cluster_size": 4, **change}
    q, k, v = kw.pop("q"), kw.pop("k"), kw.pop("v")
    with pytest.raises(error, match=match):
        scatterbrain_attention(q, k, v, **kw)  # type: ignore[arg-type]
    kw.pop("projection")
    if "projection" not in change:
        with pytest.raises(error, match=match):
            lsh_attention(q, k, v, **kw)  # type: ignore[arg-type]
