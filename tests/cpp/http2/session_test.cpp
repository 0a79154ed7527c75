// The HTTP/2 session over an in-memory transport (net/memory_stream.h), with
// an nghttp2 client session as the peer: no sockets, no timing; the test
// moves the bytes both ways itself (pump()).
#include "engine/http2/session.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/net/memory_stream.h"
#include "engine/net/transport.h"

namespace pronghorn::http2 {
namespace {

// ---------------------------------------------------------------- the client

struct ClientStream {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool closed = false;
  uint32_t error_code = 0;
  bool reset_by_server = false;
  std::string header(const std::string &name) const {
    for (const auto &[n, v] : headers)
      if (n == name) return v;
    return "";
  }
};

struct UploadSource {
  std::string data;
  size_t off = 0;
};

class Client {
 public:
  explicit Client(uint32_t window = 65535, bool auto_window = true) {
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_option *option;
    nghttp2_option_new(&option);
    if (!auto_window) nghttp2_option_set_no_auto_window_update(option, 1);
    // (nghttp2 would refuse to send a head whose uncompressed size could be
    // over 64 KiB: the HPACK bomb test sends one.)
    nghttp2_option_set_max_send_header_block_length(option, 1u << 24);
    nghttp2_session_client_new2(&ng, cbs, this, option);
    nghttp2_option_del(option);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry entries[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window}};
    nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, entries, 1);
  }
  ~Client() { nghttp2_session_del(ng); }

  int32_t request(const std::string &method, const std::string &path, const std::string *body = nullptr,
                  std::vector<std::pair<std::string, std::string>> extra = {}) {
    std::vector<std::pair<std::string, std::string>> fields = {
        {":method", method}, {":scheme", "http"}, {":authority", "example.com"}, {":path", path}};
    fields.insert(fields.end(), extra.begin(), extra.end());
    std::vector<nghttp2_nv> nva;
    for (auto &[n, v] : fields)
      nva.push_back({reinterpret_cast<uint8_t *>(n.data()), reinterpret_cast<uint8_t *>(v.data()), n.size(), v.size(),
                     NGHTTP2_NV_FLAG_NONE});
    nghttp2_data_provider provider{};
    UploadSource *source = nullptr;
    if (body != nullptr) {
      uploads.push_back(std::make_unique<UploadSource>());
      source = uploads.back().get();
      source->data = *body;
      provider.source.ptr = source;
      provider.read_callback = [](nghttp2_session *, int32_t, uint8_t *buf, size_t length, uint32_t *flags,
                                  nghttp2_data_source *src, void *) -> ssize_t {
        auto *up = static_cast<UploadSource *>(src->ptr);
        size_t n = std::min(length, up->data.size() - up->off);
        memcpy(buf, up->data.data() + up->off, n);
        up->off += n;
        if (up->off == up->data.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
        return static_cast<ssize_t>(n);
      };
    }
    int32_t id = nghttp2_submit_request(ng, nullptr, nva.data(), nva.size(), body ? &provider : nullptr, nullptr);
    streams[id];
    return id;
  }

  std::string drain() {
    std::string out;
    for (;;) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(ng, &data);
      if (n <= 0) break;
      out.append(reinterpret_cast<const char *>(data), static_cast<size_t>(n));
    }
    return out;
  }
  void feed(const std::string &bytes) {
    ssize_t rv = nghttp2_session_mem_recv(ng, reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
    if (rv < 0) recv_error = static_cast<int>(rv);
  }

  nghttp2_session *ng = nullptr;
  std::map<int32_t, ClientStream> streams;
  std::vector<std::unique_ptr<UploadSource>> uploads;
  bool goaway = false;
  int32_t goaway_last_id = -1;
  uint32_t goaway_error = 0;
  std::vector<int32_t> goaway_last_ids;  // every GOAWAY's, in order
  int recv_error = 0;

 private:
  static int on_header(nghttp2_session *, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                       const uint8_t *value, size_t valuelen, uint8_t, void *user) {
    auto &self = *static_cast<Client *>(user);
    ClientStream &s = self.streams[frame->hd.stream_id];
    std::string n(reinterpret_cast<const char *>(name), namelen), v(reinterpret_cast<const char *>(value), valuelen);
    if (n == ":status")
      s.status = atoi(v.c_str());
    else
      s.headers.emplace_back(n, v);
    return 0;
  }
  static int on_data(nghttp2_session *, uint8_t, int32_t id, const uint8_t *data, size_t len, void *user) {
    static_cast<Client *>(user)->streams[id].body.append(reinterpret_cast<const char *>(data), len);
    return 0;
  }
  static int on_close(nghttp2_session *, int32_t id, uint32_t error, void *user) {
    ClientStream &s = static_cast<Client *>(user)->streams[id];
    s.closed = true;
    s.error_code = error;
    return 0;
  }
  static int on_frame(nghttp2_session *, const nghttp2_frame *frame, void *user) {
    auto &self = *static_cast<Client *>(user);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      self.goaway = true;
      self.goaway_last_id = frame->goaway.last_stream_id;
      self.goaway_error = frame->goaway.error_code;
      self.goaway_last_ids.push_back(frame->goaway.last_stream_id);
    } else if (frame->hd.type == NGHTTP2_RST_STREAM) {
      self.streams[frame->hd.stream_id].reset_by_server = true;
    }
    return 0;
  }
};

// ---------------------------------------------------------------- the app

struct Request final : http::ExchangeObserver {
  http::Exchange *exchange = nullptr;
  std::string method, target, version, body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool detached = false;
  http::Detach why = http::Detach::Complete;
  int writable = 0;
  bool take_body = true;  // copy body bytes out as they come
  bool body_done = false;
  void on_body_ready() override {
    if (exchange == nullptr || !take_body) return;
    take();
  }
  void take() {
    Buffer &buf = exchange->body_buffer();
    body.append(buf.data(), buf.size());
    buf.consume(buf.size());
    body_done = exchange->body_complete();
    exchange->body_taken();
  }
  void on_writable() override { ++writable; }
  void on_detach(http::Detach reason) override {
    detached = true;
    why = reason;
    exchange = nullptr;
  }
  std::string header(const std::string &name) const {
    for (const auto &[n, v] : headers)
      if (n == name) return v;
    return "";
  }
};

class App final : public http::RequestDispatcher {
 public:
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    auto request = std::make_unique<Request>();
    Request &r = *request;
    requests.push_back(std::move(request));
    r.exchange = &exchange;
    r.method.assign(head.method);
    r.target.assign(head.target);
    r.version.assign(head.http_version);
    for (const http::Header &h : head.headers) r.headers.emplace_back(h.name, h.value);
    exchange.attach(&r);
    if (handler) handler(r);
  }
  // Answers `r` with `body` (content-length).
  static void answer(Request &r, const std::string &body, http::HeaderList extra = {}) {
    std::string length = std::to_string(body.size());
    extra.emplace_back("content-length", length);
    ASSERT_EQ(r.exchange->start_response(200, extra), nullptr);
    r.exchange->write_body(body.data(), body.size(), false);
  }
  std::function<void(Request &)> handler;
  std::vector<std::unique_ptr<Request>> requests;
};

// ---------------------------------------------------------------- fixture

class Http2SessionTest : public ::testing::Test {
 protected:
  void start(Settings settings = {}, uint32_t client_window = 65535, bool client_auto_window = true,
             bool read_now = true, bool direct = false) {
    EngineConfig config = base_config;
    config.date_header = false;
    config.server_header = false;
    config.send_thread = false;
    settings.enabled = true;
    config.http2 = settings;
    server = std::make_unique<Engine>(config);
    ASSERT_TRUE(server->open());
    server->set_dispatcher(&app);
    auto owned = std::make_unique<MemoryStream>();
    stream = owned.get();
    stream->set_sink(&written);
    auto t = std::make_unique<Transport>(*server, std::move(owned), SocketAddress{false, "10.0.0.1", 1234}, &local);
    transport = t.get();
    if (direct) {
      // The HTTP/2 session itself, for the tests that drive its tick.
      // (Bytes an HTTP/1 session read before it handed the connection over.)
      transport->input().append(handed_over.data(), handed_over.size());
      h2 = new Session(*server, std::move(t));
      ASSERT_NE(server->adopt_session(h2, *transport), nullptr);
      if (transport->closed()) return;  // (refused what it was handed: its stream is gone)
    } else {
      // Through the HTTP/1 session, as a plain listener's connection: the
      // preface hands it to HTTP/2.
      ASSERT_NE(server->start_session(std::move(t)), nullptr);
    }
    client = std::make_unique<Client>(client_window, client_auto_window);
    std::string first = client->drain();  // nghttp2 starts with the preface
    ASSERT_EQ(first.compare(0, kClientPrefaceSize, kClientPreface), 0);
    stream->peer_send(first);
    if (!read_now) return;
    event(EPOLLIN);
    pump();
  }

