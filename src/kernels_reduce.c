/* Forward kernels of the reductions (sum, mean, prod, max, min,
 * logsumexp, argmax) and of softmax / log_softmax. */
#include <math.h>

#include "internal.h"
#include "vmath.h"


/* NaN-propagating max/min: x != x is the vectorisable isnan. */
#define MAXNAN(acc, v) (((v) != (v) || (v) > (acc)) ? (v) : (acc))
#define MINNAN(acc, v) (((v) != (v) || (v) < (acc)) ? (v) : (acc))

/* t itself (one more reference) when dense, else a dense copy; unlike
 * ad__contiguous an out-of-memory error names the public op. */
static ad_tensor *dense(const char *op, ad_tensor *t) {
  if (t->contiguous) return ad_retain(t);
  ad_tensor *c = ad__alloc(op, t->ndim, t->shape);
  if (c) ad__gather_contiguous(t, c->data);
  return c;
}

/* ------------------------------------------------------------------------
 * Axis validation and the reduction plan
 * ---------------------------------------------------------------------- */

/* Mark the reduced axes of t in red[]; AD_EINVAL on a bad or repeated
 * axis. */
static bool reduced_axes(const char *op, const ad_tensor *t,
                         const ad__attr *a, bool *red) {
  for (int i = 0; i < AD_MAX_DIMS; i++) red[i] = a->naxes == 0;
  if (a->naxes == 0) return true;
  if (a->naxes < 0 || a->naxes > AD_MAX_DIMS) {
    ad__error(AD_EINVAL, "%s: %d axes given, expected 0..%d", op, a->naxes,
              AD_MAX_DIMS);
    return false;
  }
  for (int i = 0; i < a->naxes; i++) {
    int ax = ad__norm_axis(op, a->axes[i], t->ndim);
    if (ax < 0) return false;
    if (red[ax]) {
      ad__error(AD_EINVAL, "%s: axis %d is repeated (axis %d of rank %d)",
                op, a->axes[i], ax, t->ndim);
      return false;
    }
    red[ax] = true;
  }
  return true;
}

/* The reduction after dropping size-1 axes and merging neighbours of the
 * same kind: the input is walked row-major, and ost gives each axis's
 * stride in the output (0 on reduced axes). */
typedef struct rplan {
  int ndim;
  int64_t shape[AD_MAX_DIMS];
  bool red[AD_MAX_DIMS];
  int64_t ost[AD_MAX_DIMS];
} rplan;

static void make_rplan(rplan *p, const ad_tensor *t, const bool *red) {
  int64_t ost[AD_MAX_DIMS], s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    ost[i] = red[i] ? 0 : s;
    if (!red[i]) s *= t->shape[i];
  }
  int m = 0;
  for (int i = 0; i < t->ndim; i++) {
    if (t->shape[i] == 1) continue;
    if (m > 0 && p->red[m - 1] == red[i]) {
      p->shape[m - 1] *= t->shape[i];
      p->ost[m - 1] = ost[i];
    } else {
      p->shape[m] = t->shape[i];
      p->red[m] = red[i];
      p->ost[m] = ost[i];
      m++;
    }
  }
  if (m == 0) { /* a single element: reduce it into out[0] */
    p->shape[0] = 1;
    p->red[0] = true;
    p->ost[0] = 0;
    m = 1;
  }
  p->ndim = m;
}

typedef enum rop { R_SUM, R_PROD, R_MAX, R_MIN } rop;

/* Pairwise summation as NumPy does it: eight accumulators over blocks of
 * up to 128 values, halving above that, so rounding error grows with
 * log(n) and the inner loop vectorises. */
AD__VECTORIZE static double sum_row(const double *x, int64_t n) {
  if (n < 8) {
    double r = 0.0;
    for (int64_t i = 0; i < n; i++) r += x[i];
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int k = 0; k < 8; k++) r[k] = x[k];
    int64_t i;
    for (i = 8; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; k++) r[k] += x[i + k];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) s += x[i];
    return s;
  }
  int64_t h = (n / 2) & ~(int64_t)7;
  return sum_row(x, h) + sum_row(x + h, n - h);
}

/* One input row (the innermost axis) folded into the output: into the
 * single value o[0] when that axis is reduced, else elementwise into
 * o[0..n). */
