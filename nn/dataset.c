/* Input pipelines in the style of tf.data (tensor slices, map, shuffle,
 * batch, repeat and their iterators) and a CSV reader that feeds them. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "ad/nn.h"
#include "internal.h"

#define MAX_COMPONENTS 16

typedef enum dkind { D_SLICES, D_MAP, D_SHUFFLE, D_BATCH, D_REPEAT } dkind;

struct ad_dataset {
  atomic_long refs;
  dkind kind;
  int ncomp;
  ad_dataset *src;  /* owned reference; NULL for slices */
  uint64_t passes;  /* iterators made by ad_dataset_iter so far */
  ad_tensor *ts[MAX_COMPONENTS]; /* slices: retained */
  int64_t n;                     /* slices: number of elements */
  ad_dataset_map_fn fn;          /* map */
  void *ctx;
  int64_t size;  /* shuffle: buffer size; batch: batch size; repeat: count */
  uint64_t seed; /* shuffle */
  bool drop;     /* batch */
};

/* One node of an iterator: the state of one pass over one dataset. */
typedef struct node {
  ad_dataset *ds; /* borrowed: the iterator holds the root's reference */
  uint64_t pass;
  struct node *child;
  int64_t pos;    /* slices: next index; repeat: current repetition */
  bool child_done;
  /* shuffle: buffer of nbuf elements of ncomp retained tensors each */
  ad_tensor **buf;
  int64_t nbuf;
  bool filled;
  uint64_t rng;
} node;

struct ad_iterator {
  ad_dataset *ds; /* retained */
  node *root;
  int ncomp;
  bool done;
  ad_status status;
};

/* ------------------------------------------------------------------------
 * Datasets
 * ---------------------------------------------------------------------- */

static ad_dataset *dataset_new(const char *op, dkind kind, ad_dataset *src,
                               int ncomp) {
  ad_dataset *d = calloc(1, sizeof *d);
  if (!d) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    ad_dataset_free(src);
    return NULL;
  }
  atomic_init(&d->refs, 1);
  d->kind = kind;
  d->src = src;
  d->ncomp = ncomp;
  return d;
}

ad_dataset *ad_dataset_retain(ad_dataset *ds) {
  if (ds) atomic_fetch_add_explicit(&ds->refs, 1, memory_order_relaxed);
  return ds;
}

void ad_dataset_free(ad_dataset *ds) {
  while (ds) {
    if (atomic_fetch_sub_explicit(&ds->refs, 1, memory_order_acq_rel) != 1)
      return;
    ad_dataset *src = ds->src;
    if (ds->kind == D_SLICES)
      for (int i = 0; i < ds->ncomp; i++) ad_release(ds->ts[i]);
    free(ds);
    ds = src; /* iterative: a long pipeline does not recurse */
  }
}

ad_dataset *ad_dataset_from_tensor_slices(int n, ad_tensor *const *ts) {
  static const char op[] = "ad_dataset_from_tensor_slices";
  if (n < 1 || n > MAX_COMPONENTS || !ts) {
    ad__error(AD_EINVAL, "%s: need 1..%d tensors, got %d%s", op,
              MAX_COMPONENTS, n, ts ? "" : " and a NULL array");
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    if (!ts[i]) {
      char arg[16];
      snprintf(arg, sizeof arg, "ts[%d]", i);
      ad__error_null_arg(op, arg);
      return NULL;
    }
    char s0[AD__SHAPE_STR], si[AD__SHAPE_STR];
    if (ad_ndim(ts[i]) < 1) {
      ad__error(AD_ESHAPE, "%s: ts[%d] is a scalar; slicing needs rank >= 1",
                op, i);
      return NULL;
    }
    if (ad_shape(ts[i])[0] != ad_shape(ts[0])[0]) {
      ad__error(AD_ESHAPE,
                "%s: first dimensions differ: ts[0] %s and ts[%d] %s", op,
                ad__shape_str(s0, ad_ndim(ts[0]), ad_shape(ts[0])), i,
                ad__shape_str(si, ad_ndim(ts[i]), ad_shape(ts[i])));
      return NULL;
    }
  }
  ad_dataset *d = dataset_new(op, D_SLICES, NULL, n);
  if (!d) return NULL;
  for (int i = 0; i < n; i++) d->ts[i] = ad_retain(ts[i]);
  d->n = ad_shape(ts[0])[0];
  return d;
}

