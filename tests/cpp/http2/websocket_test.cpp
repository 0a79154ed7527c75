// WebSockets over HTTP/2 (RFC 8441 extended CONNECT): the HTTP/2 session
// over an in-memory transport with an nghttp2 client session as the peer,
// the WebSocket frames written and read by hand in the stream's DATA. The
// test moves the bytes both ways itself (pump()).
#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>
#include <sys/epoll.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/http2/session.h"
#include "engine/net/memory_stream.h"
#include "engine/net/transport.h"
#include "engine/ws/handshake.h"
#include "engine/ws/session.h"

namespace pronghorn::http2 {
namespace {

// ---------------------------------------------------------------- WebSocket frames

std::string client_frame(int opcode, std::string_view payload, bool fin = true) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
  size_t len = payload.size();
  if (len < 126) {
    out.push_back(static_cast<char>(0x80 | len));
  } else if (len < 65536) {
    out.push_back(static_cast<char>(0x80 | 126));
    out.push_back(static_cast<char>(len >> 8));
    out.push_back(static_cast<char>(len & 0xff));
  } else {
    out.push_back(static_cast<char>(0x80 | 127));
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((static_cast<uint64_t>(len) >> (8 * i)) & 0xff));
  }
  const char mask[4] = {0x11, 0x22, 0x33, 0x44};
  out.append(mask, 4);
  for (size_t i = 0; i < len; ++i) out.push_back(static_cast<char>(payload[i] ^ mask[i & 3]));
  return out;
}

std::string close_payload(uint16_t code) {
  return std::string{static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
}

struct ServerFrame {
  int opcode;
  std::string payload;
};

// Takes the complete server frames out of `bytes`.
std::vector<ServerFrame> take_frames(std::string &bytes) {
  std::vector<ServerFrame> frames;
  size_t off = 0;
  while (bytes.size() - off >= 2) {
    auto *p = reinterpret_cast<const unsigned char *>(bytes.data() + off);
    uint64_t len = p[1] & 0x7f;
    size_t header = 2;
    if (len == 126) {
      if (bytes.size() - off < 4) break;
      len = (uint64_t{p[2]} << 8) | p[3];
      header = 4;
    } else if (len == 127) {
      if (bytes.size() - off < 10) break;
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
      header = 10;
    }
    if (bytes.size() - off < header + len) break;
    frames.push_back({p[0] & 0x0f, bytes.substr(off + header, len)});
    off += header + len;
  }
  bytes.erase(0, off);
  return frames;
}

// ---------------------------------------------------------------- the client

struct ClientStream {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;         // DATA received
  bool end_stream = false;  // the server ended its side
  bool closed = false;
  uint32_t error_code = 0;
  bool reset_by_server = false;
  std::string outgoing;  // DATA to send
  size_t sent = 0;
  bool end_after = false;  // END_STREAM once `outgoing` is sent
  bool deferred = false;
  std::string header(const std::string &name) const {
    for (const auto &[n, v] : headers)
      if (n == name) return v;
    return "";
  }
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
    nghttp2_session_client_new2(&ng, cbs, this, option);
    nghttp2_option_del(option);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry entries[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window}};
    nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, entries, 1);
  }
  ~Client() { nghttp2_session_del(ng); }

  // A request whose DATA the test writes as it goes (send_data).
  int32_t open(std::vector<std::pair<std::string, std::string>> fields) {
    std::vector<nghttp2_nv> nva;
    for (auto &[n, v] : fields)
      nva.push_back({reinterpret_cast<uint8_t *>(n.data()), reinterpret_cast<uint8_t *>(v.data()), n.size(), v.size(),
                     NGHTTP2_NV_FLAG_NONE});
    nghttp2_data_provider provider{};
    provider.read_callback = read_data;
    int32_t id = nghttp2_submit_request(ng, nullptr, nva.data(), nva.size(), &provider, nullptr);
    if (id > 0) streams[id];
    return id;
  }
  int32_t websocket(const std::string &path = "/chat",
                    std::vector<std::pair<std::string, std::string>> extra = {{"sec-websocket-version", "13"}}) {
    std::vector<std::pair<std::string, std::string>> fields = {{":method", "CONNECT"},
                                                               {":protocol", "websocket"},
                                                               {":scheme", "http"},
                                                               {":path", path},
                                                               {":authority", "example.com"}};
    fields.insert(fields.end(), extra.begin(), extra.end());
    return open(fields);
  }
  void send_data(int32_t id, const std::string &bytes, bool end = false) {
    ClientStream &s = streams[id];
    s.outgoing.append(bytes);
    s.end_after = s.end_after || end;
    if (s.deferred) {
      s.deferred = false;
      nghttp2_session_resume_data(ng, id);
    }
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
  bool goaway = false;
  int recv_error = 0;

 private:
  static ssize_t read_data(nghttp2_session *, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                           nghttp2_data_source *, void *user) {
    auto &self = *static_cast<Client *>(user);
    ClientStream &s = self.streams[id];
    size_t n = std::min(length, s.outgoing.size() - s.sent);
    memcpy(buf, s.outgoing.data() + s.sent, n);
    s.sent += n;
    if (s.sent == s.outgoing.size()) {
      if (s.end_after) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
      } else if (n == 0) {
        s.deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  }
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
    if (frame->hd.type == NGHTTP2_GOAWAY) self.goaway = true;
    if (frame->hd.type == NGHTTP2_RST_STREAM) self.streams[frame->hd.stream_id].reset_by_server = true;
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
      self.streams[frame->hd.stream_id].end_stream = true;
    return 0;
  }
};

