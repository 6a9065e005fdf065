/* Checkpoints: named variables and optimizer state in a checksummed binary
 * file, written atomically and restored all or nothing. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ad/nn.h"
#include "internal.h"

/* The format is described in include/ad/nn.h. */
static const uint8_t MAGIC[8] = {0x89, 'A', 'D', 'C', 'K', 'P', 'T', '\n'};
enum { VERSION = 1, HEADER = 24, TRAILER = 4, NAME_MAX_BYTES = 4096 };
enum { KIND_VAR = 0, KIND_OPT = 1 };

/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zlib's. */
static uint32_t crc32_of(const uint8_t *p, size_t n) {
  uint32_t table[256];
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

/* ------------------------------------------------------------------------
 * Little-endian encoding
 * ---------------------------------------------------------------------- */

static uint8_t *put_le(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
  return p + bytes;
}

static uint64_t get_le(const uint8_t *p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static uint8_t *put_f64(uint8_t *p, double d) {
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  return put_le(p, bits, 8);
}

static double get_f64(const uint8_t *p) {
  uint64_t bits = get_le(p, 8);
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

/* ------------------------------------------------------------------------
 * Entries
 * ---------------------------------------------------------------------- */

typedef struct entry {
  int kind;
  const char *name; /* save: borrowed C string; restore: into the file */
  size_t name_len;
  int ndim;
  int64_t shape[AD_MAX_DIMS];
  int64_t numel;
  ad_tensor *t;          /* save: the value */
  const uint8_t *values; /* restore: numel little-endian doubles */
} entry;

static size_t entry_bytes(const entry *e) {
  return 4 + e->name_len + 8 * (size_t)e->ndim + 8 * (size_t)e->numel;
}

static ad_status check_name(const char *op, const char *path, int kind,
                            const char *name, int64_t i) {
  size_t len = strlen(name);
  if (len >= 1 && len <= NAME_MAX_BYTES) return AD_OK;
  return ad__error(AD_EINVAL,
                   "%s: '%s': %s %lld has %s name (names must be 1..%d "
                   "bytes)",
                   op, path, kind == KIND_VAR ? "variable" : "optimizer entry",
                   (long long)i, len ? "a too long" : "an empty",
                   NAME_MAX_BYTES);
}

/* ------------------------------------------------------------------------
 * Atomic write
 * ---------------------------------------------------------------------- */

static ad_status io_error(const char *op, const char *what, const char *path) {
  return ad__error(AD_EIO, "%s: %s '%s': %s", op, what, path,
                   strerror(errno));
}

static bool write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= (size_t)w;
  }
  return true;
}

/* Write data to path through a temporary file in the same directory:
 * write, fsync, rename, then fsync the directory so the rename lasts. */
static ad_status write_atomic(const char *op, const char *path,
                              const uint8_t *data, size_t n) {
  static atomic_uint counter;
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 64);
  char *dir = malloc(plen + 2);
  if (!tmp || !dir) {
    free(tmp);
    free(dir);
    return ad__error(AD_ENOMEM, "%s: out of memory", op);
  }
  const char *slash = strrchr(path, '/');
  if (!slash) {
    strcpy(dir, ".");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
  }
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    snprintf(tmp, plen + 64, "%s.tmp-%ld-%u", path, (long)getpid(),
             atomic_fetch_add(&counter, 1u));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  ad_status st = AD_OK;
  if (fd < 0) {
    st = io_error(op, "cannot create a temporary file for", path);
    goto out;
  }
  if (!write_all(fd, data, n)) {
    st = io_error(op, "cannot write", tmp);
  } else if (fsync(fd) != 0) {
    st = io_error(op, "cannot flush", tmp);
  }
  if (close(fd) != 0 && st == AD_OK) st = io_error(op, "cannot close", tmp);
  if (st == AD_OK && rename(tmp, path) != 0)
    st = io_error(op, "cannot rename the temporary file to", path);
  if (st != AD_OK) {
    unlink(tmp);
    goto out;
  }
  /* Persist the directory entry.  Some file systems refuse fsync on a
   * directory (EINVAL); the data itself is already on disk then. */
  int dfd = open(dir, O_RDONLY);
  if (dfd >= 0) {
    if (fsync(dfd) != 0 && errno != EINVAL && errno != EBADF)
      st = io_error(op, "cannot flush the directory of", path);
    close(dfd);
  }
out:
  free(tmp);
  free(dir);
  return st;
}

