/* Convolution and max-pooling kernels (NHWC data, HWIO filters): conv2d by
 * im2col + BLAS, its two adjoints, and first-maximum pooling. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "internal.h"

/* im2col scratch is produced in row blocks of at most this many doubles
 * (16 MiB), so a large batch never needs a whole column matrix. */
#define CHUNK_ELEMS ((int64_t)1 << 21)

static bool check_arity(const char *op, int nin, int want) {
  if (nin >= want) return true;
  ad__error(AD_EINTERNAL, "%s: expected %d input(s), got %d", op, want, nin);
  return false;
}

/* Sizes of one convolution: x (N,H,W,C), w (KH,KW,C,O), out (N,OH,OW,O). */
typedef struct geom {
  int64_t N, H, W, C, KH, KW, O, OH, OW, sh, sw, ph, pw;
  int64_t M, K; /* im2col rows (N*OH*OW) and columns (KH*KW*C) */
} geom;

static bool check_conv_params(const char *op, const int64_t *k) {
  if (k[0] < 1 || k[1] < 1 || k[2] < 0 || k[3] < 0) {
    ad__error(AD_EINVAL,
              "%s: strides must be >= 1 and padding >= 0, got strides "
              "(%lld, %lld) and padding (%lld, %lld)",
              op, (long long)k[0], (long long)k[1], (long long)k[2],
              (long long)k[3]);
    return false;
  }
  return true;
}

/* Fill g from the shapes of x and w and the attributes; the shape rule of
 * conv2d and of both of its adjoints. */
static bool conv_geom(const char *op, const int64_t *xs, const int64_t *ws,
                      const int64_t *k, geom *g) {
  char bx[AD__SHAPE_STR], bw[AD__SHAPE_STR];
  if (!check_conv_params(op, k)) return false;
  if (xs[3] != ws[2]) {
    ad__error(AD_ESHAPE,
              "%s: channels differ: x %s has %lld, w %s expects %lld", op,
              ad__shape_str(bx, 4, xs), (long long)xs[3],
              ad__shape_str(bw, 4, ws), (long long)ws[2]);
    return false;
  }
  if (ws[0] < 1 || ws[1] < 1) {
    ad__error(AD_ESHAPE, "%s: filter %s has an empty window", op,
              ad__shape_str(bw, 4, ws));
    return false;
  }
  *g = (geom){.N = xs[0], .H = xs[1], .W = xs[2], .C = xs[3], .KH = ws[0],
              .KW = ws[1], .O = ws[3], .sh = k[0], .sw = k[1], .ph = k[2],
              .pw = k[3]};
  /* Sizes beyond this would overflow the arithmetic below long before
   * they could be allocated. */
  const int64_t big = (int64_t)1 << 40;
  if (g->H > big || g->W > big || g->KH > big || g->KW > big ||
      g->ph > big || g->pw > big || g->sh > big || g->sw > big) {
    ad__error(AD_EINVAL, "%s: sizes of x %s and w %s are too large", op,
              ad__shape_str(bx, 4, xs), ad__shape_str(bw, 4, ws));
    return false;
  }
  int64_t eh = g->H + 2 * g->ph, ew = g->W + 2 * g->pw;
  if (eh < g->KH || ew < g->KW) {
    ad__error(AD_ESHAPE,
              "%s: window %lldx%lld does not fit x %s padded by (%lld, "
              "%lld)",
              op, (long long)g->KH, (long long)g->KW,
              ad__shape_str(bx, 4, xs), (long long)g->ph, (long long)g->pw);
    return false;
  }
  g->OH = (eh - g->KH) / g->sh + 1;
  g->OW = (ew - g->KW) / g->sw + 1;
  if (__builtin_mul_overflow(g->N, g->OH, &g->M) ||
      __builtin_mul_overflow(g->M, g->OW, &g->M) ||
      __builtin_mul_overflow(g->KH, g->KW, &g->K) ||
      __builtin_mul_overflow(g->K, g->C, &g->K)) {
    ad__error(AD_EINVAL, "%s: sizes of x %s and w %s are too large", op,
              ad__shape_str(bx, 4, xs), ad__shape_str(bw, 4, ws));
    return false;
  }
  if (g->K > INT_MAX || g->O > INT_MAX) {
    ad__error(AD_EINVAL, "%s: filter %s exceeds BLAS's int range", op,
              ad__shape_str(bw, 4, ws));
    return false;
  }
  return true;
}

