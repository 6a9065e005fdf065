/* libad's side of bench-compare: a server that times one sample of a case
 * per request (eager overhead, MLP step, vectorized and scalar Rosenbrock)
 * for bench/compare/driver.py, which alternates it with the peers. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>

#include "bench_util.h"

/* Protocol (one request and one reply per line):
 *   run CASE N MINSEC  ->  "ok key=value ..."  (medians over repetitions of
 *                          the case for at least MINSEC seconds, >= 3 reps)
 *                      or  "skip REASON" / "error MESSAGE"
 *   quit
 * Cases: eager (N ops of y = y*a + b), mlp64, rosen (vectorized, size N),
 * rscalar (scalar loop, size N), canary. */

#define MAXREP 100000

typedef struct sample {
  int n;
  double *v; /* up to MAXREP values */
} sample;

static void sample_add(sample *s, double v) {
  if (s->n < MAXREP) s->v[s->n++] = v;
}

/* ------------------------------------------------------------------------
 * eager: the chain y = y*a + b on 1-element tensors, a scope (ad_keep of
 * y) every 1000 ops: without AD, recorded on a tape watching a and b, and
 * the backward pass d y / d(a, b) with the tape freed.
 * ---------------------------------------------------------------------- */

#define BLOCK 1000

typedef struct chain_result {
  double noad, tape, bwd; /* seconds */
  double y, da, db;
} chain_result;

static ad_tensor *chain(ad_tensor *y, ad_tensor *a, ad_tensor *b, int64_t n) {
  ad_retain(y);
  for (int64_t i = 0; i < n; i += BLOCK) {
    ad_scope_begin();
    ad_tensor *z = y;
    int64_t m = n - i < BLOCK ? n - i : BLOCK;
    for (int64_t j = 0; j < m / 2; j++) z = ad_add(ad_mul(z, a), b);
    bench_check(z, "chain");
    ad_keep(z);
    ad_scope_end();
    ad_release(y);
    y = z;
  }
  return y; /* caller-owned */
}

static chain_result eager_once(int64_t nops) {
  const int64_t one[1] = {1};
  const double av = 0.5, bv = 1.0, yv = 0.0;
  chain_result r;
  ad_tensor *a = ad_tensor_new(1, one, &av), *b = ad_tensor_new(1, one, &bv);
  ad_tensor *y0 = ad_tensor_new(1, one, &yv);
  bench_check(a && b && y0 ? a : NULL, "ad_tensor_new");
  double t0 = bench_now();
  ad_tensor *y = chain(y0, a, b, nops);
  double t1 = bench_now();
  ad_release(y);
  ad_tape *tape = ad_tape_begin(0);
  bench_check(tape, "ad_tape_begin");
  ad_tape_watch(tape, a);
  ad_tape_watch(tape, b);
  double t2 = bench_now();
  y = chain(y0, a, b, nops);
  ad_tape_end(tape);
  double t3 = bench_now();
  ad_scope_begin();
  ad_tensor *src[2] = {a, b}, *g[2];
  bench_check_status(ad_tape_gradients(tape, y, NULL, 2, src, g, 0),
                     "ad_tape_gradients");
  r.da = ad_item(g[0]);
  r.db = ad_item(g[1]);
  ad_scope_end();
  ad_tape_free(tape);
  double t4 = bench_now();
  r.y = ad_item(y);
  ad_release(y);
  ad_release(y0);
  ad_release(a);
  ad_release(b);
  r.noad = t1 - t0;
  r.tape = t3 - t2;
  r.bwd = t4 - t3;
  return r;
}

