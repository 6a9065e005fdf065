/* Tests of tracing: replay against eager execution bit for bit over the op
 * table, guards and re-tracing, derived programs, composition with tapes,
 * levels, custom ops and the checker, errors, listings and threads. */
#include <pthread.h>
#include <stdlib.h>

#include <gsl/gsl_multimin.h>

#include "testutil.h"
#include "ad/gsl.h"
#include "ad/trace.h"

/* The op table (every row must be replayable) and the fault injector. */
#include "engine.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/* Fail unless a and b have the same shape and the same bits. */
static void assert_same_impl(const ad_tensor *a, const ad_tensor *b,
                             const char *file, int line) {
  if (!a || !b) {
    print_error("%s:%d: tensor is NULL (%s)\n", file, line,
                ad_error_message());
    _fail(file, line);
  }
  if (ad_ndim(a) != ad_ndim(b)) {
    print_error("%s:%d: ranks %d and %d\n", file, line, ad_ndim(a),
                ad_ndim(b));
    _fail(file, line);
  }
  for (int i = 0; i < ad_ndim(a); i++)
    if (ad_shape(a)[i] != ad_shape(b)[i]) {
      print_error("%s:%d: axis %d: %lld and %lld\n", file, line, i,
                  (long long)ad_shape(a)[i], (long long)ad_shape(b)[i]);
      _fail(file, line);
    }
  int64_t n = ad_numel(a);
  double *x = malloc((size_t)(n + 1) * sizeof *x);
  double *y = malloc((size_t)(n + 1) * sizeof *y);
  assert_non_null(x);
  assert_non_null(y);
  assert_int_equal(ad_read(a, x, n), AD_OK);
  assert_int_equal(ad_read(b, y, n), AD_OK);
  for (int64_t i = 0; i < n; i++)
    if (memcmp(&x[i], &y[i], sizeof *x) != 0) {
      print_error("%s:%d: element %lld: %.17g and %.17g differ in bits\n",
                  file, line, (long long)i, x[i], y[i]);
      free(x);
      free(y);
      _fail(file, line);
    }
  free(x);
  free(y);
}
#define assert_same(a, b) assert_same_impl((a), (b), __FILE__, __LINE__)

static ad_function_stats stats_of(ad_function *fn) {
  ad_function_stats s;
  assert_int_equal(ad_function_get_stats(fn, &s), AD_OK);
  return s;
}

/* A small deterministic generator. */
static uint64_t rng_state = 88172645463325252ull;
static double uniform(double lo, double hi) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0;
}

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

/* ------------------------------------------------------------------------
 * Every row of the op table, replayed on new inputs
 * ---------------------------------------------------------------------- */

enum { D_ANY, D_POS, D_UNIT, D_INT3, D_INT2, D_WELL, D_SPD };

#define MAXIN 4
typedef struct opcase {
  int op;
  int nin;
  int ndim[MAXIN];
  int64_t shape[MAXIN][4];
  int dom[MAXIN];
  ad__attr attr;
  int64_t idx[4];
  bool has_attr;
} opcase;

#define SH(...) {__VA_ARGS__}
#define C1(o, d, nd, s, ...) \
  {.op = AD__OP_##o, .nin = 1, .ndim = {nd}, .shape = {s}, .dom = {d}, \
   .attr = {__VA_ARGS__}, .has_attr = true}
#define C2(o, da, db, nda, sa, ndb, sb, ...) \
  {.op = AD__OP_##o, .nin = 2, .ndim = {nda, ndb}, .shape = {sa, sb}, \
   .dom = {da, db}, .attr = {__VA_ARGS__}, .has_attr = true}
#define U(o, d) C1(o, d, 2, SH(2, 3), .s0 = 0), C1(o, d, 0, SH(0), .s0 = 0)
#define B(o, da, db) C2(o, da, db, 2, SH(2, 3), 1, SH(3), .s0 = 0), \
                     C2(o, da, db, 1, SH(1), 0, SH(0), .s0 = 0)

