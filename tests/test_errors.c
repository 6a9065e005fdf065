/* A catalogue of bad inputs driven through every public function: each
 * must fail with the right status and a message naming the op and the
 * shapes or values at fault, never crash, and never leak under OOM. */
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

#include "ad/custom.h"
#include "internal.h"

/* Fail unless the recorded error has the given code and its message holds
 * every text in the NULL-terminated list; then clear it. */
static void error_has_impl(ad_status code, const char *const *texts,
                           const char *file, int line) {
  if (ad_error() != code) {
    print_error("%s:%d: error is %d (%s), expected %d (%s)\n", file, line,
                   ad_error(), ad_error_message(), code, ad_strerror(code));
    _fail(file, line);
  }
  for (int i = 0; texts[i]; i++)
    if (!strstr(ad_error_message(), texts[i])) {
      print_error("%s:%d: message \"%s\" lacks \"%s\"\n", file, line,
                     ad_error_message(), texts[i]);
      _fail(file, line);
    }
  ad_error_clear();
}
#define assert_error_has(code, ...) \
  error_has_impl((code), (const char *const[]){__VA_ARGS__, NULL}, \
                 __FILE__, __LINE__)

static ad_tensor *vec(int64_t n) {
  ad_tensor *t = ad_arange(0, (double)n, 1);
  assert_non_null(t);
  return t;
}

static ad_tensor *mat(int64_t r, int64_t c) {
  return ad_reshape(vec(r * c), 2, SHAPE(r, c));
}

/* A first error that later NULL inputs must not replace. */
static void make_root_error(void) {
  ad_error_clear();
  assert_null(ad_reshape(vec(6), 1, SHAPE(7)));
  assert_int_equal(ad_error(), AD_ESHAPE);
}
#define ROOT_TEXT "ad_reshape: cannot reshape (6,) into (7,)"

/* ---- op tables --------------------------------------------------------- */

typedef struct {
  const char *name;
  ad_tensor *(*f)(ad_tensor *);
} unary_op;

static ad_tensor *sum_all_(ad_tensor *t) { return ad_sum_all(t); }
static ad_tensor *sum_(ad_tensor *t) { return ad_sum(t, 0, NULL, false); }
static ad_tensor *mean_(ad_tensor *t) { return ad_mean(t, 0, NULL, false); }
static ad_tensor *prod_(ad_tensor *t) { return ad_prod(t, 0, NULL, false); }
static ad_tensor *max_(ad_tensor *t) { return ad_max(t, 0, NULL, false); }
static ad_tensor *min_(ad_tensor *t) { return ad_min(t, 0, NULL, false); }
static ad_tensor *lse_(ad_tensor *t) {
  return ad_logsumexp(t, 0, NULL, false);
}
static ad_tensor *argmax_(ad_tensor *t) { return ad_argmax(t, 0); }
static ad_tensor *softmax_(ad_tensor *t) { return ad_softmax(t, 0); }
static ad_tensor *log_softmax_(ad_tensor *t) {
  return ad_log_softmax(t, 0);
}
static ad_tensor *add_scalar_(ad_tensor *t) { return ad_add_scalar(t, 1); }
static ad_tensor *mul_scalar_(ad_tensor *t) { return ad_mul_scalar(t, 2); }
static ad_tensor *pow_scalar_(ad_tensor *t) { return ad_pow_scalar(t, 2); }
static ad_tensor *clip_(ad_tensor *t) { return ad_clip(t, 0, 1); }
static ad_tensor *reshape_(ad_tensor *t) {
  return ad_reshape(t, 1, SHAPE(-1));
}
static ad_tensor *permute_(ad_tensor *t) {
  return ad_permute(t, (const int[]){0});
}
static ad_tensor *expand_dims_(ad_tensor *t) { return ad_expand_dims(t, 0); }
static ad_tensor *squeeze_(ad_tensor *t) { return ad_squeeze(t, 0); }
static ad_tensor *broadcast_to_(ad_tensor *t) {
  return ad_broadcast_to(t, 1, SHAPE(2));
}
static ad_tensor *slice_(ad_tensor *t) { return ad_slice(t, 0, 0, 1, 1); }
static ad_tensor *gather_(ad_tensor *t) {
  return ad_gather(t, 0, (const int64_t[]){0}, 1);
}
static ad_tensor *concat_(ad_tensor *t) { return ad_concat(1, &t, 0); }
static ad_tensor *stack_(ad_tensor *t) { return ad_stack(1, &t, 0); }
static ad_tensor *max_pool2d_(ad_tensor *t) {
  return ad_max_pool2d(t, 1, 1, 1, 1);
}

#define U(name) {"ad_" #name, ad_##name}
static const unary_op UNARY[] = {
    U(neg), U(exp), U(log), U(log1p), U(expm1), U(sqrt), U(square),
    U(abs), U(sin), U(cos), U(tan), U(asin), U(acos), U(atan), U(sinh),
    U(cosh), U(tanh), U(sigmoid), U(softplus), U(relu), U(erf), U(sign),
    U(floor), U(transpose), U(inv), U(cholesky), U(det), U(logdet),
    {"ad_sum", sum_all_}, {"ad_sum", sum_}, {"ad_mean", mean_},
    {"ad_prod", prod_}, {"ad_max", max_}, {"ad_min", min_},
    {"ad_logsumexp", lse_}, {"ad_argmax", argmax_},
    {"ad_softmax", softmax_}, {"ad_log_softmax", log_softmax_},
    {"ad_add_scalar", add_scalar_}, {"ad_mul_scalar", mul_scalar_},
    {"ad_pow_scalar", pow_scalar_}, {"ad_clip", clip_},
    {"ad_reshape", reshape_}, {"ad_permute", permute_},
    {"ad_expand_dims", expand_dims_}, {"ad_squeeze", squeeze_},
    {"ad_broadcast_to", broadcast_to_}, {"ad_slice", slice_},
    {"ad_gather", gather_}, {"ad_concat", concat_}, {"ad_stack", stack_},
    {"ad_max_pool2d", max_pool2d_}, U(stop_gradient),
};
#undef U
#define NUNARY (sizeof UNARY / sizeof UNARY[0])

typedef struct {
  const char *name;
  ad_tensor *(*f)(ad_tensor *, ad_tensor *);
  bool broadcasts; /* elementwise with NumPy broadcasting */
} binary_op;

static ad_tensor *conv2d_(ad_tensor *x, ad_tensor *w) {
  return ad_conv2d(x, w, 1, 1, 0, 0);
}
static ad_tensor *where_a_(ad_tensor *a, ad_tensor *b) {
  return ad_where(ad_ones(0, NULL), a, b);
}
static ad_tensor *where_cond_(ad_tensor *c, ad_tensor *a) {
  return ad_where(c, a, a);
}
static ad_tensor *concat2_(ad_tensor *a, ad_tensor *b) {
  ad_tensor *ts[2] = {a, b};
  return ad_concat(2, ts, 0);
}
static ad_tensor *stack2_(ad_tensor *a, ad_tensor *b) {
  ad_tensor *ts[2] = {a, b};
  return ad_stack(2, ts, 0);
}

#define B(name, bc) {"ad_" #name, ad_##name, bc}
static const binary_op BINARY[] = {
    B(add, true), B(sub, true), B(mul, true), B(div, true), B(pow, true),
    B(maximum, true), B(minimum, true), B(atan2, true), B(mod, true),
    B(less, true), B(greater, true), B(equal, true), B(matmul, false),
    B(solve, false),
    {"ad_conv2d", conv2d_, false}, {"ad_where", where_a_, true},
    {"ad_where", where_cond_, true}, {"ad_concat", concat2_, false},
    {"ad_stack", stack2_, false},
};
#undef B
#define NBINARY (sizeof BINARY / sizeof BINARY[0])

/* ---- NULL inputs ------------------------------------------------------- */

static void every_unary_op_rejects_null(void **state) {
  (void)state;
  for (size_t i = 0; i < NUNARY; i++) {
    ad_error_clear();
    if (UNARY[i].f(NULL)) fail_msg("%s accepted NULL", UNARY[i].name);
    assert_error_has(AD_EINVAL, UNARY[i].name, "NULL");
  }
}

