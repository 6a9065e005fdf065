/* libad: automatic differentiation for C, TensorFlow's eager execution
 * done in C.
 *
 * Overview
 * --------
 * Tensor operations run at once and return values, so ordinary C control
 * flow (if, while, recursion) builds dynamic models.  Around that eager
 * core, gradient tapes (reverse mode) and forward accumulators (forward
 * mode) differentiate whatever the program does, to any order and in any
 * mix of modes.
 *
 *   ad/tensor.h    tensors, scopes (memory), errors, random numbers
 *   ad/ops.h       the differentiable operations
 *   ad/autodiff.h  tapes, forward accumulators, variables, ad_grad & co.
 *   ad/custom.h    custom ops with user-defined rules; checkpointing
 *   ad/check.h     the derivative checker (finite differences, any order)
 *   ad/debug.h     summaries of big tensors (ad_summary), the AD_DEBUG switch
 *   ad/optim.h     first-order optimizers over variables: SGD, Adam, L-BFGS
 *   ad/nn.h        layers, models, losses, datasets, metrics, checkpoints
 *   ad/trace.h     tracing: trace once, replay fast (guards re-trace)
 *   ad/gsl.h       GSL adapters (include it yourself: it brings in GSL's headers)
 *
 * Memory: every tensor a call returns belongs to the innermost scope open
 * on the calling thread; ad_scope_end() releases them all and ad_keep()
 * hands one outward.  Errors: a failing call returns NULL (or a non-zero
 * ad_status); ad_error_message() says what went wrong, naming the op and
 * the shapes at fault.
 *
 * Example: the derivative of x^2 + 3x at x = 2 (prints 7).
 *
 *   #include <ad.h>
 *
 *   static ad_tensor *f(ad_tensor *x, void *ctx) {
 *     (void)ctx;
 *     return ad_add(ad_square(x), ad_mul_scalar(x, 3.0));
 *   }
 *
 *   int main(void) {
 *     ad_scope_begin();
 *     ad_tensor *g = ad_grad(f, NULL, ad_scalar(2.0));
 *     if (!g) fprintf(stderr, "%s\n", ad_error_message());
 *     else ad_print(g);
 *     ad_scope_end();
 *   }
 *
 * Thread safety: tensors are immutable and may be shared between threads.
 * Scopes, errors, tapes and forward levels belong to one thread each.
 */
#ifndef AD_H
#define AD_H

#include "ad/tensor.h"
#include "ad/ops.h"
#include "ad/autodiff.h"
#include "ad/check.h"
#include "ad/custom.h"
#include "ad/debug.h"
#include "ad/optim.h"
#include "ad/nn.h"
#include "ad/trace.h"

#endif /* AD_H */