/* ------------------------------------------------------------------------
 * Save
 * ---------------------------------------------------------------------- */

static ad_status gather_entries(const char *op, const char *path, int64_t n,
                                ad_var *const *vars, ad_optimizer *opt,
                                entry **out, int64_t *count) {
  int64_t nopt = 0;
  if (opt) {
    nopt = ad_optimizer_state_count(opt);
    if (nopt < 0) return ad_error();
  }
  entry *es = calloc((size_t)(n + nopt + 1), sizeof *es);
  if (!es) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  for (int64_t i = 0; i < n + nopt; i++) {
    entry *e = &es[i];
    if (i < n) {
      e->kind = KIND_VAR;
      e->name = ad_var_name(vars[i]);
      e->t = ad_var_value(vars[i]);
    } else {
      e->kind = KIND_OPT;
      e->name = ad_optimizer_state_name(opt, i - n);
      e->t = e->name ? ad_optimizer_state_tensor(opt, i - n) : NULL;
    }
    if (!e->name || !e->t) {
      free(es);
      return ad_error() ? ad_error() : AD_EINTERNAL;
    }
    if (check_name(op, path, e->kind, e->name, e->kind ? i - n : i) != AD_OK) {
      free(es);
      return AD_EINVAL;
    }
    e->name_len = strlen(e->name);
    e->ndim = ad_ndim(e->t);
    memcpy(e->shape, ad_shape(e->t), sizeof(int64_t) * (size_t)e->ndim);
    e->numel = ad_numel(e->t);
  }
  /* Names are the keys of a restore: they must be unique per kind. */
  for (int64_t i = 0; i < n + nopt; i++)
    for (int64_t j = 0; j < i; j++)
      if (es[i].kind == es[j].kind && strcmp(es[i].name, es[j].name) == 0) {
        ad__error(AD_EINVAL,
                  "%s: '%s': %s %lld and %lld are both named '%s'", op, path,
                  es[i].kind == KIND_VAR ? "variables" : "optimizer entries",
                  (long long)(es[j].kind ? j - n : j),
                  (long long)(es[i].kind ? i - n : i), es[i].name);
        free(es);
        return AD_EINVAL;
      }
  *out = es;
  *count = n + nopt;
  return AD_OK;
}

ad_status ad_checkpoint_save(const char *path, int64_t n,
                             ad_var *const *vars, ad_optimizer *opt) {
  static const char op[] = "ad_checkpoint_save";
  if (!path || n < 0 || (n > 0 && !vars))
    return ad__error(AD_EINVAL, "%s: need a path and n >= 0 variables, got "
                     "%s path, n = %lld, %s vars", op, path ? "a" : "a NULL",
                     (long long)n, vars ? "non-NULL" : "NULL");
  for (int64_t i = 0; i < n; i++)
    if (!vars[i])
      return ad__error(AD_EINVAL, "%s: vars[%lld] is NULL", op, (long long)i);
  if (n > UINT32_MAX / 2)
    return ad__error(AD_EINVAL, "%s: too many variables (%lld)", op,
                     (long long)n);
  bool was = ad_pause_recording(true);
  ad_scope_begin();
  entry *es = NULL;
  int64_t count = 0;
  uint8_t *data = NULL;
  ad_status st = gather_entries(op, path, n, vars, opt, &es, &count);
  if (st != AD_OK) goto out;
  size_t payload = 0;
  for (int64_t i = 0; i < count; i++) payload += entry_bytes(&es[i]);
  size_t total = HEADER + payload + TRAILER;
  data = malloc(total);
  if (!data) {
    st = ad__error(AD_ENOMEM, "%s: out of memory for %zu bytes", op, total);
    goto out;
  }
  uint8_t *p = data;
  memcpy(p, MAGIC, 8);
  p = put_le(p + 8, VERSION, 4);
  p = put_le(p, (uint64_t)count, 4);
  p = put_le(p, payload, 8);
  for (int64_t i = 0; i < count; i++) {
    const entry *e = &es[i];
    p = put_le(p, (uint64_t)e->kind, 1);
    p = put_le(p, (uint64_t)e->ndim, 1);
    p = put_le(p, e->name_len, 2);
    memcpy(p, e->name, e->name_len);
    p += e->name_len;
    for (int d = 0; d < e->ndim; d++) p = put_le(p, (uint64_t)e->shape[d], 8);
    /* The values go straight into the buffer, then are encoded in place
     * (a no-op on little-endian machines apart from the copy). */
    double *vals = malloc((size_t)(e->numel > 0 ? e->numel : 1) *
                          sizeof *vals);
    if (!vals) {
      st = ad__error(AD_ENOMEM, "%s: out of memory", op);
      goto out;
    }
    st = ad_read(e->t, vals, e->numel);
    for (int64_t k = 0; st == AD_OK && k < e->numel; k++)
      p = put_f64(p, vals[k]);
    free(vals);
    if (st != AD_OK) goto out;
  }
  put_le(p, crc32_of(data, total - TRAILER), 4);
  st = write_atomic(op, path, data, total);
out:
  free(data);
  free(es);
  ad_scope_end();
  ad_pause_recording(was);
  return st;
}

