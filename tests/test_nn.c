/* Tests of layers, model containers, losses, metrics and training
 * feedback (include/ad/nn.h). */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "ad/nn.h"
#include "testutil.h"

#define TOL 1e-12

static ad_tensor *mat(int64_t r, int64_t c, const double *v) {
  return ad_tensor_new(2, SHAPE(r, c), v);
}

/* Variables of a layer into a fixed array; returns the count. */
static int64_t vars_of(const ad_layer *l, unsigned flags, ad_var **out) {
  int64_t n = ad_layer_variables(l, flags, out, 16);
  assert_true(n >= 0 && n <= 16);
  return n;
}

static ad_tensor *value(ad_var *v) { return ad_var_value(v); }

/* ---- the guide's two- and three-layer examples ------------------------ */

static void two_layer_model_creates_variables_on_first_call(void **state) {
  (void)state;
  ad_layer *model = ad_model_new("two_layers");
  assert_int_equal(ad_model_add(model, ad_layer_dense(2, AD_ACT_LINEAR,
                                                      false)), AD_OK);
  assert_int_equal(ad_model_add(model, ad_layer_dense(3, AD_ACT_LINEAR,
                                                      false)), AD_OK);
  assert_int_equal(ad_layer_variables(model, 0, NULL, 0), 0);
  ad_tensor *y = ad_layer_call(model, mat(1, 1, VALUES(1.0)), false);
  assert_shape(y, 2, 1, 3);
  ad_var *v[16];
  assert_int_equal(vars_of(model, 0, v), 2);
  assert_shape(value(v[0]), 2, 1, 2);
  assert_shape(value(v[1]), 2, 2, 3);
  assert_string_equal(ad_var_name(v[0]), "two_layers/dense/kernel");
  assert_string_equal(ad_var_name(v[1]), "two_layers/dense_1/kernel");
  ad_layer_free(model);
}

static void three_layer_model_nests_a_model(void **state) {
  (void)state;
  ad_layer *inner = ad_model_new("two_layers");
  ad_model_add(inner, ad_layer_dense(2, AD_ACT_LINEAR, false));
  ad_model_add(inner, ad_layer_dense(3, AD_ACT_LINEAR, false));
  ad_layer *model = ad_model_new("three_layers");
  assert_int_equal(ad_model_add(model, inner), AD_OK);
  assert_int_equal(ad_model_add(model, ad_layer_dense(4, AD_ACT_LINEAR,
                                                      false)), AD_OK);
  assert_int_equal(ad_layer_variables(model, 0, NULL, 0), 0);
  assert_shape(ad_layer_call(model, mat(1, 1, VALUES(1.0)), false), 2, 1, 4);
  ad_var *v[16];
  assert_int_equal(vars_of(model, 0, v), 3);
  assert_shape(value(v[0]), 2, 1, 2);
  assert_shape(value(v[1]), 2, 2, 3);
  assert_shape(value(v[2]), 2, 3, 4);
  assert_string_equal(ad_var_name(v[0]),
                      "three_layers/two_layers/dense/kernel");
  assert_string_equal(ad_var_name(v[2]), "three_layers/dense/kernel");
  /* The nested model lists its own variables too. */
  assert_int_equal(vars_of(inner, 0, v), 2);
  assert_int_equal(ad_model_num_layers(model), 2);
  assert_ptr_equal(ad_model_layer(model, 0), inner);
  ad_layer_free(model);
}

/* ---- Dense ------------------------------------------------------------- */

static void dense_computes_activation_of_affine_map(void **state) {
  (void)state;
  ad_layer *d = ad_layer_dense(2, AD_ACT_RELU, true);
  ad_tensor *x = mat(2, 3, VALUES(1, 2, 3, -1, 0, 1));
  assert_int_equal(ad_layer_build(d, 2, SHAPE(2, 3)), AD_OK);
  ad_var *v[16];
  assert_int_equal(vars_of(d, 0, v), 2);
  assert_int_equal(ad_var_assign(v[0], mat(3, 2, VALUES(1, -1, 0, 1, 2, 0))),
                   AD_OK);
  assert_int_equal(ad_var_assign(v[1], ad_tensor_new(1, SHAPE(2),
                                                     VALUES(0.5, -3))),
                   AD_OK);
  /* x W = [[7, 1], [1, 1]]; + b = [[7.5, -2], [1.5, -2]]; relu. */
  assert_tensor_near(ad_layer_call(d, x, true), VALUES(7.5, 0, 1.5, 0), 4,
                     TOL);
  assert_string_equal(ad_var_name(v[1]), "dense/bias");
  ad_layer_free(d);
}

static void dense_initial_values_follow_glorot_and_zero_bias(void **state) {
  (void)state;
  ad_seed(5);
  ad_layer *d = ad_layer_dense(30, AD_ACT_LINEAR, true);
  ad_layer_call(d, ad_zeros(2, SHAPE(4, 20)), false);
  ad_var *v[16];
  vars_of(d, 0, v);
  double limit = sqrt(6.0 / 50.0);
  assert_true(ad_item(ad_max(ad_abs(value(v[0])), 0, NULL, false)) <= limit);
  assert_true(ad_item(ad_max(ad_abs(value(v[0])), 0, NULL, false)) >
              0.5 * limit);
  assert_tensors_close(value(v[1]), ad_zeros(1, SHAPE(30)), 0);
  /* The same seed builds the same weights. */
  ad_seed(5);
  ad_layer *d2 = ad_layer_dense(30, AD_ACT_LINEAR, true);
  ad_layer_call(d2, ad_zeros(2, SHAPE(4, 20)), false);
  ad_var *w[16];
  vars_of(d2, 0, w);
  assert_tensors_close(value(v[0]), value(w[0]), 0);
  ad_layer_free(d);
  ad_layer_free(d2);
}

