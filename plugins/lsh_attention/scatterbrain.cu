// CUDA kernels of the ScatterbrainAttention op: ground truth plugins/lsh_attention/reference.py, contract
// plugins/lsh_attention/spec.py. Launched by plugins/lsh_attention/cuda.py, in order:
//
//   1. vitrt_sb_features_<dt>  grid (chunks, BH)   per token |q|^2, |k|^2 and the hash dot products of every
//                                                  round (SCATTERBRAIN, LSH; the XBOX+ term is added by the
//                                                  sort); per chunk the maxima of |q|^2, |k|^2 (XBOX+ needs
//                                                  MQ + MK) and of the key features' log values (FAVOR+
//                                                  needs their max log_k); q', the keys' log features, pls
//                                                  without log_k and the chunk's partial k'^T [v, 1] relative
//                                                  to its own maximum (SCATTERBRAIN, PERFORMER)
//   2. vitrt_sb_kv_reduce      grid (8 L/128, BH)  log_k; low-rank state kv = k'^T v and sum k' (a fixed
//                                                  order); k' = exp(log features - log_k) and pls + log_k
//   3. vitrt_sb_sort           grid (2R, BH)       the hashes completed with the XBOX+ term, then their
//                                                  stable argsort (LSD radix sort of 32-bit order keys,
//                                                  8-bit digits ranked with warp ballots) -> permutations
//                                                  and their inverses (vitrt_sb_sort_few: 1 or 2 keys per
//                                                  thread, P <= 2048). vitrt_sb_sort_tiles: the same for
//                                                  P > 8192 (the radix passes over tiles of 8192 keys)
//   4. vitrt_sb_cluster_<dt>   grid (clusters/G, R, BH)  dense attention inside G clusters of one round,
//                                                  with the duplicate-pair count and the low-rank
//                                                  correction; per-round rows in token order.
//                                                  vitrt_sb_cluster_mma<NT>_f16: the same on tensor cores
//                                                  (float16, c <= 8 NT, NT = 1 .. 8; the launcher's
//                                                  choice wherever it applies).
//                          grid (clusters ceil(c/QS), R, BH)  vitrt_sb_cluster_tiled_<dt>: the same for
//                                                  clusters too large to stage, QS queries a block, the
//                                                  keys in tiles (online softmax)
//   5. vitrt_sb_combine_<dt>   grid (N/QPB, BH)    rounds combined in log domain + the low-rank term,
//                                                  clamped denominator, cast to the output dtype
//      vitrt_sb_combine_global_<dt>                the same, the low-rank state read from global memory
//                                                  (too many features to stage it)
//
// Modes (spec.Mode): 0 SCATTERBRAIN runs 1-5; 1 LSH runs 1 (norms and hashes), 3, 4, 5; 2 PERFORMER
// runs 1, 2, 5. (Until 2026-11-28 a kernel of its own, vitrt_sb_stats, found the key maxima before the
// features kernel: the same values, one launch and one read of k more.) Layouts: q, k [B, H, N, E] and v
// [B, H, N, Dv] at the batch, head and token strides SB_QKV_LAYOUT gives (views of a qkv projection are read in
// place), channels at unit stride; out [BH, N, Dv] packed (dtype <dt>: f32, or f16 as raw bits); hash_vectors
// [R, E + 2] and projection [m, E] float32; everything else float32 (int32 indices) in the workspace; P = N
// padded to a multiple of the cluster size c (tokens >= N are zero rows: padding).
//
// How the work is laid out: the kernels stage rows in shared memory as float32 (16-byte vector loads where
// the row width and the pointer allow: `vec*` flags from the launcher) and compute small matrix products with
// register tiles, each output a sequential fmaf chain over the reduction index in order (so equal tokens give
// bitwise equal dot products, whatever their place in a tile). Shared rows have a pitch of an odd number of
// 16-byte units (pitch4) so that float4 reads of consecutive rows by the lanes of a warp are free of bank
// conflicts. Every shared region's size is a multiple of 4 floats (16 bytes). The exception is the cluster
// kernel on tensor cores, which stages float16 and multiplies on mma_16816 (see its comment).
// cuda.py's shared_bytes mirrors the layouts below.
//
// Determinism: no floating-point atomics (the sort in tiles counts digits with shared integer atomics, whose
// sums do not depend on their order); every sum runs in a fixed order (the chunks' partial sums too), so results
// are bitwise reproducible run to run.

#include "cuda_common.cuh"

using namespace vitrt;

namespace {

constexpr int kScatterbrain = 0, kLsh = 1, kPerformer = 2;

// Row pitch in floats: n rounded up to whole 16-byte units, an odd number of them (conflict-free float4
// reads of consecutive rows); r4: n rounded up to a multiple of 4 floats.
__device__ __forceinline__ int pitch4(int n) { return 4 * (((n + 3) >> 2) | 1); }
__device__ __forceinline__ int r4(int n) { return (n + 3) & ~3; }

// n / d by a multiply: m = ceil(2^32 / d), then (n m) >> 32 = n / d exactly for 0 <= n with n d < 2^32
// (n m / 2^32 = n / d + n e / (d 2^32) with e = m d - 2^32 < d). Gather units and buckets stay far inside.
struct FastDiv {
  unsigned long long m;
  __device__ __forceinline__ explicit FastDiv(int d) : m((0x100000000ull + (unsigned)d - 1u) / (unsigned)d) {}
  __device__ __forceinline__ int operator()(int n) const { return (int)(((unsigned long long)(unsigned)n * m) >> 32); }
};

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void st4(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}

// acc[a][b] += A_a . B_b over n4 columns (a multiple of 4): rows A_a = A + ao[a], B_b = B + bo[b] in shared
// memory, one sequential fmaf chain per output in column order, float4 reads.
template <int TA, int TB>
__device__ __forceinline__ void tile_fma(const float* __restrict__ A, const int (&ao)[TA],
                                         const float* __restrict__ B, const int (&bo)[TB], int n4,
                                         float (&acc)[TA][TB]) {
#pragma unroll 1
  for (int e = 0; e < n4; e += 4) {
    float4 av[TA], bv[TB];
#pragma unroll
    for (int a = 0; a < TA; ++a) av[a] = ld4(A + ao[a] + e);
#pragma unroll
    for (int b = 0; b < TB; ++b) bv[b] = ld4(B + bo[b] + e);
#pragma unroll
    for (int a = 0; a < TA; ++a)
#pragma unroll
      for (int b = 0; b < TB; ++b) {
        float x = acc[a][b];
        x = fmaf(av[a].x, bv[b].x, x);
        x = fmaf(av[a].y, bv[b].y, x);
        x = fmaf(av[a].z, bv[b].z, x);
        acc[a][b] = fmaf(av[a].w, bv[b].w, x);
      }
  }
}

// 16 bytes of T as float32: 4 floats or 8 halves.
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
  static constexpr int kCount = 4;
  static __device__ __forceinline__ void unpack(const uint4& w, float* out) {
    out[0] = __uint_as_float(w.x);
    out[1] = __uint_as_float(w.y);
    out[2] = __uint_as_float(w.z);
    out[3] = __uint_as_float(w.w);
  }
};
template <>
struct Vec16<half_bits> {
  static constexpr int kCount = 8;
  static __device__ __forceinline__ void unpack(const uint4& w, float* out) {
    const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = to_float(static_cast<half_bits>(u[i] & 0xffffu));
      out[2 * i + 1] = to_float(static_cast<half_bits>(u[i] >> 16));
    }
  }
};

// Rows of a [*, width] tensor (T in global memory, token t's row at src + t * stride) gathered into shared
// memory as float32: row i of the destination is token tok[i] (or first + i when tok is null), zero for tokens
// >= n_real (padding) and for columns [width, r4(width)). A unit of work is 16 bytes of a row (vec: width and
// stride are multiples of 16 bytes of T and src is 16-byte aligned) or one element.
template <typename T>
struct RowSrc {
  const T* src;
  const int* tok;
  float* dst;
  int first, width, stride, pitch, n_real, rows, u;  // u: units per row
  bool vec;
  FastDiv per_row;  // / u

  __device__ __forceinline__ RowSrc(const T* src_, const int* tok_, int first_, int nrows, int width_, int n_real_,
                                    bool vec_, float* dst_, int pitch_, int stride_)
      : src(src_), tok(tok_), dst(dst_), first(first_), width(width_), stride(stride_), pitch(pitch_),
        n_real(n_real_), rows(nrows), u(vec_ ? width_ / Vec16<T>::kCount : r4(width_)), vec(vec_),
        per_row(max(u, 1)) {}
  __device__ __forceinline__ int items() const { return rows * u; }
  __device__ __forceinline__ uint4 load(int it) const {
    const int i = per_row(it), g = it - i * u, t = tok != nullptr ? tok[i] : first + i;
    uint4 w;
    w.x = w.y = w.z = w.w = 0u;
    if (t < n_real) {
      if (vec)
        w = *reinterpret_cast<const uint4*>(src + (int64)t * stride + g * Vec16<T>::kCount);
      else if (g < width)
        w.x = __float_as_uint(to_float(src[(int64)t * stride + g]));
    }
    return w;
  }
  __device__ __forceinline__ void store(int it, const uint4& w) const {
    const int i = per_row(it), g = it - i * u;
    if (vec) {
      constexpr int V = Vec16<T>::kCount;
      float x[V];
      Vec16<T>::unpack(w, x);
      float* o = dst + i * pitch + g * V;
#pragma unroll
      for (int j = 0; j < V; j += 4) st4(o + j, x[j], x[j + 1], x[j + 2], x[j + 3]);
    } else {
      dst[i * pitch + g] = __uint_as_float(w.x);
    }
  }
};

// stride: elements from one token's row to the next (0: width, rows packed).
template <typename T>
__device__ __forceinline__ RowSrc<T> rows_of(const T* src, const int* tok, int first, int nrows, int width,
                                             int n_real, bool vec, float* dst, int pitch, int stride = 0) {
  return RowSrc<T>(src, tok, first, nrows, width, n_real, vec, dst, pitch, stride > 0 ? stride : width);
}

// Where the rows of batch x head bh of a [B, H, N, *] tensor start, in elements, from its batch and head strides
// (the token stride and unit channel stride are the rows'): q, k, v may be views of a qkv projection.
__device__ __forceinline__ int64 row_base(int bh, int H, int sb, int sh) {
  const int b = bh / H;
  return (int64)b * sb + (int64)(bh - b * H) * sh;
}
// The layout of q, k and v that the kernels reading them take (cuda.py QKVLayout): the heads H, then the batch,
// head and token strides of q and k (one layout for both), then of v, in elements.
#define SB_QKV_LAYOUT int H, int qsb, int qsh, int qsn, int vsb, int vsh, int vsn
#define SB_QKV_LAYOUT_ARGS H, qsb, qsh, qsn, vsb, vsh, vsn

template <typename S0, typename... Rest>
__device__ __forceinline__ int items_of(const S0& s0, const Rest&... rest) {
  if constexpr (sizeof...(Rest) == 0) {
    return s0.items();
  } else {
    return s0.items() + items_of(rest...);
  }
}
template <typename S0, typename... Rest>
__device__ __forceinline__ uint4 load_item(int it, const S0& s0, const Rest&... rest) {
  if constexpr (sizeof...(Rest) == 0) {
    return s0.load(it);
  } else {
    const int n = s0.items();
    return it < n ? s0.load(it) : load_item(it - n, rest...);
  }
}
template <typename S0, typename... Rest>
__device__ __forceinline__ void store_item(int it, const uint4& w, const S0& s0, const Rest&... rest) {
  if constexpr (sizeof...(Rest) == 0) {
    s0.store(it, w);
  } else {
    const int n = s0.items();
    if (it < n)
      s0.store(it, w);
    else
      store_item(it - n, w, rest...);
  }
}

// The rows of every source into shared memory, the sources' units numbered one after another: each
// thread issues up to K independent loads (of any of the sources) before it stores them, so a block
// waits for one memory round trip per K * blockDim.x units instead of one per tensor.
template <int K, typename... S>
__device__ __forceinline__ void gather(const S&... srcs) {
  const int total = items_of(srcs...), nt = blockDim.x;
  for (int base = threadIdx.x; base < total; base += K * nt) {
    uint4 raw[K];
#pragma unroll
    for (int u = 0; u < K; ++u) {
      const int it = base + u * nt;
      if (it < total) raw[u] = load_item(it, srcs...);
    }
#pragma unroll
    for (int u = 0; u < K; ++u) {
      const int it = base + u * nt;
      if (it < total) store_item(it, raw[u], srcs...);
    }
  }
}

