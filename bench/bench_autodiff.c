/* Benchmarks of reverse mode (issue 3): a taped scalar chain, tape memory,
 * an MLP training step (alone or served to bench/torch_mlp.py for an
 * alternating comparison with PyTorch) and the Rosenbrock gradient. */
#include <cblas.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>

#include "bench_util.h"

/* ------------------------------------------------------------------------
 * 4 and 7. The chain y = y*a + b on 1-element tensors, recorded on a tape
 *    that watches a and b, then one backward pass for d y / d(a, b).
 * ---------------------------------------------------------------------- */

#define CHAIN_BLOCK 1000 /* ops per scope */

typedef struct chain_times {
  double record, backward; /* seconds */
  int64_t nodes;           /* tape size after recording */
  double bytes;            /* heap growth while recording */
} chain_times;

static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/* One taped chain of nops ops.  check: verify the gradient; mem: measure
 * the heap (mallinfo2 walks the heap, so only in the memory run). */
static chain_times chain_taped(int64_t nops, bool check, bool mem) {
  const int64_t one[1] = {1};
  const double av = 0.5, bv = 1.0, yv = 0.0;
  ad_tensor *a = ad_tensor_new(1, one, &av);
  ad_tensor *b = ad_tensor_new(1, one, &bv);
  ad_tensor *y = ad_tensor_new(1, one, &yv);
  bench_check(a && b && y ? a : NULL, "ad_tensor_new");
  chain_times ct = {0, 0, 0, 0};
  size_t m0 = mem ? heap_in_use() : 0;
  double t0 = bench_now();
  ad_tape *tape = ad_tape_begin(0);
  bench_check(tape, "ad_tape_begin");
  bench_check_status(ad_tape_watch(tape, a), "ad_tape_watch");
  bench_check_status(ad_tape_watch(tape, b), "ad_tape_watch");
  for (int64_t i = 0; i < nops; i += CHAIN_BLOCK) {
    ad_scope_begin();
    ad_tensor *z = y;
    for (int j = 0; j < CHAIN_BLOCK / 2; j++) z = ad_add(ad_mul(z, a), b);
    bench_check(z, "taped chain op");
    ad_keep(z);
    ad_scope_end();
    ad_release(y);
    y = z;
  }
  bench_check_status(ad_tape_end(tape), "ad_tape_end");
  double t1 = bench_now();
  if (mem) ct.bytes = (double)heap_in_use() - (double)m0;
  ct.nodes = ad_tape_size(tape);
  ad_scope_begin();
  ad_tensor *src[2] = {a, b}, *g[2];
  bench_check_status(ad_tape_gradients(tape, y, NULL, 2, src, g, 0),
                     "ad_tape_gradients");
  double ga = ad_item(g[0]), gb = ad_item(g[1]);
  ad_scope_end();
  ad_tape_free(tape);
  double t2 = bench_now();
  ct.record = t1 - t0;
  ct.backward = t2 - t1;
  if (check) {
    /* y_k = a y_{k-1} + b, so dy_k/da = y_{k-1} + a dy_{k-1}/da and
     * dy_k/db = 1 + a dy_{k-1}/db. */
    double yy = yv, da = 0, db = 0;
    for (int64_t k = 0; k < nops / 2; k++) {
      da = yy + av * da;
      db = 1 + av * db;
      yy = av * yy + bv;
    }
    if (fabs(ga - da) > 1e-9 * fmax(1, fabs(da)) ||
        fabs(gb - db) > 1e-9 * fmax(1, fabs(db)))
      fprintf(stderr,
              "bench_autodiff: chain gradient (%g, %g), expected (%g, %g)\n",
              ga, gb, da, db);
  }
  ad_release(y);
  ad_release(a);
  ad_release(b);
  return ct;
}

