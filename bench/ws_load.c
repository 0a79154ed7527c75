/* A WebSocket load client for bench/ws_bench.py, in C so that the client is
 * not the bottleneck (a Python client spends more CPU per message than the
 * servers under test). One thread, epoll, many connections.
 *
 *   ws_load PORT PATH MODE CONNS SECONDS SIZE BINARY DEFLATE
 *     MODE echo:      each connection sends a message and waits for its echo, again and again
 *     MODE broadcast: connection 0 sends; the next message goes once every connection got it
 *     MODE idle:      open CONNS connections, print "ready", hold them SECONDS (answering pings)
 *     BINARY 1: binary messages, else text; DEFLATE 1: offer permessage-deflate (our messages
 *     go uncompressed, as RFC 7692 allows; the server's compressed ones are inflated)
 *
 * Prints one JSON line: {"messages": N, "seconds": S, "errors": E, "deflate": 0|1}.
 * Build: cc -O2 -o ws_load ws_load.c -lz
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

typedef struct {
  int fd;
  unsigned char *in;
  size_t in_len, in_cap;
  z_stream inflate;
  int inflate_ready;
  int waiting; /* echo: a message is out, its echo not yet back */
} conn_t;

static int g_deflate, g_binary, g_reset_inflate;
static size_t g_size;
static unsigned char *g_frame; /* our message as a masked frame, prebuilt */
static size_t g_frame_len;
static long g_errors;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        /* The socket buffer is full (large messages): wait until it drains. */
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
        continue;
      }
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static size_t build_frame(unsigned char *out, int opcode, const unsigned char *payload, size_t len) {
  size_t h = 0;
  out[h++] = (unsigned char)(0x80 | opcode);
  if (len < 126) {
    out[h++] = (unsigned char)(0x80 | len);
  } else if (len < 65536) {
    out[h++] = 0x80 | 126;
    out[h++] = (unsigned char)(len >> 8);
    out[h++] = (unsigned char)len;
  } else {
    out[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; --i) out[h++] = (unsigned char)((uint64_t)len >> (8 * i));
  }
  unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
  memcpy(out + h, mask, 4);
  h += 4;
  for (size_t i = 0; i < len; ++i) out[h + i] = payload[i] ^ mask[i & 3];
  return h + len;
}

static int connect_ws(int port, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                   path, port, g_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
  if (write_all(fd, req, (size_t)n) < 0) {
    close(fd);
    return -1;
  }
  /* Read the 101 head byte by byte (once per connection: cheap enough). */
  char head[2048];
  size_t len = 0;
  while (len < sizeof head - 1) {
    ssize_t r = read(fd, head + len, 1);
    if (r <= 0) {
      close(fd);
      return -1;
    }
    len += (size_t)r;
    if (len >= 4 && memcmp(head + len - 4, "\r\n\r\n", 4) == 0) break;
  }
  head[len] = 0;
  if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
    fprintf(stderr, "handshake refused: %.80s\n", head);
    close(fd);
    return -1;
  }
  if (g_deflate) {
    /* Our inflate context is reset per message only if the server says so. */
    for (char *p = head; *p; ++p) *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    g_reset_inflate = strstr(head, "server_no_context_takeover") != NULL;
    if (strstr(head, "permessage-deflate") == NULL) g_deflate = 0;
  }
  return fd;
}

/* Parses complete frames in c->in; returns the number of whole data messages
 * (FIN frames of text/binary/continuation), -1 on a close or an error. */
