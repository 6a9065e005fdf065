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

ad_tensor *ad__unbroadcast(ad_tensor *g, const ad_tensor *like) {
  if (!g) return NULL;
  if (g->ndim == like->ndim) {
    bool same = true;
    for (int i = 0; i < g->ndim && same; i++)
      same = g->shape[i] == like->shape[i];
    if (same) return g;
  }
  /* Sum the leading axes broadcasting added and the size-1 axes it
   * stretched, then restore like's shape. */
  int axes[AD_MAX_DIMS], naxes = 0;
  int lead = g->ndim - like->ndim;
  for (int i = 0; i < g->ndim; i++)
    if (i < lead || (like->shape[i - lead] == 1 && g->shape[i] != 1))
      axes[naxes++] = i;
  ad_tensor *s = naxes ? ad_sum(g, naxes, axes, true) : g;
  return ad_reshape(s, like->ndim, like->shape);
}
