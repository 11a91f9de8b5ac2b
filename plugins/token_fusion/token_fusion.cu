// CUDA kernels of the TokenFusion op (MCTF / ToMe): the ground truth is plugins/token_fusion/reference.py
// and the contract plugins/token_fusion/spec.py. Launched by plugins/token_fusion/cuda.py, in order:
//
//   1. vitrt_tf_scores_mma_f16  grid (Nb/32, Na/32, B) 32 x 32 tiles of the A x B score matrix (float32)
//                                                     on tensor cores, for float16 metrics (Cm % 8 == 0);
//      vitrt_tf_scores_mma64_f16 grid (Nb/64, Na/64, B) the same in 64 x 64 tiles (same bits), when
//                                                     they fill the GPU;
//      vitrt_tf_scores<T>_<dt>  grid (Nb/T, Na/T, B)  otherwise T x T tiles on CUDA cores (T = 64, or 32
//                                                     when 64-tiles would leave most of the GPU idle).
//                                                     Each block also computes the norms of its tile's
//                                                     tokens and the batch element's info / size maxima,
//                                                     so no pass precedes it.
//   2. vitrt_tf_match           grid (B)              bidirectional bipartite matching -> dest (int64);
//                                                     the score rows live in shared memory when they fit
//   1 + 2. vitrt_tf_scores_match_f16 grid (B)         both in one launch, the scores in shared memory
//                                                     only (float16 metrics of Cm <= 128, N <= 256; the
//                                                     same dest bit for bit), from a batch of SMs / 5
//   3. vitrt_tf_merge_<dt>      grid (N_out/8, B)     weighted mean of every group, found from member
//                                                     bitmasks that each block builds once from dest
//                                                     (an atomicOr per token); sizes summed. The same
//                                                     kernel merges a fused block's attention output
//                                                     (one-step-ahead) and, for a fused block, can also
//                                                     write the LayerNorm that follows of every merged
//                                                     row.
//                                                     vitrt_tf_merge384_f16: the same for float16 rows
//                                                     of 257 to 384 channels in 4-half vectors
//      (r = 0: vitrt_tf_match writes dest = arange and vitrt_tf_copy_<dt> copies x and size instead)
//
// And, for a fused block rather than the op, the attention each key receives without writing the
// probabilities: vitrt_tf_attention_info_qk<E/16>_f16 grid (N S/16W, H, B) from q and k on tensor cores
// (float16, E = 32 / 64 / 128, N <= 256), else vitrt_tf_attention_info<VPL>_<dt> grid (N/64, H, B) from
// q k^T; then vitrt_tf_info_mean_<dt> grid (N/256, B), the mean over heads and queries. And for any
// block, vitrt_tf_layer_norm_<dt> grid (R/8, or R/16, R/32 for rows of at most 16 or 8 vectors): the merge's
// row LayerNorm alone, or after a residual add (a block's add and the norm that follows it in one launch);
// vitrt_tf_unfold_layer_norm_<dt> grid (R/8): T2T-ViT's soft split and the norm after it, in one pass.
//
// <dt> is f32 or f16 (the dtype of x, metric, info, size and of the outputs; float16 travels as raw bits).
// All arithmetic is float32. Shapes: x [B, N, C], metric [B, N, Cm] with rows ldm >= Cm elements apart (a
// view of a wider projection is read in place), info/size [B, N]; set A = even token
// positions (Na = ceil(N/2)), set B = odd (Nb = floor(N/2)); N_out = N - r.
//
// Determinism: no floating-point atomics (the merge's member bitmasks are ORed in by shared-memory integer
// atomics, whose result does not depend on their order). Every sum runs in a fixed order (the merge sums
// each group's members in increasing token index, the order of the reference's scatter_add), so results
// are bitwise reproducible. Ties follow torch.max (first index) for arg-maxima and a stable descending
// order for the rankings (ties -> lower index first). The reference ranks with
// torch.argsort(descending=True), which is unstable, so on an exact tie of two best-partner scores the
// reference's order is implementation-defined while the kernel's is the stable one.

#include "cuda_common.cuh"

using namespace vitrt;

namespace {

// x ** e with the exponents torch special-cases computed the way torch computes them (1: identity,
// 0.5: sqrt, 2: square), everything else with powf.
__device__ __forceinline__ float pow_like_torch(float x, float e) {
  if (e == 1.0f) return x;
  if (e == 0.5f) return sqrtf(x);
  if (e == 2.0f) return x * x;
  return powf(x, e);
}

// The MCTF score of one pair: W_sim * W_info * W_size from the dot product, the inverse norms and the two
// tokens' info and size factors already raised to their exponents (1 where disabled; a 0 exponent
// disables W_sim); protected tokens are never merged away nor merged into: the most negative finite
// float32.
__device__ __forceinline__ float score_of(float dot, float rn_a, float rn_b, float pi_a, float pi_b, float ps_a,
                                          float ps_b, float e_sim, bool is_protected) {
  float s = 1.0f;
  if (e_sim > 0.0f) {
    const float cosine = dot * rn_a * rn_b;
    // clamp: rounding can push a cosine just below -1 (negative base ** (1/tau) is NaN)
    s = pow_like_torch(fmaxf((cosine + 1.0f) * 0.5f, 0.0f), e_sim);
  }
  s *= pi_a * pi_b;
  s *= ps_a * ps_b;
  return is_protected ? -kFloatMax : s;
}

// 1 / info (info clamped away from 0) and 1 / size of one token: what the info and size factors divide by
// the batch element's maxima of them. One definition for every score kernel, so their factors agree bitwise.
__device__ __forceinline__ float inv_info(float info) { return 1.0f / fmaxf(info, 1e-12f); }
__device__ __forceinline__ float inv_size(float size) { return 1.0f / size; }

// The batch element's maxima of 1 / info and 1 / size (for the enabled factors), reduced by the whole
// block into every thread's mi, ms (max is exact: no order dependence).
template <typename T>
__device__ void batch_maxima(const T* __restrict__ ib, const T* __restrict__ sb, int N, float e_info, float e_size,
                             float* scratch, float& mi, float& ms) {
  mi = neg_inf();
  ms = neg_inf();
  for (int n = threadIdx.x; n < N; n += blockDim.x) {
    if (e_info > 0.0f) mi = fmaxf(mi, inv_info(to_float(ib[n])));
    if (e_size > 0.0f) ms = fmaxf(ms, inv_size(to_float(sb[n])));
  }
  mi = block_max(mi, scratch);
  ms = block_max(ms, scratch);
}

// The info and size factors of a score tile's tokens, already raised to their exponents: fi / fs point
// at [2][tile] arrays (row 0: the tile's A tokens from a0, row 1: its B tokens from j0). Per token,
// a^e b^e instead of the reference's (a b)^e: equal up to float32 rounding, two powf per tile row
// instead of per pair. Followed by a barrier before use.
template <typename T>
__device__ void tile_factors(const T* __restrict__ ib, const T* __restrict__ sb, int a0, int j0, int tile, int Na,
                             int Nb, float mi, float ms, float e_info, float e_size, float* fi, float* fs) {
  for (int q = threadIdx.x; q < 2 * tile; q += blockDim.x) {
    const int side = q / tile, row = q % tile;
    const int tok = side == 0 ? 2 * (a0 + row) : 2 * (j0 + row) + 1;
    const bool ok = side == 0 ? a0 + row < Na : j0 + row < Nb;
    fi[q] = ok && e_info > 0.0f ? pow_like_torch(inv_info(to_float(ib[tok])) / mi, e_info) : 1.0f;
    fs[q] = ok && e_size > 0.0f ? pow_like_torch(inv_size(to_float(sb[tok])) / ms, e_size) : 1.0f;
  }
}

// ---- vector loads and stores of V consecutive elements as float32 ---------------------------------------
// V = 1 (any alignment), 4 (float: 16 bytes; half: 8 bytes) or 8 (half: 16 bytes). The caller guarantees
// the alignment: the launcher picks V from the row width and the base addresses.
template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, float* out);
template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const float* in);

template <>
__device__ __forceinline__ void load_vec<float, 1>(const float* p, float* out) {
  out[0] = *p;
}
template <>
__device__ __forceinline__ void load_vec<half_bits, 1>(const half_bits* p, float* out) {
  out[0] = to_float(*p);
}
template <>
__device__ __forceinline__ void load_vec<float, 4>(const float* p, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x;
  out[1] = v.y;
  out[2] = v.z;
  out[3] = v.w;
}
__device__ __forceinline__ void unpack_half2(unsigned v, float* out) {
  out[0] = to_float((half_bits)(v & 0xffffu));
  out[1] = to_float((half_bits)(v >> 16));
}
__device__ __forceinline__ unsigned pack_half2(const float* in) {
  return (unsigned)from_float<half_bits>(in[0]) | ((unsigned)from_float<half_bits>(in[1]) << 16);
}
// ss plus the squares of 8 halves (16 bytes), in the order both tensor-core score kernels sum a row's
// norm: each pair's second channel, then its first, pair by pair.
__device__ __forceinline__ float add_squares8(const uint4& v, float ss) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    float h[2];
    unpack_half2(w[u], h);
    ss = fmaf(h[0], h[0], fmaf(h[1], h[1], ss));
  }
  return ss;
}
// 1 / |row| from the partial sums of squares of the 16 adjacent lanes that share the row (a fixed xor
// tree: every lane of the 16 gets the same bits). Every lane of the warp must call it.
__device__ __forceinline__ float inv_norm16(float ss) {
#pragma unroll
  for (int o = 1; o < 16; o <<= 1) ss += __shfl_xor_sync(kFullMask, ss, o);
  return 1.0f / fmaxf(sqrtf(ss), 1e-12f);
}
template <>
__device__ __forceinline__ void load_vec<half_bits, 4>(const half_bits* p, float* out) {
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  unpack_half2(v.x, out);
  unpack_half2(v.y, out + 2);
}
template <>
__device__ __forceinline__ void load_vec<half_bits, 8>(const half_bits* p, float* out) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  unpack_half2(v.x, out);
  unpack_half2(v.y, out + 2);
  unpack_half2(v.z, out + 4);
  unpack_half2(v.w, out + 6);
}
template <>
__device__ __forceinline__ void store_vec<float, 1>(float* p, const float* in) {
  *p = in[0];
}
template <>
__device__ __forceinline__ void store_vec<half_bits, 1>(half_bits* p, const float* in) {
  *p = from_float<half_bits>(in[0]);
}
template <>
__device__ __forceinline__ void store_vec<float, 4>(float* p, const float* in) {
  *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
}
template <>
__device__ __forceinline__ void store_vec<half_bits, 4>(half_bits* p, const float* in) {
  uint2 v;
  v.x = pack_half2(in);
  v.y = pack_half2(in + 2);
  *reinterpret_cast<uint2*>(p) = v;
}
template <>
__device__ __forceinline__ void store_vec<half_bits, 8>(half_bits* p, const float* in) {
  uint4 v;
  v.x = pack_half2(in);
  v.y = pack_half2(in + 2);
  v.z = pack_half2(in + 4);
  v.w = pack_half2(in + 6);
  *reinterpret_cast<uint4*>(p) = v;
}

