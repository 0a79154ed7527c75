#include "engine/net/transport.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>

#include "engine/engine.h"
#include "engine/log.h"

namespace pronghorn {

namespace {
constexpr size_t kReadSize = 64 * 1024;
constexpr size_t kMaxIov = 16;
constexpr uint64_t kMaxFileSend = 1u << 20;  // one sendfile call
// Writes up to this size go through the send thread when nothing is queued.
// Larger ones (streamed downloads) are written here: copying them for the
// thread would cost what it saves, and their pace is the client's anyway.
constexpr size_t kMaxThreadedSend = 64 * 1024;
// Reads of input the stream holds (TLS records) in one readable event; more
// waits for the engine's next turn (Engine::defer_readable), so that one
// connection cannot keep the loop to itself.
constexpr int kMaxBufferedReads = 16;

size_t total_size(const iovec *iov, int count) {
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  return total;
}
}  // namespace

Transport::Transport(Engine &server, std::unique_ptr<ByteStream> stream, SocketAddress peer, const SocketAddress *local)
    : server_(server), stream_(std::move(stream)), peer_(std::move(peer)), local_(local) {}

Transport::~Transport() {
  if (deferred_) server_.forget_readable(this);
  for (OutChunk &chunk : out_)
    if (chunk.file_fd >= 0) ::close(chunk.file_fd);
}

bool Transport::start() {
  // A session that takes over a running connection (an HTTP/1 session
  // handing it to HTTP/2) starts it again: once is enough.
  if (started_) return true;
  started_ = true;
  interest_ = reading_ ? EPOLLIN : 0u;
  if (stream_->fd() < 0) return true;  // an in-memory stream: driven by on_io() calls
  if (!server_.loop().add(stream_->fd(), interest_, this)) return false;
  registered_ = true;
  return true;
}

void Transport::on_io(uint32_t events) {
  if (closed_) return;
  if (events & EPOLLOUT) flush();
  if (closed_) return;
  if (events & EPOLLIN) {
    readable_event();
  } else if (events & (EPOLLERR | EPOLLHUP)) {
    handler_->on_transport_failed();
  }
}

void Transport::readable_event() {
  // Records the reads make (a TLS session ticket) wait for the answer the
  // session writes to what was read, and leave with it; what no write took
  // along is sent here.
  holding_ = true;
  stream_->hold_read_output(true);
  handler_->on_readable();
  // Input the stream holds (TLS records that came in the same recv() as
  // those read) has no epoll event to come back for it: read on while the
  // session wants to, a bounded number of times, then at the engine's next turn.
  for (int i = 0; i < kMaxBufferedReads && buffered_readable(); ++i) handler_->on_readable();
  holding_ = false;
  if (closed_) return;
  stream_->hold_read_output(false);
  if (stream_->pending_output() > 0) flush();
  if (buffered_readable()) {
    deferred_ = true;
    server_.defer_readable(this);
  }
}

void Transport::on_deferred_readable() {
  deferred_ = false;
  if (buffered_readable()) readable_event();
}

void Transport::set_reading(bool reading) {
  reading_ = reading;
  update_interest();
}

void Transport::update_interest() {
  if (closed_) return;
  bool writing = (!out_.empty() || stream_->pending_output() > 0) && !send_in_flight_;
  bool reading = reading_ && !stream_->read_blocked();
  uint32_t want = (reading ? EPOLLIN : 0u) | (writing ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  if (want != interest_) {
    interest_ = want;
    if (registered_)
      server_.loop().modify(stream_->fd(), want, this);
    else
      stream_->interest_changed(want);
  }
  // Reading again (or no longer blocked) with input held in user space:
  // no event will come for it. (Within a readable event, on_io reads on.)
  if (reading && !holding_ && !deferred_ && stream_->has_buffered_input()) {
    deferred_ = true;
    server_.defer_readable(this);
  }
}

ssize_t Transport::read_into(char *dst, size_t len) {
  if (closed_) return kFailed;
  bool was_idle = output_idle();
  ssize_t n = stream_->read(dst, len);
  if (n > 0) {
    if (metrics::WorkerSlot *m = counts_bytes_ ? server_.metrics() : nullptr)
      m->received_bytes.add(static_cast<uint64_t>(n));
  }
  if (n == kFailed) {
    int err = errno;
    if (err != ECONNRESET) log_errno(LogLevel::Debug, err, "recv from %s:%d failed", peer_.host.c_str(), peer_.port);
    errno = err;
  } else if (stream_->pending_output() > 0 || stream_->read_blocked()) {
    // The stream has bytes of its own to send (TLS handshake records): the
    // write-stall clock starts now if nothing was going out.
    if (was_idle) last_write_ms_ = server_.loop().now_ms();
    // Records held for the answer (see on_io) need no write interest: on_io
    // sends what is left of them once the session has handled the data.
    if (!holding_ || stream_->read_blocked()) update_interest();
  }
  return n;
}

ssize_t Transport::read_input() {
  // With nothing buffered, or a full-size read buffer (a body flowing), read
  // straight into the input buffer (no copy); otherwise (a head arriving in
  // pieces, its buffer shrunk to its size) read into the server's scratch
  // buffer and append only what came, so that the input buffer grows by
  // what is needed and a slow head costs its own size, not 64 KiB or more.
  bool direct = in_.empty() || in_.capacity() >= kReadSize;
  char *dst = direct ? in_.prepare(kReadSize) : server_.read_scratch(kReadSize);
  ssize_t n = read_into(dst, kReadSize);
  if (n <= 0) return n;
  if (direct)
    in_.commit(static_cast<size_t>(n));
  else
    in_.append(dst, static_cast<size_t>(n));
  return n;
}

void Transport::trim_input() {
  // Idle and long-running connections hold no read buffer, and a partial
  // head keeps only its own size.
  in_.release_if_empty();
  in_.shrink_to_fit();
}

void Transport::fail(int err, const char *what) {
  if (err != EPIPE && err != ECONNRESET)
    log_errno(LogLevel::Warning, err, "%s to %s:%d failed", what, peer_.host.c_str(), peer_.port);
  handler_->on_transport_failed();
}

bool Transport::send(iovec *iov, int count) {
  if (closed_) return false;
  size_t written = 0;
  bool was_idle = output_idle();
  if (out_.empty() && !send_in_flight_) {
    if (send_thread_allowed_ && server_.prefer_send_thread() && stream_->raw_send_fd() >= 0) {
      size_t total = total_size(iov, count);
      if (total <= kMaxThreadedSend && send_via_thread(iov, count, total)) return true;
    }
    uint64_t sent_before = stream_->sent_bytes();
    ssize_t n = stream_->writev(iov, count);
    if (n == kFailed) {
      fail(errno, "send");
      return false;
    }
    if (n > 0) {
      written = static_cast<size_t>(n);
      if (metrics::WorkerSlot *m = counts_bytes_ ? server_.metrics() : nullptr) m->sent_bytes.add(written);
    }
    // The write-stall clock: it starts when output stops being idle, and
    // moves on when the socket takes bytes (a TLS stream's writev reports
    // what it encrypted; sent_bytes() what the socket took).
    bool progress = stream_->sends_itself() ? stream_->sent_bytes() != sent_before : n > 0;
    if (progress || (was_idle && stream_->pending_output() > 0)) last_write_ms_ = server_.loop().now_ms();
    // A TLS stream may hold records the socket did not take: write interest.
    if (stream_->pending_output() > 0) update_interest();
  }
  // Queue what the socket did not take.
  std::string rest;
  for (int i = 0; i < count; ++i) {
    size_t len = iov[i].iov_len;
    if (written >= len) {
      written -= len;
      continue;
    }
    rest.append(static_cast<const char *>(iov[i].iov_base) + written, len - written);
    written = 0;
  }
  if (!rest.empty()) {
    if (out_.empty()) last_write_ms_ = server_.loop().now_ms();
    out_bytes_ += rest.size();
    OutChunk chunk;
    chunk.data = std::move(rest);
    out_.push_back(std::move(chunk));
    update_interest();
  }
  return true;
}

bool Transport::send_file(int file_fd, uint64_t offset, uint64_t len) {
  if (closed_) {
    ::close(file_fd);
    return false;
  }
  if (out_.empty()) last_write_ms_ = server_.loop().now_ms();
  OutChunk chunk;
  chunk.file_fd = file_fd;
  chunk.file_off = static_cast<off_t>(offset);
  chunk.file_left = len;
  out_.push_back(std::move(chunk));
  // Counted as queued output: the next pipelined request waits while a file
  // is still going out (as for any queued response), so a client that
  // pipelines file requests and never reads holds one file, not one per request.
  out_bytes_ += len;
  return true;
}

bool Transport::send_via_thread(const iovec *iov, int count, size_t total) {
  std::string data;
  data.reserve(total);
  for (int i = 0; i < count; ++i) data.append(static_cast<const char *>(iov[i].iov_base), iov[i].iov_len);
  if (!server_.send_thread()->submit(SendThread::Job{this, stream_->raw_send_fd(), std::move(data)})) return false;
  send_in_flight_ = true;
  out_bytes_ += total;
  last_write_ms_ = server_.loop().now_ms();
  return true;
}

void Transport::on_send_done(SendThread::Done &done) {
  send_in_flight_ = false;
  // Counted here, on the loop thread: the slot has one writer.
  if (metrics::WorkerSlot *m = counts_bytes_ ? server_.metrics() : nullptr) m->sent_bytes.add(done.written);
  if (closed_) {
    // Closed while the send was in flight: the fd can be closed now.
    stream_.reset();
    if (release_ != nullptr) release_(release_ctx_);
    return;
  }
  out_bytes_ -= done.written;
  if (done.error != 0) {
    fail(done.error, "send");
    return;
  }
  last_write_ms_ = server_.loop().now_ms();
  if (done.written < done.data.size()) {
    // The socket was full: the rest goes first, by EPOLLOUT, from here.
    OutChunk rest;
    rest.data = std::move(done.data);
    rest.off = done.written;
    out_.push_front(std::move(rest));
  }
  flush();
}

void Transport::flush() {
  // The send thread owns the socket's write side until its send is done.
  if (send_in_flight_ || closed_) return;
  if (stream_->pending_output() > 0) {
    ssize_t n = stream_->flush_pending();
    if (n == kFailed) {
      fail(errno, "send");
      return;
    }
    if (n > 0) last_write_ms_ = server_.loop().now_ms();
  }
  uint64_t sent_before = stream_->sent_bytes();
  while (!out_.empty() && stream_->pending_output() == 0) {
    OutChunk &front = out_.front();
    if (front.file_fd >= 0) {
      size_t want = front.file_left < kMaxFileSend ? static_cast<size_t>(front.file_left) : kMaxFileSend;
      ssize_t n = stream_->send_file(front.file_fd, &front.file_off, want);
      if (n == kWouldBlock) break;
      if (n == kFailed || n == 0) {
        fail(n == 0 ? EIO : errno, "sendfile");
        return;
      }
      last_write_ms_ = server_.loop().now_ms();
      if (metrics::WorkerSlot *m = counts_bytes_ ? server_.metrics() : nullptr)
        m->sent_bytes.add(static_cast<uint64_t>(n));
      front.file_left -= static_cast<uint64_t>(n);
      out_bytes_ -= static_cast<size_t>(n);
      if (front.file_left == 0) {
        ::close(front.file_fd);
        out_.pop_front();
      }
      continue;
    }
    iovec iov[kMaxIov];
    int count = 0;
    for (auto it = out_.begin(); it != out_.end() && count < static_cast<int>(kMaxIov) && it->file_fd < 0; ++it)
      iov[count++] = {it->data.data() + it->off, it->data.size() - it->off};
    ssize_t n = stream_->writev(iov, count);
    if (n == kWouldBlock) break;
    if (n == kFailed) {
      fail(errno, "send");
      return;
    }
    size_t written = static_cast<size_t>(n);
    if (metrics::WorkerSlot *m = counts_bytes_ ? server_.metrics() : nullptr) m->sent_bytes.add(written);
    if (stream_->sends_itself() ? stream_->sent_bytes() != sent_before : written > 0) {
      last_write_ms_ = server_.loop().now_ms();
      sent_before = stream_->sent_bytes();
    }
    out_bytes_ -= written;
    while (written > 0) {
      OutChunk &chunk = out_.front();
      size_t left = chunk.data.size() - chunk.off;
      if (written >= left) {
        written -= left;
        out_.pop_front();
      } else {
        chunk.off += written;
        written = 0;
      }
    }
  }
  update_interest();
  handler_->on_output_progress();
}

void Transport::close() {
  if (closed_) return;
  closed_ = true;
  if (deferred_) {
    deferred_ = false;
    server_.forget_readable(this);
  }
  if (registered_) server_.loop().remove(stream_->fd());
  registered_ = false;
  // With a send in flight the fd stays open (its number must not be reused)
  // until on_send_done(); the destructor closes it.
  if (!send_in_flight_) stream_.reset();
  for (OutChunk &chunk : out_)
    if (chunk.file_fd >= 0) ::close(chunk.file_fd);
  out_.clear();
  out_bytes_ = 0;
  // The input buffer stays: the request head being dispatched may still
  // point into it; it goes with the transport.
}

}  // namespace pronghorn
