/* ADBench's bundle-adjustment residuals written with libad ops, vectorized
 * over observations, and their sparse Jacobian by reverse mode. */
#ifndef ADBENCH_BA_H
#define ADBENCH_BA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>

#include "adbench_io.h"

/* Formulation (README of the ADBench data, section 1.2).  Observation i
 * sees camera c = i mod n, point i mod m, its own weight w_i and feature
 * feat_i.  With the camera [r(3), C(3), f, x0(2), kappa(2)]:
 *
 *   Y     = X - C
 *   t2    = |r|^2,  s = 1 / sqrt(t2),  theta = t2 s
 *   Xcam  = Y cos(theta) + (r x Y) sin(theta) s + r (r.Y) (1 - cos(theta)) s^2
 *   u     = Xcam[0:2] / Xcam[2],  u *= 1 + kappa_1 |u|^2 + kappa_2 |u|^4
 *   e     = w (f u + x0 - feat)                 (2 residuals)
 *   w_err = 1 - w^2                             (1 residual)
 *
 * which is Rodrigues' formula with v = r / theta written without v.  For
 * r = 0 ADBench takes Xcam = Y + r x Y: cos -> 1, sin(theta) s -> 1 and
 * (1 - cos) s^2 -> 0 in the same expression (value and first derivatives
 * agree); that branch is taken through ad_where only when some camera has
 * r = 0 (checked on the camera table at every call).
 *
 * Each observation's camera and point are gathered with ad_gather (rows of
 * the (n, 11) and (m, 3) tables), and the 15 numbers an observation depends
 * on are used as 15 (rows,)-shaped column views, so every op runs on all
 * observations at once and no op mixes two observations.  Observations
 * are processed in chunks of `chunk` rows (all of them when chunk <= 0),
 * each in its own scope, so that a chunk's intermediates stay in cache.
 *
 * The Jacobian (3p x (11n + 3m + p), ADBench's CSR layout): because no op
 * mixes observations, the gradient of sum_i e_x,i with respect to every
 * observation's own gathered copy of its camera, point and weight holds,
 * row by row, the 15 entries of that observation's e_x row, and likewise
 * for e_y.  So J is one recorded pass of the residuals per chunk (the 15
 * column views as watched leaves) and two reverse passes on that tape,
 * seeded with ones on e_x and on e_y; the weight rows (-2 w) come from one
 * JVP of w_err along ones.  Forward mode would need 15 JVPs (one per
 * column of the 2x15 block, every observation's copy of parameter j
 * perturbed at once), each re-evaluating the residuals with their
 * tangents: measured 4.2-4.9x slower on ba1 and ba5 (adb_ba_jacobian_fwd,
 * kept as a cross-check for the tests).
 * J returns the 31p values in CSR order; the CSR structure (rows, cols)
 * does not depend on the parameters and is built once by adb_ba_init. */

/* Observations per chunk: with ~65 (chunk,) intermediates, a few hundred
 * KB to 2 MB per chunk (F and J measured flat from 512 to 2048 on ba5). */
#define ADB_BA_CHUNK 1024

typedef struct adb_ba {
  int64_t n, m, p;
  int64_t chunk;   /* observations per chunk (p: one chunk) */
  int64_t *cidx;   /* p: camera of each observation */
  int64_t *pidx;   /* p: point of each observation */
  ad_tensor *feat; /* (p, 2), owned */
  ad_tensor *one;  /* rank-0 1.0, owned */
  ad_tensor *zero; /* rank-0 0.0, owned */
  ad_tensor *ones; /* (chunk) ones: the reverse passes' seed, JVP direction */
  int64_t *rows;   /* 3p + 1 CSR row offsets */
  int64_t *cols;   /* 31p CSR column indices */
} adb_ba;

static inline void adb_ba_release(adb_ba *b) {
  free(b->cidx);
  free(b->pidx);
  free(b->rows);
  free(b->cols);
  ad_release(b->feat);
  ad_release(b->one);
  ad_release(b->zero);
  ad_release(b->ones);
  memset(b, 0, sizeof *b);
}

/* Prepare the constant parts of an instance: the observation indices,
 * the features, the CSR structure.  0 on success. */
