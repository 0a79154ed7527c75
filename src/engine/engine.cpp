#include "engine/engine.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "engine/http1/session.h"
#include "engine/log.h"
#include "engine/net/tls.h"
#include "engine/net/transport.h"

namespace pronghorn {

namespace {
constexpr int kTickMs = 200;
constexpr int kAcceptBatch = 64;
}  // namespace

class Engine::Listener final : public IoHandler {
 public:
  Listener(Engine &server, int fd, const TlsContext *tls)
      : server_(server), fd_(fd), address_(local_address(fd)), tls_(tls) {}
  ~Listener() { stop(); }

  bool start() {
    // Linux gives accepted sockets the listener's TCP_NODELAY: set once here,
    // it saves a setsockopt per connection (checked on the first one).
    if (!address_.is_unix && !nodelay_tried_) {
      nodelay_tried_ = true;
      int one = 1;
      nodelay_on_listener_ = setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
    }
    // EPOLLEXCLUSIVE: with several workers on one shared socket, wake one.
    if (!server_.loop().add(fd_, EPOLLIN | EPOLLEXCLUSIVE, this)) return false;
    registered_ = true;
    return true;
  }
  void stop() {
    if (fd_ < 0) return;
    if (registered_) server_.loop().remove(fd_);
    ::close(fd_);
    fd_ = -1;
    registered_ = false;
  }
  void pause() {
    if (registered_) server_.loop().remove(fd_);
    registered_ = false;
  }
  void resume() {
    if (fd_ >= 0 && !registered_) start();
  }

  void on_io(uint32_t) override {
    for (int i = 0; i < kAcceptBatch && fd_ >= 0; ++i) {
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      int fd = accept4(fd_, reinterpret_cast<sockaddr *>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) return;
        if (err == EINTR || err == ECONNABORTED) continue;
        server_.accept_failed(fd_, err);
        // Out of file descriptors: stop accepting until the next tick instead
        // of spinning on a socket that stays readable.
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) pause();
        return;
      }
      if (nodelay_on_listener_ && !nodelay_checked_ && (addr.ss_family == AF_INET || addr.ss_family == AF_INET6)) {
        nodelay_checked_ = true;
        int value = 0;
        socklen_t value_len = sizeof value;
        nodelay_inherited_ = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &value_len) == 0 && value != 0;
      }
      server_.adopt(fd, addr, len, &address_, tls_, nodelay_inherited_);
    }
  }

  const SocketAddress &address() const { return address_; }

 private:
  Engine &server_;
  int fd_;
  SocketAddress address_;
  const TlsContext *tls_;  // nullptr: plain HTTP/1
  bool registered_ = false;
  bool nodelay_tried_ = false;
  bool nodelay_on_listener_ = false;
  bool nodelay_checked_ = false;
  bool nodelay_inherited_ = false;  // accepted sockets come with TCP_NODELAY
};

Engine::Engine(EngineConfig config) : config_(std::move(config)) {}

Engine::~Engine() {
  set_log_before_problem(nullptr, nullptr);
  close_all();
  // Lets the sends in flight finish; their connections are then released.
  send_thread_.stop();
  for (Session *session : graveyard_) delete session;
  graveyard_.clear();
  flush_log();
}

bool Engine::open() {
  if (!config_.static_files.mounts.empty()) {
    std::string error;
    static_files_ = static_files::Handler::open(config_.static_files, error);
    if (static_files_ == nullptr) {
      log(LogLevel::Error, "Static files: %s", error.c_str());
      return false;
    }
    static_files_->set_next(app_dispatcher_);
  }
  if (!loop_.open(&tick_handler_, kTickMs)) return false;
  if (config_.send_thread)
    send_thread_open_ = send_thread_.open(
        loop_, [](void *, SendThread::Done &done) { static_cast<Transport *>(done.owner)->on_send_done(done); },
        nullptr);
  // The thread itself starts with the first job: until then the process
  // stays single-threaded, which glibc rewards (no atomics in malloc/free;
  // about 5% of a hello-world request).
  if (config_.control_fd >= 0 && fcntl(config_.control_fd, F_SETFL, O_NONBLOCK) < 0)
    log_errno(LogLevel::Warning, errno, "fcntl(O_NONBLOCK) on the control pipe failed");
  update_date();
  set_log_before_problem([](void *ctx) { static_cast<Engine *>(ctx)->flush_log(); }, this);
  return true;
}

bool Engine::add_listener(int fd) {
  auto listener = std::make_unique<Listener>(*this, fd, tls_.get());
  if (!listener->start()) return false;
  listen_addresses_.push_back(listener->address());
  listeners_.push_back(std::move(listener));
  return true;
}

