#include "supervisor/supervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/log.h"
#include "engine/net/listener.h"
#include "supervisor/metrics.h"
#include "supervisor/metrics_http.h"
#include "supervisor/systemd.h"

namespace pronghorn::supervisor {

namespace {

constexpr int kTickMs = 100;
constexpr uint64_t kStackDumpGraceMs = 1000;  // between the stack dump and SIGKILL
constexpr uint64_t kCrashWindowMs = 60000;    // crashes further apart do not add up
constexpr double kMaxBackoffS = 10.0;
constexpr uint64_t kKillMarginMs = 2000;  // after the graceful timeout, before SIGKILL
// --metrics: slots in the shared region. Workers overlap their replacements
// and stopping workers keep their slot until they exit, so this is far above
// any worker count; pages of slots never used are never touched.
constexpr size_t kMetricsSlots = 1024;
// A worker's heartbeat comes every second, from a 200 ms tick: one not seen
// for longer than this is overdue, and its event loop is lagging by the excess.
constexpr uint64_t kHeartbeatDueMs = 1200;

uint64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

std::string describe_status(int status) {
  char buf[96];
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char *name = strsignal(sig);
    snprintf(buf, sizeof buf, "signal %d: %s", sig, name ? name : "unknown");
  } else {
    snprintf(buf, sizeof buf, "exit code %d", WEXITSTATUS(status));
  }
  return buf;
}

// The scheduler state of a process (/proc/PID/stat's third field: R, S, D,
// T, t, Z...), or '?' when it cannot be read.
char process_state(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == nullptr) return '?';
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  // The command name in parentheses may contain anything: the state follows
  // the last ')'.
  const char *close = strrchr(buf, ')');
  return close != nullptr && close[1] == ' ' && close[2] != '\0' ? close[2] : '?';
}

struct Worker {
  pid_t pid = 0;
  int fd = -1;  // read end of the control pipe
  bool ready = false;
  bool stopping = false;  // we asked it to stop (or killed it)
  bool dumped = false;    // its stack dump was requested
  bool replacement_pending = false;
  pid_t replaces = 0;  // the old worker this one takes over from, once ready
  const char *replace_reason = "";
  WorkerReason start_reason = WorkerReason::Initial;  // also why the worker it replaces exits
  WorkerReason exit_reason = WorkerReason::Crash;     // set when we ask it to stop
  int metrics_slot = -1;                              // --metrics: its slot, or -1
  uint64_t spawned_ms = 0;
  uint64_t heartbeat_ms = 0;
  uint64_t dump_ms = 0;
  int slot = -1;  // with --reuse-port: index of its socket in slot_fds_
};

class Supervisor {
 public:
  Supervisor(const Options &options, const ForkHooks &hooks)
      : opt_(options), hooks_(hooks), rng_(std::random_device{}()) {}
  ~Supervisor() {
    for (Worker &w : workers_)
      if (w.fd >= 0) close(w.fd);
    if (signal_fd_ >= 0) close(signal_fd_);
    if (timer_fd_ >= 0) close(timer_fd_);
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (inotify_fd_ >= 0) close(inotify_fd_);
    for (int fd : slot_fds_)
      if (fd >= 0 && fd != child_.listen_fd) close(fd);
  }

  Outcome run();

 private:
  bool setup();
  // Forks a worker. Returns true in the child (child_ is filled): the caller
  // must return at once, all the way out of run().
  bool spawn(pid_t replaces, const char *reason, WorkerReason start_reason);
  void on_signal();
  void on_control(Worker &w);
  void on_tick();
  void reap();
  void stop_all(const char *why);
  void close_listeners();
  void retire(Worker &w, const char *why, WorkerReason reason);
  void recycle(Worker &w, const char *why, WorkerReason reason);
  void continue_reload();
  Worker *find(pid_t pid);
  size_t live_count() const;
  void schedule_respawn();
  void restore_child_state();
  void notify_status(const char *prefix);
  bool all_ready() const;
  // Auto-reload.
  bool setup_watch();
  void watch_tree(const std::string &dir);
  void on_inotify();
  bool watched_file(const char *name) const;
  bool start_reload(const char *why);
  // --pre-start steps: run_pre_start_now() runs them all before the first
  // workers (blocking; false: one failed, logged); for a reload they run one
  // after the other from the event loop (pre_start_next(), the step's exit
  // seen by reap()), and the reload starts when the last has succeeded.
  bool run_pre_start_now();
  pid_t start_step(size_t index);
  // True when `pid` was the running step (handled: the next one, the reload, or the failure).
  bool on_step_exit(pid_t pid, int status);
  pid_t step_pid_ = 0;
  bool stopped_during_pre_start_ = false;
  bool step_rerun_ = false;  // a SIGHUP came while the steps ran: run them again after
  size_t step_index_ = 0;
  std::string step_reason_;  // the reload waiting for the steps
  // --reuse-port sockets.
  int slot_for(pid_t replaces);
  void close_unused_slots();
  // --metrics.
  bool setup_metrics();
  std::string render_metrics();
  void count_exit(const Worker &w);

