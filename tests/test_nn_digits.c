/* The digits example as a test: the small CNN of examples/digits.c,
 * trained with Adam on the fixed split of data/digits.csv.gz, must reach
 * 97% test accuracy.  Under AD_TEST_QUICK (set by `make valgrind`) and
 * under ThreadSanitizer (which slows BLAS-heavy code some 20-fold) a smaller
 * model trains on the first 800 images for 6 epochs and must reach 85%:
 * enough to show that it learns, at a cost those runs can afford.  `make
 * test` and `make asan` train the full configuration. */
#include <stdlib.h>

#include "ad/nn.h"
#include "ad/optim.h"
#include "testutil.h"

enum { PIXELS = 64, CLASSES = 10 };

#ifdef __SANITIZE_THREAD__
#define UNDER_TSAN 1
#else
#define UNDER_TSAN 0
#endif

/* Example i is a test example when i % 5 == 0 (as in examples/digits.c);
 * out: train x, train y, test x, test y.  keep: use only the first keep
 * rows of the file. */
static void load_split(int64_t keep, ad_tensor *out[4]) {
  ad_tensor *all = ad_load_csv("data/digits.csv.gz", 0);
  assert_shape(all, 2, 1797, 65);
  all = ad_slice(all, 0, 0, keep, 1);
  int64_t *idx[2], count[2] = {0, 0};
  idx[0] = malloc((size_t)keep * sizeof(int64_t));
  idx[1] = malloc((size_t)keep * sizeof(int64_t));
  for (int64_t i = 0; i < keep; i++) {
    int part = i % 5 == 0;
    idx[part][count[part]++] = i;
  }
  for (int part = 0; part < 2; part++) {
    ad_tensor *rows = ad_gather(all, 0, idx[part], count[part]);
    out[2 * part] = ad_reshape(
        ad_mul_scalar(ad_slice(rows, 1, 0, PIXELS, 1), 1.0 / 16), 4,
        SHAPE(count[part], 8, 8, 1));
    out[2 * part + 1] =
        ad_squeeze(ad_slice(rows, 1, PIXELS, PIXELS + 1, 1), 1);
    assert_non_null(out[2 * part + 1]);
  }
  free(idx[0]);
  free(idx[1]);
}

static ad_layer *cnn(int64_t f1, int64_t f2, int64_t hidden) {
  ad_layer *m = ad_model_new("cnn");
  ad_model_add(m, ad_layer_conv2d(f1, 3, 3, 1, 1, AD_PAD_SAME, AD_ACT_RELU,
                                  true));
  ad_model_add(m, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME));
  ad_model_add(m, ad_layer_conv2d(f2, 3, 3, 1, 1, AD_PAD_SAME, AD_ACT_RELU,
                                  true));
  ad_model_add(m, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME));
  ad_model_add(m, ad_layer_flatten());
  ad_model_add(m, ad_layer_dense(hidden, AD_ACT_RELU, true));
  ad_model_add(m, ad_layer_dropout(0.4, 7));
  ad_model_add(m, ad_layer_dense(CLASSES, AD_ACT_LINEAR, true));
  assert_int_equal(ad_error(), AD_OK);
  return m;
}

static double test_accuracy(ad_layer *model, ad_tensor *x, ad_tensor *y) {
  ad_metric *acc = ad_metric_accuracy(NULL);
  assert_int_equal(ad_metric_update(acc, y, ad_layer_call(model, x, false)),
                   AD_OK);
  double r = ad_metric_result(acc);
  ad_metric_free(acc);
  return r;
}

static void cnn_reaches_97_percent_on_the_digits(void **state) {
  (void)state;
  bool quick = test_quick() || UNDER_TSAN;
  ad_tensor *split[4];
  load_split(quick ? 800 : 1797, split);
  ad_seed(42);
  ad_layer *model = quick ? cnn(8, 16, 32) : cnn(32, 64, 128);
  ad_optimizer *opt =
      ad_optimizer_adam(quick ? 3e-3 : 1e-3, 0.9, 0.999, 1e-7);
  ad_dataset *ds = ad_dataset_batch(
      ad_dataset_shuffle(ad_dataset_from_tensor_slices(2, split), 2048, 1),
      32, false);
  int epochs = quick ? 6 : 15;
  ad_var *vars[16];
  int n = 0;
  for (int epoch = 0; epoch < epochs; epoch++) {
    ad_iterator *it = ad_dataset_iter(ds);
    ad_tensor *b[2];
    ad_scope_begin();
    while (ad_iter_next(it, b)) {
      ad_tape *tape = ad_tape_begin(0);
      ad_tensor *loss = ad_loss_sparse_softmax_cross_entropy(
          ad_layer_call(model, b[0], true), b[1]);
      ad_tape_end(tape);
      assert_non_null(loss);
      if (n == 0)
        n = (int)ad_layer_variables(model, AD_VARS_TRAINABLE, vars, 16);
      assert_int_equal(n, 8);
      ad_tensor *g[16];
      assert_int_equal(ad_tape_var_gradients(tape, loss, n, vars, g), AD_OK);
      assert_int_equal(ad_optimizer_step(opt, n, vars, g), AD_OK);
      ad_tape_free(tape);
    }
    ad_scope_end();
    assert_int_equal(ad_iter_status(it), AD_OK);
    ad_iter_free(it);
  }
  double acc = test_accuracy(model, split[2], split[3]);
  print_message("digits CNN: test accuracy %.4f after %d epochs%s\n", acc,
                epochs, quick ? " (quick configuration)" : "");
  assert_true(acc >= (quick ? 0.85 : 0.97));
  ad_dataset_free(ds);
  ad_optimizer_free(opt);
  ad_layer_free(model);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(cnn_reaches_97_percent_on_the_digits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
