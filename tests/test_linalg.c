/* Tests of the linear-algebra kernels: matmul (batched, broadcast, rank-1
 * and strided operands) and solve, inv, det, logdet, cholesky. */
#include <stdlib.h>

#include "testutil.h"

#include "internal.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/* Deterministic pseudo-random values in [-1, 1). */
static ad_tensor *noise(int ndim, const int64_t *shape, uint64_t seed) {
  ad_tensor *t = ad_tensor_new(ndim, shape, NULL);
  assert_non_null(t);
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (int64_t i = 0; i < t->numel; i++) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    t->data[i] = (double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
  }
  return t;
}

/* Element of t at a multi-index, following its strides. */
static double at(const ad_tensor *t, const int64_t *idx) {
  int64_t off = 0;
  for (int i = 0; i < t->ndim; i++) off += idx[i] * t->strides[i];
  return t->data[off];
}

/* NumPy matmul by the definition, for any ranks, as a dense tensor. */
static ad_tensor *naive_matmul(const ad_tensor *a, const ad_tensor *b) {
  int na = a->ndim, nb = b->ndim;
  int64_t m = na == 1 ? 1 : a->shape[na - 2], k = a->shape[na - 1];
  int64_t n = nb == 1 ? 1 : b->shape[nb - 1];
  int bra = na > 2 ? na - 2 : 0, brb = nb > 2 ? nb - 2 : 0;
  int bo = bra > brb ? bra : brb;
  int64_t oshape[AD_MAX_DIMS];
  for (int i = 0; i < bo; i++) {
    int ia = i - (bo - bra), ib = i - (bo - brb);
    int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
    oshape[i] = da > db ? da : db;
  }
  int od = bo;
  if (na >= 2) oshape[od++] = m;
  if (nb >= 2) oshape[od++] = n;
  ad_tensor *out = ad_tensor_new(od, oshape, NULL);
  int64_t batch = 1;
  for (int i = 0; i < bo; i++) batch *= oshape[i];
  for (int64_t bi = 0; bi < batch; bi++) {
    int64_t bidx[AD_MAX_DIMS], rem = bi;
    for (int d = bo - 1; d >= 0; d--) {
      bidx[d] = rem % oshape[d];
      rem /= oshape[d];
    }
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int64_t p = 0; p < k; p++) {
          int64_t ia[AD_MAX_DIMS], ib[AD_MAX_DIMS];
          for (int d = 0; d < bra; d++) {
            int64_t v = bidx[d + bo - bra];
            ia[d] = a->shape[d] == 1 ? 0 : v;
          }
          for (int d = 0; d < brb; d++) {
            int64_t v = bidx[d + bo - brb];
            ib[d] = b->shape[d] == 1 ? 0 : v;
          }
          if (na == 1) {
            ia[0] = p;
          } else {
            ia[bra] = i;
            ia[bra + 1] = p;
          }
          if (nb == 1) {
            ib[0] = p;
          } else {
            ib[brb] = p;
            ib[brb + 1] = j;
          }
          s += at(a, ia) * at(b, ib);
        }
        out->data[(bi * m + i) * n + j] = s;
      }
  }
  return out;
}

static void check_matmul(ad_tensor *a, ad_tensor *b) {
  ad_tensor *got = ad_matmul(a, b);
  assert_non_null(got);
  assert_tensors_close(got, naive_matmul(a, b), 1e-12);
}

/* A well-conditioned random matrix batch: noise plus n on the diagonal. */
static ad_tensor *well_conditioned(int ndim, const int64_t *shape,
                                   uint64_t seed) {
  ad_tensor *t = noise(ndim, shape, seed);
  int64_t n = shape[ndim - 1];
  for (int64_t b = 0; b < t->numel / (n * n); b++)
    for (int64_t i = 0; i < n; i++) t->data[b * n * n + i * n + i] += n;
  return t;
}

/* ------------------------------------------------------------------------
 * matmul
 * ---------------------------------------------------------------------- */

