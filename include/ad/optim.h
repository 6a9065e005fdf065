/* Built-in first-order optimizers over variables: SGD with momentum, Adam
 * and L-BFGS behind one interface, with their state as named tensors.
 *
 * Overview
 * --------
 * An optimizer updates a list of variables (ad_var, include/ad/autodiff.h)
 * from their gradients.  Either hand it the gradients yourself:
 *
 *   ad_optimizer *opt = ad_optimizer_adam(1e-3, 0.9, 0.999, 1e-8);
 *   for (int step = 0; step < 1000; step++) {
 *     ad_scope_begin();
 *     ad_tape *tape = ad_tape_begin(0);
 *     ad_tensor *loss = my_loss(&data);          reads the variables
 *     ad_tape_end(tape);
 *     ad_tensor *grads[2];
 *     ad_tape_var_gradients(tape, loss, 2, vars, grads);
 *     ad_optimizer_step(opt, 2, vars, grads);
 *     ad_tape_free(tape);
 *     ad_scope_end();
 *   }
 *   ad_optimizer_free(opt);
 *
 * or let it evaluate a loss function itself, which L-BFGS needs for its
 * line search (the other optimizers take one gradient step):
 *
 *   double loss;
 *   ad_optimizer_minimize(opt, my_loss, &data, 2, vars, &loss);
 *
 * The i-th variable of every call is the same parameter: the optimizer's
 * per-variable state (momentum, moments) follows the position in the
 * array, as PyTorch's follows its parameter list.  The first step fixes
 * how many variables there are and their shapes; later calls must agree.
 *
 * Errors: every call validates everything before it changes anything, so
 * a failing call leaves the variables and the optimizer as they were.
 * Codes: AD_EINVAL for NULL arguments, bad hyperparameters and gradients
 * or losses holding NaN or Inf; AD_ESHAPE for a gradient not shaped like
 * its variable, or variables other than the first step's; the status of a
 * loss function that failed.  The message names the optimizer, the
 * variable (index and name) and the element at fault.
 *
 * Threads: an optimizer is plain data with no thread affinity; use it
 * from one thread at a time, as the variables it assigns.  Different
 * optimizers may run on different threads at once.
 */
#ifndef AD_OPTIM_H
#define AD_OPTIM_H

#include <stdint.h>

#include "ad/autodiff.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ad_optimizer ad_optimizer;

/* ------------------------------------------------------------------------
 * Construction.  Each returns a new optimizer (free with
 * ad_optimizer_free), or NULL with AD_EINVAL naming the bad
 * hyperparameter, or AD_ENOMEM.
 * ---------------------------------------------------------------------- */

/* Stochastic gradient descent with heavy-ball momentum, in PyTorch's form:
 *   v <- momentum v + g,   x <- x - lr v
 * (v starts at g; momentum 0 is plain gradient descent).  lr > 0 and
 * finite, 0 <= momentum < 1. */
ad_optimizer *ad_optimizer_sgd(double lr, double momentum);

/* Adam (Kingma and Ba, 2015) with bias correction:
 *   m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
 *   x <- x - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
 * at step t = 1, 2, ....  lr > 0 and finite, 0 <= beta1 < 1,
 * 0 <= beta2 < 1, eps > 0 (the paper's defaults: 1e-3, 0.9, 0.999,
 * 1e-8). */
ad_optimizer *ad_optimizer_adam(double lr, double beta1, double beta2,
                                double eps);

/* Limited-memory BFGS over all variables as one vector, keeping the last
 * `history` (1..1000) pairs of steps s and gradient changes y (a pair
 * with s.y <= 1e-10 |s| |y| is skipped, so the inverse-Hessian estimate
 * stays positive definite).  The direction d = -H g comes from the
 * two-loop recursion, scaled by s.y / y.y of the newest pair; the first
 * step is -g scaled by min(1, 1 / sum|g_i|), as PyTorch's.  A direction
 * that is not downhill (g.d >= 0) drops the history and falls back to -g.
 *
 * Step length: ad_optimizer_minimize searches along d from lr (1 is
 * usual), halving until the loss decreases by at least 1e-4 t g.d
 * (Armijo's condition); a trial point where the loss is NaN or Inf
 * counts as too far.  When 40 halvings do not do, the variables stay
 * where they were, the history is dropped and the call still succeeds.
 * ad_optimizer_step, given gradients only, takes the step lr d as it is;
 * use it with a small lr or prefer minimize.  lr > 0 and finite. */
ad_optimizer *ad_optimizer_lbfgs(double lr, int history);

/* Free the optimizer and its state.  The variables are not touched.
 * NULL-safe. */
void ad_optimizer_free(ad_optimizer *opt);

/* ------------------------------------------------------------------------
 * Steps
 * ---------------------------------------------------------------------- */

