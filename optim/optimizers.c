/* Built-in first-order optimizers over variables (SGD with momentum, Adam,
 * L-BFGS) and their state as named tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad/optim.h"
#include "internal.h"

typedef enum kind { SGD, ADAM, LBFGS } kind;

static const char *const kind_names[] = {"sgd", "adam", "lbfgs"};

/* Where variable i lives in the flat vector of all elements. */
typedef struct var_layout {
  int ndim;
  int64_t shape[AD_MAX_DIMS];
  int64_t numel, offset;
} var_layout;

/* One entry of the exported state. */
typedef enum entry_kind {
  E_ITERATIONS, E_LR, E_SLOT0, E_SLOT1, E_XPREV, E_GPREV, E_S, E_Y
} entry_kind;

typedef struct entry {
  entry_kind kind;
  int var; /* E_SLOT0, E_SLOT1 */
  char name[40];
} entry;

struct ad_optimizer {
  kind kind;
  double lr, momentum, beta1, beta2, eps;
  int history;
  int64_t iterations;

  /* The layout, fixed by the first step or a loaded state.  nvars == 0
   * means unknown; total may be known without it (a loaded L-BFGS). */
  int nvars;
  var_layout *vars;
  int64_t total;

  /* SGD velocity (slot0), Adam's m (slot0) and v (slot1), over all
   * elements; NULL before the first step or without momentum. */
  double *slot0, *slot1;

  /* L-BFGS: the last point and gradient, and a ring of pairs. */
  bool have_prev;
  double *x_prev, *g_prev, *s, *y, *rho;
  int pairs, newest; /* pairs kept; ring index of the newest */

  /* Scratch: the point, the gradient, the direction, two-loop weights,
   * and (L-BFGS) what a failing call restores: x_prev, g_prev and the
   * pair slot it overwrote. */
  double *x, *g, *d, *alpha, *backup;

  entry *entries;
  int64_t nentries, entries_cap;
};

/* ------------------------------------------------------------------------
 * Construction
 * ---------------------------------------------------------------------- */

static bool lr_ok(const char *op, double lr) {
  if (isfinite(lr) && lr > 0) return true;
  ad__error(AD_EINVAL, "%s: lr must be positive and finite, got %g", op,
            lr);
  return false;
}

static bool reserve_entries(ad_optimizer *opt, int nvars);
static void refresh_entries(ad_optimizer *opt);

static ad_optimizer *new_optimizer(const char *op, kind k, double lr) {
  ad_optimizer *opt = calloc(1, sizeof *opt);
  if (!opt) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  opt->kind = k;
  opt->lr = lr;
  if (!reserve_entries(opt, 0)) {
    free(opt);
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  refresh_entries(opt);
  return opt;
}

ad_optimizer *ad_optimizer_sgd(double lr, double momentum) {
  const char *op = "ad_optimizer_sgd";
  if (!lr_ok(op, lr)) return NULL;
  if (!(momentum >= 0 && momentum < 1)) {
    ad__error(AD_EINVAL, "%s: momentum must be in [0, 1), got %g", op,
              momentum);
    return NULL;
  }
  ad_optimizer *opt = new_optimizer(op, SGD, lr);
  if (opt) opt->momentum = momentum;
  return opt;
}

ad_optimizer *ad_optimizer_adam(double lr, double beta1, double beta2,
                                double eps) {
  const char *op = "ad_optimizer_adam";
  if (!lr_ok(op, lr)) return NULL;
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
    ad__error(AD_EINVAL, "%s: beta1 and beta2 must be in [0, 1), got %g "
                         "and %g",
              op, beta1, beta2);
    return NULL;
  }
  if (!(eps > 0 && isfinite(eps))) {
    ad__error(AD_EINVAL, "%s: eps must be positive and finite, got %g", op,
              eps);
    return NULL;
  }
  ad_optimizer *opt = new_optimizer(op, ADAM, lr);
  if (opt) {
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
  }
  return opt;
}

#define LBFGS_MAX_HISTORY 1000

ad_optimizer *ad_optimizer_lbfgs(double lr, int history) {
  const char *op = "ad_optimizer_lbfgs";
  if (!lr_ok(op, lr)) return NULL;
  if (history < 1 || history > LBFGS_MAX_HISTORY) {
    ad__error(AD_EINVAL, "%s: history must be in 1..%d, got %d", op,
              LBFGS_MAX_HISTORY, history);
    return NULL;
  }
  ad_optimizer *opt = new_optimizer(op, LBFGS, lr);
  if (opt) opt->history = history;
  return opt;
}

/* Free the layout and every array (the state), keeping hyperparameters. */
static void clear_state(ad_optimizer *opt) {
  double **arrays[] = {&opt->slot0, &opt->slot1, &opt->x_prev,
                       &opt->g_prev, &opt->s,    &opt->y,
                       &opt->rho,   &opt->x,     &opt->g,
                       &opt->d,     &opt->alpha, &opt->backup};
  for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
    free(*arrays[i]);
    *arrays[i] = NULL;
  }
  free(opt->vars);
  opt->vars = NULL;
  opt->nvars = 0;
  opt->total = 0;
  opt->have_prev = false;
  opt->pairs = opt->newest = 0;
  opt->iterations = 0;
}

void ad_optimizer_free(ad_optimizer *opt) {
  if (!opt) return;
  clear_state(opt);
  free(opt->entries);
  free(opt);
}

/* Allocate the arrays for `total` elements (the state zeroed).  False on
 * out of memory, with the arrays left NULL. */
