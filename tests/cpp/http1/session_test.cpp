// Engine-level tests of the HTTP/1 session: a real pronghorn::Engine on
// 127.0.0.1, driven by run_once() from the test thread, and real client sockets.
#include "engine/http1/session.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/log.h"
#include "engine/net/listener.h"

namespace pronghorn::http1 {
namespace {

using Clock = std::chrono::steady_clock;

int64_t ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// ------------------------------------------------------------ the application

enum class Mode {
  Echo,   // read the whole body, then answer "METHOD TARGET BODY" with content-length
  Defer,  // attach and wait: the test drives the exchange
};

class TestExchange final : public ExchangeObserver {
 public:
  TestExchange(Session &c, const http::RequestHead &head, Mode mode) : conn(&c), mode_(mode) {
    method = head.method;
    target = head.target;
    for (const Header &h : head.headers) headers.emplace_back(h.name, h.value);
    Buffer &buf = c.body_buffer();
    body_at_dispatch.assign(buf.data(), buf.size());
    complete_at_dispatch = c.body_complete();
  }

  void on_body_ready() override {
    ++body_ready_calls;
    if (mode_ != Mode::Echo) return;
    take_body();
    if (conn != nullptr && !responded && conn->body_complete()) respond_echo();
  }
  void on_writable() override { ++writable_calls; }
  void on_detach(http::Detach why) override {
    ++detach_calls;
    disconnected = why != http::Detach::Complete;
    conn = nullptr;
  }

  // Moves the connection's unread body into `body` and lets it read on.
  void take_body() {
    if (conn == nullptr) return;
    Buffer &buf = conn->body_buffer();
    body.append(buf.data(), buf.size());
    buf.consume(buf.size());
    conn->body_taken();  // may re-enter on_body_ready(), or even finish the exchange
  }

  void respond(int status, const std::string &content, bool with_length = true,
               std::vector<std::pair<std::string, std::string>> extra = {}) {
    ASSERT_NE(conn, nullptr);
    responded = true;
    std::string length = std::to_string(content.size());
    HeaderList list{{"Content-Type", "text/plain"}};
    if (with_length) list.emplace_back("Content-Length", length);
    for (const auto &[n, v] : extra) list.emplace_back(n, v);
    ASSERT_EQ(conn->start_response(status, list), nullptr);
    EXPECT_TRUE(conn->response_started());
    EXPECT_EQ(conn->write_body(content.data(), content.size(), false), WriteStatus::Ok);
  }
  void respond_echo() { respond(200, method + " " + target + " " + body); }

  Session *conn;
  std::string method, target, body;
  std::string body_at_dispatch;  // what the body buffer held when on_request ran
  bool complete_at_dispatch = false;
  std::vector<std::pair<std::string, std::string>> headers;
  bool responded = false;
  bool disconnected = false;
  int body_ready_calls = 0, writable_calls = 0, detach_calls = 0;

 private:
  Mode mode_;
};

class TestDispatcher final : public RequestDispatcher {
 public:
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    // HTTP/1's exchange is its connection.
    Session &conn = static_cast<Session &>(exchange);
    exchanges.push_back(std::make_unique<TestExchange>(conn, head, mode));
    TestExchange &ex = *exchanges.back();
    conn.attach(&ex);
    // Like an app whose first step runs during dispatch: take what is there.
    if (mode == Mode::Echo && conn.body_complete()) {
      ex.take_body();
      ex.respond_echo();
    }
  }

