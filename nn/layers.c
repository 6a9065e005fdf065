/* Layers that create their variables on first call (Dense, Conv2D,
 * MaxPool2D, Dropout, Flatten) and the model container that nests them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad/nn.h"
#include "internal.h"

#define NAME_MAX_LEN 255
#define PATH_MAX_LEN 4096

typedef enum kind {
  K_DENSE, K_CONV, K_POOL, K_DROPOUT, K_FLATTEN, K_MODEL
} kind;

static const char *const kind_names[] = {"dense",   "conv2d",  "max_pool2d",
                                         "dropout", "flatten", "model"};

struct ad_layer {
  kind kind;
  char *name;
  ad_layer *parent;
  /* Variables in listing order; trainable[i] says whether the optimizer
   * sees vars[i].  Dense/Conv2D: kernel, bias; Dropout: rng_step. */
  int nvars;
  ad_var *vars[2];
  bool trainable[2];
  bool built;
  int64_t in_dim; /* Dense: input features; Conv2D: input channels */
  /* Dense units or Conv2D filters, activation and bias. */
  int64_t units;
  ad_activation act;
  bool use_bias;
  /* Conv2D and MaxPool2D windows. */
  int kh, kw, sh, sw;
  ad_padding padding;
  /* Dropout. */
  double rate;
  uint64_t seed;
  /* The shape of the last output, for summaries (out_ndim -1: none). */
  int out_ndim;
  int64_t out_shape[AD_MAX_DIMS];
  /* Models. */
  ad_layer **layers;
  int nlayers, cap;
  ad_model_fn call;
  void *ctx;
};

/* ------------------------------------------------------------------------
 * Creation and names
 * ---------------------------------------------------------------------- */

static bool valid_name(const char *op, const char *name) {
  size_t len = strlen(name);
  if (len == 0 || len > NAME_MAX_LEN || strchr(name, '/')) {
    ad__error(AD_EINVAL,
              "%s: layer name \"%.64s\" must be 1..%d bytes without '/'", op,
              name, NAME_MAX_LEN);
    return false;
  }
  return true;
}

