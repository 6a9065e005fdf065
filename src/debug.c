/* Debugging aids: tensor summaries and the AD_DEBUG switch that ad__error
 * consults. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ad/debug.h"
#include "internal.h"

/* ------------------------------------------------------------------------
 * The AD_DEBUG switch
 * ---------------------------------------------------------------------- */

/* Called by ad__error (src/error.c) after it recorded code and message.
 * Declared here rather than in internal.h because nothing else may call
 * it. */
void ad__debug_on_error(ad_status code, const char *message);

/* The process-wide mode; atomic because any thread may hit an error while
 * another calls ad_set_debug_mode. */
static atomic_int debug_mode = AD_DEBUG_OFF;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

/* getenv runs once, under pthread_once, so that a hot loop of failing
 * calls does not parse the environment each time. */
static void read_environment(void) {
  const char *s = getenv("AD_DEBUG");
  ad_debug_mode mode = AD_DEBUG_OFF;
  if (!s || !*s || !strcmp(s, "0") || !strcmp(s, "off")) {
    mode = AD_DEBUG_OFF;
  } else if (!strcmp(s, "abort")) {
    mode = AD_DEBUG_ABORT;
  } else if (!strcmp(s, "log")) {
    mode = AD_DEBUG_LOG;
  } else {
    /* A misspelt switch that silently did nothing would waste the very
     * debugging session it was meant to help. */
    fprintf(stderr,
            "libad: AD_DEBUG=%s is not understood (use abort, log or off); "
            "ignored\n",
            s);
  }
  atomic_store(&debug_mode, (int)mode);
}

ad_debug_mode ad_get_debug_mode(void) {
  pthread_once(&env_once, read_environment);
  return (ad_debug_mode)atomic_load(&debug_mode);
}

ad_debug_mode ad_set_debug_mode(ad_debug_mode mode) {
  /* Read the environment first so that it cannot overwrite this call's
   * choice later. */
  pthread_once(&env_once, read_environment);
  if (mode != AD_DEBUG_OFF && mode != AD_DEBUG_LOG && mode != AD_DEBUG_ABORT)
    return (ad_debug_mode)atomic_load(&debug_mode);
  return (ad_debug_mode)atomic_exchange(&debug_mode, (int)mode);
}

static const char *status_name(ad_status code) {
  switch (code) {
#define AD_STATUS_NAME_(name, value, text) \
  case name:                               \
    return #name;
    AD_STATUS_LIST(AD_STATUS_NAME_)
#undef AD_STATUS_NAME_
  }
  return "AD_E?";
}

void ad__debug_on_error(ad_status code, const char *message) {
  ad_debug_mode mode = ad_get_debug_mode();
  if (mode == AD_DEBUG_OFF) return;
  if (mode == AD_DEBUG_LOG) {
    /* One fprintf per error: stdio locks the stream per call, so lines
     * from several threads do not interleave. */
    fprintf(stderr, "libad: error %s: %s\n", status_name(code), message);
    return;
  }
  /* AD_DEBUG=abort: the user asked for it explicitly.  This is the only
   * place in libad that aborts. */
  fprintf(stderr, "libad: AD_DEBUG=abort: %s: %s\n", status_name(code),
          message);
  fflush(stderr);
  abort();
}

/* ------------------------------------------------------------------------
 * Summaries
 * ---------------------------------------------------------------------- */

/* Elements shown at each end of the values line. */
#define SUMMARY_EDGE 3

typedef struct summary {
  int64_t nan, pos_inf, neg_inf, finite;
  double min, max;
  double sum, comp; /* Neumaier-compensated sum of the finite elements */
} summary;

/* Visit t's elements in row-major order through its strides (views and
 * broadcasts included) without copying: a summary must not allocate, as
 * it is called from debuggers on programs that may be out of memory. */
typedef void (*element_fn)(double x, void *ctx);

