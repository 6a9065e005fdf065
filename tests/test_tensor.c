/* Tests of the tensor core: constructors, accessors, errors, scopes,
 * random tensors and per-thread state. */
#include <float.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"
#include "testutil.h"

/* References held on t: tests see the scope machinery through them. */
static long refs(const ad_tensor *t) { return atomic_load(&t->refs); }

/* ------------------------------------------------------------------------
 * Constructors
 * ---------------------------------------------------------------------- */

static void test_tensor_new_copies_shape_and_values(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6));
  assert_shape(t, 2, 2, 3);
  assert_int_equal(ad_numel(t), 6);
  assert_tensor_near(t, VALUES(1, 2, 3, 4, 5, 6), 6, 0);
}

static void test_tensor_new_owns_a_copy_of_the_data(void **state) {
  (void)state;
  double data[2] = {1, 2};
  int64_t shape[1] = {2};
  ad_tensor *t = ad_tensor_new(1, shape, data);
  data[0] = 99;
  shape[0] = 5;
  assert_shape(t, 1, 2);
  assert_tensor_near(t, VALUES(1, 2), 2, 0);
}

static void test_tensor_new_without_data_is_zeros(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(2, SHAPE(2, 2), NULL);
  assert_tensor_near(t, VALUES(0, 0, 0, 0), 4, 0);
}

static void test_scalar_has_rank0(void **state) {
  (void)state;
  ad_tensor *t = ad_scalar(2.5);
  assert_non_null(t);
  assert_int_equal(ad_ndim(t), 0);
  assert_int_equal(ad_numel(t), 1);
  assert_true(ad_item(t) == 2.5);
}

static void test_rank0_from_tensor_new(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(0, NULL, VALUES(-4));
  assert_int_equal(ad_ndim(t), 0);
  assert_true(ad_item(t) == -4);
}

static void test_zeros_ones_full(void **state) {
  (void)state;
  assert_tensor_near(ad_zeros(1, SHAPE(3)), VALUES(0, 0, 0), 3, 0);
  assert_tensor_near(ad_ones(2, SHAPE(1, 2)), VALUES(1, 1), 2, 0);
  ad_tensor *f = ad_full(2, SHAPE(2, 1), -7.5);
  assert_shape(f, 2, 2, 1);
  assert_tensor_near(f, VALUES(-7.5, -7.5), 2, 0);
}

static void test_size_zero_axis(void **state) {
  (void)state;
  ad_tensor *t = ad_zeros(3, SHAPE(2, 0, 3));
  assert_shape(t, 3, 2, 0, 3);
  assert_int_equal(ad_numel(t), 0);
  /* Nothing to copy, so no buffer is needed. */
  assert_int_equal(ad_read(t, NULL, 0), AD_OK);
}

static void test_rank8_is_allowed(void **state) {
  (void)state;
  ad_tensor *t = ad_ones(8, SHAPE(1, 2, 1, 2, 1, 2, 1, 2));
  assert_shape(t, 8, 1, 2, 1, 2, 1, 2, 1, 2);
  assert_int_equal(ad_numel(t), 16);
}

static void test_arange(void **state) {
  (void)state;
  assert_tensor_near(ad_arange(0, 5, 1), VALUES(0, 1, 2, 3, 4), 5, 0);
  assert_tensor_near(ad_arange(0, 1, 0.25), VALUES(0, 0.25, 0.5, 0.75), 4,
                     0);
}

static void test_arange_negative_step(void **state) {
  (void)state;
  ad_tensor *t = ad_arange(5, 0, -2);
  assert_shape(t, 1, 3);
  assert_tensor_near(t, VALUES(5, 3, 1), 3, 0);
}

static void test_arange_empty_range(void **state) {
  (void)state;
  assert_shape(ad_arange(3, 1, 1), 1, 0);
  assert_shape(ad_arange(1, 3, -1), 1, 0);
}

static void test_linspace_sizes_0_and_1(void **state) {
  (void)state;
  assert_shape(ad_linspace(0, 1, 0), 1, 0);
  ad_tensor *one = ad_linspace(3, 7, 1);
  assert_shape(one, 1, 1);
  assert_true(ad_item(one) == 3);
}

