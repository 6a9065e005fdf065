/* Linear-algebra kernels: batched BLAS matmul and LU/Cholesky based
 * solve, inv, det, logdet and cholesky written in C. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "internal.h"

/* GSL's and LAPACK's factorizations report failure through handlers that
 * abort by default, so the factorizations here are plain C loops: a
 * singular matrix must come back as an error, never as a crash. */

static bool check_arity(const char *op, int nin, int want) {
  if (nin >= want) return true;
  ad__error(AD_EINTERNAL, "%s: expected %d input(s), got %d", op, want, nin);
  return false;
}

/* Strides of the batch axes of t (its first nb axes) aligned to a
 * broadcast batch shape of rank nout: 0 on axes that t lacks or that
 * broadcast. */
static void batch_strides(const ad_tensor *t, int nb, int nout,
                          int64_t *strides) {
  for (int i = 0; i < nout; i++) {
    int j = i - (nout - nb);
    strides[i] = (j >= 0 && t->shape[j] != 1) ? t->strides[j] : 0;
  }
}

/* Walks a broadcast batch: offsets of two operands advance together. */
typedef struct batch_iter {
  int nd;
  int64_t shape[AD_MAX_DIMS], idx[AD_MAX_DIMS];
  int64_t sa[AD_MAX_DIMS], sb[AD_MAX_DIMS];
  int64_t oa, ob;
} batch_iter;

static void batch_next(batch_iter *it) {
  for (int d = it->nd - 1; d >= 0; d--) {
    if (++it->idx[d] < it->shape[d]) {
      it->oa += it->sa[d];
      it->ob += it->sb[d];
      return;
    }
    it->oa -= it->sa[d] * (it->shape[d] - 1);
    it->ob -= it->sb[d] * (it->shape[d] - 1);
    it->idx[d] = 0;
  }
}

static int64_t prod(int n, const int64_t *s) {
  int64_t p = 1;
  for (int i = 0; i < n; i++) p *= s[i];
  return p;
}

/* ------------------------------------------------------------------------
 * matmul
 * ---------------------------------------------------------------------- */

/* How BLAS can read a rows x cols matrix with strides (rs, cs). */
typedef struct blas_view {
  bool ok;
  CBLAS_TRANSPOSE trans;
  int64_t ld;
} blas_view;

static blas_view blas_layout(int64_t rows, int64_t cols, int64_t rs,
                             int64_t cs) {
  blas_view v = {false, CblasNoTrans, 0};
  int64_t mc = cols > 1 ? cols : 1, mr = rows > 1 ? rows : 1;
  /* A stride along an axis of size 1 is never followed, so it does not
   * constrain the layout. */
  if ((cols <= 1 || cs == 1) && (rows <= 1 || rs >= mc)) {
    v.ok = true;
    v.ld = rows <= 1 ? mc : rs;
  } else if ((rows <= 1 || rs == 1) && (cols <= 1 || cs >= mr)) {
    v.ok = true;
    v.trans = CblasTrans;
    v.ld = cols <= 1 ? mr : cs;
  }
  if (v.ok && v.ld > INT_MAX) v.ok = false;
  return v;
}

