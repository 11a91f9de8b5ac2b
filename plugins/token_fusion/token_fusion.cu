// CUDA kernels of the TokenFusion op (MCTF / ToMe): the ground truth is plugins/token_fusion/reference.py
// and the contract plugins/token_fusion/spec.py. Launched by plugins/token_fusion/cuda.py, in order:
//
//   1. vitrt_tf_prepare_<dt>  grid (B)                  per-token metric norms, info/size factors, pooling
//                                                       weights; per-batch maxima (block reductions)
//   2. vitrt_tf_scores_<dt>   grid (Nb/32, Na/32, B)    32x32 tiles of the A x B score matrix (float32)
//   3. vitrt_tf_match         grid (B)                  bidirectional bipartite matching -> dest (int64),
//                                                       plus each output slot's members (CSR, index order)
//   4. vitrt_tf_merge_<dt>    grid (N_out/8, B)         weighted mean of every group, sizes summed
//      (r = 0: vitrt_tf_match writes dest = arange and vitrt_tf_copy_<dt> copies x and size instead)
//
// <dt> is f32 or f16 (the dtype of x, metric, info, size and of the outputs; float16 travels as raw bits).
// All arithmetic is float32. Shapes: x [B, N, C], metric [B, N, Cm], info/size [B, N]; set A = even token
// positions (Na = ceil(N/2)), set B = odd (Nb = floor(N/2)); N_out = N - r.
//
// Determinism: no atomics. Every sum runs in a fixed order (the merge sums each group's members in
// increasing token index, the order of the reference's scatter_add), so results are bitwise
// reproducible. Ties follow torch.max (first index) for arg-maxima and a stable descending order for
// the rankings (ties -> lower index first). The reference ranks with torch.argsort(descending=True),
// which is unstable, so on an exact tie of two best-partner scores the reference's order is
// implementation-defined while the kernel's is the stable one.

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

template <typename T>
__device__ void prepare(const T* __restrict__ metric, const T* __restrict__ info, const T* __restrict__ size,
                        float* __restrict__ rnorm, float* __restrict__ finfo, float* __restrict__ fsize,
                        float* __restrict__ weight, int N, int Cm, int pooling) {
  __shared__ float scratch[32];
  const int b = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  metric += (int64)b * N * Cm;
  info += (int64)b * N;
  size += (int64)b * N;
  const int64 row = (int64)b * N;

  // 1 / max(|metric_n|, 1e-12): the reference divides by the clamped L2 norm.
  for (int n = warp; n < N; n += warps) {
    float ss = 0.0f;
    for (int c = lane; c < Cm; c += 32) {
      const float m = to_float(metric[(int64)n * Cm + c]);
      ss = fmaf(m, m, ss);
    }
    ss = warp_sum(ss);
    if (lane == 0) rnorm[row + n] = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
  }

  // Per-batch maxima of 1/info, 1/size and size (max is exact: no order dependence).
  float mi = neg_inf(), ms = neg_inf(), mx = neg_inf();
  for (int n = threadIdx.x; n < N; n += blockDim.x) {
    const float iv = to_float(info[n]), sv = to_float(size[n]);
    mi = fmaxf(mi, 1.0f / fmaxf(iv, 1e-12f));
    ms = fmaxf(ms, 1.0f / sv);
    mx = fmaxf(mx, sv);
  }
  mi = block_max(mi, scratch);
  ms = block_max(ms, scratch);
  mx = block_max(mx, scratch);

  for (int n = threadIdx.x; n < N; n += blockDim.x) {
    const float iv = to_float(info[n]), sv = to_float(size[n]);
    finfo[row + n] = (1.0f / fmaxf(iv, 1e-12f)) / mi;
    fsize[row + n] = (1.0f / sv) / ms;
    // Pooling weights, spec.Pooling: 1 = ATTN_SIZE (info * size / max size), 0 = SIZE, 3 = MEAN.
    weight[row + n] = pooling == 1 ? iv * (sv / mx) : (pooling == 0 ? sv : 1.0f);
  }
}