static void test_matmul_known_values(void **state) {
  (void)state;
  ad_tensor *a = ad_tensor_new(2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6));
  ad_tensor *b = ad_tensor_new(2, SHAPE(3, 2), VALUES(7, 8, 9, 10, 11, 12));
  ad_tensor *c = ad_matmul(a, b);
  assert_shape(c, 2, 2, 2);
  assert_tensor_near(c, VALUES(58, 64, 139, 154), 4, 0);
}

static void test_matmul_inner_mismatch_message(void **state) {
  (void)state;
  ad_tensor *a = ad_zeros(2, SHAPE(2, 3));
  ad_tensor *b = ad_zeros(2, SHAPE(4, 5));
  assert_null(ad_matmul(a, b));
  assert_error(AD_ESHAPE,
               "ad_matmul: inner dimensions differ: (2, 3) x (4, 5)");
  assert_null(ad_matmul(ad_zeros(1, SHAPE(3)), ad_zeros(1, SHAPE(4))));
  assert_error(AD_ESHAPE, "ad_matmul: inner dimensions differ: (3,) x (4,)");
}

static void test_matmul_vector_matrix(void **state) {
  (void)state;
  ad_tensor *v = ad_tensor_new(1, SHAPE(2), VALUES(1, 2));
  ad_tensor *m = ad_tensor_new(2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6));
  ad_tensor *r = ad_matmul(v, m);
  assert_shape(r, 1, 3);
  assert_tensor_near(r, VALUES(9, 12, 15), 3, 0);
}

static void test_matmul_matrix_vector(void **state) {
  (void)state;
  ad_tensor *m = ad_tensor_new(2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6));
  ad_tensor *v = ad_tensor_new(1, SHAPE(3), VALUES(1, 0, -1));
  ad_tensor *r = ad_matmul(m, v);
  assert_shape(r, 1, 2);
  assert_tensor_near(r, VALUES(-2, -2), 2, 0);
}

static void test_matmul_vector_vector_is_scalar(void **state) {
  (void)state;
  ad_tensor *a = ad_tensor_new(1, SHAPE(3), VALUES(1, 2, 3));
  ad_tensor *b = ad_tensor_new(1, SHAPE(3), VALUES(4, 5, 6));
  ad_tensor *r = ad_matmul(a, b);
  assert_shape(r, 0, 0);
  assert_tensor_near(r, VALUES(32), 1, 0);
}

static void test_matmul_batched(void **state) {
  (void)state;
  check_matmul(noise(3, SHAPE(2, 3, 4), 1), noise(3, SHAPE(2, 4, 5), 2));
}

static void test_matmul_broadcast_batch(void **state) {
  (void)state;
  ad_tensor *a = noise(4, SHAPE(3, 1, 2, 4), 3);
  ad_tensor *b = noise(3, SHAPE(5, 4, 3), 4);
  assert_shape(ad_matmul(a, b), 4, 3, 5, 2, 3);
  check_matmul(a, b);
  check_matmul(b, ad_transpose(noise(4, SHAPE(2, 1, 2, 3), 5)));
}

static void test_matmul_batch_against_shared_matrix(void **state) {
  (void)state;
  /* A stack of matrices against one matrix (or a size-1 batch). */
  check_matmul(noise(3, SHAPE(4, 3, 5), 6), noise(2, SHAPE(5, 2), 7));
  check_matmul(noise(4, SHAPE(2, 3, 3, 5), 8), noise(3, SHAPE(1, 5, 2), 9));
  check_matmul(noise(3, SHAPE(4, 1, 5), 10), noise(2, SHAPE(5, 2), 11));
  check_matmul(noise(3, SHAPE(4, 3, 5), 6),
               ad_transpose(noise(2, SHAPE(2, 5), 7)));
}

static void test_matmul_rank1_with_batch(void **state) {
  (void)state;
  ad_tensor *v = noise(1, SHAPE(3), 12);
  ad_tensor *m = noise(3, SHAPE(2, 3, 4), 13);
  assert_shape(ad_matmul(v, m), 2, 2, 4);
  check_matmul(v, m);
  ad_tensor *w = noise(1, SHAPE(4), 14);
  assert_shape(ad_matmul(m, w), 2, 2, 3);
  check_matmul(m, w);
}

