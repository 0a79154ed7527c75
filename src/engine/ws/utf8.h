// UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF), incremental so that a text message can be checked as its
// fragments arrive. ASCII runs are checked eight bytes at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pronghorn::ws {

class Utf8Validator {
 public:
  // Checks the next bytes of the text. False as soon as they cannot be
  // UTF-8 whatever follows (the validator is then stuck in the error state).
  bool feed(const char *data, size_t len);
  // The text so far ends on a whole code point.
  bool complete() const { return state_ == 0; }
  void reset() { state_ = 0; }

 private:
  uint32_t state_ = 0;  // 0: at a boundary; otherwise the DFA state (utf8.cpp)
};

// A whole string.
bool valid_utf8(std::string_view text);

}  // namespace pronghorn::ws
