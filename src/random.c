/* Random tensors from a per-thread GSL mt19937 generator. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include "internal.h"

/* The generator and its state in one block.  gsl_rng_alloc is avoided
 * because on out of memory it calls GSL's error handler, which aborts by
 * default; a gsl_rng is a public two-field struct, so we build our own. */
typedef struct generator {
  gsl_rng rng;
  max_align_t state[];
} generator;

static _Thread_local generator *thread_generator;
/* An unseeded thread draws as if seeded with 0, so every run of a program
 * sees the same numbers on each thread without calling ad_seed. */
static _Thread_local uint64_t thread_seed;

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static bool exit_key_made;

static void thread_exit(void *unused) {
  (void)unused;
  ad__random_cleanup();
}

static void make_exit_key(void) {
  exit_key_made = pthread_key_create(&exit_key, thread_exit) == 0;
  /* The main thread does not run key destructors at exit(). */
  atexit(ad__random_cleanup);
}

void ad__random_cleanup(void) {
  if (!thread_generator) return;
  free(thread_generator);
  thread_generator = NULL;
  /* Only a thread that made a generator got here, after pthread_once. */
  if (exit_key_made) pthread_setspecific(exit_key, NULL);
}

/* MurmurHash3's finaliser: a bijection on 32 bits with mix32(0) == 0. */
static uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

/* mt19937 keeps 32 bits of its seed and replaces 0 by 4357, so 2^32 - 1
 * streams exist.  For each value of the high word this map is a bijection
 * of the low word onto them except for one seed, so that seeds below 2^32
 * (all but 4356 and 2^32 - 1, which meet) give distinct streams, and the
 * high word still changes the stream. */
static unsigned long gsl_seed(uint64_t seed) {
  uint32_t lo = (uint32_t)seed, hi = (uint32_t)(seed >> 32);
  return (unsigned long)(uint32_t)((lo ^ mix32(hi)) + 1u);
}

static gsl_rng *this_thread_rng(const char *op) {
  if (thread_generator) return &thread_generator->rng;
  size_t size = gsl_rng_mt19937->size;
  generator *g = ad__alloc_should_fail() ? NULL : malloc(sizeof *g + size);
  if (!g) {
    ad__error(AD_ENOMEM, "%s: out of memory for the random generator", op);
    return NULL;
  }
  g->rng.type = gsl_rng_mt19937;
  g->rng.state = g->state;
  gsl_rng_set(&g->rng, gsl_seed(thread_seed));
  pthread_once(&exit_key_once, make_exit_key);
  if (exit_key_made) pthread_setspecific(exit_key, g);
  thread_generator = g;
  return &g->rng;
}

void ad_seed(uint64_t seed) {
  thread_seed = seed;
  if (thread_generator) gsl_rng_set(&thread_generator->rng, gsl_seed(seed));
}

ad_tensor *ad_rand_uniform(int ndim, const int64_t *shape, double lo,
                           double hi) {
  if (ad__check_shape("ad_rand_uniform", ndim, shape) != AD_OK) return NULL;
  if (!isfinite(lo) || !isfinite(hi) || !(lo < hi)) {
    ad__error(AD_EINVAL,
              "ad_rand_uniform: need finite bounds with lo < hi, got lo=%g "
              "hi=%g",
              lo, hi);
    return NULL;
  }
  gsl_rng *r = this_thread_rng("ad_rand_uniform");
  if (!r) return NULL;
  ad_tensor *t = ad__alloc("ad_rand_uniform", ndim, shape);
  if (!t) return NULL;
  /* hi - lo may overflow (lo = -DBL_MAX, hi = DBL_MAX); halves do not. */
  bool wide = !isfinite(hi - lo);
  double half = hi / 2 - lo / 2, below_hi = nextafter(hi, lo);
  for (int64_t i = 0; i < t->numel; i++) {
    double u = gsl_rng_uniform(r);
    double x = wide ? (lo / 2 + half * u) * 2 : lo + (hi - lo) * u;
    /* Rounding can land on hi; the interval is half-open. */
    if (x >= hi) x = below_hi;
    if (x < lo) x = lo;
    t->data[i] = x;
  }
  return ad__own(t);
}

ad_tensor *ad_rand_normal(int ndim, const int64_t *shape, double mean,
                          double sd) {
  if (ad__check_shape("ad_rand_normal", ndim, shape) != AD_OK) return NULL;
  if (!isfinite(mean) || !isfinite(sd) || !(sd >= 0)) {
    ad__error(AD_EINVAL,
              "ad_rand_normal: need a finite mean and a finite sd >= 0, got "
              "mean=%g sd=%g",
              mean, sd);
    return NULL;
  }
  gsl_rng *r = this_thread_rng("ad_rand_normal");
  if (!r) return NULL;
  ad_tensor *t = ad__alloc("ad_rand_normal", ndim, shape);
  if (!t) return NULL;
  for (int64_t i = 0; i < t->numel; i++)
    t->data[i] = mean + gsl_ran_gaussian_ziggurat(r, sd);
  return ad__own(t);
}
