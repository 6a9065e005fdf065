/* Thread stress: 8 threads, each running its own tapes (nested), forward
 * levels (nested), scopes (nested, with ad_keep), variables, custom ops,
 * gradient checkpointing, random numbers and errors, over immutable
 * tensors that all threads share (and watch on their tapes at once),
 * handing tensors to one another so that what one thread made another
 * releases, and calling one traced function together.  Every result must
 * equal, bit for bit, the single-threaded run of the same work; make tsan
 * runs it under ThreadSanitizer.
 *
 * Duration: AD_STRESS_SECONDS (default 2 s; 0.3 s under AD_TEST_QUICK or
 * a sanitizer).  Each thread does at least MIN_ROUNDS rounds whatever the
 * clock says.  docs/RELIABILITY.md says which objects may be shared. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "testutil.h"

#include "ad/trace.h"


#define NTHREADS 8
#define NVARIANTS 4 /* work items per thread, repeated round after round */
#define NRESULTS 24
#define MIN_ROUNDS 2
#define HANDOFF_N 1000 /* elements of a handed-off tensor: pooled storage */

static double seconds(void) {
  const char *s = getenv("AD_STRESS_SECONDS");
  if (s && *s) return atof(s);
  return test_quick() || UNDER_SANITIZER ? 0.3 : 2.0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- what all threads share ------------------------------------------- */

static ad_tensor *shared_data;   /* (6, 4), read by every thread */
static ad_tensor *shared_w;      /* (4,), watched by tapes on every thread */
static ad_function *shared_fn;   /* traced once, called by every thread */

/* Mailboxes: thread t posts into box t; thread t + 1 takes it. */
static pthread_mutex_t box_lock = PTHREAD_MUTEX_INITIALIZER;
static ad_tensor *box[NTHREADS];

/* ---- the work ----------------------------------------------------------- */

static ad_tensor *loss_fn(ad_tensor *w, void *ctx) {
  ad_tensor *data = ctx;
  return ad_sum_all(ad_tanh(ad_matmul(data, w)));
}

static ad_tensor *grad_norm(ad_tensor *w, void *ctx) {
  return ad_sum_all(ad_square(ad_grad(loss_fn, ctx, w)));
}

static ad_tensor *traced_f(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(ad_sin(x), ad_softplus(x)));
}

static ad_tensor *block(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_tanh(ad_mul(ad_exp(ad_mul_scalar(x, 0.3)), x));
}

static ad_tensor *checkpointed(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_checkpoint(block, NULL, ad_checkpoint(block, NULL, x)));
}

static ad_tensor *cube(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(test_cube(x));
}

/* Reads t's n values into out (NaN when t is NULL or the read fails). */
static void take(ad_tensor *t, double *out, int n) {
  if (!t || ad_numel(t) != n || ad_read(t, out, n) != AD_OK)
    for (int i = 0; i < n; i++) out[i] = NAN;
}

/* One work item for thread t, variant v: NRESULTS numbers into r.
 * Returns the number of unexpected states (errors left, wrong error
 * messages, scopes or levels not closing). */
