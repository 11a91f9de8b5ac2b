"""Model cards: what a model costs and how it wants its input, counted from the model itself."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

from vitrt.errors import ConfigError

if TYPE_CHECKING:
    from vitrt.models.base import ClassTokenViT


def model_card(
    name: str | os.PathLike[str],
    *,
    img_size: int | None = None,
    num_classes: int | None = None,
    fusion: Any = None,
    attention: Any = None,
    checkpoint: str | None = None,
) -> str:
    """A plain-text card for a registered model or a model description ``.json``
    (``vitrt.compiler.compile_source``): parameters, MACs (counted), tokens per stage and per block,
    preprocessing, and the figures its paper reports. ``img_size`` / ``num_classes``: default 224 / 1000
    for a registered name; a description's own (ConfigError for another). With ``checkpoint``, the weights
    are loaded strictly first, so a checkpoint that does not fit the model (trained for another
    num_classes, say) raises CheckpointError. A fusion that removes fewer tokens than its r asks (too few
    tokens at this size) gets a note. ConfigError for a built model (``name`` is a name or a path)."""
    from vitrt.models import load_checkpoint
    from vitrt.models.complexity import count_complexity
    from vitrt.plugins import create_model

    from .compile_source import model_source

    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError(
            f"model_card takes a model name (vitrt list-models) or a model description .json; you passed "
            f"a {type(name).__name__}. Fix: pass the name it was built from, e.g. "
            'model_card("deit_tiny_patch16_224", img_size=32)'
        )
    described: dict[str, Any] | None = None  # a description's arch entry
    if os.fspath(name).endswith(".json"):
        # ConfigError for an img_size / num_classes other than the description's own (it fixes them)
        source = model_source(
            name,
            checkpoint=checkpoint,
            fusion=fusion,
            attention=attention,
            img_size=img_size,
            num_classes=num_classes,
        )
        model, name, described = cast("ClassTokenViT", source.build()), source.name, source.arch
    else:
        model = create_model(
            os.fspath(name),
            img_size=224 if img_size is None else img_size,
            num_classes=1000 if num_classes is None else num_classes,
            fusion=fusion,
            attention=attention,
        )
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
    spec = getattr(model, "spec", None)
    cost = count_complexity(model)
    pre = model.preprocess
    schedule = model.token_schedule()
    family = spec.family if spec is not None else f"{type(model).__name__} from a model description"
    arch = spec.arch if spec is not None else described
    lines = [
        f"{name}  ({family}; fusion={fusion or 'none'}, attention={attention or 'dense'})",
        f"  parameters      {cost.params:,}",
        f"  MACs            {cost.macs / 1e9:.3f} G  (FLOPs {cost.flops / 1e9:.3f} G; counted at batch 1)",
        "  tokens before the backbone:",
        *(f"    {stage:<30} {n}" for stage, n in model.stages()),
        f"  tokens per block {schedule[:-1]} -> {schedule[-1]} out",
        *_fusion_notes(model, schedule, pre.input_size[-1]),
        f"  preprocessing   input {pre.input_size}, mean {pre.mean}, std {pre.std}, "
        f"crop_pct {pre.crop_pct}, {pre.interpolation}",
        f"  architecture    {arch}",
    ]
    if spec is not None:
        lines.append(f"  paper reports   {spec.reported} (at 224)")
    if checkpoint is not None:
        lines.insert(1, f"  checkpoint      {checkpoint} (loaded strictly: every key and shape matches)")
    return "\n".join(lines)


def _fusion_notes(model: Any, schedule: list[int], img_size: int) -> list[str]:
    """A note when the fusing blocks remove fewer tokens than their r asks for (none: nothing fused),
    which the caps do when few tokens enter them (a fusion merges at most (N - 1) // 2 tokens of N and
    keeps at least 10): presets scale r with the tokens but cannot go below that."""
    fusing, short = False, []  # short: (block, removed, asked)
    for i, block in enumerate(model.blocks):
        r = getattr(getattr(block, "config", None), "r", 0)
        if not r:
            continue
        fusing = True
        removed = schedule[i] - schedule[i + 1]
        asked = int((schedule[i] - 1) * r) if r < 1 else int(r)
        if removed < asked:
            short.append((i, removed, asked))
    why = "a fusion merges at most (N-1)//2 of N tokens and leaves at least 10"
    if fusing and schedule[-1] == schedule[0]:
        return [
            f"  note: nothing is fused at img_size {img_size}: {schedule[0]} tokens enter the blocks, and "
            f"{why}. Use a larger --img-size"
        ]
    if not short:
        return []
    capped = [i for i, _, _ in short]
    consecutive = capped == list(range(capped[0], capped[-1] + 1))
    where = f"blocks {capped[0]}-{capped[-1]}" if consecutive else f"blocks {', '.join(map(str, capped))}"
    removed, asked = sum(n for _, n, _ in short), sum(n for _, _, n in short)
    return [
        f"  note: capped in {where if len(capped) > 1 else f'block {capped[0]}'}: {removed} tokens removed "
        f"there, not the {asked} r asks ({why})"
    ]