static const opcase OPS[] = {
    B(add, D_ANY, D_ANY), B(sub, D_ANY, D_ANY), B(mul, D_ANY, D_ANY),
    B(div, D_ANY, D_POS), B(pow, D_POS, D_ANY), B(maximum, D_ANY, D_ANY),
    B(minimum, D_ANY, D_ANY), B(atan2, D_ANY, D_ANY), B(mod, D_ANY, D_POS),
    C1(add_scalar, D_ANY, 2, SH(2, 3), .s0 = 0.5),
    C1(add_scalar, D_ANY, 0, SH(0), .s0 = 0.5),
    C1(mul_scalar, D_ANY, 2, SH(2, 3), .s0 = -1.5),
    C1(mul_scalar, D_ANY, 1, SH(1), .s0 = -1.5),
    C1(pow_scalar, D_POS, 2, SH(2, 3), .s0 = 3.0),
    C1(pow_scalar, D_POS, 0, SH(0), .s0 = 2.5),
    C1(pow_scalar, D_ANY, 0, SH(0), .s0 = 2.0),
    C2(scaled_mul, D_ANY, D_ANY, 2, SH(2, 3), 2, SH(2, 3), .s0 = 0.7),
    C2(scaled_mul, D_ANY, D_ANY, 0, SH(0), 1, SH(1), .s0 = 0.7),
    B(tanh_grad, D_ANY, D_UNIT), B(sigmoid_grad, D_ANY, D_UNIT),
    U(neg, D_ANY), U(exp, D_ANY), U(log, D_POS), U(log1p, D_POS),
    U(expm1, D_ANY), U(sqrt, D_POS), U(square, D_ANY), U(abs, D_ANY),
    U(sin, D_ANY), U(cos, D_ANY), U(tan, D_UNIT), U(asin, D_UNIT),
    U(acos, D_UNIT), U(atan, D_ANY), U(sinh, D_ANY), U(cosh, D_ANY),
    U(tanh, D_ANY), U(sigmoid, D_ANY), U(softplus, D_ANY), U(relu, D_ANY),
    U(erf, D_ANY), U(sign, D_ANY), U(floor, D_ANY),
    C1(clip, D_ANY, 2, SH(2, 3), .s0 = -0.5, .s1 = 0.5),
    C1(clip, D_ANY, 0, SH(0), .s0 = -0.5, .s1 = 0.5),
    B(less, D_INT3, D_INT3), B(greater, D_INT3, D_INT3),
    B(equal, D_INT3, D_INT3),
    {.op = AD__OP_where, .nin = 3, .ndim = {2, 2, 1},
     .shape = {SH(2, 3), SH(2, 3), SH(3)}, .dom = {D_INT2, D_ANY, D_ANY}},
    {.op = AD__OP_where, .nin = 3, .ndim = {0, 1, 0},
     .shape = {SH(0), SH(1), SH(0)}, .dom = {D_INT2, D_ANY, D_ANY}},
    C1(sum, D_ANY, 2, SH(2, 3), .naxes = 1, .axes = {1}),
    C1(sum, D_ANY, 2, SH(2, 3), .naxes = 0),
    C1(sum, D_ANY, 1, SH(1), .naxes = 0),
    C1(mean, D_ANY, 2, SH(2, 3), .naxes = 1, .axes = {0}, .keepdims = true),
    C1(mean, D_ANY, 0, SH(0), .naxes = 0),
    C1(prod, D_ANY, 2, SH(2, 3), .naxes = 0),
    C1(prod, D_ANY, 1, SH(1), .naxes = 0),
    C1(max, D_ANY, 2, SH(2, 3), .naxes = 1, .axes = {-1}),
    C1(max, D_ANY, 1, SH(1), .naxes = 0),
    C1(min, D_ANY, 2, SH(2, 3), .naxes = 0),
    C1(min, D_ANY, 0, SH(0), .naxes = 0),
    C1(logsumexp, D_ANY, 2, SH(2, 3), .naxes = 1, .axes = {1}),
    C1(logsumexp, D_ANY, 1, SH(1), .naxes = 0),
    C1(argmax, D_ANY, 2, SH(2, 3), .axis = 1),
    C1(softmax, D_ANY, 2, SH(2, 3), .axis = -1),
    C1(log_softmax, D_ANY, 2, SH(2, 3), .axis = 0),
    C1(reshape, D_ANY, 2, SH(2, 3), .ndim = 2, .shape = {3, 2}),
    C1(reshape, D_ANY, 1, SH(1), .ndim = 2, .shape = {1, 1}),
    C1(transpose, D_ANY, 2, SH(2, 3), .s0 = 0),
    C1(permute, D_ANY, 3, SH(2, 3, 2), .perm = {2, 0, 1}),
    C1(expand_dims, D_ANY, 2, SH(2, 3), .axis = 1),
    C1(expand_dims, D_ANY, 0, SH(0), .axis = 0),
    C1(squeeze, D_ANY, 3, SH(2, 1, 3), .axis = 1),
    C1(broadcast_to, D_ANY, 1, SH(3), .ndim = 2, .shape = {2, 3}),
    C1(broadcast_to, D_ANY, 0, SH(0), .ndim = 1, .shape = {1}),
    C1(slice, D_ANY, 1, SH(7), .axis = 0, .start = 1, .stop = 6, .step = 2),
    C1(slice, D_ANY, 2, SH(2, 5), .axis = 1, .start = -2, .stop = -1,
       .step = 1),
    C1(slice, D_ANY, 2, SH(3, 4), .axis = 0, .start = 2, .stop = 3,
       .step = 1),
    C2(concat, D_ANY, D_ANY, 2, SH(2, 3), 2, SH(1, 3), .axis = 0),
    C2(stack, D_ANY, D_ANY, 1, SH(3), 1, SH(3), .axis = 1),
    C2(stack, D_ANY, D_ANY, 0, SH(0), 0, SH(0), .axis = 0),
    C1(gather, D_ANY, 2, SH(4, 3), .axis = 0, .n = 3),
    C1(gather, D_ANY, 1, SH(5), .axis = 0, .n = 1),
    C1(slice_grad, D_ANY, 2, SH(2, 3), .ndim = 2, .shape = {2, 7},
       .axis = 1, .start = 1, .step = 2),
    C1(slice_grad, D_ANY, 1, SH(1), .ndim = 1, .shape = {6}, .axis = 0,
       .start = 4, .step = 1),
    C1(scatter_add, D_ANY, 2, SH(3, 2), .ndim = 2, .shape = {4, 2},
       .axis = 0, .n = 3),
    C1(identity, D_ANY, 2, SH(2, 3), .s0 = 0),
    C1(identity, D_ANY, 0, SH(0), .s0 = 0),
    C2(matmul, D_ANY, D_ANY, 2, SH(2, 3), 2, SH(3, 4), .s0 = 0),
    C2(matmul, D_ANY, D_ANY, 2, SH(1, 1), 2, SH(1, 1), .s0 = 0),
    C2(solve, D_WELL, D_ANY, 2, SH(3, 3), 2, SH(3, 2), .s0 = 0),
    C1(inv, D_WELL, 2, SH(3, 3), .s0 = 0),
    C1(cholesky, D_SPD, 2, SH(3, 3), .s0 = 0),
    C1(det, D_WELL, 2, SH(3, 3), .s0 = 0),
    C1(logdet, D_WELL, 2, SH(3, 3), .s0 = 0),
    C2(conv2d, D_ANY, D_ANY, 4, SH(1, 4, 4, 2), 4, SH(3, 3, 2, 2),
       .k = {1, 1, 0, 0}),
    C2(conv2d_input_grad, D_ANY, D_ANY, 4, SH(1, 2, 2, 2), 4,
       SH(3, 3, 2, 2), .k = {1, 1, 0, 0}, .ndim = 4, .shape = {1, 4, 4, 2}),
    C2(conv2d_filter_grad, D_ANY, D_ANY, 4, SH(1, 4, 4, 2), 4,
       SH(1, 2, 2, 2), .k = {1, 1, 0, 0}, .ndim = 4, .shape = {3, 3, 2, 2}),
    C1(max_pool2d, D_ANY, 4, SH(1, 4, 4, 2), .k = {2, 2, 2, 2}),
    C2(max_pool2d_scatter, D_ANY, D_ANY, 4, SH(1, 4, 4, 2), 4,
       SH(1, 2, 2, 2), .k = {2, 2, 2, 2}),
    C2(max_pool2d_select, D_ANY, D_ANY, 4, SH(1, 4, 4, 2), 4,
       SH(1, 4, 4, 2), .k = {2, 2, 2, 2}),
};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static const int64_t gather_idx[] = {2, 0, -1};
static const int64_t gather_one[] = {3};
static const int64_t scatter_idx[] = {1, 3, 1};

/* The case's attributes, with the index arrays filled in. */
static ad__attr attr_of(const opcase *c) {
  ad__attr a = c->attr;
  if (c->op == AD__OP_gather) a.idx = a.n == 1 ? gather_one : gather_idx;
  if (c->op == AD__OP_scatter_add) a.idx = scatter_idx;
  return a;
}

static ad_tensor *apply_case(int n, ad_tensor *const *xs, void *ctx) {
  const opcase *c = ctx;
  ad__attr a = attr_of(c);
  return ad__dispatch((ad__op_id)c->op, n, xs, &a);
}

/* sum(op(xs)): a scalar for the gradient programs. */
static ad_tensor *sum_case(int n, ad_tensor *const *xs, void *ctx) {
  return ad_sum_all(apply_case(n, xs, ctx));
}

static ad_tensor *random_input(const opcase *c, int i) {
  int nd = c->ndim[i];
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= c->shape[i][d];
  double v[64];
  for (int64_t k = 0; k < n; k++) {
    switch (c->dom[i]) {
    case D_POS: v[k] = uniform(0.5, 2.0); break;
    case D_UNIT: v[k] = uniform(-0.9, 0.9); break;
    case D_INT3: v[k] = floor(uniform(0, 3)); break;
    case D_INT2: v[k] = floor(uniform(0, 2)); break;
    default: v[k] = uniform(-2.0, 2.0); break;
    }
  }
  if (c->dom[i] == D_WELL || c->dom[i] == D_SPD) {
    /* M M^T + 3 I for a 3x3 input. */
    double m[9];
    for (int k = 0; k < 9; k++) m[k] = uniform(-1, 1);
    for (int r = 0; r < 3; r++)
      for (int s = 0; s < 3; s++) {
        double acc = r == s ? 3.0 : 0.0;
        for (int k = 0; k < 3; k++) acc += m[3 * r + k] * m[3 * s + k];
        v[3 * r + s] = acc;
      }
  }
  return ad_tensor_new(nd, c->shape[i], v);
}