  Options opt_;
  ForkHooks hooks_;
  std::mt19937_64 rng_;
  int epoll_fd_ = -1, signal_fd_ = -1, timer_fd_ = -1;
  sigset_t old_mask_{};
  std::deque<Worker> workers_;
  int target_ = 1;
  bool stopping_ = false;
  bool force_ = false;
  uint64_t stop_deadline_ms_ = 0;
  int exit_code_ = 0;
  // Reload (SIGHUP): old workers still to be replaced, one at a time.
  std::deque<pid_t> reload_queue_;
  pid_t reload_current_ = 0;
  // Crash back-off.
  int crash_streak_ = 0;
  uint64_t last_crash_ms_ = 0;
  uint64_t respawn_at_ms_ = 0;
  int respawns_due_ = 0;
  uint64_t last_memory_check_ms_ = 0;
  bool in_child_ = false;
  bool spawn_failed_ = false;  // the last spawn() made no worker
  pid_t parent_pid_ = getpid();
  bool announced_ready_ = false;
  int inotify_fd_ = -1;
  std::map<int, std::string> watches_;  // watch descriptor -> directory
  uint64_t change_deadline_ms_ = 0;     // reload when reached (0: no change pending)
  std::string changed_file_;
  bool waiting_for_change_ = false;  // reload mode: workers failed to start
  std::vector<int> slot_fds_;        // --reuse-port: one listening socket per slot
  // --metrics: the workers' counters, the endpoint, and the supervisor's own counts.
  WorkerSlots metric_slots_;
  MetricsEndpoint metrics_endpoint_;
  std::array<uint64_t, kWorkerReasonCount> starts_{};
  std::array<uint64_t, kWorkerReasonCount> exits_{};
  bool accept_queue_tcp_ = false;
  Outcome child_;
};

bool Supervisor::all_ready() const {
  int ready = 0;
  for (const Worker &w : workers_)
    if (w.ready && !w.stopping) ++ready;
  return ready >= target_;
}

void Supervisor::notify_status(const char *prefix) {
  int ready = 0;
  for (const Worker &w : workers_)
    if (w.ready && !w.stopping) ++ready;
  char buf[160];
  snprintf(buf, sizeof buf, "%sSTATUS=%d of %d workers ready", prefix, ready, target_);
  sd_notify(buf);
}

bool Supervisor::setup() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1}) sigaddset(&mask, sig);
  if (sigprocmask(SIG_BLOCK, &mask, &old_mask_) < 0) {
    log_errno(LogLevel::Error, errno, "sigprocmask failed");
    return false;
  }
  signal_fd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (signal_fd_ < 0 || epoll_fd_ < 0 || timer_fd_ < 0) {
    log_errno(LogLevel::Error, errno, "creating the supervisor's signalfd/epoll/timerfd failed");
    return false;
  }
  itimerspec spec{};
  spec.it_interval.tv_nsec = kTickMs * 1000000L;
  spec.it_value = spec.it_interval;
  if (timerfd_settime(timer_fd_, 0, &spec, nullptr) < 0) {
    log_errno(LogLevel::Error, errno, "timerfd_settime failed");
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = signal_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, signal_fd_, &ev);
  ev.data.fd = timer_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &ev);
  return true;
}

bool Supervisor::watched_file(const char *name) const {
  bool included = false;
  for (const std::string &pattern : opt_.reload_includes)
    if (fnmatch(pattern.c_str(), name, 0) == 0) included = true;
  if (!included) return false;
  for (const std::string &pattern : opt_.reload_excludes)
    if (fnmatch(pattern.c_str(), name, 0) == 0) return false;
  return true;
}

void Supervisor::watch_tree(const std::string &dir) {
  constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ONLYDIR;
  int wd = inotify_add_watch(inotify_fd_, dir.c_str(), kMask);
  if (wd < 0) {
    log_errno(LogLevel::Warning, errno, "inotify_add_watch(%s) failed", dir.c_str());
    return;
  }
  watches_[wd] = dir;
  DIR *d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent *entry = readdir(d)) {
    const char *name = entry->d_name;
    // Hidden directories (.git, .venv), caches and installed packages change
    // without the app's code changing.
    if (name[0] == '.' || strcmp(name, "__pycache__") == 0 || strcmp(name, "node_modules") == 0 ||
        strcmp(name, "site-packages") == 0 || strcmp(name, "venv") == 0)
      continue;
    std::string path = dir + "/" + name;
    struct stat st {};
    if (entry->d_type == DT_DIR ||
        (entry->d_type == DT_UNKNOWN && lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
      watch_tree(path);
  }
  closedir(d);
}

bool Supervisor::setup_watch() {
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    log_errno(LogLevel::Error, errno, "inotify_init1 failed");
    return false;
  }
  for (const std::string &dir : opt_.reload_dirs) watch_tree(dir);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = inotify_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, inotify_fd_, &ev) < 0) {
    log_errno(LogLevel::Error, errno, "epoll_ctl(ADD inotify) failed");
    return false;
  }
  return true;
}

void Supervisor::on_inotify() {
  alignas(inotify_event) char buf[16384];
  while (true) {
    ssize_t n = read(inotify_fd_, buf, sizeof buf);
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN) log_errno(LogLevel::Error, errno, "read(inotify) failed");
      return;
    }
    for (ssize_t off = 0; off < n;) {
      auto *event = reinterpret_cast<inotify_event *>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      if (event->mask & IN_Q_OVERFLOW) {
        changed_file_ = "(many files)";
        change_deadline_ms_ = now_ms() + static_cast<uint64_t>(opt_.reload_delay_s * 1000);
        continue;
      }
      if (event->len == 0) continue;
      auto it = watches_.find(event->wd);
      if (it == watches_.end()) continue;
      std::string path = it->second + "/" + event->name;
      if ((event->mask & IN_ISDIR) && (event->mask & (IN_CREATE | IN_MOVED_TO)) && event->name[0] != '.') {
        watch_tree(path);
        continue;
      }
      if (event->mask & IN_ISDIR) continue;
      if (!watched_file(event->name)) continue;
      // Debounce: reload once the burst has been quiet for reload_delay.
      changed_file_ = path;
      change_deadline_ms_ = now_ms() + static_cast<uint64_t>(opt_.reload_delay_s * 1000);
    }
  }
}