static void test_matmul_transposed_views(void **state) {
  (void)state;
  ad_tensor *a = noise(2, SHAPE(4, 3), 15);
  ad_tensor *b = noise(2, SHAPE(5, 4), 16);
  ad_tensor *at_ = ad_transpose(a); /* (3, 4) */
  ad_tensor *bt = ad_transpose(b);  /* (4, 5) */
  check_matmul(at_, bt);
  check_matmul(at_, noise(2, SHAPE(4, 2), 17));
  check_matmul(noise(2, SHAPE(2, 4), 18), bt);
  check_matmul(ad_transpose(noise(3, SHAPE(2, 4, 3), 19)),
               ad_transpose(noise(3, SHAPE(2, 5, 4), 20)));
}

static void test_matmul_irregular_views(void **state) {
  (void)state;
  ad_tensor *big = noise(2, SHAPE(6, 8), 21);
  ad_tensor *cols = ad_slice(big, 1, 0, 8, 2);          /* (6, 4), step 2 */
  ad_tensor *rev = ad_slice(big, 0, -1, INT64_MIN, -1); /* negative step */
  check_matmul(cols, noise(2, SHAPE(4, 3), 22));
  check_matmul(ad_transpose(rev), noise(2, SHAPE(6, 2), 23));
  ad_tensor *row = ad_tensor_new(2, SHAPE(1, 4), VALUES(1, 2, 3, 4));
  ad_tensor *bc = ad_broadcast_to(row, 2, SHAPE(3, 4)); /* stride 0 */
  check_matmul(bc, noise(2, SHAPE(4, 2), 24));
  check_matmul(noise(2, SHAPE(2, 3), 25), bc);
  /* Strided and reversed vectors on either side. */
  ad_tensor *v = ad_slice(noise(1, SHAPE(12), 27), 0, 0, 12, 3); /* (4,) */
  ad_tensor *vr = ad_slice(noise(1, SHAPE(4), 28), 0, -1, INT64_MIN, -1);
  check_matmul(v, noise(2, SHAPE(4, 3), 29));
  check_matmul(noise(3, SHAPE(2, 3, 4), 30), v);
  check_matmul(vr, noise(2, SHAPE(4, 2), 31));
  check_matmul(noise(2, SHAPE(5, 4), 32), vr);
  check_matmul(v, vr);
  ad_tensor *sub = ad_slice(ad_slice(big, 0, 1, 4, 1), 1, 2, 7, 1);
  check_matmul(sub, noise(2, SHAPE(5, 2), 26)); /* row stride 8 > cols */
}

static void test_matmul_empty_dimensions(void **state) {
  (void)state;
  ad_tensor *c = ad_matmul(ad_zeros(2, SHAPE(2, 0)), ad_zeros(2, SHAPE(0, 3)));
  assert_shape(c, 2, 2, 3);
  assert_tensor_near(c, VALUES(0, 0, 0, 0, 0, 0), 6, 0);
  ad_tensor *e = ad_matmul(ad_zeros(2, SHAPE(0, 4)), ad_ones(2, SHAPE(4, 3)));
  assert_shape(e, 2, 0, 3);
  ad_tensor *eb =
      ad_matmul(ad_ones(3, SHAPE(0, 2, 4)), ad_ones(2, SHAPE(4, 3)));
  assert_shape(eb, 3, 0, 2, 3);
}

static void test_matmul_shape_errors(void **state) {
  (void)state;
  assert_null(ad_matmul(ad_scalar(2), ad_zeros(2, SHAPE(2, 2))));
  assert_error(AD_ESHAPE, "ad_matmul");
  assert_null(ad_matmul(ad_zeros(2, SHAPE(2, 2)), ad_scalar(2)));
  assert_error(AD_ESHAPE, "ad_matmul");
  assert_null(
      ad_matmul(ad_zeros(3, SHAPE(2, 3, 4)), ad_zeros(3, SHAPE(3, 4, 5))));
  assert_error(AD_ESHAPE, "ad_matmul: batch dimensions cannot broadcast");
  assert_null(ad_matmul(NULL, ad_zeros(2, SHAPE(2, 2))));
  assert_true(ad_error() != AD_OK);
  ad_error_clear();
}

