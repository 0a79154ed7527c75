#include "engine/http2/session.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "engine/engine.h"
#include "engine/http/target.h"
#include "engine/http1/parser.h"
#include "engine/http1/response.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/text.h"
#include "engine/ws/deflate.h"
#include "engine/ws/handshake.h"
#include "engine/ws/session.h"

namespace pronghorn::http2 {

namespace {
// A stream's response bytes not yet framed: over this, write_body() says
// Blocked; on_writable() fires once they drain below the low mark.
constexpr size_t kStreamOutHigh = 64 * 1024;
constexpr size_t kStreamOutLow = 16 * 1024;
// Frames gathered for one transport write.
constexpr size_t kBatchSize = 64 * 1024;
// What the batch keeps between writes (the small frames of a quiet connection).
constexpr size_t kBatchKeep = 16 * 1024;
// DATA payloads from this size on are not copied into nghttp2's frame
// buffer (NGHTTP2_DATA_FLAG_NO_COPY): on a plain connection they are
// written from the stream's buffer, over TLS copied once into the batch
// (Session::on_send_data). Smaller ones are cheaper copied with the other frames.
constexpr size_t kNoCopyMin = 1024;
// Pieces (runs of the batch, payloads in stream buffers) of one write.
constexpr size_t kMaxPieces = 64;
// No byte taken by the socket, or a stream whose window stays closed with
// output waiting, for this long: the client is dropped (the stream is reset).
constexpr uint64_t kWriteStallMs = 60000;
// Resets the client may send in a burst, per allowed concurrent stream,
// before nghttp2's token bucket runs dry and the connection gets GOAWAY
// (CVE-2023-44487, rapid reset); the bucket refills at kResetRate a second.
constexpr uint64_t kResetBurstPerStream = 2;
constexpr uint64_t kResetRate = 33;
// Ranges of skipped client stream IDs remembered (Session::skipped_ids_): a
// client that skips more often has its oldest gaps forgotten, and a HEADERS
// frame on one of those is only ignored, as on any closed stream.
constexpr size_t kMaxSkippedRanges = 32;
constexpr int64_t kMaxWindow = (int64_t{1} << 31) - 1;  // RFC 9113 §6.9.1
// A graceful stop's PING (its opaque data), whose ACK tells that the client
// has seen the first GOAWAY; without the ACK, the final GOAWAY goes after
// kShutdownPingWaitMs all the same.
constexpr uint8_t kShutdownPing[8] = {'p', 'h', '-', 's', 't', 'o', 'p', '1'};
constexpr uint64_t kShutdownPingWaitMs = 1000;
constexpr int32_t kMaxStreamId = 0x7fffffff;  // a shutdown notice's last stream ID (RFC 9113 §6.8)

uint64_t reset_burst(const Settings &settings) {
  return std::max<uint64_t>(64, kResetBurstPerStream * settings.max_concurrent_streams);
}

uint64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t *>(const_cast<char *>(name.data())),
          reinterpret_cast<uint8_t *>(const_cast<char *>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

// Header fields that are about one HTTP/1 connection and are malformed in
// HTTP/2 (RFC 9113 §8.2.2): dropped from the application's response.
bool connection_specific(std::string_view lower_name) {
  return lower_name == "connection" || lower_name == "transfer-encoding" || lower_name == "keep-alive" ||
         lower_name == "upgrade" || lower_name == "proxy-connection" || lower_name == "te";
}

bool has_upper(std::string_view name) {
  for (char c : name)
    if (c >= 'A' && c <= 'Z') return true;
  return false;
}

// The name in lower case: the name itself when it is already (ASGI
// applications send lower-case names), else a copy appended to `arena`,
// which the caller reserved so that no append moves earlier copies.
std::string_view lowercase_view(std::string &arena, std::string_view name) {
  if (!has_upper(name)) return name;
  size_t at = arena.size();
  arena.append(name);
  for (size_t i = at; i < arena.size(); ++i)
    if (arena[i] >= 'A' && arena[i] <= 'Z') arena[i] = static_cast<char>(arena[i] - 'A' + 'a');
  return std::string_view(arena).substr(at);
}

// The header fields of one response: on the stack up to a usual count, so
// that a response allocates nothing of its own before nghttp2 copies them.
class NvList {
 public:
  explicit NvList(size_t n) {
    if (n > kInline) heap_.reserve(n);
  }
  void push(std::string_view name, std::string_view value) {
    if (heap_.capacity() > 0)
      heap_.push_back(make_nv(name, value));
    else
      inline_[size_++] = make_nv(name, value);
  }
  nghttp2_nv *data() { return heap_.capacity() > 0 ? heap_.data() : inline_; }
  size_t size() const { return heap_.capacity() > 0 ? heap_.size() : size_; }

 private:
  static constexpr size_t kInline = 24;
  nghttp2_nv inline_[kInline];
  size_t size_ = 0;
  std::vector<nghttp2_nv> heap_;
};

const char *peer_host(const SocketAddress &address) {
  return address.is_unix ? "unix" : address.host.c_str();
}
}  // namespace

// ============================================================== Tunnel

// The ByteStream of a WebSocket over HTTP/2 (RFC 8441): reads take the
// stream's received DATA (and open its window by what they take, so a
// WebSocket whose queue is full stops its client, not the connection);
// writes become the stream's DATA frames (its response body buffer, framed
// as the client's windows allow). Bytes not framed yet are its
// pending_output(), so the WebSocket session's Blocked/on_writable follow
// the client's window. No fd: the HTTP/2 session drives its transport with
// on_io() (EPOLLIN when DATA came, EPOLLOUT when its bytes were framed,
// EPOLLHUP when the stream ended). Freed with that transport: the stream
// then ends with END_STREAM once its bytes are out.
class Tunnel final : public ByteStream {
 public:
  Tunnel(Session &session, Stream &stream) : session_(&session), stream_(&stream) {}
  ~Tunnel() override;
  Tunnel(const Tunnel &) = delete;
  Tunnel &operator=(const Tunnel &) = delete;

  void set_transport(Transport *transport) { transport_ = transport; }
  Transport *transport() const { return transport_; }
  // The stream or the connection is gone: reads and writes fail from now.
  void detach() {
    session_ = nullptr;
    stream_ = nullptr;
  }
  void framed(size_t n) { framed_ += n; }

  ssize_t read(char *buf, size_t len) override;
  ssize_t writev(const iovec *iov, int count) override;
  ssize_t send_file(int, off_t *, size_t) override {
    errno = EOPNOTSUPP;  // (a WebSocket session sends no files)
    return kFailed;
  }
  // The end of the stream is sent when the WebSocket session lets go.
  void shutdown_write() override {}
  int fd() const override { return -1; }
  const TlsInfo *tls_info() const override { return session_ != nullptr ? session_->transport_->tls() : nullptr; }
  size_t pending_output() const override { return stream_ != nullptr ? stream_->out_.size() : 0; }
  // Progress for the transport's write-stall clock: bytes framed since the last call.
  ssize_t flush_pending() override {
    uint64_t n = framed_ - reported_;
    reported_ = framed_;
    return static_cast<ssize_t>(n);
  }
  bool sends_itself() const override { return true; }
  uint64_t sent_bytes() const override { return framed_; }
  void interest_changed(uint32_t events) override {
    // Reading resumed (the WebSocket's queue has room) with input waiting.
    if ((events & EPOLLIN) != 0 && stream_ != nullptr && (!stream_->body_buf_.empty() || stream_->body_done_))
      session_->schedule_tunnel(stream_->id_);
  }

