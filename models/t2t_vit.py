"""T2T-ViT (Yuan et al., ICCV 2021): soft-split token aggregation + deep-narrow backbone.

State-dict keys and shapes are those of the official code (yitu-opensource/T2T-ViT), so its
checkpoints (``state_dict_ema``) load unchanged. File order as in timm: blocks, model,
checkpoint converter, configs, registered constructors.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vitrt.errors import ConfigError

from .base import ClassTokenViT
from .config import ModelSpec, PreprocessConfig
from .layers import (
    Block,
    DenseAttention,
    DerivedTensors,
    DropPath,
    Mlp,
    RowLayerNorm,
    drop_path_rates,
    orthogonal_features,
    padded_linear,
    sinusoid_encoding,
    trunc_normal_,
    trunc_normal_init,
    unfold_rows,
    unfold_token_rows,
)
from .registry import register_model

# Soft splits (kernel, stride, padding) of the T2T module, in order.
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))


class TokenAttention(nn.Module):
    """Single-head attention that changes width (dim -> in_dim), with the residual taken through v.

    Input [B, N, dim]; output v + proj(softmax((q * scale) k^T) v), [B, N, in_dim]. The scale is
    dim^-0.5 (the input width, 147 or 576 in T2T-ViT, not in_dim), as in the official code.
    """

    def __init__(
        self,
        dim: int,
        in_dim: int,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.scale = qk_scale or dim**-0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(in_dim, in_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.core: nn.Module = DenseAttention()
        self.derived = DerivedTensors()  # padded_linear's weight; not state

    def forward(self, x: Tensor) -> Tensor:
        """x [B, N, dim], or its rows zero-padded past dim (``RowLayerNorm.padded``) -> [B, N, in_dim]."""
        b, n, _ = x.shape
        qkv = padded_linear(self.qkv, x, self.derived)
        q, k, v = qkv.reshape(b, n, 3, 1, self.in_dim).permute(2, 0, 3, 1, 4)
        y = self.core(q, k, v, self.scale).squeeze(1)
        return v.squeeze(1) + self.proj_drop(self.proj(y))


class TokenTransformer(nn.Module):
    """T2T "transformer" token block: [B, N, dim] -> [B, N, in_dim] (one head, MLP ratio 1)."""

    def __init__(self, dim: int, in_dim: int, mlp_ratio: float = 1.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = RowLayerNorm(dim)  # dim = 147 or 576, in_dim 64: see RowLayerNorm
        self.attn = TokenAttention(dim, in_dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = RowLayerNorm(in_dim)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio), in_dim)

    def forward(self, x: Tensor, normed: bool = False) -> Tensor:
        """x [B, N, dim] -> [B, N, in_dim]; ``normed``: x is norm1's output already (``T2TModule.split``)."""
        x = self.attn(x if normed else self.norm1.padded_or_plain(x))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TokenPerformer(nn.Module):
    """T2T "performer" token block: [B, N, dim] -> [B, N, in_dim] with FAVOR+ linear attention.

    kqv is split in the order k, q, v; phi(x) = exp(w x - |x|^2 / 2) / sqrt(m) with the frozen
    random matrix ``w`` [m, in_dim] that the checkpoint stores; out = v + proj(phi(q) (phi(k)^T v)
    / (phi(q) . sum_n phi(k) + 1e-8)). That span runs in float32 whatever the input dtype: the
    1e-8 underflows and the exponentials overflow in float16.
    """

    EPSILON = 1e-8

    def __init__(self, dim: int, in_dim: int, kernel_ratio: float = 0.5, drop: float = 0.1) -> None:
        super().__init__()
        self.emb = in_dim
        self.m = int(in_dim * kernel_ratio)
        self.kqv = nn.Linear(dim, 3 * in_dim)
        self.dp = nn.Dropout(drop)
        self.proj = nn.Linear(in_dim, in_dim)
        self.norm1 = RowLayerNorm(dim)  # dim = 147 or 576, in_dim 64: see RowLayerNorm
        self.norm2 = RowLayerNorm(in_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, in_dim), nn.Dropout(drop)
        )
        # A parameter (not a buffer) so that the key is ``...attention1.w`` as in the checkpoints.
        self.w = nn.Parameter(orthogonal_features(self.m, in_dim), requires_grad=False)
        self.derived = DerivedTensors()  # padded_linear's weight; not state

    def features(self, x: Tensor) -> Tensor:
        """Positive random features [B, N, m] (float32) of x [B, N, in_dim]."""
        x = x.float()
        half_sq_norm = (x * x).sum(dim=-1, keepdim=True) / 2
        return torch.exp(x @ self.w.float().t() - half_sq_norm) / math.sqrt(self.m)

    def attention(self, x: Tensor) -> Tensor:
        """x [B, N, dim], or its rows zero-padded past dim (``RowLayerNorm.padded``) -> [B, N, in_dim]."""
        k, q, v = torch.split(padded_linear(self.kqv, x, self.derived), self.emb, dim=-1)
        kp, qp = self.features(k), self.features(q)
        denom = qp @ kp.sum(dim=1).unsqueeze(-1)  # [B, N, 1]
        kptv = v.float().transpose(1, 2) @ kp  # [B, in_dim, m]
        # The epsilon as a one-element tensor, not a Python scalar: the ONNX exporter's rewriter deletes
        # ``x + c`` for any scalar c within 1e-8 of zero (onnxscript's add-zero rule, abs_tol 1e-8), and a
        # token whose features all underflow then divides 0 by 0 (NaN logits at 128 x 128 and up).
        eps = torch.full((1,), self.EPSILON, dtype=denom.dtype, device=denom.device)
        y = (qp @ kptv.transpose(1, 2)) / (denom + eps)
        return v + self.dp(self.proj(y.to(v.dtype)))

    def forward(self, x: Tensor, normed: bool = False) -> Tensor:
        """x [B, N, dim] -> [B, N, in_dim]; ``normed``: x is norm1's output already (``T2TModule.split``)."""
        x = self.attention(x if normed else self.norm1.padded_or_plain(x))
        return x + self.mlp(self.norm2(x))


