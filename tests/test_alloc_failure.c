/* Allocation-failure injection: representative programs run once for every
 * k up to the number of allocations they make, with the k-th allocation
 * failing.  Every run must end in AD_ENOMEM or in success with the values
 * of the run without failures, leave no scope, tape or level open, and
 * leak nothing.
 *
 * Two injectors:
 *   - pool: ad__fail_alloc_after(k) (src/internal.h) fails the k-th
 *     tensor header, data block or random generator that libad's pools
 *     hand out, in every build.  Leaks show under make asan and make
 *     valgrind.
 *   - malloc: in builds without a sanitizer, this file replaces malloc,
 *     calloc, realloc, aligned_alloc and free (the C library supports
 *     replacing them) with wrappers that fail the k-th call made by this
 *     thread while armed and remember every block handed out meanwhile:
 *     every allocation in libad, the C library (fopen, strdup) and GSL
 *     fails in turn, and a block still remembered after the run (and
 *     after ad_thread_cleanup) is a leak, reported with k.  Under
 *     valgrind, whose allocator replaces these wrappers, the malloc tests
 *     are skipped.
 *
 * AD_TEST_QUICK (make valgrind) tries at most QUICK_POINTS values of k per
 * program, spread over the whole range.  The figures of a run (how many
 * failure points each program has) are printed with AD_ALLOC_FIGURES=1. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

/* ad__fail_alloc_after and its countdown; the context stack, to check
 * that every run leaves it empty. */
#include "engine.h"
#include "internal.h"
#include "ad/nn.h"
#include "ad/optim.h"

int ad__scope_depth(void);


#define QUICK_POINTS 40
#define MAX_OUT 64

/* ========================================================================
 * The malloc injector (builds without a sanitizer)
 * ====================================================================== */

#if !UNDER_SANITIZER

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*aligned_fn)(size_t, size_t);
typedef void (*free_fn)(void *);

static _Atomic(malloc_fn) real_malloc;
static _Atomic(calloc_fn) real_calloc;
static _Atomic(realloc_fn) real_realloc;
static _Atomic(aligned_fn) real_aligned_alloc;
static _Atomic(free_fn) real_free;
static _Thread_local int resolving;

/* Looks the C library's functions up once.  dlsym may itself call
 * calloc: that nested call gets NULL, which dlsym survives. */
static bool resolve(void) {
  if (atomic_load_explicit(&real_free, memory_order_acquire)) return true;
  if (resolving) return false;
  resolving = 1;
  atomic_store(&real_malloc, (malloc_fn)dlsym(RTLD_NEXT, "malloc"));
  atomic_store(&real_calloc, (calloc_fn)dlsym(RTLD_NEXT, "calloc"));
  atomic_store(&real_realloc, (realloc_fn)dlsym(RTLD_NEXT, "realloc"));
  atomic_store(&real_aligned_alloc,
               (aligned_fn)dlsym(RTLD_NEXT, "aligned_alloc"));
  atomic_store_explicit(&real_free, (free_fn)dlsym(RTLD_NEXT, "free"),
                        memory_order_release);
  resolving = 0;
  return atomic_load(&real_free) != NULL;
}

/* The armed thread's state.  Only one thread arms at a time (the test's),
 * so the block table is a plain array. */
static _Thread_local bool armed;
static _Thread_local long countdown; /* > 0: the countdown-th call fails */
static _Thread_local long calls;     /* allocation calls while armed */
#define TABLE (1 << 16)              /* open addressing, power of two */
static void *table[TABLE];
static long live;                    /* blocks in the table */
static bool table_full;

static size_t slot_of(const void *p) {
  uintptr_t h = (uintptr_t)p >> 4;
  h ^= h >> 17;
  h *= 0x9e3779b97f4a7c15ull;
  return (size_t)(h >> 7) & (TABLE - 1);
}

static void remember(void *p) {
  if (live >= TABLE / 2) {
    table_full = true;
    return;
  }
  size_t i = slot_of(p);
  while (table[i] && table[i] != (void *)1) i = (i + 1) & (TABLE - 1);
  table[i] = p;
  live++;
}

static void forget(void *p) {
  size_t i = slot_of(p);
  while (table[i]) {
    if (table[i] == p) {
      table[i] = (void *)1; /* tombstone */
      live--;
      return;
    }
    i = (i + 1) & (TABLE - 1);
  }
}

