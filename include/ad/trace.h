/* Tracing: record an eager function once as a linear program and replay
 * it, its derivatives and their derivatives without per-op dispatch. */
#ifndef AD_TRACE_H
#define AD_TRACE_H

#include <stdio.h>

#include "ad/autodiff.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Traced functions
 *
 * ad_trace runs f once on an example input while recording every op it
 * executes into a linear program whose intermediates live in buffers
 * allocated once: one-element values in a flat array of doubles, larger
 * ones in tensors the program recycles.  Calling the function afterwards
 * replays that program: the same kernels in the same order, so the
 * results equal eager execution bit for bit, without dispatch, scopes or
 * tapes.
 *
 * Guards.  C code in f that reads tensor values (ad_item, ad_read, and
 * ad_cond below) chooses a path through f.  Each such read of a value
 * that depends on the inputs is recorded as a guard: a replay checks it
 * and, when the outcome differs (another branch, another loop count), the
 * function is traced again on the new input and the new path is cached
 * beside the old ones (up to ad_function_set_max_paths per input-shape
 * signature; the least recently used is dropped).  A replay never follows
 * a wrong branch.  A read through ad_item or ad_read guards the exact
 * value read (any change re-traces); a read of a comparison's output
 * (ad_less, ad_greater, ad_equal) or through ad_cond guards only its
 * truth, so every input taking the same branches shares one path.  New
 * input shapes are traced too, and cached by shape.
 *
 * What is captured.  Tensors f uses that do not depend on its inputs
 * (made inside f, read from ctx, variables' values) are captured as
 * constants, and C values f reads from ctx are baked in.  When the last
 * outside reference to a captured tensor goes away (a variable assigned a
 * new value, say), the paths that captured it are traced again; after
 * changing C values in ctx, call ad_function_reset.  Random tensors drawn
 * inside f are frozen at trace time, and side effects of f (printing, C
 * counters) happen only while tracing.  f may run again at any call, so
 * everything it reads must outlive the function.
 *
 * Derivatives.  A traced function differentiates like any op: called
 * while a tape records or a forward level is active it is one op whose
 * rules call its derived functions (below), themselves traced functions,
 * so it composes with tapes, forward levels, custom ops and
 * ad_check_grads to any order.  Derived functions are traced lazily, on
 * their first call, by tracing the eager derivative computation of f
 * (tape or forward level included); their guards are f's guards.
 *
 * Threads.  A function may be called from several threads; calls of one
 * function are serialised by a lock.  Tracing records on the calling
 * thread only.
 *
 * Errors.  Calls return NULL (or a status) with the error recorded, as
 * everywhere in libad: a NULL or freed function (AD_EINVAL), inputs of
 * the wrong count (AD_EINVAL), f failing while traced (its own error).
 * ---------------------------------------------------------------------- */

typedef struct ad_function ad_function;

/* Trace f on example (any shape) and return the traced function, which
 * the caller frees with ad_function_free.  f runs once, now; NULL with
 * f's error when it fails. */
ad_function *ad_trace(ad_fn f, void *ctx, ad_tensor *example);

/* The several-argument form: f maps the n >= 1 tensors examples[0..n) to
 * one tensor. */
ad_function *ad_trace_n(ad_fn_n f, void *ctx, int n,
                        ad_tensor *const *examples);

/* f(x), replayed (traced first when x's shape or a guard asks for it).
 * The result is owned by the current scope.  AD_EINVAL unless fn takes
 * one input and gives one output. */
ad_tensor *ad_function_call(ad_function *fn, ad_tensor *x);

/* f(xs[0..n)) for a function of n inputs and one output. */
ad_tensor *ad_function_call_n(ad_function *fn, int n, ad_tensor *const *xs);

/* The general call: nin inputs (ad_function_num_inputs) into nout outputs
 * (ad_function_num_outputs), out[j] owned by the current scope; on error
 * every out[j] is NULL. */
ad_status ad_function_apply(ad_function *fn, int nin, ad_tensor *const *in,
                            int nout, ad_tensor **out);

/* The number of inputs and outputs of fn, or -1 (AD_EINVAL) when fn is
 * NULL or freed. */
int ad_function_num_inputs(ad_function *fn);
int ad_function_num_outputs(ad_function *fn);

/* Free the caller's handle (NULL-safe).  Tapes that recorded a call of fn
 * keep what their backward pass needs.  Derived functions belong to their
 * function and go with it; freeing one by hand is AD_EINVAL and does
 * nothing.  Using fn afterwards is AD_EINVAL. */
void ad_function_free(ad_function *fn);

/* ------------------------------------------------------------------------
 * Replayed derivatives
 * ---------------------------------------------------------------------- */

/* The gradient of a scalar-valued one-input function at x and, when value
 * is non-NULL, f(x) into *value: one replay of the traced eager
 * ad_value_and_grad program.  Owned by the current scope. */
ad_tensor *ad_function_value_and_grad(ad_function *fn, ad_tensor *x,
                                      ad_tensor **value);

/* The same without the value. */
ad_tensor *ad_function_grad(ad_function *fn, ad_tensor *x);

/* The several-argument form: grads[0..n) and *value (when non-NULL). */
ad_status ad_function_value_and_grad_n(ad_function *fn, int n,
                                       ad_tensor *const *xs,
                                       ad_tensor **grads, ad_tensor **value);

/* J v (v shaped like x), and f(x) into *value when non-NULL, for a
 * one-input one-output function (forward mode, replayed). */
ad_tensor *ad_function_jvp(ad_function *fn, ad_tensor *x, ad_tensor *v,
                           ad_tensor **value);

/* u^T J (u shaped like f(x)), and f(x) into *value when non-NULL
 * (reverse mode, replayed). */
ad_tensor *ad_function_vjp(ad_function *fn, ad_tensor *x, ad_tensor *u,
                           ad_tensor **value);

/* The Hessian-vector product H v of a scalar one-input function: the
 * forward-mode derivative of its gradient program, replayed. */
ad_tensor *ad_function_hvp(ad_function *fn, ad_tensor *x, ad_tensor *v);

/* ------------------------------------------------------------------------
 * Derived functions: traced functions in their own right, so they can be
 * called, printed and derived again (higher orders).  For fn with n
 * inputs x and m outputs y:
 *
 *   vjp_fn:             (x[0..n), u[0..m)) -> (y[0..m), g[0..n))
 *                       g[i] = sum_j u[j]^T dy[j]/dx[i]
 *   jvp_fn:             (x[0..n), t[0..n)) -> (y[0..m), ty[0..m))
 *                       ty[j] = sum_i dy[j]/dx[i] t[i]
 *   value_and_grad_fn:  (x[0..n)) -> (y, g[0..n))   (m == 1, scalar y)
 *
 * Unconnected inputs get zero gradients and tangents.  The returned
 * function belongs to fn (borrowed; valid until fn is freed); NULL with
 * AD_EINVAL for a NULL or freed fn, or (value_and_grad_fn) m != 1.
 * ---------------------------------------------------------------------- */

ad_function *ad_function_vjp_fn(ad_function *fn);
ad_function *ad_function_jvp_fn(ad_function *fn);
ad_function *ad_function_value_and_grad_fn(ad_function *fn);

/* ------------------------------------------------------------------------
 * Branches, cache control, inspection
 * ---------------------------------------------------------------------- */

/* The truth (non-zero, NaN included) of a one-element tensor, for C
 * control flow: `if (ad_cond(ad_greater(x, y)))`.  Eagerly it is
 * ad_item(t) != 0; while tracing it records a guard on the truth only, so
 * inputs that take the same branch share the traced path.  false with
 * AD_EINVAL / AD_ESHAPE for NULL or a tensor of several elements. */
bool ad_cond(const ad_tensor *t);

/* True while this thread is tracing a function (f runs under ad_trace or
 * a re-trace). */
bool ad_tracing(void);

/* Keep at most max_paths (1..1024, default 8) traced paths per input-shape
 * signature; returns AD_OK or AD_EINVAL. */
ad_status ad_function_set_max_paths(ad_function *fn, int max_paths);

/* Drop every traced path of fn and of its derived functions: the next
 * calls trace again (after changing C values that f reads from ctx). */
ad_status ad_function_reset(ad_function *fn);

/* Counters of a function's cache. */
typedef struct ad_function_stats {
  int64_t calls;        /* calls answered, replayed or traced */
  int64_t traces;       /* runs of f under tracing (first one included) */
  int64_t replays;      /* calls answered by replaying a cached path */
  int64_t guard_misses; /* replays abandoned because a guard differed */
  int64_t stale;        /* paths dropped because a captured tensor went */
  int64_t paths;        /* paths cached now, all signatures together */
  int64_t signatures;   /* input-shape signatures cached now */
  int64_t ops;          /* ops in the most recently used path */
  int64_t guards;       /* guards in the most recently used path */
  int64_t instructions; /* interpreter instructions in that path */
} ad_function_stats;

/* Fill *stats (AD_EINVAL for NULL arguments or a freed function). */
ad_status ad_function_get_stats(ad_function *fn, ad_function_stats *stats);

/* Print every cached path of fn as a listing, one op per line with the
 * shape of its result and how it is replayed, e.g.
 *
 *   traced function: f; 1 input, 1 output
 *   path 1 of 1 for input shapes (3,): 3 ops, 1 guard, 5 instructions
 *     %0 = input 0                              (3,)
 *     %1 = ad_mul(%0, %0)                       (3,)  [kernel]
 *     %2 = ad_sum(%1) axes=all                  ()  [kernel]
 *     guard %2 == 14 (bits)
 *     %3 = ad_mul_scalar(%2) s=0.5              ()
 *     return %3
 *
 * Constants print as their value (one element) or const(shape).  Guards
 * print as "== value (bits)" (ad_item, ad_read) or "is true/false"
 * (ad_cond, comparisons).  AD_EINVAL for NULL arguments or a freed
 * function, AD_EIO when writing fails. */
ad_status ad_function_print(ad_function *fn, FILE *f);

/* Write the most recently used path of fn as a Graphviz DOT graph: a box
 * per op (name and result shape), ellipses for inputs, grey notes for
 * constants, diamonds for guards, edges along the data flow.  Render with
 * `dot -Tsvg`.  Errors as for ad_function_print; AD_ESTATE when nothing is
 * cached. */
ad_status ad_function_write_dot(ad_function *fn, FILE *f);

/* ------------------------------------------------------------------------
 * Adapters
 * ---------------------------------------------------------------------- */

/* An ad_fn whose ctx is an ad_function * (one input, one output):
 * ad_function_call(ctx, x).  Hands a traced function to any API that
 * takes an ad_fn (the GSL adapters, ad_check_grads, ad_grad): under a
 * tape or forward level it is one op whose rules replay the derived
 * programs. */
ad_tensor *ad_function_fn(ad_tensor *x, void *fn);

#ifdef __cplusplus
}
#endif
#endif /* AD_TRACE_H */