static void test_linspace_hits_endpoints_exactly(void **state) {
  (void)state;
  ad_tensor *t = ad_linspace(0, 1, 5);
  assert_tensor_near(t, VALUES(0, 0.25, 0.5, 0.75, 1), 5, 0);
  /* 0.1 + 6 * (0.7 - 0.1) / 6 is not 0.7 in floating point. */
  double v[7];
  assert_int_equal(ad_read(ad_linspace(0.1, 0.7, 7), v, 7), AD_OK);
  assert_true(v[0] == 0.1);
  assert_true(v[6] == 0.7);
}

static void test_eye(void **state) {
  (void)state;
  ad_tensor *t = ad_eye(3);
  assert_shape(t, 2, 3, 3);
  assert_tensor_near(t, VALUES(1, 0, 0, 0, 1, 0, 0, 0, 1), 9, 0);
  assert_shape(ad_eye(0), 2, 0, 0);
}

/* ------------------------------------------------------------------------
 * Accessors
 * ---------------------------------------------------------------------- */

static void test_shape_array_belongs_to_tensor(void **state) {
  (void)state;
  ad_tensor *t = ad_zeros(3, SHAPE(4, 5, 6));
  const int64_t *s = ad_shape(t);
  assert_int_equal(s[0], 4);
  assert_int_equal(s[1], 5);
  assert_int_equal(s[2], 6);
}

static void test_accessors_of_null(void **state) {
  (void)state;
  assert_int_equal(ad_ndim(NULL), -1);
  assert_error(AD_EINVAL, "ad_ndim");
  assert_null(ad_shape(NULL));
  assert_error(AD_EINVAL, "ad_shape");
  assert_int_equal(ad_numel(NULL), -1);
  assert_error(AD_EINVAL, "ad_numel");
}

static void test_item_of_one_element_any_rank(void **state) {
  (void)state;
  assert_true(ad_item(ad_full(3, SHAPE(1, 1, 1), 8)) == 8);
}

static void test_item_of_two_elements_is_eshape(void **state) {
  (void)state;
  assert_true(isnan(ad_item(ad_zeros(1, SHAPE(2)))));
  assert_error(AD_ESHAPE, "ad_item");
}

static void test_item_of_null_is_nan(void **state) {
  (void)state;
  assert_true(isnan(ad_item(NULL)));
  assert_error(AD_EINVAL, "ad_item");
}

static void test_read_copies_row_major(void **state) {
  (void)state;
  double v[4] = {0};
  ad_tensor *t = ad_tensor_new(2, SHAPE(2, 2), VALUES(1, 2, 3, 4));
  assert_int_equal(ad_read(t, v, 4), AD_OK);
  assert_true(v[0] == 1 && v[1] == 2 && v[2] == 3 && v[3] == 4);
}

static void test_read_wrong_count_is_eshape(void **state) {
  (void)state;
  double v[3];
  ad_tensor *t = ad_zeros(2, SHAPE(2, 2));
  assert_int_equal(ad_read(t, v, 3), AD_ESHAPE);
  assert_error(AD_ESHAPE, "ad_read: buffer holds 3 values");
}