static bool check_rank4(const char *op, const char *name, const ad_tensor *t) {
  if (t->ndim == 4) return true;
  char buf[AD__SHAPE_STR];
  ad__error(AD_ESHAPE, "%s: %s must have rank 4, got %s", op, name,
            ad__shape_str(buf, t->ndim, t->shape));
  return false;
}

/* A 1x1 filter with unit strides and no padding reads x itself as the
 * column matrix. */
static bool is_pointwise(const geom *g) {
  return g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 &&
         g->ph == 0 && g->pw == 0;
}

static int64_t chunk_rows(const geom *g) {
  int64_t r = CHUNK_ELEMS / (g->K > 0 ? g->K : 1);
  if (r < 1) r = 1;
  if (r > g->M) r = g->M;
  return r;
}

/* Rows [r0, r1) of the im2col matrix of dense x into cols (K per row). */
static void im2col(const geom *g, const double *x, int64_t r0, int64_t r1,
                   double *cols) {
  size_t cb = (size_t)g->C * sizeof(double);
  for (int64_t r = r0; r < r1; r++) {
    int64_t ow = r % g->OW, oh = (r / g->OW) % g->OH, n = r / (g->OW * g->OH);
    double *row = cols + (r - r0) * g->K;
    for (int64_t i = 0; i < g->KH; i++) {
      int64_t ih = oh * g->sh - g->ph + i;
      for (int64_t j = 0; j < g->KW; j++) {
        int64_t iw = ow * g->sw - g->pw + j;
        double *dst = row + (i * g->KW + j) * g->C;
        if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
          memset(dst, 0, cb);
        else
          memcpy(dst, x + ((n * g->H + ih) * g->W + iw) * g->C, cb);
      }
    }
  }
}

/* The adjoint of im2col: add rows [r0, r1) of cols into dense dx. */
static void col2im(const geom *g, const double *cols, int64_t r0, int64_t r1,
                   double *dx) {
  for (int64_t r = r0; r < r1; r++) {
    int64_t ow = r % g->OW, oh = (r / g->OW) % g->OH, n = r / (g->OW * g->OH);
    const double *row = cols + (r - r0) * g->K;
    for (int64_t i = 0; i < g->KH; i++) {
      int64_t ih = oh * g->sh - g->ph + i;
      if (ih < 0 || ih >= g->H) continue;
      for (int64_t j = 0; j < g->KW; j++) {
        int64_t iw = ow * g->sw - g->pw + j;
        if (iw < 0 || iw >= g->W) continue;
        const double *src = row + (i * g->KW + j) * g->C;
        double *dst = dx + ((n * g->H + ih) * g->W + iw) * g->C;
        for (int64_t c = 0; c < g->C; c++) dst[c] += src[c];
      }
    }
  }
}

static ad_tensor *scratch(const char *op, int64_t rows, int64_t cols) {
  int64_t len = rows * cols;
  return ad__alloc(op, 1, &len);
}

static void zero(ad_tensor *t) {
  memset(t->data, 0, (size_t)t->numel * sizeof(double));
}

/* ------------------------------------------------------------------------
 * conv2d and its adjoints
 * ---------------------------------------------------------------------- */

ad_tensor *ad__k_conv2d(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_conv2d";
  if (!check_arity(op, nin, 2)) return NULL;
  if (!check_rank4(op, "x", in[0]) || !check_rank4(op, "w", in[1]))
    return NULL;
  geom g;
  if (!conv_geom(op, in[0]->shape, in[1]->shape, a->k, &g)) return NULL;
  int64_t oshape[4] = {g.N, g.OH, g.OW, g.O};
  ad_tensor *out = ad__alloc(op, 4, oshape);
  if (!out || out->numel == 0) return out;
  if (g.K == 0) {
    zero(out);
    return out;
  }
  ad_tensor *x = ad__contiguous(in[0]), *w = ad__contiguous(in[1]);
  ad_tensor *buf = NULL;
  if (!x || !w) goto fail;
  if (is_pointwise(&g)) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g.M, (int)g.O,
                (int)g.K, 1.0, x->data, (int)g.K, w->data, (int)g.O, 0.0,
                out->data, (int)g.O);
  } else {
    int64_t rows = chunk_rows(&g);
    buf = scratch(op, rows, g.K);
    if (!buf) goto fail;
    for (int64_t r0 = 0; r0 < g.M; r0 += rows) {
      int64_t r1 = r0 + rows < g.M ? r0 + rows : g.M;
      im2col(&g, x->data, r0, r1, buf->data);
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0),
                  (int)g.O, (int)g.K, 1.0, buf->data, (int)g.K, w->data,
                  (int)g.O, 0.0, out->data + r0 * g.O, (int)g.O);
    }
  }
  ad_release(buf);
  ad_release(x);
  ad_release(w);
  return out;
