/* Assertions shared by the cmocka suites: tensors against expected values. */
#ifndef AD_TESTUTIL_H
#define AD_TESTUTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ad.h"

/* Fail the test unless t is non-NULL with the given shape. */
#define assert_shape(t, ndim, ...)                                        \
  do {                                                                    \
    const int64_t expect_shape_[] = {__VA_ARGS__};                        \
    assert_non_null(t);                                                   \
    assert_int_equal(ad_ndim(t), (ndim));                                 \
    for (int i_ = 0; i_ < (ndim); i_++)                                   \
      assert_int_equal(ad_shape(t)[i_], expect_shape_[i_]);               \
  } while (0)

/* Fail unless every element of t is within tol (absolute + relative) of
 * the n values in expect. */
void assert_tensor_near_impl(const ad_tensor *t, const double *expect,
                             int64_t n, double tol, const char *file,
                             int line);
#define assert_tensor_near(t, expect, n, tol) \
  assert_tensor_near_impl((t), (expect), (n), (tol), __FILE__, __LINE__)

/* Fail unless two tensors have the same shape and values within tol. */
void assert_tensors_close_impl(const ad_tensor *a, const ad_tensor *b,
                               double tol, const char *file, int line);
#define assert_tensors_close(a, b, tol) \
  assert_tensors_close_impl((a), (b), (tol), __FILE__, __LINE__)

/* Fail unless the last error has the given code and its message contains
 * the text; then clear the error. */
void assert_error_impl(ad_status code, const char *text, const char *file,
                       int line);
#define assert_error(code, text) \
  assert_error_impl((code), (text), __FILE__, __LINE__)

/* cmocka setup/teardown that open a scope and check that no error leaked
 * out of the test. */
int test_scope_setup(void **state);
int test_scope_teardown(void **state);
#define scoped_test(f) \
  cmocka_unit_test_setup_teardown(f, test_scope_setup, test_scope_teardown)

/* A tensor from a literal list: T(ndim, shape..., values...) is awkward in
 * C, so tests use ad_tensor_new with compound literals through these. */
#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define VALUES(...) ((const double[]){__VA_ARGS__})

/* True when AD_TEST_QUICK is set (valgrind runs shrink their loops). */
int test_quick(void);

/* x^3 as a custom op with a forward and a VJP only (its JVP is derived):
 * the custom op several suites run under tapes, levels and threads.
 * NULL with the error recorded on failure. */
ad_tensor *test_cube(ad_tensor *x);

/* cmocka's fail_msg prints "ERROR: ...", which tests/run_tests.sh does not
 * show; this prints the message the way cmocka's own assertions do, so
 * that the runner's summary carries it. */
#define fail_shown(...)                           \
  do {                                            \
    print_error("[  ERROR   ] --- " __VA_ARGS__); \
    print_error("\n");                            \
    fail();                                       \
  } while (0)

/* 1 in builds under AddressSanitizer, ThreadSanitizer or MemorySanitizer
 * (gcc or clang), where tests that replace malloc or run long shrink. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

#endif