  void event(uint32_t events) {
    server->begin_step();
    transport->on_io(events);
    server->end_step();
  }
  // Moves bytes both ways until neither side has more. (A closed transport
  // has freed its MemoryStream; the written bytes are in `written`.)
  void pump() {
    for (int round = 0; round < 1000; ++round) {
      std::string to_server = client->drain();
      if (transport->closed()) {
        std::string rest;
        rest.swap(written);
        if (!rest.empty()) client->feed(rest);
        return;
      }
      if (!to_server.empty()) stream->peer_send(to_server);
      bool reading = stream->inbound_left() > 0;
      if (reading) event(EPOLLIN);
      std::string to_client;
      to_client.swap(written);
      if (!to_client.empty()) client->feed(to_client);
      if (to_server.empty() && to_client.empty() && !reading) return;
    }
    FAIL() << "pump did not settle";
  }
  // Runs `action` as a step of the application (held frames go out at its end).
  void app_step(const std::function<void()> &action) {
    server->begin_step();
    action();
    server->end_step();
    pump();
  }
  // Raw bytes from the client, after what its session sent.
  void send_raw(const std::string &bytes) {
    stream->peer_send(bytes);
    for (int i = 0; i < 100 && !transport->closed() && stream->inbound_left() > 0; ++i) event(EPOLLIN);
    std::string to_client;
    to_client.swap(written);
    client->feed(to_client);
  }
  // Raw bytes from the client, and what the server answered, not given to
  // the client session (whose own state would refuse what it did not send).
  std::string take_raw(const std::string &bytes) {
    stream->peer_send(bytes);
    for (int i = 0; i < 100 && !transport->closed() && stream->inbound_left() > 0; ++i) event(EPOLLIN);
    std::string out;
    out.swap(written);
    return out;
  }
  // The frames in `bytes`: type, stream ID, error code (GOAWAY, RST_STREAM; else 0), length.
  struct RawFrame {
    uint8_t type;
    uint32_t stream_id;
    uint32_t error_code;
    size_t length;
    uint32_t last_stream_id;  // GOAWAY's
  };
  static std::vector<RawFrame> frames_in(const std::string &bytes) {
    std::vector<RawFrame> out;
    auto u8 = [&](size_t at) { return static_cast<uint32_t>(static_cast<uint8_t>(bytes[at])); };
    auto u32 = [&](size_t at) { return u8(at) << 24 | u8(at + 1) << 16 | u8(at + 2) << 8 | u8(at + 3); };
    for (size_t at = 0; at + 9 <= bytes.size();) {
      size_t length = u8(at) << 16 | u8(at + 1) << 8 | u8(at + 2);
      if (at + 9 + length > bytes.size()) break;
      uint8_t type = static_cast<uint8_t>(u8(at + 3));
      uint32_t code = type == NGHTTP2_GOAWAY ? u32(at + 13) : type == NGHTTP2_RST_STREAM ? u32(at + 9) : 0;
      uint32_t last_id = type == NGHTTP2_GOAWAY ? u32(at + 9) & 0x7fffffffu : 0;
      out.push_back({type, u32(at + 5) & 0x7fffffffu, code, length, last_id});
      at += 9 + length;
    }
    return out;
  }
  // The error code of the first GOAWAY in `bytes`, or -1.
  static int64_t goaway_in(const std::string &bytes) {
    for (const RawFrame &f : frames_in(bytes))
      if (f.type == NGHTTP2_GOAWAY) return f.error_code;
    return -1;
  }
  static std::string settings_payload(std::initializer_list<std::pair<uint16_t, uint32_t>> entries) {
    std::string p;
    for (const auto &[id, value] : entries) {
      p.push_back(static_cast<char>(id >> 8));
      p.push_back(static_cast<char>(id));
      for (int shift = 24; shift >= 0; shift -= 8) p.push_back(static_cast<char>(value >> shift));
    }
    return p;
  }
  static std::string u32_payload(uint32_t value) {
    std::string p;
    for (int shift = 24; shift >= 0; shift -= 8) p.push_back(static_cast<char>(value >> shift));
    return p;
  }
  static std::string frame(uint8_t type, uint8_t flags, uint32_t stream_id, const std::string &payload) {
    std::string f;
    f.push_back(static_cast<char>(payload.size() >> 16));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size()));
    f.push_back(static_cast<char>(type));
    f.push_back(static_cast<char>(flags));
    f.push_back(static_cast<char>(stream_id >> 24));
    f.push_back(static_cast<char>(stream_id >> 16));
    f.push_back(static_cast<char>(stream_id >> 8));
    f.push_back(static_cast<char>(stream_id));
    f.append(payload);
    return f;
  }
  // An HPACK block for GET / (static table entries: :method GET, :path /, :scheme http).
  static std::string get_block() { return std::string("\x82\x84\x86", 3) + std::string("\x41\x01x", 3); }

  SocketAddress local{false, "127.0.0.1", 8000};
  EngineConfig base_config = [] {
    EngineConfig config;
    config.access_log = false;
    return config;
  }();
  App app;
  std::unique_ptr<Engine> server;
  MemoryStream *stream = nullptr;
  Transport *transport = nullptr;
  std::string written;
  std::string handed_over;  // in the transport's input before a direct start
  std::unique_ptr<Client> client;
  Session *h2 = nullptr;  // with start(..., direct = true)
};

TEST_F(Http2SessionTest, AnswersAGetWithTheRequestMappedAsHttp1Would) {
  app.handler = [](Request &r) {
    App::answer(r, "hello", {{"X-Custom", "A"}, {"Connection", "close"}, {"Transfer-Encoding", "chunked"}});
  };
  start();
  int32_t id = client->request("GET", "/hello?x=1", nullptr, {{"accept", "*/*"}});
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  Request &r = *app.requests[0];
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/hello?x=1");
  EXPECT_EQ(r.version, "2");
  ASSERT_GE(r.headers.size(), 2u);
  EXPECT_EQ(r.headers[0].first, "host");  // from :authority
  EXPECT_EQ(r.headers[0].second, "example.com");
  EXPECT_EQ(r.header("accept"), "*/*");
  EXPECT_TRUE(r.detached);
  EXPECT_EQ(r.why, http::Detach::Complete);
  ClientStream &s = client->streams[id];
  EXPECT_EQ(s.status, 200);
  EXPECT_EQ(s.body, "hello");
  EXPECT_EQ(s.header("x-custom"), "A");  // lower-cased
  EXPECT_EQ(s.header("content-length"), "5");
  EXPECT_EQ(s.header("connection"), "");  // connection-specific: dropped
  EXPECT_EQ(s.header("transfer-encoding"), "");
  EXPECT_TRUE(s.closed);
  EXPECT_EQ(s.error_code, 0u);
  EXPECT_EQ(server->active_requests(), 0u);
}

TEST_F(Http2SessionTest, SplitCookieFieldsBecomeOneHeader) {
  app.handler = [](Request &r) { App::answer(r, "ok"); };
  start();
  client->request("GET", "/", nullptr, {{"cookie", "a=1"}, {"x-other", "y"}, {"cookie", "b=2"}});
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  EXPECT_EQ(app.requests[0]->header("cookie"), "a=1; b=2");
  int cookies = 0;
  for (const auto &[name, value] : app.requests[0]->headers) cookies += name == "cookie";
  EXPECT_EQ(cookies, 1);
}

