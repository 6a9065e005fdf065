/* Gradient tapes: recording ops as nodes and running them backwards. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define INLINE_IN 3

typedef struct node {
  const ad__op *op;
  int nin, nout;
  unsigned broadcast_inputs; /* see ad__opctx */
  bool released;             /* references dropped early (see backward) */
  ad__attr *attr;  /* a copy, or NULL for ops without attributes */
  void *extra;     /* custom-op state, released through op->free_extra */
  /* Inputs and outputs (retained) with their slots: inline for small
   * arities, else heap arrays.  Slot -1: the tape does not track it. */
  ad_tensor *in_inline[INLINE_IN];
  int64_t in_slot_inline[INLINE_IN];
  ad_tensor *out_inline;
  int64_t out_slot_inline;
  ad_tensor **in_heap, **out_heap;
  int64_t *in_slot_heap, *out_slot_heap;
} node;

typedef struct seen_var {
  ad_var *var;
  ad_tensor *value; /* retained */
} seen_var;

/* Nodes live in fixed-size chunks so that a long recording never copies
 * what it has recorded (a growing array would, at every doubling). */
#define CHUNK_NODES 256

struct ad_tape {
  uint64_t serial;   /* unique, never reused: the tensors' tape mark */
  unsigned flags;
  bool recording;
  bool spent;        /* a non-persistent tape after its gradient call */
  pthread_t owner;
  ad__idmap tracked; /* tensor id -> slot */
  int64_t nslots;
  node **chunks;
  int64_t nnodes, nchunks, chunks_cap;
  seen_var *vars;
  int64_t nvars, vars_cap;
};

static atomic_ulong tape_serial_counter;

static node *node_at(const ad_tape *tape, int64_t k) {
  return &tape->chunks[k / CHUNK_NODES][k % CHUNK_NODES];
}

static ad_tensor **node_in(node *n) {
  return n->nin <= INLINE_IN ? n->in_inline : n->in_heap;
}
static int64_t *node_in_slot(node *n) {
  return n->nin <= INLINE_IN ? n->in_slot_inline : n->in_slot_heap;
}
static ad_tensor **node_out(node *n) {
  return n->nout == 1 ? &n->out_inline : n->out_heap;
}
static int64_t *node_out_slot(node *n) {
  return n->nout == 1 ? &n->out_slot_inline : n->out_slot_heap;
}

static void node_release(node *n) {
  if (n->released) return;
  n->released = true;
  ad_tensor **in = node_in(n), **out = node_out(n);
  for (int i = 0; i < n->nin; i++) ad_release(in[i]);
  for (int j = 0; j < n->nout; j++) ad_release(out[j]);
  if (n->extra && n->op->free_extra) n->op->free_extra(n->extra);
  if (n->attr) free(n->attr);
  if (n->nin > INLINE_IN) {
    free(n->in_heap);
    free(n->in_slot_heap);
  }
  if (n->nout > 1) {
    free(n->out_heap);
    free(n->out_slot_heap);
  }
}

static void release_record(ad_tape *tape) {
  for (int64_t k = 0; k < tape->nnodes; k++) node_release(node_at(tape, k));
  for (int64_t c = 0; c < tape->nchunks; c++) free(tape->chunks[c]);
  free(tape->chunks);
  tape->chunks = NULL;
  tape->nnodes = tape->nchunks = tape->chunks_cap = 0;
  ad__idmap_free(&tape->tracked);
  tape->nslots = 0;
}

