/* Benchmarks of tracing (issue 10): the scalar Rosenbrock function written
 * with one-element tensors in a C loop, replayed (forward, gradient,
 * Hessian-vector product) against plain C and against ADOL-C's gradient()
 * and hess_vec() on its tape, alternating rounds with the ADOL-C peer.
 *
 * Usage: bench_trace [PEER]   PEER: the adolc_trace_peer program (figures
 * against ADOL-C are skipped without it). */
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

#include <ad/trace.h>

#define ROUNDS 7 /* alternations with the peer; medians of their medians */
#define REPS 9   /* timed blocks per round */

/* f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2, one element at a
 * time, as ADOL-C's adouble code writes it. */
static ad_tensor *rosen_scalar(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_numel(x);
  ad_tensor *f = ad_scalar(0.0);
  for (int64_t i = 0; i + 1 < n; i++) {
    ad_tensor *a = ad_slice(x, 0, i, i + 1, 1);
    ad_tensor *b = ad_slice(x, 0, i + 1, i + 2, 1);
    ad_tensor *t = ad_sub(b, ad_square(a));
    ad_tensor *u = ad_add_scalar(ad_neg(a), 1.0);
    f = ad_add(f, ad_add(ad_mul_scalar(ad_square(t), 100.0), ad_square(u)));
  }
  return f;
}

/* The same in plain C doubles. */
static double rosen_c(const double *x, int64_t n) {
  double f = 0;
  for (int64_t i = 0; i + 1 < n; i++) {
    double t = x[i + 1] - x[i] * x[i], u = 1 - x[i];
    f += 100 * t * t + u * u;
  }
  return f;
}

/* ------------------------------------------------------------------------
 * The peer: a child process answering "N REPS" with "GRAD_US HV_US".
 * ---------------------------------------------------------------------- */

typedef struct peer {
  pid_t pid;
  FILE *to, *from;
} peer;

