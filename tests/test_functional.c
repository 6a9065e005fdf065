/* Tests of the functional API (ad_grad, ad_jvp, ad_hessian, ...): values
 * against closed forms, agreement between modes, nesting and errors. */
#include "testutil.h"

#define TOL 1e-12

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

static ad_tensor *mat(int64_t r, int64_t c, const double *v) {
  return ad_tensor_new(2, SHAPE(r, c), v);
}

/* ---- functions under test ---------------------------------------------- */

static ad_tensor *square(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_mul(x, x);
}

static ad_tensor *sum_sin(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_sin(x));
}

static ad_tensor *sine(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sin(x);
}

/* R^2 -> R^3: (x0 x1, sin x0, x1^2). */
static ad_tensor *vector_field(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *x0 = ad_slice(x, 0, 0, 1, 1), *x1 = ad_slice(x, 0, 1, 2, 1);
  ad_tensor *parts[3] = {ad_mul(x0, x1), ad_sin(x0), ad_square(x1)};
  return ad_concat(3, parts, 0);
}

static ad_tensor *softmax_fn(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_softmax(x, -1);
}

/* (2, 2) -> (2,): exp of row sums of X^T X-ish products. */
static ad_tensor *matrix_fn(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum(ad_exp(ad_matmul(x, ad_transpose(x))), 1, (const int[]){0},
                false);
}

static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *a = ad_slice(x, 0, 0, n - 1, 1);
  ad_tensor *b = ad_slice(x, 0, 1, n, 1);
  ad_tensor *t1 = ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))), 100.0);
  ad_tensor *t2 = ad_square(ad_add_scalar(ad_neg(a), 1.0));
  return ad_sum_all(ad_add(t1, t2));
}

static ad_tensor *logsumexp_fn(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_logsumexp(x, 0, NULL, false);
}

/* x^T A x with A in ctx. */
static ad_tensor *quadratic_form(ad_tensor *x, void *ctx) {
  ad_tensor *a = ctx;
  return ad_matmul(x, ad_matmul(a, x));
}

/* ---- gradients --------------------------------------------------------- */

static void grad_of_square_is_two_x(void **state) {
  (void)state;
  ad_tensor *g = ad_grad(square, NULL, ad_scalar(3.0));
  assert_shape(g, 0, 0);
  assert_tensor_near(g, VALUES(6.0), 1, TOL);
}

static void grad_of_vector_function_has_input_shape(void **state) {
  (void)state;
  const double xs[] = {0.1, -0.7, 2.0, 1.5};
  ad_tensor *g = ad_grad(sum_sin, NULL, mat(2, 2, xs));
  double e[4];
  for (int i = 0; i < 4; i++) e[i] = cos(xs[i]);
  assert_shape(g, 2, 2, 2);
  assert_tensor_near(g, e, 4, TOL);
}

static void grad_of_logsumexp_is_softmax(void **state) {
  (void)state;
  const double xs[] = {0.5, -1.0, 2.0};
  double z = 0, e[3];
  for (int i = 0; i < 3; i++) z += exp(xs[i]);
  for (int i = 0; i < 3; i++) e[i] = exp(xs[i]) / z;
  assert_tensor_near(ad_grad(logsumexp_fn, NULL, vec(3, xs)), e, 3, 1e-14);
}

static ad_tensor *constant_fn(ad_tensor *x, void *ctx) {
  (void)x;
  (void)ctx;
  return ad_scalar(7.0);
}

static void grad_of_function_ignoring_x_is_zero(void **state) {
  (void)state;
  ad_tensor *g = ad_grad(constant_fn, NULL, vec(2, VALUES(1, 2)));
  assert_shape(g, 1, 2);
  assert_tensor_near(g, VALUES(0, 0), 2, 0);
}

