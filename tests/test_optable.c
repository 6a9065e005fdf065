/* The op-table test: every row of AD__OP_TABLE, on several shapes with an
 * input domain per op, checked for values, first-order rules against
 * finite differences, the adjoint identity, and second and third
 * derivatives in every nesting of tapes and forward levels. */
#include "testutil.h"

#include <stdlib.h>

#include <gsl/gsl_deriv.h>
#include <gsl/gsl_errno.h>

#include "engine.h"

/* ------------------------------------------------------------------------
 * Cases: one or more per op row.  A case fixes the op's attributes in an
 * apply function, the input shapes, the input domains and the documented
 * output shape.
 * ---------------------------------------------------------------------- */

/* Five inputs reach the heap paths of tape nodes (more than 3 inputs) and
 * of linear_jvp and propagate_level (more than 4). */
#define MAXIN 5
#define MAXEL 256

typedef struct shp {
  int nd;
  int64_t d[4];
} shp;

/* Shapes and domains are written as parenthesised tuples, which survive
 * being passed through several table macros, and become initialisers
 * through MKSHP and MKDOM at the end. */
#define S0 (0, 0)
#define S1(a) (1, a)
#define S2(a, b) (2, a, b)
#define S3(a, b, c) (3, a, b, c)
#define S4(a, b, c, d) (4, a, b, c, d)
#define MKSHP_(n, ...) {n, {__VA_ARGS__}}
#define MKSHP(t) MKSHP_ t

/* Input domains.  Kinks, branch cuts and ties are kept far (compared with
 * the finite-difference steps) from every sample, since a derivative
 * check across a kink compares two different one-sided derivatives. */
enum {
  D_UNIF,     /* uniform in (a, b) */
  D_SIGNED,   /* magnitude uniform in (a, b), random sign */
  D_GRID,     /* a * (k + f), k integer in [-b, b), f in (0.2, 0.8):
                 at least 0.2 a away from every multiple of a */
  D_DISTINCT, /* distinct values in (a, b), at least (b - a) / 2N apart,
                 shared by all such inputs of the case (no ties) */
  D_MASK,     /* 0 or 1 */
  D_INTS,     /* integers in [a, b] (ties on purpose, for equal) */
  D_SPD,      /* per matrix M M^T + n I, M uniform in (-1, 1) */
  D_WELL,     /* per matrix: entries in (-0.5, 0.5), diagonal +-n added
                 (diagonally dominant, so well conditioned) */
};

typedef struct dom {
  int kind;
  double a, b;
} dom;

#define DU(a, b) (D_UNIF, a, b)
#define DS(a, b) (D_SIGNED, a, b)
#define DG(a, b) (D_GRID, a, b)
#define DD(a, b) (D_DISTINCT, a, b)
#define DM (D_MASK, 0, 1)
#define DI(a, b) (D_INTS, a, b)
#define DSPD (D_SPD, 0, 0)
#define DWELL (D_WELL, 0, 0)
#define MKDOM_(k, a, b) {k, a, b}
#define MKDOM(t) MKDOM_ t

/* The non-tensor arguments a case passes to its op. */
typedef struct prm {
  double s0, s1;
  int axis, naxes, axes[4];
  bool keep;
  int ndim;
  int64_t shape[4];
  int perm[4];
  int64_t start, stop, step;
  int64_t n, idx[4];
  int k[4];
} prm;

typedef struct opcase opcase;
typedef ad_tensor *(*apply_fn)(const opcase *c, ad_tensor *const *x);

struct opcase {
  ad__op_id id;
  apply_fn apply;
  int nin;
  shp in[MAXIN];
  dom dm[MAXIN];
  shp out; /* the documented output shape */
  prm p;
  /* Elementwise references (libm or a closed form), with broadcasting. */
  double (*f1)(double x, const prm *p);
  double (*f2)(double a, double b);
  double (*f3)(double c, double a, double b);
  /* Joint domain of two broadcast inputs: samples are redrawn until every
   * broadcast pair passes. */
  bool (*accept)(double a, double b);
};

/* ---- apply functions --------------------------------------------------- */

#define AP1(name)                                                          \
  static ad_tensor *ap_##name(const opcase *c, ad_tensor *const *x) {      \
    (void)c;                                                               \
    return ad_##name(x[0]);                                                \
  }
#define AP2(name)                                                          \
  static ad_tensor *ap_##name(const opcase *c, ad_tensor *const *x) {      \
    (void)c;                                                               \
    return ad_##name(x[0], x[1]);                                          \
  }
#define AP_RED(name)                                                       \
  static ad_tensor *ap_##name(const opcase *c, ad_tensor *const *x) {      \
    return ad_##name(x[0], c->p.naxes, c->p.axes, c->p.keep);              \
  }
#define AP_AXIS(name)                                                      \
  static ad_tensor *ap_##name(const opcase *c, ad_tensor *const *x) {      \
    return ad_##name(x[0], c->p.axis);                                     \
  }

AP2(add) AP2(sub) AP2(mul) AP2(div) AP2(pow) AP2(maximum) AP2(minimum)
AP2(atan2) AP2(mod) AP2(less) AP2(greater) AP2(equal) AP2(matmul) AP2(solve)
AP1(neg) AP1(exp) AP1(log) AP1(log1p) AP1(expm1) AP1(sqrt) AP1(square)
AP1(abs) AP1(sin) AP1(cos) AP1(tan) AP1(asin) AP1(acos) AP1(atan) AP1(sinh)
AP1(cosh) AP1(tanh) AP1(sigmoid) AP1(softplus) AP1(relu) AP1(erf) AP1(sign)
AP1(floor) AP1(transpose) AP1(inv) AP1(cholesky) AP1(det) AP1(logdet)
AP_RED(sum) AP_RED(mean) AP_RED(prod) AP_RED(max) AP_RED(min)
AP_RED(logsumexp)
AP_AXIS(argmax) AP_AXIS(softmax) AP_AXIS(log_softmax) AP_AXIS(expand_dims)
AP_AXIS(squeeze)

static ad_tensor *ap_add_scalar(const opcase *c, ad_tensor *const *x) {
  return ad_add_scalar(x[0], c->p.s0);
}
static ad_tensor *ap_mul_scalar(const opcase *c, ad_tensor *const *x) {
  return ad_mul_scalar(x[0], c->p.s0);
}
static ad_tensor *ap_pow_scalar(const opcase *c, ad_tensor *const *x) {
  return ad_pow_scalar(x[0], c->p.s0);
}
static ad_tensor *ap_clip(const opcase *c, ad_tensor *const *x) {
  return ad_clip(x[0], c->p.s0, c->p.s1);
}
static ad_tensor *ap_where(const opcase *c, ad_tensor *const *x) {
  (void)c;
  return ad_where(x[0], x[1], x[2]);
}
static ad_tensor *ap_reshape(const opcase *c, ad_tensor *const *x) {
  return ad_reshape(x[0], c->p.ndim, c->p.shape);
}
static ad_tensor *ap_broadcast_to(const opcase *c, ad_tensor *const *x) {
  return ad_broadcast_to(x[0], c->p.ndim, c->p.shape);
}
static ad_tensor *ap_permute(const opcase *c, ad_tensor *const *x) {
  return ad_permute(x[0], c->p.perm);
}
static ad_tensor *ap_slice(const opcase *c, ad_tensor *const *x) {
  return ad_slice(x[0], c->p.axis, c->p.start, c->p.stop, c->p.step);
}
static ad_tensor *ap_concat(const opcase *c, ad_tensor *const *x) {
  return ad_concat(c->nin, x, c->p.axis);
}
static ad_tensor *ap_stack(const opcase *c, ad_tensor *const *x) {
  return ad_stack(c->nin, x, c->p.axis);
}
static ad_tensor *ap_gather(const opcase *c, ad_tensor *const *x) {
  return ad_gather(x[0], c->p.axis, c->p.idx, c->p.n);
}
static ad_tensor *ap_identity(const opcase *c, ad_tensor *const *x) {
  (void)c;
  return ad_stop_gradient(x[0]);
}
static ad_tensor *ap_conv2d(const opcase *c, ad_tensor *const *x) {
  return ad_conv2d(x[0], x[1], c->p.k[0], c->p.k[1], c->p.k[2], c->p.k[3]);
}
static ad_tensor *ap_max_pool2d(const opcase *c, ad_tensor *const *x) {
  return ad_max_pool2d(x[0], c->p.k[0], c->p.k[1], c->p.k[2], c->p.k[3]);
}

/* The internal rows have no public wrapper: they get their attributes as
 * their rules give them and go through the dispatcher like the rules. */
static ad__attr internal_attr(const opcase *c) {
  ad__attr a = {.axis = c->p.axis, .start = c->p.start, .step = c->p.step,
                .ndim = c->p.ndim, .n = c->p.n, .idx = c->p.idx};
  for (int i = 0; i < c->p.ndim; i++) a.shape[i] = c->p.shape[i];
  for (int i = 0; i < 4; i++) a.k[i] = c->p.k[i];
  return a;
}
#define AP_INTERNAL(name)                                                  \
  static ad_tensor *ap_##name(const opcase *c, ad_tensor *const *x) {      \
    ad__attr a = internal_attr(c);                                         \
    return ad__dispatch(AD__OP_##name, c->nin, x, &a);                     \
  }
static ad_tensor *ap_scaled_mul(const opcase *c, ad_tensor *const *x) {
  ad__attr a = {.s0 = c->p.s0};
  return ad__dispatch(AD__OP_scaled_mul, 2, x, &a);
}
static ad_tensor *ap_tanh_grad(const opcase *c, ad_tensor *const *x) {
  (void)c;
  return ad__dispatch(AD__OP_tanh_grad, 2, x, NULL);
}
static ad_tensor *ap_sigmoid_grad(const opcase *c, ad_tensor *const *x) {
  (void)c;
  return ad__dispatch(AD__OP_sigmoid_grad, 2, x, NULL);
}
static double ref_tanh_grad(double g, double y) { return g * (1 - y * y); }
static double ref_sigmoid_grad(double g, double y) { return g * y * (1 - y); }
AP_INTERNAL(slice_grad) AP_INTERNAL(scatter_add)
AP_INTERNAL(conv2d_input_grad) AP_INTERNAL(conv2d_filter_grad)
AP_INTERNAL(max_pool2d_scatter) AP_INTERNAL(max_pool2d_select)