AD__VECTORIZE static void fold_row(rop op, bool reduced,
                                  const double *restrict x, int64_t n,
                                  double *restrict o) {
  if (reduced) {
    double acc = o[0];
    switch (op) {
    case R_SUM: acc += sum_row(x, n); break;
    case R_PROD:
      for (int64_t i = 0; i < n; i++) acc *= x[i];
      break;
    case R_MAX:
      for (int64_t i = 0; i < n; i++) acc = MAXNAN(acc, x[i]);
      break;
    case R_MIN:
      for (int64_t i = 0; i < n; i++) acc = MINNAN(acc, x[i]);
      break;
    }
    o[0] = acc;
    return;
  }
  switch (op) {
  case R_SUM:
    for (int64_t i = 0; i < n; i++) o[i] += x[i];
    break;
  case R_PROD:
    for (int64_t i = 0; i < n; i++) o[i] *= x[i];
    break;
  case R_MAX:
    for (int64_t i = 0; i < n; i++) o[i] = MAXNAN(o[i], x[i]);
    break;
  case R_MIN:
    for (int64_t i = 0; i < n; i++) o[i] = MINNAN(o[i], x[i]);
    break;
  }
}

/* The offset into the output of the next input row: an odometer over the
 * outer axes (idx), the output strides turning it into an offset. */
static inline int64_t next_row_offset(const rplan *p, int64_t *idx,
                                      int64_t off) {
  for (int d = p->ndim - 2; d >= 0; d--) {
    if (++idx[d] < p->shape[d]) return off + p->ost[d];
    idx[d] = 0;
    off -= p->ost[d] * (p->shape[d] - 1);
  }
  return off;
}

/* Fold every element of the contiguous input x into out (already holding
 * the op's identity). */
static void reduce_walk(const rplan *p, rop op, const double *x,
                        int64_t numel, double *out) {
  int last = p->ndim - 1;
  int64_t n = p->shape[last], rows = numel / n, off = 0;
  int64_t idx[AD_MAX_DIMS] = {0};
  for (int64_t r = 0; r < rows; r++, x += n) {
    fold_row(op, p->red[last], x, n, out + off);
    off = next_row_offset(p, idx, off);
  }
}

/* d = x - m elementwise, m taken per output as in reduce_walk: logsumexp's
 * shifted input, so that one vectorised exp can run over all of it. */
static void shift_walk(const rplan *p, const double *x, int64_t numel,
                       const double *m, double *d) {
  int last = p->ndim - 1;
  int64_t n = p->shape[last], rows = numel / n, off = 0;
  int64_t idx[AD_MAX_DIMS] = {0};
  for (int64_t r = 0; r < rows; r++, x += n, d += n) {
    if (p->red[last]) {
      double mo = m[off];
      for (int64_t i = 0; i < n; i++) d[i] = x[i] - mo;
    } else {
      for (int64_t i = 0; i < n; i++) d[i] = x[i] - m[off + i];
    }
    off = next_row_offset(p, idx, off);
  }
}

static void fill(double *o, int64_t n, double v) {
  for (int64_t i = 0; i < n; i++) o[i] = v;
}

typedef enum rkind { K_SUM, K_MEAN, K_PROD, K_MAX, K_MIN, K_LSE } rkind;

