// The CUDA execution model on the CPU, for running vitrt's kernels where there is no GPU (CI, laptops).
//
// plugins/cuda_emulation.py compiles an op's .cu source with the host C++ compiler, this header
// force-included (-include), into a shared library whose vitrt_emu_launch() runs one kernel launch:
// every block of the grid in turn, every thread of the block as a fiber (ucontext) on one OS thread.
// Fibers switch only at synchronisation points, so what the kernels' own code computes is exactly what
// their source says; what a GPU would do differently is only rounding (the host compiler's expf / logf /
// powf, and no fma contraction: -ffp-contract=off) and scheduling, which is the point of the checks:
//
// * __syncthreads() waits for every thread of the block that has not exited;
// * warp operations (__shfl_*_sync, __ballot_sync, __syncwarp) must be reached by all 32 lanes of the
//   warp (vitrt uses the full mask only); a warp operation that a lane of the warp has left by exiting
//   is an error, as is any partial mask;
// * a block in which no thread can make progress (divergent barriers) is an error naming the threads;
// * blocks alternate between running their threads in increasing and decreasing order, so a missing
//   __syncthreads() that lets a thread read shared data before another thread writes it changes the
//   results whichever of the two runs first;
// * dynamic shared memory is filled with 0xff bytes before every block (NaN as float, -1 as int), so a
//   read of shared memory nothing wrote shows up in the results;
// * more dynamic shared memory than kMaxSharedOptin is refused, as the smallest target GPU would.
//
// Not modelled: true concurrency (no two threads run at once, so a race shows up only through the two
// orders above), memory outside the launch's buffers, static __shared__ variables (not poisoned), and
// warp-level lock-step beyond the synchronising operations.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define VITRT_CPU_EMULATION 1

// ---- CUDA C++ vocabulary -----------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// A block's threads run one after another on one OS thread and blocks run in turn, so a function-scope
// static is exactly one block's shared variable.
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }

// clock64(): the SM's cycle counter on a GPU; here nanoseconds of a monotonic clock. Only differences
// within one launch mean anything, and emulated durations say nothing about a GPU's.
inline long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CUDA's integer min / max, including the mixed signed / unsigned overloads (common type, as in CUDA).
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

