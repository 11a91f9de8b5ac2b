"""The search space of ``vitrt tune``: token-fusion schedules, Scatterbrain budgets and precisions.

Every configuration this module yields is valid for the model it was made for: each fusion block's
requested r is exactly what the caps (``plugins.token_fusion.spec.removed_tokens``: at most
(N - 1) // 2 per block, at least 10 tokens left) let it remove at the block's token count, so no
configuration silently becomes another one; Scatterbrain budgets are offered only for models with a
"transformer" T2T module (t2t_vit_t_*), with even feature counts and clusters no larger than the
attention's token count. ``sample_trials`` draws a seeded subset, baselines first.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vitrt.errors import ConfigError

FUSION_METHODS = ("tome", "mctf")
PRECISIONS = ("fp32", "int8")
MIN_TOKENS_LEFT = 10
"""Mirrors ``plugins.token_fusion.spec.MIN_TOKENS_LEFT`` (checked equal in the tests), so that this
module imports no torch."""


@dataclass(frozen=True)
class SpaceFacts:
    """What the search space needs to know of a model.

    depth: transformer blocks; num_tokens: tokens entering the first block (class token included);
    t2t_tokens: tokens of the two T2T attentions (attention1, attention2) of a "transformer" T2T module,
    or None where Scatterbrain does not apply (DeiT, performer T2T).
    """

    depth: int
    num_tokens: int
    t2t_tokens: tuple[int, int] | None = None


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search: options as ``vitrt.create_model`` / ``export_onnx`` take them.

    fusion: None (no fusion) or a token-fusion dict ({"preset": "tome", "r": [..per block..]});
    attention: None (dense) or a Scatterbrain dict; precision: "fp32" or "int8"; role: "baseline-fp32",
    "baseline-int8" or "search".
    """

    fusion: dict[str, Any] | None = None
    attention: dict[str, Any] | None = None
    precision: str = "fp32"
    role: str = "search"
    rule: str = field(default="none", compare=False)
    """How the fusion schedule was made ("none", "uniform", "single", "depth-relative", "decreasing")."""

    @property
    def name(self) -> str:
        """A short readable id: ``tome[0,4,4,0]+sb(24/6,h2,f24/6)+int8``."""
        parts = []
        if self.fusion is None:
            parts.append("unfused")
        else:
            r = self.fusion["r"]
            if isinstance(r, Sequence):
                r_text = ",".join(str(v) for v in r)
            else:
                r_text = f"{r}@{','.join(str(b) for b in self.fusion.get('blocks', []))}"
            parts.append(f"{self.fusion['preset']}[{r_text}]")
        if self.attention is not None:
            c, h, f = (self.attention[k] for k in ("cluster_size", "n_hashes", "n_features"))
            parts.append(f"sb({c['attention1']}/{c['attention2']},h{h},f{f['attention1']}/{f['attention2']})")
        parts.append(self.precision)
        return "+".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "rule": self.rule,
            "fusion": self.fusion,
            "attention": self.attention,
            "precision": self.precision,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        return cls(
            fusion=data.get("fusion"),
            attention=data.get("attention"),
            precision=data.get("precision", "fp32"),
            role=data.get("role", "search"),
            rule=data.get("rule", "none"),
        )


