/* Custom gradients, checkpointing, anomaly detection and a tape drawn as a
 * Graphviz graph: the examples of the guide's chapter on custom gradients.
 *
 *   custom_gradients            print everything, the tape's DOT included
 *   custom_gradients tape.dot   write the tape there instead (render it
 *                               with `dot -Tpng tape.dot -o tape.png`)
 */
#include <ad.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Stop with the library's own message when a call fails. */
static int failed(const char *what) {
  fprintf(stderr, "custom_gradients: %s: %s\n", what, ad_error_message());
  return 1;
}

static void heading(const char *title) { printf("\n== %s ==\n", title); }

/* NaN prints as "nan" or "-nan" depending on its sign bit: show one. */
static double unsigned_nan(double v) { return isnan(v) ? fabs(v) : v; }

static ad_tensor *vector(int64_t n, const double *values) {
  return ad_tensor_new(1, (const int64_t[]){n}, values);
}

/* Apply a one-input, one-output custom op; NULL on error. */
static ad_tensor *apply1(const ad_custom_op *op, void *user, ad_tensor *x) {
  ad_tensor *y = NULL;
  return ad_custom_apply(op, user, &x, &y) == AD_OK ? y : NULL;
}

/* ---- 1. log(1 + exp(x)) ------------------------------------------------- */

/* The naive formula.  exp(x) overflows to inf once x > 709.78 (the largest
 * double is about e^709.78), and then the chain rule multiplies
 * d log(u)/du = 1/inf = 0 by d exp(x)/dx = inf: 0 * inf = NaN.
 * TensorFlow's guide shows the same failure at x = 100, because it works
 * in float32, whose exp overflows above 88.7; libad computes in double, so
 * the failure needs a larger x, and we use 1000. */
static ad_tensor *log1pexp_naive(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_log(ad_add_scalar(ad_exp(x), 1.0));
}

/* The custom op: a stable forward, max(x, 0) + log1p(exp(-|x|)), and a
 * VJP, g * sigmoid(x).  The forward function's own ops are not recorded;
 * the op is one node whose derivative is the VJP. */
static ad_status log1pexp_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = ad_add(ad_relu(in[0]), ad_log1p(ad_exp(ad_neg(ad_abs(in[0])))));
  return out[0] ? AD_OK : ad_error();
}

