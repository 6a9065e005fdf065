/* ADBench's diagonal-LSTM language-model loss written with libad ops, and
 * its gradient by reverse mode. */
#ifndef ADBENCH_LSTM_H
#define ADBENCH_LSTM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>

#include "adbench_io.h"

/* Formulation (README of the ADBench data, section 1.3), computed along
 * the wavefront: at step s layer i handles time t = s - i, so all l layers
 * advance together on (l, b) tensors, layer i's input being row i-1 of the
 * previous step's hidden state (row 0's is s_t * in_weight).  That is
 * c + l - 2 steps of 19 ops each instead of (c - 1) l steps of 17.  Layers
 * that have not started yet (the first l-1 steps) keep their initial state
 * through a mask; layers that have finished (the last l-1 steps) compute
 * values nothing reads, whose gradient is exactly zero.  The top layer's
 * hidden rows are taken from the stacked states by one strided slice, and
 * the output layer, the normalisation and the log-likelihood are
 * vectorized.
 *
 * The layers' inputs X = [s_t; H[0 .. l-2]] are one product with a
 * constant (l, l) shift matrix plus the bits s_t padded to (l, b) (made
 * once, with the data): X = shift H + xpad_t, the same numbers.  Slicing
 * H's rows and concatenating s_t in front does the same with two recorded
 * ops that each keep attributes (a malloc per node on the tape) and whose
 * reverse rules make a slice and a zero-padded copy; the product's reverse
 * rule is one product, and the sum's passes the cotangent through.
 * Measured (median of 9 alternated runs, l2 and l4): J 6-7% faster at the
 * same F.
 *
 * The gates stay separate ops on (l, b) tensors.  Fusing them into one
 * (4l, b) product and sigmoid, the way fused LSTM cells are usually
 * written, needs per-gate slices of the result, and a slice costs more in
 * the backward pass than the products it saves (its rule writes a
 * zero-padded copy of the whole input, which is then accumulated): measured
 * on l2, F 10% faster but J 30% slower, J/F 5.4.
 *
 * Nothing inside the loop slices a row out of a long (c-1, b) tensor: the
 * reverse rule of a slice writes a zero-padded tensor the size of its
 * input, so per-step slices of whole-sequence tensors would cost
 * O(c^2 b) in the backward pass.  The loop also runs without a scope per
 * step: measured, per-step scopes make F about 20% faster but J about 60%
 * slower here (libad's free lists hand out headers in scattered order once
 * a tape keeps some of each step's tensors alive). */

typedef struct adb_lstm {
  int64_t l, c, b;
  ad_tensor *state; /* (l, 2, b): hidden, cell per layer; owned */
  ad_tensor *seq;   /* (c, b), owned */
  ad_tensor **xpad; /* the c-1 inputs s_t as (l, b), row 0 s_t, the
                       others 0; owned */
  ad_tensor *shift; /* (l, l), ones below the diagonal (NULL for l = 1),
                       owned */
  ad_tensor **mask; /* (l, 1): 1 for layers 0..s, s < l - 1; owned */
  ad_tensor *ones;  /* (l-1, b) ones (NULL for l = 1), owned */
} adb_lstm;

static inline void adb_lstm_release(adb_lstm *L) {
  ad_release(L->state);
  ad_release(L->seq);
  if (L->xpad)
    for (int64_t t = 0; t < L->c - 1; t++) ad_release(L->xpad[t]);
  free(L->xpad);
  ad_release(L->shift);
  if (L->mask)
    for (int64_t s = 0; s < L->l; s++) ad_release(L->mask[s]);
  free(L->mask);
  ad_release(L->ones);
  L->state = L->seq = L->shift = L->ones = NULL;
  L->xpad = L->mask = NULL;
}

