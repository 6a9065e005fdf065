/* Internal interface of tracing shared by autodiff/trace*.c: the recorder,
 * the compiled program and its interpreter. */
#ifndef AD_AUTODIFF_TRACE_INTERNAL_H
#define AD_AUTODIFF_TRACE_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "ad/trace.h"
#include "engine.h"

/* ------------------------------------------------------------------------
 * Interned shapes
 * ---------------------------------------------------------------------- */

typedef struct tr_shape {
  int ndim;
  int64_t numel;
  int64_t dims[AD_MAX_DIMS];
  int32_t next; /* the next shape with the same hash, -1 */
} tr_shape;

typedef struct tr_shapes {
  tr_shape *v;
  int64_t n, cap;
  ad__idmap index; /* hash -> first shape */
} tr_shapes;

/* The index of the shape (ndim, dims), added when new; -1 on out of
 * memory.  Equal shapes get equal indices. */
int32_t tr_shape_intern(tr_shapes *s, int ndim, const int64_t *dims);
void tr_shapes_free(tr_shapes *s);

/* Grow *p (elements of size bytes, capacity *cap) to hold need elements;
 * false on out of memory (nothing changed). */
bool tr_grow(void **p, int64_t *cap, int64_t need, size_t size);

/* ------------------------------------------------------------------------
 * The recording: values (tensors the traced run made or used), ops and
 * guards in execution order.
 * ---------------------------------------------------------------------- */

/* Entry codes beyond the op table's ids. */
enum {
  TR_GUARD_BITS = AD__OP_COUNT, /* in[0] (one element) keeps its bits */
  TR_GUARD_TRUTH,               /* in[0] != 0 keeps its truth (attr) */
  TR_GUARD_READ,                /* every element keeps its bits */
  TR_CODE_END
};

enum { TV_INPUT, TV_CONST, TV_OP };

typedef struct tr_val {
  int32_t shape;        /* interned */
  uint8_t kind;         /* TV_* */
  uint8_t cmp;          /* holds 0/1 (a comparison's output) */
  int32_t src;          /* input index, constant index or op index */
  int32_t prev_storage; /* an older value sharing this one's storage */
  ad_tensor *t;         /* while recording: retained, NULL once let go */
} tr_val;

typedef struct tr_op {
  int32_t code; /* op-table id or TR_GUARD_* */
  int32_t nin;
  int32_t out;  /* value; -1 for guards */
  int32_t in;   /* offset of the input values in the input pool */
  int64_t attr; /* ops: attribute index or -1; TR_GUARD_TRUTH: the truth;
                   TR_GUARD_BITS/READ: offset in the double pool */
} tr_op;

typedef struct tr_rec {
  struct tr_rec *parent;          /* the next outer recording trace */
  void (*saved_hook)(const ad_tensor *);
  tr_shapes shapes;
  tr_val *vals;
  int64_t nvals, vals_cap;
  tr_op *ops;
  int64_t nops, ops_cap;
  int32_t *ins;
  int64_t nins, ins_cap;
  ad__attr **attrs;
  int64_t nattrs, attrs_cap;
  double *dpool;
  int64_t nd, d_cap;
  ad_tensor **consts; /* retained */
  int64_t nconsts, consts_cap;
  ad__idmap ids;      /* tensor id -> value */
  ad__idmap storages; /* storage address -> newest value using it */
  int32_t *held;      /* values whose tensor is retained */
  int64_t nheld, held_cap, gc_at;
  int64_t held_bytes, gc_bytes_at; /* their data, to collect big ones */
  int nin;
  uint64_t id_floor;  /* tensors with a later id of this thread were made
                         while tracing (not captured from outside) */
  ad_status failed;   /* set when recording ran out of memory */
} tr_rec;

tr_rec *tr_rec_new(void);
void tr_rec_free(tr_rec *r);
/* Start (push) and stop (pop, innermost first) recording on this
 * thread. */
void tr_rec_push(tr_rec *r);
void tr_rec_pop(tr_rec *r);
/* Register t as the next input. */
ad_status tr_rec_input(tr_rec *r, ad_tensor *t);
/* In every recorder outer to r, make view stand for what orig stands
 * for. */
ad_status tr_rec_alias_outer(tr_rec *r, const ad_tensor *view,
                             const ad_tensor *orig);
/* The value of t: recorded, or a new constant; -1 on out of memory. */
int32_t tr_rec_value(tr_rec *r, ad_tensor *t);
/* Let go of every tensor the recording holds except the constants. */
void tr_rec_drop_tensors(tr_rec *r);
/* Record a truth guard on t in every recorder (ad_cond). */
void tr_guard_truth(const ad_tensor *t);