static bool alloc_arrays(ad_optimizer *opt, int64_t total) {
  size_t n = (size_t)(total > 0 ? total : 1);
  bool ok = (opt->x = calloc(n, sizeof(double))) &&
            (opt->g = calloc(n, sizeof(double))) &&
            (opt->d = calloc(n, sizeof(double)));
  if (ok && opt->kind == SGD && opt->momentum > 0)
    ok = (opt->slot0 = calloc(n, sizeof(double))) != NULL;
  if (ok && opt->kind == ADAM)
    ok = (opt->slot0 = calloc(n, sizeof(double))) &&
         (opt->slot1 = calloc(n, sizeof(double)));
  if (ok && opt->kind == LBFGS) {
    size_t h = (size_t)opt->history;
    ok = (opt->x_prev = calloc(n, sizeof(double))) &&
         (opt->g_prev = calloc(n, sizeof(double))) &&
         (opt->s = calloc(n * h, sizeof(double))) &&
         (opt->y = calloc(n * h, sizeof(double))) &&
         (opt->rho = calloc(h, sizeof(double))) &&
         (opt->alpha = calloc(h, sizeof(double))) &&
         (opt->backup = calloc(4 * n, sizeof(double)));
  }
  return ok;
}

/* ------------------------------------------------------------------------
 * The state's entries
 * ---------------------------------------------------------------------- */

/* Room in the table for the entries of nvars variables; false on out of
 * memory (the table as it was).  Callers reserve before they commit a
 * layout, so that refresh_entries never needs memory. */
static bool reserve_entries(ad_optimizer *opt, int nvars) {
  int64_t cap = 6 + 2 * (int64_t)nvars;
  if (cap <= opt->entries_cap) return true;
  entry *e = realloc(opt->entries, (size_t)cap * sizeof *e);
  if (!e) return false;
  opt->entries = e;
  opt->entries_cap = cap;
  return true;
}

/* Rebuild the table of entries from the state. */
static void refresh_entries(ad_optimizer *opt) {
  const char *k = kind_names[opt->kind];
  entry *e = opt->entries;
  int64_t n = 0;
  e[n] = (entry){E_ITERATIONS, 0, ""};
  snprintf(e[n++].name, sizeof e->name, "%s/iterations", k);
  e[n] = (entry){E_LR, 0, ""};
  snprintf(e[n++].name, sizeof e->name, "%s/lr", k);
  if (opt->slot0)
    for (int i = 0; i < opt->nvars; i++) {
      e[n] = (entry){E_SLOT0, i, ""};
      snprintf(e[n++].name, sizeof e->name, "%s/%s/%d", k,
               opt->kind == SGD ? "velocity" : "m", i);
    }
  if (opt->slot1)
    for (int i = 0; i < opt->nvars; i++) {
      e[n] = (entry){E_SLOT1, i, ""};
      snprintf(e[n++].name, sizeof e->name, "%s/v/%d", k, i);
    }
  if (opt->kind == LBFGS && opt->have_prev) {
    static const struct {
      entry_kind kind;
      const char *name;
    } vecs[] = {{E_XPREV, "lbfgs/x_prev"},
                {E_GPREV, "lbfgs/g_prev"},
                {E_S, "lbfgs/s"},
                {E_Y, "lbfgs/y"}};
    for (int j = 0; j < 4; j++) {
      e[n] = (entry){vecs[j].kind, 0, ""};
      snprintf(e[n++].name, sizeof e->name, "%s", vecs[j].name);
    }
  }
  opt->nentries = n;
}

int64_t ad_optimizer_state_count(const ad_optimizer *opt) {
  if (!opt) {
    ad__error_null_arg("ad_optimizer_state_count", "opt");
    return -1;
  }
  return opt->nentries;
}

static const entry *entry_at(const ad_optimizer *opt, int64_t i,
                             const char *op) {
  if (!opt) {
    ad__error_null_arg(op, "opt");
    return NULL;
  }
  if (i < 0 || i >= opt->nentries) {
    ad__error(AD_EINVAL, "%s: entry %lld is out of range (the %s optimizer "
                         "has %lld)",
              op, (long long)i, kind_names[opt->kind],
              (long long)opt->nentries);
    return NULL;
  }
  return &opt->entries[i];
}

const char *ad_optimizer_state_name(const ad_optimizer *opt, int64_t i) {
  const entry *e = entry_at(opt, i, "ad_optimizer_state_name");
  return e ? e->name : NULL;
}

/* The ring of L-BFGS pairs, oldest first, as a (pairs, total) tensor. */
static ad_tensor *history_tensor(const ad_optimizer *opt, const double *ring) {
  const int64_t shape[2] = {opt->pairs, opt->total};
  ad_tensor *t = ad_tensor_new(2, shape, NULL);
  if (!t) return NULL;
  double *out = t->data;
  for (int k = 0; k < opt->pairs; k++) {
    int slot = (opt->newest - opt->pairs + 1 + k + opt->history) %
               opt->history;
    memcpy(out + (int64_t)k * opt->total, ring + (int64_t)slot * opt->total,
           (size_t)opt->total * sizeof(double));
  }
  return t;
}

ad_tensor *ad_optimizer_state_tensor(const ad_optimizer *opt, int64_t i) {
  const entry *e = entry_at(opt, i, "ad_optimizer_state_tensor");
  if (!e) return NULL;
  const int64_t n1[1] = {opt->total};
  const var_layout *v = e->kind == E_SLOT0 || e->kind == E_SLOT1
                            ? &opt->vars[e->var]
                            : NULL;
  switch (e->kind) {
  case E_ITERATIONS:
    return ad_scalar((double)opt->iterations);
  case E_LR:
    return ad_scalar(opt->lr);
  case E_SLOT0:
    return ad_tensor_new(v->ndim, v->shape, opt->slot0 + v->offset);
  case E_SLOT1:
    return ad_tensor_new(v->ndim, v->shape, opt->slot1 + v->offset);
  case E_XPREV:
    return ad_tensor_new(1, n1, opt->x_prev);
  case E_GPREV:
    return ad_tensor_new(1, n1, opt->g_prev);
  case E_S:
    return history_tensor(opt, opt->s);
  case E_Y:
    return history_tensor(opt, opt->y);
  }
  return NULL;
}

