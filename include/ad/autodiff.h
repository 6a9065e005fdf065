/* Differentiation: gradient tapes, forward accumulators, variables and the
 * functional API built on them. */
#ifndef AD_AUTODIFF_H
#define AD_AUTODIFF_H

#include "ad/ops.h"
#include "ad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Gradient tapes (reverse mode)
 *
 * A tape records, while it is recording, every op whose inputs it watches
 * or that depends on a watched tensor; ad_tape_gradient then runs the
 * recorded ops backwards.  Tapes nest: a gradient computed while an outer
 * tape records is itself recorded by the outer tape, so the outer tape can
 * differentiate it again (higher orders).  The backward pass of a tape is
 * not recorded by that tape itself.
 *
 * Tapes and forward accumulators open on a thread form one stack and must
 * be ended innermost first (AD_ESTATE otherwise).  A tape belongs to the
 * thread that began it; using it from another thread is AD_ESTATE.
 * ---------------------------------------------------------------------- */

typedef struct ad_tape ad_tape;
typedef struct ad_var ad_var;

/* Keep the tape's record after a gradient so it can be asked again. */
#define AD_TAPE_PERSISTENT 1u
/* Do not watch variables automatically when they are read. */
#define AD_TAPE_NO_AUTO_WATCH 2u

/* Flag for ad_tape_gradients: a source the target does not depend on gets
 * a zero tensor instead of NULL. */
#define AD_UNCONNECTED_ZERO 1u

/* Begin recording on this thread.  flags: AD_TAPE_PERSISTENT,
 * AD_TAPE_NO_AUTO_WATCH.  NULL on out of memory.  Free with ad_tape_free. */
ad_tape *ad_tape_begin(unsigned flags);

/* Record ops that depend on t from now on.  Watching twice is harmless. */
ad_status ad_tape_watch(ad_tape *tape, ad_tensor *t);

/* Stop recording.  The tape must be the innermost open tape or level. */
ad_status ad_tape_end(ad_tape *tape);

/* d target / d source for a scalar (one-element) target, shaped like
 * source; zeros when target does not depend on source.  A non-persistent
 * tape answers one gradient call; a second is AD_ESTATE.  Calling it while
 * the tape still records is allowed (the pass is not recorded by it). */
ad_tensor *ad_tape_gradient(ad_tape *tape, ad_tensor *target,
                            ad_tensor *source);

/* Gradients of target with respect to n sources, seeded with target_grad
 * (shaped like target; NULL is allowed only for a one-element target,
 * meaning 1).  grads[i] receives a tensor shaped like sources[i], or NULL
 * for an unconnected source unless flags has AD_UNCONNECTED_ZERO.  On
 * error every grads[i] is NULL. */
ad_status ad_tape_gradients(ad_tape *tape, ad_tensor *target,
                            ad_tensor *target_grad, int n,
                            ad_tensor *const *sources, ad_tensor **grads,
                            unsigned flags);

/* The full Jacobian, shaped target.shape + source.shape, by one backward
 * pass per target element.  Counts as one gradient call. */
ad_tensor *ad_tape_jacobian(ad_tape *tape, ad_tensor *target,
                            ad_tensor *source);

/* Free the tape and its record (ending it first if it still records).
 * NULL-safe. */
void ad_tape_free(ad_tape *tape);

/* Nodes recorded so far (0 after a non-persistent tape released its
 * record); -1 with AD_EINVAL for NULL. */
int64_t ad_tape_size(const ad_tape *tape);

/* A tensor equal to t that every tape and forward level treats as a
 * constant. */
ad_tensor *ad_stop_gradient(ad_tensor *t);

/* Pause (true) or resume (false) every tape and forward level on this
 * thread; returns the previous setting.  While paused, ops run eagerly and
 * no tape or level sees them.  Restore the returned value afterwards. */
bool ad_pause_recording(bool paused);

/* Anomaly detection for this thread (off by default), like PyTorch's
 * anomaly mode: while on, the first op whose output holds NaN or Inf
 * although its inputs are finite fails with AD_ECHECK and a message naming
 * the op, the inputs' shapes and the first bad element; in the backward
 * pass the same holds for each rule's gradients (the message says which
 * op's backward pass).  Costs a scan of every result.  Returns the
 * previous setting. */
bool ad_set_anomaly_detection(bool on);
bool ad_anomaly_detection(void);

/* Write the tape's record as a Graphviz DOT graph: one box per recorded
 * op (name and output shape), an ellipse per watched tensor or variable
 * (with its shape, and the variable's name), a small grey node per
 * constant input, and edges from producers to consumers.  Render with
 * `dot -Tpng`.  AD_EINVAL for NULL arguments, AD_EIO when writing fails,
 * AD_ESTATE for a tape whose record was released. */
ad_status ad_tape_write_dot(const ad_tape *tape, FILE *f);

/* ------------------------------------------------------------------------
 * Variables: mutable named state.  Reading a variable's value while tapes
 * record makes every such tape watch it (unless AD_TAPE_NO_AUTO_WATCH).
 * ---------------------------------------------------------------------- */

/* A variable holding init (retained).  name is copied (may be NULL).  Free
 * with ad_var_free. */
ad_var *ad_var_new(const char *name, ad_tensor *init);

/* The current value (a tensor owned by the current scope).  Recording
 * tapes without AD_TAPE_NO_AUTO_WATCH watch it and remember the variable. */
