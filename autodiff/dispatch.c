/* The dispatcher: runs an op's kernel, then lets every active forward
 * level and recording tape see it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ------------------------------------------------------------------------
 * The op table
 * ---------------------------------------------------------------------- */

#define AD__RULE_1(kind, name) ad__##kind##_##name
#define AD__RULE_0(kind, name) NULL
#define AD__OP_ROW_(name, arity, flags, cin, has_vjp, has_jvp)            \
  [AD__OP_##name] = {"ad_" #name,        arity,                            \
                     flags,              cin,                              \
                     ad__k_##name,       AD__RULE_##has_vjp(vjp, name),    \
                     AD__RULE_##has_jvp(jvp, name), NULL},
const ad__op ad__ops[AD__OP_COUNT] = {AD__OP_TABLE(AD__OP_ROW_)};
#undef AD__OP_ROW_

/* ------------------------------------------------------------------------
 * The context stack
 * ---------------------------------------------------------------------- */

_Thread_local ad__ctx_stack ad__contexts;

static void recount_active(void) {
  int active = 0;
  if (!ad__contexts.global_pause)
    for (int i = 0; i < ad__contexts.n; i++)
      if (ad__contexts.items[i].paused == 0) active++;
  /* A recording trace sees every op, paused or not. */
  ad__contexts.active = active + (ad__contexts.trace != NULL);
}

void ad__ctx_set_trace(void *rec) {
  ad__contexts.trace = rec;
  recount_active();
}

ad_status ad__ctx_push(int kind, void *obj) {
  ad__ctx_stack *s = &ad__contexts;
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 8;
    ad__ctx *items = realloc(s->items, (size_t)cap * sizeof *items);
    if (!items) return ad__error(AD_ENOMEM, "out of memory opening a context");
    s->items = items;
    s->cap = cap;
  }
  s->items[s->n++] = (ad__ctx){kind, obj, 0};
  recount_active();
  return AD_OK;
}

int ad__ctx_find(const void *obj) {
  for (int i = ad__contexts.n - 1; i >= 0; i--)
    if (ad__contexts.items[i].obj == obj) return i;
  return -1;
}

ad_status ad__ctx_remove(void *obj, bool strict, const char *op) {
  ad__ctx_stack *s = &ad__contexts;
  int i = ad__ctx_find(obj);
  if (i < 0) return ad__error(AD_ESTATE, "%s: it is not open", op);
  if (strict && i != s->n - 1)
    return ad__error(AD_ESTATE,
                     "%s: a %s opened after it is still open; end the "
                     "innermost first",
                     op,
                     s->items[s->n - 1].kind == AD__CTX_TAPE
                         ? "tape"
                         : "forward accumulator");
  memmove(&s->items[i], &s->items[i + 1],
          (size_t)(s->n - i - 1) * sizeof *s->items);
  s->n--;
  if (s->n == 0) {
    free(s->items);
    s->items = NULL;
    s->cap = 0;
  }
  recount_active();
  return AD_OK;
}

void ad__ctx_pause_range(int from, int to, int delta) {
  for (int i = from; i < to && i < ad__contexts.n; i++)
    ad__contexts.items[i].paused += delta;
  recount_active();
}

void ad__ctx_pause_from(int from, int delta) {
  ad__ctx_pause_range(from, ad__contexts.n, delta);
}

void ad__ctx_pause_at(int i, int delta) {
  ad__contexts.items[i].paused += delta;
  recount_active();
}

bool ad_set_anomaly_detection(bool on) {
  bool was = ad__contexts.anomaly;
  ad__contexts.anomaly = on;
  return was;
}

bool ad_anomaly_detection(void) { return ad__contexts.anomaly; }

/* The first non-finite element of t, or -1. */
static int64_t first_nonfinite(const ad_tensor *t) {
  if (t->numel == 0) return -1;
  int64_t idx[AD_MAX_DIMS] = {0};
  const double *p = t->data;
  for (int64_t n = 0; n < t->numel; n++) {
    if (!isfinite(*p)) return n;
    p += ad__next_element(t, idx);
  }
  return -1;
}