/* True when this call must fail, as the C library's allocator fails:
 * NULL with errno ENOMEM. */
static bool fail_now(void) {
  if (!armed) return false;
  calls++;
  if (countdown > 0 && --countdown == 0) {
    errno = ENOMEM;
    return true;
  }
  return false;
}

void *malloc(size_t n) {
  if (!resolve()) return NULL;
  if (fail_now()) return NULL;
  void *p = atomic_load(&real_malloc)(n);
  if (armed && p) remember(p);
  return p;
}

void *calloc(size_t a, size_t b) {
  if (!resolve()) return NULL;
  if (fail_now()) return NULL;
  void *p = atomic_load(&real_calloc)(a, b);
  if (armed && p) remember(p);
  return p;
}

void *realloc(void *q, size_t n) {
  if (!resolve()) return NULL;
  if (fail_now()) return NULL;
  void *p = atomic_load(&real_realloc)(q, n);
  if (armed) {
    if (q && (p || n == 0)) forget(q);
    if (p) remember(p);
  }
  return p;
}

void *aligned_alloc(size_t align, size_t n) {
  if (!resolve()) return NULL;
  if (fail_now()) return NULL;
  void *p = atomic_load(&real_aligned_alloc)(align, n);
  if (armed && p) remember(p);
  return p;
}

void free(void *p) {
  if (!p) return;
  if (armed) forget(p);
  if (resolve()) atomic_load(&real_free)(p);
}

static void malloc_arm(long k) {
  memset(table, 0, sizeof table);
  live = 0;
  table_full = false;
  calls = 0;
  countdown = k;
  armed = true;
}

/* Disarms; returns the number of blocks allocated while armed and not
 * freed since. */
static long malloc_disarm(void) {
  armed = false;
  countdown = 0;
  return live;
}

/* True when the wrappers above are the process's allocator (not so under
 * valgrind, which replaces malloc in the executable too). */
static bool malloc_injection_works(void) {
  /* Through a volatile pointer: the compiler would drop a malloc/free
   * pair it can see. */
  void *(*volatile m)(size_t) = malloc;
  void (*volatile f)(void *) = free;
  malloc_arm(0);
  void *p = m(16);
  long seen = calls;
  malloc_disarm();
  f(p);
  return seen == 1;
}

#else /* UNDER_SANITIZER: the sanitizer's allocator stays in place */

static long calls;
static bool table_full;
static void malloc_arm(long k) { (void)k; }
static long malloc_disarm(void) { return 0; }

#endif

/* ========================================================================
 * The programs.  Each opens its own scope, returns the first status it
 * met (AD_OK when everything succeeded) and, on success, writes its
 * results to out[0..*n).  None may depend on state left by an earlier
 * run.
 * ====================================================================== */

typedef ad_status (*program_fn)(double *out, int *n);

/* Collects a program's status: the first failure wins. */
typedef struct result {
  ad_status st;
  double *out;
  int n;
} result;

static void take(result *r, ad_tensor *t) {
  if (r->st != AD_OK) return;
  if (!t) {
    r->st = ad_error() ? ad_error() : AD_EINTERNAL;
    return;
  }
  int64_t k = ad_numel(t);
  if (r->n + k > MAX_OUT) {
    r->st = AD_EINTERNAL;
    return;
  }
  if (ad_read(t, r->out + r->n, k) != AD_OK) {
    r->st = ad_error();
    return;
  }
  r->n += (int)k;
}

static void check(result *r, ad_status st) {
  if (r->st == AD_OK && st != AD_OK) r->st = st;
}

/* ---- tensor ops: broadcasting, views, reductions, joins, linear
 * algebra, convolution, random numbers -------------------------------- */

