"""The TokenFusion op's PyTorch reference: shape rule, invariants, hand-worked ToMe/MCTF examples.

Tolerances: float32 comparisons of the same math in a different order use atol/rtol 1e-6 (sums of a
few terms); float16 against float32 uses atol 1e-2 (about 10 float16 ulps at magnitude 1).
"""

from __future__ import annotations

import pytest
import torch

from vitrt.plugins.token_fusion.reference import (
    bipartite_matching,
    fusion_scores,
    merge_attention,
    merge_matrix,
    merge_sizes,
    merge_tokens,
    pooling_weights,
    token_fusion,
    tome_merge,
)
from vitrt.plugins.token_fusion.spec import (
    MIN_TOKENS_LEFT,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    Pooling,
    TokenFusionAttrs,
    output_tokens,
    removed_tokens,
)

TIGHT = {"atol": 1e-6, "rtol": 1e-6}


def _inputs(b: int = 2, n: int = 33, c: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, c, generator=g)
    info = torch.softmax(torch.randn(b, n, generator=g) * 2, dim=-1)
    size = torch.randint(1, 5, (b, n), generator=g).float()
    return x.to(dtype), x.to(dtype), info.to(dtype), size.to(dtype)


def test_spec_identity() -> None:
    assert (PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) == ("TokenFusion", "1", "vitrt")
    attrs = TokenFusionAttrs(r=16).onnx_attributes()
    assert attrs["r"] == 16 and attrs["pooling"] == 1 and attrs["bidirectional"] == 1
    assert attrs["plugin_namespace"] == "vitrt"


def test_r0_is_identity() -> None:
    x, metric, info, size = _inputs()
    x_f, size_f, dest = token_fusion(x, metric, info, size, TokenFusionAttrs(r=0))
    torch.testing.assert_close(x_f, x, **TIGHT)
    torch.testing.assert_close(size_f, size)
    assert torch.equal(dest, torch.arange(x.shape[1]).expand_as(dest))


@pytest.mark.parametrize("bidirectional", [0, 1])
@pytest.mark.parametrize("pooling", list(Pooling))
def test_sizes_preserved_and_class_token_first(bidirectional: int, pooling: Pooling) -> None:
    x, metric, info, size = _inputs()
    attrs = TokenFusionAttrs(r=11, bidirectional=bidirectional, pooling=pooling)
    x_f, size_f, dest = token_fusion(x, metric, info, size, attrs)
    assert x_f.shape == (2, 33 - 11, 16) and size_f.shape == (2, 22) and dest.shape == (2, 33)
    torch.testing.assert_close(size_f.sum(-1), size.sum(-1))
    # every output slot receives at least one token, the class token alone lands in slot 0
    assert all(torch.unique(d).numel() == 22 for d in dest)
    assert (dest[:, 0] == 0).all() and ((dest[:, 1:] == 0).sum() == 0)
    torch.testing.assert_close(x_f[:, 0], x[:, 0], **TIGHT)
    torch.testing.assert_close(size_f[:, 0], size[:, 0])


def test_caps() -> None:
    assert removed_tokens(197, 16) == 16
    assert removed_tokens(197, 150) == 98  # at most (N-1)//2
    assert removed_tokens(21, 16) == 10 and removed_tokens(11, 16) == 1  # at least 10 left
    assert removed_tokens(10, 4) == 0 and removed_tokens(5, 4) == 0
    assert removed_tokens(197, 0.35) == 68 and removed_tokens(129, 0.35) == 44  # int((N-1) * r)
    assert removed_tokens(197, 0.9) == 98
    for n in range(1, 80):
        for r in (1, 3, 16, 64, 0.1, 0.35, 0.5):
            k = removed_tokens(n, r)
            assert 0 <= k <= max((n - 1) // 2, 0) and (k == 0 or n - k >= MIN_TOKENS_LEFT)
    assert output_tokens(197, TokenFusionAttrs(r=16)) == 181
    with pytest.raises(ValueError):
        output_tokens(21, TokenFusionAttrs(r=16))


def test_fractional_r_in_op() -> None:
    x, metric, info, size = _inputs(n=41)
    attrs = TokenFusionAttrs(r=removed_tokens(41, 0.25))
    x_f, size_f, _ = token_fusion(x, metric, info, size, attrs)
    assert x_f.shape[1] == 41 - 10 and size_f.shape[1] == 31


def _hand_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # 5 tokens, class token at 0. Set A = tokens 0, 2, 4; set B = tokens 1, 3.
    keys = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])[None]
    x = torch.tensor([[float(i), 10.0 * i] for i in range(5)])[None]
    size = torch.tensor([[1.0, 2.0, 1.0, 1.0, 3.0]])
    return x, keys, size