/* A NULL source keeps its error; a bad argument releases the source. */
static bool source_ok(const char *op, ad_dataset *src) {
  if (src) return true;
  ad__error_null_arg(op, "src");
  return false;
}

static ad_dataset *reject(ad_dataset *src) {
  ad_dataset_free(src);
  return NULL;
}

ad_dataset *ad_dataset_map(ad_dataset *src, int nout, ad_dataset_map_fn fn,
                           void *ctx) {
  static const char op[] = "ad_dataset_map";
  if (!source_ok(op, src)) return NULL;
  if (nout < 1 || nout > MAX_COMPONENTS || !fn) {
    ad__error(AD_EINVAL, "%s: need a function and 1..%d outputs, got %d%s",
              op, MAX_COMPONENTS, nout, fn ? "" : " and a NULL function");
    return reject(src);
  }
  ad_dataset *d = dataset_new(op, D_MAP, src, nout);
  if (!d) return NULL;
  d->fn = fn;
  d->ctx = ctx;
  return d;
}

ad_dataset *ad_dataset_shuffle(ad_dataset *src, int64_t buffer_size,
                               uint64_t seed) {
  static const char op[] = "ad_dataset_shuffle";
  if (!source_ok(op, src)) return NULL;
  if (buffer_size < 1) {
    ad__error(AD_EINVAL, "%s: buffer_size must be >= 1, got %lld", op,
              (long long)buffer_size);
    return reject(src);
  }
  ad_dataset *d = dataset_new(op, D_SHUFFLE, src, src->ncomp);
  if (!d) return NULL;
  d->size = buffer_size;
  d->seed = seed;
  return d;
}

ad_dataset *ad_dataset_batch(ad_dataset *src, int64_t batch_size,
                             bool drop_remainder) {
  static const char op[] = "ad_dataset_batch";
  if (!source_ok(op, src)) return NULL;
  if (batch_size < 1) {
    ad__error(AD_EINVAL, "%s: batch_size must be >= 1, got %lld", op,
              (long long)batch_size);
    return reject(src);
  }
  ad_dataset *d = dataset_new(op, D_BATCH, src, src->ncomp);
  if (!d) return NULL;
  d->size = batch_size;
  d->drop = drop_remainder;
  return d;
}

ad_dataset *ad_dataset_repeat(ad_dataset *src, int64_t count) {
  static const char op[] = "ad_dataset_repeat";
  if (!source_ok(op, src)) return NULL;
  ad_dataset *d = dataset_new(op, D_REPEAT, src, src->ncomp);
  if (!d) return NULL;
  d->size = count;
  return d;
}

int ad_dataset_num_components(const ad_dataset *ds) {
  if (!ds) {
    ad__error_null_arg("ad_dataset_num_components", "ds");
    return -1;
  }
  return ds->ncomp;
}

static int64_t cardinality(const ad_dataset *d) {
  int64_t c;
  switch (d->kind) {
  case D_SLICES: return d->n;
  case D_MAP:
  case D_SHUFFLE: return cardinality(d->src);
  case D_BATCH:
    c = cardinality(d->src);
    if (c == AD_INFINITE) return c;
    return d->drop ? c / d->size : c / d->size + (c % d->size != 0);
  case D_REPEAT:
    c = cardinality(d->src);
    if (c == 0 || d->size == 0) return 0;
    if (d->size < 0 || c == AD_INFINITE || c > AD_INFINITE / d->size)
      return AD_INFINITE;
    return c * d->size;
  }
  return 0;
}

int64_t ad_dataset_cardinality(const ad_dataset *ds) {
  if (!ds) {
    ad__error_null_arg("ad_dataset_cardinality", "ds");
    return -1;
  }
  return cardinality(ds);
}

/* ------------------------------------------------------------------------
 * Iterators
 *
 * node_next returns 1 with an element in out (tensors owned by the
 * current scope), 0 at the end of the pass, -1 on error.
 * ---------------------------------------------------------------------- */

/* SplitMix64 step, and a hash of two words built from it. */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static uint64_t mix2(uint64_t a, uint64_t b) {
  uint64_t s = a;
  s = splitmix64(&s) ^ b;
  return splitmix64(&s);
}

static void node_free(node *n) {
  while (n) {
    node *child = n->child;
    if (n->buf)
      for (int64_t i = 0; i < n->nbuf * n->ds->ncomp; i++)
        ad_release(n->buf[i]);
    free(n->buf);
    free(n);
    n = child;
  }
}

