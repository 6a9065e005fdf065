/* Tests of the GSL adapters: callbacks against closed forms, every solver
 * type, the examples (included from examples/), errors and threads. */
#include <pthread.h>

#include "testutil.h"

#include <gsl/gsl_errno.h>

/* The examples are tested as they are: their main is left out and their
 * functions are called here. */
#define AD_EXAMPLE_NO_MAIN
#include "../examples/gsl_expfit.c"
#include "../examples/gsl_logistic.c"
#include "../examples/gsl_multiroot.c"
#include "../examples/gsl_rosenbrock.c"

/* ---- helpers ----------------------------------------------------------- */

/* A GSL vector over the n values (owned by the caller's array). */
#define GSL_VEC(name, ...)                                                 \
  double name##_data_[] = {__VA_ARGS__};                                   \
  gsl_vector_view name##_view_ = gsl_vector_view_array(                    \
      name##_data_, sizeof name##_data_ / sizeof(double));                 \
  gsl_vector *name = &name##_view_.vector

static void assert_vector_near(const gsl_vector *v, const double *expect,
                               double tol) {
  for (size_t i = 0; i < v->size; i++) {
    double g = gsl_vector_get(v, i), e = expect[i];
    if (!(fabs(g - e) <= tol * (1 + fabs(e)))) {
      print_error("element %zu is %.17g, expected %.17g\n", i, g, e);
      fail();
    }
  }
}

/* The GSL error handler of the suite: counts calls instead of aborting,
 * so that a test can assert that GSL never reached it. */
static int handler_calls;
static void counting_handler(const char *reason, const char *file, int line,
                             int gsl_errno) {
  (void)reason, (void)file, (void)line, (void)gsl_errno;
  handler_calls++;
}

/* ---- functions under test ---------------------------------------------- */

/* f(x) = sum(x^3) + x0 x1, gradient 3 x^2 + (x1, x0, 0, ...). */
static ad_tensor *cubic(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *x0 = ad_slice(x, 0, 0, 1, 1), *x1 = ad_slice(x, 0, 1, 2, 1);
  return ad_add(ad_sum_all(ad_mul(ad_square(x), x)),
                ad_sum_all(ad_mul(x0, x1)));
}

/* GSL's paraboloid: 10 (x - 1)^2 + 20 (y - 2)^2 + 30. */
static ad_tensor *paraboloid(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *c = ad_tensor_new(1, SHAPE(2), VALUES(1.0, 2.0));
  ad_tensor *w = ad_tensor_new(1, SHAPE(2), VALUES(10.0, 20.0));
  return ad_add_scalar(ad_sum_all(ad_mul(w, ad_square(ad_sub(x, c)))), 30);
}

static int calls;
static ad_tensor *counted_expfit(ad_tensor *x, void *ctx) {
  calls++;
  return expfit_residuals(x, ctx);
}

static ad_tensor *returns_null(ad_tensor *x, void *ctx) {
  (void)x, (void)ctx;
  return NULL;
}

static ad_tensor *bad_matmul(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_matmul(x, ad_ones(2, SHAPE(3, 3)));
}

static ad_tensor *identity(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_add_scalar(x, 0.0);
}

static ad_tensor *log_sum(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_log(x));
}

static ad_tensor *sqrt_sum(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_sqrt(x));
}

/* ---- gsl_multimin ------------------------------------------------------ */

static void multimin_callbacks_match_closed_form(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  assert_int_equal(ad_gsl_multimin_fdf(&fdf, cubic, NULL, 3), AD_OK);
  assert_int_equal(fdf.n, 3);
  GSL_VEC(x, 0.5, -1.0, 2.0);
  double f = 0.125 - 1 + 8 - 0.5;
  double g[3] = {3 * 0.25 - 1.0, 3 * 1.0 + 0.5, 3 * 4.0};
  assert_true(fabs(fdf.f(x, fdf.params) - f) < 1e-14);
  gsl_vector *grad = gsl_vector_alloc(3);
  fdf.df(x, fdf.params, grad);
  assert_vector_near(grad, g, 1e-14);
  double value;
  gsl_vector_set_all(grad, 0);
  fdf.fdf(x, fdf.params, &value, grad);
  assert_true(fabs(value - f) < 1e-14);
  assert_vector_near(grad, g, 1e-14);
  gsl_vector_free(grad);
  ad_gsl_multimin_fdf_free(&fdf);
  assert_null(fdf.params);
  assert_null(fdf.f);
}

static void multimin_reads_and_writes_strided_vectors(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  assert_int_equal(ad_gsl_multimin_fdf(&fdf, cubic, NULL, 3), AD_OK);
  double xs[6] = {0.5, 99, -1.0, 99, 2.0, 99}, gs[6] = {0};
  gsl_vector_view x = gsl_vector_view_array_with_stride(xs, 2, 3);
  gsl_vector_view g = gsl_vector_view_array_with_stride(gs, 2, 3);
  double f;
  fdf.fdf(&x.vector, fdf.params, &f, &g.vector);
  assert_true(fabs(f - (0.125 - 1 + 8 - 0.5)) < 1e-14);
  const double expect[6] = {3 * 0.25 - 1.0, 0, 3.5, 0, 12, 0};
  for (int i = 0; i < 6; i++) assert_true(fabs(gs[i] - expect[i]) < 1e-14);
  ad_gsl_multimin_fdf_free(&fdf);
}

static void multimin_callbacks_leave_the_scope_clean(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  assert_int_equal(ad_gsl_multimin_fdf(&fdf, cubic, NULL, 3), AD_OK);
  GSL_VEC(x, 0.5, -1.0, 2.0);
  gsl_vector *g = gsl_vector_alloc(3);
  /* Many calls inside one scope: each call's tensors die with the call's
   * own scope (valgrind and ASan would see a leak otherwise). */
  for (int i = 0; i < 100; i++) {
    double f;
    fdf.fdf(x, fdf.params, &f, g);
    fdf.f(x, fdf.params);
    fdf.df(x, fdf.params, g);
  }
  assert_int_equal(ad_error(), AD_OK);
  gsl_vector_free(g);
  ad_gsl_multimin_fdf_free(&fdf);
}

