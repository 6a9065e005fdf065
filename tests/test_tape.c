/* Tests of gradient tapes: recording, gradients against closed forms,
 * nesting, variables, control flow and every tape error. */
#include <stdlib.h>

#include "testutil.h"

#define TOL 1e-12

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

static ad_tensor *mat(int64_t r, int64_t c, const double *v) {
  return ad_tensor_new(2, SHAPE(r, c), v);
}

/* Fail unless got is within tol (absolute + relative) of want. */
#define assert_close(got, want, tol)                                    \
  do {                                                                  \
    const double want_ = (want);                                        \
    assert_tensor_near(ad_scalar(got), &want_, 1, (tol));               \
  } while (0)

/* A tape watching x, for the common one-source case. */
static ad_tape *watching(unsigned flags, ad_tensor *x) {
  ad_tape *tape = ad_tape_begin(flags);
  assert_non_null(tape);
  assert_int_equal(ad_tape_watch(tape, x), AD_OK);
  return tape;
}

/* ---- gradients of simple expressions ----------------------------------- */

static void gradient_of_square_is_two_x(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_mul(x, x);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  ad_tensor *g = ad_tape_gradient(tape, y, x);
  assert_shape(g, 0, 0);
  assert_tensor_near(g, VALUES(6.0), 1, TOL);
  ad_tape_free(tape);
}

static void gradient_of_polynomial_matches_closed_form(void **state) {
  (void)state;
  /* y = 3x^2 + 2x + 1, dy/dx = 6x + 2. */
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_add_scalar(
      ad_add(ad_mul_scalar(ad_square(x), 3.0), ad_mul_scalar(x, 2.0)), 1.0);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(14.0), 1, TOL);
  ad_tape_free(tape);
}

static void gradient_of_composition_follows_chain_rule(void **state) {
  (void)state;
  /* y = exp(sin(x)), dy/dx = cos(x) exp(sin(x)), elementwise then summed. */
  const double xs[] = {-1.0, 0.25, 2.0};
  ad_tensor *x = vec(3, xs);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_sum_all(ad_exp(ad_sin(x)));
  ad_tape_end(tape);
  double e[3];
  for (int i = 0; i < 3; i++) e[i] = cos(xs[i]) * exp(sin(xs[i]));
  ad_tensor *g = ad_tape_gradient(tape, y, x);
  assert_shape(g, 1, 3);
  assert_tensor_near(g, e, 3, TOL);
  ad_tape_free(tape);
}

static void gradient_of_quotient_and_log(void **state) {
  (void)state;
  /* y = log(x) / x, dy/dx = (1 - log x) / x^2. */
  ad_tensor *x = ad_scalar(2.5);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_div(ad_log(x), x);
  ad_tape_end(tape);
  double e = (1.0 - log(2.5)) / (2.5 * 2.5);
  assert_tensor_near(ad_tape_gradient(tape, y, x), &e, 1, TOL);
  ad_tape_free(tape);
}

static void gradient_of_matmul_sum_is_ones_times_b_transposed(void **state) {
  (void)state;
  /* d sum(A B) / dA = 1 B^T: row sums of B repeated on every row. */
  ad_tensor *a = mat(2, 3, VALUES(1, 2, 3, 4, 5, 6));
  ad_tensor *b = mat(3, 2, VALUES(1, -1, 2, 0.5, -3, 4));
  ad_tape *tape = watching(0, a);
  ad_tape_watch(tape, b);
  ad_tensor *y = ad_sum_all(ad_matmul(a, b));
  ad_tape_end(tape);
  ad_tensor *srcs[2] = {a, b}, *g[2];
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 2, srcs, g, 0), AD_OK);
  assert_shape(g[0], 2, 2, 3);
  assert_tensor_near(g[0], VALUES(0, 2.5, 1, 0, 2.5, 1), 6, TOL);
  /* d/dB = A^T 1: column sums of A on every column. */
  assert_shape(g[1], 2, 3, 2);
  assert_tensor_near(g[1], VALUES(5, 5, 7, 7, 9, 9), 6, TOL);
  ad_tape_free(tape);
}

/* ---- watching ---------------------------------------------------------- */

static void unwatched_source_gets_zero_gradient(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *c = ad_scalar(5.0);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_mul(x, c);
  ad_tape_end(tape);
  ad_tensor *g = ad_tape_gradient(tape, y, c);
  assert_shape(g, 0, 0);
  assert_tensor_near(g, VALUES(0.0), 1, TOL);
  ad_tape_free(tape);
}

static void ops_on_unwatched_tensors_are_not_recorded(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *c = ad_scalar(5.0);
  ad_tape *tape = watching(0, x);
  ad_tensor *k = ad_exp(ad_mul(c, c));
  assert_int_equal(ad_tape_size(tape), 0);
  ad_tensor *y = ad_mul(x, k);
  assert_int_equal(ad_tape_size(tape), 1);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(exp(25.0)), 1,
                     1e-12);
  ad_tape_free(tape);
}

static void watching_twice_is_harmless(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(4.0);
  ad_tape *tape = watching(0, x);
  assert_int_equal(ad_tape_watch(tape, x), AD_OK);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(8.0), 1, TOL);
  ad_tape_free(tape);
}

static void ops_after_end_are_not_recorded(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = watching(AD_TAPE_PERSISTENT, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  int64_t n = ad_tape_size(tape);
  ad_tensor *z = ad_sin(y);
  assert_int_equal(ad_tape_size(tape), n);
  /* z was computed after the end, so the tape cannot see it. */
  ad_tensor *g = ad_tape_gradient(tape, z, x);
  assert_tensor_near(g, VALUES(0.0), 1, TOL);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(4.0), 1, TOL);
  ad_tape_free(tape);
}