// Per-slot values of a cluster block, as gather sources: dst[j * dpitch + i] = src[j * P + tok[i]] for
// slots i < rows and rounds j < nj; Bucket stores the int divided by c (the cluster of the slot's token in
// round j), Scalar stores the float.
struct SlotScalar {
  const float* src;
  const int* tok;
  float* dst;
  int rows;
  __device__ __forceinline__ int items() const { return rows; }
  __device__ __forceinline__ uint4 load(int it) const {
    uint4 w;
    w.x = __float_as_uint(src[tok[it]]);
    w.y = w.z = w.w = 0u;
    return w;
  }
  __device__ __forceinline__ void store(int it, const uint4& w) const { dst[it] = __uint_as_float(w.x); }
};
struct SlotBucket {
  const int* src;
  const int* tok;
  int* dst;
  int rows, nj, P, dpitch;
  FastDiv per_round, per_cluster;  // / rows, / c
  __device__ __forceinline__ SlotBucket(const int* src_, const int* tok_, int* dst_, int rows_, int nj_, int P_,
                                        int dpitch_, int c)
      : src(src_), tok(tok_), dst(dst_), rows(rows_), nj(nj_), P(P_), dpitch(dpitch_), per_round(max(rows_, 1)),
        per_cluster(c) {}
  __device__ __forceinline__ int items() const { return rows * nj; }
  __device__ __forceinline__ uint4 load(int it) const {
    const int j = per_round(it), i = it - j * rows;
    uint4 w;
    w.x = (unsigned)src[(int64)j * P + tok[i]];
    w.y = w.z = w.w = 0u;
    return w;
  }
  __device__ __forceinline__ void store(int it, const uint4& w) const {
    const int j = per_round(it), i = it - j * rows;
    dst[j * dpitch + i] = per_cluster((int)w.x);
  }
};

// Blocks of consecutive floats as gather sources: dst[j * dpitch + i] = src[j * spitch + i] for i < n,
// j < nj (scalar units).
struct Span {
  const float* src;
  float* dst;
  int n, nj;
  int64 spitch;
  int dpitch;
  FastDiv per_block;  // / n
  __device__ __forceinline__ Span(const float* src_, float* dst_, int n_, int nj_, int64 spitch_, int dpitch_)
      : src(src_), dst(dst_), n(n_), nj(nj_), spitch(spitch_), dpitch(dpitch_), per_block(max(n_, 1)) {}
  __device__ __forceinline__ int items() const { return n * nj; }
  __device__ __forceinline__ uint4 load(int it) const {
    const int j = per_block(it), i = it - j * n;
    uint4 w;
    w.x = __float_as_uint(src[j * spitch + i]);
    w.y = w.z = w.w = 0u;
    return w;
  }
  __device__ __forceinline__ void store(int it, const uint4& w) const {
    const int j = per_block(it), i = it - j * n;
    dst[j * dpitch + i] = __uint_as_float(w.x);
  }
};
// Consecutive rows of F floats stored transposed: dst[f * dpitch + t] = src[t * F + f] for t < rows
// (float4 units when vec: F % 4 == 0 and src 16-byte aligned).
struct Transposed {
  const float* src;
  float* dst;
  int rows, F, dpitch, u;
  bool vec;
  FastDiv per_row;  // / u
  __device__ __forceinline__ Transposed(const float* src_, float* dst_, int rows_, int F_, int dpitch_, bool vec_)
      : src(src_), dst(dst_), rows(rows_), F(F_), dpitch(dpitch_), u(max(vec_ ? F_ >> 2 : F_, 1)), vec(vec_),
        per_row(u) {}
  __device__ __forceinline__ int items() const { return rows * u; }
  __device__ __forceinline__ uint4 load(int it) const {
    const int t = per_row(it), g = it - t * u;
    uint4 w;
    if (vec) {
      w = *reinterpret_cast<const uint4*>(src + (int64)t * F + 4 * g);
    } else {
      w.x = __float_as_uint(src[(int64)t * F + g]);
      w.y = w.z = w.w = 0u;
    }
    return w;
  }
  __device__ __forceinline__ void store(int it, const uint4& w) const {
    const int t = per_row(it), g = it - t * u;
    if (vec) {
      dst[(4 * g) * dpitch + t] = __uint_as_float(w.x);
      dst[(4 * g + 1) * dpitch + t] = __uint_as_float(w.y);
      dst[(4 * g + 2) * dpitch + t] = __uint_as_float(w.z);
      dst[(4 * g + 3) * dpitch + t] = __uint_as_float(w.w);
    } else {
      dst[g * dpitch + t] = __uint_as_float(w.x);
    }
  }
};

// ---- float16 staging for the tensor-core cluster kernel (raw bits, no conversion) -----------------------

// 8 halves of a row from global memory: one 16-byte load (vec: the row width is a multiple of 8 and the
// tensor 16-byte aligned) or element by element, zero past `width`.
__device__ __forceinline__ uint4 load8_half(const half_bits* p, int left, bool vec) {
  uint4 w;
  if (vec) return *reinterpret_cast<const uint4*>(p);
  unsigned u[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const unsigned lo = 2 * i < left ? p[2 * i] : 0u, hi = 2 * i + 1 < left ? p[2 * i + 1] : 0u;
    u[i] = lo | (hi << 16);
  }
  w.x = u[0];
  w.y = u[1];
  w.z = u[2];
  w.w = u[3];
  return w;
}

// Rows of a [*, width] float16 tensor (token t's at src + t * stride) into shared memory as float16: row i <
// nreal is token tok[i]; rows nreal .. rows - 1, tokens >= n_real (padding) and columns [width, 16 ceil(width /
// 16)) are zero. A unit is 8 halves (16 bytes) of a row. With vec (width and stride multiples of 8, src 16-byte
// aligned) each unit is a cp.async:
// each thread issues all of its copies with no register round trip, complete after cp_async_wait_all.
// Without, element by element through registers (load8_half).
__device__ __forceinline__ void stage_half_rows(const half_bits* src, const int* tok, int nreal, int rows,
                                                int width, int n_real, bool vec, half_bits* dst, int pitch,
                                                int stride) {
  const int u = ((width + 15) >> 4) * 2;
  const FastDiv per_row(u);
  for (int it = threadIdx.x; it < rows * u; it += blockDim.x) {
    const int i = per_row(it), col = 8 * (it - i * u);
    const int t = i < nreal && col < width ? tok[i] : n_real;
    const bool valid = t < n_real;
    const half_bits* from = valid ? src + (int64)t * stride + col : src;
    half_bits* to = dst + i * pitch + col;
    if (vec) {
      cp_async16(to, from, valid);
    } else {
      uint4 w;
      w.x = w.y = w.z = w.w = 0u;
      if (valid) w = load8_half(from, width - col, false);
      *reinterpret_cast<uint4*>(to) = w;
    }
  }
}

// The values of G clusters transposed, float16: dst[ch * pitch + g * ck + j] = v[tok[g c + j]][ch] for
// clusters g < G, keys j < c and channels ch < 8 ceil(Dv / 8); zero for keys j in [c, ck), tokens >= n_real
// and channels >= Dv. A unit is 8 channels of one key (one 16-byte load with vec), stored as 8 halves;
// consecutive units are consecutive keys, so the 2-byte stores of a warp fill consecutive halves of a row.
struct ValuesT {
  const half_bits* src;
  const int* tok;
  half_bits* dst;
  int G, c, ck, width, stride, pitch, n_real, blocks;  // blocks: ceil(width / 8) channel blocks
  bool vec;
  FastDiv per_block, per_cluster;  // / (G ck), / ck
  __device__ __forceinline__ ValuesT(const half_bits* src_, const int* tok_, int G_, int c_, int ck_, int width_,
                                     int n_real_, bool vec_, half_bits* dst_, int pitch_, int stride_)
      : src(src_), tok(tok_), dst(dst_), G(G_), c(c_), ck(ck_), width(width_), stride(stride_), pitch(pitch_),
        n_real(n_real_), blocks((width_ + 7) >> 3), vec(vec_), per_block(max(G_ * ck_, 1)), per_cluster(ck_) {}
  __device__ __forceinline__ int items() const { return blocks * G * ck; }
  __device__ __forceinline__ uint4 load(int it) const {
    const int b = per_block(it), rem = it - b * G * ck, g = per_cluster(rem), j = rem - g * ck;
    uint4 w;
    w.x = w.y = w.z = w.w = 0u;
    if (j < c) {
      const int t = tok[g * c + j];
      if (t < n_real) w = load8_half(src + (int64)t * stride + 8 * b, width - 8 * b, vec);
    }
    return w;
  }
  __device__ __forceinline__ void store(int it, const uint4& w) const {
    const int b = per_block(it), rem = it - b * G * ck, g = per_cluster(rem), j = rem - g * ck;
    half_bits* o = dst + (8 * b) * pitch + g * ck + j;
    const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o[(2 * i) * pitch] = static_cast<half_bits>(u[i] & 0xffffu);
      o[(2 * i + 1) * pitch] = static_cast<half_bits>(u[i] >> 16);
    }
  }
};

// D[r * ds + o] = sum_e X[r * xs + e] W[o * ws + e] for r < nrows, o < nout: one sequential fmaf chain
// over e = 0 .. e4 - 1 per output (the zero padding up to e4 leaves a chain unchanged). A warp computes a
// unit of 8 TR rows x 4 TO outputs; lane (rq, oq) = (lane / 4, lane % 4) takes rows rq + 8 k and outputs
// oq + 4 m, so every float4 read of a warp touches 8 consecutive rows of X (an odd-unit pitch: distinct
// banks) or 4 consecutive rows of W, each shared by several lanes.
template <int TR, int TO>
__device__ __forceinline__ void tile_dots(const float* __restrict__ X, int xs, int nrows,
                                          const float* __restrict__ W, int ws, int nout, int e4,
                                          float* __restrict__ D, int ds) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int rq = lane >> 2, oq = lane & 3;
  const int nrb = (nrows + 8 * TR - 1) / (8 * TR), nob = (nout + 4 * TO - 1) / (4 * TO);
  for (int u = warp; u < nrb * nob; u += warps) {
    const int rb = u / nob, ob = u - rb * nob;
    int xr[TR], wr[TO];
#pragma unroll
    for (int k = 0; k < TR; ++k) xr[k] = min(rb * 8 * TR + rq + 8 * k, nrows - 1) * xs;
#pragma unroll
    for (int m = 0; m < TO; ++m) wr[m] = min(ob * 4 * TO + oq + 4 * m, nout - 1) * ws;
    float acc[TR][TO];
#pragma unroll
    for (int k = 0; k < TR; ++k)
#pragma unroll
      for (int m = 0; m < TO; ++m) acc[k][m] = 0.0f;
    tile_fma<TR, TO>(X, xr, W, wr, e4, acc);
#pragma unroll
    for (int k = 0; k < TR; ++k) {
      const int r = rb * 8 * TR + rq + 8 * k;
#pragma unroll
      for (int m = 0; m < TO; ++m) {
        const int o = ob * 4 * TO + oq + 4 * m;
        if (r < nrows && o < nout) D[r * ds + o] = acc[k][m];
      }
    }
  }
}

// |x|^2 of a shared row (zero padded to e4): four interleaved fmaf chains, added pairwise. The same
// function for every token and kernel, so equal tokens get equal norms everywhere.
__device__ __forceinline__ float row_sq(const float* __restrict__ x, int e4) {
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  for (int e = 0; e < e4; e += 4) {
    const float4 v = ld4(x + e);
    a0 = fmaf(v.x, v.x, a0);
    a1 = fmaf(v.y, v.y, a1);
    a2 = fmaf(v.z, v.z, a2);
    a3 = fmaf(v.w, v.w, a3);
  }
  return (a0 + a1) + (a2 + a3);
}

// w[o * pitch + e] = scale * proj[o * E + e] (rows o < m) then hv[o - m][e] (rows m .. m + R - 1, the hash
// vectors without their two XBOX+ coordinates); zero for e in [E, r4(E)).
__device__ __forceinline__ void load_weights(float* __restrict__ w, int pitch, const float* __restrict__ proj,
                                             int m, float scale, const float* __restrict__ hv, int R, int E) {
  const int e4 = r4(E), rows = m + R;
  for (int i = threadIdx.x; i < rows * e4; i += blockDim.x) {
    const int o = i / e4, e = i - o * e4;
    float x = 0.0f;
    if (e < E) x = o < m ? proj[o * E + e] * scale : hv[(o - m) * (E + 2) + e];
    w[o * pitch + e] = x;
  }
}

