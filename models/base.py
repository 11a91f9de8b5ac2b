"""The class-token vision transformer skeleton that T2T-ViT and DeiT share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
from torch import Tensor, nn

from .config import ModelSpec, PreprocessConfig
from .layers import NO_CARRY, Block, on_kernels


class ClassTokenViT(nn.Module):
    """Patch tokens -> [class token; tokens] + pos_embed -> blocks -> norm -> head(class token).

    Subclasses define ``patch_tokens`` (images [B, 3, H, W] -> tokens [B, N, C]) and create
    ``cls_token`` [1, 1, C], ``pos_embed`` [1, N + 1, C], ``blocks``, ``norm`` and ``head``.
    """

    cls_token: nn.Parameter
    pos_embed: nn.Parameter
    blocks: nn.ModuleList
    norm: nn.LayerNorm
    head: nn.Module
    pos_drop: nn.Module
    spec: ModelSpec
    preprocess: PreprocessConfig

    def patch_tokens(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        return int(self.cls_token.shape[-1])

    @property
    def num_tokens(self) -> int:
        """Tokens entering the first block, class token included."""
        return int(self.pos_embed.shape[1])

    def embed(self, x: Tensor) -> Tensor:
        """Images [B, 3, H, W] -> tokens [B, N + 1, C] with the class token first."""
        tokens = self.patch_tokens(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return self.pos_drop(torch.cat((cls, tokens), dim=1) + self.pos_embed)

    def forward_blocks(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Tokens [B, N, C] -> (tokens [B, N', C], size [B, N'] or None) through every block."""
        size: Tensor | None = None
        for blk in self.blocks:
            x, size = blk(x, size)
        return x, size

    def forward_features(self, x: Tensor) -> Tensor:
        """Images [B, 3, H, W] -> normalised class-token features [B, C].

        In eager inference on vitrt's kernels the blocks run chained (``Block.forward_chain``): each
        block's last residual add writes the next block's norm1 (the last block's: the final norm) in the
        same kernel, and a fused block's merge the log of the sizes the next block's attention adds.
        Elsewhere (CPU, training, exports) each block is called as a module, as in ``forward_blocks``, so
        that export scopes and module hooks see it."""
        x = self.embed(x)
        blocks = [cast(Block, blk) for blk in self.blocks]
        chained = bool(blocks) and not torch.is_grad_enabled() and on_kernels(x)
        if not chained or any(blk.lowering != "eager" for blk in blocks):
            x, _ = self.forward_blocks(x)
            return self.norm(x)[:, 0]
        size: Tensor | None = None
        carry = NO_CARRY
        following = [blk.norm1 for blk in blocks[1:]] + [self.norm]
        for blk, next_norm in zip(blocks, following, strict=True):
            x, size, carry = blk.forward_chain(x, size, carry, next_norm)
        return (self.norm(x) if carry.h is None else carry.h)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """Images [B, 3, H, W] (normalised as ``self.preprocess`` says) -> logits [B, num_classes]."""
        return self.head(self.forward_features(x))

    def token_schedule(self) -> list[int]:
        """Tokens entering each block, then the number leaving the last one (length depth + 1)."""
        counts = [self.num_tokens]
        for blk in self.blocks:
            counts.append(int(blk.num_tokens_out(counts[-1])))  # type: ignore[operator]
        return counts

    def optional_state_keys(self) -> set[str]:
        """State-dict keys a checkpoint may lack: fixed buffers that vitrt's op modules add
        (they are drawn from a seed when absent, and saved with the model from then on)."""
        keys: set[str] = set()
        for prefix, module in self.named_modules():
            for name in getattr(module, "OPTIONAL_STATE", ()):
                keys.add(f"{prefix}.{name}" if prefix else name)
        return keys

    def stages(self) -> Iterator[tuple[str, int]]:
        """(stage name, tokens) before the backbone, for model cards. Overridden by T2T-ViT."""
        yield "patch embedding", self.num_tokens - 1
