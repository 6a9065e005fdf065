/* Tests of checkpoints: the file format, atomic writes, every corruption
 * and mismatch leaving variables unchanged, optimizer state, and training
 * that resumes exactly where it stopped. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "ad/nn.h"
#include "testutil.h"

/* A fresh temporary directory per test, and paths inside it. */
static char dir[64];

static int make_dir(void **state) {
  snprintf(dir, sizeof dir, "/tmp/libad-ckpt-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  return test_scope_setup(state);
}

static int remove_dir(void **state) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char path[400];
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
      }
    closedir(d);
  }
  rmdir(dir);
  return test_scope_teardown(state);
}

#define dir_test(f) cmocka_unit_test_setup_teardown(f, make_dir, remove_dir)

static const char *in_dir(const char *name) {
  static char path[2][128];
  static int k;
  k ^= 1;
  snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
  return path[k];
}

static int files_in_dir(void) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  rewind(f);
  unsigned char *buf = malloc(*n + 1);
  assert_int_equal(fread(buf, 1, *n, f), *n);
  fclose(f);
  return buf;
}

static void write_all(const char *path, const unsigned char *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(buf, 1, n, f), n);
  fclose(f);
}

/* Three variables "a" (2, 3), "b" () and "c" (4,) with distinct values,
 * and the values to check them against. */
typedef struct fixture {
  ad_var *v[3];
  ad_tensor *orig[3];
} fixture;

static void fixture_new(fixture *fx, double base) {
  const char *names[3] = {"a", "b", "c"};
  ad_tensor *init[3] = {
      ad_add_scalar(ad_reshape(ad_arange(0, 6, 1), 2, SHAPE(2, 3)), base),
      ad_scalar(base - 0.5),
      ad_tensor_new(1, SHAPE(4), VALUES(NAN, -0.0, INFINITY, 4.9e-324))};
  for (int i = 0; i < 3; i++) {
    fx->v[i] = ad_var_new(names[i], init[i]);
    fx->orig[i] = init[i];
  }
}

static void fixture_free(fixture *fx) {
  for (int i = 0; i < 3; i++) ad_var_free(fx->v[i]);
}

/* Bitwise equality, so NaN and -0 count. */
static void assert_same_bits(ad_tensor *a, ad_tensor *b) {
  assert_int_equal(ad_numel(a), ad_numel(b));
  int64_t n = ad_numel(a);
  double *x = malloc((size_t)(n + 1) * sizeof *x);
  double *y = malloc((size_t)(n + 1) * sizeof *y);
  ad_read(a, x, n);
  ad_read(b, y, n);
  assert_memory_equal(x, y, (size_t)n * sizeof *x);
  free(x);
  free(y);
}

static void assert_unchanged(fixture *fx) {
  for (int i = 0; i < 3; i++)
    assert_same_bits(ad_var_value(fx->v[i]), fx->orig[i]);
}

