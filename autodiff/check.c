/* The derivative checker: libad's derivatives in every nesting of forward
 * and reverse mode, against finite differences and against each other. */
#include "ad/check.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* Inputs up to this many elements are checked along every coordinate. */
#define SMALL_MAX 16
/* Larger inputs: this many fixed random outer directions per order. */
#define NRAND 4
#define MAX_ORDER 4
/* Up to SMALL_MAX x SMALL_MAX values are compared per nesting. */
#define MAX_BLOCK (SMALL_MAX * SMALL_MAX)

/* First finite-difference step, relative to each coordinate's scale
 * (truncation of the five-point rule ~ h^4 vanishes there for functions
 * that vary on that scale, while rounding ~ eps / h stays small), and how
 * many steps 8 times smaller may follow where truncation dominates. */
#define FD_STEP 1e-3
#define FD_REFINE 2
/* The reported error bound is this multiple of the estimate: the
 * estimate's noise terms are themselves samples of that noise, and a
 * sample can come out small by chance. */
#define FD_SAFETY 10.0
/* Nestings run the same rules in another order, so they agree up to
 * rounding: relative to the values, plus a share of the finite-difference
 * bound as the noise floor of values that cancel to almost nothing. */
#define AGREE_REL 1e-9
#define AGREE_FD 1e-2

/* Fixed seeds: the same x gets the same weights and directions every
 * time, whatever the user's ad_seed stream holds. */
#define SEED_WEIGHTS 0x6ad5eed0c4ec4001ull
#define SEED_DIRS 0x6ad5eed0d1c70002ull

static const char OP[] = "ad_check_grads";

/* ------------------------------------------------------------------------
 * A private generator (splitmix64): libad's own generator belongs to the
 * user, and a GSL generator would need an allocation that can fail.
 * ---------------------------------------------------------------------- */

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* A value in +-[0.5, 1): no weight or direction component is near zero,
 * so every output and every coordinate takes part in every comparison. */
static double rng_weight(rng *r) {
  uint64_t z = rng_next(r);
  double v = 0.5 + 0.5 * ldexp((double)(z >> 11), -53);
  return (z & 1u) ? -v : v;
}

/* ------------------------------------------------------------------------
 * The checker's state
 * ---------------------------------------------------------------------- */

typedef struct checker {
  ad_fn f;
  void *ctx;
  unsigned modes;
  ad_tensor *x; /* a private copy of the point: no outside tape watches it */
  int ndim;
  int64_t shape[AD_MAX_DIMS];
  int64_t n;
  double *xv;    /* x's values */
  double *scale; /* per coordinate: |x_i|, or the mean |x| where x_i = 0 */
  int yndim;
  int64_t yshape[AD_MAX_DIMS];
  ad_tensor *w; /* weights contracting f's output; NULL for one element */
  bool small;
  ad_tensor *outer[NRAND];     /* large inputs: the FD directions */
  ad_tensor *inner[MAX_ORDER]; /* fixed directions of inner orders */
} checker;

/* A set of directions that one block of values runs over. */
typedef struct slot {
  int64_t count;
  ad_tensor *const *dirs; /* NULL: the coordinate directions e_0.. */
} slot;

/* The nesting number idx of length k over the selected modes, as letters
 * 'r'/'f' outermost first; reverse first, so idx 0 is all-reverse when
 * reverse mode is selected. */
static void nesting_code(unsigned modes, int k, int idx, char *code) {
  const char *alpha = modes == AD_CHECK_FWD   ? "f"
                      : modes == AD_CHECK_REV ? "r"
                                              : "rf";
  int m = (int)strlen(alpha);
  for (int l = k - 1; l >= 0; l--) {
    code[l] = alpha[idx % m];
    idx /= m;
  }
  code[k] = '\0';
}

static int nesting_count(unsigned modes, int k) {
  int m = modes == (AD_CHECK_FWD | AD_CHECK_REV) ? 2 : 1, c = 1;
  for (int i = 0; i < k; i++) c *= m;
  return c;
}

/* "rf" -> "rev-fwd"; at most 15 characters for order 4. */
static void nesting_name(const char *code, char out[16]) {
  size_t used = 0;
  out[0] = '\0';
  for (int l = 0; code[l]; l++) {
    memcpy(out + used, l ? "-" : "", l ? 1 : 0);
    used += l ? 1 : 0;
    memcpy(out + used, code[l] == 'r' ? "rev" : "fwd", 3);
    used += 3;
    out[used] = '\0';
  }
}