static void test_read_null_arguments(void **state) {
  (void)state;
  double v[1];
  assert_int_equal(ad_read(ad_zeros(1, SHAPE(2)), NULL, 2), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_read");
  assert_int_equal(ad_read(NULL, v, 1), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_read");
}

/* ------------------------------------------------------------------------
 * Constructor errors
 * ---------------------------------------------------------------------- */

static void test_negative_size_is_einval(void **state) {
  (void)state;
  assert_null(ad_zeros(2, SHAPE(2, -1)));
  assert_error(AD_EINVAL, "ad_zeros: negative size -1 at axis 1");
}

static void test_rank_outside_0_to_8_is_einval(void **state) {
  (void)state;
  assert_null(ad_ones(9, SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1)));
  assert_error(AD_EINVAL, "ad_ones: rank 9");
  assert_null(ad_tensor_new(-1, SHAPE(1), NULL));
  assert_error(AD_EINVAL, "ad_tensor_new: rank -1");
}

static void test_null_shape_with_rank_is_einval(void **state) {
  (void)state;
  assert_null(ad_full(2, NULL, 1));
  assert_error(AD_EINVAL, "ad_full: shape is NULL");
}

static void test_element_count_overflow_is_einval(void **state) {
  (void)state;
  assert_null(ad_zeros(2, SHAPE((int64_t)1 << 62, 4)));
  assert_error(AD_EINVAL, "overflows");
  /* 2^62 elements fit int64 but not their bytes. */
  assert_null(ad_zeros(2, SHAPE((int64_t)1 << 60, 4)));
  assert_error(AD_EINVAL, "too large");
}

static void test_arange_bad_step_or_bounds(void **state) {
  (void)state;
  assert_null(ad_arange(0, 1, 0));
  assert_error(AD_EINVAL, "ad_arange");
  assert_null(ad_arange(0, 1, NAN));
  assert_error(AD_EINVAL, "step=nan");
  assert_null(ad_arange(0, INFINITY, 1));
  assert_error(AD_EINVAL, "stop=inf");
}

static void test_linspace_bad_arguments(void **state) {
  (void)state;
  assert_null(ad_linspace(0, 1, -1));
  assert_error(AD_EINVAL, "ad_linspace");
  assert_null(ad_linspace(NAN, 1, 3));
  assert_error(AD_EINVAL, "ad_linspace");
}

static void test_eye_negative_size(void **state) {
  (void)state;
  assert_null(ad_eye(-1));
  assert_error(AD_EINVAL, "ad_eye: size -1 is negative");
}

static void test_out_of_memory_is_enomem(void **state) {
  (void)state;
  ad__fail_alloc_after(1);
  assert_null(ad_zeros(1, SHAPE(4)));
  assert_error(AD_ENOMEM, "ad_zeros");
  ad__fail_alloc_after(2); /* the header succeeds, the data block fails */
  assert_null(ad_ones(2, SHAPE(3, 3)));
  assert_error(AD_ENOMEM, "ad_ones: out of memory for a tensor of shape "
                          "(3, 3)");
  assert_non_null(ad_zeros(1, SHAPE(4)));
}

/* ------------------------------------------------------------------------
 * The error channel
 * ---------------------------------------------------------------------- */

static void test_error_clear(void **state) {
  (void)state;
  assert_null(ad_eye(-1));
  assert_int_equal(ad_error(), AD_EINVAL);
  ad_error_clear();
  assert_int_equal(ad_error(), AD_OK);
  assert_string_equal(ad_error_message(), "");
}

static void test_success_keeps_recorded_error(void **state) {
  (void)state;
  assert_null(ad_eye(-1));
  assert_non_null(ad_zeros(1, SHAPE(2)));
  assert_error(AD_EINVAL, "ad_eye");
}

static void test_null_input_keeps_first_error(void **state) {
  (void)state;
  ad_tensor *bad = ad_eye(-3);
  assert_int_equal(ad_ndim(bad), -1);
  assert_true(isnan(ad_item(bad)));
  assert_error(AD_EINVAL, "ad_eye: size -3");
}

static void test_strerror_distinct_for_every_code(void **state) {
  (void)state;
  const ad_status codes[] = {AD_OK,      AD_EINVAL, AD_ESHAPE,
                             AD_ENOMEM,  AD_ESTATE, AD_EUNIMPL,
                             AD_EIO,     AD_ECHECK, AD_EINTERNAL};
  const int n = (int)(sizeof codes / sizeof codes[0]);
  for (int i = 0; i < n; i++) {
    const char *s = ad_strerror(codes[i]);
    assert_non_null(s);
    assert_true(strlen(s) > 0);
    for (int j = 0; j < i; j++)
      assert_string_not_equal(s, ad_strerror(codes[j]));
  }
  assert_non_null(ad_strerror((ad_status)1234));
}

/* ------------------------------------------------------------------------
 * Scopes
 * ---------------------------------------------------------------------- */

static void test_no_scope_caller_owns(void **state) {
  (void)state;
  ad_tensor *t = ad_zeros(1, SHAPE(3));
  assert_int_equal(refs(t), 1);
  ad_release(t);
}

static void test_scope_end_releases_its_tensors(void **state) {
  (void)state;
  ad_scope_begin();
  ad_tensor *t = ad_retain(ad_zeros(1, SHAPE(3)));
  assert_int_equal(refs(t), 2);
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(refs(t), 1);
  ad_release(t);
}

static void test_nested_scope_releases_only_its_own(void **state) {
  (void)state;
  ad_scope_begin();
  ad_tensor *outer = ad_retain(ad_scalar(1));
  ad_scope_begin();
  ad_tensor *inner = ad_retain(ad_scalar(2));
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(refs(inner), 1);
  assert_int_equal(refs(outer), 2);
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(refs(outer), 1);
  ad_release(outer);
  ad_release(inner);
}

static void test_keep_hands_tensor_to_enclosing_scope(void **state) {
  (void)state;
  ad_scope_begin();
  ad_scope_begin();
  ad_tensor *t = ad_scalar(3);
  assert_ptr_equal(ad_keep(t), t);
  ad_retain(t);
  assert_int_equal(ad_scope_end(), AD_OK);
  /* Alive, owned now by the outer scope (plus our reference). */
  assert_int_equal(refs(t), 2);
  assert_true(ad_item(t) == 3);
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(refs(t), 1);
  ad_release(t);
}

static void test_keep_from_outermost_scope_gives_to_caller(void **state) {
  (void)state;
  ad_scope_begin();
  ad_tensor *t = ad_keep(ad_scalar(4));
  assert_int_equal(ad_scope_end(), AD_OK);
  assert_int_equal(refs(t), 1);
  assert_true(ad_item(t) == 4);
  ad_release(t);
}

static void test_keep_without_scope_does_nothing(void **state) {
  (void)state;
  ad_tensor *t = ad_scalar(5);
  assert_ptr_equal(ad_keep(t), t);
  assert_int_equal(refs(t), 1);
  ad_release(t);
}

static void test_scope_end_without_scope_is_estate(void **state) {
  (void)state;
  ad_error_clear();
  assert_int_equal(ad_scope_end(), AD_ESTATE);
  assert_error(AD_ESTATE, "ad_scope_end");
}

static void test_memory_calls_are_null_safe(void **state) {
  (void)state;
  ad_error_clear();
  assert_null(ad_retain(NULL));
  ad_release(NULL);
  assert_null(ad_keep(NULL));
  assert_int_equal(ad_error(), AD_OK);
}

/* ------------------------------------------------------------------------
 * Random tensors
 * ---------------------------------------------------------------------- */

#define DRAWS 100000

/* n values of a uniform [0, 1) draw in a malloc'ed array. */
static double *draw_uniform(int64_t n) {
  double *v = malloc((size_t)n * sizeof(double));
  assert_non_null(v);
  ad_tensor *t = ad_rand_uniform(1, &n, 0, 1);
  assert_non_null(t);
  assert_int_equal(ad_read(t, v, n), AD_OK);
  return v;
}

static void test_same_seed_same_values(void **state) {
  (void)state;
  ad_seed(42);
  double *a = draw_uniform(100);
  ad_seed(42);
  double *b = draw_uniform(100);
  assert_memory_equal(a, b, 100 * sizeof(double));
  free(a);
  free(b);
}

static void test_draws_continue_the_stream(void **state) {
  (void)state;
  ad_seed(7);
  double *a = draw_uniform(4);
  double *b = draw_uniform(4);
  ad_seed(7);
  double *ab = draw_uniform(8);
  assert_memory_equal(a, ab, 4 * sizeof(double));
  assert_memory_equal(b, ab + 4, 4 * sizeof(double));
  assert_memory_not_equal(a, b, 4 * sizeof(double));
  free(a);
  free(b);
  free(ab);
}

static void test_different_seeds_different_values(void **state) {
  (void)state;
  /* Seed 0 and 4357 meet inside mt19937 if passed through; high words
   * must matter too. */
  const uint64_t seeds[] = {0, 1, 2, 4357, ((uint64_t)1 << 32) + 1,
                            UINT64_MAX};
  const int n = (int)(sizeof seeds / sizeof seeds[0]);
  double *draws[6];
  for (int i = 0; i < n; i++) {
    ad_seed(seeds[i]);
    draws[i] = draw_uniform(8);
  }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < i; j++)
      assert_memory_not_equal(draws[i], draws[j], 8 * sizeof(double));
  for (int i = 0; i < n; i++) free(draws[i]);
}