static void test_matmul_larger_square(void **state) {
  (void)state;
  int64_t n = test_quick() ? 24 : 96;
  check_matmul(noise(2, (int64_t[]){n, n}, 27),
               noise(2, (int64_t[]){n, n}, 28));
}

/* ------------------------------------------------------------------------
 * solve, inv
 * ---------------------------------------------------------------------- */

static void test_solve_vector_rhs(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(2, 2), VALUES(2, 1, 1, 3));
  ad_tensor *b = ad_tensor_new(1, SHAPE(2), VALUES(3, 5));
  ad_tensor *x = ad_solve(A, b);
  assert_shape(x, 1, 2);
  assert_tensor_near(x, VALUES(0.8, 1.4), 2, 1e-14);
}

static void test_solve_matrix_rhs(void **state) {
  (void)state;
  ad_tensor *A = well_conditioned(2, SHAPE(4, 4), 30);
  ad_tensor *B = noise(2, SHAPE(4, 3), 31);
  ad_tensor *X = ad_solve(A, B);
  assert_shape(X, 2, 4, 3);
  assert_tensors_close(naive_matmul(A, X), B, 1e-12);
}

static void test_solve_needs_pivoting(void **state) {
  (void)state;
  ad_tensor *A =
      ad_tensor_new(2, SHAPE(3, 3), VALUES(0, 1, 0, 0, 0, 2, 3, 0, 0));
  ad_tensor *b = ad_tensor_new(1, SHAPE(3), VALUES(1, 4, 9));
  assert_tensor_near(ad_solve(A, b), VALUES(3, 1, 2), 3, 1e-14);
}

static void test_solve_batched_broadcast(void **state) {
  (void)state;
  ad_tensor *A = well_conditioned(3, SHAPE(2, 3, 3), 32);
  ad_tensor *B = noise(2, SHAPE(3, 2), 33);
  ad_tensor *X = ad_solve(A, B);
  assert_shape(X, 3, 2, 3, 2);
  assert_tensors_close(naive_matmul(A, X),
                       ad_broadcast_to(B, 3, SHAPE(2, 3, 2)), 1e-12);
  ad_tensor *A1 = well_conditioned(2, SHAPE(3, 3), 34);
  ad_tensor *B3 = noise(4, SHAPE(2, 2, 3, 1), 35);
  ad_tensor *X3 = ad_solve(A1, B3);
  assert_shape(X3, 4, 2, 2, 3, 1);
  assert_tensors_close(naive_matmul(A1, X3), B3, 1e-12);
  ad_tensor *v = noise(1, SHAPE(3), 36);
  ad_tensor *xv = ad_solve(A, v);
  assert_shape(xv, 2, 2, 3);
  assert_tensors_close(
      naive_matmul(A, ad_expand_dims(xv, -1)),
      ad_broadcast_to(ad_expand_dims(v, -1), 3, SHAPE(2, 3, 1)), 1e-12);
}

static void test_solve_strided_operands(void **state) {
  (void)state;
  ad_tensor *A = well_conditioned(2, SHAPE(3, 3), 37);
  ad_tensor *At = ad_transpose(A);
  ad_tensor *B = ad_slice(noise(2, SHAPE(3, 4), 38), 1, 0, 4, 2);
  ad_tensor *X = ad_solve(At, B);
  assert_tensors_close(naive_matmul(At, X), B, 1e-12);
}

static void test_solve_singular(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(2, 2), VALUES(1, 2, 2, 4));
  assert_null(ad_solve(A, ad_ones(1, SHAPE(2))));
  assert_error(AD_EINVAL, "ad_solve: matrix is singular");
  assert_null(ad_solve(ad_zeros(2, SHAPE(3, 3)), ad_ones(2, SHAPE(3, 1))));
  assert_error(AD_EINVAL, "ad_solve: matrix is singular");
}

