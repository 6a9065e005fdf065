/* The per-thread error channel: one code and one message per thread. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MESSAGE_MAX 1024

/* Not static: gdb/libad-gdb.py reads them by name ($ad_error()), which
 * needs no call into the program and so also works on a core file. */
_Thread_local ad_status ad__last_code = AD_OK;
_Thread_local unsigned long ad__error_counter;
_Thread_local char ad__last_message[MESSAGE_MAX];

/* The AD_DEBUG switch (src/debug.c): logs the error, or aborts when the
 * user asked for AD_DEBUG=abort; otherwise returns at once. */
void ad__debug_on_error(ad_status code, const char *message);

/* Every error in libad passes through here, so `break ad__error` in a
 * debugger stops at the first sign of trouble (docs/debugging.md).
 * noinline keeps it one real function that a breakpoint can name. */
__attribute__((noinline))
ad_status ad__error(ad_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ad__last_message, sizeof ad__last_message, fmt, ap);
  va_end(ap);
  ad__last_code = code;
  ad__error_counter++;
  /* After recording, so that an abort leaves the message readable in a
   * core dump or a debugger. */
  ad__debug_on_error(code, ad__last_message);
  return code;
}

void ad__error_null_arg(const char *op, const char *arg) {
  if (ad__last_code == AD_OK)
    ad__error(AD_EINVAL, "%s: argument '%s' is NULL", op, arg);
}

ad_status ad_error(void) { return ad__last_code; }


const char *ad_error_message(void) {
  return ad__last_code == AD_OK ? "" : ad__last_message;
}

void ad_error_clear(void) {
  ad__last_code = AD_OK;
  ad__last_message[0] = '\0';
}

const char *ad_strerror(ad_status status) {
  switch (status) {
#define AD_STATUS_TEXT_(name, value, text) \
  case name:                               \
    return text;
    AD_STATUS_LIST(AD_STATUS_TEXT_)
#undef AD_STATUS_TEXT_
  }
  return "unknown status";
}

char *ad__shape_str(char *buf, int ndim, const int64_t *shape) {
  size_t used = 0;
  buf[used++] = '(';
  for (int i = 0; i < ndim && used < AD__SHAPE_STR - 32; i++) {
    used += (size_t)snprintf(buf + used, AD__SHAPE_STR - used, "%s%lld",
                             i ? ", " : "", (long long)shape[i]);
  }
  if (ndim == 1) buf[used++] = ',';
  buf[used++] = ')';
  buf[used] = '\0';
  return buf;
}