static void test_uniform_stays_in_half_open_interval(void **state) {
  (void)state;
  ad_seed(3);
  int64_t n = DRAWS;
  ad_tensor *t = ad_rand_uniform(1, &n, -2, 3);
  double *v = malloc(DRAWS * sizeof(double));
  assert_non_null(v);
  assert_int_equal(ad_read(t, v, n), AD_OK);
  double sum = 0;
  for (int i = 0; i < DRAWS; i++) {
    assert_true(v[i] >= -2 && v[i] < 3);
    sum += v[i];
  }
  free(v);
  /* Mean 0.5, standard error 5 / sqrt(12 n) ~ 0.0046. */
  assert_true(fabs(sum / DRAWS - 0.5) < 5 * 0.0046);
}

static void test_uniform_extreme_intervals(void **state) {
  (void)state;
  /* One representable value, and a width that overflows a double. */
  double lo = 1, hi = nextafter(1, 2);
  ad_tensor *narrow = ad_rand_uniform(1, SHAPE(1000), lo, hi);
  ad_tensor *wide = ad_rand_uniform(1, SHAPE(1000), -DBL_MAX, DBL_MAX);
  double a[1000], b[1000];
  assert_int_equal(ad_read(narrow, a, 1000), AD_OK);
  assert_int_equal(ad_read(wide, b, 1000), AD_OK);
  for (int i = 0; i < 1000; i++) {
    assert_true(a[i] == 1);
    assert_true(isfinite(b[i]));
  }
}