static bool differentiable(int op) {
  static const bool has_vjp[AD__OP_COUNT] = {
#define VJP_(name, arity, flags, cin, v, j) [AD__OP_##name] = v,
      AD__OP_TABLE(VJP_)
#undef VJP_
  };
  return has_vjp[op];
}

static void every_op_table_row_has_a_replay_case(void **state) {
  (void)state;
  bool covered[AD__OP_COUNT] = {0};
  for (int i = 0; i < NOPS; i++) covered[OPS[i].op] = true;
  for (int op = 0; op < AD__OP_COUNT; op++) {
    if (!covered[op]) print_error("no replay case for %s\n", ad__ops[op].name);
    assert_true(covered[op]);
  }
}

static void every_op_replays_bit_for_bit(void **state) {
  (void)state;
  for (int i = 0; i < NOPS; i++) {
    const opcase *c = &OPS[i];
    ad_scope_begin();
    ad_tensor *ex[MAXIN], *x[MAXIN];
    for (int k = 0; k < c->nin; k++) ex[k] = random_input(c, k);
    ad_function *fn = ad_trace_n(apply_case, (void *)c, c->nin, ex);
    if (!fn) print_error("%s: %s\n", ad__ops[c->op].name, ad_error_message());
    assert_non_null(fn);
    for (int rep = 0; rep < 3; rep++) {
      for (int k = 0; k < c->nin; k++) x[k] = random_input(c, k);
      ad_tensor *replayed = ad_function_call_n(fn, c->nin, x);
      ad_tensor *eager = apply_case(c->nin, x, (void *)c);
      if (!replayed) print_error("%s: %s\n", ad__ops[c->op].name,
                                 ad_error_message());
      assert_same(replayed, eager);
    }
    ad_function_stats s = stats_of(fn);
    assert_int_equal(s.traces, 1);
    assert_int_equal(s.replays, 3);
    ad_function_free(fn);
    ad_scope_end();
  }
}

static void every_differentiable_op_has_bitwise_gradient_programs(
    void **state) {
  (void)state;
  for (int i = 0; i < NOPS; i++) {
    const opcase *c = &OPS[i];
    if (!differentiable(c->op) || c->op == AD__OP_where) continue;
    ad_scope_begin();
    ad_tensor *ex[MAXIN], *x[MAXIN], *g[MAXIN], *ge[MAXIN];
    for (int k = 0; k < c->nin; k++) ex[k] = random_input(c, k);
    ad_function *fn = ad_trace_n(sum_case, (void *)c, c->nin, ex);
    assert_non_null(fn);
    for (int k = 0; k < c->nin; k++) x[k] = random_input(c, k);
    ad_tensor *v = NULL, *ve = NULL;
    ad_status st = ad_function_value_and_grad_n(fn, c->nin, x, g, &v);
    if (st != AD_OK)
      print_error("%s: %s\n", ad__ops[c->op].name, ad_error_message());
    assert_int_equal(st, AD_OK);
    assert_int_equal(ad_grad_n(sum_case, (void *)c, c->nin, x, ge, &ve),
                     AD_OK);
    assert_same(v, ve);
    for (int k = 0; k < c->nin; k++) assert_same(g[k], ge[k]);
    ad_function_free(fn);
    ad_scope_end();
  }
}

/* ------------------------------------------------------------------------
 * Programs mixing one-element and larger values
 * ---------------------------------------------------------------------- */

/* Rosenbrock with one-element slices in a C loop. */
static ad_tensor *rosen_scalar(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *s = ad_scalar(0.0);
  for (int64_t i = 0; i + 1 < n; i++) {
    ad_tensor *a = ad_slice(x, 0, i, i + 1, 1);
    ad_tensor *b = ad_slice(x, 0, i + 1, i + 2, 1);
    ad_tensor *t = ad_sub(b, ad_square(a));
    ad_tensor *u = ad_add_scalar(ad_neg(a), 1.0);
    s = ad_add(s, ad_add(ad_mul_scalar(ad_square(t), 100.0), ad_square(u)));
  }
  return s;
}

/* A mixture: matrices, reductions, views, scalars pulled out and used. */
static ad_tensor *mixed(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *m = ad_reshape(x, 2, SHAPE(2, 3));
  ad_tensor *w = ad_matmul(m, ad_transpose(m));
  ad_tensor *c = ad_slice(ad_reshape(w, 1, SHAPE(4)), 0, 1, 2, 1);
  ad_tensor *e = ad_mul(ad_exp(c), ad_tanh(ad_sum_all(x)));
  ad_tensor *r = ad_softmax(ad_add(m, e), -1);
  return ad_add(ad_sum_all(ad_mul(r, m)), ad_mul_scalar(ad_logdet(
      ad_add(w, ad_eye(2))), 0.5));
}

static void mixed_programs_replay_bit_for_bit(void **state) {
  (void)state;
  ad_tensor *x = ad_linspace(-1.2, 1.0, 7);
  ad_function *fr = ad_trace(rosen_scalar, NULL, x);
  ad_function *fm = ad_trace(mixed, NULL, ad_linspace(-1, 1, 6));
  assert_non_null(fr);
  assert_non_null(fm);
  for (int rep = 0; rep < 4; rep++) {
    double v[7];
    for (int i = 0; i < 7; i++) v[i] = uniform(-2, 2);
    ad_tensor *y = vec(7, v), *z = vec(6, v);
    assert_same(ad_function_call(fr, y), rosen_scalar(y, NULL));
    assert_same(ad_function_call(fm, z), mixed(z, NULL));
    /* Strided inputs read the same elements. */
    ad_tensor *strided = ad_slice(vec(7, v), 0, 6, -8, -1);
    assert_same(ad_function_call(fr, strided), rosen_scalar(strided, NULL));
  }
  assert_int_equal(stats_of(fr).traces, 1);
  ad_function_free(fr);
  ad_function_free(fm);
}

/* Recurrences over one-element values in C loops: what the compiler turns
 * into column-by-column loops, and one it must leave alone. */
