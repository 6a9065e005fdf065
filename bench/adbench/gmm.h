/* ADBench's Gaussian-mixture objective written with libad ops, vectorized
 * over points, components and dimensions, and its gradient by reverse mode. */
#ifndef ADBENCH_GMM_H
#define ADBENCH_GMM_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <ad.h>

#include "adbench_io.h"

/* Formulation (README of the ADBench data, section 1.1):
 *
 *   Q_k = diag(exp(q_k)) + L_k, lower-triangular (d x d); stacked for every
 *   k as the rows of Qall (K*d x d), row k*d+a being row a of Q_k, and
 *   scaled by 1/sqrt(2).  Then Q_k (x_i - mu_k) / sqrt(2) =
 *   (X Qall^T)[i, k*d:(k+1)*d] - Q_k mu_k / sqrt(2), so every component's
 *   Mahalanobis vector comes out of one (n x d)(d x K*d) product, and
 *
 *     beta  = alpha + sum_j q_kj - sum_d z^2              (n, K)
 *     F     = sum_i lse_k beta_ik - n lse(alpha)
 *             + 0.5 gamma^2 (sum exp(2q) + sum l^2) - m sum q + const.
 *
 * Qall is built with one ad_gather from [exp(q_k) | 0 | l_k] per
 * component.  Three choices keep the reverse pass lean (each measured):
 * -Q mu is added rather than Q mu subtracted (the reverse rule of a
 * broadcast subtraction negates the whole (n, K*d) cotangent before
 * reducing it), the 1/sqrt(2) replaces a pass of -0.5 * over (n, K), and
 * the squares are reshaped to (n, K, d) only after squaring when reduced
 * by a product, before it when reduced by ad_sum (a reshape of the sum's
 * broadcast cotangent would be copied element by element).  Points are
 * processed in chunks of at most `chunk` rows (all of them when chunk <=
 * 0); the chunks' data terms are summed. */

typedef struct adb_gmm {
  int64_t d, K, n, nicf, nl; /* nicf = d(d+1)/2, nl = d(d-1)/2 */
  double gamma;
  int m;
  double constant; /* -(n d / 2) log(2 pi) - K C */
  ad_tensor *x;    /* (n, d), owned */
  int64_t *qidx;   /* d*d gather indices into [exp q | 0 | l] */
  int64_t chunk;   /* points per chunk, <= 0 for all */
  ad_tensor *ones; /* (d), owned */
} adb_gmm;

#define ADB_PI 3.14159265358979323846

/* Up to this d, the sum over d of the squares is a product with ones(d):
 * libad's reduction pays a call per output element when the reduced axis
 * is short, BLAS does not (measured: 20-30% less time for F and J at
 * d <= 20; at d = 64 the plain sum is faster). */
#define ADB_GMM_SMALL_D 32

/* log of the multivariate gamma function Gamma_p(a). */
static inline double adb_log_multigamma(double a, int64_t p) {
  double r = (double)(p * (p - 1)) * 0.25 * log(ADB_PI);
  for (int64_t j = 1; j <= p; j++) r += lgamma(a + 0.5 * (double)(1 - j));
  return r;
}

/* Prepare the constant parts of an instance (data tensor, indices,
 * constants); 0 on success. */
