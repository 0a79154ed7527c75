// The HTTP/1 session over an in-memory transport (net/memory_stream.h): no
// sockets, no timing; the test is the peer and drives every event itself.
#include <gtest/gtest.h>
#include <sys/epoll.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/http1/session.h"
#include "engine/net/memory_stream.h"
#include "engine/net/transport.h"

namespace pronghorn::http1 {
namespace {

// Answers every request at once with "TARGET" (content-length), unless told
// to hold the response: then it only starts it, or does nothing.
class App final : public http::RequestDispatcher, public http::ExchangeObserver {
 public:
  enum class Mode { Answer, StartOnly, Nothing };
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    targets.emplace_back(head.target);
    current = &exchange;
    exchange.attach(this);
    if (mode == Mode::Nothing) return;
    std::string length = std::to_string(body.empty() ? head.target.size() : body.size());
    http::HeaderList headers{{"content-length", length}};
    ASSERT_EQ(exchange.start_response(200, headers), nullptr);
    if (mode == Mode::StartOnly) return;
    std::string content = body.empty() ? std::string(head.target) : body;
    exchange.write_body(content.data(), content.size(), false);
  }
  void on_body_ready() override {}
  void on_writable() override {}
  void on_detach(http::Detach why) override {
    ++detached;
    disconnected = why != http::Detach::Complete;
    current = nullptr;
  }

  Mode mode = Mode::Answer;
  std::string body;  // when set, the response body instead of the target
  std::vector<std::string> targets;
  http::Exchange *current = nullptr;
  int detached = 0;
  bool disconnected = false;
};

class MemorySessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineConfig config;
    config.date_header = false;
    config.server_header = false;
    config.access_log = false;
    config.send_thread = false;
    server = std::make_unique<Engine>(config);
    ASSERT_TRUE(server->open());
    server->set_dispatcher(&app);
    auto owned = std::make_unique<MemoryStream>();
    stream = owned.get();
    auto transport =
        std::make_unique<Transport>(*server, std::move(owned), SocketAddress{false, "10.0.0.1", 1234}, &local);
    this->transport = transport.get();
    session = server->start_session(std::move(transport));
    ASSERT_NE(session, nullptr);
  }

  // The peer sends `bytes`; the session reads them in one event (a step).
  void send(const std::string &bytes) {
    stream->peer_send(bytes);
    event(EPOLLIN);
  }
  void event(uint32_t events) {
    server->begin_step();
    transport->on_io(events);
    server->end_step();
  }
  std::string take_output() {
    std::string out;
    out.swap(stream->written());
    return out;
  }

  SocketAddress local{false, "127.0.0.1", 8000};
  App app;
  std::unique_ptr<Engine> server;
  MemoryStream *stream = nullptr;
  Transport *transport = nullptr;
  pronghorn::Session *session = nullptr;
};

TEST_F(MemorySessionTest, AnswersARequest) {
  send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(take_output(), "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n/hello");
  EXPECT_EQ(app.detached, 1);
  EXPECT_FALSE(app.disconnected);
}

TEST_F(MemorySessionTest, HeadSplitAtEveryByteIsAnsweredTheSame) {
  const std::string request = "GET /split HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
  for (char c : request) send(std::string(1, c));
  EXPECT_EQ(take_output(), "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n/split");
  // A head arriving in pieces keeps a buffer of about its own size.
  send("GET /next HTTP/1.1\r\nHost: x\r\n");
  EXPECT_LE(transport->input().capacity(), 4096u);
}

TEST_F(MemorySessionTest, PipelinedRequestsWaitWhileOutputIsQueued) {
  app.body.assign(200 * 1024, 'b');
  stream->set_write_capacity(0);  // the client reads nothing
  std::string pipelined;
  for (int i = 0; i < 10; ++i) {
    pipelined.append("GET /").append(std::to_string(i)).append(" HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  send(pipelined);
  // Two responses fill the queue past its high-water mark; the rest wait unread.
  EXPECT_EQ(app.targets.size(), 2u);
  EXPECT_LE(transport->queued_bytes(), 2 * app.body.size() + 1024);
  // The client reads: each drain lets the next request through, all in order.
  for (int round = 0; round < 40 && app.targets.size() < 10; ++round) {
    stream->set_write_capacity(64 * 1024);
    event(EPOLLOUT);
  }
  stream->set_write_capacity(SIZE_MAX);
  event(EPOLLOUT);
  ASSERT_EQ(app.targets.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    std::string expected("/");
    expected.append(std::to_string(i));
    EXPECT_EQ(app.targets[i], expected);
  }
  std::string out = take_output();
  size_t responses = 0;
  for (size_t at = out.find("HTTP/1.1 200 OK"); at != std::string::npos; at = out.find("HTTP/1.1 200 OK", at + 1))
    ++responses;
  EXPECT_EQ(responses, 10u);
}

TEST_F(MemorySessionTest, AHeadWithoutBodyIsSentWhenTheStepEnds) {
  app.mode = App::Mode::StartOnly;
  send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(take_output(), "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
  ASSERT_NE(app.current, nullptr);
  EXPECT_EQ(app.current->write_body("/late", 5, false), http::WriteStatus::Ok);
  EXPECT_EQ(take_output(), "/late");
}

TEST_F(MemorySessionTest, HeadAndBodyInOneStepGoOutInOneWrite) {
  // Held within the step, the head joins the body (one writev): the output
  // of the step is the whole response, whatever the mode of writing.
  send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(take_output(), "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n/one");
}

TEST_F(MemorySessionTest, PeerClosingMidResponseDisconnectsTheExchange) {
  app.mode = App::Mode::Nothing;
  send("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_NE(app.current, nullptr);
  stream->peer_close();
  event(EPOLLIN);
  EXPECT_EQ(app.detached, 1);
  EXPECT_TRUE(app.disconnected);
  EXPECT_EQ(server->connection_count(), 0u);
}

TEST_F(MemorySessionTest, ResetWhileWritingClosesTheSession) {
  app.body.assign(100 * 1024, 'r');
  stream->set_write_capacity(1000);
  send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_GT(transport->queued_bytes(), 0u);
  stream->peer_reset();
  stream->set_write_capacity(SIZE_MAX);
  event(EPOLLOUT);
  EXPECT_TRUE(transport->closed());
  EXPECT_EQ(server->connection_count(), 0u);
}

TEST_F(MemorySessionTest, BadRequestGets400AndAHalfClose) {
  send("GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
  std::string out = take_output();
  EXPECT_EQ(out.rfind("HTTP/1.1 400 ", 0), 0u) << out;
  EXPECT_TRUE(stream->write_shut());  // lingering close: the client reads the 400 before any reset
  EXPECT_TRUE(app.targets.empty());
}

}  // namespace
}  // namespace pronghorn::http1
