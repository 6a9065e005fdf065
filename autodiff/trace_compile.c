/* The trace compiler: dead-code elimination, aliasing of value-preserving
 * ops, unpacked inputs, in-place one-hot accumulation, superinstructions
 * and register allocation of a recording's one-element values. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "trace_internal.h"

#define GROW(arr, cap, need) \
  tr_grow((void **)&(arr), &(cap), (need), sizeof *(arr))

/* Operands of the first pass name values (virtual registers) or, with
 * this bit, fixed cells (constants, unpacked inputs). */
#define FIXED 0x80000000u
/* Inputs of at most this many elements are unpacked into cells when
 * their elements are sliced out. */
#define UNPACK_MAX ((int64_t)1 << 22)
/* The longest block a loop repeats, and the most cell operands one
 * instruction reads (a loop's columns; a kernel's extra cell arguments
 * beyond it would be ignored, so lowering never gives a kernel more). */
#define MAX_PERIOD 64
#define MAX_READS (3 * MAX_PERIOD)

/* The interpreter code of an op on one-element operands, or -1.  The
 * arithmetic is the kernel's own (src/kernels_*.c), so results agree bit
 * for bit. */
static int scalar_code(int op, const ad__attr *a) {
  switch (op) {
  case AD__OP_add: return I_ADD;
  case AD__OP_sub: return I_SUB;
  case AD__OP_mul: return I_MUL;
  case AD__OP_div: return I_DIV;
  case AD__OP_pow: return I_POW;
  case AD__OP_maximum: return I_MAXIMUM;
  case AD__OP_minimum: return I_MINIMUM;
  case AD__OP_atan2: return I_ATAN2;
  case AD__OP_mod: return I_MOD;
  case AD__OP_less: return I_LESS;
  case AD__OP_greater: return I_GREATER;
  case AD__OP_equal: return I_EQUAL;
  case AD__OP_tanh_grad: return I_TANH_GRAD;
  case AD__OP_sigmoid_grad: return I_SIGMOID_GRAD;
  case AD__OP_add_scalar: return I_ADD_SCALAR;
  case AD__OP_mul_scalar: return I_MUL_SCALAR;
  /* The kernel squares with x * x for p == 2 and divides for p == -1. */
  case AD__OP_pow_scalar:
    if (a && a->s0 == 2.0) return I_SQUARE;
    return a && a->s0 == -1.0 ? I_RECIPROCAL : I_POW_SCALAR;
  case AD__OP_neg: return I_NEG;
  case AD__OP_sqrt: return I_SQRT;
  case AD__OP_square: return I_SQUARE;
  case AD__OP_abs: return I_ABS;
  case AD__OP_sin: return I_SIN;
  case AD__OP_cos: return I_COS;
  case AD__OP_tan: return I_TAN;
  case AD__OP_asin: return I_ASIN;
  case AD__OP_acos: return I_ACOS;
  case AD__OP_atan: return I_ATAN;
  case AD__OP_sinh: return I_SINH;
  case AD__OP_cosh: return I_COSH;
  case AD__OP_relu: return I_RELU;
  case AD__OP_erf: return I_ERF;
  case AD__OP_sign: return I_SIGN;
  case AD__OP_floor: return I_FLOOR;
  case AD__OP_exp: return I_EXP;
  case AD__OP_log: return I_LOG;
  case AD__OP_log1p: return I_LOG1P;
  case AD__OP_expm1: return I_EXPM1;
  case AD__OP_tanh: return I_TANH;
  case AD__OP_sigmoid: return I_SIGMOID;
  case AD__OP_softplus: return I_SOFTPLUS;
  /* One-element reductions: sum and mean fold into 0 + (0 + x) (mean's
   * factor is 1), prod is 1 * x, logsumexp the kernel's two passes. */
  case AD__OP_sum: return I_SUM1;
  case AD__OP_mean: return I_SUM1;
  case AD__OP_prod: return I_MUL_SCALAR;
  case AD__OP_logsumexp: return I_LSE1;
  case AD__OP_scaled_mul: return I_SCALED_MUL;
  case AD__OP_clip: return I_CLIP;
  case AD__OP_where: return I_WHERE;
  default: return -1;
  }
}

/* Ops whose one-element result is their one-element input's value:
 * views, and max/min of a single element. */
static bool value_alias(int op) {
  switch (op) {
  case AD__OP_reshape: case AD__OP_transpose: case AD__OP_permute:
  case AD__OP_expand_dims: case AD__OP_squeeze: case AD__OP_broadcast_to:
  case AD__OP_slice: case AD__OP_identity: case AD__OP_max:
  case AD__OP_min: case AD__OP_concat: case AD__OP_stack:
  case AD__OP_gather:
    return true;
  default:
    return false;
  }
}

static bool is_acc(int code) {
  return code >= I_NSCALAR && code < 2 * I_NSCALAR;
}

static int base_code(int code) { return is_acc(code) ? code - I_NSCALAR : code; }

/* Instructions whose next word holds a third operand. */
static bool is_wide(int code) {
  return code == I_SCALED_MUL || code == I_CLIP || code == I_WHERE ||
         is_acc(code);
}

/* Instructions reading cell b (binary codes come first in the enum). */
static bool reads_b(int code) {
  return base_code(code) < I_NEG || code == I_SCALED_MUL || code == I_CLIP ||
         code == I_WHERE;
}

static bool is_cell_op(int code) { return code < I_ELEM; }

typedef struct lowering {
  tr_rec *r;
  tr_prog *p;
  int32_t *rep;    /* value -> its representative */
  int32_t *uses;   /* reads of each representative */
  int64_t *last;   /* last op reading each representative's slot */
  int32_t *loc;    /* representative -> slot, -1 */
  uint32_t *fixed; /* representative -> FIXED | cell, or 0 */
  int64_t *sc_k;   /* scatter ops: the element written */
  int32_t *sc_a;   /* scatter ops: the accumulated value */
  int32_t *sc_g;   /* scatter ops: the added one-element value */
  uint8_t *sc_nonlast;
  uint8_t *unpacked_elem; /* op k reads an unpacked input's element */
  int64_t *unpack_of;     /* input index -> unpack record, -1 */
  uint32_t *const_cell;   /* constant index -> FIXED | cell, 0 */
  ad__idmap cell_of_bits; /* attribute constants' cells */
  int32_t *free_slots;
  int64_t nfree_slots, free_slots_cap;
  int64_t nfixed;
  int64_t code_cap, kc_cap, aux_cap, init_cap, unpack_cap;
  struct init { uint32_t cell; double v; } *init;
  int64_t ninit;
} lowering;

static const tr_shape *shape_of(const lowering *L, int32_t v) {
  return tr_val_shape(L->r, v);
}

