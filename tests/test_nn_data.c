/* Tests of input pipelines (tensor slices, map, shuffle, batch, repeat,
 * iterators) and of the CSV reader. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "ad/nn.h"
#include "testutil.h"

static ad_tensor *vec(int64_t n, const double *v) {
  return ad_tensor_new(1, SHAPE(n), v);
}

static ad_dataset *one_to(int64_t n) {
  ad_tensor *t = ad_arange(1, (double)n + 1, 1);
  return ad_dataset_from_tensor_slices(1, &t);
}

/* Every element of a one-component dataset of scalars or vectors, in
 * order, into out (at most cap values); returns how many. */
static int64_t drain(ad_dataset *ds, double *out, int64_t cap) {
  ad_iterator *it = ad_dataset_iter(ds);
  assert_non_null(it);
  ad_tensor *e[1];
  int64_t n = 0;
  while (ad_iter_next(it, e)) {
    int64_t k = ad_numel(e[0]);
    assert_true(n + k <= cap);
    assert_int_equal(ad_read(e[0], out + n, k), AD_OK);
    n += k;
  }
  assert_int_equal(ad_iter_status(it), AD_OK);
  ad_iter_free(it);
  return n;
}

static ad_status square(int n, ad_tensor *const *in, ad_tensor **out,
                        void *ctx) {
  (void)n;
  (void)ctx;
  out[0] = ad_square(in[0]);
  return AD_OK;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* ---- the guide's example ---------------------------------------------- */

static void guide_square_shuffle_batch(void **state) {
  (void)state;
  /* tf.data.Dataset.from_tensor_slices([1, 2, 3, 4, 5, 6])
   *   .map(tf.square).shuffle(2).batch(2) */
  ad_dataset *ds = ad_dataset_batch(
      ad_dataset_shuffle(ad_dataset_map(one_to(6), 1, square, NULL), 2, 7),
      2, false);
  assert_non_null(ds);
  assert_int_equal(ad_dataset_cardinality(ds), 3);
  ad_iterator *it = ad_dataset_iter(ds);
  ad_tensor *x[1];
  double seen[6];
  int batches = 0;
  while (ad_iter_next(it, x)) {
    assert_shape(x[0], 1, 2);
    assert_int_equal(ad_read(x[0], seen + 2 * batches, 2), AD_OK);
    batches++;
  }
  assert_int_equal(ad_iter_status(it), AD_OK);
  assert_int_equal(batches, 3);
  /* What docs/models.md shows for seed 7. */
  const double shown[6] = {4, 1, 9, 16, 25, 36};
  assert_memory_equal(seen, shown, sizeof shown);
  /* A buffer of 2 lets element k out only after at most k + 2 inputs. */
  for (int k = 0; k < 6; k++) assert_true(sqrt(seen[k]) <= k + 2);
  qsort(seen, 6, sizeof seen[0], cmp_double);
  for (int k = 0; k < 6; k++) assert_true(seen[k] == (k + 1) * (k + 1));
  /* After the end, next keeps returning false. */
  assert_false(ad_iter_next(it, x));
  assert_null(x[0]);
  ad_iter_free(it);
  ad_dataset_free(ds);
}

/* ---- slices, batch, repeat -------------------------------------------- */

static void slices_pair_rows_with_labels(void **state) {
  (void)state;
  ad_tensor *ts[2] = {ad_reshape(ad_arange(0, 6, 1), 2, SHAPE(3, 2)),
                      vec(3, VALUES(7, 8, 9))};
  ad_dataset *ds = ad_dataset_from_tensor_slices(2, ts);
  assert_int_equal(ad_dataset_num_components(ds), 2);
  assert_int_equal(ad_dataset_cardinality(ds), 3);
  ad_iterator *it = ad_dataset_iter(ds);
  ad_tensor *e[2];
  for (int i = 0; i < 3; i++) {
    assert_true(ad_iter_next(it, e));
    assert_shape(e[0], 1, 2);
    assert_shape(e[1], 0, 0);
    assert_tensor_near(e[0], VALUES(2 * i, 2 * i + 1), 2, 0);
    assert_tensor_near(e[1], VALUES(7 + i), 1, 0);
  }
  assert_false(ad_iter_next(it, e));
  ad_iter_free(it);
  ad_dataset_free(ds);
  ts[1] = vec(2, VALUES(1, 2));
  assert_null(ad_dataset_from_tensor_slices(2, ts));
  assert_error(AD_ESHAPE, "first dimensions differ: ts[0] (3, 2) and ts[1] "
                          "(2,)");
  ad_tensor *s = ad_scalar(1);
  assert_null(ad_dataset_from_tensor_slices(1, &s));
  assert_error(AD_ESHAPE, "scalar");
  assert_null(ad_dataset_from_tensor_slices(0, ts));
  assert_error(AD_EINVAL, "1..16 tensors");
}

static void batch_keeps_or_drops_the_remainder(void **state) {
  (void)state;
  ad_dataset *keep = ad_dataset_batch(one_to(7), 3, false);
  ad_dataset *drop = ad_dataset_batch(one_to(7), 3, true);
  assert_int_equal(ad_dataset_cardinality(keep), 3);
  assert_int_equal(ad_dataset_cardinality(drop), 2);
  double v[16];
  assert_int_equal(drain(keep, v, 16), 7);
  assert_int_equal(drain(drop, v, 16), 6);
  ad_iterator *it = ad_dataset_iter(keep);
  ad_tensor *b[1];
  assert_true(ad_iter_next(it, b));
  assert_shape(b[0], 1, 3);
  assert_true(ad_iter_next(it, b));
  assert_true(ad_iter_next(it, b));
  assert_shape(b[0], 1, 1);
  assert_tensor_near(b[0], VALUES(7), 1, 0);
  assert_false(ad_iter_next(it, b));
  ad_iter_free(it);
  ad_dataset_free(keep);
  ad_dataset_free(drop);
  /* Batches of batches stack along a new axis. */
  ad_dataset *bb = ad_dataset_batch(ad_dataset_batch(one_to(8), 2, true), 2,
                                    true);
  it = ad_dataset_iter(bb);
  assert_true(ad_iter_next(it, b));
  assert_shape(b[0], 2, 2, 2);
  assert_tensor_near(b[0], VALUES(1, 2, 3, 4), 4, 0);
  ad_iter_free(it);
  ad_dataset_free(bb);
}

static void repeat_counts_and_forever(void **state) {
  (void)state;
  ad_dataset *twice = ad_dataset_repeat(one_to(3), 2);
  assert_int_equal(ad_dataset_cardinality(twice), 6);
  double v[16];
  assert_int_equal(drain(twice, v, 16), 6);
  assert_true(v[3] == 1 && v[5] == 3);
  ad_dataset_free(twice);
  ad_dataset *forever = ad_dataset_batch(ad_dataset_repeat(one_to(3), -1), 2,
                                         false);
  assert_true(ad_dataset_cardinality(forever) == AD_INFINITE);
  ad_iterator *it = ad_dataset_iter(forever);
  ad_tensor *b[1];
  for (int i = 0; i < 10; i++) {
    ad_scope_begin();
    assert_true(ad_iter_next(it, b));
    assert_tensor_near(b[0], VALUES((2 * i) % 3 + 1, (2 * i + 1) % 3 + 1), 2,
                       0);
    ad_scope_end();
  }
  ad_iter_free(it);
  ad_dataset_free(forever);
  /* An empty source repeated forever is empty, not an endless loop. */
  ad_tensor *empty = ad_zeros(1, SHAPE(0));
  ad_dataset *none = ad_dataset_repeat(ad_dataset_from_tensor_slices(1,
                                                                     &empty),
                                       -1);
  assert_int_equal(ad_dataset_cardinality(none), 0);
  assert_int_equal(drain(none, v, 16), 0);
  ad_dataset_free(none);
  ad_dataset *zero = ad_dataset_repeat(one_to(3), 0);
  assert_int_equal(drain(zero, v, 16), 0);
  ad_dataset_free(zero);
}

/* ---- shuffle ------------------------------------------------------------ */

static void shuffle_with_a_full_buffer_permutes(void **state) {
  (void)state;
  ad_dataset *ds = ad_dataset_shuffle(one_to(50), 1000, 7);
  double a[50], b[50], c[50];
  assert_int_equal(drain(ds, a, 50), 50);
  assert_int_equal(drain(ds, b, 50), 50);
  bool moved = false, differ = false;
  for (int i = 0; i < 50; i++) {
    moved |= a[i] != i + 1;
    differ |= a[i] != b[i];
  }
  assert_true(moved);
  /* Each pass reshuffles. */
  assert_true(differ);
  qsort(b, 50, sizeof b[0], cmp_double);
  for (int i = 0; i < 50; i++) assert_true(b[i] == i + 1);
  /* Pass 1 can be asked for again, in this run or another. */
  ad_dataset *again = ad_dataset_shuffle(one_to(50), 1000, 7);
  assert_int_equal(drain(again, c, 50), 50);
  assert_memory_equal(a, c, sizeof a);
  ad_iterator *it = ad_dataset_iter_pass(again, 0);
  ad_tensor *e[1];
  for (int i = 0; i < 50; i++) {
    assert_true(ad_iter_next(it, e));
    assert_true(ad_item(e[0]) == a[i]);
  }
  ad_iter_free(it);
  ad_dataset_free(again);
  /* Another seed gives another order. */
  ad_dataset *other = ad_dataset_shuffle(one_to(50), 1000, 8);
  assert_int_equal(drain(other, c, 50), 50);
  assert_true(memcmp(a, c, sizeof a) != 0);
  ad_dataset_free(other);
  ad_dataset_free(ds);
  assert_null(ad_dataset_shuffle(one_to(3), 0, 1));
  assert_error(AD_EINVAL, "buffer_size must be >= 1, got 0");
}

static void shuffle_before_repeat_reshuffles_each_time(void **state) {
  (void)state;
  ad_dataset *ds = ad_dataset_repeat(ad_dataset_shuffle(one_to(20), 20, 3),
                                     3);
  double v[60];
  assert_int_equal(drain(ds, v, 60), 60);
  assert_true(memcmp(v, v + 20, 20 * sizeof v[0]) != 0);
  assert_true(memcmp(v + 20, v + 40, 20 * sizeof v[0]) != 0);
  for (int r = 0; r < 3; r++) {
    qsort(v + 20 * r, 20, sizeof v[0], cmp_double);
    for (int i = 0; i < 20; i++) assert_true(v[20 * r + i] == i + 1);
  }
  ad_dataset_free(ds);
}

/* ---- map, errors, ownership ------------------------------------------- */

static ad_status swap_and_scale(int n, ad_tensor *const *in, ad_tensor **out,
                                void *ctx) {
  assert_int_equal(n, 2);
  out[0] = ad_mul_scalar(in[1], *(const double *)ctx);
  out[1] = in[0];
  out[2] = ad_add(in[0], in[1]);
  return AD_OK;
}

static void map_changes_the_number_of_components(void **state) {
  (void)state;
  ad_tensor *ts[2] = {vec(2, VALUES(1, 2)), vec(2, VALUES(10, 20))};
  double k = 0.5;
  ad_dataset *ds = ad_dataset_map(ad_dataset_from_tensor_slices(2, ts), 3,
                                  swap_and_scale, &k);
  assert_int_equal(ad_dataset_num_components(ds), 3);
  ad_iterator *it = ad_dataset_iter(ds);
  ad_tensor *e[3];
  assert_true(ad_iter_next(it, e));
  assert_tensor_near(e[0], VALUES(5), 1, 0);
  assert_tensor_near(e[1], VALUES(1), 1, 0);
  assert_tensor_near(e[2], VALUES(11), 1, 0);
  ad_iter_free(it);
  ad_dataset_free(ds);
}

static ad_status fail_on_three(int n, ad_tensor *const *in, ad_tensor **out,
                               void *ctx) {
  (void)n;
  (void)ctx;
  if (ad_item(in[0]) == 3) return AD_EINVAL;
  out[0] = in[0];
  return AD_OK;
}

static ad_status leave_null(int n, ad_tensor *const *in, ad_tensor **out,
                            void *ctx) {
  (void)n;
  (void)in;
  (void)ctx;
  out[0] = NULL;
  return AD_OK;
}

static ad_status bad_op(int n, ad_tensor *const *in, ad_tensor **out,
                        void *ctx) {
  (void)n;
  (void)ctx;
  out[0] = ad_reshape(in[0], 1, SHAPE(5));
  return AD_OK;
}

static void map_failures_stop_the_iterator(void **state) {
  (void)state;
  ad_dataset *ds = ad_dataset_map(one_to(5), 1, fail_on_three, NULL);
  ad_iterator *it = ad_dataset_iter(ds);
  ad_tensor *e[1];
  assert_true(ad_iter_next(it, e));
  assert_true(ad_iter_next(it, e));
  assert_false(ad_iter_next(it, e));
  assert_null(e[0]);
  assert_int_equal(ad_iter_status(it), AD_EINVAL);
  assert_error(AD_EINVAL, "the map function failed without a message");
  assert_false(ad_iter_next(it, e));
  ad_iter_free(it);
  ad_dataset_free(ds);

  ds = ad_dataset_map(one_to(2), 1, leave_null, NULL);
  it = ad_dataset_iter(ds);
  assert_false(ad_iter_next(it, e));
  assert_error(AD_EINVAL, "left an output NULL");
  ad_iter_free(it);
  ad_dataset_free(ds);

  ds = ad_dataset_map(one_to(2), 1, bad_op, NULL);
  it = ad_dataset_iter(ds);
  assert_false(ad_iter_next(it, e));
  assert_int_equal(ad_iter_status(it), AD_ESHAPE);
  assert_error(AD_ESHAPE, "ad_reshape");
  ad_iter_free(it);
  ad_dataset_free(ds);
}

static ad_status ragged(int n, ad_tensor *const *in, ad_tensor **out,
                        void *ctx) {
  (void)n;
  (void)ctx;
  out[0] = ad_zeros(1, SHAPE((int64_t)ad_item(in[0])));
  return AD_OK;
}

static void batch_of_ragged_elements_fails(void **state) {
  (void)state;
  ad_dataset *ds = ad_dataset_batch(ad_dataset_map(one_to(4), 1, ragged,
                                                   NULL), 2, false);
  ad_iterator *it = ad_dataset_iter(ds);
  ad_tensor *e[1];
  assert_false(ad_iter_next(it, e));
  assert_int_equal(ad_iter_status(it), AD_ESHAPE);
  assert_error(AD_ESHAPE, "ad_stack");
  ad_iter_free(it);
  ad_dataset_free(ds);
}

static void transformations_take_the_source(void **state) {
  (void)state;
  /* A NULL source keeps its error through the chain. */
  assert_null(ad_dataset_batch(ad_dataset_shuffle(
      ad_dataset_from_tensor_slices(0, NULL), 4, 1), 2, false));
  assert_error(AD_EINVAL, "ad_dataset_from_tensor_slices");
  /* A bad argument releases the source (valgrind checks). */
  assert_null(ad_dataset_batch(one_to(3), 0, false));
  assert_error(AD_EINVAL, "batch_size must be >= 1, got 0");
  assert_null(ad_dataset_map(one_to(3), 1, NULL, NULL));
  assert_error(AD_EINVAL, "NULL function");
  /* One source in two pipelines. */
  ad_dataset *base = one_to(4);
  ad_dataset *a = ad_dataset_batch(ad_dataset_retain(base), 2, false);
  ad_dataset *b = ad_dataset_repeat(base, 2);
  double v[16];
  assert_int_equal(drain(a, v, 16), 4);
  assert_int_equal(drain(b, v, 16), 8);
  /* An iterator keeps its dataset alive. */
  ad_iterator *it = ad_dataset_iter(a);
  ad_dataset_free(a);
  ad_tensor *e[1];
  assert_true(ad_iter_next(it, e));
  assert_tensor_near(e[0], VALUES(1, 2), 2, 0);
  ad_iter_free(it);
  ad_dataset_free(b);
  assert_int_equal(ad_dataset_num_components(NULL), -1);
  assert_error(AD_EINVAL, "ds");
  assert_false(ad_iter_next(NULL, e));
  assert_error(AD_EINVAL, "it");
}

static void pipeline_is_not_recorded(void **state) {
  (void)state;
  ad_tensor *x = ad_arange(0, 4, 1);
  ad_dataset *ds = ad_dataset_batch(
      ad_dataset_map(ad_dataset_from_tensor_slices(1, &x), 1, square, NULL),
      2, false);
  ad_tape *tape = ad_tape_begin(0);
  ad_tape_watch(tape, x);
  ad_iterator *it = ad_dataset_iter(ds);
  ad_tensor *e[1];
  assert_true(ad_iter_next(it, e));
  assert_int_equal(ad_tape_size(tape), 0);
  ad_tape_end(tape);
  ad_tape_free(tape);
  ad_iter_free(it);
  ad_dataset_free(ds);
}

static void elements_belong_to_the_callers_scope(void **state) {
  (void)state;
  ad_dataset *ds = ad_dataset_batch(ad_dataset_shuffle(one_to(10), 4, 1), 3,
                                    false);
  ad_iterator *it = ad_dataset_iter(ds);
  ad_tensor *kept = NULL, *e[1];
  ad_scope_begin();
  while (ad_iter_next(it, e)) kept = ad_keep(e[0]);
  ad_scope_end();
  assert_shape(kept, 1, 1);
  ad_iter_free(it);
  /* Freeing an iterator in the middle of a pass releases its buffer. */
  it = ad_dataset_iter(ds);
  assert_true(ad_iter_next(it, e));
  ad_iter_free(it);
  ad_dataset_free(ds);
}

/* ---- CSV ---------------------------------------------------------------- */

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void csv_reads_numbers_with_a_header(void **state) {
  (void)state;
  char path[] = "/tmp/libad-test-csv-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  write_file(path, "a,b,c\n1,2,3\r\n\n4.5, -6e2 ,7\n");
  ad_tensor *t = ad_load_csv(path, 1);
  assert_shape(t, 2, 2, 3);
  assert_tensor_near(t, VALUES(1, 2, 3, 4.5, -600, 7), 6, 0);
  assert_null(ad_load_csv(path, 0));
  assert_error(AD_EINVAL, "line 1, column 1: \"a,b,c\" is not a number");
  write_file(path, "1,2\n3\n");
  assert_null(ad_load_csv(path, 0));
  assert_error(AD_EINVAL, "line 2 has 1 fields, earlier lines 2");
  write_file(path, "1,,2\n");
  assert_null(ad_load_csv(path, 0));
  assert_error(AD_EINVAL, "column 2");
  unlink(path);
  assert_null(ad_load_csv(path, 0));
  assert_error(AD_EIO, "cannot open");
}

static void csv_reads_the_digits_through_gzip(void **state) {
  (void)state;
  ad_tensor *d = ad_load_csv("data/digits.csv.gz", 0);
  assert_shape(d, 2, 1797, 65);
  /* The first image starts 0, 0, 5, 13 and is a zero; the last is an 8. */
  assert_tensor_near(ad_slice(ad_slice(d, 0, 0, 1, 1), 1, 0, 4, 1),
                     VALUES(0, 0, 5, 13), 4, 0);
  assert_tensor_near(ad_slice(ad_slice(d, 0, 0, 1, 1), 1, 64, 65, 1),
                     VALUES(0), 1, 0);
  assert_tensor_near(ad_slice(ad_slice(d, 0, 1796, 1797, 1), 1, 64, 65, 1),
                     VALUES(8), 1, 0);
  char dir[] = "/tmp/libad-test-gz-XXXXXX", path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/bad.csv.gz", dir);
  write_file(path, "not gzip\n");
  assert_null(ad_load_csv(path, 0));
  assert_error(AD_EIO, "gzip -dc reported an error");
  unlink(path);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(guide_square_shuffle_batch),
      scoped_test(slices_pair_rows_with_labels),
      scoped_test(batch_keeps_or_drops_the_remainder),
      scoped_test(repeat_counts_and_forever),
      scoped_test(shuffle_with_a_full_buffer_permutes),
      scoped_test(shuffle_before_repeat_reshuffles_each_time),
      scoped_test(map_changes_the_number_of_components),
      scoped_test(map_failures_stop_the_iterator),
      scoped_test(batch_of_ragged_elements_fails),
      scoped_test(transformations_take_the_source),
      scoped_test(pipeline_is_not_recorded),
      scoped_test(elements_belong_to_the_callers_scope),
      scoped_test(csv_reads_numbers_with_a_header),
      scoped_test(csv_reads_the_digits_through_gzip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
