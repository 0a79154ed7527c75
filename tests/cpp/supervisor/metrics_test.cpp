// supervisor/metrics.h: slots, the fold of an exited worker into the totals,
// and the Prometheus text exposition.
#include "supervisor/metrics.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace pronghorn::supervisor {
namespace {

using metrics::Method;
using metrics::WorkerSlot;

// The exposition's samples: "name{labels}" -> value text. Comment lines are
// checked separately.
std::map<std::string, std::string> samples(const std::string &text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t space = line.rfind(' ');
    out[line.substr(0, space)] = line.substr(space + 1);
  }
  return out;
}

TEST(WorkerSlots, AcquireTakesTheLowestFreeSlot) {
  std::vector<WorkerSlot> memory(3);
  WorkerSlots slots;
  slots.attach(memory.data(), memory.size());
  EXPECT_EQ(slots.acquire(), 0);
  EXPECT_EQ(slots.acquire(), 1);
  EXPECT_EQ(slots.acquire(), 2);
  EXPECT_EQ(slots.acquire(), -1);
  slots.fold_and_release(1);
  EXPECT_EQ(slots.acquire(), 1);
  slots.release_unused(2);
  EXPECT_FALSE(slots.in_use(2));
}

TEST(WorkerSlots, AnExitedWorkersCountsAreFoldedAndItsSlotZeroed) {
  std::vector<WorkerSlot> memory(2);
  WorkerSlots slots;
  slots.attach(memory.data(), memory.size());
  int a = slots.acquire();
  int b = slots.acquire();
  slots.slot(a).request_ended(Method::Get, 200, 1000, true);
  slots.slot(a).request_ended(Method::Get, 200, 1000, true);
  slots.slot(a).sent_bytes.add(100);
  slots.slot(a).open_connections.set(3);
  slots.slot(b).request_ended(Method::Post, 500, 2000, true);
  EXPECT_EQ(slots.sum().total_requests(), 3u);

  // Worker a exits: the sum is the same, and a's slot starts from zero.
  slots.fold_and_release(a);
  RequestCounts after = slots.sum();
  EXPECT_EQ(after.total_requests(), 3u);
  EXPECT_EQ(after.requests[0][2], 2u);
  EXPECT_EQ(after.sent_bytes, 100u);
  EXPECT_EQ(after.duration_sum_ns, 4000u);
  EXPECT_EQ(slots.folded().total_requests(), 2u);
  EXPECT_EQ(memory[static_cast<size_t>(a)].requests[0][2].get(), 0u);
  EXPECT_EQ(memory[static_cast<size_t>(a)].open_connections.get(), 0u);

  // Its replacement takes the slot and counts on: nothing goes backwards.
  int c = slots.acquire();
  EXPECT_EQ(c, a);
  slots.slot(c).request_ended(Method::Get, 200, 1000, true);
  EXPECT_EQ(slots.sum().requests[0][2], 3u);
  EXPECT_EQ(slots.sum().duration_count(), 4u);
  // Folding a slot twice, or one not in use, changes nothing.
  slots.fold_and_release(b);
  slots.fold_and_release(b);
  slots.fold_and_release(-1);
  EXPECT_EQ(slots.sum().total_requests(), 4u);
}

TEST(WorkerSlots, MappedMemoryIsSharedWithAForkedChild) {
  WorkerSlots slots;
  ASSERT_TRUE(slots.map(8));
  int index = slots.acquire();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    slots.keep_mapping();
    slots.slot(index).request_ended(Method::Put, 201, 5, true);
    slots.slot(index).received_bytes.add(42);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(slots.sum().requests[static_cast<size_t>(Method::Put)][2], 1u);
  slots.fold_and_release(index);
  EXPECT_EQ(slots.sum().received_bytes, 42u);
}

Snapshot example() {
  Snapshot s;
  s.counts.requests[static_cast<size_t>(Method::Get)][2] = 7;
  s.counts.requests[static_cast<size_t>(Method::Other)][4] = 1;
  s.counts.requests[static_cast<size_t>(Method::Post)][0] = 2;
  s.counts.duration_buckets[0] = 5;   // <= 100 us
  s.counts.duration_buckets[3] = 2;   // <= 1 ms
  s.counts.duration_buckets[16] = 1;  // > 10 s
  s.counts.duration_sum_ns = 12'000'500'000;
  s.counts.invalid_requests = 3;
  s.counts.received_bytes = 1000;
  s.counts.sent_bytes = 2000;
  s.open_connections = 4;
  s.requests_in_flight = 2;
  s.starts[static_cast<size_t>(WorkerReason::Initial)] = 2;
  s.starts[static_cast<size_t>(WorkerReason::Crash)] = 1;
  s.exits[static_cast<size_t>(WorkerReason::Crash)] = 1;
  s.workers.push_back({0, 50 << 20, true, 1'500'000});
  s.workers.push_back({2, 60 << 20, false, 0});
  s.has_accept_queue = true;
  s.accept_queue_length = 5;
  s.accept_queue_capacity = 2048;
  return s;
}

