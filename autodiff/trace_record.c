/* The trace recorder: the dispatcher's and the value reads' hooks that
 * turn one eager run into a recording of values, ops and guards. */
#include <stdlib.h>
#include <string.h>

#include "trace_internal.h"

bool tr_grow(void **p, int64_t *cap, int64_t need, size_t size) {
  if (need <= *cap) return true;
  int64_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  void *q = realloc(*p, (size_t)c * size);
  if (!q) return false;
  *p = q;
  *cap = c;
  return true;
}

#define GROW(arr, n, cap, need) \
  tr_grow((void **)&(arr), &(cap), (need), sizeof *(arr))

/* ------------------------------------------------------------------------
 * Interned shapes
 * ---------------------------------------------------------------------- */

static uint64_t shape_hash(int ndim, const int64_t *dims) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)ndim;
  for (int i = 0; i < ndim; i++) {
    h ^= (uint64_t)dims[i];
    h *= 1099511628211ull;
  }
  return h | 1u; /* idmap keys are never 0 */
}

int32_t tr_shape_intern(tr_shapes *s, int ndim, const int64_t *dims) {
  uint64_t h = shape_hash(ndim, dims);
  intptr_t first = -1;
  if (ad__idmap_get(&s->index, h, &first)) {
    for (int32_t i = (int32_t)first; i >= 0; i = s->v[i].next) {
      const tr_shape *sh = &s->v[i];
      bool same = sh->ndim == ndim;
      for (int d = 0; same && d < ndim; d++) same = sh->dims[d] == dims[d];
      if (same) return i;
    }
  }
  if (!GROW(s->v, s->n, s->cap, s->n + 1)) return -1;
  tr_shape *sh = &s->v[s->n];
  memset(sh, 0, sizeof *sh);
  sh->ndim = ndim;
  sh->numel = 1;
  for (int d = 0; d < ndim; d++) {
    sh->dims[d] = dims[d];
    sh->numel *= dims[d];
  }
  sh->next = (int32_t)first;
  if (ad__idmap_put(&s->index, h, (intptr_t)s->n) != AD_OK) return -1;
  return (int32_t)s->n++;
}

