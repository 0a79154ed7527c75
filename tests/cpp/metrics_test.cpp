// engine/metrics.h: the label mapping, the histogram's buckets, and what an
// HTTP/1 session counts into a worker's slot (over an in-memory stream).
#include "engine/metrics.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>

#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/http1/session.h"
#include "engine/net/memory_stream.h"
#include "engine/net/transport.h"

namespace pronghorn::metrics {
namespace {

TEST(MetricsLabels, MethodsOutsideTheListAreOther) {
  EXPECT_EQ(method_of("GET"), Method::Get);
  EXPECT_EQ(method_of("HEAD"), Method::Head);
  EXPECT_EQ(method_of("POST"), Method::Post);
  EXPECT_EQ(method_of("PUT"), Method::Put);
  EXPECT_EQ(method_of("DELETE"), Method::Delete);
  EXPECT_EQ(method_of("PATCH"), Method::Patch);
  EXPECT_EQ(method_of("OPTIONS"), Method::Options);
  // Case matters (RFC 9110 §9.1), and a client cannot add labels.
  EXPECT_EQ(method_of("get"), Method::Other);
  EXPECT_EQ(method_of("TRACE"), Method::Other);
  EXPECT_EQ(method_of("PROPFIND"), Method::Other);
  EXPECT_EQ(method_of(""), Method::Other);
  EXPECT_EQ(kMethodLabels[static_cast<size_t>(Method::Other)], "other");
}

TEST(MetricsLabels, StatusClasses) {
  EXPECT_EQ(kStatusLabels[status_class(0)], "none");
  EXPECT_EQ(kStatusLabels[status_class(101)], "1xx");
  EXPECT_EQ(kStatusLabels[status_class(200)], "2xx");
  EXPECT_EQ(kStatusLabels[status_class(299)], "2xx");
  EXPECT_EQ(kStatusLabels[status_class(304)], "3xx");
  EXPECT_EQ(kStatusLabels[status_class(404)], "4xx");
  EXPECT_EQ(kStatusLabels[status_class(503)], "5xx");
  EXPECT_EQ(kStatusLabels[status_class(599)], "5xx");
  EXPECT_EQ(kStatusLabels[status_class(600)], "other");
  EXPECT_EQ(kStatusLabels[status_class(999)], "other");
}

TEST(MetricsHistogram, BucketsIncludeTheirUpperBound) {
  EXPECT_EQ(duration_bucket(0), 0u);
  EXPECT_EQ(duration_bucket(100'000), 0u);  // le="0.0001" includes 100 us
  EXPECT_EQ(duration_bucket(100'001), 1u);
  EXPECT_EQ(duration_bucket(1'000'000), 3u);
  EXPECT_EQ(duration_bucket(10'000'000'000), kDurationBucketCount - 1);
  EXPECT_EQ(duration_bucket(10'000'000'001), kDurationBucketCount);  // +Inf
  for (size_t i = 1; i < kDurationBucketCount; ++i) EXPECT_LT(kDurationBoundsNs[i - 1], kDurationBoundsNs[i]);
}

TEST(MetricsSlot, RequestEndedCountsAndObserves) {
  WorkerSlot slot;
  slot.request_ended(Method::Get, 200, 150'000, true);
  slot.request_ended(Method::Get, 204, 50'000, true);
  slot.request_ended(Method::Post, 0, 7, false);  // no duration observed
  EXPECT_EQ(slot.requests[0][2].get(), 2u);
  EXPECT_EQ(slot.requests[2][0].get(), 1u);
  EXPECT_EQ(slot.duration_buckets[0].get(), 1u);
  EXPECT_EQ(slot.duration_buckets[1].get(), 1u);
  EXPECT_EQ(slot.duration_sum_ns.get(), 200'000u);
}

// Answers each request with the status in its target ("/404"), or holds it.
class StatusApp final : public http::RequestDispatcher, public http::ExchangeObserver {
 public:
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    exchange.attach(this);
    if (hold) return;
    int status = std::stoi(std::string(head.target.substr(1)));
    http::HeaderList headers{{"content-length", "5"}};
    ASSERT_EQ(exchange.start_response(status, headers), nullptr);
    exchange.write_body("hello", 5, false);
  }
  void on_body_ready() override {}
  void on_writable() override {}
  void on_detach(http::Detach) override {}
  bool hold = false;
};

class SessionMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineConfig config;
    config.date_header = false;
    config.server_header = false;
    config.access_log = false;
    config.send_thread = false;
    config.metrics = &slot;
    server = std::make_unique<Engine>(config);
    ASSERT_TRUE(server->open());
    server->set_dispatcher(&app);
    auto owned = std::make_unique<MemoryStream>();
    stream = owned.get();
    auto transport =
        std::make_unique<Transport>(*server, std::move(owned), SocketAddress{false, "10.0.0.1", 1234}, &local);
    this->transport = transport.get();
    ASSERT_NE(server->start_session(std::move(transport)), nullptr);
  }
  void send(const std::string &bytes) {
    stream->peer_send(bytes);
    server->begin_step();
    transport->on_io(EPOLLIN);
    server->end_step();
  }
  uint64_t requests(Method method, int status) const {
    return slot.requests[static_cast<size_t>(method)][status_class(status)].get();
  }
  uint64_t observed() const {
    uint64_t n = 0;
    for (const Cell &bucket : slot.duration_buckets) n += bucket.get();
    return n;
  }

  WorkerSlot slot;
  SocketAddress local{false, "127.0.0.1", 8000};
  StatusApp app;
  std::unique_ptr<Engine> server;
  MemoryStream *stream = nullptr;
  Transport *transport = nullptr;
};

TEST_F(SessionMetricsTest, CountsRequestsBytesAndDurations) {
  const std::string get = "GET /200 HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string post = "POST /404 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
  send(get);
  send(get);
  send(post);
  EXPECT_EQ(requests(Method::Get, 200), 2u);
  EXPECT_EQ(requests(Method::Post, 404), 1u);
  EXPECT_EQ(observed(), 3u);
  EXPECT_EQ(slot.received_bytes.get(), 2 * get.size() + post.size());
  EXPECT_EQ(slot.sent_bytes.get(), stream->written().size());
  EXPECT_EQ(slot.open_connections.get(), 1u);
  EXPECT_EQ(slot.requests_in_flight.get(), 0u);
  EXPECT_EQ(slot.invalid_requests.get(), 0u);
}

TEST_F(SessionMetricsTest, ARequestTheClientLeavesIsCountedWithoutAStatus) {
  app.hold = true;
  send("DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(slot.requests_in_flight.get(), 1u);
  stream->peer_close();
  server->begin_step();
  transport->on_io(EPOLLIN);
  server->end_step();
  EXPECT_EQ(requests(Method::Delete, 0), 1u);
  EXPECT_EQ(observed(), 1u);
  EXPECT_EQ(slot.requests_in_flight.get(), 0u);
  EXPECT_EQ(slot.open_connections.get(), 0u);
}

TEST_F(SessionMetricsTest, AnInvalidHeadIsNoRequest) {
  send("GET / HTTP/1.1\r\nBad Header\r\n\r\n");
  EXPECT_EQ(slot.invalid_requests.get(), 1u);
  EXPECT_EQ(observed(), 0u);
  for (size_t m = 0; m < kMethodCount; ++m)
    for (size_t s = 0; s < kStatusClassCount; ++s) EXPECT_EQ(slot.requests[m][s].get(), 0u);
}

TEST_F(SessionMetricsTest, UnusualMethodsAreOther) {
  send("PROPFIND /207 HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(requests(Method::Other, 207), 1u);
}

}  // namespace
}  // namespace pronghorn::metrics
