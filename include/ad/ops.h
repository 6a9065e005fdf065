/* Differentiable tensor operations: one function per row of the op table. */
#ifndef AD_OPS_H
#define AD_OPS_H

#include "ad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Conventions for every function in this header:
 * - Inputs are borrowed; the result is a new tensor owned by the innermost
 *   scope (or by the caller when no scope is open).
 * - On bad input the result is NULL and the error channel names the op
 *   and the shapes or values at fault.  A NULL input gives NULL and keeps
 *   the earlier error.
 * - Every op is differentiable to any order in reverse and forward mode
 *   unless its comment says otherwise.
 * - Binary ops broadcast like NumPy.  Axes follow NumPy: a negative axis
 *   counts from the end. */

/* ---- Binary elementwise (broadcasting) --------------------------------- */

ad_tensor *ad_add(ad_tensor *a, ad_tensor *b);
ad_tensor *ad_sub(ad_tensor *a, ad_tensor *b);
ad_tensor *ad_mul(ad_tensor *a, ad_tensor *b);
ad_tensor *ad_div(ad_tensor *a, ad_tensor *b);
/* a**b.  The derivative in b uses log(a) and is 0 where a == 0. */
ad_tensor *ad_pow(ad_tensor *a, ad_tensor *b);
/* Elementwise max/min.  At ties each input gets half of the gradient. */
ad_tensor *ad_maximum(ad_tensor *a, ad_tensor *b);
ad_tensor *ad_minimum(ad_tensor *a, ad_tensor *b);
/* atan2(y, x), the angle of the point (x, y). */
ad_tensor *ad_atan2(ad_tensor *y, ad_tensor *x);
/* Floored modulo like Python's %: the result has the sign of b. */
ad_tensor *ad_mod(ad_tensor *a, ad_tensor *b);

/* t + s, t * s and t**p with a constant double. */
ad_tensor *ad_add_scalar(ad_tensor *t, double s);
ad_tensor *ad_mul_scalar(ad_tensor *t, double s);
ad_tensor *ad_pow_scalar(ad_tensor *t, double p);

/* ---- Unary elementwise ------------------------------------------------- */

ad_tensor *ad_neg(ad_tensor *t);
ad_tensor *ad_exp(ad_tensor *t);
ad_tensor *ad_log(ad_tensor *t);
ad_tensor *ad_log1p(ad_tensor *t);
ad_tensor *ad_expm1(ad_tensor *t);
ad_tensor *ad_sqrt(ad_tensor *t);
ad_tensor *ad_square(ad_tensor *t);
/* |t|; its derivative at 0 is 0 (the subgradient sign(0)). */
ad_tensor *ad_abs(ad_tensor *t);
ad_tensor *ad_sin(ad_tensor *t);
ad_tensor *ad_cos(ad_tensor *t);
ad_tensor *ad_tan(ad_tensor *t);
ad_tensor *ad_asin(ad_tensor *t);
ad_tensor *ad_acos(ad_tensor *t);
ad_tensor *ad_atan(ad_tensor *t);
ad_tensor *ad_sinh(ad_tensor *t);
ad_tensor *ad_cosh(ad_tensor *t);
ad_tensor *ad_tanh(ad_tensor *t);
ad_tensor *ad_sigmoid(ad_tensor *t);
/* log(1 + exp(t)), computed without overflow. */
ad_tensor *ad_softplus(ad_tensor *t);
/* max(t, 0); its derivative at 0 is 0. */
ad_tensor *ad_relu(ad_tensor *t);
ad_tensor *ad_erf(ad_tensor *t);
/* -1, 0 or 1, and floor(t): differentiable with derivative zero. */
ad_tensor *ad_sign(ad_tensor *t);
ad_tensor *ad_floor(ad_tensor *t);
/* t limited to [lo, hi] (lo <= hi); derivative 1 inside, 0 outside. */
ad_tensor *ad_clip(ad_tensor *t, double lo, double hi);

/* ---- Comparison and selection ----------------------------------------- */

/* 1.0 where the relation holds, else 0.0 (broadcasting).  Not
 * differentiable: the result is a constant to every tape and level. */
ad_tensor *ad_less(ad_tensor *a, ad_tensor *b);
ad_tensor *ad_greater(ad_tensor *a, ad_tensor *b);
ad_tensor *ad_equal(ad_tensor *a, ad_tensor *b);
/* a where cond != 0, else b (all three broadcast).  Differentiable in a
 * and b; cond is a constant. */
ad_tensor *ad_where(ad_tensor *cond, ad_tensor *a, ad_tensor *b);

