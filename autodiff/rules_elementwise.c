/* Derivative rules of the elementwise ops, written with differentiable
 * public ops so that they can be differentiated again. */
#include <math.h>

#include "engine.h"

#define X0 (c->in[0])
#define X1 (c->in[1])
#define Y (c->out[0])

static ad_status ok_or_error(ad_tensor *t) { return t ? AD_OK : ad_error(); }

/* Set gin[i] = unbroadcast(g * d) when input i is needed (d NULL: g). */
static ad_status grad_input(const ad__opctx *c, const bool *need,
                            ad_tensor **gin, int i, ad_tensor *g,
                            ad_tensor *d_or_null) {
  if (!need[i]) return AD_OK;
  ad_tensor *prod = d_or_null ? ad_mul(g, d_or_null) : g;
  gin[i] = ad__unbroadcast_input(c, prod, i);
  return ok_or_error(gin[i]);
}

/* ------------------------------------------------------------------------
 * Unary ops: one derivative f'(x, y) gives both rules: VJP g * f', JVP
 * t * f'.
 * ---------------------------------------------------------------------- */

#define UNARY_RULES(name, deriv_expr)                                      \
  static ad_tensor *deriv_##name(const ad__opctx *c) {                     \
    (void)c;                                                               \
    return deriv_expr;                                                     \
  }                                                                        \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,     \
                           const bool *need, ad_tensor **gin) {            \
    (void)need;                                                            \
    gin[0] = ad_mul(gout[0], deriv_##name(c));                             \
    return ok_or_error(gin[0]);                                            \
  }                                                                        \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,      \
                           ad_tensor **tout) {                             \
    tout[0] = ad_mul(tin[0], deriv_##name(c));                             \
    return ok_or_error(tout[0]);                                           \
  }

/* The same for a derivative c * f'(x, y) with a constant factor c: one
 * fused pass (scaled_mul) instead of a scaling and a product. */
#define SCALED_UNARY_RULES(name, scale, deriv_expr)                        \
  static ad_tensor *deriv_##name(const ad__opctx *c) {                     \
    (void)c;                                                               \
    return deriv_expr;                                                     \
  }                                                                        \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,     \
                           const bool *need, ad_tensor **gin) {            \
    (void)need;                                                            \
    gin[0] = ad__scaled_mul(gout[0], deriv_##name(c), scale);              \
    return ok_or_error(gin[0]);                                            \
  }                                                                        \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,      \
                           ad_tensor **tout) {                             \
    tout[0] = ad__scaled_mul(tin[0], deriv_##name(c), scale);              \
    return ok_or_error(tout[0]);                                           \
  }

ad_tensor *ad__scaled_mul(ad_tensor *a, ad_tensor *b, double s) {
  ad__attr attr = {.s0 = s};
  ad_tensor *in[2] = {a, b};
  return ad__dispatch(AD__OP_scaled_mul, 2, in, &attr);
}

UNARY_RULES(exp, Y)
/* log: g / x, one division (rather than x^-1 by pow_scalar, then a
 * product). */
ad_status ad__vjp_log(const ad__opctx *c, ad_tensor *const *gout,
                      const bool *need, ad_tensor **gin) {
  (void)need;
  gin[0] = ad_div(gout[0], X0);
  return ok_or_error(gin[0]);
}
ad_status ad__jvp_log(const ad__opctx *c, ad_tensor *const *tin,
                      ad_tensor **tout) {
  tout[0] = ad_div(tin[0], X0);
  return ok_or_error(tout[0]);
}
UNARY_RULES(log1p, ad_pow_scalar(ad_add_scalar(X0, 1.0), -1.0))
UNARY_RULES(expm1, ad_add_scalar(Y, 1.0))
SCALED_UNARY_RULES(sqrt, 0.5, ad_pow_scalar(Y, -1.0))
SCALED_UNARY_RULES(square, 2.0, X0)
/* sign(0) = 0: the subgradient of |x| at 0 is taken as 0. */
UNARY_RULES(abs, ad_sign(X0))
UNARY_RULES(sin, ad_cos(X0))
UNARY_RULES(cos, ad_neg(ad_sin(X0)))
UNARY_RULES(tan, ad_add_scalar(ad_square(Y), 1.0))
UNARY_RULES(asin, ad_pow_scalar(ad_add_scalar(ad_neg(ad_square(X0)), 1.0),
                                -0.5))
UNARY_RULES(acos,
            ad_neg(ad_pow_scalar(ad_add_scalar(ad_neg(ad_square(X0)), 1.0),
                                 -0.5)))
UNARY_RULES(atan, ad_pow_scalar(ad_add_scalar(ad_square(X0), 1.0), -1.0))
UNARY_RULES(sinh, ad_cosh(X0))
UNARY_RULES(cosh, ad_sinh(X0))
/* tanh and sigmoid: f' from the output, g f'(y) in one fused pass. */
static ad_tensor *fused_grad(ad__op_id id, ad_tensor *g, ad_tensor *y) {
  ad_tensor *in[2] = {g, y};
  return ad__dispatch(id, 2, in, NULL);
}
#define FUSED_UNARY_RULES(name)                                            \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,     \
                           const bool *need, ad_tensor **gin) {            \
    (void)need;                                                            \
    gin[0] = fused_grad(AD__OP_##name##_grad, gout[0], Y);                 \
    return ok_or_error(gin[0]);                                            \
  }                                                                        \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,      \
                           ad_tensor **tout) {                             \
    tout[0] = fused_grad(AD__OP_##name##_grad, tin[0], Y);                 \
    return ok_or_error(tout[0]);                                           \
  }
FUSED_UNARY_RULES(tanh)
FUSED_UNARY_RULES(sigmoid)
UNARY_RULES(softplus, ad_sigmoid(X0))
SCALED_UNARY_RULES(erf, 1.1283791670955126 /* 2/sqrt(pi) */,
                   ad_exp(ad_neg(ad_square(X0))))
/* relu'(0) = 0, as in PyTorch and TensorFlow. */
UNARY_RULES(relu, ad_greater(X0, ad_scalar(0.0)))

/* Derivative 1 on [lo, hi] (bounds included), 0 outside. */
static ad_tensor *clip_mask(const ad__opctx *c) {
  ad_tensor *below = ad_less(X0, ad_scalar(c->attr->s0));
  ad_tensor *above = ad_greater(X0, ad_scalar(c->attr->s1));
  return ad_add_scalar(ad_neg(ad_add(below, above)), 1.0);
}
UNARY_RULES(clip, clip_mask(c))

/* p * x^(p-1): zero for p == 0 (no 0 * inf at x == 0), the identity for
 * p == 1, else one fused product. */
static ad_tensor *pow_scalar_times(const ad__opctx *c, ad_tensor *v) {
  double p = c->attr->s0;
  if (p == 0.0) return NULL;
  if (p == 1.0) return v;
  return ad__scaled_mul(v, ad_pow_scalar(X0, p - 1.0), p);
}
ad_status ad__vjp_pow_scalar(const ad__opctx *c, ad_tensor *const *gout,
                             const bool *need, ad_tensor **gin) {
  (void)need;
  gin[0] = pow_scalar_times(c, gout[0]);
  return gin[0] || c->attr->s0 == 0.0 ? AD_OK : ad_error();
}
ad_status ad__jvp_pow_scalar(const ad__opctx *c, ad_tensor *const *tin,
                             ad_tensor **tout) {
  tout[0] = pow_scalar_times(c, tin[0]);
  return tout[0] || c->attr->s0 == 0.0 ? AD_OK : ad_error();
}

/* sign and floor are piecewise constant: their derivative is zero, which
 * the engine represents by leaving the result NULL. */
#define ZERO_RULES(name)                                                   \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,     \
                           const bool *need, ad_tensor **gin) {            \
    (void)c, (void)gout, (void)need, (void)gin;                            \
    return AD_OK;                                                          \
  }                                                                        \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,      \
                           ad_tensor **tout) {                             \
    (void)c, (void)tin, (void)tout;                                        \
    return AD_OK;                                                          \
  }