static void case_eager(int64_t nops, double minsec) {
  sample s[3];
  static double buf[3][MAXREP];
  for (int k = 0; k < 3; k++) s[k] = (sample){0, buf[k]};
  chain_result r = eager_once(nops / 10 + 2); /* warm the free lists */
  double start = bench_now();
  while (s[0].n < 3 || bench_now() - start < minsec) {
    r = eager_once(nops);
    sample_add(&s[0], r.noad / (double)nops * 1e9);
    sample_add(&s[1], r.tape / (double)nops * 1e9);
    sample_add(&s[2], r.bwd / (double)nops * 1e9);
    if (s[0].n >= MAXREP) break;
  }
  printf("ok noad_ns=%.6g tape_ns=%.6g bwd_ns=%.6g reps=%d chk=%.17g\n",
         bench_median(s[0].v, s[0].n), bench_median(s[1].v, s[1].n),
         bench_median(s[2].v, s[2].n), s[0].n, r.y + r.da + r.db);
}

/* ------------------------------------------------------------------------
 * mlp64: one training step of a 784-256-256-10 tanh MLP, softmax
 * cross-entropy, batch 128, double: forward, backward, SGD update
 * (variables, read under the tape and assigned after).
 * ---------------------------------------------------------------------- */

enum { MB = 128, MD = 784, MH1 = 256, MH2 = 256, MC = 10 };

typedef struct mlp {
  ad_var *W[3], *b[3];
  ad_tensor *X, *Y; /* caller-owned */
} mlp;

static mlp *mlp_get(void) {
  static mlp m;
  static bool ready = false;
  if (ready) return &m;
  const int dims[4] = {MD, MH1, MH2, MC};
  ad_seed(1234);
  ad_scope_begin();
  for (int l = 0; l < 3; l++) {
    double bound = 1.0 / sqrt((double)dims[l]);
    int64_t ws[2] = {dims[l], dims[l + 1]}, bs[1] = {dims[l + 1]};
    m.W[l] = ad_var_new("W", ad_rand_uniform(2, ws, -bound, bound));
    m.b[l] = ad_var_new("b", ad_rand_uniform(1, bs, -bound, bound));
    bench_check(m.W[l] && m.b[l] ? m.W[l] : NULL, "ad_var_new");
  }
  int64_t xs[2] = {MB, MD}, ys[2] = {MB, MC};
  m.X = ad_keep(ad_rand_normal(2, xs, 0, 1));
  static double y[MB * MC];
  for (int i = 0; i < MB; i++) y[i * MC + (i * 7) % MC] = 1.0;
  m.Y = ad_keep(ad_tensor_new(2, ys, y));
  bench_check(m.X && m.Y ? m.X : NULL, "mlp data");
  ad_scope_end();
  ready = true;
  return &m;
}

static double mlp_step(mlp *m, double lr) {
  double t0 = bench_now();
  ad_scope_begin();
  ad_tape *tape = ad_tape_begin(0);
  bench_check(tape, "ad_tape_begin");
  ad_tensor *h = m->X;
  for (int l = 0; l < 3; l++) {
    h = ad_add(ad_matmul(h, ad_var_value(m->W[l])), ad_var_value(m->b[l]));
    if (l < 2) h = ad_tanh(h);
  }
  ad_tensor *loss = ad_mul_scalar(
      ad_sum_all(ad_mul(m->Y, ad_log_softmax(h, 1))), -1.0 / (double)MB);
  bench_check(loss, "mlp forward");
  ad_tape_end(tape);
  ad_var *vars[6] = {m->W[0], m->b[0], m->W[1], m->b[1], m->W[2], m->b[2]};
  ad_tensor *g[6];
  bench_check_status(ad_tape_var_gradients(tape, loss, 6, vars, g),
                     "mlp backward");
  ad_tape_free(tape);
  for (int i = 0; i < 6; i++)
    bench_check_status(
        ad_var_assign(vars[i], ad_sub(ad_var_value(vars[i]),
                                      ad_mul_scalar(g[i], lr))),
        "SGD update");
  ad_scope_end();
  return bench_now() - t0;
}