/* ------------------------------------------------------------------------
 * Evaluation: the contracted objective and its nested derivatives
 * ---------------------------------------------------------------------- */

static bool same_shape(int na, const int64_t *a, int nb, const int64_t *b) {
  if (na != nb) return false;
  for (int i = 0; i < na; i++)
    if (a[i] != b[i]) return false;
  return true;
}

/* h(xp) = <w, f(xp)> (or f(xp) itself for one element) as a rank-0
 * tensor; *mag, when wanted, receives sum |w_i f_i|, the size of the
 * terms whose rounding the sum carries.  NULL with the error recorded when
 * f fails, returns NULL, changes its output shape or leaves a context
 * open. */
static ad_tensor *objective(const checker *ck, ad_tensor *xp, double *mag) {
  int depth = ad__contexts.n;
  ad_tensor *y = ck->f(xp, ck->ctx);
  if (ad__contexts.n != depth) {
    ad__error(AD_ESTATE, "%s: the function left a tape or forward level open",
              OP);
    return NULL;
  }
  if (!y) {
    if (ad_error() == AD_OK)
      ad__error(AD_EINVAL, "%s: the function returned NULL", OP);
    return NULL;
  }
  if (!same_shape(ad_ndim(y), ad_shape(y), ck->yndim, ck->yshape)) {
    char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
    ad__error(AD_ESHAPE,
              "%s: the function returned shape %s near x but %s at x", OP,
              ad__shape_str(a, ad_ndim(y), ad_shape(y)),
              ad__shape_str(b, ck->yndim, ck->yshape));
    return NULL;
  }
  ad_tensor *terms = ck->w ? ad_mul(y, ck->w) : y;
  ad_tensor *h = ad_sum_all(terms);
  if (h && mag) *mag = ad_item(ad_sum_all(ad_abs(terms)));
  return h;
}

/* D^(len-lv) h at xp for the levels lv..len-1 of `mode`, outermost first:
 * a forward level ('f') attaches dirs[l] as the tangent of xp; a tape
 * ('r') watches xp and takes the gradient of what the inner levels
 * computed, contracted with dirs[l] except at free_lv, which returns the
 * whole gradient (shaped like x; only forward levels may lie outside it,
 * and they map it elementwise).  Every level perturbs or watches the same
 * xp, so each differentiates what the inner ones run, rules included.
 * The result belongs to the caller's scope; NULL on error. */
static ad_tensor *nest(const checker *ck, ad_tensor *xp, const char *mode,
                       int len, int lv, ad_tensor *const *dirs, int free_lv) {
  if (lv == len) return objective(ck, xp, NULL);
  ad_tensor *out = NULL;
  ad_scope_begin();
  if (mode[lv] == 'f') {
    ad_fwd *acc = ad_fwd_begin(1, &xp, &dirs[lv]);
    ad_tensor *in =
        acc ? nest(ck, xp, mode, len, lv + 1, dirs, free_lv) : NULL;
    if (in) out = ad_fwd_jvp(acc, in);
    if (acc && ad__ctx_find(acc) != ad__contexts.n - 1) {
      /* f left a context open (reported): drop ours without ending it. */
      ad__fwd_discard(acc);
      out = NULL;
    } else if (acc && ad_fwd_end(acc) != AD_OK) {
      out = NULL;
    }
  } else {
    ad_tape *tape = ad_tape_begin(0);
    bool ok = tape && ad_tape_watch(tape, xp) == AD_OK;
    ad_tensor *in = ok ? nest(ck, xp, mode, len, lv + 1, dirs, free_lv) : NULL;
    if (tape && ad__ctx_find(tape) == ad__contexts.n - 1 &&
        ad_tape_end(tape) != AD_OK)
      in = NULL;
    ad_tensor *g = in ? ad_tape_gradient(tape, in, xp) : NULL;
    out = (g && lv != free_lv) ? ad_sum_all(ad_mul(g, dirs[lv])) : g;
    ad_tape_free(tape);
  }
  out = ad_keep(out);
  ad_scope_end();
  return out;
}

/* The coordinate direction e_i, shaped like x (small inputs only). */
static ad_tensor *coord(const checker *ck, int64_t i) {
  double v[SMALL_MAX] = {0};
  v[i] = 1.0;
  return ad_tensor_new(ck->ndim, ck->shape, v);
}