static ad_status prog_tensor_ops(double *out, int *n) {
  result r = {AD_OK, out, 0};
  ad_error_clear();
  ad_scope_begin();
  ad_seed(42);
  ad_tensor *a = ad_rand_normal(2, SHAPE(3, 4), 0, 1);
  ad_tensor *b = ad_linspace(-1, 1, 4);
  ad_tensor *c = ad_add(ad_mul(a, b), ad_exp(ad_slice(a, 1, 0, 1, 1)));
  ad_tensor *t = ad_transpose(c);
  ad_tensor *m = ad_matmul(c, t);
  ad_tensor *spd = ad_add(m, ad_mul_scalar(ad_eye(3), 4.0));
  take(&r, ad_sum(c, 1, (const int[]){0}, true));
  take(&r, ad_logsumexp(t, 1, (const int[]){-1}, false));
  take(&r, ad_solve(spd, ad_ones(1, SHAPE(3))));
  take(&r, ad_logdet(spd));
  take(&r, ad_sum_all(ad_cholesky(spd)));
  take(&r, ad_softmax(ad_gather(c, 1, (const int64_t[]){3, 0, 3}, 3), -1));
  ad_tensor *big = ad_rand_uniform(2, SHAPE(40, 40), -1, 1); /* pooled */
  take(&r, ad_max(ad_concat(2, (ad_tensor *[]){big, ad_neg(big)}, 0), 0,
                  NULL, false));
  ad_tensor *img = ad_reshape(ad_arange(0, 32, 1), 4, SHAPE(1, 4, 4, 2));
  ad_tensor *w = ad_full(4, SHAPE(2, 2, 2, 1), 0.25);
  take(&r, ad_sum_all(ad_conv2d(img, w, 1, 1, 1, 0)));
  take(&r, ad_sum_all(ad_max_pool2d(img, 2, 2, 2, 2)));
  take(&r, ad_stack(2, (ad_tensor *[]){ad_argmax(c, 1), ad_max(c, 1,
                                        (const int[]){1}, false)}, 0));
  check(&r, ad_error());
  ad_scope_end();
  *n = r.n;
  return r.st;
}

/* ---- nested gradients: grad of grad, a persistent tape asked twice, a
 * Jacobian, variables -------------------------------------------------- */

static ad_tensor *inner_f(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(ad_sin(x), ad_square(x)));
}

/* |grad f|^2, whose gradient is a second-order quantity. */
static ad_tensor *grad_norm(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_square(ad_grad(inner_f, NULL, x)));
}

static ad_status prog_nested_gradients(double *out, int *n) {
  result r = {AD_OK, out, 0};
  ad_error_clear();
  ad_scope_begin();
  ad_tensor *x = ad_tensor_new(1, SHAPE(3), VALUES(0.5, -1.0, 2.0));
  take(&r, ad_grad(grad_norm, NULL, x));
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  if (tape) check(&r, ad_tape_watch(tape, x));
  ad_tensor *y = ad_tanh(ad_mul_scalar(x, 0.7));
  ad_tensor *s = ad_sum_all(ad_square(y));
  if (tape) check(&r, ad_tape_end(tape));
  take(&r, tape ? ad_tape_gradient(tape, s, x) : NULL);
  take(&r, tape ? ad_tape_jacobian(tape, y, x) : NULL);
  ad_tape_free(tape);
  ad_var *w = ad_var_new("w", ad_tensor_new(2, SHAPE(2, 2),
                                            VALUES(1, 2, 3, 4)));
  ad_tape *vt = ad_tape_begin(0);
  ad_tensor *loss = ad_sum_all(ad_matmul(ad_var_value(w), ad_var_value(w)));
  if (vt) check(&r, ad_tape_end(vt));
  ad_tensor *gw = NULL;
  check(&r, vt ? ad_tape_var_gradients(vt, loss, 1, &w, &gw) : ad_error());
  take(&r, gw);
  ad_tape_free(vt);
  ad_var_free(w);
  check(&r, ad_error());
  ad_scope_end();
  *n = r.n;
  return r.st;
}

/* ---- forward over reverse: Hessian-vector products, a Hessian, a
 * forward Jacobian, nested levels -------------------------------------- */

static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t k = ad_numel(x);
  ad_tensor *a = ad_slice(x, 0, 0, k - 1, 1), *b = ad_slice(x, 0, 1, k, 1);
  return ad_sum_all(ad_add(ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))),
                                         100.0),
                           ad_square(ad_add_scalar(ad_neg(a), 1.0))));
}

static ad_tensor *soft(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_log_softmax(ad_mul_scalar(x, 1.5), 0);
}

