/* Tracing in a nutshell: trace a C loop once, replay it and its gradient,
 * watch a guard re-trace the Collatz loop, and print a trace. */
#include <stdio.h>

#include <ad.h>
#include <ad/trace.h>

/* Rosenbrock's function written one element at a time, as C code would. */
static ad_tensor *rosenbrock(ad_tensor *x, void *ctx) {
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

/* The number of Collatz steps from x down to 1.  ad_cond turns a traced
 * comparison into a C truth value and records a guard on it. */
static ad_tensor *collatz(ad_tensor *x, void *ctx) {
  (void)ctx;
  ad_tensor *steps = ad_scalar(0.0);
  while (ad_cond(ad_greater(x, ad_scalar(1.0)))) {
    if (ad_cond(ad_equal(ad_mod(x, ad_scalar(2.0)), ad_scalar(0.0))))
      x = ad_mul_scalar(x, 0.5);
    else
      x = ad_add_scalar(ad_mul_scalar(x, 3.0), 1.0);
    steps = ad_add_scalar(steps, 1.0);
  }
  return steps;
}

/* A small function for the listing. */
static ad_tensor *softplus_sum(ad_tensor *x, void *ctx) {
  (void)ctx;
  if (ad_cond(ad_greater(ad_max(x, 0, NULL, false), ad_scalar(20.0))))
    return ad_sum_all(ad_relu(x)); /* softplus(x) ~ x for large x */
  return ad_sum_all(ad_log1p(ad_exp(x)));
}

static int fail(const char *what) {
  fprintf(stderr, "%s: %s\n", what, ad_error_message());
  return 1;
}

int main(void) {
  ad_scope_begin();

  /* 1. Trace once, replay: same values as eager execution, bit for bit. */
  ad_tensor *x = ad_linspace(-1.2, 1.0, 6);
  ad_function *rosen = ad_trace(rosenbrock, NULL, x);
  if (!rosen) return fail("ad_trace");
  ad_tensor *value = NULL;
  ad_tensor *grad = ad_function_value_and_grad(rosen, x, &value);
  if (!grad) return fail("ad_function_value_and_grad");
  printf("f(x) = %.6f (eager %.6f)\ngradient ", ad_item(value),
         ad_item(rosenbrock(x, NULL)));
  ad_print(grad);
  ad_tensor *hv = ad_function_hvp(rosen, x, ad_ones(1, (int64_t[]){6}));
  printf("H 1 = ");
  ad_print(hv);
  ad_function_stats st;
  ad_function_get_stats(ad_function_value_and_grad_fn(rosen), &st);
  printf("the gradient program: %lld ops in %lld instructions\n\n",
         (long long)st.ops, (long long)st.instructions);
  ad_function_free(rosen);

  /* 2. Guards: another start takes another path through the loop, which
   * is traced once and cached beside the first. */
  ad_function *steps = ad_trace(collatz, NULL, ad_scalar(6.0));
  if (!steps) return fail("ad_trace");
  for (int s = 5; s <= 8; s++)
    printf("collatz(%d) = %g steps\n", s,
           ad_item(ad_function_call(steps, ad_scalar(s))));
  ad_function_call(steps, ad_scalar(7.0)); /* cached: a replay */
  ad_function_get_stats(steps, &st);
  printf("%lld calls: %lld traces, %lld replays, %lld guard misses\n\n",
         (long long)st.calls, (long long)st.traces, (long long)st.replays,
         (long long)st.guard_misses);
  ad_function_free(steps);

  /* 3. Seeing a trace: one op per line with shapes, guards included
   * (ad_function_write_dot gives the same as a Graphviz graph). */
  ad_function *sp = ad_trace(softplus_sum, NULL, ad_linspace(-1, 1, 3));
  if (!sp) return fail("ad_trace");
  ad_function_print(sp, stdout);

  /* 4. A traced function is an ad_fn: tapes and the checker see one op
   * whose derivatives are the traced derivative programs. */
  ad_check_report rep;
  ad_status ok = ad_check_grads(ad_function_fn, sp, ad_linspace(-1, 1, 3), 2,
                                AD_CHECK_FWD | AD_CHECK_REV, 1e-6, 1e-5,
                                &rep);
  printf("\nderivative check to order 2: %s\n", ok == AD_OK ? "passed"
                                                              : rep.message);
  ad_function_free(sp);
  ad_scope_end();
  return ok == AD_OK ? 0 : 1;
}
