/* Tests of the reductions, argmax and softmax: values, axes, keepdims,
 * empty and strided inputs, NaN/Inf handling and every error path. */
#include "testutil.h"

/* Only for ad__fail_alloc_after, the allocation fault injector. */
#include "internal.h"

#define TOL 1e-14

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

static ad_tensor *mat(int64_t r, int64_t c, const double *v) {
  return ad_tensor_new(2, SHAPE(r, c), v);
}

/* [[1, 2, 3], [4, 5, 6]] */
static ad_tensor *m23(void) { return mat(2, 3, VALUES(1, 2, 3, 4, 5, 6)); }

/* (2, 3, 4) holding 0..23 */
static ad_tensor *t234(void) {
  double v[24];
  for (int i = 0; i < 24; i++) v[i] = i;
  return ad_tensor_new(3, SHAPE(2, 3, 4), v);
}

#define AXES(...) ((const int[]){__VA_ARGS__})

/* ---- sum ----------------------------------------------------------------- */

static void sum_all_axes(void **state) {
  (void)state;
  ad_tensor *r = ad_sum(m23(), 0, NULL, false);
  assert_shape(r, 0, 0);
  assert_true(ad_item(r) == 21);
  r = ad_sum_all(t234());
  assert_shape(r, 0, 0);
  assert_true(ad_item(r) == 276);
}

static void sum_one_axis(void **state) {
  (void)state;
  ad_tensor *r = ad_sum(m23(), 1, AXES(0), false);
  assert_shape(r, 1, 3);
  assert_tensor_near(r, VALUES(5, 7, 9), 3, TOL);
  r = ad_sum(m23(), 1, AXES(1), false);
  assert_shape(r, 1, 2);
  assert_tensor_near(r, VALUES(6, 15), 2, TOL);
}

static void sum_negative_axis(void **state) {
  (void)state;
  ad_tensor *r = ad_sum(m23(), 1, AXES(-1), false);
  assert_shape(r, 1, 2);
  assert_tensor_near(r, VALUES(6, 15), 2, TOL);
  r = ad_sum(m23(), 1, AXES(-2), false);
  assert_tensor_near(r, VALUES(5, 7, 9), 3, TOL);
}

static void sum_keepdims(void **state) {
  (void)state;
  ad_tensor *r = ad_sum(m23(), 1, AXES(1), true);
  assert_shape(r, 2, 2, 1);
  assert_tensor_near(r, VALUES(6, 15), 2, TOL);
  r = ad_sum(m23(), 0, NULL, true);
  assert_shape(r, 2, 1, 1);
  assert_tensor_near(r, VALUES(21), 1, TOL);
}

static void sum_several_axes(void **state) {
  (void)state;
  /* Over axes 0 and 2 of 0..23 shaped (2, 3, 4): j-th entry is
   * sum_i sum_k (12 i + 4 j + k) = 8 * 4 j + (12 * 4 + 2 * 6). */
  ad_tensor *r = ad_sum(t234(), 2, AXES(0, 2), false);
  assert_shape(r, 1, 3);
  assert_tensor_near(r, VALUES(60, 92, 124), 3, TOL);
  r = ad_sum(t234(), 2, AXES(2, -3), true);
  assert_shape(r, 3, 1, 3, 1);
  assert_tensor_near(r, VALUES(60, 92, 124), 3, TOL);
}

static void sum_adjacent_axes(void **state) {
  (void)state;
  ad_tensor *r = ad_sum(t234(), 2, AXES(1, 2), false);
  assert_shape(r, 1, 2);
  assert_tensor_near(r, VALUES(66, 210), 2, TOL);
  r = ad_sum(t234(), 2, AXES(0, 1), false);
  assert_shape(r, 1, 4);
  assert_tensor_near(r, VALUES(60, 66, 72, 78), 4, TOL);
}

static void sum_rank0(void **state) {
  (void)state;
  ad_tensor *r = ad_sum(ad_scalar(4.5), 0, NULL, false);
  assert_shape(r, 0, 0);
  assert_true(ad_item(r) == 4.5);
  r = ad_sum(ad_scalar(4.5), 0, NULL, true);
  assert_shape(r, 0, 0);
}