  Mode mode = Mode::Echo;
  std::vector<std::unique_ptr<TestExchange>> exchanges;
};

// --------------------------------------------------------------- the client

struct HttpResponse {
  int status = 0;
  std::string head;  // status line and headers, with the blank line
  std::string body;
  std::string header(const std::string &name) const {
    std::string needle = "\r\n" + name + ": ";
    size_t at = head.find(needle);
    if (at == std::string::npos) return "<none>";
    size_t start = at + needle.size();
    return head.substr(start, head.find("\r\n", start) - start);
  }
  bool has_header(const std::string &name) const { return header(name) != "<none>"; }
};

// Returns the length of the complete response at the start of `buf`, or 0.
size_t parse_response(const std::string &buf, bool no_body, HttpResponse &r) {
  size_t end = buf.find("\r\n\r\n");
  if (end == std::string::npos || buf.compare(0, 9, "HTTP/1.1 ") != 0) return 0;
  r = {};
  r.head = buf.substr(0, end + 4);
  r.status = std::stoi(buf.substr(9, 3));
  size_t pos = end + 4;
  if (no_body || r.status < 200 || r.status == 204 || r.status == 304) return pos;
  if (r.has_header("content-length")) {
    size_t n = std::stoull(r.header("content-length"));
    if (buf.size() < pos + n) return 0;
    r.body = buf.substr(pos, n);
    return pos + n;
  }
  if (r.header("transfer-encoding") == "chunked") {
    while (true) {
      size_t eol = buf.find("\r\n", pos);
      if (eol == std::string::npos) return 0;
      size_t size = std::stoull(buf.substr(pos, eol - pos), nullptr, 16);
      pos = eol + 2;
      if (size == 0) {
        if (buf.compare(pos, 2, "\r\n") != 0) return 0;
        return pos + 2;
      }
      if (buf.size() < pos + size + 2) return 0;
      r.body += buf.substr(pos, size);
      if (buf.compare(pos + size, 2, "\r\n") != 0) {
        ADD_FAILURE() << "chunk data not followed by CRLF";
        return 0;
      }
      pos += size + 2;
    }
  }
  return 0;  // close-delimited: use read_until_eof()
}

class Client {
 public:
  Client(Engine &server, int port, int rcvbuf = 0) : server_(server) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    timeval tv{0, 20000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0) << strerror(errno);
  }
  ~Client() { close(); }
  Client(const Client &) = delete;
  Client &operator=(const Client &) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Small writes fit in the socket buffer; larger ones pump the server meanwhile.
  void send(const std::string &data) {
    size_t off = 0;
    auto start = Clock::now();
    while (off < data.size() && ms_since(start) < 5000) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        off += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        server_.run_once(10);
      } else {
        ADD_FAILURE() << "send failed: " << strerror(errno);
        return;
      }
    }
    EXPECT_EQ(off, data.size());
  }

  // One round: pump the server once, then take what arrived.
  void pump_and_receive() {
    server_.run_once(10);
    char buf[65536];
    while (!eof_) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        pending_.append(buf, static_cast<size_t>(n));
      } else if (n == 0) {
        eof_ = true;
      } else {
        if (errno == ECONNRESET) {
          eof_ = true;
          reset_ = true;
        }
        break;
      }
    }
  }

  HttpResponse read_response(bool no_body = false, int timeout_ms = 3000) {
    auto start = Clock::now();
    while (true) {
      HttpResponse r;
      size_t n = parse_response(pending_, no_body, r);
      if (n > 0) {
        pending_.erase(0, n);
        return r;
      }
      if (eof_ || ms_since(start) > timeout_ms) {
        ADD_FAILURE() << (eof_ ? "EOF" : "timeout") << " before a complete response; got "
                      << testing::PrintToString(pending_);
        return {};
      }
      pump_and_receive();
    }
  }

  std::string read_exact(size_t n, int timeout_ms = 3000) {
    auto start = Clock::now();
    while (pending_.size() < n && !eof_ && ms_since(start) < timeout_ms) pump_and_receive();
    std::string out = pending_.substr(0, n);
    pending_.erase(0, out.size());
    return out;
  }

  // Everything until the server closes; empty optional-like flag via eof().
  std::string read_until_eof(int timeout_ms = 3000) {
    auto start = Clock::now();
    while (!eof_ && ms_since(start) < timeout_ms) pump_and_receive();
    std::string out = std::move(pending_);
    pending_.clear();
    return out;
  }

  // Pumps for `ms` and returns what arrived meanwhile (without consuming it).
  const std::string &pump_for(int ms) {
    auto start = Clock::now();
    while (ms_since(start) < ms) pump_and_receive();
    return pending_;
  }

  bool eof() const { return eof_; }
  bool reset() const { return reset_; }
  const std::string &pending() const { return pending_; }
  int fd() const { return fd_; }

 private:
  Engine &server_;
  int fd_ = -1;
  std::string pending_;
  bool eof_ = false;
  bool reset_ = false;
};

// ----------------------------------------------------------------- fixture

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { set_log_level(LogLevel::Critical); }
  static void TearDownTestSuite() { set_log_level(LogLevel::Info); }

  static EngineConfig quiet_config() {
    EngineConfig config;
    config.access_log = false;
    // Small writes always through the send thread (when it is on), whatever
    // direct sends cost here; the choice itself is tested on its own.
    config.send_thread_min_request_ns = 0;
    return config;
  }

  void start(EngineConfig config = quiet_config()) {
    server_ = std::make_unique<Engine>(std::move(config));
    ASSERT_TRUE(server_->open());
    server_->set_dispatcher(&dispatcher_);
    int fd = listen_tcp("127.0.0.1", 0, 128, false);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(server_->add_listener(fd));
    ASSERT_EQ(server_->listen_addresses().size(), 1u);
    port_ = server_->listen_addresses()[0].port;
    ASSERT_GT(port_, 0);
  }

  std::unique_ptr<Client> connect(int rcvbuf = 0) { return std::make_unique<Client>(*server_, port_, rcvbuf); }

  void pump(int ms) {
    auto start = Clock::now();
    while (ms_since(start) < ms) server_->run_once(10);
  }

  // Runs the server until `done()` holds; fails the test after 3 s.
  template <typename Pred>
  void wait_until(Pred done) {
    auto start = Clock::now();
    while (!done() && ms_since(start) < 3000) server_->run_once(10);
    ASSERT_TRUE(done()) << "condition not reached within 3 s";
  }

  // Declared first: destroyed after the server, whose connections point at it.
  TestDispatcher dispatcher_;
  std::unique_ptr<Engine> server_;
  int port_ = 0;
};

