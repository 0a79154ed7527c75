// The HTTP/1.1 session: the state machine that drives the request codec
// (parser.h) and the response codec (response.h) over a Transport. HTTP/1
// carries one exchange at a time, so the session is also the http::Exchange
// of its current request.
//
// Life of an exchange: the head is parsed, the server's RequestDispatcher gets
// it (phase Active), the application pulls body bytes through body_buffer()
// and pushes the response through start_response()/write_body()/send_file().
// Responses go out in request order because the next pipelined request is
// only parsed after the current response is complete.
//
// Flow control: reading stops while unread body passes body_high_water and
// resumes when the application takes it; write_body() reports Blocked while
// queued output passes write_high_water and the observer's on_writable() fires
// when it drains below write_low_water.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "engine/buffer.h"
#include "engine/http/exchange.h"
#include "engine/http1/parser.h"
#include "engine/http1/response.h"
#include "engine/metrics.h"
#include "engine/net/transport.h"
#include "engine/session.h"
#include "engine/ws/handshake.h"

namespace pronghorn {
class Engine;
}

namespace pronghorn::http1 {

using http::ExchangeObserver;
using http::WriteStatus;

class Session final : public pronghorn::Session, public http::Exchange, private TransportHandler {
 public:
  Session(Engine &server, std::unique_ptr<Transport> transport);
  ~Session() override;
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  // ---- pronghorn::Session ----
  bool start() override;
  void on_tick(uint64_t now_ms) override;
  // Stops after the current response (graceful shutdown); closes now if idle.
  bool close_when_idle() override;
  void close_now(bool disconnected) override;
  void cut_for_stop() override;
  // A response has started, has no declared length (chunked or delimited by
  // the close) and is not complete: a stream, as a graceful stop sees it.
  bool streaming() const override {
    return !closed_ && phase_ == Phase::Active && response_ == ResponseState::Started &&
           (plan_.framing == Framing::Chunked || plan_.framing == Framing::CloseDelimited);
  }
  // Sends the response head that start_response() held back to go out with
  // the first body bytes, if it is still held (the server calls this when
  // the step of the event loop that started the response ends).
  void send_held_head() override;
  // (No transport once an upgrade handed it on.)
  bool send_in_flight() const override { return transport_ != nullptr && transport_->send_in_flight(); }
  void on_released() override;
  Transport &transport() { return *transport_; }

  // ---- http::Exchange: used by the application side during an exchange ----
  void attach(ExchangeObserver *observer) override { observer_ = observer; }
  bool open() const { return !closed_; }
  const SocketAddress &peer() const override { return transport_->peer(); }
  const SocketAddress &log_client() const override { return has_log_client_ ? log_client_ : peer(); }
  void set_log_client(std::string_view host) override {
    log_client_.host.assign(host);
    log_client_.port = 0;
    has_log_client_ = true;
  }
  const SocketAddress &local() const override { return transport_->local(); }
  const TlsInfo *tls() const override { return transport_->tls(); }

  // Unread body bytes. The application copies them out, consumes them, and
  // calls body_taken(), which resumes reading and sends 100 Continue.
  Buffer &body_buffer() override { return body_buf_; }
  bool body_complete() const override { return body_done_; }
  void body_taken() override;

  // Returns nullptr, or the reason the response head is invalid.
  const char *start_response(int status, const HeaderList &headers) override;
  bool response_started() const { return response_ != ResponseState::NotStarted; }
  bool response_complete() const { return response_ == ResponseState::Done; }
  WriteStatus write_body(const char *data, size_t len, bool more) override;
  // Sends [offset, offset+len) of file_fd (taking ownership of the fd) as the
  // rest of the body.
  WriteStatus send_file(int file_fd, uint64_t offset, uint64_t len) override;
  // The application failed: 500 if nothing was sent yet; else what was sent
  // goes out (a head held back included, as uvicorn has sent it at
  // http.response.start) and the connection closes.
  void fail() override;
  // The application ended without finishing: the connection closes now.
  void abort() override { close_now(false); }
  ws::Session *accept_websocket(std::string_view subprotocol, const HeaderList &headers, const char **error) override;

 private:
  // ---- TransportHandler ----
  void on_readable() override;
  void on_output_progress() override;
  void on_transport_failed() override { close_now(true); }