def soft_split_grid(img_size: int) -> list[int]:
    """Side length of the token grid after each soft split (e.g. 224 -> [56, 28, 14])."""
    sides, side = [], img_size
    for kernel, stride, pad in SOFT_SPLITS:
        side = (side + 2 * pad - kernel) // stride + 1
        sides.append(side)
    return sides


def check_img_size(img_size: int) -> None:
    """Raise ConfigError unless the soft splits turn img_size into (img_size // 16)^2 tokens.

    That is the token count the official model sizes its position table for.
    """

    def ok(s: int) -> bool:
        return s >= 16 and soft_split_grid(s)[-1] == s // 16

    if not ok(img_size):
        fits = (s for s in range(16, max(img_size, 16) + 49) if ok(s))
        near = sorted(sorted(fits, key=lambda s: abs(s - img_size))[:6])
        why = (
            "is below T2T-ViT's smallest input, 16 pixels (its soft splits shrink the side 16-fold)"
            if img_size < 16
            else f"does not fit T2T-ViT's soft split (unfold 7/4/2, 3/2/1, 3/2/1 gives "
            f"{soft_split_grid(img_size)[-1]}^2 tokens, the position table has {img_size // 16}^2)"
        )
        raise ConfigError(f"img_size {img_size} {why}; sizes close to it that work: {near}")


