/* Shared helpers for libad's benchmarks: a monotonic clock, medians, the
 * "case | tool | figure | value | unit" output line and a canary workload. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ad.h>

/* Seconds on CLOCK_MONOTONIC. */
static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of v[0..n) (v is sorted in place). */
static inline double bench_median(double *v, int n) {
  if (n <= 0) return NAN;
  qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One figure: "case | tool | figure | value | unit". */
static inline void bench_line(const char *case_name, const char *tool,
                              const char *figure, double value,
                              const char *unit) {
  double a = fabs(value);
  int prec = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3;
  printf("%s | %s | %s | %.*f | %s\n", case_name, tool, figure, prec, value,
         unit);
  fflush(stdout);
}

/* Stop the benchmark with libad's error message when a call failed. */
static inline void bench_check(const void *p, const char *what) {
  if (p) return;
  fprintf(stderr, "bench: %s failed: %s\n", what, ad_error_message());
  exit(1);
}

static inline void bench_check_status(ad_status st, const char *what) {
  if (st == AD_OK) return;
  fprintf(stderr, "bench: %s failed: %s\n", what, ad_error_message());
  exit(1);
}

/* The thread count the run was given (OPENBLAS_NUM_THREADS, default 1). */
static inline int bench_threads(void) {
  const char *s = getenv("OPENBLAS_NUM_THREADS");
  int n = s ? atoi(s) : 0;
  return n > 0 ? n : 1;
}

/* A fixed small workload (a dependent floating-point chain plus two passes
 * over 32 MiB, so that both the core and memory bandwidth count), median of
 * 5 runs in ms: timed at the start of each program so that a slow phase of
 * the host shows up in the output. */
static inline double bench_canary_ms(void) {
  enum { N = 1 << 22 };
  static double buf[N];
  double t[5];
  volatile double sink = 0;
  for (int i = 0; i < N; i++) buf[i] = (double)(i % 97) * 0.01;
  for (int r = 0; r < 5; r++) {
    double t0 = bench_now();
    double x = 0.5, s = 0;
    for (int i = 0; i < 2000000; i++) x = x * 0.999 + 0.0005;
    for (int k = 0; k < 2; k++)
      for (int i = 0; i < N; i++) s += buf[i];
    sink = x + s;
    t[r] = (bench_now() - t0) * 1e3;
  }
  (void)sink;
  return bench_median(t, 5);
}

static inline void bench_canary(const char *where) {
  char fig[96];
  snprintf(fig, sizeof fig, "canary (fixed workload) at %s", where);
  bench_line("canary", "host", fig, bench_canary_ms(), "ms");
}

/* The vectorized Rosenbrock function of a 1-D tensor x of n >= 2 elements:
 * sum(100 (x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2). */
static inline ad_tensor *bench_rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *a = ad_slice(x, 0, 0, n - 1, 1);
  ad_tensor *b = ad_slice(x, 0, 1, n, 1);
  ad_tensor *t = ad_sub(b, ad_square(a));
  ad_tensor *u = ad_add_scalar(ad_neg(a), 1.0);
  return ad_sum_all(
      ad_add(ad_mul_scalar(ad_square(t), 100.0), ad_square(u)));
}

#endif /* BENCH_UTIL_H */
