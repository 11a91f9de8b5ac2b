// Shared device helpers for vitrt's CUDA kernels (included by plugins/<op>/<op>.cu).
//
// No standard or toolkit headers on purpose: the same sources compile with nvcc (AOT fatbin) and with
// NVRTC at run time (the fallback), where neither <cstdint> nor cuda_fp16.h is guaranteed to be on the
// include path. float16 tensors are therefore handled as their raw 16-bit patterns (unsigned short)
// and converted with the PTX cvt instructions, exactly what cuda_fp16.h does underneath.
//
// The same sources also run on the CPU under plugins/cuda_emulation.h (VITRT_CPU_EMULATION), which
// replaces the two PTX conversions below and the dynamic shared memory declaration; nothing else differs.
//
// Determinism: every reduction below is a fixed shuffle tree or a sequential loop in a fixed order, so
// a kernel gives bit-identical results run to run (no floating-point atomics anywhere in vitrt).
#pragma once

// Dynamic shared memory (the launch's shared_mem bytes) as an array of T named `name`, 16-byte aligned:
// kernels read it with float4 / uint4, and a kernel's static __shared__ variables come first, after which
// `extern T` alone would promise only T's alignment (the emulator's buffer is 16-byte aligned too).
#ifdef VITRT_CPU_EMULATION
#define VITRT_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::vitrt_emu::dynamic_shared())
#else
#define VITRT_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif

// A function kept out of line (a rare path that would bloat every unrolled copy of its caller). Not spelled
// __noinline__ in the emulator: libstdc++ writes __attribute__((__noinline__)), which such a macro would break.
#ifdef VITRT_CPU_EMULATION
#define VITRT_NOINLINE __attribute__((noinline))
#else
#define VITRT_NOINLINE __noinline__
#endif

// Programmatic dependent launch (sm_90 and later; cuda_launcher launches every kernel of a cubin built for
// them this way): a kernel may then be scheduled while the kernel ahead of it in the stream still runs, which
// takes the launch latency between the short kernels of a small batch off the critical path. Each kernel's
// first statement is this prologue: griddepcontrol.wait blocks until every grid it depends on has completed
// and its writes are visible (so no kernel touches memory earlier than with a plain launch), then
// griddepcontrol.launch_dependents lets the next kernel's blocks be scheduled (they wait the same way).
// Elsewhere (older architectures, compute_80 PTX, the CPU emulator) it is nothing, and the launcher does not
// ask for the programmatic launch.
#if !defined(VITRT_CPU_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define VITRT_KERNEL_PROLOGUE() asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory")
#else
#define VITRT_KERNEL_PROLOGUE() ((void)0)
#endif

namespace vitrt {

typedef unsigned short half_bits;  // IEEE binary16 storage
typedef long long int64;

constexpr float kFloatMax = 3.402823466e+38f;       // FLT_MAX
constexpr float kFloatTiny = 1.175494351e-38f;      // FLT_MIN (smallest normal)
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// ---- float16 <-> float32 (round to nearest even, like torch's .to(float16)) ------------------------
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(half_bits h) {
#ifdef VITRT_CPU_EMULATION
  return ::vitrt_emu::half_to_float(h);
#else
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#endif
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ half_bits from_float<half_bits>(float x) {
#ifdef VITRT_CPU_EMULATION
  return ::vitrt_emu::float_to_half_rn(x);
#else
  half_bits h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return h;
#endif
}

// ---- warp reductions (butterfly: every lane ends with the same, order-fixed result) ---------------
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Arg-max over each group of G adjacent lanes (G a power of two <= 32; 32: the whole warp) with
// torch.max's tie rule: the largest value, and among equal values the smallest index. (value, index)
// pairs with index < 0 are empty slots and never win. Every lane of the warp must call it.
template <int G = 32>
__device__ __forceinline__ void group_argmax(float& v, int& i) {
  static_assert(G > 0 && G <= 32 && (G & (G - 1)) == 0, "G: a power of two <= 32");
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFullMask, v, o);
    const int oi = __shfl_xor_sync(kFullMask, i, o);
    const bool take = oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i));
    if (take) {
      v = ov;
      i = oi;
    }
  }
}