static void dense_applies_to_the_last_axis(void **state) {
  (void)state;
  ad_layer *d = ad_layer_dense(5, AD_ACT_TANH, true);
  ad_tensor *x = ad_rand_normal(3, SHAPE(2, 3, 4), 0, 1);
  ad_tensor *y = ad_layer_call(d, x, false);
  assert_shape(y, 3, 2, 3, 5);
  ad_var *v[16];
  vars_of(d, 0, v);
  ad_tensor *want = ad_tanh(ad_add(ad_matmul(x, value(v[0])), value(v[1])));
  assert_tensors_close(y, want, TOL);
  ad_layer_free(d);
}

static void dense_rejects_other_input_width_after_build(void **state) {
  (void)state;
  ad_layer *d = ad_layer_dense(2, AD_ACT_LINEAR, true);
  assert_non_null(ad_layer_call(d, ad_zeros(2, SHAPE(1, 3)), false));
  assert_null(ad_layer_call(d, ad_zeros(2, SHAPE(1, 4)), false));
  assert_error(AD_ESHAPE, "layer 'dense' (dense) expects inputs (..., 3), "
                          "got (1, 4)");
  assert_null(ad_layer_call(d, ad_scalar(1), false));
  assert_error(AD_ESHAPE, "rank >= 1");
  ad_layer_free(d);
}

static void softmax_and_sigmoid_activations(void **state) {
  (void)state;
  ad_layer *s = ad_layer_dense(3, AD_ACT_SOFTMAX, false);
  ad_layer *g = ad_layer_dense(3, AD_ACT_SIGMOID, false);
  ad_tensor *x = ad_rand_normal(2, SHAPE(4, 2), 0, 1);
  ad_tensor *ys = ad_layer_call(s, x, false);
  assert_tensors_close(ad_sum(ys, 1, (const int[]){1}, false),
                       ad_ones(1, SHAPE(4)), 1e-14);
  ad_var *v[16];
  vars_of(g, 0, v);
  ad_tensor *yg = ad_layer_call(g, x, false);
  vars_of(g, 0, v);
  assert_tensors_close(yg, ad_sigmoid(ad_matmul(x, value(v[0]))), TOL);
  ad_layer_free(s);
  ad_layer_free(g);
}

/* ---- Conv2D ------------------------------------------------------------ */

/* x padded with zeros: top, bottom rows and left, right columns. */
static ad_tensor *pad_nhwc(ad_tensor *x, int64_t top, int64_t bottom,
                           int64_t left, int64_t right, double v) {
  const int64_t *s = ad_shape(x);
  if (top + bottom > 0) {
    ad_tensor *parts[3] = {ad_full(4, SHAPE(s[0], top, s[2], s[3]), v), x,
                           ad_full(4, SHAPE(s[0], bottom, s[2], s[3]), v)};
    x = ad_concat(3, parts, 1);
  }
  s = ad_shape(x);
  if (left + right > 0) {
    ad_tensor *parts[3] = {ad_full(4, SHAPE(s[0], s[1], left, s[3]), v), x,
                           ad_full(4, SHAPE(s[0], s[1], right, s[3]), v)};
    x = ad_concat(3, parts, 2);
  }
  return x;
}

static void conv2d_output_shapes_follow_tensorflow(void **state) {
  (void)state;
  /* (H, W, kernel, stride, padding) -> (OH, OW). */
  const struct {
    int64_t h, w;
    int k, s;
    ad_padding p;
    int64_t oh, ow;
  } cases[] = {
      {8, 8, 3, 1, AD_PAD_SAME, 8, 8},   {8, 8, 3, 1, AD_PAD_VALID, 6, 6},
      {7, 5, 3, 2, AD_PAD_SAME, 4, 3},   {7, 5, 3, 2, AD_PAD_VALID, 3, 2},
      {5, 6, 2, 2, AD_PAD_SAME, 3, 3},   {4, 4, 5, 1, AD_PAD_SAME, 4, 4},
      {9, 9, 4, 3, AD_PAD_SAME, 3, 3},   {9, 9, 4, 3, AD_PAD_VALID, 2, 2},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ad_layer *c = ad_layer_conv2d(3, cases[i].k, cases[i].k, cases[i].s,
                                  cases[i].s, cases[i].p, AD_ACT_LINEAR,
                                  true);
    ad_tensor *y =
        ad_layer_call(c, ad_ones(4, SHAPE(2, cases[i].h, cases[i].w, 2)),
                      false);
    assert_shape(y, 4, 2, cases[i].oh, cases[i].ow, 3);
    ad_layer_free(c);
  }
}