static bool is_scalar(const lowering *L, int32_t v) {
  return shape_of(L, v)->numel == 1;
}

static int32_t in_of(const lowering *L, const tr_op *op, int i) {
  return L->rep[L->r->ins[op->in + i]];
}

/* ------------------------------------------------------------------------
 * Fixed cells and slots
 * ---------------------------------------------------------------------- */

static int32_t new_slot(lowering *L) {
  if (L->nfree_slots) return L->free_slots[--L->nfree_slots];
  if (L->p->nslots >= INT32_MAX - 1) return -1;
  return (int32_t)L->p->nslots++;
}

static bool free_slot(lowering *L, int32_t s) {
  if (!GROW(L->free_slots, L->free_slots_cap, L->nfree_slots + 1))
    return false;
  L->free_slots[L->nfree_slots++] = s;
  return true;
}

/* A fixed cell holding v for good, shared by equal bits; 0 on failure. */
static uint32_t constant_cell(lowering *L, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  intptr_t c;
  uint64_t key = bits + 1;
  if (key && ad__idmap_get(&L->cell_of_bits, key, &c))
    return FIXED | (uint32_t)c;
  if (L->nfixed >= INT32_MAX / 2 || !GROW(L->init, L->init_cap, L->ninit + 1))
    return 0;
  uint32_t cell = (uint32_t)L->nfixed++;
  L->init[L->ninit++] = (struct init){cell, v};
  if (key && ad__idmap_put(&L->cell_of_bits, key, cell) != AD_OK) return 0;
  return FIXED | cell;
}

/* The operand naming one-element value v: a fixed cell for constants and
 * unpacked elements, else the value itself; BAD_REF on failure. */
#define BAD_REF UINT32_MAX
static uint32_t ref_of(lowering *L, int32_t v) {
  const tr_val *val = &L->r->vals[v];
  if (val->kind == TV_CONST) {
    if (!L->const_cell[val->src]) {
      ad_tensor *t = L->r->consts[val->src];
      L->const_cell[val->src] = constant_cell(L, t->data[0]);
      if (!L->const_cell[val->src]) return BAD_REF;
    }
    return L->const_cell[val->src];
  }
  if (L->fixed[v]) return L->fixed[v];
  return (uint32_t)v;
}

static tr_ins *emit(lowering *L, int code, uint32_t out, uint32_t a,
                    uint32_t b) {
  if (!GROW(L->p->code, L->code_cap, L->p->ncode + 1)) return NULL;
  tr_ins *ip = &L->p->code[L->p->ncode++];
  *ip = (tr_ins){(uint16_t)code, 0, out, a, b};
  return ip;
}

static tr_aux *new_aux(lowering *L, int64_t *index) {
  if (!GROW(L->p->aux, L->aux_cap, L->p->naux + 1)) return NULL;
  *index = L->p->naux;
  tr_aux *x = &L->p->aux[L->p->naux++];
  memset(x, 0, sizeof *x);
  x->k_prev = -1;
  return x;
}

/* ------------------------------------------------------------------------
 * Lowering one op onto virtual registers
 * ---------------------------------------------------------------------- */

/* Slots whose last use is op k (each once). */
static int dead_slots(lowering *L, const tr_op *op, int64_t k,
                      int32_t *vals_out, int max) {
  int n = 0;
  for (int i = 0; i < op->nin && n < max; i++) {
    int32_t v = in_of(L, op, i);
    bool seen = false;
    for (int j = 0; j < i; j++) seen |= in_of(L, op, j) == v;
    if (seen || L->last[v] != k || L->loc[v] < 0 || is_scalar(L, v) ||
        L->r->vals[v].kind == TV_CONST)
      continue;
    vals_out[n++] = v;
  }
  return n;
}

static bool release_slot_after(lowering *L, int32_t v) {
  if (!emit(L, I_RELEASE, 0, (uint32_t)L->loc[v], 0)) return false;
  return free_slot(L, L->loc[v]);
}

static bool lower_scalar(lowering *L, const tr_op *op) {
  const ad__attr *a = op->attr >= 0 ? L->r->attrs[op->attr] : NULL;
  int code = scalar_code(op->code, a);
  uint32_t c[3] = {0, 0, 0};
  for (int i = 0; i < op->nin && i < 3; i++)
    if ((c[i] = ref_of(L, in_of(L, op, i))) == BAD_REF) return false;
  uint32_t extra = 0;
  switch (code) {
  case I_ADD_SCALAR: case I_MUL_SCALAR: case I_POW_SCALAR:
    c[1] = constant_cell(L, op->code == AD__OP_prod ? 1.0 : a->s0);
    if (!c[1]) return false;
    break;
  case I_SCALED_MUL:
    if (!(extra = constant_cell(L, a->s0))) return false;
    break;
  case I_CLIP:
    c[1] = constant_cell(L, a->s0);
    extra = constant_cell(L, a->s1);
    if (!c[1] || !extra) return false;
    break;
  case I_WHERE:
    extra = c[2];
    break;
  default:
    break;
  }
  if (!emit(L, code, (uint32_t)op->out, c[0], c[1])) return false;
  if (is_wide(code) && !emit(L, I_EXT, 0, extra, 0)) return false;
  return true;
}

static int64_t elem_index(lowering *L, const tr_op *op) {
  const tr_shape *s = shape_of(L, in_of(L, op, 0));
  const ad__attr *a = L->r->attrs[op->attr];
  int ax = a->axis < 0 ? a->axis + s->ndim : a->axis;
  int64_t start = a->start, stop = a->stop, count;
  ad__slice_bounds("ad_slice", s->dims[ax], &start, &stop, a->step, &count);
  int64_t stride = 1;
  for (int d = s->ndim - 1; d > ax; d--) stride *= s->dims[d];
  return start * stride;
}

static bool lower_elem(lowering *L, const tr_op *op, int64_t k) {
  int32_t x = in_of(L, op, 0);
  if (L->unpacked_elem[k]) {
    const tr_unpack *u = &L->p->unpack[L->unpack_of[L->r->vals[x].src]];
    L->fixed[op->out] = FIXED | (uint32_t)(u->cell + elem_index(L, op));
    return true;
  }
  int64_t ai;
  tr_aux *x_aux = new_aux(L, &ai);
  if (!x_aux) return false;
  x_aux->flat = elem_index(L, op);
  x_aux->shape = L->r->vals[x].shape;
  int32_t dead[1];
  int nd = dead_slots(L, op, k, dead, 1);
  if (!emit(L, I_ELEM, (uint32_t)op->out, (uint32_t)L->loc[x], (uint32_t)ai))
    return false;
  return nd == 0 || release_slot_after(L, dead[0]);
}

