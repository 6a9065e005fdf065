/* The functional API (ad_grad, ad_jvp, ad_hessian, ...), built on tapes
 * and forward accumulators. */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* Call f and turn a NULL result without an error into one. */
static ad_tensor *call_f(ad_fn f, void *ctx, ad_tensor *x, const char *op) {
  ad_tensor *y = f(x, ctx);
  if (!y && ad_error() == AD_OK)
    ad__error(AD_EINVAL, "%s: the function returned NULL", op);
  return y;
}

static ad_tensor *call_fn(ad_fn_n f, void *ctx, int n, ad_tensor *const *xs,
                          const char *op) {
  ad_tensor *y = f(n, xs, ctx);
  if (!y && ad_error() == AD_OK)
    ad__error(AD_EINVAL, "%s: the function returned NULL", op);
  return y;
}

static bool check_fn(const void *f, const char *op) {
  if (!f) {
    ad__error(AD_EINVAL, "%s: the function is NULL", op);
    return false;
  }
  return true;
}

static bool check_inputs(int n, ad_tensor *const *xs, const char *op) {
  if (n < 1 || !xs) {
    ad__error(AD_EINVAL, "%s: need at least one input, got %d", op, n);
    return false;
  }
  for (int i = 0; i < n; i++)
    if (!xs[i]) {
      char arg[32];
      snprintf(arg, sizeof arg, "input %d", i);
      ad__error_null_arg(op, arg);
      return false;
    }
  return true;
}

static bool check_scalar(const ad_tensor *y, const char *op) {
  if (y->numel == 1) return true;
  char b[AD__SHAPE_STR];
  ad__error(AD_ESHAPE, "%s: the function returned shape %s, not a scalar",
            op, ad__shape_str(b, y->ndim, y->shape));
  return false;
}

/* A direction must be shaped like the point it is attached to. */
static bool same_shape_as(const ad_tensor *v, const ad_tensor *x,
                          const char *vname, const char *xname,
                          const char *op) {
  if (ad__same_shape(v, x)) return true;
  char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
  ad__error(AD_ESHAPE, "%s: %s has shape %s but %s has %s", op, vname,
            ad__shape_str(a, v->ndim, v->shape), xname,
            ad__shape_str(b, x->ndim, x->shape));
  return false;
}

/* The arguments shared by ad_vjp and ad_jvp: f, a point x and a direction
 * (u or v) to pair with.  Clears *value first. */
static bool check_direction(const void *f, ad_tensor *x, ad_tensor *dir,
                            const char *dir_name, ad_tensor **value,
                            const char *op) {
  if (value) *value = NULL;
  if (!check_fn(f, op) || !check_inputs(1, &x, op)) return false;
  if (!dir) {
    ad__error_null_arg(op, dir_name);
    return false;
  }
  return true;
}

/* Close a tape that f may have left in a bad state, reporting a context
 * left open inside f. */
static bool end_tape(ad_tape *tape, const char *op) {
  if (ad__ctx_find(tape) < 0) return true;
  if (ad__contexts.items[ad__contexts.n - 1].obj != tape) {
    ad__error(AD_ESTATE, "%s: the function left a tape or forward level open",
              op);
    return false;
  }
  return ad_tape_end(tape) == AD_OK;
}

/* Reverse mode over n inputs: grads[i] and *value (both may be NULL
 * arrays/pointers when not wanted), kept in the caller's scope. */
static ad_status reverse(ad_fn_n fn, ad_fn f1, void *ctx, int n,
                         ad_tensor *const *xs, ad_tensor *seed,
                         ad_tensor **grads, ad_tensor **value,
                         const char *op) {
  ad_status st = AD_OK;
  ad_scope_begin();
  ad_tape *tape = ad_tape_begin(0);
  if (!tape) {
    ad_scope_end();
    return ad_error();
  }
  for (int i = 0; i < n && st == AD_OK; i++) st = ad_tape_watch(tape, xs[i]);
  ad_tensor *y = NULL;
  if (st == AD_OK) {
    y = fn ? call_fn(fn, ctx, n, xs, op) : call_f(f1, ctx, xs[0], op);
    if (!y) st = ad_error();
  }
  if (!end_tape(tape, op) && st == AD_OK) st = ad_error();
  if (st == AD_OK && !seed && !check_scalar(y, op)) st = ad_error();
  if (st == AD_OK && seed && !ad__same_shape(seed, y)) {
    char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
    st = ad__error(AD_ESHAPE, "%s: u has shape %s but f(x) has %s", op,
                   ad__shape_str(a, seed->ndim, seed->shape),
                   ad__shape_str(b, y->ndim, y->shape));
  }
  if (st == AD_OK)
    st = ad_tape_gradients(tape, y, seed, n, xs, grads, AD_UNCONNECTED_ZERO);
  ad_tape_free(tape);
  /* All results or none: a result the scope's end frees must not reach
   * the caller. */
  if (st == AD_OK && !ad__keep_reserve(n + 1)) st = ad_error();
  if (st == AD_OK) {
    for (int i = 0; i < n; i++) ad_keep(grads[i]);
    if (value) *value = ad_keep(y);
  } else {
    for (int i = 0; i < n; i++) grads[i] = NULL;
  }
  ad_scope_end();
  return st;
}

