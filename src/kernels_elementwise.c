/* Forward kernels of the elementwise ops: broadcasting binary ops,
 * comparisons, where, scalar ops and unary maths. */
#include <math.h>

#include "internal.h"
#include "scalar_ops.h"
#include "vmath.h"

/* ------------------------------------------------------------------------
 * Broadcast iteration plan
 *
 * The output is dense; each input gets a stride per output axis (0 where
 * it broadcasts).  Size-1 axes are dropped and adjacent axes that every
 * operand walks densely are merged, so a broadcast such as (2, 3) + (3,)
 * becomes a short outer loop around a long inner one and dense operands
 * collapse into one flat loop.
 * ---------------------------------------------------------------------- */

#define MAX_IN 3


typedef struct plan {
  int ndim;                      /* >= 1 after planning */
  int64_t shape[AD_MAX_DIMS];
  int64_t st[MAX_IN][AD_MAX_DIMS];
} plan;

static void make_plan(plan *p, int nin, ad_tensor *const *in, int nd,
                      const int64_t *shape) {
  int64_t st[MAX_IN][AD_MAX_DIMS];
  for (int k = 0; k < nin; k++) {
    const ad_tensor *t = in[k];
    int off = nd - t->ndim;
    for (int i = 0; i < nd; i++) {
      int j = i - off;
      st[k][i] = (j < 0 || t->shape[j] == 1) ? 0 : t->strides[j];
    }
  }
  int m = 0;
  for (int i = 0; i < nd; i++) {
    if (shape[i] == 1) continue;
    bool merge = m > 0;
    for (int k = 0; k < nin && merge; k++)
      merge = p->st[k][m - 1] == st[k][i] * shape[i];
    if (merge) {
      p->shape[m - 1] *= shape[i];
      for (int k = 0; k < nin; k++) p->st[k][m - 1] = st[k][i];
    } else {
      p->shape[m] = shape[i];
      for (int k = 0; k < nin; k++) p->st[k][m] = st[k][i];
      m++;
    }
  }
  if (m == 0) {
    p->shape[0] = 1;
    for (int k = 0; k < nin; k++) p->st[k][0] = 0;
    m = 1;
  }
  p->ndim = m;
}

/* Advance the outer-axis counter idx (axes 0..ndim-2) by one row and move
 * the input pointers along; the output is dense so it just advances. */
static inline void next_row(const plan *p, int nin, int64_t *idx,
                            const double **ptr) {
  for (int d = p->ndim - 2; d >= 0; d--) {
    if (++idx[d] < p->shape[d]) {
      for (int k = 0; k < nin; k++) ptr[k] += p->st[k][d];
      return;
    }
    idx[d] = 0;
    for (int k = 0; k < nin; k++) ptr[k] -= p->st[k][d] * (p->shape[d] - 1);
  }
}

/* ------------------------------------------------------------------------
 * Binary ops
 *
 * Each op gets its own row loop, specialised for the dense and the
 * one-broadcast-scalar cases, so the compiler inlines the expression and
 * vectorises instead of calling through a pointer per element.
 * ---------------------------------------------------------------------- */

/* s is a constant some ops read (scaled_mul's scale); others ignore it. */
typedef void (*binary_row_fn)(int64_t n, const double *restrict x,
                              int64_t sx, const double *restrict y,
                              int64_t sy, double *restrict o, double s);


#define BINARY_OPS(X)                                   \
  X(add, "ad_add", a + b)                               \
  X(sub, "ad_sub", a - b)                               \
  X(mul, "ad_mul", a * b)                               \
  X(div, "ad_div", a / b)                               \
  X(pow, "ad_pow", pow(a, b))                           \
  X(maximum, "ad_maximum", AD__MAXIMUM(a, b))               \
  X(minimum, "ad_minimum", AD__MINIMUM(a, b))               \
  X(atan2, "ad_atan2", atan2(a, b))                     \
  X(mod, "ad_mod", ad__mod_floor(a, b))                     \
  X(less, "ad_less", a < b ? 1.0 : 0.0)                 \
  X(greater, "ad_greater", a > b ? 1.0 : 0.0)           \
  X(equal, "ad_equal", a == b ? 1.0 : 0.0)                 \
  X(scaled_mul, "ad_scaled_mul", s * a * b)               \
  X(tanh_grad, "ad_tanh_grad", a * (1.0 - b * b))         \
  X(sigmoid_grad, "ad_sigmoid_grad", a * (b - b * b))