bool Supervisor::start_reload(const char *why) {
  if (stopping_) return false;
  if (waiting_for_change_ || static_cast<int>(live_count()) < target_) {
    // Nothing is serving (the last start failed): start workers afresh.
    waiting_for_change_ = false;
    for (int missing = target_ - static_cast<int>(live_count()); missing > 0; --missing) {
      if (spawn(0, "", WorkerReason::Reload)) return true;
      if (spawn_failed_) {
        schedule_respawn();  // retried later, with back-off
        break;
      }
    }
  }
  if (reload_current_ != 0 || !reload_queue_.empty()) {
    // Restart the rolling replacement from the beginning with the newest code.
    log(LogLevel::Info, "%s: a reload is already in progress; it will use the newest code", why);
  }
  reload_queue_.clear();
  for (Worker &w : workers_)
    if (!w.stopping && w.replaces == 0 && w.ready && !w.replacement_pending) reload_queue_.push_back(w.pid);
  notify_status("RELOADING=1\n");
  continue_reload();
  return in_child_;
}

int Supervisor::slot_for(pid_t replaces) {
  if (replaces != 0)
    if (Worker *old = find(replaces)) return old->slot;
  // A slot whose worker is gone or stopping (crash, health-check kill).
  for (size_t i = 0; i < slot_fds_.size(); ++i) {
    if (slot_fds_[i] < 0) continue;
    bool used = false;
    for (const Worker &w : workers_)
      if (w.slot == static_cast<int>(i) && !w.stopping) used = true;
    if (!used) return static_cast<int>(i);
  }
  int fd = listen_tcp(opt_.host, opt_.port, opt_.backlog, true);
  if (fd < 0) return -1;
  for (size_t i = 0; i < slot_fds_.size(); ++i)
    if (slot_fds_[i] < 0) {
      slot_fds_[i] = fd;
      return static_cast<int>(i);
    }
  slot_fds_.push_back(fd);
  return static_cast<int>(slot_fds_.size() - 1);
}

void Supervisor::close_unused_slots() {
  // After scaling down, a slot with no worker would keep taking connections
  // that nobody accepts: close it (the kernel migrates its queue to the other
  // sockets when net.ipv4.tcp_migrate_req is 1).
  int open_slots = 0;
  for (int fd : slot_fds_)
    if (fd >= 0) ++open_slots;
  for (size_t i = 0; i < slot_fds_.size() && open_slots > target_; ++i) {
    if (slot_fds_[i] < 0) continue;
    bool used = false;
    for (const Worker &w : workers_)
      if (w.slot == static_cast<int>(i)) used = true;
    if (used) continue;
    close(slot_fds_[i]);
    slot_fds_[i] = -1;
    --open_slots;
  }
}

void Supervisor::restore_child_state() {
  // The worker starts with the signal mask Python had, and none of our fds.
  sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  for (Worker &w : workers_) {
    if (w.fd >= 0) close(w.fd);
    w.fd = -1;
  }
  close(signal_fd_);
  close(timer_fd_);
  close(epoll_fd_);
  if (inotify_fd_ >= 0) close(inotify_fd_);
  signal_fd_ = timer_fd_ = epoll_fd_ = inotify_fd_ = -1;
  workers_.clear();
  // The worker keeps the shared counters (its own slot) but not the endpoint.
  metrics_endpoint_.close_in_child();
  metric_slots_.keep_mapping();
  // Only this worker's own slot socket stays open in it.
  for (int &fd : slot_fds_) {
    if (fd >= 0 && fd != child_.listen_fd) close(fd);
    fd = -1;
  }
}

bool Supervisor::spawn(pid_t replaces, const char *reason, WorkerReason start_reason) {
  spawn_failed_ = true;  // until a child exists
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) {
    log_errno(LogLevel::Error, errno, "pipe2 for a worker's control pipe failed");
    return false;
  }
  int slot = -1;
  if (opt_.reuse_port) {
    slot = slot_for(replaces);
    if (slot < 0) {
      log(LogLevel::Error, "cannot create a listening socket for a new worker");
      close(fds[0]);
      close(fds[1]);
      return false;
    }
  }
  uint64_t max_requests = 0;
  if (opt_.max_requests > 0) {
    std::uniform_int_distribution<uint64_t> jitter(0, opt_.max_requests_jitter);
    max_requests = opt_.max_requests + jitter(rng_);
  }
  int metrics_slot = -1;
  if (metric_slots_.mapped()) {
    metrics_slot = metric_slots_.acquire();
    if (metrics_slot < 0)
      log(LogLevel::Warning, "--metrics: all %zu counter slots are in use; the new worker is not counted",
          metric_slots_.capacity());
  }
  if (hooks_.before) hooks_.before();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    if (hooks_.after_in_parent) hooks_.after_in_parent();
    log_errno(LogLevel::Error, err, "fork failed");
    close(fds[0]);
    close(fds[1]);
    metric_slots_.release_unused(metrics_slot);
    return false;
  }
  if (pid == 0) {
    if (hooks_.after_in_child) hooks_.after_in_child();
    // If the supervisor dies (SIGKILL, OOM), its workers stop too instead of
    // holding the port forever.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent_pid_) _exit(0);
    close(fds[0]);
    child_.listen_fd = slot >= 0 ? slot_fds_[slot] : -1;
    restore_child_state();
    in_child_ = true;
    child_.role = Role::Worker;
    child_.control_fd = fds[1];
    child_.max_requests = max_requests;
    child_.metrics_slot = metrics_slot >= 0 ? &metric_slots_.slot(metrics_slot) : nullptr;
    return true;
  }
  if (hooks_.after_in_parent) hooks_.after_in_parent();
  spawn_failed_ = false;
  close(fds[1]);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  Worker w;
  w.pid = pid;
  w.fd = fds[0];
  w.spawned_ms = w.heartbeat_ms = now_ms();
  w.replaces = replaces;
  w.replace_reason = reason;
  w.start_reason = start_reason;
  w.slot = slot;
  w.metrics_slot = metrics_slot;
  ++starts_[static_cast<size_t>(start_reason)];
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = w.fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w.fd, &ev) < 0)
    log_errno(LogLevel::Error, errno, "epoll_ctl(ADD) of worker [%d]'s control pipe failed", pid);
  workers_.push_back(w);
  if (replaces != 0)
    log(LogLevel::Info, "Spawned worker [%d] to replace [%d] (%s)", pid, replaces, reason);
  else
    log(LogLevel::Info, "Spawned worker [%d]", pid);
  return false;
}