static ad_tensor *recurrences(ad_tensor *x, void *ctx) {
  int kind = *(int *)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *e[64];
  for (int64_t i = 0; i < n; i++) e[i] = ad_slice(x, 0, i, i + 1, 1);
  ad_tensor *shared = ad_exp(ad_sum_all(x));
  ad_tensor *a = e[0], *b = e[1], *s = ad_scalar(0.0), *p = ad_scalar(1.0);
  ad_tensor *hist[64] = {0};
  for (int64_t i = 2; i < n; i++) {
    switch (kind) {
    case 0: /* Fibonacci-like: a recurrence over two iterations */
      hist[i] = ad_add(ad_mul_scalar(a, 0.5), ad_mul(b, e[i]));
      a = b;
      b = hist[i];
      break;
    case 1: /* running sum and product, a value shared by every iteration */
      s = ad_add(s, ad_mul(ad_sin(e[i]), shared));
      p = ad_mul(p, ad_add_scalar(ad_square(e[i]), 0.5));
      break;
    case 2: /* a = f(b), then b = g(a): one column after fusion, reading
               its own previous result */
      a = ad_mul_scalar(b, 0.9);
      b = ad_add(a, e[i]);
      break;
    case 3: /* one compound term a step, several codes */
      s = ad_add(s, ad_add(ad_add(ad_exp(ad_mul(e[i], e[i - 1])),
                                  ad_where(ad_greater(e[i], e[i - 2]), e[i],
                                           e[i - 2])),
                           ad_clip(ad_mul_scalar(e[i], 3.0), -1.0, 1.0)));
      break;
    default: /* the sum updated three times a step: a recurrence across
                columns */
      s = ad_add(s, ad_exp(ad_mul(e[i], e[i - 1])));
      s = ad_add(s, ad_where(ad_greater(e[i], e[i - 2]), e[i], e[i - 2]));
      s = ad_add(s, ad_clip(ad_mul_scalar(e[i], 3.0), -1.0, 1.0));
      break;
    }
  }
  if (kind == 0) return ad_add(b, ad_mul(hist[n / 2], a));
  if (kind == 1) return ad_add(s, ad_mul(p, shared));
  if (kind == 2) return ad_add(a, b);
  return s;
}

static void rerolled_loops_replay_bit_for_bit(void **state) {
  (void)state;
  for (int kind = 0; kind < 5; kind++) {
    double v[40];
    for (int i = 0; i < 40; i++) v[i] = uniform(-1, 1);
    ad_function *fn = ad_trace(recurrences, &kind, vec(40, v));
    assert_non_null(fn);
    for (int rep = 0; rep < 3; rep++) {
      for (int i = 0; i < 40; i++) v[i] = uniform(-1, 1);
      ad_tensor *x = vec(40, v);
      assert_same(ad_function_call(fn, x), recurrences(x, &kind));
      ad_tensor *val = NULL, *vale = NULL;
      assert_same(ad_function_value_and_grad(fn, x, &val),
                  ad_value_and_grad(recurrences, &kind, x, &vale));
      assert_same(val, vale);
    }
    /* Where columns can run in order (1 to 3) loops took the
     * instructions; 0 and 4 read a later column of an earlier iteration
     * and stay as they are. */
    ad_function_stats st = stats_of(fn);
    bool rerolled = st.instructions * 4 < st.ops;
    bool expect = kind >= 1 && kind <= 3;
    if (expect != rerolled)
      print_error("kind %d: %lld instructions for %lld ops\n", kind,
                  (long long)st.instructions, (long long)st.ops);
    assert_true(expect == rerolled);
    ad_function_free(fn);
  }
}

/* -0 and +0 through the in-place accumulation of one-hot gradients: the
 * eager chain of adds turns -0 into +0 except where the last add wrote. */
static ad_tensor *signed_zeros(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *s = NULL;
  for (int i = 0; i < 4; i++) {
    ad_tensor *e = ad_slice(x, 0, i, i + 1, 1);
    ad_tensor *t = ad_mul(e, ad_scalar(i % 2 ? -0.0 : 1.0));
    s = s ? ad_add(s, t) : t;
  }
  ad_tensor *last = ad_slice(x, 0, 3, 4, 1);
  return ad_add(s, ad_mul(last, ad_scalar(-0.0)));
}

static void one_hot_accumulation_keeps_the_eager_signs_of_zero(void **state) {
  (void)state;
  ad_tensor *x = vec(4, VALUES(1, 2, 3, 4));
  ad_function *fn = ad_trace(signed_zeros, NULL, x);
  assert_non_null(fn);
  ad_tensor *v = NULL, *ve = NULL;
  ad_tensor *x2 = vec(4, VALUES(-1, 0.5, -3, 2));
  ad_tensor *g = ad_function_value_and_grad(fn, x2, &v);
  ad_tensor *ge = ad_value_and_grad(signed_zeros, NULL, x2, &ve);
  assert_same(g, ge);
  assert_same(v, ve);
  ad_function_free(fn);
}

/* ------------------------------------------------------------------------
 * Guards and re-tracing
 * ---------------------------------------------------------------------- */

/* Collatz steps until 1, branching on traced comparisons. */
static ad_tensor *collatz(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *steps = ad_scalar(0.0);
  while (ad_cond(ad_greater(x, ad_scalar(1.0)))) {
    if (ad_cond(ad_equal(ad_mod(x, ad_scalar(2.0)), ad_scalar(0.0))))
      x = ad_mul_scalar(x, 0.5);
    else
      x = ad_add_scalar(ad_mul_scalar(x, 3.0), 1.0);
    steps = ad_add_scalar(steps, 1.0);
  }
  return ad_add(steps, ad_mul_scalar(x, 0.0));
}

/* The same loop reading x's value with ad_item (exact guards). */
static ad_tensor *collatz_item(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *steps = ad_scalar(0.0);
  while (ad_item(x) != 1.0) {
    if (fmod(ad_item(x), 2.0) == 0)
      x = ad_mul_scalar(x, 0.5);
    else
      x = ad_add_scalar(ad_mul_scalar(x, 3.0), 1.0);
    steps = ad_add_scalar(steps, 1.0);
  }
  return ad_add(steps, ad_mul_scalar(x, 0.0));
}

static const double collatz_steps[] = {0, 0, 1, 7, 2, 5, 8, 16, 3, 19, 6, 14,
                                       9, 9, 17, 17, 4, 12, 20, 20, 7};

static void collatz_from_several_starts(void **state) {
  (void)state;
  ad_fn fs[2] = {collatz, collatz_item};
  for (int k = 0; k < 2; k++) {
    ad_function *fn = ad_trace(fs[k], NULL, ad_scalar(6.0));
    assert_non_null(fn);
    assert_int_equal(ad_function_set_max_paths(fn, 32), AD_OK);
    for (int s = 1; s <= 20; s++) {
      ad_tensor *y = ad_function_call(fn, ad_scalar(s));
      assert_non_null(y);
      assert_true(ad_item(y) == collatz_steps[s]);
      assert_same(y, fs[k](ad_scalar(s), NULL));
    }
    ad_function_stats st = stats_of(fn);
    /* Every start but 6 took a path of its own. */
    assert_int_equal(st.traces, 20);
    assert_int_equal(st.paths, 20);
    assert_true(st.guard_misses > 0);
    /* Known starts replay without tracing. */
    for (int s = 20; s >= 1; s--)
      assert_true(ad_item(ad_function_call(fn, ad_scalar(s))) ==
                  collatz_steps[s]);
    assert_int_equal(stats_of(fn).traces, 20);
    ad_function_free(fn);
  }
}

static void collatz_cache_keeps_the_most_recent_paths(void **state) {
  (void)state;
  ad_function *fn = ad_trace(collatz, NULL, ad_scalar(3.0));
  assert_non_null(fn);
  assert_int_equal(ad_function_set_max_paths(fn, 2), AD_OK);
  for (int s = 1; s <= 10; s++)
    assert_true(ad_item(ad_function_call(fn, ad_scalar(s))) ==
                collatz_steps[s]);
  assert_int_equal(stats_of(fn).paths, 2);
  /* 10 and 9 are cached; 1 was evicted and is traced again. */
  int64_t traces = stats_of(fn).traces;
  ad_function_call(fn, ad_scalar(10));
  ad_function_call(fn, ad_scalar(9));
  assert_int_equal(stats_of(fn).traces, traces);
  ad_function_call(fn, ad_scalar(1));
  assert_int_equal(stats_of(fn).traces, traces + 1);
  ad_function_free(fn);
}