static void sum_empty(void **state) {
  (void)state;
  assert_true(ad_item(ad_sum(ad_zeros(1, SHAPE(0)), 0, NULL, false)) == 0);
  ad_tensor *r = ad_sum(ad_ones(2, SHAPE(0, 3)), 1, AXES(0), false);
  assert_shape(r, 1, 3);
  assert_tensor_near(r, VALUES(0, 0, 0), 3, 0);
  r = ad_sum(ad_ones(2, SHAPE(0, 3)), 1, AXES(1), false);
  assert_shape(r, 1, 0);
}

static void sum_strided_input(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(m23()); /* [[1,4],[2,5],[3,6]] */
  assert_tensor_near(ad_sum(t, 1, AXES(0), false), VALUES(6, 15), 2, TOL);
  assert_tensor_near(ad_sum(t, 1, AXES(1), false), VALUES(5, 7, 9), 3, TOL);
  assert_true(ad_item(ad_sum_all(t)) == 21);
}

static void sum_is_accurate(void **state) {
  (void)state;
  /* Pairwise summation keeps 10^5 copies of 0.1 within a few ulps. */
  enum { N = 100000 };
  ad_tensor *r = ad_sum_all(ad_full(1, SHAPE(N), 0.1));
  assert_true(fabs(ad_item(r) - 10000.0) < 1e-9);
}

static void sum_rank8(void **state) {
  (void)state;
  /* Alternating reduced axes exercise the general walk. */
  double v[256], e[16] = {0};
  for (int i = 0; i < 256; i++) v[i] = i;
  for (int i = 0; i < 256; i++) {
    /* kept axes 1, 3, 5, 7 are bits 6, 4, 2, 0 of i */
    int o = ((i >> 6) & 1) << 3 | ((i >> 4) & 1) << 2 | ((i >> 2) & 1) << 1 |
            (i & 1);
    e[o] += v[i];
  }
  ad_tensor *t = ad_tensor_new(8, SHAPE(2, 2, 2, 2, 2, 2, 2, 2), v);
  ad_tensor *r = ad_sum(t, 4, AXES(0, 2, 4, 6), false);
  assert_shape(r, 4, 2, 2, 2, 2);
  assert_tensor_near(r, e, 16, TOL);
}

/* ---- mean, prod ---------------------------------------------------------- */

static void mean_values(void **state) {
  (void)state;
  assert_true(ad_item(ad_mean(m23(), 0, NULL, false)) == 3.5);
  assert_tensor_near(ad_mean(m23(), 1, AXES(0), false), VALUES(2.5, 3.5, 4.5),
                     3, TOL);
  ad_tensor *r = ad_mean(t234(), 2, AXES(0, 2), true);
  assert_shape(r, 3, 1, 3, 1);
  assert_tensor_near(r, VALUES(7.5, 11.5, 15.5), 3, TOL);
}

static void mean_empty_is_nan(void **state) {
  (void)state;
  assert_true(isnan(ad_item(ad_mean(ad_zeros(1, SHAPE(0)), 0, NULL, false))));
  ad_tensor *r = ad_mean(ad_zeros(2, SHAPE(0, 2)), 1, AXES(0), false);
  double e[2] = {NAN, NAN};
  assert_tensor_near(r, e, 2, 0);
  assert_int_equal(ad_error(), AD_OK);
}

static void prod_values(void **state) {
  (void)state;
  assert_true(ad_item(ad_prod(m23(), 0, NULL, false)) == 720);
  assert_tensor_near(ad_prod(m23(), 1, AXES(-1), true), VALUES(6, 120), 2,
                     TOL);
  assert_shape(ad_prod(m23(), 1, AXES(-1), true), 2, 2, 1);
  assert_tensor_near(ad_prod(m23(), 1, AXES(0), false), VALUES(4, 10, 18), 3,
                     TOL);
}

static void prod_empty_is_one(void **state) {
  (void)state;
  assert_true(ad_item(ad_prod(ad_zeros(1, SHAPE(0)), 0, NULL, false)) == 1);
  assert_tensor_near(ad_prod(ad_zeros(2, SHAPE(0, 2)), 1, AXES(0), false),
                     VALUES(1, 1), 2, 0);
}

/* ---- max, min ------------------------------------------------------------ */

static void max_min_values(void **state) {
  (void)state;
  ad_tensor *t = mat(2, 3, VALUES(3, -1, 7, 2, 8, -5));
  assert_true(ad_item(ad_max(t, 0, NULL, false)) == 8);
  assert_true(ad_item(ad_min(t, 0, NULL, false)) == -5);
  assert_tensor_near(ad_max(t, 1, AXES(0), false), VALUES(3, 8, 7), 3, 0);
  assert_tensor_near(ad_min(t, 1, AXES(1), false), VALUES(-1, -5), 2, 0);
  ad_tensor *r = ad_max(t, 1, AXES(-1), true);
  assert_shape(r, 2, 2, 1);
  assert_tensor_near(r, VALUES(7, 8), 2, 0);
}