static inline int adb_ba_init(adb_ba *b, const adb_ba_input *in,
                              int64_t chunk) {
  memset(b, 0, sizeof *b);
  int64_t n = in->n, m = in->m, p = in->p;
  b->n = n;
  b->m = m;
  b->p = p;
  b->chunk = chunk > 0 && chunk < p ? chunk : p;
  b->cidx = malloc((size_t)p * sizeof(int64_t));
  b->pidx = malloc((size_t)p * sizeof(int64_t));
  b->rows = malloc((size_t)(3 * p + 1) * sizeof(int64_t));
  b->cols = malloc((size_t)(31 * p) * sizeof(int64_t));
  b->feat = adb_new_owned(2, (int64_t[]){p, 2}, in->feat);
  b->one = adb_new_owned(0, NULL, (double[]){1.0});
  b->zero = adb_new_owned(0, NULL, (double[]){0.0});
  ad_scope_begin();
  b->ones = ad_retain(ad_ones(1, (int64_t[]){b->chunk}));
  ad_scope_end();
  if (!b->cidx || !b->pidx || !b->rows || !b->cols || !b->feat || !b->one ||
      !b->zero || !b->ones) {
    adb_ba_release(b);
    return -1;
  }
  int64_t ncam = 11 * n, nX = 3 * m;
  for (int64_t i = 0; i < p; i++) {
    b->cidx[i] = i % n;
    b->pidx[i] = i % m;
    /* rows 2i, 2i+1: camera (11), point (3), weight; row 2p+i: weight */
    for (int k = 0; k < 2; k++) {
      int64_t row = 2 * i + k, *c = b->cols + 15 * row;
      b->rows[row] = 15 * row;
      for (int j = 0; j < 11; j++) c[j] = 11 * b->cidx[i] + j;
      for (int j = 0; j < 3; j++) c[11 + j] = ncam + 3 * b->pidx[i] + j;
      c[14] = ncam + nX + i;
    }
    b->rows[2 * p + i] = 30 * p + i;
    b->cols[30 * p + i] = ncam + nX + i;
  }
  b->rows[3 * p] = 31 * p;
  return 0;
}

/* The parameters as tensors the caller owns (ad_release each): the
 * cameras (n, 11), the points (m, 3), the weights (p). */
static inline void adb_ba_param_tensors(const adb_ba_input *in,
                                        ad_tensor **cams, ad_tensor **X,
                                        ad_tensor **w) {
  *cams = adb_new_owned(2, (int64_t[]){in->n, 11}, in->cams);
  *X = adb_new_owned(2, (int64_t[]){in->m, 3}, in->X);
  *w = adb_new_owned(1, (int64_t[]){in->p}, in->w);
}

/* True when some camera has the rotation r = 0 (ADBench's other branch). */
static inline bool adb_ba_zero_rotation(const adb_ba *b, ad_tensor *cams) {
  double *c = malloc((size_t)(11 * b->n) * sizeof *c);
  bool zero = false;
  if (!c || ad_read(cams, c, 11 * b->n) != AD_OK) {
    free(c);
    return true; /* the safe formulation; the error stays recorded */
  }
  for (int64_t i = 0; i < b->n && !zero; i++)
    zero = c[11 * i] == 0 && c[11 * i + 1] == 0 && c[11 * i + 2] == 0;
  free(c);
  return zero;
}

/* Column j of a (rows, k) tensor as a (rows,) view. */
static inline ad_tensor *adb_ba_col(ad_tensor *t, int j) {
  if (!t) return NULL;
  int64_t rows = ad_shape(t)[0];
  return ad_reshape(ad_slice(t, 1, j, j + 1, 1), 1, (int64_t[]){rows});
}

/* The 15 numbers observations [s, s + rows) depend on, as (rows,) views
 * in the Jacobian's column order: r(3) C(3) f x0(2) kappa(2) X(3) w. */
