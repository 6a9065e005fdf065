/* Tests of the shape kernels: reshape, transpose, permute, expand/squeeze,
 * broadcast_to, slice, concat, stack, gather and their internal
 * transposes (slice_grad, scatter_add) and identity. */
#include <stdlib.h>

#include "testutil.h"

#include "internal.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/* 0, 1, 2, ... in the given shape. */
static ad_tensor *iota(int ndim, const int64_t *shape) {
  ad_tensor *t = ad_tensor_new(ndim, shape, NULL);
  assert_non_null(t);
  for (int64_t i = 0; i < t->numel; i++) t->data[i] = (double)i;
  return t;
}

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

static bool shares(const ad_tensor *a, const ad_tensor *b) {
  return a->storage == b->storage;
}

/* Run an internal kernel and hand its result to the test's scope. */
static ad_tensor *kern(ad__kernel_fn f, int nin, ad_tensor *const *in,
                       const ad__attr *a) {
  ad_tensor *t = f(nin, in, a);
  return ad__own(t);
}

/* ------------------------------------------------------------------------
 * reshape
 * ---------------------------------------------------------------------- */

static void test_reshape_values_share_storage(void **state) {
  (void)state;
  ad_tensor *x = iota(1, SHAPE(6));
  ad_tensor *y = ad_reshape(x, 2, SHAPE(2, 3));
  assert_shape(y, 2, 2, 3);
  assert_tensor_near(y, VALUES(0, 1, 2, 3, 4, 5), 6, 0);
  assert_true(shares(x, y));
  assert_true(y->contiguous);
}

static void test_reshape_infers_minus_one(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(4, 6));
  ad_tensor *y = ad_reshape(x, 3, SHAPE(2, -1, 3));
  assert_shape(y, 3, 2, 4, 3);
  ad_tensor *z = ad_reshape(x, 1, SHAPE(-1));
  assert_shape(z, 1, 24);
  ad_tensor *s = ad_reshape(ad_tensor_new(1, SHAPE(1), VALUES(7)), 0, NULL);
  assert_shape(s, 0, 0);
  assert_tensor_near(s, VALUES(7), 1, 0);
}

static void test_reshape_view_outlives_base(void **state) {
  (void)state;
  ad_scope_begin();
  ad_tensor *x = iota(2, SHAPE(2, 3));
  ad_tensor *y = ad_keep(ad_reshape(x, 1, SHAPE(6)));
  ad_scope_end(); /* releases x; y stays alive in the outer scope */
  assert_shape(y, 1, 6);
  assert_tensor_near(y, VALUES(0, 1, 2, 3, 4, 5), 6, 0);
}

static void test_reshape_transposed_copies_in_row_major_order(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  ad_tensor *t = ad_transpose(x); /* [[0,3],[1,4],[2,5]] */
  ad_tensor *y = ad_reshape(t, 1, SHAPE(6));
  assert_shape(y, 1, 6);
  assert_tensor_near(y, VALUES(0, 3, 1, 4, 2, 5), 6, 0);
  assert_false(shares(x, y));
}

static void test_reshape_strided_view_without_copy(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(4, 3));
  ad_tensor *rows = ad_slice(x, 0, 0, 4, 2); /* rows 0 and 2 */
  ad_tensor *y = ad_reshape(rows, 3, SHAPE(2, 1, 3));
  assert_shape(y, 3, 2, 1, 3);
  assert_tensor_near(y, VALUES(0, 1, 2, 6, 7, 8), 6, 0);
  assert_true(shares(x, y));
  /* Merging the strided rows needs a copy. */
  ad_tensor *z = ad_reshape(rows, 1, SHAPE(6));
  assert_tensor_near(z, VALUES(0, 1, 2, 6, 7, 8), 6, 0);
  assert_false(shares(x, z));
}

static void test_reshape_errors(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  assert_null(ad_reshape(x, 1, SHAPE(4)));
  assert_error(AD_ESHAPE, "ad_reshape: cannot reshape (2, 3) into (4,)");
  assert_null(ad_reshape(x, 2, SHAPE(-1, -1)));
  assert_error(AD_EINVAL, "ad_reshape");
  assert_null(ad_reshape(x, 2, SHAPE(-2, 3)));
  assert_error(AD_EINVAL, "ad_reshape");
  assert_null(ad_reshape(x, 2, SHAPE(4, -1)));
  assert_error(AD_ESHAPE, "cannot reshape");
  assert_null(ad_reshape(NULL, 1, SHAPE(6)));
  assert_true(ad_error() != AD_OK);
  ad_error_clear();
}

