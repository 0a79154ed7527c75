// Request metrics of one worker process (--metrics), counted where the
// requests are served and read by the supervisor, which sums the workers and
// serves them in Prometheus's text format (supervisor/metrics.h).
//
// Where they live: the supervisor maps one anonymous MAP_SHARED region
// before it forks any worker and gives each worker one WorkerSlot of it. A
// slot has one writer, the worker's event-loop thread, so counting needs no
// lock and no read-modify-write instruction: a relaxed load and a relaxed
// store of an aligned 64-bit word, which is a plain `mov` on x86-64 and
// `ldr`/`str` on arm64. The supervisor reads the slots with relaxed loads
// (an aligned 64-bit load never tears) whenever it is scraped, and when a
// worker has exited it adds the slot's last values to its own totals and
// zeroes the slot for the next worker (fold_and_reset in supervisor/metrics.h),
// so counters never go backwards when workers are replaced.
//
// No syscall on the request path: the only clock read is clock_gettime
// (CLOCK_MONOTONIC), served by the vDSO.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pronghorn::metrics {

// Request methods with a label of their own; any other is counted as "other"
// (a client must not be able to make the label set grow).
enum class Method : uint8_t { Get, Head, Post, Put, Delete, Patch, Options, Other };
constexpr size_t kMethodCount = 8;
constexpr std::array<std::string_view, kMethodCount> kMethodLabels = {"GET",    "HEAD",  "POST",    "PUT",
                                                                      "DELETE", "PATCH", "OPTIONS", "other"};

inline Method method_of(std::string_view method) {
  // Methods are case-sensitive (RFC 9110 §9.1): "get" is another method.
  switch (method.size()) {
    case 3:
      if (method == "GET") return Method::Get;
      if (method == "PUT") return Method::Put;
      break;
    case 4:
      if (method == "HEAD") return Method::Head;
      if (method == "POST") return Method::Post;
      break;
    case 5:
      if (method == "PATCH") return Method::Patch;
      break;
    case 6:
      if (method == "DELETE") return Method::Delete;
      break;
    case 7:
      if (method == "OPTIONS") return Method::Options;
      break;
    default: break;
  }
  return Method::Other;
}

// Status classes: index 0 is a request that ended before any response
// began (the client left, or the app ended without answering); 1..5 are
// 1xx..5xx; 6 is a code of 600 to 999 (the codec accepts those from apps).
constexpr size_t kStatusClassCount = 7;
constexpr std::array<std::string_view, kStatusClassCount> kStatusLabels = {"none", "1xx", "2xx",  "3xx",
                                                                           "4xx",  "5xx", "other"};
constexpr size_t status_class(int status) {
  if (status <= 0) return 0;
  if (status >= 100 && status < 600) return static_cast<size_t>(status / 100);
  return 6;
}

// Upper bounds of the request-duration histogram's buckets, in nanoseconds
// (a hello-world request takes tens of microseconds, so the low end is finer
// than Prometheus's default buckets); the last bucket is +Inf. The label
// text is written here once, exactly, rather than formatted from a double.
constexpr size_t kDurationBucketCount = 16;  // finite buckets
constexpr std::array<uint64_t, kDurationBucketCount> kDurationBoundsNs = {
    100'000,    250'000,     500'000,     1'000'000,   2'500'000,     5'000'000,     10'000'000,    25'000'000,
    50'000'000, 100'000'000, 250'000'000, 500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
constexpr std::array<std::string_view, kDurationBucketCount> kDurationBoundLabels = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10"};

// The bucket a duration falls into (kDurationBucketCount: +Inf).
inline size_t duration_bucket(uint64_t ns) {
  size_t i = 0;
  while (i < kDurationBucketCount && ns > kDurationBoundsNs[i]) ++i;
  return i;
}

// A value with one writer. add() is a load and a store, not an atomic
// increment: only the owning thread ever writes, and readers in other
// processes only need each 64-bit word to be read whole.
class Cell {
 public:
  void add(uint64_t n) { value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void set(uint64_t v) { value_.store(v, std::memory_order_relaxed); }
  uint64_t get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the counters live in memory shared between processes");

// One worker's slot in the shared region. Counters only grow while the worker
// lives; gauges say the worker's present state.
struct alignas(64) WorkerSlot {
  // Requests whose exchange has ended, by method and status class (a
  // WebSocket handshake counts once, as 1xx, when it is accepted).
  Cell requests[kMethodCount][kStatusClassCount];
  // Head parsed to response complete (or to the end of the exchange,
  // whatever ended it); WebSocket sessions are not observed. Per-bucket
  // counts, not cumulative: the reader adds them up.
  Cell duration_buckets[kDurationBucketCount + 1];
  Cell duration_sum_ns;
  // Heads refused before any exchange began (400, 408, 414, 431, 501, 505).
  Cell invalid_requests;
  // Bytes read from and written to client connections (after TLS decryption,
  // before encryption), for every protocol on them.
  Cell received_bytes;
  Cell sent_bytes;
  // Gauges.
  Cell open_connections;
  Cell requests_in_flight;
  // The largest delay of the event loop's 200 ms tick over the last heartbeat
  // interval (about a second), written with each heartbeat.
  Cell loop_lag_ns;

  void request_ended(Method method, int status, uint64_t duration_ns, bool observe_duration) {
    requests[static_cast<size_t>(method)][status_class(status)].add(1);
    if (!observe_duration) return;
    duration_buckets[duration_bucket(duration_ns)].add(1);
    duration_sum_ns.add(duration_ns);
  }
};

}  // namespace pronghorn::metrics
