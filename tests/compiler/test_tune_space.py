"""The search space: only valid configurations (token counts as the models compute them), seeded samples."""

from __future__ import annotations

import pytest

from vitrt.compiler import tune_space
from vitrt.compiler.tune_space import (
    SpaceFacts,
    TrialConfig,
    attention_candidates,
    baselines,
    fusion_candidates,
    fusion_schedule,
    sample_trials,
    search_space,
)
from vitrt.errors import ConfigError


def test_the_token_cap_mirrors_the_op_spec() -> None:
    from vitrt.plugins.token_fusion.spec import MIN_TOKENS_LEFT, removed_tokens

    assert tune_space.MIN_TOKENS_LEFT == MIN_TOKENS_LEFT
    for n in (11, 17, 65, 197):
        for r in (1, 3, 7, 16, 32, 98, 0.25, 0.35, 0.5):
            assert tune_space.removed(n, r) == removed_tokens(n, r)


def test_schedules_refuse_what_the_caps_would_change() -> None:
    assert fusion_schedule([7, 0, 0, 0], 17) == [17, 10, 10, 10, 10]
    assert fusion_schedule([8, 0, 0, 0], 17) is None  # 17 - 8 < 10 tokens left
    assert fusion_schedule([3, 1, 1, 1], 17) == [17, 14, 13, 12, 11]
    assert fusion_schedule([4, 4, 0, 0], 17) is None  # the second block may remove only 3
    assert fusion_schedule([0, 0.35, 0.35, 0.35], 65) == [65, 65, 43, 29, 20]


ALL_RULES = {"uniform", "single", "depth-relative", "decreasing"}


@pytest.mark.parametrize(
    ("arch", "tokens", "rules"),
    [
        ({"img_size": 64, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2}, 65, ALL_RULES),
        # 17 tokens, 6 blocks: a quarter of the tokens at 1/4, 1/2 and 3/4 of the depth would leave < 10
        (
            {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 6, "num_heads": 2},
            17,
            ALL_RULES - {"depth-relative"},
        ),
    ],
)
def test_every_fusion_candidate_gives_the_models_own_schedule(
    arch: dict[str, int], tokens: int, rules: set[str]
) -> None:
    from vitrt.models.deit import VisionTransformer
    from vitrt.plugins.token_fusion.integration import apply_fusion

    facts = SpaceFacts(depth=arch["depth"], num_tokens=tokens)
    candidates = fusion_candidates(facts)
    assert len(candidates) >= 10
    assert {rule for _, rule in candidates} == rules
    assert {f["preset"] for f, _ in candidates} == {"tome", "mctf"}
    for fusion, _rule in candidates:
        model = VisionTransformer(num_classes=10, **arch)
        assert model.num_tokens == tokens
        apply_fusion(model, fusion)  # a ConfigError here would be an invalid candidate
        assert model.token_schedule() == fusion_schedule(fusion["r"], tokens), fusion
        assert model.token_schedule()[-1] >= tune_space.MIN_TOKENS_LEFT


def test_scatterbrain_budgets_only_for_transformer_t2t_models_and_all_buildable() -> None:
    from vitrt.compiler.tune import space_facts
    from vitrt.models.t2t_vit import T2TViT
    from vitrt.plugins.lsh_attention.integration import apply_attention

    assert attention_candidates(SpaceFacts(4, 17)) == []
    # t2t_vit_t_14's "transformer" T2T module, with a small backbone (the T2T module is what is replaced)
    model = T2TViT(img_size=64, tokens_type="transformer", num_classes=10, embed_dim=64, depth=2, num_heads=2)
    facts = space_facts(model)
    assert facts == SpaceFacts(depth=2, num_tokens=17, t2t_tokens=(256, 64))
    budgets = attention_candidates(facts)
    # 2 cluster scales x 1-2 hashes x 2 feature counts, less the duplicates at this small size
    assert len(budgets) == 6 and all(budgets.count(b) == 1 for b in budgets)
    assert {b["n_hashes"] for b in budgets} == {1, 2}
    for attention in budgets:
        apply_attention(model, attention)  # ConfigError for an odd feature count or a bad cluster
        cores = [model.tokens_to_token.attention1.attn.core, model.tokens_to_token.attention2.attn.core]
        assert [c.cluster_size for c in cores] == [
            attention["cluster_size"][s] for s in ("attention1", "attention2")
        ]
    assert search_space(facts) and all(c.attention in [None, *budgets] for c in search_space(facts))


def test_samples_are_seeded_and_start_with_the_baselines() -> None:
    facts = SpaceFacts(depth=4, num_tokens=65)
    a, b, c = (
        sample_trials(facts, 16, seed=0),
        sample_trials(facts, 16, seed=0),
        sample_trials(facts, 16, seed=1),
    )
    assert a == b and a != c
    assert [t.role for t in a[:2]] == ["baseline-fp32", "baseline-int8"]
    assert (a[0].fusion, a[0].precision, a[1].fusion, a[1].precision) == (None, "fp32", None, "int8")
    assert len(a) == 16 and len({t.name for t in a}) == 16
    assert {t.rule for t in a[2:]} >= {"uniform", "single", "depth-relative", "decreasing"}  # rules covered
    space = search_space(facts)
    assert all(t in space for t in a[2:]) and len(space) == 94  # 47 fusions x 2 precisions
    assert len(sample_trials(facts, 1000)) == 2 + len(space)  # never more than the space
    with pytest.raises(ConfigError, match="at least 2"):
        sample_trials(facts, 1)
    # precisions bound the baselines too: FP32 alone needs (and builds) no INT8 baseline
    fp32 = sample_trials(facts, 5, seed=0, precisions=("fp32",))
    assert [t.role for t in fp32[:1]] == ["baseline-fp32"] and len(fp32) == 5
    assert {t.precision for t in fp32} == {"fp32"} and not any(t.role == "baseline-int8" for t in fp32)
    assert [b.role for b in baselines(("int8",))] == ["baseline-int8"]
    assert len(sample_trials(facts, 1, precisions=("int8",))) == 1
    with pytest.raises(
        ConfigError, match=r"^trials = 0: a search needs at least 1 \(the unfused FP32 baseline\)$"
    ):
        sample_trials(facts, 0, precisions=("fp32",))
    with pytest.raises(ConfigError, match="choose from"):
        search_space(facts, ["fp8"])


def test_a_config_round_trips_through_its_dict() -> None:
    cfg = TrialConfig(fusion={"preset": "tome", "r": [0, 0, 16, 0]}, precision="int8", rule="single")
    assert cfg.name == "tome[0,0,16,0]+int8"
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
