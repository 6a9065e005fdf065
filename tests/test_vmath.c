/* Accuracy tests of the vectorised maths routines of src/vmath.c: 10^6
 * random points per function against a long double reference, special
 * values and thresholds, in-place and tail handling, and the ops that use
 * them. */
#include <float.h>
#include <stdlib.h>

#include "testutil.h"
#include "vmath.h"

/* Every routine must stay within this many ulp of the exact value. */
#define MAX_ULP 2.0

typedef void (*vfn)(const double *, double *, int64_t);

/* ---- references -------------------------------------------------------- */

/* True when long double arithmetic really carries more digits than double
 * (x87 or binary128).  Valgrind computes x87 operations in double
 * precision; the reference then falls back to libm's double results. */
static int precise_long_double(void) {
  volatile long double one = 1.0L, tiny = 0x1p-60L;
  return LDBL_MANT_DIG >= 64 && one + tiny != one;
}

static long double ref_exp(long double x) { return expl(x); }
static long double ref_expm1(long double x) { return expm1l(x); }
static long double ref_log(long double x) { return logl(x); }
static long double ref_log1p(long double x) { return log1pl(x); }
static long double ref_tanh(long double x) { return tanhl(x); }
static long double ref_sigmoid(long double x) {
  return x >= 0 ? 1.0L / (1.0L + expl(-x)) : expl(x) / (1.0L + expl(x));
}
static long double ref_softplus(long double x) {
  return x > 0 ? x + log1pl(expl(-x)) : log1pl(expl(x));
}

/* The scalar forms the kernels used before vmath. */
static double libm_sigmoid(double x) {
  double e = exp(-fabs(x));
  return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}