static inline const tr_shape *tr_val_shape(const tr_rec *r, int32_t v) {
  return &r->shapes.v[r->vals[v].shape];
}

/* ------------------------------------------------------------------------
 * The compiled program
 * ---------------------------------------------------------------------- */

/* Interpreter instructions.  One-element values live in cells of a
 * double arena, others in tensor slots.  Binary codes compute
 * cell[out] = f(cell[a], cell[b]) (the *_SCALAR ones read their constant
 * from cell b), unary codes f(cell[a]).  Fused pairs (superinstructions)
 * compute the roundings of the two ops they replace in the same order.
 * Every one-word scalar code has an _ACC twin that also adds cell[c] (c in
 * the next word's a): it absorbs the add that was the result's only use
 * (IEEE addition commutes exactly).  Wide codes keep a third operand in the
 * next word's a. */
#define TR_BINARY_CODES(X)                                                 \
  X(I_ADD) X(I_SUB) X(I_MUL) X(I_DIV) X(I_POW) X(I_MAXIMUM) X(I_MINIMUM)   \
  X(I_ATAN2) X(I_MOD) X(I_LESS) X(I_GREATER) X(I_EQUAL) X(I_TANH_GRAD)     \
  X(I_SIGMOID_GRAD) X(I_ADD_SCALAR) X(I_MUL_SCALAR) X(I_POW_SCALAR)        \
  X(I_SQUARE_MUL_SCALAR) /* (a*a)*b */                                     \
  X(I_NEG_ADD_SCALAR)    /* (-a)+b */                                      \
  X(I_SUB_SQUARE)        /* t = a-b; t*t */                                \
  X(I_SQUARE_ADD)        /* (a*a)+b */                                     \
  X(I_SUB_SQUARED)       /* a-(b*b) */
#define TR_UNARY_CODES(X)                                                  \
  X(I_NEG) X(I_SQRT) X(I_SQUARE) X(I_ABS) X(I_SIN) X(I_COS) X(I_TAN)       \
  X(I_ASIN) X(I_ACOS) X(I_ATAN) X(I_SINH) X(I_COSH) X(I_RELU) X(I_ERF)     \
  X(I_SIGN) X(I_FLOOR) X(I_EXP) X(I_LOG) X(I_LOG1P) X(I_EXPM1) X(I_TANH)   \
  X(I_SIGMOID) X(I_SOFTPLUS) X(I_SUM1) X(I_LSE1) X(I_RECIPROCAL)
#define TR_OTHER_CODES(X)                                                  \
  X(I_SCALED_MUL) X(I_CLIP) X(I_WHERE) /* wide */                          \
  X(I_ELEM)      /* cell[out] = element aux[b] of slot[a] */               \
  X(I_KERNEL)    /* kernel call kc[a] */                                   \
  X(I_ONEHOT)    /* slot[out] = zeros of aux[a] with cell[b] at its k */   \
  X(I_SCATTER)   /* slot[a][k] += cell[b] in place (aux[out]) */           \
  X(I_RELEASE)   /* release slot[a] */                                     \
  X(I_GUARD_BITS)  /* bits(cell[a]) == bits(cell[b]), else stop */         \
  X(I_GUARD_TRUTH) /* (cell[a] != 0) == flag */                            \
  X(I_GUARD_READ)  /* slot[a]'s elements == aux[b]'s recorded values */    \
  X(I_LOOP)      /* a rerolled block: loops[a], column by column */        \
  X(I_COPY)      /* cell[out] = cell[a] (a loop's initial values) */       \
  X(I_EXT)       /* the second word of a wide instruction */               \
  X(I_END)       /* the last word of every program */
#define TR_ENUM_(c) c,
#define TR_ENUM_ACC_(c) c##_ACC,
enum {
  TR_BINARY_CODES(TR_ENUM_) TR_UNARY_CODES(TR_ENUM_)
  TR_BINARY_CODES(TR_ENUM_ACC_) TR_UNARY_CODES(TR_ENUM_ACC_)
  TR_OTHER_CODES(TR_ENUM_)
  I_CODE_COUNT
};
#undef TR_ENUM_
#undef TR_ENUM_ACC_
/* One-word scalar codes are [0, I_NSCALAR); their twins follow. */
#define I_NSCALAR I_ADD_ACC
#define I_ACC(c) ((c) + I_NSCALAR)

/* Flags of _ACC instructions: the added operand is the accumulator
 * register (the previous _ACC result), and the result goes only to that
 * register (its one reader is the next _ACC). */
#define F_CREG 1u
#define F_NOSTORE 2u

typedef struct tr_ins {
  uint16_t code;
  uint16_t flag;
  uint32_t out, a, b;
} tr_ins;