static void stop_gradient_is_a_constant_to_the_tape(void **state) {
  (void)state;
  /* y = x * stop(x): dy/dx = stop(x) = x, not 2x. */
  ad_tensor *x = ad_scalar(3.0);
  ad_tape *tape = watching(0, x);
  ad_tensor *s = ad_stop_gradient(x);
  ad_tensor *y = ad_mul(x, s);
  ad_tape_end(tape);
  assert_tensor_near(s, VALUES(3.0), 1, 0);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(3.0), 1, TOL);
  ad_tape_free(tape);
}

static void stop_gradient_keeps_values_and_shape(void **state) {
  (void)state;
  ad_tensor *x = mat(2, 2, VALUES(1, 2, 3, 4));
  ad_tensor *s = ad_stop_gradient(x);
  assert_shape(s, 2, 2, 2);
  assert_tensor_near(s, VALUES(1, 2, 3, 4), 4, 0);
}

/* ---- persistence ------------------------------------------------------- */

static void persistent_tape_answers_several_gradient_calls(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = watching(AD_TAPE_PERSISTENT, x);
  ad_tensor *y = ad_square(x);
  ad_tensor *z = ad_mul(y, y);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(4.0), 1, TOL);
  assert_tensor_near(ad_tape_gradient(tape, z, x), VALUES(32.0), 1, TOL);
  assert_tensor_near(ad_tape_gradient(tape, z, y), VALUES(8.0), 1, TOL);
  assert_true(ad_tape_size(tape) > 0);
  ad_tape_free(tape);
}

static void non_persistent_tape_refuses_second_gradient(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  assert_true(ad_tape_size(tape) > 0);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(4.0), 1, TOL);
  assert_int_equal(ad_tape_size(tape), 0);
  assert_null(ad_tape_gradient(tape, y, x));
  assert_error(AD_ESTATE, "ad_tape_gradient");
  ad_tensor *g;
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 1, &x, &g, 0),
                   AD_ESTATE);
  assert_null(g);
  assert_error(AD_ESTATE, "AD_TAPE_PERSISTENT");
  ad_tape_free(tape);
}

/* ---- several sources, seeds and unconnected sources ------------------- */

static void gradients_of_several_sources(void **state) {
  (void)state;
  /* f = x y + sin(x): df/dx = y + cos x, df/dy = x. */
  ad_tensor *x = ad_scalar(0.5), *y = ad_scalar(-2.0);
  ad_tape *tape = watching(0, x);
  ad_tape_watch(tape, y);
  ad_tensor *f = ad_add(ad_mul(x, y), ad_sin(x));
  ad_tape_end(tape);
  ad_tensor *srcs[2] = {x, y}, *g[2];
  assert_int_equal(ad_tape_gradients(tape, f, NULL, 2, srcs, g, 0), AD_OK);
  assert_tensor_near(g[0], VALUES(-2.0 + cos(0.5)), 1, TOL);
  assert_tensor_near(g[1], VALUES(0.5), 1, TOL);
  ad_tape_free(tape);
}

static void target_grad_seeds_a_vector_target(void **state) {
  (void)state;
  /* y = x^2 elementwise; the VJP with v is 2 x v. */
  ad_tensor *x = vec(3, VALUES(1, -2, 3));
  ad_tensor *v = vec(3, VALUES(10, 100, 1000));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  ad_tensor *g;
  assert_int_equal(ad_tape_gradients(tape, y, v, 1, &x, &g, 0), AD_OK);
  assert_tensor_near(g, VALUES(20, -400, 6000), 3, TOL);
  ad_tape_free(tape);
}

static void target_grad_scales_a_scalar_target(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  ad_tensor *g;
  assert_int_equal(
      ad_tape_gradients(tape, y, ad_scalar(0.5), 1, &x, &g, 0), AD_OK);
  assert_tensor_near(g, VALUES(3.0), 1, TOL);
  ad_tape_free(tape);
}

static void unconnected_source_is_null_by_default(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *u = vec(2, VALUES(1, 2));
  ad_tape *tape = watching(0, x);
  ad_tape_watch(tape, u);
  ad_tensor *y = ad_exp(x);
  ad_tape_end(tape);
  ad_tensor *srcs[2] = {x, u}, *g[2] = {NULL, x};
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 2, srcs, g, 0), AD_OK);
  assert_tensor_near(g[0], VALUES(exp(1.0)), 1, TOL);
  assert_null(g[1]);
  ad_tape_free(tape);
}

static void unconnected_source_is_zero_with_flag(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *u = vec(2, VALUES(1, 2));
  ad_tape *tape = watching(0, x);
  ad_tape_watch(tape, u);
  ad_tensor *y = ad_exp(x);
  ad_tape_end(tape);
  ad_tensor *srcs[2] = {x, u}, *g[2];
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 2, srcs, g,
                                     AD_UNCONNECTED_ZERO),
                   AD_OK);
  assert_shape(g[1], 1, 2);
  assert_tensor_near(g[1], VALUES(0, 0), 2, 0);
  ad_tape_free(tape);
}

static void gradient_with_respect_to_an_intermediate(void **state) {
  (void)state;
  /* z = x^2, y = sin(z) * x: dy/dz (holding x) = cos(z) x. */
  ad_tensor *x = ad_scalar(1.5);
  ad_tape *tape = watching(0, x);
  ad_tensor *z = ad_square(x);
  ad_tensor *y = ad_mul(ad_sin(z), x);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, z),
                     VALUES(cos(2.25) * 1.5), 1, TOL);
  ad_tape_free(tape);
}

