/* NumPy-style printing of tensors: ad_print and ad_fprint. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* NumPy's default print options (np.get_printoptions()). */
#define LINE_WIDTH 75
#define THRESHOLD 1000
#define EDGE_ITEMS 3
#define PRECISION 8

/* Longer than any formatted element (at most about 20 characters). */
#define WORD_MAX 64
/* A row's pending line: at most LINE_WIDTH plus one word and a separator. */
#define LINE_MAX (LINE_WIDTH + WORD_MAX + 8)

/* Integral values below this magnitude print as integers; from 2^53 on
 * doubles are integral anyway, so the bound only keeps huge values (whose
 * digits are noise) in scientific notation. */
#define INTEGER_LIMIT 1e16

/* ------------------------------------------------------------------------
 * Output: a small buffer in front of the FILE, so that printing needs no
 * heap memory and a failed write is noticed once.
 * ---------------------------------------------------------------------- */

typedef struct sink {
  FILE *f;
  size_t len;
  bool failed;
  char buf[4096];
} sink;

static void sink_flush(sink *s) {
  if (s->len > 0 && !s->failed && fwrite(s->buf, 1, s->len, s->f) != s->len)
    s->failed = true;
  s->len = 0;
}

static void put(sink *s, const char *p, size_t n) {
  while (n > 0) {
    if (s->len == sizeof s->buf) sink_flush(s);
    size_t k = sizeof s->buf - s->len;
    if (k > n) k = n;
    memcpy(s->buf + s->len, p, k);
    s->len += k;
    p += k;
    n -= k;
  }
}

static void put_str(sink *s, const char *p) { put(s, p, strlen(p)); }

static void put_spaces(sink *s, int n) {
  for (int i = 0; i < n; i++) put(s, " ", 1);
}

/* ------------------------------------------------------------------------
 * Decimal digits.  NumPy prints with Dragon4: the shortest digits that read
 * back as the same double, cut at PRECISION digits after the point (the
 * cut rounding the exact value).  printf gives both: "%.*e" with growing
 * precision until strtod round-trips finds the shortest digits, and
 * "%.8f" / "%.8e" round the exact value.  Digits are taken out of printf's
 * text character by character, so a locale's decimal comma does no harm.
 * ---------------------------------------------------------------------- */

/* |x| = d[0].d[1]d[2]... * 10^exp10 (digits as characters). */
typedef struct decimal {
  char d[40];
  int n;
  int exp10;
} decimal;

static void trim_zeros(decimal *v) {
  while (v->n > 1 && v->d[v->n - 1] == '0') v->n--;
  v->d[v->n] = '\0';
}

/* Parse printf's "%e" text (sign ignored). */
static void parse_exp_text(const char *text, decimal *v) {
  const char *p = text;
  v->n = 0;
  for (; *p && *p != 'e'; p++)
    if (*p >= '0' && *p <= '9' && v->n < (int)sizeof v->d - 1)
      v->d[v->n++] = *p;
  v->exp10 = *p == 'e' ? atoi(p + 1) : 0;
  trim_zeros(v);
}

static void shortest_digits(double x, decimal *v) {
  char text[64];
  /* 17 significant digits always round-trip a double. */
  for (int p = 0; p <= 16; p++) {
    snprintf(text, sizeof text, "%.*e", p, fabs(x));
    if (strtod(text, NULL) == fabs(x)) break;
  }
  parse_exp_text(text, v);
}

/* Copy at most WORD_MAX - 1 characters; fixed notation is only used for
 * values below 1e8, so nothing real is ever cut. */
static void copy_word(char *dst, const char *src, int n) {
  if (n > WORD_MAX - 1) n = WORD_MAX - 1;
  memcpy(dst, src, (size_t)n);
  dst[n] = '\0';
}

/* x in positional notation without sign: integer and fraction digits
 * (the fraction possibly empty), each in WORD_MAX bytes. */
static void positional_parts(double x, char *ip, char *fp) {
  /* Room for DBL_MAX's 309 integer digits and a full fraction. */
  char int_digits[400], frac_digits[400];
  int i = 0, f = 0;
  decimal v;
  shortest_digits(x, &v);
  if (v.n - 1 - v.exp10 > PRECISION) {
    char text[400];
    snprintf(text, sizeof text, "%.*f", PRECISION, fabs(x));
    const char *p = text;
    for (; *p >= '0' && *p <= '9'; p++) int_digits[i++] = *p;
    for (; *p; p++)
      if (*p >= '0' && *p <= '9') frac_digits[f++] = *p;
  } else if (v.exp10 < 0) {
    int_digits[i++] = '0';
    for (int k = 0; k < -v.exp10 - 1; k++) frac_digits[f++] = '0';
    for (int k = 0; k < v.n; k++) frac_digits[f++] = v.d[k];
  } else {
    for (int k = 0; k <= v.exp10; k++)
      int_digits[i++] = k < v.n ? v.d[k] : '0';
    for (int k = v.exp10 + 1; k < v.n; k++) frac_digits[f++] = v.d[k];
  }
  while (f > 0 && frac_digits[f - 1] == '0') f--;
  copy_word(ip, int_digits, i);
  copy_word(fp, frac_digits, f);
}