static ad_status log1pexp_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                              ad_tensor **gin, void *user) {
  (void)user;
  /* ad_custom_input gives the op's input as the tapes see it, so the rule
   * is itself differentiable: second derivatives work too. */
  gin[0] = ad_mul(gout[0], ad_sigmoid(ad_custom_input(c, 0)));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op log1pexp_op = {
    .name = "log1pexp", .nin = 1, .nout = 1,
    .forward = log1pexp_forward, .vjp = log1pexp_vjp, .jvp = NULL};

static ad_tensor *log1pexp(ad_tensor *x, void *ctx) {
  (void)ctx;
  return apply1(&log1pexp_op, NULL, x);
}

static ad_tensor *d_log1pexp(ad_tensor *x, void *ctx) {
  return ad_grad(log1pexp, ctx, x);
}

static int log1pexp_example(void) {
  heading("log(1 + exp(x)) with a custom gradient");
  ad_scope_begin();
  const double xs[2] = {0.0, 1000.0};
  for (int i = 0; i < 2; i++) {
    ad_tensor *x = ad_scalar(xs[i]);
    ad_tensor *naive = ad_grad(log1pexp_naive, NULL, x);
    ad_tensor *custom = ad_grad(log1pexp, NULL, x);
    if (!naive || !custom) return failed("log1pexp");
    printf("x = %-6g naive gradient = %-4g custom gradient = %g\n", xs[i],
           unsigned_nan(ad_item(naive)), ad_item(custom));
  }
  /* Only a VJP was given: forward mode derives the JVP from it, and the
   * VJP's own ops make the second derivative. */
  ad_tensor *x = ad_scalar(2.0);
  ad_tensor *jvp = ad_jvp(log1pexp, NULL, x, ad_scalar(1.0), NULL);
  ad_tensor *second = ad_grad(d_log1pexp, NULL, x);
  if (!jvp || !second) return failed("log1pexp derivatives");
  printf("at x = 2: forward-mode derivative = %.10f (sigmoid(2) = %.10f)\n",
         ad_item(jvp), 1 / (1 + exp(-2.0)));
  printf("          second derivative       = %.10f (s (1 - s)  = %.10f)\n",
         ad_item(second), exp(-2.0) / ((1 + exp(-2.0)) * (1 + exp(-2.0))));
  ad_scope_end();
  return 0;
}

/* ---- 2. Gradient clipping ----------------------------------------------- */

/* The identity on the way forward; on the way back the cotangent is scaled
 * to a norm of at most 0.5 (TensorFlow's clip_gradients example). */
static ad_status identity_forward(ad_custom_ctx *c, ad_tensor *const *in,
                                  ad_tensor **out, void *user) {
  (void)c;
  (void)user;
  out[0] = in[0];
  return AD_OK;
}

static ad_status clip_by_norm_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                                  ad_tensor **gin, void *user) {
  (void)c;
  const double *max_norm = user;
  ad_tensor *norm = ad_sqrt(ad_sum_all(ad_square(gout[0])));
  ad_tensor *limit = ad_scalar(*max_norm);
  /* g * max_norm / max(|g|, max_norm): no division by zero at g = 0. */
  gin[0] = ad_mul(gout[0], ad_div(limit, ad_maximum(norm, limit)));
  return gin[0] ? AD_OK : ad_error();
}

/* Forward mode passes tangents through unclipped.  This rule is needed:
 * without it forward mode would derive a JVP from the VJP by transposing
 * it at a zero cotangent, which assumes the VJP is linear in the cotangent
 * (clipping is not) and meets the norm's kink at zero (NaN). */
static ad_status identity_jvp(ad_custom_ctx *c, ad_tensor *const *tin,
                              ad_tensor **tout, void *user) {
  (void)c;
  (void)user;
  tout[0] = tin[0];
  return AD_OK;
}

static const ad_custom_op clip_op = {
    .name = "clip_gradient", .nin = 1, .nout = 1,
    .forward = identity_forward, .vjp = clip_by_norm_vjp,
    .jvp = identity_jvp};

static double max_norm = 0.5;

static ad_tensor *clip_gradient(ad_tensor *x) {
  return apply1(&clip_op, &max_norm, x);
}

/* sum(clip_gradient(x) * w): the gradient would be w, unclipped. */
static ad_tensor *clipped_loss(ad_tensor *x, void *w) {
  return ad_sum_all(ad_mul(clip_gradient(x), w));
}

static int clipping_example(void) {
  heading("Gradient clipping");
  ad_scope_begin();
  ad_tensor *x = vector(2, (const double[]){1.0, 2.0});
  ad_tensor *w = vector(2, (const double[]){3.0, 4.0});
  ad_tensor *value = NULL;
  ad_tensor *g = ad_value_and_grad(clipped_loss, w, x, &value);
  if (!g) return failed("clipping");
  printf("loss = %g; its gradient (3, 4) has norm 5, clipped to norm 0.5:\n",
         ad_item(value));
  ad_print(g);
  ad_scope_end();
  return 0;
}

/* ---- 3. An implicit function -------------------------------------------- */

/* x(theta) solves (A + diag(theta)) x = b.  Its forward pass is a linear
 * solve; its VJP needs no derivative of the solver, only one more solve:
 * with A(theta)^T lambda = g, dL/dA = -lambda x^T, and since theta sits on
 * A's diagonal, dL/dtheta = -lambda * x. */
typedef struct linear_system {
  ad_tensor *a, *b;
} linear_system;