static bool lower_kernel(lowering *L, const tr_op *op, int64_t k) {
  if (!GROW(L->p->kc, L->kc_cap, L->p->nkc + 1)) return false;
  tr_kcall *kc = &L->p->kc[L->p->nkc];
  memset(kc, 0, sizeof *kc);
  kc->arg = calloc((size_t)op->nin + 1, sizeof *kc->arg);
  kc->args = calloc((size_t)op->nin + 1, sizeof *kc->args);
  if (!kc->arg || !kc->args) {
    free(kc->arg);
    free(kc->args);
    return false;
  }
  L->p->nkc++;
  kc->op = op->code;
  kc->nin = op->nin;
  kc->attr = op->attr >= 0 ? L->r->attrs[op->attr] : NULL;
  for (int i = 0; i < op->nin; i++) {
    int32_t raw = L->r->ins[op->in + i], v = L->rep[raw];
    tr_karg *g = &kc->arg[i];
    const tr_val *val = &L->r->vals[v];
    g->shape = L->r->vals[raw].shape;
    if (val->kind == TV_CONST) {
      g->kind = KA_CONST;
      g->t = L->r->consts[val->src];
    } else if (is_scalar(L, v)) {
      g->kind = KA_CELL;
      if ((g->ref = ref_of(L, v)) == BAD_REF) return false;
    } else {
      g->kind = KA_SLOT;
      g->ref = (uint32_t)L->loc[v];
    }
  }
  int32_t dead[64];
  int nd = dead_slots(L, op, k, dead, 64);
  for (int d = 0; d < nd; d++)
    for (int i = 0; i < op->nin; i++)
      if (kc->arg[i].kind == KA_SLOT &&
          kc->arg[i].ref == (uint32_t)L->loc[dead[d]]) {
        kc->arg[i].release = 1;
        break;
      }
  bool scalar_out = is_scalar(L, op->out);
  kc->out_scalar = scalar_out;
  if (scalar_out) {
    kc->out = (uint32_t)op->out;
  } else {
    int32_t s = new_slot(L);
    if (s < 0) return false;
    kc->out = (uint32_t)s;
    L->loc[op->out] = s;
  }
  for (int i = 0; i < op->nin; i++)
    if (kc->arg[i].release && !free_slot(L, (int32_t)kc->arg[i].ref))
      return false;
  return emit(L, I_KERNEL, 0, (uint32_t)(L->p->nkc - 1), 0) != NULL;
}

/* slice_grad of one element: zeros with the element placed at this
 * row-major index (the target's other axes have size 1). */
static int64_t onehot_index(lowering *L, const tr_op *op) {
  const ad__attr *a = L->r->attrs[op->attr];
  int ax = a->axis < 0 ? a->axis + a->ndim : a->axis;
  int64_t stride = 1;
  for (int d = a->ndim - 1; d > ax; d--) stride *= a->shape[d];
  return a->start * stride;
}

static bool lower_onehot(lowering *L, const tr_op *op) {
  int64_t ai;
  tr_aux *x = new_aux(L, &ai);
  if (!x) return false;
  x->k = onehot_index(L, op);
  x->shape = L->r->vals[op->out].shape;
  uint32_t g = ref_of(L, in_of(L, op, 0));
  int32_t out = new_slot(L);
  if (g == BAD_REF || out < 0) return false;
  L->loc[op->out] = out;
  return emit(L, I_ONEHOT, (uint32_t)out, (uint32_t)ai, g) != NULL;
}

static bool lower_scatter(lowering *L, const tr_op *op, int64_t k) {
  int64_t ai;
  tr_aux *x = new_aux(L, &ai);
  if (!x) return false;
  int32_t acc = L->sc_a[k];
  x->k = L->sc_k[k];
  x->last = !L->sc_nonlast[k];
  const tr_val *av = &L->r->vals[acc];
  if (av->kind == TV_OP && L->sc_a[av->src] >= 0)
    x->k_prev = L->sc_k[av->src];
  uint32_t g = ref_of(L, L->sc_g[k]);
  if (g == BAD_REF) return false;
  /* The accumulator's slot passes to the result. */
  L->loc[op->out] = L->loc[acc];
  return emit(L, I_SCATTER, (uint32_t)ai, (uint32_t)L->loc[acc], g) != NULL;
}

static bool lower_guard(lowering *L, const tr_op *op, int64_t k) {
  int32_t v = in_of(L, op, 0);
  if (op->code == TR_GUARD_TRUTH) {
    uint32_t c = ref_of(L, v);
    tr_ins *ip = c == BAD_REF ? NULL : emit(L, I_GUARD_TRUTH, 0, c, 0);
    if (!ip) return false;
    ip->flag = (uint16_t)(op->attr != 0);
    return true;
  }
  if (is_scalar(L, v)) {
    uint32_t c = ref_of(L, v), e = constant_cell(L, L->r->dpool[op->attr]);
    if (c == BAD_REF || !e) return false;
    return emit(L, I_GUARD_BITS, 0, c, e) != NULL;
  }
  int64_t ai;
  tr_aux *x = new_aux(L, &ai);
  if (!x) return false;
  x->off = op->attr;
  x->n = shape_of(L, v)->numel;
  if (x->n > L->p->nscratch) L->p->nscratch = x->n;
  int32_t dead[1];
  int nd = dead_slots(L, op, k, dead, 1);
  if (!emit(L, I_GUARD_READ, 0, (uint32_t)L->loc[v], (uint32_t)ai))
    return false;
  return nd == 0 || release_slot_after(L, dead[0]);
}

/* ------------------------------------------------------------------------
 * Superinstructions.  A scalar instruction x whose result only y reads is
 * folded into y: the fused code computes x's rounding and then y's, in
 * the order the pair would.  Values are immutable (virtual registers), so
 * moving x down to y is safe.
 * ---------------------------------------------------------------------- */

#define DELETED 0xffffu

