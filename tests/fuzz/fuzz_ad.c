/* A differential fuzzer for libad (libFuzzer entry point
 * LLVMFuzzerTestOneInput; tests/fuzz/README.md explains how to build and
 * run it).
 *
 * The input bytes describe a small program: up to three input tensors of
 * random shapes (size-0 axes included) and values, then up to MAX_INSTR
 * instructions, each picking an op of the public API (elementwise,
 * broadcasting, reductions, views such as transpose, slice and
 * broadcast_to, joins, linear algebra, convolution, custom ops,
 * checkpointing, nested functional calls, constructors) with operands
 * chosen among the values computed so far and attributes taken from the
 * bytes, valid or not.  Every byte string is a program.
 *
 * For each program the target checks:
 *   - every call that fails returns NULL with a status other than AD_OK
 *     and AD_EINTERNAL and a message naming the op, or keeps the error of
 *     an earlier failure when given its NULL (the first error rule); a
 *     call that succeeds leaves the recorded error alone and returns a
 *     shape whose element count is consistent;
 *   - no crash, no sanitizer report, no leak (the state is cleaned after
 *     every input so that libFuzzer's leak check sees balanced
 *     allocations);
 *   - the program gives bit-identical values and the same failures under
 *     a tape, a forward level and their nestings as without them;
 *   - when the result is finite: the directional derivative along a
 *     random direction v by reverse mode, by forward mode and by central
 *     finite differences (Richardson-extrapolated) agree; and, when the
 *     input asks for second order, u^T H v by forward-over-reverse,
 *     reverse-over-reverse, reverse-over-forward and forward-over-forward
 *     agree with each other and with finite differences of the gradient.
 * A violation prints the program and aborts, which libFuzzer reports as a
 * crash and saves as an artifact.
 *
 * Finite differences are compared only where they can be trusted: the
 * function must not fail or turn non-finite on the stencil, the estimates
 * at steps h and h/2 must nearly agree, and a kink on the stencil must be
 * smaller than the tolerance, so ops that are not smooth everywhere (abs,
 * relu, max, floor, mod...) are checked wherever they are smooth
 * (fd_compare).  Derivatives are not compared for programs with values
 * beyond MAX_MAGNITUDE or an ill-conditioned matrix, nor where a known
 * limitation stops them (is_limitation); the replays still run.
 * Domains: each op that has a restricted domain also comes in a "safe"
 * form that maps its argument into the domain first (log of softplus(x) +
 * 0.25, asin of 0.9 tanh(x), the Cholesky factor of A A^T + I, ...).
 *
 * Build with tests/fuzz/build.sh; tests/fuzz/replay_main.c gives a main()
 * for compilers without libFuzzer. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"
#include "engine.h" /* ad__contexts, ad__error_count: state checks */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Defined in src/tensor.c (no header declares it). */
int ad__scope_depth(void);

#define MAX_INPUTS 3
#define MAX_IN_ELEMS 81
#define MAX_INSTR 24
#define INSTR_BYTES 10
#define MAX_VALUES (MAX_INPUTS + MAX_INSTR)
/* Results larger than this are dropped (replaced by NULL without an
 * error) so that broadcasting chains cannot blow up the run time. */
#define MAX_NUMEL 2048
/* Values this large stay out of the loss: rounding would swamp the
 * comparisons. */
#define MAX_MAGNITUDE 1e4

/* ------------------------------------------------------------------------
 * Programs
 * ---------------------------------------------------------------------- */

typedef struct instr {
  uint8_t op, a, b, c;
  uint8_t k[6];
} instr;

typedef struct program {
  int nin;
  int ndim[MAX_INPUTS];
  int64_t shape[MAX_INPUTS][4];
  int64_t numel[MAX_INPUTS];
  double x[MAX_INPUTS][MAX_IN_ELEMS];
  bool second_order;
  int n;
  instr code[MAX_INSTR];
} program;

typedef struct reader {
  const uint8_t *p;
  size_t n, i;
} reader;

static unsigned rd(reader *r) { return r->i < r->n ? r->p[r->i++] : 0u; }

/* Byte to input value: (-4, 4) without exact zeros (b == 128 gives
 * 2^-6), with two bytes reserved for infinities and one for NaN when the
 * header allows specials. */
static double byte_value(unsigned b, bool specials) {
  if (specials) {
    if (b == 255) return INFINITY;
    if (b == 254) return -INFINITY;
    if (b == 253) return NAN;
  }
  return ((double)b - 127.75) / 32.0;
}

static void parse(const uint8_t *data, size_t size, program *p) {
  reader r = {data, size, 0};
  memset(p, 0, sizeof *p);
  unsigned h = rd(&r);
  p->nin = 1 + (int)(h % MAX_INPUTS);
  p->second_order = (h >> 2) & 1u;
  bool specials = ((h >> 3) & 7u) == 7u; /* one input in eight */
  for (int i = 0; i < p->nin; i++) {
    unsigned s = rd(&r);
    p->ndim[i] = (int)(s % 5);
    p->numel[i] = 1;
    for (int d = 0; d < p->ndim[i]; d++) {
      /* Rank 4 (for conv2d and pooling) keeps to 3 per axis: 81 values. */
      p->shape[i][d] = (int64_t)(rd(&r) % (p->ndim[i] == 4 ? 4u : 5u));
      p->numel[i] *= p->shape[i][d];
    }
    for (int64_t e = 0; e < p->numel[i]; e++)
      p->x[i][e] = byte_value(rd(&r), specials);
  }
  while (p->n < MAX_INSTR && r.i < r.n) {
    instr *in = &p->code[p->n++];
    in->op = (uint8_t)rd(&r);
    in->a = (uint8_t)rd(&r);
    in->b = (uint8_t)rd(&r);
    in->c = (uint8_t)rd(&r);
    for (int j = 0; j < 6; j++) in->k[j] = (uint8_t)rd(&r);
  }
}

/* ------------------------------------------------------------------------
 * Failure reports
 * ---------------------------------------------------------------------- */

static const program *current_program;
static char trace_buf[8192];
static size_t trace_len;
static bool tracing; /* only the reference run writes the trace */

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...) {
  if (!tracing || trace_len >= sizeof trace_buf - 1) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(trace_buf + trace_len, sizeof trace_buf - trace_len, fmt,
                    ap);
  va_end(ap);
  if (n > 0) trace_len += (size_t)n;
  if (trace_len > sizeof trace_buf - 1) trace_len = sizeof trace_buf - 1;
}

static void print_program(FILE *f) {
  const program *p = current_program;
  if (!p) return;
  fprintf(f, "program: %d input(s)%s\n", p->nin,
          p->second_order ? ", second order" : "");
  for (int i = 0; i < p->nin; i++) {
    fprintf(f, "  x%d shape (", i);
    for (int d = 0; d < p->ndim[i]; d++)
      fprintf(f, "%s%lld", d ? ", " : "", (long long)p->shape[i][d]);
    fprintf(f, ") values");
    for (int64_t e = 0; e < p->numel[i]; e++) fprintf(f, " %.17g", p->x[i][e]);
    fprintf(f, "\n");
  }
  fprintf(f, "reference run:\n%s", trace_buf);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "\nfuzz_ad: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n  recorded error: %s: %s\n", ad_strerror(ad_error()),
          ad_error_message());
  print_program(stderr);
  fflush(stderr);
  abort();
}

/* ------------------------------------------------------------------------
 * Domains: maps into an op's domain, so that its derivatives are smooth
 * ---------------------------------------------------------------------- */

enum { D_ANY, D_POS, D_GTM1, D_UNIT, D_TAN, D_CLAMP, D_SPD };

static ad_tensor *to_domain(ad_tensor *t, int d) {
  switch (d) {
    case D_POS: return ad_add_scalar(ad_softplus(t), 0.25);
    case D_GTM1: return ad_add_scalar(ad_softplus(t), -0.75);
    case D_UNIT: return ad_mul_scalar(ad_tanh(t), 0.9);
    case D_TAN: return ad_mul_scalar(ad_tanh(t), 1.2);
    case D_CLAMP: return ad_mul_scalar(ad_tanh(t), 3.0);
    case D_SPD: {
      /* A A^T + I: symmetric positive definite, for rank >= 2 (other
       * ranks pass through to meet the op's own shape check). */
      if (!t || ad_ndim(t) < 2) return t;
      int64_t r = ad_shape(t)[ad_ndim(t) - 2];
      return ad_add(ad_matmul(t, ad_transpose(t)), ad_eye(r));
    }
    default: return t;
  }
}

/* ------------------------------------------------------------------------
 * The op catalogue
 * ---------------------------------------------------------------------- */

typedef ad_tensor *(*unary_fn)(ad_tensor *);
typedef ad_tensor *(*binary_fn)(ad_tensor *, ad_tensor *);
typedef ad_tensor *(*reduce_fn)(ad_tensor *, int, const int *, bool);