// V elements of T as loaded, kept in their storage type (half the registers of float32 for float16) and
// converted when used: a load issued early to overlap round trips, without holding V floats meanwhile.
template <typename T, int V>
struct alignas(sizeof(T) * V) RawVector {
  T e[V];
};
template <typename T, int V>
__device__ __forceinline__ RawVector<T, V> load_raw(const T* p) {
  return *reinterpret_cast<const RawVector<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ void unpack_raw(const RawVector<T, V>& r, float* out) {
#pragma unroll
  for (int u = 0; u < V; ++u) out[u] = to_float(r.e[u]);
}

// Four consecutive channels c .. c + 3 of one metric row as float32, zero past Cm or for a missing row.
template <typename T>
__device__ __forceinline__ void load_metric4(const T* row, bool ok, int c, int Cm, int vec4, float* out) {
  if (ok && vec4 && c < Cm) {  // Cm % 4 == 0: the whole vector is inside the row
    load_vec<T, 4>(row + c, out);
    return;
  }
#pragma unroll
  for (int u = 0; u < 4; ++u) out[u] = ok && c + u < Cm ? to_float(row[c + u]) : 0.0f;
}

// One block (256 threads) computes a TILE x TILE tile of scores[b, a, j] (a in set A, j in set B).
// Dot products: the tile's A and B rows stream through shared memory KC channels at a time (TILE x KC =
// 1024 values per side: four per thread, loaded as one vector), each thread accumulating an R x R
// register block (R = TILE / 16) with R + R shared loads per R * R fmas. The loaders also sum the squares
// of what they load, which gives the tile's row norms without a separate pass; the batch element's
// maxima of 1 / info and 1 / size are reduced by every block (N values: cheaper than a launch).
// A temperature exponent of 0 disables its factor (temperature 0).
template <typename T, int TILE>
__device__ void scores_tile(const T* __restrict__ metric, const T* __restrict__ info, const T* __restrict__ size,
                            float* __restrict__ scores, int N, int Cm, int ldm, float e_sim, float e_info,
                            float e_size, int num_protected, int vec4) {
  constexpr int KC = 1024 / TILE;  // channels per step
  constexpr int LPR = KC / 4;      // loader threads per row
  constexpr int R = TILE / 16;     // outputs per thread along each side
  constexpr int LD = TILE + 4;     // row pitch: keeps 16-byte alignment of the float4 reads
  __shared__ __align__(16) float As[KC][LD];  // transposed: As[k][row], so a thread's R rows are adjacent
  __shared__ __align__(16) float Bs[KC][LD];
  __shared__ float rn[2][TILE], fi[2][TILE], fs[2][TILE];  // [0]: the tile's A tokens, [1]: its B tokens
  __shared__ float scratch[32];
  const int Na = (N + 1) / 2, Nb = N / 2;
  const int b = blockIdx.z, a0 = blockIdx.y * TILE, j0 = blockIdx.x * TILE;
  const int tid = threadIdx.x;
  const T* mb = metric + (int64)b * N * ldm;
  const T* ib = info + (int64)b * N;
  const T* sb = size + (int64)b * N;

  // Loader role: row lrow of the tile, channels lk .. lk + 3 of every step.
  const int lrow = tid / LPR, lk = (tid % LPR) * 4;
  const bool a_ok = a0 + lrow < Na, b_ok = j0 + lrow < Nb;
  const T* arow = mb + (int64)(2 * (a0 + lrow)) * ldm;
  const T* brow = mb + (int64)(2 * (j0 + lrow) + 1) * ldm;
  float ssa = 0.0f, ssb = 0.0f;
  // Compute role: rows ty * R .. + R - 1, columns tx * R .. + R - 1 of the tile.
  const int tx = tid % 16, ty = tid / 16;
  float acc[R][R];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < R; ++j) acc[i][j] = 0.0f;

  // The first step's vectors are requested before the maxima below, whose loads and barriers then
  // overlap with them; every later step's vectors are requested before the current step's products
  // (register double buffering), so the global latency is paid about once, not once per step.
  float va[4], vb[4];
  load_metric4(arow, a_ok, lk, Cm, vec4, va);
  load_metric4(brow, b_ok, lk, Cm, vec4, vb);
  float mi, ms;
  batch_maxima(ib, sb, N, e_info, e_size, scratch, mi, ms);

  for (int c0 = 0; c0 < Cm; c0 += KC) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      ssa = fmaf(va[u], va[u], ssa);
      ssb = fmaf(vb[u], vb[u], ssb);
      As[lk + u][lrow] = va[u];
      Bs[lk + u][lrow] = vb[u];
    }
    __syncthreads();
    if (c0 + KC < Cm) {
      load_metric4(arow, a_ok, c0 + KC + lk, Cm, vec4, va);
      load_metric4(brow, b_ok, c0 + KC + lk, Cm, vec4, vb);
    }
#pragma unroll
    for (int k = 0; k < KC; ++k) {
      float av[R], bv[R];
#pragma unroll
      for (int i = 0; i < R; ++i) {
        av[i] = As[k][ty * R + i];
        bv[i] = Bs[k][tx * R + i];
      }
#pragma unroll
      for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < R; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

  // Row norms: the LPR loaders of a row are adjacent lanes of one warp.
#pragma unroll
  for (int o = 1; o < LPR; o <<= 1) {
    ssa += __shfl_xor_sync(kFullMask, ssa, o);
    ssb += __shfl_xor_sync(kFullMask, ssb, o);
  }
  if (tid % LPR == 0) {
    // 1 / max(|metric_n|, 1e-12): the reference divides by the clamped L2 norm.
    rn[0][lrow] = 1.0f / fmaxf(sqrtf(ssa), 1e-12f);
    rn[1][lrow] = 1.0f / fmaxf(sqrtf(ssb), 1e-12f);
  }
  tile_factors(ib, sb, a0, j0, TILE, Na, Nb, mi, ms, e_info, e_size, &fi[0][0], &fs[0][0]);
  __syncthreads();

  float* out = scores + (int64)b * Na * Nb;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int ra = ty * R + i, a = a0 + ra;
    if (a >= Na) continue;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int rb = tx * R + j, jj = j0 + rb;
      if (jj >= Nb) continue;
      out[(int64)a * Nb + jj] = score_of(acc[i][j], rn[0][ra], rn[1][rb], fi[0][ra], fi[1][rb], fs[0][ra],
                                         fs[1][rb], e_sim, 2 * a < num_protected || 2 * jj + 1 < num_protected);
    }
  }
}

// The score tile on tensor cores, for float16 metrics (Cm % 8 == 0, 16-byte aligned rows): a TILE x TILE
// tile (32 or 64) by kMmaThreads = 256 threads, 8 warps in 2 rows of 4; warp w computes rows
// (w / 4) * TILE / 2 .. + TILE / 2 - 1 and columns (w % 4) * TILE / 4 .. + TILE / 4 - 1 of it as m16n8k16
// products (TILE / 32 x TILE / 32 per 16 channels; float32 accumulation; mma_16816). Rows stream through
// shared memory 128 channels at a time as 16-byte vectors (the next step's vectors requested before the
// current step's products), the loaders summing the squares for the norms; the epilogue computes
// scores_tile's values.
// Both tiles give the same bits: a row's norm is summed by the same 16 lanes' roles, each dot product
// over the channels in the same order. The 64 tile reads each metric row half as often (large batches);
// the 32 tile has four times the blocks (small batches), and its 8 warps (4 until the H100 profile of
// 2026-11-27 showed each warp's 2000-instruction chain was the kernel's time at batch 1) split the work.
constexpr int kMmaK = 128, kMmaLd = kMmaK + 8;  // +8 halves: conflict-free fragments
constexpr int kMmaThreads = 256;
template <int TILE>
__device__ void scores_tile_mma(const half_bits* __restrict__ metric, const half_bits* __restrict__ info,
                                const half_bits* __restrict__ size, float* __restrict__ scores, int N, int Cm,
                                int ldm, float e_sim, float e_info, float e_size, int num_protected) {
  constexpr int RS = kMmaThreads / 16;  // rows a step's loaders cover at once (16 lanes per row)
  constexpr int P = TILE / RS;          // loader passes per step
  constexpr int MI = TILE / 32;         // m16 fragments per warp (rows)
  constexpr int NJ = TILE / 32;         // n8 fragments per warp (columns)
  __shared__ __align__(16) half_bits As[TILE][kMmaLd];
  __shared__ __align__(16) half_bits Bs[TILE][kMmaLd];
  __shared__ float rn[2][TILE], fi[2][TILE], fs[2][TILE];
  __shared__ float scratch[32];
  const int Na = (N + 1) / 2, Nb = N / 2;
  const int b = blockIdx.z, a0 = blockIdx.y * TILE, j0 = blockIdx.x * TILE;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const half_bits* mb = metric + (int64)b * N * ldm;
  const half_bits* ib = info + (int64)b * N;
  const half_bits* sb = size + (int64)b * N;

  // Loader role: vector v = tid + kMmaThreads i (i < P) of a step is row v / 16, channels (v % 16) * 8
  // .. + 7 of both sides; the 16 loaders of a row are 16 adjacent lanes.
  const int lrow = tid / 16, lcol = (tid % 16) * 8;
  float ssa[P], ssb[P];
  uint4 va[P], vb[P];
#pragma unroll
  for (int i = 0; i < P; ++i) ssa[i] = ssb[i] = 0.0f;
  auto load_step = [&](int c0) {
#pragma unroll
    for (int i = 0; i < P; ++i) {
      const int row = lrow + RS * i, c = c0 + lcol;
      const bool a_ok = a0 + row < Na && c < Cm, b_ok = j0 + row < Nb && c < Cm;
      const uint4 zero = {0u, 0u, 0u, 0u};
      va[i] = a_ok ? *reinterpret_cast<const uint4*>(mb + (int64)(2 * (a0 + row)) * ldm + c) : zero;
      vb[i] = b_ok ? *reinterpret_cast<const uint4*>(mb + (int64)(2 * (j0 + row) + 1) * ldm + c) : zero;
    }
  };
  load_step(0);
  float mi, ms;  // while the first loads fly
  batch_maxima(ib, sb, N, e_info, e_size, scratch, mi, ms);

  const int wm = (warp / 4) * (TILE / 2), wn = (warp % 4) * (TILE / 4);
  float acc[MI][NJ][4];
#pragma unroll
  for (int m = 0; m < MI; ++m)
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[m][j][q] = 0.0f;
  for (int c0 = 0; c0 < Cm; c0 += kMmaK) {
#pragma unroll
    for (int i = 0; i < P; ++i) {
      ssa[i] = add_squares8(va[i], ssa[i]);
      ssb[i] = add_squares8(vb[i], ssb[i]);
      *reinterpret_cast<uint4*>(&As[lrow + RS * i][lcol]) = va[i];
      *reinterpret_cast<uint4*>(&Bs[lrow + RS * i][lcol]) = vb[i];
    }
    __syncthreads();
    if (c0 + kMmaK < Cm) load_step(c0 + kMmaK);
#pragma unroll
    for (int k0 = 0; k0 < kMmaK; k0 += 16) {
      // The fragments by ldmatrix (one instruction per 4 matrices: the kernel is issue-bound). Lane l
      // addresses row l % 8 of matrix l / 8: for B, the NJ tiles' b[0..1] in one load, matrix 2 j + (k
      // half) (lanes past the 2 NJ matrices repeat the first ones' rows, unused); for A, a_fragment_row.
      const int mmb = (lane >> 3) & (2 * NJ - 1);
      unsigned fbv[2 * NJ];
      ldmatrix<2 * NJ>(fbv, &Bs[wn + 8 * (mmb >> 1) + (lane & 7)][k0 + 8 * (mmb & 1)]);
#pragma unroll
      for (int m = 0; m < MI; ++m) {
        unsigned fa[4];
        ldmatrix<4>(fa, a_fragment_row(&As[wm + 16 * m][k0], kMmaLd));
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          const unsigned fb[2] = {fbv[2 * j], fbv[2 * j + 1]};
          mma_16816(acc[m][j], fa, fb);
        }
      }
    }
    __syncthreads();
  }

  // Row norms: the 16 loaders of a row are adjacent lanes.
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const float inv_a = inv_norm16(ssa[i]), inv_b = inv_norm16(ssb[i]);
    if (tid % 16 == 0) {
      rn[0][lrow + RS * i] = inv_a;
      rn[1][lrow + RS * i] = inv_b;
    }
  }
  tile_factors(ib, sb, a0, j0, TILE, Na, Nb, mi, ms, e_info, e_size, &fi[0][0], &fs[0][0]);
  __syncthreads();

  // Epilogue: a thread's accumulators cover rows wm + 16 m + g + 8 h (h < 2) and column pairs
  // wn + 8 j + 2 t, + 1. Their factors are read into registers once (the score stores below go through
  // a generic pointer, which would otherwise make the compiler reload them after every store), and each
  // column pair is one 8-byte store where the address allows (the scores' rows may start at odd floats).
  float ra_n[MI][2], ra_i[MI][2], ra_s[MI][2], rb_n[NJ][2], rb_i[NJ][2], rb_s[NJ][2];
#pragma unroll
  for (int m = 0; m < MI; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int ra = wm + 16 * m + g + 8 * h;
      ra_n[m][h] = rn[0][ra];
      ra_i[m][h] = fi[0][ra];
      ra_s[m][h] = fs[0][ra];
    }
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int rb = wn + 8 * j + 2 * t + u;
      rb_n[j][u] = rn[1][rb];
      rb_i[j][u] = fi[1][rb];
      rb_s[j][u] = fs[1][rb];
    }
  float* out = scores + (int64)b * Na * Nb;
