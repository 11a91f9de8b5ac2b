"""Applies a token-fusion configuration to a model's blocks (``create_model(name, fusion=...)``).

Importing this module registers ``apply_fusion`` as the models' ``fusion`` option.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vitrt.errors import ConfigError
from vitrt.models.layers import Block, DenseAttention
from vitrt.models.registry import register_model_option

from .config import FusionConfig, parse, resolve
from .module import FusionBlock

FUSION_CONFIG_ATTR = "fusion_config"
"""Attribute under which ``apply_fusion`` keeps the parsed ``FusionConfig`` on the model."""


def apply_fusion(model: nn.Module, fusion: Any) -> None:
    """Replace the model's blocks by ``FusionBlock``s as ``fusion`` says (in place).

    ``fusion``: a preset name ("mctf", "mctf-fast", "tome"), a dict of ``FusionConfig`` fields
    (optionally with ``preset`` as the base; default "mctf"), or a ``FusionConfig``. Every block from
    the first fusing one onwards becomes a ``FusionBlock`` (blocks with r = 0 still need proportional
    attention once tokens have sizes); earlier blocks stay as they are. Weights and state-dict keys
    are unchanged. The parsed config is kept as ``model.fusion_config``.

    Raises ConfigError for an unknown preset or option, a negative temperature, an r too large for
    the model, or a block index the model does not have.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or not all(isinstance(b, Block) for b in blocks):
        raise ConfigError(
            f"token fusion needs a class-token ViT with a list of transformer blocks (DeiT, T2T-ViT); "
            f"{type(model).__name__} has none"
        )
    depth = len(blocks)
    num_tokens = getattr(model, "num_tokens", None)
    if not isinstance(num_tokens, int):
        raise ConfigError(f"{type(model).__name__} has no num_tokens (tokens entering its blocks)")
    config: FusionConfig = parse(fusion, depth)
    per_block = resolve(config, depth, num_tokens)
    fusing = [i for i, c in enumerate(per_block) if c.r]
    targets = [(i, b) for i, b in enumerate(blocks) if fusing and i >= fusing[0] and isinstance(b, Block)]
    for i, block in targets:  # check all before changing any
        if not isinstance(block.attn.core, DenseAttention):
            raise ConfigError(
                f"block {i} uses {type(block.attn.core).__name__} attention; token fusion needs the "
                "dense attention probabilities: apply fusion to dense-attention blocks only"
            )
    for i, block in targets:
        blocks[i] = FusionBlock(block, per_block[i])
    setattr(model, FUSION_CONFIG_ATTR, config)


register_model_option("fusion", apply_fusion)
