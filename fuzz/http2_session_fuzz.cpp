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
#include <sys/epoll.h>

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

struct Request final : http::ExchangeObserver {
  http::Exchange *exchange = nullptr;
  bool detached = false;
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

struct App final : http::RequestDispatcher {
  bool answer_now = true;
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override {
    CHECK(head.http_version == "2");
    auto *request = new Request;
    request->exchange = &exchange;
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
  for (size_t off = 1; off < size && !transport->closed(); off += piece) {
    size_t n = std::min(piece, size - off);
    stream->peer_send(std::string(reinterpret_cast<const char *>(data + off), n));
    event(EPOLLIN | EPOLLOUT);
  }
  if (!transport->closed()) {
    // The held requests are answered now; the output drains.
    server.begin_step();
    std::set<Request *> held = live;
    for (Request *request : held)
      if (live.count(request) != 0 && request->exchange != nullptr) answer(*request->exchange);
    server.end_step();
    for (int i = 0; i < 64 && !transport->closed() && transport->queued_bytes() > 0; ++i) event(EPOLLOUT);
  }
  if (!transport->closed()) session->close_now(true);
  CHECK(live.empty());  // every exchange was detached
  CHECK(server.active_requests() == 0);
  server.run_once(0);  // frees the session
  return 0;
}
