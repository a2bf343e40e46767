/*
 * A fill's body, from the upstream's socket to the partial file, off the JavaScript thread.
 *
 * A cold fill receives, hashes and writes every byte. Done from JavaScript (one event per read, a batch handed
 * to libuv's pool for its write and another for its hash, promises to join them), the main thread spent ~0.23
 * CPU-s per GiB more than a C relay doing the same steps (docs/performance.md, "A yardstick in C"). Here three
 * threads of the pump do it, a thread per step as that relay does, over a ring of three batches:
 *
 *   the reader  reads the socket into a free batch of `batch` bytes, and hands it over when it is full, when
 *               the body is complete, when no byte came for `gather` ms (the upstream paused, the tail), or
 *               `maxDelay` ms after the batch's first byte (a slow upstream: followers are never held longer);
 *   the hasher  hashes the batches in order (SHA-256 is sequential, and the slowest step: reading beside it
 *               instead of before it took a cold 512 MiB pull from ~570 to ~550 ms on this 2-core machine);
 *   the writer  writes the batches in order (pwrite at the file's offset) and reports each to JavaScript
 *               (`onProgress(bytes)`), which lets the fill's followers send it.
 *
 * A batch goes back to the reader once hashed and written. Followers may get bytes before they are hashed:
 * JavaScript holds a fill's last byte until the digest matches, as on its own path.
 *
 * The reader never reads past the body (`length` bytes): the connection stays usable for the next request.
 * It stops on the socket's end or error, after `idle` ms without a byte, on `pumpStop`, or when a write or
 * the hash failed. Every byte received is hashed and written before `onDone(result)` (so a fill resumed with a range
 * request goes on where the file ends): { received, written, where?, code?, message? }, `where` being
 * "read", "write", "hash" or "stopped" when the pump ended before the body's end.
 *
 * The socket stays JavaScript's (libuv's, its reading stopped meanwhile): never closed here, and JavaScript
 * must not close it, nor the file, before onDone. The hasher is busy until onDone.
 *
 *   pump(hasher, socketFd, fileFd, position, length, idleMs, gatherMs, maxDelayMs, batchBytes, onProgress, onDone)
 *                       -> handle
 *   pumpStop(handle)    asks a running pump to stop (onDone follows, where "stopped"); no effect after onDone
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"

#define NBATCH 3

typedef struct {
  hasher_t *h;
  int sock, file, stopfd;
  int64_t position;   /* the file offset of the next write (the writer's) */
  uint64_t remaining; /* body bytes not yet read (the reader's) */
  int idle_ms, gather_ms, max_delay_ms;
  size_t batch;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned char *buf[NBATCH];
  size_t len[NBATCH];
  /* A batch the reader handed over (`ready`) goes back to it once hashed and written. */
  int ready[NBATCH], hashed[NBATCH], written_[NBATCH];
  int reader_done, stopping, write_failed, hash_failed;

  /* Results: each set by its own thread, read after all three ended. Why the reading ended early (where NULL:
   * it read the whole body), and why writing failed. */
  uint64_t received, written;
  const char *where;
  int err; /* errno, or 0 */
  const char *message;
  int write_err;

  napi_threadsafe_function tsfn;
  napi_ref on_progress, on_done, hasher_ref;
  pthread_t reader, hasher, writer;
  int done;  /* onDone was called (main thread) */
  int refs;  /* the handle's external and the tsfn: freed when both are gone (main thread) */
} pump_t;

