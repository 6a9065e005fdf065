/* Tests of the elementwise ops: values against libm, broadcasting, strided
 * inputs, NaN/Inf handling and every error path. */
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

/* Applies f to every x in xs and checks op against it, so each unary op
 * is compared with libm on a spread of inputs. */
static void check_unary(ad_tensor *(*op)(ad_tensor *), double (*f)(double),
                        const double *xs, int64_t n) {
  double expect[16];
  for (int64_t i = 0; i < n; i++) expect[i] = f(xs[i]);
  ad_tensor *r = op(vec(n, xs));
  assert_shape(r, 1, n);
  assert_tensor_near(r, expect, n, TOL);
}

static const double GRID[] = {-3.5, -1.0, -0.25, 0.0, 0.5, 1.0, 2.75};
#define NGRID ((int64_t)(sizeof GRID / sizeof GRID[0]))
static const double UNIT[] = {-0.99, -0.5, 0.0, 0.3, 0.75, 1.0};
#define NUNIT ((int64_t)(sizeof UNIT / sizeof UNIT[0]))

/* ---- binary values ----------------------------------------------------- */

static void add_same_shape(void **state) {
  (void)state;
  ad_tensor *r = ad_add(mat(2, 2, VALUES(1, 2, 3, 4)),
                        mat(2, 2, VALUES(10, 20, 30, 40)));
  assert_shape(r, 2, 2, 2);
  assert_tensor_near(r, VALUES(11, 22, 33, 44), 4, TOL);
}

static void sub_mul_div_values(void **state) {
  (void)state;
  ad_tensor *a = vec(3, VALUES(6, -2, 0.5)), *b = vec(3, VALUES(3, 4, -0.25));
  assert_tensor_near(ad_sub(a, b), VALUES(3, -6, 0.75), 3, TOL);
  assert_tensor_near(ad_mul(a, b), VALUES(18, -8, -0.125), 3, TOL);
  assert_tensor_near(ad_div(a, b), VALUES(2, -0.5, -2), 3, TOL);
}

static void div_by_zero_follows_ieee(void **state) {
  (void)state;
  ad_tensor *r = ad_div(vec(3, VALUES(1, -1, 0)), vec(3, VALUES(0, 0, 0)));
  double e[3] = {INFINITY, -INFINITY, NAN};
  assert_tensor_near(r, e, 3, TOL);
}

static void pow_values(void **state) {
  (void)state;
  const double a[] = {2, 9, -2, 0, 0.5, -8};
  const double b[] = {10, 0.5, 3, 0, -1, 1.0 / 3.0};
  double e[6];
  for (int i = 0; i < 6; i++) e[i] = pow(a[i], b[i]);
  assert_tensor_near(ad_pow(vec(6, a), vec(6, b)), e, 6, TOL);
  assert_true(isnan(e[5])); /* negative base, fractional power */
}

static void maximum_minimum_values(void **state) {
  (void)state;
  ad_tensor *a = vec(4, VALUES(1, 5, -3, 2)), *b = vec(4, VALUES(4, 2, -7, 2));
  assert_tensor_near(ad_maximum(a, b), VALUES(4, 5, -3, 2), 4, TOL);
  assert_tensor_near(ad_minimum(a, b), VALUES(1, 2, -7, 2), 4, TOL);
}

static void maximum_minimum_propagate_nan(void **state) {
  (void)state;
  ad_tensor *a = vec(3, VALUES(NAN, 1, NAN));
  ad_tensor *b = vec(3, VALUES(1, NAN, NAN));
  double e[3] = {NAN, NAN, NAN};
  assert_tensor_near(ad_maximum(a, b), e, 3, TOL);
  assert_tensor_near(ad_minimum(a, b), e, 3, TOL);
  assert_tensor_near(ad_maximum(vec(2, VALUES(-INFINITY, 3)),
                                vec(2, VALUES(-5, INFINITY))),
                     VALUES(-5, INFINITY), 2, TOL);
}

static void atan2_quadrants(void **state) {
  (void)state;
  const double y[] = {1, 1, -1, -1, 0, 0};
  const double x[] = {1, -1, -1, 1, -1, 0};
  double e[6];
  for (int i = 0; i < 6; i++) e[i] = atan2(y[i], x[i]);
  assert_tensor_near(ad_atan2(vec(6, y), vec(6, x)), e, 6, TOL);
}