def removed(n_in: int, r: float) -> int:
    """Tokens a block removes from ``n_in`` (class token protected) for a requested r: the op's caps."""
    count = int((n_in - 1) * r) if 0 < r < 1 else int(r)
    return max(min(count, (n_in - 1) // 2, n_in - MIN_TOKENS_LEFT), 0)


def fusion_schedule(r: Sequence[float], num_tokens: int) -> list[int] | None:
    """Tokens entering each block and leaving the last (len(r) + 1 counts) for per-block r, or None when
    some block would remove fewer tokens than asked (the caps would change the configuration)."""
    counts = [num_tokens]
    for value in r:
        n = counts[-1]
        got = removed(n, value) if value else 0
        wanted = int((n - 1) * value) if 0 < value < 1 else int(value)
        if got != wanted or (value and got == 0):
            return None
        counts.append(n - got)
    return counts


def fusion_candidates(facts: SpaceFacts) -> list[tuple[dict[str, Any], str]]:
    """Valid (fusion dict, rule) pairs for a model: per-block r lists made by four rules.

    uniform: the same r in every block from the first fusing one (ToMe: block 0, MCTF: block 1, as the
    presets); single: one block (any from the first fusing one) removes 4/8 ... 8/8 of what it may;
    depth-relative: a fraction of the mergeable tokens (0.25 / 0.35 / 0.5) in the blocks at 1/4, 1/2 and
    3/4 of the depth (the mctf-fast rule); decreasing: r halving block by block from the largest first
    step. Each is kept only if every block can remove exactly its r (``fusion_schedule``), deduplicated per
    method.
    """
    depth, n0 = facts.depth, facts.num_tokens
    budget = n0 - MIN_TOKENS_LEFT
    if depth < 1 or budget < 1:
        return []
    out: list[tuple[dict[str, Any], str]] = []
    for method in FUSION_METHODS:
        first = 0 if method == "tome" else 1
        rules: list[tuple[list[float], str]] = []
        span = depth - first
        if span >= 1:
            top = budget // span
            for r in sorted({max(1, top // 4), max(1, top // 2), top}):
                if r >= 1:
                    rules.append(([0.0] * first + [float(r)] * span, "uniform"))
        # every block, not only early / middle / late: on the digits T2T-ViT at 128 the best single step
        # was block 2 of 6 (README, Tuning); the rules are sampled round-robin, so a wider rule does not
        # crowd out the others
        cap = min((n0 - 1) // 2, budget)
        for block in range(first, depth):
            for r in sorted({max(1, cap * k // 8) for k in (4, 5, 6, 7, 8)}):
                rules.append(([r if i == block else 0 for i in range(depth)], "single"))
        quarter = sorted({depth // 4, depth // 2, 3 * depth // 4} - ({0} if first else set()))
        for frac in (0.25, 0.35, 0.5):
            rules.append(([frac if i in quarter else 0 for i in range(depth)], "depth-relative"))
        first_step = min((n0 - 1) // 2, budget)
        for start in sorted({first_step, max(1, first_step // 2)}):
            r_list: list[float] = [0] * depth
            value, left = start, budget
            for i in range(first, depth):
                step = min(value, left)
                r_list[i] = step
                left -= step
                value = max(value // 2, 1)
            rules.append((r_list, "decreasing"))
        seen: set[str] = set()
        for r_list, rule in rules:
            if not any(r_list) or fusion_schedule(r_list, n0) is None:
                continue
            key = json.dumps(r_list)
            if key in seen:
                continue
            seen.add(key)
            clean = [int(v) if float(v).is_integer() else float(v) for v in r_list]
            out.append(({"preset": method, "r": clean}, rule))
    return out


def attention_candidates(facts: SpaceFacts) -> list[dict[str, Any]]:
    """Scatterbrain budgets for the two T2T attentions of a "transformer" T2T module, [] elsewhere.

    Around the paper's (cluster 24 / 6, 2 hashes, 24 / 6 features at 3136 / 784 tokens), scaled with the
    token counts: cluster sizes of N/130 and N/65 (attention1) with a quarter of that for attention2,
    1 or 2 hash rounds, features equal to the cluster size or half of it (even, >= 2).
    """
    if facts.t2t_tokens is None:
        return []
    n1, n2 = facts.t2t_tokens
    out = []
    for scale in (130, 65):
        c1 = max(2, min(n1, round(n1 / scale)))
        c2 = max(2, min(n2, round(n2 / scale)))
        for hashes in (1, 2):
            for feature_scale in (1, 2):
                f1 = max(2, (c1 // feature_scale) // 2 * 2)
                f2 = max(2, (c2 // feature_scale) // 2 * 2)
                cand = {
                    "method": "scatterbrain",
                    "where": "t2t",
                    "cluster_size": {"attention1": c1, "attention2": c2},
                    "n_hashes": hashes,
                    "n_features": {"attention1": f1, "attention2": f2},
                }
                if cand not in out:
                    out.append(cand)
    return out


def baselines(precisions: Sequence[str] = PRECISIONS) -> list[TrialConfig]:
    """The trials every search holds: the unfused dense model in each of ``precisions`` (FP32, INT8), so
    that no precision the user left out can be built, timed or chosen."""
    both = [TrialConfig(role="baseline-fp32"), TrialConfig(precision="int8", role="baseline-int8")]
    return [b for b in both if b.precision in precisions]


def search_space(facts: SpaceFacts, precisions: Sequence[str] = PRECISIONS) -> list[TrialConfig]:
    """Every non-baseline configuration: (fusion or none) x (attention or dense) x precision, valid for
    ``facts`` (the unfused dense ones are the baselines, left out here)."""
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ConfigError(f"precisions {list(precisions)}: choose from {', '.join(PRECISIONS)}")
    fusions: list[tuple[dict[str, Any] | None, str]] = [(None, "none"), *fusion_candidates(facts)]
    attentions: list[dict[str, Any] | None] = [None, *attention_candidates(facts)]
    out = []
    for fusion, rule in fusions:
        for attention in attentions:
            if fusion is None and attention is None:
                continue
            for precision in precisions:
                out.append(TrialConfig(fusion=fusion, attention=attention, precision=precision, rule=rule))
    return out


def sample_trials(
    facts: SpaceFacts, trials: int, seed: int = 0, precisions: Sequence[str] = PRECISIONS
) -> list[TrialConfig]:
    """``trials`` configurations: the baselines of ``precisions``, then a seeded sample of ``search_space``
    that covers each fusion rule before repeating one (round-robin over the rules in a seeded order). The
    same ``facts``, ``trials`` and ``seed`` give the same list. ConfigError for fewer trials than
    baselines."""
    space = search_space(facts, precisions)
    base = baselines(precisions)
    check_trials(trials, precisions)
    rng = random.Random(seed)
    groups: dict[str, list[TrialConfig]] = {}
    for cfg in space:
        key = cfg.rule if cfg.attention is None else f"{cfg.rule}+attention"
        groups.setdefault(key, []).append(cfg)
    order = sorted(groups)
    rng.shuffle(order)
    for key in order:
        rng.shuffle(groups[key])
    picked: list[TrialConfig] = []
    wanted = trials - len(base)
    while len(picked) < wanted and any(groups.values()):
        for key in order:
            if groups[key] and len(picked) < wanted:
                picked.append(groups[key].pop())
    return [*base, *picked]


def check_trials(trials: int, precisions: Sequence[str] = PRECISIONS) -> None:
    """ConfigError unless ``trials`` is an integer covering the baselines of ``precisions``."""
    base = baselines(precisions)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < len(base):
        names = " and ".join(b.precision.upper() for b in base)
        plural = "s" if len(base) > 1 else ""
        raise ConfigError(
            f"trials = {trials!r}: a search needs at least {len(base)} (the unfused {names} baseline{plural})"
        )