static void bench_chain_taped(void) {
  const int64_t nops = 200000;
  enum { RUNS = 9 };
  double rec[RUNS], bwd[RUNS], tot[RUNS];
  chain_taped(nops / 10, true, false); /* warm-up */
  for (int r = 0; r < RUNS; r++) {
    chain_times ct = chain_taped(nops, r == 0, false);
    rec[r] = ct.record / (double)nops * 1e9;
    bwd[r] = ct.backward / (double)nops * 1e9;
    tot[r] = rec[r] + bwd[r];
  }
  const char *cs = "taped op chain 2e5 ops, 1-element";
  bench_line(cs, "libad", "recording (y=y*a+b, median of 9)",
             bench_median(rec, RUNS), "ns/op");
  bench_line(cs, "libad", "backward incl. tape free", bench_median(bwd, RUNS),
             "ns/op");
  bench_line(cs, "libad", "recording + backward", bench_median(tot, RUNS),
             "ns/op");

  /* Tape memory: heap growth while recording, after the thread's free
   * lists were emptied so that every byte the tape keeps is new. */
  ad_thread_cleanup();
  chain_times ct = chain_taped(nops, false, true);
  bench_line(cs, "libad", "tape memory (heap growth while recording)",
             ct.bytes / (double)nops, "B/op");
  bench_line(cs, "libad", "tape nodes per op", (double)ct.nodes / (double)nops,
             "nodes/op");
}

/* ------------------------------------------------------------------------
 * 5. MLP 784-256-256-10, tanh, softmax cross-entropy, batch 128, double.
 * ---------------------------------------------------------------------- */

enum { MLP_B = 128, MLP_D = 784, MLP_H1 = 256, MLP_H2 = 256, MLP_C = 10 };
#define MLP_CASE "mlp 784-256-256-10 tanh b128 f64"

typedef struct mlp {
  ad_tensor *W[3], *b[3]; /* caller-owned */
  ad_tensor *X, *Y;       /* inputs and one-hot labels */
  /* Raw arrays for the dgemm-bound limit. */
  double *x, *w[3], *act[3], *dz[3], *dw[3], *da[2];
} mlp;

static ad_tensor *keep_new(ad_tensor *t) {
  bench_check(t, "tensor creation");
  return ad_keep(t);
}

static double *raw_alloc(int64_t n) {
  double *p = calloc((size_t)n, sizeof *p);
  bench_check(p, "calloc");
  for (int64_t i = 0; i < n; i++) p[i] = 1e-3 * (double)(i % 1000);
  return p;
}

static void mlp_init(mlp *m) {
  const int dims[4] = {MLP_D, MLP_H1, MLP_H2, MLP_C};
  ad_seed(1234);
  ad_scope_begin();
  for (int l = 0; l < 3; l++) {
    double bound = 1.0 / sqrt((double)dims[l]);
    int64_t ws[2] = {dims[l], dims[l + 1]}, bs[1] = {dims[l + 1]};
    m->W[l] = keep_new(ad_rand_uniform(2, ws, -bound, bound));
    m->b[l] = keep_new(ad_rand_uniform(1, bs, -bound, bound));
  }
  int64_t xs[2] = {MLP_B, MLP_D};
  m->X = keep_new(ad_rand_normal(2, xs, 0, 1));
  double *y = calloc((size_t)MLP_B * MLP_C, sizeof *y);
  bench_check(y, "calloc");
  for (int i = 0; i < MLP_B; i++) y[i * MLP_C + (i * 7) % MLP_C] = 1.0;
  int64_t ys[2] = {MLP_B, MLP_C};
  m->Y = keep_new(ad_tensor_new(2, ys, y));
  free(y);
  ad_scope_end();
  /* dgemm operands, laid out as the step's matrices. */
  m->x = raw_alloc((int64_t)MLP_B * MLP_D);
  for (int l = 0; l < 3; l++) {
    m->w[l] = raw_alloc((int64_t)dims[l] * dims[l + 1]);
    m->act[l] = raw_alloc((int64_t)MLP_B * dims[l + 1]);
    m->dz[l] = raw_alloc((int64_t)MLP_B * dims[l + 1]);
    m->dw[l] = raw_alloc((int64_t)dims[l] * dims[l + 1]);
  }
  m->da[0] = raw_alloc((int64_t)MLP_B * MLP_H1);
  m->da[1] = raw_alloc((int64_t)MLP_B * MLP_H2);
}