static inline void adb_ba_gather(const adb_ba *b, ad_tensor *cams,
                                 ad_tensor *X, ad_tensor *w, int64_t s,
                                 int64_t rows, ad_tensor **v) {
  ad_tensor *cg = ad_gather(cams, 0, b->cidx + s, rows); /* (rows, 11) */
  ad_tensor *xg = ad_gather(X, 0, b->pidx + s, rows);    /* (rows, 3) */
  for (int j = 0; j < 11; j++) v[j] = adb_ba_col(cg, j);
  for (int j = 0; j < 3; j++) v[11 + j] = adb_ba_col(xg, j);
  v[14] = ad_slice(w, 0, s, s + rows, 1);
}

/* The reprojection residuals e_x, e_y (rows,) of observations
 * [s, s + rows) from their 15 numbers v. */
static inline void adb_ba_reproj(const adb_ba *b, ad_tensor *const *v,
                                 int64_t s, int64_t rows, bool zero_rot,
                                 ad_tensor **ex, ad_tensor **ey) {
  ad_tensor *const *r = v, *const *C = v + 3, *const *X = v + 11;
  ad_tensor *f = v[6], *x0 = v[7], *y0 = v[8], *k1 = v[9], *k2 = v[10];
  ad_tensor *w = v[14];
  ad_tensor *Y[3];
  for (int j = 0; j < 3; j++) Y[j] = ad_sub(X[j], C[j]);
  ad_tensor *t2 = ad_add(ad_add(ad_square(r[0]), ad_square(r[1])),
                         ad_square(r[2]));
  ad_tensor *mask = NULL;
  if (zero_rot) {
    mask = ad_greater(t2, b->zero);
    t2 = ad_where(mask, t2, b->one);
  }
  ad_tensor *is = ad_pow_scalar(t2, -0.5); /* 1 / theta */
  ad_tensor *theta = ad_mul(t2, is);
  ad_tensor *cs = ad_cos(theta);
  ad_tensor *a = ad_mul(ad_sin(theta), is);                    /* sin/theta */
  ad_tensor *bb = ad_mul(ad_sub(b->one, cs), ad_square(is)); /* (1-cos)/t2 */
  if (zero_rot) {
    cs = ad_where(mask, cs, b->one);
    a = ad_where(mask, a, b->one);
    bb = ad_where(mask, bb, b->zero);
  }
  /* r x Y and r . Y */
  ad_tensor *k[3] = {ad_sub(ad_mul(r[1], Y[2]), ad_mul(r[2], Y[1])),
                     ad_sub(ad_mul(r[2], Y[0]), ad_mul(r[0], Y[2])),
                     ad_sub(ad_mul(r[0], Y[1]), ad_mul(r[1], Y[0]))};
  ad_tensor *dot = ad_add(ad_add(ad_mul(r[0], Y[0]), ad_mul(r[1], Y[1])),
                          ad_mul(r[2], Y[2]));
  ad_tensor *db = ad_mul(dot, bb);
  ad_tensor *Xc[3];
  for (int j = 0; j < 3; j++)
    Xc[j] = ad_add(ad_add(ad_mul(Y[j], cs), ad_mul(k[j], a)),
                   ad_mul(r[j], db));
  ad_tensor *iz = ad_div(b->one, Xc[2]);
  ad_tensor *u0 = ad_mul(Xc[0], iz), *u1 = ad_mul(Xc[1], iz);
  ad_tensor *rsq = ad_add(ad_square(u0), ad_square(u1));
  ad_tensor *L = ad_add_scalar(ad_mul(rsq, ad_add(k1, ad_mul(k2, rsq))), 1.0);
  ad_tensor *fL = ad_mul(f, L);
  ad_tensor *feat = ad_slice(b->feat, 0, s, s + rows, 1);
  ad_tensor *fx = adb_ba_col(feat, 0), *fy = adb_ba_col(feat, 1);
  *ex = ad_mul(w, ad_sub(ad_add(ad_mul(u0, fL), x0), fx));
  *ey = ad_mul(w, ad_sub(ad_add(ad_mul(u1, fL), y0), fy));
}

/* The chunk [s, s + rows) of observations. */
static inline int64_t adb_ba_rows(const adb_ba *b, int64_t s) {
  return s + b->chunk < b->p ? b->chunk : b->p - s;
}

/* The weight residuals 1 - w^2 (p). */
static inline ad_tensor *adb_ba_werr(const adb_ba *b, ad_tensor *w) {
  return ad_sub(b->one, ad_square(w));
}

