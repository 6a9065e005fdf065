/* Tests of custom ops, gradient checkpointing, anomaly detection and the
 * Graphviz export of tapes. */
#include <stdlib.h>

#include "testutil.h"

/* Only for ad__fail_alloc_after, the allocation fault injector. */
#include "internal.h"

#define TOL 1e-12

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

static ad_tensor *mat(int64_t r, int64_t c, const double *v) {
  return ad_tensor_new(2, SHAPE(r, c), v);
}

/* NULL for NULL, keeping the error that made x NULL. */
static ad_tensor *ones_like(ad_tensor *x) {
  return x ? ad_ones(ad_ndim(x), ad_shape(x)) : NULL;
}

/* A 1-in, 1-out custom op applied to x; NULL on error. */
static ad_tensor *apply1(const ad_custom_op *op, void *user, ad_tensor *x) {
  ad_tensor *y = NULL;
  if (ad_custom_apply(op, user, &x, &y) != AD_OK) return NULL;
  return y;
}

/* Derivatives in every nesting: modes is a string of 'r' (ad_grad of the
 * sum) and 'f' (ad_jvp along ones), outermost first.  For an elementwise
 * base function each level is the elementwise derivative, so "rf" and
 * "fr" both give f'' element by element. */
typedef struct nest {
  ad_fn base;
  void *base_ctx;
  const char *modes;
} nest;

static ad_tensor *nested(ad_tensor *x, void *p);

static ad_tensor *nested_sum(ad_tensor *x, void *p) {
  return ad_sum_all(nested(x, p));
}

static ad_tensor *nested(ad_tensor *x, void *p) {
  const nest *n = p;
  if (!n->modes[0]) return n->base(x, n->base_ctx);
  nest inner = {n->base, n->base_ctx, n->modes + 1};
  if (n->modes[0] == 'r') return ad_grad(nested_sum, &inner, x);
  return ad_jvp(nested, &inner, x, ones_like(x), NULL);
}

/* The 14 nestings of orders 1 to 3. */
static const char *const all_nestings[] = {
    "r",   "f",   "rr",  "rf",  "fr",  "ff",  "rrr",
    "rrf", "rfr", "rff", "frr", "frf", "ffr", "fff"};
#define NUM_NESTINGS ((int)(sizeof all_nestings / sizeof *all_nestings))

/* ---- log1pexp, the guide's example ------------------------------------- */

/* log(1 + exp(x)) written naively: exp overflows above x ~ 709.78. */
static ad_tensor *log1pexp_naive(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_log(ad_add_scalar(ad_exp(x), 1.0));
}

/* Forward: max(x, 0) + log1p(exp(-|x|)), which never overflows. */
static ad_status log1pexp_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_add(ad_relu(in[0]), ad_log1p(ad_exp(ad_neg(ad_abs(in[0])))));
  return out[0] ? AD_OK : ad_error();
}

/* VJP: g * sigmoid(x), from the op's (differentiable) input. */
static ad_status log1pexp_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                              ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_sigmoid(ad_custom_input(c, 0)));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op log1pexp_op = {"log1pexp", 1, 1, log1pexp_forward,
                                         log1pexp_vjp, NULL};

static ad_tensor *log1pexp(ad_tensor *x, void *ctx) {
  (void)ctx;
  return apply1(&log1pexp_op, NULL, x);
}

static void log1pexp_naive_gradient_is_nan_at_1000(void **state) {
  (void)state;
  /* exp(1000) = inf, so the chain rule meets 0 * inf. */
  ad_tensor *g = ad_grad(log1pexp_naive, NULL, ad_scalar(1000.0));
  assert_non_null(g);
  assert_true(isnan(ad_item(g)));
}

static void log1pexp_custom_gradient_is_exactly_one_at_1000(void **state) {
  (void)state;
  ad_tensor *value = NULL;
  ad_tensor *g = ad_value_and_grad(log1pexp, NULL, ad_scalar(1000.0), &value);
  assert_non_null(g);
  assert_true(ad_item(g) == 1.0);
  assert_true(ad_item(value) == 1000.0);
}

static void log1pexp_both_give_one_half_at_zero(void **state) {
  (void)state;
  assert_true(ad_item(ad_grad(log1pexp_naive, NULL, ad_scalar(0.0))) == 0.5);
  assert_true(ad_item(ad_grad(log1pexp, NULL, ad_scalar(0.0))) == 0.5);
}

/* ---- custom sine with either rule or both ------------------------------ */

typedef struct counts {
  int forward, vjp, jvp;
} counts;

static ad_status sin_forward(ad_custom_ctx *c, ad_tensor *const *in,
                             ad_tensor **out, void *user) {
  (void)c;
  if (user) ((counts *)user)->forward++;
  out[0] = ad_sin(in[0]);
  return out[0] ? AD_OK : ad_error();
}

static ad_status sin_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                         ad_tensor **gin, void *user) {
  if (user) ((counts *)user)->vjp++;
  gin[0] = ad_mul(gout[0], ad_cos(ad_custom_input(c, 0)));
  return gin[0] ? AD_OK : ad_error();
}

static ad_status sin_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                         ad_tensor **tout, void *user) {
  if (user) ((counts *)user)->jvp++;
  tout[0] = ad_mul(tin[0], ad_cos(ad_custom_input(c, 0)));
  return tout[0] ? AD_OK : ad_error();
}

static const ad_custom_op sin_vjp_only = {"sin_vjp_only", 1, 1, sin_forward,
                                          sin_vjp, NULL};
static const ad_custom_op sin_jvp_only = {"sin_jvp_only", 1, 1, sin_forward,
                                          NULL, sin_jvp};
static const ad_custom_op sin_both = {"sin_both", 1, 1, sin_forward, sin_vjp,
                                      sin_jvp};

static ad_tensor *apply_op(ad_tensor *x, void *op) {
  return apply1(op, NULL, x);
}

static const double points[3] = {-1.3, 0.4, 2.1};

static void vjp_only_op_works_under_forward_mode(void **state) {
  (void)state;
  const double dir[3] = {1.0, -2.0, 0.5};
  ad_tensor *x = vec(3, points), *v = vec(3, dir), *value = NULL;
  ad_tensor *t = ad_jvp(apply_op, (void *)&log1pexp_op, x, v, &value);
  double want[3];
  for (int i = 0; i < 3; i++)
    want[i] = dir[i] / (1.0 + exp(-points[i])); /* sigmoid(x) v */
  assert_tensor_near(t, want, 3, TOL);
  assert_tensor_near(value, VALUES(log1p(exp(-1.3)), log1p(exp(0.4)),
                                   log1p(exp(2.1))),
                     3, TOL);
}

static void jvp_only_op_works_under_reverse_mode(void **state) {
  (void)state;
  ad_tensor *g = ad_grad(nested_sum,
                         &(nest){apply_op, (void *)&sin_jvp_only, ""},
                         vec(3, points));
  assert_tensor_near(g, VALUES(cos(-1.3), cos(0.4), cos(2.1)), 3, TOL);
}

static void each_mode_uses_its_own_rule_when_both_are_given(void **state) {
  (void)state;
  counts n = {0, 0, 0};
  ad_custom_op op = sin_both;
  ad_tensor *x = vec(3, points);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_sum_all(apply1(&op, &n, x));
  ad_tape_end(tape);
  assert_non_null(ad_tape_gradient(tape, y, x));
  ad_tape_free(tape);
  assert_int_equal(n.forward, 1);
  assert_int_equal(n.vjp, 1);
  assert_int_equal(n.jvp, 0);

  n = (counts){0, 0, 0};
  ad_fwd *acc = ad_fwd_begin(1, &x, (ad_tensor *[]){ones_like(x)});
  y = apply1(&op, &n, x);
  assert_non_null(ad_fwd_jvp(acc, y));
  assert_int_equal(ad_fwd_end(acc), AD_OK);
  assert_int_equal(n.forward, 1);
  assert_int_equal(n.vjp, 0);
  assert_int_equal(n.jvp, 1);
}

/* sin's k-th derivative is sin(x + k pi / 2) (M_PI is not C11). */
static void check_sin_nestings(const ad_custom_op *op) {
  ad_tensor *x = vec(3, points);
  for (int k = 0; k < NUM_NESTINGS; k++) {
    const char *modes = all_nestings[k];
    int order = (int)strlen(modes);
    ad_tensor *d = nested(x, &(nest){apply_op, (void *)op, modes});
    double want[3];
    for (int i = 0; i < 3; i++)
      want[i] = sin(points[i] + order * 1.5707963267948966);
    if (!d) print_error("%s, nesting %s: %s\n", op->name, modes,
                        ad_error_message());
    assert_tensor_near(d, want, 3, 1e-11);
  }
}

