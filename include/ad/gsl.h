/* Adapters that hand GSL's minimizers, least-squares and root solvers
 * derivatives computed by libad, so that no derivative is written by hand.
 *
 * Overview
 * --------
 * Each adapter fills one of GSL's function structs from an ad_fn, the
 * libad function type (include/ad/autodiff.h).  GSL then calls the
 * struct's callbacks, which evaluate the ad_fn on a tensor of shape (n,)
 * holding GSL's vector and return values and derivatives:
 *
 *   ad_gsl_multimin_fdf           gsl_multimin_function_fdf: f, gradient
 *                                 and both in one pass (reverse mode)
 *   ad_gsl_multifit_nlinear_fdf   gsl_multifit_nlinear_fdf: residuals,
 *                                 their Jacobian (forward or reverse mode)
 *                                 and the second directional derivative
 *                                 fvv for geodesic acceleration
 *   ad_gsl_multiroot_fdf          gsl_multiroot_function_fdf: a system,
 *                                 its Jacobian, and both in one pass
 *
 * Example: Rosenbrock's function minimized with vector_bfgs2.
 *
 *   static ad_tensor *rosen(ad_tensor *x, void *ctx) {
 *     (void)ctx;
 *     ad_tensor *a = ad_slice(x, 0, 0, 1, 1), *b = ad_slice(x, 0, 1, 2, 1);
 *     return ad_sum_all(ad_add(
 *         ad_mul_scalar(ad_square(ad_sub(b, ad_square(a))), 100.0),
 *         ad_square(ad_add_scalar(ad_neg(a), 1.0))));
 *   }
 *
 *   gsl_multimin_function_fdf fdf;
 *   if (ad_gsl_multimin_fdf(&fdf, rosen, NULL, 2) != AD_OK) ...;
 *   gsl_multimin_fdfminimizer *s = gsl_multimin_fdfminimizer_alloc(
 *       gsl_multimin_fdfminimizer_vector_bfgs2, 2);
 *   gsl_multimin_fdfminimizer_set(s, &fdf, x0, 0.01, 1e-4);
 *   ... iterate as usual ...
 *   gsl_multimin_fdfminimizer_free(s);
 *   ad_gsl_multimin_fdf_free(&fdf);
 *
 * Errors
 * ------
 * GSL's callbacks have no room for libad's message, so an adapter's
 * callback that fails (the function returned NULL or the wrong number of
 * values, a libad op inside it failed, GSL passed a vector of the wrong
 * size, or NaN appeared in x, in the value or in a derivative) does three
 * things.  It records the error in the error channel of the calling
 * thread (ad_error(), ad_error_message()) like any libad call: an error
 * of the user's function keeps its own message, which names the op at
 * fault; the adapter's own messages name the adapter and the point, e.g.
 * "ad_gsl_multimin_fdf: the function's value is NaN at x = (-1, 2)".  It
 * reports the failure to GSL the only way GSL allows: multimin's f
 * returns NaN, its df and fdf fill the gradient (and f) with NaN; the
 * callbacks of multifit and multiroot return GSL_EBADFUNC (GSL_EBADLEN
 * for a wrong size) and fill their values with NaN (multiroot's Jacobian
 * too; multifit leaves its Jacobian as it was, which keeps GSL's dogleg
 * methods from factorizing NaN).  And it leaves the error recorded until
 * the caller clears it: successful libad calls never clear it, and the NaN
 * that GSL passes back after a failure does not replace its message.
 * GSL calls the callbacks on the thread that called its set, init or
 * iterate function, so that thread's channel holds the message.
 *
 * GSL does not stop by itself: a minimizer fed NaN goes on iterating, and
 * gsl_multifit_nlinear_driver ignores the status of a failed iteration
 * (gsl_multifit_nlinear_iterate returns it).  So clear the error before
 * iterating and check it after each iteration, which costs a thread-local
 * read:
 *
 *   ad_error_clear();
 *   status = gsl_multimin_fdfminimizer_iterate(s);
 *   if (ad_error() != AD_OK)
 *     fprintf(stderr, "libad: %s\n", ad_error_message());
 *
 * Infinities are passed to GSL unchanged (a line search rejects a step
 * where f is +Inf); only NaN counts as an error.
 *
 * GSL's error handler: GSL's own code calls gsl_error() on some failures
 * (gsl_multimin_fdfminimizer_set with a struct whose n differs from the
 * minimizer's size, a singular matrix inside a solver), and GSL's default
 * handler then aborts the process.  The adapters' callbacks never call
 * gsl_error() and never change the handler, which is process-wide state
 * that belongs to the program; the NaN they return on failure keeps the
 * solvers' own code away from the handler too (tests/test_gsl.c checks it
 * with a counting handler for every multimin and multiroot type and for
 * multifit's five trust-region subproblems, failing at each evaluation).
 * A program that wants errors as return values, as libad reports them,
 * still calls gsl_set_error_handler_off() once at start-up (or installs
 * its own handler with gsl_set_error_handler) before it uses GSL's
 * solvers, for GSL's own checks; the examples do so.
 *
 * Ownership and threads: an adapter allocates a small private state that
 * its _free function releases; until then the struct must stay alive
 * (GSL's solvers keep a pointer to it).  ctx is borrowed and must outlive
 * the struct.  The state is read-only after creation, so one struct may
 * serve solvers on several threads at once when f and ctx allow it.
 * Every tensor a callback makes lives in a scope the callback opens and
 * closes, so nothing accumulates in the caller's scope.
 */
