/* A system of two nonlinear equations solved with GSL's multiroot
 * fdfsolvers, the Jacobian coming from libad (GSL's own example,
 * without a derivative written by hand). */
#include <ad.h>
#include <ad/gsl.h>
#include <gsl/gsl_errno.h>
#include <math.h>
#include <stdio.h>

typedef struct roots_params {
  double a, b;
} roots_params;

/* f(x, y) = (a (1 - x), b (y - x^2)), whose root is (1, 1). */
static ad_tensor *roots_system(ad_tensor *v, void *ctx) {
  const roots_params *p = ctx;
  ad_tensor *x = ad_slice(v, 0, 0, 1, 1), *y = ad_slice(v, 0, 1, 2, 1);
  ad_tensor *parts[2] = {
      ad_mul_scalar(ad_add_scalar(ad_neg(x), 1.0), p->a),
      ad_mul_scalar(ad_sub(y, ad_square(x)), p->b)};
  return ad_concat(2, parts, 0);
}

static void roots_print_state(FILE *log, size_t iter,
                              const gsl_multiroot_fdfsolver *s) {
  fprintf(log, "iter = %3zu x = % .3f % .3f f(x) = % .3e % .3e\n", iter,
          gsl_vector_get(s->x, 0), gsl_vector_get(s->x, 1),
          gsl_vector_get(s->f, 0), gsl_vector_get(s->f, 1));
}

/* Solves from (-10, -5) with solver type T (hybridsj, hybridj, newton or
 * gnewton), printing each iteration to log (NULL: quietly).  The root
 * goes to root and the iterations done to *iterations.  Returns
 * GSL_SUCCESS when |f| < 1e-7, GSL's status otherwise, or GSL_EBADFUNC
 * when libad failed (ad_error_message() says why). */
static int roots_solve(const gsl_multiroot_fdfsolver_type *T, FILE *log,
                       double root[2], size_t *iterations) {
  const size_t n = 2;
  roots_params params = {1.0, 10.0};
  root[0] = root[1] = NAN;
  *iterations = 0;
  gsl_multiroot_function_fdf fdf;
  if (ad_gsl_multiroot_fdf(&fdf, roots_system, &params, n,
                           AD_GSL_JAC_AUTO) != AD_OK)
    return GSL_EBADFUNC;
  double x_init[2] = {-10.0, -5.0};
  gsl_vector_view x = gsl_vector_view_array(x_init, n);
  gsl_multiroot_fdfsolver *s = gsl_multiroot_fdfsolver_alloc(T, n);
  ad_error_clear();
  int status = gsl_multiroot_fdfsolver_set(s, &fdf, &x.vector);
  size_t iter = 0;
  if (log) fprintf(log, "solver: %s\n", gsl_multiroot_fdfsolver_name(s));
  if (status == GSL_SUCCESS) {
    if (log) roots_print_state(log, iter, s);
    do {
      iter++;
      status = gsl_multiroot_fdfsolver_iterate(s);
      if (log) roots_print_state(log, iter, s);
      if (status) break;
      status = gsl_multiroot_test_residual(s->f, 1e-7);
    } while (status == GSL_CONTINUE && iter < 1000);
  }
  if (ad_error() != AD_OK) status = GSL_EBADFUNC;
  if (log) fprintf(log, "status = %s\n", gsl_strerror(status));
  root[0] = gsl_vector_get(s->x, 0);
  root[1] = gsl_vector_get(s->x, 1);
  *iterations = iter;
  gsl_multiroot_fdfsolver_free(s);
  ad_gsl_multiroot_fdf_free(&fdf);
  return status;
}

#ifndef AD_EXAMPLE_NO_MAIN
int main(void) {
  gsl_set_error_handler_off();
  double root[2];
  size_t iterations;
  int status = roots_solve(gsl_multiroot_fdfsolver_gnewton, stdout, root,
                           &iterations);
  if (status == GSL_SUCCESS) {
    printf("\n");
    status = roots_solve(gsl_multiroot_fdfsolver_hybridsj, stdout, root,
                         &iterations);
  }
  if (status == GSL_EBADFUNC && ad_error() != AD_OK)
    fprintf(stderr, "gsl_multiroot: %s\n", ad_error_message());
  return status == GSL_SUCCESS ? 0 : 1;
}
#endif
