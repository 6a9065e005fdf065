/* Tests of ad_print / ad_fprint: the exact text NumPy would print. */
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

/* What ad_fprint writes for t, as a malloc'ed string; *status gets its
 * return value. */
static char *print_text(const ad_tensor *t, ad_status *status) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  ad_status st = ad_fprint(f, t);
  if (status) *status = st;
  assert_int_equal(fclose(f), 0);
  return buf;
}

#define assert_prints(t, expect)                 \
  do {                                           \
    ad_status st_;                               \
    char *got_ = print_text((t), &st_);          \
    assert_int_equal(st_, AD_OK);                \
    assert_string_equal(got_, (expect));         \
    free(got_);                                  \
  } while (0)

static ad_tensor *vector(int64_t n, const double *v) {
  return ad_tensor_new(1, &n, v);
}

/* 0, 1, 2, ... in the given shape, times scale. */
static ad_tensor *iota(int ndim, const int64_t *shape, double scale) {
  ad_tensor *t = ad_zeros(ndim, shape);
  assert_non_null(t);
  int64_t n = ad_numel(t);
  double *v = malloc((size_t)n * sizeof(double));
  assert_non_null(v);
  for (int64_t i = 0; i < n; i++) v[i] = (double)i * scale;
  ad_tensor *r = ad_tensor_new(ndim, shape, v);
  free(v);
  return r;
}

/* ------------------------------------------------------------------------
 * Integers
 * ---------------------------------------------------------------------- */

static void test_integer_matrix(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(2, SHAPE(2, 2), VALUES(16, 19, 36, 43));
  assert_prints(t, "[[16 19]\n [36 43]] shape=(2, 2)\n");
}

static void test_integer_vector(void **state) {
  (void)state;
  assert_prints(vector(3, VALUES(1, 2, 3)), "[1 2 3] shape=(3,)\n");
}

static void test_negative_integers_align_right(void **state) {
  (void)state;
  assert_prints(vector(3, VALUES(-1, 10, -100)),
                "[  -1   10 -100] shape=(3,)\n");
}

static void test_negative_zero_prints_as_integer_zero(void **state) {
  (void)state;
  assert_prints(vector(2, VALUES(-0.0, 1)), "[0 1] shape=(2,)\n");
}

static void test_integers_from_1e16_use_scientific(void **state) {
  (void)state;
  assert_prints(vector(2, VALUES(1e16, 1)), "[1.e+16 1.e+00] shape=(2,)\n");
}

/* ------------------------------------------------------------------------
 * Floats
 * ---------------------------------------------------------------------- */

static void test_floats_pad_to_widest(void **state) {
  (void)state;
  assert_prints(vector(3, VALUES(1.5, 2, 3.25)),
                "[1.5  2.   3.25] shape=(3,)\n");
}

static void test_floats_keep_trailing_padding(void **state) {
  (void)state;
  /* NumPy pads the fraction of the last element too: "[1.5 2. ]". */
  assert_prints(vector(2, VALUES(1.5, 2)), "[1.5 2. ] shape=(2,)\n");
}

static void test_floats_round_to_eight_decimals(void **state) {
  (void)state;
  assert_prints(vector(2, VALUES(1.0 / 3, 2.0 / 3)),
                "[0.33333333 0.66666667] shape=(2,)\n");
}

static void test_negative_floats(void **state) {
  (void)state;
  assert_prints(vector(3, VALUES(0.1, 0.25, -7)),
                "[ 0.1   0.25 -7.  ] shape=(3,)\n");
  assert_prints(vector(2, VALUES(-0.0, 0.5)), "[-0.   0.5] shape=(2,)\n");
}

static void test_small_values_use_scientific(void **state) {
  (void)state;
  assert_prints(vector(2, VALUES(1e-5, 1.5e-5)),
                "[1.0e-05 1.5e-05] shape=(2,)\n");
}

static void test_wide_ratio_uses_scientific(void **state) {
  (void)state;
  assert_prints(vector(2, VALUES(1, 1e4 + 0.5)),
                "[1.00000e+00 1.00005e+04] shape=(2,)\n");
}

static void test_three_digit_exponents_pad_all(void **state) {
  (void)state;
  assert_prints(vector(2, VALUES(1e-100, 1.5)),
                "[1.0e-100 1.5e+000] shape=(2,)\n");
}