fail:
  ad_release(buf);
  ad_release(x);
  ad_release(w);
  ad_release(out);
  return NULL;
}

/* The target shape of an adjoint, from the attributes. */
static bool attr_shape4(const char *op, const char *name, const ad__attr *a) {
  if (a->ndim != 4) {
    ad__error(AD_EINVAL, "%s: %s shape must have rank 4, got rank %d", op,
              name, a->ndim);
    return false;
  }
  return ad__check_shape(op, 4, a->shape) == AD_OK;
}

static bool check_grad_shape(const char *op, const ad_tensor *gt,
                             const geom *g, const int64_t *xs,
                             const int64_t *ws) {
  if (gt->shape[0] == g->N && gt->shape[1] == g->OH && gt->shape[2] == g->OW &&
      gt->shape[3] == g->O)
    return true;
  char bg[AD__SHAPE_STR], bx[AD__SHAPE_STR], bw[AD__SHAPE_STR];
  int64_t os[4] = {g->N, g->OH, g->OW, g->O};
  char bo[AD__SHAPE_STR];
  ad__error(AD_ESHAPE,
            "%s: gradient %s does not match the output %s of x %s with w %s",
            op, ad__shape_str(bg, 4, gt->shape), ad__shape_str(bo, 4, os),
            ad__shape_str(bx, 4, xs), ad__shape_str(bw, 4, ws));
  return false;
}

ad_tensor *ad__k_conv2d_input_grad(int nin, ad_tensor *const *in,
                                   const ad__attr *a) {
  static const char op[] = "ad_conv2d_input_grad";
  if (!check_arity(op, nin, 2)) return NULL;
  if (!check_rank4(op, "g", in[0]) || !check_rank4(op, "w", in[1]) ||
      !attr_shape4(op, "x", a))
    return NULL;
  geom g;
  if (!conv_geom(op, a->shape, in[1]->shape, a->k, &g) ||
      !check_grad_shape(op, in[0], &g, a->shape, in[1]->shape))
    return NULL;
  ad_tensor *dx = ad__alloc(op, 4, a->shape);
  if (!dx || dx->numel == 0) return dx;
  if (g.M == 0 || g.O == 0) {
    zero(dx);
    return dx;
  }
  ad_tensor *gc = ad__contiguous(in[0]), *w = ad__contiguous(in[1]);
  ad_tensor *buf = NULL;
  if (!gc || !w) goto fail;
  if (is_pointwise(&g)) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g.M, (int)g.K,
                (int)g.O, 1.0, gc->data, (int)g.O, w->data, (int)g.O, 0.0,
                dx->data, (int)g.K);
  } else {
    zero(dx);
    int64_t rows = chunk_rows(&g);
    buf = scratch(op, rows, g.K);
    if (!buf) goto fail;
    for (int64_t r0 = 0; r0 < g.M; r0 += rows) {
      int64_t r1 = r0 + rows < g.M ? r0 + rows : g.M;
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0),
                  (int)g.K, (int)g.O, 1.0, gc->data + r0 * g.O, (int)g.O,
                  w->data, (int)g.O, 0.0, buf->data, (int)g.K);
      col2im(&g, buf->data, r0, r1, dx->data);
    }
  }
  ad_release(buf);
  ad_release(gc);
  ad_release(w);
  return dx;
fail:
  ad_release(buf);
  ad_release(gc);
  ad_release(w);
  ad_release(dx);
  return NULL;
}

