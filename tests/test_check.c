/* Tests of the derivative checker: correct derivatives pass in every
 * nesting and at every scale, wrong ones are caught at the right order and
 * mode, and bad arguments and failing functions give a status. */
#include <pthread.h>
#include <stdlib.h>

#include "testutil.h"

#define BOTH (AD_CHECK_FWD | AD_CHECK_REV)
/* A user's everyday tolerance: loose enough for any rounding, tight
 * enough that a derivative off by 1e-4 relative fails. */
#define RTOL 1e-6

/* valgrind runs (AD_TEST_QUICK) stop one order earlier. */
static int top_order(int order) { return test_quick() ? order - 1 : order; }

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

/* Run the checker and fail the test with its message unless it passes. */
static void expect_pass(ad_fn f, void *ctx, ad_tensor *x, int order,
                        unsigned modes, double atol, double rtol) {
  ad_check_report r;
  ad_status st = ad_check_grads(f, ctx, x, order, modes, atol, rtol, &r);
  if (st != AD_OK) fail_msg("%s (status %d)", r.message, (int)st);
  assert_int_equal(ad_error(), AD_OK);
  assert_true(r.comparisons > 0);
}

/* Run the checker, expect AD_ECHECK at the given order and mode, and
 * clear the error it recorded. */
static void expect_catch(ad_fn f, void *ctx, ad_tensor *x, int order,
                         unsigned modes, int bad_order, const char *mode) {
  ad_check_report r;
  ad_status st = ad_check_grads(f, ctx, x, order, modes, 0, RTOL, &r);
  if (st != AD_ECHECK)
    fail_msg("expected AD_ECHECK, got %d: %s", (int)st, r.message);
  assert_int_equal(r.order, bad_order);
  assert_string_equal(r.mode, mode);
  assert_true(fabs(r.ad_value - r.fd_value) > r.tolerance);
  assert_int_equal(ad_error(), AD_ECHECK);
  assert_string_equal(ad_error_message(), r.message);
  ad_error_clear();
}

/* ---- functions that libad differentiates correctly -------------------- */

static ad_tensor *elementwise(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *a = ad_mul(ad_sin(x), ad_exp(ad_mul_scalar(x, 1.0 / 3)));
  ad_tensor *b = ad_div(ad_tanh(x), ad_add_scalar(ad_square(x), 1.0));
  return ad_sum_all(ad_add(a, ad_mul(b, ad_sigmoid(x))));
}

/* A vector output: the checker contracts it with fixed weights. */
static ad_tensor *elementwise_vector(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_add(ad_mul(ad_log1p(ad_square(x)), ad_cos(x)), ad_erf(x));
}

static ad_tensor *reductions(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *m = ad_reshape(x, 2, SHAPE(2, 2));
  int axis = 1;
  ad_tensor *lse = ad_logsumexp(m, 1, &axis, false);
  ad_tensor *p = ad_prod(ad_add_scalar(m, 2.0), 1, &axis, false);
  return ad_add(ad_mean(ad_mul(lse, p), 0, NULL, false),
                ad_sum_all(ad_square(lse)));
}

/* x is 2 x 3; the output is a 2 x 2 matrix. */
static ad_tensor *matmul(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_tanh(ad_matmul(x, ad_transpose(ad_sin(x))));
}

static ad_tensor *softmax(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_softmax(ad_mul_scalar(x, 1.5), -1);
}

static ad_tensor *norms(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *l2 = ad_sqrt(ad_sum_all(ad_square(x)));
  ad_tensor *l4 = ad_pow_scalar(ad_sum_all(ad_pow_scalar(x, 4.0)), 0.25);
  return ad_add(l2, ad_mul(l4, l2));
}

static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *a = ad_slice(x, 0, 0, n - 1, 1), *b = ad_slice(x, 0, 1, n, 1);
  ad_tensor *t = ad_sub(b, ad_square(a));
  ad_tensor *u = ad_add_scalar(ad_neg(a), 1.0);
  return ad_sum_all(ad_add(ad_mul_scalar(ad_square(t), 100.0), ad_square(u)));
}

static const double X4[] = {0.7, -1.2, 0.4, 1.9};

