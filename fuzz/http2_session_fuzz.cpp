// libFuzzer target for the HTTP/2 session (engine/http2/session.h) over an
// in-memory transport: arbitrary bytes after the client preface, as a client
// would send them, with an application that reads bodies and answers.
//
// Input layout: byte 0 chooses the run: bit 0, the application answers each
// request at once (else it holds them and answers after all the input);
// bit 1, the "socket" takes only a few bytes per event (output queues, the
// transport's high-water mark and reading pauses are exercised); bits 2..7
// set the size of the pieces the rest is delivered in. Nothing may crash,
// leak or touch freed memory (ASan, UBSan); each exchange is detached once.
// Between pieces the session's tick runs with a clock that jumps 7 s a
// piece (header timeout, the stall rule, the keep-alive PING); held requests
// are finished each in one of the application's ways (answer, abort, fail,
// send_file, writes until Blocked), chosen by the input's bytes in turn.
// WebSockets over HTTP/2 (RFC 8441 extended CONNECT) are accepted at once
// or, when held, accepted or denied; an accepted one echoes every message
// (its frames come in the stream's DATA) and must be detached by the end.
#include <sys/epoll.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>

#include "engine/engine.h"
#include "engine/http2/session.h"
#include "engine/net/memory_stream.h"
#include "engine/net/transport.h"
#include "engine/ws/session.h"

namespace {

using namespace pronghorn;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

struct Request;
std::set<Request *> live;
struct WebSocket;
std::set<WebSocket *> live_ws;

// An accepted WebSocket: echoes what it receives until the session lets go.
struct WebSocket final : ws::MessageObserver {
  ws::Session *session = nullptr;
  void on_message() override {
    ws::Message m;
    while (session != nullptr && session->take_message(m))
      if (session->send(m.text, m.data.data(), m.data.size()) == http::WriteStatus::Closed) break;
  }
  void on_writable() override {}
  void on_detach(uint16_t, std::string_view) override {
    session = nullptr;
    live_ws.erase(this);
    delete this;
  }
};

// Accepts a WebSocket handshake (the exchange lets go of its observer).
void accept_websocket(http::Exchange &exchange) {
  const char *error = nullptr;
  ws::Session *session = exchange.accept_websocket("", {{"x-fuzz", "1"}}, &error);
  CHECK(error == nullptr);
  if (session == nullptr) return;
  auto *ws = new WebSocket;
  ws->session = session;
  live_ws.insert(ws);
  session->attach(ws);  // may detach (and free) it at once
}

struct Request final : http::ExchangeObserver {
  http::Exchange *exchange = nullptr;
  bool detached = false;
  bool websocket = false;
  void on_body_ready() override {
    if (exchange == nullptr) return;
    Buffer &buf = exchange->body_buffer();
    buf.consume(buf.size());
    exchange->body_taken();
  }
  void on_writable() override {}
  void on_detach(http::Detach) override {
    CHECK(!detached);
    detached = true;
    exchange = nullptr;
    live.erase(this);
    delete this;
  }
};

void answer(http::Exchange &exchange) {
  static const std::string body(3000, 'r');
  http::HeaderList headers{{"content-type", "text/plain"}, {"Connection", "close"}};
  if (exchange.start_response(200, headers) != nullptr) return;
  if (exchange.write_body(body.data(), body.size(), true) == http::WriteStatus::Closed) return;
  exchange.write_body("end", 3, false);
}

// A file for send_file (each call takes ownership of a dup of it).
int response_file() {
  static int fd = [] {
    FILE *f = tmpfile();
    CHECK(f != nullptr);
    std::string content(5000, 'f');
    CHECK(fwrite(content.data(), 1, content.size(), f) == content.size());
    CHECK(fflush(f) == 0);
    return fileno(f);
  }();
  return fd;
}

// Finishes a held request in one of the ways an application can; may
// detach (and free) the request.
void finish(Request &request, uint8_t how) {
  http::Exchange &exchange = *request.exchange;
  if (request.websocket && how % 2 == 0) {
    // Accepted: the exchange drops the request without on_detach.
    live.erase(&request);
    delete &request;
    accept_websocket(exchange);
    return;
  }
  switch (how % 5) {
    case 0: answer(exchange); break;
    case 1: exchange.abort(); break;
    case 2:
      if (how & 8) exchange.start_response(200, {});
      exchange.fail();
      break;
    case 3:
      if (exchange.start_response(200, {{"content-length", "5000"}}) != nullptr) return;
      exchange.send_file(dup(response_file()), 0, 5000);
      break;
    default: {
      // Writes until Blocked; the stream is left with output waiting.
      static const std::string chunk(30000, 'w');
      if (exchange.start_response(200, {}) != nullptr) return;
      for (int i = 0; i < 8; ++i)
        if (exchange.write_body(chunk.data(), chunk.size(), true) != http::WriteStatus::Ok) break;
    }
  }
}

struct App final : http::RequestDispatcher {
  bool answer_now = true;
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    CHECK(head.http_version == "2");
    if (head.websocket != nullptr && answer_now) {
      accept_websocket(exchange);
      return;
    }
    auto *request = new Request;
    request->exchange = &exchange;
    request->websocket = head.websocket != nullptr;
    live.insert(request);
    exchange.attach(request);
    if (answer_now) answer(exchange);  // may detach (and free) the request
  }
};

