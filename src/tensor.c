/* The tensor object: creation, reference counting, scopes and accessors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------------
 * Identity
 * ---------------------------------------------------------------------- */

static atomic_ulong thread_serial_counter;
static _Thread_local uint64_t thread_tag;
static _Thread_local uint64_t id_counter;

/* Ids are (thread serial << 40 | counter): unique without a shared
 * atomic on the hot path. */
uint64_t ad__next_id(void) {
  if (thread_tag == 0)
    thread_tag = (uint64_t)(atomic_fetch_add(&thread_serial_counter, 1) + 1)
                 << 40;
  return thread_tag | ++id_counter;
}

/* ------------------------------------------------------------------------
 * Shape helpers
 * ---------------------------------------------------------------------- */

int64_t ad__checked_numel(const char *op, int ndim, const int64_t *shape) {
  int64_t n = 1;
  /* A zero-size axis empties the tensor however large the others are. */
  bool empty = false;
  for (int i = 0; i < ndim; i++) empty |= shape[i] == 0;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      char buf[AD__SHAPE_STR];
      ad__error(AD_EINVAL, "%s: negative size %lld at axis %d of shape %s",
                op, (long long)shape[i], i,
                ad__shape_str(buf, ndim, shape));
      return -1;
    }
    if (empty) continue;
    if (__builtin_mul_overflow(n, shape[i], &n)) {
      char buf[AD__SHAPE_STR];
      ad__error(AD_EINVAL, "%s: element count of shape %s overflows int64",
                op, ad__shape_str(buf, ndim, shape));
      return -1;
    }
  }
  if (empty) return 0;
  /* Even without int64 overflow, the byte count must fit in memory. */
  if (n > INT64_MAX / (int64_t)sizeof(double)) {
    char buf[AD__SHAPE_STR];
    ad__error(AD_EINVAL, "%s: shape %s is too large", op,
              ad__shape_str(buf, ndim, shape));
    return -1;
  }
  return n;
}

ad_status ad__check_shape(const char *op, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > AD_MAX_DIMS)
    return ad__error(AD_EINVAL, "%s: rank %d is outside 0..%d", op, ndim,
                     AD_MAX_DIMS);
  if (ndim > 0 && !shape)
    return ad__error(AD_EINVAL, "%s: shape is NULL for rank %d", op, ndim);
  return ad__checked_numel(op, ndim, shape) < 0 ? ad_error() : AD_OK;
}

void ad__dense_strides(int ndim, const int64_t *shape, int64_t *strides) {
  /* Unsigned: an empty tensor may have axes whose product overflows; its
   * strides are never used to address anything. */
  uint64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    strides[i] = (int64_t)s;
    s *= shape[i] > 0 ? (uint64_t)shape[i] : 1u;
  }
}

int ad__norm_axis(const char *op, int axis, int ndim) {
  int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) {
    ad__error(AD_EINVAL, "%s: axis %d is out of range for rank %d", op, axis,
              ndim);
    return -1;
  }
  return a;
}

ad_status ad__broadcast_shapes(const char *op, int na, const int64_t *sa,
                               int nb, const int64_t *sb, int *nout,
                               int64_t *out) {
  int n = na > nb ? na : nb;
  for (int i = 0; i < n; i++) {
    int ia = na - n + i, ib = nb - n + i;
    int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      char ba[AD__SHAPE_STR], bb[AD__SHAPE_STR];
      return ad__error(AD_ESHAPE, "%s: shapes %s and %s cannot broadcast",
                       op, ad__shape_str(ba, na, sa),
                       ad__shape_str(bb, nb, sb));
    }
    out[i] = da == 1 ? db : da;
  }
  *nout = n;
  return AD_OK;
}

ad_status ad__slice_bounds(const char *op, int64_t dim, int64_t *start,
                           int64_t *stop, int64_t step, int64_t *count) {
  if (step == 0) return ad__error(AD_EINVAL, "%s: slice step is 0", op);
  int64_t lo, hi;
  if (step > 0) {
    lo = 0;
    hi = dim;
  } else {
    lo = -1;
    hi = dim - 1;
  }
  int64_t b = *start, e = *stop;
  if (b < 0) b = b + dim < lo ? lo : b + dim;
  else if (b > hi) b = hi;
  if (e < 0) e = e + dim < lo ? lo : e + dim;
  else if (e > hi) e = hi;
  /* Written so that no intermediate overflows, even for huge steps. */
  int64_t n = 0;
  if (step > 0 && e > b) n = (e - b - 1) / step + 1;
  if (step < 0 && b > e)
    n = (int64_t)((uint64_t)(b - e - 1) / (0 - (uint64_t)step)) + 1;
  *start = b;
  *stop = e;
  *count = n;
  return AD_OK;
}

