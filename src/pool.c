/* Per-thread free lists of tensor headers and data blocks, so that
 * steady-state eager execution does not call malloc. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Blocks of 2^k elements for k < CLASS_COUNT come from the pool; larger
 * ones are malloc'ed and freed directly. */
#define CLASS_COUNT 23
#define HEADER_CACHE_MAX (1 << 20)
/* Cap the bytes a thread keeps cached so idle threads do not hoard. */
#define CACHE_BYTES_MAX ((int64_t)512 << 20)
#define STORAGE_HEADER_BYTES 64
/* Blocks above the largest class are cached too, a few at a time, and
 * reused for requests they fit without wasting more than a third: fresh
 * large blocks come from mmap and cost a page fault per page. */
#define LARGE_CACHE 4

typedef struct free_node {
  struct free_node *next;
} free_node;

typedef struct pool {
  free_node *headers;
  long header_count;
  free_node *blocks[CLASS_COUNT];
  ad__storage *large[LARGE_CACHE];
  int64_t cached_bytes;
  bool registered; /* thread-exit destructor armed */
#ifdef AD_DEBUG_POOL
  /* Released headers kept out of reuse, oldest at ring[ring_next] (NULL
   * until the ring first fills); allocated on first use. */
  ad_tensor **ring;
  int ring_next;
#endif
} pool;

static _Thread_local pool thread_pool;
_Thread_local long ad__fail_countdown;

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static void pool_thread_exit(void *unused) {
  (void)unused;
  /* A thread that returns with scopes open would leak what they own. */
  ad__scope_end_all();
  ad__pool_cleanup();
}

static void make_exit_key(void) {
  pthread_key_create(&exit_key, pool_thread_exit);
  /* The main thread does not run key destructors at exit(). */
  atexit(ad__pool_cleanup);
}

static void register_thread(void) {
  pthread_once(&exit_key_once, make_exit_key);
  pthread_setspecific(exit_key, &thread_pool);
  thread_pool.registered = true;
}

void ad__fail_alloc_after(long n) { ad__fail_countdown = n; }

ad_tensor *ad__pool_header(void) {
  if (ad__alloc_should_fail()) return NULL;
  pool *p = &thread_pool;
  if (p->headers) {
    free_node *n = p->headers;
    p->headers = n->next;
    p->header_count--;
    return (ad_tensor *)(void *)n;
  }
  if (!p->registered) register_thread();
  return malloc(sizeof(ad_tensor));
}

void ad__pool_free_header(ad_tensor *t) {
  pool *p = &thread_pool;
#ifdef AD_DEBUG_POOL
  /* Poisoned (ad_release did it already unless the header never held a
   * live tensor), then quarantined: the header that leaves the ring, the
   * oldest, is the one that goes back to the free list.  It goes into
   * this thread's ring whichever thread made it.  Without memory for
   * the ring the header goes straight back. */
  t->id = 0;
  if (!p->registered) register_thread();
  if (!p->ring) p->ring = calloc(AD__DEBUG_POOL_RING, sizeof *p->ring);
  if (p->ring) {
    ad_tensor *oldest = p->ring[p->ring_next];
    p->ring[p->ring_next] = t;
    p->ring_next = (p->ring_next + 1) % AD__DEBUG_POOL_RING;
    if (!oldest) return;
    t = oldest;
  }
#endif
  if (p->header_count >= HEADER_CACHE_MAX) {
    free(t);
    return;
  }
  if (!p->registered) register_thread();
  free_node *n = (free_node *)(void *)t;
  n->next = p->headers;
  p->headers = n;
  p->header_count++;
}

static int class_of(int64_t numel) {
  int k = 0;
  while (k < CLASS_COUNT && ((int64_t)1 << k) < numel) k++;
  return k < CLASS_COUNT ? k : -1;
}

static size_t block_bytes(int64_t capacity) {
  return STORAGE_HEADER_BYTES + (size_t)capacity * sizeof(double);
}