/* ------------------------------------------------------------------------
 * transpose, permute, expand_dims, squeeze, broadcast_to
 * ---------------------------------------------------------------------- */

static void test_transpose_is_a_view(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  ad_tensor *t = ad_transpose(x);
  assert_shape(t, 2, 3, 2);
  assert_tensor_near(t, VALUES(0, 3, 1, 4, 2, 5), 6, 0);
  assert_true(shares(x, t));
  assert_false(t->contiguous);
  ad_tensor *tt = ad_transpose(t);
  assert_true(tt->contiguous);
  assert_tensors_close(tt, x, 0);
}

static void test_transpose_batched_and_low_rank(void **state) {
  (void)state;
  ad_tensor *x = iota(3, SHAPE(2, 2, 3));
  ad_tensor *t = ad_transpose(x);
  assert_shape(t, 3, 2, 3, 2);
  assert_tensor_near(t, VALUES(0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11), 12, 0);
  ad_tensor *v = iota(1, SHAPE(3));
  ad_tensor *vt = ad_transpose(v);
  assert_shape(vt, 1, 3);
  assert_tensor_near(vt, VALUES(0, 1, 2), 3, 0);
  ad_tensor *s = ad_transpose(ad_scalar(2.5));
  assert_shape(s, 0, 0);
  assert_tensor_near(s, VALUES(2.5), 1, 0);
}

static void test_permute_matches_index_formula(void **state) {
  (void)state;
  ad_tensor *x = iota(3, SHAPE(2, 3, 4));
  ad_tensor *p = ad_permute(x, (const int[]){2, 0, 1});
  assert_shape(p, 3, 4, 2, 3);
  assert_true(shares(x, p));
  double got[24];
  ad_read(p, got, 24);
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++)
        assert_true(got[(k * 2 + i) * 3 + j] == (double)(i * 12 + j * 4 + k));
}

static void test_permute_rejects_non_permutations(void **state) {
  (void)state;
  ad_tensor *x = iota(3, SHAPE(2, 3, 4));
  assert_null(ad_permute(x, (const int[]){0, 0, 1}));
  assert_error(AD_EINVAL, "ad_permute");
  assert_null(ad_permute(x, (const int[]){0, 1, 3}));
  assert_error(AD_EINVAL, "ad_permute");
  assert_null(ad_permute(x, (const int[]){-1, 0, 1}));
  assert_error(AD_EINVAL, "ad_permute");
}

static void test_expand_dims_positions(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  assert_shape(ad_expand_dims(x, 0), 3, 1, 2, 3);
  assert_shape(ad_expand_dims(x, 1), 3, 2, 1, 3);
  assert_shape(ad_expand_dims(x, 2), 3, 2, 3, 1);
  assert_shape(ad_expand_dims(x, -1), 3, 2, 3, 1);
  assert_shape(ad_expand_dims(x, -3), 3, 1, 2, 3);
  ad_tensor *e = ad_expand_dims(x, 1);
  assert_true(shares(x, e));
  assert_true(e->contiguous);
  assert_tensor_near(e, VALUES(0, 1, 2, 3, 4, 5), 6, 0);
  assert_shape(ad_expand_dims(ad_scalar(1), 0), 1, 1);
}

