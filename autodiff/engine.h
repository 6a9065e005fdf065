/* Internal interface of the differentiator: op rows, rule signatures, the
 * dispatcher and the per-thread stack of tapes and forward levels. */
#ifndef AD_AUTODIFF_ENGINE_H
#define AD_AUTODIFF_ENGINE_H

#include "ad/autodiff.h"
#include "internal.h"

struct ad__op;

/* What a rule sees of one application of an op. */
typedef struct ad__opctx {
  const struct ad__op *op;
  int nin, nout;
  ad_tensor *const *in;   /* primal inputs */
  ad_tensor *const *out;  /* primal outputs */
  const ad__attr *attr;   /* the op's attributes */
  void *extra;            /* per-application state (custom ops) */
  unsigned broadcast_inputs; /* bit i: in[i]'s shape differs from out[0]'s
                                (set for ops with one output) */
} ad__opctx;

/* A VJP rule: given the cotangents gout[0..nout) of the outputs (NULL
 * means zero; built-in single-output ops always get a non-NULL gout[0]),
 * set gin[i] for every input with need[i] to its cotangent, shaped like
 * in[i], or leave it NULL for zero.  Rules are written with public
 * differentiable ops; the tensors they make belong to the current scope,
 * which the engine opens around each call.  Returns AD_OK or the error. */
typedef ad_status (*ad__vjp_fn)(const ad__opctx *c, ad_tensor *const *gout,
                                const bool *need, ad_tensor **gin);

/* A JVP rule: given input tangents tin[0..nin) (NULL means zero; at least
 * one is non-NULL), set tout[j] to the tangent of each output, shaped
 * like out[j] (NULL for zero).  Same conventions as the VJP rule. */
typedef ad_status (*ad__jvp_fn)(const ad__opctx *c, ad_tensor *const *tin,
                                ad_tensor **tout);

enum {
  /* The op is linear in its non-constant inputs: its JVP applies the op
   * to the tangents (the row's jvp may then be NULL). */
  AD__OP_LINEAR = 1u << 0,
  /* Outputs are constants: never recorded, no tangent. */
  AD__OP_NONDIFF = 1u << 1,
  /* The op reads attributes, which a recorded node must keep. */
  AD__OP_ATTR = 1u << 2,
};

typedef struct ad__op {
  const char *name;       /* the public name, e.g. "ad_mul" */
  int arity;              /* number of inputs, -1 for variadic */
  unsigned flags;
  unsigned const_inputs;  /* bit i: input i is never differentiated */
  ad__kernel_fn kernel;   /* forward (src/); NULL for custom ops */
  ad__vjp_fn vjp;         /* NULL: AD_EUNIMPL when a gradient is needed */
  ad__jvp_fn jvp;         /* NULL: derived for linear ops, else EUNIMPL */
  void (*free_extra)(void *extra); /* releases ad__opctx.extra */
} ad__op;

/* ------------------------------------------------------------------------
 * The op table.  One row per op: name, arity, flags, constant-input mask.
 * The kernel is ad__k_<name> (src/), the rules ad__vjp_<name> and
 * ad__jvp_<name> (autodiff/rules_*.c) unless the flags say otherwise.
 * ---------------------------------------------------------------------- */