static ad_layer *layer_new(const char *op, kind k, const char *name) {
  ad_layer *l = calloc(1, sizeof *l);
  char *copy = strdup(name ? name : kind_names[k]);
  if (!l || !copy) {
    free(l);
    free(copy);
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  l->kind = k;
  l->name = copy;
  l->out_ndim = -1;
  return l;
}

static bool valid_activation(const char *op, ad_activation act) {
  if ((int)act >= AD_ACT_LINEAR && act <= AD_ACT_SOFTMAX) return true;
  ad__error(AD_EINVAL, "%s: unknown activation %d", op, (int)act);
  return false;
}

static bool valid_padding(const char *op, ad_padding p) {
  if (p == AD_PAD_VALID || p == AD_PAD_SAME) return true;
  ad__error(AD_EINVAL, "%s: unknown padding %d", op, (int)p);
  return false;
}

ad_layer *ad_layer_dense(int64_t units, ad_activation act, bool use_bias) {
  static const char op[] = "ad_layer_dense";
  if (units < 1) {
    ad__error(AD_EINVAL, "%s: units must be >= 1, got %lld", op,
              (long long)units);
    return NULL;
  }
  if (!valid_activation(op, act)) return NULL;
  ad_layer *l = layer_new(op, K_DENSE, NULL);
  if (!l) return NULL;
  l->units = units;
  l->act = act;
  l->use_bias = use_bias;
  return l;
}

static bool valid_window(const char *op, int kh, int kw, int sh, int sw) {
  if (kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1) return true;
  ad__error(AD_EINVAL,
            "%s: window %dx%d and strides (%d, %d) must all be >= 1", op, kh,
            kw, sh, sw);
  return false;
}

ad_layer *ad_layer_conv2d(int64_t filters, int kh, int kw, int sh, int sw,
                          ad_padding padding, ad_activation act,
                          bool use_bias) {
  static const char op[] = "ad_layer_conv2d";
  if (filters < 1) {
    ad__error(AD_EINVAL, "%s: filters must be >= 1, got %lld", op,
              (long long)filters);
    return NULL;
  }
  if (!valid_window(op, kh, kw, sh, sw) || !valid_padding(op, padding) ||
      !valid_activation(op, act))
    return NULL;
  ad_layer *l = layer_new(op, K_CONV, NULL);
  if (!l) return NULL;
  l->units = filters;
  l->act = act;
  l->use_bias = use_bias;
  l->kh = kh;
  l->kw = kw;
  l->sh = sh;
  l->sw = sw;
  l->padding = padding;
  return l;
}

ad_layer *ad_layer_max_pool2d(int kh, int kw, int sh, int sw,
                              ad_padding padding) {
  static const char op[] = "ad_layer_max_pool2d";
  if (!valid_window(op, kh, kw, sh, sw) || !valid_padding(op, padding))
    return NULL;
  ad_layer *l = layer_new(op, K_POOL, NULL);
  if (!l) return NULL;
  l->kh = kh;
  l->kw = kw;
  l->sh = sh;
  l->sw = sw;
  l->padding = padding;
  return l;
}

ad_layer *ad_layer_dropout(double rate, uint64_t seed) {
  static const char op[] = "ad_layer_dropout";
  if (!(rate >= 0.0 && rate < 1.0)) {
    ad__error(AD_EINVAL, "%s: rate must satisfy 0 <= rate < 1, got %g", op,
              rate);
    return NULL;
  }
  ad_layer *l = layer_new(op, K_DROPOUT, NULL);
  if (!l) return NULL;
  l->rate = rate;
  l->seed = seed;
  return l;
}

ad_layer *ad_layer_flatten(void) {
  return layer_new("ad_layer_flatten", K_FLATTEN, NULL);
}

ad_layer *ad_model_new(const char *name) {
  static const char op[] = "ad_model_new";
  if (name && *name && !valid_name(op, name)) return NULL;
  return layer_new(op, K_MODEL, name && *name ? name : "model");
}

const char *ad_layer_name(const ad_layer *layer) {
  if (!layer) {
    ad__error_null_arg("ad_layer_name", "layer");
    return "";
  }
  return layer->name;
}

const char *ad_layer_kind(const ad_layer *layer) {
  if (!layer) {
    ad__error_null_arg("ad_layer_kind", "layer");
    return "";
  }
  return kind_names[layer->kind];
}

/* True when the layer or anything inside it has variables. */
static bool has_variables(const ad_layer *l) {
  if (l->nvars > 0) return true;
  for (int i = 0; i < l->nlayers; i++)
    if (has_variables(l->layers[i])) return true;
  return false;
}

static bool sibling_named(const ad_layer *parent, const ad_layer *self,
                          const char *name) {
  for (int i = 0; i < parent->nlayers; i++)
    if (parent->layers[i] != self && strcmp(parent->layers[i]->name, name) == 0)
      return true;
  return false;
}

ad_status ad_layer_set_name(ad_layer *layer, const char *name) {
  static const char op[] = "ad_layer_set_name";
  if (!layer || !name) {
    ad__error_null_arg(op, layer ? "name" : "layer");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (!valid_name(op, name)) return AD_EINVAL;
  if (has_variables(layer))
    return ad__error(AD_ESTATE,
                     "%s: layer '%s' already has variables, whose names "
                     "are fixed",
                     op, layer->name);
  if (layer->parent && sibling_named(layer->parent, layer, name))
    return ad__error(AD_EINVAL, "%s: model '%s' already has a layer '%s'",
                     op, layer->parent->name, name);
  char *copy = strdup(name);
  if (!copy) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  free(layer->name);
  layer->name = copy;
  return AD_OK;
}

/* "root/child/.../layer/leaf" into buf; false (with an error) when the
 * path is too long. */
static bool var_path(const char *op, const ad_layer *l, const char *leaf,
                     char *buf, size_t size) {
  const ad_layer *chain[64];
  int n = 0;
  const ad_layer *p = l;
  for (; p && n < 64; p = p->parent) chain[n++] = p;
  if (p) {
    ad__error(AD_EINVAL, "%s: layer '%s' is nested more than 64 models deep",
              op, l->name);
    return false;
  }
  size_t used = 0;
  for (int i = n - 1; i >= -1; i--) {
    const char *part = i >= 0 ? chain[i]->name : leaf;
    size_t len = strlen(part);
    if (used + len + 2 > size) {
      ad__error(AD_EINVAL, "%s: variable name of layer '%s' is too long", op,
                l->name);
      return false;
    }
    memcpy(buf + used, part, len);
    used += len;
    buf[used++] = i >= 0 ? '/' : '\0';
  }
  return true;
}

static ad_status add_var(const char *op, ad_layer *l, const char *leaf,
                         ad_tensor *init, bool trainable) {
  char path[PATH_MAX_LEN + 1];
  if (!init) return ad_error() ? ad_error() : AD_ENOMEM;
  if (!var_path(op, l, leaf, path, sizeof path)) return AD_EINVAL;
  ad_var *v = ad_var_new(path, init);
  if (!v) return ad_error();
  l->vars[l->nvars] = v;
  l->trainable[l->nvars] = trainable;
  l->nvars++;
  return AD_OK;
}

static void drop_vars(ad_layer *l) {
  for (int i = 0; i < l->nvars; i++) ad_var_free(l->vars[i]);
  l->nvars = 0;
  l->built = false;
}

/* ------------------------------------------------------------------------
 * Models
 * ---------------------------------------------------------------------- */

static bool is_model(const char *op, const ad_layer *m) {
  if (!m) {
    ad__error_null_arg(op, "model");
    return false;
  }
  if (m->kind == K_MODEL) return true;
  ad__error(AD_EINVAL, "%s: layer '%s' is a %s, not a model", op, m->name,
            kind_names[m->kind]);
  return false;
}

ad_status ad_model_add(ad_layer *model, ad_layer *layer) {
  static const char op[] = "ad_model_add";
  if (!layer) {
    ad__error_null_arg(op, "layer");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (layer->parent)
    return ad__error(AD_ESTATE,
                     "%s: layer '%s' already belongs to model '%s'", op,
                     layer->name, layer->parent->name);
  for (const ad_layer *p = model; p; p = p->parent)
    if (p == layer)
      return ad__error(AD_ESTATE,
                       "%s: adding model '%s' to '%s' would make a cycle",
                       op, layer->name, model->name);
  ad_status st = AD_OK;
  if (!is_model(op, model)) {
    st = ad_error();
    goto fail;
  }
  if (sibling_named(model, NULL, layer->name)) {
    if (has_variables(layer)) {
      st = ad__error(AD_EINVAL,
                     "%s: model '%s' already has a layer '%s', and the "
                     "layer's variables fix its name",
                     op, model->name, layer->name);
      goto fail;
    }
    char buf[NAME_MAX_LEN + 16];
    for (int k = 1;; k++) {
      snprintf(buf, sizeof buf, "%.*s_%d", NAME_MAX_LEN, layer->name, k);
      if (!sibling_named(model, NULL, buf)) break;
    }
    char *copy = strdup(buf);
    if (!copy) {
      st = ad__error(AD_ENOMEM, "%s: out of memory", op);
      goto fail;
    }
    free(layer->name);
    layer->name = copy;
  }
  if (model->nlayers == model->cap) {
    int cap = model->cap ? 2 * model->cap : 8;
    ad_layer **grown = realloc(model->layers, (size_t)cap * sizeof *grown);
    if (!grown) {
      st = ad__error(AD_ENOMEM, "%s: out of memory", op);
      goto fail;
    }
    model->layers = grown;
    model->cap = cap;
  }
  model->layers[model->nlayers++] = layer;
  layer->parent = model;
  return AD_OK;
fail:
  ad_layer_free(layer);
  return st;
}

ad_status ad_model_set_call(ad_layer *model, ad_model_fn fn, void *ctx) {
  if (!is_model("ad_model_set_call", model)) return ad_error();
  model->call = fn;
  model->ctx = ctx;
  return AD_OK;
}

int ad_model_num_layers(const ad_layer *model) {
  if (!is_model("ad_model_num_layers", model)) return -1;
  return model->nlayers;
}

ad_layer *ad_model_layer(const ad_layer *model, int i) {
  static const char op[] = "ad_model_layer";
  if (!is_model(op, model)) return NULL;
  if (i < 0 || i >= model->nlayers) {
    ad__error(AD_EINVAL, "%s: index %d out of range for model '%s' of %d "
              "layers", op, i, model->name, model->nlayers);
    return NULL;
  }
  return model->layers[i];
}

static void layer_destroy(ad_layer *l) {
  for (int i = 0; i < l->nlayers; i++) layer_destroy(l->layers[i]);
  free(l->layers);
  drop_vars(l);
  free(l->name);
  free(l);
}

void ad_layer_free(ad_layer *layer) {
  if (!layer) return;
  if (layer->parent) {
    ad__error(AD_ESTATE,
              "ad_layer_free: layer '%s' belongs to model '%s', which frees "
              "it",
              layer->name, layer->parent->name);
    return;
  }
  layer_destroy(layer);
}

/* ------------------------------------------------------------------------
 * Variables
 * ---------------------------------------------------------------------- */

static int64_t collect(const ad_layer *l, unsigned flags, ad_var **out,
                       int64_t cap, int64_t n) {
  for (int i = 0; i < l->nvars; i++) {
    if ((flags & AD_VARS_TRAINABLE) && !l->trainable[i]) continue;
    if (n < cap) out[n] = l->vars[i];
    n++;
  }
  for (int i = 0; i < l->nlayers; i++)
    n = collect(l->layers[i], flags, out, cap, n);
  return n;
}

int64_t ad_layer_variables(const ad_layer *layer, unsigned flags,
                           ad_var **out, int64_t cap) {
  static const char op[] = "ad_layer_variables";
  if (!layer) {
    ad__error_null_arg(op, "layer");
    return -1;
  }
  if (cap < 0 || (cap > 0 && !out)) {
    ad__error(AD_EINVAL, "%s: out must hold cap >= 0 handles, got cap %lld%s",
              op, (long long)cap, out ? "" : " and out NULL");
    return -1;
  }
  return collect(layer, flags, out, cap, 0);
}

static int64_t count_params(const ad_layer *l, unsigned flags) {
  int64_t n = 0;
  for (int i = 0; i < l->nvars; i++) {
    if ((flags & AD_VARS_TRAINABLE) && !l->trainable[i]) continue;
    ad_scope_begin();
    n += ad_numel(ad_var_value(l->vars[i]));
    ad_scope_end();
  }
  for (int i = 0; i < l->nlayers; i++) n += count_params(l->layers[i], flags);
  return n;
}

int64_t ad_layer_num_params(const ad_layer *layer, unsigned flags) {
  if (!layer) {
    ad__error_null_arg("ad_layer_num_params", "layer");
    return -1;
  }
  bool was = ad_pause_recording(true);
  int64_t n = count_params(layer, flags);
  ad_pause_recording(was);
  return n;
}

/* ------------------------------------------------------------------------
 * Calls
 * ---------------------------------------------------------------------- */

static ad_tensor *activate(ad_tensor *y, ad_activation act) {
  switch (act) {
  case AD_ACT_RELU: return ad_relu(y);
  case AD_ACT_TANH: return ad_tanh(y);
  case AD_ACT_SIGMOID: return ad_sigmoid(y);
  case AD_ACT_SOFTMAX: return ad_softmax(y, -1);
  case AD_ACT_LINEAR: break;
  }
  return y;
}

/* A view of x under a new handle owned by the current scope: what a layer
 * that changes nothing returns, so that every call's result has the same
 * ownership. */
static ad_tensor *identity(ad_tensor *x) {
  return ad_reshape(x, ad_ndim(x), ad_shape(x));
}

static ad_tensor *glorot(const int64_t *shape, int ndim, double fan_in,
                         double fan_out) {
  double limit = sqrt(6.0 / (fan_in + fan_out));
  return ad_rand_uniform(ndim, shape, -limit, limit);
}

static ad_status shape_error(const char *op, const ad_layer *l,
                             const ad_tensor *x, const char *expect) {
  char buf[AD__SHAPE_STR];
  return ad__error(AD_ESHAPE, "%s: layer '%s' (%s) expects %s, got %s", op,
                   l->name, kind_names[l->kind], expect,
                   ad__shape_str(buf, ad_ndim(x), ad_shape(x)));
}

static ad_status build_kernel(const char *op, ad_layer *l, int ndim,
                              const int64_t *kshape, double fan_in,
                              double fan_out) {
  /* Initial values are constants, whatever records. */
  bool was = ad_pause_recording(true);
  ad_status st = add_var(op, l, "kernel", glorot(kshape, ndim, fan_in,
                                                 fan_out), true);
  if (st == AD_OK && l->use_bias)
    st = add_var(op, l, "bias", ad_zeros(1, &l->units), true);
  ad_pause_recording(was);
  if (st != AD_OK) {
    drop_vars(l);
    return st;
  }
  l->built = true;
  return AD_OK;
}

static ad_tensor *dense_call(const char *op, ad_layer *l, ad_tensor *x) {
  int nd = ad_ndim(x);
  if (nd < 1) {
    shape_error(op, l, x, "an input of rank >= 1");
    return NULL;
  }
  int64_t in = ad_shape(x)[nd - 1];
  if (!l->built) {
    const int64_t ks[2] = {in, l->units};
    if (build_kernel(op, l, 2, ks, (double)in, (double)l->units) != AD_OK)
      return NULL;
    l->in_dim = in;
  } else if (in != l->in_dim) {
    char want[64];
    snprintf(want, sizeof want, "inputs (..., %lld)", (long long)l->in_dim);
    shape_error(op, l, x, want);
    return NULL;
  }
  ad_tensor *y = ad_matmul(x, ad_var_value(l->vars[0]));
  if (l->use_bias) y = ad_add(y, ad_var_value(l->vars[1]));
  return activate(y, l->act);
}

/* TensorFlow's padding for one spatial axis of size n with window k and
 * stride s: *lo before and *hi after. */
static void pad_amounts(ad_padding p, int64_t n, int k, int s, int64_t *lo,
                        int64_t *hi) {
  *lo = *hi = 0;
  if (p != AD_PAD_SAME) return;
  int64_t out = (n + s - 1) / s;
  int64_t total = (out - 1) * s + k - n;
  if (total < 0) total = 0;
  *lo = total / 2;
  *hi = total - *lo;
}

/* x with count rows of value added along axis, before (at_end false) or
 * after the data. */
static ad_tensor *pad_axis(ad_tensor *x, int axis, int64_t count,
                           double value, bool at_end) {
  if (count == 0 || !x) return x;
  int64_t shape[AD_MAX_DIMS];
  memcpy(shape, ad_shape(x), sizeof(int64_t) * (size_t)ad_ndim(x));
  shape[axis] = count;
  ad_tensor *fill = ad_full(ad_ndim(x), shape, value);
  ad_tensor *parts[2] = {at_end ? x : fill, at_end ? fill : x};
  return ad_concat(2, parts, axis);
}

static ad_tensor *conv_call(const char *op, ad_layer *l, ad_tensor *x) {
  if (ad_ndim(x) != 4) {
    shape_error(op, l, x, "NHWC input of rank 4");
    return NULL;
  }
  const int64_t *xs = ad_shape(x);
  if (!l->built) {
    const int64_t ks[4] = {l->kh, l->kw, xs[3], l->units};
    double area = (double)l->kh * l->kw;
    if (build_kernel(op, l, 4, ks, area * (double)xs[3],
                     area * (double)l->units) != AD_OK)
      return NULL;
    l->in_dim = xs[3];
  } else if (xs[3] != l->in_dim) {
    char want[64];
    snprintf(want, sizeof want, "inputs with %lld channels",
             (long long)l->in_dim);
    shape_error(op, l, x, want);
    return NULL;
  }
  int64_t top, bottom, left, right;
  pad_amounts(l->padding, xs[1], l->kh, l->sh, &top, &bottom);
  pad_amounts(l->padding, xs[2], l->kw, l->sw, &left, &right);
  /* ad_conv2d pads symmetrically; an odd extra row or column goes at the
   * bottom or right, as TensorFlow puts it. */
  x = pad_axis(x, 1, bottom - top, 0.0, true);
  x = pad_axis(x, 2, right - left, 0.0, true);
  ad_tensor *y = ad_conv2d(x, ad_var_value(l->vars[0]), l->sh, l->sw,
                           (int)top, (int)left);
  if (l->use_bias) y = ad_add(y, ad_var_value(l->vars[1]));
  return activate(y, l->act);
}

static ad_tensor *pool_call(const char *op, ad_layer *l, ad_tensor *x) {
  if (ad_ndim(x) != 4) {
    shape_error(op, l, x, "NHWC input of rank 4");
    return NULL;
  }
  const int64_t *xs = ad_shape(x);
  int64_t top, bottom, left, right;
  pad_amounts(l->padding, xs[1], l->kh, l->sh, &top, &bottom);
  pad_amounts(l->padding, xs[2], l->kw, l->sw, &left, &right);
  x = pad_axis(x, 1, top, -INFINITY, false);
  x = pad_axis(x, 1, bottom, -INFINITY, true);
  x = pad_axis(x, 2, left, -INFINITY, false);
  x = pad_axis(x, 2, right, -INFINITY, true);
  if (x && (ad_shape(x)[1] < l->kh || ad_shape(x)[2] < l->kw)) {
    char want[64];
    snprintf(want, sizeof want, "inputs of at least %dx%d pixels", l->kh,
             l->kw);
    shape_error(op, l, x, want);
    return NULL;
  }
  return ad_max_pool2d(x, l->kh, l->kw, l->sh, l->sw);
}

/* SplitMix64: the mixing function of Dropout's counter-based generator. */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static ad_tensor *dropout_call(const char *op, ad_layer *l, ad_tensor *x,
                               bool training) {
  if (!l->built) {
    bool was = ad_pause_recording(true);
    ad_status st = add_var(op, l, "rng_step", ad_scalar(0.0), false);
    ad_pause_recording(was);
    if (st != AD_OK) return NULL;
    l->built = true;
  }
  if (!training || l->rate == 0.0) return identity(x);
  int64_t n = ad_numel(x);
  if (n < 0) return NULL;
  /* The step counter is the generator's position; reading it is not a
   * use that a tape should see. */
  bool was = ad_pause_recording(true);
  double step = ad_item(ad_var_value(l->vars[0]));
  ad_tensor *mask = ad__alloc(op, ad_ndim(x), ad_shape(x));
  if (mask) {
    /* Element i of call k is the i-th draw of a stream keyed by the
     * hash of (seed, k). */
    uint64_t s1 = l->seed, s2 = (uint64_t)step ^ splitmix64(&s1);
    uint64_t state = splitmix64(&s2);
    double keep = 1.0 / (1.0 - l->rate);
    for (int64_t i = 0; i < n; i++) {
      double u = (double)(splitmix64(&state) >> 11) * 0x1.0p-53;
      mask->data[i] = u < l->rate ? 0.0 : keep;
    }
    mask = ad__own(mask);
  }
  ad_status st = mask ? ad_var_assign(l->vars[0], ad_scalar(step + 1.0))
                      : ad_error();
  ad_pause_recording(was);
  if (st != AD_OK) return NULL;
  return ad_mul(x, mask);
}

static ad_tensor *flatten_call(const char *op, ad_layer *l, ad_tensor *x) {
  int nd = ad_ndim(x);
  if (nd < 1) {
    shape_error(op, l, x, "an input of rank >= 1");
    return NULL;
  }
  int64_t n = ad_shape(x)[0], rest = 1;
  for (int i = 1; i < nd; i++) rest *= ad_shape(x)[i];
  const int64_t shape[2] = {n, rest};
  return ad_reshape(x, 2, shape);
}

static ad_tensor *layer_call(ad_layer *l, ad_tensor *x, bool training);

static ad_tensor *model_call(ad_layer *m, ad_tensor *x, bool training) {
  if (m->call) {
    unsigned long errs = ad__error_count();
    ad_tensor *y = m->call(m, x, training, m->ctx);
    if (!y && ad__error_count() == errs)
      ad__error(AD_EINVAL,
                "ad_layer_call: the call function of model '%s' returned "
                "NULL without an error",
                m->name);
    return y;
  }
  if (m->nlayers == 0) return identity(x);
  for (int i = 0; i < m->nlayers && x; i++)
    x = layer_call(m->layers[i], x, training);
  return x;
}

static ad_tensor *layer_call(ad_layer *l, ad_tensor *x, bool training) {
  static const char op[] = "ad_layer_call";
  if (!x) {
    ad__error_null_arg(op, "x");
    return NULL;
  }
  ad_tensor *y = NULL;
  switch (l->kind) {
  case K_DENSE: y = dense_call(op, l, x); break;
  case K_CONV: y = conv_call(op, l, x); break;
  case K_POOL: y = pool_call(op, l, x); break;
  case K_DROPOUT: y = dropout_call(op, l, x, training); break;
  case K_FLATTEN: y = flatten_call(op, l, x); break;
  case K_MODEL: y = model_call(l, x, training); break;
  }
  if (y) {
    l->out_ndim = ad_ndim(y);
    memcpy(l->out_shape, ad_shape(y), sizeof(int64_t) * (size_t)l->out_ndim);
  }
  return y;
}

ad_tensor *ad_layer_call(ad_layer *layer, ad_tensor *x, bool training) {
  if (!layer) {
    ad__error_null_arg("ad_layer_call", "layer");
    return NULL;
  }
  return layer_call(layer, x, training);
}

ad_status ad_layer_build(ad_layer *layer, int ndim, const int64_t *shape) {
  static const char op[] = "ad_layer_build";
  if (!layer) {
    ad__error_null_arg(op, "layer");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (ad__check_shape(op, ndim, shape) != AD_OK) return ad_error();
  bool was = ad_pause_recording(true);
  ad_scope_begin();
  ad_tensor *y = layer_call(layer, ad_zeros(ndim, shape), false);
  ad_scope_end();
  ad_pause_recording(was);
  return y ? AD_OK : ad_error();
}

/* ------------------------------------------------------------------------
 * Summary
 * ---------------------------------------------------------------------- */

static void summary_lines(FILE *f, const ad_layer *l, int depth) {
  char shape[AD__SHAPE_STR] = "?";
  if (l->out_ndim >= 0) ad__shape_str(shape, l->out_ndim, l->out_shape);
  char label[300];
  snprintf(label, sizeof label, "%*s%s", 2 * depth, "", l->name);
  fprintf(f, "%-32s %-11s %-20s %10lld\n", label, kind_names[l->kind], shape,
          (long long)count_params(l, 0));
  for (int i = 0; i < l->nlayers; i++)
    summary_lines(f, l->layers[i], depth + 1);
}

ad_status ad_layer_summary(FILE *f, const ad_layer *layer) {
  static const char op[] = "ad_layer_summary";
  if (!f || !layer) {
    ad__error_null_arg(op, f ? "layer" : "f");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  bool was = ad_pause_recording(true);
  fprintf(f, "%-32s %-11s %-20s %10s\n", "layer", "kind", "output shape",
          "params");
  summary_lines(f, layer, 0);
  int64_t all = count_params(layer, 0);
  int64_t tr = count_params(layer, AD_VARS_TRAINABLE);
  fprintf(f, "total parameters: %lld (trainable %lld, non-trainable %lld)\n",
          (long long)all, (long long)tr, (long long)(all - tr));
  ad_pause_recording(was);
  if (fflush(f) != 0 || ferror(f))
    return ad__error(AD_EIO, "%s: writing the summary failed", op);
  return AD_OK;
}
