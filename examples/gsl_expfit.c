/* An exponential decay y = A exp(-lambda t) + b fitted to noisy data with
 * GSL's gsl_multifit_nlinear, the Jacobian and fvv coming from libad
 * (GSL's own example, without a derivative written by hand). */
#include <ad.h>
#include <ad/gsl.h>
#include <gsl/gsl_blas.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdio.h>

#define EXPFIT_N 100     /* data points */
#define EXPFIT_TMAX 3.0  /* t in [0, EXPFIT_TMAX] */

typedef struct expfit_data {
  ad_tensor *t, *y;  /* shapes (EXPFIT_N,) */
  double weights[EXPFIT_N];
} expfit_data;

/* Data from A = 5, lambda = 1.5, b = 1 with 10% Gaussian noise (GSL's
 * mt19937 with its default seed, as in GSL's example).  The tensors
 * belong to the current scope. */
static void expfit_make_data(expfit_data *d) {
  double t[EXPFIT_N], y[EXPFIT_N];
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  for (int i = 0; i < EXPFIT_N; i++) {
    double ti = i * EXPFIT_TMAX / (EXPFIT_N - 1.0);
    double yi = 1.0 + 5 * exp(-1.5 * ti);
    double si = 0.1 * yi;
    t[i] = ti;
    y[i] = yi + gsl_ran_gaussian(r, si);
    d->weights[i] = 1.0 / (si * si);
  }
  gsl_rng_free(r);
  d->t = ad_tensor_new(1, (const int64_t[]){EXPFIT_N}, t);
  d->y = ad_tensor_new(1, (const int64_t[]){EXPFIT_N}, y);
}

/* The residuals A exp(-lambda t_i) + b - y_i of x = (A, lambda, b). */
static ad_tensor *expfit_residuals(ad_tensor *x, void *ctx) {
  const expfit_data *d = ctx;
  ad_tensor *A = ad_slice(x, 0, 0, 1, 1);
  ad_tensor *lambda = ad_slice(x, 0, 1, 2, 1);
  ad_tensor *b = ad_slice(x, 0, 2, 3, 1);
  ad_tensor *model = ad_add(ad_mul(A, ad_exp(ad_neg(ad_mul(lambda, d->t)))), b);
  return ad_sub(model, d->y);
}

/* GSL's driver calls this after every iteration. */
static void expfit_callback(const size_t iter, void *params,
                            const gsl_multifit_nlinear_workspace *w) {
  FILE *log = params;
  gsl_vector *f = gsl_multifit_nlinear_residual(w);
  gsl_vector *x = gsl_multifit_nlinear_position(w);
  /* Before the first iteration J is not factorized yet (GSL would read
   * uninitialized memory): print cond(J) = inf then, as GSL's example
   * shows. */
  double rcond = 0;
  if (iter > 0) gsl_multifit_nlinear_rcond(&rcond, w);
  fprintf(log,
          "iter %2zu: A = %.4f, lambda = %.4f, b = %.4f, cond(J) = %8.4f, "
          "|f(x)| = %.4f\n",
          iter, gsl_vector_get(x, 0), gsl_vector_get(x, 1),
          gsl_vector_get(x, 2), 1.0 / rcond, gsl_blas_dnrm2(f));
}

/* Fits from (1, 1, 0) with the trust-region subproblem trs (for instance
 * gsl_multifit_nlinear_trs_lm, or _lmaccel for geodesic acceleration,
 * which calls fvv), printing each iteration and a summary to log (NULL:
 * quietly).  The parameters go to x and their standard errors to err.
 * Returns the driver's status (GSL_SUCCESS once converged), or
 * GSL_EBADFUNC when libad failed (ad_error_message() says why). */
