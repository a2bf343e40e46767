/* What hash.c and pump.c share: a running digest (an EVP_MD_CTX) and the checks of a hasher argument. */
#ifndef CASCADE_HASH_H
#define CASCADE_HASH_H
#include <node_api.h>
#include <openssl/evp.h>

typedef struct {
  EVP_MD_CTX *ctx;
  int busy;     /* an update is on the pool, or a pump runs */
  int finished; /* digest() was called */
} hasher_t;

/* The hasher behind a handle, or NULL with a TypeError thrown. */
hasher_t *get_hasher(napi_env env, napi_value v);
/* 1 when the hasher can take a call now, else 0 with an error thrown. */
int usable(napi_env env, hasher_t *h);

napi_value pump_start(napi_env env, napi_callback_info info);
napi_value pump_stop(napi_env env, napi_callback_info info);
#endif
