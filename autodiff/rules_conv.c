/* Derivative rules of conv2d, max_pool2d and their internal adjoint rows,
 * written with differentiable ops so that they can be differentiated
 * again to any order. */
#include "engine.h"

#define X0 (c->in[0])
#define X1 (c->in[1])

static ad_status ok_or_error(ad_tensor *t) { return t ? AD_OK : ad_error(); }

/* a + b where either may be NULL (an absent term is zero). */
static ad_tensor *add_opt(ad_tensor *a, ad_tensor *b) {
  return a && b ? ad_add(a, b) : a ? a : b;
}

/* ------------------------------------------------------------------------
 * Convolution.  The three rows are the partial derivatives of one
 * trilinear form T(x, w, g) = <conv2d(x, w), g> (same strides and
 * padding):
 *   conv2d(x, w)             = dT/dg,
 *   conv2d_input_grad(g, w)  = dT/dx  (shaped like x),
 *   conv2d_filter_grad(x, g) = dT/dw  (shaped like w).
 * A VJP of any of them with cotangent h is T with h in the output's slot,
 * differentiated in the other two slots; e.g. <input_grad(g, w), h> =
 * T(h, w, g), whose derivatives in g and w are conv2d(h, w) and
 * filter_grad(h, g).  Each row is bilinear, so its JVP is the sum of the
 * row applied with one tangent at a time.
 * ---------------------------------------------------------------------- */

static ad_tensor *conv(const ad__opctx *c, ad_tensor *x, ad_tensor *w) {
  ad_tensor *in[2] = {x, w};
  ad__attr a = {.k = {c->attr->k[0], c->attr->k[1], c->attr->k[2],
                      c->attr->k[3]}};
  return ad__apply(AD__OP_conv2d, 2, in, &a);
}

/* dT/dx at (g, w); shape is x's. */
static ad_tensor *input_grad(const ad__opctx *c, ad_tensor *g, ad_tensor *w,
                             const int64_t *x_shape) {
  ad_tensor *in[2] = {g, w};
  ad__attr a = {.k = {c->attr->k[0], c->attr->k[1], c->attr->k[2],
                      c->attr->k[3]},
                .ndim = 4};
  for (int i = 0; i < 4; i++) a.shape[i] = x_shape[i];
  return ad__apply(AD__OP_conv2d_input_grad, 2, in, &a);
}

/* dT/dw at (x, g); shape is w's. */
static ad_tensor *filter_grad(const ad__opctx *c, ad_tensor *x, ad_tensor *g,
                              const int64_t *w_shape) {
  ad_tensor *in[2] = {x, g};
  ad__attr a = {.k = {c->attr->k[0], c->attr->k[1], c->attr->k[2],
                      c->attr->k[3]},
                .ndim = 4};
  for (int i = 0; i < 4; i++) a.shape[i] = w_shape[i];
  return ad__apply(AD__OP_conv2d_filter_grad, 2, in, &a);
}

/* conv2d(x, w): x-bar = input_grad(g, w), w-bar = filter_grad(x, g). */
ad_status ad__vjp_conv2d(const ad__opctx *c, ad_tensor *const *gout,
                         const bool *need, ad_tensor **gin) {
  if (need[0] && !(gin[0] = input_grad(c, gout[0], X1, X0->shape)))
    return ad_error();
  if (need[1] && !(gin[1] = filter_grad(c, X0, gout[0], X1->shape)))
    return ad_error();
  return AD_OK;
}

ad_status ad__jvp_conv2d(const ad__opctx *c, ad_tensor *const *tin,
                         ad_tensor **tout) {
  ad_tensor *tx = tin[0] ? conv(c, tin[0], X1) : NULL;
  ad_tensor *tw = tin[1] ? conv(c, X0, tin[1]) : NULL;
  if ((tin[0] && !tx) || (tin[1] && !tw)) return ad_error();
  tout[0] = add_opt(tx, tw);
  return ok_or_error(tout[0]);
}

/* input_grad(g, w) with cotangent h (shaped like x): T(h, w, g) gives
 * g-bar = conv2d(h, w) and w-bar = filter_grad(h, g). */