static void gradient_of_target_with_respect_to_itself_is_one(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.5);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_sin(x);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, y), VALUES(1.0), 1, TOL);
  ad_tape_free(tape);
}

/* ---- accumulation and broadcasting ------------------------------------- */

static void tensor_used_several_times_accumulates(void **state) {
  (void)state;
  /* d(x x x)/dx = 3 x^2. */
  ad_tensor *x = vec(3, VALUES(1, -2, 0.5));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_sum_all(ad_mul(ad_mul(x, x), x));
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(3, 12, 0.75), 3,
                     TOL);
  ad_tape_free(tape);
}

static void branches_that_rejoin_add_their_gradients(void **state) {
  (void)state;
  /* y = sin x + cos x + x: dy/dx = cos x - sin x + 1. */
  ad_tensor *x = ad_scalar(0.7);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_add(ad_add(ad_sin(x), ad_cos(x)), x);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, y, x),
                     VALUES(cos(0.7) - sin(0.7) + 1.0), 1, TOL);
  ad_tape_free(tape);
}

static void broadcast_gradient_sums_over_stretched_axes(void **state) {
  (void)state;
  /* a (2, 3) * b (3,) and c (2, 1): gradients summed back to each shape. */
  ad_tensor *a = mat(2, 3, VALUES(1, 2, 3, 4, 5, 6));
  ad_tensor *b = vec(3, VALUES(1, 10, 100));
  ad_tensor *c = mat(2, 1, VALUES(-1, 2));
  ad_tape *tape = watching(0, a);
  ad_tape_watch(tape, b);
  ad_tape_watch(tape, c);
  ad_tensor *y = ad_sum_all(ad_add(ad_mul(a, b), c));
  ad_tape_end(tape);
  ad_tensor *srcs[3] = {a, b, c}, *g[3];
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 3, srcs, g, 0), AD_OK);
  assert_shape(g[0], 2, 2, 3);
  assert_tensor_near(g[0], VALUES(1, 10, 100, 1, 10, 100), 6, TOL);
  assert_shape(g[1], 1, 3);
  assert_tensor_near(g[1], VALUES(5, 7, 9), 3, TOL);
  assert_shape(g[2], 2, 2, 1);
  assert_tensor_near(g[2], VALUES(3, 3), 2, TOL);
  ad_tape_free(tape);
}

static void broadcast_scalar_gradient_is_a_sum(void **state) {
  (void)state;
  ad_tensor *s = ad_scalar(2.0);
  ad_tensor *x = mat(2, 2, VALUES(1, 2, 3, 4));
  ad_tape *tape = watching(0, s);
  ad_tensor *y = ad_sum_all(ad_mul(x, s));
  ad_tape_end(tape);
  ad_tensor *g = ad_tape_gradient(tape, y, s);
  assert_shape(g, 0, 0);
  assert_tensor_near(g, VALUES(10.0), 1, TOL);
  ad_tape_free(tape);
}

static void same_source_twice_gets_its_gradient_twice(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.5);
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  ad_tensor *srcs[2] = {x, x}, *g[2];
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 2, srcs, g, 0), AD_OK);
  assert_tensor_near(g[0], VALUES(3.0), 1, TOL);
  assert_tensor_near(g[1], VALUES(3.0), 1, TOL);
  ad_tape_free(tape);
}

static void gradient_of_empty_tensor_is_empty(void **state) {
  (void)state;
  ad_tensor *x = ad_zeros(2, SHAPE(0, 3));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_sum_all(ad_exp(x));
  ad_tape_end(tape);
  assert_tensor_near(y, VALUES(0.0), 1, 0);
  ad_tensor *g = ad_tape_gradient(tape, y, x);
  assert_shape(g, 2, 0, 3);
  ad_tape_free(tape);
}

static void gradient_kept_out_of_an_inner_scope_survives(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *g;
  ad_tape *tape = watching(0, x);
  ad_scope_begin();
  ad_tensor *y = ad_exp(ad_square(x));
  ad_tape_end(tape);
  g = ad_keep(ad_tape_gradient(tape, y, x));
  ad_tape_free(tape);
  ad_scope_end();
  /* Churn the allocator so a freed g would be overwritten. */
  for (int i = 0; i < 100; i++) ad_full(1, SHAPE(1), -1.0);
  assert_tensor_near(g, VALUES(4.0 * exp(4.0)), 1, TOL);
}

/* ---- Jacobians --------------------------------------------------------- */

static void jacobian_of_elementwise_square_is_diagonal(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(1, 2, 3));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  ad_tensor *j = ad_tape_jacobian(tape, y, x);
  assert_shape(j, 2, 3, 3);
  assert_tensor_near(j, VALUES(2, 0, 0, 0, 4, 0, 0, 0, 6), 9, TOL);
  ad_tape_free(tape);
}

static void jacobian_of_linear_map_is_its_matrix(void **state) {
  (void)state;
  /* y = A x with A (2, 3): J = A, shape (2, 3). */
  const double av[] = {1, 2, 3, -4, 5, -6};
  ad_tensor *a = mat(2, 3, av);
  ad_tensor *x = vec(3, VALUES(0.1, 0.2, 0.3));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_matmul(a, x);
  ad_tape_end(tape);
  ad_tensor *j = ad_tape_jacobian(tape, y, x);
  assert_shape(j, 2, 2, 3);
  assert_tensor_near(j, av, 6, TOL);
  ad_tape_free(tape);
}