Worker *Supervisor::find(pid_t pid) {
  for (Worker &w : workers_)
    if (w.pid == pid) return &w;
  return nullptr;
}

size_t Supervisor::live_count() const {
  size_t n = 0;
  for (const Worker &w : workers_)
    if (!w.stopping && w.replaces == 0) ++n;
  return n;
}

void Supervisor::retire(Worker &w, const char *why, WorkerReason reason) {
  if (w.stopping) return;
  w.stopping = true;
  w.exit_reason = reason;
  log(LogLevel::Info, "Stopping worker [%d] (%s)", w.pid, why);
  // SIGHUP, not SIGTERM: the worker stops the same way, but knows that it is
  // replaced while the server goes on (its open WebSockets get 1012, service
  // restart, rather than 1001, going away).
  if (kill(w.pid, SIGHUP) < 0 && errno != ESRCH) log_errno(LogLevel::Error, errno, "kill(%d, SIGHUP) failed", w.pid);
}

void Supervisor::recycle(Worker &w, const char *why, WorkerReason reason) {
  if (w.stopping || w.replacement_pending || stopping_) return;
  w.replacement_pending = true;
  spawn(w.pid, why, reason);
}

void Supervisor::stop_all(const char *why) {
  // A pre-start step of a reload that will not happen now.
  if (step_pid_ > 0 && kill(-step_pid_, SIGTERM) < 0 && errno != ESRCH)
    log_errno(LogLevel::Error, errno, "kill(-%d, SIGTERM) failed", step_pid_);
  if (!stopping_) {
    stopping_ = true;
    reload_queue_.clear();
    if (opt_.graceful_timeout_s >= 0)
      // Workers enforce the graceful timeout themselves (cancelling what still
      // runs, then lifespan shutdown); the parent kills only those that are
      // still there a little later.
      stop_deadline_ms_ = now_ms() + static_cast<uint64_t>(opt_.graceful_timeout_s * 1000) + kKillMarginMs;
    log(LogLevel::Info, "Stopping %zu worker(s) (%s)", workers_.size(), why);
    sd_notify("STOPPING=1");
    close_listeners();
  }
  for (Worker &w : workers_) {
    if (w.stopping) continue;
    w.stopping = true;
    w.exit_reason = WorkerReason::Shutdown;
    if (kill(w.pid, SIGTERM) < 0 && errno != ESRCH)
      log_errno(LogLevel::Error, errno, "kill(%d, SIGTERM) failed", w.pid);
  }
}

void Supervisor::close_listeners() {
  // No worker will be started any more. The workers close their copies of the
  // listening socket as they begin their graceful stop; with the parent's
  // copy open too, the kernel would go on completing handshakes and queueing
  // connections that no one accepts, reset only when the parent exits (a
  // proxy has sent its request by then, and retries it only if idempotent).
  // Closed, the port refuses them at once, as a single process's does, and a
  // proxy passes them to another instance. (A socket from systemd or --fd
  // stays open in the process that gave it.)
  for (int &fd : slot_fds_) {
    if (fd >= 0) close(fd);
    if (fd == opt_.first_listen_fd) opt_.first_listen_fd = -1;
    fd = -1;
  }
  if (opt_.first_listen_fd >= 0) close(opt_.first_listen_fd);
  opt_.first_listen_fd = -1;
}

void Supervisor::schedule_respawn() {
  uint64_t now = now_ms();
  if (now - last_crash_ms_ > kCrashWindowMs) crash_streak_ = 0;
  last_crash_ms_ = now;
  ++crash_streak_;
  double delay = 0;
  if (crash_streak_ > 1) {
    delay = 0.1;
    for (int i = 2; i < crash_streak_ && delay < kMaxBackoffS; ++i) delay *= 2;
    if (delay > kMaxBackoffS) delay = kMaxBackoffS;
    log(LogLevel::Warning, "Workers crashed %d times in a row; next restart in %.1f s", crash_streak_, delay);
  }
  ++respawns_due_;
  uint64_t at = now + static_cast<uint64_t>(delay * 1000);
  if (respawn_at_ms_ < at) respawn_at_ms_ = at;
}