static void test_normal_sample_moments(void **state) {
  (void)state;
  ad_seed(11);
  int64_t n = DRAWS;
  ad_tensor *t = ad_rand_normal(2, SHAPE(DRAWS / 10, 10), 3, 2);
  assert_shape(t, 2, DRAWS / 10, 10);
  double *v = malloc(DRAWS * sizeof(double));
  assert_non_null(v);
  assert_int_equal(ad_read(t, v, n), AD_OK);
  double sum = 0, sq = 0;
  for (int i = 0; i < DRAWS; i++) sum += v[i];
  double mean = sum / DRAWS;
  for (int i = 0; i < DRAWS; i++) sq += (v[i] - mean) * (v[i] - mean);
  double sd = sqrt(sq / (DRAWS - 1));
  free(v);
  /* Standard errors: sd / sqrt(n) for the mean, sd / sqrt(2n) for sd. */
  assert_true(fabs(mean - 3) < 5 * 2 / sqrt(DRAWS));
  assert_true(fabs(sd - 2) < 5 * 2 / sqrt(2.0 * DRAWS));
}

static void test_normal_with_zero_sd_is_the_mean(void **state) {
  (void)state;
  assert_tensor_near(ad_rand_normal(1, SHAPE(3), -1.5, 0),
                     VALUES(-1.5, -1.5, -1.5), 3, 0);
}

static void test_random_shapes(void **state) {
  (void)state;
  ad_tensor *s = ad_rand_uniform(0, NULL, 0, 1);
  assert_int_equal(ad_ndim(s), 0);
  assert_true(ad_item(s) >= 0 && ad_item(s) < 1);
  assert_shape(ad_rand_normal(2, SHAPE(0, 4), 0, 1), 2, 0, 4);
}