static void fuse(lowering *L) {
  tr_prog *p = L->p;
  int64_t nv = L->r->nvals, n = p->ncode;
  int64_t *def = malloc(((size_t)nv + 1) * sizeof *def);
  uint32_t *acc = malloc(((size_t)n + 1) * sizeof *acc);
  tr_ins *out = malloc(((size_t)n + 1) * sizeof *out);
  if (!def || !acc || !out) { /* an optimisation only */
    free(def);
    free(acc);
    free(out);
    return;
  }
  for (int64_t v = 0; v < nv; v++) def[v] = -1;
  tr_ins *c = p->code;
  for (int64_t i = 0; i < n; i++) {
    tr_ins *y = &c[i];
    acc[i] = BAD_REF;
    if (is_wide(y->code)) {
      acc[++i] = BAD_REF;
      continue;
    }
    if (y->code >= I_NSCALAR) continue;
    /* A unary producer folded into its consumer. */
    for (int side = 0; side < 2; side++) {
      uint32_t opnd = side ? y->b : y->a;
      if (side && !reads_b(y->code)) break;
      if (opnd & FIXED || L->uses[opnd] != 1 || def[opnd] < 0) continue;
      tr_ins *x = &c[def[opnd]];
      tr_ins f = *y;
      int fused = -1, code = y->code;
      uint32_t other = side ? y->a : y->b;
      if (x->code == I_SQUARE && code == I_MUL_SCALAR && !side) {
        fused = I_SQUARE_MUL_SCALAR;
        f.a = x->a;
      } else if (x->code == I_NEG && code == I_ADD_SCALAR && !side) {
        fused = I_NEG_ADD_SCALAR;
        f.a = x->a;
      } else if (x->code == I_SUB && code == I_SQUARE) {
        fused = I_SUB_SQUARE;
        f.a = x->a;
        f.b = x->b;
      } else if (x->code == I_SQUARE && code == I_ADD) {
        fused = I_SQUARE_ADD; /* addition commutes exactly */
        f.a = x->a;
        f.b = other;
      } else if (x->code == I_SQUARE && code == I_SUB && side) {
        fused = I_SUB_SQUARED;
        f.b = x->a;
      }
      if (fused < 0) continue;
      f.code = (uint16_t)fused;
      *y = f;
      x->code = DELETED;
      def[opnd] = -1;
      break;
    }
    /* An add absorbed by the one-word producer of one of its operands. */
    for (int side = 0; y->code == I_ADD && side < 2; side++) {
      uint32_t opnd = side ? y->b : y->a, other = side ? y->a : y->b;
      if (opnd & FIXED || L->uses[opnd] != 1 || def[opnd] < 0) continue;
      tr_ins *x = &c[def[opnd]];
      if (x->code >= I_NSCALAR) continue;
      acc[i] = other;
      *y = (tr_ins){(uint16_t)I_ACC(x->code), x->flag, y->out, x->a, x->b};
      x->code = DELETED;
      def[opnd] = -1;
    }
    if (y->code < I_NSCALAR) def[y->out] = i;
  }
  int64_t w = 0;
  for (int64_t i = 0; i < n; i++) {
    if (c[i].code == DELETED) continue;
    out[w++] = c[i];
    if (acc[i] != BAD_REF) out[w++] = (tr_ins){I_EXT, 0, 0, acc[i], 0};
  }
  free(p->code);
  p->code = out;
  p->ncode = w;
  L->code_cap = n + 1;
  free(def);
  free(acc);
}

/* Running sums: an _ACC instruction adding the previous _ACC's result
 * takes it from the register, and a result read only that way is not
 * stored.  No other instruction touches the register. */
static void accumulate_in_register(lowering *L) {
  tr_ins *out = L->p->code;
  int64_t w = L->p->ncode;
  uint32_t prev = BAD_REF;
  int64_t prev_at = -1;
  for (int64_t i = 0; i < w; i++) {
    tr_ins *ip = &out[i];
    if (!is_acc(ip->code)) {
      if (is_wide(ip->code)) i++;
      continue;
    }
    if (out[i + 1].a == prev && !(prev & FIXED)) {
      ip->flag |= F_CREG;
      if (L->uses[prev] == 1) out[prev_at].flag |= F_NOSTORE;
    }
    prev = ip->out;
    prev_at = i;
    i++;
  }
}

/* ------------------------------------------------------------------------
 * Rerolling.  A C loop over one-element values traces into R repetitions
 * of the same K instructions on other cells.  Such a run becomes one
 * I_LOOP that executes column by column (instruction k for every
 * iteration, then k + 1), each column a tight loop over cell arrays.
 * That order is valid when every value read comes from an earlier column
 * or from an earlier iteration of the same column (a running sum); values
 * from before the run (initial values) are copied in front of the arrays.
 * ---------------------------------------------------------------------- */

#define MIN_REPEATS 4
static int cell_refs(tr_prog *p, int64_t i, uint32_t **rd, uint32_t **wr);
static uint64_t mix(uint64_t h, uint64_t x) {
  return (h ^ (x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2))) *
         0xff51afd7ed558ccdull;
}

/* Cell operands an instruction reads (a, b, the wide one). */
static int operands(tr_ins *c, int64_t w, uint32_t **o) {
  int n = 0, code = c[w].code;
  o[n++] = &c[w].a;
  if (reads_b(code)) o[n++] = &c[w].b;
  if (is_wide(code)) o[n++] = &c[w + 1].a;
  return n;
}

typedef struct run {
  int64_t K, R; /* period and repetitions */
  /* per column and operand: OP_FIXED (step), OP_SHARED (one value made
   * before the run), OP_REL (made dist instructions earlier) */
  uint8_t kind[MAX_PERIOD][3];
  int64_t step[MAX_PERIOD][3];
} run;

enum { OP_FIXED, OP_SHARED, OP_REL };

/* Check iteration r of a candidate run against the patterns set from its
 * first two iterations. */
static bool iteration_fits(tr_ins *c, const int64_t *start,
                           const int64_t *def, int64_t q, const run *rn,
                           int64_t r) {
  for (int64_t k = 0; k < rn->K; k++) {
    uint32_t *o0[3], *or_[3];
    int no = operands(c, start[q + k], o0);
    operands(c, start[q + r * rn->K + k], or_);
    for (int j = 0; j < no; j++) {
      uint32_t v0 = *o0[j], vr = *or_[j];
      switch (rn->kind[k][j]) {
      case OP_FIXED:
        if ((int64_t)(vr & ~FIXED) - (int64_t)(v0 & ~FIXED) !=
            r * rn->step[k][j])
          return false;
        break;
      case OP_SHARED:
        if (vr != v0) return false;
        break;
      default:
        if (def[vr] < 0 || q + r * rn->K + k - def[vr] != rn->step[k][j])
          return false;
        break;
      }
    }
  }
  return true;
}

/* The longest run of repetitions starting at instruction q (R == 0 when
 * none is worth it). */