template <typename T>
__device__ void features(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const float* __restrict__ hv, const float* __restrict__ proj,
                         float* __restrict__ kstat, float* __restrict__ qstat, float* __restrict__ qn,
                         float* __restrict__ kn, float* __restrict__ hq, float* __restrict__ hk,
                         float* __restrict__ qf, float* __restrict__ kf, float* __restrict__ pls,
                         float* __restrict__ kv_part, int N, int P, int E, int Dv, int R, int m, float root,
                         float rr, float log_norm, int chunk, int n_tok, int nchunk, int mode, int vecq,
                         int vecv, SB_QKV_LAYOUT) {
  VITRT_DYNAMIC_SHARED(float, sm);
  __shared__ float scratch[32];
  const int ch = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x, nth = blockDim.x;
  const bool sparse = mode != kPerformer, low_rank = mode != kLsh;
  const int mm = low_rank ? m : 0, rh = sparse ? R : 0, nout = mm + rh, F = 2 * mm;
  const int e4 = r4(E), xs = pitch4(E), ds = nout | 1, vp = pitch4(Dv + 1), kfp = r4(F);
  const int t0 = ch * chunk, n = min(chunk, n_tok - t0);
  const int u_floats = max(2 * chunk * xs, low_rank ? chunk * vp + chunk * kfp : 0);
  float* w = sm;                        // [nout][xs] projection * sqrt(scale), then the hash vectors
  float* x = w + nout * xs;             // [2n][xs] query rows 0..n-1, key rows n..2n-1
  float* vt = x;                        // later [n][vp] value rows and a column of ones (x is dead by then)
  float* kp = x + chunk * vp;           // later [n][kfp] k' of the chunk
  float* d = x + u_floats;              // [2n][ds] dot products
  float* sq = d + r4(2 * chunk * ds);   // [2n] squared norms
  float* qmx = sq + r4(2 * chunk);      // [n] max_j |q . w_j|

  const T* qb = q + row_base(bh, H, qsb, qsh);
  const T* kb = k + row_base(bh, H, qsb, qsh);
  const T* vb = v + row_base(bh, H, vsb, vsh);
  // The value rows go where the query and key rows are (vt aliases x), so they are gathered only after the
  // products below; their lines are prefetched into L2 now, in flight with the q and k rows' loads, so that
  // gather waits on L2 rather than DRAM. (Held in registers instead, they spilled for sm_90.) Each real
  // token's row: Dv values from vb + t vsn, in 128-byte lines.
  if (low_rank) {
    const int lines = (Dv * (int)sizeof(T) + 127) >> 7, nreal = min(n, N - t0);
    for (int i = tid; i < nreal * lines; i += nth) {
      const int j = i / lines;
      prefetch_l2(reinterpret_cast<const char*>(vb + (int64)(t0 + j) * vsn) + 128 * (i - j * lines));
    }
  }
  load_weights(w, xs, proj, mm, root, hv, rh, E);
  gather<4>(rows_of(qb, nullptr, t0, n, E, N, vecq != 0, x, xs, qsn),
            rows_of(kb, nullptr, t0, n, E, N, vecq != 0, x + n * xs, xs, qsn));
  __syncthreads();
  tile_dots<2, 4>(x, xs, 2 * n, w, xs, nout, e4, d, ds);
  for (int i = tid; i < 2 * n; i += nth) sq[i] = row_sq(x + i * xs, e4);
  __syncthreads();
  if (low_rank) gather<4>(rows_of(vb, nullptr, t0, n, Dv, N, vecv != 0, vt, vp, vsn));

  if (sparse) {
    // Hash dot products of the E token coordinates (the sort adds the XBOX+ coordinate's term), +inf on
    // padding; the squared norms; this chunk's max |q|^2 (MQ; MK below).
    for (int i = tid; i < rh * n; i += nth) {
      const int r = i / n, j = i - r * n, t = t0 + j;
      const int64 o = ((int64)bh * R + r) * P + t;
      hq[o] = t < N ? d[j * ds + mm + r] : pos_inf();
      hk[o] = t < N ? d[(n + j) * ds + mm + r] : pos_inf();
    }
    float mq = neg_inf();
    for (int j = tid; j < n; j += nth) {
      qn[(int64)bh * P + t0 + j] = sq[j];
      kn[(int64)bh * P + t0 + j] = sq[n + j];
      mq = fmaxf(mq, sq[j]);
    }
    mq = block_max(mq, scratch);
    if (tid == 0) qstat[(int64)bh * nchunk + ch] = mq;
  }
  // The chunk's maxima of |k|^2 (MK for the sort's XBOX+ term) and of the key features' log values
  // (FAVOR+: their max over the (b, h) is log_k, which vitrt_sb_kv_reduce takes from these), over all of
  // its rows, padding (zero rows) included.
  float mk = neg_inf(), mf = neg_inf();
  for (int j = tid; j < n; j += nth) {
    const float ksq = sq[n + j], kdiag = ksq / 2.0f * rr;
    mk = fmaxf(mk, ksq);
    for (int o = 0; o < mm; ++o) {
      const float b = d[(n + j) * ds + o];
      mf = fmaxf(mf, fmaxf((b - kdiag) - log_norm, (-b - kdiag) - log_norm));
    }
  }
  mk = block_max(mk, scratch);
  mf = block_max(mf, scratch);
  if (tid == 0) {
    kstat[((int64)bh * nchunk + ch) * 2] = mk;
    kstat[((int64)bh * nchunk + ch) * 2 + 1] = mf;
  }
  if (!low_rank) return;

  // FAVOR+ with both signs: q' = exp([wq, -wq] - max), log_q = max - t|q|^2/2 - log(2m)/2;
  // k' = exp(lk - log_k) with lk = [wk, -wk] - t|k|^2/2 - log(2m)/2 (0 on padding); pls = log_q + log_k.
  // log_k needs every chunk, so this kernel writes lk (-inf on padding) and pls without log_k, and
  // vitrt_sb_kv_reduce finishes both. The chunk's k'^T [v, 1] takes k' relative to the chunk's maximum,
  // exp(lk - mf) <= 1, and kv_reduce scales it by exp(mf - log_k).
  for (int j = tid; j < n; j += nth) {
    float mx = neg_inf();
    for (int o = 0; o < mm; ++o) {
      const float a = d[j * ds + o];
      mx = fmaxf(mx, fmaxf(a, -a));
    }
    qmx[j] = mx;
    pls[(int64)bh * P + t0 + j] = (mx - sq[j] / 2.0f * rr) - log_norm;
  }
  __syncthreads();
  float* qrow = qf + ((int64)bh * P + t0) * F;  // the chunk's rows are contiguous: coalesced writes
  float* krow = kf + ((int64)bh * P + t0) * F;
  const FastDiv per_token(F);
  for (int i = tid; i < n * F; i += nth) {
    const int j = per_token(i), f = i - j * F, o = f < mm ? f : f - mm;
    const float a = d[j * ds + o];
    qrow[i] = expf((f < mm ? a : -a) - qmx[j]);
    const float b = d[(n + j) * ds + o], kdiag = sq[n + j] / 2.0f * rr;
    const float lk = f < mm ? ((b - kdiag) - log_norm) : ((-b - kdiag) - log_norm);
    const bool real = t0 + j < N;
    krow[i] = real ? lk : neg_inf();
    kp[j * kfp + f] = real ? expf(lk - mf) : 0.0f;
  }
  for (int i = tid; i < n * (kfp - F); i += nth) {  // zero padding of k' to whole float4
    const int j = i / (kfp - F);
    kp[j * kfp + F + i - j * (kfp - F)] = 0.0f;
  }
  for (int i = tid; i < n * (vp - Dv); i += nth) {  // column Dv of the values: ones (sum k'), then zeros
    const int j = i / (vp - Dv), dd = Dv + i - j * (vp - Dv);
    vt[j * vp + dd] = dd == Dv ? 1.0f : 0.0f;
  }
  __syncthreads();
  // This chunk's k'^T [v, 1] (column Dv holds sum k'), summed in token order: tiles of 4 features x 4
  // channels (float4 of a k' row and of a value row per token).
  const int L = F * (Dv + 1), nfq = kfp >> 2, ndq = (Dv + 4) >> 2;
  float* out = kv_part + ((int64)bh * nchunk + ch) * L;
  for (int u = tid; u < nfq * ndq; u += nth) {
    const int fq = u / ndq, dq = u - fq * ndq;
    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a) acc[a][0] = acc[a][1] = acc[a][2] = acc[a][3] = 0.0f;
    for (int j = 0; j < n; ++j) {
      const float4 kk = ld4(kp + j * kfp + 4 * fq), vv = ld4(vt + j * vp + 4 * dq);
      const float ka[4] = {kk.x, kk.y, kk.z, kk.w};
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        acc[a][0] = fmaf(ka[a], vv.x, acc[a][0]);
        acc[a][1] = fmaf(ka[a], vv.y, acc[a][1]);
        acc[a][2] = fmaf(ka[a], vv.z, acc[a][2]);
        acc[a][3] = fmaf(ka[a], vv.w, acc[a][3]);
      }
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      if (4 * fq + a >= F) continue;
#pragma unroll
      for (int cc = 0; cc < 4; ++cc)
        if (4 * dq + cc <= Dv) out[(4 * fq + a) * (Dv + 1) + 4 * dq + cc] = acc[a][cc];
    }
  }
}

// ---- sort ------------------------------------------------------------------------------------------------

// The hash of round r at position p of one side: the stored dot product of the token coordinates plus the
// XBOX+ coordinate's term, sqrt(MQ + MK - |x|^2) * hv[r][E + 1] (queries) or [E] (keys); +inf padding kept.
__device__ __forceinline__ float finish_hash(float* __restrict__ h, const float* __restrict__ norms, int p, int N,
                                             float total, float hcol) {
  float x = h[p];
  if (p < N) {
    const float ext = sqrtf(fmaxf(total - norms[p], 0.0f));
    x = fmaf(ext, hcol, x);
    h[p] = x;
  }
  return x;
}

// Exclusive prefix sum of one int per thread, in thread order, over the block (every thread calls it; wsum: 32
// ints of shared memory, reused only after a later barrier). One barrier inside. The earlier warps' totals
// are added by a warp reduction (lane l takes warp l's), not a loop over them: a chain of 5 shuffles
// whatever the warp, where the loop was up to 31 dependent shared loads and adds (integers: the same sums).
__device__ __forceinline__ int block_exclusive_scan(int v, int* wsum) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) wsum[warp] = incl;
  __syncthreads();
  int before = lane < warp ? wsum[lane] : 0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(kFullMask, before, o);
  return incl - v + before;
}

// Stable ascending argsort of P floats (LSD radix sort of order_key, 4 passes of 8-bit digits). Warp w
// holds positions [w * 32 ITEMS, (w + 1) * 32 ITEMS), item i of lane l at w * 32 ITEMS + 32 i + l; a
// digit's rank is (keys of smaller digits) + (same digit in earlier warps) + (same digit earlier in this
// warp: a ballot match per item), so every pass is stable and ties keep index order, as
// reference.stable_argsort does. Positions >= P hold the largest key and stay behind every real one.
template <int ITEMS>
__device__ void radix_argsort(float* __restrict__ h, const float* __restrict__ norms, int* __restrict__ perm,
                              int* __restrict__ inv, int N, int P, float total, float hcol) {
  VITRT_DYNAMIC_SHARED(int, smi);
  __shared__ int wsum[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5, tid = threadIdx.x;
  const int npos = blockDim.x * ITEMS;
  unsigned* ks = reinterpret_cast<unsigned*>(smi);  // [npos] keys in sorted order after a pass
  int* vs = smi + npos;                             // [npos] their token indices
  int* cnt = vs + npos;                             // [256][W] digit counts per warp, then offsets
  const unsigned below = (1u << lane) - 1u;
  unsigned key[ITEMS];
  int val[ITEMS], rank[ITEMS];
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int p = warp * 32 * ITEMS + 32 * it + lane;
    val[it] = p;
    key[it] = p < P ? order_key(finish_hash(h, norms, p, N, total, hcol)) : 0xffffffffu;
  }
  for (int shift = 0; shift < 32; shift += 8) {
    for (int i = tid; i < 256 * W; i += blockDim.x) cnt[i] = 0;
    __syncthreads();
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
      const unsigned dig = (key[it] >> shift) & 255u;
      unsigned same = kFullMask;
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        const unsigned bit = (dig >> b) & 1u;
        const unsigned bal = __ballot_sync(kFullMask, bit != 0u);
        same &= bit ? bal : ~bal;
      }
      int* c = cnt + dig * W + warp;
      const int old = *c;
      rank[it] = old + __popc(same & below);
      __syncwarp();
      if (lane == __ffs(same) - 1) *c = old + __popc(same);
      __syncwarp();
    }
    __syncthreads();
    // Exclusive scan of the counts in (digit, warp) order: thread t owns entries 8t .. 8t + 7.
    int loc[8], s = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      loc[j] = cnt[tid * 8 + j];
      s += loc[j];
    }
    int off = block_exclusive_scan(s, wsum);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      cnt[tid * 8 + j] = off;
      off += loc[j];
    }
    __syncthreads();
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
      const unsigned dig = (key[it] >> shift) & 255u;
      const int pos = cnt[dig * W + warp] + rank[it];
      ks[pos] = key[it];
      vs[pos] = val[it];
    }
    __syncthreads();
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
      const int p = warp * 32 * ITEMS + 32 * it + lane;
      key[it] = ks[p];
      val[it] = vs[p];
    }
  }
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int p = warp * 32 * ITEMS + 32 * it + lane;
    if (p < P) {
      perm[p] = val[it];
      inv[val[it]] = p;
    }
  }
}

// MQ + MK of one (b, h) from the per-chunk maxima of |q|^2 and |k|^2 (features), in st (shared).
__device__ __forceinline__ float xbox_total(const float* __restrict__ qstat, const float* __restrict__ kstat,
                                            int bh, int nchunk, float* st) {
  if (threadIdx.x < 32) {
    float a = neg_inf(), b = neg_inf();
    for (int i = threadIdx.x; i < nchunk; i += 32) {
      a = fmaxf(a, qstat[(int64)bh * nchunk + i]);
      b = fmaxf(b, kstat[((int64)bh * nchunk + i) * 2]);
    }
    a = warp_max(a);
    b = warp_max(b);
    if (threadIdx.x == 0) *st = a + b;
  }
  __syncthreads();
  return *st;
}

// The row one sort block works on (block x: side * R + r, side 0 = queries, 1 = keys; block y: b * H + h).
struct SortRow {
  float* h;             // [P] hashes (the stored dot products, completed in place)
  const float* norms;   // [P] squared norms of the side's tokens
  int* perm;            // [P] sorted slot -> token
  int* inv;             // [P] token -> sorted slot
  float total, hcol;    // MQ + MK, and the hash vector's XBOX+ coordinate of this side
};

