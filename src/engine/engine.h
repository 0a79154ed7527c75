// The Engine: listening sockets, the sessions on the connections accepted from them,
// the periodic tick (timeouts, the cached Date header, log flushing) and
// graceful shutdown. It knows nothing of Python: requests are handed to a
// RequestDispatcher, which the ASGI bridge implements.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/http/access_log.h"
#include "engine/http/exchange.h"
#include "engine/http1/parser.h"
#include "engine/http2/settings.h"
#include "engine/loop.h"
#include "engine/metrics.h"
#include "engine/net/listener.h"
#include "engine/net/send_thread.h"
#include "engine/session.h"
#include "engine/static_files/handler.h"
#include "engine/ws/settings.h"

namespace pronghorn {

class Transport;
class TlsContext;

struct EngineConfig {
  http1::Limits limits;
  std::string root_path;  // --root-path, for the access log's path
  uint64_t keep_alive_timeout_ms = 5000;
  uint64_t header_timeout_ms = 10000;
  size_t limit_concurrency = 0;  // 0: no limit
  ws::Settings ws;
  http2::Settings http2;
  bool server_header = true;
  bool date_header = true;
  std::vector<std::pair<std::string, std::string>> extra_headers;
  bool access_log = true;
  bool access_log_colours = false;
  // --access-log-format: the user's format (or JSON) instead of uvicorn's
  // line, written when the exchange ends (it has the length and duration).
  std::shared_ptr<const http::AccessLogFormat> access_format;
  size_t body_high_water = 256 * 1024;
  size_t write_high_water = 256 * 1024;
  size_t write_low_water = 64 * 1024;
  // Small writes go out from a helper thread (see net/send_thread.h) while
  // the loop thread is busy (half its time or more: it is the bottleneck)
  // and spends at least this much CPU time per request (the app is costly
  // enough that the hand-over, ~4 us, is worth a second core); 0: always
  // through the thread.
  bool send_thread = true;
  uint64_t send_thread_min_request_ns = 50000;
  // Under the supervisor: the worker's control pipe (heartbeats, ready, recycle
  // requests; see supervisor/supervisor.h) and its own request limit.
  int control_fd = -1;
  uint64_t max_requests = 0;
  // --metrics: this worker's slot in the supervisor's shared memory
  // (engine/metrics.h), or nullptr when nothing is counted.
  metrics::WorkerSlot *metrics = nullptr;
  // When set, access log records go to this hook instead of the built-in
  // uvicorn-format line on stdout (used for a user's logging configuration).
  // http_version: "1.0", "1.1" or "2".
  void (*access_hook)(void *ctx, const SocketAddress &peer, std::string_view method, std::string_view target,
                      std::string_view http_version, int status) = nullptr;
  void *access_ctx = nullptr;
  // --static-path-route/--static-path-mount/--static-path-expires: requests
  // under a route are answered by the engine (static_files/handler.h) and
  // never reach the dispatcher. No mounts: off.
  static_files::Config static_files;
  // With --access-log-format and a user's logging configuration: the
  // rendered line (without its newline) goes to this hook.
  void (*access_line_hook)(void *ctx, std::string_view line) = nullptr;
};

using http::RequestDispatcher;

class Engine final {
 public:
  explicit Engine(EngineConfig config);
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  // Creates the loop. Returns false (logged) on failure.
  bool open();
  // Takes ownership of a listening fd and starts accepting from it: plain,
  // or TLS when a TLS context was set before. Connections start as HTTP/1;
  // with HTTP/2 enabled, ALPN h2 or the h2c preface hands them to HTTP/2.
  bool add_listener(int fd);
  // Connections of listeners added from now on speak TLS with this context.
  void set_tls(std::unique_ptr<TlsContext> context);
  const TlsContext *tls() const { return tls_.get(); }
  int epoll_fd() const { return loop_.fd(); }
  // The application's dispatcher; with static files, it gets the requests
  // outside every static route.
  void set_dispatcher(RequestDispatcher *dispatcher) {
    app_dispatcher_ = dispatcher;
    if (static_files_ != nullptr) static_files_->set_next(dispatcher);
  }
  void set_access_hook(decltype(EngineConfig::access_hook) hook, void *ctx) {
    config_.access_hook = hook;
    config_.access_ctx = ctx;
  }
  void set_access_line_hook(decltype(EngineConfig::access_line_hook) hook, void *ctx) {
    config_.access_line_hook = hook;
    config_.access_ctx = ctx;
  }

  // Dispatches what is ready, waiting at most timeout_ms; then frees closed
  // connections and flushes the access log.
  int run_once(int timeout_ms);

