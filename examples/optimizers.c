/* Rosenbrock's function minimized over two variables with libad's
 * built-in optimizers: SGD with momentum, Adam and L-BFGS. */
#include <ad.h>
#include <ad/optim.h>
#include <math.h>
#include <stdio.h>

/* The parameters are variables: mutable state that the loss reads. */
typedef struct optim_problem {
  ad_var *x, *y;
} optim_problem;

/* f(x, y) = 100 (y - x^2)^2 + (1 - x)^2, minimal at (1, 1). */
static ad_tensor *optim_rosenbrock(void *ctx) {
  optim_problem *p = ctx;
  ad_tensor *x = ad_var_value(p->x), *y = ad_var_value(p->y);
  ad_tensor *valley = ad_sub(y, ad_square(x));
  ad_tensor *slope = ad_add_scalar(ad_neg(x), 1.0);
  return ad_add(ad_mul_scalar(ad_square(valley), 100.0), ad_square(slope));
}

/* Runs opt from (-1.2, 1) until the loss falls below 1e-10 or max_steps
 * steps, printing the step, the point and the loss every `every` steps
 * and at the end to log (NULL: quietly).  The final point goes to xy, the
 * steps taken to *steps.  Returns AD_OK or libad's error. */
static ad_status optim_run(ad_optimizer *opt, long max_steps, long every,
                           FILE *log, double xy[2], long *steps) {
  optim_problem p = {ad_var_new("x", ad_scalar(-1.2)),
                     ad_var_new("y", ad_scalar(1.0))};
  ad_var *vars[2] = {p.x, p.y};
  ad_status st = p.x && p.y ? AD_OK : ad_error();
  double loss = NAN;
  long step = 0;
  if (log) fprintf(log, "%s, lr = %g\n", ad_optimizer_name(opt),
                   ad_optimizer_lr(opt));
  while (st == AD_OK && step < max_steps) {
    ad_scope_begin();
    st = ad_optimizer_minimize(opt, optim_rosenbrock, &p, 2, vars, NULL);
    /* The loss at the new point, for the progress line and the test. */
    if (st == AD_OK) {
      ad_tensor *f = optim_rosenbrock(&p);
      loss = f ? ad_item(f) : NAN;
      if (!f) st = ad_error();
    }
    step++;
    bool done = st == AD_OK && loss < 1e-10;
    if (log && st == AD_OK && (step % every == 0 || done || step == max_steps))
      fprintf(log, "%6ld x = % .6f y = % .6f f = %.6e\n", step,
              ad_item(ad_var_value(p.x)), ad_item(ad_var_value(p.y)), loss);
    ad_scope_end();
    if (done) break;
  }
  xy[0] = p.x ? ad_item(ad_var_value(p.x)) : NAN;
  xy[1] = p.y ? ad_item(ad_var_value(p.y)) : NAN;
  *steps = step;
  ad_var_free(p.x);
  ad_var_free(p.y);
  return st;
}

#ifndef AD_EXAMPLE_NO_MAIN
int main(void) {
  ad_scope_begin();
  struct {
    ad_optimizer *opt;
    long max_steps, every;
  } runs[3] = {{ad_optimizer_lbfgs(1.0, 10), 100, 1},
               {ad_optimizer_adam(0.02, 0.9, 0.999, 1e-8), 20000, 1000},
               {ad_optimizer_sgd(1e-3, 0.9), 20000, 1000}};
  ad_status st = AD_OK;
  for (int i = 0; i < 3 && st == AD_OK; i++) {
    double xy[2] = {NAN, NAN};
    long steps = 0;
    st = runs[i].opt ? optim_run(runs[i].opt, runs[i].max_steps,
                                 runs[i].every, stdout, xy, &steps)
                     : ad_error();
    if (st == AD_OK)
      printf("%s: (%.6f, %.6f) after %ld steps\n\n",
             ad_optimizer_name(runs[i].opt), xy[0], xy[1], steps);
  }
  for (int i = 0; i < 3; i++) ad_optimizer_free(runs[i].opt);
  if (st != AD_OK) fprintf(stderr, "optimizers: %s\n", ad_error_message());
  ad_scope_end();
  return st == AD_OK ? 0 : 1;
}
#endif