static void passes_elementwise_functions(void **state) {
  (void)state;
  expect_pass(elementwise, NULL, vec(4, X4), top_order(3), BOTH, 0, RTOL);
  expect_pass(elementwise_vector, NULL, vec(4, X4), top_order(3), BOTH, 0,
              RTOL);
}

static void passes_reductions(void **state) {
  (void)state;
  expect_pass(reductions, NULL, vec(4, X4), top_order(3), BOTH, 0, RTOL);
}

static void passes_matmul_with_matrix_input_and_output(void **state) {
  (void)state;
  ad_tensor *x =
      ad_tensor_new(2, SHAPE(2, 3), VALUES(0.3, -0.8, 1.1, 0.5, 0.9, -0.4));
  expect_pass(matmul, NULL, x, top_order(3), BOTH, 0, RTOL);
}

static void passes_softmax_and_norms(void **state) {
  (void)state;
  expect_pass(softmax, NULL, vec(4, X4), top_order(3), BOTH, 0, RTOL);
  expect_pass(norms, NULL, vec(4, X4), top_order(3), BOTH, 0, RTOL);
}

static void passes_rosenbrock_small_and_large(void **state) {
  (void)state;
  expect_pass(rosenbrock, NULL, vec(4, VALUES(-1.2, 1.0, 0.8, 1.3)),
              top_order(3), BOTH, 0, RTOL);
  /* 40 elements: the random-direction path. */
  double v[40];
  for (int i = 0; i < 40; i++) v[i] = 1.2 * sin(0.7 * i + 0.3);
  expect_pass(rosenbrock, NULL, vec(40, v), top_order(3), BOTH, 0, RTOL);
}

/* With atol = rtol = 0 only the finite-difference bounds decide. */
static void passes_with_zero_tolerances(void **state) {
  (void)state;
  expect_pass(elementwise, NULL, vec(4, X4), top_order(3), BOTH, 0, 0);
  expect_pass(softmax, NULL, vec(4, X4), top_order(3), BOTH, 0, 0);
}

static void passes_in_each_mode_alone_and_at_order_four(void **state) {
  (void)state;
  expect_pass(elementwise, NULL, vec(3, X4), top_order(3), AD_CHECK_FWD, 0,
              RTOL);
  expect_pass(elementwise, NULL, vec(3, X4), top_order(3), AD_CHECK_REV, 0,
              RTOL);
  ad_check_report r;
  assert_int_equal(
      ad_check_grads(norms, NULL, vec(2, X4), top_order(4), BOTH, 0, RTOL, &r),
      AD_OK);
}

/* ---- scales ------------------------------------------------------------ */

/* Values ~1e8 (x ~ 1e4) and ~1e-8 (x ~ 1e-8): relative steps and bounds
 * make the check scale-free. */
static ad_tensor *cubic_mix(ad_tensor *x, void *ctx) {
  double s = *(const double *)ctx;
  ad_tensor *y = ad_mul_scalar(x, 1.0 / s); /* O(1) inside */
  ad_tensor *g = ad_add(ad_mul(ad_square(y), ad_sin(y)), ad_exp(y));
  return ad_mul_scalar(ad_sum_all(g), *((const double *)ctx + 1));
}

static void passes_at_large_and_small_scales(void **state) {
  (void)state;
  double big[2] = {1e4, 1e8}, tiny[2] = {1e-8, 1e-8};
  double xb[3] = {0.6e4, -1.1e4, 1.7e4}, xt[3] = {0.6e-8, -1.1e-8, 1.7e-8};
  expect_pass(cubic_mix, big, vec(3, xb), top_order(3), BOTH, 0, RTOL);
  expect_pass(cubic_mix, tiny, vec(3, xt), top_order(3), BOTH, 0, RTOL);
  expect_pass(cubic_mix, big, vec(3, xb), top_order(3), BOTH, 0, 0);
  expect_pass(cubic_mix, tiny, vec(3, xt), top_order(3), BOTH, 0, 0);
}

/* A zero coordinate steps by a fraction of the mean |x|. */
static void passes_with_zero_coordinates(void **state) {
  (void)state;
  expect_pass(elementwise, NULL, vec(3, VALUES(0.0, 0.0, 0.0)), top_order(3),
              BOTH, 0, RTOL);
  expect_pass(elementwise, NULL, vec(3, VALUES(0.0, 2.0, -1.0)), top_order(3),
              BOTH, 0, RTOL);
}