ad_tensor *ad__k_conv2d_filter_grad(int nin, ad_tensor *const *in,
                                    const ad__attr *a) {
  static const char op[] = "ad_conv2d_filter_grad";
  if (!check_arity(op, nin, 2)) return NULL;
  if (!check_rank4(op, "x", in[0]) || !check_rank4(op, "g", in[1]) ||
      !attr_shape4(op, "w", a))
    return NULL;
  geom g;
  if (!conv_geom(op, in[0]->shape, a->shape, a->k, &g) ||
      !check_grad_shape(op, in[1], &g, in[0]->shape, a->shape))
    return NULL;
  ad_tensor *dw = ad__alloc(op, 4, a->shape);
  if (!dw || dw->numel == 0) return dw;
  if (g.M == 0) {
    zero(dw);
    return dw;
  }
  ad_tensor *x = ad__contiguous(in[0]), *gc = ad__contiguous(in[1]);
  ad_tensor *buf = NULL;
  if (!x || !gc) goto fail;
  if (is_pointwise(&g)) {
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.K, (int)g.O,
                (int)g.M, 1.0, x->data, (int)g.K, gc->data, (int)g.O, 0.0,
                dw->data, (int)g.O);
  } else {
    int64_t rows = chunk_rows(&g);
    buf = scratch(op, rows, g.K);
    if (!buf) goto fail;
    for (int64_t r0 = 0; r0 < g.M; r0 += rows) {
      int64_t r1 = r0 + rows < g.M ? r0 + rows : g.M;
      im2col(&g, x->data, r0, r1, buf->data);
      /* The first block overwrites dw, so it needs no zeroing. */
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.K,
                  (int)g.O, (int)(r1 - r0), 1.0, buf->data, (int)g.K,
                  gc->data + r0 * g.O, (int)g.O, r0 == 0 ? 0.0 : 1.0,
                  dw->data, (int)g.O);
    }
  }
  ad_release(buf);
  ad_release(x);
  ad_release(gc);
  return dw;
fail:
  ad_release(buf);
  ad_release(x);
  ad_release(gc);
  ad_release(dw);
  return NULL;
}

/* ------------------------------------------------------------------------
 * max pooling
 * ---------------------------------------------------------------------- */

typedef struct pool_geom {
  int64_t N, H, W, C, kh, kw, sh, sw, OH, OW;
} pool_geom;

static bool pool_geometry(const char *op, const ad_tensor *x,
                          const int64_t *k, pool_geom *p) {
  if (!check_rank4(op, "x", x)) return false;
  if (k[0] < 1 || k[1] < 1 || k[2] < 1 || k[3] < 1) {
    ad__error(AD_EINVAL,
              "%s: window (%lld, %lld) and strides (%lld, %lld) must be "
              ">= 1",
              op, (long long)k[0], (long long)k[1], (long long)k[2],
              (long long)k[3]);
    return false;
  }
  *p = (pool_geom){.N = x->shape[0], .H = x->shape[1], .W = x->shape[2],
                   .C = x->shape[3], .kh = k[0], .kw = k[1], .sh = k[2],
                   .sw = k[3]};
  if (p->H < p->kh || p->W < p->kw) {
    char buf[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "%s: window %lldx%lld does not fit x %s", op,
              (long long)p->kh, (long long)p->kw,
              ad__shape_str(buf, 4, x->shape));
    return false;
  }
  p->OH = (p->H - p->kh) / p->sh + 1;
  p->OW = (p->W - p->kw) / p->sw + 1;
  return true;
}

/* Flat index into dense x of the first maximum of a window; a NaN beats
 * every number, and the first NaN wins. */
static int64_t window_argmax(const pool_geom *p, const double *x, int64_t n,
                             int64_t oh, int64_t ow, int64_t c) {
  int64_t base = ((n * p->H + oh * p->sh) * p->W + ow * p->sw) * p->C + c;
  int64_t best_i = base;
  double best = x[base];
  for (int64_t i = 0; i < p->kh && !isnan(best); i++) {
    for (int64_t j = 0; j < p->kw; j++) {
      int64_t at = base + (i * p->W + j) * p->C;
      double v = x[at];
      if (v > best || isnan(v)) {
        best = v;
        best_i = at;
        if (isnan(v)) break;
      }
    }
  }
  return best_i;
}

/* What each kernel does with a window's maximum position. */
typedef enum pool_mode { POOL_MAX, POOL_SCATTER, POOL_SELECT } pool_mode;

