/* Rosenbrock's function minimized by GSL's vector_bfgs2 from (-1.2, 1),
 * with the gradient from libad instead of one written by hand. */
#include <ad.h>
#include <ad/gsl.h>
#include <gsl/gsl_errno.h>
#include <math.h>
#include <stdio.h>

/* f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2, for any n >= 2;
 * with n = 2 it is the classic 100 (y - x^2)^2 + (1 - x)^2.  Written with
 * whole-vector ops (the factor 100 applies to a sum, not to each term),
 * so that it costs a few passes over x whatever n is. */
static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *head = ad_slice(x, 0, 0, n - 1, 1);
  ad_tensor *tail = ad_slice(x, 0, 1, n, 1);
  ad_tensor *valley = ad_sub(tail, ad_square(head));
  ad_tensor *slope = ad_sub(ad_scalar(1.0), head);
  return ad_add(ad_mul_scalar(ad_sum_all(ad_square(valley)), 100.0),
                ad_sum_all(ad_square(slope)));
}

/* Minimizes Rosenbrock's function in two dimensions from (-1.2, 1) with
 * the minimizer type T, at most max_iter iterations, printing each
 * iteration to log (NULL: quietly).  The final point goes to xmin and the
 * iterations done to *iterations.  Returns GSL_SUCCESS when the gradient
 * test passed, GSL's status when the minimizer stopped otherwise, or
 * GSL_EBADFUNC when libad failed (ad_error_message() says why). */
static int rosenbrock_minimize(const gsl_multimin_fdfminimizer_type *T,
                               size_t max_iter, FILE *log, double xmin[2],
                               size_t *iterations) {
  xmin[0] = xmin[1] = NAN;
  *iterations = 0;
  gsl_multimin_function_fdf fdf;
  if (ad_gsl_multimin_fdf(&fdf, rosenbrock, NULL, 2) != AD_OK)
    return GSL_EBADFUNC;
  gsl_vector *x = gsl_vector_alloc(2);
  gsl_vector_set(x, 0, -1.2);
  gsl_vector_set(x, 1, 1.0);
  gsl_multimin_fdfminimizer *s = gsl_multimin_fdfminimizer_alloc(T, 2);

  /* A failure inside libad shows as an error recorded on this thread. */
  ad_error_clear();
  int status = gsl_multimin_fdfminimizer_set(s, &fdf, x, 0.01, 1e-4);
  size_t iter = 0;
  if (log) fprintf(log, "minimizer: %s\n", gsl_multimin_fdfminimizer_name(s));
  if (status == GSL_SUCCESS && ad_error() == AD_OK) {
    do {
      iter++;
      status = gsl_multimin_fdfminimizer_iterate(s);
      if (status || ad_error() != AD_OK) break;
      status = gsl_multimin_test_gradient(s->gradient, 1e-6);
      if (log && status == GSL_SUCCESS) fprintf(log, "Minimum found at:\n");
      if (log)
        fprintf(log, "%5zu %.5f %.5f %10.5f\n", iter,
                gsl_vector_get(s->x, 0), gsl_vector_get(s->x, 1), s->f);
    } while (status == GSL_CONTINUE && iter < max_iter);
  }
  if (ad_error() != AD_OK) status = GSL_EBADFUNC;
  else if (status == GSL_CONTINUE) status = GSL_EMAXITER;
  xmin[0] = gsl_vector_get(s->x, 0);
  xmin[1] = gsl_vector_get(s->x, 1);
  *iterations = iter;
  gsl_multimin_fdfminimizer_free(s);
  gsl_vector_free(x);
  ad_gsl_multimin_fdf_free(&fdf);
  return status;
}

#ifndef AD_EXAMPLE_NO_MAIN
int main(void) {
  /* Solvers report errors by status here, as libad does, instead of
   * GSL's default of aborting. */
  gsl_set_error_handler_off();
  double xmin[2];
  size_t iterations;
  int status = rosenbrock_minimize(gsl_multimin_fdfminimizer_vector_bfgs2,
                                   1000, stdout, xmin, &iterations);
  if (status == GSL_EBADFUNC && ad_error() != AD_OK) {
    fprintf(stderr, "gsl_rosenbrock: %s\n", ad_error_message());
    return 1;
  }
  printf("status = %s\n", gsl_strerror(status));
  return status == GSL_SUCCESS ? 0 : 1;
}
#endif