static inline int adb_gmm_init(adb_gmm *g, const adb_gmm_input *in,
                               int64_t chunk) {
  int64_t d = in->d;
  g->d = d;
  g->K = in->K;
  g->n = in->n;
  g->nicf = d * (d + 1) / 2;
  g->nl = d * (d - 1) / 2;
  g->gamma = in->gamma;
  g->m = in->m;
  g->chunk = chunk;
  double nw = (double)(d + in->m + 1);
  double C = nw * (double)d * (log(in->gamma) - 0.5 * log(2.0)) -
             adb_log_multigamma(0.5 * nw, d);
  g->constant = -0.5 * (double)(in->n * d) * log(2.0 * ADB_PI) -
                (double)in->K * C;
  g->x = adb_new_owned(2, (int64_t[]){in->n, d}, in->x);
  g->qidx = malloc((size_t)(d * d) * sizeof(int64_t));
  double *one = malloc((size_t)d * sizeof *one);
  for (int64_t i = 0; one && i < d; i++) one[i] = 1.0;
  g->ones = one ? adb_new_owned(1, (int64_t[]){d}, one) : NULL;
  free(one);
  if (!g->x || !g->qidx || !g->ones) {
    ad_release(g->x);
    free(g->qidx);
    return -1;
  }
  for (int64_t a = 0; a < d; a++)
    for (int64_t b = 0; b < d; b++) {
      int64_t idx = d; /* the zero column: above the diagonal */
      if (a == b) idx = a;
      else if (a > b) idx = d + 1 + b * (d - 1) - b * (b - 1) / 2 + (a - b - 1);
      g->qidx[a * d + b] = idx;
    }
  return 0;
}

static inline void adb_gmm_release(adb_gmm *g) {
  ad_release(g->x);
  ad_release(g->ones);
  free(g->qidx);
  g->ones = NULL;
  g->x = NULL;
  g->qidx = NULL;
}

/* The parameter-side tensors every chunk of points uses. */
typedef struct adb_gmm_parts {
  ad_tensor *QallT; /* (d, K*d): Qall^T / sqrt(2) */
  ad_tensor *nQmu;  /* (K*d): the stacked -Q_k mu_k / sqrt(2) */
  ad_tensor *c;     /* (K): alpha_k + sum_j q_kj */
} adb_gmm_parts;

/* Q, Q mu and alpha + sum q from the parameters alpha (K), mu (K, d) and
 * icf (K, d(d+1)/2); also the prior and normaliser terms into *rest
 * (a scalar tensor). */
static inline adb_gmm_parts adb_gmm_params(const adb_gmm *g, ad_tensor *alpha,
                                           ad_tensor *mu, ad_tensor *icf,
                                           ad_tensor **rest) {
  int64_t d = g->d, K = g->K;
  adb_gmm_parts p;
  ad_tensor *q = ad_slice(icf, 1, 0, d, 1); /* (K, d) */
  ad_tensor *eq = ad_exp(q);
  ad_tensor *Qflat; /* (K, d*d) */
  ad_tensor *l = NULL;
  ad_tensor *zero = ad_zeros(2, (int64_t[]){K, 1});
  if (d > 1) {
    l = ad_slice(icf, 1, d, g->nicf, 1); /* (K, d(d-1)/2) */
    ad_tensor *parts[3] = {eq, zero, l};
    Qflat = ad_gather(ad_concat(3, parts, 1), 1, g->qidx, d * d);
  } else {
    Qflat = eq; /* d = 1: Q_k = exp(q_k) */
  }
  /* Scaled by 1/sqrt(2), so that the squared norms come out halved. */
  ad_tensor *Qs = ad_mul_scalar(Qflat, 0.70710678118654752440);
  ad_tensor *Q3 = ad_reshape(Qs, 3, (int64_t[]){K, d, d});
  p.QallT = ad_transpose(ad_reshape(Qs, 2, (int64_t[]){K * d, d}));
  /* (Q_k mu_k)[a] = sum_b Q_k[a, b] mu_k[b] */
  ad_tensor *Qmu =
      ad_sum(ad_mul(Q3, ad_expand_dims(mu, 1)), 1, (int[]){2}, false);
  p.nQmu = ad_reshape(ad_neg(Qmu), 1, (int64_t[]){K * d});
  ad_tensor *sumq = ad_sum(q, 1, (int[]){1}, false); /* (K) */
  p.c = ad_add(alpha, sumq);

  /* -n lse(alpha) + 0.5 gamma^2 (sum exp(2q) + sum l^2) - m sum q */
  ad_tensor *lse_a = ad_logsumexp(alpha, 0, NULL, false);
  ad_tensor *reg = ad_sum_all(ad_square(eq));
  if (l) reg = ad_add(reg, ad_sum_all(ad_square(l)));
  ad_tensor *r = ad_sub(ad_mul_scalar(reg, 0.5 * g->gamma * g->gamma),
                        ad_mul_scalar(lse_a, (double)g->n));
  if (g->m != 0) r = ad_sub(r, ad_mul_scalar(ad_sum_all(sumq), (double)g->m));
  *rest = ad_add_scalar(r, g->constant);
  return p;
}