static const struct {
  const char *name;
  unary_fn f;
  int domain;
} unary_ops[] = {
    {"ad_neg", ad_neg, D_ANY},         {"ad_exp", ad_exp, D_CLAMP},
    {"ad_log", ad_log, D_POS},         {"ad_log1p", ad_log1p, D_GTM1},
    {"ad_expm1", ad_expm1, D_CLAMP},   {"ad_sqrt", ad_sqrt, D_POS},
    {"ad_square", ad_square, D_ANY},   {"ad_abs", ad_abs, D_ANY},
    {"ad_sin", ad_sin, D_ANY},         {"ad_cos", ad_cos, D_ANY},
    {"ad_tan", ad_tan, D_TAN},         {"ad_asin", ad_asin, D_UNIT},
    {"ad_acos", ad_acos, D_UNIT},      {"ad_atan", ad_atan, D_ANY},
    {"ad_sinh", ad_sinh, D_CLAMP},     {"ad_cosh", ad_cosh, D_CLAMP},
    {"ad_tanh", ad_tanh, D_ANY},       {"ad_sigmoid", ad_sigmoid, D_ANY},
    {"ad_softplus", ad_softplus, D_ANY}, {"ad_relu", ad_relu, D_ANY},
    {"ad_erf", ad_erf, D_ANY},         {"ad_sign", ad_sign, D_ANY},
    {"ad_floor", ad_floor, D_ANY},     {"ad_transpose", ad_transpose, D_ANY},
    {"ad_inv", ad_inv, D_SPD},         {"ad_cholesky", ad_cholesky, D_SPD},
    {"ad_det", ad_det, D_SPD},         {"ad_logdet", ad_logdet, D_SPD},
    {"ad_stop_gradient", ad_stop_gradient, D_ANY},
    {"ad_sum_all", ad_sum_all, D_ANY},
};
#define NUNARY ((int)(sizeof unary_ops / sizeof unary_ops[0]))

static const struct {
  const char *name;
  binary_fn f;
  int da, db;
} binary_ops[] = {
    {"ad_add", ad_add, D_ANY, D_ANY},
    {"ad_sub", ad_sub, D_ANY, D_ANY},
    {"ad_mul", ad_mul, D_ANY, D_ANY},
    {"ad_div", ad_div, D_ANY, D_POS},
    {"ad_pow", ad_pow, D_POS, D_CLAMP},
    {"ad_maximum", ad_maximum, D_ANY, D_ANY},
    {"ad_minimum", ad_minimum, D_ANY, D_ANY},
    {"ad_atan2", ad_atan2, D_ANY, D_POS},
    {"ad_mod", ad_mod, D_ANY, D_POS},
    {"ad_less", ad_less, D_ANY, D_ANY},
    {"ad_greater", ad_greater, D_ANY, D_ANY},
    {"ad_equal", ad_equal, D_ANY, D_ANY},
    {"ad_matmul", ad_matmul, D_ANY, D_ANY},
    {"ad_solve", ad_solve, D_SPD, D_ANY},
};
#define NBINARY ((int)(sizeof binary_ops / sizeof binary_ops[0]))

static const struct {
  const char *name;
  reduce_fn f;
} reduce_ops[] = {
    {"ad_sum", ad_sum}, {"ad_mean", ad_mean}, {"ad_prod", ad_prod},
    {"ad_max", ad_max}, {"ad_min", ad_min},   {"ad_logsumexp", ad_logsumexp},
};
#define NREDUCE ((int)(sizeof reduce_ops / sizeof reduce_ops[0]))

/* Instruction kinds; the op byte picks one (unary and binary ops more
 * often). */
enum {
  K_UNARY, K_UNARY2, K_UNARY3, K_BINARY, K_BINARY2, K_SCALAR, K_REDUCE,
  K_AXIS, K_RESHAPE, K_PERMUTE, K_BROADCAST, K_SLICE, K_JOIN, K_GATHER,
  K_WHERE, K_CONV, K_POOL, K_CREATE, K_CUSTOM, K_CHECKPOINT, K_FUNCTIONAL,
  K_COUNT
};

/* An axis in -5..5, now and then an extreme one. */
static int axis_of(unsigned b) {
  if (b >= 250) {
    static const int extreme[] = {INT_MIN, INT_MAX, -9, 8, 9, -100};
    return extreme[b - 250];
  }
  return (int)(b % 11) - 5;
}

/* A small int64 in -6..6, now and then an extreme one. */
static int64_t i64_of(unsigned b) {
  if (b >= 248) {
    static const int64_t extreme[] = {INT64_MIN,     INT64_MAX, INT64_MIN + 1,
                                      INT64_MAX - 1, INT32_MIN, INT32_MAX,
                                      (int64_t)1 << 40, -((int64_t)1 << 40)};
    return extreme[b - 248];
  }
  return (int64_t)(b % 13) - 6;
}

/* A size for constructors: mostly 0..4, sometimes hostile (negative,
 * huge: the element count then overflows or is rejected before any
 * allocation, since the constructors below combine it with another huge
 * size). */
static int64_t size_of(unsigned b) {
  if (b >= 252) {
    static const int64_t hostile[] = {-1, INT64_MAX, (int64_t)1 << 62,
                                      INT64_MIN};
    return hostile[b - 252];
  }
  return (int64_t)(b % 5);
}

/* A fixed pseudo-random weight in +-[0.5, 1) (splitmix64). */
static double weight(uint64_t seed) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  double v = 0.5 + 0.5 * ldexp((double)(z >> 11), -53);
  return (z & 1u) ? -v : v;
}

/* ---- custom ops ---------------------------------------------------------- */

/* cube: y = x^3 with a VJP, a JVP or both (the user pointer says which
 * rules exist, through the op copy below). */
static ad_status cube_forward(ad_custom_ctx *c, ad_tensor *const *in,
                              ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_mul(ad_square(in[0]), in[0]);
  return out[0] ? AD_OK : ad_error();
}

static ad_status cube_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                          ad_tensor **gin, void *user) {
  (void)user;
  ad_tensor *x = ad_custom_input(c, 0);
  gin[0] = ad_mul(gout[0], ad_mul_scalar(ad_square(x), 3.0));
  return gin[0] ? AD_OK : ad_error();
}

static ad_status cube_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                          ad_tensor **tout, void *user) {
  (void)user;
  ad_tensor *x = ad_custom_input(c, 0);
  tout[0] = ad_mul(tin[0], ad_mul_scalar(ad_square(x), 3.0));
  return tout[0] ? AD_OK : ad_error();
}

/* pair: (a * sin(b), a + b) for a and b of the same shape, else the
 * forward callback fails with its own message. */
static ad_status pair_forward(ad_custom_ctx *c, ad_tensor *const *in,
                              ad_tensor **out, void *user) {
  (void)user;
  int na = ad_ndim(in[0]), nb = ad_ndim(in[1]);
  bool same = na == nb;
  for (int d = 0; same && d < na; d++)
    same = ad_shape(in[0])[d] == ad_shape(in[1])[d];
  if (!same) {
    /* Through a failing op so that the message has a name in it. */
    ad_tensor *r = ad_reshape(in[0], -1, NULL);
    (void)r;
    return ad_error() ? ad_error() : AD_ESHAPE;
  }
  ad_tensor *sb = ad_sin(in[1]);
  ad_status st = ad_custom_save(c, ad_cos(in[1]));
  out[0] = ad_mul(in[0], sb);
  out[1] = ad_add(in[0], in[1]);
  if (st != AD_OK) return st;
  return out[0] && out[1] ? AD_OK : ad_error();
}

static ad_status pair_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                          ad_tensor **gin, void *user) {
  (void)user;
  ad_tensor *a = ad_custom_input(c, 0), *b = ad_custom_input(c, 1);
  /* Recomputed from the inputs (not the saved cosine) so that higher
   * orders see it. */
  gin[0] = ad_add(ad_mul(gout[0], ad_sin(b)), gout[1]);
  gin[1] = ad_add(ad_mul(ad_mul(gout[0], a), ad_cos(b)), gout[1]);
  return gin[0] && gin[1] ? AD_OK : ad_error();
}

/* ---- functions for checkpointing and the functional API ----------------- */

static ad_tensor *fn_smooth(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_add(ad_mul(ad_sin(x), x), ad_square(x));
}

static ad_tensor *fn_scalar(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(ad_softplus(x), x));
}

static ad_tensor *fn_vector(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_mul(ad_tanh(x), x);
}

/* ------------------------------------------------------------------------
 * Running a program
 * ---------------------------------------------------------------------- */

typedef struct run {
  ad_tensor *v[MAX_VALUES];
  int nv;
  uint32_t ok;                /* bit i: instruction i gave a value */
  bool include[MAX_VALUES];   /* in the loss (set by the reference run) */
  bool deciding;              /* this is the reference run */
  bool stopped;               /* ad_stop_gradient gave a value: finite
                                 differences see what AD must not */
  bool jumps;                 /* an op with jumps gave a value (mod, floor,
                                 sign, comparisons, argmax, where) */
  bool huge;                  /* some value is huge or not finite */
  double cond;                /* the largest condition number of a matrix
                                 that inv, det, logdet, cholesky or solve
                                 got (1 without one) */
  uint32_t expect_ok;         /* a replay: the reference's ok */
  ad_status div_code;         /* the first op that failed in a replay */
  char div_msg[256];          /* but not in the reference, and why */
} run;

static ad_tensor *pick(const run *r, unsigned b) { return r->v[b % r->nv]; }

static void shape_text(const ad_tensor *t, char *buf, size_t n) {
  if (!t) {
    snprintf(buf, n, "NULL");
    return;
  }
  size_t used = (size_t)snprintf(buf, n, "(");
  for (int d = 0; d < t->ndim && used < n; d++)
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "",
                             (long long)t->shape[d]);
  if (used < n) snprintf(buf + used, n - used, ")");
}

/* Executes instruction `in`; *name receives the public op whose error a
 * failure must name ("ad_" when several ops may fail). */