static void every_binary_op_rejects_null_on_either_side(void **state) {
  (void)state;
  ad_tensor *a = ad_ones(2, SHAPE(2, 2));
  for (size_t i = 0; i < NBINARY; i++) {
    ad_error_clear();
    if (BINARY[i].f(NULL, a)) fail_msg("%s accepted NULL", BINARY[i].name);
    assert_error_has(AD_EINVAL, BINARY[i].name, "NULL");
    if (BINARY[i].f(a, NULL)) fail_msg("%s accepted NULL", BINARY[i].name);
    assert_error_has(AD_EINVAL, BINARY[i].name, "NULL");
  }
}

static void null_input_keeps_the_first_error(void **state) {
  (void)state;
  ad_tensor *a = ad_ones(2, SHAPE(2, 2));
  for (size_t i = 0; i < NUNARY; i++) {
    make_root_error();
    assert_null(UNARY[i].f(NULL));
    assert_error_has(AD_ESHAPE, ROOT_TEXT);
  }
  for (size_t i = 0; i < NBINARY; i++) {
    make_root_error();
    assert_null(BINARY[i].f(a, NULL));
    assert_error_has(AD_ESHAPE, ROOT_TEXT);
  }
}

static void chain_of_calls_reports_its_root_cause_once(void **state) {
  (void)state;
  ad_error_clear();
  ad_tensor *r = ad_exp(ad_sum_all(ad_matmul(mat(2, 3), mat(4, 5))));
  assert_null(r);
  assert_error_has(AD_ESHAPE, "ad_matmul");
}