/* sum_i lse_k beta_ik over the points x (rows, d). */
static inline ad_tensor *adb_gmm_data_term(const adb_gmm *g,
                                           const adb_gmm_parts *p,
                                           ad_tensor *x) {
  int64_t K = g->K, d = g->d, rows = ad_shape(x)[0];
  /* z = Q_k (x_i - mu_k) / sqrt(2), as (rows, K*d) */
  ad_tensor *z = ad_add(ad_matmul(x, p->QallT), p->nQmu);
  ad_tensor *maha; /* 0.5 ||Q_k (x_i - mu_k)||^2, (rows, K) */
  if (d <= ADB_GMM_SMALL_D)
    maha = ad_reshape(ad_matmul(ad_reshape(ad_square(z), 2,
                                           (int64_t[]){rows * K, d}),
                                g->ones),
                      2, (int64_t[]){rows, K});
  else
    maha = ad_sum(ad_square(ad_reshape(z, 3, (int64_t[]){rows, K, d})), 1,
                  (int[]){2}, false);
  ad_tensor *beta = ad_sub(p->c, maha);
  return ad_sum_all(ad_logsumexp(beta, 1, (int[]){1}, false));
}

/* Rows [i, i + chunk) of the data. */
static inline ad_tensor *adb_gmm_rows(const adb_gmm *g, int64_t i) {
  int64_t e = i + g->chunk < g->n ? i + g->chunk : g->n;
  return ad_slice(g->x, 0, i, e, 1);
}

static inline bool adb_gmm_chunked(const adb_gmm *g) {
  return g->chunk > 0 && g->chunk < g->n;
}

/* F(alpha, mu, icf) as a scalar tensor (NULL on error).  Chunks run in
 * their own scopes, so that only one chunk's intermediates exist at a
 * time. */
static inline ad_tensor *adb_gmm_objective(const adb_gmm *g, ad_tensor *alpha,
                                           ad_tensor *mu, ad_tensor *icf) {
  ad_tensor *rest;
  adb_gmm_parts p = adb_gmm_params(g, alpha, mu, icf, &rest);
  if (!adb_gmm_chunked(g))
    return ad_add(adb_gmm_data_term(g, &p, g->x), rest);
  ad_tensor *total = rest;
  for (int64_t i = 0; i < g->n; i += g->chunk) {
    ad_scope_begin();
    ad_tensor *t = ad_keep(adb_gmm_data_term(g, &p, adb_gmm_rows(g, i)));
    ad_scope_end();
    total = ad_add(total, t);
  }
  return total;
}

/* acc + t, acc may be NULL. */
static inline ad_tensor *adb_acc(ad_tensor *acc, ad_tensor *t) {
  return acc ? ad_add(acc, t) : t;
}

/* The gradient [d alpha | d mu | d icf] (length K(d+1)(d+2)/2) in reverse
 * mode; *value receives F when non-NULL.  Unchunked: one taped evaluation
 * and one backward pass.  Chunked, the reverse pass is split where the
 * parameters meet the data, so that memory stays at one chunk's worth:
 * tape 1 records the parameter side (alpha, mu, icf -> Q^T, Q mu, alpha +
 * sum q, the prior), joined into one vector P; each chunk's data term is
 * recorded on its own tape and differentiated with respect to P's parts;
 * the summed cotangents then seed tape 1's backward pass (a vector-Jacobian
 * product through P).  The result is the same gradient. */