  // Graceful shutdown: stop accepting, close idle connections, close the
  // others once their current response is done.
  // Returns how many WebSockets it began to close.
  size_t begin_shutdown();
  // During a graceful stop: closes the connections whose response has
  // started, has no declared length and is still going (event streams and
  // other long-lived responses that would hold the stop), as a disconnect
  // (the app's receive() gets http.disconnect). Returns how many.
  size_t cut_streams();
  void close_all();
  bool shutting_down() const { return shutting_down_; }
  size_t connection_count() const { return connection_count_; }
  size_t active_requests() const { return active_requests_; }
  uint64_t requests_served() const { return requests_served_; }
  const std::vector<SocketAddress> &listen_addresses() const { return listen_addresses_; }

  // ---- for connections ----
  EventLoop &loop() { return loop_; }
  const EngineConfig &config() const { return config_; }
  RequestDispatcher *dispatcher() {
    return static_files_ != nullptr ? static_cast<RequestDispatcher *>(static_files_.get()) : app_dispatcher_;
  }
  std::string_view date() const { return date_; }
  // nodelay_set: the socket already has TCP_NODELAY (inherited from its listener).
  void adopt(int fd, const sockaddr_storage &addr, socklen_t len, const SocketAddress *local,
             const TlsContext *tls = nullptr, bool nodelay_set = false);
  // Starts an HTTP/1 session on a transport (it hands the transport to an
  // HTTP/2 session when the first bytes say so); nullptr when it could not
  // start (it is closed then).
  Session *start_session(std::unique_ptr<Transport> transport);
  // Registers a session made on `transport` (an upgrade: the transport
  // comes from a session retired before) and starts it; nullptr when it
  // could not start (it is closed then).
  Session *adopt_session(Session *session, Transport &transport);
  // The close code open WebSockets get on a graceful stop: 1001 (going
  // away), or 1012 (service restart) when the worker is being replaced.
  uint16_t ws_stop_code() const { return ws_stop_code_; }
  void set_ws_stop_code(uint16_t code) { ws_stop_code_ = code; }
  // Unlinks a closed connection; it is freed after the current batch of
  // events, or, with a send in flight, once release() says the send is done.
  void retire(Session *session);
  void release(Session *session) { graveyard_.push_back(session); }
  SendThread *send_thread() { return send_thread_open_ ? &send_thread_ : nullptr; }
  // For a small write with nothing queued: through the send thread?
  bool prefer_send_thread() const {
    if (!send_thread_open_) return false;
    if (config_.send_thread_min_request_ns == 0) return true;
    return send_thread_preferred_;
  }
  // Called by the tick with the loop thread's CPU time, requests_served() and
  // the monotonic time: updates the loop thread's CPU time per request and
  // its busy share once enough requests have been served since the last
  // update. The thread is preferred from the second update in a row that
  // finds the loop busy (50%) with costly requests (send_thread_min_request_ns),
  // and no longer from the first that finds it below a lower bar (40%, 60%
  // of that cost); each change is logged at debug level with its figures.
  void sample_loop_cost(uint64_t thread_cpu_ns, uint64_t requests, uint64_t now_ms);
  uint64_t loop_ns_per_request() const { return loop_ns_per_request_; }
  uint32_t loop_busy_permille() const { return loop_busy_permille_; }
  // The slot requests are counted in (engine/metrics.h), or nullptr.
  metrics::WorkerSlot *metrics() const { return config_.metrics; }
  void request_started() {
    ++active_requests_;
    ++requests_served_;
    if (config_.metrics != nullptr) config_.metrics->requests_in_flight.set(active_requests_);
    // Ask for a replacement as soon as the limit is reached (the worker goes
    // on serving until the replacement is ready).
    if (config_.max_requests != 0 && !recycle_requested_ && requests_served_ >= config_.max_requests) {
      recycle_requested_ = true;
      send_control('M');
    }
  }
  void request_finished() {
    --active_requests_;
    if (config_.metrics != nullptr) config_.metrics->requests_in_flight.set(active_requests_);
  }
  bool over_concurrency_limit() const {
    return config_.limit_concurrency != 0 &&
           (connection_count_ > config_.limit_concurrency || active_requests_ > config_.limit_concurrency);
  }
  void append_log(std::string_view line);
  // Writes the buffered access log now (before an error line goes to the
  // log, so that a terminal shows the two in the order they happened).
  void flush_log();