// Block-wide max of one value per thread; `scratch` holds >= 32 floats of shared memory. All threads
// get the result. Max is exact, so the result does not depend on the reduction order anyway.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < warps ? scratch[lane] : neg_inf();
  r = warp_max(r);
  return r;
}

// ---- one divisor, many quotients: a[u] / b with IEEE round to nearest, from one reciprocal ----------------
// nvcc compiles each a / b (div.rn.f32) to a fast path and a slow one: y0 = rcp.approx(b); y = y0 + y0 (1 -
// b y0) (two fmas); q = a y; q' = q + y (a - b q) (two fmas), taken when FCHK finds a and b in the range
// where it is exact, else a subroutine. y depends on b alone, yet every division recomputes it and checks
// (about ten instructions). division_reciprocal(b) is that y, once for many quotients; divide_by(a, b, y)
// runs the rest of the fast path, the same instructions on the same values, so the same bits, where |b| in
// [2^-40, 2^40) and every |a| in [2^-60, 2^60) (far inside FCHK's range: q and the residual stay normal),
// and a / b otherwise (zero, tiny, huge, infinite or NaN values): three instructions a value.
// The CPU emulator has no bit-exact model of rcp.approx and takes y0 = 1 / b rounded to nearest; the fast
// path from that y0 gave the division's bits for every mantissa of a against 8192 mantissas of b, every
// mantissa of b against 4096 of a, at the range's corners and for 10^9 random pairs (1.1e11 pairs in all,
// benchmarks/results/workstation-2026-11-27-same-bits/division_check.c).
__device__ __forceinline__ float division_reciprocal(float b) {
  float y0;
#ifdef VITRT_CPU_EMULATION
  y0 = 1.0f / b;
#else
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y0) : "f"(b));
#endif
  return fmaf(y0, fmaf(-b, y0, 1.0f), y0);
}

template <int V>
__device__ __forceinline__ void divide_by(float (&a)[V], float b, float y) {
  float lo = fabsf(a[0]), hi = lo;
#pragma unroll
  for (int u = 1; u < V; ++u) {
    lo = fminf(lo, fabsf(a[u]));
    hi = fmaxf(hi, fabsf(a[u]));
  }
  // NaN never passes the comparisons below (fminf / fmaxf drop a NaN a[u], but its q is NaN either way).
  if (lo >= 0x1p-60f && hi < 0x1p60f && fabsf(b) >= 0x1p-40f && fabsf(b) < 0x1p40f) {
#pragma unroll
    for (int u = 0; u < V; ++u) {
      const float q = __fmul_rn(a[u], y);
      a[u] = fmaf(y, fmaf(-b, q, a[u]), q);
    }
  } else {
#pragma unroll
    for (int u = 0; u < V; ++u) a[u] = a[u] / b;
  }
}

