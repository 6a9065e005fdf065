/* Helpers the GSL adapters share: copies between tensors and GSL's
 * vectors and matrices, checked calls of the user's function, messages. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gsl_internal.h"

ad_tensor *ad__gsl_tensor(const gsl_vector *x) {
  const int64_t shape[1] = {(int64_t)x->size};
  if (x->stride == 1) return ad_tensor_new(1, shape, x->data);
  ad_tensor *t = ad__alloc("ad_gsl", 1, shape);
  if (!t) return NULL;
  for (size_t i = 0; i < x->size; i++) t->data[i] = x->data[i * x->stride];
  return ad__own(t);
}

/* t's elements, row-major, as a contiguous array: t's own data or a copy
 * (*copy, to release). */
static const double *dense_data(const ad_tensor *t, ad_tensor **copy) {
  *copy = NULL;
  if (t->contiguous) return t->data;
  *copy = ad__contiguous((ad_tensor *)t);
  return *copy ? (*copy)->data : NULL;
}

void ad__gsl_write_vector(const ad_tensor *t, gsl_vector *v) {
  ad_tensor *copy;
  const double *d = dense_data(t, &copy);
  if (!d) {
    ad__gsl_fill_nan_vector(v);
    return;
  }
  if (v->stride == 1)
    memcpy(v->data, d, v->size * sizeof(double));
  else
    for (size_t i = 0; i < v->size; i++) v->data[i * v->stride] = d[i];
  ad_release(copy);
}

void ad__gsl_write_matrix(const ad_tensor *t, gsl_matrix *m) {
  ad_tensor *copy;
  const double *d = dense_data(t, &copy);
  if (!d) {
    for (size_t i = 0; i < m->size1; i++)
      for (size_t j = 0; j < m->size2; j++) m->data[i * m->tda + j] = NAN;
    return;
  }
  if (m->tda == m->size2)
    memcpy(m->data, d, m->size1 * m->size2 * sizeof(double));
  else
    for (size_t i = 0; i < m->size1; i++)
      memcpy(m->data + i * m->tda, d + i * m->size2,
             m->size2 * sizeof(double));
  ad_release(copy);
}

bool ad__gsl_write_checked(const char *op, const char *what,
                           const ad_tensor *t, const gsl_vector *x,
                           gsl_vector *v) {
  ad_tensor *copy;
  const double *d = dense_data(t, &copy);
  if (!d) {
    ad__gsl_fill_nan_vector(v);
    return false;
  }
  /* One pass: copy, and note whether NaN went by. */
  bool nan = false;
  if (v->stride == 1)
    for (size_t i = 0; i < v->size; i++) {
      double e = d[i];
      nan |= isnan(e);
      v->data[i] = e;
    }
  else
    for (size_t i = 0; i < v->size; i++) {
      double e = d[i];
      nan |= isnan(e);
      v->data[i * v->stride] = e;
    }
  ad_release(copy);
  if (!nan) return true;
  ad__gsl_result_ok(op, what, t, x); /* records the message */
  ad__gsl_fill_nan_vector(v);
  return false;
}

void ad__gsl_fill_nan_vector(gsl_vector *v) {
  for (size_t i = 0; i < v->size; i++) v->data[i * v->stride] = NAN;
}

const char *ad__gsl_point(char *buf, const gsl_vector *x) {
  enum { SHOWN = 4 };
  size_t len = 0, cap = AD__GSL_POINT_STR;
  buf[0] = '\0';
  len += (size_t)snprintf(buf + len, cap - len, "(");
  for (size_t i = 0; i < x->size && i < SHOWN && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%.6g", i ? ", " : "",
                            x->data[i * x->stride]);
  if (len < cap && x->size > SHOWN)
    len += (size_t)snprintf(buf + len, cap - len, ", ... %zu elements",
                            x->size);
  if (len < cap) snprintf(buf + len, cap - len, ")");
  return buf;
}

bool ad__gsl_size_ok(const char *op, const char *what, size_t got,
                     size_t want) {
  if (got == want) return true;
  ad__error(AD_ESHAPE,
            "%s: GSL passed %s of %zu elements, the adapter was made for "
            "%zu (does the solver's size match the one given to the "
            "adapter?)",
            op, what, got, want);
  return false;
}

bool ad__gsl_point_ok(const char *op, const gsl_vector *x) {
  for (size_t i = 0; i < x->size; i++)
    if (isnan(x->data[i * x->stride])) {
      /* NaN in x is mostly the echo of an earlier failure reported as
       * NaN: keep that failure's message, as ops given a NULL do. */
      if (ad_error() != AD_OK) return false;
      char b[AD__GSL_POINT_STR];
      ad__error(AD_EINVAL,
                "%s: GSL passed x with NaN at element %zu, x = %s (the "
                "solver diverged after an earlier failure or overflow)",
                op, i, ad__gsl_point(b, x));
      return false;
    }
  return true;
}