TEST_F(Http2SessionTest, PostBodiesWithAndWithoutContentLengthReachTheApp) {
  app.handler = [](Request &r) {
    if (r.body_done) App::answer(r, std::to_string(r.body.size()));
  };
  start();
  std::string big(200 * 1024, 'p');  // over the 64 KiB window: needs the app's reads to open it
  std::string small = "name=value";
  int32_t a = client->request("POST", "/a", &big);
  int32_t b = client->request("POST", "/b", &small, {{"content-length", std::to_string(small.size())}});
  for (int i = 0; i < 50; ++i) {
    pump();
    app_step([&] {
      for (auto &r : app.requests)
        if (r->exchange != nullptr && r->body_done) App::answer(*r, std::to_string(r->body.size()));
    });
  }
  ASSERT_EQ(app.requests.size(), 2u);
  EXPECT_EQ(client->streams[a].body, std::to_string(big.size()));
  EXPECT_EQ(client->streams[b].body, std::to_string(small.size()));
  EXPECT_EQ(app.requests[0]->body, big);
}

TEST_F(Http2SessionTest, TrailersAreAcceptedAndEndTheBody) {
  start();
  // HEADERS, DATA, then trailers (HEADERS with END_STREAM).
  std::string head = std::string("\x83\x84\x86", 3) + std::string("\x41\x01x", 3);  // POST / http host x
  std::string bytes =
      frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, head) + frame(NGHTTP2_DATA, 0, 1, "abc") +
      frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1, std::string("\x00\x03x-t\x01v", 7));
  send_raw(bytes);
  ASSERT_EQ(app.requests.size(), 1u);
  EXPECT_EQ(app.requests[0]->body, "abc");
  EXPECT_TRUE(app.requests[0]->body_done);
  EXPECT_FALSE(client->goaway);
}

TEST_F(Http2SessionTest, StreamedResponseGoesOutAsDataFrames) {
  start();
  int32_t id = client->request("GET", "/stream");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  Request &r = *app.requests[0];
  app_step([&] { ASSERT_EQ(r.exchange->start_response(200, {{"content-type", "text/plain"}}), nullptr); });
  EXPECT_EQ(client->streams[id].status, 200);  // the head went out at the step's end
  EXPECT_FALSE(client->streams[id].closed);
  app_step([&] { r.exchange->write_body("one,", 4, true); });
  EXPECT_EQ(client->streams[id].body, "one,");
  app_step([&] { r.exchange->write_body("two", 3, false); });
  EXPECT_EQ(client->streams[id].body, "one,two");
  EXPECT_TRUE(client->streams[id].closed);
  EXPECT_EQ(client->streams[id].header("content-length"), "");
}

TEST_F(Http2SessionTest, InterleavedStreamsAnswerInAnyOrder) {
  start();
  int32_t first = client->request("GET", "/1");
  int32_t second = client->request("GET", "/2");
  pump();
  ASSERT_EQ(app.requests.size(), 2u);
  app_step([&] { App::answer(*app.requests[1], "second"); });
  EXPECT_EQ(client->streams[second].body, "second");
  EXPECT_FALSE(client->streams[first].closed);
  app_step([&] { App::answer(*app.requests[0], "first"); });
  EXPECT_EQ(client->streams[first].body, "first");
  EXPECT_TRUE(client->streams[first].closed);
}

TEST_F(Http2SessionTest, ARequestWindowOpensOnlyAsTheAppTakesTheBody) {
  Settings settings;
  settings.initial_window_size = 16384;
  start(settings);
  app.handler = [](Request &r) { r.take_body = r.target == "/reader"; };
  std::string body(100 * 1024, 'w');
  int32_t idle = client->request("POST", "/idle", &body);
  int32_t reader = client->request("POST", "/reader", &body);
  for (int i = 0; i < 20; ++i) pump();
  ASSERT_EQ(app.requests.size(), 2u);
  Request &slow = *app.requests[0];
  Request &fast = *app.requests[1];
  // The stream whose app reads got its whole body; the other only its window.
  EXPECT_EQ(fast.body.size(), body.size());
  EXPECT_TRUE(fast.body_done);
  EXPECT_EQ(slow.exchange->body_buffer().size(), 16384u);
  // The app reads: the window opens and the rest comes.
  for (int i = 0; i < 50 && !slow.body_done; ++i) app_step([&] { slow.take(); });
  EXPECT_EQ(slow.body.size(), body.size());
  (void)idle;
  (void)reader;
}

TEST_F(Http2SessionTest, AClosedClientWindowBlocksOnlyItsStream) {
  // The client opens no window beyond 1000 bytes per stream until it reads.
  start({}, 1000, false);
  int32_t big = client->request("GET", "/big");
  int32_t small = client->request("GET", "/small");
  pump();
  ASSERT_EQ(app.requests.size(), 2u);
  Request &b = *app.requests[0];
  std::string chunk(100 * 1024, 'b');
  http::WriteStatus status{};
  app_step([&] {
    ASSERT_EQ(b.exchange->start_response(200, {}), nullptr);
    status = b.exchange->write_body(chunk.data(), chunk.size(), true);
  });
  EXPECT_EQ(status, http::WriteStatus::Blocked);  // its bytes wait, bounded by the app's waiting
  EXPECT_EQ(client->streams[big].body.size(), 1000u);
  // Another stream is answered meanwhile (its 5 bytes fit its own window).
  app_step([&] { App::answer(*app.requests[1], "small"); });
  EXPECT_EQ(client->streams[small].body, "small");
  EXPECT_EQ(b.writable, 0);
  // The client reads: windows open, the big stream drains, on_writable fires.
  for (int i = 0; i < 200 && client->streams[big].body.size() < chunk.size(); ++i) {
    nghttp2_session_consume(client->ng, big, client->streams[big].body.size());
    nghttp2_session_consume_connection(client->ng, 0);
    pump();
    size_t have = client->streams[big].body.size();
    nghttp2_session_consume_stream(client->ng, big, 0);
    (void)have;
  }
  EXPECT_EQ(client->streams[big].body.size(), chunk.size());
  EXPECT_GE(b.writable, 1);
}

TEST_F(Http2SessionTest, GracefulStopSendsGoawayAndLetsOpenStreamsFinish) {
  start();
  int32_t id = client->request("GET", "/slow");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  server->begin_shutdown();
  pump();
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_last_id, id);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_FALSE(transport->closed());
  app_step([&] { App::answer(*app.requests[0], "done"); });
  EXPECT_EQ(client->streams[id].body, "done");
  EXPECT_TRUE(transport->closed());
  EXPECT_EQ(server->connection_count(), 0u);
}

