#include "engine/ws/session.h"

#include <cstring>

#include "engine/engine.h"
#include "engine/log.h"

namespace pronghorn::ws {

namespace {
constexpr uint64_t kWriteStallMs = 60000;  // as HTTP/1: no byte accepted by the socket for this long
// Messages shorter than this go out uncompressed (RFC 7692 lets each message
// choose): deflate's own framing would make them longer, for CPU spent.
constexpr size_t kMinCompressed = 64;
// How long a graceful stop waits for the peer's answer to its close frame.
constexpr uint64_t kStopCloseWaitMs = 1000;
// Decoder buffers above this are freed when no message is in progress.
constexpr size_t kKeptDecoderBuffer = 64 * 1024;

// One compressor and one decompressor per worker thread, shared by its
// connections (no context takeover: nothing is kept between messages).
Deflater &shared_deflater() {
  thread_local Deflater deflater;
  return deflater;
}
Inflater &shared_inflater() {
  thread_local Inflater inflater;
  return inflater;
}
}  // namespace

Session::Session(Engine &engine, std::unique_ptr<Transport> transport, const DeflateParams *deflate)
    : engine_(engine), transport_(std::move(transport)), decoder_(engine.config().ws.max_message) {
  transport_->set_handler(this);
  // The send thread pays off for costly HTTP requests (its cost model counts
  // requests, which messages are not): a message is sent at once.
  transport_->set_send_thread_allowed(false);
  if (deflate != nullptr) {
    deflate_ = true;
    deflate_params_ = *deflate;
    decoder_.set_inflater(&shared_inflater());
  }
}

Session::~Session() = default;

void Session::on_released() {
  engine_.release(this);
}

bool Session::start() {
  // The transport is registered with the loop already (the HTTP/1 session
  // started it); bytes that came after the handshake are in its input.
  const Settings &settings = engine_.config().ws;
  uint64_t now = engine_.loop().now_ms();
  if (settings.ping_interval_ms > 0) next_ping_ms_ = now + settings.ping_interval_ms;
  log(LogLevel::Info, "connection open");
  // Bytes that came after the handshake are decoded once the application
  // side is attached (attach()): a close among them must reach it.
  transport_->set_reading(false);
  return !transport_->closed();
}

bool Session::take_message(Message &out) {
  if (queue_.empty()) return false;
  bool was_paused = input_paused();
  out = std::move(queue_.front());
  queue_.pop_front();
  queued_bytes_ -= out.data.size();
  // A full queue had stopped reading (and decoding what was read).
  if (was_paused && state_ != State::Closed && !input_paused()) {
    process_input();
    update_reading();
  }
  return true;
}

bool Session::input_paused() const {
  // The app's queue is full (in messages, or in bytes: a few large messages
  // must not cost max_queue times --ws-max-size), or our output to this peer
  // is over the high-water mark (a peer that sends pings and never reads
  // must not grow the pongs we queue).
  const Settings &settings = engine_.config().ws;
  return queue_.size() >= settings.max_queue || queued_bytes_ >= settings.max_message ||
         transport_->queued_bytes() > engine_.config().write_high_water;
}

void Session::update_reading() {
  if (state_ == State::Closed) return;
  // Closing: read on, to see the peer's close frame (messages are dropped).
  if (state_ == State::Closing) {
    transport_->set_reading(true);
    return;
  }
  transport_->set_reading(observer_ != nullptr && !input_paused());
}

void Session::on_readable() {
  ssize_t n = transport_->read_input();
  if (n == kWouldBlock) return;
  if (n == kFailed || n == 0) {
    // The peer is gone. After our close frame that is the end of the
    // closing handshake (a client may close TCP without its own close frame).
    close_now(state_ == State::Open);
    return;
  }
  process_input();
  if (state_ != State::Closed) transport_->trim_input();
}

void Session::process_input() {
  if (processing_) return;
  processing_ = true;
  Buffer &in = transport_->input();
  const Settings &settings = engine_.config().ws;
  while (state_ != State::Closed && !in.empty()) {
    // A full queue, or output over its mark: leave the rest in the input
    // buffer (reading has stopped).
    if (state_ == State::Open && input_paused()) break;
    size_t consumed = 0;
    MessageDecoder::Event event = decoder_.decode(in.data(), in.size(), consumed);
    in.consume(consumed);
    if (event == MessageDecoder::Event::None) break;
    switch (event) {
      case MessageDecoder::Event::None: break;
      case MessageDecoder::Event::Message:
        // After our close frame, messages are dropped (uvicorn's rule): the
        // application said it reads no more.
        if (state_ != State::Open) break;
        queue_.push_back(Message{decoder_.is_text(), std::move(decoder_.message())});
        queued_bytes_ += queue_.back().data.size();
        if (observer_ != nullptr) observer_->on_message();
        break;
      case MessageDecoder::Event::Ping:
        if (state_ == State::Open) {
          std::string_view payload = decoder_.control_payload();
          send_frame(Opcode::Pong, payload.data(), payload.size());
        }
        break;
      case MessageDecoder::Event::Pong: {
        std::string_view payload = decoder_.control_payload();
        uint32_t expected = ping_counter_;
        if (pong_deadline_ms_ != 0 && payload.size() == sizeof expected &&
            std::memcmp(payload.data(), &expected, sizeof expected) == 0) {
          pong_deadline_ms_ = 0;
          if (settings.ping_interval_ms > 0) next_ping_ms_ = engine_.loop().now_ms() + settings.ping_interval_ms;
        }
        break;
      }
      case MessageDecoder::Event::Close:
        if (state_ == State::Open) {
          // The peer closes: echo its code (RFC 6455 §5.5.1), tell the
          // application, and close TCP once the echo is out (the server
          // closes first, §7.1.1).
          uint16_t code = decoder_.close_code();
          std::string reason(decoder_.close_reason());
          std::string payload = code == close_code::NoStatus ? std::string() : close_payload(code, "");
          send_frame(Opcode::Close, payload.data(), payload.size());
          state_ = State::Closing;
          detach(code, reason);
        }
        // Our close was answered, or just echoed: the handshake is complete.
        in.consume(in.size());
        if (transport_->output_idle())
          close_now(false);
        else
          close_deadline_ms_ = engine_.loop().now_ms();  // no more waiting than the write-stall rule allows
        processing_ = false;
        return;
      case MessageDecoder::Event::Error:
        log(LogLevel::Debug, "%s:%d - WebSocket protocol error: %s (%u)", peer().host.c_str(), peer().port,
            decoder_.error_reason(), decoder_.error_code());
        in.consume(in.size());
        fail(decoder_.error_code(), decoder_.error_reason());
        processing_ = false;
        return;
    }
  }
  processing_ = false;
  // A large message's buffers are not kept while the connection idles.
  if (in.empty() && decoder_.buffered() > kKeptDecoderBuffer) decoder_.release_idle();
  update_reading();
}

bool Session::send_frame(Opcode opcode, const char *data, size_t len, bool rsv1) {
  if (state_ == State::Closed) return false;
  char header[kMaxServerHeader];
  size_t header_len = encode_header(header, opcode, true, rsv1, len);
  iovec iov[2] = {{header, header_len}, {const_cast<char *>(data), len}};
  return transport_->send(iov, len > 0 ? 2 : 1);
}

http::WriteStatus Session::send(bool text, const char *data, size_t len) {
  if (state_ != State::Open) return http::WriteStatus::Closed;
  Opcode opcode = text ? Opcode::Text : Opcode::Binary;
  bool sent;
  if (deflate_ && len >= kMinCompressed) {
    frame_buf_.clear();
    if (!shared_deflater().compress(data, len, deflate_params_.server_max_window_bits, frame_buf_)) {
      log(LogLevel::Error, "WebSocket message compression failed; closing");
      fail(close_code::InternalError, "");
      return http::WriteStatus::Closed;
    }
    sent = send_frame(opcode, frame_buf_.data(), frame_buf_.size(), true);
    if (frame_buf_.capacity() > 64 * 1024) std::string().swap(frame_buf_);
  } else {
    sent = send_frame(opcode, data, len);
  }
  if (!sent || state_ == State::Closed) return http::WriteStatus::Closed;
  if (transport_->queued_bytes() > engine_.config().write_high_water) {
    wants_writable_ = true;
    return http::WriteStatus::Blocked;
  }
  return http::WriteStatus::Ok;
}

http::WriteStatus Session::close(uint16_t code, std::string_view reason) {
  if (state_ != State::Open) return http::WriteStatus::Closed;
  start_closing(code, reason, code, reason);
  return http::WriteStatus::Ok;
}

void Session::start_closing(uint16_t code, std::string_view reason, uint16_t app_code, std::string_view app_reason) {
  std::string payload = close_payload(code, reason);
  send_frame(Opcode::Close, payload.data(), payload.size());
  if (state_ == State::Closed) return;
  state_ = State::Closing;
  close_deadline_ms_ = engine_.loop().now_ms() + engine_.config().ws.close_timeout_ms;
  pong_deadline_ms_ = next_ping_ms_ = 0;
  // Messages after our close are dropped: read on, to see the peer's close.
  transport_->set_reading(true);
  detach(app_code, app_reason);
}

void Session::fail(uint16_t code, const char *reason) {
  if (state_ == State::Open) {
    start_closing(code, reason, code, reason);
  }
  if (state_ == State::Closed) return;
  // No waiting for the peer's close after a protocol error: close once the
  // close frame is out.
  close_deadline_ms_ = engine_.loop().now_ms();
  if (transport_->output_idle()) close_now(false);
}

void Session::attach(MessageObserver *observer) {
  if (state_ != State::Open) {
    observer->on_detach(end_code_, end_reason_);
    return;
  }
  observer_ = observer;
  // Accepted while a graceful stop runs: closed as the others were.
  if (engine_.shutting_down()) {
    close_when_idle();
    return;
  }
  update_reading();
  if (!transport_->input().empty()) process_input();
}

void Session::detach(uint16_t code, std::string_view reason) {
  if (end_code_ == close_code::Abnormal && code != close_code::Abnormal) {
    end_code_ = code;
    end_reason_.assign(reason);
  }
  MessageObserver *observer = observer_;
  observer_ = nullptr;
  if (observer != nullptr) observer->on_detach(code, reason);
}

bool Session::close_when_idle() {
  if (state_ != State::Open) return false;
  uint16_t code = engine_.ws_stop_code();
  start_closing(code, "", code, "");
  // A stop waits for the peer's close frame a short while only (a silent
  // client must not hold a rolling reload; uvicorn does not wait at all).
  uint64_t soon = engine_.loop().now_ms() + kStopCloseWaitMs;
  if (state_ == State::Closing && close_deadline_ms_ > soon) close_deadline_ms_ = soon;
  return true;
}

void Session::on_tick(uint64_t now_ms) {
  if (state_ == State::Closed || transport_->send_in_flight()) return;
  if (!transport_->output_idle() && now_ms - transport_->last_write_ms() >= kWriteStallMs) {
    log(LogLevel::Debug, "%s:%d - client read nothing for %llu s; closing", peer().host.c_str(), peer().port,
        static_cast<unsigned long long>(kWriteStallMs / 1000));
    close_now(true);
    return;
  }
  if (state_ == State::Closing) {
    // The peer did not answer our close frame in time (or a close that must
    // not wait is still going out: the write-stall rule bounds that).
    if (now_ms >= close_deadline_ms_ && (transport_->output_idle() || close_deadline_ms_ + kWriteStallMs <= now_ms))
      close_now(false);
    return;
  }
  const Settings &settings = engine_.config().ws;
  if (pong_deadline_ms_ != 0 && now_ms >= pong_deadline_ms_) {
    log(LogLevel::Debug, "%s:%d - WebSocket keepalive ping timeout", peer().host.c_str(), peer().port);
    fail(close_code::InternalError, "keepalive ping timeout");
    return;
  }
  if (next_ping_ms_ != 0 && now_ms >= next_ping_ms_ && pong_deadline_ms_ == 0) {
    ++ping_counter_;
    send_frame(Opcode::Ping, reinterpret_cast<const char *>(&ping_counter_), sizeof ping_counter_);
    if (settings.ping_timeout_ms > 0) {
      pong_deadline_ms_ = now_ms + settings.ping_timeout_ms;
      next_ping_ms_ = 0;  // the next ping follows the pong
    } else {
      next_ping_ms_ = now_ms + settings.ping_interval_ms;
    }
  }
}

void Session::on_output_progress() {
  if (state_ == State::Closed) return;
  if (wants_writable_ && transport_->queued_bytes() <= engine_.config().write_low_water) {
    wants_writable_ = false;
    if (observer_ != nullptr) observer_->on_writable();
    if (state_ == State::Closed) return;
  }
  // Reading paused on output resumes once it drained to the low-water mark.
  if (state_ == State::Open && transport_->queued_bytes() <= engine_.config().write_low_water &&
      !transport_->input().empty())
    process_input();
  if (state_ == State::Closed) return;
  update_reading();
  // A close that waits only for its frame to go out.
  if (state_ == State::Closing && transport_->output_idle() && close_deadline_ms_ <= engine_.loop().now_ms())
    close_now(false);
}

void Session::close_now(bool disconnected) {
  if (state_ == State::Closed) return;
  (void)disconnected;  // either way the application sees 1006, if it is still attached
  state_ = State::Closed;
  // Without a close frame from either side, the application sees 1006.
  detach(close_code::Abnormal, "");
  transport_->close();
  queue_.clear();
  queued_bytes_ = 0;
  log(LogLevel::Info, "connection closed");
  engine_.request_finished();
  engine_.retire(this);
}

}  // namespace pronghorn::ws
