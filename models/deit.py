"""DeiT (Touvron et al., 2021) with timm's VisionTransformer state-dict keys (class token only).

File order as in timm: blocks, model, checkpoint converter, configs, registered constructors.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitrt.errors import ConfigError

from .base import ClassTokenViT
from .config import ModelSpec, PreprocessConfig
from .layers import Block, drop_path_rates, trunc_normal_, trunc_normal_init, unfold_rows
from .registry import register_model


def check_img_size(img_size: int, patch_size: int = 16) -> None:
    """Raise ConfigError (naming the nearest sizes that work) unless img_size is a positive multiple of
    patch_size: the patches tile the image exactly."""
    if img_size < patch_size or img_size % patch_size:
        below = img_size // patch_size * patch_size
        sizes = [s for s in (below, below + patch_size) if s >= patch_size] or [patch_size]
        raise ConfigError(
            f"img_size {img_size} is not a positive multiple of the patch size {patch_size}; "
            f"use {' or '.join(map(str, sizes))}"
        )


class PatchEmbed(nn.Module):
    """Non-overlapping patches: [B, C, S, S] -> [B, (S/p)^2, embed_dim] through a strided conv.

    Eager on CUDA tensors the conv runs as what it is, a product of the flattened patches with the
    flattened kernel (``unfold_rows`` then one GEMM): cuDNN ran this conv as a CUDA-core implicit GEMM,
    0.41 ms of DeiT-S + ToMe's 2.6 ms and + MCTF's 4.0 ms of kernel time at batch 64 on an H100 in float16
    (benchmarks/results/h100-2026-11-26/gpu_models.txt). Elsewhere, and in exports (``set_lowering``),
    the conv itself.
    """

    lowering = "eager"  # see vitrt.plugins.lowering

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        check_img_size(img_size, patch_size)
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def set_lowering(self, lowering: str) -> None:
        """Pick how the patch projection is expressed for export; same function."""
        self.lowering = lowering

    def as_gemm(self, x: Tensor) -> Tensor:
        """The conv as patches [B, L, C p p] times the kernel [embed_dim, C p p]^T plus the bias (the
        sizes must be multiples of the patch size)."""
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)
        return F.linear(unfold_rows(x, self.patch_size, self.patch_size), weight, self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        if self.lowering == "eager" and x.is_cuda and x.shape[-2] % p == 0 and x.shape[-1] % p == 0:
            return self.as_gemm(x)
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(ClassTokenViT):
    """DeiT/ViT classifier: images [B, 3, S, S] -> logits [B, num_classes]."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size, self.num_classes = img_size, num_classes
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, dpr[i], 1e-6
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed)
        trunc_normal_(self.cls_token)
        self.apply(trunc_normal_init)

    def patch_tokens(self, x: Tensor) -> Tensor:
        return self.patch_embed(x)


def checkpoint_filter(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """timm and facebookresearch/deit checkpoints use these keys already.

    A distilled checkpoint (``dist_token``, ``head_dist``) is rejected rather than silently
    truncated: its class token alone is not the model it was trained as.
    """
    del model
    if "dist_token" in state_dict:
        raise ConfigError(
            "this is a distilled DeiT checkpoint (it has dist_token); vitrt's DeiT models have a "
            "class token only: use the non-distilled deit_*_patch16_224 weights"
        )
    return dict(state_dict)


_REPORTED = {  # top-1 (%), params (M), GFLOPs at 224, from the DeiT paper
    "deit_tiny_patch16_224": (192, 3, 72.2, 5.7, 1.3),
    "deit_small_patch16_224": (384, 6, 79.8, 22.1, 4.6),
    "deit_base_patch16_224": (768, 12, 81.8, 86.6, 17.6),
}


_OVERRIDES = set(inspect.signature(VisionTransformer).parameters) - {"img_size", "num_classes"}
"""The constructor keywords create_model passes through (those of the registered arch excepted)."""


def _deit(name: str) -> None:
    embed_dim, num_heads, top1, params, gflops = _REPORTED[name]
    arch: dict[str, Any] = {"patch_size": 16, "embed_dim": embed_dim, "depth": 12, "num_heads": num_heads}

    def constructor(**kwargs: Any) -> VisionTransformer:
        img_size = int(kwargs.get("img_size", 224))
        model = VisionTransformer(**arch, **kwargs)
        model.spec = ModelSpec(name, "deit", arch, {"top1": top1, "params_m": params, "gflops": gflops})
        model.preprocess = PreprocessConfig(input_size=(3, img_size, img_size))
        return model

    constructor.__name__ = name
    constructor.__doc__ = f"DeiT {name}: embed {embed_dim}, 12 blocks, {num_heads} heads."
    register_model(
        name,
        family="deit",
        checkpoint_filter=checkpoint_filter,
        check_img_size=lambda size: check_img_size(size, arch["patch_size"]),
        overrides=_OVERRIDES - set(arch),
    )(constructor)


for _name in _REPORTED:
    _deit(_name)