static ad_tensor *system_matrix(const linear_system *s, ad_tensor *theta) {
  return ad_add(s->a, ad_mul(ad_eye(ad_numel(theta)), theta));
}

static ad_status solve_forward(ad_custom_ctx *c, ad_tensor *const *in,
                               ad_tensor **out, void *user) {
  (void)c;
  const linear_system *s = user;
  out[0] = ad_solve(system_matrix(s, in[0]), s->b);
  return out[0] ? AD_OK : ad_error();
}

static ad_status solve_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                           ad_tensor **gin, void *user) {
  ad_tensor *theta = ad_custom_input(c, 0), *x = ad_custom_output(c, 0);
  ad_tensor *a = system_matrix(user, theta);
  ad_tensor *lambda = ad_solve(ad_transpose(a), gout[0]);
  gin[0] = ad_neg(ad_mul(lambda, x));
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op solve_op = {
    .name = "implicit_solve", .nin = 1, .nout = 1,
    .forward = solve_forward, .vjp = solve_vjp, .jvp = NULL};

/* L(theta) = sum(x(theta)). */
static ad_tensor *implicit_loss(ad_tensor *theta, void *system) {
  return ad_sum_all(apply1(&solve_op, system, theta));
}

static int implicit_example(void) {
  heading("An implicit function: x(theta) solves (A + diag theta) x = b");
  ad_scope_begin();
  linear_system s = {
      ad_tensor_new(2, (const int64_t[]){3, 3},
                    (const double[]){4, 1, 0, 1, 3, 1, 0.5, 1, 5}),
      vector(3, (const double[]){1, 2, 3})};
  double theta[3] = {0.5, -0.2, 1.0};
  ad_tensor *g = ad_grad(implicit_loss, &s, vector(3, theta));
  if (!g) return failed("implicit function");
  double ad_g[3], fd_g[3];
  ad_read(g, ad_g, 3);
  const double h = 1e-6;
  for (int i = 0; i < 3; i++) {
    theta[i] += h;
    double up = ad_item(implicit_loss(vector(3, theta), &s));
    theta[i] -= 2 * h;
    double down = ad_item(implicit_loss(vector(3, theta), &s));
    theta[i] += h;
    fd_g[i] = (up - down) / (2 * h);
  }
  printf("dL/dtheta by the adjoint solve:    % .10f % .10f % .10f\n",
         ad_g[0], ad_g[1], ad_g[2]);
  printf("dL/dtheta by central differences:  % .10f % .10f % .10f\n",
         fd_g[0], fd_g[1], fd_g[2]);
  ad_scope_end();
  return 0;
}

/* ---- 4. Checkpointing --------------------------------------------------- */

/* One block of a long chain: six elementwise ops. */
static ad_tensor *block(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_add(ad_mul_scalar(ad_tanh(x), 0.9),
                ad_mul_scalar(ad_sin(ad_mul(x, x)), 0.1));
}

typedef struct chain {
  int blocks;
  bool checkpoint;
} chain;

static ad_tensor *chain_loss(ad_tensor *x, void *ctx) {
  const chain *c = ctx;
  for (int i = 0; i < c->blocks && x; i++)
    x = c->checkpoint ? ad_checkpoint(block, NULL, x) : block(x, NULL);
  return ad_sum_all(x);
}

static int checkpoint_example(void) {
  heading("Checkpointing a chain of 100 blocks");
  ad_scope_begin();
  ad_tensor *x = ad_linspace(-2.0, 2.0, 1000);
  int64_t nodes[2];
  ad_tensor *grads[2];
  for (int k = 0; k < 2; k++) {
    chain c = {100, k == 1};
    ad_tape *tape = ad_tape_begin(0);
    ad_tape_watch(tape, x);
    ad_tensor *y = chain_loss(x, &c);
    ad_tape_end(tape);
    nodes[k] = ad_tape_size(tape);
    grads[k] = ad_tape_gradient(tape, y, x);
    ad_tape_free(tape);
    if (!grads[k]) return failed("checkpointed chain");
  }
  ad_tensor *diff = ad_max(ad_abs(ad_sub(grads[0], grads[1])), 0, NULL, false);
  if (!diff) return failed("comparing gradients");
  printf("plain:        %lld nodes on the tape\n", (long long)nodes[0]);
  printf("checkpointed: %lld nodes on the tape\n", (long long)nodes[1]);
  printf("largest difference between the two gradients: %g\n",
         ad_item(diff));
  ad_scope_end();
  return 0;
}

/* ---- 5. Anomaly detection ----------------------------------------------- */

/* sum(x log x): at x = 0 log gives -inf, and 0 * -inf = NaN. */
static ad_tensor *entropy_term(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(x, ad_log(x)));
}