static node *node_new(ad_dataset *ds, uint64_t pass) {
  node *n = calloc(1, sizeof *n);
  if (!n) {
    ad__error(AD_ENOMEM, "ad_dataset_iter: out of memory");
    return NULL;
  }
  n->ds = ds;
  n->pass = pass;
  if (ds->kind == D_SHUFFLE) n->rng = mix2(ds->seed, pass);
  if (ds->kind == D_REPEAT) return n; /* children are made as it runs */
  if (ds->src) {
    n->child = node_new(ds->src, pass);
    if (!n->child) {
      free(n);
      return NULL;
    }
  }
  return n;
}

static int node_next(node *n, ad_tensor **out);

static int slices_next(node *n, ad_tensor **out) {
  const ad_dataset *d = n->ds;
  if (n->pos >= d->n) return 0;
  for (int i = 0; i < d->ncomp; i++) {
    out[i] = ad_squeeze(ad_slice(d->ts[i], 0, n->pos, n->pos + 1, 1), 0);
    if (!out[i]) return -1;
  }
  n->pos++;
  return 1;
}

static int map_next(node *n, ad_tensor **out) {
  const ad_dataset *d = n->ds;
  ad_tensor *in[MAX_COMPONENTS];
  int r = node_next(n->child, in);
  if (r <= 0) return r;
  for (int i = 0; i < d->ncomp; i++) out[i] = NULL;
  unsigned long errs = ad__error_count();
  ad_status st = d->fn(d->src->ncomp, in, out, d->ctx);
  bool missing = false;
  for (int i = 0; i < d->ncomp; i++) missing |= !out[i];
  if (st == AD_OK && !missing && ad__error_count() == errs) return 1;
  if (ad__error_count() == errs)
    ad__error(st != AD_OK ? st : AD_EINVAL,
              "ad_dataset_map: the map function %s",
              st != AD_OK ? "failed without a message"
                          : "left an output NULL");
  else if (st == AD_OK && !missing) {
    char why[512];
    snprintf(why, sizeof why, "%s", ad_error_message());
    ad__error(ad_error() ? ad_error() : AD_EINVAL,
              "ad_dataset_map: a libad call inside the map function failed "
              "(%s)",
              why);
  }
  return -1;
}

static int shuffle_next(node *n, ad_tensor **out) {
  const ad_dataset *d = n->ds;
  int nc = d->ncomp;
  ad_tensor *e[MAX_COMPONENTS];
  if (!n->filled) {
    /* The buffer grows as it fills: a huge buffer_size over a small
     * dataset costs only what the dataset holds. */
    int64_t cap = d->size < 1024 ? d->size : 1024;
    n->buf = malloc((size_t)cap * (size_t)nc * sizeof *n->buf);
    if (!n->buf) {
      ad__error(AD_ENOMEM, "ad_dataset_shuffle: out of memory");
      return -1;
    }
    while (n->nbuf < d->size) {
      int r = node_next(n->child, e);
      if (r < 0) return -1;
      if (r == 0) {
        n->child_done = true;
        break;
      }
      if (n->nbuf == cap) {
        cap *= 2;
        if (cap > d->size) cap = d->size;
        ad_tensor **grown = realloc(n->buf, (size_t)cap * (size_t)nc *
                                                sizeof *grown);
        if (!grown) {
          ad__error(AD_ENOMEM, "ad_dataset_shuffle: out of memory");
          return -1;
        }
        n->buf = grown;
      }
      for (int i = 0; i < nc; i++) n->buf[n->nbuf * nc + i] = ad_retain(e[i]);
      n->nbuf++;
    }
    n->filled = true;
  }
  if (n->nbuf == 0) return 0;
  /* A uniform index from the top 53 bits of the generator. */
  double u = (double)(splitmix64(&n->rng) >> 11) * 0x1.0p-53;
  int64_t j = (int64_t)(u * (double)n->nbuf);
  if (j >= n->nbuf) j = n->nbuf - 1;
  /* The buffer's references pass to the current scope. */
  for (int i = 0; i < nc; i++) out[i] = ad__own(n->buf[j * nc + i]);
  int r = n->child_done ? 0 : node_next(n->child, e);
  if (r < 0) {
    n->nbuf--;
    memmove(n->buf + j * nc, n->buf + n->nbuf * nc, (size_t)nc *
                                                        sizeof *n->buf);
    return -1;
  }
  if (r == 0) {
    n->child_done = true;
    n->nbuf--;
    memcpy(n->buf + j * nc, n->buf + n->nbuf * nc, (size_t)nc *
                                                       sizeof *n->buf);
  } else {
    for (int i = 0; i < nc; i++) n->buf[j * nc + i] = ad_retain(e[i]);
  }
  for (int i = 0; i < nc; i++)
    if (!out[i]) return -1;
  return 1;
}