bool ad__gsl_result_ok(const char *op, const char *what, const ad_tensor *t,
                       const gsl_vector *x) {
  ad_tensor *copy;
  const double *d = dense_data(t, &copy);
  if (!d) return false;
  int64_t bad = -1;
  for (int64_t i = 0; i < t->numel && bad < 0; i++)
    if (isnan(d[i])) bad = i;
  ad_release(copy);
  if (bad < 0) return true;
  char b[AD__GSL_POINT_STR];
  if (t->numel == 1)
    ad__error(AD_EINVAL, "%s: %s is NaN at x = %s", op, what,
              ad__gsl_point(b, x));
  else
    ad__error(AD_EINVAL, "%s: %s holds NaN at element %lld at x = %s", op,
              what, (long long)bad, ad__gsl_point(b, x));
  return false;
}

ad_tensor *ad__gsl_checked(ad_tensor *x, void *call) {
  ad__gsl_call *c = call;
  unsigned long before = ad__error_count();
  ad_tensor *y = c->f(x, c->ctx);
  if (!y) {
    /* Keep the error f (or an op inside it) recorded: it names the root
     * cause.  A bare NULL gets a message of its own. */
    if (ad__error_count() == before || ad_error() == AD_OK)
      ad__error(AD_EINVAL,
                "%s: the function returned NULL without recording an error",
                c->op);
    return NULL;
  }
  if (y->numel != c->want) {
    char b[AD__SHAPE_STR], xs[AD__SHAPE_STR];
    ad__shape_str(b, y->ndim, y->shape);
    ad__shape_str(xs, x->ndim, x->shape);
    if (c->want == 1)
      ad__error(AD_ESHAPE,
                "%s: the function returned shape %s, not a scalar (it must "
                "map x of shape %s to one value)",
                c->op, b, xs);
    else
      ad__error(AD_ESHAPE,
                "%s: the function returned %lld values (shape %s) for x of "
                "shape %s, expected %lld",
                c->op, (long long)y->numel, b, xs, (long long)c->want);
    return NULL;
  }
  if (c->keep_value && !c->value) c->value = ad_retain(y);
  return y;
}

ad_tensor *ad__gsl_jacobian(ad__gsl_call *call, ad_tensor *x, bool reverse) {
  return reverse ? ad_jacobian(ad__gsl_checked, call, x)
                 : ad_jacfwd(ad__gsl_checked, call, x);
}

bool ad__gsl_dim_ok(const char *op, const char *what, size_t n) {
  if (n >= 1 && n <= (size_t)INT64_MAX) return true;
  ad__error(AD_EINVAL, "%s: %s must be between 1 and INT64_MAX, got %zu",
            op, what, n);
  return false;
}

static bool system_sizes_ok(const char *op, const ad__gsl_system *s,
                            const gsl_vector *x, const gsl_vector *fx,
                            const gsl_matrix *J) {
  if (!ad__gsl_size_ok(op, "x", x->size, s->nin)) return false;
  if (fx && !ad__gsl_size_ok(op, "f(x)", fx->size, s->nout)) return false;
  if (J && (J->size1 != s->nout || J->size2 != s->nin)) {
    ad__error(AD_ESHAPE,
              "%s: GSL passed a Jacobian of %zu x %zu, the adapter was made "
              "for %zu x %zu",
              op, J->size1, J->size2, s->nout, s->nin);
    return false;
  }
  return true;
}

/* On failure GSL gets NaN values as well as the status, because some
 * solvers ignore the status of an evaluation.  What keeps each solver away
 * from its error handler differs: multiroot's newton and gnewton ignore
 * the status of their first evaluation and would factorize a stale zero
 * Jacobian (GSL reports it as singular through the handler), so they get
 * NaN; multifit's trust-region methods return the status, but their
 * dogleg variants would factorize a NaN Jacobian later (a rank error
 * through the handler), so they keep the last good one.  Both choices are
 * checked solver by solver in tests/test_gsl.c. */
static int system_failed(int status, const ad__gsl_system *s, gsl_vector *fx,
                         gsl_matrix *J) {
  if (fx) ad__gsl_fill_nan_vector(fx);
  if (J && s->nan_jacobian) gsl_matrix_set_all(J, NAN);
  return status;
}

int ad__gsl_eval_system(const char *op, const ad__gsl_system *s,
                        const gsl_vector *x, gsl_vector *fx, gsl_matrix *J) {
  if (!system_sizes_ok(op, s, x, fx, J))
    return system_failed(GSL_EBADLEN, s, fx, J);
  if (!ad__gsl_point_ok(op, x)) return system_failed(GSL_EBADFUNC, s, fx, J);
  ad_scope_begin();
  ad__gsl_call call = {s->f, s->ctx, (int64_t)s->nout, op, fx && J, NULL};
  ad_tensor *xt = ad__gsl_tensor(x), *value = NULL, *jac = NULL;
  if (xt && J) {
    jac = ad__gsl_jacobian(&call, xt, s->reverse);
    value = call.value;
  } else if (xt) {
    value = ad__gsl_checked(xt, &call);
  }
  bool ok = (!J || jac) && (!fx || value);
  if (ok && fx) ok = ad__gsl_result_ok(op, "f(x)", value, x);
  if (ok && J) ok = ad__gsl_result_ok(op, "the Jacobian", jac, x);
  if (ok) {
    if (fx) ad__gsl_write_vector(value, fx);
    if (J) ad__gsl_write_matrix(jac, J);
  }
  ad_release(call.value);
  ad_scope_end();
  return ok ? GSL_SUCCESS : system_failed(GSL_EBADFUNC, s, fx, J);
}
