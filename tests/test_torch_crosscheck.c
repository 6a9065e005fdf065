/* Numerical truth: a few hundred randomly built expressions of a vector x
 * (elementwise ops on their domains, broadcasting with scalars, matrix
 * products, reductions, softmax, flips), differentiated by libad (value,
 * gradient, Hessian by forward over reverse and by reverse over reverse)
 * and recomputed by PyTorch in float64 by tests/torch_crosscheck.py.
 *
 * Skipped, with a message, when /usr/bin/python3 cannot import torch
 * (Debian's python3-torch) or the script is missing.  AD_TORCH_PYTHON and
 * AD_TORCH_SCRIPT override the interpreter and the script's path;
 * AD_TORCH_EXPRESSIONS the number of expressions (default 300, 60 under
 * AD_TEST_QUICK). */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"


#define MAX_TOKENS 96
#define MAX_N 4
#define NCONST 2

typedef struct expr {
  int n;
  int ntok;
  char tok[MAX_TOKENS][40];
  double x[MAX_N];
  double m[NCONST][MAX_N * MAX_N];
} expr;

/* ---- a private generator (splitmix64) ----------------------------------- */

static uint64_t rng_state;

static uint64_t next_u64(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int below(int k) { return (int)(next_u64() % (uint64_t)k); }

static double uniform(double lo, double hi) {
  return lo + (hi - lo) * ldexp((double)(next_u64() >> 11), -53);
}

/* ---- building expressions ------------------------------------------------ */

static void emit(expr *e, const char *t) {
  if (e->ntok < MAX_TOKENS) snprintf(e->tok[e->ntok++], sizeof e->tok[0], "%s", t);
}

static void emit_const(expr *e, double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "c:%.17g", v);
  emit(e, buf);
}

/* Emits a subexpression; *vec says whether it is a vector (n,) or a
 * scalar.  Domains: every op with a restricted domain gets an argument
 * mapped into it (log of softplus + 0.5, asin of 0.9 tanh, ...). */
static void gen(expr *e, int depth, bool *vec) {
  if (depth <= 0 || e->ntok > MAX_TOKENS - 24 || below(4) == 0) {
    if (below(5) == 0) {
      emit_const(e, uniform(-2, 2));
      *vec = false;
    } else {
      emit(e, "x");
      *vec = true;
    }
    return;
  }
  int kind = below(10);
  if (kind < 5) {
    /* Unary elementwise, with the argument's domain map. */
    static const char *const ops[] = {
        "neg",  "exp",  "log",  "log1p",   "expm1",    "sqrt", "square",
        "abs",  "sin",  "cos",  "tan",     "asin",     "acos", "atan",
        "sinh", "cosh", "tanh", "sigmoid", "softplus", "relu", "erf"};
    const char *op = ops[below((int)(sizeof ops / sizeof ops[0]))];
    gen(e, depth - 1, vec);
    if (!strcmp(op, "log") || !strcmp(op, "sqrt")) {
      emit(e, "softplus");
      emit_const(e, 0.5);
      emit(e, "add");
    } else if (!strcmp(op, "log1p")) {
      emit(e, "softplus");
      emit_const(e, -0.5);
      emit(e, "add");
    } else if (!strcmp(op, "asin") || !strcmp(op, "acos")) {
      emit(e, "tanh");
      emit_const(e, 0.9);
      emit(e, "mul");
    } else if (!strcmp(op, "tan")) {
      emit(e, "tanh");
      emit_const(e, 1.2);
      emit(e, "mul");
    } else if (!strcmp(op, "exp") || !strcmp(op, "expm1") ||
               !strcmp(op, "sinh") || !strcmp(op, "cosh")) {
      emit(e, "tanh");
      emit_const(e, 2.0);
      emit(e, "mul");
    }
    emit(e, op);
  } else if (kind < 8) {
    /* Binary, broadcasting a scalar against a vector. */
    static const char *const ops[] = {"add",     "sub",     "mul",
                                      "div",     "pow",     "maximum",
                                      "minimum", "atan2"};
    const char *op = ops[below((int)(sizeof ops / sizeof ops[0]))];
    bool va, vb;
    gen(e, depth - 1, &va);
    if (!strcmp(op, "pow")) {
      emit(e, "softplus");
      emit_const(e, 0.5);
      emit(e, "add");
    }
    gen(e, depth - 1, &vb);
    if (!strcmp(op, "div") || !strcmp(op, "atan2")) {
      emit(e, "softplus");
      emit_const(e, 0.5);
      emit(e, "add");
    } else if (!strcmp(op, "pow")) {
      emit(e, "tanh");
      emit_const(e, 1.5);
      emit(e, "mul");
    }
    emit(e, op);
    *vec = va || vb;
  } else if (kind < 9) {
    /* Vector ops: a matrix product, softmax, a flip. */
    gen(e, depth - 1, vec);
    if (!*vec) return;
    int which = below(4);
    if (which < 2) {
      char buf[8];
      snprintf(buf, sizeof buf, "M:%d", below(NCONST));
      emit(e, buf);
      emit(e, "matmul");
    } else {
      emit(e, which == 2 ? (below(2) ? "softmax" : "log_softmax") : "flip");
    }
  } else {
    /* Reductions to a scalar. */
    static const char *const ops[] = {"sum", "mean", "prod",
                                      "max", "min",  "logsumexp"};
    gen(e, depth - 1, vec);
    emit(e, ops[below((int)(sizeof ops / sizeof ops[0]))]);
    *vec = false;
  }
}

