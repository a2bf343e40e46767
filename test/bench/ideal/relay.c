/*
 * The least a verifying, storing cache must do on a miss, and nothing else: the yardstick of
 * test/bench/ideal.ts (docs/performance.md, "Cold on loopback against distribution").
 *
 *   relay PORT ORIGIN_HOST ORIGIN_PORT DIR store|nostore|sendfile [RING_MIB]
 *
 * For each client (one at a time) it GETs the same path from the origin, sends the client its headers at
 * once, and moves the body through one ring of memory (64 MiB, allocated and touched once) with a thread
 * per step, each running as soon as bytes are there: the receiver reads the origin's socket into the ring,
 * the hasher runs SHA-256 over it (OpenSSL), the writer writes it to a new file in DIR with pwrite (store
 * mode), the sender writes it to the client's socket (in sendfile mode: stores, and sends the client what is
 * written, from the file with sendfile(2), as Cascade does). The client's last byte waits for the digest, as in
 * Cascade; the file is neither synced nor kept (Cascade syncs after the last byte). Nothing here checks
 * what a product must check (the request, the headers, sizes, paths, errors beyond giving up): it is a
 * floor to measure against, never to be exposed to a network.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t RING = 64u << 20;
#define STEP (1u << 20)

static char *ring;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t total, recv_pos, hash_pos, write_pos, send_pos;
static int hashed_ok = -1; /* -1 not yet, 0 wrong, 1 right */
static int failed;
static int store, from_file;
static int file_fd = -1, file_fd_read = -1, client_fd = -1;
static unsigned char expected[32];

static void die(const char *what) {
  perror(what);
  exit(1);
}

static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Bytes that may be taken from the ring at `pos` when `upto` bytes are there: one contiguous stretch. */
static uint64_t stretch(uint64_t pos, uint64_t upto) {
  return min64(min64(upto - pos, STEP), RING - pos % RING);
}

static void advance(uint64_t *pos, uint64_t n) {
  pthread_mutex_lock(&mu);
  *pos += n;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void fail(void) {
  pthread_mutex_lock(&mu);
  failed = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

/*
 * Waits until bytes past `*pos` (the hasher's or the writer's position) are received; false once every byte
 * is past it or the transfer failed. `*at` and `*upto` get the position and how far bytes are there.
 */
static int wait_received(const uint64_t *pos, uint64_t *at, uint64_t *upto) {
  pthread_mutex_lock(&mu);
  while (!failed && *pos < total && recv_pos == *pos) pthread_cond_wait(&cv, &mu);
  *at = *pos;
  *upto = recv_pos;
  int more = !failed && *pos < total;
  pthread_mutex_unlock(&mu);
  return more;
}

static void *hasher(void *arg) {
  (void)arg;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  uint64_t pos, upto;
  while (wait_received(&hash_pos, &pos, &upto)) {
    uint64_t n = stretch(pos, upto);
    EVP_DigestUpdate(ctx, ring + pos % RING, n);
    advance(&hash_pos, n);
  }
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  pthread_mutex_lock(&mu);
  hashed_ok = !failed && memcmp(md, expected, 32) == 0;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  return NULL;
}

static void *writer(void *arg) {
  (void)arg;
  uint64_t pos, upto;
  while (wait_received(&write_pos, &pos, &upto)) {
    uint64_t n = stretch(pos, upto);
    ssize_t w = pwrite(file_fd, ring + pos % RING, n, (off_t)pos);
    if (w <= 0) {
      perror("pwrite");
      fail();
      return NULL;
    }
    advance(&write_pos, (uint64_t)w);
  }
  return NULL;
}

static void *sender(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&mu);
    uint64_t allowed;
    for (;;) {
      uint64_t there = from_file ? write_pos : recv_pos;
      allowed = hashed_ok == 1 ? min64(there, total) : min64(there, total - 1);
      if (failed || hashed_ok == 0 || send_pos == total || allowed > send_pos) break;
      pthread_cond_wait(&cv, &mu);
    }
    uint64_t pos = send_pos;
    int stop = failed || hashed_ok == 0 || send_pos == total;
    pthread_mutex_unlock(&mu);
    if (stop) return NULL;
    ssize_t w;
    if (from_file) {
      off_t at = (off_t)pos;
      w = sendfile(client_fd, file_fd_read, &at, allowed - pos);
    } else {
      w = write(client_fd, ring + pos % RING, stretch(pos, allowed));
    }
    if (w <= 0) {
      perror("write to client");
      fail();
      return NULL;
    }
    advance(&send_pos, (uint64_t)w);
  }
}