static void null_inputs_to_tensor_functions(void **state) {
  (void)state;
  assert_int_equal(ad_ndim(NULL), -1);
  assert_error_has(AD_EINVAL, "ad_ndim");
  assert_null(ad_shape(NULL));
  assert_error_has(AD_EINVAL, "ad_shape");
  assert_int_equal(ad_numel(NULL), -1);
  assert_error_has(AD_EINVAL, "ad_numel");
  assert_true(isnan(ad_item(NULL)));
  assert_error_has(AD_EINVAL, "ad_item");
  double buf[2];
  assert_int_equal(ad_read(NULL, buf, 2), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_read");
  assert_int_equal(ad_read(vec(2), NULL, 2), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_read");
  /* These are NULL-safe and record nothing. */
  assert_null(ad_retain(NULL));
  ad_release(NULL);
  assert_null(ad_keep(NULL));
  assert_int_equal(ad_error(), AD_OK);
}

static void null_shape_with_positive_rank_is_einval(void **state) {
  (void)state;
  assert_null(ad_tensor_new(2, NULL, NULL));
  assert_error_has(AD_EINVAL, "ad_tensor_new", "NULL");
  assert_null(ad_zeros(1, NULL));
  assert_error_has(AD_EINVAL, "ad_zeros");
  assert_null(ad_rand_uniform(1, NULL, 0, 1));
  assert_error_has(AD_EINVAL, "ad_rand_uniform");
  assert_null(ad_reshape(vec(2), 1, NULL));
  assert_error_has(AD_EINVAL, "ad_reshape");
  assert_null(ad_permute(mat(2, 2), NULL));
  assert_error_has(AD_EINVAL, "ad_permute");
  assert_null(ad_gather(vec(3), 0, NULL, 2));
  assert_error_has(AD_EINVAL, "ad_gather");
  assert_null(ad_sum(vec(3), 1, NULL, false));
  assert_error_has(AD_EINVAL, "ad_sum");
}

/* ---- shapes of binary ops ---------------------------------------------- */

static void every_broadcasting_op_rejects_incompatible_shapes(void **state) {
  (void)state;
  ad_tensor *a = ad_ones(2, SHAPE(2, 3)), *b = ad_ones(1, SHAPE(4));
  for (size_t i = 0; i < NBINARY; i++) {
    if (!BINARY[i].broadcasts) continue;
    ad_error_clear();
    if (BINARY[i].f(a, b)) fail_msg("%s broadcast (2, 3) with (4,)",
                                    BINARY[i].name);
    assert_error_has(AD_ESHAPE, BINARY[i].name, "(2, 3)", "(4,)");
  }
}

static void where_rejects_incompatible_condition(void **state) {
  (void)state;
  assert_null(ad_where(ad_ones(1, SHAPE(3)), ad_ones(1, SHAPE(2)),
                       ad_ones(1, SHAPE(2))));
  assert_error_has(AD_ESHAPE, "ad_where", "(3,)", "(2,)");
}

static void matmul_names_inner_dimensions(void **state) {
  (void)state;
  assert_null(ad_matmul(ad_ones(2, SHAPE(2, 3)), ad_ones(2, SHAPE(4, 5))));
  assert_error_has(AD_ESHAPE,
                   "ad_matmul: inner dimensions differ: (2, 3) x (4, 5)");
}

static void matmul_rejects_scalars_and_mismatched_batches(void **state) {
  (void)state;
  assert_null(ad_matmul(ad_scalar(2), ad_ones(2, SHAPE(2, 2))));
  assert_error_has(AD_ESHAPE, "ad_matmul", "()");
  assert_null(ad_matmul(ad_ones(3, SHAPE(2, 2, 3)),
                        ad_ones(3, SHAPE(3, 3, 2))));
  assert_error_has(AD_ESHAPE, "ad_matmul", "(2, 2, 3)", "(3, 3, 2)");
  assert_null(ad_matmul(ad_ones(1, SHAPE(3)), ad_ones(1, SHAPE(4))));
  assert_error_has(AD_ESHAPE, "ad_matmul", "(3,)", "(4,)");
}

/* ---- creation ---------------------------------------------------------- */

static void negative_size_is_einval(void **state) {
  (void)state;
  assert_null(ad_tensor_new(2, SHAPE(2, -3), NULL));
  assert_error_has(AD_EINVAL, "ad_tensor_new", "-3", "(2, -3)");
  assert_null(ad_zeros(1, SHAPE(-1)));
  assert_error_has(AD_EINVAL, "ad_zeros", "-1");
  assert_null(ad_ones(1, SHAPE(-1)));
  assert_error_has(AD_EINVAL, "ad_ones", "-1");
  assert_null(ad_full(1, SHAPE(-2), 3.0));
  assert_error_has(AD_EINVAL, "ad_full", "-2");
  assert_null(ad_rand_normal(1, SHAPE(-4), 0, 1));
  assert_error_has(AD_EINVAL, "ad_rand_normal", "-4");
  assert_null(ad_eye(-5));
  assert_error_has(AD_EINVAL, "ad_eye", "-5");
  assert_null(ad_linspace(0, 1, -6));
  assert_error_has(AD_EINVAL, "ad_linspace", "-6");
}

static void rank_above_eight_is_einval(void **state) {
  (void)state;
  const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_null(ad_tensor_new(9, nine, NULL));
  assert_error_has(AD_EINVAL, "ad_tensor_new", "rank 9");
  assert_null(ad_tensor_new(-1, nine, NULL));
  assert_error_has(AD_EINVAL, "ad_tensor_new", "rank -1");
  assert_null(ad_ones(9, nine));
  assert_error_has(AD_EINVAL, "ad_ones", "9");
  assert_null(ad_reshape(vec(1), 9, nine));
  assert_error_has(AD_EINVAL, "ad_reshape", "9");
  assert_null(ad_broadcast_to(vec(1), 9, nine));
  assert_error_has(AD_EINVAL, "ad_broadcast_to", "9");
  /* Growing a rank-8 tensor past the limit. */
  ad_tensor *eight = ad_ones(8, nine);
  assert_null(ad_expand_dims(eight, 0));
  assert_error_has(AD_EINVAL, "ad_expand_dims", "8");
  ad_tensor *two[2] = {eight, eight};
  assert_null(ad_stack(2, two, 0));
  assert_error_has(AD_EINVAL, "ad_stack", "8");
}

static void element_count_overflowing_int64_is_einval(void **state) {
  (void)state;
  const int64_t big = (int64_t)1 << 32;
  assert_null(ad_zeros(2, SHAPE(big, big)));
  assert_error_has(AD_EINVAL, "ad_zeros", "4294967296", "overflow");
  assert_null(ad_full(3, SHAPE(INT64_MAX, 2, 1), 1.0));
  assert_error_has(AD_EINVAL, "ad_full", "overflow");
  assert_null(ad_reshape(vec(4), 2, SHAPE(big, big)));
  assert_error_has(AD_ESHAPE, "ad_reshape", "(4,)");
  assert_null(ad_broadcast_to(ad_scalar(1), 2, SHAPE(big, big)));
  assert_error_has(AD_EINVAL, "ad_broadcast_to");
}

static void count_too_large_for_bytes_is_einval(void **state) {
  (void)state;
  /* Fits int64 as a count of elements, but not as a count of bytes. */
  assert_null(ad_zeros(1, SHAPE(INT64_MAX / 4)));
  assert_error_has(AD_EINVAL, "ad_zeros", "too large");
}

static void bad_ranges_and_distributions_are_einval(void **state) {
  (void)state;
  assert_null(ad_arange(0, 5, 0));
  assert_error_has(AD_EINVAL, "ad_arange", "step=0");
  assert_null(ad_arange(NAN, 5, 1));
  assert_error_has(AD_EINVAL, "ad_arange", "nan");
  assert_null(ad_linspace(INFINITY, 1, 3));
  assert_error_has(AD_EINVAL, "ad_linspace", "inf");
  assert_null(ad_rand_uniform(1, SHAPE(2), 1, 1));
  assert_error_has(AD_EINVAL, "ad_rand_uniform", "lo=1", "hi=1");
  assert_null(ad_rand_uniform(1, SHAPE(2), 0, INFINITY));
  assert_error_has(AD_EINVAL, "ad_rand_uniform", "inf");
  assert_null(ad_rand_normal(1, SHAPE(2), 0, -1));
  assert_error_has(AD_EINVAL, "ad_rand_normal", "sd=-1");
  assert_null(ad_rand_normal(1, SHAPE(2), NAN, 1));
  assert_error_has(AD_EINVAL, "ad_rand_normal", "nan");
}

/* ---- accessors --------------------------------------------------------- */

static void item_of_several_elements_is_eshape(void **state) {
  (void)state;
  assert_true(isnan(ad_item(mat(2, 3))));
  assert_error_has(AD_ESHAPE, "ad_item", "(2, 3)", "6");
}

static void read_into_wrong_size_is_eshape(void **state) {
  (void)state;
  double buf[8];
  assert_int_equal(ad_read(mat(2, 3), buf, 5), AD_ESHAPE);
  assert_error_has(AD_ESHAPE, "ad_read", "5", "(2, 3)");
}

static void fprint_rejects_null_file_and_shows_null_tensors(void **state) {
  (void)state;
  assert_int_equal(ad_fprint(NULL, vec(2)), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_fprint", "NULL");
  FILE *f = tmpfile();
  assert_non_null(f);
  make_root_error();
  assert_int_equal(ad_fprint(f, NULL), AD_ESHAPE);
  char line[256] = {0};
  rewind(f);
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_non_null(strstr(line, "<null tensor: " ROOT_TEXT));
  assert_error_has(AD_ESHAPE, ROOT_TEXT);
}

static void print_of_null_shows_and_keeps_the_error(void **state) {
  (void)state;
  /* ad_print writes to stdout: send it to a temporary file to read. */
  FILE *f = tmpfile();
  assert_non_null(f);
  fflush(stdout);
  int saved = dup(fileno(stdout));
  assert_true(saved >= 0);
  assert_true(dup2(fileno(f), fileno(stdout)) >= 0);
  make_root_error();
  ad_print(NULL);
  fflush(stdout);
  dup2(saved, fileno(stdout));
  close(saved);
  char line[256] = {0};
  rewind(f);
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_non_null(strstr(line, "<null tensor: " ROOT_TEXT ">"));
  assert_error_has(AD_ESHAPE, ROOT_TEXT);
}

static void status_codes_have_descriptions(void **state) {
  (void)state;
  const char *seen[9];
  for (int s = AD_OK; s <= AD_EINTERNAL; s++) {
    seen[s] = ad_strerror((ad_status)s);
    assert_non_null(seen[s]);
    assert_true(strlen(seen[s]) > 0);
    for (int k = 0; k < s; k++) assert_string_not_equal(seen[k], seen[s]);
  }
  assert_string_equal(ad_strerror(AD_ESHAPE), "incompatible shapes");
  assert_string_equal(ad_strerror((ad_status)77), "unknown status");
  ad_error_clear();
  assert_string_equal(ad_error_message(), "");
  assert_int_equal(ad_error(), AD_OK);
}

static void successful_calls_leave_the_error_alone(void **state) {
  (void)state;
  make_root_error();
  assert_non_null(ad_add(vec(2), vec(2)));
  assert_error_has(AD_ESHAPE, ROOT_TEXT);
}

/* Runs without the test scope: there is nothing to end. */
static void scope_end_without_scope_is_estate(void **state) {
  (void)state;
  ad_error_clear();
  assert_int_equal(ad_scope_end(), AD_ESTATE);
  assert_error_has(AD_ESTATE, "ad_scope_end");
  /* ad_keep without a scope does nothing. */
  ad_tensor *t = ad_scalar(1.0);
  assert_ptr_equal(ad_keep(t), t);
  ad_release(t);
  assert_int_equal(ad_error(), AD_OK);
}

/* ---- reductions and axes ----------------------------------------------- */

typedef ad_tensor *(*reduce_fn)(ad_tensor *, int, const int *, bool);

static void every_reduction_rejects_bad_and_repeated_axes(void **state) {
  (void)state;
  struct {
    const char *name;
    reduce_fn f;
  } ops[] = {{"ad_sum", ad_sum},       {"ad_mean", ad_mean},
             {"ad_prod", ad_prod},     {"ad_max", ad_max},
             {"ad_min", ad_min},       {"ad_logsumexp", ad_logsumexp}};
  ad_tensor *m = mat(2, 3);
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    assert_null(ops[i].f(m, 1, (const int[]){2}, false));
    assert_error_has(AD_EINVAL, ops[i].name, "axis 2", "rank 2");
    assert_null(ops[i].f(m, 1, (const int[]){-3}, false));
    assert_error_has(AD_EINVAL, ops[i].name, "-3");
    assert_null(ops[i].f(m, 2, (const int[]){1, -1}, false));
    assert_error_has(AD_EINVAL, ops[i].name, "repeated");
    assert_null(ops[i].f(m, -1, (const int[]){0}, false));
    assert_error_has(AD_EINVAL, ops[i].name, "-1");
    assert_null(ops[i].f(m, 9, (const int[]){0, 1, 2, 3, 4, 5, 6, 7, 8},
                         false));
    assert_error_has(AD_EINVAL, ops[i].name, "9");
  }
}

static void axis_ops_reject_out_of_range_axes(void **state) {
  (void)state;
  ad_tensor *m = mat(2, 3);
  assert_null(ad_argmax(m, 2));
  assert_error_has(AD_EINVAL, "ad_argmax", "axis 2");
  assert_null(ad_softmax(m, -3));
  assert_error_has(AD_EINVAL, "ad_softmax", "-3");
  assert_null(ad_log_softmax(m, 5));
  assert_error_has(AD_EINVAL, "ad_log_softmax", "5");
  assert_null(ad_expand_dims(m, 4));
  assert_error_has(AD_EINVAL, "ad_expand_dims", "4");
  assert_null(ad_squeeze(m, 3));
  assert_error_has(AD_EINVAL, "ad_squeeze", "3");
  assert_null(ad_slice(m, 2, 0, 1, 1));
  assert_error_has(AD_EINVAL, "ad_slice", "2");
  assert_null(ad_gather(m, -3, (const int64_t[]){0}, 1));
  assert_error_has(AD_EINVAL, "ad_gather", "-3");
  ad_tensor *two[2] = {m, m};
  assert_null(ad_concat(2, two, 2));
  assert_error_has(AD_EINVAL, "ad_concat", "2");
  assert_null(ad_stack(2, two, 4));
  assert_error_has(AD_EINVAL, "ad_stack", "4");
}

static void reductions_of_empty_axes_without_identity_fail(void **state) {
  (void)state;
  ad_tensor *e = ad_zeros(2, SHAPE(0, 3));
  assert_null(ad_max(e, 1, (const int[]){0}, false));
  assert_error_has(AD_EINVAL, "ad_max", "(0, 3)");
  assert_null(ad_argmax(e, 0));
  assert_error_has(AD_EINVAL, "ad_argmax", "(0, 3)");
}

/* ---- shape ops --------------------------------------------------------- */

static void reshape_count_mismatch_is_eshape(void **state) {
  (void)state;
  assert_null(ad_reshape(mat(2, 3), 2, SHAPE(4, 2)));
  assert_error_has(AD_ESHAPE, "ad_reshape", "(2, 3)", "(4, 2)");
  assert_null(ad_reshape(mat(2, 3), 2, SHAPE(-1, 4)));
  assert_error_has(AD_ESHAPE, "ad_reshape", "(2, 3)", "(-1, 4)");
}

static void reshape_with_two_unknowns_or_negative_size_is_einval(
    void **state) {
  (void)state;
  assert_null(ad_reshape(mat(2, 3), 2, SHAPE(-1, -1)));
  assert_error_has(AD_EINVAL, "ad_reshape", "-1");
  assert_null(ad_reshape(mat(2, 3), 2, SHAPE(-2, -3)));
  assert_error_has(AD_EINVAL, "ad_reshape", "-2");
}

static void bad_permutation_is_einval(void **state) {
  (void)state;
  ad_tensor *t = ad_zeros(3, SHAPE(2, 3, 4));
  assert_null(ad_permute(t, (const int[]){0, 0, 1}));
  assert_error_has(AD_EINVAL, "ad_permute", "permutation", "(2, 3, 4)");
  assert_null(ad_permute(t, (const int[]){0, 1, 3}));
  assert_error_has(AD_EINVAL, "ad_permute", "3");
  assert_null(ad_permute(t, (const int[]){0, -1, 2}));
  assert_error_has(AD_EINVAL, "ad_permute", "-1");
}

static void squeeze_of_axis_longer_than_one_is_eshape(void **state) {
  (void)state;
  assert_null(ad_squeeze(mat(2, 3), 1));
  assert_error_has(AD_ESHAPE, "ad_squeeze", "(2, 3)", "3");
}

static void broadcast_to_incompatible_shape_is_eshape(void **state) {
  (void)state;
  assert_null(ad_broadcast_to(mat(2, 3), 2, SHAPE(2, 4)));
  assert_error_has(AD_ESHAPE, "ad_broadcast_to", "(2, 3)", "(2, 4)");
  assert_null(ad_broadcast_to(mat(2, 3), 1, SHAPE(3)));
  assert_error_has(AD_ESHAPE, "ad_broadcast_to", "(2, 3)", "(3,)");
}

static void slice_step_zero_is_einval(void **state) {
  (void)state;
  assert_null(ad_slice(vec(5), 0, 0, 5, 0));
  assert_error_has(AD_EINVAL, "ad_slice", "step");
}

static void gather_index_out_of_range_is_einval(void **state) {
  (void)state;
  assert_null(ad_gather(vec(4), 0, (const int64_t[]){1, 4}, 2));
  assert_error_has(AD_EINVAL, "ad_gather", "index 4", "size 4");
  assert_null(ad_gather(vec(4), 0, (const int64_t[]){-5}, 1));
  assert_error_has(AD_EINVAL, "ad_gather", "-5");
  assert_null(ad_gather(vec(4), 0, (const int64_t[]){0}, -1));
  assert_error_has(AD_EINVAL, "ad_gather", "-1");
}

static void concat_and_stack_reject_mismatched_parts(void **state) {
  (void)state;
  ad_tensor *parts[2] = {mat(2, 3), mat(2, 4)};
  assert_null(ad_concat(2, parts, 0));
  assert_error_has(AD_ESHAPE, "ad_concat", "(2, 4)", "(2, 3)");
  assert_non_null(ad_concat(2, parts, 1));
  assert_null(ad_stack(2, parts, 0));
  assert_error_has(AD_ESHAPE, "ad_stack", "(2, 4)", "(2, 3)");
  ad_tensor *scalars[2] = {ad_scalar(1), ad_scalar(2)};
  assert_null(ad_concat(2, scalars, 0));
  assert_error_has(AD_ESHAPE, "ad_concat", "rank-0");
  assert_null(ad_concat(0, parts, 0));
  assert_error_has(AD_EINVAL, "ad_concat", "0");
  assert_null(ad_stack(1, NULL, 0));
  assert_error_has(AD_EINVAL, "ad_stack");
  ad_tensor *with_null[3] = {parts[0], NULL, parts[0]};
  assert_null(ad_concat(3, with_null, 0));
  assert_error_has(AD_EINVAL, "ad_concat", "1");
}

static void clip_with_inverted_or_nan_bounds_is_einval(void **state) {
  (void)state;
  assert_null(ad_clip(vec(3), 2, 1));
  assert_error_has(AD_EINVAL, "ad_clip", "lo 2", "hi 1");
  assert_null(ad_clip(vec(3), NAN, 1));
  assert_error_has(AD_EINVAL, "ad_clip", "NaN");
}

/* ---- linear algebra ---------------------------------------------------- */

static ad_tensor *singular(void) {
  return ad_tensor_new(2, SHAPE(2, 2), VALUES(1, 2, 2, 4));
}

static void singular_matrix_is_einval_for_inv_solve_logdet(void **state) {
  (void)state;
  assert_null(ad_inv(singular()));
  assert_error_has(AD_EINVAL, "ad_inv", "singular");
  assert_null(ad_solve(singular(), vec(2)));
  assert_error_has(AD_EINVAL, "ad_solve", "singular");
  assert_null(ad_logdet(singular()));
  assert_error_has(AD_EINVAL, "ad_logdet", "singular");
  /* det of a singular matrix is 0, not an error. */
  assert_tensor_near(ad_det(singular()), VALUES(0.0), 1, 1e-12);
}

static void non_square_matrix_is_eshape(void **state) {
  (void)state;
  ad_tensor *m = mat(2, 3);
  ad_tensor *(*ops[])(ad_tensor *) = {ad_inv, ad_det, ad_logdet,
                                      ad_cholesky};
  const char *names[] = {"ad_inv", "ad_det", "ad_logdet", "ad_cholesky"};
  for (int i = 0; i < 4; i++) {
    assert_null(ops[i](m));
    assert_error_has(AD_ESHAPE, names[i], "(2, 3)");
  }
  assert_null(ad_inv(vec(3)));
  assert_error_has(AD_ESHAPE, "ad_inv", "(3,)");
}

static void solve_with_mismatched_right_hand_side_is_eshape(void **state) {
  (void)state;
  assert_null(ad_solve(ad_eye(3), vec(2)));
  assert_error_has(AD_ESHAPE, "ad_solve", "(2,)", "(3, 3)");
  assert_null(ad_solve(ad_eye(3), mat(2, 2)));
  assert_error_has(AD_ESHAPE, "ad_solve", "(2, 2)", "(3, 3)");
}

static void cholesky_of_non_positive_definite_is_einval(void **state) {
  (void)state;
  ad_tensor *a = ad_tensor_new(2, SHAPE(2, 2), VALUES(1, 2, 2, 1));
  assert_null(ad_cholesky(a));
  assert_error_has(AD_EINVAL, "ad_cholesky", "positive definite");
  assert_null(ad_cholesky(ad_mul_scalar(ad_eye(2), -1.0)));
  assert_error_has(AD_EINVAL, "ad_cholesky", "positive definite");
}

/* ---- convolution and pooling ------------------------------------------- */

static void conv2d_rejects_wrong_ranks_and_channels(void **state) {
  (void)state;
  ad_tensor *x = ad_ones(4, SHAPE(1, 5, 5, 3));
  ad_tensor *w = ad_ones(4, SHAPE(3, 3, 3, 2));
  assert_null(ad_conv2d(ad_ones(3, SHAPE(5, 5, 3)), w, 1, 1, 0, 0));
  assert_error_has(AD_ESHAPE, "ad_conv2d", "rank 4", "(5, 5, 3)");
  assert_null(ad_conv2d(x, ad_ones(3, SHAPE(3, 3, 3)), 1, 1, 0, 0));
  assert_error_has(AD_ESHAPE, "ad_conv2d", "(3, 3, 3)");
  assert_null(ad_conv2d(x, ad_ones(4, SHAPE(3, 3, 4, 2)), 1, 1, 0, 0));
  assert_error_has(AD_ESHAPE, "ad_conv2d", "(1, 5, 5, 3)", "(3, 3, 4, 2)");
}

static void conv2d_rejects_bad_strides_padding_and_windows(void **state) {
  (void)state;
  ad_tensor *x = ad_ones(4, SHAPE(1, 5, 5, 3));
  ad_tensor *w = ad_ones(4, SHAPE(3, 3, 3, 2));
  assert_null(ad_conv2d(x, w, 0, 1, 0, 0));
  assert_error_has(AD_EINVAL, "ad_conv2d", "strides (0, 1)");
  assert_null(ad_conv2d(x, w, 1, -2, 0, 0));
  assert_error_has(AD_EINVAL, "ad_conv2d", "-2");
  assert_null(ad_conv2d(x, w, 1, 1, -1, 0));
  assert_error_has(AD_EINVAL, "ad_conv2d", "padding (-1, 0)");
  assert_null(ad_conv2d(x, ad_ones(4, SHAPE(7, 7, 3, 2)), 1, 1, 0, 0));
  assert_error_has(AD_ESHAPE, "ad_conv2d", "7x7", "(1, 5, 5, 3)");
  /* Padding makes the same window fit. */
  assert_non_null(ad_conv2d(x, ad_ones(4, SHAPE(7, 7, 3, 2)), 1, 1, 1, 1));
}

static void max_pool2d_rejects_bad_windows_and_ranks(void **state) {
  (void)state;
  ad_tensor *x = ad_ones(4, SHAPE(1, 4, 4, 2));
  assert_null(ad_max_pool2d(x, 0, 2, 1, 1));
  assert_error_has(AD_EINVAL, "ad_max_pool2d", "(0, 2)");
  assert_null(ad_max_pool2d(x, 2, 2, 1, -1));
  assert_error_has(AD_EINVAL, "ad_max_pool2d", "-1");
  assert_null(ad_max_pool2d(x, 5, 2, 1, 1));
  assert_error_has(AD_ESHAPE, "ad_max_pool2d", "5x2", "(1, 4, 4, 2)");
  assert_null(ad_max_pool2d(ad_ones(2, SHAPE(4, 4)), 2, 2, 1, 1));
  assert_error_has(AD_ESHAPE, "ad_max_pool2d", "(4, 4)");
}

/* ---- tapes, levels, variables and functions ----------------------------- */

static void tape_functions_reject_bad_arguments(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *g[1];
  assert_null(ad_tape_begin(4u));
  assert_error_has(AD_EINVAL, "ad_tape_begin", "0x4");
  ad_tape *tape = ad_tape_begin(AD_TAPE_PERSISTENT);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_exp(x);
  ad_tape_end(tape);
  assert_int_equal(ad_tape_gradients(tape, y, NULL, -1, &x, g, 0),
                   AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_gradients", "-1");
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 1, &x, NULL, 0),
                   AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_gradients", "grads");
  assert_int_equal(ad_tape_gradients(tape, y, NULL, 1, NULL, g, 0),
                   AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_gradients");
  assert_int_equal(ad_tape_gradients(tape, NULL, NULL, 1, &x, g, 0),
                   AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_gradients", "target");
  assert_null(ad_tape_jacobian(NULL, y, x));
  assert_error_has(AD_EINVAL, "ad_tape_jacobian", "tape");
  assert_null(ad_tape_gradient(tape, ad_exp(ad_ones(1, SHAPE(2))), x));
  assert_error_has(AD_ESHAPE, "ad_tape_gradient", "(2,)");
  ad_tape_free(tape);
}

static void jacobian_of_rank_above_eight_is_eshape(void **state) {
  (void)state;
  /* Target rank 5 and source rank 4 would make a rank-9 Jacobian. */
  ad_tensor *x = ad_ones(4, SHAPE(1, 1, 1, 2));
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_expand_dims(ad_square(x), 0);
  ad_tape_end(tape);
  assert_null(ad_tape_jacobian(tape, y, x));
  assert_error_has(AD_ESHAPE, "ad_tape_jacobian", "rank 9");
  ad_tape_free(tape);
}

static void watching_a_spent_tape_is_estate(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_tensor *y = ad_exp(x);
  assert_int_equal(ad_tape_end(tape), AD_OK);
  assert_non_null(ad_tape_gradient(tape, y, x));
  assert_int_equal(ad_tape_watch(tape, x), AD_ESTATE);
  assert_error_has(AD_ESTATE, "ad_tape_watch", "AD_TAPE_PERSISTENT");
  ad_tape_free(tape);
}

static void variable_functions_reject_bad_arguments(void **state) {
  (void)state;
  assert_null(ad_var_new("v", NULL));
  assert_error_has(AD_EINVAL, "ad_var_new", "init");
  assert_null(ad_var_value(NULL));
  assert_error_has(AD_EINVAL, "ad_var_value");
  assert_string_equal(ad_var_name(NULL), "");
  assert_error_has(AD_EINVAL, "ad_var_name");
  assert_int_equal(ad_var_assign(NULL, ad_scalar(1)), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_var_assign");
  ad_var *v = ad_var_new("weights", ad_zeros(2, SHAPE(2, 3)));
  assert_int_equal(ad_var_assign(v, ad_zeros(2, SHAPE(3, 2))), AD_ESHAPE);
  assert_error_has(AD_ESHAPE, "ad_var_assign", "weights", "(2, 3)",
                   "(3, 2)");
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *y = ad_sum_all(ad_var_value(v));
  ad_tape_end(tape);
  assert_null(ad_tape_variable(NULL, 0));
  assert_error_has(AD_EINVAL, "ad_tape_variable");
  assert_null(ad_tape_variable(tape, 3));
  assert_error_has(AD_EINVAL, "ad_tape_variable", "3", "1 variables");
  ad_var *none = NULL;
  ad_tensor *g[1];
  assert_int_equal(ad_tape_var_gradients(tape, y, 1, &none, g), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_var_gradients", "vars[0]");
  assert_int_equal(ad_tape_var_gradients(NULL, y, 1, &v, g), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_var_gradients");
  assert_int_equal(ad_tape_var_gradients(tape, y, -2, &v, g), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_var_gradients", "-2");
  ad_tape_free(tape);
  ad_var_free(v);
  ad_var_free(NULL);
  assert_int_equal(ad_error(), AD_OK);
}

static void forward_functions_reject_bad_arguments(void **state) {
  (void)state;
  ad_tensor *x = ad_ones(2, SHAPE(2, 2)), *t = ad_ones(1, SHAPE(4));
  assert_null(ad_fwd_begin(1, &x, &t));
  assert_error_has(AD_ESHAPE, "ad_fwd_begin", "(4,)", "(2, 2)");
  assert_null(ad_fwd_begin(-3, &x, &t));
  assert_error_has(AD_EINVAL, "ad_fwd_begin", "-3");
  assert_null(ad_fwd_jvp(NULL, x));
  assert_error_has(AD_EINVAL, "ad_fwd_jvp");
  assert_false(ad_fwd_has_tangent(NULL, x));
  ad_fwd *acc = ad_fwd_begin(1, &x, &x);
  ad_tape *tape = ad_tape_begin(0);
  assert_int_equal(ad_fwd_end(acc), AD_ESTATE);
  assert_error_has(AD_ESTATE, "ad_fwd_end", "tape");
  ad_tape_free(tape);
  assert_int_equal(ad_fwd_end(acc), AD_OK);
}

static ad_tensor *identity_fn(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_mul_scalar(x, 1.0);
}

static ad_tensor *pair_fn(int n, ad_tensor *const *xs, void *ctx) {
  (void)ctx;
  (void)n;
  return ad_mul(xs[0], xs[1]);
}

static void functional_api_rejects_bad_arguments(void **state) {
  (void)state;
  ad_tensor *x = ad_ones(1, SHAPE(3)), *g[2], *out;
  assert_null(ad_grad(identity_fn, NULL, x));
  assert_error_has(AD_ESHAPE, "ad_grad", "(3,)");
  assert_null(ad_vjp(identity_fn, NULL, x, ad_ones(1, SHAPE(2)), NULL));
  assert_error_has(AD_ESHAPE, "ad_vjp", "(2,)", "(3,)");
  assert_null(ad_hvp(identity_fn, NULL, x, ad_ones(1, SHAPE(4))));
  assert_error_has(AD_ESHAPE, "ad_hvp", "(4,)", "(3,)");
  ad_tensor *xs[2] = {x, ad_ones(1, SHAPE(2))};
  assert_int_equal(ad_grad_n(pair_fn, NULL, 2, xs, g, NULL), AD_ESHAPE);
  assert_error_has(AD_ESHAPE, "ad_mul", "(3,)", "(2,)");
  assert_int_equal(ad_jvp_n(pair_fn, NULL, 2, xs, NULL, &out, NULL),
                   AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_jvp_n");
  assert_int_equal(ad_jvp_n(pair_fn, NULL, -1, xs, xs, &out, NULL),
                   AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_jvp_n");
  assert_null(ad_jacobian(NULL, NULL, x));
  assert_error_has(AD_EINVAL, "ad_jacobian");
  assert_null(ad_hessian(identity_fn, NULL, x));
  assert_error_has(AD_ESHAPE, "(3,)");
  ad_tensor *value = x;
  assert_null(ad_value_and_grad(identity_fn, NULL, x, &value));
  assert_null(value);
  assert_error_has(AD_ESHAPE, "ad_value_and_grad", "(3,)");
  assert_null(ad_jacfwd(identity_fn, NULL, NULL));
  assert_error_has(AD_EINVAL, "ad_jacfwd");
  assert_null(ad_jvp(identity_fn, NULL, x, ad_ones(1, SHAPE(4)), NULL));
  assert_error_has(AD_ESHAPE, "ad_jvp", "(4,)", "(3,)");
}

static void arange_with_too_many_elements_is_einval(void **state) {
  (void)state;
  assert_null(ad_arange(0, 1e18, 0.5));
  assert_error_has(AD_EINVAL, "ad_arange", "too many");
  assert_null(ad_linspace(0, NAN, 3));
  assert_error_has(AD_EINVAL, "ad_linspace", "nan");
}

static void random_tensor_of_bad_rank_is_einval(void **state) {
  (void)state;
  const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_null(ad_rand_uniform(9, nine, 0, 1));
  assert_error_has(AD_EINVAL, "ad_rand_uniform", "rank 9");
  assert_null(ad_rand_normal(-1, nine, 0, 1));
  assert_error_has(AD_EINVAL, "ad_rand_normal", "rank -1");
}

static void read_with_negative_count_is_eshape(void **state) {
  (void)state;
  double buf[1];
  assert_int_equal(ad_read(vec(3), buf, -1), AD_ESHAPE);
  assert_error_has(AD_ESHAPE, "ad_read", "-1", "(3,)");
}

static void rank_eight_shapes_are_named_in_full(void **state) {
  (void)state;
  ad_tensor *a = ad_ones(8, SHAPE(2, 1, 2, 1, 2, 1, 2, 3));
  ad_tensor *b = ad_ones(8, SHAPE(2, 1, 2, 1, 2, 1, 2, 4));
  assert_null(ad_sub(a, b));
  assert_error_has(AD_ESHAPE, "ad_sub", "(2, 1, 2, 1, 2, 1, 2, 3)",
                   "(2, 1, 2, 1, 2, 1, 2, 4)");
}

static void axis_ops_on_scalars_are_einval(void **state) {
  (void)state;
  ad_tensor *s = ad_scalar(1.0);
  assert_null(ad_squeeze(s, 0));
  assert_error_has(AD_EINVAL, "ad_squeeze", "rank 0");
  assert_null(ad_slice(s, 0, 0, 1, 1));
  assert_error_has(AD_EINVAL, "ad_slice", "rank 0");
  assert_null(ad_gather(s, 0, (const int64_t[]){0}, 1));
  assert_error_has(AD_EINVAL, "ad_gather", "rank 0");
  assert_null(ad_softmax(s, 0));
  assert_error_has(AD_EINVAL, "ad_softmax", "rank 0");
  assert_null(ad_expand_dims(mat(2, 2), -4));
  assert_error_has(AD_EINVAL, "ad_expand_dims", "-4");
}

static void solve_with_unbroadcastable_batches_is_eshape(void **state) {
  (void)state;
  ad_tensor *a = ad_broadcast_to(ad_eye(2), 3, SHAPE(3, 2, 2));
  ad_tensor *b = ad_ones(3, SHAPE(4, 2, 1));
  assert_null(ad_solve(a, b));
  assert_error_has(AD_ESHAPE, "ad_solve", "(3, 2, 2)", "(4, 2, 1)");
}

static void conv2d_with_empty_filter_is_eshape(void **state) {
  (void)state;
  ad_tensor *x = ad_ones(4, SHAPE(1, 5, 5, 3));
  assert_null(ad_conv2d(x, ad_ones(4, SHAPE(0, 3, 3, 2)), 1, 1, 0, 0));
  assert_error_has(AD_ESHAPE, "ad_conv2d", "(0, 3, 3, 2)");
}

static void every_tape_function_rejects_a_null_tape(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(1.0), *g[1];
  ad_var *v = ad_var_new("v", x);
  assert_int_equal(ad_tape_watch(NULL, x), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_watch", "tape");
  assert_int_equal(ad_tape_end(NULL), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_end", "tape");
  assert_null(ad_tape_gradient(NULL, x, x));
  assert_error_has(AD_EINVAL, "ad_tape_gradient", "tape");
  assert_int_equal(ad_tape_gradients(NULL, x, NULL, 1, &x, g, 0),
                   AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_gradients", "tape");
  assert_null(ad_tape_jacobian(NULL, x, x));
  assert_error_has(AD_EINVAL, "ad_tape_jacobian", "tape");
  assert_int_equal(ad_tape_size(NULL), -1);
  assert_error_has(AD_EINVAL, "ad_tape_size", "tape");
  assert_int_equal(ad_tape_num_variables(NULL), -1);
  assert_error_has(AD_EINVAL, "ad_tape_num_variables", "tape");
  assert_null(ad_tape_variable(NULL, 0));
  assert_error_has(AD_EINVAL, "ad_tape_variable", "tape");
  assert_int_equal(ad_tape_var_gradients(NULL, x, 1, &v, g), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_tape_var_gradients", "tape");
  ad_tape_free(NULL);
  assert_int_equal(ad_error(), AD_OK);
  ad_var_free(v);
}

/* ---- custom ops -------------------------------------------------------- */

/* What the callbacks of the probe op saw, for the test to check. */
typedef struct {
  ad_status fail_with;      /* forward returns this unless AD_OK */
  bool leave_null;          /* forward leaves its output NULL */
  ad_status vjp_fail_with;  /* vjp returns this unless AD_OK */
  ad_status save_in_vjp, saved_bad, input_bad, output_bad, output_in_fwd;
} probe;

static ad_status probe_forward(ad_custom_ctx *c, ad_tensor *const *in,
                               ad_tensor **out, void *user) {
  probe *p = user;
  if (p->fail_with != AD_OK) return p->fail_with;
  ad_error_clear();
  p->output_in_fwd = ad_custom_output(c, 0) ? AD_OK : ad_error();
  ad_error_clear();
  if (ad_custom_save(c, in[0]) != AD_OK) return ad_error();
  out[0] = p->leave_null ? NULL : ad_square(in[0]);
  return AD_OK;
}

static ad_status probe_vjp(ad_custom_ctx *c, ad_tensor *const *gout,
                           ad_tensor **gin, void *user) {
  probe *p = user;
  if (p->vjp_fail_with != AD_OK) return p->vjp_fail_with;
  p->save_in_vjp = ad_custom_save(c, gout[0]);
  ad_error_clear();
  p->saved_bad = ad_custom_saved(c, 5) ? AD_OK : ad_error();
  ad_error_clear();
  p->input_bad = ad_custom_input(c, -1) ? AD_OK : ad_error();
  ad_error_clear();
  p->output_bad = ad_custom_output(c, 3) ? AD_OK : ad_error();
  ad_error_clear();
  gin[0] = ad_mul(ad_mul_scalar(ad_custom_saved(c, 0), 2.0), gout[0]);
  return gin[0] ? AD_OK : ad_error();
}

static const ad_custom_op PROBE = {"probe_op", 1, 1, probe_forward,
                                   probe_vjp, NULL};

static void custom_apply_rejects_bad_op_descriptions(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *none = NULL, *out[2] = {x, x};
  probe p = {0};
  assert_int_equal(ad_custom_apply(NULL, &p, &x, out), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_custom_apply", "op");
  ad_custom_op op = PROBE;
  op.forward = NULL;
  assert_int_equal(ad_custom_apply(&op, &p, &x, out), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_custom_apply", "probe_op", "forward");
  op = PROBE;
  op.nout = 0;
  assert_int_equal(ad_custom_apply(&op, &p, &x, out), AD_EINVAL);
  assert_error_has(AD_EINVAL, "probe_op", "0 outputs");
  op.nout = 17;
  assert_int_equal(ad_custom_apply(&op, &p, &x, out), AD_EINVAL);
  assert_error_has(AD_EINVAL, "probe_op", "17 outputs");
  op = PROBE;
  op.nin = -1;
  assert_int_equal(ad_custom_apply(&op, &p, &x, out), AD_EINVAL);
  assert_error_has(AD_EINVAL, "probe_op", "-1 inputs");
  assert_int_equal(ad_custom_apply(&PROBE, &p, &x, NULL), AD_EINVAL);
  assert_error_has(AD_EINVAL, "probe_op", "out");
  assert_int_equal(ad_custom_apply(&PROBE, &p, NULL, out), AD_EINVAL);
  assert_error_has(AD_EINVAL, "probe_op", "in");
  assert_int_equal(ad_custom_apply(&PROBE, &p, &none, out), AD_EINVAL);
  assert_null(out[0]);
  assert_error_has(AD_EINVAL, "probe_op", "input 0");
}

static void failing_forward_callback_fails_the_call(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(2.0), *out[1] = {x};
  probe p = {.fail_with = AD_EIO};
  assert_int_equal(ad_custom_apply(&PROBE, &p, &x, out), AD_EIO);
  assert_null(out[0]);
  assert_error_has(AD_EIO, "probe_op", "forward");
  probe q = {.leave_null = true};
  out[0] = x;
  assert_int_equal(ad_custom_apply(&PROBE, &q, &x, out), AD_EINVAL);
  assert_null(out[0]);
  assert_error_has(AD_EINVAL, "probe_op", "output 0");
}

static void custom_ctx_misuse_inside_callbacks_is_reported(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0), *y;
  probe p = {0};
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  assert_int_equal(ad_custom_apply(&PROBE, &p, &x, &y), AD_OK);
  ad_tape_end(tape);
  assert_int_equal(p.output_in_fwd, AD_ESTATE);
  assert_tensor_near(ad_tape_gradient(tape, y, x), VALUES(6.0), 1, 1e-12);
  assert_int_equal(p.save_in_vjp, AD_ESTATE);
  assert_int_equal(p.saved_bad, AD_EINVAL);
  assert_int_equal(p.input_bad, AD_EINVAL);
  assert_int_equal(p.output_bad, AD_EINVAL);
  ad_tape_free(tape);
}

static void custom_ctx_functions_reject_null(void **state) {
  (void)state;
  assert_int_equal(ad_custom_save(NULL, ad_scalar(1)), AD_EINVAL);
  assert_error_has(AD_EINVAL, "ad_custom_save");
  assert_null(ad_custom_saved(NULL, 0));
  assert_error_has(AD_EINVAL, "ad_custom_saved");
  assert_null(ad_custom_input(NULL, 0));
  assert_error_has(AD_EINVAL, "ad_custom_input");
  assert_null(ad_custom_output(NULL, 0));
  assert_error_has(AD_EINVAL, "ad_custom_output");
}

static void failing_vjp_callback_fails_the_gradient(void **state) {
  (void)state;
  ad_tensor *x = ad_scalar(3.0), *y;
  probe p = {.vjp_fail_with = AD_ECHECK};
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  assert_int_equal(ad_custom_apply(&PROBE, &p, &x, &y), AD_OK);
  ad_tape_end(tape);
  assert_null(ad_tape_gradient(tape, y, x));
  assert_error_has(AD_ECHECK, "probe_op", "VJP");
  ad_tape_free(tape);
}

static void custom_op_without_rules_is_eunimpl(void **state) {
  (void)state;
  ad_custom_op op = PROBE;
  op.vjp = NULL;
  op.name = "ruleless_op";
  ad_tensor *x = ad_scalar(3.0), *y;
  probe p = {0};
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  assert_int_equal(ad_custom_apply(&op, &p, &x, &y), AD_OK);
  ad_tape_end(tape);
  assert_tensor_near(y, VALUES(9.0), 1, 0);
  assert_null(ad_tape_gradient(tape, y, x));
  assert_error_has(AD_EUNIMPL, "ruleless_op");
  ad_tape_free(tape);
  ad_tensor *one = ad_scalar(1.0);
  ad_fwd *acc = ad_fwd_begin(1, &x, &one);
  assert_int_equal(ad_custom_apply(&op, &p, &x, &y), AD_EUNIMPL);
  assert_error_has(AD_EUNIMPL, "ruleless_op");
  ad_fwd_end(acc);
}

static ad_tensor *square_fn(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_square(x);
}

static void checkpoint_rejects_null_function_and_input(void **state) {
  (void)state;
  assert_null(ad_checkpoint(NULL, NULL, ad_scalar(1)));
  assert_error_has(AD_EINVAL, "ad_checkpoint", "function");
  assert_null(ad_checkpoint(square_fn, NULL, NULL));
  assert_error_has(AD_EINVAL, "ad_checkpoint", "x");
  make_root_error();
  assert_null(ad_checkpoint(square_fn, NULL, NULL));
  assert_error_has(AD_ESHAPE, ROOT_TEXT);
}

/* ---- out of memory ----------------------------------------------------- */

static ad_tensor *oom_inner(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(ad_sin(x), ad_exp(x)));
}

/* A small program: a few ops, a tape gradient, a forward-over-reverse
 * Hessian-vector product and a variable.  Returns the status at the end
 * and, on success, the four numbers it computed. */
static ad_status oom_program(double *out) {
  ad_error_clear();
  ad_scope_begin();
  ad_tensor *x = ad_tensor_new(1, SHAPE(2), VALUES(0.5, -1.0));
  ad_var *w = ad_var_new("w", x);
  ad_tape *tape = ad_tape_begin(0);
  ad_tensor *wv = ad_var_value(w);
  ad_tensor *y = oom_inner(wv, NULL);
  ad_tape_end(tape);
  ad_tensor *g = ad_tape_gradient(tape, y, wv);
  ad_tape_free(tape);
  ad_var_free(w);
  ad_tensor *hv = ad_hvp(oom_inner, NULL, x, g);
  ad_tensor *both = ad_concat(2, (ad_tensor *[]){g, hv}, 0);
  ad_status st = ad_error();
  if (st == AD_OK && ad_read(both, out, 4) != AD_OK) st = ad_error();
  ad_scope_end();
  return st;
}

static void out_of_memory_ends_in_enomem_never_a_crash(void **state) {
  (void)state;
  double expect[4];
  assert_int_equal(oom_program(expect), AD_OK);
  /* Fail the k-th allocation for k = 1, 2, ... until 50 runs in a row
   * succeed, which means k has passed the program's last allocation. */
  int failures = 0, streak = 0;
  for (int k = 1; k <= 20000 && streak < 50; k++) {
    double got[4];
    ad__fail_alloc_after(k);
    ad_status st = oom_program(got);
    ad__fail_alloc_after(0);
    if (st == AD_OK) {
      /* The fault never fired or was recovered from: the numbers must
       * then be right. */
      for (int i = 0; i < 4; i++)
        if (fabs(got[i] - expect[i]) > 1e-12)
          fail_msg("run %d succeeded with a wrong value", k);
      streak++;
    } else if (st == AD_ENOMEM) {
      failures++;
      streak = 0;
    } else {
      fail_msg("run %d ended in %s: %s", k, ad_strerror(st),
               ad_error_message());
    }
  }
  ad_error_clear();
  assert_int_equal(streak, 50);
  /* The program allocates dozens of times. */
  assert_true(failures >= 20);
}

static ad_tensor *oom_cubic(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_sum_all(ad_mul(ad_square(x), ad_tanh(x)));
}

static ad_tensor *oom_vector(ad_tensor *x, void *ctx) {
  (void)ctx;
  return ad_softmax(ad_mul_scalar(x, 2.0), 0);
}

/* Forward mode in every nesting: a Hessian (forward over reverse), a
 * forward Jacobian, and two nested levels.  Returns the status and, on
 * success, 3 numbers. */
static ad_status oom_forward_program(double *out) {
  ad_error_clear();
  ad_scope_begin();
  ad_tensor *x = ad_tensor_new(1, SHAPE(2), VALUES(0.3, -0.8));
  ad_tensor *h = ad_hessian(oom_cubic, NULL, x);
  ad_tensor *j = ad_jacfwd(oom_vector, NULL, x);
  ad_tensor *s = ad_scalar(0.7), *one = ad_scalar(1.0);
  ad_fwd *outer = ad_fwd_begin(1, &s, &one);
  ad_fwd *inner = ad_fwd_begin(1, &s, &one);
  ad_tensor *d1 = ad_fwd_jvp(inner, ad_sin(s));
  ad_fwd_end(inner);
  ad_tensor *d2 = ad_fwd_jvp(outer, d1);
  ad_fwd_end(outer);
  ad_status st = ad_error();
  if (st == AD_OK) {
    out[0] = ad_item(ad_sum_all(h));
    out[1] = ad_item(ad_sum_all(ad_abs(j)));
    out[2] = ad_item(d2);
    st = ad_error();
  }
  ad_scope_end();
  return st;
}

static void out_of_memory_in_forward_mode_ends_in_enomem(void **state) {
  (void)state;
  double expect[3];
  assert_int_equal(oom_forward_program(expect), AD_OK);
  assert_true(fabs(expect[2] + sin(0.7)) < 1e-12);
  int failures = 0, streak = 0;
  for (int k = 1; k <= 20000 && streak < 50; k++) {
    double got[3];
    ad__fail_alloc_after(k);
    ad_status st = oom_forward_program(got);
    ad__fail_alloc_after(0);
    if (st == AD_OK) {
      for (int i = 0; i < 3; i++)
        if (fabs(got[i] - expect[i]) > 1e-12)
          fail_msg("run %d succeeded with a wrong value", k);
      streak++;
    } else if (st == AD_ENOMEM) {
      failures++;
      streak = 0;
    } else {
      fail_msg("run %d ended in %s: %s", k, ad_strerror(st),
               ad_error_message());
    }
  }
  ad_error_clear();
  assert_int_equal(streak, 50);
  assert_true(failures >= 20);
}

static void out_of_memory_in_creation_names_the_op(void **state) {
  (void)state;
  ad__fail_alloc_after(1);
  assert_null(ad_zeros(2, SHAPE(3, 4)));
  ad__fail_alloc_after(0);
  assert_error_has(AD_ENOMEM, "ad_zeros");
  ad__fail_alloc_after(2); /* the header succeeds, the data block fails */
  assert_null(ad_ones(2, SHAPE(3, 4)));
  ad__fail_alloc_after(0);
  assert_error_has(AD_ENOMEM, "ad_ones", "(3, 4)");
  ad__fail_alloc_after(1);
  assert_null(ad_exp(ad_scalar(1.0)));
  ad__fail_alloc_after(0);
  assert_error_has(AD_ENOMEM, "ad_scalar");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(every_unary_op_rejects_null),
      scoped_test(every_binary_op_rejects_null_on_either_side),
      scoped_test(null_input_keeps_the_first_error),
      scoped_test(chain_of_calls_reports_its_root_cause_once),
      scoped_test(null_inputs_to_tensor_functions),
      scoped_test(null_shape_with_positive_rank_is_einval),
      scoped_test(every_broadcasting_op_rejects_incompatible_shapes),
      scoped_test(where_rejects_incompatible_condition),
      scoped_test(matmul_names_inner_dimensions),
      scoped_test(matmul_rejects_scalars_and_mismatched_batches),
      scoped_test(negative_size_is_einval),
      scoped_test(rank_above_eight_is_einval),
      scoped_test(element_count_overflowing_int64_is_einval),
      scoped_test(count_too_large_for_bytes_is_einval),
      scoped_test(bad_ranges_and_distributions_are_einval),
      scoped_test(item_of_several_elements_is_eshape),
      scoped_test(read_into_wrong_size_is_eshape),
      scoped_test(fprint_rejects_null_file_and_shows_null_tensors),
      scoped_test(print_of_null_shows_and_keeps_the_error),
      scoped_test(status_codes_have_descriptions),
      scoped_test(successful_calls_leave_the_error_alone),
      cmocka_unit_test(scope_end_without_scope_is_estate),
      scoped_test(every_reduction_rejects_bad_and_repeated_axes),
      scoped_test(axis_ops_reject_out_of_range_axes),
      scoped_test(reductions_of_empty_axes_without_identity_fail),
      scoped_test(reshape_count_mismatch_is_eshape),
      scoped_test(reshape_with_two_unknowns_or_negative_size_is_einval),
      scoped_test(bad_permutation_is_einval),
      scoped_test(squeeze_of_axis_longer_than_one_is_eshape),
      scoped_test(broadcast_to_incompatible_shape_is_eshape),
      scoped_test(slice_step_zero_is_einval),
      scoped_test(gather_index_out_of_range_is_einval),
      scoped_test(concat_and_stack_reject_mismatched_parts),
      scoped_test(clip_with_inverted_or_nan_bounds_is_einval),
      scoped_test(singular_matrix_is_einval_for_inv_solve_logdet),
      scoped_test(non_square_matrix_is_eshape),
      scoped_test(solve_with_mismatched_right_hand_side_is_eshape),
      scoped_test(cholesky_of_non_positive_definite_is_einval),
      scoped_test(conv2d_rejects_wrong_ranks_and_channels),
      scoped_test(conv2d_rejects_bad_strides_padding_and_windows),
      scoped_test(max_pool2d_rejects_bad_windows_and_ranks),
      scoped_test(tape_functions_reject_bad_arguments),
      scoped_test(jacobian_of_rank_above_eight_is_eshape),
      scoped_test(watching_a_spent_tape_is_estate),
      scoped_test(variable_functions_reject_bad_arguments),
      scoped_test(forward_functions_reject_bad_arguments),
      scoped_test(functional_api_rejects_bad_arguments),
      scoped_test(arange_with_too_many_elements_is_einval),
      scoped_test(random_tensor_of_bad_rank_is_einval),
      scoped_test(read_with_negative_count_is_eshape),
      scoped_test(rank_eight_shapes_are_named_in_full),
      scoped_test(axis_ops_on_scalars_are_einval),
      scoped_test(solve_with_unbroadcastable_batches_is_eshape),
      scoped_test(conv2d_with_empty_filter_is_eshape),
      scoped_test(every_tape_function_rejects_a_null_tape),
      scoped_test(custom_apply_rejects_bad_op_descriptions),
      scoped_test(failing_forward_callback_fails_the_call),
      scoped_test(custom_ctx_misuse_inside_callbacks_is_reported),
      scoped_test(custom_ctx_functions_reject_null),
      scoped_test(failing_vjp_callback_fails_the_gradient),
      scoped_test(custom_op_without_rules_is_eunimpl),
      scoped_test(checkpoint_rejects_null_function_and_input),
      scoped_test(out_of_memory_ends_in_enomem_never_a_crash),
      scoped_test(out_of_memory_in_forward_mode_ends_in_enomem),
      scoped_test(out_of_memory_in_creation_names_the_op),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