static bool uses_x(const expr *e) {
  for (int i = 0; i < e->ntok; i++)
    if (!strcmp(e->tok[i], "x")) return true;
  return false;
}

static void make_expr(expr *e) {
  do {
    memset(e, 0, sizeof *e);
    e->n = 2 + below(MAX_N - 1);
    bool vec;
    gen(e, 2 + below(4), &vec);
  } while (!uses_x(e));
  for (int i = 0; i < e->n; i++) e->x[i] = uniform(-1.5, 1.5);
  for (int k = 0; k < NCONST; k++)
    for (int i = 0; i < e->n * e->n; i++) e->m[k][i] = uniform(-0.8, 0.8);
}

/* ---- evaluating them with libad ------------------------------------------ */

static ad_tensor *unary(const char *op, ad_tensor *t) {
  static const struct {
    const char *name;
    ad_tensor *(*f)(ad_tensor *);
  } table[] = {{"neg", ad_neg},         {"exp", ad_exp},
               {"log", ad_log},         {"log1p", ad_log1p},
               {"expm1", ad_expm1},     {"sqrt", ad_sqrt},
               {"square", ad_square},   {"abs", ad_abs},
               {"sin", ad_sin},         {"cos", ad_cos},
               {"tan", ad_tan},         {"asin", ad_asin},
               {"acos", ad_acos},       {"atan", ad_atan},
               {"sinh", ad_sinh},       {"cosh", ad_cosh},
               {"tanh", ad_tanh},       {"sigmoid", ad_sigmoid},
               {"softplus", ad_softplus}, {"relu", ad_relu},
               {"erf", ad_erf},         {"sum", ad_sum_all}};
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (!strcmp(op, table[i].name)) return table[i].f(t);
  if (!strcmp(op, "mean")) return ad_mean(t, 0, NULL, false);
  if (!strcmp(op, "prod")) return ad_prod(t, 0, NULL, false);
  if (!strcmp(op, "max")) return ad_max(t, 0, NULL, false);
  if (!strcmp(op, "min")) return ad_min(t, 0, NULL, false);
  if (!strcmp(op, "logsumexp")) return ad_logsumexp(t, 0, NULL, false);
  if (!strcmp(op, "softmax")) return ad_softmax(t, -1);
  if (!strcmp(op, "log_softmax")) return ad_log_softmax(t, -1);
  if (!strcmp(op, "flip")) return ad_slice(t, -1, -1, INT64_MIN, -1);
  return NULL;
}

static ad_tensor *binary(const char *op, ad_tensor *a, ad_tensor *b) {
  static const struct {
    const char *name;
    ad_tensor *(*f)(ad_tensor *, ad_tensor *);
  } table[] = {{"add", ad_add},         {"sub", ad_sub},
               {"mul", ad_mul},         {"div", ad_div},
               {"pow", ad_pow},         {"maximum", ad_maximum},
               {"minimum", ad_minimum}, {"atan2", ad_atan2},
               {"matmul", ad_matmul}};
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (!strcmp(op, table[i].name)) return table[i].f(a, b);
  return NULL;
}

static bool is_binary(const char *op) {
  static const char *const names[] = {"add",     "sub",     "mul",
                                      "div",     "pow",     "maximum",
                                      "minimum", "atan2",   "matmul"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(op, names[i])) return true;
  return false;
}

/* The expression's value at x, summed to a scalar: a stack machine over
 * the postfix tokens. */
