/* Readers for ADBench's GMM and LSTM instance files and reference outputs,
 * and ADBench's accuracy rule, shared by the benchmark and its test. */
#ifndef ADBENCH_IO_H
#define ADBENCH_IO_H

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ad.h>

/* Every whitespace-separated number of a text file, in order, in a
 * malloc'ed array (*count numbers); NULL with a message on stderr when the
 * file cannot be read or holds something that is not a number. */
static inline double *adb_read_numbers(const char *path, int64_t *count) {
  FILE *f = fopen(path, "rb");
  *count = 0;
  if (!f) {
    fprintf(stderr, "adbench: cannot open %s: %s\n", path, strerror(errno));
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = malloc((size_t)len + 1);
  if (!text || fread(text, 1, (size_t)len, f) != (size_t)len) {
    fprintf(stderr, "adbench: cannot read %s\n", path);
    free(text);
    fclose(f);
    return NULL;
  }
  fclose(f);
  text[len] = '\0';
  int64_t cap = 1024, n = 0;
  double *v = malloc((size_t)cap * sizeof *v);
  char *p = text, *end;
  while (v) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (!*p) break;
    double x = strtod(p, &end);
    if (end == p) {
      fprintf(stderr, "adbench: %s: not a number at byte %ld\n", path,
              (long)(p - text));
      free(v);
      v = NULL;
      break;
    }
    p = end;
    if (n == cap) {
      cap *= 2;
      double *w = realloc(v, (size_t)cap * sizeof *v);
      if (!w) free(v);
      v = w;
      if (!v) break;
    }
    v[n++] = x;
  }
  free(text);
  if (v) *count = n;
  return v;
}

/* A new tensor that the caller owns (one reference, released with
 * ad_release) whatever scopes are open. */
static inline ad_tensor *adb_new_owned(int ndim, const int64_t *shape,
                                       const double *data) {
  ad_scope_begin();
  ad_tensor *t = ad_retain(ad_tensor_new(ndim, shape, data));
  ad_scope_end();
  return t;
}

/* ADBench's accuracy rule: rho(x, y) = |x - y| / max(1, |x| + |y|). */
static inline double adb_rho(double x, double y) {
  double s = fabs(x) + fabs(y);
  return fabs(x - y) / (s > 1.0 ? s : 1.0);
}

/* The largest rho over n pairs (NaN anywhere gives +inf). */
static inline double adb_max_rho(const double *a, const double *b,
                                 int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double r = adb_rho(a[i], b[i]);
    if (!(r <= worst)) worst = r == r ? r : INFINITY;
  }
  return worst;
}

/* ------------------------------------------------------------------------
 * GMM: "d K n", K alphas, K means (d each), K icf rows (d(d+1)/2 each),
 * n points (d each), then "gamma m".  A file with a single point stands
 * for n copies of it (ADBench's replicate mode, the 2.5M instances).
 * ---------------------------------------------------------------------- */

typedef struct adb_gmm_input {
  int64_t d, K, n;
  double *alpha; /* K */
  double *mu;    /* K * d, component-major */
  double *icf;   /* K * d(d+1)/2: q (d) then the strict lower triangle
                    column by column */
  double *x;     /* n * d */
  double gamma;
  int m;
  int replicated; /* 1 when the file held one point for n */
} adb_gmm_input;

static inline void adb_gmm_free(adb_gmm_input *g) {
  free(g->alpha);
  free(g->mu);
  free(g->icf);
  free(g->x);
  memset(g, 0, sizeof *g);
}

/* Read a GMM instance; 0 on success, -1 with a message on failure. */
static inline int adb_gmm_read(const char *path, adb_gmm_input *g) {
  int64_t cnt;
  memset(g, 0, sizeof *g);
  double *v = adb_read_numbers(path, &cnt);
  if (!v) return -1;
  if (cnt < 3) goto bad;
  g->d = (int64_t)v[0];
  g->K = (int64_t)v[1];
  g->n = (int64_t)v[2];
  int64_t d = g->d, K = g->K, n = g->n, nicf = d * (d + 1) / 2;
  if (d < 1 || K < 1 || n < 1) goto bad;
  int64_t head = 3 + K + K * d + K * nicf;
  int64_t npts;
  if (cnt == head + n * d + 2) npts = n;
  else if (cnt == head + d + 2) npts = 1;
  else goto bad;
  g->replicated = npts == 1 && n > 1;
  g->alpha = malloc((size_t)K * sizeof(double));
  g->mu = malloc((size_t)(K * d) * sizeof(double));
  g->icf = malloc((size_t)(K * nicf) * sizeof(double));
  g->x = malloc((size_t)(n * d) * sizeof(double));
  if (!g->alpha || !g->mu || !g->icf || !g->x) {
    fprintf(stderr, "adbench: %s: out of memory\n", path);
    adb_gmm_free(g);
    free(v);
    return -1;
  }
  const double *p = v + 3;
  memcpy(g->alpha, p, (size_t)K * sizeof(double));
  p += K;
  memcpy(g->mu, p, (size_t)(K * d) * sizeof(double));
  p += K * d;
  memcpy(g->icf, p, (size_t)(K * nicf) * sizeof(double));
  p += K * nicf;
  for (int64_t i = 0; i < n; i++)
    memcpy(g->x + i * d, p + (npts == 1 ? 0 : i * d),
           (size_t)d * sizeof(double));
  p += npts * d;
  g->gamma = p[0];
  g->m = (int)p[1];
  free(v);
  return 0;
bad:
  fprintf(stderr, "adbench: %s: not a GMM instance (%lld numbers)\n", path,
          (long long)cnt);
  free(v);
  memset(g, 0, sizeof *g);
  return -1;
}

