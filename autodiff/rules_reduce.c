/* Derivative rules of the reductions and of softmax / log_softmax. */
#include "engine.h"

#define X0 (c->in[0])
#define Y (c->out[0])

/* Mark the axes a reduction collapsed (all of them for naxes == 0). */
static void reduced_axes(const ad__opctx *c, bool *reduced) {
  int ndim = X0->ndim;
  for (int i = 0; i < ndim; i++) reduced[i] = c->attr->naxes == 0;
  for (int i = 0; i < c->attr->naxes; i++) {
    int a = c->attr->axes[i];
    reduced[a < 0 ? a + ndim : a] = true;
  }
}

/* t (shaped like the reduction's output) with the reduced axes restored
 * as size 1, so that it broadcasts against the input. */
static ad_tensor *keep_dims(const ad__opctx *c, ad_tensor *t) {
  if (!t || c->attr->keepdims) return t;
  bool reduced[AD_MAX_DIMS];
  reduced_axes(c, reduced);
  int64_t shape[AD_MAX_DIMS];
  for (int i = 0; i < X0->ndim; i++) shape[i] = reduced[i] ? 1 : X0->shape[i];
  return ad_reshape(t, X0->ndim, shape);
}

/* Sum t (shaped like the input) over the reduced axes into the output's
 * shape: the transpose of keep_dims + broadcasting. */
static ad_tensor *reduce_like_output(const ad__opctx *c, ad_tensor *t) {
  return ad_sum(t, c->attr->naxes, c->attr->axes, c->attr->keepdims);
}

/* Whether the reduced axes are the leading ones (all of them for
 * ad_sum_all): the output's shape is then the input's trailing axes, which
 * broadcasting aligns with the input without restoring size-1 axes. */
static bool reduced_leading(const ad__opctx *c) {
  bool reduced[AD_MAX_DIMS];
  reduced_axes(c, reduced);
  int i = 0;
  while (i < X0->ndim && reduced[i]) i++;
  for (; i < X0->ndim; i++)
    if (reduced[i]) return false;
  return true;
}

/* t (shaped like the reduction's output) in a shape that broadcasts
 * against the input: as it is when the output kept its dimensions or lost
 * only leading ones, else with the reduced axes restored as size 1. */
static ad_tensor *broadcastable(const ad__opctx *c, ad_tensor *t) {
  if (!t || c->attr->keepdims || reduced_leading(c)) return t;
  return keep_dims(c, t);
}

/* g spread over the input's shape (a broadcast view): one op, two when
 * the reduced axes must be restored first. */
static ad_tensor *spread(const ad__opctx *c, ad_tensor *g) {
  return ad_broadcast_to(broadcastable(c, g), X0->ndim, X0->shape);
}

static ad_status done(ad_tensor *t) { return t ? AD_OK : ad_error(); }

ad_status ad__vjp_sum(const ad__opctx *c, ad_tensor *const *gout,
                      const bool *need, ad_tensor **gin) {
  (void)need;
  return done(gin[0] = spread(c, gout[0]));
}

static double reduced_count(const ad__opctx *c) {
  return X0->numel == 0 ? 1.0 : (double)X0->numel / (double)(Y->numel ? Y->numel : 1);
}

ad_status ad__vjp_mean(const ad__opctx *c, ad_tensor *const *gout,
                       const bool *need, ad_tensor **gin) {
  (void)need;
  /* Scale the small cotangent, then spread it: the same values. */
  return done(gin[0] = spread(c, ad_mul_scalar(gout[0],
                                               1.0 / reduced_count(c))));
}

/* A per-group reduction of t (sum or prod over the op's axes), spread back
 * over the input's shape. */
static ad_tensor *group(const ad__opctx *c, ad_tensor *t, bool product) {
  const ad__attr *a = c->attr;
  return spread(c, product ? ad_prod(t, a->naxes, a->axes, a->keepdims)
                           : ad_sum(t, a->naxes, a->axes, a->keepdims));
}

/* d prod / d x_i is the product of the other entries, e_i.  With Z the
 * zero entries of x_i's group, P the product of its non-zero entries and
 * k = |Z|:
 *   i not in Z:  e_i = (P / x_i) * prod_{z in Z} x_z
 *   i in Z:      e_i = P * prod_{z in Z, z != i} x_z
 *                    = P (k = 1), P (S - x_i) with S = sum_{z in Z} x_z
 *                      (k = 2), taken as 0 for k >= 3.
 * Every factor is written with differentiable ops from x, so derivatives
 * of every order are exact with up to two zeros in a group (with three or
 * more, those of order three and above through the zeros are taken as
 * 0). */