// One block computes a 32 x 32 tile of scores[b, a, j] (a in set A, j in set B) with a shared-memory
// tiled dot product over the Cm channels; a 0 exponent disables its factor (temperature 0).
template <typename T>
__device__ void scores_tile(const T* __restrict__ metric, const float* __restrict__ rnorm,
                            const float* __restrict__ finfo, const float* __restrict__ fsize,
                            float* __restrict__ scores, int N, int Cm, float e_sim, float e_info, float e_size,
                            int num_protected) {
  __shared__ float As[32][33];  // +1: conflict-free column reads
  __shared__ float Bs[32][33];
  const int Na = (N + 1) / 2, Nb = N / 2;
  const int b = blockIdx.z, a0 = blockIdx.y * 32, j0 = blockIdx.x * 32;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
  const T* mb = metric + (int64)b * N * Cm;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};

  for (int c0 = 0; c0 < Cm; c0 += 32) {
    for (int e = tid; e < 32 * 32; e += 256) {
      const int r = e >> 5, col = e & 31, c = c0 + col;
      const int a = a0 + r, j = j0 + r;
      As[r][col] = (a < Na && c < Cm) ? to_float(mb[(int64)(2 * a) * Cm + c]) : 0.0f;
      Bs[r][col] = (j < Nb && c < Cm) ? to_float(mb[(int64)(2 * j + 1) * Cm + c]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < 32; ++kk) {
      const float bv = Bs[tx][kk];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] = fmaf(As[ty + 8 * i][kk], bv, acc[i]);
    }
    __syncthreads();
  }

  const int j = j0 + tx;
  if (j >= Nb) return;
  const int64 row = (int64)b * N;
  const int tb = 2 * j + 1;
  for (int i = 0; i < 4; ++i) {
    const int a = a0 + ty + 8 * i;
    if (a >= Na) continue;
    const int ta = 2 * a;
    float s = 1.0f;
    if (e_sim > 0.0f) {
      const float cosine = acc[i] * rnorm[row + ta] * rnorm[row + tb];
      // clamp: rounding can push a cosine just below -1 (negative base ** (1/tau) is NaN)
      s = pow_like_torch(fmaxf((cosine + 1.0f) * 0.5f, 0.0f), e_sim);
    }
    if (e_info > 0.0f) s *= pow_like_torch(finfo[row + ta] * finfo[row + tb], e_info);
    if (e_size > 0.0f) s *= pow_like_torch(fsize[row + ta] * fsize[row + tb], e_size);
    // Protected tokens are never merged away nor merged into: the most negative finite float32.
    if (ta < num_protected || tb < num_protected) s = -kFloatMax;
    scores[((int64)b * Na + a) * Nb + j] = s;
  }
}

template <typename T>
__device__ __forceinline__ void load4(const T* p, float* out);
template <>
__device__ __forceinline__ void load4<float>(const float* p, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x;
  out[1] = v.y;
  out[2] = v.z;
  out[3] = v.w;
}
template <>
__device__ __forceinline__ void load4<half_bits>(const half_bits* p, float* out) {
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  out[0] = to_float((half_bits)(v.x & 0xffffu));
  out[1] = to_float((half_bits)(v.x >> 16));
  out[2] = to_float((half_bits)(v.y & 0xffffu));
  out[3] = to_float((half_bits)(v.y >> 16));
}
template <typename T>
__device__ __forceinline__ void store4(T* p, const float* in);
template <>
__device__ __forceinline__ void store4<float>(float* p, const float* in) {
  *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
}
template <>
__device__ __forceinline__ void store4<half_bits>(half_bits* p, const float* in) {
  uint2 v;
  v.x = (unsigned)from_float<half_bits>(in[0]) | ((unsigned)from_float<half_bits>(in[1]) << 16);
  v.y = (unsigned)from_float<half_bits>(in[2]) | ((unsigned)from_float<half_bits>(in[3]) << 16);
  *reinterpret_cast<uint2*>(p) = v;
}

// One warp per output slot: x_out[s] = sum_i(x_i * w_i) / max(sum_i w_i, 1e-12) over the slot's members
// in increasing index order; size_out[s] = sum_i size_i. (r = 0 is vitrt_tf_copy: an identity copy in
// this kernel made ptxas spill on sm_100 / sm_120.)
template <typename T>
__device__ void merge(const T* __restrict__ x, const T* __restrict__ size, const float* __restrict__ weight,
                      const int* __restrict__ slot_start, const int* __restrict__ members, T* __restrict__ x_out,
                      T* __restrict__ size_out, int N, int N_out, int C, int vec4) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int s = blockIdx.x * (blockDim.x >> 5) + warp;
  const int b = blockIdx.y;
  if (s >= N_out) return;
  const T* xb = x + (int64)b * N * C;
  T* ob = x_out + ((int64)b * N_out + s) * C;
  const int* sl = slot_start + (int64)b * (N_out + 1);
  const int* mem = members + (int64)b * N;
  const float* wb = weight + (int64)b * N;
  const int st = sl[s], en = sl[s + 1];
  float den = 0.0f, total = 0.0f;
  for (int k = st; k < en; ++k) {
    const int i = mem[k];
    den = __fadd_rn(den, wb[i]);
    total = __fadd_rn(total, to_float(size[(int64)b * N + i]));
  }
  den = fmaxf(den, 1e-12f);
  if (lane == 0) size_out[(int64)b * N_out + s] = from_float<T>(total);
  if (vec4) {
    for (int c = lane * 4; c < C; c += 128) {
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, xv[4];
      for (int k = st; k < en; ++k) {
        const int i = mem[k];
        const float w = wb[i];
        load4<T>(xb + (int64)i * C + c, xv);
        // x * w rounded, then added: the reference's (x * w) followed by scatter_add (no fma).
#pragma unroll
        for (int u = 0; u < 4; ++u) acc[u] = __fadd_rn(acc[u], __fmul_rn(xv[u], w));
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) acc[u] = acc[u] / den;
      store4<T>(ob + c, acc);
    }
  } else {
    for (int c = lane; c < C; c += 32) {
      float acc = 0.0f;
      for (int k = st; k < en; ++k) {
        const int i = mem[k];
        acc = __fadd_rn(acc, __fmul_rn(to_float(xb[(int64)i * C + c]), wb[i]));
      }
      ob[c] = from_float<T>(acc / den);
    }
  }
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

extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_prepare_f32(const float* metric, const float* info, const float* size, float* rnorm, float* finfo,
                         float* fsize, float* weight, int N, int Cm, int pooling) {
  prepare<float>(metric, info, size, rnorm, finfo, fsize, weight, N, Cm, pooling);
}
extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_prepare_f16(const half_bits* metric, const half_bits* info, const half_bits* size, float* rnorm,
                         float* finfo, float* fsize, float* weight, int N, int Cm, int pooling) {
  prepare<half_bits>(metric, info, size, rnorm, finfo, fsize, weight, N, Cm, pooling);
}

extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_scores_f32(const float* metric, const float* rnorm, const float* finfo, const float* fsize,
                        float* scores, int N, int Cm, float e_sim, float e_info, float e_size, int num_protected) {
  scores_tile<float>(metric, rnorm, finfo, fsize, scores, N, Cm, e_sim, e_info, e_size, num_protected);
}
extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_scores_f16(const half_bits* metric, const float* rnorm, const float* finfo, const float* fsize,
                        float* scores, int N, int Cm, float e_sim, float e_info, float e_size, int num_protected) {
  scores_tile<half_bits>(metric, rnorm, finfo, fsize, scores, N, Cm, e_sim, e_info, e_size, num_protected);
}