void Engine::set_tls(std::unique_ptr<TlsContext> context) {
  tls_ = std::move(context);
}

void Engine::adopt(int fd, const sockaddr_storage &addr, socklen_t len, const SocketAddress *local,
                   const TlsContext *tls, bool nodelay_set) {
  if (shutting_down_) {
    ::close(fd);
    return;
  }
  if (!nodelay_set && (addr.ss_family == AF_INET || addr.ss_family == AF_INET6)) {
    int one = 1;
    // Responses are written whole; Nagle would only delay them.
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
      log_errno(LogLevel::Debug, errno, "setsockopt(TCP_NODELAY) failed");
  }
  SocketAddress peer = address_of(addr, len);
  if (local->is_unix) peer.is_unix = true;
  std::unique_ptr<ByteStream> stream;
  if (tls != nullptr) {
    stream = TlsStream::create(*tls, fd);
    if (stream == nullptr) return;  // logged, fd closed
  } else {
    stream = std::make_unique<SocketStream>(fd);
  }
  start_session(std::make_unique<Transport>(*this, std::move(stream), std::move(peer), local));
}

Session *Engine::start_session(std::unique_ptr<Transport> transport) {
  Transport &t = *transport;
  return adopt_session(new http1::Session(*this, std::move(transport)), t);
}

Session *Engine::adopt_session(Session *session, Transport &t) {
  // A send in flight when the session closed: it is freed once reported.
  t.set_release([](void *ctx) { static_cast<Session *>(ctx)->on_released(); }, session);
  session->next = sessions_;
  if (sessions_ != nullptr) sessions_->prev = session;
  sessions_ = session;
  if (!session->tunnelled) {
    ++connection_count_;
    if (config_.metrics != nullptr) config_.metrics->open_connections.set(connection_count_);
  }
  if (!session->start()) {
    session->close_now(false);
    return nullptr;
  }
  return session;
}

void Engine::hold_head(Session *session) {
  if (!session->head_listed) {
    session->head_listed = true;
    held_heads_.push_back(session);
  }
  if (step_depth_ == 0 && !flush_scheduled_ && flush_scheduler_ != nullptr) {
    flush_scheduled_ = true;
    flush_scheduler_(flush_scheduler_ctx_);
  }
}

void Engine::schedule() {
  if (!flush_scheduled_ && flush_scheduler_ != nullptr) {
    flush_scheduled_ = true;
    flush_scheduler_(flush_scheduler_ctx_);
  }
}

void Engine::defer_readable(Transport *transport) {
  if (std::find(ready_transports_.begin(), ready_transports_.end(), transport) == ready_transports_.end())
    ready_transports_.push_back(transport);
  if (!polling_) schedule();
}

void Engine::run_deferred_reads() {
  // The ones listed now, once each: one that lists itself again (it left
  // input for the next turn) waits for the next call, so that a busy
  // connection does not keep the loop to itself.
  for (size_t budget = ready_transports_.size(); budget > 0 && !ready_transports_.empty(); --budget) {
    Transport *transport = ready_transports_.front();
    ready_transports_.erase(ready_transports_.begin());
    transport->on_deferred_readable();
  }
}

void Engine::run_scheduled() {
  flush_scheduled_ = false;
  if (!ready_transports_.empty()) {
    // A step: heads the reads' requests hold are sent just below.
    ++step_depth_;
    run_deferred_reads();
    --step_depth_;
    if (!ready_transports_.empty()) schedule();
  }
  flush_held_heads();
}

void Engine::flush_held_heads() {
  flush_scheduled_ = false;
  // Each is unlisted before its head is sent: a send that closes a
  // connection unlists that one (Engine::retire), not the one in hand.
  while (!held_heads_.empty()) {
    Session *session = held_heads_.back();
    held_heads_.pop_back();
    session->head_listed = false;
    session->send_held_head();
  }
}

namespace {
constexpr uint64_t kAcceptLogIntervalMs = 10000;
}

void Engine::accept_failed(int fd, int err) {
  uint64_t now = loop_.now_ms();
  accept_fd_ = fd;
  if (accept_log_ms_ != 0 && now - accept_log_ms_ < kAcceptLogIntervalMs && err == accept_errno_) {
    ++accept_errors_;  // reported by the tick when the interval is over
    return;
  }
  report_accept_failures(now);
  log_errno(LogLevel::Error, err, "accept on fd %d failed", fd);
  accept_errno_ = err;
  accept_log_ms_ = now;
}

