/* Losses: mean squared error and softmax cross-entropy from logits, with
 * one-hot (or soft) labels and with integer labels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad/nn.h"
#include "internal.h"

static bool args_ok(const char *op, ad_tensor *a, const char *an,
                    ad_tensor *b, const char *bn) {
  if (a && b) return true;
  ad__error_null_arg(op, a ? bn : an);
  return false;
}

static bool same_shape(const ad_tensor *a, const ad_tensor *b) {
  if (ad_ndim(a) != ad_ndim(b)) return false;
  for (int i = 0; i < ad_ndim(a); i++)
    if (ad_shape(a)[i] != ad_shape(b)[i]) return false;
  return true;
}

static ad_tensor *shape_mismatch(const char *op, const char *an,
                                 const ad_tensor *a, const char *bn,
                                 const ad_tensor *b, const char *rule) {
  char sa[AD__SHAPE_STR], sb[AD__SHAPE_STR];
  ad__error(AD_ESHAPE, "%s: %s %s and %s %s: %s", op, an,
            ad__shape_str(sa, ad_ndim(a), ad_shape(a)), bn,
            ad__shape_str(sb, ad_ndim(b), ad_shape(b)), rule);
  return NULL;
}

ad_tensor *ad_loss_mse(ad_tensor *pred, ad_tensor *target) {
  static const char op[] = "ad_loss_mse";
  if (!args_ok(op, pred, "pred", target, "target")) return NULL;
  if (!same_shape(pred, target))
    return shape_mismatch(op, "pred", pred, "target", target,
                          "shapes must be equal");
  if (ad_numel(pred) == 0) {
    ad__error(AD_ESHAPE, "%s: no elements to average", op);
    return NULL;
  }
  return ad_mean(ad_square(ad_sub(pred, target)), 0, NULL, false);
}

/* Rows of logits (..., C): the product of the leading axes.  0 with an
 * error when there are none or C is 0. */
static int64_t logit_rows(const char *op, const ad_tensor *logits,
                          int64_t *classes) {
  int nd = ad_ndim(logits);
  if (nd < 1) {
    ad__error(AD_ESHAPE, "%s: logits must have rank >= 1 (a class axis), "
              "got a scalar", op);
    return 0;
  }
  *classes = ad_shape(logits)[nd - 1];
  int64_t rows = *classes > 0 ? ad_numel(logits) / *classes : 0;
  if (rows == 0) {
    char s[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "%s: logits %s hold no examples", op,
              ad__shape_str(s, nd, ad_shape(logits)));
  }
  return rows;
}

ad_tensor *ad_loss_softmax_cross_entropy(ad_tensor *logits,
                                         ad_tensor *labels) {
  static const char op[] = "ad_loss_softmax_cross_entropy";
  if (!args_ok(op, logits, "logits", labels, "labels")) return NULL;
  if (!same_shape(logits, labels))
    return shape_mismatch(op, "logits", logits, "labels", labels,
                          "shapes must be equal (one-hot labels)");
  int64_t classes, rows = logit_rows(op, logits, &classes);
  if (rows == 0) return NULL;
  /* log_softmax subtracts each row's maximum, so large logits stay
   * finite; labels are data, never differentiated. */
  ad_tensor *lsm = ad_log_softmax(logits, -1);
  ad_tensor *dot = ad_sum_all(ad_mul(ad_stop_gradient(labels), lsm));
  return ad_mul_scalar(dot, -1.0 / (double)rows);
}

ad_tensor *ad_loss_sparse_softmax_cross_entropy(ad_tensor *logits,
                                                ad_tensor *labels) {
  static const char op[] = "ad_loss_sparse_softmax_cross_entropy";
  if (!args_ok(op, logits, "logits", labels, "labels")) return NULL;
  int nd = ad_ndim(logits);
  bool fits = nd >= 1 && ad_ndim(labels) == nd - 1;
  for (int i = 0; fits && i < nd - 1; i++)
    fits = ad_shape(labels)[i] == ad_shape(logits)[i];
  if (!fits)
    return shape_mismatch(op, "logits", logits, "labels", labels,
                          "labels must have the shape of logits without "
                          "its last (class) axis");
  int64_t classes, rows = logit_rows(op, logits, &classes);
  if (rows == 0) return NULL;
  double *lab = malloc((size_t)rows * sizeof *lab);
  int64_t *idx = malloc((size_t)rows * sizeof *idx);
  ad_tensor *loss = NULL;
  if (!lab || !idx) {
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    goto done;
  }
  if (ad_read(labels, lab, rows) != AD_OK) goto done;
  for (int64_t r = 0; r < rows; r++) {
    double v = lab[r];
    if (!(v >= 0 && v < (double)classes && v == floor(v))) {
      ad__error(AD_EINVAL,
                "%s: label %g at position %lld is not a class index in "
                "0..%lld",
                op, v, (long long)r, (long long)classes - 1);
      goto done;
    }
    idx[r] = r * classes + (int64_t)v;
  }
  {
    /* Pick each row's label entry from the flattened log-probabilities;
     * the gradient of gather scatters back into those entries only. */
    int64_t flat = rows * classes;
    ad_tensor *lsm = ad_reshape(ad_log_softmax(logits, -1), 1, &flat);
    ad_tensor *picked = ad_gather(lsm, 0, idx, rows);
    loss = ad_mul_scalar(ad_sum_all(picked), -1.0 / (double)rows);
  }
done:
  free(lab);
  free(idx);
  return loss;
}