/* ---- references -------------------------------------------------------- */

#define LIBM1(name)                                                        \
  static double ref_##name(double x, const prm *p) {                       \
    (void)p;                                                               \
    return name(x);                                                        \
  }
LIBM1(exp) LIBM1(log) LIBM1(log1p) LIBM1(expm1) LIBM1(sqrt) LIBM1(fabs)
LIBM1(sin) LIBM1(cos) LIBM1(tan) LIBM1(asin) LIBM1(acos) LIBM1(atan)
LIBM1(sinh) LIBM1(cosh) LIBM1(tanh) LIBM1(erf) LIBM1(floor)

static double ref_neg(double x, const prm *p) { (void)p; return -x; }
static double ref_square(double x, const prm *p) { (void)p; return x * x; }
static double ref_sigmoid(double x, const prm *p) {
  (void)p;
  return 1.0 / (1.0 + exp(-x));
}
static double ref_softplus(double x, const prm *p) {
  (void)p;
  return log1p(exp(x));
}
static double ref_relu(double x, const prm *p) {
  (void)p;
  return x > 0 ? x : 0.0;
}
static double ref_sign(double x, const prm *p) {
  (void)p;
  return (x > 0) - (x < 0);
}
static double ref_clip(double x, const prm *p) {
  return fmin(fmax(x, p->s0), p->s1);
}
static double ref_add_scalar(double x, const prm *p) { return x + p->s0; }
static double ref_mul_scalar(double x, const prm *p) { return x * p->s0; }
static double ref_pow_scalar(double x, const prm *p) { return pow(x, p->s0); }

static double ref_add(double a, double b) { return a + b; }
static double ref_sub(double a, double b) { return a - b; }
static double ref_mul(double a, double b) { return a * b; }
static double ref_div(double a, double b) { return a / b; }
static double ref_mod(double a, double b) {
  double r = fmod(a, b);
  return (r != 0 && (r < 0) != (b < 0)) ? r + b : r;
}
static double ref_less(double a, double b) { return a < b; }
static double ref_greater(double a, double b) { return a > b; }
static double ref_equal(double a, double b) { return a == b; }
static double ref_where(double c, double a, double b) { return c != 0 ? a : b; }

/* Joint domains of binary ops. */
static bool apart(double a, double b) { return fabs(a - b) > 0.1; }
static bool ratio_off_integer(double a, double b) {
  double q = a / b, f = q - floor(q);
  return f > 0.1 && f < 0.9;
}

/* ---- the table ---------------------------------------------------------- */

#define UN(name, ref, d, s) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 1, .in = {MKSHP(s)}, \
   .dm = {MKDOM(d)}, .out = MKSHP(s), .f1 = ref}
#define UN3(name, ref, d) \
  UN(name, ref, d, S2(2, 3)), UN(name, ref, d, S0), \
  UN(name, ref, d, S3(3, 1, 2))
#define SC(name, ref, d, s, ...) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 1, .in = {MKSHP(s)}, \
   .dm = {MKDOM(d)}, .out = MKSHP(s), .f1 = ref, .p = {__VA_ARGS__}}

#define BIN(name, ref, da, db, acc, sa, sb, so) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 2, \
   .in = {MKSHP(sa), MKSHP(sb)}, .dm = {MKDOM(da), MKDOM(db)}, \
   .out = MKSHP(so), .f2 = ref, .accept = acc}
/* Same shapes, a row vector, an outer broadcast, rank 0 on either side
 * and size-1 axes with a rank difference. */
#define BIN6(name, ref, da, db, acc) \
  BIN(name, ref, da, db, acc, S2(2, 3), S2(2, 3), S2(2, 3)), \
  BIN(name, ref, da, db, acc, S2(2, 3), S1(3), S2(2, 3)), \
  BIN(name, ref, da, db, acc, S2(2, 1), S2(1, 3), S2(2, 3)), \
  BIN(name, ref, da, db, acc, S0, S2(2, 3), S2(2, 3)), \
  BIN(name, ref, da, db, acc, S2(2, 3), S0, S2(2, 3)), \
  BIN(name, ref, da, db, acc, S3(2, 1, 3), S2(4, 1), S3(2, 4, 3))
#define CMP4(name, ref, d) \
  BIN(name, ref, d, d, NULL, S2(2, 3), S2(2, 3), S2(2, 3)), \
  BIN(name, ref, d, d, NULL, S2(2, 3), S1(3), S2(2, 3)), \
  BIN(name, ref, d, d, NULL, S2(2, 1), S2(1, 3), S2(2, 3)), \
  BIN(name, ref, d, d, NULL, S0, S2(2, 3), S2(2, 3))

#define ONE(name, d, si, so, ...) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 1, .in = {MKSHP(si)}, \
   .dm = {MKDOM(d)}, .out = MKSHP(so), .p = {__VA_ARGS__}}
#define TWO(name, da, db, sa, sb, so, ...) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 2, \
   .in = {MKSHP(sa), MKSHP(sb)}, .dm = {MKDOM(da), MKDOM(db)}, \
   .out = MKSHP(so), .p = {__VA_ARGS__}}
#define THREE(name, da, db, dc, sa, sb, sc, so, ...) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 3, \
   .in = {MKSHP(sa), MKSHP(sb), MKSHP(sc)}, \
   .dm = {MKDOM(da), MKDOM(db), MKDOM(dc)}, .out = MKSHP(so), __VA_ARGS__}
#define FOUR(name, d, sa, sb, sc, sd, so, ...) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 4, \
   .in = {MKSHP(sa), MKSHP(sb), MKSHP(sc), MKSHP(sd)}, \
   .dm = {MKDOM(d), MKDOM(d), MKDOM(d), MKDOM(d)}, .out = MKSHP(so), \
   .p = {__VA_ARGS__}}
#define FIVE(name, d, sa, sb, sc, sd, se, so, ...) \
  {.id = AD__OP_##name, .apply = ap_##name, .nin = 5, \
   .in = {MKSHP(sa), MKSHP(sb), MKSHP(sc), MKSHP(sd), MKSHP(se)}, \
   .dm = {MKDOM(d), MKDOM(d), MKDOM(d), MKDOM(d), MKDOM(d)}, \
   .out = MKSHP(so), .p = {__VA_ARGS__}}
/* Single axes (positive, negative, size 1), several axes, all axes, with
 * and without keepdims. */
#define RED7(name, d) \
  ONE(name, d, S2(2, 3), S1(2), .naxes = 1, .axes = {1}), \
  ONE(name, d, S3(2, 3, 4), S1(3), .naxes = 2, .axes = {0, 2}), \
  ONE(name, d, S2(2, 3), S0, .naxes = 0), \
  ONE(name, d, S3(2, 3, 4), S3(2, 3, 1), .naxes = 1, .axes = {-1}, \
      .keep = true), \
  ONE(name, d, S3(2, 3, 4), S3(1, 3, 1), .naxes = 2, .axes = {-3, -1}, \
      .keep = true), \
  ONE(name, d, S2(3, 1), S1(3), .naxes = 1, .axes = {1}), \
  ONE(name, d, S2(2, 3), S2(1, 1), .naxes = 0, .keep = true)
#define SOFT4(name) \
  ONE(name, DU(-2, 2), S2(2, 3), S2(2, 3), .axis = -1), \
  ONE(name, DU(-2, 2), S3(2, 3, 4), S3(2, 3, 4), .axis = 1), \
  ONE(name, DU(-2, 2), S1(4), S1(4), .axis = 0), \
  ONE(name, DU(-2, 2), S2(3, 1), S2(3, 1), .axis = 1)

