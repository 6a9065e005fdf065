/* ADBench's GMM, LSTM and BA objectives in libad: checks every gradient
 * (BA: every residual and Jacobian value) against the reference, then
 * times F and J the way ADBench does (standalone), or serves timed batches
 * to bench/compare/driver.py (--serve). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ad.h>

#include "adbench_io.h"
#include "ba.h"
#include "gmm.h"
#include "lstm.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------
 * Instances
 * ---------------------------------------------------------------------- */

typedef struct instance_info {
  const char *name;  /* gmm_1k_d2_K5: also the reference files' base name */
  const char *input; /* path under the data directory */
} instance_info;

static const instance_info INSTANCES[] = {
    {"gmm_1k_d2_K5", "gmm/1k/gmm_d2_K5.txt"},
    {"gmm_1k_d10_K25", "gmm/1k/gmm_d10_K25.txt"},
    {"gmm_1k_d20_K50", "gmm/1k/gmm_d20_K50.txt"},
    {"gmm_1k_d64_K100", "gmm/1k/gmm_d64_K100.txt"},
    {"gmm_10k_d2_K5", "gmm/10k/gmm_d2_K5.txt"},
    {"gmm_10k_d10_K25", "gmm/10k/gmm_d10_K25.txt"},
    {"gmm_2.5M_d2_K5", "gmm/2.5M/gmm_d2_K5.txt"},
    {"gmm_2.5M_d10_K25", "gmm/2.5M/gmm_d10_K25.txt"},
    {"lstm_l2_c1024", "lstm/lstm_l2_c1024.txt"},
    {"lstm_l4_c1024", "lstm/lstm_l4_c1024.txt"},
    {"ba1_n49_m7776_p31843", "ba/ba1_n49_m7776_p31843.txt"},
    {"ba2_n21_m11315_p36455", "ba/ba2_n21_m11315_p36455.txt"},
    {"ba5_n257_m65132_p225911", "ba/ba5_n257_m65132_p225911.txt"},
};
enum { NINST = sizeof INSTANCES / sizeof INSTANCES[0] };

typedef struct instance {
  const instance_info *info;
  bool is_gmm;
  adb_gmm_input gin;
  adb_gmm gmm;
  adb_lstm_input lin;
  adb_lstm lstm;
  bool is_ba;
  adb_ba_input bin;
  adb_ba ba;
  ad_tensor *p[3]; /* parameters, caller-owned */
  int np;
  int64_t nparams; /* gradient length (BA: Jacobian values, 31p) */
} instance;

static const instance_info *find_info(const char *name) {
  for (int i = 0; i < NINST; i++)
    if (strcmp(INSTANCES[i].name, name) == 0) return &INSTANCES[i];
  return NULL;
}

/* Points per chunk of the GMM data term: about 2^18 elements of the
 * (points, K*d) intermediates at a time (2 MiB, so that a chunk's
 * elementwise passes stay in cache), but at least 4d points, so that the
 * per-chunk work on the parameter side (K d^2) stays small beside the
 * chunk's own (points K d^2 in the product). */
static int64_t gmm_chunk(const adb_gmm_input *g) {
  int64_t rows = ((int64_t)1 << 18) / (g->K * g->d);
  if (rows < 4 * g->d) rows = 4 * g->d;
  return rows;
}

static int instance_load(instance *in, const instance_info *info,
                         const char *dir) {
  char path[1024];
  memset(in, 0, sizeof *in);
  in->info = info;
  in->is_gmm = strncmp(info->name, "gmm", 3) == 0;
  in->is_ba = strncmp(info->name, "ba", 2) == 0;
  snprintf(path, sizeof path, "%s/%s", dir, info->input);
  int rc = -1;
  if (in->is_ba) {
    if (adb_ba_read(path, &in->bin) == 0 &&
        adb_ba_init(&in->ba, &in->bin, ADB_BA_CHUNK) == 0) {
      adb_ba_param_tensors(&in->bin, &in->p[0], &in->p[1], &in->p[2]);
      in->np = 3;
      in->nparams = 31 * in->bin.p;
      rc = 0;
    }
  } else if (in->is_gmm) {
    if (adb_gmm_read(path, &in->gin) == 0 &&
        adb_gmm_init(&in->gmm, &in->gin, gmm_chunk(&in->gin)) == 0) {
      adb_gmm_param_tensors(&in->gin, &in->p[0], &in->p[1], &in->p[2]);
      in->np = 3;
      int64_t d = in->gin.d;
      in->nparams = in->gin.K * (d + 1) * (d + 2) / 2;
      rc = 0;
    }
  } else {
    if (adb_lstm_read(path, &in->lin) == 0 &&
        adb_lstm_init(&in->lstm, &in->lin) == 0) {
      adb_lstm_param_tensors(&in->lin, &in->p[0], &in->p[1]);
      in->np = 2;
      in->nparams = 8 * in->lin.l * in->lin.b + 3 * in->lin.b;
      rc = 0;
    }
  }
  for (int i = 0; i < in->np; i++)
    if (!in->p[i]) rc = -1;
  return rc;
}