#define AD__L AD__OP_LINEAR
#define AD__N AD__OP_NONDIFF
#define AD__A AD__OP_ATTR
#define AD__LA (AD__OP_LINEAR | AD__OP_ATTR)
#define AD__NA (AD__OP_NONDIFF | AD__OP_ATTR)
/* X(name, arity, flags, const_inputs, has_vjp, has_jvp) */
#define AD__OP_TABLE(X)                                                    \
  /* binary elementwise */                                                 \
  X(add, 2, AD__L, 0, 1, 0) X(sub, 2, AD__L, 0, 1, 0) X(mul, 2, 0, 0, 1, 1)        \
  X(div, 2, 0, 0, 1, 1) X(pow, 2, 0, 0, 1, 1) X(maximum, 2, 0, 0, 1, 1)    \
  X(minimum, 2, 0, 0, 1, 1) X(atan2, 2, 0, 0, 1, 1) X(mod, 2, 0, 0, 1, 1)  \
  X(add_scalar, 1, AD__A, 0, 1, 1) X(mul_scalar, 1, AD__LA, 0, 1, 0)            \
  X(pow_scalar, 1, AD__A, 0, 1, 1) X(scaled_mul, 2, AD__A, 0, 1, 1)           \
  X(tanh_grad, 2, 0, 0, 1, 1) X(sigmoid_grad, 2, 0, 0, 1, 1)                 \
  /* unary elementwise */                                                  \
  X(neg, 1, AD__L, 0, 1, 0) X(exp, 1, 0, 0, 1, 1) X(log, 1, 0, 0, 1, 1)        \
  X(log1p, 1, 0, 0, 1, 1) X(expm1, 1, 0, 0, 1, 1) X(sqrt, 1, 0, 0, 1, 1)   \
  X(square, 1, 0, 0, 1, 1) X(abs, 1, 0, 0, 1, 1) X(sin, 1, 0, 0, 1, 1)     \
  X(cos, 1, 0, 0, 1, 1) X(tan, 1, 0, 0, 1, 1) X(asin, 1, 0, 0, 1, 1)       \
  X(acos, 1, 0, 0, 1, 1) X(atan, 1, 0, 0, 1, 1) X(sinh, 1, 0, 0, 1, 1)     \
  X(cosh, 1, 0, 0, 1, 1) X(tanh, 1, 0, 0, 1, 1) X(sigmoid, 1, 0, 0, 1, 1)  \
  X(softplus, 1, 0, 0, 1, 1) X(relu, 1, 0, 0, 1, 1) X(erf, 1, 0, 0, 1, 1)  \
  X(sign, 1, 0, 0, 1, 1) X(floor, 1, 0, 0, 1, 1) X(clip, 1, AD__A, 0, 1, 1)    \
  /* comparison and selection */                                           \
  X(less, 2, AD__N, 0, 0, 0) X(greater, 2, AD__N, 0, 0, 0)                         \
  X(equal, 2, AD__N, 0, 0, 0) X(where, 3, AD__L, 1, 1, 0)                          \
  /* reductions */                                                         \
  X(sum, 1, AD__LA, 0, 1, 0) X(mean, 1, AD__LA, 0, 1, 0)                     \
  X(prod, 1, AD__A, 0, 1, 1) X(max, 1, AD__A, 0, 1, 1) X(min, 1, AD__A, 0, 1, 1)       \
  X(logsumexp, 1, AD__A, 0, 1, 1) X(argmax, 1, AD__NA, 0, 0, 0)                 \
  X(softmax, 1, AD__A, 0, 1, 1) X(log_softmax, 1, AD__A, 0, 1, 1)                  \
  /* shape */                                                              \
  X(reshape, 1, AD__LA, 0, 1, 0) X(transpose, 1, AD__L, 0, 1, 0)                \
  X(permute, 1, AD__LA, 0, 1, 0) X(expand_dims, 1, AD__LA, 0, 1, 0)          \
  X(squeeze, 1, AD__LA, 0, 1, 0) X(broadcast_to, 1, AD__LA, 0, 1, 0)         \
  X(slice, 1, AD__LA, 0, 1, 0) X(concat, -1, AD__LA, 0, 1, 0)                \
  X(stack, -1, AD__LA, 0, 1, 0) X(gather, 1, AD__LA, 0, 1, 0)                \
  X(slice_grad, 1, AD__LA, 0, 1, 0) X(scatter_add, 1, AD__LA, 0, 1, 0)       \
  X(identity, 1, AD__N, 0, 0, 0)                                               \
  /* linear algebra */                                                     \
  X(matmul, 2, 0, 0, 1, 1) X(solve, 2, 0, 0, 1, 1) X(inv, 1, 0, 0, 1, 1)   \
  X(cholesky, 1, 0, 0, 1, 1) X(det, 1, 0, 0, 1, 1)                         \
  X(logdet, 1, 0, 0, 1, 1)                                                 \
  /* convolution and pooling */                                            \
  X(conv2d, 2, AD__A, 0, 1, 1) X(conv2d_input_grad, 2, AD__A, 0, 1, 1)             \
  X(conv2d_filter_grad, 2, AD__A, 0, 1, 1) X(max_pool2d, 1, AD__A, 0, 1, 1)        \
  X(max_pool2d_scatter, 2, AD__LA, 1, 1, 0)                                 \
  X(max_pool2d_select, 2, AD__LA, 1, 1, 0)