bool ad__anomaly_found(const char *op, const char *what, int nin,
                       ad_tensor *const *in, const ad_tensor *out) {
  int64_t bad = first_nonfinite(out);
  if (bad < 0) return false;
  for (int i = 0; i < nin; i++)
    if (first_nonfinite(in[i]) >= 0) return false;
  char shapes[4 * AD__SHAPE_STR] = "", one[AD__SHAPE_STR];
  size_t used = 0;
  for (int i = 0; i < nin && used < sizeof shapes - AD__SHAPE_STR - 4; i++)
    used += (size_t)snprintf(shapes + used, sizeof shapes - used, "%s%s",
                             i ? ", " : "",
                             ad__shape_str(one, in[i]->ndim, in[i]->shape));
  /* Read the value through the strides: the same walk as above. */
  ad_tensor *dense = ad__contiguous((ad_tensor *)out);
  double v = dense ? dense->data[bad] : NAN;
  ad_release(dense);
  char where[96] = "";
  if (ad__contexts.rule_op)
    snprintf(where, sizeof where, " (in the %s of %s)",
             ad__contexts.rule_kind, ad__contexts.rule_op);
  ad__error(AD_ECHECK,
            "%s: anomaly: %s %s has %g at element %lld although the "
            "inputs, of shapes %s, are finite%s",
            op, what, ad__shape_str(one, out->ndim, out->shape), v,
            (long long)bad, nin ? shapes : "()", where);
  return true;
}

bool ad_pause_recording(bool paused) {
  bool was = ad__contexts.global_pause != 0;
  ad__contexts.global_pause = paused;
  recount_active();
  return was;
}

/* ------------------------------------------------------------------------
 * Tangent propagation
 * ---------------------------------------------------------------------- */

/* The JVP of an op that is linear in its non-constant inputs: the op
 * itself applied to the tangents (zeros standing in for absent ones). */
static ad_status linear_jvp(const ad__opctx *c, ad_tensor *const *tin,
                            ad_tensor **tout) {
  ad_tensor *stack_args[4];
  ad_tensor **args = c->nin <= 4 ? stack_args
                                 : malloc((size_t)c->nin * sizeof *args);
  if (!args) return ad__error(AD_ENOMEM, "%s: out of memory", c->op->name);
  for (int i = 0; i < c->nin; i++) {
    if (ad__mask_bit(c->op->const_inputs, i))
      args[i] = c->in[i];
    else
      args[i] = tin[i] ? tin[i] : ad__zeros_like(c->in[i]);
  }
  ad__attr attr;
  if (c->attr) attr = *c->attr;
  tout[0] = ad__dispatch((ad__op_id)(c->op - ad__ops), c->nin, args,
                         c->attr ? &attr : NULL);
  if (args != stack_args) free(args);
  return tout[0] ? AD_OK : ad_error();
}

static bool same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

static ad_status rule_shape_error(const char *op, const char *what, int i,
                                  const ad_tensor *got,
                                  const ad_tensor *want) {
  char g[AD__SHAPE_STR], w[AD__SHAPE_STR];
  return ad__error(AD_EINTERNAL, "%s: %s %d has shape %s, expected %s", op,
                   what, i, ad__shape_str(g, got->ndim, got->shape),
                   ad__shape_str(w, want->ndim, want->shape));
}

#define MAX_OUT 16