// ---- tensor cores: D += A B for one warp, m16n8k16, float16 inputs, float32 accumulation ---------------
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with g = lane / 4
// and t = lane % 4; every register holds two float16 with the lower column / row index in its low half:
//   a[0] = A[g][2t, 2t+1]      a[1] = A[g+8][2t, 2t+1]     a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]      b[1] = B[2t+8, 2t+9][g]     (B is K x N: column g of B, two rows)
//   d[0] = D[g][2t]  d[1] = D[g][2t+1]  d[2] = D[g+8][2t]  d[3] = D[g+8][2t+1]
// The products are exact in float32; the order of the additions is the hardware's. The CPU emulator
// computes the same products from the same fragments, read from the other lanes after one barrier.
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#ifdef VITRT_CPU_EMULATION
  struct Frag {
    unsigned a[4], b[2];
  };
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const auto all = ::vitrt_emu::share(kFullMask, Frag{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}});
  auto dot2 = [](unsigned x, unsigned y) {
    return to_float((half_bits)(x & 0xffffu)) * to_float((half_bits)(y & 0xffffu)) +
           to_float((half_bits)(x >> 16)) * to_float((half_bits)(y >> 16));
  };
  for (int k = 0; k < 4; ++k) {  // k: the lane of the quad that holds columns 2k, 2k+1, 2k+8, 2k+9
    const Frag ra = all[4 * g + k], be = all[8 * t + k], bo = all[8 * t + 4 + k];
    d[0] += dot2(ra.a[0], be.b[0]) + dot2(ra.a[2], be.b[1]);
    d[1] += dot2(ra.a[0], bo.b[0]) + dot2(ra.a[2], bo.b[1]);
    d[2] += dot2(ra.a[1], be.b[0]) + dot2(ra.a[3], be.b[1]);
    d[3] += dot2(ra.a[1], bo.b[0]) + dot2(ra.a[3], bo.b[1]);
  }
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ---- ldmatrix: M (2 or 4) 8 x 8 float16 matrices from shared memory into one warp's fragments ----------
// Lane l gives the shared-memory address of row l % 8 of matrix l / 8 (8 contiguous halves, 16-byte
// aligned; lanes 8 M .. 31 give none that is used); r[m] of lane l receives row l / 4 of matrix m, columns
// 2 (l % 4) and 2 (l % 4) + 1 (the lower column in the low half): exactly what 32-bit loads of those two
// halves give, in one instruction per warp instead of M. The CPU emulator reads the same halves through
// the other lanes' addresses after one barrier.
template <int M>
__device__ __forceinline__ void ldmatrix(unsigned (&r)[M], const half_bits* row) {
  static_assert(M == 2 || M == 4, "ldmatrix of 2 or 4 matrices");
#ifdef VITRT_CPU_EMULATION
  const int lane = threadIdx.x & 31;
  const auto all = ::vitrt_emu::share(kFullMask, row);
  for (int m = 0; m < M; ++m) {
    const half_bits* p = all[8 * m + lane / 4] + 2 * (lane % 4);
    r[m] = (unsigned)p[0] | ((unsigned)p[1] << 16);
  }
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (M == 4)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
#endif
}

// Where lane l points ldmatrix for mma_16816's fragments of a float16 tile in shared memory (row pitch `ld`
// halves, rows 16-byte aligned). A: the 16 x 16 tile at `tile`, matrices (rows 0-7 | 8-15) x (columns
// 0-7 | 8-15) in a[0..3]'s order (x4). B: the 8 x 16 tile at `tile` holding B transposed (row n: column n
// of B, its K values contiguous), matrices rows 0-7 x (columns 0-7 | 8-15), b[0..1] (x2).
__device__ __forceinline__ const half_bits* a_fragment_row(const half_bits* tile, int ld) {
  const int lane = threadIdx.x & 31;
  return tile + (8 * ((lane >> 3) & 1) + (lane & 7)) * ld + 8 * (lane >> 4);
}
__device__ __forceinline__ const half_bits* b_fragment_row(const half_bits* tile, int ld) {
  const int lane = threadIdx.x & 31;
  return tile + (lane & 7) * ld + 8 * ((lane >> 3) & 1);
}

// ---- cp.async: 16 bytes from global to shared memory with no register round trip (sm_80+) -------------
// Zero-fills the 16 bytes where valid is false (src is then not read but must be a mapped address). The
// copies a thread issues are complete after its cp_async_wait_all; a barrier after that publishes them to
// the block. The CPU emulator copies at once.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
#ifdef VITRT_CPU_EMULATION
  if (valid)
    memcpy(dst, src, 16);
  else
    memset(dst, 0, 16);
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#ifndef VITRT_CPU_EMULATION
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// ---- prefetch: bring the 128-byte line holding p into L2, with no register and no wait -----------------------
// For rows a block will read after a barrier: their later loads then wait on L2, not DRAM. A hint: the CPU
// emulator ignores it.
__device__ __forceinline__ void prefetch_l2(const void* p) {
#ifndef VITRT_CPU_EMULATION
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}

// 2^x by the SFU (ex2.approx: a relative error near 2^-22, no denormals); exp2f on the CPU emulator.
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef VITRT_CPU_EMULATION
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// Monotone map of a float32 onto uint32 (a < b  <=>  key(a) < key(b)), with -0.0 folded onto +0.0
// so that equal values get equal keys (the stable sorts then order them by index, as torch does).
__device__ __forceinline__ unsigned order_key(float x) {
  unsigned u = __float_as_uint(x == 0.0f ? 0.0f : x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

}  // namespace vitrt
