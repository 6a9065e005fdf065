/* The hostile input catalogue: inputs a careless or malicious caller may
 * hand to libad, each of which must end in a clear error or a correct
 * result, never a crash, a sanitizer report or a leak.
 *
 *   - shapes whose element count overflows int64, or too large to
 *     allocate, and ranks above AD_MAX_DIMS;
 *   - empty tensors whose other axes are huge (valid: nothing to store),
 *     through the ops whose arithmetic on strides and counts could
 *     overflow;
 *   - NaN and infinities through every op and its first and second
 *     derivatives (IEEE 754 propagation, element by element);
 *   - empty tensors (size-0 axes) through every op and its derivatives;
 *   - deep graphs: 10^6 ops through a backward pass and through nested
 *     forward levels (fewer under sanitizers and AD_TEST_QUICK);
 *   - a released tensor passed again (detected in -DAD_DEBUG_POOL builds);
 *   - tapes and levels ended out of order, scopes left unbalanced.
 *
 * docs/RELIABILITY.md lists what these tests found. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include "testutil.h"

/* Only for ad__fail_alloc_after, to show that a shape is refused before
 * anything is allocated, and ad__scope_depth. */
#include "internal.h"

int ad__scope_depth(void);


#define M61 ((int64_t)1 << 61)
#define M62 ((int64_t)1 << 62)

/* Fail unless the last error is code and its message names op; clear. */
static void expect_error(ad_status code, const char *op) {
  assert_error(code, op);
}

/* ========================================================================
 * Shapes that overflow, ranks above the maximum
 * ====================================================================== */

/* Each constructor refuses a shape before allocating anything: with the
 * first allocation set to fail, the error is still AD_EINVAL. */
static void overflowing_shapes_are_refused_before_allocating(void **state) {
  (void)state;
  static const int64_t shapes[][3] = {
      {INT64_MAX, 2, 1},          /* count overflows */
      {(int64_t)1 << 32, (int64_t)1 << 32, 1}, /* exactly 2^64 */
      {3, INT64_MAX / 2, 1},      /* overflows at the second axis */
      {(int64_t)1 << 61, 1, 1},   /* fits int64, not as bytes */
      {M62, 2, 2},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int64_t *s = shapes[i];
    ad__fail_alloc_after(1);
    assert_null(ad_zeros(3, s));
    expect_error(AD_EINVAL, "ad_zeros");
    assert_null(ad_ones(3, s));
    expect_error(AD_EINVAL, "ad_ones");
    assert_null(ad_full(3, s, 1.0));
    expect_error(AD_EINVAL, "ad_full");
    assert_null(ad_tensor_new(3, s, NULL));
    expect_error(AD_EINVAL, "ad_tensor_new");
    assert_null(ad_rand_uniform(3, s, 0, 1));
    expect_error(AD_EINVAL, "ad_rand_uniform");
    assert_null(ad_rand_normal(3, s, 0, 1));
    expect_error(AD_EINVAL, "ad_rand_normal");
    ad__fail_alloc_after(0);
  }
  /* Targets of shape ops. */
  ad_tensor *e = ad_zeros(1, SHAPE(0));
  ad_tensor *one = ad_ones(1, SHAPE(1));
  assert_null(ad_reshape(e, 2, SHAPE(INT64_MAX, 2)));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  assert_null(ad_broadcast_to(one, 2, SHAPE(INT64_MAX, 2)));
  expect_error(AD_EINVAL, "ad_broadcast_to");
  assert_null(ad_broadcast_to(one, 2, SHAPE(-1, 2)));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  /* Sizes given as counts. */
  assert_null(ad_eye(INT64_MAX));
  expect_error(AD_EINVAL, "ad_eye");
  assert_null(ad_eye(-1));
  expect_error(AD_EINVAL, "ad_eye");
  assert_null(ad_linspace(0, 1, INT64_MAX));
  expect_error(AD_EINVAL, "ad_linspace");
  assert_null(ad_arange(0, 1e300, 1e-300));
  expect_error(AD_EINVAL, "ad_arange");
  assert_null(ad_arange(0, INFINITY, 1));
  expect_error(AD_EINVAL, "ad_arange");
}

/* A request that fits int64 but not in memory fails with AD_ENOMEM naming
 * the op.  Not under sanitizers (whose allocators abort on such sizes
 * unless allocator_may_return_null is set) nor under valgrind
 * (AD_TEST_QUICK), which warns about it. */
#if !UNDER_SANITIZER
static void allocation_too_large_for_memory_is_enomem(void **state) {
  (void)state;
  if (test_quick()) skip();
  ad_scope_begin();
  /* 2^50 doubles: 8 PiB. */
  assert_null(ad_zeros(2, SHAPE((int64_t)1 << 40, (int64_t)1 << 10)));
  expect_error(AD_ENOMEM, "ad_zeros");
  ad_tensor *one = ad_ones(2, SHAPE(1, 1));
  ad_tensor *big = ad_broadcast_to(one, 2, SHAPE((int64_t)1 << 40, 1024));
  assert_non_null(big); /* a view: nothing allocated */
  assert_null(ad_exp(big));
  expect_error(AD_ENOMEM, "ad_exp");
  assert_int_equal(ad_scope_end(), AD_OK);
}
#endif

static ad_tensor *sum_of_sines(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_sin(x));
}

static void ranks_above_the_maximum_are_refused(void **state) {
  (void)state;
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_null(ad_zeros(9, nine));
  expect_error(AD_EINVAL, "ad_zeros");
  assert_null(ad_tensor_new(AD_MAX_DIMS + 1, nine, NULL));
  expect_error(AD_EINVAL, "ad_tensor_new");
  assert_null(ad_zeros(-1, nine));
  expect_error(AD_EINVAL, "ad_zeros");
  assert_null(ad_zeros(INT_MAX, nine));
  expect_error(AD_EINVAL, "ad_zeros");
  ad_tensor *r8 = ad_ones(8, nine);
  assert_non_null(r8);
  assert_null(ad_reshape(r8, 9, nine));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  assert_null(ad_broadcast_to(r8, 9, nine));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  assert_null(ad_expand_dims(r8, 0));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  assert_null(ad_stack(2, (ad_tensor *[]){r8, r8}, 0));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  /* Derivatives whose shape would have rank 10. */
  ad_tensor *x5 = ad_ones(5, nine);
  assert_null(ad_hessian(sum_of_sines, NULL, x5));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(tape, x5);
  ad_tensor *y = ad_sin(x5);
  ad_tape_end(tape);
  assert_null(ad_tape_jacobian(tape, y, x5));
  expect_error(AD_ESHAPE, "ad_tape_jacobian");
  ad_tape_free(tape);
}

/* ========================================================================
 * Empty tensors whose other axes are huge.  Valid (they hold nothing),
 * but every count, stride and offset computed from their axes can
 * overflow int64 -- undefined behaviour that UBSan reports (make asan).
 * These tests found the overflows listed in docs/RELIABILITY.md.
 * ====================================================================== */