static void max_min_propagate_nan(void **state) {
  (void)state;
  ad_tensor *t = mat(2, 3, VALUES(1, NAN, 3, 4, 5, 6));
  assert_true(isnan(ad_item(ad_max(t, 0, NULL, false))));
  assert_true(isnan(ad_item(ad_min(t, 0, NULL, false))));
  double e[3] = {4, NAN, 6};
  assert_tensor_near(ad_max(t, 1, AXES(0), false), e, 3, 0);
  double e2[2] = {NAN, 4};
  assert_tensor_near(ad_min(t, 1, AXES(1), false), e2, 2, 0);
  /* NaN last in a row must still win. */
  assert_true(isnan(ad_item(ad_max(vec(3, VALUES(1, 2, NAN)), 0, NULL,
                                   false))));
}

static void max_min_infinities(void **state) {
  (void)state;
  ad_tensor *t = vec(3, VALUES(-INFINITY, -INFINITY, -INFINITY));
  assert_true(ad_item(ad_max(t, 0, NULL, false)) == -INFINITY);
  t = vec(3, VALUES(INFINITY, 1, -INFINITY));
  assert_true(ad_item(ad_max(t, 0, NULL, false)) == INFINITY);
  assert_true(ad_item(ad_min(t, 0, NULL, false)) == -INFINITY);
}

static void max_strided_input(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(mat(2, 3, VALUES(3, -1, 7, 2, 8, -5)));
  assert_tensor_near(ad_max(t, 1, AXES(0), false), VALUES(7, 8), 2, 0);
  assert_tensor_near(ad_min(t, 1, AXES(1), false), VALUES(2, -1, -5), 3, 0);
}

static void max_zero_size_is_error(void **state) {
  (void)state;
  assert_null(ad_max(ad_zeros(2, SHAPE(0, 3)), 1, AXES(0), false));
  assert_error(AD_EINVAL,
               "ad_max: zero-size reduction over axis 0 of shape (0, 3)");
  assert_null(ad_max(ad_zeros(2, SHAPE(0, 3)), 0, NULL, false));
  assert_error(AD_EINVAL, "zero-size reduction");
  assert_null(ad_min(ad_zeros(2, SHAPE(2, 0)), 1, AXES(-1), true));
  assert_error(AD_EINVAL,
               "ad_min: zero-size reduction over axis 1 of shape (2, 0)");
}

static void max_over_nonempty_axis_of_empty(void **state) {
  (void)state;
  /* Nothing to reduce is fine when each reduction itself is non-empty. */
  ad_tensor *r = ad_max(ad_zeros(2, SHAPE(0, 3)), 1, AXES(1), false);
  assert_shape(r, 1, 0);
}

/* ---- logsumexp ----------------------------------------------------------- */

static void logsumexp_values(void **state) {
  (void)state;
  double e = log(exp(1) + exp(2) + exp(3));
  assert_tensor_near(ad_logsumexp(m23(), 1, AXES(1), false),
                     VALUES(e, e + 3), 2, TOL);
  ad_tensor *r = ad_logsumexp(m23(), 1, AXES(0), true);
  assert_shape(r, 2, 1, 3);
  double c = log(1 + exp(3));
  assert_tensor_near(r, VALUES(1 + c, 2 + c, 3 + c), 3, TOL);
}

static void logsumexp_is_stable(void **state) {
  (void)state;
  ad_tensor *r = ad_logsumexp(vec(2, VALUES(1000, 1000)), 0, NULL, false);
  assert_tensor_near(r, VALUES(1000 + log(2)), 1, TOL);
  r = ad_logsumexp(vec(2, VALUES(-1000, -1000)), 0, NULL, false);
  assert_tensor_near(r, VALUES(-1000 + log(2)), 1, TOL);
}

