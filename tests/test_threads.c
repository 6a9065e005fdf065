/* Tests that tapes, forward levels, scopes and errors belong to one thread
 * each, so that threads differentiate at once, sharing immutable tensors. */
#include <pthread.h>

#include "testutil.h"

#define NTHREADS 4
#define NRESULTS 10

static int iterations(void) { return test_quick() ? 10 : 500; }

/* ---- a workload touching every per-thread facility -------------------- */

static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *a = ad_slice(x, 0, 0, n - 1, 1);
  ad_tensor *b = ad_slice(x, 0, 1, n, 1);
  ad_tensor *t1 = ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))), 100.0);
  ad_tensor *t2 = ad_square(ad_add_scalar(ad_neg(a), 1.0));
  return ad_sum_all(ad_add(t1, t2));
}

/* Reads n values of t into out. */
static void take(ad_tensor *t, double *out, int64_t n) {
  if (!t || ad_read(t, out, n) != AD_OK)
    for (int64_t i = 0; i < n; i++) out[i] = NAN;
}

/* Runs one round of work for parameter k and writes NRESULTS numbers.
 * Returns the number of unexpected error states seen. */
static int workload(int k, double *r) {
  int bad = 0;
  double p = 1.0 + 0.25 * k;
  ad_scope_begin();
  /* A tape: d/dx sum(sin(p x)) = p cos(p x) at x = (0.1, 0.2). */
  ad_tensor *x = ad_tensor_new(1, SHAPE(2), VALUES(0.1, 0.2));
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_sum_all(ad_sin(ad_mul_scalar(x, p)));
  ad_tape_end(tape);
  take(ad_tape_gradient(tape, y, x), r, 2);
  ad_tape_free(tape);
  /* Nested tapes: d^2/dx^2 x^3 = 6x at x = p. */
  ad_tensor *s = ad_scalar(p);
  ad_tape *outer = ad_tape_begin(0), *inner;
  ad_tape_watch(outer, s);
  inner = ad_tape_begin(0);
  ad_tape_watch(inner, s);
  ad_tensor *c = ad_mul(ad_mul(s, s), s);
  ad_tape_end(inner);
  ad_tensor *d1 = ad_tape_gradient(inner, c, s);
  ad_tape_end(outer);
  take(ad_tape_gradient(outer, d1, s), r + 2, 1);
  ad_tape_free(inner);
  ad_tape_free(outer);
  /* A forward level: d/dt exp(p t) at t = 0.5. */
  ad_tensor *t = ad_scalar(0.5), *one = ad_scalar(1.0);
  ad_fwd *acc = ad_fwd_begin(1, &t, &one);
  take(ad_fwd_jvp(acc, ad_exp(ad_mul_scalar(t, p))), r + 3, 1);
  if (ad_fwd_end(acc) != AD_OK) bad++;
  /* A Hessian-vector product through the functional API. */
  ad_tensor *z = ad_tensor_new(1, SHAPE(3), VALUES(0.5 * p, 1.0, -0.5));
  ad_tensor *v = ad_tensor_new(1, SHAPE(3), VALUES(1.0, -1.0, 2.0));
  take(ad_hvp(rosenbrock, NULL, z, v), r + 4, 3);
  /* A variable's implicit gradient: d/dw sum(w^2) = 2 w. */
  ad_var *w = ad_var_new("w", ad_tensor_new(1, SHAPE(2), VALUES(p, -p)));
  ad_tape *vt = ad_tape_begin(0);
  ad_tensor *loss = ad_sum_all(ad_square(ad_var_value(w)));
  ad_tape_end(vt);
  ad_tensor *gw = NULL;
  if (ad_tape_var_gradients(vt, loss, 1, &w, &gw) != AD_OK) bad++;
  take(gw, r + 7, 2);
  ad_tape_free(vt);
  ad_var_free(w);
  /* An error of this thread's own, with its own message. */
  if (ad_error() != AD_OK) bad++;
  int64_t n = 3 + k;
  ad_tensor *e = ad_add(x, ad_zeros(1, &n));
  char want[64];
  snprintf(want, sizeof want, "(2,) and (%d,)", 3 + k);
  if (e || ad_error() != AD_ESHAPE || !strstr(ad_error_message(), want))
    bad++;
  ad_error_clear();
  r[9] = (double)ad_numel(e ? e : x);
  if (ad_scope_end() != AD_OK) bad++;
  return bad;
}

typedef struct {
  int k;
  const double *expect;
  int rounds;
  int mismatches;
  int bad_states;
} worker;

static void *run_worker(void *arg) {
  worker *w = arg;
  for (int i = 0; i < w->rounds; i++) {
    double r[NRESULTS];
    w->bad_states += workload(w->k, r);
    for (int j = 0; j < NRESULTS; j++)
      if (!(r[j] == w->expect[j])) w->mismatches++;
  }
  return NULL;
}