static void for_each_element(const ad_tensor *t, element_fn fn, void *ctx) {
  if (t->numel == 0) return;
  int64_t idx[AD_MAX_DIMS] = {0};
  const double *p = t->data;
  for (int64_t n = 0; n < t->numel; n++) {
    fn(*p, ctx);
    p += ad__next_element(t, idx);
  }
}

static void add_element(double x, void *ctx) {
  summary *s = ctx;
  if (isnan(x)) {
    s->nan++;
    return;
  }
  if (isinf(x)) {
    if (x > 0)
      s->pos_inf++;
    else
      s->neg_inf++;
    return;
  }
  if (s->finite == 0 || x < s->min) s->min = x;
  if (s->finite == 0 || x > s->max) s->max = x;
  s->finite++;
  /* Neumaier's summation keeps the mean of a million elements accurate
   * to the last digits printed. */
  double t = s->sum + x;
  if (fabs(s->sum) >= fabs(x))
    s->comp += (s->sum - t) + x;
  else
    s->comp += (x - t) + s->sum;
  s->sum = t;
}

/* The second pass when the plain sum overflowed: each term is divided by
 * the count first, so the partial sums stay within the range of the
 * elements. */
typedef struct scaled_mean {
  double inv_count, sum;
} scaled_mean;

static void add_scaled(double x, void *ctx) {
  scaled_mean *m = ctx;
  if (isfinite(x)) m->sum += x * m->inv_count;
}

/* The element at row-major position k. */
static double element_at(const ad_tensor *t, int64_t k) {
  const double *p = t->data;
  for (int d = t->ndim - 1; d >= 0; d--) {
    p += (k % t->shape[d]) * t->strides[d];
    k /= t->shape[d];
  }
  return *p;
}

static void put_value(FILE *f, double x) { fprintf(f, " %.6g", x); }

ad_status ad_fsummary(FILE *f, const ad_tensor *t) {
  if (!f) return ad__error(AD_EINVAL, "ad_fsummary: FILE is NULL");
  ad_status status = AD_OK;
  if (!t) {
    /* Like ad_fprint: show why the tensor is missing and keep the error. */
    ad__error_null_arg("ad_fsummary", "t");
    fprintf(f, "<null tensor: %s>\n", ad_error_message());
    status = ad_error();
  } else {
    char shape[AD__SHAPE_STR];
    fprintf(f, "ad_tensor shape=%s numel=%lld %s\n",
            ad__shape_str(shape, t->ndim, t->shape), (long long)t->numel,
            t->contiguous ? "contiguous" : "strided view");

    summary s = {0};
    for_each_element(t, add_element, &s);
    double mean = 0;
    if (s.finite > 0) {
      mean = (s.sum + s.comp) / (double)s.finite;
      if (!isfinite(mean)) {
        scaled_mean m = {1.0 / (double)s.finite, 0};
        for_each_element(t, add_scaled, &m);
        mean = m.sum;
      }
      fprintf(f, "  min=%.6g max=%.6g mean=%.6g", s.min, s.max, mean);
    } else {
      fputs("  min=n/a max=n/a mean=n/a", f);
    }
    fprintf(f, " nan=%lld +inf=%lld -inf=%lld\n", (long long)s.nan,
            (long long)s.pos_inf, (long long)s.neg_inf);

    fputs("  values:", f);
    if (t->numel == 0) {
      fputs(" (none)", f);
    } else if (t->numel <= 2 * SUMMARY_EDGE) {
      for (int64_t k = 0; k < t->numel; k++) put_value(f, element_at(t, k));
    } else {
      for (int64_t k = 0; k < SUMMARY_EDGE; k++)
        put_value(f, element_at(t, k));
      fputs(" ...", f);
      for (int64_t k = t->numel - SUMMARY_EDGE; k < t->numel; k++)
        put_value(f, element_at(t, k));
    }
    fputc('\n', f);
  }
  /* Buffered streams report a failed write only when flushed. */
  if (ferror(f) || fflush(f) != 0)
    return ad__error(AD_EIO, "ad_fsummary: writing the summary failed");
  return status;
}

void ad_summary(const ad_tensor *t) { (void)ad_fsummary(stdout, t); }