// ---------------------------------------------------------------- the app

// One WebSocket (or plain request) as the application sees it.
struct Socket final : http::ExchangeObserver, ws::MessageObserver {
  http::Exchange *exchange = nullptr;
  ws::Session *session = nullptr;
  std::string target, version;
  std::vector<std::string> subprotocols, extensions;
  bool websocket = false;
  bool echo = true;
  std::vector<std::string> taken;
  int writable = 0;
  int detached_code = -1;
  bool exchange_detached = false;

  void on_body_ready() override {}
  void on_writable() override { ++writable; }
  void on_detach(http::Detach) override {
    exchange_detached = true;
    exchange = nullptr;
  }
  void on_message() override {
    if (echo) drain();
  }
  void on_detach(uint16_t code, std::string_view) override {
    detached_code = code;
    session = nullptr;
  }
  void drain() {
    ws::Message m;
    while (session != nullptr && session->take_message(m)) {
      taken.push_back(m.data);
      session->send(m.text, m.data.data(), m.data.size());
    }
  }
};

class App final : public http::RequestDispatcher {
 public:
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    sockets.push_back(std::make_unique<Socket>());
    Socket &s = *sockets.back();
    s.exchange = &exchange;
    s.target.assign(head.target);
    s.version.assign(head.http_version);
    s.websocket = head.websocket != nullptr;
    if (head.websocket != nullptr) {
      for (auto sub : head.websocket->subprotocols) s.subprotocols.emplace_back(sub);
      for (auto ext : head.websocket->extensions) s.extensions.emplace_back(ext);
    }
    exchange.attach(&s);
    if (!s.websocket) {
      std::string body = "plain";
      std::string length = std::to_string(body.size());
      exchange.start_response(200, {{"content-length", length}});
      exchange.write_body(body.data(), body.size(), false);
      return;
    }
    if (!accept_now) return;
    accept(s);
  }
  void accept(Socket &s, std::string_view subprotocol = "", http::HeaderList headers = {}) {
    const char *error = nullptr;
    s.session = s.exchange->accept_websocket(subprotocol, headers, &error);
    ASSERT_EQ(error, nullptr);
    ASSERT_NE(s.session, nullptr);
    s.exchange = nullptr;
    s.session->attach(&s);
    if (s.echo) s.drain();
  }
  bool accept_now = true;
  std::vector<std::unique_ptr<Socket>> sockets;
};