static void jacobian_of_matrix_input_has_joined_shape(void **state) {
  (void)state;
  /* y_i = sum_j X_ij^2 for X (2, 3): J[i, k, j] = 2 X_kj if i == k. */
  ad_tensor *x = mat(2, 3, VALUES(1, 2, 3, 4, 5, 6));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_sum(ad_square(x), 1, (const int[]){1}, false);
  ad_tape_end(tape);
  ad_tensor *j = ad_tape_jacobian(tape, y, x);
  assert_shape(j, 3, 2, 2, 3);
  assert_tensor_near(j, VALUES(2, 4, 6, 0, 0, 0, 0, 0, 0, 8, 10, 12), 12,
                     TOL);
  ad_tape_free(tape);
}

static void jacobian_counts_as_one_gradient_call(void **state) {
  (void)state;
  ad_tensor *x = vec(2, VALUES(1, 2));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_mul_scalar(x, 3.0);
  ad_tape_end(tape);
  assert_non_null(ad_tape_jacobian(tape, y, x));
  assert_null(ad_tape_jacobian(tape, y, x));
  assert_error(AD_ESTATE, "ad_tape_jacobian");
  ad_tape_free(tape);
}

/* ---- nested tapes: higher derivatives ---------------------------------- */

/* d^k/dx^k of x^3 at x by k nested tapes. */
static double nth_derivative_of_cube(double xv, int k) {
  ad_tensor *x = ad_scalar(xv);
  ad_tape *tapes[4];
  for (int i = 0; i < k; i++) tapes[i] = watching(0, x);
  ad_tensor *d = ad_mul(ad_mul(x, x), x);
  for (int i = k - 1; i >= 0; i--) {
    assert_int_equal(ad_tape_end(tapes[i]), AD_OK);
    d = ad_tape_gradient(tapes[i], d, x);
    assert_non_null(d);
  }
  for (int i = 0; i < k; i++) ad_tape_free(tapes[i]);
  return ad_item(d);
}

static void nested_tapes_give_second_derivative(void **state) {
  (void)state;
  assert_close(nth_derivative_of_cube(2.0, 1), 12.0, TOL);
  assert_close(nth_derivative_of_cube(2.0, 2), 12.0, TOL);
  assert_close(nth_derivative_of_cube(-1.5, 2), -9.0, TOL);
}

static void nested_tapes_give_third_derivative(void **state) {
  (void)state;
  assert_close(nth_derivative_of_cube(2.0, 3), 6.0, TOL);
  assert_close(nth_derivative_of_cube(-7.0, 3), 6.0, TOL);
}

static void guide_example_x_squared_gives_six_two_zero(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0);
  ad_tape *t3 = watching(0, x);
  ad_tape *t2 = watching(0, x);
  ad_tape *t1 = watching(0, x);
  ad_tensor *y = ad_mul(x, x);
  ad_tape_end(t1);
  ad_tensor *d1 = ad_tape_gradient(t1, y, x);
  ad_tape_end(t2);
  ad_tensor *d2 = ad_tape_gradient(t2, d1, x);
  ad_tape_end(t3);
  ad_tensor *d3 = ad_tape_gradient(t3, d2, x);
  assert_tensor_near(d1, VALUES(6.0), 1, TOL);
  assert_tensor_near(d2, VALUES(2.0), 1, TOL);
  assert_tensor_near(d3, VALUES(0.0), 1, TOL);
  ad_tape_free(t1);
  ad_tape_free(t2);
  ad_tape_free(t3);
}

static void nested_tapes_differentiate_a_mixed_second_derivative(void **state) {
  (void)state;
  /* f = x^2 y^3: d/dy (df/dx) = 6 x y^2. */
  ad_tensor *x = ad_scalar(2.0), *y = ad_scalar(-1.0);
  ad_tape *outer = watching(0, y);
  ad_tape *inner = watching(0, x);
  ad_tensor *f = ad_mul(ad_square(x), ad_pow_scalar(y, 3.0));
  ad_tape_end(inner);
  ad_tensor *fx = ad_tape_gradient(inner, f, x);
  ad_tape_end(outer);
  assert_tensor_near(fx, VALUES(4.0 * -1.0), 1, TOL);
  assert_tensor_near(ad_tape_gradient(outer, fx, y), VALUES(12.0), 1, TOL);
  ad_tape_free(inner);
  ad_tape_free(outer);
}

static void gradient_inside_recording_tape_is_not_recorded_by_it(
    void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = watching(AD_TAPE_PERSISTENT, x);
  ad_tensor *y = ad_pow_scalar(x, 3.0);
  int64_t before = ad_tape_size(tape);
  ad_tensor *g = ad_tape_gradient(tape, y, x);
  assert_tensor_near(g, VALUES(12.0), 1, TOL);
  assert_int_equal(ad_tape_size(tape), before);
  /* The tape still records ordinary ops afterwards. */
  ad_tensor *z = ad_sin(y);
  assert_int_equal(ad_tape_size(tape), before + 1);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  assert_tensor_near(ad_tape_gradient(tape, z, x),
                     VALUES(cos(8.0) * 12.0), 1, TOL);
  ad_tape_free(tape);
}

/* ---- tape errors ------------------------------------------------------- */

static void ending_tapes_out_of_order_is_estate(void **state) {
  (void)state;
  ad_tape *outer = ad_tape_begin(0);
  ad_tape *inner = ad_tape_begin(0);
  assert_int_equal(ad_tape_end(outer), AD_ESTATE);
  assert_error(AD_ESTATE, "ad_tape_end");
  assert_int_equal(ad_tape_end(inner), AD_OK);
  assert_int_equal(ad_tape_end(outer), AD_OK);
  ad_tape_free(inner);
  ad_tape_free(outer);
}

static void ending_a_tape_twice_is_estate(void **state) {
  (void)state;
  ad_tape *tape = ad_tape_begin(0);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  assert_int_equal(ad_tape_end(tape), AD_ESTATE);
  assert_error(AD_ESTATE, "ad_tape_end");
  ad_tape_free(tape);
}

