/* Tests of the built-in optimizers: updates against their formulas,
 * convex and non-convex problems, state save and restore, errors. */
#include <stdlib.h>

#include "testutil.h"

#include "ad/optim.h"

/* The example is tested as it is (its main is left out). */
#define AD_EXAMPLE_NO_MAIN
#include "../examples/optimizers.c"

/* ---- helpers ----------------------------------------------------------- */

static ad_var *var1(const char *name, int64_t n, const double *v) {
  return ad_var_new(name, ad_tensor_new(1, SHAPE(n), v));
}

static double value_at(ad_var *v, int64_t i) {
  double out[16];
  ad_tensor *t = ad_var_value(v);
  assert_true(ad_numel(t) <= 16);
  ad_read(t, out, ad_numel(t));
  return out[i];
}

/* ---- problems ---------------------------------------------------------- */

/* An ill-conditioned convex quadratic over two variables a (2,) and b
 * (3,): sum_i w_i (z_i - c_i)^2 with weights 1..100. */
typedef struct quadratic {
  ad_var *a, *b;
} quadratic;

static const double quad_c[5] = {1, -2, 3, 0.5, -1};

static ad_tensor *quad_loss(void *ctx) {
  quadratic *q = ctx;
  ad_tensor *parts[2] = {ad_var_value(q->a), ad_var_value(q->b)};
  ad_tensor *z = ad_concat(2, parts, 0);
  ad_tensor *c = ad_tensor_new(1, SHAPE(5), quad_c);
  ad_tensor *w = ad_tensor_new(1, SHAPE(5), VALUES(1, 3, 10, 30, 100));
  return ad_sum_all(ad_mul(w, ad_square(ad_sub(z, c))));
}

/* Rosenbrock in 6 dimensions over variables of shapes (2,) and (2, 2):
 * non-convex, minimum at all ones. */
static ad_tensor *rosen6_loss(void *ctx) {
  quadratic *q = ctx;
  ad_tensor *parts[2] = {ad_var_value(q->a),
                         ad_reshape(ad_var_value(q->b), 1, SHAPE(4))};
  ad_tensor *x = ad_concat(2, parts, 0);
  ad_tensor *head = ad_slice(x, 0, 0, 5, 1), *tail = ad_slice(x, 0, 1, 6, 1);
  ad_tensor *valley = ad_sub(tail, ad_square(head));
  return ad_sum_all(ad_add(ad_mul_scalar(ad_square(valley), 100.0),
                           ad_square(ad_add_scalar(ad_neg(head), 1.0))));
}

static quadratic rosen6_start(void) {
  return (quadratic){var1("a", 2, VALUES(-1.2, 1.0)),
                     ad_var_new("b", ad_tensor_new(2, SHAPE(2, 2),
                                                   VALUES(-1.2, 1.0, -1.2,
                                                          1.0)))};
}

static quadratic quad_start(void) {
  return (quadratic){var1("a", 2, VALUES(0, 0)),
                     var1("b", 3, VALUES(0, 0, 0))};
}

static void quad_free(quadratic *q) {
  ad_var_free(q->a);
  ad_var_free(q->b);
}

/* Run `steps` minimize steps; returns the largest distance to c. */
static double run_quadratic(ad_optimizer *opt, int steps) {
  quadratic q = quad_start();
  ad_var *vars[2] = {q.a, q.b};
  for (int s = 0; s < steps; s++) {
    ad_scope_begin();
    assert_int_equal(ad_optimizer_minimize(opt, quad_loss, &q, 2, vars,
                                           NULL),
                     AD_OK);
    ad_scope_end();
  }
  double err = 0;
  for (int i = 0; i < 5; i++) {
    double z = i < 2 ? value_at(q.a, i) : value_at(q.b, i - 2);
    err = fmax(err, fabs(z - quad_c[i]));
  }
  quad_free(&q);
  return err;
}

/* ---- updates against their formulas ----------------------------------- */