// ---------------------------------------------------------------- fixture

class Http2WebSocketTest : public ::testing::Test {
 protected:
  void start(ws::Settings ws = {}, uint32_t client_window = 65535, bool client_auto_window = true) {
    EngineConfig config;
    config.access_log = false;
    config.date_header = false;
    config.server_header = false;
    config.send_thread = false;
    config.http2.enabled = true;
    config.ws = ws;
    server = std::make_unique<Engine>(config);
    ASSERT_TRUE(server->open());
    server->set_dispatcher(&app);
    auto owned = std::make_unique<MemoryStream>();
    stream = owned.get();
    stream->set_sink(&written);
    auto t = std::make_unique<Transport>(*server, std::move(owned), SocketAddress{false, "10.0.0.1", 1234}, &local);
    transport = t.get();
    h2 = new Session(*server, std::move(t));
    ASSERT_NE(server->adopt_session(h2, *transport), nullptr);
    client = std::make_unique<Client>(client_window, client_auto_window);
    stream->peer_send(client->drain());
    event(EPOLLIN);
    pump();
  }
  void event(uint32_t events) {
    server->begin_step();
    transport->on_io(events);
    server->end_step();
  }
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
  void app_step(const std::function<void()> &action) {
    server->begin_step();
    action();
    server->end_step();
    pump();
  }
  std::vector<ServerFrame> frames(int32_t id) { return take_frames(client->streams[id].body); }

  SocketAddress local{false, "127.0.0.1", 8000};
  App app;
  std::unique_ptr<Engine> server;
  MemoryStream *stream = nullptr;
  Transport *transport = nullptr;
  std::string written;
  std::unique_ptr<Client> client;
  Session *h2 = nullptr;
};

TEST_F(Http2WebSocketTest, TheServerOffersExtendedConnectWhenWebSocketsAreOn) {
  start();
  EXPECT_EQ(nghttp2_session_get_remote_settings(client->ng, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL), 1u);
}

TEST_F(Http2WebSocketTest, WithWebSocketsOffNoOfferAndAnExtendedConnectIsRefused) {
  ws::Settings off;
  off.enabled = false;
  start(off);
  EXPECT_EQ(nghttp2_session_get_remote_settings(client->ng, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL), 0u);
  int32_t id = client->websocket();
  pump();
  // nghttp2 (without our offer) takes :protocol for a malformed request.
  EXPECT_TRUE(app.sockets.empty());
  EXPECT_TRUE(client->streams[id].closed);
  EXPECT_EQ(client->streams[id].error_code, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_FALSE(transport->closed());  // only the stream
}

TEST_F(Http2WebSocketTest, ExtendedConnectIsAcceptedAndEchoesBothWays) {
  start();
  int32_t id = client->websocket("/chat?room=1",
                                 {{"sec-websocket-version", "13"}, {"sec-websocket-protocol", "chat, superchat"}});
  pump();
  ASSERT_EQ(app.sockets.size(), 1u);
  Socket &s = *app.sockets[0];
  EXPECT_TRUE(s.websocket);
  EXPECT_EQ(s.target, "/chat?room=1");
  EXPECT_EQ(s.version, "2");
  EXPECT_EQ(s.subprotocols, (std::vector<std::string>{"chat", "superchat"}));
  ClientStream &cs = client->streams[id];
  EXPECT_EQ(cs.status, 200);
  EXPECT_FALSE(cs.end_stream);  // the stream stays open: it is the tunnel
  EXPECT_EQ(cs.header("sec-websocket-accept"), "");
  EXPECT_EQ(server->active_requests(), 1u);
  EXPECT_EQ(server->connection_count(), 1u);  // the tunnel is not a connection of its own

  client->send_data(id, client_frame(1, "hello") + client_frame(2, std::string("\x00\x01\x02", 3)));
  pump();
  EXPECT_EQ(s.taken, (std::vector<std::string>{"hello", std::string("\x00\x01\x02", 3)}));
  auto got = frames(id);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].opcode, 1);
  EXPECT_EQ(got[0].payload, "hello");
  EXPECT_EQ(got[1].opcode, 2);

  // A message split across DATA frames.
  std::string big(100000, 'x');
  std::string f = client_frame(2, big);
  client->send_data(id, f.substr(0, 7));
  pump();
  client->send_data(id, f.substr(7));
  pump();
  ASSERT_EQ(s.taken.size(), 3u);
  EXPECT_EQ(s.taken[2], big);
  got = frames(id);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, big);

  // The client closes: the close is echoed, the app told 1000, then END_STREAM.
  client->send_data(id, client_frame(8, close_payload(1000)));
  pump();
  EXPECT_EQ(s.detached_code, 1000);
  got = frames(id);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].opcode, 8);
  EXPECT_EQ(got[0].payload, close_payload(1000));
  EXPECT_TRUE(cs.end_stream);
  EXPECT_EQ(server->active_requests(), 0u);
  EXPECT_FALSE(transport->closed());  // the connection serves on
  int32_t plain = client->open({{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "x"}});
  client->send_data(plain, "", true);
  pump();
  EXPECT_EQ(client->streams[plain].body, "plain");
}