/* ---- wrong derivatives ------------------------------------------------- */

/* x - stop_gradient(x) is 0 in value with derivative 1: adding eps * d^k
 * / k! * c(x) (c held constant) to f leaves its value and every
 * derivative below order k unchanged, and moves the k-th derivative by
 * eps * c(x).  With c = f^(k) the k-th derivative is off by eps relative. */
typedef struct wrong {
  int order;
  double eps;
  double scale; /* x is scale * O(1); f is O(1) */
} wrong;

static ad_tensor *skewed(ad_tensor *x, void *ctx) {
  const wrong *w = ctx;
  ad_tensor *y = ad_mul_scalar(x, 1.0 / w->scale);
  ad_tensor *f = ad_sin(y);
  /* The k-th derivative of sin(x / s): sin^(k)(y) / s^k. */
  ad_tensor *fk = w->order == 1   ? ad_cos(y)
                  : w->order == 2 ? ad_neg(ad_sin(y))
                                  : ad_neg(ad_cos(y));
  fk = ad_mul_scalar(fk, pow(w->scale, -w->order));
  ad_tensor *d = ad_sub(x, ad_stop_gradient(x));
  ad_tensor *dk = w->order == 1 ? d
                  : w->order == 2
                      ? ad_mul_scalar(ad_square(d), 0.5)
                      : ad_mul_scalar(ad_mul(ad_square(d), d), 1.0 / 6);
  ad_tensor *extra = ad_mul(ad_mul_scalar(dk, w->eps), ad_stop_gradient(fk));
  return ad_sum_all(ad_add(f, extra));
}

static void catches_wrong_first_derivative(void **state) {
  (void)state;
  wrong w = {1, 1e-4, 1.0};
  expect_catch(skewed, &w, vec(3, X4), 3, BOTH, 1, "rev");
  ad_check_report r;
  assert_int_equal(
      ad_check_grads(skewed, &w, vec(3, X4), 1, BOTH, 0, RTOL, &r), AD_ECHECK);
  ad_error_clear();
  /* The element is a coordinate and its two values differ by 1e-4. */
  assert_in_range(r.index, 0, 2);
  assert_true(fabs(r.ad_value / r.fd_value - 1 - 1e-4) < 1e-6);
  assert_true(r.fd_error < 1e-8);
  assert_non_null(strstr(r.message, "order 1, rev"));
  assert_non_null(strstr(r.message, "by finite differences"));
}

static void catches_wrong_second_derivative(void **state) {
  (void)state;
  wrong w = {2, 1e-4, 1.0};
  /* Order 1 alone passes: only the second derivative is wrong. */
  expect_pass(skewed, &w, vec(3, X4), 1, BOTH, 0, RTOL);
  expect_catch(skewed, &w, vec(3, X4), 3, BOTH, 2, "rev-rev");
  expect_catch(skewed, &w, vec(3, X4), 2, AD_CHECK_FWD, 2, "fwd-fwd");
}

static void catches_wrong_third_derivative(void **state) {
  (void)state;
  wrong w = {3, 1e-4, 1.0};
  expect_pass(skewed, &w, vec(3, X4), 2, BOTH, 0, RTOL);
  expect_catch(skewed, &w, vec(3, X4), 3, BOTH, 3, "rev-rev-rev");
  /* On a large input too, along random directions. */
  double v[20];
  for (int i = 0; i < 20; i++) v[i] = 1.5 * cos(1.3 * i);
  expect_catch(skewed, &w, vec(20, v), 3, BOTH, 3, "rev-rev-rev");
}

static void catches_wrong_derivatives_at_large_and_small_scales(void **state) {
  (void)state;
  double x[3];
  for (int s = 0; s < 2; s++) {
    double scale = s ? 1e8 : 1e-8;
    for (int i = 0; i < 3; i++) x[i] = X4[i] * scale;
    for (int k = 1; k <= 2; k++) {
      wrong w = {k, 1e-4, scale};
      expect_catch(skewed, &w, vec(3, x), 2, BOTH, k,
                   k == 1 ? "rev" : "rev-rev");
      wrong right = {k, 0.0, scale};
      expect_pass(skewed, &right, vec(3, x), top_order(3), BOTH, 0, RTOL);
    }
  }
}

/* ---- custom ops whose rules are off by 1e-4 ---------------------------- */