static void value_and_grad_returns_both(void **state) {
  (void)state;
  ad_tensor *value = NULL;
  ad_tensor *g = ad_value_and_grad(sum_sin, NULL, vec(2, VALUES(0.5, 1.0)),
                                   &value);
  assert_tensor_near(value, VALUES(sin(0.5) + sin(1.0)), 1, TOL);
  assert_tensor_near(g, VALUES(cos(0.5), cos(1.0)), 2, TOL);
}

static void vjp_applies_transposed_jacobian(void **state) {
  (void)state;
  /* J of vector_field at (a, b) = [[b, a], [cos a, 0], [0, 2b]]. */
  double a = 0.3, b = -1.2, u[3] = {1, 2, 3};
  ad_tensor *value = NULL;
  ad_tensor *g = ad_vjp(vector_field, NULL, vec(2, VALUES(0.3, -1.2)),
                        vec(3, u), &value);
  assert_tensor_near(value, VALUES(a * b, sin(a), b * b), 3, TOL);
  assert_tensor_near(g, VALUES(u[0] * b + u[1] * cos(a), u[0] * a + u[2] * 2 * b),
                     2, TOL);
}

static void jvp_applies_jacobian(void **state) {
  (void)state;
  double a = 0.3, b = -1.2, v[2] = {2, -1};
  ad_tensor *value = NULL;
  ad_tensor *t = ad_jvp(vector_field, NULL, vec(2, VALUES(0.3, -1.2)),
                        vec(2, v), &value);
  assert_tensor_near(value, VALUES(a * b, sin(a), b * b), 3, TOL);
  assert_tensor_near(t, VALUES(b * v[0] + a * v[1], cos(a) * v[0],
                               2 * b * v[1]),
                     3, TOL);
  /* value may be NULL. */
  assert_non_null(ad_jvp(vector_field, NULL, vec(2, v), vec(2, v), NULL));
}

/* ---- Jacobians --------------------------------------------------------- */

static void jacobian_of_vector_field_has_output_then_input_axes(
    void **state) {
  (void)state;
  double a = 0.3, b = -1.2;
  ad_tensor *j = ad_jacobian(vector_field, NULL, vec(2, VALUES(0.3, -1.2)));
  assert_shape(j, 2, 3, 2);
  assert_tensor_near(j, VALUES(b, a, cos(a), 0, 0, 2 * b), 6, TOL);
}

static void jacobian_of_scalar_function_is_its_gradient(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(0.1, 0.2, 0.3));
  ad_tensor *j = ad_jacobian(sum_sin, NULL, x);
  assert_shape(j, 1, 3);
  assert_tensors_close(j, ad_grad(sum_sin, NULL, x), TOL);
}

static void jacfwd_equals_jacobian_on_several_functions(void **state) {
  (void)state;
  struct {
    ad_fn f;
    ad_tensor *x;
  } cases[] = {
      {vector_field, vec(2, VALUES(0.3, -1.2))},
      {softmax_fn, vec(4, VALUES(0.5, -1, 2, 0))},
      {sine, mat(2, 2, VALUES(0.1, 0.2, 0.3, 0.4))},
      {matrix_fn, mat(2, 2, VALUES(0.1, -0.2, 0.3, 0.05))},
      {rosenbrock, vec(3, VALUES(0.5, 1.5, -0.5))},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ad_tensor *jr = ad_jacobian(cases[i].f, NULL, cases[i].x);
    ad_tensor *jf = ad_jacfwd(cases[i].f, NULL, cases[i].x);
    assert_non_null(jr);
    assert_tensors_close(jf, jr, 1e-12);
  }
}

static void jacobian_of_softmax_matches_closed_form(void **state) {
  (void)state;
  /* d softmax_i / dx_j = p_i (delta_ij - p_j). */
  const double xs[] = {0.5, -1.0, 2.0};
  double p[3], z = 0, e[9];
  for (int i = 0; i < 3; i++) z += exp(xs[i]);
  for (int i = 0; i < 3; i++) p[i] = exp(xs[i]) / z;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) e[i * 3 + j] = p[i] * ((i == j) - p[j]);
  assert_tensor_near(ad_jacfwd(softmax_fn, NULL, vec(3, xs)), e, 9, 1e-14);
}