TEST_F(Http2WebSocketTest, SubprotocolExtensionAndAppHeadersGoInTheResponse) {
  start();
  app.accept_now = false;
  int32_t id = client->websocket("/", {{"sec-websocket-version", "13"},
                                       {"sec-websocket-protocol", "chat"},
                                       {"sec-websocket-extensions", "permessage-deflate; client_max_window_bits"}});
  pump();
  ASSERT_EQ(app.sockets.size(), 1u);
  app_step([&] { app.accept(*app.sockets[0], "chat", {{"x-app", "1"}, {"content-length", "5"}}); });
  ClientStream &cs = client->streams[id];
  EXPECT_EQ(cs.status, 200);
  EXPECT_EQ(cs.header("sec-websocket-protocol"), "chat");
  EXPECT_NE(cs.header("sec-websocket-extensions").find("permessage-deflate"), std::string::npos);
  EXPECT_EQ(cs.header("x-app"), "1");
  EXPECT_EQ(cs.header("content-length"), "");  // not on a 2xx to CONNECT
}

TEST_F(Http2WebSocketTest, DenialIsAPlainResponseOnTheStream) {
  start();
  app.accept_now = false;
  int32_t id = client->websocket();
  pump();
  ASSERT_EQ(app.sockets.size(), 1u);
  Socket &s = *app.sockets[0];
  app_step([&] {
    std::string body = "go away";
    s.exchange->start_response(403, {{"content-length", "7"}});
    s.exchange->write_body(body.data(), body.size(), false);
  });
  ClientStream &cs = client->streams[id];
  EXPECT_EQ(cs.status, 403);
  EXPECT_EQ(cs.body, "go away");
  EXPECT_TRUE(cs.end_stream);
  EXPECT_EQ(server->active_requests(), 0u);
}

TEST_F(Http2WebSocketTest, OtherVersionsAre426PlainConnectIs405UnknownProtocolIs501) {
  start();
  int32_t bad_version = client->websocket("/", {{"sec-websocket-version", "8"}});
  int32_t plain = client->open({{":method", "CONNECT"}, {":authority", "example.com:443"}});
  int32_t other = client->open({{":method", "CONNECT"},
                                {":protocol", "connect-udp"},
                                {":scheme", "https"},
                                {":path", "/.well-known/masque/udp/x/53/"},
                                {":authority", "example.com"}});
  pump();
  EXPECT_TRUE(app.sockets.empty());
  EXPECT_EQ(client->streams[bad_version].status, 426);
  EXPECT_EQ(client->streams[bad_version].header("sec-websocket-version"), "13");
  EXPECT_EQ(client->streams[plain].status, 405);
  EXPECT_EQ(client->streams[other].status, 501);
  EXPECT_EQ(server->active_requests(), 0u);
}