void Supervisor::reap() {
  while (true) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      if (pid < 0 && errno != ECHILD) log_errno(LogLevel::Error, errno, "waitpid failed");
      return;
    }
    if (on_step_exit(pid, status)) {
      if (in_child_) return;
      continue;
    }
    Worker *w = find(pid);
    // Not a worker: an orphan reparented to us (as PID 1), now reaped.
    if (w == nullptr) continue;
    Worker gone = *w;
    if (gone.fd >= 0) {
      // Read what it said last (a 'R' may be in the pipe). That may fork.
      on_control(*w);
      if (in_child_) return;
      w = find(pid);
      gone = *w;
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, gone.fd, nullptr);
      close(gone.fd);
    }
    for (auto it = workers_.begin(); it != workers_.end(); ++it)
      if (it->pid == pid) {
        workers_.erase(it);
        break;
      }
    count_exit(gone);
    std::string how = describe_status(status);
    if (gone.stopping || stopping_) {
      log(LogLevel::Info, "Worker [%d] stopped (%s)", pid, how.c_str());
      continue;
    }
    if (!gone.ready) {
      if (gone.replaces != 0) {
        // A replacement that could not start: keep the old worker serving.
        if (Worker *old = find(gone.replaces)) old->replacement_pending = false;
        if (reload_current_ == gone.replaces) {
          log(LogLevel::Error, "Reload aborted: new worker [%d] failed to start (%s); the old workers keep serving",
              pid, how.c_str());
          reload_current_ = 0;
          reload_queue_.clear();
        } else {
          log(LogLevel::Error, "Replacement worker [%d] failed to start (%s); worker [%d] keeps serving", pid,
              how.c_str(), gone.replaces);
        }
        continue;
      }
      if (opt_.reload) {
        // While developing, a broken save is normal: wait for the next one.
        log(LogLevel::Error, "Worker [%d] failed to start (%s); waiting for changes before restarting", pid,
            how.c_str());
        waiting_for_change_ = true;
        continue;
      }
      log(LogLevel::Error, "Worker [%d] failed to start (%s); stopping the server", pid, how.c_str());
      exit_code_ = kExitStartupFailure;
      stop_all("a worker failed to start");
      continue;
    }
    log(LogLevel::Error, "Child process [%d] died (%s)", pid, how.c_str());
    // A replacement already on its way takes this worker's place.
    Worker *successor = nullptr;
    for (Worker &other : workers_)
      if (other.replaces == pid) successor = &other;
    if (successor != nullptr) {
      successor->replaces = 0;
      if (reload_current_ == pid) {
        // The worker being reloaded died first: its successor takes its place
        // and the reload goes on with the next one.
        reload_current_ = 0;
        continue_reload();
        if (in_child_) return;
      }
      continue;
    }
    if (reload_current_ == pid) reload_current_ = 0;
    schedule_respawn();
  }
}

void Supervisor::continue_reload() {
  if (stopping_ || reload_current_ != 0) return;
  while (!reload_queue_.empty()) {
    pid_t old = reload_queue_.front();
    reload_queue_.pop_front();
    Worker *w = find(old);
    if (w == nullptr || w->stopping) continue;
    reload_current_ = old;
    w->replacement_pending = true;
    spawn(old, "reload", WorkerReason::Reload);
    return;
  }
  log(LogLevel::Info, "Reload complete: every worker was replaced");
  notify_status("READY=1\n");
}

void Supervisor::on_control(Worker &w) {
  char buf[256];
  while (true) {
    ssize_t n = read(w.fd, buf, sizeof buf);
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && errno != EINTR)
        log_errno(LogLevel::Debug, errno, "read from worker [%d]'s control pipe failed", w.pid);
      return;
    }
    for (ssize_t i = 0; i < n; ++i) {
      switch (buf[i]) {
        case 'H': w.heartbeat_ms = now_ms(); break;
        case 'R': {
          w.ready = true;
          w.heartbeat_ms = now_ms();
          pid_t pid = w.pid;
          pid_t old = w.replaces;
          const char *reason = w.replace_reason;
          WorkerReason cause = w.start_reason;
          log(LogLevel::Info, "Worker [%d] is ready", pid);
          if (!announced_ready_ && all_ready()) {
            announced_ready_ = true;
            notify_status("READY=1\n");
          } else {
            notify_status("");
          }
          if (old != 0) {
            w.replaces = 0;
            if (Worker *prev = find(old)) retire(*prev, reason, cause);
            if (reload_current_ == old) {
              reload_current_ = 0;
              continue_reload();
              if (in_child_) return;
            }
          }
          break;
        }
        case 'M':
          if (!w.replacement_pending) log(LogLevel::Info, "Worker [%d] reached its request limit", w.pid);
          recycle(w, "request limit", WorkerReason::MaxRequests);
          if (in_child_) return;
          break;
        default: break;
      }
    }
  }
}