#ifndef AD_GSL_H
#define AD_GSL_H

#include <stddef.h>

#include <gsl/gsl_matrix.h>
#include <gsl/gsl_multifit_nlinear.h>
#include <gsl/gsl_multimin.h>
#include <gsl/gsl_multiroots.h>
#include <gsl/gsl_vector.h>

#include "ad/autodiff.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * gsl_multimin: minimization with derivatives
 * ---------------------------------------------------------------------- */

/* Fill *out so that GSL's f, df and fdf come from f, which maps a tensor
 * of shape (n,) to one value (a tensor of one element, any rank); ctx is
 * passed to f.  out->f evaluates f alone (no tape), out->df and out->fdf
 * run f once under a tape and take the gradient by reverse mode, so fdf
 * costs one forward and one backward pass.  Works with every
 * gsl_multimin_fdfminimizer type (conjugate_fr, conjugate_pr,
 * vector_bfgs, vector_bfgs2, steepest_descent).
 *
 * Failures during the minimization follow "Errors" above: f's callback
 * returns NaN, df's fills the gradient with NaN, fdf's does both, and the
 * message is in the calling thread's error channel.
 *
 * Returns AD_OK; AD_EINVAL for a NULL out or f, or n of 0 or above
 * INT64_MAX; AD_ENOMEM.  On error *out is zeroed (callbacks NULL), so
 * ad_gsl_multimin_fdf_free on it is harmless.  Release the state with
 * ad_gsl_multimin_fdf_free after the last minimizer using it is freed. */
ad_status ad_gsl_multimin_fdf(gsl_multimin_function_fdf *out, ad_fn f,
                              void *ctx, size_t n);

/* Flag for ad_gsl_multimin_fdf_flags: trace f on the first call
 * (include/ad/trace.h) and replay it afterwards; fdf then replays the
 * traced value-and-gradient program in one pass without a tape.  A guard
 * that fails (f branching differently at a new x) re-traces by itself.
 * f must be replayable: see ad_trace for what a trace captures. */
#define AD_GSL_TRACE 1u

/* ad_gsl_multimin_fdf with flags (0 or AD_GSL_TRACE); AD_EINVAL for
 * unknown flags. */
ad_status ad_gsl_multimin_fdf_flags(gsl_multimin_function_fdf *out, ad_fn f,
                                    void *ctx, size_t n, unsigned flags);

/* Release the state of a struct filled by ad_gsl_multimin_fdf and zero
 * the struct.  NULL-safe; a struct this adapter did not fill (or already
 * freed) is left alone. */
void ad_gsl_multimin_fdf_free(gsl_multimin_function_fdf *fdf);

/* ------------------------------------------------------------------------
 * gsl_multifit_nlinear: nonlinear least squares
 * ---------------------------------------------------------------------- */