ad__storage *ad__pool_storage(int64_t numel) {
  if (ad__alloc_should_fail()) return NULL;
  int k = class_of(numel < 1 ? 1 : numel);
  pool *p = &thread_pool;
  if (k >= 0 && p->blocks[k]) {
    free_node *n = p->blocks[k];
    p->blocks[k] = n->next;
    p->cached_bytes -= (int64_t)block_bytes((int64_t)1 << k);
    ad__storage *s = (ad__storage *)(void *)n;
    atomic_init(&s->refs, 1);
    s->size_class = k;
    s->capacity = (int64_t)1 << k;
    s->data = (double *)(void *)((char *)s + STORAGE_HEADER_BYTES);
    return s;
  }
  if (k < 0) {
    int best = -1;
    for (int i = 0; i < LARGE_CACHE; i++) {
      ad__storage *c = p->large[i];
      if (c && c->capacity >= numel && c->capacity <= numel + numel / 2 &&
          (best < 0 || c->capacity < p->large[best]->capacity))
        best = i;
    }
    if (best >= 0) {
      ad__storage *s = p->large[best];
      p->large[best] = NULL;
      p->cached_bytes -= (int64_t)block_bytes(s->capacity);
      atomic_init(&s->refs, 1);
      return s;
    }
  }
  if (!p->registered) register_thread();
  int64_t capacity = k >= 0 ? (int64_t)1 << k : (numel < 1 ? 1 : numel);
  if ((uint64_t)capacity > (SIZE_MAX - STORAGE_HEADER_BYTES) / 8 / 2)
    return NULL;
  size_t bytes = block_bytes(capacity);
  bytes = (bytes + 63) & ~(size_t)63;
  ad__storage *s = aligned_alloc(64, bytes);
  if (!s) return NULL;
  atomic_init(&s->refs, 1);
  s->size_class = k;
  s->capacity = capacity;
  s->data = (double *)(void *)((char *)s + STORAGE_HEADER_BYTES);
  return s;
}

void ad__pool_free_storage(ad__storage *s) {
  pool *p = &thread_pool;
  int k = s->size_class;
  int64_t bytes = (int64_t)block_bytes(s->capacity);
  if (p->cached_bytes + bytes > CACHE_BYTES_MAX) {
    free(s);
    return;
  }
  if (k < 0) {
    /* Keep the newest large blocks: replace an empty slot or the
     * smallest cached one. */
    int slot = 0;
    for (int i = 0; i < LARGE_CACHE; i++) {
      if (!p->large[i]) {
        slot = i;
        break;
      }
      if (p->large[i]->capacity < p->large[slot]->capacity) slot = i;
    }
    if (p->large[slot]) {
      p->cached_bytes -= (int64_t)block_bytes(p->large[slot]->capacity);
      free(p->large[slot]);
    }
    if (!p->registered) register_thread();
    p->large[slot] = s;
    p->cached_bytes += bytes;
    return;
  }
  if (!p->registered) register_thread();
  free_node *n = (free_node *)(void *)s;
  n->next = p->blocks[k];
  p->blocks[k] = n;
  p->cached_bytes += bytes;
}

void ad__pool_cleanup(void) {
  pool *p = &thread_pool;
  while (p->headers) {
    free_node *n = p->headers;
    p->headers = n->next;
    free(n);
  }
  p->header_count = 0;
#ifdef AD_DEBUG_POOL
  if (p->ring) {
    for (int i = 0; i < AD__DEBUG_POOL_RING; i++) free(p->ring[i]);
    free(p->ring);
    p->ring = NULL;
    p->ring_next = 0;
  }
#endif
  for (int k = 0; k < CLASS_COUNT; k++) {
    while (p->blocks[k]) {
      free_node *n = p->blocks[k];
      p->blocks[k] = n->next;
      free(n);
    }
  }
  for (int i = 0; i < LARGE_CACHE; i++) {
    free(p->large[i]);
    p->large[i] = NULL;
  }
  p->cached_bytes = 0;
}

void ad_thread_cleanup(void) {
  ad__scope_cleanup();
  ad__random_cleanup();
  ad__pool_cleanup();
}
