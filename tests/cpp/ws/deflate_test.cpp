// Unit tests for permessage-deflate (ws/deflate.h): the negotiation of the
// extension's parameters, and the Deflater / Inflater pair.
#include "engine/ws/deflate.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pronghorn::ws {
namespace {

struct Negotiated {
  bool accepted = false;
  DeflateParams params;
  std::string response;
};

Negotiated negotiate(std::vector<std::string_view> offers) {
  Negotiated n;
  n.params.server_max_window_bits = 1;  // must be overwritten
  n.response = "garbage";
  n.accepted = negotiate_deflate(offers.data(), offers.size(), n.params, n.response);
  return n;
}

constexpr std::string_view kBase = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

TEST(DeflateNegotiate, PlainOffer) {  // Firefox's offer
  Negotiated n = negotiate({"permessage-deflate"});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, kBase);
  EXPECT_TRUE(n.params.server_no_context_takeover);
  EXPECT_TRUE(n.params.client_no_context_takeover);
  EXPECT_EQ(n.params.server_max_window_bits, 15);
  EXPECT_EQ(n.params.client_max_window_bits, 15);
}

TEST(DeflateNegotiate, ClientMaxWindowBitsWithoutValue) {  // Chromium's offer
  Negotiated n = negotiate({"permessage-deflate; client_max_window_bits"});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, std::string(kBase) + "; client_max_window_bits=15");
  EXPECT_EQ(n.params.client_max_window_bits, 15);
  EXPECT_EQ(n.params.server_max_window_bits, 15);
}

TEST(DeflateNegotiate, BothWindowBits) {
  Negotiated n = negotiate({"permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, std::string(kBase) + "; server_max_window_bits=10; client_max_window_bits=12");
  EXPECT_EQ(n.params.server_max_window_bits, 10);
  EXPECT_EQ(n.params.client_max_window_bits, 12);
}

TEST(DeflateNegotiate, NoContextTakeoverOffered) {
  Negotiated n = negotiate({"permessage-deflate; client_no_context_takeover; server_no_context_takeover"});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, kBase);
}

TEST(DeflateNegotiate, WindowBitsEightIsNine) {
  Negotiated n = negotiate({"permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"});
  ASSERT_TRUE(n.accepted);
  // Echoed as offered (a 9-bit zlib window never reaches past 250 bytes).
  EXPECT_EQ(n.response, std::string(kBase) + "; server_max_window_bits=8; client_max_window_bits=8");
  EXPECT_EQ(n.params.server_max_window_bits, 9);
  EXPECT_EQ(n.params.client_max_window_bits, 9);
}

TEST(DeflateNegotiate, UnknownParameterDeclinedThenNextOffer) {
  Negotiated n = negotiate({"permessage-deflate; foo=1, permessage-deflate; client_max_window_bits"});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, std::string(kBase) + "; client_max_window_bits=15");
  // The next offer may be on another header line.
  n = negotiate({"permessage-deflate; mystery", "permessage-deflate; server_max_window_bits=11"});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, std::string(kBase) + "; server_max_window_bits=11");
  EXPECT_EQ(n.params.server_max_window_bits, 11);
}

TEST(DeflateNegotiate, DuplicateParameterDeclined) {
  EXPECT_FALSE(negotiate({"permessage-deflate; client_max_window_bits; client_max_window_bits=10"}).accepted);
  EXPECT_FALSE(negotiate({"permessage-deflate; server_no_context_takeover; server_no_context_takeover"}).accepted);
  EXPECT_FALSE(negotiate({"permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"}).accepted);
}

TEST(DeflateNegotiate, BadValuesDeclined) {
  for (std::string_view offer : {
           "permessage-deflate; server_max_window_bits=7",
           "permessage-deflate; server_max_window_bits=16",
           "permessage-deflate; server_max_window_bits=abc",
           "permessage-deflate; server_max_window_bits=010",
           "permessage-deflate; server_max_window_bits=",
           "permessage-deflate; server_max_window_bits",  // a value is required
           "permessage-deflate; client_max_window_bits=7",
           "permessage-deflate; client_max_window_bits=16",
           "permessage-deflate; client_max_window_bits=\"abc\"",
           "permessage-deflate; client_max_window_bits=\"10",
           "permessage-deflate; server_no_context_takeover=1",
           "permessage-deflate; client_no_context_takeover=\"\"",
       }) {
    Negotiated n = negotiate({offer});
    EXPECT_FALSE(n.accepted) << offer;
    EXPECT_EQ(n.response, "") << offer;
    EXPECT_EQ(n.params.server_max_window_bits, 15) << offer;  // left at the defaults
  }
}