static int batch_next(node *n, ad_tensor **out) {
  const ad_dataset *d = n->ds;
  int nc = d->ncomp;
  if (n->child_done) return 0;
  ad_tensor **items = malloc((size_t)d->size * (size_t)nc * sizeof *items);
  if (!items) {
    ad__error(AD_ENOMEM, "ad_dataset_batch: out of memory");
    return -1;
  }
  int64_t k = 0;
  int r = 1;
  ad_tensor *e[MAX_COMPONENTS];
  while (k < d->size && (r = node_next(n->child, e)) == 1) {
    /* Component-major, so each component's items are contiguous. */
    for (int i = 0; i < nc; i++) items[i * d->size + k] = e[i];
    k++;
  }
  int result = -1;
  if (r < 0) goto done;
  if (r == 0) n->child_done = true;
  if (k == 0 || (k < d->size && d->drop)) {
    result = 0;
    goto done;
  }
  if (k > INT_MAX) {
    ad__error(AD_EINVAL, "ad_dataset_batch: batch of %lld is too large",
              (long long)k);
    goto done;
  }
  for (int i = 0; i < nc; i++) {
    out[i] = ad_stack((int)k, items + i * d->size, 0);
    if (!out[i]) goto done;
  }
  result = 1;
done:
  free(items);
  return result;
}

static int repeat_next(node *n, ad_tensor **out) {
  const ad_dataset *d = n->ds;
  for (;;) {
    if (d->size >= 0 && n->pos >= d->size) return 0;
    bool fresh = false;
    if (!n->child) {
      n->child = node_new(d->src, mix2(n->pass, (uint64_t)n->pos));
      if (!n->child) return -1;
      fresh = true;
    }
    int r = node_next(n->child, out);
    if (r != 0) return r;
    node_free(n->child);
    n->child = NULL;
    n->pos++;
    /* A repetition without elements would loop forever. */
    if (fresh) return 0;
  }
}

static int node_next(node *n, ad_tensor **out) {
  switch (n->ds->kind) {
  case D_SLICES: return slices_next(n, out);
  case D_MAP: return map_next(n, out);
  case D_SHUFFLE: return shuffle_next(n, out);
  case D_BATCH: return batch_next(n, out);
  case D_REPEAT: return repeat_next(n, out);
  }
  return -1;
}

ad_iterator *ad_dataset_iter_pass(ad_dataset *ds, uint64_t pass) {
  if (!ds) {
    ad__error_null_arg("ad_dataset_iter", "ds");
    return NULL;
  }
  ad_iterator *it = calloc(1, sizeof *it);
  if (!it) {
    ad__error(AD_ENOMEM, "ad_dataset_iter: out of memory");
    return NULL;
  }
  it->root = node_new(ds, pass);
  if (!it->root) {
    free(it);
    return NULL;
  }
  it->ds = ad_dataset_retain(ds);
  it->ncomp = ds->ncomp;
  return it;
}

ad_iterator *ad_dataset_iter(ad_dataset *ds) {
  ad_iterator *it = ad_dataset_iter_pass(ds, ds ? ds->passes : 0);
  if (it) ds->passes++;
  return it;
}

bool ad_iter_next(ad_iterator *it, ad_tensor **out) {
  static const char op[] = "ad_iter_next";
  if (!it || !out) {
    ad__error_null_arg(op, it ? "out" : "it");
    return false;
  }
  for (int i = 0; i < it->ncomp; i++) out[i] = NULL;
  if (it->done) return false;
  ad_tensor *tmp[MAX_COMPONENTS];
  bool was = ad_pause_recording(true);
  ad_scope_begin();
  int r = node_next(it->root, tmp);
  /* Every component or none, so that none is orphaned on failure. */
  if (r == 1 && !ad__keep_reserve(it->ncomp)) r = -1;
  for (int i = 0; r == 1 && i < it->ncomp; i++)
    if (!ad_keep(tmp[i])) r = -1;
  ad_scope_end();
  ad_pause_recording(was);
  if (r == 1) {
    for (int i = 0; i < it->ncomp; i++) out[i] = tmp[i];
    return true;
  }
  if (r < 0) {
    it->status = ad_error() ? ad_error() : AD_EINTERNAL;
    /* Tensors kept before the failure belong to the caller's scope and
     * go with it; out stays NULL. */
  }
  it->done = true;
  node_free(it->root);
  it->root = NULL;
  return false;
}