static int work(int t, int v, double *r) {
  int bad = 0;
  double p = 0.5 + 0.125 * t + 0.03125 * v;
  if (ad_error() != AD_OK) bad++;
  ad_scope_begin();
  ad_seed((uint64_t)(t * 131 + v));
  ad_tensor *x = ad_rand_normal(1, SHAPE(4), p, 0.5);
  ad_tensor *w = ad_add(shared_w, ad_mul_scalar(x, 0.1));
  /* 1. Reverse mode over a shared tensor, watched by this thread's tape
   * while other threads' tapes watch it too. */
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, shared_w);
  ad_tensor *loss = ad_sum_all(ad_tanh(ad_matmul(shared_data,
                                                 ad_mul(shared_w, x))));
  if (ad_tape_end(tape) != AD_OK) bad++;
  take(ad_tape_gradient(tape, loss, shared_w), r + 0, 4);
  ad_tape_free(tape);
  /* 2. Grad of grad (nested tapes inside ad_grad). */
  take(ad_sum_all(ad_grad(grad_norm, shared_data, w)), r + 4, 1);
  /* 3. Forward over reverse, and two nested forward levels. */
  ad_tensor *u = ad_ones(1, SHAPE(4));
  take(ad_sum_all(ad_hvp(loss_fn, shared_data, w, u)), r + 5, 1);
  ad_tensor *s = ad_scalar(p), *one = ad_scalar(1.0);
  ad_fwd *outer = ad_fwd_begin(1, &s, &one);
  ad_fwd *inner = ad_fwd_begin(1, &s, &one);
  ad_tensor *d1 = ad_fwd_jvp(inner, ad_mul(ad_sin(s), ad_exp(s)));
  if (ad_fwd_end(inner) != AD_OK) bad++;
  take(ad_fwd_jvp(outer, d1), r + 6, 1);
  if (ad_fwd_end(outer) != AD_OK) bad++;
  take(d1, r + 7, 1);
  /* 4. Nested scopes with a kept tensor. */
  ad_scope_begin();
  ad_scope_begin();
  ad_tensor *kept = ad_keep(ad_softmax(ad_mul_scalar(x, p), 0));
  if (ad_scope_end() != AD_OK) bad++;
  kept = ad_keep(kept);
  if (ad_scope_end() != AD_OK) bad++;
  take(kept, r + 8, 4);
  /* 5. A variable of this thread, assigned and differentiated. */
  ad_var *var = ad_var_new("w", w);
  ad_tape *vt = ad_tape_begin(0);
  ad_tensor *vl = ad_sum_all(ad_square(ad_var_value(var)));
  if (ad_tape_end(vt) != AD_OK) bad++;
  ad_tensor *gv = NULL;
  if (ad_tape_var_gradients(vt, vl, 1, &var, &gv) != AD_OK) bad++;
  ad_tape_free(vt);
  if (ad_var_assign(var, ad_sub(ad_var_value(var), ad_mul_scalar(gv, 0.1))) !=
      AD_OK)
    bad++;
  take(ad_sum_all(ad_var_value(var)), r + 12, 1);
  ad_var_free(var);
  /* 6. A custom op (forward derived from its VJP) and checkpointing. */
  take(ad_grad(cube, NULL, x), r + 13, 4);
  take(ad_jvp(cube, NULL, x, u, NULL), r + 17, 1);
  take(ad_sum_all(ad_grad(checkpointed, NULL, x)), r + 18, 1);
  /* 7. The shared traced function. */
  ad_tensor *fv = NULL;
  ad_tensor *fg = ad_function_value_and_grad(shared_fn, x, &fv);
  take(fv, r + 19, 1);
  take(ad_sum_all(fg), r + 20, 1);
  /* 8. This thread's own error, with its own message. */
  if (ad_error() != AD_OK) bad++;
  int64_t n = 5 + t;
  char want[48];
  snprintf(want, sizeof want, "(4,) and (%d,)", 5 + t);
  if (ad_add(x, ad_zeros(1, &n)) || ad_error() != AD_ESHAPE ||
      !strstr(ad_error_message(), want))
    bad++;
  ad_error_clear();
  /* 9. Random numbers from this thread's generator. */
  take(ad_sum_all(ad_rand_uniform(1, SHAPE(3), -1, 1)), r + 21, 1);
  take(ad_logdet(ad_add(ad_eye(3), ad_full(2, SHAPE(3, 3), 0.1 * p))), r + 22,
       1);
  take(ad_max(x, 0, NULL, false), r + 23, 1);
  if (ad_scope_end() != AD_OK) bad++;
  return bad;
}

/* Posts a tensor made here into this thread's box and consumes the one
 * the previous thread posted: tensors made on one thread are released on
 * another.  Returns the number of wrong tensors received. */
static int handoff(int t, long round) {
  int bad = 0;
  /* No scope: the caller owns it until it is handed over. */
  double value = (double)(t * 100000 + round % 100000);
  ad_tensor *mine = ad_full(1, SHAPE(HANDOFF_N), value);
  ad_tensor *theirs;
  pthread_mutex_lock(&box_lock);
  ad_tensor *old = box[t];
  box[t] = mine;
  int from = (t + NTHREADS - 1) % NTHREADS;
  theirs = box[from];
  box[from] = NULL;
  pthread_mutex_unlock(&box_lock);
  ad_release(old); /* never taken: made here, released here */
  if (theirs) {
    double first;
    ad_scope_begin();
    ad_tensor *sum = ad_sum_all(theirs);
    first = ad_item(ad_slice(theirs, 0, 0, 1, 1));
    int sender = (int)(first / 100000);
    if (sender != from || ad_item(sum) != first * HANDOFF_N) bad++;
    ad_scope_end();
    ad_release(theirs);
  }
  return bad;
}

typedef struct worker {
  int t;
  double deadline;
  double (*expect)[NRESULTS];
  long rounds;
  long mismatches, bad_states, bad_handoffs;
} worker;

static void *run_worker(void *arg) {
  worker *w = arg;
  for (long i = 0; i < MIN_ROUNDS || now() < w->deadline; i++) {
    int v = (int)(i % NVARIANTS);
    double r[NRESULTS];
    w->bad_states += work(w->t, v, r);
    for (int j = 0; j < NRESULTS; j++)
      if (memcmp(&r[j], &w->expect[v][j], sizeof(double)) != 0)
        w->mismatches++;
    w->bad_handoffs += handoff(w->t, i);
    w->rounds++;
  }
  return NULL;
}

static int setup(void **state) {
  (void)state;
  ad_seed(2024);
  shared_data = ad_rand_normal(2, SHAPE(6, 4), 0, 1);
  shared_w = ad_rand_normal(1, SHAPE(4), 0, 0.5);
  ad_tensor *example = ad_ones(1, SHAPE(4));
  shared_fn = ad_trace(traced_f, NULL, example);
  ad_release(example);
  return shared_data && shared_w && shared_fn ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  ad_function_free(shared_fn);
  ad_release(shared_data);
  ad_release(shared_w);
  for (int t = 0; t < NTHREADS; t++) {
    ad_release(box[t]);
    box[t] = NULL;
  }
  return 0;
}

