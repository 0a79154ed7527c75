// The WebSocket frame codec (RFC 6455 §5).
#include "engine/ws/frame.h"

#include <cstring>

#include "engine/ws/deflate.h"

namespace pronghorn::ws {
namespace {

constexpr uint8_t kFin = 0x80;
constexpr uint8_t kRsv1 = 0x40;
constexpr uint8_t kRsv2 = 0x20;
constexpr uint8_t kRsv3 = 0x10;
constexpr uint8_t kOpcodeBits = 0x0F;
constexpr uint8_t kMaskBit = 0x80;
constexpr uint8_t kLengthBits = 0x7F;

bool is_control(Opcode op) {
  return (static_cast<uint8_t>(op) & 0x08) != 0;
}

// Copies n bytes from src to dst, XOR-ing them with the mask as it stands at
// position `pos` (0..3) of its 4-byte cycle; returns the position after.
// Eight bytes at a time with the mask rotated into a word, then bytewise.
uint8_t unmask_copy(char *dst, const char *src, size_t n, const uint8_t mask[4], uint8_t pos) {
  uint8_t rotated[8];
  for (int i = 0; i < 8; ++i) rotated[i] = mask[(pos + i) & 3];
  uint64_t word_mask;
  std::memcpy(&word_mask, rotated, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, src + i, 8);
    v ^= word_mask;
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = static_cast<char>(static_cast<uint8_t>(src[i]) ^ rotated[i & 7]);
  return static_cast<uint8_t>((pos + n) & 3);
}

}  // namespace

bool valid_close_code(uint16_t code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

MessageDecoder::Event MessageDecoder::fail(uint16_t code, const char *reason) {
  error_code_ = code;
  error_reason_ = reason;
  return Event::Error;
}

bool MessageDecoder::check_first_bytes() {
  const uint8_t b0 = header_[0], b1 = header_[1];
  const uint8_t op = b0 & kOpcodeBits;
  fin_ = (b0 & kFin) != 0;
  const bool rsv1 = (b0 & kRsv1) != 0;
  if (b0 & (kRsv2 | kRsv3)) return fail(close_code::ProtocolError, "reserved bits set"), false;
  if ((op > 0x2 && op < 0x8) || op > 0xA) return fail(close_code::ProtocolError, "invalid opcode"), false;
  opcode_ = static_cast<Opcode>(op);
  if (is_control(opcode_)) {
    if (!fin_) return fail(close_code::ProtocolError, "fragmented control frame"), false;
    if ((b1 & kLengthBits) > 125) return fail(close_code::ProtocolError, "control frame too long"), false;
    if (rsv1) return fail(close_code::ProtocolError, "reserved bits set"), false;
  } else if (opcode_ == Opcode::Continuation) {
    if (!message_open_) return fail(close_code::ProtocolError, "unexpected continuation frame"), false;
    // RFC 7692 §6.1: RSV1 marks only the first frame of a compressed message.
    if (rsv1) return fail(close_code::ProtocolError, "reserved bits set"), false;
  } else {
    if (message_open_) return fail(close_code::ProtocolError, "expected continuation frame"), false;
    if (rsv1 && inflater_ == nullptr) return fail(close_code::ProtocolError, "reserved bits set"), false;
  }
  if (!(b1 & kMaskBit)) return fail(close_code::ProtocolError, "frame not masked"), false;
  return true;
}

size_t MessageDecoder::header_size() const {
  const uint8_t len7 = header_[1] & kLengthBits;
  return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
}

bool MessageDecoder::start_payload() {
  const uint8_t len7 = header_[1] & kLengthBits;
  uint64_t length = len7;
  size_t at = 2;
  if (len7 == 126) {
    length = (uint64_t{header_[2]} << 8) | header_[3];
    at = 4;
  } else if (len7 == 127) {
    length = 0;
    for (int i = 0; i < 8; ++i) length = (length << 8) | header_[2 + i];
    at = 10;
    if (length >> 63) return fail(close_code::ProtocolError, "invalid frame length"), false;
  }
  std::memcpy(mask_, header_ + at, 4);
  mask_pos_ = 0;
  payload_left_ = length;

  if (!is_control(opcode_)) {
    if (opcode_ != Opcode::Continuation) {  // the first frame of a message
      message_open_ = true;
      message_opcode_ = opcode_;
      text_ = opcode_ == Opcode::Text;
      compressed_message_ = (header_[0] & kRsv1) != 0;
      message_.clear();
      compressed_.clear();
      utf8_.reset();
    }
    // Known before a byte of payload is read: refuse it now rather than
    // buffer up to the limit first. A compressed message is bounded both
    // before and after inflating.
    const uint64_t so_far = compressed_message_ ? compressed_.size() : message_.size();
    if (length > max_message_ || so_far > max_message_ - length)
      return fail(close_code::TooBig, "message too big"), false;
  } else {
    control_.clear();
  }
  return true;
}

bool MessageDecoder::take_payload(const char *data, size_t n) {
  std::string &dst = is_control(opcode_) ? control_ : compressed_message_ ? compressed_ : message_;
  const size_t old = dst.size();
  // resize() zero-fills cache-hot memory; the one real pass over the bytes
  // is the unmasking copy from the input.
  dst.resize(old + n);
  mask_pos_ = unmask_copy(dst.data() + old, data, n, mask_, mask_pos_);
  if (&dst == &message_ && text_ && !utf8_.feed(dst.data() + old, n)) {
    fail(close_code::InvalidData, "invalid UTF-8");
    return false;
  }
  return true;
}

MessageDecoder::Event MessageDecoder::finish_frame() {
  switch (opcode_) {
    case Opcode::Ping: return Event::Ping;
    case Opcode::Pong: return Event::Pong;
    case Opcode::Close: {
      close_reason_.clear();
      if (control_.empty()) {
        close_code_ = close_code::NoStatus;
        return Event::Close;
      }
      if (control_.size() == 1) return fail(close_code::ProtocolError, "invalid close frame");
      const auto *p = reinterpret_cast<const uint8_t *>(control_.data());
      close_code_ = static_cast<uint16_t>((p[0] << 8) | p[1]);
      if (!valid_close_code(close_code_)) return fail(close_code::ProtocolError, "invalid close code");
      std::string_view reason(control_.data() + 2, control_.size() - 2);
      if (!valid_utf8(reason)) return fail(close_code::InvalidData, "invalid UTF-8");
      close_reason_.assign(reason);
      return Event::Close;
    }
    default: break;
  }
  if (!fin_) return Event::None;  // more fragments to come
  message_open_ = false;
  if (compressed_message_) {
    message_.clear();
    Inflater::Result r = inflater_->decompress(compressed_.data(), compressed_.size(), max_message_, message_);
    compressed_.clear();
    if (r == Inflater::Result::TooBig) return fail(close_code::TooBig, "message too big");
    // A corrupt deflate stream is a protocol error; 1007 is for bad text.
    if (r != Inflater::Result::Ok) return fail(close_code::ProtocolError, "invalid compressed data");
    if (text_ && !utf8_.feed(message_.data(), message_.size())) return fail(close_code::InvalidData, "invalid UTF-8");
  }
  if (text_ && !utf8_.complete()) return fail(close_code::InvalidData, "invalid UTF-8");
  return Event::Message;
}

MessageDecoder::Event MessageDecoder::decode(const char *data, size_t len, size_t &consumed) {
  consumed = 0;
  if (error_code_ != 0) return Event::Error;  // the decoder is not to be fed after an error
  switch (delivered_) {
    case Event::Message: message_.clear(); break;
    case Event::Ping:
    case Event::Pong:
    case Event::Close: control_.clear(); break;
    default: break;
  }
  delivered_ = Event::None;

  size_t pos = 0;
  while (true) {
    if (!in_payload_) {
      // The header, byte by byte into header_ (it is at most 14 bytes),
      // judged as soon as each part of it is in.
      while (true) {
        if (pos == len) {
          consumed = len;
          return Event::None;
        }
        header_[header_len_++] = static_cast<uint8_t>(data[pos++]);
        if (header_len_ == 2 && !check_first_bytes()) break;
        if (header_len_ >= 2 && header_len_ == header_size()) break;
      }
      if (error_code_ != 0 || !start_payload()) {
        consumed = pos;
        return Event::Error;
      }
      header_len_ = 0;
      in_payload_ = true;
    }
    const size_t n = payload_left_ < len - pos ? static_cast<size_t>(payload_left_) : len - pos;
    if (n > 0) {
      if (!take_payload(data + pos, n)) {
        consumed = pos + n;
        return Event::Error;
      }
      pos += n;
      payload_left_ -= n;
    }
    if (payload_left_ > 0) {
      consumed = len;
      return Event::None;
    }
    in_payload_ = false;
    Event event = finish_frame();
    if (event != Event::None) {
      consumed = pos;
      delivered_ = event;
      return event;
    }
  }
}

void MessageDecoder::release_idle() {
  // Never what a message being assembled, or the event just returned, holds.
  // The compressed bytes of a finished message are never handed out.
  if (!message_open_) std::string().swap(compressed_);
  if (!message_open_ && delivered_ != Event::Message) std::string().swap(message_);
  const bool control_in_use = (in_payload_ && is_control(opcode_)) || delivered_ == Event::Ping ||
                              delivered_ == Event::Pong || delivered_ == Event::Close;
  if (!control_in_use) std::string().swap(control_);
  if (delivered_ != Event::Close) std::string().swap(close_reason_);
}

size_t encode_header(char *out, Opcode opcode, bool fin, bool rsv1, uint64_t length) {
  out[0] = static_cast<char>((fin ? kFin : 0) | (rsv1 ? kRsv1 : 0) | static_cast<uint8_t>(opcode));
  if (length <= 125) {
    out[1] = static_cast<char>(length);
    return 2;
  }
  if (length <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<char>(length >> 8);
    out[3] = static_cast<char>(length);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<char>(length >> (56 - 8 * i));
  return 10;
}

std::string close_payload(uint16_t code, std::string_view reason) {
  std::string out;
  if (code == 0) return out;
  out.reserve(2 + reason.size());
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xFF));
  out.append(reason);
  return out;
}

}  // namespace pronghorn::ws