TEST_F(Http2WebSocketTest, SendsWaitForTheClientWindowWithoutStallingOtherStreams) {
  // The client's stream windows start at 1000 bytes and open only when it says.
  start({}, 1000, false);
  int32_t id = client->websocket();
  pump();
  ASSERT_EQ(app.sockets.size(), 1u);
  Socket &s = *app.sockets[0];
  std::string big(300000, 'b');
  http::WriteStatus status = http::WriteStatus::Ok;
  app_step([&] { status = s.session->send(false, big.data(), big.size()); });
  EXPECT_EQ(status, http::WriteStatus::Blocked);
  EXPECT_EQ(s.writable, 0);
  EXPECT_LE(client->streams[id].body.size(), 1000u);
  // Another stream on the connection is answered meanwhile.
  int32_t plain = client->open({{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "x"}});
  client->send_data(plain, "", true);
  pump();
  EXPECT_EQ(client->streams[plain].body.size(), std::min<size_t>(5, 1000));
  EXPECT_EQ(client->streams[plain].status, 200);
  // The client opens its windows: the message arrives whole, the app hears it may send.
  for (int i = 0; i < 100 && client->streams[id].body.size() < big.size() + 10; ++i) {
    nghttp2_session_consume(client->ng, id, client->streams[id].body.size());
    nghttp2_submit_window_update(client->ng, NGHTTP2_FLAG_NONE, id, 200000);
    nghttp2_submit_window_update(client->ng, NGHTTP2_FLAG_NONE, 0, 200000);
    pump();
  }
  auto got = frames(id);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, big);
  EXPECT_GE(s.writable, 1);
}

TEST_F(Http2WebSocketTest, AFullQueueKeepsTheStreamWindowClosed) {
  ws::Settings settings;
  settings.max_queue = 2;
  start(settings);
  int32_t id = client->websocket();
  pump();
  ASSERT_EQ(app.sockets.size(), 1u);
  Socket &s = *app.sockets[0];
  s.echo = false;
  std::string frame = client_frame(2, std::string(1000, 'm'));
  std::string many;
  for (int i = 0; i < 200; ++i) many += frame;  // 200 KB: over the 64 KiB window
  client->send_data(id, many);
  pump();
  // Two messages queued; the rest waits in the client (its window closed):
  // the server holds at most the stream's window plus one read of the
  // WebSocket's transport (64 KiB), as a socket's buffer and one read would.
  EXPECT_EQ(s.session->has_message(), true);
  EXPECT_EQ(nghttp2_session_get_stream_remote_window_size(client->ng, id), 0);
  EXPECT_LE(client->streams[id].sent, 65535u + 65536u + 2 * frame.size());
  EXPECT_GT(client->streams[id].outgoing.size() - client->streams[id].sent, 60000u);
  // The app reads: the window opens, everything arrives.
  int got = 0;
  for (int i = 0; i < 1000 && got < 200; ++i) {
    app_step([&] {
      ws::Message m;
      while (s.session != nullptr && s.session->take_message(m)) ++got;
    });
  }
  EXPECT_EQ(got, 200);
}

TEST_F(Http2WebSocketTest, AResetMidMessageIs1006AndLeavesTheConnection) {
  start();
  int32_t id = client->websocket();
  pump();
  ASSERT_EQ(app.sockets.size(), 1u);
  Socket &s = *app.sockets[0];
  std::string f = client_frame(1, std::string(5000, 'a'));
  client->send_data(id, f.substr(0, 2000));
  pump();
  nghttp2_submit_rst_stream(client->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  pump();
  EXPECT_EQ(s.detached_code, 1006);
  EXPECT_EQ(server->active_requests(), 0u);
  EXPECT_FALSE(transport->closed());
  int32_t again = client->websocket();
  pump();
  client->send_data(again, client_frame(1, "still here"));
  pump();
  auto got = frames(again);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "still here");
}