static void mod_is_floored(void **state) {
  (void)state;
  /* Python: 7%3=1, -7%3=2, 7%-3=-2, -7%-3=-1, 5.5%2=1.5, -0.5%2=1.5 */
  ad_tensor *r = ad_mod(vec(6, VALUES(7, -7, 7, -7, 5.5, -0.5)),
                        vec(6, VALUES(3, 3, -3, -3, 2, 2)));
  assert_tensor_near(r, VALUES(1, 2, -2, -1, 1.5, 1.5), 6, TOL);
}

static void mod_edge_cases(void **state) {
  (void)state;
  /* Division by zero is NaN (IEEE fmod); an exact multiple gives 0. */
  ad_tensor *r = ad_mod(vec(4, VALUES(5, 6, -6, INFINITY)),
                        vec(4, VALUES(0, 3, 3, 2)));
  double e[4] = {NAN, 0, 0, NAN};
  assert_tensor_near(r, e, 4, TOL);
}

static void nan_and_inf_propagate(void **state) {
  (void)state;
  ad_tensor *r = ad_add(vec(3, VALUES(NAN, INFINITY, INFINITY)),
                        vec(3, VALUES(1, 1, -INFINITY)));
  double e[3] = {NAN, INFINITY, NAN};
  assert_tensor_near(r, e, 3, TOL);
  r = ad_mul(vec(2, VALUES(INFINITY, 0)), vec(2, VALUES(0, NAN)));
  double e2[2] = {NAN, NAN};
  assert_tensor_near(r, e2, 2, TOL);
}

/* ---- broadcasting ------------------------------------------------------ */

static void broadcast_row(void **state) {
  (void)state;
  ad_tensor *r = ad_add(mat(2, 3, VALUES(1, 2, 3, 4, 5, 6)),
                        vec(3, VALUES(10, 20, 30)));
  assert_shape(r, 2, 2, 3);
  assert_tensor_near(r, VALUES(11, 22, 33, 14, 25, 36), 6, TOL);
}

static void broadcast_outer(void **state) {
  (void)state;
  ad_tensor *r = ad_sub(mat(2, 1, VALUES(10, 20)), mat(1, 3, VALUES(1, 2, 3)));
  assert_shape(r, 2, 2, 3);
  assert_tensor_near(r, VALUES(9, 8, 7, 19, 18, 17), 6, TOL);
}

static void broadcast_rank0_with_rank2(void **state) {
  (void)state;
  ad_tensor *m = mat(2, 2, VALUES(1, 2, 3, 4)), *s = ad_scalar(10);
  ad_tensor *r = ad_sub(s, m);
  assert_shape(r, 2, 2, 2);
  assert_tensor_near(r, VALUES(9, 8, 7, 6), 4, TOL);
  r = ad_div(m, s);
  assert_shape(r, 2, 2, 2);
  assert_tensor_near(r, VALUES(0.1, 0.2, 0.3, 0.4), 4, TOL);
}

static void rank0_with_rank0(void **state) {
  (void)state;
  ad_tensor *r = ad_mul(ad_scalar(3), ad_scalar(-4));
  assert_shape(r, 0, 0);
  assert_true(ad_item(r) == -12);
}

static void one_element_raises_rank(void **state) {
  (void)state;
  /* A (1, 1) operand with a (3,) one gives (1, 3), not (3,). */
  ad_tensor *r = ad_add(ad_tensor_new(2, SHAPE(1, 1), VALUES(100)),
                        vec(3, VALUES(1, 2, 3)));
  assert_shape(r, 2, 1, 3);
  assert_tensor_near(r, VALUES(101, 102, 103), 3, TOL);
  r = ad_add(vec(3, VALUES(1, 2, 3)), ad_tensor_new(2, SHAPE(1, 1), VALUES(1)));
  assert_shape(r, 2, 1, 3);
}

static void broadcast_size_zero(void **state) {
  (void)state;
  ad_tensor *r = ad_add(ad_zeros(2, SHAPE(0, 3)), vec(3, VALUES(1, 2, 3)));
  assert_shape(r, 2, 0, 3);
  assert_int_equal(ad_numel(r), 0);
  r = ad_mul(ad_zeros(2, SHAPE(2, 0)), ad_ones(2, SHAPE(2, 1)));
  assert_shape(r, 2, 2, 0);
  r = ad_add(ad_zeros(1, SHAPE(0)), ad_scalar(1));
  assert_shape(r, 1, 0);
}

