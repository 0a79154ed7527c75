// One request and its response, whatever the protocol: the contract between
// a protocol session (an HTTP/1 request or an HTTP/2 stream) and the
// application side (the ASGI bridge). The bridge talks to an Exchange only,
// never to a protocol's connection type.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/buffer.h"
#include "engine/net/listener.h"
#include "engine/net/stream.h"

namespace pronghorn::ws {
class Session;
struct HandshakeCheck;
}  // namespace pronghorn::ws

namespace pronghorn::http {

struct Header {
  std::string_view name;   // lowercased
  std::string_view value;  // surrounding whitespace removed
};

// The request as a protocol hands it over. The views are valid only during
// RequestDispatcher::on_request.
struct RequestHead {
  std::string_view method;
  std::string_view target;                // request-target as sent (origin-, absolute- or asterisk-form)
  std::string_view http_version = "1.1";  // "1.0", "1.1" ("2" for HTTP/2)
  std::vector<Header> headers;
  std::string_view host;
  bool upgrade = false;  // the client asks to switch protocols (HTTP/1: Connection: upgrade + Upgrade)
  // A valid WebSocket opening handshake (ws/handshake.h): the application
  // serves it as a websocket scope and answers with accept_websocket() or
  // an HTTP response (a denial). nullptr for every other request.
  const ws::HandshakeCheck *websocket = nullptr;
};

// Response header fields as the application gives them.
using HeaderList = std::vector<std::pair<std::string_view, std::string_view>>;

// Why an exchange let go of its observer.
enum class Detach {
  Complete,    // the response is complete
  ClientGone,  // the client went away (or the connection failed) first
  ServerStop   // a graceful stop ended the exchange (a stream cut to stop)
};

// The application side of one exchange (the ASGI bridge's request object).
class ExchangeObserver {
 public:
  // Body bytes, or the end of the body, can be taken from the exchange.
  virtual void on_body_ready() = 0;
  // Queued output fell below the low-water mark after a Blocked write.
  virtual void on_writable() = 0;
  // The exchange drops its reference to the observer (see Detach). Called
  // exactly once per attach().
  virtual void on_detach(Detach why) = 0;

 protected:
  ~ExchangeObserver() = default;
};

enum class WriteStatus {
  Ok,       // accepted
  Blocked,  // accepted, but the caller should wait for on_writable()
  Closed,   // the client is gone; nothing was sent
  TooLong,  // more bytes than content-length: logged, connection closed
  TooShort  // final write ended before content-length: logged, connection closed
};

// Return contracts: start_response() returns nullptr or the reason the head
// is invalid (nothing was sent); the writes return a WriteStatus; fail() and
// abort() may detach the observer (and so free it) before they return.
class Exchange {
 public:
  virtual void attach(ExchangeObserver *observer) = 0;
  virtual const SocketAddress &peer() const = 0;
  virtual const SocketAddress &local() const = 0;
  // The client that the access log names: the peer, unless the application
  // side found a trusted proxy's X-Forwarded-For (--proxy-headers) and said
  // so with set_log_client() before the response began. As uvicorn, whose
  // access log reads the scope's client, that is the address with port 0.
  virtual const SocketAddress &log_client() const = 0;
  virtual void set_log_client(std::string_view host) = 0;
  // The connection's TLS parameters (net/tls.h), or nullptr over plain TCP.
  virtual const TlsInfo *tls() const = 0;

  // Unread body bytes. The application copies them out, consumes them, and
  // calls body_taken(), which lets the protocol read on (and, in HTTP/1,
  // sends 100 Continue).
  virtual Buffer &body_buffer() = 0;
  virtual bool body_complete() const = 0;
  virtual void body_taken() = 0;

  virtual const char *start_response(int status, const HeaderList &headers) = 0;
  virtual WriteStatus write_body(const char *data, size_t len, bool more) = 0;
  // Sends [offset, offset+len) of file_fd (taking ownership of the fd) as the
  // rest of the body.
  virtual WriteStatus send_file(int file_fd, uint64_t offset, uint64_t len) = 0;
  // The application failed: 500 if nothing was sent yet; else what was sent
  // goes out and the exchange ends unfinished (HTTP/1: the connection closes).
  virtual void fail() = 0;
  // The application ended without finishing the response (cancelled, or a
  // value returned): the exchange ends unfinished at once.
  virtual void abort() = 0;

  // A WebSocket handshake (RequestHead::websocket) is accepted: 101 goes out
  // with `headers` (Upgrade, Connection, Sec-WebSocket-Accept, the
  // negotiated extension and `subprotocol` are added here) and the
  // connection passes to a WebSocket session, which is returned. The
  // exchange ends: its observer is dropped without on_detach(), the caller
  // attaches to the session. nullptr when the client is gone, or when
  // `headers` are invalid (*error says why; nothing was sent).
  virtual ws::Session *accept_websocket(std::string_view subprotocol, const HeaderList &headers,
                                        const char **error) = 0;

 protected:
  ~Exchange() = default;
};

// Receives each request a protocol session has read.
class RequestDispatcher {
 public:
  // The dispatcher attaches an ExchangeObserver or answers at once (fail()).
  virtual void on_request(Exchange &exchange, const RequestHead &head) = 0;

 protected:
  ~RequestDispatcher() = default;
};

}  // namespace pronghorn::http