typedef enum ad__op_id {
#define AD__OP_ENUM_(name, arity, flags, cin, v, j) AD__OP_##name,
  AD__OP_TABLE(AD__OP_ENUM_)
#undef AD__OP_ENUM_
  AD__OP_COUNT
} ad__op_id;

extern const ad__op ad__ops[AD__OP_COUNT];

/* Rule declarations (only rows with has_vjp / has_jvp define them). */
#define AD__DECLARE_VJP_(name, arity, flags, cin, v, j)                     \
  ad_status ad__vjp_##name(const ad__opctx *c, ad_tensor *const *gout,      \
                           const bool *need, ad_tensor **gin);
#define AD__DECLARE_JVP_(name, arity, flags, cin, v, j)                     \
  ad_status ad__jvp_##name(const ad__opctx *c, ad_tensor *const *tin,       \
                           ad_tensor **tout);
AD__OP_TABLE(AD__DECLARE_VJP_)
AD__OP_TABLE(AD__DECLARE_JVP_)
#undef AD__DECLARE_VJP_
#undef AD__DECLARE_JVP_

/* ------------------------------------------------------------------------
 * Dispatch
 * ---------------------------------------------------------------------- */

/* Run op on in[0..nin) with attributes attr (may be NULL for ops without
 * any): checks inputs, runs the kernel, and when tapes or levels are
 * active records the node and propagates tangents.  Returns the result
 * owned by the current scope, or NULL with the error recorded. */
ad_tensor *ad__dispatch(ad__op_id op, int nin, ad_tensor *const *in,
                        const ad__attr *attr);

/* Record an application whose outputs were computed already (custom ops
 * and the dispatcher itself): propagate tangents through every active
 * forward level and record a node on every tape that watches an input.
 * out[] tensors are borrowed; fresh_outputs says they were just made on
 * this thread and are seen by no one else yet (tapes may then mark them
 * instead of using their maps).  extra (may be NULL) is handed to the nodes
 * that keep it: the function retains it through *extra_refs when non-NULL
 * (one increment per node).  Returns AD_OK or the error. */
ad_status ad__record(const ad__op *op, int nin, ad_tensor *const *in,
                     int nout, ad_tensor *const *out, bool fresh_outputs,
                     const ad__attr *attr, void *extra,
                     void (*retain_extra)(void *));

/* ------------------------------------------------------------------------
 * The per-thread stack of tapes and forward levels
 * ---------------------------------------------------------------------- */

enum { AD__CTX_TAPE = 1, AD__CTX_LEVEL = 2 };

typedef struct ad__ctx {
  int kind;
  void *obj;   /* ad_tape * or ad_fwd * */
  int paused;  /* > 0 while paused (nested pauses count) */
} ad__ctx;

typedef struct ad__ctx_stack {
  ad__ctx *items;
  int n, cap;
  int active;      /* contexts with paused == 0, unless all paused */
  int global_pause;
  bool anomaly;    /* ad_set_anomaly_detection */
  const char *rule_op;   /* the op whose VJP or JVP rule runs, and */
  const char *rule_kind; /* "backward pass" or "JVP", for messages */
  void *trace;     /* the innermost trace recording on this thread
                      (autodiff/trace*.c), or NULL; counts as one active
                      context that pausing never stops */
} ad__ctx_stack;

extern _Thread_local ad__ctx_stack ad__contexts;

/* Push a context; AD_ENOMEM on failure. */
ad_status ad__ctx_push(int kind, void *obj);
/* Remove the context holding obj; AD_ESTATE naming op if it is not the
 * innermost (strict) — with strict false it is removed wherever it is. */
ad_status ad__ctx_remove(void *obj, bool strict, const char *op);
/* Index of obj in the stack, -1 if absent. */
int ad__ctx_find(const void *obj);
/* Pause (delta = +1) or resume (-1) contexts from index `from` to the
 * top. */
void ad__ctx_pause_from(int from, int delta);
/* Pause or resume the contexts at indices from..to-1. */
void ad__ctx_pause_range(int from, int to, int delta);
/* Pause or resume the context at index i alone. */
void ad__ctx_pause_at(int i, int delta);
/* Make rec the innermost recording trace of this thread (NULL: none). */
void ad__ctx_set_trace(void *rec);
/* Called by ad__record, first, for every application while a trace
 * records (autodiff/trace_record.c). */
ad_status ad__trace_record(const ad__op *op, int nin, ad_tensor *const *in,
                           int nout, ad_tensor *const *out,
                           const ad__attr *attr);
