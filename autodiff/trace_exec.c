/* The trace interpreter: replays a compiled program over its cell arena
 * and tensor slots, calling the kernels for values of several elements. */
#include <math.h>
#include <string.h>

#include "trace_internal.h"
#include "vmath.h"
#include "scalar_ops.h"

/* Contraction into fused multiply-adds would change roundings; GCC does
 * not contract under -std=c11, clang needs to be told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Threaded dispatch needs GNU C's labels as values; other compilers get
 * a switch. */
#if defined(__GNUC__) && !defined(AD_TRACE_NO_THREADING)
#define AD_TRACE_THREADED 1
#else
#define AD_TRACE_THREADED 0
#endif

static inline double vm(void (*f)(const double *, double *, int64_t),
                        double x) {
  double y;
  f(&x, &y, 1);
  return y;
}

static inline uint64_t bits_of(double x) {
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

#define SCALAR_FORMULAS(B2, U1)                                           \
  B2(I_ADD, a + b)                                                        \
  B2(I_SUB, a - b)                                                        \
  B2(I_MUL, a * b)                                                        \
  B2(I_DIV, a / b)                                                        \
  B2(I_POW, pow(a, b))                                                    \
  B2(I_MAXIMUM, AD__MAXIMUM(a, b))                                            \
  B2(I_MINIMUM, AD__MINIMUM(a, b))                                            \
  B2(I_ATAN2, atan2(a, b))                                                \
  B2(I_MOD, ad__mod_floor(a, b))                                              \
  B2(I_LESS, a < b ? 1.0 : 0.0)                                           \
  B2(I_GREATER, a > b ? 1.0 : 0.0)                                        \
  B2(I_EQUAL, a == b ? 1.0 : 0.0)                                         \
  B2(I_TANH_GRAD, a * (1.0 - b * b))                                      \
  B2(I_SIGMOID_GRAD, a * (b - b * b))                                     \
  B2(I_ADD_SCALAR, a + b)                                                 \
  B2(I_MUL_SCALAR, a * b)                                                 \
  B2(I_POW_SCALAR, pow(a, b))                                             \
  B2(I_SQUARE_MUL_SCALAR, (a * a) * b)                                    \
  B2(I_NEG_ADD_SCALAR, (-a) + b)                                          \
  B2(I_SUB_SQUARE, (a - b) * (a - b))                                     \
  B2(I_SQUARE_ADD, (a * a) + b)                                           \
  B2(I_SUB_SQUARED, a - (b * b))                                          \
  U1(I_NEG, -x)                                                           \
  U1(I_SQRT, sqrt(x))                                                     \
  U1(I_SQUARE, x * x)                                                     \
  U1(I_RECIPROCAL, 1.0 / x)                                               \
  U1(I_ABS, fabs(x))                                                      \
  U1(I_SIN, sin(x))                                                       \
  U1(I_COS, cos(x))                                                       \
  U1(I_TAN, tan(x))                                                       \
  U1(I_ASIN, asin(x))                                                     \
  U1(I_ACOS, acos(x))                                                     \
  U1(I_ATAN, atan(x))                                                     \
  U1(I_SINH, sinh(x))                                                     \
  U1(I_COSH, cosh(x))                                                     \
  U1(I_RELU, (x > 0 || x != x) ? x : 0.0)                                 \
  U1(I_ERF, erf(x))                                                       \
  U1(I_SIGN, ad__sign(x))                                                  \
  U1(I_FLOOR, floor(x))                                                   \
  U1(I_EXP, vm(ad__vexp, x))                                              \
  U1(I_LOG, vm(ad__vlog, x))                                              \
  U1(I_LOG1P, vm(ad__vlog1p, x))                                          \
  U1(I_EXPM1, vm(ad__vexpm1, x))                                          \
  U1(I_TANH, vm(ad__vtanh, x))                                            \
  U1(I_SIGMOID, vm(ad__vsigmoid, x))                                      \
  U1(I_SOFTPLUS, vm(ad__vsoftplus, x))                                    \
  U1(I_SUM1, 0.0 + (0.0 + x))                                             \
  U1(I_LSE1, isinf(x) ? x : x + log(0.0 + (0.0 + exp(x - x))))

/* Nobody but the program holds t or its storage: it may be written. */
static inline bool sole(const ad_tensor *t) {
  return atomic_load_explicit(&t->refs, memory_order_acquire) == 1 &&
         atomic_load_explicit(&t->storage->refs, memory_order_acquire) == 1;
}

static const tr_shape *shape_at(const tr_prog *p, int32_t s) {
  return &p->rec->shapes.v[s];
}

/* A one-element tensor shaped like the argument holding x: the argument's
 * box, reused when nothing else holds it. */
static ad_tensor *box(const tr_prog *p, tr_karg *g, double x) {
  ad_tensor *b = g->t;
  if (!b || !sole(b)) {
    ad_release(b);
    const tr_shape *s = shape_at(p, g->shape);
    g->t = b = ad__alloc("ad_function_call", s->ndim, s->dims);
    if (!b) return NULL;
  }
  b->data[0] = x;
  return b;
}

static bool run_kernel(tr_prog *p, tr_kcall *kc, double *v) {
  ad_tensor **T = p->slot;
  for (int i = 0; i < kc->nin; i++) {
    tr_karg *g = &kc->arg[i];
    switch (g->kind) {
    case KA_CELL:
      if (!(kc->args[i] = box(p, g, v[g->ref]))) return false;
      break;
    case KA_SLOT: kc->args[i] = T[g->ref]; break;
    default: kc->args[i] = g->t; break;
    }
  }
  ad_tensor *res = ad__ops[kc->op].kernel(kc->nin, kc->args, kc->attr);
  if (!res) return false;
  if (kc->out_scalar) {
    v[kc->out] = res->data[0];
    ad_release(res);
  } else {
    T[kc->out] = res;
  }
  for (int i = 0; i < kc->nin; i++)
    if (kc->arg[i].release) {
      ad_release(T[kc->arg[i].ref]);
      T[kc->arg[i].ref] = NULL;
    }
  return true;
}

/* The element at row-major index flat of a strided tensor. */
static double elem_strided(const tr_prog *p, const ad_tensor *t,
                           const tr_aux *x) {
  const tr_shape *s = shape_at(p, x->shape);
  int64_t rest = x->flat, off = 0;
  for (int d = s->ndim - 1; d >= 0; d--) {
    int64_t i = s->dims[d] ? rest % s->dims[d] : 0;
    rest = s->dims[d] ? rest / s->dims[d] : 0;
    off += i * t->strides[d];
  }
  return t->data[off];
}

/* A dense copy of t that the program owns alone. */
static ad_tensor *own_copy(ad_tensor *t) {
  ad_tensor *c = ad__alloc("ad_function_call", t->ndim, t->shape);
  if (c) ad__gather_contiguous(t, c->data);
  return c;
}

/* slot[a][k] += g in place, as the eager chain of adds would compute it:
 * every add of the chain also adds 0 to the other elements, which only
 * turns -0 into +0; that is applied lazily (to an element when the chain
 * next writes it, to the rest at the chain's end). */
static bool scatter(tr_prog *p, const tr_ins *ip, const double *v) {
  const tr_aux *x = &p->aux[ip->out];
  ad_tensor *P = p->slot[ip->a];
  if (!P->contiguous || !sole(P)) {
    ad_tensor *c = own_copy(P);
    if (!c) return false;
    ad_release(P);
    p->slot[ip->a] = P = c;
  }
  double *d = P->data;
  double e = d[x->k];
  if (x->k_prev >= 0 && x->k_prev != x->k) e = e + 0.0;
  d[x->k] = e + v[ip->b];
  if (x->last) {
    double keep = d[x->k];
    for (int64_t i = 0; i < P->numel; i++) d[i] = d[i] + 0.0;
    d[x->k] = keep;
  }
  return true;
}

/* A rerolled block, column by column: each column one tight loop over
 * the iterations, with the arithmetic of its scalar code, in blocks of
 * iterations so that the columns' arrays stay in cache (every value a
 * column reads comes from an earlier column or an earlier iteration, so
 * any blocking is valid).  An _ACC column reads its added operand last; a
 * carried sum stays in a register.  Unit and zero steps get loops of
 * their own, which the compiler may vectorize: the same roundings per
 * element either way. */
#define LOOP_BLOCK 256

#if defined(__GNUC__) && !defined(__clang__)
#define VECTORIZE __attribute__((optimize("tree-vectorize")))
#else
#define VECTORIZE
#endif

#define BODY2(IA, IB, EXPR)                                               \
  for (int64_t r = 0; r < nb; r++) {                                      \
    double a = A[IA], b = B[IB];                                          \
    O[r] = (EXPR);                                                        \
  }
#define BODY2C(IA, IB, IC, EXPR)                                          \
  for (int64_t r = 0; r < nb; r++) {                                      \
    double a = A[IA], b = B[IB];                                          \
    double e_ = (EXPR);                                                   \
    O[r] = C[IC] + e_;                                                    \
  }
#define COL2(CODE, EXPR)                                                  \
  case CODE:                                                              \
    if (sa == 1 && sb == 1)                                               \
      BODY2(r, r, EXPR)                                                   \
    else if (sa == 1 && sb == 0)                                          \
      BODY2(r, 0, EXPR)                                                   \
    else if (sa == 0 && sb == 1)                                          \
      BODY2(0, r, EXPR)                                                   \
    else                                                                  \
      BODY2(r * sa, r * sb, EXPR)                                         \
    break;                                                                \
  case CODE##_ACC:                                                        \
    if (c->carry) {                                                       \
      double acc = O[-1];                                                 \
      for (int64_t r = 0; r < nb; r++) {                                  \
        double a = A[r * sa], b = B[r * sb];                              \
        acc = acc + (EXPR);                                               \
        O[r] = acc;                                                       \
      }                                                                   \
    } else if (sa == 1 && sb == 1 && sc == 1) {                           \
      BODY2C(r, r, r, EXPR)                                               \
    } else {                                                              \
      BODY2C(r * sa, r * sb, r * sc, EXPR)                                \
    }                                                                     \
    break;
#define COL1(CODE, EXPR)                                                  \
  case CODE:                                                              \
    if (sa == 1) {                                                        \
      for (int64_t r = 0; r < nb; r++) {                                  \
        double x = A[r];                                                  \
        O[r] = (EXPR);                                                    \
      }                                                                   \
    } else {                                                              \
      for (int64_t r = 0; r < nb; r++) {                                  \
        double x = A[r * sa];                                             \
        O[r] = (EXPR);                                                    \
      }                                                                   \
    }                                                                     \
    break;                                                                \
  case CODE##_ACC:                                                        \
    if (c->carry) {                                                       \
      double acc = O[-1];                                                 \
      for (int64_t r = 0; r < nb; r++) {                                  \
        double x = A[r * sa];                                             \
        acc = acc + (EXPR);                                               \
        O[r] = acc;                                                       \
      }                                                                   \
    } else {                                                              \
      for (int64_t r = 0; r < nb; r++) {                                  \
        double x = A[r * sa];                                             \
        double e_ = (EXPR);                                               \
        O[r] = C[r * sc] + e_;                                            \
      }                                                                   \
    }                                                                     \
    break;

VECTORIZE static void run_column(const tr_col *c, double *v, int64_t r0,
                                 int64_t nb) {
  const int last = c->nopnd - 1, second = c->nopnd > 1;
  const int64_t sa = c->stride[0], sb = c->stride[second],
                sc = c->stride[last];
  double *O = v + c->out + r0;
  const double *A = v + c->opnd[0] + r0 * sa;
  const double *B = v + c->opnd[second] + r0 * sb;
  const double *C = v + c->opnd[last] + r0 * sc;
  switch (c->code) {
    SCALAR_FORMULAS(COL2, COL1)
  case I_SCALED_MUL:
    for (int64_t r = 0; r < nb; r++) O[r] = C[r * sc] * A[r * sa] * B[r * sb];
    break;
  case I_CLIP:
    for (int64_t r = 0; r < nb; r++) {
      double x = A[r * sa], s = B[r * sb], h = C[r * sc];
      O[r] = x < s ? s : x > h ? h : x;
    }
    break;
  case I_WHERE:
    for (int64_t r = 0; r < nb; r++)
      O[r] = A[r * sa] != 0 ? B[r * sb] : C[r * sc];
    break;
  default:
    break;
  }
}
#undef BODY2
#undef BODY2C
#undef COL2
#undef COL1

static void run_loop(const tr_loop *lp, double *v) {
  for (int64_t r0 = 0; r0 < lp->R; r0 += LOOP_BLOCK) {
    int64_t nb = lp->R - r0 < LOOP_BLOCK ? lp->R - r0 : LOOP_BLOCK;
    for (int k = 0; k < lp->K; k++) run_column(&lp->col[k], v, r0, nb);
  }
}

static void clear_slots(tr_prog *p) {
  for (int64_t i = 0; i < p->nslots; i++) {
    ad_release(p->slot[i]);
    p->slot[i] = NULL;
  }
}

/* Labels as values are a GNU extension, used here only. */
#if AD_TRACE_THREADED
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#endif
/* Each handler keeps its own dispatch jump: GCC would otherwise merge
 * their common tails into one shared (badly predicted) jump. */
#if AD_TRACE_THREADED && !defined(__clang__)
__attribute__((optimize("no-crossjumping", "no-gcse")))
#endif
int tr_prog_run(tr_prog *p, ad_tensor *const *in, ad_tensor **out) {
  if (p->nvars) {
    bool stale = false;
    ad_scope_begin();
    for (int64_t i = 0; i < p->nvars && !stale; i++)
      stale = ad_var_value(p->vars[i]) != p->var_values[i];
    ad_scope_end();
    if (stale) return RUN_STALE;
  }
  double *restrict v = p->arena;
  ad_tensor **T = p->slot;
  for (int i = 0; i < p->nin; i++) {
    const tr_bind *b = &p->in[i];
    if (b->kind == B_CELL) v[b->ref] = in[i]->data[0];
    else if (b->kind == B_SLOT) T[b->ref] = ad_retain(in[i]);
  }
  for (int64_t i = 0; i < p->nunpack; i++) {
    const tr_unpack *u = &p->unpack[i];
    const ad_tensor *t = in[u->input];
    if (t->contiguous)
      memcpy(v + u->cell, t->data, (size_t)u->n * sizeof *v);
    else
      ad__gather_contiguous(t, v + u->cell);
  }
  const tr_ins *ip = p->code;
  double acc = 0; /* the accumulator register of _ACC chains */
#if AD_TRACE_THREADED
  /* Threaded dispatch: every handler jumps to the next one itself, which
   * predicts far better than one shared indirect jump. */
  static const void *const handler[I_CODE_COUNT] = {
#define LABEL_(c) [c] = &&L_##c,
#define LABEL_ACC_(c) [c##_ACC] = &&L_##c##_ACC,
      TR_BINARY_CODES(LABEL_) TR_UNARY_CODES(LABEL_)
      TR_BINARY_CODES(LABEL_ACC_) TR_UNARY_CODES(LABEL_ACC_)
      TR_OTHER_CODES(LABEL_)
#undef LABEL_
#undef LABEL_ACC_
  };
#define HANDLER(c) L_##c:
#define NEXT             \
  do {                   \
    ip++;                \
    goto *handler[ip->code]; \
  } while (0)
  goto *handler[ip->code];
#else
#define HANDLER(c) case c:
#define NEXT continue
  for (;; ip++)
    switch (ip->code) {
#endif
/* Each scalar code and its _ACC twin (which adds the next word's cell). */
#define B2(CODE, EXPR)                      \
  HANDLER(CODE) {                           \
    double a = v[ip->a], b = v[ip->b];      \
    v[ip->out] = (EXPR);                    \
  }                                         \
  NEXT;                                     \
  HANDLER(CODE##_ACC) {                     \
    double a = v[ip->a], b = v[ip->b];      \
    double r_ = (EXPR);                     \
    double c_ = ip->flag & F_CREG ? acc : v[ip[1].a]; \
    acc = c_ + r_;                          \
    if (!(ip->flag & F_NOSTORE)) v[ip->out] = acc; \
    ip++;                                   \
  }                                         \
  NEXT;
#define U1(CODE, EXPR)                      \
  HANDLER(CODE) {                           \
    double x = v[ip->a];                    \
    v[ip->out] = (EXPR);                    \
  }                                         \
  NEXT;                                     \
  HANDLER(CODE##_ACC) {                     \
    double x = v[ip->a];                    \
    double r_ = (EXPR);                     \
    double c_ = ip->flag & F_CREG ? acc : v[ip[1].a]; \
    acc = c_ + r_;                          \
    if (!(ip->flag & F_NOSTORE)) v[ip->out] = acc; \
    ip++;                                   \
  }                                         \
  NEXT;
      SCALAR_FORMULAS(B2, U1)
#undef B2
#undef U1
    HANDLER(I_SCALED_MUL) {
      double s = v[ip[1].a];
      v[ip->out] = s * v[ip->a] * v[ip->b];
      ip++;
    }
    NEXT;
    HANDLER(I_CLIP) {
      double x = v[ip->a], s = v[ip->b], h = v[ip[1].a];
      v[ip->out] = x < s ? s : x > h ? h : x;
      ip++;
    }
    NEXT;
    HANDLER(I_WHERE) {
      double c = v[ip->a], x = v[ip->b], y = v[ip[1].a];
      v[ip->out] = c != 0 ? x : y;
      ip++;
    }
    NEXT;
    HANDLER(I_ELEM) {
      const ad_tensor *t = T[ip->a];
      const tr_aux *x = &p->aux[ip->b];
      v[ip->out] = t->contiguous ? t->data[x->flat] : elem_strided(p, t, x);
    }
    NEXT;
    HANDLER(I_KERNEL) {
      if (!run_kernel(p, &p->kc[ip->a], v)) goto fail;
    }
    NEXT;
    HANDLER(I_ONEHOT) {
      const tr_aux *x = &p->aux[ip->a];
      const tr_shape *s = shape_at(p, x->shape);
      ad_tensor *t = ad__alloc("ad_slice_grad", s->ndim, s->dims);
      if (!t) goto fail;
      memset(t->data, 0, (size_t)t->numel * sizeof *t->data);
      t->data[x->k] = v[ip->b];
      T[ip->out] = t;
    }
    NEXT;
    HANDLER(I_SCATTER) {
      if (!scatter(p, ip, v)) goto fail;
    }
    NEXT;
    HANDLER(I_RELEASE) {
      ad_release(T[ip->a]);
      T[ip->a] = NULL;
    }
    NEXT;
    HANDLER(I_GUARD_BITS) {
      if (bits_of(v[ip->a]) != bits_of(v[ip->b])) goto miss;
    }
    NEXT;
    HANDLER(I_GUARD_TRUTH) {
      if ((v[ip->a] != 0) != (ip->flag != 0)) goto miss;
    }
    NEXT;
    HANDLER(I_GUARD_READ) {
      const tr_aux *x = &p->aux[ip->b];
      ad__gather_contiguous(T[ip->a], p->scratch);
      if (memcmp(p->scratch, p->rec->dpool + x->off,
                 (size_t)x->n * sizeof(double)) != 0)
        goto miss;
    }
    NEXT;
    HANDLER(I_LOOP) {
      run_loop(&p->loops[ip->a], v);
    }
    NEXT;
    HANDLER(I_COPY) {
      v[ip->out] = v[ip->a];
    }
    NEXT;
    HANDLER(I_EXT) NEXT; /* never reached: wide handlers skip it */
    HANDLER(I_END) goto done;
#if !AD_TRACE_THREADED
    default:
      goto done;
    }
#endif
#undef HANDLER
#undef NEXT
done:
  for (int j = 0; j < p->nout; j++) {
    const tr_bind *b = &p->out[j];
    ad_tensor *t = NULL;
    if (b->kind == B_CELL) {
      const tr_shape *s = shape_at(p, b->shape);
      t = ad__alloc("ad_function_call", s->ndim, s->dims);
      if (t) t->data[0] = v[b->ref];
    } else if (b->kind == B_SLOT) {
      t = ad_retain(T[b->ref]);
    } else {
      t = ad_retain(p->rec->consts[b->ref]);
    }
    if (!t) {
      for (int i = 0; i < j; i++) ad_release(out[i]);
      goto fail;
    }
    out[j] = t;
  }
  clear_slots(p);
  return RUN_OK;
miss:
  clear_slots(p);
  return RUN_MISS;
fail:
  clear_slots(p);
  return RUN_ERROR;
}
#if AD_TRACE_THREADED
#pragma GCC diagnostic pop
#endif
