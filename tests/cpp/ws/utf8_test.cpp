// Unit tests for UTF-8 validation (ws/utf8.h), whole and split at every byte.
#include "engine/ws/utf8.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pronghorn::ws {
namespace {

using namespace std::string_literals;

// The UTF-8 encoding of a code point (no checks: surrogates are encoded too).
std::string encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// Validates `text` whole, a byte at a time and in two pieces at every split;
// all must agree with `valid` (and a valid text must end complete()).
void expect_utf8(const std::string &text, bool valid) {
  SCOPED_TRACE(testing::PrintToString(text));
  EXPECT_EQ(valid_utf8(text), valid);
  Utf8Validator bytes;
  bool ok = true;
  for (char c : text) ok = bytes.feed(&c, 1) && ok;
  EXPECT_EQ(ok && bytes.complete(), valid) << "byte by byte";
  for (size_t split = 0; split <= text.size(); ++split) {
    Utf8Validator v;
    bool a = v.feed(text.data(), split);
    bool b = a && v.feed(text.data() + split, text.size() - split);
    ASSERT_EQ(b && v.complete(), valid) << "split at " << split;
  }
}

// The same, inside ASCII runs long enough for the word-at-a-time path.
void expect_in_context(const std::string &piece, bool valid) {
  expect_utf8(piece, valid);
  expect_utf8("0123456789abcdef" + piece, valid);
  expect_utf8(piece + "0123456789abcdef", valid);
  expect_utf8("0123456" + piece + "89abcdefghijklmnop", valid);
}

TEST(Utf8, Ascii) {
  expect_utf8("", true);
  expect_utf8("a", true);
  expect_utf8("Hello, world! 0123456789 the quick brown fox", true);
  expect_utf8(std::string(1000, 'x'), true);
  expect_utf8("\x00\x7f"s, true);
}

TEST(Utf8, ValidSequences) {
  expect_in_context("\xc2\x80", true);                                      // U+0080
  expect_in_context("\xdf\xbf", true);                                      // U+07FF
  expect_in_context("\xe0\xa0\x80", true);                                  // U+0800
  expect_in_context("\xe2\x82\xac", true);                                  // €
  expect_in_context("\xed\x9f\xbf", true);                                  // U+D7FF
  expect_in_context("\xee\x80\x80", true);                                  // U+E000
  expect_in_context("\xef\xbf\xbf", true);                                  // U+FFFF
  expect_in_context("\xf0\x90\x80\x80", true);                              // U+10000
  expect_in_context("\xf0\x9f\x98\x80", true);                              // 😀
  expect_in_context("\xf4\x8f\xbf\xbf", true);                              // U+10FFFF
  expect_in_context("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true);  // κόσμε
}

TEST(Utf8, Overlong) {
  expect_in_context("\xc0\x80", false);          // U+0000 in 2 bytes
  expect_in_context("\xc1\xbf", false);          // U+007F in 2 bytes
  expect_in_context("\xe0\x80\x80", false);      // U+0000 in 3 bytes
  expect_in_context("\xe0\x9f\xbf", false);      // U+07FF in 3 bytes
  expect_in_context("\xf0\x80\x80\x80", false);  // U+0000 in 4 bytes
  expect_in_context("\xf0\x8f\xbf\xbf", false);  // U+FFFF in 4 bytes
  expect_in_context("\xc0\xaf", false);          // '/'
}

TEST(Utf8, Surrogates) {
  expect_in_context("\xed\xa0\x80", false);  // U+D800
  expect_in_context("\xed\xad\xbf", false);
  expect_in_context("\xed\xb0\x80", false);              // U+DC00
  expect_in_context("\xed\xbf\xbf", false);              // U+DFFF
  expect_in_context("\xed\xa0\x80\xed\xb0\x80", false);  // a CESU-8 pair
}

TEST(Utf8, AboveMaximum) {
  expect_in_context("\xf4\x90\x80\x80", false);  // U+110000
  expect_in_context("\xf7\xbf\xbf\xbf", false);
  for (int b = 0xF5; b <= 0xFF; ++b) expect_in_context(std::string(1, static_cast<char>(b)) + "\x80\x80\x80", false);
}

TEST(Utf8, StrayAndTruncated) {
  expect_in_context("\x80", false);  // a lone continuation byte
  expect_in_context("\xbf", false);
  expect_in_context(
      "a\x80"
      "b",
      false);
  expect_in_context("\xc2", false);  // truncated sequences
  expect_in_context("\xe2\x82", false);
  expect_in_context("\xf0\x9f\x98", false);
  expect_in_context(
      "\xc2"
      "a",
      false);  // a lead byte before ASCII
  expect_in_context(
      "\xe2\x82"
      "a",
      false);
  expect_in_context("\xc2\xc2\x80", false);
  expect_in_context("\xf0\x9f\x98\x80\x80", false);  // one continuation too many
  expect_in_context("\xfe\xfe\xff\xff", false);
}

TEST(Utf8, EveryCodePoint) {
  // Every scalar value valid, every surrogate not, in one buffer each way.
  std::string all;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) {
      ASSERT_FALSE(valid_utf8(encode(cp))) << cp;
      continue;
    }
    all += encode(cp);
  }
  EXPECT_TRUE(valid_utf8(all));
}

TEST(Utf8, EveryTwoByteSequence) {
  // Against a reference rule: 2-byte leads C2..DF with one continuation.
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      std::string s{static_cast<char>(a), static_cast<char>(b)};
      bool expected = (a < 0x80 && b < 0x80) || (a >= 0xC2 && a <= 0xDF && b >= 0x80 && b <= 0xBF);
      ASSERT_EQ(valid_utf8(s), expected) << a << " " << b;
    }
  }
}

TEST(Utf8, StuckAfterError) {
  Utf8Validator v;
  EXPECT_FALSE(v.feed("\xff", 1));
  EXPECT_FALSE(v.feed("abc", 3));
  EXPECT_FALSE(v.feed("", 0));
  EXPECT_FALSE(v.complete());
  v.reset();
  EXPECT_TRUE(v.feed("abc", 3));
  EXPECT_TRUE(v.complete());
}

TEST(Utf8, IncompleteIsNotComplete) {
  Utf8Validator v;
  EXPECT_TRUE(v.feed("ab\xf0\x9f", 4));
  EXPECT_FALSE(v.complete());
  EXPECT_TRUE(v.feed("\x98", 1));
  EXPECT_FALSE(v.complete());
  EXPECT_TRUE(v.feed("\x80zz", 3));
  EXPECT_TRUE(v.complete());
}

}  // namespace
}  // namespace pronghorn::ws