static void conv2d_same_padding_puts_the_odd_pad_bottom_right(void **state) {
  (void)state;
  /* H = 5, kernel 2, stride 2: output 3, total padding 1, all of it at
   * the bottom (TensorFlow's rule). W = 6: total 0. */
  ad_layer *c = ad_layer_conv2d(2, 2, 2, 2, 2, AD_PAD_SAME, AD_ACT_LINEAR,
                                false);
  ad_tensor *x = ad_rand_normal(4, SHAPE(1, 5, 6, 3), 0, 1);
  ad_tensor *y = ad_layer_call(c, x, false);
  ad_var *v[16];
  vars_of(c, 0, v);
  ad_tensor *want = ad_conv2d(pad_nhwc(x, 0, 1, 0, 0, 0.0), value(v[0]), 2, 2,
                              0, 0);
  assert_tensors_close(y, want, TOL);
  /* Kernel 4, stride 1 on 5x5: padding 3 = 1 above, 2 below. */
  ad_layer *c4 = ad_layer_conv2d(1, 4, 4, 1, 1, AD_PAD_SAME, AD_ACT_RELU,
                                 true);
  ad_tensor *x4 = ad_rand_normal(4, SHAPE(2, 5, 5, 1), 0, 1);
  ad_tensor *y4 = ad_layer_call(c4, x4, false);
  vars_of(c4, 0, v);
  ad_tensor *want4 = ad_relu(ad_add(
      ad_conv2d(pad_nhwc(x4, 1, 2, 1, 2, 0.0), value(v[0]), 1, 1, 0, 0),
      value(v[1])));
  assert_tensors_close(y4, want4, TOL);
  ad_layer_free(c);
  ad_layer_free(c4);
}

static void conv2d_checks_rank_and_channels(void **state) {
  (void)state;
  ad_layer *c = ad_layer_conv2d(4, 3, 3, 1, 1, AD_PAD_SAME, AD_ACT_RELU, true);
  assert_null(ad_layer_call(c, ad_zeros(3, SHAPE(1, 8, 8)), false));
  assert_error(AD_ESHAPE, "NHWC input of rank 4");
  assert_non_null(ad_layer_call(c, ad_zeros(4, SHAPE(1, 8, 8, 2)), false));
  assert_null(ad_layer_call(c, ad_zeros(4, SHAPE(1, 8, 8, 3)), false));
  assert_error(AD_ESHAPE, "inputs with 2 channels");
  ad_var *v[16];
  assert_int_equal(vars_of(c, 0, v), 2);
  assert_shape(value(v[0]), 4, 3, 3, 2, 4);
  assert_shape(value(v[1]), 1, 4);
  ad_layer_free(c);
}

/* ---- MaxPool2D, Dropout, Flatten -------------------------------------- */

static void max_pool_valid_and_same(void **state) {
  (void)state;
  ad_tensor *x = ad_reshape(ad_arange(0, 15, 1), 4, SHAPE(1, 3, 5, 1));
  ad_layer *valid = ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_VALID);
  ad_layer *same = ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME);
  /* Rows 0..2 of 0..4, 5..9, 10..14. */
  ad_tensor *yv = ad_layer_call(valid, x, false);
  assert_shape(yv, 4, 1, 1, 2, 1);
  assert_tensor_near(yv, VALUES(6, 8), 2, 0);
  ad_tensor *ys = ad_layer_call(same, ad_neg(x), false);
  assert_shape(ys, 4, 1, 2, 3, 1);
  /* Padding is -inf: the last column and row hold real maxima. */
  assert_tensor_near(ys, VALUES(0, -2, -4, -10, -12, -14), 6, 0);
  ad_var *v[16];
  assert_int_equal(vars_of(same, 0, v), 0);
  /* Gradients reach only real inputs. */
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *s = ad_sum_all(ad_layer_call(same, x, false));
  ad_tape_end(tape);
  ad_tensor *g = ad_tape_gradient(tape, s, x);
  assert_tensor_near(g, VALUES(0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1),
                     15, 0);
  ad_tape_free(tape);
  ad_layer_free(valid);
  ad_layer_free(same);
}

static void dropout_is_identity_outside_training(void **state) {
  (void)state;
  ad_layer *d = ad_layer_dropout(0.5, 7);
  ad_tensor *x = ad_rand_normal(2, SHAPE(3, 4), 0, 1);
  assert_tensors_close(ad_layer_call(d, x, false), x, 0);
  ad_var *v[16];
  assert_int_equal(vars_of(d, 0, v), 1);
  assert_int_equal(vars_of(d, AD_VARS_TRAINABLE, v), 0);
  assert_int_equal(ad_layer_num_params(d, AD_VARS_TRAINABLE), 0);
  ad_layer_free(d);
}

static void dropout_zeroes_and_scales_reproducibly(void **state) {
  (void)state;
  const int64_t n = 20000;
  ad_layer *d = ad_layer_dropout(0.25, 42);
  ad_tensor *x = ad_ones(1, &n);
  ad_tensor *y1 = ad_layer_call(d, x, true);
  ad_tensor *y2 = ad_layer_call(d, x, true);
  double *v = malloc((size_t)n * sizeof *v);
  assert_int_equal(ad_read(y1, v, n), AD_OK);
  int64_t zeros = 0;
  for (int64_t i = 0; i < n; i++) {
    if (v[i] == 0) zeros++;
    else assert_true(fabs(v[i] - 4.0 / 3.0) < 1e-15);
  }
  free(v);
  assert_true(fabs((double)zeros / (double)n - 0.25) < 0.015);
  /* Successive calls draw new masks; the position is a variable. */
  assert_true(ad_item(ad_sum_all(ad_abs(ad_sub(y1, y2)))) > 0);
  ad_var *vars[16];
  vars_of(d, 0, vars);
  assert_string_equal(ad_var_name(vars[0]), "dropout/rng_step");
  assert_tensor_near(value(vars[0]), VALUES(2), 1, 0);
  /* Another layer with the same seed, moved to step 1, draws y2. */
  ad_layer *e = ad_layer_dropout(0.25, 42);
  ad_layer_call(e, x, false);
  ad_var *ev[16];
  vars_of(e, 0, ev);
  ad_var_assign(ev[0], ad_scalar(1));
  assert_tensors_close(ad_layer_call(e, x, true), y2, 0);
  ad_layer_free(d);
  ad_layer_free(e);
}