/* True when some tape or level is active, or a trace records, on this
 * thread. */
static inline bool ad__ad_active(void) { return ad__contexts.active > 0; }

/* Anomaly detection: true (with an AD_ECHECK error naming op, the
 * inputs' shapes and the first bad element) when out holds NaN or Inf but
 * no input does.  what names the value ("output", "gradient of input
 * 1"). */
bool ad__anomaly_found(const char *op, const char *what, int nin,
                       ad_tensor *const *in, const ad_tensor *out);

/* Internal hooks the dispatcher calls (tape.c and forward.c). */
bool ad__tape_tracks_any(const ad_tape *tape, int nin, ad_tensor *const *in,
                         unsigned const_inputs);
ad_status ad__tape_record(ad_tape *tape, const ad__op *op, int nin,
                          ad_tensor *const *in, int nout,
                          ad_tensor *const *out, bool fresh_outputs,
                          const ad__attr *attr, void *extra,
                          void (*retain_extra)(void *));
/* Tangent of t at the level (borrowed), NULL when none. */
ad_tensor *ad__fwd_tangent(const ad_fwd *acc, const ad_tensor *t);
/* Attach tangent (retained) to t at the level. */
ad_status ad__fwd_set_tangent(ad_fwd *acc, const ad_tensor *t,
                              ad_tensor *tangent);
/* Close and free a level wherever it sits in the stack. */
void ad__fwd_discard(ad_fwd *acc);
/* Called by ad_var_value for every recording tape. */
ad_status ad__tape_saw_variable(ad_tape *tape, ad_var *v, ad_tensor *value);
/* Retain a variable (tapes keep the ones they saw). */
void ad__var_retain(ad_var *v);

/* ------------------------------------------------------------------------
 * Helpers for rules (autodiff/rules_util.c)
 * ---------------------------------------------------------------------- */

/* Sum g down to the shape of like (undoing broadcasting). */
ad_tensor *ad__unbroadcast(ad_tensor *g, const ad_tensor *like);
/* Bit i of a per-input mask; inputs past the 32 a mask holds have none
 * (shifting by 32 or more would be undefined). */
static inline bool ad__mask_bit(unsigned mask, int i) {
  return i < 32 && ((mask >> i) & 1u);
}
/* Whether input i may have been broadcast: inputs past 32 always may. */
static inline bool ad__maybe_broadcast(unsigned mask, int i) {
  return i >= 32 || ((mask >> i) & 1u);
}
/* The same for input i of an op with one output, without touching the
 * input's header when the op saw no broadcasting there (the backward pass
 * visits headers that are long out of cache). */
static inline ad_tensor *ad__unbroadcast_input(const ad__opctx *c,
                                               ad_tensor *g, int i) {
  if (!g || !ad__maybe_broadcast(c->broadcast_inputs, i)) return g;
  return ad__unbroadcast(g, c->in[i]);
}
/* The broadcast_inputs mask of an application. */
unsigned ad__broadcast_mask(int nin, ad_tensor *const *in,
                            const ad_tensor *out);
/* True when a and b have the same shape. */
static inline bool ad__same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}
/* s * a * b in one pass (an internal op with its own rules). */
ad_tensor *ad__scaled_mul(ad_tensor *a, ad_tensor *b, double s);
/* Zeros shaped like t. */
ad_tensor *ad__zeros_like(const ad_tensor *t);
/* Call op on in with attr (like the dispatcher) — used by rules that
 * apply internal rows. */
#define ad__apply ad__dispatch

/* ------------------------------------------------------------------------
 * Id-keyed hash map (autodiff/idmap.c): uint64 id (never 0) to a value.
 * ---------------------------------------------------------------------- */

typedef struct ad__idmap {
  uint64_t *keys;
  intptr_t *vals;
  int64_t cap, len;
} ad__idmap;

/* Look up id; true and *val set when present. */
bool ad__idmap_get(const ad__idmap *m, uint64_t id, intptr_t *val);
/* Insert or replace; AD_ENOMEM without memory, AD_EINVAL for id 0 (which
 * no live tensor has: a released one in -DAD_DEBUG_POOL builds); the map
 * is unchanged on failure. */
ad_status ad__idmap_put(ad__idmap *m, uint64_t id, intptr_t val);
void ad__idmap_free(ad__idmap *m);

#endif /* AD_AUTODIFF_ENGINE_H */