/* A message from the writer thread to JavaScript. */
typedef struct {
  int is_done;
  uint64_t bytes;
} msg_t;

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Gives batch i to the hasher and the writer (the reader's side). */
static void hand_over(pump_t *p, int i) {
  pthread_mutex_lock(&p->mu);
  p->ready[i] = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

/* Asks the reader to stop: through the lock for a reader waiting for a free batch, the eventfd for one in poll. */
static void request_stop(pump_t *p) {
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  uint64_t one = 1;
  ssize_t ignored = write(p->stopfd, &one, sizeof one);
  (void)ignored;
}

static void reader_stop(pump_t *p, const char *where, int err, const char *message) {
  p->where = where;
  p->err = err;
  p->message = message;
}

/* The reader: the socket into the batches, in turn. */
static void *reader_main(void *arg) {
  pump_t *p = arg;
  int cur = 0;
  /* In microseconds: the last byte's arrival (for the idle timeout), the current batch's first (its gathering). */
  int64_t last = now_us(), started = 0;
  const int64_t idle = (int64_t)p->idle_ms * 1000, gather = (int64_t)p->gather_ms * 1000, max_delay = (int64_t)p->max_delay_ms * 1000;
  while (p->remaining > 0) {
    pthread_mutex_lock(&p->mu);
    while (p->ready[cur] && !p->stopping && !p->write_failed && !p->hash_failed) pthread_cond_wait(&p->cv, &p->mu);
    int stop = p->stopping, failed = p->write_failed || p->hash_failed;
    pthread_mutex_unlock(&p->mu);
    if (failed) break; /* the writer or the hasher says why */
    if (stop) {
      reader_stop(p, "stopped", 0, "the transfer was stopped");
      break;
    }
    size_t room = p->batch - p->len[cur];
    size_t want = room < p->remaining ? room : (size_t)p->remaining;
    ssize_t n = read(p->sock, p->buf[cur] + p->len[cur], want);
    if (n > 0) {
      last = now_us();
      if (p->len[cur] == 0) started = last;
      p->len[cur] += (size_t)n;
      p->remaining -= (uint64_t)n;
      p->received += (uint64_t)n;
      if (p->len[cur] == p->batch || p->remaining == 0 || last - started >= max_delay) {
        hand_over(p, cur);
        cur = (cur + 1) % NBATCH;
      }
      continue;
    }
    if (n == 0) {
      reader_stop(p, "read", ECONNRESET, "upstream closed the connection before the end of the body");
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      reader_stop(p, "read", errno, strerror(errno));
      break;
    }
    /* Nothing to read now: wait for bytes, a stop, or a batch's gathering time. */
    int64_t now = now_us(), idle_left = last + idle - now;
    if (idle_left <= 0) {
      reader_stop(p, "read", ETIMEDOUT, "no data from upstream within the idle timeout");
      break;
    }
    /* A batch waits `gather` for more bytes, and no longer than `max_delay` in all. */
    int64_t gather_left = started + max_delay - now;
    if (gather_left > gather) gather_left = gather;
    if (gather_left < 0) gather_left = 0;
    int64_t wait = p->len[cur] > 0 && gather_left < idle_left ? gather_left : idle_left;
    int timeout = (int)((wait + 999) / 1000); /* poll's milliseconds, rounded up */
    struct pollfd fds[2] = {{.fd = p->sock, .events = POLLIN}, {.fd = p->stopfd, .events = POLLIN}};
    int r = poll(fds, 2, timeout);
    if (r < 0 && errno != EINTR) {
      reader_stop(p, "read", errno, strerror(errno));
      break;
    }
    if (r == 0 && p->len[cur] > 0) {
      /* The upstream is slower than a batch: what came goes to disk, and to the followers. */
      hand_over(p, cur);
      cur = (cur + 1) % NBATCH;
    }
    /* A stop (request_stop set `stopping` before it wrote the eventfd) is seen at the top of the loop; a
     * readable socket at the next read. */
  }
  /* What was received is hashed and written, whatever ended the reading: the batch being filled, if the reader
   * holds one (not one it was waiting for). */
  pthread_mutex_lock(&p->mu);
  if (!p->ready[cur] && p->len[cur] > 0) p->ready[cur] = 1;
  p->reader_done = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static void post(pump_t *p, int is_done, uint64_t bytes) {
  msg_t *m = malloc(sizeof *m);
  if (m == NULL) return; /* progress is also carried by the final count */
  m->is_done = is_done;
  m->bytes = bytes;
  if (napi_call_threadsafe_function(p->tsfn, m, napi_tsfn_blocking) != napi_ok) free(m);
}

/* Takes batch i back once hashed and written (under the lock). */
static void release_batch(pump_t *p, int i) {
  if (!p->hashed[i] || !p->written_[i]) return;
  p->ready[i] = p->hashed[i] = p->written_[i] = 0;
  p->len[i] = 0;
  pthread_cond_broadcast(&p->cv);
}

/* Waits for the next batch at `i` that `done` (hashed or written_) has not seen; 0 at the end. */
static int next_batch(pump_t *p, int i, const int *done) {
  pthread_mutex_lock(&p->mu);
  while (!(p->ready[i] && !done[i]) && !p->reader_done) pthread_cond_wait(&p->cv, &p->mu);
  int have = p->ready[i] && !done[i];
  pthread_mutex_unlock(&p->mu);
  return have;
}

/* The hasher: each batch into the digest, in order. */
static void *hasher_main(void *arg) {
  pump_t *p = arg;
  for (int i = 0; next_batch(p, i, p->hashed); i = (i + 1) % NBATCH) {
    if (!p->hash_failed && EVP_DigestUpdate(p->h->ctx, p->buf[i], p->len[i]) != 1) {
      pthread_mutex_lock(&p->mu);
      p->hash_failed = 1;
      pthread_mutex_unlock(&p->mu);
      request_stop(p);
    }
    pthread_mutex_lock(&p->mu);
    p->hashed[i] = 1;
    release_batch(p, i);
    pthread_mutex_unlock(&p->mu);
  }
  return NULL;
}

/* The writer: each batch to the file, in order; it ends the pump once the others ended. */
static void *writer_main(void *arg) {
  pump_t *p = arg;
  for (int i = 0;; i = (i + 1) % NBATCH) {
    if (!next_batch(p, i, p->written_)) break;
    size_t len = p->len[i];
    if (!p->write_failed) {
      size_t off = 0;
      while (off < len) {
        ssize_t n = pwrite(p->file, p->buf[i] + off, len - off, p->position + (int64_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          int e = n < 0 ? errno : EIO;
          pthread_mutex_lock(&p->mu);
          p->write_failed = 1;
          p->write_err = e;
          pthread_mutex_unlock(&p->mu);
          request_stop(p);
          break;
        }
        off += (size_t)n;
      }
      if (!p->write_failed) {
        p->position += (int64_t)len;
        p->written += len;
        post(p, 0, len);
      }
    }
    pthread_mutex_lock(&p->mu);
    p->written_[i] = 1;
    release_batch(p, i);
    pthread_mutex_unlock(&p->mu);
  }
  pthread_join(p->reader, NULL);
  pthread_join(p->hasher, NULL);
  post(p, 1, 0);
  napi_release_threadsafe_function(p->tsfn, napi_tsfn_release);
  return NULL;
}

static void pump_free(napi_env env, pump_t *p) {
  /* Not while its threads may run: only an environment torn down under a running pump gets here so, and the
   * process is ending. */
  if (--p->refs > 0 || !p->done) return;
  for (int i = 0; i < NBATCH; i++) free(p->buf[i]);
  close(p->stopfd);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

static void set_number(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  if (napi_create_double(env, v, &n) == napi_ok) napi_set_named_property(env, obj, key, n);
}

static void set_string(napi_env env, napi_value obj, const char *key, const char *v) {
  napi_value s;
  if (napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &s) == napi_ok) napi_set_named_property(env, obj, key, s);
}

/* On the main thread: a progress report or the end. */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  pump_t *p = context;
  msg_t *m = data;
  if (env == NULL) {
    free(m);
    return;
  }
  napi_value global, cb, arg;
  napi_get_global(env, &global);
  if (!m->is_done) {
    napi_get_reference_value(env, p->on_progress, &cb);
    napi_create_double(env, (double)m->bytes, &arg);
    free(m);
    napi_call_function(env, global, cb, 1, &arg, NULL);
    return;
  }
  free(m);
  /* Both threads have ended (the writer joined the reader): the hasher is JavaScript's again. */
  pthread_join(p->writer, NULL);
  p->h->busy = 0;
  p->done = 1;
  napi_create_object(env, &arg);
  set_number(env, arg, "received", (double)p->received);
  set_number(env, arg, "written", (double)p->written);
  /* A failed write or hash is the reason, whatever the reader saw after it. */
  const char *where = p->write_failed ? "write" : p->hash_failed ? "hash" : p->where;
  int err = p->write_failed ? p->write_err : p->hash_failed ? 0 : p->err;
  if (where != NULL) {
    set_string(env, arg, "where", where);
    set_string(env, arg, "message", p->write_failed ? strerror(err) : p->hash_failed ? "EVP_DigestUpdate failed" : p->message != NULL ? p->message : "the pump failed");
    if (err != 0) set_number(env, arg, "errno", err); /* JavaScript names it (util.getSystemErrorName) */
  }
  napi_get_reference_value(env, p->on_done, &cb);
  napi_delete_reference(env, p->on_progress);
  napi_delete_reference(env, p->on_done);
  napi_delete_reference(env, p->hasher_ref);
  p->on_progress = p->on_done = p->hasher_ref = NULL;
  napi_call_function(env, global, cb, 1, &arg, NULL);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  pump_free(env, hint);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  pump_free(env, data);
}

static int get_int64(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d < 0 || d > 9007199254740991.0 || d != (double)(int64_t)d) return 0;
  *out = (int64_t)d;
  return 1;
}

/*
 * A pump that could not start: its references dropped, the hasher JavaScript's again, and the memory freed now
 * (no threadsafe function yet) or by the finalizers (the function's, once released, and the handle's, if made).
 * `handle_made`: the handle external exists (its finalizer holds one of the two references).
 */
static napi_value give_up(napi_env env, pump_t *p, int handle_made, const char *message) {
  p->h->busy = 0;
  p->done = 1;
  if (p->hasher_ref) napi_delete_reference(env, p->hasher_ref);
  if (p->on_progress) napi_delete_reference(env, p->on_progress);
  if (p->on_done) napi_delete_reference(env, p->on_done);
  p->hasher_ref = p->on_progress = p->on_done = NULL;
  if (!handle_made) p->refs = 1;
  if (p->tsfn != NULL) napi_release_threadsafe_function(p->tsfn, napi_tsfn_abort);
  else pump_free(env, p);
  napi_throw_error(env, NULL, message);
  return NULL;
}

napi_value pump_start(napi_env env, napi_callback_info info) {
  static const char *usage = "cascade_hash: pump(hasher, socketFd, fileFd, position, length, idleMs, gatherMs, maxDelayMs, batchBytes, onProgress, onDone)";
  size_t argc = 11;
  napi_value argv[11];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 11) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  hasher_t *h = get_hasher(env, argv[0]);
  if (h == NULL || !usable(env, h)) return NULL;
  int64_t sock, file, position, length, idle, gather, max_delay, batch;
  napi_valuetype t1, t2;
  napi_typeof(env, argv[9], &t1);
  napi_typeof(env, argv[10], &t2);
  if (!get_int64(env, argv[1], &sock) || !get_int64(env, argv[2], &file) || !get_int64(env, argv[3], &position) || !get_int64(env, argv[4], &length) ||
      !get_int64(env, argv[5], &idle) || !get_int64(env, argv[6], &gather) || !get_int64(env, argv[7], &max_delay) || !get_int64(env, argv[8], &batch) ||
      sock > INT32_MAX || file > INT32_MAX || idle < 1 || idle > INT32_MAX || gather > INT32_MAX || max_delay > INT32_MAX || batch < 4096 || batch > (1 << 30) ||
      t1 != napi_function || t2 != napi_function) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  pump_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    napi_throw_error(env, NULL, "cascade_hash: out of memory");
    return NULL;
  }
  p->h = h;
  p->sock = (int)sock;
  p->file = (int)file;
  p->position = position;
  p->remaining = (uint64_t)length;
  p->idle_ms = (int)idle;
  p->gather_ms = (int)gather;
  p->max_delay_ms = (int)max_delay;
  p->batch = (size_t)batch;
  p->refs = 2;
  /* The batches are allocated here, on the main thread's arena (a first malloc on each pump thread would give it
   * an arena of its own); their pages are touched only as bytes arrive. */
  for (int i = 0; i < NBATCH; i++) p->buf[i] = malloc(p->batch);
  p->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->stopfd < 0 || p->buf[0] == NULL || p->buf[1] == NULL) {
    if (p->stopfd >= 0) close(p->stopfd);
    for (int i = 0; i < NBATCH; i++) free(p->buf[i]);
    free(p);
    napi_throw_error(env, NULL, "cascade_hash: out of memory or descriptors for the pump");
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  napi_value name, handle;
  if (napi_create_reference(env, argv[0], 1, &p->hasher_ref) != napi_ok || napi_create_reference(env, argv[9], 1, &p->on_progress) != napi_ok ||
      napi_create_reference(env, argv[10], 1, &p->on_done) != napi_ok || napi_create_string_utf8(env, "cascade_pump", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, p, tsfn_finalize, p, call_js, &p->tsfn) != napi_ok) {
    p->tsfn = NULL;
    return give_up(env, p, 0, "cascade_hash: could not start the pump");
  }
  if (napi_create_external(env, p, handle_finalize, NULL, &handle) != napi_ok) return give_up(env, p, 0, "cascade_hash: napi_create_external failed");
  h->busy = 1;
  if (pthread_create(&p->reader, NULL, reader_main, p) != 0) return give_up(env, p, 1, "cascade_hash: could not start the pump's threads");
  int hasher_started = pthread_create(&p->hasher, NULL, hasher_main, p) == 0;
  if (!hasher_started || pthread_create(&p->writer, NULL, writer_main, p) != 0) {
    /* The reader (and the hasher) run: they are stopped and joined here, and nothing was written. The hash's
     * state is unknown (bytes may have been hashed): it is finished. */
    pthread_mutex_lock(&p->mu);
    p->write_failed = 1;
    pthread_mutex_unlock(&p->mu);
    request_stop(p);
    pthread_join(p->reader, NULL);
    if (hasher_started) pthread_join(p->hasher, NULL);
    h->finished = 1;
    return give_up(env, p, 1, "cascade_hash: could not start the pump's threads");
  }
  return handle;
}

napi_value pump_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "cascade_hash: pumpStop(handle)");
    return NULL;
  }
  pump_t *p = data;
  if (!p->done) request_stop(p);
  return NULL;
}
