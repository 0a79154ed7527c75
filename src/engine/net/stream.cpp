#include "engine/net/stream.h"

#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace pronghorn {

SocketStream::~SocketStream() {
  if (fd_ >= 0) ::close(fd_);
}

ssize_t SocketStream::read(char *buf, size_t len) {
  while (true) {
    ssize_t n = ::recv(fd_, buf, len, 0);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return kWouldBlock;
    return kFailed;
  }
}

ssize_t SocketStream::writev(const iovec *iov, int count) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec *>(iov);
  msg.msg_iovlen = static_cast<size_t>(count);
  while (true) {
    // sendmsg with MSG_NOSIGNAL: a peer that closed gives EPIPE, not SIGPIPE.
    ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return kWouldBlock;
    return kFailed;
  }
}

ssize_t SocketStream::send_file(int file_fd, off_t *offset, size_t len) {
  while (true) {
    ssize_t n = ::sendfile(fd_, file_fd, offset, len);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return kWouldBlock;
    return kFailed;
  }
}

void SocketStream::shutdown_write() {
  ::shutdown(fd_, SHUT_WR);
}

}  // namespace pronghorn