static void dropout_gradient_uses_the_mask(void **state) {
  (void)state;
  ad_layer *d = ad_layer_dropout(0.5, 3);
  ad_tensor *x = ad_rand_normal(1, SHAPE(50), 0, 1);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_layer_call(d, x, true);
  ad_tensor *s = ad_sum_all(y);
  ad_tape_end(tape);
  ad_tensor *g = ad_tape_gradient(tape, s, x);
  /* y = x * mask, so the gradient is the mask: y == x * g. */
  assert_tensors_close(y, ad_mul(x, g), TOL);
  /* Reading the step counter is not a use the tape records. */
  assert_int_equal(ad_tape_num_variables(tape), 0);
  ad_tape_free(tape);
  ad_layer_free(d);
}

static void flatten_keeps_the_batch_axis(void **state) {
  (void)state;
  ad_layer *f = ad_layer_flatten();
  assert_shape(ad_layer_call(f, ad_zeros(4, SHAPE(2, 3, 4, 5)), false), 2, 2,
               60);
  assert_shape(ad_layer_call(f, ad_zeros(1, SHAPE(7)), false), 2, 7, 1);
  assert_null(ad_layer_call(f, ad_scalar(1), false));
  assert_error(AD_ESHAPE, "layer 'flatten'");
  ad_layer_free(f);
}

/* ---- Models ------------------------------------------------------------ */

static void model_renames_clashing_siblings(void **state) {
  (void)state;
  ad_layer *m = ad_model_new(NULL);
  assert_string_equal(ad_layer_name(m), "model");
  for (int i = 0; i < 3; i++)
    ad_model_add(m, ad_layer_dense(2, AD_ACT_LINEAR, true));
  assert_string_equal(ad_layer_name(ad_model_layer(m, 0)), "dense");
  assert_string_equal(ad_layer_name(ad_model_layer(m, 1)), "dense_1");
  assert_string_equal(ad_layer_name(ad_model_layer(m, 2)), "dense_2");
  ad_layer *named = ad_layer_dense(1, AD_ACT_LINEAR, true);
  assert_int_equal(ad_layer_set_name(named, "head"), AD_OK);
  ad_model_add(m, named);
  assert_int_equal(ad_layer_set_name(named, "dense_1"), AD_EINVAL);
  assert_error(AD_EINVAL, "already has a layer 'dense_1'");
  assert_int_equal(ad_layer_set_name(named, "a/b"), AD_EINVAL);
  assert_error(AD_EINVAL, "without '/'");
  ad_layer_call(m, ad_zeros(2, SHAPE(1, 2)), false);
  assert_int_equal(ad_layer_set_name(named, "late"), AD_ESTATE);
  assert_error(AD_ESTATE, "names are fixed");
  ad_var *v[16];
  assert_int_equal(vars_of(m, 0, v), 8);
  assert_string_equal(ad_var_name(v[7]), "model/head/bias");
  assert_string_equal(ad_layer_kind(m), "model");
  assert_string_equal(ad_layer_kind(named), "dense");
  ad_layer_free(m);
}

static void model_add_errors_do_not_leak(void **state) {
  (void)state;
  ad_layer *m = ad_model_new("m");
  ad_layer *d = ad_layer_dense(2, AD_ACT_LINEAR, true);
  /* Adding to a layer that is not a model frees the layer. */
  assert_int_equal(ad_model_add(d, ad_layer_flatten()), AD_EINVAL);
  assert_error(AD_EINVAL, "is a dense, not a model");
  assert_int_equal(ad_model_add(m, d), AD_OK);
  /* A layer that belongs to a model is left to its owner. */
  ad_layer *m2 = ad_model_new("m2");
  assert_int_equal(ad_model_add(m2, d), AD_ESTATE);
  assert_error(AD_ESTATE, "already belongs to model 'm'");
  ad_layer_free(d);
  assert_error(AD_ESTATE, "belongs to model 'm'");
  /* A cycle is refused. */
  assert_int_equal(ad_model_add(m2, m), AD_OK);
  assert_int_equal(ad_model_add(m, m2), AD_ESTATE);
  assert_error(AD_ESTATE, "would make a cycle");
  ad_layer *m3 = ad_model_new("m3");
  assert_int_equal(ad_model_add(m3, m3), AD_ESTATE);
  assert_error(AD_ESTATE, "cycle");
  /* A NULL layer keeps its error. */
  assert_int_equal(ad_model_add(m3, ad_layer_dense(0, AD_ACT_LINEAR, true)),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "units must be >= 1");
  assert_null(ad_model_layer(m3, 0));
  assert_error(AD_EINVAL, "out of range");
  assert_int_equal(ad_model_num_layers(d), -1);
  assert_error(AD_EINVAL, "not a model");
  ad_layer_free(m2);
  ad_layer_free(m3);
}

