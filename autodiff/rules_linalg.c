/* Derivative rules of the linear-algebra ops (matmul, solve, inv, det,
 * logdet, cholesky), written with differentiable public ops so that they
 * can be differentiated again to any order. */
#include "engine.h"

#define X0 (c->in[0])
#define X1 (c->in[1])
#define Y (c->out[0])

static ad_status ok_or_error(ad_tensor *t) { return t ? AD_OK : ad_error(); }

/* a + b where either may be NULL (an absent term is zero). */
static ad_tensor *add_opt(ad_tensor *a, ad_tensor *b) {
  return a && b ? ad_add(a, b) : a ? a : b;
}

/* Put a size-1 axis on each side of the matrix axes' place: a batch-shaped
 * tensor (det, logdet and their cotangents) becomes (..., 1, 1) and then
 * broadcasts against the (..., n, n) matrices. */
static ad_tensor *as_matrix_scalar(ad_tensor *t) {
  return ad_expand_dims(ad_expand_dims(t, -1), -1);
}

/* trace(M1^T M2) over the matrix axes, batch-shaped: the Frobenius product
 * sum_ij M1_ij M2_ij, which also gives trace(A B) as <A^T, B>. */
static ad_tensor *frobenius(ad_tensor *m1, ad_tensor *m2) {
  static const int last2[2] = {-2, -1};
  return ad_sum(ad_mul(m1, m2), 2, last2, false);
}

/* ------------------------------------------------------------------------
 * matmul.  C = A B: dA = G B^T, dB = A^T G; dC = dA B + A dB.  A rank-1
 * operand is promoted as NumPy does (a (k,) on the left is (1, k), on the
 * right (k, 1)), and the cotangent gains the size-1 axes its product then
 * has, so that the rank-2 formulas apply unchanged.
 * ---------------------------------------------------------------------- */

ad_status ad__vjp_matmul(const ad__opctx *c, ad_tensor *const *gout,
                         const bool *need, ad_tensor **gin) {
  ad_tensor *a = X0, *b = X1, *g = gout[0];
  if (a->ndim == 1) a = ad_reshape(a, 2, (int64_t[]){1, X0->shape[0]});
  if (b->ndim == 1) b = ad_reshape(b, 2, (int64_t[]){X1->shape[0], 1});
  /* The promoted product's shape is batch + (m, n); the dropped axes come
   * back in order: n's first, then m's. */
  if (X1->ndim == 1) g = ad_expand_dims(g, -1);
  if (X0->ndim == 1) g = ad_expand_dims(g, -2);
  if (!a || !b || !g) return ad_error();
  if (need[0]) {
    ad_tensor *ga = ad__unbroadcast(ad_matmul(g, ad_transpose(b)), a);
    gin[0] = ga && X0->ndim == 1 ? ad_reshape(ga, 1, X0->shape) : ga;
    if (!gin[0]) return ad_error();
  }
  if (need[1]) {
    ad_tensor *gb = ad__unbroadcast(ad_matmul(ad_transpose(a), g), b);
    gin[1] = gb && X1->ndim == 1 ? ad_reshape(gb, 1, X1->shape) : gb;
    if (!gin[1]) return ad_error();
  }
  return AD_OK;
}

ad_status ad__jvp_matmul(const ad__opctx *c, ad_tensor *const *tin,
                         ad_tensor **tout) {
  /* Both terms have the output's shape: matmul's shape rule depends only
   * on the operands' shapes, which the tangents share. */
  ad_tensor *ta = tin[0] ? ad_matmul(tin[0], X1) : NULL;
  ad_tensor *tb = tin[1] ? ad_matmul(X0, tin[1]) : NULL;
  if ((tin[0] && !ta) || (tin[1] && !tb)) return ad_error();
  tout[0] = add_opt(ta, tb);
  return ok_or_error(tout[0]);
}

/* ------------------------------------------------------------------------
 * solve.  X = A^{-1} B: dB = A^{-T} G, dA = -dB X^T (Giles 2008, "An
 * extended collection of matrix derivative results", sec. 2.3.1); the
 * tangent is dX = A^{-1} (dB - dA X).  A vector B (rank 1) is the single
 * column (n, 1): X then has shape batch + (n,), so both are given a
 * trailing size-1 axis (a rank-2 X would otherwise read as a matrix).
 * ---------------------------------------------------------------------- */

