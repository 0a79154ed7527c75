#include "supervisor/systemd.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "engine/log.h"

namespace pronghorn::supervisor {

bool sd_notify(std::string_view state) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return true;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    log(LogLevel::Warning, "NOTIFY_SOCKET is not a usable socket path: %s", path);
    return false;
  }
  memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log_errno(LogLevel::Warning, errno, "sd_notify: socket failed");
    return false;
  }
  socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  ssize_t n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr *>(&addr), addr_len);
  int err = errno;
  close(fd);
  if (n < 0) {
    log_errno(LogLevel::Warning, err, "sd_notify to %s failed", path);
    return false;
  }
  return true;
}

}  // namespace pronghorn::supervisor
