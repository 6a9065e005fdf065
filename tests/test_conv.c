/* Tests of the convolution and pooling kernels: conv2d against a direct
 * loop, its two adjoints, max pooling and its scatter/select pair. */
#include <stdlib.h>

#include "testutil.h"

#include "internal.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/* Deterministic pseudo-random values in [-1, 1). */
static ad_tensor *noise(int ndim, const int64_t *shape, uint64_t seed) {
  ad_tensor *t = ad_tensor_new(ndim, shape, NULL);
  assert_non_null(t);
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (int64_t i = 0; i < t->numel; i++) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    t->data[i] = (double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
  }
  return t;
}

static double dot(const ad_tensor *a, const ad_tensor *b) {
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(ad_numel(a), ad_numel(b));
  int64_t n = ad_numel(a);
  double *x = malloc((size_t)(n + 1) * sizeof(double));
  double *y = malloc((size_t)(n + 1) * sizeof(double));
  assert_non_null(x);
  assert_non_null(y);
  ad_read(a, x, n);
  ad_read(b, y, n);
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
  free(x);
  free(y);
  return s;
}

static double at4(const ad_tensor *t, int64_t a, int64_t b, int64_t c,
                  int64_t d) {
  return t->data[a * t->strides[0] + b * t->strides[1] + c * t->strides[2] +
                 d * t->strides[3]];
}

/* conv2d by its definition. */
static ad_tensor *naive_conv(const ad_tensor *x, const ad_tensor *w, int sh,
                             int sw, int ph, int pw) {
  int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
  int64_t KH = w->shape[0], KW = w->shape[1], O = w->shape[3];
  int64_t OH = (H + 2 * ph - KH) / sh + 1, OW = (W + 2 * pw - KW) / sw + 1;
  ad_tensor *out = ad_tensor_new(4, (int64_t[]){N, OH, OW, O}, NULL);
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++)
        for (int64_t o = 0; o < O; o++) {
          double s = 0;
          for (int64_t a = 0; a < KH; a++)
            for (int64_t b = 0; b < KW; b++) {
              int64_t ih = i * sh - ph + a, iw = j * sw - pw + b;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              for (int64_t c = 0; c < C; c++)
                s += at4(x, n, ih, iw, c) * at4(w, a, b, c, o);
            }
          out->data[((n * OH + i) * OW + j) * O + o] = s;
        }
  return out;
}

/* max_pool2d by its definition (NaN propagates). */
static ad_tensor *naive_pool(const ad_tensor *x, int kh, int kw, int sh,
                             int sw) {
  int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
  int64_t OH = (H - kh) / sh + 1, OW = (W - kw) / sw + 1;
  ad_tensor *out = ad_tensor_new(4, (int64_t[]){N, OH, OW, C}, NULL);
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++)
        for (int64_t c = 0; c < C; c++) {
          double m = -INFINITY;
          for (int a = 0; a < kh; a++)
            for (int b = 0; b < kw; b++) {
              double v = at4(x, n, i * sh + a, j * sw + b, c);
              if (v > m || isnan(v)) m = isnan(m) ? m : v;
            }
          out->data[((n * OH + i) * OW + j) * C + c] = m;
        }
  return out;
}

static ad__attr conv_attr(int ndim_shape_of, const int64_t *shape, int sh,
                          int sw, int ph, int pw) {
  ad__attr a = {.ndim = ndim_shape_of, .k = {sh, sw, ph, pw}};
  for (int i = 0; i < ndim_shape_of; i++) a.shape[i] = shape[i];
  return a;
}

static ad_tensor *input_grad(ad_tensor *g, ad_tensor *w, const int64_t *xs,
                             int sh, int sw, int ph, int pw) {
  ad__attr a = conv_attr(4, xs, sh, sw, ph, pw);
  ad_tensor *in[2] = {g, w};
  return ad__own(ad__k_conv2d_input_grad(2, in, &a));
}

static ad_tensor *filter_grad(ad_tensor *x, ad_tensor *g, const int64_t *ws,
                              int sh, int sw, int ph, int pw) {
  ad__attr a = conv_attr(4, ws, sh, sw, ph, pw);
  ad_tensor *in[2] = {x, g};
  return ad__own(ad__k_conv2d_filter_grad(2, in, &a));
}

