"""Replaces a model's attention cores by LSH-sparse / low-rank ones: ``create_model(..., attention=...)``.

Importing this module registers ``apply_attention`` as the models' ``attention`` option.

``attention`` is a preset name or a dict:

* ``"scatterbrain"``: the paper's T2T-ViT setting. The two token attentions of the "transformer" T2T
  module (t2t_vit_t_14/19/24; 3136 and 784 tokens at 224) get Scatterbrain with cluster 24 / 6,
  2 hash rounds and 24 / 6 features (12 / 3 projection rows used with both signs). Each token
  attention keeps its own softmax scale (input_dim^-0.5) and its residual through v: only the core
  ``softmax(q k^T) v`` changes.
* ``"lsh"`` and ``"performer"``: the two baselines at the same memory budget (see
  ``ScatterbrainAttrs.budget_per_query``: about 1/32 of dense at 224), as in the official
  Scatterbrain configs: SMYRF with cluster 49 / 12 and 2 rounds; Performer with 48 / 12 features
  (the official Performer config has 49 / 12 features without the sign pairs; ours come in pairs).
* a dict, e.g. ``{"method": "scatterbrain", "where": "both", "cluster_size": {"blocks": 16},
  "n_features": {"blocks": 16}}``. Keys: ``method`` (a preset name, default "scatterbrain"),
  ``where`` ("t2t" default, "blocks" or "both"), ``cluster_size``, ``n_hashes``, ``n_features``
  (each an int for every replaced attention, or a mapping over "attention1", "attention2",
  "blocks"), ``seed`` (default 0). The T2T attentions default to the preset's numbers and n_hashes
  to 2; backbone blocks have no paper setting, so their cluster_size / n_features must be given.

The "performer" T2T module of t2t_vit_7 ... t2t_vit_24 already is a (different) linear attention whose
random matrix ``w`` lives in the official checkpoints; the paper replaces the *transformer* T2T module
of t2t_vit_t_*, so ``where="t2t"`` on those models is a ConfigError that says so ("blocks" works).

Random tensors: the core of attention1 is seeded with ``seed``, attention2 with ``seed + 1``, block i
with ``seed + 2 + i``; they are buffers saved in the state dict and optional when loading.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from vitrt.errors import ConfigError
from vitrt.models.registry import register_model_option

from .module import LSHAttention, PerformerAttention, ScatterbrainAttention

METHODS = ("scatterbrain", "lsh", "performer")
WHERE = ("t2t", "blocks", "both")
SLOTS = ("attention1", "attention2", "blocks")
DICT_KEYS = ("method", "where", "cluster_size", "n_hashes", "n_features", "seed")
DEFAULT_N_HASHES = 2


@dataclass(frozen=True)
class Budget:
    """Approximation budget of one replaced attention (0 where the method does not use a field)."""

    cluster_size: int = 0
    n_hashes: int = 0
    n_features: int = 0


PAPER_BUDGETS: dict[str, dict[str, Budget]] = {
    "scatterbrain": {"attention1": Budget(24, 2, 24), "attention2": Budget(6, 2, 6)},
    "lsh": {"attention1": Budget(49, 2, 0), "attention2": Budget(12, 2, 0)},
    "performer": {"attention1": Budget(0, 0, 48), "attention2": Budget(0, 0, 12)},
}
"""Per-method budgets of the two T2T token attentions (attention1: 3136 tokens, attention2: 784 at 224)."""


@dataclass(frozen=True)
class AttentionConfig:
    """A resolved ``attention=`` argument: which attentions get which core."""

    method: str
    where: str = "t2t"
    budgets: dict[str, Budget] = field(default_factory=dict)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for manifests and model cards)."""
        return {
            "method": self.method,
            "where": self.where,
            "budgets": {k: vars(b).copy() for k, b in self.budgets.items()},
            "seed": self.seed,
        }


def _close(name: str, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.4)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _method(name: Any) -> str:
    if not isinstance(name, str) or name not in METHODS:
        hint = _close(name, METHODS) if isinstance(name, str) else ""
        raise ConfigError(
            f"unknown attention {name!r}{hint} (choose from 'dense', {', '.join(map(repr, METHODS))})"
        )
    return name


def _slots(where: str) -> tuple[str, ...]:
    return {"t2t": SLOTS[:2], "blocks": SLOTS[2:], "both": SLOTS}[where]


def _per_slot(key: str, value: Any, slots: tuple[str, ...], used: bool) -> dict[str, int]:
    """An int for every slot, or a mapping slot -> int; each >= 1 where the method uses the key (0 stays
    allowed where it does not, as in PAPER_BUDGETS)."""
    if isinstance(value, Mapping):
        bad = [s for s in value if s not in SLOTS]
        if bad:
            raise ConfigError(
                f"attention {key!r} has unknown entries {bad}{_close(str(bad[0]), SLOTS)}; "
                f"use an int or a mapping over {list(SLOTS)}"
            )
        return {s: _size(key, value[s], used, s) for s in slots if s in value}
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"attention {key!r} must be an int or a mapping over {list(SLOTS)}, got {value!r}")
    return dict.fromkeys(slots, _size(key, value, used))


def _size(key: str, value: Any, used: bool, slot: str | None = None) -> int:
    """``value`` if it is an int, >= 1 where ``used``; a ConfigError naming the key (and slot) otherwise."""
    where = f"{key!r} on {slot!r}" if slot else repr(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"attention {where} must be an int, got {value!r}")
    if used and value < 1:
        # 0 is Budget's "unused" marker, so it must not pass for a setting the method uses.
        raise ConfigError(f"attention {where} must be >= 1, got {value}")
    return value