/* n (rows,) columns side by side, flattened row-major: (n * rows). */
static inline ad_tensor *adb_ba_interleave(int n, ad_tensor **cols,
                                           int64_t rows) {
  return ad_reshape(ad_stack(n, cols, 1), 1, (int64_t[]){n * rows});
}

/* One chunk's share of up to two results (out[0], out[1]), from its
 * observations' gathered parameters v; AD_OK or the error. */
typedef ad_status (*adb_ba_chunk_fn)(const adb_ba *b, ad_tensor **v,
                                     int64_t s, int64_t rows, bool zero_rot,
                                     ad_tensor **out);

/* The chunk loop every BA quantity shares: each chunk in its own scope
 * (its intermediates stay in cache and go at its end), its nout parts
 * kept, then each result the concatenation of its parts and its tail
 * (the weight rows).  0 with results[0..nout) set, -1 on error. */
static inline int adb_ba_by_chunks(const adb_ba *b, ad_tensor *cams,
                                   ad_tensor *X, ad_tensor *w,
                                   adb_ba_chunk_fn fn, int nout,
                                   ad_tensor *const *tails,
                                   ad_tensor **results) {
  bool zero_rot = adb_ba_zero_rotation(b, cams);
  int64_t nch = (b->p + b->chunk - 1) / b->chunk;
  ad_tensor **parts[2] = {NULL, NULL};
  bool ok = true;
  for (int o = 0; o < nout; o++) {
    parts[o] = calloc((size_t)nch + 1, sizeof *parts[o]);
    ok = ok && parts[o] && tails[o];
  }
  int64_t k = 0;
  for (int64_t s = 0; ok && s < b->p; s += b->chunk, k++) {
    int64_t rows = adb_ba_rows(b, s);
    ad_scope_begin();
    ad_tensor *v[15], *out[2] = {NULL, NULL};
    adb_ba_gather(b, cams, X, w, s, rows, v);
    ok = fn(b, v, s, rows, zero_rot, out) == AD_OK;
    for (int o = 0; ok && o < nout; o++)
      ok = (parts[o][k] = ad_keep(out[o])) != NULL;
    ad_scope_end();
  }
  for (int o = 0; o < nout; o++) {
    results[o] = NULL;
    if (ok) {
      parts[o][nch] = tails[o];
      results[o] = ad_concat((int)(nch + 1), parts[o], 0);
      ok = results[o] != NULL;
    }
    free(parts[o]);
  }
  return ok ? 0 : -1;
}

/* A chunk's residuals e (rows, 2) flattened. */
static inline ad_status adb_ba_residual_chunk(const adb_ba *b, ad_tensor **v,
                                              int64_t s, int64_t rows,
                                              bool zero_rot, ad_tensor **out) {
  ad_tensor *e[2];
  adb_ba_reproj(b, v, s, rows, zero_rot, &e[0], &e[1]);
  out[0] = adb_ba_interleave(2, e, rows);
  return out[0] ? AD_OK : ad_error();
}

/* F: the 3p residuals, [e (p, 2) observation-major | w_err (p)], as one
 * (3p) tensor (NULL on error). */
static inline ad_tensor *adb_ba_objective(const adb_ba *b, ad_tensor *cams,
                                          ad_tensor *X, ad_tensor *w) {
  ad_tensor *tail = adb_ba_werr(b, w), *R = NULL;
  adb_ba_by_chunks(b, cams, X, w, adb_ba_residual_chunk, 1, &tail, &R);
  return R;
}

/* The derivative of w_err along ones: -2w (p), by forward mode. */
static inline ad_tensor *adb_ba_werr_jac(const adb_ba *b, ad_tensor *w) {
  ad_tensor *ones = ad_ones(1, (int64_t[]){b->p});
  ad_fwd *acc = ad_fwd_begin(1, &w, &ones);
  if (!acc) return NULL;
  ad_tensor *d = ad_fwd_jvp(acc, adb_ba_werr(b, w));
  ad_fwd_end(acc);
  return d;
}

