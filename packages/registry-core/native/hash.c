/*
 * Digests computed on libuv's thread pool: a cold fill hashes every byte it receives, and on the JavaScript
 * thread SHA-256 was two thirds of that thread's work (a cold 512 MiB pull through one node took 680-720 ms
 * with the hash there, 430-500 ms with no hash at all; docs/performance.md). Here the hash runs beside the
 * thread that receives, with no copy and no second V8 isolate (a worker_threads hasher cost ~0.25 CPU-s more
 * per 512 MiB and 30-40 MiB of memory).
 *
 * The hash is OpenSSL's, the one inside Node (its EVP functions are exported to addons): the same code and
 * the same CPU extensions (SHA-NI) as node:crypto.
 *
 *   create(algorithm)            -> handle (an EVP_MD_CTX, freed with the handle)
 *   update(handle, buffers, cb)  hashes the buffers in order on a pool thread, then cb(error | null)
 *   updateSync(handle, buffer)   hashes on the calling thread
 *   digest(handle)               -> hex string; the handle is finished
 *   pump(handle, ...), pumpStop  a body read, hashed and written by threads of its own (pump.c)
 *
 * One handle takes one update (of any number of buffers) at a time: JavaScript (src/hashing.ts) queues them. The buffers are held by
 * references until the update is done, so JavaScript may drop its own.
 */
#include <node_api.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

typedef struct {
  hasher_t *h;
  napi_async_work work;
  napi_ref callback;
  napi_ref hold;   /* the array of buffers, kept alive until complete */
  napi_ref handle; /* the hasher's handle, likewise */
  int ok;
  size_t n;
  struct {
    const unsigned char *data;
    size_t len;
  } parts[]; /* the buffers' bytes, in order */
} job_t;

#define CHECK(env, call)                                        \
  do {                                                          \
    if ((call) != napi_ok) {                                    \
      napi_throw_error((env), NULL, "cascade_hash: " #call);    \
      return NULL;                                              \
    }                                                           \
  } while (0)

static void finalize_hasher(napi_env env, void *data, void *hint) {
  hasher_t *h = data;
  /* Never while an update runs: the job holds a reference to the handle until it completes. */
  EVP_MD_CTX_free(h->ctx);
  free(h);
}

hasher_t *get_hasher(napi_env env, napi_value v) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "cascade_hash: not a hasher");
    return NULL;
  }
  return data;
}

/* The arguments of update, updateSync or digest (the hasher first), and the hasher if it can take a call now. */
static hasher_t *hasher_call(napi_env env, napi_callback_info info, size_t want, napi_value *argv, const char *usage) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  hasher_t *h = get_hasher(env, argv[0]);
  return h != NULL && usable(env, h) ? h : NULL;
}

static napi_value create(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[32];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "cascade_hash: create(algorithm)");
    return NULL;
  }
  const EVP_MD *md = EVP_get_digestbyname(name);
  if (md == NULL) {
    napi_throw_error(env, NULL, "cascade_hash: unknown digest algorithm");
    return NULL;
  }
  hasher_t *h = calloc(1, sizeof *h);
  if (h == NULL) {
    napi_throw_error(env, NULL, "cascade_hash: out of memory");
    return NULL;
  }
  h->ctx = EVP_MD_CTX_new();
  if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, md, NULL) != 1) {
    EVP_MD_CTX_free(h->ctx);
    free(h);
    napi_throw_error(env, NULL, "cascade_hash: EVP_DigestInit_ex failed");
    return NULL;
  }
  napi_value out;
  if (napi_create_external(env, h, finalize_hasher, NULL, &out) != napi_ok) {
    EVP_MD_CTX_free(h->ctx);
    free(h);
    napi_throw_error(env, NULL, "cascade_hash: napi_create_external failed");
    return NULL;
  }
  return out;
}

int usable(napi_env env, hasher_t *h) {
  if (h->busy) {
    napi_throw_error(env, NULL, "cascade_hash: an update is already running on this hasher");
    return 0;
  }
  if (h->finished) {
    napi_throw_error(env, NULL, "cascade_hash: the hasher is finished");
    return 0;
  }
  return 1;
}