/* ------------------------------------------------------------------------
 * Restore
 * ---------------------------------------------------------------------- */

static ad_status read_file(const char *op, const char *path, uint8_t **data,
                           size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return io_error(op, "cannot open", path);
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0) {
    fclose(f);
    return io_error(op, "cannot read", path);
  }
  if (!S_ISREG(sb.st_mode)) {
    fclose(f);
    return ad__error(AD_EIO, "%s: '%s' is not a regular file", op, path);
  }
  size_t n = (size_t)sb.st_size;
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) {
    fclose(f);
    return ad__error(AD_ENOMEM, "%s: out of memory reading '%s' (%zu bytes)",
                     op, path, n);
  }
  size_t got = fread(buf, 1, n, f);
  bool err = ferror(f) != 0;
  fclose(f);
  if (err || got != n) {
    free(buf);
    return ad__error(AD_EIO, "%s: reading '%s' failed after %zu of %zu bytes",
                     op, path, got, n);
  }
  *data = buf;
  *size = n;
  return AD_OK;
}

/* Check the header, the length and the checksum, then decode every entry
 * with bounds checks (a file with a valid checksum may still be hostile). */
static ad_status parse(const char *op, const char *path, const uint8_t *d,
                       size_t size, entry **out, int64_t *count) {
  if (size < HEADER + TRAILER)
    return ad__error(AD_EIO,
                     "%s: '%s' is truncated: %zu bytes, a checkpoint has at "
                     "least %d",
                     op, path, size, HEADER + TRAILER);
  if (memcmp(d, MAGIC, 8) != 0)
    return ad__error(AD_EIO, "%s: '%s' is not a libad checkpoint (bad magic "
                     "bytes)", op, path);
  uint32_t version = (uint32_t)get_le(d + 8, 4);
  if (version != VERSION)
    return ad__error(AD_EIO, "%s: '%s' has format version %u; this libad "
                     "reads version %d", op, path, version, VERSION);
  uint64_t n = get_le(d + 12, 4), payload = get_le(d + 16, 8);
  if (payload > size || HEADER + payload + TRAILER != size) {
    if (payload <= SIZE_MAX - HEADER - TRAILER &&
        HEADER + payload + TRAILER > size)
      return ad__error(AD_EIO, "%s: '%s' is truncated: the header announces "
                       "%llu bytes, the file has %zu", op, path,
                       (unsigned long long)(HEADER + payload + TRAILER), size);
    return ad__error(AD_EIO, "%s: '%s' is corrupted: its length %zu does not "
                     "match the header's %llu", op, path, size,
                     (unsigned long long)(HEADER + payload + TRAILER));
  }
  uint32_t want = (uint32_t)get_le(d + size - TRAILER, 4);
  uint32_t got = crc32_of(d, size - TRAILER);
  if (want != got)
    return ad__error(AD_EIO, "%s: '%s' is corrupted: checksum 0x%08x, the "
                     "file records 0x%08x", op, path, got, want);
  entry *es = calloc((size_t)n + 1, sizeof *es);
  if (!es) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  size_t pos = HEADER, end = size - TRAILER;
  for (uint64_t i = 0; i < n; i++) {
    entry *e = &es[i];
    if (end - pos < 4) goto bad;
    e->kind = d[pos];
    e->ndim = d[pos + 1];
    e->name_len = (size_t)get_le(d + pos + 2, 2);
    pos += 4;
    if ((e->kind != KIND_VAR && e->kind != KIND_OPT) ||
        e->ndim > AD_MAX_DIMS || e->name_len == 0 ||
        e->name_len > NAME_MAX_BYTES || end - pos < e->name_len)
      goto bad;
    e->name = (const char *)(d + pos);
    pos += e->name_len;
    if (end - pos < 8 * (size_t)e->ndim) goto bad;
    e->numel = 1;
    for (int k = 0; k < e->ndim; k++) {
      uint64_t s = get_le(d + pos, 8);
      pos += 8;
      if (s > (uint64_t)INT64_MAX / 8) goto bad;
      e->shape[k] = (int64_t)s;
      if (s != 0 && (uint64_t)e->numel > (end - pos) / 8 / s) {
        e->numel = -1; /* more values than the file holds */
        for (k++; k < e->ndim; k++) pos += 8;
        break;
      }
      e->numel *= (int64_t)s;
    }
    if (e->numel < 0 || (size_t)e->numel > (end - pos) / 8) goto bad;
    e->values = d + pos;
    pos += 8 * (size_t)e->numel;
    continue;
  bad:
    free(es);
    return ad__error(AD_EIO, "%s: '%s' is corrupted: entry %llu is malformed",
                     op, path, (unsigned long long)i);
  }
  if (pos != end) {
    free(es);
    return ad__error(AD_EIO, "%s: '%s' is corrupted: %zu bytes follow the "
                     "last entry", op, path, end - pos);
  }
  *out = es;
  *count = (int64_t)n;
  return AD_OK;
}