static ad_tensor *execute(const instr *in, const run *r, const char **name,
                          char *what, size_t what_n, ad_tensor **matrix) {
  ad_tensor *a = pick(r, in->a), *b = pick(r, in->b), *c = pick(r, in->c);
  const uint8_t *k = in->k;
  bool safe = k[0] & 1u;
  unsigned kind = in->op % K_COUNT;
  switch (kind) {
    case K_UNARY:
    case K_UNARY2:
    case K_UNARY3: {
      int i = (int)((k[0] >> 1) % NUNARY);
      *name = unary_ops[i].name;
      snprintf(what, what_n, "%s%s(v%d)", unary_ops[i].name,
               safe ? "[safe]" : "", (int)(in->a % r->nv));
      ad_tensor *arg = safe ? to_domain(a, unary_ops[i].domain) : a;
      /* The domain map may fail first (ad_eye of a huge size). */
      if (safe && unary_ops[i].domain != D_ANY) *name = "ad_";
      if (unary_ops[i].domain == D_SPD) *matrix = arg;
      return unary_ops[i].f(arg);
    }
    case K_BINARY:
    case K_BINARY2: {
      int i = (int)((k[0] >> 1) % NBINARY);
      *name = binary_ops[i].name;
      snprintf(what, what_n, "%s%s(v%d, v%d)", binary_ops[i].name,
               safe ? "[safe]" : "", (int)(in->a % r->nv),
               (int)(in->b % r->nv));
      ad_tensor *arg = safe ? to_domain(a, binary_ops[i].da) : a;
      if (safe && (binary_ops[i].da != D_ANY || binary_ops[i].db != D_ANY))
        *name = "ad_";
      if (binary_ops[i].da == D_SPD) *matrix = arg;
      return binary_ops[i].f(arg, safe ? to_domain(b, binary_ops[i].db) : b);
    }
    case K_SCALAR: {
      double s = ((double)k[2] - 128.0) / 16.0;
      static const double powers[] = {-2, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 2.5};
      switch ((k[0] >> 1) % 4) {
        case 0:
          *name = "ad_add_scalar";
          snprintf(what, what_n, "ad_add_scalar(v%d, %g)",
                   (int)(in->a % r->nv), s);
          return ad_add_scalar(a, s);
        case 1:
          *name = "ad_mul_scalar";
          snprintf(what, what_n, "ad_mul_scalar(v%d, %g)",
                   (int)(in->a % r->nv), s);
          return ad_mul_scalar(a, s);
        case 2: {
          double p = powers[k[2] % 10];
          *name = safe ? "ad_" : "ad_pow_scalar";
          snprintf(what, what_n, "ad_pow_scalar%s(v%d, %g)",
                   safe ? "[safe]" : "", (int)(in->a % r->nv), p);
          return ad_pow_scalar(safe ? to_domain(a, D_POS) : a, p);
        }
        default: {
          double lo = ((double)k[2] - 128.0) / 32.0;
          double hi = ((double)k[3] - 96.0) / 32.0;
          if (k[4] == 255) hi = NAN;
          *name = "ad_clip";
          snprintf(what, what_n, "ad_clip(v%d, %g, %g)",
                   (int)(in->a % r->nv), lo, hi);
          return ad_clip(a, lo, hi);
        }
      }
    }
    case K_REDUCE: {
      int i = (int)((k[0] >> 1) % NREDUCE);
      int naxes = (int)(k[1] % 3);
      if (k[1] == 255) naxes = AD_MAX_DIMS + 1;
      int axes[AD_MAX_DIMS + 1] = {axis_of(k[2]), axis_of(k[3]), 0};
      bool keep = k[4] & 1u;
      *name = reduce_ops[i].name;
      snprintf(what, what_n, "%s(v%d, naxes %d: %d %d, keepdims %d)",
               reduce_ops[i].name, (int)(in->a % r->nv), naxes, axes[0],
               axes[1], (int)keep);
      return reduce_ops[i].f(a, naxes, axes, keep);
    }
    case K_AXIS: {
      int axis = axis_of(k[2]);
      static const struct {
        const char *name;
        ad_tensor *(*f)(ad_tensor *, int);
      } axis_ops[] = {{"ad_softmax", ad_softmax},
                      {"ad_log_softmax", ad_log_softmax},
                      {"ad_argmax", ad_argmax},
                      {"ad_expand_dims", ad_expand_dims},
                      {"ad_squeeze", ad_squeeze}};
      int i = (int)((k[0] >> 1) % 5);
      *name = axis_ops[i].name;
      snprintf(what, what_n, "%s(v%d, axis %d)", axis_ops[i].name,
               (int)(in->a % r->nv), axis);
      return axis_ops[i].f(a, axis);
    }
    case K_RESHAPE: {
      *name = "ad_reshape";
      int64_t shape[AD_MAX_DIMS + 1];
      int nd;
      if (!a || k[1] >= 200) {
        /* Arbitrary target, usually invalid. */
        nd = (int)(k[2] % 10);
        for (int d = 0; d < nd && d < AD_MAX_DIMS + 1; d++)
          shape[d] = d < 4 ? i64_of(k[2 + (d % 4)] ^ (uint8_t)(d * 37))
                           : (int64_t)(d % 3);
        if (nd > AD_MAX_DIMS + 1) nd = AD_MAX_DIMS + 1;
      } else {
        /* The same count in 1..4 axes: numel at one axis, ones
         * elsewhere, a factor 2 split off when even, maybe -1. */
        int64_t n = ad_numel(a);
        nd = 1 + (int)(k[2] % 4);
        for (int d = 0; d < nd; d++) shape[d] = 1;
        int at = (int)(k[3] % (unsigned)nd);
        shape[at] = n;
        if (nd > 1 && n % 2 == 0 && n > 0 && (k[4] & 1u)) {
          shape[at] = n / 2;
          shape[(at + 1) % nd] = 2;
        }
        if (k[4] & 2u) shape[at] = -1;
      }
      char buf[128];
      size_t used = 0;
      for (int d = 0; d < nd && used < sizeof buf; d++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%lld",
                                 d ? ", " : "", (long long)shape[d]);
      if (!nd) buf[0] = '\0';
      snprintf(what, what_n, "ad_reshape(v%d, (%s))", (int)(in->a % r->nv),
               buf);
      return ad_reshape(a, nd, shape);
    }
    case K_PERMUTE: {
      *name = "ad_permute";
      int nd = a ? ad_ndim(a) : 0;
      int perm[AD_MAX_DIMS];
      for (int d = 0; d < nd; d++) perm[d] = d;
      for (int d = nd - 1; d > 0; d--) {
        int j = (int)(k[1 + (d % 5)] % (unsigned)(d + 1));
        int t = perm[d];
        perm[d] = perm[j];
        perm[j] = t;
      }
      if (nd > 0 && k[0] >= 224) perm[k[2] % (unsigned)nd] = axis_of(k[3]);
      snprintf(what, what_n, "ad_permute(v%d, [%d %d %d %d])",
               (int)(in->a % r->nv), nd > 0 ? perm[0] : -1,
               nd > 1 ? perm[1] : -1, nd > 2 ? perm[2] : -1,
               nd > 3 ? perm[3] : -1);
      return ad_permute(a, perm);
    }
    case K_BROADCAST: {
      *name = "ad_broadcast_to";
      int64_t shape[AD_MAX_DIMS + 1];
      int nd = 0;
      if (a && k[1] < 224) {
        /* A valid target, usually: new leading axes, size-1 axes
         * stretched (or emptied). */
        int lead = (int)(k[2] % 3);
        for (int d = 0; d < lead; d++) shape[nd++] = 1 + (int64_t)(k[3 + d] % 3);
        for (int d = 0; d < ad_ndim(a) && nd < AD_MAX_DIMS + 1; d++) {
          int64_t s = ad_shape(a)[d];
          if (s == 1) s = (int64_t)((k[4] >> (d % 8)) & 1u) * (1 + k[5] % 3);
          shape[nd++] = s;
        }
      } else {
        nd = (int)(k[2] % 10);
        for (int d = 0; d < nd; d++) shape[d] = i64_of(k[3 + d % 3]) % 4;
      }
      snprintf(what, what_n, "ad_broadcast_to(v%d, rank %d)",
               (int)(in->a % r->nv), nd);
      return ad_broadcast_to(a, nd, shape);
    }
    case K_SLICE: {
      *name = "ad_slice";
      int axis = axis_of(k[1]);
      int64_t start = i64_of(k[2]), stop = i64_of(k[3]);
      int64_t step = k[4] < 240 ? (int64_t)(k[4] % 7) - 3 : i64_of(k[4]);
      if (k[5] & 1u) stop = INT64_MAX;
      snprintf(what, what_n, "ad_slice(v%d, axis %d, %lld:%lld:%lld)",
               (int)(in->a % r->nv), axis, (long long)start, (long long)stop,
               (long long)step);
      return ad_slice(a, axis, start, stop, step);
    }
    case K_JOIN: {
      ad_tensor *parts[3] = {a, b, c};
      int n = 1 + (int)(k[1] % 3);
      int axis = axis_of(k[2]);
      bool stack = k[0] & 2u;
      *name = stack ? "ad_stack" : "ad_concat";
      snprintf(what, what_n, "%s(%d of v%d v%d v%d, axis %d)", *name, n,
               (int)(in->a % r->nv), (int)(in->b % r->nv),
               (int)(in->c % r->nv), axis);
      return stack ? ad_stack(n, parts, axis) : ad_concat(n, parts, axis);
    }
    case K_GATHER: {
      *name = "ad_gather";
      int axis = axis_of(k[1]);
      int64_t idx[4];
      int64_t n = (int64_t)(k[2] % 5);
      for (int j = 0; j < n; j++) idx[j] = i64_of(k[2 + j]) % 5;
      if (k[0] >= 240 && n > 0) idx[0] = i64_of(k[3]);
      snprintf(what, what_n, "ad_gather(v%d, axis %d, %lld indices)",
               (int)(in->a % r->nv), axis, (long long)n);
      return ad_gather(a, axis, idx, n);
    }
    case K_WHERE: {
      *name = "ad_where";
      snprintf(what, what_n, "ad_where(v%d, v%d, v%d)", (int)(in->a % r->nv),
               (int)(in->b % r->nv), (int)(in->c % r->nv));
      /* A comparison as the condition, usually. */
      ad_tensor *cond = (k[1] & 1u) ? ad_greater(a, b) : a;
      if (!cond && (k[1] & 1u)) *name = "ad_";
      return ad_where(cond, b, c);
    }
    case K_CONV: {
      *name = "ad_conv2d";
      int sh = (int)(k[1] % 4), sw = (int)(k[2] % 4);
      int ph = (int)(k[3] % 4) - 1, pw = (int)(k[4] % 4) - 1;
      /* Hostile values that must be rejected (a huge padding would be a
       * valid request for a huge output, so it is left out). */
      if (k[5] >= 250) ph = INT_MIN;
      if (k[5] == 249) sh = INT_MIN;
      snprintf(what, what_n, "ad_conv2d(v%d, v%d, %d, %d, %d, %d)",
               (int)(in->a % r->nv), (int)(in->b % r->nv), sh, sw, ph, pw);
      return ad_conv2d(a, b, sh, sw, ph, pw);
    }
    case K_POOL: {
      *name = "ad_max_pool2d";
      int kh = (int)(k[1] % 4), kw = (int)(k[2] % 4);
      int sh = (int)(k[3] % 4), sw = (int)(k[4] % 4);
      if (k[5] >= 250) kh = INT_MAX;
      snprintf(what, what_n, "ad_max_pool2d(v%d, %d, %d, %d, %d)",
               (int)(in->a % r->nv), kh, kw, sh, sw);
      return ad_max_pool2d(a, kh, kw, sh, sw);
    }
    case K_CREATE: {
      int64_t shape[AD_MAX_DIMS + 1];
      int nd = (int)(k[1] % 4);
      if (k[1] >= 252) nd = k[1] == 255 ? AD_MAX_DIMS + 1 : -1;
      for (int d = 0; d < nd && d < AD_MAX_DIMS + 1; d++)
        shape[d] = size_of(k[2 + d % 4]);
      /* A hostile size is paired with a huge one so that nothing is
       * allocated: the count overflows or is negative.  Or, now and then,
       * an axis of size 0 makes a valid empty tensor whose other axes are
       * huge (2^61 and more: any non-empty result with such an axis is
       * too large to allocate and is refused before allocating). */
      bool empty_huge = nd >= 2 && (k[4] & 0xf0u) == 0xf0u;
      for (int d = 0; d < nd; d++)
        if (shape[d] > 4 || shape[d] < 0 || empty_huge) {
          for (int e = 0; e < nd; e++)
            if (empty_huge)
              shape[e] = e == (int)(k[4] % (unsigned)nd)
                             ? 0
                             : ((int64_t)1 << 61) + (int64_t)(k[2 + e % 4] % 3);
            else if (shape[e] >= 0 && shape[e] <= 4)
              shape[e] = INT64_MAX / 2;
          if (nd == 1) shape[0] = shape[0] < 0 ? -1 : INT64_MAX;
          break;
        }
      const int64_t *sp = nd > 0 ? shape : NULL;
      ad_seed(k[5]);
      switch ((k[0] >> 1) % 8) {
        case 0:
          *name = "ad_zeros";
          snprintf(what, what_n, "ad_zeros(rank %d)", nd);
          return ad_zeros(nd, sp);
        case 1:
          *name = "ad_ones";
          snprintf(what, what_n, "ad_ones(rank %d)", nd);
          return ad_ones(nd, sp);
        case 2:
          *name = "ad_full";
          snprintf(what, what_n, "ad_full(rank %d)", nd);
          return ad_full(nd, sp, ((double)k[5] - 128) / 8);
        case 3:
          *name = "ad_rand_uniform";
          snprintf(what, what_n, "ad_rand_uniform(rank %d)", nd);
          return ad_rand_uniform(nd, sp, -1.0, (k[4] & 1u) ? 1.0 : -1.0);
        case 4:
          *name = "ad_rand_normal";
          snprintf(what, what_n, "ad_rand_normal(rank %d)", nd);
          return ad_rand_normal(nd, sp, 0.0, (k[4] & 1u) ? 1.0 : -1.0);
        case 5: {
          *name = "ad_eye";
          int64_t n = (int64_t)(k[2] % 5) - 1;
          snprintf(what, what_n, "ad_eye(%lld)", (long long)n);
          return ad_eye(n);
        }
        case 6: {
          *name = "ad_arange";
          double start = ((double)k[2] - 128) / 16, stop = ((double)k[3] - 128) / 16;
          double step = ((double)k[4] - 128) / 64;
          if (k[5] == 255) step = INFINITY;
          snprintf(what, what_n, "ad_arange(%g, %g, %g)", start, stop, step);
          if (step != 0 && isfinite(step) && fabs((stop - start) / step) > 64)
            step = (stop - start) / 64;
          return ad_arange(start, stop, step);
        }
        default: {
          *name = "ad_linspace";
          int64_t n = (int64_t)(k[2] % 7) - 1;
          snprintf(what, what_n, "ad_linspace(%lld)", (long long)n);
          return ad_linspace(-1.0, ((double)k[3] - 128) / 16, n);
        }
      }
    }
    case K_CUSTOM: {
      if (k[0] & 2u) {
        static const ad_custom_op pair = {"fuzz_pair", 2, 2, pair_forward,
                                          pair_vjp, NULL};
        ad_tensor *ins[2] = {a, b}, *outs[2] = {NULL, NULL};
        *name = "ad_";
        snprintf(what, what_n, "fuzz_pair(v%d, v%d)[%d]",
                 (int)(in->a % r->nv), (int)(in->b % r->nv),
                 (int)(k[1] & 1u));
        ad_status st = ad_custom_apply(&pair, NULL, ins, outs);
        if (st != AD_OK) {
          if (!a || !b) *name = "ad_custom_apply";
          return NULL;
        }
        return outs[k[1] & 1u];
      }
      /* cube with the VJP only, the JVP only, or both. */
      int rules = 1 + (int)(k[1] % 3);
      ad_custom_op cube = {"fuzz_cube", 1, 1, cube_forward,
                           (rules & 1) ? cube_vjp : NULL,
                           (rules & 2) ? cube_jvp : NULL};
      ad_tensor *out = NULL;
      *name = "ad_";
      snprintf(what, what_n, "fuzz_cube[rules %d](v%d)", rules,
               (int)(in->a % r->nv));
      if (ad_custom_apply(&cube, NULL, &a, &out) != AD_OK) return NULL;
      return out;
    }
    case K_CHECKPOINT:
      *name = "ad_";
      snprintf(what, what_n, "ad_checkpoint(smooth, v%d)",
               (int)(in->a % r->nv));
      return ad_checkpoint(fn_smooth, NULL, a);
    case K_FUNCTIONAL:
    default:
      *name = "ad_";
      switch ((k[0] >> 1) % 5) {
        case 0:
          snprintf(what, what_n, "ad_grad(scalar, v%d)", (int)(in->a % r->nv));
          return ad_grad(fn_scalar, NULL, a);
        case 1:
          snprintf(what, what_n, "ad_jvp(vector, v%d, v%d)",
                   (int)(in->a % r->nv), (int)(in->b % r->nv));
          return ad_jvp(fn_vector, NULL, a, b, NULL);
        case 2:
          snprintf(what, what_n, "ad_vjp(vector, v%d, v%d)",
                   (int)(in->a % r->nv), (int)(in->b % r->nv));
          return ad_vjp(fn_vector, NULL, a, b, NULL);
        case 3:
          snprintf(what, what_n, "ad_hvp(scalar, v%d, v%d)",
                   (int)(in->a % r->nv), (int)(in->b % r->nv));
          return ad_hvp(fn_scalar, NULL, a, b);
        default:
          /* Jacobians of small inputs only: the result has
           * numel(x)^2 elements. */
          snprintf(what, what_n, "ad_jacobian(vector, v%d)",
                   (int)(in->a % r->nv));
          if (a && ad_numel(a) > 12) return ad_grad(fn_scalar, NULL, a);
          return (k[1] & 1u) ? ad_jacfwd(fn_vector, NULL, a)
                             : ad_jacobian(fn_vector, NULL, a);
      }
  }
}

