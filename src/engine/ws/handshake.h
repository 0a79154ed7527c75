// The server side of the opening handshake (RFC 6455 §4.2), with no I/O:
// judges an HTTP/1.1 request that asks to upgrade to WebSocket and builds the
// 101 response's header fields.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/http/exchange.h"

namespace pronghorn::ws {

// The request is a WebSocket opening handshake (RFC 6455 §4.2.1): GET,
// HTTP/1.1, Connection contains the token "upgrade" and Upgrade the token
// "websocket" (token lists, any case). Says nothing yet of the key or version.
bool is_upgrade_request(const http::RequestHead &head);

struct HandshakeCheck {
  int status = 0;                              // 0: acceptable; else the status to answer (400, 426)
  const char *reason = "";                     // for the log and the response body
  std::string_view key;                        // Sec-WebSocket-Key (valid while the head is)
  std::vector<std::string_view> subprotocols;  // Sec-WebSocket-Protocol tokens, in order
  std::vector<std::string_view> extensions;    // every Sec-WebSocket-Extensions value, in order
};

// Checks an upgrade request (is_upgrade_request() was true): one
// Sec-WebSocket-Key of 16 bytes in base64, Sec-WebSocket-Version 13
// (otherwise 426, and the response carries Sec-WebSocket-Version: 13), no
// request body (Content-Length other than 0, or Transfer-Encoding: 400).
HandshakeCheck check_handshake(const http::RequestHead &head);

// Checks a WebSocket over HTTP/2 (RFC 8441: CONNECT with :protocol
// websocket, which the HTTP/2 session has recognised): Sec-WebSocket-Version
// 13 (otherwise 426, as on HTTP/1). There is no key (the stream itself is the
// proof that the client speaks the protocol) and no body rule (the stream's
// DATA is the tunnel). Subprotocols and extensions are collected as above.
HandshakeCheck check_extended_connect(const http::RequestHead &head);

// Sec-WebSocket-Accept for a key: base64(SHA-1(key + the RFC's GUID)).
std::string accept_key(std::string_view key);

}  // namespace pronghorn::ws