static ad_tensor *pool_kernel(ad__kernel_fn f, ad_tensor *x, ad_tensor *y,
                              int kh, int kw, int sh, int sw) {
  ad__attr a = {.k = {kh, kw, sh, sw}};
  ad_tensor *in[2] = {x, y};
  return ad__own(f(2, in, &a));
}

/* Strides and paddings exercised against the direct loop. */
static const int conv_cases[][4] = {
    {1, 1, 0, 0}, {2, 2, 0, 0}, {1, 2, 1, 0}, {2, 1, 1, 2}, {3, 3, 2, 1},
};
#define NCASES ((int)(sizeof conv_cases / sizeof conv_cases[0]))

/* ------------------------------------------------------------------------
 * conv2d
 * ---------------------------------------------------------------------- */

static void test_conv2d_known_values(void **state) {
  (void)state;
  ad_tensor *x =
      ad_tensor_new(4, SHAPE(1, 3, 3, 1), VALUES(1, 2, 3, 4, 5, 6, 7, 8, 9));
  ad_tensor *w = ad_tensor_new(4, SHAPE(2, 2, 1, 1), VALUES(1, 0, 0, -1));
  ad_tensor *y = ad_conv2d(x, w, 1, 1, 0, 0);
  assert_shape(y, 4, 1, 2, 2, 1);
  assert_tensor_near(y, VALUES(-4, -4, -4, -4), 4, 0);
  /* Cross-correlation: no flip, so the top-left tap reads x[i][j]. */
  ad_tensor *w2 = ad_tensor_new(4, SHAPE(2, 2, 1, 1), VALUES(1, 0, 0, 0));
  assert_tensor_near(ad_conv2d(x, w2, 1, 1, 0, 0), VALUES(1, 2, 4, 5), 4, 0);
}

static void test_conv2d_padding_known_values(void **state) {
  (void)state;
  ad_tensor *x = ad_tensor_new(4, SHAPE(1, 2, 2, 1), VALUES(1, 2, 3, 4));
  ad_tensor *w = ad_ones(4, SHAPE(3, 3, 1, 1));
  ad_tensor *y = ad_conv2d(x, w, 1, 1, 1, 1);
  assert_shape(y, 4, 1, 2, 2, 1);
  assert_tensor_near(y, VALUES(10, 10, 10, 10), 4, 0);
  ad_tensor *y2 = ad_conv2d(x, ad_ones(4, SHAPE(1, 1, 1, 1)), 1, 1, 1, 0);
  assert_shape(y2, 4, 1, 4, 2, 1);
  assert_tensor_near(y2, VALUES(0, 0, 1, 2, 3, 4, 0, 0), 8, 0);
}

static void test_conv2d_matches_direct_loop(void **state) {
  (void)state;
  ad_tensor *x = noise(4, SHAPE(2, 7, 6, 3), 1);
  ad_tensor *w = noise(4, SHAPE(3, 2, 3, 4), 2);
  for (int c = 0; c < NCASES; c++) {
    const int *k = conv_cases[c];
    ad_tensor *y = ad_conv2d(x, w, k[0], k[1], k[2], k[3]);
    assert_tensors_close(y, naive_conv(x, w, k[0], k[1], k[2], k[3]), 1e-12);
  }
}

static void test_conv2d_output_shape(void **state) {
  (void)state;
  ad_tensor *x = ad_zeros(4, SHAPE(1, 7, 8, 2));
  ad_tensor *w = ad_zeros(4, SHAPE(3, 3, 2, 5));
  assert_shape(ad_conv2d(x, w, 2, 2, 1, 1), 4, 1, 4, 4, 5);
  assert_shape(ad_conv2d(x, w, 1, 3, 0, 0), 4, 1, 5, 2, 5);
  assert_shape(ad_conv2d(x, w, 5, 5, 0, 0), 4, 1, 1, 2, 5);
}

static void test_conv2d_pointwise(void **state) {
  (void)state;
  ad_tensor *x = noise(4, SHAPE(2, 3, 4, 5), 3);
  ad_tensor *w = noise(4, SHAPE(1, 1, 5, 2), 4);
  assert_tensors_close(ad_conv2d(x, w, 1, 1, 0, 0),
                       naive_conv(x, w, 1, 1, 0, 0), 1e-12);
  assert_tensors_close(ad_conv2d(x, w, 2, 1, 0, 1),
                       naive_conv(x, w, 2, 1, 0, 1), 1e-12);
}