static void test_nan_and_inf_among_floats(void **state) {
  (void)state;
  assert_prints(vector(4, VALUES(NAN, INFINITY, -INFINITY, 1.5)),
                "[ nan  inf -inf  1.5] shape=(4,)\n");
}

static void test_nan_among_integers(void **state) {
  (void)state;
  assert_prints(vector(3, VALUES(1, NAN, 3)), "[  1 nan   3] shape=(3,)\n");
}

/* ------------------------------------------------------------------------
 * Ranks and layout
 * ---------------------------------------------------------------------- */

static void test_rank0(void **state) {
  (void)state;
  assert_prints(ad_scalar(5), "5 shape=()\n");
  assert_prints(ad_scalar(2.5), "2.5 shape=()\n");
  assert_prints(ad_scalar(-INFINITY), "-inf shape=()\n");
}

static void test_rank3_blocks_part_by_blank_line(void **state) {
  (void)state;
  assert_prints(iota(3, SHAPE(2, 3, 4), 1),
                "[[[ 0  1  2  3]\n"
                "  [ 4  5  6  7]\n"
                "  [ 8  9 10 11]]\n"
                "\n"
                " [[12 13 14 15]\n"
                "  [16 17 18 19]\n"
                "  [20 21 22 23]]] shape=(2, 3, 4)\n");
}

static void test_float_matrix_aligns_columns(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(2, SHAPE(2, 2), VALUES(0.5, -1.25, 100, 3));
  assert_prints(t, "[[  0.5   -1.25]\n [100.     3.  ]] shape=(2, 2)\n");
}

static void test_size_zero(void **state) {
  (void)state;
  assert_prints(ad_zeros(1, SHAPE(0)), "[] shape=(0,)\n");
  assert_prints(ad_zeros(2, SHAPE(2, 0)), "[] shape=(2, 0)\n");
}

static void test_long_row_wraps_at_75_columns(void **state) {
  (void)state;
  assert_prints(iota(1, SHAPE(30), 1),
                "[ 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 "
                "19 20 21 22 23\n"
                " 24 25 26 27 28 29] shape=(30,)\n");
}

static void test_wrapped_rows_indent_under_their_bracket(void **state) {
  (void)state;
  assert_prints(iota(2, SHAPE(2, 10), 1.0 / 3),
                "[[0.         0.33333333 0.66666667 1.         1.33333333 "
                "1.66666667\n"
                "  2.         2.33333333 2.66666667 3.        ]\n"
                " [3.33333333 3.66666667 4.         4.33333333 4.66666667 "
                "5.\n"
                "  5.33333333 5.66666667 6.         6.33333333]] "
                "shape=(2, 10)\n");
}

/* ------------------------------------------------------------------------
 * Elision of large tensors
 * ---------------------------------------------------------------------- */

static void test_thousand_elements_print_in_full(void **state) {
  (void)state;
  char *got = print_text(iota(1, SHAPE(1000), 1), NULL);
  assert_null(strstr(got, "..."));
  const char *start = "[  0   1   2   3   4   5   6   7";
  const char *end = " 996 997 998 999] shape=(1000,)\n";
  assert_memory_equal(got, start, strlen(start));
  assert_string_equal(got + strlen(got) - strlen(end), end);
  free(got);
}

static void test_large_vector_is_elided(void **state) {
  (void)state;
  assert_prints(iota(1, SHAPE(1001), 1),
                "[   0    1    2 ...  998  999 1000] shape=(1001,)\n");
}

static void test_large_matrix_is_elided_both_ways(void **state) {
  (void)state;
  assert_prints(iota(2, SHAPE(100, 100), 1),
                "[[   0    1    2 ...   97   98   99]\n"
                " [ 100  101  102 ...  197  198  199]\n"
                " [ 200  201  202 ...  297  298  299]\n"
                " ...\n"
                " [9700 9701 9702 ... 9797 9798 9799]\n"
                " [9800 9801 9802 ... 9897 9898 9899]\n"
                " [9900 9901 9902 ... 9997 9998 9999]] shape=(100, 100)\n");
}