/* Values of D^len h at xp in the nesting `mode` into out: the levels take
 * the directions `fixed` in order, except that the slot vs (when not
 * NULL) varies, giving vs->count values.  A nesting with a tape serves the
 * slot in one pass, its outermost tape returning the whole gradient;
 * otherwise level 0 loops over the slot's directions. */
static bool block(const checker *ck, ad_tensor *xp, const char *mode, int len,
                  const slot *vs, ad_tensor *const *fixed, double *out) {
  ad_tensor *dirs[MAX_ORDER] = {0};
  int free_lv = -1, vary_lv = -1;
  if (vs) {
    const char *r = memchr(mode, 'r', (size_t)len);
    if (r)
      free_lv = (int)(r - mode);
    else
      vary_lv = 0;
  }
  for (int l = 0, j = 0; l < len; l++)
    if (l != free_lv && l != vary_lv) dirs[l] = fixed[j++];
  bool ok = true;
  ad_scope_begin();
  if (!vs) {
    ad_tensor *t = nest(ck, xp, mode, len, 0, dirs, -1);
    ok = t != NULL;
    if (ok) out[0] = ad_item(t);
  } else if (free_lv >= 0) {
    ad_tensor *g = nest(ck, xp, mode, len, 0, dirs, free_lv);
    ok = g != NULL;
    if (ok && !vs->dirs) ok = ad_read(g, out, ck->n) == AD_OK;
    for (int64_t s = 0; ok && vs->dirs && s < vs->count; s++) {
      ad_tensor *d = ad_sum_all(ad_mul(g, vs->dirs[s]));
      ok = d != NULL;
      if (ok) out[s] = ad_item(d);
    }
  } else {
    for (int64_t s = 0; ok && s < vs->count; s++) {
      ad_scope_begin();
      dirs[vary_lv] = vs->dirs ? vs->dirs[s] : coord(ck, s);
      ad_tensor *t =
          dirs[vary_lv] ? nest(ck, xp, mode, len, 0, dirs, -1) : NULL;
      ok = t != NULL;
      if (ok) out[s] = ad_item(t);
      ad_scope_end();
    }
  }
  ad_scope_end();
  return ok;
}

/* ------------------------------------------------------------------------
 * Finite differences of the order below, by Richardson extrapolation.
 *
 * Along the direction d (a coordinate scaled by its size, or a random
 * direction built the same way), the central differences D(s) = (F(s) -
 * F(-s)) / 2s at s = h, h/2, h/4 give two five-point estimates R(h) =
 * (4 D(h/2) - D(h)) / 3 and R(h/2), whose truncation errors shrink like
 * h^4.  The result is R(h/2); its error estimate is
 *   |R(h/2) - R(h)|          the truncation error of R(h), which is 16
 *                            times R(h/2)'s, plus the noise both carry,
 *   + noise                  the same noise seen a second, independent
 *                            way, from the even parts F(s) + F(-s) - 2 F(0)
 *                            (libad's values carry the rounding of every op
 *                            that made them, often far more than one ulp
 *                            of the result, and one sample of noise can be
 *                            small by chance),
 *   + 6 eps |F| / h          one ulp of the values (R(h/2)'s coefficients
 *                            sum to 6/h; |F| is the largest value of the
 *                            vector, or for f itself the sum of |w_i f_i|),
 *   + 12 eps |R| / h         x_i + t d_i is rounded to within eps |x_i|
 *                            <= 2 eps |d_i|: a relative error 2 eps / t in
 *                            each step.
 * This is GSL's gsl_deriv_central one level of extrapolation further (its
 * five-point result with a three-point truncation estimate becomes our
 * five-point estimate R(h), checked against R(h/2)), applied to a whole
 * vector of values with the same evaluations.  Where truncation dominates
 * for some component (f varies on a scale much finer than x), the step
 * shrinks by 8 and each component keeps its smallest error estimate.
 * GSL itself is not called: its refined step differs per component (n
 * evaluations of a vector where one serves all), and its error handler is
 * process-wide state that a library must not touch.
 * ---------------------------------------------------------------------- */

typedef struct fdcase {
  const checker *ck;
  int k;           /* order being checked: differentiate order k-1 */
  const slot *dir; /* the FD directions; a picks one */
  int64_t a;
  const char *ref;  /* nesting of length k-1 that computes the values */
  const slot *vary; /* slot of the values (NULL: one value) */
  ad_tensor *const *fixed;
  int64_t m; /* values per evaluation */
} fdcase;