void Supervisor::on_signal() {
  signalfd_siginfo info{};
  while (read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    switch (info.ssi_signo) {
      case SIGCHLD:
        reap();
        if (in_child_) return;
        if (opt_.reuse_port) close_unused_slots();
        break;
      case SIGINT:
      case SIGTERM:
      case SIGQUIT:
        if (stopping_) {
          // A second Ctrl+C: stop now.
          force_ = true;
          log(LogLevel::Warning, "Forced exit: killing %zu worker(s)", workers_.size());
          for (Worker &w : workers_) kill(w.pid, SIGKILL);
        } else {
          stop_all(info.ssi_signo == SIGINT ? "SIGINT" : info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGQUIT");
        }
        break;
      case SIGHUP:
        if (stopping_) break;
        if (!opt_.pre_start.empty()) {
          if (step_pid_ != 0) {
            log(LogLevel::Info, "SIGHUP: the pre-start steps are running; they will run again after");
            step_rerun_ = true;
            break;
          }
          log(LogLevel::Info, "SIGHUP: running the pre-start steps, then replacing the workers");
          step_reason_ = "SIGHUP";
          step_index_ = 0;
          step_pid_ = start_step(0);
          if (in_child_) return;
          if (step_pid_ < 0) {
            step_pid_ = 0;
            log(LogLevel::Error, "Pre-start failed; the current workers keep serving");
          }
          break;
        }
        log(LogLevel::Info, "SIGHUP: replacing the workers one at a time");
        if (start_reload("SIGHUP")) return;
        break;
      case SIGTTIN:
        if (stopping_) break;
        ++target_;
        log(LogLevel::Info, "SIGTTIN: adding a worker (now %d)", target_);
        if (spawn(0, "", WorkerReason::Scale)) return;
        break;
      case SIGTTOU: {
        if (stopping_) break;
        if (target_ <= 1) {
          log(LogLevel::Warning, "SIGTTOU: already at one worker");
          break;
        }
        --target_;
        for (auto it = workers_.rbegin(); it != workers_.rend(); ++it) {
          if (!it->stopping && it->replaces == 0 && !it->replacement_pending) {
            log(LogLevel::Info, "SIGTTOU: removing a worker (now %d)", target_);
            retire(*it, "scaled down", WorkerReason::Scale);
            break;
          }
        }
        break;
      }
      case SIGUSR1:
        for (Worker &w : workers_) kill(w.pid, SIGUSR1);
        break;
      default: break;
    }
  }
}

void Supervisor::on_tick() {
  uint64_t now = now_ms();
  if (metrics_endpoint_.is_open()) metrics_endpoint_.on_tick(now);
  if (stopping_) {
    if (stop_deadline_ms_ != 0 && now >= stop_deadline_ms_ && !force_) {
      force_ = true;
      if (!workers_.empty())
        log(LogLevel::Warning, "Killing %zu worker(s) still running after the graceful shutdown timeout",
            workers_.size());
      for (Worker &w : workers_) kill(w.pid, SIGKILL);
    }
    return;
  }
  if (change_deadline_ms_ != 0 && now >= change_deadline_ms_) {
    change_deadline_ms_ = 0;
    log(LogLevel::Warning, "Detected changes in '%s'. Reloading...", changed_file_.c_str());
    if (start_reload("change")) return;
  }
  // Respawns after crashes, once the back-off delay has passed.
  while (respawns_due_ > 0 && now >= respawn_at_ms_) {
    --respawns_due_;
    if (static_cast<int>(live_count()) >= target_) continue;
    if (spawn(0, "", WorkerReason::Crash)) return;
    if (spawn_failed_) {
      schedule_respawn();
      break;
    }
  }
  bool sample_memory = opt_.max_memory_mib > 0 && now - last_memory_check_ms_ >= 1000;
  if (sample_memory) last_memory_check_ms_ = now;
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker &w = workers_[i];
    if (!w.ready || w.stopping) continue;
    uint64_t timeout_ms = static_cast<uint64_t>(opt_.healthcheck_timeout_s * 1000);
    if (timeout_ms > 0 && now - w.heartbeat_ms > timeout_ms) {
      double silent_s = static_cast<double>(now - w.heartbeat_ms) / 1000.0;
      if (!w.dumped) {
        w.dumped = true;
        w.dump_ms = now;
        // Say what the process is doing: only a running (or sleeping)
        // process can run the handler that dumps its Python stack.
        char state = process_state(w.pid);
        if (state == 'T' || state == 't') {
          log(LogLevel::Error,
              "Worker [%d] has not answered for %.1f s: the process is stopped (state %c: SIGSTOP or a "
              "debugger), so no Python stack can be dumped.",
              w.pid, silent_s, state);
        } else if (state == 'D') {
          log(LogLevel::Error,
              "Worker [%d] has not answered for %.1f s: the process is in uninterruptible sleep (state D: "
              "waiting on a disk or a network file system); its Python stack follows if it wakes.",
              w.pid, silent_s);
        } else if (state == 'Z' || state == '?') {
          log(LogLevel::Error, "Worker [%d] has not answered for %.1f s and has exited.", w.pid, silent_s);
        } else {
          log(LogLevel::Error,
              "Worker [%d] has not answered for %.1f s: its event loop is blocked (a blocking call in an async "
              "endpoint?). Its Python stack follows.",
              w.pid, silent_s);
        }
        kill(w.pid, SIGUSR2);
      } else if (now - w.dump_ms >= kStackDumpGraceMs) {
        char state = process_state(w.pid);
        log(LogLevel::Error, "Killing worker [%d]: %s for %.1f s; starting a replacement", w.pid,
            state == 'T' || state == 't' ? "stopped" : "event loop blocked", silent_s);
        w.stopping = true;
        w.exit_reason = WorkerReason::HealthCheck;
        pid_t pid = w.pid;
        kill(pid, SIGKILL);
        // A replacement already on its way (recycling, reload) takes its place.
        if (!w.replacement_pending && spawn(0, "", WorkerReason::HealthCheck)) return;
        continue;
      }
    }
    if (w.replacement_pending) continue;
    if (opt_.worker_lifetime_s > 0 && now - w.spawned_ms >= static_cast<uint64_t>(opt_.worker_lifetime_s * 1000)) {
      log(LogLevel::Info, "Worker [%d] reached its lifetime of %.0f s", w.pid, opt_.worker_lifetime_s);
      recycle(w, "lifetime", WorkerReason::Lifetime);
      if (in_child_) return;
      continue;
    }
    if (sample_memory) {
      uint64_t rss_mib = resident_bytes(w.pid) >> 20;
      if (rss_mib > opt_.max_memory_mib) {
        log(LogLevel::Info, "Worker [%d] uses %llu MiB (limit %llu MiB)", w.pid,
            static_cast<unsigned long long>(rss_mib), static_cast<unsigned long long>(opt_.max_memory_mib));
        recycle(workers_[i], "memory limit", WorkerReason::MemoryLimit);
        if (in_child_) return;
      }
    }
  }
}