static void multimin_works_with_every_minimizer_type(void **state) {
  (void)state;
  const gsl_multimin_fdfminimizer_type *types[] = {
      gsl_multimin_fdfminimizer_conjugate_fr,
      gsl_multimin_fdfminimizer_conjugate_pr,
      gsl_multimin_fdfminimizer_vector_bfgs,
      gsl_multimin_fdfminimizer_vector_bfgs2,
      gsl_multimin_fdfminimizer_steepest_descent};
  gsl_multimin_function_fdf fdf;
  assert_int_equal(ad_gsl_multimin_fdf(&fdf, paraboloid, NULL, 2), AD_OK);
  for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
    GSL_VEC(x0, 5.0, 7.0);
    gsl_multimin_fdfminimizer *s =
        gsl_multimin_fdfminimizer_alloc(types[t], 2);
    assert_int_equal(gsl_multimin_fdfminimizer_set(s, &fdf, x0, 0.01, 1e-4),
                     GSL_SUCCESS);
    int status = GSL_CONTINUE;
    for (int iter = 0; iter < 10000 && status == GSL_CONTINUE; iter++) {
      if (gsl_multimin_fdfminimizer_iterate(s)) break;
      status = gsl_multimin_test_gradient(s->gradient, 1e-6);
    }
    if (fabs(gsl_vector_get(s->x, 0) - 1) > 1e-5 ||
        fabs(gsl_vector_get(s->x, 1) - 2) > 1e-5) {
      print_error("%s stopped at (%g, %g)\n", types[t]->name,
                  gsl_vector_get(s->x, 0), gsl_vector_get(s->x, 1));
      fail();
    }
    assert_true(fabs(s->f - 30) < 1e-9);
    gsl_multimin_fdfminimizer_free(s);
  }
  assert_int_equal(ad_error(), AD_OK);
  ad_gsl_multimin_fdf_free(&fdf);
}

/* A function whose branch depends on x: a guard, so the traced adapter
 * must re-trace when the minimizer crosses x0 = 3 instead of replaying the
 * wrong branch. */
static ad_tensor *piecewise_paraboloid(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *centre = ad_tensor_new(1, SHAPE(2), VALUES(1.0, 2.0));
  ad_tensor *d = ad_sub(x, centre);
  /* Two ways to the same square, chosen by a value read in C. */
  ad_tensor *sq =
      ad_item(ad_slice(x, 0, 0, 1, 1)) > 3.0 ? ad_square(d) : ad_mul(d, d);
  return ad_add_scalar(ad_sum_all(sq), 30.0);
}

static void traced_adapter_matches_the_eager_one(void **state) {
  (void)state;
  const ad_fn fns[2] = {paraboloid, piecewise_paraboloid};
  for (int k = 0; k < 2; k++) {
    double end[2][2];
    for (int traced = 0; traced < 2; traced++) {
      gsl_multimin_function_fdf fdf;
      assert_int_equal(ad_gsl_multimin_fdf_flags(&fdf, fns[k], NULL, 2,
                                                 traced ? AD_GSL_TRACE : 0),
                       AD_OK);
      GSL_VEC(x0, 5.0, 7.0);
      gsl_multimin_fdfminimizer *s = gsl_multimin_fdfminimizer_alloc(
          gsl_multimin_fdfminimizer_vector_bfgs2, 2);
      assert_int_equal(
          gsl_multimin_fdfminimizer_set(s, &fdf, x0, 0.01, 1e-4),
          GSL_SUCCESS);
      int status = GSL_CONTINUE;
      for (int iter = 0; iter < 1000 && status == GSL_CONTINUE; iter++) {
        if (gsl_multimin_fdfminimizer_iterate(s)) break;
        status = gsl_multimin_test_gradient(s->gradient, 1e-8);
      }
      end[traced][0] = gsl_vector_get(s->x, 0);
      end[traced][1] = gsl_vector_get(s->x, 1);
      assert_true(fabs(s->f - 30) < 1e-12);
      gsl_multimin_fdfminimizer_free(s);
      ad_gsl_multimin_fdf_free(&fdf);
    }
    /* The same iterates: replay gives the eager values bit for bit. */
    assert_true(end[0][0] == end[1][0] && end[0][1] == end[1][1]);
    assert_true(fabs(end[1][0] - 1) < 1e-6 && fabs(end[1][1] - 2) < 1e-6);
  }
  gsl_multimin_function_fdf fdf;
  assert_int_equal(ad_gsl_multimin_fdf_flags(&fdf, paraboloid, NULL, 2, 4u),
                   AD_EINVAL);
  ad_error_clear();
  assert_int_equal(ad_error(), AD_OK);
}

static void rosenbrock_example_reaches_one_one_with_vector_bfgs2(void **st) {
  (void)st;
  double xmin[2];
  size_t iterations;
  int status = rosenbrock_minimize(gsl_multimin_fdfminimizer_vector_bfgs2,
                                   1000, NULL, xmin, &iterations);
  assert_int_equal(status, GSL_SUCCESS);
  assert_true(fabs(xmin[0] - 1) < 1e-6);
  assert_true(fabs(xmin[1] - 1) < 1e-6);
  assert_true(iterations < 100);
}