typedef struct skew {
  double vjp, jvp; /* factors on the rules' cos(x) */
} skew;

static ad_status csin_forward(ad_custom_ctx *c, ad_tensor *const *in,
                              ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_sin(in[0]);
  return out[0] ? AD_OK : ad_error();
}

static ad_status csin_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                          ad_tensor **gin, void *user) {
  const skew *s = user;
  ad_tensor *d = ad_mul_scalar(ad_cos(ad_custom_input(c, 0)), s->vjp);
  gin[0] = ad_mul(gout[0], d);
  return gin[0] ? AD_OK : ad_error();
}

static ad_status csin_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                          ad_tensor **tout, void *user) {
  const skew *s = user;
  ad_tensor *d = ad_mul_scalar(ad_cos(ad_custom_input(c, 0)), s->jvp);
  tout[0] = ad_mul(tin[0], d);
  return tout[0] ? AD_OK : ad_error();
}

static const ad_custom_op csin_both = {"csin",       1,        1,
                                       csin_forward, csin_vjp, csin_jvp};
static const ad_custom_op csin_vjp_only = {"csin_vjp_only", 1,        1,
                                           csin_forward,    csin_vjp, NULL};

typedef struct custom_case {
  const ad_custom_op *op;
  skew s;
} custom_case;

/* f(x) = sum(csin(x) * x): the custom op inside an ordinary function. */
static ad_tensor *with_custom(ad_tensor *x, void *ctx) {
  custom_case *cc = ctx;
  ad_tensor *y = NULL;
  if (ad_custom_apply(cc->op, &cc->s, &x, &y) != AD_OK) return NULL;
  return ad_sum_all(ad_mul(y, x));
}

static void catches_custom_vjp_off_by_1e_4(void **state) {
  (void)state;
  custom_case right = {&csin_both, {1.0, 1.0}};
  expect_pass(with_custom, &right, vec(4, X4), top_order(3), BOTH, 0, RTOL);
  /* A wrong VJP shows in reverse mode; forward mode uses the JVP. */
  custom_case bad_vjp = {&csin_both, {1.0 + 1e-4, 1.0}};
  expect_catch(with_custom, &bad_vjp, vec(4, X4), 2, BOTH, 1, "rev");
  expect_pass(with_custom, &bad_vjp, vec(4, X4), 1, AD_CHECK_FWD, 0, RTOL);
  /* Without a JVP rule forward mode derives it from the VJP: both fail. */
  custom_case only = {&csin_vjp_only, {1.0 + 1e-4, 1.0}};
  expect_catch(with_custom, &only, vec(4, X4), 1, AD_CHECK_FWD, 1, "fwd");
}

static void catches_custom_jvp_off_by_1e_4_in_forward_mode(void **state) {
  (void)state;
  custom_case bad_jvp = {&csin_both, {1.0, 1.0 - 1e-4}};
  /* Reverse (checked first) passes; the forward nesting fails. */
  expect_catch(with_custom, &bad_jvp, vec(4, X4), 2, BOTH, 1, "fwd");
  expect_pass(with_custom, &bad_jvp, vec(4, X4), top_order(3), AD_CHECK_REV, 0,
              RTOL);
}

/* f evaluated with heavy cancellation, (1e9 + g) - 1e9, is noisy, so its
 * finite differences are loose; a JVP off by 2e-4 hides within them but
 * not from the reverse-mode nesting, which must agree closely. */
static ad_tensor *noisy_custom(ad_tensor *x, void *ctx) {
  ad_tensor *g = with_custom(x, ctx);
  return ad_add_scalar(ad_add_scalar(g, 1e9), -1e9);
}

static void nestings_that_disagree_are_caught(void **state) {
  (void)state;
  custom_case bad_jvp = {&csin_both, {1.0, 1.0 - 2e-4}};
  ad_check_report r;
  assert_int_equal(ad_check_grads(noisy_custom, &bad_jvp, vec(4, X4), 1,
                                  AD_CHECK_FWD, 0, RTOL, &r),
                   AD_OK); /* the finite differences alone cannot tell */
  assert_int_equal(
      ad_check_grads(noisy_custom, &bad_jvp, vec(4, X4), 1, BOTH, 0, RTOL, &r),
      AD_ECHECK);
  ad_error_clear();
  assert_int_equal(r.order, 1);
  assert_string_equal(r.mode, "fwd");
  assert_non_null(strstr(r.message, "disagrees with rev"));
}

