/* Benchmarks of the GSL adapters (issue 6): time per fdf call of
 * ad_gsl_multimin_fdf against a gradient written by hand in C, for the
 * Rosenbrock and logistic-regression examples' functions. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>
#include <ad/gsl.h>
#include <gsl/gsl_blas.h>
#include <gsl/gsl_errno.h>

#include "bench_util.h"

/* The functions of the examples, as they are (their main left out). */
#define AD_EXAMPLE_NO_MAIN
#include "../examples/gsl_logistic.c"
#include "../examples/gsl_rosenbrock.c"

/* ------------------------------------------------------------------------
 * The functions, in libad and by hand
 * ---------------------------------------------------------------------- */

/* Rosenbrock's function and its gradient in one loop. */
static void rosen_fdf_by_hand(const gsl_vector *xv, void *params, double *f,
                              gsl_vector *gv) {
  (void)params;
  size_t n = xv->size;
  const double *x = xv->data;
  double *g = gv->data, sum = 0;
  g[0] = 0;
  for (size_t i = 0; i + 1 < n; i++) {
    double t = x[i + 1] - x[i] * x[i], u = 1 - x[i];
    sum += 100 * t * t + u * u;
    g[i] += -400 * t * x[i] - 2 * u;
    g[i + 1] = 200 * t;
  }
  *f = sum;
}

/* Logistic regression: the negative log-likelihood of w for the rows of
 * X (m x n) and labels y, sum_i softplus(z_i) - y_i z_i with z = X w;
 * libad's side is the example's logit_nll on the same data. */
typedef struct logit {
  int64_t m, n;
  double *X, *y, *z; /* z: scratch of m */
  logit_data tensors;
} logit;

static void logit_fdf_by_hand(const gsl_vector *wv, void *params, double *f,
                              gsl_vector *gv) {
  logit *d = params;
  size_t m = (size_t)d->m, n = (size_t)d->n;
  /* GSL's BLAS calls, which reach OpenBLAS's dgemv. */
  gsl_matrix_const_view X = gsl_matrix_const_view_array(d->X, m, n);
  gsl_vector_view z = gsl_vector_view_array(d->z, m);
  gsl_blas_dgemv(CblasNoTrans, 1.0, &X.matrix, wv, 0.0, &z.vector);
  double sum = 0;
  for (size_t i = 0; i < m; i++) {
    /* softplus(z) = max(z, 0) + log1p(e) and sigmoid(z) from the same
     * e = exp(-|z|), stable for any z. */
    double zi = d->z[i], e = exp(-fabs(zi));
    sum += fmax(zi, 0) + log1p(e) - d->y[i] * zi;
    d->z[i] = (zi >= 0 ? 1 : e) / (1 + e) - d->y[i]; /* dNLL/dz */
  }
  gsl_blas_dgemv(CblasTrans, 1.0, &X.matrix, &z.vector, 0.0, gv);
  *f = sum;
}

static void logit_make(logit *d, int64_t m, int64_t n) {
  d->m = m;
  d->n = n;
  d->X = malloc((size_t)(m * n) * sizeof(double));
  d->y = malloc((size_t)m * sizeof(double));
  d->z = malloc((size_t)m * sizeof(double));
  bench_check(d->X && d->y && d->z ? d->X : NULL, "malloc");
  /* Features uniform in [-1, 1), labels from a fixed linear rule with
   * noise, so that the likelihood has a finite maximum. */
  uint64_t s = 12345;
  for (int64_t k = 0; k < m * n; k++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    d->X[k] = (double)(s >> 11) / 9007199254740992.0 * 2 - 1;
  }
  for (int64_t i = 0; i < m; i++) {
    double z = 0;
    for (int64_t j = 0; j < n; j++) z += d->X[i * n + j] * (j % 3 - 1.0);
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    double u = (double)(s >> 11) / 9007199254740992.0;
    d->y[i] = u < 1 / (1 + exp(-z)) ? 1.0 : 0.0;
  }
  d->tensors.X = ad_tensor_new(2, (const int64_t[]){m, n}, d->X);
  d->tensors.y = ad_tensor_new(1, &m, d->y);
  d->tensors.rows = m;
  bench_check(d->tensors.X && d->tensors.y ? d->tensors.X : NULL,
              "data tensors");
}

/* The example's data set (data/breast_cancer.csv, standardized, with the
 * column of ones), for both sides. */
static bool logit_from_file(logit *d, const char *path) {
  if (logit_load(path, &d->tensors) != 0) return false;
  d->m = d->tensors.rows;
  d->n = ad_shape(d->tensors.X)[1];
  d->X = malloc((size_t)(d->m * d->n) * sizeof(double));
  d->y = malloc((size_t)d->m * sizeof(double));
  d->z = malloc((size_t)d->m * sizeof(double));
  bench_check(d->X && d->y && d->z ? d->X : NULL, "malloc");
  ad_read(d->tensors.X, d->X, d->m * d->n);
  ad_read(d->tensors.y, d->y, d->m);
  return true;
}

static void logit_free(logit *d) {
  free(d->X);
  free(d->y);
  free(d->z);
}

/* ------------------------------------------------------------------------
 * Timing: libad's fdf and the hand-written one, alternated
 * ---------------------------------------------------------------------- */

typedef void (*fdf_fn)(const gsl_vector *, void *, double *, gsl_vector *);

/* Seconds per call of fdf over a batch of `calls` calls. */
static double batch(fdf_fn fdf, void *params, const gsl_vector *x,
                    gsl_vector *g, long calls) {
  double f, t0 = bench_now();
  for (long c = 0; c < calls; c++) fdf(x, params, &f, g);
  return (bench_now() - t0) / (double)calls;
}