/* ---- Hessians ---------------------------------------------------------- */

static void hessian_of_rosenbrock_matches_closed_form(void **state) {
  (void)state;
  const double x[3] = {0.5, 1.5, -0.5};
  double h[9] = {0};
  for (int i = 0; i < 3; i++) {
    if (i < 2) {
      h[i * 3 + i] += 1200 * x[i] * x[i] - 400 * x[i + 1] + 2;
      h[i * 3 + i + 1] = h[(i + 1) * 3 + i] = -400 * x[i];
    }
    if (i > 0) h[i * 3 + i] += 200;
  }
  ad_tensor *hess = ad_hessian(rosenbrock, NULL, vec(3, x));
  assert_shape(hess, 2, 3, 3);
  assert_tensor_near(hess, h, 9, 1e-12);
}

static void hessian_of_logsumexp_is_diag_p_minus_p_p_transposed(
    void **state) {
  (void)state;
  const double xs[] = {0.2, -0.4, 1.1, 0.0};
  double p[4], z = 0, e[16];
  for (int i = 0; i < 4; i++) z += exp(xs[i]);
  for (int i = 0; i < 4; i++) p[i] = exp(xs[i]) / z;
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) e[i * 4 + j] = (i == j) * p[i] - p[i] * p[j];
  assert_tensor_near(ad_hessian(logsumexp_fn, NULL, vec(4, xs)), e, 16,
                     1e-14);
}

static void hessian_of_quadratic_form_is_a_plus_a_transposed(void **state) {
  (void)state;
  const double av[] = {1, 2, 0, -3, 4, 5, 7, -1, 0.5};
  ad_tensor *a = mat(3, 3, av);
  ad_tensor *hess = ad_hessian(quadratic_form, a, vec(3, VALUES(1, -2, 3)));
  double e[9];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) e[i * 3 + j] = av[i * 3 + j] + av[j * 3 + i];
  assert_shape(hess, 2, 3, 3);
  assert_tensor_near(hess, e, 9, TOL);
}

static void hessian_of_matrix_input_has_doubled_shape(void **state) {
  (void)state;
  /* A scalar x gives a scalar Hessian; f(X) = sum(sin X) on a (2, 2) X
   * gives a (2, 2, 2, 2) Hessian, -sin X_ij where both index pairs agree. */
  ad_tensor *hess = ad_hessian(square, NULL, ad_scalar(5.0));
  assert_shape(hess, 0, 0);
  assert_tensor_near(hess, VALUES(2.0), 1, TOL);
  ad_tensor *x = mat(2, 2, VALUES(1, 2, 3, 4));
  ad_tensor *h2 = ad_hessian(sum_sin, NULL, x);
  assert_shape(h2, 4, 2, 2, 2, 2);
  double e[16] = {0};
  for (int i = 0; i < 4; i++) e[i * 5] = -sin((double)(i + 1));
  assert_tensor_near(h2, e, 16, TOL);
}

/* A two-layer network's loss as a function of its flat parameters:
 * 3 inputs, 4 tanh units, 1 linear output, mean squared error on 5
 * samples.  Parameters: W1 (3, 4), b1 (4,), w2 (4,), in that order. */
typedef struct {
  ad_tensor *x, *y;
} mlp_data;

static ad_tensor *mlp_loss(ad_tensor *p, void *ctx) {
  mlp_data *d = ctx;
  ad_tensor *w1 = ad_reshape(ad_slice(p, 0, 0, 12, 1), 2, SHAPE(3, 4));
  ad_tensor *b1 = ad_slice(p, 0, 12, 16, 1);
  ad_tensor *w2 = ad_slice(p, 0, 16, 20, 1);
  ad_tensor *h = ad_tanh(ad_add(ad_matmul(d->x, w1), b1));
  ad_tensor *out = ad_matmul(h, w2);
  return ad_mean(ad_square(ad_sub(out, d->y)), 0, NULL, false);
}