static void sgd_without_momentum_is_gradient_descent(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_sgd(0.1, 0.0);
  ad_var *v = var1("w", 2, VALUES(1.0, -2.0));
  ad_tensor *g = ad_tensor_new(1, SHAPE(2), VALUES(0.5, 4.0));
  assert_int_equal(ad_optimizer_step(opt, 1, &v, &g), AD_OK);
  assert_tensor_near(ad_var_value(v), VALUES(0.95, -2.4), 2, 1e-15);
  assert_int_equal(ad_optimizer_iterations(opt), 1);
  /* No momentum, no velocity in the state. */
  assert_int_equal(ad_optimizer_state_count(opt), 2);
  ad_var_free(v);
  ad_optimizer_free(opt);
}

static void sgd_momentum_follows_pytorch_formula(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_sgd(0.1, 0.9);
  ad_var *v = ad_var_new("w", ad_scalar(1.0));
  const double gs[3] = {1.0, 2.0, -1.0};
  double x = 1.0, vel = 0;
  for (int k = 0; k < 3; k++) {
    ad_tensor *g = ad_scalar(gs[k]);
    assert_int_equal(ad_optimizer_step(opt, 1, &v, &g), AD_OK);
    vel = k == 0 ? gs[k] : 0.9 * vel + gs[k];
    x -= 0.1 * vel;
    assert_true(fabs(ad_item(ad_var_value(v)) - x) < 1e-15);
  }
  ad_var_free(v);
  ad_optimizer_free(opt);
}

static void adam_follows_the_paper(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_adam(0.01, 0.9, 0.999, 1e-8);
  ad_var *v = ad_var_new("w", ad_scalar(0.5));
  const double gs[3] = {0.3, -1.0, 2.0};
  double x = 0.5, m = 0, s = 0;
  for (int k = 0; k < 3; k++) {
    ad_tensor *g = ad_scalar(gs[k]);
    assert_int_equal(ad_optimizer_step(opt, 1, &v, &g), AD_OK);
    m = 0.9 * m + 0.1 * gs[k];
    s = 0.999 * s + 0.001 * gs[k] * gs[k];
    double mh = m / (1 - pow(0.9, k + 1)), sh = s / (1 - pow(0.999, k + 1));
    x -= 0.01 * mh / (sqrt(sh) + 1e-8);
    assert_true(fabs(ad_item(ad_var_value(v)) - x) < 1e-15);
  }
  ad_var_free(v);
  ad_optimizer_free(opt);
}

static void lbfgs_first_step_is_the_scaled_gradient(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_lbfgs(1.0, 5);
  ad_var *v = var1("w", 2, VALUES(1.0, 1.0));
  ad_tensor *g = ad_tensor_new(1, SHAPE(2), VALUES(3.0, -1.0));
  assert_int_equal(ad_optimizer_step(opt, 1, &v, &g), AD_OK);
  /* -g / sum|g| = (-0.75, 0.25). */
  assert_tensor_near(ad_var_value(v), VALUES(0.25, 1.25), 2, 1e-15);
  ad_var_free(v);
  ad_optimizer_free(opt);
}

static void lbfgs_solves_a_quadratic_like_newton(void **state) {
  (void)state;
  /* On a quadratic in n variables L-BFGS with enough history reaches the
   * minimum in about n + 1 line-searched steps. */
  ad_optimizer *opt = ad_optimizer_lbfgs(1.0, 10);
  assert_true(run_quadratic(opt, 30) < 1e-8);
  ad_optimizer_free(opt);
}

/* ---- convex and non-convex problems ------------------------------------ */

static void every_optimizer_solves_an_ill_conditioned_quadratic(void **s) {
  (void)s;
  ad_optimizer *sgd = ad_optimizer_sgd(0.004, 0.9);
  ad_optimizer *adam = ad_optimizer_adam(0.05, 0.9, 0.999, 1e-8);
  ad_optimizer *lbfgs = ad_optimizer_lbfgs(1.0, 5);
  assert_true(run_quadratic(sgd, 600) < 1e-6);
  assert_true(run_quadratic(adam, 3000) < 1e-4);
  assert_true(run_quadratic(lbfgs, 40) < 1e-8);
  ad_optimizer_free(sgd);
  ad_optimizer_free(adam);
  ad_optimizer_free(lbfgs);
}