static inline int adb_lstm_init(adb_lstm *L, const adb_lstm_input *in) {
  int64_t l = in->l, c = in->c, b = in->b;
  L->l = l;
  L->c = c;
  L->b = b;
  L->state = adb_new_owned(3, (int64_t[]){l, 2, b}, in->state);
  L->seq = adb_new_owned(2, (int64_t[]){c, b}, in->seq);
  L->xpad = calloc((size_t)(c > 1 ? c - 1 : 1), sizeof *L->xpad);
  L->mask = calloc((size_t)l, sizeof *L->mask);
  L->shift = L->ones = NULL;
  /* Scratch for the (l, l) shift, the (l, b) padded inputs and the masks. */
  double *m = calloc((size_t)(l * l + l * b), sizeof *m);
  int ok = L->state && L->seq && L->xpad && L->mask && m;
  if (ok && l > 1) {
    ad_scope_begin();
    L->ones = ad_retain(ad_ones(2, (int64_t[]){l - 1, b}));
    ad_scope_end();
    for (int64_t i = 1; i < l; i++) m[i * l + i - 1] = 1.0;
    L->shift = adb_new_owned(2, (int64_t[]){l, l}, m);
    ok = L->ones && L->shift;
    memset(m, 0, (size_t)(l * l) * sizeof *m);
  }
  for (int64_t t = 0; ok && t < c - 1; t++) {
    memcpy(m, in->seq + t * b, (size_t)b * sizeof *m);
    L->xpad[t] = adb_new_owned(2, (int64_t[]){l, b}, m);
    ok = L->xpad[t] != NULL;
  }
  for (int64_t s = 0; ok && s < l; s++) {
    for (int64_t i = 0; i < l; i++) m[i] = i <= s ? 1.0 : 0.0;
    L->mask[s] = adb_new_owned(2, (int64_t[]){l, 1}, m);
    ok = L->mask[s] != NULL;
  }
  free(m);
  if (!ok) {
    adb_lstm_release(L);
    return -1;
  }
  return 0;
}

/* Row r of a (rows, b) tensor as (1, b). */
static inline ad_tensor *adb_row(ad_tensor *t, int64_t r) {
  return ad_slice(t, 0, r, r + 1, 1);
}

/* Gate g (0 forget, 1 ingate, 2 outgate, 3 change) of every layer from
 * main params (l, 2, 4, b): the weights (kind 0) or biases (kind 1) as an
 * (l, b) tensor. */
static inline ad_tensor *adb_lstm_gate(ad_tensor *main_params, int kind,
                                       int g) {
  const int64_t *sh = ad_shape(main_params);
  ad_tensor *t = ad_slice(ad_slice(main_params, 1, kind, kind + 1, 1), 2, g,
                          g + 1, 1);
  return ad_reshape(t, 2, (int64_t[]){sh[0], sh[3]});
}

/* The loss for main params (l, 2, 4, b) (weights then biases of the gates
 * forget, ingate, outgate, change) and extra params (3, b) (in_weight,
 * out_weight, out_bias); a scalar tensor or NULL. */
