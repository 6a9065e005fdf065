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
 * modes at order 2: rev-rev, rev-fwd, fwd-rev, fwd-fwd; 2^k in all).  A
 * nesting is named outermost first: "fwd-rev" is forward mode over a
 * reverse-mode gradient. */
#define AD_CHECK_FWD 1u
#define AD_CHECK_REV 2u

/* What ad_check_grads found.  On success: the comparison that came
 * closest to its tolerance.  On AD_ECHECK: the first (order, nesting)
 * whose comparison failed, at its worst element.  A comparison is against
 * finite differences, or between a nesting and the first one; for the
 * latter, tolerance is that comparison's bound and the message names the
 * other nesting and its value (fd_value and fd_error still describe the
 * finite differences).  On another error: the order and nesting being
 * evaluated when it happened ("" for f itself during finite differences
 * of order 1; 0 and "" for bad arguments) and a message with the error's
 * text. */
typedef struct ad_check_report {
  int order;            /* derivative order of the comparison (1..order) */
  char mode[16];        /* nesting, outermost first, e.g. "rev-fwd" */
  int64_t index;        /* element compared: see "What is compared" below */
  double ad_value;      /* the derivative libad computed */
  double fd_value;      /* the finite-difference estimate */
  double fd_error;      /* the estimate's own error bound */
  double tolerance;     /* the bound the difference had to meet */
  int64_t comparisons;  /* number of values compared in all */
  char message[256];    /* a sentence describing the result */
} ad_check_report;

/* Check the derivatives of f at x up to `order` (1..4) in the modes given
 * (AD_CHECK_FWD | AD_CHECK_REV): order k is compared with central finite
 * differences of libad's own order k-1 (of f itself for k = 1), so each
 * order is checked against one already checked, and every nesting is
 * also compared with the first one (rev-rev-..., or fwd-fwd-... when only
 * AD_CHECK_FWD is given).
 *
 * The function.  f may return any shape; the checker differentiates
 * h(x) = sum_i w_i f_i(x) with fixed weights w_i = +-[0.5, 1) drawn once
 * (h = f when f returns one element), so a wrong derivative of any output
 * shows.  f must be deterministic, return the same shape near x, and be
 * smooth within about 0.1% of each |x_i| of x (the largest step; zero
 * coordinates step by that fraction of the mean |x|).  In messages "f"
 * stands for h.
 *
 * What is compared (index in the report):
 *   x with at most 16 elements, along the coordinate directions e_i (i the
 *   flat index):
 *     order 1: the gradient, D f[e_a] (index a);
 *     order k >= 2: the n x n matrix D^k f[e_a, e_b, u_1, ..., u_{k-2}]
 *       (index a * n + b): the full Hessian at order 2, beyond it the
 *       Hessian of D^(k-2) f along fixed random directions u_j.  Its row
 *       a is the finite difference along e_a of the gradient of
 *       D^(k-2) f[u..], which libad computes.
 *   larger x, along 4 fixed random directions w_a (index a):
 *     order k: D^k f[w_a, u_1, ..., u_{k-1}] against the finite
 *       difference along w_a of D^(k-1) f[u_1, ..., u_{k-1}].
 *   Random directions have components +-[0.5, 1) times the size of each
 *   x_i, so none is left out; one wrong element among many is diluted in
 *   them by roughly the square root of the element count.
 *
 * Finite differences (Richardson extrapolation, vectorised): central
 * differences at steps h, h/2, h/4 (h = 1e-3 times each coordinate's size)
 * give two five-point estimates R(h) and R(h/2); the result is R(h/2) and
 *   fd_error = 10 * (|R(h/2) - R(h)| + noise + rounding),
 * where |R(h/2) - R(h)| bounds the truncation error (it is about 16 times
 * R(h/2)'s) and carries the values' noise, noise is an independent
 * estimate of it from the even part of the same evaluations (libad's
 * values carry the rounding of every op that made them, often more than
 * one ulp of the result), and rounding covers one ulp of the values and of
 * x + step.  Where truncation dominates (f varies on a scale much finer
 * than x) steps 8 and 64 times smaller are tried too, each value keeping
 * its smallest estimate.  The factor 10 makes the bound safe: an estimate
 * of an error can itself be low by chance.
 *
 * Tolerances:
 *   against finite differences   |ad - fd| <= atol + rtol |fd| + fd_error
 *   between nestings             |ad - ad_first| <= atol + rtol |ad_first|
 *                                  + 1e-9 (|ad| + |ad_first|)
 *                                  + 0.01 fd_error
 * (nestings run the same rules in another order, so they agree up to
 * rounding).  With atol = rtol = 0 the bounds alone decide; they are
 * tight enough to catch a derivative off by 1e-7 relative on smooth
 * functions of any scale.  A positive atol makes sense only in the units
 * of the derivatives (of every order at once); prefer rtol (1e-6, say).
 *
 * Cost, with n = numel(x) <= 16: order 1 evaluates f 6n + 1 times (up to
 * 18n + 1 with refined steps) plus one gradient per reverse-mode nesting
 * and n JVPs per forward one; order k >= 2 about 6n evaluations of order
 * k-1 (times n without AD_CHECK_REV) plus n passes per nesting (n^2 for
 * fwd-fwd-...).  Larger x: about 24 + 4 per nesting, whatever n.
 *
 * The weights and directions come from a private generator with fixed
 * seeds: the same call gives the same report, and the ad_seed stream is
 * left alone.  No process-wide state changes, so threads may check
 * concurrently.  The recorded error is left alone on success.
 *
 * Returns AD_OK; AD_ECHECK when a comparison fails (the report describes
 * it and the error channel carries the same message); the status of f or
 * of libad when an evaluation fails (their message stays in the error
 * channel; NULL from f without an error is AD_EINVAL, a changed output
 * shape AD_ESHAPE, a tape or level left open AD_ESTATE); AD_EINVAL for bad
 * arguments: NULL f or x, x empty or not finite, f(x) not finite, order
 * outside 1..4, modes 0 or with unknown bits, atol or rtol negative or
 * NaN; AD_ESTATE while ad_pause_recording(true) is in effect.  report may
 * be NULL. */
ad_status ad_check_grads(ad_fn f, void *ctx, ad_tensor *x, int order,
                         unsigned modes, double atol, double rtol,
                         ad_check_report *report);

#ifdef __cplusplus
}
#endif
#endif /* AD_CHECK_H */
