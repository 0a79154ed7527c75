// The supervisor: the parent process of `--workers N`. It forks the workers,
// watches them through a control pipe each and through signals, and replaces
// them when they crash, hang, or reach a recycling limit. It runs no Python:
// after supervise() is entered in the parent, control returns to Python only
// in the forked workers (Role::Worker) or when the whole server stops.
//
// Worker -> parent messages, one byte each on the worker's control pipe:
//   'R' ready: lifespan startup done and accepting connections
//   'H' heartbeat from the worker's event loop (at most once a second)
//   'M' the worker reached its request limit and asks to be replaced
// Parent -> worker: signals only. SIGTERM stops gracefully (the server
// stops), SIGHUP the same for a worker replaced while the server goes on
// (reload, recycle, scale down), SIGKILL at once,
// SIGUSR2 dumps the Python stacks (faulthandler), SIGUSR1 reopens log files.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pronghorn::metrics {
struct WorkerSlot;
}

namespace pronghorn::supervisor {

struct Options {
  int workers = 1;
  double healthcheck_timeout_s = 30;
  double graceful_timeout_s = -1;  // < 0: wait for workers as long as they take
  uint64_t max_requests = 0;       // 0: no limit
  uint64_t max_requests_jitter = 0;
  uint64_t max_memory_mib = 0;   // 0: no limit (RSS, sampled every second)
  double worker_lifetime_s = 0;  // 0: no limit
  std::string pid_file;
  // Auto-reload: watch these directories with inotify; a change to a file
  // matching an include pattern and no exclude pattern (fnmatch on the file
  // name), followed by `reload_delay_s` of quiet, replaces every worker.
  bool reload = false;
  std::vector<std::string> reload_dirs;
  std::vector<std::string> reload_includes;
  std::vector<std::string> reload_excludes;
  double reload_delay_s = 0.25;
  // --reuse-port: each worker slot has its own SO_REUSEPORT socket, created
  // and kept by the parent, so that a replacement (reload, recycling, crash)
  // inherits the queue of the worker it replaces. `first_listen_fd` is the
  // first slot's socket, already bound to host:port; without --reuse-port it
  // is the one socket all workers share (or -1). Either way the parent closes
  // its copies of the listening sockets when the server stops.
  bool reuse_port = false;
  std::string host;
  int port = 0;
  int backlog = 2048;
  int first_listen_fd = -1;
  // --pre-start: shell commands run in order before the first workers start
  // (a failure stops the server, exit code 1, before any worker) and again
  // before the workers a SIGHUP brings (a failure keeps the old ones).
  std::vector<std::string> pre_start;
  // Logged once the pre-start steps have succeeded ("Pronghorn running on ...").
  std::string ready_message;
  // --metrics: the supervisor serves /metrics on metrics_host:metrics_port
  // (supervisor/metrics_http.h), summing the counters the workers keep in
  // shared memory (engine/metrics.h). The accept queue it shows is that of
  // first_listen_fd (with --reuse-port, of every slot's socket), while the
  // parent holds them: a stop closes them.
  bool metrics = false;
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 9090;
};

// Called around fork(): the bridge passes CPython's PyOS_*Fork functions.
struct ForkHooks {
  void (*before)() = nullptr;
  void (*after_in_parent)() = nullptr;
  void (*after_in_child)() = nullptr;
};

enum class Role { Parent, Worker };

struct Outcome {
  Role role = Role::Parent;
  int exit_code = 0;          // Parent: the server's exit code
  int control_fd = -1;        // Worker: write end of its control pipe
  uint64_t max_requests = 0;  // Worker: its own drawn request limit (0: none)
  int listen_fd = -1;         // Worker, with reuse_port: its slot's socket
  // Worker, with metrics: where it counts (shared with the supervisor), or nullptr.
  metrics::WorkerSlot *metrics_slot = nullptr;
};

// Exit codes, as uvicorn's: 3 means a worker failed to start; do not respawn.
constexpr int kExitStartupFailure = 3;

Outcome supervise(const Options &options, const ForkHooks &hooks);

}  // namespace pronghorn::supervisor
