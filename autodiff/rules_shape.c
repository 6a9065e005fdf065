/* Derivative rules of the shape ops: each VJP is the transposed shape op.
 * All these ops are linear, so their JVPs come from the ops themselves. */
#include <stdlib.h>

#include "engine.h"

#define X0 (c->in[0])
#define Y (c->out[0])

static ad_status done(ad_tensor *t) { return t ? AD_OK : ad_error(); }

/* reshape, expand_dims and squeeze only relabel the elements. */
static ad_status reshape_back(const ad__opctx *c, ad_tensor *g,
                              ad_tensor **gin) {
  return done(gin[0] = ad_reshape(g, X0->ndim, X0->shape));
}

ad_status ad__vjp_reshape(const ad__opctx *c, ad_tensor *const *gout,
                          const bool *need, ad_tensor **gin) {
  (void)need;
  return reshape_back(c, gout[0], gin);
}
ad_status ad__vjp_expand_dims(const ad__opctx *c, ad_tensor *const *gout,
                              const bool *need, ad_tensor **gin) {
  (void)need;
  return reshape_back(c, gout[0], gin);
}
ad_status ad__vjp_squeeze(const ad__opctx *c, ad_tensor *const *gout,
                          const bool *need, ad_tensor **gin) {
  (void)need;
  return reshape_back(c, gout[0], gin);
}

ad_status ad__vjp_transpose(const ad__opctx *c, ad_tensor *const *gout,
                            const bool *need, ad_tensor **gin) {
  (void)c, (void)need;
  return done(gin[0] = ad_transpose(gout[0]));
}

ad_status ad__vjp_permute(const ad__opctx *c, ad_tensor *const *gout,
                          const bool *need, ad_tensor **gin) {
  (void)need;
  int inverse[AD_MAX_DIMS];
  for (int i = 0; i < X0->ndim; i++) inverse[c->attr->perm[i]] = i;
  return done(gin[0] = ad_permute(gout[0], inverse));
}

ad_status ad__vjp_broadcast_to(const ad__opctx *c, ad_tensor *const *gout,
                               const bool *need, ad_tensor **gin) {
  (void)need;
  return done(gin[0] = ad__unbroadcast(gout[0], X0));
}

/* slice <-> slice_grad are each other's transposes. */
ad_status ad__vjp_slice(const ad__opctx *c, ad_tensor *const *gout,
                        const bool *need, ad_tensor **gin) {
  (void)need;
  int axis = c->attr->axis < 0 ? c->attr->axis + X0->ndim : c->attr->axis;
  int64_t start = c->attr->start, stop = c->attr->stop, count;
  ad__slice_bounds("ad_slice", X0->shape[axis], &start, &stop,
                   c->attr->step, &count);
  ad__attr a = {.axis = axis, .start = start, .step = c->attr->step,
                .ndim = X0->ndim};
  for (int i = 0; i < X0->ndim; i++) a.shape[i] = X0->shape[i];
  ad_tensor *g = gout[0];
  return done(gin[0] = ad__dispatch(AD__OP_slice_grad, 1, &g, &a));
}

ad_status ad__vjp_slice_grad(const ad__opctx *c, ad_tensor *const *gout,
                             const bool *need, ad_tensor **gin) {
  (void)need;
  const ad__attr *a = c->attr;
  int64_t count = X0->shape[a->axis];
  /* An empty slice: start may be the -1 a negative step normalises to,
   * which ad_slice would read as the last element. */
  if (count == 0) return done(gin[0] = ad_slice(gout[0], a->axis, 0, 0, 1));
  /* One step past the last element; when that overflows (huge steps),
   * any bound beyond the axis does, as slicing clamps it. */
  int64_t stop;
  if (__builtin_mul_overflow(count, a->step, &stop) ||
      __builtin_add_overflow(stop, a->start, &stop))
    stop = a->step > 0 ? INT64_MAX : INT64_MIN / 4;
  /* A negative stop would count from the end: run past the front
   * instead. */
  if (a->step < 0 && stop < 0) stop = INT64_MIN / 4;
  return done(gin[0] = ad_slice(gout[0], a->axis, a->start, stop, a->step));
}

ad_status ad__vjp_concat(const ad__opctx *c, ad_tensor *const *gout,
                         const bool *need, ad_tensor **gin) {
  int axis = c->attr->axis < 0 ? c->attr->axis + X0->ndim : c->attr->axis;
  int64_t offset = 0;
  for (int i = 0; i < c->nin; i++) {
    int64_t len = c->in[i]->shape[axis];
    if (need[i] && !(gin[i] = ad_slice(gout[0], axis, offset, offset + len, 1)))
      return ad_error();
    offset += len;
  }
  return AD_OK;
}

ad_status ad__vjp_stack(const ad__opctx *c, ad_tensor *const *gout,
                        const bool *need, ad_tensor **gin) {
  int axis = c->attr->axis < 0 ? c->attr->axis + Y->ndim : c->attr->axis;
  for (int i = 0; i < c->nin; i++) {
    if (!need[i]) continue;
    gin[i] = ad_squeeze(ad_slice(gout[0], axis, i, i + 1, 1), axis);
    if (!gin[i]) return ad_error();
  }
  return AD_OK;
}

/* gather <-> scatter_add are each other's transposes. */
ad_status ad__vjp_gather(const ad__opctx *c, ad_tensor *const *gout,
                         const bool *need, ad_tensor **gin) {
  (void)need;
  ad__attr a = *c->attr;
  a.axis = a.axis < 0 ? a.axis + X0->ndim : a.axis;
  a.ndim = X0->ndim;
  for (int i = 0; i < X0->ndim; i++) a.shape[i] = X0->shape[i];
  ad_tensor *g = gout[0];
  return done(gin[0] = ad__dispatch(AD__OP_scatter_add, 1, &g, &a));
}

ad_status ad__vjp_scatter_add(const ad__opctx *c, ad_tensor *const *gout,
                              const bool *need, ad_tensor **gin) {
  (void)need;
  const ad__attr *a = c->attr;
  return done(gin[0] = ad_gather(gout[0], a->axis, a->idx, a->n));
}