/* A branch on a comparison: inputs taking the same branch share a path. */
static ad_tensor *branchy(ad_tensor *x, void *ctx) {
  int *runs = ctx;
  (*runs)++;
  if (ad_cond(ad_greater(ad_sum_all(x), ad_scalar(0.0))))
    return ad_sum_all(ad_exp(x));
  return ad_sum_all(ad_mul(x, x));
}

static void branch_on_a_comparison_retraces_once_per_branch(void **state) {
  (void)state;
  int runs = 0;
  ad_function *fn = ad_trace(branchy, &runs, vec(2, VALUES(1, 2)));
  assert_non_null(fn);
  assert_int_equal(runs, 1);
  for (int rep = 0; rep < 6; rep++) {
    double sign = rep % 2 ? -1 : 1;
    ad_tensor *x = vec(2, VALUES(sign * (rep + 1), sign * 0.5));
    int before = runs;
    ad_tensor *y = ad_function_call(fn, x);
    int after = runs;
    assert_same(y, branchy(x, &runs));
    /* The first negative input traces the second branch; nothing else. */
    assert_int_equal(after - before, rep == 1 ? 1 : 0);
  }
  ad_function_stats st = stats_of(fn);
  assert_int_equal(st.traces, 2);
  assert_int_equal(st.paths, 2);
  assert_int_equal(st.guards, 1);
  /* The gradient program carries the guard along. */
  ad_tensor *gp = ad_function_grad(fn, vec(2, VALUES(1, 1)));
  ad_tensor *gn = ad_function_grad(fn, vec(2, VALUES(-1, -1)));
  assert_same(gp, ad_grad(branchy, &runs, vec(2, VALUES(1, 1))));
  assert_same(gn, ad_grad(branchy, &runs, vec(2, VALUES(-1, -1))));
  ad_function_free(fn);
}

/* ad_read of a traced tensor: the values chosen become exact guards. */
static ad_tensor *reads_values(ad_tensor *x, void *ctx) {
  (void)ctx;
  double v[3];
  if (ad_read(x, v, 3) != AD_OK) return NULL;
  int64_t best = v[1] > v[0] ? 1 : 0;
  if (v[2] > v[best]) best = 2;
  return ad_mul_scalar(ad_slice(x, 0, best, best + 1, 1), (double)best);
}

static void read_values_are_guarded_exactly(void **state) {
  (void)state;
  ad_function *fn = ad_trace(reads_values, NULL, vec(3, VALUES(1, 5, 2)));
  assert_non_null(fn);
  ad_tensor *a = vec(3, VALUES(1, 5, 2)), *b = vec(3, VALUES(9, 1, 2));
  assert_same(ad_function_call(fn, a), reads_values(a, NULL));
  assert_int_equal(stats_of(fn).traces, 1);
  assert_same(ad_function_call(fn, b), reads_values(b, NULL));
  assert_int_equal(stats_of(fn).traces, 2);
  ad_function_free(fn);
}

static void shape_changes_retrace(void **state) {
  (void)state;
  ad_function *fn = ad_trace(rosen_scalar, NULL, ad_linspace(0, 1, 3));
  assert_non_null(fn);
  for (int n = 2; n <= 6; n++) {
    ad_tensor *x = ad_linspace(-1, 1, n);
    assert_same(ad_function_call(fn, x), rosen_scalar(x, NULL));
  }
  ad_tensor *x3 = ad_linspace(-2, 2, 3);
  assert_same(ad_function_call(fn, x3), rosen_scalar(x3, NULL));
  ad_function_stats st = stats_of(fn);
  assert_int_equal(st.traces, 5);
  assert_int_equal(st.signatures, 5);
  /* A matrix of the same size is another signature. */
  ad_tensor *m = ad_reshape(ad_linspace(0, 1, 4), 2, SHAPE(2, 2));
  assert_non_null(ad_function_call(fn, ad_reshape(m, 1, SHAPE(4))));
  ad_function_free(fn);
}

/* ------------------------------------------------------------------------
 * Derived programs against eager derivatives
 * ---------------------------------------------------------------------- */

static ad_tensor *smooth(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *a = ad_mul(ad_sin(x), ad_exp(ad_mul_scalar(x, 0.3)));
  return ad_add(ad_sum_all(ad_mul(a, a)), ad_logsumexp(x, 0, NULL, false));
}

static void first_order_programs_equal_eager_derivatives(void **state) {
  (void)state;
  ad_tensor *x0 = ad_linspace(-1, 1, 5), *x = vec(5, VALUES(0.3, -0.2, 1.1,
                                                          0.7, -1.4));
  ad_tensor *v = vec(5, VALUES(1, -2, 0.5, 0.25, 3));
  ad_function *fn = ad_trace(smooth, NULL, x0);
  assert_non_null(fn);
  ad_tensor *val = NULL, *vale = NULL;
  assert_same(ad_function_value_and_grad(fn, x, &val),
              ad_value_and_grad(smooth, NULL, x, &vale));
  assert_same(val, vale);
  assert_same(ad_function_grad(fn, x), ad_grad(smooth, NULL, x));
  assert_same(ad_function_jvp(fn, x, v, &val),
              ad_jvp(smooth, NULL, x, v, &vale));
  assert_same(val, vale);
  ad_tensor *u = ad_scalar(-1.5);
  assert_same(ad_function_vjp(fn, x, u, NULL), ad_vjp(smooth, NULL, x, u,
                                                       NULL));
  /* Derived programs replay: a second call traces nothing. */
  ad_function *vg = ad_function_value_and_grad_fn(fn);
  assert_non_null(vg);
  assert_int_equal(stats_of(vg).traces, 1);
  ad_function_grad(fn, v);
  assert_int_equal(stats_of(vg).traces, 1);
  assert_int_equal(stats_of(vg).replays, 2);
  ad_function_free(fn);
}