/* ---- the report -------------------------------------------------------- */

static void report_describes_the_closest_comparison(void **state) {
  (void)state;
  ad_check_report r;
  assert_int_equal(
      ad_check_grads(elementwise, NULL, vec(3, X4), 2, BOTH, 0, RTOL, &r),
      AD_OK);
  /* Order 1: 2 nestings x 3 against FD + 3 between them; order 2: 4
   * nestings x 9 against FD + 3 x 9 between them. */
  assert_int_equal(r.comparisons, 9 + 63);
  assert_in_range(r.order, 1, 2);
  assert_true(strlen(r.mode) >= 3);
  assert_in_range(r.index, 0, r.order == 1 ? 2 : 8);
  assert_true(r.tolerance > 0 && r.fd_error >= 0);
  assert_true(fabs(r.ad_value - r.fd_value) <= r.tolerance + r.fd_error);
  assert_non_null(strstr(r.message, "72 comparisons passed"));
  /* Large inputs: 4 directions per nesting, 2 + 1 at order 1, 4 + 3 at
   * order 2. */
  double v[17];
  for (int i = 0; i < 17; i++) v[i] = 0.1 * (i + 1);
  assert_int_equal(
      ad_check_grads(elementwise, NULL, vec(17, v), 2, BOTH, 0, RTOL, &r),
      AD_OK);
  assert_int_equal(r.comparisons, 4 * 3 + 4 * 7);
}

static void report_is_deterministic_and_leaves_ad_seed_alone(void **state) {
  (void)state;
  ad_check_report r1, r2;
  ad_seed(11);
  double before = ad_item(ad_rand_uniform(0, NULL, 0, 1));
  ad_seed(11);
  assert_int_equal(
      ad_check_grads(softmax, NULL, vec(4, X4), 2, BOTH, 0, RTOL, &r1), AD_OK);
  double after = ad_item(ad_rand_uniform(0, NULL, 0, 1));
  assert_true(before == after);
  assert_int_equal(
      ad_check_grads(softmax, NULL, vec(4, X4), 2, BOTH, 0, RTOL, &r2), AD_OK);
  assert_int_equal(r1.order, r2.order);
  assert_string_equal(r1.mode, r2.mode);
  assert_int_equal(r1.index, r2.index);
  assert_true(r1.ad_value == r2.ad_value && r1.fd_value == r2.fd_value);
  assert_true(r1.fd_error == r2.fd_error && r1.tolerance == r2.tolerance);
  assert_int_equal(r1.comparisons, r2.comparisons);
  assert_string_equal(r1.message, r2.message);
  /* A NULL report is allowed. */
  assert_int_equal(
      ad_check_grads(softmax, NULL, vec(4, X4), 1, BOTH, 0, RTOL, NULL),
      AD_OK);
}

/* Threads check at once and get the single-threaded report: the checker
 * keeps no state outside the call. */
typedef struct job {
  ad_check_report r;
  ad_status st;
} job;

static void *check_in_thread(void *arg) {
  job *j = arg;
  ad_scope_begin();
  j->st = ad_check_grads(softmax, NULL, vec(4, X4), 2, BOTH, 0, RTOL, &j->r);
  ad_scope_end();
  return NULL;
}

static void threads_check_concurrently(void **state) {
  (void)state;
  job ref, jobs[3];
  check_in_thread(&ref);
  assert_int_equal(ref.st, AD_OK);
  pthread_t th[3];
  for (int k = 0; k < 3; k++)
    assert_int_equal(pthread_create(&th[k], NULL, check_in_thread, &jobs[k]),
                     0);
  for (int k = 0; k < 3; k++) {
    assert_int_equal(pthread_join(th[k], NULL), 0);
    assert_int_equal(jobs[k].st, AD_OK);
    assert_string_equal(jobs[k].r.message, ref.r.message);
  }
}

/* ---- bad arguments and failing functions ------------------------------- */