static ad_status prog_forward_over_reverse(double *out, int *n) {
  result r = {AD_OK, out, 0};
  ad_error_clear();
  ad_scope_begin();
  ad_tensor *x = ad_tensor_new(1, SHAPE(4), VALUES(0.5, 1.5, -0.5, 1.0));
  ad_tensor *v = ad_tensor_new(1, SHAPE(4), VALUES(1.0, -1.0, 0.5, 2.0));
  take(&r, ad_hvp(rosenbrock, NULL, x, v));
  take(&r, ad_sum_all(ad_hessian(rosenbrock, NULL, x)));
  take(&r, ad_sum_all(ad_jacfwd(soft, NULL, x)));
  ad_tensor *s = ad_scalar(0.3), *one = ad_scalar(1.0);
  ad_fwd *outer = ad_fwd_begin(1, &s, &one);
  ad_fwd *inner = ad_fwd_begin(1, &s, &one);
  ad_tensor *d1 = inner ? ad_fwd_jvp(inner, ad_mul(ad_exp(s), ad_sin(s)))
                        : NULL;
  if (inner) check(&r, ad_fwd_end(inner));
  ad_tensor *d2 = outer && d1 ? ad_fwd_jvp(outer, d1) : NULL;
  if (outer) check(&r, ad_fwd_end(outer));
  take(&r, d1);
  take(&r, d2);
  check(&r, ad_error());
  ad_scope_end();
  *n = r.n;
  return r.st;
}

/* ---- custom ops: rules derived from one another, gradient
 * checkpointing ----------------------------------------------------------- */

static ad_status cube_forward(ad_custom_ctx *c, ad_tensor *const *in,
                              ad_tensor **out, void *user) {
  (void)user;
  out[0] = ad_mul(ad_square(in[0]), in[0]);
  ad_status st = ad_custom_save(c, ad_square(in[0]));
  return out[0] && st == AD_OK ? AD_OK : ad_error();
}

static ad_status cube_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                          ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_mul_scalar(ad_square(ad_custom_input(c, 0)),
                                         3.0));
  return gin[0] ? AD_OK : ad_error();
}

static ad_status cube_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                          ad_tensor **tout, void *user) {
  (void)user;
  tout[0] = ad_mul(tin[0], ad_mul_scalar(ad_square(ad_custom_input(c, 0)),
                                         3.0));
  return tout[0] ? AD_OK : ad_error();
}

static ad_tensor *cube_vjp_only(ad_tensor *x, void *ctx) {
  (void)ctx;
  static const ad_custom_op op = {"cube_vjp", 1, 1, cube_forward, cube_vjp,
                                  NULL};
  ad_tensor *y = NULL;
  return ad_custom_apply(&op, NULL, &x, &y) == AD_OK ? ad_sum_all(y) : NULL;
}

static ad_tensor *cube_jvp_only(ad_tensor *x, void *ctx) {
  (void)ctx;
  static const ad_custom_op op = {"cube_jvp", 1, 1, cube_forward, NULL,
                                  cube_jvp};
  ad_tensor *y = NULL;
  return ad_custom_apply(&op, NULL, &x, &y) == AD_OK ? ad_sum_all(y) : NULL;
}

static ad_tensor *block(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_tanh(ad_mul(ad_sin(x), x));
}

static ad_tensor *checkpointed(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_checkpoint(block, NULL, ad_checkpoint(block, NULL, x)));
}

static ad_status prog_custom_ops(double *out, int *n) {
  result r = {AD_OK, out, 0};
  ad_error_clear();
  ad_scope_begin();
  ad_tensor *x = ad_tensor_new(1, SHAPE(3), VALUES(0.5, -1.5, 2.0));
  ad_tensor *v = ad_tensor_new(1, SHAPE(3), VALUES(1.0, 0.5, -1.0));
  /* Reverse with the VJP; forward derives the JVP by transposing it. */
  take(&r, ad_grad(cube_vjp_only, NULL, x));
  take(&r, ad_jvp(cube_vjp_only, NULL, x, v, NULL));
  /* The other way round, and second order through a derived rule. */
  take(&r, ad_grad(cube_jvp_only, NULL, x));
  take(&r, ad_hvp(cube_jvp_only, NULL, x, v));
  take(&r, ad_hvp(cube_vjp_only, NULL, x, v));
  /* Gradient checkpointing: recomputed in the backward pass. */
  take(&r, ad_grad(checkpointed, NULL, x));
  take(&r, ad_jvp(checkpointed, NULL, x, v, NULL));
  check(&r, ad_error());
  ad_scope_end();
  *n = r.n;
  return r.st;
}

