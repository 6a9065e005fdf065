/* Vectorisable exp, expm1, log, log1p, tanh, sigmoid and softplus over
 * arrays: branch-free polynomial kernels that GCC turns into packed SSE2
 * (baseline x86-64), AVX2 or AVX-512 loops. */
#include "vmath.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Build attributes
 *
 * GCC 12 leaves loops scalar at -O2 unless asked.  The pragma asks for the
 * whole file, so that the inline kernels share the loops' options (GCC
 * does not inline across differing optimize options).  no-trapping-math
 * lets the vectoriser evaluate both arms of a select unconditionally: the
 * clamps below make GCC thread constant arms such as exp(710), whose
 * overflow it must otherwise assume might trap.  It changes no result.
 *
 * On x86-64 glibc the array loops are also cloned for AVX2 and AVX-512
 * (x86-64-v4) and picked once at load time through an ifunc, since the
 * build itself assumes only SSE2: the kernels are pure arithmetic, so
 * wider vectors pay off nearly in proportion (exp takes 3.5 ns per element
 * with SSE2, 1.6 with AVX2, 1.1 with AVX-512 on a Zen 4 core).  ISO C mode
 * does not contract a * b + c into FMA, so every clone computes bitwise
 * the same results.  -DAD_VMATH_NO_CLONES turns the cloning off.
 * ---------------------------------------------------------------------- */

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "no-trapping-math")
#elif defined(__clang__)
/* Clang contracts within expressions by default where FMA exists (on
 * AArch64 always); keep every rounding where the error analysis puts it
 * (GCC in ISO C mode already does, and warns about this pragma). */
#pragma STDC FP_CONTRACT OFF
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__) &&                         \
    !defined(AD_VMATH_NO_CLONES)
#define VM_LOOP \
  __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define VM_LOOP
#endif

/* The kernels must inline into the loops to vectorise; some are past
 * GCC's size limits for inlining a function called from four loops. */
#if defined(__GNUC__)
#define VM_INLINE static inline __attribute__((always_inline))
#else
#define VM_INLINE static inline
#endif

/* ------------------------------------------------------------------------
 * Bit access.  memcpy is the defined way to reinterpret; GCC turns it into
 * a register move that vectorises.  All integer arithmetic on the bits is
 * unsigned 64-bit (wrap-around is intended and well defined), with only
 * additions, subtractions, masks and logical shifts, which SSE2 has for
 * 64-bit lanes (it lacks 64-bit compares, arithmetic shifts and
 * double<->int64 conversions, so the code never needs them).
 * ---------------------------------------------------------------------- */