static void rosenbrock_example_prints_gsl_style_progress(void **st) {
  (void)st;
  char *text = NULL;
  size_t len = 0;
  FILE *log = open_memstream(&text, &len);
  assert_non_null(log);
  double xmin[2];
  size_t iterations;
  rosenbrock_minimize(gsl_multimin_fdfminimizer_vector_bfgs2, 1000, log,
                      xmin, &iterations);
  fclose(log);
  assert_non_null(strstr(text, "minimizer: vector_bfgs2\n"));
  assert_non_null(strstr(text, "    1 -1.03011 1.06934    4.12810\n"));
  assert_non_null(strstr(text, "Minimum found at:\n"));
  free(text);
}

/* Reference: Newton's method to a gradient of 1e-14 (NumPy, double
 * precision) on the same standardized features. */
static const double logit_reference[LOGIT_FEATURES + 1] = {
    -0.4870167526, 7.21550165,    -1.6533014233, 1.736102681,
    -13.9925336477, -1.0740082779, 0.0771666538, -0.6745296101,
    -2.5905948138, -0.4458640013, 0.4820600402};

static void logistic_example_fits_the_breast_cancer_data(void **state) {
  (void)state;
  logit_data d;
  assert_int_equal(logit_load("data/breast_cancer.csv", &d), 0);
  assert_int_equal(d.rows, 569);
  assert_shape(d.X, 2, 569, LOGIT_FEATURES + 1);
  assert_true(fabs(ad_item(ad_sum_all(d.y)) - 357) < 1e-12);
  double w[LOGIT_FEATURES + 1], nll;
  size_t iterations;
  int status = logit_fit(&d, gsl_multimin_fdfminimizer_vector_bfgs2, 1000,
                         NULL, w, &nll, &iterations);
  assert_int_equal(status, GSL_SUCCESS);
  assert_int_equal(ad_error(), AD_OK);
  /* The maximum likelihood itself, tightly, and the coefficients more
   * loosely: the likelihood is nearly flat along the collinear radius,
   * perimeter and area, so where the search stops along them depends on
   * rounding (valgrind's differs). */
  assert_true(fabs(nll - 73.06520921698234) < 1e-6);
  for (int j = 0; j <= LOGIT_FEATURES; j++)
    if (fabs(w[j] - logit_reference[j]) >
        1e-2 * (1 + fabs(logit_reference[j]))) {
      print_error("w[%d] = %.8f, reference %.8f\n", j, w[j],
                  logit_reference[j]);
      fail();
    }
}

static void logistic_example_reports_a_missing_file(void **state) {
  (void)state;
  logit_data d;
  FILE *saved = stderr;
  stderr = fopen("/dev/null", "w");
  int rc = logit_load("data/no_such_file.csv", &d);
  fclose(stderr);
  stderr = saved;
  assert_int_equal(rc, -1);
}

/* ---- gsl_multifit_nlinear ---------------------------------------------- */

/* The Jacobian of A exp(-lambda t) + b - y, by hand. */
static void expfit_jacobian(const expfit_data *d, const double *x,
                            gsl_matrix *J) {
  double t[EXPFIT_N];
  ad_read(d->t, t, EXPFIT_N);
  for (int i = 0; i < EXPFIT_N; i++) {
    double e = exp(-x[1] * t[i]);
    gsl_matrix_set(J, i, 0, e);
    gsl_matrix_set(J, i, 1, -t[i] * x[0] * e);
    gsl_matrix_set(J, i, 2, 1.0);
  }
}

static void multifit_jacobian_matches_closed_form_in_every_mode(void **st) {
  (void)st;
  expfit_data d;
  expfit_make_data(&d);
  GSL_VEC(x, 4.0, 1.2, 0.5);
  gsl_matrix *expect = gsl_matrix_alloc(EXPFIT_N, 3);
  gsl_matrix *J = gsl_matrix_alloc(EXPFIT_N, 3);
  expfit_jacobian(&d, x_data_, expect);
  const unsigned modes[3] = {AD_GSL_JAC_AUTO, AD_GSL_JAC_FORWARD,
                             AD_GSL_JAC_REVERSE};
  for (int m = 0; m < 3; m++) {
    gsl_multifit_nlinear_fdf fdf;
    assert_int_equal(ad_gsl_multifit_nlinear_fdf(&fdf, expfit_residuals, &d,
                                                 EXPFIT_N, 3, modes[m]),
                     AD_OK);
    gsl_matrix_set_all(J, 0);
    assert_int_equal(fdf.df(x, fdf.params, J), GSL_SUCCESS);
    for (int i = 0; i < EXPFIT_N; i++)
      for (int j = 0; j < 3; j++)
        assert_true(fabs(gsl_matrix_get(J, i, j) -
                         gsl_matrix_get(expect, i, j)) < 1e-13);
    ad_gsl_multifit_nlinear_fdf_free(&fdf);
  }
  gsl_matrix_free(J);
  gsl_matrix_free(expect);
}

static void multifit_residuals_match_the_model(void **state) {
  (void)state;
  expfit_data d;
  expfit_make_data(&d);
  gsl_multifit_nlinear_fdf fdf;
  assert_int_equal(ad_gsl_multifit_nlinear_fdf(&fdf, expfit_residuals, &d,
                                               EXPFIT_N, 3, 0),
                   AD_OK);
  GSL_VEC(x, 4.0, 1.2, 0.5);
  gsl_vector *r = gsl_vector_alloc(EXPFIT_N);
  assert_int_equal(fdf.f(x, fdf.params, r), GSL_SUCCESS);
  double t[EXPFIT_N], y[EXPFIT_N];
  ad_read(d.t, t, EXPFIT_N);
  ad_read(d.y, y, EXPFIT_N);
  for (int i = 0; i < EXPFIT_N; i++)
    assert_true(fabs(gsl_vector_get(r, i) -
                     (4.0 * exp(-1.2 * t[i]) + 0.5 - y[i])) < 1e-14);
  gsl_vector_free(r);
  ad_gsl_multifit_nlinear_fdf_free(&fdf);
}