namespace vitrt_emu {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 1024;
// The smallest opt-in dynamic shared memory per block among vitrt's build targets (CUDA C++ Programming
// Guide, technical specifications: compute capability 12.x allows 99 KB, 8.7 163 KB, 9.0 / 10.x 227 KB).
constexpr size_t kMaxSharedOptin = 99 * 1024;
constexpr size_t kStackBytes = 256 * 1024;

enum class State { kReady, kBlockBarrier, kWarpBarrier, kDone };

struct Fiber {
  ucontext_t ctx;
  dim3 tid;
  int linear = 0;
  State state = State::kDone;
  unsigned warp_ops = 0;  // warp operations this lane has done (picks the exchange buffer)
  char* stack = nullptr;
};

inline size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Dynamic shared memory placed so that it ends at a PROT_NONE page: a write past the bytes the launch
// asked for crashes at once instead of corrupting the heap.
class GuardedBuffer {
 public:
  GuardedBuffer() = default;
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  ~GuardedBuffer() { release(); }
  bool allocate(size_t bytes) {
    release();
    const size_t page = page_size(), body = (bytes + page - 1) / page * page;
    void* p = mmap(nullptr, body + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    base_ = static_cast<unsigned char*>(p);
    mapped_ = body + page;
    mprotect(base_ + body, page, PROT_NONE);
    bytes_ = bytes;
    data_ = base_ + body - (bytes + 15) / 16 * 16;  // 16-byte aligned, at most 15 bytes of slack
    return true;
  }
  void poison() { memset(data_, 0xff, bytes_); }
  unsigned char* data() const { return data_; }

 private:
  void release() {
    if (base_ != nullptr) munmap(base_, mapped_);
    base_ = data_ = nullptr;
  }
  unsigned char *base_ = nullptr, *data_ = nullptr;
  size_t mapped_ = 0, bytes_ = 0;
};

constexpr int kBlobBytes = 32;

struct WarpState {
  int live = 0, arrived = 0;
  uint64_t slots[2][kWarp];
  unsigned char blobs[2][kWarp][kBlobBytes];  // share(): up to 32 bytes per lane
};

struct Launch {
  dim3 grid, block, block_idx;
  int threads = 0, live = 0, arrived = 0;
  std::vector<Fiber> fibers;
  std::vector<char*> stacks;  // kept across launches
  std::vector<WarpState> warps;
  GuardedBuffer dynamic_shared;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  void (*entry)(void**) = nullptr;
  void** params = nullptr;
  std::string error;
};

inline Launch& state() {
  static Launch launch;
  return launch;
}

inline Fiber& current() { return *state().current; }

inline std::string where(const Fiber& f) {
  char buf[64];
  snprintf(buf, sizeof buf, "thread (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z);
  return buf;
}

// Back to the scheduler; returns when this fiber is resumed.
inline void yield() {
  Launch& L = state();
  Fiber& f = *L.current;
  swapcontext(&f.ctx, &L.scheduler);
}

[[noreturn]] inline void fail(const std::string& what) {
  Launch& L = state();
  char buf[96];
  snprintf(buf, sizeof buf, " (block (%u,%u,%u), ", L.block_idx.x, L.block_idx.y, L.block_idx.z);
  L.error = what + buf + where(*L.current) + ")";
  for (;;) yield();  // never resumed: the scheduler stops the launch
}

inline void sync_block() {
  Launch& L = state();
  if (++L.arrived == L.live) {
    L.arrived = 0;
    for (Fiber& f : L.fibers)
      if (f.state == State::kBlockBarrier) f.state = State::kReady;
    return;
  }
  L.current->state = State::kBlockBarrier;
  yield();
}

inline WarpState& warp_of(const Fiber& f) { return state().warps[f.linear / kWarp]; }

inline void sync_warp(unsigned mask) {
  Launch& L = state();
  Fiber& me = *L.current;
  WarpState& w = warp_of(me);
  const int first = me.linear / kWarp * kWarp;
  const int lanes = std::min(kWarp, L.threads - first);
  if (mask != 0xffffffffu || lanes != kWarp)
    fail("warp operation with a partial mask or a partial warp (only full warps are emulated)");
  if (w.live != kWarp) fail("a lane exited before a full-mask warp operation of its warp");
  ++me.warp_ops;
  if (++w.arrived == w.live) {
    w.arrived = 0;
    for (int i = first; i < first + lanes; ++i)
      if (L.fibers[i].state == State::kWarpBarrier) L.fibers[i].state = State::kReady;
    return;
  }
  me.state = State::kWarpBarrier;
  yield();
}

// One exchange: every lane publishes `value`, then reads lane `src` (its own value when src is out of
// range). Two alternating buffers make one barrier per exchange enough: a lane can only overwrite a
// buffer after every lane has passed the next barrier, i.e. has read it.
template <typename T>
inline T exchange(unsigned mask, T value, int src) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of a 4 or 8 byte type");
  Fiber& me = current();
  WarpState& w = warp_of(me);
  const int lane = me.linear % kWarp;
  uint64_t* buf = w.slots[me.warp_ops & 1];
  uint64_t bits = 0;
  memcpy(&bits, &value, sizeof(T));
  buf[lane] = bits;
  sync_warp(mask);
  if (src < 0 || src >= kWarp) src = lane;
  T out;
  memcpy(&out, &buf[src], sizeof(T));
  return out;
}

// Every lane's value of a warp-collective operation after one barrier: share(mask, v)[lane]. For
// emulating warp-wide instructions that read other lanes' registers (mma): one barrier instead of a
// shuffle per register. The values must be read before the lane's next warp operation (two alternating
// buffers, as in exchange).
template <typename T>
struct Shared {
  const unsigned char (*blobs)[kBlobBytes];
  T operator[](int lane) const {
    T v;
    memcpy(&v, blobs[lane], sizeof(T));
    return v;
  }
};
template <typename T>
inline Shared<T> share(unsigned mask, const T& value) {
  static_assert(sizeof(T) <= kBlobBytes && std::is_trivially_copyable_v<T>, "share of at most 32 bytes");
  Fiber& me = current();
  WarpState& w = warp_of(me);
  unsigned char (*buf)[kBlobBytes] = w.blobs[me.warp_ops & 1];
  memcpy(buf[me.linear % kWarp], &value, sizeof(T));
  sync_warp(mask);
  return Shared<T>{buf};
}

// __ballot_sync: every lane publishes its predicate, then reads all 32 (same buffers and barrier as
// exchange).
inline unsigned ballot(unsigned mask, bool pred) {
  Fiber& me = current();
  WarpState& w = warp_of(me);
  const int lane = me.linear % kWarp;
  uint64_t* buf = w.slots[me.warp_ops & 1];
  buf[lane] = pred ? 1u : 0u;
  sync_warp(mask);
  unsigned bits = 0;
  for (int i = 0; i < kWarp; ++i) bits |= (buf[i] != 0 ? 1u : 0u) << i;
  return bits;
}

inline unsigned char* dynamic_shared() { return state().dynamic_shared.data(); }

inline float half_to_float(unsigned short h) {
  _Float16 x;
  memcpy(&x, &h, sizeof h);
  return static_cast<float>(x);
}
inline unsigned short float_to_half_rn(float f) {
  const _Float16 x = static_cast<_Float16>(f);  // IEEE round to nearest even, like cvt.rn.f16.f32
  unsigned short h;
  memcpy(&h, &x, sizeof h);
  return h;
}

inline void fiber_main() {
  Launch& L = state();
  L.entry(L.params);
  Fiber& f = *L.current;
  f.state = State::kDone;
  --L.live;
  WarpState& w = warp_of(f);
  --w.live;
  if (w.arrived > 0) fail("a lane exited before a full-mask warp operation of its warp (the others wait in it)");
  if (L.arrived > 0 && L.arrived == L.live) {  // the exited thread was the last one a barrier waited for
    L.arrived = 0;
    for (Fiber& g : L.fibers)
      if (g.state == State::kBlockBarrier) g.state = State::kReady;
  }
  for (;;) yield();
}

inline std::string stuck(const Launch& L) {
  std::string s = "deadlock: no thread can proceed (divergent barriers):";
  int shown = 0;
  for (const Fiber& f : L.fibers) {
    if (f.state == State::kDone) continue;
    if (shown++ == 4) {
      s += " ...";
      break;
    }
    s += " " + where(f) + (f.state == State::kBlockBarrier ? " in __syncthreads()" : " in a warp operation");
    s += ";";
  }
  return s;
}

inline bool run_block(Launch& L, bool reverse) {
  L.live = L.threads;
  L.arrived = 0;
  for (WarpState& w : L.warps) w = WarpState{};
  for (int t = 0; t < L.threads; ++t) L.warps[t / kWarp].live++;
  L.dynamic_shared.poison();
  for (int t = 0; t < L.threads; ++t) {
    Fiber& f = L.fibers[t];
    f.linear = t;
    f.tid = dim3{unsigned(t % L.block.x), unsigned(t / L.block.x % L.block.y), unsigned(t / (L.block.x * L.block.y))};
    f.state = State::kReady;
    f.warp_ops = 0;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  for (;;) {
    bool ran = false, all_done = true;
    for (int i = 0; i < L.threads; ++i) {
      Fiber& f = L.fibers[reverse ? L.threads - 1 - i : i];
      if (f.state == State::kReady) {
        ran = true;
        L.current = &f;
        swapcontext(&L.scheduler, &f.ctx);
        if (!L.error.empty()) return false;
      }
      all_done = all_done && f.state == State::kDone;
    }
    if (all_done) return true;
    if (!ran) {
      L.error = stuck(L);
      return false;
    }
  }
}

// Calls a kernel `void f(A...)` with cuLaunchKernel-style parameters: params[i] points at argument i.
template <typename... A, size_t... I>
inline void invoke_with(void (*f)(A...), void** params, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<A>*>(params[I])...);
}
template <typename... A>
inline void invoke(void (*f)(A...), void** params) {
  invoke_with(f, params, std::index_sequence_for<A...>{});
}
template <auto F>
void entry(void** params) {
  invoke(F, params);
}

struct Kernel {
  const char* name;
  void (*entry)(void**);
};

inline char* new_stack() {
  // A PROT_NONE page below the stack turns an overflow into a crash instead of silent corruption.
  const size_t page = page_size();
  void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  mprotect(p, page, PROT_NONE);
  return static_cast<char*>(p) + page;
}

// Runs one launch; returns 0, or 1 with a message in err (NUL-terminated, at most errlen bytes).
inline int launch(const Kernel* table, size_t n, const char* name, const unsigned grid[3], const unsigned block[3],
                  size_t shared_bytes, void** params, char* err, size_t errlen) {
  auto error = [&](const std::string& msg) {
    snprintf(err, errlen, "%s: %s", name, msg.c_str());
    return 1;
  };
  const Kernel* k = nullptr;
  for (size_t i = 0; i < n; ++i)
    if (strcmp(table[i].name, name) == 0) k = &table[i];
  if (k == nullptr) return error("no such kernel in this emulated module");
  const unsigned long threads = (unsigned long)block[0] * block[1] * block[2];
  if (threads == 0 || threads > kMaxThreads) return error("block of " + std::to_string(threads) + " threads");
  if (shared_bytes > kMaxSharedOptin)
    return error(std::to_string(shared_bytes) + " bytes of dynamic shared memory, more than the " +
                 std::to_string(kMaxSharedOptin) + " the smallest target GPU (sm_120) allows");
  Launch& L = state();
  L.grid = dim3{grid[0], grid[1], grid[2]};
  L.block = dim3{block[0], block[1], block[2]};
  L.threads = int(threads);
  L.entry = k->entry;
  L.params = params;
  L.error.clear();
  L.warps.assign((threads + kWarp - 1) / kWarp, WarpState{});
  if (!L.dynamic_shared.allocate(shared_bytes)) return error("cannot map the dynamic shared memory");
  while (L.stacks.size() < threads) {
    char* stack = new_stack();
    if (stack == nullptr) return error("cannot allocate a fiber stack");
    L.stacks.push_back(stack);
  }
  L.fibers.assign(threads, Fiber{});
  for (unsigned long t = 0; t < threads; ++t) L.fibers[t].stack = L.stacks[t];
  int rc = 0;
  for (unsigned z = 0; z < grid[2] && rc == 0; ++z)
    for (unsigned y = 0; y < grid[1] && rc == 0; ++y)
      for (unsigned x = 0; x < grid[0] && rc == 0; ++x) {
        L.block_idx = dim3{x, y, z};
        if (!run_block(L, ((x + y + z) & 1) != 0)) rc = error(L.error);
      }
  L.current = nullptr;
  return rc;
}

}  // namespace vitrt_emu

#define threadIdx (::vitrt_emu::current().tid)
#define blockIdx (::vitrt_emu::state().block_idx)
#define blockDim (::vitrt_emu::state().block)
#define gridDim (::vitrt_emu::state().grid)

inline void __syncthreads() { vitrt_emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { vitrt_emu::sync_warp(mask); }
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  (void)width;
  return vitrt_emu::exchange(mask, v, src);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  (void)width;
  return vitrt_emu::exchange(mask, v, (vitrt_emu::current().linear % 32) ^ lane_mask);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  (void)width;
  const int lane = vitrt_emu::current().linear % 32;
  return vitrt_emu::exchange(mask, v, lane - int(delta));  // lanes below delta keep their value
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  (void)width;
  const int lane = vitrt_emu::current().linear % 32;
  return vitrt_emu::exchange(mask, v, lane + int(delta));  // lanes past 31 - delta keep their value
}

inline unsigned __ballot_sync(unsigned mask, int pred) { return vitrt_emu::ballot(mask, pred != 0); }
// One thread runs at a time, so a read-modify-write is atomic as it stands.
inline unsigned atomicOr(unsigned* address, unsigned val) {
  const unsigned old = *address;
  *address = old | val;
  return old;
}
inline int atomicAdd(int* address, int val) {
  const int old = *address;
  *address = old + val;
  return old;
}
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  memcpy(&i, &f, sizeof i);
  return i;
}
inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, sizeof u);
  return u;
}
// Built with -ffp-contract=off, so plain + and * round individually, like the _rn intrinsics.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }

// The op's kernel table, emitted by plugins/cuda_emulation.py after the source:
//   VITRT_EMULATED_KERNELS({"vitrt_x", &vitrt_emu::entry<&vitrt_x>}, ...)
#define VITRT_EMULATED_KERNELS(...)                                                                       \
  static const vitrt_emu::Kernel vitrt_emu_kernels[] = {__VA_ARGS__};                                     \
  extern "C" __attribute__((visibility("default"))) int vitrt_emu_launch(                                 \
      const char* name, const unsigned* grid, const unsigned* block, size_t shared_bytes, void** params,  \
      char* err, size_t errlen) {                                                                         \
    return vitrt_emu::launch(vitrt_emu_kernels, sizeof(vitrt_emu_kernels) / sizeof(vitrt_emu_kernels[0]), \
                             name, grid, block, shared_bytes, params, err, errlen);                       \
  }
