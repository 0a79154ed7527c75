// permessage-deflate (RFC 7692) with zlib: the negotiation of the extension's
// parameters from a client's offers, and the raw-deflate compressor and
// decompressor of messages.
//
// Memory: a zlib stream costs ~256 KiB to compress (window 15, memLevel 8) and
// ~40 KiB to decompress. Kept per connection, thousands of connections cost
// GBs (uvicorn's known pain). Pronghorn negotiates no context takeover in both
// directions, so no compression state lives between messages; the streams
// are then shared by every connection of a worker (one event-loop thread) and
// reset after each message, as uWebSockets' shared compressor does. Memory
// per connection for compression is zero when idle.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pronghorn::ws {

struct DeflateParams {
  bool server_no_context_takeover = true;
  bool client_no_context_takeover = true;
  int server_max_window_bits = 15;  // the window the server compresses with (9..15)
  int client_max_window_bits = 15;  // the window the client compresses with (9..15)
};

// Chooses the response to the client's Sec-WebSocket-Extensions values
// (every header line's value, in order, each a comma-separated list of
// offers). Accepts the first permessage-deflate offer that is valid (RFC
// 7692 §7: known parameters, each at most once, window bits 8..15, where
// 8 is taken as 9 as zlib requires); other extensions are ignored. Fills
// `params` and `response` (the value of the response's
// Sec-WebSocket-Extensions header, e.g. "permessage-deflate;
// server_no_context_takeover; client_no_context_takeover") and returns true;
// false when no offer is acceptable (the connection goes on uncompressed).
bool negotiate_deflate(const std::string_view *offers, size_t count, DeflateParams &params, std::string &response);
// The same over the Sec-WebSocket-Extensions values a handshake kept (HTTP/1
// upgrade or HTTP/2 extended CONNECT).
bool negotiate_deflate(const std::vector<std::string> &offers, DeflateParams &params, std::string &response);

// Compresses whole messages (RFC 7692 §7.2.1: raw deflate, the final empty
// block's 00 00 ff ff removed). One per worker; reset after every message.
class Deflater {
 public:
  Deflater() = default;
  ~Deflater();
  Deflater(const Deflater &) = delete;
  Deflater &operator=(const Deflater &) = delete;
  // Appends the compressed form of data[0, len) to `out`. window_bits: the
  // negotiated server_max_window_bits. False (logged by the caller) on a
  // zlib failure.
  bool compress(const char *data, size_t len, int window_bits, std::string &out);

 private:
  z_stream stream_{};
  int window_bits_ = 0;  // of the stream set up; 0: none
};

// Decompresses whole messages. One per worker; reset after every message.
class Inflater {
 public:
  enum class Result { Ok, TooBig, Invalid };
  Inflater() = default;
  ~Inflater();
  Inflater(const Inflater &) = delete;
  Inflater &operator=(const Inflater &) = delete;
  // Appends the decompressed form of the message data[0, len) (without the
  // 00 00 ff ff tail, which is added here) to `out`. Stops with TooBig as
  // soon as the output would pass `max_out` bytes (a zip bomb costs at most
  // that much memory), and Invalid on corrupt data.
  Result decompress(const char *data, size_t len, size_t max_out, std::string &out);

 private:
  z_stream stream_{};
  bool ready_ = false;
};

}  // namespace pronghorn::ws