ad_tensor *ad_var_value(ad_var *v);

/* Replace the value by t, which must have the same shape (AD_ESHAPE). */
ad_status ad_var_assign(ad_var *v, ad_tensor *t);

/* The variable's name ("" when created without one). */
const char *ad_var_name(const ad_var *v);

/* Release the caller's handle.  Tapes that saw the variable keep it alive
 * until they are freed.  NULL-safe. */
void ad_var_free(ad_var *v);

/* The variables a tape saw being read, in order of first read: how many,
 * and the i-th (borrowed, valid while the tape lives). */
int64_t ad_tape_num_variables(const ad_tape *tape);
ad_var *ad_tape_variable(const ad_tape *tape, int64_t i);

/* Gradients of a scalar target with respect to n variables (summed over
 * every read of each variable the tape saw); zeros for a variable the
 * target does not depend on.  Like TensorFlow's implicit gradients. */
ad_status ad_tape_var_gradients(ad_tape *tape, ad_tensor *target, int n,
                                ad_var *const *vars, ad_tensor **grads);

/* ------------------------------------------------------------------------
 * Forward accumulators (forward mode)
 *
 * ad_fwd_begin opens a new forward level on this thread and attaches
 * tangents to primals; every op computed afterwards carries its tangent at
 * that level.  Levels nest strictly with tapes, and a tangent of one level
 * is a constant to every other level (no perturbation confusion).
 * ---------------------------------------------------------------------- */

typedef struct ad_fwd ad_fwd;

/* Open a level with tangents[i] (shaped like primals[i]) attached to
 * primals[i].  NULL on bad input. */
ad_fwd *ad_fwd_begin(int n, ad_tensor *const *primals,
                     ad_tensor *const *tangents);

/* The tangent of t at this level: zeros shaped like t when t does not
 * depend on the primals.  Call before ad_fwd_end. */
ad_tensor *ad_fwd_jvp(ad_fwd *acc, ad_tensor *t);

/* The tangents of n tensors at once, with the unconnected choice tapes
 * offer: out[i] is NULL for a tensor that does not depend on the primals
 * unless flags has AD_UNCONNECTED_ZERO.  On error every out[i] is NULL. */
ad_status ad_fwd_jvps(ad_fwd *acc, int n, ad_tensor *const *ts,
                      ad_tensor **out, unsigned flags);

/* True when t carries a (possibly zero-valued) tangent at this level. */
bool ad_fwd_has_tangent(const ad_fwd *acc, const ad_tensor *t);

/* Close the level (innermost first) and free the accumulator.  NULL-safe;
 * AD_ESTATE when another tape or level opened after it is still open. */
ad_status ad_fwd_end(ad_fwd *acc);

/* ------------------------------------------------------------------------
 * Functional API, autograd style.  f maps one tensor to one tensor; ctx is
 * passed through.  Nesting works: ad_grad of a function that calls ad_grad
 * gives second derivatives.  Results are owned by the current scope; NULL
 * on error (including an error or a NULL result inside f).
 * ---------------------------------------------------------------------- */

typedef ad_tensor *(*ad_fn)(ad_tensor *x, void *ctx);

/* Gradient of a scalar-valued f at x (reverse mode). */
ad_tensor *ad_grad(ad_fn f, void *ctx, ad_tensor *x);
/* f(x) into *value (owned by the current scope) and its gradient. */
ad_tensor *ad_value_and_grad(ad_fn f, void *ctx, ad_tensor *x,
                             ad_tensor **value);
/* J v (forward mode); v shaped like x; f(x) into *value when non-NULL. */
ad_tensor *ad_jvp(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *v,
                  ad_tensor **value);
/* u^T J (reverse mode); u shaped like f(x). */
ad_tensor *ad_vjp(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *u,
                  ad_tensor **value);
/* Jacobian shaped f(x).shape + x.shape, by reverse mode (one VJP per
 * output element) or forward mode (one JVP per input element). */
ad_tensor *ad_jacobian(ad_fn f, void *ctx, ad_tensor *x);
ad_tensor *ad_jacfwd(ad_fn f, void *ctx, ad_tensor *x);
/* Hessian of scalar f, shaped x.shape + x.shape (forward over reverse). */
ad_tensor *ad_hessian(ad_fn f, void *ctx, ad_tensor *x);
/* Hessian-vector product H v of scalar f (forward over reverse). */
ad_tensor *ad_hvp(ad_fn f, void *ctx, ad_tensor *x, ad_tensor *v);

/* Several arguments: f maps n tensors to one. */
typedef ad_tensor *(*ad_fn_n)(int n, ad_tensor *const *xs, void *ctx);

/* Gradients of scalar f with respect to each of the n inputs into
 * grads[0..n); the value into *value when non-NULL. */
ad_status ad_grad_n(ad_fn_n f, void *ctx, int n, ad_tensor *const *xs,
                    ad_tensor **grads, ad_tensor **value);
/* sum_i J_i vs[i] (forward mode) into *jvp; value into *value. */
ad_status ad_jvp_n(ad_fn_n f, void *ctx, int n, ad_tensor *const *xs,
                   ad_tensor *const *vs, ad_tensor **jvp, ad_tensor **value);

#ifdef __cplusplus
}
#endif
#endif /* AD_AUTODIFF_H */