static void test_expand_dims_errors(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  assert_null(ad_expand_dims(x, 3));
  assert_error(AD_EINVAL, "ad_expand_dims");
  assert_null(ad_expand_dims(x, -4));
  assert_error(AD_EINVAL, "ad_expand_dims");
  ad_tensor *full = ad_zeros(8, SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
  assert_null(ad_expand_dims(full, 0));
  assert_error(AD_EINVAL, "ad_expand_dims");
}

static void test_squeeze_removes_unit_axis(void **state) {
  (void)state;
  ad_tensor *x = iota(3, SHAPE(2, 1, 3));
  ad_tensor *s = ad_squeeze(x, 1);
  assert_shape(s, 2, 2, 3);
  assert_tensor_near(s, VALUES(0, 1, 2, 3, 4, 5), 6, 0);
  assert_true(shares(x, s));
  assert_shape(ad_squeeze(x, -2), 2, 2, 3);
  assert_shape(ad_squeeze(ad_ones(1, SHAPE(1)), 0), 0, 0);
}

static void test_squeeze_errors(void **state) {
  (void)state;
  ad_tensor *x = iota(3, SHAPE(2, 1, 3));
  assert_null(ad_squeeze(x, 0));
  assert_error(AD_ESHAPE, "ad_squeeze");
  assert_null(ad_squeeze(x, 3));
  assert_error(AD_EINVAL, "ad_squeeze");
  assert_null(ad_squeeze(ad_scalar(1), 0));
  assert_error(AD_EINVAL, "ad_squeeze");
}

static void test_broadcast_to_is_a_stride_zero_view(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(3, 1));
  ad_tensor *b = ad_broadcast_to(x, 3, SHAPE(2, 3, 4));
  assert_shape(b, 3, 2, 3, 4);
  assert_true(shares(x, b));
  assert_int_equal(b->strides[0], 0);
  assert_int_equal(b->strides[2], 0);
  double got[24];
  ad_read(b, got, 24);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++)
        assert_true(got[(i * 3 + j) * 4 + k] == (double)j);
  ad_tensor *s = ad_broadcast_to(ad_scalar(5), 2, SHAPE(2, 2));
  assert_tensor_near(s, VALUES(5, 5, 5, 5), 4, 0);
}

static void test_broadcast_to_errors(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  assert_null(ad_broadcast_to(x, 2, SHAPE(4, 3)));
  assert_error(AD_ESHAPE, "ad_broadcast_to: cannot broadcast (2, 3) to (4, 3)");
  assert_null(ad_broadcast_to(x, 1, SHAPE(3)));
  assert_error(AD_ESHAPE, "ad_broadcast_to");
  assert_null(ad_broadcast_to(x, 2, SHAPE(2, -3)));
  assert_error(AD_EINVAL, "ad_broadcast_to");
}

/* ------------------------------------------------------------------------
 * slice
 * ---------------------------------------------------------------------- */

static void test_slice_basic_view(void **state) {
  (void)state;
  ad_tensor *x = iota(1, SHAPE(10));
  ad_tensor *s = ad_slice(x, 0, 2, 8, 2);
  assert_shape(s, 1, 3);
  assert_tensor_near(s, VALUES(2, 4, 6), 3, 0);
  assert_true(shares(x, s));
  /* Out-of-range bounds clamp as in Python. */
  assert_tensor_near(ad_slice(x, 0, 7, 100, 1), VALUES(7, 8, 9), 3, 0);
  assert_tensor_near(ad_slice(x, 0, -100, 2, 1), VALUES(0, 1), 2, 0);
}

static void test_slice_negative_start_and_step(void **state) {
  (void)state;
  ad_tensor *x = iota(1, SHAPE(6));
  assert_tensor_near(ad_slice(x, 0, -1, -7, -2), VALUES(5, 3, 1), 3, 0);
  assert_tensor_near(ad_slice(x, 0, INT64_MAX, INT64_MIN, -1),
                     VALUES(5, 4, 3, 2, 1, 0), 6, 0);
  assert_tensor_near(ad_slice(x, 0, -2, 6, 1), VALUES(4, 5), 2, 0);
  assert_tensor_near(ad_slice(x, 0, 4, 1, -1), VALUES(4, 3, 2), 3, 0);
}

static void test_slice_along_negative_axis(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 4));
  ad_tensor *s = ad_slice(x, -1, 3, 0, -2);
  assert_shape(s, 2, 2, 2);
  assert_tensor_near(s, VALUES(3, 1, 7, 5), 4, 0);
  assert_true(shares(x, s));
}

static void test_slice_of_slice_and_empty(void **state) {
  (void)state;
  ad_tensor *x = iota(1, SHAPE(10));
  ad_tensor *s = ad_slice(ad_slice(x, 0, 1, 10, 2), 0, -1, 0, -1);
  assert_tensor_near(s, VALUES(9, 7, 5, 3), 4, 0);
  ad_tensor *e = ad_slice(x, 0, 5, 5, 1);
  assert_shape(e, 1, 0);
  ad_tensor *e2 = ad_slice(x, 0, 20, 30, 1);
  assert_shape(e2, 1, 0);
  ad_tensor *e3 = ad_slice(x, 0, 2, 6, -1);
  assert_shape(e3, 1, 0);
  /* A step far beyond the axis picks one element; stride * step would
   * overflow and must not be formed. */
  ad_tensor *m = iota(2, SHAPE(10, 10));
  int64_t huge = (int64_t)1 << 62;
  ad_tensor *one = ad_slice(m, 0, 3, 10, huge);
  assert_shape(one, 2, 1, 10);
  assert_int_equal(ad_numel(one), 10);
  assert_true(one->data == m->data + 30);
  ad_tensor *back = ad_slice(m, 0, -2, -20, -huge);
  assert_shape(back, 2, 1, 10);
  assert_true(back->data == m->data + 80);
}