#define BINARY_ROW(name, opname, expr)                                    \
  AD__VECTORIZE static void row_##name(                                    \
      int64_t n, const double *restrict x, int64_t sx,                     \
      const double *restrict y, int64_t sy, double *restrict o, double s) { \
    (void)s;                                                              \
    if (sx == 1 && sy == 1) {                                             \
      for (int64_t i = 0; i < n; i++) {                                   \
        double a = x[i], b = y[i];                                        \
        o[i] = (expr);                                                    \
      }                                                                   \
    } else if (sx == 1 && sy == 0) {                                      \
      const double b = y[0];                                              \
      for (int64_t i = 0; i < n; i++) {                                   \
        double a = x[i];                                                  \
        o[i] = (expr);                                                    \
      }                                                                   \
    } else if (sx == 0 && sy == 1) {                                      \
      const double a = x[0];                                              \
      for (int64_t i = 0; i < n; i++) {                                   \
        double b = y[i];                                                  \
        o[i] = (expr);                                                    \
      }                                                                   \
    } else {                                                              \
      for (int64_t i = 0; i < n; i++) {                                   \
        double a = x[i * sx], b = y[i * sy];                              \
        o[i] = (expr);                                                    \
      }                                                                   \
    }                                                                     \
  }
BINARY_OPS(BINARY_ROW)
#undef BINARY_ROW

static bool same_shape(const ad_tensor *x, const ad_tensor *y) {
  if (x->ndim != y->ndim) return false;
  for (int i = 0; i < x->ndim; i++)
    if (x->shape[i] != y->shape[i]) return false;
  return true;
}

/* static inline with a constant row function: each kernel below gets its
 * own copy with the row loop called directly. */
static inline ad_tensor *binary(const char *op, ad_tensor *const *in,
                                binary_row_fn row, double s) {
  const ad_tensor *x = in[0], *y = in[1];
  ad_tensor *out;
  /* Fast paths: dense operands of one shape, or a dense operand with a
   * one-element partner of no higher rank (the result has the dense
   * operand's shape). */
  if (x->contiguous && y->contiguous && same_shape(x, y)) {
    out = ad__alloc(op, x->ndim, x->shape);
    if (out) row(x->numel, x->data, 1, y->data, 1, out->data, s);
    return out;
  }
  if (y->numel == 1 && x->contiguous && y->ndim <= x->ndim) {
    out = ad__alloc(op, x->ndim, x->shape);
    if (out) row(x->numel, x->data, 1, y->data, 0, out->data, s);
    return out;
  }
  if (x->numel == 1 && y->contiguous && x->ndim <= y->ndim) {
    out = ad__alloc(op, y->ndim, y->shape);
    if (out) row(y->numel, x->data, 0, y->data, 1, out->data, s);
    return out;
  }
  int nd;
  int64_t shape[AD_MAX_DIMS];
  if (ad__broadcast_shapes(op, x->ndim, x->shape, y->ndim, y->shape, &nd,
                           shape) != AD_OK)
    return NULL;
  out = ad__alloc(op, nd, shape);
  if (!out || out->numel == 0) return out;
  plan p;
  make_plan(&p, 2, in, nd, shape);
  int64_t idx[AD_MAX_DIMS] = {0};
  const double *ptr[2] = {x->data, y->data};
  int last = p.ndim - 1;
  int64_t n = p.shape[last], rows = out->numel / n;
  double *o = out->data;
  for (int64_t r = 0; r < rows; r++, o += n) {
    row(n, ptr[0], p.st[0][last], ptr[1], p.st[1][last], o, s);
    next_row(&p, 2, idx, ptr);
  }
  return out;
}