static void vjp_only_op_to_third_order_in_all_nestings(void **state) {
  (void)state;
  check_sin_nestings(&sin_vjp_only);
  /* log1pexp: sigma, sigma (1 - sigma), sigma (1 - sigma) (1 - 2 sigma). */
  ad_tensor *x = vec(3, points);
  for (int k = 0; k < NUM_NESTINGS; k++) {
    const char *modes = all_nestings[k];
    size_t order = strlen(modes);
    ad_tensor *d = nested(x, &(nest){log1pexp, NULL, modes});
    double want[3];
    for (int i = 0; i < 3; i++) {
      double s = 1.0 / (1.0 + exp(-points[i]));
      want[i] = order == 1   ? s
                : order == 2 ? s * (1 - s)
                             : s * (1 - s) * (1 - 2 * s);
    }
    assert_tensor_near(d, want, 3, 1e-11);
  }
}

static void jvp_only_op_to_third_order_in_all_nestings(void **state) {
  (void)state;
  check_sin_nestings(&sin_jvp_only);
}

static void op_with_both_rules_to_third_order_in_all_nestings(void **state) {
  (void)state;
  check_sin_nestings(&sin_both);
}

/* ---- several inputs and outputs: (sin(x) y, x + y) --------------------- */

typedef struct sinmul_record {
  int vjp_calls;
  bool gout_null[2];
  double gout_abs[2];
} sinmul_record;

static ad_status sinmul_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_mul(ad_sin(in[0]), in[1]);
  out[1] = ad_add(in[0], in[1]);
  return out[0] && out[1] ? AD_OK : ad_error();
}

static ad_status sinmul_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                            ad_tensor **gin, void *user) {
  ad_tensor *x = ad_custom_input(c, 0), *y = ad_custom_input(c, 1);
  sinmul_record *r = user;
  if (r) {
    r->vjp_calls++;
    for (int j = 0; j < 2; j++) {
      r->gout_null[j] = gout[j] == NULL;
      if (gout[j]) r->gout_abs[j] = ad_item(ad_sum_all(ad_abs(gout[j])));
    }
  }
  gin[0] = ad_add(ad_mul(gout[0], ad_mul(ad_cos(x), y)), gout[1]);
  gin[1] = ad_add(ad_mul(gout[0], ad_sin(x)), gout[1]);
  return gin[0] && gin[1] ? AD_OK : ad_error();
}

static ad_status sinmul_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                            ad_tensor **tout, void *user) {
  (void)user;
  ad_tensor *x = ad_custom_input(c, 0), *y = ad_custom_input(c, 1);
  tout[0] = ad_add(ad_mul(ad_mul(ad_cos(x), y), tin[0]),
                   ad_mul(ad_sin(x), tin[1]));
  tout[1] = ad_add(tin[0], tin[1]);
  return tout[0] && tout[1] ? AD_OK : ad_error();
}

static const ad_custom_op sinmul_ops[3] = {
    {"sinmul_vjp_only", 2, 2, sinmul_forward, sinmul_vjp, NULL},
    {"sinmul_jvp_only", 2, 2, sinmul_forward, NULL, sinmul_jvp},
    {"sinmul_both", 2, 2, sinmul_forward, sinmul_vjp, sinmul_jvp}};

/* F(x, y) = out0 * out1 = sin(x) y (x + y). */
static ad_tensor *sinmul_product(int n, ad_tensor *const *xs, void *op) {
  (void)n;
  ad_tensor *out[2] = {NULL, NULL};
  if (ad_custom_apply(op, NULL, xs, out) != AD_OK) return NULL;
  return ad_sum_all(ad_mul(out[0], out[1]));
}

/* The same F of a 2-vector v = (x, y). */
static ad_tensor *sinmul_of_vector(ad_tensor *v, void *op) {
  ad_tensor *xs[2] = {ad_slice(v, 0, 0, 1, 1), ad_slice(v, 0, 1, 2, 1)};
  return sinmul_product(2, xs, op);
}

static void several_inputs_and_outputs_first_order(void **state) {
  (void)state;
  const double x = 0.7, y = -1.2;
  const double s = sin(x), c = cos(x), S = x + y;
  for (int k = 0; k < 3; k++) {
    ad_tensor *xs[2] = {ad_scalar(x), ad_scalar(y)}, *grads[2], *value;
    assert_int_equal(ad_grad_n(sinmul_product, (void *)&sinmul_ops[k], 2, xs,
                               grads, &value),
                     AD_OK);
    assert_tensor_near(value, VALUES(s * y * S), 1, TOL);
    assert_tensor_near(grads[0], VALUES(c * y * S + s * y), 1, TOL);
    assert_tensor_near(grads[1], VALUES(s * (x + 2 * y)), 1, TOL);

    ad_tensor *vs[2] = {ad_scalar(0.3), ad_scalar(-2.0)}, *jvp;
    assert_int_equal(ad_jvp_n(sinmul_product, (void *)&sinmul_ops[k], 2, xs,
                              vs, &jvp, NULL),
                     AD_OK);
    assert_tensor_near(jvp,
                       VALUES(0.3 * (c * y * S + s * y) -
                              2.0 * s * (x + 2 * y)),
                       1, TOL);
  }
}

static ad_tensor *sinmul_grad(ad_tensor *v, void *op) {
  return ad_grad(sinmul_of_vector, op, v);
}

static ad_tensor *sinmul_grad_fwd(ad_tensor *v, void *op) {
  return ad_jacfwd(sinmul_of_vector, op, v);
}

static void several_inputs_and_outputs_hessian_in_all_nestings(void **state) {
  (void)state;
  const double x = 0.7, y = -1.2;
  const double s = sin(x), c = cos(x), S = x + y;
  const double fxx = -s * y * S + 2 * c * y, fxy = c * (x + 2 * y) + s;
  const double want[4] = {fxx, fxy, fxy, 2 * s};
  for (int k = 0; k < 3; k++) {
    void *op = (void *)&sinmul_ops[k];
    ad_tensor *v = vec(2, VALUES(x, y));
    ad_tensor *h[4] = {
        ad_hessian(sinmul_of_vector, op, v),  /* fwd over rev */
        ad_jacobian(sinmul_grad, op, v),      /* rev over rev */
        ad_jacobian(sinmul_grad_fwd, op, v),  /* rev over fwd */
        ad_jacfwd(sinmul_grad_fwd, op, v)};   /* fwd over fwd */
    for (int i = 0; i < 4; i++) {
      assert_shape(h[i], 2, 2, 2);
      assert_tensor_near(h[i], want, 4, 1e-11);
    }
  }
}

static ad_tensor *second_output_only(ad_tensor *v, void *rec) {
  ad_tensor *xs[2] = {ad_slice(v, 0, 0, 1, 1), ad_slice(v, 0, 1, 2, 1)};
  ad_tensor *out[2] = {NULL, NULL};
  if (ad_custom_apply(&sinmul_ops[0], rec, xs, out) != AD_OK) return NULL;
  return ad_sum_all(ad_mul_scalar(out[1], 3.0));
}

static void unconnected_output_gets_zero_cotangent(void **state) {
  (void)state;
  sinmul_record rec = {0, {true, true}, {-1, -1}};
  ad_tensor *g = ad_grad(second_output_only, &rec, vec(2, VALUES(0.7, -1.2)));
  assert_tensor_near(g, VALUES(3.0, 3.0), 2, TOL);
  assert_int_equal(rec.vjp_calls, 1);
  assert_false(rec.gout_null[0]); /* zeros, never NULL */
  assert_false(rec.gout_null[1]);
  assert_true(rec.gout_abs[0] == 0.0);
  assert_true(rec.gout_abs[1] == 3.0);
}

/* x * y whose rules claim zero for y (gin/tout NULL). */
static ad_status mul_forward(ad_custom_ctx *c, ad_tensor *const *in,
                             ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_mul(in[0], in[1]);
  return out[0] ? AD_OK : ad_error();
}

static ad_status mul_vjp_x_only(ad_custom_ctx *c, ad_tensor *const *gout,
                                ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_custom_input(c, 1));
  return gin[0] ? AD_OK : ad_error(); /* gin[1] stays NULL: zero */
}