static void mlp_free(mlp *m) {
  for (int l = 0; l < 3; l++) {
    ad_release(m->W[l]);
    ad_release(m->b[l]);
    free(m->w[l]);
    free(m->act[l]);
    free(m->dz[l]);
    free(m->dw[l]);
  }
  ad_release(m->X);
  ad_release(m->Y);
  free(m->x);
  free(m->da[0]);
  free(m->da[1]);
}

/* One forward+backward step (gradients of the mean loss with respect to
 * all six parameters); returns its time in seconds. */
static double mlp_step(mlp *m, double *loss_out) {
  double t0 = bench_now();
  ad_scope_begin();
  ad_tape *tape = ad_tape_begin(0);
  bench_check(tape, "ad_tape_begin");
  ad_tensor *src[6];
  for (int l = 0; l < 3; l++) {
    src[2 * l] = m->W[l];
    src[2 * l + 1] = m->b[l];
    ad_tape_watch(tape, m->W[l]);
    ad_tape_watch(tape, m->b[l]);
  }
  ad_tensor *h = m->X;
  for (int l = 0; l < 3; l++) {
    h = ad_add(ad_matmul(h, m->W[l]), m->b[l]);
    if (l < 2) h = ad_tanh(h);
  }
  ad_tensor *lsm = ad_log_softmax(h, 1);
  ad_tensor *loss =
      ad_mul_scalar(ad_sum_all(ad_mul(m->Y, lsm)), -1.0 / (double)MLP_B);
  bench_check(loss, "mlp forward");
  bench_check_status(ad_tape_end(tape), "ad_tape_end");
  ad_tensor *g[6];
  bench_check_status(ad_tape_gradients(tape, loss, NULL, 6, src, g, 0),
                     "mlp backward");
  ad_tape_free(tape);
  *loss_out = ad_item(loss);
  ad_scope_end();
  return bench_now() - t0;
}

/* The step's eight matrix products as raw cblas_dgemm calls (forward:
 * X W1, A1 W2, A2 W3; backward: A2^T dZ3, dZ3 W3^T, A1^T dZ2, dZ2 W2^T,
 * X^T dZ1); returns seconds. */
static double mlp_gemms(mlp *m) {
  const int B = MLP_B, dims[4] = {MLP_D, MLP_H1, MLP_H2, MLP_C};
  const CBLAS_LAYOUT R = CblasRowMajor;
  const CBLAS_TRANSPOSE N = CblasNoTrans, T = CblasTrans;
  double t0 = bench_now();
  const double *in = m->x;
  for (int l = 0; l < 3; l++) {
    cblas_dgemm(R, N, N, B, dims[l + 1], dims[l], 1.0, in, dims[l], m->w[l],
                dims[l + 1], 0.0, m->act[l], dims[l + 1]);
    in = m->act[l];
  }
  for (int l = 2; l >= 0; l--) {
    const double *inp = l == 0 ? m->x : m->act[l - 1];
    /* dW = A^T dZ */
    cblas_dgemm(R, T, N, dims[l], dims[l + 1], B, 1.0, inp, dims[l], m->dz[l],
                dims[l + 1], 0.0, m->dw[l], dims[l + 1]);
    /* dA = dZ W^T (not needed for the input layer) */
    if (l > 0)
      cblas_dgemm(R, N, T, B, dims[l], dims[l + 1], 1.0, m->dz[l],
                  dims[l + 1], m->w[l], dims[l + 1], 0.0, m->da[l - 1],
                  dims[l]);
  }
  return bench_now() - t0;
}

static double mlp_flops(void) {
  double B = MLP_B, D = MLP_D, H1 = MLP_H1, H2 = MLP_H2, C = MLP_C;
  return 2.0 * B * (2 * D * H1 + 3 * H1 * H2 + 3 * H2 * C);
}

/* Serve steps to bench/torch_mlp.py: each stdin line "mlp K" or "gemm K"
 * is answered by one line of K times in ms; "quit" ends. */
