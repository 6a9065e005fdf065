/* Variables: named mutable state whose reads tapes watch automatically. */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct ad_var {
  atomic_long refs;
  char *name;
  ad_tensor *value; /* retained */
};

ad_var *ad_var_new(const char *name, ad_tensor *init) {
  if (!init) {
    ad__error_null_arg("ad_var_new", "init");
    return NULL;
  }
  ad_var *v = calloc(1, sizeof *v);
  char *copy = strdup(name ? name : "");
  if (!v || !copy) {
    free(v);
    free(copy);
    ad__error(AD_ENOMEM, "ad_var_new: out of memory");
    return NULL;
  }
  atomic_init(&v->refs, 1);
  v->name = copy;
  v->value = ad_retain(init);
  return v;
}

void ad__var_retain(ad_var *v) {
  atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void ad_var_free(ad_var *v) {
  if (!v) return;
  if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
    return;
  ad_release(v->value);
  free(v->name);
  free(v);
}

const char *ad_var_name(const ad_var *v) {
  if (!v) {
    ad__error_null_arg("ad_var_name", "v");
    return "";
  }
  return v->name;
}

ad_tensor *ad_var_value(ad_var *v) {
  if (!v) {
    ad__error_null_arg("ad_var_value", "v");
    return NULL;
  }
  if (ad__ad_active()) {
    for (int i = 0; i < ad__contexts.n; i++) {
      ad__ctx *c = &ad__contexts.items[i];
      if (c->kind == AD__CTX_TAPE && !c->paused &&
          ad__tape_saw_variable(c->obj, v, v->value) != AD_OK)
        return NULL;
    }
  }
  return ad__own(ad_retain(v->value));
}

ad_status ad_var_assign(ad_var *v, ad_tensor *t) {
  if (!v || !t) {
    ad__error_null_arg("ad_var_assign", v ? "t" : "v");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  bool same = t->ndim == v->value->ndim;
  for (int i = 0; same && i < t->ndim; i++)
    same = t->shape[i] == v->value->shape[i];
  if (!same) {
    char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
    return ad__error(AD_ESHAPE,
                     "ad_var_assign: variable '%s' has shape %s, the new "
                     "value %s",
                     v->name, ad__shape_str(a, v->value->ndim, v->value->shape),
                     ad__shape_str(b, t->ndim, t->shape));
  }
  ad_retain(t);
  ad_release(v->value);
  v->value = t;
  return AD_OK;
}
