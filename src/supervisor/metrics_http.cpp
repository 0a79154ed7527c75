#include "supervisor/metrics_http.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string_view>

#include "engine/log.h"
#include "engine/net/listener.h"

namespace pronghorn::supervisor {

namespace {

constexpr int kListenBacklog = 64;
constexpr int kAcceptBatch = 16;

uint64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

std::string plain_response(const char *status_line, std::string_view body, const char *extra_header = "") {
  std::string out = "HTTP/1.1 ";
  out.append(status_line);
  out.append("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
  out.append(std::to_string(body.size()));
  out.append("\r\nConnection: close\r\n");
  out.append(extra_header);
  out.append("\r\n");
  out.append(body);
  return out;
}

// Where the request head ends (just after its blank line), or npos.
size_t head_end(std::string_view data) {
  size_t crlf = data.find("\r\n\r\n");
  size_t lf = data.find("\n\n");
  if (crlf != std::string_view::npos && (lf == std::string_view::npos || crlf + 2 <= lf)) return crlf + 4;
  if (lf != std::string_view::npos) return lf + 2;
  return std::string_view::npos;
}

}  // namespace

std::string metrics_response(std::string_view head, const MetricsEndpoint::Render &render) {
  size_t eol = head.find('\n');
  std::string_view line = head.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0)
    return plain_response("400 Bad Request", "Bad request\n");
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view path = target.substr(0, target.find('?'));
  if (path != "/metrics") return plain_response("404 Not Found", "Not found: the metrics are at /metrics\n");
  if (method != "GET" && method != "HEAD")
    return plain_response("405 Method Not Allowed", "Method not allowed\n", "Allow: GET, HEAD\r\n");
  std::string body = render();
  std::string out =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
      "Cache-Control: no-store\r\nContent-Length: ";
  out.append(std::to_string(body.size()));
  out.append("\r\nConnection: close\r\n\r\n");
  if (method == "GET") out.append(body);
  return out;
}

MetricsEndpoint::~MetricsEndpoint() {
  for (auto &c : connections_) ::close(c->fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

bool MetricsEndpoint::open(int epoll_fd, const std::string &host, int port, Render render) {
  epoll_fd_ = epoll_fd;
  render_ = std::move(render);
  int fd = listen_tcp(host, port, kListenBacklog, false, "--metrics-bind");
  if (fd < 0) return false;
  // Port 0 asks the kernel for one; the log line and the tests need which.
  port_ = port != 0 ? port : local_address(fd).port;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
    log_errno(LogLevel::Error, errno, "--metrics-bind: epoll_ctl(ADD) of the metrics socket failed");
    ::close(fd);
    return false;
  }
  listen_fd_ = fd;
  return true;
}

bool MetricsEndpoint::owns(int fd) const {
  if (fd < 0) return false;
  if (fd == listen_fd_) return true;
  for (const auto &c : connections_)
    if (c->fd == fd) return true;
  return false;
}

MetricsEndpoint::Connection *MetricsEndpoint::find(int fd) {
  for (auto &c : connections_)
    if (c->fd == fd) return c.get();
  return nullptr;
}

void MetricsEndpoint::on_event(int fd, uint32_t events) {
  if (fd == listen_fd_) {
    on_accept();
    return;
  }
  Connection *c = find(fd);
  if (c == nullptr) return;
  if (c->responding) {
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(*c);
    return;
  }
  on_readable(*c);
}

void MetricsEndpoint::on_accept() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      log_errno(LogLevel::Warning, errno, "--metrics: accept failed");
      return;
    }
    if (connections_.size() >= kMaxConnections) {
      // Scrapers come once every few seconds: this many at once is a flood.
      log(LogLevel::Debug, "--metrics: %zu connections already open; closing a new one", connections_.size());
      ::close(fd);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      log_errno(LogLevel::Warning, errno, "--metrics: epoll_ctl(ADD) of a connection failed");
      ::close(fd);
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->deadline_ms = monotonic_ms() + kConnectionTimeoutMs;
    connections_.push_back(std::move(c));
  }
}

void MetricsEndpoint::on_readable(Connection &c) {
  char buf[2048];
  while (true) {
    ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      if (errno != ECONNRESET) log_errno(LogLevel::Debug, errno, "--metrics: read failed");
      close_connection(c.fd);
      return;
    }
    if (n == 0) {
      close_connection(c.fd);  // the client left before sending a whole head
      return;
    }
    size_t take = std::min(static_cast<size_t>(n), kMaxHead - c.in.size());
    c.in.append(buf, take);
    size_t end = head_end(c.in);
    if (end != std::string::npos) {
      c.out = metrics_response(std::string_view(c.in).substr(0, end), render_);
      respond(c);
      return;
    }
    if (c.in.size() >= kMaxHead) {
      c.out = plain_response("431 Request Header Fields Too Large", "Request head too large\n");
      respond(c);
      return;
    }
  }
}

void MetricsEndpoint::respond(Connection &c) {
  c.responding = true;
  c.in.clear();
  c.in.shrink_to_fit();
  on_writable(c);
}

void MetricsEndpoint::on_writable(Connection &c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.fd = c.fd;
        if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) < 0) {
          log_errno(LogLevel::Warning, errno, "--metrics: epoll_ctl(MOD) of a connection failed");
          close_connection(c.fd);
        }
        return;
      }
      if (errno != EPIPE && errno != ECONNRESET) log_errno(LogLevel::Debug, errno, "--metrics: send failed");
      close_connection(c.fd);
      return;
    }
    c.sent += static_cast<size_t>(n);
  }
  // Whatever the client sent after its head is read and dropped first, so
  // that the close is a FIN and not a reset that could lose the response.
  char drain[512];
  while (::read(c.fd, drain, sizeof drain) > 0) {
  }
  close_connection(c.fd);
}

void MetricsEndpoint::close_connection(int fd) {
  for (auto it = connections_.begin(); it != connections_.end(); ++it)
    if ((*it)->fd == fd) {
      // Removed from the epoll set first: a worker forked meanwhile may still
      // hold a copy of the fd, which would keep it registered after close.
      if (epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr) < 0)
        log_errno(LogLevel::Debug, errno, "--metrics: epoll_ctl(DEL) of a connection failed");
      ::close(fd);
      connections_.erase(it);
      return;
    }
}

void MetricsEndpoint::on_tick(uint64_t now_ms) {
  for (size_t i = 0; i < connections_.size();) {
    if (now_ms >= connections_[i]->deadline_ms) {
      log(LogLevel::Debug, "--metrics: closing a connection after %llu s",
          static_cast<unsigned long long>(kConnectionTimeoutMs / 1000));
      close_connection(connections_[i]->fd);
      continue;
    }
    ++i;
  }
}

void MetricsEndpoint::close_in_child() {
  for (auto &c : connections_) ::close(c->fd);
  connections_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

}  // namespace pronghorn::supervisor
