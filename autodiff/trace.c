/* Traced functions: the public API, the per-shape caches of traced paths,
 * derived functions, and the op that makes a traced call differentiable. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "trace_internal.h"

enum { FN_BASE, FN_VJP, FN_JVP, FN_VG, FN_NKIND };

#define MAX_SIGS 16
#define DEFAULT_PATHS 8

typedef struct sig {
  int64_t *dims; /* per input: ndim, then the sizes */
  int64_t ndims;
  tr_prog **paths; /* most recently used first */
  int npaths;
  uint64_t used;
} sig;

struct ad_function {
  atomic_long refs;
  pthread_mutex_t lock;       /* calls: caches and programs */
  pthread_mutex_t child_lock; /* derived functions */
  atomic_intptr_t owner;      /* the thread holding lock, 0 */
  int kind, nin, nout;
  ad_fn f1;
  ad_fn_n fn;
  void *ctx;
  ad_function *parent;
  ad_function *child[FN_NKIND];
  bool detached; /* the handle was freed: derive without caching */
  sig *sigs;
  int nsigs;
  int max_paths;
  uint64_t clock;
  tr_prog *recent;
  ad_function_stats st;
};

/* ------------------------------------------------------------------------
 * Live handles: a process-wide set, so that a freed function is an error
 * and not a crash.
 * ---------------------------------------------------------------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ad_function **registry;
static size_t registry_cap, registry_len;
/* Bumped whenever a handle goes: a thread's last successful check stays
 * valid while it is unchanged (no lock on the hot path). */
static atomic_ulong registry_generation;
static _Thread_local const ad_function *checked_fn;
static _Thread_local unsigned long checked_generation;

static size_t slot_hash(const void *p, size_t cap) {
  uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 17) & (cap - 1);
}

/* Under registry_lock. */
static bool registry_has(const ad_function *fn) {
  if (!registry_cap) return false;
  for (size_t i = slot_hash(fn, registry_cap);; i = (i + 1) & (registry_cap - 1)) {
    if (!registry[i]) return false;
    if (registry[i] == fn) return true;
  }
}

static bool registry_put(ad_function *fn) {
  if ((registry_len + 1) * 2 > registry_cap) {
    size_t cap = registry_cap ? registry_cap * 2 : 64;
    ad_function **t = calloc(cap, sizeof *t);
    if (!t) return false;
    for (size_t i = 0; i < registry_cap; i++)
      if (registry[i]) {
        size_t j = slot_hash(registry[i], cap);
        while (t[j]) j = (j + 1) & (cap - 1);
        t[j] = registry[i];
      }
    free(registry);
    registry = t;
    registry_cap = cap;
  }
  size_t j = slot_hash(fn, registry_cap);
  while (registry[j]) j = (j + 1) & (registry_cap - 1);
  registry[j] = fn;
  registry_len++;
  return true;
}

static void registry_remove(const ad_function *fn) {
  if (!registry_cap) return;
  size_t i = slot_hash(fn, registry_cap);
  while (registry[i] && registry[i] != fn) i = (i + 1) & (registry_cap - 1);
  if (!registry[i]) return;
  registry[i] = NULL;
  registry_len--;
  atomic_fetch_add(&registry_generation, 1);
  /* Backward-shift deletion keeps every probe chain intact. */
  for (size_t j = (i + 1) & (registry_cap - 1); registry[j];
       j = (j + 1) & (registry_cap - 1)) {
    ad_function *f = registry[j];
    size_t home = slot_hash(f, registry_cap);
    bool move = (j > i) ? (home <= i || home > j) : (home <= i && home > j);
    if (move) {
      registry[i] = f;
      registry[j] = NULL;
      i = j;
    }
  }
  if (registry_len == 0) {
    free(registry);
    registry = NULL;
    registry_cap = 0;
  }
}

static void fn_retain(ad_function *fn) {
  atomic_fetch_add_explicit(&fn->refs, 1, memory_order_relaxed);
}

static void free_sigs(ad_function *fn);

static void fn_release(ad_function *fn) {
  if (!fn ||
      atomic_fetch_sub_explicit(&fn->refs, 1, memory_order_acq_rel) != 1)
    return;
  free_sigs(fn);
  for (int k = 0; k < FN_NKIND; k++)
    if (fn->child[k]) fn_release(fn->child[k]);
  ad_function *parent = fn->parent;
  pthread_mutex_destroy(&fn->lock);
  pthread_mutex_destroy(&fn->child_lock);
  free(fn);
  fn_release(parent);
}

/* Take a reference to a live handle; false with AD_EINVAL naming op for
 * NULL or a freed function. */
static bool acquire(ad_function *fn, const char *op) {
  if (!fn) {
    ad__error(AD_EINVAL, "%s: the function is NULL", op);
    return false;
  }
  if (fn == checked_fn &&
      atomic_load_explicit(&registry_generation, memory_order_acquire) ==
          checked_generation) {
    fn_retain(fn);
    return true;
  }
  pthread_mutex_lock(&registry_lock);
  bool live = registry_has(fn);
  if (live) {
    fn_retain(fn);
    checked_fn = fn;
    checked_generation = atomic_load(&registry_generation);
  }
  pthread_mutex_unlock(&registry_lock);
  if (!live)
    ad__error(AD_EINVAL, "%s: the function was freed (or is not one)", op);
  return live;
}

static _Thread_local char thread_marker;
#define SELF ((intptr_t)&thread_marker)

/* Lock fn for a call; AD_ESTATE when this thread holds it already (a call
 * of fn from inside its own trace or replay). */
