// The WebSocket frame codec (RFC 6455 §5), with no I/O: a decoder that turns
// a client's bytes into whole messages and control frames, and the encoder
// of the server's frames. The session (ws/session.h) drives it over a
// Transport.
//
// Return contract: MessageDecoder::decode() reports one event at a time and
// how many input bytes it consumed; after Event::Error the connection must be
// failed with error_code() (1002, 1007 or 1009) and the decoder not fed again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/ws/utf8.h"

namespace pronghorn::ws {

class Inflater;

enum class Opcode : uint8_t { Continuation = 0x0, Text = 0x1, Binary = 0x2, Close = 0x8, Ping = 0x9, Pong = 0xA };

// Close codes (RFC 6455 §7.4.1, and 1012 from the IANA registry).
namespace close_code {
constexpr uint16_t Normal = 1000;
constexpr uint16_t GoingAway = 1001;
constexpr uint16_t ProtocolError = 1002;
constexpr uint16_t NoStatus = 1005;  // never sent: "the close frame had no code"
constexpr uint16_t Abnormal = 1006;  // never sent: "the connection dropped without a close frame"
constexpr uint16_t InvalidData = 1007;
constexpr uint16_t TooBig = 1009;
constexpr uint16_t InternalError = 1011;
constexpr uint16_t ServiceRestart = 1012;
}  // namespace close_code

// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4):
// 1000-1003, 1007-1011 (1012-1014 too, registered since), 3000-4999.
bool valid_close_code(uint16_t code);

// Decodes the frames a client sends into messages. Client frames must be
// masked; text messages and close reasons must be UTF-8 (checked as the
// bytes arrive, across fragments); control frames carry at most 125 bytes,
// are never fragmented and may come between the fragments of a message.
class MessageDecoder {
 public:
  enum class Event {
    None,     // every byte given was consumed; more are needed
    Message,  // a whole data message: is_text(), message()
    Ping,     // control_payload()
    Pong,     // control_payload()
    Close,    // close_code() (NoStatus when the frame had none), close_reason()
    Error     // error_code(), error_reason(): fail the connection
  };

  // max_message: the largest message (after decompression) accepted, in
  // bytes; a longer one is Error 1009 as soon as its size is known.
  explicit MessageDecoder(uint64_t max_message) : max_message_(max_message) {}

  // permessage-deflate was negotiated: RSV1 on the first frame of a data
  // message means it is compressed; it is inflated with `inflater` (whose
  // output is bounded by max_message). nullptr: RSV1 is a protocol error.
  void set_inflater(Inflater *inflater) { inflater_ = inflater; }

  // Decodes from data[0, len). Returns the first event found and sets
  // `consumed` to the bytes used up to it (for Event::None, all of them:
  // a partial frame is kept inside the decoder). Call again with the rest.
  Event decode(const char *data, size_t len, size_t &consumed);

  // After Event::Message: the message's payload (unmasked and, if it was
  // compressed, inflated). The caller may move it out; it is cleared on the
  // next decode().
  bool is_text() const { return text_; }
  std::string &message() { return message_; }
  // After Ping or Pong.
  std::string_view control_payload() const { return control_; }
  // After Close.
  uint16_t close_code() const { return close_code_; }
  std::string_view close_reason() const { return close_reason_; }
  // After Error.
  uint16_t error_code() const { return error_code_; }
  const char *error_reason() const { return error_reason_; }

  // Bytes held for a message being assembled (for memory accounting).
  size_t buffered() const { return message_.capacity() + compressed_.capacity(); }
  // Frees what an idle connection does not need.
  void release_idle();

 private:
  uint64_t max_message_;
  Inflater *inflater_ = nullptr;
  // Implementation state (frame header being read, mask, position in the
  // payload, message in progress, UTF-8 state...). Owned by frame.cpp.
  uint8_t header_[14] = {};
  uint8_t header_len_ = 0;
  uint8_t mask_[4] = {};
  uint8_t mask_pos_ = 0;
  Opcode opcode_ = Opcode::Continuation;          // of the frame being read
  Opcode message_opcode_ = Opcode::Continuation;  // Text/Binary while a fragmented message is open
  bool fin_ = false;
  bool in_payload_ = false;
  bool message_open_ = false;
  bool compressed_message_ = false;
  uint64_t payload_left_ = 0;
  bool text_ = false;
  std::string message_;
  std::string compressed_;
  std::string control_;
  uint16_t close_code_ = close_code::NoStatus;
  std::string close_reason_;
  uint16_t error_code_ = 0;
  const char *error_reason_ = "";
  Utf8Validator utf8_;
  // The last event returned: its payload is cleared on the next decode().
  Event delivered_ = Event::None;

  Event fail(uint16_t code, const char *reason);
  // header_[0..1] are in: judges the opcode, the flags, the mask bit and the
  // 7-bit length.
  bool check_first_bytes();
  // The size of the header whose first two bytes are in header_.
  size_t header_size() const;
  // The whole header is in: the length (and the size limit), the mask, the
  // state of the message.
  bool start_payload();
  // Unmasks payload bytes into their buffer. False: invalid UTF-8.
  bool take_payload(const char *data, size_t n);
  Event finish_frame();
};

// The largest server frame header: 2 bytes + 8 of extended length (server
// frames are not masked).
constexpr size_t kMaxServerHeader = 10;

// Writes the header of a server frame (unmasked) carrying `length` payload
// bytes into `out` (room for kMaxServerHeader); returns its size.
size_t encode_header(char *out, Opcode opcode, bool fin, bool rsv1, uint64_t length);

// The payload of a close frame: the code in network order, then `reason`
// (the caller keeps it within 123 bytes of UTF-8). Code 0: an empty payload.
std::string close_payload(uint16_t code, std::string_view reason);

}  // namespace pronghorn::ws