/* Calls per batch so that the slower of the two takes about 20 ms. */
static long batch_size(fdf_fn fdf, void *params, const gsl_vector *x,
                       gsl_vector *g) {
  double t = batch(fdf, params, x, g, 3);
  long calls = (long)(0.02 / (t > 1e-9 ? t : 1e-9));
  return calls < 1 ? 1 : calls > 1000000 ? 1000000 : calls;
}

/* 2, 10, 1e3, 1e5: sizes as the case names show them (no case name is
 * then a prefix of another, which bench/run_bench.sh's table needs). */
static const char *size_name(char *buf, size_t cap, int64_t n) {
  int e = 0;
  int64_t m = n;
  while (n >= 1000 && m % 10 == 0) {
    m /= 10;
    e++;
  }
  if (e && m < 10)
    snprintf(buf, cap, "%llde%d", (long long)m, e);
  else
    snprintf(buf, cap, "%lld", (long long)n);
  return buf;
}

/* Time both fdf's at x (median of RUNS alternated batches), check that
 * they agree, and print the figures. */
static void compare(const char *cs, const gsl_multimin_function_fdf *ad,
                    fdf_fn hand, void *hand_params, const gsl_vector *x) {
  enum { RUNS = 15 };
  size_t n = x->size;
  gsl_vector *g1 = gsl_vector_alloc(n), *g2 = gsl_vector_alloc(n);
  double f1, f2;
  ad->fdf(x, ad->params, &f1, g1);
  hand(x, hand_params, &f2, g2);
  double worst = fabs(f1 - f2) / (1 + fabs(f2));
  for (size_t i = 0; i < n; i++)
    worst = fmax(worst, fabs(g1->data[i] - g2->data[i]) /
                            (1 + fabs(g2->data[i])));
  if (ad_error() != AD_OK || !(worst < 1e-10)) {
    fprintf(stderr, "bench_gsl: %s: libad and the hand-written gradient "
                    "differ by %g (%s)\n",
            cs, worst, ad_error_message());
    exit(1);
  }
  long ca = batch_size(ad->fdf, ad->params, x, g1);
  long ch = batch_size(hand, hand_params, x, g2);
  long calls = ca < ch ? ca : ch;
  double ta[RUNS], th[RUNS];
  for (int r = -1; r < RUNS; r++) {
    double a = batch(ad->fdf, ad->params, x, g1, calls);
    double h = batch(hand, hand_params, x, g2, calls);
    if (r >= 0) {
      ta[r] = a * 1e6;
      th[r] = h * 1e6;
    }
  }
  double a = bench_median(ta, RUNS), h = bench_median(th, RUNS);
  bench_line(cs, "libad", "time per fdf call (ad_gsl_multimin_fdf)", a,
             "us");
  bench_line(cs, "c", "time per fdf call (gradient by hand)", h, "us");
  bench_line(cs, "libad", "libad fdf / hand-written fdf", a / h, "x");
  gsl_vector_free(g1);
  gsl_vector_free(g2);
}

static void rosen_case(int64_t n) {
  ad_scope_begin();
  gsl_multimin_function_fdf fdf;
  bench_check_status(ad_gsl_multimin_fdf(&fdf, rosenbrock, NULL, (size_t)n),
                     "ad_gsl_multimin_fdf");
  gsl_vector *x = gsl_vector_alloc((size_t)n);
  for (int64_t i = 0; i < n; i++)
    gsl_vector_set(x, (size_t)i, i % 2 ? 1.0 : -1.2);
  char cs[64], nb[24];
  snprintf(cs, sizeof cs, "gsl rosenbrock n=%s",
           size_name(nb, sizeof nb, n));
  compare(cs, &fdf, rosen_fdf_by_hand, NULL, x);
  gsl_vector_free(x);
  ad_gsl_multimin_fdf_free(&fdf);
  ad_scope_end();
}

/* m x n synthetic data, or the example's data set when m == 0. */
static void logit_case(int64_t m, int64_t n) {
  ad_scope_begin();
  logit d;
  char cs[96], nb[24], mb[24];
  if (m > 0) {
    logit_make(&d, m, n);
    snprintf(cs, sizeof cs, "gsl logistic n=%s m=%s",
             size_name(nb, sizeof nb, n), size_name(mb, sizeof mb, m));
  } else if (logit_from_file(&d, "data/breast_cancer.csv")) {
    snprintf(cs, sizeof cs, "gsl logistic breast cancer n=%lld m=%lld",
             (long long)d.n, (long long)d.m);
  } else {
    printf("# logistic regression on data/breast_cancer.csv skipped: run "
           "from the source tree\n");
    ad_scope_end();
    return;
  }
  gsl_multimin_function_fdf fdf;
  bench_check_status(ad_gsl_multimin_fdf(&fdf, logit_nll, &d.tensors,
                                         (size_t)d.n),
                     "ad_gsl_multimin_fdf");
  gsl_vector *w = gsl_vector_alloc((size_t)d.n);
  for (int64_t j = 0; j < d.n; j++)
    gsl_vector_set(w, (size_t)j, 0.1 * ((double)(j % 7) - 3));
  compare(cs, &fdf, logit_fdf_by_hand, &d, w);
  gsl_vector_free(w);
  ad_gsl_multimin_fdf_free(&fdf);
  logit_free(&d);
  ad_scope_end();
}

int main(void) {
  gsl_set_error_handler_off();
  bench_canary("start of bench_gsl");
  rosen_case(2);
  rosen_case(1000);
  rosen_case(100000);
  logit_case(1000, 2);
  logit_case(1000, 1000);
  logit_case(100000, 10);
  logit_case(0, 0);
  /* The examples' drivers are not timed here. */
  (void)rosenbrock_minimize;
  (void)logit_fit;
  return 0;
}