static ad_tensor *mlp_grad(ad_tensor *p, void *ctx) {
  return ad_grad(mlp_loss, ctx, p);
}

static void hessian_of_mlp_loss_equals_jacobian_of_gradient(void **state) {
  (void)state;
  ad_seed(42);
  mlp_data d = {ad_rand_normal(2, SHAPE(5, 3), 0, 1),
                ad_rand_normal(1, SHAPE(5), 0, 1)};
  ad_tensor *p = ad_rand_normal(1, SHAPE(20), 0, 0.5);
  ad_tensor *h = ad_hessian(mlp_loss, &d, p);
  ad_tensor *jg = ad_jacobian(mlp_grad, &d, p);
  assert_shape(h, 2, 20, 20);
  assert_tensors_close(h, jg, 1e-10);
  /* The Hessian is symmetric and not zero. */
  assert_tensors_close(h, ad_transpose(h), 1e-10);
  assert_true(ad_item(ad_sum_all(ad_abs(h))) > 1e-3);
}

static void hvp_equals_hessian_times_vector(void **state) {
  (void)state;
  ad_tensor *x = vec(4, VALUES(0.5, -1.2, 2.0, 0.3));
  ad_tensor *v = vec(4, VALUES(1.0, 0.5, -2.0, 3.0));
  ad_tensor *hv = ad_hvp(rosenbrock, NULL, x, v);
  ad_tensor *hess = ad_hessian(rosenbrock, NULL, x);
  assert_shape(hv, 1, 4);
  assert_tensors_close(hv, ad_matmul(hess, v), 1e-10);
}

/* ---- several arguments ------------------------------------------------- */

/* f(x, y) = sum(x y) + sin(x0), with x (2,) and y (2,). */
static ad_tensor *two_args(int n, ad_tensor *const *xs, void *ctx) {
  (void)ctx;
  (void)n;
  ad_tensor *x0 = ad_slice(xs[0], 0, 0, 1, 1);
  return ad_add(ad_sum_all(ad_mul(xs[0], xs[1])), ad_sum_all(ad_sin(x0)));
}

static void grad_n_differentiates_each_argument(void **state) {
  (void)state;
  ad_tensor *xs[2] = {vec(2, VALUES(0.5, 2)), vec(2, VALUES(-1, 3))};
  ad_tensor *g[2], *value = NULL;
  assert_int_equal(ad_grad_n(two_args, NULL, 2, xs, g, &value), AD_OK);
  assert_tensor_near(value, VALUES(-0.5 + 6 + sin(0.5)), 1, TOL);
  assert_tensor_near(g[0], VALUES(-1 + cos(0.5), 3), 2, TOL);
  assert_tensor_near(g[1], VALUES(0.5, 2), 2, TOL);
}

static void jvp_n_sums_the_directional_derivatives(void **state) {
  (void)state;
  ad_tensor *xs[2] = {vec(2, VALUES(0.5, 2)), vec(2, VALUES(-1, 3))};
  ad_tensor *vs[2] = {vec(2, VALUES(1, 0)), vec(2, VALUES(0, 2))};
  ad_tensor *jvp = NULL, *value = NULL;
  assert_int_equal(ad_jvp_n(two_args, NULL, 2, xs, vs, &jvp, &value), AD_OK);
  /* (y0 + cos x0) * 1 + x1 * 2. */
  assert_tensor_near(jvp, VALUES(-1 + cos(0.5) + 2 * 2), 1, TOL);
  assert_tensor_near(value, VALUES(-0.5 + 6 + sin(0.5)), 1, TOL);
}

/* ---- nesting ----------------------------------------------------------- */

static ad_tensor *d1_square(ad_tensor *x, void *ctx) {
  return ad_grad(square, ctx, x);
}
static ad_tensor *d2_square(ad_tensor *x, void *ctx) {
  return ad_grad(d1_square, ctx, x);
}
static ad_tensor *d1_sine(ad_tensor *x, void *ctx) {
  return ad_grad(sine, ctx, x);
}
static ad_tensor *d2_sine(ad_tensor *x, void *ctx) {
  return ad_grad(d1_sine, ctx, x);
}