static void test_solve_shape_errors(void **state) {
  (void)state;
  assert_null(ad_solve(ad_zeros(2, SHAPE(2, 3)), ad_ones(1, SHAPE(2))));
  assert_error(AD_ESHAPE, "ad_solve");
  assert_null(ad_solve(ad_eye(3), ad_ones(1, SHAPE(2))));
  assert_error(AD_ESHAPE, "ad_solve");
  assert_null(ad_solve(ad_eye(3), ad_ones(2, SHAPE(2, 3))));
  assert_error(AD_ESHAPE, "ad_solve");
  assert_null(ad_solve(ad_eye(3), ad_scalar(1)));
  assert_error(AD_ESHAPE, "ad_solve");
  assert_null(
      ad_solve(ad_zeros(3, SHAPE(2, 3, 3)), ad_ones(3, SHAPE(4, 3, 1))));
  assert_error(AD_ESHAPE, "ad_solve");
  assert_null(ad_solve(ad_ones(1, SHAPE(3)), ad_ones(1, SHAPE(3))));
  assert_error(AD_ESHAPE, "ad_solve");
}

static void test_inv_known(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(2, 2), VALUES(4, 7, 2, 6));
  ad_tensor *I = ad_inv(A);
  assert_shape(I, 2, 2, 2);
  assert_tensor_near(I, VALUES(0.6, -0.7, -0.2, 0.4), 4, 1e-14);
}

static void test_inv_batched_times_matrix_is_identity(void **state) {
  (void)state;
  ad_tensor *A = well_conditioned(3, SHAPE(3, 5, 5), 40);
  ad_tensor *I = ad_inv(A);
  assert_shape(I, 3, 3, 5, 5);
  ad_tensor *eye = ad_broadcast_to(ad_eye(5), 3, SHAPE(3, 5, 5));
  assert_tensors_close(naive_matmul(A, I), eye, 1e-12);
  assert_tensors_close(naive_matmul(I, A), eye, 1e-12);
  ad_tensor *It = ad_inv(ad_transpose(A));
  assert_tensors_close(It, ad_transpose(I), 1e-12);
}

static void test_inv_singular(void **state) {
  (void)state;
  ad_tensor *A =
      ad_tensor_new(3, SHAPE(2, 2, 2), VALUES(1, 0, 0, 1, 1, 1, 1, 1));
  assert_null(ad_inv(A));
  assert_error(AD_EINVAL, "ad_inv: matrix is singular");
}

/* ------------------------------------------------------------------------
 * det, logdet
 * ---------------------------------------------------------------------- */

static void test_det_known(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(2, 2), VALUES(3, 8, 4, 6));
  ad_tensor *d = ad_det(A);
  assert_shape(d, 0, 0);
  assert_tensor_near(d, VALUES(-14), 1, 1e-14);
  /* A row swap is needed: the sign must follow it. */
  ad_tensor *B =
      ad_tensor_new(2, SHAPE(3, 3), VALUES(0, 2, 1, 1, 0, 0, 0, 0, 3));
  assert_tensor_near(ad_det(B), VALUES(-6), 1, 1e-14);
  assert_tensor_near(ad_det(ad_transpose(B)), VALUES(-6), 1, 1e-14);
}

static void test_det_batched_and_singular(void **state) {
  (void)state;
  ad_tensor *A =
      ad_tensor_new(4, SHAPE(2, 1, 2, 2), VALUES(1, 2, 2, 4, 2, 0, 0, 5));
  ad_tensor *d = ad_det(A);
  assert_shape(d, 2, 2, 1);
  assert_tensor_near(d, VALUES(0, 10), 2, 1e-14);
}

static void test_logdet_known(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(2, 2), VALUES(3, 8, 4, 6));
  assert_tensor_near(ad_logdet(A), VALUES(log(14.0)), 1, 1e-14);
  ad_tensor *B =
      ad_tensor_new(3, SHAPE(2, 2, 2), VALUES(2, 0, 0, 2, 1, 0, 0, 1e-3));
  ad_tensor *l = ad_logdet(B);
  assert_shape(l, 1, 2);
  assert_tensor_near(l, VALUES(log(4.0), log(1e-3)), 2, 1e-14);
  /* Products of many pivots overflow; a sum of logs does not. */
  ad_tensor *big = ad_eye(200);
  for (int i = 0; i < 200; i++) big->data[i * 201] = 1e4;
  assert_tensor_near(ad_logdet(big), VALUES(200 * log(1e4)), 1, 1e-12);
}

