/* A small convolutional network trained with Adam on the UCI handwritten
 * digits (8x8 images), TensorFlow's eager MNIST example in C.
 *
 *   build/examples/digits [--epochs N] [--short] [--csv FILE]
 *                         [--checkpoint FILE] [--data FILE]
 *
 * Prints the model, one progress line per epoch and, last,
 * "test accuracy: 0.xxxx".  --short trains 3 epochs (for `make run`);
 * --csv writes step, loss, accuracy and test accuracy per epoch
 * (examples/plot_training.sh draws it); --checkpoint saves the variables
 * and the optimizer's state at the end, and resumes from the file when it
 * exists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ad.h>
#include <ad/nn.h>
#include <ad/optim.h>

enum { PIXELS = 64, CLASSES = 10, BATCH = 32 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what) {
  fprintf(stderr, "digits: %s: %s\n", what, ad_error_message());
  return 1;
}

/* The fixed split: example i is a test example when i % 5 == 0.  Images
 * become (N, 8, 8, 1) with pixels scaled from 0..16 to 0..1; labels (N,). */
static ad_status load_split(const char *path, ad_tensor *out[4]) {
  ad_tensor *all = ad_load_csv(path, 0);
  if (!all) return ad_error();
  int64_t n = ad_shape(all)[0];
  int64_t *idx[2];
  int64_t count[2] = {0, 0};
  idx[0] = malloc((size_t)n * sizeof(int64_t));
  idx[1] = malloc((size_t)n * sizeof(int64_t));
  if (!idx[0] || !idx[1]) {
    free(idx[0]);
    free(idx[1]);
    return AD_ENOMEM;
  }
  for (int64_t i = 0; i < n; i++) {
    int part = i % 5 == 0; /* 0 train, 1 test */
    idx[part][count[part]++] = i;
  }
  for (int part = 0; part < 2; part++) {
    ad_tensor *rows = ad_gather(all, 0, idx[part], count[part]);
    const int64_t shape[4] = {count[part], 8, 8, 1};
    out[2 * part] = ad_reshape(
        ad_mul_scalar(ad_slice(rows, 1, 0, PIXELS, 1), 1.0 / 16), 4, shape);
    out[2 * part + 1] = ad_squeeze(ad_slice(rows, 1, PIXELS, PIXELS + 1, 1), 1);
  }
  free(idx[0]);
  free(idx[1]);
  return out[3] ? AD_OK : ad_error();
}

/* TensorFlow's MNIST model sized for 8x8 images:
 * conv 3x3x32 - pool 2 - conv 3x3x64 - pool 2 - dense 128 - dense 10. */
static ad_layer *digits_cnn(void) {
  ad_layer *m = ad_model_new("cnn");
  ad_model_add(m, ad_layer_conv2d(32, 3, 3, 1, 1, AD_PAD_SAME, AD_ACT_RELU,
                                  true));
  ad_model_add(m, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME));
  ad_model_add(m, ad_layer_conv2d(64, 3, 3, 1, 1, AD_PAD_SAME, AD_ACT_RELU,
                                  true));
  ad_model_add(m, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME));
  ad_model_add(m, ad_layer_flatten());
  ad_model_add(m, ad_layer_dense(128, AD_ACT_RELU, true));
  ad_model_add(m, ad_layer_dropout(0.4, 7));
  ad_model_add(m, ad_layer_dense(CLASSES, AD_ACT_LINEAR, true));
  return ad_error() ? NULL : m;
}

static double accuracy(ad_layer *model, ad_tensor *x, ad_tensor *y) {
  ad_metric *acc = ad_metric_accuracy(NULL);
  ad_scope_begin();
  ad_metric_update(acc, y, ad_layer_call(model, x, false));
  ad_scope_end();
  double r = ad_metric_result(acc);
  ad_metric_free(acc);
  return r;
}

