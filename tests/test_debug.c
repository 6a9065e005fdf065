/* Tests of the debugging aids: ad_summary's exact text and the AD_DEBUG
 * switch, whose abort is checked in child processes. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ad/debug.h"
#include "testutil.h"

/* This binary, for children that must read AD_DEBUG afresh: the variable
 * is read once per process, so only a new process sees a new value. */
static char self_path[4096];

/* What ad_fsummary writes for t, as a malloc'ed string; *status gets its
 * return value. */
static char *summary_text(const ad_tensor *t, ad_status *status) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  ad_status st = ad_fsummary(f, t);
  if (status) *status = st;
  assert_int_equal(fclose(f), 0);
  return buf;
}

#define assert_summary(t, expect)                \
  do {                                           \
    ad_status st_;                               \
    char *got_ = summary_text((t), &st_);        \
    assert_int_equal(st_, AD_OK);                \
    assert_string_equal(got_, (expect));         \
    free(got_);                                  \
  } while (0)

/* ------------------------------------------------------------------------
 * Summaries
 * ---------------------------------------------------------------------- */

static void test_summary_small_matrix_lists_every_value(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6));
  assert_summary(t,
                 "ad_tensor shape=(2, 3) numel=6 contiguous\n"
                 "  min=1 max=6 mean=3.5 nan=0 +inf=0 -inf=0\n"
                 "  values: 1 2 3 4 5 6\n");
}

static void test_summary_large_tensor_shows_both_ends(void **state) {
  (void)state;
  ad_tensor *t =
      ad_reshape(ad_arange(0, 1000000, 1), 2, SHAPE(1000, 1000));
  assert_summary(t,
                 "ad_tensor shape=(1000, 1000) numel=1000000 contiguous\n"
                 "  min=0 max=999999 mean=500000 nan=0 +inf=0 -inf=0\n"
                 "  values: 0 1 2 ... 999997 999998 999999\n");
}

static void test_summary_seven_values_elide_one(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(1, SHAPE(7), VALUES(1, 2, 3, 4, 5, 6, 7));
  assert_summary(t,
                 "ad_tensor shape=(7,) numel=7 contiguous\n"
                 "  min=1 max=7 mean=4 nan=0 +inf=0 -inf=0\n"
                 "  values: 1 2 3 ... 5 6 7\n");
}

static void test_summary_counts_nan_and_inf_apart(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(
      1, SHAPE(5), VALUES(1.5, NAN, INFINITY, -2.25, -INFINITY));
  /* min, max and mean over the finite values only. */
  assert_summary(t,
                 "ad_tensor shape=(5,) numel=5 contiguous\n"
                 "  min=-2.25 max=1.5 mean=-0.375 nan=1 +inf=1 -inf=1\n"
                 "  values: 1.5 nan inf -2.25 -inf\n");
}

static void test_summary_without_finite_values(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(1, SHAPE(3), VALUES(NAN, NAN, -INFINITY));
  assert_summary(t,
                 "ad_tensor shape=(3,) numel=3 contiguous\n"
                 "  min=n/a max=n/a mean=n/a nan=2 +inf=0 -inf=1\n"
                 "  values: nan nan -inf\n");
}

static void test_summary_of_a_transpose_follows_the_view(void **state) {
  (void)state;
  ad_tensor *t = ad_transpose(
      ad_tensor_new(2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6)));
  assert_summary(t,
                 "ad_tensor shape=(3, 2) numel=6 strided view\n"
                 "  min=1 max=6 mean=3.5 nan=0 +inf=0 -inf=0\n"
                 "  values: 1 4 2 5 3 6\n");
}

static void test_summary_of_a_large_strided_view(void **state) {
  (void)state;
  /* Every other element of 0..19: 0 2 4 ... 18, through a step slice. */
  ad_tensor *t = ad_slice(ad_arange(0, 20, 1), 0, 0, 20, 2);
  assert_summary(t,
                 "ad_tensor shape=(10,) numel=10 strided view\n"
                 "  min=0 max=18 mean=9 nan=0 +inf=0 -inf=0\n"
                 "  values: 0 2 4 ... 14 16 18\n");
}

