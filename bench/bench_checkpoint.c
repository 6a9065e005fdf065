/* Benchmark of gradient checkpointing (issue 5): peak memory and time of
 * differentiating a long elementwise chain with and without ad_checkpoint
 * around each block, each variant measured in its own child process.
 *
 *   bench_checkpoint [--blocks B] [--ops K] [--n N] [--runs R]
 *
 * Defaults: 200 blocks of 50 elementwise ops on tensors of 10^4 doubles,
 * 5 timed runs.  Without checkpointing the tape keeps every intermediate
 * (B * K tensors of N doubles, 800 MB by default); with it, the tape keeps
 * one tensor per block and the backward pass recomputes one block at a
 * time. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <ad.h>

#include "bench_util.h"

typedef struct config {
  int blocks, ops, runs;
  int64_t n;
} config;

/* What one variant measured, sent from the child to the parent. */
typedef struct result {
  int ok;
  double peak_mib;  /* growth of the peak resident set over the run */
  double held_mib;  /* heap in use at the end of the forward pass */
  double time_ms;   /* median forward + backward time */
  double checksum;  /* sum of the gradient, to compare the variants */
} result;

static const config *cfg;

/* One block: K cheap elementwise ops that keep values in [-1, 1]. */
static ad_tensor *block(ad_tensor *x, void *ctx) {
  (void)ctx;
  for (int k = 0; k < cfg->ops && x; k++) {
    switch (k % 5) {
    case 0: x = ad_sin(x); break;
    case 1: x = ad_mul_scalar(x, 0.9); break;
    case 2: x = ad_tanh(x); break;
    case 3: x = ad_add_scalar(x, 0.1); break;
    default: x = ad_cos(x); break;
    }
  }
  return x;
}

static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

static double heap_in_use_mib(void) {
#ifdef __GLIBC__
  struct mallinfo2 mi = mallinfo2();
  return (double)(mi.uordblks + mi.hblkhd) / (1024.0 * 1024.0);
#else
  return NAN;
#endif
}

/* Forward and backward passes of the chain; runs in a child process. */
static result run_variant(bool checkpoint) {
  result res = {0};
  ad_scope_begin();
  ad_seed(5);
  ad_tensor *x0 = ad_rand_uniform(1, &cfg->n, -1.0, 1.0);
  bench_check(x0, "random input");
  double base_rss = peak_rss_mib();
  double *times = malloc((size_t)cfg->runs * sizeof *times);
  bench_check(times, "malloc");
  for (int r = 0; r < cfg->runs; r++) {
    double t0 = bench_now();
    ad_scope_begin();
    double heap0 = heap_in_use_mib();
    ad_tape *tape = ad_tape_begin(0);
    bench_check(tape, "ad_tape_begin");
    bench_check_status(ad_tape_watch(tape, x0), "ad_tape_watch");
    ad_tensor *x = x0;
    for (int b = 0; b < cfg->blocks; b++) {
      /* Each block's temporaries go with the block's scope; the tape
       * keeps what it needs. */
      ad_scope_begin();
      x = ad_keep(checkpoint ? ad_checkpoint(block, NULL, x)
                             : block(x, NULL));
      ad_scope_end();
      bench_check(x, checkpoint ? "ad_checkpoint" : "block");
    }
    ad_tensor *y = ad_sum_all(x);
    bench_check_status(ad_tape_end(tape), "ad_tape_end");
    if (r == 0) res.held_mib = heap_in_use_mib() - heap0;
    ad_tensor *g = ad_tape_gradient(tape, y, x0);
    bench_check(g, "ad_tape_gradient");
    if (r == 0) res.checksum = ad_item(ad_sum_all(g));
    ad_tape_free(tape);
    ad_scope_end();
    times[r] = (bench_now() - t0) * 1e3;
  }
  res.peak_mib = peak_rss_mib() - base_rss;
  res.time_ms = bench_median(times, cfg->runs);
  res.ok = 1;
  free(times);
  ad_scope_end();
  return res;
}