static void eight_threads_match_the_single_threaded_run(void **state) {
  (void)state;
  /* The single-threaded run of every work item, twice: the work must be
   * deterministic for the comparison to mean anything. */
  static double expect[NTHREADS][NVARIANTS][NRESULTS];
  for (int t = 0; t < NTHREADS; t++)
    for (int v = 0; v < NVARIANTS; v++) {
      double again[NRESULTS];
      assert_int_equal(work(t, v, expect[t][v]), 0);
      assert_int_equal(work(t, v, again), 0);
      for (int j = 0; j < NRESULTS; j++) {
        if (isnan(expect[t][v][j]))
          fail_shown("work(%d, %d) result %d is NaN: %s", t, v, j,
                   ad_error_message());
        assert_memory_equal(&again[j], &expect[t][v][j], sizeof(double));
      }
    }
  /* Spot checks against closed forms: d/ds (sin s e^s) = e^s (sin s + cos
   * s), and its derivative 2 e^s cos s. */
  double p = 0.5 + 0.125 * 3 + 0.03125 * 2;
  assert_true(fabs(expect[3][2][7] - exp(p) * (sin(p) + cos(p))) < 1e-12);
  assert_true(fabs(expect[3][2][6] - 2 * exp(p) * cos(p)) < 1e-12);
  pthread_t th[NTHREADS];
  worker w[NTHREADS];
  double deadline = now() + seconds();
  for (int t = 0; t < NTHREADS; t++) {
    w[t] = (worker){t, deadline, expect[t], 0, 0, 0, 0};
    assert_int_equal(pthread_create(&th[t], NULL, run_worker, &w[t]), 0);
  }
  long rounds = 0;
  for (int t = 0; t < NTHREADS; t++) {
    assert_int_equal(pthread_join(th[t], NULL), 0);
    rounds += w[t].rounds;
  }
  for (int t = 0; t < NTHREADS; t++) {
    if (w[t].mismatches || w[t].bad_states || w[t].bad_handoffs)
      fail_shown("thread %d: %ld result(s) differ from the single-threaded "
               "run, %ld bad state(s), %ld bad handoff(s) in %ld rounds",
               t, w[t].mismatches, w[t].bad_states, w[t].bad_handoffs,
               w[t].rounds);
  }
  if (getenv("AD_STRESS_FIGURES"))
    printf("stress | %d threads | %.1f s | %ld rounds\n", NTHREADS, seconds(),
           rounds);
  /* The shared tensors are intact. */
  double again[NRESULTS];
  assert_int_equal(work(5, 1, again), 0);
  assert_memory_equal(again, expect[5][1], sizeof again);
}

/* What sharing a thread's tape or level does: an error, not a crash (the
 * owner is checked first), while the owner keeps using it. */
typedef struct intruder {
  ad_tape *tape;
  ad_fwd *acc;
  ad_tensor *x;
  ad_status watch, end, fwd_end;
  bool jvp_null;
} intruder;

static void *intrude(void *arg) {
  intruder *in = arg;
  in->watch = ad_tape_watch(in->tape, in->x);
  in->end = ad_tape_end(in->tape);
  in->jvp_null = ad_fwd_jvp(in->acc, in->x) == NULL;
  in->fwd_end = ad_fwd_end(in->acc);
  ad_error_clear();
  return NULL;
}

static void another_threads_tapes_and_levels_are_refused(void **state) {
  (void)state;
  ad_scope_begin();
  ad_tensor *x = ad_scalar(2.0), *one = ad_scalar(1.0);
  ad_fwd *acc = ad_fwd_begin(1, &x, &one);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  pthread_t th[NTHREADS];
  intruder in[NTHREADS];
  for (int t = 0; t < NTHREADS; t++) {
    in[t] = (intruder){tape, acc, x, AD_OK, AD_OK, AD_OK, false};
    assert_int_equal(pthread_create(&th[t], NULL, intrude, &in[t]), 0);
  }
  /* The owner records meanwhile. */
  ad_tensor *y = x;
  for (int i = 0; i < 200; i++) y = ad_sin(y);
  for (int t = 0; t < NTHREADS; t++) {
    assert_int_equal(pthread_join(th[t], NULL), 0);
    assert_int_equal(in[t].watch, AD_ESTATE);
    assert_int_equal(in[t].end, AD_ESTATE);
    assert_true(in[t].jvp_null);
    assert_int_equal(in[t].fwd_end, AD_ESTATE);
  }
  assert_int_equal(ad_error(), AD_OK);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  ad_tensor *g = ad_tape_gradient(tape, y, x);
  ad_tensor *d = ad_fwd_jvp(acc, y);
  assert_non_null(g);
  assert_tensors_close(g, d, 1e-12);
  ad_tape_free(tape);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
  ad_scope_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(eight_threads_match_the_single_threaded_run),
      cmocka_unit_test(another_threads_tapes_and_levels_are_refused),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
