"""Token-fusion configuration: presets, the dict / dataclass form, validation and per-block resolution.

``FusionConfig`` is what a user writes (or a preset gives); ``resolve`` turns it into one
``FusionBlockConfig`` (or None) per block of a given model. Every bad value raises ``ConfigError``
naming the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vitrt.errors import ConfigError

from .spec import MIN_TOKENS_LEFT, Pooling, TokenFusionAttrs, removed_tokens

RValue = int | float
RSpec = RValue | Sequence[RValue] | Mapping[int, RValue]

POOLING_NAMES = {"attn_size": Pooling.ATTN_SIZE, "size": Pooling.SIZE, "mean": Pooling.MEAN}
METRICS = ("tokens", "keys")
MERGE_POINTS = ("mlp", "attention")


@dataclass(frozen=True)
class FusionBlockConfig:
    """How one block fuses tokens.

    r: requested tokens to remove (count >= 1 or fraction in (0, 1) of the N - 1 mergeable tokens),
        capped at run time by ``spec.removed_tokens`` for the block's actual N; 0: no fusion.
    tau_sim, tau_info, tau_size, bidirectional, pooling: the op's attributes (``spec``).
    prop_attn: add log(size) to every key's attention logit (proportional attention).
    one_step_ahead: 1: fuse before the attention output, approximating the fused tokens' attention
        from the unfused one (MCTF default); 2: fuse first, then recompute attention exactly;
        0: fuse after the block's attention (``merge_after="attention"``, ToMe) or MLP (MCTF mode 0).
    metric: "tokens" (the tokens being fused: MCTF) or "keys" (keys averaged over heads: ToMe).
    merge_after: where a one_step_ahead=0 block fuses: "mlp" or "attention".
    """

    r: RValue = 0
    tau_sim: float = 1.0
    tau_info: float = 20.0
    tau_size: float = 40.0
    bidirectional: bool = True
    pooling: Pooling = Pooling.ATTN_SIZE
    prop_attn: bool = True
    one_step_ahead: int = 1
    metric: str = "tokens"
    merge_after: str = "mlp"

    def removed(self, n_in: int, num_protected: int = 1) -> int:
        """Tokens this block removes from ``n_in`` (the caps applied)."""
        return removed_tokens(n_in, self.r, num_protected) if self.r else 0

    def attrs(self, n_in: int, num_protected: int = 1) -> TokenFusionAttrs:
        """The op attributes of this block's ``TokenFusion`` node for ``n_in`` input tokens."""
        return TokenFusionAttrs(
            r=self.removed(n_in, num_protected),
            num_protected=num_protected,
            tau_sim=self.tau_sim,
            tau_info=self.tau_info,
            tau_size=self.tau_size,
            bidirectional=int(self.bidirectional),
            pooling=self.pooling,
        )


@dataclass(frozen=True)
class FusionConfig:
    """Token fusion for a whole model (the dict form takes the same keys, plus ``preset``).

    r: tokens each fusing block removes: an int count, a fraction in (0, 0.5] of the N - 1 mergeable
        tokens, a list with one value per block, or a dict {block index: value} (other blocks: 0).
    blocks: the blocks a scalar ``r`` applies to; None: every block but the first.
    The other fields are those of ``FusionBlockConfig`` (pooling by name: "attn_size", "size",
    "mean").
    """

    r: RSpec = 16
    blocks: tuple[int, ...] | None = None
    tau_sim: float = 1.0
    tau_info: float = 20.0
    tau_size: float = 40.0
    bidirectional: bool = True
    pooling: str = "attn_size"
    prop_attn: bool = True
    one_step_ahead: int = 1
    metric: str = "tokens"
    merge_after: str = "mlp"
    preset: str | None = field(default=None, compare=False)
    """The preset whose r schedule this is (set by ``preset``; cleared when r or blocks differ from it):
    a preset's r is capped silently on small inputs, a user's r is checked against the model."""


PRESETS = ("mctf", "mctf-fast", "tome")