/* ------------------------------------------------------------------------
 * LSTM: "l c b", main params (2l rows of 4b: a layer's weights then its
 * biases, gates forget, ingate, outgate, change), extra params (in_weight,
 * out_weight, out_bias, b each), state (2l rows of b: a layer's hidden then
 * its cell), sequence (c rows of b bits).
 * ---------------------------------------------------------------------- */

typedef struct adb_lstm_input {
  int64_t l, c, b;
  double *main_params;  /* 8 l b */
  double *extra_params; /* 3 b */
  double *state;        /* 2 l b */
  double *seq;          /* c b */
} adb_lstm_input;

static inline void adb_lstm_free(adb_lstm_input *L) {
  free(L->main_params);
  free(L->extra_params);
  free(L->state);
  free(L->seq);
  memset(L, 0, sizeof *L);
}

static inline double *adb_copy(const double *src, int64_t n) {
  double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
  if (d) memcpy(d, src, (size_t)n * sizeof *d);
  return d;
}

/* Read an LSTM instance; 0 on success, -1 with a message on failure. */
static inline int adb_lstm_read(const char *path, adb_lstm_input *L) {
  int64_t cnt;
  memset(L, 0, sizeof *L);
  double *v = adb_read_numbers(path, &cnt);
  if (!v) return -1;
  if (cnt < 3) goto bad;
  L->l = (int64_t)v[0];
  L->c = (int64_t)v[1];
  L->b = (int64_t)v[2];
  int64_t l = L->l, c = L->c, b = L->b;
  if (l < 1 || c < 2 || b < 1 || cnt != 3 + 8 * l * b + 3 * b + 2 * l * b + c * b)
    goto bad;
  const double *p = v + 3;
  L->main_params = adb_copy(p, 8 * l * b);
  p += 8 * l * b;
  L->extra_params = adb_copy(p, 3 * b);
  p += 3 * b;
  L->state = adb_copy(p, 2 * l * b);
  p += 2 * l * b;
  L->seq = adb_copy(p, c * b);
  free(v);
  if (!L->main_params || !L->extra_params || !L->state || !L->seq) {
    fprintf(stderr, "adbench: %s: out of memory\n", path);
    adb_lstm_free(L);
    return -1;
  }
  return 0;
bad:
  fprintf(stderr, "adbench: %s: not an LSTM instance (%lld numbers)\n", path,
          (long long)cnt);
  free(v);
  memset(L, 0, sizeof *L);
  return -1;
}

/* ------------------------------------------------------------------------
 * BA: "n m p", then one camera (11: r(3) C(3) f x0(2) kappa(2)), one
 * point (3), one weight and one feature (2), which stand for all n
 * cameras, m points and p observations (ADBench's files); a file holding
 * every camera, point, weight and feature (11n + 3m + p + 2p numbers) is
 * read as it is.  Observation i sees camera i mod n and point i mod m.
 * ---------------------------------------------------------------------- */

typedef struct adb_ba_input {
  int64_t n, m, p;
  double *cams; /* n * 11 */
  double *X;    /* m * 3 */
  double *w;    /* p */
  double *feat; /* p * 2 */
} adb_ba_input;

static inline void adb_ba_free(adb_ba_input *B) {
  free(B->cams);
  free(B->X);
  free(B->w);
  free(B->feat);
  memset(B, 0, sizeof *B);
}

