/* ADBench's GMM, LSTM and BA objectives written with libad ops
 * (bench/adbench/): objective values and full gradients (BA: residuals and
 * sparse Jacobian values) against the reference outputs in bench/data, to
 * ADBench's relative error 1e-8. */
#include "testutil.h"

#include <stdlib.h>
#include <unistd.h>

#include "../bench/adbench/ba.h"
#include "../bench/adbench/gmm.h"
#include "../bench/adbench/lstm.h"

/* ADBench's accuracy criterion (rho as in its tests). */
#define RHO_MAX 1e-8

/* The data directory: bench/data from the repository root (where make
 * runs the tests), else next to this source file. */
static const char *data_dir(void) {
  static char dir[1024];
  if (dir[0]) return dir;
  if (access("bench/data/reference", R_OK) == 0) {
    snprintf(dir, sizeof dir, "bench/data");
  } else {
    const char *f = __FILE__, *slash = strrchr(f, '/');
    int len = slash ? (int)(slash - f) : 0;
    snprintf(dir, sizeof dir, "%.*s%s../bench/data", len, f, len ? "/" : "");
  }
  return dir;
}

/* The reference file data_dir()/reference/NAME_WHICH.txt: n numbers. */
static double *reference(const char *name, const char *which, int64_t *n) {
  char path[1200];
  snprintf(path, sizeof path, "%s/reference/%s_%s.txt", data_dir(), name,
           which);
  double *v = adb_read_numbers(path, n);
  assert_non_null(v);
  return v;
}

/* Fail unless the n values of t are within rho 1e-8 of want. */
static void assert_rho(ad_tensor *t, const double *want, int64_t n,
                       const char *what) {
  assert_non_null(t);
  assert_int_equal(ad_numel(t), n);
  double *got = malloc((size_t)n * sizeof *got);
  assert_non_null(got);
  assert_int_equal(ad_read(t, got, n), AD_OK);
  int64_t worst = 0;
  double rho = 0;
  for (int64_t i = 0; i < n; i++) {
    double r = adb_rho(got[i], want[i]);
    if (!(r <= rho)) {
      rho = r;
      worst = i;
    }
  }
  if (!(rho < RHO_MAX))
    print_error("%s: element %lld is %.17g, reference %.17g (rho %.3g)\n",
                what, (long long)worst, got[worst], want[worst], rho);
  free(got);
  assert_true(rho < RHO_MAX);
}

/* F, F from the gradient's pass and the full gradient of a GMM instance
 * (chunk: points per chunk, 0 for one tape over all points) against the
 * reference. */
static void check_gmm(const char *file, const char *name, int64_t chunk) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s", data_dir(), file);
  adb_gmm_input in;
  assert_int_equal(adb_gmm_read(path, &in), 0);
  adb_gmm g;
  assert_int_equal(adb_gmm_init(&g, &in, chunk), 0);
  ad_tensor *alpha, *mu, *icf;
  adb_gmm_param_tensors(&in, &alpha, &mu, &icf);
  assert_true(alpha && mu && icf);
  int64_t nf, nj;
  double *rf = reference(name, "F", &nf), *rj = reference(name, "J", &nj);
  assert_int_equal(nf, 1);
  assert_int_equal(nj, in.K * (in.d + 1) * (in.d + 2) / 2);

  ad_tensor *F = adb_gmm_objective(&g, alpha, mu, icf);
  assert_rho(F, rf, 1, "GMM objective");
  ad_tensor *F2 = NULL;
  ad_tensor *J = adb_gmm_gradient(&g, alpha, mu, icf, &F2);
  assert_rho(F2, rf, 1, "GMM objective from the gradient's pass");
  assert_rho(J, rj, nj, "GMM gradient");
  assert_int_equal(ad_error(), AD_OK);

  free(rf);
  free(rj);
  ad_release(alpha);
  ad_release(mu);
  ad_release(icf);
  adb_gmm_release(&g);
  adb_gmm_free(&in);
}

static void test_gmm_d2_K5(void **state) {
  (void)state;
  check_gmm("gmm/1k/gmm_d2_K5.txt", "gmm_1k_d2_K5", 0);
}

/* The chunked path (split reverse pass), used for the 2.5M instances:
 * 1000 points in chunks of 128 (the last one short). */
static void test_gmm_d2_K5_chunked(void **state) {
  (void)state;
  check_gmm("gmm/1k/gmm_d2_K5.txt", "gmm_1k_d2_K5", 128);
}

/* d = 10 exercises the lower-triangle layout beyond one entry. */
static void test_gmm_d10_K25(void **state) {
  (void)state;
  check_gmm("gmm/1k/gmm_d10_K25.txt", "gmm_1k_d10_K25", test_quick() ? 0 : 300);
}