static bool peer_start(peer *p, const char *path) {
  int in[2], out[2];
  if (pipe(in) != 0) return false;
  if (pipe(out) != 0) {
    close(in[0]);
    close(in[1]);
    return false;
  }
  p->pid = fork();
  if (p->pid < 0) return false;
  if (p->pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    execl(path, path, (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  p->to = fdopen(in[1], "w");
  p->from = fdopen(out[0], "r");
  return p->to && p->from;
}

static bool peer_ask(peer *p, int64_t n, double *grad_us, double *hv_us) {
  fprintf(p->to, "%lld %d\n", (long long)n, REPS);
  fflush(p->to);
  return fscanf(p->from, "%lf %lf", grad_us, hv_us) == 2;
}

static void peer_stop(peer *p) {
  fclose(p->to);
  fclose(p->from);
  waitpid(p->pid, NULL, 0);
}

/* ------------------------------------------------------------------------
 * Timing
 * ---------------------------------------------------------------------- */

typedef enum { K_FWD, K_GRAD, K_HVP, K_EAGER_GRAD, K_C } kind;

typedef struct work {
  ad_function *fn;
  ad_tensor *x, *v;
  const double *xs;
  int64_t n;
} work;

static volatile double sink;

static void run_once(const work *w, kind k) {
  ad_scope_begin();
  ad_tensor *value = NULL, *r = NULL;
  switch (k) {
  case K_FWD: r = ad_function_call(w->fn, w->x); break;
  case K_GRAD: r = ad_function_value_and_grad(w->fn, w->x, &value); break;
  case K_HVP: r = ad_function_hvp(w->fn, w->x, w->v); break;
  case K_EAGER_GRAD:
    r = ad_value_and_grad(rosen_scalar, NULL, w->x, &value);
    break;
  case K_C: sink = rosen_c(w->xs, w->n); r = w->x; break;
  }
  bench_check(r, "a replay");
  ad_scope_end();
}

/* Median over REPS blocks of the time of one run, in us (a block repeats
 * the run until it lasts ~0.2 ms). */
static double time_us(const work *w, kind k) {
  int per = 1;
  for (;;) {
    double t0 = bench_now();
    for (int i = 0; i < per; i++) run_once(w, k);
    if (bench_now() - t0 > 2e-4 || per > 1 << 20) break;
    per *= 2;
  }
  double t[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = bench_now();
    for (int i = 0; i < per; i++) run_once(w, k);
    t[r] = (bench_now() - t0) / per * 1e6;
  }
  return bench_median(t, REPS);
}

/* Largest relative error of the replayed gradient and H v (v = ones)
 * against the closed forms. */
static double check(const work *w) {
  ad_scope_begin();
  int64_t n = w->n;
  double *g = malloc((size_t)n * sizeof *g), *h = malloc((size_t)n * sizeof *h);
  bench_check(g && h ? g : NULL, "malloc");
  bench_check_status(ad_read(ad_function_grad(w->fn, w->x), g, n), "grad");
  bench_check_status(ad_read(ad_function_hvp(w->fn, w->x, w->v), h, n),
                     "hvp");
  const double *x = w->xs;
  double err = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = 0, hv = 0;
    if (i < n - 1) {
      e += -400 * x[i] * (x[i + 1] - x[i] * x[i]) - 2 * (1 - x[i]);
      hv += (1200 * x[i] * x[i] - 400 * x[i + 1] + 2) - 400 * x[i];
    }
    if (i > 0) {
      e += 200 * (x[i] - x[i - 1] * x[i - 1]);
      hv += 200 - 400 * x[i - 1];
    }
    err = fmax(err, fabs(g[i] - e) / (1 + fabs(e)));
    err = fmax(err, fabs(h[i] - hv) / (1 + fabs(hv)));
  }
  free(g);
  free(h);
  ad_scope_end();
  return err;
}

static void bench_n(int64_t n, peer *p) {
  char c[64];
  int exp10 = 0;
  for (int64_t m = n; m >= 10; m /= 10) exp10++;
  snprintf(c, sizeof c, "rosenbrock scalar n=1e%d", exp10);
  ad_scope_begin();
  ad_tensor *x = ad_keep(ad_linspace(-1.2, 1.0, n));
  ad_tensor *v = ad_keep(ad_ones(1, &n));
  ad_scope_end();
  double *xs = malloc((size_t)n * sizeof *xs);
  bench_check(xs, "malloc");
  bench_check_status(ad_read(x, xs, n), "ad_read");
  /* One-time costs: tracing f and deriving its programs. */
  double t0 = bench_now();
  ad_function *fn = ad_trace(rosen_scalar, NULL, x);
  bench_check(fn, "ad_trace");
  double t1 = bench_now();
  work w = {fn, x, v, xs, n};
  run_once(&w, K_GRAD);
  double t2 = bench_now();
  run_once(&w, K_HVP);
  double t3 = bench_now();
  bench_line(c, "libad", "trace f (one time)", (t1 - t0) * 1e3, "ms");
  bench_line(c, "libad", "trace the gradient program (one time)",
             (t2 - t1) * 1e3, "ms");
  bench_line(c, "libad", "trace the Hessian-vector program (one time)",
             (t3 - t2) * 1e3, "ms");
  double err = check(&w);
  if (err > 1e-9) printf("# %s: replayed derivatives off by %g\n", c, err);

  double fwd[ROUNDS], grad[ROUNDS], hvp[ROUNDS], cc[ROUNDS];
  double agrad[ROUNDS], ahv[ROUNDS];
  bool have_peer = p != NULL;
  for (int r = 0; r < ROUNDS; r++) {
    if (have_peer && !peer_ask(p, n, &agrad[r], &ahv[r])) {
      printf("# adolc peer stopped answering; its figures are skipped\n");
      have_peer = false;
    }
    fwd[r] = time_us(&w, K_FWD);
    cc[r] = time_us(&w, K_C);
    grad[r] = time_us(&w, K_GRAD);
    hvp[r] = time_us(&w, K_HVP);
  }
  double mf = bench_median(fwd, ROUNDS), mc = bench_median(cc, ROUNDS);
  double mg = bench_median(grad, ROUNDS), mh = bench_median(hvp, ROUNDS);
  bench_line(c, "libad", "replayed forward", mf, "us");
  bench_line(c, "C", "plain double code", mc, "us");
  bench_line(c, "libad", "replayed forward / plain C", mf / mc, "x");
  bench_line(c, "libad", "replayed gradient", mg, "us");
  bench_line(c, "libad", "replayed hess_vec", mh, "us");
  if (have_peer) {
    double ag = bench_median(agrad, ROUNDS), ah = bench_median(ahv, ROUNDS);
    bench_line(c, "adolc", "gradient() on its tape", ag, "us");
    bench_line(c, "adolc", "hess_vec() on its tape", ah, "us");
    bench_line(c, "libad", "replayed gradient / adolc gradient()", mg / ag,
               "x");
    bench_line(c, "libad", "replayed hess_vec / adolc hess_vec()", mh / ah,
               "x");
  }
  /* Eager reverse mode on the same code (its slices make it quadratic in
   * n, so only the small sizes). */
  if (n <= 1000) {
    double e = time_us(&w, K_EAGER_GRAD);
    bench_line(c, "libad", "eager gradient (ad_value_and_grad)", e, "us");
    bench_line(c, "libad", "eager gradient / replayed gradient", e / mg, "x");
  }
  ad_function_stats st;
  ad_function_get_stats(ad_function_value_and_grad_fn(fn), &st);
  bench_line(c, "libad", "gradient program instructions",
             (double)st.instructions, "count");
  ad_function_free(fn);
  ad_release(x);
  ad_release(v);
  free(xs);
}

int main(int argc, char **argv) {
  bench_canary("start of bench_trace");
  peer p, *pp = NULL;
  if (argc > 1) {
    signal(SIGPIPE, SIG_IGN);
    if (peer_start(&p, argv[1]))
      pp = &p;
    else
      printf("# adolc peer %s could not start; its figures are skipped\n",
             argv[1]);
  } else {
    printf("# no adolc peer given; figures against ADOL-C are skipped\n");
  }
  static const int64_t sizes[] = {100, 1000, 10000};
  for (int i = 0; i < 3; i++) bench_n(sizes[i], pp);
  if (pp) peer_stop(pp);
  bench_canary("end of bench_trace");
  return 0;
}
