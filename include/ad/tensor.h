/* Tensors, memory scopes, errors and random numbers: libad's eager core. */
#ifndef AD_TENSOR_H
#define AD_TENSOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Status codes and the error channel
 *
 * No libad function aborts or exits on bad input.  A failing call returns
 * NULL (or a non-zero ad_status) and records a code and a message in state
 * private to the calling thread.  A call given a NULL tensor returns NULL
 * and keeps the error that produced the NULL, so a chain of calls reports
 * its root cause once.  Successful calls leave the recorded error alone;
 * clear it with ad_error_clear().
 * ---------------------------------------------------------------------- */

/* X-macro list of status codes: name, value, one-line meaning. */
#define AD_STATUS_LIST(X)                                                  \
  X(AD_OK, 0, "success")                                                   \
  X(AD_EINVAL, 1, "invalid argument")                                      \
  X(AD_ESHAPE, 2, "incompatible shapes")                                   \
  X(AD_ENOMEM, 3, "out of memory")                                         \
  X(AD_ESTATE, 4, "call not valid in the current state")                   \
  X(AD_EUNIMPL, 5, "operation or derivative not implemented")              \
  X(AD_EIO, 6, "input/output error")                                       \
  X(AD_ECHECK, 7, "derivative check failed")                               \
  X(AD_EINTERNAL, 8, "internal error")

typedef enum ad_status {
#define AD_STATUS_ENUM_(name, value, text) name = value,
  AD_STATUS_LIST(AD_STATUS_ENUM_)
#undef AD_STATUS_ENUM_
} ad_status;

/* The code of the error recorded on this thread, AD_OK if none. */
ad_status ad_error(void);

/* The message of the recorded error ("" if none).  It names the op and the
 * shapes or values at fault, e.g. "ad_matmul: inner dimensions differ:
 * (2, 3) x (4, 5)".  The string is owned by libad and valid until the next
 * libad call on this thread. */
const char *ad_error_message(void);

/* Forget the recorded error on this thread. */
void ad_error_clear(void);

/* A static description of a status code; never NULL. */
const char *ad_strerror(ad_status status);

/* ------------------------------------------------------------------------
 * Tensors
 *
 * An ad_tensor is an immutable, reference-counted n-d array of double
 * (rank 0..AD_MAX_DIMS, row-major).  Ops never change their inputs.
 * Immutable tensors may be read from several threads at once; their
 * reference counts are atomic.
 *
 * Ownership: every tensor a libad call returns belongs to the innermost
 * scope open on the calling thread (see ad_scope_begin).  With no scope
 * open the caller owns it and must ad_release() it.
 * ---------------------------------------------------------------------- */

#define AD_MAX_DIMS 8

typedef struct ad_tensor ad_tensor;

/* A tensor of rank ndim with the given shape, copying numel values from
 * data (row-major), or zeros when data is NULL.  NULL on a negative size,
 * a rank outside 0..AD_MAX_DIMS, an element count that overflows, or out
 * of memory. */
ad_tensor *ad_tensor_new(int ndim, const int64_t *shape, const double *data);

/* A rank-0 tensor holding v. */
ad_tensor *ad_scalar(double v);

/* Tensors filled with 0, 1 or value. */
ad_tensor *ad_zeros(int ndim, const int64_t *shape);
ad_tensor *ad_ones(int ndim, const int64_t *shape);
ad_tensor *ad_full(int ndim, const int64_t *shape, double value);

/* A 1-d tensor start, start+step, ... stopping before stop (NumPy's
 * arange).  EINVAL when step is 0 or a bound is not finite. */
ad_tensor *ad_arange(double start, double stop, double step);

/* n evenly spaced values from a to b inclusive; n >= 0 (n = 1 gives a). */
ad_tensor *ad_linspace(double a, double b, int64_t n);

/* The n-by-n identity matrix, n >= 0. */
ad_tensor *ad_eye(int64_t n);

/* Seed this thread's random generator (GSL's mt19937).  The same seed
 * gives the same sequence of random tensors on the same thread; a thread
 * that never calls it draws as if it had called ad_seed(0). */
void ad_seed(uint64_t seed);

/* Uniform values in [lo, hi) (lo < hi, finite) and normal values with the
 * given mean and standard deviation (sd >= 0), from this thread's
 * generator. */
ad_tensor *ad_rand_uniform(int ndim, const int64_t *shape, double lo,
                           double hi);
ad_tensor *ad_rand_normal(int ndim, const int64_t *shape, double mean,
                          double sd);

/* Rank, shape and element count.  For a NULL tensor they return -1, NULL
 * and -1 and record AD_EINVAL.  The shape array is owned by the tensor. */
int ad_ndim(const ad_tensor *t);
const int64_t *ad_shape(const ad_tensor *t);
int64_t ad_numel(const ad_tensor *t);

/* The single value of a one-element tensor (any rank).  NaN and AD_EINVAL
 * / AD_ESHAPE when t is NULL or holds more than one element. */
double ad_item(const ad_tensor *t);

/* Copy t's values in row-major order into out, which holds n doubles; n
 * must equal ad_numel(t) (AD_ESHAPE otherwise). */
ad_status ad_read(const ad_tensor *t, double *out, int64_t n);

/* Print t NumPy-style followed by its shape, e.g.
 * "[[16 19]\n [36 43]] shape=(2, 2)\n".  Lines wrap at 75 columns and
 * tensors of more than 1000 elements are elided in the middle, as NumPy
 * does.  A NULL tensor prints "<null tensor: MESSAGE>" and ad_fprint then
 * returns the recorded error's code.  ad_fprint returns AD_EINVAL for a
 * NULL stream and AD_EIO when writing fails; it flushes the stream. */
void ad_print(const ad_tensor *t);
ad_status ad_fprint(FILE *f, const ad_tensor *t);

/* ------------------------------------------------------------------------
 * Memory
 * ---------------------------------------------------------------------- */

/* Take one more reference to t; returns t.  NULL-safe. */
ad_tensor *ad_retain(ad_tensor *t);

/* Drop one reference; the tensor is freed when none remain.  NULL-safe. */
void ad_release(ad_tensor *t);

/* Open a scope on this thread.  Until the matching ad_scope_end(), every
 * tensor a libad call returns is owned by this scope.  Scopes nest.  The
 * first 16 levels need no memory; deeper, a scope that finds none records
 * AD_ENOMEM and shares the enclosing scope (its tensors then live until
 * that one ends), so every ad_scope_begin still pairs with one
 * ad_scope_end.  Scopes a thread leaves open when it exits are ended then. */
void ad_scope_begin(void);

/* Close the innermost scope, releasing every tensor it owns (tensors
 * handed out with ad_keep survive).  AD_ESTATE if no scope is open. */
ad_status ad_scope_end(void);

/* Hand t to the enclosing scope (or, from the outermost scope, to the
 * caller, who must then ad_release it).  Returns t, or NULL with AD_ENOMEM
 * (t then stays in the current scope and goes with it).  Without an open
 * scope it does nothing.  NULL-safe. */
ad_tensor *ad_keep(ad_tensor *t);

/* Free this thread's caches of tensor memory, its scope arrays (when no
 * scope is open) and its random generator (the next draw restarts the
 * stream from the last seed).  Called automatically when a thread exits;
 * call it by hand only to return memory early. */
void ad_thread_cleanup(void);

#ifdef __cplusplus
}
#endif
#endif /* AD_TENSOR_H */
