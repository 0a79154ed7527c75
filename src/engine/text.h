// Small text helpers the codecs share (written once: the parser, the target
// rules and the proxy-header rules all need them).
#pragma once

#include <string_view>

namespace pronghorn {

// Optional whitespace (SP, HTAB) removed from both ends (RFC 9110 §5.6.3 OWS).
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The value of a hexadecimal digit, or -1.
inline int hex_digit(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace pronghorn
