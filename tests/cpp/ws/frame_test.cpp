// Unit tests for the WebSocket frame codec (ws/frame.h): MessageDecoder fed
// client frames whole, one byte at a time and in two pieces split at every
// point; the server frame header encoder; close payloads and codes.
#include "engine/ws/frame.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "engine/ws/deflate.h"

namespace pronghorn::ws {
namespace {

using namespace std::string_literals;
using Event = MessageDecoder::Event;

constexpr std::array<uint8_t, 4> kMask = {0x37, 0xfa, 0x21, 0x3d};

// A client frame header: any flags, opcode and declared length, masked or
// not. len_form forces the length encoding: 0 the shortest, 126 or 127.
std::string frame_header(uint8_t opcode, uint64_t length, bool fin = true, uint8_t rsv = 0, bool masked = true,
                         int len_form = 0, std::array<uint8_t, 4> mask = kMask) {
  std::string h;
  h.push_back(static_cast<char>((fin ? 0x80 : 0) | (rsv << 4) | opcode));
  const uint8_t m = masked ? 0x80 : 0;
  if (len_form == 0) len_form = length <= 125 ? 0 : length <= 0xFFFF ? 126 : 127;
  if (len_form == 0) {
    h.push_back(static_cast<char>(m | length));
  } else if (len_form == 126) {
    h.push_back(static_cast<char>(m | 126));
    h.push_back(static_cast<char>(length >> 8));
    h.push_back(static_cast<char>(length));
  } else {
    h.push_back(static_cast<char>(m | 127));
    for (int i = 7; i >= 0; --i) h.push_back(static_cast<char>(length >> (8 * i)));
  }
  if (masked) h.append(reinterpret_cast<const char *>(mask.data()), 4);
  return h;
}

// A whole client frame carrying `payload` (masked with kMask unless not).
std::string frame(uint8_t opcode, std::string_view payload, bool fin = true, uint8_t rsv = 0, bool masked = true,
                  int len_form = 0) {
  std::string f = frame_header(opcode, payload.size(), fin, rsv, masked, len_form);
  for (size_t i = 0; i < payload.size(); ++i)
    f.push_back(masked ? static_cast<char>(payload[i] ^ kMask[i % 4]) : payload[i]);
  return f;
}

constexpr uint8_t kCont = 0x0, kText = 0x1, kBinary = 0x2, kClose = 0x8, kPing = 0x9, kPong = 0xA;
constexpr uint8_t kRsv1 = 4, kRsv2 = 2, kRsv3 = 1;

// What an event carried, comparable across runs.
struct Ev {
  Event type = Event::None;
  std::string data;  // message, control payload or close reason
  bool text = false;
  uint16_t code = 0;  // close or error code