class T2TModule(nn.Module):
    """Tokens-to-Token: image [B, 3, S, S] -> tokens [B, (S/16)^2, embed_dim].

    unfold 7/4/2 -> token block (147 -> 64) -> unfold 3/2/1 -> token block (576 -> 64) ->
    unfold 3/2/1 -> Linear(576 -> embed_dim). At 224: 3136 -> 784 -> 196 tokens.
    """

    lowering = "eager"  # see vitrt.plugins.lowering
    fused_splits = True  # ``split`` fuses where it applies; False: never (benchmarks/t2t_norms.py times both)

    def __init__(
        self, img_size: int, tokens_type: str, embed_dim: int, in_chans: int = 3, token_dim: int = 64
    ) -> None:
        super().__init__()
        check_img_size(img_size)
        self.grid = soft_split_grid(img_size)
        self.soft_split0, self.soft_split1, self.soft_split2 = (
            nn.Unfold(kernel_size=k, stride=s, padding=p) for k, s, p in SOFT_SPLITS
        )
        dims = (in_chans * 7 * 7, token_dim * 3 * 3)
        self.attention1: nn.Module
        self.attention2: nn.Module
        if tokens_type == "transformer":
            self.attention1 = TokenTransformer(dims[0], token_dim)
            self.attention2 = TokenTransformer(dims[1], token_dim)
        elif tokens_type == "performer":
            self.attention1 = TokenPerformer(dims[0], token_dim)
            self.attention2 = TokenPerformer(dims[1], token_dim)
        else:
            raise ConfigError(f"unknown tokens_type {tokens_type!r}; use 'performer' or 'transformer'")
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)
        self.num_patches = self.grid[-1] ** 2

    def set_lowering(self, lowering: str) -> None:
        """Pick how the soft splits are expressed for export; same function."""
        self.lowering = lowering

    def soft_split(self, i: int, x: Tensor) -> Tensor:
        """Soft split i of the image (i = 0: [B, C, S, S]) or of the previous stage's tokens (i > 0:
        [B, L, C] on a grid[i - 1]^2 grid) -> tokens [B, L', C k k]. Eager on CUDA tensors by
        ``unfold_rows`` / ``unfold_token_rows`` (im2col was 18 % of the kernel time at batch 64, see
        there; the tokens are not copied into an image first); elsewhere, and in exports, the official
        code's transposition and nn.Unfold (the CPU keeps its numerics, the ONNX graph its Unfold)."""
        k, s, p = SOFT_SPLITS[i]
        if self.lowering == "eager" and x.is_cuda:
            return unfold_rows(x, k, s, p) if i == 0 else unfold_token_rows(x, self.grid[i - 1], k, s, p)
        if i > 0:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, self.grid[i - 1], self.grid[i - 1])
        split: nn.Unfold = (self.soft_split0, self.soft_split1, self.soft_split2)[i]
        return split(x).transpose(1, 2)

    def split(self, i: int, x: Tensor, block: nn.Module) -> Tensor:
        """``block`` (attention1 or attention2) of soft split i of x (as ``soft_split``). On vitrt's kernels
        (``RowLayerNorm.unfolded``) the split and the block's norm1 are one kernel that reads x where it lies
        (the image, or the tokens as a [B, C, side, side] view) and writes only the normed patches: the
        patches' copy and its read by the norm are gone."""
        norm = getattr(block, "norm1", None)
        if self.lowering == "eager" and self.fused_splits and isinstance(norm, RowLayerNorm):
            k, s, p = SOFT_SPLITS[i]
            image = x
            if i > 0:
                side = self.grid[i - 1]
                image = x.reshape(x.shape[0], side, side, x.shape[-1]).permute(0, 3, 1, 2)
            normed = norm.unfolded(image, k, s, p)
            if normed is not None:
                return block(normed, normed=True)
        return block(self.soft_split(i, x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.split(0, x, self.attention1)
        x = self.split(1, x, self.attention2)
        return self.project(self.soft_split(2, x))


class T2TViT(ClassTokenViT):
    """T2T-ViT classifier: images [B, 3, S, S] -> logits [B, num_classes]."""

    def __init__(
        self,
        img_size: int = 224,
        tokens_type: str = "performer",
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 14,
        num_heads: int = 6,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        token_dim: int = 64,
    ) -> None:
        super().__init__()
        self.img_size, self.num_classes = img_size, num_classes
        self.tokens_to_token = T2TModule(img_size, tokens_type, embed_dim, in_chans, token_dim)
        n = self.tokens_to_token.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sinusoid_encoding(n + 1, embed_dim), requires_grad=False)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, dpr[i])
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.cls_token)
        self.apply(trunc_normal_init)

    def patch_tokens(self, x: Tensor) -> Tensor:
        return self.tokens_to_token(x)

    def stages(self) -> Iterator[tuple[str, int]]:
        g = self.tokens_to_token.grid
        yield "soft split 1 -> attention1", g[0] ** 2
        yield "soft split 2 -> attention2", g[1] ** 2
        yield "soft split 3 -> project", g[2] ** 2