static ad_status mul_jvp_none(ad_custom_ctx *c, ad_tensor *const *tin,
                              ad_tensor **tout, void *user) {
  (void)c;
  (void)tin;
  (void)tout;
  (void)user;
  return AD_OK; /* tout[0] stays NULL: zero */
}

static const ad_custom_op mul_x_only = {"mul_x_only", 2, 1, mul_forward,
                                        mul_vjp_x_only, mul_jvp_none};

static ad_tensor *mul_x_only_fn(int n, ad_tensor *const *xs, void *ctx) {
  (void)n;
  (void)ctx;
  ad_tensor *y = NULL;
  if (ad_custom_apply(&mul_x_only, NULL, xs, &y) != AD_OK) return NULL;
  return ad_sum_all(y);
}

static void null_gin_and_tout_mean_zero(void **state) {
  (void)state;
  ad_tensor *xs[2] = {vec(2, VALUES(2.0, 3.0)), vec(2, VALUES(5.0, 7.0))};
  ad_tensor *grads[2];
  assert_int_equal(ad_grad_n(mul_x_only_fn, NULL, 2, xs, grads, NULL), AD_OK);
  assert_tensor_near(grads[0], VALUES(5.0, 7.0), 2, TOL);
  assert_shape(grads[1], 1, 2);
  assert_tensor_near(grads[1], VALUES(0.0, 0.0), 2, 0);

  ad_tensor *vs[2] = {vec(2, VALUES(1.0, 1.0)), vec(2, VALUES(1.0, 1.0))};
  ad_tensor *jvp = NULL;
  assert_int_equal(ad_jvp_n(mul_x_only_fn, NULL, 2, xs, vs, &jvp, NULL),
                   AD_OK);
  assert_tensor_near(jvp, VALUES(0.0), 1, 0);
}

/* ---- saved tensors and the accessors ----------------------------------- */

typedef struct saved_record {
  ad_status save_null, save_in_vjp, saved_past_end, saved_negative;
  int nsaved_seen;
  double second_saved;
} saved_record;

/* exp(x), saving exp(x) and a constant 7 for the VJP. */
static ad_status exp_forward(ad_custom_ctx *c, ad_tensor *const *in,
                             ad_tensor **out, void *user) {
  saved_record *r = user;
  out[0] = ad_exp(in[0]);
  if (!out[0]) return ad_error();
  r->save_null = ad_custom_save(c, NULL);
  ad_error_clear();
  ad_status st = ad_custom_save(c, out[0]);
  if (st == AD_OK) st = ad_custom_save(c, ad_scalar(7.0));
  return st;
}

static ad_status exp_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                         ad_tensor **gin, void *user) {
  saved_record *r = user;
  r->save_in_vjp = ad_custom_save(c, gout[0]);
  ad_error_clear();
  r->saved_past_end = ad_custom_saved(c, 2) ? AD_OK : ad_error();
  ad_error_clear();
  r->saved_negative = ad_custom_saved(c, -1) ? AD_OK : ad_error();
  ad_error_clear();
  r->second_saved = ad_item(ad_custom_saved(c, 1));
  gin[0] = ad_mul(gout[0], ad_custom_saved(c, 0));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op exp_saved_op = {"exp_saved", 1, 1, exp_forward,
                                          exp_vjp, NULL};

static ad_tensor *sum_exp_saved(ad_tensor *x, void *rec) {
  return ad_sum_all(apply1(&exp_saved_op, rec, x));
}

static void saved_tensors_reach_the_rules(void **state) {
  (void)state;
  saved_record rec = {0};
  ad_tensor *g = ad_grad(sum_exp_saved, &rec, vec(2, VALUES(0.5, -1.0)));
  assert_tensor_near(g, VALUES(exp(0.5), exp(-1.0)), 2, TOL);
  assert_true(rec.second_saved == 7.0);
  assert_int_equal(rec.save_null, AD_EINVAL);
}

static void save_outside_forward_is_estate(void **state) {
  (void)state;
  saved_record rec = {0};
  assert_non_null(ad_grad(sum_exp_saved, &rec, vec(2, VALUES(0.5, -1.0))));
  assert_int_equal(rec.save_in_vjp, AD_ESTATE);
}

static void saved_index_out_of_range_is_einval(void **state) {
  (void)state;
  saved_record rec = {0};
  assert_non_null(ad_grad(sum_exp_saved, &rec, vec(2, VALUES(0.5, -1.0))));
  assert_int_equal(rec.saved_past_end, AD_EINVAL);
  assert_int_equal(rec.saved_negative, AD_EINVAL);
}

typedef struct access_record {
  bool input_in_forward;
  ad_status output_in_forward, input_past_end, output_past_end, null_ctx;
  double input_value, output_value;
} access_record;

static ad_status access_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                ad_tensor **out, void *user) {
  access_record *r = user;
  r->input_in_forward = ad_custom_input(c, 0) == in[0];
  r->output_in_forward = ad_custom_output(c, 0) ? AD_OK : ad_error();
  ad_error_clear();
  out[0] = ad_mul_scalar(in[0], 2.0);
  return out[0] ? AD_OK : ad_error();
}

static ad_status access_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                            ad_tensor **gin, void *user) {
  access_record *r = user;
  r->input_value = ad_item(ad_custom_input(c, 0));
  r->output_value = ad_item(ad_custom_output(c, 0));
  r->input_past_end = ad_custom_input(c, 1) ? AD_OK : ad_error();
  ad_error_clear();
  r->output_past_end = ad_custom_output(c, 1) ? AD_OK : ad_error();
  ad_error_clear();
  r->null_ctx = ad_custom_input(NULL, 0) ? AD_OK : ad_error();
  ad_error_clear();
  gin[0] = ad_mul_scalar(gout[0], 2.0);
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op access_op = {"access", 1, 1, access_forward,
                                       access_vjp, NULL};

static ad_tensor *access_fn(ad_tensor *x, void *rec) {
  return apply1(&access_op, rec, x);
}

static void input_and_output_accessors(void **state) {
  (void)state;
  access_record rec = {false, AD_OK, AD_OK, AD_OK, AD_OK, 0, 0};
  ad_tensor *g = ad_grad(access_fn, &rec, ad_scalar(1.5));
  assert_tensor_near(g, VALUES(2.0), 1, TOL);
  assert_true(rec.input_in_forward);
  assert_int_equal(rec.output_in_forward, AD_ESTATE);
  assert_true(rec.input_value == 1.5);
  assert_true(rec.output_value == 3.0);
  assert_int_equal(rec.input_past_end, AD_EINVAL);
  assert_int_equal(rec.output_past_end, AD_EINVAL);
  assert_int_equal(rec.null_ctx, AD_EINVAL);
}

/* ---- failing callbacks ------------------------------------------------- */

/* A libad call that fails with AD_ESHAPE and a message naming ad_matmul. */
static ad_tensor *bad_matmul(void) {
  return ad_matmul(ad_ones(2, SHAPE(2, 3)), ad_ones(2, SHAPE(4, 5)));
}

static ad_status failing_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                 ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_sin(in[0]); /* made, then abandoned: must not leak */
  out[1] = bad_matmul();
  return out[1] ? AD_OK : ad_error();
}

static ad_status failing_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                             ad_tensor **gin, void *user) {
  (void)c;
  (void)user;
  gin[0] = ad_mul(gout[0], ad_scalar(2.0));
  return bad_matmul() ? AD_OK : ad_error();
}

static ad_status failing_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                             ad_tensor **tout, void *user) {
  (void)c;
  (void)user;
  tout[0] = ad_mul(tin[0], ad_scalar(2.0));
  return bad_matmul() ? AD_OK : ad_error();
}

static void failing_forward_fails_the_call_with_its_status(void **state) {
  (void)state;
  const ad_custom_op op = {"fails_forward", 1, 2, failing_forward, sin_vjp,
                           NULL};
  ad_tensor *x = ad_scalar(1.0);
  ad_tensor *out[2] = {x, x};
  assert_int_equal(ad_custom_apply(&op, NULL, &x, out), AD_ESHAPE);
  assert_null(out[0]);
  assert_null(out[1]);
  assert_error(AD_ESHAPE, "ad_matmul");

  /* The same inside a recording tape: nothing is recorded. */
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  assert_int_equal(ad_custom_apply(&op, NULL, &x, out), AD_ESHAPE);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_size(tape), 0);
  ad_tape_free(tape);
  assert_error(AD_ESHAPE, "inner dimensions");
}