/* ------------------------------------------------------------------------
 * Allocation and reference counting
 * ---------------------------------------------------------------------- */

static ad_tensor *new_header(int ndim, const int64_t *shape) {
  ad_tensor *t = ad__pool_header();
  if (!t) return NULL;
  atomic_init(&t->refs, 1);
  t->id = ad__next_id();
  t->tape_mark = 0;
  t->ndim = ndim;
  /* An empty tensor may have axes whose product overflows: its count is
   * 0 whatever the others are.  Other shapes were checked by their
   * makers. */
  bool empty = false;
  for (int i = 0; i < ndim; i++) {
    t->shape[i] = shape[i];
    empty |= shape[i] == 0;
  }
  t->numel = 1;
  for (int i = 0; i < ndim && !empty; i++) t->numel *= shape[i];
  if (empty) t->numel = 0;
  return t;
}

ad_tensor *ad__alloc(const char *op, int ndim, const int64_t *shape) {
  if (ad__check_shape(op, ndim, shape) != AD_OK) return NULL;
  ad_tensor *t = new_header(ndim, shape);
  if (!t) {
    ad__error(AD_ENOMEM, "%s: out of memory for a tensor header", op);
    return NULL;
  }
  if (t->numel <= AD__EMBEDDED_ELEMS) {
    ad__storage *e = &t->embedded;
    atomic_init(&e->refs, 1);
    e->size_class = AD__EMBEDDED_CLASS;
    e->capacity = AD__EMBEDDED_ELEMS;
    e->data = t->embedded_data;
    t->storage = e;
  } else {
    t->storage = ad__pool_storage(t->numel);
  }
  if (!t->storage) {
    char buf[AD__SHAPE_STR];
    ad__error(AD_ENOMEM, "%s: out of memory for a tensor of shape %s", op,
              ad__shape_str(buf, ndim, shape));
    ad__pool_free_header(t);
    return NULL;
  }
  t->data = t->storage->data;
  t->contiguous = true;
  ad__dense_strides(ndim, shape, t->strides);
  return t;
}

/* Row-major with no gaps.  An empty shape is dense whatever its strides
 * (it lays nothing out), and its other axes may multiply past int64, so it
 * is answered before any product; a non-empty shape's running product is
 * bounded by its count. */
static bool is_dense(int ndim, const int64_t *shape, const int64_t *strides) {
  for (int i = 0; i < ndim; i++)
    if (shape[i] == 0) return true;
  int64_t expect = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

ad_tensor *ad__view(const ad_tensor *base, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset) {
  ad_tensor *t = new_header(ndim, shape);
  if (!t) {
    ad__error(AD_ENOMEM, "ad_view: out of memory for a tensor view");
    return NULL;
  }
  t->storage = base->storage;
  atomic_fetch_add_explicit(&t->storage->refs, 1, memory_order_relaxed);
  if (t->numel == 0) {
    /* An empty view addresses nothing: its offset and strides, computed
     * from axes that may be huge, need not mean anything (the kernels
     * pass 0 rather than overflow).  Keep the pointer at the base, so
     * that no out-of-bounds pointer is formed, and give it the dense
     * strides of its shape (ad__dense_strides never overflows). */
    t->data = base->data;
    ad__dense_strides(ndim, shape, t->strides);
    t->contiguous = true;
    return t;
  }
  t->data = base->data + offset;
  for (int i = 0; i < ndim; i++) t->strides[i] = strides[i];
  t->contiguous = is_dense(ndim, shape, strides);
  return t;
}

void ad__gather_contiguous(const ad_tensor *t, double *out) {
  if (t->numel == 0) return;
  if (t->contiguous) {
    memcpy(out, t->data, (size_t)t->numel * sizeof(double));
    return;
  }
  int64_t idx[AD_MAX_DIMS] = {0};
  const double *p = t->data;
  for (int64_t n = 0; n < t->numel; n++) {
    out[n] = *p;
    p += ad__next_element(t, idx);
  }
}

ad_tensor *ad__contiguous(ad_tensor *t) {
  if (t->contiguous) return ad_retain(t);
  ad_tensor *c = ad__alloc("ad_contiguous", t->ndim, t->shape);
  if (!c) return NULL;
  ad__gather_contiguous(t, c->data);
  return c;
}

ad_tensor *ad_retain(ad_tensor *t) {
#ifdef AD_DEBUG_POOL
  if (t && ad__tensor_released(t)) {
    ad__error(AD_EINVAL,
              "ad_retain: t was released (its last reference went)");
    return NULL;
  }
#endif
  if (t) atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
  return t;
}

void ad_release(ad_tensor *t) {
  if (!t) return;
#ifdef AD_DEBUG_POOL
  if (ad__tensor_released(t)) {
    ad__error(AD_EINVAL, "ad_release: t was released already (a double "
                         "release)");
    return;
  }
#endif
  if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
    return;
#ifdef AD_DEBUG_POOL
  /* Poison: no live tensor has id 0 (the header itself may outlive the
   * tensor while views use its embedded storage). */
  t->id = 0;
#endif
  ad__storage *s = t->storage;
  bool own_embedded = s == &t->embedded;
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
    if (s->size_class == AD__EMBEDDED_CLASS)
      /* The last reference to embedded storage frees the header that
       * holds it: this tensor's, or a dead base's a view kept alive. */
      ad__pool_free_header(
          (ad_tensor *)(void *)((char *)s - offsetof(ad_tensor, embedded)));
    else
      ad__pool_free_storage(s);
  }
  /* A header holding storage that views still use stays until they go. */
  if (!own_embedded) ad__pool_free_header(t);
}