__device__ __forceinline__ SortRow sort_row(const float* __restrict__ qn, const float* __restrict__ kn,
                                            const float* __restrict__ qstat, const float* __restrict__ kstat,
                                            const float* __restrict__ hv, float* hq, float* hk, int* q_perm,
                                            int* q_inv, int* k_perm, int* k_inv, int P, int E, int R, int nchunk,
                                            float* st) {
  const int side = blockIdx.x / R, r = blockIdx.x % R, bh = blockIdx.y;
  const int64 o = ((int64)bh * R + r) * P;
  SortRow j;
  j.total = xbox_total(qstat, kstat, bh, nchunk, st);
  j.hcol = hv[r * (E + 2) + (side ? E : E + 1)];
  j.h = (side ? hk : hq) + o;
  j.norms = (side ? kn : qn) + (int64)bh * P;
  j.perm = (side ? k_perm : q_perm) + o;
  j.inv = (side ? k_inv : q_inv) + o;
  return j;
}

// ---- cluster attention -----------------------------------------------------------------------------------

// A score tile's products: s[a][b] = q_ir[a] . k_jr[b] over e4 columns and, when sb, l[a][b] = q'_ir[a] . k'_jr[b]
// over f4 (shared rows of pitch es, fs), each a sequential fmaf chain.
template <int TT>
__device__ __forceinline__ void tile_products(const float* __restrict__ qs, const float* __restrict__ ks,
                                              const float* __restrict__ qfs, const float* __restrict__ kfs,
                                              const int (&ir)[TT], const int (&jr)[TT], int es, int fs, int e4,
                                              int f4, bool sb, float (&s)[TT][TT], float (&l)[TT][TT]) {
  int ie[TT], je[TT], i_f[TT], j_f[TT];
#pragma unroll
  for (int a = 0; a < TT; ++a) {
    ie[a] = ir[a] * es;
    je[a] = jr[a] * es;
    i_f[a] = ir[a] * fs;
    j_f[a] = jr[a] * fs;
  }
#pragma unroll
  for (int a = 0; a < TT; ++a)
#pragma unroll
    for (int b = 0; b < TT; ++b) s[a][b] = l[a][b] = 0.0f;
  tile_fma<TT, TT>(qs, ie, ks, je, e4, s);
  if (sb) tile_fma<TT, TT>(qfs, i_f, kfs, j_f, f4, l);
}

// A pair's logit sv and low-rank estimate lv once it shares a cluster in count >= 1 rounds (buckets qbk[r][i],
// kbk[r][j] with pitches qp, kp): sv - log(count) and lv / count, so the pair contributes once overall.
// log2, log3: logf(2), logf(3) computed by the kernel (the same logf as for larger counts).
__device__ __forceinline__ void discount_pair(const int* __restrict__ qbk, int qp, int i, const int* __restrict__ kbk,
                                              int kp, int j, int R, float log2, float log3, float& sv, float& lv) {
  int k = 0;
  for (int r2 = 0; r2 < R; ++r2) k += qbk[r2 * qp + i] == kbk[r2 * kp + j] ? 1 : 0;
  if (k > 1) {  // k = 1 (this round's cluster only) leaves both terms unchanged
    sv = sv - (k == 2 ? log2 : k == 3 ? log3 : logf((float)k));
    lv = lv / (float)k;
  }
}

constexpr int kTile = 3;      // score tile: 3 queries x 3 keys per thread
constexpr int kPvRows = 3;    // output tile: 3 queries x 8 channels per thread

template <typename T>
__device__ void cluster_attention(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                  const float* __restrict__ qf, const float* __restrict__ kf,
                                  const float* __restrict__ pls, const int* __restrict__ q_perm,
                                  const int* __restrict__ q_inv, const int* __restrict__ k_perm,
                                  const int* __restrict__ k_inv, float* __restrict__ rnum,
                                  float* __restrict__ raux, int N, int P, int E, int Dv, int R, int F, int c,
                                  int G, float scale, int mode, int vecq, int vecv, SB_QKV_LAYOUT) {
  VITRT_DYNAMIC_SHARED(float, sm);
  const int r = blockIdx.y, bh = blockIdx.z, tid = threadIdx.x, nth = blockDim.x;
  const int nclus = P / c, g0 = blockIdx.x * G, Gb = min(G, nclus - g0), QB = Gb * c, QM = G * c;
  const int s0 = g0 * c;
  const bool sb = mode == kScatterbrain, multi = sb && R > 1;
  const int e4 = r4(E), f4 = r4(F), es = pitch4(E), fs = pitch4(F), vp = pitch4(Dv), cs = c | 1;
  const int nt = (c + kTile - 1) / kTile;
  float* qs = sm;                                          // [QB][es] queries of the clusters
  float* ks = qs + QM * es;                                // [QB][es] keys
  float* vs = ks + QM * es;                                // [QB][vp] values
  float* qfs = vs + QM * vp;                               // [QB][fs] q'   (SCATTERBRAIN)
  float* kfs = qfs + (sb ? QM * fs : 0);                   // [QB][fs] k'   (SCATTERBRAIN)
  float* sc = kfs + (sb ? QM * fs : 0);                    // [QB][cs] logits, then weights
  float* lr = sc + r4(QM * cs);                            // [QB][cs] low-rank estimate (SCATTERBRAIN)
  float* pmax = lr + (sb ? r4(QM * cs) : 0);               // [QB][nt] row max of each score tile
  float* psum = pmax + r4(QM * nt);                        // [QB][nt] row sum of each score tile
  float* rowm = psum + r4(QM * nt);                        // [QB] M (SCATTERBRAIN) or logsumexp (LSH)
  float* qpl = rowm + r4(QM);                              // [QB] pls of the query (SCATTERBRAIN)
  int* qidx = reinterpret_cast<int*>(qpl + (sb ? r4(QM) : 0));  // [QB] token of each query slot
  int* kidx = qidx + r4(QM);                               // [QB] token of each key slot
  int* qbk = kidx + r4(QM);                                // [R][QB] query bucket in every round
  int* kbk = qbk + (multi ? r4(R * QM) : 0);               // [R][QB] key bucket in every round
  const int64 perm0 = ((int64)bh * R + r) * P + s0;

  for (int t = tid; t < QB; t += nth) {
    qidx[t] = q_perm[perm0 + t];
    kidx[t] = k_perm[perm0 + t];
  }
  __syncthreads();
  // Everything else the block reads, in one batch of loads: rows of q, k, v (the tokens of the slots),
  // q', k', the queries' pls and every round's buckets of the slots' tokens.
  const int fq = sb ? QB : 0, fb = multi ? QB : 0;
  const bool vecf = (F & 3) == 0;  // workspace rows of F floats: 16-byte aligned when F % 4 == 0
  const int64 qk0 = row_base(bh, H, qsb, qsh), v0 = row_base(bh, H, vsb, vsh);
  gather<16>(rows_of(q + qk0, qidx, 0, QB, E, N, vecq != 0, qs, es, qsn),
             rows_of(k + qk0, kidx, 0, QB, E, N, vecq != 0, ks, es, qsn),
             rows_of(v + v0, kidx, 0, QB, Dv, N, vecv != 0, vs, vp, vsn),
             rows_of(qf + (int64)bh * P * F, qidx, 0, fq, F, P, vecf, qfs, fs),
             rows_of(kf + (int64)bh * P * F, kidx, 0, fq, F, P, vecf, kfs, fs),
             SlotScalar{pls + (int64)bh * P, qidx, qpl, fq},
             SlotBucket(q_inv + (int64)bh * R * P, qidx, qbk, fb, R, P, QM, c),
             SlotBucket(k_inv + (int64)bh * R * P, kidx, kbk, fb, R, P, QM, c));
  __syncthreads();

  // Logits t q.k (padded keys masked), minus log(count), and the low-rank estimate q'.k' / count
  // (SCATTERBRAIN): count = rounds in which the pair shares a cluster, so a pair contributes once overall.
  // Tile (g, ti, tj): queries ti*3 .. ti*3+2 x keys tj*3 .. tj*3+2 of cluster g; rows past c are clamped
  // for reading and dropped. Each tile also records the max of its part of every query's row.
  const int tiles = Gb * nt * nt;
  const float log2f_ = logf(2.0f), log3f_ = logf(3.0f);  // log(count), the same logf as for larger counts
  for (int u = tid; u < tiles; u += nth) {
    const int g = u / (nt * nt), rem = u - g * nt * nt, ti = rem / nt, tj = rem - ti * nt, base = g * c;
    int ir[kTile], jr[kTile];
#pragma unroll
    for (int a = 0; a < kTile; ++a) {
      ir[a] = base + min(ti * kTile + a, c - 1);
      jr[a] = base + min(tj * kTile + a, c - 1);
    }
    float s[kTile][kTile], l[kTile][kTile];
    tile_products<kTile>(qs, ks, qfs, kfs, ir, jr, es, fs, e4, f4, sb, s, l);
    bool padded[kTile];
#pragma unroll
    for (int b = 0; b < kTile; ++b) padded[b] = kidx[jr[b]] >= N;
#pragma unroll
    for (int a = 0; a < kTile; ++a) {
      if (ti * kTile + a >= c) continue;
      float mx = neg_inf();
#pragma unroll
      for (int b = 0; b < kTile; ++b) {
        const int j = tj * kTile + b;
        if (j >= c) continue;
        float sv = padded[b] ? -kFloatMax : s[a][b] * scale;
        if (sb) {
          float lv = padded[b] ? 0.0f : l[a][b];
          if (multi) discount_pair(qbk, QM, ir[a], kbk, QM, jr[b], R, log2f_, log3f_, sv, lv);
          lr[ir[a] * cs + j] = lv;
        }
        sc[ir[a] * cs + j] = sv;
        mx = fmaxf(mx, sv);
      }
      pmax[ir[a] * nt + tj] = mx;
    }
  }
  __syncthreads();

  // Weights, by segments (query t, tile column tj): SCATTERBRAIN dots = exp(s - M) - lr exp(pls - M) with
  // M = max(max_j s, pls) bounding both terms by 1; LSH exp(s - max) summed for the logsumexp.
  for (int u = tid; u < QB * nt; u += nth) {
    const int t = u / nt, tj = u - t * nt, j1 = min(tj * kTile + kTile, c);
    float mx = neg_inf();
    for (int j = 0; j < nt; ++j) mx = fmaxf(mx, pmax[t * nt + j]);
    float ps = 0.0f;
    if (sb) {
      const float M = fmaxf(mx, qpl[t]), e_pl = expf(qpl[t] - M);
      for (int j = tj * kTile; j < j1; ++j) {
        const float dd = expf(sc[t * cs + j] - M) - lr[t * cs + j] * e_pl;
        sc[t * cs + j] = dd;
        ps += dd;
      }
      if (tj == 0) rowm[t] = M;
    } else {
      for (int j = tj * kTile; j < j1; ++j) ps += expf(sc[t * cs + j] - mx);
    }
    psum[t * nt + tj] = ps;
  }
  __syncthreads();
  if (!sb) {
    // LSH: softmax inside the cluster, logsumexp kept for the round weights.
    for (int u = tid; u < QB * nt; u += nth) {
      const int t = u / nt, tj = u - t * nt, j1 = min(tj * kTile + kTile, c);
      float mx = neg_inf(), se = 0.0f;
      for (int j = 0; j < nt; ++j) {
        mx = fmaxf(mx, pmax[t * nt + j]);
        se += psum[t * nt + j];
      }
      const float lse = logf(se) + mx;
      for (int j = tj * kTile; j < j1; ++j) sc[t * cs + j] = expf(sc[t * cs + j] - lse);
      if (tj == 0) rowm[t] = lse;
    }
    __syncthreads();
  }

  // Per-round output rows: weights x values, tiles of 3 queries x 8 channels (two float4 of a value row);
  // rows in token order.
  const int nrg = (c + kPvRows - 1) / kPvRows, dv4 = (Dv + 3) >> 2, dv8 = (dv4 + 1) >> 1;
  const bool vec_out = (Dv & 3) == 0;
  float* rb = rnum + ((int64)bh * R + r) * P * Dv;
  for (int u = tid; u < Gb * nrg * dv8; u += nth) {
    const int g = u / (nrg * dv8), rem = u - g * nrg * dv8, rg = rem / dv8, d8 = rem - rg * dv8;
    const int base = g * c;
    const bool two = 2 * d8 + 1 < dv4;  // the second quad of channels exists
    int ir[kPvRows];
#pragma unroll
    for (int a = 0; a < kPvRows; ++a) ir[a] = base + min(rg * kPvRows + a, c - 1);
    float acc[kPvRows][8];
#pragma unroll
    for (int a = 0; a < kPvRows; ++a)
#pragma unroll
      for (int cc = 0; cc < 8; ++cc) acc[a][cc] = 0.0f;
    const float* vcol = vs + base * vp + 8 * d8;
#pragma unroll 2
    for (int j = 0; j < c; ++j) {
      const float4 v0 = ld4(vcol + j * vp), v1 = two ? ld4(vcol + j * vp + 4) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      const float vv[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
      for (int a = 0; a < kPvRows; ++a) {
        const float wgt = sc[ir[a] * cs + j];
#pragma unroll
        for (int cc = 0; cc < 8; ++cc) acc[a][cc] = fmaf(wgt, vv[cc], acc[a][cc]);
      }
    }
#pragma unroll
    for (int a = 0; a < kPvRows; ++a) {
      if (rg * kPvRows + a >= c) continue;
      const int tok = qidx[ir[a]];
      if (tok >= N) continue;  // padded queries are dropped
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int ch = 8 * d8 + 4 * h;
        if (h == 1 && !two) continue;
        float* o = rb + (int64)tok * Dv + ch;
        if (vec_out) {
          st4(o, acc[a][4 * h], acc[a][4 * h + 1], acc[a][4 * h + 2], acc[a][4 * h + 3]);
        } else {
#pragma unroll
          for (int cc = 0; cc < 4; ++cc)
            if (ch + cc < Dv) o[cc] = acc[a][4 * h + cc];
        }
      }
    }
  }
  for (int t = tid; t < QB; t += nth) {
    const int tok = qidx[t];
    if (tok >= N) continue;
    float rs = 0.0f;
    if (sb)
      for (int j = 0; j < nt; ++j) rs += psum[t * nt + j];
    float* o = raux + (((int64)bh * R + r) * P + tok) * 2;
    o[0] = rs;
    o[1] = rowm[t];
  }
}

