/* Forward accumulators: nested forward-mode levels that carry tangents. */
#include <pthread.h>
#include <stdlib.h>

#include "engine.h"

struct ad_fwd {
  pthread_t owner;
  ad__idmap tangents; /* tensor id -> ad_tensor * (retained) */
  ad_tensor **held;   /* every tangent held, for release at the end */
  int64_t nheld, cap;
};

static ad_status check_acc(const ad_fwd *acc, const char *op) {
  if (!acc) {
    ad__error_null_arg(op, "acc");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (!pthread_equal(acc->owner, pthread_self()))
    return ad__error(AD_ESTATE,
                     "%s: the accumulator belongs to another thread", op);
  if (ad__ctx_find(acc) < 0)
    return ad__error(AD_ESTATE, "%s: the accumulator was ended", op);
  return AD_OK;
}

ad_tensor *ad__fwd_tangent(const ad_fwd *acc, const ad_tensor *t) {
  intptr_t v;
  return ad__idmap_get(&acc->tangents, t->id, &v) ? (ad_tensor *)v : NULL;
}

ad_status ad__fwd_set_tangent(ad_fwd *acc, const ad_tensor *t,
                              ad_tensor *tangent) {
  if (acc->nheld == acc->cap) {
    int64_t cap = acc->cap ? acc->cap * 2 : 16;
    ad_tensor **held = realloc(acc->held, (size_t)cap * sizeof *held);
    if (!held) return ad__error(AD_ENOMEM, "out of memory storing a tangent");
    acc->held = held;
    acc->cap = cap;
  }
  ad_status st = ad__idmap_put(&acc->tangents, t->id, (intptr_t)tangent);
  if (st != AD_OK) return st;
  acc->held[acc->nheld++] = ad_retain(tangent);
  return AD_OK;
}

static void free_acc(ad_fwd *acc) {
  for (int64_t i = 0; i < acc->nheld; i++) ad_release(acc->held[i]);
  free(acc->held);
  ad__idmap_free(&acc->tangents);
  free(acc);
}

ad_fwd *ad_fwd_begin(int n, ad_tensor *const *primals,
                     ad_tensor *const *tangents) {
  const char *op = "ad_fwd_begin";
  if (n < 0 || (n > 0 && (!primals || !tangents))) {
    ad__error(AD_EINVAL, "%s: bad primal/tangent lists (n = %d)", op, n);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    if (!primals[i] || !tangents[i]) {
      char arg[32];
      snprintf(arg, sizeof arg, "%s[%d]", primals[i] ? "tangents" : "primals",
               i);
      ad__error_null_arg(op, arg);
      return NULL;
    }
    const ad_tensor *p = primals[i], *t = tangents[i];
    bool same = p->ndim == t->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = p->shape[d] == t->shape[d];
    if (!same) {
      char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
      ad__error(AD_ESHAPE, "%s: tangent %d has shape %s but its primal has %s",
                op, i, ad__shape_str(a, t->ndim, t->shape),
                ad__shape_str(b, p->ndim, p->shape));
      return NULL;
    }
  }
  ad_fwd *acc = calloc(1, sizeof *acc);
  if (!acc) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  acc->owner = pthread_self();
  for (int i = 0; i < n; i++) {
    ad_tensor *prev = ad__fwd_tangent(acc, primals[i]);
    ad_tensor *t = tangents[i];
    /* The same primal given twice gets the sum of its tangents. */
    if (prev) t = ad_add(prev, t);
    if (!t || ad__fwd_set_tangent(acc, primals[i], t) != AD_OK) {
      free_acc(acc);
      return NULL;
    }
  }
  if (ad__ctx_push(AD__CTX_LEVEL, acc) != AD_OK) {
    free_acc(acc);
    return NULL;
  }
  return acc;
}

ad_tensor *ad_fwd_jvp(ad_fwd *acc, ad_tensor *t) {
  if (check_acc(acc, "ad_fwd_jvp") != AD_OK) return NULL;
  if (!t) {
    ad__error_null_arg("ad_fwd_jvp", "t");
    return NULL;
  }
  ad_tensor *tangent = ad__fwd_tangent(acc, t);
  return tangent ? ad__own(ad_retain(tangent)) : ad__zeros_like(t);
}

ad_status ad_fwd_jvps(ad_fwd *acc, int n, ad_tensor *const *ts,
                      ad_tensor **out, unsigned flags) {
  const char *op = "ad_fwd_jvps";
  if (out)
    for (int i = 0; i < n; i++) out[i] = NULL;
  ad_status st = check_acc(acc, op);
  if (st != AD_OK) return st;
  if (n < 0 || (n > 0 && (!ts || !out)))
    return ad__error(AD_EINVAL, "%s: bad tensor lists (n = %d)", op, n);
  for (int i = 0; i < n; i++) {
    if (!ts[i]) {
      char arg[32];
      snprintf(arg, sizeof arg, "ts[%d]", i);
      ad__error_null_arg(op, arg);
      for (int k = 0; k < i; k++) out[k] = NULL;
      return ad_error() ? ad_error() : AD_EINVAL;
    }
    ad_tensor *tangent = ad__fwd_tangent(acc, ts[i]);
    if (tangent)
      out[i] = ad__own(ad_retain(tangent));
    else if (flags & AD_UNCONNECTED_ZERO)
      out[i] = ad__zeros_like(ts[i]);
    if ((tangent || (flags & AD_UNCONNECTED_ZERO)) && !out[i]) {
      for (int k = 0; k < i; k++) out[k] = NULL;
      return ad_error();
    }
  }
  return AD_OK;
}

bool ad_fwd_has_tangent(const ad_fwd *acc, const ad_tensor *t) {
  if (!acc || !t) return false;
  return ad__fwd_tangent(acc, t) != NULL;
}

void ad__fwd_discard(ad_fwd *acc) {
  if (!acc) return;
  if (ad__ctx_find(acc) >= 0) ad__ctx_remove(acc, false, "ad_fwd_end");
  free_acc(acc);
}

ad_status ad_fwd_end(ad_fwd *acc) {
  if (!acc) return AD_OK;
  ad_status st = check_acc(acc, "ad_fwd_end");
  if (st != AD_OK) return st;
  st = ad__ctx_remove(acc, true, "ad_fwd_end");
  if (st != AD_OK) return st;
  free_acc(acc);
  return AD_OK;
}