#pragma unroll
  for (int m = 0; m < MI; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int a = a0 + wm + 16 * m + g + 8 * h;
      if (a >= Na) continue;
      float* row = out + (int64)a * Nb;
      const bool a_protected = 2 * a < num_protected;
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const int jj = j0 + wn + 8 * j + 2 * t;  // even
        if (jj >= Nb) continue;
        float s[2];
#pragma unroll
        for (int u = 0; u < 2; ++u)
          s[u] = score_of(acc[m][j][2 * h + u], ra_n[m][h], rb_n[j][u], ra_i[m][h], rb_i[j][u], ra_s[m][h],
                          rb_s[j][u], e_sim, a_protected || 2 * (jj + u) + 1 < num_protected);
        if (jj + 1 < Nb && (reinterpret_cast<unsigned long long>(row + jj) & 7u) == 0) {
          *reinterpret_cast<float2*>(row + jj) = float2{s[0], s[1]};
        } else {
          row[jj] = s[0];
          if (jj + 1 < Nb) row[jj + 1] = s[1];
        }
      }
    }
}

// A LayerNorm over the channels applied to the merged rows (a fused block's norm after the fusion):
// out == nullptr disables it; weight / bias may be null (1 / 0). by_token: out is [B, N, C], one row per
// token of the merge's input, each the norm of the merged row its token went to (what the block gathers
// by dest next), instead of [B, N_out, C].
template <typename T>
struct LayerNormArgs {
  const T* weight;
  const T* bias;
  T* out;
  float eps;
  int by_token;
};

// Sum over the G lanes of this lane's group (G a power of two <= 32; the groups are lanes G g .. G g + G - 1):
// the last log2(G) steps of warp_sum's butterfly, so where only a row's first G lanes hold values (the rest
// zeros) it is bit for bit what warp_sum gives. Every lane of the warp must make the call.
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// LayerNorm of one row of C values by one group of G lanes (a warp, G = 32, unless the caller packs several
// narrow rows into one), as torch's layer_norm computes it from the row as stored (in T): mean, then the mean
// of squared deviations (biased), y = (x - mean) / sqrt(var + eps) * w + b, in float32. The lane's vectors
// come from load_vector(c0, p, c, v) in merge_slot's layout (channel c = c0 + (G p + lane) V, lane within the
// group, sweeps c0 = 0, G V P, ...), visited three times: two passes for the statistics, one for the output.
// Output rows: out_rows(store) calls store(out_row) for each row [C] that receives the normed values (one, or
// a merged row's tokens); every lane of the group makes every call of the output pass (lanes past C store
// nothing), so with G = 32 out_rows may use warp collectives. Every lane of the warp must make the call (the
// sums are shuffles): a group with no row passes C = 0 and stores nothing.
template <typename T, int V, int P, int G = 32, typename LoadVector, typename OutRows>
__device__ void layer_norm_vectors(int C, const LayerNormArgs<T>& ln, LoadVector&& load_vector, OutRows&& out_rows) {
  const int lane = threadIdx.x & (G - 1);
  auto each_vector = [&](auto&& visit) {
    for (int c0 = 0; c0 < C; c0 += G * V * P)
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int c = c0 + (p * G + lane) * V;
        if (c >= C) continue;
        float v[V];
        load_vector(c0, p, c, v);
        visit(c, v);
      }
  };
  float sum = 0.0f, sq = 0.0f;
  each_vector([&](int, const float* v) {
#pragma unroll
    for (int u = 0; u < V; ++u) sum += v[u];
  });
  const float mean = group_sum<G>(sum) / (float)C;
  each_vector([&](int, const float* v) {
#pragma unroll
    for (int u = 0; u < V; ++u) sq = fmaf(v[u] - mean, v[u] - mean, sq);
  });
  const float rstd = 1.0f / sqrtf(group_sum<G>(sq) / (float)C + ln.eps);
  for (int c0 = 0; c0 < C; c0 += G * V * P)
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int c = c0 + (p * G + lane) * V;
      const bool active = c < C;
      float v[V];
      if (active) {
        float wv[V], bv[V];
#pragma unroll
        for (int u = 0; u < V; ++u) {
          wv[u] = 1.0f;
          bv[u] = 0.0f;
        }
        load_vector(c0, p, c, v);
        if (ln.weight != nullptr) load_vec<T, V>(ln.weight + c, wv);
        if (ln.bias != nullptr) load_vec<T, V>(ln.bias + c, bv);
#pragma unroll
        for (int u = 0; u < V; ++u) v[u] = fmaf((v[u] - mean) * rstd, wv[u], bv[u]);
      }
      out_rows([&](T* out) {
        if (active) store_vec<T, V>(out + c, v);
      });
    }
}

// layer_norm_vectors of a row as stored in memory. Each lane reads back exactly the elements it wrote
// (program order makes its own writes visible). `row` is not __restrict__: this kernel wrote it, so its
// reads must not become read-only-cache loads.
template <typename T, int V, int P, int G = 32, typename OutRows>
__device__ void layer_norm_row(const T* row, int C, const LayerNormArgs<T>& ln, OutRows&& out_rows) {
  layer_norm_vectors<T, V, P, G>(
      C, ln, [&](int, int, int c, float* v) { load_vec<T, V>(row + c, v); }, out_rows);
}

// The same row LayerNorm on its own, one group of G lanes per row of x [R, C] -> ln.out [R, ldo]: for
// T2T-ViT's token norms (147, 64 and 576 channels on thousands of tokens), where torch's layer_norm runs one
// block per row. G = 32 (a warp per row) unless a row's vectors fit fewer lanes: G = 8 or 16 pack 4 or 2 rows
// into a warp (64 float16 channels: 8 lanes of 8 halves), the same bits as a warp per row (group_sum).
// Columns C .. ldo - 1 of each output row are zeros (ldo >= C): T2T-ViT's first norm writes its 147-channel
// rows 16-byte aligned and zero-padded, which the qkv product then takes with zero weight columns, on
// cuBLAS's aligned kernels. With a residual [R, C] it is a block's residual add and the norm after it:
// sum_out = x + residual (each element rounded to T, as torch's add stores it), ln.out = LayerNorm of sum_out
// as stored, so one launch and one pass over the tokens replace torch's add and layer_norm. Grid
// (ceil(R / (8 * 32 / G))), 256 threads.
template <typename T, int V, int P, int G = 32>
__device__ void layer_norm_rows(const T* __restrict__ x, const T* __restrict__ residual, T* sum_out, int R, int C,
                                int ldo, const LayerNormArgs<T>& ln) {
  const int lane = threadIdx.x & (G - 1);
  const int64 row = ((int64)blockIdx.x * blockDim.x + threadIdx.x) / G;
  if (G == 32 && row >= R) return;  // whole warps past the end; narrower groups share a warp's shuffles
  const bool here = row < R;
  const int Cr = here ? C : 0;  // a group past the end loads and stores nothing
  const T* src = x + (here ? row : 0) * C;
  if (residual != nullptr) {
    // layer_norm_row's vector layout, so each lane reads back only the elements it wrote here.
    T* s = sum_out + (here ? row : 0) * C;
    for (int c0 = 0; c0 < Cr; c0 += G * V * P)
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int c = c0 + (p * G + lane) * V;
        if (c >= Cr) continue;
        float a[V], r[V];
        load_vec<T, V>(src + c, a);
        load_vec<T, V>(residual + row * C + c, r);
#pragma unroll
        for (int u = 0; u < V; ++u) a[u] = __fadd_rn(a[u], r[u]);
        store_vec<T, V>(s + c, a);
      }
    src = s;
  }
  T* out = ln.out + (here ? row : 0) * ldo;
  layer_norm_row<T, V, P, G>(src, Cr, ln, [&](auto&& store) { store(out); });
  if (here)
    for (int c = C + lane; c < ldo; c += G) out[c] = T(0);
}

// T2T-ViT's soft split and the token norm after it in one pass: row r = (b, oy, ox) of out [B, OH OW, ldo] is
// the LayerNorm of x's k x k patch at (oy s - pad, ox s - pad), zeros outside x, its Cp = C k k values in
// F.unfold's order (channel, kernel row, kernel column), then zeros up to ldo. x [B, C, H, W] at element
// strides (sb, sc, sy, sx): the image (NCHW), or the previous token block's output seen as an image
// ([B, H W, C] tokens: sc = 1, sx = C). A warp per row, grid (ceil(R / 8)); the patches are never written.
// Where a value sits in its patch (its offset c sc + ky sy + kx sx from the patch's corner, and ky, kx) is the
// same for every row, so the block tabulates it once in shared memory (Cp <= kPatchMax) and each lane then
// loads its values (j = lane + 32 t, t < NT) into registers with one table read each: no index arithmetic per
// value, and the three passes of the norm read registers. The sums run in layer_norm_vectors<T, 1, 4>'s order
// (each lane over j = lane, lane + 32, ..., then warp_sum), so the bits are those of the patches copied out
// (models.layers.unfold_rows / unfold_token_rows) and normed by layer_norm_rows' scalar path.
constexpr int kPatchMax = 640;  // C k k up to 640: T2T-ViT's 147 (3 x 7 x 7) and 576 (64 x 3 x 3)
template <typename T, int NT>
__device__ void layer_norm_patches(const T* __restrict__ x, int R, int C, int H, int W, int sb, int sc, int sy,
                                   int sx, int k, int s, int pad, int OW, int L, int ldo, const LayerNormArgs<T>& ln) {
  __shared__ int offset[kPatchMax];  // per value: its offset in x from the patch's corner
  __shared__ int at[kPatchMax];      // and its ky << 16 | kx
  const int kk = k * k, Cp = C * kk;
  for (int j = threadIdx.x; j < Cp; j += blockDim.x) {
    const int c = j / kk, rem = j - c * kk, ky = rem / k, kx = rem - ky * k;
    offset[j] = c * sc + ky * sy + kx * sx;
    at[j] = (ky << 16) | kx;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= R) return;
  const int b = row / L, l = row - b * L, oy = l / OW, ox = l - oy * OW;
  const int y0 = oy * s - pad, x0 = ox * s - pad;
  const int64 corner = (int64)b * sb + (int64)y0 * sy + (int64)x0 * sx;  // may lie outside x: an offset only
  float v[NT];
  float sum = 0.0f;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int j = lane + 32 * t;
    v[t] = 0.0f;
    if (j < Cp) {
      const int y = y0 + (at[j] >> 16), xx = x0 + (at[j] & 0xffff);
      if (y >= 0 && y < H && xx >= 0 && xx < W) load_vec<T, 1>(x + corner + offset[j], &v[t]);
      sum += v[t];
    }
  }
  const float mean = warp_sum(sum) / (float)Cp;
  float sq = 0.0f;
#pragma unroll
  for (int t = 0; t < NT; ++t)
    if (lane + 32 * t < Cp) sq = fmaf(v[t] - mean, v[t] - mean, sq);
  const float rstd = 1.0f / sqrtf(warp_sum(sq) / (float)Cp + ln.eps);
  T* out = ln.out + (int64)row * ldo;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int j = lane + 32 * t;
    if (j >= Cp) continue;
    float wv = 1.0f, bv = 0.0f;
    if (ln.weight != nullptr) load_vec<T, 1>(ln.weight + j, &wv);
    if (ln.bias != nullptr) load_vec<T, 1>(ln.bias + j, &bv);
    const float y = fmaf((v[t] - mean) * rstd, wv, bv);
    store_vec<T, 1>(out + j, &y);
  }
  for (int c = Cp + lane; c < ldo; c += 32) out[c] = T(0);
}

