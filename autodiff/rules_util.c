/* Helpers shared by the derivative rules. */
#include "engine.h"

ad_tensor *ad__zeros_like(const ad_tensor *t) {
  return ad_zeros(t->ndim, t->shape);
}

unsigned ad__broadcast_mask(int nin, ad_tensor *const *in,
                            const ad_tensor *out) {
  unsigned mask = 0;
  for (int i = 0; i < nin && i < 32; i++)
    if (!ad__same_shape(in[i], out)) mask |= 1u << i;
  return mask;
}

/* In as few ops as the shapes allow: one sum without kept dimensions when
 * broadcasting only added leading axes, one sum with kept dimensions when
 * it only stretched size-1 axes (either result has like's shape already),
 * else the sum and a reshape.  Each op saved is one node less on a tape
 * that records the rule and one tensor less per call. */
ad_tensor *ad__unbroadcast(ad_tensor *g, const ad_tensor *like) {
  if (!g || ad__same_shape(g, like)) return g;
  int lead = g->ndim - like->ndim, axes[AD_MAX_DIMS], naxes = 0;
  bool stretched = false;
  for (int i = 0; i < g->ndim; i++) {
    if (i < lead) {
      axes[naxes++] = i;
    } else if (like->shape[i - lead] == 1 && g->shape[i] != 1) {
      axes[naxes++] = i;
      stretched = true;
    }
  }
  if (lead >= 0 && naxes > 0 && !stretched)
    return ad_sum(g, naxes, axes, false);
  if (lead == 0 && naxes > 0) return ad_sum(g, naxes, axes, true);
  ad_tensor *s = naxes ? ad_sum(g, naxes, axes, true) : g;
  return ad_reshape(s, like->ndim, like->shape);
}