static void constructors_reject_bad_arguments(void **state) {
  (void)state;
  assert_null(ad_layer_dense(2, (ad_activation)9, true));
  assert_error(AD_EINVAL, "unknown activation 9");
  assert_null(ad_layer_conv2d(0, 3, 3, 1, 1, AD_PAD_SAME, AD_ACT_RELU, true));
  assert_error(AD_EINVAL, "filters must be >= 1");
  assert_null(ad_layer_conv2d(2, 3, 0, 1, 1, AD_PAD_SAME, AD_ACT_RELU, true));
  assert_error(AD_EINVAL, "must all be >= 1");
  assert_null(ad_layer_max_pool2d(2, 2, 2, 2, (ad_padding)3));
  assert_error(AD_EINVAL, "unknown padding 3");
  assert_null(ad_layer_dropout(1.0, 0));
  assert_error(AD_EINVAL, "0 <= rate < 1");
  assert_null(ad_layer_dropout(NAN, 0));
  assert_error(AD_EINVAL, "rate");
  assert_null(ad_model_new("x/y"));
  assert_error(AD_EINVAL, "without '/'");
  assert_null(ad_layer_call(NULL, ad_scalar(1), false));
  assert_error(AD_EINVAL, "layer");
  assert_int_equal(ad_layer_variables(NULL, 0, NULL, 0), -1);
  assert_error(AD_EINVAL, "layer");
  ad_layer *d = ad_layer_dense(1, AD_ACT_LINEAR, true);
  assert_int_equal(ad_layer_variables(d, 0, NULL, 3), -1);
  assert_error(AD_EINVAL, "cap");
  ad_layer_free(d);
  ad_layer_free(NULL);
}

/* A residual block: x + dense(x), through a custom call. */
static ad_tensor *residual(ad_layer *model, ad_tensor *x, bool training,
                           void *ctx) {
  (void)ctx;
  return ad_add(x, ad_layer_call(ad_model_layer(model, 0), x, training));
}

static void custom_call_composes_layers(void **state) {
  (void)state;
  ad_layer *block = ad_model_new("residual");
  ad_model_add(block, ad_layer_dense(3, AD_ACT_TANH, true));
  assert_int_equal(ad_model_set_call(block, residual, NULL), AD_OK);
  ad_tensor *x = ad_rand_normal(2, SHAPE(2, 3), 0, 1);
  ad_tensor *y = ad_layer_call(block, x, false);
  ad_var *v[16];
  vars_of(block, 0, v);
  assert_tensors_close(
      y, ad_add(x, ad_tanh(ad_add(ad_matmul(x, value(v[0])), value(v[1])))),
      TOL);
  ad_model_set_call(block, NULL, NULL);
  assert_tensors_close(ad_layer_call(block, x, false),
                       ad_tanh(ad_add(ad_matmul(x, value(v[0])),
                                      value(v[1]))),
                       TOL);
  ad_layer_free(block);
}

static ad_tensor *model_loss(ad_tensor *x, void *ctx) {
  return ad_sum_all(ad_square(ad_layer_call(ctx, x, false)));
}

static void model_is_differentiable_to_second_order(void **state) {
  (void)state;
  ad_seed(11);
  ad_layer *m = ad_model_new("cnn");
  ad_model_add(m, ad_layer_conv2d(2, 3, 3, 1, 1, AD_PAD_SAME, AD_ACT_TANH,
                                  true));
  ad_model_add(m, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_SAME));
  ad_model_add(m, ad_layer_flatten());
  ad_model_add(m, ad_layer_dense(3, AD_ACT_SIGMOID, true));
  ad_tensor *x = ad_rand_normal(4, SHAPE(2, 3, 3, 1), 0, 1);
  ad_check_report report;
  ad_status st = ad_check_grads(model_loss, m, x, 2,
                                AD_CHECK_FWD | AD_CHECK_REV, 1e-6, 1e-5,
                                &report);
  if (st != AD_OK) print_message("%s\n", report.message);
  assert_int_equal(st, AD_OK);
  ad_layer_free(m);
}

static void tape_sees_model_variables_in_order(void **state) {
  (void)state;
  ad_layer *m = ad_model_new("mlp");
  ad_model_add(m, ad_layer_dense(4, AD_ACT_RELU, true));
  ad_model_add(m, ad_layer_dense(2, AD_ACT_LINEAR, true));
  ad_tensor *x = ad_rand_normal(2, SHAPE(5, 3), 0, 1);
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *loss = ad_loss_mse(ad_layer_call(m, x, true),
                                ad_zeros(2, SHAPE(5, 2)));
  ad_tape_end(tape);
  ad_var *v[16];
  assert_int_equal(vars_of(m, AD_VARS_TRAINABLE, v), 4);
  assert_int_equal(ad_tape_num_variables(tape), 4);
  for (int i = 0; i < 4; i++) assert_ptr_equal(ad_tape_variable(tape, i), v[i]);
  ad_tensor *g[4];
  assert_int_equal(ad_tape_var_gradients(tape, loss, 4, v, g), AD_OK);
  for (int i = 0; i < 4; i++) {
    assert_non_null(g[i]);
    assert_int_equal(ad_numel(g[i]), ad_numel(value(v[i])));
  }
  ad_tape_free(tape);
  assert_int_equal(ad_layer_num_params(m, 0), 3 * 4 + 4 + 4 * 2 + 2);
  ad_layer_free(m);
}