static void second_order_programs_equal_eager_derivatives(void **state) {
  (void)state;
  ad_tensor *x = vec(4, VALUES(0.3, -0.2, 1.1, 0.7));
  ad_tensor *v = vec(4, VALUES(1, -2, 0.5, 0.25));
  ad_tensor *w = vec(4, VALUES(0.5, 1, -1, 2));
  ad_function *fn = ad_trace(smooth, NULL, ad_linspace(0, 1, 4));
  assert_non_null(fn);
  /* Reverse over reverse: the gradient of the gradient's projection. */
  assert_same(ad_function_hvp(fn, x, v), ad_hvp(smooth, NULL, x, v));
  /* Deriving again: the JVP of the JVP program gives second directional
   * derivatives; the VJP of the VJP program mixed second derivatives. */
  ad_function *j = ad_function_jvp_fn(fn);
  ad_function *jj = ad_function_jvp_fn(j);
  assert_non_null(jj);
  assert_int_equal(ad_function_num_inputs(jj), 4);
  assert_int_equal(ad_function_num_outputs(jj), 4);
  ad_tensor *in[4] = {x, v, w, ad_zeros(1, SHAPE(4))}, *out[4];
  assert_int_equal(ad_function_apply(jj, 4, in, 4, out), AD_OK);
  /* out[3] = d/de d/dt f(x + t v + e w) = w^T H v */
  ad_tensor *hv = ad_hvp(smooth, NULL, x, v);
  assert_tensors_close(out[3], ad_sum_all(ad_mul(w, hv)), 1e-12);
  ad_function *r = ad_function_vjp_fn(fn);
  ad_function *rr = ad_function_vjp_fn(r);
  assert_non_null(rr);
  assert_int_equal(ad_function_num_inputs(rr), 4);
  ad_tensor *in2[4] = {x, ad_scalar(1.0), ad_zeros(0, NULL), v}, *out2[4];
  assert_int_equal(ad_function_apply(rr, 4, in2, 4, out2), AD_OK);
  /* The cotangent v on the gradient output gives H v back for x. */
  assert_tensors_close(out2[2], hv, 1e-12);
  ad_function_free(fn);
}

/* ------------------------------------------------------------------------
 * Composition with tapes, forward levels, custom ops and the checker
 * ---------------------------------------------------------------------- */

static ad_tensor *poly(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *s = ad_sin(x);
  return ad_sum_all(ad_add(ad_mul(ad_mul(x, x), s), ad_exp(ad_neg(x))));
}

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
  return ad_jvp(nested, &inner, x, ad_ones(ad_ndim(x), ad_shape(x)), NULL);
}

static void traced_call_composes_with_tapes_and_levels_to_second_order(
    void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(0.4, -0.7, 1.3));
  ad_function *fn = ad_trace(poly, NULL, ad_linspace(0, 1, 3));
  assert_non_null(fn);
  static const char *const modes[] = {"r", "f", "rr", "rf", "fr", "ff"};
  for (int k = 0; k < 6; k++) {
    nest traced = {ad_function_fn, fn, modes[k]};
    nest eager = {poly, NULL, modes[k]};
    ad_tensor *a = nested(x, &traced), *b = nested(x, &eager);
    if (!a) print_error("%s: %s\n", modes[k], ad_error_message());
    assert_tensors_close(a, b, 1e-13);
  }
  /* Hessians by both routes. */
  assert_tensors_close(ad_hessian(ad_function_fn, fn, x),
                       ad_hessian(poly, NULL, x), 1e-13);
  /* A tape sees one node for the call. */
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_function_call(fn, x);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_size(tape), 1);
  assert_same(y, poly(x, NULL));
  assert_tensors_close(ad_tape_gradient(tape, y, x), ad_grad(poly, NULL, x),
                       1e-14);
  ad_tape_free(tape);
  ad_function_free(fn);
}

static void checker_accepts_traced_functions_to_second_order(void **state) {
  (void)state;
  ad_function *fn = ad_trace(poly, NULL, ad_linspace(0, 1, 3));
  assert_non_null(fn);
  ad_check_report rep;
  ad_status st = ad_check_grads(ad_function_fn, fn,
                                vec(3, VALUES(0.4, -0.7, 1.3)), 2,
                                AD_CHECK_FWD | AD_CHECK_REV, 1e-6, 1e-5,
                                &rep);
  if (st != AD_OK) print_error("%s\n", rep.message);
  assert_int_equal(st, AD_OK);
  ad_function_free(fn);
}

/* A custom op (log(1 + e^x), stable, with its own VJP) inside a traced
 * function, and a traced function inside a custom op. */
static ad_status softplus_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_add(ad_relu(in[0]), ad_log1p(ad_exp(ad_neg(ad_abs(in[0])))));
  return out[0] ? AD_OK : ad_error();
}
static ad_status softplus_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                              ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_sigmoid(ad_custom_input(c, 0)));
  return gin[0] ? AD_OK : ad_error();
}
static const ad_custom_op softplus_op = {"stable_softplus", 1, 1,
                                         softplus_forward, softplus_vjp,
                                         NULL};

static ad_tensor *uses_custom(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *y = NULL;
  ad_tensor *in = ad_mul_scalar(x, 2.0);
  if (ad_custom_apply(&softplus_op, NULL, &in, &y) != AD_OK) return NULL;
  return ad_sum_all(ad_mul(y, x));
}

static ad_status traced_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                ad_tensor **out, void *user) {
  (void)c;
  out[0] = ad_function_call(user, in[0]);
  return out[0] ? AD_OK : ad_error();
}
static ad_status traced_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                            ad_tensor **gin, void *user) {
  gin[0] = ad_function_vjp(user, ad_custom_input(c, 0), gout[0], NULL);
  return gin[0] ? AD_OK : ad_error();
}
static const ad_custom_op traced_op = {"traced", 1, 1, traced_forward,
                                       traced_vjp, NULL};
static ad_tensor *wraps_traced(ad_tensor *x, void *fn) {
  ad_tensor *y = NULL;
  if (ad_custom_apply(&traced_op, fn, &x, &y) != AD_OK) return NULL;
  return y;
}

static void custom_ops_compose_both_ways(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(0.5, -1.5, 800.0));
  ad_function *fn = ad_trace(uses_custom, NULL, vec(3, VALUES(1, 2, 3)));
  assert_non_null(fn);
  assert_same(ad_function_call(fn, x), uses_custom(x, NULL));
  /* The gradient program runs the custom op's own rule (finite at 800). */
  ad_tensor *g = ad_function_grad(fn, x);
  assert_same(g, ad_grad(uses_custom, NULL, x));
  double gv[3];
  ad_read(g, gv, 3);
  assert_true(isfinite(gv[2]));
  ad_check_report rep;
  ad_tensor *small = vec(3, VALUES(0.5, -1.5, 0.8));
  assert_int_equal(ad_check_grads(ad_function_fn, fn, small, 2,
                                  AD_CHECK_FWD | AD_CHECK_REV, 1e-6, 1e-5,
                                  &rep),
                   AD_OK);
  /* A traced function inside a custom op. */
  ad_function *inner = ad_trace(poly, NULL, small);
  assert_non_null(inner);
  assert_same(wraps_traced(small, inner), poly(small, NULL));
  assert_tensors_close(ad_grad(wraps_traced, inner, small),
                       ad_grad(poly, NULL, small), 1e-14);
  assert_int_equal(ad_check_grads(wraps_traced, inner, small, 2,
                                  AD_CHECK_FWD | AD_CHECK_REV, 1e-6, 1e-5,
                                  &rep),
                   AD_OK);
  ad_function_free(inner);
  ad_function_free(fn);
}

/* A traced function called while another is traced is inlined. */
static ad_tensor *calls_traced(ad_tensor *x, void *fn) {
  return ad_add(ad_function_call(fn, ad_mul_scalar(x, 2.0)), ad_sum_all(x));
}