// ---- cluster attention in key tiles (clusters of any size) ----------------------------------------------
//
// The function of cluster_attention where that kernel cannot stage one cluster (its c x c scores and all c
// rows need more than 96 KiB of shared memory: e.g. c >= 58 at E = Dv = 64 with features): a block takes QS
// query rows of one cluster (grid x = clusters x ceil(c / QS) slices) and sweeps the cluster's keys in tiles of
// KT. Each tile: the logits and low-rank estimates as in cluster_attention, then per query row the running
// maximum M (flash attention's rescaling: the row's sum and output rows so far are multiplied by
// exp(M_old - M_new)), the tile's weights exp(s - M) - lr exp(pls - M) (SCATTERBRAIN; M starts at pls, as
// cluster_attention's M = max(max_j s, pls)) or exp(s - M) (LSH), and weights x values added to the output
// rows. LSH divides by the sum at the end and records logsumexp = log(sum) + M. The same function as
// cluster_attention up to rounding: sums run over tiles, and the exponentials of early tiles are rescaled.
// Shared memory does not grow with c (cuda.py: _tiled_bytes, AttentionDims.tiled_rows).
constexpr int kTiledTile = 2;  // score tile: 2 queries x 2 keys per thread

template <typename T>
__device__ void cluster_attention_tiled(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                        const float* __restrict__ qf, const float* __restrict__ kf,
                                        const float* __restrict__ pls, const int* __restrict__ q_perm,
                                        const int* __restrict__ q_inv, const int* __restrict__ k_perm,
                                        const int* __restrict__ k_inv, float* __restrict__ rnum,
                                        float* __restrict__ raux, int N, int P, int E, int Dv, int R, int F, int c,
                                        int QS, int KT, float scale, int mode, int vecq, int vecv,
                                        SB_QKV_LAYOUT) {
  VITRT_DYNAMIC_SHARED(float, sm);
  const int r = blockIdx.y, bh = blockIdx.z, tid = threadIdx.x, nth = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, nwarps = nth >> 5;
  const int slices = (c + QS - 1) / QS, cl = blockIdx.x / slices, q0 = (blockIdx.x - cl * slices) * QS;
  const int QB = min(QS, c - q0);  // query rows of this block
  const bool sb = mode == kScatterbrain, multi = sb && R > 1;
  const int e4 = r4(E), f4 = r4(F), es = pitch4(E), fs = pitch4(F), vp = pitch4(Dv), kp = KT | 1;
  float* qs = sm;                                  // [QS][es] the block's queries
  float* qfs = qs + QS * es;                       // [QS][fs] their q'         (SCATTERBRAIN)
  float* ks = qfs + (sb ? QS * fs : 0);            // [KT][es] keys of the tile
  float* kfs = ks + KT * es;                       // [KT][fs] their k'         (SCATTERBRAIN)
  float* vs = kfs + (sb ? KT * fs : 0);            // [KT][vp] their values
  float* sc = vs + KT * vp;                        // [QS][kp] logits, then weights
  float* lr = sc + r4(QS * kp);                    // [QS][kp] low-rank estimate (SCATTERBRAIN)
  float* acc = lr + (sb ? r4(QS * kp) : 0);        // [QS][vp] output rows so far
  float* rowm = acc + QS * vp;                     // [QS] running maximum M
  float* rsum = rowm + r4(QS);                     // [QS] running sum of the weights
  float* alpha = rsum + r4(QS);                    // [QS] exp(M_old - M_new) of the current tile
  float* qpl = alpha + r4(QS);                     // [QS] pls of the query     (SCATTERBRAIN)
  int* qidx = reinterpret_cast<int*>(qpl + (sb ? r4(QS) : 0));  // [QS] token of each query row
  int* kidx = qidx + r4(QS);                                    // [KT] token of each key of the tile
  int* qbk = kidx + r4(KT);                                     // [R][QS] query bucket in every round
  int* kbk = qbk + (multi ? r4(R * QS) : 0);                    // [R][KT] key bucket in every round
  const int64 perm0 = ((int64)bh * R + r) * P + (int64)cl * c;  // the cluster's first slot

  for (int t = tid; t < QB; t += nth) qidx[t] = q_perm[perm0 + q0 + t];
  __syncthreads();
  const int64 qk0 = row_base(bh, H, qsb, qsh), v0 = row_base(bh, H, vsb, vsh);
  gather<4>(rows_of(q + qk0, qidx, 0, QB, E, N, vecq != 0, qs, es, qsn),
             rows_of(qf + (int64)bh * P * F, qidx, 0, sb ? QB : 0, F, P, (F & 3) == 0, qfs, fs),
             SlotScalar{pls + (int64)bh * P, qidx, qpl, sb ? QB : 0},
             SlotBucket(q_inv + (int64)bh * R * P, qidx, qbk, multi ? QB : 0, R, P, QS, c));
  for (int t = tid; t < QB * vp; t += nth) acc[t] = 0.0f;
  __syncthreads();
  for (int t = tid; t < QB; t += nth) {
    rowm[t] = sb ? qpl[t] : neg_inf();  // LSH: the first tile's maximum takes over (exp(-inf) = 0)
    rsum[t] = 0.0f;
  }

  const int nq = (QB + kTiledTile - 1) / kTiledTile, dv4 = (Dv + 3) >> 2;
  const float log2f_ = logf(2.0f), log3f_ = logf(3.0f);
  for (int k0 = 0; k0 < c; k0 += KT) {
    const int KB = min(KT, c - k0), nk = (KB + kTiledTile - 1) / kTiledTile;
    for (int j = tid; j < KB; j += nth) kidx[j] = k_perm[perm0 + k0 + j];
    __syncthreads();  // also: the previous tile's rows, weights and alpha are no longer read
    gather<4>(rows_of(k + qk0, kidx, 0, KB, E, N, vecq != 0, ks, es, qsn),
               rows_of(kf + (int64)bh * P * F, kidx, 0, sb ? KB : 0, F, P, (F & 3) == 0, kfs, fs),
               rows_of(v + v0, kidx, 0, KB, Dv, N, vecv != 0, vs, vp, vsn),
               SlotBucket(k_inv + (int64)bh * R * P, kidx, kbk, multi ? KB : 0, R, P, KT, c));
    __syncthreads();

    // Logits t q.k (padded keys -FLT_MAX) minus log(count), and q'.k' / count, as in cluster_attention.
    for (int u = tid; u < nq * nk; u += nth) {
      const int ti = u / nk, tj = u - ti * nk;
      int ir[kTiledTile], jr[kTiledTile];
#pragma unroll
      for (int a = 0; a < kTiledTile; ++a) {
        ir[a] = min(ti * kTiledTile + a, QB - 1);  // rows past the block's are clamped and dropped
        jr[a] = min(tj * kTiledTile + a, KB - 1);
      }
      float s[kTiledTile][kTiledTile], l[kTiledTile][kTiledTile];
      tile_products<kTiledTile>(qs, ks, qfs, kfs, ir, jr, es, fs, e4, f4, sb, s, l);
#pragma unroll
      for (int a = 0; a < kTiledTile; ++a) {
        if (ti * kTiledTile + a >= QB) continue;
#pragma unroll
        for (int b = 0; b < kTiledTile; ++b) {
          const int j = tj * kTiledTile + b;
          if (j >= KB) continue;
          const bool padded = kidx[j] >= N;
          float sv = padded ? -kFloatMax : s[a][b] * scale;
          if (sb) {
            float lv = padded ? 0.0f : l[a][b];
            if (multi) discount_pair(qbk, QS, ir[a], kbk, KT, j, R, log2f_, log3f_, sv, lv);
            lr[ir[a] * kp + j] = lv;
          }
          sc[ir[a] * kp + j] = sv;
        }
      }
    }
    __syncthreads();

    // Per query row (a warp each, lanes over the keys): the new maximum, the tile's weights and sum.
    for (int t = warp; t < QB; t += nwarps) {
      float mx = neg_inf();
      for (int j = lane; j < KB; j += 32) mx = fmaxf(mx, sc[t * kp + j]);
      const float m_old = rowm[t], m_new = fmaxf(m_old, warp_max(mx));
      const float e_pl = sb ? expf(qpl[t] - m_new) : 0.0f;
      float ps = 0.0f;
      for (int j = lane; j < KB; j += 32) {
        const float w = sb ? expf(sc[t * kp + j] - m_new) - lr[t * kp + j] * e_pl : expf(sc[t * kp + j] - m_new);
        sc[t * kp + j] = w;
        ps += w;
      }
      ps = warp_sum(ps);
      __syncwarp();  // every lane has read rowm[t] and rsum[t]
      if (lane == 0) {
        const float a = expf(m_old - m_new);  // 0 for LSH's first tile (m_old = -inf)
        alpha[t] = a;
        rsum[t] = rsum[t] * a + ps;
        rowm[t] = m_new;
      }
    }
    __syncthreads();

    // Output rows: acc = acc alpha + weights x values, 4 channels of one query row per unit.
    for (int u = tid; u < QB * dv4; u += nth) {
      const int t = u / dv4, ch = 4 * (u - t * dv4);
      const float a = alpha[t];
      float4 o = ld4(acc + t * vp + ch);
      o.x *= a;
      o.y *= a;
      o.z *= a;
      o.w *= a;
      for (int j = 0; j < KB; ++j) {
        const float w = sc[t * kp + j];
        const float4 vv = ld4(vs + j * vp + ch);
        o.x = fmaf(w, vv.x, o.x);
        o.y = fmaf(w, vv.y, o.y);
        o.z = fmaf(w, vv.z, o.z);
        o.w = fmaf(w, vv.w, o.w);
      }
      st4(acc + t * vp + ch, o.x, o.y, o.z, o.w);
    }
  }
  __syncthreads();

  // Per-round rows in token order (padded queries dropped); LSH normalises by the sum.
  float* rb = rnum + ((int64)bh * R + r) * P * Dv;
  for (int u = tid; u < QB * Dv; u += nth) {
    const int t = u / Dv, ch = u - t * Dv, tok = qidx[t];
    if (tok >= N) continue;
    const float o = acc[t * vp + ch];
    rb[(int64)tok * Dv + ch] = sb ? o : o / rsum[t];
  }
  for (int t = tid; t < QB; t += nth) {
    const int tok = qidx[t];
    if (tok >= N) continue;
    float* o = raux + (((int64)bh * R + r) * P + tok) * 2;
    o[0] = sb ? rsum[t] : 0.0f;
    o[1] = sb ? rowm[t] : logf(rsum[t]) + rowm[t];
  }
}

// ---- cluster attention on tensor cores (float16 inputs) ---------------------------------------------------
//
// The same function as cluster_attention for float16 q, k, v and clusters of c <= 8 NTC keys (NTC = ceil(c / 8),
// a compile-time count: no per-tile tests), its products on mma_16816. A warp takes 16 query rows of one
// cluster (m-tile mt of KS = ceil(NTC / 2)) against all of the cluster's keys; a block has KS warps per cluster
// and G clusters. Per warp:
//   1. logits q.k: A = the 16 query rows, B = the key rows (ldmatrix; q and k staged in shared memory as
//      float16, E zero-padded to a multiple of 16), float32 accumulators s[n] per 8-key tile n;
//   2. SCATTERBRAIN's low-rank estimate q'.k' from the float32 features, loaded straight from the workspace
//      and split into float16 hi + lo parts: hi hi + hi lo + lo hi (the products are exact; lo lo, below
//      2^-22 of the sum, is dropped);
//   3. masks, pair counts, row maxima and sums on the accumulators in registers (a row's keys lie in the 4
//      lanes of a quad: two shuffles);
//   4. weights x values: the weights, again split into hi + lo, are the A fragments as they stand in the
//      accumulators (the m16n8 layout of two 8-key tiles is the A layout of one 16-key step); B = the values,
//      staged transposed (channel rows, keys contiguous) so that ldmatrix reads them as it reads keys.
// Rows of an m-tile past c read the next cluster's queries (or the 16 zero rows after the last cluster) and
// are dropped; keys past c are masked to weight 0 (and their value columns are zero).
// Accuracy: on the emulator, in the cases of tests/_support/kernel_checks.py check_cluster_tensor_cores and of
// benchmarks/results/workstation-2026-11-27-cluster-mma/, this kernel and cluster_attention come equally close
// to the float64 reference: within 3.9e-6 of each row's largest value beyond its rounding to float16.
constexpr int kMmaWarpsMax = 8;  // warps per block (cuda.py _MMA_WARPS)
constexpr int kPvChannels = 32;  // output channels per pass of weights x values (16 accumulator registers)

