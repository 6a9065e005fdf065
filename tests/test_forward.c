/* Tests of forward accumulators: tangents against closed forms, nested
 * levels without perturbation confusion, mixes with tapes and errors. */
#include "testutil.h"

#define TOL 1e-12

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

static ad_tensor *mat(int64_t r, int64_t c, const double *v) {
  return ad_tensor_new(2, SHAPE(r, c), v);
}

/* A level with one primal and its tangent. */
static ad_fwd *level(ad_tensor *x, ad_tensor *t) {
  ad_fwd *acc = ad_fwd_begin(1, &x, &t);
  assert_non_null(acc);
  return acc;
}

/* Vectorized Rosenbrock: sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2. */
static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *a = ad_slice(x, 0, 0, n - 1, 1);
  ad_tensor *b = ad_slice(x, 0, 1, n, 1);
  ad_tensor *t1 = ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))), 100.0);
  ad_tensor *t2 = ad_square(ad_add_scalar(ad_neg(a), 1.0));
  return ad_sum_all(ad_add(t1, t2));
}

/* The closed-form Hessian of rosenbrock at x (n <= 8), row-major. */
static void rosenbrock_hessian(const double *x, int n, double *h) {
  for (int i = 0; i < n * n; i++) h[i] = 0;
  for (int i = 0; i < n; i++) {
    if (i < n - 1) {
      h[i * n + i] += 1200 * x[i] * x[i] - 400 * x[i + 1] + 2;
      h[i * n + i + 1] = h[(i + 1) * n + i] = -400 * x[i];
    }
    if (i > 0) h[i * n + i] += 200;
  }
}

static void matvec(const double *h, const double *v, int n, double *out) {
  for (int i = 0; i < n; i++) {
    out[i] = 0;
    for (int j = 0; j < n; j++) out[i] += h[i * n + j] * v[j];
  }
}

/* ---- first derivatives ------------------------------------------------- */

static void tangent_of_square_is_two_x_times_tangent(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0);
  ad_fwd *acc = level(x, ad_scalar(2.0));
  ad_tensor *y = ad_mul(x, x);
  ad_tensor *t = ad_fwd_jvp(acc, y);
  assert_shape(t, 0, 0);
  assert_tensor_near(t, VALUES(12.0), 1, TOL);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
}

static void tangent_of_composition_follows_chain_rule(void **state) {
  (void)state;
  /* y = sin(exp(x)): dy = cos(exp x) exp(x) dx, elementwise. */
  const double xs[] = {-1.0, 0.0, 0.5}, vs[] = {1.0, -2.0, 0.25};
  ad_tensor *x = vec(3, xs);
  ad_fwd *acc = level(x, vec(3, vs));
  ad_tensor *y = ad_sin(ad_exp(x));
  double e[3];
  for (int i = 0; i < 3; i++) e[i] = cos(exp(xs[i])) * exp(xs[i]) * vs[i];
  ad_tensor *t = ad_fwd_jvp(acc, y);
  assert_shape(t, 1, 3);
  assert_tensor_near(t, e, 3, TOL);
  ad_fwd_end(acc);
}

static void tangent_of_linear_map_is_the_map_of_the_tangent(void **state) {
  (void)state;
  ad_tensor *a = mat(2, 3, VALUES(1, 2, 3, -4, 5, -6));
  ad_tensor *x = vec(3, VALUES(7, 8, 9));
  ad_fwd *acc = level(x, vec(3, VALUES(1, 0, -1)));
  ad_tensor *y = ad_matmul(a, x);
  assert_tensor_near(ad_fwd_jvp(acc, y), VALUES(-2, 2), 2, TOL);
  ad_fwd_end(acc);
}

static void tangent_of_reduction_reduces_the_tangent(void **state) {
  (void)state;
  ad_tensor *x = mat(2, 2, VALUES(1, 2, 3, 4));
  ad_fwd *acc = level(x, mat(2, 2, VALUES(1, 10, 100, 1000)));
  ad_tensor *s = ad_sum(x, 1, (const int[]){0}, false);
  assert_tensor_near(ad_fwd_jvp(acc, s), VALUES(101, 1010), 2, TOL);
  ad_tensor *m = ad_mean(x, 0, NULL, false);
  assert_tensor_near(ad_fwd_jvp(acc, m), VALUES(1111.0 / 4.0), 1, TOL);
  ad_fwd_end(acc);
}

