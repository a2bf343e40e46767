/*
 * Blob bodies sent with sendfile(2) from worker threads, the way nginx sends static files: the bytes go
 * from the page cache to the socket inside the kernel, and the JavaScript thread never touches them.
 *
 * JavaScript hands over a socket and a file by descriptor. Both are dup()ed at once, so Node may close its
 * own descriptors at any moment (a client that leaves) without a reused number ever being written to.
 * Each worker thread owns an epoll set of non-blocking sockets and sends at most CHUNK bytes per call to
 * each writable socket in turn, so one fast client does not starve the others. A finished, failed,
 * cancelled or stalled transfer is reported back through one thread-safe function: (id, errno, sent).
 *
 * Linux only; elsewhere the module loads and says so (available() is false), and Cascade streams.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (2 << 20)
#define MAX_THREADS 16

typedef struct job {
  uint32_t id;
  int sock, file;
  off_t offset;
  int64_t remaining, sent;
  int64_t stall_ms, last_progress;
  struct job *next;
} job_t;

typedef struct {
  pthread_t thread;
  int epfd, wakefd;
  pthread_mutex_t lock;
  job_t *incoming;   /* submitted, not yet taken by the thread (under lock) */
  uint32_t *cancels; /* ids to cancel (under lock) */
  size_t ncancels, capcancels;
  job_t *active;     /* owned by the thread */
} worker_t;

typedef struct {
  uint32_t id;
  int err;
  double sent;
} done_t;

static worker_t workers[MAX_THREADS];
static int nworkers = 0;
static uint32_t next_id = 1;
static napi_threadsafe_function tsfn = NULL;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake(worker_t *w) {
  uint64_t one = 1;
  ssize_t r;
  do r = write(w->wakefd, &one, sizeof one); while (r < 0 && errno == EINTR);
}

static void finish(worker_t *w, job_t *job, int err) {
  epoll_ctl(w->epfd, EPOLL_CTL_DEL, job->sock, NULL);
  close(job->sock);
  close(job->file);
  job_t **p = &w->active;
  while (*p && *p != job) p = &(*p)->next;
  if (*p) *p = job->next;
  done_t *d = malloc(sizeof *d);
  if (d) {
    d->id = job->id;
    d->err = err;
    d->sent = (double)job->sent;
    if (napi_call_threadsafe_function(tsfn, d, napi_tsfn_nonblocking) != napi_ok) free(d);
  }
  free(job);
}

/* One sendfile call for a writable socket. */
static void pump(worker_t *w, job_t *job, int64_t now) {
  size_t want = job->remaining < CHUNK ? (size_t)job->remaining : CHUNK;
  ssize_t n = sendfile(job->sock, job->file, &job->offset, want);
  if (n > 0) {
    job->remaining -= n;
    job->sent += n;
    job->last_progress = now;
    if (job->remaining == 0) finish(w, job, 0);
  } else if (n == 0) {
    finish(w, job, ENODATA); /* the file is shorter than the length promised to the client */
  } else if (errno != EAGAIN && errno != EINTR) {
    finish(w, job, errno);
  }
}

static void *run(void *arg) {
  worker_t *w = arg;
  struct epoll_event events[64];
  int64_t last_sweep = now_ms();
  for (;;) {
    pthread_mutex_lock(&w->lock);
    job_t *in = w->incoming;
    w->incoming = NULL;
    size_t ncancels = w->ncancels;
    uint32_t cancels[64];
    if (ncancels > 64) ncancels = 64;
    memcpy(cancels, w->cancels, ncancels * sizeof *cancels);
    memmove(w->cancels, w->cancels + ncancels, (w->ncancels - ncancels) * sizeof *cancels);
    w->ncancels -= ncancels;
    int more = w->ncancels > 0;
    pthread_mutex_unlock(&w->lock);
    if (more) wake(w);

    int64_t now = now_ms();
    while (in) {
      job_t *job = in;
      in = in->next;
      job->next = w->active;
      w->active = job;
      job->last_progress = now;
      struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = job };
      if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, job->sock, &ev) != 0) finish(w, job, errno);
    }
    for (size_t i = 0; i < ncancels; i++) {
      for (job_t *job = w->active; job; job = job->next) {
        if (job->id == cancels[i]) {
          finish(w, job, ECANCELED);
          break;
        }
      }
    }

    int n = epoll_wait(w->epfd, events, 64, 1000);
    now = now_ms();
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        uint64_t count;
        ssize_t r = read(w->wakefd, &count, sizeof count);
        (void)r;
        continue;
      }
      pump(w, events[i].data.ptr, now);
    }
    if (now - last_sweep >= 1000) {
      last_sweep = now;
      job_t *job = w->active;
      while (job) {
        job_t *next = job->next;
        if (job->stall_ms > 0 && now - job->last_progress > job->stall_ms) finish(w, job, ETIMEDOUT);
        job = next;
      }
    }
  }
  return NULL;
}

