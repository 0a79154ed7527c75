#include "engine/http1/session.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "engine/engine.h"
#include "engine/http/target.h"
#include "engine/http2/session.h"
#include "engine/log.h"
#include "engine/net/tls.h"
#include "engine/ws/session.h"

namespace pronghorn::http1 {

namespace {
constexpr size_t kBodyReadSize = 256 * 1024;
constexpr uint64_t kWriteStallMs = 60000;  // no byte accepted by the socket for this long
constexpr uint64_t kLingerMs = 2000;

uint64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

Session::Session(Engine &server, std::unique_ptr<Transport> transport)
    : server_(server), transport_(std::move(transport)), in_(transport_->input()), parser_(server.config().limits) {
  transport_->set_handler(this);
}

Session::~Session() = default;

void Session::on_released() {
  server_.release(this);
}

bool Session::start() {
  if (!transport_->start()) return false;
  set_deadline(Deadline::KeepAlive, server_.config().keep_alive_timeout_ms);
  return true;
}

void Session::set_deadline(Deadline kind, uint64_t ms) {
  deadline_kind_ = kind;
  deadline_ms_ = kind == Deadline::None ? 0 : server_.loop().now_ms() + ms;
}

void Session::on_tick(uint64_t now_ms) {
  // A send in flight finishes within microseconds (the thread never waits).
  if (closed_ || transport_->send_in_flight()) return;
  if (!transport_->output_idle()) {
    // A response is still going out: no idle timer applies while the client
    // keeps reading; only a client that stops reading altogether is dropped.
    if (now_ms - transport_->last_write_ms() >= kWriteStallMs) {
      log(LogLevel::Debug, "%s:%d - client read nothing for %llu s; closing", peer().host.c_str(), peer().port,
          static_cast<unsigned long long>(kWriteStallMs / 1000));
      close_now(true);
    }
    return;
  }
  if (deadline_kind_ == Deadline::None || now_ms < deadline_ms_) return;
  switch (deadline_kind_) {
    case Deadline::KeepAlive: close_now(false); break;
    case Deadline::Header:
      // A client that sends a head too slowly (slowloris) gets 408 and a close.
      log(LogLevel::Debug, "%s:%d - request head not received within the timeout", peer().host.c_str(), peer().port);
      reject({408, "request head timeout"});
      break;
    case Deadline::Linger: close_now(false); break;
    case Deadline::None: break;
  }
}

void Session::update_interest() {
  if (closed_) return;
  bool reading = false;
  switch (phase_) {
    case Phase::Head:
      // After a graceful stop began, a connection that served a request reads
      // nothing more (its next request would not be served).
      reading = !(stop_after_response_ && exchanges_ > 0) && !pipeline_paused_;
      break;
    case Phase::Lingering: reading = true; break;
    case Phase::Active:
      // Keep reading while body is wanted and below the high-water mark; once
      // the body is complete, read only to notice a disconnect, and stop when
      // pipelined bytes pile up.
      reading = !body_done_ ? (discard_body_ || body_buf_.size() < server_.config().body_high_water)
                            : in_.size() < server_.config().limits.max_head;
      break;
    case Phase::Closing: reading = false; break;
  }
  transport_->set_reading(reading);
}

ssize_t Session::read_result(ssize_t n) {
  if (n == kWouldBlock) return -1;
  if (n == kFailed) {
    close_now(true);
    return -1;
  }
  if (n == 0) {
    // End of stream. uvicorn treats a half-close as a disconnect too; but a
    // response that is complete and still queued is sent before closing.
    bool in_flight = phase_ == Phase::Active && response_ != ResponseState::Done;
    if (!in_flight && !transport_->output_idle() && phase_ != Phase::Lingering) {
      begin_close(false);
      return -1;
    }
    close_now(in_flight);
    return -1;
  }
  return n;
}

void Session::on_readable() {
  // (Not from a stream that holds input, TLS: there the body goes through
  // the input buffer. A direct read would be safe now that the transport
  // comes back for input the stream holds (has_buffered_input), but it was
  // not measured.)
  if (phase_ == Phase::Active && !body_done_ && !discard_body_ && in_.empty() && decoder_.length_framed() &&
      !transport_->buffers_input()) {
    // Content-Length body with nothing else buffered: read straight into the
    // body buffer, skipping the copy through the input buffer.
    uint64_t left = decoder_.remaining();
    size_t want = left < kBodyReadSize ? static_cast<size_t>(left) : kBodyReadSize;
    ssize_t n = read_result(transport_->read_into(body_buf_.prepare(want), want));
    if (n < 0) return;
    body_buf_.commit(static_cast<size_t>(n));
    if (decoder_.skip_length(static_cast<size_t>(n))) body_done_ = true;
    notify_body_ = true;
    process_input();
    return;
  }
  ssize_t n = read_result(transport_->read_input());
  if (n < 0) {
    if (!closed_) in_.release_if_empty();
    return;
  }
  if (phase_ == Phase::Lingering || phase_ == Phase::Closing) {
    in_.consume(in_.size());
    in_.release_if_empty();
    return;
  }
  process_input();
  if (closed_) return;
  // Between requests, a partial head keeps only its own size; while a body
  // flows the read buffer stays for the next read.
  if (phase_ == Phase::Head)
    transport_->trim_input();
  else
    in_.release_if_empty();
}

void Session::process_input() {
  // begin_exchange() calls into the application, which may complete the
  // response at once and come back here: run again instead of recursing.
  if (processing_) {
    process_again_ = true;
    return;
  }
  processing_ = true;
  do {
    process_again_ = false;
    process_once();
  } while (process_again_ && !closed_);
  processing_ = false;
  if (closed_) return;
  update_interest();
  if (notify_body_) {
    notify_body_ = false;
    if (observer_ != nullptr) observer_->on_body_ready();
  }
}

void Session::process_once() {
  while (!closed_) {
    if (phase_ == Phase::Head) {
      // After a graceful stop began, only a connection's first request is served.
      if (in_.empty() || (stop_after_response_ && exchanges_ > 0)) return;
      if (exchanges_ == 0 && server_.config().http2.enabled) {
        // The connection's first bytes choose the protocol: ALPN h2 on TLS,
        // or the HTTP/2 preface on a plain connection (prior knowledge).
        Protocol protocol = first_protocol();
        if (protocol == Protocol::Undecided) {
          if (deadline_kind_ != Deadline::Header) set_deadline(Deadline::Header, server_.config().header_timeout_ms);
          return;
        }
        if (protocol == Protocol::Http2) {
          hand_to_http2();
          return;
        }
      }
      if (transport_->queued_bytes() > server_.config().write_high_water) {
        // Responses to earlier requests are still queued: the next one waits
        // until they drain (on_output_progress() resumes), and reading stops meanwhile.
        pipeline_paused_ = true;
        return;
      }
      Result r = parser_.parse(in_.data(), in_.size(), head_);
      if (r.status == Status::Incomplete) {
        if (deadline_kind_ != Deadline::Header) set_deadline(Deadline::Header, server_.config().header_timeout_ms);
        return;
      }
      if (r.status == Status::Error) {
        reject(parser_.error());
        return;
      }
      begin_exchange(r.consumed);
      continue;
    }
    if (phase_ != Phase::Active || body_done_) return;
    if (!decode_buffered_body()) return;
    if (!(body_done_ && discard_body_)) return;
    end_exchange();
  }
}

bool Session::decode_buffered_body() {
  while (!body_done_ && !in_.empty()) {
    if (!discard_body_ && body_buf_.size() >= server_.config().body_high_water) return true;
    BodyDecoder::Output out;
    Result r = decoder_.decode(in_.data(), in_.size(), out);
    if (out.data_len > 0 && !discard_body_) {
      body_buf_.append(in_.data() + out.data_off, out.data_len);
      notify_body_ = true;
    }
    if (r.status == Status::Error) {
      reject(decoder_.error());
      return false;
    }
    in_.consume(r.consumed);
    if (r.status == Status::Complete) {
      body_done_ = true;
      notify_body_ = true;
    }
    if (r.consumed == 0) break;
  }
  return true;
}

void Session::begin_exchange(size_t head_len) {
  phase_ = Phase::Active;
  response_ = ResponseState::NotStarted;
  discard_body_ = false;
  continue_sent_ = false;
  head_pending_ = false;
  wants_writable_ = false;
  body_sent_ = 0;
  body_buf_.consume(body_buf_.size());
  expect_continue_ = head_.expect_continue;
  keep_alive_ = head_.keep_alive;
  head_method_ = head_.method == "HEAD";
  version_minor_ = head_.version_minor;
  switch (head_.framing) {
    case BodyFraming::None: decoder_.start_none(); break;
    case BodyFraming::Length: decoder_.start_length(head_.content_length); break;
    case BodyFraming::Chunked: decoder_.start_chunked(); break;
  }
  body_done_ = decoder_.done();
  ws_key_.clear();
  has_log_client_ = false;
  if (server_.config().access_log || head_.upgrade) {
    method_.assign(head_.method);
    target_.clear();
    http::append_log_target(target_, server_.config().root_path, head_.target);
    if (const http::AccessLogFormat *format = server_.config().access_format.get()) {
      log_start_ns_ = clock_ns(CLOCK_MONOTONIC);
      log_start_unix_ns_ = static_cast<int64_t>(clock_ns(CLOCK_REALTIME));
      log_pending_ = false;
      const std::vector<std::string> &names = format->request_headers();
      log_request_values_.assign(names.size(), std::string());
      for (const http::Header &h : head_.headers)
        for (size_t i = 0; i < names.size(); ++i)
          if (h.name == names[i] && log_request_values_[i].empty()) log_request_values_[i].assign(h.value);
      log_response_values_.assign(format->response_headers().size(), std::string());
    }
  }
  response_status_ = 0;
  if (server_.metrics() != nullptr) {
    metrics_method_ = metrics::method_of(head_.method);
    metrics_start_ns_ = clock_ns(CLOCK_MONOTONIC);
  }
  set_deadline(Deadline::None, 0);
  parser_.reset();
  // The head's views stay valid: consume() moves an index, and nothing writes
  // to the buffer before the dispatcher returns.
  in_.consume(head_len);
  server_.request_started();
  ++exchanges_;
  if (server_.over_concurrency_limit()) {
    log(LogLevel::Warning, "Exceeded concurrency limit.");
    keep_alive_ = false;
    head_buf_ = error_response(503);
    body_sent_ = error_body(503).size();  // what the access log reports
    response_ = ResponseState::Started;
    response_status_ = 503;
    if (server_.config().access_log) write_access_log(503);
    iovec iov{head_buf_.data(), head_buf_.size()};
    if (!send_iov(&iov, 1)) return;
    finish_response();
    return;
  }
  if (head_.upgrade && !begin_upgrade()) return;
  // Body bytes that came with the head go to the body buffer first: the app
  // may run now (its first step is eager) and read them without waiting.
  // The head's views stay valid: the decoder only moves in_'s read index.
  if (!body_done_ && !decode_buffered_body()) return;
  server_.dispatcher()->on_request(*this, static_cast<const http::RequestHead &>(head_));
}

bool Session::begin_upgrade() {
  const ws::Settings &settings = server_.config().ws;
  if (!settings.enabled || !ws::is_upgrade_request(head_)) {
    // Served as plain HTTP, as uvicorn serves it, with its warnings.
    log(LogLevel::Warning, "Unsupported upgrade request.");
    if (!settings.enabled)
      log(LogLevel::Warning,
          "No supported WebSocket library detected. Please use \"pip install 'uvicorn[standard]'\", or install "
          "'websockets' or 'wsproto' manually.");
    return true;
  }
  ws_check_ = ws::check_handshake(head_);
  if (ws_check_.status != 0) {
    log(LogLevel::Debug, "%s:%d - WebSocket handshake refused: %s", peer().host.c_str(), peer().port, ws_check_.reason);
    std::string body = "Failed to open a WebSocket connection: ";
    body.append(ws_check_.reason);
    body.append(".\n");
    HeaderList headers{{"content-type", "text/plain; charset=utf-8"}};
    std::string length = std::to_string(body.size());
    headers.emplace_back("content-length", length);
    // RFC 6455 §4.4: the versions this server speaks.
    if (ws_check_.status == 426) headers.emplace_back("sec-websocket-version", "13");
    keep_alive_ = false;
    const char *error = start_response(ws_check_.status, headers);
    if (error == nullptr) {
      // uvicorn's line for it (the websockets library's); the access line is ours.
      log(LogLevel::Info, "connection rejected (%d %s)", ws_check_.status, reason_phrase(ws_check_.status));
      write_body(body.data(), body.size(), false);
    }
    return false;
  }
  // What accept_websocket() needs outlives the head's views.
  ws_key_.assign(ws_check_.key);
  ws_extensions_.assign(ws_check_.extensions.begin(), ws_check_.extensions.end());
  head_.websocket = &ws_check_;
  // A denial (an HTTP response instead of 101) ends the connection.
  keep_alive_ = false;
  return true;
}

ws::Session *Session::accept_websocket(std::string_view subprotocol, const HeaderList &headers, const char **error) {
  *error = nullptr;
  if (closed_ || ws_key_.empty() || phase_ != Phase::Active || response_ != ResponseState::NotStarted) return nullptr;
  const ws::Settings &settings = server_.config().ws;
  ws::DeflateParams deflate;
  std::string extension;
  bool compress = settings.per_message_deflate && !ws_extensions_.empty() &&
                  ws::negotiate_deflate(ws_extensions_, deflate, extension);
  std::string accept = ws::accept_key(ws_key_);
  HeaderList all{{"upgrade", "websocket"}, {"connection", "Upgrade"}, {"sec-websocket-accept", accept}};
  if (compress) all.emplace_back("sec-websocket-extensions", extension);
  if (!subprotocol.empty()) all.emplace_back("sec-websocket-protocol", subprotocol);
  all.insert(all.end(), headers.begin(), headers.end());
  DefaultHeaders defaults;
  defaults.date = server_.config().date_header ? server_.date() : std::string_view();
  defaults.server = server_.config().server_header;
  defaults.extra = &server_.config().extra_headers;
  RequestContext request{false, 1, true};
  head_buf_.clear();
  *error = build_response_head(head_buf_, 101, all, defaults, request, plan_);
  if (*error != nullptr) return nullptr;
  iovec iov{head_buf_.data(), head_buf_.size()};
  if (!send_iov(&iov, 1)) return nullptr;
  // As an HTTP exchange the handshake ends here; the WebSocket session is
  // not a request whose duration means anything.
  response_status_ = 101;
  count_exchange_end(false);
  // The connection is the WebSocket session's from here: this session ends
  // without closing the transport (the exchange stays counted as active
  // until the WebSocket closes).
  ExchangeObserver *observer = observer_;
  observer_ = nullptr;
  closed_ = true;
  response_ = ResponseState::Done;
  std::unique_ptr<Transport> transport = std::move(transport_);
  Transport &t = *transport;
  server_.retire(this);
  auto *session = new ws::Session(server_, std::move(transport), compress ? &deflate : nullptr);
  if (server_.adopt_session(session, t) == nullptr) {
    // Could not start (closed): the observer learns it as from any exchange.
    if (observer != nullptr) observer->on_detach(http::Detach::ClientGone);
    return nullptr;
  }
  return session;
}

Session::Protocol Session::first_protocol() const {
  const TlsInfo *tls = transport_->tls();
  if (tls != nullptr && tls->alpn == "h2") return Protocol::Http2;
  size_t n = std::min<size_t>(in_.size(), http2::kClientPrefaceSize);
  if (memcmp(in_.data(), http2::kClientPreface, n) != 0) return Protocol::Http1;
  return n == http2::kClientPrefaceSize ? Protocol::Http2 : Protocol::Undecided;
}

void Session::hand_to_http2() {
  // As after a WebSocket handshake: this session ends without closing the
  // transport, whose input (the preface and what followed) the HTTP/2
  // session reads first.
  closed_ = true;
  set_deadline(Deadline::None, 0);
  std::unique_ptr<Transport> transport = std::move(transport_);
  Transport &t = *transport;
  server_.retire(this);
  server_.adopt_session(new http2::Session(server_, std::move(transport)), t);
}

void Session::end_exchange() {
  phase_ = Phase::Head;
  body_buf_.consume(body_buf_.size());
  body_buf_.release_if_empty();
  if (!keep_alive_ || stop_after_response_) {
    begin_close(false);
    return;
  }
  set_deadline(in_.empty() ? Deadline::KeepAlive : Deadline::Header,
               in_.empty() ? server_.config().keep_alive_timeout_ms : server_.config().header_timeout_ms);
  transport_->release_idle_buffers();
}

void Session::detach_observer(bool disconnected) {
  ExchangeObserver *observer = observer_;
  observer_ = nullptr;
  if (observer != nullptr)
    observer->on_detach(!disconnected   ? http::Detach::Complete
                        : cut_for_stop_ ? http::Detach::ServerStop
                                        : http::Detach::ClientGone);
}

void Session::cut_for_stop() {
  cut_for_stop_ = true;
  close_now(true);
}

void Session::finish_response() {
  response_ = ResponseState::Done;
  finish_access_log();
  count_exchange_end();
  server_.request_finished();
  detach_observer(false);
  if (closed_) return;
  if (!keep_alive_ || stop_after_response_) {
    // Unread request bytes may still arrive: linger so that the client reads
    // the response before it sees a reset.
    begin_close(!body_done_ || !in_.empty());
    return;
  }
  if (!body_done_) {
    if (expect_continue_ && !continue_sent_) {
      // The client was never told to send the body; it may or may not.
      keep_alive_ = false;
      begin_close(false);
      return;
    }
    // The app did not read the whole body: read and drop the rest, within the
    // header timeout, so that a client that never sends it cannot hold us.
    discard_body_ = true;
    body_buf_.consume(body_buf_.size());
    set_deadline(Deadline::Header, server_.config().header_timeout_ms);
  } else {
    end_exchange();
  }
  if (phase_ != Phase::Closing) process_input();
}

void Session::body_taken() {
  if (closed_ || phase_ != Phase::Active) return;
  if (expect_continue_ && !continue_sent_ && !body_done_ && response_ == ResponseState::NotStarted) {
    // RFC 9110 §10.1.1: the interim 100 goes out when the app asks for the body.
    continue_sent_ = true;
    iovec iov{const_cast<char *>(kContinueResponse.data()), kContinueResponse.size()};
    if (!send_iov(&iov, 1)) return;
  }
  process_input();
}

const char *Session::start_response(int status, const HeaderList &headers) {
  DefaultHeaders defaults;
  defaults.date = server_.config().date_header ? server_.date() : std::string_view();
  defaults.server = server_.config().server_header;
  defaults.extra = &server_.config().extra_headers;
  RequestContext request{head_method_, version_minor_, keep_alive_ && !stop_after_response_};
  head_buf_.clear();
  const char *error = build_response_head(head_buf_, status, headers, defaults, request, plan_);
  if (error != nullptr) return error;
  keep_alive_ = plan_.keep_alive;
  response_ = ResponseState::Started;
  response_status_ = status;
  head_pending_ = true;
  // Held to go out with the first body bytes in one write; if the step of
  // the event loop ends first, the server sends it alone (uvicorn writes it
  // at http.response.start: a slow stream's client sees the head at once).
  server_.hold_head(this);
  // A WebSocket handshake's answers are logged by the application side, as
  // uvicorn logs them ("WebSocket /path" 403).
  if (server_.config().access_log && ws_key_.empty()) {
    if (const http::AccessLogFormat *format = server_.config().access_format.get()) {
      const std::vector<std::string> &names = format->response_headers();
      for (const auto &[name, value] : headers)
        for (size_t i = 0; i < names.size(); ++i)
          if (iequals(name, names[i]) && log_response_values_[i].empty()) log_response_values_[i].assign(value);
    }
    write_access_log(status);
  }
  return nullptr;
}

void Session::count_exchange_end(bool observe_duration) {
  metrics::WorkerSlot *m = server_.metrics();
  if (m == nullptr) return;
  uint64_t duration_ns = observe_duration ? clock_ns(CLOCK_MONOTONIC) - metrics_start_ns_ : 0;
  m->request_ended(metrics_method_, response_status_, duration_ns, observe_duration);
}

void Session::finish_access_log() {
  if (!log_pending_) return;
  log_pending_ = false;
  const http::AccessLogFormat &format = *server_.config().access_format;
  http::AccessRecord record;
  record.peer = &log_client();
  record.method = method_;
  record.target = target_;
  record.protocol = version_minor_ == 1 ? "HTTP/1.1" : "HTTP/1.0";
  record.status = log_status_;
  record.body_bytes = body_sent_;
  record.duration_ns = clock_ns(CLOCK_MONOTONIC) - log_start_ns_;
  record.start_unix_ns = log_start_unix_ns_;
  record.request_values = &log_request_values_;
  record.response_values = &log_response_values_;
  std::string line;
  format.render(line, record);
  if (server_.config().access_line_hook != nullptr) {
    if (!line.empty() && line.back() == '\n') line.pop_back();
    server_.config().access_line_hook(server_.config().access_ctx, line);
    return;
  }
  server_.append_log(line);
}

void Session::write_access_log(int status) {
  const EngineConfig &config = server_.config();
  if (config.access_format != nullptr) {
    log_status_ = status;
    log_pending_ = true;
    return;
  }
  if (config.access_hook != nullptr) {
    config.access_hook(config.access_ctx, log_client(), method_, target_, version_minor_ == 1 ? "1.1" : "1.0", status);
    return;
  }
  std::string line;
  http::append_default_access_line(line, log_client(), method_, target_, version_minor_ == 1 ? "HTTP/1.1" : "HTTP/1.0",
                                   status, reason_phrase(status), config.access_log_colours);
  server_.append_log(line);
}

WriteStatus Session::write_body(const char *data, size_t len, bool more) {
  if (closed_) return WriteStatus::Closed;
  iovec iov[4];
  int count = 0;
  if (head_pending_) {
    iov[count++] = {head_buf_.data(), head_buf_.size()};
    head_pending_ = false;
  }
  char size_line[24];
  static const char kChunkEndLast[] = "\r\n0\r\n\r\n";
  switch (plan_.framing) {
    case Framing::NoBody: break;
    case Framing::ContentLength:
      if (body_sent_ + len > plan_.content_length) {
        log(LogLevel::Error, "Response content longer than Content-Length");
        close_now(false);
        return WriteStatus::TooLong;
      }
      if (len > 0) iov[count++] = {const_cast<char *>(data), len};
      body_sent_ += len;
      if (!more && body_sent_ < plan_.content_length) {
        if (count > 0) send_iov(iov, count);
        log(LogLevel::Error, "Response content shorter than Content-Length");
        close_now(false);
        return WriteStatus::TooShort;
      }
      break;
    case Framing::Chunked:
      if (len > 0) {
        size_t n = format_hex(size_line, len);
        size_line[n++] = '\r';
        size_line[n++] = '\n';
        iov[count++] = {size_line, n};
        iov[count++] = {const_cast<char *>(data), len};
        iov[count++] = more ? iovec{const_cast<char *>(kChunkEnd.data()), kChunkEnd.size()}
                            : iovec{const_cast<char *>(kChunkEndLast), sizeof kChunkEndLast - 1};
      } else if (!more) {
        iov[count++] = {const_cast<char *>(kLastChunk.data()), kLastChunk.size()};
      }
      body_sent_ += len;
      break;
    case Framing::CloseDelimited:
      if (len > 0) iov[count++] = {const_cast<char *>(data), len};
      body_sent_ += len;
      break;
  }
  // An empty body message with more to come still sends the head: apps use it
  // to flush headers before a slow stream (uvicorn sends them at start).
  if (count > 0 && !send_iov(iov, count)) return WriteStatus::Closed;
  if (!more) {
    finish_response();
    return WriteStatus::Ok;
  }
  if (transport_->queued_bytes() > server_.config().write_high_water) {
    wants_writable_ = true;
    return WriteStatus::Blocked;
  }
  return WriteStatus::Ok;
}

WriteStatus Session::send_file(int file_fd, uint64_t offset, uint64_t len) {
  if (closed_) {
    ::close(file_fd);
    return WriteStatus::Closed;
  }
  if (plan_.framing == Framing::ContentLength && body_sent_ + len != plan_.content_length) {
    ::close(file_fd);
    log(LogLevel::Error, "Response content %s than Content-Length",
        body_sent_ + len > plan_.content_length ? "longer" : "shorter");
    close_now(false);
    return body_sent_ + len > plan_.content_length ? WriteStatus::TooLong : WriteStatus::TooShort;
  }
  if (plan_.framing == Framing::NoBody || len == 0) {
    ::close(file_fd);
    return write_body(nullptr, 0, false);
  }
  std::string prefix;
  if (head_pending_) {
    prefix = head_buf_;
    head_pending_ = false;
  }
  bool chunked = plan_.framing == Framing::Chunked;
  if (chunked) append_chunk_size(prefix, len);
  if (!prefix.empty()) {
    iovec iov{prefix.data(), prefix.size()};
    if (!send_iov(&iov, 1)) {
      ::close(file_fd);
      return WriteStatus::Closed;
    }
  }
  if (!transport_->send_file(file_fd, offset, len)) return WriteStatus::Closed;
  if (chunked) {
    static const char kTail[] = "\r\n0\r\n\r\n";
    iovec tail{const_cast<char *>(kTail), sizeof kTail - 1};
    if (!transport_->send(&tail, 1)) return WriteStatus::Closed;
  }
  body_sent_ += len;
  transport_->flush();
  if (closed_) return WriteStatus::Closed;
  finish_response();
  return WriteStatus::Ok;
}

void Session::fail() {
  if (closed_) return;
  if (response_ == ResponseState::NotStarted) {
    keep_alive_ = false;
    head_buf_ = error_response(500);
    body_sent_ = error_body(500).size();  // what the access log reports
    response_ = ResponseState::Started;
    response_status_ = 500;
    if (server_.config().access_log && ws_key_.empty()) write_access_log(500);
    iovec iov{head_buf_.data(), head_buf_.size()};
    if (!send_iov(&iov, 1)) return;
    finish_response();
    return;
  }
  if (response_ == ResponseState::Started) {
    // The client gets what was sent, then the close (an unfinished body):
    // the head, if still held, and any queued output go out first.
    send_held_head();
    if (closed_) return;
    response_ = ResponseState::Done;
    finish_access_log();
    count_exchange_end();
    server_.request_finished();
    detach_observer(false);
    if (closed_) return;
    keep_alive_ = false;
    // As after any response: linger if request bytes may still come, so
    // that the client reads what was sent before it sees a reset.
    begin_close(!body_done_ || !in_.empty());
  }
}

void Session::send_held_head() {
  if (!head_pending_ || closed_) return;
  head_pending_ = false;
  iovec iov{head_buf_.data(), head_buf_.size()};
  send_iov(&iov, 1);
}

bool Session::close_when_idle() {
  stop_after_response_ = true;
  if (closed_) return false;
  if (phase_ == Phase::Head && exchanges_ > 0 && pipeline_paused_) {
    // Pipelined requests were waiting for queued responses to drain: they
    // will not be served now. Close once the queued responses have gone out.
    begin_close(false);
    return false;
  }
  if (phase_ != Phase::Head || !in_.empty()) return false;
  if (!transport_->output_idle()) {
    // The last response is still going out: close once it has.
    if (exchanges_ > 0) begin_close(false);
    return false;
  }
  if (exchanges_ > 0) {
    // Idle keep-alive connection: close it now (clients retry a request on an
    // idle connection that closed before any response byte).
    close_now(false);
    return false;
  }
  // Accepted but not read yet: its client sent a request, or is about to, and
  // will not retry it. Serve what is already there (with Connection: close);
  // give one that sent nothing a short grace period.
  on_readable();
  if (!closed_ && phase_ == Phase::Head && in_.empty())
    set_deadline(Deadline::KeepAlive, std::min<uint64_t>(1000, server_.config().keep_alive_timeout_ms));
  return false;
}

void Session::reject(const ParseError &error) {
  log(LogLevel::Warning, "Invalid HTTP request received from %s:%d: %s (%d)",
      peer().is_unix ? "unix" : peer().host.c_str(), peer().port, error.reason, error.status);
  // Between exchanges response_ still says Done from the previous one: only a
  // response of the current exchange counts as started.
  bool started = phase_ == Phase::Active && response_ != ResponseState::NotStarted;
  if (phase_ == Phase::Active && response_ != ResponseState::Done) {
    // A body the decoder refused: the exchange ends with the error response
    // (or, when a response had begun, with its status and the close).
    if (!started) response_status_ = error.status;
    count_exchange_end();
    server_.request_finished();
    response_ = ResponseState::Done;
    detach_observer(true);
  }
  if (started) {
    close_now(false);
    return;
  }
  if (phase_ == Phase::Head) {
    if (metrics::WorkerSlot *m = server_.metrics()) m->invalid_requests.add(1);
  }
  head_buf_ = error_response(error.status);
  iovec iov{head_buf_.data(), head_buf_.size()};
  if (!send_iov(&iov, 1)) return;
  begin_close(true);
}

void Session::begin_close(bool linger) {
  phase_ = Phase::Closing;
  linger_ = linger;
  set_deadline(Deadline::None, 0);  // pending output is bounded by the write-stall rule
  in_.consume(in_.size());
  if (transport_->output_idle()) {
    after_flush();
  } else {
    update_interest();
  }
}

void Session::after_flush() {
  if (phase_ != Phase::Closing) return;
  if (!linger_) {
    close_now(false);
    return;
  }
  // Lingering close: half-close, then read and drop what the client still
  // sends, so that closing with unread data does not reset the connection
  // before the client has read our response.
  transport_->shutdown_write();
  phase_ = Phase::Lingering;
  set_deadline(Deadline::Linger, kLingerMs);
  update_interest();
}

bool Session::send_iov(iovec *iov, int count) {
  if (closed_) return false;
  return transport_->send(iov, count);
}

void Session::on_output_progress() {
  if (closed_) return;
  size_t queued = transport_->queued_bytes();
  if (wants_writable_ && queued <= server_.config().write_low_water) {
    wants_writable_ = false;
    if (observer_ != nullptr) observer_->on_writable();
  }
  if (pipeline_paused_ && !closed_ && queued <= server_.config().write_low_water) {
    pipeline_paused_ = false;
    // The header timeout of the waiting request counts from now.
    if (phase_ == Phase::Head) set_deadline(Deadline::Header, server_.config().header_timeout_ms);
    process_input();
  }
  if (closed_ || !transport_->output_idle()) return;
  // The idle keep-alive time counts from when the response has gone out.
  if (phase_ == Phase::Head && in_.empty() && deadline_kind_ == Deadline::KeepAlive) {
    set_deadline(Deadline::KeepAlive, server_.config().keep_alive_timeout_ms);
    transport_->release_idle_buffers();
  }
  after_flush();
}

void Session::close_now(bool disconnected) {
  if (closed_) return;
  closed_ = true;
  finish_access_log();  // a response cut short is logged with what was sent
  if (phase_ == Phase::Active && response_ != ResponseState::Done) {
    count_exchange_end();
    server_.request_finished();
  }
  detach_observer(disconnected);
  transport_->close();
  server_.retire(this);
}

}  // namespace pronghorn::http1