static bool fn_lock(ad_function *fn, const char *op) {
  if (pthread_mutex_trylock(&fn->lock) != 0) {
    if (atomic_load_explicit(&fn->owner, memory_order_relaxed) == SELF) {
      ad__error(AD_ESTATE,
                "%s: the function was called from inside its own trace",
                op);
      return false;
    }
    pthread_mutex_lock(&fn->lock);
  }
  atomic_store_explicit(&fn->owner, SELF, memory_order_relaxed);
  return true;
}

static void fn_unlock(ad_function *fn) {
  atomic_store_explicit(&fn->owner, 0, memory_order_relaxed);
  pthread_mutex_unlock(&fn->lock);
}

static ad_function *fn_new(int kind, int nin, int nout) {
  ad_function *fn = calloc(1, sizeof *fn);
  if (!fn) {
    ad__error(AD_ENOMEM, "ad_trace: out of memory");
    return NULL;
  }
  atomic_init(&fn->refs, 1);
  atomic_init(&fn->owner, 0);
  pthread_mutex_init(&fn->lock, NULL);
  pthread_mutex_init(&fn->child_lock, NULL);
  fn->kind = kind;
  fn->nin = nin;
  fn->nout = nout;
  fn->max_paths = DEFAULT_PATHS;
  return fn;
}

/* The derived function of the given kind (a new reference), cached in fn
 * unless fn's handle was freed. */
static ad_function *derived(ad_function *fn, int kind, const char *op) {
  pthread_mutex_lock(&fn->child_lock);
  ad_function *d = fn->child[kind];
  if (d) {
    fn_retain(d);
    pthread_mutex_unlock(&fn->child_lock);
    return d;
  }
  int n = fn->nin, m = fn->nout;
  if (kind == FN_VG && m != 1) {
    pthread_mutex_unlock(&fn->child_lock);
    ad__error(AD_EINVAL,
              "%s: a gradient needs a function of one output, this one "
              "has %d",
              op, m);
    return NULL;
  }
  int nin = kind == FN_VJP ? n + m : kind == FN_JVP ? 2 * n : n;
  int nout = kind == FN_VJP ? m + n : kind == FN_JVP ? 2 * m : 1 + n;
  d = fn_new(kind, nin, nout);
  if (!d) {
    pthread_mutex_unlock(&fn->child_lock);
    return NULL;
  }
  d->parent = fn;
  fn_retain(fn);
  d->max_paths = fn->max_paths;
  if (!fn->detached) {
    pthread_mutex_lock(&registry_lock);
    bool ok = registry_put(d);
    pthread_mutex_unlock(&registry_lock);
    if (ok) {
      fn->child[kind] = d;
      fn_retain(d);
    }
  }
  pthread_mutex_unlock(&fn->child_lock);
  return d;
}

/* The handle goes: forget the derived functions (those held by tapes
 * live on through their references). */
static void detach(ad_function *fn) {
  ad_function *kids[FN_NKIND];
  pthread_mutex_lock(&fn->child_lock);
  fn->detached = true;
  for (int k = 0; k < FN_NKIND; k++) {
    kids[k] = fn->child[k];
    fn->child[k] = NULL;
  }
  pthread_mutex_unlock(&fn->child_lock);
  for (int k = 0; k < FN_NKIND; k++) {
    if (!kids[k]) continue;
    pthread_mutex_lock(&registry_lock);
    registry_remove(kids[k]);
    pthread_mutex_unlock(&registry_lock);
    detach(kids[k]);
    fn_release(kids[k]);
  }
}

/* ------------------------------------------------------------------------
 * Eager bodies: f itself, and the derivative computations of derived
 * functions run over their parent's body.
 * ---------------------------------------------------------------------- */

static ad_status body(ad_function *fn, ad_tensor *const *in, ad_tensor **out);

/* xs[i] = in[i], with a (recorded) view for a tensor given twice, so that
 * every input is a variable of its own. */
static ad_status distinct(int n, ad_tensor *const *in, ad_tensor **xs) {
  for (int i = 0; i < n; i++) {
    xs[i] = in[i];
    for (int j = 0; j < i; j++)
      if (in[j] == in[i]) {
        xs[i] = ad_reshape(in[i], in[i]->ndim, in[i]->shape);
        if (!xs[i]) return ad_error();
        break;
      }
  }
  return AD_OK;
}

/* Whether obj is the innermost context (f must not leave one open). */
static ad_status check_innermost(const void *obj, const char *op) {
  if (ad__contexts.n > 0 && ad__contexts.items[ad__contexts.n - 1].obj == obj)
    return AD_OK;
  return ad__error(AD_ESTATE, "%s: the function left a tape or forward "
                              "level open",
                   op);
}