static void broadcast_three_dims(void **state) {
  (void)state;
  /* (2, 3, 4) * (3, 1): checked against the index formula. */
  double a[24], b[3], e[24];
  for (int i = 0; i < 24; i++) a[i] = i + 1;
  for (int j = 0; j < 3; j++) b[j] = 10 * (j + 1);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++)
        e[(i * 3 + j) * 4 + k] = a[(i * 3 + j) * 4 + k] * b[j];
  ad_tensor *r = ad_mul(ad_tensor_new(3, SHAPE(2, 3, 4), a),
                        ad_tensor_new(2, SHAPE(3, 1), b));
  assert_shape(r, 3, 2, 3, 4);
  assert_tensor_near(r, e, 24, TOL);
}

static void broadcast_error(void **state) {
  (void)state;
  assert_null(ad_add(ad_zeros(2, SHAPE(2, 3)), ad_zeros(1, SHAPE(4))));
  assert_error(AD_ESHAPE, "ad_add: shapes (2, 3) and (4,) cannot broadcast");
}

static void broadcast_error_names_each_op(void **state) {
  (void)state;
  struct {
    ad_tensor *(*f)(ad_tensor *, ad_tensor *);
    const char *name;
  } ops[] = {{ad_add, "ad_add:"},         {ad_sub, "ad_sub:"},
             {ad_mul, "ad_mul:"},         {ad_div, "ad_div:"},
             {ad_pow, "ad_pow:"},         {ad_maximum, "ad_maximum:"},
             {ad_minimum, "ad_minimum:"}, {ad_atan2, "ad_atan2:"},
             {ad_mod, "ad_mod:"},         {ad_less, "ad_less:"},
             {ad_greater, "ad_greater:"}, {ad_equal, "ad_equal:"}};
  ad_tensor *a = ad_zeros(1, SHAPE(2)), *b = ad_zeros(1, SHAPE(3));
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    assert_null(ops[i].f(a, b));
    assert_true(strncmp(ad_error_message(), ops[i].name,
                        strlen(ops[i].name)) == 0);
    assert_error(AD_ESHAPE, "cannot broadcast");
  }
}

/* ---- strided inputs ---------------------------------------------------- */

static void strided_transpose_input(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(mat(2, 3, VALUES(1, 2, 3, 4, 5, 6)));
  assert_shape(t, 2, 3, 2); /* [[1,4],[2,5],[3,6]] */
  ad_tensor *r = ad_add(t, mat(3, 2, VALUES(0, 10, 20, 30, 40, 50)));
  assert_shape(r, 2, 3, 2);
  assert_tensor_near(r, VALUES(1, 14, 22, 35, 43, 56), 6, TOL);
}

static void strided_with_broadcast(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(mat(2, 3, VALUES(1, 2, 3, 4, 5, 6)));
  ad_tensor *r = ad_mul(t, vec(2, VALUES(1, -1)));
  assert_tensor_near(r, VALUES(1, -4, 2, -5, 3, -6), 6, TOL);
  r = ad_sub(ad_scalar(0), t);
  assert_tensor_near(r, VALUES(-1, -4, -2, -5, -3, -6), 6, TOL);
}

static void strided_both_inputs(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(mat(2, 3, VALUES(1, 2, 3, 4, 5, 6)));
  ad_tensor *r = ad_maximum(t, ad_transpose(mat(2, 3, VALUES(6, 5, 4, 3, 2, 1))));
  assert_tensor_near(r, VALUES(6, 4, 5, 5, 4, 6), 6, TOL);
}

static void broadcast_view_input(void **state) {
  (void)state;
  /* broadcast_to gives stride-0 axes. */
  ad_tensor *b = ad_broadcast_to(vec(3, VALUES(1, 2, 3)), 2, SHAPE(2, 3));
  ad_tensor *r = ad_add(b, mat(2, 3, VALUES(0, 0, 0, 10, 10, 10)));
  assert_tensor_near(r, VALUES(1, 2, 3, 11, 12, 13), 6, TOL);
  assert_tensor_near(ad_exp(b), VALUES(exp(1), exp(2), exp(3), exp(1),
                                       exp(2), exp(3)), 6, TOL);
}