static void instance_free(instance *in) {
  for (int i = 0; i < 3; i++) ad_release(in->p[i]);
  if (in->is_ba) {
    adb_ba_release(&in->ba);
    adb_ba_free(&in->bin);
  } else if (in->is_gmm) {
    adb_gmm_release(&in->gmm);
    adb_gmm_free(&in->gin);
  } else {
    adb_lstm_release(&in->lstm);
    adb_lstm_free(&in->lin);
  }
  memset(in, 0, sizeof *in);
}

/* F, in the current scope. */
static ad_tensor *instance_f(const instance *in) {
  if (in->is_ba)
    return adb_ba_objective(&in->ba, in->p[0], in->p[1], in->p[2]);
  if (in->is_gmm)
    return adb_gmm_objective(&in->gmm, in->p[0], in->p[1], in->p[2]);
  return adb_lstm_objective(&in->lstm, in->p[0], in->p[1]);
}

/* The full gradient, in the current scope. */
static ad_tensor *instance_j(const instance *in, ad_tensor **value) {
  if (in->is_ba)
    return adb_ba_jacobian(&in->ba, in->p[0], in->p[1], in->p[2], value);
  if (in->is_gmm)
    return adb_gmm_gradient(&in->gmm, in->p[0], in->p[1], in->p[2], value);
  return adb_lstm_gradient(&in->lstm, in->p[0], in->p[1], value);
}

/* BA: every residual (F, and F from J's pass) and every Jacobian value
 * against the compact reference expanded to all observations; *fval is
 * the first residual. */
static int ba_check(const instance *in, const char *dir, double *worst,
                    double *fval) {
  char path[1024];
  adb_ba_ref ref;
  double *rf = NULL, *rj = NULL;
  int64_t p = in->bin.p;
  int rc = -1;
  *worst = INFINITY;
  snprintf(path, sizeof path, "%s/reference/%s_compact.txt", dir,
           in->info->name);
  if (adb_ba_read_ref(path, &ref) == 0 && ref.p == p && ref.n == in->bin.n &&
      ref.m == in->bin.m)
    adb_ba_expand_ref(&ref, &rf, &rj);
  if (!rf) {
    fprintf(stderr, "adbench: %s: reference missing or of the wrong size\n",
            in->info->name);
    return -1;
  }
  ad_scope_begin();
  ad_tensor *F1 = instance_f(in), *F2 = NULL;
  ad_tensor *J = instance_j(in, &F2);
  double *f1 = malloc((size_t)(3 * p) * sizeof *f1);
  double *f2 = malloc((size_t)(3 * p) * sizeof *f2);
  double *j = malloc((size_t)(31 * p) * sizeof *j);
  if (!F1 || !J || !F2) {
    fprintf(stderr, "adbench: %s: evaluation failed: %s\n", in->info->name,
            ad_error_message());
  } else if (f1 && f2 && j && ad_read(F1, f1, 3 * p) == AD_OK &&
             ad_read(F2, f2, 3 * p) == AD_OK &&
             ad_read(J, j, 31 * p) == AD_OK) {
    double r1 = adb_max_rho(f1, rf, 3 * p), r2 = adb_max_rho(f2, rf, 3 * p);
    *worst = adb_max_rho(j, rj, 31 * p);
    if (r1 > *worst) *worst = r1;
    if (r2 > *worst) *worst = r2;
    *fval = f1[0];
    rc = *worst < 1e-8 ? 0 : -1;
  }
  ad_scope_end();
  free(f1);
  free(f2);
  free(j);
  free(rf);
  free(rj);
  return rc;
}

/* Compare F and J with the reference files; the worst rho into *worst.
 * 0 when both are within 1e-8. */