static void four_threads_differentiate_at_once(void **state) {
  (void)state;
  /* The single-threaded results first. */
  double expect[NTHREADS][NRESULTS];
  for (int k = 0; k < NTHREADS; k++) {
    assert_int_equal(workload(k, expect[k]), 0);
    for (int j = 0; j < NRESULTS; j++) assert_false(isnan(expect[k][j]));
  }
  /* Spot-check the reference against closed forms. */
  double p = 1.5;
  assert_true(fabs(expect[2][0] - p * cos(0.1 * p)) < 1e-12);
  assert_true(fabs(expect[2][2] - 6 * p) < 1e-12);
  assert_true(fabs(expect[2][3] - p * exp(0.5 * p)) < 1e-12);
  assert_true(fabs(expect[2][7] - 2 * p) < 1e-12);
  pthread_t th[NTHREADS];
  worker w[NTHREADS];
  for (int k = 0; k < NTHREADS; k++) {
    w[k] = (worker){k, expect[k], iterations(), 0, 0};
    assert_int_equal(pthread_create(&th[k], NULL, run_worker, &w[k]), 0);
  }
  for (int k = 0; k < NTHREADS; k++) {
    assert_int_equal(pthread_join(th[k], NULL), 0);
    assert_int_equal(w[k].mismatches, 0);
    assert_int_equal(w[k].bad_states, 0);
  }
}

/* ---- ownership of tapes and levels ------------------------------------- */

typedef struct {
  ad_tape *tape;
  ad_fwd *acc;
  ad_tensor *x, *y;
  ad_status watch, end, gradients, var_gradients, fwd_end;
  bool gradient_null, jvp_null, message_ok;
  ad_status error_at_start;
} intruder;

static void *intrude(void *arg) {
  intruder *in = arg;
  in->error_at_start = ad_error();
  in->watch = ad_tape_watch(in->tape, in->x);
  in->message_ok = strstr(ad_error_message(), "another thread") != NULL;
  in->end = ad_tape_end(in->tape);
  in->gradient_null = ad_tape_gradient(in->tape, in->y, in->x) == NULL;
  ad_tensor *g = NULL;
  in->gradients =
      ad_tape_gradients(in->tape, in->y, NULL, 1, &in->x, &g, 0);
  in->var_gradients = ad_tape_var_gradients(in->tape, in->y, 0, NULL, NULL);
  ad_tape_free(in->tape); /* refused: the tape is not this thread's */
  in->jvp_null = ad_fwd_jvp(in->acc, in->y) == NULL;
  in->fwd_end = ad_fwd_end(in->acc);
  ad_error_clear();
  return NULL;
}

static void tape_used_from_another_thread_is_estate(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *one = ad_scalar(1.0);
  ad_fwd *acc = ad_fwd_begin(1, &x, &one);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_square(x);
  intruder in = {.tape = tape, .acc = acc, .x = x, .y = y};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, intrude, &in), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(in.error_at_start, AD_OK);
  assert_int_equal(in.watch, AD_ESTATE);
  assert_true(in.message_ok);
  assert_int_equal(in.end, AD_ESTATE);
  assert_true(in.gradient_null);
  assert_int_equal(in.gradients, AD_ESTATE);
  assert_int_equal(in.var_gradients, AD_ESTATE);
  assert_true(in.jvp_null);
  assert_int_equal(in.fwd_end, AD_ESTATE);
  /* The owner's state is untouched: no error here, and the tape and level
   * still work. */
  assert_int_equal(ad_error(), AD_OK);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(4.0), 1, 1e-12);
  assert_tensor_near(ad_fwd_jvp(acc, y), VALUES(4.0), 1, 1e-12);
  ad_tape_free(tape);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
}

/* ---- errors and scopes per thread -------------------------------------- */

typedef struct {
  ad_status seen_at_start, own, scope_end;
  char message[128];
} error_probe;

static void *probe_errors(void *arg) {
  error_probe *p = arg;
  p->seen_at_start = ad_error();
  /* This thread has no scope open, whatever the main thread has. */
  p->scope_end = ad_scope_end();
  ad_error_clear();
  /* Without a scope this thread owns what it makes. */
  ad_tensor *m = ad_eye(2), *c = ad_ones(2, SHAPE(3, 1));
  ad_tensor *r = ad_matmul(m, c);
  p->own = ad_error();
  snprintf(p->message, sizeof p->message, "%s", ad_error_message());
  ad_release(r);
  ad_release(c);
  ad_release(m);
  return NULL;
}