#define BINARY_KERNEL(name, opname, expr)                                 \
  ad_tensor *ad__k_##name(int nin, ad_tensor *const *in,                  \
                          const ad__attr *a) {                            \
    (void)nin;                                                            \
    return binary(opname, in, row_##name, a ? a->s0 : 0.0);               \
  }
BINARY_OPS(BINARY_KERNEL)
#undef BINARY_KERNEL

/* ------------------------------------------------------------------------
 * where(cond, a, b): three-way broadcast
 * ---------------------------------------------------------------------- */

AD__VECTORIZE static void row_where(int64_t n, const double *restrict c,
                                   int64_t sc, const double *restrict x,
                                   int64_t sx, const double *restrict y,
                                   int64_t sy, double *restrict o) {
  if (sc == 1 && sx == 1 && sy == 1) {
    for (int64_t i = 0; i < n; i++) o[i] = c[i] != 0 ? x[i] : y[i];
  } else {
    for (int64_t i = 0; i < n; i++)
      o[i] = c[i * sc] != 0 ? x[i * sx] : y[i * sy];
  }
}

ad_tensor *ad__k_where(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)nin;
  (void)a;
  const ad_tensor *c = in[0], *x = in[1], *y = in[2];
  int nd;
  int64_t shape[AD_MAX_DIMS];
  if (ad__broadcast_shapes("ad_where", c->ndim, c->shape, x->ndim, x->shape,
                           &nd, shape) != AD_OK)
    return NULL;
  int nd2;
  int64_t shape2[AD_MAX_DIMS];
  if (ad__broadcast_shapes("ad_where", nd, shape, y->ndim, y->shape, &nd2,
                           shape2) != AD_OK)
    return NULL;
  ad_tensor *out = ad__alloc("ad_where", nd2, shape2);
  if (!out || out->numel == 0) return out;
  plan p;
  make_plan(&p, 3, in, nd2, shape2);
  int64_t idx[AD_MAX_DIMS] = {0};
  const double *ptr[3] = {c->data, x->data, y->data};
  int last = p.ndim - 1;
  int64_t n = p.shape[last], rows = out->numel / n;
  double *o = out->data;
  for (int64_t r = 0; r < rows; r++, o += n) {
    row_where(n, ptr[0], p.st[0][last], ptr[1], p.st[1][last], ptr[2],
              p.st[2][last], o);
    next_row(&p, 3, idx, ptr);
  }
  return out;
}

/* ------------------------------------------------------------------------
 * Unary ops (including the scalar-parameter ones: s and h are the op's
 * attributes s0 and s1).
 * ---------------------------------------------------------------------- */

typedef void (*unary_row_fn)(int64_t n, const double *restrict x,
                             int64_t sx, double *restrict o, double s,
                             double h);


#define UNARY_OPS(X)                                    \
  X(neg, "ad_neg", -x)                                  \
  X(sqrt, "ad_sqrt", sqrt(x))                           \
  X(square, "ad_square", x * x)                         \
  X(abs, "ad_abs", fabs(x))                             \
  X(sin, "ad_sin", sin(x))                              \
  X(cos, "ad_cos", cos(x))                              \
  X(tan, "ad_tan", tan(x))                              \
  X(asin, "ad_asin", asin(x))                           \
  X(acos, "ad_acos", acos(x))                           \
  X(atan, "ad_atan", atan(x))                           \
  X(sinh, "ad_sinh", sinh(x))                           \
  X(cosh, "ad_cosh", cosh(x))                           \
  X(relu, "ad_relu", (x > 0 || x != x) ? x : 0.0)       \
  X(erf, "ad_erf", erf(x))                              \
  X(sign, "ad_sign", ad__sign(x))                           \
  X(floor, "ad_floor", floor(x))

/* Transcendental ops served by the vectorised routines of vmath.c (within
 * 2 ulp, bitwise the same on every CPU). */
#define VMATH_OPS(X)                                    \
  X(exp, "ad_exp", ad__vexp)                            \
  X(log, "ad_log", ad__vlog)                            \
  X(log1p, "ad_log1p", ad__vlog1p)                      \
  X(expm1, "ad_expm1", ad__vexpm1)                      \
  X(tanh, "ad_tanh", ad__vtanh)                         \
  X(sigmoid, "ad_sigmoid", ad__vsigmoid)                \
  X(softplus, "ad_softplus", ad__vsoftplus)

/* Ops with parameters: s is attribute s0, h is s1. */
#define PARAM_OPS(X)                                    \
  X(add_scalar, "ad_add_scalar", x + s)                 \
  X(mul_scalar, "ad_mul_scalar", x * s)                 \
  X(pow_scalar, "ad_pow_scalar", pow(x, s))             \
  X(reciprocal, "ad_pow_scalar", 1.0 / x)               \
  X(clip, "ad_clip", x < s ? s : x > h ? h : x)