/* Checks the error contract around one call (see the file comment). */
static void check_call(const char *what, const char *name, ad_tensor *res,
                       ad_status e0, unsigned long c0, const char *m0,
                       bool replay) {
  ad_status e = ad_error();
  const char *m = ad_error_message();
  if (res) {
    if (e != e0 || ad__error_count() != c0 || strcmp(m, m0) != 0)
      die("%s succeeded but changed the recorded error (was %s: \"%s\")",
          what, ad_strerror(e0), m0);
    if (res->ndim < 0 || res->ndim > AD_MAX_DIMS)
      die("%s returned rank %d", what, res->ndim);
    /* The count: 0 with a size-0 axis (the others may be huge), else the
     * product, which must fit. */
    int64_t n = 1;
    bool empty = false, overflow = false;
    for (int d = 0; d < res->ndim; d++) {
      if (res->shape[d] < 0) die("%s returned a negative size", what);
      empty |= res->shape[d] == 0;
    }
    for (int d = 0; d < res->ndim && !empty; d++)
      overflow |= __builtin_mul_overflow(n, res->shape[d], &n);
    if (empty) n = 0;
    if (overflow) die("%s returned a shape whose count overflows", what);
    if (n != res->numel) die("%s returned numel %lld for its shape", what,
                             (long long)res->numel);
    return;
  }
  if (ad__error_count() == c0) {
    /* No new error: only a NULL operand from an earlier failure may do
     * that, keeping that failure's error. */
    if (e0 == AD_OK) die("%s returned NULL without recording an error", what);
    if (e != e0 || strcmp(m, m0) != 0)
      die("%s changed the first error without counting one", what);
    return;
  }
  if (e == AD_OK) die("%s failed with AD_OK recorded", what);
  /* AD_ENOMEM is fair only for a huge request (an empty tensor with huge
   * axes reduced over its empty one, say), which the fuzz run's
   * ASAN_OPTIONS max_allocation_size_mb turns into a failed malloc. */
  if (e == AD_EINTERNAL) die("%s failed with %s", what, ad_strerror(e));
  if (!m[0]) die("%s failed with an empty message", what);
  /* The message names the op: this call's, or for instructions made of
   * several calls (name "ad_") some libad op or the custom op.  In a
   * replay under a tape or level a derivative rule may fail (see
   * is_limitation), naming the op inside the rule. */
  if (replay) name = "ad_";
  /* ad_sum_all is ad_sum over every axis and reports as such. */
  if (strcmp(name, "ad_sum_all") == 0) name = "ad_sum";
  if (strstr(m, name) == NULL && strstr(m, "fuzz_") == NULL)
    die("%s failed with a message that does not name %s", what, name);
}