enum { KA_CELL, KA_SLOT, KA_CONST };

typedef struct tr_karg {
  uint8_t kind;    /* KA_* */
  uint8_t release; /* release the slot after the call (its last use) */
  uint32_t ref;    /* cell or slot */
  int32_t shape;   /* the value's shape (for boxing a cell) */
  ad_tensor *t;    /* KA_CONST: the constant (borrowed); KA_CELL: a box */
} tr_karg;

typedef struct tr_kcall {
  int32_t op;
  int32_t nin;
  uint32_t out;       /* cell or slot */
  uint8_t out_scalar; /* unbox the result into a cell */
  const ad__attr *attr;
  tr_karg *arg;
  ad_tensor **args;   /* scratch for the call */
} tr_kcall;

typedef struct tr_aux {
  int64_t k, k_prev;  /* ONEHOT/SCATTER: element; SCATTER: the chain's
                         previous element, -1 when the buffer is exact */
  int64_t off, n;     /* GUARD_READ: recorded values in the pool */
  int32_t shape;      /* ONEHOT: result shape; ELEM: input shape */
  uint8_t last;       /* SCATTER: the chain's last step */
  int64_t flat;       /* ELEM: row-major index */
} tr_aux;

/* A rerolled block: R iterations of K instructions that differ only in
 * their cells, run column by column (each instruction over all iterations
 * in a tight loop).  Column results are arrays of cells. */
typedef struct tr_col {
  uint16_t code, flag;
  uint8_t nopnd;     /* cell operands read: a, b, then the wide one */
  uint8_t carry;     /* an _ACC column adding its own previous result */
  uint32_t out;      /* cell of iteration 0's result (then +1 each) */
  uint32_t opnd[3];  /* operand cells at iteration 0 */
  int64_t stride[3]; /* their steps per iteration */
} tr_col;

typedef struct tr_loop {
  int64_t R;
  int K;
  tr_col *col;
} tr_loop;

/* An input unpacked into consecutive cells at the start of a replay (its
 * one-element slices then read those cells directly). */
typedef struct tr_unpack {
  int input;
  uint32_t cell; /* first cell */
  int64_t n;
} tr_unpack;

enum { B_NONE, B_CELL, B_SLOT, B_CONST };

typedef struct tr_bind {
  uint8_t kind;  /* B_* */
  uint32_t ref;  /* cell, slot or constant index */
  int32_t shape; /* outputs: the output's shape */
} tr_bind;

/* Listing annotations of recorded ops. */
enum { K_DEAD, K_LIVE, K_ALIAS, K_SCALAR, K_ELEM, K_KERNEL, K_ONEHOT,
       K_SCATTER, K_GUARD, K_FOLDED /* slice_grad folded into a scatter */ };

typedef struct tr_prog {
  tr_ins *code;
  int64_t ncode;
  double *arena;
  int64_t ncells;
  ad_tensor **slot;
  int64_t nslots;
  tr_kcall *kc;
  int64_t nkc;
  tr_aux *aux;
  int64_t naux;
  int nin, nout;
  tr_bind *in, *out;
  tr_unpack *unpack;
  int64_t nunpack;
  tr_loop *loops;
  int64_t nloops;
  /* Variables f read while traced and the values they held (both
   * retained): a replay finding another value is stale. */
  ad_var **vars;
  ad_tensor **var_values;
  int64_t nvars;
  double *scratch;   /* GUARD_READ */
  int64_t nscratch;
  /* For listings: the recording and what became of each op. */
  tr_rec *rec;
  uint8_t *op_kind;
  int32_t *out_vals;
  int64_t nops, nguards;
} tr_prog;

/* Compile the recording r (taken over, also on failure) with outputs
 * outs[0..nout) into a program; NULL with the error recorded. */
tr_prog *tr_compile(tr_rec *r, int nout, const int32_t *outs);
void tr_prog_free(tr_prog *p);

enum { RUN_OK, RUN_MISS, RUN_STALE, RUN_ERROR };

/* Replay p on in[0..nin) (shapes already checked): RUN_OK with out[j]
 * (refcount 1, not registered with a scope), RUN_MISS when a guard
 * failed, RUN_STALE when a variable f read holds another value now,
 * RUN_ERROR with the error recorded. */
int tr_prog_run(tr_prog *p, ad_tensor *const *in, ad_tensor **out);

/* The listing and the DOT graph of one program (trace_print.c). */
ad_status tr_prog_print(const tr_prog *p, FILE *f);
ad_status tr_prog_dot(const tr_prog *p, FILE *f, const char *name);

#endif /* AD_AUTODIFF_TRACE_INTERNAL_H */
