/* Custom ops: user forward functions recorded as one node whose rules are
 * user callbacks (or derived from one another), and gradient
 * checkpointing built on them. */
#include <stdlib.h>
#include <string.h>

#include "ad/custom.h"
#include "engine.h"

#define MAX_OUTPUTS 16

struct ad_custom_ctx {
  atomic_long refs;      /* the application plus each node that keeps it */
  ad__op row;            /* this application's row: the user's name */
  ad_custom_op op;       /* a copy, so the caller's struct may go */
  void *user;
  void (*free_user)(void *); /* for state libad itself allocated */
  bool in_forward;
  ad_tensor *const *forward_in;
  const ad__opctx *current;  /* the application a rule is running for */
  ad_tensor **saved;
  int nsaved, saved_cap;
};

static void retain_ctx(void *p) {
  ad_custom_ctx *c = p;
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static void release_ctx(void *p) {
  ad_custom_ctx *c = p;
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (int i = 0; i < c->nsaved; i++) ad_release(c->saved[i]);
  free(c->saved);
  if (c->free_user) c->free_user(c->user);
  free(c);
}

/* A callback that failed without saying why still gets a message: one
 * that recorded no error of its own since errors_before (an error left
 * over from an earlier, unrelated call is not its message). */
static ad_status callback_failed(const ad_custom_ctx *c, ad_status st,
                                 const char *which,
                                 unsigned long errors_before) {
  if (ad_error() == AD_OK || ad__error_count() == errors_before)
    ad__error(st, "%s: the %s callback failed with status %d (%s)",
              c->op.name, which, (int)st, ad_strerror(st));
  return st;
}

/* ------------------------------------------------------------------------
 * Calling the user's rules
 * ---------------------------------------------------------------------- */

static ad_status call_vjp(ad_custom_ctx *cc, const ad__opctx *c,
                          ad_tensor *const *gout_in, ad_tensor **gin) {
  ad_tensor *gout[MAX_OUTPUTS];
  for (int j = 0; j < c->nout; j++) {
    gout[j] = gout_in[j] ? gout_in[j] : ad__zeros_like(c->out[j]);
    if (!gout[j]) return ad_error();
  }
  for (int i = 0; i < c->nin; i++) gin[i] = NULL;
  const ad__opctx *prev = cc->current;
  cc->current = c;
  unsigned long errors_before = ad__error_count();
  ad_status st = cc->op.vjp(cc, gout, gin, cc->user);
  cc->current = prev;
  return st == AD_OK ? AD_OK
                     : callback_failed(cc, st, "VJP", errors_before);
}

static ad_status call_jvp(ad_custom_ctx *cc, const ad__opctx *c,
                          ad_tensor *const *tin_in, ad_tensor **tout) {
  ad_tensor **tin = malloc((size_t)(c->nin + 1) * sizeof *tin);
  if (!tin) return ad__error(AD_ENOMEM, "%s: out of memory", cc->op.name);
  ad_status st = AD_OK;
  for (int i = 0; i < c->nin && st == AD_OK; i++) {
    tin[i] = tin_in[i] ? tin_in[i] : ad__zeros_like(c->in[i]);
    if (!tin[i]) st = ad_error();
  }
  for (int j = 0; j < c->nout; j++) tout[j] = NULL;
  if (st == AD_OK) {
    const ad__opctx *prev = cc->current;
    cc->current = c;
    unsigned long errors_before = ad__error_count();
    st = cc->op.jvp(cc, tin, tout, cc->user);
    cc->current = prev;
    if (st != AD_OK) callback_failed(cc, st, "JVP", errors_before);
  }
  free(tin);
  return st;
}

/* *total = sum over k of <a[k], b[k]>, skipping pairs with a NULL (zero)
 * entry; NULL when every pair was skipped (a zero that nothing depends
 * on).  The status tells that case from a failed op, whatever error an
 * earlier call may have left recorded. */
static ad_status pairing(int n, ad_tensor *const *a, ad_tensor *const *b,
                         ad_tensor **total) {
  *total = NULL;
  for (int k = 0; k < n; k++) {
    if (!a[k] || !b[k]) continue;
    ad_tensor *term = ad_sum_all(ad_mul(a[k], b[k]));
    *total = *total ? ad_add(*total, term) : term;
    if (!*total) return ad_error() ? ad_error() : AD_EINTERNAL;
  }
  return AD_OK;
}

/* The derivative of the linear map v -> <w, rule(v)> with respect to v,
 * where rule is the other mode's derivative: how a VJP gives a JVP and a
 * JVP a VJP.  The temporary tape sits above every paused context, and its
 * backward pass is seen by the contexts the engine left active, so the
 * derived rule is differentiable again. */
typedef ad_status (*rule_call)(ad_custom_ctx *cc, const ad__opctx *c,
                               ad_tensor *const *v, ad_tensor **result);

static ad_status transpose_rule(ad_custom_ctx *cc, const ad__opctx *c,
                                rule_call rule, int nv,
                                ad_tensor *const *like_v, int nw,
                                ad_tensor *const *w, ad_tensor **out) {
  ad_status st = AD_OK;
  ad_tensor **v = calloc((size_t)nv + 1, sizeof *v);
  ad_tensor **r = calloc((size_t)nw + 1, sizeof *r);
  ad_tape *tape = v && r ? ad_tape_begin(AD_TAPE_NO_AUTO_WATCH) : NULL;
  if (!tape) {
    free(v);
    free(r);
    return ad_error() ? ad_error()
                      : ad__error(AD_ENOMEM, "%s: out of memory", cc->op.name);
  }
  for (int k = 0; k < nv && st == AD_OK; k++) {
    v[k] = ad__zeros_like(like_v[k]);
    st = v[k] ? ad_tape_watch(tape, v[k]) : ad_error();
  }
  if (st == AD_OK) st = rule(cc, c, v, r);
  ad_tensor *s = NULL;
  if (st == AD_OK) st = pairing(nw, w, r, &s);
  if (ad_tape_end(tape) != AD_OK && st == AD_OK) st = ad_error();
  for (int k = 0; k < nv; k++) out[k] = NULL;
  if (st == AD_OK && s) st = ad_tape_gradients(tape, s, NULL, nv, v, out, 0);
  ad_tape_free(tape);
  free(v);
  free(r);
  return st;
}

static ad_status custom_vjp(const ad__opctx *c, ad_tensor *const *gout,
                            const bool *need, ad_tensor **gin) {
  ad_custom_ctx *cc = c->extra;
  ad_status st;
  if (cc->op.vjp) {
    st = call_vjp(cc, c, gout, gin);
  } else if (cc->op.jvp) {
    /* J^T g = d/dt <g, J t>: absent cotangents are zeros, which pair to
     * 0 (materializing them could fail unchecked). */
    st = transpose_rule(cc, c, call_jvp, c->nin, c->in, c->nout, gout, gin);
  } else {
    st = ad__error(AD_EUNIMPL,
                   "%s: the custom op has neither a VJP nor a JVP rule",
                   cc->op.name);
  }
  for (int i = 0; i < c->nin; i++)
    if (!need[i]) gin[i] = NULL;
  return st;
}

static ad_status custom_jvp(const ad__opctx *c, ad_tensor *const *tin,
                            ad_tensor **tout) {
  ad_custom_ctx *cc = c->extra;
  if (cc->op.jvp) return call_jvp(cc, c, tin, tout);
  if (!cc->op.vjp)
    return ad__error(AD_EUNIMPL,
                     "%s: the custom op has neither a JVP nor a VJP rule",
                     cc->op.name);
  /* J t = d/du <J^T u, t>: absent tangents are zeros, which pair to 0. */
  return transpose_rule(cc, c, call_vjp, c->nout, c->out, c->nin, tin,
                        tout);
}

/* ------------------------------------------------------------------------
 * Applying a custom op
 * ---------------------------------------------------------------------- */

static ad_status check_op(const ad_custom_op *op, ad_tensor *const *in,
                          ad_tensor **out) {
  const char *fn = "ad_custom_apply";
  if (!op) return ad__error(AD_EINVAL, "%s: op is NULL", fn);
  const char *name = op->name ? op->name : "(unnamed custom op)";
  if (!op->forward)
    return ad__error(AD_EINVAL, "%s: %s has no forward function", fn, name);
  if (op->nin < 0 || op->nout < 1 || op->nout > MAX_OUTPUTS)
    return ad__error(AD_EINVAL,
                     "%s: %s declares %d inputs and %d outputs (need nin >= "
                     "0 and 1 <= nout <= %d)",
                     fn, name, op->nin, op->nout, MAX_OUTPUTS);
  if (!out) return ad__error(AD_EINVAL, "%s: %s: out is NULL", fn, name);
  if (op->nin > 0 && !in)
    return ad__error(AD_EINVAL, "%s: %s: in is NULL", fn, name);
  for (int i = 0; i < op->nin; i++)
    if (!in[i]) {
      char arg[32];
      snprintf(arg, sizeof arg, "input %d", i);
      ad__error_null_arg(name, arg);
      return ad_error() ? ad_error() : AD_EINVAL;
    }
  return AD_OK;
}

static ad_status apply(const ad_custom_op *op, void *user,
                       void (*free_user)(void *), ad_tensor *const *in,
                       ad_tensor **out) {
  ad_status st = check_op(op, in, out);
  if (st != AD_OK) {
    if (out && op && op->nout > 0 && op->nout <= MAX_OUTPUTS)
      for (int j = 0; j < op->nout; j++) out[j] = NULL;
    if (free_user) free_user(user);
    return st;
  }
  for (int j = 0; j < op->nout; j++) out[j] = NULL;
  ad_custom_ctx *cc = calloc(1, sizeof *cc);
  if (!cc) {
    if (free_user) free_user(user);
    return ad__error(AD_ENOMEM, "%s: out of memory", op->name);
  }
  atomic_init(&cc->refs, 1);
  cc->op = *op;
  if (!cc->op.name) cc->op.name = "(unnamed custom op)";
  cc->user = user;
  cc->free_user = free_user;
  cc->row = (ad__op){cc->op.name, op->nin, 0, 0, NULL, custom_vjp,
                     custom_jvp, release_ctx};

  /* The forward function's own ops are not recorded: the op is one node. */
  ad_tensor *fresh[MAX_OUTPUTS] = {0}, *tmp[MAX_OUTPUTS] = {0};
  /* Pause the contexts open now, not recording as such: tapes or levels
   * that forward opens itself must work as usual. */
  int open_contexts = ad__contexts.n;
  ad__ctx_pause_range(0, open_contexts, +1);
  cc->in_forward = true;
  cc->forward_in = in;
  ad_scope_begin();
  unsigned long errors_before = ad__error_count();
  st = op->forward(cc, in, tmp, user);
  if (st == AD_OK && ad__error_count() != errors_before && ad_error())
    st = ad_error();
  if (st != AD_OK) callback_failed(cc, st, "forward", errors_before);
  for (int j = 0; j < op->nout && st == AD_OK; j++) {
    if (!tmp[j]) {
      /* A failed op inside forward was caught above: any error recorded
       * now is older than this call and not the reason. */
      st = ad__error(AD_EINVAL,
                     "%s: the forward callback left output %d NULL",
                     cc->op.name, j);
      break;
    }
    /* A view under a new id: the op's outputs must be tensors nobody
     * else holds, even when forward returned one of its inputs. */
    fresh[j] = ad__k_identity(1, &tmp[j], NULL);
    if (!fresh[j]) st = ad_error();
  }
  ad_scope_end();
  cc->in_forward = false;
  cc->forward_in = NULL;
  ad__ctx_pause_range(0, open_contexts, -1);

  if (st == AD_OK && ad__ad_active())
    st = ad__record(&cc->row, op->nin, in, op->nout, fresh, true, NULL, cc,
                    retain_ctx);
  for (int j = 0; j < op->nout; j++) {
    if (st == AD_OK)
      out[j] = ad__own(fresh[j]);
    else
      ad_release(fresh[j]);
  }
  if (st == AD_OK)
    for (int j = 0; j < op->nout; j++)
      if (!out[j]) st = ad_error();
  release_ctx(cc);
  return st;
}

ad_status ad_custom_apply(const ad_custom_op *op, void *user,
                          ad_tensor *const *in, ad_tensor **out) {
  return apply(op, user, NULL, in, out);
}

ad_status ad_custom_save(ad_custom_ctx *c, ad_tensor *t) {
  if (!c) return ad__error(AD_EINVAL, "ad_custom_save: ctx is NULL");
  if (!t) {
    ad__error_null_arg("ad_custom_save", "t");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (!c->in_forward)
    return ad__error(AD_ESTATE,
                     "ad_custom_save: %s: tensors can only be saved during "
                     "forward",
                     c->op.name);
  if (c->nsaved == c->saved_cap) {
    int cap = c->saved_cap ? c->saved_cap * 2 : 4;
    ad_tensor **saved = realloc(c->saved, (size_t)cap * sizeof *saved);
    if (!saved)
      return ad__error(AD_ENOMEM, "ad_custom_save: out of memory");
    c->saved = saved;
    c->saved_cap = cap;
  }
  c->saved[c->nsaved++] = ad_retain(t);
  return AD_OK;
}

ad_tensor *ad_custom_saved(ad_custom_ctx *c, int i) {
  if (!c) {
    ad__error(AD_EINVAL, "ad_custom_saved: ctx is NULL");
    return NULL;
  }
  if (i < 0 || i >= c->nsaved) {
    ad__error(AD_EINVAL, "ad_custom_saved: %s: index %d is out of range "
                         "(%d saved)",
              c->op.name, i, c->nsaved);
    return NULL;
  }
  return c->saved[i];
}

ad_tensor *ad_custom_input(ad_custom_ctx *c, int i) {
  if (!c) {
    ad__error(AD_EINVAL, "ad_custom_input: ctx is NULL");
    return NULL;
  }
  if (i < 0 || i >= c->op.nin) {
    ad__error(AD_EINVAL, "ad_custom_input: %s: index %d is out of range "
                         "(%d inputs)",
              c->op.name, i, c->op.nin);
    return NULL;
  }
  if (c->current) return c->current->in[i];
  if (c->in_forward) return c->forward_in[i];
  ad__error(AD_ESTATE, "ad_custom_input: %s: not inside a callback",
            c->op.name);
  return NULL;
}

ad_tensor *ad_custom_output(ad_custom_ctx *c, int j) {
  if (!c) {
    ad__error(AD_EINVAL, "ad_custom_output: ctx is NULL");
    return NULL;
  }
  if (j < 0 || j >= c->op.nout) {
    ad__error(AD_EINVAL, "ad_custom_output: %s: index %d is out of range "
                         "(%d outputs)",
              c->op.name, j, c->op.nout);
    return NULL;
  }
  if (!c->current) {
    ad__error(AD_ESTATE,
              "ad_custom_output: %s: outputs exist only in rule callbacks",
              c->op.name);
    return NULL;
  }
  return c->current->out[j];
}

/* ------------------------------------------------------------------------
 * Gradient checkpointing: a custom op whose rules recompute f.
 * ---------------------------------------------------------------------- */

typedef struct checkpoint_fn {
  ad_fn f;
  void *ctx;
} checkpoint_fn;

static ad_status checkpoint_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                    ad_tensor **out, void *user) {
  (void)c;
  const checkpoint_fn *cf = user;
  out[0] = cf->f(in[0], cf->ctx);
  if (out[0]) return AD_OK;
  return ad_error() ? ad_error()
                    : ad__error(AD_EINVAL,
                                "ad_checkpoint: the function returned NULL");
}

static ad_status checkpoint_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                                ad_tensor **gin, void *user) {
  const checkpoint_fn *cf = user;
  gin[0] = ad_vjp(cf->f, cf->ctx, ad_custom_input(c, 0), gout[0], NULL);
  return gin[0] ? AD_OK : ad_error();
}

static ad_status checkpoint_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                                ad_tensor **tout, void *user) {
  const checkpoint_fn *cf = user;
  tout[0] = ad_jvp(cf->f, cf->ctx, ad_custom_input(c, 0), tin[0], NULL);
  return tout[0] ? AD_OK : ad_error();
}

static const ad_custom_op checkpoint_op = {
    "ad_checkpoint", 1, 1, checkpoint_forward, checkpoint_vjp,
    checkpoint_jvp};

ad_tensor *ad_checkpoint(ad_fn f, void *ctx, ad_tensor *x) {
  if (!f) {
    ad__error(AD_EINVAL, "ad_checkpoint: the function is NULL");
    return NULL;
  }
  if (!x) {
    ad__error_null_arg("ad_checkpoint", "x");
    return NULL;
  }
  checkpoint_fn *cf = malloc(sizeof *cf);
  if (!cf) {
    ad__error(AD_ENOMEM, "ad_checkpoint: out of memory");
    return NULL;
  }
  *cf = (checkpoint_fn){f, ctx};
  ad_tensor *y = NULL;
  if (apply(&checkpoint_op, cf, free, &x, &y) != AD_OK) return NULL;
  return y;
}