static void failing_vjp_fails_the_gradient(void **state) {
  (void)state;
  const ad_custom_op op = {"fails_vjp", 1, 1, sin_forward, failing_vjp,
                           NULL};
  ad_tensor *g = ad_grad(nested_sum, &(nest){apply_op, (void *)&op, ""},
                         vec(2, VALUES(1.0, 2.0)));
  assert_null(g);
  assert_error(AD_ESHAPE, "ad_matmul");
  /* Forward mode derives the JVP from the failing VJP: same failure. */
  g = ad_jvp(apply_op, (void *)&op, ad_scalar(1.0), ad_scalar(1.0), NULL);
  assert_null(g);
  assert_error(AD_ESHAPE, "ad_matmul");
}

static void failing_jvp_fails_the_jvp(void **state) {
  (void)state;
  const ad_custom_op op = {"fails_jvp", 1, 1, sin_forward, NULL,
                           failing_jvp};
  ad_tensor *t = ad_jvp(apply_op, (void *)&op, vec(2, VALUES(1.0, 2.0)),
                        vec(2, VALUES(1.0, 1.0)), NULL);
  assert_null(t);
  assert_error(AD_ESHAPE, "ad_matmul");
  /* Reverse mode transposes the failing JVP: same failure. */
  t = ad_grad(nested_sum, &(nest){apply_op, (void *)&op, ""},
              ad_scalar(1.0));
  assert_null(t);
  assert_error(AD_ESHAPE, "ad_matmul");
}

static ad_status silent_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                ad_tensor **out, void *user) {
  (void)c;
  (void)in;
  (void)out;
  (void)user;
  return AD_EIO;
}

static ad_status silent_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                            ad_tensor **gin, void *user) {
  (void)c;
  (void)gout;
  (void)gin;
  (void)user;
  return AD_EUNIMPL;
}

static void status_without_message_gets_one_naming_the_op(void **state) {
  (void)state;
  const ad_custom_op op = {"quiet_op", 1, 1, silent_forward, NULL, NULL};
  ad_tensor *x = ad_scalar(1.0), *y = NULL;
  assert_int_equal(ad_custom_apply(&op, NULL, &x, &y), AD_EIO);
  assert_null(y);
  assert_error(AD_EIO, "quiet_op: the forward callback failed");

  const ad_custom_op op2 = {"quiet_rule", 1, 1, sin_forward, silent_vjp,
                            NULL};
  assert_null(ad_grad(apply_op, (void *)&op2, x));
  assert_error(AD_EUNIMPL, "quiet_rule: the VJP callback failed");
}

static ad_status forward_one_of_two(ad_custom_ctx *c, ad_tensor *const *in,
                                    ad_tensor **out, void *user);

static void callback_failures_are_not_confused_with_an_earlier_error(
    void **state) {
  (void)state;
  const ad_custom_op quiet = {"quiet_op", 1, 1, silent_forward, NULL, NULL};
  const ad_custom_op quiet_rule = {"quiet_rule", 1, 1, sin_forward,
                                   silent_vjp, NULL};
  ad_tensor *x = ad_scalar(1.0), *y = NULL;
  /* Each time an unrelated error is left over from an earlier call. */
  assert_null(bad_matmul());
  assert_int_equal(ad_custom_apply(&quiet, NULL, &x, &y), AD_EIO);
  assert_error(AD_EIO, "quiet_op: the forward callback failed");
  assert_null(bad_matmul());
  assert_null(ad_grad(apply_op, (void *)&quiet_rule, x));
  assert_error(AD_EUNIMPL, "quiet_rule: the VJP callback failed");
  const ad_custom_op half = {"half_done", 1, 2, forward_one_of_two,
                             NULL, NULL};
  ad_tensor *out[2];
  assert_null(bad_matmul());
  assert_int_equal(ad_custom_apply(&half, NULL, &x, out), AD_EINVAL);
  assert_error(AD_EINVAL, "half_done: the forward callback left output 1");
}

static ad_status forward_one_of_two(ad_custom_ctx *c, ad_tensor *const *in,
                                    ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_sin(in[0]);
  return AD_OK; /* out[1] left NULL */
}

static void forward_leaving_an_output_null_is_einval(void **state) {
  (void)state;
  const ad_custom_op op = {"half_done", 1, 2, forward_one_of_two, NULL,
                           NULL};
  ad_tensor *x = ad_scalar(1.0), *out[2] = {x, x};
  assert_int_equal(ad_custom_apply(&op, NULL, &x, out), AD_EINVAL);
  assert_null(out[0]);
  assert_null(out[1]);
  assert_error(AD_EINVAL, "half_done: the forward callback left output 1");
}

static void bad_op_descriptions_are_einval(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *out[17] = {0};
  ad_tensor *in2[2] = {x, NULL};
  ad_custom_op op = {"shapeless", 1, 1, sin_forward, sin_vjp, NULL};

  assert_int_equal(ad_custom_apply(NULL, NULL, &x, out), AD_EINVAL);
  assert_error(AD_EINVAL, "op is NULL");

  op.forward = NULL;
  assert_int_equal(ad_custom_apply(&op, NULL, &x, out), AD_EINVAL);
  assert_error(AD_EINVAL, "shapeless has no forward function");
  op.forward = sin_forward;

  const int bad[3][2] = {{1, 0}, {1, 17}, {-1, 1}};
  for (int k = 0; k < 3; k++) {
    op.nin = bad[k][0];
    op.nout = bad[k][1];
    assert_int_equal(ad_custom_apply(&op, NULL, &x, out), AD_EINVAL);
    assert_error(AD_EINVAL, "1 <= nout <= 16");
  }
  op.nin = 1;
  op.nout = 1;

  assert_int_equal(ad_custom_apply(&op, NULL, NULL, out), AD_EINVAL);
  assert_error(AD_EINVAL, "in is NULL");
  assert_int_equal(ad_custom_apply(&op, NULL, &x, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "out is NULL");
  op.nin = 2;
  out[0] = x;
  assert_int_equal(ad_custom_apply(&op, NULL, in2, out), AD_EINVAL);
  assert_null(out[0]);
  assert_error(AD_EINVAL, "input 1");

  /* An unnamed op still gets a name in messages. */
  op.name = NULL;
  op.forward = NULL;
  assert_int_equal(ad_custom_apply(&op, NULL, in2, out), AD_EINVAL);
  assert_error(AD_EINVAL, "unnamed");
}

static void op_without_rules_runs_but_is_eunimpl_when_differentiated(
    void **state) {
  (void)state;
  const ad_custom_op op = {"no_rules", 1, 1, sin_forward, NULL, NULL};
  ad_tensor *y = apply1(&op, NULL, ad_scalar(0.5));
  assert_tensor_near(y, VALUES(sin(0.5)), 1, TOL);

  /* Recording is fine too; differentiating is not. */
  assert_null(ad_grad(apply_op, (void *)&op, ad_scalar(0.5)));
  assert_error(AD_EUNIMPL, "no_rules");
  assert_null(ad_jvp(apply_op, (void *)&op, ad_scalar(0.5), ad_scalar(1.0),
                     NULL));
  assert_error(AD_EUNIMPL, "no_rules");
}

/* Rules that answer with the wrong shape. */
static ad_status wrong_shape_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                                 ad_tensor **gin, void *user) {
  (void)c;
  (void)gout;
  (void)user;
  gin[0] = ad_ones(1, SHAPE(5));
  return gin[0] ? AD_OK : ad_error();
}

static ad_status wrong_shape_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                                 ad_tensor **tout, void *user) {
  (void)c;
  (void)tin;
  (void)user;
  tout[0] = ad_ones(1, SHAPE(5));
  return tout[0] ? AD_OK : ad_error();
}

static void rule_of_the_wrong_shape_is_an_error_naming_the_op(void **state) {
  (void)state;
  const ad_custom_op op = {"misshapen", 1, 1, sin_forward, wrong_shape_vjp,
                           wrong_shape_jvp};
  ad_tensor *x = vec(3, points);
  assert_null(ad_grad(nested_sum, &(nest){apply_op, (void *)&op, ""}, x));
  assert_error(AD_EINTERNAL,
               "misshapen: gradient of input 0 has shape (5,), expected "
               "(3,)");
  assert_null(ad_jvp(apply_op, (void *)&op, x, x, NULL));
  assert_error(AD_EINTERNAL,
               "misshapen: JVP of output 0 has shape (5,), expected (3,)");
}