ad_tensor *ad__k_matmul(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_matmul";
  (void)a;
  if (!check_arity(op, nin, 2)) return NULL;
  ad_tensor *A = in[0], *B = in[1];
  char ba[AD__SHAPE_STR], bb[AD__SHAPE_STR];
  if (A->ndim < 1 || B->ndim < 1) {
    ad__error(AD_ESHAPE, "%s: operands need rank >= 1: %s x %s", op,
              ad__shape_str(ba, A->ndim, A->shape),
              ad__shape_str(bb, B->ndim, B->shape));
    return NULL;
  }
  /* Matrix dimensions and strides after NumPy's rank-1 promotion. */
  int64_t m, k, kb, n, ars, acs, brs, bcs;
  if (A->ndim == 1) {
    m = 1;
    k = A->shape[0];
    ars = 0;
    acs = A->strides[0];
  } else {
    m = A->shape[A->ndim - 2];
    k = A->shape[A->ndim - 1];
    ars = A->strides[A->ndim - 2];
    acs = A->strides[A->ndim - 1];
  }
  if (B->ndim == 1) {
    kb = B->shape[0];
    n = 1;
    brs = B->strides[0];
    bcs = 0;
  } else {
    kb = B->shape[B->ndim - 2];
    n = B->shape[B->ndim - 1];
    brs = B->strides[B->ndim - 2];
    bcs = B->strides[B->ndim - 1];
  }
  if (k != kb) {
    ad__error(AD_ESHAPE, "%s: inner dimensions differ: %s x %s", op,
              ad__shape_str(ba, A->ndim, A->shape),
              ad__shape_str(bb, B->ndim, B->shape));
    return NULL;
  }
  int nba = A->ndim > 2 ? A->ndim - 2 : 0, nbb = B->ndim > 2 ? B->ndim - 2 : 0;
  int nbo = nba > nbb ? nba : nbb;
  int64_t oshape[AD_MAX_DIMS];
  for (int i = 0; i < nbo; i++) {
    int ia = i - (nbo - nba), ib = i - (nbo - nbb);
    int64_t da = ia >= 0 ? A->shape[ia] : 1, db = ib >= 0 ? B->shape[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      ad__error(AD_ESHAPE, "%s: batch dimensions cannot broadcast: %s x %s",
                op, ad__shape_str(ba, A->ndim, A->shape),
                ad__shape_str(bb, B->ndim, B->shape));
      return NULL;
    }
    oshape[i] = da == 1 ? db : da;
  }
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX) {
    ad__error(AD_EINVAL, "%s: matrix dimensions of %s x %s exceed BLAS's "
              "int range", op, ad__shape_str(ba, A->ndim, A->shape),
              ad__shape_str(bb, B->ndim, B->shape));
    return NULL;
  }
  int ond = nbo;
  if (A->ndim >= 2) oshape[ond++] = m;
  if (B->ndim >= 2) oshape[ond++] = n;
  ad_tensor *out = ad__alloc(op, ond, oshape);
  if (!out) return NULL;
  int64_t batch = prod(nbo, oshape);
  if (out->numel == 0) return out;
  if (k == 0) {
    memset(out->data, 0, (size_t)out->numel * sizeof(double));
    return out;
  }

  /* Operands BLAS cannot stride through are copied once, whole. */
  ad_tensor *Ac = NULL, *Bc = NULL;
  blas_view va = blas_layout(m, k, ars, acs);
  if (!va.ok) {
    Ac = ad__contiguous(A);
    if (!Ac) goto fail;
    A = Ac;
    ars = A->ndim == 1 ? 0 : k;
    acs = 1;
    va = blas_layout(m, k, ars, acs);
  }
  blas_view vb = blas_layout(k, n, brs, bcs);
  if (!vb.ok) {
    Bc = ad__contiguous(B);
    if (!Bc) goto fail;
    B = Bc;
    brs = n;
    bcs = 1;
    vb = blas_layout(k, n, brs, bcs);
  }

  batch_iter it = {.nd = nbo};
  memcpy(it.shape, oshape, (size_t)nbo * sizeof(int64_t));
  batch_strides(A, nba, nbo, it.sa);
  batch_strides(B, nbb, nbo, it.sb);

  /* A batch of A's against one shared B is a single tall product when A's
   * batch rows are evenly spaced: stack them as (batch*m) x k. */
  bool b_shared = true, a_stacks = va.trans == CblasNoTrans;
  for (int i = 0; i < nbo; i++) {
    if (it.sb[i] != 0) b_shared = false;
    if (oshape[i] != 1 &&
        it.sa[i] != prod(nbo - i - 1, oshape + i + 1) * m * va.ld)
      a_stacks = false;
  }
  if (batch > 1 && b_shared && a_stacks && batch * m <= INT_MAX) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, vb.trans, (int)(batch * m),
                (int)n, (int)k, 1.0, A->data, (int)va.ld, B->data,
                (int)vb.ld, 0.0, out->data, (int)n);
  } else {
    double *C = out->data;
    for (int64_t bi = 0; bi < batch; bi++) {
      cblas_dgemm(CblasRowMajor, va.trans, vb.trans, (int)m, (int)n, (int)k,
                  1.0, A->data + it.oa, (int)va.ld, B->data + it.ob,
                  (int)vb.ld, 0.0, C, (int)n);
      C += m * n;
      batch_next(&it);
    }
  }
  ad_release(Ac);
  ad_release(Bc);
  return out;
fail:
  ad_release(Ac);
  ad_release(Bc);
  ad_release(out);
  return NULL;
}

/* ------------------------------------------------------------------------
 * Square-matrix helpers
 * ---------------------------------------------------------------------- */