TEST_F(SessionTest, SimpleGet) {
  start();
  auto client = connect();
  client->send("GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Test: Yes\r\n\r\n");
  HttpResponse r = client->read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r.head;
  EXPECT_EQ(r.header("server"), "pronghorn");
  EXPECT_TRUE(r.has_header("date"));
  EXPECT_EQ(r.header("content-type"), "text/plain");
  EXPECT_EQ(r.header("content-length"), "15");
  EXPECT_FALSE(r.has_header("transfer-encoding"));
  EXPECT_FALSE(r.has_header("connection"));
  EXPECT_EQ(r.body, "GET /hello?x=1 ");
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  const TestExchange &ex = *dispatcher_.exchanges[0];
  EXPECT_EQ(ex.method, "GET");
  EXPECT_EQ(ex.target, "/hello?x=1");
  ASSERT_EQ(ex.headers.size(), 2u);
  EXPECT_EQ(ex.headers[1], (std::pair<std::string, std::string>("x-test", "Yes")));
  EXPECT_EQ(ex.detach_calls, 1);
  EXPECT_FALSE(ex.disconnected);
  EXPECT_EQ(ex.conn, nullptr);
  // The connection stays open for the next request.
  client->pump_for(50);
  EXPECT_FALSE(client->eof());
  EXPECT_EQ(server_->connection_count(), 1u);
  EXPECT_EQ(server_->active_requests(), 0u);
  EXPECT_EQ(server_->requests_served(), 1u);
}

TEST_F(SessionTest, KeepAliveSequentialRequests) {
  start();
  auto client = connect();
  client->send("GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse first = client->read_response();
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.body, "GET /one ");
  client->send("GET /two HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse second = client->read_response();
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.body, "GET /two ");
  EXPECT_EQ(server_->connection_count(), 1u);
  EXPECT_EQ(server_->requests_served(), 2u);
  EXPECT_TRUE(client->pending().empty()) << "stray bytes after the responses";
}

TEST_F(SessionTest, PipelinedRequestsAnsweredInOrder) {
  start();
  auto client = connect();
  client->send(
      "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
      "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse r1 = client->read_response();
  HttpResponse r2 = client->read_response();
  HttpResponse r3 = client->read_response();
  EXPECT_EQ(r1.body, "GET /1 ");
  EXPECT_EQ(r2.body, "POST /2 body");
  EXPECT_EQ(r3.body, "GET /3 ");
  EXPECT_EQ(dispatcher_.exchanges.size(), 3u);
  EXPECT_EQ(server_->connection_count(), 1u);
}

TEST_F(SessionTest, PipelinedRequestWaitsForTheCurrentResponse) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(100);
  // The second request is not parsed while the first is being answered.
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  EXPECT_TRUE(client->pending().empty());
  dispatcher_.exchanges[0]->respond(200, "first");
  ASSERT_EQ(dispatcher_.exchanges.size(), 2u) << "finishing a response parses the next pipelined request";
  EXPECT_EQ(dispatcher_.exchanges[1]->target, "/b");
  dispatcher_.exchanges[1]->respond(201, "second");
  HttpResponse r1 = client->read_response();
  HttpResponse r2 = client->read_response();
  EXPECT_EQ(r1.status, 200);
  EXPECT_EQ(r1.body, "first");
  EXPECT_EQ(r2.status, 201);
  EXPECT_EQ(r2.body, "second");
}

