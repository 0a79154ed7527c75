// The HTTP/2 options, apart from the session so that the engine's
// configuration can hold them without nghttp2's headers.
#pragma once

#include <cstdint>

namespace pronghorn::http2 {

struct Settings {
  bool enabled = false;                   // --http2: ALPN h2 on TLS, prior knowledge on the plain port
  uint32_t max_concurrent_streams = 100;  // --http2-max-concurrent-streams (SETTINGS_MAX_CONCURRENT_STREAMS)
  // --http2-initial-window-size: each stream's receive window, so also the
  // most request body a stream buffers before the application reads it.
  uint32_t initial_window_size = 65535;
  uint32_t max_frame_size = 16384;        // --http2-max-frame-size (16384..16777215)
  uint32_t max_header_list_size = 65536;  // --http2-max-header-list-size: larger heads get 431
  uint64_t keep_alive_interval_ms = 0;    // --http2-keep-alive-interval: PING an idle connection (0: never)
};

// The client connection preface (RFC 9113 §3.4) that starts HTTP/2 with
// prior knowledge on a plain connection.
inline constexpr char kClientPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
inline constexpr unsigned kClientPrefaceSize = sizeof kClientPreface - 1;

}  // namespace pronghorn::http2