/* Check that t is a batch of square matrices; returns n or -1. */
static int64_t square_size(const char *op, const ad_tensor *t) {
  if (t->ndim < 2 || t->shape[t->ndim - 1] != t->shape[t->ndim - 2]) {
    char buf[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "%s: expected square matrices (..., n, n), got %s",
              op, ad__shape_str(buf, t->ndim, t->shape));
    return -1;
  }
  return t->shape[t->ndim - 1];
}

/* In-place LU with partial pivoting of the dense n x n matrix lu.  perm
 * receives the row swaps (row i was swapped with perm[i]); *sign the
 * permutation's sign.  Returns the 1-based column of the first zero
 * pivot, or 0 when the matrix is non-singular. */
static int64_t lu_factor(double *lu, int64_t n, int64_t *perm, int *sign) {
  *sign = 1;
  for (int64_t j = 0; j < n; j++) {
    int64_t p = j;
    double best = fabs(lu[j * n + j]);
    for (int64_t i = j + 1; i < n; i++) {
      double v = fabs(lu[i * n + j]);
      if (v > best) {
        best = v;
        p = i;
      }
    }
    perm[j] = p;
    if (p != j) {
      *sign = -*sign;
      for (int64_t c = 0; c < n; c++) {
        double tmp = lu[j * n + c];
        lu[j * n + c] = lu[p * n + c];
        lu[p * n + c] = tmp;
      }
    }
    double piv = lu[j * n + j];
    if (piv == 0.0) return j + 1;
    for (int64_t i = j + 1; i < n; i++) {
      double f = lu[i * n + j] / piv;
      lu[i * n + j] = f;
      if (f == 0.0) continue;
      double *ri = lu + i * n, *rj = lu + j * n;
      for (int64_t c = j + 1; c < n; c++) ri[c] -= f * rj[c];
    }
  }
  return 0;
}

/* Solve LU X = P B in place for the dense n x k right-hand side x. */
static void lu_solve(const double *lu, int64_t n, const int64_t *perm,
                     double *x, int64_t k) {
  for (int64_t j = 0; j < n; j++) {
    if (perm[j] != j) {
      double *rj = x + j * k, *rp = x + perm[j] * k;
      for (int64_t c = 0; c < k; c++) {
        double tmp = rj[c];
        rj[c] = rp[c];
        rp[c] = tmp;
      }
    }
  }
  for (int64_t i = 0; i < n; i++) {
    double *ri = x + i * k;
    for (int64_t j = 0; j < i; j++) {
      double f = lu[i * n + j];
      if (f == 0.0) continue;
      const double *rj = x + j * k;
      for (int64_t c = 0; c < k; c++) ri[c] -= f * rj[c];
    }
  }
  for (int64_t i = n - 1; i >= 0; i--) {
    double *ri = x + i * k;
    for (int64_t j = i + 1; j < n; j++) {
      double f = lu[i * n + j];
      if (f == 0.0) continue;
      const double *rj = x + j * k;
      for (int64_t c = 0; c < k; c++) ri[c] -= f * rj[c];
    }
    double d = lu[i * n + i];
    for (int64_t c = 0; c < k; c++) ri[c] /= d;
  }
}

/* Scratch for one factorization: n*n doubles for LU and n pivots. */
typedef struct lu_work {
  ad_tensor *buf;
  double *lu;
  int64_t *perm;
} lu_work;

static bool lu_work_init(const char *op, lu_work *w, int64_t n) {
  /* Pivots live in their own int64 block after the matrix; allocating
   * them as a tensor keeps the scratch on the thread's pool. */
  int64_t len = n * n + n + 1;
  w->buf = ad__alloc(op, 1, &len);
  if (!w->buf) return false;
  w->lu = w->buf->data;
  w->perm = (int64_t *)(void *)(w->buf->data + n * n);
  return true;
}

/* Copy matrix number bi of t's batch (rank-2 tail) densely into dst. */
static void load_matrix(const ad_tensor *t, int64_t bi, double *dst) {
  int nb = t->ndim - 2;
  int64_t off = 0, rem = bi;
  for (int d = nb - 1; d >= 0; d--) {
    off += (rem % t->shape[d]) * t->strides[d];
    rem /= t->shape[d];
  }
  int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
  int64_t rs = t->strides[t->ndim - 2], cs = t->strides[t->ndim - 1];
  const double *src = t->data + off;
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c; j++) dst[i * c + j] = src[i * rs + j * cs];
}

static const char *batch_note(char *buf, size_t len, int64_t batch,
                              int64_t bi) {
  if (batch > 1)
    snprintf(buf, len, " in matrix %lld of the batch", (long long)bi);
  else
    buf[0] = '\0';
  return buf;
}