static void inputs_unchanged(void **state) {
  (void)state;
  ad_tensor *a = vec(2, VALUES(1, 2)), *b = vec(2, VALUES(3, 4));
  ad_tensor *r = ad_add(a, b);
  assert_ptr_not_equal(r, a);
  assert_tensor_near(a, VALUES(1, 2), 2, 0);
  assert_tensor_near(b, VALUES(3, 4), 2, 0);
  r = ad_add_scalar(a, 0);
  assert_ptr_not_equal(r, a);
  assert_tensor_near(r, VALUES(1, 2), 2, 0);
}

/* ---- comparisons and where --------------------------------------------- */

static void compare_values(void **state) {
  (void)state;
  ad_tensor *a = vec(4, VALUES(1, 2, 3, NAN)), *b = vec(4, VALUES(2, 2, 2, 0));
  assert_tensor_near(ad_less(a, b), VALUES(1, 0, 0, 0), 4, 0);
  assert_tensor_near(ad_greater(a, b), VALUES(0, 0, 1, 0), 4, 0);
  assert_tensor_near(ad_equal(a, b), VALUES(0, 1, 0, 0), 4, 0);
}

static void compare_broadcast(void **state) {
  (void)state;
  ad_tensor *r = ad_less(mat(2, 1, VALUES(1, 3)), vec(3, VALUES(0, 2, 4)));
  assert_shape(r, 2, 2, 3);
  assert_tensor_near(r, VALUES(0, 1, 1, 0, 0, 1), 6, 0);
  r = ad_equal(ad_scalar(2), vec(3, VALUES(2, 1, 2)));
  assert_tensor_near(r, VALUES(1, 0, 1), 3, 0);
}

static void where_values(void **state) {
  (void)state;
  ad_tensor *r = ad_where(vec(4, VALUES(1, 0, -2, NAN)),
                          vec(4, VALUES(1, 2, 3, 4)),
                          vec(4, VALUES(-1, -2, -3, -4)));
  /* NaN != 0, so a NaN condition selects a. */
  assert_tensor_near(r, VALUES(1, -2, 3, 4), 4, 0);
}

static void where_three_way_broadcast(void **state) {
  (void)state;
  ad_tensor *r = ad_where(mat(2, 1, VALUES(1, 0)), vec(3, VALUES(1, 2, 3)),
                          ad_scalar(-1));
  assert_shape(r, 2, 2, 3);
  assert_tensor_near(r, VALUES(1, 2, 3, -1, -1, -1), 6, 0);
  r = ad_where(ad_scalar(0), ad_scalar(5), mat(1, 2, VALUES(7, 8)));
  assert_shape(r, 2, 1, 2);
  assert_tensor_near(r, VALUES(7, 8), 2, 0);
}

static void where_strided(void **state) {
  (void)state;
  ad_tensor *c = ad_transpose(mat(2, 3, VALUES(1, 0, 1, 0, 1, 0)));
  ad_tensor *r = ad_where(c, ad_ones(2, SHAPE(3, 2)), ad_zeros(1, SHAPE(2)));
  assert_tensor_near(r, VALUES(1, 0, 0, 1, 1, 0), 6, 0);
}

static void where_bad_broadcast(void **state) {
  (void)state;
  assert_null(ad_where(ad_ones(1, SHAPE(2)), ad_ones(1, SHAPE(2)),
                       ad_ones(1, SHAPE(3))));
  assert_error(AD_ESHAPE, "ad_where: shapes");
  assert_null(ad_where(ad_ones(1, SHAPE(4)), ad_ones(1, SHAPE(2)),
                       ad_ones(1, SHAPE(2))));
  assert_error(AD_ESHAPE, "cannot broadcast");
}

/* ---- scalar ops -------------------------------------------------------- */

static void scalar_ops(void **state) {
  (void)state;
  ad_tensor *t = vec(3, VALUES(-2, 0.5, 4));
  assert_tensor_near(ad_add_scalar(t, 1.5), VALUES(-0.5, 2, 5.5), 3, TOL);
  assert_tensor_near(ad_mul_scalar(t, -2), VALUES(4, -1, -8), 3, TOL);
  assert_tensor_near(ad_pow_scalar(t, 3), VALUES(-8, 0.125, 64), 3, TOL);
  assert_tensor_near(ad_pow_scalar(t, 2), VALUES(4, 0.25, 16), 3, TOL);
}