VM_INLINE uint64_t vm_bits(double x) {
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

VM_INLINE double vm_double(uint64_t u) {
  double x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* Adding 1.5 * 2^52 rounds a double of magnitude below 2^51 to the
 * nearest integer k (ties to even) and leaves k in the low mantissa bits:
 * bits(x + SHIFT) - bits(SHIFT) is k as a two's-complement integer. */
#define VM_SHIFT 0x1.8p52

/* 2^k for an integer k in [-1022, 1023] held as two's complement. */
VM_INLINE double vm_pow2(uint64_t k) {
  return vm_double((k + 1023) << 52);
}

/* ------------------------------------------------------------------------
 * The exponential family shares one reduction and one polynomial.
 *
 * Range reduction (Cody-Waite): k = round(x / ln2), r = x - k ln2 with
 * ln2 split as LN2_HI + LN2_LO, where LN2_HI has 32 significant bits, so
 * k * LN2_HI is exact for |k| < 2^21 and hi = x - k * LN2_HI is exact
 * (Sterbenz).  Then |r| <= ln2 / 2 (plus a rounding hair) and
 * exp(x) = 2^k exp(r).  The rounding error of r = hi - lo is recovered
 * exactly as c = (hi - r) - lo.
 *
 * Polynomial: exp(r) - 1 = r + r^2 / 2 + r^3 Q(r) with Q of degree 9, a
 * Chebyshev fit of (e^r - 1 - r - r^2/2) / r^3 on [-0.3466, 0.3466]
 * whose relative error on exp(r) - 1, coefficients rounded to double, is
 * below 2^-58 (0.02 ulp).  Q is evaluated by Estrin's scheme (a short
 * dependency chain for the out-of-order core); its rounding errors are
 * scaled by r^3 < 0.042 and do not matter.  Keeping r^2 / 2 out of the
 * polynomial means the only sizeable rounding before the final sum is
 * that of r * r, about 0.1 ulp of the result.
 *
 * The sum em = r + (r^2/2 + r^3 Q) is rounded, and its rounding error
 * plus the reduction error c (times d exp(r) / dr = 1 + em) is kept in
 * eml (Fast2Sum: |r| >= |r^2/2 + r^3 Q|).  Every function below then
 * forms its result from the pair (em, eml) with one final rounding.
 * ---------------------------------------------------------------------- */

#define VM_INVLN2 0x1.71547652b82fep0
#define VM_LN2_HI 0x1.62e42feep-1          /* fdlibm's ln2_hi */
#define VM_LN2_LO 0x1.a39ef35793c76p-33    /* ln2 - LN2_HI */

VM_INLINE double vm_expm1_q(double r, double r2) {
  const double q0 = 0x1.5555555555556p-3, q1 = 0x1.5555555555555p-5,
               q2 = 0x1.11111111109b5p-7, q3 = 0x1.6c16c16c167e2p-10,
               q4 = 0x1.a01a01a7c2f2cp-13, q5 = 0x1.a01a01a47a5abp-16,
               q6 = 0x1.71de0db2eb873p-19, q7 = 0x1.27e4e1f71bcbbp-22,
               q8 = 0x1.af389eea54156p-26, q9 = 0x1.1f66d957d0ef0p-29;
  double r4 = r2 * r2, r8 = r4 * r4;
  double p01 = q0 + q1 * r, p23 = q2 + q3 * r, p45 = q4 + q5 * r,
         p67 = q6 + q7 * r, p89 = q8 + q9 * r;
  double p03 = p01 + r2 * p23, p47 = p45 + r2 * p67;
  return (p03 + r4 * p47) + r8 * p89;
}

/* Reduce x (|x| < 1100, or NaN): returns k as a two's-complement integer
 * and sets *em + *eml = exp(r) - 1, with |*eml| <= ulp(*em). */
VM_INLINE uint64_t vm_exp_reduce(double x, double *em, double *eml) {
  double kd = x * VM_INVLN2 + VM_SHIFT;
  uint64_t k = vm_bits(kd) - vm_bits(VM_SHIFT);
  kd -= VM_SHIFT;
  double hi = x - kd * VM_LN2_HI, lo = kd * VM_LN2_LO;
  double r = hi - lo, c = (hi - r) - lo;
  double r2 = r * r;
  double p = 0.5 * r2 + (r * r2) * vm_expm1_q(r, r2);
  double e = r + p;
  *em = e;
  *eml = ((r - e) + p) + (c + c * e);
  return k;
}

/* exp(x) as the unevaluated sum 2^k (*h + *l), |*l| <~ ulp(*h), for x
 * clamped to [-746, 710] (NaN passes through the comparisons): k lies in
 * [-1076, 1024] and beyond those bounds the result is 0 or inf anyway.
 * exp(r) = 1 + hi - lo + p, p = r^2/2 + r^3 Q(r): 1 + hi is summed with
 * its exact error (Fast2Sum, |hi| < 1), so only the small terms round
 * before the final sum; cheaper than going through expm1's pair. */
VM_INLINE uint64_t vm_exp_pair(double x, double *h, double *l) {
  double xc = x < -746.0 ? -746.0 : x;
  xc = xc > 710.0 ? 710.0 : xc;
  double kd = xc * VM_INVLN2 + VM_SHIFT;
  uint64_t k = vm_bits(kd) - vm_bits(VM_SHIFT);
  kd -= VM_SHIFT;
  double hi = xc - kd * VM_LN2_HI, lo = kd * VM_LN2_LO;
  double r = hi - lo, r2 = r * r;
  double p = 0.5 * r2 + (r * r2) * vm_expm1_q(r, r2);
  double s = 1.0 + hi;
  *h = s;
  *l = ((1.0 - s) + hi) + (p - lo);
  return k;
}

/* Multiply by 2^k for k in [-1076, 1024] as two exact powers 2^k1 2^k2,
 * k1 = floor(k / 2) (a logical shift of the biased k): the first product
 * is exact and the second rounds once, so overflow to inf and gradual
 * underflow into subnormals happen where the exact value crosses them. */
VM_INLINE double vm_scale(double y, uint64_t k) {
  uint64_t k1 = ((k + 2048) >> 1) - 1024;
  return y * vm_pow2(k1) * vm_pow2(k - k1);
}

/* exp(x) over the whole domain.  Error: the pair is accurate to about
 * 0.1 ulp (the rounding of r * r and of the small terms), so one final
 * rounding gives below 0.7 ulp (0.64 measured); subnormal results round
 * twice at most (0.75 ulp measured). */
VM_INLINE double vm_exp_core(double x) {
  double h, l;
  uint64_t k = vm_exp_pair(x, &h, &l);
  return vm_scale(h + l, k);
}

/* expm1(x) = 2^k (exp(r) - 1) + (2^k - 1) on x in [-60, 710] or NaN.
 *
 * With S = 2^k and T = S - 1 the sum T + S em is formed with its exact
 * error (Fast2Sum: |T| >= |S em| whenever T != 0, and T = 0 only for
 * k = 0 where the sum is exact), so the result rounds once from a value
 * accurate to about 0.1 ulp: the cancellation between T and S em (k = 1
 * with x near 0.35, k = -1) costs nothing.  For k >= 54, T is not exact;
 * tl = (S - T) - 1 is its error.  For k > 1000, S is capped at 2^1000 and
 * the rest applied afterwards, exactly, so the result overflows where
 * exp does.  Error: below 0.8 ulp (0.76 measured). */
VM_INLINE double vm_expm1_clamped(double xc) {
  double em, eml;
  uint64_t k = vm_exp_reduce(xc, &em, &eml);
  uint64_t k1 = xc > 693.0 ? 1000 : k; /* k >= 1000 there */
  double s = vm_pow2(k1);
  double t = s - 1.0;
  double tl = (s - t) - 1.0;
  double a = s * em;
  double sum = t + a;
  double err = (t - sum) + a;
  return (sum + (err + (s * eml + tl))) * vm_pow2(k - k1);
}

/* expm1(x) over the whole domain: below -60 the result is -1 once
 * rounded (e^-60 < 2^-54 is less than half an ulp of 1), above 710 it
 * is inf.  expm1(-0) = -0, which the arithmetic would turn into +0. */
VM_INLINE double vm_expm1_core(double x) {
  double xc = x < -60.0 ? -60.0 : x;
  xc = xc > 710.0 ? 710.0 : xc;
  double y = vm_expm1_clamped(xc);
  return x == 0 ? x : y;
}

/* tanh(a), a = |x|, from t = expm1(2a) = S (em + eml) + (S - 1) and
 * t + 2 = S (em + eml) + (S + 1), both as exact pairs (nh, nl) and
 * (dh, dl) (Fast2Sum, as in expm1): the expm1 form keeps full relative
 * accuracy as x -> 0, where 1 - 2 / (e^2x + 1) would cancel.  One
 * division w = num / dh serves two branches:
 *   a < 0.55 (tanh < 1/2): tanh = (nh + nl) / (dh + dl)
 *     = w + (nl - w dl) / dh with w = nh / dh and 1 / dh = (1 - tanh) / 2
 *     ~ (1 - w) / 2, so the correction needs no second division;
 *   a >= 0.55: tanh = 1 - g, g = 2 / (dh + dl) = w (1 - w dl / 2) with
 *     w = 2 / dh, g <= 1/2 so its rounding is at most 1/4 ulp of tanh.
 * Error: the division and the final operation round once each, plus
 * the 0.1 ulp of the pairs: about 1 ulp (1.05 measured).  a is capped at
 * 20, where tanh already rounds to 1 (it does from 19.06 on), so k <= 58
 * and S + 1, S - 1 need no care beyond that.  copysign keeps
 * tanh(-0) = -0; tiny and subnormal x give em = 2a and w = a exactly. */
VM_INLINE double vm_tanh_core(double x) {
  double a = fabs(x);
  a = a > 20.0 ? 20.0 : a;
  double em, eml;
  uint64_t k = vm_exp_reduce(2.0 * a, &em, &eml);
  double s = vm_pow2(k);
  double hi = s * em, lo = s * eml;
  double t = s - 1.0, u = s + 1.0;
  double nh = t + hi, nl = ((t - nh) + hi) + lo;
  double dh = u + hi, dl = ((u - dh) + hi) + lo;
  double w = (a < 0.55 ? nh : 2.0) / dh;
  double ys = w + (nl - w * dl) * (0.5 - 0.5 * w);
  double yl = 1.0 - (w - 0.5 * (w * w) * dl);
  return copysign(a < 0.55 ? ys : yl, x);
}

/* ------------------------------------------------------------------------
 * log and log1p (fdlibm's method).
 *
 * Range reduction: x = 2^e m with m in [sqrt(2)/2, sqrt(2)), read off the
 * bits after subtracting the bits of sqrt(2)/2 (musl's trick), so
 * f = m - 1 is exact and lies in [-0.293, 0.414].
 *
 * log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)) with s = f / (2 + f),
 * |s| <= 0.1716, and R fdlibm's degree-7 polynomial in s^2 whose error
 * is below 2^-58.45; log(x) = e LN2_HI + (log(1 + f) + e LN2_LO), e LN2_HI
 * exact.  fdlibm bounds the error of this scheme below 1 ulp (0.80 ulp
 * measured for log, 0.79 for log1p).
 * ---------------------------------------------------------------------- */

#define VM_SQRT1_2_BITS 0x3fe6a09e667f3bcdULL

VM_INLINE double vm_log_r(double z, double w) {
  const double lg1 = 6.666666666666735130e-01, lg2 = 3.999999999940941908e-01,
               lg3 = 2.857142874366239149e-01, lg4 = 2.222219843214978396e-01,
               lg5 = 1.818357216161805012e-01, lg6 = 1.531383769920937332e-01,
               lg7 = 1.479819860511658591e-01;
  double t1 = w * (lg2 + w * (lg4 + w * lg6));
  double t2 = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7)));
  return t2 + t1;
}