static inline ad_tensor *adb_lstm_objective(const adb_lstm *L,
                                            ad_tensor *main_params,
                                            ad_tensor *extra_params) {
  int64_t l = L->l, c = L->c, b = L->b, T = c - 1;
  ad_tensor **hs = malloc((size_t)T * sizeof *hs);
  if (!hs) return NULL;
  ad_tensor *in_w = adb_row(extra_params, 0);
  ad_tensor *out_w = adb_row(extra_params, 1);
  ad_tensor *out_b = adb_row(extra_params, 2);
  ad_tensor *W[4], *B[4];
  for (int g = 0; g < 4; g++) {
    W[g] = adb_lstm_gate(main_params, 0, g);
    B[g] = adb_lstm_gate(main_params, 1, g);
  }
  /* Layer 0's input s_t * in_weight only meets the forget and output
   * weights: fold in_weight into their row 0 once, so that the loop feeds
   * the bits s_t in directly (s_t is 0 or 1: the products are the same
   * numbers either way). */
  if (l > 1) {
    ad_tensor *parts[2] = {in_w, L->ones};
    ad_tensor *scale = ad_concat(2, parts, 0); /* [in_w; 1; ...] (l, b) */
    W[0] = ad_mul(W[0], scale);
    W[2] = ad_mul(W[2], scale);
  } else {
    W[0] = ad_mul(W[0], in_w);
    W[2] = ad_mul(W[2], in_w);
  }
  ad_tensor *H = ad_reshape(ad_slice(L->state, 1, 0, 1, 1), 2,
                            (int64_t[]){l, b});
  ad_tensor *C = ad_reshape(ad_slice(L->state, 1, 1, 2, 1), 2,
                            (int64_t[]){l, b});
  for (int64_t s = 0; s < T + l - 1; s++) {
    /* [s_t; H[0 .. l-2]]: s_t is 0 in the last l-1 steps (nothing reads
     * the top layers' results there). */
    ad_tensor *X;
    if (l == 1) X = L->xpad[s];
    else if (s < T) X = ad_add(ad_matmul(L->shift, H), L->xpad[s]);
    else X = ad_matmul(L->shift, H);
    ad_tensor *f = ad_sigmoid(ad_add(ad_mul(X, W[0]), B[0]));
    ad_tensor *ig = ad_sigmoid(ad_add(ad_mul(H, W[1]), B[1]));
    ad_tensor *o = ad_sigmoid(ad_add(ad_mul(X, W[2]), B[2]));
    ad_tensor *g = ad_tanh(ad_add(ad_mul(H, W[3]), B[3]));
    ad_tensor *C2 = ad_add(ad_mul(C, f), ad_mul(ig, g));
    ad_tensor *H2 = ad_mul(o, ad_tanh(C2));
    if (s < l - 1) { /* layers above s have not started */
      C2 = ad_where(L->mask[s], C2, C);
      H2 = ad_where(L->mask[s], H2, H);
    }
    H = H2;
    C = C2;
    if (s >= l - 1) hs[s - (l - 1)] = H;
  }
  /* The states from step l-1 on, stacked (T*l, b); the top layer's rows,
   * every l-th from row l-1, are the output layer's input (one strided
   * slice rather than one slice per step). */
  ad_tensor *xs = ad_slice(ad_concat((int)T, hs, 0), 0, l - 1, T * l, l);
  free(hs);
  ad_tensor *y = ad_add(ad_mul(xs, out_w), out_b); /* (T, b) */
  ad_tensor *lse = ad_log(ad_add_scalar(
      ad_sum(ad_exp(y), 1, (int[]){1}, true), 2.0)); /* (T, 1) */
  ad_tensor *ynorm = ad_sub(y, lse);
  ad_tensor *total = ad_sum_all(ad_mul(ad_slice(L->seq, 0, 1, c, 1), ynorm));
  return ad_mul_scalar(total, -1.0 / (double)(T * b));
}

/* The gradient [main params (8lb) | extra params (3b)]; *value receives
 * the loss when non-NULL. */
static inline ad_tensor *adb_lstm_gradient(const adb_lstm *L,
                                           ad_tensor *main_params,
                                           ad_tensor *extra_params,
                                           ad_tensor **value) {
  ad_tape *tape = ad_tape_begin(0);
  if (!tape) return NULL;
  ad_tensor *src[2] = {main_params, extra_params}, *gr[2];
  ad_tape_watch(tape, main_params);
  ad_tape_watch(tape, extra_params);
  ad_tensor *F = adb_lstm_objective(L, main_params, extra_params);
  ad_tape_end(tape);
  ad_tensor *flat = NULL;
  if (F && ad_tape_gradients(tape, F, NULL, 2, src, gr,
                             AD_UNCONNECTED_ZERO) == AD_OK) {
    for (int i = 0; i < 2; i++) gr[i] = ad_reshape(gr[i], 1, (int64_t[]){-1});
    flat = ad_concat(2, gr, 0);
  }
  ad_tape_free(tape);
  if (value) *value = F;
  return flat;
}

/* The parameters of an instance as tensors the caller owns (ad_release
 * each). */
static inline void adb_lstm_param_tensors(const adb_lstm_input *in,
                                          ad_tensor **main_params,
                                          ad_tensor **extra_params) {
  *main_params =
      adb_new_owned(4, (int64_t[]){in->l, 2, 4, in->b}, in->main_params);
  *extra_params = adb_new_owned(2, (int64_t[]){3, in->b}, in->extra_params);
}

#endif /* ADBENCH_LSTM_H */