static ad_tensor *reduce(const char *op, rkind kind, ad_tensor *t,
                         const ad__attr *a) {
  bool red[AD_MAX_DIMS];
  if (!reduced_axes(op, t, a, red)) return NULL;
  int nd = 0;
  int64_t shape[AD_MAX_DIMS];
  /* Whether some reduced axis is empty, and whether the result is: an
   * empty tensor may have huge other axes whose product overflows, so no
   * product of sizes is formed here. */
  bool empty_reduction = false, empty_result = false;
  for (int i = 0; i < t->ndim; i++) {
    if (red[i]) {
      empty_reduction |= t->shape[i] == 0;
      if (a->keepdims) shape[nd++] = 1;
    } else {
      empty_result |= t->shape[i] == 0;
      shape[nd++] = t->shape[i];
    }
  }
  if (empty_reduction && !empty_result && (kind == K_MAX || kind == K_MIN)) {
    int ax = 0;
    while (!(red[ax] && t->shape[ax] == 0)) ax++;
    char buf[AD__SHAPE_STR];
    ad__error(AD_EINVAL, "%s: zero-size reduction over axis %d of shape %s",
              op, ax, ad__shape_str(buf, t->ndim, t->shape));
    return NULL;
  }
  ad_tensor *out = ad__alloc(op, nd, shape);
  if (!out) return NULL;
  double *o = out->data;
  int64_t on = out->numel;
  if (on == 0) return out;

  static const double identity[] = {
      [K_SUM] = 0.0, [K_MEAN] = 0.0, [K_PROD] = 1.0,
      [K_MAX] = -INFINITY, [K_MIN] = INFINITY, [K_LSE] = -INFINITY};
  static const rop first_op[] = {[K_SUM] = R_SUM, [K_MEAN] = R_SUM,
                                 [K_PROD] = R_PROD, [K_MAX] = R_MAX,
                                 [K_MIN] = R_MIN, [K_LSE] = R_MAX};
  fill(o, on, identity[kind]);
  if (t->numel == 0) {
    /* Empty reductions keep the identity; mean is 0/0 and logsumexp of
     * nothing is log 0. */
    if (kind == K_MEAN) fill(o, on, NAN);
    return out;
  }
  ad_tensor *c = dense(op, t);
  if (!c) {
    ad_release(out);
    return NULL;
  }
  rplan p;
  make_rplan(&p, c, red);
  reduce_walk(&p, first_op[kind], c->data, c->numel, o);
  if (kind == K_MEAN) {
    /* Here both input and result have elements, so this count cannot
     * overflow. */
    double inv = (double)on / (double)t->numel;
    for (int64_t i = 0; i < on; i++) o[i] *= inv;
  } else if (kind == K_LSE) {
    /* Second pass: sum exp(x - max) per output, shifted by that output's
     * max so nothing overflows.  The shifted input goes through the
     * vectorised exp of the elementwise ops in one call (a libm call per
     * element cost most of logsumexp's time over short rows), then is
     * summed like ad_sum. */
    ad_tensor *s = ad__alloc(op, nd, shape);
    ad__storage *e = ad__pool_storage(c->numel);
    if (!s || !e) {
      if (e) ad__pool_free_storage(e);
      ad_release(s);
      ad_release(c);
      ad_release(out);
      ad__error(AD_ENOMEM, "%s: out of memory", op);
      return NULL;
    }
    shift_walk(&p, c->data, c->numel, o, e->data);
    ad__vexp(e->data, e->data, c->numel);
    fill(s->data, on, 0.0);
    reduce_walk(&p, R_SUM, e->data, c->numel, s->data);
    ad__pool_free_storage(e);
    for (int64_t i = 0; i < on; i++) {
      /* An infinite max is the answer itself (all -inf gives -inf; +inf
       * gives +inf); a NaN max is NaN either way. */
      if (!isinf(o[i])) o[i] += log(s->data[i]);
    }
    ad_release(s);
  }
  ad_release(c);
  return out;
}

#define REDUCE_KERNEL(name, kind)                                         \
  ad_tensor *ad__k_##name(int nin, ad_tensor *const *in,                  \
                          const ad__attr *a) {                            \
    (void)nin;                                                            \
    return reduce("ad_" #name, kind, in[0], a);                           \
  }
REDUCE_KERNEL(sum, K_SUM)
REDUCE_KERNEL(mean, K_MEAN)
REDUCE_KERNEL(prod, K_PROD)
REDUCE_KERNEL(max, K_MAX)
REDUCE_KERNEL(min, K_MIN)
REDUCE_KERNEL(logsumexp, K_LSE)
#undef REDUCE_KERNEL

/* ------------------------------------------------------------------------
 * Single-axis ops: the input is seen as (outer, n, inner) around the axis.
 * ---------------------------------------------------------------------- */

typedef struct split {
  int axis;
  int64_t outer, n, inner;
} split;

static bool split_axis(const char *op, const ad_tensor *t, int axis,
                       split *s) {
  s->axis = ad__norm_axis(op, axis, t->ndim);
  if (s->axis < 0) return false;
  s->n = t->shape[s->axis];
  /* An empty tensor has nothing to visit, and its other axes may multiply
   * past int64 (a 0 elsewhere, huge axes here): its loops run zero times.
   * A non-empty tensor's products are bounded by its count. */
  if (t->numel == 0) {
    s->outer = s->inner = 0;
    return true;
  }
  s->outer = s->inner = 1;
  for (int i = 0; i < s->axis; i++) s->outer *= t->shape[i];
  for (int i = s->axis + 1; i < t->ndim; i++) s->inner *= t->shape[i];
  return true;
}

ad_tensor *ad__k_argmax(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)nin;
  ad_tensor *t = in[0];
  split s;
  if (!split_axis("ad_argmax", t, a->axis, &s)) return NULL;
  if (s.n == 0) {
    char buf[AD__SHAPE_STR];
    ad__error(AD_EINVAL, "ad_argmax: zero-size axis %d of shape %s", s.axis,
              ad__shape_str(buf, t->ndim, t->shape));
    return NULL;
  }
  int64_t shape[AD_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < t->ndim; i++)
    if (i != s.axis) shape[nd++] = t->shape[i];
  ad_tensor *out = ad__alloc("ad_argmax", nd, shape);
  if (!out || out->numel == 0) return out;
  ad_tensor *c = dense("ad_argmax", t);
  if (!c) {
    ad_release(out);
    return NULL;
  }
  /* Replace the best only on a strictly greater value or a first NaN, and
   * never once the best is NaN: the first maximum wins, NaN counting as
   * the largest. */
  for (int64_t o = 0; o < s.outer; o++) {
    const double *x = c->data + o * s.n * s.inner;
    double *r = out->data + o * s.inner;
    for (int64_t j = 0; j < s.inner; j++) {
      double best = x[j];
      int64_t bi = 0;
      for (int64_t k = 1; k < s.n && best == best; k++) {
        double v = x[k * s.inner + j];
        if (v > best || v != v) {
          best = v;
          bi = k;
        }
      }
      r[j] = (double)bi;
    }
  }
  ad_release(c);
  return out;
}

