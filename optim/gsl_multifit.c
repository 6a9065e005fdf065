/* The gsl_multifit_nlinear adapter: residuals, their Jacobian by forward
 * or reverse mode, and the second directional derivative fvv. */
#include <stdlib.h>
#include <string.h>

#include "gsl_internal.h"

#define OP "ad_gsl_multifit_nlinear_fdf"

static int mf_f(const gsl_vector *x, void *params, gsl_vector *r) {
  return ad__gsl_eval_system(OP, params, x, r, NULL);
}

static int mf_df(const gsl_vector *x, void *params, gsl_matrix *J) {
  return ad__gsl_eval_system(OP, params, x, NULL, J);
}

/* x -> J(x) v: the directional derivative whose own JVP along v is fvv. */
typedef struct directional {
  ad__gsl_call call;
  ad_tensor *v;
} directional;

static ad_tensor *along_v(ad_tensor *x, void *ctx) {
  directional *d = ctx;
  return ad_jvp(ad__gsl_checked, &d->call, x, d->v, NULL);
}

static int mf_fvv(const gsl_vector *x, const gsl_vector *v, void *params,
                  gsl_vector *fvv) {
  const ad__gsl_system *s = params;
  /* On failure fvv is NaN as well, as in ad__gsl_eval_system. */
  ad__gsl_fill_nan_vector(fvv);
  if (!ad__gsl_size_ok(OP, "x", x->size, s->nin) ||
      !ad__gsl_size_ok(OP, "the velocity v", v->size, s->nin) ||
      !ad__gsl_size_ok(OP, "fvv", fvv->size, s->nout))
    return GSL_EBADLEN;
  if (!ad__gsl_point_ok(OP, x) || !ad__gsl_point_ok(OP, v))
    return GSL_EBADFUNC;
  int status = GSL_EBADFUNC;
  ad_scope_begin();
  directional d = {{s->f, s->ctx, (int64_t)s->nout, OP, false, NULL},
                   ad__gsl_tensor(v)};
  ad_tensor *xt = ad__gsl_tensor(x);
  /* Forward over forward: the tangent of J(x) v along v. */
  ad_tensor *second = xt && d.v ? ad_jvp(along_v, &d, xt, d.v, NULL) : NULL;
  if (second && ad__gsl_result_ok(OP, "fvv", second, x)) {
    ad__gsl_write_vector(second, fvv);
    status = GSL_SUCCESS;
  }
  ad_scope_end();
  return status;
}

ad_status ad_gsl_multifit_nlinear_fdf(gsl_multifit_nlinear_fdf *out,
                                      ad_fn f, void *ctx, size_t n,
                                      size_t p, unsigned flags) {
  if (!out) return ad__error(AD_EINVAL, OP ": argument 'out' is NULL");
  memset(out, 0, sizeof *out);
  if (!f) return ad__error(AD_EINVAL, OP ": the function is NULL");
  if (!ad__gsl_dim_ok(OP, "n (residuals)", n) ||
      !ad__gsl_dim_ok(OP, "p (parameters)", p))
    return AD_EINVAL;
  if (flags > AD_GSL_JAC_REVERSE)
    return ad__error(AD_EINVAL,
                     OP ": flags must be AD_GSL_JAC_AUTO, AD_GSL_JAC_FORWARD "
                        "or AD_GSL_JAC_REVERSE, got %u",
                     flags);
  ad__gsl_system *s = malloc(sizeof *s);
  if (!s) return ad__error(AD_ENOMEM, OP ": out of memory");
  /* Forward mode costs p passes, reverse one recorded pass and n backward
   * passes: take the fewer. */
  bool reverse = flags == AD_GSL_JAC_REVERSE ||
                 (flags == AD_GSL_JAC_AUTO && n < p);
  *s = (ad__gsl_system){f, ctx, n, p, reverse, false};
  out->f = mf_f;
  out->df = mf_df;
  out->fvv = mf_fvv;
  out->n = n;
  out->p = p;
  out->params = s;
  return AD_OK;
}

void ad_gsl_multifit_nlinear_fdf_free(gsl_multifit_nlinear_fdf *fdf) {
  if (!fdf || fdf->f != mf_f) return;
  free(fdf->params);
  memset(fdf, 0, sizeof *fdf);
}
