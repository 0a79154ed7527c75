// The HTTP/2 session: libnghttp2 drives the framing, HPACK, stream states
// and flow-control bookkeeping; this session only moves bytes between it and
// a Transport (nghttp2_session_mem_recv / mem_send, no I/O of its own) and
// maps each request stream to an http::Exchange (Stream), which the
// server's RequestDispatcher serves as it serves an HTTP/1 request.
//
// Flow control is tied to the application. Receiving: nghttp2's automatic
// WINDOW_UPDATE is off; the connection window is given back as soon as DATA
// arrives (each stream's own window bounds what it buffers), and a stream's
// window only as the application takes the body (body_taken()), so a stream
// whose application does not read stops its client without stopping the
// others. Sending: a stream's response body waits in its own buffer until
// the peer's windows let nghttp2 frame it; write_body() reports Blocked while
// that buffer is over a bound, and on_writable() fires when it drains, so a
// client that does not read never makes the server buffer without bound.
// nghttp2 is asked for frames only while the transport's queue is below its
// high-water mark.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/buffer.h"
#include "engine/http/exchange.h"
#include "engine/net/transport.h"
#include "engine/session.h"

namespace pronghorn {
class Engine;
}

namespace pronghorn::ws {
class Session;
}

namespace pronghorn::http2 {

class Session;
class Tunnel;

// One request stream: the Exchange the application sees.
class Stream final : public http::Exchange {
 public:
  Stream(Session &session, int32_t id) : session_(session), id_(id) {}
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;

  // ---- http::Exchange ----
  void attach(http::ExchangeObserver *observer) override { observer_ = observer; }
  const SocketAddress &peer() const override;
  const SocketAddress &local() const override;
  const SocketAddress &log_client() const override { return has_log_client_ ? log_client_ : peer(); }
  void set_log_client(std::string_view host) override {
    log_client_.host.assign(host);
    log_client_.port = 0;
    has_log_client_ = true;
  }
  const TlsInfo *tls() const override;
  Buffer &body_buffer() override { return body_buf_; }
  bool body_complete() const override { return body_done_; }
  void body_taken() override;
  const char *start_response(int status, const http::HeaderList &headers) override;
  http::WriteStatus write_body(const char *data, size_t len, bool more) override;
  http::WriteStatus send_file(int file_fd, uint64_t offset, uint64_t len) override;
  void fail() override;
  void abort() override;
  // A WebSocket over HTTP/2 (RFC 8441 extended CONNECT): the 200 response
  // goes out without END_STREAM, and a ws::Session runs on a Transport over
  // this stream's DATA frames (a Tunnel).
  ws::Session *accept_websocket(std::string_view subprotocol, const http::HeaderList &headers,
                                const char **error) override;

 private:
  friend class Session;
  friend class Tunnel;
  enum class Response { NotStarted, Started, Done };

  // nghttp2's data source: the next DATA payload from the body buffer or the file.
  static ssize_t read_body(nghttp2_session *, int32_t, uint8_t *buf, size_t length, uint32_t *flags,
                           nghttp2_data_source *source, void *);
  // The application's side of the exchange is over (its response is
  // complete, or the stream ended first): the observer is told why.
  void end_exchange(http::Detach why);
  // A response cut short (its body does not match its content-length, or
  // the application failed in the middle of it): what was given goes out
  // after the HEADERS, then RST_STREAM(INTERNAL_ERROR); the exchange ends.
  void cut_response();
  // Answers with a response of the server's own (431, 500, 503) and ends the exchange.
  void answer_error(int status);
  bool has_output() const { return !out_.empty() || file_left_ > 0; }
  // Bytes, or the end of the stream (END_STREAM, or a cut response's reset),
  // wait for the client's window: what the stall rule watches.
  bool output_waiting() const { return has_output() || ((eof_ || cut_) && !no_body_ && !end_framed_); }
  void write_access_log();
  // A WebSocket handshake refused (426, as HTTP/1 answers it).
  void refuse_websocket(int status, const char *reason);

  Session &session_;
  int32_t id_;
  http::ExchangeObserver *observer_ = nullptr;

  // ---- the request ----
  std::string method_, path_, authority_, scheme_;
  SocketAddress log_client_;  // see set_log_client()
  bool has_log_client_ = false;
  std::string protocol_;  // :protocol (RFC 8441 extended CONNECT)
  std::vector<std::pair<std::string, std::string>> headers_;
  size_t header_bytes_ = 0;  // as SETTINGS_MAX_HEADER_LIST_SIZE counts them
  int head_error_ = 0;       // a status to answer instead of dispatching (431)
  bool has_host_ = false;
  bool dispatched_ = false;
  bool reset_ = false;          // a RST_STREAM went either way
  uint64_t head_start_ms_ = 0;  // when its HEADERS frame began (the header timeout)
  bool counted_ = false;        // counted in the engine's active requests
  bool ended_ = false;          // the application's side is over (see end_exchange)
  Buffer body_buf_;
  bool body_done_ = false;
  size_t unconsumed_ = 0;  // received bytes not yet given back to the stream's window