TEST_F(SessionTest, SmugglingRequestGets400AndClose) {
  start();
  auto client = connect();
  client->send(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n");
  std::string all = client->read_until_eof();
  EXPECT_TRUE(client->eof());
  EXPECT_EQ(all.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << all;
  EXPECT_NE(all.find("\r\nconnection: close\r\n"), std::string::npos);
  HttpResponse r;
  EXPECT_EQ(parse_response(all, false, r), all.size()) << "exactly one response, then EOF";
  EXPECT_EQ(r.body, "Invalid HTTP request received.");
  EXPECT_TRUE(dispatcher_.exchanges.empty()) << "the application never saw a request";
  // The server half-closed and lingers until the client closes too.
  client->close();
  pump(50);
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(SessionTest, InvalidChunkedBodyGets400) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
  wait_until([&] { return dispatcher_.exchanges.size() == 1; });
  client->send("5\r\nhelloXX");
  std::string all = client->read_until_eof();
  EXPECT_EQ(all.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << all;
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  EXPECT_EQ(dispatcher_.exchanges[0]->detach_calls, 1);
  EXPECT_TRUE(dispatcher_.exchanges[0]->disconnected);
  EXPECT_EQ(server_->active_requests(), 0u);
}

// An invalid body that arrives with the head is found before dispatch: the
// app is not started for a request that is already known to be bad.
TEST_F(SessionTest, InvalidChunkedBodyWithTheHeadGets400WithoutDispatch) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX");
  std::string all = client->read_until_eof();
  EXPECT_EQ(all.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << all;
  EXPECT_EQ(dispatcher_.exchanges.size(), 0u);
  EXPECT_EQ(server_->active_requests(), 0u);
}

// Body bytes that came with the head are in the body buffer when the
// dispatcher runs, so an app started at once reads them without waiting.
TEST_F(SessionTest, BodyArrivingWithTheHeadIsBufferedBeforeDispatch) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send(
      "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
      "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  wait_until([&] { return dispatcher_.exchanges.size() == 1; });
  TestExchange &first = *dispatcher_.exchanges[0];
  EXPECT_EQ(first.body_at_dispatch, "body");
  EXPECT_TRUE(first.complete_at_dispatch);
  first.take_body();
  first.respond_echo();
  EXPECT_EQ(client->read_response().body, "POST /a body");
  wait_until([&] { return dispatcher_.exchanges.size() == 2; });
  TestExchange &second = *dispatcher_.exchanges[1];
  EXPECT_EQ(second.body_at_dispatch, "abc");
  EXPECT_TRUE(second.complete_at_dispatch);
}

// An invalid second request on a keep-alive connection still gets its 400
// (the first exchange's finished response does not count as started).
TEST_F(SessionTest, InvalidSecondRequestOnKeepAliveGets400) {
  start();
  auto client = connect();
  client->send("GET /ok HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse first = client->read_response();
  EXPECT_EQ(first.status, 200);
  client->send("GET /bad HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n");
  std::string all = client->read_until_eof();
  EXPECT_EQ(all.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << testing::PrintToString(all);
}

TEST_F(SessionTest, ChunkedRequestBodyIsReassembled) {
  start();
  auto client = connect();
  const std::string request =
      "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6;ext=1\r\n world\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";
  // In small pieces, with the server running in between.
  for (size_t off = 0; off < request.size(); off += 7) {
    client->send(request.substr(off, 7));
    client->pump_and_receive();
  }
  HttpResponse r = client->read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /upload hello worldabcdefghijklmnopqrstuvwxyz");
  // The trailer section was consumed exactly: the next request works.
  client->send("GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse next = client->read_response();
  EXPECT_EQ(next.body, "GET /next ");
}

TEST_F(SessionTest, LargeContentLengthBody) {
  start();
  auto client = connect();
  std::string body(600 * 1024, 'b');  // above body_high_water: reading pauses and resumes
  for (size_t i = 0; i < body.size(); i += 1000) body[i] = static_cast<char>('a' + (i / 1000) % 26);
  client->send("PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  HttpResponse r = client->read_response(false, 10000);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), body.size() + 9);
  EXPECT_TRUE(r.body == "PUT /big " + body) << "body corrupted";
}

TEST_F(SessionTest, ExpectContinueSentOnlyWhenBodyIsTaken) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  client->pump_for(150);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  EXPECT_TRUE(client->pending().empty()) << "100 Continue before the app asked for the body: " << client->pending();
  ASSERT_NE(ex.conn, nullptr);
  EXPECT_FALSE(ex.conn->body_complete());
  ex.conn->body_taken();
  EXPECT_EQ(client->read_exact(25), "HTTP/1.1 100 Continue\r\n\r\n");
  client->send("hello");
  auto start_time = Clock::now();
  while (ex.conn != nullptr && !ex.conn->body_complete() && ms_since(start_time) < 3000) pump(10);
  ASSERT_NE(ex.conn, nullptr);
  EXPECT_TRUE(ex.conn->body_complete());
  EXPECT_GE(ex.body_ready_calls, 1);
  ex.take_body();
  EXPECT_EQ(ex.body, "hello");
  // A second body_taken() sends no second 100.
  ex.respond(200, "got " + ex.body);
  HttpResponse r = client->read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "got hello");
  EXPECT_TRUE(client->pending().empty());
}

TEST_F(SessionTest, ExpectContinueNotSentWhenTheAppAnswersFirst) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  client->pump_for(100);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  dispatcher_.exchanges[0]->respond(413, "too big");
  std::string all = client->read_until_eof();
  EXPECT_EQ(all.rfind("HTTP/1.1 413 ", 0), 0u) << all;
  EXPECT_EQ(all.find("100 Continue"), std::string::npos);
}

TEST_F(SessionTest, HeadGetsHeadersButNoBody) {
  start();
  auto client = connect();
  client->send("HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /g HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse head = client->read_response(/*no_body=*/true);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length"), "8");  // what GET would have sent: "HEAD /h "
  EXPECT_FALSE(head.has_header("transfer-encoding"));
  HttpResponse get = client->read_response();
  EXPECT_EQ(get.head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << "the HEAD response carried body bytes";
  EXPECT_EQ(get.body, "GET /g ");
}

TEST_F(SessionTest, ChunkedResponseWithoutContentLength) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  ASSERT_EQ(ex.conn->start_response(200, {}), nullptr);
  EXPECT_EQ(ex.conn->write_body("hello", 5, true), WriteStatus::Ok);
  EXPECT_EQ(ex.conn->write_body("", 0, true), WriteStatus::Ok);
  EXPECT_EQ(ex.conn->write_body(" world!", 7, false), WriteStatus::Ok);
  std::string raw = client->read_exact(1000, 300);
  size_t body_at = raw.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos);
  EXPECT_NE(raw.find("\r\ntransfer-encoding: chunked\r\n"), std::string::npos);
  EXPECT_EQ(raw.substr(body_at + 4), "5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n");
}

TEST_F(SessionTest, Http10ResponseIsCloseDelimited) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /old HTTP/1.0\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  ASSERT_EQ(ex.conn->start_response(200, {}), nullptr);
  EXPECT_EQ(ex.conn->write_body("abc", 3, true), WriteStatus::Ok);
  EXPECT_EQ(ex.conn->write_body("def", 3, false), WriteStatus::Ok);
  std::string raw = client->read_until_eof();
  EXPECT_TRUE(client->eof());
  EXPECT_NE(raw.find("\r\nconnection: close\r\n"), std::string::npos) << raw;
  EXPECT_EQ(raw.find("transfer-encoding"), std::string::npos);
  EXPECT_EQ(raw.substr(raw.find("\r\n\r\n") + 4), "abcdef");
}

TEST_F(SessionTest, ContentLengthMismatchClosesTheConnection) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  ASSERT_EQ(ex.conn->start_response(200, {{"content-length", "3"}}), nullptr);
  EXPECT_EQ(ex.conn->write_body("abcd", 4, false), WriteStatus::TooLong);
  EXPECT_EQ(ex.conn, nullptr);
  client->read_until_eof();
  EXPECT_TRUE(client->eof());
  EXPECT_EQ(server_->active_requests(), 0u);
}