ad_status ad__vjp_solve(const ad__opctx *c, ad_tensor *const *gout,
                        const bool *need, ad_tensor **gin) {
  bool vec = X1->ndim == 1;
  ad_tensor *g = vec ? ad_expand_dims(gout[0], -1) : gout[0];
  ad_tensor *gb = ad_solve(ad_transpose(X0), g);
  if (!gb) return ad_error();
  if (need[0]) {
    ad_tensor *x = vec ? ad_expand_dims(Y, -1) : Y;
    gin[0] = ad__unbroadcast(ad_neg(ad_matmul(gb, ad_transpose(x))), X0);
    if (!gin[0]) return ad_error();
  }
  if (need[1]) {
    gin[1] = ad__unbroadcast(vec ? ad_squeeze(gb, -1) : gb, X1);
    if (!gin[1]) return ad_error();
  }
  return AD_OK;
}

ad_status ad__jvp_solve(const ad__opctx *c, ad_tensor *const *tin,
                        ad_tensor **tout) {
  bool vec = X1->ndim == 1;
  ad_tensor *rhs = NULL;
  if (tin[1]) rhs = vec ? ad_expand_dims(tin[1], -1) : tin[1];
  if (tin[0]) {
    ad_tensor *x = vec ? ad_expand_dims(Y, -1) : Y;
    ad_tensor *ax = ad_matmul(tin[0], x);
    rhs = rhs ? ad_sub(rhs, ax) : ad_neg(ax);
  }
  /* solve broadcasts A's batch against the right-hand side's, so the
   * result has X's shape whichever tangents are present. */
  ad_tensor *t = ad_solve(X0, rhs);
  if (t && vec) t = ad_squeeze(t, -1);
  tout[0] = t;
  return ok_or_error(t);
}

/* ------------------------------------------------------------------------
 * inv.  Y = A^{-1}: dY = -Y dA Y, so the cotangent is -Y^T G Y^T.
 * ---------------------------------------------------------------------- */

ad_status ad__vjp_inv(const ad__opctx *c, ad_tensor *const *gout,
                      const bool *need, ad_tensor **gin) {
  (void)need;
  ad_tensor *yt = ad_transpose(Y);
  gin[0] = ad_neg(ad_matmul(ad_matmul(yt, gout[0]), yt));
  return ok_or_error(gin[0]);
}

ad_status ad__jvp_inv(const ad__opctx *c, ad_tensor *const *tin,
                      ad_tensor **tout) {
  tout[0] = ad_neg(ad_matmul(ad_matmul(Y, tin[0]), Y));
  return ok_or_error(tout[0]);
}

/* ------------------------------------------------------------------------
 * det and logdet.  Jacobi's formula: d det A = det A trace(A^{-1} dA), so
 * the cotangent is g det A A^{-T}; d log|det A| = trace(A^{-1} dA) with
 * cotangent g A^{-T}.  det's rule needs A invertible.
 * ---------------------------------------------------------------------- */

ad_status ad__vjp_det(const ad__opctx *c, ad_tensor *const *gout,
                      const bool *need, ad_tensor **gin) {
  (void)need;
  ad_tensor *scale = as_matrix_scalar(ad_mul(gout[0], Y));
  gin[0] = ad_mul(scale, ad_transpose(ad_inv(X0)));
  return ok_or_error(gin[0]);
}

ad_status ad__jvp_det(const ad__opctx *c, ad_tensor *const *tin,
                      ad_tensor **tout) {
  ad_tensor *tr = frobenius(ad_transpose(ad_inv(X0)), tin[0]);
  tout[0] = ad_mul(Y, tr);
  return ok_or_error(tout[0]);
}

ad_status ad__vjp_logdet(const ad__opctx *c, ad_tensor *const *gout,
                         const bool *need, ad_tensor **gin) {
  (void)need;
  gin[0] = ad_mul(as_matrix_scalar(gout[0]), ad_transpose(ad_inv(X0)));
  return ok_or_error(gin[0]);
}

