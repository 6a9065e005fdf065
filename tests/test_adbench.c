/* ADBench's GMM and LSTM objectives written with libad ops
 * (bench/adbench/): objective values and full gradients against the
 * reference outputs in bench/data, to ADBench's relative error 1e-8. */
#include "testutil.h"

#include <stdlib.h>
#include <unistd.h>

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

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(test_gmm_reader),
      scoped_test(test_gmm_d2_K5),
      scoped_test(test_gmm_d2_K5_chunked),
      scoped_test(test_gmm_d10_K25),
      scoped_test(test_lstm_l2),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