TEST_F(SessionTest, ClientDisconnectDetachesTheObserver) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  EXPECT_EQ(server_->active_requests(), 1u);
  client->close();
  auto start_time = Clock::now();
  while (ex.detach_calls == 0 && ms_since(start_time) < 3000) pump(10);
  EXPECT_EQ(ex.detach_calls, 1);
  EXPECT_TRUE(ex.disconnected);
  EXPECT_EQ(server_->active_requests(), 0u);
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(SessionTest, KeepAliveTimeoutClosesIdleConnection) {
  EngineConfig config = quiet_config();
  config.keep_alive_timeout_ms = 300;
  start(std::move(config));
  auto client = connect();
  client->send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse r = client->read_response();
  EXPECT_EQ(r.status, 200);
  auto idle_since = Clock::now();
  client->pump_for(100);
  EXPECT_FALSE(client->eof()) << "closed before the keep-alive timeout";
  client->read_until_eof(2000);
  EXPECT_TRUE(client->eof());
  EXPECT_GE(ms_since(idle_since), 280);
  EXPECT_TRUE(client->pending().empty());
  pump(20);
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(SessionTest, IdleNewConnectionIsClosedAfterKeepAliveTimeout) {
  EngineConfig config = quiet_config();
  config.keep_alive_timeout_ms = 300;
  start(std::move(config));
  auto client = connect();
  std::string all = client->read_until_eof(2000);
  EXPECT_TRUE(client->eof());
  EXPECT_TRUE(all.empty()) << all;
}

TEST_F(SessionTest, SlowHeadGets408) {
  EngineConfig config = quiet_config();
  config.header_timeout_ms = 300;
  start(std::move(config));
  auto client = connect();
  client->send("GET /slow HTTP/1.1\r\nHost: h\r\n");
  auto sent = Clock::now();
  client->pump_for(100);
  client->send("X-Drip: 1\r\n");  // trickling bytes does not extend the deadline
  std::string all = client->read_until_eof(3000);
  EXPECT_TRUE(client->eof());
  EXPECT_GE(ms_since(sent), 280);
  EXPECT_EQ(all.rfind("HTTP/1.1 408 Request Timeout\r\n", 0), 0u) << all;
  EXPECT_NE(all.find("\r\nconnection: close\r\n"), std::string::npos);
  EXPECT_TRUE(dispatcher_.exchanges.empty());
}

TEST_F(SessionTest, LimitConcurrencyGives503) {
  EngineConfig config = quiet_config();
  config.limit_concurrency = 1;
  start(std::move(config));
  dispatcher_.mode = Mode::Defer;
  auto first = connect();
  first->send("GET /first HTTP/1.1\r\nHost: h\r\n\r\n");
  first->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);

  auto second = connect();
  second->send("GET /second HTTP/1.1\r\nHost: h\r\n\r\n");
  std::string all = second->read_until_eof();
  EXPECT_TRUE(second->eof());
  EXPECT_EQ(all.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << all;
  EXPECT_NE(all.find("\r\nconnection: close\r\n"), std::string::npos);
  EXPECT_EQ(dispatcher_.exchanges.size(), 1u) << "the application never saw the second request";
  EXPECT_EQ(server_->active_requests(), 1u);

  dispatcher_.exchanges[0]->respond(200, "ok");
  HttpResponse r = first->read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
  EXPECT_EQ(server_->active_requests(), 0u);
}

TEST_F(SessionTest, UnreadBodyIsDiscardedBeforeTheNextRequest) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  dispatcher_.exchanges[0]->respond(200, "ignored the body");
  HttpResponse first = client->read_response();
  EXPECT_EQ(first.body, "ignored the body");
  // The body arrives after the response, followed by the next request; the
  // body bytes must not be taken for a request head.
  client->send("0123456789GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 2u);
  EXPECT_EQ(dispatcher_.exchanges[1]->target, "/b");
  dispatcher_.exchanges[1]->respond(200, "second");
  EXPECT_EQ(client->read_response().body, "second");
}

// After a response that left the request body unread, the connection drops the
// rest of the body within the header timeout: a client that never sends it
// cannot hold the connection forever.
TEST_F(SessionTest, UnsentBodyAfterResponseTimesOut) {
  EngineConfig config = quiet_config();
  config.keep_alive_timeout_ms = 200;
  config.header_timeout_ms = 200;
  start(std::move(config));
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  dispatcher_.exchanges[0]->respond(200, "early");
  EXPECT_EQ(client->read_response().body, "early");
  client->read_until_eof(2000);
  EXPECT_TRUE(client->eof()) << "the connection waits for the unsent body without a timeout";
}

TEST_F(SessionTest, FailExchangeGives500) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /boom HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  ex.conn->fail();
  EXPECT_EQ(ex.detach_calls, 1);
  EXPECT_FALSE(ex.disconnected);
  std::string all = client->read_until_eof();
  EXPECT_EQ(all.rfind("HTTP/1.1 500 Internal Server Error\r\n", 0), 0u) << all;
  EXPECT_NE(all.find("\r\nconnection: close\r\n"), std::string::npos);
  EXPECT_EQ(server_->active_requests(), 0u);
}