static int consume_frames(conn_t *c) {
  int messages = 0;
  size_t off = 0;
  while (c->in_len - off >= 2) {
    unsigned char *p = c->in + off;
    int fin = p[0] & 0x80, rsv1 = p[0] & 0x40, opcode = p[0] & 0x0f;
    uint64_t len = p[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
      if (c->in_len - off < 4) break;
      len = ((uint64_t)p[2] << 8) | p[3];
      h = 4;
    } else if (len == 127) {
      if (c->in_len - off < 10) break;
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
      h = 10;
    }
    if (c->in_len - off < h + len) break;
    unsigned char *payload = p + h;
    if (opcode == 0x8) return -1;
    if (opcode == 0x9) { /* ping: pong with the same payload */
      unsigned char pong[256];
      size_t n = build_frame(pong, 0xA, payload, len > 125 ? 125 : len);
      write_all(c->fd, pong, n);
    } else if (opcode <= 0x2) {
      if (rsv1 && g_deflate) {
        if (!c->inflate_ready) {
          inflateInit2(&c->inflate, -15);
          c->inflate_ready = 1;
        }
        static unsigned char out[1 << 16];
        static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
        for (int part = 0; part < 2; ++part) {
          c->inflate.next_in = part == 0 ? payload : (unsigned char *)tail;
          c->inflate.avail_in = part == 0 ? (uInt)len : 4;
          do {
            c->inflate.next_out = out;
            c->inflate.avail_out = sizeof out;
            int rc = inflate(&c->inflate, Z_SYNC_FLUSH);
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
              ++g_errors;
              break;
            }
          } while (c->inflate.avail_out == 0);
        }
        if (g_reset_inflate) inflateReset(&c->inflate);
      }
      if (fin) ++messages;
    }
    off += h + len;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
  return messages;
}

static int read_conn(conn_t *c) {
  for (;;) {
    if (c->in_cap - c->in_len < 65536) {
      c->in_cap = c->in_cap * 2 + 65536;
      c->in = realloc(c->in, c->in_cap);
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n > 0) {
      c->in_len += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EAGAIN) break;
    return -1;
  }
  return consume_frames(c);
}

int main(int argc, char **argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: ws_load PORT PATH echo|broadcast|idle CONNS SECONDS SIZE BINARY DEFLATE\n");
    return 2;
  }
  int port = atoi(argv[1]);
  const char *path = argv[2], *mode = argv[3];
  int conns = atoi(argv[4]);
  double seconds = atof(argv[5]);
  g_size = (size_t)atol(argv[6]);
  g_binary = atoi(argv[7]);
  g_deflate = atoi(argv[8]);

  unsigned char *payload = malloc(g_size + 1);
  for (size_t i = 0; i < g_size; ++i) payload[i] = (unsigned char)('a' + (i * 7 + i / 13) % 26);
  g_frame = malloc(g_size + 14);
  g_frame_len = build_frame(g_frame, g_binary ? 0x2 : 0x1, payload, g_size);

  conn_t *cs = calloc((size_t)conns, sizeof *cs);
  int ep = epoll_create1(0);
  for (int i = 0; i < conns; ++i) {
    cs[i].fd = connect_ws(port, path);
    if (cs[i].fd < 0) {
      fprintf(stderr, "connection %d failed\n", i);
      return 1;
    }
    fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  if (strcmp(mode, "idle") == 0) {
    printf("ready\n");
    fflush(stdout);
  }
  long messages = 0;
  int broadcast = strcmp(mode, "broadcast") == 0, echo = strcmp(mode, "echo") == 0;
  long round_left = 0;
  double start = now_s(), end = start + seconds;
  if (echo)
    for (int i = 0; i < conns; ++i) {
      write_all(cs[i].fd, g_frame, g_frame_len);
      cs[i].waiting = 1;
    }
  if (broadcast) {
    write_all(cs[0].fd, g_frame, g_frame_len);
    round_left = conns;
  }
  struct epoll_event events[256];
  while (now_s() < end) {
    int n = epoll_wait(ep, events, 256, 100);
    for (int k = 0; k < n; ++k) {
      conn_t *c = &cs[events[k].data.u32];
      int got = read_conn(c);
      if (got < 0) {
        ++g_errors;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        continue;
      }
      if (got == 0) continue;
      messages += got;
      if (echo) {
        write_all(c->fd, g_frame, g_frame_len);
      } else if (broadcast) {
        round_left -= got;
        if (round_left <= 0) {
          write_all(cs[0].fd, g_frame, g_frame_len);
          round_left = conns;
        }
      }
    }
  }
  double elapsed = now_s() - start;
  printf("{\"messages\": %ld, \"seconds\": %.3f, \"errors\": %ld, \"deflate\": %d}\n", messages, elapsed, g_errors,
         g_deflate);
  for (int i = 0; i < conns; ++i) close(cs[i].fd);
  return 0;
}