pid_t Supervisor::start_step(size_t index) {
  const std::string &command = opt_.pre_start[index];
  log(LogLevel::Info, "Running pre-start step %zu: %s", index + 1, command.c_str());
  if (hooks_.before != nullptr) hooks_.before();
  pid_t pid = fork();
  if (pid == 0) {
    // The step gets the signal mask and dispositions of a normal command
    // (Ctrl+C reaches it), none of our fds but stdin/stdout/stderr.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    // Its own process group, so that a stop can end the step and whatever it
    // started (the supervisor forwards Ctrl+C and SIGTERM to it), and no
    // inherited fd beyond stdio: a listening socket given with --fd or by
    // systemd must not stay open in something the step leaves running.
    setpgid(0, 0);
    if (close_range(3, ~0U, 0) < 0)
      for (int fd = 3; fd < 65536; ++fd) close(fd);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  if (hooks_.after_in_parent != nullptr) hooks_.after_in_parent();
  if (pid < 0) log_errno(LogLevel::Error, errno, "fork for pre-start step %zu failed", index + 1);
  return pid;
}

// The step's outcome for the log: "exit status N" or "signal N".
static std::string step_outcome(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

bool Supervisor::run_pre_start_now() {
  for (size_t i = 0; i < opt_.pre_start.size(); ++i) {
    pid_t pid = start_step(i);
    if (pid < 0) return false;
    int status = 0;
    // Wait for the step, and for the stop signals on the signalfd (blocked
    // since setup(): a SIGTERM during a long migration must stop the server,
    // not wait for the step and then start workers).
    while (true) {
      pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid) break;
      if (done < 0 && errno != EINTR) {
        log_errno(LogLevel::Error, errno, "waitpid for pre-start step %zu failed", i + 1);
        return false;
      }
      pollfd pfd{signal_fd_, POLLIN, 0};
      if (poll(&pfd, 1, 200) <= 0) continue;
      signalfd_siginfo info{};
      if (read(signal_fd_, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) continue;
      int sig = static_cast<int>(info.ssi_signo);
      if (sig != SIGINT && sig != SIGTERM && sig != SIGQUIT) continue;
      log(LogLevel::Info, "Stopping pre-start step %zu (%s)", i + 1, strsignal(sig));
      kill(-pid, SIGTERM);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      stopped_during_pre_start_ = true;
      return false;
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      log(LogLevel::Error, "Pre-start step %zu (%s) failed with %s; not starting", i + 1, opt_.pre_start[i].c_str(),
          step_outcome(status).c_str());
      return false;
    }
  }
  return true;
}

bool Supervisor::on_step_exit(pid_t pid, int status) {
  if (step_pid_ == 0 || pid != step_pid_) return false;
  step_pid_ = 0;
  if (stopping_) return true;  // ended by the stop
  if (step_rerun_) {
    // A later SIGHUP: its code may come with its own migration; run the
    // steps again from the first.
    step_rerun_ = false;
    step_index_ = 0;
    step_pid_ = start_step(0);
    if (step_pid_ < 0) {
      step_pid_ = 0;
      log(LogLevel::Error, "Pre-start failed; the current workers keep serving");
    }
    return true;
  }
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    log(LogLevel::Error, "Pre-start step %zu (%s) failed with %s; the current workers keep serving", step_index_ + 1,
        opt_.pre_start[step_index_].c_str(), step_outcome(status).c_str());
    return true;
  }
  if (stopping_) return true;
  if (++step_index_ < opt_.pre_start.size()) {
    step_pid_ = start_step(step_index_);
    if (step_pid_ < 0) {
      step_pid_ = 0;
      log(LogLevel::Error, "Pre-start failed; the current workers keep serving");
    }
    return true;
  }
  log(LogLevel::Info, "%s: replacing the workers one at a time", step_reason_.c_str());
  start_reload(step_reason_.c_str());
  return true;
}

Outcome Supervisor::run() {
  if (!setup()) return {Role::Parent, 1, -1, 0};
  // Before the pre-start steps and the workers: a --metrics-bind that cannot
  // be bound stops the server before anything else has run.
  if (opt_.metrics && !setup_metrics()) return {Role::Parent, 1, -1, 0};
  if (!opt_.pre_start.empty() && !run_pre_start_now()) return {Role::Parent, stopped_during_pre_start_ ? 0 : 1, -1, 0};
  if (!opt_.ready_message.empty()) log(LogLevel::Info, "%s", opt_.ready_message.c_str());
  target_ = opt_.workers < 1 ? 1 : opt_.workers;
  if (opt_.reuse_port) {
    slot_fds_.push_back(opt_.first_listen_fd);
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r");
    int migrate = 0;
    if (f != nullptr) {
      if (fscanf(f, "%d", &migrate) != 1) migrate = 0;
      fclose(f);
    }
    if (migrate != 1)
      log(LogLevel::Warning,
          "--reuse-port: net.ipv4.tcp_migrate_req is not 1, so connections queued on a worker's socket are lost "
          "when scaling down (reloads, recycling and crashes keep them)");
  }
  if (opt_.reload) {
    if (!setup_watch()) return {Role::Parent, 1, -1, 0};
    log(LogLevel::Info, "Started reloader process [%d] using inotify", getpid());
  } else {
    log(LogLevel::Info, "Started parent process [%d]", getpid());
  }
  if (!opt_.pid_file.empty()) {
    FILE *f = fopen(opt_.pid_file.c_str(), "w");
    if (f == nullptr) {
      log_errno(LogLevel::Error, errno, "cannot write pid file %s", opt_.pid_file.c_str());
    } else {
      fprintf(f, "%d\n", getpid());
      fclose(f);
    }
  }
  for (int i = 0; i < target_; ++i)
    if (spawn(0, "", WorkerReason::Initial)) return child_;
  epoll_event events[32];
  while (!(stopping_ && workers_.empty())) {
    int n = epoll_wait(epoll_fd_, events, 32, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log_errno(LogLevel::Error, errno, "epoll_wait failed in the supervisor");
      stop_all("internal error");
      for (Worker &w : workers_) kill(w.pid, SIGKILL);
      break;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == signal_fd_) {
        on_signal();
      } else if (fd == inotify_fd_) {
        on_inotify();
      } else if (metrics_endpoint_.owns(fd)) {
        metrics_endpoint_.on_event(fd, events[i].events);
      } else if (fd == timer_fd_) {
        uint64_t expirations;
        if (read(timer_fd_, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
          log_errno(LogLevel::Error, errno, "read(timerfd) failed");
        on_tick();
      } else {
        for (Worker &w : workers_)
          if (w.fd == fd) {
            on_control(w);
            break;
          }
      }
      if (in_child_) return child_;
    }
  }
  // A reload's pre-start step still running: it was sent SIGTERM with the
  // stop; it does not outlive the server.
  if (step_pid_ > 0) {
    kill(-step_pid_, SIGKILL);
    while (waitpid(step_pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    step_pid_ = 0;
  }
  // Wait for every child we still have (after a forced exit, after SIGKILL).
  while (!workers_.empty()) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) break;
    for (auto it = workers_.begin(); it != workers_.end(); ++it)
      if (it->pid == pid) {
        workers_.erase(it);
        break;
      }
  }
  if (!opt_.pid_file.empty()) unlink(opt_.pid_file.c_str());
  sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
  log(LogLevel::Info, "Stopping parent process [%d]", getpid());
  return {Role::Parent, exit_code_, -1, 0};
}

bool Supervisor::setup_metrics() {
  if (!metric_slots_.map(kMetricsSlots)) return false;
  if (!metrics_endpoint_.open(epoll_fd_, opt_.metrics_host, opt_.metrics_port, [this] { return render_metrics(); }))
    return false;
  accept_queue_tcp_ = opt_.first_listen_fd >= 0 && is_tcp_socket(opt_.first_listen_fd);
  const std::string &host = opt_.metrics_host;
  bool v6 = host.find(':') != std::string::npos;
  log(LogLevel::Info, "Metrics on http://%s%s%s:%d/metrics", v6 ? "[" : "", host.c_str(), v6 ? "]" : "",
      metrics_endpoint_.port());
  return true;
}

void Supervisor::count_exit(const Worker &w) {
  WorkerReason reason;
  if (w.stopping)
    reason = w.exit_reason;
  else if (stopping_)
    reason = WorkerReason::Shutdown;
  else if (!w.ready)
    reason = WorkerReason::StartupFailure;
  else
    reason = WorkerReason::Crash;
  ++exits_[static_cast<size_t>(reason)];
  // Nothing writes the slot any more: its counters join the totals.
  metric_slots_.fold_and_release(w.metrics_slot);
}

std::string Supervisor::render_metrics() {
  Snapshot snapshot;
  snapshot.counts = metric_slots_.sum();
  snapshot.starts = starts_;
  snapshot.exits = exits_;
  uint64_t now = now_ms();
  for (const Worker &w : workers_) {
    WorkerSample sample;
    sample.slot = w.metrics_slot;
    sample.ready = w.ready;
    sample.resident_bytes = resident_bytes(w.pid);
    if (w.metrics_slot >= 0) {
      const metrics::WorkerSlot &slot = metric_slots_.slot(w.metrics_slot);
      snapshot.open_connections += slot.open_connections.get();
      snapshot.requests_in_flight += slot.requests_in_flight.get();
      sample.loop_lag_ns = slot.loop_lag_ns.get();
      // A blocked loop sends no heartbeat, and so no lag either: the time
      // since the heartbeat was due says how long it has been blocked.
      uint64_t age_ms = now - w.heartbeat_ms;
      if (w.ready && age_ms > kHeartbeatDueMs)
        sample.loop_lag_ns = std::max(sample.loop_lag_ns, (age_ms - kHeartbeatDueMs) * 1000000u);
    }
    snapshot.workers.push_back(sample);
  }
  // The parent's copies of the listening sockets, until a stop closes them
  // (close_listeners(): then no accept queue is shown).
  std::vector<int> fds;
  if (opt_.reuse_port) {
    for (int fd : slot_fds_)
      if (fd >= 0) fds.push_back(fd);
  } else if (opt_.first_listen_fd >= 0) {
    fds.push_back(opt_.first_listen_fd);
  }
  if (accept_queue_tcp_ && !fds.empty()) {
    snapshot.has_accept_queue = true;
    for (int fd : fds) {
      uint64_t length = 0, capacity = 0;
      if (!accept_queue(fd, length, capacity)) {
        snapshot.has_accept_queue = false;
        break;
      }
      snapshot.accept_queue_length += length;
      snapshot.accept_queue_capacity += capacity;
    }
  }
  return render_exposition(snapshot);
}

}  // namespace

Outcome supervise(const Options &options, const ForkHooks &hooks) {
  Supervisor supervisor(options, hooks);
  return supervisor.run();
}

}  // namespace pronghorn::supervisor