def checkpoint_filter(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Official T2T-ViT checkpoints already use this model's keys: nothing to rename."""
    del model
    return dict(state_dict)


_REPORTED = {  # top-1 (%), params (M), MACs (G) at 224, from the paper / official README
    "t2t_vit_7": (71.7, 4.3, 1.1),
    "t2t_vit_10": (75.2, 5.9, 1.5),
    "t2t_vit_12": (76.5, 6.9, 1.8),
    "t2t_vit_14": (81.5, 21.5, 4.8),
    "t2t_vit_19": (81.9, 39.2, 8.5),
    "t2t_vit_24": (82.3, 64.1, 13.8),
    "t2t_vit_t_14": (81.7, 21.5, 6.1),
    "t2t_vit_t_19": (82.4, 39.2, 9.8),
    "t2t_vit_t_24": (82.6, 64.1, 15.0),
}


def _build(name: str, tokens_type: str, arch: dict[str, Any], **kwargs: Any) -> T2TViT:
    img_size = int(kwargs.get("img_size", 224))
    model = T2TViT(tokens_type=tokens_type, **arch, **kwargs)
    top1, params, macs = _REPORTED[name]
    model.spec = ModelSpec(
        name,
        "t2t_vit",
        {"tokens_type": tokens_type, **arch},
        {"top1": top1, "params_m": params, "macs_g": macs},
    )
    model.preprocess = PreprocessConfig(input_size=(3, img_size, img_size))
    return model


_OVERRIDES = set(inspect.signature(T2TViT).parameters) - {"img_size", "num_classes", "tokens_type"}
"""The constructor keywords create_model passes through (those of the registered arch excepted)."""


def _t2t(name: str, tokens_type: str, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
    arch = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "mlp_ratio": mlp_ratio}

    def constructor(**kwargs: Any) -> T2TViT:
        return _build(name, tokens_type, arch, **kwargs)

    constructor.__name__ = name
    constructor.__doc__ = (
        f"T2T-ViT {name}: {tokens_type} T2T module, {embed_dim}/{depth}/{num_heads}/{mlp_ratio}."
    )
    register_model(
        name,
        family="t2t_vit",
        checkpoint_filter=checkpoint_filter,
        check_img_size=check_img_size,
        overrides=_OVERRIDES - set(arch),
    )(constructor)


_t2t("t2t_vit_7", "performer", 256, 7, 4, 2.0)
_t2t("t2t_vit_10", "performer", 256, 10, 4, 2.0)
_t2t("t2t_vit_12", "performer", 256, 12, 4, 2.0)
_t2t("t2t_vit_14", "performer", 384, 14, 6, 3.0)
_t2t("t2t_vit_19", "performer", 448, 19, 7, 3.0)
_t2t("t2t_vit_24", "performer", 512, 24, 8, 3.0)
_t2t("t2t_vit_t_14", "transformer", 384, 14, 6, 3.0)
_t2t("t2t_vit_t_19", "transformer", 448, 19, 7, 3.0)
_t2t("t2t_vit_t_24", "transformer", 512, 24, 8, 3.0)