/* The direction of ones over a chunk of rows observations. */
static inline ad_tensor *adb_ba_chunk_ones(const adb_ba *b, int64_t rows) {
  return rows == b->chunk ? b->ones : ad_slice(b->ones, 0, 0, rows, 1);
}

/* A chunk's (rows, 30) Jacobian blocks, flattened (row i: observation i's
 * e_x row then its e_y row), by reverse mode: one taped evaluation, two
 * passes seeded with ones on every e_x, then on every e_y; out[1], the
 * residuals, comes with it. */
static inline ad_status adb_ba_jacobian_chunk(const adb_ba *b, ad_tensor **v,
                                              int64_t s, int64_t rows,
                                              bool zero_rot, ad_tensor **out) {
  ad_tensor *e[2] = {NULL, NULL}, *g[30];
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  if (!tape) return ad_error();
  for (int j = 0; j < 15; j++) ad_tape_watch(tape, v[j]);
  adb_ba_reproj(b, v, s, rows, zero_rot, &e[0], &e[1]);
  ad_tape_end(tape);
  ad_tensor *seed = adb_ba_chunk_ones(b, rows);
  ad_status st = AD_OK;
  for (int i = 0; i < 2 && st == AD_OK; i++)
    st = e[i] ? ad_tape_gradients(tape, e[i], seed, 15, v, g + 15 * i,
                                  AD_UNCONNECTED_ZERO)
              : ad_error();
  ad_tape_free(tape);
  if (st != AD_OK) return st;
  out[0] = adb_ba_interleave(30, g, rows);
  out[1] = adb_ba_interleave(2, e, rows);
  return out[0] && out[1] ? AD_OK : ad_error();
}

/* J: the 31p values of the sparse Jacobian in ADBench's CSR order (rows
 * 2i, 2i+1: d e / d [camera, point, w_i]; rows 2p+i: -2 w_i), by reverse
 * mode, two passes per chunk; F into *value when non-NULL. */
static inline ad_tensor *adb_ba_jacobian(const adb_ba *b, ad_tensor *cams,
                                         ad_tensor *X, ad_tensor *w,
                                         ad_tensor **value) {
  ad_tensor *tails[2] = {adb_ba_werr_jac(b, w),
                         value ? adb_ba_werr(b, w) : NULL};
  ad_tensor *res[2] = {NULL, NULL};
  adb_ba_by_chunks(b, cams, X, w, adb_ba_jacobian_chunk, value ? 2 : 1,
                   tails, res);
  if (value) *value = res[1];
  return res[0];
}

/* The same blocks by forward mode: 15 JVPs, JVP j along ones on every
 * observation's copy of parameter j (column j of every 2x15 block). */
static inline ad_status adb_ba_jacobian_fwd_chunk(const adb_ba *b,
                                                  ad_tensor **v, int64_t s,
                                                  int64_t rows, bool zero_rot,
                                                  ad_tensor **out) {
  ad_tensor *g[30], *dir = adb_ba_chunk_ones(b, rows);
  for (int j = 0; j < 15; j++) {
    ad_fwd *acc = ad_fwd_begin(1, &v[j], &dir);
    if (!acc) return ad_error();
    ad_tensor *e[2] = {NULL, NULL};
    adb_ba_reproj(b, v, s, rows, zero_rot, &e[0], &e[1]);
    g[j] = e[0] ? ad_fwd_jvp(acc, e[0]) : NULL;
    g[15 + j] = e[1] ? ad_fwd_jvp(acc, e[1]) : NULL;
    ad_fwd_end(acc);
    if (!g[j] || !g[15 + j]) return ad_error();
  }
  out[0] = adb_ba_interleave(30, g, rows);
  return out[0] ? AD_OK : ad_error();
}

/* J by forward mode.  Slower (see above); kept to cross-check the reverse
 * mode. */
static inline ad_tensor *adb_ba_jacobian_fwd(const adb_ba *b, ad_tensor *cams,
                                             ad_tensor *X, ad_tensor *w) {
  ad_tensor *tail = adb_ba_werr_jac(b, w), *J = NULL;
  adb_ba_by_chunks(b, cams, X, w, adb_ba_jacobian_fwd_chunk, 1, &tail, &J);
  return J;
}

#endif /* ADBENCH_BA_H */
