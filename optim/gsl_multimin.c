/* The gsl_multimin adapter: f, its gradient, and both in one pass, for
 * every gsl_multimin_fdfminimizer type. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gsl_internal.h"
#include "ad/trace.h"

#define OP "ad_gsl_multimin_fdf"

typedef struct multimin_state {
  ad_fn f;
  void *ctx;
  size_t n;
  bool trace;          /* AD_GSL_TRACE: replay a trace of f */
  ad_function *traced; /* traced on the first call */
} multimin_state;

/* The traced f, traced at x on the first call (later calls re-trace by
 * themselves when a guard or the shape asks for it); NULL with the error
 * recorded. */
static ad_function *traced_of(multimin_state *s, ad_tensor *x) {
  if (!s->traced) s->traced = ad_trace(s->f, s->ctx, x);
  return s->traced;
}

static ad__gsl_call call_of(const multimin_state *s) {
  return (ad__gsl_call){s->f, s->ctx, 1, OP, false, NULL};
}

static double mm_f(const gsl_vector *x, void *params) {
  multimin_state *s = params;
  if (!ad__gsl_size_ok(OP, "x", x->size, s->n) || !ad__gsl_point_ok(OP, x))
    return NAN;
  double v = NAN;
  ad_scope_begin();
  ad__gsl_call call = call_of(s);
  ad_tensor *xt = ad__gsl_tensor(x);
  ad_tensor *y = NULL;
  if (xt && s->trace) {
    ad_function *fn = traced_of(s, xt);
    call.f = ad_function_fn;
    call.ctx = fn;
    y = fn ? ad__gsl_checked(xt, &call) : NULL;
  } else if (xt) {
    y = ad__gsl_checked(xt, &call);
  }
  if (y && ad__gsl_result_ok(OP, "the function's value", y, x))
    v = ad_item(y);
  ad_scope_end();
  return v;
}

/* Value (when f is non-NULL) and gradient in one reverse-mode pass. */
static void mm_eval(const gsl_vector *x, multimin_state *s, double *f,
                    gsl_vector *g) {
  if (f) *f = NAN;
  if (!ad__gsl_size_ok(OP, "x", x->size, s->n) ||
      !ad__gsl_size_ok(OP, "the gradient", g->size, s->n) ||
      !ad__gsl_point_ok(OP, x)) {
    ad__gsl_fill_nan_vector(g);
    return;
  }
  ad_scope_begin();
  ad__gsl_call call = call_of(s);
  ad_tensor *xt = ad__gsl_tensor(x), *value = NULL, *grad = NULL;
  if (xt && s->trace) {
    /* One replay of the traced value-and-gradient program. */
    ad_function *fn = traced_of(s, xt);
    grad = fn ? ad_function_value_and_grad(fn, xt, &value) : NULL;
    if (grad && value && ad_numel(value) != 1) {
      ad__error(AD_ESHAPE, OP ": the function's value has %lld elements, "
                              "not 1",
                (long long)ad_numel(value));
      grad = NULL;
    }
  } else if (xt) {
    grad = ad_value_and_grad(ad__gsl_checked, &call, xt, &value);
  }
  bool ok = grad && (!f || ad__gsl_result_ok(OP, "the function's value",
                                             value, x));
  if (ok) ok = ad__gsl_write_checked(OP, "the gradient", grad, x, g);
  if (ok && f) *f = ad_item(value);
  if (!ok) ad__gsl_fill_nan_vector(g);
  ad_scope_end();
}

static void mm_df(const gsl_vector *x, void *params, gsl_vector *g) {
  mm_eval(x, params, NULL, g);
}

static void mm_fdf(const gsl_vector *x, void *params, double *f,
                   gsl_vector *g) {
  mm_eval(x, params, f, g);
}

ad_status ad_gsl_multimin_fdf(gsl_multimin_function_fdf *out, ad_fn f,
                              void *ctx, size_t n) {
  return ad_gsl_multimin_fdf_flags(out, f, ctx, n, 0);
}

ad_status ad_gsl_multimin_fdf_flags(gsl_multimin_function_fdf *out, ad_fn f,
                                    void *ctx, size_t n, unsigned flags) {
  if (!out) return ad__error(AD_EINVAL, OP ": argument 'out' is NULL");
  memset(out, 0, sizeof *out);
  if (!f) return ad__error(AD_EINVAL, OP ": the function is NULL");
  if (!ad__gsl_dim_ok(OP, "n", n)) return AD_EINVAL;
  multimin_state *s = malloc(sizeof *s);
  if (!s) return ad__error(AD_ENOMEM, OP ": out of memory");
  if (flags & ~AD_GSL_TRACE) {
    free(s);
    return ad__error(AD_EINVAL, OP ": unknown flags 0x%x", flags);
  }
  *s = (multimin_state){f, ctx, n, (flags & AD_GSL_TRACE) != 0, NULL};
  out->f = mm_f;
  out->df = mm_df;
  out->fdf = mm_fdf;
  out->n = n;
  out->params = s;
  return AD_OK;
}

void ad_gsl_multimin_fdf_free(gsl_multimin_function_fdf *fdf) {
  if (!fdf || fdf->f != mm_f) return;
  ad_function_free(((multimin_state *)fdf->params)->traced);
  free(fdf->params);
  memset(fdf, 0, sizeof *fdf);
}