static ad_tensor *evaluate(ad_tensor *x, void *ctx) {
  const expr *e = ctx;
  ad_tensor *stack[MAX_TOKENS];
  int sp = 0;
  for (int i = 0; i < e->ntok; i++) {
    const char *t = e->tok[i];
    ad_tensor *r;
    if (!strcmp(t, "x")) {
      r = x;
    } else if (!strncmp(t, "c:", 2)) {
      r = ad_scalar(strtod(t + 2, NULL));
    } else if (!strncmp(t, "M:", 2)) {
      r = ad_tensor_new(2, SHAPE(e->n, e->n), e->m[atoi(t + 2)]);
    } else if (is_binary(t)) {
      if (sp < 2) return NULL;
      ad_tensor *b = stack[--sp], *a = stack[--sp];
      r = binary(t, a, b);
    } else {
      if (sp < 1) return NULL;
      r = unary(t, stack[--sp]);
    }
    if (!r) return NULL;
    stack[sp++] = r;
  }
  return sp == 1 ? ad_sum_all(stack[0]) : NULL;
}

static ad_tensor *gradient(ad_tensor *x, void *ctx) {
  return ad_grad(evaluate, ctx, x);
}

static void put(FILE *f, const char *key, ad_tensor *t, int64_t n) {
  double buf[MAX_N * MAX_N];
  assert_non_null(t);
  assert_int_equal(ad_numel(t), n);
  assert_int_equal(ad_read(t, buf, n), AD_OK);
  fprintf(f, "%s", key);
  for (int64_t i = 0; i < n; i++) fprintf(f, " %.17g", buf[i]);
  fprintf(f, "\n");
}

/* ---- the test -------------------------------------------------------------- */

static const char *python(void) {
  const char *p = getenv("AD_TORCH_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

static const char *script(void) {
  const char *s = getenv("AD_TORCH_SCRIPT");
  return s && *s ? s : "tests/torch_crosscheck.py";
}

static void gradients_and_hessians_match_pytorch(void **state) {
  (void)state;
  char cmd[1024];
  if (access(script(), R_OK) != 0) {
    print_message("skipped: %s not found (run from the repository root)\n",
                  script());
    skip();
  }
  snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", python());
  if (system(cmd) != 0) {
    print_message("skipped: %s cannot import torch (Debian: apt-get install "
                  "python3-torch)\n",
                  python());
    skip();
  }
  int count = test_quick() ? 60 : 300;
  const char *env = getenv("AD_TORCH_EXPRESSIONS");
  if (env && atoi(env) > 0) count = atoi(env);
  char path[] = "/tmp/ad_torch_crosscheck.XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  rng_state = 0x70c4c4ec4ull;
  static expr e;
  for (int k = 0; k < count; k++) {
    make_expr(&e);
    ad_scope_begin();
    ad_tensor *x = ad_tensor_new(1, SHAPE(e.n), e.x);
    ad_tensor *value = evaluate(x, &e);
    if (!value) {
      fprintf(stderr, "expression %d failed in libad: %s\n", k,
              ad_error_message());
      for (int i = 0; i < e.ntok; i++) fprintf(stderr, " %s", e.tok[i]);
      fprintf(stderr, "\n");
      fail();
    }
    fprintf(f, "expr %d", e.n);
    for (int i = 0; i < e.ntok; i++) fprintf(f, " %s", e.tok[i]);
    fprintf(f, "\n");
    for (int c = 0; c < NCONST; c++) {
      fprintf(f, "const %d %d %d", c, e.n, e.n);
      for (int i = 0; i < e.n * e.n; i++) fprintf(f, " %.17g", e.m[c][i]);
      fprintf(f, "\n");
    }
    put(f, "x", x, e.n);
    put(f, "value", value, 1);
    put(f, "grad", ad_grad(evaluate, &e, x), e.n);
    put(f, "hess_fwd_rev", ad_hessian(evaluate, &e, x), e.n * e.n);
    put(f, "hess_rev_rev", ad_jacobian(gradient, &e, x), e.n * e.n);
    fprintf(f, "end\n");
    assert_int_equal(ad_scope_end(), AD_OK);
  }
  assert_int_equal(fclose(f), 0);
  snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", python(), script(), path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char line[1024];
  bool summary = false;
  while (fgets(line, sizeof line, p)) {
    /* Disagreements and the summary line. */
    printf("%s", line);
    if (!strncmp(line, "torch_crosscheck:", 17)) summary = true;
  }
  int rc = pclose(p);
  unlink(path);
  if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
    print_message("skipped: PyTorch is not importable\n");
    skip();
  }
  assert_true(summary);
  assert_int_equal(rc, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(gradients_and_hessians_match_pytorch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
