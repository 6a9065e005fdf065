/* Training-step benchmarks of models built with ad/nn.h: the digits CNN
 * (batch 32) and the 784-256-256-10 MLP (batch 128), each a forward pass,
 * a backward pass and an Adam update, alone or served to bench/torch_nn.py
 * for an alternating comparison with PyTorch.
 *
 *   bench_nn            both cases alone, one line per figure
 *   bench_nn --serve    answer "cnn K" / "mlp K" on stdin with K step
 *                       times in ms on one line; "quit" ends */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ad/nn.h>
#include <ad/optim.h>

#include "bench_util.h"

#define CNN_CASE "train cnn digits 8x8 b32 f64 adam"
#define MLP_CASE "train mlp 784-256-256-10 tanh b128 f64 adam"

/* One model, its data and its optimizer. */
typedef struct net {
  ad_layer *model;
  ad_optimizer *opt;
  ad_tensor *x, *y; /* caller-owned */
  ad_var *vars[16];
  int nvars;
} net;

/* The CNN of examples/digits.c. */
static void cnn_init(net *n) {
  ad_seed(1);
  n->model = ad_model_new("cnn");
  ad_model_add(n->model, ad_layer_conv2d(32, 3, 3, 1, 1, AD_PAD_SAME,
                                         AD_ACT_RELU, true));
  ad_model_add(n->model, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME));
  ad_model_add(n->model, ad_layer_conv2d(64, 3, 3, 1, 1, AD_PAD_SAME,
                                         AD_ACT_RELU, true));
  ad_model_add(n->model, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME));
  ad_model_add(n->model, ad_layer_flatten());
  ad_model_add(n->model, ad_layer_dense(128, AD_ACT_RELU, true));
  ad_model_add(n->model, ad_layer_dropout(0.4, 7));
  ad_model_add(n->model, ad_layer_dense(10, AD_ACT_LINEAR, true));
  const int64_t xs[4] = {32, 8, 8, 1}, ys[1] = {32};
  ad_scope_begin();
  n->x = ad_keep(ad_rand_uniform(4, xs, 0, 1));
  n->y = ad_keep(ad_floor(ad_rand_uniform(1, ys, 0, 10)));
  ad_scope_end();
  bench_check(n->y, "cnn data");
}

static void mlp_init(net *n) {
  ad_seed(2);
  n->model = ad_model_new("mlp");
  ad_model_add(n->model, ad_layer_dense(256, AD_ACT_TANH, true));
  ad_model_add(n->model, ad_layer_dense(256, AD_ACT_TANH, true));
  ad_model_add(n->model, ad_layer_dense(10, AD_ACT_LINEAR, true));
  const int64_t xs[2] = {128, 784}, ys[1] = {128};
  double y[128];
  for (int i = 0; i < 128; i++) y[i] = (i * 7) % 10;
  ad_scope_begin();
  n->x = ad_keep(ad_rand_normal(2, xs, 0, 1));
  n->y = ad_keep(ad_tensor_new(1, ys, y));
  ad_scope_end();
  bench_check(n->y, "mlp data");
}

static void net_finish(net *n) {
  bench_check(n->model, "model");
  n->opt = ad_optimizer_adam(1e-3, 0.9, 0.999, 1e-8);
  bench_check(n->opt, "optimizer");
  const int64_t *s = ad_shape(n->x);
  bench_check_status(ad_layer_build(n->model, ad_ndim(n->x), s), "build");
  n->nvars = (int)ad_layer_variables(n->model, AD_VARS_TRAINABLE, n->vars,
                                     16);
}

static void net_free(net *n) {
  ad_layer_free(n->model);
  ad_optimizer_free(n->opt);
  ad_release(n->x);
  ad_release(n->y);
}

/* One training step; returns its time in seconds. */
static double net_step(net *n, double *loss_out) {
  double t0 = bench_now();
  ad_scope_begin();
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *loss = ad_loss_sparse_softmax_cross_entropy(
      ad_layer_call(n->model, n->x, true), n->y);
  bench_check(loss, "forward");
  bench_check_status(ad_tape_end(tape), "ad_tape_end");
  ad_tensor *g[16];
  bench_check_status(ad_tape_var_gradients(tape, loss, n->nvars, n->vars, g),
                     "backward");
  bench_check_status(ad_optimizer_step(n->opt, n->nvars, n->vars, g),
                     "adam");
  ad_tape_free(tape);
  *loss_out = ad_item(loss);
  ad_scope_end();
  return bench_now() - t0;
}

static int serve(void) {
  net cnn = {0}, mlp = {0};
  cnn_init(&cnn);
  net_finish(&cnn);
  mlp_init(&mlp);
  net_finish(&mlp);
  double loss;
  for (int i = 0; i < 3; i++) {
    net_step(&cnn, &loss);
    net_step(&mlp, &loss);
  }
  printf("ready %.6f\n", loss);
  fflush(stdout);
  char line[128];
  while (fgets(line, sizeof line, stdin)) {
    char cmd[16];
    int k = 0;
    if (sscanf(line, "%15s %d", cmd, &k) < 1 || strcmp(cmd, "quit") == 0)
      break;
    net *n = strcmp(cmd, "cnn") == 0 ? &cnn : &mlp;
    for (int i = 0; i < k; i++)
      printf("%s%.6f", i ? " " : "", 1e3 * net_step(n, &loss));
    printf("\n");
    fflush(stdout);
  }
  net_free(&cnn);
  net_free(&mlp);
  return 0;
}

static void alone(const char *name, void (*init)(net *)) {
  enum { RUNS = 60 };
  net n = {0};
  init(&n);
  net_finish(&n);
  double loss, t[RUNS];
  for (int i = 0; i < 5; i++) net_step(&n, &loss);
  for (int r = 0; r < RUNS; r++) t[r] = 1e3 * net_step(&n, &loss);
  bench_line(name, "libad", "train step fwd+bwd+adam (median of 60)",
             bench_median(t, RUNS), "ms");
  net_free(&n);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--serve") == 0) return serve();
  bench_canary("start of bench_nn");
  alone(CNN_CASE, cnn_init);
  alone(MLP_CASE, mlp_init);
  return 0;
}