static void test_summary_of_a_broadcast(void **state) {
  (void)state;
  ad_tensor *t = ad_broadcast_to(ad_tensor_new(1, SHAPE(2), VALUES(-1, 3)),
                                 2, SHAPE(4, 2));
  assert_summary(t,
                 "ad_tensor shape=(4, 2) numel=8 strided view\n"
                 "  min=-1 max=3 mean=1 nan=0 +inf=0 -inf=0\n"
                 "  values: -1 3 -1 ... 3 -1 3\n");
}

static void test_summary_of_a_scalar(void **state) {
  (void)state;
  assert_summary(ad_scalar(-0.125),
                 "ad_tensor shape=() numel=1 contiguous\n"
                 "  min=-0.125 max=-0.125 mean=-0.125 nan=0 +inf=0 -inf=0\n"
                 "  values: -0.125\n");
}

static void test_summary_of_an_empty_tensor(void **state) {
  (void)state;
  assert_summary(ad_zeros(2, SHAPE(0, 3)),
                 "ad_tensor shape=(0, 3) numel=0 contiguous\n"
                 "  min=n/a max=n/a mean=n/a nan=0 +inf=0 -inf=0\n"
                 "  values: (none)\n");
}

static void test_summary_values_use_six_digits(void **state) {
  (void)state;
  ad_tensor *t = ad_tensor_new(1, SHAPE(3), VALUES(1.0 / 3, 2e-9, 123456789));
  assert_summary(t,
                 "ad_tensor shape=(3,) numel=3 contiguous\n"
                 "  min=2e-09 max=1.23457e+08 mean=4.11523e+07 nan=0 "
                 "+inf=0 -inf=0\n"
                 "  values: 0.333333 2e-09 1.23457e+08\n");
}

static void test_summary_mean_survives_overflow(void **state) {
  (void)state;
  /* The plain sum overflows; the mean is still representable. */
  ad_tensor *t = ad_tensor_new(1, SHAPE(2), VALUES(1.5e308, 1.5e308));
  assert_summary(t,
                 "ad_tensor shape=(2,) numel=2 contiguous\n"
                 "  min=1.5e+308 max=1.5e+308 mean=1.5e+308 nan=0 +inf=0 "
                 "-inf=0\n"
                 "  values: 1.5e+308 1.5e+308\n");
}

static void test_summary_mean_is_compensated(void **state) {
  (void)state;
  /* A naive left-to-right sum gives 0.75 (the 1 is lost next to 1e100). */
  ad_tensor *t = ad_tensor_new(1, SHAPE(4), VALUES(1e100, 1, -1e100, 3));
  assert_summary(t,
                 "ad_tensor shape=(4,) numel=4 contiguous\n"
                 "  min=-1e+100 max=1e+100 mean=1 nan=0 +inf=0 -inf=0\n"
                 "  values: 1e+100 1 -1e+100 3\n");
}

static void test_summary_of_null_shows_the_error(void **state) {
  (void)state;
  assert_null(ad_matmul(ad_ones(2, SHAPE(2, 3)), ad_ones(2, SHAPE(4, 5))));
  ad_status st;
  char *got = summary_text(NULL, &st);
  assert_int_equal(st, AD_ESHAPE);
  assert_string_equal(got,
                      "<null tensor: ad_matmul: inner dimensions differ: "
                      "(2, 3) x (4, 5)>\n");
  free(got);
  /* The root cause stays recorded. */
  assert_error(AD_ESHAPE, "inner dimensions differ");
}

static void test_summary_of_null_without_error_names_it(void **state) {
  (void)state;
  ad_status st;
  char *got = summary_text(NULL, &st);
  assert_int_equal(st, AD_EINVAL);
  assert_string_equal(got,
                      "<null tensor: ad_fsummary: argument 't' is NULL>\n");
  free(got);
  assert_error(AD_EINVAL, "ad_fsummary");
}

static void test_summary_null_stream_is_einval(void **state) {
  (void)state;
  assert_int_equal(ad_fsummary(NULL, ad_scalar(1)), AD_EINVAL);
  assert_error(AD_EINVAL, "ad_fsummary");
}

static void test_summary_failed_write_is_eio(void **state) {
  (void)state;
  FILE *f = fopen("/dev/null", "r"); /* a stream that refuses writes */
  assert_non_null(f);
  assert_int_equal(ad_fsummary(f, ad_scalar(1)), AD_EIO);
  fclose(f);
  assert_error(AD_EIO, "ad_fsummary");
}