/* ------------------------------------------------------------------------
 * Scopes: a per-thread stack of owned tensors, split into frames.
 * ---------------------------------------------------------------------- */

/* One open frame.  `merged` counts the scopes begun inside it that found
 * no memory for a frame of their own: they share this one, and their
 * ad_scope_end only gives that share back (their tensors live until this
 * frame ends, which wastes memory but frees nothing early). */
typedef struct scope_frame {
  int64_t start; /* owned_len when the frame began */
  int merged;
} scope_frame;

/* The first frames live in the thread's own state, so that a scope begun
 * from depth 0 (where no frame could absorb a failure) never allocates. */
#define INLINE_FRAMES 16

typedef struct scope_stack {
  ad_tensor **owned;     /* tensors owned by all open frames, in order */
  int64_t owned_len, owned_cap;
  scope_frame *frames;   /* first_frames or a heap array */
  scope_frame first_frames[INLINE_FRAMES];
  ad_tensor **kept;      /* tensors handed outward by ad_keep */
  int *kept_depth;       /* frame depth each kept tensor leaves */
  int64_t kept_len, kept_cap;
  int depth, depth_cap;  /* frames in use and their room */
  int merged;            /* sum of the frames' `merged` */
} scope_stack;

static _Thread_local scope_stack scopes;

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem) {
  if (need <= *cap) return true;
  int64_t n = *cap ? *cap * 2 : 256;
  while (n < need) n *= 2;
  void *q = realloc(*p, (size_t)n * elem);
  if (!q) return false;
  *p = q;
  *cap = n;
  return true;
}

/* Free the scope stack's arrays once no scope is open, so that a thread
 * that stops using libad holds no memory. */
void ad__scope_cleanup(void) {
  if (scopes.depth != 0) return;
  free(scopes.owned);
  if (scopes.frames != scopes.first_frames) free(scopes.frames);
  free(scopes.kept);
  free(scopes.kept_depth);
  scopes = (scope_stack){0};
}

ad_tensor *ad__own(ad_tensor *t) {
  if (!t || scopes.depth == 0) return t;
  if (!grow((void **)&scopes.owned, &scopes.owned_cap, scopes.owned_len + 1,
            sizeof(ad_tensor *))) {
    ad_release(t);
    ad__error(AD_ENOMEM, "out of memory registering a tensor with a scope");
    return NULL;
  }
  scopes.owned[scopes.owned_len++] = t;
  return t;
}

/* Room for one more frame, moving the inline frames to the heap when they
 * run out; false without memory. */
static bool frame_room(void) {
  if (!scopes.frames) {
    scopes.frames = scopes.first_frames;
    scopes.depth_cap = INLINE_FRAMES;
  }
  if (scopes.depth < scopes.depth_cap) return true;
  int n = scopes.depth_cap * 2;
  scope_frame *q;
  if (scopes.frames == scopes.first_frames) {
    q = malloc((size_t)n * sizeof *q);
    if (q) memcpy(q, scopes.first_frames, sizeof scopes.first_frames);
  } else {
    q = realloc(scopes.frames, (size_t)n * sizeof *q);
  }
  if (!q) return false;
  scopes.frames = q;
  scopes.depth_cap = n;
  return true;
}