/* ------------------------------------------------------------------------
 * Loading a state
 * ---------------------------------------------------------------------- */

/* Copy t's values (checked count) into out. */
static void read_into(const ad_tensor *t, double *out) {
  ad_read(t, out, t->numel);
}

static bool same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

/* Parse "KIND/SLOT" or "KIND/SLOT/I"; false when malformed. */
static bool parse_name(const char *name, char *kind_out, char *slot_out,
                       long *index) {
  *index = -1;
  const char *a = strchr(name, '/');
  if (!a || a == name || a - name >= 16) return false;
  memcpy(kind_out, name, (size_t)(a - name));
  kind_out[a - name] = '\0';
  const char *b = strchr(a + 1, '/');
  size_t slot_len = b ? (size_t)(b - a - 1) : strlen(a + 1);
  if (slot_len == 0 || slot_len >= 16) return false;
  memcpy(slot_out, a + 1, slot_len);
  slot_out[slot_len] = '\0';
  if (!b) return true;
  char *end;
  long i = strtol(b + 1, &end, 10);
  if (end == b + 1 || *end || i < 0 || i > 1000000) return false;
  *index = i;
  return true;
}

ad_status ad_optimizer_load_state(ad_optimizer *opt, int64_t count,
                                  const char *const *names,
                                  ad_tensor *const *tensors) {
  const char *op = "ad_optimizer_load_state";
  if (!opt) {
    ad__error_null_arg(op, "opt");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (count < 0 || (count > 0 && (!names || !tensors)))
    return ad__error(AD_EINVAL, "%s: need count >= 0 entries and non-NULL "
                                "names and tensors, got count %lld",
                     op, (long long)count);
  const char *kname = kind_names[opt->kind];
  /* Sort the entries into slots, checking names and one-element values. */
  const ad_tensor *iter_t = NULL, *lr_t = NULL, *vecs[4] = {NULL};
  int64_t nslot = 0;
  long max_index = -1;
  const ad_tensor **slot[2] = {NULL, NULL};
  if (count > 0) {
    slot[0] = calloc((size_t)count, sizeof *slot[0]);
    slot[1] = calloc((size_t)count, sizeof *slot[1]);
    if (!slot[0] || !slot[1]) {
      free(slot[0]);
      free(slot[1]);
      return ad__error(AD_ENOMEM, "%s: out of memory", op);
    }
  }
  ad_status st = AD_OK;
  for (int64_t i = 0; i < count && st == AD_OK; i++) {
    const char *name = names[i];
    const ad_tensor *t = tensors[i];
    char k[16], s[16];
    long idx;
    if (!name || !t) {
      st = ad__error(AD_EINVAL, "%s: entry %lld has a NULL %s", op,
                     (long long)i, name ? "tensor" : "name");
      break;
    }
    if (!parse_name(name, k, s, &idx)) {
      st = ad__error(AD_EINVAL, "%s: '%s' is not a state name of the form "
                                "KIND/SLOT or KIND/SLOT/I",
                     op, name);
      break;
    }
    if (strcmp(k, kname) != 0) {
      st = ad__error(AD_EINVAL, "%s: '%s' belongs to a %s optimizer, this "
                                "one is %s",
                     op, name, k, kname);
      break;
    }
    const ad_tensor **target = NULL;
    int which = -1;
    if (idx < 0 && !strcmp(s, "iterations")) target = &iter_t;
    else if (idx < 0 && !strcmp(s, "lr")) target = &lr_t;
    else if (opt->kind == LBFGS && idx < 0) {
      static const char *const vn[4] = {"x_prev", "g_prev", "s", "y"};
      for (int j = 0; j < 4; j++)
        if (!strcmp(s, vn[j])) target = &vecs[j];
    } else if (idx >= 0 && idx < count) {
      if ((opt->kind == SGD && !strcmp(s, "velocity") &&
           opt->momentum > 0) ||
          (opt->kind == ADAM && !strcmp(s, "m")))
        which = 0;
      else if (opt->kind == ADAM && !strcmp(s, "v"))
        which = 1;
      if (which >= 0) target = &slot[which][idx];
    }
    if (!target) {
      st = ad__error(AD_EINVAL, "%s: '%s' is not part of the state of this "
                                "%s optimizer",
                     op, name, kname);
      break;
    }
    if (*target) {
      st = ad__error(AD_EINVAL, "%s: '%s' is given twice", op, name);
      break;
    }
    *target = t;
    if (which >= 0) {
      nslot++;
      if (idx > max_index) max_index = idx;
    }
  }
  /* Scalars. */
  double iters = 0, lr = opt->lr;
  if (st == AD_OK && count > 0 && !iter_t)
    st = ad__error(AD_EINVAL, "%s: %s/iterations is missing", op, kname);
  if (st == AD_OK && iter_t) {
    iters = iter_t->numel == 1 ? ad_item(iter_t) : NAN;
    if (!(iters >= 0 && iters <= 9e15 && iters == floor(iters)))
      st = ad__error(AD_EINVAL, "%s: %s/iterations must hold one whole "
                                "number >= 0",
                     op, kname);
  }
  if (st == AD_OK && lr_t) {
    lr = lr_t->numel == 1 ? ad_item(lr_t) : NAN;
    if (!lr_ok(op, lr)) st = AD_EINVAL;
  }
  /* Per-variable slots: indices 0..max_index, complete, with equal shapes
   * for Adam's m and v. */
  int nvars = (int)(max_index + 1);
  int nslots = opt->kind == ADAM ? 2 : 1;
  for (int i = 0; st == AD_OK && i < nvars; i++)
    for (int w = 0; w < nslots && st == AD_OK; w++)
      if (!slot[w][i])
        st = ad__error(AD_EINVAL, "%s: %s/%s/%d is missing (the state has "
                                  "variables up to %d)",
                       op, kname,
                       opt->kind == SGD ? "velocity" : w ? "v" : "m", i,
                       nvars - 1);
  for (int i = 0; st == AD_OK && opt->kind == ADAM && i < nvars; i++)
    if (!same_shape(slot[0][i], slot[1][i])) {
      char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
      st = ad__error(AD_ESHAPE, "%s: adam/m/%d has shape %s but adam/v/%d "
                                "has %s",
                     op, i, ad__shape_str(a, slot[0][i]->ndim,
                                          slot[0][i]->shape),
                     i, ad__shape_str(b, slot[1][i]->ndim,
                                      slot[1][i]->shape));
    }
  /* L-BFGS vectors: all four or none, x_prev and g_prev (N,), s and y
   * (K, N) with K <= history. */
  int nvec = 0;
  for (int j = 0; j < 4; j++) nvec += vecs[j] != NULL;
  int64_t total = 0, pairs = 0;
  if (st == AD_OK && nvec != 0 && nvec != 4)
    st = ad__error(AD_EINVAL, "%s: lbfgs/x_prev, lbfgs/g_prev, lbfgs/s "
                              "and lbfgs/y go together; %d of them given",
                   op, nvec);
  if (st == AD_OK && nvec == 4) {
    total = vecs[0]->numel;
    pairs = vecs[2]->ndim == 2 ? vecs[2]->shape[0] : -1;
    bool ok = vecs[0]->ndim == 1 && vecs[1]->ndim == 1 &&
              vecs[1]->numel == total && total > 0 && pairs >= 0 &&
              pairs <= opt->history && same_shape(vecs[2], vecs[3]) &&
              vecs[2]->shape[1] == total;
    if (!ok) {
      char a[4][AD__SHAPE_STR];
      for (int j = 0; j < 4; j++)
        ad__shape_str(a[j], vecs[j]->ndim, vecs[j]->shape);
      st = ad__error(AD_ESHAPE, "%s: lbfgs/x_prev %s, lbfgs/g_prev %s, "
                                "lbfgs/s %s and lbfgs/y %s do not fit: "
                                "need (N,), (N,), (K, N), (K, N) with K <= "
                                "%d",
                     op, a[0], a[1], a[2], a[3], opt->history);
    }
  }
  /* Build the new state aside, then swap it in. */
  ad_optimizer fresh = *opt;
  fresh.vars = NULL;
  fresh.entries = NULL;
  fresh.entries_cap = 0;
  fresh.slot0 = fresh.slot1 = fresh.x_prev = fresh.g_prev = NULL;
  fresh.s = fresh.y = fresh.rho = fresh.x = fresh.g = fresh.d = NULL;
  fresh.alpha = fresh.backup = NULL;
  fresh.nvars = 0;
  fresh.total = 0;
  fresh.have_prev = false;
  fresh.pairs = fresh.newest = 0;
  if (st == AD_OK && nvars > 0) {
    fresh.vars = calloc((size_t)nvars, sizeof *fresh.vars);
    if (!fresh.vars) st = ad__error(AD_ENOMEM, "%s: out of memory", op);
    int64_t offset = 0;
    for (int i = 0; st == AD_OK && i < nvars; i++) {
      var_layout *v = &fresh.vars[i];
      v->ndim = slot[0][i]->ndim;
      memcpy(v->shape, slot[0][i]->shape, sizeof v->shape);
      v->numel = slot[0][i]->numel;
      v->offset = offset;
      offset += v->numel;
    }
    fresh.nvars = nvars;
    fresh.total = offset;
  } else if (st == AD_OK && nvec == 4) {
    fresh.total = total;
  }
  if (st == AD_OK && fresh.total > 0 && !alloc_arrays(&fresh, fresh.total))
    st = ad__error(AD_ENOMEM, "%s: out of memory", op);
  if (st == AD_OK && !reserve_entries(opt, nvars))
    st = ad__error(AD_ENOMEM, "%s: out of memory", op);
  if (st == AD_OK) {
    for (int i = 0; i < nvars; i++) {
      read_into(slot[0][i], fresh.slot0 + fresh.vars[i].offset);
      if (opt->kind == ADAM)
        read_into(slot[1][i], fresh.slot1 + fresh.vars[i].offset);
    }
    if (nvec == 4) {
      read_into(vecs[0], fresh.x_prev);
      read_into(vecs[1], fresh.g_prev);
      if (pairs > 0) {
        read_into(vecs[2], fresh.s);
        read_into(vecs[3], fresh.y);
      }
      fresh.have_prev = true;
      fresh.pairs = (int)pairs;
      fresh.newest = (int)pairs - 1;
      if (fresh.newest < 0) fresh.newest = 0;
      for (int k = 0; k < fresh.pairs; k++) {
        double sy = 0;
        for (int64_t j = 0; j < total; j++)
          sy += fresh.s[k * total + j] * fresh.y[k * total + j];
        fresh.rho[k] = sy != 0 ? 1.0 / sy : 0.0;
      }
    }
    fresh.iterations = (int64_t)iters;
    fresh.lr = lr;
  }
  free(slot[0]);
  free(slot[1]);
  if (st != AD_OK) {
    clear_state(&fresh);
    return st;
  }
  entry *keep_entries = opt->entries;
  int64_t keep_cap = opt->entries_cap;
  clear_state(opt);
  *opt = fresh;
  opt->entries = keep_entries;
  opt->entries_cap = keep_cap;
  refresh_entries(opt);
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * Settings
 * ---------------------------------------------------------------------- */

const char *ad_optimizer_name(const ad_optimizer *opt) {
  if (!opt) {
    ad__error_null_arg("ad_optimizer_name", "opt");
    return "";
  }
  return kind_names[opt->kind];
}

int64_t ad_optimizer_iterations(const ad_optimizer *opt) {
  if (!opt) {
    ad__error_null_arg("ad_optimizer_iterations", "opt");
    return -1;
  }
  return opt->iterations;
}

double ad_optimizer_lr(const ad_optimizer *opt) {
  if (!opt) {
    ad__error_null_arg("ad_optimizer_lr", "opt");
    return NAN;
  }
  return opt->lr;
}

ad_status ad_optimizer_set_lr(ad_optimizer *opt, double lr) {
  if (!opt) {
    ad__error_null_arg("ad_optimizer_set_lr", "opt");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (!lr_ok("ad_optimizer_set_lr", lr)) return AD_EINVAL;
  opt->lr = lr;
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * One call's bookkeeping: reading the variables and gradients, assigning
 * the variables, and undoing everything when the call fails
 * ---------------------------------------------------------------------- */

typedef struct call {
  ad_optimizer *opt;
  const char *op;
  int n;
  ad_var *const *vars;
  ad_tensor **orig;  /* the variables' values on entry */
  bool made_layout;  /* this call fixed the layout... */
  bool made_arrays;  /* ...and allocated the state */
  /* L-BFGS: the ring's bookkeeping before lbfgs_prepare. */
  bool saved;
  int pairs, newest, slot;
  bool have_prev;
  double rho;
} call;

static const char *var_name(ad_var *v) {
  const char *name = ad_var_name(v);
  return name[0] ? name : "(unnamed)";
}

static bool layout_matches(const var_layout *v, const ad_tensor *t) {
  if (t->ndim != v->ndim) return false;
  for (int d = 0; d < v->ndim; d++)
    if (t->shape[d] != v->shape[d]) return false;
  return true;
}

/* Check n and vars and remember their values; fix the layout on the first
 * step (allocating the state) or check the variables against it. */
static ad_status begin_call(call *c, ad_optimizer *opt, const char *op,
                            int n, ad_var *const *vars) {
  *c = (call){opt, op, n, vars, NULL, false, false, false, 0, 0, 0, false,
              0};
  if (n < 1 || !vars)
    return ad__error(AD_EINVAL, "%s: need n >= 1 variables and a non-NULL "
                                "array, got n = %d",
                     op, n);
  for (int i = 0; i < n; i++)
    if (!vars[i]) return ad__error(AD_EINVAL, "%s: vars[%d] is NULL", op, i);
  if (opt->nvars > 0 && n != opt->nvars)
    return ad__error(AD_EINVAL, "%s: the %s optimizer was set up for %d "
                                "variables, got %d",
                     op, kind_names[opt->kind], opt->nvars, n);
  c->orig = calloc((size_t)n, sizeof *c->orig);
  if (!c->orig) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    c->orig[i] = ad_var_value(vars[i]);
    if (!c->orig[i]) return ad_error() ? ad_error() : AD_EINVAL;
    total += c->orig[i]->numel;
    if (opt->nvars > 0 && !layout_matches(&opt->vars[i], c->orig[i])) {
      char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
      return ad__error(AD_ESHAPE, "%s: variable %d ('%s') has shape %s, "
                                  "the optimizer's state is for %s",
                       op, i, var_name(vars[i]),
                       ad__shape_str(a, c->orig[i]->ndim, c->orig[i]->shape),
                       ad__shape_str(b, opt->vars[i].ndim,
                                     opt->vars[i].shape));
    }
  }
  if (opt->nvars > 0) return AD_OK;
  if (opt->total > 0 && total != opt->total)
    return ad__error(AD_ESHAPE, "%s: the variables hold %lld elements, the "
                                "optimizer's state is for %lld",
                     op, (long long)total, (long long)opt->total);
  var_layout *layout = calloc((size_t)n, sizeof *layout);
  if (!layout || !reserve_entries(opt, n)) {
    free(layout);
    return ad__error(AD_ENOMEM, "%s: out of memory", op);
  }
  int64_t offset = 0;
  for (int i = 0; i < n; i++) {
    layout[i].ndim = c->orig[i]->ndim;
    memcpy(layout[i].shape, c->orig[i]->shape, sizeof layout[i].shape);
    layout[i].numel = c->orig[i]->numel;
    layout[i].offset = offset;
    offset += layout[i].numel;
  }
  if (opt->total == 0) {
    if (!alloc_arrays(opt, total)) {
      free(layout);
      clear_state(opt);
      return ad__error(AD_ENOMEM, "%s: out of memory", op);
    }
    opt->total = total;
    c->made_arrays = true;
  }
  opt->vars = layout;
  opt->nvars = n;
  c->made_layout = true;
  return AD_OK;
}

/* Save what lbfgs_prepare changes: x_prev, g_prev and the ring slot a new
 * pair would take. */
static void save_lbfgs(call *c) {
  ad_optimizer *opt = c->opt;
  int64_t n = opt->total;
  c->saved = true;
  c->pairs = opt->pairs;
  c->newest = opt->newest;
  c->have_prev = opt->have_prev;
  c->slot = opt->pairs == 0 ? 0 : (opt->newest + 1) % opt->history;
  c->rho = opt->rho[c->slot];
  memcpy(opt->backup, opt->x_prev, (size_t)n * sizeof(double));
  memcpy(opt->backup + n, opt->g_prev, (size_t)n * sizeof(double));
  memcpy(opt->backup + 2 * n, opt->s + c->slot * n, (size_t)n * sizeof(double));
  memcpy(opt->backup + 3 * n, opt->y + c->slot * n, (size_t)n * sizeof(double));
}

/* Finish a call: on failure put the variables and the optimizer back. */
static ad_status end_call(call *c, ad_status st) {
  ad_optimizer *opt = c->opt;
  if (st == AD_OK) {
    opt->iterations++;
    refresh_entries(opt);
  } else {
    if (c->orig)
      for (int i = 0; i < c->n; i++)
        if (c->orig[i]) ad_var_assign(c->vars[i], c->orig[i]);
    if (c->saved) {
      int64_t n = opt->total;
      opt->pairs = c->pairs;
      opt->newest = c->newest;
      opt->have_prev = c->have_prev;
      opt->rho[c->slot] = c->rho;
      memcpy(opt->x_prev, opt->backup, (size_t)n * sizeof(double));
      memcpy(opt->g_prev, opt->backup + n, (size_t)n * sizeof(double));
      memcpy(opt->s + c->slot * n, opt->backup + 2 * n,
             (size_t)n * sizeof(double));
      memcpy(opt->y + c->slot * n, opt->backup + 3 * n,
             (size_t)n * sizeof(double));
    }
    if (c->made_arrays) {
      clear_state(opt);
    } else if (c->made_layout) {
      free(opt->vars);
      opt->vars = NULL;
      opt->nvars = 0;
    }
  }
  free(c->orig);
  return st;
}

/* Read the variables' values on entry into opt->x. */
static void read_vars(call *c) {
  ad_optimizer *opt = c->opt;
  for (int i = 0; i < opt->nvars; i++)
    read_into(c->orig[i], opt->x + opt->vars[i].offset);
}

/* Whether every value is finite, in one branch-free pass that vectorizes
 * (x - x is 0 exactly when x is finite). */
static bool all_finite(const double *restrict x, int64_t n) {
  int bad = 0;
  for (int64_t j = 0; j < n; j++) bad |= !(x[j] - x[j] == 0.0);
  return !bad;
}

/* Check the gradients (shapes, finite values) and read them into
 * opt->g. */
static ad_status read_grads(call *c, ad_tensor *const *grads) {
  ad_optimizer *opt = c->opt;
  const char *op = c->op;
  if (!grads) return ad__error(AD_EINVAL, "%s: grads is NULL", op);
  for (int i = 0; i < opt->nvars; i++) {
    const var_layout *v = &opt->vars[i];
    const ad_tensor *g = grads[i];
    if (!g) {
      if (ad_error() != AD_OK) return ad_error();
      return ad__error(AD_EINVAL, "%s: grads[%d] (for '%s') is NULL", op, i,
                       var_name(c->vars[i]));
    }
    if (!layout_matches(v, g)) {
      char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
      return ad__error(AD_ESHAPE, "%s: grads[%d] has shape %s but variable "
                                  "%d ('%s') has %s",
                       op, i, ad__shape_str(a, g->ndim, g->shape), i,
                       var_name(c->vars[i]),
                       ad__shape_str(b, v->ndim, v->shape));
    }
    double *out = opt->g + v->offset;
    read_into(g, out);
    if (!all_finite(out, v->numel)) {
      int64_t j = 0;
      while (isfinite(out[j])) j++;
      return ad__error(AD_EINVAL, "%s: grads[%d] (for '%s') holds %g at "
                                  "element %lld",
                       op, i, var_name(c->vars[i]), out[j], (long long)j);
    }
  }
  return AD_OK;
}

/* Assign x (flat) to the variables.  Every new value is made before any
 * is assigned, so out of memory assigns nothing. */
static ad_status write_vars(call *c, const double *x) {
  ad_optimizer *opt = c->opt;
  ad_tensor **values = malloc((size_t)opt->nvars * sizeof *values);
  if (!values) return ad__error(AD_ENOMEM, "%s: out of memory", c->op);
  ad_status st = AD_OK;
  for (int i = 0; i < opt->nvars && st == AD_OK; i++) {
    const var_layout *v = &opt->vars[i];
    values[i] = ad_tensor_new(v->ndim, v->shape, x + v->offset);
    if (!values[i])
      st = ad_error() ? ad_error()
                      : ad__error(AD_ENOMEM, "%s: out of memory", c->op);
  }
  for (int i = 0; i < opt->nvars && st == AD_OK; i++)
    st = ad_var_assign(c->vars[i], values[i]);
  free(values);
  return st;
}

/* ------------------------------------------------------------------------
 * The updates.  SGD and Adam compute the new slots into scratch arrays
 * and swap them in only once the variables are assigned.
 * ---------------------------------------------------------------------- */

static void swap(double **a, double **b) {
  double *t = *a;
  *a = *b;
  *b = t;
}

/* New x into opt->x, new velocity into opt->d. */
static void update_sgd(ad_optimizer *opt) {
  double *x = opt->x, *g = opt->g, *v = opt->slot0, lr = opt->lr;
  if (!v) {
    for (int64_t j = 0; j < opt->total; j++) x[j] -= lr * g[j];
    return;
  }
  double mu = opt->momentum, *vn = opt->d;
  bool first = opt->iterations == 0;
  for (int64_t j = 0; j < opt->total; j++) {
    vn[j] = first ? g[j] : mu * v[j] + g[j];
    x[j] -= lr * vn[j];
  }
}

/* New x into opt->x, new m into opt->d, new v into opt->g. */
/* The loop runs over local restrict pointers and constants so that it
 * vectorizes (the Makefile builds this file with -ftree-vectorize and
 * -fno-math-errno: sqrt of a non-negative value never sets errno). */
static void adam_loop(int64_t n, double *restrict x, double *restrict g,
                      const double *restrict m, const double *restrict v,
                      double *restrict m_next, double b1, double b2,
                      double step, double c2, double eps) {
  for (int64_t j = 0; j < n; j++) {
    double gj = g[j];
    double mj = b1 * m[j] + (1 - b1) * gj;
    double vj = b2 * v[j] + (1 - b2) * gj * gj;
    x[j] -= step * mj / (sqrt(vj / c2) + eps);
    m_next[j] = mj;
    g[j] = vj; /* g's buffer becomes the next second-moment slot */
  }
}

static void update_adam(ad_optimizer *opt) {
  double b1 = opt->beta1, b2 = opt->beta2, t = (double)opt->iterations + 1;
  double c1 = 1 - pow(b1, t), c2 = 1 - pow(b2, t);
  adam_loop(opt->total, opt->x, opt->g, opt->slot0, opt->slot1, opt->d, b1,
            b2, opt->lr / c1, c2, opt->eps);
}

/* After the variables are assigned: the new slots become the state. */
static void commit_update(ad_optimizer *opt) {
  if (opt->kind == SGD && opt->slot0) swap(&opt->slot0, &opt->d);
  if (opt->kind == ADAM) {
    swap(&opt->slot0, &opt->d);
    swap(&opt->slot1, &opt->g);
  }
}

static double dot(const double *a, const double *b, int64_t n) {
  double s = 0;
  for (int64_t j = 0; j < n; j++) s += a[j] * b[j];
  return s;
}

/* Record the pair from the last point and gradient to opt->x, opt->g. */
static void lbfgs_push_pair(ad_optimizer *opt) {
  int64_t n = opt->total;
  int slot = opt->pairs == 0 ? 0 : (opt->newest + 1) % opt->history;
  double *s = opt->s + (int64_t)slot * n, *y = opt->y + (int64_t)slot * n;
  for (int64_t j = 0; j < n; j++) {
    s[j] = opt->x[j] - opt->x_prev[j];
    y[j] = opt->g[j] - opt->g_prev[j];
  }
  double sy = dot(s, y, n), ss = dot(s, s, n), yy = dot(y, y, n);
  if (!(sy > 1e-10 * sqrt(ss * yy))) return; /* curvature too weak: skip */
  opt->rho[slot] = 1.0 / sy;
  opt->newest = slot;
  if (opt->pairs < opt->history) opt->pairs++;
}

/* d = -H g by the two-loop recursion; returns false when there is no
 * pair to use (d = -g then). */
static bool lbfgs_direction(ad_optimizer *opt) {
  int64_t n = opt->total;
  int h = opt->history;
  double *d = opt->d;
  for (int64_t j = 0; j < n; j++) d[j] = -opt->g[j];
  if (opt->pairs == 0) return false;
  for (int k = 0; k < opt->pairs; k++) { /* newest first */
    int slot = (opt->newest - k + h) % h;
    const double *s = opt->s + (int64_t)slot * n;
    const double *y = opt->y + (int64_t)slot * n;
    double a = opt->rho[slot] * dot(s, d, n);
    opt->alpha[slot] = a;
    for (int64_t j = 0; j < n; j++) d[j] -= a * y[j];
  }
  const double *sn = opt->s + (int64_t)opt->newest * n;
  const double *yn = opt->y + (int64_t)opt->newest * n;
  double gamma = dot(sn, yn, n) / dot(yn, yn, n);
  for (int64_t j = 0; j < n; j++) d[j] *= gamma;
  for (int k = opt->pairs - 1; k >= 0; k--) { /* oldest first */
    int slot = (opt->newest - k + h) % h;
    const double *s = opt->s + (int64_t)slot * n;
    const double *y = opt->y + (int64_t)slot * n;
    double b = opt->rho[slot] * dot(y, d, n);
    for (int64_t j = 0; j < n; j++) d[j] += (opt->alpha[slot] - b) * s[j];
  }
  return true;
}

/* Prepare an L-BFGS step at opt->x with gradient opt->g: update the
 * history, compute the direction into opt->d, remember the point and
 * gradient, and return the first step length to try, with g.d in *gd. */
static double lbfgs_prepare(call *c, double *gd) {
  ad_optimizer *opt = c->opt;
  int64_t n = opt->total;
  save_lbfgs(c);
  if (opt->have_prev) lbfgs_push_pair(opt);
  bool quasi_newton = lbfgs_direction(opt);
  *gd = dot(opt->g, opt->d, n);
  if (quasi_newton && !(*gd < 0)) {
    /* Not downhill: the history misleads; start again from -g. */
    opt->pairs = 0;
    quasi_newton = lbfgs_direction(opt);
    *gd = dot(opt->g, opt->d, n);
  }
  memcpy(opt->x_prev, opt->x, (size_t)n * sizeof(double));
  memcpy(opt->g_prev, opt->g, (size_t)n * sizeof(double));
  opt->have_prev = true;
  if (quasi_newton) return opt->lr;
  double l1 = 0;
  for (int64_t j = 0; j < n; j++) l1 += fabs(opt->g[j]);
  return opt->lr * (l1 > 1 ? 1 / l1 : 1);
}

/* ------------------------------------------------------------------------
 * Steps
 * ---------------------------------------------------------------------- */

ad_status ad_optimizer_step(ad_optimizer *opt, int n, ad_var *const *vars,
                            ad_tensor *const *grads) {
  const char *op = "ad_optimizer_step";
  if (!opt) {
    ad__error_null_arg(op, "opt");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  bool paused = ad_pause_recording(true);
  ad_scope_begin();
  call c;
  ad_status st = begin_call(&c, opt, op, n, vars);
  if (st == AD_OK) st = read_grads(&c, grads);
  if (st == AD_OK) {
    read_vars(&c);
    if (opt->kind == SGD) update_sgd(opt);
    if (opt->kind == ADAM) update_adam(opt);
    if (opt->kind == LBFGS) {
      double gd, t = lbfgs_prepare(&c, &gd);
      for (int64_t j = 0; j < opt->total; j++) opt->x[j] += t * opt->d[j];
    }
    st = write_vars(&c, opt->x);
    if (st == AD_OK) commit_update(opt);
  }
  st = end_call(&c, st);
  ad_scope_end();
  ad_pause_recording(paused);
  return st;
}

/* The loss's value: one element, finite at the starting point (strict),
 * while trial points of a line search may give NaN or Inf.  NAN with an
 * error recorded when the loss failed. */
static double loss_value(ad_tensor *y, unsigned long before, bool strict,
                         const char *op) {
  if (!y) {
    if (ad__error_count() == before || ad_error() == AD_OK)
      ad__error(AD_EINVAL, "%s: the loss returned NULL without recording "
                           "an error",
                op);
    return NAN;
  }
  if (y->numel != 1) {
    char b[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "%s: the loss returned shape %s, not a scalar", op,
              ad__shape_str(b, y->ndim, y->shape));
    return NAN;
  }
  double v = ad_item(y);
  if (strict && !isfinite(v)) {
    ad__error(AD_EINVAL, "%s: the loss is %g at the starting point", op, v);
    return NAN;
  }
  return v;
}

/* The loss and the gradients at the variables' current values. */
static ad_status loss_and_grads(call *c, ad_loss_fn loss, void *ctx,
                                double *f0, ad_tensor **grads) {
  ad_tape *tape = ad_tape_begin(0);
  if (!tape) return ad_error() ? ad_error() : AD_ENOMEM;
  unsigned long before = ad__error_count();
  ad_tensor *y = loss(ctx);
  ad_status st = ad_tape_end(tape);
  if (st == AD_OK) {
    *f0 = loss_value(y, before, true, c->op);
    if (isnan(*f0)) st = ad_error();
  }
  if (st == AD_OK) st = ad_tape_var_gradients(tape, y, c->n, c->vars, grads);
  ad_tape_free(tape);
  return st;
}

/* Backtracking from the first step length along opt->d until Armijo's
 * condition holds; the variables end at the accepted point, or where they
 * were (with the history dropped) when no step does. */
static ad_status line_search(call *c, ad_loss_fn loss, void *ctx, double f0) {
  ad_optimizer *opt = c->opt;
  double gd, t = lbfgs_prepare(c, &gd);
  if (gd == 0) return AD_OK; /* a stationary point: stay */
  double *trial = opt->g;    /* g is kept in g_prev now */
  for (int k = 0; k < 40; k++, t *= 0.5) {
    for (int64_t j = 0; j < opt->total; j++)
      trial[j] = opt->x[j] + t * opt->d[j];
    ad_status st = write_vars(c, trial);
    if (st != AD_OK) return st;
    ad_scope_begin();
    unsigned long before = ad__error_count();
    double f = loss_value(loss(ctx), before, false, c->op);
    ad_scope_end();
    if (isnan(f) && ad__error_count() != before) return ad_error();
    if (isfinite(f) && f <= f0 + 1e-4 * t * gd) return AD_OK;
  }
  opt->pairs = 0;
  return write_vars(c, opt->x);
}

ad_status ad_optimizer_minimize(ad_optimizer *opt, ad_loss_fn loss,
                                void *ctx, int n, ad_var *const *vars,
                                double *value) {
  const char *op = "ad_optimizer_minimize";
  if (value) *value = NAN;
  if (!opt) {
    ad__error_null_arg(op, "opt");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (!loss) return ad__error(AD_EINVAL, "%s: the loss function is NULL", op);
  bool paused = ad_pause_recording(true);
  if (paused)
    return ad__error(AD_ESTATE, "%s: recording is paused "
                                "(ad_pause_recording); resume it so that the "
                                "loss can be differentiated",
                     op);
  ad_scope_begin();
  call c;
  ad_status st = begin_call(&c, opt, op, n, vars);
  ad_tensor **grads = NULL;
  double f0 = NAN;
  if (st == AD_OK) {
    grads = malloc((size_t)n * sizeof *grads);
    if (!grads) st = ad__error(AD_ENOMEM, "%s: out of memory", op);
  }
  if (st == AD_OK) {
    ad_pause_recording(false);
    st = loss_and_grads(&c, loss, ctx, &f0, grads);
    ad_pause_recording(true);
  }
  if (st == AD_OK) st = read_grads(&c, grads);
  if (st == AD_OK) {
    read_vars(&c);
    if (opt->kind == LBFGS) {
      st = line_search(&c, loss, ctx, f0);
    } else {
      if (opt->kind == SGD) update_sgd(opt);
      if (opt->kind == ADAM) update_adam(opt);
      st = write_vars(&c, opt->x);
      if (st == AD_OK) commit_update(opt);
    }
  }
  st = end_call(&c, st);
  if (st == AD_OK && value) *value = f0;
  free(grads);
  ad_pause_recording(false);
  ad_scope_end();
  return st;
}
