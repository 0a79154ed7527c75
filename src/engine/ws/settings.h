// The WebSocket options, apart from the session so that the engine's
// configuration can hold them without the codec's headers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pronghorn::ws {

// The WebSocket options (uvicorn's --ws-* options).
struct Settings {
  bool enabled = true;                      // --ws none: false
  uint64_t max_message = 16 * 1024 * 1024;  // --ws-max-size
  size_t max_queue = 32;                    // --ws-max-queue
  uint64_t ping_interval_ms = 20000;        // --ws-ping-interval (0: no pings)
  uint64_t ping_timeout_ms = 20000;         // --ws-ping-timeout (0: no timeout)
  bool per_message_deflate = true;          // --ws-per-message-deflate
  uint64_t close_timeout_ms = 10000;        // waiting for the peer's close frame
};

}  // namespace pronghorn::ws
