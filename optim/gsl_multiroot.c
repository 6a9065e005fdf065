/* The gsl_multiroots adapter: a system of equations and its Jacobian, for
 * every gsl_multiroot_fdfsolver type. */
#include <stdlib.h>
#include <string.h>

#include "gsl_internal.h"

#define OP "ad_gsl_multiroot_fdf"

static int mr_f(const gsl_vector *x, void *params, gsl_vector *fx) {
  return ad__gsl_eval_system(OP, params, x, fx, NULL);
}

static int mr_df(const gsl_vector *x, void *params, gsl_matrix *J) {
  return ad__gsl_eval_system(OP, params, x, NULL, J);
}

static int mr_fdf(const gsl_vector *x, void *params, gsl_vector *fx,
                  gsl_matrix *J) {
  return ad__gsl_eval_system(OP, params, x, fx, J);
}

ad_status ad_gsl_multiroot_fdf(gsl_multiroot_function_fdf *out, ad_fn f,
                               void *ctx, size_t n, unsigned flags) {
  if (!out) return ad__error(AD_EINVAL, OP ": argument 'out' is NULL");
  memset(out, 0, sizeof *out);
  if (!f) return ad__error(AD_EINVAL, OP ": the function is NULL");
  if (!ad__gsl_dim_ok(OP, "n", n)) return AD_EINVAL;
  if (flags > AD_GSL_JAC_REVERSE)
    return ad__error(AD_EINVAL,
                     OP ": flags must be AD_GSL_JAC_AUTO, AD_GSL_JAC_FORWARD "
                        "or AD_GSL_JAC_REVERSE, got %u",
                     flags);
  ad__gsl_system *s = malloc(sizeof *s);
  if (!s) return ad__error(AD_ENOMEM, OP ": out of memory");
  /* A square Jacobian costs n passes either way; forward mode gets the
   * value from its first pass without a tape. */
  *s = (ad__gsl_system){f, ctx, n, n, flags == AD_GSL_JAC_REVERSE, true};
  out->f = mr_f;
  out->df = mr_df;
  out->fdf = mr_fdf;
  out->n = n;
  out->params = s;
  return AD_OK;
}

void ad_gsl_multiroot_fdf_free(gsl_multiroot_function_fdf *fdf) {
  if (!fdf || fdf->f != mr_f) return;
  free(fdf->params);
  memset(fdf, 0, sizeof *fdf);
}