/* The values at x + t d_a, and the size their rounding scales with. */
static bool fd_eval(const fdcase *c, double t, double *val, double *mag) {
  const checker *ck = c->ck;
  bool ok;
  ad_scope_begin();
  ad_tensor *xp;
  if (!c->dir->dirs) {
    double v[SMALL_MAX];
    memcpy(v, ck->xv, (size_t)ck->n * sizeof *v);
    v[c->a] += t * ck->scale[c->a];
    xp = ad_tensor_new(ck->ndim, ck->shape, v);
  } else {
    xp = ad_add(ck->x, ad_mul_scalar(c->dir->dirs[c->a], t));
  }
  *mag = 0;
  if (!xp) {
    ok = false;
  } else if (c->k == 1) {
    ad_tensor *h = objective(ck, xp, mag);
    ok = h != NULL;
    if (ok) val[0] = ad_item(h);
  } else {
    ok = block(ck, xp, c->ref, c->k - 1, c->vary, c->fixed, val);
    for (int64_t e = 0; ok && e < c->m; e++) *mag = fmax(*mag, fabs(val[e]));
  }
  ad_scope_end();
  return ok;
}

/* R(h/2) with its error estimates at step h: trunc from the odd parts
 * O(s) = F(s) - F(-s), noise from the even parts E(s) = F(s) + F(-s) -
 * 2 F(0), round from the values' sizes.  f0 holds F(0). */
static bool richardson(const fdcase *c, const double *f0, double h,
                       double *res, double *trunc, double *noise,
                       double *round) {
  double fp[3][SMALL_MAX], fm[3][SMALL_MAX], mag = 0;
  for (int j = 0; j < 3; j++) {
    double s = ldexp(h, -j), mp, mm;
    if (!fd_eval(c, s, fp[j], &mp) || !fd_eval(c, -s, fm[j], &mm))
      return false;
    mag = fmax(mag, fmax(mp, mm));
  }
  for (int64_t e = 0; e < c->m; e++) {
    double o[3], ev[3];
    for (int j = 0; j < 3; j++) {
      o[j] = fp[j][e] - fm[j][e];
      ev[j] = fp[j][e] + fm[j][e] - 2 * f0[e];
    }
    /* R(h) = (8 O(h/2) - O(h)) / 6h and R(h/2) = (16 O(h/4) - 2 O(h/2)) /
     * 6h differ by the odd residual O(h) - 10 O(h/2) + 16 O(h/4), which
     * cancels the s and s^3 terms and leaves truncation and noise. */
    double r_h = (8 * o[1] - o[0]) / (6 * h);
    double r_h2 = (16 * o[2] - 2 * o[1]) / (6 * h);
    res[e] = r_h2;
    trunc[e] = fabs(r_h2 - r_h);
    /* E(h) - 20 E(h/2) + 64 E(h/4) cancels the s^2 and s^4 terms and
     * leaves (to order h^6) noise alone, about 131 times the values' own
     * noise sigma, while R(h/2) carries 3.8 sigma / h: an independent
     * second look at noise, for values whose rounding exceeds eps |F|. */
    noise[e] = fabs(ev[0] - 20 * ev[1] + 64 * ev[2]) * (3.8 / 131.0) / h;
    round[e] = 6 * DBL_EPSILON * mag / h + 12 * DBL_EPSILON * fabs(r_h2) / h;
  }
  return true;
}

/* d/dt of the values at x + t d_a, t = 0, each with an error estimate;
 * f0 holds the values at x. */
static bool fd_vector(const fdcase *c, const double *f0, double *res,
                      double *err) {
  double r[SMALL_MAX], trunc[SMALL_MAX], noise[SMALL_MAX], round[SMALL_MAX];
  double h = FD_STEP;
  for (int level = 0; level <= FD_REFINE; level++, h /= 8) {
    if (!richardson(c, f0, h, r, trunc, noise, round)) return false;
    bool refine = false;
    for (int64_t e = 0; e < c->m; e++) {
      double err2 = trunc[e] + noise[e] + round[e];
      if (level == 0 || err2 < err[e]) {
        res[e] = r[e];
        err[e] = err2;
      }
      /* A step 8 times smaller cuts truncation 4096-fold and multiplies
       * noise by 8: worth it only where truncation clearly dominates. */
      if (trunc[e] > 64 * (noise[e] + round[e])) refine = true;
    }
    if (!refine) break;
  }
  return true;
}

/* ------------------------------------------------------------------------
 * Comparisons and the report
 * ---------------------------------------------------------------------- */