#define UNARY_ROW(name, opname, expr)                                     \
  AD__VECTORIZE static void urow_##name(                                   \
      int64_t n, const double *restrict xs, int64_t sx, double *restrict o, \
      double s, double h) {                                                \
    (void)s;                                                              \
    (void)h;                                                              \
    if (sx == 1) {                                                        \
      for (int64_t i = 0; i < n; i++) {                                   \
        double x = xs[i];                                                 \
        o[i] = (expr);                                                    \
      }                                                                   \
    } else {                                                              \
      for (int64_t i = 0; i < n; i++) {                                   \
        double x = xs[i * sx];                                            \
        o[i] = (expr);                                                    \
      }                                                                   \
    }                                                                     \
  }
UNARY_OPS(UNARY_ROW)
PARAM_OPS(UNARY_ROW)
#undef UNARY_ROW

/* A strided row is gathered into the dense output and transformed there
 * in place, so every layout gets the vector loop and the same bits. */
#define VMATH_ROW(name, opname, vfn)                                      \
  static void urow_##name(int64_t n, const double *restrict xs,           \
                          int64_t sx, double *restrict o, double s,       \
                          double h) {                                     \
    (void)s;                                                              \
    (void)h;                                                              \
    if (sx == 1) {                                                        \
      vfn(xs, o, n);                                                      \
    } else {                                                              \
      for (int64_t i = 0; i < n; i++) o[i] = xs[i * sx];                  \
      vfn(o, o, n);                                                       \
    }                                                                     \
  }
VMATH_OPS(VMATH_ROW)
#undef VMATH_ROW

static inline ad_tensor *unary(const char *op, ad_tensor *const *in,
                               unary_row_fn row, double s, double h) {
  const ad_tensor *x = in[0];
  ad_tensor *out = ad__alloc(op, x->ndim, x->shape);
  if (!out || out->numel == 0) return out;
  if (x->contiguous) {
    row(x->numel, x->data, 1, out->data, s, h);
    return out;
  }
  plan p;
  make_plan(&p, 1, in, x->ndim, x->shape);
  int64_t idx[AD_MAX_DIMS] = {0};
  const double *ptr[1] = {x->data};
  int last = p.ndim - 1;
  int64_t n = p.shape[last], rows = out->numel / n;
  double *o = out->data;
  for (int64_t r = 0; r < rows; r++, o += n) {
    row(n, ptr[0], p.st[0][last], o, s, h);
    next_row(&p, 1, idx, ptr);
  }
  return out;
}

#define UNARY_KERNEL(name, opname, expr)                                  \
  ad_tensor *ad__k_##name(int nin, ad_tensor *const *in,                  \
                          const ad__attr *a) {                            \
    (void)nin;                                                            \
    (void)a;                                                              \
    return unary(opname, in, urow_##name, 0.0, 0.0);                      \
  }
UNARY_OPS(UNARY_KERNEL)
VMATH_OPS(UNARY_KERNEL)
#undef UNARY_KERNEL

ad_tensor *ad__k_add_scalar(int nin, ad_tensor *const *in,
                            const ad__attr *a) {
  (void)nin;
  return unary("ad_add_scalar", in, urow_add_scalar, a->s0, 0.0);
}

ad_tensor *ad__k_mul_scalar(int nin, ad_tensor *const *in,
                            const ad__attr *a) {
  (void)nin;
  return unary("ad_mul_scalar", in, urow_mul_scalar, a->s0, 0.0);
}

/* Squares and reciprocals are common enough (the latter in many
 * derivative rules) to deserve vectorised loops: x * x and 1 / x are the
 * correctly rounded values that pow(x, 2) and pow(x, -1) approximate, and
 * agree with pow at zeros, infinities and NaN.  A libm call per element
 * costs an order of magnitude more. */
ad_tensor *ad__k_pow_scalar(int nin, ad_tensor *const *in,
                            const ad__attr *a) {
  (void)nin;
  if (a->s0 == 2.0) return unary("ad_pow_scalar", in, urow_square, 0, 0);
  if (a->s0 == -1.0)
    return unary("ad_pow_scalar", in, urow_reciprocal, 0, 0);
  return unary("ad_pow_scalar", in, urow_pow_scalar, a->s0, 0.0);
}

ad_tensor *ad__k_clip(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)nin;
  if (isnan(a->s0) || isnan(a->s1)) {
    ad__error(AD_EINVAL, "ad_clip: bounds must not be NaN (lo %g, hi %g)",
              a->s0, a->s1);
    return NULL;
  }
  if (a->s0 > a->s1) {
    ad__error(AD_EINVAL, "ad_clip: lo %g is greater than hi %g", a->s0,
              a->s1);
    return NULL;
  }
  return unary("ad_clip", in, urow_clip, a->s0, a->s1);
}
