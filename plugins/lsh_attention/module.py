"""Attention cores that own the op's fixed random tensors: drop-in replacements for ``DenseAttention``.

Each core maps q, k, v [B, H, N, E] and the layer's softmax scale to [B, H, N, Dv], like
``vitrt.models.layers.DenseAttention``. The hash vectors and the projection are drawn once from a seed and
kept as buffers: they are saved in the state dict (so an exported or reloaded model computes the same
function), and listed in ``OPTIONAL_STATE`` so that official checkpoints, which lack them, still load
strictly (the seeded draw then stays).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vitrt.errors import ConfigError

from .reference import attention_by_mode
from .spec import XBOX_EXTRA_DIMS, Mode, ScatterbrainAttrs


def draw_hash_vectors(n_hashes: int, head_dim: int, generator: torch.Generator) -> Tensor:
    """[n_hashes, head_dim + 2] standard Gaussian vectors (one per hash round, XBOX+ space), float32."""
    return torch.randn(n_hashes, head_dim + XBOX_EXTRA_DIMS, generator=generator)


def draw_projection(rows: int, head_dim: int, generator: torch.Generator) -> Tensor:
    """[rows, head_dim] orthogonal Gaussian projection for FAVOR+ features, float32.

    Rows come in blocks of head_dim mutually orthogonal directions, each block Haar-distributed (QR of
    a Gaussian matrix with the signs of R's diagonal folded into Q), and every row is scaled by the
    norm of an independent Gaussian vector, so each row alone is distributed as a Gaussian row (the
    Performer paper's orthogonal random features; the Scatterbrain code's ``scaling=0``).
    """
    blocks = []
    for _ in range(-(-rows // head_dim)):
        q, r = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=generator))
        blocks.append((q * torch.sign(torch.diagonal(r)).unsqueeze(0)).t())
    directions = torch.cat(blocks, dim=0)[:rows]
    norms = torch.randn(rows, head_dim, generator=generator).norm(dim=1, keepdim=True)
    return (directions * norms).contiguous()


HASH_STREAM, PROJECTION_STREAM = 0, 1


class _AttentionCore(nn.Module):
    """What the three cores share: validated hyper-parameters, the seeded fixed tensors their mode
    needs (``hash_vectors`` when sparse, ``projection`` when low rank), the op attributes, the lowering
    switch (``vitrt.plugins.lowering``) and the dispatch to the op's reference or, for the plugin lowering,
    to the one custom op it exports as."""

    MODE: Mode
    OPTIONAL_STATE: tuple[str, ...] = ()  # the fixed tensors this core's mode draws (each subclass's)
    lowering = "eager"
    cluster_size = n_hashes = n_features = 0  # 0: not used by this core's mode

    def _init_core(
        self, head_dim: int, seed: int, cluster_size: int = 0, n_hashes: int = 0, n_features: int = 0
    ) -> None:
        self.head_dim = _positive_int("head_dim", head_dim)
        self.seed = seed
        if self.MODE != Mode.PERFORMER:
            self.cluster_size = _positive_int("cluster_size", cluster_size)
            self.n_hashes = _positive_int("n_hashes", n_hashes)
            hv = draw_hash_vectors(n_hashes, head_dim, seeded_generator(seed, HASH_STREAM))
            self.register_buffer("hash_vectors", hv)
        if self.MODE != Mode.LSH:
            self.n_features = _features(n_features)
            proj = draw_projection(n_features // 2, head_dim, seeded_generator(seed, PROJECTION_STREAM))
            self.register_buffer("projection", proj)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> _AttentionCore:
        """``nn.Module._apply`` (what ``.to()``, ``.cuda()``, ``.half()`` run), except that the fixed tensors
        stay float32, the op's spec for them, wherever the module moves: ``model.half()`` would otherwise
        round the hash vectors and the projection to float16 (other hashes than the float32 model's), and
        the kernels would convert them back on every call, two launches per attention."""
        fixed = {name: t for name in self.OPTIONAL_STATE if (t := self._buffers.get(name)) is not None}
        super()._apply(fn, recurse)
        for name, before in fixed.items():
            after = self._buffers[name]
            if after is not None and after.dtype != torch.float32 and before.dtype == torch.float32:
                self._buffers[name] = before.to(device=after.device)
        return self

    def set_lowering(self, lowering: str) -> None:
        """Pick how the op is expressed for export: "eager"/"portable" trace the reference, "plugin"
        one ``vitrt::ScatterbrainAttention`` node. Same function."""
        self.lowering = lowering

    def attrs(self, scale: float) -> ScatterbrainAttrs:
        """The op attributes of this core for a layer with softmax scale ``scale``."""
        return ScatterbrainAttrs(self.MODE, self.cluster_size, self.n_hashes, self.n_features, float(scale))

    def extra_repr(self) -> str:
        used = [
            ("cluster_size", self.cluster_size),
            ("n_hashes", self.n_hashes),
            ("n_features", self.n_features),
        ]
        parts = [f"head_dim={self.head_dim}", *(f"{k}={v}" for k, v in used if v), f"seed={self.seed}"]
        return ", ".join(parts)

    def _run(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """The op through the custom op where it is exported as one node (plugin lowering) or runs on the
        kernels (eager, CUDA tensors or the CPU emulator, no gradient needed: the op registers none);
        the reference otherwise."""
        from vitrt.plugins.cuda_launcher import kernels_apply

        from .torch_op import scatterbrain_call

        hash_vectors: Tensor | None = getattr(self, "hash_vectors", None)
        projection: Tensor | None = getattr(self, "projection", None)
        attrs = self.attrs(scale)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if self.lowering == "plugin" or (self.lowering == "eager" and not needs_grad and kernels_apply(q)):
            return scatterbrain_call(q, k, v, hash_vectors, projection, attrs)
        return attention_by_mode(q, k, v, hash_vectors, projection, attrs)


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """CPU generator for one kind of draw: the hash vectors and the projection of a core come from
    separate streams, so the three cores built with one seed share them (fair baselines)."""
    return torch.Generator().manual_seed(2 * seed + stream)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _features(n_features: int) -> int:
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 2 or n_features % 2:
        raise ConfigError(
            f"n_features must be an even int >= 2 (each projection row gives a +/- pair of features), "
            f"got {n_features!r}"
        )
    return n_features


class ScatterbrainAttention(_AttentionCore):
    """Scatterbrain attention core (LSH-sparse + low-rank): ``forward(q, k, v, scale)``.

    Args:
        head_dim: E, the last dim of q and k.
        cluster_size: tokens per LSH cluster.
        n_hashes: hash rounds.
        n_features: low-rank features (even; the projection has n_features / 2 rows used with both
            signs).
        seed: seeds the draw of ``hash_vectors`` [n_hashes, E + 2] and ``projection`` [m, E].
    """

    OPTIONAL_STATE = ("hash_vectors", "projection")
    MODE = Mode.SCATTERBRAIN
    hash_vectors: Tensor
    projection: Tensor

    def __init__(
        self, head_dim: int, *, cluster_size: int, n_hashes: int, n_features: int, seed: int = 0
    ) -> None:
        super().__init__()
        self._init_core(head_dim, seed, cluster_size, n_hashes, n_features)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """q, k [B, H, N, E], v [B, H, N, Dv], softmax scale -> [B, H, N, Dv] (``scatterbrain_attention``)."""
        return self._run(q, k, v, scale)


class LSHAttention(_AttentionCore):
    """SMYRF LSH-sparse attention core: ``forward(q, k, v, scale)``; owns ``hash_vectors`` [R, E + 2].

    Args:
        head_dim: E.
        cluster_size: tokens per LSH cluster.
        n_hashes: hash rounds.
        seed: seeds the draw of ``hash_vectors``.
    """

    OPTIONAL_STATE = ("hash_vectors",)
    MODE = Mode.LSH
    hash_vectors: Tensor

    def __init__(self, head_dim: int, *, cluster_size: int, n_hashes: int, seed: int = 0) -> None:
        super().__init__()
        self._init_core(head_dim, seed, cluster_size=cluster_size, n_hashes=n_hashes)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """q, k [B, H, N, E], v [B, H, N, Dv], softmax scale -> [B, H, N, Dv] (see ``lsh_attention``)."""
        return self._run(q, k, v, scale)


class PerformerAttention(_AttentionCore):
    """Performer FAVOR+ attention core: ``forward(q, k, v, scale)``; owns ``projection`` [m, E].

    Args:
        head_dim: E.
        n_features: features (even; the projection has n_features / 2 rows used with both signs).
        seed: seeds the draw of ``projection``.
    """

    OPTIONAL_STATE = ("projection",)
    MODE = Mode.PERFORMER
    projection: Tensor

    def __init__(self, head_dim: int, *, n_features: int, seed: int = 0) -> None:
        super().__init__()
        self._init_core(head_dim, seed, n_features=n_features)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """q, k [B, H, N, E], v [B, H, N, Dv], softmax scale -> [B, H, N, Dv] (``performer_attention``)."""
        return self._run(q, k, v, scale)