static void test_slice_view_outlives_base(void **state) {
  (void)state;
  ad_scope_begin();
  ad_tensor *x = iota(2, SHAPE(3, 3));
  ad_tensor *col = ad_keep(ad_slice(x, 1, 1, 2, 1));
  ad_scope_end();
  assert_shape(col, 2, 3, 1);
  assert_tensor_near(col, VALUES(1, 4, 7), 3, 0);
}

static void test_slice_errors(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  assert_null(ad_slice(x, 0, 0, 2, 0));
  assert_error(AD_EINVAL, "ad_slice");
  assert_null(ad_slice(x, 2, 0, 1, 1));
  assert_error(AD_EINVAL, "ad_slice");
  assert_null(ad_slice(ad_scalar(1), 0, 0, 1, 1));
  assert_error(AD_EINVAL, "ad_slice");
}

/* ------------------------------------------------------------------------
 * concat, stack
 * ---------------------------------------------------------------------- */

static void test_concat_axis0_and_last(void **state) {
  (void)state;
  ad_tensor *a = iota(2, SHAPE(1, 2));
  ad_tensor *b = ad_tensor_new(2, SHAPE(2, 2), VALUES(10, 11, 12, 13));
  ad_tensor *c0 = ad_concat(2, (ad_tensor *[]){a, b}, 0);
  assert_shape(c0, 2, 3, 2);
  assert_tensor_near(c0, VALUES(0, 1, 10, 11, 12, 13), 6, 0);
  ad_tensor *d = ad_tensor_new(2, SHAPE(2, 1), VALUES(7, 8));
  ad_tensor *c1 = ad_concat(2, (ad_tensor *[]){b, d}, -1);
  assert_shape(c1, 2, 2, 3);
  assert_tensor_near(c1, VALUES(10, 11, 7, 12, 13, 8), 6, 0);
  ad_tensor *one = ad_concat(1, (ad_tensor *[]){b}, 1);
  assert_tensors_close(one, b, 0);
  assert_false(shares(one, b));
}

static void test_concat_strided_inputs(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(2, 3));
  ad_tensor *t = ad_transpose(x); /* (3, 2) */
  ad_tensor *r = ad_slice(iota(2, SHAPE(3, 2)), 0, -1, INT64_MIN, -1);
  ad_tensor *e = ad_zeros(2, SHAPE(3, 0));
  ad_tensor *c = ad_concat(3, (ad_tensor *[]){t, e, r}, 1);
  assert_shape(c, 2, 3, 4);
  assert_tensor_near(c, VALUES(0, 3, 4, 5, 1, 4, 2, 3, 2, 5, 0, 1), 12, 0);
}

static void test_concat_errors(void **state) {
  (void)state;
  ad_tensor *a = iota(2, SHAPE(2, 3));
  ad_tensor *b = iota(2, SHAPE(2, 4));
  assert_null(ad_concat(2, (ad_tensor *[]){a, b}, 0));
  assert_error(AD_ESHAPE, "ad_concat");
  assert_null(ad_concat(2, (ad_tensor *[]){a, iota(1, SHAPE(3))}, 0));
  assert_error(AD_ESHAPE, "ad_concat");
  assert_null(ad_concat(2, (ad_tensor *[]){a, a}, 2));
  assert_error(AD_EINVAL, "ad_concat");
  assert_null(ad_concat(0, (ad_tensor *[]){a}, 0));
  assert_error(AD_EINVAL, "ad_concat");
  assert_null(ad_concat(1, (ad_tensor *[]){ad_scalar(1)}, 0));
  assert_true(ad_error() == AD_ESHAPE || ad_error() == AD_EINVAL);
  ad_error_clear();
}

