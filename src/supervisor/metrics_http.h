// The supervisor's /metrics endpoint (--metrics-bind): a deliberately tiny
// HTTP/1 server inside the supervisor's epoll loop. It answers GET (and
// HEAD) /metrics with the text a callback renders, anything else with 404 or
// 405, and closes each connection after one response. Everything is
// non-blocking and bounded, so a slow or hostile client cannot stall the
// supervisor: a request head of at most 4 KiB, at most 16 connections at
// once (more are closed at accept), and 10 s per connection from accept to
// close.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pronghorn::supervisor {

class MetricsEndpoint {
 public:
  using Render = std::function<std::string()>;

  MetricsEndpoint() = default;
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint &) = delete;
  MetricsEndpoint &operator=(const MetricsEndpoint &) = delete;

  // Binds host:port and adds the socket to `epoll_fd` (events carry the fd
  // in data.fd). False after logging one line that names --metrics-bind.
  bool open(int epoll_fd, const std::string &host, int port, Render render);
  bool is_open() const { return listen_fd_ >= 0; }
  // The port bound (useful with port 0).
  int port() const { return port_; }
  // Whether `fd` is the endpoint's (its listening socket or a connection).
  bool owns(int fd) const;
  void on_event(int fd, uint32_t events);
  // Closes connections past their deadline.
  void on_tick(uint64_t now_ms);
  // In a forked worker: closes every fd of the endpoint without touching the
  // epoll set (the parent's set, which the worker also closes).
  void close_in_child();

  // Limits (also what the tests check).
  static constexpr size_t kMaxHead = 4096;
  static constexpr size_t kMaxConnections = 16;
  static constexpr uint64_t kConnectionTimeoutMs = 10000;

 private:
  struct Connection {
    int fd = -1;
    std::string in;
    std::string out;
    size_t sent = 0;
    bool responding = false;
    uint64_t deadline_ms = 0;
  };
  void on_accept();
  void on_readable(Connection &c);
  void on_writable(Connection &c);
  void respond(Connection &c);
  void close_connection(int fd);
  Connection *find(int fd);

  int epoll_fd_ = -1;
  int listen_fd_ = -1;
  int port_ = 0;
  Render render_;
  std::vector<std::unique_ptr<Connection>> connections_;
};

// What the endpoint answers to a request head (the bytes up to and
// including the blank line): the whole response, head and body, built with
// `render` only for GET/HEAD /metrics. Exposed for the tests.
std::string metrics_response(std::string_view head, const MetricsEndpoint::Render &render);

}  // namespace pronghorn::supervisor
