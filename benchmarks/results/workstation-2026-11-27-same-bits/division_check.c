// divide_by as the CPU emulator runs it (plugins/cuda_common.cuh), against IEEE division: y0 = RN(1 / b)
// (the GPU takes rcp.approx there, as its own division does), y = y0 + y0 (1 - b y0) by two fmas
// (division_reciprocal), q = RN(a y), q' = RN(q + y RN(a - b q)) by two fmas, must equal RN(a / b) bit for
// bit for |b| in [2^-40, 2^40) and |a| in [2^-60, 2^60) (divide_by's range). Quotients depend on the
// mantissas alone within that range (no underflow or overflow), so: (1) every mantissa of a against 8192
// mantissas of b (the first and last 64 and 8064 random); (2) every mantissa of b against 4096 mantissas of
// a (the first and last 64, the rest random); (3) the range's corners (b at 2^-40 and just under 2^40, a at
// 2^-60 and just under 2^60, both signs, every mantissa of a against 64 of b); (4) 10^9 random pairs over
// the whole range, a quarter with quotients near representable ones; as a control, how many q = RN(a y)
// alone would get wrong.
// Build and run: gcc -O2 -mfma -ffp-contract=off division_check.c -o division_check -lm && ./division_check
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t u_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static uint64_t state = 88172645463325252ull;
static uint64_t rnd(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }
static volatile float one = 1.0f;  // keeps 1 / b a division at run time
static float recip(float b) {
  const float y0 = one / b;
  return fmaf(y0, fmaf(-b, y0, 1.0f), y0);
}
static int differs(float a, float b, float y) {
  float q = a * y;
  return u_of(fmaf(y, fmaf(-b, q, a), q)) != u_of(a / b);
}
static float rf(int lo, int hi) {  // random sign and mantissa, |x| in [2^lo, 2^hi)
  uint64_t r = rnd();
  uint32_t e = (uint32_t)(lo + 127 + (int)(r % (uint64_t)(hi - lo))), m = (uint32_t)(r >> 20) & 0x7fffff;
  if ((r >> 50) % 8 == 0) m &= 0x7ff000;  // short mantissas: more exact quotients and ties
  return f_of(((r >> 63) ? 0x80000000u : 0u) | (e << 23) | m);
}
int main(void) {
  long n = 0, bad = 0;
  for (int j = 0; j < 8192; ++j) {
    uint32_t mb = j < 64 ? (uint32_t)j : j < 128 ? 0x7fffffu - (uint32_t)(j - 64) : (uint32_t)(rnd() & 0x7fffff);
    float b = f_of((127u << 23) | mb), y = recip(b);
    for (uint32_t ma = 0; ma < (1u << 23); ++ma, ++n) bad += differs(f_of((127u << 23) | ma), b, y);
  }
  printf("(1) every mantissa of a against 8192 of b: %ld pairs, %ld differ\n", n, bad);
  n = bad = 0;
  float as[4096];
  for (int j = 0; j < 4096; ++j) {
    const uint32_t ma = j < 64 ? (uint32_t)j : j < 128 ? 0x7fffffu - (uint32_t)(j - 64) : (uint32_t)(rnd() & 0x7fffff);
    as[j] = f_of((127u << 23) | ma);
  }
  for (uint32_t mb = 0; mb < (1u << 23); ++mb) {
    const float b = f_of((127u << 23) | mb), y = recip(b);
    for (int j = 0; j < 4096; ++j, ++n) bad += differs(as[j], b, y);
  }
  printf("(2) every mantissa of b against 4096 of a: %ld pairs, %ld differ\n", n, bad);
  n = bad = 0;
  const int be[2] = {-40, 39}, ae[2] = {-60, 59};
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 2; ++k)
      for (uint32_t mb = 0; mb < 0x800000; mb += 0x800000 / 64 + 7) {
        float b = f_of(((uint32_t)(be[i] + 127) << 23) | mb), y = recip(b);
        for (uint32_t ma = 0; ma < 0x800000; ++ma)
          for (uint32_t sign = 0; sign < 2; ++sign, ++n)
            bad += differs(f_of((sign << 31) | ((uint32_t)(ae[k] + 127) << 23) | ma), b, y);
      }
  printf("(3) the corners: %ld pairs, %ld differ\n", n, bad);
  n = bad = 0;
  long control = 0;  // the uncorrected q = RN(a y): shows that the comparison catches a wrong quotient
  for (long i = 0; i < 1000000000L; ++i) {
    float b = fabsf(rf(-40, 40)), a = (i & 3) == 0 ? b * rf(-24, 24) : rf(-60, 60);
    if (!(fabsf(a) >= 0x1p-60f && fabsf(a) < 0x1p60f)) continue;
    ++n;
    const float y = recip(b);
    bad += differs(a, b, y);
    control += u_of(a * y) != u_of(a / b);
  }
  printf("(4) random pairs: %ld, %ld differ (uncorrected q = a y: %ld differ)\n", n, bad, control);
  return bad != 0;
}