static void test_stack_new_axis(void **state) {
  (void)state;
  ad_tensor *a = ad_tensor_new(1, SHAPE(3), VALUES(1, 2, 3));
  ad_tensor *b = ad_tensor_new(1, SHAPE(3), VALUES(4, 5, 6));
  ad_tensor *s0 = ad_stack(2, (ad_tensor *[]){a, b}, 0);
  assert_shape(s0, 2, 2, 3);
  assert_tensor_near(s0, VALUES(1, 2, 3, 4, 5, 6), 6, 0);
  ad_tensor *s1 = ad_stack(2, (ad_tensor *[]){a, b}, -1);
  assert_shape(s1, 2, 3, 2);
  assert_tensor_near(s1, VALUES(1, 4, 2, 5, 3, 6), 6, 0);
  ad_tensor *rev = ad_slice(b, 0, -1, INT64_MIN, -1);
  ad_tensor *s2 = ad_stack(2, (ad_tensor *[]){rev, a}, 1);
  assert_tensor_near(s2, VALUES(6, 1, 5, 2, 4, 3), 6, 0);
  ad_tensor *sc = ad_stack(2, (ad_tensor *[]){ad_scalar(1), ad_scalar(2)}, 0);
  assert_shape(sc, 1, 2);
}

static void test_stack_errors(void **state) {
  (void)state;
  ad_tensor *a = iota(1, SHAPE(3));
  ad_tensor *b = iota(1, SHAPE(4));
  assert_null(ad_stack(2, (ad_tensor *[]){a, b}, 0));
  assert_error(AD_ESHAPE, "ad_stack");
  assert_null(ad_stack(2, (ad_tensor *[]){a, a}, 2));
  assert_error(AD_EINVAL, "ad_stack");
  assert_null(ad_stack(2, (ad_tensor *[]){a, a}, -3));
  assert_error(AD_EINVAL, "ad_stack");
}

/* ------------------------------------------------------------------------
 * gather, scatter_add
 * ---------------------------------------------------------------------- */

static void test_gather_negative_and_repeated(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(3, 2));
  ad_tensor *g = ad_gather(x, 0, (const int64_t[]){2, -3, 2, -1}, 4);
  assert_shape(g, 2, 4, 2);
  assert_tensor_near(g, VALUES(4, 5, 0, 1, 4, 5, 4, 5), 8, 0);
  ad_tensor *h = ad_gather(x, -1, (const int64_t[]){1}, 1);
  assert_shape(h, 2, 3, 1);
  assert_tensor_near(h, VALUES(1, 3, 5), 3, 0);
  ad_tensor *e = ad_gather(x, 1, NULL, 0);
  assert_shape(e, 2, 3, 0);
}

static void test_gather_from_strided_view(void **state) {
  (void)state;
  ad_tensor *x = ad_transpose(iota(2, SHAPE(3, 2))); /* [[0,2,4],[1,3,5]] */
  ad_tensor *g = ad_gather(x, 1, (const int64_t[]){2, 0}, 2);
  assert_tensor_near(g, VALUES(4, 0, 5, 1), 4, 0);
}

static void test_gather_errors(void **state) {
  (void)state;
  ad_tensor *x = iota(2, SHAPE(3, 2));
  assert_null(ad_gather(x, 0, (const int64_t[]){0, 3}, 2));
  assert_error(AD_EINVAL, "index 3");
  assert_null(ad_gather(x, 0, (const int64_t[]){-4}, 1));
  assert_error(AD_EINVAL, "index -4");
  assert_null(ad_gather(x, 2, (const int64_t[]){0}, 1));
  assert_error(AD_EINVAL, "ad_gather");
}

static void test_scatter_add_accumulates_repeats(void **state) {
  (void)state;
  ad_tensor *g = ad_tensor_new(2, SHAPE(3, 2), VALUES(1, 2, 10, 20, 100, 200));
  ad__attr a = {.axis = 0,
                .ndim = 2,
                .shape = {4, 2},
                .n = 3,
                .idx = (const int64_t[]){1, -3, 3}};
  ad_tensor *s = kern(ad__k_scatter_add, 1, &g, &a);
  assert_shape(s, 2, 4, 2);
  assert_tensor_near(s, VALUES(0, 0, 11, 22, 0, 0, 100, 200), 8, 0);
}