/* Columns of the (n, inner) block handled together, so the passes over
 * the axis read rows of memory rather than strided columns. */
#define CHUNK 256

static ad_tensor *softmax_like(const char *op, ad_tensor *t, int axis,
                               bool log_form) {
  split s;
  if (!split_axis(op, t, axis, &s)) return NULL;
  ad_tensor *out = ad__alloc(op, t->ndim, t->shape);
  if (!out || out->numel == 0) return out;
  ad_tensor *c = dense(op, t);
  if (!c) {
    ad_release(out);
    return NULL;
  }
  const int64_t n = s.n, inner = s.inner;
  if (inner == 1) {
    /* The usual case (the last axis): each row is contiguous. */
    for (int64_t o = 0; o < s.outer; o++) {
      const double *x = c->data + o * n;
      double *y = out->data + o * n;
      double m = -INFINITY;
      for (int64_t k = 0; k < n; k++) m = MAXNAN(m, x[k]);
      /* exp(x - m) by the elementwise ops' vectorised exp, in y. */
      for (int64_t k = 0; k < n; k++) y[k] = x[k] - m;
      ad__vexp(y, y, n);
      double sum = sum_row(y, n);
      if (log_form) {
        double ls = log(sum);
        for (int64_t k = 0; k < n; k++) y[k] = (x[k] - m) - ls;
      } else {
        double inv = 1.0 / sum;
        for (int64_t k = 0; k < n; k++) y[k] *= inv;
      }
    }
    ad_release(c);
    return out;
  }
  double m[CHUNK], sum[CHUNK];
  for (int64_t o = 0; o < s.outer; o++) {
    const double *x = c->data + o * n * inner;
    double *y = out->data + o * n * inner;
    for (int64_t j0 = 0; j0 < inner; j0 += CHUNK) {
      int64_t w = inner - j0 < CHUNK ? inner - j0 : CHUNK;
      for (int64_t j = 0; j < w; j++) {
        m[j] = -INFINITY;
        sum[j] = 0.0;
      }
      for (int64_t k = 0; k < n; k++) {
        const double *xr = x + k * inner + j0;
        for (int64_t j = 0; j < w; j++) m[j] = MAXNAN(m[j], xr[j]);
      }
      /* Subtracting the max keeps exp in range; the exponentials go
       * into y (vectorised exp, a row of the chunk at a time), softmax
       * scales them afterwards and log_softmax overwrites them. */
      for (int64_t k = 0; k < n; k++) {
        const double *xr = x + k * inner + j0;
        double *yr = y + k * inner + j0;
        for (int64_t j = 0; j < w; j++) yr[j] = xr[j] - m[j];
        ad__vexp(yr, yr, w);
        for (int64_t j = 0; j < w; j++) sum[j] += yr[j];
      }
      if (log_form) {
        /* (x - m) - log(sum) keeps the digits of x - m near the max. */
        for (int64_t j = 0; j < w; j++) sum[j] = log(sum[j]);
        for (int64_t k = 0; k < n; k++) {
          const double *xr = x + k * inner + j0;
          double *yr = y + k * inner + j0;
          for (int64_t j = 0; j < w; j++) yr[j] = (xr[j] - m[j]) - sum[j];
        }
      } else {
        for (int64_t j = 0; j < w; j++) sum[j] = 1.0 / sum[j];
        for (int64_t k = 0; k < n; k++) {
          double *yr = y + k * inner + j0;
          for (int64_t j = 0; j < w; j++) yr[j] *= sum[j];
        }
      }
    }
  }
  ad_release(c);
  return out;
}

ad_tensor *ad__k_softmax(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)nin;
  return softmax_like("ad_softmax", in[0], a->axis, false);
}

ad_tensor *ad__k_log_softmax(int nin, ad_tensor *const *in,
                             const ad__attr *a) {
  (void)nin;
  return softmax_like("ad_log_softmax", in[0], a->axis, true);
}