ad_tensor *ad_value_and_grad(ad_fn f, void *ctx, ad_tensor *x,
                             ad_tensor **value) {
  const char *op = value ? "ad_value_and_grad" : "ad_grad";
  if (value) *value = NULL;
  if (!check_fn((const void *)(uintptr_t)f, op) || !check_inputs(1, &x, op))
    return NULL;
  ad_tensor *g = NULL;
  if (reverse(NULL, f, ctx, 1, &x, NULL, &g, value, op) != AD_OK) return NULL;
  return g;
}

ad_tensor *ad_grad(ad_fn f, void *ctx, ad_tensor *x) {
  return ad_value_and_grad(f, ctx, x, NULL);
}

ad_tensor *ad_vjp(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *u,
                  ad_tensor **value) {
  const char *op = "ad_vjp";
  if (!check_direction((const void *)(uintptr_t)f, x, u, "u", value, op))
    return NULL;
  ad_tensor *g = NULL;
  if (reverse(NULL, f, ctx, 1, &x, u, &g, value, op) != AD_OK) return NULL;
  return g;
}

ad_status ad_grad_n(ad_fn_n f, void *ctx, int n, ad_tensor *const *xs,
                    ad_tensor **grads, ad_tensor **value) {
  const char *op = "ad_grad_n";
  if (value) *value = NULL;
  if (grads)
    for (int i = 0; i < n; i++) grads[i] = NULL;
  if (!check_fn((const void *)(uintptr_t)f, op) || !check_inputs(n, xs, op))
    return ad_error();
  if (!grads) return ad__error(AD_EINVAL, "%s: grads is NULL", op);
  return reverse(f, NULL, ctx, n, xs, NULL, grads, value, op);
}

/* Forward mode over n inputs: the tangent of f(xs) along vs. */
static ad_status forward(ad_fn_n fn, ad_fn f1, void *ctx, int n,
                         ad_tensor *const *xs, ad_tensor *const *vs,
                         ad_tensor **jvp, ad_tensor **value, const char *op) {
  ad_status st = AD_OK;
  ad_scope_begin();
  ad_fwd *acc = ad_fwd_begin(n, xs, vs);
  if (!acc) {
    ad_scope_end();
    return ad_error();
  }
  ad_tensor *y = fn ? call_fn(fn, ctx, n, xs, op) : call_f(f1, ctx, xs[0], op);
  if (!y) st = ad_error();
  ad_tensor *t = NULL;
  if (st == AD_OK) {
    t = ad_fwd_jvp(acc, y);
    if (!t) st = ad_error();
  }
  if (ad__contexts.items[ad__contexts.n - 1].obj != acc) {
    if (st == AD_OK)
      st = ad__error(AD_ESTATE,
                     "%s: the function left a tape or forward level open",
                     op);
    ad__fwd_discard(acc);
    acc = NULL;
  }
  ad_fwd_end(acc);
  if (st == AD_OK && !ad__keep_reserve(2)) st = ad_error();
  if (st == AD_OK) {
    *jvp = ad_keep(t);
    if (value) *value = ad_keep(y);
  }
  ad_scope_end();
  return st;
}

ad_tensor *ad_jvp(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *v,
                  ad_tensor **value) {
  const char *op = "ad_jvp";
  if (!check_direction((const void *)(uintptr_t)f, x, v, "v", value, op) ||
      !same_shape_as(v, x, "v", "x", op))
    return NULL;
  ad_tensor *t = NULL;
  if (forward(NULL, f, ctx, 1, &x, &v, &t, value, op) != AD_OK) return NULL;
  return t;
}

ad_status ad_jvp_n(ad_fn_n f, void *ctx, int n, ad_tensor *const *xs,
                   ad_tensor *const *vs, ad_tensor **jvp, ad_tensor **value) {
  const char *op = "ad_jvp_n";
  if (value) *value = NULL;
  if (jvp) *jvp = NULL;
  if (!check_fn((const void *)(uintptr_t)f, op) || !check_inputs(n, xs, op))
    return ad_error();
  if (!vs || !jvp)
    return ad__error(AD_EINVAL, "%s: %s is NULL", op, vs ? "jvp" : "vs");
  for (int i = 0; i < n; i++) {
    char name[24];
    snprintf(name, sizeof name, "vs[%d]", i);
    if (!vs[i]) {
      ad__error_null_arg(op, name);
      return ad_error() ? ad_error() : AD_EINVAL;
    }
    if (!same_shape_as(vs[i], xs[i], name, "its input", op))
      return ad_error();
  }
  return forward(f, NULL, ctx, n, xs, vs, jvp, value, op);
}