static run find_run(tr_ins *c, const int64_t *start, const uint64_t *h,
                    const int64_t *def, int64_t n, int64_t q) {
  run best, rn;
  best.R = best.K = 0;
  if (h[q] >> 63) return best;
  for (int64_t K = 1; K <= MAX_PERIOD && q + 2 * K <= n; K++) {
    if (h[q] != h[q + K]) continue;
    int64_t R = 1;
    while (q + (R + 1) * K <= n) {
      bool same = true;
      for (int64_t k = 0; k < K && same; k++)
        same = h[q + k] == h[q + R * K + k];
      if (!same) break;
      R++;
    }
    if (R < MIN_REPEATS || R * K <= best.R * best.K) continue;
    /* Operand patterns from the first two iterations. */
    rn.K = K;
    bool ok = true;
    for (int64_t k = 0; k < K && ok; k++) {
      uint32_t *o0[3], *o1[3];
      int no = operands(c, start[q + k], o0);
      operands(c, start[q + K + k], o1);
      for (int j = 0; j < no; j++) {
        uint32_t v0 = *o0[j], v1 = *o1[j];
        if (v0 & FIXED) {
          rn.kind[k][j] = OP_FIXED;
          rn.step[k][j] = (int64_t)(v1 & ~FIXED) - (int64_t)(v0 & ~FIXED);
        } else if (v0 == v1) {
          rn.kind[k][j] = OP_SHARED; /* made before the run */
          ok &= def[v0] < q;
        } else {
          rn.kind[k][j] = OP_REL;
          rn.step[k][j] = q + K + k - def[v1];
          ok &= def[v1] >= 0;
        }
      }
    }
    if (!ok) continue;
    int64_t fit = 0;
    while (fit < R && iteration_fits(c, start, def, q, &rn, fit)) fit++;
    rn.R = fit;
    if (fit >= MIN_REPEATS && fit * K > best.R * best.K) best = rn;
  }
  return best;
}

typedef struct words {
  tr_ins *v;
  int64_t n, cap;
} words;

static bool put(words *o, tr_ins x) {
  if (!GROW(o->v, o->cap, o->n + 1)) return false;
  o->v[o->n++] = x;
  return true;
}

static bool reroll(lowering *L) {
  tr_prog *p = L->p;
  tr_ins *c = p->code;
  int64_t nw = p->ncode, nv = L->r->nvals;
  int64_t *start = malloc(((size_t)nw + 1) * sizeof *start);
  int64_t *def = malloc(((size_t)nv + 1) * sizeof *def);
  uint64_t *h = malloc(((size_t)nw + 1) * sizeof *h);
  uint32_t *fixed_of = calloc((size_t)nv + 1, sizeof *fixed_of);
  words o = {0};
  bool ok = start && def && h && fixed_of;
  int64_t n = 0, loops_cap = p->nloops;
  if (!ok) goto done;
  for (int64_t i = 0; i < nv; i++) def[i] = -1;
  for (int64_t i = 0; i < nw; i++) {
    start[n] = i;
    int code = c[i].code;
    if (is_cell_op(code) || code == I_ELEM) def[c[i].out] = n;
    if (code == I_KERNEL && p->kc[c[i].a].out_scalar)
      def[p->kc[c[i].a].out] = n;
    if (is_wide(code)) i++;
    n++;
  }
  /* Hashes: equal for instructions that differ only in their cells. */
  for (int64_t q = 0; q < n; q++) {
    tr_ins *ip = &c[start[q]];
    if (!is_cell_op(ip->code)) {
      h[q] = (uint64_t)q | (1ull << 63);
      continue;
    }
    uint32_t *op[3];
    int no = operands(c, start[q], op);
    uint64_t x = mix(ip->code, ip->flag);
    for (int j = 0; j < no; j++) x = mix(x, *op[j] & FIXED ? 1 : 2);
    h[q] = x & ~(1ull << 63);
  }
  for (int64_t q = 0; q < n && ok;) {
    run rn = find_run(c, start, h, def, n, q);
    int64_t K = rn.K, R = rn.R;
    /* Column order must respect every dependence. */
    bool valid = R > 0;
    int64_t prepad[MAX_PERIOD] = {0};
    for (int64_t k = 0; k < K && valid; k++) {
      uint32_t *op[3];
      int no = operands(c, start[q + k], op);
      for (int j = 0; j < no; j++) {
        if (rn.kind[k][j] != OP_REL) continue;
        int64_t kk = k - rn.step[k][j];
        int64_t col = ((kk % K) + K) % K, lag = (col - kk) / K;
        if (col > k || (col == k && lag == 0))
          valid = false;
        else if (lag > prepad[col])
          prepad[col] = lag;
      }
    }
    if (!valid) {
      /* Copy the instruction (or the whole run, left as it is). */
      int64_t upto = R > 0 ? q + K * R : q + 1;
      for (; q < upto && ok; q++) {
        ok = put(&o, c[start[q]]);
        if (ok && is_wide(c[start[q]].code)) ok = put(&o, c[start[q] + 1]);
      }
      continue;
    }
    if (!GROW(p->loops, loops_cap, p->nloops + 1)) {
      ok = false;
      break;
    }
    tr_loop *lp = &p->loops[p->nloops];
    lp->R = R;
    lp->K = (int)K;
    lp->col = calloc((size_t)K, sizeof *lp->col);
    if (!lp->col) {
      ok = false;
      break;
    }
    p->nloops++;
    /* Each column's results: an array of R cells, after the initial values
     * its readers need in front. */
    uint32_t base[MAX_PERIOD];
    for (int64_t k = 0; k < K; k++) {
      base[k] = (uint32_t)(L->nfixed + prepad[k]);
      L->nfixed += prepad[k] + R;
      for (int64_t r = 0; r < R; r++)
        fixed_of[c[start[q + r * K + k]].out] =
            FIXED | (base[k] + (uint32_t)r);
    }
    if (L->nfixed >= INT32_MAX / 2) {
      ok = false;
      break;
    }
    int64_t copies = 0;
    for (int64_t k = 0; k < K && ok; k++) {
      tr_col *col = &lp->col[k];
      uint32_t *op[3];
      col->code = c[start[q + k]].code;
      col->flag = c[start[q + k]].flag;
      col->nopnd = (uint8_t)operands(c, start[q + k], op);
      col->out = base[k];
      for (int j = 0; j < col->nopnd && ok; j++) {
        uint32_t v = *op[j];
        if (rn.kind[k][j] == OP_FIXED) {
          col->opnd[j] = v;
          col->stride[j] = rn.step[k][j];
          continue;
        }
        if (rn.kind[k][j] == OP_SHARED) {
          col->opnd[j] = v; /* one value for every iteration */
          col->stride[j] = 0;
          continue;
        }
        int64_t kk = k - rn.step[k][j];
        int64_t cc = ((kk % K) + K) % K, lag = (cc - kk) / K;
        col->opnd[j] = FIXED | (base[cc] - (uint32_t)lag);
        col->stride[j] = 1;
        if (cc == k && lag == 1 && is_acc(col->code) &&
            j == col->nopnd - 1)
          col->carry = 1;
        /* Values from before the run, copied in front of the array. */
        for (int64_t r = 0; r < lag && ok; r++) {
          uint32_t *opr[3];
          operands(c, start[q + r * K + k], opr);
          uint32_t cell = base[cc] - (uint32_t)lag + (uint32_t)r;
          bool have = false;
          for (int64_t t = o.n - copies; t < o.n; t++)
            have |= o.v[t].out == cell;
          if (!have) {
            ok = put(&o, (tr_ins){I_COPY, 0, cell, *opr[j], 0});
            copies++;
          }
        }
      }
    }
    if (ok) ok = put(&o, (tr_ins){I_LOOP, 0, 0, (uint32_t)(p->nloops - 1), 0});
    q += K * R;
  }
  if (ok) {
    free(p->code);
    p->code = o.v;
    p->ncode = o.n;
    L->code_cap = o.cap;
    o.v = NULL;
    /* Later reads of values computed in a loop name their array cells. */
    uint32_t **rd = malloc((MAX_READS + 1) * sizeof *rd), *wr;
    ok = rd != NULL;
    for (int64_t i = 0; ok && i < p->ncode; i++) {
      int nr = cell_refs(p, i, rd, &wr);
      for (int j = 0; j < nr; j++)
        if (!(*rd[j] & FIXED) && fixed_of[*rd[j]]) *rd[j] = fixed_of[*rd[j]];
      if (is_wide(p->code[i].code)) i++;
    }
    for (int j = 0; ok && j < p->nout; j++)
      if (p->out[j].kind == B_CELL && !(p->out[j].ref & FIXED) &&
          fixed_of[p->out[j].ref])
        p->out[j].ref = fixed_of[p->out[j].ref];
    free(rd);
  }
done:
  free(o.v);
  free(start);
  free(def);
  free(h);
  free(fixed_of);
  return ok;
}