/* e LN2_HI + log(1 + f) + (e LN2_LO + corr), |corr| tiny. */
VM_INLINE double vm_log_kernel(double e, double f, double corr) {
  double s = f / (2.0 + f);
  double z = s * s, w = z * z;
  double hfsq = 0.5 * f * f;
  double r = vm_log_r(z, w);
  return e * VM_LN2_HI - ((hfsq - (s * (hfsq + r) + (e * VM_LN2_LO + corr)))
                          - f);
}

/* Split a positive finite normal u into 2^e m: sets *m and returns the
 * biased exponent e + 1024 as an integer (ebits); e itself is
 * (double)ebits - 1024, converted exactly with the SHIFT trick. */
VM_INLINE uint64_t vm_split(double u, double *m) {
  uint64_t iu = vm_bits(u);
  uint64_t tmp = iu - VM_SQRT1_2_BITS;
  *m = vm_double(iu - (tmp & (0xfffULL << 52)));
  return (tmp + (1ULL << 62)) >> 52;
}

VM_INLINE double vm_int_to_double(uint64_t small) {
  return vm_double(vm_bits(VM_SHIFT) + small) - VM_SHIFT;
}

/* log(x): subnormal x is scaled by 2^52 first.  Zero gives -inf, negative
 * x NaN, +inf and NaN themselves. */
