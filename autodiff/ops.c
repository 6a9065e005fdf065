/* The public op functions: thin wrappers that hand their row of the op
 * table and their attributes to the dispatcher. */
#include <string.h>

#include "engine.h"

#define UNARY_(name)                                 \
  ad_tensor *ad_##name(ad_tensor *t) {               \
    return ad__dispatch(AD__OP_##name, 1, &t, NULL); \
  }
#define BINARY_(name)                                 \
  ad_tensor *ad_##name(ad_tensor *a, ad_tensor *b) {  \
    ad_tensor *in[2] = {a, b};                        \
    return ad__dispatch(AD__OP_##name, 2, in, NULL);  \
  }

BINARY_(add) BINARY_(sub) BINARY_(mul) BINARY_(div) BINARY_(pow)
BINARY_(maximum) BINARY_(minimum) BINARY_(atan2) BINARY_(mod)
BINARY_(less) BINARY_(greater) BINARY_(equal) BINARY_(matmul)
BINARY_(solve)

UNARY_(neg) UNARY_(exp) UNARY_(log) UNARY_(log1p) UNARY_(expm1) UNARY_(sqrt)
UNARY_(square) UNARY_(abs) UNARY_(sin) UNARY_(cos) UNARY_(tan) UNARY_(asin)
UNARY_(acos) UNARY_(atan) UNARY_(sinh) UNARY_(cosh) UNARY_(tanh)
UNARY_(sigmoid) UNARY_(softplus) UNARY_(relu) UNARY_(erf) UNARY_(sign)
UNARY_(floor) UNARY_(transpose) UNARY_(inv) UNARY_(cholesky) UNARY_(det)
UNARY_(logdet)

static ad_tensor *scalar_op(ad__op_id id, ad_tensor *t, double s0,
                            double s1) {
  ad__attr a = {.s0 = s0, .s1 = s1};
  return ad__dispatch(id, 1, &t, &a);
}

ad_tensor *ad_add_scalar(ad_tensor *t, double s) {
  return scalar_op(AD__OP_add_scalar, t, s, 0);
}
ad_tensor *ad_mul_scalar(ad_tensor *t, double s) {
  return scalar_op(AD__OP_mul_scalar, t, s, 0);
}
ad_tensor *ad_pow_scalar(ad_tensor *t, double p) {
  return scalar_op(AD__OP_pow_scalar, t, p, 0);
}
ad_tensor *ad_clip(ad_tensor *t, double lo, double hi) {
  return scalar_op(AD__OP_clip, t, lo, hi);
}

ad_tensor *ad_where(ad_tensor *cond, ad_tensor *a, ad_tensor *b) {
  ad_tensor *in[3] = {cond, a, b};
  return ad__dispatch(AD__OP_where, 3, in, NULL);
}

/* Reductions share one attribute layout; axes are checked by the
 * kernel. */
static ad_tensor *reduce(ad__op_id id, const char *name, ad_tensor *t,
                         int naxes, const int *axes, bool keepdims) {
  if (naxes < 0 || naxes > AD_MAX_DIMS || (naxes > 0 && !axes)) {
    if (!t) {
      ad__error_null_arg(name, "t");
      return NULL;
    }
    ad__error(AD_EINVAL, "%s: %d axes given as %p (need 0..%d)", name, naxes,
              (const void *)axes, AD_MAX_DIMS);
    return NULL;
  }
  ad__attr a = {.naxes = naxes, .keepdims = keepdims};
  for (int i = 0; i < naxes; i++) a.axes[i] = axes[i];
  return ad__dispatch(id, 1, &t, &a);
}