static ad_status reverse_body(ad_function *fn, ad_tensor *const *in,
                              ad_tensor **out) {
  const char *op = fn->kind == FN_VG ? "ad_function_value_and_grad"
                                     : "ad_function_vjp";
  ad_function *P = fn->parent;
  int n = P->nin, m = P->nout;
  ad_tensor **xs = calloc((size_t)(n + m) + 1, sizeof *xs);
  if (!xs) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  ad_tensor **ys = xs + n;
  ad_status st = distinct(n, in, xs);
  ad_tape *tape = st == AD_OK ? ad_tape_begin(0) : NULL;
  if (!tape) {
    free(xs);
    return ad_error() ? ad_error() : AD_ENOMEM;
  }
  for (int i = 0; i < n && st == AD_OK; i++) st = ad_tape_watch(tape, xs[i]);
  if (st == AD_OK) st = body(P, xs, ys);
  ad_tensor *target = NULL, *seed = NULL;
  if (st == AD_OK && fn->kind == FN_VJP && m > 1) {
    /* Several outputs: the gradient of sum_j <u_j, y_j>, recorded. */
    if (ad__ctx_find(tape) >= 0) st = check_innermost(tape, op);
    for (int j = 0; j < m && st == AD_OK; j++) {
      ad_tensor *term = ad_sum_all(ad_mul(in[n + j], ys[j]));
      target = target ? ad_add(target, term) : term;
      if (!target) st = ad_error();
    }
  }
  if (ad__ctx_find(tape) >= 0) {
    ad_status cs = check_innermost(tape, op);
    if (cs == AD_OK) cs = ad_tape_end(tape);
    if (st == AD_OK) st = cs;
  }
  if (st == AD_OK && fn->kind == FN_VG) {
    target = ys[0];
    if (target->numel != 1) {
      char b[AD__SHAPE_STR];
      st = ad__error(AD_ESHAPE,
                     "%s: the function returned shape %s, not a scalar", op,
                     ad__shape_str(b, target->ndim, target->shape));
    }
  } else if (st == AD_OK && m == 1) {
    target = ys[0];
    seed = in[n];
    if (!ad__same_shape(seed, target)) {
      char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
      st = ad__error(AD_ESHAPE, "%s: u has shape %s but f(x) has %s", op,
                     ad__shape_str(a, seed->ndim, seed->shape),
                     ad__shape_str(b, target->ndim, target->shape));
    }
  }
  ad_tensor **gs = fn->kind == FN_VG ? out + 1 : out + m;
  if (st == AD_OK)
    st = ad_tape_gradients(tape, target, seed, n, xs, gs,
                           AD_UNCONNECTED_ZERO);
  ad_tape_free(tape);
  if (st == AD_OK)
    for (int j = 0; j < (fn->kind == FN_VG ? 1 : m); j++) out[j] = ys[j];
  free(xs);
  return st;
}

static ad_status forward_body(ad_function *fn, ad_tensor *const *in,
                              ad_tensor **out) {
  const char *op = "ad_function_jvp";
  ad_function *P = fn->parent;
  int n = P->nin, m = P->nout;
  ad_tensor **xs = calloc((size_t)n + 1, sizeof *xs);
  if (!xs) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  ad_status st = distinct(n, in, xs);
  ad_fwd *acc = st == AD_OK ? ad_fwd_begin(n, xs, in + n) : NULL;
  if (!acc) {
    free(xs);
    return ad_error() ? ad_error() : AD_ENOMEM;
  }
  st = body(P, xs, out);
  if (ad__ctx_find(acc) >= 0) {
    ad_status cs = check_innermost(acc, op);
    if (st == AD_OK) st = cs;
  }
  if (st == AD_OK) st = ad_fwd_jvps(acc, m, out, out + m, AD_UNCONNECTED_ZERO);
  if (ad__ctx_find(acc) >= 0 &&
      ad__contexts.items[ad__contexts.n - 1].obj == acc)
    ad_fwd_end(acc);
  else
    ad__fwd_discard(acc);
  free(xs);
  return st;
}