  bool operator==(const Ev &) const = default;
};

std::ostream &operator<<(std::ostream &os, const Ev &e) {
  return os << "{type=" << static_cast<int>(e.type) << " text=" << e.text << " code=" << e.code << " data("
            << e.data.size() << ")=" << e.data.substr(0, 40) << "}";
}

Ev msg(std::string data, bool text = true) {
  return Ev{Event::Message, std::move(data), text, 0};
}
Ev ping(std::string data) {
  return Ev{Event::Ping, std::move(data), false, 0};
}
Ev pong(std::string data) {
  return Ev{Event::Pong, std::move(data), false, 0};
}
Ev close_ev(uint16_t code, std::string reason = "") {
  return Ev{Event::Close, std::move(reason), false, code};
}
Ev error(uint16_t code) {
  return Ev{Event::Error, "", false, code};
}

struct Options {
  uint64_t max_message = 1 << 20;
  bool inflate = false;
};

// Feeds `pieces` in order; records every event until the input ends or an error.
std::vector<Ev> feed(const std::vector<std::string_view> &pieces, const Options &options) {
  MessageDecoder decoder(options.max_message);
  Inflater inflater;
  if (options.inflate) decoder.set_inflater(&inflater);
  std::vector<Ev> events;
  for (std::string_view piece : pieces) {
    size_t off = 0;
    while (true) {
      size_t consumed = 12345;
      Event e = decoder.decode(piece.data() + off, piece.size() - off, consumed);
      EXPECT_LE(consumed, piece.size() - off);
      off += consumed;
      if (e == Event::None) {
        EXPECT_EQ(off, piece.size()) << "None must consume everything";
        break;
      }
      Ev ev;
      ev.type = e;
      switch (e) {
        case Event::Message:
          ev.data = decoder.message();
          ev.text = decoder.is_text();
          break;
        case Event::Ping:
        case Event::Pong: ev.data = decoder.control_payload(); break;
        case Event::Close:
          ev.code = decoder.close_code();
          ev.data = decoder.close_reason();
          break;
        case Event::Error:
          ev.code = decoder.error_code();
          EXPECT_NE(std::strlen(decoder.error_reason()), 0u);
          break;
        case Event::None: break;
      }
      events.push_back(ev);
      if (e == Event::Error) {
        // Stuck: fed again, the decoder still reports the error.
        size_t again = 1;
        EXPECT_EQ(decoder.decode(piece.data(), piece.size(), again), Event::Error);
        EXPECT_EQ(again, 0u);
        return events;
      }
    }
  }
  return events;
}

// The same events whether `stream` comes whole, a byte at a time, or in two
// pieces split at every point (long streams: at every point near either end
// and at a stride in between).
void expect_events(const std::string &stream, const std::vector<Ev> &expected, const Options &options = {}) {
  EXPECT_EQ(feed({stream}, options), expected) << "whole";
  std::vector<std::string_view> bytes;
  for (size_t i = 0; i < stream.size(); ++i) bytes.emplace_back(stream.data() + i, 1);
  EXPECT_EQ(feed(bytes, options), expected) << "byte by byte";
  const size_t stride = stream.size() > 4096 ? 97 : 1;
  for (size_t split = 0; split <= stream.size(); ++split) {
    if (stride > 1 && split > 256 && split + 256 < stream.size() && split % stride != 0) continue;
    std::string_view s(stream);
    std::vector<Ev> got = feed({s.substr(0, split), s.substr(split)}, options);
    EXPECT_EQ(got, expected) << "split at " << split;
    if (got != expected) return;  // one report is enough
  }
}

TEST(WsDecoder, MaskedText) {
  expect_events(frame(kText, "Hello"), {msg("Hello")});
}

TEST(WsDecoder, MaskedBinary) {
  std::string payload = "\x00\x01\xff\x80 binary \x00"s;
  expect_events(frame(kBinary, payload), {msg(payload, false)});
}

TEST(WsDecoder, UnmaskingAtEveryLengthAndOffset) {
  // Lengths around the 8-byte words, split everywhere: the mask position
  // carried between pieces must line up.
  for (size_t n = 0; n < 40; ++n) {
    std::string payload;
    for (size_t i = 0; i < n; ++i) payload.push_back(static_cast<char>('a' + i % 26));
    expect_events(frame(kBinary, payload), {msg(payload, false)});
  }
}

TEST(WsDecoder, UnmaskedFrameIsProtocolError) {
  expect_events(frame(kText, "Hello", true, 0, false), {error(1002)});
  expect_events(frame(kPing, "", true, 0, false), {error(1002)});
}

TEST(WsDecoder, SixteenBitLength) {
  std::string p126(126, 'x'), p65535(65535, 'y');
  expect_events(frame(kBinary, p126), {msg(p126, false)});
  expect_events(frame(kBinary, p65535), {msg(p65535, false)});
  // A short payload in the 16-bit form (not minimal: accepted).
  expect_events(frame(kText, "hi", true, 0, true, 126), {msg("hi")});
}

TEST(WsDecoder, SixtyFourBitLength) {
  std::string p(70000, 'z');
  p[69999] = '!';
  expect_events(frame(kBinary, p), {msg(p, false)});
  expect_events(frame(kText, "hi", true, 0, true, 127), {msg("hi")});
}

TEST(WsDecoder, SixtyFourBitLengthWithTopBitIsProtocolError) {
  std::string h = frame_header(kBinary, 0x8000000000000005ULL, true, 0, true, 127);
  expect_events(h, {error(1002)});
}

TEST(WsDecoder, FragmentedWithPingBetween) {
  std::string s = frame(kText, "Hel", false) + frame(kPing, "are you there") + frame(kCont, "lo, ", false) +
                  frame(kPong, "") + frame(kCont, "world");
  expect_events(s, {ping("are you there"), pong(""), msg("Hello, world")});
}

TEST(WsDecoder, FragmentedBinaryThenText) {
  std::string s = frame(kBinary, "ab", false) + frame(kCont, "", false) + frame(kCont, "cd") + frame(kText, "next");
  expect_events(s, {msg("abcd", false), msg("next")});
}

TEST(WsDecoder, ZeroLengthMessages) {
  std::string s = frame(kText, "") + frame(kBinary, "") + frame(kText, "", false) + frame(kCont, "");
  expect_events(s, {msg(""), msg("", false), msg("")});
}

TEST(WsDecoder, ContinuationWithoutStart) {
  expect_events(frame(kCont, "x"), {error(1002)});
  expect_events(frame(kText, "a") + frame(kCont, "b"), {msg("a"), error(1002)});
}

TEST(WsDecoder, NewMessageWhileOneIsOpen) {
  expect_events(frame(kText, "a", false) + frame(kText, "b"), {error(1002)});
  expect_events(frame(kBinary, "a", false) + frame(kBinary, "b"), {error(1002)});
}

TEST(WsDecoder, ControlFrameTooLong) {
  std::string p125(125, 'p'), p126(126, 'p');
  expect_events(frame(kPing, p125), {ping(p125)});
  expect_events(frame(kPing, p126), {error(1002)});
  expect_events(frame(kClose, "\x03\xe8" + std::string(124, 'r')), {error(1002)});
  // 125 bytes in the 16-bit form: the 7-bit field says 126, too long.
  expect_events(frame(kPong, "x", true, 0, true, 126), {error(1002)});
}

TEST(WsDecoder, FragmentedControlFrame) {
  expect_events(frame(kPing, "a", false), {error(1002)});
  expect_events(frame(kClose, "", false), {error(1002)});
}

TEST(WsDecoder, ReservedBits) {
  expect_events(frame(kText, "a", true, kRsv2), {error(1002)});
  expect_events(frame(kText, "a", true, kRsv3), {error(1002)});
  expect_events(frame(kText, "a", true, kRsv1), {error(1002)});  // no inflater
  expect_events(frame(kPing, "a", true, kRsv1), {error(1002)});
  Options with_inflater;
  with_inflater.inflate = true;
  expect_events(frame(kText, "a", true, kRsv2), {error(1002)}, with_inflater);
  expect_events(frame(kPing, "a", true, kRsv1), {error(1002)}, with_inflater);
}

TEST(WsDecoder, BadOpcodes) {
  for (uint8_t op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
    SCOPED_TRACE(static_cast<int>(op));
    expect_events(frame(op, "x"), {error(1002)});
  }
}

TEST(WsDecoder, OneFrameOverMaxIsTooBigBeforeItsPayload) {
  Options small;
  small.max_message = 100;
  std::string exact(100, 'e');
  expect_events(frame(kBinary, exact), {msg(exact, false)}, small);
  expect_events(frame(kBinary, std::string(101, 'e')), {error(1009)}, small);

  // Only the header is given: the error is already known.
  for (uint64_t length : {101ULL, 1000ULL, 70000ULL, 1ULL << 40}) {
    std::string header = frame_header(kBinary, length);
    MessageDecoder decoder(100);
    size_t consumed = 0;
    ASSERT_EQ(decoder.decode(header.data(), header.size(), consumed), Event::Error) << length;
    EXPECT_EQ(consumed, header.size());
    EXPECT_EQ(decoder.error_code(), 1009);
    EXPECT_EQ(decoder.buffered(), MessageDecoder(100).buffered());  // nothing was allocated for it
  }
}

TEST(WsDecoder, FragmentsOverMaxAreTooBigBeforeThePayload) {
  Options small;
  small.max_message = 100;
  std::string s = frame(kText, std::string(60, 'a'), false) + frame(kCont, std::string(40, 'b'));
  expect_events(s, {msg(std::string(60, 'a') + std::string(40, 'b'))}, small);
  s = frame(kText, std::string(60, 'a'), false) + frame(kCont, std::string(41, 'b'));
  expect_events(s, {error(1009)}, small);

  // The first fragment, then only the header of the second.
  MessageDecoder decoder(100);
  std::string first = frame(kText, std::string(60, 'a'), false);
  std::string header = frame_header(kCont, 41);
  size_t consumed = 0;
  ASSERT_EQ(decoder.decode(first.data(), first.size(), consumed), Event::None);
  ASSERT_EQ(decoder.decode(header.data(), header.size(), consumed), Event::Error);
  EXPECT_EQ(consumed, header.size());
  EXPECT_EQ(decoder.error_code(), 1009);
}

TEST(WsDecoder, InvalidUtf8FailsInTheFirstBadFragment) {
  // The message never ends: the error comes from the fragment itself.
  std::string s = frame(kText, "ok", false) + frame(kCont, "ab\xff", false);
  expect_events(s, {error(1007)});
  expect_events(frame(kText, "\xed\xa0\x80", false), {error(1007)});  // a surrogate
  // Binary messages are not checked.
  expect_events(frame(kBinary, "\xff"), {msg("\xff", false)});
}

TEST(WsDecoder, CodePointSplitAcrossFragments) {
  std::string s = frame(kText, "price: \xe2\x82", false) + frame(kPing, "") + frame(kCont, "\xac", false) +
                  frame(kCont, "\xf0\x9f", false) + frame(kCont, "\x98\x80");
  expect_events(s, {ping(""), msg("price: \xe2\x82\xac\xf0\x9f\x98\x80")});
}

TEST(WsDecoder, TruncatedUtf8AtTheEnd) {
  expect_events(frame(kText, "a\xe2\x82"), {error(1007)});
  expect_events(frame(kText, "a\xe2", false) + frame(kCont, "\x82"), {error(1007)});
}

TEST(WsDecoder, CloseWithoutPayload) {
  expect_events(frame(kClose, ""), {close_ev(1005)});
}

TEST(WsDecoder, CloseWithCodeAndReason) {
  expect_events(frame(kClose, "\x03\xe8"), {close_ev(1000)});
  expect_events(frame(kClose, "\x0f\xa0going \xc3\xa9"), {close_ev(4000, "going \xc3\xa9")});
  // A close may come between the fragments of a message.
  expect_events(frame(kText, "a", false) + frame(kClose, "\x03\xe9"), {close_ev(1001)});
}

TEST(WsDecoder, OneByteCloseIsProtocolError) {
  expect_events(frame(kClose, "\x03"), {error(1002)});
}

TEST(WsDecoder, InvalidCloseCodes) {
  for (uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535}) {
    SCOPED_TRACE(code);
    std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    expect_events(frame(kClose, payload), {error(1002)});
  }
  for (uint16_t code : {1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999}) {
    SCOPED_TRACE(code);
    expect_events(frame(kClose, close_payload(code, "r")), {close_ev(code, "r")});
  }
}

TEST(WsDecoder, CloseReasonNotUtf8) {
  expect_events(frame(kClose, "\x03\xe8\xc0\xaf"), {error(1007)});
  expect_events(frame(kClose,
                      "\x03\xe8"
                      "abc\xe2\x82"),
                {error(1007)});
}

TEST(WsDecoder, PingAndPongPayloads) {
  std::string bin = "\x00\xff\x10"s;
  expect_events(frame(kPing, bin) + frame(kPong, "pong") + frame(kPing, ""), {ping(bin), pong("pong"), ping("")});
}

TEST(WsDecoder, SeveralFramesInOneBufferStopAfterEachEvent) {
  std::string a = frame(kText, "one"), b = frame(kPing, "p"), c = frame(kBinary, "three");
  std::string s = a + b + c;
  MessageDecoder decoder(1000);
  size_t consumed = 0, off = 0;
  ASSERT_EQ(decoder.decode(s.data(), s.size(), consumed), Event::Message);
  EXPECT_EQ(consumed, a.size());
  EXPECT_EQ(decoder.message(), "one");
  std::string moved = std::move(decoder.message());  // the caller may take it
  EXPECT_EQ(moved, "one");
  off += consumed;
  ASSERT_EQ(decoder.decode(s.data() + off, s.size() - off, consumed), Event::Ping);
  EXPECT_EQ(consumed, b.size());
  EXPECT_EQ(decoder.control_payload(), "p");
  off += consumed;
  ASSERT_EQ(decoder.decode(s.data() + off, s.size() - off, consumed), Event::Message);
  EXPECT_EQ(consumed, c.size());
  EXPECT_FALSE(decoder.is_text());
  EXPECT_EQ(decoder.message(), "three");
  off += consumed;
  ASSERT_EQ(decoder.decode(s.data() + off, s.size() - off, consumed), Event::None);
  EXPECT_EQ(consumed, 0u);
  EXPECT_TRUE(decoder.message().empty());  // cleared by the next decode()
}

TEST(WsDecoder, ControlPayloadClearedOnNextDecode) {
  std::string s = frame(kPing, "abc");
  MessageDecoder decoder(1000);
  size_t consumed = 0;
  ASSERT_EQ(decoder.decode(s.data(), s.size(), consumed), Event::Ping);
  ASSERT_EQ(decoder.decode(s.data(), 0, consumed), Event::None);
  EXPECT_TRUE(decoder.control_payload().empty());
}

TEST(WsDecoder, ReleaseIdleFreesBuffersBetweenMessages) {
  std::string s = frame(kBinary, std::string(5000, 'x'));
  MessageDecoder decoder(100000);
  size_t consumed = 0;
  ASSERT_EQ(decoder.decode(s.data(), s.size(), consumed), Event::Message);
  EXPECT_GE(decoder.buffered(), 5000u);
  ASSERT_EQ(decoder.decode(s.data(), 0, consumed), Event::None);
  decoder.release_idle();
  EXPECT_LT(decoder.buffered(), 100u);
  // Not while a message is being assembled.
  std::string part = frame(kBinary, std::string(5000, 'y'), false);
  ASSERT_EQ(decoder.decode(part.data(), part.size(), consumed), Event::None);
  decoder.release_idle();
  std::string end = frame(kCont, "z");
  ASSERT_EQ(decoder.decode(end.data(), end.size(), consumed), Event::Message);
  EXPECT_EQ(decoder.message(), std::string(5000, 'y') + "z");
}

// permessage-deflate: what a client sends (RFC 7692 §7.2.1).
std::string compress(std::string_view text, int window_bits = 15) {
  Deflater deflater;
  std::string out;
  EXPECT_TRUE(deflater.compress(text.data(), text.size(), window_bits, out));
  return out;
}

TEST(WsDecoderDeflate, CompressedRoundTrip) {
  Options options;
  options.inflate = true;
  std::string text;
  for (int i = 0; i < 50; ++i) text += "Hello, compressed world \xc3\xa9! ";
  std::string z = compress(text);
  ASSERT_LT(z.size(), text.size() / 4);
  std::string bin = "\x00\x01\x02 binary binary binary"s;
  std::string s = frame(kText, z, true, kRsv1) + frame(kBinary, compress(bin), true, kRsv1) + frame(kText, "plain") +
                  frame(kText, compress(""), true, kRsv1);
  expect_events(s, {msg(text), msg(bin, false), msg("plain"), msg("")}, options);
}

TEST(WsDecoderDeflate, CompressedFragmented) {
  Options options;
  options.inflate = true;
  std::string text(3000, 'q');
  std::string z = compress(text + "end");
  ASSERT_GT(z.size(), 4u);
  std::string s = frame(kText, z.substr(0, 3), false, kRsv1) + frame(kPing, "mid") +
                  frame(kCont, z.substr(3, 1), false) + frame(kCont, z.substr(4));
  expect_events(s, {ping("mid"), msg(text + "end")}, options);
}

TEST(WsDecoderDeflate, Rsv1WithoutInflaterIsProtocolError) {
  expect_events(frame(kText, compress("hello"), true, kRsv1), {error(1002)});
}

TEST(WsDecoderDeflate, Rsv1OnContinuationIsProtocolError) {
  Options options;
  options.inflate = true;
  std::string z = compress("hello");
  expect_events(frame(kText, z.substr(0, 2), false, kRsv1) + frame(kCont, z.substr(2), true, kRsv1), {error(1002)},
                options);
  expect_events(frame(kText, "a", false) + frame(kCont, "b", true, kRsv1), {error(1002)}, options);
}

TEST(WsDecoderDeflate, ZipBombIsTooBig) {
  const size_t max = 256 * 1024;
  std::string zeros(8 * 1024 * 1024, '\0');
  std::string z = compress(zeros);
  ASSERT_LT(z.size(), 16u * 1024);  // a few KB on the wire
  std::string s = frame(kBinary, z, true, kRsv1);
  MessageDecoder decoder(max);
  Inflater inflater;
  decoder.set_inflater(&inflater);
  size_t consumed = 0;
  ASSERT_EQ(decoder.decode(s.data(), s.size(), consumed), Event::Error);
  EXPECT_EQ(decoder.error_code(), 1009);
  EXPECT_LT(decoder.message().capacity(), max + 16 * 1024 + 64);
}

TEST(WsDecoderDeflate, InflatedSizeAtTheLimit) {
  Options options;
  options.inflate = true;
  options.max_message = 1000;
  std::string exact(1000, 'a');
  expect_events(frame(kBinary, compress(exact), true, kRsv1), {msg(exact, false)}, options);
  expect_events(frame(kBinary, compress(exact + "b"), true, kRsv1), {error(1009)}, options);
}

TEST(WsDecoderDeflate, CompressedSizeOverMaxIsTooBigBeforeThePayload) {
  MessageDecoder decoder(100);
  Inflater inflater;
  decoder.set_inflater(&inflater);
  std::string header = frame_header(kBinary, 101, true, kRsv1);
  size_t consumed = 0;
  ASSERT_EQ(decoder.decode(header.data(), header.size(), consumed), Event::Error);
  EXPECT_EQ(decoder.error_code(), 1009);
}

TEST(WsDecoderDeflate, CorruptDataIsProtocolError) {
  Options options;
  options.inflate = true;
  expect_events(frame(kText, "\xff\xff\xff\xff", true, kRsv1), {error(1002)}, options);  // reserved block type
  // A stored block whose length and its complement disagree.
  expect_events(frame(kBinary, "\x00\x05\x00\x00\x00hello"s, true, kRsv1), {error(1002)}, options);
  // A back-reference before the start of the message (compressed against a
  // preset dictionary the receiver does not have): with no context takeover
  // there is no earlier window to point into.
  z_stream zs{};
  ASSERT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  const std::string dict = "a dictionary of words and more words";
  ASSERT_EQ(deflateSetDictionary(&zs, reinterpret_cast<const Bytef *>(dict.data()), dict.size()), Z_OK);
  std::string in = "words and more words of a dictionary", z(256, '\0');
  zs.next_in = reinterpret_cast<Bytef *>(in.data());
  zs.avail_in = in.size();
  zs.next_out = reinterpret_cast<Bytef *>(z.data());
  zs.avail_out = z.size();
  ASSERT_EQ(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
  z.resize(z.size() - zs.avail_out - 4);
  deflateEnd(&zs);
  expect_events(frame(kText, z, true, kRsv1), {error(1002)}, options);
}

TEST(WsDecoderDeflate, CompressedInvalidUtf8) {
  Options options;
  options.inflate = true;
  expect_events(frame(kText, compress("ab\xc0\xaf"), true, kRsv1), {error(1007)}, options);
  expect_events(frame(kText, compress("ab\xe2\x82"), true, kRsv1), {error(1007)}, options);
  expect_events(frame(kBinary, compress("ab\xc0\xaf"), true, kRsv1), {msg("ab\xc0\xaf", false)}, options);
}

TEST(WsEncode, HeaderLengths) {
  char out[kMaxServerHeader];
  ASSERT_EQ(encode_header(out, Opcode::Text, true, false, 0), 2u);
  EXPECT_EQ(std::string(out, 2), "\x81\x00"s);
  ASSERT_EQ(encode_header(out, Opcode::Binary, true, false, 125), 2u);
  EXPECT_EQ(std::string(out, 2), "\x82\x7d"s);
  ASSERT_EQ(encode_header(out, Opcode::Binary, true, false, 126), 4u);
  EXPECT_EQ(std::string(out, 4), "\x82\x7e\x00\x7e"s);
  ASSERT_EQ(encode_header(out, Opcode::Binary, false, false, 65535), 4u);
  EXPECT_EQ(std::string(out, 4), "\x02\x7e\xff\xff"s);
  ASSERT_EQ(encode_header(out, Opcode::Text, true, true, 65536), 10u);
  EXPECT_EQ(std::string(out, 10), "\xc1\x7f\x00\x00\x00\x00\x00\x01\x00\x00"s);
  ASSERT_EQ(encode_header(out, Opcode::Continuation, true, false, 0x0102030405060708ULL), 10u);
  EXPECT_EQ(std::string(out, 10), "\x80\x7f\x01\x02\x03\x04\x05\x06\x07\x08"s);
  ASSERT_EQ(encode_header(out, Opcode::Close, true, false, 2), 2u);
  EXPECT_EQ(std::string(out, 2), "\x88\x02"s);
  ASSERT_EQ(encode_header(out, Opcode::Pong, true, false, 3), 2u);
  EXPECT_EQ(std::string(out, 2), "\x8a\x03"s);
}

TEST(WsEncode, ClosePayload) {
  EXPECT_EQ(close_payload(0, "ignored"), "");
  EXPECT_EQ(close_payload(1000, ""), "\x03\xe8"s);
  EXPECT_EQ(close_payload(1011, "oops"), "\x03\xf3oops"s);
  EXPECT_EQ(close_payload(4999, "x"), "\x13\x87x"s);
}

TEST(WsEncode, ValidCloseCode) {
  for (int code = 0; code < 65536; ++code) {
    bool expected = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
    ASSERT_EQ(valid_close_code(static_cast<uint16_t>(code)), expected) << code;
  }
  EXPECT_FALSE(valid_close_code(1004));
  EXPECT_FALSE(valid_close_code(1005));
  EXPECT_FALSE(valid_close_code(1006));
  EXPECT_FALSE(valid_close_code(1015));
  EXPECT_TRUE(valid_close_code(1012));
}

}  // namespace
}  // namespace pronghorn::ws