#define REDUCE_(name)                                                     \
  ad_tensor *ad_##name(ad_tensor *t, int naxes, const int *axes,          \
                       bool keepdims) {                                   \
    return reduce(AD__OP_##name, "ad_" #name, t, naxes, axes, keepdims);  \
  }
REDUCE_(sum) REDUCE_(mean) REDUCE_(prod) REDUCE_(max) REDUCE_(min)
REDUCE_(logsumexp)

ad_tensor *ad_sum_all(ad_tensor *t) { return ad_sum(t, 0, NULL, false); }

static ad_tensor *axis_op(ad__op_id id, ad_tensor *t, int axis) {
  ad__attr a = {.axis = axis};
  return ad__dispatch(id, 1, &t, &a);
}

ad_tensor *ad_argmax(ad_tensor *t, int axis) {
  return axis_op(AD__OP_argmax, t, axis);
}
ad_tensor *ad_softmax(ad_tensor *t, int axis) {
  return axis_op(AD__OP_softmax, t, axis);
}
ad_tensor *ad_log_softmax(ad_tensor *t, int axis) {
  return axis_op(AD__OP_log_softmax, t, axis);
}
ad_tensor *ad_expand_dims(ad_tensor *t, int axis) {
  return axis_op(AD__OP_expand_dims, t, axis);
}
ad_tensor *ad_squeeze(ad_tensor *t, int axis) {
  return axis_op(AD__OP_squeeze, t, axis);
}

static ad_tensor *shape_op(ad__op_id id, const char *name, ad_tensor *t,
                           int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > AD_MAX_DIMS || (ndim > 0 && !shape)) {
    if (!t) {
      ad__error_null_arg(name, "t");
      return NULL;
    }
    ad__error(AD_EINVAL, "%s: target rank %d (shape %p) is invalid", name,
              ndim, (const void *)shape);
    return NULL;
  }
  ad__attr a = {.ndim = ndim};
  for (int i = 0; i < ndim; i++) a.shape[i] = shape[i];
  return ad__dispatch(id, 1, &t, &a);
}

ad_tensor *ad_reshape(ad_tensor *t, int ndim, const int64_t *shape) {
  return shape_op(AD__OP_reshape, "ad_reshape", t, ndim, shape);
}
ad_tensor *ad_broadcast_to(ad_tensor *t, int ndim, const int64_t *shape) {
  return shape_op(AD__OP_broadcast_to, "ad_broadcast_to", t, ndim, shape);
}

ad_tensor *ad_permute(ad_tensor *t, const int *perm) {
  if (!t) {
    ad__error_null_arg("ad_permute", "t");
    return NULL;
  }
  if (!perm && t->ndim > 0) {
    ad__error(AD_EINVAL, "ad_permute: perm is NULL");
    return NULL;
  }
  ad__attr a = {0};
  for (int i = 0; i < t->ndim; i++) a.perm[i] = perm[i];
  return ad__dispatch(AD__OP_permute, 1, &t, &a);
}

ad_tensor *ad_slice(ad_tensor *t, int axis, int64_t start, int64_t stop,
                    int64_t step) {
  ad__attr a = {.axis = axis, .start = start, .stop = stop, .step = step};
  return ad__dispatch(AD__OP_slice, 1, &t, &a);
}

static ad_tensor *join(ad__op_id id, const char *name, int n,
                       ad_tensor *const *ts, int axis) {
  if (n < 1 || !ts) {
    ad__error(AD_EINVAL, "%s: need at least one tensor, got %d", name, n);
    return NULL;
  }
  ad__attr a = {.axis = axis};
  return ad__dispatch(id, n, ts, &a);
}

ad_tensor *ad_concat(int n, ad_tensor *const *ts, int axis) {
  return join(AD__OP_concat, "ad_concat", n, ts, axis);
}
ad_tensor *ad_stack(int n, ad_tensor *const *ts, int axis) {
  return join(AD__OP_stack, "ad_stack", n, ts, axis);
}

ad_tensor *ad_gather(ad_tensor *t, int axis, const int64_t *idx, int64_t n) {
  if (n < 0 || (n > 0 && !idx)) {
    if (!t) {
      ad__error_null_arg("ad_gather", "t");
      return NULL;
    }
    ad__error(AD_EINVAL, "ad_gather: %lld indices given as %p", (long long)n,
              (const void *)idx);
    return NULL;
  }
  ad__attr a = {.axis = axis, .n = n, .idx = idx};
  return ad__dispatch(AD__OP_gather, 1, &t, &a);
}

ad_tensor *ad_conv2d(ad_tensor *x, ad_tensor *w, int sh, int sw, int ph,
                     int pw) {
  ad_tensor *in[2] = {x, w};
  ad__attr a = {.k = {sh, sw, ph, pw}};
  return ad__dispatch(AD__OP_conv2d, 2, in, &a);
}

ad_tensor *ad_max_pool2d(ad_tensor *x, int kh, int kw, int sh, int sw) {
  ad__attr a = {.k = {kh, kw, sh, sw}};
  return ad__dispatch(AD__OP_max_pool2d, 1, &x, &a);
}

ad_tensor *ad_stop_gradient(ad_tensor *t) {
  if (!t) {
    ad__error_null_arg("ad_stop_gradient", "t");
    return NULL;
  }
  return ad__dispatch(AD__OP_identity, 1, &t, NULL);
}