static void test_conv2d_strided_inputs(void **state) {
  (void)state;
  /* x from an (N, C, H, W) tensor and w from (O, C, KH, KW), permuted. */
  ad_tensor *xn = noise(4, SHAPE(2, 3, 5, 6), 5);
  ad_tensor *x = ad_permute(xn, (const int[]){0, 2, 3, 1});
  ad_tensor *wn = noise(4, SHAPE(4, 3, 2, 3), 6);
  ad_tensor *w = ad_permute(wn, (const int[]){2, 3, 1, 0});
  assert_false(x->contiguous);
  assert_tensors_close(ad_conv2d(x, w, 1, 2, 1, 1),
                       naive_conv(x, w, 1, 2, 1, 1), 1e-12);
}

static void test_conv2d_empty_batch_and_channels(void **state) {
  (void)state;
  ad_tensor *y = ad_conv2d(ad_zeros(4, SHAPE(0, 4, 4, 2)),
                           ad_ones(4, SHAPE(2, 2, 2, 3)), 1, 1, 0, 0);
  assert_shape(y, 4, 0, 3, 3, 3);
  ad_tensor *z = ad_conv2d(ad_zeros(4, SHAPE(1, 2, 2, 0)),
                           ad_ones(4, SHAPE(1, 1, 0, 2)), 1, 1, 0, 0);
  assert_shape(z, 4, 1, 2, 2, 2);
  assert_tensor_near(z, VALUES(0, 0, 0, 0, 0, 0, 0, 0), 8, 0);
}

static void test_conv2d_large_uses_blocks(void **state) {
  (void)state;
  /* im2col here exceeds one 2^21-double block, so rows are processed in
   * several chunks; spot-check against the direct loop. */
  int64_t hw = test_quick() ? 12 : 64;
  ad_tensor *x = noise(4, (int64_t[]){2, hw, hw, 32}, 7);
  ad_tensor *w = noise(4, SHAPE(3, 3, 32, 2), 8);
  ad_tensor *y = ad_conv2d(x, w, 1, 1, 1, 1);
  assert_tensors_close(y, naive_conv(x, w, 1, 1, 1, 1), 1e-11);
  ad_tensor *g = noise(4, y->shape, 9);
  ad_tensor *gw = filter_grad(x, g, w->shape, 1, 1, 1, 1);
  ad_tensor *gx = input_grad(g, w, x->shape, 1, 1, 1, 1);
  double yg = dot(y, g);
  assert_true(fabs(yg - dot(w, gw)) < 1e-9 * (1 + fabs(yg)));
  assert_true(fabs(yg - dot(x, gx)) < 1e-9 * (1 + fabs(yg)));
}

static void test_conv2d_channel_mismatch(void **state) {
  (void)state;
  ad_tensor *x = ad_zeros(4, SHAPE(1, 5, 5, 3));
  ad_tensor *w = ad_zeros(4, SHAPE(3, 3, 2, 4));
  assert_null(ad_conv2d(x, w, 1, 1, 0, 0));
  assert_error(AD_ESHAPE, "(1, 5, 5, 3)");
  assert_null(ad_conv2d(x, w, 1, 1, 0, 0));
  assert_error(AD_ESHAPE, "(3, 3, 2, 4)");
  assert_null(ad_conv2d(x, w, 1, 1, 0, 0));
  assert_error(AD_ESHAPE, "ad_conv2d");
}

static void test_conv2d_window_too_large(void **state) {
  (void)state;
  ad_tensor *x = ad_zeros(4, SHAPE(1, 2, 2, 1));
  ad_tensor *w = ad_zeros(4, SHAPE(3, 3, 1, 1));
  assert_null(ad_conv2d(x, w, 1, 1, 0, 0));
  assert_error(AD_ESHAPE, "ad_conv2d");
  assert_null(ad_conv2d(x, w, 2, 2, 0, 1));
  assert_error(AD_ESHAPE, "ad_conv2d");
  assert_null(ad_conv2d(x, ad_zeros(4, SHAPE(0, 1, 1, 1)), 1, 1, 0, 0));
  assert_error(AD_ESHAPE, "ad_conv2d");
}

