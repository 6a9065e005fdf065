/* Custom operations with user-defined derivative rules, and gradient
 * checkpointing built on them. */
#ifndef AD_CUSTOM_H
#define AD_CUSTOM_H

#include "ad/autodiff.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Custom ops
 *
 * A custom op is a forward function plus a VJP rule, a JVP rule, or both.
 * The forward function runs with every tape and forward level paused: its
 * inner ops are not recorded.  Instead the op is recorded as one node
 * whose derivatives come from the rules.  The rules run as ordinary libad
 * code, seen by every tape and level that differentiates the pass, so a
 * custom op is differentiable to any order when its rules are written
 * with libad ops from values that are themselves differentiable: the op's
 * inputs and outputs (ad_custom_input, ad_custom_output) or tensors saved
 * from them.  A tensor computed inside forward and saved is a constant to
 * higher orders.
 *
 * One rule serves both modes: without a JVP the forward-mode derivative
 * is derived from the VJP (which is linear in the cotangent), and without
 * a VJP the reverse-mode derivative is derived from the JVP by
 * transposition; each derived rule is again differentiable.  With neither
 * rule, differentiating the op is an AD_EUNIMPL error.
 *
 * Callbacks return AD_OK, or a status (ideally after setting a message
 * with the error channel's usual functions); a failing callback makes the
 * whole call fail with its status and message, and nothing leaks.  A
 * callback that returns AD_OK while a libad call inside it failed (and
 * left its error recorded) fails the call too: a NULL from a failed op is
 * never taken for a zero.  A callback that handles a failure itself
 * should ad_error_clear() it.
 * ---------------------------------------------------------------------- */

typedef struct ad_custom_ctx ad_custom_ctx;

typedef struct ad_custom_op {
  const char *name; /* used in error messages; must outlive the op's use */
  int nin, nout;    /* nin >= 0 inputs, 1 <= nout <= 16 outputs */
  /* Set out[0..nout) to the outputs (tensors owned by the current scope,
   * as returned by libad calls).  May call ad_custom_save. */
  ad_status (*forward)(ad_custom_ctx *c, ad_tensor *const *in,
                       ad_tensor **out, void *user);
  /* Given the cotangents gout[0..nout) (never NULL: zeros stand in for
   * outputs the target does not depend on), set gin[0..nin) to the
   * inputs' cotangents, shaped like the inputs (NULL means zero). */
  ad_status (*vjp)(ad_custom_ctx *c, ad_tensor *const *gout,
                   ad_tensor **gin, void *user); /* may be NULL */
  /* Given the tangents tin[0..nin) (never NULL: zeros for inputs without
   * one), set tout[0..nout) to the outputs' tangents (NULL means zero). */
  ad_status (*jvp)(ad_custom_ctx *c, ad_tensor *const *tin,
                   ad_tensor **tout, void *user); /* may be NULL */
} ad_custom_op;

/* Apply op to in[0..op->nin), storing its outputs (owned by the current
 * scope) in out[0..op->nout).  user is passed to every callback and must
 * stay valid while a tape that recorded the op may differentiate it.
 * On error every out[j] is NULL. */
ad_status ad_custom_apply(const ad_custom_op *op, void *user,
                          ad_tensor *const *in, ad_tensor **out);

/* Keep t (retained) for the rules; call from forward.  Returns AD_OK, or
 * AD_ESTATE outside forward, AD_EINVAL for NULL. */
ad_status ad_custom_save(ad_custom_ctx *c, ad_tensor *t);

/* The i-th saved tensor (borrowed, valid during the callback), or NULL
 * with AD_EINVAL when out of range. */
ad_tensor *ad_custom_saved(ad_custom_ctx *c, int i);

/* The op's i-th input and j-th output (borrowed, valid during a rule
 * callback; outputs are not available in forward). */
ad_tensor *ad_custom_input(ad_custom_ctx *c, int i);
ad_tensor *ad_custom_output(ad_custom_ctx *c, int j);

/* ------------------------------------------------------------------------
 * Gradient checkpointing
 * ---------------------------------------------------------------------- */

/* f(x), recorded as one node whose intermediates are not kept: the
 * backward pass (and forward mode) recompute f from x instead.  Trades one
 * extra evaluation of f for the memory of its intermediates; derivatives
 * of every order and mode remain exact.  f must be deterministic (same
 * result for the same x).  Returns f(x) owned by the current scope. */
ad_tensor *ad_checkpoint(ad_fn f, void *ctx, ad_tensor *x);

#ifdef __cplusplus
}
#endif
#endif /* AD_CUSTOM_H */