/* ---- checkpoint files: save variables and an optimizer's state, restore
 * them into fresh ones -------------------------------------------------- */

static char ckpt_dir[64];

static ad_tensor *quad_loss(void *ctx) {
  ad_var **vars = ctx;
  return ad_sum_all(ad_add(ad_square(ad_var_value(vars[0])),
                           ad_mul_scalar(ad_var_value(vars[1]), 3.0)));
}

static ad_status prog_checkpoint_file(double *out, int *n) {
  result r = {AD_OK, out, 0};
  ad_error_clear();
  ad_scope_begin();
  char path[128];
  snprintf(path, sizeof path, "%s/model.ckpt", ckpt_dir);
  ad_var *vars[2] = {
      ad_var_new("kernel", ad_tensor_new(2, SHAPE(2, 2), VALUES(1, -2, 3, 4))),
      ad_var_new("bias", ad_tensor_new(1, SHAPE(2), VALUES(0.5, -0.5)))};
  ad_optimizer *opt = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  if (!vars[0] || !vars[1] || !opt) check(&r, ad_error());
  if (r.st == AD_OK)
    check(&r, ad_optimizer_minimize(opt, quad_loss, vars, 2, vars, NULL));
  if (r.st == AD_OK) check(&r, ad_checkpoint_save(path, 2, vars, opt));
  /* Restore into fresh variables and a fresh optimizer. */
  ad_var *back[2] = {
      ad_var_new("kernel", ad_zeros(2, SHAPE(2, 2))),
      ad_var_new("bias", ad_zeros(1, SHAPE(2)))};
  ad_optimizer *opt2 = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  if (r.st == AD_OK && (!back[0] || !back[1] || !opt2)) check(&r, ad_error());
  /* The optimizer's state exists after its first step. */
  if (r.st == AD_OK)
    check(&r, ad_optimizer_minimize(opt2, quad_loss, back, 2, back, NULL));
  if (r.st == AD_OK) check(&r, ad_checkpoint_restore(path, 2, back, opt2));
  if (r.st == AD_OK) {
    take(&r, ad_var_value(back[0]));
    take(&r, ad_var_value(back[1]));
    /* The restored optimizer continues as the saved one would. */
    check(&r, ad_optimizer_minimize(opt2, quad_loss, back, 2, back, NULL));
    take(&r, ad_var_value(back[0]));
  }
  unlink(path);
  for (int i = 0; i < 2; i++) {
    ad_var_free(vars[i]);
    ad_var_free(back[i]);
  }
  ad_optimizer_free(opt);
  ad_optimizer_free(opt2);
  ad_scope_end();
  *n = r.n;
  return r.st;
}

/* Files left in ckpt_dir (a failed save must remove its temporary
 * file). */
static int files_left(void) {
  DIR *d = opendir(ckpt_dir);
  if (!d) return -1;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') count++;
  closedir(d);
  return count;
}

/* ========================================================================
 * The driver
 * ====================================================================== */

typedef struct prog {
  const char *name;
  program_fn fn;
  bool files; /* writes into ckpt_dir */
} prog;

static const prog programs[] = {
    {"tensor ops", prog_tensor_ops, false},
    {"nested gradients", prog_nested_gradients, false},
    {"forward over reverse", prog_forward_over_reverse, false},
    {"custom ops and checkpointing", prog_custom_ops, false},
    {"checkpoint file", prog_checkpoint_file, true},
};
#define NPROGRAMS ((int)(sizeof programs / sizeof programs[0]))

enum { POOL, MALLOC };

/* The k to try for a program that makes `count` allocations: all of
 * them, or under AD_TEST_QUICK at most QUICK_POINTS spread evenly (the
 * first ones always: they fail the earliest set-up). */
static long next_k(long k, long count) {
  if (!test_quick() || count <= QUICK_POINTS) return k + 1;
  if (k < QUICK_POINTS / 4) return k + 1;
  long step = count / (QUICK_POINTS - QUICK_POINTS / 4);
  return k + (step > 1 ? step : 1);
}

