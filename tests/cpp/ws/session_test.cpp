// The WebSocket session over an in-memory transport: the handshake through
// the HTTP/1 session, the hand-over with bytes already read, echo, both
// directions of back-pressure, the closing handshake, pings and the
// graceful stop. The test is the peer and drives every event itself.
#include "engine/ws/session.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/net/memory_stream.h"
#include "engine/net/transport.h"
#include "engine/ws/handshake.h"

namespace pronghorn::ws {
namespace {

std::string client_frame(Opcode opcode, std::string_view payload, bool fin = true) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80 : 0) | static_cast<int>(opcode)));
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

// Accepts every WebSocket handshake; echoes messages unless told to hold them.
class App final : public http::RequestDispatcher, public MessageObserver {
 public:
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    ASSERT_NE(head.websocket, nullptr);
    const char *error = nullptr;
    session = exchange.accept_websocket("", {}, &error);
    ASSERT_EQ(error, nullptr);
    ASSERT_NE(session, nullptr);
    session->attach(this);
    if (echo) drain();
  }
  void on_message() override {
    ++messages;
    if (echo) drain();
  }
  void on_writable() override { ++writable; }
  void on_detach(uint16_t code, std::string_view reason) override {
    detached_code = code;
    detached_reason = reason;
    session = nullptr;
  }
  void drain() {
    Message m;
    while (session != nullptr && session->take_message(m)) {
      taken.push_back(m.data);
      session->send(m.text, m.data.data(), m.data.size());
    }
  }

  Session *session = nullptr;
  bool echo = true;
  int messages = 0;
  int writable = 0;
  std::vector<std::string> taken;
  int detached_code = 0;
  std::string detached_reason;
};

const char kHandshake[] =
    "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

class WsSessionTest : public ::testing::Test {
 protected:
  void start(Settings settings = {}) {
    EngineConfig config;
    config.date_header = false;
    config.server_header = false;
    config.access_log = false;
    config.send_thread = false;
    config.ws = settings;
    server = std::make_unique<Engine>(config);
    ASSERT_TRUE(server->open());
    server->set_dispatcher(&app);
    auto owned = std::make_unique<MemoryStream>();
    owned->set_sink(&out);  // kept after the connection closes (and its stream is freed)
    stream = owned.get();
    auto t = std::make_unique<Transport>(*server, std::move(owned), SocketAddress{false, "10.0.0.1", 1234}, &local);
    transport = t.get();
    ASSERT_NE(server->start_session(std::move(t)), nullptr);
  }
  void send(const std::string &bytes) {
    stream->peer_send(bytes);
    event(EPOLLIN);
  }
  void event(uint32_t events) {
    server->begin_step();
    transport->on_io(events);
    server->end_step();
  }
  // Reads the 101 head off what the server wrote.
  std::string take_head() {
    size_t end = out.find("\r\n\r\n");
    if (end == std::string::npos) return {};
    std::string head = out.substr(0, end + 4);
    out.erase(0, end + 4);
    return head;
  }

  SocketAddress local{false, "127.0.0.1", 8000};
  std::string out;  // what the server wrote
  App app;
  std::unique_ptr<Engine> server;
  MemoryStream *stream = nullptr;
  Transport *transport = nullptr;
};

TEST_F(WsSessionTest, HandshakeThenEchoOfAFrameThatCameWithIt) {
  start();
  // The first frame arrives in the same read as the handshake: it is in the
  // transport's input buffer when the WebSocket session takes over.
  send(std::string(kHandshake) + client_frame(Opcode::Text, "early"));
  std::string head = take_head();
  EXPECT_EQ(head.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), std::string::npos) << head;
  auto frames = take_frames(out);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].opcode, 1);
  EXPECT_EQ(frames[0].payload, "early");
  // A fragmented binary message with a ping between its fragments.
  send(client_frame(Opcode::Binary, "ab", false) + client_frame(Opcode::Ping, "p1") +
       client_frame(Opcode::Continuation, "cd"));
  frames = take_frames(out);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].opcode, 0xA);  // the pong comes first
  EXPECT_EQ(frames[0].payload, "p1");
  EXPECT_EQ(frames[1].opcode, 2);
  EXPECT_EQ(frames[1].payload, "abcd");
}

TEST_F(WsSessionTest, ReadingStopsWhileTheQueueIsFullAndResumes) {
  Settings settings;
  settings.max_queue = 4;
  start(settings);
  app.echo = false;
  send(kHandshake);
  take_head();
  std::string many;
  for (int i = 0; i < 10; ++i) many += client_frame(Opcode::Text, std::string(1, 'm').append(std::to_string(i)));
  send(many);
  // Four messages queued; the rest waits undecoded (reading stopped).
  EXPECT_EQ(app.messages, 4);
  Message m;
  ASSERT_TRUE(app.session->take_message(m));
  EXPECT_EQ(m.data, "m0");
  EXPECT_EQ(app.messages, 5);  // taking one decoded the next
  app.echo = true;
  app.drain();
  event(EPOLLIN);
  app.drain();
  // Every message once, in order (taking one decodes the next, which the
  // echoing app takes from inside that call).
  std::vector<std::string> expected;
  for (int i = 1; i < 10; ++i) expected.push_back(std::string(1, 'm').append(std::to_string(i)));
  std::sort(app.taken.begin(), app.taken.end());
  EXPECT_EQ(app.taken, expected);
}