/* Shared loop of the three pooling kernels: out[o] = x[arg] (max),
 * dst[arg] += src[o] (scatter), out[o] = src[arg] (select). */
static void pool_run(const pool_geom *p, const double *x, const double *src,
                     double *dst, pool_mode mode) {
  int64_t o = 0;
  for (int64_t n = 0; n < p->N; n++)
    for (int64_t oh = 0; oh < p->OH; oh++)
      for (int64_t ow = 0; ow < p->OW; ow++)
        for (int64_t c = 0; c < p->C; c++, o++) {
          int64_t at = window_argmax(p, x, n, oh, ow, c);
          switch (mode) {
            case POOL_MAX: dst[o] = x[at]; break;
            case POOL_SCATTER: dst[at] += src[o]; break;
            case POOL_SELECT: dst[o] = src[at]; break;
          }
        }
}

ad_tensor *ad__k_max_pool2d(int nin, ad_tensor *const *in,
                            const ad__attr *a) {
  static const char op[] = "ad_max_pool2d";
  if (!check_arity(op, nin, 1)) return NULL;
  pool_geom p;
  if (!pool_geometry(op, in[0], a->k, &p)) return NULL;
  int64_t oshape[4] = {p.N, p.OH, p.OW, p.C};
  ad_tensor *out = ad__alloc(op, 4, oshape);
  if (!out || out->numel == 0) return out;
  ad_tensor *x = ad__contiguous(in[0]);
  if (!x) {
    ad_release(out);
    return NULL;
  }
  pool_run(&p, x->data, NULL, out->data, POOL_MAX);
  ad_release(x);
  return out;
}

static bool check_pool_pair(const char *op, const char *name,
                            const ad_tensor *t, const int64_t *want,
                            const ad_tensor *x) {
  bool ok = t->ndim == 4;
  for (int i = 0; ok && i < 4; i++)
    if (t->shape[i] != want[i]) ok = false;
  if (ok) return true;
  char bt[AD__SHAPE_STR], bw[AD__SHAPE_STR], bx[AD__SHAPE_STR];
  ad__error(AD_ESHAPE, "%s: %s has shape %s, expected %s for x %s", op, name,
            ad__shape_str(bt, t->ndim, t->shape), ad__shape_str(bw, 4, want),
            ad__shape_str(bx, 4, x->shape));
  return false;
}

ad_tensor *ad__k_max_pool2d_scatter(int nin, ad_tensor *const *in,
                                    const ad__attr *a) {
  static const char op[] = "ad_max_pool2d_scatter";
  if (!check_arity(op, nin, 2)) return NULL;
  pool_geom p;
  if (!pool_geometry(op, in[0], a->k, &p)) return NULL;
  int64_t pshape[4] = {p.N, p.OH, p.OW, p.C};
  if (!check_pool_pair(op, "g", in[1], pshape, in[0])) return NULL;
  ad_tensor *out = ad__alloc(op, 4, in[0]->shape);
  if (!out || out->numel == 0) return out;
  zero(out);
  ad_tensor *x = ad__contiguous(in[0]), *g = ad__contiguous(in[1]);
  if (!x || !g) {
    ad_release(x);
    ad_release(g);
    ad_release(out);
    return NULL;
  }
  pool_run(&p, x->data, g->data, out->data, POOL_SCATTER);
  ad_release(x);
  ad_release(g);
  return out;
}

ad_tensor *ad__k_max_pool2d_select(int nin, ad_tensor *const *in,
                                   const ad__attr *a) {
  static const char op[] = "ad_max_pool2d_select";
  if (!check_arity(op, nin, 2)) return NULL;
  pool_geom p;
  if (!pool_geometry(op, in[0], a->k, &p)) return NULL;
  if (!check_pool_pair(op, "h", in[1], in[0]->shape, in[0])) return NULL;
  int64_t pshape[4] = {p.N, p.OH, p.OW, p.C};
  ad_tensor *out = ad__alloc(op, 4, pshape);
  if (!out || out->numel == 0) return out;
  ad_tensor *x = ad__contiguous(in[0]), *h = ad__contiguous(in[1]);
  if (!x || !h) {
    ad_release(x);
    ad_release(h);
    ad_release(out);
    return NULL;
  }
  pool_run(&p, x->data, h->data, out->data, POOL_SELECT);
  ad_release(x);
  ad_release(h);
  return out;
}