/* The state every run must leave: nothing open, nothing paused. */
static void check_clean_state(const char *name, long k) {
  if (ad__scope_depth() != 0)
    fail_shown("%s, k = %ld: %d scope(s) left open", name, k,
             ad__scope_depth());
  if (ad__contexts.n != 0)
    fail_shown("%s, k = %ld: %d tape(s) or level(s) left open", name, k,
             ad__contexts.n);
  if (ad__contexts.global_pause || ad__contexts.active)
    fail_shown("%s, k = %ld: recording left paused or active", name, k);
}

/* Runs program p with the k-th allocation failing (k = 0: none) under
 * injector `how`; returns the status and, for the malloc injector, the
 * blocks leaked in *leaked and the calls made in *ncalls. */
static ad_status run_once(const prog *p, int how, long k, double *out, int *n,
                          long *leaked, long *ncalls) {
  ad_thread_cleanup();
  *leaked = 0;
  *ncalls = 0;
  ad_status st;
  if (how == POOL) {
    /* A countdown too large to fire counts the allocations. */
    long start = k > 0 ? k : (1L << 40);
    ad__fail_alloc_after(start);
    st = p->fn(out, n);
    *ncalls = start - ad__fail_countdown;
    ad__fail_alloc_after(0);
    ad_thread_cleanup();
  } else {
    malloc_arm(k);
    st = p->fn(out, n);
    /* Caches count as live memory: return them before counting. */
    ad_thread_cleanup();
    *ncalls = calls;
    *leaked = malloc_disarm();
  }
  return st;
}

/* Findings are collected (the first MAX_FINDINGS printed) so that one run
 * shows every failure point that misbehaves, then the test fails. */
#define MAX_FINDINGS 12
static int findings;
static char first_findings[1024]; /* the first few, for the failure line */

