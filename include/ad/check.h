/* The derivative checker: every mode and nesting of libad's derivatives
 * against finite differences, to any order. */
#ifndef AD_CHECK_H
#define AD_CHECK_H

#include "ad/autodiff.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Modes for ad_check_grads: forward (JVP) and reverse (VJP) derivatives.
 * At order k every nesting of the selected modes is checked (for both
 * modes at order 2: rev-rev, fwd-rev, rev-fwd, fwd-fwd). */
#define AD_CHECK_FWD 1u
#define AD_CHECK_REV 2u

/* What ad_check_grads found.  On success the worst (largest relative to
 * its tolerance) comparison is reported; on failure the first failing
 * one. */
typedef struct ad_check_report {
  int order;            /* derivative order of the comparison (1..order) */
  char mode[16];        /* nesting, outermost first, e.g. "rev-fwd" */
  int64_t index;        /* flat index of the element compared */
  double ad_value;      /* the derivative libad computed */
  double fd_value;      /* the finite-difference estimate */
  double fd_error;      /* the estimate's own error bound */
  double tolerance;     /* the bound the difference had to meet */
  int64_t comparisons;  /* number of values compared in all */
  char message[256];    /* a sentence describing the result */
} ad_check_report;

/* Check the derivatives of f at x up to `order` (1..4) in the modes given
 * (AD_CHECK_FWD | AD_CHECK_REV) against central finite differences with
 * GSL's error estimate: a difference passes when
 *   |ad - fd| <= atol + rtol * |fd| + (error estimate of fd).
 * Small inputs (up to 16 elements) are checked on the full Jacobian of
 * each order along coordinate directions; larger ones along fixed random
 * directions.  f may return any shape; non-scalar outputs are contracted
 * with a fixed random weight.  Returns AD_OK, AD_ECHECK with report (may
 * be NULL) describing the failure, or another status when f fails or an
 * argument is bad (order outside 1..4, modes 0, negative tolerances). */
ad_status ad_check_grads(ad_fn f, void *ctx, ad_tensor *x, int order,
                         unsigned modes, double atol, double rtol,
                         ad_check_report *report);

#ifdef __cplusplus
}
#endif
#endif /* AD_CHECK_H */