void Engine::report_accept_failures(uint64_t now) {
  if (accept_errors_ == 0) return;
  log_errno(LogLevel::Error, accept_errno_, "accept on fd %d failed %llu more times in the last %llu s", accept_fd_,
            static_cast<unsigned long long>(accept_errors_),
            static_cast<unsigned long long>((now - accept_log_ms_ + 999) / 1000));
  accept_errors_ = 0;
  accept_log_ms_ = now;
}

void Engine::retire(Session *session) {
  if (session->head_listed) {
    session->head_listed = false;
    std::erase(held_heads_, session);
  }
  if (session->prev != nullptr)
    session->prev->next = session->next;
  else
    sessions_ = session->next;
  if (session->next != nullptr) session->next->prev = session->prev;
  session->prev = session->next = nullptr;
  if (!session->tunnelled) {
    --connection_count_;
    if (config_.metrics != nullptr) config_.metrics->open_connections.set(connection_count_);
  }
  // The send thread still uses its fd: the transport releases the session
  // when the send is reported.
  if (session->send_in_flight()) return;
  // Freed after the current batch of events: a later event in the same batch
  // may still point at it.
  graveyard_.push_back(session);
}

int Engine::run_once(int timeout_ms) {
  begin_step();
  // Input held in user space is read after the events: no waiting for more first.
  polling_ = true;
  int n = loop_.poll(ready_transports_.empty() ? timeout_ms : 0);
  if (!ready_transports_.empty()) run_deferred_reads();
  polling_ = false;
  // Left for the next turn: epoll will not call run_once() for them.
  if (!ready_transports_.empty()) schedule();
  end_step();
  for (Session *session : graveyard_) delete session;
  graveyard_.clear();
  flush_log();
  return n;
}

void Engine::send_control(char message) {
  if (config_.control_fd < 0) return;
  // Never blocks: a full pipe means the supervisor is behind, and a lost
  // heartbeat is repaired by the next one.
  if (::write(config_.control_fd, &message, 1) < 0 && errno != EAGAIN) {
    int err = errno;
    log_errno(LogLevel::Warning, err, "writing to the supervisor's control pipe failed");
    if (err == EPIPE) config_.control_fd = -1;
  }
}