static void unknown_tape_flags_are_einval(void **state) {
  (void)state;
  assert_null(ad_tape_begin(0x80u));
  assert_error(AD_EINVAL, "ad_tape_begin");
}

static void non_scalar_target_without_target_grad_is_eshape(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(1, 2, 3));
  ad_tape *tape = watching(AD_TAPE_PERSISTENT, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  assert_null(ad_tape_gradient(tape, y, x));
  assert_error(AD_ESHAPE, "(3,)");
  ad_tensor *g = x;
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 1, &x, &g, 0),
                   AD_ESHAPE);
  assert_null(g);
  assert_error(AD_ESHAPE, "ad_tape_gradients");
  ad_tape_free(tape);
}

static void target_grad_of_wrong_shape_is_eshape(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(1, 2, 3));
  ad_tape *tape = watching(0, x);
  ad_tensor *y = ad_square(x);
  ad_tape_end(tape);
  ad_tensor *g = x;
  assert_int_equal(
      ad_tape_gradients(tape, y, vec(2, VALUES(1, 1)), 1, &x, &g, 0),
      AD_ESHAPE);
  assert_null(g);
  assert_error(AD_ESHAPE, "(2,)");
  /* The failed call did not spend the tape. */
  assert_int_equal(
      ad_tape_gradients(tape, y, vec(3, VALUES(1, 1, 1)), 1, &x, &g, 0),
      AD_OK);
  assert_tensor_near(g, VALUES(2, 4, 6), 3, TOL);
  ad_tape_free(tape);
}

static void freeing_a_recording_tape_ends_it(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *outer = watching(0, x);
  ad_tape *inner = watching(0, x);
  ad_tensor *y = ad_square(x);
  ad_tape_free(inner); /* still recording */
  /* outer is now the innermost: it can be ended and still differentiates
   * what it recorded. */
  ad_tensor *z = ad_mul(y, x);
  assert_int_equal(ad_tape_end(outer), AD_OK);
  assert_tensor_near(ad_tape_gradient(outer, z, x), VALUES(12.0), 1, TOL);
  ad_tape_free(outer);
}

static void null_tape_target_and_source_are_einval(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0);
  ad_tape *tape = watching(AD_TAPE_PERSISTENT, x);
  ad_tensor *y = ad_exp(x);
  ad_tape_end(tape);
  assert_null(ad_tape_gradient(NULL, y, x));
  assert_error(AD_EINVAL, "tape");
  assert_null(ad_tape_gradient(tape, NULL, x));
  assert_error(AD_EINVAL, "target");
  assert_null(ad_tape_gradient(tape, y, NULL));
  assert_error(AD_EINVAL, "source");
  assert_int_equal(ad_tape_watch(NULL, x), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_tape_watch");
  assert_int_equal(ad_tape_watch(tape, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_tape_watch");
  assert_int_equal(ad_tape_end(NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_tape_end");
  assert_int_equal(ad_tape_size(NULL), -1);
  assert_error(AD_EINVAL, "ad_tape_size");
  ad_tensor *srcs[2] = {x, NULL}, *g[2];
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 2, srcs, g, 0),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "sources[1]");
  assert_null(ad_tape_jacobian(tape, y, NULL));
  assert_error(AD_EINVAL, "ad_tape_jacobian");
  ad_tape_free(NULL); /* NULL-safe */
  /* None of the failures spent the persistent tape. */
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(exp(1.0)), 1,
                     TOL);
  ad_tape_free(tape);
}

/* ---- variables --------------------------------------------------------- */

static void variable_read_under_a_tape_is_watched(void **state) {
  (void)state;
  ad_var *w = ad_var_new("w", ad_scalar(3.0));
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *wv = ad_var_value(w);
  ad_tensor *y = ad_square(wv);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_num_variables(tape), 1);
  assert_ptr_equal(ad_tape_variable(tape, 0), w);
  assert_tensor_near(ad_tape_gradient(tape, y, wv), VALUES(6.0), 1, TOL);
  ad_tape_free(tape);
  ad_var_free(w);
}

static void no_auto_watch_tape_ignores_variables(void **state) {
  (void)state;
  ad_var *w = ad_var_new("w", ad_scalar(3.0));
  ad_tape *tape = ad_tape_begin(AD_TAPE_NO_AUTO_WATCH);
  ad_tensor *wv = ad_var_value(w);
  ad_tensor *y = ad_square(wv);
  assert_int_equal(ad_tape_size(tape), 0);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_num_variables(tape), 0);
  assert_tensor_near(ad_tape_gradient(tape, y, wv), VALUES(0.0), 1, 0);
  ad_tape_free(tape);
  ad_var_free(w);
}

static void var_gradients_are_implicit_gradients(void **state) {
  (void)state;
  /* loss = sum((w x + b - t)^2): dL/dw = sum(2 r x), dL/db = sum(2 r). */
  ad_var *w = ad_var_new("w", ad_scalar(2.0));
  ad_var *b = ad_var_new("b", ad_scalar(0.5));
  ad_tensor *x = vec(3, VALUES(1, 2, 3)), *t = vec(3, VALUES(2, 3, 7));
  ad_tape *tape = ad_tape_begin(0);
  /* Read w first: C leaves the order of argument evaluation open. */
  ad_tensor *wv = ad_var_value(w);
  ad_tensor *bv = ad_var_value(b);
  ad_tensor *pred = ad_add(ad_mul(wv, x), bv);
  ad_tensor *loss = ad_sum_all(ad_square(ad_sub(pred, t)));
  ad_tape_end(tape);
  assert_int_equal(ad_tape_num_variables(tape), 2);
  assert_ptr_equal(ad_tape_variable(tape, 0), w);
  assert_ptr_equal(ad_tape_variable(tape, 1), b);
  double r[3] = {2 * 1 + 0.5 - 2, 2 * 2 + 0.5 - 3, 2 * 3 + 0.5 - 7};
  double gw = 2 * (r[0] * 1 + r[1] * 2 + r[2] * 3);
  double gb = 2 * (r[0] + r[1] + r[2]);
  ad_var *vars[2] = {w, b};
  ad_tensor *g[2];
  assert_int_equal(ad_tape_var_gradients(tape, loss, 2, vars, g), AD_OK);
  assert_tensor_near(g[0], &gw, 1, TOL);
  assert_tensor_near(g[1], &gb, 1, TOL);
  ad_tape_free(tape);
  ad_var_free(w);
  ad_var_free(b);
}