static double libm_softplus(double x) {
  return (x > 0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

typedef struct fn_case {
  const char *name;
  vfn v;
  long double (*ref)(long double);
  double (*libm)(double);
  double lo, hi; /* the range that matters, sampled uniformly */
} fn_case;

static const fn_case CASES[] = {
    {"exp", ad__vexp, ref_exp, exp, -750, 712},
    {"expm1", ad__vexpm1, ref_expm1, expm1, -40, 712},
    {"log", ad__vlog, ref_log, log, 0, 10},
    {"log1p", ad__vlog1p, ref_log1p, log1p, -1, 4},
    {"tanh", ad__vtanh, ref_tanh, tanh, -22, 22},
    {"sigmoid", ad__vsigmoid, ref_sigmoid, libm_sigmoid, -750, 40},
    {"softplus", ad__vsoftplus, ref_softplus, libm_softplus, -750, 40},
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ---- ulp error --------------------------------------------------------- */

/* |y - ref| in units of the last place of ref (2^-1074 for subnormals).
 * An infinite y or ref beyond the double range counts as +-2^1024, one
 * ulp past DBL_MAX, so overflowing one ulp early or late at the
 * threshold is a 1-ulp error.  Exact zeros, infinities and NaN must match
 * (zeros with their sign). */
static double ulp_error(double y, long double ref) {
  if (isnan(ref) || isnan(y)) return isnan(ref) && isnan(y) ? 0 : INFINITY;
  if (isinf(ref)) return y == ref ? 0 : INFINITY;
  if (ref == 0 && y == 0) return !signbit(y) == !signbit(ref) ? 0 : INFINITY;
  const long double big = 0x1p1024L;
  long double r = ref > big ? big : ref < -big ? -big : ref;
  long double yl = isinf(y) ? copysignl(big, y) : (long double)y;
  int e = r == 0 ? -1074 : ilogbl(r) - 52;
  if (e < -1074) e = -1074;
  if (e > 1023 - 52) e = 1023 - 52;
  return (double)(fabsl(yl - r) / ldexpl(1.0L, e));
}

/* The same in double arithmetic only, against a double reference (libm's
 * result): y - ref is exact when they are close (Sterbenz).  An infinity
 * against DBL_MAX of the same sign is the 1-ulp threshold case. */
static double ulp_error_d(double y, double ref) {
  if (isnan(ref) || isnan(y)) return isnan(ref) && isnan(y) ? 0 : INFINITY;
  if (y == ref) return y == 0 && !signbit(y) != !signbit(ref) ? INFINITY : 0;
  if (isinf(ref) || isinf(y)) {
    double fin = isinf(y) ? ref : y, inf = isinf(y) ? y : ref;
    return fin == copysign(DBL_MAX, inf) ? 1 : INFINITY;
  }
  int e = ref == 0 ? -1074 : ilogb(ref) - 52;
  if (e < -1074) e = -1074;
  return fabs(y - ref) / ldexp(1.0, e);
}

/* ---- sampling ---------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rng(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}
static double unif(void) { return (double)(rng() >> 11) * 0x1p-53; }

/* Point i of n: uniform over the case's range, log-uniform over every
 * magnitude from the subnormals to DBL_MAX, dense around the unit scale,
 * or raw bit patterns (NaNs, infinities and subnormals included). */
static double sample(const fn_case *c, int64_t i, int64_t n) {
  double x;
  int64_t q = i * 20 / n;
  if (q < 8) {
    x = c->lo + (c->hi - c->lo) * unif();
  } else if (q < 15) {
    x = ldexp(1.0 + unif(), (int)(rng() % 2099) - 1075);
    if (rng() & 1) x = -x;
  } else if (q < 19) {
    x = ldexp(1.0 + unif(), (int)(rng() % 14) - 10);
    if (rng() & 1) x = -x;
  } else {
    uint64_t b = rng();
    memcpy(&x, &b, sizeof x);
  }
  if (c->v == ad__vlog) x = fabs(x);
  if (c->v == ad__vlog1p && x < -1) x = -unif();
  return x;
}

/* ---- random sweeps ----------------------------------------------------- */

typedef struct sweep {
  double max_ref, max_libm, worst_x;
} sweep;

static sweep run_sweep(const fn_case *c, int64_t n, int precise) {
  double *x = malloc((size_t)n * sizeof *x);
  double *y = malloc((size_t)n * sizeof *y);
  assert_non_null(x);
  assert_non_null(y);
  rng_state = 0x9E3779B97F4A7C15ULL;
  for (int64_t i = 0; i < n; i++) x[i] = sample(c, i, n);
  c->v(x, y, n);
  sweep s = {0, 0, 0};
  for (int64_t i = 0; i < n; i++) {
    double g = c->libm(x[i]);
    double e = precise ? ulp_error(y[i], c->ref(x[i])) : ulp_error_d(y[i], g);
    if (!(e <= s.max_ref)) {
      s.max_ref = e;
      s.worst_x = x[i];
    }
    double eg = ulp_error_d(y[i], g);
    if (eg > s.max_libm) s.max_libm = eg;
  }
  free(x);
  free(y);
  return s;
}

static void random_points_within_2_ulp(void **state) {
  (void)state;
  int precise = precise_long_double();
  int64_t n = test_quick() ? 10000 : 1000000;
  int bad = 0;
  for (int k = 0; k < NCASES; k++) {
    sweep s = run_sweep(&CASES[k], n, precise);
    print_message("vmath %-8s max %.3f ulp vs %s (at x = %.17g), %.0f ulp "
                  "vs libm, %lld points\n",
                  CASES[k].name, s.max_ref,
                  precise ? "long double" : "libm", s.worst_x, s.max_libm,
                  (long long)n);
    if (!(s.max_ref <= MAX_ULP)) bad = 1;
  }
  assert_false(bad);
}

/* ---- special values and thresholds -------------------------------------- */

static const double SPECIAL[] = {
    0.0, -0.0, 0x1p-1074, -0x1p-1074, 0x1p-1022, -0x1p-1022,
    0x1.fffffffffffffp-1023, 1e-300, -1e-300, 0x1p-30, -0x1p-30,
    0x1p-54, -0x1p-54, 0.1, -0.1, 0.34657359027997264, -0.34657359027997264,
    0.35, -0.35, 0.5, -0.5, 0.549, 0.55, -0.55, 1.0, -1.0,
    0.6931471805599453, -0.6931471805599453, 0.9999999999999999, 2.0, -2.0,
    19.06, 20.0, -20.0, 22.0, -22.0, 36.04, 37.43, -37.43, 60.0, -60.0,
    100.0, -100.0, 693.0, 700.0, -700.0, 708.39641853226408,
    -708.39641853226408, -708.4, 709.0, 709.78271289338397,
    709.782712893384, 709.7827128933841, 709.79, 710.0, 711.0,
    -744.44007192138126, -745.13321910194110, -745.1332191019412, -745.2,
    -746.0, -800.0, 1e10, -1e10, 1e300, -1e300, DBL_MAX, -DBL_MAX,
    INFINITY, -INFINITY, NAN, -NAN};
#define NSPECIAL ((int64_t)(sizeof SPECIAL / sizeof SPECIAL[0]))

static void special_values(void **state) {
  (void)state;
  int precise = precise_long_double();
  double y[NSPECIAL];
  for (int k = 0; k < NCASES; k++) {
    const fn_case *c = &CASES[k];
    c->v(SPECIAL, y, NSPECIAL);
    for (int64_t i = 0; i < NSPECIAL; i++) {
      double x = SPECIAL[i];
      double g = c->libm(x);
      double e = precise ? ulp_error(y[i], c->ref(x)) : ulp_error_d(y[i], g);
      if (!(e <= MAX_ULP))
        fail_msg("%s(%.17g) = %.17g, libm %.17g (%g ulp)", c->name, x, y[i],
                 g, e);
    }
  }
}

/* Exact results that the ulp measure might let pass (signs, exact
 * constants). */
static void exact_identities(void **state) {
  (void)state;
  double x[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1.0, -1.0, -2.0};
  double y[8];
  ad__vexp(x, y, 8);
  assert_true(y[0] == 1 && y[1] == 1 && y[2] == INFINITY && y[3] == 0 &&
              !signbit(y[3]) && isnan(y[4]));
  ad__vexpm1(x, y, 8);
  assert_true(y[0] == 0 && !signbit(y[0]) && y[1] == 0 && signbit(y[1]));
  assert_true(y[2] == INFINITY && y[3] == -1 && isnan(y[4]));
  ad__vlog(x, y, 8);
  assert_true(y[0] == -INFINITY && y[1] == -INFINITY && y[2] == INFINITY);
  assert_true(isnan(y[3]) && isnan(y[4]) && y[5] == 0 && !signbit(y[5]));
  assert_true(isnan(y[6]) && isnan(y[7]));
  ad__vlog1p(x, y, 8);
  assert_true(y[0] == 0 && !signbit(y[0]) && y[1] == 0 && signbit(y[1]));
  assert_true(y[2] == INFINITY && isnan(y[3]) && isnan(y[4]));
  assert_true(y[6] == -INFINITY && isnan(y[7]));
  ad__vtanh(x, y, 8);
  assert_true(y[0] == 0 && !signbit(y[0]) && y[1] == 0 && signbit(y[1]));
  assert_true(y[2] == 1 && y[3] == -1 && isnan(y[4]));
  ad__vsigmoid(x, y, 8);
  assert_true(y[0] == 0.5 && y[1] == 0.5 && y[2] == 1 && y[3] == 0 &&
              isnan(y[4]));
  ad__vsoftplus(x, y, 8);
  assert_true(y[0] == log(2.0) && y[2] == INFINITY && y[3] == 0 &&
              isnan(y[4]));
  /* tiny arguments: tanh(x) = x, expm1(x) = x, log1p(x) = x */
  double t[] = {0x1p-1074, -0x1p-1074, 0x1p-1022, -0x1p-600, 0x1p-60};
  for (int i = 0; i < 5; i++) {
    ad__vtanh(&t[i], y, 1);
    assert_true(y[0] == t[i]);
    ad__vexpm1(&t[i], y, 1);
    assert_true(y[0] == t[i]);
    ad__vlog1p(&t[i], y, 1);
    assert_true(y[0] == t[i]);
  }
}

static int is_edge(double y) { return isinf(y) || y == 0; }

/* Overflow to inf and underflow to 0 happen where libm's do, within one
 * ulp of the argument. */
static void thresholds_match_libm(void **state) {
  (void)state;
  struct {
    vfn v;
    double (*libm)(double);
    double at;
  } t[] = {{ad__vexp, exp, 709.782712893384},
           {ad__vexp, exp, -745.1332191019411},
           {ad__vexp, exp, -708.3964185322641},
           {ad__vexpm1, expm1, 709.782712893384},
           {ad__vsigmoid, libm_sigmoid, -745.1332191019411},
           {ad__vsoftplus, libm_softplus, -745.1332191019411}};
  for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
    double x[201], y[201];
    x[100] = t[k].at;
    for (int i = 1; i <= 100; i++) {
      x[100 + i] = nextafter(x[100 + i - 1], INFINITY);
      x[100 - i] = nextafter(x[100 - i + 1], -INFINITY);
    }
    t[k].v(x, y, 201);
    for (int i = 0; i < 201; i++) {
      /* Where libm gives inf or 0 we must too, unless libm's result at a
       * neighbouring argument is on our side of the threshold. */
      int ours = is_edge(y[i]);
      int ok = is_edge(t[k].libm(x[i])) == ours ||
               (i > 0 && is_edge(t[k].libm(x[i - 1])) == ours) ||
               (i < 200 && is_edge(t[k].libm(x[i + 1])) == ours);
      if (!ok)
        fail_msg("threshold %.17g: f(%.17g) = %g, libm %g", t[k].at, x[i],
                 y[i], t[k].libm(x[i]));
    }
  }
}

/* ---- array handling ----------------------------------------------------- */

/* Every length (vector body and scalar tail), unaligned starts and the
 * in-place call give bitwise the results of one-element calls. */
static void lengths_offsets_and_in_place(void **state) {
  (void)state;
  enum { MAXN = 40 };
  double x[MAXN + 1], y[MAXN + 1], z[MAXN + 1], one;
  for (int k = 0; k < NCASES; k++) {
    const fn_case *c = &CASES[k];
    rng_state = 12345;
    for (int i = 0; i <= MAXN; i++) x[i] = sample(c, i % 20, 20);
    for (int n = 0; n <= MAXN; n++) {
      for (int off = 0; off <= 1 && off + n <= MAXN; off++) {
        memset(y, 0, sizeof y);
        c->v(x + off, y + off, n);
        memcpy(z, x, sizeof z);
        c->v(z + off, z + off, n);
        for (int i = 0; i < n; i++) {
          c->v(&x[off + i], &one, 1);
          assert_memory_equal(&y[off + i], &one, sizeof one);
          assert_memory_equal(&z[off + i], &one, sizeof one);
        }
        if (off == 1) assert_true(y[0] == 0); /* nothing written before */
        if (off + n < MAXN) assert_true(y[off + n] == 0); /* nor after */
      }
    }
  }
}

/* ---- the ops ------------------------------------------------------------ */

/* Dense and strided inputs give the same bits as the vmath routine. */
static void ops_use_vmath_for_every_layout(void **state) {
  (void)state;
  struct {
    ad_tensor *(*op)(ad_tensor *);
    vfn v;
    double shift;
  } ops[] = {{ad_exp, ad__vexp, 0},     {ad_expm1, ad__vexpm1, 0},
             {ad_log, ad__vlog, 4},     {ad_log1p, ad__vlog1p, 4},
             {ad_tanh, ad__vtanh, 0},   {ad_sigmoid, ad__vsigmoid, 0},
             {ad_softplus, ad__vsoftplus, 0}};
  enum { R = 7, C = 9 };
  double v[R * C], vt[R * C], want[R * C], got[R * C];
  for (int i = 0; i < R * C; i++) v[i] = sin(i * 0.7) * 3.5;
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    double in[R * C];
    for (int i = 0; i < R * C; i++) in[i] = v[i] + ops[k].shift;
    /* transposed layout: vt (C x R) transposed back is in (R x C) */
    for (int i = 0; i < R; i++)
      for (int j = 0; j < C; j++) vt[j * R + i] = in[i * C + j];
    ops[k].v(in, want, R * C);
    ad_tensor *dense = ops[k].op(ad_tensor_new(2, SHAPE(R, C), in));
    assert_non_null(dense);
    assert_int_equal(ad_read(dense, got, R * C), AD_OK);
    assert_memory_equal(got, want, sizeof want);
    ad_tensor *strided =
        ops[k].op(ad_transpose(ad_tensor_new(2, SHAPE(C, R), vt)));
    assert_shape(strided, 2, R, C);
    assert_int_equal(ad_read(strided, got, R * C), AD_OK);
    assert_memory_equal(got, want, sizeof want);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_points_within_2_ulp),
      cmocka_unit_test(special_values),
      cmocka_unit_test(exact_identities),
      cmocka_unit_test(thresholds_match_libm),
      cmocka_unit_test(lengths_offsets_and_in_place),
      scoped_test(ops_use_vmath_for_every_layout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