// The members of one output slot in increasing token index, from the slot's member bitmasks in shared
// memory (masks[c], c < nchunks: bit l set iff token 32 c + l is a member; merge_by_dest builds them once
// per block), so that no pass over the members reads dest again. Chunks go by groups of 32: one ballot per
// group picks its non-empty chunks (lane l tests chunk g + l's word), then one ballot per non-empty chunk
// gives its members (lane l tests bit l of the chunk's word, which every lane reads from the same shared
// address). next_chunk(n0, bits) gives the next non-empty chunk (its first token, its members), next(i)
// the next member; both return false when none is left (and on every later call). Every value comes out
// of a ballot, so the state is the same in every lane (warp-uniform), and every lane of the warp must make
// every call. A chunk's bits by a ballot rather than a shuffle from a lane that holds its word: no per-lane
// word is held, and with the shuffle ptxas spilled the merge kernel for sm_87 under the 80-register cap.
struct SlotMembers {
  const unsigned* masks;
  int nchunks;
  int g = -32;         // first chunk of the current group of 32 chunks
  unsigned any = 0u;   // the group's non-empty chunks not yet given (bit j: chunk g + j)
  int n0 = 0;          // next(): the current chunk's first token
  unsigned bits = 0u;  // next(): the current chunk's members not yet given
  __device__ __forceinline__ SlotMembers(const unsigned* m, int n) : masks(m), nchunks(n) {}
  __device__ __forceinline__ bool next_chunk(int& first, unsigned& members) {
    const int lane = threadIdx.x & 31;
    while (any == 0u) {
      if (g + 32 >= nchunks) return false;
      g += 32;
      // An in-bounds read for every lane (unused past nchunks): no branch around the load, which made
      // ptxas add divergent-collective fallback paths to the ballots.
      const int c = min(g + lane, nchunks - 1);
      any = __ballot_sync(kFullMask, g + lane < nchunks && masks[c] != 0u);
    }
    const int c = g + __ffs(any) - 1;
    any &= any - 1u;
    first = 32 * c;
    members = __ballot_sync(kFullMask, (masks[c] >> lane) & 1u);
    return true;
  }
  __device__ __forceinline__ bool next(int& i) {
    if (bits == 0u && !next_chunk(n0, bits)) return false;
    i = n0 + __ffs(bits) - 1;
    bits &= bits - 1u;
    return true;
  }
};

// Output slot s of merge_by_dest, by one warp: x_out[s] = sum_i(x_i * w_i) / max(sum_i w_i, 1e-12) over
// the slot's members i (dest[i] == s) in increasing index order, plus base[s] when base is given (the mean
// rounded to T, then the sum rounded to T: torch's add of the merged rows to base); size_out[s] = sum_i
// size_i (skipped when size_out is null) and log_size_out[s] = its log as torch's log computes it from
// size_out (float32, rounded to T; skipped when null: the next block's proportional-attention bias, so
// that it costs no launch). masks: the slot's nchunks member bitmasks (SlotMembers), which every pass over
// the members walks (sizes, each sweep's rows, and each by-token norm output); members are taken MAXM at
// a time: their rows' loads are all issued before the first is used, so a slot costs about one global
// round trip, not one per member. Each lane accumulates P vectors of V channels per sweep.
template <typename T, int V, int P>
__device__ void merge_slot(const T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ base,
                           const float* __restrict__ w, const float* __restrict__ sz,
                           const unsigned* __restrict__ masks, int nchunks, T* __restrict__ x_out,
                           T* __restrict__ size_out, T* __restrict__ log_size_out, int N, int N_out, int C, int s,
                           const LayerNormArgs<T>& ln) {
  // Members loaded together: 1 for wide lanes (most slots have one member, and registers are occupancy),
  // else up to 4 (at most 16 floats of loaded rows per lane: four members of 12, V = 4 x P = 3, spilled).
  constexpr int MAXM = P * V >= 12 ? 1 : 4;
  const int b = blockIdx.y, lane = threadIdx.x & 31;
  float den = 0.0f, total = 0.0f;
  {
    SlotMembers members(masks, nchunks);
    for (int i; members.next(i);) {
      den = __fadd_rn(den, w[i]);
      total = __fadd_rn(total, sz[i]);
    }
  }
  den = fmaxf(den, 1e-12f);
  const float rden = division_reciprocal(den);  // divide_by's: once per slot, not once per value
  if (size_out != nullptr && lane == 0) size_out[(int64)b * N_out + s] = from_float<T>(total);
  if (log_size_out != nullptr && lane == 0)
    log_size_out[(int64)b * N_out + s] = from_float<T>(logf(to_float(from_float<T>(total))));

  const T* xb = x + (int64)b * N * C;
  const T* rb = residual == nullptr ? nullptr : residual + (int64)b * N * C;
  T* ob = x_out + ((int64)b * N_out + s) * C;
  // Where the norm's output rows go: the merged row's, or (by token) each member token's.
  auto norm_rows = [&](auto&& store) {
    if (!ln.by_token) {
      store(ln.out + ((int64)b * N_out + s) * C);
      return;
    }
    // Chunk by chunk, no ballot between the stores of a chunk: with next(i), the ballots of a loop that
    // also holds the (lane-divergent) stores made ptxas add divergent-collective fallback paths.
    SlotMembers members(masks, nchunks);
    int n0;
    for (unsigned bits; members.next_chunk(n0, bits);)
      for (; bits != 0u; bits &= bits - 1u) store(ln.out + ((int64)b * N + n0 + __ffs(bits) - 1) * C);
  };
  // One sweep holds the whole row (C <= 32 V P = 512 in float16 with vector loads: DeiT-S's 384 channels):
  // the norm then reads the merged row from registers, not back from memory, which saves a dependent round
  // trip per slot. Float16's vector path only: on the other paths the held row made ptxas spill.
  const bool one_sweep = sizeof(T) == 2 && V > 1 && C <= 32 * V * P;
  constexpr bool kBaseEarly = sizeof(T) == 2;
  // The quotients by divide_by, from one reciprocal, where V <= 4: with 8-half vectors ptxas spilled the
  // merge for sm_87 and sm_90 (80-register cap) in each form tried.
  constexpr bool kOneReciprocal = V <= 4;
  for (int c0 = 0; c0 < C; c0 += 32 * V * P) {
    float acc[P][V];
    RawVector<T, V> base_raw[P];
#pragma unroll
    for (int p = 0; p < P; ++p) {
#pragma unroll
      for (int u = 0; u < V; ++u) acc[p][u] = 0.0f;
      // base's row requested before the members' (it depends on nothing): its round trip overlaps theirs.
      // float16 only: in float32 the held row made ptxas spill for sm_90 under the 80-register cap.
      const int c = c0 + (p * 32 + lane) * V;
      if (kBaseEarly && base != nullptr && c < C)
        base_raw[p] = load_raw<T, V>(base + ((int64)b * N_out + s) * C + c);
    }
    SlotMembers members(masks, nchunks);
    for (;;) {
      // The next MAXM members in index order (fewer at the end; unrolled, so mem stays in registers).
      int mem[MAXM], count = 0;
#pragma unroll
      for (int m = 0; m < MAXM; ++m)
        if (count == m && members.next(mem[m])) ++count;
      if (count == 0) break;
      float xv[MAXM][P][V];
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m >= count) continue;
        const T* row = xb + (int64)mem[m] * C;
#pragma unroll
        for (int p = 0; p < P; ++p) {
          const int c = c0 + (p * 32 + lane) * V;
          if (c < C) load_vec<T, V>(row + c, xv[m][p]);
        }
      }
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m >= count) continue;
        const float wi = w[mem[m]];
#pragma unroll
        for (int p = 0; p < P; ++p) {
          const int c = c0 + (p * 32 + lane) * V;
          if (rb != nullptr && c < C) {
            // The rows merged are x + residual as torch's add stores them: each sum rounded to T.
            float rv[V];
            load_vec<T, V>(rb + (int64)mem[m] * C + c, rv);
#pragma unroll
            for (int u = 0; u < V; ++u) xv[m][p][u] = to_float(from_float<T>(__fadd_rn(xv[m][p][u], rv[u])));
          }
          // x * w rounded, then added: the reference's (x * w) followed by scatter_add (no fma).
#pragma unroll
          for (int u = 0; u < V; ++u) acc[p][u] = __fadd_rn(acc[p][u], __fmul_rn(xv[m][p][u], wi));
        }
      }
      if (count < MAXM) break;
    }
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int c = c0 + (p * 32 + lane) * V;
      if (c >= C) continue;
      if (kOneReciprocal) {
        divide_by<V>(acc[p], den, rden);  // acc / den, the same bits
      } else {
#pragma unroll
        for (int u = 0; u < V; ++u) acc[p][u] = acc[p][u] / den;
      }
      if (base != nullptr) {
        float bv[V];
        if (kBaseEarly)
          unpack_raw<T, V>(base_raw[p], bv);
        else
          load_vec<T, V>(base + ((int64)b * N_out + s) * C + c, bv);
#pragma unroll
        for (int u = 0; u < V; ++u) acc[p][u] = __fadd_rn(bv[u], to_float(from_float<T>(acc[p][u])));
      }
#pragma unroll
      for (int u = 0; u < V; ++u) acc[p][u] = to_float(from_float<T>(acc[p][u]));  // as stored
      store_vec<T, V>(ob + c, acc[p]);
    }
    if (ln.out != nullptr && one_sweep)  // the norm of the row from the registers that hold it as stored
      layer_norm_vectors<T, V, P>(
          C, ln, [&](int, int p, int, float* v) {
#pragma unroll
            for (int u = 0; u < V; ++u) v[u] = acc[p][u];
          },
          norm_rows);
  }
  if (ln.out != nullptr && !one_sweep) layer_norm_row<T, V, P>(ob, C, ln, norm_rows);
}

// The merge: block (x, b) loads batch element b's dest, sizes and pooling weights w (spec.Pooling: 1 =
// ATTN_SIZE, info * size / max size; 0 = SIZE; 3 = MEAN) into shared memory in one round of loads, then
// each warp merges one output slot (merge_slot). residual (may be null): the rows merged are x + residual
// (a block's residual add, so that the sum is never written); base (may be null): [B, N_out, C] added to
// the merged rows (a block's residual add after a branch it merges). The block also builds, once, the
// member bitmasks of its warps' slots s0 .. s0 + warps - 1 (s0 = blockIdx.x * warps), which merge_slot
// walks instead of dest: masks[k * nchunks + c] bit l set iff token 32 c + l < N has dest s0 + k
// (nchunks = ceil(N / 32)), each bit set by its token's thread. Dynamic shared memory: 12 N + 4 warps
// nchunks bytes (cuda.merge_shared_bytes).
template <typename T, int V, int P>
__device__ void merge_by_dest(const T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ base,
                              const T* __restrict__ info, const T* __restrict__ size,
                              const int64* __restrict__ dest, T* __restrict__ x_out, T* __restrict__ size_out,
                              T* __restrict__ log_size_out,
                              int N, int N_out, int C, int pooling, const LayerNormArgs<T>& ln) {
  VITRT_DYNAMIC_SHARED(float, smem);
  __shared__ float scratch[32];
  float* w = smem;                             // [N] pooling weights (info, until the max size is known)
  float* sz = w + N;                           // [N] sizes
  int* dst = reinterpret_cast<int*>(sz + N);  // [N] dest of this batch element
  unsigned* masks = reinterpret_cast<unsigned*>(dst + N);  // [warps][nchunks] member bitmasks of the slots
  const int b = blockIdx.y, tid = threadIdx.x;
  const int warp = tid >> 5, warps = blockDim.x >> 5;
  const int nchunks = (N + 31) >> 5, s0 = blockIdx.x * warps;
  float mx = neg_inf();
  for (int n = tid; n < N; n += blockDim.x) {
    const float sv = to_float(size[(int64)b * N + n]);
    sz[n] = sv;
    w[n] = pooling == 1 ? to_float(info[(int64)b * N + n]) : 1.0f;
    dst[n] = (int)dest[(int64)b * N + n];
    mx = fmaxf(mx, sv);
  }
  for (int i = tid; i < warps * nchunks; i += blockDim.x) masks[i] = 0u;
  // The max size only where the weights use it (ATTN_SIZE); either way a barrier publishes sz, w and the
  // zeroed masks (pooling is the same in the whole block).
  if (pooling == 1)
    mx = block_max(mx, scratch);
  else
    __syncthreads();
  // The member bitmasks: each token whose dest is one of the block's slots sets its bit, by a shared-memory
  // atomicOr (exact, and the same words whatever the order). Each thread reads the dst it wrote. Ballots
  // of every chunk for every slot took about 80 instructions per warp at N = 197, of about 700 in all.
  for (int n = tid; n < N; n += blockDim.x) {
    const int k = dst[n] - s0;
    if (k >= 0 && k < warps) atomicOr(masks + k * nchunks + (n >> 5), 1u << (n & 31));
    w[n] = pooling == 1 ? w[n] * (sz[n] / mx) : (pooling == 0 ? sz[n] : 1.0f);
  }
  __syncthreads();  // publishes w and the masks
  const int s = s0 + warp;
  if (s < N_out)
    merge_slot<T, V, P>(x, residual, base, w, sz, masks + warp * nchunks, nchunks, x_out, size_out, log_size_out,
                        N, N_out, C, s, ln);
}