/* Run fn's eager computation; out[j] owned by the current scope. */
static ad_status body(ad_function *fn, ad_tensor *const *in,
                      ad_tensor **out) {
  if (fn->kind == FN_VJP || fn->kind == FN_VG)
    return reverse_body(fn, in, out);
  if (fn->kind == FN_JVP) return forward_body(fn, in, out);
  unsigned long before = ad__error_count();
  int depth = ad__contexts.n;
  ad_tensor *y = fn->f1 ? fn->f1(in[0], fn->ctx)
                        : fn->fn(fn->nin, in, fn->ctx);
  if (ad__contexts.n != depth)
    return ad__error(AD_ESTATE, "ad_trace: the function left a tape or "
                                "forward level open");
  if (!y)
    return ad_error() ? ad_error()
                      : ad__error(AD_EINVAL,
                                  "ad_trace: the function returned NULL");
  /* A NULL from a failed op taken for a zero still fails the call. */
  if (ad__error_count() != before && ad_error()) return ad_error();
  out[0] = y;
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * Tracing and the cache of paths
 * ---------------------------------------------------------------------- */

static void free_sig(sig *s) {
  for (int i = 0; i < s->npaths; i++) tr_prog_free(s->paths[i]);
  free(s->paths);
  free(s->dims);
}

static void free_sigs(ad_function *fn) {
  for (int i = 0; i < fn->nsigs; i++) free_sig(&fn->sigs[i]);
  free(fn->sigs);
  fn->sigs = NULL;
  fn->nsigs = 0;
  fn->recent = NULL;
}

static bool sig_matches(const sig *s, int n, ad_tensor *const *in) {
  int64_t k = 0;
  for (int i = 0; i < n; i++) {
    const ad_tensor *t = in[i];
    if (k >= s->ndims || s->dims[k++] != t->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
      if (s->dims[k++] != t->shape[d]) return false;
  }
  return true;
}

/* The signature of these inputs' shapes, added when new (evicting the
 * least recently used beyond MAX_SIGS); NULL on out of memory. */
static sig *find_sig(ad_function *fn, ad_tensor *const *in, bool *fresh) {
  *fresh = false;
  for (int i = 0; i < fn->nsigs; i++)
    if (sig_matches(&fn->sigs[i], fn->nin, in)) {
      fn->sigs[i].used = ++fn->clock;
      return &fn->sigs[i];
    }
  int64_t nd = 0;
  for (int i = 0; i < fn->nin; i++) nd += 1 + in[i]->ndim;
  int64_t *dims = malloc((size_t)nd * sizeof *dims);
  if (!dims) return NULL;
  nd = 0;
  for (int i = 0; i < fn->nin; i++) {
    dims[nd++] = in[i]->ndim;
    for (int d = 0; d < in[i]->ndim; d++) dims[nd++] = in[i]->shape[d];
  }
  sig *s;
  if (fn->nsigs == MAX_SIGS) {
    int lru = 0;
    for (int i = 1; i < fn->nsigs; i++)
      if (fn->sigs[i].used < fn->sigs[lru].used) lru = i;
    s = &fn->sigs[lru];
    for (int i = 0; i < s->npaths; i++)
      if (s->paths[i] == fn->recent) fn->recent = NULL;
    free_sig(s);
  } else {
    sig *grown = realloc(fn->sigs, (size_t)(fn->nsigs + 1) * sizeof *grown);
    if (!grown) {
      free(dims);
      return NULL;
    }
    fn->sigs = grown;
    s = &fn->sigs[fn->nsigs++];
  }
  memset(s, 0, sizeof *s);
  s->dims = dims;
  s->ndims = nd;
  s->used = ++fn->clock;
  *fresh = true;
  return s;
}

static void drop_path(ad_function *fn, sig *s, int i) {
  if (s->paths[i] == fn->recent) fn->recent = NULL;
  tr_prog_free(s->paths[i]);
  memmove(&s->paths[i], &s->paths[i + 1],
          (size_t)(s->npaths - i - 1) * sizeof *s->paths);
  s->npaths--;
}

/* Trace fn at in: out[j] (owned by the current scope) are the eager
 * results, *prog the compiled path. */
static ad_status trace_at(ad_function *fn, ad_tensor *const *in,
                          ad_tensor **out, tr_prog **prog) {
  *prog = NULL;
  tr_rec *r = tr_rec_new();
  ad_tensor **views = calloc((size_t)(fn->nin + fn->nout) + 1, sizeof *views);
  int32_t *outs = calloc((size_t)fn->nout + 1, sizeof *outs);
  if (!r || !views || !outs) {
    tr_rec_free(r);
    free(views);
    free(outs);
    return ad__error(AD_ENOMEM, "ad_trace: out of memory");
  }
  ad_tensor **ys = views + fn->nin;
  r->id_floor = ad__next_id();
  ad_status st = AD_OK;
  tr_rec_push(r);
  ad_scope_begin();
  /* A tape of our own sees which variables f reads (ad_var_value). */
  ad_tape *seen = ad_tape_begin(0);
  if (!seen) st = ad_error();
  for (int i = 0; i < fn->nin && st == AD_OK; i++) {
    /* A fresh id per input: a tensor given twice is two inputs. */
    views[i] = ad__own(ad__k_identity(1, &in[i], NULL));
    if (!views[i]) st = ad_error() ? ad_error() : AD_ENOMEM;
    if (st == AD_OK) st = tr_rec_input(r, views[i]);
    if (st == AD_OK) st = tr_rec_alias_outer(r, views[i], in[i]);
  }
  fn->st.traces++;
  if (st == AD_OK) st = body(fn, views, ys);
  if (st == AD_OK && r->failed)
    st = ad__error(AD_ENOMEM, "ad_trace: out of memory recording");
  for (int j = 0; j < fn->nout && st == AD_OK; j++) {
    outs[j] = tr_rec_value(r, ys[j]);
    if (outs[j] < 0)
      st = ad__error(AD_ENOMEM, "ad_trace: out of memory recording");
  }
  int64_t nvars = seen ? ad_tape_num_variables(seen) : 0;
  ad_var **vars = calloc((size_t)nvars + 1, sizeof *vars);
  ad_tensor **values = calloc((size_t)nvars + 1, sizeof *values);
  if (!vars || !values)
    st = ad__error(AD_ENOMEM, "ad_trace: out of memory");
  for (int64_t i = 0; i < nvars && st == AD_OK; i++) {
    vars[i] = ad_tape_variable(seen, i);
    ad__var_retain(vars[i]);
  }
  ad_tape_free(seen);
  tr_rec_pop(r);
  for (int64_t i = 0; i < nvars && st == AD_OK; i++)
    values[i] = ad_retain(ad_var_value(vars[i]));
  if (st == AD_OK && !ad__keep_reserve(fn->nout)) st = ad_error();
  for (int j = 0; j < fn->nout; j++) out[j] = st == AD_OK ? ad_keep(ys[j]) : NULL;
  ad_scope_end();
  if (st == AD_OK) {
    *prog = tr_compile(r, fn->nout, outs);
    if (!*prog) st = ad_error();
  } else {
    tr_rec_free(r);
  }
  if (*prog) {
    (*prog)->vars = vars;
    (*prog)->var_values = values;
    (*prog)->nvars = nvars;
  } else {
    for (int64_t i = 0; i < nvars; i++) {
      ad_release(values[i]);
      if (vars && vars[i]) ad_var_free(vars[i]);
    }
    free(vars);
    free(values);
  }
  if (st != AD_OK)
    for (int j = 0; j < fn->nout; j++) out[j] = NULL;
  free(views);
  free(outs);
  return st;
}

/* Answer a call from the cache, tracing when no path fits: out[j] owned
 * by the current scope.  Locks fn. */
static ad_status replay(ad_function *fn, ad_tensor *const *in,
                        ad_tensor **out, const char *op) {
  if (!fn_lock(fn, op)) return ad_error();
  fn->st.calls++;
  bool fresh;
  sig *s = find_sig(fn, in, &fresh);
  if (!s) {
    fn_unlock(fn);
    return ad__error(AD_ENOMEM, "%s: out of memory", op);
  }
  for (int i = 0; i < s->npaths; i++) {
    int rc = tr_prog_run(s->paths[i], in, out);
    if (rc == RUN_OK) {
      for (int j = 0; j < fn->nout; j++) ad__own(out[j]);
      if (i > 0) {
        tr_prog *hit = s->paths[i];
        memmove(&s->paths[1], &s->paths[0], (size_t)i * sizeof *s->paths);
        s->paths[0] = hit;
      }
      fn->recent = s->paths[0];
      fn->st.replays++;
      fn_unlock(fn);
      return AD_OK;
    }
    if (rc == RUN_ERROR) {
      for (int j = 0; j < fn->nout; j++) out[j] = NULL;
      fn_unlock(fn);
      return ad_error() ? ad_error() : AD_EINTERNAL;
    }
    if (rc == RUN_STALE) {
      fn->st.stale++;
      drop_path(fn, s, i--);
    } else {
      fn->st.guard_misses++;
    }
  }
  tr_prog *prog;
  ad_status st = trace_at(fn, in, out, &prog);
  if (st == AD_OK) {
    if (s->npaths == fn->max_paths) drop_path(fn, s, s->npaths - 1);
    tr_prog **grown =
        realloc(s->paths, (size_t)(s->npaths + 1) * sizeof *s->paths);
    if (!grown) {
      tr_prog_free(prog);
    } else {
      s->paths = grown;
      memmove(&s->paths[1], &s->paths[0],
              (size_t)s->npaths * sizeof *s->paths);
      s->paths[0] = prog;
      s->npaths++;
      fn->recent = prog;
    }
  }
  fn_unlock(fn);
  return st;
}

/* ------------------------------------------------------------------------
 * A traced call as one op: its rules call the derived functions.
 * ---------------------------------------------------------------------- */

static ad_status apply_core(ad_function *fn, ad_tensor *const *in,
                            ad_tensor **out, const char *op);

static ad_status call_vjp_rule(const ad__opctx *c, ad_tensor *const *gout,
                               const bool *need, ad_tensor **gin) {
  ad_function *fn = c->extra;
  ad_function *d = derived(fn, FN_VJP, "ad_function_call");
  if (!d) return ad_error();
  int n = c->nin, m = c->nout;
  ad_tensor **buf = calloc((size_t)(2 * (n + m)) + 1, sizeof *buf);
  if (!buf) {
    fn_release(d);
    return ad__error(AD_ENOMEM, "ad_function_call: out of memory");
  }
  ad_tensor **in = buf, **out = buf + n + m;
  ad_status st = AD_OK;
  for (int i = 0; i < n; i++) in[i] = c->in[i];
  for (int j = 0; j < m && st == AD_OK; j++) {
    in[n + j] = gout[j] ? gout[j] : ad__zeros_like(c->out[j]);
    if (!in[n + j]) st = ad_error();
  }
  if (st == AD_OK) st = apply_core(d, in, out, "ad_function_call");
  for (int i = 0; i < n; i++)
    gin[i] = st == AD_OK && need[i] ? out[m + i] : NULL;
  free(buf);
  fn_release(d);
  return st;
}

static ad_status call_jvp_rule(const ad__opctx *c, ad_tensor *const *tin,
                               ad_tensor **tout) {
  ad_function *fn = c->extra;
  ad_function *d = derived(fn, FN_JVP, "ad_function_call");
  if (!d) return ad_error();
  int n = c->nin, m = c->nout;
  ad_tensor **buf = calloc((size_t)(2 * n + 2 * m) + 1, sizeof *buf);
  if (!buf) {
    fn_release(d);
    return ad__error(AD_ENOMEM, "ad_function_call: out of memory");
  }
  ad_tensor **in = buf, **out = buf + 2 * n;
  ad_status st = AD_OK;
  for (int i = 0; i < n && st == AD_OK; i++) {
    in[i] = c->in[i];
    in[n + i] = tin[i] ? tin[i] : ad__zeros_like(c->in[i]);
    if (!in[n + i]) st = ad_error();
  }
  if (st == AD_OK) st = apply_core(d, in, out, "ad_function_call");
  for (int j = 0; j < m; j++) tout[j] = st == AD_OK ? out[m + j] : NULL;
  free(buf);
  fn_release(d);
  return st;
}

static void retain_extra(void *p) { fn_retain(p); }
static void release_extra(void *p) { fn_release(p); }

static const ad__op call_row = {
    "ad_function_call", -1, 0, 0, NULL, call_vjp_rule, call_jvp_rule,
    release_extra};

/* Under tapes or forward levels: replay with every context paused, then
 * record the call as one node. */
static ad_status apply_as_op(ad_function *fn, ad_tensor *const *in,
                             ad_tensor **out, const char *op) {
  int m = fn->nout;
  ad_tensor **tmp = calloc(2 * (size_t)m + 1, sizeof *tmp);
  if (!tmp) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  ad_tensor **fresh = tmp + m;
  int open = ad__contexts.n;
  ad__ctx_pause_range(0, open, +1);
  ad_scope_begin();
  ad_status st = replay(fn, in, tmp, op);
  for (int j = 0; j < m && st == AD_OK; j++) {
    /* A view under a new id: outputs must be tensors nobody else holds. */
    fresh[j] = ad__k_identity(1, &tmp[j], NULL);
    if (!fresh[j]) st = ad_error();
  }
  ad_scope_end();
  ad__ctx_pause_range(0, open, -1);
  if (st == AD_OK)
    st = ad__record(&call_row, fn->nin, in, m, fresh, true, NULL, fn,
                    retain_extra);
  for (int j = 0; j < m; j++) {
    if (st == AD_OK) {
      out[j] = ad__own(fresh[j]);
    } else {
      ad_release(fresh[j]);
      out[j] = NULL;
    }
  }
  free(tmp);
  return st;
}

/* While a trace records on this thread the call runs eagerly, so the
 * outer trace sees (and records) its ops. */
static ad_status inline_call(ad_function *fn, ad_tensor *const *in,
                             ad_tensor **out) {
  ad_scope_begin();
  ad_status st = body(fn, in, out);
  if (st == AD_OK && !ad__keep_reserve(fn->nout)) st = ad_error();
  for (int j = 0; j < fn->nout; j++)
    out[j] = st == AD_OK ? ad_keep(out[j]) : NULL;
  ad_scope_end();
  return st;
}

static ad_status apply_core(ad_function *fn, ad_tensor *const *in,
                            ad_tensor **out, const char *op) {
  if (ad__contexts.trace) return inline_call(fn, in, out);
  if (ad__ad_active()) return apply_as_op(fn, in, out, op);
  return replay(fn, in, out, op);
}

static bool check_inputs(int n, ad_tensor *const *xs, const char *op) {
  if (!xs) {
    ad__error(AD_EINVAL, "%s: the inputs are NULL", op);
    return false;
  }
  for (int i = 0; i < n; i++)
    if (!xs[i]) {
      char arg[32];
      snprintf(arg, sizeof arg, "input %d", i);
      ad__error_null_arg(op, arg);
      return false;
    }
  return true;
}

/* Acquire fn, check the counts and inputs, apply, release. */
static ad_status checked_apply(ad_function *fn, int nin,
                               ad_tensor *const *in, int nout,
                               ad_tensor **out, const char *op) {
  if (out)
    for (int j = 0; j < nout; j++) out[j] = NULL;
  if (!acquire(fn, op)) return ad_error();
  ad_status st = AD_OK;
  if (nin != fn->nin || nout != fn->nout)
    st = ad__error(AD_EINVAL,
                   "%s: the function takes %d input%s and gives %d "
                   "output%s, not %d and %d",
                   op, fn->nin, fn->nin == 1 ? "" : "s", fn->nout,
                   fn->nout == 1 ? "" : "s", nin, nout);
  else if (!out)
    st = ad__error(AD_EINVAL, "%s: out is NULL", op);
  else if (!check_inputs(nin, in, op))
    st = ad_error() ? ad_error() : AD_EINVAL;
  if (st == AD_OK) st = apply_core(fn, in, out, op);
  fn_release(fn);
  return st;
}

/* ------------------------------------------------------------------------
 * The public API
 * ---------------------------------------------------------------------- */

static ad_function *trace_new(ad_fn f1, ad_fn_n fnn, void *ctx, int n,
                              ad_tensor *const *examples, const char *op) {
  if (!f1 && !fnn) {
    ad__error(AD_EINVAL, "%s: the function is NULL", op);
    return NULL;
  }
  if (n < 1) {
    ad__error(AD_EINVAL, "%s: need at least one input, got %d", op, n);
    return NULL;
  }
  if (!check_inputs(n, examples, op)) return NULL;
  ad_function *fn = fn_new(FN_BASE, n, 1);
  if (!fn) return NULL;
  fn->f1 = f1;
  fn->fn = fnn;
  fn->ctx = ctx;
  /* Trace now, on the example, outside any tape or level. */
  int open = ad__contexts.n;
  ad__ctx_pause_range(0, open, +1);
  ad_scope_begin();
  ad_tensor *y = NULL;
  /* Inside another trace the ops are recorded by both (nested). */
  ad_status st = replay(fn, examples, &y, op);
  ad_scope_end();
  ad__ctx_pause_range(0, open, -1);
  if (st == AD_OK) {
    pthread_mutex_lock(&registry_lock);
    if (!registry_put(fn)) st = ad__error(AD_ENOMEM, "%s: out of memory", op);
    pthread_mutex_unlock(&registry_lock);
  }
  if (st != AD_OK) {
    fn_release(fn);
    return NULL;
  }
  return fn;
}

ad_function *ad_trace(ad_fn f, void *ctx, ad_tensor *example) {
  return trace_new(f, NULL, ctx, 1, &example, "ad_trace");
}

ad_function *ad_trace_n(ad_fn_n f, void *ctx, int n,
                        ad_tensor *const *examples) {
  return trace_new(NULL, f, ctx, n, examples, "ad_trace_n");
}

ad_tensor *ad_function_call(ad_function *fn, ad_tensor *x) {
  ad_tensor *y = NULL;
  checked_apply(fn, 1, &x, 1, &y, "ad_function_call");
  return y;
}

ad_tensor *ad_function_call_n(ad_function *fn, int n, ad_tensor *const *xs) {
  ad_tensor *y = NULL;
  checked_apply(fn, n, xs, 1, &y, "ad_function_call_n");
  return y;
}

ad_status ad_function_apply(ad_function *fn, int nin, ad_tensor *const *in,
                            int nout, ad_tensor **out) {
  return checked_apply(fn, nin, in, nout, out, "ad_function_apply");
}

int ad_function_num_inputs(ad_function *fn) {
  if (!acquire(fn, "ad_function_num_inputs")) return -1;
  int n = fn->nin;
  fn_release(fn);
  return n;
}

int ad_function_num_outputs(ad_function *fn) {
  if (!acquire(fn, "ad_function_num_outputs")) return -1;
  int n = fn->nout;
  fn_release(fn);
  return n;
}

void ad_function_free(ad_function *fn) {
  if (!fn) return;
  pthread_mutex_lock(&registry_lock);
  bool live = registry_has(fn);
  bool owned = live && fn->parent;
  if (live && !owned) registry_remove(fn);
  pthread_mutex_unlock(&registry_lock);
  if (!live) {
    ad__error(AD_EINVAL, "ad_function_free: the function was freed (or is "
                         "not one)");
    return;
  }
  if (owned) {
    ad__error(AD_EINVAL, "ad_function_free: a derived function belongs to "
                         "its function and goes with it");
    return;
  }
  detach(fn);
  fn_release(fn);
}

/* A derived function's handle (borrowed from fn). */
static ad_function *derived_handle(ad_function *fn, int kind,
                                   const char *op) {
  if (!acquire(fn, op)) return NULL;
  ad_function *d = derived(fn, kind, op);
  fn_release(fn);
  if (!d) return NULL;
  /* fn keeps its own reference (it is not detached: it was live). */
  fn_release(d);
  return d;
}

ad_function *ad_function_vjp_fn(ad_function *fn) {
  return derived_handle(fn, FN_VJP, "ad_function_vjp_fn");
}

ad_function *ad_function_jvp_fn(ad_function *fn) {
  return derived_handle(fn, FN_JVP, "ad_function_jvp_fn");
}

ad_function *ad_function_value_and_grad_fn(ad_function *fn) {
  return derived_handle(fn, FN_VG, "ad_function_value_and_grad_fn");
}

/* Apply the derived function of the given kind (of fn, or of its derived
 * function of kind `inner` when inner >= 0) to in, into out. */
static ad_status apply_derived(ad_function *fn, int inner, int kind, int nin,
                               ad_tensor *const *in, int nout,
                               ad_tensor **out, const char *op) {
  for (int j = 0; j < nout; j++) out[j] = NULL;
  if (!acquire(fn, op)) return ad_error();
  ad_status st = AD_OK;
  ad_function *base = fn, *d = NULL;
  if (inner >= 0) {
    base = derived(fn, inner, op);
    if (!base) st = ad_error();
  } else {
    fn_retain(base);
  }
  if (st == AD_OK && !(d = derived(base, kind, op))) st = ad_error();
  if (st == AD_OK && (d->nin != nin || d->nout != nout))
    st = ad__error(AD_EINVAL,
                   "%s: the function takes %d input%s and gives %d output%s",
                   op, fn->nin, fn->nin == 1 ? "" : "s", fn->nout,
                   fn->nout == 1 ? "" : "s");
  if (st == AD_OK && !check_inputs(nin, in, op)) st = ad_error();
  if (st == AD_OK) st = apply_core(d, in, out, op);
  fn_release(d);
  if (base) fn_release(base);
  fn_release(fn);
  return st;
}

ad_tensor *ad_function_value_and_grad(ad_function *fn, ad_tensor *x,
                                      ad_tensor **value) {
  const char *op = value ? "ad_function_value_and_grad" : "ad_function_grad";
  if (value) *value = NULL;
  ad_tensor *out[2];
  if (apply_derived(fn, -1, FN_VG, 1, &x, 2, out, op) != AD_OK) return NULL;
  if (value) *value = out[0];
  return out[1];
}

ad_tensor *ad_function_grad(ad_function *fn, ad_tensor *x) {
  return ad_function_value_and_grad(fn, x, NULL);
}

ad_status ad_function_value_and_grad_n(ad_function *fn, int n,
                                       ad_tensor *const *xs,
                                       ad_tensor **grads, ad_tensor **value) {
  const char *op = "ad_function_value_and_grad_n";
  if (value) *value = NULL;
  if (grads)
    for (int i = 0; i < n; i++) grads[i] = NULL;
  if (!grads) return ad__error(AD_EINVAL, "%s: grads is NULL", op);
  if (n < 1 || n > 1 << 20)
    return ad__error(AD_EINVAL, "%s: %d inputs", op, n);
  ad_tensor **out = calloc((size_t)n + 2, sizeof *out);
  if (!out) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  ad_status st = apply_derived(fn, -1, FN_VG, n, xs, n + 1, out, op);
  if (st == AD_OK) {
    if (value) *value = out[0];
    for (int i = 0; i < n; i++) grads[i] = out[1 + i];
  }
  free(out);
  return st;
}

ad_tensor *ad_function_jvp(ad_function *fn, ad_tensor *x, ad_tensor *v,
                           ad_tensor **value) {
  if (value) *value = NULL;
  ad_tensor *in[2] = {x, v}, *out[2];
  if (apply_derived(fn, -1, FN_JVP, 2, in, 2, out, "ad_function_jvp") !=
      AD_OK)
    return NULL;
  if (value) *value = out[0];
  return out[1];
}

ad_tensor *ad_function_vjp(ad_function *fn, ad_tensor *x, ad_tensor *u,
                           ad_tensor **value) {
  if (value) *value = NULL;
  ad_tensor *in[2] = {x, u}, *out[2];
  if (apply_derived(fn, -1, FN_VJP, 2, in, 2, out, "ad_function_vjp") !=
      AD_OK)
    return NULL;
  if (value) *value = out[0];
  return out[1];
}

ad_tensor *ad_function_hvp(ad_function *fn, ad_tensor *x, ad_tensor *v) {
  /* The forward-mode derivative of the gradient program: (x, v) -> (f,
   * g, g.v, H v). */
  ad_tensor *in[2] = {x, v}, *out[4];
  if (apply_derived(fn, FN_VG, FN_JVP, 2, in, 4, out, "ad_function_hvp") !=
      AD_OK)
    return NULL;
  return out[3];
}

bool ad_cond(const ad_tensor *t) {
  if (!t) {
    ad__error_null_arg("ad_cond", "t");
    return false;
  }
  if (t->numel != 1) {
    char b[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "ad_cond: tensor of shape %s has %lld elements, "
                         "not 1",
              ad__shape_str(b, t->ndim, t->shape), (long long)t->numel);
    return false;
  }
  if (ad__contexts.trace) tr_guard_truth(t);
  return t->data[0] != 0;
}

bool ad_tracing(void) { return ad__contexts.trace != NULL; }

static void reset(ad_function *fn) {
  pthread_mutex_lock(&fn->lock);
  free_sigs(fn);
  pthread_mutex_unlock(&fn->lock);
  ad_function *kids[FN_NKIND];
  pthread_mutex_lock(&fn->child_lock);
  for (int k = 0; k < FN_NKIND; k++) {
    kids[k] = fn->child[k];
    if (kids[k]) fn_retain(kids[k]);
  }
  pthread_mutex_unlock(&fn->child_lock);
  for (int k = 0; k < FN_NKIND; k++)
    if (kids[k]) {
      reset(kids[k]);
      fn_release(kids[k]);
    }
}

ad_status ad_function_reset(ad_function *fn) {
  if (!acquire(fn, "ad_function_reset")) return ad_error();
  if (atomic_load(&fn->owner) == SELF) {
    fn_release(fn);
    return ad__error(AD_ESTATE,
                     "ad_function_reset: called from inside the function");
  }
  reset(fn);
  fn_release(fn);
  return AD_OK;
}

ad_status ad_function_set_max_paths(ad_function *fn, int max_paths) {
  if (!acquire(fn, "ad_function_set_max_paths")) return ad_error();
  ad_status st = AD_OK;
  if (max_paths < 1 || max_paths > 1024) {
    st = ad__error(AD_EINVAL,
                   "ad_function_set_max_paths: %d is outside 1..1024",
                   max_paths);
  } else if (fn_lock(fn, "ad_function_set_max_paths")) {
    fn->max_paths = max_paths;
    for (int i = 0; i < fn->nsigs; i++)
      while (fn->sigs[i].npaths > max_paths)
        drop_path(fn, &fn->sigs[i], fn->sigs[i].npaths - 1);
    fn_unlock(fn);
  } else {
    st = ad_error();
  }
  fn_release(fn);
  return st;
}

ad_status ad_function_get_stats(ad_function *fn, ad_function_stats *stats) {
  if (!stats)
    return ad__error(AD_EINVAL, "ad_function_get_stats: stats is NULL");
  memset(stats, 0, sizeof *stats);
  if (!acquire(fn, "ad_function_get_stats")) return ad_error();
  if (!fn_lock(fn, "ad_function_get_stats")) {
    fn_release(fn);
    return ad_error();
  }
  *stats = fn->st;
  stats->signatures = fn->nsigs;
  for (int i = 0; i < fn->nsigs; i++) stats->paths += fn->sigs[i].npaths;
  if (fn->recent) {
    stats->ops = fn->recent->nops;
    stats->guards = fn->recent->nguards;
    stats->instructions = fn->recent->ncode;
  }
  fn_unlock(fn);
  fn_release(fn);
  return AD_OK;
}

static const char *kind_name(int kind) {
  switch (kind) {
  case FN_VJP: return "vjp of ";
  case FN_JVP: return "jvp of ";
  case FN_VG: return "value and gradient of ";
  default: return "";
  }
}

static void describe(FILE *f, const ad_function *fn) {
  char buf[256] = "";
  size_t used = 0;
  for (const ad_function *g = fn; g && used < sizeof buf - 32; g = g->parent)
    used += (size_t)snprintf(buf + used, sizeof buf - used, "%s",
                             kind_name(g->kind));
  fprintf(f, "traced function: %sf; %d input%s, %d output%s\n", buf, fn->nin,
          fn->nin == 1 ? "" : "s", fn->nout, fn->nout == 1 ? "" : "s");
}

ad_status ad_function_print(ad_function *fn, FILE *f) {
  if (!f) return ad__error(AD_EINVAL, "ad_function_print: the stream is NULL");
  if (!acquire(fn, "ad_function_print")) return ad_error();
  if (!fn_lock(fn, "ad_function_print")) {
    fn_release(fn);
    return ad_error();
  }
  describe(f, fn);
  ad_status st = AD_OK;
  for (int i = 0; i < fn->nsigs && st == AD_OK; i++) {
    sig *s = &fn->sigs[i];
    for (int k = 0; k < s->npaths && st == AD_OK; k++) {
      fprintf(f, "path %d of %d for input shapes ", k + 1, s->npaths);
      int64_t q = 0;
      for (int a = 0; a < fn->nin; a++) {
        int64_t nd = s->dims[q++];
        fprintf(f, "%s(", a ? ", " : "");
        for (int64_t d = 0; d < nd; d++)
          fprintf(f, "%s%lld", d ? ", " : "", (long long)s->dims[q++]);
        fprintf(f, nd == 1 ? ",)" : ")");
      }
      st = tr_prog_print(s->paths[k], f);
    }
  }
  if (st == AD_OK && (fflush(f) != 0 || ferror(f)))
    st = ad__error(AD_EIO, "ad_function_print: writing failed");
  fn_unlock(fn);
  fn_release(fn);
  return st;
}

ad_status ad_function_write_dot(ad_function *fn, FILE *f) {
  if (!f)
    return ad__error(AD_EINVAL, "ad_function_write_dot: the stream is NULL");
  if (!acquire(fn, "ad_function_write_dot")) return ad_error();
  if (!fn_lock(fn, "ad_function_write_dot")) {
    fn_release(fn);
    return ad_error();
  }
  ad_status st;
  if (!fn->recent)
    st = ad__error(AD_ESTATE, "ad_function_write_dot: nothing is traced");
  else
    st = tr_prog_dot(fn->recent, f, kind_name(fn->kind));
  if (st == AD_OK && (fflush(f) != 0 || ferror(f)))
    st = ad__error(AD_EIO, "ad_function_write_dot: writing failed");
  fn_unlock(fn);
  fn_release(fn);
  return st;
}

ad_tensor *ad_function_fn(ad_tensor *x, void *fn) {
  return ad_function_call(fn, x);
}