static void call_js(napi_env env, napi_value fn, void *context, void *data) {
  (void)context;
  done_t *d = data;
  if (env != NULL && fn != NULL) {
    napi_value args[3], undefined;
    napi_create_uint32(env, d->id, &args[0]);
    napi_create_int32(env, d->err, &args[1]);
    napi_create_double(env, d->sent, &args[2]);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, fn, 3, args, NULL);
  }
  free(d);
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

/* init(dispatch, threads): starts the worker threads; dispatch(id, errno, sent) hears every result. */
static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (tsfn != NULL) {
    napi_throw_error(env, NULL, "sendfile is already initialised in this process");
    return NULL;
  }
  int32_t threads = 1;
  if (argc < 2 || napi_get_value_int32(env, argv[1], &threads) != napi_ok || threads < 1 || threads > MAX_THREADS) {
    napi_throw_range_error(env, NULL, "threads must be an integer from 1 to 16");
    return NULL;
  }
  napi_value name;
  napi_create_string_utf8(env, "cascade-sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &tsfn) != napi_ok) return NULL;
  /* Open transfers keep their sockets, and so the process, alive; the function itself does not. */
  napi_unref_threadsafe_function(env, tsfn);
  for (int i = 0; i < threads; i++) {
    worker_t *w = &workers[i];
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->epfd < 0 || w->wakefd < 0) return throw_errno(env, "sendfile worker", errno);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int rc = pthread_create(&w->thread, &attr, run, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) return throw_errno(env, "sendfile worker", rc);
    nworkers = i + 1;
  }
  return NULL;
}

/* send(socketFd, fileFd, offset, length, stallMs) -> id, or -errno when a descriptor cannot be duplicated */
static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (nworkers == 0) {
    napi_throw_error(env, NULL, "sendfile is not initialised");
    return NULL;
  }
  int32_t sock, file;
  int64_t offset, length, stall;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_int32(env, argv[1], &file) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_get_value_int64(env, argv[4], &stall) != napi_ok || sock < 0 || file < 0 || offset < 0 || length <= 0) {
    napi_throw_type_error(env, NULL, "send(socketFd, fileFd, offset, length, stallMs) takes non-negative integers and a positive length");
    return NULL;
  }
  job_t *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, "sendfile", ENOMEM);
  napi_value result;
  job->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (job->sock < 0) {
    napi_create_int32(env, -errno, &result);
    free(job);
    return result;
  }
  job->file = fcntl(file, F_DUPFD_CLOEXEC, 0);
  if (job->file < 0) {
    napi_create_int32(env, -errno, &result);
    close(job->sock);
    free(job);
    return result;
  }
  uint32_t id = job->id = next_id++;
  if (next_id > 0x7fffffff) next_id = 1;
  job->offset = (off_t)offset;
  job->remaining = length;
  job->stall_ms = stall;
  worker_t *w = &workers[job->id % (uint32_t)nworkers];
  pthread_mutex_lock(&w->lock);
  job->next = w->incoming;
  w->incoming = job;
  pthread_mutex_unlock(&w->lock);
  wake(w);
  /* The job belongs to the worker from here: it may be finished and freed already. */
  napi_create_uint32(env, id, &result);
  return result;
}

/* cancel(id): the transfer ends with ECANCELED (or has already ended: nothing happens). */
static napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t id;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok || nworkers == 0) return NULL;
  worker_t *w = &workers[id % (uint32_t)nworkers];
  pthread_mutex_lock(&w->lock);
  if (w->ncancels == w->capcancels) {
    size_t cap = w->capcancels ? w->capcancels * 2 : 16;
    uint32_t *grown = realloc(w->cancels, cap * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&w->lock);
      return throw_errno(env, "cancel", ENOMEM);
    }
    w->cancels = grown;
    w->capcancels = cap;
  }
  w->cancels[w->ncancels++] = id;
  pthread_mutex_unlock(&w->lock);
  wake(w);
  return NULL;
}
#endif

static napi_value js_available(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#ifdef __linux__
  napi_get_boolean(env, true, &result);
#else
  napi_get_boolean(env, false, &result);
#endif
  return result;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
    { "available", NULL, js_available, NULL, NULL, NULL, napi_default, NULL },
#ifdef __linux__
    { "init", NULL, js_init, NULL, NULL, NULL, napi_default, NULL },
    { "send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL },
    { "cancel", NULL, js_cancel, NULL, NULL, NULL, napi_default, NULL },
#endif
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