static void traced_calls_inside_traces_are_inlined(void **state) {
  (void)state;
  ad_tensor *x = vec(3, VALUES(0.1, 0.2, 0.3));
  ad_function *inner = ad_trace(smooth, NULL, x);
  ad_function *outer = ad_trace(calls_traced, inner, x);
  assert_non_null(outer);
  ad_tensor *y = vec(3, VALUES(-0.4, 0.9, 1.5));
  assert_same(ad_function_call(outer, y), calls_traced(y, inner));
  assert_same(ad_function_grad(outer, y), ad_grad(calls_traced, inner, y));
  /* The outer path holds the inner ops, not a call. */
  assert_true(stats_of(outer).ops > 3);
  ad_function_free(outer);
  ad_function_free(inner);
}

/* ------------------------------------------------------------------------
 * Captured state
 * ---------------------------------------------------------------------- */

static ad_tensor *scaled_by_variable(ad_tensor *x, void *v) {
  return ad_sum_all(ad_mul(x, ad_var_value(v)));
}

static void assigning_a_captured_variable_retraces(void **state) {
  (void)state;
  ad_var *v = ad_var_new("w", vec(2, VALUES(1, 2)));
  ad_tensor *x = vec(2, VALUES(3, 4));
  ad_function *fn = ad_trace(scaled_by_variable, v, x);
  assert_non_null(fn);
  assert_true(ad_item(ad_function_call(fn, x)) == 11);
  assert_int_equal(ad_var_assign(v, vec(2, VALUES(10, 0))), AD_OK);
  assert_true(ad_item(ad_function_call(fn, x)) == 30);
  ad_function_stats st = stats_of(fn);
  assert_int_equal(st.traces, 2);
  assert_int_equal(st.stale, 1);
  ad_function_free(fn);
  ad_var_free(v);
}

static ad_tensor *scaled_by_c(ad_tensor *x, void *c) {
  return ad_mul_scalar(x, *(double *)c);
}

static void reset_forgets_baked_in_c_values(void **state) {
  (void)state;
  double c = 2;
  ad_function *fn = ad_trace(scaled_by_c, &c, ad_scalar(1));
  c = 3;
  assert_true(ad_item(ad_function_call(fn, ad_scalar(1))) == 2);
  assert_int_equal(ad_function_reset(fn), AD_OK);
  assert_true(ad_item(ad_function_call(fn, ad_scalar(1))) == 3);
  ad_function_free(fn);
}

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

static ad_tensor *fails(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_matmul(x, x); /* (3,) x (3,) is fine; (2, 3) is not */
}
static ad_tensor *returns_null(ad_tensor *x, void *ctx) {
  (void)x;
  (void)ctx;
  return NULL;
}
static ad_tensor *leaves_tape_open(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tape_begin(0);
  return ad_sum_all(x);
}
static ad_tensor *not_scalar(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_exp(x);
}
static ad_tensor *chol(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_cholesky(x));
}

static void errors_are_reported_not_crashed(void **state) {
  (void)state;
  ad_tensor *x = ad_linspace(0, 1, 3);
  assert_null(ad_trace(NULL, NULL, x));
  assert_error(AD_EINVAL, "ad_trace: the function is NULL");
  assert_null(ad_trace(poly, NULL, NULL));
  assert_error(AD_EINVAL, "ad_trace");
  assert_null(ad_trace_n((ad_fn_n)NULL, NULL, 1, &x));
  assert_error(AD_EINVAL, "NULL");
  assert_null(ad_trace_n((ad_fn_n)sum_case, NULL, 0, &x));
  assert_error(AD_EINVAL, "at least one input");
  assert_null(ad_function_call(NULL, x));
  assert_error(AD_EINVAL, "ad_function_call: the function is NULL");
  /* f failing while traced keeps its own error. */
  assert_null(ad_trace(fails, NULL, ad_zeros(2, SHAPE(2, 3))));
  assert_error(AD_ESHAPE, "ad_matmul");
  assert_null(ad_trace(returns_null, NULL, x));
  assert_error(AD_EINVAL, "returned NULL");
  assert_null(ad_trace(leaves_tape_open, NULL, x));
  assert_error(AD_ESTATE, "left a tape");
  /* Close the tape f left open. */
  ad_tape_free(ad__contexts.items[ad__contexts.n - 1].obj);
  ad_function *fn = ad_trace(fails, NULL, x);
  assert_non_null(fn);
  /* A new shape on which f fails. */
  assert_null(ad_function_call(fn, ad_zeros(2, SHAPE(2, 3))));
  assert_error(AD_ESHAPE, "ad_matmul");
  /* Wrong counts, NULL inputs. */
  assert_null(ad_function_call_n(fn, 2, (ad_tensor *[]){x, x}));
  assert_error(AD_EINVAL, "takes 1 input");
  assert_null(ad_function_call(fn, NULL));
  assert_error(AD_EINVAL, "input 0");
  ad_tensor *out[2];
  assert_int_equal(ad_function_apply(fn, 1, &x, 2, out), AD_EINVAL);
  assert_null(out[0]);
  ad_error_clear();
  assert_int_equal(ad_function_set_max_paths(fn, 0), AD_EINVAL);
  ad_error_clear();
  assert_int_equal(ad_function_print(fn, NULL), AD_EINVAL);
  ad_error_clear();
  /* Derived functions belong to their function. */
  ad_function *vg = ad_function_value_and_grad_fn(fn);
  assert_non_null(vg);
  ad_function_free(vg);
  assert_error(AD_EINVAL, "belongs to its function");
  /* A freed function, and its derived ones, are refused. */
  ad_function_free(fn);
  assert_null(ad_function_call(fn, x));
  assert_error(AD_EINVAL, "freed");
  assert_null(ad_function_grad(vg, x));
  assert_error(AD_EINVAL, "freed");
  assert_int_equal(ad_function_num_inputs(fn), -1);
  ad_error_clear();
  ad_function_free(fn);
  assert_error(AD_EINVAL, "freed");
  /* Gradients of a non-scalar function, directions of the wrong shape. */
  ad_function *ns = ad_trace(not_scalar, NULL, x);
  assert_null(ad_function_grad(ns, x));
  assert_error(AD_ESHAPE, "not a scalar");
  assert_null(ad_function_jvp(ns, x, ad_zeros(1, SHAPE(2)), NULL));
  assert_error(AD_ESHAPE, "tangent");
  assert_null(ad_function_vjp(ns, x, ad_zeros(1, SHAPE(2)), NULL));
  assert_error(AD_ESHAPE, "u has shape");
  ad_function_free(ns);
  /* A kernel failing on replay (not positive definite). */
  ad_function *c = ad_trace(chol, NULL, ad_eye(2));
  assert_non_null(c);
  assert_null(ad_function_call(c, ad_mul_scalar(ad_eye(2), -1.0)));
  assert_error(AD_EINVAL, "ad_cholesky");
  ad_function_free(c);
  /* ad_cond */
  assert_false(ad_cond(NULL));
  assert_error(AD_EINVAL, "ad_cond");
  assert_false(ad_cond(x));
  assert_error(AD_ESHAPE, "ad_cond");
  assert_false(ad_tracing());
}