static void logsumexp_infinities_and_empty(void **state) {
  (void)state;
  ad_tensor *r =
      ad_logsumexp(vec(2, VALUES(-INFINITY, -INFINITY)), 0, NULL, false);
  assert_true(ad_item(r) == -INFINITY);
  r = ad_logsumexp(vec(3, VALUES(1, INFINITY, -INFINITY)), 0, NULL, false);
  assert_true(ad_item(r) == INFINITY);
  r = ad_logsumexp(vec(2, VALUES(1, NAN)), 0, NULL, false);
  assert_true(isnan(ad_item(r)));
  r = ad_logsumexp(ad_zeros(1, SHAPE(0)), 0, NULL, false);
  assert_true(ad_item(r) == -INFINITY);
  assert_int_equal(ad_error(), AD_OK);
}

static void logsumexp_several_axes(void **state) {
  (void)state;
  ad_tensor *t = t234();
  ad_tensor *r = ad_logsumexp(t, 2, AXES(0, 2), false);
  assert_shape(r, 1, 3);
  double e[3];
  for (int j = 0; j < 3; j++) {
    double s = 0;
    for (int i = 0; i < 2; i++)
      for (int k = 0; k < 4; k++) s += exp(12 * i + 4 * j + k - 23.0);
    e[j] = 23 + log(s);
  }
  assert_tensor_near(r, e, 3, TOL);
}

/* ---- axis errors --------------------------------------------------------- */

static void axis_out_of_range(void **state) {
  (void)state;
  assert_null(ad_sum(m23(), 1, AXES(2), false));
  assert_error(AD_EINVAL, "ad_sum: axis 2 is out of range for rank 2");
  assert_null(ad_mean(m23(), 1, AXES(-3), false));
  assert_error(AD_EINVAL, "ad_mean: axis -3 is out of range");
  assert_null(ad_logsumexp(ad_scalar(1), 1, AXES(0), false));
  assert_error(AD_EINVAL, "ad_logsumexp: axis 0 is out of range for rank 0");
}

static void axis_repeated(void **state) {
  (void)state;
  assert_null(ad_sum(m23(), 2, AXES(1, 1), false));
  assert_error(AD_EINVAL, "ad_sum: axis 1 is repeated");
  assert_null(ad_prod(m23(), 2, AXES(1, -1), false));
  assert_error(AD_EINVAL, "ad_prod: axis -1 is repeated");
}

static void errors_name_each_reduction(void **state) {
  (void)state;
  struct {
    ad_tensor *(*f)(ad_tensor *, int, const int *, bool);
    const char *name;
  } ops[] = {{ad_sum, "ad_sum:"},   {ad_mean, "ad_mean:"},
             {ad_prod, "ad_prod:"}, {ad_max, "ad_max:"},
             {ad_min, "ad_min:"},   {ad_logsumexp, "ad_logsumexp:"}};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    assert_null(ops[i].f(m23(), 1, AXES(5), false));
    assert_true(strncmp(ad_error_message(), ops[i].name,
                        strlen(ops[i].name)) == 0);
    assert_error(AD_EINVAL, "out of range");
    assert_null(ops[i].f(m23(), 2, AXES(0, -2), true));
    assert_error(AD_EINVAL, "repeated");
  }
}

/* ---- argmax -------------------------------------------------------------- */

static void argmax_values(void **state) {
  (void)state;
  ad_tensor *t = mat(2, 3, VALUES(3, -1, 7, 2, 8, -5));
  ad_tensor *r = ad_argmax(t, 1);
  assert_shape(r, 1, 2);
  assert_tensor_near(r, VALUES(2, 1), 2, 0);
  r = ad_argmax(t, 0);
  assert_shape(r, 1, 3);
  assert_tensor_near(r, VALUES(0, 1, 0), 3, 0);
}

static void argmax_first_of_ties(void **state) {
  (void)state;
  assert_true(ad_item(ad_argmax(vec(5, VALUES(1, 4, 2, 4, 4)), 0)) == 1);
  assert_tensor_near(ad_argmax(mat(3, 2, VALUES(5, 1, 5, 1, 5, 1)), 0),
                     VALUES(0, 0), 2, 0);
}

static void argmax_nan_first_wins(void **state) {
  (void)state;
  assert_true(ad_item(ad_argmax(vec(4, VALUES(1, NAN, 9, NAN)), 0)) == 1);
  assert_true(ad_item(ad_argmax(vec(3, VALUES(INFINITY, 2, NAN)), 0)) == 2);
  assert_true(ad_item(ad_argmax(vec(2, VALUES(NAN, INFINITY)), 0)) == 0);
}