TEST(DeflateNegotiate, QuotedValue) {
  Negotiated n = negotiate({"permessage-deflate; client_max_window_bits=\"10\"; server_max_window_bits=\"9\""});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, std::string(kBase) + "; server_max_window_bits=9; client_max_window_bits=10");
  EXPECT_EQ(n.params.client_max_window_bits, 10);
  EXPECT_EQ(n.params.server_max_window_bits, 9);
}

TEST(DeflateNegotiate, OtherExtensionsIgnored) {
  EXPECT_FALSE(negotiate({"x-webkit-deflate-frame"}).accepted);
  EXPECT_FALSE(negotiate({"x-webkit-deflate-frame; no_context_takeover"}).accepted);
  Negotiated n =
      negotiate({"x-webkit-deflate-frame, foo; bar=\"a, b; c\"", " permessage-deflate ;client_max_window_bits "});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, std::string(kBase) + "; client_max_window_bits=15");
}

TEST(DeflateNegotiate, NoOffer) {
  EXPECT_FALSE(negotiate({}).accepted);
  EXPECT_FALSE(negotiate({""}).accepted);
  EXPECT_FALSE(negotiate({" , ,"}).accepted);
  EXPECT_FALSE(negotiate({"permessage-deflate-x"}).accepted);
}

TEST(DeflateNegotiate, CaseInsensitiveNames) {
  Negotiated n = negotiate({"PerMessage-Deflate; Client_Max_Window_Bits"});
  ASSERT_TRUE(n.accepted);
  EXPECT_EQ(n.response, std::string(kBase) + "; client_max_window_bits=15");
}

// Raw inflate with zlib itself (the reference for Deflater's output).
std::string zlib_inflate(const std::string &compressed, int window_bits) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, -window_bits), Z_OK);
  std::string in = compressed + std::string("\x00\x00\xff\xff", 4);
  std::string out(1 << 22, '\0');
  zs.next_in = reinterpret_cast<Bytef *>(in.data());
  zs.avail_in = in.size();
  zs.next_out = reinterpret_cast<Bytef *>(out.data());
  zs.avail_out = out.size();
  int rc = inflate(&zs, Z_SYNC_FLUSH);
  EXPECT_TRUE(rc == Z_OK || rc == Z_STREAM_END) << rc;
  out.resize(out.size() - zs.avail_out);
  inflateEnd(&zs);
  return out;
}

std::vector<std::string> sample_messages() {
  std::string long_text;
  for (int i = 0; i < 2000; ++i) long_text += "message " + std::to_string(i % 37) + " of the stream; ";
  std::string binary;
  for (int i = 0; i < 100000; ++i) binary.push_back(static_cast<char>((i * 7919) >> 3));
  return {"Hello", "", "Hello", long_text, binary, std::string(300000, 'a'), "x"};
}

TEST(DeflateCodec, RoundTripSeveralMessages) {
  for (int bits : {9, 10, 15}) {
    SCOPED_TRACE(bits);
    Deflater deflater;
    Inflater inflater;
    for (const std::string &m : sample_messages()) {
      std::string z = "prefix";  // compress() and decompress() append
      ASSERT_TRUE(deflater.compress(m.data(), m.size(), bits, z));
      ASSERT_EQ(z.substr(0, 6), "prefix");
      std::string body = z.substr(6);
      EXPECT_NE(body.substr(body.size() >= 4 ? body.size() - 4 : 0), std::string("\x00\x00\xff\xff", 4));
      // Each message stands alone (no context takeover): zlib inflates it
      // with a fresh stream of the same window.
      EXPECT_EQ(zlib_inflate(body, bits), m);
      std::string out = "keep";
      ASSERT_EQ(inflater.decompress(body.data(), body.size(), m.size(), out), Inflater::Result::Ok);
      EXPECT_EQ(out, "keep" + m);
    }
  }
}

TEST(DeflateCodec, CompressedOutputIsIndependentOfHistory) {
  // Reset after each message: the same input compresses the same way.
  Deflater deflater;
  std::string a, b, c;
  ASSERT_TRUE(deflater.compress("hello hello hello", 17, 15, a));
  ASSERT_TRUE(deflater.compress("other words", 11, 15, b));
  ASSERT_TRUE(deflater.compress("hello hello hello", 17, 15, c));
  EXPECT_EQ(a, c);
}