static void pow_scalar_domain(void **state) {
  (void)state;
  ad_tensor *r = ad_pow_scalar(vec(4, VALUES(4, -4, 0, 2)), 0.5);
  double e[4] = {2, NAN, 0, sqrt(2)};
  assert_tensor_near(r, e, 4, TOL);
  r = ad_pow_scalar(vec(2, VALUES(0, NAN)), 0);
  assert_tensor_near(r, VALUES(1, 1), 2, 0); /* pow(x, 0) is 1 */
  assert_int_equal(ad_error(), AD_OK);
  /* p = -1 and p = 2 take dedicated loops (1 / x, x * x): the same values
   * as pow at signed zeros, infinities and NaN, and the correctly rounded
   * ones elsewhere. */
  const double x[] = {-0.0, 0.0, -INFINITY, INFINITY, NAN, 3.0, -7.0, 1e-310};
  for (int k = 0; k < 2; k++) {
    double p = k ? 2.0 : -1.0, got[8];
    r = ad_pow_scalar(vec(8, x), p);
    assert_int_equal(ad_read(r, got, 8), AD_OK);
    for (int i = 0; i < 8; i++) {
      double want = k ? x[i] * x[i] : 1.0 / x[i];
      assert_true(isnan(want) ? isnan(got[i])
                              : got[i] == want &&
                                    signbit(got[i]) == signbit(want));
      assert_true(isnan(want) ? isnan(pow(x[i], p))
                              : signbit(pow(x[i], p)) == signbit(want));
    }
  }
}

/* ---- unary values ------------------------------------------------------ */

static double neg_ref(double x) { return -x; }
static double square_ref(double x) { return x * x; }

static void unary_exp_log_family(void **state) {
  (void)state;
  const double pos[] = {1e-3, 0.25, 1, 2.5, 40};
  check_unary(ad_neg, neg_ref, GRID, NGRID);
  check_unary(ad_exp, exp, GRID, NGRID);
  check_unary(ad_expm1, expm1, GRID, NGRID);
  check_unary(ad_log, log, pos, 5);
  check_unary(ad_log1p, log1p, pos, 5);
  check_unary(ad_sqrt, sqrt, pos, 5);
  check_unary(ad_square, square_ref, GRID, NGRID);
  check_unary(ad_abs, fabs, GRID, NGRID);
}

static void unary_trig(void **state) {
  (void)state;
  check_unary(ad_sin, sin, GRID, NGRID);
  check_unary(ad_cos, cos, GRID, NGRID);
  check_unary(ad_tan, tan, GRID, NGRID);
  check_unary(ad_asin, asin, UNIT, NUNIT);
  check_unary(ad_acos, acos, UNIT, NUNIT);
  check_unary(ad_atan, atan, GRID, NGRID);
}

static void unary_hyperbolic_and_erf(void **state) {
  (void)state;
  check_unary(ad_sinh, sinh, GRID, NGRID);
  check_unary(ad_cosh, cosh, GRID, NGRID);
  check_unary(ad_tanh, tanh, GRID, NGRID);
  check_unary(ad_erf, erf, GRID, NGRID);
}

static double sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }
static double softplus_ref(double x) { return log(1.0 + exp(x)); }

static void sigmoid_values_and_stability(void **state) {
  (void)state;
  check_unary(ad_sigmoid, sigmoid_ref, GRID, NGRID);
  ad_tensor *r = ad_sigmoid(vec(4, VALUES(-1000, 1000, -INFINITY, INFINITY)));
  assert_tensor_near(r, VALUES(0, 1, 0, 1), 4, 0);
  assert_true(ad_item(ad_sigmoid(ad_scalar(-745))) > 0); /* no underflow to
                                                           NaN */
}

static void softplus_values_and_stability(void **state) {
  (void)state;
  check_unary(ad_softplus, softplus_ref, GRID, NGRID);
  ad_tensor *r = ad_softplus(vec(3, VALUES(1000, -1000, 0)));
  assert_tensor_near(r, VALUES(1000, 0, log(2)), 3, TOL);
  /* log1p keeps the digits that log(1 + exp(x)) would lose. */
  double tiny = ad_item(ad_softplus(ad_scalar(-40)));
  assert_true(fabs(tiny - exp(-40)) <= 1e-15 * exp(-40));
}

static void relu_values(void **state) {
  (void)state;
  ad_tensor *r = ad_relu(vec(5, VALUES(-2, 0, 3, -INFINITY, NAN)));
  double e[5] = {0, 0, 3, 0, NAN};
  assert_tensor_near(r, e, 5, 0);
}