/* One compared value: its ratio to the tolerance and what to report. */
typedef struct finding {
  double ratio; /* |difference| / tolerance; infinite for NaN; -1: none */
  int order;
  char mode[16];
  char other[16]; /* "": against finite differences; else that nesting */
  int64_t a, b;   /* element: a, and b when the order has two open slots */
  double ad, ref, fd, fd_error, tolerance;
} finding;

typedef struct run {
  checker *ck;
  double atol, rtol;
  int64_t comparisons;
  int nestings;
  finding worst; /* largest ratio so far, all passing */
  /* where an error (not a failed comparison) happened */
  int err_order;
  char err_mode[16];
  char err_what[64];
} run;

static double ratio_of(double diff, double tol) {
  if (isnan(diff)) return INFINITY;
  if (diff == 0) return 0;
  return tol > 0 ? diff / tol : INFINITY;
}

/* snprintf into a message that may be cut at its end: a long element
 * name or number must not fail the build's truncation warnings. */
static void say(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, size, fmt, ap);
  va_end(ap);
}

/* The element's name in messages: D^k f[e_a, e_b, u1, ...] with e_i the
 * i-th coordinate direction, w_a the a-th random outer direction and u_j
 * the fixed random inner ones. */
static void element_name(const checker *ck, int k, int64_t a, int64_t b,
                         char *buf, size_t size) {
  char part[3][24];
  say(part[0], sizeof part[0], "%s%lld", ck->small ? "e" : "w", (long long)a);
  part[1][0] = '\0';
  if (b >= 0) say(part[1], sizeof part[1], ", e%lld", (long long)b);
  int nu = k - 1 - (b >= 0);
  say(part[2], sizeof part[2], "%s%s%s", nu >= 1 ? ", u1" : "",
      nu >= 2 ? ", u2" : "", nu >= 3 ? ", u3" : "");
  if (k == 1)
    say(buf, size, "D f[%s]", part[0]);
  else
    say(buf, size, "D^%d f[%s%s%s]", k, part[0], part[1], part[2]);
}

/* Compare one nesting's block with finite differences (ref NULL) or with
 * the first nesting's block; the worst element into *w.  Returns true
 * when every element passed. */
static bool compare(run *R, int k, const char *name, const char *other,
                    int64_t na, int64_t nb, bool has_b, const double *ad,
                    const double *ref, const double *fd, const double *fde,
                    finding *w) {
  w->ratio = -1;
  for (int64_t a = 0; a < na; a++)
    for (int64_t b = 0; b < nb; b++) {
      int64_t i = a * nb + b;
      double tol, diff;
      if (!ref) {
        tol = R->atol + R->rtol * fabs(fd[i]) + fde[i];
        diff = fabs(ad[i] - fd[i]);
        if (!isfinite(fd[i]) || !isfinite(fde[i])) diff = NAN;
      } else {
        tol = R->atol + R->rtol * fabs(ref[i]) +
              AGREE_REL * (fabs(ref[i]) + fabs(ad[i])) + AGREE_FD * fde[i];
        diff = fabs(ad[i] - ref[i]);
      }
      R->comparisons++;
      double r = ratio_of(diff, tol);
      if (r > w->ratio) {
        *w = (finding){.ratio = r,
                       .order = k,
                       .a = a,
                       .b = has_b ? b : -1,
                       .ad = ad[i],
                       .ref = ref ? ref[i] : fd[i],
                       .fd = fd[i],
                       .fd_error = fde[i],
                       .tolerance = tol};
        say(w->mode, sizeof w->mode, "%s", name);
        say(w->other, sizeof w->other, "%s", other ? other : "");
      }
    }
  return w->ratio <= 1.0;
}