  // ---- response heads held back (see http1::Session::start_response) ----
  // A step is a stretch of code after which no more body bytes can join a
  // held head in the same write: a pass of run_once(), or a step of a request
  // task (the bridge brackets those). When the outermost step ends, held
  // heads are sent. A head held outside any step asks the scheduler (the
  // bridge: loop.call_soon) to call flush_held_heads() once, soon.
  void begin_step() { ++step_depth_; }
  void end_step() {
    if (--step_depth_ == 0 && !held_heads_.empty()) flush_held_heads();
  }
  void hold_head(Session *session);
  void flush_held_heads();
  // The scheduler's call: the deferred reads (below), then the held heads.
  void run_scheduled();
  // ---- input held in user space (TLS records a read left) ----
  // A transport whose stream holds input and whose session reads again
  // (after set_reading(false), or with its output over the bound) has no
  // epoll event to come for it: it is listed here and read at the end of
  // run_once(), or, listed outside it (an app's step resumed a session),
  // soon through the scheduler. Never inside an app's step: a read may
  // start a request.
  void defer_readable(Transport *transport);
  void forget_readable(Transport *transport) { std::erase(ready_transports_, transport); }
  void set_flush_scheduler(void (*schedule)(void *ctx), void *ctx) {
    flush_scheduler_ = schedule;
    flush_scheduler_ctx_ = ctx;
  }
  // A scratch area for reads that are appended to a partly filled buffer.
  char *read_scratch(size_t n) {
    if (read_scratch_.size() < n) read_scratch_.resize(n);
    return read_scratch_.data();
  }
  // Tells the supervisor (if any) that this worker is ready.
  void notify_ready() { send_control('R'); }

  // The periodic tick (every 200 ms): heartbeat, deadlines, Date, log.
  void tick();

 private:
  class Listener;
  // The loop's timer calls tick() through this.
  struct TickHandler final : IoHandler {
    explicit TickHandler(Engine &engine) : engine(engine) {}
    void on_io(uint32_t) override { engine.tick(); }
    Engine &engine;
  };
  TickHandler tick_handler_{*this};
  void update_date();
  void send_control(char message);
  void measure_loop_lag();
  void set_send_thread_preferred(bool preferred);

  EngineConfig config_;
  EventLoop loop_;
  SendThread send_thread_;  // after loop_: destroyed before it
  bool send_thread_open_ = false;
  uint64_t loop_ns_per_request_ = 0;  // 0 until measured: direct sends
  uint64_t cost_base_cpu_ns_ = 0;
  uint64_t cost_base_requests_ = 0;
  bool cost_base_set_ = false;
  uint64_t cost_base_ms_ = 0;
  uint32_t loop_busy_permille_ = 0;
  uint32_t costly_samples_in_a_row_ = 0;
  bool send_thread_preferred_ = false;
  RequestDispatcher *app_dispatcher_ = nullptr;
  std::unique_ptr<static_files::Handler> static_files_;  // in front of app_dispatcher_ when configured
  std::unique_ptr<TlsContext> tls_;                      // before listeners_: they point at it
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<SocketAddress> listen_addresses_;
  Session *sessions_ = nullptr;  // intrusive list head
  std::vector<Session *> graveyard_;
  size_t connection_count_ = 0;
  size_t active_requests_ = 0;
  uint64_t requests_served_ = 0;
  bool shutting_down_ = false;
  uint16_t ws_stop_code_ = 1001;
  int64_t date_second_ = -1;
  std::string date_;
  std::string log_buf_;
  uint64_t last_heartbeat_ms_ = 0;
  // --metrics: when the tick last ran, and its largest delay since the last
  // heartbeat (the event loop's lag), in nanoseconds.
  uint64_t last_tick_ns_ = 0;
  uint64_t max_tick_delay_ns_ = 0;
  bool recycle_requested_ = false;
  std::vector<Session *> held_heads_;
  std::vector<Transport *> ready_transports_;
  bool polling_ = false;  // in run_once(): it reads the listed transports at its end
  void run_deferred_reads();
  void schedule();
  int step_depth_ = 0;
  bool flush_scheduled_ = false;
  void (*flush_scheduler_)(void *) = nullptr;
  void *flush_scheduler_ctx_ = nullptr;
  std::vector<char> read_scratch_;
  // Accept failures (EMFILE...) are logged once per interval, with a count.
  uint64_t accept_errors_ = 0;  // failures not logged yet
  int accept_errno_ = 0;
  int accept_fd_ = -1;
  uint64_t accept_log_ms_ = 0;
  void report_accept_failures(uint64_t now);

 public:
  // A failed accept(): logged at once, then the failures of each interval
  // as one line with their count (the condition can last while the worker
  // keeps serving its connections).
  void accept_failed(int fd, int err);
};

}  // namespace pronghorn