static ad_tensor *prod_partials(const ad__opctx *c) {
  ad_tensor *zero = ad_scalar(0.0), *one = ad_scalar(1.0);
  ad_tensor *is_zero = ad_equal(X0, zero);
  ad_tensor *k = group(c, is_zero, false);
  ad_tensor *safe = ad_where(is_zero, one, X0);
  ad_tensor *p = group(c, safe, true);
  ad_tensor *pz = group(c, ad_where(is_zero, X0, one), true);
  ad_tensor *off_zero = ad_mul(ad_div(p, safe), pz);
  ad_tensor *s = group(c, ad_where(is_zero, X0, zero), false);
  ad_tensor *others =
      ad_where(ad_equal(k, one), one,
               ad_where(ad_equal(k, ad_scalar(2.0)), ad_sub(s, X0), zero));
  return ad_where(is_zero, ad_mul(p, others), off_zero);
}

ad_status ad__vjp_prod(const ad__opctx *c, ad_tensor *const *gout,
                       const bool *need, ad_tensor **gin) {
  (void)need;
  return done(gin[0] = ad_mul(spread(c, gout[0]), prod_partials(c)));
}

ad_status ad__jvp_prod(const ad__opctx *c, ad_tensor *const *tin,
                       ad_tensor **tout) {
  return done(tout[0] =
                  reduce_like_output(c, ad_mul(tin[0], prod_partials(c))));
}

/* max/min: the gradient is shared evenly by the k elements that attain
 * the extreme (a subgradient; central differences agree for k = 2). */
static ad_tensor *extreme_weights(const ad__opctx *c) {
  ad_tensor *hit = ad_equal(X0, broadcastable(c, Y));
  ad_tensor *count = ad_sum(hit, c->attr->naxes, c->attr->axes, true);
  return ad_div(hit, count);
}

#define EXTREME_RULES(name)                                                 \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,      \
                           const bool *need, ad_tensor **gin) {             \
    (void)need;                                                             \
    return done(gin[0] = ad_mul(broadcastable(c, gout[0]),                  \
                                extreme_weights(c)));                       \
  }                                                                         \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,       \
                           ad_tensor **tout) {                              \
    return done(tout[0] = reduce_like_output(                               \
                    c, ad_mul(tin[0], extreme_weights(c))));                \
  }
EXTREME_RULES(max)
EXTREME_RULES(min)

/* d logsumexp / dx = softmax over the reduced axes = exp(x - lse).  The
 * result and the cotangent enter by broadcasting (no broadcast_to views):
 * three elementwise ops over the input, one vectorized exp among them. */
static ad_tensor *lse_weights(const ad__opctx *c) {
  return ad_exp(ad_sub(X0, broadcastable(c, Y)));
}

ad_status ad__vjp_logsumexp(const ad__opctx *c, ad_tensor *const *gout,
                            const bool *need, ad_tensor **gin) {
  (void)need;
  return done(gin[0] = ad_mul(broadcastable(c, gout[0]), lse_weights(c)));
}

ad_status ad__jvp_logsumexp(const ad__opctx *c, ad_tensor *const *tin,
                            ad_tensor **tout) {
  return done(tout[0] = reduce_like_output(c, ad_mul(tin[0], lse_weights(c))));
}

/* softmax: y (g - sum(g y)) along the axis, for both rules (the Jacobian
 * is symmetric). */
static ad_tensor *softmax_apply(const ad__opctx *c, ad_tensor *v) {
  int axis = c->attr->axis;
  ad_tensor *dot = ad_sum(ad_mul(v, Y), 1, &axis, true);
  return ad_mul(Y, ad_sub(v, dot));
}

ad_status ad__vjp_softmax(const ad__opctx *c, ad_tensor *const *gout,
                          const bool *need, ad_tensor **gin) {
  (void)need;
  return done(gin[0] = softmax_apply(c, gout[0]));
}

ad_status ad__jvp_softmax(const ad__opctx *c, ad_tensor *const *tin,
                          ad_tensor **tout) {
  return done(tout[0] = softmax_apply(c, tin[0]));
}

/* log_softmax: VJP g - softmax * sum(g); JVP t - sum(softmax * t). */
ad_status ad__vjp_log_softmax(const ad__opctx *c, ad_tensor *const *gout,
                              const bool *need, ad_tensor **gin) {
  (void)need;
  int axis = c->attr->axis;
  ad_tensor *total = ad_sum(gout[0], 1, &axis, true);
  return done(gin[0] = ad_sub(gout[0], ad_mul(ad_exp(Y), total)));
}

ad_status ad__jvp_log_softmax(const ad__opctx *c, ad_tensor *const *tin,
                              ad_tensor **tout) {
  int axis = c->attr->axis;
  ad_tensor *dot = ad_sum(ad_mul(ad_exp(Y), tin[0]), 1, &axis, true);
  return done(tout[0] = ad_sub(tin[0], dot));
}