TEST(DeflateCodec, WindowBitsChangeBetweenCalls) {
  Deflater deflater;
  std::string text(5000, 'b');
  for (int i = 0; i < 5000; i += 7) text[i] = static_cast<char>('a' + i % 26);
  for (int bits : {15, 9, 12, 8, 15}) {
    std::string z;
    ASSERT_TRUE(deflater.compress(text.data(), text.size(), bits, z));
    EXPECT_EQ(zlib_inflate(z, bits < 9 ? 9 : bits), text) << bits;
  }
}

TEST(DeflateCodec, EmptyMessageIsOneByte) {
  Deflater deflater;
  std::string z;
  ASSERT_TRUE(deflater.compress("", 0, 15, z));
  EXPECT_EQ(z, std::string("\x00", 1));  // RFC 7692 §7.2.3.6
  Inflater inflater;
  std::string out;
  EXPECT_EQ(inflater.decompress(z.data(), z.size(), 0, out), Inflater::Result::Ok);
  EXPECT_EQ(out, "");
  EXPECT_EQ(inflater.decompress("", 0, 0, out), Inflater::Result::Ok);
  EXPECT_EQ(out, "");
}

TEST(DeflateCodec, InflateZlibStreams) {
  // A final block (Z_FINISH), as some clients send, and a sync-flushed one.
  std::string text = "the quick brown fox jumps over the lazy dog; the quick brown fox";
  for (int flush : {Z_FINISH, Z_SYNC_FLUSH}) {
    z_stream zs{};
    ASSERT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    std::string z(1024, '\0');
    zs.next_in = reinterpret_cast<Bytef *>(text.data());
    zs.avail_in = text.size();
    zs.next_out = reinterpret_cast<Bytef *>(z.data());
    zs.avail_out = z.size();
    ASSERT_NE(deflate(&zs, flush), Z_STREAM_ERROR);
    z.resize(z.size() - zs.avail_out);
    deflateEnd(&zs);
    if (flush == Z_SYNC_FLUSH) z.resize(z.size() - 4);
    Inflater inflater;
    std::string out;
    ASSERT_EQ(inflater.decompress(z.data(), z.size(), 1000, out), Inflater::Result::Ok);
    EXPECT_EQ(out, text);
  }
}

TEST(DeflateCodec, InflateLimit) {
  Deflater deflater;
  Inflater inflater;
  std::string text(100000, 'q');
  std::string z;
  ASSERT_TRUE(deflater.compress(text.data(), text.size(), 15, z));
  std::string out;
  EXPECT_EQ(inflater.decompress(z.data(), z.size(), 100000, out), Inflater::Result::Ok);
  EXPECT_EQ(out, text);
  out.clear();
  EXPECT_EQ(inflater.decompress(z.data(), z.size(), 99999, out), Inflater::Result::TooBig);
  // Usable again after TooBig.
  out.clear();
  EXPECT_EQ(inflater.decompress(z.data(), z.size(), 100000, out), Inflater::Result::Ok);
  EXPECT_EQ(out, text);
}

TEST(DeflateCodec, ZipBombCostsAtMostTheLimitAndAChunk) {
  Deflater deflater;
  std::string zeros(64 << 20, '\0');
  std::string z;
  ASSERT_TRUE(deflater.compress(zeros.data(), zeros.size(), 15, z));
  ASSERT_LT(z.size(), 128u * 1024);
  Inflater inflater;
  for (size_t max : {size_t{1} << 20, size_t{1000000}, size_t{16384}, size_t{1}}) {
    std::string out;
    EXPECT_EQ(inflater.decompress(z.data(), z.size(), max, out), Inflater::Result::TooBig);
    EXPECT_LE(out.capacity(), max + 16 * 1024 + 1) << max;
  }
}

TEST(DeflateCodec, CorruptDataIsInvalid) {
  Inflater inflater;
  std::string out;
  EXPECT_EQ(inflater.decompress("\xff\xff", 2, 1000, out), Inflater::Result::Invalid);
  out.clear();
  EXPECT_EQ(inflater.decompress("\x00\x05\x00\x00\x00hello", 10, 1000, out), Inflater::Result::Invalid);
  // Usable again afterwards.
  Deflater deflater;
  std::string z;
  ASSERT_TRUE(deflater.compress("fine", 4, 15, z));
  out.clear();
  EXPECT_EQ(inflater.decompress(z.data(), z.size(), 1000, out), Inflater::Result::Ok);
  EXPECT_EQ(out, "fine");
}

}  // namespace
}  // namespace pronghorn::ws