/* ---- Reductions ---------------------------------------------------------
 * Reduce over the naxes axes listed in axes (naxes == 0: every axis).
 * keepdims keeps the reduced axes with size 1.  A repeated or out-of-range
 * axis is AD_EINVAL.  max/min split the gradient evenly between ties. */

ad_tensor *ad_sum(ad_tensor *t, int naxes, const int *axes, bool keepdims);
ad_tensor *ad_mean(ad_tensor *t, int naxes, const int *axes, bool keepdims);
ad_tensor *ad_prod(ad_tensor *t, int naxes, const int *axes, bool keepdims);
ad_tensor *ad_max(ad_tensor *t, int naxes, const int *axes, bool keepdims);
ad_tensor *ad_min(ad_tensor *t, int naxes, const int *axes, bool keepdims);
/* log(sum(exp(t))) over the axes, computed stably. */
ad_tensor *ad_logsumexp(ad_tensor *t, int naxes, const int *axes,
                        bool keepdims);
/* The sum of every element, as a rank-0 tensor. */
ad_tensor *ad_sum_all(ad_tensor *t);
/* Index of the first maximum along axis, as doubles (not
 * differentiable). */
ad_tensor *ad_argmax(ad_tensor *t, int axis);

/* ---- Shape --------------------------------------------------------------
 * Shape ops return views sharing the input's storage where they can. */

/* Same elements in a new shape; one dimension may be -1 (inferred). */
ad_tensor *ad_reshape(ad_tensor *t, int ndim, const int64_t *shape);
/* Swap the last two axes (rank >= 2; a rank-1 tensor is returned as is). */
ad_tensor *ad_transpose(ad_tensor *t);
/* Reorder axes: result axis i is input axis perm[i] (perm has ndim
 * entries, a permutation of 0..ndim-1). */
ad_tensor *ad_permute(ad_tensor *t, const int *perm);
/* Insert a size-1 axis at position axis (-ndim-1 <= axis <= ndim). */
ad_tensor *ad_expand_dims(ad_tensor *t, int axis);
/* Remove the size-1 axis at position axis. */
ad_tensor *ad_squeeze(ad_tensor *t, int axis);
ad_tensor *ad_broadcast_to(ad_tensor *t, int ndim, const int64_t *shape);
/* Elements start, start+step, ... before stop along axis; step != 0.
 * start/stop follow Python slicing: negative values count from the end
 * and out-of-range values are clamped. */
ad_tensor *ad_slice(ad_tensor *t, int axis, int64_t start, int64_t stop,
                    int64_t step);
/* Join n >= 1 tensors along an existing axis (concat) or a new one
 * (stack). */
ad_tensor *ad_concat(int n, ad_tensor *const *ts, int axis);
ad_tensor *ad_stack(int n, ad_tensor *const *ts, int axis);
/* Pick the n entries idx[0..n) along axis (negative indices count from
 * the end).  The gradient adds into repeated indices. */
ad_tensor *ad_gather(ad_tensor *t, int axis, const int64_t *idx, int64_t n);

/* ---- Linear algebra -----------------------------------------------------
 * Matrices are the last two axes; leading axes are batch axes that
 * broadcast.  matmul treats a rank-1 operand as NumPy does. */

ad_tensor *ad_matmul(ad_tensor *a, ad_tensor *b);
/* X with A X = B (B may be a vector).  AD_EINVAL if A is singular. */
ad_tensor *ad_solve(ad_tensor *A, ad_tensor *B);
ad_tensor *ad_inv(ad_tensor *A);
/* Lower-triangular L with A = L L^T for symmetric positive-definite A
 * (only the lower triangle of A is read). */
ad_tensor *ad_cholesky(ad_tensor *A);
ad_tensor *ad_det(ad_tensor *A);
/* log |det A|.  AD_EINVAL if A is singular. */
ad_tensor *ad_logdet(ad_tensor *A);

/* ---- Neural-network ops ------------------------------------------------ */

ad_tensor *ad_softmax(ad_tensor *t, int axis);
ad_tensor *ad_log_softmax(ad_tensor *t, int axis);
/* 2-d convolution (cross-correlation as in every deep-learning library)
 * of x (N, H, W, C) with w (KH, KW, C, O), strides sh, sw >= 1 and zero
 * padding ph, pw >= 0 on each side; result (N, OH, OW, O). */
ad_tensor *ad_conv2d(ad_tensor *x, ad_tensor *w, int sh, int sw, int ph,
                     int pw);
/* Max pooling of x (N, H, W, C) over kh x kw windows with strides sh, sw,
 * no padding; the gradient goes to the first maximum of each window. */
ad_tensor *ad_max_pool2d(ad_tensor *x, int kh, int kw, int sh, int sw);

#ifdef __cplusplus
}
#endif
#endif /* AD_OPS_H */