static void summary_lists_layers_and_parameters(void **state) {
  (void)state;
  ad_layer *m = ad_model_new("net");
  ad_layer *inner = ad_model_new("features");
  ad_model_add(inner, ad_layer_dense(4, AD_ACT_RELU, true));
  ad_model_add(m, inner);
  ad_model_add(m, ad_layer_dropout(0.1, 1));
  ad_model_add(m, ad_layer_dense(2, AD_ACT_LINEAR, false));
  ad_layer_build(m, 2, SHAPE(1, 3));
  FILE *f = tmpfile();
  assert_non_null(f);
  assert_int_equal(ad_layer_summary(f, m), AD_OK);
  rewind(f);
  char text[2048];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  assert_non_null(strstr(text, "net "));
  assert_non_null(strstr(text, "  features"));
  assert_non_null(strstr(text, "    dense "));
  assert_non_null(strstr(text, "(1, 4)"));
  assert_non_null(strstr(text, "total parameters: 25 (trainable 24, "
                               "non-trainable 1)"));
  assert_int_equal(ad_layer_summary(NULL, m), AD_EINVAL);
  assert_error(AD_EINVAL, "f");
  ad_layer_free(m);
}

/* ---- Losses ------------------------------------------------------------ */

static void mse_is_the_mean_of_squares(void **state) {
  (void)state;
  ad_tensor *p = mat(2, 2, VALUES(1, 2, 3, 4));
  ad_tensor *t = mat(2, 2, VALUES(0, 2, 5, 4));
  assert_tensor_near(ad_loss_mse(p, t), VALUES(5.0 / 4), 1, TOL);
  assert_null(ad_loss_mse(p, ad_zeros(1, SHAPE(2))));
  assert_error(AD_ESHAPE, "pred (2, 2) and target (2,)");
  assert_null(ad_loss_mse(NULL, t));
  assert_error(AD_EINVAL, "pred");
}

static void cross_entropy_matches_its_definition(void **state) {
  (void)state;
  ad_tensor *logits = mat(2, 3, VALUES(1, 2, 3, 0.5, -1, 2));
  ad_tensor *onehot = mat(2, 3, VALUES(0, 0, 1, 1, 0, 0));
  ad_tensor *labels = ad_tensor_new(1, SHAPE(2), VALUES(2, 0));
  double l0 = -(3 - log(exp(1) + exp(2) + exp(3)));
  double l1 = -(0.5 - log(exp(0.5) + exp(-1) + exp(2)));
  double want = (l0 + l1) / 2;
  assert_tensor_near(ad_loss_softmax_cross_entropy(logits, onehot), &want, 1,
                     1e-14);
  assert_tensor_near(ad_loss_sparse_softmax_cross_entropy(logits, labels),
                     &want, 1, 1e-14);
}

static void cross_entropy_is_stable_for_large_logits(void **state) {
  (void)state;
  ad_tensor *logits = mat(2, 3, VALUES(1000, -1000, 0, -5000, 4990, 5000));
  ad_tensor *labels = ad_tensor_new(1, SHAPE(2), VALUES(1, 2));
  ad_tensor *onehot = mat(2, 3, VALUES(0, 1, 0, 0, 0, 1));
  /* Row 0: 2000 + log(1 + e^-1000 + e^-2000) = 2000; row 1:
   * log(1 + e^-10) ~ 4.54e-5. */
  double want = (2000 + log1p(exp(-10))) / 2;
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, logits);
  ad_tensor *sparse = ad_loss_sparse_softmax_cross_entropy(logits, labels);
  ad_tensor *dense = ad_loss_softmax_cross_entropy(logits, onehot);
  ad_tape_end(tape);
  assert_tensor_near(sparse, &want, 1, 1e-12);
  assert_tensor_near(dense, &want, 1, 1e-12);
  /* The gradient is (softmax - onehot) / rows, finite everywhere. */
  ad_tensor *g = ad_tape_gradient(tape, sparse, logits);
  double s = exp(-10) / (1 + exp(-10));
  assert_tensor_near(g, VALUES(0.5, -0.5, 0, 0, s / 2 - 0, -s / 2), 6, 1e-12);
  ad_tape_free(tape);
}

static void cross_entropy_gradient_is_softmax_minus_labels(void **state) {
  (void)state;
  ad_tensor *logits = ad_rand_normal(2, SHAPE(4, 5), 0, 2);
  ad_tensor *labels = ad_tensor_new(1, SHAPE(4), VALUES(0, 4, 2, 2));
  ad_tensor *onehot = ad_tensor_new(2, SHAPE(4, 5), VALUES(
      1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0));
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(tape, logits);
  ad_tape_watch(tape, onehot);
  ad_tensor *a = ad_loss_sparse_softmax_cross_entropy(logits, labels);
  ad_tensor *b = ad_loss_softmax_cross_entropy(logits, onehot);
  ad_tape_end(tape);
  ad_tensor *want = ad_mul_scalar(ad_sub(ad_softmax(logits, -1), onehot),
                                  0.25);
  assert_tensors_close(ad_tape_gradient(tape, a, logits), want, 1e-14);
  assert_tensors_close(ad_tape_gradient(tape, b, logits), want, 1e-14);
  /* Labels are data: no gradient flows into them. */
  assert_tensors_close(ad_tape_gradient(tape, b, onehot),
                       ad_zeros(2, SHAPE(4, 5)), 0);
  ad_tape_free(tape);
}