/* ------------------------------------------------------------------------
 * Register allocation: values to cells, by last read.
 * ---------------------------------------------------------------------- */

/* Pointers to the cell operands instruction i reads and writes; returns
 * the number of reads and sets *wr (NULL when it writes none). */
static int cell_refs(tr_prog *p, int64_t i, uint32_t **rd, uint32_t **wr) {
  tr_ins *ip = &p->code[i];
  int n = 0;
  *wr = NULL;
  int code = ip->code;
  if (is_cell_op(code)) {
    rd[n++] = &ip->a;
    if (reads_b(code)) rd[n++] = &ip->b;
    if (is_wide(code) && !(is_acc(code) && ip->flag & F_CREG))
      rd[n++] = &p->code[i + 1].a;
    *wr = &ip->out;
    return n;
  }
  switch (code) {
  case I_ELEM: *wr = &ip->out; break;
  case I_KERNEL: {
    tr_kcall *kc = &p->kc[ip->a];
    for (int j = 0; j < kc->nin && n < MAX_READS; j++)
      if (kc->arg[j].kind == KA_CELL) rd[n++] = &kc->arg[j].ref;
    if (kc->out_scalar) *wr = &kc->out;
    break;
  }
  case I_ONEHOT: case I_SCATTER: rd[n++] = &ip->b; break;
  case I_GUARD_BITS: rd[n++] = &ip->a; rd[n++] = &ip->b; break;
  case I_GUARD_TRUTH: rd[n++] = &ip->a; break;
  case I_COPY: rd[n++] = &ip->a; break;
  case I_LOOP: {
    tr_loop *lp = &p->loops[ip->a];
    for (int k = 0; k < lp->K; k++)
      for (int j = 0; j < lp->col[k].nopnd; j++)
        if (n < MAX_READS) rd[n++] = &lp->col[k].opnd[j];
    break;
  }
  default: break;
  }
  return n;
}

static bool allocate_cells(lowering *L) {
  tr_prog *p = L->p;
  int64_t nv = L->r->nvals;
  int64_t *last = malloc(((size_t)nv + 1) * sizeof *last);
  uint32_t *cell = malloc(((size_t)nv + 1) * sizeof *cell);
  uint32_t *freel = malloc(((size_t)nv + 1) * sizeof *freel);
  uint32_t **rd = malloc((MAX_READS + 1) * sizeof *rd);
  if (!last || !cell || !freel || !rd) {
    free(last);
    free(cell);
    free(freel);
    free(rd);
    return false;
  }
  for (int64_t v = 0; v < nv; v++) last[v] = -1;
  uint32_t *wr;
  for (int64_t i = 0; i < p->ncode; i++) {
    int n = cell_refs(p, i, rd, &wr);
    for (int j = 0; j < n; j++)
      if (!(*rd[j] & FIXED)) last[*rd[j]] = i;
    if (is_wide(p->code[i].code)) i++;
  }
  for (int j = 0; j < p->nout; j++)
    if (p->out[j].kind == B_CELL && !(p->out[j].ref & FIXED))
      last[p->out[j].ref] = INT64_MAX;
  int64_t nfree = 0, ncells = L->nfixed;
  bool ok = true;
#define TAKE_CELL() (nfree ? freel[--nfree] : (uint32_t)ncells++)
  for (int i = 0; i < p->nin; i++)
    if (p->in[i].kind == B_CELL) {
      uint32_t v = p->in[i].ref;
      cell[v] = TAKE_CELL();
      p->in[i].ref = cell[v];
      if (last[v] < 0) freel[nfree++] = cell[v];
    }
  for (int64_t i = 0; i < p->ncode && ok; i++) {
    int n = cell_refs(p, i, rd, &wr);
    uint32_t freed[MAX_READS];
    int nf = 0;
    for (int j = 0; j < n; j++) {
      uint32_t r = *rd[j];
      if (r & FIXED) {
        *rd[j] = r & ~FIXED;
        continue;
      }
      *rd[j] = cell[r];
      if (last[r] == i) {
        bool dup = false;
        for (int f = 0; f < nf; f++) dup |= freed[f] == r;
        if (!dup && nf < MAX_READS) freed[nf++] = r;
      }
    }
    for (int f = 0; f < nf; f++) freel[nfree++] = cell[freed[f]];
    if (wr) {
      uint32_t v = *wr;
      cell[v] = TAKE_CELL();
      *wr = cell[v];
      if (last[v] < 0) freel[nfree++] = cell[v];
    }
    if (ncells >= INT32_MAX / 2) ok = false;
    if (is_wide(p->code[i].code)) i++;
  }
#undef TAKE_CELL
  for (int j = 0; j < p->nout; j++)
    if (p->out[j].kind == B_CELL)
      p->out[j].ref = p->out[j].ref & FIXED ? p->out[j].ref & ~FIXED
                                            : cell[p->out[j].ref];
  p->ncells = ncells;
  free(last);
  free(cell);
  free(freel);
  free(rd);
  return ok;
}

/* ------------------------------------------------------------------------
 * The compiler
 * ---------------------------------------------------------------------- */