ad_status ad__jvp_logdet(const ad__opctx *c, ad_tensor *const *tin,
                         ad_tensor **tout) {
  tout[0] = frobenius(ad_transpose(ad_inv(X0)), tin[0]);
  return ok_or_error(tout[0]);
}

/* ------------------------------------------------------------------------
 * cholesky.  The kernel reads only the lower triangle of A, so the op is
 * L = chol(S(A)) with S(A) = tril(A) + tril(A, -1)^T, a function of all
 * n^2 entries whose derivative in each strictly upper entry is zero.
 *
 * For a symmetric perturbation dS, dL = L Phi(L^{-1} dS L^{-T}) where Phi
 * keeps the strict lower triangle and halves the diagonal (Murray 2016,
 * "Differentiation of the Cholesky decomposition", eq. 8).  Its adjoint:
 * <G, dL> = <M, dS> with M = L^{-T} Phi(L^T G) L^{-1} (Phi is a mask, so
 * it is self-adjoint).  Through dS = S(dA),
 *   <M, tril(dA) + tril(dA, -1)^T> = <tril(M) + tril(M^T, -1), dA>,
 * so the cotangent of A is tril(M) + tril(M^T, -1): M_ij + M_ji below the
 * diagonal, M_ii on it, zero above.  The masks are constants built from
 * comparisons of index grids.
 * ---------------------------------------------------------------------- */

typedef struct tri_masks {
  ad_tensor *strict; /* 1 where i > j */
  ad_tensor *diag;   /* 1 where i == j */
  ad_tensor *phi;    /* strict + diag / 2: Murray's Phi */
} tri_masks;

static ad_status make_masks(int64_t n, tri_masks *m) {
  ad_tensor *idx = ad_arange(0.0, (double)n, 1.0);
  ad_tensor *rows = ad_reshape(idx, 2, (int64_t[]){n, 1});
  ad_tensor *cols = ad_reshape(idx, 2, (int64_t[]){1, n});
  m->strict = ad_greater(rows, cols);
  m->diag = ad_equal(rows, cols);
  m->phi = ad_add(m->strict, ad_mul_scalar(m->diag, 0.5));
  return m->phi ? AD_OK : ad_error();
}

ad_status ad__vjp_cholesky(const ad__opctx *c, ad_tensor *const *gout,
                           const bool *need, ad_tensor **gin) {
  (void)need;
  tri_masks mk;
  ad_status st = make_masks(Y->shape[Y->ndim - 1], &mk);
  if (st) return st;
  ad_tensor *linv = ad_inv(Y);
  ad_tensor *p = ad_mul(mk.phi, ad_matmul(ad_transpose(Y), gout[0]));
  ad_tensor *m = ad_matmul(ad_matmul(ad_transpose(linv), p), linv);
  /* tril(M) + tril(M^T, -1) = diag * M + strict * (M + M^T). */
  ad_tensor *lower = ad_mul(mk.strict, ad_add(m, ad_transpose(m)));
  gin[0] = ad_add(lower, ad_mul(mk.diag, m));
  return ok_or_error(gin[0]);
}

ad_status ad__jvp_cholesky(const ad__opctx *c, ad_tensor *const *tin,
                           ad_tensor **tout) {
  tri_masks mk;
  ad_status st = make_masks(Y->shape[Y->ndim - 1], &mk);
  if (st) return st;
  /* The symmetric matrix the kernel sees: tril(dA) + tril(dA, -1)^T. */
  ad_tensor *strict = ad_mul(mk.strict, tin[0]);
  ad_tensor *ds = ad_add(ad_add(strict, ad_mul(mk.diag, tin[0])),
                         ad_transpose(strict));
  ad_tensor *linv = ad_inv(Y);
  ad_tensor *inner = ad_matmul(ad_matmul(linv, ds), ad_transpose(linv));
  tout[0] = ad_matmul(Y, ad_mul(mk.phi, inner));
  return ok_or_error(tout[0]);
}