/* The condition number (infinity norm) of the square matrices in t, the
 * largest of a batch; INFINITY when one is singular.  Called in the
 * reference run after the call it describes, keeping the recorded
 * error. */
static double condition(ad_tensor *t) {
  int nd = ad_ndim(t);
  if (nd < 2 || ad_numel(t) == 0 || ad_shape(t)[nd - 1] != ad_shape(t)[nd - 2])
    return 1;
  ad_status code = ad_error();
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", ad_error_message());
  double c = INFINITY;
  ad_scope_begin();
  ad_tensor *inv = ad_inv(t);
  if (inv) {
    int ax[1] = {-1};
    ad_tensor *n1 = ad_max(ad_sum(ad_abs(t), 1, ax, false), 0, NULL, false);
    ad_tensor *n2 = ad_max(ad_sum(ad_abs(inv), 1, ax, false), 0, NULL, false);
    c = n1 && n2 ? ad_item(n1) * ad_item(n2) : INFINITY;
    if (!isfinite(c)) c = INFINITY;
  }
  ad_scope_end();
  if (code == AD_OK)
    ad_error_clear();
  else
    ad__error(code, "%s", msg);
  return c;
}

/* Runs the program on inputs xs, returning the loss (a scalar owned by the
 * current scope) or NULL when no value entered it. */
static ad_tensor *run_program(const program *p, ad_tensor *const *xs,
                              run *r) {
  r->nv = 0;
  r->stopped = false;
  r->jumps = false;
  r->huge = false;
  r->cond = 1;
  r->div_code = AD_OK;
  r->div_msg[0] = '\0';
  r->ok = 0;
  ad_error_clear();
  for (int i = 0; i < p->nin; i++) {
    r->v[r->nv++] = xs[i];
    if (tracing) {
      char s[96];
      shape_text(xs[i], s, sizeof s);
      trace("  v%d = x%d %s\n", i, i, s);
    }
  }
  for (int i = 0; i < p->n; i++) {
    const instr *in = &p->code[i];
    ad_status e0 = ad_error();
    unsigned long c0 = ad__error_count();
    char m0[1024];
    snprintf(m0, sizeof m0, "%s", ad_error_message());
    const char *name = "ad_";
    char what[160] = "";
    ad_tensor *matrix = NULL;
    ad_tensor *res = execute(in, r, &name, what, sizeof what, &matrix);
    check_call(what, name, res, e0, c0, m0, !r->deciding);
    if (r->deciding && res && matrix) {
      double cond = condition(matrix);
      if (!(cond <= r->cond)) r->cond = cond;
    }
    if (res && ad_numel(res) > MAX_NUMEL) {
      /* Dropped, with an error of our own so that the NULL it leaves
       * behaves like a failure's (later ops keep this first error). */
      res = NULL;
      ad__error(AD_EINVAL, "fuzz_ad: the result of %s is dropped (over %d "
                "elements)", what, MAX_NUMEL);
    }
    if (tracing) {
      char s[96];
      shape_text(res, s, sizeof s);
      trace("  v%d = %s -> %s%s%s\n", r->nv, what, s, res ? "" : ": ",
            res ? "" : ad_error_message());
    }
    if (res) r->ok |= 1u << i;
    if (!res && !r->deciding && (r->expect_ok >> i & 1u) && !r->div_code) {
      r->div_code = ad_error();
      snprintf(r->div_msg, sizeof r->div_msg, "%s", ad_error_message());
    }
    if (res && strcmp(name, "ad_stop_gradient") == 0) r->stopped = true;
    if (res) {
      static const char *const jumpy[] = {"ad_mod", "ad_floor", "ad_sign",
                                          "ad_less", "ad_greater",
                                          "ad_equal", "ad_argmax",
                                          "ad_where"};
      for (size_t j = 0; j < sizeof jumpy / sizeof *jumpy; j++)
        if (strcmp(name, jumpy[j]) == 0) r->jumps = true;
    }
    r->v[r->nv++] = res;
  }
  /* The loss: sum over the values in it of <v, W> with fixed weights. */
  ad_error_clear();
  ad_tensor *loss = NULL;
  for (int j = 0; j < r->nv; j++) {
    ad_tensor *t = r->v[j];
    if (r->deciding) {
      bool in = t != NULL;
      double vals[MAX_NUMEL];
      if (in && ad_read(t, vals, ad_numel(t)) != AD_OK) die("ad_read failed");
      for (int64_t e = 0; in && e < ad_numel(t); e++)
        in = isfinite(vals[e]) && fabs(vals[e]) <= MAX_MAGNITUDE;
      r->include[j] = in;
      if (t && !in) r->huge = true;
    }
    if (!r->include[j]) continue;
    /* A replay that failed where the reference did not (at a shifted
     * point, a value-dependent failure): the callers compare masks. */
    if (!t) return NULL;
    int64_t n = ad_numel(t);
    double w[MAX_NUMEL];
    for (int64_t e = 0; e < n; e++) w[e] = weight((uint64_t)j * 7919 + (uint64_t)e);
    ad_tensor *wt = ad_tensor_new(ad_ndim(t), ad_shape(t), w);
    ad_tensor *term = ad_sum_all(ad_mul(t, wt));
    loss = loss ? ad_add(loss, term) : term;
    if (!loss) die("building the loss failed");
  }
  return loss;
}

/* ------------------------------------------------------------------------
 * Evaluations in every mode
 * ---------------------------------------------------------------------- */

typedef struct point {
  double x[MAX_INPUTS][MAX_IN_ELEMS];
} point;

static void make_inputs(const program *p, const point *pt, ad_tensor **xs) {
  for (int i = 0; i < p->nin; i++) {
    xs[i] = ad_tensor_new(p->ndim[i], p->shape[i], pt->x[i]);
    if (!xs[i]) die("creating input %d failed", i);
  }
}

static void make_tangents(const program *p, const point *dir, ad_tensor **ts) {
  make_inputs(p, dir, ts);
}

static double item(ad_tensor *t, const char *what) {
  if (!t) die("%s: NULL", what);
  double v = ad_item(t);
  if (ad_error() != AD_OK) die("%s: ad_item failed", what);
  return v;
}

/* <g_i, d_i> summed over the inputs, and the sum of |g_i| |d_i|. */
static double pair_dot(const program *p, ad_tensor *const *g, const point *d,
                       double *abs_sum) {
  double s = 0, a = 0;
  for (int i = 0; i < p->nin; i++) {
    if (!g[i]) die("gradient %d is NULL", i);
    if (ad_ndim(g[i]) != p->ndim[i]) die("gradient %d has the wrong rank", i);
    for (int dd = 0; dd < p->ndim[i]; dd++)
      if (ad_shape(g[i])[dd] != p->shape[i][dd])
        die("gradient %d has the wrong shape", i);
    double buf[MAX_IN_ELEMS];
    if (ad_read(g[i], buf, p->numel[i]) != AD_OK) die("reading a gradient");
    for (int64_t e = 0; e < p->numel[i]; e++) {
      s += buf[e] * d->x[i][e];
      a += fabs(buf[e] * d->x[i][e]);
    }
  }
  if (abs_sum) *abs_sum = a;
  return s;
}