static void test_lstm_l2(void **state) {
  (void)state;
  char path[1200];
  snprintf(path, sizeof path, "%s/lstm/lstm_l2_c1024.txt", data_dir());
  adb_lstm_input in;
  assert_int_equal(adb_lstm_read(path, &in), 0);
  assert_int_equal(in.l, 2);
  assert_int_equal(in.c, 1024);
  assert_int_equal(in.b, 14);
  adb_lstm L;
  assert_int_equal(adb_lstm_init(&L, &in), 0);
  ad_tensor *mp, *ep;
  adb_lstm_param_tensors(&in, &mp, &ep);
  assert_true(mp && ep);
  int64_t nf, nj;
  double *rf = reference("lstm_l2_c1024", "F", &nf);
  double *rj = reference("lstm_l2_c1024", "J", &nj);
  assert_int_equal(nj, 266);

  ad_tensor *F = adb_lstm_objective(&L, mp, ep);
  assert_rho(F, rf, 1, "LSTM objective");
  ad_tensor *F2 = NULL;
  ad_tensor *J = adb_lstm_gradient(&L, mp, ep, &F2);
  assert_rho(F2, rf, 1, "LSTM objective from the gradient's pass");
  assert_rho(J, rj, nj, "LSTM gradient");
  assert_int_equal(ad_error(), AD_OK);

  free(rf);
  free(rj);
  ad_release(mp);
  ad_release(ep);
  adb_lstm_release(&L);
  adb_lstm_free(&in);
}

/* A file holding one point stands for n copies of it (the 2.5M
 * instances); a malformed file is refused. */
static void test_gmm_reader(void **state) {
  (void)state;
  char path[] = "/tmp/ad_test_adbench_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  /* d=2 K=1 n=3; alpha; mu; icf (q0 q1 l10); one point; gamma m */
  fputs("2 1 3\n0.5\n1 2\n0.1 0.2 0.3\n4 5\n1 0\n", f);
  fclose(f);
  adb_gmm_input in;
  assert_int_equal(adb_gmm_read(path, &in), 0);
  assert_int_equal(in.n, 3);
  assert_int_equal(in.replicated, 1);
  for (int i = 0; i < 3; i++) {
    assert_true(in.x[2 * i] == 4.0);
    assert_true(in.x[2 * i + 1] == 5.0);
  }
  assert_true(in.icf[2] == 0.3);
  adb_gmm_free(&in);
  f = fopen(path, "w");
  assert_non_null(f);
  fputs("2 1 3\n0.5\n1 2\n", f); /* truncated */
  fclose(f);
  assert_int_equal(adb_gmm_read(path, &in), -1);
  unlink(path);
  assert_int_equal(adb_gmm_read(path, &in), -1); /* missing */
}

/* ------------------------------------------------------------------------
 * BA
 * ---------------------------------------------------------------------- */

/* The values of t (n of them), malloc'ed. */
static double *values(ad_tensor *t, int64_t n) {
  assert_non_null(t);
  assert_int_equal(ad_numel(t), n);
  double *v = malloc((size_t)n * sizeof *v);
  assert_non_null(v);
  assert_int_equal(ad_read(t, v, n), AD_OK);
  return v;
}

/* F, F from J's pass, J by reverse and by forward mode of a BA instance
 * (chunk: observations per chunk) against the expanded references F
 * (3p) and J (31p); also the CSR structure against section 1.2's layout. */
