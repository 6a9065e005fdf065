/* Shape kernels: reshape, transpose, slicing, joining and gathering, as
 * views of the input's storage wherever the layout allows. */
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/* Kernels trust the dispatcher for arity, but a wrong count would read
 * past in[], so it is cheap insurance to check. */
static bool check_arity(const char *op, int nin, int want) {
  if (nin >= want) return true;
  ad__error(AD_EINTERNAL, "%s: expected %d input(s), got %d", op, want, nin);
  return false;
}

static bool any_zero(int ndim, const int64_t *shape) {
  for (int i = 0; i < ndim; i++)
    if (shape[i] == 0) return true;
  return false;
}

/* dst (+)= src over an n-d block; both sides strided.  The innermost axis
 * runs as a plain loop, the outer ones as an odometer. */
static void copy_block(int ndim, const int64_t *shape, double *dst,
                       const int64_t *dstr, const double *src,
                       const int64_t *sstr, bool add) {
  if (any_zero(ndim, shape)) return;
  if (ndim == 0) {
    *dst = add ? *dst + *src : *src;
    return;
  }
  int last = ndim - 1;
  int64_t n = shape[last], ds = dstr[last], ss = sstr[last];
  int64_t idx[AD_MAX_DIMS] = {0};
  for (;;) {
    if (add) {
      for (int64_t i = 0; i < n; i++) dst[i * ds] += src[i * ss];
    } else if (ds == 1 && ss == 1) {
      memcpy(dst, src, (size_t)n * sizeof(double));
    } else {
      for (int64_t i = 0; i < n; i++) dst[i * ds] = src[i * ss];
    }
    int d = last - 1;
    for (; d >= 0; d--) {
      if (++idx[d] < shape[d]) {
        dst += dstr[d];
        src += sstr[d];
        break;
      }
      dst -= dstr[d] * (shape[d] - 1);
      src -= sstr[d] * (shape[d] - 1);
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

/* A fresh contiguous tensor of zeros, or NULL with an error. */
static ad_tensor *alloc_zeros(const char *op, int ndim, const int64_t *shape) {
  ad_tensor *t = ad__alloc(op, ndim, shape);
  if (t) memset(t->data, 0, (size_t)t->numel * sizeof(double));
  return t;
}

/* Validate an attribute target shape (rank and sizes). */
static bool check_target(const char *op, int ndim, const int64_t *shape) {
  return ad__check_shape(op, ndim, shape) == AD_OK;
}

static bool same_shape(int na, const int64_t *sa, int nb, const int64_t *sb) {
  if (na != nb) return false;
  for (int i = 0; i < na; i++)
    if (sa[i] != sb[i]) return false;
  return true;
}

/* ------------------------------------------------------------------------
 * reshape
 * ---------------------------------------------------------------------- */

/* NumPy's no-copy reshape test: groups of old axes that multiply to groups
 * of new axes must be mutually dense, then the new axes can step through
 * the old strides.  Size-1 old axes carry no layout and are dropped. */
static bool nocopy_strides(const ad_tensor *t, int nnew, const int64_t *nshape,
                           int64_t *nstrides) {
  int64_t od[AD_MAX_DIMS], os[AD_MAX_DIMS];
  int nold = 0;
  for (int i = 0; i < t->ndim; i++) {
    if (t->shape[i] != 1) {
      od[nold] = t->shape[i];
      os[nold++] = t->strides[i];
    }
  }
  int oi = 0, oj = 1, ni = 0, nj = 1;
  while (ni < nnew && oi < nold) {
    int64_t np = nshape[ni], op = od[oi];
    while (np != op) {
      if (np < op)
        np *= nshape[nj++];
      else
        op *= od[oj++];
    }
    for (int ok = oi; ok < oj - 1; ok++)
      if (od[ok + 1] * os[ok + 1] != os[ok]) return false;
    nstrides[nj - 1] = os[oj - 1];
    for (int nk = nj - 1; nk > ni; nk--)
      nstrides[nk - 1] = nstrides[nk] * nshape[nk];
    ni = nj++;
    oi = oj++;
  }
  int64_t last = ni >= 1 ? nstrides[ni - 1] : 1;
  for (int nk = ni; nk < nnew; nk++) nstrides[nk] = last;
  return true;
}

ad_tensor *ad__k_reshape(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_reshape";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  int nd = a->ndim;
  if (nd < 0 || nd > AD_MAX_DIMS) {
    ad__error(AD_EINVAL, "%s: rank %d is outside 0..%d", op, nd, AD_MAX_DIMS);
    return NULL;
  }
  int64_t shape[AD_MAX_DIMS];
  int infer = -1;
  bool has_zero = false;
  char bt[AD__SHAPE_STR], bs[AD__SHAPE_STR];
  for (int i = 0; i < nd; i++) {
    shape[i] = a->shape[i];
    if (shape[i] == -1) {
      if (infer >= 0) {
        ad__error(AD_EINVAL, "%s: more than one -1 in shape %s", op,
                  ad__shape_str(bs, nd, a->shape));
        return NULL;
      }
      infer = i;
    } else if (shape[i] < 0) {
      ad__error(AD_EINVAL, "%s: negative size %lld in shape %s", op,
                (long long)shape[i], ad__shape_str(bs, nd, a->shape));
      return NULL;
    }
    has_zero |= shape[i] == 0;
  }
  /* The count of the given sizes.  A 0 among them makes it 0 whatever the
   * others are, and they may multiply past int64 (an empty tensor with
   * huge axes, its 0 last), so the 0 is looked for before any product.
   * Without one, a product that overflows cannot be the input's count. */
  int64_t known = 1;
  for (int i = 0; i < nd && !has_zero; i++) {
    if (i != infer && __builtin_mul_overflow(known, shape[i], &known)) {
      ad__error(AD_ESHAPE, "%s: cannot reshape %s into %s", op,
                ad__shape_str(bt, t->ndim, t->shape),
                ad__shape_str(bs, nd, a->shape));
      return NULL;
    }
  }
  if (has_zero) known = 0;
  if (infer >= 0) {
    if (known == 0 || t->numel % known != 0) {
      ad__error(AD_ESHAPE, "%s: cannot reshape %s into %s", op,
                ad__shape_str(bt, t->ndim, t->shape),
                ad__shape_str(bs, nd, a->shape));
      return NULL;
    }
    shape[infer] = t->numel / known;
    known = t->numel;
  }
  if (known != t->numel) {
    ad__error(AD_ESHAPE, "%s: cannot reshape %s into %s", op,
              ad__shape_str(bt, t->ndim, t->shape),
              ad__shape_str(bs, nd, a->shape));
    return NULL;
  }
  int64_t strides[AD_MAX_DIMS];
  if (t->contiguous || t->numel == 0) {
    ad__dense_strides(nd, shape, strides);
    return ad__view(t, nd, shape, strides, 0);
  }
  if (nocopy_strides(t, nd, shape, strides))
    return ad__view(t, nd, shape, strides, 0);
  ad_tensor *out = ad__alloc(op, nd, shape);
  if (out) ad__gather_contiguous(t, out->data);
  return out;
}

/* ------------------------------------------------------------------------
 * transpose, permute, expand_dims, squeeze, broadcast_to
 * ---------------------------------------------------------------------- */

ad_tensor *ad__k_transpose(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)a;
  if (!check_arity("ad_transpose", nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  int64_t shape[AD_MAX_DIMS], strides[AD_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  memcpy(strides, t->strides, sizeof strides);
  if (t->ndim >= 2) {
    int i = t->ndim - 2, j = t->ndim - 1;
    shape[i] = t->shape[j];
    shape[j] = t->shape[i];
    strides[i] = t->strides[j];
    strides[j] = t->strides[i];
  }
  return ad__view(t, t->ndim, shape, strides, 0);
}

ad_tensor *ad__k_permute(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_permute";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  bool seen[AD_MAX_DIMS] = {false};
  for (int i = 0; i < t->ndim; i++) {
    int p = a->perm[i];
    if (p < 0 || p >= t->ndim || seen[p]) {
      char buf[AD__SHAPE_STR];
      ad__error(AD_EINVAL,
                "%s: perm is not a permutation of 0..%d for shape %s "
                "(entry %d is %d)",
                op, t->ndim - 1, ad__shape_str(buf, t->ndim, t->shape), i, p);
      return NULL;
    }
    seen[p] = true;
  }
  int64_t shape[AD_MAX_DIMS], strides[AD_MAX_DIMS];
  for (int i = 0; i < t->ndim; i++) {
    shape[i] = t->shape[a->perm[i]];
    strides[i] = t->strides[a->perm[i]];
  }
  return ad__view(t, t->ndim, shape, strides, 0);
}

ad_tensor *ad__k_expand_dims(int nin, ad_tensor *const *in,
                             const ad__attr *a) {
  static const char op[] = "ad_expand_dims";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  if (t->ndim >= AD_MAX_DIMS) {
    ad__error(AD_EINVAL, "%s: rank %d is already the maximum %d", op,
              t->ndim, AD_MAX_DIMS);
    return NULL;
  }
  int ax = a->axis < 0 ? a->axis + t->ndim + 1 : a->axis;
  if (ax < 0 || ax > t->ndim) {
    ad__error(AD_EINVAL, "%s: axis %d is out of range for rank %d", op,
              a->axis, t->ndim);
    return NULL;
  }
  int64_t shape[AD_MAX_DIMS], strides[AD_MAX_DIMS];
  for (int i = 0, j = 0; i <= t->ndim; i++) {
    if (i == ax) {
      shape[i] = 1;
      /* Any stride is valid for a size-1 axis; the dense one keeps
       * contiguity obvious to later kernels.  An empty tensor's axes may
       * be huge and the product overflow: its view gets dense strides
       * anyway (ad__view), so 1 stands in. */
      strides[i] = 1;
      if (ax < t->ndim && t->numel > 0 &&
          __builtin_mul_overflow(t->strides[ax], t->shape[ax], &strides[i]))
        strides[i] = 1;
    } else {
      shape[i] = t->shape[j];
      strides[i] = t->strides[j++];
    }
  }
  return ad__view(t, t->ndim + 1, shape, strides, 0);
}

ad_tensor *ad__k_squeeze(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_squeeze";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  int ax = ad__norm_axis(op, a->axis, t->ndim);
  if (ax < 0) return NULL;
  if (t->shape[ax] != 1) {
    char buf[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "%s: axis %d of shape %s has size %lld, not 1", op,
              a->axis, ad__shape_str(buf, t->ndim, t->shape),
              (long long)t->shape[ax]);
    return NULL;
  }
  int64_t shape[AD_MAX_DIMS], strides[AD_MAX_DIMS];
  for (int i = 0, j = 0; i < t->ndim; i++) {
    if (i == ax) continue;
    shape[j] = t->shape[i];
    strides[j++] = t->strides[i];
  }
  return ad__view(t, t->ndim - 1, shape, strides, 0);
}

ad_tensor *ad__k_broadcast_to(int nin, ad_tensor *const *in,
                              const ad__attr *a) {
  static const char op[] = "ad_broadcast_to";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  if (!check_target(op, a->ndim, a->shape)) return NULL;
  int nd = a->ndim, off = nd - t->ndim;
  int64_t strides[AD_MAX_DIMS];
  bool ok = off >= 0;
  for (int i = 0; ok && i < nd; i++) {
    if (i < off) {
      strides[i] = 0;
    } else if (t->shape[i - off] == a->shape[i]) {
      strides[i] = t->strides[i - off];
    } else if (t->shape[i - off] == 1) {
      strides[i] = 0;
    } else {
      ok = false;
    }
  }
  if (!ok) {
    char bt[AD__SHAPE_STR], bs[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "%s: cannot broadcast %s to %s", op,
              ad__shape_str(bt, t->ndim, t->shape),
              ad__shape_str(bs, nd, a->shape));
    return NULL;
  }
  return ad__view(t, nd, a->shape, strides, 0);
}

/* ------------------------------------------------------------------------
 * slice and its transpose
 * ---------------------------------------------------------------------- */

ad_tensor *ad__k_slice(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_slice";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  int ax = ad__norm_axis(op, a->axis, t->ndim);
  if (ax < 0) return NULL;
  int64_t start = a->start, stop = a->stop, count;
  if (ad__slice_bounds(op, t->shape[ax], &start, &stop, a->step, &count) !=
      AD_OK)
    return NULL;
  int64_t shape[AD_MAX_DIMS], strides[AD_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  memcpy(strides, t->strides, sizeof strides);
  shape[ax] = count;
  /* An empty result addresses nothing, and the input's axes may be huge,
   * so that stride x step and start x stride overflow: it gets offset 0
   * (ad__view gives it dense strides).  It may also start one past the
   * end, a pointer that must not be formed.  A non-empty result's stride
   * and offset stay within the storage. */
  bool empty = count == 0 || t->numel == 0;
  /* With at most one element the stride is never followed, and a huge
   * step must not overflow it. */
  if (count > 1 && !empty) strides[ax] = t->strides[ax] * a->step;
  int64_t offset = empty ? 0 : start * t->strides[ax];
  return ad__view(t, t->ndim, shape, strides, offset);
}

ad_tensor *ad__k_slice_grad(int nin, ad_tensor *const *in,
                            const ad__attr *a) {
  static const char op[] = "ad_slice_grad";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *g = in[0];
  if (!check_target(op, a->ndim, a->shape)) return NULL;
  char bg[AD__SHAPE_STR], bs[AD__SHAPE_STR];
  int ax = ad__norm_axis(op, a->axis, a->ndim);
  if (ax < 0) return NULL;
  bool ok = g->ndim == a->ndim;
  for (int i = 0; ok && i < g->ndim; i++)
    if (i != ax && g->shape[i] != a->shape[i]) ok = false;
  if (!ok) {
    ad__error(AD_ESHAPE, "%s: gradient %s does not fit shape %s at axis %d",
              op, ad__shape_str(bg, g->ndim, g->shape),
              ad__shape_str(bs, a->ndim, a->shape), a->axis);
    return NULL;
  }
  int64_t count = g->shape[ax], dim = a->shape[ax];
  if (count > 0) {
    int64_t last;
    bool overflow = __builtin_mul_overflow(count - 1, a->step, &last) ||
                    __builtin_add_overflow(last, a->start, &last);
    if (overflow || a->step == 0 || a->start < 0 || a->start >= dim ||
        last < 0 || last >= dim) {
      ad__error(AD_EINVAL,
                "%s: %lld entries from %lld by step %lld leave axis %d of "
                "size %lld",
                op, (long long)count, (long long)a->start,
                (long long)a->step, a->axis, (long long)dim);
      return NULL;
    }
  }
  /* A unit-step slice with nothing but size-1 axes before it is one
   * contiguous block of the result: zero only around it, so that each
   * element is written once (the backward pass of every x[1:] or x[:-1]
   * runs through here). */
  bool one_block = a->step == 1 && g->contiguous && g->numel > 0;
  for (int i = 0; one_block && i < ax; i++) one_block = a->shape[i] == 1;
  if (one_block) {
    ad_tensor *out = ad__alloc(op, a->ndim, a->shape);
    if (!out) return NULL;
    int64_t inner = out->strides[ax];
    int64_t head = a->start * inner, body = count * inner;
    memset(out->data, 0, (size_t)head * sizeof(double));
    memcpy(out->data + head, g->data, (size_t)body * sizeof(double));
    memset(out->data + head + body, 0,
           (size_t)(out->numel - head - body) * sizeof(double));
    return out;
  }
  ad_tensor *out = alloc_zeros(op, a->ndim, a->shape);
  /* Nothing to copy: an empty g may have a huge axis beside its 0, whose
   * stride x start (or x step) overflows.  A non-empty g fits inside out,
   * and so do those products. */
  if (!out || g->numel == 0) return out;
  int64_t dstr[AD_MAX_DIMS];
  memcpy(dstr, out->strides, sizeof dstr);
  if (count > 1) dstr[ax] *= a->step;
  copy_block(g->ndim, g->shape, out->data + a->start * out->strides[ax], dstr,
             g->data, g->strides, false);
  return out;
}

/* ------------------------------------------------------------------------
 * concat, stack
 * ---------------------------------------------------------------------- */

ad_tensor *ad__k_concat(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_concat";
  if (nin < 1) {
    ad__error(AD_EINVAL, "%s: needs at least one tensor, got %d", op, nin);
    return NULL;
  }
  const ad_tensor *t0 = in[0];
  if (t0->ndim == 0) {
    ad__error(AD_ESHAPE, "%s: cannot concatenate rank-0 tensors", op);
    return NULL;
  }
  int ax = ad__norm_axis(op, a->axis, t0->ndim);
  if (ax < 0) return NULL;
  int64_t shape[AD_MAX_DIMS];
  memcpy(shape, t0->shape, sizeof shape);
  for (int j = 1; j < nin; j++) {
    const ad_tensor *t = in[j];
    bool ok = t->ndim == t0->ndim;
    for (int i = 0; ok && i < t->ndim; i++)
      if (i != ax && t->shape[i] != t0->shape[i]) ok = false;
    if (!ok) {
      char b0[AD__SHAPE_STR], bj[AD__SHAPE_STR];
      ad__error(AD_ESHAPE,
                "%s: tensor %d has shape %s, which does not match %s "
                "outside axis %d",
                op, j, ad__shape_str(bj, t->ndim, t->shape),
                ad__shape_str(b0, t0->ndim, t0->shape), a->axis);
      return NULL;
    }
    if (__builtin_add_overflow(shape[ax], t->shape[ax], &shape[ax])) {
      ad__error(AD_EINVAL, "%s: joined axis size overflows", op);
      return NULL;
    }
  }
  ad_tensor *out = ad__alloc(op, t0->ndim, shape);
  /* An empty result may have huge axes: offset x stride would overflow
   * for what copy_block skips anyway. */
  if (!out || out->numel == 0) return out;
  int64_t at = 0;
  for (int j = 0; j < nin; j++) {
    copy_block(in[j]->ndim, in[j]->shape,
               out->data + at * out->strides[ax], out->strides, in[j]->data,
               in[j]->strides, false);
    at += in[j]->shape[ax];
  }
  return out;
}

ad_tensor *ad__k_stack(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_stack";
  if (nin < 1) {
    ad__error(AD_EINVAL, "%s: needs at least one tensor, got %d", op, nin);
    return NULL;
  }
  const ad_tensor *t0 = in[0];
  if (t0->ndim >= AD_MAX_DIMS) {
    ad__error(AD_EINVAL, "%s: result rank would exceed %d", op, AD_MAX_DIMS);
    return NULL;
  }
  int ax = a->axis < 0 ? a->axis + t0->ndim + 1 : a->axis;
  if (ax < 0 || ax > t0->ndim) {
    ad__error(AD_EINVAL, "%s: axis %d is out of range for rank %d", op,
              a->axis, t0->ndim + 1);
    return NULL;
  }
  for (int j = 1; j < nin; j++) {
    if (!same_shape(in[j]->ndim, in[j]->shape, t0->ndim, t0->shape)) {
      char b0[AD__SHAPE_STR], bj[AD__SHAPE_STR];
      ad__error(AD_ESHAPE, "%s: tensor %d has shape %s, tensor 0 has %s", op,
                j, ad__shape_str(bj, in[j]->ndim, in[j]->shape),
                ad__shape_str(b0, t0->ndim, t0->shape));
      return NULL;
    }
  }
  int64_t shape[AD_MAX_DIMS];
  for (int i = 0, k = 0; i <= t0->ndim; i++)
    shape[i] = i == ax ? nin : t0->shape[k++];
  ad_tensor *out = ad__alloc(op, t0->ndim + 1, shape);
  /* An empty result may have huge axes: j x stride would overflow for
   * what copy_block skips anyway. */
  if (!out || out->numel == 0) return out;
  int64_t dstr[AD_MAX_DIMS];
  for (int i = 0, k = 0; i <= t0->ndim; i++)
    if (i != ax) dstr[k++] = out->strides[i];
  for (int j = 0; j < nin; j++)
    copy_block(t0->ndim, t0->shape, out->data + j * out->strides[ax], dstr,
               in[j]->data, in[j]->strides, false);
  return out;
}

/* ------------------------------------------------------------------------
 * gather and its transpose
 * ---------------------------------------------------------------------- */

/* Check the index list against an axis of size dim. */
static bool check_indices(const char *op, const ad__attr *a, int64_t dim) {
  if (a->n < 0) {
    ad__error(AD_EINVAL, "%s: index count %lld is negative", op,
              (long long)a->n);
    return false;
  }
  if (a->n > 0 && !a->idx) {
    ad__error(AD_EINVAL, "%s: index list is NULL", op);
    return false;
  }
  for (int64_t i = 0; i < a->n; i++) {
    int64_t k = a->idx[i];
    if (k < -dim || k >= dim) {
      ad__error(AD_EINVAL,
                "%s: index %lld (entry %lld) is out of range for axis %d of "
                "size %lld",
                op, (long long)k, (long long)i, a->axis, (long long)dim);
      return false;
    }
  }
  return true;
}

ad_tensor *ad__k_gather(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_gather";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  int ax = ad__norm_axis(op, a->axis, t->ndim);
  if (ax < 0) return NULL;
  int64_t dim = t->shape[ax];
  if (!check_indices(op, a, dim)) return NULL;
  int64_t shape[AD_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  shape[ax] = a->n;
  ad_tensor *out = ad__alloc(op, t->ndim, shape);
  /* An empty result may have huge axes: index x stride would overflow
   * for what copy_block skips anyway.  A non-empty one comes from a
   * non-empty t, whose offsets stay within its storage. */
  if (!out || out->numel == 0) return out;
  shape[ax] = 1;
  for (int64_t i = 0; i < a->n; i++) {
    int64_t k = a->idx[i] < 0 ? a->idx[i] + dim : a->idx[i];
    copy_block(t->ndim, shape, out->data + i * out->strides[ax], out->strides,
               t->data + k * t->strides[ax], t->strides, false);
  }
  return out;
}

ad_tensor *ad__k_scatter_add(int nin, ad_tensor *const *in,
                             const ad__attr *a) {
  static const char op[] = "ad_scatter_add";
  if (!check_arity(op, nin, 1)) return NULL;
  const ad_tensor *g = in[0];
  if (!check_target(op, a->ndim, a->shape)) return NULL;
  int ax = ad__norm_axis(op, a->axis, a->ndim);
  if (ax < 0) return NULL;
  bool ok = g->ndim == a->ndim && g->shape[ax] == a->n;
  for (int i = 0; ok && i < g->ndim; i++)
    if (i != ax && g->shape[i] != a->shape[i]) ok = false;
  if (!ok) {
    char bg[AD__SHAPE_STR], bs[AD__SHAPE_STR];
    ad__error(AD_ESHAPE,
              "%s: gradient %s does not fit shape %s with %lld indices on "
              "axis %d",
              op, ad__shape_str(bg, g->ndim, g->shape),
              ad__shape_str(bs, a->ndim, a->shape), (long long)a->n, a->axis);
    return NULL;
  }
  int64_t dim = a->shape[ax];
  if (!check_indices(op, a, dim)) return NULL;
  ad_tensor *out = alloc_zeros(op, a->ndim, a->shape);
  /* Nothing to add: an empty g may have huge axes, whose index x stride
   * would overflow.  A non-empty g has only in-bounds offsets, and so
   * does out (valid indices make its axis non-empty). */
  if (!out || g->numel == 0) return out;
  int64_t shape[AD_MAX_DIMS];
  memcpy(shape, g->shape, sizeof shape);
  shape[ax] = 1;
  for (int64_t i = 0; i < a->n; i++) {
    int64_t k = a->idx[i] < 0 ? a->idx[i] + dim : a->idx[i];
    copy_block(g->ndim, shape, out->data + k * out->strides[ax], out->strides,
               g->data + i * g->strides[ax], g->strides, true);
  }
  return out;
}

/* ------------------------------------------------------------------------
 * identity
 * ---------------------------------------------------------------------- */

ad_tensor *ad__k_identity(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)a;
  if (!check_arity("ad_stop_gradient", nin, 1)) return NULL;
  const ad_tensor *t = in[0];
  return ad__view(t, t->ndim, t->shape, t->strides, 0);
}