static void case_mlp(double minsec) {
  static double buf[MAXREP];
  sample s = {0, buf};
  mlp *m = mlp_get();
  for (int i = 0; i < 2; i++) mlp_step(m, 1e-3);
  double start = bench_now();
  while (s.n < 3 || bench_now() - start < minsec)
    sample_add(&s, mlp_step(m, 1e-3) * 1e3);
  printf("ok step_ms=%.6g reps=%d\n", bench_median(s.v, s.n), s.n);
}

/* ------------------------------------------------------------------------
 * rosen: the vectorized Rosenbrock function (bench_util.h) at
 * x_i = -1.2 + 2.2 i / (n-1), its gradient (ad_grad) and Hessian-vector
 * product (ad_hvp, forward over reverse) along v_i = ((i mod 7) - 3) / 4.
 * ---------------------------------------------------------------------- */

static double sum_sq(ad_tensor *t) { return ad_item(ad_sum_all(ad_square(t))); }

static void case_rosen(int64_t n, double minsec) {
  static double buf[3][MAXREP];
  sample s[3];
  for (int k = 0; k < 3; k++) s[k] = (sample){0, buf[k]};
  ad_scope_begin();
  ad_tensor *x = ad_linspace(-1.2, 1.0, n);
  double *vv = malloc((size_t)n * sizeof *vv);
  bench_check(vv, "malloc");
  for (int64_t i = 0; i < n; i++) vv[i] = (double)(i % 7 - 3) * 0.25;
  ad_tensor *v = ad_tensor_new(1, &n, vv);
  free(vv);
  bench_check(x && v ? x : NULL, "rosen inputs");
  double cg = 0, ch = 0, cf = 0;
  double start = bench_now();
  for (int r = -1; s[0].n < 3 || bench_now() - start < minsec; r++) {
    double t0 = bench_now();
    ad_scope_begin();
    ad_tensor *f = bench_rosenbrock(x, NULL);
    bench_check(f, "rosenbrock");
    cf = ad_item(f);
    ad_scope_end();
    double t1 = bench_now();
    ad_scope_begin();
    ad_tensor *g = ad_grad(bench_rosenbrock, NULL, x);
    bench_check(g, "ad_grad");
    ad_scope_end();
    double t2 = bench_now();
    ad_scope_begin();
    ad_tensor *hv = ad_hvp(bench_rosenbrock, NULL, x, v);
    bench_check(hv, "ad_hvp");
    ad_scope_end();
    double t3 = bench_now();
    if (r < 0) { /* warm-up; checksums outside the timing */
      ad_scope_begin();
      cg = sum_sq(ad_grad(bench_rosenbrock, NULL, x));
      ch = sum_sq(ad_hvp(bench_rosenbrock, NULL, x, v));
      ad_scope_end();
      start = bench_now();
      continue;
    }
    sample_add(&s[0], (t1 - t0) * 1e3);
    sample_add(&s[1], (t2 - t1) * 1e3);
    sample_add(&s[2], (t3 - t2) * 1e3);
  }
  ad_scope_end();
  printf("ok f_ms=%.6g grad_ms=%.6g hvp_ms=%.6g reps=%d chk_f=%.17g "
         "chk_g=%.17g chk_hv=%.17g\n",
         bench_median(s[0].v, s[0].n), bench_median(s[1].v, s[1].n),
         bench_median(s[2].v, s[2].n), s[0].n, cf, cg, ch);
}

/* ------------------------------------------------------------------------
 * rscalar: the same function written as a C loop over n 1-element
 * tensors (one leaf per variable, as ADOL-C sees n independents):
 * gradient (tape, n sources), HVP (forward accumulator over the tape) and,
 * for n <= 100, the dense Hessian by n HVPs.  Results are read into C
 * arrays, as ADOL-C's drivers write them.
 * ---------------------------------------------------------------------- */

typedef struct scalar_prob {
  int64_t n;
  ad_tensor **x, **e; /* leaves; unit and zero tangents for the Hessian */
  ad_tensor **v;      /* the HVP direction, one 1-element tensor each */
  ad_tensor *one, *zero;
} scalar_prob;