static inline ad_tensor *adb_gmm_gradient(const adb_gmm *g, ad_tensor *alpha,
                                          ad_tensor *mu, ad_tensor *icf,
                                          ad_tensor **value) {
  ad_tape *tape = ad_tape_begin(0);
  if (!tape) return NULL;
  ad_tensor *src[3] = {alpha, mu, icf}, *gr[3];
  for (int i = 0; i < 3; i++) ad_tape_watch(tape, src[i]);
  ad_tensor *F = NULL, *P = NULL, *seed = NULL;
  int64_t d = g->d, K = g->K, nq = d * K * d;
  if (!adb_gmm_chunked(g)) {
    F = adb_gmm_objective(g, alpha, mu, icf);
    ad_tape_end(tape);
  } else {
    ad_tensor *rest;
    adb_gmm_parts p = adb_gmm_params(g, alpha, mu, icf, &rest);
    ad_tensor *parts[4] = {ad_reshape(p.QallT, 1, (int64_t[]){nq}), p.nQmu,
                           p.c, ad_reshape(rest, 1, (int64_t[]){1})};
    P = ad_concat(4, parts, 0);
    ad_tape_end(tape);
    /* P's parts as leaves of the chunk tapes (no tape records now). */
    adb_gmm_parts leaf;
    leaf.QallT = ad_reshape(ad_slice(P, 0, 0, nq, 1), 2, (int64_t[]){d, K * d});
    leaf.nQmu = ad_slice(P, 0, nq, nq + K * d, 1);
    leaf.c = ad_slice(P, 0, nq + K * d, nq + K * d + K, 1);
    ad_tensor *lv[3] = {leaf.QallT, leaf.nQmu, leaf.c}, *acc[3] = {0, 0, 0};
    F = rest;
    for (int64_t i = 0; F && i < g->n; i += g->chunk) {
      ad_scope_begin();
      ad_tape *t2 = ad_tape_begin(0);
      ad_tensor *gc[3] = {NULL, NULL, NULL}, *term = NULL;
      if (t2) {
        for (int k = 0; k < 3; k++) ad_tape_watch(t2, lv[k]);
        term = adb_gmm_data_term(g, &leaf, adb_gmm_rows(g, i));
        ad_tape_end(t2);
        if (term) ad_tape_gradients(t2, term, NULL, 3, lv, gc, 0);
        ad_tape_free(t2);
      }
      for (int k = 0; k < 3; k++) acc[k] = ad_keep(adb_acc(acc[k], gc[k]));
      term = ad_keep(term);
      ad_scope_end();
      F = term && acc[0] && acc[1] && acc[2] ? ad_add(F, term) : NULL;
    }
    if (F) {
      ad_tensor *sp[4] = {ad_reshape(acc[0], 1, (int64_t[]){nq}), acc[1],
                          acc[2], ad_ones(1, (int64_t[]){1})};
      seed = ad_concat(4, sp, 0);
    }
  }
  ad_tensor *flat = NULL;
  if (F && (!P || seed) &&
      ad_tape_gradients(tape, P ? P : F, seed, 3, src, gr,
                        AD_UNCONNECTED_ZERO) == AD_OK) {
    for (int i = 0; i < 3; i++) gr[i] = ad_reshape(gr[i], 1, (int64_t[]){-1});
    flat = ad_concat(3, gr, 0);
  }
  ad_tape_free(tape);
  if (value) *value = F;
  return flat;
}

/* The parameters of an instance as tensors the caller owns (ad_release
 * each). */
static inline void adb_gmm_param_tensors(const adb_gmm_input *in,
                                         ad_tensor **alpha, ad_tensor **mu,
                                         ad_tensor **icf) {
  int64_t d = in->d, K = in->K;
  *alpha = adb_new_owned(1, (int64_t[]){K}, in->alpha);
  *mu = adb_new_owned(2, (int64_t[]){K, d}, in->mu);
  *icf = adb_new_owned(2, (int64_t[]){K, d * (d + 1) / 2}, in->icf);
}

#endif /* ADBENCH_GMM_H */