typedef struct reference {
  uint32_t ok;
  bool stopped, jumps, huge;
  double cond;
  double loss;
  bool include[MAX_VALUES];
} reference;

/* Known limitations, which end the derivative checks of a program instead
 * of counting as findings:
 *   - derivatives of det (and of logdet, inv, solve) are written with
 *     inv(A), so at an exactly singular matrix (a broadcast row, say)
 *     where det itself is fine (0) they fail with AD_EINVAL "singular";
 *   - an empty tensor whose other axes are huge has derivatives whose
 *     intermediates are not empty (softmax's rule sums over the empty
 *     axis with keepdims: (2^61, 2^61, 1)) and so too large to exist:
 *     AD_EINVAL "overflows int64" or "too large", or AD_ENOMEM. */
static bool skip_derivatives;
static unsigned long long limitations;

static bool is_limitation(ad_status code, const char *msg) {
  if (code == AD_ENOMEM) return true;
  return code == AD_EINVAL &&
         (strstr(msg, "singular") || strstr(msg, "overflows int64") ||
          strstr(msg, "too large"));
}

/* A derivative pass failed: a known limitation, or a finding. */
static void pass_failed(const char *what) {
  if (is_limitation(ad_error(), ad_error_message())) {
    skip_derivatives = true;
    return;
  }
  die("%s failed", what);
}

static run replay(const reference *ref) {
  run r = {.deciding = false, .expect_ok = ref->ok};
  memcpy(r.include, ref->include, sizeof r.include);
  return r;
}

/* A replay at the reference point must fail and succeed exactly where the
 * reference did and give the same loss.  False (with skip_derivatives
 * set) when an op failed by a known limitation of its derivative rules. */
/* Set while replaying at a shifted point (ad_jumps_here): the values
 * differ from the reference's there, and a failure is no finding. */
static bool off_reference;

static bool same_as_reference(const reference *ref, const run *r,
                              ad_tensor *loss, const char *mode) {
  if (off_reference) return r->ok == ref->ok && loss;
  if (r->ok != ref->ok) {
    if (is_limitation(r->div_code, r->div_msg)) {
      skip_derivatives = true;
      return false;
    }
    die("%s: ops failed differently from the plain run (mask %x vs %x; "
        "first: %s: %s)",
        mode, r->ok, ref->ok, ad_strerror(r->div_code), r->div_msg);
  }
  double v = item(loss, mode);
  if (memcmp(&v, &ref->loss, sizeof v) != 0)
    die("%s: the loss is %.17g, the plain run gave %.17g", mode, v,
        ref->loss);
  return true;
}

/* The plain loss at pt; false when an op's success changed (a value-
 * dependent failure such as a singular matrix) or the loss is not
 * finite. */
static bool plain_loss(const program *p, const reference *ref,
                       const point *pt, double *out) {
  ad_scope_begin();
  ad_tensor *xs[MAX_INPUTS];
  make_inputs(p, pt, xs);
  run r = replay(ref);
  bool ok = true;
  ad_tensor *loss = run_program(p, xs, &r);
  if (r.ok != ref->ok) ok = false;
  if (ok) {
    *out = item(loss, "plain loss");
    ok = isfinite(*out);
  }
  ad_scope_end();
  ad_error_clear();
  return ok;
}

/* Reverse mode: the gradient at pt, dotted with d; the sum of |terms| in
 * *abs_sum.  check: pt is the reference point, so the replay must match
 * the reference; otherwise *ok says whether the replay could be used. */
static double rev_dot(const program *p, const reference *ref,
                      const point *pt, const point *d, bool check,
                      double *abs_sum, bool *ok) {
  ad_scope_begin();
  ad_tensor *xs[MAX_INPUTS], *g[MAX_INPUTS];
  make_inputs(p, pt, xs);
  ad_tape *tape = ad_tape_begin(0);
  if (!tape) die("ad_tape_begin failed");
  for (int i = 0; i < p->nin; i++)
    if (ad_tape_watch(tape, xs[i]) != AD_OK) die("ad_tape_watch failed");
  run r = replay(ref);
  ad_tensor *loss = run_program(p, xs, &r);
  if (ad_tape_end(tape) != AD_OK) die("ad_tape_end failed");
  double s = NAN;
  *ok = check ? same_as_reference(ref, &r, loss, "reverse")
              : r.ok == ref->ok && loss && isfinite(ad_item(loss));
  if (*ok) {
    ad_error_clear();
    if (ad_tape_gradients(tape, loss, NULL, p->nin, xs, g,
                          AD_UNCONNECTED_ZERO) != AD_OK) {
      pass_failed("reverse: ad_tape_gradients");
      *ok = false;
    } else {
      s = pair_dot(p, g, d, abs_sum);
    }
  }
  ad_tape_free(tape);
  ad_scope_end();
  ad_error_clear();
  return s;
}

static double fwd_dot(const program *p, const reference *ref,
                      const point *pt, const point *v) {
  ad_scope_begin();
  ad_tensor *xs[MAX_INPUTS], *ts[MAX_INPUTS];
  make_inputs(p, pt, xs);
  make_tangents(p, v, ts);
  ad_fwd *acc = ad_fwd_begin(p->nin, xs, ts);
  if (!acc) die("ad_fwd_begin failed");
  run r = replay(ref);
  ad_tensor *loss = run_program(p, xs, &r);
  double s = NAN;
  if (same_as_reference(ref, &r, loss, "forward")) {
    ad_error_clear();
    s = item(ad_fwd_jvp(acc, loss), "forward: ad_fwd_jvp");
  }
  if (ad_fwd_end(acc) != AD_OK) die("forward: ad_fwd_end failed");
  ad_scope_end();
  ad_error_clear();
  return s;
}

/* u^T H v in four nestings. */
static double hvp_fwd_rev(const program *p, const reference *ref,
                          const point *pt, const point *v, const point *u) {
  ad_scope_begin();
  ad_tensor *xs[MAX_INPUTS], *ts[MAX_INPUTS], *g[MAX_INPUTS], *hv[MAX_INPUTS];
  make_inputs(p, pt, xs);
  make_tangents(p, v, ts);
  ad_fwd *acc = ad_fwd_begin(p->nin, xs, ts);
  ad_tape *tape = ad_tape_begin(0);
  if (!acc || !tape) die("fwd-rev: begin failed");
  for (int i = 0; i < p->nin; i++) ad_tape_watch(tape, xs[i]);
  run r = replay(ref);
  ad_tensor *loss = run_program(p, xs, &r);
  bool ok = same_as_reference(ref, &r, loss, "fwd-rev");
  ad_error_clear();
  if (ad_tape_end(tape) != AD_OK) die("fwd-rev: ad_tape_end failed");
  double s = NAN;
  if (ok && ad_tape_gradients(tape, loss, NULL, p->nin, xs, g,
                              AD_UNCONNECTED_ZERO) != AD_OK) {
    pass_failed("fwd-rev: ad_tape_gradients");
    ok = false;
  }
  if (ok && ad_fwd_jvps(acc, p->nin, g, hv, AD_UNCONNECTED_ZERO) != AD_OK)
    die("fwd-rev: ad_fwd_jvps failed");
  if (ok) s = pair_dot(p, hv, u, NULL);
  ad_tape_free(tape);
  if (ad_fwd_end(acc) != AD_OK) die("fwd-rev: ad_fwd_end failed");
  ad_scope_end();
  ad_error_clear();
  return s;
}

/* <g, w> as a tensor, w given as a point. */
static ad_tensor *dot_tensor(const program *p, ad_tensor *const *g,
                             const point *w) {
  ad_tensor *s = NULL;
  for (int i = 0; i < p->nin; i++) {
    ad_tensor *wt = ad_tensor_new(p->ndim[i], p->shape[i], w->x[i]);
    ad_tensor *term = ad_sum_all(ad_mul(g[i], wt));
    s = s ? ad_add(s, term) : term;
  }
  return s;
}

static double hvp_rev_rev(const program *p, const reference *ref,
                          const point *pt, const point *v, const point *u) {
  ad_scope_begin();
  ad_tensor *xs[MAX_INPUTS], *g[MAX_INPUTS], *hu[MAX_INPUTS];
  make_inputs(p, pt, xs);
  ad_tape *outer = ad_tape_begin(0);
  for (int i = 0; i < p->nin; i++) ad_tape_watch(outer, xs[i]);
  ad_tape *inner = ad_tape_begin(0);
  if (!outer || !inner) die("rev-rev: begin failed");
  for (int i = 0; i < p->nin; i++) ad_tape_watch(inner, xs[i]);
  run r = replay(ref);
  ad_tensor *loss = run_program(p, xs, &r);
  bool ok = same_as_reference(ref, &r, loss, "rev-rev");
  ad_error_clear();
  if (ad_tape_end(inner) != AD_OK) die("rev-rev: ending the inner tape");
  if (ok && ad_tape_gradients(inner, loss, NULL, p->nin, xs, g,
                              AD_UNCONNECTED_ZERO) != AD_OK) {
    pass_failed("rev-rev: inner gradients");
    ok = false;
  }
  ad_tensor *s = ok ? dot_tensor(p, g, u) : NULL;
  if (ok && !s) die("rev-rev: <g, u> failed");
  if (ad_tape_end(outer) != AD_OK) die("rev-rev: ending the outer tape");
  if (ok && ad_tape_gradients(outer, s, NULL, p->nin, xs, hu,
                              AD_UNCONNECTED_ZERO) != AD_OK) {
    pass_failed("rev-rev: outer gradients");
    ok = false;
  }
  double out = ok ? pair_dot(p, hu, v, NULL) : NAN;
  ad_tape_free(inner);
  ad_tape_free(outer);
  ad_scope_end();
  ad_error_clear();
  return out;
}