static void nested_grad_of_square_gives_six_two_zero(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0);
  assert_tensor_near(ad_grad(square, NULL, x), VALUES(6.0), 1, TOL);
  assert_tensor_near(ad_grad(d1_square, NULL, x), VALUES(2.0), 1, TOL);
  assert_tensor_near(ad_grad(d2_square, NULL, x), VALUES(0.0), 1, TOL);
}

static void nested_grad_of_sine_cycles_derivatives(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(0.8);
  assert_tensor_near(ad_grad(sine, NULL, x), VALUES(cos(0.8)), 1, TOL);
  assert_tensor_near(ad_grad(d1_sine, NULL, x), VALUES(-sin(0.8)), 1, TOL);
  assert_tensor_near(ad_grad(d2_sine, NULL, x), VALUES(-cos(0.8)), 1, TOL);
}

static ad_tensor *jvp_of_d1_sine(ad_tensor *x, void *ctx) {
  return ad_jvp(d1_sine, ctx, x, ad_scalar(1.0), NULL);
}

static void grad_of_jvp_of_grad_mixes_modes(void **state) {
  (void)state;
  /* rev(fwd(rev(sin))) = -cos. */
  assert_tensor_near(ad_grad(jvp_of_d1_sine, NULL, ad_scalar(0.8)),
                     VALUES(-cos(0.8)), 1, TOL);
  assert_tensor_near(ad_hessian(d1_sine, NULL, ad_scalar(0.8)),
                     VALUES(-cos(0.8)), 1, TOL);
}

/* ---- closures ---------------------------------------------------------- */

typedef struct {
  double a;
  int calls;
} scaled;

static ad_tensor *scaled_square(ad_tensor *x, void *ctx) {
  scaled *s = ctx;
  s->calls++;
  return ad_mul_scalar(ad_square(x), s->a);
}

static void ctx_reaches_the_function(void **state) {
  (void)state;
  scaled s = {2.5, 0};
  assert_tensor_near(ad_grad(scaled_square, &s, ad_scalar(2.0)),
                     VALUES(10.0), 1, TOL);
  assert_int_equal(s.calls, 1);
  s.a = -1.0;
  assert_tensor_near(ad_jvp(scaled_square, &s, ad_scalar(2.0),
                            ad_scalar(3.0), NULL),
                     VALUES(-12.0), 1, TOL);
  assert_int_equal(s.calls, 2);
}

/* ---- errors ------------------------------------------------------------ */

static ad_tensor *returns_null(ad_tensor *x, void *ctx) {
  (void)x;
  (void)ctx;
  return NULL;
}

static ad_tensor *fails_inside(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_add(x, vec(4, VALUES(1, 2, 3, 4)));
}

static void function_returning_null_is_an_error(void **state) {
  (void)state;
  ad_tensor *x = vec(2, VALUES(1, 2)), *v = vec(2, VALUES(1, 1));
  assert_null(ad_grad(returns_null, NULL, x));
  assert_error(AD_EINVAL, "returned NULL");
  assert_null(ad_jvp(returns_null, NULL, x, v, NULL));
  assert_error(AD_EINVAL, "ad_jvp");
  assert_null(ad_vjp(returns_null, NULL, x, v, NULL));
  assert_error(AD_EINVAL, "ad_vjp");
  assert_null(ad_jacobian(returns_null, NULL, x));
  assert_error(AD_EINVAL, "ad_jacobian");
  assert_null(ad_jacfwd(returns_null, NULL, x));
  assert_error(AD_EINVAL, "returned NULL");
  assert_null(ad_hessian(returns_null, NULL, x));
  assert_error(AD_EINVAL, "returned NULL");
  assert_null(ad_hvp(returns_null, NULL, x, v));
  assert_error(AD_EINVAL, "returned NULL");
}