TEST_F(Http2SessionTest, GracefulStopDoesNotRefuseAStreamAlreadyOnItsWay) {
  // RFC 9113 §6.8: GOAWAY(2^31-1), PING, and after its ACK GOAWAY(last
  // stream read). A stream the client sent before it saw the first GOAWAY
  // is served (one GOAWAY naming the last stream read refused it).
  start();
  int32_t first = client->request("GET", "/first");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  server->begin_shutdown();  // the notice and the PING are written, not yet read by the client
  int32_t late = client->request("GET", "/late");
  stream->peer_send(client->drain());
  pump();
  ASSERT_EQ(app.requests.size(), 2u);
  ASSERT_EQ(client->goaway_last_ids.size(), 2u);
  EXPECT_EQ(client->goaway_last_ids[0], (1u << 31) - 1);
  EXPECT_EQ(client->goaway_last_ids[1], late);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_FALSE(client->streams[late].closed);
  app_step([&] { App::answer(*app.requests[0], "one"); });
  EXPECT_FALSE(transport->closed());
  app_step([&] { App::answer(*app.requests[1], "two"); });
  EXPECT_EQ(client->streams[first].body, "one");
  EXPECT_EQ(client->streams[late].body, "two");
  EXPECT_EQ(client->streams[late].error_code, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, GracefulStopSendsTheFinalGoawayWithoutThePingAck) {
  // A client that never answers the stop's PING still gets the final
  // GOAWAY (on the tick, after a second), and the idle connection closes.
  start({}, 65535, true, true, true);
  int32_t id = client->request("GET", "/x");
  pump();
  app_step([&] { App::answer(*app.requests[0], "x"); });
  ASSERT_EQ(client->streams[id].body, "x");
  server->begin_shutdown();
  std::string notice;
  notice.swap(written);  // the client never reads it: no PING ACK
  EXPECT_FALSE(transport->closed());
  h2->on_tick(server->loop().now_ms() + 500);
  EXPECT_FALSE(transport->closed());
  h2->on_tick(server->loop().now_ms() + 1500);
  client->feed(notice + written);
  ASSERT_EQ(client->goaway_last_ids.size(), 2u);
  EXPECT_EQ(client->goaway_last_ids[1], id);
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, AConnectionChosenDuringAStopServesWhatCameThenCloses) {
  start({}, 65535, true, false);  // the preface is queued, not read yet
  int32_t id = client->request("GET", "/early");
  stream->peer_send(client->drain());
  server->begin_shutdown();  // the HTTP/1 session reads what came: HTTP/2
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_last_id, id);
  app_step([&] { App::answer(*app.requests[0], "served"); });
  EXPECT_EQ(client->streams[id].body, "served");
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, ClientResetDetachesTheExchange) {
  start();
  int32_t id = client->request("GET", "/held");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  nghttp2_submit_rst_stream(client->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  pump();
  EXPECT_TRUE(app.requests[0]->detached);
  EXPECT_EQ(app.requests[0]->why, http::Detach::ClientGone);
  EXPECT_EQ(server->active_requests(), 0u);
  EXPECT_FALSE(transport->closed());  // the connection serves on
  int32_t next = client->request("GET", "/next");
  app.handler = [](Request &r) { App::answer(r, "ok"); };
  pump();
  EXPECT_EQ(client->streams[next].body, "ok");
}

TEST_F(Http2SessionTest, AppFailureBeforeTheResponseIs500AndAfterItAReset) {
  start();
  int32_t a = client->request("GET", "/a");
  int32_t b = client->request("GET", "/b");
  pump();
  ASSERT_EQ(app.requests.size(), 2u);
  app_step([&] { app.requests[0]->exchange->fail(); });
  EXPECT_EQ(client->streams[a].status, 500);
  app_step([&] {
    Request &r = *app.requests[1];
    r.exchange->start_response(200, {});
    r.exchange->write_body("part", 4, true);
  });
  app_step([&] { app.requests[1]->exchange->fail(); });
  EXPECT_TRUE(client->streams[b].closed);
  EXPECT_EQ(client->streams[b].error_code, static_cast<uint32_t>(NGHTTP2_INTERNAL_ERROR));
  EXPECT_EQ(client->streams[b].status, 200);
  EXPECT_EQ(client->streams[b].body, "part");
}

TEST_F(Http2SessionTest, ABodyShorterThanItsContentLengthGoesOutThenTheStreamIsReset) {
  // The client sees the status and the bytes given, then RST_STREAM(INTERNAL_ERROR)
  // (a reset submitted at once dropped the queued HEADERS and DATA: a bare reset).
  start();
  int32_t id = client->request("GET", "/short");
  pump();
  http::WriteStatus result = http::WriteStatus::Ok;
  app_step([&] {
    Request &r = *app.requests[0];
    r.exchange->start_response(200, {{"content-length", "10"}});
    result = r.exchange->write_body("abc", 3, false);
  });
  EXPECT_EQ(result, http::WriteStatus::TooShort);
  EXPECT_EQ(client->streams[id].status, 200);
  EXPECT_EQ(client->streams[id].body, "abc");
  EXPECT_TRUE(client->streams[id].closed);
  EXPECT_EQ(client->streams[id].error_code, static_cast<uint32_t>(NGHTTP2_INTERNAL_ERROR));
  // The connection serves on.
  int32_t next = client->request("GET", "/next");
  pump();
  app_step([&] { App::answer(*app.requests[1], "fine"); });
  EXPECT_EQ(client->streams[next].body, "fine");
}

TEST_F(Http2SessionTest, SendFileStreamsTheFileInBoundedPieces) {
  char path[] = "/tmp/pronghorn-h2-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  std::string content;
  for (int i = 0; i < 300000; ++i) content.push_back(static_cast<char>('a' + i % 26));
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  app.handler = [&](Request &r) {
    std::string length = std::to_string(content.size() - 10);
    ASSERT_EQ(r.exchange->start_response(200, {{"content-length", length}}), nullptr);
    EXPECT_EQ(r.exchange->send_file(fd, 10, content.size() - 10), http::WriteStatus::Ok);
  };
  start();
  int32_t id = client->request("GET", "/file");
  for (int i = 0; i < 20; ++i) pump();
  EXPECT_EQ(client->streams[id].body, content.substr(10));
  // Never more than the transport's high-water mark plus a batch was queued.
  EXPECT_EQ(transport->queued_bytes(), 0u);
}

TEST_F(Http2SessionTest, ConcurrencyLimitCountsStreams) {
  base_config.limit_concurrency = 2;
  start();
  client->request("GET", "/1");
  client->request("GET", "/2");
  int32_t third = client->request("GET", "/3");
  pump();
  EXPECT_EQ(app.requests.size(), 2u);  // two streams held by the app
  EXPECT_EQ(client->streams[third].status, 503);
  EXPECT_EQ(server->active_requests(), 2u);
}

TEST_F(Http2SessionTest, AccessLogHasOneLinePerStreamWithHttp2) {
  base_config.access_log = true;
  base_config.access_hook = [](void *ctx, const SocketAddress &, std::string_view method, std::string_view target,
                               std::string_view version, int status) {
    static_cast<std::vector<std::string> *>(ctx)->push_back(std::string(method) + " " + std::string(target) + " HTTP/" +
                                                            std::string(version) + " " + std::to_string(status));
  };
  std::vector<std::string> lines;
  base_config.access_ctx = &lines;
  app.handler = [](Request &r) { App::answer(r, "x"); };
  start();
  client->request("GET", "/a?q=1");
  client->request("POST", "/b", nullptr);
  pump();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "GET /a?q=1 HTTP/2 200");
  EXPECT_EQ(lines[1], "POST /b HTTP/2 200");
}

// ---------------------------------------------------------------- limits and attacks

TEST_F(Http2SessionTest, RapidResetIsGoawayedWithoutFloodingTheApp) {
  start();
  // Each stream opened and reset at once, thousands of times.
  std::string bytes;
  for (uint32_t id = 1; id < 2 * 3000; id += 2) {
    bytes += frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, id, get_block());
    bytes += frame(NGHTTP2_RST_STREAM, 0, id, std::string("\x00\x00\x00\x08", 4));
  }
  send_raw(bytes);
  EXPECT_TRUE(client->goaway);
  EXPECT_LT(app.requests.size(), 10u);
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, ContinuationFloodIsRefused) {
  start();
  std::string bytes = frame(NGHTTP2_HEADERS, 0, 1, get_block());
  for (int i = 0; i < 1000; ++i) bytes += frame(NGHTTP2_CONTINUATION, 0, 1, std::string("\x00\x03x-a\x01v", 7));
  send_raw(bytes);
  // nghttp2 stops at its limit of CONTINUATION frames (8; CVE-2024-28182),
  // the session answers GOAWAY and closes.
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_TRUE(app.requests.empty());
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, HeaderListOverTheLimitGets431) {
  Settings settings;
  settings.max_header_list_size = 4096;
  start(settings);
  int32_t id = client->request("GET", "/", nullptr, {{"x-big", std::string(5000, 'h')}});
  pump();
  EXPECT_EQ(client->streams[id].status, 431);
  ASSERT_EQ(app.requests.size(), 0u);
  EXPECT_FALSE(transport->closed());
}