App app;
SocketAddress local{false, "127.0.0.1", 8000};

Engine &engine() {
  static Engine *instance = [] {
    EngineConfig config;
    config.access_log = false;
    config.send_thread = false;
    config.date_header = false;
    config.http2.enabled = true;
    config.http2.max_concurrent_streams = 16;
    auto *e = new Engine(config);
    CHECK(e->open());
    e->set_dispatcher(&app);
    return e;
  }();
  return *instance;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  Engine &server = engine();
  uint8_t mode = data[0];
  app.answer_now = (mode & 1) != 0;
  bool trickle = (mode & 2) != 0;
  size_t piece = 1 + static_cast<size_t>(mode >> 2) * 97;

  std::string written;
  auto owned = std::make_unique<MemoryStream>();
  MemoryStream *stream = owned.get();
  stream->set_sink(&written);
  if (trickle) stream->set_write_capacity(64);
  auto t = std::make_unique<Transport>(server, std::move(owned), SocketAddress{false, "10.0.0.1", 1}, &local);
  Transport *transport = t.get();
  auto *session = new http2::Session(server, std::move(t));
  if (server.adopt_session(session, *transport) == nullptr) return 0;
  auto event = [&](uint32_t events) {
    server.begin_step();
    transport->on_io(events);
    server.end_step();
    written.clear();
    // (A closed transport has freed its stream.)
    if (trickle && !transport->closed()) stream->set_write_capacity(64);
  };

  stream->peer_send(std::string(http2::kClientPreface, http2::kClientPrefaceSize));
  uint64_t now = server.loop().now_ms();
  for (size_t off = 1; off < size && !transport->closed(); off += piece) {
    size_t n = std::min(piece, size - off);
    stream->peer_send(std::string(reinterpret_cast<const char *>(data + off), n));
    event(EPOLLIN | EPOLLOUT);
    if (transport->closed()) break;
    now += 7000;
    server.begin_step();
    session->on_tick(now);
    server.end_step();
    written.clear();
  }
  if (!transport->closed()) {
    // The held requests are answered now; the output drains.
    server.begin_step();
    std::set<Request *> held = live;
    size_t next = 0;
    for (Request *request : held)
      if (live.count(request) != 0 && request->exchange != nullptr) finish(*request, data[next++ % size]);
    server.end_step();
    for (int i = 0; i < 64 && !transport->closed() && transport->queued_bytes() > 0; ++i) event(EPOLLOUT);
  }
  if (!transport->closed()) session->close_now(true);
  CHECK(live.empty());     // every exchange was detached
  CHECK(live_ws.empty());  // and every WebSocket (the connection's close drops them)
  CHECK(server.active_requests() == 0);
  server.run_once(0);  // frees the session
  return 0;
}
