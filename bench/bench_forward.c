/* Benchmarks of forward mode and mixed modes (issue 4): Rosenbrock JVP and
 * HVP against the function, and the dense Hessian of a 100-variable
 * Rosenbrock function. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>

#include "bench_util.h"

/* ------------------------------------------------------------------------
 * 8. Vectorized Rosenbrock, n = 10^6: JVP and HVP against the function.
 * ---------------------------------------------------------------------- */

static void bench_rosen_fwd(void) {
  const int64_t n = 1000000;
  enum { RUNS = 41 };
  ad_scope_begin();
  ad_seed(99);
  ad_tensor *x = ad_rand_uniform(1, &n, -1.5, 1.5);
  ad_tensor *v = ad_rand_normal(1, &n, 0, 1);
  bench_check(x && v ? x : NULL, "random tensors");
  double tf[RUNS], tj[RUNS], th[RUNS];
  for (int r = -2; r < RUNS; r++) {
    double t0 = bench_now();
    ad_scope_begin();
    bench_check(bench_rosenbrock(x, NULL), "rosenbrock");
    ad_scope_end();
    double t1 = bench_now();
    ad_scope_begin();
    bench_check(ad_jvp(bench_rosenbrock, NULL, x, v, NULL), "ad_jvp");
    ad_scope_end();
    double t2 = bench_now();
    ad_scope_begin();
    bench_check(ad_hvp(bench_rosenbrock, NULL, x, v), "ad_hvp");
    ad_scope_end();
    double t3 = bench_now();
    if (r >= 0) {
      tf[r] = (t1 - t0) * 1e3;
      tj[r] = (t2 - t1) * 1e3;
      th[r] = (t3 - t2) * 1e3;
    }
  }
  double f = bench_median(tf, RUNS), j = bench_median(tj, RUNS),
         h = bench_median(th, RUNS);
  const char *cs = "rosenbrock n=1e6 (vectorized)";
  bench_line(cs, "libad", "function time, forward bench (median of 41)", f,
             "ms");
  bench_line(cs, "libad", "JVP time (ad_jvp)", j, "ms");
  bench_line(cs, "libad", "HVP time (ad_hvp, fwd-over-rev)", h, "ms");
  bench_line(cs, "libad", "JVP / function", j / f, "x");
  bench_line(cs, "libad", "HVP / function", h / f, "x");
  ad_scope_end();
}

/* ------------------------------------------------------------------------
 * 9. Dense Hessian of the 100-variable Rosenbrock function at
 *    x_i = -1.2 + 2.2 i / (n - 1) (the point bench/adolc_peer.cpp uses).
 * ---------------------------------------------------------------------- */

#define HESS_N 100

/* Largest deviation of H from the closed form. */
static double hessian_error(const double *x, const double *H, int n) {
  double err = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      double e = 0;
      if (i == j) {
        if (i < n - 1) e += 1200 * x[i] * x[i] - 400 * x[i + 1] + 2;
        if (i > 0) e += 200;
      } else if (j == i + 1) {
        e = -400 * x[i];
      } else if (i == j + 1) {
        e = -400 * x[j];
      }
      err = fmax(err, fabs(H[i * n + j] - e));
    }
  return err;
}

/* Median microseconds per ad_hessian over runs calls. */
static double hessian_us(int runs) {
  ad_scope_begin();
  ad_tensor *x = ad_linspace(-1.2, 1.0, HESS_N);
  bench_check(x, "ad_linspace");
  double xs[HESS_N], H[HESS_N * HESS_N];
  bench_check_status(ad_read(x, xs, HESS_N), "ad_read");
  double *t = malloc((size_t)runs * sizeof *t);
  bench_check(t, "malloc");
  for (int r = -2; r < runs; r++) {
    ad_scope_begin();
    double t0 = bench_now();
    ad_tensor *h = ad_hessian(bench_rosenbrock, NULL, x);
    double t1 = bench_now();
    bench_check(h, "ad_hessian");
    if (r == -1) {
      bench_check_status(ad_read(h, H, HESS_N * HESS_N), "ad_read");
      double err = hessian_error(xs, H, HESS_N);
      if (err > 1e-9)
        fprintf(stderr, "bench_forward: Hessian off by %g\n", err);
    }
    ad_scope_end();
    if (r >= 0) t[r] = (t1 - t0) * 1e6;
  }
  double m = bench_median(t, runs);
  free(t);
  ad_scope_end();
  return m;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--hessian-us") == 0) {
    /* One number for run_bench.sh's alternation with ADOL-C. */
    printf("%.3f\n", hessian_us(argc > 2 ? atoi(argv[2]) : 21));
    return 0;
  }
  bool no_hessian = argc > 1 && strcmp(argv[1], "--no-hessian") == 0;
  bench_canary("start of bench_forward");
  bench_rosen_fwd();
  if (!no_hessian)
    bench_line("hessian n=100 rosenbrock", "libad",
               "time per Hessian (ad_hessian, median of 21)", hessian_us(21),
               "us");
  return 0;
}