void tr_shapes_free(tr_shapes *s) {
  free(s->v);
  ad__idmap_free(&s->index);
  memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------
 * Values
 * ---------------------------------------------------------------------- */

/* Collect when the retained tensors' data passes this (or twice what
 * survived the last collection). */
#define GC_BYTES ((int64_t)64 << 20)

static int64_t data_bytes(const ad_tensor *t) {
  return t->numel > AD__EMBEDDED_ELEMS ? t->numel * (int64_t)sizeof(double)
                                       : 0;
}

tr_rec *tr_rec_new(void) {
  tr_rec *r = calloc(1, sizeof *r);
  if (r) {
    r->gc_at = 4096;
    r->gc_bytes_at = GC_BYTES;
  }
  return r;
}

static int32_t lookup(const tr_rec *r, const ad_tensor *t) {
  intptr_t v;
  return ad__idmap_get(&r->ids, t->id, &v) ? (int32_t)v : -1;
}

static int32_t new_val(tr_rec *r, const ad_tensor *t, int kind,
                       int64_t src) {
  if (!GROW(r->vals, r->nvals, r->vals_cap, r->nvals + 1) ||
      r->nvals >= INT32_MAX - 1)
    return -1;
  int32_t shape = tr_shape_intern(&r->shapes, t->ndim, t->shape);
  if (shape < 0) return -1;
  tr_val *v = &r->vals[r->nvals];
  memset(v, 0, sizeof *v);
  v->shape = shape;
  v->kind = (uint8_t)kind;
  v->src = (int32_t)src;
  v->prev_storage = -1;
  if (ad__idmap_put(&r->ids, t->id, (intptr_t)r->nvals) != AD_OK) return -1;
  return (int32_t)r->nvals++;
}

/* The first value still held in the chain of storage users from v. */
static int32_t live_from(const tr_rec *r, int32_t v) {
  while (v >= 0 && !r->vals[v].t) v = r->vals[v].prev_storage;
  return v;
}

/* Retain t for value v and link v into its storage's chain, so that a
 * view made outside the dispatcher (a custom op's output) can be traced
 * back to v. */
static bool hold(tr_rec *r, int32_t v, ad_tensor *t) {
  if (!GROW(r->held, r->nheld, r->held_cap, r->nheld + 1)) return false;
  intptr_t head;
  int32_t prev = -1;
  if (ad__idmap_get(&r->storages, (uint64_t)(uintptr_t)t->storage, &head))
    prev = live_from(r, (int32_t)head);
  if (ad__idmap_put(&r->storages, (uint64_t)(uintptr_t)t->storage,
                    (intptr_t)v) != AD_OK)
    return false;
  r->vals[v].prev_storage = prev;
  r->vals[v].t = ad_retain(t);
  r->held[r->nheld++] = v;
  r->held_bytes += data_bytes(t);
  return true;
}

/* Let go of the tensors of ops nobody else holds any more, once the held
 * list doubled: memory stays within twice what the eager run keeps. */
static void collect(tr_rec *r) {
  if (r->nheld < r->gc_at && r->held_bytes < r->gc_bytes_at) return;
  int64_t kept = 0;
  for (int64_t i = 0; i < r->nheld; i++) {
    int32_t v = r->held[i];
    ad_tensor *t = r->vals[v].t;
    if (r->vals[v].kind == TV_OP &&
        atomic_load_explicit(&t->refs, memory_order_acquire) == 1) {
      r->held_bytes -= data_bytes(t);
      ad_release(t);
      r->vals[v].t = NULL;
    } else {
      r->held[kept++] = v;
    }
  }
  r->nheld = kept;
  r->gc_at = kept * 2 > 4096 ? kept * 2 : 4096;
  r->gc_bytes_at = r->held_bytes * 2 > GC_BYTES ? r->held_bytes * 2
                                                 : GC_BYTES;
}

void tr_rec_drop_tensors(tr_rec *r) {
  for (int64_t i = 0; i < r->nheld; i++) {
    int32_t v = r->held[i];
    ad_release(r->vals[v].t);
    r->vals[v].t = NULL;
  }
  r->nheld = 0;
  r->held_bytes = 0;
  free(r->held);
  r->held = NULL;
  r->held_cap = 0;
  ad__idmap_free(&r->storages);
  ad__idmap_free(&r->ids);
}

void tr_rec_free(tr_rec *r) {
  if (!r) return;
  tr_rec_drop_tensors(r);
  for (int64_t i = 0; i < r->nconsts; i++) ad_release(r->consts[i]);
  for (int64_t i = 0; i < r->nattrs; i++) free(r->attrs[i]);
  free(r->consts);
  free(r->attrs);
  free(r->vals);
  free(r->ops);
  free(r->ins);
  free(r->dpool);
  tr_shapes_free(&r->shapes);
  free(r);
}

static int32_t add_const(tr_rec *r, ad_tensor *t) {
  if (!GROW(r->consts, r->nconsts, r->consts_cap, r->nconsts + 1))
    return -1;
  int32_t v = new_val(r, t, TV_CONST, r->nconsts);
  if (v < 0) return -1;
  r->consts[r->nconsts++] = ad_retain(t);
  return v;
}

int32_t tr_rec_value(tr_rec *r, ad_tensor *t) {
  int32_t v = lookup(r, t);
  return v >= 0 ? v : add_const(r, t);
}

ad_status tr_rec_input(tr_rec *r, ad_tensor *t) {
  int32_t v = new_val(r, t, TV_INPUT, r->nin);
  if (v < 0 || !hold(r, v, t))
    return ad__error(AD_ENOMEM, "ad_trace: out of memory recording");
  r->nin++;
  return AD_OK;
}

ad_status tr_rec_alias_outer(tr_rec *r, const ad_tensor *view,
                             const ad_tensor *orig) {
  for (tr_rec *p = r->parent; p; p = p->parent) {
    int32_t v = lookup(p, orig);
    if (v >= 0 && ad__idmap_put(&p->ids, view->id, (intptr_t)v) != AD_OK)
      return ad__error(AD_ENOMEM, "ad_trace: out of memory recording");
  }
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * The dispatcher's hook
 * ---------------------------------------------------------------------- */

static ad__attr *copy_attr(const ad__attr *attr) {
  size_t extra = attr->idx ? (size_t)attr->n * sizeof(int64_t) : 0;
  ad__attr *copy = malloc(sizeof *copy + extra);
  if (!copy) return NULL;
  *copy = *attr;
  if (attr->idx) {
    int64_t *idx = (int64_t *)(void *)(copy + 1);
    if (extra) memcpy(idx, attr->idx, extra);
    copy->idx = idx;
  }
  return copy;
}

static bool same_layout(const ad_tensor *a, const ad_tensor *b) {
  if (a->data != b->data || a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i] ||
        (a->shape[i] > 1 && a->strides[i] != b->strides[i]))
      return false;
  return true;
}

/* The recorded value that t views with the same layout, or -1. */
static int32_t find_alias(const tr_rec *r, const ad_tensor *t) {
  intptr_t head;
  if (!ad__idmap_get(&r->storages, (uint64_t)(uintptr_t)t->storage, &head))
    return -1;
  for (int32_t v = live_from(r, (int32_t)head); v >= 0;
       v = live_from(r, r->vals[v].prev_storage))
    if (same_layout(r->vals[v].t, t)) return v;
  return -1;
}

static ad_status record_one(tr_rec *r, const ad__op *op, int nin,
                            ad_tensor *const *in, int nout,
                            ad_tensor *const *out, const ad__attr *attr) {
  if (op < ad__ops || op >= ad__ops + AD__OP_COUNT) {
    /* A custom op (or a traced function's call): its forward ran through
     * the dispatcher and was recorded; its outputs are fresh views of
     * what forward returned. */
    for (int j = 0; j < nout; j++) {
      int32_t v = find_alias(r, out[j]);
      if (v >= 0 &&
          ad__idmap_put(&r->ids, out[j]->id, (intptr_t)v) != AD_OK)
        return AD_ENOMEM;
    }
    return AD_OK;
  }
  bool traced = false;
  for (int i = 0; i < nin && !traced; i++) traced = lookup(r, in[i]) >= 0;
  /* An op on constants only gives a constant: folded, not recorded. */
  if (!traced || nout != 1) return AD_OK;
  if (!GROW(r->ins, r->nins, r->ins_cap, r->nins + nin) ||
      !GROW(r->ops, r->nops, r->ops_cap, r->nops + 1) ||
      r->nins + nin >= INT32_MAX)
    return AD_ENOMEM;
  for (int i = 0; i < nin; i++) {
    int32_t v = tr_rec_value(r, in[i]);
    if (v < 0) return AD_ENOMEM;
    r->ins[r->nins + i] = v;
  }
  int64_t attr_index = -1;
  if (attr) {
    if (!GROW(r->attrs, r->nattrs, r->attrs_cap, r->nattrs + 1))
      return AD_ENOMEM;
    ad__attr *copy = copy_attr(attr);
    if (!copy) return AD_ENOMEM;
    attr_index = r->nattrs;
    r->attrs[r->nattrs++] = copy;
  }
  int code = (int)(op - ad__ops);
  int32_t v = new_val(r, out[0], TV_OP, r->nops);
  if (v < 0 || !hold(r, v, out[0])) return AD_ENOMEM;
  r->vals[v].cmp = code == AD__OP_less || code == AD__OP_greater ||
                   code == AD__OP_equal;
  r->ops[r->nops++] = (tr_op){code, nin, v, (int32_t)r->nins, attr_index};
  r->nins += nin;
  collect(r);
  return AD_OK;
}

ad_status ad__trace_record(const ad__op *op, int nin, ad_tensor *const *in,
                           int nout, ad_tensor *const *out,
                           const ad__attr *attr) {
  for (tr_rec *r = ad__contexts.trace; r; r = r->parent) {
    if (r->failed) continue;
    if (record_one(r, op, nin, in, nout, out, attr) != AD_OK) {
      r->failed = AD_ENOMEM;
      return ad__error(AD_ENOMEM, "%s: out of memory recording a trace",
                       op->name);
    }
  }
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * Guards: reads of traced values
 * ---------------------------------------------------------------------- */

static void guard_one(tr_rec *r, const ad_tensor *t, bool truth) {
  int32_t v = lookup(r, t);
  if (v < 0 || r->failed) return;
  if (!GROW(r->ins, r->nins, r->ins_cap, r->nins + 1) ||
      !GROW(r->ops, r->nops, r->ops_cap, r->nops + 1) ||
      !GROW(r->dpool, r->nd, r->d_cap, r->nd + t->numel)) {
    r->failed = AD_ENOMEM;
    return;
  }
  r->ins[r->nins] = v;
  tr_op g = {TR_GUARD_BITS, 1, -1, (int32_t)r->nins, r->nd};
  if (t->numel == 1) {
    double x = t->data[0];
    if (truth || r->vals[v].cmp) {
      g.code = TR_GUARD_TRUTH;
      g.attr = x != 0;
    } else {
      r->dpool[r->nd++] = x;
    }
  } else {
    g.code = TR_GUARD_READ;
    ad__gather_contiguous(t, r->dpool + r->nd);
    r->nd += t->numel;
  }
  r->nins++;
  r->ops[r->nops++] = g;
}

static void read_hook(const ad_tensor *t) {
  for (tr_rec *r = ad__contexts.trace; r; r = r->parent)
    guard_one(r, t, false);
}

void tr_guard_truth(const ad_tensor *t) {
  for (tr_rec *r = ad__contexts.trace; r; r = r->parent)
    guard_one(r, t, true);
}

void tr_rec_push(tr_rec *r) {
  r->parent = ad__contexts.trace;
  r->saved_hook = ad__read_hook;
  ad__ctx_set_trace(r);
  ad__read_hook = read_hook;
}

void tr_rec_pop(tr_rec *r) {
  ad__ctx_set_trace(r->parent);
  ad__read_hook = r->saved_hook;
}
