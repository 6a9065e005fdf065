/* Vectorisable double-precision exp, expm1, log, log1p, tanh, sigmoid and
 * softplus over arrays, for the unary kernels (implemented in vmath.c). */
#ifndef AD_SRC_VMATH_H
#define AD_SRC_VMATH_H

#include <stdint.h>

/* y[i] = f(x[i]) for 0 <= i < n.  x and y are either the same array (the
 * result overwrites the input) or do not overlap at all.
 *
 * Every result is within 2 ulp of the exact value (about 1 ulp in the
 * worst case, see the error bounds in vmath.c) over the whole domain,
 * with glibc's overflow and underflow thresholds, subnormals, signed
 * zeros, infinities and NaN propagation.  The routines use only IEEE
 * additions, multiplications, divisions and bit operations in a fixed
 * order (no FMA contraction under -std=c11), so every CPU, vector width
 * and build of the library gives bitwise the same results.  Spurious
 * floating-point exception flags may be raised; errno is never set. */
void ad__vexp(const double *x, double *y, int64_t n);
void ad__vexpm1(const double *x, double *y, int64_t n);
void ad__vlog(const double *x, double *y, int64_t n);
void ad__vlog1p(const double *x, double *y, int64_t n);
void ad__vtanh(const double *x, double *y, int64_t n);
/* 1 / (1 + exp(-x)), evaluated without overflow for either sign. */
void ad__vsigmoid(const double *x, double *y, int64_t n);
/* log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), without overflow. */
void ad__vsoftplus(const double *x, double *y, int64_t n);

#endif /* AD_SRC_VMATH_H */