ZERO_RULES(sign)
ZERO_RULES(floor)

ad_status ad__vjp_add_scalar(const ad__opctx *c, ad_tensor *const *gout,
                             const bool *need, ad_tensor **gin) {
  (void)c, (void)need;
  gin[0] = gout[0];
  return AD_OK;
}
ad_status ad__jvp_add_scalar(const ad__opctx *c, ad_tensor *const *tin,
                             ad_tensor **tout) {
  (void)c;
  tout[0] = tin[0];
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * Linear ops: VJP only (their JVP is the op applied to tangents).
 * ---------------------------------------------------------------------- */

ad_status ad__vjp_neg(const ad__opctx *c, ad_tensor *const *gout,
                      const bool *need, ad_tensor **gin) {
  (void)c, (void)need;
  gin[0] = ad_neg(gout[0]);
  return ok_or_error(gin[0]);
}

ad_status ad__vjp_mul_scalar(const ad__opctx *c, ad_tensor *const *gout,
                             const bool *need, ad_tensor **gin) {
  (void)need;
  gin[0] = ad_mul_scalar(gout[0], c->attr->s0);
  return ok_or_error(gin[0]);
}

ad_status ad__vjp_add(const ad__opctx *c, ad_tensor *const *gout,
                      const bool *need, ad_tensor **gin) {
  ad_status st = grad_input(c, need, gin, 0, gout[0], NULL);
  return st ? st : grad_input(c, need, gin, 1, gout[0], NULL);
}

ad_status ad__vjp_sub(const ad__opctx *c, ad_tensor *const *gout,
                      const bool *need, ad_tensor **gin) {
  ad_status st = grad_input(c, need, gin, 0, gout[0], NULL);
  if (st || !need[1]) return st;
  /* Negate after reducing a broadcast input's cotangent, not before: the
   * same values, one pass over the small tensor instead of the large. */
  gin[1] = ad_neg(ad__unbroadcast_input(c, gout[0], 1));
  return ok_or_error(gin[1]);
}

ad_status ad__vjp_where(const ad__opctx *c, ad_tensor *const *gout,
                        const bool *need, ad_tensor **gin) {
  ad_tensor *zero = ad_scalar(0.0);
  if (need[1]) {
    gin[1] = ad__unbroadcast_input(c, ad_where(c->in[0], gout[0], zero), 1);
    if (!gin[1]) return ad_error();
  }
  if (need[2]) {
    gin[2] = ad__unbroadcast_input(c, ad_where(c->in[0], zero, gout[0]), 2);
    if (!gin[2]) return ad_error();
  }
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * Binary ops: partial derivatives da, db give both rules.
 * ---------------------------------------------------------------------- */

/* The partial derivatives of a binary op; either may be NULL when that
 * input is not needed. */
typedef ad_status (*partials_fn)(const ad__opctx *c, bool want_a,
                                 bool want_b, ad_tensor **da,
                                 ad_tensor **db);

static ad_status binary_vjp(const ad__opctx *c, partials_fn partials,
                            ad_tensor *g, const bool *need, ad_tensor **gin) {
  ad_tensor *da = NULL, *db = NULL;
  ad_status st = partials(c, need[0], need[1], &da, &db);
  if (st) return st;
  if (need[0] && !(gin[0] = ad__unbroadcast_input(c, ad_mul(g, da), 0)))
    return ad_error();
  if (need[1] && !(gin[1] = ad__unbroadcast_input(c, ad_mul(g, db), 1)))
    return ad_error();
  return AD_OK;
}

static ad_status binary_jvp(const ad__opctx *c, partials_fn partials,
                            ad_tensor *const *tin, ad_tensor **tout) {
  ad_tensor *da = NULL, *db = NULL;
  ad_status st = partials(c, tin[0] != NULL, tin[1] != NULL, &da, &db);
  if (st) return st;
  ad_tensor *ta = tin[0] ? ad_mul(tin[0], da) : NULL;
  ad_tensor *tb = tin[1] ? ad_mul(tin[1], db) : NULL;
  ad_tensor *t = ta && tb ? ad_add(ta, tb) : ta ? ta : tb;
  /* A tangent of a broadcast input must take the output's shape. */
  if (t && !ad__same_shape(t, Y)) t = ad_broadcast_to(t, Y->ndim, Y->shape);
  tout[0] = t;
  return ok_or_error(t);
}

#define BINARY_RULES(name)                                                 \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,     \
                           const bool *need, ad_tensor **gin) {            \
    return binary_vjp(c, partials_##name, gout[0], need, gin);             \
  }                                                                        \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,      \
                           ad_tensor **tout) {                             \
    return binary_jvp(c, partials_##name, tin, tout);                      \
  }

static ad_status partials_mul(const ad__opctx *c, bool wa, bool wb,
                              ad_tensor **da, ad_tensor **db) {
  (void)wa, (void)wb;
  *da = X1;
  *db = X0;
  return AD_OK;
}

static ad_status partials_div(const ad__opctx *c, bool wa, bool wb,
                              ad_tensor **da, ad_tensor **db) {
  /* 1 / b by one division: pow(b, -1) costs a libm call per element. */
  ad_tensor *recip = ad_div(ad_scalar(1.0), X1);
  if (wa) *da = recip;
  if (wb) *db = ad_neg(ad_mul(Y, recip));
  return (!recip || (wb && !*db)) ? ad_error() : AD_OK;
}

/* d/da a^b = b a^(b-1); d/db a^b = a^b log a, taken as 0 where a == 0
 * (the limit from the right for b > 0). */
static ad_status partials_pow(const ad__opctx *c, bool wa, bool wb,
                              ad_tensor **da, ad_tensor **db) {
  if (wa) {
    *da = ad_mul(X1, ad_pow(X0, ad_add_scalar(X1, -1.0)));
    if (!*da) return ad_error();
  }
  if (wb) {
    ad_tensor *zero = ad_scalar(0.0);
    ad_tensor *is_zero = ad_equal(X0, zero);
    ad_tensor *one = ad_scalar(1.0);
    ad_tensor *safe_a = ad_where(is_zero, one, X0);
    *db = ad_where(is_zero, zero, ad_mul(Y, ad_log(safe_a)));
    if (!*db) return ad_error();
  }
  return AD_OK;
}

/* Ties split the gradient evenly, matching central differences. */
static ad_status partials_maximum(const ad__opctx *c, bool wa, bool wb,
                                  ad_tensor **da, ad_tensor **db) {
  (void)wa, (void)wb;
  ad_tensor *mask = ad_add(ad_greater(X0, X1),
                           ad_mul_scalar(ad_equal(X0, X1), 0.5));
  *da = mask;
  *db = ad_add_scalar(ad_neg(mask), 1.0);
  return ok_or_error(*db);
}

static ad_status partials_minimum(const ad__opctx *c, bool wa, bool wb,
                                  ad_tensor **da, ad_tensor **db) {
  (void)wa, (void)wb;
  ad_tensor *mask =
      ad_add(ad_less(X0, X1), ad_mul_scalar(ad_equal(X0, X1), 0.5));
  *da = mask;
  *db = ad_add_scalar(ad_neg(mask), 1.0);
  return ok_or_error(*db);
}

/* atan2(y, x): d/dy = x / (x^2 + y^2), d/dx = -y / (x^2 + y^2). */
static ad_status partials_atan2(const ad__opctx *c, bool wa, bool wb,
                                ad_tensor **da, ad_tensor **db) {
  ad_tensor *r2 = ad_pow_scalar(ad_add(ad_square(X0), ad_square(X1)), -1.0);
  if (wa) *da = ad_mul(X1, r2);
  if (wb) *db = ad_neg(ad_mul(X0, r2));
  return ((wa && !*da) || (wb && !*db)) ? ad_error() : AD_OK;
}

/* mod(a, b) = a - b floor(a / b): d/da = 1, d/db = -floor(a / b). */
static ad_status partials_mod(const ad__opctx *c, bool wa, bool wb,
                              ad_tensor **da, ad_tensor **db) {
  if (wa) *da = ad_ones(X0->ndim, X0->shape);
  if (wb) *db = ad_neg(ad_floor(ad_div(X0, X1)));
  return ((wa && !*da) || (wb && !*db)) ? ad_error() : AD_OK;
}

BINARY_RULES(mul)
BINARY_RULES(div)
BINARY_RULES(pow)
BINARY_RULES(maximum)
BINARY_RULES(minimum)
BINARY_RULES(atan2)
BINARY_RULES(mod)

/* scaled_mul(a, b) = s a b: bilinear, so each rule is the op again. */
ad_status ad__vjp_scaled_mul(const ad__opctx *c, ad_tensor *const *gout,
                             const bool *need, ad_tensor **gin) {
  double s = c->attr->s0;
  if (need[0] &&
      !(gin[0] = ad__unbroadcast_input(c, ad__scaled_mul(gout[0], X1, s), 0)))
    return ad_error();
  if (need[1] &&
      !(gin[1] = ad__unbroadcast_input(c, ad__scaled_mul(gout[0], X0, s), 1)))
    return ad_error();
  return AD_OK;
}

ad_status ad__jvp_scaled_mul(const ad__opctx *c, ad_tensor *const *tin,
                             ad_tensor **tout) {
  double s = c->attr->s0;
  ad_tensor *ta = tin[0] ? ad__scaled_mul(tin[0], X1, s) : NULL;
  ad_tensor *tb = tin[1] ? ad__scaled_mul(X0, tin[1], s) : NULL;
  ad_tensor *t = ta && tb ? ad_add(ta, tb) : ta ? ta : tb;
  if (t && !ad__same_shape(t, Y)) t = ad_broadcast_to(t, Y->ndim, Y->shape);
  tout[0] = t;
  return ok_or_error(t);
}

/* tanh_grad(g, y) = g (1 - y^2): d/dg = 1 - y^2, d/dy = -2 g y. */
static ad_status partials_tanh_grad(const ad__opctx *c, bool wa, bool wb,
                                    ad_tensor **da, ad_tensor **db) {
  if (wa) *da = ad_add_scalar(ad_neg(ad_square(X1)), 1.0);
  if (wb) *db = ad__scaled_mul(X0, X1, -2.0);
  return ((wa && !*da) || (wb && !*db)) ? ad_error() : AD_OK;
}

/* sigmoid_grad(g, y) = g y (1 - y): d/dg = y (1 - y), d/dy = g (1 - 2y). */
static ad_status partials_sigmoid_grad(const ad__opctx *c, bool wa, bool wb,
                                       ad_tensor **da, ad_tensor **db) {
  if (wa) *da = ad_sub(X1, ad_square(X1));
  if (wb) *db = ad_mul(X0, ad_add_scalar(ad_mul_scalar(X1, -2.0), 1.0));
  return ((wa && !*da) || (wb && !*db)) ? ad_error() : AD_OK;
}

BINARY_RULES(tanh_grad)
BINARY_RULES(sigmoid_grad)
