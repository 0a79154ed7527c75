#include "engine/net/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "engine/log.h"

namespace pronghorn {

SocketAddress address_of(const sockaddr_storage &addr, socklen_t len) {
  SocketAddress out;
  char host[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto *in = reinterpret_cast<const sockaddr_in *>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    out.host = host;
    out.port = ntohs(in->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto *in6 = reinterpret_cast<const sockaddr_in6 *>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    out.host = host;
    // An IPv4 client on a dual-stack socket: report it as plain IPv4.
    if (out.host.rfind("::ffff:", 0) == 0 && out.host.find('.') != std::string::npos) out.host = out.host.substr(7);
    out.port = ntohs(in6->sin6_port);
  } else if (addr.ss_family == AF_UNIX) {
    out.is_unix = true;
    const auto *un = reinterpret_cast<const sockaddr_un *>(&addr);
    size_t path_len = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    out.host.assign(un->sun_path, strnlen(un->sun_path, path_len));
  }
  return out;
}

SocketAddress local_address(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) < 0) {
    log_errno(LogLevel::Error, errno, "getsockname(fd %d) failed", fd);
    return {};
  }
  return address_of(addr, len);
}

int listen_tcp(const std::string &host, int port, int backlog, bool reuse_port, const char *option) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo *res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    if (option != nullptr)
      log(LogLevel::Error, "%s %s:%d: cannot resolve the host: %s", option, host.c_str(), port, gai_strerror(rc));
    else
      log(LogLevel::Error, "cannot resolve host %s: %s", host.c_str(), gai_strerror(rc));
    return -1;
  }
  int fd = -1;
  int last_errno = 0;
  const char *failed_call = "socket";
  for (addrinfo *ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      failed_call = "socket";
      continue;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
      log_errno(LogLevel::Warning, errno, "setsockopt(SO_REUSEADDR) failed");
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
      log_errno(LogLevel::Warning, errno, "setsockopt(SO_REUSEPORT) failed");
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      if (listen(fd, backlog) == 0) break;
      failed_call = "listen";
    } else {
      failed_call = "bind";
    }
    last_errno = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) return fd;
  if (option != nullptr)
    log_errno(LogLevel::Error, last_errno, "%s %s:%d: %s failed", option, host.c_str(), port, failed_call);
  else
    log_errno(LogLevel::Error, last_errno, "%s on %s:%d failed", failed_call, host.c_str(), port);
  return -1;
}

int listen_unix(const std::string &path, int backlog) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    log(LogLevel::Error, "unix socket path too long: %s", path.c_str());
    return -1;
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.data(), path.size());
  struct stat st {};
  // A stale socket file from an earlier run would make bind fail with EADDRINUSE.
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path.c_str());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log_errno(LogLevel::Error, errno, "socket(AF_UNIX) failed");
    return -1;
  }
  if (bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) < 0) {
    log_errno(LogLevel::Error, errno, "bind on unix socket %s failed", path.c_str());
    close(fd);
    return -1;
  }
  if (chmod(path.c_str(), 0666) < 0) log_errno(LogLevel::Warning, errno, "chmod(%s) failed", path.c_str());
  if (listen(fd, backlog) < 0) {
    log_errno(LogLevel::Error, errno, "listen on unix socket %s failed", path.c_str());
    close(fd);
    return -1;
  }
  return fd;
}

int adopt_listen_fd(int fd) {
  int type = 0, accepting = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
    log_errno(LogLevel::Error, errno, "fd %d is not a socket", fd);
    return -1;
  }
  len = sizeof accepting;
  if (type != SOCK_STREAM || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0 || !accepting) {
    log(LogLevel::Error, "fd %d is not a listening stream socket", fd);
    return -1;
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    log_errno(LogLevel::Error, errno, "fcntl(O_NONBLOCK) on fd %d failed", fd);
    return -1;
  }
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) log_errno(LogLevel::Warning, errno, "fcntl(FD_CLOEXEC) on fd %d failed", fd);
  return fd;
}

}  // namespace pronghorn