static void test_logdet_singular(void **state) {
  (void)state;
  assert_null(ad_logdet(ad_tensor_new(2, SHAPE(2, 2), VALUES(1, 2, 2, 4))));
  assert_error(AD_EINVAL, "ad_logdet: matrix is singular");
}

/* ------------------------------------------------------------------------
 * cholesky
 * ---------------------------------------------------------------------- */

static void test_cholesky_known(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(3, 3),
                               VALUES(4, 12, -16, 12, 37, -43, -16, -43, 98));
  ad_tensor *L = ad_cholesky(A);
  assert_shape(L, 2, 3, 3);
  assert_tensor_near(L, VALUES(2, 0, 0, 6, 1, 0, -8, 5, 3), 9, 1e-14);
}

static void test_cholesky_reads_lower_triangle_only(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(3, 3),
                               VALUES(4, 99, -7, 12, 37, 1e9, -16, -43, 98));
  assert_tensor_near(ad_cholesky(A), VALUES(2, 0, 0, 6, 1, 0, -8, 5, 3), 9,
                     1e-14);
}

static void test_cholesky_batched_reconstructs(void **state) {
  (void)state;
  ad_tensor *M = noise(3, SHAPE(2, 4, 4), 41);
  /* M M^T + 4 I is positive definite. */
  ad_tensor *A = naive_matmul(M, ad_transpose(M));
  for (int b = 0; b < 2; b++)
    for (int i = 0; i < 4; i++) A->data[b * 16 + i * 5] += 4;
  ad_tensor *L = ad_cholesky(A);
  assert_shape(L, 3, 2, 4, 4);
  assert_tensors_close(naive_matmul(L, ad_transpose(L)), A, 1e-12);
  for (int b = 0; b < 2; b++)
    for (int i = 0; i < 4; i++)
      for (int j = i + 1; j < 4; j++)
        assert_true(L->data[b * 16 + i * 4 + j] == 0);
  assert_tensors_close(ad_cholesky(ad_transpose(A)), L, 1e-12);
}

static void test_cholesky_not_positive_definite(void **state) {
  (void)state;
  ad_tensor *A = ad_tensor_new(2, SHAPE(2, 2), VALUES(1, 2, 2, 3));
  assert_null(ad_cholesky(A));
  assert_error(AD_EINVAL,
               "ad_cholesky: matrix is not positive definite (pivot 2 is -1)");
  assert_null(ad_cholesky(ad_tensor_new(2, SHAPE(2, 2), VALUES(0, 0, 0, 1))));
  assert_error(AD_EINVAL, "(pivot 1 is 0)");
  assert_null(ad_cholesky(ad_tensor_new(2, SHAPE(1, 1), VALUES(NAN))));
  assert_error(AD_EINVAL, "ad_cholesky: matrix is not positive definite");
}

/* ------------------------------------------------------------------------
 * Shared shape rules
 * ---------------------------------------------------------------------- */

static void test_square_matrix_errors(void **state) {
  (void)state;
  ad_tensor *rect = ad_zeros(2, SHAPE(2, 3));
  ad_tensor *vec = ad_zeros(1, SHAPE(3));
  ad_tensor *(*fns[])(ad_tensor *) = {ad_inv, ad_det, ad_logdet, ad_cholesky};
  const char *names[] = {"ad_inv", "ad_det", "ad_logdet", "ad_cholesky"};
  for (int i = 0; i < 4; i++) {
    assert_null(fns[i](rect));
    assert_error(AD_ESHAPE, names[i]);
    assert_null(fns[i](vec));
    assert_error(AD_ESHAPE, names[i]);
    assert_null(fns[i](ad_scalar(1)));
    assert_error(AD_ESHAPE, names[i]);
  }
}