/* Jacobian modes for the multifit and multiroot adapters.  A Jacobian of
 * n residuals in p parameters takes p forward-mode passes (one JVP per
 * parameter, ad_jacfwd) or one recorded pass and n backward passes (one
 * VJP per residual, ad_jacobian).  AD_GSL_JAC_AUTO takes the mode with
 * fewer passes: forward when p <= n (few parameters, the usual curve
 * fit), reverse when n < p (few residuals). */
#define AD_GSL_JAC_AUTO 0u
#define AD_GSL_JAC_FORWARD 1u
#define AD_GSL_JAC_REVERSE 2u

/* Fill *out for gsl_multifit_nlinear: f maps the parameters, a tensor of
 * shape (p,), to the n residuals (a tensor of n elements of any shape,
 * read row-major; shape (n,) is usual); ctx is passed to f.
 *
 *   out->f    the residuals (f alone, no derivatives)
 *   out->df   the n x p Jacobian, by the mode flags chooses
 *   out->fvv  the second directional derivative sum_ab d2f/dx_a dx_b v_a
 *             v_b, a JVP of a JVP (forward over forward), which GSL uses
 *             for geodesic acceleration (gsl_multifit_nlinear_trs_lmaccel)
 *             and calls only then.  Set out->fvv = NULL afterwards to let
 *             GSL use its finite differences instead.
 *
 * flags: one of AD_GSL_JAC_AUTO (0), AD_GSL_JAC_FORWARD,
 * AD_GSL_JAC_REVERSE.  The callbacks return GSL_SUCCESS, GSL_EBADLEN when
 * GSL passes vectors of other sizes than n and p, and GSL_EBADFUNC on any
 * other failure (see "Errors" above; the message is in the calling
 * thread's error channel).  GSL's nevalf, nevaldf and nevalfvv counters
 * are zeroed here and counted by GSL.
 *
 * Returns AD_OK; AD_EINVAL for a NULL out or f, n or p of 0 or above
 * INT64_MAX, or unknown flags; AD_ENOMEM.  On error *out is zeroed.
 * Release with ad_gsl_multifit_nlinear_fdf_free after the workspace using
 * it is freed. */
ad_status ad_gsl_multifit_nlinear_fdf(gsl_multifit_nlinear_fdf *out,
                                      ad_fn f, void *ctx, size_t n,
                                      size_t p, unsigned flags);

/* Release the state of a struct filled by ad_gsl_multifit_nlinear_fdf and
 * zero the struct.  NULL-safe; a struct this adapter did not fill is left
 * alone. */
void ad_gsl_multifit_nlinear_fdf_free(gsl_multifit_nlinear_fdf *fdf);

/* ------------------------------------------------------------------------
 * gsl_multiroots: systems of nonlinear equations with derivatives
 * ---------------------------------------------------------------------- */

/* Fill *out for gsl_multiroot_fdfsolver (hybridsj, hybridj, newton,
 * gnewton): f maps a tensor of shape (n,) to n values (any shape, read
 * row-major); ctx is passed to f.  out->f evaluates f alone, out->df the
 * n x n Jacobian, out->fdf both in the same passes (the value comes from
 * the first forward-mode pass, or from the recorded pass in reverse
 * mode).  flags: AD_GSL_JAC_AUTO (0, forward mode, since the Jacobian is
 * square), AD_GSL_JAC_FORWARD or AD_GSL_JAC_REVERSE.
 *
 * The callbacks return GSL_SUCCESS, GSL_EBADLEN for vectors of another
 * size than n, and GSL_EBADFUNC on any other failure, with the message in
 * the calling thread's error channel (see "Errors" above).
 *
 * Returns AD_OK; AD_EINVAL for a NULL out or f, n of 0 or above
 * INT64_MAX, or unknown flags; AD_ENOMEM.  On error *out is zeroed.
 * Release with ad_gsl_multiroot_fdf_free after the solver using it is
 * freed. */
ad_status ad_gsl_multiroot_fdf(gsl_multiroot_function_fdf *out, ad_fn f,
                               void *ctx, size_t n, unsigned flags);

/* Release the state of a struct filled by ad_gsl_multiroot_fdf and zero
 * the struct.  NULL-safe; a struct this adapter did not fill is left
 * alone. */
void ad_gsl_multiroot_fdf_free(gsl_multiroot_function_fdf *fdf);

#ifdef __cplusplus
}
#endif
#endif /* AD_GSL_H */