def preset(name: str, depth: int) -> FusionConfig:
    """The named preset for a model with ``depth`` blocks.

    "mctf": the official MCTF DeiT setting, r = 16 in every block but the first (blocks 1-11 of 12),
        tau_sim 1, tau_info 20, tau_size 40, bidirectional, attention x size pooling, proportional
        attention, one-step-ahead attention (mode 1).
    "mctf-fast": the same with r = 0.35 of the mergeable tokens in blocks depth//4, depth//2,
        3*depth//4 (3, 6, 9 of 12).
    "tome": ToMe (Bolya et al., 2023): r = 16 in every block (the ToMe repository's example setting;
        the caps keep 11 tokens in DeiT's last block), keys averaged over heads as metric, cosine
        similarity only, one-way matching, size-weighted mean, proportional attention, merging
        between attention and MLP.
    """
    if name == "mctf":
        return FusionConfig(r=16, blocks=tuple(range(1, depth)), preset=name)
    if name == "mctf-fast":
        blocks = tuple(sorted({depth // 4, depth // 2, 3 * depth // 4}))
        return FusionConfig(r=0.35, blocks=blocks, preset=name)
    if name == "tome":
        return FusionConfig(
            r=16,
            blocks=tuple(range(depth)),
            tau_sim=1.0,
            tau_info=0.0,
            tau_size=0.0,
            bidirectional=False,
            pooling="size",
            prop_attn=True,
            one_step_ahead=0,
            metric="keys",
            merge_after="attention",
            preset=name,
        )
    close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"unknown token-fusion preset {name!r}{hint} (presets: {', '.join(PRESETS)}; or pass a dict "
        "such as {'r': 16, 'tau_info': 20})"
    )


_FIELDS = tuple(f.name for f in dataclasses.fields(FusionConfig))


def parse(fusion: Any, depth: int) -> FusionConfig:
    """A ``FusionConfig`` from a preset name, a dict (optionally with a ``preset`` key as the base,
    default "mctf") or a ``FusionConfig``."""
    if isinstance(fusion, FusionConfig):
        return fusion
    if isinstance(fusion, str):
        return preset(fusion.strip().lower(), depth)
    if isinstance(fusion, Mapping):
        options = dict(fusion)
        unknown = [k for k in options if k not in _FIELDS]
        if unknown:
            key = str(unknown[0])
            close = difflib.get_close_matches(key, _FIELDS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown token-fusion option {key!r}{hint} (options: {', '.join(_FIELDS)})")
        base_name = options.pop("preset", None) or "mctf"
        base = preset(str(base_name), depth)
        if "r" in options and "blocks" not in options and not _is_scalar(options["r"]):
            options["blocks"] = None  # a per-block r replaces the preset's block list
        if "blocks" in options and options["blocks"] is not None:
            options["blocks"] = _block_tuple(options["blocks"])
        config = dataclasses.replace(base, **options)
        if (config.r, config.blocks) != (base.r, base.blocks):  # a round-tripped preset stays one
            config = dataclasses.replace(config, preset=None)
        return config
    raise ConfigError(
        f"token fusion must be a preset name ({', '.join(PRESETS)}), a dict or a FusionConfig, "
        f"not {type(fusion).__name__}"
    )


def _is_scalar(r: Any) -> bool:
    return isinstance(r, (int, float)) and not isinstance(r, bool)


def _block_tuple(blocks: Any) -> tuple[int, ...]:
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        return (blocks,)
    if isinstance(blocks, Sequence) and not isinstance(blocks, str):
        if all(isinstance(b, int) and not isinstance(b, bool) for b in blocks):
            return tuple(blocks)
    raise ConfigError(f"blocks must be a list of block indices, got {blocks!r}")


def _check_r(value: Any, where: str, num_tokens: int) -> RValue:
    if not _is_scalar(value):
        raise ConfigError(f"r{where} must be a number (count or fraction), got {value!r}")
    if value < 0:
        raise ConfigError(f"r{where} = {value} is negative; use 0 (no fusion) or a positive count / fraction")
    if 0 < value < 1:
        if value > 0.5:
            raise ConfigError(
                f"r{where} = {value}: a fraction above 0.5 cannot be applied (at most half of the "
                "mergeable tokens find a partner); use a fraction <= 0.5"
            )
        return float(value)
    if value != int(value):
        raise ConfigError(f"r{where} = {value}: a count must be whole (or a fraction below 1)")
    cap = min((num_tokens - 1) // 2, max(num_tokens - MIN_TOKENS_LEFT, 0))
    if value > cap:
        raise ConfigError(
            f"r{where} = {int(value)} is too large: a block of this model can remove at most {cap} of "
            f"its {num_tokens} tokens (at most (N-1)//2, and >= {MIN_TOKENS_LEFT} left); use r <= {cap} "
            "or a fraction such as 0.35"
        )
    return int(value)


def _check_block(index: Any, depth: int, what: str) -> int:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < depth:
        raise ConfigError(
            f"{what} {index!r} does not exist: this model has {depth} blocks (indices 0..{depth - 1})"
        )
    return index


def resolve(config: FusionConfig, depth: int, num_tokens: int) -> list[FusionBlockConfig]:
    """One ``FusionBlockConfig`` per block (r = 0 where a block does not fuse), validated.

    ``num_tokens``: tokens entering the first block (class token included); user-given counts larger
    than a block could ever remove are rejected, while presets rely on the caps.
    """
    for name in ("tau_sim", "tau_info", "tau_size"):
        tau = getattr(config, name)
        if not _is_scalar(tau) or tau < 0:
            raise ConfigError(f"{name} = {tau!r} must be a number >= 0 (0 disables that factor of the score)")
    if config.pooling not in POOLING_NAMES:
        raise ConfigError(
            f"pooling {config.pooling!r} is not supported; use one of {', '.join(POOLING_NAMES)}"
        )
    if config.one_step_ahead not in (0, 1, 2):
        raise ConfigError(
            f"one_step_ahead = {config.one_step_ahead!r}; use 0 (fuse after attention or MLP), "
            "1 (approximate the fused attention) or 2 (recompute it)"
        )
    if config.metric not in METRICS:
        raise ConfigError(f"metric {config.metric!r} is not supported; use one of {', '.join(METRICS)}")
    if config.merge_after not in MERGE_POINTS:
        raise ConfigError(f"merge_after {config.merge_after!r}; use one of {', '.join(MERGE_POINTS)}")
    if config.merge_after == "attention" and config.one_step_ahead != 0:
        raise ConfigError(
            "merge_after='attention' applies to one_step_ahead=0 only (one-step-ahead modes fuse before "
            "the attention output); set one_step_ahead=0 or drop merge_after"
        )

    per_block: list[RValue] = [0] * depth
    # Presets rely on the caps (e.g. "mctf" on a 17-token model); user-given counts are checked.
    from_preset = config.preset is not None

    def check(value: Any, where: str) -> RValue:
        return value if from_preset else _check_r(value, where, num_tokens)

    r = config.r
    if isinstance(r, Mapping):
        if config.blocks is not None:
            raise ConfigError("give either r as a dict {block: r} or blocks, not both")
        for index, value in r.items():
            per_block[_check_block(index, depth, "block")] = check(value, f"[{index}]")
    elif isinstance(r, Sequence) and not isinstance(r, str):
        if config.blocks is not None:
            raise ConfigError("give either r as a list (one value per block) or blocks, not both")
        if len(r) != depth:
            raise ConfigError(f"r has {len(r)} values but the model has {depth} blocks; give one per block")
        per_block = [check(value, f"[{i}]") for i, value in enumerate(r)]
    else:
        value = check(r, "")
        blocks = config.blocks if config.blocks is not None else tuple(range(1, depth))
        for index in blocks:
            per_block[_check_block(index, depth, "fusion block")] = value

    pooling = POOLING_NAMES[config.pooling]
    return [
        FusionBlockConfig(
            r=value,
            tau_sim=float(config.tau_sim),
            tau_info=float(config.tau_info),
            tau_size=float(config.tau_size),
            bidirectional=bool(config.bidirectional),
            pooling=pooling,
            prop_attn=bool(config.prop_attn),
            one_step_ahead=int(config.one_step_ahead),
            metric=config.metric,
            merge_after=config.merge_after,
        )
        for value in per_block
    ]
