"""ScatterbrainAttention on the GPU: the kernels of ``scatterbrain.cu`` launched on raw device pointers
(what the TensorRT plugin's ``enqueue`` does) or on torch CUDA tensors (``scatterbrain_cuda``).

Same function as ``reference.attention_by_mode`` for the three modes of ``spec.Mode``. q, k [B, H, N, E]
and v [B, H, N, Dv] share one dtype (float32 or float16), hash_vectors [R, E + 2] and projection [m, E]
are float32; the output [B, H, N, Dv] has q's dtype; everything in between is float32 in the workspace.
Launch sequence (see scatterbrain.cu): features, kv_reduce (low rank), sort + cluster (sparse), combine.
The cluster kernel (``CLUSTER_KERNELS``) runs on tensor cores for float16 with clusters of at most 64
tokens (and the further limits of ``cluster_on_tensor_cores``), on CUDA cores otherwise: with a whole
cluster's scores in shared memory where they fit, in key tiles where they do not (any cluster size).

Memory: the workspace holds per (b, h) the hashes and sort permutations (R P floats / ints each), the
squared norms (2 P), the features (2 P F floats), and every round's output rows in token order
(R P (Dv + 2) floats): O(B H N (R Dv + F)), never N x N. torch and cuda-python are imported lazily.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitrt.plugins.cuda_launcher import (
    KERNEL_SUFFIX,
    aligned_layout,
    check_kernel_tensor,
    f32,
    i32,
    kernel_device,
    kernel_stream,
    kernel_suffix,
    launch,
    load_module,
    new_workspace,
    ptr,
    tensor_dtype_name,
)

from .spec import (
    PLUGIN_NAME,
    SUPPORTED_DTYPES,
    Mode,
    ScatterbrainAttrs,
    padded_length,
)

if TYPE_CHECKING:
    from torch import Tensor

SOURCE = "scatterbrain"
"""The .cu source (``plugins/lsh_attention/scatterbrain.cu``) whose fatbin holds the kernels."""
KERNELS = (
    *(
        f"vitrt_sb_{stage}_{sfx}"
        for stage in ("features", "cluster", "combine")
        for sfx in KERNEL_SUFFIX.values()
    ),
    "vitrt_sb_kv_reduce",
    "vitrt_sb_sort",
    "vitrt_sb_sort_few",
    "vitrt_sb_sort_tiles",
    *(f"vitrt_sb_cluster_mma{nt}_f16" for nt in range(1, 9)),
    *(f"vitrt_sb_cluster_tiled_{sfx}" for sfx in KERNEL_SUFFIX.values()),
    *(f"vitrt_sb_combine_global_{sfx}" for sfx in KERNEL_SUFFIX.values()),
)
"""Every kernel this module launches (the build test checks each is in the fatbin)."""
CHUNK = 64
"""Tokens per block of the features kernel (and per partial low-rank sum), unless its shared memory asks
for fewer (wide rows)."""
_THREADS = 256
_KV_THREADS = 128
_KV_LANES = 8  # lanes per output of vitrt_sb_kv_reduce (scatterbrain.cu kReduceLanes)
_QUERIES_PER_BLOCK = (64, 32, 16, 8, 4)  # combine: queries per block, in order of preference
_STAGED_QUERIES_MIN = 16  # combine: the fewest queries per block that stage the low-rank state
_CLUSTER_SLOTS = 48  # target queries per block of the cluster kernel
_NO_OPT_IN = 48 * 1024  # dynamic shared memory that needs no opt-in
_MAX_SHARED = 96 * 1024  # kept below the smallest opt-in limit of the targets (99 KiB, sm_120)
_RADIX_MAX_P = 8192  # the one-tile radix sort's largest P (8 keys per thread, 1024 threads); tiles beyond
SORT_ITEMS = (1, 2, 4, 8)
"""Keys per thread the one-tile radix sort takes (``vitrt_sb_sort_few``: 1 or 2, ``vitrt_sb_sort``: 4 or 8);
``sort_threads`` gives its block."""
_SORT_MAX_THREADS = 1024
_SORT_TILE_THREADS = 1024  # threads of vitrt_sb_sort_tiles: tiles of 8 x 1024 keys (tests lower it)
MAX_SORT_TOKENS = (_MAX_SHARED // (4 * 256) - _SORT_TILE_THREADS // 32) * 8 * _SORT_TILE_THREADS
"""The most tokens (N padded to the cluster size) the sort takes: 64 tiles of 8192 keys, whose shared
memory (``_sort_bytes``) stays within 96 KiB."""
_TILE = 3  # cluster kernel: score tiles of 3 x 3 (scatterbrain.cu kTile)
MMA_MAX_CLUSTER = 64
"""The largest cluster size of the tensor-core cluster kernel (float16; one entry per 8-key tile count)."""
_MMA_WARPS = 8  # most warps of a tensor-core cluster block (scatterbrain.cu kMmaWarpsMax)
_TILED_SHAPES = ((32, 32), (32, 16), (16, 16), (16, 8), (8, 8))
"""(query rows, keys) per block and tile of the tiled cluster kernel, in order of preference."""
CLUSTER_KERNELS = ("mma", "staged", "tiled")
"""The cluster kernel's forms: "mma" (tensor cores: float16, c <= MMA_MAX_CLUSTER, see
``cluster_on_tensor_cores``), "staged" (CUDA cores, a whole cluster's rows and c x c scores in shared
memory: G clusters per block) and "tiled" (CUDA cores, QS query rows of a cluster per block, its keys swept
in tiles with an online softmax: any cluster size). The launcher takes the first that can run
(``cluster_kernels``)."""


@dataclass(frozen=True)
class QKVLayout:
    """Where q, k [B, H, N, E] and v [B, H, N, Dv] lie in memory, channels at unit stride: the heads H and the
    (batch, head, token) strides in elements of q and k (one layout for both) and of v. The kernels read
    such rows in place, so q, k and v can be views of a qkv projection's output (``qkv.unbind``): no copy."""

    heads: int
    qk: tuple[int, int, int]
    v: tuple[int, int, int]

    @staticmethod
    def packed(d: AttentionDims) -> QKVLayout:
        """C-contiguous [BH, N, E] and [BH, N, Dv] (any heads: one head per batch-head row)."""
        return QKVLayout(1, (d.n * d.e, 0, d.e), (d.n * d.dv, 0, d.dv))

    def args(self) -> list[ctypes.c_int32]:
        """The kernels' SB_QKV_LAYOUT parameters."""
        return [i32(self.heads), *map(i32, self.qk), *map(i32, self.v)]