/* A JVP-only op whose tangent is zero (tout left NULL). */
static ad_status zero_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                          ad_tensor **tout, void *user) {
  (void)c;
  (void)tin;
  (void)tout;
  (void)user;
  return AD_OK;
}

static void derived_rules_ignore_an_earlier_unrelated_error(void **state) {
  (void)state;
  const ad_custom_op op = {"flat", 1, 1, sin_forward, NULL, zero_jvp};
  /* An error left over from an earlier call, never cleared: successful
   * calls leave it alone, and must not fail because of it. */
  assert_null(bad_matmul());
  ad_tensor *g = ad_grad(nested_sum, &(nest){apply_op, (void *)&op, ""},
                         vec(2, VALUES(1.0, 2.0)));
  assert_tensor_near(g, VALUES(0.0, 0.0), 2, 0);
  assert_error(AD_ESHAPE, "ad_matmul"); /* still the old one */
}

/* ---- composition ------------------------------------------------------- */

static ad_tensor *sum_cubes(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_pow_scalar(x, 3.0));
}

/* 3 x^2 computed by ad_grad inside forward; the VJP gives g * 6x. */
static ad_status grad_forward(ad_custom_ctx *c, ad_tensor *const *in,
                              ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_grad(sum_cubes, NULL, in[0]);
  return out[0] ? AD_OK : ad_error();
}

static ad_status grad_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                          ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_mul_scalar(ad_custom_input(c, 0), 6.0));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op grad_inside_op = {"grad_inside", 1, 1,
                                            grad_forward, grad_vjp, NULL};

static void forward_may_use_ad_grad_internally(void **state) {
  (void)state;
  ad_tensor *x = vec(2, VALUES(1.0, 2.0)), *value = NULL;
  nest plain = {apply_op, (void *)&grad_inside_op, ""};
  ad_tensor *g = ad_value_and_grad(nested_sum, &plain, x, &value);
  assert_tensor_near(value, VALUES(15.0), 1, TOL);
  assert_tensor_near(g, VALUES(6.0, 12.0), 2, TOL);
  ad_tensor *t = ad_jvp(apply_op, (void *)&grad_inside_op, x,
                        vec(2, VALUES(1.0, -1.0)), &value);
  assert_tensor_near(value, VALUES(3.0, 12.0), 2, TOL);
  assert_tensor_near(t, VALUES(6.0, -12.0), 2, TOL);
}

/* Applies a custom op from a description that lives on this frame only. */
static ad_tensor *apply_from_stack(ad_tensor *x) {
  ad_custom_op op = {"stack_op", 1, 1, log1pexp_forward, log1pexp_vjp,
                     NULL};
  ad_tensor *y = apply1(&op, NULL, x);
  memset(&op, 0, sizeof op);
  return y;
}

static void custom_op_is_one_node_and_its_description_is_copied(
    void **state) {
  (void)state;
  ad_tensor *x = vec(2, VALUES(-3.0, 0.5));
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = apply_from_stack(x); /* five ops inside, one node */
  ad_tape_end(tape);
  assert_int_equal(ad_tape_size(tape), 1);
  ad_tensor *g = NULL;
  assert_int_equal(ad_tape_gradients(tape, y, ones_like(y), 1, &x, &g, 0),
                   AD_OK);
  ad_tape_free(tape);
  assert_tensor_near(g, VALUES(1 / (1 + exp(3.0)), 1 / (1 + exp(-0.5))), 2,
                     TOL);
}

/* sum(log1pexp(x) * x), whose Hessian is diagonal. */
static ad_tensor *log1pexp_times_x(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(log1pexp(x, NULL), x));
}

static void custom_op_inside_ad_hessian(void **state) {
  (void)state;
  /* d/dx [L(x) x] = s x + L; d2 = s' x + 2 s with s' = s (1 - s). */
  ad_tensor *h = ad_hessian(log1pexp_times_x, NULL, vec(3, points));
  assert_shape(h, 2, 3, 3);
  double want[9] = {0};
  for (int i = 0; i < 3; i++) {
    double s = 1 / (1 + exp(-points[i]));
    want[4 * i] = s * (1 - s) * points[i] + 2 * s;
  }
  assert_tensor_near(h, want, 9, 1e-11);
}

static ad_status constant_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c;
  (void)in;
  (void)user;
  out[0] = ad_full(1, SHAPE(2), 4.0);
  return out[0] ? AD_OK : ad_error();
}

static const ad_custom_op constant_op = {"constant", 0, 1, constant_forward,
                                         NULL, NULL};

static ad_tensor *times_constant_op(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *k = NULL;
  if (ad_custom_apply(&constant_op, NULL, NULL, &k) != AD_OK) return NULL;
  return ad_sum_all(ad_mul(x, k));
}

static void zero_input_op_makes_a_constant(void **state) {
  (void)state;
  /* nin = 0 (in may be NULL): nothing to differentiate, not recorded. */
  ad_tensor *x = vec(2, VALUES(1.0, 2.0));
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *k = NULL;
  assert_int_equal(ad_custom_apply(&constant_op, NULL, NULL, &k), AD_OK);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_size(tape), 0);
  ad_tape_free(tape);
  assert_tensor_near(k, VALUES(4.0, 4.0), 2, 0);
  assert_tensor_near(ad_grad(times_constant_op, NULL, x), VALUES(4.0, 4.0),
                     2, 0);
}

/* ---- checkpointing ----------------------------------------------------- */

typedef struct chain {
  int blocks;
  int calls; /* how often block ran */
} chain;

/* Six elementwise ops: 0.9 tanh(x) + 0.1 sin(x^2). */
static ad_tensor *block(ad_tensor *x, void *ctx) {
  if (ctx) ((chain *)ctx)->calls++;
  return ad_add(ad_mul_scalar(ad_tanh(x), 0.9),
                ad_mul_scalar(ad_sin(ad_mul(x, x)), 0.1));
}

static ad_tensor *chain_plain(ad_tensor *x, void *ctx) {
  chain *c = ctx;
  for (int i = 0; i < c->blocks && x; i++) x = block(x, c);
  return x;
}

static ad_tensor *chain_checkpointed(ad_tensor *x, void *ctx) {
  chain *c = ctx;
  for (int i = 0; i < c->blocks && x; i++) x = ad_checkpoint(block, c, x);
  return x;
}

static void checkpoint_gradient_equals_plain(void **state) {
  (void)state;
  chain c = {4, 0};
  ad_tensor *x = vec(3, points), *v1 = NULL, *v2 = NULL;
  ad_tensor *g1 =
      ad_value_and_grad(nested_sum, &(nest){chain_plain, &c, ""}, x, &v1);
  ad_tensor *g2 = ad_value_and_grad(
      nested_sum, &(nest){chain_checkpointed, &c, ""}, x, &v2);
  assert_tensors_close(v2, v1, 0);
  assert_tensors_close(g2, g1, 1e-14);
}

static void checkpoint_every_order_and_nesting_equals_plain(void **state) {
  (void)state;
  chain c = {test_quick() ? 2 : 3, 0};
  ad_tensor *x = vec(3, points);
  for (int k = 0; k < NUM_NESTINGS; k++) {
    ad_tensor *d1 = nested(x, &(nest){chain_plain, &c, all_nestings[k]});
    ad_tensor *d2 =
        nested(x, &(nest){chain_checkpointed, &c, all_nestings[k]});
    if (!d2) print_error("nesting %s: %s\n", all_nestings[k],
                         ad_error_message());
    assert_tensors_close(d2, d1, 1e-11);
  }
  /* A full Hessian (forward over reverse) and a JVP. */
  ad_tensor *h1 = ad_hessian(nested_sum, &(nest){chain_plain, &c, ""}, x);
  ad_tensor *h2 =
      ad_hessian(nested_sum, &(nest){chain_checkpointed, &c, ""}, x);
  assert_tensors_close(h2, h1, 1e-12);
  ad_tensor *v = vec(3, VALUES(0.5, -1.0, 2.0));
  assert_tensors_close(ad_jvp(chain_checkpointed, &c, x, v, NULL),
                       ad_jvp(chain_plain, &c, x, v, NULL), 1e-13);
}