static void check_ba(const adb_ba_input *in, int64_t chunk, const double *rf,
                     const double *rj, double tol) {
  int64_t n = in->n, m = in->m, p = in->p;
  adb_ba b;
  assert_int_equal(adb_ba_init(&b, in, chunk), 0);
  ad_tensor *cams, *X, *w;
  adb_ba_param_tensors(in, &cams, &X, &w);
  assert_true(cams && X && w);
  ad_tensor *F = adb_ba_objective(&b, cams, X, w), *F2 = NULL;
  ad_tensor *J = adb_ba_jacobian(&b, cams, X, w, &F2);
  ad_tensor *Jf = adb_ba_jacobian_fwd(&b, cams, X, w);
  double *f = values(F, 3 * p), *f2 = values(F2, 3 * p);
  double *j = values(J, 31 * p), *jf = values(Jf, 31 * p);
  double rho[4] = {adb_max_rho(f, rf, 3 * p), adb_max_rho(f2, rf, 3 * p),
                   adb_max_rho(j, rj, 31 * p), adb_max_rho(jf, rj, 31 * p)};
  const char *what[4] = {"F", "F from J's pass", "J (reverse)",
                         "J (forward)"};
  for (int k = 0; k < 4; k++) {
    if (!(rho[k] < tol))
      print_error("BA n=%lld m=%lld p=%lld chunk %lld: %s off by rho %.3g\n",
                  (long long)n, (long long)m, (long long)p, (long long)chunk,
                  what[k], rho[k]);
    assert_true(rho[k] < tol);
  }
  /* Reverse and forward mode agree far more closely than the tolerance. */
  assert_true(adb_max_rho(j, jf, 31 * p) < 1e-12);
  /* CSR: 15 entries per reprojection row (camera, point, weight), one per
   * weight row. */
  assert_int_equal(b.rows[3 * p], 31 * p);
  for (int64_t i = 0; i < p; i++) {
    for (int r = 0; r < 2; r++) {
      const int64_t *c = b.cols + b.rows[2 * i + r];
      assert_int_equal(b.rows[2 * i + r + 1] - b.rows[2 * i + r], 15);
      assert_int_equal(c[0], 11 * (i % n));
      assert_int_equal(c[10], 11 * (i % n) + 10);
      assert_int_equal(c[11], 11 * n + 3 * (i % m));
      assert_int_equal(c[13], 11 * n + 3 * (i % m) + 2);
      assert_int_equal(c[14], 11 * n + 3 * m + i);
    }
    assert_int_equal(b.rows[2 * p + i + 1] - b.rows[2 * p + i], 1);
    assert_int_equal(b.cols[b.rows[2 * p + i]], 11 * n + 3 * m + i);
  }
  assert_int_equal(ad_error(), AD_OK);
  free(f);
  free(f2);
  free(j);
  free(jf);
  ad_release(cams);
  ad_release(X);
  ad_release(w);
  adb_ba_release(&b);
}

/* ADBench's own BA unit test: n=2 cameras, m=10 points, p=10
 * observations; its expected residuals (e_x, e_y, w_err, the same for
 * every observation) and its 310 CSR values. */
static void test_ba_unit(void **state) {
  (void)state;
  char path[1200];
  snprintf(path, sizeof path, "%s/ba/ba_test.txt", data_dir());
  adb_ba_input in;
  assert_int_equal(adb_ba_read(path, &in), 0);
  assert_int_equal(in.n, 2);
  assert_int_equal(in.m, 10);
  assert_int_equal(in.p, 10);
  int64_t nf, nj, p = in.p;
  double *ef = reference("expected_ba_test", "F", &nf);
  double *ej = reference("expected_ba_test", "J_vals", &nj);
  assert_int_equal(nf, 3);
  assert_int_equal(nj, 31 * p);
  double rf[30];
  for (int64_t i = 0; i < p; i++) {
    rf[2 * i] = ef[0];
    rf[2 * i + 1] = ef[1];
    rf[2 * p + i] = ef[2];
  }
  check_ba(&in, 0, rf, ej, RHO_MAX);
  check_ba(&in, 3, rf, ej, RHO_MAX); /* chunks of 3, the last one short */
  free(ef);
  free(ej);
  adb_ba_free(&in);
}

/* ba1 (31,843 observations) against the reference, in one chunk and in
 * the benchmark's chunks (the last one short). */
static void test_ba1(void **state) {
  (void)state;
  char path[1200];
  snprintf(path, sizeof path, "%s/ba/ba1_n49_m7776_p31843.txt", data_dir());
  adb_ba_input in;
  assert_int_equal(adb_ba_read(path, &in), 0);
  assert_int_equal(in.n, 49);
  assert_int_equal(in.m, 7776);
  assert_int_equal(in.p, 31843);
  snprintf(path, sizeof path,
           "%s/reference/ba1_n49_m7776_p31843_compact.txt", data_dir());
  adb_ba_ref ref;
  assert_int_equal(adb_ba_read_ref(path, &ref), 0);
  assert_int_equal(ref.p, in.p);
  double *rf, *rj;
  adb_ba_expand_ref(&ref, &rf, &rj);
  assert_true(rf && rj);
  check_ba(&in, ADB_BA_CHUNK, rf, rj, RHO_MAX);
  if (!test_quick()) check_ba(&in, 0, rf, rj, RHO_MAX);
  free(rf);
  free(rj);
  adb_ba_free(&in);
}

/* Section 1.2 evaluated directly, one observation in plain C: cam (11),
 * X (3), w, feat (2) -> e (2). */