void ad_scope_begin(void) {
  if (!frame_room()) {
    /* Only possible above INLINE_FRAMES, so a frame is open to share. */
    ad__error(AD_ENOMEM, "ad_scope_begin: out of memory for scope %d",
              scopes.depth + scopes.merged + 1);
    scopes.frames[scopes.depth - 1].merged++;
    scopes.merged++;
    return;
  }
  scopes.frames[scopes.depth++] = (scope_frame){scopes.owned_len, 0};
}

ad_status ad_scope_end(void) {
  if (scopes.depth == 0)
    return ad__error(AD_ESTATE, "ad_scope_end: no scope is open");
  scope_frame *top = &scopes.frames[scopes.depth - 1];
  if (top->merged > 0) {
    top->merged--;
    scopes.merged--;
    return AD_OK;
  }
  int64_t start = top->start;
  scopes.depth--;
  /* Release newest first: later tensors may be views of earlier ones,
   * though reference counts make either order safe. */
  for (int64_t i = scopes.owned_len - 1; i >= start; i--)
    ad_release(scopes.owned[i]);
  scopes.owned_len = start;
  /* Tensors kept from the closed frame now belong to the enclosing one
   * (already retained by ad_keep, whose reserve left room), or to the
   * caller at depth 0. */
  while (scopes.kept_len > 0 &&
         scopes.kept_depth[scopes.kept_len - 1] == scopes.depth + 1) {
    ad_tensor *t = scopes.kept[--scopes.kept_len];
    if (scopes.depth > 0) scopes.owned[scopes.owned_len++] = t;
  }
  if (scopes.depth == 0) ad__scope_cleanup();
  return AD_OK;
}

/* Room for `extra` more ad_keep calls in this frame.  ad_scope_end moves
 * kept tensors into the enclosing frame's owned list, and must not fail
 * there (it would drop the reference it hands out), so the owned list
 * grows here too: it never shrinks while a scope is open, and the frame
 * being closed gives back at least its own start, so owned_len + kept_len
 * entries always suffice. */
bool ad__keep_reserve(int64_t extra) {
  if (scopes.depth == 0) return true;
  int64_t need = scopes.kept_len + extra, cap = scopes.kept_cap;
  if (grow((void **)&scopes.kept, &cap, need, sizeof(ad_tensor *)) &&
      grow((void **)&scopes.kept_depth, &scopes.kept_cap, need, sizeof(int)) &&
      grow((void **)&scopes.owned, &scopes.owned_cap, scopes.owned_len + need,
           sizeof(ad_tensor *)))
    return true;
  ad__error(AD_ENOMEM, "ad_keep: out of memory");
  return false;
}

ad_tensor *ad_keep(ad_tensor *t) {
  if (!t || scopes.depth == 0) return t;
  if (!ad__keep_reserve(1)) return NULL;
  scopes.kept[scopes.kept_len] = ad_retain(t);
  scopes.kept_depth[scopes.kept_len++] = scopes.depth;
  return t;
}

void ad__scope_end_all(void) {
  while (scopes.depth > 0) {
    scopes.frames[scopes.depth - 1].merged = 0;
    ad_scope_end();
  }
  scopes.merged = 0;
}

/* Scopes begun and not yet ended, merged ones included. */
int ad__scope_depth(void) { return scopes.depth + scopes.merged; }

/* ------------------------------------------------------------------------
 * Constructors
 * ---------------------------------------------------------------------- */

ad_tensor *ad_tensor_new(int ndim, const int64_t *shape, const double *data) {
  ad_tensor *t = ad__alloc("ad_tensor_new", ndim, shape);
  if (!t) return NULL;
  if (data && t->numel > 0)
    memcpy(t->data, data, (size_t)t->numel * sizeof(double));
  else
    memset(t->data, 0, (size_t)t->numel * sizeof(double));
  return ad__own(t);
}

static ad_tensor *filled(const char *op, int ndim, const int64_t *shape,
                         double v) {
  ad_tensor *t = ad__alloc(op, ndim, shape);
  if (!t) return NULL;
  for (int64_t i = 0; i < t->numel; i++) t->data[i] = v;
  return ad__own(t);
}