static void cross_entropy_accepts_leading_axes(void **state) {
  (void)state;
  ad_tensor *logits = ad_rand_normal(3, SHAPE(2, 3, 4), 0, 1);
  ad_tensor *labels = mat(2, 3, VALUES(0, 1, 2, 3, 0, 1));
  ad_tensor *flat = ad_reshape(logits, 2, SHAPE(6, 4));
  ad_tensor *fl = ad_reshape(labels, 1, SHAPE(6));
  assert_tensors_close(ad_loss_sparse_softmax_cross_entropy(logits, labels),
                       ad_loss_sparse_softmax_cross_entropy(flat, fl), 1e-14);
}

static void cross_entropy_rejects_bad_labels(void **state) {
  (void)state;
  ad_tensor *logits = ad_zeros(2, SHAPE(3, 4));
  assert_null(ad_loss_sparse_softmax_cross_entropy(
      logits, ad_tensor_new(1, SHAPE(3), VALUES(0, 4, 1))));
  assert_error(AD_EINVAL, "label 4 at position 1 is not a class index in "
                          "0..3");
  assert_null(ad_loss_sparse_softmax_cross_entropy(
      logits, ad_tensor_new(1, SHAPE(3), VALUES(0, 1.5, 1))));
  assert_error(AD_EINVAL, "label 1.5");
  assert_null(ad_loss_sparse_softmax_cross_entropy(logits,
                                                   ad_zeros(1, SHAPE(4))));
  assert_error(AD_ESHAPE, "without its last (class) axis");
  assert_null(ad_loss_softmax_cross_entropy(logits, ad_zeros(1, SHAPE(4))));
  assert_error(AD_ESHAPE, "logits (3, 4) and labels (4,)");
  assert_null(ad_loss_softmax_cross_entropy(ad_scalar(1), ad_scalar(1)));
  assert_error(AD_ESHAPE, "rank >= 1");
  assert_null(ad_loss_softmax_cross_entropy(ad_zeros(2, SHAPE(0, 3)),
                                            ad_zeros(2, SHAPE(0, 3))));
  assert_error(AD_ESHAPE, "no examples");
}

/* ---- Metrics ----------------------------------------------------------- */

static void mean_metric_follows_the_eager_guide(void **state) {
  (void)state;
  ad_metric *m = ad_metric_mean("loss");
  assert_string_equal(ad_metric_name(m), "loss");
  assert_true(ad_metric_result(m) == 0.0);
  ad_metric_update(m, ad_scalar(0), NULL);
  ad_metric_update(m, ad_scalar(5), NULL);
  assert_true(ad_metric_result(m) == 2.5);
  ad_metric_update(m, ad_tensor_new(1, SHAPE(2), VALUES(8, 9)), NULL);
  assert_true(ad_metric_result(m) == 5.5);
  assert_true(ad_metric_count(m) == 4);
  ad_metric_reset(m);
  assert_true(ad_metric_result(m) == 0.0 && ad_metric_count(m) == 0);
  /* Weighted: (1*2 + 3*4) / (1 + 3). */
  ad_metric_update(m, ad_tensor_new(1, SHAPE(2), VALUES(2, 4)),
                   ad_tensor_new(1, SHAPE(2), VALUES(1, 3)));
  assert_true(ad_metric_result(m) == 3.5);
  assert_int_equal(ad_metric_update(m, ad_zeros(1, SHAPE(2)),
                                     ad_zeros(1, SHAPE(3))), AD_ESHAPE);
  assert_error(AD_ESHAPE, "values (2,) and weights (3,)");
  assert_true(ad_metric_result(m) == 3.5);
  ad_metric_free(m);
}

static void accuracy_metric_reads_three_layouts(void **state) {
  (void)state;
  ad_metric *acc = ad_metric_accuracy(NULL);
  assert_string_equal(ad_metric_name(acc), "accuracy");
  /* Class ids against logits: rows 0 and 2 right. */
  ad_tensor *logits = mat(3, 3, VALUES(5, 1, 0, 0, 1, 0.5, 0, 0, 2));
  assert_int_equal(ad_metric_update(acc, ad_tensor_new(1, SHAPE(3),
                                                       VALUES(0, 2, 2)),
                                    logits), AD_OK);
  assert_true(fabs(ad_metric_result(acc) - 2.0 / 3) < 1e-15);
  /* One-hot against logits: row 1 right. */
  assert_int_equal(ad_metric_update(acc, mat(3, 3, VALUES(0, 1, 0, 0, 1, 0,
                                                          1, 0, 0)),
                                    logits), AD_OK);
  assert_true(fabs(ad_metric_result(acc) - 3.0 / 6) < 1e-15);
  /* Ids against ids. */
  assert_int_equal(ad_metric_update(acc, ad_tensor_new(1, SHAPE(2),
                                                       VALUES(1, 2)),
                                    ad_tensor_new(1, SHAPE(2), VALUES(1, 2))),
                   AD_OK);
  assert_true(fabs(ad_metric_result(acc) - 5.0 / 8) < 1e-15);
  assert_true(ad_metric_count(acc) == 8);
  assert_int_equal(ad_metric_update(acc, ad_zeros(1, SHAPE(3)),
                                    ad_zeros(2, SHAPE(4, 3))), AD_ESHAPE);
  assert_error(AD_ESHAPE, "labels (3,) and predictions (4, 3)");
  assert_int_equal(ad_metric_update(acc, ad_tensor_new(1, SHAPE(1),
                                                       VALUES(NAN)),
                                    ad_zeros(2, SHAPE(1, 3))), AD_EINVAL);
  assert_error(AD_EINVAL, "not finite");
  assert_true(fabs(ad_metric_result(acc) - 5.0 / 8) < 1e-15);
  assert_int_equal(ad_metric_update(acc, ad_zeros(1, SHAPE(3)), NULL),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "b");
  ad_metric_free(acc);
  ad_metric_free(NULL);
  assert_true(isnan(ad_metric_result(NULL)));
  assert_error(AD_EINVAL, "m");
}