/* CRC-32 as zlib computes it, written independently of the library. */
static uint32_t crc32_ref(const unsigned char *p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static uint64_t le(const unsigned char *p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* ---- round trip and format -------------------------------------------- */

static void save_and_restore_round_trip(void **state) {
  (void)state;
  fixture fx, other;
  fixture_new(&fx, 1.0);
  fixture_new(&other, 100.0);
  const char *path = in_dir("ck.bin");
  assert_int_equal(ad_checkpoint_save(path, 3, fx.v, NULL), AD_OK);
  assert_int_equal(ad_checkpoint_restore(path, 3, other.v, NULL), AD_OK);
  for (int i = 0; i < 3; i++)
    assert_same_bits(ad_var_value(other.v[i]), fx.orig[i]);
  /* Only the checkpoint is left: the temporary file was renamed. */
  assert_int_equal(files_in_dir(), 1);
  /* Saving again replaces the file. */
  ad_var_assign(fx.v[1], ad_scalar(42));
  assert_int_equal(ad_checkpoint_save(path, 3, fx.v, NULL), AD_OK);
  assert_int_equal(ad_checkpoint_restore(path, 3, other.v, NULL), AD_OK);
  assert_tensor_near(ad_var_value(other.v[1]), VALUES(42), 1, 0);
  assert_int_equal(files_in_dir(), 1);
  fixture_free(&fx);
  fixture_free(&other);
}

static void file_layout_matches_the_documentation(void **state) {
  (void)state;
  ad_var *v = ad_var_new("w", ad_tensor_new(2, SHAPE(1, 2), VALUES(1.5, -2)));
  const char *path = in_dir("ck.bin");
  assert_int_equal(ad_checkpoint_save(path, 1, &v, NULL), AD_OK);
  size_t n;
  unsigned char *b = read_all(path, &n);
  /* 24 header + (4 + 1 name + 2 * 8 shape + 2 * 8 values) + 4 CRC. */
  assert_int_equal(n, 24 + 37 + 4);
  assert_memory_equal(b, "\x89" "ADCKPT\n", 8);
  assert_int_equal(le(b + 8, 4), 1);
  assert_int_equal(le(b + 12, 4), 1);
  assert_int_equal(le(b + 16, 8), 37);
  assert_int_equal(b[24], 0);
  assert_int_equal(b[25], 2);
  assert_int_equal(le(b + 26, 2), 1);
  assert_int_equal(b[28], 'w');
  assert_int_equal(le(b + 29, 8), 1);
  assert_int_equal(le(b + 37, 8), 2);
  double x;
  uint64_t bits = le(b + 45, 8);
  memcpy(&x, &bits, 8);
  assert_true(x == 1.5);
  assert_int_equal(le(b + n - 4, 4), crc32_ref(b, n - 4));
  free(b);
  ad_var_free(v);
}

/* ---- corruption and mismatches ----------------------------------------- */

static void missing_file_changes_nothing(void **state) {
  (void)state;
  fixture fx;
  fixture_new(&fx, 1.0);
  assert_int_equal(ad_checkpoint_restore(in_dir("none.bin"), 3, fx.v, NULL),
                   AD_EIO);
  assert_error(AD_EIO, "cannot open");
  assert_unchanged(&fx);
  assert_int_equal(ad_checkpoint_restore(dir, 3, fx.v, NULL), AD_EIO);
  assert_error(AD_EIO, "not a regular file");
  fixture_free(&fx);
}

static void every_truncation_is_detected(void **state) {
  (void)state;
  fixture fx, target;
  fixture_new(&fx, 1.0);
  fixture_new(&target, 7.0);
  const char *path = in_dir("ck.bin"), *cut = in_dir("cut.bin");
  assert_int_equal(ad_checkpoint_save(path, 3, fx.v, NULL), AD_OK);
  size_t n;
  unsigned char *b = read_all(path, &n);
  for (size_t len = 0; len < n; len++) {
    write_all(cut, b, len);
    assert_int_equal(ad_checkpoint_restore(cut, 3, target.v, NULL), AD_EIO);
    assert_error(AD_EIO, len < 8 ? "truncated" : len < 28 ? "truncated"
                                                          : "truncated: the "
                                                            "header announces");
    assert_unchanged(&target);
  }
  /* Extra bytes at the end are corruption too. */
  unsigned char *longer = malloc(n + 3);
  memcpy(longer, b, n);
  memset(longer + n, 0, 3);
  write_all(cut, longer, n + 3);
  assert_int_equal(ad_checkpoint_restore(cut, 3, target.v, NULL), AD_EIO);
  assert_error(AD_EIO, "does not match the header");
  assert_unchanged(&target);
  free(longer);
  free(b);
  fixture_free(&fx);
  fixture_free(&target);
}

static void every_flipped_byte_is_detected(void **state) {
  (void)state;
  fixture fx, target;
  fixture_new(&fx, 1.0);
  fixture_new(&target, 7.0);
  const char *path = in_dir("ck.bin"), *bad = in_dir("bad.bin");
  assert_int_equal(ad_checkpoint_save(path, 3, fx.v, NULL), AD_OK);
  size_t n;
  unsigned char *b = read_all(path, &n);
  for (size_t i = 0; i < n; i++) {
    for (int bit = 0; bit < 8; bit += 7) {
      b[i] ^= (unsigned char)(1u << bit);
      write_all(bad, b, n);
      b[i] ^= (unsigned char)(1u << bit);
      ad_status st = ad_checkpoint_restore(bad, 3, target.v, NULL);
      assert_int_equal(st, AD_EIO);
      const char *msg = ad_error_message();
      assert_true(strstr(msg, "corrupted") || strstr(msg, "truncated") ||
                  strstr(msg, "magic") || strstr(msg, "version"));
      ad_error_clear();
      assert_unchanged(&target);
    }
  }
  /* The checksum names both values. */
  b[40] ^= 0x10;
  write_all(bad, b, n);
  assert_int_equal(ad_checkpoint_restore(bad, 3, target.v, NULL), AD_EIO);
  assert_error(AD_EIO, "is corrupted: checksum 0x");
  free(b);
  fixture_free(&fx);
  fixture_free(&target);
}

static void hostile_entries_with_a_valid_checksum_are_rejected(void **state) {
  (void)state;
  /* A file whose CRC is right but whose entry claims a huge shape. */
  ad_var *v = ad_var_new("w", ad_tensor_new(1, SHAPE(2), VALUES(1, 2)));
  const char *path = in_dir("ck.bin");
  assert_int_equal(ad_checkpoint_save(path, 1, &v, NULL), AD_OK);
  size_t n;
  unsigned char *b = read_all(path, &n);
  /* The shape's i64 is at 24 + 4 + 1. */
  for (int k = 0; k < 8; k++) b[29 + k] = 0xff;
  b[29 + 7] = 0x0f;
  uint32_t crc = crc32_ref(b, n - 4);
  for (int k = 0; k < 4; k++) b[n - 4 + k] = (unsigned char)(crc >> (8 * k));
  write_all(path, b, n);
  assert_int_equal(ad_checkpoint_restore(path, 1, &v, NULL), AD_EIO);
  assert_error(AD_EIO, "entry 0 is malformed");
  assert_tensor_near(ad_var_value(v), VALUES(1, 2), 2, 0);
  free(b);
  ad_var_free(v);
}

static void wrong_names_and_shapes_change_nothing(void **state) {
  (void)state;
  fixture fx;
  fixture_new(&fx, 1.0);
  const char *path = in_dir("ck.bin");
  assert_int_equal(ad_checkpoint_save(path, 3, fx.v, NULL), AD_OK);
  fixture target;
  fixture_new(&target, 7.0);
  /* A variable the file lacks. */
  ad_var *renamed[3] = {target.v[0], ad_var_new("z", ad_scalar(1)),
                        target.v[2]};
  assert_int_equal(ad_checkpoint_restore(path, 3, renamed, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "has no variable named 'z' (vars[1])");
  assert_unchanged(&target);
  /* A variable in the file that matches none given. */
  assert_int_equal(ad_checkpoint_restore(path, 2, target.v, NULL),
                   AD_EINVAL);
  assert_error(AD_EINVAL, "holds variable 'c', which is not among the 2 "
                          "variables given");
  assert_unchanged(&target);
  /* A shape that differs. */
  ad_var *wide[3] = {target.v[0], target.v[1],
                     ad_var_new("c", ad_zeros(1, SHAPE(5)))};
  assert_int_equal(ad_checkpoint_restore(path, 3, wide, NULL), AD_ESHAPE);
  assert_error(AD_ESHAPE, "holds variable 'c' with shape (4,), the variable "
                          "has shape (5,)");
  assert_unchanged(&target);
  assert_tensor_near(ad_var_value(wide[2]), VALUES(0, 0, 0, 0, 0), 5, 0);
  ad_var_free(renamed[1]);
  ad_var_free(wide[2]);
  fixture_free(&fx);
  fixture_free(&target);
}

static void bad_saves_leave_the_old_file(void **state) {
  (void)state;
  fixture fx;
  fixture_new(&fx, 1.0);
  const char *path = in_dir("ck.bin");
  assert_int_equal(ad_checkpoint_save(path, 3, fx.v, NULL), AD_OK);
  size_t n0;
  unsigned char *before = read_all(path, &n0);
  /* Two variables with one name. */
  ad_var *dup[2] = {fx.v[0], ad_var_new("a", ad_scalar(0))};
  assert_int_equal(ad_checkpoint_save(path, 2, dup, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "variables 0 and 1 are both named 'a'");
  ad_var *unnamed = ad_var_new(NULL, ad_scalar(0));
  assert_int_equal(ad_checkpoint_save(path, 1, &unnamed, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "variable 0 has an empty name");
  assert_int_equal(ad_checkpoint_save(in_dir("no/such/dir.bin"), 3, fx.v,
                                      NULL), AD_EIO);
  assert_error(AD_EIO, "cannot create a temporary file");
  size_t n1;
  unsigned char *after = read_all(path, &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(before, after, n0);
  assert_int_equal(files_in_dir(), 1);
  assert_int_equal(ad_checkpoint_save(NULL, 3, fx.v, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "NULL path");
  ad_var *holes[2] = {fx.v[0], NULL};
  assert_int_equal(ad_checkpoint_save(path, 2, holes, NULL), AD_EINVAL);
  assert_error(AD_EINVAL, "vars[1] is NULL");
  free(before);
  free(after);
  ad_var_free(dup[1]);
  ad_var_free(unnamed);
  fixture_free(&fx);
}

static void saving_is_not_recorded(void **state) {
  (void)state;
  fixture fx;
  fixture_new(&fx, 1.0);
  ad_tape *tape = ad_tape_begin(0);
  assert_int_equal(ad_checkpoint_save(in_dir("ck.bin"), 3, fx.v, NULL),
                   AD_OK);
  assert_int_equal(ad_checkpoint_restore(in_dir("ck.bin"), 3, fx.v, NULL),
                   AD_OK);
  assert_int_equal(ad_tape_num_variables(tape), 0);
  ad_tape_end(tape);
  ad_tape_free(tape);
  fixture_free(&fx);
}

/* ---- optimizer state --------------------------------------------------- */

/* loss = sum((w - target)^2) over both variables. */
typedef struct quad {
  ad_var *v[2];
} quad;

static ad_tensor *quad_loss(void *ctx) {
  quad *q = ctx;
  return ad_add(ad_sum_all(ad_square(ad_add_scalar(ad_var_value(q->v[0]),
                                                   -3))),
                ad_sum_all(ad_square(ad_add_scalar(ad_var_value(q->v[1]),
                                                   1))));
}

static void quad_new(quad *q) {
  q->v[0] = ad_var_new("w", ad_tensor_new(1, SHAPE(3), VALUES(0, 1, 2)));
  q->v[1] = ad_var_new("b", ad_scalar(5));
}

static void quad_steps(quad *q, ad_optimizer *opt, int steps) {
  for (int i = 0; i < steps; i++) {
    ad_scope_begin();
    assert_int_equal(ad_optimizer_minimize(opt, quad_loss, q, 2, q->v, NULL),
                     AD_OK);
    ad_scope_end();
  }
}

static void optimizer_state_round_trips(void **state) {
  (void)state;
  quad a, b;
  quad_new(&a);
  quad_new(&b);
  ad_optimizer *oa = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  ad_optimizer *ob = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  quad_steps(&a, oa, 5);
  const char *path = in_dir("ck.bin");
  assert_int_equal(ad_checkpoint_save(path, 2, a.v, oa), AD_OK);
  quad_steps(&a, oa, 7);
  assert_int_equal(ad_checkpoint_restore(path, 2, b.v, ob), AD_OK);
  assert_int_equal(ad_optimizer_iterations(ob), 5);
  quad_steps(&b, ob, 7);
  for (int i = 0; i < 2; i++)
    assert_same_bits(ad_var_value(a.v[i]), ad_var_value(b.v[i]));
  /* Without an optimizer, its entries are ignored. */
  quad c;
  quad_new(&c);
  assert_int_equal(ad_checkpoint_restore(path, 2, c.v, NULL), AD_OK);
  for (int i = 0; i < 2; i++) {
    ad_var_free(a.v[i]);
    ad_var_free(b.v[i]);
    ad_var_free(c.v[i]);
  }
  ad_optimizer_free(oa);
  ad_optimizer_free(ob);
}

static void optimizer_mismatch_changes_nothing(void **state) {
  (void)state;
  quad a;
  quad_new(&a);
  ad_optimizer *sgd = ad_optimizer_sgd(0.1, 0.9);
  quad_steps(&a, sgd, 3);
  const char *path = in_dir("ck.bin");
  assert_int_equal(ad_checkpoint_save(path, 2, a.v, sgd), AD_OK);
  const char *plain = in_dir("plain.bin");
  assert_int_equal(ad_checkpoint_save(plain, 2, a.v, NULL), AD_OK);

  quad b;
  quad_new(&b);
  ad_optimizer *adam = ad_optimizer_adam(0.1, 0.9, 0.999, 1e-8);
  quad_steps(&b, adam, 2);
  ad_tensor *before[2] = {ad_var_value(b.v[0]), ad_var_value(b.v[1])};
  /* SGD's state given to Adam: refused, nothing moves. */
  assert_int_equal(ad_checkpoint_restore(path, 2, b.v, adam), AD_EINVAL);
  assert_error(AD_EINVAL, "the optimizer refused the saved state");
  assert_int_equal(ad_optimizer_iterations(adam), 2);
  for (int i = 0; i < 2; i++)
    assert_same_bits(ad_var_value(b.v[i]), before[i]);
  /* An optimizer but no state in the file. */
  assert_int_equal(ad_checkpoint_restore(plain, 2, b.v, adam), AD_EINVAL);
  assert_error(AD_EINVAL, "holds no optimizer state");
  for (int i = 0; i < 2; i++)
    assert_same_bits(ad_var_value(b.v[i]), before[i]);
  for (int i = 0; i < 2; i++) {
    ad_var_free(a.v[i]);
    ad_var_free(b.v[i]);
  }
  ad_optimizer_free(sgd);
  ad_optimizer_free(adam);
}

/* ---- stopping and resuming training ------------------------------------ */

typedef struct run {
  ad_layer *model;
  ad_optimizer *opt;
  ad_dataset *ds;
  int64_t nvars;
  ad_var *train[16], *all[16];
} run;

static void run_new(run *r, uint64_t init_seed) {
  ad_seed(init_seed);
  r->model = ad_model_new("net");
  ad_model_add(r->model, ad_layer_conv2d(3, 3, 3, 1, 1, AD_PAD_SAME,
                                         AD_ACT_RELU, true));
  ad_model_add(r->model, ad_layer_max_pool2d(2, 2, 2, 2, AD_PAD_VALID));
  ad_model_add(r->model, ad_layer_flatten());
  ad_model_add(r->model, ad_layer_dense(8, AD_ACT_TANH, true));
  ad_model_add(r->model, ad_layer_dropout(0.3, 99));
  ad_model_add(r->model, ad_layer_dense(3, AD_ACT_LINEAR, true));
  assert_int_equal(ad_layer_build(r->model, 4, SHAPE(1, 4, 4, 1)), AD_OK);
  r->nvars = ad_layer_variables(r->model, AD_VARS_TRAINABLE, r->train, 16);
  assert_int_equal(ad_layer_variables(r->model, 0, r->all, 16),
                   r->nvars + 1);
  r->opt = ad_optimizer_adam(0.01, 0.9, 0.999, 1e-8);
  /* 20 examples of 4x4 images, three classes. */
  ad_seed(1234);
  ad_tensor *ts[2] = {ad_rand_normal(4, SHAPE(20, 4, 4, 1), 0, 1),
                      ad_floor(ad_rand_uniform(1, SHAPE(20), 0, 3))};
  r->ds = ad_dataset_batch(ad_dataset_shuffle(
      ad_dataset_from_tensor_slices(2, ts), 20, 5), 6, false);
  assert_non_null(r->ds);
}

static void run_free(run *r) {
  ad_layer_free(r->model);
  ad_optimizer_free(r->opt);
  ad_dataset_free(r->ds);
}

/* Train epochs [from, to); returns the last batch's loss. */
static double run_epochs(run *r, int from, int to) {
  double last = NAN;
  for (int epoch = from; epoch < to; epoch++) {
    ad_iterator *it = ad_dataset_iter_pass(r->ds, (uint64_t)epoch);
    ad_tensor *b[2];
    ad_scope_begin();
    while (ad_iter_next(it, b)) {
      ad_tape *tape = ad_tape_begin(0);
      ad_tensor *loss = ad_loss_sparse_softmax_cross_entropy(
          ad_layer_call(r->model, b[0], true), b[1]);
      ad_tape_end(tape);
      assert_non_null(loss);
      ad_tensor *g[16];
      assert_int_equal(ad_tape_var_gradients(tape, loss, (int)r->nvars,
                                             r->train, g), AD_OK);
      assert_int_equal(ad_optimizer_step(r->opt, (int)r->nvars, r->train, g),
                       AD_OK);
      ad_tape_free(tape);
      last = ad_item(loss);
    }
    ad_scope_end();
    assert_int_equal(ad_iter_status(it), AD_OK);
    ad_iter_free(it);
  }
  return last;
}

static void stopped_training_resumes_where_it_left_off(void **state) {
  (void)state;
  const char *path = in_dir("train.ckpt");
  run a, b;
  run_new(&a, 1);
  run_epochs(&a, 0, 3);
  assert_int_equal(ad_checkpoint_save(path, a.nvars + 1, a.all, a.opt),
                   AD_OK);
  double la = run_epochs(&a, 3, 6);

  /* Another process would build the same model with other initial
   * values; the checkpoint brings it to where run a stopped. */
  run_new(&b, 2);
  assert_int_equal(ad_checkpoint_restore(path, b.nvars + 1, b.all, b.opt),
                   AD_OK);
  assert_int_equal(ad_optimizer_iterations(b.opt), 12);
  double lb = run_epochs(&b, 3, 6);
  assert_true(la == lb);
  for (int64_t i = 0; i < a.nvars + 1; i++)
    assert_same_bits(ad_var_value(a.all[i]), ad_var_value(b.all[i]));
  run_free(&a);
  run_free(&b);
}

/* ---- threads ----------------------------------------------------------- */

/* What one thread does: build, train a few steps, checkpoint, restore
 * into a second model, and report the final weights.  cmocka's asserts
 * belong to the main thread, so the worker only records a status. */
typedef struct worker {
  const char *path;
  ad_status status;
  double weights[8 * 3];
  double loss;
} worker;

static void *train_in_thread(void *arg) {
  worker *w = arg;
  ad_scope_begin();
  run r, copy;
  /* run_new asserts; every call in it succeeds here (checked by the
   * single-threaded test above). */
  run_new(&r, 1);
  w->loss = run_epochs(&r, 0, 2);
  w->status = ad_checkpoint_save(w->path, r.nvars + 1, r.all, r.opt);
  run_new(&copy, 3);
  if (w->status == AD_OK)
    w->status = ad_checkpoint_restore(w->path, copy.nvars + 1, copy.all,
                                      copy.opt);
  /* The last dense kernel (8, 3) of the restored copy. */
  if (w->status == AD_OK)
    w->status = ad_read(ad_var_value(copy.train[r.nvars - 2]), w->weights,
                        24);
  run_free(&r);
  run_free(&copy);
  ad_scope_end();
  ad_thread_cleanup();
  return NULL;
}

static void threads_train_their_own_models(void **state) {
  (void)state;
  char p0[128], p1[128];
  snprintf(p0, sizeof p0, "%s", in_dir("t0.ckpt"));
  snprintf(p1, sizeof p1, "%s", in_dir("t1.ckpt"));
  worker w[2] = {{.path = p0}, {.path = p1}};
  pthread_t t[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&t[i], NULL, train_in_thread, &w[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 2; i++) assert_int_equal(w[i].status, AD_OK);
  /* Same seeds on each thread's own generator: the same training. */
  assert_true(w[0].loss == w[1].loss);
  assert_memory_equal(w[0].weights, w[1].weights, sizeof w[0].weights);
  assert_int_equal(files_in_dir(), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      dir_test(save_and_restore_round_trip),
      dir_test(file_layout_matches_the_documentation),
      dir_test(missing_file_changes_nothing),
      dir_test(every_truncation_is_detected),
      dir_test(every_flipped_byte_is_detected),
      dir_test(hostile_entries_with_a_valid_checksum_are_rejected),
      dir_test(wrong_names_and_shapes_change_nothing),
      dir_test(bad_saves_leave_the_old_file),
      dir_test(saving_is_not_recorded),
      dir_test(optimizer_state_round_trips),
      dir_test(optimizer_mismatch_changes_nothing),
      dir_test(stopped_training_resumes_where_it_left_off),
      dir_test(threads_train_their_own_models),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