def test_tome_hand_worked() -> None:
    """ToMe by hand. Cosines A x B: token 2 -> (1: 0, 3: 0.8), token 4 -> (1: 1.0, 3: 0.6); the class
    token never merges. Best edges: 4->1 (1.0), then 2->3 (0.8)."""
    x, keys, size = _hand_example()
    # r = 1: token 4 merges into token 1. Output [x0, x2 | x1+x4, x3] (unmerged A, then all of B).
    x_f, size_f = tome_merge(x, keys, size, r=1)
    merged_14 = (2 * torch.tensor([1.0, 10.0]) + 3 * torch.tensor([4.0, 40.0])) / 5  # [2.8, 28]
    expected = torch.stack(
        [torch.tensor([0.0, 0.0]), torch.tensor([2.0, 20.0]), merged_14, torch.tensor([3.0, 30.0])]
    )
    torch.testing.assert_close(x_f[0], expected, **TIGHT)
    torch.testing.assert_close(size_f[0], torch.tensor([1.0, 1.0, 5.0, 1.0]))
    # r = 2: also token 2 into token 3 (equal sizes: plain mean). Output [x0 | x1+x4, x2+x3].
    x_f, size_f = tome_merge(x, keys, size, r=2)
    expected = torch.stack([torch.tensor([0.0, 0.0]), merged_14, torch.tensor([2.5, 25.0])])
    torch.testing.assert_close(x_f[0], expected, **TIGHT)
    torch.testing.assert_close(size_f[0], torch.tensor([1.0, 5.0, 2.0]))


def test_bidirectional_hand_worked() -> None:
    """MCTF bidirectional, similarity only (scores (cos+1)/2), r = 2: r//2 = 1 A->B merge (4->1,
    score 1.0), then 1 B->A merge onto the unmerged A tokens {0 (protected), 2}: B token 3 scores 0.9
    with token 2, B token 1 (carrying 4) 0.5, so 3 merges into 2. Output [x0, x2+x3 | x1+x4]."""
    x, keys, size = _hand_example()
    attrs = TokenFusionAttrs(r=2, tau_info=0, tau_size=0, pooling=Pooling.SIZE)
    x_f, size_f, dest = token_fusion(x, keys, torch.ones_like(size), size, attrs)
    assert dest.tolist() == [[0, 2, 1, 1, 2]]
    expected = torch.tensor([[0.0, 0.0], [2.5, 25.0], [2.8, 28.0]])
    torch.testing.assert_close(x_f[0], expected, **TIGHT)
    torch.testing.assert_close(size_f[0], torch.tensor([1.0, 2.0, 5.0]))


def test_score_factors() -> None:
    """Each factor by hand on 4 tokens: informativeness favours tokens that receive little
    attention, size favours small tokens."""
    metric = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]])
    info = torch.tensor([[0.4, 0.1, 0.2, 0.3]])
    size = torch.tensor([[1.0, 2.0, 4.0, 1.0]])
    s = fusion_scores(metric, info, size, tau_sim=1, tau_info=2, tau_size=4, num_protected=0)
    cos = torch.tensor([[0.0, 2**-0.5], [2**-0.5, 0.0]])  # A = tokens 0, 2; B = tokens 1, 3
    inv_i = torch.tensor([2.5, 10.0, 5.0, 10 / 3]) / 10.0
    inv_s = torch.tensor([1.0, 0.5, 0.25, 1.0])
    w_info = (inv_i[[0, 2], None] * inv_i[None, [1, 3]]) ** 0.5
    w_size = (inv_s[[0, 2], None] * inv_s[None, [1, 3]]) ** 0.25
    torch.testing.assert_close(s[0], (cos + 1) / 2 * w_info * w_size, **TIGHT)
    s = fusion_scores(metric, info, size, tau_sim=0, tau_info=0, tau_size=0, num_protected=1)
    assert (s[0, 0] < -1e30).all() and (s[0, 1] == 1).all()