static void argmax_negative_axis_3d(void **state) {
  (void)state;
  ad_tensor *r = ad_argmax(t234(), -2); /* the largest j is always 2 */
  assert_shape(r, 2, 2, 4);
  assert_tensor_near(r, VALUES(2, 2, 2, 2, 2, 2, 2, 2), 8, 0);
  r = ad_argmax(ad_neg(t234()), 0);
  assert_shape(r, 2, 3, 4);
  assert_int_equal(ad_item(ad_sum_all(r)), 0);
}

static void argmax_rank1_gives_rank0(void **state) {
  (void)state;
  ad_tensor *r = ad_argmax(vec(3, VALUES(-3, -1, -2)), -1);
  assert_shape(r, 0, 0);
  assert_true(ad_item(r) == 1);
}

static void argmax_strided_input(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(mat(2, 3, VALUES(3, -1, 7, 2, 8, -5)));
  assert_tensor_near(ad_argmax(t, 1), VALUES(0, 1, 0), 3, 0);
  assert_tensor_near(ad_argmax(t, 0), VALUES(2, 1), 2, 0);
}

static void argmax_errors(void **state) {
  (void)state;
  assert_null(ad_argmax(ad_zeros(2, SHAPE(0, 3)), 0));
  assert_error(AD_EINVAL, "ad_argmax: zero-size axis 0 of shape (0, 3)");
  assert_null(ad_argmax(m23(), 2));
  assert_error(AD_EINVAL, "ad_argmax: axis 2 is out of range for rank 2");
  assert_null(ad_argmax(ad_scalar(1), 0));
  assert_error(AD_EINVAL, "ad_argmax: axis 0");
  /* A zero-size other axis gives an empty result, not an error. */
  assert_shape(ad_argmax(ad_zeros(2, SHAPE(0, 3)), 1), 1, 0);
}

/* ---- softmax, log_softmax ------------------------------------------------ */

static void softmax_last_axis(void **state) {
  (void)state;
  ad_tensor *r = ad_softmax(m23(), -1);
  assert_shape(r, 2, 2, 3);
  double s = exp(1) + exp(2) + exp(3);
  double e[6] = {exp(1) / s, exp(2) / s, exp(3) / s,
                 exp(1) / s, exp(2) / s, exp(3) / s};
  assert_tensor_near(r, e, 6, TOL);
  assert_tensor_near(ad_sum(r, 1, AXES(1), false), VALUES(1, 1), 2, TOL);
}

static void softmax_first_axis(void **state) {
  (void)state;
  ad_tensor *r = ad_softmax(m23(), 0);
  double a = 1 / (1 + exp(3)), b = exp(3) / (1 + exp(3));
  assert_tensor_near(r, VALUES(a, a, a, b, b, b), 6, TOL);
}

static void softmax_middle_axis_wide(void **state) {
  (void)state;
  /* An inner size above the kernel's column chunk. */
  enum { I = 300 };
  static double v[2 * I];
  for (int i = 0; i < 2 * I; i++) v[i] = (i % 17) * 0.3 - (i / I) * 2.0;
  ad_tensor *t = ad_tensor_new(3, SHAPE(1, 2, I), v);
  ad_tensor *r = ad_softmax(t, 1);
  static double e[2 * I];
  for (int j = 0; j < I; j++) {
    double a = v[j], b = v[I + j], m = a > b ? a : b;
    double s = exp(a - m) + exp(b - m);
    e[j] = exp(a - m) / s;
    e[I + j] = exp(b - m) / s;
  }
  assert_tensor_near(r, e, 2 * I, TOL);
}

static void softmax_is_stable(void **state) {
  (void)state;
  ad_tensor *r = ad_softmax(vec(2, VALUES(1000, 1001)), 0);
  double p = 1 / (1 + exp(1));
  assert_tensor_near(r, VALUES(p, 1 - p), 2, TOL);
  r = ad_softmax(vec(3, VALUES(-INFINITY, 0, 0)), 0);
  assert_tensor_near(r, VALUES(0, 0.5, 0.5), 3, TOL);
}

static void log_softmax_values(void **state) {
  (void)state;
  ad_tensor *r = ad_log_softmax(m23(), 1);
  double l = log(exp(1) + exp(2) + exp(3));
  assert_tensor_near(r, VALUES(1 - l, 2 - l, 3 - l, 4 - (l + 3), 5 - (l + 3),
                               6 - (l + 3)), 6, TOL);
  assert_tensors_close(r, ad_log(ad_softmax(m23(), 1)), 1e-13);
  r = ad_log_softmax(m23(), 0);
  assert_tensors_close(r, ad_log(ad_softmax(m23(), 0)), 1e-13);
}