static void example_reaches_rosenbrock_minimum_with_each_optimizer(void **s) {
  (void)s;
  struct {
    ad_optimizer *opt;
    long max_steps;
    double tol;
  } runs[3] = {{ad_optimizer_lbfgs(1.0, 10), 100, 1e-4},
               {ad_optimizer_adam(0.02, 0.9, 0.999, 1e-8), 20000, 1e-4},
               {ad_optimizer_sgd(1e-3, 0.9), 20000, 1e-4}};
  for (int i = 0; i < 3; i++) {
    double xy[2];
    long steps;
    assert_int_equal(optim_run(runs[i].opt, runs[i].max_steps, 1, NULL, xy,
                               &steps),
                     AD_OK);
    if (fabs(xy[0] - 1) > runs[i].tol || fabs(xy[1] - 1) > runs[i].tol) {
      print_error("%s stopped at (%g, %g) after %ld steps\n",
                  ad_optimizer_name(runs[i].opt), xy[0], xy[1], steps);
      fail();
    }
    assert_true(steps < runs[i].max_steps);
    ad_optimizer_free(runs[i].opt);
  }
}

static void example_prints_progress(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  FILE *log = open_memstream(&text, &len);
  ad_optimizer *opt = ad_optimizer_lbfgs(1.0, 10);
  double xy[2];
  long steps;
  optim_run(opt, 100, 1, log, xy, &steps);
  fclose(log);
  assert_non_null(strstr(text, "lbfgs, lr = 1\n"));
  assert_non_null(strstr(text, "     1 x = "));
  free(text);
  ad_optimizer_free(opt);
}

static void lbfgs_minimizes_rosenbrock_over_variables_of_two_shapes(void **s) {
  (void)s;
  quadratic q = rosen6_start();
  ad_var *vars[2] = {q.a, q.b};
  ad_optimizer *opt = ad_optimizer_lbfgs(1.0, 10);
  double f = INFINITY;
  for (int k = 0; k < 300 && f > 1e-20; k++) {
    ad_scope_begin();
    assert_int_equal(ad_optimizer_minimize(opt, rosen6_loss, &q, 2, vars, &f),
                     AD_OK);
    ad_scope_end();
  }
  assert_tensor_near(ad_var_value(q.a), VALUES(1, 1), 2, 1e-6);
  assert_tensor_near(ad_var_value(q.b), VALUES(1, 1, 1, 1), 4, 1e-6);
  ad_optimizer_free(opt);
  quad_free(&q);
}

/* f(x) = -log(x) - log(1 - x): minimal at 1/2, NaN outside (0, 1). */
static ad_tensor *log_barrier_loss(void *ctx) {
  ad_tensor *x = ad_var_value(*(ad_var **)ctx);
  return ad_neg(ad_add(ad_log(x), ad_log1p(ad_neg(x))));
}

static void lbfgs_line_search_backs_off_from_nan(void **state) {
  (void)state;
  /* From x = 0.9 the first step (-g / |g|) lands at -0.1, where the loss
   * is NaN; the search must shrink it rather than fail or go there. */
  ad_optimizer *opt = ad_optimizer_lbfgs(1.0, 5);
  ad_var *v = ad_var_new("x", ad_scalar(0.9));
  for (int k = 0; k < 30; k++) {
    ad_scope_begin();
    assert_int_equal(ad_optimizer_minimize(opt, log_barrier_loss, &v, 1, &v,
                                           NULL),
                     AD_OK);
    double x = ad_item(ad_var_value(v));
    assert_true(x > 0 && x < 1);
    ad_scope_end();
  }
  assert_true(fabs(ad_item(ad_var_value(v)) - 0.5) < 1e-10);
  ad_var_free(v);
  ad_optimizer_free(opt);
}

/* ---- step with explicit gradients ------------------------------------- */