static void bad_arguments_are_einval(void **state) {
  (void)state;
  ad_tensor *x = vec(3, X4);
  ad_check_report r;
  struct {
    ad_fn f;
    ad_tensor *x;
    int order;
    unsigned modes;
    double atol, rtol;
    const char *text;
  } cases[] = {
      {NULL, x, 1, BOTH, 0, 0, "function is NULL"},
      {elementwise, NULL, 1, BOTH, 0, 0, "'x' is NULL"},
      {elementwise, x, 0, BOTH, 0, 0, "order 0"},
      {elementwise, x, 5, BOTH, 0, 0, "order 5"},
      {elementwise, x, 1, 0, 0, 0, "modes"},
      {elementwise, x, 1, 4, 0, 0, "modes"},
      {elementwise, x, 1, BOTH, -1, 0, "atol"},
      {elementwise, x, 1, BOTH, 0, NAN, "rtol"},
      {elementwise, ad_zeros(1, SHAPE(0)), 1, BOTH, 0, 0, "no elements"},
      {elementwise, vec(2, VALUES(1, NAN)), 1, BOTH, 0, 0, "finite"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    memset(&r, 0x55, sizeof r);
    ad_status st =
        ad_check_grads(cases[i].f, NULL, cases[i].x, cases[i].order,
                       cases[i].modes, cases[i].atol, cases[i].rtol, &r);
    assert_int_equal(st, AD_EINVAL);
    assert_int_equal(r.order, 0);
    assert_int_equal(r.comparisons, 0);
    assert_string_equal(r.message, ad_error_message());
    assert_error(AD_EINVAL, cases[i].text);
  }
}

static ad_tensor *returns_null(ad_tensor *x, void *ctx) {
  (void)x;
  (void)ctx;
  return NULL;
}

static ad_tensor *bad_reshape(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_reshape(x, 1, SHAPE(7));
}

/* Fails only away from the point itself: the finite differences fail. */
static ad_tensor *fails_near_x(ad_tensor *x, void *ctx) {
  (void)ctx;
  if (ad_item(ad_sum_all(x)) != X4[0] + X4[1]) return bad_reshape(x, ctx);
  return ad_sum_all(ad_square(x));
}

/* Changes its output shape away from x. */
static ad_tensor *shape_shifter(ad_tensor *x, void *ctx) {
  (void)ctx;
  if (ad_item(ad_sum_all(x)) != X4[0] + X4[1]) return ad_square(x);
  return ad_sum_all(ad_square(x));
}

static ad_tensor *log_of(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_log(x));
}

static void failing_functions_give_their_status(void **state) {
  (void)state;
  ad_check_report r;
  ad_tensor *x = vec(2, X4);
  assert_int_equal(ad_check_grads(returns_null, NULL, x, 1, BOTH, 0, 0, &r),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "returned NULL");
  /* f's own error and message come through. */
  assert_int_equal(ad_check_grads(bad_reshape, NULL, x, 1, BOTH, 0, 0, &r),
                   AD_ESHAPE);
  assert_non_null(strstr(r.message, "ad_reshape"));
  assert_error(AD_ESHAPE, "ad_reshape");
  /* A failure during the finite differences names the order. */
  assert_int_equal(ad_check_grads(fails_near_x, NULL, x, 2, BOTH, 0, 0, &r),
                   AD_ESHAPE);
  assert_int_equal(r.order, 1);
  assert_non_null(strstr(r.message, "order 1, finite differences"));
  assert_error(AD_ESHAPE, "ad_reshape");
  assert_int_equal(ad_check_grads(shape_shifter, NULL, x, 1, BOTH, 0, 0, &r),
                   AD_ESHAPE);
  assert_error(AD_ESHAPE, "returned shape (2,) near x but () at x");
  /* f(x) must be finite. */
  assert_int_equal(ad_check_grads(log_of, NULL, vec(2, VALUES(1.0, -1.0)), 1,
                                  BOTH, 0, 0, &r),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "not finite");
}

/* f undefined just beside x (sqrt at 0): the finite difference is NaN and
 * the check fails with a hint instead of passing. */
static ad_tensor *sqrt_of(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_sqrt(x));
}

static void non_finite_differences_fail_the_check(void **state) {
  (void)state;
  ad_check_report r;
  assert_int_equal(ad_check_grads(sqrt_of, NULL, vec(2, VALUES(0.0, 1.0)), 1,
                                  BOTH, 0, RTOL, &r),
                   AD_ECHECK);
  assert_error(AD_ECHECK, "smooth");
  assert_int_equal(r.order, 1);
}