ad_tensor *ad_scalar(double v) { return filled("ad_scalar", 0, NULL, v); }
ad_tensor *ad_zeros(int ndim, const int64_t *shape) {
  return filled("ad_zeros", ndim, shape, 0.0);
}
ad_tensor *ad_ones(int ndim, const int64_t *shape) {
  return filled("ad_ones", ndim, shape, 1.0);
}
ad_tensor *ad_full(int ndim, const int64_t *shape, double value) {
  return filled("ad_full", ndim, shape, value);
}

ad_tensor *ad_arange(double start, double stop, double step) {
  if (!isfinite(start) || !isfinite(stop) || !isfinite(step) || step == 0) {
    ad__error(AD_EINVAL,
              "ad_arange: need finite bounds and a non-zero step, got "
              "start=%g stop=%g step=%g",
              start, stop, step);
    return NULL;
  }
  double count = ceil((stop - start) / step);
  if (count < 0) count = 0;
  if (count > 1e15) {
    ad__error(AD_EINVAL, "ad_arange: %g elements is too many", count);
    return NULL;
  }
  int64_t n = (int64_t)count;
  ad_tensor *t = ad__alloc("ad_arange", 1, &n);
  if (!t) return NULL;
  for (int64_t i = 0; i < n; i++) t->data[i] = start + (double)i * step;
  return ad__own(t);
}

ad_tensor *ad_linspace(double a, double b, int64_t n) {
  if (n < 0 || !isfinite(a) || !isfinite(b)) {
    ad__error(AD_EINVAL,
              "ad_linspace: need finite bounds and n >= 0, got a=%g b=%g "
              "n=%lld",
              a, b, (long long)n);
    return NULL;
  }
  ad_tensor *t = ad__alloc("ad_linspace", 1, &n);
  if (!t) return NULL;
  for (int64_t i = 0; i < n; i++)
    t->data[i] = n == 1 ? a : a + (b - a) * (double)i / (double)(n - 1);
  if (n > 1) t->data[n - 1] = b;
  return ad__own(t);
}

ad_tensor *ad_eye(int64_t n) {
  if (n < 0) {
    ad__error(AD_EINVAL, "ad_eye: size %lld is negative", (long long)n);
    return NULL;
  }
  int64_t shape[2] = {n, n};
  ad_tensor *t = ad__alloc("ad_eye", 2, shape);
  if (!t) return NULL;
  memset(t->data, 0, (size_t)t->numel * sizeof(double));
  for (int64_t i = 0; i < n; i++) t->data[i * n + i] = 1.0;
  return ad__own(t);
}

/* ------------------------------------------------------------------------
 * Accessors
 * ---------------------------------------------------------------------- */

int ad_ndim(const ad_tensor *t) {
  if (!t) {
    ad__error_null_arg("ad_ndim", "t");
    return -1;
  }
  return t->ndim;
}

const int64_t *ad_shape(const ad_tensor *t) {
  if (!t) {
    ad__error_null_arg("ad_shape", "t");
    return NULL;
  }
  return t->shape;
}

int64_t ad_numel(const ad_tensor *t) {
  if (!t) {
    ad__error_null_arg("ad_numel", "t");
    return -1;
  }
  return t->numel;
}

_Thread_local void (*ad__read_hook)(const ad_tensor *t);

double ad_item(const ad_tensor *t) {
  if (!t) {
    ad__error_null_arg("ad_item", "t");
    return NAN;
  }
  if (t->numel != 1) {
    char buf[AD__SHAPE_STR];
    ad__error(AD_ESHAPE, "ad_item: tensor of shape %s has %lld elements, not 1",
              ad__shape_str(buf, t->ndim, t->shape), (long long)t->numel);
    return NAN;
  }
  if (__builtin_expect(ad__read_hook != NULL, 0)) ad__read_hook(t);
  return t->data[0];
}

ad_status ad_read(const ad_tensor *t, double *out, int64_t n) {
  if (!t) {
    ad__error_null_arg("ad_read", "t");
    return ad_error() ? ad_error() : AD_EINVAL;
  }
  if (!out && n > 0)
    return ad__error(AD_EINVAL, "ad_read: output buffer is NULL");
  if (n != t->numel) {
    char buf[AD__SHAPE_STR];
    return ad__error(AD_ESHAPE,
                     "ad_read: buffer holds %lld values but the tensor of "
                     "shape %s has %lld",
                     (long long)n, ad__shape_str(buf, t->ndim, t->shape),
                     (long long)t->numel);
  }
  ad__gather_contiguous(t, out);
  if (__builtin_expect(ad__read_hook != NULL, 0)) ad__read_hook(t);
  return AD_OK;
}
