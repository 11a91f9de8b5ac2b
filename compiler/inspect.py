"""Model cards: what a model costs and how it wants its input, counted from the model itself."""

from __future__ import annotations

from typing import Any


def model_card(
    name: str,
    *,
    img_size: int = 224,
    fusion: Any = None,
    attention: Any = None,
    checkpoint: str | None = None,
) -> str:
    """A plain-text card for a registered model: parameters, MACs (counted), tokens per stage and
    per block, preprocessing, and the figures its paper reports. With ``checkpoint``, the weights
    are loaded strictly first, so a checkpoint that does not fit the model raises CheckpointError."""
    from vitrt.models import load_checkpoint
    from vitrt.models.complexity import count_complexity
    from vitrt.plugins import create_model

    model = create_model(name, img_size=img_size, fusion=fusion, attention=attention)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    cost = count_complexity(model)
    pre = model.preprocess
    schedule = model.token_schedule()
    lines = [
        f"{name}  ({model.spec.family}; fusion={fusion or 'none'}, attention={attention or 'dense'})",
        f"  parameters      {cost.params:,}",
        f"  MACs            {cost.macs / 1e9:.3f} G  (FLOPs {cost.flops / 1e9:.3f} G; counted at batch 1)",
        "  tokens before the backbone:",
        *(f"    {stage:<30} {n}" for stage, n in model.stages()),
        f"  tokens per block {schedule[:-1]} -> {schedule[-1]} out",
        f"  preprocessing   input {pre.input_size}, mean {pre.mean}, std {pre.std}, "
        f"crop_pct {pre.crop_pct}, {pre.interpolation}",
        f"  architecture    {model.spec.arch}",
        f"  paper reports   {model.spec.reported} (at 224)",
    ]
    if checkpoint is not None:
        lines.insert(1, f"  checkpoint      {checkpoint} (loaded strictly: every key and shape matches)")
    return "\n".join(lines)