static void finding(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void finding(const char *fmt, ...) {
  if (findings++ >= MAX_FINDINGS) return;
  va_list ap;
  va_start(ap, fmt);
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  print_error("[  ERROR   ] --- %s\n", buf);
  size_t used = strlen(first_findings);
  if (findings <= 3 && used < sizeof first_findings - 8)
    snprintf(first_findings + used, sizeof first_findings - used, "%s%s",
             used ? "; " : "", buf);
}

static void inject(int how, const char *label) {
  long total_points = 0;
  findings = 0;
  first_findings[0] = '\0';
  for (int pi = 0; pi < NPROGRAMS; pi++) {
    const prog *p = &programs[pi];
    double expect[MAX_OUT], got[MAX_OUT];
    int nexpect = 0, ngot = 0;
    long leaked, count;
    /* A warm-up run initialises what libraries allocate once (OpenBLAS,
     * stdio), then the reference run counts the allocations. */
    ad_error_clear();
    assert_int_equal(p->fn(expect, &nexpect), AD_OK);
    ad_status st = run_once(p, how, 0, expect, &nexpect, &leaked, &count);
    if (st != AD_OK)
      fail_shown("%s: fails without injection: %s", p->name,
               ad_error_message());
    if (leaked)
      fail_shown("%s: %ld block(s) leaked without injection", p->name, leaked);
    check_clean_state(p->name, 0);
    assert_true(count > 0);
    long points = 0, failures = 0;
    for (long k = 1; k <= count; k = next_k(k, count)) {
      long ncalls;
      st = run_once(p, how, k, got, &ngot, &leaked, &ncalls);
      points++;
      if (st == AD_OK) {
        /* The failure was absorbed (an allocation that has a fallback):
         * the values must be those of the clean run. */
        bool same = ngot == nexpect;
        for (int i = 0; same && i < ngot; i++)
          same = got[i] == expect[i] ||
                 fabs(got[i] - expect[i]) <= 1e-12 * fabs(expect[i]);
        if (!same)
          finding("%s, %s k = %ld: succeeded with wrong values", p->name,
                  label, k);
      } else if (st == AD_ENOMEM) {
        failures++;
        if (!ad_error_message()[0])
          finding("%s, %s k = %ld: AD_ENOMEM without a message", p->name,
                  label, k);
      } else if (st == AD_EIO && p->files &&
                 strstr(ad_error_message(), "memory")) {
        /* stdio failing to allocate (fopen) is reported as an
         * input/output error naming ENOMEM's reason. */
        failures++;
      } else {
        finding("%s, %s k = %ld: ended in %s: %s", p->name, label, k,
                ad_strerror(st), ad_error_message());
      }
      ad_error_clear();
      if (leaked)
        finding("%s, %s k = %ld: %ld block(s) leaked", p->name, label, k,
                leaked);
      if (ad__scope_depth() != 0 || ad__contexts.n != 0 ||
          ad__contexts.global_pause || ad__contexts.active) {
        finding("%s, %s k = %ld: left %d scope(s) and %d tape(s) or "
                "level(s) open",
                p->name, label, k, ad__scope_depth(), ad__contexts.n);
        while (ad__scope_depth() > 0) ad_scope_end();
      }
      if (p->files && files_left() != 0)
        finding("%s, %s k = %ld: %d file(s) left behind", p->name, label, k,
                files_left());
    }
    /* Most points must actually fail the program. */
    assert_true(failures > 0);
    total_points += points;
    if (getenv("AD_ALLOC_FIGURES"))
      printf("alloc-failure | %s | %s | %ld allocations, %ld points tried, "
             "%ld ended in AD_ENOMEM\n",
             label, p->name, count, points, failures);
  }
  assert_false(table_full);
  if (findings)
    fail_shown("%d failure point(s) misbehaved; first: %s", findings,
             first_findings);
  if (getenv("AD_ALLOC_FIGURES"))
    printf("alloc-failure | %s | all programs | %ld points\n", label,
           total_points);
}

static void every_pool_allocation_fails_in_turn(void **state) {
  (void)state;
  inject(POOL, "pool");
}

#if !UNDER_SANITIZER
static void every_malloc_fails_in_turn(void **state) {
  (void)state;
  if (!malloc_injection_works()) {
    /* Sanitizer builds do not replace malloc; valgrind replaces ours. */
    print_message("malloc injection unavailable in this build (sanitizer "
                  "or valgrind); the pool injector still runs\n");
    skip();
  }
  inject(MALLOC, "malloc");
}

/* Regression: ad_scope_begin without memory for its frame array nests
 * into the enclosing scope, so the matching ad_scope_end closes the
 * caller's scope (releasing the caller's tensors early) or, from depth 0,
 * fails with AD_ESTATE while the tensors made in between, owned by
 * nobody, leak. */
static void scope_begin_out_of_memory_keeps_the_balance(void **state) {
  (void)state;
  if (!malloc_injection_works()) skip();
  ad_thread_cleanup();
  /* From depth 0: the first begin allocates the frame array. */
  malloc_arm(1);
  ad_scope_begin();
  ad_tensor *t = ad_ones(1, SHAPE(8));
  ad_status end = ad_scope_end();
  ad_thread_cleanup();
  long leaked = malloc_disarm();
  (void)t;
  ad_error_clear();
  if (end != AD_OK || ad__scope_depth() != 0 || leaked != 0)
    fail_shown("ad_scope_begin out of memory at depth 0: its ad_scope_end "
               "returned %s, depth is %d, %ld block(s) leaked",
               ad_strerror(end), ad__scope_depth(), leaked);
  /* At depth 16 the frame array grows: the caller's scope must survive
   * the inner begin's failure and its end. */
  for (int i = 0; i < 16; i++) ad_scope_begin();
  ad_tensor *mine = ad_full(1, SHAPE(8), 3.0);
  malloc_arm(1);
  ad_scope_begin();
  ad_tensor *tmp = ad_exp(mine);
  end = ad_scope_end();
  malloc_disarm();
  (void)tmp;
  ad_error_clear();
  if (end != AD_OK || ad__scope_depth() != 16)
    fail_shown("ad_scope_begin out of memory at depth 16: its ad_scope_end "
               "returned %s and left depth %d (the caller's scope closed "
               "early)",
               ad_strerror(end), ad__scope_depth());
  assert_tensor_near(mine, VALUES(3, 3, 3, 3, 3, 3, 3, 3), 8, 0);
  for (int i = 0; i < 16; i++) assert_int_equal(ad_scope_end(), AD_OK);
}

/* A call that runs out of memory fails as a whole: it returns NULL (or a
 * status), never a value while an error is recorded.  Regression: the
 * functional API kept its results with ad_keep and ignored ad_keep's own
 * failure, so the scope's end freed the gradient it then returned (a use
 * after free that -DAD_DEBUG_POOL builds catch). */
static ad_tensor *quartic(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(ad_square(x), ad_sin(x)));
}

