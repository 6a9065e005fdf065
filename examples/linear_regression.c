/* Linear regression by gradient descent, as in TensorFlow's eager guide:
 * 1000 noisy points around y = 3x + 2, a mean-squared-error loss and its
 * gradient with respect to the weight W and the bias B. */
#include <ad.h>
#include <stdio.h>

#define NUM_EXAMPLES 1000
#define STEPS 200
#define LEARNING_RATE 0.01

typedef struct dataset {
  ad_tensor *inputs, *outputs;
} dataset;

/* loss(W, B) = mean((inputs * W + B - outputs)^2). */
static ad_tensor *loss(int n, ad_tensor *const *params, void *ctx) {
  (void)n;
  const dataset *data = ctx;
  ad_tensor *prediction = ad_add(ad_mul(data->inputs, params[0]), params[1]);
  ad_tensor *error = ad_sub(prediction, data->outputs);
  return ad_mean(ad_square(error), 0, NULL, false);
}

int main(void) {
  ad_scope_begin();
  ad_seed(2017);
  const int64_t shape[1] = {NUM_EXAMPLES};
  ad_tensor *inputs = ad_rand_normal(1, shape, 0.0, 1.0);
  ad_tensor *noise = ad_rand_normal(1, shape, 0.0, 1.0);
  dataset data = {inputs,
                  ad_add(ad_add_scalar(ad_mul_scalar(inputs, 3.0), 2.0),
                         noise)};
  if (!data.outputs) {
    fprintf(stderr, "linear_regression: %s\n", ad_error_message());
    return 1;
  }

  /* Start from W = 5, B = 10, as the guide does.  The parameters are
   * variables: mutable state that tapes watch when it is read. */
  ad_var *W = ad_var_new("weight", ad_scalar(5.0));
  ad_var *B = ad_var_new("bias", ad_scalar(10.0));
  ad_var *vars[2] = {W, B};
  ad_tensor *params[2] = {ad_var_value(W), ad_var_value(B)};
  printf("Initial loss: %f\n", ad_item(loss(2, params, &data)));
  for (int step = 0; step < STEPS; step++) {
    /* Each step's tensors live in the step's own scope. */
    ad_scope_begin();
    ad_tensor *grads[2];
    params[0] = ad_var_value(W);
    params[1] = ad_var_value(B);
    if (ad_grad_n(loss, &data, 2, params, grads, NULL) != AD_OK) {
      fprintf(stderr, "linear_regression: %s\n", ad_error_message());
      return 1;
    }
    for (int i = 0; i < 2; i++)
      ad_var_assign(vars[i], ad_sub(params[i],
                                    ad_mul_scalar(grads[i], LEARNING_RATE)));
    if (step % 20 == 0) {
      params[0] = ad_var_value(W);
      params[1] = ad_var_value(B);
      printf("Loss at step %03d: %f\n", step,
             ad_item(loss(2, params, &data)));
    }
    ad_scope_end();
  }
  params[0] = ad_var_value(W);
  params[1] = ad_var_value(B);
  printf("Final loss: %f\n", ad_item(loss(2, params, &data)));
  printf("W, B = %f, %f\n", ad_item(params[0]), ad_item(params[1]));

  /* The same fit with implicit gradients: a tape watches every variable
   * the loss reads, like TensorFlow's implicit_gradients. */
  ad_var_assign(W, ad_scalar(5.0));
  ad_var_assign(B, ad_scalar(10.0));
  for (int step = 0; step < STEPS; step++) {
    ad_scope_begin();
    ad_tape *tape = ad_tape_begin(0);
    ad_tensor *wb[2] = {ad_var_value(W), ad_var_value(B)};
    ad_tensor *l = loss(2, wb, &data);
    ad_tape_end(tape);
    ad_tensor *grads[2];
    ad_status st = ad_tape_var_gradients(tape, l, 2, vars, grads);
    ad_tape_free(tape);
    if (st != AD_OK) {
      fprintf(stderr, "linear_regression: %s\n", ad_error_message());
      return 1;
    }
    for (int i = 0; i < 2; i++)
      ad_var_assign(vars[i], ad_sub(wb[i],
                                    ad_mul_scalar(grads[i], LEARNING_RATE)));
    ad_scope_end();
  }
  printf("With implicit gradients: W, B = %f, %f\n",
         ad_item(ad_var_value(W)), ad_item(ad_var_value(B)));
  ad_var_free(W);
  ad_var_free(B);
  ad_scope_end();
  return 0;
}
