/* Implementation of the shared test assertions. */
#include "testutil.h"

#include <stdlib.h>

void assert_tensor_near_impl(const ad_tensor *t, const double *expect,
                             int64_t n, double tol, const char *file,
                             int line) {
  if (!t) {
    print_error("%s:%d: tensor is NULL (%s)\n", file, line,
                   ad_error_message());
    _fail(file, line);
  }
  if (ad_numel(t) != n) {
    print_error("%s:%d: tensor has %lld elements, expected %lld\n", file,
                   line, (long long)ad_numel(t), (long long)n);
    _fail(file, line);
  }
  double *got = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  assert_non_null(got);
  ad_read(t, got, n);
  for (int64_t i = 0; i < n; i++) {
    double e = expect[i], g = got[i];
    int both_nan = isnan(e) && isnan(g);
    int same_inf = isinf(e) && g == e;
    if (both_nan || same_inf) continue;
    if (!(fabs(g - e) <= tol * (1.0 + fabs(e)))) {
      print_error("%s:%d: element %lld is %.17g, expected %.17g\n", file,
                     line, (long long)i, g, e);
      free(got);
      _fail(file, line);
    }
  }
  free(got);
}

void assert_tensors_close_impl(const ad_tensor *a, const ad_tensor *b,
                               double tol, const char *file, int line) {
  if (!a || !b) {
    print_error("%s:%d: tensor is NULL (%s)\n", file, line,
                   ad_error_message());
    _fail(file, line);
  }
  if (ad_ndim(a) != ad_ndim(b)) {
    print_error("%s:%d: ranks differ: %d vs %d\n", file, line, ad_ndim(a),
                   ad_ndim(b));
    _fail(file, line);
  }
  for (int i = 0; i < ad_ndim(a); i++) {
    if (ad_shape(a)[i] != ad_shape(b)[i]) {
      print_error("%s:%d: axis %d differs: %lld vs %lld\n", file, line, i,
                     (long long)ad_shape(a)[i], (long long)ad_shape(b)[i]);
      _fail(file, line);
    }
  }
  int64_t n = ad_numel(b);
  double *e = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  assert_non_null(e);
  ad_read(b, e, n);
  assert_tensor_near_impl(a, e, n, tol, file, line);
  free(e);
}

void assert_error_impl(ad_status code, const char *text, const char *file,
                       int line) {
  if (ad_error() != code) {
    print_error("%s:%d: error is %d (%s), expected %d (%s)\n", file, line,
                   ad_error(), ad_error_message(), code, ad_strerror(code));
    _fail(file, line);
  }
  if (text && !strstr(ad_error_message(), text)) {
    print_error("%s:%d: message \"%s\" lacks \"%s\"\n", file, line,
                   ad_error_message(), text);
    _fail(file, line);
  }
  ad_error_clear();
}

int test_scope_setup(void **state) {
  (void)state;
  ad_error_clear();
  ad_scope_begin();
  return 0;
}

int test_scope_teardown(void **state) {
  (void)state;
  ad_scope_end();
  if (ad_error() != AD_OK) {
    print_error("error left after the test: %s\n", ad_error_message());
    ad_error_clear();
    return -1;
  }
  return 0;
}

int test_quick(void) { return getenv("AD_TEST_QUICK") != NULL; }

static ad_status cube_forward(ad_custom_ctx *c, ad_tensor *const *in,
                              ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_mul(ad_square(in[0]), in[0]);
  return out[0] ? AD_OK : ad_error();
}

static ad_status cube_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                          ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_mul_scalar(ad_square(ad_custom_input(c, 0)), 3));
  return gin[0] ? AD_OK : ad_error();
}

ad_tensor *test_cube(ad_tensor *x) {
  static const ad_custom_op cube = {"cube", 1, 1, cube_forward, cube_vjp,
                                    NULL};
  ad_tensor *out = NULL;
  return ad_custom_apply(&cube, NULL, &x, &out) == AD_OK ? out : NULL;
}