static double hvp_rev_fwd(const program *p, const reference *ref,
                          const point *pt, const point *v, const point *u) {
  ad_scope_begin();
  ad_tensor *xs[MAX_INPUTS], *ts[MAX_INPUTS], *hv[MAX_INPUTS];
  make_inputs(p, pt, xs);
  make_tangents(p, v, ts);
  ad_tape *tape = ad_tape_begin(0);
  if (!tape) die("rev-fwd: begin failed");
  for (int i = 0; i < p->nin; i++) ad_tape_watch(tape, xs[i]);
  ad_fwd *acc = ad_fwd_begin(p->nin, xs, ts);
  if (!acc) die("rev-fwd: ad_fwd_begin failed");
  run r = replay(ref);
  ad_tensor *loss = run_program(p, xs, &r);
  bool ok = same_as_reference(ref, &r, loss, "rev-fwd");
  ad_error_clear();
  ad_tensor *d = ok ? ad_fwd_jvp(acc, loss) : NULL;
  if (ok && !d) die("rev-fwd: ad_fwd_jvp failed");
  if (ad_fwd_end(acc) != AD_OK) die("rev-fwd: ad_fwd_end failed");
  if (ad_tape_end(tape) != AD_OK) die("rev-fwd: ad_tape_end failed");
  if (ok && ad_tape_gradients(tape, d, NULL, p->nin, xs, hv,
                              AD_UNCONNECTED_ZERO) != AD_OK) {
    pass_failed("rev-fwd: ad_tape_gradients");
    ok = false;
  }
  double out = ok ? pair_dot(p, hv, u, NULL) : NAN;
  ad_tape_free(tape);
  ad_scope_end();
  ad_error_clear();
  return out;
}

static double hvp_fwd_fwd(const program *p, const reference *ref,
                          const point *pt, const point *v, const point *u) {
  ad_scope_begin();
  ad_tensor *xs[MAX_INPUTS], *tu[MAX_INPUTS], *tv[MAX_INPUTS];
  make_inputs(p, pt, xs);
  make_tangents(p, u, tu);
  make_tangents(p, v, tv);
  ad_fwd *outer = ad_fwd_begin(p->nin, xs, tu);
  ad_fwd *inner = ad_fwd_begin(p->nin, xs, tv);
  if (!outer || !inner) die("fwd-fwd: begin failed");
  run r = replay(ref);
  ad_tensor *loss = run_program(p, xs, &r);
  bool ok = same_as_reference(ref, &r, loss, "fwd-fwd");
  ad_error_clear();
  ad_tensor *d = ok ? ad_fwd_jvp(inner, loss) : NULL;
  if (ok && !d) die("fwd-fwd: inner ad_fwd_jvp failed");
  if (ad_fwd_end(inner) != AD_OK) die("fwd-fwd: ending the inner level");
  double out = ok ? item(ad_fwd_jvp(outer, d), "fwd-fwd: outer ad_fwd_jvp")
                  : NAN;
  if (ad_fwd_end(outer) != AD_OK) die("fwd-fwd: ending the outer level");
  ad_scope_end();
  ad_error_clear();
  return out;
}

/* ------------------------------------------------------------------------
 * Finite differences
 * ---------------------------------------------------------------------- */

static void shifted(const program *p, const point *x, const point *d,
                    double t, point *out) {
  for (int i = 0; i < p->nin; i++)
    for (int64_t e = 0; e < p->numel[i]; e++)
      out->x[i][e] = x->x[i][e] + t * d->x[i][e];
}

/* Finite differences along d of the scalar function phi(t) = F(x + t d),
 * given phi(0) = f0.  Each estimate fails when an evaluation fails or is
 * not finite; noise is the magnitude of the terms that make F, for the
 * rounding bounds. */
typedef double (*scalar_at)(const program *p, const reference *ref,
                            const point *pt, const point *aux, bool *ok);

static bool fd_values(const program *p, const reference *ref,
                      const point *x, const point *d, const point *aux,
                      scalar_at F, double h, double *f) {
  const double ts[4] = {-h, -h / 2, h / 2, h};
  for (int j = 0; j < 4; j++) {
    point q;
    shifted(p, x, d, ts[j], &q);
    bool ok = true;
    f[j] = F(p, ref, &q, aux, &ok);
    if (!ok || !isfinite(f[j])) return false;
  }
  return true;
}

/* Steps h = 1e-3 and h/2: Richardson's extrapolation R of the central
 * differences, its error *err, and *kink = h |s(h) - s(h/2)| where s are
 * the second differences.  For smooth phi the kink measure is O(h^3);
 * a kink of phi within the stencil (a tie of max, relu at 0) shows as the
 * jump of its slope, which central differences average while AD takes a
 * subgradient: the caller compares only when the kink is below its
 * tolerance. */
static bool fd_estimate(const program *p, const reference *ref,
                        const point *x, const point *d, const point *aux,
                        scalar_at F, double f0, double noise, double *R,
                        double *err, double *kink) {
  const double h = 1e-3;
  double f[4];
  if (!fd_values(p, ref, x, d, aux, F, h, f)) return false;
  double D1 = (f[3] - f[0]) / (2 * h), D2 = (f[2] - f[1]) / h;
  double s1 = (f[3] - 2 * f0 + f[0]) / (h * h);
  double s2 = (f[2] - 2 * f0 + f[1]) / (h * h / 4);
  double rnd = 64 * DBL_EPSILON * noise;
  *R = (4 * D2 - D1) / 3;
  *err = fabs(D2 - D1) + 2 * rnd / h;
  *kink = fmax(0.0, h * fabs(s1 - s2) - 32 * rnd / h);
  return true;
}

/* Steps 1e-5, 5e-6 and 2.5e-6, for a function with jumps (mod with a
 * small divisor jumps every 1e-4 or so, which h = 1e-3 averages into a
 * slope): the central difference *R, its error *err (a jump within the
 * steps makes the three differ by about J / h), and the jump of the
 * one-sided slopes at the point itself *kink (where central differences
 * average two slopes). */
static bool fd_tiny(const program *p, const reference *ref, const point *x,
                    const point *d, const point *aux, scalar_at F, double f0,
                    double noise, double *R, double *err, double *kink) {
  const double h = 1e-5;
  double f[4], g[4];
  if (!fd_values(p, ref, x, d, aux, F, h, f) ||
      !fd_values(p, ref, x, d, aux, F, h / 4, g))
    return false;
  double D1 = (f[3] - f[0]) / (2 * h), D2 = (f[2] - f[1]) / h;
  double D3 = (g[2] - g[1]) / (h / 4);
  double rnd = 64 * DBL_EPSILON * (noise + fabs(f0)) / h;
  *R = D3;
  *err = fabs(D2 - D1) + fabs(D3 - D2) + 8 * rnd;
  *kink = fmax(0.0, fabs((f[3] - 2 * f0 + f[0]) / h) - 8 * rnd);
  return true;
}

/* Compares an AD derivative with finite differences; false when they
 * cannot be trusted here.  *fd and *bound describe the estimate used. */
static bool fd_compare(const program *p, const reference *ref,
                       const point *x, const point *d, const point *aux,
                       scalar_at F, double f0, double noise, double ad,
                       double *fd, double *bound, bool *agrees) {
  double R, err, kink;
  if (!fd_estimate(p, ref, x, d, aux, F, f0, noise, &R, &err, &kink))
    return false;
  double base = 1e-6 * (fabs(R) + fabs(ad)) + 1e-9 * noise;
  if (getenv("AD_FUZZ_VERBOSE"))
    fprintf(stderr, "fd: ad %.17g R %.17g err %.3g kink %.3g base %.3g\n", ad,
            R, err, kink, base);
  /* A kink of size J at the point moves central differences by at most
   * J / 2 from any subgradient AD may take: below the tolerance it
   * cannot fail the comparison. */
  /* Steps h and h/2 must nearly agree: when f oscillates faster than the
   * step (sin of a huge argument) they do not, and the estimate means
   * nothing. */
  bool stable = err <= 0.01 * fabs(R) + base;
  if (stable && kink <= base + 4 * err &&
      (fabs(ad - R) <= base + 4 * err || !ref->jumps)) {
    *fd = R;
    *bound = base + 4 * err;
    *agrees = fabs(ad - R) <= *bound;
    return true;
  }
  if (!ref->jumps || !fd_tiny(p, ref, x, d, aux, F, f0, noise, &R, &err,
                              &kink))
    return false;
  base = 1e-6 * (fabs(R) + fabs(ad));
  if (getenv("AD_FUZZ_VERBOSE"))
    fprintf(stderr, "fd tiny: R %.17g err %.3g kink %.3g\n", R, err, kink);
  if (kink > 0.1 * base || err > 0.01 * fabs(R) + base) return false;
  *fd = R;
  *bound = base + 4 * err;
  *agrees = fabs(ad - R) <= *bound;
  return true;
}

static double F_loss(const program *p, const reference *ref, const point *pt,
                     const point *aux, bool *ok) {
  (void)aux;
  double v = NAN;
  *ok = plain_loss(p, ref, pt, &v);
  return v;
}