static ad_tensor *rosen_scalar(const scalar_prob *p) {
  ad_tensor *f = NULL;
  for (int64_t i = 0; i + 1 < p->n; i++) {
    ad_tensor *t = ad_sub(p->x[i + 1], ad_square(p->x[i]));
    ad_tensor *u = ad_sub(p->one, p->x[i]);
    ad_tensor *term = ad_add(ad_mul_scalar(ad_square(t), 100.0), ad_square(u));
    f = f ? ad_add(f, term) : term;
  }
  return f;
}

/* Gradient into g[n]; the value is returned. */
static double scalar_grad(const scalar_prob *p, double *g) {
  ad_scope_begin();
  ad_tape *tape = ad_tape_begin(0);
  bench_check(tape, "ad_tape_begin");
  for (int64_t i = 0; i < p->n; i++) ad_tape_watch(tape, p->x[i]);
  ad_tensor *f = rosen_scalar(p);
  bench_check(f, "rosen_scalar");
  ad_tape_end(tape);
  ad_tensor **gr = malloc((size_t)p->n * sizeof *gr);
  bench_check(gr, "malloc");
  bench_check_status(
      ad_tape_gradients(tape, f, NULL, (int)p->n, p->x, gr, 0), "gradient");
  for (int64_t i = 0; i < p->n; i++) g[i] = ad_item(gr[i]);
  double fv = ad_item(f);
  free(gr);
  ad_tape_free(tape);
  ad_scope_end();
  return fv;
}

/* H v into hv[n] for tangents dirs[0..n) (forward over reverse). */
static void scalar_hvp(const scalar_prob *p, ad_tensor *const *dirs,
                       double *hv) {
  ad_scope_begin();
  ad_fwd *acc = ad_fwd_begin((int)p->n, p->x, dirs);
  bench_check(acc, "ad_fwd_begin");
  ad_tape *tape = ad_tape_begin(0);
  bench_check(tape, "ad_tape_begin");
  for (int64_t i = 0; i < p->n; i++) ad_tape_watch(tape, p->x[i]);
  ad_tensor *f = rosen_scalar(p);
  bench_check(f, "rosen_scalar");
  ad_tape_end(tape);
  ad_tensor **gr = malloc(2 * (size_t)p->n * sizeof *gr);
  bench_check(gr, "malloc");
  bench_check_status(
      ad_tape_gradients(tape, f, NULL, (int)p->n, p->x, gr, 0), "gradient");
  bench_check_status(ad_fwd_jvps(acc, (int)p->n, gr, gr + p->n,
                                 AD_UNCONNECTED_ZERO),
                     "ad_fwd_jvps");
  for (int64_t i = 0; i < p->n; i++) hv[i] = ad_item(gr[p->n + i]);
  free(gr);
  ad_tape_free(tape);
  ad_fwd_end(acc);
  ad_scope_end();
}

/* The dense Hessian (row-major n x n) by n HVPs along unit vectors. */
static void scalar_hessian(const scalar_prob *p, double *H) {
  ad_tensor **dirs = malloc((size_t)p->n * sizeof *dirs);
  bench_check(dirs, "malloc");
  for (int64_t j = 0; j < p->n; j++) {
    for (int64_t i = 0; i < p->n; i++) dirs[i] = i == j ? p->one : p->zero;
    scalar_hvp(p, dirs, H + j * p->n); /* column j = row j (symmetric) */
  }
  free(dirs);
}

static ad_tensor *owned_scalar(double v) {
  const int64_t one[1] = {1};
  ad_tensor *t = ad_tensor_new(1, one, &v);
  bench_check(t, "ad_tensor_new");
  return t;
}

