// The floor of a 1 MiB download on this machine: an HTTP/1.1 server with no
// application, no Python and no parsing beyond finding the end of a request
// head. Every request gets the same bytes as bench/apps.py's `stream` app
// (status line, content-type, chunked framing, 16 chunks of 64 KiB), sent
// from one prebuilt buffer with plain send(), the way any server sends a body
// that lives in user memory. What this process costs per request is what the
// kernel costs; bench/download_ceiling.py measures it next to Pronghorn and
// uvicorn to show how far above uvicorn any server can get here.
//
// Not part of the product: a measuring tool, single-threaded, level-triggered
// epoll, one connection table, HTTP/1.1 keep-alive only.
//
//     cc -O2 -Wall -Wextra -o ceiling_server ceiling_server.c && ./ceiling_server PORT [BYTES_PER_SEND|sendfile]

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

enum { CHUNK = 64 * 1024, CHUNKS = 16, MAX_FDS = 65536, IN_CAP = 8192 };

struct conn {
  char in[IN_CAP];
  size_t in_len;
  size_t pending;   // complete requests not yet answered
  size_t sent;      // bytes of the current response already sent
  int close_after;  // "Connection: close" seen: no more requests are read
  int eof;          // the client shut down its side: close once all is sent
  int want_out;
};

static struct conn *conns[MAX_FDS];
static char *response;
static size_t response_len;
static size_t send_max;   // bytes per send() call: the whole response, or less
static int file_fd = -1;  // "sendfile" mode: the response in a memfd, sent with no copy on this side
static int ep;

static void die(const char *what) {
  fprintf(stderr, "ceiling_server: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void build_response(void) {
  static const char head[] =
      "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
      "transfer-encoding: chunked\r\n\r\n";
  static const char chunk_head[] = "10000\r\n";  // 64 KiB in hex
  response_len = sizeof head - 1 + CHUNKS * (sizeof chunk_head - 1 + CHUNK + 2) + 5;
  response = malloc(response_len);
  if (!response) die("malloc");
  char *p = response;
  memcpy(p, head, sizeof head - 1);
  p += sizeof head - 1;
  for (int i = 0; i < CHUNKS; i++) {
    memcpy(p, chunk_head, sizeof chunk_head - 1);
    p += sizeof chunk_head - 1;
    memset(p, 'y', CHUNK);  // the byte apps.stream sends
    p += CHUNK;
    memcpy(p, "\r\n", 2);
    p += 2;
  }
  memcpy(p, "0\r\n\r\n", 5);
}

static void drop(int fd) {
  free(conns[fd]);
  conns[fd] = NULL;
  close(fd);  // also removes it from the epoll set
}

static void set_out(int fd, struct conn *c, int on) {
  if (c->want_out == on) return;
  struct epoll_event ev = {.events = (c->eof ? 0 : EPOLLIN) | (on ? EPOLLOUT : 0), .data.fd = fd};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl MOD");
  c->want_out = on;
}

// Sends pending responses until done or the socket is full. Returns -1 when the
// connection is to be dropped.
static int flush(int fd, struct conn *c) {
  while (c->pending) {
    size_t len = response_len - c->sent;
    if (len > send_max) len = send_max;
    ssize_t n;
    if (file_fd >= 0) {
      off_t off = (off_t)c->sent;
      n = sendfile(fd, file_fd, &off, len);
    } else {
      n = send(fd, response + c->sent, len, MSG_NOSIGNAL);
    }
    if (n < 0) {
      if (errno == EAGAIN) {
        set_out(fd, c, 1);
        return 0;
      }
      return -1;
    }
    c->sent += (size_t)n;
    if (c->sent == response_len) {
      c->sent = 0;
      c->pending--;
      if ((c->close_after || c->eof) && !c->pending) return -1;
    }
  }
  if (c->close_after || c->eof) return -1;  // nothing more to send or to read
  set_out(fd, c, 0);
  return 0;
}

// Whether the request head [head, end) asks for "Connection: close" (any case).
static int wants_close(char *head, char *end) {
  char saved = *end;
  *end = '\0';
  int close = 0;
  for (char *line = strcasestr(head, "\nconnection:"); line; line = strcasestr(line + 1, "\nconnection:")) {
    char *value = line + 12, *eol = strchr(value, '\r');
    if (eol) *eol = '\0';
    if (strcasestr(value, "close")) close = 1;
    if (eol) *eol = '\r';
  }
  *end = saved;
  return close;
}

// Counts complete request heads (GET, no body) in the input; keeps a partial one.
static int on_readable(int fd, struct conn *c) {
  for (;;) {
    if (c->in_len == IN_CAP) return -1;  // a head this long is not what wrk sends
    size_t room = IN_CAP - c->in_len;
    ssize_t n = recv(fd, c->in + c->in_len, room, 0);
    if (n == 0) {  // the client is done sending: answer what it asked, then close
      c->eof = 1;
      c->want_out = -1;  // forces set_out to drop EPOLLIN
      break;
    }
    if (n < 0) {
      if (errno == EAGAIN) break;
      return -1;
    }
    c->in_len += (size_t)n;
    char *start = c->in;
    char *end;
    while (!c->close_after && (end = memmem(start, c->in_len - (size_t)(start - c->in), "\r\n\r\n", 4))) {
      if (wants_close(start, end)) c->close_after = 1;
      c->pending++;
      start = end + 4;
    }
    c->in_len -= (size_t)(start - c->in);
    memmove(c->in, start, c->in_len);
    if ((size_t)n < room || c->close_after) break;  // drained, or nothing more to read
  }
  return flush(fd, c);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s PORT [BYTES_PER_SEND]\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  build_response();
  send_max = argc == 3 ? (size_t)strtoul(argv[2], NULL, 10) : response_len;
  if (send_max == 0) send_max = response_len;
  if (argc == 3 && strcmp(argv[2], "sendfile") == 0) {
    // Not open to a server whose body is a Python bytes object: shown as the floor
    // of the sender's cost (page-cache pages go to the socket without a copy).
    file_fd = memfd_create("ceiling-response", 0);
    if (file_fd < 0) die("memfd_create");
    if (write(file_fd, response, response_len) != (ssize_t)response_len) die("write memfd");
  }
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(ls, 1024) < 0) die("listen");
  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) < 0) die("epoll_ctl ADD listener");
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == ls) {
        int cfd;
        while ((cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (cfd >= MAX_FDS || !(conns[cfd] = calloc(1, sizeof(struct conn)))) {
            close(cfd);
            continue;
          }
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev) < 0) die("epoll_ctl ADD");
        }
        // EAGAIN: drained. Anything else but a broken listener (EMFILE, a
        // network error on one connection...) ends this batch, not the server.
        if (errno == EBADF || errno == EINVAL) die("accept4");
        continue;
      }
      struct conn *c = conns[fd];
      if (!c) continue;
      int rc = 0;
      if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        rc = on_readable(fd, c);
      else if (events[i].events & EPOLLOUT)
        rc = flush(fd, c);
      if (rc < 0) drop(fd);
    }
  }
}