static void tangent_broadcasts_with_its_primal(void **state) {
  (void)state;
  /* y = x + s with s a scalar carrying tangent 2: every element gets 2. */
  ad_tensor *x = vec(3, VALUES(1, 2, 3)), *s = ad_scalar(0.5);
  ad_fwd *acc = level(s, ad_scalar(2.0));
  ad_tensor *y = ad_mul(x, s);
  assert_tensor_near(ad_fwd_jvp(acc, y), VALUES(2, 4, 6), 3, TOL);
  ad_fwd_end(acc);
}

static void tangent_of_primal_is_the_given_tangent(void **state) {
  (void)state;
  ad_tensor *x = vec(2, VALUES(1, 2));
  ad_fwd *acc = level(x, vec(2, VALUES(-3, 4)));
  assert_true(ad_fwd_has_tangent(acc, x));
  assert_tensor_near(ad_fwd_jvp(acc, x), VALUES(-3, 4), 2, 0);
  ad_fwd_end(acc);
}

static void unconnected_tensor_has_zero_tangent(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *c = mat(2, 2, VALUES(1, 2, 3, 4));
  ad_fwd *acc = level(x, ad_scalar(1.0));
  ad_tensor *k = ad_exp(c);
  ad_tensor *y = ad_exp(x);
  assert_false(ad_fwd_has_tangent(acc, k));
  assert_false(ad_fwd_has_tangent(acc, c));
  assert_true(ad_fwd_has_tangent(acc, y));
  ad_tensor *t = ad_fwd_jvp(acc, k);
  assert_shape(t, 2, 2, 2);
  assert_tensor_near(t, VALUES(0, 0, 0, 0), 4, 0);
  ad_fwd_end(acc);
}

static void several_primals_add_their_contributions(void **state) {
  (void)state;
  /* f = x y + sin(x): df = (y + cos x) dx + x dy. */
  ad_tensor *x = ad_scalar(0.5), *y = ad_scalar(-2.0);
  ad_tensor *p[2] = {x, y};
  const double dirs[3][2] = {{1, 0}, {0, 1}, {2, 3}};
  for (int k = 0; k < 3; k++) {
    ad_tensor *t[2] = {ad_scalar(dirs[k][0]), ad_scalar(dirs[k][1])};
    ad_fwd *acc = ad_fwd_begin(2, p, t);
    assert_non_null(acc);
    ad_tensor *f = ad_add(ad_mul(x, y), ad_sin(x));
    double e = (-2.0 + cos(0.5)) * dirs[k][0] + 0.5 * dirs[k][1];
    assert_tensor_near(ad_fwd_jvp(acc, f), &e, 1, TOL);
    ad_fwd_end(acc);
  }
}

static void stop_gradient_blocks_the_tangent(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0);
  ad_fwd *acc = level(x, ad_scalar(1.0));
  ad_tensor *s = ad_stop_gradient(x);
  ad_tensor *y = ad_mul(x, s);
  assert_false(ad_fwd_has_tangent(acc, s));
  assert_tensor_near(ad_fwd_jvp(acc, y), VALUES(3.0), 1, TOL);
  ad_fwd_end(acc);
}

static void comparisons_carry_no_tangent(void **state) {
  (void)state;
  ad_tensor *x = vec(2, VALUES(1, 3));
  ad_fwd *acc = level(x, vec(2, VALUES(1, 1)));
  ad_tensor *m = ad_less(x, ad_scalar(2.0));
  assert_false(ad_fwd_has_tangent(acc, m));
  assert_tensor_near(ad_fwd_jvp(acc, m), VALUES(0, 0), 2, 0);
  /* where() passes the tangent of the selected branch. */
  ad_tensor *w = ad_where(m, ad_square(x), ad_mul_scalar(x, 5.0));
  assert_tensor_near(ad_fwd_jvp(acc, w), VALUES(2, 5), 2, TOL);
  ad_fwd_end(acc);
}

static void paused_ops_get_no_tangent(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_fwd *acc = level(x, ad_scalar(1.0));
  bool was = ad_pause_recording(true);
  ad_tensor *c = ad_square(x);
  ad_pause_recording(was);
  assert_false(ad_fwd_has_tangent(acc, c));
  ad_tensor *y = ad_mul(x, c);
  assert_tensor_near(ad_fwd_jvp(acc, y), VALUES(4.0), 1, TOL);
  ad_fwd_end(acc);
}

/* ---- nesting ----------------------------------------------------------- */