/* ------------------------------------------------------------------------
 * solve, inv
 * ---------------------------------------------------------------------- */

ad_tensor *ad__k_solve(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_solve";
  (void)a;
  if (!check_arity(op, nin, 2)) return NULL;
  ad_tensor *A = in[0], *B = in[1];
  int64_t n = square_size(op, A);
  if (n < 0) return NULL;
  char ba[AD__SHAPE_STR], bb[AD__SHAPE_STR];
  bool vec = B->ndim == 1;
  if (B->ndim < 1 || B->shape[vec ? 0 : B->ndim - 2] != n) {
    ad__error(AD_ESHAPE, "%s: right-hand side %s does not match matrix %s",
              op, ad__shape_str(bb, B->ndim, B->shape),
              ad__shape_str(ba, A->ndim, A->shape));
    return NULL;
  }
  int64_t k = vec ? 1 : B->shape[B->ndim - 1];
  int nba = A->ndim - 2, nbb = vec ? 0 : B->ndim - 2;
  int nbo;
  int64_t oshape[AD_MAX_DIMS];
  if (ad__broadcast_shapes(op, nba, A->shape, nbb, B->shape, &nbo, oshape) !=
      AD_OK) {
    ad__error(AD_ESHAPE, "%s: batch dimensions cannot broadcast: %s and %s",
              op, ad__shape_str(ba, A->ndim, A->shape),
              ad__shape_str(bb, B->ndim, B->shape));
    return NULL;
  }
  int64_t batch = prod(nbo, oshape);
  int ond = nbo;
  oshape[ond++] = n;
  if (!vec) oshape[ond++] = k;
  ad_tensor *out = ad__alloc(op, ond, oshape);
  if (!out) return NULL;
  if (out->numel == 0) return out;
  lu_work w;
  if (!lu_work_init(op, &w, n)) {
    ad_release(out);
    return NULL;
  }
  /* Walk A's and B's batches as views; each matrix is copied once. */
  batch_iter it = {.nd = nbo};
  memcpy(it.shape, oshape, (size_t)nbo * sizeof(int64_t));
  batch_strides(A, nba, nbo, it.sa);
  batch_strides(B, nbb, nbo, it.sb);
  int64_t ars = A->strides[A->ndim - 2], acs = A->strides[A->ndim - 1];
  int64_t brs = B->strides[vec ? 0 : B->ndim - 2];
  int64_t bcs = vec ? 0 : B->strides[B->ndim - 1];
  for (int64_t bi = 0; bi < batch; bi++) {
    const double *pa = A->data + it.oa, *pb = B->data + it.ob;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < n; j++) w.lu[i * n + j] = pa[i * ars + j * acs];
    int sign;
    int64_t zero = lu_factor(w.lu, n, w.perm, &sign);
    if (zero) {
      char note[64];
      ad__error(AD_EINVAL, "%s: matrix is singular (zero pivot in column "
                "%lld)%s", op, (long long)zero,
                batch_note(note, sizeof note, batch, bi));
      ad_release(w.buf);
      ad_release(out);
      return NULL;
    }
    double *x = out->data + bi * n * k;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < k; j++) x[i * k + j] = pb[i * brs + j * bcs];
    lu_solve(w.lu, n, w.perm, x, k);
    batch_next(&it);
  }
  ad_release(w.buf);
  return out;
}

ad_tensor *ad__k_inv(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_inv";
  (void)a;
  if (!check_arity(op, nin, 1)) return NULL;
  ad_tensor *A = in[0];
  int64_t n = square_size(op, A);
  if (n < 0) return NULL;
  ad_tensor *out = ad__alloc(op, A->ndim, A->shape);
  if (!out) return NULL;
  if (out->numel == 0) return out;
  lu_work w;
  if (!lu_work_init(op, &w, n)) {
    ad_release(out);
    return NULL;
  }
  int64_t batch = out->numel / (n * n);
  for (int64_t bi = 0; bi < batch; bi++) {
    load_matrix(A, bi, w.lu);
    int sign;
    int64_t zero = lu_factor(w.lu, n, w.perm, &sign);
    if (zero) {
      char note[64];
      ad__error(AD_EINVAL, "%s: matrix is singular (zero pivot in column "
                "%lld)%s", op, (long long)zero,
                batch_note(note, sizeof note, batch, bi));
      ad_release(w.buf);
      ad_release(out);
      return NULL;
    }
    double *x = out->data + bi * n * n;
    memset(x, 0, (size_t)(n * n) * sizeof(double));
    for (int64_t i = 0; i < n; i++) x[i * n + i] = 1.0;
    lu_solve(w.lu, n, w.perm, x, n);
  }
  ad_release(w.buf);
  return out;
}