 private:
  Session *session_;
  Stream *stream_;
  Transport *transport_ = nullptr;
  uint64_t framed_ = 0;  // bytes of this tunnel nghttp2 has framed
  uint64_t reported_ = 0;
};

Tunnel::~Tunnel() {
  if (stream_ == nullptr) return;
  Stream &stream = *stream_;
  Session &session = *session_;
  stream.tunnel_ = nullptr;
  if (session.closed_) return;
  // Input the WebSocket will not read: its window is given back (later DATA
  // is dropped as for any ended exchange).
  if (stream.unconsumed_ > 0) {
    nghttp2_session_consume_stream(session.ng_, stream.id_, stream.unconsumed_);
    stream.unconsumed_ = 0;
  }
  stream.body_buf_.consume(stream.body_buf_.size());
  stream.body_buf_.release_if_empty();
  // END_STREAM follows the last bytes (the close frame): the stream's half
  // of a TCP close (RFC 8441 §4).
  stream.eof_ = true;
  stream.last_progress_ms_ = session.server_.loop().now_ms();  // the stall rule, should the window stay closed
  if (stream.deferred_) {
    stream.deferred_ = false;
    nghttp2_session_resume_data(session.ng_, stream.id_);
  }
  session.want_send();
}

ssize_t Tunnel::read(char *buf, size_t len) {
  if (stream_ == nullptr) {
    errno = ECONNRESET;
    return kFailed;
  }
  Buffer &in = stream_->body_buf_;
  if (in.empty()) return stream_->body_done_ ? 0 : kWouldBlock;
  size_t n = std::min(len, in.size());
  memcpy(buf, in.data(), n);
  in.consume(n);
  in.release_if_empty();
  // The stream's window opens by what the WebSocket took.
  stream_->unconsumed_ -= std::min(stream_->unconsumed_, n);
  nghttp2_session_consume_stream(session_->ng_, stream_->id_, n);
  session_->want_send();
  return static_cast<ssize_t>(n);
}

ssize_t Tunnel::writev(const iovec *iov, int count) {
  if (stream_ == nullptr || session_->closed_) {
    errno = ECONNRESET;
    return kFailed;
  }
  Stream &stream = *stream_;
  // The stall rule measures how long output waits for the client's window.
  if (!stream.has_output()) stream.last_progress_ms_ = session_->server_.loop().now_ms();
  size_t total = 0;
  for (int i = 0; i < count; ++i) {
    stream.out_.append(static_cast<const char *>(iov[i].iov_base), iov[i].iov_len);
    total += iov[i].iov_len;
  }
  // (Framing progress is reported back, EPOLLOUT, from read_body.)
  if (stream.deferred_) {
    stream.deferred_ = false;
    nghttp2_session_resume_data(session_->ng_, stream.id_);
  }
  session_->want_send();
  return static_cast<ssize_t>(total);
}

// ============================================================== Stream

const SocketAddress &Stream::peer() const {
  return session_.transport_->peer();
}
const SocketAddress &Stream::local() const {
  return session_.transport_->local();
}
const TlsInfo *Stream::tls() const {
  return session_.transport_->tls();
}

void Stream::body_taken() {
  if (session_.closed_ || ended_) return;
  size_t taken = unconsumed_ - std::min(unconsumed_, body_buf_.size());
  if (taken == 0) return;
  unconsumed_ -= taken;
  // The stream's window opens by what the application took (a WINDOW_UPDATE
  // goes out once enough is taken, as nghttp2 judges).
  nghttp2_session_consume_stream(session_.ng_, id_, taken);
  session_.want_send();
}

const char *Stream::start_response(int status, const http::HeaderList &headers) {
  if (status < 200 || status > 999) return "Invalid HTTP status code.";
  if (session_.closed_ || ended_ || response_ != Response::NotStarted) return nullptr;
  const EngineConfig &config = session_.server_.config();
  char status_text[4];  // 200..999
  status_text[0] = static_cast<char>('0' + status / 100);
  status_text[1] = static_cast<char>('0' + status / 10 % 10);
  status_text[2] = static_cast<char>('0' + status % 10);
  status_text[3] = '\0';
  // Names not already in lower case are lowered into one arena (reserved
  // first: the views into it must not move), which lives until nghttp2 has
  // copied them.
  size_t name_bytes = 0;
  for (const auto &[name, value] : headers) name_bytes += name.size();
  for (const auto &[name, value] : config.extra_headers) name_bytes += name.size();
  std::string lowered;
  // The names as sent, lowered where needed: a small array on the stack
  // for the usual count of headers.
  constexpr size_t kInlineNames = 16;
  std::string_view inline_names[kInlineNames];
  std::vector<std::string_view> heap_names;
  std::string_view *names = inline_names;
  if (headers.size() > kInlineNames) {
    heap_names.resize(headers.size());
    names = heap_names.data();
  }
  bool app_server = false, app_date = false;
  has_length_ = false;
  for (size_t i = 0; i < headers.size(); ++i) {
    const auto &[name, value] = headers[i];
    if (!http1::valid_header_name(name)) return "Invalid HTTP header name.";
    if (!http1::valid_header_value(value)) return "Invalid HTTP header value.";
    if (lowered.capacity() < name_bytes && has_upper(name)) lowered.reserve(name_bytes);
    names[i] = lowercase_view(lowered, name);
    std::string_view lower = names[i];
    if (lower == "content-length") {
      if (value.empty() || value.size() > 18) return "Invalid content-length header.";
      uint64_t v = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return "Invalid content-length header.";
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      has_length_ = true;
      content_length_ = v;
    } else if (lower == "server") {
      app_server = true;
    } else if (lower == "date") {
      app_date = true;
    }
  }
  std::vector<std::string_view> extra_names;
  if (!config.extra_headers.empty()) {
    if (lowered.capacity() < name_bytes) lowered.reserve(name_bytes);
    extra_names.resize(config.extra_headers.size());
  }
  for (size_t i = 0; i < config.extra_headers.size(); ++i) {
    extra_names[i] = lowercase_view(lowered, config.extra_headers[i].first);
    if (extra_names[i] == "server") app_server = true;
    if (extra_names[i] == "date") app_date = true;
  }
  NvList nva(headers.size() + 3 + config.extra_headers.size());
  nva.push(":status", status_text);
  // The same defaults as an HTTP/1 response, before the application's own.
  if (config.date_header && !app_date) nva.push("date", session_.server_.date());
  if (config.server_header && !app_server) nva.push("server", "pronghorn");
  for (size_t i = 0; i < config.extra_headers.size(); ++i)
    if (!connection_specific(extra_names[i])) nva.push(extra_names[i], config.extra_headers[i].second);
  for (size_t i = 0; i < headers.size(); ++i)
    if (!connection_specific(names[i])) nva.push(names[i], headers[i].second);

  no_body_ = method_ == "HEAD" || status == 204 || status == 304;
  nghttp2_data_provider provider{};
  provider.source.ptr = this;
  provider.read_callback = read_body;
  int rv = nghttp2_submit_response(session_.ng_, id_, nva.data(), nva.size(), no_body_ ? nullptr : &provider);
  if (rv != 0) {
    // The stream is gone already (reset by the client): the writes that
    // follow report Closed.
    log(LogLevel::Debug, "HTTP/2 stream %d: response not submitted: %s", id_, nghttp2_strerror(rv));
    return nullptr;
  }
  response_ = Response::Started;
  status_ = status;
  last_progress_ms_ = session_.server_.loop().now_ms();
  // (A WebSocket handshake's outcome is logged by the application side, as
  // on HTTP/1: "WebSocket /path" [accepted], or its denial's status.)
  if (config.access_log && !websocket_) {
    if (const http::AccessLogFormat *format = config.access_format.get()) {
      const std::vector<std::string> &wanted = format->response_headers();
      for (const auto &[name, value] : headers)
        for (size_t i = 0; i < wanted.size(); ++i)
          if (http1::iequals(name, wanted[i]) && log_response_values_[i].empty()) log_response_values_[i].assign(value);
    }
    write_access_log();
  }
  session_.want_send();
  return nullptr;
}

void Stream::write_access_log() {
  const EngineConfig &config = session_.server_.config();
  if (config.access_format != nullptr) return;  // written when the exchange ends (it has the length)
  if (config.access_hook != nullptr) {
    config.access_hook(config.access_ctx, log_client(), method_, log_target_, "2", status_);
    return;
  }
  std::string line;
  http::append_default_access_line(line, log_client(), method_, log_target_, "HTTP/2", status_,
                                   http1::reason_phrase(status_), config.access_log_colours);
  session_.server_.append_log(line);
}

http::WriteStatus Stream::write_body(const char *data, size_t len, bool more) {
  if (session_.closed_ || ended_ || response_ != Response::Started) return http::WriteStatus::Closed;
  if (!no_body_ && has_length_ && body_sent_ + len > content_length_) {
    log(LogLevel::Error, "Response content longer than Content-Length");
    cut_response();
    return http::WriteStatus::TooLong;
  }
  // The stall rule (on_tick) measures how long output waits: a stream
  // quiet for minutes (SSE, long poll) starts waiting only now.
  if (!no_body_ && len > 0 && !has_output()) last_progress_ms_ = session_.server_.loop().now_ms();
  if (!no_body_) out_.append(data, len);
  body_sent_ += len;
  if (!more && !no_body_ && has_length_ && body_sent_ < content_length_) {
    log(LogLevel::Error, "Response content shorter than Content-Length");
    // What was given goes out; the reset then tells the client the body is cut.
    cut_response();
    return http::WriteStatus::TooShort;
  }
  if (!more) eof_ = true;
  if (deferred_ && (len > 0 || eof_)) {
    deferred_ = false;
    nghttp2_session_resume_data(session_.ng_, id_);
  }
  session_.want_send();
  if (!more) {
    response_ = Response::Done;
    end_exchange(http::Detach::Complete);
    return http::WriteStatus::Ok;
  }
  if (out_.size() > kStreamOutHigh) {
    wants_writable_ = true;
    return http::WriteStatus::Blocked;
  }
  return http::WriteStatus::Ok;
}

http::WriteStatus Stream::send_file(int file_fd, uint64_t offset, uint64_t len) {
  if (session_.closed_ || ended_ || response_ != Response::Started) {
    ::close(file_fd);
    return http::WriteStatus::Closed;
  }
  if (no_body_ || len == 0) {
    ::close(file_fd);
    return write_body(nullptr, 0, false);
  }
  if (has_length_ && body_sent_ + len != content_length_) {
    ::close(file_fd);
    bool longer = body_sent_ + len > content_length_;
    log(LogLevel::Error, "Response content %s than Content-Length", longer ? "longer" : "shorter");
    cut_response();
    return longer ? http::WriteStatus::TooLong : http::WriteStatus::TooShort;
  }
  // Read in frame-sized pieces as the peer's window allows (read_body):
  // memory stays bounded whatever the file's size.
  if (!has_output()) last_progress_ms_ = session_.server_.loop().now_ms();  // the stall rule: waiting from now
  file_fd_ = file_fd;
  file_off_ = offset;
  file_left_ = len;
  body_sent_ += len;
  eof_ = true;
  if (deferred_) {
    deferred_ = false;
    nghttp2_session_resume_data(session_.ng_, id_);
  }
  session_.want_send();
  response_ = Response::Done;
  end_exchange(http::Detach::Complete);
  return http::WriteStatus::Ok;
}

ssize_t Stream::read_body(nghttp2_session *, int32_t, uint8_t *buf, size_t length, uint32_t *flags,
                          nghttp2_data_source *source, void *) {
  auto &stream = *static_cast<Stream *>(source->ptr);
  size_t n = 0;
  size_t left = 0;  // in out_ once this frame is written
  if (!stream.out_.empty()) {
    n = std::min(length, stream.out_.size());
    left = stream.out_.size() - n;
    if (n >= kNoCopyMin) {
      // Session::on_send_data writes it from out_ (and consumes it there).
      *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    } else {
      memcpy(buf, stream.out_.data(), n);
      stream.out_.consume(n);
      // (Freed after the write: an earlier frame's payload may still be
      // gathered from this buffer.)
      if (stream.out_.empty()) stream.session_.drained_.push_back(&stream);
    }
  } else if (stream.file_left_ > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(length, stream.file_left_));
    ssize_t got;
    do {
      got = ::pread(stream.file_fd_, buf, want, static_cast<off_t>(stream.file_off_));
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
      if (got < 0)
        log_errno(LogLevel::Error, errno, "HTTP/2 stream %d: pread of the response file (fd %d) failed", stream.id_,
                  stream.file_fd_);
      else
        log(LogLevel::Error, "HTTP/2 stream %d: the response file ended %llu bytes early", stream.id_,
            static_cast<unsigned long long>(stream.file_left_));
      // The stream is reset (INTERNAL_ERROR): the client knows the body is cut.
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    n = static_cast<size_t>(got);
    stream.file_off_ += n;
    stream.file_left_ -= n;
    if (stream.file_left_ == 0) {
      ::close(stream.file_fd_);
      stream.file_fd_ = -1;
    }
  }
  // A cut response's bytes are out: nghttp2 resets the stream (INTERNAL_ERROR).
  if (n == 0 && stream.cut_) {
    stream.end_framed_ = true;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  if (n == 0 && !stream.eof_) {
    stream.deferred_ = true;  // write_body() resumes it
    return NGHTTP2_ERR_DEFERRED;
  }
  if (stream.eof_ && left == 0 && stream.file_left_ == 0) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    stream.end_framed_ = true;
  }
  stream.last_progress_ms_ = stream.session_.server_.loop().now_ms();
  if (stream.tunnel_ != nullptr) {
    // A WebSocket's bytes left its buffer: its session hears of it (EPOLLOUT).
    stream.tunnel_->framed(n);
    std::vector<int32_t> &writable = stream.session_.writable_;
    if (writable.empty() || writable.back() != stream.id_) writable.push_back(stream.id_);
  } else if (stream.wants_writable_ && left <= kStreamOutLow) {
    stream.wants_writable_ = false;
    stream.session_.writable_.push_back(stream.id_);
  }
  return static_cast<ssize_t>(n);
}

void Stream::end_exchange(http::Detach why) {
  if (ended_) return;
  ended_ = true;
  if (counted_) {
    counted_ = false;
    if (metrics::WorkerSlot *m = session_.server_.metrics())
      m->request_ended(metrics::method_of(method_), status_, clock_ns(CLOCK_MONOTONIC) - metrics_start_ns_, true);
    session_.server_.request_finished();
  }
  if (log_pending_) {
    log_pending_ = false;
    const http::AccessLogFormat &format = *session_.server_.config().access_format;
    http::AccessRecord record;
    record.peer = &log_client();
    record.method = method_;
    record.target = log_target_;
    record.protocol = "HTTP/2";
    record.status = status_;
    record.body_bytes = body_sent_;
    record.duration_ns = clock_ns(CLOCK_MONOTONIC) - log_start_ns_;
    record.start_unix_ns = log_start_unix_ns_;
    record.request_values = &log_request_values_;
    record.response_values = &log_response_values_;
    std::string line;
    format.render(line, record);
    const EngineConfig &config = session_.server_.config();
    if (config.access_line_hook != nullptr) {
      if (!line.empty() && line.back() == '\n') line.pop_back();
      config.access_line_hook(config.access_ctx, line);
    } else {
      session_.server_.append_log(line);
    }
  }
  // Body the application will not read: dropped, its window given back.
  if (!session_.closed_ && unconsumed_ > 0) {
    nghttp2_session_consume_stream(session_.ng_, id_, unconsumed_);
    unconsumed_ = 0;
  }
  body_buf_.consume(body_buf_.size());
  body_buf_.release_if_empty();
  http::ExchangeObserver *observer = observer_;
  observer_ = nullptr;
  if (observer != nullptr) observer->on_detach(why);
}

void Stream::answer_error(int status) {
  std::string_view body = http1::error_body(status);
  std::string length = std::to_string(body.size());
  http::HeaderList headers{{"content-type", "text/plain; charset=utf-8"}, {"content-length", length}};
  if (start_response(status, headers) == nullptr) write_body(body.data(), body.size(), false);
  if (!ended_) end_exchange(http::Detach::Complete);
}

void Stream::refuse_websocket(int status, const char *reason) {
  log(LogLevel::Debug, "%s:%d - WebSocket handshake refused: %s (HTTP/2 stream %d)", peer_host(peer()), peer().port,
      reason, id_);
  std::string body = "Failed to open a WebSocket connection: ";
  body.append(reason);
  body.append(".\n");
  std::string length = std::to_string(body.size());
  http::HeaderList headers{{"content-type", "text/plain; charset=utf-8"}, {"content-length", length}};
  // RFC 6455 §4.4: the versions this server speaks.
  if (status == 426) headers.emplace_back("sec-websocket-version", "13");
  if (start_response(status, headers) == nullptr) write_body(body.data(), body.size(), false);
  if (!ended_) end_exchange(http::Detach::Complete);
}

ws::Session *Stream::accept_websocket(std::string_view subprotocol, const http::HeaderList &headers,
                                      const char **error) {
  *error = nullptr;
  if (!websocket_ || session_.closed_ || ended_ || response_ != Response::NotStarted) return nullptr;
  Engine &server = session_.server_;
  const ws::Settings &settings = server.config().ws;
  ws::DeflateParams deflate;
  std::string extension;
  bool compress = settings.per_message_deflate && !ws_extensions_.empty() &&
                  ws::negotiate_deflate(ws_extensions_, deflate, extension);
  // RFC 8441 §5: a 2xx answers the CONNECT; no Sec-WebSocket-Accept (there
  // was no key). A 2xx to CONNECT has no content-length (RFC 9110 §9.3.6):
  // one the application gives is left out, as it would frame the tunnel.
  http::HeaderList all;
  all.reserve(headers.size() + 2);
  if (compress) all.emplace_back("sec-websocket-extensions", extension);
  if (!subprotocol.empty()) all.emplace_back("sec-websocket-protocol", subprotocol);
  for (const auto &header : headers)
    if (!http1::iequals(header.first, "content-length")) all.push_back(header);
  *error = start_response(200, all);
  if (*error != nullptr) return nullptr;
  // Not submitted: the stream is gone (its reset detaches the observer).
  if (response_ != Response::Started) return nullptr;
  // Not a streaming response: a graceful stop closes the WebSocket (1001)
  // rather than cutting the stream.
  response_ = Response::Done;
  // As an HTTP exchange the handshake ends here (HTTP/1 counts its 101 the
  // same way); the request stays active until the WebSocket closes
  // (ws::Session::close_now ends it).
  if (counted_) {
    counted_ = false;
    if (metrics::WorkerSlot *m = server.metrics()) m->request_ended(metrics::method_of(method_), 200, 0, false);
  }
  http::ExchangeObserver *observer = observer_;
  observer_ = nullptr;
  ended_ = true;
  auto owned = std::make_unique<Tunnel>(session_, *this);
  Tunnel *tunnel = owned.get();
  tunnel_ = tunnel;
  auto transport = std::make_unique<Transport>(server, std::move(owned), peer(), &local());
  Transport &t = *transport;
  tunnel->set_transport(&t);
  t.set_counts_bytes(false);
  t.start();
  auto *ws_session = new ws::Session(server, std::move(transport), compress ? &deflate : nullptr);
  ws_session->tunnelled = true;
  if (server.adopt_session(ws_session, t) == nullptr) {
    if (observer != nullptr) observer->on_detach(http::Detach::ClientGone);
    return nullptr;
  }
  // DATA that came with or after the CONNECT (within the stream's window)
  // is read once the application side attaches (the transport's reading).
  return ws_session;
}

void Stream::fail() {
  if (session_.closed_ || ended_) return;
  if (response_ == Response::NotStarted) {
    answer_error(500);
    return;
  }
  // Part of the response went out: the reset tells the client it is cut.
  cut_response();
}

void Stream::cut_response() {
  response_ = Response::Done;
  if (no_body_) {
    nghttp2_submit_rst_stream(session_.ng_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
  } else {
    // Not nghttp2_submit_rst_stream now: it would drop the HEADERS and DATA
    // still queued, and the client would see a bare reset (no status, no
    // bytes). read_body resets the stream once the output is framed.
    cut_ = true;
    // The reset waits for the client's window like the bytes before it: the
    // stall rule (Session::on_tick) counts from now.
    last_progress_ms_ = session_.server_.loop().now_ms();
    if (deferred_) {
      deferred_ = false;
      nghttp2_session_resume_data(session_.ng_, id_);
    }
  }
  end_exchange(http::Detach::Complete);
  session_.want_send();
}

void Stream::abort() {
  if (session_.closed_ || ended_) return;
  nghttp2_submit_rst_stream(session_.ng_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
  response_ = Response::Done;
  end_exchange(http::Detach::Complete);
  session_.want_send();
}

// ============================================================== Session

Session::Session(Engine &server, std::unique_ptr<Transport> transport)
    : server_(server), transport_(std::move(transport)) {
  transport_->set_handler(this);
  const Settings &settings = server_.config().http2;
  nghttp2_option *option = nullptr;
  if (nghttp2_option_new(&option) != 0) return;  // start() reports it
  if (callbacks() == nullptr) {
    nghttp2_option_del(option);
    return;
  }
  // The application's reads open the windows (Stream::body_taken).
  nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_option_set_no_closed_streams(option, 1);
  nghttp2_option_set_stream_reset_rate_limit(option, reset_burst(settings), kResetRate);
  reset_tokens_ = static_cast<double>(reset_burst(settings));
  if (nghttp2_session_server_new2(&ng_, callbacks(), this, option) != 0) ng_ = nullptr;
  nghttp2_option_del(option);
}

Session::~Session() {
  for (auto &[id, stream] : streams_) {
    if (stream->file_fd_ >= 0) ::close(stream->file_fd_);
    if (stream->tunnel_ != nullptr) stream->tunnel_->detach();
  }
  if (ng_ != nullptr) nghttp2_session_del(ng_);
}

void Session::on_released() {
  server_.release(this);
}

bool Session::start() {
  if (ng_ == nullptr) {
    log(LogLevel::Error, "cannot create an HTTP/2 session (out of memory)");
    return false;
  }
  if (!transport_->start()) return false;
  const Settings &settings = server_.config().http2;
  nghttp2_settings_entry entries[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings.max_frame_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings.max_header_list_size},
      // RFC 8441: WebSockets over extended CONNECT, when WebSockets are on.
      // Without it nghttp2 refuses a :protocol pseudo-header (the stream is
      // malformed: RST_STREAM PROTOCOL_ERROR).
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
  };
  size_t count = sizeof entries / sizeof entries[0];
  if (!server_.config().ws.enabled) --count;
  int rv = nghttp2_submit_settings(ng_, NGHTTP2_FLAG_NONE, entries, count);
  if (rv != 0) {
    log(LogLevel::Error, "HTTP/2 SETTINGS rejected: %s", nghttp2_strerror(rv));
    return false;
  }
  deadline_ms_ = server_.loop().now_ms() + server_.config().header_timeout_ms;
  last_ping_ms_ = server_.loop().now_ms();
  // The preface (and more) may have come with the bytes that chose HTTP/2.
  process_input();
  // Chosen during a graceful stop (an HTTP/1 session serving what a new
  // connection had sent): the requests read so far are served, no more.
  if (!closed_ && server_.shutting_down()) close_when_idle();
  return true;
}

Stream *Session::find(int32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Session::on_readable() {
  if (closed_) return;
  dead_streams_.clear();
  ssize_t n = transport_->read_input();
  if (n == kWouldBlock) return;
  if (n == kFailed || n == 0) {
    // The client went away (or half-closed: it sends nothing more, and
    // HTTP/2 has no request that could still complete without it).
    close_now(true);
    return;
  }
  process_input();
}

void Session::process_input() {
  if (closed_) return;
  Buffer &in = transport_->input();
  if (!in.empty() && !failing_) {
    // A SETTINGS frame whose payload comes in this read: DATA sent since its
    // header came has moved the windows (nothing is sent within mem_recv).
    if (settings_pending_) snapshot_windows();
    in_nghttp2_ = true;
    ssize_t rv = nghttp2_session_mem_recv(ng_, reinterpret_cast<const uint8_t *>(in.data()), in.size());
    in_nghttp2_ = false;
    if (closed_) return;
    if (rv < 0) {
      fail_session(nghttp2_strerror(static_cast<int>(rv)), static_cast<int>(rv));
      return;
    }
    in.consume(static_cast<size_t>(rv));
  } else if (failing_) {
    in.consume(in.size());
  }
  transport_->trim_input();
  // Requests are dispatched once nghttp2 has seen the whole read: a stream
  // the client opened and reset in it (rapid reset) never reaches the app.
  std::vector<int32_t> ready;
  ready.swap(to_dispatch_);
  for (int32_t id : ready) {
    Stream *stream = find(id);
    // (None after the connection is condemned: its GOAWAY is going out.)
    if (stream == nullptr || stream->dispatched_ || stream->ended_ || failing_) continue;
    if (final_goaway_sent_ && id > final_last_id_)
      stream->end_exchange(http::Detach::ClientGone);  // refused by the final GOAWAY, never run
    else
      dispatch(*stream);
    if (closed_) return;
  }
  ready.clear();
  ready.swap(body_ready_);
  for (int32_t id : ready) {
    Stream *stream = find(id);
    if (stream != nullptr && stream->observer_ != nullptr) stream->observer_->on_body_ready();
    if (closed_) return;
  }
  run_tunnels();
  if (closed_) return;
  send_pending();
}

void Session::dispatch(Stream &stream) {
  stream.dispatched_ = true;
  const EngineConfig &config = server_.config();
  server_.request_started();
  stream.counted_ = true;
  if (server_.metrics() != nullptr) stream.metrics_start_ns_ = clock_ns(CLOCK_MONOTONIC);
  // (CONNECT has no :path: its target is the authority, RFC 9113 §8.5; an
  // extended CONNECT has one, RFC 8441 §4.)
  std::string_view target = stream.method_ == "CONNECT" && stream.protocol_.empty() ? stream.authority_ : stream.path_;
  if (config.access_log) {
    http::append_log_target(stream.log_target_, config.root_path, target);
    if (const http::AccessLogFormat *format = config.access_format.get()) {
      stream.log_pending_ = true;
      stream.log_start_ns_ = clock_ns(CLOCK_MONOTONIC);
      stream.log_start_unix_ns_ = static_cast<int64_t>(clock_ns(CLOCK_REALTIME));
      const std::vector<std::string> &names = format->request_headers();
      stream.log_request_values_.assign(names.size(), std::string());
      for (const auto &[name, value] : stream.headers_)
        for (size_t i = 0; i < names.size(); ++i)
          if (name == names[i] && stream.log_request_values_[i].empty()) stream.log_request_values_[i] = value;
      stream.log_response_values_.assign(format->response_headers().size(), std::string());
    }
  }
  if (stream.head_error_ != 0) {
    log(LogLevel::Warning, "Invalid HTTP request received from %s:%d: header list too large (%d)",
        peer_host(transport_->peer()), transport_->peer().port, stream.head_error_);
    stream.answer_error(stream.head_error_);
    return;
  }
  if (server_.over_concurrency_limit()) {
    log(LogLevel::Warning, "Exceeded concurrency limit.");
    stream.answer_error(503);
    return;
  }
  if (stream.has_host_ && !stream.authority_.empty()) {
    // RFC 9113 §8.3.1: a client MUST NOT send a Host that differs from
    // :authority, and a server SHOULD treat such a request as malformed.
    // Letting either win would let the application's host and the routing
    // a proxy in front did (by :authority) disagree: 400, as nginx does.
    for (const auto &[name, value] : stream.headers_) {
      if (name == "host" && !http1::iequals(value, stream.authority_)) {
        log(LogLevel::Warning,
            "Invalid HTTP request received from %s:%d: \":authority\" and \"host\" differ (stream %d)",
            peer_host(transport_->peer()), transport_->peer().port, stream.id_);
        stream.answer_error(400);
        return;
      }
    }
  }
  if (stream.method_ == "CONNECT" && stream.protocol_.empty()) {
    // A tunnel: this is not a proxy (HTTP/1 answers CONNECT 405 as well).
    stream.answer_error(405);
    return;
  }
  bool websocket = false;
  if (!stream.protocol_.empty()) {
    // RFC 8441 extended CONNECT (nghttp2 checked its form: CONNECT with
    // :scheme, :path and :authority, and only once our SETTINGS offered it).
    // The one protocol spoken is WebSocket: any other is not implemented.
    if (stream.protocol_ != "websocket" || stream.method_ != "CONNECT" || !config.ws.enabled) {
      log(LogLevel::Warning, "Unsupported :protocol \"%s\" from %s:%d (HTTP/2 stream %d)", stream.protocol_.c_str(),
          peer_host(transport_->peer()), transport_->peer().port, stream.id_);
      stream.answer_error(501);
      return;
    }
    websocket = true;
  }
  http::RequestHead head;
  head.method = stream.method_;
  head.target = target;
  head.http_version = "2";
  head.headers.reserve(stream.headers_.size() + 1);
  // ASGI applications find the host in the host header: HTTP/2 clients send
  // :authority instead (RFC 9113 §8.3.1), which becomes it.
  if (!stream.has_host_ && !stream.authority_.empty()) head.headers.push_back({"host", stream.authority_});
  for (const auto &[name, value] : stream.headers_) {
    head.headers.push_back({name, value});
    if (stream.has_host_ && head.host.empty() && name == "host") head.host = value;
  }
  if (head.host.empty()) head.host = stream.authority_;
  if (websocket) {
    ws::HandshakeCheck check = ws::check_extended_connect(head);
    if (check.status != 0) {
      stream.refuse_websocket(check.status, check.reason);
      return;
    }
    stream.websocket_ = true;
    // The application side logs the handshake ("WebSocket /path" ...), not the stream.
    stream.log_pending_ = false;
    stream.ws_extensions_.assign(check.extensions.begin(), check.extensions.end());
    head.websocket = &check;
    server_.dispatcher()->on_request(stream, head);
    return;
  }
  server_.dispatcher()->on_request(stream, head);
}

void Session::gather(const char *data, size_t len) {
  if (!pieces_.empty() && pieces_.back().external == nullptr)
    pieces_.back().len += len;  // (the last run of the batch ends at its end)
  else
    pieces_.push_back({nullptr, batch_.size(), len});
  batch_.append(data, len);
  gathered_ += len;
}

bool Session::write_gathered() {
  iovec iov[kMaxPieces];
  int count = 0;
  bool sent = true;
  for (const OutPiece &piece : pieces_) {
    const char *base = piece.external != nullptr ? piece.external : batch_.data() + piece.offset;
    iov[count++] = {const_cast<char *>(base), piece.len};
    // The transport writes what the socket takes and copies the rest.
    if (count == static_cast<int>(kMaxPieces)) {
      sent = transport_->send(iov, count);
      count = 0;
      if (!sent || closed_) break;
    }
  }
  if (sent && !closed_ && count > 0) sent = transport_->send(iov, count);
  drop_gathered();
  return sent;
}

void Session::drop_gathered() {
  pieces_.clear();
  batch_.clear();
  gathered_ = 0;
  gather_full_ = false;
  // The stream buffers whose last bytes were in this write are freed now.
  for (Stream *stream : drained_) stream->out_.release_if_empty();
  drained_.clear();
}

void Session::want_send() {
  if (closed_ || in_nghttp2_) return;  // the caller's loop sends afterwards
  // Framed when the current step ends, with whatever else it writes.
  server_.hold_head(this);
}

void Session::send_pending() {
  if (closed_ || in_nghttp2_) return;
  const size_t high = server_.config().write_high_water;
  in_nghttp2_ = true;
  bool failed = false;
  int error = 0;
  while (transport_->queued_bytes() + gathered_ < high) {
    const uint8_t *data = nullptr;
    ssize_t n = nghttp2_session_mem_send(ng_, &data);
    if (n < 0) {
      failed = true;
      error = static_cast<int>(n);
      break;
    }
    if (n == 0 && !gather_full_) break;
    if (n > 0) gather(reinterpret_cast<const char *>(data), static_cast<size_t>(n));
    // (Room left for a call of mem_send: on_send_data pauses it before the
    // pieces run out, and one frame may follow.)
    if (gather_full_ || gathered_ >= kBatchSize || pieces_.size() + 8 >= kMaxPieces) {
      gather_full_ = false;
      if (!write_gathered() || closed_) break;
    }
  }
  // (Still guarded: nothing may re-enter while the gathered output is being written.)
  if (!closed_)
    write_gathered();
  else
    drop_gathered();
  // A large response grows the batch to kBatchSize; an idle connection
  // should not keep that (thousands of keep-alive connections would): past
  // a small size it is given back once written.
  if (batch_.capacity() > kBatchKeep) std::string().swap(batch_);
  if (pieces_.capacity() > 16) std::vector<OutPiece>().swap(pieces_);
  in_nghttp2_ = false;
  if (closed_) return;
  if (failed) {
    // nghttp2 could not frame (out of memory): nothing sensible can follow.
    log(LogLevel::Error, "HTTP/2 session with %s:%d failed: %s", peer_host(transport_->peer()), transport_->peer().port,
        nghttp2_strerror(error));
    close_now(true);
    return;
  }
  std::vector<int32_t> writable;
  writable.swap(writable_);
  for (int32_t id : writable) {
    Stream *stream = find(id);
    if (stream != nullptr && stream->tunnel_ != nullptr)
      stream->tunnel_->transport()->on_io(EPOLLOUT);  // its WebSocket's bytes were framed
    else if (stream != nullptr && stream->observer_ != nullptr)
      stream->observer_->on_writable();
    if (closed_) return;
  }
  if (!tunnel_hups_.empty() || !tunnel_ready_.empty()) {
    run_tunnels();
    if (closed_) return;
  }
  // Over: after a protocol error or a GOAWAY both ways, or a graceful stop
  // whose streams are done, the connection closes once its output is out.
  bool over = failing_ || (final_goaway_sent_ && streams_.empty()) ||
              (!nghttp2_session_want_read(ng_) && !nghttp2_session_want_write(ng_));
  if (over && !nghttp2_session_want_write(ng_) && transport_->output_idle()) {
    close_now(false);
    return;
  }
  update_reading();
  set_idle_deadline();
}

void Session::update_reading() {
  // A client that does not read what it asked for is not read either
  // (its acknowledgements and responses would pile up here).
  bool reading =
      !failing_ && nghttp2_session_want_read(ng_) && transport_->queued_bytes() <= server_.config().write_high_water;
  transport_->set_reading(reading);
}

bool Session::has_dispatched_stream() const {
  for (const auto &[id, stream] : streams_)
    if (stream->dispatched_) return true;
  return false;
}

bool Session::take_reset_token() {
  uint64_t now = server_.loop().now_ms();
  if (reset_refill_ms_ == 0) reset_refill_ms_ = now;
  double burst = static_cast<double>(reset_burst(server_.config().http2));
  reset_tokens_ = std::min(burst, reset_tokens_ + static_cast<double>(now - reset_refill_ms_) * kResetRate / 1000.0);
  reset_refill_ms_ = now;
  if (reset_tokens_ < 1) return false;
  reset_tokens_ -= 1;
  return true;
}

void Session::set_idle_deadline() {
  if (!got_frame_) return;  // the header (preface) deadline set at start holds
  if (has_dispatched_stream()) {
    deadline_ms_ = 0;
  } else if (deadline_ms_ == 0) {
    deadline_ms_ = server_.loop().now_ms() + server_.config().keep_alive_timeout_ms;
  }
}

void Session::on_output_progress() {
  if (closed_) return;
  send_pending();
}

void Session::fail_session(const char *why, int code) {
  // NGHTTP2_ERR_FLOODED, a bad preface, a callback's fatal error: nghttp2
  // has queued a GOAWAY where the protocol wants one.
  log(LogLevel::Debug, "HTTP/2 connection from %s:%d closed: %s (%d)", peer_host(transport_->peer()),
      transport_->peer().port, why, code);
  failing_ = true;
  transport_->input().consume(transport_->input().size());
  // After a fatal error (a flood, too many CONTINUATION frames, a bad
  // preface) nghttp2 queues no GOAWAY of its own: the client is told why all
  // the same. (Where nghttp2 did end the session, its GOAWAY stands: a second
  // terminate is a no-op. Other frames still queued, such as the server's
  // SETTINGS when the preface came with the first read, go out before it.)
  if (code == NGHTTP2_ERR_FLOODED || code == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
    nghttp2_session_terminate_session(ng_, NGHTTP2_ENHANCE_YOUR_CALM);
  else
    nghttp2_session_terminate_session(ng_, NGHTTP2_PROTOCOL_ERROR);
  send_pending();
  // A flood is a client that does not read what it asks for: the GOAWAY
  // behind its unread bytes will not reach it either.
  if (!closed_ && code == NGHTTP2_ERR_FLOODED) close_now(true);
}

void Session::connection_error(uint32_t error_code, const char *why) {
  if (failing_) return;
  log(LogLevel::Debug, "HTTP/2 connection from %s:%d closed: %s (%s)", peer_host(transport_->peer()),
      transport_->peer().port, why, nghttp2_http2_strerror(error_code));
  // nghttp2 ignores every frame after this (inside mem_recv too); the
  // GOAWAY goes out with the output, then the close (send_pending).
  nghttp2_session_terminate_session(ng_, error_code);
  failing_ = true;
  want_send();
}

void Session::snapshot_windows() {
  windows_before_settings_.clear();
  initial_window_before_settings_ = nghttp2_session_get_remote_settings(ng_, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
  for (const auto &[id, stream] : streams_) {
    int32_t window = nghttp2_session_get_stream_remote_window_size(ng_, id);
    if (window >= 0) windows_before_settings_.push_back(window);
  }
}

bool Session::initial_window_overflows(const nghttp2_settings &settings) const {
  // The new value moves every open stream's window by its difference from
  // the old one (RFC 9113 §6.9.2). (nghttp2 keeps only the last of values
  // repeated in one frame, and applies that one: so is it checked.)
  for (size_t i = 0; i < settings.niv; ++i) {
    if (settings.iv[i].settings_id != NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE) continue;
    int64_t moved = static_cast<int64_t>(settings.iv[i].value) - initial_window_before_settings_;
    for (int32_t window : windows_before_settings_)
      if (window + moved > kMaxWindow) return true;
  }
  return false;
}

void Session::on_tick(uint64_t now_ms) {
  if (closed_ || transport_->send_in_flight()) return;
  dead_streams_.clear();
  if (!transport_->output_idle() && now_ms - transport_->last_write_ms() >= kWriteStallMs) {
    log(LogLevel::Debug, "%s:%d - client read nothing for %llu s; closing", peer_host(transport_->peer()),
        transport_->peer().port, static_cast<unsigned long long>(kWriteStallMs / 1000));
    close_now(true);
    return;
  }
  // A stream whose peer keeps its window closed while output waits holds
  // the application's send() forever: it is reset after the stall time.
  bool reset = false;
  for (auto &[id, stream] : streams_) {
    if (stream->output_waiting() && now_ms - stream->last_progress_ms_ >= kWriteStallMs) {
      log(LogLevel::Debug, "HTTP/2 stream %d: the client's window stayed closed for %llu s; resetting", id,
          static_cast<unsigned long long>(kWriteStallMs / 1000));
      nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      stream->last_progress_ms_ = now_ms;
      reset = true;
    }
  }
  // A head begun and never finished (HEADERS without its CONTINUATION, a
  // frame cut short: slowloris) would hold the connection and its memory
  // forever: past the header timeout the connection ends, as an HTTP/1
  // request head does. GOAWAY(PROTOCOL_ERROR), as nginx answers a client
  // that times out mid-frame: the client broke off its own header block,
  // and nghttp2 can take no other frame until that block ends anyway.
  const uint64_t header_timeout = server_.config().header_timeout_ms;
  for (const auto &[id, stream] : streams_) {
    if (!failing_ && !stream->dispatched_ && !stream->ended_ && now_ms - stream->head_start_ms_ >= header_timeout) {
      log(LogLevel::Warning,
          "HTTP/2 connection from %s:%d: stream %d's header block not complete within %llu ms; closing",
          peer_host(transport_->peer()), transport_->peer().port, id, static_cast<unsigned long long>(header_timeout));
      nghttp2_session_terminate_session(ng_, NGHTTP2_PROTOCOL_ERROR);
      failing_ = true;
      send_pending();  // closes once the GOAWAY is out (a client that does not read: the write stall rule)
      return;
    }
  }
  if (stopping_ && !final_goaway_sent_ && now_ms - stop_started_ms_ >= kShutdownPingWaitMs) {
    // The client has not answered the stop's PING: the final GOAWAY all the same.
    send_final_goaway();
    reset = true;
  }
  if (deadline_ms_ != 0 && now_ms >= deadline_ms_) {
    deadline_ms_ = 0;
    if (!got_frame_) {
      log(LogLevel::Debug, "%s:%d - HTTP/2 preface not received within the timeout", peer_host(transport_->peer()),
          transport_->peer().port);
      close_now(false);
      return;
    }
    // (A head still coming is left to the header timeout above.)
    if (streams_.empty()) {
      // Idle keep-alive timeout: GOAWAY (no stream was cut), then the close.
      nghttp2_session_terminate_session(ng_, NGHTTP2_NO_ERROR);
      failing_ = true;
      send_pending();
      return;
    }
  }
  uint64_t interval = server_.config().http2.keep_alive_interval_ms;
  if (interval > 0 && now_ms - last_ping_ms_ >= interval) {
    last_ping_ms_ = now_ms;
    nghttp2_submit_ping(ng_, NGHTTP2_FLAG_NONE, nullptr);
    reset = true;
  }
  if (reset) send_pending();
}

bool Session::close_when_idle() {
  if (closed_ || stopping_) return false;
  stopping_ = true;
  stop_started_ms_ = server_.loop().now_ms();
  // RFC 9113 §6.8: a first GOAWAY with the largest stream ID stops the
  // client opening streams without refusing those already on their way
  // (the ones it sent before it saw the GOAWAY); the PING's ACK comes after
  // all of them, and then the final GOAWAY names the last stream processed.
  // (With one GOAWAY naming the last stream read, a busy client's streams
  // in flight were refused: h2load counted them failed on every reload.)
  // The PING goes once that GOAWAY is out (on_frame_send): nghttp2 sends a
  // PING before any GOAWAY queued with it, and an ACK of a PING that went
  // first would prove nothing.
  nghttp2_submit_shutdown_notice(ng_);
  send_pending();
  return false;
}

void Session::send_final_goaway() {
  if (final_goaway_sent_) return;
  final_goaway_sent_ = true;
  // Streams up to the last one read finish. One the client opened later
  // (it saw the first GOAWAY late, or the PING went unanswered) is refused
  // by nghttp2 once this GOAWAY is out; until then nghttp2 still takes new
  // streams, and process_input() keeps them from the application: a client
  // may retry a refused request, so the app must not have run it.
  final_last_id_ = nghttp2_session_get_last_proc_stream_id(ng_);
  nghttp2_submit_goaway(ng_, NGHTTP2_FLAG_NONE, final_last_id_, NGHTTP2_NO_ERROR, nullptr, 0);
}

bool Session::streaming() const {
  if (closed_) return false;
  for (const auto &[id, stream] : streams_)
    if (stream->response_ == Stream::Response::Started && !stream->has_length_) return true;
  return false;
}

void Session::cut_for_stop() {
  if (closed_) return;
  for (auto &[id, stream] : streams_) {
    if (stream->response_ == Stream::Response::Started && !stream->has_length_) {
      nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      stream->end_exchange(http::Detach::ServerStop);
      if (closed_) return;
    }
  }
  send_pending();
}

void Session::close_now(bool disconnected) {
  if (closed_) return;
  closed_ = true;
  // Whatever the reason, an exchange still open did not complete.
  (void)disconnected;
  // Tunnelled WebSockets lose their connection: they see it drop (1006).
  std::vector<Transport *> tunnels;
  tunnels.swap(tunnel_hups_);
  for (auto &[id, stream] : streams_) {
    if (stream->tunnel_ != nullptr) {
      tunnels.push_back(stream->tunnel_->transport());
      stream->tunnel_->detach();
      stream->tunnel_ = nullptr;
    }
    stream->end_exchange(http::Detach::ClientGone);
  }
  transport_->close();
  server_.retire(this);
  for (Transport *t : tunnels) t->on_io(EPOLLHUP);
}

void Session::schedule_tunnel(int32_t id) {
  if (tunnel_ready_.empty() || tunnel_ready_.back() != id) tunnel_ready_.push_back(id);
  want_send();
}

void Session::run_tunnels() {
  if (closed_ || in_nghttp2_) return;
  // (Bounded: a WebSocket session reads what is there each time, and one
  // that stops reading leaves its input for later.)
  for (int round = 0; round < 64 && (!tunnel_hups_.empty() || !tunnel_ready_.empty()); ++round) {
    std::vector<Transport *> hups;
    hups.swap(tunnel_hups_);
    for (Transport *t : hups) t->on_io(EPOLLHUP);
    if (closed_) return;
    std::vector<int32_t> ready;
    ready.swap(tunnel_ready_);
    for (int32_t id : ready) {
      Stream *stream = find(id);
      // The Stream outlives the calls (streams are freed only from
      // dead_streams_, outside events); its tunnel may not (a WebSocket that
      // closes frees its transport, and so the tunnel).
      bool more = false;
      for (int reads = 0; stream != nullptr && stream->tunnel_ != nullptr; ++reads) {
        Transport *t = stream->tunnel_->transport();
        if (!t->reading() || (stream->body_buf_.empty() && !stream->body_done_)) break;
        if (reads == 256) {
          more = true;  // (a large window's worth: the rest after the other tunnels)
          break;
        }
        t->on_io(EPOLLIN);
        if (closed_) return;
      }
      if (more) schedule_tunnel(id);
    }
  }
}

void Session::retire_stream(int32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  if (header_stream_ == it->second.get()) header_stream_ = nullptr;
  dead_streams_.push_back(std::move(it->second));
  streams_.erase(it);
}

// ---- nghttp2 callbacks (within mem_recv / mem_send) ----

int Session::on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *user) {
  auto &self = *static_cast<Session *>(user);
  if (self.failing_) return 0;
  switch (hd->type) {
    case NGHTTP2_CONTINUATION:
      // RFC 9113 §4.2: a frame over SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR, a
      // connection error for one that carries a field block. nghttp2 checks every
      // frame's length but a CONTINUATION's.
      if (hd->length > nghttp2_session_get_local_settings(ng, NGHTTP2_SETTINGS_MAX_FRAME_SIZE))
        self.connection_error(NGHTTP2_FRAME_SIZE_ERROR, "CONTINUATION frame over SETTINGS_MAX_FRAME_SIZE");
      break;
    case NGHTTP2_HEADERS: {
      // (Stream 0 and even IDs are nghttp2's to refuse.)
      int32_t id = hd->stream_id;
      if (id <= 0 || id % 2 == 0) break;
      if (id > self.highest_id_) {
        if (static_cast<int64_t>(id) > static_cast<int64_t>(self.highest_id_) + 2) {
          self.skipped_ids_.emplace_back(self.highest_id_ + 2, id - 2);
          if (self.skipped_ids_.size() > kMaxSkippedRanges) self.skipped_ids_.erase(self.skipped_ids_.begin());
        }
        self.highest_id_ = id;
        break;
      }
      // RFC 9113 §5.1.1: a stream ID lower than one the client opened is a connection
      // error PROTOCOL_ERROR. nghttp2, keeping no closed streams, cannot tell it from a
      // late HEADERS (trailers) of a stream already closed, and ignores both; an ID the
      // client skipped never opened, so it can only be the former.
      for (const auto &[first, last] : self.skipped_ids_) {
        if (id >= first && id <= last) {
          self.connection_error(NGHTTP2_PROTOCOL_ERROR, "HEADERS on a stream ID lower than an opened one");
          break;
        }
      }
      break;
    }
    case NGHTTP2_SETTINGS:
      // The windows that a SETTINGS_INITIAL_WINDOW_SIZE in it would move
      // (initial_window_overflows, on its receipt).
      self.windows_before_settings_.clear();
      self.settings_pending_ = false;
      if ((hd->flags & NGHTTP2_FLAG_ACK) || hd->stream_id != 0 || hd->length == 0) break;
      self.settings_pending_ = true;
      self.snapshot_windows();
      break;
    default: break;
  }
  return 0;
}

int Session::on_begin_headers(nghttp2_session *, const nghttp2_frame *frame, void *user) {
  auto &self = *static_cast<Session *>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  int32_t id = frame->hd.stream_id;
  auto stream = std::make_unique<Stream>(self, id);
  stream->head_start_ms_ = self.server_.loop().now_ms();
  // A header block comes whole before any other frame (RFC 9113 §4.3): its
  // fields go to this stream without a lookup each.
  self.header_stream_ = stream.get();
  self.streams_[id] = std::move(stream);
  return 0;
}

int Session::on_header(nghttp2_session *, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                       const uint8_t *value, size_t valuelen, uint8_t, void *user) {
  auto &self = *static_cast<Session *>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers
  Stream *stream = self.header_stream_ != nullptr && self.header_stream_->id_ == frame->hd.stream_id
                       ? self.header_stream_
                       : self.find(frame->hd.stream_id);
  if (stream == nullptr || stream->head_error_ != 0) return 0;
  // SETTINGS_MAX_HEADER_LIST_SIZE counts each field as name + value + 32
  // (RFC 9113 §6.5.2): more is answered 431, and no more is kept (an HPACK
  // bomb expands into nothing here).
  stream->header_bytes_ += namelen + valuelen + 32;
  const EngineConfig &config = self.server_.config();
  if (stream->header_bytes_ > config.http2.max_header_list_size ||
      stream->headers_.size() >= config.limits.max_headers) {
    stream->head_error_ = 431;
    stream->headers_.clear();
    return 0;
  }
  std::string_view n(reinterpret_cast<const char *>(name), namelen);
  std::string_view v(reinterpret_cast<const char *>(value), valuelen);
  // nghttp2 has checked the fields (RFC 9113 §8.2: lower-case names, no
  // connection-specific fields, pseudo-headers first and valid).
  if (!n.empty() && n[0] == ':') {
    if (n == ":method")
      stream->method_.assign(v);
    else if (n == ":path")
      stream->path_.assign(v);
    else if (n == ":authority")
      stream->authority_.assign(v);
    else if (n == ":scheme")
      stream->scheme_.assign(v);
    else if (n == ":protocol")
      stream->protocol_.assign(v);
    return 0;
  }
  if (n == "host") stream->has_host_ = true;
  if (n == "cookie") {
    // Clients split cookies into one field each for HPACK's sake; one
    // header joined with "; " is what HTTP/1 applications read (RFC 9113
    // §8.2.3; Starlette reads only the first cookie header).
    for (auto &[name, value] : stream->headers_) {
      if (name == "cookie") {
        value.append("; ").append(v);
        return 0;
      }
    }
  }
  if (stream->headers_.empty()) stream->headers_.reserve(8);
  stream->headers_.emplace_back(n, v);
  return 0;
}

int Session::on_frame_recv(nghttp2_session *, const nghttp2_frame *frame, void *user) {
  auto &self = *static_cast<Session *>(user);
  if (!self.got_frame_) {
    self.got_frame_ = true;
    self.deadline_ms_ = 0;
  }
  bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
      // RFC 9113 §6.9.2: a change of SETTINGS_INITIAL_WINDOW_SIZE that takes any window
      // past 2^31-1 is a connection error FLOW_CONTROL_ERROR (nghttp2 resets the stream).
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && self.initial_window_overflows(frame->settings))
        self.connection_error(NGHTTP2_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window");
      self.windows_before_settings_.clear();
      self.settings_pending_ = false;
      break;
    case NGHTTP2_RST_STREAM:
      if (Stream *stream = self.find(frame->hd.stream_id)) stream->reset_ = true;
      break;
    case NGHTTP2_HEADERS: {
      Stream *stream = self.find(frame->hd.stream_id);
      if (stream == nullptr) return 0;
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        stream->body_done_ = end_stream;
        self.to_dispatch_.push_back(stream->id_);
      } else if (end_stream) {
        // Trailers: accepted and not passed on (ASGI has no request trailers).
        stream->body_done_ = true;
        self.body_ready_.push_back(stream->id_);
        if (stream->tunnel_ != nullptr) self.tunnel_ready_.push_back(stream->id_);
      }
      break;
    }
    case NGHTTP2_PING:
      if ((frame->hd.flags & NGHTTP2_FLAG_ACK) != 0 && self.stopping_ &&
          memcmp(frame->ping.opaque_data, kShutdownPing, sizeof kShutdownPing) == 0)
        self.send_final_goaway();
      break;
    case NGHTTP2_DATA:
      if (end_stream) {
        if (Stream *stream = self.find(frame->hd.stream_id)) {
          stream->body_done_ = true;
          self.body_ready_.push_back(stream->id_);
          // A WebSocket's client ended its side: as a TCP FIN, read as the end.
          if (stream->tunnel_ != nullptr) self.tunnel_ready_.push_back(stream->id_);
        }
      }
      break;
    default: break;
  }
  return 0;
}

int Session::on_data_chunk(nghttp2_session *ng, uint8_t, int32_t stream_id, const uint8_t *data, size_t len,
                           void *user) {
  auto &self = *static_cast<Session *>(user);
  // The connection's window is given back at once: each stream's own
  // window bounds what it may buffer.
  nghttp2_session_consume_connection(ng, len);
  Stream *stream = self.find(stream_id);
  if (stream == nullptr) return 0;
  if (stream->tunnel_ != nullptr) {
    // A WebSocket's bytes: its session reads them (and opens the window).
    stream->body_buf_.append(reinterpret_cast<const char *>(data), len);
    stream->unconsumed_ += len;
    if (self.tunnel_ready_.empty() || self.tunnel_ready_.back() != stream_id) self.tunnel_ready_.push_back(stream_id);
    return 0;
  }
  if (stream->ended_) {
    // The response is complete: the rest of the body is not wanted.
    nghttp2_session_consume_stream(ng, stream_id, len);
    return 0;
  }
  stream->body_buf_.append(reinterpret_cast<const char *>(data), len);
  stream->unconsumed_ += len;
  if (self.body_ready_.empty() || self.body_ready_.back() != stream_id) self.body_ready_.push_back(stream_id);
  return 0;
}

int Session::on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user) {
  auto &self = *static_cast<Session *>(user);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    // A graceful stop's first GOAWAY is out: now its PING (close_when_idle).
    if (self.stopping_ && !self.stop_ping_sent_ && !self.final_goaway_sent_ &&
        frame->goaway.last_stream_id == kMaxStreamId) {
      self.stop_ping_sent_ = true;
      nghttp2_submit_ping(ng, NGHTTP2_FLAG_NONE, kShutdownPing);
    }
    return 0;
  }
  if (frame->hd.type == NGHTTP2_RST_STREAM) {
    if (Stream *stream = self.find(frame->hd.stream_id)) stream->reset_ = true;
    return 0;
  }
  if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  Stream *stream = self.find(frame->hd.stream_id);
  // The response is complete and the client is still sending a body nobody
  // will read: RST_STREAM(NO_ERROR) tells it to stop (RFC 9113 §8.1).
  if (stream != nullptr && !stream->body_done_)
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, stream->id_, NGHTTP2_NO_ERROR);
  return 0;
}