TEST_F(SessionTest, FailExchangeAfterResponseStartClosesWithoutA500) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /half HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  ASSERT_EQ(ex.conn->start_response(200, {}), nullptr);
  EXPECT_EQ(ex.conn->write_body("part", 4, true), WriteStatus::Ok);
  ex.conn->fail();
  std::string all = client->read_until_eof();
  EXPECT_TRUE(client->eof());
  EXPECT_EQ(all.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_EQ(all.find("500"), std::string::npos);
  EXPECT_EQ(all.find("0\r\n\r\n"), std::string::npos) << "a failed response must not look complete";
}

TEST_F(SessionTest, GracefulShutdown) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto idle = connect();
  auto busy = connect();
  busy->send("GET /busy HTTP/1.1\r\nHost: h\r\n\r\n");
  busy->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  EXPECT_EQ(server_->connection_count(), 2u);
  server_->begin_shutdown();
  EXPECT_TRUE(server_->shutting_down());
  // A connection that never sent a request gets a short grace period (its
  // request may be on the way), then closes.
  idle->read_until_eof(3000);
  EXPECT_TRUE(idle->eof()) << "a fresh idle connection closes after the grace period";
  EXPECT_FALSE(busy->eof());
  dispatcher_.exchanges[0]->respond(200, "last");
  std::string all = busy->read_until_eof();
  EXPECT_TRUE(busy->eof());
  HttpResponse r;
  EXPECT_EQ(parse_response(all, false, r), all.size());
  EXPECT_EQ(r.body, "last");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(server_->connection_count(), 0u);
}

// A request that reached the socket before the graceful stop, but was not read
// yet, is served (with Connection: close) instead of being dropped.
TEST_F(SessionTest, GracefulShutdownServesUnreadFirstRequest) {
  start();
  auto client = connect();
  client->pump_for(30);  // accepted, nothing to read yet
  ASSERT_EQ(server_->connection_count(), 1u);
  client->send("GET /late HTTP/1.1\r\nHost: h\r\n\r\n");
  // No pump: the server has not read the request when the stop begins.
  server_->begin_shutdown();
  std::string all = client->read_until_eof();
  HttpResponse r;
  ASSERT_EQ(parse_response(all, false, r), all.size()) << all;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "close");
}

// An idle keep-alive connection that already served a request closes at once.
TEST_F(SessionTest, GracefulShutdownClosesIdleKeepAlive) {
  start();
  auto client = connect();
  client->send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
  HttpResponse first = client->read_response();
  EXPECT_EQ(first.status, 200);
  server_->begin_shutdown();
  client->read_until_eof(300);
  EXPECT_TRUE(client->eof()) << "an idle keep-alive connection closes at once";
}

// A large response still going out when the keep-alive (or header) timeout
// passes is not cut: idle timers only start once the queued output is sent.
TEST_F(SessionTest, SlowReaderGetsWholeResponseDespiteKeepAliveTimeout) {
  EngineConfig config = quiet_config();
  config.keep_alive_timeout_ms = 200;
  config.header_timeout_ms = 200;
  start(std::move(config));
  dispatcher_.mode = Mode::Defer;
  auto client = connect(/*rcvbuf=*/16 * 1024);
  client->send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  const std::string big(4 * 1024 * 1024, 'b');
  dispatcher_.exchanges[0]->respond(200, big);
  // Read slowly: about 1.5 s in all, far beyond the 200 ms timeouts.
  std::string got;
  auto start_time = Clock::now();
  while (got.size() < big.size() + 100 && ms_since(start_time) < 10000) {
    server_->run_once(10);
    char buf[16384];
    ssize_t n = ::recv(client->fd(), buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) break;
    if (n > 0) got.append(buf, static_cast<size_t>(n));
    if (ms_since(start_time) < 1500) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  HttpResponse r;
  ASSERT_GT(parse_response(got, false, r), 0u) << "response cut after " << got.size() << " bytes";
  EXPECT_EQ(r.body.size(), big.size());
  EXPECT_GT(ms_since(start_time), 400) << "the read was not slow enough to test anything";
}

TEST_F(SessionTest, WriteBackpressure) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect(/*rcvbuf=*/16 * 1024);
  client->send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(50);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  ASSERT_EQ(ex.conn->start_response(200, {}), nullptr);
  const std::string piece(64 * 1024, 'p');
  size_t written = 0;
  WriteStatus status = WriteStatus::Ok;
  while (status == WriteStatus::Ok && written < 256u * 1024 * 1024) {
    status = ex.conn->write_body(piece.data(), piece.size(), true);
    written += piece.size();
  }
  ASSERT_EQ(status, WriteStatus::Blocked) << "the client reads nothing: writes must block eventually";
  EXPECT_EQ(ex.writable_calls, 0);
  // The client drains; the server must tell the app it may write again.
  std::string received;
  auto start_time = Clock::now();
  while (ex.writable_calls == 0 && ms_since(start_time) < 5000) {
    client->pump_and_receive();
    received += client->read_exact(client->pending().size());
  }
  EXPECT_EQ(ex.writable_calls, 1);
  ASSERT_NE(ex.conn, nullptr);
  EXPECT_EQ(ex.conn->write_body("end", 3, false), WriteStatus::Ok);
  HttpResponse r;
  start_time = Clock::now();
  while (parse_response(received, false, r) == 0 && ms_since(start_time) < 10000) {
    client->pump_and_receive();
    received += client->read_exact(client->pending().size());
  }
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), written + 3);
  EXPECT_EQ(r.body.substr(r.body.size() - 4), "pend");
}