static void free_lowering(lowering *L) {
  free(L->rep);
  free(L->uses);
  free(L->last);
  free(L->loc);
  free(L->fixed);
  free(L->sc_k);
  free(L->sc_a);
  free(L->sc_g);
  free(L->sc_nonlast);
  free(L->unpacked_elem);
  free(L->unpack_of);
  free(L->const_cell);
  free(L->free_slots);
  free(L->init);
  ad__idmap_free(&L->cell_of_bits);
}

void tr_prog_free(tr_prog *p) {
  if (!p) return;
  for (int64_t i = 0; i < p->nslots; i++) ad_release(p->slot ? p->slot[i] : NULL);
  for (int64_t i = 0; i < p->nkc; i++) {
    for (int j = 0; j < p->kc[i].nin; j++)
      if (p->kc[i].arg[j].kind == KA_CELL) ad_release(p->kc[i].arg[j].t);
    free(p->kc[i].arg);
    free(p->kc[i].args);
  }
  for (int64_t i = 0; i < p->nvars; i++) {
    ad_release(p->var_values[i]);
    ad_var_free(p->vars[i]);
  }
  free(p->vars);
  free(p->var_values);
  free(p->kc);
  free(p->code);
  free(p->arena);
  free(p->slot);
  free(p->aux);
  free(p->in);
  free(p->out);
  free(p->unpack);
  for (int64_t i = 0; i < p->nloops; i++) free(p->loops[i].col);
  free(p->loops);
  free(p->scratch);
  free(p->op_kind);
  free(p->out_vals);
  tr_rec_free(p->rec);
  free(p);
}

static tr_prog *fail(tr_prog *p, lowering *L) {
  free_lowering(L);
  tr_prog_free(p);
  ad__error(AD_ENOMEM, "ad_trace: out of memory compiling a trace");
  return NULL;
}

/* Liveness, aliases, uses, scatter chains and op kinds. */
static void analyse(lowering *L, int nout, const int32_t *outs,
                    uint8_t *live) {
  tr_rec *r = L->r;
  uint8_t *kind = L->p->op_kind;
  int64_t no = r->nops;
  for (int j = 0; j < nout; j++) live[outs[j]] = 1;
  for (int64_t k = no - 1; k >= 0; k--) {
    const tr_op *op = &r->ops[k];
    bool guard = op->code >= TR_GUARD_BITS;
    if (!guard && !live[op->out]) continue;
    kind[k] = guard ? K_GUARD : K_LIVE;
    for (int i = 0; i < op->nin; i++) live[r->ins[op->in + i]] = 1;
  }
  /* A one-element value through a view, or a tensor through identity, is
   * its input's value. */
  for (int64_t k = 0; k < no; k++) {
    const tr_op *op = &r->ops[k];
    if (kind[k] != K_LIVE) continue;
    int32_t x = in_of(L, op, 0);
    if ((value_alias(op->code) && op->nin == 1 && is_scalar(L, op->out) &&
         is_scalar(L, x)) ||
        op->code == AD__OP_identity) {
      L->rep[op->out] = x;
      kind[k] = K_ALIAS;
    }
  }
  for (int64_t k = 0; k < no; k++) {
    const tr_op *op = &r->ops[k];
    if (kind[k] != K_LIVE && kind[k] != K_GUARD) continue;
    for (int i = 0; i < op->nin; i++) L->uses[in_of(L, op, i)]++;
  }
  for (int j = 0; j < nout; j++) L->uses[L->rep[outs[j]]]++;
  /* In-place one-hot accumulation: add(acc, slice_grad(g)) with g one
   * element and both operands read only there: the backward pass of
   * element-wise slices accumulating into one gradient. */
  for (int64_t k = 0; k < no; k++) {
    const tr_op *op = &r->ops[k];
    if (kind[k] != K_LIVE || op->code != AD__OP_add) continue;
    int32_t x0 = r->ins[op->in], x1 = r->ins[op->in + 1];
    if (r->vals[x0].shape != r->vals[op->out].shape ||
        r->vals[x1].shape != r->vals[op->out].shape || is_scalar(L, op->out))
      continue;
    for (int s = 0; s < 2; s++) {
      int32_t a = L->rep[s ? x1 : x0], b = L->rep[s ? x0 : x1];
      if (a == b || r->vals[b].kind != TV_OP || r->vals[a].kind == TV_CONST)
        continue;
      int64_t bk = r->vals[b].src;
      const tr_op *bop = &r->ops[bk];
      if (bop->code != AD__OP_slice_grad || kind[bk] != K_LIVE ||
          !is_scalar(L, in_of(L, bop, 0)) || L->uses[b] != 1 ||
          L->uses[a] != 1)
        continue;
      kind[k] = K_SCATTER;
      kind[bk] = K_FOLDED;
      L->sc_a[k] = a;
      L->sc_g[k] = in_of(L, bop, 0);
      L->sc_k[k] = onehot_index(L, bop);
      break;
    }
  }
  for (int64_t k = 0; k < no; k++) {
    if (kind[k] != K_SCATTER) continue;
    const tr_val *av = &r->vals[L->sc_a[k]];
    if (av->kind == TV_OP && kind[av->src] == K_SCATTER)
      L->sc_nonlast[av->src] = 1;
  }
  for (int64_t k = 0; k < no; k++) {
    const tr_op *op = &r->ops[k];
    if (kind[k] != K_LIVE) continue;
    bool all_scalar = true;
    for (int i = 0; i < op->nin; i++)
      all_scalar &= is_scalar(L, in_of(L, op, i));
    const ad__attr *a = op->attr >= 0 ? r->attrs[op->attr] : NULL;
    if (is_scalar(L, op->out)) {
      if (all_scalar && scalar_code(op->code, a) >= 0) {
        kind[k] = K_SCALAR;
      } else if (op->code == AD__OP_slice && !is_scalar(L, in_of(L, op, 0))) {
        kind[k] = K_ELEM;
        int32_t x = in_of(L, op, 0);
        if (r->vals[x].kind == TV_INPUT && shape_of(L, x)->numel <= UNPACK_MAX)
          L->unpacked_elem[k] = 1;
      } else {
        kind[k] = K_KERNEL;
      }
    } else if (op->code == AD__OP_slice_grad &&
               is_scalar(L, in_of(L, op, 0))) {
      kind[k] = K_ONEHOT;
    } else {
      kind[k] = K_KERNEL;
    }
  }
  /* Last op reading each tensor's slot. */
  for (int64_t k = 0; k < no; k++) {
    const tr_op *op = &r->ops[k];
    if (kind[k] == K_SCATTER) {
      L->last[L->sc_a[k]] = k;
    } else if (kind[k] != K_DEAD && kind[k] != K_ALIAS &&
               kind[k] != K_FOLDED && !L->unpacked_elem[k]) {
      for (int i = 0; i < op->nin; i++) L->last[in_of(L, op, i)] = k;
    }
  }
  for (int j = 0; j < nout; j++) L->last[L->rep[outs[j]]] = INT64_MAX;
}

