/* An open-addressing hash map from tensor ids to values, used by tapes
 * and forward levels to find what they know about a tensor. */
#include <stdlib.h>

#include "engine.h"

/* Fibonacci hashing spreads the sequential ids over the table. */
static inline int64_t slot_of(uint64_t id, int64_t cap) {
  return (int64_t)((id * 0x9E3779B97F4A7C15ull) >> 1) & (cap - 1);
}

/* Key 0 marks an empty slot, so id 0 (which no live tensor has: a
 * -DAD_DEBUG_POOL build gives it to released tensors) is never present:
 * looking it up must not find an empty slot's value. */
bool ad__idmap_get(const ad__idmap *m, uint64_t id, intptr_t *val) {
  if (m->len == 0 || id == 0) return false;
  for (int64_t i = slot_of(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->keys[i] == id) {
      *val = m->vals[i];
      return true;
    }
    if (m->keys[i] == 0) return false;
  }
}

static void insert(uint64_t *keys, intptr_t *vals, int64_t cap, uint64_t id,
                   intptr_t val) {
  int64_t i = slot_of(id, cap);
  while (keys[i] != 0 && keys[i] != id) i = (i + 1) & (cap - 1);
  keys[i] = id;
  vals[i] = val;
}

static ad_status grow(ad__idmap *m) {
  int64_t cap = m->cap ? m->cap * 2 : 64;
  uint64_t *keys = calloc((size_t)cap, sizeof *keys);
  intptr_t *vals = malloc((size_t)cap * sizeof *vals);
  if (!keys || !vals) {
    free(keys);
    free(vals);
    return ad__error(AD_ENOMEM, "out of memory growing a tensor map");
  }
  for (int64_t i = 0; i < m->cap; i++)
    if (m->keys[i]) insert(keys, vals, cap, m->keys[i], m->vals[i]);
  free(m->keys);
  free(m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = cap;
  return AD_OK;
}

ad_status ad__idmap_put(ad__idmap *m, uint64_t id, intptr_t val) {
  /* Stored, id 0 would mark its slot empty and be lost (and the count
   * would be wrong): refuse it, leaving the map unchanged. */
  if (id == 0)
    return ad__error(AD_EINVAL,
                     "a released tensor (id 0) cannot be stored in a tensor "
                     "map");
  /* Keep the load factor at or below one half. */
  if ((m->len + 1) * 2 > m->cap && grow(m) != AD_OK) return AD_ENOMEM;
  int64_t i = slot_of(id, m->cap);
  while (m->keys[i] != 0 && m->keys[i] != id) i = (i + 1) & (m->cap - 1);
  if (m->keys[i] == 0) m->len++;
  m->keys[i] = id;
  m->vals[i] = val;
  return AD_OK;
}

void ad__idmap_free(ad__idmap *m) {
  free(m->keys);
  free(m->vals);
  *m = (ad__idmap){0};
}