TEST(Exposition, SamplesHaveTheirValues) {
  auto values = samples(render_exposition(example()));
  EXPECT_EQ(values["pronghorn_requests_total{method=\"GET\",status=\"2xx\"}"], "7");
  EXPECT_EQ(values["pronghorn_requests_total{method=\"other\",status=\"4xx\"}"], "1");
  EXPECT_EQ(values["pronghorn_requests_total{method=\"POST\",status=\"none\"}"], "2");
  // 1xx to 5xx are always there; "none" and "other" only once counted.
  EXPECT_EQ(values["pronghorn_requests_total{method=\"PATCH\",status=\"5xx\"}"], "0");
  EXPECT_EQ(values.count("pronghorn_requests_total{method=\"GET\",status=\"none\"}"), 0u);
  EXPECT_EQ(values.count("pronghorn_requests_total{method=\"GET\",status=\"other\"}"), 0u);
  EXPECT_EQ(values["pronghorn_invalid_requests_total"], "3");
  EXPECT_EQ(values["pronghorn_received_bytes_total"], "1000");
  EXPECT_EQ(values["pronghorn_sent_bytes_total"], "2000");
  EXPECT_EQ(values["pronghorn_open_connections"], "4");
  EXPECT_EQ(values["pronghorn_requests_in_flight"], "2");
  EXPECT_EQ(values["pronghorn_workers"], "2");
  EXPECT_EQ(values["pronghorn_worker_starts_total{reason=\"initial\"}"], "2");
  EXPECT_EQ(values["pronghorn_worker_starts_total{reason=\"crash\"}"], "1");
  EXPECT_EQ(values["pronghorn_worker_starts_total{reason=\"max_requests\"}"], "0");
  EXPECT_EQ(values.count("pronghorn_worker_starts_total{reason=\"shutdown\"}"), 0u);
  EXPECT_EQ(values["pronghorn_worker_exits_total{reason=\"crash\"}"], "1");
  EXPECT_EQ(values["pronghorn_worker_exits_total{reason=\"healthcheck\"}"], "0");
  EXPECT_EQ(values["pronghorn_worker_exits_total{reason=\"startup_failure\"}"], "0");
  EXPECT_EQ(values.count("pronghorn_worker_exits_total{reason=\"initial\"}"), 0u);
  EXPECT_EQ(values["pronghorn_worker_resident_memory_bytes{slot=\"0\"}"], "52428800");
  EXPECT_EQ(values["pronghorn_worker_resident_memory_bytes{slot=\"2\"}"], "62914560");
  // Loop lag only for ready workers.
  EXPECT_EQ(values["pronghorn_event_loop_lag_seconds{slot=\"0\"}"], "0.0015");
  EXPECT_EQ(values.count("pronghorn_event_loop_lag_seconds{slot=\"2\"}"), 0u);
  EXPECT_EQ(values["pronghorn_accept_queue_length"], "5");
  EXPECT_EQ(values["pronghorn_accept_queue_capacity"], "2048");
}

TEST(Exposition, HistogramIsCumulativeWithExactSum) {
  auto values = samples(render_exposition(example()));
  EXPECT_EQ(values["pronghorn_request_duration_seconds_bucket{le=\"0.0001\"}"], "5");
  EXPECT_EQ(values["pronghorn_request_duration_seconds_bucket{le=\"0.0005\"}"], "5");
  EXPECT_EQ(values["pronghorn_request_duration_seconds_bucket{le=\"0.001\"}"], "7");
  EXPECT_EQ(values["pronghorn_request_duration_seconds_bucket{le=\"10\"}"], "7");
  EXPECT_EQ(values["pronghorn_request_duration_seconds_bucket{le=\"+Inf\"}"], "8");
  EXPECT_EQ(values["pronghorn_request_duration_seconds_count"], "8");
  EXPECT_EQ(values["pronghorn_request_duration_seconds_sum"], "12.0005");
}

TEST(Exposition, EveryFamilyHasHelpAndTypeBeforeItsSamples) {
  std::string text = render_exposition(example());
  std::istringstream in(text);
  std::string line, family;
  std::map<std::string, std::string> types;
  while (std::getline(in, line)) {
    ASSERT_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      family = line.substr(7, line.find(' ', 7) - 7);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      ASSERT_EQ(rest.substr(0, rest.find(' ')), family);
      types[family] = rest.substr(rest.find(' ') + 1);
      continue;
    }
    std::string name = line.substr(0, line.find_first_of("{ "));
    ASSERT_EQ(name.rfind("pronghorn_", 0), 0u) << line;
    // A histogram's samples carry suffixes of their family's name.
    bool in_family = name == family || (types[family] == "histogram" && name.rfind(family + "_", 0) == 0);
    EXPECT_TRUE(in_family) << line << " under " << family;
    if (types[family] == "counter") {
      EXPECT_TRUE(name.size() > 6 && name.substr(name.size() - 6) == "_total") << name;
    }
  }
  EXPECT_EQ(types["pronghorn_request_duration_seconds"], "histogram");
  EXPECT_EQ(types["pronghorn_open_connections"], "gauge");
  EXPECT_EQ(text.back(), '\n');
}

TEST(Exposition, NoAcceptQueueForOtherSockets) {
  Snapshot s = example();
  s.has_accept_queue = false;
  EXPECT_EQ(render_exposition(s).find("accept_queue"), std::string::npos);
}

TEST(AcceptQueue, CountsConnectionsNotYetAccepted) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr *>(&addr), &len), 0);
  EXPECT_TRUE(is_tcp_socket(listener));
  int clients[3];
  for (int &c : clients) {
    c = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(c, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
  }
  uint64_t length = 0, capacity = 0;
  ASSERT_TRUE(accept_queue(listener, length, capacity));
  EXPECT_EQ(length, 3u);
  EXPECT_EQ(capacity, 16u);
  close(accept(listener, nullptr, nullptr));
  ASSERT_TRUE(accept_queue(listener, length, capacity));
  EXPECT_EQ(length, 2u);
  for (int c : clients) close(c);
  close(listener);

  int unix_socket = socket(AF_UNIX, SOCK_STREAM, 0);
  EXPECT_FALSE(is_tcp_socket(unix_socket));
  close(unix_socket);
}

}  // namespace
}  // namespace pronghorn::supervisor