static void nested_levels_avoid_perturbation_confusion(void **state) {
  (void)state;
  /* d/dx [x * d/dy (x + y)] at x = 1 is 1: the inner derivative is 1 and
   * must not see x's outer tangent (which would make it 2). */
  ad_tensor *x = ad_scalar(1.0), *y = ad_scalar(5.0);
  ad_fwd *outer = level(x, ad_scalar(1.0));
  ad_fwd *inner = level(y, ad_scalar(1.0));
  ad_tensor *dy = ad_fwd_jvp(inner, ad_add(x, y));
  assert_int_equal(ad_fwd_end(inner), AD_OK);
  assert_tensor_near(dy, VALUES(1.0), 1, TOL);
  ad_tensor *w = ad_mul(x, dy);
  assert_tensor_near(ad_fwd_jvp(outer, w), VALUES(1.0), 1, TOL);
  assert_int_equal(ad_fwd_end(outer), AD_OK);
}

static void inner_level_sees_outer_tangents_as_constants(void **state) {
  (void)state;
  /* Both levels perturb x itself: the inner tangent of x*x is 2x, whose
   * outer tangent is 2, while the inner level never sees the outer seed. */
  ad_tensor *x = ad_scalar(3.0);
  ad_fwd *outer = level(x, ad_scalar(10.0));
  ad_fwd *inner = level(x, ad_scalar(1.0));
  ad_tensor *y = ad_mul(x, x);
  ad_tensor *d1 = ad_fwd_jvp(inner, y);
  assert_tensor_near(d1, VALUES(6.0), 1, TOL);
  assert_tensor_near(ad_fwd_jvp(outer, y), VALUES(60.0), 1, TOL);
  ad_fwd_end(inner);
  assert_tensor_near(ad_fwd_jvp(outer, d1), VALUES(20.0), 1, TOL);
  ad_fwd_end(outer);
}

typedef struct {
  ad_tensor *x;
} closure;

static ad_tensor *x_plus_y(ad_tensor *y, void *ctx) {
  return ad_add(((closure *)ctx)->x, y);
}

static ad_tensor *x_times_dy(ad_tensor *x, void *ctx) {
  (void)ctx;
  closure c = {x};
  return ad_mul(x, ad_jvp(x_plus_y, &c, ad_scalar(5.0), ad_scalar(1.0),
                          NULL));
}

static void nested_ad_jvp_avoids_perturbation_confusion(void **state) {
  (void)state;
  ad_tensor *v = NULL;
  ad_tensor *d = ad_jvp(x_times_dy, NULL, ad_scalar(1.0), ad_scalar(1.0), &v);
  assert_tensor_near(v, VALUES(1.0), 1, TOL);
  assert_tensor_near(d, VALUES(1.0), 1, TOL);
}

/* d^k/dx^k of f at x by k nested forward levels. */
static double forward_derivative(ad_tensor *(*f)(ad_tensor *), double xv,
                                 int k) {
  ad_tensor *x = ad_scalar(xv);
  ad_fwd *acc[4];
  for (int i = 0; i < k; i++) acc[i] = level(x, ad_scalar(1.0));
  ad_tensor *d = f(x);
  for (int i = k - 1; i >= 0; i--) {
    d = ad_fwd_jvp(acc[i], d);
    assert_non_null(d);
    assert_int_equal(ad_fwd_end(acc[i]), AD_OK);
  }
  return ad_item(d);
}

static ad_tensor *cube(ad_tensor *x) { return ad_mul(ad_mul(x, x), x); }

static void forward_over_forward_gives_second_derivative(void **state) {
  (void)state;
  assert_true(fabs(forward_derivative(cube, 2.0, 2) - 12.0) < TOL);
  assert_true(fabs(forward_derivative(ad_sin, 0.3, 2) + sin(0.3)) < TOL);
  assert_true(fabs(forward_derivative(ad_exp, 0.7, 2) - exp(0.7)) < TOL);
}

static void forward_over_forward_gives_third_derivative(void **state) {
  (void)state;
  assert_true(fabs(forward_derivative(cube, 2.0, 3) - 6.0) < TOL);
  assert_true(fabs(forward_derivative(ad_sin, 0.3, 3) + cos(0.3)) < TOL);
  /* tanh''' = -2 (1 - t^2)(1 - 3 t^2) with t = tanh x. */
  double t = tanh(0.4), e = -2.0 * (1 - t * t) * (1 - 3 * t * t);
  assert_true(fabs(forward_derivative(ad_tanh, 0.4, 3) - e) < 1e-10);
}

/* ---- mixing with tapes ------------------------------------------------- */

static const double RX[4] = {0.5, -1.2, 2.0, 0.3};
static const double RV[4] = {1.0, 0.5, -2.0, 3.0};

