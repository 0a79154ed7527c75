// The WebSocket session: RFC 6455 on a Transport that an HTTP/1 session
// handed over after the opening handshake (with any bytes already read).
// It drives the frame codec (frame.h) and permessage-deflate (deflate.h),
// answers pings, sends its own on a timer, runs the closing handshake, and
// queues whole messages for the application side (the bridge's websocket
// object, a MessageObserver).
//
// Flow control: reading stops while max_queue messages wait for the
// application (so a fast sender cannot grow the queue), and send() reports
// Blocked while the transport's queue is over the write high-water mark
// (so a slow reader cannot grow ours); on_writable() follows when it drains.
//
// Return contract: send() and close() return a WriteStatus (Closed when the
// connection is gone or closing: nothing was sent); on_detach() is called
// exactly once per attach(), with the code and reason the application's
// websocket.disconnect carries.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "engine/http/exchange.h"
#include "engine/net/transport.h"
#include "engine/session.h"
#include "engine/ws/deflate.h"
#include "engine/ws/frame.h"
#include "engine/ws/settings.h"

namespace pronghorn {
class Engine;
}

namespace pronghorn::ws {

struct Message {
  bool text = false;
  std::string data;
};

// The application side of one WebSocket.
class MessageObserver {
 public:
  // A message was queued (take_message()).
  virtual void on_message() = 0;
  // Queued output fell below the low-water mark after a Blocked send().
  virtual void on_writable() = 0;
  // The session drops its reference to the observer: the connection closed,
  // or the closing handshake began. `code`/`reason`: what the application's
  // websocket.disconnect says (the peer's close code, 1006 when the
  // connection dropped without one, the server's code when it closed).
  virtual void on_detach(uint16_t code, std::string_view reason) = 0;

 protected:
  ~MessageObserver() = default;
};

class Session final : public pronghorn::Session, private TransportHandler {
 public:
  // `deflate`: the negotiated permessage-deflate parameters, or nullptr.
  Session(Engine &engine, std::unique_ptr<Transport> transport, const DeflateParams *deflate);
  ~Session() override;
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  // A session that closed before the observer came (the handshake's
  // leftover bytes were a protocol error, or the peer left) detaches it at
  // once.
  void attach(MessageObserver *observer);
  const SocketAddress &peer() const { return transport_->peer(); }

  // The oldest queued message, moved into `out`; false when none.
  bool take_message(Message &out);
  bool has_message() const { return !queue_.empty(); }
  // Sends a text (UTF-8, checked by the caller) or binary message.
  http::WriteStatus send(bool text, const char *data, size_t len);
  // The application closes: a close frame goes out, then the session waits
  // (close_timeout_ms) for the peer's. The observer is detached with this
  // code and reason.
  http::WriteStatus close(uint16_t code, std::string_view reason);
  bool open() const { return state_ == State::Open; }

  // ---- pronghorn::Session ----
  bool start() override;
  void on_tick(uint64_t now_ms) override;
  // Graceful stop: a close frame with the code the engine chose (1001 going
  // away; 1012 service restart on a reload), the application told.
  bool close_when_idle() override;
  bool streaming() const override { return false; }
  void close_now(bool disconnected) override;
  void cut_for_stop() override { close_now(true); }
  void send_held_head() override {}
  bool send_in_flight() const override { return transport_->send_in_flight(); }
  void on_released() override;

 private:
  // ---- TransportHandler ----
  void on_readable() override;
  void on_output_progress() override;
  void on_transport_failed() override { close_now(true); }

  enum class State {
    Open,     // messages both ways
    Closing,  // our close frame is out; waiting for the peer's (or the timeout)
    Closed
  };

  void process_input();
  bool send_frame(Opcode opcode, const char *data, size_t len, bool rsv1 = false);
  // Sends a close frame (code 0: none) and moves to Closing; the observer is
  // told `code` and `reason`.
  void start_closing(uint16_t code, std::string_view reason, uint16_t app_code, std::string_view app_reason);
  // Protocol error from the peer: close frame with `code`, then close.
  void fail(uint16_t code, const char *reason);
  void detach(uint16_t code, std::string_view reason);
  void update_reading();
  bool input_paused() const;

  Engine &engine_;
  std::unique_ptr<Transport> transport_;
  MessageDecoder decoder_;
  bool deflate_ = false;
  DeflateParams deflate_params_;
  std::deque<Message> queue_;
  size_t queued_bytes_ = 0;  // the messages' bytes in queue_
  MessageObserver *observer_ = nullptr;
  State state_ = State::Open;
  bool wants_writable_ = false;
  bool processing_ = false;
  uint64_t next_ping_ms_ = 0;      // 0: none scheduled
  uint64_t pong_deadline_ms_ = 0;  // 0: no ping waiting for its pong
  uint64_t close_deadline_ms_ = 0;
  uint32_t ping_counter_ = 0;
  uint16_t end_code_ = close_code::Abnormal;  // what a late observer is told
  std::string end_reason_;
  std::string frame_buf_;  // a frame being built (header + compressed payload)
};

}  // namespace pronghorn::ws
