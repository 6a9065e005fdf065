/* The tour: what a new libad user wants to see first, in the order of
 * TensorFlow's eager execution guide, with every example in C. */
#include <ad.h>
#include <stdio.h>

/* Stop the tour with the library's own message when a call fails. */
static ad_tensor *check(ad_tensor *t) {
  if (!t) {
    fprintf(stderr, "tour: %s\n", ad_error_message());
    ad_scope_end();
    return NULL;
  }
  return t;
}

static void heading(const char *title) { printf("\n== %s ==\n", title); }

/* ---- 1. A library for numerical computation ---------------------------- */

static int numerical_computation(void) {
  heading("Eager tensor operations");
  ad_scope_begin();
  const int64_t shape[2] = {2, 2};
  ad_tensor *a = ad_tensor_new(2, shape, (const double[]){1, 2, 3, 4});
  ad_tensor *b = ad_tensor_new(2, shape, (const double[]){4, 5, 6, 7});

  /* Multiply two 2x2 matrices: the result is there at once. */
  ad_tensor *x = check(ad_matmul(a, b));
  if (!x) return 1;
  printf("matmul([[1,2],[3,4]], [[4,5],[6,7]]) =\n");
  ad_print(x);

  /* Add one to each element: ad_add broadcasts like NumPy. */
  ad_tensor *y = check(ad_add(x, ad_scalar(1.0)));
  if (!y) return 1;
  printf("x + 1 =\n");
  ad_print(y);

  /* A random 5x3 matrix from this thread's seeded generator. */
  ad_seed(42);
  ad_tensor *z = check(ad_rand_uniform(2, (const int64_t[]){5, 3}, 0.0, 1.0));
  if (!z) return 1;
  printf("uniform random 5x3 =\n");
  ad_print(z);

  /* Bad input is an error with a message, never a crash. */
  ad_tensor *bad = ad_matmul(ad_ones(2, (const int64_t[]){2, 3}),
                             ad_ones(2, (const int64_t[]){4, 5}));
  printf("a mismatched matmul gives %s: %s\n", bad ? "a tensor" : "NULL",
         ad_error_message());
  ad_error_clear();
  ad_scope_end();
  return 0;
}

/* ---- 2. Dynamic control flow ------------------------------------------- */

/* The Collatz sequence from 12, driven by tensor arithmetic inside an
 * ordinary C while loop: eager values decide the control flow. */
static int collatz(void) {
  heading("Dynamic control flow: Collatz from 12");
  ad_scope_begin();
  ad_tensor *n = ad_scalar(12.0);
  ad_tensor *two = ad_scalar(2.0);
  int steps = 0;
  printf("%g", ad_item(n));
  while (ad_item(ad_greater(n, ad_scalar(1.0))) != 0.0) {
    if (ad_item(ad_equal(ad_mod(n, two), ad_scalar(0.0))) != 0.0)
      n = ad_div(n, two);
    else
      n = ad_add_scalar(ad_mul_scalar(n, 3.0), 1.0);
    if (!check(n)) return 1;
    printf(" -> %g", ad_item(n));
    steps++;
  }
  printf("\nreached 1 in %d steps\n", steps);
  ad_scope_end();
  return 0;
}

/* ---- 3. Automatic differentiation --------------------------------------- */

static ad_tensor *square_fn(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_mul(x, x);
}
static ad_tensor *d_square(ad_tensor *x, void *ctx) {
  return ad_grad(square_fn, ctx, x);
}
static ad_tensor *d2_square(ad_tensor *x, void *ctx) {
  return ad_grad(d_square, ctx, x);
}
static ad_tensor *d3_square(ad_tensor *x, void *ctx) {
  return ad_grad(d2_square, ctx, x);
}

static int derivatives(void) {
  heading("Derivatives of any order");
  ad_scope_begin();
  ad_tensor *three = ad_scalar(3.0);
  printf("f(x) = x*x at x = 3: f = %g, f' = %g, f'' = %g, f''' = %g\n",
         ad_item(square_fn(three, NULL)), ad_item(d_square(three, NULL)),
         ad_item(d2_square(three, NULL)), ad_item(d3_square(three, NULL)));

  /* A gradient tape records what runs while it is open. */
  ad_tensor *x = ad_tensor_new(1, (const int64_t[]){3},
                               (const double[]){1.0, 2.0, 3.0});
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_sum_all(ad_mul(ad_sin(x), x));
  ad_tape_end(tape);
  ad_tensor *dy = check(ad_tape_gradient(tape, y, x));
  ad_tape_free(tape);
  if (!dy) return 1;
  printf("d/dx sum(x sin x) at [1 2 3] = sin x + x cos x =\n");
  ad_print(dy);
  ad_scope_end();
  return 0;
}