// x0, x1 as float16 hi + lo parts, each pair packed low column first: x = hi + lo within 2^-22 |x|, or within
// 2^-25 where lo falls in float16's subnormal range (below 2^-14).
__device__ __forceinline__ void split_pair(float x0, float x1, unsigned& hi, unsigned& lo) {
  const half_bits h0 = from_float<half_bits>(x0), h1 = from_float<half_bits>(x1);
  const half_bits l0 = from_float<half_bits>(x0 - to_float(h0)), l1 = from_float<half_bits>(x1 - to_float(h1));
  hi = (unsigned)h0 | ((unsigned)h1 << 16);
  lo = (unsigned)l0 | ((unsigned)l1 << 16);
}

// q' and k' are at most 1 (spec) and most k' far below, so each is split after a scaling by 2^15 (exact; at
// most 32768 < 65504): float16's subnormal range then starts at 2^-29 of a feature instead of 2^-14. A product
// carries 2^30, taken out exactly after the sum. Without it and the weights' scaling (below) the output error
// was up to 5x the CUDA-core kernel's (benchmarks/results/workstation-2026-11-27-cluster-mma/).
constexpr float kFeatureScale = 32768.0f, kFeatureUnscale = 1.0f / (32768.0f * 32768.0f);

// The scaled hi and lo parts of row[col], row[col + 1] (0 where row is null or col >= F; F is even, so col + 1
// < F with col).
__device__ __forceinline__ void split_features(const float* row, int col, int F, unsigned& hi, unsigned& lo) {
  float2 x = make_float2(0.0f, 0.0f);
  if (row != nullptr && col < F) x = *reinterpret_cast<const float2*>(row + col);
  split_pair(x.x * kFeatureScale, x.y * kFeatureScale, hi, lo);
}

// A pair that shares a cluster in cnt > 1 rounds counts once overall: (logit - log(cnt), low-rank term / cnt),
// as in cluster_attention. Rare, so out of line: inlined into each of a lane's unrolled elements, the logf and
// the division took about 800 of the kernel's instructions.
__device__ VITRT_NOINLINE float2 count_once(float sv, float lv, int cnt) {
  return make_float2(sv - (cnt == 2 ? logf(2.0f) : cnt == 3 ? logf(3.0f) : logf((float)cnt)), lv / (float)cnt);
}

template <int NTC>
__device__ void cluster_attention_mma(const half_bits* __restrict__ q, const half_bits* __restrict__ k,
                                      const half_bits* __restrict__ v, const float* __restrict__ qf,
                                      const float* __restrict__ kf, const float* __restrict__ pls,
                                      const int* __restrict__ q_perm, const int* __restrict__ q_inv,
                                      const int* __restrict__ k_perm, const int* __restrict__ k_inv,
                                      float* __restrict__ rnum, float* __restrict__ raux, int N, int P, int E,
                                      int Dv, int R, int F, int c, int G, float scale, int mode, int vecq,
                                      int vecv, SB_QKV_LAYOUT) {
  constexpr int KS = (NTC + 1) / 2, NT = 2 * KS;  // 16-key steps; 8-key tiles, the last one zero when NTC is odd
  VITRT_DYNAMIC_SHARED(half_bits, smh);
  const int r = blockIdx.y, bh = blockIdx.z, tid = threadIdx.x, nth = blockDim.x;
  const int nclus = P / c, g0 = blockIdx.x * G, Gb = min(G, nclus - g0), QB = Gb * c, QM = G * c;
  const bool sb = mode == kScatterbrain, multi = sb && R > 1;
  const int ep = 16 * ((E + 15) >> 4) + 8, rows = QM + 16, ck = 16 * KS, vtp = G * ck + 8;
  half_bits* qh = smh;                        // [QB + 16][ep] queries of the clusters, then 16 zero rows
  half_bits* kh = qh + rows * ep;             // [QB + 16][ep] keys
  half_bits* vt = kh + rows * ep;             // [8 ceil(Dv / 8)][vtp] values, transposed, ck keys a cluster
  int* qidx = reinterpret_cast<int*>(vt + ((Dv + 7) & ~7) * vtp);  // [QB] token of each query slot
  int* kidx = qidx + r4(QM);                                       // [QB] token of each key slot
  int* qbk = kidx + r4(QM);                                        // [R][QB] query bucket in every round
  int* kbk = qbk + (multi ? r4(R * QM) : 0);                       // [R][QB] key bucket in every round
  float* qpl = reinterpret_cast<float*>(kbk + (multi ? r4(R * QM) : 0));  // [QB] pls (SCATTERBRAIN)
  const int64 perm0 = ((int64)bh * R + r) * P + g0 * c;

  for (int i = tid; i < QB; i += nth) {
    qidx[i] = q_perm[perm0 + i];
    kidx[i] = k_perm[perm0 + i];
  }
  __syncthreads();
  const int fq = sb ? QB : 0, fb = multi ? QB : 0;
  const int64 qk0 = row_base(bh, H, qsb, qsh);
  stage_half_rows(q + qk0, qidx, QB, QB + 16, E, N, vecq != 0, qh, ep, qsn);
  stage_half_rows(k + qk0, kidx, QB, QB + 16, E, N, vecq != 0, kh, ep, qsn);
  gather<4>(ValuesT(v + row_base(bh, H, vsb, vsh), kidx, Gb, c, ck, Dv, N, vecv != 0, vt, vtp, vsn),
            SlotScalar{pls + (int64)bh * P, qidx, qpl, fq},
            SlotBucket(q_inv + (int64)bh * R * P, qidx, qbk, fb, R, P, QM, c),
            SlotBucket(k_inv + (int64)bh * R * P, kidx, kbk, fb, R, P, QM, c));
  cp_async_wait_all();
  __syncthreads();

  const int warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
  const int gw = warp / KS, mt = warp - gw * KS;
  if (gw >= Gb) return;  // no barriers below
  const int base = gw * c, ri[2] = {mt * 16 + gq, mt * 16 + gq + 8};  // this lane's rows in the cluster
  float s[NT][4], l[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = l[n][e] = 0.0f;

  // 1. q.k. The lane's fragment offsets (halves from qh, kh) advance with the channel step: re-derived from
  // the lane id at every step, they took more instructions than the mma.
  int qoff = static_cast<int>(a_fragment_row(qh + (base + mt * 16) * ep, ep) - qh);
  int koff = static_cast<int>(b_fragment_row(kh + base * ep, ep) - kh);
  for (int e0 = 0; e0 < E; e0 += 16, qoff += 16, koff += 16) {
    unsigned a[4];
    ldmatrix<4>(a, qh + qoff);
#pragma unroll
    for (int n = 0; n < NTC; ++n) {
      unsigned b[2];
      ldmatrix<2>(b, kh + koff + 8 * n * ep);
      mma_16816(s[n], a, b);
    }
  }
  // 2. q'.k' (SCATTERBRAIN): feature rows of the slots' tokens (q' rows past c read none)
  if (sb) {
    const float* qrow[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) qrow[h] = ri[h] < c ? qf + ((int64)bh * P + qidx[base + ri[h]]) * F : nullptr;
    for (int f0 = 0; f0 < F; f0 += 16) {
      unsigned ahi[4], alo[4];
      split_features(qrow[0], f0 + 2 * tq, F, ahi[0], alo[0]);
      split_features(qrow[1], f0 + 2 * tq, F, ahi[1], alo[1]);
      split_features(qrow[0], f0 + 2 * tq + 8, F, ahi[2], alo[2]);
      split_features(qrow[1], f0 + 2 * tq + 8, F, ahi[3], alo[3]);
#pragma unroll
      for (int n = 0; n < NTC; ++n) {
        const int j = 8 * n + gq;
        const float* krow = j < c ? kf + ((int64)bh * P + kidx[base + j]) * F : nullptr;
        unsigned bhi[2], blo[2];
        split_features(krow, f0 + 2 * tq, F, bhi[0], blo[0]);
        split_features(krow, f0 + 2 * tq + 8, F, bhi[1], blo[1]);
        mma_16816(l[n], alo, bhi);
        mma_16816(l[n], ahi, blo);
        mma_16816(l[n], ahi, bhi);
      }
    }
  }

  // 3. Element (n, e) of this lane: row ri[e >> 1], key j = 8 n + 2 tq + (e & 1). Logits t q.k (padded keys
  // -FLT_MAX, keys past c -inf: weight 0), minus log(count); q'.k' / count (SCATTERBRAIN).
  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int n = 0; n < NTC; ++n) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = 8 * n + 2 * tq + h;
      const bool inside = j < c, padded = inside && kidx[base + j] >= N;
#pragma unroll
      for (int w = 0; w < 2; ++w) {
        const int e = 2 * w + h;
        float sv = !inside ? neg_inf() : padded ? -kFloatMax : s[n][e] * scale;
        float lv = inside && !padded ? l[n][e] * kFeatureUnscale : 0.0f;
        if (multi && inside && ri[w] < c) {
          int cnt = 0;
#pragma unroll 1
          for (int r2 = 0; r2 < R; ++r2) cnt += qbk[r2 * QM + base + ri[w]] == kbk[r2 * QM + base + j] ? 1 : 0;
          if (cnt > 1) {  // cnt >= 1: the pair shares this round's cluster
            const float2 once = count_once(sv, lv, cnt);
            sv = once.x;
            lv = once.y;
          }
        }
        s[n][e] = sv;
        l[n][e] = lv;
        mx[w] = fmaxf(mx[w], sv);
      }
    }
  }
  // The weights are split into float16 hi + lo after a scaling by 2^ws (exact), for the same reason as the
  // features: |dots| <= max(1, F) (exp(.) <= 1, lr <= q'.k' <= F, exp(pls - M) <= 1; LSH weights <= 1), so
  // 2^ws = 2^(15 - bits(F)) keeps every scaled weight at most 2^15 (float16's largest value: 65504).
  int fbits = 0;
  while ((F >> fbits) != 0) ++fbits;
  const int ws = max(0, 15 - fbits);
  const float wscale = __int_as_float((127 + ws) << 23), wunscale = __int_as_float((127 - ws) << 23);
  float rowv[2], rsum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    mx[w] = fmaxf(mx[w], __shfl_xor_sync(kFullMask, mx[w], 1));
    mx[w] = fmaxf(mx[w], __shfl_xor_sync(kFullMask, mx[w], 2));
  }
  if (sb) {
    // dots = exp(s - M) - lr exp(pls - M), M = max(max_j s, pls); rows past c take M = max_j s.
    float e_pl[2];
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      const float pl = ri[w] < c ? qpl[base + ri[w]] : neg_inf();
      rowv[w] = fmaxf(mx[w], pl);
      e_pl[w] = expf(pl - rowv[w]);
    }
#pragma unroll
    for (int n = 0; n < NTC; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float dd = expf(s[n][e] - rowv[e >> 1]) - l[n][e] * e_pl[e >> 1];
        s[n][e] = dd * wscale;
        rsum[e >> 1] += dd;
      }
    }
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      rsum[w] += __shfl_xor_sync(kFullMask, rsum[w], 1);
      rsum[w] += __shfl_xor_sync(kFullMask, rsum[w], 2);
    }
  } else {
    // LSH: softmax inside the cluster; the logsumexp weighs the rounds.
    float se[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < NTC; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) se[e >> 1] += expf(s[n][e] - mx[e >> 1]);
    }
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      se[w] += __shfl_xor_sync(kFullMask, se[w], 1);
      se[w] += __shfl_xor_sync(kFullMask, se[w], 2);
      rowv[w] = logf(se[w]) + mx[w];
    }
#pragma unroll
    for (int n = 0; n < NTC; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = expf(s[n][e] - rowv[e >> 1]) * wscale;
    }
  }

  // 4. weights x values, kPvChannels channels at a time; rows in token order.
  int tok[2];
#pragma unroll
  for (int w = 0; w < 2; ++w) tok[w] = ri[w] < c ? qidx[base + ri[w]] : N;  // N: dropped
  float* rb = rnum + ((int64)bh * R + r) * P * Dv;
  const bool pairs = (Dv & 1) == 0;  // float2 stores
  int voff = static_cast<int>(b_fragment_row(vt + gw * ck, vtp) - vt);  // the lane's offset at channel c0, key 0
  for (int c0 = 0; c0 < Dv; c0 += kPvChannels, voff += kPvChannels * vtp) {
    float o[kPvChannels / 8][4];
#pragma unroll
    for (int dn = 0; dn < kPvChannels / 8; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      unsigned hi[4], lo[4];
      split_pair(s[2 * ks][0], s[2 * ks][1], hi[0], lo[0]);
      split_pair(s[2 * ks][2], s[2 * ks][3], hi[1], lo[1]);
      split_pair(s[2 * ks + 1][0], s[2 * ks + 1][1], hi[2], lo[2]);
      split_pair(s[2 * ks + 1][2], s[2 * ks + 1][3], hi[3], lo[3]);
#pragma unroll
      for (int dn = 0; dn < kPvChannels / 8; ++dn) {
        if (c0 + 8 * dn < Dv) {
          unsigned b[2];
          ldmatrix<2>(b, vt + voff + 8 * dn * vtp + 16 * ks);
          mma_16816(o[dn], lo, b);
          mma_16816(o[dn], hi, b);
        }
      }
    }
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      if (tok[w] >= N) continue;  // rows past c and padded queries are dropped
      float* orow = rb + (int64)tok[w] * Dv;
#pragma unroll
      for (int dn = 0; dn < kPvChannels / 8; ++dn) {
        const int ch = c0 + 8 * dn + 2 * tq;
        if (ch >= Dv) continue;
        const float o0 = o[dn][2 * w] * wunscale, o1 = o[dn][2 * w + 1] * wunscale;
        if (pairs) {
          *reinterpret_cast<float2*>(orow + ch) = make_float2(o0, o1);
        } else {
          orow[ch] = o0;
          if (ch + 1 < Dv) orow[ch + 1] = o1;
        }
      }
    }
  }
  if (tq == 0) {
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      if (tok[w] >= N) continue;
      float* o = raux + (((int64)bh * R + r) * P + tok[w]) * 2;
      o[0] = sb ? rsum[w] : 0.0f;
      o[1] = rowv[w];
    }
  }
}