static int expfit_fit(const expfit_data *d,
                      const gsl_multifit_nlinear_trs *trs, FILE *log,
                      double x[3], double err[3]) {
  const size_t n = EXPFIT_N, p = 3;
  for (int i = 0; i < 3; i++) x[i] = err[i] = NAN;
  gsl_multifit_nlinear_fdf fdf;
  if (ad_gsl_multifit_nlinear_fdf(&fdf, expfit_residuals, (void *)d, n, p,
                                  AD_GSL_JAC_AUTO) != AD_OK)
    return GSL_EBADFUNC;
  gsl_multifit_nlinear_parameters params =
      gsl_multifit_nlinear_default_parameters();
  params.trs = trs;
  gsl_multifit_nlinear_workspace *w =
      gsl_multifit_nlinear_alloc(gsl_multifit_nlinear_trust, &params, n, p);
  double x_init[3] = {1.0, 1.0, 0.0};
  gsl_vector_view x0 = gsl_vector_view_array(x_init, p);
  gsl_vector_const_view wts = gsl_vector_const_view_array(d->weights, n);
  ad_error_clear();
  int status = gsl_multifit_nlinear_winit(&x0.vector, &wts.vector, &fdf, w);
  double chisq0 = NAN, chisq = NAN;
  int info = 0;
  if (status == GSL_SUCCESS) {
    gsl_vector *f = gsl_multifit_nlinear_residual(w);
    gsl_blas_ddot(f, f, &chisq0);
    status = gsl_multifit_nlinear_driver(100, 1e-8, 1e-8, 0.0,
                                         log ? expfit_callback : NULL, log,
                                         &info, w);
    gsl_blas_ddot(f, f, &chisq);
  }
  if (ad_error() != AD_OK) status = GSL_EBADFUNC;
  if (status == GSL_SUCCESS) {
    /* Standard errors from the covariance (J^T W J)^-1, scaled by the
     * fit's chi^2 per degree of freedom when it exceeds 1. */
    gsl_matrix *covar = gsl_matrix_alloc(p, p);
    gsl_multifit_nlinear_covar(gsl_multifit_nlinear_jac(w), 0.0, covar);
    double c = GSL_MAX_DBL(1, sqrt(chisq / (n - p)));
    for (size_t i = 0; i < p; i++) {
      x[i] = gsl_vector_get(gsl_multifit_nlinear_position(w), i);
      err[i] = c * sqrt(gsl_matrix_get(covar, i, i));
    }
    gsl_matrix_free(covar);
  }
  if (log) {
    fprintf(log, "summary from method '%s/%s'\n",
            gsl_multifit_nlinear_name(w), gsl_multifit_nlinear_trs_name(w));
    fprintf(log, "number of iterations: %zu\n", gsl_multifit_nlinear_niter(w));
    fprintf(log, "function evaluations: %zu\n", fdf.nevalf);
    fprintf(log, "Jacobian evaluations: %zu\n", fdf.nevaldf);
    fprintf(log, "fvv evaluations: %zu\n", fdf.nevalfvv);
    fprintf(log, "reason for stopping: %s\n",
            info == 1 ? "small step size" : "small gradient");
    fprintf(log, "initial |f(x)| = %f\n", sqrt(chisq0));
    fprintf(log, "final   |f(x)| = %f\n", sqrt(chisq));
    fprintf(log, "chisq/dof = %g\n", chisq / (n - p));
    fprintf(log, "A      = %.5f +/- %.5f\n", x[0], err[0]);
    fprintf(log, "lambda = %.5f +/- %.5f\n", x[1], err[1]);
    fprintf(log, "b      = %.5f +/- %.5f\n", x[2], err[2]);
    fprintf(log, "status = %s\n", gsl_strerror(status));
  }
  gsl_multifit_nlinear_free(w);
  ad_gsl_multifit_nlinear_fdf_free(&fdf);
  return status;
}

#ifndef AD_EXAMPLE_NO_MAIN
int main(void) {
  gsl_set_error_handler_off();
  ad_scope_begin();
  expfit_data d;
  expfit_make_data(&d);
  double x[3], err[3];
  int status = expfit_fit(&d, gsl_multifit_nlinear_trs_lm, stdout, x, err);
  if (status == GSL_SUCCESS) {
    printf("\nThe same fit with geodesic acceleration (fvv from libad):\n");
    status = expfit_fit(&d, gsl_multifit_nlinear_trs_lmaccel, stdout, x, err);
  }
  if (status == GSL_EBADFUNC && ad_error() != AD_OK)
    fprintf(stderr, "gsl_expfit: %s\n", ad_error_message());
  ad_scope_end();
  return status == GSL_SUCCESS ? 0 : 1;
}
#endif
