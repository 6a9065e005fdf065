/* Training feedback: one progress line per epoch and a CSV log of scalars
 * that can be plotted while training runs. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ad/nn.h"
#include "internal.h"

#define MAX_COLUMNS 64

ad_status ad_progress_print(FILE *f, const ad_progress *p) {
  static const char op[] = "ad_progress_print";
  if (!f || !p) {
    ad__error_null_arg(op, f ? "p" : "f");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  char epoch[48];
  if (p->epochs > 0)
    snprintf(epoch, sizeof epoch, "%lld/%lld", (long long)p->epoch,
             (long long)p->epochs);
  else
    snprintf(epoch, sizeof epoch, "%lld", (long long)p->epoch);
  double rate = p->seconds > 0 ? p->examples / p->seconds : 0.0;
  int w = 0;
  if (p->epochs > 0) {
    for (int64_t e = p->epochs; e > 0; e /= 10) w++;
    w = 2 * w + 1;
  }
  int ok = fprintf(f, "epoch %*s  step %6lld  loss %.4f", w, epoch,
                   (long long)p->step, p->loss) >= 0;
  if (ok && p->metric)
    ok = fprintf(f, "  %s %.4f", p->metric, p->metric_value) >= 0;
  if (ok)
    ok = fprintf(f, "  %8.0f examples/s  %.2f s\n", rate, p->seconds) >= 0;
  if (!ok || fflush(f) != 0)
    return ad__error(AD_EIO, "%s: writing the progress line failed: %s", op,
                     strerror(errno));
  return AD_OK;
}

struct ad_csv_log {
  FILE *f;
  int ncols;
  char *path;
};

static bool plain_field(const char *s) {
  return *s && !strpbrk(s, ",\"\r\n");
}

ad_csv_log *ad_csv_log_open(const char *path, int ncols,
                            const char *const *columns) {
  static const char op[] = "ad_csv_log_open";
  if (!path || !columns) {
    ad__error_null_arg(op, path ? "columns" : "path");
    return NULL;
  }
  if (ncols < 1 || ncols > MAX_COLUMNS) {
    ad__error(AD_EINVAL, "%s: need 1..%d columns, got %d", op, MAX_COLUMNS,
              ncols);
    return NULL;
  }
  for (int i = 0; i < ncols; i++)
    if (!columns[i] || !plain_field(columns[i])) {
      ad__error(AD_EINVAL,
                "%s: column %d must be a non-empty name without commas, "
                "quotes or newlines",
                op, i);
      return NULL;
    }
  ad_csv_log *log = calloc(1, sizeof *log);
  char *copy = strdup(path);
  if (!log || !copy) {
    free(log);
    free(copy);
    ad__error(AD_ENOMEM, "%s: out of memory", op);
    return NULL;
  }
  log->f = fopen(path, "w");
  if (!log->f) {
    ad__error(AD_EIO, "%s: cannot create '%s': %s", op, path,
              strerror(errno));
    free(copy);
    free(log);
    return NULL;
  }
  log->ncols = ncols;
  log->path = copy;
  int ok = fputs("step", log->f) >= 0;
  for (int i = 0; ok && i < ncols; i++)
    ok = fprintf(log->f, ",%s", columns[i]) >= 0;
  if (!ok || fputc('\n', log->f) == EOF || fflush(log->f) != 0) {
    ad__error(AD_EIO, "%s: cannot write '%s': %s", op, path, strerror(errno));
    fclose(log->f);
    free(copy);
    free(log);
    return NULL;
  }
  return log;
}

ad_status ad_csv_log_row(ad_csv_log *log, int64_t step,
                         const double *values) {
  static const char op[] = "ad_csv_log_row";
  if (!log || !values) {
    ad__error_null_arg(op, log ? "values" : "log");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  int ok = fprintf(log->f, "%lld", (long long)step) >= 0;
  for (int i = 0; ok && i < log->ncols; i++)
    ok = isnan(values[i]) ? fputc(',', log->f) != EOF
                          : fprintf(log->f, ",%.17g", values[i]) >= 0;
  if (!ok || fputc('\n', log->f) == EOF || fflush(log->f) != 0)
    return ad__error(AD_EIO, "%s: cannot write '%s': %s", op, log->path,
                     strerror(errno));
  return AD_OK;
}

ad_status ad_csv_log_close(ad_csv_log *log) {
  if (!log) return AD_OK;
  ad_status st = AD_OK;
  if (fclose(log->f) != 0)
    st = ad__error(AD_EIO, "ad_csv_log_close: closing '%s' failed: %s",
                   log->path, strerror(errno));
  free(log->path);
  free(log);
  return st;
}