ad_status ad__vjp_conv2d_input_grad(const ad__opctx *c,
                                    ad_tensor *const *gout, const bool *need,
                                    ad_tensor **gin) {
  ad_tensor *h = gout[0];
  if (need[0] && !(gin[0] = conv(c, h, X1))) return ad_error();
  if (need[1] && !(gin[1] = filter_grad(c, h, X0, X1->shape)))
    return ad_error();
  return AD_OK;
}

ad_status ad__jvp_conv2d_input_grad(const ad__opctx *c,
                                    ad_tensor *const *tin, ad_tensor **tout) {
  const int64_t *x_shape = c->attr->shape;
  ad_tensor *tg = tin[0] ? input_grad(c, tin[0], X1, x_shape) : NULL;
  ad_tensor *tw = tin[1] ? input_grad(c, X0, tin[1], x_shape) : NULL;
  if ((tin[0] && !tg) || (tin[1] && !tw)) return ad_error();
  tout[0] = add_opt(tg, tw);
  return ok_or_error(tout[0]);
}

/* filter_grad(x, g) with cotangent h (shaped like w): T(x, h, g) gives
 * x-bar = input_grad(g, h) and g-bar = conv2d(x, h). */
ad_status ad__vjp_conv2d_filter_grad(const ad__opctx *c,
                                     ad_tensor *const *gout, const bool *need,
                                     ad_tensor **gin) {
  ad_tensor *h = gout[0];
  if (need[0] && !(gin[0] = input_grad(c, X1, h, X0->shape)))
    return ad_error();
  if (need[1] && !(gin[1] = conv(c, X0, h))) return ad_error();
  return AD_OK;
}

ad_status ad__jvp_conv2d_filter_grad(const ad__opctx *c,
                                     ad_tensor *const *tin,
                                     ad_tensor **tout) {
  const int64_t *w_shape = c->attr->shape;
  ad_tensor *tx = tin[0] ? filter_grad(c, tin[0], X1, w_shape) : NULL;
  ad_tensor *tg = tin[1] ? filter_grad(c, X0, tin[1], w_shape) : NULL;
  if ((tin[0] && !tx) || (tin[1] && !tg)) return ad_error();
  tout[0] = add_opt(tx, tg);
  return ok_or_error(tout[0]);
}

/* ------------------------------------------------------------------------
 * Max pooling.  Away from ties, max_pool2d(x) reads each window at its
 * first maximum, a position that is locally constant in x: the op is
 * locally the linear map select(x0, .) with x0 frozen.  scatter(x0, .) is
 * its transpose, since both route value o through the same position:
 *   <scatter(x, g), h> = sum_o g_o h[arg_o] = <g, select(x, h)>.
 * x is a constant input of both internal rows.
 * ---------------------------------------------------------------------- */

static ad_tensor *pool_pair(const ad__opctx *c, ad__op_id id, ad_tensor *x,
                            ad_tensor *v) {
  ad_tensor *in[2] = {x, v};
  ad__attr a = {.k = {c->attr->k[0], c->attr->k[1], c->attr->k[2],
                      c->attr->k[3]}};
  return ad__apply(id, 2, in, &a);
}

ad_status ad__vjp_max_pool2d(const ad__opctx *c, ad_tensor *const *gout,
                             const bool *need, ad_tensor **gin) {
  (void)need;
  gin[0] = pool_pair(c, AD__OP_max_pool2d_scatter, X0, gout[0]);
  return ok_or_error(gin[0]);
}

ad_status ad__jvp_max_pool2d(const ad__opctx *c, ad_tensor *const *tin,
                             ad_tensor **tout) {
  tout[0] = pool_pair(c, AD__OP_max_pool2d_select, X0, tin[0]);
  return ok_or_error(tout[0]);
}

ad_status ad__vjp_max_pool2d_scatter(const ad__opctx *c,
                                     ad_tensor *const *gout, const bool *need,
                                     ad_tensor **gin) {
  if (!need[1]) return AD_OK;
  gin[1] = pool_pair(c, AD__OP_max_pool2d_select, X0, gout[0]);
  return ok_or_error(gin[1]);
}

ad_status ad__vjp_max_pool2d_select(const ad__opctx *c,
                                    ad_tensor *const *gout, const bool *need,
                                    ad_tensor **gin) {
  if (!need[1]) return AD_OK;
  gin[1] = pool_pair(c, AD__OP_max_pool2d_scatter, X0, gout[0]);
  return ok_or_error(gin[1]);
}