TEST_F(Http2WebSocketTest, TheClientEndingItsSideIsTheConnectionGone) {
  start();
  int32_t id = client->websocket();
  pump();
  Socket &s = *app.sockets[0];
  client->send_data(id, client_frame(1, "last"), true);
  pump();
  EXPECT_EQ(s.taken, std::vector<std::string>{"last"});
  EXPECT_EQ(s.detached_code, 1006);
  EXPECT_TRUE(client->streams[id].end_stream);  // our side ends too
  EXPECT_TRUE(client->streams[id].closed);
  EXPECT_EQ(server->active_requests(), 0u);
}

TEST_F(Http2WebSocketTest, TheConnectionDroppingDropsItsWebSockets) {
  start();
  client->websocket();
  client->websocket();
  pump();
  ASSERT_EQ(app.sockets.size(), 2u);
  stream->peer_close();
  event(EPOLLIN);
  EXPECT_TRUE(transport->closed());
  EXPECT_EQ(app.sockets[0]->detached_code, 1006);
  EXPECT_EQ(app.sockets[1]->detached_code, 1006);
  EXPECT_EQ(server->active_requests(), 0u);
}

TEST_F(Http2WebSocketTest, GracefulStopClosesTheWebSocketThenTheConnection) {
  start();
  int32_t id = client->websocket();
  pump();
  Socket &s = *app.sockets[0];
  server->begin_step();
  server->begin_shutdown();
  server->end_step();
  pump();
  EXPECT_EQ(s.detached_code, 1001);
  auto got = frames(id);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].opcode, 8);
  EXPECT_EQ(got[0].payload, close_payload(1001));
  EXPECT_TRUE(client->goaway);
  // The client answers the close: the stream ends, then the connection.
  client->send_data(id, client_frame(8, close_payload(1001)), true);
  pump();
  EXPECT_TRUE(client->streams[id].closed);
  EXPECT_EQ(server->active_requests(), 0u);
  // (The client acknowledged the stop's PING: the final GOAWAY went out, and
  // with no stream left the connection closes.)
  EXPECT_TRUE(transport->closed());
}

TEST_F(Http2WebSocketTest, DataBeforeTheAcceptIsReadAfterIt) {
  start();
  app.accept_now = false;
  int32_t id = client->websocket();
  client->send_data(id, client_frame(1, "early"));
  pump();
  ASSERT_EQ(app.sockets.size(), 1u);
  app_step([&] { app.accept(*app.sockets[0]); });
  EXPECT_EQ(app.sockets[0]->taken, std::vector<std::string>{"early"});
  auto got = frames(id);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "early");
}

}  // namespace
}  // namespace pronghorn::http2

namespace pronghorn::http2 {
namespace {

TEST_F(Http2WebSocketTest, AWindowHeldClosedResetsTheStreamAndTheWebSocketSees1006) {
  start({}, 1000, false);
  int32_t id = client->websocket();
  pump();
  Socket &s = *app.sockets[0];
  std::string big(100000, 'b');
  app_step([&] { s.session->send(false, big.data(), big.size()); });
  uint64_t now = server->loop().now_ms();
  server->begin_step();
  h2->on_tick(now + 61000);
  server->end_step();
  pump();
  EXPECT_TRUE(client->streams[id].reset_by_server);
  EXPECT_EQ(client->streams[id].error_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_EQ(s.detached_code, 1006);
  EXPECT_EQ(server->active_requests(), 0u);
  EXPECT_FALSE(transport->closed());
}

}  // namespace
}  // namespace pronghorn::http2