VM_INLINE double vm_log_core(double x) {
  double xs = x < 0x1p-1022 ? x * 0x1p52 : x;
  double bias = x < 0x1p-1022 ? 1024.0 + 52.0 : 1024.0;
  double m;
  uint64_t eb = vm_split(xs, &m);
  double e = vm_int_to_double(eb) - bias;
  double y = vm_log_kernel(e, m - 1.0, 0.0);
  double special = x < 0 ? NAN : x + x;
  special = x == 0 ? -INFINITY : special;
  return (x > 0 && x < INFINITY) ? y : special;
}

/* log1p(xh + xl) for |xl| <= ulp(xh): u = 1 + xh rounds; fdlibm corrects
 * with c = (1 + xh) - u, computed exactly as 1 - (u - xh) when u >= 2
 * and xh - (u - 1) otherwise (Sterbenz), adding (c + xl) / u.  Where u's
 * exponent is 0 (xh in [-0.293, 0.414]) the kernel takes f = xh itself,
 * exact, instead of u - 1 plus a correction, which keeps full relative
 * accuracy for tiny xh.  u is never subnormal for xh >= -1. */
VM_INLINE double vm_log1p_pair(double xh, double xl) {
  double u = 1.0 + xh;
  double m;
  uint64_t eb = vm_split(u, &m);
  double e = vm_int_to_double(eb) - 1024.0;
  double c = u >= 2.0 ? 1.0 - (u - xh) : xh - (u - 1.0);
  double f = e == 0 ? xh : m - 1.0;
  double corr = ((e == 0 ? 0.0 : c) + xl) / u;
  return vm_log_kernel(e, f, corr);
}