static void test_uniform_bad_arguments(void **state) {
  (void)state;
  assert_null(ad_rand_uniform(1, SHAPE(2), 2, 2));
  assert_error(AD_EINVAL, "ad_rand_uniform: need finite bounds with lo < "
                          "hi, got lo=2 hi=2");
  assert_null(ad_rand_uniform(1, SHAPE(2), 3, 1));
  assert_error(AD_EINVAL, "lo=3 hi=1");
  assert_null(ad_rand_uniform(1, SHAPE(2), NAN, 1));
  assert_error(AD_EINVAL, "lo=nan");
  assert_null(ad_rand_uniform(1, SHAPE(2), 0, INFINITY));
  assert_error(AD_EINVAL, "hi=inf");
  assert_null(ad_rand_uniform(1, SHAPE(-2), 0, 1));
  assert_error(AD_EINVAL, "ad_rand_uniform: negative size");
}

static void test_normal_bad_arguments(void **state) {
  (void)state;
  assert_null(ad_rand_normal(1, SHAPE(2), 0, -1));
  assert_error(AD_EINVAL, "ad_rand_normal: need a finite mean and a finite "
                          "sd >= 0, got mean=0 sd=-1");
  assert_null(ad_rand_normal(1, SHAPE(2), 0, NAN));
  assert_error(AD_EINVAL, "sd=nan");
  assert_null(ad_rand_normal(1, SHAPE(2), INFINITY, 1));
  assert_error(AD_EINVAL, "mean=inf");
  assert_null(ad_rand_normal(9, SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1), 0, 1));
  assert_error(AD_EINVAL, "ad_rand_normal: rank 9");
}

/* ------------------------------------------------------------------------
 * Threads: each has its own error channel, scopes and generator.
 * ---------------------------------------------------------------------- */

typedef struct thread_result {
  int id;
  bool ok;
  ad_status error_seen;
  char message[256];
  double draws[4];
  bool seed_first;
  uint64_t seed;
} thread_result;

static void *draw_in_thread(void *arg) {
  thread_result *r = arg;
  if (r->seed_first) ad_seed(r->seed);
  int64_t n = 4;
  ad_tensor *t = ad_rand_uniform(1, &n, 0, 1);
  r->ok = t && ad_read(t, r->draws, 4) == AD_OK;
  ad_release(t);
  return NULL;
}

static void test_unseeded_threads_are_reproducible(void **state) {
  (void)state;
  thread_result r[3] = {{.id = 0}, {.id = 1}, {.id = 2, .seed_first = true}};
  /* Main thread's seed must not leak into the new threads. */
  ad_seed(12345);
  for (int i = 0; i < 3; i++) {
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, draw_in_thread, &r[i]), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(r[i].ok);
  }
  assert_memory_equal(r[0].draws, r[1].draws, sizeof r[0].draws);
  /* Unseeded means seeded with 0. */
  assert_memory_equal(r[0].draws, r[2].draws, sizeof r[0].draws);
}

static void *fail_generator_in_thread(void *arg) {
  thread_result *r = arg;
  /* The first allocation of a fresh thread is its generator. */
  ad__fail_alloc_after(1);
  ad_tensor *t = ad_rand_normal(1, SHAPE(2), 0, 1);
  r->error_seen = ad_error();
  snprintf(r->message, sizeof r->message, "%s", ad_error_message());
  ad_error_clear();
  ad_tensor *again = ad_rand_normal(1, SHAPE(2), 0, 1);
  r->ok = t == NULL && again != NULL;
  ad_release(again);
  return NULL;
}

static void test_generator_out_of_memory(void **state) {
  (void)state;
  thread_result r = {0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, fail_generator_in_thread, &r),
                   0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_true(r.ok);
  assert_int_equal(r.error_seen, AD_ENOMEM);
  assert_non_null(strstr(r.message, "ad_rand_normal"));
}

static void *work_in_thread(void *arg) {
  thread_result *r = arg;
  r->ok = true;
  for (int i = 0; i < 200; i++) {
    ad_scope_begin();
    ad_scope_begin();
    ad_tensor *a = ad_full(1, SHAPE(8), r->id);
    ad_tensor *b = ad_rand_uniform(2, SHAPE(4, 4), 0, 1);
    ad_tensor *kept = ad_keep(ad_scalar(i));
    if (!a || !b) r->ok = false;
    /* A failure of this thread's own making, tagged with its id. */
    ad_eye(-1 - r->id);
    ad_scope_end();
    if (ad_item(kept) != i) r->ok = false;
    ad_scope_end();
  }
  r->error_seen = ad_error();
  snprintf(r->message, sizeof r->message, "%s", ad_error_message());
  ad_error_clear();
  ad_thread_cleanup();
  return NULL;
}