static bool name_is(const entry *e, const char *name) {
  return strlen(name) == e->name_len && memcmp(e->name, name, e->name_len) == 0;
}

static ad_tensor *entry_tensor(const entry *e) {
  ad_tensor *t = ad__alloc("ad_checkpoint_restore", e->ndim, e->shape);
  if (!t) return NULL;
  for (int64_t k = 0; k < e->numel; k++)
    t->data[k] = get_f64(e->values + 8 * k);
  return ad__own(t);
}

/* Match the file's entries to the variables and build their new values
 * (vals[i] for vars[i]); nothing is assigned here. */
static ad_status match_vars(const char *op, const char *path, int64_t n,
                            ad_var *const *vars, const entry *es,
                            int64_t count, ad_tensor **vals) {
  bool *used = calloc((size_t)count + 1, sizeof *used);
  if (!used) return ad__error(AD_ENOMEM, "%s: out of memory", op);
  ad_status st = AD_OK;
  for (int64_t i = 0; i < n && st == AD_OK; i++) {
    const char *name = ad_var_name(vars[i]);
    const entry *e = NULL;
    for (int64_t j = 0; j < count && !e; j++)
      if (es[j].kind == KIND_VAR && name_is(&es[j], name)) {
        e = &es[j];
        used[j] = true;
      }
    if (!e) {
      st = ad__error(AD_EINVAL, "%s: '%s' has no variable named '%s' "
                     "(vars[%lld])", op, path, name, (long long)i);
      break;
    }
    ad_tensor *cur = ad_var_value(vars[i]);
    if (!cur) {
      st = ad_error();
      break;
    }
    bool same = ad_ndim(cur) == e->ndim;
    for (int k = 0; same && k < e->ndim; k++)
      same = ad_shape(cur)[k] == e->shape[k];
    if (!same) {
      char a[AD__SHAPE_STR], b[AD__SHAPE_STR];
      st = ad__error(AD_ESHAPE, "%s: '%s' holds variable '%s' with shape "
                     "%s, the variable has shape %s", op, path, name,
                     ad__shape_str(a, e->ndim, e->shape),
                     ad__shape_str(b, ad_ndim(cur), ad_shape(cur)));
      break;
    }
    vals[i] = entry_tensor(e);
    if (!vals[i]) st = ad_error();
  }
  for (int64_t j = 0; j < count && st == AD_OK; j++)
    if (es[j].kind == KIND_VAR && !used[j])
      st = ad__error(AD_EINVAL, "%s: '%s' holds variable '%.*s', which is "
                     "not among the %lld variables given", op, path,
                     (int)es[j].name_len, es[j].name, (long long)n);
  free(used);
  return st;
}