static void checkpointed_chain_is_one_node_on_the_tape(void **state) {
  (void)state;
  chain c = {50, 0};
  ad_tensor *x = vec(3, points);
  ad_tape *plain = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(plain, x);
  ad_tensor *y1 = ad_sum_all(chain_plain(x, &c));
  ad_tape_end(plain);
  ad_tape *ckpt = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(ckpt, x);
  ad_tensor *y2 = ad_sum_all(ad_checkpoint(chain_plain, &c, x));
  ad_tape_end(ckpt);
  assert_int_equal(ad_tape_size(plain), 6 * 50 + 1);
  assert_int_equal(ad_tape_size(ckpt), 1 + 1);
  assert_tensors_close(ad_tape_gradient(ckpt, y2, x),
                       ad_tape_gradient(plain, y1, x), 1e-13);
  ad_tape_free(plain);
  ad_tape_free(ckpt);
}

static void checkpoint_recomputes_once_in_backward(void **state) {
  (void)state;
  chain c = {1, 0};
  assert_non_null(ad_grad(nested_sum, &(nest){chain_checkpointed, &c, ""},
                          vec(3, points)));
  assert_int_equal(c.calls, 2); /* forward, then once more in backward */
  c.calls = 0;
  assert_non_null(chain_checkpointed(vec(3, points), &c));
  assert_int_equal(c.calls, 1); /* no AD: no recomputation */
}

static ad_tensor *returns_null(ad_tensor *x, void *ctx) {
  (void)x;
  (void)ctx;
  return NULL;
}

static ad_tensor *fails_with_shape_error(ad_tensor *x, void *ctx) {
  (void)x;
  (void)ctx;
  return bad_matmul();
}

static void checkpoint_errors_are_reported(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0);
  assert_null(ad_checkpoint(NULL, NULL, x));
  assert_error(AD_EINVAL, "ad_checkpoint: the function is NULL");
  assert_null(ad_checkpoint(block, NULL, NULL));
  assert_error(AD_EINVAL, "ad_checkpoint");
  assert_null(ad_checkpoint(returns_null, NULL, x));
  assert_error(AD_EINVAL, "returned NULL");
  assert_null(ad_checkpoint(fails_with_shape_error, NULL, x));
  assert_error(AD_ESHAPE, "ad_matmul");
}

/* ---- gradient clipping ------------------------------------------------- */

/* Identity forward; the VJP scales the cotangent to norm at most 0.5,
 * like TensorFlow's clip_gradients example. */
static ad_status identity_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = in[0];
  return AD_OK;
}

static ad_status clip_norm_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                               ad_tensor **gin, void *user) {
  (void)c;
  (void)user;
  ad_tensor *norm = ad_sqrt(ad_sum_all(ad_square(gout[0])));
  ad_tensor *scale = ad_div(ad_scalar(0.5), ad_maximum(norm, ad_scalar(0.5)));
  gin[0] = ad_mul(gout[0], scale);
  return gin[0] ? AD_OK : ad_error();
}

/* Clipping is not linear in the cotangent, so forward mode cannot derive
 * its JVP from the VJP: it gets its own rule, the identity. */
static ad_status identity_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                              ad_tensor **tout, void *user) {
  (void)c;
  (void)user;
  tout[0] = tin[0];
  return AD_OK;
}

static const ad_custom_op clip_op = {"clip_gradient", 1, 1,
                                     identity_forward, clip_norm_vjp,
                                     identity_jvp};

static ad_tensor *clipped_dot(ad_tensor *x, void *w) {
  return ad_sum_all(ad_mul(apply1(&clip_op, NULL, x), w));
}

static void gradient_clipping_clips_the_cotangent(void **state) {
  (void)state;
  ad_tensor *x = vec(2, VALUES(1.0, 2.0)), *value = NULL;
  /* Cotangent (3, 4) has norm 5: scaled to (0.3, 0.4). */
  ad_tensor *g =
      ad_value_and_grad(clipped_dot, vec(2, VALUES(3.0, 4.0)), x, &value);
  assert_tensor_near(value, VALUES(11.0), 1, TOL);
  assert_tensor_near(g, VALUES(0.3, 0.4), 2, TOL);
  /* A small cotangent passes unchanged. */
  g = ad_grad(clipped_dot, vec(2, VALUES(0.03, -0.04)), x);
  assert_tensor_near(g, VALUES(0.03, -0.04), 2, TOL);
  /* The forward pass is the identity, as a new tensor. */
  ad_tensor *y = apply1(&clip_op, NULL, x);
  assert_ptr_not_equal(y, x);
  assert_tensors_close(y, x, 0);
  /* Forward mode passes tangents through unclipped. */
  ad_tensor *t = ad_jvp(apply_op, (void *)&clip_op, x,
                        vec(2, VALUES(30.0, 40.0)), NULL);
  assert_tensor_near(t, VALUES(30.0, 40.0), 2, 0);
}

/* ---- an implicit function: x(theta) solves (A0 + diag theta) x = b ------ */

typedef struct linear_system {
  ad_tensor *a0, *b, *w;
} linear_system;

static ad_tensor *system_matrix(const linear_system *s, ad_tensor *theta) {
  return ad_add(s->a0, ad_mul(ad_eye(ad_numel(theta)), theta));
}

static ad_status implicit_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c;
  out[0] = ad_solve(system_matrix(user, in[0]), ((linear_system *)user)->b);
  return out[0] ? AD_OK : ad_error();
}

/* dL/dA = -lambda x^T with A^T lambda = dL/dx; A's diagonal is theta, so
 * dL/dtheta = -lambda * x.  Written from the op's input and output, so it
 * is differentiable again. */
static ad_status implicit_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                              ad_tensor **gin, void *user) {
  ad_tensor *a = system_matrix(user, ad_custom_input(c, 0));
  ad_tensor *lambda = ad_solve(ad_transpose(a), gout[0]);
  gin[0] = ad_neg(ad_mul(lambda, ad_custom_output(c, 0)));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op implicit_op = {"implicit_solve", 1, 1,
                                         implicit_forward, implicit_vjp,
                                         NULL};

static ad_tensor *implicit_loss(ad_tensor *theta, void *sys) {
  const linear_system *s = sys;
  return ad_sum_all(ad_mul(s->w, apply1(&implicit_op, sys, theta)));
}

/* The same loss differentiated through ad_solve's own rules. */
static ad_tensor *direct_loss(ad_tensor *theta, void *sys) {
  const linear_system *s = sys;
  return ad_sum_all(ad_mul(s->w, ad_solve(system_matrix(s, theta), s->b)));
}

static linear_system test_system(void) {
  return (linear_system){
      mat(3, 3, VALUES(4, 1, 0, 1, 3, 1, 0.5, 1, 5)),
      vec(3, VALUES(1, 2, 3)), vec(3, VALUES(1, -2, 0.5))};
}

static void implicit_function_gradient_matches_finite_differences(
    void **state) {
  (void)state;
  linear_system sys = test_system();
  const double theta[3] = {0.5, -0.2, 1.0};
  ad_tensor *g = ad_grad(implicit_loss, &sys, vec(3, theta));
  double fd[3];
  for (int i = 0; i < 3; i++) {
    const double h = 1e-5;
    double tp[3], tm[3];
    memcpy(tp, theta, sizeof tp);
    memcpy(tm, theta, sizeof tm);
    tp[i] += h;
    tm[i] -= h;
    fd[i] = (ad_item(implicit_loss(vec(3, tp), &sys)) -
             ad_item(implicit_loss(vec(3, tm), &sys))) /
            (2 * h);
  }
  assert_tensor_near(g, fd, 3, 1e-8);
}

static void implicit_function_second_order_matches_solve(void **state) {
  (void)state;
  linear_system sys = test_system();
  ad_tensor *theta = vec(3, VALUES(0.5, -0.2, 1.0));
  assert_tensors_close(ad_grad(implicit_loss, &sys, theta),
                       ad_grad(direct_loss, &sys, theta), 1e-13);
  assert_tensors_close(ad_hessian(implicit_loss, &sys, theta),
                       ad_hessian(direct_loss, &sys, theta), 1e-12);
  ad_tensor *v = vec(3, VALUES(1.0, 0.5, -1.0));
  assert_tensors_close(ad_jvp(implicit_loss, &sys, theta, v, NULL),
                       ad_jvp(direct_loss, &sys, theta, v, NULL), 1e-13);
}

/* ---- anomaly detection ------------------------------------------------- */

static int anomaly_teardown(void **state) {
  ad_set_anomaly_detection(false);
  return test_scope_teardown(state);
}

#define anomaly_test(f) \
  cmocka_unit_test_setup_teardown(f, test_scope_setup, anomaly_teardown)

static void anomaly_mode_is_off_by_default_and_returns_previous(
    void **state) {
  (void)state;
  assert_false(ad_anomaly_detection());
  /* Off: log(0) is -inf, silently. */
  ad_tensor *y = ad_log(ad_zeros(1, SHAPE(2)));
  assert_non_null(y);
  assert_true(isinf(ad_item(ad_slice(y, 0, 0, 1, 1))));
  assert_false(ad_set_anomaly_detection(true));
  assert_true(ad_anomaly_detection());
  assert_true(ad_set_anomaly_detection(true));
  assert_true(ad_set_anomaly_detection(false));
  assert_false(ad_anomaly_detection());
}

static void anomaly_names_the_first_op_and_its_input_shapes(void **state) {
  (void)state;
  ad_set_anomaly_detection(true);
  ad_tensor *x = ad_full(2, SHAPE(2, 3), 800.0);
  /* exp overflows first; log of it would be inf too but never runs. */
  assert_null(ad_log(ad_exp(x)));
  assert_error(AD_ECHECK,
               "ad_exp: anomaly: output (2, 3) has inf at element 0 "
               "although the inputs, of shapes (2, 3), are finite");
  assert_null(ad_log(ad_zeros(1, SHAPE(4))));
  assert_error(AD_ECHECK, "ad_log: anomaly");
  /* Custom ops: the failing op inside forward is named. */
  ad_tensor *y = ad_scalar(0.0);
  assert_null(apply1(&sin_vjp_only, NULL, ad_div(ad_scalar(1.0), y)));
  assert_error(AD_ECHECK, "ad_div: anomaly");
}

static ad_tensor *sum_sqrt(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_sqrt(x));
}