static void forward_over_reverse_gives_hessian_vector_product(void **state) {
  (void)state;
  ad_tensor *x = vec(4, RX);
  ad_fwd *acc = level(x, vec(4, RV));
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *f = rosenbrock(x, NULL);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  ad_tensor *g = ad_tape_gradient(tape, f, x);
  ad_tensor *hv = ad_fwd_jvp(acc, g);
  double h[16], e[4];
  rosenbrock_hessian(RX, 4, h);
  matvec(h, RV, 4, e);
  assert_shape(hv, 1, 4);
  assert_tensor_near(hv, e, 4, 1e-10);
  ad_tape_free(tape);
  ad_fwd_end(acc);
}

static void reverse_over_forward_gives_hessian_vector_product(void **state) {
  (void)state;
  ad_tensor *x = vec(4, RX);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_fwd *acc = level(x, vec(4, RV));
  ad_tensor *f = rosenbrock(x, NULL);
  ad_tensor *df = ad_fwd_jvp(acc, f); /* g . v */
  assert_int_equal(ad_fwd_end(acc), AD_OK);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  ad_tensor *hv = ad_tape_gradient(tape, df, x);
  double h[16], e[4];
  rosenbrock_hessian(RX, 4, h);
  matvec(h, RV, 4, e);
  assert_tensor_near(hv, e, 4, 1e-10);
  ad_tape_free(tape);
}

static void forward_over_reverse_over_reverse_gives_third_derivative(
    void **state) {
  (void)state;
  /* d^3/dx^3 x^3 = 6 via a level around two nested tapes. */
  ad_tensor *x = ad_scalar(1.7);
  ad_fwd *acc = level(x, ad_scalar(1.0));
  ad_tape *t2 = ad_tape_begin(0);
  ad_tape_watch(t2, x);
  ad_tape *t1 = ad_tape_begin(0);
  ad_tape_watch(t1, x);
  ad_tensor *y = cube(x);
  ad_tape_end(t1);
  ad_tensor *d1 = ad_tape_gradient(t1, y, x);
  ad_tape_end(t2);
  ad_tensor *d2 = ad_tape_gradient(t2, d1, x);
  assert_tensor_near(d2, VALUES(6 * 1.7), 1, TOL);
  assert_tensor_near(ad_fwd_jvp(acc, d2), VALUES(6.0), 1, TOL);
  ad_tape_free(t1);
  ad_tape_free(t2);
  ad_fwd_end(acc);
}

static void reverse_over_forward_over_forward_gives_third_derivative(
    void **state) {
  (void)state;
  /* d^3/dx^3 sin = -cos via a tape around two nested levels. */
  ad_tensor *x = ad_scalar(0.9);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_fwd *outer = level(x, ad_scalar(1.0));
  ad_fwd *inner = level(x, ad_scalar(1.0));
  ad_tensor *d1 = ad_fwd_jvp(inner, ad_sin(x));
  ad_fwd_end(inner);
  ad_tensor *d2 = ad_fwd_jvp(outer, d1);
  ad_fwd_end(outer);
  ad_tape_end(tape);
  assert_tensor_near(d2, VALUES(-sin(0.9)), 1, TOL);
  assert_tensor_near(ad_tape_gradient(tape, d2, x), VALUES(-cos(0.9)), 1,
                     TOL);
  ad_tape_free(tape);
}

/* ---- errors ------------------------------------------------------------ */

static void tangent_shape_mismatch_is_eshape(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(1, 2, 3)), *t = vec(2, VALUES(1, 1));
  assert_null(ad_fwd_begin(1, &x, &t));
  const char *msg = ad_error_message();
  assert_non_null(strstr(msg, "(2,)"));
  assert_non_null(strstr(msg, "(3,)"));
  assert_error(AD_ESHAPE, "ad_fwd_begin");
}

static void ending_level_before_inner_tape_is_estate(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0);
  ad_fwd *acc = level(x, ad_scalar(1.0));
  ad_tape *tape = ad_tape_begin(0);
  assert_int_equal(ad_fwd_end(acc), AD_ESTATE);
  assert_error(AD_ESTATE, "ad_fwd_end");
  /* The level is still open and working. */
  assert_tensor_near(ad_fwd_jvp(acc, ad_mul_scalar(x, 4.0)), VALUES(4.0), 1,
                     TOL);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
  ad_tape_free(tape);
}

static void ending_tape_before_inner_level_is_estate(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0);
  ad_tape *tape = ad_tape_begin(0);
  ad_fwd *acc = level(x, ad_scalar(1.0));
  assert_int_equal(ad_tape_end(tape), AD_ESTATE);
  assert_error(AD_ESTATE, "ad_tape_end");
  assert_int_equal(ad_fwd_end(acc), AD_OK);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  ad_tape_free(tape);
}