/* Hand the file's optimizer entries to the optimizer, which checks them
 * all before it changes anything. */
static ad_status load_optimizer(const char *op, const char *path,
                                ad_optimizer *opt, const entry *es,
                                int64_t count) {
  int64_t k = 0;
  for (int64_t j = 0; j < count; j++) k += es[j].kind == KIND_OPT;
  if (k == 0)
    return ad__error(AD_EINVAL, "%s: '%s' holds no optimizer state, but an "
                     "optimizer was given", op, path);
  char **names = calloc((size_t)k, sizeof *names);
  ad_tensor **ts = calloc((size_t)k, sizeof *ts);
  ad_status st = AD_OK;
  if (!names || !ts) st = ad__error(AD_ENOMEM, "%s: out of memory", op);
  for (int64_t j = 0, i = 0; j < count && st == AD_OK; j++) {
    if (es[j].kind != KIND_OPT) continue;
    names[i] = malloc(es[j].name_len + 1);
    ts[i] = entry_tensor(&es[j]);
    if (!names[i] || !ts[i]) {
      st = ad_error() ? ad_error() : ad__error(AD_ENOMEM, "%s: out of memory",
                                               op);
      break;
    }
    memcpy(names[i], es[j].name, es[j].name_len);
    names[i][es[j].name_len] = '\0';
    i++;
  }
  if (st == AD_OK) {
    st = ad_optimizer_load_state(opt, k, (const char *const *)names, ts);
    if (st != AD_OK) {
      char why[512];
      snprintf(why, sizeof why, "%s", ad_error_message());
      st = ad__error(st, "%s: '%s': the optimizer refused the saved state: %s",
                     op, path, why);
    }
  }
  for (int64_t i = 0; names && i < k; i++) free(names[i]);
  free(names);
  free(ts);
  return st;
}

ad_status ad_checkpoint_restore(const char *path, int64_t n,
                                ad_var *const *vars, ad_optimizer *opt) {
  static const char op[] = "ad_checkpoint_restore";
  if (!path || n < 0 || (n > 0 && !vars))
    return ad__error(AD_EINVAL, "%s: need a path and n >= 0 variables, got "
                     "%s path, n = %lld, %s vars", op, path ? "a" : "a NULL",
                     (long long)n, vars ? "non-NULL" : "NULL");
  for (int64_t i = 0; i < n; i++)
    if (!vars[i])
      return ad__error(AD_EINVAL, "%s: vars[%lld] is NULL", op, (long long)i);
  uint8_t *data = NULL;
  size_t size = 0;
  ad_status st = read_file(op, path, &data, &size);
  if (st != AD_OK) return st;
  entry *es = NULL;
  int64_t count = 0;
  ad_tensor **vals = NULL;
  bool was = ad_pause_recording(true);
  ad_scope_begin();
  st = parse(op, path, data, size, &es, &count);
  if (st != AD_OK) goto out;
  vals = calloc((size_t)n + 1, sizeof *vals);
  if (!vals) {
    st = ad__error(AD_ENOMEM, "%s: out of memory", op);
    goto out;
  }
  st = match_vars(op, path, n, vars, es, count, vals);
  /* The optimizer is all or nothing by itself; the variables change only
   * after it accepted its state, and their assignments cannot fail: the
   * shapes were checked. */
  if (st == AD_OK && opt) st = load_optimizer(op, path, opt, es, count);
  for (int64_t i = 0; st == AD_OK && i < n; i++)
    st = ad_var_assign(vars[i], vals[i]);
out:
  ad_scope_end();
  ad_pause_recording(was);
  free(vals);
  free(es);
  free(data);
  return st;
}