/* A function that leaves a tape open is AD_ESTATE; the checker's own
 * contexts are all closed again. */
static ad_tape *left_open;

static ad_tensor *leaves_tape_open(ad_tensor *x, void *ctx) {
  (void)ctx;
  left_open = ad_tape_begin(0);
  return ad_sum_all(x);
}

static void function_leaving_a_tape_open_is_estate(void **state) {
  (void)state;
  ad_check_report r;
  assert_int_equal(
      ad_check_grads(leaves_tape_open, NULL, vec(2, X4), 1, BOTH, 0, 0, &r),
      AD_ESTATE);
  assert_error(AD_ESTATE, "left a tape or forward level open");
  assert_int_equal(ad_tape_end(left_open), AD_OK);
  ad_tape_free(left_open);
  /* Nothing else is open: a fresh tape is innermost and ends cleanly. */
  ad_tape *t = ad_tape_begin(0);
  assert_int_equal(ad_tape_end(t), AD_OK);
  ad_tape_free(t);
}

/* A custom op without rules cannot be differentiated: libad's AD_EUNIMPL
 * comes through, with the order and nesting that met it. */
static const ad_custom_op csin_no_rules = {"csin_no_rules", 1,    1,
                                           csin_forward,    NULL, NULL};

static void libad_errors_name_the_order_and_nesting(void **state) {
  (void)state;
  custom_case none = {&csin_no_rules, {1.0, 1.0}};
  ad_check_report r;
  assert_int_equal(
      ad_check_grads(with_custom, &none, vec(2, X4), 2, BOTH, 0, RTOL, &r),
      AD_EUNIMPL);
  assert_int_equal(r.order, 1);
  assert_string_equal(r.mode, "rev");
  assert_non_null(strstr(r.message, "order 1, rev: "));
  assert_error(AD_EUNIMPL, "csin_no_rules");
}

/* Paused recording would make every derivative zero: refused. */
static void paused_recording_is_estate(void **state) {
  (void)state;
  bool was = ad_pause_recording(true);
  assert_int_equal(
      ad_check_grads(elementwise, NULL, vec(2, X4), 1, BOTH, 0, RTOL, NULL),
      AD_ESTATE);
  ad_pause_recording(was);
  assert_error(AD_ESTATE, "paused");
}

/* The error recorded before a successful check is left alone. */
static void success_leaves_the_recorded_error_alone(void **state) {
  (void)state;
  assert_null(ad_reshape(vec(2, X4), 1, SHAPE(3)));
  assert_int_equal(ad_error(), AD_ESHAPE);
  assert_int_equal(
      ad_check_grads(elementwise, NULL, vec(2, X4), 2, BOTH, 0, RTOL, NULL),
      AD_OK);
  assert_error(AD_ESHAPE, "ad_reshape");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(passes_elementwise_functions),
      scoped_test(passes_reductions),
      scoped_test(passes_matmul_with_matrix_input_and_output),
      scoped_test(passes_softmax_and_norms),
      scoped_test(passes_rosenbrock_small_and_large),
      scoped_test(passes_with_zero_tolerances),
      scoped_test(passes_in_each_mode_alone_and_at_order_four),
      scoped_test(passes_at_large_and_small_scales),
      scoped_test(passes_with_zero_coordinates),
      scoped_test(catches_wrong_first_derivative),
      scoped_test(catches_wrong_second_derivative),
      scoped_test(catches_wrong_third_derivative),
      scoped_test(catches_wrong_derivatives_at_large_and_small_scales),
      scoped_test(catches_custom_vjp_off_by_1e_4),
      scoped_test(catches_custom_jvp_off_by_1e_4_in_forward_mode),
      scoped_test(nestings_that_disagree_are_caught),
      scoped_test(report_describes_the_closest_comparison),
      scoped_test(report_is_deterministic_and_leaves_ad_seed_alone),
      scoped_test(threads_check_concurrently),
      scoped_test(bad_arguments_are_einval),
      scoped_test(failing_functions_give_their_status),
      scoped_test(non_finite_differences_fail_the_check),
      scoped_test(function_leaving_a_tape_open_is_estate),
      scoped_test(libad_errors_name_the_order_and_nesting),
      scoped_test(paused_recording_is_estate),
      scoped_test(success_leaves_the_recorded_error_alone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