static void step_with_tape_gradients_equals_minimize(void **state) {
  (void)state;
  quadratic q1 = quad_start(), q2 = quad_start();
  ad_var *v1[2] = {q1.a, q1.b}, *v2[2] = {q2.a, q2.b};
  ad_optimizer *o1 = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  ad_optimizer *o2 = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  for (int k = 0; k < 5; k++) {
    ad_scope_begin();
    ad_tape *tape = ad_tape_begin(0);
    ad_tensor *loss = quad_loss(&q1);
    ad_tape_end(tape);
    ad_tensor *grads[2];
    assert_int_equal(ad_tape_var_gradients(tape, loss, 2, v1, grads), AD_OK);
    ad_tape_free(tape);
    assert_int_equal(ad_optimizer_step(o1, 2, v1, grads), AD_OK);
    assert_int_equal(ad_optimizer_minimize(o2, quad_loss, &q2, 2, v2, NULL),
                     AD_OK);
    ad_scope_end();
  }
  assert_tensors_close(ad_var_value(q1.a), ad_var_value(q2.a), 0);
  assert_tensors_close(ad_var_value(q1.b), ad_var_value(q2.b), 0);
  ad_optimizer_free(o1);
  ad_optimizer_free(o2);
  quad_free(&q1);
  quad_free(&q2);
}

static void open_tape_does_not_record_the_update(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_sgd(0.1, 0.5);
  ad_var *v = var1("w", 2, VALUES(1.0, 2.0));
  ad_tensor *g = ad_tensor_new(1, SHAPE(2), VALUES(1.0, 1.0));
  ad_tape *tape = ad_tape_begin(0);
  assert_int_equal(ad_optimizer_step(opt, 1, &v, &g), AD_OK);
  assert_int_equal(ad_tape_size(tape), 0);
  assert_int_equal(ad_tape_num_variables(tape), 0);
  ad_tape_end(tape);
  ad_tape_free(tape);
  ad_var_free(v);
  ad_optimizer_free(opt);
}

/* ---- state ------------------------------------------------------------- */

/* Save opt's state into arrays (names copied, tensors kept). */
typedef struct saved_state {
  int64_t n;
  char names[16][40];
  const char *name_ptrs[16];
  ad_tensor *tensors[16];
} saved_state;

static void save(const ad_optimizer *opt, saved_state *s) {
  s->n = ad_optimizer_state_count(opt);
  assert_true(s->n >= 0 && s->n <= 16);
  for (int64_t i = 0; i < s->n; i++) {
    snprintf(s->names[i], sizeof s->names[i], "%s",
             ad_optimizer_state_name(opt, i));
    s->name_ptrs[i] = s->names[i];
    s->tensors[i] = ad_optimizer_state_tensor(opt, i);
    assert_non_null(s->tensors[i]);
  }
}