static void case_rscalar(int64_t n, double minsec) {
  static double buf[4][MAXREP];
  sample s[4];
  for (int k = 0; k < 4; k++) s[k] = (sample){0, buf[k]};
  scalar_prob p = {.n = n};
  p.x = malloc((size_t)n * sizeof *p.x);
  p.v = malloc((size_t)n * sizeof *p.v);
  double *g = malloc((size_t)n * sizeof *g), *hv = malloc((size_t)n * sizeof *hv);
  bool dense = n <= 100;
  double *H = dense ? malloc((size_t)(n * n) * sizeof *H) : NULL;
  bench_check(p.x && p.v && g && hv && (H || !dense) ? g : NULL, "malloc");
  for (int64_t i = 0; i < n; i++) {
    p.x[i] = owned_scalar(-1.2 + 2.2 * (double)i / (double)(n - 1));
    p.v[i] = owned_scalar((double)(i % 7 - 3) * 0.25);
  }
  p.one = owned_scalar(1.0);
  p.zero = owned_scalar(0.0);
  double cg = 0, ch = 0, cH = 0, fv = 0;
  double start = bench_now();
  for (int r = -1; s[0].n < 3 || bench_now() - start < minsec; r++) {
    double t0 = bench_now();
    ad_scope_begin();
    ad_tensor *f = rosen_scalar(&p);
    bench_check(f, "rosen_scalar");
    fv = ad_item(f);
    ad_scope_end();
    double t1 = bench_now();
    scalar_grad(&p, g);
    double t2 = bench_now();
    scalar_hvp(&p, p.v, hv);
    double t3 = bench_now();
    if (dense) scalar_hessian(&p, H);
    double t4 = bench_now();
    if (r < 0) {
      cg = ch = cH = 0;
      for (int64_t i = 0; i < n; i++) {
        cg += g[i] * g[i];
        ch += hv[i] * hv[i];
      }
      for (int64_t i = 0; dense && i < n * n; i++) cH += H[i] * H[i];
      start = bench_now();
      continue;
    }
    sample_add(&s[0], (t1 - t0) * 1e6);
    sample_add(&s[1], (t2 - t1) * 1e6);
    sample_add(&s[2], (t3 - t2) * 1e6);
    sample_add(&s[3], (t4 - t3) * 1e6);
  }
  printf("ok f_us=%.6g grad_us=%.6g hvp_us=%.6g", bench_median(s[0].v, s[0].n),
         bench_median(s[1].v, s[1].n), bench_median(s[2].v, s[2].n));
  if (dense) printf(" hess_us=%.6g", bench_median(s[3].v, s[3].n));
  printf(" reps=%d chk_f=%.17g chk_g=%.17g chk_hv=%.17g", s[0].n, fv, cg, ch);
  if (dense) printf(" chk_H=%.17g", cH);
  printf("\n");
  for (int64_t i = 0; i < n; i++) {
    ad_release(p.x[i]);
    ad_release(p.v[i]);
  }
  ad_release(p.one);
  ad_release(p.zero);
  free(p.x);
  free(p.v);
  free(g);
  free(hv);
  free(H);
}

int main(void) {
  printf("ready libad\n");
  fflush(stdout);
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    char cmd[16] = "", cs[32] = "";
    long long n = 0;
    double minsec = 0.1;
    int k = sscanf(line, "%15s %31s %lld %lf", cmd, cs, &n, &minsec);
    if (k < 1 || strcmp(cmd, "quit") == 0) break;
    if (strcmp(cmd, "run") != 0 || k < 2) printf("error bad request\n");
    else if (strcmp(cs, "eager") == 0) case_eager(n, minsec);
    else if (strcmp(cs, "mlp64") == 0) case_mlp(minsec);
    else if (strcmp(cs, "rosen") == 0) case_rosen(n, minsec);
    else if (strcmp(cs, "rscalar") == 0) case_rscalar(n, minsec);
    else if (strcmp(cs, "canary") == 0) printf("ok ms=%.6g\n", bench_canary_ms());
    else printf("skip libad has no case %s\n", cs);
    fflush(stdout);
    if (ad_error() != AD_OK) ad_error_clear();
  }
  return 0;
}
