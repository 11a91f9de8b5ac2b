// CUDA kernels of the ScatterbrainAttention op: ground truth plugins/lsh_attention/reference.py, contract
// plugins/lsh_attention/spec.py. Launched by plugins/lsh_attention/cuda.py, in order:
//
//   1. vitrt_sb_stats_<dt>     grid (chunks, BH)   per-chunk maxima of |q|^2, |k|^2 and the key features'
//                                                  log values (XBOX+ needs MQ + MK, FAVOR+ needs log_k)
//   2. vitrt_sb_features_<dt>  grid (chunks, BH)   hashes of every round (SCATTERBRAIN, LSH); q', k', pls
//                                                  and the chunk's partial k'^T [v, 1] (SCATTERBRAIN,
//                                                  PERFORMER)
//   3. vitrt_sb_kv_reduce      grid (BH)           low-rank state kv = k'^T v and sum k' (chunk order)
//   4. vitrt_sb_sort           grid (2R, BH)       stable argsort of every round's query / key hashes
//                                                  (bitonic sort of unique (value, index) keys in shared
//                                                  memory) -> permutations and their inverses
//   5. vitrt_sb_cluster_<dt>   grid (clusters/G, R, BH)  dense attention inside G clusters of one round,
//                                                  with the duplicate-pair count and the low-rank
//                                                  correction; per-round rows in sorted (slot) order
//   6. vitrt_sb_combine_<dt>   grid (N/QPB, BH)    rounds combined in log domain + the low-rank term,
//                                                  clamped denominator, cast to the output dtype
//
// Modes (spec.Mode): 0 SCATTERBRAIN runs 1-6; 1 LSH runs 1 (norms only), 2, 4, 5, 6; 2 PERFORMER runs
// 1, 2, 3, 6. Layouts: q, k [BH, N, E]; v, out [BH, N, Dv] (dtype <dt>: f32, or f16 as raw bits);
// hash_vectors [R, E + 2] and projection [m, E] float32; everything else float32 (int32 indices) in the
// workspace; P = N padded to a multiple of the cluster size c (tokens >= N are zero rows: padding).
//
// Determinism: no atomics; every sum runs in a fixed order (chunked sums are added in chunk order), so
// results are bitwise reproducible run to run.

#include "cuda_common.cuh"

using namespace vitrt;