static void test_summary_leaves_error_channel_alone(void **state) {
  (void)state;
  assert_null(ad_eye(-2));
  char *got = summary_text(ad_scalar(1), NULL);
  free(got);
  assert_error(AD_EINVAL, "ad_eye");
  got = summary_text(ad_scalar(1), NULL);
  free(got);
  assert_int_equal(ad_error(), AD_OK);
}

static void test_ad_summary_writes_to_stdout(void **state) {
  (void)state;
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), STDOUT_FILENO) >= 0);
  /* No fflush here: ad_summary flushes by itself, which is what makes it
   * show up at once when called from gdb with stdout on a pipe. */
  ad_summary(ad_tensor_new(1, SHAPE(2), VALUES(7, 8)));
  dup2(saved, STDOUT_FILENO);
  close(saved);
  char buf[256] = {0};
  rewind(tmp);
  size_t n = fread(buf, 1, sizeof buf - 1, tmp);
  fclose(tmp);
  buf[n] = '\0';
  assert_string_equal(buf,
                      "ad_tensor shape=(2,) numel=2 contiguous\n"
                      "  min=7 max=8 mean=7.5 nan=0 +inf=0 -inf=0\n"
                      "  values: 7 8\n");
}

/* ------------------------------------------------------------------------
 * The AD_DEBUG switch, in child processes
 * ---------------------------------------------------------------------- */

/* What the child does (argv[1] == "--debug-child"): two errors in a row,
 * then a normal exit.  Under AD_DEBUG=abort it never gets past the
 * first. */
static int child_main(void) {
  ad_scope_begin();
  ad_tensor *bad = ad_matmul(ad_ones(2, SHAPE(2, 3)), ad_ones(2, SHAPE(4, 5)));
  ad_error_clear();
  ad_tensor *worse = ad_eye(-2);
  ad_error_clear();
  ad_scope_end();
  ad_thread_cleanup();
  printf("child survived\n");
  return bad || worse ? 2 : 0;
}

typedef struct child_result {
  int status;       /* from waitpid */
  char out[4096];   /* stdout and stderr, in order */
} child_result;

/* Run fn in a forked child with stdout and stderr on a pipe; collect both
 * and the exit status. */
static void run_child(void (*fn)(const char *), const char *arg,
                      child_result *r) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    /* The abort is expected: no core file for it. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    fn(arg);
    _exit(3);
  }
  close(fds[1]);
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fds[0], r->out + len, sizeof r->out - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len == sizeof r->out - 1) break;
  }
  r->out[len] = '\0';
  close(fds[0]);
  while (waitpid(pid, &r->status, 0) < 0 && errno == EINTR) {
  }
}

/* In the child: this binary again, with AD_DEBUG set to arg (or unset
 * when arg is NULL), running child_main. */
static void exec_with_env(const char *arg) {
  if (arg)
    setenv("AD_DEBUG", arg, 1);
  else
    unsetenv("AD_DEBUG");
  char *const argv[] = {self_path, "--debug-child", NULL};
  execv(self_path, argv);
  _exit(4);
}

static void check_self_path(void) {
  if (!self_path[0]) skip();
}

static void test_ad_debug_abort_aborts_at_the_first_error(void **state) {
  (void)state;
  check_self_path();
  child_result r;
  run_child(exec_with_env, "abort", &r);
  assert_true(WIFSIGNALED(r.status));
  assert_int_equal(WTERMSIG(r.status), SIGABRT);
  assert_string_equal(r.out,
                      "libad: AD_DEBUG=abort: AD_ESHAPE: ad_matmul: inner "
                      "dimensions differ: (2, 3) x (4, 5)\n");
}

static void test_ad_debug_log_reports_every_error(void **state) {
  (void)state;
  check_self_path();
  child_result r;
  run_child(exec_with_env, "log", &r);
  assert_true(WIFEXITED(r.status));
  assert_int_equal(WEXITSTATUS(r.status), 0);
  assert_non_null(strstr(r.out,
                         "libad: error AD_ESHAPE: ad_matmul: inner "
                         "dimensions differ: (2, 3) x (4, 5)\n"));
  assert_non_null(strstr(r.out, "libad: error AD_EINVAL: ad_eye"));
  assert_non_null(strstr(r.out, "child survived\n"));
}