/* One update of the n variables from grads[i] (shaped like vars[i]),
 * which the caller computed, for instance with ad_tape_var_gradients.
 * The variables get new values (ad_var_assign); grads are only read.
 * Reading and assigning happen with recording paused, so a tape open
 * around the call sees none of it.  Returns AD_OK or an error (see
 * Errors above); a NULL grads[i] keeps the error that produced it. */
ad_status ad_optimizer_step(ad_optimizer *opt, int n, ad_var *const *vars,
                            ad_tensor *const *grads);

/* A loss function for ad_optimizer_minimize: it reads the variables
 * (ad_var_value) and returns a one-element tensor, or NULL with an error
 * recorded. */
typedef ad_tensor *(*ad_loss_fn)(void *ctx);

/* One optimization step that evaluates the loss itself: loss(ctx) under a
 * tape, its gradient with respect to the n variables (zero for a
 * variable the loss does not read), then the optimizer's update; L-BFGS
 * also evaluates the loss at trial points of its line search.  The loss
 * at the starting point (before the update) goes to *value when value is
 * non-NULL (NaN on error).  Errors: those of ad_optimizer_step; the
 * loss's own error when it fails; AD_ESHAPE when it returns more than one
 * element; AD_EINVAL when its value or gradient holds NaN or Inf at the
 * starting point; AD_ESTATE while ad_pause_recording(true) is in effect
 * (the loss could not be differentiated).  A tape open around the call
 * records the evaluation at the starting point, as it would record
 * ad_grad; the update and the line search are not recorded. */
ad_status ad_optimizer_minimize(ad_optimizer *opt, ad_loss_fn loss,
                                void *ctx, int n, ad_var *const *vars,
                                double *value);

/* ------------------------------------------------------------------------
 * Settings and counters
 * ---------------------------------------------------------------------- */

/* "sgd", "adam" or "lbfgs"; "" (with AD_EINVAL) for NULL.  Static. */
const char *ad_optimizer_name(const ad_optimizer *opt);

/* Steps taken so far (restored with the state); -1 (with AD_EINVAL) for
 * NULL. */
int64_t ad_optimizer_iterations(const ad_optimizer *opt);

/* The learning rate, and a new one for the next steps (a schedule sets it
 * between steps).  lr must be positive and finite (AD_EINVAL). */
double ad_optimizer_lr(const ad_optimizer *opt);
ad_status ad_optimizer_set_lr(ad_optimizer *opt, double lr);

/* ------------------------------------------------------------------------
 * State as named tensors, for checkpoints
 *
 * The state is a list of (name, tensor) entries, names "KIND/SLOT" or
 * "KIND/SLOT/I" for the I-th variable:
 *   every kind   KIND/iterations (scalar), KIND/lr (scalar)
 *   sgd          sgd/velocity/I (shaped like variable I)
 *   adam         adam/m/I, adam/v/I (shaped like variable I)
 *   lbfgs        lbfgs/x_prev, lbfgs/g_prev (N,), lbfgs/s, lbfgs/y (K, N):
 *                the last point and gradient and the K pairs kept, oldest
 *                first, over all N elements of the variables
 * Per-variable entries exist once the optimizer has taken a step.
 * Hyperparameters other than lr are not state: recreate the optimizer with
 * the same ones, then load.
 * ---------------------------------------------------------------------- */

/* The number of entries; -1 (with AD_EINVAL) for NULL. */
int64_t ad_optimizer_state_count(const ad_optimizer *opt);

/* The name of entry i (0 <= i < count): owned by the optimizer, valid
 * until its next step, load or free.  NULL with AD_EINVAL when out of
 * range. */
const char *ad_optimizer_state_name(const ad_optimizer *opt, int64_t i);

/* A copy of entry i as a tensor owned by the current scope; NULL with
 * AD_EINVAL when out of range, or AD_ENOMEM. */
ad_tensor *ad_optimizer_state_tensor(const ad_optimizer *opt, int64_t i);

/* Replace the whole state by the count entries given (names[i] and
 * tensors[i], in any order), as saved from an optimizer of the same kind.
 * count 0 resets the optimizer to a fresh one (lr unchanged).  Every
 * entry is checked before anything changes: AD_EINVAL for a NULL, an
 * unknown or repeated name, a name of another kind ("adam/m/0" given to
 * sgd), a missing companion (adam/m/I without adam/v/I, a gap in I, the
 * L-BFGS vectors incomplete), a negative or fractional iteration count or
 * a bad lr; AD_ESHAPE for shapes that disagree.  The variables' shapes
 * are then checked against the restored state at the next step. */
ad_status ad_optimizer_load_state(ad_optimizer *opt, int64_t count,
                                  const char *const *names,
                                  ad_tensor *const *tensors);

#ifdef __cplusplus
}
#endif
#endif /* AD_OPTIM_H */