namespace {

constexpr int kScatterbrain = 0, kLsh = 1, kPerformer = 2;

__device__ __forceinline__ int odd_stride(int n) { return n | 1; }  // conflict-free shared rows

// Loads row `t` of a [*, width] tensor into shared memory as float32; rows >= n_real are padding (0).
template <typename T>
__device__ __forceinline__ float load_row_sq(const T* __restrict__ base, int t, int n_real, int width,
                                             float* __restrict__ dst, int lane) {
  float ss = 0.0f;
  for (int e = lane; e < width; e += 32) {
    const float x = t < n_real ? to_float(base[(int64)t * width + e]) : 0.0f;
    dst[e] = x;
    ss = fmaf(x, x, ss);
  }
  return warp_sum(ss);
}

template <typename T>
__device__ void stats(const T* __restrict__ q, const T* __restrict__ k, const float* __restrict__ proj,
                      float* __restrict__ stat_part, int N, int E, int m, float root, float rr, float log_norm,
                      int chunk, int n_tok, int nchunk) {
  VITRT_DYNAMIC_SHARED(float, sm);
  __shared__ float scratch[32];
  const int ch = blockIdx.x, bh = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int ws = odd_stride(E);
  float* w = sm;                        // [m][ws] projection * sqrt(scale)
  float* rows = w + m * ws;             // [warps][E] this warp's key row
  for (int i = threadIdx.x; i < m * E; i += blockDim.x) w[(i / E) * ws + i % E] = proj[i] * root;
  __syncthreads();
  const T* qb = q + (int64)bh * N * E;
  const T* kb = k + (int64)bh * N * E;
  float* row = rows + warp * E;
  float mq = neg_inf(), mk = neg_inf(), mf = neg_inf();
  const int t1 = min((ch + 1) * chunk, n_tok);
  for (int t = ch * chunk + warp; t < t1; t += warps) {
    float qsq = 0.0f;
    for (int e = lane; e < E; e += 32) {
      const float x = t < N ? to_float(qb[(int64)t * E + e]) : 0.0f;
      qsq = fmaf(x, x, qsq);
    }
    qsq = warp_sum(qsq);
    const float ksq = load_row_sq(kb, t, N, E, row, lane);
    __syncwarp();
    float fmax_ = neg_inf();
    const float kdiag = ksq / 2.0f * rr;
    for (int f = lane; f < m; f += 32) {
      float d = 0.0f;
      for (int e = 0; e < E; ++e) d = fmaf(row[e], w[f * ws + e], d);
      fmax_ = fmaxf(fmax_, fmaxf((d - kdiag) - log_norm, (-d - kdiag) - log_norm));
    }
    fmax_ = warp_max(fmax_);
    __syncwarp();
    mq = fmaxf(mq, qsq);
    mk = fmaxf(mk, ksq);
    mf = fmaxf(mf, fmax_);
  }
  mq = block_max(mq, scratch);
  mk = block_max(mk, scratch);
  mf = block_max(mf, scratch);
  if (threadIdx.x == 0) {
    float* out = stat_part + ((int64)bh * nchunk + ch) * 3;
    out[0] = mq;
    out[1] = mk;
    out[2] = mf;
  }
}

template <typename T>
__device__ void features(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const float* __restrict__ hv, const float* __restrict__ proj,
                         const float* __restrict__ stat_part, float* __restrict__ hq, float* __restrict__ hk,
                         float* __restrict__ qf, float* __restrict__ kf, float* __restrict__ pls,
                         float* __restrict__ kv_part, int N, int P, int E, int Dv, int R, int m, float root,
                         float rr, float log_norm, int chunk, int n_tok, int nchunk, int mode) {
  VITRT_DYNAMIC_SHARED(float, sm);
  __shared__ float st[3];
  const int ch = blockIdx.x, bh = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int F = 2 * m, ws = odd_stride(E), hs = odd_stride(E + 2);
  const bool sparse = mode != kPerformer, low_rank = mode != kLsh;
  float* w = sm;                           // [m][ws]
  float* h = w + m * ws;                   // [R][hs]
  float* rows = h + R * hs;                // [warps][2][E]
  float* fbuf = rows + warps * 2 * E;      // [warps][F]
  float* kp = fbuf + warps * F;            // [chunk][F] this chunk's k'
  float* vt = kp + chunk * F;              // [chunk][Dv] this chunk's v

  if (warp == 0) {  // per-(b, h) statistics from the per-chunk maxima of vitrt_sb_stats
    float a = neg_inf(), b = neg_inf(), c = neg_inf();
    for (int i = lane; i < nchunk; i += 32) {
      const float* s = stat_part + ((int64)bh * nchunk + i) * 3;
      a = fmaxf(a, s[0]);
      b = fmaxf(b, s[1]);
      c = fmaxf(c, s[2]);
    }
    a = warp_max(a);
    b = warp_max(b);
    c = warp_max(c);
    if (lane == 0) {
      st[0] = a + b;  // MQ + MK: every XBOX+ vector's squared norm
      st[1] = c;      // log_k
    }
  }
  for (int i = threadIdx.x; i < m * E; i += blockDim.x) w[(i / E) * ws + i % E] = proj[i] * root;
  for (int i = threadIdx.x; i < R * (E + 2); i += blockDim.x) h[(i / (E + 2)) * hs + i % (E + 2)] = hv[i];
  const int t0 = ch * chunk, t1 = min(t0 + chunk, n_tok);
  if (low_rank)
    for (int i = threadIdx.x; i < (t1 - t0) * Dv; i += blockDim.x) {
      const int t = t0 + i / Dv;
      vt[i] = t < N ? to_float(v[((int64)bh * N + t) * Dv + i % Dv]) : 0.0f;
    }
  __syncthreads();
  const float total = st[0], k_log = st[1];
  const T* qb = q + (int64)bh * N * E;
  const T* kb = k + (int64)bh * N * E;
  float* qrow = rows + warp * 2 * E;
  float* krow = qrow + E;
  float* fb = fbuf + warp * F;

  for (int t = t0 + warp; t < t1; t += warps) {
    const bool real = t < N;
    const float qsq = load_row_sq(qb, t, N, E, qrow, lane);
    const float ksq = load_row_sq(kb, t, N, E, krow, lane);
    __syncwarp();
    if (sparse) {
      // XBOX+: q -> [q, 0, sqrt(MQ + MK - |q|^2)], k -> [k, sqrt(MQ + MK - |k|^2), 0]; hash = x . hv[r].
      const float q_ext = sqrtf(fmaxf(total - qsq, 0.0f)), k_ext = sqrtf(fmaxf(total - ksq, 0.0f));
      for (int r = lane; r < R; r += 32) {
        const float* hr = h + r * hs;
        float a = 0.0f, b = 0.0f;
        for (int e = 0; e < E; ++e) {
          a = fmaf(qrow[e], hr[e], a);
          b = fmaf(krow[e], hr[e], b);
        }
        a = fmaf(q_ext, hr[E + 1], a);
        b = fmaf(k_ext, hr[E], b);
        const int64 o = ((int64)bh * R + r) * P + t;
        hq[o] = real ? a : pos_inf();  // padding sorts last
        hk[o] = real ? b : pos_inf();
      }
    }
    if (low_rank) {
      // FAVOR+ with both signs: q' = exp([wq, -wq] - max), log_q = max - t|q|^2/2 - log(2m)/2;
      // k' = exp([wk, -wk] - t|k|^2/2 - log(2m)/2 - log_k) (0 on padding); pls = log_q + log_k.
      float qmax = neg_inf();
      for (int f = lane; f < m; f += 32) {
        float d = 0.0f;
        for (int e = 0; e < E; ++e) d = fmaf(qrow[e], w[f * ws + e], d);
        fb[f] = d;
        fb[m + f] = -d;
        qmax = fmaxf(qmax, fmaxf(d, -d));
      }
      qmax = warp_max(qmax);
      __syncwarp();
      const int64 o = ((int64)bh * P + t) * F;
      for (int f = lane; f < F; f += 32) qf[o + f] = expf(fb[f] - qmax);
      if (lane == 0) pls[(int64)bh * P + t] = ((qmax - qsq / 2.0f * rr) - log_norm) + k_log;
      __syncwarp();
      const float kdiag = ksq / 2.0f * rr;
      for (int f = lane; f < m; f += 32) {
        float d = 0.0f;
        for (int e = 0; e < E; ++e) d = fmaf(krow[e], w[f * ws + e], d);
        const float kp_pos = real ? expf(((d - kdiag) - log_norm) - k_log) : 0.0f;
        const float kp_neg = real ? expf(((-d - kdiag) - log_norm) - k_log) : 0.0f;
        kf[o + f] = kp_pos;
        kf[o + m + f] = kp_neg;
        kp[(t - t0) * F + f] = kp_pos;
        kp[(t - t0) * F + m + f] = kp_neg;
      }
    }
    __syncwarp();
  }
  if (!low_rank) return;
  __syncthreads();
  // This chunk's k'^T [v, 1]: column Dv holds sum k'. Summed in token order.
  const int L = F * (Dv + 1), n = t1 - t0;
  for (int o = threadIdx.x; o < L; o += blockDim.x) {
    const int f = o / (Dv + 1), d = o % (Dv + 1);
    float acc = 0.0f;
    for (int t = 0; t < n; ++t) acc = fmaf(kp[t * F + f], d < Dv ? vt[t * Dv + d] : 1.0f, acc);
    kv_part[((int64)bh * nchunk + ch) * L + o] = acc;
  }
}

template <typename T>
__device__ void cluster_attention(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                  const float* __restrict__ qf, const float* __restrict__ kf,
                                  const float* __restrict__ pls, const int* __restrict__ q_perm,
                                  const int* __restrict__ q_inv, const int* __restrict__ k_perm,
                                  const int* __restrict__ k_inv, float* __restrict__ rnum,
                                  float* __restrict__ raux, int N, int P, int E, int Dv, int R, int F, int c,
                                  int G, float scale, int mode) {
  VITRT_DYNAMIC_SHARED(float, sm);
  const int r = blockIdx.y, bh = blockIdx.z;
  const int nclus = P / c, g0 = blockIdx.x * G, QB = min(G, nclus - g0) * c, s0 = g0 * c;
  const bool sb = mode == kScatterbrain;
  const int es = odd_stride(E), fs = odd_stride(F), cs = odd_stride(c);
  float* qs = sm;                                        // [QB][es] queries of the clusters
  float* ks = qs + QB * es;                              // [QB][es] keys
  float* vs = ks + QB * es;                              // [QB][Dv] values
  float* qfs = vs + QB * Dv;                             // [QB][fs] q'   (SCATTERBRAIN)
  float* kfs = qfs + (sb ? QB * fs : 0);                 // [QB][fs] k'   (SCATTERBRAIN)
  float* sc = kfs + (sb ? QB * fs : 0);                  // [QB][cs] logits, then weights
  float* lr = sc + QB * cs;                              // [QB][cs] low-rank estimate (SCATTERBRAIN)
  float* qpl = lr + (sb ? QB * cs : 0);                  // [QB] pls of the query
  float* rowm = qpl + QB;                                // [QB] M (SCATTERBRAIN) or logsumexp (LSH)
  float* rows = rowm + QB;                               // [QB] row sum (SCATTERBRAIN)
  int* qidx = reinterpret_cast<int*>(rows + QB);         // [QB] token of each query slot
  int* kidx = qidx + QB;                                 // [QB] token of each key slot
  int* qbk = kidx + QB;                                  // [R][QB] query bucket in every round
  int* kbk = qbk + (sb ? R * QB : 0);                    // [R][QB] key bucket in every round
  const int64 perm0 = ((int64)bh * R + r) * P + s0;

  for (int t = threadIdx.x; t < QB; t += blockDim.x) {
    const int qi = q_perm[perm0 + t], kj = k_perm[perm0 + t];
    qidx[t] = qi;
    kidx[t] = kj;
    if (sb) {
      qpl[t] = pls[(int64)bh * P + qi];
      for (int r2 = 0; r2 < R; ++r2) {
        qbk[r2 * QB + t] = q_inv[((int64)bh * R + r2) * P + qi] / c;
        kbk[r2 * QB + t] = k_inv[((int64)bh * R + r2) * P + kj] / c;
      }
    }
  }
  __syncthreads();
  const T* qb = q + (int64)bh * N * E;
  const T* kb = k + (int64)bh * N * E;
  const T* vb = v + (int64)bh * N * Dv;
  for (int i = threadIdx.x; i < QB * E; i += blockDim.x) {
    const int t = i / E, e = i % E, qi = qidx[t], kj = kidx[t];
    qs[t * es + e] = qi < N ? to_float(qb[(int64)qi * E + e]) : 0.0f;
    ks[t * es + e] = kj < N ? to_float(kb[(int64)kj * E + e]) : 0.0f;
  }
  for (int i = threadIdx.x; i < QB * Dv; i += blockDim.x) {
    const int t = i / Dv, kj = kidx[t];
    vs[i] = kj < N ? to_float(vb[(int64)kj * Dv + i % Dv]) : 0.0f;
  }
  if (sb)
    for (int i = threadIdx.x; i < QB * F; i += blockDim.x) {
      const int t = i / F, f = i % F;
      qfs[t * fs + f] = qf[((int64)bh * P + qidx[t]) * F + f];
      kfs[t * fs + f] = kf[((int64)bh * P + kidx[t]) * F + f];  // 0 on padded keys
    }
  __syncthreads();

  // Logits t q.k (padded keys masked), minus log(count) and low-rank estimate / count (SCATTERBRAIN):
  // count = rounds in which the pair shares a cluster, so a pair contributes once overall.
  for (int p = threadIdx.x; p < QB * c; p += blockDim.x) {
    const int t = p / c, j = p % c, u = (t / c) * c + j;
    float dot = 0.0f;
    for (int e = 0; e < E; ++e) dot = fmaf(qs[t * es + e], ks[u * es + e], dot);
    const bool padded = kidx[u] >= N;
    float s = padded ? -kFloatMax : dot * scale;
    if (sb) {
      float l = 0.0f;
      if (!padded)
        for (int f = 0; f < F; ++f) l = fmaf(qfs[t * fs + f], kfs[u * fs + f], l);
      if (R > 1) {
        int cnt = 0;
        for (int r2 = 0; r2 < R; ++r2) cnt += qbk[r2 * QB + t] == kbk[r2 * QB + u] ? 1 : 0;
        s = s - logf((float)cnt);
        l = l / (float)cnt;
      }
      lr[t * cs + j] = l;
    }
    sc[t * cs + j] = s;
  }
  __syncthreads();

  for (int t = threadIdx.x; t < QB; t += blockDim.x) {
    float* srow = sc + t * cs;
    float mx = neg_inf();
    for (int j = 0; j < c; ++j) mx = fmaxf(mx, srow[j]);
    if (sb) {
      // M bounds exp(s - M) and exp(pls - M) by 1: dots = exp(s - M) - lr exp(pls - M).
      const float M = fmaxf(mx, qpl[t]), e_pl = expf(qpl[t] - M);
      float sum = 0.0f;
      for (int j = 0; j < c; ++j) {
        const float d = expf(srow[j] - M) - lr[t * cs + j] * e_pl;
        srow[j] = d;
        sum += d;
      }
      rowm[t] = M;
      rows[t] = sum;
    } else {
      // LSH: softmax inside the cluster, logsumexp kept for the round weights.
      float se = 0.0f;
      for (int j = 0; j < c; ++j) se += expf(srow[j] - mx);
      const float lse = logf(se) + mx;
      for (int j = 0; j < c; ++j) srow[j] = expf(srow[j] - lse);
      rowm[t] = lse;
    }
  }
  __syncthreads();

  for (int i = threadIdx.x; i < QB * Dv; i += blockDim.x) {
    const int t = i / Dv, d = i % Dv;
    if (qidx[t] >= N) continue;  // padded queries are dropped
    const float* srow = sc + t * cs;
    const float* vcol = vs + (t / c) * c * Dv + d;
    float acc = 0.0f;
    for (int j = 0; j < c; ++j) acc = fmaf(srow[j], vcol[j * Dv], acc);
    rnum[(perm0 + t) * Dv + d] = acc;
  }
  for (int t = threadIdx.x; t < QB; t += blockDim.x) {
    if (qidx[t] >= N) continue;
    raux[(perm0 + t) * 2] = sb ? rows[t] : 0.0f;
    raux[(perm0 + t) * 2 + 1] = rowm[t];
  }
}

template <typename T>
__device__ void combine(const float* __restrict__ qf, const float* __restrict__ pls, const float* __restrict__ kv,
                        const int* __restrict__ q_inv, const float* __restrict__ rnum,
                        const float* __restrict__ raux, T* __restrict__ out, int N, int P, int Dv, int R, int F,
                        int qpb, int mode) {
  VITRT_DYNAMIC_SHARED(float, sm);
  const int bh = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const bool low_rank = mode != kLsh;
  const int L = F * (Dv + 1);
  float* kvs = sm;                          // [F][Dv + 1] low-rank state (column Dv: sum k')
  float* qbuf = kvs + (low_rank ? L : 0);   // [warps][F] this warp's q'
  if (low_rank)
    for (int i = threadIdx.x; i < L; i += blockDim.x) kvs[i] = kv[(int64)bh * L + i];
  __syncthreads();
  float* qw = qbuf + warp * F;
  const int i1 = min(N, (blockIdx.x + 1) * qpb);
  for (int i = blockIdx.x * qpb + warp; i < i1; i += warps) {
    T* o = out + ((int64)bh * N + i) * Dv;
    float lrs = 0.0f;
    if (low_rank) {
      for (int f = lane; f < F; f += 32) qw[f] = qf[((int64)bh * P + i) * F + f];
      __syncwarp();
      for (int f = 0; f < F; ++f) lrs = fmaf(qw[f], kvs[f * (Dv + 1) + Dv], lrs);
    }
    if (mode == kPerformer) {
      // q'(k'^T v) / max(q' . sum k', FLT_MIN): the exp(pls) factor cancels.
      const float den = fmaxf(lrs, kFloatTiny);
      for (int d = lane; d < Dv; d += 32) {
        float lr = 0.0f;
        for (int f = 0; f < F; ++f) lr = fmaf(qw[f], kvs[f * (Dv + 1) + d], lr);
        o[d] = from_float<T>(lr / den);
      }
    } else {
      // Round weights in log domain: L = logsumexp_r M_r, w_r = exp(M_r - L) (SCATTERBRAIN), or
      // w_r = softmax_r(logsumexp of round r's logits) (LSH).
      float mx = neg_inf();
      for (int r = 0; r < R; ++r) {
        const int slot = q_inv[((int64)bh * R + r) * P + i];
        mx = fmaxf(mx, raux[(((int64)bh * R + r) * P + slot) * 2 + 1]);
      }
      float se = 0.0f;
      for (int r = 0; r < R; ++r) {
        const int slot = q_inv[((int64)bh * R + r) * P + i];
        se += expf(raux[(((int64)bh * R + r) * P + slot) * 2 + 1] - mx);
      }
      const float lse = logf(se) + mx;
      float den = 0.0f, lrw = 0.0f;
      if (mode == kScatterbrain) {
        for (int r = 0; r < R; ++r) {
          const int64 row = ((int64)bh * R + r) * P + q_inv[((int64)bh * R + r) * P + i];
          den += raux[row * 2] * expf(raux[row * 2 + 1] - lse);
        }
        lrw = expf(pls[(int64)bh * P + i] - lse);
        den = fmaxf(den + lrs * lrw, 1e-6f);  // spec.DENOMINATOR_MIN, in units of exp(L)
      }
      for (int d = lane; d < Dv; d += 32) {
        float num = 0.0f;
        for (int r = 0; r < R; ++r) {
          const int64 row = ((int64)bh * R + r) * P + q_inv[((int64)bh * R + r) * P + i];
          const float m = raux[row * 2 + 1];
          const float wr = mode == kScatterbrain ? expf(m - lse) : expf(m - mx) / se;
          num += rnum[row * Dv + d] * wr;
        }
        if (mode == kScatterbrain) {
          float lr = 0.0f;
          for (int f = 0; f < F; ++f) lr = fmaf(qw[f], kvs[f * (Dv + 1) + d], lr);
          num = (num + lr * lrw) / den;
        }
        o[d] = from_float<T>(num);
      }
    }
    __syncwarp();
  }
}

}  // namespace