/* Tapes belong to one thread: catch use from another one. */
static ad_status check_tape(const ad_tape *tape, const char *op) {
  if (!tape) {
    ad__error_null_arg(op, "tape");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (!pthread_equal(tape->owner, pthread_self()))
    return ad__error(AD_ESTATE,
                     "%s: the tape belongs to another thread; tapes are "
                     "not shared between threads",
                     op);
  return AD_OK;
}

ad_tape *ad_tape_begin(unsigned flags) {
  if (flags & ~(AD_TAPE_PERSISTENT | AD_TAPE_NO_AUTO_WATCH)) {
    ad__error(AD_EINVAL, "ad_tape_begin: unknown flags 0x%x", flags);
    return NULL;
  }
  ad_tape *tape = calloc(1, sizeof *tape);
  if (!tape) {
    ad__error(AD_ENOMEM, "ad_tape_begin: out of memory");
    return NULL;
  }
  tape->flags = flags;
  tape->serial = atomic_fetch_add(&tape_serial_counter, 1) + 1;
  tape->owner = pthread_self();
  tape->recording = true;
  if (ad__ctx_push(AD__CTX_TAPE, tape) != AD_OK) {
    free(tape);
    return NULL;
  }
  return tape;
}

/* The slot of t on this tape, or -1.  Tensors this tape produced carry
 * the tape's mark; anything else (watched tensors, outputs another tape
 * marked first) is in the map. */
static int64_t slot_of(const ad_tape *tape, const ad_tensor *t) {
  if (t->tape_mark == tape->serial) return t->tape_slot;
  intptr_t v;
  return ad__idmap_get(&tape->tracked, t->id, &v) ? (int64_t)v : -1;
}

/* Track t, giving it a new slot unless it has one.  fresh: t was just
 * made by this thread and nobody else sees it yet, so its mark may be
 * written (never write to a tensor that may be shared). */
static ad_status track(ad_tape *tape, ad_tensor *t, bool fresh,
                       int64_t *slot) {
  *slot = slot_of(tape, t);
  if (*slot >= 0) return AD_OK;
  if (fresh && t->tape_mark == 0) {
    t->tape_mark = tape->serial;
    t->tape_slot = tape->nslots;
  } else {
    ad_status st = ad__idmap_put(&tape->tracked, t->id, (intptr_t)tape->nslots);
    if (st != AD_OK) return st;
  }
  *slot = tape->nslots++;
  return AD_OK;
}

ad_status ad_tape_watch(ad_tape *tape, ad_tensor *t) {
  ad_status st = check_tape(tape, "ad_tape_watch");
  if (st != AD_OK) return st;
  if (!t) {
    ad__error_null_arg("ad_tape_watch", "t");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (tape->spent)
    return ad__error(AD_ESTATE,
                     "ad_tape_watch: the tape's record was released after "
                     "its gradient (use AD_TAPE_PERSISTENT)");
  int64_t slot;
  return track(tape, t, false, &slot);
}

ad_status ad_tape_end(ad_tape *tape) {
  ad_status st = check_tape(tape, "ad_tape_end");
  if (st != AD_OK) return st;
  if (!tape->recording)
    return ad__error(AD_ESTATE, "ad_tape_end: the tape was already ended");
  st = ad__ctx_remove(tape, true, "ad_tape_end");
  if (st != AD_OK) return st;
  tape->recording = false;
  return AD_OK;
}

void ad_tape_free(ad_tape *tape) {
  if (!tape) return;
  if (check_tape(tape, "ad_tape_free") != AD_OK) return;
  if (ad__ctx_find(tape) >= 0) ad__ctx_remove(tape, false, "ad_tape_free");
  release_record(tape);
  for (int64_t i = 0; i < tape->nvars; i++) {
    ad_release(tape->vars[i].value);
    ad_var_free(tape->vars[i].var);
  }
  free(tape->vars);
  free(tape);
}

int64_t ad_tape_size(const ad_tape *tape) {
  if (!tape) {
    ad__error_null_arg("ad_tape_size", "tape");
    return -1;
  }
  return tape->nnodes;
}

/* ------------------------------------------------------------------------
 * Recording (called by the dispatcher)
 * ---------------------------------------------------------------------- */

bool ad__tape_tracks_any(const ad_tape *tape, int nin, ad_tensor *const *in,
                         unsigned const_inputs) {
  for (int i = 0; i < nin; i++)
    if (!ad__mask_bit(const_inputs, i) && slot_of(tape, in[i]) >= 0)
      return true;
  return false;
}

static ad__attr *copy_attr(const ad__attr *attr) {
  size_t extra = attr->idx ? (size_t)attr->n * sizeof(int64_t) : 0;
  ad__attr *copy = malloc(sizeof *copy + extra);
  if (!copy) return NULL;
  *copy = *attr;
  if (attr->idx) {
    int64_t *idx = (int64_t *)(void *)(copy + 1);
    memcpy(idx, attr->idx, extra);
    copy->idx = idx;
  }
  return copy;
}

ad_status ad__tape_record(ad_tape *tape, const ad__op *op, int nin,
                          ad_tensor *const *in, int nout,
                          ad_tensor *const *out, bool fresh_outputs,
                          const ad__attr *attr, void *extra,
                          void (*retain_extra)(void *)) {
  if (tape->nnodes == tape->nchunks * CHUNK_NODES) {
    if (tape->nchunks == tape->chunks_cap) {
      int64_t cap = tape->chunks_cap ? tape->chunks_cap * 2 : 16;
      node **chunks = realloc(tape->chunks, (size_t)cap * sizeof *chunks);
      if (!chunks)
        return ad__error(AD_ENOMEM, "%s: out of memory recording", op->name);
      tape->chunks = chunks;
      tape->chunks_cap = cap;
    }
    node *chunk = malloc(CHUNK_NODES * sizeof *chunk);
    if (!chunk)
      return ad__error(AD_ENOMEM, "%s: out of memory recording", op->name);
    tape->chunks[tape->nchunks++] = chunk;
  }
  node *n = node_at(tape, tape->nnodes);
  memset(n, 0, sizeof *n);
  n->op = op;
  n->nin = nin;
  n->nout = nout;
  if (nin > INLINE_IN) {
    n->in_heap = malloc((size_t)nin * sizeof *n->in_heap);
    n->in_slot_heap = malloc((size_t)nin * sizeof *n->in_slot_heap);
  }
  if (nout > 1) {
    n->out_heap = malloc((size_t)nout * sizeof *n->out_heap);
    n->out_slot_heap = malloc((size_t)nout * sizeof *n->out_slot_heap);
  }
  if (attr && (op->flags & AD__OP_ATTR)) n->attr = copy_attr(attr);
  if ((nin > INLINE_IN && (!n->in_heap || !n->in_slot_heap)) ||
      (nout > 1 && (!n->out_heap || !n->out_slot_heap)) ||
      (attr && (op->flags & AD__OP_ATTR) && !n->attr)) {
    n->nin = n->nout = 0;
    node_release(n);
    return ad__error(AD_ENOMEM, "%s: out of memory recording", op->name);
  }
  ad_tensor **nin_t = node_in(n), **nout_t = node_out(n);
  int64_t *in_slot = node_in_slot(n), *out_slot = node_out_slot(n);
  for (int i = 0; i < nin; i++) {
    nin_t[i] = ad_retain(in[i]);
    in_slot[i] =
        ad__mask_bit(op->const_inputs, i) ? -1 : slot_of(tape, in[i]);
  }
  for (int j = 0; j < nout; j++) {
    nout_t[j] = ad_retain(out[j]);
    out_slot[j] = -1;
  }
  n->broadcast_inputs = nout == 1 ? ad__broadcast_mask(nin, in, out[0]) : 0;
  /* Count the node before tracking outputs so that a failure below still
   * releases it with the tape. */
  tape->nnodes++;
  for (int j = 0; j < nout; j++)
    if (track(tape, out[j], fresh_outputs, &out_slot[j]) != AD_OK)
      return ad__error(AD_ENOMEM, "%s: out of memory recording", op->name);
  if (extra) {
    n->extra = extra;
    if (retain_extra) retain_extra(extra);
  }
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * The backward pass
 * ---------------------------------------------------------------------- */

static bool same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

/* into[i] += from[i].  The storages are distinct (the accumulator's is
 * its own), which restrict states so that the loop vectorizes without an
 * aliasing check: repeated cotangents of a tensor read many times go
 * through here. */
AD__VECTORIZE static void add_into(double *restrict into,
                                  const double *restrict from, int64_t n) {
  for (int64_t i = 0; i < n; i++) into[i] += from[i];
}

/* Add g (borrowed) into *acc (owned reference). */
static ad_status accumulate(ad_tensor **acc, ad_tensor *g) {
  ad_tensor *a = *acc;
  if (!a) {
    *acc = ad_retain(g);
    return AD_OK;
  }
  /* When nothing differentiates this pass and the accumulator is ours
   * alone, add in place: it is invisible outside the sweep, so the
   * immutability of tensors is not observable, and a parameter used many
   * times costs no allocation per use. */
  if (!ad__ad_active() && atomic_load(&a->refs) == 1 &&
      atomic_load(&a->storage->refs) == 1 && a->contiguous &&
      g->contiguous && a->numel == g->numel) {
    add_into(a->data, g->data, a->numel);
    return AD_OK;
  }
  ad_tensor *sum = ad_add(a, g);
  if (!sum) return ad_error();
  ad_release(*acc);
  *acc = ad_retain(sum);
  return AD_OK;
}

static ad_status run_node_vjp(node *n, ad_tensor **grads) {
  const ad__op *op = n->op;
  ad_tensor **in = node_in(n), **out = node_out(n);
  int64_t *in_slot = node_in_slot(n), *out_slot = node_out_slot(n);
  ad_tensor *gout_stack[1], **gout = gout_stack;
  bool need_stack[INLINE_IN], *need = need_stack;
  ad_tensor *gin_stack[INLINE_IN], **gin = gin_stack;
  if (n->nout > 1) gout = calloc((size_t)n->nout, sizeof *gout);
  if (n->nin > INLINE_IN) {
    need = calloc((size_t)n->nin, sizeof *need);
    gin = calloc((size_t)n->nin, sizeof *gin);
  }
  ad_status st = AD_OK;
  if (!gout || !need || !gin) {
    st = ad__error(AD_ENOMEM, "%s: out of memory in the backward pass",
                   op->name);
    goto done;
  }
  bool any_out = false, any_need = false;
  for (int j = 0; j < n->nout; j++) {
    gout[j] = out_slot[j] >= 0 ? grads[out_slot[j]] : NULL;
    any_out |= gout[j] != NULL;
  }
  for (int i = 0; i < n->nin; i++) {
    need[i] = in_slot[i] >= 0;
    gin[i] = NULL;
    any_need |= need[i];
  }
  if (!any_out || !any_need) goto done;
  if (!op->vjp) {
    st = ad__error(AD_EUNIMPL, "%s: no reverse-mode (VJP) rule", op->name);
    goto done;
  }
  /* Built-in single-output rules may assume a cotangent. */
  ad_scope_begin();
  if (n->nout == 1 && !gout[0]) gout[0] = ad__zeros_like(out[0]);
  ad__opctx c = {op,     n->nin,   n->nout, in,
                 out,    n->attr,  n->extra, n->broadcast_inputs};
  const char *outer_op = ad__contexts.rule_op;
  const char *outer_kind = ad__contexts.rule_kind;
  ad__contexts.rule_op = op->name;
  ad__contexts.rule_kind = "backward pass";
  unsigned long errors_before = ad__error_count();
  st = op->vjp(&c, gout, need, gin);
  if (st == AD_OK && ad__error_count() != errors_before && ad_error())
    st = ad_error();
  ad__contexts.rule_op = outer_op;
  ad__contexts.rule_kind = outer_kind;
  /* Anomaly detection names the first rule that turns finite cotangents
   * and inputs into a non-finite gradient. */
  for (int i = 0; st == AD_OK && ad__contexts.anomaly && i < n->nin; i++) {
    if (!need[i] || !gin[i]) continue;
    char what[48];
    snprintf(what, sizeof what, "backward: gradient of input %d", i);
    ad_tensor *seen[2 * INLINE_IN + 2];
    int nseen = 0;
    for (int j = 0; j < n->nout && nseen < INLINE_IN + 1; j++)
      if (gout[j]) seen[nseen++] = gout[j];
    for (int k = 0; k < n->nin && nseen < 2 * INLINE_IN + 2; k++)
      seen[nseen++] = in[k];
    if (ad__anomaly_found(op->name, what, nseen, seen, gin[i]))
      st = AD_ECHECK;
  }
  for (int i = 0; st == AD_OK && i < n->nin; i++) {
    if (!need[i] || !gin[i]) continue;
    /* An input the op did not broadcast has the output's shape, which the
     * (cache-hot) cotangent shows: the input's own header stays cold. */
    const ad_tensor *like = n->nout == 1 && gout[0] &&
                                    !ad__maybe_broadcast(n->broadcast_inputs, i)
                                ? gout[0]
                                : in[i];
    if (!same_shape(gin[i], like)) {
      char g[AD__SHAPE_STR], w[AD__SHAPE_STR];
      st = ad__error(AD_EINTERNAL,
                     "%s: gradient of input %d has shape %s, expected %s",
                     op->name, i, ad__shape_str(g, gin[i]->ndim,
                                                gin[i]->shape),
                     ad__shape_str(w, in[i]->ndim, in[i]->shape));
      break;
    }
    st = accumulate(&grads[in_slot[i]], gin[i]);
  }
  ad_scope_end();
done:
  if (gout != gout_stack) free(gout);
  if (need != need_stack) free(need);
  if (gin != gin_stack) free(gin);
  return st;
}

/* One backward sweep from target (seeded with seed) to the sources. */
/* Ask the cache for the tensor headers of node k, which the sweep reaches
 * soon: on a long tape they were evicted long ago. */
static void prefetch_node(const ad_tape *tape, int64_t k) {
  if (k < 0) return;
  node *n = node_at(tape, k);
  ad_tensor **in = node_in(n), **out = node_out(n);
  for (int i = 0; i < n->nin && i < INLINE_IN; i++) __builtin_prefetch(in[i]);
  __builtin_prefetch(out[0]);
}

/* One backward sweep from target (seeded with seed) to the sources.  With
 * consume, each node's references are dropped as soon as its rule ran,
 * while its tensors are still in cache (the tape is spent afterwards). */
static ad_status backward(ad_tape *tape, ad_tensor *target, ad_tensor *seed,
                          int n, ad_tensor *const *sources,
                          ad_tensor **grads_out, unsigned flags,
                          bool consume) {
  ad_status st = AD_OK;
  ad_tensor **grads = calloc((size_t)(tape->nslots + 1), sizeof *grads);
  bool *keep = calloc((size_t)(tape->nslots + 1), sizeof *keep);
  if (!grads || !keep) {
    free(grads);
    free(keep);
    return ad__error(AD_ENOMEM, "ad_tape_gradient: out of memory");
  }
  int64_t v;
  for (int i = 0; i < n; i++)
    if ((v = slot_of(tape, sources[i])) >= 0) keep[v] = true;
  /* The tape does not record its own backward pass. */
  int ci = ad__ctx_find(tape);
  if (ci >= 0) ad__ctx_pause_at(ci, +1);
  if ((v = slot_of(tape, target)) >= 0) {
    grads[v] = ad_retain(seed);
    for (int64_t k = tape->nnodes - 1; k >= 0 && st == AD_OK; k--) {
      node *nd = node_at(tape, k);
      prefetch_node(tape, k - 2);
      st = run_node_vjp(nd, grads);
      int64_t *out_slot = node_out_slot(nd);
      for (int j = 0; j < nd->nout; j++) {
        int64_t s = out_slot[j];
        if (s >= 0 && !keep[s] && grads[s]) {
          ad_release(grads[s]);
          grads[s] = NULL;
        }
      }
      /* Last: releasing the node frees its slot arrays. */
      if (consume) node_release(nd);
    }
  }
  if (ci >= 0) ad__ctx_pause_at(ci, -1);
  for (int i = 0; i < n; i++) {
    grads_out[i] = NULL;
    if (st != AD_OK) continue;
    ad_tensor *g = NULL;
    if ((v = slot_of(tape, sources[i])) >= 0 && grads[v])
      g = ad__own(ad_retain(grads[v]));
    else if (flags & AD_UNCONNECTED_ZERO)
      g = ad__zeros_like(sources[i]);
    grads_out[i] = g;
  }
  for (int64_t s = 0; s < tape->nslots; s++) ad_release(grads[s]);
  free(grads);
  free(keep);
  if (st != AD_OK)
    for (int i = 0; i < n; i++) grads_out[i] = NULL;
  return st;
}

/* Validate a gradient request; on success *seed is the cotangent of the
 * target (owned by the current scope). */
static ad_status check_request(ad_tape *tape, ad_tensor *target,
                               ad_tensor *target_grad, int n,
                               ad_tensor *const *sources, const char *op,
                               ad_tensor **seed) {
  ad_status st = check_tape(tape, op);
  if (st != AD_OK) return st;
  if (tape->spent)
    return ad__error(AD_ESTATE,
                     "%s: a non-persistent tape answers one gradient call; "
                     "begin it with AD_TAPE_PERSISTENT to ask again",
                     op);
  if (!target) {
    ad__error_null_arg(op, "target");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (n < 0 || (n > 0 && !sources))
    return ad__error(AD_EINVAL, "%s: %d sources given as %p", op, n,
                     (const void *)sources);
  for (int i = 0; i < n; i++)
    if (!sources[i]) {
      char arg[32];
      snprintf(arg, sizeof arg, "sources[%d]", i);
      ad__error_null_arg(op, arg);
      return ad_error() ? ad_error() : AD_EINVAL;
    }
  char b1[AD__SHAPE_STR], b2[AD__SHAPE_STR];
  if (target_grad) {
    if (!same_shape(target_grad, target))
      return ad__error(AD_ESHAPE,
                       "%s: target_grad has shape %s but the target has %s",
                       op,
                       ad__shape_str(b1, target_grad->ndim,
                                     target_grad->shape),
                       ad__shape_str(b2, target->ndim, target->shape));
    *seed = target_grad;
    return AD_OK;
  }
  if (target->numel != 1)
    return ad__error(AD_ESHAPE,
                     "%s: target of shape %s is not a scalar; pass "
                     "target_grad (ad_tape_gradients) or use "
                     "ad_tape_jacobian",
                     op, ad__shape_str(b1, target->ndim, target->shape));
  *seed = ad_ones(target->ndim, target->shape);
  return *seed ? AD_OK : ad_error();
}

static void finish_call(ad_tape *tape) {
  if (!(tape->flags & AD_TAPE_PERSISTENT)) {
    tape->spent = true;
    release_record(tape);
  }
}

ad_status ad_tape_gradients(ad_tape *tape, ad_tensor *target,
                            ad_tensor *target_grad, int n,
                            ad_tensor *const *sources, ad_tensor **grads,
                            unsigned flags) {
  if (grads)
    for (int i = 0; i < n; i++) grads[i] = NULL;
  if (n > 0 && !grads)
    return ad__error(AD_EINVAL, "ad_tape_gradients: grads is NULL");
  ad_tensor *seed = NULL;
  ad_status st = check_request(tape, target, target_grad, n, sources,
                               "ad_tape_gradients", &seed);
  if (st != AD_OK) return st;
  bool consume = !(tape->flags & AD_TAPE_PERSISTENT);
  st = backward(tape, target, seed, n, sources, grads, flags, consume);
  if (st == AD_OK || consume) finish_call(tape);
  return st;
}

ad_tensor *ad_tape_gradient(ad_tape *tape, ad_tensor *target,
                            ad_tensor *source) {
  ad_tensor *seed = NULL, *g = NULL;
  if (!source && tape && target) {
    ad__error_null_arg("ad_tape_gradient", "source");
    return NULL;
  }
  if (check_request(tape, target, NULL, 1, &source, "ad_tape_gradient",
                    &seed) != AD_OK)
    return NULL;
  bool consume = !(tape->flags & AD_TAPE_PERSISTENT);
  ad_status st = backward(tape, target, seed, 1, &source, &g,
                          AD_UNCONNECTED_ZERO, consume);
  if (st == AD_OK || consume) finish_call(tape);
  return st == AD_OK ? g : NULL;
}

ad_tensor *ad_tape_jacobian(ad_tape *tape, ad_tensor *target,
                            ad_tensor *source) {
  const char *op = "ad_tape_jacobian";
  ad_tensor *unused;
  if (!source && tape && target) {
    ad__error_null_arg(op, "source");
    return NULL;
  }
  /* Validate with a dummy seed of the target's own shape. */
  if (check_request(tape, target, target, 1, &source, op, &unused) != AD_OK)
    return NULL;
  int64_t m = target->numel;
  ad_tensor **rows = calloc((size_t)(m > 0 ? m : 1), sizeof *rows);
  if (!rows) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  ad_tensor *result = NULL;
  ad_status st = AD_OK;
  ad_scope_begin();
  for (int64_t e = 0; e < m && st == AD_OK; e++) {
    ad_tensor *seed = ad_zeros(target->ndim, target->shape);
    if (!seed) {
      st = ad_error();
      break;
    }
    seed->data[e] = 1.0;
    st = backward(tape, target, seed, 1, &source, &rows[e],
                  AD_UNCONNECTED_ZERO, false);
  }
  if (st == AD_OK) {
    int64_t shape[2 * AD_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < target->ndim; i++) shape[nd++] = target->shape[i];
    for (int i = 0; i < source->ndim; i++) shape[nd++] = source->shape[i];
    if (nd > AD_MAX_DIMS) {
      ad__error(AD_ESHAPE,
                "%s: the Jacobian would have rank %d, above the maximum %d",
                op, nd, AD_MAX_DIMS);
    } else if (m == 0) {
      result = ad_keep(ad_zeros(nd, shape));
    } else {
      ad_tensor *stacked = ad_stack((int)m, rows, 0);
      result = ad_keep(ad_reshape(stacked, nd, shape));
    }
  }
  ad_scope_end();
  free(rows);
  if (result) finish_call(tape);
  return result;
}

/* ------------------------------------------------------------------------
 * Variables seen by a tape
 * ---------------------------------------------------------------------- */

ad_status ad__tape_saw_variable(ad_tape *tape, ad_var *v, ad_tensor *value) {
  if (tape->flags & AD_TAPE_NO_AUTO_WATCH) return AD_OK;
  for (int64_t i = 0; i < tape->nvars; i++)
    if (tape->vars[i].var == v && tape->vars[i].value == value) return AD_OK;
  if (tape->nvars == tape->vars_cap) {
    int64_t cap = tape->vars_cap ? tape->vars_cap * 2 : 8;
    seen_var *vars = realloc(tape->vars, (size_t)cap * sizeof *vars);
    if (!vars) return ad__error(AD_ENOMEM, "ad_var_value: out of memory");
    tape->vars = vars;
    tape->vars_cap = cap;
  }
  int64_t slot;
  if (track(tape, value, false, &slot) != AD_OK) return AD_ENOMEM;
  ad__var_retain(v);
  tape->vars[tape->nvars++] = (seen_var){v, ad_retain(value)};
  return AD_OK;
}

int64_t ad_tape_num_variables(const ad_tape *tape) {
  if (!tape) {
    ad__error_null_arg("ad_tape_num_variables", "tape");
    return -1;
  }
  /* Count distinct variables: a variable read at several values appears
   * once per value in the list. */
  int64_t count = 0;
  for (int64_t i = 0; i < tape->nvars; i++) {
    bool first = true;
    for (int64_t j = 0; j < i && first; j++)
      first = tape->vars[j].var != tape->vars[i].var;
    count += first;
  }
  return count;
}

ad_var *ad_tape_variable(const ad_tape *tape, int64_t i) {
  if (!tape) {
    ad__error_null_arg("ad_tape_variable", "tape");
    return NULL;
  }
  int64_t count = 0;
  for (int64_t k = 0; k < tape->nvars; k++) {
    bool first = true;
    for (int64_t j = 0; j < k && first; j++)
      first = tape->vars[j].var != tape->vars[k].var;
    if (first && count++ == i) return tape->vars[k].var;
  }
  ad__error(AD_EINVAL, "ad_tape_variable: index %lld is out of range (%lld "
                       "variables)",
            (long long)i, (long long)count);
  return NULL;
}

ad_status ad_tape_var_gradients(ad_tape *tape, ad_tensor *target, int n,
                                ad_var *const *vars, ad_tensor **grads) {
  const char *op = "ad_tape_var_gradients";
  if (grads)
    for (int i = 0; i < n; i++) grads[i] = NULL;
  ad_status st = check_tape(tape, op);
  if (st != AD_OK) return st;
  if (n < 0 || (n > 0 && (!vars || !grads)))
    return ad__error(AD_EINVAL, "%s: bad variable list (n = %d)", op, n);
  for (int i = 0; i < n; i++)
    if (!vars[i]) {
      /* A NULL variable usually stems from a failed ad_var_new: keep that
       * error rather than replacing it. */
      char arg[32];
      snprintf(arg, sizeof arg, "vars[%d]", i);
      ad__error_null_arg(op, arg);
      return ad_error() ? ad_error() : AD_EINVAL;
    }
  /* Every value read of every requested variable is a source. */
  int64_t ns = 0;
  ad_tensor **sources = malloc((size_t)(tape->nvars + 1) * sizeof *sources);
  int *owner = malloc((size_t)(tape->nvars + 1) * sizeof *owner);
  ad_tensor **sg = calloc((size_t)(tape->nvars + 1), sizeof *sg);
  if (!sources || !owner || !sg) {
    free(sources);
    free(owner);
    free(sg);
    return ad__error(AD_ENOMEM, "%s: out of memory", op);
  }
  for (int64_t k = 0; k < tape->nvars; k++)
    for (int i = 0; i < n; i++)
      if (tape->vars[k].var == vars[i]) {
        sources[ns] = tape->vars[k].value;
        owner[ns++] = i;
        break;
      }
  st = ad_tape_gradients(tape, target, NULL, (int)ns, sources, sg,
                         AD_UNCONNECTED_ZERO);
  if (st == AD_OK) {
    for (int64_t k = 0; k < ns && st == AD_OK; k++) {
      int i = owner[k];
      grads[i] = grads[i] ? ad_add(grads[i], sg[k]) : sg[k];
      if (!grads[i]) st = ad_error();
    }
    for (int i = 0; i < n && st == AD_OK; i++)
      if (!grads[i]) {
        ad_tensor *value = ad_var_value(vars[i]);
        grads[i] = value ? ad__zeros_like(value) : NULL;
        if (!grads[i]) st = ad_error();
      }
  }
  if (st != AD_OK)
    for (int i = 0; i < n; i++) grads[i] = NULL;
  free(sources);
  free(owner);
  free(sg);
  return st;
}

/* ------------------------------------------------------------------------
 * Graphviz export
 * ---------------------------------------------------------------------- */

/* The name a tape shows for the leaf in slot s: a variable's, if one was
 * read at that tensor. */
static const char *leaf_name(const ad_tape *tape, int64_t slot) {
  for (int64_t i = 0; i < tape->nvars; i++)
    if (slot_of(tape, tape->vars[i].value) == slot)
      return ad_var_name(tape->vars[i].var);
  return NULL;
}

/* Write s for a double-quoted DOT string: quotes and backslashes escaped,
 * so that a custom op's or variable's name cannot break the graph. */
static void put_dot_string(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    if (*s == '\n') {
      fputs("\\n", f);
      continue;
    }
    fputc(*s, f);
  }
}

ad_status ad_tape_write_dot(const ad_tape *tape, FILE *f) {
  const char *fn = "ad_tape_write_dot";
  if (!tape || !f)
    return ad__error(AD_EINVAL, "%s: %s is NULL", fn, tape ? "f" : "tape");
  if (tape->spent)
    return ad__error(AD_ESTATE,
                     "%s: the tape's record was released after its gradient "
                     "(use AD_TAPE_PERSISTENT)",
                     fn);
  int64_t *producer = malloc((size_t)(tape->nslots + 1) * sizeof *producer);
  bool *drawn = calloc((size_t)(tape->nslots + 1), sizeof *drawn);
  if (!producer || !drawn) {
    free(producer);
    free(drawn);
    return ad__error(AD_ENOMEM, "%s: out of memory", fn);
  }
  for (int64_t s = 0; s < tape->nslots; s++) producer[s] = -1;
  for (int64_t k = 0; k < tape->nnodes; k++) {
    node *n = node_at(tape, k);
    for (int j = 0; j < n->nout; j++)
      if (node_out_slot(n)[j] >= 0) producer[node_out_slot(n)[j]] = k;
  }
  char shape[AD__SHAPE_STR];
  fprintf(f, "digraph tape {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
  for (int64_t k = 0; k < tape->nnodes; k++) {
    node *n = node_at(tape, k);
    ad_tensor *out = node_out(n)[0];
    fprintf(f, "  n%lld [shape=box, label=\"", (long long)k);
    put_dot_string(f, n->op->name);
    fprintf(f, "\\n%s\"];\n", ad__shape_str(shape, out->ndim, out->shape));
    ad_tensor **in = node_in(n);
    int64_t *in_slot = node_in_slot(n);
    for (int i = 0; i < n->nin; i++) {
      int64_t s = in_slot[i];
      ad__shape_str(shape, in[i]->ndim, in[i]->shape);
      if (s < 0) {
        fprintf(f,
                "  c%lld_%d [shape=plaintext, fontcolor=gray40, "
                "label=\"const %s\"];\n  c%lld_%d -> n%lld [color=gray60];\n",
                (long long)k, i, shape, (long long)k, i, (long long)k);
      } else if (producer[s] >= 0) {
        fprintf(f, "  n%lld -> n%lld;\n", (long long)producer[s],
                (long long)k);
      } else {
        if (!drawn[s]) {
          const char *name = leaf_name(tape, s);
          fprintf(f, "  w%lld [shape=ellipse, style=filled, "
                     "fillcolor=lightblue, label=\"", (long long)s);
          put_dot_string(f, name ? name : "watched");
          fprintf(f, "%s%s\"];\n", name ? "\\n" : " ", shape);
          drawn[s] = true;
        }
        fprintf(f, "  w%lld -> n%lld;\n", (long long)s, (long long)k);
      }
    }
  }
  fprintf(f, "}\n");
  free(producer);
  free(drawn);
  if (fflush(f) != 0 || ferror(f))
    return ad__error(AD_EIO, "%s: writing the graph failed", fn);
  return AD_OK;
}
