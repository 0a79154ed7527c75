// HTTP/1.1 request codec (RFC 9112): an incremental, strict parser with no I/O.
//
// Return contract, shared by RequestHeadParser::parse and BodyDecoder::decode:
//   {Status::Complete,   consumed}  the element ended after `consumed` bytes;
//   {Status::Incomplete, consumed}  more bytes are needed. The body decoder took
//                                   `consumed` bytes; the head parser always
//                                   reports 0 and the caller keeps the bytes;
//   {Status::Error,      consumed}  the input is invalid; error() says why and which
//                                   status code the peer gets. The connection must close.
// No function here throws or allocates on the hot path beyond the header vector.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/http/exchange.h"

namespace pronghorn::http1 {

enum class Status { Complete, Incomplete, Error };

struct Result {
  Status status;
  size_t consumed;
};

// Why a request was rejected: the status code to answer with and a short reason
// for the log. `reason` always points to a string literal.
struct ParseError {
  int status = 0;
  const char *reason = "";
};

struct Limits {
  size_t max_request_line = 8 * 1024;  // longer: 414 URI Too Long
  size_t max_head = 64 * 1024;         // longer: 431
  size_t max_headers = 100;            // more: 431
};

enum class BodyFraming { None, Length, Chunked };

using Header = http::Header;  // names lowercased in place

// The parsed request head: the protocol-neutral part the application sees,
// and HTTP/1's framing. Every view points into the buffer given to parse();
// it stays valid as long as those bytes are neither moved nor overwritten.
// `upgrade`: Connection: upgrade together with an Upgrade header.
struct RequestHead : http::RequestHead {
  int version_minor = 1;  // HTTP/1.<minor>, 0 or 1
  BodyFraming framing = BodyFraming::None;
  uint64_t content_length = 0;
  bool keep_alive = true;
  bool expect_continue = false;

  void clear();
};

// Parses a request line and header section. Incremental: call parse() again
// with the same buffer start (possibly moved, possibly longer) after more bytes
// arrived; lines already validated are not scanned again.
class RequestHeadParser {
 public:
  explicit RequestHeadParser(const Limits &limits = Limits{}) : limits_(limits) {}

  // `buf` is mutable because header names are lowercased in place.
  Result parse(char *buf, size_t len, RequestHead &out);
  const ParseError &error() const { return error_; }
  void reset();
  // True once a byte of a request (not only leading blank lines) was seen.
  bool started() const { return started_; }

 private:
  Result fail(int status, const char *reason, size_t consumed);
  bool parse_request_line(char *line, size_t len);
  bool parse_header_line(char *line, size_t len);
  bool finish(const char *buf, RequestHead &out);

  struct Span {
    uint32_t off, len;
  };
  struct HeaderSpan {
    Span name, value;
  };

  Limits limits_;
  ParseError error_;
  size_t pos_ = 0;  // start of the first line not yet parsed
  size_t line_count_ = 0;
  size_t leading_blank_lines_ = 0;
  bool started_ = false;
  bool have_request_line_ = false;
  Span method_{}, target_{};
  int version_minor_ = 1;
  const char *base_ = nullptr;  // buffer of the current parse() call
  std::vector<HeaderSpan> headers_;
};

// Decodes a request body framed by Content-Length or chunked transfer coding.
// Each decode() call reports at most one span of body data via data_off/data_len
// (relative to the input pointer); loop until it consumes nothing more.
class BodyDecoder {
 public:
  void start_length(uint64_t length);
  void start_chunked();
  void start_none() { state_ = State::Done; }

  struct Output {
    size_t data_off = 0;
    size_t data_len = 0;
  };
  // Complete means the whole body (and the chunked trailer section) was read.
  Result decode(const char *p, size_t len, Output &out);
  bool done() const { return state_ == State::Done; }
  const ParseError &error() const { return error_; }
  // Body bytes still expected, for Content-Length framing.
  uint64_t remaining() const { return remaining_; }
  bool length_framed() const { return state_ == State::Length; }
  // Content-Length framing: `n` body bytes (n <= remaining()) were taken
  // without decode(). Returns true when the body is complete.
  bool skip_length(size_t n) {
    remaining_ -= n;
    if (remaining_ == 0) state_ = State::Done;
    return remaining_ == 0;
  }

  static constexpr size_t kMaxChunkLine = 4096;  // chunk-size plus extensions
  static constexpr size_t kMaxTrailers = 64 * 1024;

 private:
  enum class State {
    Length,
    Size,
    SizeWs,
    Ext,
    SizeLF,
    Data,
    DataCR,
    DataLF,
    TrailerStart,
    TrailerName,
    Trailer,
    TrailerLF,
    LastLF,
    Done,
    Error
  };
  Result fail(const char *reason, size_t consumed);

  State state_ = State::Done;
  uint64_t remaining_ = 0;
  size_t size_digits_ = 0;
  size_t line_len_ = 0;
  size_t trailer_bytes_ = 0;
  ParseError error_;
};

// Character classes of RFC 9110 §5.6.2 (token) and §5.5 (field-value), and an
// ASCII case-insensitive comparison. Inline: they run for every byte of every
// header, in the parser and in the response writer.
namespace detail {
// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" /
// "`" / "|" / "~" / DIGIT / ALPHA
struct TokenTable {
  bool allowed[256] = {};
  constexpr TokenTable() {
    for (int c = '0'; c <= '9'; ++c) allowed[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) allowed[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) allowed[c] = true;
    for (unsigned char c : std::string_view("!#$%&'*+-.^_`|~")) allowed[c] = true;
  }
};
inline constexpr TokenTable kTokenTable;
}  // namespace detail

inline bool is_token_char(unsigned char c) {
  return detail::kTokenTable.allowed[c];
}

// field-vchar / SP / HTAB (obs-text allowed).
inline bool is_field_value_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

}  // namespace pronghorn::http1