tr_prog *tr_compile(tr_rec *r, int nout, const int32_t *outs) {
  lowering L0 = {0}, *L = &L0;
  tr_prog *p = calloc(1, sizeof *p);
  if (!p) {
    tr_rec_free(r);
    ad__error(AD_ENOMEM, "ad_trace: out of memory compiling a trace");
    return NULL;
  }
  p->rec = r;
  p->nin = r->nin;
  p->nout = nout;
  L->r = r;
  L->p = p;
  int64_t nv = r->nvals, no = r->nops;
  size_t nv1 = (size_t)nv + 1, no1 = (size_t)no + 1;
  p->op_kind = calloc(no1, 1);
  p->out_vals = malloc(((size_t)nout + 1) * sizeof *p->out_vals);
  p->in = calloc((size_t)p->nin + 1, sizeof *p->in);
  p->out = calloc((size_t)nout + 1, sizeof *p->out);
  L->rep = malloc(nv1 * sizeof *L->rep);
  L->uses = calloc(nv1, sizeof *L->uses);
  L->last = malloc(nv1 * sizeof *L->last);
  L->loc = malloc(nv1 * sizeof *L->loc);
  L->fixed = calloc(nv1, sizeof *L->fixed);
  L->sc_k = calloc(no1, sizeof *L->sc_k);
  L->sc_a = malloc(no1 * sizeof *L->sc_a);
  L->sc_g = calloc(no1, sizeof *L->sc_g);
  L->sc_nonlast = calloc(no1, 1);
  L->unpacked_elem = calloc(no1, 1);
  L->unpack_of = malloc(((size_t)p->nin + 1) * sizeof *L->unpack_of);
  L->const_cell = calloc((size_t)r->nconsts + 1, sizeof *L->const_cell);
  uint8_t *live = calloc(nv1, 1);
  if (!p->op_kind || !p->out_vals || !p->in || !p->out || !L->rep ||
      !L->uses || !L->last || !L->loc || !L->fixed || !L->sc_k ||
      !L->sc_a || !L->sc_g || !L->sc_nonlast || !L->unpacked_elem ||
      !L->unpack_of || !L->const_cell || !live) {
    free(live);
    return fail(p, L);
  }
  memcpy(p->out_vals, outs, (size_t)nout * sizeof *outs);
  for (int64_t v = 0; v < nv; v++) {
    L->rep[v] = (int32_t)v;
    L->last[v] = -1;
    L->loc[v] = -1;
  }
  for (int64_t k = 0; k < no; k++) L->sc_a[k] = -1;
  for (int i = 0; i < p->nin; i++) L->unpack_of[i] = -1;
  analyse(L, nout, outs, live);
  free(live);

  /* Inputs: one-element ones in (virtual) cells, tensors in slots and,
   * when their elements are sliced, unpacked into fixed cells. */
  for (int64_t k = 0; k < no; k++) {
    if (!L->unpacked_elem[k]) continue;
    int32_t x = in_of(L, &r->ops[k], 0);
    int input = r->vals[x].src;
    if (L->unpack_of[input] >= 0) continue;
    if (!GROW(p->unpack, L->unpack_cap, p->nunpack + 1)) return fail(p, L);
    int64_t n = shape_of(L, x)->numel;
    p->unpack[p->nunpack] = (tr_unpack){input, (uint32_t)L->nfixed, n};
    L->unpack_of[input] = p->nunpack++;
    L->nfixed += n;
  }
  for (int64_t v = 0; v < nv; v++) {
    const tr_val *val = &r->vals[v];
    if (val->kind != TV_INPUT) continue;
    tr_bind *b = &p->in[val->src];
    if (L->last[v] < 0 && L->uses[v] == 0) continue; /* unused */
    if (is_scalar(L, (int32_t)v)) {
      b->kind = B_CELL;
      b->ref = (uint32_t)v;
    } else if (L->last[v] >= 0) {
      b->kind = B_SLOT;
      int32_t s = new_slot(L);
      if (s < 0) return fail(p, L);
      b->ref = (uint32_t)(L->loc[v] = s);
    }
  }
  /* Ops in order. */
  for (int64_t k = 0; k < no; k++) {
    const tr_op *op = &r->ops[k];
    bool ok = true;
    switch (p->op_kind[k]) {
    case K_SCALAR: ok = lower_scalar(L, op); break;
    case K_ELEM: ok = lower_elem(L, op, k); break;
    case K_KERNEL: ok = lower_kernel(L, op, k); break;
    case K_ONEHOT: ok = lower_onehot(L, op); break;
    case K_SCATTER: ok = lower_scatter(L, op, k); break;
    case K_GUARD: ok = lower_guard(L, op, k); break;
    default: break;
    }
    if (p->op_kind[k] == K_GUARD) p->nguards++;
    else if (p->op_kind[k] != K_DEAD) p->nops++;
    if (!ok) return fail(p, L);
  }
  /* Outputs. */
  for (int j = 0; j < nout; j++) {
    int32_t v = L->rep[outs[j]];
    tr_bind *b = &p->out[j];
    b->shape = r->vals[outs[j]].shape;
    if (r->vals[v].kind == TV_CONST) {
      b->kind = B_CONST;
      b->ref = (uint32_t)r->vals[v].src;
    } else if (is_scalar(L, v)) {
      b->kind = B_CELL;
      if ((b->ref = ref_of(L, v)) == BAD_REF) return fail(p, L);
    } else {
      b->kind = B_SLOT;
      b->ref = (uint32_t)L->loc[v];
    }
  }
  fuse(L);
  if (!reroll(L)) return fail(p, L);
  accumulate_in_register(L);
  if (!allocate_cells(L) || !emit(L, I_END, 0, 0, 0)) return fail(p, L);
  p->arena = calloc((size_t)p->ncells + 1, sizeof *p->arena);
  p->slot = calloc((size_t)p->nslots + 1, sizeof *p->slot);
  p->scratch = malloc(((size_t)p->nscratch + 1) * sizeof *p->scratch);
  if (!p->arena || !p->slot || !p->scratch) return fail(p, L);
  for (int64_t i = 0; i < L->ninit; i++)
    p->arena[L->init[i].cell] = L->init[i].v;
  /* The constants stay (listings, kernel arguments); everything else the
   * recording held goes now. */
  tr_rec_drop_tensors(r);
  free_lowering(L);
  return p;
}