/* x in scientific notation without sign: d.fff * 10^exp10. */
static void scientific_parts(double x, char *lead, char *fp, int *exp10) {
  decimal v;
  shortest_digits(x, &v);
  if (v.n - 1 > PRECISION) {
    char text[64];
    snprintf(text, sizeof text, "%.*e", PRECISION, fabs(x));
    parse_exp_text(text, &v);
  }
  *lead = v.d[0];
  memcpy(fp, v.d + 1, (size_t)v.n - 1);
  fp[v.n - 1] = '\0';
  *exp10 = v.exp10;
}

static int digit_count(int n) {
  int k = 1;
  for (n = abs(n); n >= 10; n /= 10) k++;
  return k;
}

/* ------------------------------------------------------------------------
 * The format of one tensor's elements, chosen from the elements shown,
 * as NumPy's IntegerFormat / FloatingFormat do.
 * ---------------------------------------------------------------------- */

typedef enum mode { MODE_INTEGER, MODE_FIXED, MODE_SCIENTIFIC } mode;

typedef struct format {
  mode mode;
  int width;     /* integer mode: every element right-aligned to this */
  int pad_left;  /* float modes: width of sign and integer part */
  int pad_right; /* fixed: fraction width; scientific: all after the '.' */
  int precision; /* scientific: fraction digits of every mantissa */
  int exp_size;  /* scientific: exponent digits */
} format;

/* Iteration over the elements shown: all of them, or when summarising
 * EDGE_ITEMS at each end of every axis longer than 2 * EDGE_ITEMS. */
typedef struct view {
  const ad_tensor *t;
  bool summarize;
} view;

static bool elided(const view *v, int axis) {
  return v->summarize && v->t->shape[axis] > 2 * EDGE_ITEMS;
}

static int64_t shown_count(const view *v, int axis) {
  return elided(v, axis) ? 2 * EDGE_ITEMS : v->t->shape[axis];
}

static int64_t shown_index(const view *v, int axis, int64_t k) {
  return elided(v, axis) && k >= EDGE_ITEMS
             ? v->t->shape[axis] - 2 * EDGE_ITEMS + k
             : k;
}

typedef void (*visit_fn)(double x, void *ctx);

static void visit_shown(const view *v, visit_fn fn, void *ctx) {
  const ad_tensor *t = v->t;
  int64_t k[AD_MAX_DIMS] = {0};
  for (;;) {
    const double *p = t->data;
    for (int d = 0; d < t->ndim; d++)
      p += shown_index(v, d, k[d]) * t->strides[d];
    fn(*p, ctx);
    int d = t->ndim - 1;
    for (; d >= 0; d--) {
      if (++k[d] < shown_count(v, d)) break;
      k[d] = 0;
    }
    if (d < 0) return;
  }
}

typedef struct stats {
  bool integral;    /* every finite value integral and below INTEGER_LIMIT */
  bool any_finite, any_nonfinite, any_neg_inf, any_nonzero;
  double max_abs, min_abs; /* over finite non-zero values */
} stats;

static void gather_stats(double x, void *ctx) {
  stats *s = ctx;
  if (!isfinite(x)) {
    s->any_nonfinite = true;
    if (isinf(x) && x < 0) s->any_neg_inf = true;
    return;
  }
  s->any_finite = true;
  if (fabs(x) >= INTEGER_LIMIT || x != floor(x)) s->integral = false;
  if (x == 0) return;
  double a = fabs(x);
  if (!s->any_nonzero || a > s->max_abs) s->max_abs = a;
  if (!s->any_nonzero || a < s->min_abs) s->min_abs = a;
  s->any_nonzero = true;
}

/* Write x's element text, unpadded in integer mode, into w. */
static void integer_text(double x, char *w) {
  if (isnan(x))
    strcpy(w, "nan");
  else if (isinf(x))
    strcpy(w, x < 0 ? "-inf" : "inf");
  else /* -0.0 prints as 0, as in an integer array. */
    snprintf(w, WORD_MAX, "%.0f", x == 0 ? 0.0 : x);
}

static void measure_integer(double x, void *ctx) {
  format *f = ctx;
  char w[WORD_MAX];
  integer_text(x, w);
  int n = (int)strlen(w);
  if (n > f->width) f->width = n;
}