static void ba_direct(const double *cam, const double *X, double w,
                      const double *feat, double *e) {
  const double *r = cam, *C = cam + 3;
  double Y[3] = {X[0] - C[0], X[1] - C[1], X[2] - C[2]}, Xc[3];
  double th = sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]);
  if (th != 0) {
    double v[3] = {r[0] / th, r[1] / th, r[2] / th};
    double vY = v[0] * Y[0] + v[1] * Y[1] + v[2] * Y[2];
    double cr[3] = {v[1] * Y[2] - v[2] * Y[1], v[2] * Y[0] - v[0] * Y[2],
                    v[0] * Y[1] - v[1] * Y[0]};
    for (int j = 0; j < 3; j++)
      Xc[j] = Y[j] * cos(th) + cr[j] * sin(th) + v[j] * vY * (1 - cos(th));
  } else {
    double cr[3] = {r[1] * Y[2] - r[2] * Y[1], r[2] * Y[0] - r[0] * Y[2],
                    r[0] * Y[1] - r[1] * Y[0]};
    for (int j = 0; j < 3; j++) Xc[j] = Y[j] + cr[j];
  }
  double u[2] = {Xc[0] / Xc[2], Xc[1] / Xc[2]};
  double r2 = u[0] * u[0] + u[1] * u[1];
  double L = 1 + cam[9] * r2 + cam[10] * r2 * r2;
  for (int k = 0; k < 2; k++)
    e[k] = w * (cam[6] * u[k] * L + cam[7 + k] - feat[k]);
}

/* A file listing every camera, point, weight and feature, with a camera
 * whose rotation is exactly zero (ADBench's other branch, taken through
 * ad_where): residuals against section 1.2 evaluated directly, the
 * Jacobian against central differences of it. */
static void test_ba_zero_rotation(void **state) {
  (void)state;
  char path[] = "/tmp/ad_test_adbench_ba_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *fp = fdopen(fd, "w");
  assert_non_null(fp);
  fputs("2 3 5\n"
        "0 0 0 0.5 -0.25 -3 400 5 -8 0.08 0.003\n"
        "0.3 -0.2 0.1 -1 2 -50 300 2 3 -0.05 0.01\n"
        "1 2 3\n-2 1 4\n0.5 0.5 6\n"
        "0.4 0.7 1.1 0.9 0.3\n"
        "10 20\n-30 40\n50 -60\n5 5\n-7 3\n",
        fp);
  fclose(fp);
  adb_ba_input in;
  assert_int_equal(adb_ba_read(path, &in), 0);
  unlink(path);
  assert_int_equal(in.p, 5);
  assert_true(in.cams[11 + 6] == 300 && in.X[8] == 6 && in.w[4] == 0.3);
  int64_t p = in.p;
  double rf[15], rj[155];
  for (int64_t i = 0; i < p; i++) {
    double cam[11], X[3], w = in.w[i], e[2], ep[2], em[2];
    memcpy(cam, in.cams + 11 * (i % in.n), sizeof cam);
    memcpy(X, in.X + 3 * (i % in.m), sizeof X);
    ba_direct(cam, X, w, in.feat + 2 * i, e);
    rf[2 * i] = e[0];
    rf[2 * i + 1] = e[1];
    rf[2 * p + i] = 1 - w * w;
    rj[30 * p + i] = -2 * w;
    for (int k = 0; k < 15; k++) {
      double *x = k < 11 ? &cam[k] : k < 14 ? &X[k - 11] : &w, x0 = *x;
      double h = 1e-6 * (fabs(x0) > 1 ? fabs(x0) : 1);
      *x = x0 + h;
      ba_direct(cam, X, w, in.feat + 2 * i, ep);
      *x = x0 - h;
      ba_direct(cam, X, w, in.feat + 2 * i, em);
      *x = x0;
      rj[30 * i + k] = (ep[0] - em[0]) / (2 * h);
      rj[30 * i + 15 + k] = (ep[1] - em[1]) / (2 * h);
    }
  }
  /* Residuals exactly as the definition; the Jacobian to the accuracy of
   * central differences (the forward/reverse agreement is checked to
   * 1e-12 inside). */
  adb_ba b;
  assert_int_equal(adb_ba_init(&b, &in, 0), 0);
  ad_tensor *cams, *X, *w;
  adb_ba_param_tensors(&in, &cams, &X, &w);
  assert_true(adb_ba_zero_rotation(&b, cams));
  ad_tensor *F = adb_ba_objective(&b, cams, X, w);
  double *f = values(F, 3 * p);
  assert_true(adb_max_rho(f, rf, 3 * p) < 1e-12);
  free(f);
  ad_release(cams);
  ad_release(X);
  ad_release(w);
  adb_ba_release(&b);
  check_ba(&in, 2, rf, rj, 1e-7);
  adb_ba_free(&in);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(test_gmm_reader),
      scoped_test(test_gmm_d2_K5),
      scoped_test(test_gmm_d2_K5_chunked),
      scoped_test(test_gmm_d10_K25),
      scoped_test(test_lstm_l2),
      scoped_test(test_ba_unit),
      scoped_test(test_ba1),
      scoped_test(test_ba_zero_rotation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