ad_status ad_iter_status(const ad_iterator *it) {
  if (!it) {
    ad__error_null_arg("ad_iter_status", "it");
    return AD_EINVAL;
  }
  return it->status;
}

void ad_iter_free(ad_iterator *it) {
  if (!it) return;
  node_free(it->root);
  ad_dataset_free(it->ds);
  free(it);
}

/* ------------------------------------------------------------------------
 * CSV
 * ---------------------------------------------------------------------- */

/* Open path for reading, through `gzip -dc` when it ends in ".gz";
 * *piped says which close to use. */
static FILE *open_input(const char *op, const char *path, bool *piped) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    ad__error(AD_EIO, "%s: cannot open '%s': %s", op, path, strerror(errno));
    return NULL;
  }
  size_t len = strlen(path);
  *piped = len > 3 && strcmp(path + len - 3, ".gz") == 0;
  if (!*piped) return f;
  fclose(f);
  /* Quote the path for the shell: ' becomes '\''. */
  size_t cap = 4 * len + 32;
  char *cmd = malloc(cap);
  if (!cmd) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  size_t k = (size_t)snprintf(cmd, cap, "gzip -dc -- '");
  for (const char *p = path; *p; p++) {
    if (*p == '\'') {
      memcpy(cmd + k, "'\\''", 4);
      k += 4;
    } else {
      cmd[k++] = *p;
    }
  }
  memcpy(cmd + k, "'", 2);
  fflush(NULL);
  f = popen(cmd, "r");
  free(cmd);
  if (!f)
    ad__error(AD_EIO, "%s: cannot run gzip for '%s': %s", op, path,
              strerror(errno));
  return f;
}

ad_tensor *ad_load_csv(const char *path, int64_t skip_rows) {
  static const char op[] = "ad_load_csv";
  if (!path) {
    ad__error_null_arg(op, "path");
    return NULL;
  }
  bool piped = false;
  FILE *f = open_input(op, path, &piped);
  if (!f) return NULL;
  double *vals = NULL;
  int64_t nvals = 0, cap = 0, rows = 0, cols = -1, lineno = 0;
  char *line = NULL;
  size_t linecap = 0;
  ssize_t len;
  bool ok = true;
  while (ok && (len = getline(&line, &linecap, f)) >= 0) {
    lineno++;
    if (lineno <= skip_rows) continue;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = '\0';
    if (len == 0) continue;
    int64_t c = 0;
    char *p = line;
    for (;;) {
      char *end;
      errno = 0;
      double v = strtod(p, &end);
      while (*end == ' ' || *end == '\t') end++;
      if (end == p || (*end != ',' && *end != '\0')) {
        ad__error(AD_EINVAL, "%s: %s line %lld, column %lld: \"%.32s\" is "
                  "not a number", op, path, (long long)lineno,
                  (long long)c + 1, p);
        ok = false;
        break;
      }
      if (nvals == cap) {
        cap = cap ? 2 * cap : 4096;
        double *grown = realloc(vals, (size_t)cap * sizeof *grown);
        if (!grown) {
          ad__error(AD_ENOMEM, "%s: out of memory", op);
          ok = false;
          break;
        }
        vals = grown;
      }
      vals[nvals++] = v;
      c++;
      if (*end == '\0') break;
      p = end + 1;
    }
    if (!ok) break;
    if (cols < 0) cols = c;
    if (c != cols) {
      ad__error(AD_EINVAL, "%s: %s line %lld has %lld fields, earlier lines "
                "%lld", op, path, (long long)lineno, (long long)c,
                (long long)cols);
      ok = false;
    }
    rows++;
  }
  bool read_error = ferror(f) != 0;
  int rc = piped ? pclose(f) : fclose(f);
  free(line);
  if (ok && (read_error || rc != 0)) {
    ad__error(AD_EIO, "%s: reading '%s' failed%s", op, path,
              piped ? " (gzip -dc reported an error)" : "");
    ok = false;
  }
  ad_tensor *t = NULL;
  if (ok) {
    const int64_t shape[2] = {rows, cols < 0 ? 0 : cols};
    t = ad_tensor_new(2, shape, vals);
  }
  free(vals);
  return t;
}