static void test_large_rank3_is_elided_on_every_axis(void **state) {
  (void)state;
  assert_prints(iota(3, SHAPE(11, 11, 11), 1),
                "[[[   0    1    2 ...    8    9   10]\n"
                "  [  11   12   13 ...   19   20   21]\n"
                "  [  22   23   24 ...   30   31   32]\n"
                "  ...\n"
                "  [  88   89   90 ...   96   97   98]\n"
                "  [  99  100  101 ...  107  108  109]\n"
                "  [ 110  111  112 ...  118  119  120]]\n"
                "\n"
                " [[ 121  122  123 ...  129  130  131]\n"
                "  [ 132  133  134 ...  140  141  142]\n"
                "  [ 143  144  145 ...  151  152  153]\n"
                "  ...\n"
                "  [ 209  210  211 ...  217  218  219]\n"
                "  [ 220  221  222 ...  228  229  230]\n"
                "  [ 231  232  233 ...  239  240  241]]\n"
                "\n"
                " [[ 242  243  244 ...  250  251  252]\n"
                "  [ 253  254  255 ...  261  262  263]\n"
                "  [ 264  265  266 ...  272  273  274]\n"
                "  ...\n"
                "  [ 330  331  332 ...  338  339  340]\n"
                "  [ 341  342  343 ...  349  350  351]\n"
                "  [ 352  353  354 ...  360  361  362]]\n"
                "\n"
                " ...\n"
                "\n"
                " [[ 968  969  970 ...  976  977  978]\n"
                "  [ 979  980  981 ...  987  988  989]\n"
                "  [ 990  991  992 ...  998  999 1000]\n"
                "  ...\n"
                "  [1056 1057 1058 ... 1064 1065 1066]\n"
                "  [1067 1068 1069 ... 1075 1076 1077]\n"
                "  [1078 1079 1080 ... 1086 1087 1088]]\n"
                "\n"
                " [[1089 1090 1091 ... 1097 1098 1099]\n"
                "  [1100 1101 1102 ... 1108 1109 1110]\n"
                "  [1111 1112 1113 ... 1119 1120 1121]\n"
                "  ...\n"
                "  [1177 1178 1179 ... 1185 1186 1187]\n"
                "  [1188 1189 1190 ... 1196 1197 1198]\n"
                "  [1199 1200 1201 ... 1207 1208 1209]]\n"
                "\n"
                " [[1210 1211 1212 ... 1218 1219 1220]\n"
                "  [1221 1222 1223 ... 1229 1230 1231]\n"
                "  [1232 1233 1234 ... 1240 1241 1242]\n"
                "  ...\n"
                "  [1298 1299 1300 ... 1306 1307 1308]\n"
                "  [1309 1310 1311 ... 1317 1318 1319]\n"
                "  [1320 1321 1322 ... 1328 1329 1330]]] "
                "shape=(11, 11, 11)\n");
}

/* ------------------------------------------------------------------------
 * Views
 * ---------------------------------------------------------------------- */

static void test_transposed_view(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6));
  ad_tensor *tt = ad_transpose(t);
  assert_non_null(tt);
  assert_prints(tt, "[[1 4]\n [2 5]\n [3 6]] shape=(3, 2)\n");
}

static void test_broadcast_view_with_zero_stride(void **state) {
  (void)state;
  ad_tensor *row = vector(3, VALUES(1, 2, 3));
  /* A (2, 3) view repeating the row, as ad_broadcast_to makes. */
  ad_tensor *v = ad__view(row, 2, SHAPE(2, 3), SHAPE(0, 1), 0);
  assert_non_null(v);
  char *got = print_text(v, NULL);
  ad_release(v);
  assert_string_equal(got, "[[1 2 3]\n [1 2 3]] shape=(2, 3)\n");
  free(got);
}

static void test_large_strided_view_is_elided(void **state) {
  (void)state;
  ad_tensor *t = iota(2, SHAPE(42, 50), 1);
  /* Every other column, read through a stride of 2: 1050 elements. */
  ad_tensor *v = ad__view(t, 2, SHAPE(42, 25), SHAPE(50, 2), 0);
  assert_non_null(v);
  char *got = print_text(v, NULL);
  ad_release(v);
  assert_string_equal(got,
                      "[[   0    2    4 ...   44   46   48]\n"
                      " [  50   52   54 ...   94   96   98]\n"
                      " [ 100  102  104 ...  144  146  148]\n"
                      " ...\n"
                      " [1950 1952 1954 ... 1994 1996 1998]\n"
                      " [2000 2002 2004 ... 2044 2046 2048]\n"
                      " [2050 2052 2054 ... 2094 2096 2098]] "
                      "shape=(42, 25)\n");
  free(got);
}