static void measure_fixed(double x, void *ctx) {
  format *f = ctx;
  if (!isfinite(x)) return;
  char ip[WORD_MAX], fp[WORD_MAX];
  positional_parts(x, ip, fp);
  int left = (int)strlen(ip) + (signbit(x) ? 1 : 0);
  int right = (int)strlen(fp);
  if (left > f->pad_left) f->pad_left = left;
  if (right > f->pad_right) f->pad_right = right;
}

static void measure_scientific(double x, void *ctx) {
  format *f = ctx;
  if (!isfinite(x)) return;
  char lead, fp[WORD_MAX];
  int e;
  scientific_parts(x, &lead, fp, &e);
  int left = 1 + (signbit(x) ? 1 : 0);
  int prec = (int)strlen(fp);
  int es = digit_count(e) < 2 ? 2 : digit_count(e);
  if (left > f->pad_left) f->pad_left = left;
  if (prec > f->precision) f->precision = prec;
  if (es > f->exp_size) f->exp_size = es;
}

static format choose_format(const view *v) {
  stats s = {.integral = true};
  visit_shown(v, gather_stats, &s);
  format f = {.mode = MODE_INTEGER};
  if (s.integral) {
    visit_shown(v, measure_integer, &f);
    return f;
  }
  /* NumPy switches to scientific notation for large values and for
   * values too small or too spread out to share one fixed layout. */
  bool sci = s.any_nonzero &&
             (s.max_abs >= 1e8 || s.min_abs < 1e-4 ||
              s.max_abs / s.min_abs > 1e3);
  f.mode = sci ? MODE_SCIENTIFIC : MODE_FIXED;
  if (s.any_finite) {
    visit_shown(v, sci ? measure_scientific : measure_fixed, &f);
    if (sci) f.pad_right = f.exp_size + 2 + f.precision;
  }
  if (s.any_nonfinite) {
    /* nan and inf are right-aligned to the width of a finite element. */
    int offset = f.pad_right + 1;
    int inf_len = 3 + (s.any_neg_inf ? 1 : 0);
    if (3 - offset > f.pad_left) f.pad_left = 3 - offset;
    if (inf_len - offset > f.pad_left) f.pad_left = inf_len - offset;
  }
  return f;
}

/* Appends to a word, never past WORD_MAX - 1 characters. */
typedef struct word_builder {
  char *w;
  int len;
} word_builder;

static void add_chars(word_builder *b, char c, int n) {
  for (int i = 0; i < n && b->len < WORD_MAX - 1; i++) b->w[b->len++] = c;
  b->w[b->len] = '\0';
}

static void add_str(word_builder *b, const char *s) {
  for (; *s; s++) add_chars(b, *s, 1);
}

/* Format x into w (WORD_MAX bytes), padded to the common width. */
static void format_element(const format *f, double x, char *w) {
  word_builder b = {w, 0};
  w[0] = '\0';
  if (f->mode == MODE_INTEGER) {
    char text[WORD_MAX];
    integer_text(x, text);
    add_chars(&b, ' ', f->width - (int)strlen(text));
    add_str(&b, text);
    return;
  }
  if (!isfinite(x)) {
    const char *text = isnan(x) ? "nan" : x < 0 ? "-inf" : "inf";
    add_chars(&b, ' ', f->pad_left + f->pad_right + 1 - (int)strlen(text));
    add_str(&b, text);
    return;
  }
  int sign = signbit(x) ? 1 : 0;
  if (f->mode == MODE_FIXED) {
    char ip[WORD_MAX], fp[WORD_MAX];
    positional_parts(x, ip, fp);
    add_chars(&b, ' ', f->pad_left - sign - (int)strlen(ip));
    add_chars(&b, '-', sign);
    add_str(&b, ip);
    add_chars(&b, '.', 1);
    add_str(&b, fp);
    add_chars(&b, ' ', f->pad_right - (int)strlen(fp));
    return;
  }
  char lead, fp[WORD_MAX], exp_text[16];
  int e;
  scientific_parts(x, &lead, fp, &e);
  add_chars(&b, ' ', f->pad_left - sign - 1);
  add_chars(&b, '-', sign);
  add_chars(&b, lead, 1);
  add_chars(&b, '.', 1);
  add_str(&b, fp);
  add_chars(&b, '0', f->precision - (int)strlen(fp));
  add_chars(&b, 'e', 1);
  add_chars(&b, e < 0 ? '-' : '+', 1);
  snprintf(exp_text, sizeof exp_text, "%d", abs(e));
  add_chars(&b, '0', f->exp_size - (int)strlen(exp_text));
  add_str(&b, exp_text);
}

/* ------------------------------------------------------------------------
 * Layout: NumPy's _formatArray with separator ' ', line width 75.  The
 * sub-array at depth k continues its lines after k + 1 columns of indent
 * and may use LINE_WIDTH - k columns; its first line's indent is taken by
 * the opening brackets already written.
 * ---------------------------------------------------------------------- */