static double F_grad_dot(const program *p, const reference *ref,
                         const point *pt, const point *aux, bool *ok) {
  return rev_dot(p, ref, pt, aux, false, NULL, ok);
}

/* Whether the AD derivative itself jumps at x along d: a condition
 * exactly at its threshold (where(x1 - x0, ...) with x0 == x1 takes the
 * other branch at the point only), which finite differences, evaluated
 * off the point, cannot see.  The derivative at x +- 1e-7 d (by reverse
 * mode; u^T H v by forward over reverse when u is given) must then differ
 * from the one at x by more than the bound. */
static bool ad_jumps_here(const program *p, const reference *ref,
                          const point *x, const point *d, const point *u,
                          double at_x, double bound) {
  bool jumps = false;
  off_reference = true;
  for (int side = -1; side <= 1 && !jumps; side += 2) {
    point q;
    shifted(p, x, d, side * 1e-7, &q);
    bool ok = true;
    double g = u ? hvp_fwd_rev(p, ref, &q, d, u)
                 : rev_dot(p, ref, &q, d, false, NULL, &ok);
    jumps = skip_derivatives || (ok && isfinite(g) && fabs(g - at_x) > bound);
  }
  off_reference = false;
  return jumps;
}

/* ------------------------------------------------------------------------
 * The entry point
 * ---------------------------------------------------------------------- */

static unsigned long long runs, finite_runs, fd_checks, fd_skipped,
    second_checks, second_fd_checks, ill_conditioned, huge_values;

static void report_counts(void) {
  if (getenv("AD_FUZZ_STATS"))
    fprintf(stderr,
            "fuzz_ad: %llu programs, %llu with a finite loss; first order: "
            "%llu checked against finite differences, %llu not (a kink, a "
            "failure or a non-finite value on the stencil); second order: "
            "%llu checked in four nestings, %llu of them against finite "
            "differences; not compared: %llu for a known limitation, %llu "
            "for an ill-conditioned matrix, %llu for huge values\n",
            runs, finite_runs, fd_checks, fd_skipped, second_checks,
            second_fd_checks, limitations, ill_conditioned, huge_values);
}

/* Two modes agree to rounding; non-finite results (at an input that is
 * infinite, say) must be the same non-finite value. */
static double agree_rtol = 1e-8;

static bool agree(double a, double b, double scale) {
  if (!isfinite(a) || !isfinite(b))
    return (isnan(a) && isnan(b)) || a == b;
  return fabs(a - b) <= agree_rtol * (fabs(a) + fabs(b) + scale) + 1e-300;
}

static void check_state(const char *when) {
  if (ad__scope_depth() != 0) die("%s: a scope is still open", when);
  if (ad__contexts.n != 0) die("%s: a tape or level is still open", when);
  if (ad__contexts.global_pause || ad__contexts.active)
    die("%s: recording state left behind", when);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool registered;
  if (!registered) {
    registered = true;
    atexit(report_counts);
  }
  program prog;
  parse(data, size, &prog);
  const program *p = &prog;
  current_program = p;
  runs++;
  trace_len = 0;
  trace_buf[0] = '\0';
  ad_error_clear();

  /* The reference run: no tape, no level. */
  reference ref = {0};
  point x, v, u;
  for (int i = 0; i < p->nin; i++)
    for (int64_t e = 0; e < p->numel[i]; e++) {
      x.x[i][e] = p->x[i][e];
      v.x[i][e] = weight(1000003u * (uint64_t)(i + 1) + (uint64_t)e);
      u.x[i][e] = weight(2000003u * (uint64_t)(i + 1) + (uint64_t)e);
    }
  double f0 = NAN, labs = 0;
  bool finite_x = true;
  for (int i = 0; i < p->nin; i++)
    for (int64_t e = 0; e < p->numel[i]; e++) finite_x &= isfinite(p->x[i][e]);
  ad_scope_begin();
  {
    ad_tensor *xs[MAX_INPUTS];
    make_inputs(p, &x, xs);
    run r = {.deciding = true};
    tracing = true;
    ad_tensor *loss = run_program(p, xs, &r);
    tracing = false;
    ref.ok = r.ok;
    ref.stopped = r.stopped;
    ref.jumps = r.jumps;
    ref.huge = r.huge;
    ref.cond = r.cond;
    memcpy(ref.include, r.include, sizeof ref.include);
    f0 = ref.loss = loss ? item(loss, "reference loss") : NAN;
    /* The magnitude of what makes the loss, for rounding bounds. */
    for (int j = 0; j < r.nv; j++)
      if (r.include[j]) {
        ad_tensor *a = ad_sum_all(ad_abs(r.v[j]));
        labs += a ? ad_item(a) : 0;
      }
  }
  ad_scope_end();
  ad_error_clear();
  check_state("after the plain run");

  if (isfinite(f0)) {
    finite_runs++;
    /* First order: reverse, forward and finite differences along v. */
    bool ok;
    double abs_terms = 0;
    skip_derivatives = false;
    /* Whether derivatives are compared, beyond the replays (which always
     * check values and failures against the plain run).  Rounding in
     * linear algebra grows with the condition number; beyond 1e4 the
     * modes need not agree to any useful tolerance.  A value beyond
     * MAX_MAGNITUDE (exp(exp(x))) stays out of the loss, but what the
     * loss takes from it (its softmax, say) has derivatives made of
     * products of huge and vanishing factors, whose rounding no tolerance
     * covers. */
    bool compare = true;
    agree_rtol = 1e-8 * fmax(1.0, ref.cond / 100);
    if (ref.cond > 1e4) {
      compare = false;
      ill_conditioned++;
    } else if (ref.huge) {
      compare = false;
      huge_values++;
    }
    double rev = rev_dot(p, &ref, &x, &v, true, &abs_terms, &ok);
    double fwd = skip_derivatives ? NAN : fwd_dot(p, &ref, &x, &v);
    /* Non-finite derivatives (0 * inf inside a rule, at an infinite input
     * or an overflowing intermediate) depend on the order of operations
     * under IEEE 754, so only finite ones are compared. */
    compare &= !skip_derivatives;
    if (compare && isfinite(rev) && isfinite(fwd) &&
        !agree(rev, fwd, abs_terms))
      die("forward mode %.17g and reverse mode %.17g disagree (scale %g)",
          fwd, rev, abs_terms);
    /* Jumps in a function of a fast-moving argument (mod(exp(x), y), say)
     * come closer together than any step: no finite difference sees the
     * derivative there. */
    bool fd_blind = ref.stopped || !finite_x ||
                    (ref.jumps && fabs(rev) > 1e4);
    double fd, bound;
    bool agrees;
    if (compare && !fd_blind && isfinite(rev) &&
        fd_compare(p, &ref, &x, &v, NULL, F_loss, f0,
                   labs + abs_terms + fabs(f0), rev, &fd, &bound, &agrees)) {
      fd_checks++;
      if (!agrees && ref.jumps && ad_jumps_here(p, &ref, &x, &v, NULL, rev,
                                                bound))
        agrees = true, fd_checks--, fd_skipped++;
      if (!agrees)
        die("reverse mode %.17g and finite differences %.17g (bound %.3g) "
            "disagree",
            rev, fd, bound);
    } else {
      fd_skipped++;
    }
    check_state("after the first-order checks");

    if (p->second_order && !skip_derivatives) {
      double s1 = hvp_fwd_rev(p, &ref, &x, &v, &u);
      double s2 = skip_derivatives ? NAN : hvp_rev_rev(p, &ref, &x, &v, &u);
      double s3 = skip_derivatives ? NAN : hvp_rev_fwd(p, &ref, &x, &v, &u);
      double s4 = skip_derivatives ? NAN : hvp_fwd_fwd(p, &ref, &x, &v, &u);
      double scale = fabs(s1) + fabs(s2) + fabs(s3) + fabs(s4) +
                     1e-6 * (abs_terms + labs);
      bool finite = compare && !skip_derivatives && isfinite(s1) &&
                    isfinite(s2) && isfinite(s3) && isfinite(s4) &&
                    isfinite(scale);
      if (finite && (!agree(s1, s2, scale) || !agree(s1, s3, scale) ||
                     !agree(s1, s4, scale)))
        die("u^T H v differs between nestings: fwd-rev %.17g, rev-rev "
            "%.17g, rev-fwd %.17g, fwd-fwd %.17g",
            s1, s2, s3, s4);
      if (finite) second_checks++;
      double g0 = finite ? rev_dot(p, &ref, &x, &u, false, NULL, &ok) : NAN;
      if (finite && ok && !skip_derivatives && !fd_blind &&
          !(ref.jumps && fabs(s1) > 1e4) &&
          fd_compare(p, &ref, &x, &v, &u, F_grad_dot, g0, abs_terms + labs,
                     s1, &fd, &bound, &agrees)) {
        second_fd_checks++;
        if (!agrees && ref.jumps &&
            ad_jumps_here(p, &ref, &x, &v, &u, s1, bound))
          agrees = true, second_fd_checks--;
        if (!agrees)
          die("u^T H v %.17g and finite differences of the gradient %.17g "
              "(bound %.3g) disagree",
              s1, fd, bound);
      }
      check_state("after the second-order checks");
    }
    if (skip_derivatives) limitations++;
  }
  if (getenv("AD_FUZZ_VERBOSE")) print_program(stderr);
  current_program = NULL;
  /* Return every cached block so that each input's allocations balance
   * (libFuzzer's leak check compares mallocs and frees per input). */
  ad_thread_cleanup();
  return 0;
}