/* ------------------------------------------------------------------------
 * Jacobians and Hessians
 * ---------------------------------------------------------------------- */

ad_tensor *ad_jacobian(ad_fn f, void *ctx, ad_tensor *x) {
  const char *op = "ad_jacobian";
  if (!check_fn((const void *)(uintptr_t)f, op) || !check_inputs(1, &x, op))
    return NULL;
  ad_scope_begin();
  ad_tensor *result = NULL;
  ad_tape *tape = ad_tape_begin(0);
  if (tape && ad_tape_watch(tape, x) == AD_OK) {
    ad_tensor *y = call_f(f, ctx, x, op);
    bool ended = end_tape(tape, op);
    if (y && ended) result = ad_keep(ad_tape_jacobian(tape, y, x));
  }
  ad_tape_free(tape);
  ad_scope_end();
  return result;
}

static ad_tensor *hvp_column(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *e,
                             ad_tensor **value);

/* Columns col(e_j) for every basis vector e_j of x, stacked into a tensor
 * shaped out_shape + x.shape. */
typedef ad_tensor *(*column_fn)(ad_fn f, void *ctx, ad_tensor *x,
                                ad_tensor *e, ad_tensor **value);

static ad_tensor *by_columns(ad_fn f, void *ctx, ad_tensor *x, column_fn col,
                             const char *op) {
  int64_t n = x->numel;
  ad_tensor **cols = calloc((size_t)(n > 0 ? n : 1), sizeof *cols);
  if (!cols) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  ad_scope_begin();
  ad_tensor *result = NULL, *value = NULL;
  bool ok = true;
  for (int64_t j = 0; j < n && ok; j++) {
    ad_tensor *e = ad_zeros(x->ndim, x->shape);
    if (!e) {
      ok = false;
      break;
    }
    e->data[j] = 1.0;
    cols[j] = col(f, ctx, x, e, j == 0 ? &value : NULL);
    ok = cols[j] != NULL;
  }
  if (ok && n == 0) {
    value = col == hvp_column ? x : call_f(f, ctx, x, op);
    ok = value != NULL;
  }
  if (ok) {
    int64_t shape[2 * AD_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < value->ndim; i++) shape[nd++] = value->shape[i];
    for (int i = 0; i < x->ndim; i++) shape[nd++] = x->shape[i];
    if (nd > AD_MAX_DIMS) {
      ad__error(AD_ESHAPE, "%s: the result would have rank %d, above %d", op,
                nd, AD_MAX_DIMS);
    } else if (n == 0) {
      result = ad_keep(ad_zeros(nd, shape));
    } else {
      ad_tensor *stacked = ad_stack((int)n, cols, value->ndim);
      result = ad_keep(ad_reshape(stacked, nd, shape));
    }
  }
  ad_scope_end();
  free(cols);
  return result;
}

ad_tensor *ad_jacfwd(ad_fn f, void *ctx, ad_tensor *x) {
  const char *op = "ad_jacfwd";
  if (!check_fn((const void *)(uintptr_t)f, op) || !check_inputs(1, &x, op))
    return NULL;
  return by_columns(f, ctx, x, ad_jvp, op);
}

ad_tensor *ad_hvp(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *v) {
  const char *op = "ad_hvp";
  if (!check_fn((const void *)(uintptr_t)f, op) || !check_inputs(1, &x, op))
    return NULL;
  if (!v) {
    ad__error_null_arg(op, "v");
    return NULL;
  }
  if (!same_shape_as(v, x, "v", "x", op)) return NULL;
  /* Forward over reverse: the tangent of the gradient along v. */
  ad_scope_begin();
  ad_tensor *result = NULL;
  ad_fwd *acc = ad_fwd_begin(1, &x, &v);
  if (acc) {
    ad_tensor *g = ad_grad(f, ctx, x);
    if (g) result = ad_keep(ad_fwd_jvp(acc, g));
    ad_fwd_end(acc);
  }
  ad_scope_end();
  return result;
}

static ad_tensor *hvp_column(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *e,
                             ad_tensor **value) {
  if (value) *value = x; /* the Hessian's leading axes are x's */
  return ad_hvp(f, ctx, x, e);
}

ad_tensor *ad_hessian(ad_fn f, void *ctx, ad_tensor *x) {
  const char *op = "ad_hessian";
  if (!check_fn((const void *)(uintptr_t)f, op) || !check_inputs(1, &x, op))
    return NULL;
  return by_columns(f, ctx, x, hvp_column, op);
}