TEST_F(Http2SessionTest, PingFloodFromAClientThatDoesNotReadCloses) {
  start();
  stream->set_write_capacity(0);  // the client reads nothing
  std::string pings;
  for (int i = 0; i < 100000; ++i) pings += frame(NGHTTP2_PING, 0, 0, std::string(8, 'p'));
  stream->peer_send(pings);
  // The transport stops reading once its queue passes the high-water mark
  // (a real socket would then not be read); read on regardless, as a
  // client pushing into a full buffer would: the acknowledgements pile up
  // in nghttp2 until it calls it a flood, and the connection closes.
  bool bounded = true;
  for (int i = 0; i < 1000 && !transport->closed() && stream->inbound_left() > 0; ++i) {
    event(EPOLLIN);
    bounded = bounded && transport->queued_bytes() <= server->config().write_high_water + 64 * 1024;
  }
  EXPECT_TRUE(bounded);
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, AWindowHeldClosedForeverResetsItsStreamOnly) {
  start({}, 1000, false, true, true);  // the client never opens its windows
  int32_t held = client->request("GET", "/held");
  int32_t other = client->request("GET", "/other");
  pump();
  ASSERT_EQ(app.requests.size(), 2u);
  std::string body(10000, 'z');
  app_step([&] {
    ASSERT_EQ(app.requests[0]->exchange->start_response(200, {}), nullptr);
    app.requests[0]->exchange->write_body(body.data(), body.size(), true);
  });
  EXPECT_EQ(client->streams[held].body.size(), 1000u);
  uint64_t now = server->loop().now_ms();
  h2->on_tick(now + 30000);
  pump();
  EXPECT_FALSE(app.requests[0]->detached);  // not yet
  h2->on_tick(now + 61000);
  pump();
  // The stalled stream is reset and its app told; the connection and the
  // other stream go on.
  EXPECT_TRUE(app.requests[0]->detached);
  EXPECT_EQ(app.requests[0]->why, http::Detach::ClientGone);
  EXPECT_EQ(client->streams[held].error_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_FALSE(transport->closed());
  app_step([&] { App::answer(*app.requests[1], "fine"); });
  EXPECT_EQ(client->streams[other].body, "fine");
}

TEST_F(Http2SessionTest, NoPrefaceWithinTheHeaderTimeoutCloses) {
  start({}, 65535, true, false, true);  // nothing read yet
  uint64_t now = server->loop().now_ms();
  h2->on_tick(now + 1000);
  EXPECT_FALSE(transport->closed());
  h2->on_tick(now + base_config.header_timeout_ms + 1);
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, SettingsFloodFromAClientThatDoesNotReadCloses) {
  start();
  stream->set_write_capacity(0);
  std::string settings;
  for (int i = 0; i < 100000; ++i) settings += frame(NGHTTP2_SETTINGS, 0, 0, "");
  stream->peer_send(settings);
  for (int i = 0; i < 1000 && !transport->closed() && stream->inbound_left() > 0; ++i) event(EPOLLIN);
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, EmptyDataFramesCostOnlyTheirParsing) {
  start();
  // CVE-2019-9518: empty DATA frames without END_STREAM. nghttp2 keeps no
  // state for them and the body that follows is served as if they were not there.
  int32_t id = client->request("POST", "/");
  client->drain();
  std::string flood;
  for (int i = 0; i < 100000; ++i) flood += frame(NGHTTP2_DATA, 0, id, "");
  send_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, id, std::string("\x83\x84\x86\x41\x01x", 6)) + flood +
           frame(NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, id, "body"));
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  EXPECT_EQ(app.requests[0]->body, "body");
  EXPECT_TRUE(app.requests[0]->body_done);
  EXPECT_FALSE(client->goaway);
  app_step([&] { App::answer(*app.requests[0], "ok"); });
  EXPECT_EQ(client->streams[id].body, "ok");
}

TEST_F(Http2SessionTest, TooManySettingsInOneFrameIsRefused) {
  start();
  std::string entries;
  for (int i = 0; i < 100; ++i) entries += std::string("\x00\x03\x00\x00\x00\x10", 6);  // MAX_CONCURRENT_STREAMS
  send_raw(frame(NGHTTP2_SETTINGS, 0, 0, entries));
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
}

TEST_F(Http2SessionTest, HpackBombGets431WithoutKeepingTheHeaders) {
  start();
  // The client session opens the stream (its own HEADERS are dropped), so
  // that it reads the answer; the server gets a hand-made block instead:
  // one 4000-byte field into the dynamic table, then referenced 200 times
  // with one byte each, 800 KB of header list from 4.2 KB.
  int32_t id = client->request("GET", "/");
  client->drain();
  std::string block = get_block();
  block += std::string("\x40\x03x-b", 5);   // literal with incremental indexing, new name
  block += std::string("\x7f\xa1\x1e", 3);  // value length 4000 (HPACK integer: 127 + 3873)
  block += std::string(4000, 'b');
  for (int i = 0; i < 200; ++i) block += std::string("\xbe", 1);  // indexed: dynamic entry 62
  send_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, id, block));
  pump();
  EXPECT_EQ(client->streams[id].status, 431);
  EXPECT_TRUE(app.requests.empty());
  EXPECT_FALSE(transport->closed());
}

TEST_F(Http2SessionTest, EvenStreamIdIsAProtocolError) {
  start();
  send_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 2, get_block()));
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_TRUE(app.requests.empty());
}

TEST_F(Http2SessionTest, LowerStreamIdThanAnOpenedOneIsAProtocolError) {
  start();
  // RFC 9113 §5.1.1: stream 3 was skipped when 5 opened; HEADERS on it is a
  // new stream with a lower ID (nghttp2 alone ignored it, as a closed stream's).
  std::string out =
      take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 5, get_block()));
  ASSERT_EQ(app.requests.size(), 1u);
  out += take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3, get_block()));
  EXPECT_EQ(goaway_in(out), NGHTTP2_PROTOCOL_ERROR);
  EXPECT_EQ(app.requests.size(), 1u);  // stream 3 never served
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, LowerStreamIdInTheSameReadIsNotServed) {
  start();
  std::string out =
      take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 5, get_block()) +
               frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3, get_block()));
  EXPECT_EQ(goaway_in(out), NGHTTP2_PROTOCOL_ERROR);
  EXPECT_TRUE(app.requests.empty());  // condemned in the read that opened 5: nothing dispatched
}

TEST_F(Http2SessionTest, LateHeadersOnAClosedStreamAreIgnored) {
  // The app answers before the body is in: the stream ends (RST_STREAM
  // NO_ERROR) while the client's trailers are on their way. They are a
  // closed stream's frame, not a lower ID, and are discarded.
  app.handler = [](Request &r) { App::answer(r, "early"); };
  start();
  std::string out =
      take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, std::string("\x83\x84\x86\x41\x01x", 6)));
  ASSERT_EQ(app.requests.size(), 1u);
  bool reset = false;
  for (const RawFrame &f : frames_in(out)) reset = reset || (f.type == NGHTTP2_RST_STREAM && f.stream_id == 1);
  ASSERT_TRUE(reset);
  out = take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1,
                       std::string("\x00\x03x-t\x01v", 7)) +
                 frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3, get_block()));
  EXPECT_EQ(goaway_in(out), -1);
  EXPECT_FALSE(transport->closed());
  EXPECT_EQ(app.requests.size(), 2u);  // stream 3 served
}

TEST_F(Http2SessionTest, OnlyTheNewestSkippedStreamIdsAreRemembered) {
  start();
  // Streams 1, 5, 9, ...: each skips one ID; 40 gaps, of which the newest 32 are kept.
  std::string out;
  for (int32_t id = 1; id <= 1 + 4 * 40; id += 4)
    out += take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, id, get_block()));
  ASSERT_EQ(goaway_in(out), -1);
  // The oldest gap (3) is forgotten: HEADERS on it is only ignored, as on a closed stream.
  out = take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3, get_block()));
  EXPECT_EQ(goaway_in(out), -1);
  EXPECT_FALSE(transport->closed());
  // The newest (159) is known for what it is.
  out = take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 159, get_block()));
  EXPECT_EQ(goaway_in(out), NGHTTP2_PROTOCOL_ERROR);
  EXPECT_EQ(app.requests.size(), 41u);
}