TEST(SendThreadChoice, ThreadOnlyWhileTheLoopIsBusyWithCostlyRequests) {
  set_log_level(LogLevel::Critical);
  EngineConfig config;
  config.send_thread_min_request_ns = 50000;
  Engine server(std::move(config));
  ASSERT_TRUE(server.open());
  ASSERT_NE(server.send_thread(), nullptr);
  EXPECT_FALSE(server.prefer_send_thread()) << "no measurement yet: direct";
  const uint64_t ms = 1000000;  // ns
  uint64_t cpu = 900 * ms, t = 10000;
  server.sample_loop_cost(cpu, 0, t);  // start-up: only a base
  EXPECT_EQ(server.loop_ns_per_request(), 0u);
  // FastAPI-like under load: 150 us per request, 1000 requests in 200 ms.
  server.sample_loop_cost(cpu += 150 * ms, 1000, t += 200);
  EXPECT_EQ(server.loop_ns_per_request(), 150000u);
  EXPECT_EQ(server.loop_busy_permille(), 750u);
  EXPECT_FALSE(server.prefer_send_thread()) << "one costly window is not enough (a slow moment of the CPU)";
  server.sample_loop_cost(cpu += 150 * ms, 2000, t += 200);
  EXPECT_TRUE(server.prefer_send_thread()) << "two in a row";
  // 30 more requests: too few to change anything.
  server.sample_loop_cost(cpu + 30 * 15000, 2030, t + 200);
  EXPECT_EQ(server.loop_ns_per_request(), 150000u);
  // Hello-world-like under load: 15 us per request, busy: direct.
  server.sample_loop_cost(cpu += 180 * ms, 14000, t += 200);
  EXPECT_EQ(server.loop_ns_per_request(), 15000u);
  EXPECT_FALSE(server.prefer_send_thread()) << "off at the first cheap window";
  // Costly requests, but few (one client at a time): the loop is mostly idle.
  server.sample_loop_cost(cpu += 16 * ms, 14100, t += 200);
  EXPECT_EQ(server.loop_ns_per_request(), 160000u);
  EXPECT_EQ(server.loop_busy_permille(), 80u);
  EXPECT_FALSE(server.prefer_send_thread());
  // Busy and costly again: one window is not enough after a cheap one.
  server.sample_loop_cost(cpu += 150 * ms, 15100, t += 200);
  EXPECT_EQ(server.loop_ns_per_request(), 150000u);
  EXPECT_FALSE(server.prefer_send_thread());
  server.sample_loop_cost(cpu += 150 * ms, 16100, t += 200);
  EXPECT_TRUE(server.prefer_send_thread());
  // With the thread on, the loop thread no longer pays for the sends: an app
  // just over the bar measures under it. It stays on down to 60% of the
  // cost and 40% busy...
  server.sample_loop_cost(cpu += 120 * ms, 19100, t += 200);
  EXPECT_EQ(server.loop_ns_per_request(), 40000u);
  EXPECT_EQ(server.loop_busy_permille(), 600u);
  EXPECT_TRUE(server.prefer_send_thread()) << "an app just over the bar must not switch on and off in turn";
  // ...and goes off below that.
  server.sample_loop_cost(cpu += 120 * ms, 23100, t += 200);
  EXPECT_EQ(server.loop_ns_per_request(), 30000u);
  EXPECT_TRUE(server.prefer_send_thread()) << "60% of 50 us: still on";
  server.sample_loop_cost(cpu += 116 * ms, 27100, t += 200);
  EXPECT_EQ(server.loop_ns_per_request(), 29000u);
  EXPECT_FALSE(server.prefer_send_thread());

  EngineConfig always = config;
  always.send_thread_min_request_ns = 0;
  Engine eager(std::move(always));
  ASSERT_TRUE(eager.open());
  EXPECT_TRUE(eager.prefer_send_thread()) << "0: always, without a measurement";
  eager.sample_loop_cost(0, 0, 0);
  eager.sample_loop_cost(2 * ms, 1000, 200);  // cheap and idle
  EXPECT_TRUE(eager.prefer_send_thread()) << "0: always, whatever the figures";

  EngineConfig off;
  off.send_thread = false;
  Engine without(std::move(off));
  ASSERT_TRUE(without.open());
  without.sample_loop_cost(0, 0, 0);
  without.sample_loop_cost(150 * ms, 1000, 200);
  EXPECT_FALSE(without.prefer_send_thread());
  set_log_level(LogLevel::Info);
}

