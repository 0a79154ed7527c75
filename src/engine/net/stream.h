// The byte stream under a protocol. HTTP/1 reads and writes through this
// interface only, so TLS (a stream that encrypts) slots in under it later
// without changing the protocol code.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

namespace pronghorn {

struct TlsInfo;

// Return contract of every ByteStream call: n >= 0 bytes transferred (0 from
// read() means end of stream), kWouldBlock, or kFailed with errno set.
constexpr ssize_t kWouldBlock = -1;
constexpr ssize_t kFailed = -2;

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  virtual ssize_t read(char *buf, size_t len) = 0;
  virtual ssize_t writev(const iovec *iov, int count) = 0;
  // Sends up to `len` bytes of `file_fd` from *offset, advancing it.
  virtual ssize_t send_file(int file_fd, off_t *offset, size_t len) = 0;
  virtual void shutdown_write() = 0;
  virtual int fd() const = 0;
  // The socket that another thread may send this stream's bytes on directly
  // (SendThread), or -1 when bytes must go through writev() (a stream that
  // transforms them, such as TLS, or a test double).
  virtual int raw_send_fd() const { return -1; }
  // The TLS parameters of the connection (TlsStream, once its handshake is
  // done), or nullptr.
  virtual const TlsInfo *tls_info() const { return nullptr; }
  // Bytes the stream itself holds for the socket (TLS records not sent yet),
  // and the call that sends them: n >= 0 sent, kWouldBlock, or kFailed.
  virtual size_t pending_output() const { return 0; }
  virtual ssize_t flush_pending() { return 0; }
  // Frees buffers kept for speed while the connection was busy (idle now).
  virtual void release_buffers() {}
  // No reading now: the stream's own output is over its bound (TLS).
  virtual bool read_blocked() const { return false; }
  // The stream sends its own output (TLS records): writev() reports the
  // bytes it took in, and sent_bytes() those the socket took.
  virtual bool sends_itself() const { return false; }
  virtual uint64_t sent_bytes() const { return 0; }
  // The stream holds input of its own (decrypted TLS records): a read must
  // not ask for fewer bytes than a record, or the rest waits with no event.
  virtual bool buffers_input() const { return false; }
  // Input is held in user space that a read() would return now (or the end
  // of the stream, or an error) without the socket becoming readable: TLS
  // records that came in the same recv() as others and did not fit in the
  // caller's buffer, or arrived while the session was not reading. epoll
  // will not report them, so the transport calls the session again.
  virtual bool has_buffered_input() const { return false; }
  // While on, records that a read makes once the handshake is done (a TLS
  // 1.3 session ticket, sent after the client's Finished) stay in the stream:
  // they leave with the answer to what was read, in the same send(). The
  // transport turns it on around a readable event and sends what is left
  // after it.
  virtual void hold_read_output(bool) {}
  // A stream without an fd (no epoll registration) learns the events its
  // transport now waits for: the stream that drives it with on_io() (a
  // WebSocket tunnelled in an HTTP/2 stream) delivers input once reading
  // resumes.
  virtual void interest_changed(uint32_t) {}
};

// A connected, non-blocking socket (TCP or Unix). Owns and closes the fd.
class SocketStream final : public ByteStream {
 public:
  explicit SocketStream(int fd) : fd_(fd) {}
  ~SocketStream() override;
  ssize_t read(char *buf, size_t len) override;
  ssize_t writev(const iovec *iov, int count) override;
  ssize_t send_file(int file_fd, off_t *offset, size_t len) override;
  void shutdown_write() override;
  int fd() const override { return fd_; }
  int raw_send_fd() const override { return fd_; }

 private:
  int fd_;
};

}  // namespace pronghorn