static void test_ad_debug_unset_or_off_is_silent(void **state) {
  (void)state;
  check_self_path();
  const char *values[] = {NULL, "", "0", "off"};
  for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
    child_result r;
    run_child(exec_with_env, values[i], &r);
    assert_true(WIFEXITED(r.status));
    assert_int_equal(WEXITSTATUS(r.status), 0);
    assert_string_equal(r.out, "child survived\n");
  }
}

static void test_ad_debug_unknown_value_warns_once(void **state) {
  (void)state;
  check_self_path();
  child_result r;
  run_child(exec_with_env, "abrot", &r);
  assert_true(WIFEXITED(r.status));
  assert_int_equal(WEXITSTATUS(r.status), 0);
  assert_string_equal(r.out,
                      "libad: AD_DEBUG=abrot is not understood (use abort, "
                      "log or off); ignored\n"
                      "child survived\n");
}

/* In the child: switch abort mode on from code, then fail. */
static void abort_by_call(const char *arg) {
  (void)arg;
  ad_set_debug_mode(AD_DEBUG_ABORT);
  ad_tensor *bad = ad_reshape(ad_ones(1, SHAPE(6)), 2, SHAPE(4, 2));
  (void)bad;
  _exit(0);
}

static void test_set_debug_mode_abort_from_code(void **state) {
  (void)state;
  child_result r;
  run_child(abort_by_call, NULL, &r);
  assert_true(WIFSIGNALED(r.status));
  assert_int_equal(WTERMSIG(r.status), SIGABRT);
  assert_non_null(strstr(r.out, "libad: AD_DEBUG=abort: AD_ESHAPE: "
                                "ad_reshape"));
}

static void test_set_debug_mode_returns_the_previous_mode(void **state) {
  (void)state;
  /* main() cleared AD_DEBUG before anything could read it. */
  assert_int_equal(ad_get_debug_mode(), AD_DEBUG_OFF);
  assert_int_equal(ad_set_debug_mode(AD_DEBUG_LOG), AD_DEBUG_OFF);
  assert_int_equal(ad_get_debug_mode(), AD_DEBUG_LOG);
  /* Unknown values change nothing. */
  assert_int_equal(ad_set_debug_mode((ad_debug_mode)7), AD_DEBUG_LOG);
  assert_int_equal(ad_get_debug_mode(), AD_DEBUG_LOG);
  assert_int_equal(ad_set_debug_mode(AD_DEBUG_OFF), AD_DEBUG_LOG);
  assert_int_equal(ad_get_debug_mode(), AD_DEBUG_OFF);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--debug-child")) return child_main();
  /* The suite's own errors must not abort, whatever the caller's
   * environment says; children get their AD_DEBUG explicitly. */
  unsetenv("AD_DEBUG");
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  self_path[n > 0 ? n : 0] = '\0';
  const struct CMUnitTest tests[] = {
      scoped_test(test_summary_small_matrix_lists_every_value),
      scoped_test(test_summary_large_tensor_shows_both_ends),
      scoped_test(test_summary_seven_values_elide_one),
      scoped_test(test_summary_counts_nan_and_inf_apart),
      scoped_test(test_summary_without_finite_values),
      scoped_test(test_summary_of_a_transpose_follows_the_view),
      scoped_test(test_summary_of_a_large_strided_view),
      scoped_test(test_summary_of_a_broadcast),
      scoped_test(test_summary_of_a_scalar),
      scoped_test(test_summary_of_an_empty_tensor),
      scoped_test(test_summary_values_use_six_digits),
      scoped_test(test_summary_mean_survives_overflow),
      scoped_test(test_summary_mean_is_compensated),
      scoped_test(test_summary_of_null_shows_the_error),
      scoped_test(test_summary_of_null_without_error_names_it),
      scoped_test(test_summary_null_stream_is_einval),
      scoped_test(test_summary_failed_write_is_eio),
      scoped_test(test_summary_leaves_error_channel_alone),
      scoped_test(test_ad_summary_writes_to_stdout),
      scoped_test(test_ad_debug_abort_aborts_at_the_first_error),
      scoped_test(test_ad_debug_log_reports_every_error),
      scoped_test(test_ad_debug_unset_or_off_is_silent),
      scoped_test(test_ad_debug_unknown_value_warns_once),
      scoped_test(test_set_debug_mode_abort_from_code),
      scoped_test(test_set_debug_mode_returns_the_previous_mode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