static void multifit_auto_mode_takes_the_fewer_passes(void **state) {
  (void)state;
  expfit_data d;
  expfit_make_data(&d);
  GSL_VEC(x, 4.0, 1.2, 0.5);
  gsl_matrix *J = gsl_matrix_alloc(EXPFIT_N, 3);
  /* Few parameters (p = 3 < n = 100): forward mode, f runs once per
   * parameter. */
  gsl_multifit_nlinear_fdf fdf;
  ad_gsl_multifit_nlinear_fdf(&fdf, counted_expfit, &d, EXPFIT_N, 3, 0);
  calls = 0;
  fdf.df(x, fdf.params, J);
  assert_int_equal(calls, 3);
  ad_gsl_multifit_nlinear_fdf_free(&fdf);
  /* Reverse mode runs f once and goes backwards per residual. */
  ad_gsl_multifit_nlinear_fdf(&fdf, counted_expfit, &d, EXPFIT_N, 3,
                              AD_GSL_JAC_REVERSE);
  calls = 0;
  fdf.df(x, fdf.params, J);
  assert_int_equal(calls, 1);
  ad_gsl_multifit_nlinear_fdf_free(&fdf);
  gsl_matrix_free(J);
  /* Few residuals (n = 1 < p = 4): reverse mode, f runs once. */
  gsl_matrix *row = gsl_matrix_alloc(1, 4);
  ad_gsl_multifit_nlinear_fdf(&fdf, cubic, NULL, 1, 4, 0);
  GSL_VEC(x4, 0.5, -1.0, 2.0, 1.0);
  assert_int_equal(fdf.df(x4, fdf.params, row), GSL_SUCCESS);
  const double g[4] = {3 * 0.25 - 1.0, 3 * 1.0 + 0.5, 12, 3};
  for (int j = 0; j < 4; j++)
    assert_true(fabs(gsl_matrix_get(row, 0, j) - g[j]) < 1e-14);
  ad_gsl_multifit_nlinear_fdf_free(&fdf);
  gsl_matrix_free(row);
}

static void multifit_fvv_is_the_second_directional_derivative(void **st) {
  (void)st;
  expfit_data d;
  expfit_make_data(&d);
  gsl_multifit_nlinear_fdf fdf;
  ad_gsl_multifit_nlinear_fdf(&fdf, expfit_residuals, &d, EXPFIT_N, 3, 0);
  assert_non_null(fdf.fvv);
  GSL_VEC(x, 4.0, 1.2, 0.5);
  GSL_VEC(v, 0.3, -0.7, 2.0);
  gsl_vector *fvv = gsl_vector_alloc(EXPFIT_N);
  assert_int_equal(fdf.fvv(x, v, fdf.params, fvv), GSL_SUCCESS);
  /* d2/ds2 of (A + s vA) exp(-(l + s vl) t) + b + s vb at s = 0:
   * exp(-l t) (-2 vA vl t + A vl^2 t^2). */
  double t[EXPFIT_N];
  ad_read(d.t, t, EXPFIT_N);
  for (int i = 0; i < EXPFIT_N; i++) {
    double e = exp(-1.2 * t[i]);
    double expect = e * (-2 * 0.3 * -0.7 * t[i] + 4.0 * 0.49 * t[i] * t[i]);
    assert_true(fabs(gsl_vector_get(fvv, i) - expect) < 1e-13);
  }
  gsl_vector_free(fvv);
  ad_gsl_multifit_nlinear_fdf_free(&fdf);
}

static void expfit_example_matches_gsl_documented_fit(void **state) {
  (void)state;
  expfit_data d;
  expfit_make_data(&d);
  /* GSL's manual prints A = 4.79653 +/- 0.18704, lambda = 1.43937 +/-
   * 0.07390, b = 1.00368 +/- 0.03473 for this data, with the Jacobian
   * written by hand; geodesic acceleration (fvv) must find the same. */
  const gsl_multifit_nlinear_trs *trs[2] = {gsl_multifit_nlinear_trs_lm,
                                            gsl_multifit_nlinear_trs_lmaccel};
  for (int k = 0; k < 2; k++) {
    double x[3], err[3];
    assert_int_equal(expfit_fit(&d, trs[k], NULL, x, err), GSL_SUCCESS);
    const double ex[3] = {4.79653, 1.43937, 1.00368};
    const double ee[3] = {0.18704, 0.07390, 0.03473};
    for (int i = 0; i < 3; i++) {
      assert_true(fabs(x[i] - ex[i]) < 1e-5);
      assert_true(fabs(err[i] - ee[i]) < 1e-5);
    }
  }
}

static void expfit_example_prints_the_gsl_summary(void **state) {
  (void)state;
  expfit_data d;
  expfit_make_data(&d);
  char *text = NULL;
  size_t len = 0;
  FILE *log = open_memstream(&text, &len);
  double x[3], err[3];
  expfit_fit(&d, gsl_multifit_nlinear_trs_lmaccel, log, x, err);
  fclose(log);
  assert_non_null(strstr(text, "iter  1: A = "));
  assert_non_null(strstr(text, "summary from method 'trust-region/"
                               "levenberg-marquardt+accel'"));
  assert_null(strstr(text, "fvv evaluations: 0\n"));
  assert_non_null(strstr(text, "status = success"));
  free(text);
}

/* ---- gsl_multiroots ---------------------------------------------------- */

static void multiroot_example_converges_with_every_solver(void **state) {
  (void)state;
  const gsl_multiroot_fdfsolver_type *types[] = {
      gsl_multiroot_fdfsolver_hybridsj, gsl_multiroot_fdfsolver_hybridj,
      gsl_multiroot_fdfsolver_newton, gsl_multiroot_fdfsolver_gnewton};
  for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
    double root[2];
    size_t iterations;
    int status = roots_solve(types[t], NULL, root, &iterations);
    if (status != GSL_SUCCESS || fabs(root[0] - 1) > 1e-7 ||
        fabs(root[1] - 1) > 1e-7) {
      print_error("%s: %s at (%g, %g)\n", types[t]->name,
                  gsl_strerror(status), root[0], root[1]);
      fail();
    }
  }
}