static void variable_read_twice_sums_both_reads(void **state) {
  (void)state;
  /* y = v * v from two separate reads: dy/dv = 2 v. */
  ad_var *v = ad_var_new("v", vec(2, VALUES(3, -1)));
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *y = ad_sum_all(ad_mul(ad_var_value(v), ad_var_value(v)));
  ad_tape_end(tape);
  assert_int_equal(ad_tape_num_variables(tape), 1);
  ad_tensor *g;
  assert_int_equal(ad_tape_var_gradients(tape, y, 1, &v, &g), AD_OK);
  assert_tensor_near(g, VALUES(6, -2), 2, TOL);
  ad_tape_free(tape);
  ad_var_free(v);
}

static void var_gradient_sums_reads_before_and_after_assign(void **state) {
  (void)state;
  /* y = v1^2 + v2^2 with v1 = 2 read before and v2 = 3 after an assign:
   * the variable's gradient sums both reads, 2*2 + 2*3. */
  ad_var *v = ad_var_new("v", ad_scalar(2.0));
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *y1 = ad_square(ad_var_value(v));
  assert_int_equal(ad_var_assign(v, ad_scalar(3.0)), AD_OK);
  ad_tensor *y = ad_add(y1, ad_square(ad_var_value(v)));
  ad_tape_end(tape);
  assert_int_equal(ad_tape_num_variables(tape), 1);
  ad_tensor *g;
  assert_int_equal(ad_tape_var_gradients(tape, y, 1, &v, &g), AD_OK);
  assert_tensor_near(g, VALUES(10.0), 1, TOL);
  ad_tape_free(tape);
  ad_var_free(v);
}

static void unused_variable_gets_zero_gradient(void **state) {
  (void)state;
  ad_var *used = ad_var_new("used", ad_scalar(2.0));
  ad_var *idle = ad_var_new("idle", vec(2, VALUES(1, 1)));
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *y = ad_exp(ad_var_value(used));
  ad_tape_end(tape);
  ad_var *vars[2] = {used, idle};
  ad_tensor *g[2];
  assert_int_equal(ad_tape_var_gradients(tape, y, 2, vars, g), AD_OK);
  assert_tensor_near(g[0], VALUES(exp(2.0)), 1, TOL);
  assert_shape(g[1], 1, 2);
  assert_tensor_near(g[1], VALUES(0, 0), 2, 0);
  ad_tape_free(tape);
  ad_var_free(used);
  ad_var_free(idle);
}

static void tape_variable_index_out_of_range_is_einval(void **state) {
  (void)state;
  ad_var *v = ad_var_new("v", ad_scalar(1.0));
  ad_tape *tape = ad_tape_begin(0);
  ad_var_value(v);
  ad_tape_end(tape);
  assert_null(ad_tape_variable(tape, 1));
  assert_error(AD_EINVAL, "index 1");
  assert_null(ad_tape_variable(tape, -1));
  assert_error(AD_EINVAL, "ad_tape_variable");
  assert_int_equal(ad_tape_num_variables(NULL), -1);
  assert_error(AD_EINVAL, "ad_tape_num_variables");
  ad_tape_free(tape);
  ad_var_free(v);
}

static void tape_keeps_variable_alive_after_var_free(void **state) {
  (void)state;
  ad_var *v = ad_var_new("kept", ad_scalar(1.0));
  ad_tape *tape = ad_tape_begin(0);
  ad_var_value(v);
  ad_tape_end(tape);
  ad_var_free(v);
  ad_var *seen = ad_tape_variable(tape, 0);
  assert_non_null(seen);
  assert_string_equal(ad_var_name(seen), "kept");
  ad_tape_free(tape);
}