static void sign_values(void **state) {
  (void)state;
  ad_tensor *r = ad_sign(vec(6, VALUES(-3, -0.0, 0, 1e-300, INFINITY, NAN)));
  double e[6] = {-1, 0, 0, 1, 1, NAN};
  assert_tensor_near(r, e, 6, 0);
}

static void floor_values(void **state) {
  (void)state;
  ad_tensor *r = ad_floor(vec(5, VALUES(-1.5, -1, 0.2, 2.999, INFINITY)));
  assert_tensor_near(r, VALUES(-2, -1, 0, 2, INFINITY), 5, 0);
}

static void clip_values(void **state) {
  (void)state;
  ad_tensor *r = ad_clip(vec(6, VALUES(-5, -1, 0, 1, 5, NAN)), -1, 2);
  double e[6] = {-1, -1, 0, 1, 2, NAN};
  assert_tensor_near(r, e, 6, 0);
  r = ad_clip(vec(2, VALUES(-INFINITY, INFINITY)), 0, 1);
  assert_tensor_near(r, VALUES(0, 1), 2, 0);
}

static void clip_equal_and_infinite_bounds(void **state) {
  (void)state;
  assert_tensor_near(ad_clip(vec(3, VALUES(-1, 0, 4)), 2, 2),
                     VALUES(2, 2, 2), 3, 0);
  assert_tensor_near(ad_clip(vec(3, VALUES(-1, 0, 4)), -INFINITY, 1),
                     VALUES(-1, 0, 1), 3, 0);
}

static void clip_lo_greater_than_hi(void **state) {
  (void)state;
  assert_null(ad_clip(vec(2, VALUES(1, 2)), 3, 1));
  assert_error(AD_EINVAL, "ad_clip: lo 3 is greater than hi 1");
}

static void clip_nan_bound(void **state) {
  (void)state;
  assert_null(ad_clip(vec(2, VALUES(1, 2)), NAN, 1));
  assert_error(AD_EINVAL, "ad_clip:");
  assert_null(ad_clip(vec(2, VALUES(1, 2)), 0, NAN));
  assert_error(AD_EINVAL, "NaN");
}

static void out_of_domain_is_nan_not_error(void **state) {
  (void)state;
  assert_true(isnan(ad_item(ad_log(ad_scalar(-1)))));
  assert_true(isnan(ad_item(ad_sqrt(ad_scalar(-1)))));
  assert_true(isnan(ad_item(ad_asin(ad_scalar(2)))));
  assert_true(isnan(ad_item(ad_acos(ad_scalar(-2)))));
  assert_true(isnan(ad_item(ad_log1p(ad_scalar(-2)))));
  assert_true(ad_item(ad_log(ad_scalar(0))) == -INFINITY);
  assert_true(ad_item(ad_exp(ad_scalar(1000))) == INFINITY);
  assert_int_equal(ad_error(), AD_OK);
}

static void unary_nan_propagates(void **state) {
  (void)state;
  ad_tensor *(*ops[])(ad_tensor *) = {
      ad_neg,  ad_exp,  ad_log,  ad_log1p, ad_expm1,   ad_sqrt,
      ad_square, ad_abs, ad_sin, ad_cos,   ad_tan,     ad_asin,
      ad_acos, ad_atan, ad_sinh, ad_cosh,  ad_tanh,    ad_sigmoid,
      ad_softplus, ad_relu, ad_erf, ad_sign, ad_floor};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    assert_true(isnan(ad_item(ops[i](ad_scalar(NAN)))));
}

static void unary_strided_input(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(mat(2, 3, VALUES(1, 2, 3, 4, 5, 6)));
  ad_tensor *r = ad_square(t);
  assert_shape(r, 2, 3, 2);
  assert_tensor_near(r, VALUES(1, 16, 4, 25, 9, 36), 6, TOL);
  r = ad_clip(t, 2, 5);
  assert_tensor_near(r, VALUES(2, 4, 2, 5, 3, 5), 6, 0);
  r = ad_add_scalar(t, 1);
  assert_tensor_near(r, VALUES(2, 5, 3, 6, 4, 7), 6, 0);
}

static void unary_keeps_shape(void **state) {
  (void)state;
  ad_tensor *r = ad_exp(ad_scalar(0));
  assert_shape(r, 0, 0);
  assert_true(ad_item(r) == 1);
  r = ad_sin(ad_zeros(3, SHAPE(2, 0, 4)));
  assert_shape(r, 3, 2, 0, 4);
  r = ad_tanh(ad_zeros(3, SHAPE(2, 1, 3)));
  assert_shape(r, 3, 2, 1, 3);
}