TEST_F(Http2SessionTest, ContinuationOverMaxFrameSizeIsAFrameSizeError) {
  start();
  // A field block fragment of valid fields: 2340 x "x-a: v" (7 octets) and "a:" (4 octets).
  std::string fields;
  for (int i = 0; i < 2340; ++i) fields += std::string("\x00\x03x-a\x01v", 7);
  fields += std::string(
      "\x00\x01"
      "a"
      "\x00",
      4);
  ASSERT_EQ(fields.size(), 16384u);
  // At SETTINGS_MAX_FRAME_SIZE: a head like any other (too large a list: 431).
  int32_t id = client->request("GET", "/");
  client->drain();
  send_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, id, get_block()) +
           frame(NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, id, fields));
  pump();
  EXPECT_EQ(client->streams[id].status, 431);
  EXPECT_FALSE(client->goaway) << client->goaway_error;
  // One octet more: RFC 9113 §4.2, a connection error FRAME_SIZE_ERROR (nghttp2
  // checks the length of every frame but CONTINUATION).
  std::string out = take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 3, get_block()) +
                             frame(NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 3, fields + "x"));
  EXPECT_EQ(goaway_in(out), NGHTTP2_FRAME_SIZE_ERROR);
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, InitialWindowChangeOverflowingAnOpenStreamIsAConnectionError) {
  start();
  int32_t id = client->request("GET", "/held");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  // The stream's send window up to 2^31-1 - 1 (WINDOW_UPDATE), then a change
  // of SETTINGS_INITIAL_WINDOW_SIZE by +1 (allowed), then by +1 more.
  std::string out =
      take_raw(frame(NGHTTP2_WINDOW_UPDATE, 0, id, u32_payload(0x7fffffffu - 65535 - 1)) +
               frame(NGHTTP2_SETTINGS, 0, 0, settings_payload({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65536}})));
  EXPECT_EQ(goaway_in(out), -1);
  EXPECT_FALSE(transport->closed());
  // RFC 9113 §6.9.2: a connection error FLOW_CONTROL_ERROR (nghttp2 alone reset the stream).
  out = take_raw(frame(NGHTTP2_SETTINGS, 0, 0, settings_payload({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65537}})));
  EXPECT_EQ(goaway_in(out), NGHTTP2_FLOW_CONTROL_ERROR);
  EXPECT_TRUE(transport->closed());
  EXPECT_TRUE(app.requests[0]->detached);
}

TEST_F(Http2SessionTest, InitialWindowChangesWithoutOverflowAreApplied) {
  start();
  int32_t id = client->request("GET", "/held");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  // 0, 2^31-1, 100 in one frame: nghttp2 keeps the last of repeated values
  // (the stream's window: 100), as RFC 9113 §6.5.3's order has it.
  std::string out = take_raw(frame(NGHTTP2_SETTINGS, 0, 0,
                                   settings_payload({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0},
                                                     {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffffu},
                                                     {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 100}})));
  EXPECT_EQ(goaway_in(out), -1);
  EXPECT_FALSE(transport->closed());
  // The stream's window is now 100: a 1000-octet body goes out 100 octets at a time.
  // (Not given to the client session: it knows nothing of these settings.)
  std::string body(1000, 'w');
  server->begin_step();
  ASSERT_EQ(app.requests[0]->exchange->start_response(200, {}), nullptr);
  app.requests[0]->exchange->write_body(body.data(), body.size(), false);
  server->end_step();
  std::vector<size_t> data;
  for (const RawFrame &f : frames_in(written))
    if (f.type == NGHTTP2_DATA && f.stream_id == static_cast<uint32_t>(id)) data.push_back(f.length);
  EXPECT_EQ(data, std::vector<size_t>{100});
}

TEST_F(Http2SessionTest, BadPrefaceGetsAGoawayAfterTheServerSettings) {
  // Over TLS with ALPN h2, the HTTP/1 session hands over what it read: the
  // session starts with a bad preface in its input, and its own SETTINGS
  // still queued. The GOAWAY (PROTOCOL_ERROR) follows it (it was dropped).
  handed_over = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  start({}, 65535, true, false, true);
  std::vector<RawFrame> frames = frames_in(written);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].type, NGHTTP2_SETTINGS);
  EXPECT_EQ(frames[1].type, NGHTTP2_GOAWAY);
  EXPECT_EQ(frames[1].error_code, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2SessionTest, OversizedFrameIsAFrameSizeError) {
  start();
  send_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, get_block()) +
           frame(NGHTTP2_DATA, 0, 1, std::string(20000, 'd')));
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_FRAME_SIZE_ERROR));
}

TEST_F(Http2SessionTest, IdleConnectionClosesAfterKeepAliveTimeoutWithGoaway) {
  base_config.keep_alive_timeout_ms = 0;  // the deadline is due at the next tick
  start();
  int32_t id = client->request("GET", "/held");
  pump();
  server->tick();
  pump();
  EXPECT_FALSE(transport->closed());  // a stream is open: not idle
  app_step([&] { App::answer(*app.requests[0], "ok"); });
  EXPECT_EQ(client->streams[id].body, "ok");
  server->tick();  // idle now: its deadline starts
  server->tick();
  pump();
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_TRUE(transport->closed());
}

// ---------------------------------------------------------------- protocol choice

TEST(Http2ChoiceTest, Http1StillServedWhenHttp2IsEnabled) {
  EngineConfig config;
  config.date_header = false;
  config.server_header = false;
  config.access_log = false;
  config.send_thread = false;
  config.http2.enabled = true;
  Engine server(config);
  ASSERT_TRUE(server.open());
  App app;
  app.handler = [](Request &r) { App::answer(r, r.version); };
  server.set_dispatcher(&app);
  SocketAddress local{false, "127.0.0.1", 8000};
  auto owned = std::make_unique<MemoryStream>();
  MemoryStream *stream = owned.get();
  auto t = std::make_unique<Transport>(server, std::move(owned), SocketAddress{false, "10.0.0.1", 1}, &local);
  Transport *transport = t.get();
  ASSERT_NE(server.start_session(std::move(t)), nullptr);
  // "P" could still be the preface: nothing happens until it cannot.
  stream->peer_send("P");
  server.begin_step();
  transport->on_io(EPOLLIN);
  server.end_step();
  EXPECT_TRUE(app.requests.empty());
  stream->peer_send("OST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  server.begin_step();
  transport->on_io(EPOLLIN);
  server.end_step();
  ASSERT_EQ(app.requests.size(), 1u);
  EXPECT_EQ(app.requests[0]->version, "1.1");
  EXPECT_EQ(stream->written(), "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n1.1");
}

}  // namespace
}  // namespace pronghorn::http2

