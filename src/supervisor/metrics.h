// --metrics, the supervisor's side: the shared region of worker slots
// (engine/metrics.h), the totals of the workers that have exited, the
// supervisor's own counters (worker starts and exits by reason), and the
// Prometheus text exposition of all of it. No I/O here but the mapping and
// the small /proc and getsockopt reads of a scrape; the HTTP endpoint is
// metrics_http.h.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/metrics.h"

namespace pronghorn::supervisor {

// Why a worker was started, or why it exited. Starts use the first eight;
// a worker exits for any but Initial.
enum class WorkerReason : uint8_t {
  Initial,         // start: the server's first workers
  Crash,           // exit: died on its own after it was ready; start: its replacement
  HealthCheck,     // its event loop stopped answering: killed, and replaced
  MaxRequests,     // recycled: --limit-max-requests
  MemoryLimit,     // recycled: --limit-worker-memory
  Lifetime,        // recycled: --worker-lifetime
  Reload,          // SIGHUP or --reload
  Scale,           // SIGTTIN (start) / SIGTTOU (exit)
  Shutdown,        // exit: the server stopped
  StartupFailure,  // exit: died before it was ready
};
constexpr size_t kWorkerReasonCount = 10;
// The `reason` label of each.
constexpr std::array<const char *, kWorkerReasonCount> kWorkerReasonLabels = {
    "initial",  "crash",  "healthcheck", "max_requests", "memory_limit",
    "lifetime", "reload", "scale",       "shutdown",     "startup_failure"};

// The counters of worker slots as plain numbers: the sum of some slots, or
// the totals folded from exited workers.
struct RequestCounts {
  uint64_t requests[metrics::kMethodCount][metrics::kStatusClassCount] = {};
  uint64_t duration_buckets[metrics::kDurationBucketCount + 1] = {};
  uint64_t duration_sum_ns = 0;
  uint64_t invalid_requests = 0;
  uint64_t received_bytes = 0;
  uint64_t sent_bytes = 0;

  void add(const metrics::WorkerSlot &slot);
  void add(const RequestCounts &other);
  uint64_t total_requests() const;
  uint64_t duration_count() const;
};

// The slots, one per live worker, in memory shared with the workers.
class WorkerSlots {
 public:
  WorkerSlots() = default;
  ~WorkerSlots();
  WorkerSlots(const WorkerSlots &) = delete;
  WorkerSlots &operator=(const WorkerSlots &) = delete;

  // Maps `count` zeroed slots, shared with the processes forked after this
  // (anonymous MAP_SHARED). False (logged with errno) when mmap fails.
  bool map(size_t count);
  // The same over memory the caller owns (the tests), not shared.
  void attach(metrics::WorkerSlot *slots, size_t count);
  bool mapped() const { return slots_ != nullptr; }
  // In a forked worker: the mapping stays (the worker counts into its slot)
  // and is never unmapped by this object.
  void keep_mapping() { owns_mapping_ = false; }
  size_t capacity() const { return count_; }

  // A free slot for a new worker (the lowest), zeroed, or -1 when all are
  // taken. Slots are constructed here, when first used: pages of the
  // mapping that no worker ever used are never touched.
  int acquire();
  // Gives back a slot that no worker used (the fork failed).
  void release_unused(int index);
  // A worker has exited (it was reaped: nothing writes its slot any more):
  // its counters go into the totals, and the slot is zeroed and free.
  void fold_and_release(int index);
  metrics::WorkerSlot &slot(int index) { return slots_[index]; }
  const metrics::WorkerSlot &slot(int index) const { return slots_[index]; }
  bool in_use(int index) const { return used_[static_cast<size_t>(index)]; }

  // The totals of the exited workers plus every slot in use now.
  RequestCounts sum() const;
  const RequestCounts &folded() const { return folded_; }

 private:
  metrics::WorkerSlot *slots_ = nullptr;
  size_t count_ = 0;
  bool owns_mapping_ = false;
  std::vector<bool> used_;
  RequestCounts folded_;
};

// What one live worker shows at a scrape.
struct WorkerSample {
  int slot = -1;
  uint64_t resident_bytes = 0;  // 0: could not be read (the worker just exited)
  bool ready = false;
  uint64_t loop_lag_ns = 0;  // only for ready workers
};

// Everything a scrape shows.
struct Snapshot {
  RequestCounts counts;
  uint64_t open_connections = 0;
  uint64_t requests_in_flight = 0;
  std::array<uint64_t, kWorkerReasonCount> starts = {};
  std::array<uint64_t, kWorkerReasonCount> exits = {};
  std::vector<WorkerSample> workers;
  bool has_accept_queue = false;  // the listening sockets are TCP
  uint64_t accept_queue_length = 0;
  uint64_t accept_queue_capacity = 0;
};

// The Prometheus text exposition format (version 0.0.4) of `snapshot`.
std::string render_exposition(const Snapshot &snapshot);

// A process's resident set size from /proc/PID/statm, in bytes; 0 when it
// cannot be read (the process has exited).
uint64_t resident_bytes(pid_t pid);

// The accept queue of a TCP listening socket: connections waiting for
// accept() and the queue's limit (the backlog), from TCP_INFO (on a
// listening socket Linux reports them in tcpi_unacked and tcpi_sacked).
// False, logged with errno, when getsockopt fails.
bool accept_queue(int fd, uint64_t &length, uint64_t &capacity);
// True when `fd` is a TCP socket (the accept queue can be read from it).
bool is_tcp_socket(int fd);

}  // namespace pronghorn::supervisor