/* Read a BA instance; 0 on success, -1 with a message on failure. */
static inline int adb_ba_read(const char *path, adb_ba_input *B) {
  int64_t cnt;
  memset(B, 0, sizeof *B);
  double *v = adb_read_numbers(path, &cnt);
  if (!v) return -1;
  if (cnt < 3) goto bad;
  B->n = (int64_t)v[0];
  B->m = (int64_t)v[1];
  B->p = (int64_t)v[2];
  int64_t n = B->n, m = B->m, p = B->p;
  if (n < 1 || m < 1 || p < 1) goto bad;
  int full;
  if (cnt == 3 + 11 + 3 + 1 + 2) full = 0;
  else if (cnt == 3 + 11 * n + 3 * m + 3 * p) full = 1;
  else goto bad;
  B->cams = malloc((size_t)(11 * n) * sizeof(double));
  B->X = malloc((size_t)(3 * m) * sizeof(double));
  B->w = malloc((size_t)p * sizeof(double));
  B->feat = malloc((size_t)(2 * p) * sizeof(double));
  if (!B->cams || !B->X || !B->w || !B->feat) {
    fprintf(stderr, "adbench: %s: out of memory\n", path);
    adb_ba_free(B);
    free(v);
    return -1;
  }
  const double *cam = v + 3, *pt = cam + (full ? 11 * n : 11);
  const double *wt = pt + (full ? 3 * m : 3), *ft = wt + (full ? p : 1);
  for (int64_t i = 0; i < n; i++)
    memcpy(B->cams + 11 * i, cam + (full ? 11 * i : 0), 11 * sizeof(double));
  for (int64_t i = 0; i < m; i++)
    memcpy(B->X + 3 * i, pt + (full ? 3 * i : 0), 3 * sizeof(double));
  for (int64_t i = 0; i < p; i++) {
    B->w[i] = wt[full ? i : 0];
    B->feat[2 * i] = ft[full ? 2 * i : 0];
    B->feat[2 * i + 1] = ft[full ? 2 * i + 1 : 1];
  }
  free(v);
  return 0;
bad:
  fprintf(stderr, "adbench: %s: not a BA instance (%lld numbers)\n", path,
          (long long)cnt);
  free(v);
  memset(B, 0, sizeof *B);
  return -1;
}

/* A BA reference in the compact form of shared/adbench/reference
 * (ba*_compact.txt; lines starting with '#' are comments): "n m p", the
 * residual pair e, the weight residual, the 2x15 block of every
 * observation (columns cam(11), X(3), w) and -2w.  Every observation of
 * the instances has these same values.  0 on success. */
typedef struct adb_ba_ref {
  int64_t n, m, p;
  double e[2], werr, block[30], dwerr;
} adb_ba_ref;

static inline int adb_ba_read_ref(const char *path, adb_ba_ref *r) {
  FILE *f = fopen(path, "r");
  memset(r, 0, sizeof *r);
  if (!f) {
    fprintf(stderr, "adbench: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  double v[37];
  int k = 0;
  char buf[4096];
  while (k < 37 && fgets(buf, sizeof buf, f)) {
    char *p = buf, *end;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '#') continue;
    for (;;) {
      double x = strtod(p, &end);
      if (end == p) break;
      if (k < 37) v[k] = x;
      k++;
      p = end;
    }
  }
  fclose(f);
  if (k != 37) {
    fprintf(stderr, "adbench: %s: not a BA reference (%d numbers)\n", path,
            k);
    return -1;
  }
  r->n = (int64_t)v[0];
  r->m = (int64_t)v[1];
  r->p = (int64_t)v[2];
  r->e[0] = v[3];
  r->e[1] = v[4];
  r->werr = v[5];
  memcpy(r->block, v + 6, sizeof r->block);
  r->dwerr = v[36];
  return 0;
}

/* The reference expanded to what F and J return: the residuals (2p
 * reprojection, observation-major, then p weight) into *F and the p*31
 * Jacobian values in ADBench's CSR order into *J; malloc'ed, NULL on out
 * of memory. */
static inline void adb_ba_expand_ref(const adb_ba_ref *r, double **F,
                                     double **J) {
  int64_t p = r->p;
  *F = malloc((size_t)(3 * p) * sizeof(double));
  *J = malloc((size_t)(31 * p) * sizeof(double));
  if (!*F || !*J) {
    free(*F);
    free(*J);
    *F = *J = NULL;
    return;
  }
  for (int64_t i = 0; i < p; i++) {
    (*F)[2 * i] = r->e[0];
    (*F)[2 * i + 1] = r->e[1];
    (*F)[2 * p + i] = r->werr;
    memcpy(*J + 30 * i, r->block, sizeof r->block);
    (*J)[30 * p + i] = r->dwerr;
  }
}

#endif /* ADBENCH_IO_H */