static void test_conv2d_bad_strides_and_padding(void **state) {
  (void)state;
  ad_tensor *x = ad_zeros(4, SHAPE(1, 4, 4, 1));
  ad_tensor *w = ad_zeros(4, SHAPE(2, 2, 1, 1));
  assert_null(ad_conv2d(x, w, 0, 1, 0, 0));
  assert_error(AD_EINVAL, "ad_conv2d");
  assert_null(ad_conv2d(x, w, 1, -1, 0, 0));
  assert_error(AD_EINVAL, "ad_conv2d");
  assert_null(ad_conv2d(x, w, 1, 1, -1, 0));
  assert_error(AD_EINVAL, "ad_conv2d");
  assert_null(ad_conv2d(x, w, 1, 1, 0, -2));
  assert_error(AD_EINVAL, "ad_conv2d");
}

static void test_conv2d_rank_errors(void **state) {
  (void)state;
  assert_null(ad_conv2d(ad_zeros(3, SHAPE(4, 4, 1)),
                        ad_zeros(4, SHAPE(2, 2, 1, 1)), 1, 1, 0, 0));
  assert_error(AD_ESHAPE, "ad_conv2d");
  assert_null(ad_conv2d(ad_zeros(4, SHAPE(1, 4, 4, 1)),
                        ad_zeros(2, SHAPE(2, 2)), 1, 1, 0, 0));
  assert_error(AD_ESHAPE, "ad_conv2d");
}

/* ------------------------------------------------------------------------
 * Adjoints of conv2d
 * ---------------------------------------------------------------------- */

static void test_conv2d_input_grad_known(void **state) {
  (void)state;
  /* A 2x2 all-ones filter over a 3x3 input: each input pixel collects
   * the gradient of every window that covers it. */
  ad_tensor *g = ad_ones(4, SHAPE(1, 2, 2, 1));
  ad_tensor *w = ad_ones(4, SHAPE(2, 2, 1, 1));
  ad_tensor *dx = input_grad(g, w, SHAPE(1, 3, 3, 1), 1, 1, 0, 0);
  assert_shape(dx, 4, 1, 3, 3, 1);
  assert_tensor_near(dx, VALUES(1, 2, 1, 2, 4, 2, 1, 2, 1), 9, 0);
}

static void test_conv2d_filter_grad_known(void **state) {
  (void)state;
  ad_tensor *x =
      ad_tensor_new(4, SHAPE(1, 3, 3, 1), VALUES(1, 2, 3, 4, 5, 6, 7, 8, 9));
  ad_tensor *g = ad_ones(4, SHAPE(1, 2, 2, 1));
  ad_tensor *dw = filter_grad(x, g, SHAPE(2, 2, 1, 1), 1, 1, 0, 0);
  assert_shape(dw, 4, 2, 2, 1, 1);
  assert_tensor_near(dw, VALUES(12, 16, 24, 28), 4, 0);
}

static void test_conv2d_adjoint_identities(void **state) {
  (void)state;
  ad_tensor *x = noise(4, SHAPE(2, 6, 7, 3), 10);
  ad_tensor *w = noise(4, SHAPE(3, 2, 3, 4), 11);
  for (int c = 0; c < NCASES; c++) {
    const int *k = conv_cases[c];
    ad_tensor *y = ad_conv2d(x, w, k[0], k[1], k[2], k[3]);
    assert_non_null(y);
    ad_tensor *g = noise(4, y->shape, 12 + (uint64_t)c);
    ad_tensor *gx = input_grad(g, w, x->shape, k[0], k[1], k[2], k[3]);
    ad_tensor *gw = filter_grad(x, g, w->shape, k[0], k[1], k[2], k[3]);
    assert_shape(gx, 4, 2, 6, 7, 3);
    assert_shape(gw, 4, 3, 2, 3, 4);
    double yg = dot(y, g);
    assert_true(fabs(yg - dot(x, gx)) < 1e-12 * (1 + fabs(yg)));
    assert_true(fabs(yg - dot(w, gw)) < 1e-12 * (1 + fabs(yg)));
  }
}