TEST_F(WsSessionTest, SendReportsBlockedAboveTheHighWaterMarkThenWritable) {
  start();
  app.echo = false;
  send(kHandshake);
  take_head();
  stream->set_write_capacity(0);
  std::string big(100 * 1024, 'x');
  http::WriteStatus status = http::WriteStatus::Ok;
  int sent = 0;
  while (status == http::WriteStatus::Ok && sent < 100) {
    status = app.session->send(false, big.data(), big.size());
    ++sent;
  }
  EXPECT_EQ(status, http::WriteStatus::Blocked);
  EXPECT_LE(sent, 4);  // 256 KiB high-water mark: the third or fourth message blocks
  stream->set_write_capacity(SIZE_MAX);
  event(EPOLLOUT);
  EXPECT_EQ(app.writable, 1);
}

TEST_F(WsSessionTest, PeerCloseIsEchoedAndTheAppToldItsCode) {
  start();
  send(kHandshake);
  take_head();
  send(client_frame(Opcode::Close, std::string("\x0f\xa1", 2) + "done"));  // 4001 "done"
  auto frames = take_frames(out);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].opcode, 8);
  EXPECT_EQ(frames[0].payload, std::string("\x0f\xa1", 2));
  EXPECT_EQ(app.detached_code, 4001);
  EXPECT_EQ(app.detached_reason, "done");
  EXPECT_EQ(server->connection_count(), 0u);  // closed once the echo was out
}

TEST_F(WsSessionTest, ProtocolErrorClosesWith1002) {
  start();
  send(kHandshake);
  take_head();
  std::string unmasked = "\x81\x02hi";
  send(unmasked);
  auto frames = take_frames(out);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].opcode, 8);
  EXPECT_EQ(frames[0].payload.substr(0, 2), std::string("\x03\xea", 2));  // 1002
  EXPECT_EQ(app.detached_code, 1002);
  EXPECT_EQ(server->connection_count(), 0u);
}

TEST_F(WsSessionTest, PingsOnTheTickAndClosesWithoutAPong) {
  Settings settings;
  settings.ping_interval_ms = 1000;
  settings.ping_timeout_ms = 1000;
  start(settings);
  send(kHandshake);
  take_head();
  uint64_t now = server->loop().now_ms();
  Session *session = app.session;
  session->on_tick(now + 500);
  EXPECT_TRUE(take_frames(out).empty());
  session->on_tick(now + 1100);
  auto frames = take_frames(out);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].opcode, 9);
  // Answered: no close, and the next ping follows an interval later.
  send(client_frame(Opcode::Pong, frames[0].payload));
  session->on_tick(now + 2500);
  EXPECT_EQ(app.detached_code, 0);
  session->on_tick(now + 3200);
  frames = take_frames(out);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].opcode, 9);
  // Not answered: 1011 once the timeout passes.
  session->on_tick(now + 4300);
  frames = take_frames(out);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].opcode, 8);
  EXPECT_EQ(frames[0].payload.substr(0, 2), std::string("\x03\xf3", 2));  // 1011
  EXPECT_EQ(app.detached_code, 1011);
}

TEST_F(WsSessionTest, GracefulStopSendsGoingAwayOrServiceRestart) {
  start();
  send(kHandshake);
  take_head();
  server->set_ws_stop_code(close_code::ServiceRestart);
  EXPECT_EQ(server->begin_shutdown(), 1u);
  auto frames = take_frames(out);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].opcode, 8);
  EXPECT_EQ(frames[0].payload.substr(0, 2), std::string("\x03\xf4", 2));  // 1012
  EXPECT_EQ(app.detached_code, 1012);
  // The peer's answer completes the closing handshake.
  send(client_frame(Opcode::Close, std::string("\x03\xf4", 2)));
  EXPECT_EQ(server->connection_count(), 0u);
}

TEST_F(WsSessionTest, BadVersionGets426WithTheVersionWeSpeak) {
  start();
  std::string request = kHandshake;
  request.replace(request.find("Version: 13"), 11, "Version: 8");
  send(request);
  std::string head = take_head();
  EXPECT_EQ(head.rfind("HTTP/1.1 426 ", 0), 0u) << head;
  EXPECT_NE(head.find("sec-websocket-version: 13\r\n"), std::string::npos) << head;
  EXPECT_EQ(app.session, nullptr);
}

}  // namespace
}  // namespace pronghorn::ws