static void var_assign_replaces_value_and_checks_shape(void **state) {
  (void)state;
  ad_var *v = ad_var_new("weights", vec(2, VALUES(1, 2)));
  assert_int_equal(ad_var_assign(v, vec(2, VALUES(5, 6))), AD_OK);
  assert_tensor_near(ad_var_value(v), VALUES(5, 6), 2, 0);
  assert_int_equal(ad_var_assign(v, vec(3, VALUES(1, 2, 3))), AD_ESHAPE);
  assert_error(AD_ESHAPE, "weights");
  assert_tensor_near(ad_var_value(v), VALUES(5, 6), 2, 0);
  assert_int_equal(ad_var_assign(v, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_var_assign");
  ad_var_free(v);
}

static void var_name_is_copied_and_defaults_to_empty(void **state) {
  (void)state;
  char name[8] = "bias";
  ad_var *v = ad_var_new(name, ad_scalar(0.0));
  name[0] = 'X';
  assert_string_equal(ad_var_name(v), "bias");
  ad_var *anon = ad_var_new(NULL, ad_scalar(0.0));
  assert_string_equal(ad_var_name(anon), "");
  assert_null(ad_var_new("x", NULL));
  assert_error(AD_EINVAL, "ad_var_new");
  ad_var_free(v);
  ad_var_free(anon);
  ad_var_free(NULL);
}

static void variable_second_derivative_through_nested_tapes(void **state) {
  (void)state;
  /* y = w^3: the inner tape gives 3 w^2, the outer one 6 w. */
  ad_var *w = ad_var_new("w", ad_scalar(2.0));
  ad_tape *outer = ad_tape_begin(0);
  ad_tape *inner = ad_tape_begin(0);
  ad_tensor *y = ad_pow_scalar(ad_var_value(w), 3.0);
  ad_tape_end(inner);
  ad_tensor *g1;
  assert_int_equal(ad_tape_var_gradients(inner, y, 1, &w, &g1), AD_OK);
  ad_tape_end(outer);
  assert_tensor_near(g1, VALUES(12.0), 1, TOL);
  assert_int_equal(ad_tape_num_variables(outer), 1);
  ad_tensor *g2;
  assert_int_equal(ad_tape_var_gradients(outer, g1, 1, &w, &g2), AD_OK);
  assert_tensor_near(g2, VALUES(12.0), 1, TOL);
  ad_tape_free(inner);
  ad_tape_free(outer);
  ad_var_free(w);
}

/* ---- control flow ------------------------------------------------------ */

static void gradient_through_value_dependent_while_loop(void **state) {
  (void)state;
  /* Multiply by 1.5 until the value reaches 10: from x0 the loop runs k
   * times and y = 1.5^k x0, so dy/dx0 = 1.5^k. */
  const double starts[] = {1.0, 3.0, 9.5, 12.0};
  for (int s = 0; s < 4; s++) {
    ad_tensor *x0 = ad_scalar(starts[s]);
    ad_tape *tape = watching(0, x0);
    ad_tensor *x = x0;
    int k = 0;
    while (ad_item(x) < 10.0) {
      x = ad_mul_scalar(x, 1.5);
      k++;
    }
    ad_tape_end(tape);
    double expect = pow(1.5, k);
    assert_tensor_near(ad_tape_gradient(tape, x, x0), &expect, 1, TOL);
    ad_tape_free(tape);
  }
}

static void gradient_through_loop_with_tensor_factor(void **state) {
  (void)state;
  /* x = x * a while x < 10, with a watched: y = a^k x0, dy/da = k a^(k-1)
   * x0. */
  ad_tensor *a = ad_scalar(1.5), *x0 = ad_scalar(1.0);
  ad_tape *tape = watching(0, a);
  ad_tensor *x = x0;
  int k = 0;
  while (ad_item(x) < 10.0) {
    x = ad_mul(x, a);
    k++;
  }
  ad_tape_end(tape);
  assert_int_equal(k, 6);
  double expect = k * pow(1.5, k - 1);
  assert_tensor_near(ad_tape_gradient(tape, x, a), &expect, 1, TOL);
  ad_tape_free(tape);
}

/* x^n by recursion, squaring on even n. */
static ad_tensor *power(ad_tensor *x, int n) {
  if (n == 0) return ad_ones(ad_ndim(x), ad_shape(x));
  if (n % 2 == 0) return ad_square(power(x, n / 2));
  return ad_mul(x, power(x, n - 1));
}

static void gradient_through_recursion(void **state) {
  (void)state;
  for (int n = 0; n <= 9; n++) {
    ad_tensor *x = ad_scalar(1.1);
    ad_tape *tape = watching(0, x);
    ad_tensor *y = power(x, n);
    ad_tape_end(tape);
    assert_tensor_near(y, VALUES(pow(1.1, n)), 1, TOL);
    double expect = n * pow(1.1, n - 1);
    assert_tensor_near(ad_tape_gradient(tape, y, x), &expect, 1, TOL);
    ad_tape_free(tape);
  }
}

/* A recursive function whose branch depends on the value: f(x) = f(x/2)^2
 * while |x| > 0.1, else 1 + x.  It computes (1 + x/2^k)^(2^k). */
static ad_tensor *halving(ad_tensor *x, int *depth) {
  if (fabs(ad_item(x)) <= 0.1) return ad_add_scalar(x, 1.0);
  (*depth)++;
  return ad_square(halving(ad_mul_scalar(x, 0.5), depth));
}

static void gradient_through_value_dependent_recursion(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0);
  ad_tape *tape = watching(0, x);
  int k = 0;
  ad_tensor *y = halving(x, &k);
  ad_tape_end(tape);
  assert_int_equal(k, 4);
  double m = pow(2.0, k);
  /* d/dx (1 + x/m)^m = (1 + x/m)^(m - 1). */
  double expect = pow(1.0 + 1.0 / m, m - 1.0);
  assert_tensor_near(y, VALUES(pow(1.0 + 1.0 / m, m)), 1, TOL);
  assert_tensor_near(ad_tape_gradient(tape, y, x), &expect, 1, TOL);
  ad_tape_free(tape);
}

static void long_chain_does_not_overflow_the_stack(void **state) {
  (void)state;
  /* y = y a + b repeated: 2 ops a step, 1,000,000 ops in all (10,000 in
   * quick runs).  dy/dy0 = a^n, dy/db = sum_k a^k. */
  int64_t steps = test_quick() ? 5000 : 500000;
  const double av = 1.0 - 1e-6;
  ad_tensor *y0 = ad_scalar(1.0), *a = ad_scalar(av), *b = ad_scalar(1e-3);
  ad_tape *tape = watching(0, y0);
  ad_tape_watch(tape, b);
  ad_tensor *y = y0;
  ad_scope_begin();
  for (int64_t i = 0; i < steps; i++) {
    /* Drop each step's temporaries at once; the tape keeps what it needs. */
    ad_tensor *next = ad_keep(ad_add(ad_mul(y, a), b));
    ad_scope_end();
    ad_scope_begin();
    y = next;
  }
  ad_scope_end();
  ad_tape_end(tape);
  assert_int_equal(ad_tape_size(tape), 2 * steps);
  ad_tensor *srcs[2] = {y0, b}, *g[2];
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 2, srcs, g, 0), AD_OK);
  double an = pow(av, (double)steps);
  assert_tensor_near(g[0], &an, 1, 1e-9);
  double geo = (1.0 - an) / (1.0 - av);
  assert_tensor_near(g[1], &geo, 1, 1e-6);
  ad_tape_free(tape);
}