static void assert_has_entry(const saved_state *s, const char *name) {
  for (int64_t i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return;
  print_error("state lacks '%s'\n", name);
  fail();
}

/* k steps, save, then the same m steps on the original and on a restored
 * copy (fresh optimizer, variables copied): identical results. */
static void resume_matches(ad_optimizer *(*make)(void), int k, int m,
                           const char *const *expect_names, int nexpect) {
  quadratic q = rosen6_start();
  ad_var *vars[2] = {q.a, q.b};
  ad_optimizer *opt = make();
  for (int i = 0; i < k; i++)
    assert_int_equal(ad_optimizer_minimize(opt, rosen6_loss, &q, 2, vars,
                                           NULL),
                     AD_OK);
  saved_state s;
  save(opt, &s);
  for (int i = 0; i < nexpect; i++) assert_has_entry(&s, expect_names[i]);
  ad_optimizer *copy = make();
  assert_int_equal(ad_optimizer_load_state(copy, s.n, s.name_ptrs,
                                           s.tensors),
                   AD_OK);
  assert_int_equal(ad_optimizer_iterations(copy), k);
  quadratic r = {ad_var_new("a", ad_var_value(q.a)),
                 ad_var_new("b", ad_var_value(q.b))};
  ad_var *rvars[2] = {r.a, r.b};
  for (int i = 0; i < m; i++) {
    assert_int_equal(ad_optimizer_minimize(opt, rosen6_loss, &q, 2, vars,
                                           NULL),
                     AD_OK);
    assert_int_equal(ad_optimizer_minimize(copy, rosen6_loss, &r, 2, rvars,
                                           NULL),
                     AD_OK);
  }
  assert_tensors_close(ad_var_value(q.a), ad_var_value(r.a), 0);
  assert_tensors_close(ad_var_value(q.b), ad_var_value(r.b), 0);
  ad_optimizer_free(opt);
  ad_optimizer_free(copy);
  quad_free(&q);
  quad_free(&r);
}

static ad_optimizer *make_sgd(void) { return ad_optimizer_sgd(1e-4, 0.9); }
static ad_optimizer *make_adam(void) {
  return ad_optimizer_adam(0.01, 0.9, 0.999, 1e-8);
}
static ad_optimizer *make_lbfgs(void) { return ad_optimizer_lbfgs(1.0, 4); }

static void saved_state_resumes_exactly(void **state) {
  (void)state;
  static const char *const sgd_names[] = {"sgd/iterations", "sgd/lr",
                                          "sgd/velocity/0", "sgd/velocity/1"};
  static const char *const adam_names[] = {"adam/iterations", "adam/lr",
                                           "adam/m/0", "adam/m/1",
                                           "adam/v/0", "adam/v/1"};
  static const char *const lbfgs_names[] = {
      "lbfgs/iterations", "lbfgs/lr", "lbfgs/x_prev", "lbfgs/g_prev",
      "lbfgs/s", "lbfgs/y"};
  resume_matches(make_sgd, 7, 5, sgd_names, 4);
  resume_matches(make_adam, 7, 5, adam_names, 6);
  resume_matches(make_lbfgs, 7, 5, lbfgs_names, 6);
}

static void state_tensors_have_documented_shapes(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_lbfgs(1.0, 4);
  quadratic q = quad_start();
  ad_var *vars[2] = {q.a, q.b};
  for (int i = 0; i < 3; i++)
    ad_optimizer_minimize(opt, quad_loss, &q, 2, vars, NULL);
  saved_state s;
  save(opt, &s);
  assert_int_equal(s.n, 6);
  assert_string_equal(s.names[0], "lbfgs/iterations");
  assert_true(ad_item(s.tensors[0]) == 3);
  assert_string_equal(s.names[1], "lbfgs/lr");
  assert_shape(s.tensors[2], 1, 5);
  assert_shape(s.tensors[4], 2, 2, 5); /* two pairs so far */
  ad_optimizer_free(opt);
  quad_free(&q);
  opt = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  assert_int_equal(ad_optimizer_state_count(opt), 2);
  quadratic q2 = quad_start();
  ad_var *v2[2] = {q2.a, q2.b};
  ad_optimizer_minimize(opt, quad_loss, &q2, 2, v2, NULL);
  save(opt, &s);
  assert_int_equal(s.n, 6);
  assert_string_equal(s.names[2], "adam/m/0");
  assert_shape(s.tensors[2], 1, 2);
  assert_string_equal(s.names[5], "adam/v/1");
  assert_shape(s.tensors[5], 1, 3);
  assert_null(ad_optimizer_state_name(opt, 6));
  assert_error(AD_EINVAL, "entry 6 is out of range");
  assert_null(ad_optimizer_state_tensor(opt, -1));
  assert_error(AD_EINVAL, "out of range");
  /* Loading nothing resets the optimizer. */
  assert_int_equal(ad_optimizer_load_state(opt, 0, NULL, NULL), AD_OK);
  assert_int_equal(ad_optimizer_state_count(opt), 2);
  assert_int_equal(ad_optimizer_iterations(opt), 0);
  ad_optimizer_free(opt);
  quad_free(&q2);
}

static void bad_states_are_refused_and_change_nothing(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  quadratic q = quad_start();
  ad_var *vars[2] = {q.a, q.b};
  ad_optimizer_minimize(opt, quad_loss, &q, 2, vars, NULL);
  saved_state before;
  save(opt, &before);
  ad_tensor *s2 = ad_zeros(1, SHAPE(2)), *s3 = ad_zeros(1, SHAPE(3));
  ad_tensor *one = ad_scalar(1);
  struct {
    int n;
    const char *names[4];
    ad_tensor *tensors[4];
    ad_status code;
    const char *text;
  } cases[] = {
      {1, {"sgd/iterations"}, {one}, AD_EINVAL,
       "'sgd/iterations' belongs to a sgd optimizer, this one is adam"},
      {1, {"adam/lr"}, {one}, AD_EINVAL, "adam/iterations is missing"},
      {2, {"adam/iterations", "adam/iterations"}, {one, one}, AD_EINVAL,
       "'adam/iterations' is given twice"},
      {2, {"adam/iterations", "adam/m/0"}, {one, s2}, AD_EINVAL,
       "adam/v/0 is missing"},
      {3, {"adam/iterations", "adam/m/0", "adam/v/0"}, {one, s2, s3},
       AD_ESHAPE, "adam/m/0 has shape (2,) but adam/v/0 has (3,)"},
      {3, {"adam/iterations", "adam/m/1", "adam/v/1"}, {one, s2, s2},
       AD_EINVAL, "adam/m/0 is missing"},
      {1, {"adam/iterations"}, {ad_scalar(1.5)}, AD_EINVAL,
       "must hold one whole number"},
      {2, {"adam/iterations", "adam/lr"}, {one, ad_scalar(-1)}, AD_EINVAL,
       "lr must be positive"},
      {1, {"adam/velocity/0"}, {s2}, AD_EINVAL,
       "'adam/velocity/0' is not part of the state"},
      {1, {"adam"}, {one}, AD_EINVAL, "not a state name"},
      {1, {NULL}, {one}, AD_EINVAL, "entry 0 has a NULL name"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    assert_int_equal(ad_optimizer_load_state(opt, cases[c].n, cases[c].names,
                                             cases[c].tensors),
                     cases[c].code);
    assert_error(cases[c].code, cases[c].text);
  }
  /* Nothing changed. */
  saved_state after;
  save(opt, &after);
  assert_int_equal(after.n, before.n);
  for (int64_t i = 0; i < after.n; i++) {
    assert_string_equal(after.names[i], before.names[i]);
    assert_tensors_close(after.tensors[i], before.tensors[i], 0);
  }
  /* A state for other shapes is refused at the next step. */
  ad_optimizer *other = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  const char *names[5] = {"adam/iterations", "adam/m/0", "adam/v/0",
                          "adam/m/1", "adam/v/1"};
  ad_tensor *ts[5] = {one, s3, s3, s2, s2};
  assert_int_equal(ad_optimizer_load_state(other, 5, names, ts), AD_OK);
  assert_int_equal(ad_optimizer_minimize(other, quad_loss, &q, 2, vars, NULL),
                   AD_ESHAPE);
  assert_error(AD_ESHAPE, "variable 0 ('a') has shape (2,), the optimizer's "
                          "state is for (3,)");
  ad_optimizer_free(other);
  /* L-BFGS vectors go together. */
  ad_optimizer *lb = ad_optimizer_lbfgs(1.0, 3);
  const char *lnames[3] = {"lbfgs/iterations", "lbfgs/x_prev",
                           "lbfgs/g_prev"};
  ad_tensor *lts[3] = {one, ad_zeros(1, SHAPE(5)), ad_zeros(1, SHAPE(5))};
  assert_int_equal(ad_optimizer_load_state(lb, 3, lnames, lts), AD_EINVAL);
  assert_error(AD_EINVAL, "go together; 2 of them given");
  ad_optimizer_free(lb);
  ad_optimizer_free(opt);
  quad_free(&q);
}

/* ---- errors ------------------------------------------------------------ */

static void bad_hyperparameters_are_einval(void **state) {
  (void)state;
  assert_null(ad_optimizer_sgd(0.0, 0.5));
  assert_error(AD_EINVAL, "ad_optimizer_sgd: lr must be positive and finite, "
                          "got 0");
  assert_null(ad_optimizer_sgd(0.1, 1.0));
  assert_error(AD_EINVAL, "momentum must be in [0, 1), got 1");
  assert_null(ad_optimizer_adam(NAN, 0.9, 0.999, 1e-8));
  assert_error(AD_EINVAL, "ad_optimizer_adam: lr must be positive");
  assert_null(ad_optimizer_adam(0.1, 1.0, 0.999, 1e-8));
  assert_error(AD_EINVAL, "beta1 and beta2 must be in [0, 1)");
  assert_null(ad_optimizer_adam(0.1, 0.9, 0.999, 0.0));
  assert_error(AD_EINVAL, "eps must be positive");
  assert_null(ad_optimizer_lbfgs(1.0, 0));
  assert_error(AD_EINVAL, "ad_optimizer_lbfgs: history must be in 1..1000, "
                          "got 0");
  ad_optimizer *opt = ad_optimizer_sgd(0.1, 0.0);
  assert_int_equal(ad_optimizer_set_lr(opt, -1), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_optimizer_set_lr: lr must be positive");
  assert_int_equal(ad_optimizer_set_lr(opt, 0.5), AD_OK);
  assert_true(ad_optimizer_lr(opt) == 0.5);
  assert_string_equal(ad_optimizer_name(opt), "sgd");
  ad_optimizer_free(opt);
  ad_optimizer_free(NULL);
  assert_string_equal(ad_optimizer_name(NULL), "");
  assert_error(AD_EINVAL, "'opt' is NULL");
  assert_int_equal(ad_optimizer_iterations(NULL), -1);
  assert_error(AD_EINVAL, NULL);
}

static void bad_steps_are_refused_and_change_nothing(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  ad_var *v = var1("weights", 2, VALUES(1.0, 2.0));
  ad_tensor *good = ad_tensor_new(1, SHAPE(2), VALUES(0.1, 0.2));
  ad_tensor *nan = ad_tensor_new(1, SHAPE(2), VALUES(0.1, NAN));
  ad_tensor *wrong = ad_tensor_new(1, SHAPE(3), VALUES(0.1, 0.2, 0.3));
  ad_tensor *null_grad = NULL;
  assert_int_equal(ad_optimizer_step(NULL, 1, &v, &good), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_optimizer_step: argument 'opt' is NULL");
  assert_int_equal(ad_optimizer_step(opt, 0, &v, &good), AD_EINVAL);
  assert_error(AD_EINVAL, "need n >= 1 variables");
  assert_int_equal(ad_optimizer_step(opt, 1, &v, &nan), AD_EINVAL);
  assert_error(AD_EINVAL, "grads[0] (for 'weights') holds nan at element 1");
  assert_int_equal(ad_optimizer_step(opt, 1, &v, &wrong), AD_ESHAPE);
  assert_error(AD_ESHAPE, "grads[0] has shape (3,) but variable 0 "
                          "('weights') has (2,)");
  assert_int_equal(ad_optimizer_step(opt, 1, &v, &null_grad), AD_EINVAL);
  assert_error(AD_EINVAL, "grads[0] (for 'weights') is NULL");
  assert_int_equal(ad_optimizer_step(opt, 1, &v, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "grads is NULL");
  /* Nothing happened: still a fresh optimizer, the variable unchanged. */
  assert_int_equal(ad_optimizer_iterations(opt), 0);
  assert_int_equal(ad_optimizer_state_count(opt), 2);
  assert_tensor_near(ad_var_value(v), VALUES(1.0, 2.0), 2, 0);
  /* After a first step the variables are fixed. */
  assert_int_equal(ad_optimizer_step(opt, 1, &v, &good), AD_OK);
  ad_var *two[2] = {v, v};
  ad_tensor *gg[2] = {good, good};
  assert_int_equal(ad_optimizer_step(opt, 2, two, gg), AD_EINVAL);
  assert_error(AD_EINVAL, "the adam optimizer was set up for 1 variables, "
                          "got 2");
  ad_var *w = var1("other", 3, VALUES(1, 2, 3));
  assert_int_equal(ad_optimizer_step(opt, 1, &w, &wrong), AD_ESHAPE);
  assert_error(AD_ESHAPE, "variable 0 ('other') has shape (3,), the "
                          "optimizer's state is for (2,)");
  assert_int_equal(ad_optimizer_iterations(opt), 1);
  ad_var_free(w);
  ad_var_free(v);
  ad_optimizer_free(opt);
}

static ad_tensor *null_loss(void *ctx) {
  (void)ctx;
  return NULL;
}

static ad_tensor *vector_loss(void *ctx) {
  return ad_var_value(((quadratic *)ctx)->a);
}

static ad_tensor *nan_loss(void *ctx) {
  ad_tensor *a = ad_var_value(((quadratic *)ctx)->a);
  return ad_log(ad_add_scalar(ad_neg(ad_sum_all(ad_square(a))), -1.0));
}

/* Fails once a[0] passes 0.001: only at trial points. */
static ad_tensor *fails_far_away(void *ctx) {
  quadratic *q = ctx;
  if (value_at(q->a, 0) > 0.001)
    return ad_matmul(ad_var_value(q->a), ad_ones(2, SHAPE(3, 3)));
  return quad_loss(ctx);
}

static void bad_losses_are_refused(void **state) {
  (void)state;
  ad_optimizer *opt = ad_optimizer_lbfgs(1.0, 3);
  quadratic q = quad_start();
  ad_var *vars[2] = {q.a, q.b};
  double f = 0;
  assert_int_equal(ad_optimizer_minimize(opt, NULL, &q, 2, vars, &f),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "the loss function is NULL");
  assert_true(isnan(f));
  assert_int_equal(ad_optimizer_minimize(opt, null_loss, &q, 2, vars, &f),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "ad_optimizer_minimize: the loss returned NULL");
  assert_int_equal(ad_optimizer_minimize(opt, vector_loss, &q, 2, vars, &f),
                   AD_ESHAPE);
  assert_error(AD_ESHAPE, "the loss returned shape (2,), not a scalar");
  assert_int_equal(ad_optimizer_minimize(opt, nan_loss, &q, 2, vars, &f),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "the loss is nan at the starting point");
  bool was = ad_pause_recording(true);
  assert_int_equal(ad_optimizer_minimize(opt, quad_loss, &q, 2, vars, &f),
                   AD_ESTATE);
  ad_pause_recording(was);
  assert_error(AD_ESTATE, "recording is paused");
  /* A failure at a trial point of the line search: the error, and the
   * variables and the optimizer as they were. */
  assert_int_equal(ad_optimizer_minimize(opt, fails_far_away, &q, 2, vars,
                                         &f),
                   AD_ESHAPE);
  assert_error(AD_ESHAPE, "ad_matmul");
  assert_tensor_near(ad_var_value(q.a), VALUES(0, 0), 2, 0);
  assert_int_equal(ad_optimizer_iterations(opt), 0);
  assert_int_equal(ad_optimizer_state_count(opt), 2);
  ad_optimizer_free(opt);
  quad_free(&q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(sgd_without_momentum_is_gradient_descent),
      scoped_test(sgd_momentum_follows_pytorch_formula),
      scoped_test(adam_follows_the_paper),
      scoped_test(lbfgs_first_step_is_the_scaled_gradient),
      scoped_test(lbfgs_solves_a_quadratic_like_newton),
      scoped_test(every_optimizer_solves_an_ill_conditioned_quadratic),
      scoped_test(example_reaches_rosenbrock_minimum_with_each_optimizer),
      scoped_test(example_prints_progress),
      scoped_test(lbfgs_minimizes_rosenbrock_over_variables_of_two_shapes),
      scoped_test(lbfgs_line_search_backs_off_from_nan),
      scoped_test(step_with_tape_gradients_equals_minimize),
      scoped_test(open_tape_does_not_record_the_update),
      scoped_test(saved_state_resumes_exactly),
      scoped_test(state_tensors_have_documented_shapes),
      scoped_test(bad_states_are_refused_and_change_nothing),
      scoped_test(bad_hyperparameters_are_einval),
      scoped_test(bad_steps_are_refused_and_change_nothing),
      scoped_test(bad_losses_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
