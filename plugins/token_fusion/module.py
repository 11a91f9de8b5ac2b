"""``FusionBlock``: a transformer block that fuses tokens (MCTF or ToMe) with the same weights.

It takes over the submodules of a ``vitrt.models.layers.Block`` (norm1, attn, drop_path, norm2, mlp), so
state-dict keys and checkpoints are unchanged. The attention is computed here rather than through
``attn.core``: fusion needs the attention probabilities themselves (informativeness, pooling
weights, one-step-ahead attention) and proportional attention adds log(size) to the logits.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitrt.models.layers import NO_CARRY, Block, Carry, DerivedTensors, add_norm, is_row_layer_norm
from vitrt.plugins.cuda_launcher import kernels_apply
from vitrt.plugins.lowering import ExportScope, grad_mode

from .config import FusionBlockConfig
from .reference import (
    MergeMethod,
    attention_received,
    merge_attention,
    merge_tokens,
    pooling_weights,
    token_fusion,
)
from .spec import Pooling, TokenFusionAttrs
from .torch_op import (
    attention_info_op,
    token_fusion_call,
    token_fusion_norm_call,
    token_merge_add_norm_op,
    token_merge_op,
)


class TokenFusionOp(nn.Module):
    """The ``TokenFusion`` op alone as a module (what exporters and op tests trace).

    forward(x [B, N, C], metric [B, N, Cm], info [B, N], size [B, N]) ->
    (x_fused [B, N - r, C], size_fused [B, N - r], dest [B, N] int64); see ``spec``.
    """

    def __init__(self, attrs: TokenFusionAttrs, method: MergeMethod = "scatter") -> None:
        super().__init__()
        self.attrs = attrs
        self.method: MergeMethod = method

    def forward(self, x: Tensor, metric: Tensor, info: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return token_fusion(x, metric, info, size, self.attrs, self.method)


class FusionBlock(Block):
    """Pre-norm block on [B, N, C] that leaves ``num_tokens_out(N)`` tokens.

    ``forward(x, size)`` -> ``(x [B, N', C], size [B, N'])``; ``size`` ([B, N] or None: all ones) is
    the number of patches each token stands for. With r = 0 for this N it is the plain block, plus
    proportional attention when ``config.prop_attn`` and a size is given.

    Two ways to compute the same function. The reference way (CPU, training, export) is the official
    MCTF code's: attention probabilities, the op's reference, and the one-step-ahead attention as the
    merged [B, H, N', N'] matrix (``reference.merge_attention``); exported graphs reassociate that
    attention as the kernel path does (below; ``_attend_merged``). Where the kernels apply (eager inference
    on CUDA tensors, or under ``emulated_kernels()``) no N x N probability matrix is written: the
    attention each key receives comes from q and k through ``torch.ops.vitrt.attention_info`` (float16:
    one kernel reads q and k where they lie in the qkv projection, so not even q k^T is written), the fusion
    is ``torch.ops.vitrt.token_fusion``, attention outputs are ``scaled_dot_product_attention`` (with
    log size as its mask; in the MCTF one-step-ahead and ToMe attentions, in float16 from
    ``fold_bias_min_batch`` images up, with log size in the keys instead: 8 more channels of q and k, one of
    which carries the bias, which SDPA computes faster than a mask: ``_folds_bias``), and
    the one-step-ahead attention is reassociated: with M the one-hot merge
    matrix and w the pooling weights, merge_attention(A) V' = (M_w A M^T / den) V' = merge(A (M^T V')),
    and M^T V' is V' gathered by dest, so the block runs attention of the unfused queries over V'[dest]
    and merges its rows with the op's merge kernel (``torch.ops.vitrt.token_merge``). There the merge
    kernel does more of the block's work where it can: it writes the norm after a fusion (for the
    one-step-ahead attention by token, which is V'[dest]'s input, so there is no gather), the log of the
    sizes (the next attention's bias), a residual add before a fusion, and, after the output projection
    (which commutes with the merge), the residual add and norm2 that follow the attention
    (``torch.ops.vitrt.token_merge_add_norm``).
    """

    num_protected = 1  # the class token
    lowering = "eager"  # see vitrt.plugins.lowering: "eager", "portable" or "plugin"
    # Proportional attention's bias goes into the keys (``_folds_bias``) from this batch size up. On an
    # H200 (float16, DeiT-S + MCTF's 12 attentions, benchmarks/sdpa_bias.py) torch's SDPA took 2.37x as
    # long with the [B, 1, 1, N] bias mask as without one at batch 64, and the folded attention (q and k
    # 72 wide, plus the write of the keys' column) took 1.18x / 0.89x / 0.60x the masked one's time at
    # batch 1 / 8 / 64; end to end, folding at batch 1 made DeiT-S + MCTF 1.03x slower
    # (benchmarks/gpu_models.py --fold-other; benchmarks/results/h200-2026-11-27-fold-masks). Measured
    # on that GPU only, where cuDNN runs SDPA; flash attention takes no q, k wider than v.
    fold_bias_min_batch = 8
    fold_bias_dtypes: tuple[torch.dtype, ...] = (torch.float16,)  # where it was measured to pay
    # Exported graphs form the one-step-ahead attention's merged [B, H, N', N'] matrix as the official code
    # does when True; by default they take the reassociated form (``_attend_merged``).
    # benchmarks/one_step_ahead_export.py times both.
    export_merged_matrix = False
    # The qkv projection rearranged for the kernel path (``_projection``), per variant; not state.
    _projections: DerivedTensors

    def __init__(self, block: Block, config: FusionBlockConfig) -> None:
        nn.Module.__init__(self)  # the submodules come from ``block``, not from fresh ones
        self.norm1 = block.norm1
        self.attn = block.attn
        self.drop_path = block.drop_path
        self.norm2 = block.norm2
        self.mlp = block.mlp
        # Exports name the block's inline attention and its fusion after these (``ExportScope``), so that
        # profiles tell them apart: ``blocks.3.inline_attn/Softmax_1``, ``blocks.3.fusion/TopK_1``.
        self.inline_attn = ExportScope()
        self.fusion = ExportScope()
        self.config = config
        self._projections = DerivedTensors()  # pickles and deep copies start it empty

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if not isinstance(self.__dict__.get("_projections"), DerivedTensors):  # pickled before it was one
            self._projections = DerivedTensors()
        for name in ("inline_attn", "fusion"):  # and before the export scopes
            self._modules.setdefault(name, ExportScope())

    def extra_repr(self) -> str:
        return f"config={self.config}"

    def set_lowering(self, lowering: str) -> None:
        """Pick how the fusion is expressed for export (``vitrt.plugins.lowering``); same function."""
        self.lowering = lowering

    @property
    def _merge_method(self) -> MergeMethod:
        # Exported graphs merge with one-hot matmuls: TensorRT's scatter has no add.
        return "scatter" if self.lowering == "eager" else "onehot"

    def _fast(self, x: Tensor) -> bool:
        """Whether this call takes the kernel path (see the class docstring)."""
        return self.lowering == "eager" and not self.training and kernels_apply(x)

    def _fuse(
        self, x: Tensor, metric: Tensor, info: Tensor, size: Tensor, attrs: TokenFusionAttrs
    ) -> tuple[Tensor, Tensor, Tensor]:
        if self.lowering == "plugin" or self._fast(x):
            return token_fusion_call(x, metric, info, size, attrs)
        return token_fusion(x, metric, info, size, attrs, self._merge_method)

    def _norm_on_merge(self, x: Tensor, norm: nn.Module) -> bool:
        """Whether the merge kernel writes ``norm`` of the fused tokens (``_fuse_norm``): the kernel path at
        inference, ``norm`` a LayerNorm over the channels in x's dtype."""
        return self._fast(x) and not torch.is_grad_enabled() and is_row_layer_norm(norm, x)

    def _fuse_norm(
        self,
        x: Tensor,
        metric: Tensor,
        info: Tensor,
        size: Tensor,
        attrs: TokenFusionAttrs,
        norm: nn.Module,
        by_token: bool = False,
        residual: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """``_fuse`` and ``norm`` of the fused tokens: (x_fused, size_fused, dest, norm(x_fused),
        log(size_fused) or None); with ``residual`` the tokens fused are x + residual. On the kernel path at
        inference the merge kernel writes all of it (``torch.ops.vitrt.token_fusion_norm``), so the norm
        costs no launch and no pass over the fused tokens of its own, the log of the sizes (the next
        attention's bias) no launch either, and the merge forms x + residual as it reads the rows; there,
        with ``by_token``, the norm comes by token ([B, N, C]: token i's row is that of x_fused[dest[i]]),
        which saves the one-step-ahead attention its gather. Elsewhere the norm is [B, N - r, C] whatever
        ``by_token``, and the log None (not computed)."""
        if self._norm_on_merge(x, norm):
            norm = cast(nn.LayerNorm, norm)
            return token_fusion_norm_call(x, metric, info, size, attrs, norm, by_token, residual)
        if residual is not None:
            x = x + residual
        x_f, size_f, dest = self._fuse(x, metric, info, size, attrs)
        return x_f, size_f, dest, norm(x_f), None

    def num_tokens_out(self, n_in: int) -> int:
        """Tokens leaving the block for ``n_in`` entering it: n_in - r, r capped (``spec.removed_tokens``)."""
        return n_in - self.config.removed(n_in, self.num_protected)

    # -- attention pieces: the official MCTF code projects q, k of the unfused tokens and v of the
    #    fused ones only, which is where MCTF's one-step-ahead saving comes from. Where q, k and v come
    #    from the same tokens the block projects them with its one qkv Linear (``attn.split_heads``)
    #    instead: two products of one activation make ONNX Runtime duplicate its int8 DequantizeLinear,
    #    which then keeps both products in float with their weights dequantized on every run.
    def _project(self, h: Tensor, part: slice) -> Tensor:
        qkv = self.attn.qkv
        bias = None if qkv.bias is None else qkv.bias[part]  # T2T-ViT blocks have no qkv bias
        return F.linear(h, qkv.weight[part], bias)

    def _heads(self, t: Tensor, parts: int) -> Tensor:
        b, n, _ = t.shape
        heads = self.attn.num_heads
        return t.reshape(b, n, parts, heads, -1).permute(2, 0, 3, 1, 4)

    def _qk(self, h: Tensor) -> tuple[Tensor, Tensor]:
        c = h.shape[-1]
        qk = self._heads(self._project(h, slice(0, 2 * c)), 2)
        return qk[0], qk[1]

    def _v(self, h: Tensor) -> Tensor:
        c = h.shape[-1]
        return self._heads(self._project(h, slice(2 * c, 3 * c)), 1)[0]

    def _key_mean_in_qkv(self, h: Tensor, fast: bool) -> bool:
        """Whether ToMe's metric (the keys' mean over heads) comes from the qkv projection
        (``_qkv_kernel_path``): the kernel path at inference, with the keys as the metric."""
        return fast and not torch.is_grad_enabled() and self.config.metric == "keys"

    def _folds_bias(self, h: Tensor, fast: bool, size: Tensor | None) -> bool:
        """Whether proportional attention's bias log(size) rides in the keys rather than in a mask
        (``_qkv_kernel_path``): the kernel path at inference, a dtype of ``fold_bias_dtypes`` (float16), a
        size given and at least ``fold_bias_min_batch`` images (the class comment says why)."""
        return (
            fast
            and size is not None
            and not torch.is_grad_enabled()
            and h.dtype in self.fold_bias_dtypes
            and h.shape[0] >= self.fold_bias_min_batch
        )

    def _folded_dim(self) -> int:
        """Head dim of q and k with the bias folded in: E + 1 rounded up to a multiple of 8 (72 for 64),
        so that rows stay 16-byte aligned for the attention kernels."""
        return (self.attn.head_dim // 8 + 1) * 8

    def _projection(self, fold: bool, with_v: bool, key_mean: bool) -> tuple[Tensor, Tensor]:
        """The qkv projection's weight [R, C] and bias [R] for ``_qkv_kernel_path``: the q rows then the k
        rows, each head's E rows followed, when ``fold``, by Ep - E zero rows (``_folded_dim``), of which
        q's first has bias 1 and every other bias 0; then v's C rows when ``with_v``; then, when
        ``key_mean``, E rows that are the mean over heads of the key rows and key biases (the mean of linear
        maps is the linear map of the mean). Built once per variant and weight (``DerivedTensors``)."""
        qkv = self.attn.qkv
        variant = (fold, with_v, key_mean)
        built = self._projections.get(variant, (qkv.weight, qkv.bias), lambda: self._rearranged(*variant))
        return built[0], built[1]

    def _rearranged(self, fold: bool, with_v: bool, key_mean: bool) -> tuple[Tensor, Tensor]:
        """``_projection``'s weight and bias, built from the qkv projection's."""
        weight, bias = self.attn.qkv.weight, self.attn.qkv.bias
        c, heads, e = weight.shape[1], self.attn.num_heads, self.attn.head_dim
        full_bias = weight.new_zeros(3 * c) if bias is None else bias  # T2T-ViT blocks have no qkv bias
        rows, biases = [], []
        for part in (0, 1):  # q, k: [H, E, C] -> [H, Ep, C]
            w = weight[part * c : (part + 1) * c].reshape(heads, e, c)
            b = full_bias[part * c : (part + 1) * c].reshape(heads, e)
            if fold:
                pad = self._folded_dim() - e
                w = torch.cat([w, w.new_zeros(heads, pad, c)], dim=1)
                extra = b.new_zeros(heads, pad)
                if part == 0:
                    extra[:, 0] = 1  # q's constant 1 meets the key's log(size) / scale
                b = torch.cat([b, extra], dim=1)
            rows.append(w.reshape(-1, c))
            biases.append(b.reshape(-1))
        if with_v:
            rows.append(weight[2 * c :])
            biases.append(full_bias[2 * c :])
        if key_mean:
            rows.append(weight[c : 2 * c].float().view(heads, e, c).mean(0).to(weight.dtype))
            biases.append(full_bias[c : 2 * c].float().view(heads, e).mean(0).to(full_bias.dtype))
        return torch.cat(rows).contiguous(), torch.cat(biases).contiguous()

    def _qkv_kernel_path(
        self, h: Tensor, fold: bool, with_v: bool, key_mean: bool
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """q, k [B, H, N, E or Ep], v [B, H, N, E] (or None) and the keys' mean over heads [B, N, E] (or
        None) from one product of h [B, N, C] (``_projection``); all are views of it, and the score kernels
        read the mean in place. With ``fold``, q and k are Ep wide (``_folded_dim``): q[..., E] = 1 and the
        rest of both paddings 0, so q . k is unchanged until ``_fold_log_size`` writes each key's bias into
        k[..., E]."""
        weight, bias = self._projection(fold, with_v, key_mean)
        out = F.linear(h, weight, bias)  # [B, N, R]
        b, n, c = h.shape
        heads, e = self.attn.num_heads, self.attn.head_dim
        ep = self._folded_dim() if fold else e
        qk = out[..., : 2 * heads * ep].reshape(b, n, 2, heads, ep).permute(2, 0, 3, 1, 4)
        at = 2 * heads * ep
        v = None
        if with_v:
            v = out[..., at : at + c].reshape(b, n, heads, e).transpose(1, 2)
            at += c
        return qk[0], qk[1], v, out[..., at:] if key_mean else None

    def _fold_log_size(self, k: Tensor, bias: Tensor) -> None:
        """Writes proportional attention's bias (log size [B, 1, 1, N], as ``_info``, ``_log_size`` and the
        block before give it) into the folded keys k [B, H, N, Ep], in place: k[b, h, j, E] = log size_j /
        scale, so that scale * (q . k) = scale * q_E . k_E + log size_j with q's 1 (``_qkv_kernel_path``),
        which SDPA computes with no mask. For the default scale of a head dim that is a power of 4 (64:
        1 / 8) the division is exact in float16, so the bias is the mask's log size exactly and the logits
        equal the masked path's up to float32 rounding (SDPA adds it inside the dot product)."""
        column = k[..., self.attn.head_dim]  # [B, H, N], a strided view: the input must have its shape
        torch.mul(bias[:, :, 0, :].expand_as(column), 1.0 / self.attn.scale, out=column)

    @staticmethod
    def _log_size(size: Tensor, like: Tensor) -> Tensor:
        """Proportional attention's bias: log(size) per key, [B, 1, 1, N] in ``like``'s dtype."""
        return size.log()[:, None, None, :].to(like.dtype)

    def _probs(self, q: Tensor, k: Tensor, size: Tensor | None) -> Tensor:
        """Attention probabilities [B, H, N, N]; proportional attention adds log(size) per key."""
        logits = (q @ k.transpose(-2, -1)) * self.attn.scale
        if size is not None:
            logits = logits + self._log_size(size, logits)
        return logits.softmax(dim=-1)

    def _attend(self, probs: Tensor, v: Tensor) -> Tensor:
        return self.attn.merge_heads(self.attn.attn_drop(probs) @ v)

    def _attention(
        self, q: Tensor, k: Tensor, v: Tensor, size: Tensor | None, fast: bool, bias: Tensor | None = None
    ) -> Tensor:
        """The block's attention output [B, N, C] (projected) when no probabilities are needed; ``bias``:
        log size [B, 1, 1, N] where already computed (``_info``), else computed from ``size`` here."""
        if not fast:
            return self._attend(self._probs(q, k, size), v)
        if bias is None and size is not None:
            bias = self._log_size(size, q)
        return self.attn.merge_heads(
            F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.attn.scale)
        )

    def _info(self, q: Tensor, k: Tensor, size: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Attention each key receives [B, N] (kernel path): from q and k, the probabilities never formed;
        and proportional attention's bias for ``size`` (log size [B, 1, 1, N]) from the same launches, or
        None without a size."""
        info, log_size = attention_info_op(q, k, size, float(self.attn.scale))
        return info, None if size is None else log_size[:, None, None, :]

    def _one_step_ahead(
        self,
        q: Tensor,
        k: Tensor,
        bias: Tensor | None,
        dest: Tensor,
        info: Tensor,
        size: Tensor,
        attrs: TokenFusionAttrs,
        h: Tensor,
        x_f: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """The block's attention half on the kernel path: x = x_f + merge_attention(A) @ v(h) projected,
        [B, N - r, C], without A or the merged matrix (class docstring), and norm2(x). q, k [B, H, N, E] of
        the unfused tokens with proportional attention's ``bias`` (log size [B, 1, 1, N], or None), or
        [B, H, N, Ep] with the bias folded into k (``_fold_log_size``) and ``bias`` None; h the
        fused tokens' norm1: [B, N - r, C], or by token [B, N, C] (``_fuse_norm``). The projection is
        applied before the merge (a weighted mean: proj(merge(o)) = merge(proj(o)), the weights summing to
        one), so that the merge kernel can also add x_f and write norm2 (``token_merge_add_norm``)."""
        b, heads, n, _ = q.shape
        if h.shape[1] == n:  # by token: v of each token's merged row, V'[dest], with no gather
            vg = self._v(h)
        else:
            v = self._v(h)  # [B, H, N', E]
            vg = v.gather(2, dest[:, None, :, None].expand(b, heads, n, v.shape[-1]))
        o = F.scaled_dot_product_attention(q, k, vg, attn_mask=bias, scale=self.attn.scale)
        o = self.attn.proj_drop(self.attn.proj(o.transpose(1, 2).reshape(b, n, -1)))
        norm = self.norm2
        if self._norm_on_merge(x_f, norm):
            total, normed = token_merge_add_norm_op(
                o, dest, info, size, attrs.pooling, x_f, norm.weight, norm.bias, float(norm.eps)
            )
            return total, normed
        o = token_merge_op(o, dest, info, size, attrs.pooling, n - attrs.r)
        return add_norm(x_f, self.drop_path(o), self.norm2, self.lowering)

    def _probs_info(self, h: Tensor, size: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The reference way's attention before a one-step-ahead fusion: q, k [B, H, N, E] of h [B, N, C],
        the probabilities [B, H, N, N] (proportional attention with ``size``) and the attention each key
        receives, info [B, N]."""
        q, k = self._qk(h)
        probs = self._probs(q, k, size)
        return q, k, probs, attention_received(probs)

    def _merged_attention(
        self, probs: Tensor, dest: Tensor, info: Tensor, size: Tensor, attrs: TokenFusionAttrs, h: Tensor
    ) -> Tensor:
        """The reference way's one-step-ahead attention: merge_attention(probs) @ v(h) projected, [B, N', C],
        with the pooling weights of ``info`` and ``size`` [B, N]; h the fused tokens' norm1 [B, N', C]. The
        merged matrix as the official code forms it in eager mode (and with ``export_merged_matrix``),
        reassociated in exports (``_attend_merged``)."""
        n_out = probs.shape[-1] - attrs.r
        weights = pooling_weights(info, size, attrs.pooling)
        if self.lowering == "eager" or self.export_merged_matrix:
            merged = merge_attention(probs, dest, weights, n_out, self._merge_method)
            return self._attend(merged, self._v(h))
        return self._attend_merged(probs, dest, weights, n_out, h)

    def _attend_merged(self, probs: Tensor, dest: Tensor, weights: Tensor, n_out: int, h: Tensor) -> Tensor:
        """The one-step-ahead attention's output for exported graphs: merge_attention(probs) @ v(h)
        projected, [B, N - r, C], reassociated as on the kernel path (class docstring) into
        merge(probs @ V'[dest]) with one-hot matmuls. probs [B, H, N, N], dest and weights [B, N], h the
        fused tokens' norm1 [B, N - r, C].

        Why: the merged matrix M_w A M^T costs H N' N (N + N') multiply-adds and its product with V'
        H N'^2 E; A V'[dest] costs H N^2 E and its merge N' N C. For DeiT-S's first fused block (H = 6,
        E = 64, N = 197, N' = 181) that is 94 M against 29 M. The projection follows the merge, on N'
        rows: an affine map commutes with a weighted mean (a group's weights sum to one)."""
        b, heads, n, _ = probs.shape
        v = self._v(h)  # [B, H, N', E]
        vg = v.gather(2, dest[:, None, :, None].expand(b, heads, n, v.shape[-1]))
        o = (self.attn.attn_drop(probs) @ vg).transpose(1, 2).reshape(b, n, -1)
        merged = merge_tokens(o, dest, weights, n_out, self._merge_method)
        return self.attn.proj_drop(self.attn.proj(merged))

    def forward_chain(
        self,
        x: Tensor,
        size: Tensor | None = None,
        carry: Carry = NO_CARRY,
        next_norm: nn.Module | None = None,
    ) -> tuple[Tensor, Tensor | None, Carry]:
        """x [B, N, C], size [B, N] or None -> (x [B, N - r, C], size [B, N - r] or None if r = 0 and
        no size came in, carry for the next block); carry and next_norm as ``Block.forward_chain`` says
        (``forward`` is this with neither)."""
        cfg = self.config
        bsz, n, _ = x.shape
        attrs = cfg.attrs(n, self.num_protected)
        prop = size if cfg.prop_attn else None
        fast = self._fast(x)
        h = self.norm1(x) if carry.h is None else carry.h
        # proportional attention's bias for the sizes coming in, where the block before wrote their log
        bias = None if prop is None or carry.log_size is None else carry.log_size[:, None, None, :]
        if attrs.r == 0:
            attended = self.drop_path(
                self.inline_attn.run(lambda: self._attention(*self.attn.split_heads(h), prop, fast, bias))
            )
            x, h = add_norm(x, attended, self.norm2, self.lowering)
            return self.add_last(x, self.drop_path(self.mlp(h)), size, next_norm, carry.log_size)

        size_in = size if size is not None else x.new_ones(bsz, n)
        if cfg.one_step_ahead in (1, 2):
            with grad_mode(torch.is_grad_enabled() and cfg.one_step_ahead == 1):
                if fast:
                    # with the bias folded, q and k are Ep wide: info and the metric take their first E
                    fold = cfg.one_step_ahead == 1 and self._folds_bias(h, fast, prop)
                    q, k = self._qkv_kernel_path(h, True, False, False)[:2] if fold else self._qk(h)
                    e = self.attn.head_dim
                    info, bias = self._info(q[..., :e], k[..., :e], prop)
                    if fold:
                        self._fold_log_size(k, cast(Tensor, bias))
                        bias = None
                else:
                    q, k, probs, info = self.inline_attn.run(lambda: self._probs_info(h, prop))
            by_token = cfg.one_step_ahead == 1 and fast

            def fuse() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
                metric = k[..., : self.attn.head_dim].mean(dim=1) if cfg.metric == "keys" else x
                return self._fuse_norm(x, metric, info, size_in, attrs, self.norm1, by_token)

            x_f, size_f, dest, h, log_f = self.fusion.run(fuse)
            if cfg.one_step_ahead == 1 and fast:
                x, h = self._one_step_ahead(q, k, bias, dest, info, size_in, attrs, h, x_f)
                return self.add_last(x, self.drop_path(self.mlp(h)), size_f, next_norm, log_f)
            if cfg.one_step_ahead == 1:
                out = self.inline_attn.run(
                    lambda: self._merged_attention(probs, dest, info, size_in, attrs, h)
                )
            else:
                bias_f = None if log_f is None or not cfg.prop_attn else log_f[:, None, None, :]
                size_a = size_f if cfg.prop_attn else None
                out = self.inline_attn.run(
                    lambda: self._attention(*self.attn.split_heads(h), size_a, fast, bias_f)
                )
            x, h = add_norm(x_f, self.drop_path(out), self.norm2, self.lowering)
            return self.add_last(x, self.drop_path(self.mlp(h)), size_f, next_norm, log_f)

        key_mean = None  # ToMe's metric, where the qkv projection computes it too
        fold, mean_in_qkv = self._folds_bias(h, fast, prop), self._key_mean_in_qkv(h, fast)
        if fold or mean_in_qkv:
            q, k, v_, key_mean = self._qkv_kernel_path(h, fold, True, mean_in_qkv)
            v = cast(Tensor, v_)
        elif fast:
            q, k, v = self.attn.split_heads(h)
        if fast:
            # ToMe's weights need no attention (tau_info = 0, size pooling): the op does not read info
            # then, so the sizes stand in for it (a [B, N] tensor of the dtype; no fill launched).
            needs_info = attrs.tau_info > 0 or attrs.pooling == Pooling.ATTN_SIZE
            e = self.attn.head_dim
            info, bias = self._info(q[..., :e], k[..., :e], prop) if needs_info else (size_in, bias)
            if fold:
                # log size from info's launch, else carried from the block before, else computed here;
                # then the attention takes no mask
                assert prop is not None
                self._fold_log_size(k, bias if bias is not None else self._log_size(prop, q))
                bias = None
            attended = self.drop_path(self._attention(q, k, v, None if fold else prop, fast, bias))
        else:

            def attend() -> tuple[Tensor, Tensor, Tensor]:
                q, k, v = self.attn.split_heads(h)
                probs = self._probs(q, k, prop)
                return k, attention_received(probs), self._attend(probs, v)

            k, info, attended = self.inline_attn.run(attend)
            attended = self.drop_path(attended)
        residual = None  # the block's residual add, where it rides on the fusion (_fuse_norm)
        if cfg.merge_after == "mlp":
            x, h = add_norm(x, attended, self.norm2, self.lowering)
            x = x + self.drop_path(self.mlp(h))
        elif cfg.metric == "keys":  # the sum feeds the fusion alone
            residual = attended
        else:
            x = x + attended
        tokens = x

        def metric() -> Tensor:
            if cfg.metric != "keys":
                return tokens
            return k[..., : self.attn.head_dim].mean(dim=1) if key_mean is None else key_mean

        if cfg.merge_after == "attention":
            fused = self.fusion.run(
                lambda: self._fuse_norm(tokens, metric(), info, size_in, attrs, self.norm2, residual=residual)
            )
            x, size_f, _, h, log_f = fused
            return self.add_last(x, self.drop_path(self.mlp(h)), size_f, next_norm, log_f)
        if next_norm is not None and self._norm_on_merge(x, next_norm):  # the next norm rides on the merge
            norm = next_norm
            x, size_f, _, h, log_f = self.fusion.run(
                lambda: self._fuse_norm(tokens, metric(), info, size_in, attrs, norm)
            )
            return x, size_f, Carry(h, log_f)
        x, size_f, _ = self.fusion.run(lambda: self._fuse(tokens, metric(), info, size_in, attrs))
        return x, size_f, NO_CARRY