// Attention each key receives, summed over a chunk of query rows (a fused block's `info`, see
// reference.attention_info): logits [B, H, N, N] are q k^T (unscaled, dtype T); bias_j = log(size_j)
// when size is given (proportional attention), else 0. For rows i of the chunk: p_ij =
// softmax_j(scale * logits_ij + bias_j); colsum[b, h, chunk, j] = sum_i p_ij (float32).
// Lane l of a warp owns columns l, l + 32, ... (VPL of them: N <= 32 VPL), keeping a row's values, the
// bias and its column sums in registers; a warp takes one row at a time, the next row's values requested
// before the current one's reductions. Each warp sums its rows in order and the warps' sums are added in
// warp order: deterministic. The exponentials are base 2 on the SFU with log2(e) folded into the scale
// (`info` feeds temperatures of 20 and 40: 2^-22 relative error is far below what matters).
// Grid (chunks, H, B), 256 threads; dynamic shared memory: 8 N floats.
template <typename T, int VPL>
__device__ void attention_info(const T* __restrict__ logits, const T* __restrict__ size, float* __restrict__ colsum,
                               int N, int H, int rows, float scale) {
  VITRT_DYNAMIC_SHARED(float, smem);
  constexpr float kLog2e = 1.4426950408889634f;
  const int chunk = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
  const float s2 = scale * kLog2e;
  float bias[VPL], acc[VPL], cur[VPL], nxt[VPL];
#pragma unroll
  for (int u = 0; u < VPL; ++u) {
    const int j = lane + 32 * u;
    bias[u] = j < N && size != nullptr ? log2f(to_float(size[(int64)b * N + j])) : 0.0f;
    acc[u] = 0.0f;
  }
  const T* L = logits + (int64)(b * H + h) * N * N;
  const int r1 = min(N, (chunk + 1) * rows);
  auto load_row = [&](int i, float (&v)[VPL]) {
#pragma unroll
    for (int u = 0; u < VPL; ++u) {
      const int j = lane + 32 * u;
      v[u] = i < r1 && j < N ? to_float(L[(int64)i * N + j]) : 0.0f;
    }
  };
  int i = chunk * rows + warp;
  load_row(i, nxt);
  for (; i < r1; i += warps) {
#pragma unroll
    for (int u = 0; u < VPL; ++u) cur[u] = nxt[u];
    load_row(i + warps, nxt);
    float m = neg_inf();
#pragma unroll
    for (int u = 0; u < VPL; ++u) {
      cur[u] = fmaf(cur[u], s2, bias[u]);
      if (lane + 32 * u < N) m = fmaxf(m, cur[u]);
    }
    m = warp_max(m);
    float sum = 0.0f;
#pragma unroll
    for (int u = 0; u < VPL; ++u) {
      cur[u] = lane + 32 * u < N ? fast_exp2(cur[u] - m) : 0.0f;
      sum += cur[u];
    }
    const float inv = 1.0f / warp_sum(sum);
#pragma unroll
    for (int u = 0; u < VPL; ++u) acc[u] = fmaf(cur[u], inv, acc[u]);
  }
#pragma unroll
  for (int u = 0; u < VPL; ++u)
    if (lane + 32 * u < N) smem[warp * N + lane + 32 * u] = acc[u];
  __syncthreads();
  float* out = colsum + (((int64)b * H + h) * gridDim.x + chunk) * N;
  for (int j = tid; j < N; j += blockDim.x) {
    float t = 0.0f;
    for (int w = 0; w < warps; ++w) t += smem[w * N + j];
    out[j] = t;
  }
}

// attention_info straight from q and k, the logits never written: float16 q, k with head dim E = 16 KS
// and at most cuda.INFO_QK_MAX_TOKENS tokens, on tensor cores. It replaces q k^T (a GEMM whose B x H x N x N
// output attention_info then reads back) plus the copies that make q and k contiguous: q and k are read
// through their row strides (in elements, rows 16-byte aligned), as views of the qkv projection.
// Block (chunk, h, b), 32 W threads, in S key splits (`splits`: 1, 2, 4 or 8, dividing W): RG = W / S row
// groups of 16 query rows, chunk * 16 RG .. + 16 RG - 1, times S ranges of the keys (multiples of 8,
// split as evenly as they go); warp w takes row group w % RG (rows 16 (w % RG) ..) and key range w / RG.
// The block's q rows and all N key rows (zero past N) are staged in shared memory as 16-byte vectors, with
// the bias log2(size_j) (0 without proportional attention, -inf past N). Each warp sweeps its rows'
// logits over its keys 8 at a time (m16n8k16, float32 accumulation, no rounding of the logits to float16)
// twice: first for every row's max and sum of exponentials (online per lane, then merged across the quad
// of lanes that shares a row, then, with S > 1, across the S warps of the row group in key-range order
// through shared memory), then for the probabilities, summed over the warp's 16 rows by a fixed shuffle
// tree into the row group's column sums of its keys, which the block adds in row-group order:
// deterministic, no atomics. S = 1 is one warp per 16 rows over all keys; S > 1 shortens each warp's chain
// where blocks are few (small batches) at the cost of more blocks, each staging all the keys.
// Recomputing the logits (4 KS mma per 8 keys) is cheaper than holding 16 x N floats in registers.
// Output as attention_info's: colsum[b, h, chunk, j] (float32). Dynamic shared memory: see cuda.py.
// W warps per block, cuda.info_qk_warps: 8 for E <= 64, where the key rows staged once then serve twice
// the queries of 4 warps and the shared memory per warp, which limits the blocks per SM, drops (32 warps per
// SM at N = 197, E = 64, against 20); 4 for E = 128, whose 8-warp blocks would need more shared memory than
// sm_120 gives a block (99 KiB) at 256 tokens.
template <int KS, int W>
__device__ void attention_info_qk(const half_bits* __restrict__ q, const half_bits* __restrict__ k,
                                  const half_bits* __restrict__ size, float* __restrict__ colsum, int N, int H,
                                  int qsb, int qsh, int qsn, int ksb, int ksh, int ksn, float scale, int splits) {
  constexpr int E = 16 * KS, LD = E + 8, V = E / 8;  // LD: +8 halves make the fragment reads conflict-free
  constexpr float kLog2e = 1.4426950408889634f;
  VITRT_DYNAMIC_SHARED(float, smem);
  const int chunk = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, bd = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int S = splits, RG = W / S, rows = 16 * RG;  // cuda.py: 32 W threads, up to 256 tokens
  const int rg = warp % RG, split = warp / RG;
  const int NP = (N + 7) & ~7, r0 = chunk * rows;
  const int steps = NP / 8, per = (steps + S - 1) / S;  // the warp's keys: [j_lo, j_hi), multiples of 8
  const int j_lo = 8 * min(steps, split * per), j_hi = 8 * min(steps, (split + 1) * per);
  half_bits* Ks = reinterpret_cast<half_bits*>(smem);  // [NP][LD] key rows
  half_bits* Qs = Ks + NP * LD;                         // [rows][LD] the block's query rows
  float* bias = reinterpret_cast<float*>(Qs + rows * LD);  // [NP]
  float* part = bias + NP;                                 // [RG][NP] each row group's column sums
  float* ml = part + RG * NP;                              // S > 1: [W][16][2] each warp's rows' (max, sum)
  const half_bits* kb = k + (int64)b * ksb + (int64)h * ksh;
  const half_bits* qb = q + (int64)b * qsb + (int64)h * qsh;

  // Stage the rows: vector i is row i / V (key rows first, then the block's query rows), 8 channels at
  // (i % V) * 8, by cp.async: every thread's copies in flight at once, one round trip to memory, where
  // four loads at a time through registers took three (the stores waited on them: 11 % of the kernel's
  // stall samples at batch 64 on an H100).
  auto row_src = [&](int row, int c, bool& ok) -> const half_bits* {
    if (row < NP) {
      ok = row < N;
      return kb + (int64)row * ksn + c;
    }
    ok = r0 + row - NP < N;
    return qb + (int64)(r0 + row - NP) * qsn + c;
  };
  auto row_dst = [&](int row, int c) { return row < NP ? Ks + row * LD + c : Qs + (row - NP) * LD + c; };
  const int total = (NP + rows) * V;
  for (int i = tid; i < total; i += bd) {
    bool ok = false;
    const half_bits* src = row_src(i / V, (i % V) * 8, ok);
    cp_async16(row_dst(i / V, (i % V) * 8), ok ? src : kb, ok);
  }
  for (int j = tid; j < NP; j += bd)
    bias[j] = j >= N ? neg_inf() : (size != nullptr ? log2f(to_float(size[(int64)b * N + j])) : 0.0f);
  cp_async_wait_all();
  __syncthreads();

  const int wr = 16 * rg;           // the warp's first row in the block
  const bool active = r0 + wr < N;  // warp-uniform: the mma below needs all 32 lanes
  // The fragments by ldmatrix, as the score kernel takes them: one instruction per two or four 8 x 8
  // matrices where 32-bit loads took one per matrix (the passes over the keys issue their fragment loads
  // with every mma). The query rows' A fragments: the warp's 16 rows x each 16-channel step.
  unsigned qa[KS][4];
  if (active)
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) ldmatrix<4>(qa[ks], a_fragment_row(Qs + wr * LD + 16 * ks, LD));
  // d[0], d[1]: row g, keys j0 + 2t, j0 + 2t + 1; d[2], d[3]: row g + 8, the same keys. Scaled to base-2
  // logits with the bias added. The key fragments: keys j0 .. j0 + 7 x the channels of step ks, b[0..1].
  // Two steps per ldmatrix (x4) made ptxas spill for sm_100 to sm_120.
  const float s2 = scale * kLog2e;
  auto logits = [&](int j0, float (&d)[4]) {
#pragma unroll
    for (int u = 0; u < 4; ++u) d[u] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      unsigned kf[2];
      ldmatrix<2>(kf, b_fragment_row(Ks + j0 * LD + 16 * ks, LD));
      mma_16816(d, qa[ks], kf);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) d[u] = fmaf(d[u], s2, bias[j0 + 2 * t + (u & 1)]);
  };
  // Online (max, sum) merge: (m, l) and (mo, lo) of disjoint keys; nothing to do while both are empty.
  auto merge_max_sum = [](float& m, float& l, float mo, float lo) {
    const float mn = fmaxf(m, mo);
    if (mn != neg_inf()) {
      l = l * fast_exp2(m - mn) + lo * fast_exp2(mo - mn);
      m = mn;
    }
  };
  float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.0f, 0.0f};
  if (active) {
    for (int j0 = j_lo; j0 < j_hi; j0 += 8) {
      float d[4];
      logits(j0, d);
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float mn = fmaxf(m[rr], fmaxf(d[2 * rr], d[2 * rr + 1]));
        if (mn == neg_inf()) continue;  // only padding keys so far
        l[rr] = l[rr] * fast_exp2(m[rr] - mn) + fast_exp2(d[2 * rr] - mn) + fast_exp2(d[2 * rr + 1] - mn);
        m[rr] = mn;
      }
    }
    // Merge the quad's partial (max, sum) pairs; the butterfly leaves the same bits in all four lanes.
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
#pragma unroll
      for (int o = 1; o < 4; o <<= 1)
        merge_max_sum(m[rr], l[rr], __shfl_xor_sync(kFullMask, m[rr], o), __shfl_xor_sync(kFullMask, l[rr], o));
  }
  if (S > 1) {  // block-uniform: the row group's S key ranges, merged in range order by each of its warps
    if (active && t == 0)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        ml[2 * (16 * warp + g + 8 * rr)] = m[rr];
        ml[2 * (16 * warp + g + 8 * rr) + 1] = l[rr];
      }
    __syncthreads();
    if (active)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float* p = ml + 2 * (16 * rg + g + 8 * rr);  // key range 0 of the row group: warp rg
        m[rr] = p[0];
        l[rr] = p[1];
        for (int sp = 1; sp < S; ++sp) merge_max_sum(m[rr], l[rr], p[32 * RG * sp], p[32 * RG * sp + 1]);
      }
  }
  if (active) {
    const int row = r0 + wr + g;
    const float inv0 = row < N ? 1.0f / l[0] : 0.0f, inv1 = row + 8 < N ? 1.0f / l[1] : 0.0f;  // rows past N: 0
    for (int j0 = j_lo; j0 < j_hi; j0 += 8) {
      float d[4];
      logits(j0, d);
      float c0 = fast_exp2(d[0] - m[0]) * inv0 + fast_exp2(d[2] - m[1]) * inv1;
      float c1 = fast_exp2(d[1] - m[0]) * inv0 + fast_exp2(d[3] - m[1]) * inv1;
#pragma unroll
      for (int o = 4; o < 32; o <<= 1) {  // over g: the warp's 16 rows
        c0 += __shfl_xor_sync(kFullMask, c0, o);
        c1 += __shfl_xor_sync(kFullMask, c1, o);
      }
      if (g == 0) {
        part[rg * NP + j0 + 2 * t] = c0;
        part[rg * NP + j0 + 2 * t + 1] = c1;
      }
    }
  } else {
    for (int j = j_lo + lane; j < j_hi; j += 32) part[rg * NP + j] = 0.0f;
  }
  __syncthreads();
  float* out = colsum + (((int64)b * H + h) * gridDim.x + chunk) * N;
  for (int j = tid; j < N; j += bd) {
    float s = part[j];
    for (int r = 1; r < RG; ++r) s += part[r * NP + j];
    out[j] = s;
  }
}