/* log1p(x) over the whole domain: -1 gives -inf, below it NaN; +inf and
 * NaN give themselves; log1p(-0) = -0.  Error: below 1 ulp (fdlibm). */
VM_INLINE double vm_log1p_core(double x) {
  double y = vm_log1p_pair(x, 0.0);
  double special = x < -1.0 ? NAN : x + x;
  special = x == -1.0 ? -INFINITY : special;
  y = (x > -1.0 && x < INFINITY) ? y : special;
  return x == 0 ? x : y;
}

/* ------------------------------------------------------------------------
 * Composite activations, in their overflow-free forms.  Both take
 * e = exp(-|x|) in [0, 1] as the pair 2^k (h + l), renormalised so that
 * h is e rounded and l its error, which keeps the error of exp out of
 * the result.
 * ---------------------------------------------------------------------- */

VM_INLINE void vm_exp_neg_abs(double x, double *eh, double *el) {
  double h, l;
  uint64_t k = vm_exp_pair(-fabs(x), &h, &l);
  double s = h + l;
  *eh = vm_scale(s, k);
  *el = vm_scale((h - s) + l, k);
}

/* sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below.  1 + e is
 * the pair (dh, dl) (Fast2Sum, 1 >= e) and w = num / dh the one
 * division; then sigmoid = w + (numl - w dl) / dh, where 1 / dh is w
 * itself for x >= 0 and 1 - sigmoid ~ 1 - w below.  Error: the division
 * and the final sum round once each: about 1 ulp (1.03 measured);
 * subnormal results (x < -708) are e / (1 + e) ~ e rounded once more. */
VM_INLINE double vm_sigmoid_core(double x) {
  double eh, el;
  vm_exp_neg_abs(x, &eh, &el);
  double dh = 1.0 + eh, dl = ((1.0 - dh) + eh) + el;
  double w = (x >= 0 ? 1.0 : eh) / dh;
  double inv = x >= 0 ? w : 1.0 - w;
  double numl = x >= 0 ? 0.0 : el;
  return w + (numl - w * dl) * inv;
}

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)).  The log1p term is at most
 * ln 2 and takes the exact pair, so it is within about 0.6 ulp of its
 * exact value; the sum with x rounds once more.  Large x give x, very
 * negative x give exp(x) down to the subnormals.  Error: below 1.5 ulp
 * (1.18 measured, where x and the log1p term are of one size). */
VM_INLINE double vm_softplus_core(double x) {
  double eh, el;
  vm_exp_neg_abs(x, &eh, &el);
  double l = vm_log1p_pair(eh, el);
  return (x > 0 ? x : 0.0) + l;
}

/* ------------------------------------------------------------------------
 * Array loops.  Each function has a loop over two restrict arrays and one
 * in place, so that neither pays for a runtime overlap check nor falls
 * back to scalar code when x == y.
 * ---------------------------------------------------------------------- */

#define VM_ARRAY(name, core)                                              \
  VM_LOOP static void name##_copy(const double *restrict x,               \
                                  double *restrict y, int64_t n) {        \
    for (int64_t i = 0; i < n; i++) y[i] = core(x[i]);                    \
  }                                                                       \
  VM_LOOP static void name##_inplace(double *y, int64_t n) {              \
    for (int64_t i = 0; i < n; i++) y[i] = core(y[i]);                    \
  }                                                                       \
  void name(const double *x, double *y, int64_t n) {                      \
    if (x == y)                                                           \
      name##_inplace(y, n);                                               \
    else                                                                  \
      name##_copy(x, y, n);                                               \
  }

VM_ARRAY(ad__vexp, vm_exp_core)
VM_ARRAY(ad__vexpm1, vm_expm1_core)
VM_ARRAY(ad__vlog, vm_log_core)
VM_ARRAY(ad__vlog1p, vm_log1p_core)
VM_ARRAY(ad__vtanh, vm_tanh_core)
VM_ARRAY(ad__vsigmoid, vm_sigmoid_core)
VM_ARRAY(ad__vsoftplus, vm_softplus_core)
