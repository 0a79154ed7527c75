// A Session is one protocol running on one Transport (HTTP/1, WebSocket,
// HTTP/2). The server keeps its sessions in a list and
// drives timeouts, graceful stop and held response heads through this
// interface, whatever the protocol.
#pragma once

#include <cstdint>

namespace pronghorn {

class Session {
 public:
  virtual ~Session() = default;

  // Registers with the loop; false: logged, and the session is closed.
  virtual bool start() = 0;
  // The server's periodic tick: deadlines (keep-alive, header, linger, write stall).
  virtual void on_tick(uint64_t now_ms) = 0;
  // Graceful stop: finish what is in progress, then close; close now if idle.
  // True when that began the close of a long-lived session (a WebSocket),
  // which the stop reports.
  virtual bool close_when_idle() = 0;
  // A response is streaming with no declared length (a graceful stop ends
  // those after a grace period).
  virtual bool streaming() const = 0;
  // Closes now; `disconnected`: as if the client had gone (the application
  // is told so).
  virtual void close_now(bool disconnected) = 0;
  // Graceful stop: ends a streaming response (streaming()) now; the
  // application is told the server stopped it.
  virtual void cut_for_stop() = 0;
  // Sends a response head held back to go out with the first body bytes
  // (see Engine::hold_head).
  virtual void send_held_head() = 0;
  // The transport's fd is still in use by the send thread: the session is
  // freed only once the send is reported.
  virtual bool send_in_flight() const = 0;
  // The send in flight at close has been reported: the server may free it.
  virtual void on_released() = 0;

  // Intrusive list of the server's sessions.
  Session *prev = nullptr;
  Session *next = nullptr;
  bool head_listed = false;  // in the server's list of held heads
  // Runs inside another session's connection (a WebSocket in an HTTP/2
  // stream): not a connection of its own in connection_count().
  bool tunnelled = false;
};

}  // namespace pronghorn