static void test_gather_scatter_add_adjoint(void **state) {
  (void)state;
  const int64_t idx[] = {4, 0, -1, 2, 2, -5};
  for (int axis = 0; axis < 3; axis++) {
    int64_t shape[3] = {5, 5, 5};
    ad_tensor *x = noise(3, SHAPE(5, 5, 5), 1 + (uint64_t)axis);
    ad_tensor *y = ad_gather(x, axis, idx, 6);
    int64_t gshape[3] = {5, 5, 5};
    gshape[axis] = 6;
    ad_tensor *g = noise(3, gshape, 7 + (uint64_t)axis);
    ad__attr a = {.axis = axis, .ndim = 3, .n = 6, .idx = idx};
    memcpy(a.shape, shape, sizeof shape);
    ad_tensor *xt = kern(ad__k_scatter_add, 1, &g, &a);
    assert_shape(xt, 3, 5, 5, 5);
    assert_true(fabs(dot(y, g) - dot(x, xt)) < 1e-12);
  }
}

static void test_scatter_add_errors(void **state) {
  (void)state;
  ad_tensor *g = iota(2, SHAPE(2, 3));
  ad__attr a = {.axis = 0,
                .ndim = 2,
                .shape = {4, 3},
                .n = 2,
                .idx = (const int64_t[]){0, 4}};
  assert_null(ad__k_scatter_add(1, &g, &a));
  assert_error(AD_EINVAL, "index 4");
  a.idx = (const int64_t[]){0, 1};
  a.shape[1] = 5;
  assert_null(ad__k_scatter_add(1, &g, &a));
  assert_error(AD_ESHAPE, "ad_scatter_add");
  a.shape[1] = 3;
  a.n = 3;
  assert_null(ad__k_scatter_add(1, &g, &a));
  assert_error(AD_ESHAPE, "ad_scatter_add");
}

/* ------------------------------------------------------------------------
 * slice_grad, identity
 * ---------------------------------------------------------------------- */

static void test_slice_grad_places_values(void **state) {
  (void)state;
  ad_tensor *g = ad_tensor_new(2, SHAPE(2, 2), VALUES(1, 2, 3, 4));
  ad__attr a = {.axis = 1, .ndim = 2, .shape = {2, 5}, .start = 4, .step = -3};
  ad_tensor *r = kern(ad__k_slice_grad, 1, &g, &a);
  assert_shape(r, 2, 2, 5);
  assert_tensor_near(r, VALUES(0, 2, 0, 0, 1, 0, 4, 0, 0, 3), 10, 0);
}

static void test_slice_slice_grad_adjoint(void **state) {
  (void)state;
  struct {
    int axis;
    int64_t start, stop, step;
  } cases[] = {{0, 1, 5, 2},
               {1, -1, INT64_MIN, -1},
               {-1, 0, 6, 3},
               {2, 5, 0, -2},
               {0, 3, 3, 1}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ad_tensor *x = noise(3, SHAPE(6, 6, 6), 3 + c);
    ad_tensor *y = ad_slice(x, cases[c].axis, cases[c].start, cases[c].stop,
                            cases[c].step);
    assert_non_null(y);
    ad_tensor *g = noise(y->ndim, y->shape, 11 + c);
    int ax = cases[c].axis < 0 ? cases[c].axis + 3 : cases[c].axis;
    int64_t start = cases[c].start, stop = cases[c].stop, count;
    assert_int_equal(
        ad__slice_bounds("t", 6, &start, &stop, cases[c].step, &count), AD_OK);
    ad__attr a = {.axis = ax,
                  .ndim = 3,
                  .shape = {6, 6, 6},
                  .start = start,
                  .step = cases[c].step};
    ad_tensor *xt = kern(ad__k_slice_grad, 1, &g, &a);
    assert_shape(xt, 3, 6, 6, 6);
    assert_true(fabs(dot(y, g) - dot(x, xt)) < 1e-12);
  }
}

static void test_slice_grad_errors(void **state) {
  (void)state;
  ad_tensor *g = iota(2, SHAPE(2, 3));
  ad__attr a = {.axis = 0, .ndim = 2, .shape = {4, 4}, .start = 0, .step = 1};
  assert_null(ad__k_slice_grad(1, &g, &a));
  assert_error(AD_ESHAPE, "ad_slice_grad");
  a.shape[1] = 3;
  a.start = 3;
  assert_null(ad__k_slice_grad(1, &g, &a));
  assert_error(AD_EINVAL, "ad_slice_grad");
  a.start = 0;
  a.axis = 5;
  assert_null(ad__k_slice_grad(1, &g, &a));
  assert_error(AD_EINVAL, "ad_slice_grad");
}

