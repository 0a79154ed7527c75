// systemd integration without libsystemd: sd_notify(3) messages over the
// datagram socket named by $NOTIFY_SOCKET.
#pragma once

#include <string_view>

namespace pronghorn::supervisor {

// Sends `state` (e.g. "READY=1\nSTATUS=4 workers") when NOTIFY_SOCKET is set.
// Returns false only when sending failed (logged); true when not under systemd.
bool sd_notify(std::string_view state);

}  // namespace pronghorn::supervisor