static void multiroot_fdf_gives_value_and_jacobian_in_every_mode(void **st) {
  (void)st;
  roots_params p = {1.0, 10.0};
  const unsigned modes[3] = {AD_GSL_JAC_AUTO, AD_GSL_JAC_FORWARD,
                             AD_GSL_JAC_REVERSE};
  for (int m = 0; m < 3; m++) {
    gsl_multiroot_function_fdf fdf;
    assert_int_equal(ad_gsl_multiroot_fdf(&fdf, roots_system, &p, 2,
                                          modes[m]),
                     AD_OK);
    GSL_VEC(x, -2.0, 3.0);
    gsl_vector *f = gsl_vector_alloc(2);
    gsl_matrix *J = gsl_matrix_alloc(2, 2);
    assert_int_equal(fdf.fdf(x, fdf.params, f, J), GSL_SUCCESS);
    const double fe[2] = {3.0, 10 * (3.0 - 4.0)};
    assert_vector_near(f, fe, 1e-15);
    /* J = [[-a, 0], [-2 b x, b]]. */
    assert_true(gsl_matrix_get(J, 0, 0) == -1.0);
    assert_true(gsl_matrix_get(J, 0, 1) == 0.0);
    assert_true(gsl_matrix_get(J, 1, 0) == 40.0);
    assert_true(gsl_matrix_get(J, 1, 1) == 10.0);
    gsl_vector_set_all(f, 0);
    assert_int_equal(fdf.f(x, fdf.params, f), GSL_SUCCESS);
    assert_vector_near(f, fe, 1e-15);
    gsl_matrix_set_all(J, 0);
    assert_int_equal(fdf.df(x, fdf.params, J), GSL_SUCCESS);
    assert_true(gsl_matrix_get(J, 1, 0) == 40.0);
    gsl_vector_free(f);
    gsl_matrix_free(J);
    ad_gsl_multiroot_fdf_free(&fdf);
  }
}

static void multiroot_example_prints_gsl_style_progress(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  FILE *log = open_memstream(&text, &len);
  double root[2];
  size_t iterations;
  roots_solve(gsl_multiroot_fdfsolver_gnewton, log, root, &iterations);
  fclose(log);
  /* GSL's manual shows the same first lines for its hand-written
   * Jacobian. */
  assert_non_null(strstr(text, "iter =   0 x = -10.000 -5.000 f(x) =  "
                               "1.100e+01 -1.050e+03\n"));
  assert_non_null(strstr(text, "iter =   1 x = -4.231 -65.317 f(x) =  "
                               "5.231e+00 -8.321e+02\n"));
  assert_non_null(strstr(text, "status = success\n"));
  free(text);
}

/* ---- errors ------------------------------------------------------------ */