static void reductions_of_huge_empty_tensors(void **state) {
  (void)state;
  ad_tensor *e = ad_zeros(3, SHAPE(0, M61, M61));
  assert_non_null(e);
  assert_int_equal(ad_numel(e), 0);
  /* Reducing the two huge axes: the reduced count overflows. */
  assert_shape(ad_sum(e, 2, (const int[]){1, 2}, false), 1, 0);
  assert_shape(ad_mean(e, 2, (const int[]){1, 2}, false), 1, 0);
  assert_shape(ad_prod(e, 2, (const int[]){1, 2}, true), 3, 0, 1, 1);
  assert_shape(ad_max(e, 2, (const int[]){1, 2}, false), 1, 0);
  assert_shape(ad_logsumexp(e, 0, NULL, false), 0, 0);
  /* Reducing the empty axis leaves a huge result: refused. */
  assert_null(ad_sum(e, 1, (const int[]){0}, false));
  expect_error(AD_EINVAL, "ad_sum");
  assert_null(ad_max(e, 1, (const int[]){0}, false));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
}

static void views_of_huge_empty_tensors(void **state) {
  (void)state;
  /* Axis 1 larger than 2^62, so that a step of 2^62 takes 2 entries. */
  ad_tensor *e = ad_zeros(3, SHAPE(0, M62 + 1, 3));
  assert_non_null(e);
  /* slice: stride * step and start * stride overflow. */
  assert_shape(ad_slice(e, 1, 0, INT64_MAX, M62), 3, 0, 2, 3);
  assert_shape(ad_slice(e, 1, M62, M62 + 1, 1), 3, 0, 1, 3);
  assert_shape(ad_slice(e, 1, -1, INT64_MIN, -M62), 3, 0, 2, 3);
  /* expand_dims: stride * size overflows. */
  ad_tensor *f = ad_zeros(3, SHAPE(0, M61, M61));
  assert_shape(ad_expand_dims(f, 1), 4, 0, 1, M61, M61);
  assert_shape(ad_expand_dims(f, 0), 4, 1, 0, M61, M61);
  /* Views of views: the density check multiplies the axes. */
  assert_shape(ad_transpose(ad_slice(f, 1, 0, INT64_MAX, 2)), 3, 0, M61,
               M61 / 2);
  assert_shape(ad_permute(f, (const int[]){2, 0, 1}), 3, M61, 0, M61);
  /* gather: index * stride overflows. */
  assert_shape(ad_gather(f, 1, (const int64_t[]){M61 - 1, -1, 0}, 3), 3, 0,
               3, M61);
  assert_shape(ad_reshape(f, 1, SHAPE(-1)), 1, 0);
  /* A target whose huge sizes come before its 0. */
  ad_tensor *z = ad_zeros(4, SHAPE(M61 + 2, M61, 1, 0));
  assert_shape(ad_reshape(z, 3, SHAPE(M61 + 2, M61, 0)), 3, M61 + 2, M61, 0);
  assert_shape(ad_squeeze(z, 2), 3, M61 + 2, M61, 0);
  /* Single-axis ops split the shape into (outer, n, inner). */
  assert_shape(ad_argmax(z, 2), 3, M61 + 2, M61, 0);
  assert_shape(ad_softmax(z, 2), 4, M61 + 2, M61, 1, 0);
  assert_shape(ad_log_softmax(z, 2), 4, M61 + 2, M61, 1, 0);
  ad_tensor *g = ad_expand_dims(f, 2);
  assert_shape(ad_reshape(g, 3, SHAPE(M61, 0, M61)), 3, M61, 0, M61);
  assert_shape(ad_squeeze(g, 2), 3, 0, M61, M61);
  assert_shape(ad_exp(f), 3, 0, M61, M61);
  assert_shape(ad_add(f, ad_ones(1, SHAPE(1))), 3, 0, M61, M61);
  assert_shape(ad_softmax(f, 1), 3, 0, M61, M61);
  assert_shape(ad_argmax(f, 2), 2, 0, M61);
  /* Joins whose joined axis overflows are refused. */
  assert_null(ad_concat(2, (ad_tensor *[]){e, e}, 1));
  assert_int_not_equal(ad_error(), AD_OK);
  ad_error_clear();
  assert_shape(ad_stack(2, (ad_tensor *[]){f, f}, 0), 4, 2, 0, M61, M61);
  /* Joined along an axis whose stride is huge: offset x stride. */
  assert_shape(ad_concat(2, (ad_tensor *[]){f, f}, 1), 3, 0, 2 * M61, M61);
  assert_shape(ad_stack(3, (ad_tensor *[]){f, f, f}, 2), 4, 0, M61, 3, M61);
}

/* The same views under a tape, a forward level and a second order: their
 * rules (slice_grad, scatter_add) compute the same counts and strides. */
static ad_tensor *slice_huge(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_square(ad_slice(x, 1, 0, INT64_MAX, M62)));
}

/* expand_dims and squeeze: their rules reshape back to the huge empty
 * shape, whose size 0 comes last. */
static ad_tensor *expand_huge(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *t = ad_permute(x, (const int[]){1, 2, 0}); /* (M62+1, 3, 0) */
  return ad_sum_all(ad_square(ad_squeeze(ad_expand_dims(ad_expand_dims(t, 2),
                                                        0), 0)));
}

static ad_tensor *gather_huge(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_gather(x, 1, (const int64_t[]){M62, -1}, 2));
}

/* A unit-step slice: its reverse rule has a fast path that copies one
 * block, sized from the strides of the (empty, huge) result. */
static ad_tensor *slice_unit(ad_tensor *x, void *ctx) {
  (void)ctx;
  /* The square makes the slice's cotangent a fresh, dense tensor. */
  return ad_sum_all(ad_square(ad_slice(x, 1, 1, 3, 1)));
}

static void derivatives_through_huge_empty_views(void **state) {
  (void)state;
  ad_tensor *e = ad_zeros(3, SHAPE(0, M62 + 1, 3));
  ad_fn fns[] = {slice_huge, gather_huge, expand_huge};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    assert_shape(ad_grad(fns[i], NULL, e), 3, 0, M62 + 1, 3);
    assert_shape(ad_jvp(fns[i], NULL, e, e, NULL), 0, 0);
    assert_shape(ad_hvp(fns[i], NULL, e, e), 3, 0, M62 + 1, 3);
    /* Reverse over reverse: the rule of slice_grad slices again. */
    ad_tape *outer = ad_tape_begin(0);
    ad_tape_watch(outer, e);
    ad_tensor *g = ad_grad(fns[i], NULL, e);
    ad_tensor *s = ad_sum_all(g);
    ad_tape_end(outer);
    /* (assert_shape evaluates its argument more than once.) */
    ad_tensor *h = ad_tape_gradient(outer, s, e);
    assert_shape(h, 3, 0, M62 + 1, 3);
    ad_tape_free(outer);
  }
}

/* ========================================================================
 * The op catalogue for NaN, infinities and empty tensors
 * ====================================================================== */

typedef ad_tensor *(*hfn)(ad_tensor *const *x);

enum {
  SK_VEC,    /* inputs (2, 3) */
  SK_SQUARE, /* inputs (2, 2), symmetric positive definite */
  SK_NHWC,   /* x (1, 3, 3, 2), w (2, 2, 2, 2) */
};