/* ------------------------------------------------------------------------
 * NULL tensors, streams and errors
 * ---------------------------------------------------------------------- */

static void test_null_tensor_shows_the_error(void **state) {
  (void)state;
  ad_status st;
  char *got = print_text(ad_eye(-1), &st);
  assert_string_equal(got, "<null tensor: ad_eye: size -1 is negative>\n");
  free(got);
  /* The root cause stays recorded for the caller. */
  assert_int_equal(st, AD_EINVAL);
  assert_error(AD_EINVAL, "ad_eye: size -1 is negative");
}

static void test_null_tensor_without_error_names_argument(void **state) {
  (void)state;
  ad_status st;
  char *got = print_text(NULL, &st);
  assert_string_equal(got,
                      "<null tensor: ad_fprint: argument 't' is NULL>\n");
  free(got);
  assert_int_equal(st, AD_EINVAL);
  assert_error(AD_EINVAL, "ad_fprint");
}

static void test_null_file_is_einval(void **state) {
  (void)state;
  assert_int_equal(ad_fprint(NULL, ad_scalar(1)), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_fprint");
}

static void test_failed_write_is_eio(void **state) {
  (void)state;
  FILE *f = fopen("/dev/null", "r"); /* a stream that refuses writes */
  assert_non_null(f);
  assert_int_equal(ad_fprint(f, ad_scalar(1)), AD_EIO);
  fclose(f);
  assert_error(AD_EIO, "ad_fprint");
}

static void test_print_leaves_error_channel_alone(void **state) {
  (void)state;
  ad_tensor *t = ad_scalar(1);
  assert_null(ad_eye(-2));
  char *got = print_text(t, NULL);
  free(got);
  assert_error(AD_EINVAL, "ad_eye");
}

static void test_ad_print_writes_to_stdout(void **state) {
  (void)state;
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), STDOUT_FILENO) >= 0);
  ad_print(ad_tensor_new(1, SHAPE(2), VALUES(7, 8)));
  fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  char buf[64] = {0};
  rewind(tmp);
  size_t n = fread(buf, 1, sizeof buf - 1, tmp);
  fclose(tmp);
  buf[n] = '\0';
  assert_string_equal(buf, "[7 8] shape=(2,)\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      scoped_test(test_integer_matrix),
      scoped_test(test_integer_vector),
      scoped_test(test_negative_integers_align_right),
      scoped_test(test_negative_zero_prints_as_integer_zero),
      scoped_test(test_integers_from_1e16_use_scientific),
      scoped_test(test_floats_pad_to_widest),
      scoped_test(test_floats_keep_trailing_padding),
      scoped_test(test_floats_round_to_eight_decimals),
      scoped_test(test_negative_floats),
      scoped_test(test_small_values_use_scientific),
      scoped_test(test_wide_ratio_uses_scientific),
      scoped_test(test_three_digit_exponents_pad_all),
      scoped_test(test_nan_and_inf_among_floats),
      scoped_test(test_nan_among_integers),
      scoped_test(test_rank0),
      scoped_test(test_rank3_blocks_part_by_blank_line),
      scoped_test(test_float_matrix_aligns_columns),
      scoped_test(test_size_zero),
      scoped_test(test_long_row_wraps_at_75_columns),
      scoped_test(test_wrapped_rows_indent_under_their_bracket),
      scoped_test(test_thousand_elements_print_in_full),
      scoped_test(test_large_vector_is_elided),
      scoped_test(test_large_matrix_is_elided_both_ways),
      scoped_test(test_large_rank3_is_elided_on_every_axis),
      scoped_test(test_transposed_view),
      scoped_test(test_broadcast_view_with_zero_stride),
      scoped_test(test_large_strided_view_is_elided),
      scoped_test(test_null_tensor_shows_the_error),
      scoped_test(test_null_tensor_without_error_names_argument),
      scoped_test(test_null_file_is_einval),
      scoped_test(test_failed_write_is_eio),
      scoped_test(test_print_leaves_error_channel_alone),
      scoped_test(test_ad_print_writes_to_stdout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