static void test_threads_have_independent_state(void **state) {
  (void)state;
  ad_error_clear();
  assert_null(ad_eye(-100));
  thread_result r[2] = {{.id = 1}, {.id = 2}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, work_in_thread, &r[i]), 0);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < 2; i++) {
    char expect[64];
    snprintf(expect, sizeof expect, "ad_eye: size %d is negative",
             -1 - r[i].id);
    assert_true(r[i].ok);
    assert_int_equal(r[i].error_seen, AD_EINVAL);
    assert_string_equal(r[i].message, expect);
  }
  /* The main thread's error is its own. */
  assert_error(AD_EINVAL, "ad_eye: size -100 is negative");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(test_tensor_new_copies_shape_and_values),
      scoped_test(test_tensor_new_owns_a_copy_of_the_data),
      scoped_test(test_tensor_new_without_data_is_zeros),
      scoped_test(test_scalar_has_rank0),
      scoped_test(test_rank0_from_tensor_new),
      scoped_test(test_zeros_ones_full),
      scoped_test(test_size_zero_axis),
      scoped_test(test_rank8_is_allowed),
      scoped_test(test_arange),
      scoped_test(test_arange_negative_step),
      scoped_test(test_arange_empty_range),
      scoped_test(test_linspace_sizes_0_and_1),
      scoped_test(test_linspace_hits_endpoints_exactly),
      scoped_test(test_eye),
      scoped_test(test_shape_array_belongs_to_tensor),
      scoped_test(test_accessors_of_null),
      scoped_test(test_item_of_one_element_any_rank),
      scoped_test(test_item_of_two_elements_is_eshape),
      scoped_test(test_item_of_null_is_nan),
      scoped_test(test_read_copies_row_major),
      scoped_test(test_read_wrong_count_is_eshape),
      scoped_test(test_read_null_arguments),
      scoped_test(test_negative_size_is_einval),
      scoped_test(test_rank_outside_0_to_8_is_einval),
      scoped_test(test_null_shape_with_rank_is_einval),
      scoped_test(test_element_count_overflow_is_einval),
      scoped_test(test_arange_bad_step_or_bounds),
      scoped_test(test_linspace_bad_arguments),
      scoped_test(test_eye_negative_size),
      scoped_test(test_out_of_memory_is_enomem),
      scoped_test(test_error_clear),
      scoped_test(test_success_keeps_recorded_error),
      scoped_test(test_null_input_keeps_first_error),
      scoped_test(test_strerror_distinct_for_every_code),
      /* Scope tests manage scopes themselves. */
      cmocka_unit_test(test_no_scope_caller_owns),
      cmocka_unit_test(test_scope_end_releases_its_tensors),
      cmocka_unit_test(test_nested_scope_releases_only_its_own),
      cmocka_unit_test(test_keep_hands_tensor_to_enclosing_scope),
      cmocka_unit_test(test_keep_from_outermost_scope_gives_to_caller),
      cmocka_unit_test(test_keep_without_scope_does_nothing),
      cmocka_unit_test(test_scope_end_without_scope_is_estate),
      cmocka_unit_test(test_memory_calls_are_null_safe),
      scoped_test(test_same_seed_same_values),
      scoped_test(test_draws_continue_the_stream),
      scoped_test(test_different_seeds_different_values),
      scoped_test(test_uniform_stays_in_half_open_interval),
      scoped_test(test_uniform_extreme_intervals),
      scoped_test(test_normal_sample_moments),
      scoped_test(test_normal_with_zero_sd_is_the_mean),
      scoped_test(test_random_shapes),
      scoped_test(test_uniform_bad_arguments),
      scoped_test(test_normal_bad_arguments),
      cmocka_unit_test(test_unseeded_threads_are_reproducible),
      cmocka_unit_test(test_generator_out_of_memory),
      cmocka_unit_test(test_threads_have_independent_state),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
