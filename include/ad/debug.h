/* Debugging aids: one-screen summaries of big tensors and the AD_DEBUG
 * switch that turns the first error into an abort. */
#ifndef AD_DEBUG_H
#define AD_DEBUG_H

#include <stdio.h>

#include "ad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Summaries
 *
 * ad_print shows values; for a tensor of a million elements what helps is
 * a digest.  ad_fsummary writes three lines:
 *
 *   ad_tensor shape=(1000, 1000) numel=1000000 contiguous
 *     min=-4.91 max=5.02 mean=0.00131 nan=0 +inf=0 -inf=0
 *     values: 0.135 -0.322 1.44 ... 0.0213 -1.07 0.658
 *
 * The first line gives the shape, the element count and the layout
 * ("contiguous", or "strided view" for a transpose, a step slice or a
 * broadcast).  min, max and mean are taken over the finite elements only,
 * so one NaN does not hide the range of the rest; NaN and the infinities
 * are counted instead.  With no finite element they print "n/a".  The
 * values are the first and last three in row-major order (all of them when
 * there are at most six), each with %.6g.  An empty tensor prints
 * "values: (none)".
 *
 * Both calls make no tensor, call no allocator themselves and leave the
 * recorded error alone unless t is NULL, so they are safe to call from a
 * debugger on a stopped program:
 *
 *   (gdb) call ad_summary(t)
 *
 * ad_summary writes to stdout and flushes it (so the text shows up at once
 * even when stdout is a pipe).  A NULL tensor prints
 * "<null tensor: MESSAGE>" with the recorded error's message, and
 * ad_fsummary then returns that error's code.  ad_fsummary returns
 * AD_EINVAL for a NULL stream and AD_EIO when writing fails; it flushes
 * the stream.
 * ---------------------------------------------------------------------- */

void ad_summary(const ad_tensor *t);
ad_status ad_fsummary(FILE *f, const ad_tensor *t);

/* ------------------------------------------------------------------------
 * Errors under a debugger
 *
 * Every libad error, whatever the call, is recorded by one internal
 * function, ad__error.  In gdb, `break ad__error` stops at the first sign
 * of trouble with the failing call on the stack (`bt` shows it; `finish`
 * returns to it with the message recorded in ad_error_message()).
 *
 * The environment variable AD_DEBUG changes what happens at that point:
 *
 *   unset, "", "0", "off"   nothing: the call returns its error (default)
 *   "log"                   every error is also written to stderr as
 *                           "libad: error AD_ESHAPE: <message>"
 *   "abort"                 the first error writes
 *                           "libad: AD_DEBUG=abort: AD_ESHAPE: <message>"
 *                           to stderr and calls abort(), so a debugger, a
 *                           core dump or a CI log shows where it happened
 *
 * abort here is the user's explicit request: no other libad path aborts or
 * exits.  The variable is read once, when the first error happens (or at
 * the first ad_get_debug_mode / ad_set_debug_mode call); later changes to
 * the environment are ignored.  Another value writes one warning to stderr and
 * counts as "off".
 * ---------------------------------------------------------------------- */

typedef enum ad_debug_mode {
  AD_DEBUG_OFF = 0,   /* errors are only recorded */
  AD_DEBUG_LOG = 1,   /* recorded and written to stderr */
  AD_DEBUG_ABORT = 2, /* the first error is written to stderr, then abort() */
} ad_debug_mode;

/* The mode in effect for the whole process (from AD_DEBUG unless set). */
ad_debug_mode ad_get_debug_mode(void);

/* Override AD_DEBUG from code (for all threads); returns the previous
 * mode.  An unknown value is ignored and returns the current mode.  From
 * gdb: `call ad_set_debug_mode(2)` makes the next error abort. */
ad_debug_mode ad_set_debug_mode(ad_debug_mode mode);

#ifdef __cplusplus
}
#endif
#endif /* AD_DEBUG_H */