void Engine::tick() {
  update_date();
  uint64_t now = loop_.now_ms();
  // The heartbeat comes from this tick, which runs only while the asyncio
  // loop runs: a blocked loop stops it, and the supervisor notices.
  if (config_.metrics != nullptr) measure_loop_lag();
  if (config_.control_fd >= 0) {
    if (now - last_heartbeat_ms_ >= 1000) {
      last_heartbeat_ms_ = now;
      if (config_.metrics != nullptr) {
        config_.metrics->loop_lag_ns.set(max_tick_delay_ns_);
        max_tick_delay_ns_ = 0;
      }
      send_control('H');
    }
  }
  if (send_thread_open_) {
    // The tick runs on the loop thread: its CPU clock is the app's and the
    // engine's work (not the send thread's).
    timespec cpu{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
      sample_loop_cost(static_cast<uint64_t>(cpu.tv_sec) * 1000000000u + static_cast<uint64_t>(cpu.tv_nsec),
                       requests_served_, now);
  }
  for (Session *session = sessions_; session != nullptr;) {
    Session *next = session->next;  // on_tick may retire it
    session->on_tick(now);
    session = next;
  }
  if (!shutting_down_)
    for (auto &listener : listeners_) listener->resume();
  if (accept_errors_ > 0 && now - accept_log_ms_ >= kAcceptLogIntervalMs) report_accept_failures(now);
  flush_log();
}

void Engine::measure_loop_lag() {
  // The tick's timerfd fires every kTickMs, but the tick runs only when the
  // asyncio loop gets to the engine's epoll fd: the time beyond kTickMs
  // since the last tick is how long the loop kept it waiting (a periodic
  // timerfd keeps its schedule, so one late tick does not shift the next).
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now_ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
  constexpr uint64_t kTickNs = static_cast<uint64_t>(kTickMs) * 1000000u;
  if (last_tick_ns_ != 0 && now_ns - last_tick_ns_ > kTickNs)
    max_tick_delay_ns_ = std::max(max_tick_delay_ns_, now_ns - last_tick_ns_ - kTickNs);
  last_tick_ns_ = now_ns;
}

void Engine::sample_loop_cost(uint64_t thread_cpu_ns, uint64_t requests, uint64_t now_ms) {
  constexpr uint64_t kMinRequests = 64;  // fewer: too few to say
  // The first sample is only a base: the thread's CPU time so far is start-up.
  if (!cost_base_set_ || requests < cost_base_requests_ || thread_cpu_ns < cost_base_cpu_ns_) {
    cost_base_set_ = true;
    costly_samples_in_a_row_ = 0;
    cost_base_requests_ = requests;
    cost_base_cpu_ns_ = thread_cpu_ns;
    cost_base_ms_ = now_ms;
    return;
  }
  uint64_t served = requests - cost_base_requests_;
  if (served < kMinRequests || now_ms <= cost_base_ms_) return;
  uint64_t cpu_ns = thread_cpu_ns - cost_base_cpu_ns_;
  loop_ns_per_request_ = cpu_ns / served;
  loop_busy_permille_ = static_cast<uint32_t>(std::min<uint64_t>(1000, cpu_ns / 1000 / (now_ms - cost_base_ms_)));
  const uint64_t min_ns = config_.send_thread_min_request_ns;  // 0: --send-thread, whatever the figures
  if (min_ns != 0 && !send_thread_preferred_) {
    // On from the second costly sample in a row: one can be a slow moment
    // of a shared CPU, or a collection of Python's garbage.
    constexpr uint32_t kCostlySamplesToPrefer = 2;
    bool costly = loop_busy_permille_ >= 500 && loop_ns_per_request_ >= min_ns;
    costly_samples_in_a_row_ = costly ? costly_samples_in_a_row_ + 1 : 0;
    if (costly_samples_in_a_row_ >= kCostlySamplesToPrefer) set_send_thread_preferred(true);
  } else if (min_ns != 0) {
    // Off below a lower bar (40% busy, 60% of the cost): the thread takes
    // the sends' cost off the loop thread, so the same app measures cheaper
    // while it is on (a direct send of a FastAPI response costs ~20 us); one
    // bar would switch it on and off in turn for an app just over it.
    bool still_costly = loop_busy_permille_ >= 400 && loop_ns_per_request_ >= min_ns * 6 / 10;
    if (!still_costly) set_send_thread_preferred(false);
  }
  cost_base_requests_ = requests;
  cost_base_cpu_ns_ = thread_cpu_ns;
  cost_base_ms_ = now_ms;
}

void Engine::set_send_thread_preferred(bool preferred) {
  send_thread_preferred_ = preferred;
  costly_samples_in_a_row_ = 0;
  log(LogLevel::Debug,
      "Small responses now go out from %s: the event loop's thread is busy %u.%u%% with %llu us of CPU per request",
      preferred ? "the send thread" : "the event loop's thread", loop_busy_permille_ / 10, loop_busy_permille_ % 10,
      static_cast<unsigned long long>(loop_ns_per_request_ / 1000));
}

size_t Engine::begin_shutdown() {
  if (shutting_down_) return 0;
  shutting_down_ = true;
  for (auto &listener : listeners_) listener->stop();
  size_t closed = 0;
  for (Session *session = sessions_; session != nullptr;) {
    Session *next = session->next;
    if (session->close_when_idle()) ++closed;
    session = next;
  }
  return closed;
}

size_t Engine::cut_streams() {
  size_t cut = 0;
  for (Session *session = sessions_; session != nullptr;) {
    Session *next = session->next;
    if (session->streaming()) {
      session->cut_for_stop();
      ++cut;
    }
    session = next;
  }
  return cut;
}

void Engine::close_all() {
  shutting_down_ = true;
  for (auto &listener : listeners_) listener->stop();
  while (sessions_ != nullptr) sessions_->close_now(true);
}

void Engine::update_date() {
  time_t now = time(nullptr);
  if (now == date_second_) return;
  date_second_ = now;
  tm parts{};
  gmtime_r(&now, &parts);
  // IMF-fixdate, RFC 9110 §5.6.7. Formatted by hand: strftime follows the locale.
  static const char *const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  int n = snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[parts.tm_wday], parts.tm_mday,
                   kMonths[parts.tm_mon], parts.tm_year + 1900, parts.tm_hour, parts.tm_min, parts.tm_sec);
  date_.assign(buf, static_cast<size_t>(n));
}

void Engine::append_log(std::string_view line) {
  log_buf_.append(line);
  if (log_buf_.size() > 64 * 1024) flush_log();
}

void Engine::flush_log() {
  size_t off = 0;
  while (off < log_buf_.size()) {
    ssize_t n = ::write(1, log_buf_.data() + off, log_buf_.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      // stdout gone or non-blocking and full: drop the access log rather than
      // stall the server. Said once per failure burst.
      log_errno(LogLevel::Debug, errno, "writing the access log failed");
      break;
    }
    off += static_cast<size_t>(n);
  }
  log_buf_.clear();
}

}  // namespace pronghorn
