// Listening sockets: TCP over IPv4/IPv6, Unix domain sockets, and sockets
// inherited as a file descriptor (--fd, systemd, the supervisor's bound sockets).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

namespace pronghorn {

// Where a socket is bound or connected, in the shape ASGI's scope needs.
struct SocketAddress {
  bool is_unix = false;
  std::string host;  // numeric IP, or the socket path for Unix sockets
  int port = 0;
};

SocketAddress address_of(const sockaddr_storage &addr, socklen_t len);

// Each returns a listening, non-blocking, close-on-exec fd, or -1 after
// logging why. `reuse_port` sets SO_REUSEPORT (each worker its own queue).
// SO_REUSEADDR is always set: a restart must not wait for the TIME_WAIT
// connections of the last run. `option`, when given, names the command-line
// option the address came from, and starts the error lines.
int listen_tcp(const std::string &host, int port, int backlog, bool reuse_port, const char *option = nullptr);
int listen_unix(const std::string &path, int backlog);
// Validates an inherited fd (must be a listening stream socket) and makes it
// non-blocking. Returns the fd or -1.
int adopt_listen_fd(int fd);

// The local address of a listening socket.
SocketAddress local_address(int fd);

}  // namespace pronghorn