// Bipartite matching of one batch element per block (reference.bipartite_matching):
//   phase 1: every A token's best B partner (first arg-max); the r1 = r // 2 (one-way: r) A tokens with
//            the best partners (stable descending rank) merge; the others keep slots in index order;
//   phase 2 (bidirectional): every B token's best partner among the unmerged A tokens, in slot order;
//            the r2 = r - r // 2 best merge into it, the others take slots n_unm + rank in descending
//            score order;
// then the CSR of every output slot's members in increasing token index (what the merge sums).
// Dynamic shared memory: (5 Na + 3 Nb + 2 N + 1) * 4 bytes (see cuda.py).
extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_match(const float* __restrict__ scores, int64* __restrict__ dest, int* __restrict__ slot_start,
                   int* __restrict__ members, int N, int r, int bidirectional) {
  VITRT_DYNAMIC_SHARED(int, smem);
  __shared__ int scratch[33];
  const int Na = (N + 1) / 2, Nb = N / 2, N_out = N - r;
  const int r1 = bidirectional ? r / 2 : r, r2 = bidirectional ? r - r / 2 : 0, n_unm = Na - r1;
  const int b = blockIdx.x, tid = threadIdx.x, bd = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, warps = bd >> 5;
  float* nmax = reinterpret_cast<float*>(smem);           // [Na] best score of each A token
  int* nidx = smem + Na;                                  // [Na] its B partner
  int* rank = nidx + Na;                                  // [Na] stable descending rank
  int* slot = rank + Na;                                  // [Na] output slot if unmerged
  int* ulist = slot + Na;                                 // [Na] unmerged A token of each slot
  float* nmax2 = reinterpret_cast<float*>(ulist + Na);    // [Nb] best score of each B token
  int* nidx2 = reinterpret_cast<int*>(nmax2 + Nb);        // [Nb] its A slot
  int* rank2 = nidx2 + Nb;                                // [Nb]
  int* dst = rank2 + Nb;                                  // [N]  dest, token order
  int* start = dst + N;                                   // [N_out + 1]
  const float* S = scores + (int64)b * Na * Nb;
  int64* db = dest + (int64)b * N;
  int* sb = slot_start + (int64)b * (N_out + 1);
  int* mb = members + (int64)b * N;

  if (r == 0) {  // identity (spec): no parity reordering
    for (int i = tid; i < N; i += bd) {
      db[i] = i;
      mb[i] = i;
    }
    for (int s = tid; s <= N; s += bd) sb[s] = s;
    return;
  }

  // Phase 1: best B partner of every A token (warp per row, coalesced over the row).
  for (int a = warp; a < Na; a += warps) {
    float v = 0.0f;
    int i = -1;
    for (int j = lane; j < Nb; j += 32) {
      const float x = S[(int64)a * Nb + j];
      if (i < 0 || x > v) {
        v = x;
        i = j;
      }
    }
    warp_argmax(v, i);
    if (lane == 0) {
      nmax[a] = v;
      nidx[a] = i;
    }
  }
  __syncthreads();
  for (int a = tid; a < Na; a += bd) {
    const float v = nmax[a];
    int cnt = 0;
    for (int o = 0; o < Na; ++o) {
      const float w = nmax[o];
      cnt += (w > v || (w == v && o < a)) ? 1 : 0;
    }
    rank[a] = cnt;
    slot[a] = cnt >= r1 ? 1 : 0;
  }
  __syncthreads();
  block_exclusive_scan(slot, Na, scratch);  // unmerged A tokens before a = a's slot
  for (int a = tid; a < Na; a += bd)
    if (rank[a] >= r1) ulist[slot[a]] = a;
  __syncthreads();

  // Phase 2: B tokens onto the unmerged A tokens (scores gathered in slot order, so nidx2 is a slot).
  if (bidirectional) {
    for (int j = warp; j < Nb; j += warps) {
      float v = 0.0f;
      int i = -1;
      for (int u = lane; u < n_unm; u += 32) {
        const float x = S[(int64)ulist[u] * Nb + j];
        if (i < 0 || x > v) {
          v = x;
          i = u;
        }
      }
      warp_argmax(v, i);
      if (lane == 0) {
        nmax2[j] = v;
        nidx2[j] = i;
      }
    }
    __syncthreads();
    for (int j = tid; j < Nb; j += bd) {
      const float v = nmax2[j];
      int cnt = 0;
      for (int o = 0; o < Nb; ++o) {
        const float w = nmax2[o];
        cnt += (w > v || (w == v && o < j)) ? 1 : 0;
      }
      rank2[j] = cnt;
    }
    __syncthreads();
    for (int j = tid; j < Nb; j += bd) dst[2 * j + 1] = rank2[j] < r2 ? nidx2[j] : n_unm + rank2[j] - r2;
  } else {
    for (int j = tid; j < Nb; j += bd) dst[2 * j + 1] = n_unm + j;
  }
  __syncthreads();
  // A tokens that merged follow their B partner (which may itself have merged into an A token).
  for (int a = tid; a < Na; a += bd) dst[2 * a] = rank[a] >= r1 ? slot[a] : dst[2 * nidx[a] + 1];
  __syncthreads();
  for (int i = tid; i < N; i += bd) db[i] = dst[i];

  // CSR of the groups: counts, exclusive scan, members in increasing token index.
  for (int s = tid; s < N_out; s += bd) {
    int cnt = 0;
    for (int i = 0; i < N; ++i) cnt += dst[i] == s ? 1 : 0;
    start[s] = cnt;
  }
  __syncthreads();
  const int total = block_exclusive_scan(start, N_out, scratch);
  if (tid == 0) start[N_out] = total;
  __syncthreads();
  for (int s = tid; s <= N_out; s += bd) sb[s] = start[s];
  for (int s = tid; s < N_out; s += bd) {
    int k = start[s];
    for (int i = 0; i < N; ++i)
      if (dst[i] == s) mb[k++] = i;
  }
}

extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_merge_f32(const float* x, const float* size, const float* weight, const int* slot_start,
                       const int* members, float* x_out, float* size_out, int N, int N_out, int C, int vec4) {
  merge<float>(x, size, weight, slot_start, members, x_out, size_out, N, N_out, C, vec4);
}
extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_merge_f16(const half_bits* x, const half_bits* size, const float* weight, const int* slot_start,
                       const int* members, half_bits* x_out, half_bits* size_out, int N, int N_out, int C,
                       int vec4) {
  merge<half_bits>(x, size, weight, slot_start, members, x_out, size_out, N, N_out, C, vec4);
}

extern "C" __global__ void __launch_bounds__(256)
    vitrt_tf_copy_f32(const float* x, const float* size, float* x_out, float* size_out, int nx, int ns) {
  copy<float>(x, size, x_out, size_out, nx, ns);
}
extern "C" __global__ void __launch_bounds__(256) vitrt_tf_copy_f16(const half_bits* x, const half_bits* size,
                                                                    half_bits* x_out, half_bits* size_out,
                                                                    int nx, int ns) {
  copy<half_bits>(x, size, x_out, size_out, nx, ns);
}