typedef ad_tensor *(*call_fn)(ad_tensor *x, ad_tensor *v);
static ad_tensor *call_grad(ad_tensor *x, ad_tensor *v) {
  (void)v;
  return ad_grad(quartic, NULL, x);
}
static ad_tensor *call_value_and_grad(ad_tensor *x, ad_tensor *v) {
  (void)v;
  ad_tensor *value = NULL;
  ad_tensor *g = ad_value_and_grad(quartic, NULL, x, &value);
  return g && value ? g : NULL;
}
static ad_tensor *call_vjp(ad_tensor *x, ad_tensor *v) {
  return ad_vjp(rosenbrock, NULL, x, ad_sum_all(v), NULL);
}
static ad_tensor *call_jvp(ad_tensor *x, ad_tensor *v) {
  return ad_jvp(quartic, NULL, x, v, NULL);
}
static ad_tensor *call_hvp(ad_tensor *x, ad_tensor *v) {
  return ad_hvp(quartic, NULL, x, v);
}
static ad_tensor *call_hessian(ad_tensor *x, ad_tensor *v) {
  (void)v;
  return ad_hessian(quartic, NULL, x);
}
static ad_tensor *call_jacobian(ad_tensor *x, ad_tensor *v) {
  (void)v;
  return ad_jacobian(soft, NULL, x);
}

static void a_call_out_of_memory_returns_no_value(void **state) {
  (void)state;
  if (!malloc_injection_works()) skip();
  static const struct {
    const char *name;
    call_fn fn;
  } calls_[] = {{"ad_grad", call_grad},       {"ad_value_and_grad", call_value_and_grad},
                {"ad_vjp", call_vjp},         {"ad_jvp", call_jvp},
                {"ad_hvp", call_hvp},         {"ad_hessian", call_hessian},
                {"ad_jacobian", call_jacobian}};
  for (size_t c = 0; c < sizeof calls_ / sizeof calls_[0]; c++) {
    /* From depth 1, as user code runs; every allocation fails in turn. */
    long count = 0;
    for (long k = 0; k == 0 || k <= count; k++) {
      ad_thread_cleanup();
      ad_error_clear();
      ad_scope_begin();
      ad_tensor *x = ad_tensor_new(1, SHAPE(3), VALUES(0.5, -1.0, 2.0));
      ad_tensor *v = ad_tensor_new(1, SHAPE(3), VALUES(1.0, 0.5, -0.5));
      unsigned long errors = ad__error_count();
      malloc_arm(k);
      ad_tensor *r = calls_[c].fn(x, v);
      long made = calls;
      malloc_disarm();
      bool failed = ad__error_count() != errors;
      ad_scope_end();
      ad_error_clear();
      if (k == 0) {
        count = made;
        if (!r || failed)
          fail_shown("%s fails without injection", calls_[c].name);
      } else if (r && failed) {
        fail_shown("%s returned a tensor although allocation %ld failed "
                   "(and recorded an error)",
                   calls_[c].name, k);
      }
    }
  }
}

#endif /* !UNDER_SANITIZER */

static int make_dir(void **state) {
  (void)state;
  snprintf(ckpt_dir, sizeof ckpt_dir, "/tmp/ad_alloc_failure.XXXXXX");
  return mkdtemp(ckpt_dir) ? 0 : -1;
}

static int remove_dir(void **state) {
  (void)state;
  return rmdir(ckpt_dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_pool_allocation_fails_in_turn),
#if !UNDER_SANITIZER
      /* The malloc injector (skipped under valgrind, whose allocator
       * replaces it). */
      cmocka_unit_test(every_malloc_fails_in_turn),
      cmocka_unit_test(scope_begin_out_of_memory_keeps_the_balance),
      cmocka_unit_test(a_call_out_of_memory_returns_no_value),
#endif
  };
  return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
