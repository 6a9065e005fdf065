/* Helpers the GSL adapters share: tensors from GSL vectors and back,
 * checked calls of the user's function, and messages naming the point. */
#ifndef AD_OPTIM_GSL_INTERNAL_H
#define AD_OPTIM_GSL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <gsl/gsl_errno.h>

#include "ad/gsl.h"
#include "internal.h"

/* A tensor of shape (x->size,) holding a copy of x (any stride), owned by
 * the current scope; NULL on out of memory. */
ad_tensor *ad__gsl_tensor(const gsl_vector *x);

/* Copy the elements of t, row-major, into v (any stride), or into m (row
 * by row, any tda).  The caller has checked the element counts. */
void ad__gsl_write_vector(const ad_tensor *t, gsl_vector *v);
void ad__gsl_write_matrix(const ad_tensor *t, gsl_matrix *m);

/* ad__gsl_write_vector and ad__gsl_result_ok in one pass: copy t into v,
 * and when t holds NaN record the error naming op, what and x, fill v
 * with NaN and return false. */
bool ad__gsl_write_checked(const char *op, const char *what,
                           const ad_tensor *t, const gsl_vector *x,
                           gsl_vector *v);

/* Fill v or m with NaN: how multimin's callbacks report a failure. */
void ad__gsl_fill_nan_vector(gsl_vector *v);

/* "(1.5, -2)" for short vectors, "(1.5, -2, 3, ... 100 elements)" for
 * long ones, into buf; returns buf. */
#define AD__GSL_POINT_STR 160
const char *ad__gsl_point(char *buf, const gsl_vector *x);

/* Record AD_ESHAPE unless GSL's vector has the size the adapter was made
 * for: "OP: GSL passed WHAT of SIZE elements, the adapter was made for
 * WANT".  Returns whether the size is right. */
bool ad__gsl_size_ok(const char *op, const char *what, size_t got,
                     size_t want);

/* Record AD_EINVAL unless x is free of NaN ("the solver diverged").
 * Returns whether it is. */
bool ad__gsl_point_ok(const char *op, const gsl_vector *x);

/* Record AD_EINVAL when t holds NaN: "OP: WHAT holds NaN at element I at
 * x = POINT".  Returns whether t is free of NaN. */
bool ad__gsl_result_ok(const char *op, const char *what, const ad_tensor *t,
                       const gsl_vector *x);

/* A checked call of the user's function, usable as an ad_fn (pass the
 * struct as ctx): it calls f(x, ctx), records an error naming op when f
 * returns NULL without recording one, or a tensor of another element
 * count than want ("not a scalar" when want is 1).  When keep_value is
 * set, the first output is retained into value (the caller releases it):
 * that is how a Jacobian's pass hands back f(x) as well. */
typedef struct ad__gsl_call {
  ad_fn f;
  void *ctx;
  int64_t want;
  const char *op;
  bool keep_value;
  ad_tensor *value;
} ad__gsl_call;

ad_tensor *ad__gsl_checked(ad_tensor *x, void *call);

/* The Jacobian of call's function at x, shaped like f(x) + x.shape, by
 * forward mode (reverse false) or reverse mode; NULL on error.  Owned by
 * the current scope. */
ad_tensor *ad__gsl_jacobian(ad__gsl_call *call, ad_tensor *x, bool reverse);

/* A vector-valued function for multifit and multiroot: f maps x of shape
 * (nin,) to nout values, its Jacobian by forward or reverse mode. */
typedef struct ad__gsl_system {
  ad_fn f;
  void *ctx;
  size_t nout, nin;
  bool reverse;
  /* On failure, fill the Jacobian with NaN (multiroot) or leave GSL's
   * matrix as it was (multifit); see ad__gsl_eval_system. */
  bool nan_jacobian;
} ad__gsl_system;

/* Evaluate s at x into fx (when non-NULL) and its Jacobian into J (when
 * non-NULL), both from the same passes when both are asked for.  Returns
 * GSL_SUCCESS, GSL_EBADLEN when a size differs from s's, or GSL_EBADFUNC
 * on any other failure, with the error recorded and naming op.  On
 * failure fx is filled with NaN, and J too when s->nan_jacobian. */
int ad__gsl_eval_system(const char *op, const ad__gsl_system *s,
                        const gsl_vector *x, gsl_vector *fx, gsl_matrix *J);

/* Whether the adapter's size fits an int64_t tensor dimension. */
bool ad__gsl_dim_ok(const char *op, const char *what, size_t n);

#endif /* AD_OPTIM_GSL_INTERNAL_H */