// The mean that turns attention_info's column sums into `info`: colsum [B, H, chunks, N] float32 -> info
// [B, N] (T) = the sum over heads and chunks, in that order, / (H N), as reference.attention_received's
// mean over heads and queries. With log_size (then size is given): log_size [B, N] (T) = log(size), the
// proportional attention's bias that the block's attention adds next, as torch's log computes it (in
// float32, rounded to T), so that it costs no launch of its own. Grid (ceil(N / 256), B).
template <typename T>
__device__ void info_mean(const float* __restrict__ colsum, T* __restrict__ info, int N, int H, int chunks,
                          const T* __restrict__ size, T* __restrict__ log_size) {
  const int b = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= N) return;
  const float* c = colsum + (int64)b * H * chunks * N + j;
  float s = 0.0f;
  for (int i = 0; i < H * chunks; ++i) s += c[(int64)i * N];
  info[(int64)b * N + j] = from_float<T>(s / (float)(H * N));
  if (log_size != nullptr) log_size[(int64)b * N + j] = from_float<T>(logf(to_float(size[(int64)b * N + j])));
}

// Stable descending rank of values[i] among values[0, n), by the group of G adjacent lanes that shares i:
// how many are larger, or equal with a lower index (ties -> lower index first). Each lane counts every
// G-th value, the group adds the counts. Every lane of the warp must call it (i < 0: a lane with no row,
// which counts nothing). The lane's values before i count when >= v, the others when > v: the same
// count as "w > v || (w == v && o < i)" (NaN counts nowhere in either) with one comparison per value.
template <int G>
__device__ __forceinline__ int rank_desc(const float* values, int n, int i, int sub) {
  int cnt = 0;
  if (i >= 0) {
    const float v = values[i];
    int o = sub;
#pragma unroll 4
    for (; o < i; o += G) cnt += values[o] >= v ? 1 : 0;
#pragma unroll 4
    for (; o < n; o += G) cnt += values[o] > v ? 1 : 0;
  }
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) cnt += __shfl_xor_sync(kFullMask, cnt, o);
  return cnt;
}

// r = 0 (the spec's identity): x_out = x and size_out = size as plain copies of nx and ns elements, as
// the reference returns its inputs themselves. Grid-stride loops.
template <typename T>
__device__ void copy(const T* __restrict__ x, const T* __restrict__ size, T* __restrict__ x_out,
                     T* __restrict__ size_out, int nx, int ns) {
  const int stride = gridDim.x * blockDim.x;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < nx; i += stride) x_out[i] = x[i];
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < ns; i += stride) size_out[i] = size[i];
}

}  // namespace

// ---- entry points (extern "C": looked up by name from Python) --------------------------------------

// MIN_BLOCKS per SM caps the registers (64 K / (256 MIN_BLOCKS)). Without a minimum, ptxas for sm_100
// squeezed the 32-tile kernel into 32 registers and spilled; the 64-tile one needs more than 64.
#define VITRT_TF_SCORES(TILE, MIN_BLOCKS, SUFFIX, T)                                                     \
  extern "C" __global__ void __launch_bounds__(256, MIN_BLOCKS) vitrt_tf_scores##TILE##_##SUFFIX(       \
      const T* metric, const T* info, const T* size, float* scores, int N, int Cm, int ldm, float e_sim, \
      float e_info, float e_size, int num_protected, int vec4) {                                         \
    VITRT_KERNEL_PROLOGUE();                                                                             \
    scores_tile<T, TILE>(metric, info, size, scores, N, Cm, ldm, e_sim, e_info, e_size, num_protected,   \
                         vec4);                                                                          \
  }
// The tensor-core score tiles: vitrt_tf_scores_mma_f16 (32 x 32) and vitrt_tf_scores_mma64_f16 (64 x 64).
// The 32 tile's minimum of 4 blocks (a 64-register cap): with none, ptxas for sm_100 chose 48 registers
// and spilled.
extern "C" __global__ void __launch_bounds__(kMmaThreads, 4)
    vitrt_tf_scores_mma_f16(const half_bits* metric, const half_bits* info, const half_bits* size, float* scores,
                            int N, int Cm, int ldm, float e_sim, float e_info, float e_size, int num_protected) {
  VITRT_KERNEL_PROLOGUE();
  scores_tile_mma<32>(metric, info, size, scores, N, Cm, ldm, e_sim, e_info, e_size, num_protected);
}
extern "C" __global__ void __launch_bounds__(kMmaThreads)
    vitrt_tf_scores_mma64_f16(const half_bits* metric, const half_bits* info, const half_bits* size,
                              float* scores, int N, int Cm, int ldm, float e_sim, float e_info, float e_size,
                              int num_protected) {
  VITRT_KERNEL_PROLOGUE();
  scores_tile_mma<64>(metric, info, size, scores, N, Cm, ldm, e_sim, e_info, e_size, num_protected);
}

VITRT_TF_SCORES(64, 2, f32, float)
VITRT_TF_SCORES(32, 4, f32, float)
VITRT_TF_SCORES(64, 2, f16, half_bits)
VITRT_TF_SCORES(32, 4, f16, half_bits)

// Bipartite matching of one batch element per block (reference.bipartite_matching):
//   phase 1: every A token's best B partner (first arg-max); the r1 = r // 2 (one-way: r) A tokens with
//            the best partners (stable descending rank) merge; the others keep slots in index order;
//   phase 2 (bidirectional): every B token's best partner among the unmerged A tokens, in slot order;
//            the r2 = r - r // 2 best merge into it, the others take slots n_unm + rank in descending
//            score order.
// scores_in_shared: copy the batch element's Na x Nb scores into shared memory first (the launcher
// decides by size; the two phases read rows and columns of them). Dynamic shared memory:
// (scores_in_shared ? Na Nb : 0) + 4 Na + 3 Nb floats / ints (see cuda.py).
// One block per batch element does everything, so the kernel's time is its longest dependent chain:
// every O(N^2) step is spread over all 32 warps, a row (or column) per group of kMatchGroup lanes, each
// lane over every kMatchGroup-th element (arg-max and counts, then log2(kMatchGroup) shuffle steps). A
// warp per row made each row a chain of 5 shuffle steps and a warp took 7 rows in turn at N = 197: on an
// H200 the two arg-max steps and the two ranks were 29 + 26 + 15 + 14 % of the kernel's 34 k cycles.
// kTimed (vitrt_tf_match_timed, a diagnostic): thread 0 also writes clock64() at the start and after
// each of the kMatchPhases - 1 steps to phase_clock [B][kMatchPhases] (cuda.MATCH_PHASES names them), so
// a GPU run can say where the chain's time goes; vitrt_tf_match is compiled without any of it.
constexpr int kMatchPhases = 8;
constexpr int kMatchGroup = 8;  // lanes per row (or column) in the arg-max and rank steps
// Both phases of the matching on one batch element's scores S [Na, Nb] (shared or global memory, ready
// for every thread), writing dest db [N]; r > 0. The tables sit in shared memory at `tables`: 4 Na + 3 Nb
// floats / ints (cuda._match_table_bytes). mark(phase) after each step (vitrt_tf_match_timed).
// Index: int where S is in shared memory, int64 where it is in global memory. Inlined into each caller,
// so that where S points into the caller's shared array the compiler sees it and reads it with shared
// loads (a generic pointer cost every score read a 64-bit address and a generic load: the H100 profile
// of 2026-11-27).
template <typename Index, typename Mark>
__device__ __forceinline__ void match_scores(const float* S, float* tables, int64* __restrict__ db, int N, int r,
                                             int bidirectional, Mark&& mark) {
  const int Na = (N + 1) / 2, Nb = N / 2;
  const int r1 = bidirectional ? r / 2 : r, r2 = bidirectional ? r - r / 2 : 0, n_unm = Na - r1;
  const int tid = threadIdx.x, bd = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, warps = bd >> 5;
  float* nmax = tables;                                  // [Na] best score of each A token
  int* nidx = reinterpret_cast<int*>(nmax + Na);         // [Na] its B partner
  int* rank = nidx + Na;                                 // [Na] stable descending rank
  int* slot = rank + Na;                                 // [Na] unmerged A tokens before a: a's slot
  float* nmax2 = reinterpret_cast<float*>(slot + Na);   // [Nb] best score of each B token
  int* nidx2 = reinterpret_cast<int*>(nmax2 + Nb);       // [Nb] its A slot
  int* rank2 = nidx2 + Nb;                               // [Nb]

  // Phase 1: best B partner of every A token. A row per group of kMatchGroup lanes (each lane takes every
  // kMatchGroup-th column, the group's arg-max keeps the first maximum): the warp takes 32 / kMatchGroup
  // rows at once, so a row's dependent chain is a few loads and log2(kMatchGroup) shuffle steps. Loops
  // run while any row of the warp is left (warp-uniform: the shuffles need every lane).
  constexpr int G = kMatchGroup, RPW = 32 / G;
  const int sub = lane & (G - 1), rows = warps * RPW;
  for (int a0 = warp * RPW; a0 < Na; a0 += rows) {
    const int a = a0 + (lane / G);
    float v = 0.0f;
    int i = -1;
    if (a < Na && sub < Nb) {  // the lane's first column taken as is, then the first larger one
      const float* row = S + (Index)a * Nb;
      v = row[sub];
      i = sub;
#pragma unroll 4
      for (int j = sub + G; j < Nb; j += G) {
        const float x = row[j];
        if (x > v) {
          v = x;
          i = j;
        }
      }
    }
    group_argmax<G>(v, i);
    if (sub == 0 && a < Na) {
      nmax[a] = v;
      nidx[a] = i;
    }
  }
  __syncthreads();
  mark(2);
  for (int a0 = warp * RPW; a0 < Na; a0 += rows) {
    const int a = a0 + (lane / G);
    const int cnt = rank_desc<G>(nmax, Na, a < Na ? a : -1, sub);
    if (sub == 0 && a < Na) rank[a] = cnt;
  }
  __syncthreads();
  mark(3);
  // slot[a]: the unmerged A tokens before a (an unmerged token's output slot), by warp 0 alone, 32 tokens
  // per ballot: a block-wide scan's barriers cost more than its few hundred tokens.
  if (warp == 0) {
    int carry = 0;
    for (int a0 = 0; a0 < Na; a0 += 32) {
      const int a = a0 + lane;
      const bool keep = a < Na && rank[a] >= r1;
      const unsigned bits = __ballot_sync(kFullMask, keep);
      const int s = carry + __popc(bits & ((1u << lane) - 1u));
      if (a < Na) slot[a] = s;
      carry += __popc(bits);
    }
  }
  __syncthreads();
  mark(4);

  // Phase 2: B tokens onto the unmerged A tokens: a column per group of lanes, each lane over every G-th
  // A row of it, skipping the merged ones (a row's rank and score load together, where a list of the
  // unmerged rows made each score load wait for its row's index); group_argmax keeps the first maximum, as torch.max
  // does, and since slots follow the A order that is the first in slot order too; nidx2 is its slot.
  if (bidirectional) {
    for (int j0 = warp * RPW; j0 < Nb; j0 += rows) {
      const int j = j0 + (lane / G);
      float v = 0.0f;
      int i = -1;
      if (j < Nb)
#pragma unroll 4
        for (int a = sub; a < Na; a += G) {
          const float x = S[(Index)a * Nb + j];
          if (rank[a] >= r1 && (i < 0 || x > v)) {
            v = x;
            i = a;
          }
        }
      group_argmax<G>(v, i);
      if (sub == 0 && j < Nb) {
        nmax2[j] = v;
        nidx2[j] = i >= 0 ? slot[i] : -1;  // -1: no unmerged A token (r beyond the spec's cap)
      }
    }
    __syncthreads();
    mark(5);
    for (int j0 = warp * RPW; j0 < Nb; j0 += rows) {
      const int j = j0 + (lane / G);
      const int cnt = rank_desc<G>(nmax2, Nb, j < Nb ? j : -1, sub);
      if (sub == 0 && j < Nb) rank2[j] = cnt;
    }
    __syncthreads();
    mark(6);
  }
  // dest in token order, straight to global memory: B token j's slot, and an A token's own slot or, where
  // it merged, its B partner's (which may itself have merged into an A token).
  auto b_slot = [&](int j) {
    if (!bidirectional) return n_unm + j;
    return rank2[j] < r2 ? nidx2[j] : n_unm + rank2[j] - r2;
  };
  for (int i = tid; i < N; i += bd) {
    const int h = i >> 1;
    db[i] = (i & 1) ? b_slot(h) : rank[h] >= r1 ? slot[h] : b_slot(nidx[h]);
  }
  mark(7);
}