static void out_of_memory_anywhere_is_an_error_without_leaks(void **state) {
  (void)state;
  ad_tensor *x = ad_linspace(-1, 1, 4);
  int failures = 0;
  for (long k = 1; k < (test_quick() ? 60 : 400); k++) {
    ad_scope_begin();
    ad__fail_alloc_after(k);
    ad_function *fn = ad_trace(rosen_scalar, NULL, x);
    ad_tensor *g = fn ? ad_function_grad(fn, ad_linspace(0, 2, 4)) : NULL;
    ad__fail_alloc_after(0);
    if (!fn || !g) {
      failures++;
      assert_int_not_equal(ad_error(), AD_OK);
      ad_error_clear();
    } else {
      assert_same(g, ad_grad(rosen_scalar, NULL, ad_linspace(0, 2, 4)));
    }
    ad_function_free(fn);
    ad_error_clear();
    ad_scope_end();
  }
  assert_true(failures > 0);
}

/* ------------------------------------------------------------------------
 * Listings and graphs
 * ---------------------------------------------------------------------- */

static void listing_and_dot_show_ops_shapes_and_guards(void **state) {
  (void)state;
  int runs = 0;
  ad_function *fn = ad_trace(branchy, &runs, vec(2, VALUES(1, 2)));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_int_equal(ad_function_print(fn, f), AD_OK);
  fclose(f);
  assert_non_null(strstr(buf, "%0 = input 0"));
  assert_non_null(strstr(buf, "ad_exp(%0)"));
  assert_non_null(strstr(buf, "(2,)"));
  assert_non_null(strstr(buf, "guard"));
  assert_non_null(strstr(buf, "is true"));
  assert_non_null(strstr(buf, "return"));
  free(buf);
  f = open_memstream(&buf, &len);
  assert_int_equal(ad_function_write_dot(fn, f), AD_OK);
  fclose(f);
  assert_non_null(strstr(buf, "digraph"));
  assert_non_null(strstr(buf, "ad_exp"));
  assert_non_null(strstr(buf, "diamond"));
  free(buf);
  /* A derived program prints as its own function. */
  ad_function_grad(fn, vec(2, VALUES(1, 2)));
  f = open_memstream(&buf, &len);
  assert_int_equal(ad_function_print(ad_function_value_and_grad_fn(fn), f),
                   AD_OK);
  fclose(f);
  assert_non_null(strstr(buf, "value and gradient of f"));
  free(buf);
  ad_function_free(fn);
}

/* ------------------------------------------------------------------------
 * Threads and GSL
 * ---------------------------------------------------------------------- */

typedef struct worker {
  ad_function *fn;
  int seed;
  bool ok;
} worker;

static void *work(void *p) {
  worker *w = p;
  w->ok = true;
  ad_scope_begin();
  for (int rep = 0; rep < (test_quick() ? 5 : 50) && w->ok; rep++) {
    double v[4];
    for (int i = 0; i < 4; i++) v[i] = (w->seed + rep + i) * 0.1;
    ad_tensor *x = ad_tensor_new(1, SHAPE(4), v);
    ad_tensor *a = ad_function_grad(w->fn, x), *b = ad_grad(poly, NULL, x);
    double ga[4], gb[4];
    w->ok = a && b && ad_read(a, ga, 4) == AD_OK &&
            ad_read(b, gb, 4) == AD_OK && memcmp(ga, gb, sizeof ga) == 0;
  }
  ad_scope_end();
  ad_thread_cleanup();
  return NULL;
}

static void threads_share_a_function(void **state) {
  (void)state;
  ad_function *fn = ad_trace(poly, NULL, ad_linspace(0, 1, 4));
  worker w[3];
  pthread_t t[3];
  for (int i = 0; i < 3; i++) {
    w[i] = (worker){fn, i, false};
    assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
  }
  for (int i = 0; i < 3; i++) {
    pthread_join(t[i], NULL);
    assert_true(w[i].ok);
  }
  ad_function_free(fn);
}

static ad_tensor *rosen2(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *a = ad_slice(x, 0, 0, 1, 1), *b = ad_slice(x, 0, 1, 2, 1);
  return ad_sum_all(
      ad_add(ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))), 100.0),
             ad_square(ad_add_scalar(ad_neg(a), 1.0))));
}

static void gsl_minimizes_a_traced_function(void **state) {
  (void)state;
  ad_function *fn = ad_trace(rosen2, NULL, vec(2, VALUES(-1.2, 1)));
  gsl_multimin_function_fdf fdf;
  assert_int_equal(ad_gsl_multimin_fdf(&fdf, ad_function_fn, fn, 2), AD_OK);
  gsl_vector *x0 = gsl_vector_alloc(2);
  gsl_vector_set(x0, 0, -1.2);
  gsl_vector_set(x0, 1, 1.0);
  gsl_multimin_fdfminimizer *s = gsl_multimin_fdfminimizer_alloc(
      gsl_multimin_fdfminimizer_vector_bfgs2, 2);
  gsl_multimin_fdfminimizer_set(s, &fdf, x0, 0.01, 1e-4);
  int status = GSL_CONTINUE;
  for (int it = 0; it < 200 && status == GSL_CONTINUE; it++) {
    if (gsl_multimin_fdfminimizer_iterate(s)) break;
    status = gsl_multimin_test_gradient(s->gradient, 1e-8);
  }
  assert_int_equal(status, GSL_SUCCESS);
  assert_true(fabs(gsl_vector_get(s->x, 0) - 1) < 1e-6);
  assert_true(fabs(gsl_vector_get(s->x, 1) - 1) < 1e-6);
  /* One trace of f, one of its VJP program; the rest replays. */
  assert_int_equal(stats_of(fn).traces, 1);
  assert_true(stats_of(fn).replays > 10);
  gsl_multimin_fdfminimizer_free(s);
  gsl_vector_free(x0);
  ad_gsl_multimin_fdf_free(&fdf);
  ad_function_free(fn);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(every_op_table_row_has_a_replay_case),
      scoped_test(every_op_replays_bit_for_bit),
      scoped_test(every_differentiable_op_has_bitwise_gradient_programs),
      scoped_test(mixed_programs_replay_bit_for_bit),
      scoped_test(one_hot_accumulation_keeps_the_eager_signs_of_zero),
      scoped_test(rerolled_loops_replay_bit_for_bit),
      scoped_test(collatz_from_several_starts),
      scoped_test(collatz_cache_keeps_the_most_recent_paths),
      scoped_test(branch_on_a_comparison_retraces_once_per_branch),
      scoped_test(read_values_are_guarded_exactly),
      scoped_test(shape_changes_retrace),
      scoped_test(first_order_programs_equal_eager_derivatives),
      scoped_test(second_order_programs_equal_eager_derivatives),
      scoped_test(traced_call_composes_with_tapes_and_levels_to_second_order),
      scoped_test(checker_accepts_traced_functions_to_second_order),
      scoped_test(custom_ops_compose_both_ways),
      scoped_test(traced_calls_inside_traces_are_inlined),
      scoped_test(assigning_a_captured_variable_retraces),
      scoped_test(reset_forgets_baked_in_c_values),
      scoped_test(errors_are_reported_not_crashed),
      scoped_test(out_of_memory_anywhere_is_an_error_without_leaks),
      scoped_test(listing_and_dot_show_ops_shapes_and_guards),
      scoped_test(threads_share_a_function),
      scoped_test(gsl_minimizes_a_traced_function),
  };
  /* AD_TEST_FILTER=pattern runs the matching tests only. */
  if (getenv("AD_TEST_FILTER"))
    cmocka_set_test_filter(getenv("AD_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