static void errors_and_scopes_are_per_thread(void **state) {
  (void)state;
  assert_null(ad_add(ad_ones(1, SHAPE(2)), ad_ones(1, SHAPE(5))));
  error_probe p = {0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, probe_errors, &p), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(p.seen_at_start, AD_OK);
  assert_int_equal(p.scope_end, AD_ESTATE);
  assert_int_equal(p.own, AD_ESHAPE);
  assert_non_null(strstr(p.message, "ad_matmul"));
  /* The main thread still has its own error, not the thread's. */
  assert_error(AD_ESHAPE, "ad_add");
}

/* ---- shared immutable tensors ------------------------------------------ */

typedef struct {
  ad_tensor *data, *w0; /* shared, read-only */
  const double *expect;
  int n, rounds, mismatches;
} sharer;

static ad_tensor *shared_loss(ad_tensor *w, void *ctx) {
  ad_tensor *data = ctx;
  return ad_sum_all(ad_tanh(ad_matmul(data, w)));
}

static void *use_shared(void *arg) {
  sharer *s = arg;
  double g[16];
  for (int i = 0; i < s->rounds; i++) {
    ad_scope_begin();
    /* Tapes on several threads watch the same shared tensor at once. */
    ad_tape *tape = ad_tape_begin(0);
    ad_tape_watch(tape, s->w0);
    ad_tensor *loss = shared_loss(s->w0, s->data);
    ad_tape_end(tape);
    take(ad_tape_gradient(tape, loss, s->w0), g, s->n);
    ad_tape_free(tape);
    for (int j = 0; j < s->n; j++)
      if (!(g[j] == s->expect[j])) s->mismatches++;
    take(ad_grad(shared_loss, s->data, s->w0), g, s->n);
    for (int j = 0; j < s->n; j++)
      if (!(g[j] == s->expect[j])) s->mismatches++;
    ad_scope_end();
  }
  return NULL;
}

static void immutable_tensors_are_shared_between_threads(void **state) {
  (void)state;
  ad_seed(7);
  ad_tensor *data = ad_rand_normal(2, SHAPE(16, 8), 0, 1);
  ad_tensor *w0 = ad_rand_normal(1, SHAPE(8), 0, 0.3);
  double expect[8];
  take(ad_grad(shared_loss, data, w0), expect, 8);
  assert_false(isnan(expect[0]));
  /* g_j = sum_i data_ij (1 - tanh^2(data w)_i), a non-trivial value. */
  assert_true(fabs(expect[0]) > 0);
  pthread_t th[NTHREADS];
  sharer s[NTHREADS];
  for (int k = 0; k < NTHREADS; k++) {
    s[k] = (sharer){data, w0, expect, 8, iterations(), 0};
    assert_int_equal(pthread_create(&th[k], NULL, use_shared, &s[k]), 0);
  }
  for (int k = 0; k < NTHREADS; k++) {
    assert_int_equal(pthread_join(th[k], NULL), 0);
    assert_int_equal(s[k].mismatches, 0);
  }
  /* The shared tensors are intact. */
  double again[8];
  take(ad_grad(shared_loss, data, w0), again, 8);
  assert_memory_equal(again, expect, sizeof expect);
}

/* ---- random generators per thread -------------------------------------- */

static void *draw_seeded(void *arg) {
  double *out = arg;
  ad_seed(99);
  ad_tensor *t = ad_rand_uniform(1, SHAPE(4), 0, 1);
  take(t, out, 4);
  ad_release(t);
  return NULL;
}

static void seeded_generators_are_per_thread(void **state) {
  (void)state;
  double mine[4], theirs[NTHREADS][4];
  ad_seed(99);
  take(ad_rand_uniform(1, SHAPE(4), 0, 1), mine, 4);
  pthread_t th[NTHREADS];
  for (int k = 0; k < NTHREADS; k++)
    assert_int_equal(pthread_create(&th[k], NULL, draw_seeded, theirs[k]),
                     0);
  for (int k = 0; k < NTHREADS; k++) {
    assert_int_equal(pthread_join(th[k], NULL), 0);
    assert_memory_equal(theirs[k], mine, sizeof mine);
  }
  /* The main thread's stream went on undisturbed by the threads' seeds. */
  double next[4];
  take(ad_rand_uniform(1, SHAPE(4), 0, 1), next, 4);
  ad_seed(99);
  double replay[8];
  take(ad_rand_uniform(1, SHAPE(8), 0, 1), replay, 8);
  assert_memory_equal(replay + 4, next, sizeof next);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(four_threads_differentiate_at_once),
      scoped_test(tape_used_from_another_thread_is_estate),
      scoped_test(errors_and_scopes_are_per_thread),
      scoped_test(immutable_tensors_are_shared_between_threads),
      scoped_test(seeded_generators_are_per_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