def resolve_attention(attention: Any) -> AttentionConfig:
    """Turn a preset name, a dict or an AttentionConfig into an AttentionConfig (ConfigError if invalid)."""
    if isinstance(attention, AttentionConfig):
        return attention
    if isinstance(attention, str):
        return AttentionConfig(_method(attention), "t2t", dict(PAPER_BUDGETS[_method(attention)]))
    if not isinstance(attention, Mapping):
        raise ConfigError(
            f"attention must be None, 'dense', a preset name ({', '.join(METHODS)}) or a dict, got "
            f"{type(attention).__name__}"
        )
    unknown = [k for k in attention if k not in DICT_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown attention key {unknown[0]!r}{_close(str(unknown[0]), DICT_KEYS)} "
            f"(keys: {', '.join(DICT_KEYS)})"
        )
    method = _method(attention.get("method", "scatterbrain"))
    where = attention.get("where", "t2t")
    if where not in WHERE:
        raise ConfigError(
            f"attention 'where' must be one of {WHERE}, got {where!r}{_close(str(where), WHERE)}"
        )
    seed = attention.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"attention 'seed' must be an int, got {seed!r}")
    slots = _slots(where)
    uses_sparse, uses_low_rank = method != "performer", method != "lsh"
    uses = {"cluster_size": uses_sparse, "n_hashes": uses_sparse, "n_features": uses_low_rank}
    given = {k: _per_slot(k, attention[k], slots, used) for k, used in uses.items() if k in attention}
    budgets = {}
    for slot in slots:
        base = PAPER_BUDGETS[method].get(slot, Budget())
        b = replace(
            base,
            cluster_size=given.get("cluster_size", {}).get(slot, base.cluster_size) if uses_sparse else 0,
            n_hashes=given.get("n_hashes", {}).get(slot, base.n_hashes or DEFAULT_N_HASHES)
            if uses_sparse
            else 0,
            n_features=given.get("n_features", {}).get(slot, base.n_features) if uses_low_rank else 0,
        )
        missing = [
            k
            for k, used in (("cluster_size", uses_sparse), ("n_features", uses_low_rank))
            if used and not getattr(b, k)
        ]
        if missing:
            example = ", ".join(f"'{k}': {{'{slot}': ...}}" for k in missing)
            raise ConfigError(
                f"attention method {method!r} on {slot!r} needs {' and '.join(missing)} (no paper setting "
                f"exists there): add {example} to the attention dict"
            )
        budgets[slot] = b
    return AttentionConfig(method, where, budgets, seed)


def make_core(method: str, budget: Budget, head_dim: int, seed: int) -> nn.Module:
    """The attention core (``forward(q, k, v, scale)``) for one replaced attention."""
    if method == "scatterbrain":
        return ScatterbrainAttention(
            head_dim,
            cluster_size=budget.cluster_size,
            n_hashes=budget.n_hashes,
            n_features=budget.n_features,
            seed=seed,
        )
    if method == "lsh":
        return LSHAttention(head_dim, cluster_size=budget.cluster_size, n_hashes=budget.n_hashes, seed=seed)
    return PerformerAttention(head_dim, n_features=budget.n_features, seed=seed)


def _t2t_attentions(model: nn.Module) -> list[nn.Module]:
    """The two TokenAttention modules of a "transformer" T2T module (ConfigError otherwise)."""
    from vitrt.models.t2t_vit import TokenAttention, TokenTransformer

    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    t2t = getattr(model, "tokens_to_token", None)
    if t2t is None:
        raise ConfigError(f"{name} has no T2T module to replace; use attention={{'where': 'blocks', ...}}")
    blocks = [t2t.attention1, t2t.attention2]
    if not all(isinstance(b, TokenTransformer) and isinstance(b.attn, TokenAttention) for b in blocks):
        raise ConfigError(
            f"{name} has a 'performer' T2T module (its own linear attention, whose random matrix w is in "
            "the official checkpoints). Scatterbrain replaces the 'transformer' T2T attentions: use "
            "t2t_vit_t_14 / t2t_vit_t_19 / t2t_vit_t_24, or where='blocks' for the backbone attentions."
        )
    return [b.attn for b in blocks]


def apply_attention(model: nn.Module, attention: Any) -> None:
    """Swap the attention cores that ``attention`` names, in place (see the module docstring).

    Records the resolved ``AttentionConfig`` as ``model.attention_config``.
    """
    cfg = resolve_attention(attention)
    targets: list[tuple[str, nn.Module, int]] = []  # (slot, module with .core, seed)
    if cfg.where in ("t2t", "both"):
        for i, attn in enumerate(_t2t_attentions(model)):
            targets.append((SLOTS[i], attn, cfg.seed + i))
    if cfg.where in ("blocks", "both"):
        blocks = getattr(model, "blocks", None)
        if blocks is None or not all(hasattr(getattr(b, "attn", None), "core") for b in blocks):
            raise ConfigError(
                f"{type(model).__name__} has no backbone blocks with attention cores to replace"
            )
        targets += [("blocks", b.attn, cfg.seed + 2 + i) for i, b in enumerate(blocks)]
    for slot, attn, seed in targets:
        head_dim = int(getattr(attn, "head_dim", getattr(attn, "in_dim", 0)))
        try:
            attn.core = make_core(cfg.method, cfg.budgets[slot], head_dim, seed)
        except ConfigError as err:
            raise ConfigError(f"attention {cfg.method!r} on {slot!r}: {err}") from None
    object.__setattr__(model, "attention_config", cfg)  # plain data, not a submodule or tensor


register_model_option("attention", apply_attention)