/* ------------------------------------------------------------------------
 * det, logdet
 * ---------------------------------------------------------------------- */

/* det or log|det| of every matrix in A's batch into a batch-shaped
 * tensor.  log mode fails on a singular matrix. */
static ad_tensor *determinant(const char *op, ad_tensor *A, bool log_mode) {
  int64_t n = square_size(op, A);
  if (n < 0) return NULL;
  ad_tensor *out = ad__alloc(op, A->ndim - 2, A->shape);
  if (!out) return NULL;
  if (out->numel == 0) return out;
  lu_work w;
  if (!lu_work_init(op, &w, n)) {
    ad_release(out);
    return NULL;
  }
  for (int64_t bi = 0; bi < out->numel; bi++) {
    load_matrix(A, bi, w.lu);
    int sign;
    int64_t zero = lu_factor(w.lu, n, w.perm, &sign);
    if (zero && log_mode) {
      char note[64];
      ad__error(AD_EINVAL, "%s: matrix is singular (zero pivot in column "
                "%lld)%s", op, (long long)zero,
                batch_note(note, sizeof note, out->numel, bi));
      ad_release(w.buf);
      ad_release(out);
      return NULL;
    }
    if (zero) {
      out->data[bi] = 0.0;
    } else if (log_mode) {
      /* Summing logs avoids the overflow a product of pivots risks. */
      double s = 0.0;
      for (int64_t i = 0; i < n; i++) s += log(fabs(w.lu[i * n + i]));
      out->data[bi] = s;
    } else {
      double d = sign;
      for (int64_t i = 0; i < n; i++) d *= w.lu[i * n + i];
      out->data[bi] = d;
    }
  }
  ad_release(w.buf);
  return out;
}

ad_tensor *ad__k_det(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)a;
  if (!check_arity("ad_det", nin, 1)) return NULL;
  return determinant("ad_det", in[0], false);
}

ad_tensor *ad__k_logdet(int nin, ad_tensor *const *in, const ad__attr *a) {
  (void)a;
  if (!check_arity("ad_logdet", nin, 1)) return NULL;
  return determinant("ad_logdet", in[0], true);
}

/* ------------------------------------------------------------------------
 * cholesky
 * ---------------------------------------------------------------------- */

ad_tensor *ad__k_cholesky(int nin, ad_tensor *const *in, const ad__attr *a) {
  static const char op[] = "ad_cholesky";
  (void)a;
  if (!check_arity(op, nin, 1)) return NULL;
  ad_tensor *A = in[0];
  int64_t n = square_size(op, A);
  if (n < 0) return NULL;
  ad_tensor *out = ad__alloc(op, A->ndim, A->shape);
  if (!out) return NULL;
  if (out->numel == 0) return out;
  int64_t batch = out->numel / (n * n);
  int nb = A->ndim - 2;
  int64_t rs = A->strides[nb], cs = A->strides[nb + 1];
  for (int64_t bi = 0; bi < batch; bi++) {
    int64_t off = 0, rem = bi;
    for (int d = nb - 1; d >= 0; d--) {
      off += (rem % A->shape[d]) * A->strides[d];
      rem /= A->shape[d];
    }
    const double *src = A->data + off;
    double *L = out->data + bi * n * n;
    for (int64_t j = 0; j < n; j++) {
      double *lj = L + j * n;
      double d = src[j * rs + j * cs];
      for (int64_t c = 0; c < j; c++) d -= lj[c] * lj[c];
      /* !(d > 0) also rejects NaN, which would poison every later entry. */
      if (!(d > 0.0)) {
        char note[64];
        ad__error(AD_EINVAL, "%s: matrix is not positive definite (pivot "
                  "%lld is %g)%s", op, (long long)(j + 1), d,
                  batch_note(note, sizeof note, batch, bi));
        ad_release(out);
        return NULL;
      }
      double ljj = sqrt(d);
      lj[j] = ljj;
      for (int64_t c = j + 1; c < n; c++) lj[c] = 0.0;
      for (int64_t i = j + 1; i < n; i++) {
        double *li = L + i * n;
        double s = src[i * rs + j * cs];
        for (int64_t c = 0; c < j; c++) s -= li[c] * lj[c];
        li[j] = s / ljj;
      }
    }
  }
  return out;
}