int Session::on_send_data(nghttp2_session *, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                          nghttp2_data_source *source, void *user) {
  auto &self = *static_cast<Session *>(user);
  auto &stream = *static_cast<Stream *>(source->ptr);
  static constexpr char kZeros[256] = {};
  self.gather(reinterpret_cast<const char *>(framehd), 9);
  size_t padding = frame->data.padlen > 0 ? frame->data.padlen - 1 : 0;
  if (frame->data.padlen > 0) {
    char pad_length = static_cast<char>(padding);
    self.gather(&pad_length, 1);
  }
  if (self.transport_->tls() != nullptr) {
    // TLS: the payload joins the batch (the one copy, from the stream's
    // buffer), so that frame headers and payloads share records: the TLS
    // stream makes a record of each piece of 4 KiB or more, and a 9-byte
    // frame header between two payloads would be a record of its own.
    if (self.batch_.capacity() < kBatchSize + length + 64) self.batch_.reserve(kBatchSize + length + 64);
    self.gather(stream.out_.data(), length);
  } else {
    // The payload is written from the stream's buffer: consume() only moves
    // its read index, and nothing appends to it before the write (no
    // application code runs while frames are gathered).
    self.pieces_.push_back({stream.out_.data(), 0, length});
    self.gathered_ += length;
  }
  stream.out_.consume(length);
  if (stream.out_.empty()) self.drained_.push_back(&stream);
  if (padding > 0) self.gather(kZeros, padding);
  // A full write: nghttp2 takes the frame as sent and returns from mem_send
  // (PAUSE), the gathered output is written, and framing goes on.
  if (self.gathered_ >= kBatchSize || self.pieces_.size() + 4 >= kMaxPieces) {
    self.gather_full_ = true;
    return NGHTTP2_ERR_PAUSE;
  }
  return 0;
}