/* Run a variant in a fresh child so that its peak memory is its own. */
static result measure(bool checkpoint) {
  result res = {0};
  int fd[2];
  if (pipe(fd) != 0) {
    perror("bench_checkpoint: pipe");
    exit(1);
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("bench_checkpoint: fork");
    exit(1);
  }
  if (pid == 0) {
    close(fd[0]);
    result r = run_variant(checkpoint);
    ssize_t w = write(fd[1], &r, sizeof r);
    _exit(w == (ssize_t)sizeof r ? 0 : 1);
  }
  close(fd[1]);
  ssize_t got = read(fd[0], &res, sizeof res);
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != (ssize_t)sizeof res || !res.ok || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    fprintf(stderr, "bench_checkpoint: the %s variant failed\n",
            checkpoint ? "checkpointed" : "plain");
    exit(1);
  }
  return res;
}

int main(int argc, char **argv) {
  config c = {200, 50, 5, 10000};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--blocks") == 0) c.blocks = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--ops") == 0) c.ops = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--runs") == 0) c.runs = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--n") == 0) c.n = atoll(argv[i + 1]);
    else {
      fprintf(stderr, "usage: %s [--blocks B] [--ops K] [--n N] [--runs R]\n",
              argv[0]);
      return 2;
    }
  }
  if (c.blocks < 1 || c.ops < 1 || c.runs < 1 || c.n < 1) {
    fprintf(stderr, "bench_checkpoint: every size must be positive\n");
    return 2;
  }
  cfg = &c;
  bench_canary("start of bench_checkpoint");

  result plain = measure(false);
  result ckpt = measure(true);

  char cs[96];
  snprintf(cs, sizeof cs, "checkpoint chain %dx%d ops, n=%lld", c.blocks,
           c.ops, (long long)c.n);
  printf("# %d blocks of %d elementwise ops on %lld doubles, differentiated;"
         " each variant in its own process; peak = growth of getrusage "
         "maxrss over the run\n",
         c.blocks, c.ops, (long long)c.n);
  printf("# tape nodes: plain %lld, checkpointed %d; intermediates plain "
         "%.0f MiB\n",
         (long long)c.blocks * c.ops, c.blocks,
         (double)c.blocks * c.ops * (double)c.n * 8 / (1024.0 * 1024.0));
  int64_t block_bytes = 8;
  while (block_bytes < c.n * 8) block_bytes *= 2;
  printf("# heap held counts libad's pooled data blocks, rounded up to a "
         "power of two (%lld bytes each here); peak RSS counts the pages "
         "touched\n",
         (long long)block_bytes);
  bench_line(cs, "libad", "peak memory growth, plain", plain.peak_mib, "MiB");
  bench_line(cs, "libad", "peak memory growth, checkpointed", ckpt.peak_mib,
             "MiB");
  bench_line(cs, "libad", "peak memory plain / checkpointed",
             plain.peak_mib / ckpt.peak_mib, "x");
  bench_line(cs, "libad", "heap held after forward, plain (mallinfo2)",
             plain.held_mib, "MiB");
  bench_line(cs, "libad", "heap held after forward, checkpointed (mallinfo2)",
             ckpt.held_mib, "MiB");
  char fig[96];
  snprintf(fig, sizeof fig, "forward+backward time, plain (median of %d)",
           c.runs);
  bench_line(cs, "libad", fig, plain.time_ms, "ms");
  snprintf(fig, sizeof fig,
           "forward+backward time, checkpointed (median of %d)", c.runs);
  bench_line(cs, "libad", fig, ckpt.time_ms, "ms");
  bench_line(cs, "libad", "checkpointed time / plain time",
             ckpt.time_ms / plain.time_ms, "x");
  double rel = fabs(plain.checksum - ckpt.checksum) /
               (fabs(plain.checksum) > 0 ? fabs(plain.checksum) : 1.0);
  bench_line(cs, "libad", "gradient difference (relative, of the sums)", rel,
             "x");
  if (!(rel < 1e-10)) {
    fprintf(stderr, "bench_checkpoint: the gradients differ\n");
    return 1;
  }
  return 0;
}