static void ending_outer_level_first_is_estate(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0);
  ad_fwd *outer = level(x, ad_scalar(1.0));
  ad_fwd *inner = level(x, ad_scalar(1.0));
  assert_int_equal(ad_fwd_end(outer), AD_ESTATE);
  assert_error(AD_ESTATE, "innermost");
  assert_int_equal(ad_fwd_end(inner), AD_OK);
  assert_int_equal(ad_fwd_end(outer), AD_OK);
}

static void outer_level_answers_while_inner_is_open(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *y = ad_scalar(3.0);
  ad_fwd *outer = level(x, ad_scalar(1.0));
  ad_fwd *inner = level(y, ad_scalar(1.0));
  ad_tensor *z = ad_mul(x, y);
  assert_tensor_near(ad_fwd_jvp(outer, z), VALUES(3.0), 1, TOL);
  assert_tensor_near(ad_fwd_jvp(inner, z), VALUES(2.0), 1, TOL);
  ad_fwd_end(inner);
  ad_fwd_end(outer);
}

static void null_arguments_are_einval(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *t = ad_scalar(1.0), *none = NULL;
  assert_null(ad_fwd_begin(1, NULL, &t));
  assert_error(AD_EINVAL, "ad_fwd_begin");
  assert_null(ad_fwd_begin(1, &x, NULL));
  assert_error(AD_EINVAL, "ad_fwd_begin");
  assert_null(ad_fwd_begin(-1, &x, &t));
  assert_error(AD_EINVAL, "ad_fwd_begin");
  assert_null(ad_fwd_begin(1, &none, &t));
  assert_error(AD_EINVAL, "primals[0]");
  assert_null(ad_fwd_begin(1, &x, &none));
  assert_error(AD_EINVAL, "tangents[0]");
  ad_fwd *acc = level(x, t);
  assert_null(ad_fwd_jvp(NULL, x));
  assert_error(AD_EINVAL, "ad_fwd_jvp");
  assert_null(ad_fwd_jvp(acc, NULL));
  assert_error(AD_EINVAL, "ad_fwd_jvp");
  assert_false(ad_fwd_has_tangent(NULL, x));
  assert_false(ad_fwd_has_tangent(acc, NULL));
  assert_int_equal(ad_fwd_end(NULL), AD_OK);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
}

static void empty_level_gives_zero_tangents(void **state) {
  (void)state;
  ad_fwd *acc = ad_fwd_begin(0, NULL, NULL);
  assert_non_null(acc);
  ad_tensor *y = ad_exp(ad_scalar(1.0));
  assert_tensor_near(ad_fwd_jvp(acc, y), VALUES(0.0), 1, 0);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(tangent_of_square_is_two_x_times_tangent),
      scoped_test(tangent_of_composition_follows_chain_rule),
      scoped_test(tangent_of_linear_map_is_the_map_of_the_tangent),
      scoped_test(tangent_of_reduction_reduces_the_tangent),
      scoped_test(tangent_broadcasts_with_its_primal),
      scoped_test(tangent_of_primal_is_the_given_tangent),
      scoped_test(unconnected_tensor_has_zero_tangent),
      scoped_test(several_primals_add_their_contributions),
      scoped_test(stop_gradient_blocks_the_tangent),
      scoped_test(comparisons_carry_no_tangent),
      scoped_test(paused_ops_get_no_tangent),
      scoped_test(nested_levels_avoid_perturbation_confusion),
      scoped_test(inner_level_sees_outer_tangents_as_constants),
      scoped_test(nested_ad_jvp_avoids_perturbation_confusion),
      scoped_test(forward_over_forward_gives_second_derivative),
      scoped_test(forward_over_forward_gives_third_derivative),
      scoped_test(forward_over_reverse_gives_hessian_vector_product),
      scoped_test(reverse_over_forward_gives_hessian_vector_product),
      scoped_test(forward_over_reverse_over_reverse_gives_third_derivative),
      scoped_test(reverse_over_forward_over_forward_gives_third_derivative),
      scoped_test(tangent_shape_mismatch_is_eshape),
      scoped_test(ending_level_before_inner_tape_is_estate),
      scoped_test(ending_tape_before_inner_level_is_estate),
      scoped_test(ending_outer_level_first_is_estate),
      scoped_test(outer_level_answers_while_inner_is_open),
      scoped_test(null_arguments_are_einval),
      scoped_test(empty_level_gives_zero_tangents),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