  // ---- a WebSocket (RFC 8441) ----
  bool websocket_ = false;                  // dispatched as a WebSocket handshake
  std::vector<std::string> ws_extensions_;  // Sec-WebSocket-Extensions offers, for the accept
  // Once accepted: the ByteStream that the WebSocket session's transport
  // reads this stream's DATA from and writes its frames through (nullptr
  // once the WebSocket session let go, or the stream ended first).
  Tunnel *tunnel_ = nullptr;

  // ---- the response ----
  Response response_ = Response::NotStarted;
  bool no_body_ = false;     // HEAD, 1xx, 204, 304: the HEADERS frame ends the stream
  bool eof_ = false;         // the application gave the last body bytes
  bool deferred_ = false;    // nghttp2 was told NGHTTP2_ERR_DEFERRED: resume on new bytes
  bool cut_ = false;         // reset once the output is framed (cut_response)
  bool end_framed_ = false;  // the last DATA frame (END_STREAM) or the cut's reset is framed
  bool wants_writable_ = false;
  bool has_length_ = false;
  uint64_t content_length_ = 0;
  uint64_t body_sent_ = 0;  // accepted from the application
  Buffer out_;              // body bytes not yet framed
  int file_fd_ = -1;
  uint64_t file_off_ = 0;
  uint64_t file_left_ = 0;
  uint64_t last_progress_ms_ = 0;  // when DATA was last framed, or output began waiting
  int status_ = 0;
  uint64_t metrics_start_ns_ = 0;  // --metrics: when the stream was dispatched
  std::string log_target_;
  bool log_pending_ = false;  // --access-log-format: the line is written at the end
  uint64_t log_start_ns_ = 0;
  int64_t log_start_unix_ns_ = 0;
  std::vector<std::string> log_request_values_;
  std::vector<std::string> log_response_values_;
};

class Session final : public pronghorn::Session, private TransportHandler {
 public:
  Session(Engine &server, std::unique_ptr<Transport> transport);
  ~Session() override;
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  // ---- pronghorn::Session ----
  // Sends the server's SETTINGS and reads what the transport already holds
  // (the preface, when an HTTP/1 session handed the connection over).
  bool start() override;
  void on_tick(uint64_t now_ms) override;
  // GOAWAY (first with the largest stream ID, then, once the client has
  // answered a PING, with the last stream read); open streams finish, then the close.
  bool close_when_idle() override;
  bool streaming() const override;
  void close_now(bool disconnected) override;
  void cut_for_stop() override;
  // Frames what the streams have ready (the server calls this when a step ends).
  void send_held_head() override {
    run_tunnels();
    send_pending();
  }
  bool send_in_flight() const override { return transport_->send_in_flight(); }
  void on_released() override;

  Engine &engine() { return server_; }
  Transport &transport() { return *transport_; }
  size_t open_streams() const { return streams_.size(); }
  size_t batch_capacity_for_testing() const { return batch_.capacity(); }

 private:
  friend class Stream;
  friend class Tunnel;

  // ---- TransportHandler ----
  void on_readable() override;
  void on_output_progress() override;
  void on_transport_failed() override { close_now(true); }

  // ---- nghttp2 callbacks ----
  // Checks of RFC 9113 that nghttp2 leaves out, made as each frame's header
  // arrives (see the definition).
  static int on_begin_frame(nghttp2_session *, const nghttp2_frame_hd *hd, void *user);
  static int on_begin_headers(nghttp2_session *, const nghttp2_frame *frame, void *user);
  static int on_header(nghttp2_session *, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                       const uint8_t *value, size_t valuelen, uint8_t flags, void *user);
  static int on_frame_recv(nghttp2_session *, const nghttp2_frame *frame, void *user);
  static int on_data_chunk(nghttp2_session *, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                           void *user);
  static int on_frame_send(nghttp2_session *, const nghttp2_frame *frame, void *user);
  static int on_stream_close(nghttp2_session *, int32_t stream_id, uint32_t error_code, void *user);
  // A DATA frame whose payload read_body left in the stream's buffer
  // (NGHTTP2_DATA_FLAG_NO_COPY): gathered for the write as it is.
  static int on_send_data(nghttp2_session *, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                          nghttp2_data_source *source, void *user);
  static const nghttp2_session_callbacks *callbacks();

