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

static ad_tensor *spread(const ad__opctx *c, ad_tensor *g) {
  return ad_broadcast_to(keep_dims(c, g), X0->ndim, X0->shape);
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
  return done(gin[0] = ad_mul_scalar(spread(c, gout[0]),
                                     1.0 / reduced_count(c)));
}

/* d prod / d x_i = prod / x_i: exact away from zeros, which the op table's
 * domain for prod avoids; a zero entry gives a non-finite gradient. */
static ad_tensor *prod_partials(const ad__opctx *c) {
  return ad_div(spread(c, Y), X0);
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
  ad_tensor *hit = ad_equal(X0, spread(c, Y));
  ad_tensor *count = ad_sum(hit, c->attr->naxes, c->attr->axes, true);
  return ad_div(hit, count);
}

#define EXTREME_RULES(name)                                                 \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,      \
                           const bool *need, ad_tensor **gin) {             \
    (void)need;                                                             \
    return done(gin[0] = ad_mul(spread(c, gout[0]), extreme_weights(c)));   \
  }                                                                         \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,       \
                           ad_tensor **tout) {                              \
    return done(tout[0] = reduce_like_output(                               \
                    c, ad_mul(tin[0], extreme_weights(c))));                \
  }
EXTREME_RULES(max)
EXTREME_RULES(min)

/* d logsumexp / dx = softmax over the reduced axes = exp(x - lse). */
static ad_tensor *lse_weights(const ad__opctx *c) {
  return ad_exp(ad_sub(X0, spread(c, Y)));
}

ad_status ad__vjp_logsumexp(const ad__opctx *c, ad_tensor *const *gout,
                            const bool *need, ad_tensor **gin) {
  (void)need;
  return done(gin[0] = ad_mul(spread(c, gout[0]), lse_weights(c)));
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
