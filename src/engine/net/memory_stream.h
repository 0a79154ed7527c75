// An in-memory ByteStream: the peer is the test (or a fuzzer) that owns it.
// Bytes the peer sends are queued with peer_send(); what the session writes
// collects in written(). A write capacity makes the "socket" full, to
// exercise queueing, write interest and flow control without real sockets.
// It has no fd: a Transport over it is driven by calling on_io() directly.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "engine/net/stream.h"

namespace pronghorn {

class MemoryStream final : public ByteStream {
 public:
  // ---- the peer's side ----
  void peer_send(std::string_view bytes) { inbound_.append(bytes); }
  void peer_close() { peer_closed_ = true; }  // end of stream after what is queued
  void peer_reset() { reset_ = true; }        // reads and writes fail with ECONNRESET
  std::string &written() { return *sink_; }   // what the server wrote, for the peer to take
  // Where written bytes go instead (they outlive the stream: a transport
  // frees its stream when the connection closes).
  void set_sink(std::string *sink) { sink_ = sink; }
  bool write_shut() const { return write_shut_; }  // the server half-closed
  // How many more bytes the "socket" takes before writes would block.
  void set_write_capacity(size_t bytes) { capacity_ = bytes; }
  size_t inbound_left() const { return inbound_.size() - inbound_off_; }

  // ---- ByteStream ----
  ssize_t read(char *buf, size_t len) override {
    if (reset_) return fail(ECONNRESET);
    size_t left = inbound_.size() - inbound_off_;
    if (left == 0) return peer_closed_ ? 0 : kWouldBlock;
    size_t n = std::min(left, len);
    inbound_.copy(buf, n, inbound_off_);
    inbound_off_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t writev(const iovec *iov, int count) override {
    if (reset_ || write_shut_) return fail(reset_ ? ECONNRESET : EPIPE);
    size_t total = 0;
    for (int i = 0; i < count && capacity_ > 0; ++i) {
      size_t n = std::min(iov[i].iov_len, capacity_);
      sink_->append(static_cast<const char *>(iov[i].iov_base), n);
      capacity_ -= n;
      total += n;
    }
    if (total == 0 && count > 0) return kWouldBlock;
    return static_cast<ssize_t>(total);
  }
  ssize_t send_file(int file_fd, off_t *offset, size_t len) override {
    if (reset_ || write_shut_) return fail(reset_ ? ECONNRESET : EPIPE);
    size_t n = std::min({len, capacity_, size_t{65536}});
    if (n == 0) return kWouldBlock;
    std::string chunk(n, '\0');
    ssize_t got = ::pread(file_fd, chunk.data(), n, *offset);
    if (got < 0) return kFailed;
    sink_->append(chunk.data(), static_cast<size_t>(got));
    capacity_ -= static_cast<size_t>(got);
    *offset += got;
    return got;
  }
  void shutdown_write() override { write_shut_ = true; }
  int fd() const override { return -1; }

 private:
  static ssize_t fail(int err) {
    errno = err;
    return kFailed;
  }
  std::string inbound_;
  size_t inbound_off_ = 0;
  std::string written_;
  std::string *sink_ = &written_;
  size_t capacity_ = std::numeric_limits<size_t>::max();
  bool peer_closed_ = false;
  bool reset_ = false;
  bool write_shut_ = false;
};

}  // namespace pronghorn
