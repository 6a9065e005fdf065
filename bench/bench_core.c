/* Benchmarks of the eager tensor core (issue 2): per-op overhead on
 * 1-element tensors, ad_matmul against raw cblas_dgemm, ad_add against a C
 * triad loop. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>

#include "bench_util.h"

/* ------------------------------------------------------------------------
 * 1. A chain of y = y*a + b on 1-element tensors, no AD, a scope ended
 *    every 1000 ops with ad_keep(y).
 * ---------------------------------------------------------------------- */

#define CHAIN_BLOCK 1000 /* ops per scope */

/* ns per op of one chain of nops ops; *result receives the final y. */
static double chain_run(int64_t nops, double *result) {
  const int64_t one[1] = {1};
  const double av = 0.5, bv = 1.0, yv = 0.0;
  ad_tensor *a = ad_tensor_new(1, one, &av);
  ad_tensor *b = ad_tensor_new(1, one, &bv);
  ad_tensor *y = ad_tensor_new(1, one, &yv);
  bench_check(a && b && y ? a : NULL, "ad_tensor_new");
  double t0 = bench_now();
  for (int64_t i = 0; i < nops; i += CHAIN_BLOCK) {
    ad_scope_begin();
    ad_tensor *z = y;
    for (int j = 0; j < CHAIN_BLOCK / 2; j++) z = ad_add(ad_mul(z, a), b);
    bench_check(z, "chain op");
    ad_keep(z);
    ad_scope_end();
    ad_release(y);
    y = z;
  }
  double t1 = bench_now();
  *result = ad_item(y);
  ad_release(y);
  ad_release(a);
  ad_release(b);
  return (t1 - t0) / (double)nops * 1e9;
}

static void bench_chain(void) {
  const int64_t nops = 1000000;
  enum { RUNS = 9 };
  double t[RUNS], y;
  chain_run(nops / 10, &y); /* warm-up: fills the free lists */
  for (int r = 0; r < RUNS; r++) t[r] = chain_run(nops, &y);
  if (fabs(y - 2.0) > 1e-9)
    fprintf(stderr, "bench_core: chain result %g, expected 2\n", y);
  bench_line("op chain 1e6 ops, 1-element, no AD", "libad",
             "per-op time (y=y*a+b, median of 9)", bench_median(t, RUNS),
             "ns/op");
}

/* ------------------------------------------------------------------------
 * 2. ad_matmul at n = 512 against cblas_dgemm on the same data, alternated.
 * ---------------------------------------------------------------------- */

static void bench_matmul(void) {
  const int n = 512;
  enum { RUNS = 25, WARM = 2 };
  const int64_t shape[2] = {n, n};
  ad_scope_begin();
  ad_seed(42);
  ad_tensor *A = ad_rand_uniform(2, shape, -1, 1);
  ad_tensor *B = ad_rand_uniform(2, shape, -1, 1);
  bench_check(A && B ? A : NULL, "ad_rand_uniform");
  size_t nn = (size_t)n * (size_t)n;
  double *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b);
  double *c = malloc(nn * sizeof *c), *cl = malloc(nn * sizeof *cl);
  bench_check(a && b && c && cl ? a : NULL, "malloc");
  bench_check_status(ad_read(A, a, (int64_t)nn), "ad_read");
  bench_check_status(ad_read(B, b, (int64_t)nn), "ad_read");
  double tl[RUNS], tr[RUNS];
  for (int r = -WARM; r < RUNS; r++) {
    ad_scope_begin();
    double t0 = bench_now();
    ad_tensor *C = ad_matmul(A, B);
    double t1 = bench_now();
    bench_check(C, "ad_matmul");
    if (r == RUNS - 1)
      bench_check_status(ad_read(C, cl, (int64_t)nn), "ad_read");
    ad_scope_end();
    double t2 = bench_now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n,
                b, n, 0.0, c, n);
    double t3 = bench_now();
    if (r >= 0) {
      tl[r] = t1 - t0;
      tr[r] = t3 - t2;
    }
  }
  double maxdiff = 0;
  for (size_t i = 0; i < nn; i++) maxdiff = fmax(maxdiff, fabs(c[i] - cl[i]));
  if (maxdiff > 1e-9)
    fprintf(stderr, "bench_core: ad_matmul differs from dgemm by %g\n",
            maxdiff);
  double flops = 2.0 * n * (double)n * n;
  double gl = flops / bench_median(tl, RUNS) * 1e-9;
  double gr = flops / bench_median(tr, RUNS) * 1e-9;
  const char *cs = "matmul n=512";
  bench_line(cs, "libad", "ad_matmul rate (median of 25)", gl, "GFLOP/s");
  bench_line(cs, "cblas_dgemm", "raw dgemm rate, same run (median of 25)",
             gr, "GFLOP/s");
  bench_line(cs, "libad", "ad_matmul / raw dgemm", gl / gr, "x");
  free(a);
  free(b);
  free(c);
  free(cl);
  ad_scope_end();
}

/* ------------------------------------------------------------------------
 * 3. Elementwise add of 10^7 doubles against a plain C triad loop.
 * ---------------------------------------------------------------------- */

/* Kept out of line so that the loop is timed as written. */
__attribute__((noinline)) static void triad(double *restrict a,
                                            const double *restrict b,
                                            const double *restrict c,
                                            int64_t n) {
  for (int64_t i = 0; i < n; i++) a[i] = b[i] + c[i];
}

static void bench_add(void) {
  const int64_t n = 10000000;
  enum { RUNS = 21, WARM = 2 };
  ad_scope_begin();
  ad_seed(7);
  ad_tensor *B = ad_rand_uniform(1, &n, -1, 1);
  ad_tensor *C = ad_rand_uniform(1, &n, -1, 1);
  bench_check(B && C ? B : NULL, "ad_rand_uniform");
  double *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
  double *c = malloc((size_t)n * sizeof *c);
  bench_check(a && b && c ? a : NULL, "malloc");
  bench_check_status(ad_read(B, b, n), "ad_read");
  bench_check_status(ad_read(C, c, n), "ad_read");
  memset(a, 0, (size_t)n * sizeof *a);
  double tl[RUNS], tr[RUNS];
  double check = 0;
  for (int r = -WARM; r < RUNS; r++) {
    ad_scope_begin();
    double t0 = bench_now();
    ad_tensor *S = ad_add(B, C);
    double t1 = bench_now();
    bench_check(S, "ad_add");
    ad_scope_end();
    double t2 = bench_now();
    triad(a, b, c, n);
    double t3 = bench_now();
    check += a[r + WARM];
    if (r >= 0) {
      tl[r] = t1 - t0;
      tr[r] = t3 - t2;
    }
  }
  if (!(check == check)) fprintf(stderr, "bench_core: NaN in triad\n");
  /* Bytes moved: read two arrays, write one. */
  double gb = 3.0 * 8.0 * (double)n * 1e-9;
  double bl = gb / bench_median(tl, RUNS), br = gb / bench_median(tr, RUNS);
  const char *cs = "add 1e7 doubles";
  bench_line(cs, "libad", "ad_add bandwidth (24 B/elem, median of 21)", bl,
             "GB/s");
  bench_line(cs, "c-triad", "a[i]=b[i]+c[i] bandwidth, same run", br,
             "GB/s");
  bench_line(cs, "libad", "ad_add / triad", bl / br, "x");
  free(a);
  free(b);
  free(c);
  ad_scope_end();
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--canary") == 0) {
    bench_canary(argc > 2 ? argv[2] : "end");
    return 0;
  }
  bench_canary("start");
  bench_chain();
  bench_matmul();
  bench_add();
  return 0;
}