static const opcase CASES[] = {
    /* binary elementwise */
    BIN6(add, ref_add, DU(-1, 1), DU(-1, 1), NULL),
    /* An empty operand: every rule must cope with zero elements. */
    BIN(add, ref_add, DU(-1, 1), DU(-1, 1), NULL, S2(0, 3), S1(3), S2(0, 3)),
    BIN(mul, ref_mul, DU(-1, 1), DU(-1, 1), NULL, S2(2, 0), S2(2, 1),
        S2(2, 0)),
    BIN6(sub, ref_sub, DU(-1, 1), DU(-1, 1), NULL),
    /* The fused VJPs of tanh and sigmoid (internal rows). */
    BIN6(tanh_grad, ref_tanh_grad, DU(-1, 1), DU(-0.9, 0.9), NULL),
    BIN6(sigmoid_grad, ref_sigmoid_grad, DU(-1, 1), DU(0.1, 0.9), NULL),
    /* The internal fused product s * a * b, with and without broadcasting
     * and with a negative scale. */
    {.id = AD__OP_scaled_mul, .apply = ap_scaled_mul, .nin = 2,
     .in = {MKSHP(S2(2, 3)), MKSHP(S2(2, 3))},
     .dm = {MKDOM(DU(-1, 1)), MKDOM(DU(-1, 1))}, .out = MKSHP(S2(2, 3)),
     .p = {.s0 = 2.5}},
    {.id = AD__OP_scaled_mul, .apply = ap_scaled_mul, .nin = 2,
     .in = {MKSHP(S2(2, 1)), MKSHP(S1(3))},
     .dm = {MKDOM(DU(-1, 1)), MKDOM(DU(-1, 1))}, .out = MKSHP(S2(2, 3)),
     .p = {.s0 = -0.75}},
    BIN6(mul, ref_mul, DU(-1, 1), DU(-1, 1), NULL),
    BIN6(div, ref_div, DU(-2, 2), DS(0.5, 2), NULL),
    BIN6(pow, pow, DU(0.5, 2), DU(-2, 2), NULL),
    BIN6(maximum, fmax, DU(-1, 1), DU(-1, 1), apart),
    BIN6(minimum, fmin, DU(-1, 1), DU(-1, 1), apart),
    BIN6(atan2, atan2, DS(0.5, 2), DS(0.5, 2), NULL),
    BIN6(mod, ref_mod, DU(-3, 3), DS(0.5, 2), ratio_off_integer),
    SC(add_scalar, ref_add_scalar, DU(-1, 1), S2(2, 3), .s0 = 0.75),
    SC(add_scalar, ref_add_scalar, DU(-1, 1), S0, .s0 = -2),
    SC(mul_scalar, ref_mul_scalar, DU(-1, 1), S2(2, 3), .s0 = -1.5),
    SC(mul_scalar, ref_mul_scalar, DU(-1, 1), S3(3, 1, 2), .s0 = 0.25),
    SC(pow_scalar, ref_pow_scalar, DU(0.5, 2), S2(2, 3), .s0 = 2.5),
    SC(pow_scalar, ref_pow_scalar, DU(0.5, 2), S0, .s0 = -1.5),
    SC(pow_scalar, ref_pow_scalar, DU(-2, 2), S3(3, 1, 2), .s0 = 3),
    /* p = 0 and p = 1 take their own paths in the rule. */
    SC(pow_scalar, ref_pow_scalar, DU(0.5, 2), S2(2, 3), .s0 = 0),
    SC(pow_scalar, ref_pow_scalar, DU(-1, 1), S1(4), .s0 = 1),
    /* unary elementwise */
    UN3(neg, ref_neg, DU(-2, 2)),
    UN3(exp, ref_exp, DU(-1, 1)),
    UN3(log, ref_log, DU(0.5, 2)),
    UN3(log1p, ref_log1p, DU(-0.5, 1)),
    UN3(expm1, ref_expm1, DU(-1, 1)),
    UN3(sqrt, ref_sqrt, DU(0.5, 2)),
    UN3(square, ref_square, DU(-2, 2)),
    UN3(abs, ref_fabs, DG(1, 2)),
    UN3(sin, ref_sin, DU(-2, 2)),
    UN3(cos, ref_cos, DU(-2, 2)),
    UN3(tan, ref_tan, DU(-1, 1)),
    UN3(asin, ref_asin, DU(-0.8, 0.8)),
    UN3(acos, ref_acos, DU(-0.8, 0.8)),
    UN3(atan, ref_atan, DU(-2, 2)),
    UN3(sinh, ref_sinh, DU(-1.5, 1.5)),
    UN3(cosh, ref_cosh, DU(-1.5, 1.5)),
    UN3(tanh, ref_tanh, DU(-1.5, 1.5)),
    UN3(sigmoid, ref_sigmoid, DU(-3, 3)),
    UN3(softplus, ref_softplus, DU(-3, 3)),
    UN3(relu, ref_relu, DG(1, 2)),
    UN3(erf, ref_erf, DU(-1.5, 1.5)),
    UN3(sign, ref_sign, DG(1, 2)),
    UN3(floor, ref_floor, DG(1, 3)),
    SC(clip, ref_clip, DG(0.5, 3), S2(2, 3), .s0 = -0.5, .s1 = 0.5),
    SC(clip, ref_clip, DG(0.5, 3), S0, .s0 = -0.5, .s1 = 0.5),
    SC(clip, ref_clip, DG(0.5, 3), S3(3, 1, 2), .s0 = -0.5, .s1 = 0.5),
    /* comparison and selection */
    CMP4(less, ref_less, DU(-1, 1)),
    CMP4(greater, ref_greater, DU(-1, 1)),
    CMP4(equal, ref_equal, DI(-1, 1)),
    THREE(where, DM, DU(-1, 1), DU(-1, 1), S2(2, 3), S2(2, 3), S2(2, 3),
          S2(2, 3), .f3 = ref_where),
    THREE(where, DM, DU(-1, 1), DU(-1, 1), S2(2, 3), S1(3), S0, S2(2, 3),
          .f3 = ref_where),
    THREE(where, DM, DU(-1, 1), DU(-1, 1), S2(2, 1), S2(1, 3), S2(2, 3),
          S2(2, 3), .f3 = ref_where),
    THREE(where, DM, DU(-1, 1), DU(-1, 1), S0, S2(2, 3), S1(3), S2(2, 3),
          .f3 = ref_where),
    /* reductions */
    RED7(sum, DU(-1, 1)),
    ONE(sum, DU(-1, 1), S2(0, 3), S1(3), .naxes = 1, .axes = {0}),
    RED7(mean, DU(-1, 1)),
    RED7(prod, DS(0.5, 1.5)),
    RED7(max, DD(-2, 2)),
    RED7(min, DD(-2, 2)),
    RED7(logsumexp, DU(-2, 2)),
    ONE(argmax, DD(-2, 2), S2(2, 3), S1(2), .axis = 1),
    ONE(argmax, DD(-2, 2), S3(2, 3, 4), S2(2, 4), .axis = -2),
    ONE(argmax, DD(-2, 2), S1(5), S0, .axis = 0),
    SOFT4(softmax),
    SOFT4(log_softmax),
    /* shape */
    ONE(reshape, DU(-1, 1), S2(2, 3), S2(3, 2), .ndim = 2, .shape = {3, 2}),
    ONE(reshape, DU(-1, 1), S3(2, 3, 4), S2(4, 6), .ndim = 2,
        .shape = {4, -1}),
    ONE(reshape, DU(-1, 1), S0, S2(1, 1), .ndim = 2, .shape = {1, 1}),
    ONE(reshape, DU(-1, 1), S1(6), S3(2, 1, 3), .ndim = 3,
        .shape = {2, 1, 3}),
    ONE(transpose, DU(-1, 1), S2(2, 3), S2(3, 2), .axis = 0),
    ONE(transpose, DU(-1, 1), S3(2, 3, 4), S3(2, 4, 3), .axis = 0),
    ONE(transpose, DU(-1, 1), S1(4), S1(4), .axis = 0),
    ONE(permute, DU(-1, 1), S3(2, 3, 4), S3(4, 2, 3), .perm = {2, 0, 1}),
    ONE(permute, DU(-1, 1), S2(2, 3), S2(3, 2), .perm = {1, 0}),
    ONE(permute, DU(-1, 1), S4(1, 2, 3, 1), S4(1, 2, 1, 3),
        .perm = {3, 1, 0, 2}),
    ONE(expand_dims, DU(-1, 1), S2(2, 3), S3(1, 2, 3), .axis = 0),
    ONE(expand_dims, DU(-1, 1), S2(2, 3), S3(2, 3, 1), .axis = -1),
    ONE(expand_dims, DU(-1, 1), S0, S1(1), .axis = 0),
    ONE(squeeze, DU(-1, 1), S3(2, 1, 3), S2(2, 3), .axis = 1),
    ONE(squeeze, DU(-1, 1), S1(1), S0, .axis = -1),
    ONE(squeeze, DU(-1, 1), S2(3, 1), S1(3), .axis = -1),
    ONE(broadcast_to, DU(-1, 1), S1(3), S2(2, 3), .ndim = 2,
        .shape = {2, 3}),
    ONE(broadcast_to, DU(-1, 1), S2(2, 1), S3(3, 2, 4), .ndim = 3,
        .shape = {3, 2, 4}),
    ONE(broadcast_to, DU(-1, 1), S0, S2(2, 2), .ndim = 2, .shape = {2, 2}),
    ONE(broadcast_to, DU(-1, 1), S2(1, 3), S2(1, 3), .ndim = 2,
        .shape = {1, 3}),
    ONE(slice, DU(-1, 1), S1(5), S1(3), .axis = 0, .start = 1, .stop = 4,
        .step = 1),
    ONE(slice, DU(-1, 1), S2(4, 6), S2(4, 3), .axis = 1, .start = 0,
        .stop = 6, .step = 2),
    ONE(slice, DU(-1, 1), S2(5, 3), S2(3, 3), .axis = 0, .start = 4,
        .stop = -100, .step = -2),
    ONE(slice, DU(-1, 1), S2(3, 5), S2(3, 3), .axis = -1, .start = -3,
        .stop = 100, .step = 1),
    ONE(slice, DU(-1, 1), S1(5), S1(0), .axis = 0, .start = 3, .stop = 1,
        .step = 1),
    THREE(concat, DU(-1, 1), DU(-1, 1), DU(-1, 1), S2(2, 3), S2(2, 1),
          S2(2, 2), S2(2, 6), .p = {.axis = 1}),
    TWO(concat, DU(-1, 1), DU(-1, 1), S2(1, 3), S2(2, 3), S2(3, 3),
        .axis = 0),
    TWO(concat, DU(-1, 1), DU(-1, 1), S2(2, 2), S2(2, 1), S2(2, 3),
        .axis = -1),
    TWO(concat, DU(-1, 1), DU(-1, 1), S2(2, 0), S2(2, 3), S2(2, 3),
        .axis = 1),
    FIVE(concat, DU(-1, 1), S1(2), S1(1), S1(3), S1(1), S1(2), S1(9),
         .axis = 0),
    TWO(stack, DU(-1, 1), DU(-1, 1), S2(2, 3), S2(2, 3), S3(2, 2, 3),
        .axis = 0),
    THREE(stack, DU(-1, 1), DU(-1, 1), DU(-1, 1), S1(3), S1(3), S1(3),
          S2(3, 3), .p = {.axis = -1}),
    TWO(stack, DU(-1, 1), DU(-1, 1), S0, S0, S1(2), .axis = 0),
    FOUR(stack, DU(-1, 1), S2(1, 2), S2(1, 2), S2(1, 2), S2(1, 2),
         S3(1, 4, 2), .axis = 1),
    /* Repeated and negative indices: the gradient must add into them. */
    ONE(gather, DU(-1, 1), S2(4, 3), S2(4, 3), .axis = 0, .n = 4,
        .idx = {2, 0, 2, -1}),
    ONE(gather, DU(-1, 1), S2(2, 5), S2(2, 2), .axis = -1, .n = 2,
        .idx = {4, 1}),
    ONE(gather, DU(-1, 1), S1(5), S1(1), .axis = 0, .n = 1, .idx = {3}),
    ONE(gather, DU(-1, 1), S2(4, 3), S2(0, 3), .axis = 0, .n = 0),
    ONE(slice_grad, DU(-1, 1), S2(2, 3), S2(2, 7), .ndim = 2,
        .shape = {2, 7}, .axis = 1, .start = 1, .step = 2),
    ONE(slice_grad, DU(-1, 1), S2(3, 2), S2(5, 2), .ndim = 2,
        .shape = {5, 2}, .axis = 0, .start = 4, .step = -1),
    ONE(slice_grad, DU(-1, 1), S2(2, 3), S2(3, 3), .ndim = 2,
        .shape = {3, 3}, .axis = 0, .start = 2, .step = -2),
    ONE(scatter_add, DU(-1, 1), S2(3, 2), S2(4, 2), .ndim = 2,
        .shape = {4, 2}, .axis = 0, .n = 3, .idx = {1, 3, 1}),
    ONE(scatter_add, DU(-1, 1), S2(2, 2), S2(2, 5), .ndim = 2,
        .shape = {2, 5}, .axis = -1, .n = 2, .idx = {0, -1}),
    ONE(scatter_add, DU(-1, 1), S2(0, 2), S2(3, 2), .ndim = 2,
        .shape = {3, 2}, .axis = 0, .n = 0),
    ONE(identity, DU(-1, 1), S2(2, 3), S2(2, 3), .axis = 0),
    ONE(identity, DU(-1, 1), S0, S0, .axis = 0),
    /* linear algebra: batched, broadcast and rank-1 operands */
    TWO(matmul, DU(-1, 1), DU(-1, 1), S2(2, 3), S2(3, 4), S2(2, 4), .n = 0),
    TWO(matmul, DU(-1, 1), DU(-1, 1), S3(2, 2, 3), S3(2, 3, 2),
        S3(2, 2, 2), .n = 0),
    TWO(matmul, DU(-1, 1), DU(-1, 1), S4(2, 1, 2, 3), S3(3, 3, 2),
        S4(2, 3, 2, 2), .n = 0),
    TWO(matmul, DU(-1, 1), DU(-1, 1), S1(3), S2(3, 2), S1(2), .n = 0),
    TWO(matmul, DU(-1, 1), DU(-1, 1), S2(2, 3), S1(3), S1(2), .n = 0),
    TWO(matmul, DU(-1, 1), DU(-1, 1), S1(3), S1(3), S0, .n = 0),
    TWO(matmul, DU(-1, 1), DU(-1, 1), S1(3), S3(2, 3, 4), S2(2, 4), .n = 0),
    TWO(matmul, DU(-1, 1), DU(-1, 1), S2(2, 0), S2(0, 3), S2(2, 3), .n = 0),
    TWO(solve, DWELL, DU(-1, 1), S2(3, 3), S2(3, 2), S2(3, 2), .n = 0),
    TWO(solve, DWELL, DU(-1, 1), S2(3, 3), S1(3), S1(3), .n = 0),
    TWO(solve, DWELL, DU(-1, 1), S3(2, 3, 3), S3(2, 3, 1), S3(2, 3, 1),
        .n = 0),
    TWO(solve, DWELL, DU(-1, 1), S2(3, 3), S3(2, 3, 2), S3(2, 3, 2), .n = 0),
    TWO(solve, DWELL, DU(-1, 1), S3(2, 2, 2), S1(2), S2(2, 2), .n = 0),
    ONE(inv, DWELL, S2(3, 3), S2(3, 3), .n = 0),
    ONE(inv, DWELL, S3(2, 2, 2), S3(2, 2, 2), .n = 0),
    ONE(inv, DWELL, S2(1, 1), S2(1, 1), .n = 0),
    ONE(cholesky, DSPD, S2(3, 3), S2(3, 3), .n = 0),
    ONE(cholesky, DSPD, S3(2, 2, 2), S3(2, 2, 2), .n = 0),
    ONE(cholesky, DSPD, S2(1, 1), S2(1, 1), .n = 0),
    ONE(det, DWELL, S2(3, 3), S0, .n = 0),
    ONE(det, DWELL, S3(2, 2, 2), S1(2), .n = 0),
    ONE(det, DWELL, S2(1, 1), S0, .n = 0),
    ONE(logdet, DWELL, S2(3, 3), S0, .n = 0),
    ONE(logdet, DWELL, S3(2, 3, 3), S1(2), .n = 0),
    /* convolution (stride 2 with padding 1 among them) and pooling */
    TWO(conv2d, DU(-1, 1), DU(-1, 1), S4(1, 4, 4, 2), S4(3, 3, 2, 2),
        S4(1, 2, 2, 2), .k = {1, 1, 0, 0}),
    TWO(conv2d, DU(-1, 1), DU(-1, 1), S4(2, 5, 5, 1), S4(3, 3, 1, 2),
        S4(2, 3, 3, 2), .k = {2, 2, 1, 1}),
    TWO(conv2d, DU(-1, 1), DU(-1, 1), S4(1, 4, 5, 2), S4(2, 3, 2, 1),
        S4(1, 3, 3, 1), .k = {2, 1, 1, 0}),
    TWO(conv2d, DU(-1, 1), DU(-1, 1), S4(1, 3, 3, 1), S4(2, 2, 1, 1),
        S4(1, 4, 4, 1), .k = {1, 1, 1, 1}),
    TWO(conv2d_input_grad, DU(-1, 1), DU(-1, 1), S4(2, 3, 3, 2),
        S4(3, 3, 1, 2), S4(2, 5, 5, 1), .k = {2, 2, 1, 1}, .ndim = 4,
        .shape = {2, 5, 5, 1}),
    TWO(conv2d_input_grad, DU(-1, 1), DU(-1, 1), S4(1, 2, 2, 2),
        S4(3, 3, 2, 2), S4(1, 4, 4, 2), .k = {1, 1, 0, 0}, .ndim = 4,
        .shape = {1, 4, 4, 2}),
    TWO(conv2d_filter_grad, DU(-1, 1), DU(-1, 1), S4(2, 5, 5, 1),
        S4(2, 3, 3, 2), S4(3, 3, 1, 2), .k = {2, 2, 1, 1}, .ndim = 4,
        .shape = {3, 3, 1, 2}),
    TWO(conv2d_filter_grad, DU(-1, 1), DU(-1, 1), S4(1, 4, 4, 2),
        S4(1, 2, 2, 2), S4(3, 3, 2, 2), .k = {1, 1, 0, 0}, .ndim = 4,
        .shape = {3, 3, 2, 2}),
    ONE(max_pool2d, DD(-2, 2), S4(1, 4, 4, 2), S4(1, 2, 2, 2),
        .k = {2, 2, 2, 2}),
    ONE(max_pool2d, DD(-2, 2), S4(2, 5, 5, 1), S4(2, 2, 2, 1),
        .k = {3, 3, 2, 2}),
    ONE(max_pool2d, DD(-2, 2), S4(1, 3, 3, 1), S4(1, 2, 2, 1),
        .k = {2, 2, 1, 1}),
    /* The last row and column are in no window: their gradient is 0. */
    ONE(max_pool2d, DD(-2, 2), S4(1, 5, 5, 1), S4(1, 2, 2, 1),
        .k = {2, 2, 2, 2}),
    TWO(max_pool2d_scatter, DD(-2, 2), DU(-1, 1), S4(1, 4, 4, 2),
        S4(1, 2, 2, 2), S4(1, 4, 4, 2), .k = {2, 2, 2, 2}),
    TWO(max_pool2d_scatter, DD(-2, 2), DU(-1, 1), S4(1, 3, 3, 1),
        S4(1, 2, 2, 1), S4(1, 3, 3, 1), .k = {2, 2, 1, 1}),
    TWO(max_pool2d_select, DD(-2, 2), DU(-1, 1), S4(1, 4, 4, 2),
        S4(1, 4, 4, 2), S4(1, 2, 2, 2), .k = {2, 2, 2, 2}),
    TWO(max_pool2d_select, DD(-2, 2), DU(-1, 1), S4(1, 3, 3, 1),
        S4(1, 3, 3, 1), S4(1, 2, 2, 1), .k = {2, 2, 1, 1}),
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ------------------------------------------------------------------------
 * Instances: a case with its random inputs, weights and the list of the
 * inputs that are differentiated.
 * ---------------------------------------------------------------------- */

/* splitmix64: a fixed, platform-independent stream per case. */
typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double rng_unif(rng *r, double lo, double hi) {
  return lo + (hi - lo) * (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static int64_t shp_numel(const shp *s) {
  int64_t n = 1;
  for (int i = 0; i < s->nd; i++) n *= s->d[i];
  return n;
}

static char *shp_str(char *buf, size_t size, const shp *s) {
  size_t k = (size_t)snprintf(buf, size, "(");
  for (int i = 0; i < s->nd && k < size; i++)
    k += (size_t)snprintf(buf + k, size - k, i ? ", %lld" : "%lld",
                          (long long)s->d[i]);
  if (k < size) snprintf(buf + k, size - k, s->nd == 1 ? ",)" : ")");
  return buf;
}

/* Offset into an input of shape in for the flat index of an output of
 * shape o that it broadcasts to. */
static int64_t bcast_off(const shp *o, int64_t flat, const shp *in) {
  int64_t off = 0, stride = 1;
  for (int k = o->nd - 1, j = in->nd - 1; k >= 0; k--, j--) {
    int64_t idx = flat % o->d[k];
    flat /= o->d[k];
    if (j >= 0) {
      if (in->d[j] != 1) off += idx * stride;
      stride *= in->d[j];
    }
  }
  return off;
}

static void fill_matrices(rng *r, const dom *d, const shp *s, double *v) {
  int64_t n = s->d[s->nd - 1], nmat = shp_numel(s) / (n * n);
  for (int64_t b = 0; b < nmat; b++) {
    double *a = v + b * n * n;
    if (d->kind == D_SPD) {
      double m[16];
      for (int64_t i = 0; i < n * n; i++) m[i] = rng_unif(r, -1, 1);
      for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
          double acc = i == j ? (double)n : 0.0;
          for (int64_t k = 0; k < n; k++) acc += m[i * n + k] * m[j * n + k];
          a[i * n + j] = acc;
        }
    } else {
      for (int64_t i = 0; i < n * n; i++) a[i] = rng_unif(r, -0.5, 0.5);
      for (int64_t i = 0; i < n; i++)
        a[i * n + i] += (rng_next(r) & 1 ? 1.0 : -1.0) * (double)n;
    }
  }
}

static void fill_inputs(const opcase *c, rng *r, double (*v)[MAXEL]) {
  int64_t ndistinct = 0;
  for (int i = 0; i < c->nin; i++)
    if (c->dm[i].kind == D_DISTINCT) ndistinct += shp_numel(&c->in[i]);
  /* A shuffled grid with a little jitter: every gap is at least half the
   * grid spacing. */
  double pool[MAXEL];
  for (int64_t k = 0; k < ndistinct; k++) {
    const dom *d = NULL;
    for (int i = 0; i < c->nin && !d; i++)
      if (c->dm[i].kind == D_DISTINCT) d = &c->dm[i];
    double jitter = rng_unif(r, -0.25, 0.25);
    pool[k] = d->a + (d->b - d->a) * ((double)k + 0.5 + jitter) /
                         (double)ndistinct;
  }
  for (int64_t k = ndistinct - 1; k > 0; k--) {
    int64_t j = (int64_t)(rng_next(r) % (uint64_t)(k + 1));
    double t = pool[k];
    pool[k] = pool[j];
    pool[j] = t;
  }
  int64_t used = 0;
  for (int i = 0; i < c->nin; i++) {
    const dom *d = &c->dm[i];
    int64_t n = shp_numel(&c->in[i]);
    if (d->kind == D_SPD || d->kind == D_WELL) {
      fill_matrices(r, d, &c->in[i], v[i]);
      continue;
    }
    for (int64_t e = 0; e < n; e++) {
      double x = 0;
      switch (d->kind) {
        case D_UNIF: x = rng_unif(r, d->a, d->b); break;
        case D_SIGNED:
          x = rng_unif(r, d->a, d->b) * (rng_next(r) & 1 ? 1.0 : -1.0);
          break;
        case D_GRID: {
          int64_t span = (int64_t)(2 * d->b);
          double k = (double)(int64_t)(rng_next(r) % (uint64_t)span) - d->b;
          x = d->a * (k + rng_unif(r, 0.2, 0.8));
          break;
        }
        case D_DISTINCT: x = pool[used++]; break;
        case D_MASK: x = (double)(rng_next(r) & 1); break;
        case D_INTS:
          x = d->a + (double)(rng_next(r) % (uint64_t)(d->b - d->a + 1));
          break;
        default: break;
      }
      v[i][e] = x;
    }
  }
}

static bool accepted(const opcase *c, double (*v)[MAXEL]) {
  if (!c->accept) return true;
  int64_t n = shp_numel(&c->out);
  for (int64_t e = 0; e < n; e++)
    if (!c->accept(v[0][bcast_off(&c->out, e, &c->in[0])],
                   v[1][bcast_off(&c->out, e, &c->in[1])]))
      return false;
  return true;
}

typedef struct inst {
  const opcase *c;
  int ci;               /* index in CASES */
  int nd, di[MAXIN];    /* the differentiated inputs */
  ad_tensor *x[MAXIN];
  ad_tensor *R;         /* weights of h = sum(op(x) * R) */
  double v[MAXIN][MAXEL];
  char name[200];
} inst;

/* Instances live in static storage (they are large) and hold tensors of
 * the scope that was current when they were made. */
static bool inst_make(inst *I, int ci) {
  const opcase *c = &CASES[ci];
  memset(I, 0, sizeof *I);
  I->c = c;
  I->ci = ci;
  rng r = {0x5eed0000ull + (uint64_t)ci * 7919u};
  int tries = 0;
  do fill_inputs(c, &r, I->v);
  while (!accepted(c, I->v) && ++tries < 1000);
  if (tries == 1000) return false;
  const ad__op *op = &ad__ops[c->id];
  for (int i = 0; i < c->nin; i++) {
    I->x[i] = ad_tensor_new(c->in[i].nd, c->in[i].d, I->v[i]);
    if (!(op->flags & AD__OP_NONDIFF) && !(op->const_inputs & (1u << i)))
      I->di[I->nd++] = i;
  }
  double w[MAXEL];
  for (int64_t e = 0; e < shp_numel(&c->out); e++) w[e] = rng_unif(&r, -1, 1);
  I->R = ad_tensor_new(c->out.nd, c->out.d, w);
  size_t k = (size_t)snprintf(I->name, sizeof I->name, "%s ",
                              ad__ops[c->id].name);
  char b[64];
  for (int i = 0; i < c->nin && k < sizeof I->name; i++)
    k += (size_t)snprintf(I->name + k, sizeof I->name - k, "%s%s",
                          i ? " x " : "", shp_str(b, sizeof b, &c->in[i]));
  if (k < sizeof I->name)
    snprintf(I->name + k, sizeof I->name - k, " -> %s [case %d]",
             shp_str(b, sizeof b, &c->out), ci);
  return I->R != NULL;
}

/* A list of tensors, one per differentiated input (or one scalar). */
typedef struct tl {
  int n;
  ad_tensor *t[MAXIN];
} tl;

/* Uniform values in (-1, 1) from the stream r. */
static ad_tensor *rand_tensor(rng *r, const shp *s) {
  double w[MAXEL];
  for (int64_t e = 0; e < shp_numel(s); e++) w[e] = rng_unif(r, -1, 1);
  return ad_tensor_new(s->nd, s->d, w);
}

/* Random directions shaped like the differentiated inputs; each (case,
 * salt) pair has its own stream, so a case draws the same directions
 * whichever other cases run. */
static tl dirs_make(const inst *I, uint64_t salt) {
  rng r = {0xd1ec0000ull + (uint64_t)I->ci * 104729u + salt * 31u};
  tl u = {I->nd, {0}};
  for (int j = 0; j < I->nd; j++) u.t[j] = rand_tensor(&r, &I->c->in[I->di[j]]);
  return u;
}

static bool quick(void) { return test_quick() != 0; }

/* In quick runs (valgrind) only the first case of each row runs. */
static bool selected(int ci) {
  if (!quick()) return true;
  for (int k = 0; k < ci; k++)
    if (CASES[k].id == CASES[ci].id) return false;
  return true;
}

/* ------------------------------------------------------------------------
 * The generic evaluator: the k-th directional derivative of h in any
 * nesting of tapes ('r') and forward levels ('f'), outermost first.
 * ---------------------------------------------------------------------- */

static ad_tensor *h_eval(const inst *I, ad_tensor *const *x) {
  return ad_sum_all(ad_mul(I->c->apply(I->c, x), I->R));
}

static char nest_msg[512];

/* D^(k-lv) h [dirs[lv], ..., dirs[k-1]] at x for mode[lv..k), where the
 * level free_lv (a tape with only forward levels outside it) keeps its
 * direction open: the result is then the gradient list instead of a
 * scalar, and each forward level outside maps it elementwise.  Every tape
 * watches and every level perturbs the same tensors x, so the outer
 * contexts differentiate what the inner ones compute, rules included.
 * Results belong to the caller's scope. */
static bool nest(const inst *I, ad_tensor *const *x, const char *mode,
                 int lv, const tl *dirs, int free_lv, tl *out) {
  out->n = 0;
  if (!mode[lv]) {
    out->t[0] = h_eval(I, x);
    out->n = out->t[0] ? 1 : 0;
    return out->n == 1;
  }
  ad_tensor *prim[MAXIN];
  for (int j = 0; j < I->nd; j++) prim[j] = x[I->di[j]];
  tl in = {0, {0}};
  bool ok;
  ad_scope_begin();
  if (mode[lv] == 'f') {
    ad_fwd *acc = ad_fwd_begin(I->nd, prim, dirs[lv].t);
    ok = acc && nest(I, x, mode, lv + 1, dirs, free_lv, &in);
    for (int k = 0; ok && k < in.n; k++) {
      out->t[k] = ad_keep(ad_fwd_jvp(acc, in.t[k]));
      ok = out->t[k] != NULL;
    }
    if (ok) out->n = in.n;
    if (acc && ad_fwd_end(acc) != AD_OK) ok = false;
  } else {
    ad_tape *tape = ad_tape_begin(0);
    ok = tape != NULL;
    for (int j = 0; ok && j < I->nd; j++)
      ok = ad_tape_watch(tape, prim[j]) == AD_OK;
    ok = ok && nest(I, x, mode, lv + 1, dirs, free_lv, &in);
    if (tape && ad_tape_end(tape) != AD_OK) ok = false;
    if (ok && in.n != 1) {
      snprintf(nest_msg, sizeof nest_msg,
               "mode %s: a tape at level %d needs a scalar target", mode, lv);
      ok = false;
    }
    ad_tensor *g[MAXIN] = {0};
    ok = ok && ad_tape_gradients(tape, in.t[0], NULL, I->nd, prim, g,
                                 AD_UNCONNECTED_ZERO) == AD_OK;
    for (int j = 0; ok && j < I->nd; j++) {
      bool same = ad_ndim(g[j]) == ad_ndim(prim[j]);
      for (int d = 0; same && d < ad_ndim(g[j]); d++)
        same = ad_shape(g[j])[d] == ad_shape(prim[j])[d];
      if (!same) {
        snprintf(nest_msg, sizeof nest_msg,
                 "mode %s: the gradient of input %d at level %d has rank %d,"
                 " not the input's shape",
                 mode, I->di[j], lv, ad_ndim(g[j]));
        ok = false;
      }
    }
    if (ok && free_lv == lv) {
      for (int j = 0; j < I->nd; j++) out->t[j] = ad_keep(g[j]);
      out->n = I->nd;
    } else if (ok) {
      ad_tensor *dot = ad_scalar(0.0);
      for (int j = 0; j < I->nd; j++)
        dot = ad_add(dot, ad_sum_all(ad_mul(g[j], dirs[lv].t[j])));
      out->t[0] = ad_keep(dot);
      ok = dot != NULL;
      out->n = ok;
    }
    ad_tape_free(tape);
  }
  ad_scope_end();
  return ok;
}

/* The scalar D^k h [dirs...] at x in the given nesting. */
static bool dderiv(const inst *I, ad_tensor *const *x, const char *mode,
                   const tl *dirs, double *val) {
  ad_scope_begin();
  tl out;
  bool ok = nest(I, x, mode, 0, dirs, -1, &out) && out.n == 1;
  *val = ok ? ad_item(out.t[0]) : NAN;
  ad_scope_end();
  return ok;
}

/* x + t u on the differentiated inputs (u lists them in order). */
static void shifted(const inst *I, const tl *u, double t, ad_tensor **xs) {
  for (int i = 0; i < I->c->nin; i++) xs[i] = I->x[i];
  if (t == 0) return;
  for (int j = 0; j < I->nd; j++)
    xs[I->di[j]] = ad_add(I->x[I->di[j]], ad_mul_scalar(u->t[j], t));
}

/* Read a gradient list into one flat array; returns the element count. */
static int64_t flatten(const tl *g, double *out) {
  int64_t k = 0;
  for (int j = 0; j < g->n; j++) {
    int64_t n = ad_numel(g->t[j]);
    ad_read(g->t[j], out + k, n);
    k += n;
  }
  return k;
}

/* ------------------------------------------------------------------------
 * Finite differences.  Scalars go through GSL's gsl_deriv_central, whose
 * error estimate sets the tolerance; vectors use the same five-point rule
 * and error estimate over a shared set of evaluations.
 * ---------------------------------------------------------------------- */

#define FD_STEP 1e-3

enum { FD_ELEM, FD_DIR, FD_D2 };

typedef struct fdarg {
  const inst *I;
  int kind;
  int j;          /* FD_ELEM: input (index into di) */
  int64_t e;      /* FD_ELEM: element */
  const tl *u;    /* FD_DIR, FD_D2: the direction of t */
  const tl *vw;   /* FD_D2: directions of the second derivative */
  bool failed;
} fdarg;

static double fd_fn(double t, void *p) {
  fdarg *a = p;
  const inst *I = a->I;
  double val = NAN;
  ad_scope_begin();
  ad_tensor *xs[MAXIN];
  if (a->kind == FD_ELEM) {
    int i = I->di[a->j];
    for (int k = 0; k < I->c->nin; k++) xs[k] = I->x[k];
    double w[MAXEL];
    memcpy(w, I->v[i], sizeof w);
    w[a->e] += t;
    xs[i] = ad_tensor_new(I->c->in[i].nd, I->c->in[i].d, w);
  } else {
    shifted(I, a->u, t, xs);
  }
  if (a->kind == FD_D2) {
    if (!dderiv(I, xs, "fr", a->vw, &val)) a->failed = true;
  } else {
    ad_tensor *h = h_eval(I, xs);
    if (h) val = ad_item(h);
    else a->failed = true;
  }
  ad_scope_end();
  return val;
}

static void fd_scalar(fdarg *a, double *val, double *err) {
  gsl_function F = {fd_fn, a};
  if (gsl_deriv_central(&F, 0.0, FD_STEP, val, err) != GSL_SUCCESS)
    a->failed = true;
}

/* Flattened AD gradient of h at x + t u (mode "r"). */
static bool grad_at(const inst *I, const tl *u, double t, double *out) {
  ad_scope_begin();
  ad_tensor *xs[MAXIN];
  shifted(I, u, t, xs);
  tl g;
  tl none[1] = {{0, {0}}};
  bool ok = nest(I, xs, "r", 0, none, 0, &g);
  if (ok) flatten(&g, out);
  ad_scope_end();
  return ok;
}

/* GSL's central_deriv (5-point rule, error from the 3-point rule plus
 * rounding) for every element of the gradient at once. */
static bool central_vec_at(const inst *I, const tl *u, double hstep,
                           int64_t n, double *res, double *round,
                           double *trunc) {
  static double fm1[MAXEL], fp1[MAXEL], fmh[MAXEL], fph[MAXEL];
  if (!grad_at(I, u, -hstep, fm1) || !grad_at(I, u, hstep, fp1) ||
      !grad_at(I, u, -hstep / 2, fmh) || !grad_at(I, u, hstep / 2, fph))
    return false;
  for (int64_t e = 0; e < n; e++) {
    double r3 = 0.5 * (fp1[e] - fm1[e]);
    double r5 = (4.0 / 3.0) * (fph[e] - fmh[e]) - (1.0 / 3.0) * r3;
    double e3 = (fabs(fp1[e]) + fabs(fm1[e])) * GSL_DBL_EPSILON;
    double e5 = 2.0 * (fabs(fph[e]) + fabs(fmh[e])) * GSL_DBL_EPSILON + e3;
    res[e] = r5 / hstep;
    trunc[e] = fabs((r5 - r3) / hstep);
    round[e] = fabs(e5 / hstep);
  }
  return true;
}

/* d/dt grad h(x + t u) at t = 0 with an error estimate per element; like
 * gsl_deriv_central, one refined step (shared by all elements) is tried
 * and kept per element where it is better and consistent. */
static bool central_vec(const inst *I, const tl *u, int64_t n, double *res,
                        double *err) {
  double round[MAXEL], trunc[MAXEL], r2[MAXEL], round2[MAXEL],
      trunc2[MAXEL];
  if (!central_vec_at(I, u, FD_STEP, n, res, round, trunc)) return false;
  double max_round = 0, max_trunc = 0;
  for (int64_t e = 0; e < n; e++) {
    err[e] = round[e] + trunc[e];
    max_round = fmax(max_round, round[e]);
    max_trunc = fmax(max_trunc, trunc[e]);
  }
  if (!(max_round < max_trunc && max_round > 0)) return true;
  double h2 = FD_STEP * pow(max_round / (2.0 * max_trunc), 1.0 / 3.0);
  if (!central_vec_at(I, u, h2, n, r2, round2, trunc2)) return false;
  for (int64_t e = 0; e < n; e++) {
    double err2 = round2[e] + trunc2[e];
    if (err2 < err[e] && fabs(r2[e] - res[e]) < 4.0 * err[e]) {
      res[e] = r2[e];
      err[e] = err2;
    }
  }
  return true;
}

/* Nestings of AD compute the same derivative with the same rules in
 * another order: they agree up to rounding, relative to the size of the
 * values compared. */
#define EXACT_TOL 1e-11

static double fd_tol(double fd, double abserr) {
  return fmax(10.0 * abserr, 1e-7 * (1.0 + fabs(fd)));
}

/* ------------------------------------------------------------------------
 * Reporting: every failing case is printed with its worst element before
 * the test fails.
 * ---------------------------------------------------------------------- */

typedef struct worst {
  double ratio; /* |a - b| / tol, infinite for NaN */
  int64_t at;
  double a, b, tol;
} worst;

static void worst_init(worst *w) { *w = (worst){-1, -1, 0, 0, 0}; }

static void worst_add(worst *w, int64_t at, double a, double b, double tol) {
  double r = fabs(a - b) / tol;
  if (isnan(r)) r = INFINITY;
  if (r > w->ratio) *w = (worst){r, at, a, b, tol};
}

typedef struct family {
  const char *name;
  int checked, failed;
} family;

/* Report w against the given labels when it exceeds its tolerance;
 * returns true when it passed. */
static bool check_worst(family *f, const inst *I, const char *what,
                        const char *la, const char *lb, const worst *w) {
  if (w->ratio <= 1.0) return true;
  f->failed++;
  print_error("[%s] %s: %s: worst element %lld: %s %.17g vs %s %.17g "
              "(error %.3g > tol %.3g)\n",
              f->name, I->name, what, (long long)w->at, la, w->a, lb, w->b,
              fabs(w->a - w->b), w->tol);
  return false;
}

static void case_error(family *f, const inst *I, const char *what) {
  f->failed++;
  print_error("[%s] %s: %s failed with error: %s%s%s\n", f->name, I->name,
              what, ad_error_message(), nest_msg[0] ? " / " : "", nest_msg);
  nest_msg[0] = '\0';
  ad_error_clear();
}

static void family_end(const family *f) {
  print_message("[%s] %d case checks, %d failed\n", f->name, f->checked,
                f->failed);
  if (f->failed) fail_msg("%s: %d failing case check(s)", f->name, f->failed);
}

static bool nondiff(const opcase *c) {
  return (ad__ops[c->id].flags & AD__OP_NONDIFF) != 0;
}

static inst I_;

/* Open a scope and instantiate case ci; NULL (reported, scope closed) when
 * its joint domain could not be sampled. */
static inst *case_begin(family *f, int ci) {
  ad_scope_begin();
  inst *I = &I_;
  if (inst_make(I, ci)) {
    f->checked++;
    return I;
  }
  case_error(f, I, "drawing inputs from the domain");
  ad_scope_end();
  return NULL;
}

/* Close the case's scope, reporting an error it left behind. */
static void case_end(family *f, const inst *I) {
  if (ad_error() != AD_OK) case_error(f, I, "the error state after the case");
  ad_scope_end();
}

/* ------------------------------------------------------------------------
 * 1. The table itself
 * ---------------------------------------------------------------------- */

static void every_row_has_cases_and_rules(void **state) {
  (void)state;
  int bad = 0;
  for (int id = 0; id < AD__OP_COUNT; id++) {
    const ad__op *op = &ad__ops[id];
    int n = 0;
    for (int ci = 0; ci < NCASES; ci++) n += CASES[ci].id == (ad__op_id)id;
    if (n == 0) {
      print_error("error: row %s has no case in tests/test_optable.c\n",
                  op->name);
      bad++;
    }
    bool nd = op->flags & AD__OP_NONDIFF;
    bool rules = op->vjp && (op->jvp || (op->flags & AD__OP_LINEAR));
    if (!nd && !rules) {
      print_error("error: row %s lacks a %s rule and is not "
                  "AD__OP_NONDIFF\n",
                  op->name, op->vjp ? "JVP" : "VJP");
      bad++;
    }
    if (nd && (op->vjp || op->jvp)) {
      print_error("error: row %s is AD__OP_NONDIFF but has rules\n",
                  op->name);
      bad++;
    }
    if (!op->name || strncmp(op->name, "ad_", 3) != 0 || !op->kernel) {
      print_error("error: row %d has no public name or no kernel\n", id);
      bad++;
    }
  }
  /* The case table must fit the row and the fixed-size buffers. */
  for (int ci = 0; ci < NCASES; ci++) {
    const opcase *c = &CASES[ci];
    int arity = ad__ops[c->id].arity;
    if ((arity >= 0 && c->nin != arity) || c->nin < 1 || c->nin > MAXIN) {
      print_error("error: case %d of %s has %d inputs, the row %d\n", ci,
                  ad__ops[c->id].name, c->nin, arity);
      bad++;
    }
    int64_t total = 0;
    for (int i = 0; i < c->nin; i++) {
      total += shp_numel(&c->in[i]);
      if ((c->dm[i].kind == D_SPD || c->dm[i].kind == D_WELL) &&
          (c->in[i].nd < 2 || c->in[i].d[c->in[i].nd - 1] > 4)) {
        print_error("error: case %d: matrix domain on a shape it cannot "
                    "fill\n", ci);
        bad++;
      }
    }
    if (total > MAXEL || shp_numel(&c->out) > MAXEL) {
      print_error("error: case %d of %s exceeds MAXEL elements\n", ci,
                  ad__ops[c->id].name);
      bad++;
    }
  }
  print_message("%d rows, %d cases\n", (int)AD__OP_COUNT, NCASES);
  if (bad) fail_msg("%d problems with the op table or the case table", bad);
}

/* ------------------------------------------------------------------------
 * 2a. Values, shapes, and which rows the engine records
 * ---------------------------------------------------------------------- */

static void check_values(family *f, inst *I, ad_tensor *y) {
  const opcase *c = I->c;
  bool shape_ok = ad_ndim(y) == c->out.nd;
  for (int i = 0; shape_ok && i < c->out.nd; i++)
    shape_ok = ad_shape(y)[i] == c->out.d[i];
  if (!shape_ok) {
    char b[64];
    f->failed++;
    print_error("[%s] %s: error: output has rank %d, expected shape %s\n",
                f->name, I->name, ad_ndim(y), shp_str(b, sizeof b, &c->out));
    return;
  }
  int64_t n = shp_numel(&c->out);
  double got[MAXEL];
  ad_read(y, got, n);
  worst w;
  worst_init(&w);
  for (int64_t e = 0; e < n; e++) {
    double want = got[e];
    if (c->f1) want = c->f1(I->v[0][e], &c->p);
    if (c->f2)
      want = c->f2(I->v[0][bcast_off(&c->out, e, &c->in[0])],
                   I->v[1][bcast_off(&c->out, e, &c->in[1])]);
    if (c->f3)
      want = c->f3(I->v[0][bcast_off(&c->out, e, &c->in[0])],
                   I->v[1][bcast_off(&c->out, e, &c->in[1])],
                   I->v[2][bcast_off(&c->out, e, &c->in[2])]);
    /* Every domain here keeps the outputs finite. */
    if (!isfinite(got[e])) want = NAN;
    worst_add(&w, e, got[e], want, 1e-13 * (1.0 + fabs(want)));
  }
  check_worst(f, I, "value (finite, and libm or the closed form)", "got",
              c->f1 || c->f2 || c->f3 ? "reference" : "itself", &w);
}

/* Nondiff rows must hide their outputs from tapes and levels.  Every
 * other row must be recorded by a tape that watches an input, while its
 * const inputs (where's condition, max pooling's x in the internal rows)
 * get neither a gradient nor a say in the tangent. */
static void check_recording(family *f, inst *I) {
  const opcase *c = I->c;
  const ad__op *op = &ad__ops[c->id];
  ad_scope_begin();
  ad_tensor *tan[MAXIN], *cprim[MAXIN], *ctan[MAXIN];
  int nc = 0;
  for (int i = 0; i < c->nin; i++) {
    tan[i] = ad_ones(ad_ndim(I->x[i]), ad_shape(I->x[i]));
    if (op->const_inputs & (1u << i)) {
      cprim[nc] = I->x[i];
      ctan[nc++] = tan[i];
    }
  }
  ad_tape *tape = ad_tape_begin(0);
  for (int i = 0; i < c->nin; i++) ad_tape_watch(tape, I->x[i]);
  /* Two levels: tangents on every input, and on the const inputs only. */
  ad_fwd *all = ad_fwd_begin(c->nin, I->x, tan);
  ad_fwd *consts = ad_fwd_begin(nc, cprim, ctan);
  ad_tensor *y = c->apply(c, I->x);
  bool tangent_all = ad_fwd_has_tangent(all, y);
  bool tangent_consts = ad_fwd_has_tangent(consts, y);
  ad_fwd_end(consts);
  ad_fwd_end(all);
  int64_t nodes = ad_tape_size(tape);
  ad_tensor *target = ad_sum_all(ad_mul(y, I->R));
  ad_tape_end(tape);
  ad_tensor *g[MAXIN] = {0};
  ad_status st = y ? ad_tape_gradients(tape, target, NULL, c->nin, I->x, g,
                                       0)
                   : ad_error();
  ad_tape_free(tape);
  const char *why = NULL;
  if (!y || st != AD_OK) {
    case_error(f, I, "recording");
  } else if (nondiff(c)) {
    bool any_grad = false;
    for (int i = 0; i < c->nin; i++) any_grad |= g[i] != NULL;
    why = tangent_all ? "the output of a nondiff row has a tangent"
          : nodes     ? "a tape recorded a nondiff row"
          : any_grad  ? "a nondiff row passed on a gradient"
                      : NULL;
  } else if (nodes < 1) {
    why = "the tape recorded nothing";
  } else if (tangent_consts) {
    why = "a tangent on a const input reached the output";
  } else {
    for (int i = 0; i < c->nin; i++)
      if ((op->const_inputs & (1u << i)) && g[i])
        why = "a const input received a gradient";
  }
  if (why) {
    f->failed++;
    print_error("[%s] %s: error: %s\n", f->name, I->name, why);
  }
  ad_scope_end();
}

static void values_and_shapes(void **state) {
  (void)state;
  family f = {"values", 0, 0};
  for (int ci = 0; ci < NCASES; ci++) {
    if (!selected(ci)) continue;
    inst *I = case_begin(&f, ci);
    if (!I) continue;
    ad_tensor *y = I->c->apply(I->c, I->x);
    if (!y) case_error(&f, I, "the op");
    else check_values(&f, I, y);
    check_recording(&f, I);
    case_end(&f, I);
  }
  family_end(&f);
}

/* ------------------------------------------------------------------------
 * 2b. First order against finite differences
 * ---------------------------------------------------------------------- */

static void first_order(void **state) {
  (void)state;
  family f = {"first order", 0, 0};
  for (int ci = 0; ci < NCASES; ci++) {
    if (!selected(ci) || nondiff(&CASES[ci])) continue;
    inst *I = case_begin(&f, ci);
    if (!I) continue;
    /* The reverse gradient, element by element. */
    tl g;
    tl none[1] = {{0, {0}}};
    if (!nest(I, I->x, "r", 0, none, 0, &g)) {
      case_error(&f, I, "reverse gradient");
    } else {
      for (int j = 0; j < I->nd; j++) {
        double ad[MAXEL];
        int64_t n = shp_numel(&I->c->in[I->di[j]]);
        ad_read(g.t[j], ad, n);
        worst w;
        worst_init(&w);
        bool failed = false;
        for (int64_t e = 0; e < n; e++) {
          fdarg a = {I, FD_ELEM, j, e, NULL, NULL, false};
          double fd, err;
          fd_scalar(&a, &fd, &err);
          failed |= a.failed;
          worst_add(&w, e, ad[e], fd, fd_tol(fd, err));
        }
        char what[64];
        snprintf(what, sizeof what, "gradient of input %d", I->di[j]);
        if (failed) case_error(&f, I, "finite differences");
        else check_worst(&f, I, what, "reverse", "central difference", &w);
      }
    }
    /* Forward mode along random directions. */
    for (int k = 0; k < 2; k++) {
      tl u = dirs_make(I, (uint64_t)k);
      double jvp;
      if (!dderiv(I, I->x, "f", &u, &jvp)) {
        case_error(&f, I, "forward JVP");
        continue;
      }
      fdarg a = {I, FD_DIR, 0, 0, &u, NULL, false};
      double fd, err;
      fd_scalar(&a, &fd, &err);
      worst w;
      worst_init(&w);
      worst_add(&w, k, jvp, fd, fd_tol(fd, err));
      if (a.failed) case_error(&f, I, "finite differences");
      else check_worst(&f, I, "JVP along direction", "forward",
                       "central difference", &w);
    }
    case_end(&f, I);
  }
  family_end(&f);
}

/* ------------------------------------------------------------------------
 * 2c. The adjoint identity <v, J u> = <J^T v, u>, JVP rule against VJP
 * rule, on the op's full output (no finite differences).
 * ---------------------------------------------------------------------- */

static double dot_tensors(ad_tensor *a, ad_tensor *b, double *absdot) {
  double x[MAXEL], y[MAXEL];
  int64_t n = ad_numel(a);
  ad_read(a, x, n);
  ad_read(b, y, n);
  double s = 0;
  for (int64_t e = 0; e < n; e++) {
    s += x[e] * y[e];
    *absdot += fabs(x[e] * y[e]);
  }
  return s;
}

static bool same_shape_as(ad_tensor *t, const shp *s) {
  if (ad_ndim(t) != s->nd) return false;
  for (int i = 0; i < s->nd; i++)
    if (ad_shape(t)[i] != s->d[i]) return false;
  return true;
}

static void adjoint_identity(void **state) {
  (void)state;
  family f = {"adjoint", 0, 0};
  for (int ci = 0; ci < NCASES; ci++) {
    if (!selected(ci) || nondiff(&CASES[ci])) continue;
    inst *I = case_begin(&f, ci);
    if (!I) continue;
    const opcase *c = I->c;
    ad_tensor *prim[MAXIN];
    for (int j = 0; j < I->nd; j++) prim[j] = I->x[I->di[j]];
    for (uint64_t k = 0; k < 2; k++) {
      tl u = dirs_make(I, 10 + k);
      rng r = {0xad10ull + (uint64_t)ci * 65537u + k};
      ad_tensor *v = rand_tensor(&r, &c->out);
      ad_fwd *acc = ad_fwd_begin(I->nd, prim, u.t);
      ad_tensor *y = c->apply(c, I->x);
      ad_tensor *ju = y ? ad_fwd_jvp(acc, y) : NULL;
      ad_fwd_end(acc);
      ad_tape *tape = ad_tape_begin(0);
      for (int j = 0; j < I->nd; j++) ad_tape_watch(tape, prim[j]);
      ad_tensor *y2 = c->apply(c, I->x);
      ad_tape_end(tape);
      ad_tensor *g[MAXIN] = {0};
      ad_status st = y2 ? ad_tape_gradients(tape, y2, v, I->nd, prim, g,
                                            AD_UNCONNECTED_ZERO)
                        : ad_error();
      ad_tape_free(tape);
      if (!ju || st != AD_OK) {
        case_error(&f, I, ju ? "VJP" : "JVP");
        break;
      }
      if (!same_shape_as(ju, &c->out)) {
        f.failed++;
        print_error("[%s] %s: error: the JVP has rank %d, not the output's "
                    "shape\n", f.name, I->name, ad_ndim(ju));
        break;
      }
      double scale = 0;
      double lhs = dot_tensors(v, ju, &scale), rhs = 0;
      for (int j = 0; j < I->nd; j++)
        rhs += dot_tensors(g[j], u.t[j], &scale);
      worst w;
      worst_init(&w);
      worst_add(&w, (int64_t)k, lhs, rhs, 1e-12 * (1.0 + scale));
      if (!check_worst(&f, I, "<v, J u> vs <J^T v, u>", "JVP side",
                       "VJP side", &w))
        break;
    }
    case_end(&f, I);
  }
  family_end(&f);
}

/* ------------------------------------------------------------------------
 * 2d. Second order: Hessian-vector products by rev-over-rev and by
 * fwd-over-rev against finite differences of the AD gradient, and the
 * scalar D^2 h [u, w] in all four nestings.
 * ---------------------------------------------------------------------- */

static void second_order(void **state) {
  (void)state;
  family f = {"second order", 0, 0};
  for (int ci = 0; ci < NCASES; ci++) {
    if (!selected(ci) || nondiff(&CASES[ci])) continue;
    inst *I = case_begin(&f, ci);
    if (!I) continue;
    tl u = dirs_make(I, 20), w2 = dirs_make(I, 21);
    tl free_u[2] = {{0, {0}}, u}, u_free[2] = {u, {0, {0}}};
    tl rr, fr;
    double hv_rr[MAXEL], hv_fr[MAXEL], fd[MAXEL], err[MAXEL];
    int64_t n = 0;
    for (int j = 0; j < I->nd; j++) n += shp_numel(&I->c->in[I->di[j]]);
    if (!nest(I, I->x, "rr", 0, free_u, 0, &rr)) {
      case_error(&f, I, "rev-over-rev HVP");
    } else if (!nest(I, I->x, "fr", 0, u_free, 1, &fr)) {
      case_error(&f, I, "fwd-over-rev HVP");
    } else if (!central_vec(I, &u, n, fd, err)) {
      case_error(&f, I, "finite differences of the gradient");
    } else {
      flatten(&rr, hv_rr);
      flatten(&fr, hv_fr);
      worst a, b, ab;
      worst_init(&a);
      worst_init(&b);
      worst_init(&ab);
      double big = 0;
      for (int64_t e = 0; e < n; e++)
        big = fmax(big, fmax(fabs(hv_rr[e]), fabs(hv_fr[e])));
      for (int64_t e = 0; e < n; e++) {
        worst_add(&a, e, hv_rr[e], fd[e], fd_tol(fd[e], err[e]));
        worst_add(&b, e, hv_fr[e], fd[e], fd_tol(fd[e], err[e]));
        worst_add(&ab, e, hv_rr[e], hv_fr[e], EXACT_TOL * (1.0 + big));
      }
      check_worst(&f, I, "HVP", "rev-over-rev", "central difference", &a);
      check_worst(&f, I, "HVP", "fwd-over-rev", "central difference", &b);
      check_worst(&f, I, "HVP", "rev-over-rev", "fwd-over-rev", &ab);
      /* <w, H u> from rev-over-rev against the scalar in every nesting. */
      double ref = 0;
      for (int j = 0, e0 = 0; j < I->nd; j++) {
        int64_t m = shp_numel(&I->c->in[I->di[j]]);
        double wv[MAXEL];
        ad_read(w2.t[j], wv, m);
        for (int64_t e = 0; e < m; e++) ref += wv[e] * hv_rr[e0 + e];
        e0 += (int)m;
      }
      static const char *const modes[] = {"rr", "rf", "fr", "ff"};
      tl dirs[2] = {w2, u};
      for (int m = 0; m < 4; m++) {
        double val;
        if (!dderiv(I, I->x, modes[m], dirs, &val)) {
          case_error(&f, I, modes[m]);
          continue;
        }
        worst s;
        worst_init(&s);
        worst_add(&s, m, val, ref, EXACT_TOL * (1.0 + big + fabs(ref)));
        char what[64];
        snprintf(what, sizeof what, "D^2 h[w, u] by %s", modes[m]);
        check_worst(&f, I, what, modes[m], "<w, rr HVP>", &s);
      }
    }
    case_end(&f, I);
  }
  family_end(&f);
}

/* ------------------------------------------------------------------------
 * 2e. Third order in every nesting, against each other and against
 * central differences of D^2 h [v, w] along u.
 * ---------------------------------------------------------------------- */

static void third_order(void **state) {
  (void)state;
  family f = {"third order", 0, 0};
  /* The four nestings the design names, then the other four. */
  static const char *const modes[] = {"rrr", "frr", "rff", "fff",
                                      "rrf", "rfr", "frf", "ffr"};
  enum { nmodes = 8 };
  for (int ci = 0; ci < NCASES; ci++) {
    if (!selected(ci) || nondiff(&CASES[ci])) continue;
    inst *I = case_begin(&f, ci);
    if (!I) continue;
    tl dirs[3] = {dirs_make(I, 30), dirs_make(I, 31), dirs_make(I, 32)};
    double val[8];
    bool ok = true;
    for (int m = 0; m < nmodes && ok; m++)
      if (!dderiv(I, I->x, modes[m], dirs, &val[m])) {
        case_error(&f, I, modes[m]);
        ok = false;
      }
    if (ok) {
      double big = 0;
      for (int m = 0; m < nmodes; m++) big = fmax(big, fabs(val[m]));
      for (int m = 1; m < nmodes; m++) {
        worst w;
        worst_init(&w);
        worst_add(&w, m, val[m], val[0], EXACT_TOL * (1.0 + big));
        char what[64];
        snprintf(what, sizeof what, "D^3 h by %s vs rrr", modes[m]);
        check_worst(&f, I, what, modes[m], "rrr", &w);
      }
      /* Central differences of the fwd-over-rev second derivative. */
      fdarg a = {I, FD_D2, 0, 0, &dirs[0], &dirs[1], false};
      double fd, err;
      fd_scalar(&a, &fd, &err);
      worst w;
      worst_init(&w);
      worst_add(&w, 0, val[0], fd, fd_tol(fd, err));
      if (a.failed) case_error(&f, I, "finite differences of D^2 h");
      else check_worst(&f, I, "D^3 h[u, v, w]", "rrr",
                       "central difference of fr D^2 h", &w);
    }
    case_end(&f, I);
  }
  family_end(&f);
}

int main(void) {
  /* GSL's default handler aborts; the derivative checks read its status
   * instead. */
  gsl_set_error_handler_off();
  const struct CMUnitTest tests[] = {
      scoped_test(every_row_has_cases_and_rules),
      scoped_test(values_and_shapes),
      scoped_test(first_order),
      scoped_test(adjoint_identity),
      scoped_test(second_order),
      scoped_test(third_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