def _pitch4(n: int) -> int:
    """Shared row pitch in floats: whole 16-byte units, an odd number of them (scatterbrain.cu pitch4)."""
    return 4 * (((n + 3) // 4) | 1)


def _r4(n: int) -> int:
    """n rounded up to a multiple of 4 floats (16 bytes): every shared region's size."""
    return (n + 3) & ~3


@dataclass(frozen=True)
class AttentionDims:
    """Static sizes of one launch: BH = batch x heads, N tokens, E (q, k) and Dv (v) channels, the
    mode, cluster size c, rounds R and projection rows m (features F = 2 m)."""

    bh: int
    n: int
    e: int
    dv: int
    mode: int
    c: int
    r: int
    m: int

    @property
    def sparse(self) -> bool:
        """Modes with hashing and clusters (SCATTERBRAIN, LSH)."""
        return self.mode != Mode.PERFORMER

    @property
    def low_rank(self) -> bool:
        """Modes with FAVOR+ features (SCATTERBRAIN, PERFORMER)."""
        return self.mode != Mode.LSH

    @property
    def p(self) -> int:
        """Padded length: N rounded up to a multiple of c (sparse modes), else N."""
        return padded_length(self.n, self.c) if self.sparse else self.n

    @property
    def f(self) -> int:
        """Features 2 m (0 in mode LSH)."""
        return 2 * self.m if self.low_rank else 0

    @property
    def chunk(self) -> int:
        """Tokens per block of the features kernel: CHUNK, halved while it would need more than 96 KiB of
        shared memory."""
        chunk = CHUNK
        while chunk > 8 and _features_floats(self, chunk) * 4 > _MAX_SHARED:
            chunk //= 2
        return chunk

    @property
    def nchunk(self) -> int:
        """Token chunks of the features kernel."""
        return -(-self.p // self.chunk)

    @property
    def sort_item_counts(self) -> list[int]:
        """The keys per thread (of ``SORT_ITEMS``) whose one-tile sort block stays within 1024 threads."""
        return [i for i in SORT_ITEMS if sort_threads(self.p, i) <= _SORT_MAX_THREADS]

    @property
    def sort_items(self) -> int:
        """Keys per thread of the one-tile radix sort: the fewest of ``SORT_ITEMS`` whose block stays
        within 1024 threads (1 up to P = 1024, 2 up to 2048, 4 up to 4096, else 8). A sort block is one
        (side, round, batch x head) row, alone on its SM wherever the rows are fewer than the SMs (T2T-ViT's
        first attention has 4 B of them): each pass ranks a thread's keys one after another, so fewer keys
        per thread and more warps shorten the block's chain (before: 4 up to P = 2048, else 8)."""
        return self.sort_item_counts[0]

    @property
    def sort_threads(self) -> int:
        """Threads of a radix-sort block (``sort_threads`` at ``sort_items``)."""
        return sort_threads(self.p, self.sort_items)

    @property
    def groups(self) -> int:
        """Clusters per block of the cluster kernel: about 48 queries, fewer where their shared memory
        would need an opt-in (more than 48 KiB)."""
        return _groups_within(max(1, _CLUSTER_SLOTS // max(1, self.c)), lambda g: _cluster_bytes(self, g))

    @property
    def cluster_threads(self) -> int:
        """Threads of a cluster block: one per 3 x 3 score tile, 64 to 256."""
        nt = -(-self.c // _TILE)
        return min(256, max(64, 32 * -(-self.groups * nt * nt // 32)))

    @property
    def combine_plan(self) -> tuple[int, bool]:
        """(queries per block, whether the low-rank state is staged) of the combine kernel: the first of 64,
        32 and 16 queries whose shared memory (the whole low-rank state, F x Dv, plus F x queries of q') is
        within 96 KiB; past that the state is read from global memory and only q' is staged, for the first of
        64, 32, 16, 8 and 4 queries that fits (else 4, which the launch refuses). With two rounds at Dv = 64:
        staged with 64 queries up to 186 features, 32 up to 250, 16 up to 300; then from global memory, 64
        queries up to 374 features (any Dv), 4 up to 6,134. Each query's sums run in the same order whatever
        the plan: the same bits."""
        # Staging pays while a block has many queries to share it: with 8 or 4, a block would copy up to
        # 96 KiB into shared memory for 4 queries, where reading it through L1 with 64 a block moves less.
        plans = [(qpb, True) for qpb in _QUERIES_PER_BLOCK if qpb >= _STAGED_QUERIES_MIN]
        for qpb, staged in plans + [(qpb, False) for qpb in _QUERIES_PER_BLOCK]:
            if 4 * _combine_floats(self, qpb, staged) <= _MAX_SHARED:
                return qpb, staged
        return _QUERIES_PER_BLOCK[-1], False

    @property
    def tiled_rows(self) -> tuple[int, int]:
        """(QS, KT) of the tiled cluster kernel: query rows per block and keys per tile, the first of
        _TILED_SHAPES within 48 KiB of shared memory, else within 96 KiB, each at most c; (0, 0) where none
        fits."""
        for limit in (_NO_OPT_IN, _MAX_SHARED):
            for qs, kt in _TILED_SHAPES:
                if _tiled_bytes(self, qs, kt) <= limit:
                    return min(qs, self.c), min(kt, self.c)
        return 0, 0

    @property
    def mma_steps(self) -> int:
        """KS = ceil(c / 16), the 16-key steps of the tensor-core cluster kernel (its warps per cluster);
        0 where c > MMA_MAX_CLUSTER, the mode has no clusters, or F >= 2^15 (the kernel's weights, up to F,
        are scaled by 2^(15 - bits(F)) into float16's range)."""
        fits = self.sparse and self.c <= MMA_MAX_CLUSTER and self.f < 2**15
        return -(-self.c // 16) if fits else 0

    @property
    def mma_groups(self) -> int:
        """Clusters per block of the tensor-core cluster kernel: as many as _MMA_WARPS warps take, fewer
        where their shared memory would need an opt-in (more than 48 KiB)."""
        most = max(1, _MMA_WARPS // max(1, self.mma_steps))
        return _groups_within(most, lambda g: _cluster_mma_bytes(self, g))

    @staticmethod
    def of(batch: int, heads: int, n: int, e: int, dv: int, attrs: ScatterbrainAttrs) -> AttentionDims:
        """The dims of an op call with ``attrs``."""
        mode = Mode(attrs.mode)
        sparse, low_rank = mode != Mode.PERFORMER, mode != Mode.LSH
        return AttentionDims(
            bh=batch * heads,
            n=n,
            e=e,
            dv=dv,
            mode=int(mode),
            c=attrs.cluster_size if sparse else 0,
            r=attrs.n_hashes if sparse else 0,
            m=attrs.projection_rows if low_rank else 0,
        )


# ---- shared memory: the layouts of scatterbrain.cu, in floats (int32 regions count as floats) -----------


def _features_floats(d: AttentionDims, chunk: int) -> int:
    nout, f = d.m + (d.r if d.sparse else 0), d.f
    xs, vp = _pitch4(d.e), _pitch4(d.dv + 1)
    union = max(2 * chunk * xs, chunk * (vp + _r4(f)) if d.low_rank else 0)
    return nout * xs + union + _r4(2 * chunk * (nout | 1)) + _r4(2 * chunk) + _r4(chunk)


def _groups_within(g: int, bytes_of: Callable[[int], int]) -> int:
    """The largest count of clusters per block, at most ``g`` and at least 1, whose shared memory
    (``bytes_of(count)``) needs no opt-in (48 KiB)."""
    while g > 1 and bytes_of(g) > _NO_OPT_IN:
        g -= 1
    return g


def _cluster_bytes(d: AttentionDims, g: int) -> int:
    qm, sb = g * d.c, d.mode == Mode.SCATTERBRAIN
    multi = sb and d.r > 1
    es, fs, vp, cs, nt = _pitch4(d.e), _pitch4(d.f), _pitch4(d.dv), d.c | 1, -(-d.c // _TILE)
    floats = 2 * qm * es + qm * vp + (2 * qm * fs if sb else 0) + _r4(qm * cs) * (2 if sb else 1)
    floats += 2 * _r4(qm * nt) + _r4(qm) * (2 if sb else 1)
    ints = 2 * _r4(qm) + (2 * _r4(d.r * qm) if multi else 0)
    return 4 * (floats + ints)


def _cluster_mma_bytes(d: AttentionDims, g: int) -> int:
    """Bytes of the tensor-core cluster kernel's shared memory (scatterbrain.cu cluster_attention_mma):
    float16 query and key rows (pitch 16 ceil(E / 16) + 8 halves, g c + 16 rows), the values transposed
    (8 ceil(Dv / 8) rows of g 16 KS + 8 halves), then int32 slot tokens, buckets and float32 pls."""
    if not d.mma_steps:
        return 0
    qm, sb = g * d.c, d.mode == Mode.SCATTERBRAIN
    ep, vtp = 16 * -(-d.e // 16) + 8, g * 16 * d.mma_steps + 8
    halves = 2 * (qm + 16) * ep + 8 * -(-d.dv // 8) * vtp
    words = 2 * _r4(qm) + (2 * _r4(d.r * qm) if sb and d.r > 1 else 0) + (_r4(qm) if sb else 0)
    return 2 * halves + 4 * words


def _tiled_bytes(d: AttentionDims, qs: int, kt: int) -> int:
    """Bytes of the tiled cluster kernel's shared memory (scatterbrain.cu cluster_attention_tiled) for qs
    query rows per block and tiles of kt keys."""
    sb, multi = d.mode == Mode.SCATTERBRAIN, d.mode == Mode.SCATTERBRAIN and d.r > 1
    es, fs, vp, kp = _pitch4(d.e), _pitch4(d.f), _pitch4(d.dv), kt | 1
    floats = (qs + kt) * (es + (fs if sb else 0)) + kt * vp + _r4(qs * kp) * (2 if sb else 1) + qs * vp
    floats += 3 * _r4(qs) + (_r4(qs) if sb else 0)
    ints = _r4(qs) + _r4(kt) + (_r4(d.r * qs) + _r4(d.r * kt) if multi else 0)
    return 4 * (floats + ints)


def sort_threads(p: int, items: int) -> int:
    """Threads of a one-tile radix-sort block for P positions at ``items`` keys per thread: whole warps of
    32 x items positions covering P."""
    return 32 * -(-p // (32 * items))


def _sort_bytes(d: AttentionDims, items: int | None = None) -> int:
    """Dynamic shared memory of the sort (``items``: keys per thread of the one-tile sort; None:
    ``d.sort_items``)."""
    if d.p > _RADIX_MAX_P:  # vitrt_sb_sort_tiles: [256][W] warp counts, [256][NT] tile offsets
        return 4 * 256 * (_SORT_TILE_THREADS // 32 + -(-d.p // (8 * _SORT_TILE_THREADS)))
    items = d.sort_items if items is None else items
    threads = sort_threads(d.p, items)
    return 4 * (2 * items * threads + 256 * (threads // 32))


def _sort_items_choice(d: AttentionDims, sort_items: int | None) -> int:
    """The one-tile sort's keys per thread: ``sort_items`` checked (one of ``SORT_ITEMS``, its block within
    1024 threads), or the launcher's (``AttentionDims.sort_items``) for None."""
    if sort_items is None:
        return d.sort_items
    fits = d.sort_item_counts
    if sort_items not in fits:
        raise ValueError(f"sort_items must be one of {fits} for {d.p} positions, got {sort_items!r}")
    return sort_items


def _kv_stride(d: AttentionDims) -> int:
    """Floats of one (b, h)'s low-rank state: [F][4 ceil(Dv / 4)] (zero padded), then sum k' [F]."""
    return d.f * 4 * -(-d.dv // 4) + _r4(d.f)


def _combine_floats(d: AttentionDims, qpb: int, staged: bool = True) -> int:
    """Floats of the combine kernel's shared memory for qpb queries per block, with the low-rank state
    staged or read from global memory (scatterbrain.cu combine)."""
    r = d.r if d.sparse else 0
    state = _kv_stride(d) if staged else 0
    return state + d.f * _r4(qpb) + _r4(2 * qpb * r) + _r4(qpb) + _r4(qpb * r) + 2 * _r4(qpb)


def _regions(d: AttentionDims) -> dict[str, int]:
    bh, p, r, f, dv = d.bh, d.p, d.r, d.f, d.dv
    sizes = {"kstat": 4 * bh * d.nchunk * 2}
    if d.sparse:
        sizes |= {"qstat": 4 * bh * d.nchunk, "qn": 4 * bh * p, "kn": 4 * bh * p}
        sizes |= {"hq": 4 * bh * r * p, "hk": 4 * bh * r * p}
    if d.low_rank:
        sizes |= {
            "qf": 4 * bh * p * f,
            "kf": 4 * bh * p * f,
            "pls": 4 * bh * p,
            "kv_part": 4 * bh * d.nchunk * f * (dv + 1),
            "kv": 4 * bh * _kv_stride(d),
        }
    if d.sparse:
        sizes |= {name: 4 * bh * r * p for name in ("q_perm", "q_inv", "k_perm", "k_inv")}
        sizes |= {"rnum": 4 * bh * r * p * dv, "raux": 4 * bh * r * p * 2}
    return sizes


def workspace_layout(d: AttentionDims) -> dict[str, int]:
    """Byte offset of every workspace region the mode uses (256-byte aligned), plus "end"."""
    return aligned_layout(_regions(d))


def workspace_bytes(d: AttentionDims) -> int:
    """Workspace one launch needs, in bytes."""
    return workspace_layout(d)["end"]


def shared_bytes(d: AttentionDims) -> dict[str, int]:
    """Dynamic shared memory of every kernel, in bytes (the launcher opts in above 48 KiB)."""
    chunk = d.chunk
    return {
        "features": 4 * _features_floats(d, chunk),
        "sort": _sort_bytes(d) if d.sparse else 0,
        "cluster": _cluster_bytes(d, d.groups) if d.sparse else 0,
        "cluster_mma": _cluster_mma_bytes(d, d.mma_groups) if d.sparse else 0,
        "cluster_tiled": _tiled_bytes(d, *d.tiled_rows) if d.sparse and d.tiled_rows[0] else 0,
        "combine": 4 * _combine_floats(d, *d.combine_plan),
    }


def cluster_on_tensor_cores(d: AttentionDims, dtype: str) -> bool:
    """Whether the cluster kernel can run on tensor cores (``vitrt_sb_cluster_mma<NT>_f16``): float16 I/O,
    a mode with clusters, clusters of at most MMA_MAX_CLUSTER tokens, fewer than 2^15 features, and shared
    memory for one cluster per block within 96 KiB. The launcher takes it wherever it can."""
    return dtype == "float16" and d.mma_steps > 0 and _cluster_mma_bytes(d, 1) <= _MAX_SHARED


def cluster_kernels(d: AttentionDims, dtype: str) -> tuple[str, ...]:
    """The forms of the cluster kernel (``CLUSTER_KERNELS``) that can run ``d`` with ``dtype`` I/O, in the
    launcher's order of preference: "mma" where ``cluster_on_tensor_cores``, "staged" where one cluster's
    shared memory is within 96 KiB, "tiled" where its smallest tiles are. Empty for PERFORMER (no clusters)
    and for rows too wide for every form."""
    if not d.sparse:
        return ()
    kinds = (
        ("mma", cluster_on_tensor_cores(d, dtype)),
        ("staged", _cluster_bytes(d, 1) <= _MAX_SHARED),
        ("tiled", d.tiled_rows[0] > 0),
    )
    return tuple(name for name, fits in kinds if fits)


_CLUSTER_LIMITS = {
    "mma": "float16, clusters of at most {mx} tokens, fewer than 2^15 features and 16 query rows within "
    "96 KiB of shared memory",
    "staged": "one cluster's rows and c x c scores within 96 KiB of shared memory",
    "tiled": "8 query rows and 8 key rows within 96 KiB of shared memory",
}


def _cluster_choice(d: AttentionDims, dtype: str, cluster: str | None) -> str:
    """The cluster kernel form to launch (``cluster``: None or one of CLUSTER_KERNELS): ``cluster`` if it
    can run (ValueError naming its limits if not), else the launcher's choice; ValueError where no form
    can run."""
    can = cluster_kernels(d, dtype)
    what = f"{dtype}, mode {Mode(d.mode).name}, cluster size {d.c}, {d.f} features, E={d.e}, Dv={d.dv}"
    if not can:
        raise ValueError(
            f"no cluster kernel can run {what}: the tiled one needs {_CLUSTER_LIMITS['tiled']}; "
            "use narrower heads (more heads of fewer channels), or run the op on the CPU (the reference)"
        )
    if cluster is None:
        return can[0]
    if cluster not in can:
        need = _CLUSTER_LIMITS[cluster].format(mx=MMA_MAX_CLUSTER)
        raise ValueError(
            f"the {cluster!r} cluster kernel needs {need}; got {what}. It can run on {list(can)}: pass one "
            "of those, or cluster=None (the launcher's choice)"
        )
    return cluster


def enqueue(
    q: int,
    k: int,
    v: int,
    hash_vectors: int,
    projection: int,
    out: int,
    workspace: int,
    d: AttentionDims,
    scale: float,
    dtype: str,
    stream: int,
    *,
    cluster: str | None = None,
    sort_items: int | None = None,
    layout: QKVLayout | None = None,
) -> None:
    """The whole op on raw device pointers: q, k [BH, N, E], v [BH, N, Dv] of ``dtype``
    ("float32" / "float16"), hash_vectors [R, E + 2] and projection [m, E] float32 (0 where the mode has
    none) -> out [BH, N, Dv] of ``dtype``. ``workspace``: ``workspace_bytes(d)`` bytes; ``stream``: a CUDA
    stream handle as an int; ``scale``: the softmax scale t. ``cluster``: the cluster kernel's form (one of
    ``CLUSTER_KERNELS``; ValueError where it cannot run ``d``); None: the launcher's choice
    (``cluster_kernels``). ``sort_items``: keys per thread of the one-tile sort (``SORT_ITEMS``); None: the
    launcher's (``AttentionDims.sort_items``). ``layout``: q, k and v's strides (``QKVLayout``); None: packed
    (C-contiguous). Asynchronous; the arguments are checked before anything is launched."""
    sfx = kernel_suffix(dtype, PLUGIN_NAME)
    if cluster is not None and cluster not in CLUSTER_KERNELS:
        raise ValueError(f"cluster must be None or one of {CLUSTER_KERNELS}, got {cluster!r}")
    form = _cluster_choice(d, dtype, cluster) if d.sparse else ""
    items = _sort_items_choice(d, sort_items) if d.sparse and d.p <= _RADIX_MAX_P else 0
    if d.sparse and _sort_bytes(d) > _MAX_SHARED:
        raise ValueError(
            f"{d.p} tokens per attention (N = {d.n} padded to the cluster size) are more than the sort "
            f"takes ({MAX_SORT_TOKENS}); use fewer tokens (a lower resolution) or run the op on the CPU "
            "(the reference)"
        )
    mod = load_module(SOURCE)
    lay = workspace_layout(d)
    w = {name: workspace + off for name, off in lay.items()}

    def at(name: str) -> int:
        return w.get(name, 0)

    smem = shared_bytes(d)
    root = math.sqrt(scale)
    rr = root * root  # the reference's (root * root), not scale itself
    log_norm = math.log(d.f) / 2 if d.f else 0.0
    n_tok, chunk = d.p, d.chunk
    # 16-byte vector loads / stores where rows are whole vectors and the pointers are aligned
    size = 2 if dtype == "float16" else 4
    per16 = 16 // size
    layout = QKVLayout.packed(d) if layout is None else layout
    vecq = int(d.e % per16 == 0 and q % 16 == 0 and k % 16 == 0 and all(s % per16 == 0 for s in layout.qk))
    vecv = int(d.dv % per16 == 0 and v % 16 == 0 and all(s % per16 == 0 for s in layout.v))
    vec_out = int(d.dv % 4 == 0 and out % (4 * size) == 0)
    launch(
        mod,
        f"vitrt_sb_features_{sfx}",
        (d.nchunk, d.bh, 1),
        (_THREADS, 1, 1),
        [ptr(q), ptr(k), ptr(v), ptr(hash_vectors), ptr(projection), ptr(at("kstat")), ptr(at("qstat")),
         ptr(at("qn")), ptr(at("kn")), ptr(at("hq")), ptr(at("hk")), ptr(at("qf")), ptr(at("kf")),
         ptr(at("pls")), ptr(at("kv_part")), i32(d.n), i32(d.p), i32(d.e), i32(d.dv), i32(d.r), i32(d.m),
         f32(root), f32(rr), f32(log_norm), i32(chunk), i32(n_tok), i32(d.nchunk), i32(d.mode), i32(vecq),
         i32(vecv), *layout.args()],
        stream,
        shared_mem=smem["features"],
    )  # fmt: skip
    if d.low_rank:
        launch(
            mod,
            "vitrt_sb_kv_reduce",
            (-(-(_kv_stride(d) * _KV_LANES) // _KV_THREADS), d.bh, 1),
            (_KV_THREADS, 1, 1),
            [
                ptr(at("kv_part")),
                ptr(at("kv")),
                ptr(at("kstat")),
                ptr(at("kf")),
                ptr(at("pls")),
                i32(d.f),
                i32(d.dv),
                i32(d.nchunk),
                i32(d.p),
            ],
            stream,
        )
    if d.sparse:
        sort_args: list[ctypes.c_uint64 | ctypes.c_int32 | ctypes.c_float] = [
            ptr(at("qn")), ptr(at("kn")), ptr(at("qstat")), ptr(at("kstat")), ptr(hash_vectors),
            ptr(at("hq")), ptr(at("hk")), ptr(at("q_perm")), ptr(at("q_inv")), ptr(at("k_perm")),
            ptr(at("k_inv")), i32(d.n), i32(d.p), i32(d.e), i32(d.r), i32(d.nchunk),
        ]  # fmt: skip
        if d.p <= _RADIX_MAX_P:
            launch(
                mod, "vitrt_sb_sort" if items >= 4 else "vitrt_sb_sort_few", (2 * d.r, d.bh, 1),
                (sort_threads(d.p, items), 1, 1),
                [*sort_args, i32(items)], stream, shared_mem=_sort_bytes(d, items),
            )  # fmt: skip
        else:
            launch(
                mod, "vitrt_sb_sort_tiles", (2 * d.r, d.bh, 1), (_SORT_TILE_THREADS, 1, 1),
                sort_args, stream, shared_mem=smem["sort"],
            )  # fmt: skip
        clusters = d.p // d.c
        if form == "mma":
            # one entry per NT = ceil(c / 8) key tiles; KS = ceil(c / 16) warps per cluster
            kernel, region, g = f"vitrt_sb_cluster_mma{-(-d.c // 8)}_f16", "cluster_mma", d.mma_groups
            blocks, threads, shape = -(-clusters // g), 32 * d.mma_steps * g, [i32(g)]
        elif form == "staged":
            kernel, region, g = f"vitrt_sb_cluster_{sfx}", "cluster", d.groups
            blocks, threads, shape = -(-clusters // g), d.cluster_threads, [i32(g)]
        else:  # a block per QS query rows of a cluster, its keys in tiles of KT
            kernel, region, (qs, kt) = f"vitrt_sb_cluster_tiled_{sfx}", "cluster_tiled", d.tiled_rows
            blocks, threads, shape = clusters * -(-d.c // qs), _THREADS, [i32(qs), i32(kt)]
        launch(
            mod,
            kernel,
            (blocks, d.r, d.bh),
            (threads, 1, 1),
            [ptr(q), ptr(k), ptr(v), ptr(at("qf")), ptr(at("kf")), ptr(at("pls")), ptr(at("q_perm")),
             ptr(at("q_inv")), ptr(at("k_perm")), ptr(at("k_inv")), ptr(at("rnum")), ptr(at("raux")),
             i32(d.n), i32(d.p), i32(d.e), i32(d.dv), i32(d.r), i32(d.f), i32(d.c), *shape,
             f32(scale), i32(d.mode), i32(vecq), i32(vecv), *layout.args()],
            stream,
            shared_mem=smem[region],
        )  # fmt: skip
    qpb, kv_staged = d.combine_plan
    launch(
        mod,
        f"vitrt_sb_combine_{sfx}" if kv_staged else f"vitrt_sb_combine_global_{sfx}",
        (-(-d.n // qpb), d.bh, 1),
        (_THREADS, 1, 1),
        [ptr(at("qf")), ptr(at("pls")), ptr(at("kv")), ptr(at("rnum")), ptr(at("raux")), ptr(out), i32(d.n),
         i32(d.p), i32(d.dv), i32(d.r), i32(d.f), i32(qpb), i32(d.mode), i32(vec_out)],
        stream,
        shared_mem=smem["combine"],
    )  # fmt: skip


# ---- torch face ----------------------------------------------------------------------------------------


def _checked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
) -> AttentionDims:
    from .spec import check_inputs

    check_inputs(q, k, v, hash_vectors, projection)
    for name, t in (("q", q), ("k", k), ("v", v), ("hash_vectors", hash_vectors), ("projection", projection)):
        if t is not None:
            check_kernel_tensor(name, t, q.device)
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q has dtype {q.dtype}; {PLUGIN_NAME} supports {SUPPORTED_DTYPES}")
    b, h, n, e = q.shape
    d = AttentionDims.of(b, h, n, e, v.shape[-1], attrs)
    if d.sparse and (hash_vectors is None or hash_vectors.shape[0] != attrs.n_hashes):
        raise ValueError(f"mode {Mode(attrs.mode).name} needs hash_vectors [{attrs.n_hashes}, {e + 2}]")
    if d.low_rank and (projection is None or projection.shape[0] != attrs.projection_rows):
        raise ValueError(f"mode {Mode(attrs.mode).name} needs projection [{attrs.projection_rows}, {e}]")
    return d


def _run(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
    out: Tensor | None,
    cluster: str | None = None,
    sort_items: int | None = None,
) -> tuple[Tensor, Tensor, AttentionDims]:
    import torch

    d = _checked(q, k, v, hash_vectors, projection, attrs)
    layout = _qkv_layout(q, k, v)
    if layout is None:
        q, k, v = (t.contiguous() for t in (q, k, v))
    fixed = [None if t is None else t.to(torch.float32).contiguous() for t in (hash_vectors, projection)]
    shape = (*q.shape[:3], v.shape[-1])
    if out is None:
        out = q.new_empty(shape)
    elif (
        tuple(out.shape) != shape or out.dtype != q.dtype or not out.is_contiguous() or out.device != q.device
    ):
        raise ValueError(f"out must be a contiguous {shape} {q.dtype} tensor on {q.device}")
    work = new_workspace(workspace_bytes(d), q)
    with kernel_device(q):
        enqueue(
            q.data_ptr(), k.data_ptr(), v.data_ptr(),
            0 if fixed[0] is None else fixed[0].data_ptr(), 0 if fixed[1] is None else fixed[1].data_ptr(),
            out.data_ptr(), work.data_ptr(), d, attrs.scale, tensor_dtype_name(q),
            kernel_stream(q), cluster=cluster, sort_items=sort_items, layout=layout,
        )  # fmt: skip
    return out, work, d


def _qkv_layout(q: Tensor, k: Tensor, v: Tensor) -> QKVLayout | None:
    """q, k and v's layout where the kernels can read them in place (channels at unit stride, q and k with
    one set of strides, every stride an int32), else None: they are made contiguous. T2T-ViT's token
    attentions pass views of their qkv projection, whose rows are 3 E apart."""
    if q.stride() != k.stride() or q.stride(3) != 1 or v.stride(3) != 1:
        return None
    qk, vs = (q.stride(0), q.stride(1), q.stride(2)), (v.stride(0), v.stride(1), v.stride(2))
    if any(not 0 <= s < 2**31 for s in (*qk, *vs)):
        return None
    return QKVLayout(q.shape[1], qk, vs)


def scatterbrain_cuda(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
    *,
    out: Tensor | None = None,
    cluster: str | None = None,
    sort_items: int | None = None,
) -> Tensor:
    """``reference.attention_by_mode`` with the CUDA kernels, on torch's current stream.

    q, k [B, H, N, E], v [B, H, N, Dv] (CUDA, or CPU under
    ``vitrt.plugins.cuda_emulation.emulated_kernels()``; one dtype: float32 or float16);
    hash_vectors [R, E + 2] (None in mode PERFORMER) and projection [m, E] (None in mode LSH) ->
    [B, H, N, Dv] in q's dtype.
    ``out`` receives the result when given (contiguous; the tests pre-fill it with NaN).
    ``cluster``: the cluster kernel's form, ``sort_items`` the sort's keys per thread (``enqueue``).
    """
    return _run(q, k, v, hash_vectors, projection, attrs, out, cluster, sort_items)[0]


def scatterbrain_cuda_debug(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hash_vectors: Tensor | None,
    projection: Tensor | None,
    attrs: ScatterbrainAttrs,
    *,
    cluster: str | None = None,
    sort_items: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``scatterbrain_cuda`` plus copies of the kernels' intermediates, for tests: "q_hash", "k_hash"
    [B, H, R, P] float32 (padding +inf), "q_perm", "k_perm" [B, H, R, P] int64 (sorted slot -> token),
    "q_prime", "k_prime" [B, H, P, 2m] and "pls" [B, H, P] float32, for the regions the mode has.
    ``cluster``, ``sort_items``: as ``enqueue`` takes them."""
    import torch

    out, work, d = _run(q, k, v, hash_vectors, projection, attrs, None, cluster, sort_items)
    lay = workspace_layout(d)
    b, h = q.shape[:2]
    views: dict[str, Tensor] = {}

    def region(name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
        count = math.prod(shape)
        return work[lay[name] : lay[name] + 4 * count].view(dtype).view(shape).clone()

    if d.sparse:
        views["q_hash"] = region("hq", torch.float32, (b, h, d.r, d.p))
        views["k_hash"] = region("hk", torch.float32, (b, h, d.r, d.p))
        views["q_perm"] = region("q_perm", torch.int32, (b, h, d.r, d.p)).long()
        views["k_perm"] = region("k_perm", torch.int32, (b, h, d.r, d.p)).long()
    if d.low_rank:
        views["q_prime"] = region("qf", torch.float32, (b, h, d.p, d.f))
        views["k_prime"] = region("kf", torch.float32, (b, h, d.p, d.f))
        views["pls"] = region("pls", torch.float32, (b, h, d.p))
    return out, views
