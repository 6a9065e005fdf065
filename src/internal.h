/* Internal interface of the eager core: tensor layout, memory, errors and
 * the forward kernels that the op table in autodiff/ calls. */
#ifndef AD_SRC_INTERNAL_H
#define AD_SRC_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ad/ops.h"
#include "ad/tensor.h"

/* ------------------------------------------------------------------------
 * Layout
 * ---------------------------------------------------------------------- */

/* A block of doubles shared by a tensor and its views. */
typedef struct ad__storage {
  atomic_long refs;
  int size_class;   /* pool class, or -1 when malloc'ed directly */
  int64_t capacity; /* elements */
  double *data;     /* 64-byte aligned */
} ad__storage;

/* Tensors of at most this many elements keep their data in their own
 * header (one allocation instead of two). */
#define AD__EMBEDDED_ELEMS 4
/* ad__storage.size_class of storage embedded in a tensor header. */
#define AD__EMBEDDED_CLASS (-2)

struct ad_tensor {
  atomic_long refs;
  uint64_t id;           /* unique per process, never reused */
  int ndim;
  bool contiguous;       /* row-major dense, no gaps */
  int64_t numel;
  double *data;          /* first element (storage->data + offset) */
  ad__storage *storage;
  /* One annotation the differentiator may write while the tensor is
   * fresh (made by this thread, seen by nobody else): the serial of the
   * tape that recorded it and its slot there.  src/ only zeroes it. */
  uint64_t tape_mark;
  int64_t tape_slot;
  int64_t shape[AD_MAX_DIMS];
  int64_t strides[AD_MAX_DIMS]; /* in elements; 0 on broadcast views */
  /* Storage for small tensors.  Views of such a tensor reference it, so
   * the header outlives the tensor until the last view is gone. */
  ad__storage embedded;
  double embedded_data[AD__EMBEDDED_ELEMS];
};

/* ------------------------------------------------------------------------
 * Errors: every error goes through ad__error (one breakpoint catches all).
 * ---------------------------------------------------------------------- */

/* Record code and a printf-style message on this thread; returns code. */
ad_status ad__error(ad_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* How many errors this thread has recorded.  Code that runs callbacks or
 * rules compares it before and after, so that a failure the callee
 * swallowed (a NULL taken for a zero, say) still fails the call. */
/* GCC 12 at -O2 leaves simple loops scalar; this asks for vectorisation
 * of one function where it is spelled so (clang vectorises at -O2). */
#if defined(__GNUC__) && !defined(__clang__)
#define AD__VECTORIZE __attribute__((optimize("tree-vectorize")))
#else
#define AD__VECTORIZE
#endif

extern _Thread_local unsigned long ad__error_counter;
/* This thread's last error (src/error.c); read by the gdb script too. */
extern _Thread_local ad_status ad__last_code;
extern _Thread_local char ad__last_message[];
static inline unsigned long ad__error_count(void) { return ad__error_counter; }

/* For a NULL argument: record AD_EINVAL naming op and argument unless an
 * error is already recorded (the NULL then stems from it). */
void ad__error_null_arg(const char *op, const char *arg);

/* Format a shape as "(2, 3)" into buf (at least AD__SHAPE_STR bytes);
 * returns buf. */
#define AD__SHAPE_STR 200
char *ad__shape_str(char *buf, int ndim, const int64_t *shape);

/* ------------------------------------------------------------------------
 * Tensor creation and memory (src/tensor.c, src/pool.c)
 * ---------------------------------------------------------------------- */

/* A new contiguous tensor with uninitialised data, refcount 1, owned by
 * nobody (not registered with a scope).  Checks rank, sizes and overflow;
 * op names the public op for error messages. */
ad_tensor *ad__alloc(const char *op, int ndim, const int64_t *shape);

/* A new tensor header viewing base's storage with the given layout (the
 * storage gains a reference).  refcount 1, not registered.  offset is in
 * elements from base->data. */
ad_tensor *ad__view(const ad_tensor *base, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset);

/* t if contiguous (with one more reference), else a contiguous copy
 * (refcount 1).  NULL on out of memory.  Release the result. */
ad_tensor *ad__contiguous(ad_tensor *t);

/* Register t (refcount 1, just made) with the innermost scope; returns t.
 * Without a scope the caller owns it.  NULL-safe. */
ad_tensor *ad__own(ad_tensor *t);

/* Element count of a shape, or -1 (with an error naming op) on a negative
 * size or int64 overflow. */
int64_t ad__checked_numel(const char *op, int ndim, const int64_t *shape);

/* Validate a user-given rank/shape pair (ndim in 0..AD_MAX_DIMS, shape
 * non-NULL when ndim > 0, no negative size, no overflow). */
ad_status ad__check_shape(const char *op, int ndim, const int64_t *shape);

/* Copy t's elements, row-major, into out (numel doubles). */
void ad__gather_contiguous(const ad_tensor *t, double *out);

/* Move the multi-index idx (into t, row-major order) to the next element
 * and return how far the element's address moves, in elements: the one
 * walk over a strided tensor that copying, scanning and printing share.
 * After the last element idx wraps to zeros. */
static inline int64_t ad__next_element(const ad_tensor *t, int64_t *idx) {
  int64_t delta = 0;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (++idx[d] < t->shape[d]) return delta + t->strides[d];
    delta -= t->strides[d] * (t->shape[d] - 1);
    idx[d] = 0;
  }
  return delta;
}

