/* Scalar formulas shared by the elementwise kernels and the trace
 * interpreter, so that replayed values equal eager ones bit for bit. */
#ifndef AD_SRC_SCALAR_OPS_H
#define AD_SRC_SCALAR_OPS_H

#include <math.h>

/* Python's floored modulo; the zero result carries b's sign as in
 * Python. */
static inline double ad__mod_floor(double a, double b) {
  double r = fmod(a, b);
  if (r != 0) {
    if ((r < 0) != (b < 0)) r += b;
  } else {
    r = copysign(0.0, b);
  }
  return r;
}

/* NaN-propagating max/min: x != x is the vectorisable isnan. */
#define AD__MAXIMUM(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))
#define AD__MINIMUM(a, b) (((a) != (a) || (a) < (b)) ? (a) : (b))

/* -1, 0 or 1; NaN stays NaN. */
static inline double ad__sign(double x) {
  return x > 0 ? 1.0 : x < 0 ? -1.0 : x == 0 ? 0.0 : x;
}

#endif /* AD_SRC_SCALAR_OPS_H */