static int instance_check(const instance *in, const char *dir, double *worst,
                          double *fval) {
  if (in->is_ba) return ba_check(in, dir, worst, fval);
  char path[1024];
  int64_t nf = 0, nj = 0;
  snprintf(path, sizeof path, "%s/reference/%s_F.txt", dir, in->info->name);
  double *rf = adb_read_numbers(path, &nf);
  snprintf(path, sizeof path, "%s/reference/%s_J.txt", dir, in->info->name);
  double *rj = adb_read_numbers(path, &nj);
  int rc = -1;
  *worst = INFINITY;
  ad_scope_begin();
  ad_tensor *F1 = instance_f(in), *F2 = NULL;
  ad_tensor *J = instance_j(in, &F2);
  if (!rf || !rj || nf != 1 || nj != in->nparams) {
    fprintf(stderr, "adbench: %s: reference missing or of the wrong size\n",
            in->info->name);
  } else if (!F1 || !J || !F2) {
    fprintf(stderr, "adbench: %s: evaluation failed: %s\n", in->info->name,
            ad_error_message());
  } else {
    double *g = malloc((size_t)nj * sizeof *g);
    if (g && ad_read(J, g, nj) == AD_OK) {
      double f1 = ad_item(F1), f2 = ad_item(F2);
      *fval = f1;
      *worst = adb_max_rho(g, rj, nj);
      double rf1 = adb_rho(f1, rf[0]), rf2 = adb_rho(f2, rf[0]);
      if (rf1 > *worst) *worst = rf1;
      if (rf2 > *worst) *worst = rf2;
      rc = *worst < 1e-8 ? 0 : -1;
    }
    free(g);
  }
  ad_scope_end();
  free(rf);
  free(rj);
  return rc;
}

/* Seconds per call of `reps` back-to-back calls of F or J. */
static double time_batch(const instance *in, bool grad, long reps) {
  double t0 = now();
  for (long r = 0; r < reps; r++) {
    ad_scope_begin();
    ad_tensor *t = grad ? instance_j(in, NULL) : instance_f(in);
    if (!t) {
      fprintf(stderr, "adbench: %s failed: %s\n", grad ? "J" : "F",
              ad_error_message());
      exit(1);
    }
    ad_scope_end();
  }
  return (now() - t0) / (double)reps;
}

/* ------------------------------------------------------------------------
 * Standalone: ADBench's protocol.  Repeats double until a batch takes at
 * least min_time; batches are then timed until `runs` samples or
 * time_limit seconds; the minimum per-call time is reported.
 * ---------------------------------------------------------------------- */

static double adbench_measure(const instance *in, bool grad, double min_time,
                              int runs, double time_limit, int *samples) {
  double start = now();
  long reps = 1;
  double t = time_batch(in, grad, 1);
  /* Start from the repeat count one call suggests, a power of two. */
  while ((double)reps * t < min_time && reps < (1L << 30)) reps *= 2;
  double best = reps == 1 ? t : INFINITY;
  int n = reps == 1 ? 1 : 0;
  while (n < runs && (n == 0 || now() - start < time_limit)) {
    t = time_batch(in, grad, reps);
    if ((double)reps * t < min_time) { /* too short: not a sample */
      reps *= 2;
      continue;
    }
    if (t < best) best = t;
    n++;
  }
  *samples = n;
  return best;
}

static void line(const char *cs, const char *tool, const char *fig, double v,
                 const char *unit) {
  double a = fabs(v);
  int prec = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3;
  if (a != 0 && a < 0.01) printf("%s | %s | %s | %.2e | %s\n", cs, tool, fig, v, unit);
  else printf("%s | %s | %s | %.*f | %s\n", cs, tool, fig, prec, v, unit);
  fflush(stdout);
}

/* "gmm_1k_d2_K5" -> "adbench gmm 1k d2 K5". */
static void case_name(const char *name, char *out, size_t len) {
  snprintf(out, len, "adbench %s", name);
  for (char *p = out + 8; *p; p++)
    if (*p == '_') *p = ' ';
}

static int standalone(const char *dir, const char *only, double min_time,
                      int runs, double time_limit) {
  int failures = 0;
  for (int i = 0; i < NINST; i++) {
    const instance_info *info = &INSTANCES[i];
    if (only && !strstr(info->name, only)) continue;
    char cs[96];
    case_name(info->name, cs, sizeof cs);
    instance in;
    if (instance_load(&in, info, dir) != 0) {
      printf("# %s: cannot load\n", info->name);
      failures++;
      continue;
    }
    double worst, fval = NAN;
    if (instance_check(&in, dir, &worst, &fval) != 0) {
      printf("# %s: gradient does NOT match the reference (max rho %.3g); "
             "not timed\n", info->name, worst);
      failures++;
      instance_free(&in);
      continue;
    }
    line(cs, "libad", "max rho of F and J vs reference (must be < 1e-8)",
         worst, "rho");
    int nf, nj;
    double f = adbench_measure(&in, false, min_time, runs, time_limit, &nf);
    double j = adbench_measure(&in, true, min_time, runs, time_limit, &nj);
    char fig[128];
    snprintf(fig, sizeof fig, "objective time F (min of %d batches >= %.2g s)",
             nf, min_time);
    line(cs, "libad", fig, f * 1e6, "us");
    snprintf(fig, sizeof fig, "gradient time J (min of %d batches >= %.2g s)",
             nj, min_time);
    line(cs, "libad", fig, j * 1e6, "us");
    line(cs, "libad", "J/F", j / f, "x");
    instance_free(&in);
  }
  return failures ? 1 : 0;
}

