/* Running metrics over batches: the (weighted) mean of values and the
 * accuracy of class predictions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad/nn.h"
#include "internal.h"

typedef enum mkind { M_MEAN, M_ACCURACY } mkind;

struct ad_metric {
  mkind kind;
  char *name;
  double total; /* Mean: sum of w * v; Accuracy: correct predictions */
  double count; /* Mean: sum of w; Accuracy: predictions */
};

static ad_metric *metric_new(mkind kind, const char *name, const char *dflt) {
  ad_metric *m = calloc(1, sizeof *m);
  char *copy = strdup(name ? name : dflt);
  if (!m || !copy) {
    free(m);
    free(copy);
    ad__error(AD_ENOMEM, "ad_metric_%s: out of memory", dflt);
    return NULL;
  }
  m->kind = kind;
  m->name = copy;
  return m;
}

ad_metric *ad_metric_mean(const char *name) {
  return metric_new(M_MEAN, name, "mean");
}

ad_metric *ad_metric_accuracy(const char *name) {
  return metric_new(M_ACCURACY, name, "accuracy");
}

/* The values of t as a malloc'ed array (NULL with an error). */
static double *values(const char *op, const ad_tensor *t, int64_t *n) {
  *n = ad_numel(t);
  double *v = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *v);
  if (!v) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  if (ad_read(t, v, *n) != AD_OK) {
    free(v);
    return NULL;
  }
  return v;
}

static ad_status mean_update(const char *op, ad_metric *m, ad_tensor *a,
                             ad_tensor *w) {
  if (w) {
    bool same = ad_ndim(a) == ad_ndim(w);
    for (int i = 0; same && i < ad_ndim(a); i++)
      same = ad_shape(a)[i] == ad_shape(w)[i];
    if (!same) {
      char sa[AD__SHAPE_STR], sw[AD__SHAPE_STR];
      return ad__error(AD_ESHAPE, "%s: values %s and weights %s differ in "
                       "shape", op, ad__shape_str(sa, ad_ndim(a), ad_shape(a)),
                       ad__shape_str(sw, ad_ndim(w), ad_shape(w)));
    }
  }
  int64_t n, nw;
  double *v = values(op, a, &n), *wv = w && v ? values(op, w, &nw) : NULL;
  if (!v || (w && !wv)) {
    free(v);
    return ad_error();
  }
  double total = 0, count = 0;
  for (int64_t i = 0; i < n; i++) {
    double wi = wv ? wv[i] : 1.0;
    total += wi * v[i];
    count += wi;
  }
  free(v);
  free(wv);
  m->total += total;
  m->count += count;
  return AD_OK;
}

/* Index of the first maximum of row[0..c). */
static int64_t argmax_row(const double *row, int64_t c) {
  int64_t best = 0;
  for (int64_t j = 1; j < c; j++)
    if (row[j] > row[best]) best = j;
  return best;
}

static ad_status accuracy_update(const char *op, ad_metric *m,
                                 ad_tensor *labels, ad_tensor *pred) {
  int nl = ad_ndim(labels), np = ad_ndim(pred);
  const int64_t *sl = ad_shape(labels), *sp = ad_shape(pred);
  bool scores = np == nl + 1, same = np == nl;
  for (int i = 0; (scores || same) && i < nl; i++)
    if (sl[i] != sp[i]) scores = same = false;
  if (!scores && !same) {
    char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
    return ad__error(AD_ESHAPE,
                     "%s: labels %s and predictions %s: predictions must "
                     "have the labels' shape or one more (class) axis",
                     op, ad__shape_str(a, nl, sl), ad__shape_str(b, np, sp));
  }
  int64_t n_l, n_p;
  double *l = values(op, labels, &n_l), *p = l ? values(op, pred, &n_p) : NULL;
  if (!l || !p) {
    free(l);
    return ad_error();
  }
  /* Rows and classes: ids vs scores, one-hot vs scores, or ids vs ids. */
  int64_t classes = scores ? sp[np - 1] : (same && nl >= 2 ? sl[nl - 1] : 1);
  int64_t rows = classes > 0 ? n_p / classes : 0;
  double correct = 0;
  ad_status st = AD_OK;
  for (int64_t r = 0; r < rows; r++) {
    double want, got;
    if (scores) {
      want = l[r];
      got = (double)argmax_row(p + r * classes, classes);
    } else if (classes > 1 || nl >= 2) {
      want = (double)argmax_row(l + r * classes, classes);
      got = (double)argmax_row(p + r * classes, classes);
    } else {
      want = l[r];
      got = p[r];
    }
    if (!isfinite(want)) {
      st = ad__error(AD_EINVAL, "%s: label %g at row %lld is not finite", op,
                     want, (long long)r);
      break;
    }
    correct += want == got;
  }
  free(l);
  free(p);
  if (st != AD_OK) return st;
  m->total += correct;
  m->count += (double)rows;
  return AD_OK;
}

ad_status ad_metric_update(ad_metric *m, ad_tensor *a, ad_tensor *b) {
  static const char op[] = "ad_metric_update";
  if (!m || !a || (m->kind == M_ACCURACY && !b)) {
    ad__error_null_arg(op, !m ? "m" : !a ? "a" : "b");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  return m->kind == M_MEAN ? mean_update(op, m, a, b)
                           : accuracy_update(op, m, a, b);
}

double ad_metric_result(const ad_metric *m) {
  if (!m) {
    ad__error_null_arg("ad_metric_result", "m");
    return NAN;
  }
  return m->count != 0 ? m->total / m->count : 0.0;
}

double ad_metric_count(const ad_metric *m) {
  if (!m) {
    ad__error_null_arg("ad_metric_count", "m");
    return NAN;
  }
  return m->count;
}

void ad_metric_reset(ad_metric *m) {
  if (!m) {
    ad__error_null_arg("ad_metric_reset", "m");
    return;
  }
  m->total = m->count = 0;
}

const char *ad_metric_name(const ad_metric *m) {
  if (!m) {
    ad__error_null_arg("ad_metric_name", "m");
    return "";
  }
  return m->name;
}

void ad_metric_free(ad_metric *m) {
  if (!m) return;
  free(m->name);
  free(m);
}