static void bad_arguments_are_einval(void **state) {
  (void)state;
  gsl_multimin_function_fdf mm;
  gsl_multifit_nlinear_fdf mf;
  gsl_multiroot_function_fdf mr;
  assert_int_equal(ad_gsl_multimin_fdf(NULL, cubic, NULL, 2), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_gsl_multimin_fdf: argument 'out' is NULL");
  assert_int_equal(ad_gsl_multimin_fdf(&mm, NULL, NULL, 2), AD_EINVAL);
  assert_error(AD_EINVAL, "the function is NULL");
  assert_null(mm.f);
  assert_int_equal(ad_gsl_multimin_fdf(&mm, cubic, NULL, 0), AD_EINVAL);
  assert_error(AD_EINVAL, "n must be between 1 and INT64_MAX, got 0");
  assert_int_equal(ad_gsl_multifit_nlinear_fdf(&mf, cubic, NULL, 3, 0, 0),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "p (parameters) must be between 1");
  assert_int_equal(ad_gsl_multifit_nlinear_fdf(&mf, cubic, NULL, 0, 3, 0),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "n (residuals) must be between 1");
  assert_int_equal(ad_gsl_multifit_nlinear_fdf(&mf, cubic, NULL, 3, 3, 7),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "flags must be AD_GSL_JAC_AUTO");
  assert_null(mf.f);
  assert_int_equal(ad_gsl_multiroot_fdf(&mr, cubic, NULL, 0, 0), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_gsl_multiroot_fdf: n must be between 1");
  assert_int_equal(ad_gsl_multiroot_fdf(&mr, NULL, NULL, 2, 0), AD_EINVAL);
  assert_error(AD_EINVAL, "the function is NULL");
  assert_int_equal(ad_gsl_multiroot_fdf(&mr, cubic, NULL, 2, 3), AD_EINVAL);
  assert_error(AD_EINVAL, "flags");
  /* The free functions accept NULL, zeroed and foreign structs. */
  ad_gsl_multimin_fdf_free(NULL);
  ad_gsl_multimin_fdf_free(&mm);
  gsl_multimin_function_fdf foreign = {0};
  foreign.params = &foreign;
  ad_gsl_multimin_fdf_free(&foreign);
  assert_ptr_equal(foreign.params, &foreign);
  ad_gsl_multifit_nlinear_fdf_free(NULL);
  ad_gsl_multiroot_fdf_free(NULL);
}

static void function_returning_null_reaches_gsl_as_nan(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  ad_gsl_multimin_fdf(&fdf, returns_null, NULL, 2);
  GSL_VEC(x, 1.0, 2.0);
  assert_true(isnan(fdf.f(x, fdf.params)));
  assert_error(AD_EINVAL, "ad_gsl_multimin_fdf: the function returned NULL "
                          "without recording an error");
  gsl_vector *g = gsl_vector_alloc(2);
  double f = 0;
  fdf.fdf(x, fdf.params, &f, g);
  assert_true(isnan(f));
  assert_true(isnan(gsl_vector_get(g, 0)) && isnan(gsl_vector_get(g, 1)));
  assert_error(AD_EINVAL, "returned NULL");
  gsl_vector_free(g);
  ad_gsl_multimin_fdf_free(&fdf);
}

static void error_inside_the_function_keeps_its_own_message(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  ad_gsl_multimin_fdf(&fdf, bad_matmul, NULL, 2);
  GSL_VEC(x, 1.0, 2.0);
  gsl_vector *g = gsl_vector_alloc(2);
  fdf.df(x, fdf.params, g);
  assert_true(isnan(gsl_vector_get(g, 0)));
  assert_error(AD_ESHAPE, "ad_matmul: inner dimensions differ: (2,) x "
                          "(3, 3)");
  gsl_vector_free(g);
  ad_gsl_multimin_fdf_free(&fdf);
}

static void non_scalar_function_is_eshape(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  ad_gsl_multimin_fdf(&fdf, identity, NULL, 2);
  GSL_VEC(x, 1.0, 2.0);
  assert_true(isnan(fdf.f(x, fdf.params)));
  assert_error(AD_ESHAPE, "ad_gsl_multimin_fdf: the function returned shape "
                          "(2,), not a scalar (it must map x of shape (2,) "
                          "to one value)");
  double f;
  gsl_vector *g = gsl_vector_alloc(2);
  fdf.fdf(x, fdf.params, &f, g);
  assert_true(isnan(f));
  assert_error(AD_ESHAPE, "not a scalar");
  gsl_vector_free(g);
  ad_gsl_multimin_fdf_free(&fdf);
}

static void nan_value_or_gradient_is_einval_naming_the_point(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  ad_gsl_multimin_fdf(&fdf, log_sum, NULL, 2);
  GSL_VEC(x, -1.0, 2.0);
  assert_true(isnan(fdf.f(x, fdf.params)));
  assert_error(AD_EINVAL, "ad_gsl_multimin_fdf: the function's value is NaN "
                          "at x = (-1, 2)");
  ad_gsl_multimin_fdf_free(&fdf);
  /* sqrt at 0: the value is fine, the gradient is Inf (passed on); at a
   * NaN gradient element the message names it. */
  ad_gsl_multimin_fdf(&fdf, sqrt_sum, NULL, 2);
  GSL_VEC(z, 0.0, 4.0);
  gsl_vector *g = gsl_vector_alloc(2);
  fdf.df(z, fdf.params, g);
  assert_true(isinf(gsl_vector_get(g, 0)));
  assert_int_equal(ad_error(), AD_OK);
  GSL_VEC(nanx, 1.0, NAN);
  double f;
  fdf.fdf(nanx, fdf.params, &f, g);
  assert_true(isnan(f));
  assert_error(AD_EINVAL, "GSL passed x with NaN at element 1, x = (1, nan)");
  gsl_vector_free(g);
  ad_gsl_multimin_fdf_free(&fdf);
}

static void wrong_size_from_gsl_is_eshape(void **state) {
  (void)state;
  gsl_multimin_function_fdf fdf;
  ad_gsl_multimin_fdf(&fdf, paraboloid, NULL, 2);
  GSL_VEC(x, 1.0, 2.0, 3.0);
  assert_true(isnan(fdf.f(x, fdf.params)));
  assert_error(AD_ESHAPE, "ad_gsl_multimin_fdf: GSL passed x of 3 elements, "
                          "the adapter was made for 2");
  ad_gsl_multimin_fdf_free(&fdf);

  /* A minimizer of another size: GSL itself refuses the struct, through
   * its error handler (counted here, aborting by default). */
  ad_gsl_multimin_fdf(&fdf, paraboloid, NULL, 2);
  gsl_multimin_fdfminimizer *s =
      gsl_multimin_fdfminimizer_alloc(gsl_multimin_fdfminimizer_vector_bfgs2,
                                      3);
  handler_calls = 0;
  assert_int_equal(gsl_multimin_fdfminimizer_set(s, &fdf, x, 0.01, 0.1),
                   GSL_EBADLEN);
  assert_int_equal(handler_calls, 1);
  gsl_multimin_fdfminimizer_free(s);
  ad_gsl_multimin_fdf_free(&fdf);

  gsl_multiroot_function_fdf mr;
  roots_params p = {1.0, 10.0};
  ad_gsl_multiroot_fdf(&mr, roots_system, &p, 2, 0);
  gsl_vector *f = gsl_vector_alloc(3);
  assert_int_equal(mr.f(x, mr.params, f), GSL_EBADLEN);
  assert_error(AD_ESHAPE, "GSL passed x of 3 elements");
  GSL_VEC(x2, 1.0, 2.0);
  gsl_matrix *J = gsl_matrix_alloc(3, 3);
  assert_int_equal(mr.df(x2, mr.params, J), GSL_EBADLEN);
  assert_error(AD_ESHAPE, "GSL passed a Jacobian of 3 x 3, the adapter was "
                          "made for 2 x 2");
  gsl_matrix_free(J);
  gsl_vector_free(f);
  ad_gsl_multiroot_fdf_free(&mr);
}

static void wrong_residual_count_is_eshape_and_ebadfunc(void **state) {
  (void)state;
  expfit_data d;
  expfit_make_data(&d);
  /* The adapter is told 99 residuals; the function returns 100. */
  gsl_multifit_nlinear_fdf fdf;
  ad_gsl_multifit_nlinear_fdf(&fdf, expfit_residuals, &d, 99, 3, 0);
  GSL_VEC(x, 4.0, 1.2, 0.5);
  gsl_vector *r = gsl_vector_alloc(99);
  assert_int_equal(fdf.f(x, fdf.params, r), GSL_EBADFUNC);
  assert_error(AD_ESHAPE, "ad_gsl_multifit_nlinear_fdf: the function "
                          "returned 100 values (shape (100,)) for x of "
                          "shape (3,), expected 99");
  assert_true(isnan(gsl_vector_get(r, 0)));
  gsl_matrix *J = gsl_matrix_alloc(99, 3);
  assert_int_equal(fdf.df(x, fdf.params, J), GSL_EBADFUNC);
  assert_error(AD_ESHAPE, "expected 99");
  gsl_matrix_free(J);
  gsl_vector_free(r);
  ad_gsl_multifit_nlinear_fdf_free(&fdf);
}

/* A residual function that fails from its k-th call on. */
static int fail_from;
static ad_tensor *failing_expfit(ad_tensor *x, void *ctx) {
  if (++calls >= fail_from) return NULL;
  return expfit_residuals(x, ctx);
}

static ad_tensor *failing_roots(ad_tensor *x, void *ctx) {
  if (++calls >= fail_from) return NULL;
  return roots_system(x, ctx);
}

static ad_tensor *failing_paraboloid(ad_tensor *x, void *ctx) {
  if (++calls >= fail_from) return bad_matmul(x, ctx);
  return paraboloid(x, ctx);
}

/* Whatever call fails, with every solver type: the status or NaN reaches
 * the caller, the root cause stays in the error channel, and GSL never
 * calls its error handler (which would abort by default). */
static void failures_never_reach_gsl_error_handler(void **state) {
  (void)state;
  int last = test_quick() ? 4 : 12;
  const gsl_multimin_fdfminimizer_type *mm_types[] = {
      gsl_multimin_fdfminimizer_conjugate_fr,
      gsl_multimin_fdfminimizer_conjugate_pr,
      gsl_multimin_fdfminimizer_vector_bfgs,
      gsl_multimin_fdfminimizer_vector_bfgs2,
      gsl_multimin_fdfminimizer_steepest_descent};
  for (fail_from = 1; fail_from <= last; fail_from++)
    for (int t = 0; t < 5; t++) {
      gsl_multimin_function_fdf fdf;
      ad_gsl_multimin_fdf(&fdf, failing_paraboloid, NULL, 2);
      GSL_VEC(x0, 5.0, 7.0);
      gsl_multimin_fdfminimizer *s =
          gsl_multimin_fdfminimizer_alloc(mm_types[t], 2);
      calls = 0;
      handler_calls = 0;
      gsl_multimin_fdfminimizer_set(s, &fdf, x0, 0.01, 1e-4);
      for (int i = 0; i < 20; i++) gsl_multimin_fdfminimizer_iterate(s);
      assert_int_equal(handler_calls, 0);
      if (calls >= fail_from)
        assert_error(AD_ESHAPE, "ad_matmul: inner dimensions differ");
      ad_error_clear();
      gsl_multimin_fdfminimizer_free(s);
      ad_gsl_multimin_fdf_free(&fdf);
    }

  const gsl_multiroot_fdfsolver_type *mr_types[] = {
      gsl_multiroot_fdfsolver_hybridsj, gsl_multiroot_fdfsolver_hybridj,
      gsl_multiroot_fdfsolver_newton, gsl_multiroot_fdfsolver_gnewton};
  roots_params p = {1.0, 10.0};
  for (fail_from = 1; fail_from <= last; fail_from++)
    for (unsigned mode = 1; mode <= 2; mode++)
      for (int t = 0; t < 4; t++) {
        gsl_multiroot_function_fdf fdf;
        ad_gsl_multiroot_fdf(&fdf, failing_roots, &p, 2, mode);
        GSL_VEC(x0, -10.0, -5.0);
        gsl_multiroot_fdfsolver *s =
            gsl_multiroot_fdfsolver_alloc(mr_types[t], 2);
        calls = 0;
        handler_calls = 0;
        int status = gsl_multiroot_fdfsolver_set(s, &fdf, x0);
        for (int i = 0; i < 20 && status == GSL_SUCCESS; i++)
          status = gsl_multiroot_fdfsolver_iterate(s);
        assert_int_equal(handler_calls, 0);
        if (calls >= fail_from)
          assert_error(AD_EINVAL, "ad_gsl_multiroot_fdf: the function "
                                  "returned NULL");
        ad_error_clear();
        gsl_multiroot_fdfsolver_free(s);
        ad_gsl_multiroot_fdf_free(&fdf);
      }

  expfit_data d;
  expfit_make_data(&d);
  const gsl_multifit_nlinear_trs *trs[] = {
      gsl_multifit_nlinear_trs_lm, gsl_multifit_nlinear_trs_lmaccel,
      gsl_multifit_nlinear_trs_dogleg, gsl_multifit_nlinear_trs_ddogleg,
      gsl_multifit_nlinear_trs_subspace2D};
  for (fail_from = 1; fail_from <= 3 * last; fail_from += 3)
    for (unsigned mode = 1; mode <= 2; mode++)
      for (int t = 0; t < 5; t++) {
        gsl_multifit_nlinear_fdf fdf;
        ad_gsl_multifit_nlinear_fdf(&fdf, failing_expfit, &d, EXPFIT_N, 3,
                                    mode);
        gsl_multifit_nlinear_parameters params =
            gsl_multifit_nlinear_default_parameters();
        params.trs = trs[t];
        gsl_multifit_nlinear_workspace *w = gsl_multifit_nlinear_alloc(
            gsl_multifit_nlinear_trust, &params, EXPFIT_N, 3);
        GSL_VEC(x0, 1.0, 1.0, 0.0);
        calls = 0;
        handler_calls = 0;
        int info, status = gsl_multifit_nlinear_init(x0, &fdf, w);
        if (status == GSL_SUCCESS)
          status = gsl_multifit_nlinear_driver(20, 1e-8, 1e-8, 0.0, NULL,
                                               NULL, &info, w);
        assert_int_equal(handler_calls, 0);
        if (calls >= fail_from)
          assert_error(AD_EINVAL, "the function returned NULL");
        ad_error_clear();
        gsl_multifit_nlinear_free(w);
        ad_gsl_multifit_nlinear_fdf_free(&fdf);
      }
}

static void failure_message_survives_the_rest_of_the_minimization(void **s) {
  (void)s;
  /* log of a negative number: NaN at the first evaluation; every later
   * call of GSL passes NaN, which must not replace the root cause. */
  gsl_multimin_function_fdf fdf;
  ad_gsl_multimin_fdf(&fdf, log_sum, NULL, 2);
  GSL_VEC(x0, -1.0, 2.0);
  gsl_multimin_fdfminimizer *m = gsl_multimin_fdfminimizer_alloc(
      gsl_multimin_fdfminimizer_conjugate_fr, 2);
  gsl_multimin_fdfminimizer_set(m, &fdf, x0, 0.01, 1e-4);
  for (int i = 0; i < 5; i++) gsl_multimin_fdfminimizer_iterate(m);
  assert_error(AD_EINVAL, "the function's value is NaN at x = (-1, 2)");
  gsl_multimin_fdfminimizer_free(m);
  ad_gsl_multimin_fdf_free(&fdf);
}

/* ---- threads ----------------------------------------------------------- */

typedef struct thread_job {
  gsl_multimin_function_fdf *fdf;
  double x[2];
  ad_status error;
} thread_job;

static void *minimize_on_thread(void *arg) {
  thread_job *job = arg;
  int rounds = test_quick() ? 2 : 20;
  for (int r = 0; r < rounds; r++) {
    GSL_VEC(x0, -1.2, 1.0);
    gsl_multimin_fdfminimizer *s = gsl_multimin_fdfminimizer_alloc(
        gsl_multimin_fdfminimizer_vector_bfgs2, 2);
    gsl_multimin_fdfminimizer_set(s, job->fdf, x0, 0.01, 1e-4);
    for (int i = 0; i < 200; i++) {
      if (gsl_multimin_fdfminimizer_iterate(s)) break;
      if (gsl_multimin_test_gradient(s->gradient, 1e-8) == GSL_SUCCESS)
        break;
    }
    job->x[0] = gsl_vector_get(s->x, 0);
    job->x[1] = gsl_vector_get(s->x, 1);
    gsl_multimin_fdfminimizer_free(s);
  }
  job->error = ad_error();
  ad_error_clear();
  return NULL;
}

static void one_adapter_serves_threads_and_errors_stay_per_thread(void **s) {
  (void)s;
  gsl_multimin_function_fdf good, bad;
  ad_gsl_multimin_fdf(&good, rosenbrock, NULL, 2);
  ad_gsl_multimin_fdf(&bad, returns_null, NULL, 2);
  thread_job jobs[4] = {{&good, {0}, AD_OK},
                        {&good, {0}, AD_OK},
                        {&bad, {0}, AD_OK},
                        {&good, {0}, AD_OK}};
  pthread_t threads[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(
        pthread_create(&threads[i], NULL, minimize_on_thread, &jobs[i]), 0);
  for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
  for (int i = 0; i < 4; i++) {
    if (i == 2) {
      assert_int_equal(jobs[i].error, AD_EINVAL);
      continue;
    }
    assert_int_equal(jobs[i].error, AD_OK);
    assert_true(fabs(jobs[i].x[0] - 1) < 1e-6);
    assert_true(fabs(jobs[i].x[1] - 1) < 1e-6);
  }
  assert_int_equal(ad_error(), AD_OK);
  ad_gsl_multimin_fdf_free(&good);
  ad_gsl_multimin_fdf_free(&bad);
}

int main(void) {
  /* Count GSL's error-handler calls instead of aborting on them. */
  gsl_set_error_handler(counting_handler);
  const struct CMUnitTest tests[] = {
      scoped_test(multimin_callbacks_match_closed_form),
      scoped_test(multimin_reads_and_writes_strided_vectors),
      scoped_test(multimin_callbacks_leave_the_scope_clean),
      scoped_test(multimin_works_with_every_minimizer_type),
      scoped_test(traced_adapter_matches_the_eager_one),
      scoped_test(rosenbrock_example_reaches_one_one_with_vector_bfgs2),
      scoped_test(rosenbrock_example_prints_gsl_style_progress),
      scoped_test(logistic_example_fits_the_breast_cancer_data),
      scoped_test(logistic_example_reports_a_missing_file),
      scoped_test(multifit_jacobian_matches_closed_form_in_every_mode),
      scoped_test(multifit_residuals_match_the_model),
      scoped_test(multifit_auto_mode_takes_the_fewer_passes),
      scoped_test(multifit_fvv_is_the_second_directional_derivative),
      scoped_test(expfit_example_matches_gsl_documented_fit),
      scoped_test(expfit_example_prints_the_gsl_summary),
      scoped_test(multiroot_example_converges_with_every_solver),
      scoped_test(multiroot_fdf_gives_value_and_jacobian_in_every_mode),
      scoped_test(multiroot_example_prints_gsl_style_progress),
      scoped_test(bad_arguments_are_einval),
      scoped_test(function_returning_null_reaches_gsl_as_nan),
      scoped_test(error_inside_the_function_keeps_its_own_message),
      scoped_test(non_scalar_function_is_eshape),
      scoped_test(nan_value_or_gradient_is_einval_naming_the_point),
      scoped_test(wrong_size_from_gsl_is_eshape),
      scoped_test(wrong_residual_count_is_eshape_and_ebadfunc),
      scoped_test(failures_never_reach_gsl_error_handler),
      scoped_test(failure_message_survives_the_rest_of_the_minimization),
      scoped_test(one_adapter_serves_threads_and_errors_stay_per_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