/* ------------------------------------------------------------------------
 * Server for bench/compare/driver.py.  Commands, one per line:
 *   load NAME          read and check: "ok rho=R F=V" or "error MESSAGE"
 *   batch NAME F|J K   K calls back to back: "ok t=SECONDS_PER_CALL"
 *   unload NAME        "ok"
 *   quit
 * ---------------------------------------------------------------------- */

static int serve(const char *dir) {
  printf("ready libad-adbench\n");
  fflush(stdout);
  instance in;
  bool loaded = false;
  char buf[512];
  while (fgets(buf, sizeof buf, stdin)) {
    char cmd[32] = "", name[128] = "", which[8] = "";
    long reps = 0;
    int nf = sscanf(buf, "%31s %127s %7s %ld", cmd, name, which, &reps);
    if (nf < 1 || strcmp(cmd, "quit") == 0) break;
    if (strcmp(cmd, "load") == 0) {
      if (loaded) instance_free(&in);
      loaded = false;
      const instance_info *info = find_info(name);
      double worst = INFINITY, fval = NAN;
      if (!info) printf("error unknown instance %s\n", name);
      else if (instance_load(&in, info, dir) != 0)
        printf("error cannot load %s\n", name);
      else if (instance_check(&in, dir, &worst, &fval) != 0) {
        printf("error gradient does not match the reference (rho %.3g)\n",
               worst);
        instance_free(&in);
      } else {
        loaded = true;
        printf("ok rho=%.3e F=%.17g\n", worst, fval);
      }
    } else if (strcmp(cmd, "batch") == 0 && nf == 4) {
      if (!loaded || strcmp(in.info->name, name) != 0)
        printf("error %s not loaded\n", name);
      else
        printf("ok t=%.9g\n", time_batch(&in, which[0] == 'J', reps));
    } else if (strcmp(cmd, "unload") == 0) {
      if (loaded) instance_free(&in);
      loaded = false;
      printf("ok\n");
    } else {
      printf("error bad command\n");
    }
    fflush(stdout);
  }
  if (loaded) instance_free(&in);
  return 0;
}

/* One batch of one instance, for profilers (callgrind, perf). */
static int one_batch(const char *dir, const char *name, const char *which,
                     long reps) {
  const instance_info *info = find_info(name);
  instance in;
  if (!info || instance_load(&in, info, dir) != 0) {
    fprintf(stderr, "adbench: cannot load %s\n", name);
    return 1;
  }
  double t = time_batch(&in, which[0] == 'J', reps);
  printf("%s %s: %.6g us per call (%ld calls)\n", name, which, t * 1e6, reps);
  instance_free(&in);
  return 0;
}

int main(int argc, char **argv) {
  const char *dir = "bench/data", *only = NULL;
  double min_time = 0.5, time_limit = 10;
  int runs = 10;
  bool server = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--serve") == 0) server = true;
    else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) dir = argv[++i];
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    else if (strcmp(argv[i], "--min-time") == 0 && i + 1 < argc)
      min_time = atof(argv[++i]);
    else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--time-limit") == 0 && i + 1 < argc)
      time_limit = atof(argv[++i]);
    else if (strcmp(argv[i], "--batch") == 0 && i + 3 < argc)
      return one_batch(dir, argv[i + 1], argv[i + 2], atol(argv[i + 3]));
    else {
      fprintf(stderr,
              "usage: %s [--data DIR] [--only SUBSTRING] [--min-time S] "
              "[--runs N] [--time-limit S] | --serve [--data DIR] | "
              "[--data DIR] --batch NAME F|J REPS\n",
              argv[0]);
      return 2;
    }
  }
  if (server) return serve(dir);
  printf("# ADBench in libad: data %s; F and J timed as ADBench does "
         "(minimum over batches of >= %.2g s, at most %d)\n",
         dir, min_time, runs);
  return standalone(dir, only, min_time, runs, time_limit);
}