static void anomaly_names_the_rule_in_backward(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(4.0, 0.0, 1.0));
  /* sqrt(0) = 0 is fine; its derivative 1 / (2 sqrt 0) is not. */
  ad_tensor *g = ad_grad(sum_sqrt, NULL, x);
  assert_non_null(g);
  assert_true(isinf(ad_item(ad_slice(g, 0, 1, 2, 1))));
  ad_set_anomaly_detection(true);
  assert_null(ad_grad(sum_sqrt, NULL, x));
  assert_error(AD_ECHECK, "in the backward pass of ad_sqrt");
}

/* A VJP that returns an infinite gradient without computing it. */
static ad_status inf_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                         ad_tensor **gin, void *user) {
  (void)c;
  (void)gout;
  (void)user;
  gin[0] = ad_full(1, SHAPE(2), INFINITY);
  return gin[0] ? AD_OK : ad_error();
}

/* A VJP whose own division makes Inf. */
static ad_status div_zero_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                              ad_tensor **gin, void *user) {
  (void)c;
  (void)user;
  gin[0] = ad_div(gout[0], ad_zeros(1, SHAPE(2)));
  return gin[0] ? AD_OK : ad_error();
}

static void anomaly_names_a_custom_rule(void **state) {
  (void)state;
  const ad_custom_op inf_op = {"inf_rule", 1, 1, sin_forward, inf_vjp, NULL};
  const ad_custom_op div_op = {"div_rule", 1, 1, sin_forward, div_zero_vjp,
                               NULL};
  ad_tensor *x = vec(2, VALUES(1.0, 2.0));
  ad_set_anomaly_detection(true);
  assert_null(ad_grad(nested_sum, &(nest){apply_op, (void *)&inf_op, ""}, x));
  assert_error(AD_ECHECK, "inf_rule: anomaly: backward: gradient of input 0");
  /* An op inside the rule is named, and the rule as its context. */
  assert_null(ad_grad(nested_sum, &(nest){apply_op, (void *)&div_op, ""}, x));
  assert_non_null(strstr(ad_error_message(), "in the backward pass of "
                                             "div_rule"));
  assert_error(AD_ECHECK, "ad_div: anomaly");
}

static void anomaly_catches_tangents_in_forward_mode(void **state) {
  (void)state;
  ad_set_anomaly_detection(true);
  /* sqrt(0) is fine; its tangent 1 / (2 sqrt 0) is not. */
  ad_tensor *x = vec(3, VALUES(1.0, 0.0, 4.0));
  assert_null(ad_jvp(sum_sqrt, NULL, x, ones_like(x), NULL));
  assert_error(AD_ECHECK, "anomaly: output (3,) has inf at element 1");
}

static void anomaly_lets_nan_inputs_propagate(void **state) {
  (void)state;
  ad_set_anomaly_detection(true);
  ad_tensor *x = vec(2, VALUES(NAN, 1.0));
  ad_tensor *y = ad_exp(ad_mul_scalar(x, 2.0));
  assert_non_null(y);
  assert_true(isnan(ad_item(ad_slice(y, 0, 0, 1, 1))));
  ad_tensor *g = ad_grad(sum_sqrt, NULL, x);
  assert_non_null(g);
  assert_true(isnan(ad_item(ad_slice(g, 0, 0, 1, 1))));
  assert_int_equal(ad_error(), AD_OK);
}

static void anomaly_catches_naive_log1pexp(void **state) {
  (void)state;
  ad_set_anomaly_detection(true);
  assert_null(ad_grad(log1pexp_naive, NULL, ad_scalar(1000.0)));
  assert_error(AD_ECHECK, "ad_exp: anomaly: output () has inf");
  /* The custom op is clean at the same point. */
  assert_true(ad_item(ad_grad(log1pexp, NULL, ad_scalar(1000.0))) == 1.0);
}

/* ---- Graphviz export --------------------------------------------------- */