static int anomaly_example(void) {
  heading("Anomaly detection");
  ad_scope_begin();
  ad_tensor *x = vector(3, (const double[]){0.5, 0.0, 2.0});
  ad_tensor *value = NULL;
  ad_tensor *g = ad_value_and_grad(entropy_term, NULL, x, &value);
  if (!g) return failed("entropy");
  printf("without anomaly mode: value %g, gradient ",
         unsigned_nan(ad_item(value)));
  ad_print(g);

  bool was = ad_set_anomaly_detection(true);
  g = ad_value_and_grad(entropy_term, NULL, x, &value);
  ad_set_anomaly_detection(was);
  if (g) {
    fprintf(stderr, "custom_gradients: anomaly mode missed log(0)\n");
    return 1;
  }
  printf("with anomaly mode:    the call fails (AD_ECHECK = %d): %s\n",
         (int)ad_error(), ad_error_message());
  ad_error_clear();
  ad_scope_end();
  return 0;
}

/* ---- 6. Seeing the tape ------------------------------------------------- */

static int tape_example(const char *path) {
  heading("The tape as a Graphviz graph");
  ad_scope_begin();
  ad_tensor *x = vector(3, (const double[]){-1.0, 0.5, 2.0});
  ad_var *w = ad_var_new("w", ad_ones(1, (const int64_t[]){3}));
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(tape, x);
  /* A variable and a watched tensor in, a custom op, a checkpointed
   * block, clipping, and a constant weight before the sum. */
  ad_tensor *weight = vector(3, (const double[]){1.0, -1.0, 0.5});
  ad_tensor *h = log1pexp(ad_mul(ad_var_value(w), x), NULL);
  ad_tensor *z = clip_gradient(ad_checkpoint(block, NULL, h));
  ad_tensor *loss = ad_sum_all(ad_mul(z, weight));
  ad_tape_end(tape);
  if (!loss) {
    ad_tape_free(tape);
    ad_var_free(w);
    return failed("the small tape");
  }
  printf("%lld nodes recorded\n", (long long)ad_tape_size(tape));
  FILE *f = path ? fopen(path, "w") : stdout;
  ad_status st = f ? ad_tape_write_dot(tape, f) : AD_EIO;
  if (f && f != stdout && fclose(f) != 0 && st == AD_OK) st = AD_EIO;
  ad_tape_free(tape);
  ad_var_free(w);
  if (st != AD_OK) {
    fprintf(stderr, "custom_gradients: cannot write %s: %s\n",
            path ? path : "stdout",
            ad_error() ? ad_error_message() : strerror(errno));
    return 1;
  }
  if (path) printf("wrote %s; render it with: dot -Tpng %s -o tape.png\n",
                   path, path);
  ad_scope_end();
  return 0;
}

int main(int argc, char **argv) {
  const char *dot_path = argc > 1 ? argv[1] : NULL;
  ad_scope_begin();
  int rc = log1pexp_example() || clipping_example() || implicit_example() ||
           checkpoint_example() || anomaly_example() || tape_example(dot_path);
  ad_scope_end();
  return rc;
}