static void test_empty_matrices(void **state) {
  (void)state;
  ad_tensor *E = ad_zeros(2, SHAPE(0, 0));
  assert_tensor_near(ad_det(E), VALUES(1), 1, 0);
  assert_tensor_near(ad_logdet(E), VALUES(0), 1, 0);
  assert_shape(ad_inv(E), 2, 0, 0);
  assert_shape(ad_cholesky(E), 2, 0, 0);
  assert_shape(ad_solve(E, ad_zeros(2, SHAPE(0, 2))), 2, 0, 2);
  ad_tensor *EB = ad_zeros(3, SHAPE(3, 0, 0));
  assert_tensor_near(ad_det(EB), VALUES(1, 1, 1), 3, 0);
  ad_tensor *NB = ad_zeros(3, SHAPE(0, 2, 2));
  assert_shape(ad_det(NB), 1, 0);
  assert_shape(ad_inv(NB), 3, 0, 2, 2);
}

/* Every allocation may fail (the result, dense copies of operands BLAS
 * cannot read, LU scratch): NULL with AD_ENOMEM and nothing leaked. */
static void test_out_of_memory_is_an_error(void **state) {
  (void)state;
  ad_tensor *a = ad_slice(noise(3, SHAPE(2, 3, 8), 50), 2, 0, 8, 2);
  ad_tensor *b = ad_slice(noise(2, SHAPE(8, 3), 51), 0, 0, 8, 2);
  ad_tensor *bt = ad_transpose(b); /* (3, 4), strided */
  ad_tensor *A = ad_transpose(well_conditioned(3, SHAPE(2, 3, 3), 52));
  int failures = 0;
  for (long n = 1; n <= 8; n++) {
    for (int k = 0; k < 6; k++) {
      ad_tensor *r;
      ad__fail_alloc_after(n);
      switch (k) {
        case 0:
          r = ad_matmul(a, b);
          break;
        case 1:
          r = ad_solve(A, bt);
          break;
        case 2:
          r = ad_inv(A);
          break;
        case 3:
          r = ad_det(A);
          break;
        case 4:
          r = ad_logdet(A);
          break;
        default:
          r = ad_cholesky(ad_eye(3));
          break;
      }
      ad__fail_alloc_after(0);
      if (!r) {
        failures++;
        assert_error(AD_ENOMEM, NULL);
      }
    }
  }
  assert_true(failures > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(test_matmul_known_values),
      scoped_test(test_matmul_inner_mismatch_message),
      scoped_test(test_matmul_vector_matrix),
      scoped_test(test_matmul_matrix_vector),
      scoped_test(test_matmul_vector_vector_is_scalar),
      scoped_test(test_matmul_batched),
      scoped_test(test_matmul_broadcast_batch),
      scoped_test(test_matmul_batch_against_shared_matrix),
      scoped_test(test_matmul_rank1_with_batch),
      scoped_test(test_matmul_transposed_views),
      scoped_test(test_matmul_irregular_views),
      scoped_test(test_matmul_empty_dimensions),
      scoped_test(test_matmul_shape_errors),
      scoped_test(test_matmul_larger_square),
      scoped_test(test_solve_vector_rhs),
      scoped_test(test_solve_matrix_rhs),
      scoped_test(test_solve_needs_pivoting),
      scoped_test(test_solve_batched_broadcast),
      scoped_test(test_solve_strided_operands),
      scoped_test(test_solve_singular),
      scoped_test(test_solve_shape_errors),
      scoped_test(test_inv_known),
      scoped_test(test_inv_batched_times_matrix_is_identity),
      scoped_test(test_inv_singular),
      scoped_test(test_det_known),
      scoped_test(test_det_batched_and_singular),
      scoped_test(test_logdet_known),
      scoped_test(test_logdet_singular),
      scoped_test(test_cholesky_known),
      scoped_test(test_cholesky_reads_lower_triangle_only),
      scoped_test(test_cholesky_batched_reconstructs),
      scoped_test(test_cholesky_not_positive_definite),
      scoped_test(test_square_matrix_errors),
      scoped_test(test_empty_matrices),
      scoped_test(test_out_of_memory_is_an_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