def test_batch_independence() -> None:
    x, metric, info, size = _inputs(b=3, n=29)
    attrs = TokenFusionAttrs(r=9)
    x_f, size_f, dest = token_fusion(x, metric, info, size, attrs)
    for i in range(3):
        xi, si, di = token_fusion(x[i : i + 1], metric[i : i + 1], info[i : i + 1], size[i : i + 1], attrs)
        torch.testing.assert_close(x_f[i : i + 1], xi, **TIGHT)
        torch.testing.assert_close(size_f[i : i + 1], si)
        assert torch.equal(dest[i : i + 1], di)


def test_scatter_and_onehot_agree() -> None:
    x, metric, info, size = _inputs(n=24)
    attrs = TokenFusionAttrs(r=7)
    a = token_fusion(x, metric, info, size, attrs, method="scatter")
    b = token_fusion(x, metric, info, size, attrs, method="onehot")
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, **TIGHT)
    m = merge_matrix(a[2], 24 - 7)
    assert m.shape == (2, 17, 24) and torch.equal(m.sum(1), torch.ones(2, 24))
    attn = torch.softmax(torch.randn(2, 3, 24, 24), dim=-1)
    w = pooling_weights(info, size, Pooling.ATTN_SIZE)
    fa = merge_attention(attn, a[2], w, 17)
    torch.testing.assert_close(fa, merge_attention(attn, a[2], w, 17, method="onehot"), **TIGHT)
    torch.testing.assert_close(fa.sum(-1), torch.ones(2, 3, 17), **TIGHT)  # rows stay distributions
    torch.testing.assert_close(merge_sizes(size, a[2], 17, "onehot"), a[1])
    torch.testing.assert_close(merge_tokens(x, a[2], w, 17, "onehot"), a[0], **TIGHT)


def test_float16_no_nan() -> None:
    x, metric, info, size = _inputs(n=33)
    attrs = TokenFusionAttrs(r=12)
    # attention that underflows in float16 for some tokens: 1/info must not produce inf/NaN
    info = info.clone()
    info[:, 5] = 0.0
    ref = token_fusion(x, metric, info, size, attrs)
    half = token_fusion(x.half(), metric.half(), info.half(), size.half(), attrs)
    assert half[0].dtype == torch.float16 and torch.isfinite(half[0]).all() and torch.isfinite(half[1]).all()
    torch.testing.assert_close(half[1].float(), ref[1])
    torch.testing.assert_close(half[0].float(), ref[0], atol=1e-2, rtol=1e-2)


def test_matching_needs_no_grad_and_merge_keeps_it() -> None:
    x, _metric, info, size = _inputs(n=17)
    x.requires_grad_(True)
    x_f, _, dest = token_fusion(x, x, info, size, TokenFusionAttrs(r=4))
    assert not dest.requires_grad
    x_f.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bipartite_matching_is_a_valid_map() -> None:
    g = torch.Generator().manual_seed(3)
    for n in (11, 12, 40, 41):
        scores = fusion_scores(torch.randn(2, n, 8, generator=g), None, None)
        for r in (1, 2, 5, removed_tokens(n, 1000)):
            for bidirectional in (True, False):
                dest = bipartite_matching(scores, r, bidirectional)
                assert dest.min() == 0 and dest.max() == n - r - 1
                assert all(torch.unique(d).numel() == n - r for d in dest)