static void fill_report(const run *R, const finding *w, bool failed,
                        ad_check_report *rep) {
  const checker *ck = R->ck;
  char el[64];
  rep->order = w->order;
  say(rep->mode, sizeof rep->mode, "%s", w->mode);
  rep->index = w->b >= 0 ? w->a * ck->n + w->b : w->a;
  rep->ad_value = w->ad;
  rep->fd_value = w->fd;
  rep->fd_error = w->fd_error;
  rep->tolerance = w->tolerance;
  rep->comparisons = R->comparisons;
  element_name(ck, w->order, w->a, w->b, el, sizeof el);
  double diff = fabs(w->ad - w->ref);
  if (failed && !(isfinite(w->fd) && isfinite(w->fd_error))) {
    say(rep->message, sizeof rep->message,
        "%s: order %d, %s: %s is %.10g by libad but %g by finite "
        "differences: is f defined and smooth around x?",
        OP, w->order, w->mode, el, w->ad, w->fd);
  } else if (failed && !w->other[0]) {
    say(rep->message, sizeof rep->message,
        "%s: order %d, %s: %s is %.10g by libad but %.10g by finite "
        "differences (error bound %.2g); the difference %.2g exceeds "
        "the tolerance %.2g",
        OP, w->order, w->mode, el, w->ad, w->fd, w->fd_error, diff,
        w->tolerance);
  } else if (failed) {
    say(rep->message, sizeof rep->message,
        "%s: order %d, %s disagrees with %s: %s is %.10g vs %.10g "
        "(finite differences %.10g); the difference %.2g exceeds the "
        "tolerance %.2g",
        OP, w->order, w->mode, w->other, el, w->ad, w->ref, w->fd, diff,
        w->tolerance);
  } else {
    say(rep->message, sizeof rep->message,
        "%s: %lld comparisons passed in %d nestings; closest to its "
        "tolerance: order %d, %s%s%s, %s: %.10g vs %.10g (difference "
        "%.2g, tolerance %.2g)",
        OP, (long long)R->comparisons, R->nestings, w->order, w->mode,
        w->other[0] ? " vs " : "", w->other, el, w->ad, w->ref, diff,
        w->tolerance);
  }
}

/* ------------------------------------------------------------------------
 * One order: finite differences once, then every nesting against them
 * and against the first nesting.
 *
 * Small inputs (n <= SMALL_MAX): order 1 is the gradient, element a along
 * e_a; order k >= 2 is the n x n matrix D^k h[e_a, e_b, u_1..u_{k-2}], the
 * full Hessian at order 2 and the Hessian of D^(k-2) h[u..] beyond, whose
 * column a is the finite difference along e_a of the gradient of
 * D^(k-2) h[u..] (computed by libad).  Large inputs: D^k h[w_a, u_1..
 * u_{k-1}] for NRAND random w_a, against the finite difference along w_a
 * of D^(k-1) h[u..].
 * ---------------------------------------------------------------------- */

/* Non-comparison failure (f or libad failed): remember where, with the
 * nesting that was running (for finite differences, the one computing the
 * values; "" for f itself). */
static ad_status failed_in(run *R, int k, const char *mode, const char *what) {
  R->err_order = k;
  say(R->err_mode, sizeof R->err_mode, "%s", mode);
  say(R->err_what, sizeof R->err_what, "%s", what);
  ad_status st = ad_error();
  return st != AD_OK ? st
                     : ad__error(AD_EINTERNAL, "%s: evaluation failed", OP);
}