/* Reads up to the end of an HTTP head into buf; returns the head's length, and the bytes read past it in *extra. */
static size_t read_head(int fd, char *buf, size_t cap, size_t *extra) {
  size_t have = 0;
  for (;;) {
    ssize_t n = read(fd, buf + have, cap - 1 - have);
    if (n <= 0) return 0;
    have += (size_t)n;
    buf[have] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (end) {
      size_t head = (size_t)(end - buf) + 4;
      *extra = have - head;
      return head;
    }
    if (have == cap - 1) return 0;
  }
}

static int connect_to(const char *host, const char *port) {
  struct addrinfo hints = {0}, *res;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
  int fd = socket(res->ai_family, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    freeaddrinfo(res);
    if (fd >= 0) close(fd);
    return -1;
  }
  freeaddrinfo(res);
  return fd;
}

static void serve(int client, const char *host, const char *port, const char *dir) {
  char req[8192], head[8192], path[4096];
  size_t extra = 0;
  if (!read_head(client, req, sizeof req, &extra)) return;
  if (sscanf(req, "GET %4095s ", path) != 1) return;
  const char *hex = strstr(path, "sha256:");
  if (!hex || strlen(hex) < 7 + 64) return;
  for (int i = 0; i < 32; i++) sscanf(hex + 7 + 2 * i, "%2hhx", &expected[i]);
  int up = connect_to(host, port);
  if (up < 0) return;
  int len = snprintf(head, sizeof head, "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n", path, host, port);
  if (write(up, head, (size_t)len) != len) goto out;
  size_t h = read_head(up, head, sizeof head, &extra);
  if (!h || strncmp(head, "HTTP/1.1 200", 12) != 0) goto out;
  char *cl = strcasestr(head, "\r\ncontent-length:");
  if (!cl) goto out;
  total = strtoull(cl + 17, NULL, 10);
  recv_pos = hash_pos = write_pos = send_pos = 0;
  hashed_ok = -1;
  failed = 0;
  char file[4200];
  snprintf(file, sizeof file, "%s/fill-%d", dir, getpid());
  if (store) {
    file_fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (file_fd < 0) die("open");
    file_fd_read = open(file, O_RDONLY);
    if (file_fd_read < 0) die("open");
  }
  len = snprintf(req, sizeof req, "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", (unsigned long long)total);
  if (write(client, req, (size_t)len) != len) goto out;
  client_fd = client;
  memcpy(ring, head + h, extra);
  recv_pos = extra;
  pthread_t t[3];
  pthread_create(&t[0], NULL, hasher, NULL);
  pthread_create(&t[1], NULL, sender, NULL);
  if (store) pthread_create(&t[2], NULL, writer, NULL);
  while (recv_pos < total) {
    pthread_mutex_lock(&mu);
    for (;;) {
      uint64_t slowest = from_file ? hash_pos : min64(hash_pos, send_pos);
      if (store) slowest = min64(slowest, write_pos);
      if (failed || recv_pos - slowest < RING) break;
      pthread_cond_wait(&cv, &mu);
    }
    uint64_t slowest = from_file ? hash_pos : min64(hash_pos, send_pos);
    if (store) slowest = min64(slowest, write_pos);
    uint64_t pos = recv_pos, room = slowest + RING - recv_pos;
    int stop = failed;
    pthread_mutex_unlock(&mu);
    if (stop) break;
    uint64_t n = min64(min64(room, total - pos), RING - pos % RING);
    ssize_t r = read(up, ring + pos % RING, n);
    if (r <= 0) {
      fail();
      break;
    }
    advance(&recv_pos, (uint64_t)r);
  }
  pthread_join(t[0], NULL);
  pthread_join(t[1], NULL);
  if (store) pthread_join(t[2], NULL);
  if (hashed_ok != 1) fprintf(stderr, "relay: digest mismatch or failure\n");
out:
  if (store && file_fd >= 0) {
    close(file_fd);
    close(file_fd_read);
    unlink(file);
    file_fd = -1;
  }
  close(up);
}

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: relay PORT ORIGIN_HOST ORIGIN_PORT DIR store|nostore|sendfile [RING_MIB]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  from_file = strcmp(argv[5], "sendfile") == 0;
  store = from_file || strcmp(argv[5], "store") == 0;
  if (argc == 7) RING = (uint64_t)atoi(argv[6]) << 20;
  ring = malloc(RING);
  if (!ring) die("malloc");
  memset(ring, 0, RING);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)atoi(argv[1]));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) die("bind/listen");
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    serve(c, argv[2], argv[3], argv[4]);
    shutdown(c, SHUT_WR);
    close(c);
  }
}