static void test_conv2d_adjoints_pointwise_and_strided(void **state) {
  (void)state;
  ad_tensor *x = noise(4, SHAPE(2, 4, 3, 5), 20);
  ad_tensor *w = noise(4, SHAPE(1, 1, 5, 3), 21);
  ad_tensor *y = ad_conv2d(x, w, 1, 1, 0, 0);
  ad_tensor *g = ad_permute(noise(4, SHAPE(2, 3, 4, 3), 22),
                            (const int[]){0, 2, 3, 1}); /* strided g */
  ad_tensor *gx = input_grad(g, w, x->shape, 1, 1, 0, 0);
  ad_tensor *gw = filter_grad(x, g, w->shape, 1, 1, 0, 0);
  double yg = dot(y, g);
  assert_true(fabs(yg - dot(x, gx)) < 1e-12 * (1 + fabs(yg)));
  assert_true(fabs(yg - dot(w, gw)) < 1e-12 * (1 + fabs(yg)));
}

static void test_conv2d_grad_shape_errors(void **state) {
  (void)state;
  ad_tensor *w = ad_zeros(4, SHAPE(2, 2, 3, 4));
  ad_tensor *g = ad_zeros(4, SHAPE(1, 3, 3, 4));
  ad__attr a = conv_attr(4, SHAPE(1, 4, 4, 3), 1, 1, 0, 0);
  ad_tensor *in[2] = {g, w};
  /* Correct shapes first, so the failures below are the shape rule. */
  ad_release(ad__k_conv2d_input_grad(2, in, &a));
  assert_int_equal(ad_error(), AD_OK);
  a.shape[1] = 5;
  assert_null(ad__k_conv2d_input_grad(2, in, &a));
  assert_error(AD_ESHAPE, "ad_conv2d_input_grad");
  a.shape[1] = 4;
  a.shape[3] = 2;
  assert_null(ad__k_conv2d_input_grad(2, in, &a));
  assert_error(AD_ESHAPE, "ad_conv2d_input_grad");
  a.ndim = 3;
  assert_null(ad__k_conv2d_input_grad(2, in, &a));
  assert_error(AD_EINVAL, "ad_conv2d_input_grad");

  ad_tensor *x = ad_zeros(4, SHAPE(1, 4, 4, 3));
  ad__attr b = conv_attr(4, SHAPE(2, 2, 3, 4), 1, 1, 0, 0);
  ad_tensor *in2[2] = {x, g};
  ad_release(ad__k_conv2d_filter_grad(2, in2, &b));
  assert_int_equal(ad_error(), AD_OK);
  b.shape[3] = 5;
  assert_null(ad__k_conv2d_filter_grad(2, in2, &b));
  assert_error(AD_ESHAPE, "ad_conv2d_filter_grad");
  b.shape[3] = 4;
  b.k[0] = 2;
  assert_null(ad__k_conv2d_filter_grad(2, in2, &b));
  assert_error(AD_ESHAPE, "ad_conv2d_filter_grad");
  b.k[0] = 0;
  assert_null(ad__k_conv2d_filter_grad(2, in2, &b));
  assert_error(AD_EINVAL, "ad_conv2d_filter_grad");
}

/* ------------------------------------------------------------------------
 * max_pool2d and its pair
 * ---------------------------------------------------------------------- */

static void test_max_pool2d_known_values(void **state) {
  (void)state;
  ad_tensor *x =
      ad_tensor_new(4, SHAPE(1, 4, 4, 1),
                    VALUES(1, 3, 2, 1, 4, 2, 0, 1, 5, 6, 7, 8, -1, -2, 9, 3));
  ad_tensor *y = ad_max_pool2d(x, 2, 2, 2, 2);
  assert_shape(y, 4, 1, 2, 2, 1);
  assert_tensor_near(y, VALUES(4, 2, 6, 9), 4, 0);
}