static void large_tensors(void **state) {
  (void)state;
  /* Long enough to run the vectorised loops with their remainders. */
  enum { N = 1003 };
  static double a[N], b[N], e[N];
  for (int i = 0; i < N; i++) {
    a[i] = i * 0.5 - 100;
    b[i] = (i % 7) - 3;
  }
  ad_tensor *x = vec(N, a), *y = vec(N, b);
  for (int i = 0; i < N; i++) e[i] = a[i] * b[i];
  assert_tensor_near(ad_mul(x, y), e, N, TOL);
  for (int i = 0; i < N; i++) e[i] = a[i] > b[i] ? a[i] : b[i];
  assert_tensor_near(ad_maximum(x, y), e, N, TOL);
  for (int i = 0; i < N; i++) e[i] = a[i] - 2;
  assert_tensor_near(ad_sub(x, ad_scalar(2)), e, N, TOL);
}

/* Every allocation an op makes may fail: the op then returns NULL with
 * AD_ENOMEM and leaks nothing (the sanitizer builds check the leaks). */
static void out_of_memory_is_an_error(void **state) {
  (void)state;
  ad_tensor *a = mat(2, 3, VALUES(1, 2, 3, 4, 5, 6)), *b = vec(3, VALUES(1, 2, 3));
  ad_tensor *t = ad_transpose(a);
  int failures = 0;
  for (long n = 1; n <= 6; n++) {
    ad_tensor *r[4];
    for (int k = 0; k < 4; k++) {
      ad__fail_alloc_after(n);
      switch (k) {
      case 0: r[k] = ad_add(a, b); break;
      case 1: r[k] = ad_exp(t); break;
      case 2: r[k] = ad_where(b, a, ad_scalar(0)); break;
      default: r[k] = ad_clip(t, 0, 1); break;
      }
      ad__fail_alloc_after(0);
      if (!r[k]) {
        failures++;
        assert_error(AD_ENOMEM, NULL);
      }
    }
  }
  assert_true(failures > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(add_same_shape),
      scoped_test(sub_mul_div_values),
      scoped_test(div_by_zero_follows_ieee),
      scoped_test(pow_values),
      scoped_test(maximum_minimum_values),
      scoped_test(maximum_minimum_propagate_nan),
      scoped_test(atan2_quadrants),
      scoped_test(mod_is_floored),
      scoped_test(mod_edge_cases),
      scoped_test(nan_and_inf_propagate),
      scoped_test(broadcast_row),
      scoped_test(broadcast_outer),
      scoped_test(broadcast_rank0_with_rank2),
      scoped_test(rank0_with_rank0),
      scoped_test(one_element_raises_rank),
      scoped_test(broadcast_size_zero),
      scoped_test(broadcast_three_dims),
      scoped_test(broadcast_error),
      scoped_test(broadcast_error_names_each_op),
      scoped_test(strided_transpose_input),
      scoped_test(strided_with_broadcast),
      scoped_test(strided_both_inputs),
      scoped_test(broadcast_view_input),
      scoped_test(inputs_unchanged),
      scoped_test(compare_values),
      scoped_test(compare_broadcast),
      scoped_test(where_values),
      scoped_test(where_three_way_broadcast),
      scoped_test(where_strided),
      scoped_test(where_bad_broadcast),
      scoped_test(scalar_ops),
      scoped_test(pow_scalar_domain),
      scoped_test(unary_exp_log_family),
      scoped_test(unary_trig),
      scoped_test(unary_hyperbolic_and_erf),
      scoped_test(sigmoid_values_and_stability),
      scoped_test(softplus_values_and_stability),
      scoped_test(relu_values),
      scoped_test(sign_values),
      scoped_test(floor_values),
      scoped_test(clip_values),
      scoped_test(clip_equal_and_infinite_bounds),
      scoped_test(clip_lo_greater_than_hi),
      scoped_test(clip_nan_bound),
      scoped_test(out_of_domain_is_nan_not_error),
      scoped_test(unary_nan_propagates),
      scoped_test(unary_strided_input),
      scoped_test(unary_keeps_shape),
      scoped_test(large_tensors),
      scoped_test(out_of_memory_is_an_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