// ---- combine ---------------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void store4(T* p, const float* x, int n, bool vec);
template <>
__device__ __forceinline__ void store4<float>(float* p, const float* x, int n, bool vec) {
  if (vec) {
    st4(p, x[0], x[1], x[2], x[3]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (i < n) p[i] = x[i];
  }
}
template <>
__device__ __forceinline__ void store4<half_bits>(half_bits* p, const float* x, int n, bool vec) {
  if (vec) {
    uint2 w;
    w.x = (unsigned)from_float<half_bits>(x[0]) | ((unsigned)from_float<half_bits>(x[1]) << 16);
    w.y = (unsigned)from_float<half_bits>(x[2]) | ((unsigned)from_float<half_bits>(x[3]) << 16);
    *reinterpret_cast<uint2*>(p) = w;
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (i < n) p[i] = from_float<half_bits>(x[i]);
  }
}

// Low-rank state of one (b, h) as vitrt_sb_kv_reduce writes it: kv[f][d] = (k'^T v)[f][d] for d < Dv, zero up
// to kp = 4 ceil(Dv / 4) (16-byte rows), then ksum[f] = sum k'[f]; kv_stride floats in all.
__device__ __forceinline__ int kv_pitch(int Dv) { return 4 * ((Dv + 3) >> 2); }
__device__ __forceinline__ int kv_stride(int F, int Dv) { return F * kv_pitch(Dv) + r4(F); }

template <typename T, bool kStaged>
__device__ void combine(const float* __restrict__ qf, const float* __restrict__ pls, const float* __restrict__ kv,
                        const float* __restrict__ rnum, const float* __restrict__ raux, T* __restrict__ out, int N,
                        int P, int Dv, int R, int F, int qpb, int mode, int vec_out) {
  VITRT_DYNAMIC_SHARED(float, sm);
  const int bh = blockIdx.y, tid = threadIdx.x, nth = blockDim.x;
  const int i0 = blockIdx.x * qpb, nq = min(qpb, N - i0);
  const bool low_rank = mode != kLsh, sparse = mode != kPerformer, sb = mode == kScatterbrain;
  const int dv4 = (Dv + 3) >> 2, kp = kv_pitch(Dv), qtp = r4(qpb), Fl = low_rank ? F : 0, Rs = sparse ? R : 0;
  // The low-rank state ([F][kp] k'^T v, then [F] sum k') is staged in shared memory where it fits beside the
  // block's q' (kStaged: vitrt_sb_combine_<dt>); past that (hundreds of features) it is read from global memory
  // (vitrt_sb_combine_global_<dt>), where every block of this (b, h) reads the same F x kp floats (L2
  // resident). Same values, same order: the same bits. Two entry points rather than a runtime flag: the staged
  // one keeps its shared-memory loads and its registers (one kernel with both paths spilled on sm_120).
  const float* kvg = kv + (int64)bh * kv_stride(F, Dv);
  const int Fs = kStaged ? Fl : 0;         // features staged
  float* kv_sm = sm;
  const float* kvs = kStaged ? kv_sm : kvg;
  const float* ksum = kvs + Fl * kp;
  float* qt = sm + Fs * kp + r4(Fs);       // [F][qtp] the block's q', transposed (token fastest)
  float* ra = qt + Fl * qtp;               // [R][qpb][2] the block's raux rows
  float* ql = ra + r4(2 * qpb * Rs);       // [qpb] pls
  float* wt = ql + r4(qpb);                // [qpb][R] round weights
  float* lrw = wt + r4(qpb * Rs);          // [qpb] weight of the low-rank term
  float* den = lrw + r4(qpb);              // [qpb] denominator

  // Everything but the round rows in one batch of loads; qt padded with zero tokens up to a multiple of 4.
  for (int i = tid; i < Fl * (qtp - nq); i += nth) {
    const int f = i / (qtp - nq), t = nq + i - f * (qtp - nq);
    qt[f * qtp + t] = 0.0f;
  }
  const float* qrow = qf + ((int64)bh * P + i0) * Fl;  // the block's rows are contiguous
  gather<8>(rows_of(kvg, nullptr, 0, Fs, kp, Fs, true, kv_sm, kp),
            rows_of(kvg + Fs * kp, nullptr, 0, Fs > 0 ? 1 : 0, Fs, 1, false, kv_sm + Fs * kp, 0),
            Transposed(qrow, qt, Fl > 0 ? nq : 0, F, qtp, (F & 3) == 0),
            Span(raux + ((int64)bh * R * P + i0) * 2, ra, 2 * nq, Rs, 2 * (int64)P, 2 * qpb),
            Span(pls + (int64)bh * P + i0, ql, nq, sb ? 1 : 0, 0, 0));
  __syncthreads();
  for (int t = tid; t < nq; t += nth) {
    float lrs = 0.0f;
    for (int f = 0; f < Fl; ++f) lrs = fmaf(qt[f * qtp + t], ksum[f], lrs);
    if (!sparse) {
      den[t] = fmaxf(lrs, kFloatTiny);  // q'(k'^T v) / max(q' . sum k', FLT_MIN): exp(pls) cancels
      continue;
    }
    // Round weights in log domain: L = logsumexp_r M_r, w_r = exp(M_r - L) (SCATTERBRAIN), or
    // w_r = softmax_r(logsumexp of round r's logits) (LSH).
    float mx = neg_inf();
    for (int r = 0; r < R; ++r) mx = fmaxf(mx, ra[(r * qpb + t) * 2 + 1]);
    float se = 0.0f;
    for (int r = 0; r < R; ++r) se += expf(ra[(r * qpb + t) * 2 + 1] - mx);
    const float lse = logf(se) + mx;
    if (sb) {
      float dn = 0.0f;
      for (int r = 0; r < R; ++r) {
        const float wr = expf(ra[(r * qpb + t) * 2 + 1] - lse);
        wt[t * R + r] = wr;
        dn += ra[(r * qpb + t) * 2] * wr;
      }
      const float lw = expf(ql[t] - lse);
      lrw[t] = lw;
      den[t] = fmaxf(dn + lrs * lw, 1e-6f);  // spec.DENOMINATOR_MIN, in units of exp(L)
    } else {
      for (int r = 0; r < R; ++r) wt[t * R + r] = expf(ra[(r * qpb + t) * 2 + 1] - mx) / se;
    }
  }
  __syncthreads();
  // Tiles of 4 queries x 4 channels: the low-rank product q' (k'^T v), then the rounds' rows.
  const bool vrow = (Dv & 3) == 0;
  const int64 rstride = (int64)P * Dv;                        // one round of rnum
  const float* rblock = rnum + ((int64)bh * R * P + i0) * Dv;  // round 0, query i0
  T* oblock = out + ((int64)bh * N + i0) * Dv;
  for (int u = tid; u < ((nq + 3) >> 2) * dv4; u += nth) {
    const int tq = u / dv4, dq = u - tq * dv4, ch = 4 * dq, nch = min(4, Dv - ch);
    float lr[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a) lr[a][0] = lr[a][1] = lr[a][2] = lr[a][3] = 0.0f;
#pragma unroll 1
    for (int f = 0; f < Fl; ++f) {
      const float4 qv = ld4(qt + f * qtp + 4 * tq), kk = ld4(kvs + f * kp + ch);
      const float qa[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        lr[a][0] = fmaf(qa[a], kk.x, lr[a][0]);
        lr[a][1] = fmaf(qa[a], kk.y, lr[a][1]);
        lr[a][2] = fmaf(qa[a], kk.z, lr[a][2]);
        lr[a][3] = fmaf(qa[a], kk.w, lr[a][3]);
      }
    }
    float num[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a) num[a][0] = num[a][1] = num[a][2] = num[a][3] = 0.0f;
    for (int r = 0; r < Rs; ++r) {
      float4 x[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int t = min(4 * tq + a, nq - 1);
        const float* row = rblock + r * rstride + (int64)t * Dv + ch;
        if (vrow) {
          x[a] = ld4(row);
        } else {
          x[a].x = row[0];
          x[a].y = nch > 1 ? row[1] : 0.0f;
          x[a].z = nch > 2 ? row[2] : 0.0f;
          x[a].w = nch > 3 ? row[3] : 0.0f;
        }
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const float wr = wt[min(4 * tq + a, nq - 1) * R + r];
        num[a][0] += x[a].x * wr;
        num[a][1] += x[a].y * wr;
        num[a][2] += x[a].z * wr;
        num[a][3] += x[a].w * wr;
      }
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int t = 4 * tq + a;
      if (t >= nq) continue;
      float res[4];
#pragma unroll
      for (int cc = 0; cc < 4; ++cc) {
        if (!sparse)
          res[cc] = lr[a][cc] / den[t];
        else if (sb)
          res[cc] = (num[a][cc] + lr[a][cc] * lrw[t]) / den[t];
        else
          res[cc] = num[a][cc];
      }
      store4<T>(oblock + t * Dv + ch, res, nch, vec_out != 0 && nch == 4);
    }
  }
}

}  // namespace

// ---- entry points (extern "C": looked up by name from Python) --------------------------------------

#define VITRT_SB_ENTRIES(SUFFIX, T)                                                                        \
  extern "C" __global__ void __launch_bounds__(256, 3) vitrt_sb_features_##SUFFIX(                         \
      const T* q, const T* k, const T* v, const float* hv, const float* proj, float* kstat,                \
      float* qstat, float* qn, float* kn, float* hq, float* hk, float* qf, float* kf, float* pls,          \
      float* kv_part, int N, int P, int E, int Dv, int R, int m, float root, float rr, float log_norm,     \
      int chunk, int n_tok, int nchunk, int mode, int vecq, int vecv, SB_QKV_LAYOUT) {                     \
    VITRT_KERNEL_PROLOGUE();                                                                               \
    features<T>(q, k, v, hv, proj, kstat, qstat, qn, kn, hq, hk, qf, kf, pls, kv_part, N, P, E, Dv, R, m,  \
                root, rr, log_norm, chunk, n_tok, nchunk, mode, vecq, vecv, SB_QKV_LAYOUT_ARGS);           \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(256, 2) vitrt_sb_cluster_##SUFFIX(                          \
      const T* q, const T* k, const T* v, const float* qf, const float* kf, const float* pls,              \
      const int* q_perm, const int* q_inv, const int* k_perm, const int* k_inv, float* rnum, float* raux,  \
      int N, int P, int E, int Dv, int R, int F, int c, int G, float scale, int mode, int vecq, int vecv,   \
      SB_QKV_LAYOUT) {                                                                                     \
    VITRT_KERNEL_PROLOGUE();                                                                                \
    cluster_attention<T>(q, k, v, qf, kf, pls, q_perm, q_inv, k_perm, k_inv, rnum, raux, N, P, E, Dv, R,   \
                         F, c, G, scale, mode, vecq, vecv, SB_QKV_LAYOUT_ARGS);                            \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(256, 2) vitrt_sb_cluster_tiled_##SUFFIX(                    \
      const T* q, const T* k, const T* v, const float* qf, const float* kf, const float* pls,              \
      const int* q_perm, const int* q_inv, const int* k_perm, const int* k_inv, float* rnum, float* raux,  \
      int N, int P, int E, int Dv, int R, int F, int c, int QS, int KT, float scale, int mode, int vecq,   \
      int vecv, SB_QKV_LAYOUT) {                                                                           \
    VITRT_KERNEL_PROLOGUE();                                                                               \
    cluster_attention_tiled<T>(q, k, v, qf, kf, pls, q_perm, q_inv, k_perm, k_inv, rnum, raux, N, P, E, Dv, \
                               R, F, c, QS, KT, scale, mode, vecq, vecv, SB_QKV_LAYOUT_ARGS);              \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(256, 3) vitrt_sb_combine_##SUFFIX(                          \
      const float* qf, const float* pls, const float* kv, const float* rnum, const float* raux, T* out,    \
      int N, int P, int Dv, int R, int F, int qpb, int mode, int vec_out) {                                \
    VITRT_KERNEL_PROLOGUE();                                                                               \
    combine<T, true>(qf, pls, kv, rnum, raux, out, N, P, Dv, R, F, qpb, mode, vec_out);                    \
  }                                                                                                        \
  /* 2 blocks per SM, not 3: at 80 registers the 64-bit state addresses spilled on sm_120 */              \
  extern "C" __global__ void __launch_bounds__(256, 2) vitrt_sb_combine_global_##SUFFIX(                   \
      const float* qf, const float* pls, const float* kv, const float* rnum, const float* raux, T* out,    \
      int N, int P, int Dv, int R, int F, int qpb, int mode, int vec_out) {                                \
    VITRT_KERNEL_PROLOGUE();                                                                               \
    combine<T, false>(qf, pls, kv, rnum, raux, out, N, P, Dv, R, F, qpb, mode, vec_out);                   \
  }