static void test_identity_is_new_view(void **state) {
  (void)state;
  ad_tensor *x = ad_transpose(iota(2, SHAPE(2, 3)));
  ad_tensor *y = kern(ad__k_identity, 1, &x, NULL);
  assert_shape(y, 2, 3, 2);
  assert_true(shares(x, y));
  assert_true(x != y);
  assert_true(x->id != y->id);
  assert_true(x->data == y->data);
  assert_int_equal(y->strides[0], x->strides[0]);
  assert_int_equal(y->strides[1], x->strides[1]);
  assert_tensors_close(y, x, 0);
}

/* Every allocation a shape kernel makes may fail (the result, a view
 * header): NULL with AD_ENOMEM and nothing leaked. */
static void test_out_of_memory_is_an_error(void **state) {
  (void)state;
  ad_tensor *x = ad_transpose(iota(2, SHAPE(3, 4)));
  int failures = 0;
  for (long n = 1; n <= 4; n++) {
    for (int k = 0; k < 7; k++) {
      ad_tensor *r;
      ad__fail_alloc_after(n);
      switch (k) {
        case 0:
          r = ad_reshape(x, 1, SHAPE(12));
          break;
        case 1:
          r = ad_slice(x, 0, 0, 4, 2);
          break;
        case 2:
          r = ad_concat(2, (ad_tensor *[]){x, x}, 0);
          break;
        case 3:
          r = ad_stack(2, (ad_tensor *[]){x, x}, 0);
          break;
        case 4:
          r = ad_gather(x, 1, (const int64_t[]){0, 2}, 2);
          break;
        case 5: {
          ad__attr a = {
              .axis = 0, .ndim = 2, .shape = {8, 3}, .start = 0, .step = 2};
          r = kern(ad__k_slice_grad, 1, &x, &a);
          break;
        }
        default: {
          ad__attr a = {.axis = 0,
                        .ndim = 2,
                        .shape = {4, 3},
                        .n = 4,
                        .idx = (const int64_t[]){0, 1, 1, 3}};
          r = kern(ad__k_scatter_add, 1, &x, &a);
          break;
        }
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
      scoped_test(test_reshape_values_share_storage),
      scoped_test(test_reshape_infers_minus_one),
      scoped_test(test_reshape_view_outlives_base),
      scoped_test(test_reshape_transposed_copies_in_row_major_order),
      scoped_test(test_reshape_strided_view_without_copy),
      scoped_test(test_reshape_errors),
      scoped_test(test_transpose_is_a_view),
      scoped_test(test_transpose_batched_and_low_rank),
      scoped_test(test_permute_matches_index_formula),
      scoped_test(test_permute_rejects_non_permutations),
      scoped_test(test_expand_dims_positions),
      scoped_test(test_expand_dims_errors),
      scoped_test(test_squeeze_removes_unit_axis),
      scoped_test(test_squeeze_errors),
      scoped_test(test_broadcast_to_is_a_stride_zero_view),
      scoped_test(test_broadcast_to_errors),
      scoped_test(test_slice_basic_view),
      scoped_test(test_slice_negative_start_and_step),
      scoped_test(test_slice_along_negative_axis),
      scoped_test(test_slice_of_slice_and_empty),
      scoped_test(test_slice_view_outlives_base),
      scoped_test(test_slice_errors),
      scoped_test(test_concat_axis0_and_last),
      scoped_test(test_concat_strided_inputs),
      scoped_test(test_concat_errors),
      scoped_test(test_stack_new_axis),
      scoped_test(test_stack_errors),
      scoped_test(test_gather_negative_and_repeated),
      scoped_test(test_gather_from_strided_view),
      scoped_test(test_gather_errors),
      scoped_test(test_scatter_add_accumulates_repeats),
      scoped_test(test_gather_scatter_add_adjoint),
      scoped_test(test_scatter_add_errors),
      scoped_test(test_slice_grad_places_values),
      scoped_test(test_slice_slice_grad_adjoint),
      scoped_test(test_slice_grad_errors),
      scoped_test(test_identity_is_new_view),
      scoped_test(test_out_of_memory_is_an_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
