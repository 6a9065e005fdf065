/* Checking derivatives with ad_check_grads: a user's loss passes in every
 * nesting of forward and reverse mode up to order 3, and two hand-written
 * gradients with typical slips are caught at the order where they go
 * wrong. */
#include <ad.h>
#include <stdio.h>
#include <string.h>

/* ---- 1. A logistic-regression loss ------------------------------------- */

#define NPOINTS 8

typedef struct data {
  ad_tensor *X; /* NPOINTS x 3 features */
  ad_tensor *y; /* NPOINTS labels, +-1 */
} data;

/* mean(log(1 + exp(-y * (X w)))) for the weights w (3 elements). */
static ad_tensor *logistic_loss(ad_tensor *w, void *ctx) {
  const data *d = ctx;
  ad_tensor *scores = ad_matmul(d->X, ad_reshape(w, 2, (int64_t[]){3, 1}));
  ad_tensor *margins =
      ad_mul(ad_reshape(scores, 1, (int64_t[]){NPOINTS}), d->y);
  return ad_mean(ad_softplus(ad_neg(margins)), 0, NULL, false);
}

/* ---- 2. log(1 + exp(x)) as a custom op, with two kinds of slip --------- */

static ad_status softplus_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)user;
  out[0] = ad_softplus(in[0]);
  /* Saved for the "saved" VJP below. */
  if (out[0] && ad_custom_save(c, ad_sigmoid(in[0])) != AD_OK)
    return ad_error();
  return out[0] ? AD_OK : ad_error();
}

/* d/dx log(1 + exp(x)) = sigmoid(x), but typed as 1.0001 * sigmoid(x): the
 * kind of slip a hand-derived rule makes.  Off by 1e-4 relative. */
static ad_status typo_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                          ad_tensor **gin, void *user) {
  (void)user;
  ad_tensor *x = ad_custom_input(c, 0);
  gin[0] = ad_mul(gout[0], ad_mul_scalar(ad_sigmoid(x), 1.0001));
  return gin[0] ? AD_OK : ad_error();
}

/* The right value, taken from a tensor saved in forward.  Such a tensor
 * is a constant to higher orders, so the first derivative is right and
 * the second is zero instead of sigmoid'(x). */
static ad_status saved_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                           ad_tensor **gin, void *user) {
  (void)user;
  gin[0] = ad_mul(gout[0], ad_custom_saved(c, 0));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op softplus_typo = {"softplus_typo",  1,        1,
                                           softplus_forward, typo_vjp, NULL};
static const ad_custom_op softplus_saved = {"softplus_saved", 1,         1,
                                            softplus_forward, saved_vjp, NULL};

/* sum(softplus(x) * x) through the given op. */
static ad_tensor *with_op(ad_tensor *x, void *op) {
  ad_tensor *y = NULL;
  if (ad_custom_apply(op, NULL, &x, &y) != AD_OK) return NULL;
  return ad_sum_all(ad_mul(y, x));
}

/* ---- Running the checker ------------------------------------------------ */

static void show(const char *title, ad_status st, const ad_check_report *r) {
  printf("%s\n", title);
  if (st == AD_ECHECK)
    printf(
        "  caught at order %d in mode %s, element %lld: libad %.10g, "
        "finite differences %.10g\n  (their error bound %.2g, tolerance "
        "%.2g, after %lld comparisons)\n",
        r->order, r->mode, (long long)r->index, r->ad_value, r->fd_value,
        r->fd_error, r->tolerance, (long long)r->comparisons);
  printf("  %s\n\n", r->message);
}

int main(void) {
  ad_scope_begin();
  const double features[NPOINTS * 3] = {
      1.0, 0.5, -1.2, 1.0, -0.3, 0.8, 1.0, 1.7, 0.1,  1.0, -1.1, -0.4,
      1.0, 0.2, 0.9,  1.0, -0.8, 1.5, 1.0, 0.6, -0.7, 1.0, 1.2,  0.3};
  const double labels[NPOINTS] = {1, -1, 1, -1, 1, -1, -1, 1};
  data d = {ad_tensor_new(2, (int64_t[]){NPOINTS, 3}, features),
            ad_tensor_new(1, (int64_t[]){NPOINTS}, labels)};
  ad_tensor *w = ad_tensor_new(1, (int64_t[]){3}, (double[]){0.3, -0.5, 0.8});
  ad_tensor *x =
      ad_tensor_new(1, (int64_t[]){4}, (double[]){-1.5, -0.2, 0.7, 2.1});
  const unsigned both = AD_CHECK_FWD | AD_CHECK_REV;
  const double atol = 0, rtol = 1e-6; /* relative tolerance: any scale */
  ad_check_report r;
  int unexpected = 0;

  /* The gradient, the Hessian and third derivatives, each in every
   * nesting (rev, fwd, rev-rev, ..., fwd-fwd-fwd). */
  ad_status st = ad_check_grads(logistic_loss, &d, w, 3, both, atol, rtol, &r);
  show("1. The logistic-regression loss, to order 3:", st, &r);
  unexpected += st != AD_OK;

  /* The VJP with a typo fails at order 1.  The op has no JVP rule, so
   * forward mode derives it from the VJP and would fail too; reverse mode
   * is checked first. */
  st = ad_check_grads(with_op, (void *)&softplus_typo, x, 2, both, atol, rtol,
                      &r);
  show("2. A custom op whose VJP is off by 1e-4:", st, &r);
  unexpected += st != AD_ECHECK || r.order != 1;
  ad_error_clear();

  /* The VJP from a saved tensor passes order 1 and fails order 2. */
  st = ad_check_grads(with_op, (void *)&softplus_saved, x, 1, both, atol, rtol,
                      &r);
  show("3a. A custom op whose VJP uses a value saved in forward, order 1:", st,
       &r);
  unexpected += st != AD_OK;
  st = ad_check_grads(with_op, (void *)&softplus_saved, x, 2, both, atol, rtol,
                      &r);
  show("3b. The same op to order 2:", st, &r);
  unexpected += st != AD_ECHECK || r.order != 2;
  ad_error_clear();

  ad_scope_end();
  if (unexpected) {
    printf("check_derivatives: %d result(s) were not as expected\n",
           unexpected);
    return 1;
  }
  printf(
      "All as expected: the correct derivatives passed and both slips "
      "were caught.\n");
  return 0;
}