// ---- entry points (extern "C": looked up by name from Python) --------------------------------------

#define VITRT_SB_ENTRIES(SUFFIX, T)                                                                        \
  extern "C" __global__ void __launch_bounds__(256)                                                       \
      vitrt_sb_stats_##SUFFIX(const T* q, const T* k, const float* proj, float* stat_part, int N, int E,   \
                              int m, float root, float rr, float log_norm, int chunk, int n_tok,           \
                              int nchunk) {                                                                \
    stats<T>(q, k, proj, stat_part, N, E, m, root, rr, log_norm, chunk, n_tok, nchunk);                    \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(256) vitrt_sb_features_##SUFFIX(                            \
      const T* q, const T* k, const T* v, const float* hv, const float* proj, const float* stat_part,      \
      float* hq, float* hk, float* qf, float* kf, float* pls, float* kv_part, int N, int P, int E, int Dv,  \
      int R, int m, float root, float rr, float log_norm, int chunk, int n_tok, int nchunk, int mode) {    \
    features<T>(q, k, v, hv, proj, stat_part, hq, hk, qf, kf, pls, kv_part, N, P, E, Dv, R, m, root, rr,  \
                log_norm, chunk, n_tok, nchunk, mode);                                                     \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(256) vitrt_sb_cluster_##SUFFIX(                             \
      const T* q, const T* k, const T* v, const float* qf, const float* kf, const float* pls,              \
      const int* q_perm, const int* q_inv, const int* k_perm, const int* k_inv, float* rnum, float* raux,  \
      int N, int P, int E, int Dv, int R, int F, int c, int G, float scale, int mode) {                    \
    cluster_attention<T>(q, k, v, qf, kf, pls, q_perm, q_inv, k_perm, k_inv, rnum, raux, N, P, E, Dv, R,   \
                         F, c, G, scale, mode);                                                            \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(256) vitrt_sb_combine_##SUFFIX(                             \
      const float* qf, const float* pls, const float* kv, const int* q_inv, const float* rnum,             \
      const float* raux, T* out, int N, int P, int Dv, int R, int F, int qpb, int mode) {                  \
    combine<T>(qf, pls, kv, q_inv, rnum, raux, out, N, P, Dv, R, F, qpb, mode);                            \
  }