namespace pronghorn::http2 {
namespace {

TEST_F(Http2SessionTest, IncompleteHeaderBlockClosesAfterTheHeaderTimeout) {
  start({}, 65535, true, true, true);  // direct: drive on_tick
  // HEADERS without END_HEADERS; the CONTINUATION never comes (slowloris).
  send_raw(frame(NGHTTP2_HEADERS, 0, 1, get_block()));
  uint64_t now = server->loop().now_ms();
  h2->on_tick(now + base_config.header_timeout_ms - 1);
  EXPECT_FALSE(transport->closed()) << "closed before the header timeout";
  h2->on_tick(now + base_config.header_timeout_ms);
  pump();
  EXPECT_TRUE(transport->closed()) << "an unfinished header block held the connection";
  EXPECT_TRUE(client->goaway);
  EXPECT_EQ(client->goaway_error, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_TRUE(app.requests.empty());
}

TEST_F(Http2SessionTest, HeadersFrameCutShortClosesAfterTheHeaderTimeout) {
  start({}, 65535, true, true, true);
  std::string f = frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1,
                        get_block() + std::string(200, '\0'));
  send_raw(f.substr(0, 12));  // the frame header and 3 bytes of its block
  uint64_t now = server->loop().now_ms();
  // The keep-alive deadline does not stand in for the header timeout.
  h2->on_tick(now + base_config.keep_alive_timeout_ms);
  h2->on_tick(now + base_config.header_timeout_ms - 1);
  EXPECT_FALSE(transport->closed());
  h2->on_tick(now + base_config.header_timeout_ms);
  pump();
  EXPECT_TRUE(transport->closed()) << "a HEADERS frame cut short held the connection";
  EXPECT_TRUE(client->goaway);
}

TEST_F(Http2SessionTest, ServerResetsOfServedStreamsAreRateLimited) {
  start();
  // POST with content-length: 0, then one DATA byte in the next read: nghttp2
  // resets the stream (PROTOCOL_ERROR) after it was dispatched (MadeYouReset,
  // CVE-2025-8671); the app's task would go on, uncounted.
  std::string block = std::string("\x83\x84\x86", 3) + std::string("\x41\x01x", 3) +
                      std::string(
                          "\x0f\x0d\x01"
                          "0",
                          4);
  // The raw frames bypass the client session (it would refuse resets of
  // streams it never opened): the server's frames are read here.
  std::string out;
  auto send = [&](const std::string &bytes) {
    stream->peer_send(bytes);
    for (int i = 0; i < 100 && !transport->closed() && stream->inbound_left() > 0; ++i) event(EPOLLIN);
    out += written;
    written.clear();
  };
  for (uint32_t id = 1; id < 2 * 3000 && !transport->closed(); id += 2) {
    send(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, id, block));
    send(frame(NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, id, "x"));
  }
  uint32_t goaway_error = ~0u;
  for (size_t at = 0; at + 9 <= out.size();) {
    auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(out[at + i])); };
    size_t length = (byte(0) << 16) | (byte(1) << 8) | byte(2);
    if (byte(3) == NGHTTP2_GOAWAY && at + 9 + 8 <= out.size())
      goaway_error = (byte(13) << 24) | (byte(14) << 16) | (byte(15) << 8) | byte(16);
    at += 9 + length;
  }
  EXPECT_EQ(goaway_error, static_cast<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_TRUE(transport->closed());
  // The budget: 2 per allowed concurrent stream (100) in a burst (the test
  // takes far less than the second that would refill 33 more).
  EXPECT_LE(app.requests.size(), 240u);
  EXPECT_GE(app.requests.size(), 200u);  // within the budget, resets are tolerated
}

TEST_F(Http2SessionTest, AQuietStreamThatWritesLateIsNotTakenForStalled) {
  start({}, 1000, false, true, true);  // the client opens no window by itself
  int32_t id = client->request("GET", "/events");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  std::string first(1000, 'e');  // the whole window: framed at once, nothing waits
  app_step([&] {
    ASSERT_EQ(app.requests[0]->exchange->start_response(200, {}), nullptr);
    app.requests[0]->exchange->write_body(first.data(), first.size(), true);
  });
  ASSERT_EQ(client->streams[id].body.size(), 1000u);
  uint64_t t0 = server->loop().now_ms();
  // Quiet for 61 s (an SSE stream with nothing to say), then an event that
  // cannot be framed at once (the window is 0 for a moment).
  server->loop().set_now_ms_for_testing(t0 + 61000);
  h2->on_tick(t0 + 61000);
  app_step([&] { app.requests[0]->exchange->write_body("data: x\n\n", 9, true); });
  h2->on_tick(t0 + 62000);
  pump();
  EXPECT_FALSE(app.requests[0]->detached) << "reset for a wait of 1 s";
  EXPECT_FALSE(client->streams[id].reset_by_server);
  // Really stalled: 60 s with the output waiting.
  h2->on_tick(t0 + 61000 + 60000);
  pump();
  EXPECT_TRUE(app.requests[0]->detached);
  EXPECT_EQ(client->streams[id].error_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
}

TEST_F(Http2SessionTest, AnIdleConnectionDoesNotKeepALargeBatchBuffer) {
  start({}, 65535, true, true, true);
  int32_t id = client->request("GET", "/big");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  std::string body(300000, 'b');
  app_step([&] { App::answer(*app.requests[0], body); });
  for (int i = 0; i < 20; ++i) pump();
  EXPECT_EQ(client->streams[id].body.size(), body.size());
  EXPECT_EQ(h2->open_streams(), 0u);
  // (~64 KiB per idle connection before: the batch of the last large write.)
  EXPECT_LE(h2->batch_capacity_for_testing(), 16u * 1024);
}

TEST_F(Http2SessionTest, BodiesOfManyStreamsArriveWholeWhateverTheirFramePieces) {
  // Payloads of 1 KiB or more are written from the streams' buffers (no
  // copy), smaller ones copied; one buffer can hold both (a full frame, then
  // a short last one), and a large write is split where the gather is full.
  start({}, 1u << 24, true, true, true);
  std::vector<std::string> bodies = {std::string(16384 + 500, 'a'), std::string(1 << 20, 'b'), std::string(100, 'c'),
                                     std::string(3000, 'd')};
  for (size_t i = 0; i < bodies[1].size(); ++i) bodies[1][i] = static_cast<char>('a' + i % 26);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < bodies.size(); ++i) ids.push_back(client->request("GET", "/" + std::to_string(i)));
  pump();
  ASSERT_EQ(app.requests.size(), bodies.size());
  app_step([&] {
    for (size_t i = 0; i < bodies.size(); ++i) App::answer(*app.requests[i], bodies[i]);
  });
  for (int i = 0; i < 50; ++i) pump();
  for (size_t i = 0; i < bodies.size(); ++i) {
    const ClientStream &s = client->streams[ids[i]];
    EXPECT_EQ(s.status, 200);
    EXPECT_EQ(s.body.size(), bodies[i].size()) << i;
    EXPECT_TRUE(s.body == bodies[i]) << i;
    EXPECT_TRUE(s.closed) << i;
  }
  EXPECT_EQ(h2->open_streams(), 0u);
}

TEST_F(Http2SessionTest, HostDifferingFromAuthorityIs400) {
  app.handler = [](Request &r) { App::answer(r, "ok"); };
  start();
  // (The client sends :authority example.com.)
  int32_t differ = client->request("GET", "/", nullptr, {{"host", "other.host"}});
  int32_t same = client->request("GET", "/", nullptr, {{"host", "Example.COM"}});
  pump();
  EXPECT_EQ(client->streams[differ].status, 400);
  EXPECT_EQ(client->streams[same].status, 200);  // the same host, in another case
  ASSERT_EQ(app.requests.size(), 1u);
  EXPECT_EQ(app.requests[0]->header("host"), "Example.COM");
  int hosts = 0;
  for (const auto &[name, value] : app.requests[0]->headers) hosts += name == "host";
  EXPECT_EQ(hosts, 1);
  EXPECT_FALSE(transport->closed());
}

TEST_F(Http2SessionTest, StopGoawayGoesOutBeforeItsPing) {
  start();
  int32_t id = client->request("GET", "/first");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  (void)id;
  written.clear();
  server->begin_shutdown();
  std::vector<RawFrame> frames = frames_in(written);
  int goaway_at = -1, ping_at = -1;
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].type == NGHTTP2_GOAWAY && goaway_at < 0) goaway_at = static_cast<int>(i);
    if (frames[i].type == NGHTTP2_PING && ping_at < 0) ping_at = static_cast<int>(i);
  }
  ASSERT_GE(goaway_at, 0);
  ASSERT_GE(ping_at, 0);
  // RFC 9113 §6.8: the PING must follow the GOAWAY so that its ACK proves the GOAWAY was seen.
  EXPECT_LT(goaway_at, ping_at) << "PING (ob_urgent) is written before the shutdown notice GOAWAY (ob_reg)";
}