  enum class Phase { Head, Active, Closing, Lingering };
  enum class ResponseState { NotStarted, Started, Done };
  enum class Deadline { None, KeepAlive, Header, Linger };

  // Judges what a read returned: the byte count, or -1 (nothing to read, or
  // the end of the stream or a failure, handled here).
  ssize_t read_result(ssize_t n);
  void process_input();
  void process_once();
  // Moves decodable body bytes from the input buffer to the body buffer (up
  // to the high-water mark). False when the body is invalid: the connection
  // has answered 400 (reject) and is closing.
  bool decode_buffered_body();
  void begin_exchange(size_t head_len);
  void end_exchange();
  void finish_response();
  void reject(const ParseError &error);
  void begin_close(bool linger);
  void after_flush();
  bool send_iov(iovec *iov, int count);
  void update_interest();
  void detach_observer(bool disconnected);
  void set_deadline(Deadline kind, uint64_t ms);
  // The access line: uvicorn's at once, or, with --access-log-format, the
  // status kept until finish_access_log() at the end of the exchange.
  void write_access_log(int status);
  void finish_access_log();
  // An upgrade request (head_.upgrade): a WebSocket handshake is checked
  // (false: refused here, the connection is closing); others go to the app
  // as plain HTTP, as uvicorn serves them, with its warning.
  bool begin_upgrade();
  // With HTTP/2 enabled, before the first request: which protocol the
  // connection speaks (ALPN, or the prior-knowledge preface), or Undecided
  // while the bytes so far are a prefix of the preface.
  enum class Protocol { Http1, Http2, Undecided };
  Protocol first_protocol() const;
  // Passes the connection to an HTTP/2 session; this one is retired.
  void hand_to_http2();
  // --metrics: counts the exchange that ends now (engine/metrics.h).
  void count_exchange_end(bool observe_duration = true);

  Engine &server_;
  std::unique_ptr<Transport> transport_;

  Phase phase_ = Phase::Head;
  ResponseState response_ = ResponseState::NotStarted;
  bool closed_ = false;
  bool processing_ = false;
  bool process_again_ = false;
  bool notify_body_ = false;
  bool body_done_ = true;
  bool discard_body_ = false;
  bool expect_continue_ = false;
  bool continue_sent_ = false;
  bool keep_alive_ = true;
  bool stop_after_response_ = false;
  bool head_method_ = false;
  bool head_pending_ = false;  // response head built but not yet written
  // The next pipelined request waits while this connection's unsent output
  // is above the high-water mark (a client that sends and never reads must
  // not make the server buffer responses without bound).
  bool pipeline_paused_ = false;
  bool cut_for_stop_ = false;  // a graceful stop ended the stream (Detach::ServerStop)
  bool wants_writable_ = false;
  bool linger_ = false;
  int version_minor_ = 1;
  uint32_t exchanges_ = 0;  // requests received on this connection

  Deadline deadline_kind_ = Deadline::None;
  uint64_t deadline_ms_ = 0;

  Buffer &in_;  // the transport's input buffer
  RequestHeadParser parser_;
  RequestHead head_;
  BodyDecoder decoder_;
  Buffer body_buf_;

  ResponsePlan plan_;
  std::string head_buf_;
  uint64_t body_sent_ = 0;
  std::string method_, target_;  // for the access log (target_: uvicorn's quoted path and query)

  ExchangeObserver *observer_ = nullptr;

  // The status of the current exchange's response (0: none started yet), and
  // with --metrics its method and when its head was parsed.
  int response_status_ = 0;
  metrics::Method metrics_method_ = metrics::Method::Other;
  uint64_t metrics_start_ns_ = 0;

  // --access-log-format: what the line needs beyond the head's own fields.
  uint64_t log_start_ns_ = 0;
  int64_t log_start_unix_ns_ = 0;
  int log_status_ = 0;
  bool log_pending_ = false;
  SocketAddress log_client_;  // see set_log_client(); per request
  bool has_log_client_ = false;
  std::vector<std::string> log_request_values_;
  std::vector<std::string> log_response_values_;

  // The WebSocket handshake of the current request (head_.websocket points
  // at ws_check_), kept for accept_websocket().
  ws::HandshakeCheck ws_check_;
  std::string ws_key_;  // empty: the current request is no WebSocket handshake
  std::vector<std::string> ws_extensions_;
};

}  // namespace pronghorn::http1
