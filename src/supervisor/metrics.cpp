#include "supervisor/metrics.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <new>

#include "engine/log.h"

namespace pronghorn::supervisor {

using metrics::kDurationBucketCount;
using metrics::kMethodCount;
using metrics::kStatusClassCount;

void RequestCounts::add(const metrics::WorkerSlot &slot) {
  for (size_t m = 0; m < kMethodCount; ++m)
    for (size_t s = 0; s < kStatusClassCount; ++s) requests[m][s] += slot.requests[m][s].get();
  for (size_t b = 0; b <= kDurationBucketCount; ++b) duration_buckets[b] += slot.duration_buckets[b].get();
  duration_sum_ns += slot.duration_sum_ns.get();
  invalid_requests += slot.invalid_requests.get();
  received_bytes += slot.received_bytes.get();
  sent_bytes += slot.sent_bytes.get();
}

void RequestCounts::add(const RequestCounts &other) {
  for (size_t m = 0; m < kMethodCount; ++m)
    for (size_t s = 0; s < kStatusClassCount; ++s) requests[m][s] += other.requests[m][s];
  for (size_t b = 0; b <= kDurationBucketCount; ++b) duration_buckets[b] += other.duration_buckets[b];
  duration_sum_ns += other.duration_sum_ns;
  invalid_requests += other.invalid_requests;
  received_bytes += other.received_bytes;
  sent_bytes += other.sent_bytes;
}

uint64_t RequestCounts::total_requests() const {
  uint64_t total = 0;
  for (const auto &by_status : requests)
    for (uint64_t n : by_status) total += n;
  return total;
}

uint64_t RequestCounts::duration_count() const {
  uint64_t total = 0;
  for (uint64_t n : duration_buckets) total += n;
  return total;
}

WorkerSlots::~WorkerSlots() {
  if (owns_mapping_ && slots_ != nullptr) {
    munmap(slots_, count_ * sizeof(metrics::WorkerSlot));
  }
}

bool WorkerSlots::map(size_t count) {
  // Anonymous and shared: the workers forked after this see the same pages.
  // Untouched pages cost no memory, so the capacity can be generous.
  void *memory =
      mmap(nullptr, count * sizeof(metrics::WorkerSlot), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    log_errno(LogLevel::Error, errno, "--metrics: mmap of %zu bytes for the workers' counters failed",
              count * sizeof(metrics::WorkerSlot));
    return false;
  }
  // The slots are constructed by acquire(), when first used.
  attach(static_cast<metrics::WorkerSlot *>(memory), count);
  owns_mapping_ = true;
  return true;
}

void WorkerSlots::attach(metrics::WorkerSlot *slots, size_t count) {
  slots_ = slots;
  count_ = count;
  used_.assign(count, false);
}

int WorkerSlots::acquire() {
  for (size_t i = 0; i < count_; ++i)
    if (!used_[i]) {
      used_[i] = true;
      new (&slots_[i]) metrics::WorkerSlot();
      return static_cast<int>(i);
    }
  return -1;
}

void WorkerSlots::release_unused(int index) {
  if (index < 0 || static_cast<size_t>(index) >= count_) return;
  used_[static_cast<size_t>(index)] = false;
}

void WorkerSlots::fold_and_release(int index) {
  if (index < 0 || static_cast<size_t>(index) >= count_ || !used_[static_cast<size_t>(index)]) return;
  metrics::WorkerSlot &slot = slots_[index];
  folded_.add(slot);
  // Zeroed now, so that nothing of this worker shows in a later sum.
  new (&slot) metrics::WorkerSlot();
  used_[static_cast<size_t>(index)] = false;
}

RequestCounts WorkerSlots::sum() const {
  RequestCounts total = folded_;
  for (size_t i = 0; i < count_; ++i)
    if (used_[i]) total.add(slots_[i]);
  return total;
}

namespace {

void append_u64(std::string &out, uint64_t value) {
  char buf[24];
  int n = snprintf(buf, sizeof buf, "%" PRIu64, value);
  out.append(buf, static_cast<size_t>(n));
}

// Nanoseconds as seconds, exactly (no floating point): 1500000 -> 0.0015.
void append_seconds(std::string &out, uint64_t ns) {
  char buf[40];
  int n = snprintf(buf, sizeof buf, "%" PRIu64 ".%09" PRIu64, ns / 1000000000u, ns % 1000000000u);
  while (n > 0 && buf[n - 1] == '0') --n;
  if (n > 0 && buf[n - 1] == '.') --n;
  out.append(buf, static_cast<size_t>(n));
}

void header(std::string &out, const char *name, const char *type, const char *help) {
  out.append("# HELP ").append(name).push_back(' ');
  out.append(help).push_back('\n');
  out.append("# TYPE ").append(name).push_back(' ');
  out.append(type).push_back('\n');
}

void sample(std::string &out, const char *name, uint64_t value) {
  out.append(name).push_back(' ');
  append_u64(out, value);
  out.push_back('\n');
}

void sample_slot(std::string &out, const char *name, int slot) {
  out.append(name).append("{slot=\"");
  append_u64(out, static_cast<uint64_t>(slot));
  out.append("\"} ");
}

}  // namespace

std::string render_exposition(const Snapshot &snapshot) {
  std::string out;
  out.reserve(8192);
  const RequestCounts &counts = snapshot.counts;

  header(out, "pronghorn_requests_total", "counter",
         "HTTP requests whose exchange has ended, by method and status class (status \"none\": ended before "
         "any response began).");
  for (size_t m = 0; m < kMethodCount; ++m)
    for (size_t s = 0; s < kStatusClassCount; ++s) {
      // 1xx to 5xx are always shown (a series that appears late loses its
      // first increase to rate()); "none" and "other" once they happen.
      uint64_t n = counts.requests[m][s];
      if (n == 0 && (s == 0 || s == kStatusClassCount - 1)) continue;
      out.append("pronghorn_requests_total{method=\"").append(metrics::kMethodLabels[m]);
      out.append("\",status=\"").append(metrics::kStatusLabels[s]).append("\"} ");
      append_u64(out, n);
      out.push_back('\n');
    }

  header(out, "pronghorn_request_duration_seconds", "histogram",
         "Time from a request's head parsed to its response complete (or the exchange's end), WebSockets "
         "excepted.");
  uint64_t cumulative = 0;
  for (size_t b = 0; b < kDurationBucketCount; ++b) {
    cumulative += counts.duration_buckets[b];
    out.append("pronghorn_request_duration_seconds_bucket{le=\"").append(metrics::kDurationBoundLabels[b]);
    out.append("\"} ");
    append_u64(out, cumulative);
    out.push_back('\n');
  }
  cumulative += counts.duration_buckets[kDurationBucketCount];
  out.append("pronghorn_request_duration_seconds_bucket{le=\"+Inf\"} ");
  append_u64(out, cumulative);
  out.append("\npronghorn_request_duration_seconds_sum ");
  append_seconds(out, counts.duration_sum_ns);
  out.append("\npronghorn_request_duration_seconds_count ");
  append_u64(out, cumulative);
  out.push_back('\n');

  header(out, "pronghorn_invalid_requests_total", "counter",
         "Request heads refused before reaching the app (invalid, too large or too slow: 400, 408, 414, 431, "
         "501, 505).");
  sample(out, "pronghorn_invalid_requests_total", counts.invalid_requests);
  header(out, "pronghorn_received_bytes_total", "counter",
         "Bytes read from client connections (after TLS decryption), every protocol.");
  sample(out, "pronghorn_received_bytes_total", counts.received_bytes);
  header(out, "pronghorn_sent_bytes_total", "counter",
         "Bytes written to client connections (before TLS encryption), every protocol.");
  sample(out, "pronghorn_sent_bytes_total", counts.sent_bytes);
  header(out, "pronghorn_open_connections", "gauge", "Client connections open now (HTTP and WebSocket).");
  sample(out, "pronghorn_open_connections", snapshot.open_connections);
  header(out, "pronghorn_requests_in_flight", "gauge",
         "Requests begun and not yet ended (an open WebSocket counts as one).");
  sample(out, "pronghorn_requests_in_flight", snapshot.requests_in_flight);

  header(out, "pronghorn_workers", "gauge", "Worker processes alive now (starting, serving or stopping).");
  sample(out, "pronghorn_workers", snapshot.workers.size());
  header(out, "pronghorn_worker_starts_total", "counter", "Worker processes started, by reason.");
  for (size_t r = 0; r < kWorkerReasonCount; ++r) {
    auto reason = static_cast<WorkerReason>(r);
    if (reason == WorkerReason::Shutdown || reason == WorkerReason::StartupFailure) continue;
    out.append("pronghorn_worker_starts_total{reason=\"").append(kWorkerReasonLabels[r]).append("\"} ");
    append_u64(out, snapshot.starts[r]);
    out.push_back('\n');
  }
  header(out, "pronghorn_worker_exits_total", "counter", "Worker processes exited, by reason.");
  for (size_t r = 0; r < kWorkerReasonCount; ++r) {
    if (static_cast<WorkerReason>(r) == WorkerReason::Initial) continue;
    out.append("pronghorn_worker_exits_total{reason=\"").append(kWorkerReasonLabels[r]).append("\"} ");
    append_u64(out, snapshot.exits[r]);
    out.push_back('\n');
  }

  header(out, "pronghorn_worker_resident_memory_bytes", "gauge",
         "Resident memory of each worker process, by its slot (a replacement takes a free slot).");
  for (const WorkerSample &w : snapshot.workers) {
    if (w.slot < 0 || w.resident_bytes == 0) continue;
    sample_slot(out, "pronghorn_worker_resident_memory_bytes", w.slot);
    append_u64(out, w.resident_bytes);
    out.push_back('\n');
  }
  header(out, "pronghorn_event_loop_lag_seconds", "gauge",
         "How late each ready worker's event loop ran its 200 ms timer, the most in the last heartbeat "
         "interval; while a heartbeat is overdue, the time since it was due.");
  for (const WorkerSample &w : snapshot.workers) {
    if (w.slot < 0 || !w.ready) continue;
    sample_slot(out, "pronghorn_event_loop_lag_seconds", w.slot);
    append_seconds(out, w.loop_lag_ns);
    out.push_back('\n');
  }

  if (snapshot.has_accept_queue) {
    header(out, "pronghorn_accept_queue_length", "gauge",
           "Connections in the listening socket's accept queue, not yet accepted by a worker.");
    sample(out, "pronghorn_accept_queue_length", snapshot.accept_queue_length);
    header(out, "pronghorn_accept_queue_capacity", "gauge",
           "The accept queue's limit (the listen backlog, capped by net.core.somaxconn).");
    sample(out, "pronghorn_accept_queue_capacity", snapshot.accept_queue_capacity);
  }
  return out;
}

uint64_t resident_bytes(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/statm", pid);
  FILE *f = fopen(path, "r");
  if (f == nullptr) {
    // The worker has just exited (it is reaped on the next SIGCHLD).
    log_errno(LogLevel::Debug, errno, "--metrics: cannot read %s", path);
    return 0;
  }
  unsigned long size = 0, resident = 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  fclose(f);
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

bool is_tcp_socket(int fd) {
  int domain = 0, protocol = 0;
  socklen_t len = sizeof domain;
  socklen_t protocol_len = sizeof protocol;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &protocol_len) < 0) {
    log_errno(LogLevel::Warning, errno, "--metrics: getsockopt on listening socket %d failed; no accept queue shown",
              fd);
    return false;
  }
  return (domain == AF_INET || domain == AF_INET6) && protocol == IPPROTO_TCP;
}

bool accept_queue(int fd, uint64_t &length, uint64_t &capacity) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) {
    log_errno(LogLevel::Warning, errno, "--metrics: getsockopt(TCP_INFO) on listening socket %d failed", fd);
    return false;
  }
  // For a socket in LISTEN state, tcp_get_info() reports the accept queue:
  // tcpi_unacked = sk_ack_backlog, tcpi_sacked = sk_max_ack_backlog.
  length = info.tcpi_unacked;
  capacity = info.tcpi_sacked;
  return true;
}

}  // namespace pronghorn::supervisor