TEST_F(Http2SessionTest, StreamAfterThePingAckInTheSameReadIsRefusedNotServed) {
  start();
  int32_t first = client->request("GET", "/first");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  ASSERT_EQ(first, 1);
  server->begin_shutdown();
  written.clear();  // GOAWAY(2^31-1) + PING, not given to the client
  // The client ACKs the PING and a request follows in the same segment (a client that answers a
  // PING before it has acted on the GOAWAY read with it).
  std::string ack = frame(NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0, "ph-stop1");
  std::string headers = frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM | NGHTTP2_FLAG_END_HEADERS, 3, get_block());
  std::string out = take_raw(ack + headers);
  std::vector<uint32_t> ids;
  for (const RawFrame &f : frames_in(out))
    if (f.type == NGHTTP2_GOAWAY) ids.push_back(f.last_stream_id);
  ASSERT_FALSE(ids.empty());
  // The final GOAWAY says stream 3 was not processed (the client may retry it) ...
  EXPECT_LT(ids.back(), 3u);
  // ... yet the application was given it.
  EXPECT_EQ(app.requests.size(), 1u) << "stream 3 was dispatched to the app, then refused by GOAWAY(last=" << ids.back()
                                     << ")";
}

TEST_F(Http2SessionTest, CutResponseWithAClosedWindowIsResetAfterTheStall) {
  start({}, 3, false, true, true);  // the client's stream window: 3 bytes, never reopened
  int32_t id = client->request("GET", "/cut");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  http::WriteStatus result = http::WriteStatus::Ok;
  app_step([&] {
    Request &r = *app.requests[0];
    r.exchange->start_response(200, {{"content-length", "10"}});
    result = r.exchange->write_body("abc", 3, false);
  });
  EXPECT_EQ(result, http::WriteStatus::TooShort);
  EXPECT_EQ(client->streams[id].body, "abc");
  uint64_t now = server->loop().now_ms();
  h2->on_tick(now + 61000);
  pump();
  h2->on_tick(now + 125000);
  pump();
  // The write-stall rule resets a stream whose window stays closed, with only its reset waiting too.
  EXPECT_TRUE(client->streams[id].closed) << "cut stream stays open: no RST_STREAM, no stall reset";
  EXPECT_EQ(h2->open_streams(), 0u);
}

TEST_F(Http2SessionTest, SettingsSplitAcrossReadsIsJudgedOnCurrentWindows) {
  start({}, 65535, false);
  int32_t id = client->request("GET", "/big");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  app_step([&] { ASSERT_EQ(app.requests[0]->exchange->start_response(200, {}), nullptr); });
  // The client opens stream 1's window to the maximum (legal: 65535 + increment = 2^31-1).
  std::string out =
      take_raw(frame(NGHTTP2_WINDOW_UPDATE, 0, static_cast<uint32_t>(id), u32_payload((1u << 31) - 1 - 65535)));
  ASSERT_EQ(goaway_in(out), -1);
  // A SETTINGS frame whose header comes in one read ...
  std::string settings =
      frame(NGHTTP2_SETTINGS, 0, 0, settings_payload({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535 + 16384}}));
  out = take_raw(settings.substr(0, 9));
  ASSERT_EQ(goaway_in(out), -1);
  // ... the server sends 16 KiB on the stream meanwhile (its window: 2^31-1 - 16384) ...
  std::string body(16384, 'x');
  server->begin_step();
  app.requests[0]->exchange->write_body(body.data(), body.size(), true);
  server->end_step();
  written.clear();
  // ... and the rest of the frame: +16384 takes the window back to exactly 2^31-1, which is legal.
  out = take_raw(settings.substr(9));
  EXPECT_EQ(goaway_in(out), -1)
      << "FLOW_CONTROL_ERROR judged on the window as it was when the SETTINGS header was read";
}

TEST_F(Http2SessionTest, SettingsWholeAfterTheSameDataIsAccepted) {
  start({}, 65535, false);
  int32_t id = client->request("GET", "/big");
  pump();
  app_step([&] { ASSERT_EQ(app.requests[0]->exchange->start_response(200, {}), nullptr); });
  std::string out =
      take_raw(frame(NGHTTP2_WINDOW_UPDATE, 0, static_cast<uint32_t>(id), u32_payload((1u << 31) - 1 - 65535)));
  std::string body(16384, 'x');
  server->begin_step();
  app.requests[0]->exchange->write_body(body.data(), body.size(), true);
  server->end_step();
  ASSERT_GE(written.size(), 16384u);
  written.clear();
  std::string settings =
      frame(NGHTTP2_SETTINGS, 0, 0, settings_payload({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535 + 16384}}));
  out = take_raw(settings);
  EXPECT_EQ(goaway_in(out), -1);
}

TEST_F(Http2SessionTest, NoCopyUnderPartialWritesResetsAndAborts) {
  start({}, 1u << 24, true, true, true);
  const int kStreams = 12;
  std::vector<std::string> bodies;
  std::vector<int32_t> ids;
  for (int i = 0; i < kStreams; ++i) {
    std::string b(1000 + i * 7919 + (i % 3) * 65536, 'a');
    for (size_t k = 0; k < b.size(); ++k) b[k] = static_cast<char>('a' + (k * 7 + i) % 26);
    bodies.push_back(b);
    ids.push_back(client->request("GET", "/" + std::to_string(i)));
  }
  pump();
  ASSERT_EQ(app.requests.size(), static_cast<size_t>(kStreams));
  stream->set_write_capacity(1500);  // the socket takes 1500 bytes per writev
  server->begin_step();
  for (int i = 0; i < kStreams; ++i) {
    Request &r = *app.requests[i];
    std::string length = std::to_string(bodies[i].size() + (i % 4 == 1 ? 5 : 0));
    ASSERT_EQ(r.exchange->start_response(200, {{"content-length", length}}), nullptr);
    r.exchange->write_body(bodies[i].data(), bodies[i].size(), i % 4 != 1 && i % 4 != 2);  // some cut, some open
  }
  server->end_step();
  for (int round = 0; round < 400 && !transport->closed(); ++round) {
    if (round == 3) {
      server->begin_step();
      for (int i = 0; i < kStreams; ++i)
        if (i % 4 == 2 && app.requests[i]->exchange != nullptr) app.requests[i]->exchange->abort();
      server->end_step();
    }
    if (round == 5) nghttp2_submit_rst_stream(client->ng, NGHTTP2_FLAG_NONE, ids[0], NGHTTP2_CANCEL);
    transport->on_io(EPOLLOUT);
    pump();
    if (round == 200) stream->set_write_capacity(std::numeric_limits<size_t>::max());
  }
  for (int i = 1; i < kStreams; ++i) {
    const ClientStream &c = client->streams[ids[i]];
    if (i % 4 == 0 || i % 4 == 3) {
      EXPECT_TRUE(c.body == bodies[i]) << i;
    } else {
      EXPECT_TRUE(c.body.size() <= bodies[i].size() && bodies[i].compare(0, c.body.size(), c.body) == 0) << i;
    }
  }
}

TEST_F(Http2SessionTest, StopThenProtocolErrorThenTickCloses) {
  start({}, 65535, true, true, true);
  int32_t id = client->request("GET", "/x");
  pump();
  ASSERT_EQ(app.requests.size(), 1u);
  server->begin_shutdown();
  server->begin_shutdown();
  written.clear();
  std::string out =
      take_raw(frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM | NGHTTP2_FLAG_END_HEADERS, 2, get_block()));
  EXPECT_EQ(goaway_in(out), NGHTTP2_PROTOCOL_ERROR);
  if (!transport->closed()) {
    h2->on_tick(server->loop().now_ms() + 1500);
    h2->on_tick(server->loop().now_ms() + 3000);
  }
  app_step([&] {
    if (app.requests[0]->exchange) App::answer(*app.requests[0], "x");
  });
  EXPECT_TRUE(transport->closed());
  (void)id;
}

TEST_F(Http2SessionTest, EndOfStreamWithAClosedWindowIsResetAfterTheStall) {
  start({}, 3, false, true, true);
  int32_t id = client->request("GET", "/eof");
  pump();
  app_step([&] {
    Request &r = *app.requests[0];
    r.exchange->start_response(200, {});
    r.exchange->write_body("abc", 3, true);
  });
  app_step([&] { app.requests[0]->exchange->write_body(nullptr, 0, false); });
  uint64_t now = server->loop().now_ms();
  h2->on_tick(now + 61000);
  pump();
  EXPECT_TRUE(client->streams[id].closed)
      << "END_STREAM (empty DATA) waits for a window that never opens; no stall reset";
}

}  // namespace
}  // namespace pronghorn::http2