// dst[i] = src[i] for i < units by the whole block, eight loads in flight per thread before their stores.
// (Guarded loads in the batched loop, so that a thread with fewer than eight units left would still have
// them all in flight, made the copy of N = 197's 4851 float pairs slower on an H100: 2361 vs 1916 SM cycles.)
template <typename U>
__device__ __forceinline__ void copy_units(U* dst, const U* __restrict__ src, int units) {
  const int bd = blockDim.x;
  int i = threadIdx.x;
  for (; i + 7 * bd < units; i += 8 * bd) {
    U v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = src[i + u * bd];
#pragma unroll
    for (int u = 0; u < 8; ++u) dst[i + u * bd] = v[u];
  }
  for (; i < units; i += bd) dst[i] = src[i];
}

template <bool kTimed>
__device__ void match(const float* __restrict__ scores, int64* __restrict__ dest, int N, int r, int bidirectional,
                      int scores_in_shared, long long* __restrict__ phase_clock) {
  VITRT_DYNAMIC_SHARED(int, smem);
  const int Na = (N + 1) / 2, Nb = N / 2;
  const int b = blockIdx.x, tid = threadIdx.x, bd = blockDim.x;
  int64* db = dest + (int64)b * N;
  if (r == 0) {  // identity (spec): no parity reordering
    for (int i = tid; i < N; i += bd) db[i] = i;
    return;
  }
  auto mark = [&](int phase) {
    if (kTimed && tid == 0) phase_clock[(int64)b * kMatchPhases + phase] = clock64();
  };
  mark(0);
  float* ssm = reinterpret_cast<float*>(smem);  // [Na * Nb] if scores_in_shared, then the tables
  float* tables = ssm + (scores_in_shared ? Na * Nb : 0);
  const float* S = scores + (int64)b * Na * Nb;
  if (scores_in_shared) {
    // Pairs of floats where the batch element's scores are 8-byte aligned (Na Nb even, or an even b):
    // half the loads.
    const int total = Na * Nb;
    const bool pairs = (reinterpret_cast<unsigned long long>(S) & 7u) == 0;
    if (pairs)
      copy_units(reinterpret_cast<float2*>(ssm), reinterpret_cast<const float2*>(S), total / 2);
    else
      copy_units(ssm, S, total);
    if (pairs && (total & 1) && tid == 0) ssm[total - 1] = S[total - 1];
    __syncthreads();
    mark(1);
    match_scores<int>(ssm, tables, db, N, r, bidirectional, mark);
  } else {
    mark(1);
    match_scores<int64>(S, tables, db, N, r, bidirectional, mark);
  }
}

template <int N>
struct UnitCount {  // a count as a type, for a generic lambda to unroll over
  static constexpr int value = N;
};

// The scores and the matching in one launch, one block (1024 threads) per batch element, for float16
// metrics of Cm <= 128 channels (cuda.SCORES_MATCH_MAX_CHANNELS; Cm % 8 == 0, 16-byte aligned rows ldm
// elements apart) and N <= 256 tokens: the scores never make the round trip through global memory. All
// the score work of a batch element runs on one SM, so at small batches the split launches, whose score
// kernel spreads it over many, are faster (the launcher's threshold: cuda.SCORES_MATCH_MIN_BATCH_PER_SM).
// The batch element's metric rows are staged once in shared memory, A rows (even tokens) then B rows
// (odd), each Cm rounded up to 16 channels (zeros) plus 8 halves of padding (conflict-free fragments), the
// row counts rounded up to the mma tile (16 A rows, 8 B rows; zero rows). Every value is computed as
// scores_tile_mma computes it, so the scores, and the dest they give, equal the split launches' bit for
// bit:
//   - a row's norm: 16 adjacent lanes, lane l summing the squares of channels 8 l .. 8 l + 7
//     (add_squares8), then inv_norm16 (scores_tile_mma's single 128-channel step for Cm <= 128);
//   - a dot product: m16n8k16 products over the channels 16 at a time in increasing order (the zero
//     channels past Cm that scores_tile_mma adds change no bit);
//   - the factors from inv_info / inv_size as batch_maxima and tile_factors, and score_of.
// Warp w computes the 16 x 8 output units w, w + 32, ... (at most kScoresMatchUnits per warp: N <= 256),
// holding them in registers until every warp is done with the staged rows, whose shared memory then
// receives the Na x Nb scores (a union: the rows are not needed again). Then match_scores.
// Dynamic shared memory: cuda.scores_match_shared_bytes.
constexpr int kScoresMatchUnits = 4;
__device__ void scores_match(const half_bits* __restrict__ metric, const half_bits* __restrict__ info,
                             const half_bits* __restrict__ size, int64* __restrict__ dest, int N, int Cm, int ldm,
                             float e_sim, float e_info, float e_size, int num_protected, int r, int bidirectional) {
  VITRT_DYNAMIC_SHARED(int, shared);  // int, as match declares it (one extern array per type)
  float* smem = reinterpret_cast<float*>(shared);
  __shared__ float fscratch[32];
  const int Na = (N + 1) / 2, Nb = N / 2;
  const int b = blockIdx.x, tid = threadIdx.x, bd = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  int64* db = dest + (int64)b * N;
  if (r == 0) {
    for (int i = tid; i < N; i += bd) db[i] = i;
    return;
  }
  const int CmP = (Cm + 15) & ~15, LD = CmP + 8, V = CmP / 8;
  const int NaP = (Na + 15) & ~15, NbP = (Nb + 7) & ~7;
  // [NaP + NbP][LD] staged rows (row R < NaP: token 2 R; else token 2 (R - NaP) + 1), later the
  // [Na][Nb] scores; then rn, fi, fs [N] per token; then the matching's tables.
  const int region = max((NaP + NbP) * LD * 2, 4 * Na * Nb);
  half_bits* rows = reinterpret_cast<half_bits*>(smem);
  float* ssm = smem;
  float* rn = smem + ((region + 15) & ~15) / 4;  // published by the barrier after the dot products
  float* fi = rn + N;
  float* fs = fi + N;
  float* tables = fs + N;
  const half_bits* mb = metric + (int64)b * N * ldm;
  const half_bits* ib = info + (int64)b * N;
  const half_bits* sb = size + (int64)b * N;

  // Stage the rows: vector i is row i / V, channels (i % V) * 8 .. + 7 (zero past Cm or for a padding
  // row), at most 4 per thread (N <= 256, Cm <= 128), by cp.async (as attention_info_qk: all of a thread's
  // copies in flight at once, one round trip to memory, no registers held); thread n < N also loads token
  // n's info and size.
  const int total = (NaP + NbP) * V;
  const float info_n = tid < N ? to_float(ib[tid]) : 1.0f, size_n = tid < N ? to_float(sb[tid]) : 1.0f;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int i = tid + u * bd, row = i / V, c = (i % V) * 8;
    if (i >= total) break;
    const int tok = row < NaP ? 2 * row : 2 * (row - NaP) + 1;
    const bool ok = c < Cm && (row < NaP ? row < Na : row - NaP < Nb);
    cp_async16(rows + row * LD + c, ok ? mb + (int64)tok * ldm + c : mb, ok);
  }
  cp_async_wait_all();
  // The batch element's maxima of 1 / info and 1 / size, as batch_maxima (its barriers publish the rows),
  // then token n's factors, as tile_factors.
  float mi = tid < N && e_info > 0.0f ? inv_info(info_n) : neg_inf();
  float ms = tid < N && e_size > 0.0f ? inv_size(size_n) : neg_inf();
  mi = block_max(mi, fscratch);
  ms = block_max(ms, fscratch);
  if (tid < N) {
    fi[tid] = e_info > 0.0f ? pow_like_torch(inv_info(info_n) / mi, e_info) : 1.0f;
    fs[tid] = e_size > 0.0f ? pow_like_torch(inv_size(size_n) / ms, e_size) : 1.0f;
  }

  // Norms: token n by the 16 lanes tid / 16 == n (mod 64), as scores_tile_mma's loaders sum them.
  const auto stage_row = [&](int n) { return (n & 1) ? NaP + (n >> 1) : (n >> 1); };
  for (int n0 = 2 * warp; n0 < N; n0 += 2 * (bd >> 5)) {  // warp-uniform: the shuffles need all 32 lanes
    const int n = n0 + (lane >> 4), l = lane & 15;
    float ss = 0.0f;
    if (n < N && 8 * l < CmP)
      ss = add_squares8(*reinterpret_cast<const uint4*>(rows + stage_row(n) * LD + 8 * l), ss);
    const float inv = inv_norm16(ss);
    if (n < N && l == 0) rn[n] = inv;
  }

  // The dot products: unit u = warp + 32 k is rows (u / NT) * 16 .. + 15 of A, (u % NT) * 8 .. + 7 of B;
  // the warp's units advance together, channel step by channel step, so their products are independent
  // instructions in flight rather than one unit's chain after another's. The fragments by ldmatrix, as
  // scores_tile_mma takes them (two instructions per unit and step where 32-bit loads took six); ar, br:
  // the lane's row offsets (halves from `rows`) in the unit's A and B tiles (a_fragment_row, b_fragment_row),
  // advanced one step at a time. Offsets carried by the loop, and the warp's unit count as a compile-time
  // constant (no per-unit exit: no WARPSYNC per mma), took the sm_90 loop from 291 instructions per 16 mma
  // (64-bit row pointers re-derived every step under the 64-register cap) to 5.6 per mma with 4 units (8 with
  // one), no spills.
  const int NT = NbP / 8, units = (NaP / 16) * NT, mine = (units - warp + 31) / 32;  // warp-uniform
  float acc[kScoresMatchUnits][4];
  int ar[kScoresMatchUnits], br[kScoresMatchUnits];