static void test_max_pool2d_matches_direct_loop(void **state) {
  (void)state;
  ad_tensor *x = noise(4, SHAPE(2, 7, 6, 3), 30);
  const int cases[][4] = {{2, 2, 1, 1}, {3, 2, 2, 1}, {3, 3, 3, 3},
                          {1, 1, 1, 1}, {7, 6, 1, 1}, {2, 3, 4, 5}};
  for (int c = 0; c < 6; c++) {
    const int *k = cases[c];
    assert_tensors_close(ad_max_pool2d(x, k[0], k[1], k[2], k[3]),
                         naive_pool(x, k[0], k[1], k[2], k[3]), 0);
  }
  ad_tensor *xs =
      ad_permute(noise(4, SHAPE(2, 3, 5, 4), 31), (const int[]){0, 2, 3, 1});
  assert_tensors_close(ad_max_pool2d(xs, 2, 2, 1, 2),
                       naive_pool(xs, 2, 2, 1, 2), 0);
}

static void test_max_pool2d_nan_wins(void **state) {
  (void)state;
  ad_tensor *x =
      ad_tensor_new(4, SHAPE(1, 2, 2, 2), VALUES(1, 5, NAN, 2, 3, NAN, 4, 1));
  ad_tensor *y = ad_max_pool2d(x, 2, 2, 1, 1);
  assert_shape(y, 4, 1, 1, 1, 2);
  double got[2];
  ad_read(y, got, 2);
  assert_true(isnan(got[0]));
  assert_true(isnan(got[1]));
  /* The gradient goes to the first NaN of each window. */
  ad_tensor *g = ad_tensor_new(4, SHAPE(1, 1, 1, 2), VALUES(10, 20));
  ad_tensor *dx = pool_kernel(ad__k_max_pool2d_scatter, x, g, 2, 2, 1, 1);
  assert_tensor_near(dx, VALUES(0, 0, 10, 0, 0, 20, 0, 0), 8, 0);
}

static void test_max_pool2d_first_maximum_on_ties(void **state) {
  (void)state;
  ad_tensor *x = ad_tensor_new(4, SHAPE(1, 2, 2, 1), VALUES(1, 7, 7, 7));
  ad_tensor *g = ad_tensor_new(4, SHAPE(1, 1, 1, 1), VALUES(5));
  ad_tensor *dx = pool_kernel(ad__k_max_pool2d_scatter, x, g, 2, 2, 2, 2);
  assert_tensor_near(dx, VALUES(0, 5, 0, 0), 4, 0);
  ad_tensor *h = ad_tensor_new(4, SHAPE(1, 2, 2, 1), VALUES(10, 20, 30, 40));
  ad_tensor *s = pool_kernel(ad__k_max_pool2d_select, x, h, 2, 2, 2, 2);
  assert_tensor_near(s, VALUES(20), 1, 0);
}

static void test_max_pool2d_scatter_overlapping_adds(void **state) {
  (void)state;
  /* Windows of width 2, stride 1 over a row whose maximum sits in the
   * middle: both windows route their gradient there. */
  ad_tensor *x = ad_tensor_new(4, SHAPE(1, 1, 3, 1), VALUES(1, 9, 2));
  ad_tensor *g = ad_tensor_new(4, SHAPE(1, 1, 2, 1), VALUES(3, 4));
  ad_tensor *dx = pool_kernel(ad__k_max_pool2d_scatter, x, g, 1, 2, 1, 1);
  assert_shape(dx, 4, 1, 1, 3, 1);
  assert_tensor_near(dx, VALUES(0, 7, 0), 3, 0);
}

