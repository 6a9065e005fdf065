/* A program to stop in gdb: tensors, a view, a big tensor, a variable, a
 * tape and two nested forward levels, then a deliberate shape error (run
 * by tests/gdb_test.sh; its session is the transcript in
 * docs/debugging.md). */
#include <ad.h>
#include <ad/debug.h>
#include <math.h>
#include <stdio.h>

/* volatile keeps every handle in memory, so that gdb can read it at any
 * line of this -O2 build; a program built with -O0 or -Og needs no such
 * thing. */
#define KEEP volatile

int main(void) {
  ad_scope_begin();
  ad_seed(1);

  /* A small matrix, its transpose (a view sharing its storage) and a
   * 100 x 100 random matrix whose printout is elided in the middle. */
  const int64_t shape[2] = {2, 3};
  ad_tensor *KEEP t =
      ad_tensor_new(2, shape, (const double[]){1, 2, 3, 4, 5, 6});
  ad_tensor *KEEP tt = ad_transpose(t);
  ad_tensor *KEEP big =
      ad_rand_normal(2, (const int64_t[]){100, 100}, 0.0, 1.0);
  /* Values a model should never hold. */
  ad_tensor *KEEP odd = ad_tensor_new(
      1, (const int64_t[]){4}, (const double[]){1.5, NAN, INFINITY, -2.25});

  /* A variable read under a persistent tape: the tape records the ops
   * that depend on it. */
  ad_var *KEEP w =
      ad_var_new("weights", ad_full(1, (const int64_t[]){3}, 0.5));
  ad_tape *KEEP tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tensor *KEEP loss = ad_sum_all(ad_square(ad_matmul(t, ad_var_value(w))));

  /* Two nested forward levels: d/dy of x * sin(y) inside d/dx. */
  ad_tensor *x = ad_scalar(2.0), *y = ad_scalar(0.5), *one = ad_scalar(1.0);
  ad_fwd *KEEP outer = ad_fwd_begin(1, &x, &one);
  ad_fwd *KEEP inner = ad_fwd_begin(1, &y, &one);
  ad_tensor *KEEP f = ad_mul(x, ad_sin(y));

  /* gdb_test.sh and the guide stop on the next line. */
  ad_summary(big); /* inspect here */

  ad_tensor *df = ad_fwd_jvp(inner, f); /* x cos y */
  ad_fwd_end(inner);
  ad_fwd_end(outer);
  ad_tape_end(tape);
  ad_tensor *grad = ad_tape_gradient(tape, loss, ad_var_value(w));
  printf("f = %g, df/dy = %g\n", ad_item(f), ad_item(df));
  printf("the transpose:\n");
  ad_print(tt);
  printf("odd values:\n");
  ad_summary(odd);
  printf("d loss / d weights:\n");
  ad_print(grad);

  /* The mistake `break ad__error` catches: (2, 3) x (2, 3). */
  ad_tensor *bad = ad_matmul(t, t);
  if (!bad) printf("error: %s\n", ad_error_message());

  ad_tape_free(tape);
  ad_var_free(w);
  ad_scope_end();
  return bad ? 1 : 0;
}