static void execute(napi_env env, void *data) {
  job_t *job = data;
  job->ok = 1;
  for (size_t i = 0; i < job->n; i++) {
    if (job->parts[i].len > 0 && EVP_DigestUpdate(job->h->ctx, job->parts[i].data, job->parts[i].len) != 1) {
      job->ok = 0;
      return;
    }
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *job = data;
  job->h->busy = 0;
  napi_value cb, global, arg;
  napi_get_reference_value(env, job->callback, &cb);
  napi_get_global(env, &global);
  if (status == napi_ok && job->ok) {
    napi_get_null(env, &arg);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, status == napi_ok ? "EVP_DigestUpdate failed" : "the hash job was cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &arg);
  }
  napi_delete_reference(env, job->callback);
  napi_delete_reference(env, job->hold);
  napi_delete_reference(env, job->handle);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, cb, 1, &arg, NULL);
}

static napi_value update(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  hasher_t *h = hasher_call(env, info, 3, argv, "cascade_hash: update(hasher, buffers, callback)");
  if (h == NULL) return NULL;
  uint32_t n = 0;
  bool is_array = false;
  napi_is_array(env, argv[1], &is_array);
  if (!is_array || napi_get_array_length(env, argv[1], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "cascade_hash: buffers must be an array of Buffers");
    return NULL;
  }
  job_t *job = calloc(1, sizeof *job + n * sizeof job->parts[0]);
  if (job == NULL) {
    napi_throw_error(env, NULL, "cascade_hash: out of memory");
    return NULL;
  }
  job->h = h;
  job->n = n;
  for (uint32_t i = 0; i < n; i++) {
    napi_value b;
    void *p = NULL;
    size_t len = 0;
    if (napi_get_element(env, argv[1], i, &b) != napi_ok || napi_get_buffer_info(env, b, &p, &len) != napi_ok) {
      free(job);
      napi_throw_type_error(env, NULL, "cascade_hash: buffers must be an array of Buffers");
      return NULL;
    }
    job->parts[i].data = p;
    job->parts[i].len = len;
  }
  napi_value name;
  if (napi_create_reference(env, argv[2], 1, &job->callback) != napi_ok || napi_create_reference(env, argv[1], 1, &job->hold) != napi_ok ||
      napi_create_reference(env, argv[0], 1, &job->handle) != napi_ok ||
      napi_create_string_utf8(env, "cascade_hash", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, job, &job->work) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    if (job->work) napi_delete_async_work(env, job->work);
    if (job->callback) napi_delete_reference(env, job->callback);
    if (job->hold) napi_delete_reference(env, job->hold);
    if (job->handle) napi_delete_reference(env, job->handle);
    free(job);
    napi_throw_error(env, NULL, "cascade_hash: could not queue the update");
    return NULL;
  }
  h->busy = 1;
  return NULL;
}

static napi_value update_sync(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  hasher_t *h = hasher_call(env, info, 2, argv, "cascade_hash: updateSync(hasher, buffer)");
  if (h == NULL) return NULL;
  void *p = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[1], &p, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "cascade_hash: updateSync(hasher, buffer)");
    return NULL;
  }
  if (len > 0 && EVP_DigestUpdate(h->ctx, p, len) != 1) {
    napi_throw_error(env, NULL, "cascade_hash: EVP_DigestUpdate failed");
    return NULL;
  }
  return NULL;
}

static napi_value digest(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  hasher_t *h = hasher_call(env, info, 1, argv, "cascade_hash: digest(hasher)");
  if (h == NULL) return NULL;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(h->ctx, md, &len) != 1) {
    napi_throw_error(env, NULL, "cascade_hash: EVP_DigestFinal_ex failed");
    return NULL;
  }
  h->finished = 1;
  static const char hex[] = "0123456789abcdef";
  char out[2 * EVP_MAX_MD_SIZE];
  for (unsigned int i = 0; i < len; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  napi_value s;
  CHECK(env, napi_create_string_latin1(env, out, 2 * len, &s));
  return s;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"create", NULL, create, NULL, NULL, NULL, napi_default, NULL},
      {"update", NULL, update, NULL, NULL, NULL, napi_default, NULL},
      {"updateSync", NULL, update_sync, NULL, NULL, NULL, napi_default, NULL},
      {"digest", NULL, digest, NULL, NULL, NULL, napi_default, NULL},
      {"pump", NULL, pump_start, NULL, NULL, NULL, napi_default, NULL},
      {"pumpStop", NULL, pump_stop, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