static ad_status check_order(run *R, int k, finding *fail) {
  checker *ck = R->ck;
  bool has_b = ck->small && k >= 2;
  int64_t na = ck->small ? ck->n : NRAND, nb = has_b ? ck->n : 1;
  slot A = {na, ck->small ? NULL : ck->outer};
  slot B = {ck->n, NULL};
  ad_tensor *const *u = ck->inner;
  _Static_assert(MAX_BLOCK >= NRAND, "block sizes");
  double fd[MAX_BLOCK], fde[MAX_BLOCK], first[MAX_BLOCK], ad[MAX_BLOCK];

  char ref[MAX_ORDER + 1], refname[16];
  nesting_code(ck->modes, k - 1, 0, ref);
  nesting_name(ref, refname);
  fdcase c = {ck, k, &A, 0, ref, has_b ? &B : NULL, u, nb};
  double f0[SMALL_MAX], mag0;
  bool ok0 = fd_eval(&c, 0.0, f0, &mag0);
  for (int64_t a = 0; a < na; a++) {
    c.a = a;
    if (!ok0 || !fd_vector(&c, f0, fd + a * nb, fde + a * nb)) {
      char what[64];
      say(what, sizeof what, "finite differences%s%s", k > 1 ? " of " : "",
          k > 1 ? refname : "");
      return failed_in(R, k, refname, what);
    }
    /* Coordinate steps were scaled by s_a: back to d/dx_a. */
    double s = ck->small ? ck->scale[a] : 1.0;
    for (int64_t b = 0; b < nb; b++) {
      fd[a * nb + b] /= s;
      fde[a * nb + b] = FD_SAFETY * fde[a * nb + b] / s;
    }
  }

  int count = nesting_count(ck->modes, k);
  char firstname[16] = "";
  for (int idx = 0; idx < count; idx++) {
    char code[MAX_ORDER + 1], name[16];
    nesting_code(ck->modes, k, idx, code);
    nesting_name(code, name);
    bool ok = true;
    if (has_b) {
      for (int64_t a = 0; ok && a < na; a++) {
        ad_scope_begin();
        ad_tensor *fixed[MAX_ORDER] = {coord(ck, a)};
        for (int j = 0; j < k - 2; j++) fixed[1 + j] = u[j];
        ok = fixed[0] && block(ck, ck->x, code, k, &B, fixed, ad + a * nb);
        ad_scope_end();
      }
    } else {
      ok = block(ck, ck->x, code, k, &A, u, ad);
    }
    if (!ok) return failed_in(R, k, name, name);
    R->nestings++;
    if (!compare(R, k, name, NULL, na, nb, has_b, ad, NULL, fd, fde, fail))
      return AD_ECHECK;
    if (fail->ratio > R->worst.ratio) R->worst = *fail;
    if (idx == 0) {
      memcpy(first, ad, (size_t)(na * nb) * sizeof *ad);
      say(firstname, sizeof firstname, "%s", name);
      continue;
    }
    if (!compare(R, k, name, firstname, na, nb, has_b, ad, first, fd, fde,
                 fail))
      return AD_ECHECK;
    if (fail->ratio > R->worst.ratio) R->worst = *fail;
  }
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * Setup and the public entry
 * ---------------------------------------------------------------------- */

/* A tensor shaped like x with entries +-[0.5, 1) times the coordinate
 * scales, so that a step t moves every coordinate by a fraction of its
 * own size. */
static ad_tensor *random_direction(const checker *ck, rng *r, double *buf) {
  for (int64_t i = 0; i < ck->n; i++) buf[i] = rng_weight(r) * ck->scale[i];
  return ad_tensor_new(ck->ndim, ck->shape, buf);
}

static ad_status bad(const char *fmt, double v) {
  return ad__error(AD_EINVAL, fmt, OP, v);
}

static ad_status validate(ad_fn f, ad_tensor *x, int order, unsigned modes,
                          double atol, double rtol) {
  if (!f) return ad__error(AD_EINVAL, "%s: the function is NULL", OP);
  if (!x) {
    ad__error_null_arg(OP, "x");
    return ad_error();
  }
  if (order < 1 || order > MAX_ORDER)
    return ad__error(AD_EINVAL, "%s: order %d is outside 1..%d", OP, order,
                     MAX_ORDER);
  if (modes == 0 || (modes & ~(AD_CHECK_FWD | AD_CHECK_REV)))
    return ad__error(AD_EINVAL,
                     "%s: modes 0x%x must be a non-empty combination of "
                     "AD_CHECK_FWD and AD_CHECK_REV",
                     OP, modes);
  if (!(atol >= 0)) return bad("%s: atol %g must be >= 0", atol);
  if (!(rtol >= 0)) return bad("%s: rtol %g must be >= 0", rtol);
  if (ad_numel(x) < 1)
    return ad__error(AD_EINVAL, "%s: x has no elements", OP);
  /* Paused tapes would record nothing: every derivative would read 0. */
  if (ad__contexts.global_pause)
    return ad__error(AD_ESTATE,
                     "%s: recording is paused (ad_pause_recording); resume "
                     "it to check derivatives",
                     OP);
  return AD_OK;
}

/* Read x, its scales, f(x)'s shape, the weights and the directions. */
static ad_status setup(checker *ck, ad_tensor *x, int order) {
  ck->n = ad_numel(x);
  ck->ndim = ad_ndim(x);
  memcpy(ck->shape, ad_shape(x), (size_t)ck->ndim * sizeof *ck->shape);
  ck->small = ck->n <= SMALL_MAX;
  ck->xv = malloc((size_t)ck->n * sizeof *ck->xv);
  ck->scale = malloc((size_t)ck->n * sizeof *ck->scale);
  double *buf = malloc((size_t)ck->n * sizeof *buf);
  ad_status st = AD_OK;
  if (!ck->xv || !ck->scale || !buf) {
    st = ad__error(AD_ENOMEM, "%s: out of memory for %lld inputs", OP,
                   (long long)ck->n);
    goto done;
  }
  if ((st = ad_read(x, ck->xv, ck->n)) != AD_OK) goto done;
  double mean = 0;
  for (int64_t i = 0; i < ck->n; i++) {
    if (!isfinite(ck->xv[i])) {
      st = ad__error(AD_EINVAL, "%s: x[%lld] is %g; x must be finite", OP,
                     (long long)i, ck->xv[i]);
      goto done;
    }
    mean += fabs(ck->xv[i]) / (double)ck->n;
  }
  if (!(mean > 0)) mean = 1.0;
  for (int64_t i = 0; i < ck->n; i++)
    ck->scale[i] = ck->xv[i] != 0 ? fabs(ck->xv[i]) : mean;
  ck->x = ad_tensor_new(ck->ndim, ck->shape, ck->xv);
  if (!ck->x) {
    st = ad_error();
    goto done;
  }

  /* f(x) fixes the output shape and the weights. */
  int depth = ad__contexts.n;
  ad_tensor *y = ck->f(ck->x, ck->ctx);
  if (ad__contexts.n != depth) {
    st = ad__error(AD_ESTATE,
                   "%s: the function left a tape or forward level open", OP);
    goto done;
  }
  if (!y) {
    st = ad_error() != AD_OK
             ? ad_error()
             : ad__error(AD_EINVAL, "%s: the function returned NULL", OP);
    goto done;
  }
  ck->yndim = ad_ndim(y);
  memcpy(ck->yshape, ad_shape(y), (size_t)ck->yndim * sizeof *ck->yshape);
  int64_t ny = ad_numel(y);
  if (ny != 1) {
    double *wv = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *wv);
    if (!wv) {
      st =
          ad__error(AD_ENOMEM, "%s: out of memory for the output weights", OP);
      goto done;
    }
    rng rw = {SEED_WEIGHTS};
    for (int64_t i = 0; i < ny; i++) wv[i] = rng_weight(&rw);
    ck->w = ad_tensor_new(ck->yndim, ck->yshape, wv);
    free(wv);
    if (!ck->w) {
      st = ad_error();
      goto done;
    }
  }
  double mag = 0;
  ad_tensor *h = objective(ck, ck->x, &mag);
  if (!h) {
    st = ad_error();
    goto done;
  }
  if (!isfinite(ad_item(h)) || !isfinite(mag)) {
    st = ad__error(AD_EINVAL,
                   "%s: f(x) is not finite; x must lie in f's "
                   "domain",
                   OP);
    goto done;
  }

  /* Outer directions (large x), then inner ones: k - 2 at order k for
   * small x, k - 1 for large; each set is the same whatever the order. */
  rng rd = {SEED_DIRS};
  for (int a = 0; a < NRAND && st == AD_OK && !ck->small; a++)
    if (!(ck->outer[a] = random_direction(ck, &rd, buf))) st = ad_error();
  int ninner = ck->small ? order - 2 : order - 1;
  for (int j = 0; j < ninner && st == AD_OK; j++)
    if (!(ck->inner[j] = random_direction(ck, &rd, buf))) st = ad_error();
done:
  free(buf);
  return st;
}