int Session::on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *user) {
  auto &self = *static_cast<Session *>(user);
  Stream *stream = self.find(stream_id);
  if (stream == nullptr) return 0;
  if (stream->file_fd_ >= 0) {
    ::close(stream->file_fd_);
    stream->file_fd_ = -1;
  }
  if (stream->tunnel_ != nullptr) {
    // The stream ended (reset either way, or closed) under its WebSocket:
    // as a dropped TCP connection, the WebSocket sees 1006 (run_tunnels,
    // once nghttp2 has returned).
    self.tunnel_hups_.push_back(stream->tunnel_->transport());
    stream->tunnel_->detach();
    stream->tunnel_ = nullptr;
  }
  // Reset by the client (or by us) before the response was complete.
  if (!stream->ended_) {
    // The application's task goes on after the detach while the stream no
    // longer counts against SETTINGS_MAX_CONCURRENT_STREAMS: a client that
    // makes the server reset served streams (DATA past content-length,
    // window overflow: MadeYouReset, CVE-2025-8671) could start tasks
    // without bound. Such resets share the budget of the client's own
    // (nghttp2 limits only the RST_STREAM frames it receives).
    if (stream->dispatched_ && (stream->reset_ || error_code != NGHTTP2_NO_ERROR) && !self.failing_ &&
        !self.take_reset_token()) {
      log(LogLevel::Warning, "HTTP/2 connection from %s:%d: too many streams reset while served; closing",
          peer_host(self.transport_->peer()), self.transport_->peer().port);
      nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM);
      self.failing_ = true;
    }
    stream->end_exchange(http::Detach::ClientGone);
  }
  self.retire_stream(stream_id);
  return 0;
}

const nghttp2_session_callbacks *Session::callbacks() {
  // One table for every session (nghttp2 copies what it needs at session creation).
  static nghttp2_session_callbacks *const shared = [] {
    nghttp2_session_callbacks *cbs = nullptr;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return static_cast<nghttp2_session_callbacks *>(nullptr);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
  }();
  return shared;
}

}  // namespace pronghorn::http2