VITRT_SB_ENTRIES(f32, float)
VITRT_SB_ENTRIES(f16, half_bits)

// The cluster kernel on tensor cores for float16, one entry per NTC = ceil(c / 8), 8-key tiles (1 .. 8: clusters
// of up to 64 keys): blocks of KS = ceil(NTC / 2) warps per cluster, G clusters, at most kMmaWarpsMax warps
// (cuda.py: AttentionDims.mma_*; the launcher picks the entry). Registers are sized for MINB blocks of
// kMmaWarpsMax warps per SM: 3 (80 registers) where ptxas spills nothing on sm_87 to sm_120 (NTC <= 4), else 2
// (128 registers).
#define VITRT_SB_CLUSTER_MMA(NTC, MINB)                                                                       \
  extern "C" __global__ void __launch_bounds__(32 * kMmaWarpsMax, MINB) vitrt_sb_cluster_mma##NTC##_f16(      \
      const half_bits* q, const half_bits* k, const half_bits* v, const float* qf, const float* kf,           \
      const float* pls, const int* q_perm, const int* q_inv, const int* k_perm, const int* k_inv,             \
      float* rnum, float* raux, int N, int P, int E, int Dv, int R, int F, int c, int G, float scale,         \
      int mode, int vecq, int vecv, SB_QKV_LAYOUT) {                                                          \
    VITRT_KERNEL_PROLOGUE();                                                                                  \
    cluster_attention_mma<NTC>(q, k, v, qf, kf, pls, q_perm, q_inv, k_perm, k_inv, rnum, raux, N, P, E, Dv,   \
                              R, F, c, G, scale, mode, vecq, vecv, SB_QKV_LAYOUT_ARGS);                       \
  }
VITRT_SB_CLUSTER_MMA(1, 3)
VITRT_SB_CLUSTER_MMA(2, 3)
VITRT_SB_CLUSTER_MMA(3, 3)
VITRT_SB_CLUSTER_MMA(4, 3)
VITRT_SB_CLUSTER_MMA(5, 2)
VITRT_SB_CLUSTER_MMA(6, 2)
VITRT_SB_CLUSTER_MMA(7, 2)
VITRT_SB_CLUSTER_MMA(8, 2)

// log_k = the max over the (b, h)'s chunks of kstat's key-feature maxima (mf, features). kv[bh] = the sum
// over chunks of kv_part[bh, chunk] ([F, Dv + 1] per chunk, relative to the chunk's mf) times exp(mf -
// log_k), written in the layout combine reads (kv_stride: [F][kv_pitch] with zero padding, then the sums of
// k'). Eight lanes per output: lane g adds chunks g, g + 8, ... in order, then a fixed butterfly adds the
// eight partial sums (the same order for every run and every lane). Then the blocks of the (b, h) finish
// what features left: kf [P][F] holds the keys' log features lk (-inf on padding), made k' = exp(lk -
// log_k), the value features would have written with log_k at hand (0 on padding), and pls gets + log_k.
constexpr int kReduceLanes = 8;
extern "C" __global__ void __launch_bounds__(128)
    vitrt_sb_kv_reduce(const float* __restrict__ kv_part, float* __restrict__ kv, const float* __restrict__ kstat,
                       float* __restrict__ kf, float* __restrict__ pls, int F, int Dv, int nchunk, int P) {
  VITRT_KERNEL_PROLOGUE();
  __shared__ float scratch[32];
  const int bh = blockIdx.y, kp = kv_pitch(Dv), L = F * (Dv + 1);
  const float* mf = kstat + (int64)bh * nchunk * 2 + 1;  // chunk i's at mf[2 i]
  float c = neg_inf();
  for (int i = threadIdx.x; i < nchunk; i += blockDim.x) c = fmaxf(c, mf[2 * i]);
  const float log_k = block_max(c, scratch);
  const int o = (blockIdx.x * blockDim.x + threadIdx.x) / kReduceLanes, g = threadIdx.x % kReduceLanes;
  int src = -1;  // column of the partials, or -1 for padding / past the end
  if (o < F * kp) {
    const int f = o / kp, d = o - f * kp;
    if (d < Dv) src = f * (Dv + 1) + d;
  } else if (o < F * kp + F) {
    src = (o - F * kp) * (Dv + 1) + Dv;
  }
  float acc = 0.0f;
  if (src >= 0) {
    const float* p = kv_part + (int64)bh * nchunk * L + src;
    for (int i = g; i < nchunk; i += kReduceLanes) acc = fmaf(p[(int64)i * L], expf(mf[2 * i] - log_k), acc);
  }
#pragma unroll
  for (int m = 1; m < kReduceLanes; m <<= 1) acc += __shfl_xor_sync(kFullMask, acc, m);
  if (g == 0 && o < F * kp + F) kv[(int64)bh * kv_stride(F, Dv) + o] = acc;
  const int64 first = (int64)blockIdx.x * blockDim.x + threadIdx.x, step = (int64)gridDim.x * blockDim.x;
  float* kb = kf + (int64)bh * P * F;
  for (int64 i = first; i < (int64)P * F; i += step) kb[i] = expf(kb[i] - log_k);
  for (int64 i = first; i < P; i += step) pls[(int64)bh * P + i] += log_k;
}

// Stable ascending argsort of one round's hashes (block x: side * R + r, side 0 = queries, 1 = keys), after
// completing them with the XBOX+ term. blockDim.x = 32 * ceil(P / (32 * items)) <= 1024, items 4 or 8
// (P <= 8192); dynamic shared memory: 4 * (2 * items * blockDim.x + 256 * blockDim.x / 32) bytes. Writes the
// permutation (sorted slot -> token) and its inverse. vitrt_sb_sort_few: the same with 1 or 2 keys per thread
// (P <= 2048), its own entry because all four key counts in one made ptxas spill for sm_120.
#define VITRT_SB_SORT_ENTRY(NAME, FEW, MANY)                                                                  \
  extern "C" __global__ void __launch_bounds__(1024)                                                          \
      NAME(const float* __restrict__ qn, const float* __restrict__ kn, const float* __restrict__ qstat,       \
           const float* __restrict__ kstat, const float* __restrict__ hv, float* __restrict__ hq,             \
           float* __restrict__ hk, int* __restrict__ q_perm, int* __restrict__ q_inv, int* __restrict__ k_perm, \
           int* __restrict__ k_inv, int N, int P, int E, int R, int nchunk, int items) {                      \
    VITRT_KERNEL_PROLOGUE();                                                                                  \
    __shared__ float st;                                                                                      \
    const SortRow j =                                                                                         \
        sort_row(qn, kn, qstat, kstat, hv, hq, hk, q_perm, q_inv, k_perm, k_inv, P, E, R, nchunk, &st);       \
    if (items == FEW)                                                                                         \
      radix_argsort<FEW>(j.h, j.norms, j.perm, j.inv, N, P, j.total, j.hcol);                                 \
    else                                                                                                      \
      radix_argsort<MANY>(j.h, j.norms, j.perm, j.inv, N, P, j.total, j.hcol);                                \
  }
VITRT_SB_SORT_ENTRY(vitrt_sb_sort, 4, 8)
VITRT_SB_SORT_ENTRY(vitrt_sb_sort_few, 1, 2)

// The same for P > 8192, in tiles of T = 8 blockDim.x positions (NT = ceil(P / T) tiles; dynamic shared
// memory 4 (256 blockDim.x / 32 + 256 NT) bytes). Each LSD pass (8-bit digits) counts the digits of every
// tile, scans the counts in (digit, tile) order into each tile's first slot per digit, then ranks every tile's
// keys as radix_argsort does (ballots within a warp, counts across warps) and scatters the token indices to
// their slots in global memory: stable, so ties keep index order as reference.stable_argsort does. The
// indices ping-pong between inv and perm (pass 1 reads positions, pass 4 writes perm), and each pass reads
// every key again from the completed hashes (h[token]), so the sort needs no workspace of its own.
extern "C" __global__ void __launch_bounds__(1024)
    vitrt_sb_sort_tiles(const float* __restrict__ qn, const float* __restrict__ kn,
                        const float* __restrict__ qstat, const float* __restrict__ kstat,
                        const float* __restrict__ hv, float* __restrict__ hq, float* __restrict__ hk,
                        int* __restrict__ q_perm, int* __restrict__ q_inv, int* __restrict__ k_perm,
                        int* __restrict__ k_inv, int N, int P, int E, int R, int nchunk) {
  VITRT_KERNEL_PROLOGUE();
  constexpr int ITEMS = 8;
  VITRT_DYNAMIC_SHARED(int, smi);
  __shared__ float st;
  __shared__ int wsum[32];
  const SortRow j =
      sort_row(qn, kn, qstat, kstat, hv, hq, hk, q_perm, q_inv, k_perm, k_inv, P, E, R, nchunk, &st);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5, tid = threadIdx.x;
  const int T = ITEMS * blockDim.x, NT = (P + T - 1) / T;
  int* cnt = smi;             // [256][W] digit counts of the tile's warps, then their offsets in the digit
  int* toff = cnt + 256 * W;  // [256][NT] digit counts per tile, then each (digit, tile)'s first slot
  const unsigned below = (1u << lane) - 1u;
  for (int p = tid; p < P; p += blockDim.x) finish_hash(j.h, j.norms, p, N, j.total, j.hcol);
  __syncthreads();  // every hash complete (global memory: visible to the block after the barrier)

  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 8 * pass;
    // src and the hashes were written by this block earlier in the launch: plain loads (the barriers order
    // them; sm_90 SASS: LDG.E, not the read-only cache's LDG.E.CONSTANT).
    const int* src = pass == 1 || pass == 3 ? j.inv : j.perm;  // pass 0 reads positions, not src
    int* dst = pass == 0 || pass == 2 ? j.inv : j.perm;
    // Item it of lane l of warp w in tile t: position t T + w 32 ITEMS + 32 it + l, valid below P; its token
    // index val, its digit, and the lanes of this warp with the same digit (valid ones only).
    auto item = [&](int t, int it, int& val, unsigned& dig) -> unsigned {
      const int p = t * T + warp * 32 * ITEMS + 32 * it + lane;
      const bool valid = p < P;
      val = valid ? (pass == 0 ? p : src[p]) : -1;
      dig = valid ? (order_key(j.h[val]) >> shift) & 255u : 255u;
      unsigned m = __ballot_sync(kFullMask, valid);
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        const unsigned bit = (dig >> b) & 1u;
        const unsigned bal = __ballot_sync(kFullMask, bit != 0u);
        m &= bit ? bal : ~bal;
      }
      return m;
    };

    // 1. Digit counts per tile (one shared atomic per digit group of a warp: integer sums, any order).
    for (int i = tid; i < 256 * NT; i += blockDim.x) toff[i] = 0;
    __syncthreads();
    for (int t = 0; t < NT; ++t) {
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        int val;
        unsigned dig;
        const unsigned same = item(t, it, val, dig);
        if (val >= 0 && lane == __ffs(same) - 1) atomicAdd(&toff[dig * NT + t], __popc(same));
      }
    }
    __syncthreads();
    // 2. Exclusive scan of toff in (digit, tile) order: thread i owns entries [i m, (i + 1) m).
    {
      const int m = (256 * NT + blockDim.x - 1) / blockDim.x, lo = min(tid * m, 256 * NT),
                hi = min(lo + m, 256 * NT);
      int sum = 0;
      for (int i = lo; i < hi; ++i) sum += toff[i];
      int off = block_exclusive_scan(sum, wsum);
      for (int i = lo; i < hi; ++i) {
        const int c = toff[i];
        toff[i] = off;
        off += c;
      }
    }
    // 3. Per tile: each key's rank among the tile's keys of its digit, then its slot.
    for (int t = 0; t < NT; ++t) {
      for (int i = tid; i < 256 * W; i += blockDim.x) cnt[i] = 0;
      __syncthreads();  // also: toff written (first tile)
      int val[ITEMS], rank[ITEMS];
      unsigned dig[ITEMS];
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const unsigned same = item(t, it, val[it], dig[it]);
        int* c = cnt + dig[it] * W + warp;
        const int old = *c;
        rank[it] = old + __popc(same & below);
        __syncwarp();
        if (val[it] >= 0 && lane == __ffs(same) - 1) *c = old + __popc(same);
        __syncwarp();
      }
      __syncthreads();
      for (int d = tid; d < 256; d += blockDim.x) {  // counts of the warps -> their offsets in the digit
        int run = 0;
        for (int w2 = 0; w2 < W; ++w2) {
          const int c = cnt[d * W + w2];
          cnt[d * W + w2] = run;
          run += c;
        }
      }
      __syncthreads();
#pragma unroll
      for (int it = 0; it < ITEMS; ++it)
        if (val[it] >= 0) dst[toff[dig[it] * NT + t] + cnt[dig[it] * W + warp] + rank[it]] = val[it];
      __syncthreads();  // cnt read before the next tile clears it; the last tile: dst complete for the next pass
    }
  }
  for (int s = tid; s < P; s += blockDim.x) j.inv[j.perm[s]] = s;
}