/* ---- Training feedback ------------------------------------------------- */

static char *slurp(FILE *f) {
  static char text[4096];
  rewind(f);
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  return text;
}

static void progress_line_shows_step_loss_metric_and_rate(void **state) {
  (void)state;
  FILE *f = tmpfile();
  ad_progress p = {.epoch = 3, .epochs = 20, .step = 135, .loss = 0.12346,
                   .metric = "accuracy", .metric_value = 0.965,
                   .examples = 1437, .seconds = 0.5};
  assert_int_equal(ad_progress_print(f, &p), AD_OK);
  p.metric = NULL;
  p.epochs = 0;
  assert_int_equal(ad_progress_print(f, &p), AD_OK);
  const char *text = slurp(f);
  assert_string_equal(text,
                      "epoch  3/20  step    135  loss 0.1235  accuracy "
                      "0.9650      2874 examples/s  0.50 s\n"
                      "epoch 3  step    135  loss 0.1235      2874 "
                      "examples/s  0.50 s\n");
  fclose(f);
  assert_int_equal(ad_progress_print(NULL, &p), AD_EINVAL);
  assert_error(AD_EINVAL, "f");
}

static void csv_log_writes_a_header_and_rows(void **state) {
  (void)state;
  char path[] = "/tmp/libad-test-csv-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  const char *cols[] = {"loss", "accuracy"};
  ad_csv_log *log = ad_csv_log_open(path, 2, cols);
  assert_non_null(log);
  assert_int_equal(ad_csv_log_row(log, 10, VALUES(0.5, NAN)), AD_OK);
  assert_int_equal(ad_csv_log_row(log, 20, VALUES(0.25, 0.875)), AD_OK);
  assert_int_equal(ad_csv_log_close(log), AD_OK);
  FILE *f = fopen(path, "r");
  assert_string_equal(slurp(f), "step,loss,accuracy\n10,0.5,\n"
                                "20,0.25,0.875\n");
  fclose(f);
  unlink(path);
  assert_null(ad_csv_log_open(path, 1, (const char *[]){"a,b"}));
  assert_error(AD_EINVAL, "without commas");
  assert_null(ad_csv_log_open("/nonexistent-dir/x.csv", 1, cols));
  assert_error(AD_EIO, "cannot create '/nonexistent-dir/x.csv'");
  assert_int_equal(ad_csv_log_close(NULL), AD_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(two_layer_model_creates_variables_on_first_call),
      scoped_test(three_layer_model_nests_a_model),
      scoped_test(dense_computes_activation_of_affine_map),
      scoped_test(dense_initial_values_follow_glorot_and_zero_bias),
      scoped_test(dense_applies_to_the_last_axis),
      scoped_test(dense_rejects_other_input_width_after_build),
      scoped_test(softmax_and_sigmoid_activations),
      scoped_test(conv2d_output_shapes_follow_tensorflow),
      scoped_test(conv2d_same_padding_puts_the_odd_pad_bottom_right),
      scoped_test(conv2d_checks_rank_and_channels),
      scoped_test(max_pool_valid_and_same),
      scoped_test(dropout_is_identity_outside_training),
      scoped_test(dropout_zeroes_and_scales_reproducibly),
      scoped_test(dropout_gradient_uses_the_mask),
      scoped_test(flatten_keeps_the_batch_axis),
      scoped_test(model_renames_clashing_siblings),
      scoped_test(model_add_errors_do_not_leak),
      scoped_test(constructors_reject_bad_arguments),
      scoped_test(custom_call_composes_layers),
      scoped_test(model_is_differentiable_to_second_order),
      scoped_test(tape_sees_model_variables_in_order),
      scoped_test(summary_lists_layers_and_parameters),
      scoped_test(mse_is_the_mean_of_squares),
      scoped_test(cross_entropy_matches_its_definition),
      scoped_test(cross_entropy_is_stable_for_large_logits),
      scoped_test(cross_entropy_gradient_is_softmax_minus_labels),
      scoped_test(cross_entropy_accepts_leading_axes),
      scoped_test(cross_entropy_rejects_bad_labels),
      scoped_test(mean_metric_follows_the_eager_guide),
      scoped_test(accuracy_metric_reads_three_layouts),
      scoped_test(progress_line_shows_step_loss_metric_and_rate),
      scoped_test(csv_log_writes_a_header_and_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