int main(int argc, char **argv) {
  int epochs = 15;
  const char *csv = NULL, *ckpt = NULL, *data = "data/digits.csv.gz";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--epochs") == 0 && i + 1 < argc)
      epochs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--short") == 0)
      epochs = 3;
    else if (strcmp(argv[i], "--csv") == 0 && i + 1 < argc)
      csv = argv[++i];
    else if (strcmp(argv[i], "--checkpoint") == 0 && i + 1 < argc)
      ckpt = argv[++i];
    else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
      data = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--epochs N] [--short] [--csv FILE] "
              "[--checkpoint FILE] [--data FILE]\n", argv[0]);
      return 2;
    }
  }

  ad_scope_begin();
  ad_tensor *split[4]; /* train x, train y, test x, test y */
  if (load_split(data, split) != AD_OK) return fail("loading the digits");
  printf("UCI digits: %lld training and %lld test images of 8x8 pixels\n",
         (long long)ad_shape(split[0])[0], (long long)ad_shape(split[2])[0]);

  ad_seed(42);
  ad_layer *model = digits_cnn();
  if (!model || ad_layer_build(model, 4, (const int64_t[]){1, 8, 8, 1}))
    return fail("building the model");
  ad_layer_summary(stdout, model);
  ad_var *all[32], *train[32];
  int64_t nall = ad_layer_variables(model, 0, all, 32);
  int nvars = (int)ad_layer_variables(model, AD_VARS_TRAINABLE, train, 32);
  ad_optimizer *opt = ad_optimizer_adam(1e-3, 0.9, 0.999, 1e-7);

  /* Resume from a checkpoint when there is one. */
  int64_t first_epoch = 0;
  if (ckpt && ad_checkpoint_restore(ckpt, nall, all, opt) == AD_OK) {
    int64_t per_epoch = (ad_shape(split[0])[0] + BATCH - 1) / BATCH;
    first_epoch = ad_optimizer_iterations(opt) / per_epoch;
    printf("resumed from %s after epoch %lld\n", ckpt,
           (long long)first_epoch);
  } else {
    ad_error_clear();
  }

  /* shuffle(buffer = whole set, seed 1) -> batch(32): a new order each
   * epoch, the same in every run. */
  ad_dataset *ds = ad_dataset_batch(
      ad_dataset_shuffle(ad_dataset_from_tensor_slices(2, split), 2048, 1),
      BATCH, false);
  ad_csv_log *log = NULL;
  if (csv) {
    const char *cols[] = {"loss", "accuracy", "test_accuracy"};
    log = ad_csv_log_open(csv, 3, cols);
    if (!log) return fail("opening the CSV log");
  }
  ad_metric *loss_avg = ad_metric_mean("loss");
  ad_metric *acc = ad_metric_accuracy(NULL);
  double t_start = now();
  for (int64_t epoch = first_epoch; epoch < epochs; epoch++) {
    double t0 = now();
    ad_metric_reset(loss_avg);
    ad_metric_reset(acc);
    ad_iterator *it = ad_dataset_iter_pass(ds, (uint64_t)epoch);
    ad_tensor *batch[2];
    ad_scope_begin();
    while (ad_iter_next(it, batch)) {
      ad_tape *tape = ad_tape_begin(0);
      ad_tensor *logits = ad_layer_call(model, batch[0], true);
      ad_tensor *loss = ad_loss_sparse_softmax_cross_entropy(logits,
                                                             batch[1]);
      ad_tape_end(tape);
      ad_tensor *grads[32];
      if (!loss || ad_tape_var_gradients(tape, loss, nvars, train, grads) ||
          ad_optimizer_step(opt, nvars, train, grads))
        return fail("training step");
      ad_tape_free(tape);
      ad_metric_update(loss_avg, loss, NULL);
      ad_metric_update(acc, batch[1], logits);
    }
    ad_scope_end();
    if (ad_iter_status(it) != AD_OK) return fail("reading the dataset");
    ad_iter_free(it);
    double seconds = now() - t0;
    ad_progress p = {.epoch = epoch + 1, .epochs = epochs,
                     .step = ad_optimizer_iterations(opt),
                     .loss = ad_metric_result(loss_avg),
                     .metric = "accuracy",
                     .metric_value = ad_metric_result(acc),
                     .examples = ad_metric_count(acc), .seconds = seconds};
    ad_progress_print(stdout, &p);
    if (log) {
      double row[3] = {p.loss, p.metric_value,
                       accuracy(model, split[2], split[3])};
      ad_csv_log_row(log, p.step, row);
    }
  }
  printf("training time: %.1f s\n", now() - t_start);
  if (ckpt && ad_checkpoint_save(ckpt, nall, all, opt) != AD_OK)
    return fail("saving the checkpoint");
  double test_acc = accuracy(model, split[2], split[3]);
  ad_csv_log_close(log);
  ad_metric_free(loss_avg);
  ad_metric_free(acc);
  ad_dataset_free(ds);
  ad_optimizer_free(opt);
  ad_layer_free(model);
  ad_scope_end();
  printf("test accuracy: %.4f\n", test_acc);
  return 0;
}