  // Feeds the input buffer to nghttp2, then dispatches the requests it
  // completed and tells observers of body bytes (outside nghttp2's callbacks).
  void process_input();
  void dispatch(Stream &stream);
  // Asks nghttp2 for frames while the transport's queue is below its
  // high-water mark and writes them; closes when nghttp2 is done.
  void send_pending();
  // Output of one transport write: frames nghttp2 serialised are copied
  // into batch_; large DATA payloads stay in their stream's buffer.
  void gather(const char *data, size_t len);
  bool write_gathered();  // false: the transport failed
  void drop_gathered();
  // Output is ready: framed when the current step ends (with whatever else
  // the step writes), or now outside nghttp2's callbacks if no step runs.
  void want_send();
  void update_reading();
  void set_idle_deadline();
  // A stream the application serves: one whose head is still coming does
  // not make the connection busy (its client may never finish it).
  bool has_dispatched_stream() const;
  // A served stream was reset (MadeYouReset, CVE-2025-8671): takes a token
  // from the reset budget; false once it is spent.
  bool take_reset_token();
  // A protocol error or a flood: what nghttp2 queued (its GOAWAY) goes out, then the close.
  void fail_session(const char *why, int code);
  // A connection error nghttp2 does not detect itself (RFC 9113 §5.4.1):
  // GOAWAY with `error_code`, then the close (from within nghttp2's callbacks too).
  void connection_error(uint32_t error_code, const char *why);
  // RFC 9113 §6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE that takes an open
  // stream's send window past 2^31-1 (nghttp2 resets only that stream).
  bool initial_window_overflows(const nghttp2_settings &settings) const;
  // The open streams' send windows and SETTINGS_INITIAL_WINDOW_SIZE, before a SETTINGS frame applies.
  void snapshot_windows();
  // A graceful stop's second GOAWAY, with the last stream ID read.
  void send_final_goaway();
  void retire_stream(int32_t id);
  Stream *find(int32_t id);
  // Tells tunnelled WebSockets what happened on their streams (outside
  // nghttp2's callbacks): input or its end (tunnel_ready_), the stream gone
  // (tunnel_hups_: EPOLLHUP, the WebSocket sees the connection drop).
  void run_tunnels();
  void schedule_tunnel(int32_t id);

  Engine &server_;
  std::unique_ptr<Transport> transport_;
  nghttp2_session *ng_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  Stream *header_stream_ = nullptr;  // the stream whose header block nghttp2 is decoding
  // Streams closed by nghttp2, freed where no Stream method can be running.
  std::vector<std::unique_ptr<Stream>> dead_streams_;
  std::vector<int32_t> to_dispatch_;
  std::vector<int32_t> body_ready_;
  std::vector<int32_t> writable_;
  std::vector<int32_t> tunnel_ready_;
  // Transports of tunnels whose stream closed (valid until the event ends:
  // a session is freed only after its batch of events).
  std::vector<Transport *> tunnel_hups_;
  std::string batch_;  // frames gathered for one transport write
  struct OutPiece {
    const char *external;  // a payload in a stream's buffer; nullptr: batch_[offset, offset + len)
    size_t offset;
    size_t len;
  };
  std::vector<OutPiece> pieces_;  // the write, in order
  size_t gathered_ = 0;           // bytes in pieces_
  bool gather_full_ = false;      // on_send_data paused nghttp2: write, then frame on
  // Streams whose buffer emptied into the write: freed once it is written
  // (their payloads are read from those buffers until then).
  std::vector<Stream *> drained_;
  bool closed_ = false;
  bool in_nghttp2_ = false;         // inside mem_recv/mem_send: no re-entry
  bool stopping_ = false;           // GOAWAY sent for a graceful stop
  bool final_goaway_sent_ = false;  // ... and its final one (close_when_idle)
  uint64_t stop_started_ms_ = 0;
  bool stop_ping_sent_ = false;  // the stop's PING, once its first GOAWAY is out
  int32_t final_last_id_ = 0;    // the final GOAWAY's last stream ID: later streams are not dispatched
  bool failing_ = false;         // closing after a protocol error
  bool got_frame_ = false;       // the client's preface and first frame came
  uint64_t deadline_ms_ = 0;     // the header (preface) or idle deadline; 0: none
  uint64_t last_ping_ms_ = 0;
  double reset_tokens_ = 0;  // the reset budget (take_reset_token)
  uint64_t reset_refill_ms_ = 0;
  // Client stream IDs skipped over when a higher one opened (closed at once,
  // RFC 9113 §5.1.1), as ranges [first, last], oldest first: a HEADERS frame
  // on one opens a stream with a lower ID than an earlier one, where a frame
  // on a stream that did open may be a late one. The newest kMaxSkippedRanges.
  std::vector<std::pair<int32_t, int32_t>> skipped_ids_;
  int32_t highest_id_ = -1;  // the highest client stream ID a HEADERS frame used
  // The open streams' send windows and SETTINGS_INITIAL_WINDOW_SIZE as a
  // SETTINGS frame began (initial_window_overflows).
  std::vector<int32_t> windows_before_settings_;
  bool settings_pending_ = false;  // a SETTINGS frame's header came, its payload not yet
  uint32_t initial_window_before_settings_ = 0;
};

}  // namespace pronghorn::http2
