// A Transport carries one connection's bytes for whichever protocol session
// runs on it: it owns the ByteStream (a socket today, TLS later; an
// in-memory stream in tests), the input buffer, the output queue, write
// interest, sendfile, the hand-over of small sends to the SendThread, and
// the write-stall rule. A session reads what arrived from input() and writes
// through send()/send_file(); it never touches the fd. The input buffer
// stays with the transport, so a protocol can hand the transport on to
// another (an HTTP/1 upgrade) with the bytes already read.
//
// Return contract: send() and send_file() return false when the transport is
// closed (nothing was queued); read_input() and read_into() return the bytes
// read, 0 at the end of the stream, or -1 (nothing now, or failed: closed()
// and failed_errno() say which).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "engine/buffer.h"
#include "engine/loop.h"
#include "engine/net/listener.h"
#include "engine/net/send_thread.h"
#include "engine/net/stream.h"

namespace pronghorn {

class Engine;

// The session side of a transport.
class TransportHandler {
 public:
  // Bytes (or the end of the stream) can be read.
  virtual void on_readable() = 0;
  // Queued output was written (some or all); queued_bytes() says how much is left.
  virtual void on_output_progress() = 0;
  // The peer hung up or the socket failed (EPOLLERR/EPOLLHUP, a failed send).
  virtual void on_transport_failed() = 0;

 protected:
  ~TransportHandler() = default;
};

class Transport final : public IoHandler {
 public:
  Transport(Engine &server, std::unique_ptr<ByteStream> stream, SocketAddress peer, const SocketAddress *local);
  ~Transport();
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;

  void set_handler(TransportHandler *handler) { handler_ = handler; }
  // Registers with the loop (a stream without an fd is driven by on_io()
  // calls); a second call does nothing.
  bool start();
  void on_io(uint32_t events) override;
  // Engine::defer_readable's call: the stream holds input (TLS records) and
  // the session reads again; handled as a readable event.
  void on_deferred_readable();

  const SocketAddress &peer() const { return peer_; }
  const SocketAddress &local() const { return *local_; }
  const TlsInfo *tls() const { return stream_ != nullptr ? stream_->tls_info() : nullptr; }
  bool buffers_input() const { return stream_ != nullptr && stream_->buffers_input(); }
  // The connection is between exchanges with nothing going out: buffers
  // kept for speed (TLS records) are freed.
  void release_idle_buffers() {
    if (stream_ != nullptr && output_idle()) stream_->release_buffers();
  }

  // ---- reading ----
  Buffer &input() { return in_; }
  // Reads into input(): straight into it when it is empty, else through the
  // server's scratch area, so that a partly filled buffer grows by what came.
  ssize_t read_input();
  // Reads into `dst` directly (a body read that skips the input buffer).
  ssize_t read_into(char *dst, size_t len);
  // Frees or shrinks the input buffer after the session took what it could.
  void trim_input();
  // Whether the session wants to read; write interest follows the queue.
  void set_reading(bool reading);
  bool reading() const { return reading_; }
  // Small writes may go through the server's SendThread (its cost model
  // counts HTTP requests); a session whose sends are not requests (WebSocket
  // messages) writes directly.
  void set_send_thread_allowed(bool allowed) { send_thread_allowed_ = allowed; }
  // A transport over another connection's stream (a tunnel in an HTTP/2
  // stream) does not count its bytes in the metrics: the connection's own
  // transport counts them once.
  void set_counts_bytes(bool counts) { counts_bytes_ = counts; }

  // ---- writing ----
  // Writes `iov` now as far as the socket takes it and queues the rest (or
  // hands a small write with nothing queued to the send thread).
  bool send(iovec *iov, int count);
  // Queues [offset, offset+len) of file_fd (owned from now on) after what is queued.
  bool send_file(int file_fd, uint64_t offset, uint64_t len);
  // Queued here, plus what the stream holds for the socket (TLS records).
  size_t queued_bytes() const { return out_bytes_ + (stream_ != nullptr ? stream_->pending_output() : 0); }
  bool output_idle() const {
    return out_.empty() && !send_in_flight_ && (stream_ == nullptr || stream_->pending_output() == 0);
  }
  // Tries to write what is queued (also called on EPOLLOUT).
  void flush();
  void shutdown_write() { stream_->shutdown_write(); }
  // When the socket last took queued bytes.
  uint64_t last_write_ms() const { return last_write_ms_; }

  // ---- lifetime ----
  bool closed() const { return closed_; }
  // Stops all I/O and drops queued output. With a send in flight the fd
  // stays open (its number must not be reused) until the send is reported.
  void close();
  // A send handed to the server's SendThread has finished (loop thread).
  void on_send_done(SendThread::Done &done);
  bool send_in_flight() const { return send_in_flight_; }
  // Called when a send in flight is reported after close(): the session
  // may now be freed.
  void set_release(void (*release)(void *ctx), void *ctx) {
    release_ = release;
    release_ctx_ = ctx;
  }

 private:
  struct OutChunk {
    std::string data;
    size_t off = 0;
    int file_fd = -1;
    off_t file_off = 0;
    uint64_t file_left = 0;
  };
  bool send_via_thread(const iovec *iov, int count, size_t total);
  void update_interest();
  void fail(int err, const char *what);
  // The session reads, and the stream holds input a read returns now.
  bool buffered_readable() const {
    return !closed_ && reading_ && !stream_->read_blocked() && stream_->has_buffered_input();
  }
  void readable_event();

  Engine &server_;
  std::unique_ptr<ByteStream> stream_;
  SocketAddress peer_;
  const SocketAddress *local_;
  TransportHandler *handler_ = nullptr;
  Buffer in_;
  std::deque<OutChunk> out_;
  size_t out_bytes_ = 0;
  uint64_t last_write_ms_ = 0;
  uint32_t interest_ = 0;
  bool reading_ = true;
  bool send_thread_allowed_ = true;
  bool counts_bytes_ = true;
  bool registered_ = false;
  bool started_ = false;
  bool closed_ = false;
  bool holding_ = false;  // in on_io's readable event: the stream holds what its reads make
  bool send_in_flight_ = false;
  bool deferred_ = false;  // listed with Engine::defer_readable
  void (*release_)(void *) = nullptr;
  void *release_ctx_ = nullptr;
};

}  // namespace pronghorn