/* ---- pausing ----------------------------------------------------------- */

static void paused_ops_are_invisible_to_tapes(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = watching(0, x);
  bool was = ad_pause_recording(true);
  assert_false(was);
  ad_tensor *c = ad_square(x); /* a constant to the tape */
  assert_int_equal(ad_tape_size(tape), 0);
  assert_true(ad_pause_recording(was));
  ad_tensor *y = ad_mul(x, c);
  assert_int_equal(ad_tape_size(tape), 1);
  ad_tape_end(tape);
  assert_tensor_near(c, VALUES(4.0), 1, 0);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(4.0), 1, TOL);
  ad_tape_free(tape);
}

static void paused_variable_reads_are_not_seen(void **state) {
  (void)state;
  ad_var *v = ad_var_new("v", ad_scalar(1.0));
  ad_tape *tape = ad_tape_begin(0);
  bool was = ad_pause_recording(true);
  ad_var_value(v);
  ad_pause_recording(was);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_num_variables(tape), 0);
  ad_tape_free(tape);
  ad_var_free(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(gradient_of_square_is_two_x),
      scoped_test(gradient_of_polynomial_matches_closed_form),
      scoped_test(gradient_of_composition_follows_chain_rule),
      scoped_test(gradient_of_quotient_and_log),
      scoped_test(gradient_of_matmul_sum_is_ones_times_b_transposed),
      scoped_test(unwatched_source_gets_zero_gradient),
      scoped_test(ops_on_unwatched_tensors_are_not_recorded),
      scoped_test(watching_twice_is_harmless),
      scoped_test(ops_after_end_are_not_recorded),
      scoped_test(stop_gradient_is_a_constant_to_the_tape),
      scoped_test(stop_gradient_keeps_values_and_shape),
      scoped_test(persistent_tape_answers_several_gradient_calls),
      scoped_test(non_persistent_tape_refuses_second_gradient),
      scoped_test(gradients_of_several_sources),
      scoped_test(target_grad_seeds_a_vector_target),
      scoped_test(target_grad_scales_a_scalar_target),
      scoped_test(unconnected_source_is_null_by_default),
      scoped_test(unconnected_source_is_zero_with_flag),
      scoped_test(gradient_with_respect_to_an_intermediate),
      scoped_test(gradient_of_target_with_respect_to_itself_is_one),
      scoped_test(tensor_used_several_times_accumulates),
      scoped_test(branches_that_rejoin_add_their_gradients),
      scoped_test(broadcast_gradient_sums_over_stretched_axes),
      scoped_test(broadcast_scalar_gradient_is_a_sum),
      scoped_test(same_source_twice_gets_its_gradient_twice),
      scoped_test(gradient_of_empty_tensor_is_empty),
      scoped_test(gradient_kept_out_of_an_inner_scope_survives),
      scoped_test(jacobian_of_elementwise_square_is_diagonal),
      scoped_test(jacobian_of_linear_map_is_its_matrix),
      scoped_test(jacobian_of_matrix_input_has_joined_shape),
      scoped_test(jacobian_counts_as_one_gradient_call),
      scoped_test(nested_tapes_give_second_derivative),
      scoped_test(nested_tapes_give_third_derivative),
      scoped_test(guide_example_x_squared_gives_six_two_zero),
      scoped_test(nested_tapes_differentiate_a_mixed_second_derivative),
      scoped_test(gradient_inside_recording_tape_is_not_recorded_by_it),
      scoped_test(ending_tapes_out_of_order_is_estate),
      scoped_test(ending_a_tape_twice_is_estate),
      scoped_test(unknown_tape_flags_are_einval),
      scoped_test(non_scalar_target_without_target_grad_is_eshape),
      scoped_test(target_grad_of_wrong_shape_is_eshape),
      scoped_test(freeing_a_recording_tape_ends_it),
      scoped_test(null_tape_target_and_source_are_einval),
      scoped_test(variable_read_under_a_tape_is_watched),
      scoped_test(no_auto_watch_tape_ignores_variables),
      scoped_test(var_gradients_are_implicit_gradients),
      scoped_test(variable_read_twice_sums_both_reads),
      scoped_test(var_gradient_sums_reads_before_and_after_assign),
      scoped_test(unused_variable_gets_zero_gradient),
      scoped_test(tape_variable_index_out_of_range_is_einval),
      scoped_test(tape_keeps_variable_alive_after_var_free),
      scoped_test(var_assign_replaces_value_and_checks_shape),
      scoped_test(var_name_is_copied_and_defaults_to_empty),
      scoped_test(variable_second_derivative_through_nested_tapes),
      scoped_test(gradient_through_value_dependent_while_loop),
      scoped_test(gradient_through_loop_with_tensor_factor),
      scoped_test(gradient_through_recursion),
      scoped_test(gradient_through_value_dependent_recursion),
      scoped_test(long_chain_does_not_overflow_the_stack),
      scoped_test(paused_ops_are_invisible_to_tapes),
      scoped_test(paused_variable_reads_are_not_seen),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