// Small responses go out through the send thread; a client that reads
// slowly makes those sends partial, and the rest must follow, in order.
void expect_pipelined_responses_to_slow_reader(Engine &server, TestDispatcher &dispatcher, Client &client) {
  // More than the server's socket buffer can take (tcp_wmem's maximum is
  // 4 MiB by default) while the client reads nothing.
  constexpr int kRequests = 120;
  constexpr size_t kBodySize = 60 * 1024;
  std::string requests;
  for (int i = 0; i < kRequests; ++i) requests += "GET /" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n";
  client.send(requests);
  auto body_of = [](size_t i) { return std::string(kBodySize, static_cast<char>('A' + i % 26)); };
  size_t responded = 0;
  int received = 0;  // complete responses checked so far
  std::string got;
  auto start_time = Clock::now();
  while (received < kRequests && ms_since(start_time) < 15000) {
    server.run_once(1);
    // Each response completes the exchange, which parses the next request.
    // One response per pass: each is sent when the previous one is done, so
    // one of them meets the full socket and its send is partial.
    if (responded < dispatcher.exchanges.size()) {
      dispatcher.exchanges[responded]->respond(200, body_of(responded));
      ++responded;
    }
    if (ms_since(start_time) < 500) continue;  // let the socket fill up first
    char buf[65536];
    ssize_t n = ::recv(client.fd(), buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) break;
    if (n <= 0) continue;
    got.append(buf, static_cast<size_t>(n));
    HttpResponse r;
    while (size_t used = parse_response(got, false, r)) {
      ASSERT_EQ(r.body, body_of(static_cast<size_t>(received))) << "response " << received;
      got.erase(0, used);
      ++received;
    }
  }
  EXPECT_EQ(responded, static_cast<size_t>(kRequests));
  EXPECT_EQ(received, kRequests);
  EXPECT_TRUE(got.empty());
}

TEST_F(SessionTest, SmallResponsesToASlowReaderArriveWholeAndInOrder) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect(/*rcvbuf=*/4096);
  expect_pipelined_responses_to_slow_reader(*server_, dispatcher_, *client);
}

TEST_F(SessionTest, WithoutSendThreadSmallResponsesToASlowReaderArriveWholeAndInOrder) {
  EngineConfig config = quiet_config();
  config.send_thread = false;
  start(std::move(config));
  EXPECT_EQ(server_->send_thread(), nullptr);
  dispatcher_.mode = Mode::Defer;
  auto client = connect(/*rcvbuf=*/4096);
  expect_pipelined_responses_to_slow_reader(*server_, dispatcher_, *client);
}

TEST_F(SessionTest, CloseWithASendInFlightKeepsItsBytesAndItsFd) {
  start();
  ASSERT_NE(server_->send_thread(), nullptr);
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(30);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  TestExchange &ex = *dispatcher_.exchanges[0];
  server_->send_thread()->hold(true);
  ASSERT_EQ(ex.conn->start_response(200, {}), nullptr);
  ASSERT_EQ(ex.conn->write_body("partial", 7, true), WriteStatus::Ok);
  ex.conn->close_now(false);
  EXPECT_EQ(server_->connection_count(), 0u);
  // The fd stays open while its send is queued: no EOF yet, and a new
  // connection cannot be given the same fd number (and the old bytes).
  client->pump_for(50);
  EXPECT_FALSE(client->eof());
  EXPECT_TRUE(client->pending().empty());
  auto other = connect();
  other->send("GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  other->pump_for(30);
  ASSERT_EQ(dispatcher_.exchanges.size(), 2u);
  server_->send_thread()->hold(false);
  std::string all = client->read_until_eof();
  EXPECT_TRUE(client->eof());
  EXPECT_NE(all.find("\r\n\r\n7\r\npartial\r\n"), std::string::npos) << all;
  dispatcher_.exchanges[1]->respond(200, "second");
  HttpResponse r = other->read_response();
  EXPECT_EQ(r.body, "second");
  EXPECT_EQ(r.head.find("partial"), std::string::npos);
}

TEST_F(SessionTest, GracefulStopWithAResponseInFlightSendsItThenCloses) {
  start();
  dispatcher_.mode = Mode::Defer;
  auto client = connect();
  client->send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
  client->pump_for(30);
  ASSERT_EQ(dispatcher_.exchanges.size(), 1u);
  server_->send_thread()->hold(true);
  dispatcher_.exchanges[0]->respond(200, "last words");
  server_->begin_shutdown();  // the connection is idle, its response still queued
  client->pump_for(50);
  EXPECT_FALSE(client->eof()) << "closed before its response went out";
  server_->send_thread()->hold(false);
  std::string all = client->read_until_eof();
  EXPECT_TRUE(client->eof());
  HttpResponse r;
  ASSERT_GT(parse_response(all, false, r), 0u) << all;
  EXPECT_EQ(r.body, "last words");
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(SessionTest, ConnectionCloseRequest) {
  start();
  auto client = connect();
  client->send("GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
  std::string all = client->read_until_eof();
  EXPECT_TRUE(client->eof());
  HttpResponse r;
  EXPECT_EQ(parse_response(all, false, r), all.size());
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(r.body, "GET /bye ");
}

}  // namespace
}  // namespace pronghorn::http1