/* ---- 4. Forward mode and Hessians --------------------------------------- */

/* The Rosenbrock function summed over consecutive pairs of x. */
static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
  (void)ctx;
  int64_t n = ad_shape(x)[0];
  ad_tensor *head = ad_slice(x, 0, 0, n - 1, 1);
  ad_tensor *tail = ad_slice(x, 0, 1, n, 1);
  ad_tensor *a = ad_sub(tail, ad_square(head));
  ad_tensor *b = ad_add_scalar(ad_neg(head), 1.0);
  return ad_sum_all(ad_add(ad_mul_scalar(ad_square(a), 100.0), ad_square(b)));
}

static int forward_and_hessians(void) {
  heading("Forward mode, Hessian-vector products and Hessians");
  ad_scope_begin();
  ad_tensor *x = ad_tensor_new(1, (const int64_t[]){2},
                               (const double[]){-1.2, 1.0});
  ad_tensor *v = ad_tensor_new(1, (const int64_t[]){2},
                               (const double[]){1.0, 0.0});
  ad_tensor *jv = check(ad_jvp(rosenbrock, NULL, x, v, NULL));
  ad_tensor *hv = jv ? check(ad_hvp(rosenbrock, NULL, x, v)) : NULL;
  ad_tensor *h = hv ? check(ad_hessian(rosenbrock, NULL, x)) : NULL;
  if (!h) return 1;
  printf("Rosenbrock at (-1.2, 1): directional derivative along e1 = %g\n",
         ad_item(jv));
  printf("Hessian-vector product H e1 (forward over reverse) =\n");
  ad_print(hv);
  printf("Hessian =\n");
  ad_print(h);
  ad_scope_end();
  return 0;
}

/* ---- 5. Custom gradients and checking them ----------------------------- */

/* log(1 + exp(x)) as written naively: its gradient exp(x) / (1 + exp(x))
 * is inf / inf = NaN once exp(x) overflows (x > 709.78 in double; the
 * float32 guide sees it at 100). */
static ad_tensor *log1pexp_naive(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_log(ad_add_scalar(ad_exp(x), 1.0));
}

static ad_status log1pexp_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c, (void)user;
  out[0] = ad_log(ad_add_scalar(ad_exp(in[0]), 1.0));
  return out[0] ? AD_OK : ad_error();
}

/* The simplified gradient, sigmoid(x), from the op's input so that it can
 * be differentiated again. */
static ad_status log1pexp_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                              ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_sigmoid(ad_custom_input(c, 0)));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op log1pexp_op = {"log1pexp", 1, 1, log1pexp_forward,
                                         log1pexp_vjp, NULL};

static ad_tensor *log1pexp(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *y = NULL;
  ad_custom_apply(&log1pexp_op, NULL, &x, &y);
  return y;
}

static int custom_gradients(void) {
  heading("Custom gradients, checked");
  ad_scope_begin();
  ad_tensor *big = ad_scalar(1000.0);
  printf("d/dx log(1 + exp(x)) at 1000: naive %g, custom %g\n",
         ad_item(ad_grad(log1pexp_naive, NULL, big)),
         ad_item(ad_grad(log1pexp, NULL, big)));
  ad_error_clear();
  /* The checker compares every nesting of forward and reverse mode with
   * finite differences; forward mode here is derived from the VJP. */
  ad_check_report r;
  ad_tensor *x = ad_linspace(-2.0, 2.0, 5);
  ad_status st = ad_check_grads(log1pexp, NULL, x, 3,
                                AD_CHECK_FWD | AD_CHECK_REV, 0.0, 1e-6, &r);
  printf("checking the custom op to order 3: %s\n  %s\n",
         st == AD_OK ? "passed" : "FAILED", r.message);
  ad_scope_end();
  return st == AD_OK ? 0 : 1;
}

int main(void) {
  printf("libad tour\n");
  if (numerical_computation() || collatz() || derivatives() ||
      forward_and_hessians() || custom_gradients())
    return 1;
  printf("\nNext: examples/linear_regression.c fits a line by gradient "
         "descent.\n");
  return 0;
}