/* Row-major strides of a dense shape. */
void ad__dense_strides(int ndim, const int64_t *shape, int64_t *strides);

/* Per-thread pools of tensor headers and data blocks (src/pool.c). */
ad_tensor *ad__pool_header(void);
void ad__pool_free_header(ad_tensor *t);
ad__storage *ad__pool_storage(int64_t numel);
void ad__pool_free_storage(ad__storage *s);
void ad__pool_cleanup(void);

#ifdef AD_DEBUG_POOL
/* -DAD_DEBUG_POOL (docs/RELIABILITY.md): a tensor's id becomes 0 when its
 * last reference goes (no live tensor has id 0), and each thread keeps the
 * last AD__DEBUG_POOL_RING headers it released out of reuse, so that a
 * released tensor passed again is reported rather than used. */
#define AD__DEBUG_POOL_RING 4096
static inline bool ad__tensor_released(const ad_tensor *t) {
  return t->id == 0;
}
#endif

/* Free the calling thread's scope arrays (when no scope is open) and its
 * random generator (the next draw restarts from the last seed). */
void ad__scope_cleanup(void);
/* Ends every scope still open on this thread, releasing what they own
 * (called when a thread exits). */
void ad__scope_end_all(void);
/* Room for `extra` more ad_keep calls in the current frame, so that a
 * call handing out several results keeps all or none; false (AD_ENOMEM
 * recorded) without memory. */
bool ad__keep_reserve(int64_t extra);
void ad__random_cleanup(void);

/* Fault injection for tests: when n > 0, the n-th allocation from now
 * fails (pool or malloc) as out of memory.  0 disables. */
void ad__fail_alloc_after(long n);
extern _Thread_local long ad__fail_countdown;
static inline bool ad__alloc_should_fail(void) {
  if (__builtin_expect(ad__fail_countdown <= 0, 1)) return false;
  return --ad__fail_countdown == 0;
}

/* Set by autodiff/ while it traces a function on this thread (NULL
 * otherwise): ad_item and ad_read call it with the tensor they read, so
 * that reads of traced values become guards. */
extern _Thread_local void (*ad__read_hook)(const ad_tensor *t);

/* A fresh tensor id (per-thread counter with a thread tag). */
uint64_t ad__next_id(void);

/* Normalise a NumPy-style axis into 0..ndim-1; -1 with AD_EINVAL naming op
 * when out of range. */
int ad__norm_axis(const char *op, int axis, int ndim);

/* Broadcast two shapes into out (rank = max); AD_ESHAPE naming op. */
ad_status ad__broadcast_shapes(const char *op, int na, const int64_t *sa,
                               int nb, const int64_t *sb, int *nout,
                               int64_t *out);

/* ------------------------------------------------------------------------
 * Op attributes: the non-tensor arguments of an op.  Kernels read them;
 * the differentiator stores a copy with each recorded node.
 * ---------------------------------------------------------------------- */

typedef struct ad__attr {
  double s0, s1;       /* add_scalar s; mul_scalar s; pow_scalar p; clip lo
                          (s0), hi (s1) */
  int axis;            /* softmax, log_softmax, argmax, slice, concat,
                          stack, gather, expand_dims, squeeze, scatter */
  int naxes;           /* reductions: 0 = all axes */
  int axes[AD_MAX_DIMS];
  bool keepdims;
  int ndim;            /* reshape, broadcast_to, internal grad ops: target */
  int64_t shape[AD_MAX_DIMS];
  int perm[AD_MAX_DIMS]; /* permute */
  int64_t start, stop, step; /* slice, Python-style as the user gave them
                                (the kernel normalises them with
                                ad__slice_bounds); slice_grad: normalised */
  int64_t n;           /* gather: number of indices */
  const int64_t *idx;  /* gather: indices (borrowed during the call) */
  int64_t k[4];        /* conv2d: sh, sw, ph, pw; max_pool2d: kh, kw, sh,
                          sw */
} ad__attr;

