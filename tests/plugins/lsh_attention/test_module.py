"""Attention-core modules, the op spec, and model integration (create_model(..., attention=...))."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vitrt import create_model, load_checkpoint
from vitrt.errors import ConfigError
from vitrt.models.layers import DenseAttention
from vitrt.plugins.lsh_attention.integration import PAPER_BUDGETS, Budget, apply_attention, resolve_attention
from vitrt.plugins.lsh_attention.module import (
    LSHAttention,
    PerformerAttention,
    ScatterbrainAttention,
    draw_projection,
)
from vitrt.plugins.lsh_attention.reference import scatterbrain_attention
from vitrt.plugins.lsh_attention.spec import (
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    Mode,
    ScatterbrainAttrs,
    output_shape,
    padded_length,
)


def test_spec_attributes_and_rules() -> None:
    attrs = ScatterbrainAttrs(Mode.SCATTERBRAIN, cluster_size=24, n_hashes=2, n_features=24, scale=147**-0.5)
    onnx = attrs.onnx_attributes()
    assert onnx["mode"] == 0 and type(onnx["mode"]) is int
    assert (
        (onnx["plugin_version"], onnx["plugin_namespace"])
        == (PLUGIN_VERSION, PLUGIN_NAMESPACE)
        == ("1", "vitrt")
    )
    assert PLUGIN_NAME == "ScatterbrainAttention"
    assert attrs.projection_rows == 12
    assert attrs.budget_per_query() == 96  # about 3136 / 32, the paper's budget
    assert ScatterbrainAttrs(Mode.LSH, 49, 2, 0, 0.1).budget_per_query() == 98
    assert ScatterbrainAttrs(Mode.LSH, 49, 2, 0, 0.1).input_names() == ("q", "k", "v", "hash_vectors")
    assert ScatterbrainAttrs(Mode.PERFORMER, 0, 0, 48, 0.1).input_names()[3] == ""
    assert output_shape((2, 3, 50, 16), (2, 3, 50, 12)) == (2, 3, 50, 12)
    assert [padded_length(n, 24) for n in (1, 24, 25, 3136)] == [24, 24, 48, 3144]
    for bad in (
        {"cluster_size": 0},
        {"n_features": 7},
        {"scale": 0.0},
        {"mode": 5},
    ):
        kw = {"mode": 0, "cluster_size": 4, "n_hashes": 2, "n_features": 8, "scale": 0.1, **bad}
        with pytest.raises((ConfigError, ValueError)):
            ScatterbrainAttrs(**kw)  # type: ignore[arg-type]


def test_projection_rows_are_orthogonal_gaussian() -> None:
    w = draw_projection(100, 16, torch.Generator().manual_seed(0))
    assert w.shape == (100, 16)
    block = w[:16] / w[:16].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.t(), torch.eye(16), atol=1e-5, rtol=0)
    # Row norms are chi(16)-distributed (mean about 3.94), not all equal.
    assert 3.0 < float(w.norm(dim=1).mean()) < 5.0 and float(w.norm(dim=1).std()) > 0.1


def test_core_buffers_are_seeded_saved_and_optional() -> None:
    a = ScatterbrainAttention(16, cluster_size=4, n_hashes=3, n_features=10, seed=5)
    assert a.hash_vectors.shape == (3, 18) and a.projection.shape == (5, 16)
    assert set(a.state_dict()) == set(ScatterbrainAttention.OPTIONAL_STATE) == {"hash_vectors", "projection"}
    same = ScatterbrainAttention(16, cluster_size=4, n_hashes=3, n_features=10, seed=5)
    torch.testing.assert_close(same.state_dict(), a.state_dict(), rtol=0, atol=0)
    # One seed gives the three cores the same draws (fair baselines).
    torch.testing.assert_close(
        LSHAttention(16, cluster_size=4, n_hashes=3, seed=5).hash_vectors, a.hash_vectors
    )
    torch.testing.assert_close(PerformerAttention(16, n_features=10, seed=5).projection, a.projection)

    other = ScatterbrainAttention(16, cluster_size=4, n_hashes=3, n_features=10, seed=6)
    assert not torch.equal(other.hash_vectors, a.hash_vectors)
    other.load_state_dict(a.state_dict())
    q, k, v = (torch.randn(2, 2, 19, 16) for _ in range(3))
    torch.testing.assert_close(other(q, k, v, 0.3), a(q, k, v, 0.3), rtol=0, atol=0)
    expected = scatterbrain_attention(
        q, k, v, hash_vectors=a.hash_vectors, projection=a.projection, cluster_size=4, scale=0.3
    )
    torch.testing.assert_close(a(q, k, v, 0.3), expected)
    assert a.attrs(0.3) == ScatterbrainAttrs(Mode.SCATTERBRAIN, 4, 3, 10, 0.3)


def test_fixed_tensors_stay_float32_in_a_half_model() -> None:
    """model.half() leaves the hash vectors and the projection float32 with their values (float16 would
    round them: other hashes than the float32 model's, and a conversion per call on the kernels); the
    other parameters do turn float16, and the half model's cores hash as the float32 model's do."""
    model = create_model("t2t_vit_t_14", attention="scatterbrain", img_size=64)
    cores = [m for m in model.modules() if isinstance(m, ScatterbrainAttention)]
    assert len(cores) == 2
    before = [(c.hash_vectors.clone(), c.projection.clone()) for c in cores]
    assert any(not torch.equal(t.half().float(), t) for pair in before for t in pair)  # float16 would round
    model.half()
    for core, (hv, proj) in zip(cores, before, strict=True):
        assert core.hash_vectors.dtype == core.projection.dtype == torch.float32
        assert torch.equal(core.hash_vectors, hv) and torch.equal(core.projection, proj)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    model.float()
    assert all(torch.equal(c.hash_vectors, hv) for c, (hv, _) in zip(cores, before, strict=True))
    q, k, v = (torch.randn(1, 1, 50, 64) for _ in range(3))
    got = cores[0](q.half(), k.half(), v.half(), 0.1)
    want = cores[0](q.half().float(), k.half().float(), v.half().float(), 0.1)
    torch.testing.assert_close(got.float(), want, rtol=2e-3, atol=2e-3 * float(want.abs().max()))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ScatterbrainAttention(16, cluster_size=0, n_hashes=2, n_features=8),
        lambda: ScatterbrainAttention(16, cluster_size=4, n_hashes=2, n_features=7),
        lambda: LSHAttention(16, cluster_size=4, n_hashes=0),
        lambda: PerformerAttention(0, n_features=8),
    ],
)
def test_core_config_errors(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    return create_model("t2t_vit_t_14", img_size=32)


def test_presets_resolve_to_the_paper_budgets() -> None:
    cfg = resolve_attention("scatterbrain")
    assert cfg.where == "t2t"
    assert cfg.budgets == {"attention1": Budget(24, 2, 24), "attention2": Budget(6, 2, 6)}
    assert resolve_attention("lsh").budgets == PAPER_BUDGETS["lsh"]
    assert resolve_attention("performer").budgets["attention1"] == Budget(0, 0, 48)
    cfg = resolve_attention({"method": "lsh", "cluster_size": {"attention2": 16}, "n_hashes": 3, "seed": 4})
    assert cfg.budgets == {"attention1": Budget(49, 3, 0), "attention2": Budget(16, 3, 0)} and cfg.seed == 4
    cfg = resolve_attention({"where": "both", "cluster_size": {"blocks": 7}, "n_features": {"blocks": 8}})
    assert cfg.budgets["blocks"] == Budget(7, 2, 8) and cfg.budgets["attention1"] == Budget(24, 2, 24)
    # 0 for what a method does not use, as PAPER_BUDGETS writes it, stays accepted
    cfg = resolve_attention({"method": "performer", "cluster_size": 0, "n_hashes": 0, "n_features": 48})
    assert cfg.budgets["attention1"] == Budget(0, 0, 48)
    assert resolve_attention({"method": "lsh", "n_features": 0}).budgets["attention2"] == Budget(12, 2, 0)


@pytest.mark.parametrize(
    ("attention", "match"),
    [
        ("scaterbrain", "did you mean 'scatterbrain'"),
        ("preformer", "did you mean 'performer'"),
        ({"method": "lhs"}, "did you mean 'lsh'"),
        ({"clustr_size": 4}, "did you mean 'cluster_size'"),
        ({"where": "block"}, "did you mean 'blocks'"),
        ({"where": "blocks"}, r"needs cluster_size and n_features.*'cluster_size': \{'blocks'"),
        ({"cluster_size": {"attn1": 4}}, "unknown entries"),
        ({"cluster_size": "big"}, "must be an int or a mapping"),
        ({"method": "lsh", "cluster_size": 0}, r"'cluster_size' must be >= 1, got 0"),
        ({"n_hashes": -2}, r"'n_hashes' must be >= 1, got -2"),
        ({"n_features": {"attention2": 0}}, r"'n_features' on 'attention2' must be >= 1, got 0"),
        ({"cluster_size": {"attention1": 2.5}}, r"'cluster_size' on 'attention1' must be an int, got 2.5"),
        ({"n_features": 5}, "attention1.*n_features must be an even int"),
        (3, "must be None, 'dense', a preset name"),
    ],
)
def test_bad_attention_configs(attention: object, match: str, small_model: nn.Module) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_attention(small_model, attention)
    assert all(
        type(a.attn.core) is DenseAttention
        for a in small_model.tokens_to_token.children()
        if hasattr(a, "attn")
    )


def test_performer_t2t_models_refuse_t2t_replacement() -> None:
    with pytest.raises(ConfigError, match=r"'performer' T2T module.*t2t_vit_t_14"):
        create_model("t2t_vit_7", img_size=32, attention="scatterbrain")
    model = create_model(
        "t2t_vit_7", img_size=32, attention={"where": "blocks", "cluster_size": 2, "n_features": 4}
    )
    assert all(isinstance(b.attn.core, ScatterbrainAttention) for b in model.blocks)


OFFICIAL_LAYOUT = Path(__file__).parents[2] / "models" / "fixtures" / "official_state_dict_layout.json"


@pytest.mark.parametrize("attention", ["scatterbrain", "lsh", "performer"])
def test_t2t_vit_t_14_with_replaced_token_attentions(attention: str) -> None:
    model = create_model("t2t_vit_t_14", img_size=64, attention=attention)
    t2t = model.tokens_to_token
    cores = (t2t.attention1.attn.core, t2t.attention2.attn.core)
    expected = {"scatterbrain": ScatterbrainAttention, "lsh": LSHAttention, "performer": PerformerAttention}
    assert all(isinstance(c, expected[attention]) for c in cores)
    assert [c.head_dim for c in cores] == [64, 64]
    assert all(isinstance(b.attn.core, DenseAttention) for b in model.blocks)
    # The token attentions keep their own scale (input_dim^-0.5), which the core receives.
    assert (t2t.attention1.attn.scale, t2t.attention2.attn.scale) == (147**-0.5, 576**-0.5)

    # An official checkpoint (its key layout, recorded from the official code) has no core buffers
    # and loads strictly; the seeded buffers stay.
    official_keys = {name for name, _ in json.loads(OFFICIAL_LAYOUT.read_text())["t2t_vit_t_14"]}
    state = model.state_dict()
    buffers = {k: v.clone() for k, v in state.items() if k not in official_keys}
    assert set(buffers) == model.optional_state_keys() and len(buffers) == (
        4 if attention == "scatterbrain" else 2
    )
    load_checkpoint(
        model, {"state_dict_ema": {k: torch.zeros_like(v) for k, v in state.items() if k in official_keys}}
    )
    for key, value in buffers.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    load_checkpoint(model, {"state_dict_ema": {k: v for k, v in state.items() if k in official_keys}})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1000) and torch.isfinite(y).all()
    if attention != "scatterbrain":
        return
    # A checkpoint of this model (buffers included) round-trips into a model drawn with another seed.
    seed9 = create_model("t2t_vit_t_14", img_size=64, attention={"method": attention, "seed": 9})
    assert not torch.equal(seed9.tokens_to_token.attention1.attn.core.hash_vectors, cores[0].hash_vectors)
    load_checkpoint(seed9, model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(seed9(x), y, rtol=0, atol=0)


def test_paper_budget_at_224_and_block_replacement() -> None:
    model = create_model(
        "t2t_vit_t_14",
        attention={"where": "both", "cluster_size": {"blocks": 16}, "n_features": {"blocks": 16}},
    )
    t2t = model.tokens_to_token
    a1, a2 = t2t.attention1.attn.core, t2t.attention2.attn.core
    assert (a1.cluster_size, a1.n_hashes, a1.n_features, a1.projection.shape) == (24, 2, 24, (12, 64))
    assert (a2.cluster_size, a2.n_hashes, a2.n_features, a2.projection.shape) == (6, 2, 6, (3, 64))
    assert [b.attn.core.seed for b in model.blocks] == list(range(2, 16))
    assert model.blocks[0].attn.core.cluster_size == 16 and model.blocks[0].attn.core.head_dim == 64
    assert model.attention_config.to_dict()["budgets"]["blocks"]["n_features"] == 16