static void error_inside_the_function_is_kept(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(1, 2, 3));
  assert_null(ad_grad(fails_inside, NULL, x));
  assert_error(AD_ESHAPE, "ad_add");
  assert_null(ad_jvp(fails_inside, NULL, x, x, NULL));
  assert_error(AD_ESHAPE, "ad_add");
  assert_null(ad_hessian(fails_inside, NULL, x));
  assert_error(AD_ESHAPE, "ad_add");
}

static void non_scalar_function_is_eshape_for_grad_and_hessian(
    void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(1, 2, 3));
  assert_null(ad_grad(sine, NULL, x));
  assert_error(AD_ESHAPE, "(3,)");
  ad_tensor *value = x;
  assert_null(ad_value_and_grad(sine, NULL, x, &value));
  assert_null(value);
  assert_error(AD_ESHAPE, "ad_value_and_grad");
  assert_null(ad_hessian(sine, NULL, x));
  assert_error(AD_ESHAPE, "(3,)");
  assert_null(ad_hvp(sine, NULL, x, x));
  assert_error(AD_ESHAPE, "(3,)");
}

static void null_function_is_einval(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *g[1], *out = NULL;
  assert_null(ad_grad(NULL, NULL, x));
  assert_error(AD_EINVAL, "ad_grad");
  assert_null(ad_value_and_grad(NULL, NULL, x, &out));
  assert_error(AD_EINVAL, "ad_value_and_grad");
  assert_null(ad_jvp(NULL, NULL, x, x, NULL));
  assert_error(AD_EINVAL, "ad_jvp");
  assert_null(ad_vjp(NULL, NULL, x, x, NULL));
  assert_error(AD_EINVAL, "ad_vjp");
  assert_null(ad_jacobian(NULL, NULL, x));
  assert_error(AD_EINVAL, "ad_jacobian");
  assert_null(ad_jacfwd(NULL, NULL, x));
  assert_error(AD_EINVAL, "ad_jacfwd");
  assert_null(ad_hessian(NULL, NULL, x));
  assert_error(AD_EINVAL, "ad_hessian");
  assert_null(ad_hvp(NULL, NULL, x, x));
  assert_error(AD_EINVAL, "ad_hvp");
  assert_int_equal(ad_grad_n(NULL, NULL, 1, &x, g, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_grad_n");
  assert_int_equal(ad_jvp_n(NULL, NULL, 1, &x, &x, &out, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_jvp_n");
}

static void null_inputs_are_einval(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *none = NULL, *g[1], *out;
  assert_null(ad_grad(square, NULL, NULL));
  assert_error(AD_EINVAL, "ad_grad");
  assert_null(ad_jvp(square, NULL, x, NULL, NULL));
  assert_error(AD_EINVAL, "ad_jvp");
  assert_null(ad_vjp(square, NULL, x, NULL, NULL));
  assert_error(AD_EINVAL, "ad_vjp");
  assert_null(ad_hvp(square, NULL, x, NULL));
  assert_error(AD_EINVAL, "ad_hvp");
  assert_null(ad_jacobian(square, NULL, NULL));
  assert_error(AD_EINVAL, "ad_jacobian");
  assert_int_equal(ad_grad_n(two_args, NULL, 1, &none, g, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_grad_n");
  assert_int_equal(ad_grad_n(two_args, NULL, 1, &x, NULL, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_grad_n");
  assert_int_equal(ad_jvp_n(two_args, NULL, 1, &x, NULL, &out, NULL),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "ad_jvp_n");
  assert_int_equal(ad_grad_n(two_args, NULL, 0, &x, g, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_grad_n");
}

static void direction_of_wrong_shape_is_eshape(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(1, 2, 3)), *w = vec(2, VALUES(1, 1));
  assert_null(ad_vjp(sine, NULL, x, w, NULL));
  assert_error(AD_ESHAPE, "ad_vjp");
  assert_null(ad_jvp(sine, NULL, x, w, NULL));
  assert_error(AD_ESHAPE, "(2,)");
  assert_null(ad_hvp(sum_sin, NULL, x, w));
  assert_error(AD_ESHAPE, "ad_hvp");
}

/* A function that opens a tape and leaves it open: the functional API
 * must report it rather than corrupt the stack of tapes and levels. */
static ad_tensor *leaves_tape_open(ad_tensor *x, void *ctx) {
  *(ad_tape **)ctx = ad_tape_begin(0);
  return ad_square(x);
}

static void function_leaving_a_tape_open_is_estate(void **state) {
  (void)state;
  ad_tape *stray = NULL;
  assert_null(ad_grad(leaves_tape_open, &stray, ad_scalar(2.0)));
  assert_error(AD_ESTATE, "left a tape or forward level open");
  assert_non_null(stray);
  assert_int_equal(ad_tape_end(stray), AD_OK);
  ad_tape_free(stray);
  stray = NULL;
  assert_null(ad_jvp(leaves_tape_open, &stray, ad_scalar(2.0),
                     ad_scalar(1.0), NULL));
  assert_error(AD_ESTATE, "left a tape or forward level open");
  assert_int_equal(ad_tape_end(stray), AD_OK);
  ad_tape_free(stray);
  /* Afterwards the functional API works as before. */
  assert_tensor_near(ad_grad(square, NULL, ad_scalar(2.0)), VALUES(4.0), 1,
                     TOL);
}

static void grad_inside_a_tape_is_differentiable_by_it(void **state) {
  (void)state;
  /* An outer tape sees ad_grad's backward pass: d/dx (d/dx sin x) = -sin. */
  ad_tensor *x = ad_scalar(0.4);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *g = ad_grad(sine, NULL, x);
  ad_tape_end(tape);
  assert_tensor_near(ad_tape_gradient(tape, g, x), VALUES(-sin(0.4)), 1,
                     TOL);
  ad_tape_free(tape);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(grad_of_square_is_two_x),
      scoped_test(grad_of_vector_function_has_input_shape),
      scoped_test(grad_of_logsumexp_is_softmax),
      scoped_test(grad_of_function_ignoring_x_is_zero),
      scoped_test(value_and_grad_returns_both),
      scoped_test(vjp_applies_transposed_jacobian),
      scoped_test(jvp_applies_jacobian),
      scoped_test(jacobian_of_vector_field_has_output_then_input_axes),
      scoped_test(jacobian_of_scalar_function_is_its_gradient),
      scoped_test(jacfwd_equals_jacobian_on_several_functions),
      scoped_test(jacobian_of_softmax_matches_closed_form),
      scoped_test(hessian_of_rosenbrock_matches_closed_form),
      scoped_test(hessian_of_logsumexp_is_diag_p_minus_p_p_transposed),
      scoped_test(hessian_of_quadratic_form_is_a_plus_a_transposed),
      scoped_test(hessian_of_matrix_input_has_doubled_shape),
      scoped_test(hessian_of_mlp_loss_equals_jacobian_of_gradient),
      scoped_test(hvp_equals_hessian_times_vector),
      scoped_test(grad_n_differentiates_each_argument),
      scoped_test(jvp_n_sums_the_directional_derivatives),
      scoped_test(nested_grad_of_square_gives_six_two_zero),
      scoped_test(nested_grad_of_sine_cycles_derivatives),
      scoped_test(grad_of_jvp_of_grad_mixes_modes),
      scoped_test(ctx_reaches_the_function),
      scoped_test(function_returning_null_is_an_error),
      scoped_test(error_inside_the_function_is_kept),
      scoped_test(non_scalar_function_is_eshape_for_grad_and_hessian),
      scoped_test(null_function_is_einval),
      scoped_test(null_inputs_are_einval),
      scoped_test(direction_of_wrong_shape_is_eshape),
      scoped_test(function_leaving_a_tape_open_is_estate),
      scoped_test(grad_inside_a_tape_is_differentiable_by_it),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