VITRT_SB_ENTRIES(f32, float)
VITRT_SB_ENTRIES(f16, half_bits)

// kv[bh] = sum over chunks (in chunk order) of kv_part[bh, chunk]: [F, Dv + 1] per (b, h).
extern "C" __global__ void __launch_bounds__(256)
    vitrt_sb_kv_reduce(const float* __restrict__ kv_part, float* __restrict__ kv, int L, int nchunk) {
  const int bh = blockIdx.x;
  for (int o = threadIdx.x; o < L; o += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < nchunk; ++i) acc += kv_part[((int64)bh * nchunk + i) * L + o];
    kv[(int64)bh * L + o] = acc;
  }
}

// Stable ascending argsort of one round's hashes (block x: side * R + r, side 0 = queries, 1 = keys):
// bitonic sort of the unique keys (order_key(hash) << 32 | index) in P2 = next power of two >= P
// entries of dynamic shared memory (8 * P2 bytes); ties therefore keep index order, as
// reference.stable_argsort does. Writes the permutation (sorted slot -> token) and its inverse.
extern "C" __global__ void __launch_bounds__(1024)
    vitrt_sb_sort(const float* __restrict__ hq, const float* __restrict__ hk, int* __restrict__ q_perm,
                  int* __restrict__ q_inv, int* __restrict__ k_perm, int* __restrict__ k_inv, int P, int P2,
                  int R) {
  VITRT_DYNAMIC_SHARED(unsigned long long, keys);
  const int side = blockIdx.x / R, r = blockIdx.x % R, bh = blockIdx.y;
  const int64 o = ((int64)bh * R + r) * P;
  const float* h = (side ? hk : hq) + o;
  int* perm = (side ? k_perm : q_perm) + o;
  int* inv = (side ? k_inv : q_inv) + o;
  for (int i = threadIdx.x; i < P2; i += blockDim.x)
    keys[i] = i < P ? (((unsigned long long)order_key(h[i])) << 32) | (unsigned)i : ~0ull;
  __syncthreads();
  for (int size = 2; size <= P2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < P2; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const unsigned long long a = keys[i], b = keys[j];
          const bool ascending = (i & size) == 0;
          if ((a > b) == ascending) {
            keys[i] = b;
            keys[j] = a;
          }
        }
      }
      __syncthreads();
    }
  }
  for (int s = threadIdx.x; s < P; s += blockDim.x) {
    const int t = (int)(keys[s] & 0xffffffffull);
    perm[s] = t;
    inv[t] = s;
  }
}