#pragma unroll
  for (int k = 0; k < kScoresMatchUnits; ++k) {
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[k][q] = 0.0f;
    const int u = warp + 32 * k;
    ar[k] = static_cast<int>(a_fragment_row(rows + (u / NT) * 16 * LD, LD) - rows);
    br[k] = static_cast<int>(b_fragment_row(rows + (NaP + (u % NT) * 8) * LD, LD) - rows);
  }
  const auto products = [&](auto count) {  // count: the warp's units, a compile-time constant
#pragma unroll 2
    for (int k0 = 0; k0 < CmP; k0 += 16) {
#pragma unroll
      for (int k = 0; k < decltype(count)::value; ++k) {
        unsigned fa[4], fb[2];
        ldmatrix<4>(fa, rows + ar[k]);
        ldmatrix<2>(fb, rows + br[k]);
        mma_16816(acc[k], fa, fb);
        ar[k] += 16;
        br[k] += 16;
      }
    }
  };
  // mine <= 4 as N <= 256 (cuda.SCORES_MATCH_MAX_TOKENS, the launcher's limit); mine = 0: no units.
  static_assert(kScoresMatchUnits == 4, "one case per unit count below");
  if (mine == 4)
    products(UnitCount<4>{});
  else if (mine == 3)
    products(UnitCount<3>{});
  else if (mine == 2)
    products(UnitCount<2>{});
  else if (mine == 1)
    products(UnitCount<1>{});
  __syncthreads();  // every warp is done with the staged rows; rn, fi, fs are published

#pragma unroll
  for (int k = 0; k < kScoresMatchUnits; ++k) {
    const int u = warp + 32 * k;
    if (u >= units) continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int a = (u / NT) * 16 + g + (q >> 1) * 8, j = (u % NT) * 8 + 2 * t + (q & 1);
      if (a >= Na || j >= Nb) continue;
      const int ta = 2 * a, tb = 2 * j + 1;
      ssm[a * Nb + j] = score_of(acc[k][q], rn[ta], rn[tb], fi[ta], fi[tb], fs[ta], fs[tb], e_sim,
                                 ta < num_protected || tb < num_protected);
    }
  }
  __syncthreads();
  match_scores<int>(ssm, tables, db, N, r, bidirectional, [](int) {});
}

// (1024, 1): with (1024) alone, ptxas for sm_90 and sm_100 held the matching to 32 registers (two blocks
// per SM) and spilled; one block per batch element needs no second block per SM.
extern "C" __global__ void __launch_bounds__(1024, 1)
    vitrt_tf_match(const float* scores, int64* dest, int N, int r, int bidirectional, int scores_in_shared) {
  VITRT_KERNEL_PROLOGUE();
  match<false>(scores, dest, N, r, bidirectional, scores_in_shared, nullptr);
}
extern "C" __global__ void __launch_bounds__(1024) vitrt_tf_scores_match_f16(
    const half_bits* metric, const half_bits* info, const half_bits* size, int64* dest, int N, int Cm, int ldm,
    float e_sim, float e_info, float e_size, int num_protected, int r, int bidirectional) {
  VITRT_KERNEL_PROLOGUE();
  scores_match(metric, info, size, dest, N, Cm, ldm, e_sim, e_info, e_size, num_protected, r, bidirectional);
}
extern "C" __global__ void __launch_bounds__(1024, 1)
    vitrt_tf_match_timed(const float* scores, int64* dest, int N, int r, int bidirectional, int scores_in_shared,
                         long long* phase_clock) {
  VITRT_KERNEL_PROLOGUE();
  match<true>(scores, dest, N, r, bidirectional, scores_in_shared, phase_clock);
}

// vec: 1 when C and the x / residual / base / x_out addresses allow V-wide vectors (f32: 4 floats, f16: 8 halves = 16
// bytes), else 0 (one element per lane). vitrt_tf_merge384_f16 (vec unused): 4-half vectors (8 bytes), three
// per lane, for 256 < C <= 384 (DeiT-S, T2T-ViT-14): the whole row in one sweep with every lane busy, where
// 8-half vectors leave half the lanes idle in their second vector; its own entry, since in one kernel with
// the other two paths ptxas spilled for sm_87 and sm_90 under the 80-register cap.
// ln_out: 0, or the LayerNorm of every merged row (ln_weight / ln_bias may be 0) with ln_eps, [B, N_out, C],
// or with ln_by_token [B, N, C] (each token's row: the norm of the merged row it went to); vec then also
// covers ln_out, ln_weight and ln_bias.
// MIN_BLOCKS 3 caps the registers at 80 (64 K / 768, in steps of 8): without a minimum, ptxas for sm_90 ..
// sm_120 held the merge with a residual to 64 registers and spilled.
#define VITRT_TF_MERGE(SUFFIX, T, VEC)                                                                        \
  extern "C" __global__ void __launch_bounds__(256, 3) vitrt_tf_merge_##SUFFIX(                               \
      const T* x, const T* residual, const T* base, const T* info, const T* size, const int64* dest, T* x_out, \
      T* size_out, T* log_size_out, int N, int N_out, int C, int pooling, int vec, const T* ln_weight,        \
      const T* ln_bias, T* ln_out, float ln_eps, int ln_by_token) {                                         \
    VITRT_KERNEL_PROLOGUE();                                                                                \
    const LayerNormArgs<T> ln{ln_weight, ln_bias, ln_out, ln_eps, ln_by_token};                             \
    if (vec)                                                                                                \
      merge_by_dest<T, VEC, 2>(x, residual, base, info, size, dest, x_out, size_out, log_size_out, N, N_out, \
                               C, pooling, ln);                                                             \
    else                                                                                                    \
      merge_by_dest<T, 1, 4>(x, residual, base, info, size, dest, x_out, size_out, log_size_out, N, N_out,   \
                             C, pooling, ln);                                                               \
  }
VITRT_TF_MERGE(f32, float, 4)
VITRT_TF_MERGE(f16, half_bits, 8)
extern "C" __global__ void __launch_bounds__(256, 3) vitrt_tf_merge384_f16(
    const half_bits* x, const half_bits* residual, const half_bits* base, const half_bits* info,
    const half_bits* size, const int64* dest, half_bits* x_out, half_bits* size_out, half_bits* log_size_out,
    int N, int N_out, int C, int pooling, int vec, const half_bits* ln_weight, const half_bits* ln_bias,
    half_bits* ln_out, float ln_eps, int ln_by_token) {
  VITRT_KERNEL_PROLOGUE();
  const LayerNormArgs<half_bits> ln{ln_weight, ln_bias, ln_out, ln_eps, ln_by_token};
  merge_by_dest<half_bits, 4, 3>(x, residual, base, info, size, dest, x_out, size_out, log_size_out, N, N_out, C,
                                 pooling, ln);
}

extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_copy_f32(const float* x, const float* size, float* x_out, float* size_out, int nx, int ns) {
  VITRT_KERNEL_PROLOGUE();
  copy<float>(x, size, x_out, size_out, nx, ns);
}
extern "C" __global__ void __launch_bounds__(256) vitrt_tf_copy_f16(const half_bits* x, const half_bits* size,
                                                                    half_bits* x_out, half_bits* size_out,
                                                                    int nx, int ns) {
  VITRT_KERNEL_PROLOGUE();
  copy<half_bits>(x, size, x_out, size_out, nx, ns);
}

// The attention_info entries: VPL = 8 (N <= 256) or 24 (N <= 768); the launcher checks N.
#define VITRT_TF_INFO(VPL, SUFFIX, T)                                                                      \
  extern "C" __global__ void __launch_bounds__(256) vitrt_tf_attention_info##VPL##_##SUFFIX(               \
      const T* logits, const T* size, float* colsum, int N, int H, int rows, float scale) {               \
    VITRT_KERNEL_PROLOGUE();                                                                              \
    attention_info<T, VPL>(logits, size, colsum, N, H, rows, scale);                                      \
  }
VITRT_TF_INFO(8, f32, float)
VITRT_TF_INFO(24, f32, float)
VITRT_TF_INFO(8, f16, half_bits)
VITRT_TF_INFO(24, f16, half_bits)

// attention_info from q and k: KS = E / 16 for E = 32, 64, 128 (cuda.INFO_QK_HEAD_DIMS), W warps
// (cuda.info_qk_warps).
#define VITRT_TF_INFO_QK(KS, W)                                                                           \
  extern "C" __global__ void __launch_bounds__(32 * W) vitrt_tf_attention_info_qk##KS##_f16(              \
      const half_bits* q, const half_bits* k, const half_bits* size, float* colsum, int N, int H, int qsb, \
      int qsh, int qsn, int ksb, int ksh, int ksn, float scale, int splits) {                              \
    VITRT_KERNEL_PROLOGUE();                                                                               \
    attention_info_qk<KS, W>(q, k, size, colsum, N, H, qsb, qsh, qsn, ksb, ksh, ksn, scale, splits);      \
  }
VITRT_TF_INFO_QK(2, 8)
VITRT_TF_INFO_QK(4, 8)
VITRT_TF_INFO_QK(8, 4)

extern "C" __global__ void __launch_bounds__(256) vitrt_tf_info_mean_f32(const float* colsum, float* info, int N,
                                                                         int H, int chunks, const float* size,
                                                                         float* log_size) {
  VITRT_KERNEL_PROLOGUE();
  info_mean<float>(colsum, info, N, H, chunks, size, log_size);
}
extern "C" __global__ void __launch_bounds__(256) vitrt_tf_info_mean_f16(const float* colsum, half_bits* info,
                                                                         int N, int H, int chunks,
                                                                         const half_bits* size,
                                                                         half_bits* log_size) {
  VITRT_KERNEL_PROLOGUE();
  info_mean<half_bits>(colsum, info, N, H, chunks, size, log_size);
}

// The row LayerNorm alone (cuda.layer_norm_rows_cuda; residual and sum_out null) or after a residual add
// (cuda.add_layer_norm_rows_cuda): vec as for the merge (C % V == 0, 16-byte rows); out's rows ldo apart;
// group: lanes per row (32, or 8 / 16 for rows of at most 8 / 16 vectors, vec only; cuda.layer_norm_group).
#define VITRT_TF_LAYER_NORM(SUFFIX, T, VEC)                                                                 \
  extern "C" __global__ void __launch_bounds__(256) vitrt_tf_layer_norm_##SUFFIX(                         \
      const T* x, const T* residual, const T* weight, const T* bias, T* sum_out, T* out, int R, int C,     \
      float eps, int vec, int ldo, int group) {                                                            \
    VITRT_KERNEL_PROLOGUE();                                                                               \
    const LayerNormArgs<T> ln{weight, bias, out, eps, 0};                                                  \
    if (vec && group == 8)                                                                                \
      layer_norm_rows<T, VEC, 1, 8>(x, residual, sum_out, R, C, ldo, ln);                                 \
    else if (vec && group == 16)                                                                          \
      layer_norm_rows<T, VEC, 1, 16>(x, residual, sum_out, R, C, ldo, ln);                                \
    else if (vec)                                                                                         \
      layer_norm_rows<T, VEC, 2>(x, residual, sum_out, R, C, ldo, ln);                                    \
    else                                                                                                  \
      layer_norm_rows<T, 1, 4>(x, residual, sum_out, R, C, ldo, ln);                                      \
  }
VITRT_TF_LAYER_NORM(f32, float, 4)
VITRT_TF_LAYER_NORM(f16, half_bits, 8)

// A soft split's patches normed in one pass (cuda.unfold_layer_norm_cuda): layer_norm_patches with 8 values per
// lane (C k k <= 256: T2T-ViT's 147) or 20 (<= 640: its 576). At least 4 blocks per SM: without a minimum,
// ptxas for sm_120 held it to 40 registers and spilled (it takes 56 to 61 for 4 blocks, no spills).
#define VITRT_TF_UNFOLD_LAYER_NORM(SUFFIX, T)                                                                  \
  extern "C" __global__ void __launch_bounds__(256, 4) vitrt_tf_unfold_layer_norm_##SUFFIX(                 \
      const T* x, const T* weight, const T* bias, T* out, int R, int C, int H, int W, int sb, int sc, int sy, \
      int sx, int k, int s, int pad, int OW, int L, int ldo, float eps) {                                     \
    VITRT_KERNEL_PROLOGUE();                                                                                  \
    const LayerNormArgs<T> ln{weight, bias, out, eps, 0};                                                     \
    if (C * k * k <= 256)                                                                                     \
      layer_norm_patches<T, 8>(x, R, C, H, W, sb, sc, sy, sx, k, s, pad, OW, L, ldo, ln);                     \
    else                                                                                                      \
      layer_norm_patches<T, 20>(x, R, C, H, W, sb, sc, sy, sx, k, s, pad, OW, L, ldo, ln);                    \
  }
VITRT_TF_UNFOLD_LAYER_NORM(f32, float)
VITRT_TF_UNFOLD_LAYER_NORM(f16, half_bits)