typedef struct printer {
  sink *out;
  view view;
  format format;
} printer;

/* A row's line under construction; len counts the indent too, since the
 * wrapping rule measures whole lines. */
typedef struct row_line {
  char text[LINE_MAX];
  int text_len;
  int len;
} row_line;

static void row_extend(printer *p, row_line *l, const char *word, int limit,
                       int indent) {
  int n = (int)strlen(word);
  /* Wrapping a line that holds only the indent would not help. */
  if (l->len + n > limit && l->len > indent) {
    while (l->text_len > 0 && l->text[l->text_len - 1] == ' ') l->text_len--;
    put(p->out, l->text, (size_t)l->text_len);
    put(p->out, "\n", 1);
    put_spaces(p->out, indent);
    l->text_len = 0;
    l->len = indent;
  }
  memcpy(l->text + l->text_len, word, (size_t)n);
  l->text_len += n;
  l->len += n;
}

static void row_separator(row_line *l) {
  l->text[l->text_len++] = ' ';
  l->len++;
}

static void print_row(printer *p, int axis, const double *base) {
  const ad_tensor *t = p->view.t;
  int indent = axis + 1;
  int limit = LINE_WIDTH - axis - 1; /* room for the closing bracket */
  int64_t count = shown_count(&p->view, axis);
  row_line l = {.len = indent};
  char word[WORD_MAX];
  put(p->out, "[", 1);
  for (int64_t k = 0; k < count; k++) {
    if (k == EDGE_ITEMS && elided(&p->view, axis)) {
      row_extend(p, &l, "...", limit, indent);
      row_separator(&l);
    }
    int64_t i = shown_index(&p->view, axis, k);
    format_element(&p->format, base[i * t->strides[axis]], word);
    row_extend(p, &l, word, limit, indent);
    if (k + 1 < count) row_separator(&l);
  }
  put(p->out, l.text, (size_t)l.text_len);
  put(p->out, "]", 1);
}

static void print_axis(printer *p, int axis, const double *base) {
  const ad_tensor *t = p->view.t;
  if (axis == t->ndim - 1) {
    print_row(p, axis, base);
    return;
  }
  int indent = axis + 1;
  /* Rows end with one newline, 2-d blocks with two, 3-d with three... */
  int newlines = t->ndim - axis - 1;
  int64_t count = shown_count(&p->view, axis);
  put(p->out, "[", 1);
  for (int64_t k = 0; k < count; k++) {
    if (k > 0) put_spaces(p->out, indent);
    if (k == EDGE_ITEMS && elided(&p->view, axis)) {
      put(p->out, "...", 3);
      for (int i = 0; i < newlines; i++) put(p->out, "\n", 1);
      put_spaces(p->out, indent);
    }
    int64_t i = shown_index(&p->view, axis, k);
    print_axis(p, axis + 1, base + i * t->strides[axis]);
    if (k + 1 < count)
      for (int j = 0; j < newlines; j++) put(p->out, "\n", 1);
  }
  put(p->out, "]", 1);
}

static void print_tensor(sink *out, const ad_tensor *t) {
  if (t->numel == 0) {
    put_str(out, "[]");
    return;
  }
  printer p = {.out = out, .view = {t, t->numel > THRESHOLD}};
  p.format = choose_format(&p.view);
  if (t->ndim == 0) {
    char word[WORD_MAX];
    format_element(&p.format, t->data[0], word);
    put_str(out, word);
    return;
  }
  print_axis(&p, 0, t->data);
}

/* ------------------------------------------------------------------------
 * Public entry points
 * ---------------------------------------------------------------------- */

ad_status ad_fprint(FILE *f, const ad_tensor *t) {
  if (!f) return ad__error(AD_EINVAL, "ad_fprint: FILE is NULL");
  sink out = {.f = f};
  ad_status status = AD_OK;
  if (!t) {
    /* Printing the NULL that a failed call returned should show why it
     * failed, and keep that error for the caller. */
    ad__error_null_arg("ad_fprint", "t");
    put_str(&out, "<null tensor: ");
    put_str(&out, ad_error_message());
    put_str(&out, ">\n");
    status = ad_error();
  } else {
    char shape[AD__SHAPE_STR];
    print_tensor(&out, t);
    put_str(&out, " shape=");
    put_str(&out, ad__shape_str(shape, t->ndim, t->shape));
    put_str(&out, "\n");
  }
  sink_flush(&out);
  /* Buffered streams report a failed write only when flushed. */
  if (out.failed || fflush(f) != 0)
    return ad__error(AD_EIO, "ad_fprint: writing the tensor failed");
  return status;
}

void ad_print(const ad_tensor *t) { (void)ad_fprint(stdout, t); }