ad_status ad_check_grads(ad_fn f, void *ctx, ad_tensor *x, int order,
                         unsigned modes, double atol, double rtol,
                         ad_check_report *report) {
  ad_check_report rep;
  memset(&rep, 0, sizeof rep);
  ad_status st = validate(f, x, order, modes, atol, rtol);
  if (st != AD_OK) {
    say(rep.message, sizeof rep.message, "%s", ad_error_message());
    if (report) *report = rep;
    return st;
  }

  checker ck = {.f = f, .ctx = ctx, .modes = modes};
  run R = {.ck = &ck, .atol = atol, .rtol = rtol};
  R.worst.ratio = -1;
  finding fail = {.ratio = -1};
  ad_scope_begin();
  st = setup(&ck, x, order);
  if (st != AD_OK)
    say(rep.message, sizeof rep.message, "%s", ad_error_message());
  for (int k = 1; k <= order && st == AD_OK; k++)
    st = check_order(&R, k, &fail);

  if (st == AD_ECHECK) {
    fill_report(&R, &fail, true, &rep);
    ad__error(AD_ECHECK, "%s", rep.message);
  } else if (st == AD_OK) {
    fill_report(&R, &R.worst, false, &rep);
  } else if (R.err_order) {
    rep.order = R.err_order;
    say(rep.mode, sizeof rep.mode, "%s", R.err_mode);
    rep.comparisons = R.comparisons;
    say(rep.message, sizeof rep.message, "%s: order %d, %s: %s", OP,
        R.err_order, R.err_what, ad_error_message());
  }
  ad_scope_end();
  free(ck.xv);
  free(ck.scale);
  if (report) *report = rep;
  return st;
}