enum {
  ELEMENTWISE = 1u,  /* output element i depends on input element i only */
  REJECTS_NONFINITE = 2u, /* may refuse NaN or infinite input (AD_EINVAL) */
  EMPTY_AXIS_ERROR = 4u,  /* refuses a reduction over a size-0 axis */
};

typedef struct hostile_op {
  const char *name;
  hfn f;
  int nin;
  int shapes;
  unsigned flags;
  double (*ref)(double); /* libm's value at NaN and the infinities */
} hostile_op;

static double r_neg(double x) { return -x; }
static double r_square(double x) { return x * x; }
static double r_sigmoid(double x) {
  return isnan(x) ? x : x > 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}
static double r_softplus(double x) {
  return isnan(x) ? x : x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}
static double r_relu(double x) { return isnan(x) ? x : x > 0 ? x : 0.0; }
static double r_sign(double x) {
  return isnan(x) ? x : x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
}

#define U1(op) \
  static ad_tensor *h_##op(ad_tensor *const *x) { return ad_##op(x[0]); }
#define B2(op) \
  static ad_tensor *h_##op(ad_tensor *const *x) { return ad_##op(x[0], x[1]); }
U1(neg) U1(exp) U1(log) U1(log1p) U1(expm1) U1(sqrt) U1(square) U1(abs)
U1(sin) U1(cos) U1(tan) U1(asin) U1(acos) U1(atan) U1(sinh) U1(cosh)
U1(tanh) U1(sigmoid) U1(softplus) U1(relu) U1(erf) U1(sign) U1(floor)
U1(transpose) U1(inv) U1(cholesky) U1(det) U1(logdet) U1(stop_gradient)
U1(sum_all)
B2(add) B2(sub) B2(mul) B2(div) B2(pow) B2(maximum) B2(minimum) B2(atan2)
B2(mod) B2(less) B2(greater) B2(equal) B2(matmul) B2(solve)
#undef U1
#undef B2

static ad_tensor *h_add_scalar(ad_tensor *const *x) {
  return ad_add_scalar(x[0], 0.5);
}
static ad_tensor *h_mul_scalar(ad_tensor *const *x) {
  return ad_mul_scalar(x[0], -2.0);
}
static ad_tensor *h_pow_scalar(ad_tensor *const *x) {
  return ad_pow_scalar(x[0], 1.5);
}
static ad_tensor *h_clip(ad_tensor *const *x) { return ad_clip(x[0], 0.2, 0.6); }
static ad_tensor *h_where(ad_tensor *const *x) {
  return ad_where(ad_greater(x[0], x[1]), x[0], x[1]);
}
static ad_tensor *h_sum0(ad_tensor *const *x) {
  return ad_sum(x[0], 1, (const int[]){0}, false);
}
static ad_tensor *h_mean0(ad_tensor *const *x) {
  return ad_mean(x[0], 1, (const int[]){0}, true);
}
static ad_tensor *h_prod0(ad_tensor *const *x) {
  return ad_prod(x[0], 1, (const int[]){0}, false);
}
static ad_tensor *h_max0(ad_tensor *const *x) {
  return ad_max(x[0], 1, (const int[]){0}, false);
}
static ad_tensor *h_min_all(ad_tensor *const *x) {
  return ad_min(x[0], 0, NULL, false);
}
static ad_tensor *h_lse0(ad_tensor *const *x) {
  return ad_logsumexp(x[0], 1, (const int[]){0}, false);
}
static ad_tensor *h_argmax0(ad_tensor *const *x) { return ad_argmax(x[0], 0); }
static ad_tensor *h_softmax1(ad_tensor *const *x) {
  return ad_softmax(x[0], -1);
}
static ad_tensor *h_log_softmax0(ad_tensor *const *x) {
  return ad_log_softmax(x[0], 0);
}
static ad_tensor *h_reshape(ad_tensor *const *x) {
  return ad_reshape(x[0], 2, SHAPE(-1, 1));
}
static ad_tensor *h_permute(ad_tensor *const *x) {
  return ad_permute(x[0], (const int[]){1, 0});
}
static ad_tensor *h_expand_dims(ad_tensor *const *x) {
  return ad_expand_dims(x[0], 1);
}
static ad_tensor *h_squeeze(ad_tensor *const *x) {
  return ad_squeeze(ad_expand_dims(x[0], 0), 0);
}
static ad_tensor *h_broadcast_to(ad_tensor *const *x) {
  const int64_t *s = ad_shape(x[0]);
  return s ? ad_broadcast_to(x[0], 3, SHAPE(2, s[0], s[1])) : NULL;
}
static ad_tensor *h_slice(ad_tensor *const *x) {
  return ad_slice(x[0], -1, -1, INT64_MIN, -2);
}
static ad_tensor *h_concat(ad_tensor *const *x) {
  return ad_concat(2, (ad_tensor *const[]){x[0], x[1]}, 1);
}
static ad_tensor *h_stack(ad_tensor *const *x) {
  return ad_stack(2, (ad_tensor *const[]){x[0], x[1]}, 2);
}
static ad_tensor *h_gather(ad_tensor *const *x) {
  return ad_gather(x[0], 1, (const int64_t[]){2, 0, -1, 2}, 4);
}
static ad_tensor *h_conv2d(ad_tensor *const *x) {
  return ad_conv2d(x[0], x[1], 1, 1, 1, 0);
}
static ad_tensor *h_max_pool2d(ad_tensor *const *x) {
  return ad_max_pool2d(x[0], 2, 2, 1, 1);
}
static ad_tensor *h_checkpoint_fn(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_mul(ad_sin(x), x);
}
static ad_tensor *h_checkpoint(ad_tensor *const *x) {
  return ad_checkpoint(h_checkpoint_fn, NULL, x[0]);
}

/* A custom op with a VJP only: y = x^3. */
static ad_tensor *h_custom(ad_tensor *const *x) { return test_cube(x[0]); }