static void log_softmax_is_stable(void **state) {
  (void)state;
  /* softmax underflows to 0 here; log_softmax stays finite. */
  ad_tensor *r = ad_log_softmax(vec(2, VALUES(0, -1000)), 0);
  assert_tensor_near(r, VALUES(0, -1000), 2, TOL);
  r = ad_log_softmax(vec(2, VALUES(2000, 2000)), 0);
  assert_tensor_near(r, VALUES(-log(2), -log(2)), 2, TOL);
}

static void softmax_strided_and_empty(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(m23()); /* [[1,4],[2,5],[3,6]] */
  ad_tensor *r = ad_softmax(t, 0);
  double s = exp(1) + exp(2) + exp(3);
  assert_tensor_near(r, VALUES(exp(1) / s, exp(1) / s, exp(2) / s,
                               exp(2) / s, exp(3) / s, exp(3) / s), 6, TOL);
  r = ad_softmax(ad_zeros(2, SHAPE(0, 3)), 1);
  assert_shape(r, 2, 0, 3);
  r = ad_log_softmax(ad_zeros(2, SHAPE(2, 0)), 1);
  assert_shape(r, 2, 2, 0);
}

static void softmax_bad_axis(void **state) {
  (void)state;
  assert_null(ad_softmax(m23(), 2));
  assert_error(AD_EINVAL, "ad_softmax: axis 2 is out of range for rank 2");
  assert_null(ad_log_softmax(m23(), -3));
  assert_error(AD_EINVAL, "ad_log_softmax: axis -3 is out of range");
}

/* Every allocation a reduction makes may fail (the output, a dense copy
 * of a strided input, logsumexp's scratch): NULL with AD_ENOMEM and no
 * leak. */
static void out_of_memory_is_an_error(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(m23());
  int failures = 0;
  for (long n = 1; n <= 8; n++) {
    for (int k = 0; k < 4; k++) {
      ad_tensor *r;
      ad__fail_alloc_after(n);
      switch (k) {
      case 0: r = ad_logsumexp(t, 1, AXES(0), false); break;
      case 1: r = ad_sum(t, 0, NULL, false); break;
      case 2: r = ad_argmax(t, 1); break;
      default: r = ad_log_softmax(t, 0); break;
      }
      ad__fail_alloc_after(0);
      if (!r) {
        failures++;
        assert_error(AD_ENOMEM, NULL);
      }
    }
  }
  assert_true(failures > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(sum_all_axes),
      scoped_test(sum_one_axis),
      scoped_test(sum_negative_axis),
      scoped_test(sum_keepdims),
      scoped_test(sum_several_axes),
      scoped_test(sum_adjacent_axes),
      scoped_test(sum_rank0),
      scoped_test(sum_empty),
      scoped_test(sum_strided_input),
      scoped_test(sum_is_accurate),
      scoped_test(sum_rank8),
      scoped_test(mean_values),
      scoped_test(mean_empty_is_nan),
      scoped_test(prod_values),
      scoped_test(prod_empty_is_one),
      scoped_test(max_min_values),
      scoped_test(max_min_propagate_nan),
      scoped_test(max_min_infinities),
      scoped_test(max_strided_input),
      scoped_test(max_zero_size_is_error),
      scoped_test(max_over_nonempty_axis_of_empty),
      scoped_test(logsumexp_values),
      scoped_test(logsumexp_is_stable),
      scoped_test(logsumexp_infinities_and_empty),
      scoped_test(logsumexp_several_axes),
      scoped_test(axis_out_of_range),
      scoped_test(axis_repeated),
      scoped_test(errors_name_each_reduction),
      scoped_test(argmax_values),
      scoped_test(argmax_first_of_ties),
      scoped_test(argmax_nan_first_wins),
      scoped_test(argmax_negative_axis_3d),
      scoped_test(argmax_rank1_gives_rank0),
      scoped_test(argmax_strided_input),
      scoped_test(argmax_errors),
      scoped_test(softmax_last_axis),
      scoped_test(softmax_first_axis),
      scoped_test(softmax_middle_axis_wide),
      scoped_test(softmax_is_stable),
      scoped_test(log_softmax_values),
      scoped_test(log_softmax_is_stable),
      scoped_test(softmax_strided_and_empty),
      scoped_test(softmax_bad_axis),
      scoped_test(out_of_memory_is_an_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