/* Propagate tangents through the level at stack index li. */
static ad_status propagate_level(int li, const ad__op *op, int nin,
                                 ad_tensor *const *in, int nout,
                                 ad_tensor *const *out, const ad__attr *attr,
                                 void *extra) {
  ad_fwd *acc = ad__contexts.items[li].obj;
  ad_tensor *tin_stack[4];
  ad_tensor **tin = nin <= 4 ? tin_stack : calloc((size_t)nin, sizeof *tin);
  if (!tin) return ad__error(AD_ENOMEM, "%s: out of memory", op->name);
  bool any = false;
  for (int i = 0; i < nin; i++) {
    tin[i] = ad__mask_bit(op->const_inputs, i) ? NULL
                                             : ad__fwd_tangent(acc, in[i]);
    any |= tin[i] != NULL;
  }
  ad_status st = AD_OK;
  if (any) {
    ad__jvp_fn jvp = op->jvp;
    if (!jvp && (op->flags & AD__OP_LINEAR)) jvp = linear_jvp;
    if (!jvp) {
      st = ad__error(AD_EUNIMPL, "%s: no forward-mode (JVP) rule",
                     op->name);
    } else {
      ad__opctx c = {op, nin, nout, in, out, attr, extra,
                     nout == 1 ? ad__broadcast_mask(nin, in, out[0]) : 0};
      ad_tensor *tout[MAX_OUT] = {0};
      /* Only contexts opened before this level see the rule's ops. */
      ad__ctx_pause_from(li, +1);
      ad_scope_begin();
      unsigned long errors_before = ad__error_count();
      const char *outer_op = ad__contexts.rule_op;
      const char *outer_kind = ad__contexts.rule_kind;
      ad__contexts.rule_op = op->name;
      ad__contexts.rule_kind = "JVP";
      st = jvp(&c, tin, tout);
      ad__contexts.rule_op = outer_op;
      ad__contexts.rule_kind = outer_kind;
      /* A rule that took a failed op's NULL for a zero still fails. */
      if (st == AD_OK && ad__error_count() != errors_before && ad_error())
    st = ad_error();
      for (int j = 0; st == AD_OK && j < nout; j++)
        if (tout[j] && !same_shape(tout[j], out[j]))
          st = rule_shape_error(op->name, "JVP of output", j, tout[j],
                                out[j]);
      for (int j = 0; st == AD_OK && j < nout; j++)
        if (tout[j]) st = ad__fwd_set_tangent(acc, out[j], tout[j]);
      ad_scope_end();
      ad__ctx_pause_from(li, -1);
    }
  }
  if (tin != tin_stack) free(tin);
  return st;
}

ad_status ad__record(const ad__op *op, int nin, ad_tensor *const *in,
                     int nout, ad_tensor *const *out, bool fresh_outputs,
                     const ad__attr *attr, void *extra,
                     void (*retain_extra)(void *)) {
  if (ad__contexts.trace) {
    ad_status st = ad__trace_record(op, nin, in, nout, out, attr);
    if (st != AD_OK) return st;
  }
  if (op->flags & AD__OP_NONDIFF) return AD_OK;
  if (nout > MAX_OUT)
    return ad__error(AD_EINVAL, "%s: at most %d outputs are supported",
                     op->name, MAX_OUT);
  ad__ctx_stack *s = &ad__contexts;
  if (s->global_pause) return AD_OK;
  /* Outermost first, tapes and levels alike: when a level's JVP rule runs
   * (reading the output, say), every context opened before it must
   * already know the output, or it would take the output for a constant
   * and differentiate the rule wrongly. */
  for (int i = 0; i < s->n; i++) {
    if (s->items[i].paused) continue;
    ad_status st;
    if (s->items[i].kind == AD__CTX_LEVEL) {
      st = propagate_level(i, op, nin, in, nout, out, attr, extra);
    } else {
      ad_tape *tape = s->items[i].obj;
      if (!ad__tape_tracks_any(tape, nin, in, op->const_inputs)) continue;
      st = ad__tape_record(tape, op, nin, in, nout, out, fresh_outputs, attr,
                           extra, retain_extra);
    }
    if (st != AD_OK) return st;
  }
  return AD_OK;
}

ad_tensor *ad__dispatch(ad__op_id id, int nin, ad_tensor *const *in,
                        const ad__attr *attr) {
  const ad__op *op = &ad__ops[id];
  for (int i = 0; i < nin; i++) {
    if (!in[i]) {
      char arg[32];
      snprintf(arg, sizeof arg, "input %d", i);
      ad__error_null_arg(op->name, arg);
      return NULL;
    }
#ifdef AD_DEBUG_POOL
    if (ad__tensor_released(in[i])) {
      ad__error(AD_EINVAL,
                "%s: input %d was released (its last reference went) and "
                "is passed again",
                op->name, i);
      return NULL;
    }
#endif
  }
  ad_tensor *out = op->kernel(nin, in, attr);
  if (!out) return NULL;
  if (__builtin_expect(ad__contexts.anomaly, 0) &&
      ad__anomaly_found(op->name, "output", nin, in, out)) {
    ad_release(out);
    return NULL;
  }
  /* The no-AD path: one thread-local check. */
  if (!ad__ad_active()) return ad__own(out);
  if (ad__record(op, nin, in, 1, &out, true, attr, NULL, NULL) != AD_OK) {
    ad_release(out);
    return NULL;
  }
  return ad__own(out);
}