static void test_max_pool2d_select_reads_argmax(void **state) {
  (void)state;
  ad_tensor *x =
      ad_tensor_new(4, SHAPE(1, 4, 4, 1),
                    VALUES(1, 3, 2, 1, 4, 2, 0, 1, 5, 6, 7, 8, -1, -2, 9, 3));
  ad_tensor *h = ad_tensor_new(
      4, SHAPE(1, 4, 4, 1),
      VALUES(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  ad_tensor *s = pool_kernel(ad__k_max_pool2d_select, x, h, 2, 2, 2, 2);
  assert_shape(s, 4, 1, 2, 2, 1);
  assert_tensor_near(s, VALUES(4, 2, 9, 14), 4, 0);
}

static void test_max_pool2d_scatter_select_adjoint(void **state) {
  (void)state;
  const int cases[][4] = {{2, 2, 1, 1}, {3, 2, 2, 1}, {2, 2, 2, 2}};
  for (int c = 0; c < 3; c++) {
    const int *k = cases[c];
    ad_tensor *x = noise(4, SHAPE(2, 6, 5, 3), 40 + (uint64_t)c);
    ad_tensor *y = ad_max_pool2d(x, k[0], k[1], k[2], k[3]);
    ad_tensor *g = noise(4, y->shape, 50 + (uint64_t)c);
    ad_tensor *h = noise(4, x->shape, 60 + (uint64_t)c);
    ad_tensor *sc =
        pool_kernel(ad__k_max_pool2d_scatter, x, g, k[0], k[1], k[2], k[3]);
    ad_tensor *se =
        pool_kernel(ad__k_max_pool2d_select, x, h, k[0], k[1], k[2], k[3]);
    assert_true(fabs(dot(sc, h) - dot(g, se)) < 1e-12);
    /* select(x, x) is the pooled x itself. */
    assert_tensors_close(
        pool_kernel(ad__k_max_pool2d_select, x, x, k[0], k[1], k[2], k[3]), y,
        0);
  }
}

static void test_max_pool2d_errors(void **state) {
  (void)state;
  ad_tensor *x = ad_zeros(4, SHAPE(1, 3, 3, 1));
  assert_null(ad_max_pool2d(x, 4, 1, 1, 1));
  assert_error(AD_ESHAPE, "ad_max_pool2d");
  assert_null(ad_max_pool2d(x, 1, 4, 1, 1));
  assert_error(AD_ESHAPE, "ad_max_pool2d");
  assert_null(ad_max_pool2d(x, 0, 1, 1, 1));
  assert_error(AD_EINVAL, "ad_max_pool2d");
  assert_null(ad_max_pool2d(x, 2, 2, 0, 1));
  assert_error(AD_EINVAL, "ad_max_pool2d");
  assert_null(ad_max_pool2d(x, 2, 2, 1, -1));
  assert_error(AD_EINVAL, "ad_max_pool2d");
  assert_null(ad_max_pool2d(ad_zeros(2, SHAPE(3, 3)), 2, 2, 1, 1));
  assert_error(AD_ESHAPE, "ad_max_pool2d");
}

static void test_max_pool2d_pair_shape_errors(void **state) {
  (void)state;
  ad_tensor *x = ad_zeros(4, SHAPE(1, 4, 4, 2));
  ad_tensor *bad = ad_zeros(4, SHAPE(1, 3, 3, 2));
  assert_null(pool_kernel(ad__k_max_pool2d_scatter, x, bad, 2, 2, 2, 2));
  assert_error(AD_ESHAPE, "ad_max_pool2d_scatter");
  assert_null(pool_kernel(ad__k_max_pool2d_select, x, bad, 2, 2, 2, 2));
  assert_error(AD_ESHAPE, "ad_max_pool2d_select");
  assert_null(pool_kernel(ad__k_max_pool2d_select, x, x, 5, 2, 2, 2));
  assert_error(AD_ESHAPE, "ad_max_pool2d_select");
  assert_null(pool_kernel(ad__k_max_pool2d_scatter, x, x, 2, 2, 0, 2));
  assert_error(AD_EINVAL, "ad_max_pool2d_scatter");
}

static void test_max_pool2d_empty_batch(void **state) {
  (void)state;
  ad_tensor *y = ad_max_pool2d(ad_zeros(4, SHAPE(0, 4, 4, 3)), 2, 2, 2, 2);
  assert_shape(y, 4, 0, 2, 2, 3);
  ad_tensor *x = ad_zeros(4, SHAPE(0, 4, 4, 3));
  ad_tensor *dx = pool_kernel(ad__k_max_pool2d_scatter, x, y, 2, 2, 2, 2);
  assert_shape(dx, 4, 0, 4, 4, 3);
}

static void test_conv2d_leaves_inputs_unchanged(void **state) {
  (void)state;
  ad_tensor *x = noise(4, SHAPE(1, 5, 5, 2), 70);
  ad_tensor *w = noise(4, SHAPE(3, 3, 2, 2), 71);
  ad_tensor *x0 = ad_tensor_new(4, x->shape, x->data);
  ad_tensor *w0 = ad_tensor_new(4, w->shape, w->data);
  assert_non_null(ad_conv2d(x, w, 2, 1, 1, 1));
  assert_non_null(ad_max_pool2d(x, 2, 2, 1, 1));
  assert_tensors_close(x, x0, 0);
  assert_tensors_close(w, w0, 0);
}

static void test_conv2d_null_input_keeps_error(void **state) {
  (void)state;
  ad_tensor *w = ad_zeros(4, SHAPE(1, 1, 1, 1));
  assert_null(ad_conv2d(NULL, w, 1, 1, 0, 0));
  assert_true(ad_error() != AD_OK);
  ad_error_clear();
  assert_null(ad_max_pool2d(NULL, 1, 1, 1, 1));
  assert_true(ad_error() != AD_OK);
  ad_error_clear();
}

/* Every allocation may fail (the result, dense copies of strided inputs,
 * im2col scratch): NULL with AD_ENOMEM and nothing leaked. */
static void test_out_of_memory_is_an_error(void **state) {
  (void)state;
  ad_tensor *x =
      ad_permute(noise(4, SHAPE(1, 2, 5, 5), 72), (const int[]){0, 2, 3, 1});
  ad_tensor *w =
      ad_permute(noise(4, SHAPE(3, 2, 2, 2), 73), (const int[]){2, 3, 1, 0});
  ad_tensor *g =
      ad_permute(noise(4, SHAPE(1, 3, 4, 4), 74), (const int[]){0, 2, 3, 1});
  ad_tensor *gp =
      ad_permute(noise(4, SHAPE(1, 2, 4, 4), 75), (const int[]){0, 2, 3, 1});
  int failures = 0;
  for (long n = 1; n <= 10; n++) {
    for (int k = 0; k < 6; k++) {
      ad_tensor *r;
      ad__fail_alloc_after(n);
      switch (k) {
        case 0:
          r = ad_conv2d(x, w, 1, 1, 0, 0);
          break;
        case 1:
          r = input_grad(g, w, x->shape, 1, 1, 0, 0);
          break;
        case 2:
          r = filter_grad(x, g, w->shape, 1, 1, 0, 0);
          break;
        case 3:
          r = ad_max_pool2d(x, 2, 2, 1, 1);
          break;
        case 4:
          r = pool_kernel(ad__k_max_pool2d_scatter, x, gp, 2, 2, 1, 1);
          break;
        default:
          r = pool_kernel(ad__k_max_pool2d_select, x, x, 2, 2, 1, 1);
          break;
      }
      ad__fail_alloc_after(0);
      if (!r) {
        failures++;
        assert_error(AD_ENOMEM, NULL);
      }
    }
  }
  assert_true(failures > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(test_conv2d_known_values),
      scoped_test(test_conv2d_padding_known_values),
      scoped_test(test_conv2d_matches_direct_loop),
      scoped_test(test_conv2d_output_shape),
      scoped_test(test_conv2d_pointwise),
      scoped_test(test_conv2d_strided_inputs),
      scoped_test(test_conv2d_empty_batch_and_channels),
      scoped_test(test_conv2d_large_uses_blocks),
      scoped_test(test_conv2d_channel_mismatch),
      scoped_test(test_conv2d_window_too_large),
      scoped_test(test_conv2d_bad_strides_and_padding),
      scoped_test(test_conv2d_rank_errors),
      scoped_test(test_conv2d_input_grad_known),
      scoped_test(test_conv2d_filter_grad_known),
      scoped_test(test_conv2d_adjoint_identities),
      scoped_test(test_conv2d_adjoints_pointwise_and_strided),
      scoped_test(test_conv2d_grad_shape_errors),
      scoped_test(test_max_pool2d_known_values),
      scoped_test(test_max_pool2d_matches_direct_loop),
      scoped_test(test_max_pool2d_nan_wins),
      scoped_test(test_max_pool2d_first_maximum_on_ties),
      scoped_test(test_max_pool2d_scatter_overlapping_adds),
      scoped_test(test_max_pool2d_select_reads_argmax),
      scoped_test(test_max_pool2d_scatter_select_adjoint),
      scoped_test(test_max_pool2d_errors),
      scoped_test(test_max_pool2d_pair_shape_errors),
      scoped_test(test_max_pool2d_empty_batch),
      scoped_test(test_conv2d_leaves_inputs_unchanged),
      scoped_test(test_conv2d_null_input_keeps_error),
      scoped_test(test_out_of_memory_is_an_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