/* The DOT text of a tape, in a static buffer. */
static const char *dot_text(const ad_tape *tape) {
  static char buf[16384];
  FILE *f = tmpfile();
  assert_non_null(f);
  assert_int_equal(ad_tape_write_dot(tape, f), AD_OK);
  rewind(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static int count_of(const char *text, const char *what) {
  int n = 0;
  for (const char *p = strstr(text, what); p; p = strstr(p + 1, what)) n++;
  return n;
}

static void tape_dot_shows_ops_shapes_and_watched_inputs(void **state) {
  (void)state;
  ad_tensor *x = vec(3, points);
  ad_var *w = ad_var_new("weights", ad_ones(1, SHAPE(3)));
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(tape, x);
  ad_tensor *h = log1pexp(ad_mul(ad_var_value(w), x), NULL);
  ad_tensor *y = ad_add(ad_sum_all(ad_sin(h)), ad_scalar(1.0));
  ad_tape_end(tape);
  assert_non_null(y);
  const char *dot = dot_text(tape);
  assert_true(strncmp(dot, "digraph tape {", 14) == 0);
  assert_non_null(strstr(dot, "}\n"));
  assert_int_equal(count_of(dot, "shape=box"), ad_tape_size(tape));
  assert_non_null(strstr(dot, "label=\"ad_mul\\n(3,)\""));
  assert_non_null(strstr(dot, "label=\"log1pexp\\n(3,)\""));
  assert_non_null(strstr(dot, "label=\"ad_sin\\n(3,)\""));
  assert_non_null(strstr(dot, "label=\"ad_sum\\n()\""));
  assert_non_null(strstr(dot, "label=\"weights\\n(3,)\""));
  assert_non_null(strstr(dot, "label=\"watched (3,)\""));
  assert_non_null(strstr(dot, "label=\"const ()\""));
  assert_int_equal(count_of(dot, "shape=ellipse"), 2);
  assert_true(count_of(dot, " -> ") >= 6);
  ad_tape_free(tape);
  ad_var_free(w);
}

static void tape_dot_null_arguments_are_einval(void **state) {
  (void)state;
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_write_dot(NULL, stdout), AD_EINVAL);
  assert_error(AD_EINVAL, "tape is NULL");
  assert_int_equal(ad_tape_write_dot(tape, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "f is NULL");
  /* An empty tape is an empty graph. */
  const char *dot = dot_text(tape);
  assert_int_equal(count_of(dot, "shape=box"), 0);
  ad_tape_free(tape);
}

static void tape_dot_of_a_spent_tape_is_estate(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_mul(x, x);
  ad_tape_end(tape);
  assert_non_null(ad_tape_gradient(tape, y, x));
  FILE *f = tmpfile();
  assert_non_null(f);
  assert_int_equal(ad_tape_write_dot(tape, f), AD_ESTATE);
  assert_error(AD_ESTATE, "AD_TAPE_PERSISTENT");
  fclose(f);
  ad_tape_free(tape);
}

static void tape_dot_write_failure_is_eio(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  assert_non_null(ad_mul(x, x));
  ad_tape_end(tape);
  FILE *f = fopen("/dev/null", "r"); /* a stream that refuses writes */
  assert_non_null(f);
  assert_int_equal(ad_tape_write_dot(tape, f), AD_EIO);
  assert_error(AD_EIO, "ad_tape_write_dot");
  fclose(f);
  ad_tape_free(tape);
}

static void tape_dot_escapes_quotes_in_names(void **state) {
  (void)state;
  /* Op and variable names are user strings: quotes and backslashes must
   * be escaped or the graph does not parse. */
  const ad_custom_op op = {"say \"hi\"", 1, 1, sin_forward, sin_vjp, NULL};
  ad_var *v = ad_var_new("C:\\w", ad_ones(1, SHAPE(2)));
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  assert_non_null(apply1(&op, NULL, ad_var_value(v)));
  ad_tape_end(tape);
  const char *dot = dot_text(tape);
  ad_tape_free(tape);
  ad_var_free(v);
  assert_non_null(strstr(dot, "label=\"say \\\"hi\\\"\\n(2,)\""));
  assert_non_null(strstr(dot, "label=\"C:\\\\w\\n(2,)\""));
}

static void checkpoint_shows_as_one_box(void **state) {
  (void)state;
  chain c = {5, 0};
  ad_tensor *x = vec(3, points);
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(tape, x);
  assert_non_null(ad_checkpoint(chain_plain, &c, x));
  ad_tape_end(tape);
  const char *dot = dot_text(tape);
  assert_int_equal(count_of(dot, "shape=box"), 1);
  assert_non_null(strstr(dot, "label=\"ad_checkpoint\\n(3,)\""));
  ad_tape_free(tape);
}

/* ---- out of memory ----------------------------------------------------- */

/* Custom ops with derived rules in both directions, checkpointing, and a
 * multi-output op with an unconnected output, on a persistent tape: the
 * Hessian (9), a JVP (3) and two gradients (1 + 1) into out[14]. */
static ad_status oom_program(double out[14]) {
  ad_scope_begin();
  ad_tensor *x = vec(3, points);
  chain c = {2, 0};
  ad_tensor *h = ad_hessian(log1pexp_times_x, NULL, x);
  ad_tensor *jv = ad_jvp(chain_checkpointed, &c, x, ones_like(x), NULL);
  ad_tensor *xs[2] = {ad_scalar(0.7), ad_scalar(-1.2)}, *outs[2] = {0};
  ad_tensor *grads[2] = {0};
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_status st = tape ? AD_OK : ad_error();
  for (int i = 0; i < 2 && st == AD_OK; i++) st = ad_tape_watch(tape, xs[i]);
  if (st == AD_OK) st = ad_custom_apply(&sinmul_ops[1], NULL, xs, outs);
  if (tape) ad_tape_end(tape);
  if (st == AD_OK)
    st = ad_tape_gradients(tape, outs[1], NULL, 2, xs, grads, 0);
  ad_tape_free(tape);
  if (st == AD_OK) {
    ad_tensor *parts[4] = {ad_reshape(h, 1, SHAPE(9)), jv,
                           ad_reshape(grads[0], 1, SHAPE(1)),
                           ad_reshape(grads[1], 1, SHAPE(1))};
    ad_tensor *all = ad_concat(4, parts, 0);
    if (!all || ad_read(all, out, 14) != AD_OK)
      st = ad_error() ? ad_error() : AD_EINTERNAL;
  }
  ad_scope_end();
  return st;
}

static void out_of_memory_ends_in_enomem_never_a_crash(void **state) {
  (void)state;
  double expect[14];
  assert_int_equal(oom_program(expect), AD_OK);
  int failures = 0, streak = 0, limit = test_quick() ? 400 : 20000;
  for (int k = 1; k <= limit && streak < 50; k++) {
    double got[14];
    ad__fail_alloc_after(k);
    ad_status st = oom_program(got);
    ad__fail_alloc_after(0);
    if (st == AD_OK) {
      for (int i = 0; i < 14; i++)
        if (fabs(got[i] - expect[i]) > 1e-12) {
          ad_error_clear(); /* the failure below is the report */
          fail_msg("run %d succeeded with a wrong value: element %d is "
                   "%.17g, expected %.17g",
                   k, i, got[i], expect[i]);
        }
      streak++;
    } else {
      assert_int_equal(st, AD_ENOMEM);
      failures++;
      streak = 0;
    }
    ad_error_clear();
  }
  assert_true(failures > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(log1pexp_naive_gradient_is_nan_at_1000),
      scoped_test(log1pexp_custom_gradient_is_exactly_one_at_1000),
      scoped_test(log1pexp_both_give_one_half_at_zero),
      scoped_test(vjp_only_op_works_under_forward_mode),
      scoped_test(jvp_only_op_works_under_reverse_mode),
      scoped_test(each_mode_uses_its_own_rule_when_both_are_given),
      scoped_test(vjp_only_op_to_third_order_in_all_nestings),
      scoped_test(jvp_only_op_to_third_order_in_all_nestings),
      scoped_test(op_with_both_rules_to_third_order_in_all_nestings),
      scoped_test(several_inputs_and_outputs_first_order),
      scoped_test(several_inputs_and_outputs_hessian_in_all_nestings),
      scoped_test(unconnected_output_gets_zero_cotangent),
      scoped_test(null_gin_and_tout_mean_zero),
      scoped_test(saved_tensors_reach_the_rules),
      scoped_test(save_outside_forward_is_estate),
      scoped_test(saved_index_out_of_range_is_einval),
      scoped_test(input_and_output_accessors),
      scoped_test(failing_forward_fails_the_call_with_its_status),
      scoped_test(failing_vjp_fails_the_gradient),
      scoped_test(failing_jvp_fails_the_jvp),
      scoped_test(status_without_message_gets_one_naming_the_op),
      scoped_test(callback_failures_are_not_confused_with_an_earlier_error),
      scoped_test(forward_leaving_an_output_null_is_einval),
      scoped_test(bad_op_descriptions_are_einval),
      scoped_test(op_without_rules_runs_but_is_eunimpl_when_differentiated),
      scoped_test(rule_of_the_wrong_shape_is_an_error_naming_the_op),
      scoped_test(derived_rules_ignore_an_earlier_unrelated_error),
      scoped_test(forward_may_use_ad_grad_internally),
      scoped_test(custom_op_is_one_node_and_its_description_is_copied),
      scoped_test(custom_op_inside_ad_hessian),
      scoped_test(zero_input_op_makes_a_constant),
      scoped_test(checkpoint_gradient_equals_plain),
      scoped_test(checkpoint_every_order_and_nesting_equals_plain),
      scoped_test(checkpointed_chain_is_one_node_on_the_tape),
      scoped_test(checkpoint_recomputes_once_in_backward),
      scoped_test(checkpoint_errors_are_reported),
      scoped_test(gradient_clipping_clips_the_cotangent),
      scoped_test(implicit_function_gradient_matches_finite_differences),
      scoped_test(implicit_function_second_order_matches_solve),
      anomaly_test(anomaly_mode_is_off_by_default_and_returns_previous),
      anomaly_test(anomaly_names_the_first_op_and_its_input_shapes),
      anomaly_test(anomaly_names_the_rule_in_backward),
      anomaly_test(anomaly_names_a_custom_rule),
      anomaly_test(anomaly_catches_tangents_in_forward_mode),
      anomaly_test(anomaly_lets_nan_inputs_propagate),
      anomaly_test(anomaly_catches_naive_log1pexp),
      scoped_test(tape_dot_shows_ops_shapes_and_watched_inputs),
      scoped_test(tape_dot_null_arguments_are_einval),
      scoped_test(tape_dot_of_a_spent_tape_is_estate),
      scoped_test(tape_dot_write_failure_is_eio),
      scoped_test(checkpoint_shows_as_one_box),
      scoped_test(tape_dot_escapes_quotes_in_names),
      scoped_test(out_of_memory_ends_in_enomem_never_a_crash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