/* Normalise Python-style slice bounds for a dimension of size dim: on
 * return *start, *stop index the first element and the stopping point
 * and the result has *count elements.  step == 0 is AD_EINVAL. */
ad_status ad__slice_bounds(const char *op, int64_t dim, int64_t *start,
                           int64_t *stop, int64_t step, int64_t *count);

/* Every forward kernel has this signature: it validates the inputs (the
 * shape rule) before allocating anything, and returns a new tensor
 * (refcount 1, not registered with a scope) or NULL with an error whose
 * message starts with the public op name ("ad_matmul: ...").  Inputs are
 * non-NULL (the dispatcher checks). */
typedef ad_tensor *(*ad__kernel_fn)(int nin, ad_tensor *const *in,
                                    const ad__attr *attr);

/* Kernel declarations, one per op-table row (see autodiff/optable.h). */
#define AD__DECLARE_KERNEL(name) \
  ad_tensor *ad__k_##name(int nin, ad_tensor *const *in, const ad__attr *a);

/* Elementwise (src/kernels_elementwise.c).  Internal row:
 *   scaled_mul(a, b): a->s0 * a * b in one pass (broadcasting), which
 *     derivative rules use for products with a constant factor;
 *   tanh_grad(g, y) = g (1 - y^2) and sigmoid_grad(g, y) = g y (1 - y):
 *     the VJPs of tanh and sigmoid from their outputs, in one pass. */
#define AD__ELEMENTWISE_KERNELS(X)                                          \
  X(add) X(sub) X(mul) X(div) X(pow) X(maximum) X(minimum) X(atan2) X(mod)  \
  X(add_scalar) X(mul_scalar) X(pow_scalar)                                 \
  X(neg) X(exp) X(log) X(log1p) X(expm1) X(sqrt) X(square) X(abs) X(sin)   \
  X(cos) X(tan) X(asin) X(acos) X(atan) X(sinh) X(cosh) X(tanh) X(sigmoid) \
  X(softplus) X(relu) X(erf) X(sign) X(floor) X(clip)                       \
  X(less) X(greater) X(equal) X(where) X(scaled_mul) X(tanh_grad)         \
  X(sigmoid_grad)
/* Reductions and softmax (src/kernels_reduce.c) */
#define AD__REDUCE_KERNELS(X)                                               \
  X(sum) X(mean) X(prod) X(max) X(min) X(logsumexp) X(argmax) X(softmax)    \
  X(log_softmax)
/* Shape (src/kernels_shape.c).  Internal rows:
 *   slice_grad(g): zeros of shape a->shape (rank a->ndim) with g placed at
 *     the slice (a->axis, a->start, a->step, count = g's size on axis);
 *   scatter_add(g): zeros of shape a->shape with g's entries along a->axis
 *     added at the indices a->idx[0..a->n) (the transpose of gather);
 *   identity(t): a view of t under a new id (stop_gradient's kernel). */
#define AD__SHAPE_KERNELS(X)                                                \
  X(reshape) X(transpose) X(permute) X(expand_dims) X(squeeze)              \
  X(broadcast_to) X(slice) X(concat) X(stack) X(gather) X(slice_grad)       \
  X(scatter_add) X(identity)
/* Linear algebra (src/kernels_linalg.c) */
#define AD__LINALG_KERNELS(X)                                               \
  X(matmul) X(solve) X(inv) X(cholesky) X(det) X(logdet)
/* Convolution and pooling (src/kernels_conv.c).  Internal rows:
 *   conv2d_input_grad(g, w): gradient of conv2d wrt x; a->shape holds x's
 *     shape (rank 4) and a->k the strides/padding;
 *   conv2d_filter_grad(x, g): gradient wrt w; a->shape holds w's shape;
 *   max_pool2d_scatter(x, g): g (pooled shape) routed to each window's
 *     first maximum of x, result shaped like x;
 *   max_pool2d_select(x, h): h (shaped like x) read at each window's first
 *     maximum of x, result pooled-shaped.  Both are linear in the second
 *     argument and constant in x. */
#define AD__CONV_KERNELS(X)                                                 \
  X(conv2d) X(conv2d_input_grad) X(conv2d_filter_grad) X(max_pool2d)        \
  X(max_pool2d_scatter) X(max_pool2d_select)

AD__ELEMENTWISE_KERNELS(AD__DECLARE_KERNEL)
AD__REDUCE_KERNELS(AD__DECLARE_KERNEL)
AD__SHAPE_KERNELS(AD__DECLARE_KERNEL)
AD__LINALG_KERNELS(AD__DECLARE_KERNEL)
AD__CONV_KERNELS(AD__DECLARE_KERNEL)

#endif /* AD_SRC_INTERNAL_H */