static int mlp_serve(void) {
  mlp m;
  mlp_init(&m);
  double loss;
  for (int i = 0; i < 3; i++) {
    mlp_step(&m, &loss);
    mlp_gemms(&m);
  }
  printf("ready %.6f\n", loss);
  fflush(stdout);
  char line[128];
  while (fgets(line, sizeof line, stdin)) {
    char cmd[16];
    int k = 0;
    if (sscanf(line, "%15s %d", cmd, &k) < 1 || strcmp(cmd, "quit") == 0)
      break;
    bool gemm = strcmp(cmd, "gemm") == 0;
    for (int i = 0; i < k; i++)
      printf("%s%.6f", i ? " " : "",
             1e3 * (gemm ? mlp_gemms(&m) : mlp_step(&m, &loss)));
    printf("\n");
    fflush(stdout);
  }
  mlp_free(&m);
  return 0;
}

/* Without PyTorch: libad's step and the dgemm-bound limit, alternated. */
static void bench_mlp(void) {
  enum { RUNS = 40 };
  mlp m;
  mlp_init(&m);
  double loss, ts[RUNS], tg[RUNS];
  for (int i = 0; i < 5; i++) {
    mlp_step(&m, &loss);
    mlp_gemms(&m);
  }
  for (int r = 0; r < RUNS; r++) {
    ts[r] = mlp_step(&m, &loss) * 1e3;
    tg[r] = mlp_gemms(&m) * 1e3;
  }
  double step = bench_median(ts, RUNS), lim = bench_median(tg, RUNS);
  bench_line(MLP_CASE, "libad", "fwd+bwd per step (median of 40)", step,
             "ms");
  bench_line(MLP_CASE, "libad", "matrix FLOPs per step (8 GEMMs)",
             mlp_flops() * 1e-6, "MFLOP");
  bench_line(MLP_CASE, "cblas_dgemm",
             "step's 8 GEMMs alone (dgemm-bound limit)", lim, "ms");
  bench_line(MLP_CASE, "cblas_dgemm", "raw dgemm rate on the step's GEMMs",
             mlp_flops() / lim * 1e-6, "GFLOP/s");
  bench_line(MLP_CASE, "libad", "fraction of dgemm-bound limit", lim / step,
             "x");
  mlp_free(&m);
}

/* ------------------------------------------------------------------------
 * 6. Vectorized Rosenbrock, n = 10^6: gradient time / function time.
 * ---------------------------------------------------------------------- */

static void bench_rosen_grad(void) {
  const int64_t n = 1000000;
  enum { RUNS = 41 };
  ad_scope_begin();
  ad_seed(99);
  ad_tensor *x = ad_rand_uniform(1, &n, -1.5, 1.5);
  bench_check(x, "ad_rand_uniform");
  double tf[RUNS], tg[RUNS];
  for (int r = -2; r < RUNS; r++) {
    double t0 = bench_now();
    ad_scope_begin();
    bench_check(bench_rosenbrock(x, NULL), "rosenbrock");
    ad_scope_end();
    double t1 = bench_now();
    ad_scope_begin();
    bench_check(ad_grad(bench_rosenbrock, NULL, x), "ad_grad");
    ad_scope_end();
    double t2 = bench_now();
    if (r >= 0) {
      tf[r] = (t1 - t0) * 1e3;
      tg[r] = (t2 - t1) * 1e3;
    }
  }
  double f = bench_median(tf, RUNS), g = bench_median(tg, RUNS);
  const char *cs = "rosenbrock n=1e6 (vectorized)";
  bench_line(cs, "libad", "function time (median of 41)", f, "ms");
  bench_line(cs, "libad", "gradient time (ad_grad)", g, "ms");
  bench_line(cs, "libad", "gradient / function", g / f, "x");
  ad_scope_end();
}

int main(int argc, char **argv) {
  bool mlp_only = false, no_mlp = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--mlp-serve") == 0) return mlp_serve();
    if (strcmp(argv[i], "--mlp") == 0) mlp_only = true;
    if (strcmp(argv[i], "--no-mlp") == 0) no_mlp = true;
  }
  if (!mlp_only) {
    bench_canary("start of bench_autodiff");
    bench_chain_taped();
    bench_rosen_grad();
  }
  if (!no_mlp) bench_mlp();
  return 0;
}