static const hostile_op catalogue[] = {
    {"ad_neg", h_neg, 1, SK_VEC, ELEMENTWISE, r_neg},
    {"ad_exp", h_exp, 1, SK_VEC, ELEMENTWISE, exp},
    {"ad_log", h_log, 1, SK_VEC, ELEMENTWISE, log},
    {"ad_log1p", h_log1p, 1, SK_VEC, ELEMENTWISE, log1p},
    {"ad_expm1", h_expm1, 1, SK_VEC, ELEMENTWISE, expm1},
    {"ad_sqrt", h_sqrt, 1, SK_VEC, ELEMENTWISE, sqrt},
    {"ad_square", h_square, 1, SK_VEC, ELEMENTWISE, r_square},
    {"ad_abs", h_abs, 1, SK_VEC, ELEMENTWISE, fabs},
    {"ad_sin", h_sin, 1, SK_VEC, ELEMENTWISE, sin},
    {"ad_cos", h_cos, 1, SK_VEC, ELEMENTWISE, cos},
    {"ad_tan", h_tan, 1, SK_VEC, ELEMENTWISE, tan},
    {"ad_asin", h_asin, 1, SK_VEC, ELEMENTWISE, asin},
    {"ad_acos", h_acos, 1, SK_VEC, ELEMENTWISE, acos},
    {"ad_atan", h_atan, 1, SK_VEC, ELEMENTWISE, atan},
    {"ad_sinh", h_sinh, 1, SK_VEC, ELEMENTWISE, sinh},
    {"ad_cosh", h_cosh, 1, SK_VEC, ELEMENTWISE, cosh},
    {"ad_tanh", h_tanh, 1, SK_VEC, ELEMENTWISE, tanh},
    {"ad_sigmoid", h_sigmoid, 1, SK_VEC, ELEMENTWISE, r_sigmoid},
    {"ad_softplus", h_softplus, 1, SK_VEC, ELEMENTWISE, r_softplus},
    {"ad_relu", h_relu, 1, SK_VEC, ELEMENTWISE, r_relu},
    {"ad_erf", h_erf, 1, SK_VEC, ELEMENTWISE, erf},
    {"ad_sign", h_sign, 1, SK_VEC, ELEMENTWISE, r_sign},
    {"ad_floor", h_floor, 1, SK_VEC, ELEMENTWISE, floor},
    {"ad_add_scalar", h_add_scalar, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_mul_scalar", h_mul_scalar, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_pow_scalar", h_pow_scalar, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_clip", h_clip, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_add", h_add, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_sub", h_sub, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_mul", h_mul, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_div", h_div, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_pow", h_pow, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_maximum", h_maximum, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_minimum", h_minimum, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_atan2", h_atan2, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_mod", h_mod, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_less", h_less, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_greater", h_greater, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_equal", h_equal, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_where", h_where, 2, SK_VEC, ELEMENTWISE, NULL},
    {"ad_stop_gradient", h_stop_gradient, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_custom_apply", h_custom, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_checkpoint", h_checkpoint, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_sum", h_sum0, 1, SK_VEC, 0, NULL},
    {"ad_mean", h_mean0, 1, SK_VEC, 0, NULL},
    {"ad_prod", h_prod0, 1, SK_VEC, 0, NULL},
    {"ad_max", h_max0, 1, SK_VEC, EMPTY_AXIS_ERROR, NULL},
    {"ad_min", h_min_all, 1, SK_VEC, EMPTY_AXIS_ERROR, NULL},
    {"ad_logsumexp", h_lse0, 1, SK_VEC, 0, NULL},
    {"ad_sum", h_sum_all, 1, SK_VEC, 0, NULL},
    {"ad_argmax", h_argmax0, 1, SK_VEC, EMPTY_AXIS_ERROR, NULL},
    {"ad_softmax", h_softmax1, 1, SK_VEC, 0, NULL},
    {"ad_log_softmax", h_log_softmax0, 1, SK_VEC, 0, NULL},
    {"ad_reshape", h_reshape, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_transpose", h_transpose, 1, SK_VEC, 0, NULL},
    {"ad_permute", h_permute, 1, SK_VEC, 0, NULL},
    {"ad_expand_dims", h_expand_dims, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_squeeze", h_squeeze, 1, SK_VEC, ELEMENTWISE, NULL},
    {"ad_broadcast_to", h_broadcast_to, 1, SK_VEC, 0, NULL},
    {"ad_slice", h_slice, 1, SK_VEC, 0, NULL},
    {"ad_concat", h_concat, 2, SK_VEC, 0, NULL},
    {"ad_stack", h_stack, 2, SK_VEC, 0, NULL},
    {"ad_gather", h_gather, 1, SK_VEC, 0, NULL},
    {"ad_matmul", h_matmul, 2, SK_SQUARE, 0, NULL},
    {"ad_solve", h_solve, 2, SK_SQUARE, REJECTS_NONFINITE, NULL},
    {"ad_inv", h_inv, 1, SK_SQUARE, REJECTS_NONFINITE, NULL},
    {"ad_cholesky", h_cholesky, 1, SK_SQUARE, REJECTS_NONFINITE, NULL},
    {"ad_det", h_det, 1, SK_SQUARE, REJECTS_NONFINITE, NULL},
    {"ad_logdet", h_logdet, 1, SK_SQUARE, REJECTS_NONFINITE, NULL},
    {"ad_conv2d", h_conv2d, 2, SK_NHWC, 0, NULL},
    {"ad_max_pool2d", h_max_pool2d, 1, SK_NHWC, 0, NULL},
};
#define NCATALOGUE ((int)(sizeof catalogue / sizeof catalogue[0]))

/* Finite inputs for op o in its domain (every value in (0.2, 0.9), SPD
 * matrices for linear algebra). */
static void base_inputs(const hostile_op *o, ad_tensor **x) {
  switch (o->shapes) {
    case SK_SQUARE:
      x[0] = ad_tensor_new(2, SHAPE(2, 2), VALUES(2.0, 0.5, 0.5, 1.5));
      x[1] = ad_tensor_new(2, SHAPE(2, 2), VALUES(0.3, 0.7, 0.4, 0.6));
      break;
    case SK_NHWC: {
      double xv[18], wv[16];
      for (int i = 0; i < 18; i++) xv[i] = 0.2 + 0.7 * ((i * 7) % 18) / 18.0;
      for (int i = 0; i < 16; i++) wv[i] = 0.3 + 0.5 * ((i * 5) % 16) / 16.0;
      x[0] = ad_tensor_new(4, SHAPE(1, 3, 3, 2), xv);
      x[1] = ad_tensor_new(4, SHAPE(2, 2, 2, 2), wv);
      break;
    }
    default:
      x[0] = ad_tensor_new(2, SHAPE(2, 3), VALUES(0.3, 0.5, 0.7, 0.4, 0.8, 0.6));
      x[1] = ad_tensor_new(2, SHAPE(2, 3), VALUES(0.6, 0.25, 0.35, 0.9, 0.45, 0.55));
  }
}

/* Empty inputs for op o: a size-0 leading axis. */
static void empty_inputs(const hostile_op *o, ad_tensor **x) {
  switch (o->shapes) {
    case SK_SQUARE:
      /* A batch of no matrices; then matrices of size 0 (below). */
      x[0] = ad_zeros(3, SHAPE(0, 2, 2));
      x[1] = ad_zeros(3, SHAPE(0, 2, 2));
      break;
    case SK_NHWC:
      x[0] = ad_zeros(4, SHAPE(0, 3, 3, 2));
      x[1] = ad_ones(4, SHAPE(2, 2, 2, 2));
      break;
    default:
      x[0] = ad_zeros(2, SHAPE(0, 3));
      x[1] = ad_zeros(2, SHAPE(0, 3));
  }
}

static int64_t read_all(ad_tensor *t, double *buf, int64_t cap) {
  int64_t n = ad_numel(t);
  assert_true(n >= 0 && n <= cap);
  assert_int_equal(ad_read(t, buf, n), AD_OK);
  return n;
}

/* Same value, NaN for NaN. */
static bool same_value(double a, double b) {
  return (isnan(a) && isnan(b)) || a == b ||
         fabs(a - b) <= 1e-12 * (fabs(a) + fabs(b));
}

typedef struct derivs {
  ad_tensor *y;          /* op(x) */
  ad_tensor *grad[2];    /* d sum(y) / d x_i (reverse) */
  ad_tensor *jvp;        /* d y along ones on every input (forward) */
  ad_tensor *hvp[2];     /* forward over reverse: d grad along ones */
} derivs;

static void expect_like(ad_tensor *t, const ad_tensor *like) {
  assert_non_null(t);
  assert_int_equal(ad_ndim(t), ad_ndim(like));
  for (int k = 0; k < ad_ndim(t); k++)
    assert_int_equal(ad_shape(t)[k], ad_shape(like)[k]);
}

/* Runs op o on x plainly, in reverse mode, in forward mode and forward
 * over reverse, checking the shapes of what each gives.  Returns false
 * with the error of the first failing call recorded (and every tape and
 * level it opened closed again). */
static bool run_all_modes(const hostile_op *o, ad_tensor **x, derivs *d) {
  memset(d, 0, sizeof *d);
  d->y = o->f(x);
  if (!d->y) return false;
  bool ok = true;
  /* Reverse. */
  ad_tape *tape = ad_tape_begin(0);
  for (int i = 0; i < o->nin; i++) ad_tape_watch(tape, x[i]);
  ad_tensor *s = ad_sum_all(o->f(x));
  ad_tape_end(tape);
  ok = s && ad_tape_gradients(tape, s, NULL, o->nin, x, d->grad,
                              AD_UNCONNECTED_ZERO) == AD_OK;
  ad_tape_free(tape);
  if (!ok) return false;
  /* Forward. */
  ad_tensor *ones[2];
  for (int i = 0; i < o->nin; i++)
    ones[i] = ad_ones(ad_ndim(x[i]), ad_shape(x[i]));
  ad_fwd *acc = ad_fwd_begin(o->nin, x, ones);
  ad_tensor *y = o->f(x);
  d->jvp = y ? ad_fwd_jvp(acc, y) : NULL;
  assert_int_equal(ad_fwd_end(acc), AD_OK);
  if (!d->jvp) return false;
  /* Forward over reverse. */
  acc = ad_fwd_begin(o->nin, x, ones);
  tape = ad_tape_begin(0);
  for (int i = 0; i < o->nin; i++) ad_tape_watch(tape, x[i]);
  s = ad_sum_all(o->f(x));
  ad_tape_end(tape);
  ad_tensor *g[2];
  ok = s && ad_tape_gradients(tape, s, NULL, o->nin, x, g,
                              AD_UNCONNECTED_ZERO) == AD_OK &&
       ad_fwd_jvps(acc, o->nin, g, d->hvp, AD_UNCONNECTED_ZERO) == AD_OK;
  ad_tape_free(tape);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
  if (!ok) return false;
  expect_like(d->jvp, d->y);
  for (int i = 0; i < o->nin; i++) {
    expect_like(d->grad[i], x[i]);
    expect_like(d->hvp[i], x[i]);
  }
  return true;
}

/* NaN, +inf and -inf in turn at element 0 of each input of every op:
 * never a crash; the result and all derivatives exist with the right
 * shapes (linear algebra may refuse non-finite matrices instead, with
 * AD_EINVAL naming the op); for elementwise ops the special value stays
 * at its element: every other element of the result, the gradient and
 * the tangent equals the finite run's, and element 0 of the result
 * follows libm. */
static void nan_and_infinities_through_every_op(void **state) {
  (void)state;
  static const double specials[] = {NAN, INFINITY, -INFINITY};
  int runs = 0;
  for (int k = 0; k < NCATALOGUE; k++) {
    const hostile_op *o = &catalogue[k];
    ad_scope_begin();
    ad_tensor *x[2];
    base_inputs(o, x);
    derivs ref;
    if (!run_all_modes(o, x, &ref))
      fail_shown("%s: fails on finite input: %s", o->name, ad_error_message());
    for (int in = 0; in < o->nin; in++) {
      for (int sp = 0; sp < 3; sp++) {
        double v = specials[sp];
        ad_tensor *xs[2] = {x[0], x[1]};
        double buf[64];
        int64_t n = read_all(x[in], buf, 64);
        buf[0] = v;
        xs[in] = ad_tensor_new(ad_ndim(x[in]), ad_shape(x[in]), buf);
        derivs d;
        runs++;
        if (!run_all_modes(o, xs, &d)) {
          /* Linear algebra may refuse a non-finite matrix, in the op or
           * in its derivatives (which solve with it). */
          if (!(o->flags & REJECTS_NONFINITE) || ad_error() != AD_EINVAL)
            fail_shown("%s: fails on %g in input %d: %s", o->name, v, in,
                     ad_error_message());
          ad_error_clear();
          continue;
        }
        (void)n;
        if (!(o->flags & ELEMENTWISE)) continue;
        double a[64], b[64];
        int64_t ny = read_all(d.y, a, 64);
        read_all(ref.y, b, 64);
        for (int64_t e = 1; e < ny; e++)
          if (!same_value(a[e], b[e]))
            fail_shown("%s: %g at element 0 of input %d changed element %lld "
                     "of the result",
                     o->name, v, in, (long long)e);
        if (o->ref && !same_value(a[0], o->ref(v)))
          fail_shown("%s(%g) is %g, libm says %g", o->name, v, a[0], o->ref(v));
        ny = read_all(d.jvp, a, 64);
        read_all(ref.jvp, b, 64);
        for (int64_t e = 1; e < ny; e++)
          if (!same_value(a[e], b[e]))
            fail_shown("%s: %g at element 0 of input %d changed element %lld "
                     "of the tangent",
                     o->name, v, in, (long long)e);
        for (int i = 0; i < o->nin; i++) {
          int64_t ng = read_all(d.grad[i], a, 64);
          read_all(ref.grad[i], b, 64);
          for (int64_t e = 1; e < ng; e++)
            if (!same_value(a[e], b[e]))
              fail_shown("%s: %g at element 0 of input %d changed element "
                       "%lld of the gradient of input %d",
                       o->name, v, in, (long long)e, i);
        }
      }
    }
    assert_int_equal(ad_scope_end(), AD_OK);
    ad_error_clear();
  }
  /* Every op, every input, three special values. */
  assert_true(runs >= 3 * NCATALOGUE);
  if (getenv("AD_HOSTILE_FIGURES"))
    printf("hostile | NaN and infinities | %d ops | %d runs, each plain, "
           "reverse, forward and forward over reverse\n",
           NCATALOGUE, runs);
}

/* IEEE 754 in the derivatives themselves: the derivative at NaN is NaN
 * for ops whose derivative depends on the value. */
static void derivatives_at_nan_are_nan(void **state) {
  (void)state;
  static const char *const smooth[] = {"ad_exp", "ad_log", "ad_sin",
                                       "ad_tanh", "ad_sqrt", "ad_square",
                                       "ad_sigmoid", "ad_erf"};
  for (int k = 0; k < NCATALOGUE; k++) {
    const hostile_op *o = &catalogue[k];
    bool listed = false;
    for (size_t j = 0; j < sizeof smooth / sizeof *smooth; j++)
      listed |= strcmp(o->name, smooth[j]) == 0;
    if (!listed) continue;
    ad_tensor *x = ad_tensor_new(1, SHAPE(2), VALUES(NAN, 0.5));
    derivs d;
    assert_true(run_all_modes(o, &x, &d));
    double g[2], t[2];
    read_all(d.grad[0], g, 2);
    read_all(d.jvp, t, 2);
    if (!isnan(g[0]) || !isnan(t[0]))
      fail_shown("%s: derivative at NaN is %g (reverse), %g (forward)", o->name,
               g[0], t[0]);
    assert_false(isnan(g[1]));
  }
}

static ad_tensor *sum_of_inverse(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_add(ad_sum_all(ad_inv(x)), ad_logdet(x));
}

/* Empty tensors through every op: a result of the right shape (zeros for
 * sum, ones for prod, -inf for logsumexp) or, for max, min and argmax
 * over the empty axis, AD_EINVAL naming the op; every derivative is
 * empty like its input. */
static void empty_tensors_through_every_op(void **state) {
  (void)state;
  for (int k = 0; k < NCATALOGUE; k++) {
    const hostile_op *o = &catalogue[k];
    ad_scope_begin();
    ad_tensor *x[2];
    empty_inputs(o, x);
    derivs d;
    if (!run_all_modes(o, x, &d)) {
      if (!(o->flags & EMPTY_AXIS_ERROR))
        fail_shown("%s: fails on an empty input: %s", o->name,
                 ad_error_message());
      assert_error(AD_EINVAL, o->name);
    } else {
      double buf[64];
      int64_t n = read_all(d.y, buf, 64);
      for (int64_t e = 0; e < n; e++) {
        double want = strcmp(o->name, "ad_prod") == 0        ? 1.0
                      : strcmp(o->name, "ad_logsumexp") == 0 ? -INFINITY
                      : strcmp(o->name, "ad_mean") == 0      ? NAN
                      : strcmp(o->name, "ad_det") == 0       ? 1.0
                                                             : 0.0;
        if (!same_value(buf[e], want))
          fail_shown("%s of an empty tensor gives %g at %lld, expected %g",
                   o->name, buf[e], (long long)e, want);
      }
      /* Gradients: shaped like the inputs (checked by run_all_modes),
       * and zero where an input is not empty (conv2d's filter). */
      for (int i = 0; i < o->nin; i++) {
        int64_t ng = read_all(d.grad[i], buf, 64);
        for (int64_t e = 0; e < ng; e++) assert_true(buf[e] == 0.0);
      }
    }
    assert_int_equal(ad_scope_end(), AD_OK);
    ad_error_clear();
  }
  /* Matrices of size 0 x 0: the empty product. */
  ad_tensor *z = ad_zeros(2, SHAPE(0, 0));
  assert_tensor_near(ad_det(z), VALUES(1.0), 1, 0);
  assert_tensor_near(ad_logdet(z), VALUES(0.0), 1, 0);
  assert_shape(ad_inv(z), 2, 0, 0);
  assert_shape(ad_cholesky(z), 2, 0, 0);
  assert_shape(ad_solve(z, ad_zeros(1, SHAPE(0))), 1, 0);
  assert_shape(ad_grad(sum_of_inverse, NULL, z), 2, 0, 0);
  /* matmul with an empty inner axis: zeros. */
  assert_tensor_near(ad_matmul(ad_ones(2, SHAPE(2, 0)), ad_ones(2, SHAPE(0, 2))),
                     VALUES(0, 0, 0, 0), 4, 0);
}

/* ========================================================================
 * Deep graphs
 * ====================================================================== */

/* 10^6 ops (plain build), 10^5 under sanitizers, 10^4 under valgrind
 * (AD_TEST_QUICK). */
static long deep_ops(void) {
  if (test_quick()) return 10000;
  if (UNDER_SANITIZER) return 100000;
  return 1000000;
}

/* y_{k+1} = sin(y_k), recorded on one tape: the backward pass visits every
 * node without recursion.  d y_n / d y_0 = prod cos(y_k), which the test
 * recomputes in double. */
static void million_op_graph_through_backward(void **state) {
  (void)state;
  long n = deep_ops();
  ad_tensor *x = ad_scalar(1.0);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_retain(x);
  double v = 1.0, d = 1.0;
  for (long i = 0; i < n; i++) {
    /* A scope per block of ops keeps the scope array small: the tape
     * holds what it needs. */
    if (i % 4096 == 0) ad_scope_begin();
    ad_tensor *next = ad_sin(y);
    assert_non_null(next);
    ad_release(y);
    y = ad_retain(next);
    d *= cos(v);
    v = sin(v);
    if (i % 4096 == 4095 || i == n - 1) assert_int_equal(ad_scope_end(), AD_OK);
  }
  assert_int_equal(ad_tape_end(tape), AD_OK);
  assert_int_equal(ad_tape_size(tape), n);
  ad_tensor *g = ad_tape_gradient(tape, y, x);
  assert_non_null(g);
  assert_true(fabs(ad_item(y) - v) <= 1e-12 * fabs(v));
  assert_true(fabs(ad_item(g) - d) <= 1e-9 * fabs(d));
  ad_tape_free(tape);
  ad_release(y);
}

/* The same depth through two nested forward levels: the second
 * derivative of the chain, d^2 y_n / d y_0^2, by forward over forward. */
static void million_op_graph_through_nested_forward(void **state) {
  (void)state;
  long n = deep_ops();
  ad_tensor *x = ad_scalar(0.5), *one = ad_scalar(1.0);
  ad_fwd *outer = ad_fwd_begin(1, &x, &one);
  ad_fwd *inner = ad_fwd_begin(1, &x, &one);
  ad_tensor *y = ad_retain(x);
  /* In double: y, y' and y'' of y_{k+1} = y_k * c + 0.1 y_k^2 ... kept
   * simple: y_{k+1} = c y_k (linear), so y'' = 0 and y' = c^n; and a
   * final square makes the second derivative 2 c^(2n). */
  const double c = 1.0 - 1.0 / (double)n;
  for (long i = 0; i < n; i++) {
    if (i % 4096 == 0) ad_scope_begin();
    ad_tensor *next = ad_mul_scalar(y, c);
    assert_non_null(next);
    ad_release(y);
    y = ad_retain(next);
    if (i % 4096 == 4095 || i == n - 1) assert_int_equal(ad_scope_end(), AD_OK);
  }
  ad_tensor *sq = ad_square(y);
  ad_tensor *d1 = ad_fwd_jvp(inner, sq);
  assert_int_equal(ad_fwd_end(inner), AD_OK);
  ad_tensor *d2 = ad_fwd_jvp(outer, d1);
  assert_int_equal(ad_fwd_end(outer), AD_OK);
  double cn = pow(c, (double)n);
  assert_true(fabs(ad_item(d1) - 2 * 0.5 * cn * cn) <= 1e-9);
  assert_true(fabs(ad_item(d2) - 2 * cn * cn) <= 1e-9);
  ad_release(y);
}

/* Deep nesting instead of long chains: 100000 nested scopes (their frame
 * array grows many times) and 256 nested tapes, each seeing the op. */
static void deep_nesting_of_scopes_and_tapes(void **state) {
  (void)state;
  int depth = test_quick() ? 1000 : 100000;
  int base = ad__scope_depth();
  for (int i = 0; i < depth; i++) {
    ad_scope_begin();
    assert_non_null(ad_scalar(i));
  }
  assert_int_equal(ad__scope_depth(), base + depth);
  for (int i = 0; i < depth; i++) assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(ad__scope_depth(), base);
  enum { NT = 256 };
  ad_tape *tapes[NT];
  ad_tensor *x = ad_scalar(3.0);
  for (int i = 0; i < NT; i++) {
    tapes[i] = ad_tape_begin(0);
    assert_non_null(tapes[i]);
    ad_tape_watch(tapes[i], x);
  }
  ad_tensor *y = ad_square(x);
  for (int i = NT - 1; i >= 0; i--) {
    assert_int_equal(ad_tape_end(tapes[i]), AD_OK);
    assert_tensor_near(ad_tape_gradient(tapes[i], y, x), VALUES(6.0), 1, 0);
    ad_tape_free(tapes[i]);
  }
}

/* ========================================================================
 * A released tensor passed again
 * ====================================================================== */

/* In an ordinary build a released tensor is freed memory and using it is
 * undefined (AddressSanitizer does not see it either: headers go back to
 * a pool, not to free).  A build with -DAD_DEBUG_POOL poisons released
 * headers and checks every tensor argument (docs/RELIABILITY.md). */
#ifdef AD_DEBUG_POOL
static void released_tensor_passed_again_in_a_debug_build(void **state) {
  (void)state;
  /* Run without the fixture's scope: the caller owns what it makes. */
  ad_tensor *t = ad_ones(1, SHAPE(3));
  ad_tensor *s = ad_scalar(2.0);
  ad_release(t);
  assert_null(ad_exp(t));
  assert_error(AD_EINVAL, "released");
  assert_null(ad_add(s, t));
  assert_error(AD_EINVAL, "released");
  ad_release(t); /* a second release: reported, not a double free */
  assert_error(AD_EINVAL, "released");
  ad_release(s);
  /* A tensor released by the end of its scope. */
  ad_scope_begin();
  ad_tensor *u = ad_zeros(1, SHAPE(5));
  ad_scope_end();
  assert_null(ad_sin(u));
  assert_error(AD_EINVAL, "released");
}
#endif

/* ========================================================================
 * Tapes and levels ended out of order, scopes unbalanced
 * ====================================================================== */

static void tapes_and_levels_ended_out_of_order(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *one = ad_scalar(1.0);
  ad_tape *outer = ad_tape_begin(0);
  ad_tape_watch(outer, x);
  ad_fwd *level = ad_fwd_begin(1, &x, &one);
  ad_tape *inner = ad_tape_begin(0);
  ad_tape_watch(inner, x);
  ad_tensor *y = ad_mul(ad_square(x), x);
  /* Outer ones first: refused, nothing changes. */
  assert_int_equal(ad_tape_end(outer), AD_ESTATE);
  assert_error(AD_ESTATE, "innermost");
  assert_int_equal(ad_fwd_end(level), AD_ESTATE);
  assert_error(AD_ESTATE, "innermost");
  /* The right order works, and the derivatives are right. */
  assert_int_equal(ad_tape_end(inner), AD_OK);
  ad_tensor *g = ad_tape_gradient(inner, y, x); /* 3 x^2 = 12 */
  assert_tensor_near(g, VALUES(12.0), 1, 0);
  assert_tensor_near(ad_fwd_jvp(level, g), VALUES(12.0), 1, 0); /* 6x */
  assert_int_equal(ad_fwd_end(level), AD_OK);
  assert_int_equal(ad_tape_end(outer), AD_OK);
  assert_tensor_near(ad_tape_gradient(outer, g, x), VALUES(12.0), 1, 0);
  /* Ending twice. */
  assert_int_equal(ad_tape_end(inner), AD_ESTATE);
  assert_error(AD_ESTATE, "already ended");
  ad_tape_free(inner);
  ad_tape_free(outer);
  /* Freeing an outer tape while an inner one records: allowed (it leaves
   * the stack wherever it is); the inner one goes on. */
  outer = ad_tape_begin(0);
  inner = ad_tape_begin(0);
  ad_tape_watch(inner, x);
  ad_tape_free(outer);
  y = ad_exp(x);
  assert_int_equal(ad_tape_end(inner), AD_OK);
  assert_tensor_near(ad_tape_gradient(inner, y, x), VALUES(exp(2.0)), 1,
                     1e-15);
  ad_tape_free(inner);
  /* A level freed by ad_fwd_end while a tape opened after it records:
   * refused. */
  level = ad_fwd_begin(1, &x, &one);
  inner = ad_tape_begin(0);
  assert_int_equal(ad_fwd_end(level), AD_ESTATE);
  ad_error_clear();
  ad_tape_free(inner);
  assert_int_equal(ad_fwd_end(level), AD_OK);
}

/* Runs without the fixture's scope. */
static void scopes_left_unbalanced(void **state) {
  (void)state;
  assert_int_equal(ad__scope_depth(), 0);
  /* More ends than begins: AD_ESTATE once none is open. */
  ad_scope_begin();
  ad_scope_begin();
  assert_non_null(ad_scalar(1.0));
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(ad_scope_end(), AD_ESTATE);
  assert_error(AD_ESTATE, "no scope is open");
  /* More begins than ends: the tensors stay owned until the last end. */
  ad_scope_begin();
  ad_tensor *kept = ad_keep(ad_scalar(2.0)); /* to nobody: depth 1 */
  ad_scope_begin();
  ad_scope_begin();
  assert_non_null(ad_ones(1, SHAPE(100)));
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(ad__scope_depth(), 2);
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_tensor_near(kept, VALUES(2.0), 1, 0);
  ad_release(kept);
  assert_int_equal(ad_error(), AD_OK);
}

static void scope_end_without_a_scope_is_estate(void **state) {
  (void)state;
  assert_int_equal(ad__scope_depth(), 0);
  assert_int_equal(ad_scope_end(), AD_ESTATE);
  assert_error(AD_ESTATE, "ad_scope_end");
  assert_int_equal(ad_scope_end(), AD_ESTATE);
  ad_error_clear();
  /* Without a scope the caller owns results. */
  ad_tensor *t = ad_ones(1, SHAPE(2));
  assert_non_null(t);
  ad_release(t);
}

/* A function that leaves a scope open inside ad_grad: the gradient is
 * still right and nothing crashes; the extra scope stays open on the
 * caller's stack (libad does not check scope balance), so the caller's
 * next ad_scope_end closes it. */
static ad_tensor *leaves_a_scope_open(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_scope_begin();
  return ad_sum_all(ad_sin(x));
}

static void function_leaving_a_scope_open(void **state) {
  (void)state;
  int base = ad__scope_depth();
  ad_tensor *x = ad_scalar(0.5);
  ad_tensor *g = ad_grad(leaves_a_scope_open, NULL, x);
  if (g) {
    assert_tensor_near(g, VALUES(cos(0.5)), 1, 1e-15);
  } else {
    /* What a balance check would say. */
    assert_error(AD_ESTATE, "ad_grad");
  }
  while (ad__scope_depth() > base) assert_int_equal(ad_scope_end(), AD_OK);
}

/* A thread that ends with scopes open: the tensors they own must not leak
 * (make asan and make valgrind report them if they do). */
static void *exits_with_open_scopes(void *arg) {
  (void)arg;
  ad_scope_begin();
  ad_tensor *a = ad_ones(2, SHAPE(3, 3));
  ad_scope_begin();
  ad_tensor *b = ad_exp(a);
  (void)b;
  return NULL;
}

static void thread_exiting_with_open_scopes(void **state) {
  (void)state;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, exits_with_open_scopes, NULL), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
}

/* ========================================================================
 * Regressions found by the fuzzer (tests/fuzz)
 * ====================================================================== */

/* An empty slice with a negative step: its normalised start is -1 (before
 * the front), which the reverse rule of slice's adjoint passed on to
 * ad_slice, where -1 means the last element: reverse over reverse failed
 * with AD_EINTERNAL ("gradient of input 0 has shape (4, 1), expected (4,
 * 0)"). */
static void second_order_of_an_empty_negative_step_slice(void **state) {
  (void)state;
  ad_tensor *x = ad_tensor_new(2, SHAPE(4, 1), VALUES(1, 2, 3, 4));
  ad_tape *outer = ad_tape_begin(0);
  ad_tape_watch(outer, x);
  ad_tape *inner = ad_tape_begin(0);
  ad_tape_watch(inner, x);
  ad_tensor *y = ad_slice(x, -1, -5, 0, -1);
  assert_shape(y, 2, 4, 0);
  ad_tensor *s = ad_add(ad_sum_all(ad_square(y)), ad_sum_all(ad_square(x)));
  ad_tape_end(inner);
  ad_tensor *g = ad_tape_gradient(inner, s, x);
  assert_tensor_near(g, VALUES(2, 4, 6, 8), 4, 0);
  ad_tensor *u = ad_sum_all(ad_mul(g, ad_tensor_new(2, SHAPE(4, 1),
                                                    VALUES(1, 0, 0, 0))));
  ad_tape_end(outer);
  assert_tensor_near(ad_tape_gradient(outer, u, x), VALUES(2, 0, 0, 0), 4, 0);
  ad_tape_free(inner);
  ad_tape_free(outer);
}

/* Found by the PyTorch cross-check: the derivatives of prod were written
 * as prod / x_i, NaN (0 / 0) at a zero entry, where the derivative is the
 * product of the other entries.  Zeros in a product are ordinary (a relu
 * before it, a difference of equal values). */
static ad_tensor *prod_all(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_prod(x, 0, NULL, false);
}

static ad_tensor *prod_rows(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(ad_prod(x, 1, (const int[]){1}, false),
                           ad_tensor_new(1, SHAPE(3), VALUES(1, 2, 3))));
}

static void derivatives_of_prod_at_zeros(void **state) {
  (void)state;
  ad_tensor *x = ad_tensor_new(1, SHAPE(3), VALUES(0, 2, 3));
  assert_tensor_near(ad_grad(prod_all, NULL, x), VALUES(6, 0, 0), 3, 1e-15);
  assert_tensor_near(ad_jvp(prod_all, NULL, x, ad_ones(1, SHAPE(3)), NULL),
                     VALUES(6), 1, 1e-15);
  /* d2 prod / dx_i dx_j = the product of the entries other than i, j. */
  assert_tensor_near(ad_hessian(prod_all, NULL, x),
                     VALUES(0, 3, 2, 3, 0, 0, 2, 0, 0), 9, 1e-15);
  ad_tensor *z = ad_tensor_new(1, SHAPE(3), VALUES(0, 0, 3));
  assert_tensor_near(ad_grad(prod_all, NULL, z), VALUES(0, 0, 0), 3, 0);
  assert_tensor_near(ad_hessian(prod_all, NULL, z),
                     VALUES(0, 3, 0, 3, 0, 0, 0, 0, 0), 9, 1e-15);
  /* Rows with no zero, one zero and two zeros, weighted 1, 2, 3. */
  ad_tensor *m = ad_tensor_new(2, SHAPE(3, 2), VALUES(2, 5, 0, 4, 0, 0));
  assert_tensor_near(ad_grad(prod_rows, NULL, m), VALUES(5, 2, 8, 0, 0, 0), 6,
                     1e-15);
  /* NaN propagates where it is a factor: d/dx1 (x0 x1) = x0 = NaN.  (d/dx0
   * = x1 = 0 exactly, as PyTorch gives; a rule that divides the product by
   * x0 gives NaN there too, which is accepted.) */
  ad_tensor *n = ad_tensor_new(1, SHAPE(2), VALUES(NAN, 0));
  double g[2];
  assert_int_equal(ad_read(ad_grad(prod_all, NULL, n), g, 2), AD_OK);
  assert_true(isnan(g[1]));
  assert_true(g[0] == 0 || isnan(g[0]));
}

/* The fast path of slice_grad (a unit-step slice that is one block of
 * the result) sized its memset and memcpy from the strides of an empty
 * result: a negative size for a small empty tensor (found by the fuzzer
 * in its first seconds), a heap overflow when the empty tensor's axes
 * are huge.  Last in the list, since a heap overflow takes the process
 * down. */
static void backward_of_a_unit_step_slice_of_an_empty_tensor(void **state) {
  (void)state;
  ad_tensor *small = ad_zeros(3, SHAPE(1, 3, 0));
  ad_tensor *gs = ad_grad(slice_unit, NULL, small);
  assert_shape(gs, 3, 1, 3, 0);
  ad_tensor *u = ad_zeros(4, SHAPE(1, 5, 0, 3 * (M61 / 4)));
  ad_tensor *g = ad_grad(slice_unit, NULL, u);
  assert_shape(g, 4, 1, 5, 0, 3 * (M61 / 4));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(overflowing_shapes_are_refused_before_allocating),
#if !UNDER_SANITIZER
      cmocka_unit_test(allocation_too_large_for_memory_is_enomem),
#endif
      scoped_test(ranks_above_the_maximum_are_refused),
      scoped_test(reductions_of_huge_empty_tensors),
      scoped_test(views_of_huge_empty_tensors),
      scoped_test(derivatives_through_huge_empty_views),
      scoped_test(nan_and_infinities_through_every_op),
      scoped_test(derivatives_at_nan_are_nan),
      scoped_test(empty_tensors_through_every_op),
      scoped_test(million_op_graph_through_backward),
      scoped_test(million_op_graph_through_nested_forward),
      scoped_test(deep_nesting_of_scopes_and_tapes),
#ifdef AD_DEBUG_POOL
      cmocka_unit_test(released_tensor_passed_again_in_a_debug_build),
#endif
      scoped_test(tapes_and_levels_ended_out_of_order),
      cmocka_unit_test(scopes_left_unbalanced),
      cmocka_unit_test(scope_end_without_a_scope_is_estate),
      scoped_test(function_leaving_a_scope_open),
      scoped_test(thread_exiting_with_open_scopes),
      scoped_test(second_order_of_an_empty_negative_step_slice),
      scoped_test(derivatives_of_prod_at_zeros),
      scoped_test(backward_of_a_unit_step_slice_of_an_empty_tensor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
