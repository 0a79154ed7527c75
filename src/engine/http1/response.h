// HTTP/1.1 response codec (RFC 9112 §4, §6, §7): builds the status line and
// header section for an ASGI response, chooses the body framing, and frames
// body chunks. No I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/http/exchange.h"

namespace pronghorn::http1 {

// The reason phrase of `status` for the status line: the installed table when
// there is one, else the built-in one (RFC names as Python 3.11's
// http.HTTPStatus has them); "" for a code neither knows.
const char *reason_phrase(int status);

// Replaces the built-in table for this process: `phrases[i]` is the phrase of
// status 100 + i (nullptr or "": none), for i < 500. The bridge installs
// Python's http.HTTPStatus phrases at import, which is where uvicorn takes its
// status lines from; they changed in Python 3.13 (RFC 9110's names, e.g. 422
// "Unprocessable Content"). Call before any response is built: not
// synchronized. The strings must stay valid for the life of the process.
void install_reason_phrases(const char *const *phrases);

// Headers the server adds to every response, before the app's own.
struct DefaultHeaders {
  std::string_view date;  // empty: no date header
  bool server = true;     // "server: pronghorn"
  const std::vector<std::pair<std::string, std::string>> *extra = nullptr;
};

enum class Framing {
  NoBody,         // HEAD, 1xx, 204, 304: the body is never sent
  ContentLength,  // the app gave content-length
  Chunked,        // HTTP/1.1 without content-length
  CloseDelimited  // HTTP/1.0 without content-length: the end of the body is the close
};

struct ResponsePlan {
  Framing framing = Framing::Chunked;
  uint64_t content_length = 0;
  bool keep_alive = true;
};

struct RequestContext {
  bool head_method = false;
  int version_minor = 1;
  bool keep_alive = true;
};

// Appends the response head for `status` and `headers` to `out`, and fills `plan`.
// Returns nullptr on success, or a message naming the invalid header (the
// caller raises it to the app; nothing was appended then).
using HeaderList = http::HeaderList;
const char *build_response_head(std::string &out, int status, const HeaderList &headers, const DefaultHeaders &defaults,
                                const RequestContext &request, ResponsePlan &plan);

// "1a2b\r\n": the size line of a chunk of `size` bytes (size > 0).
void append_chunk_size(std::string &out, uint64_t size);
// Writes `value` in lower-case hex (no prefix) to `out`, which has room for
// kMaxHexDigits; returns the number of digits.
inline constexpr size_t kMaxHexDigits = 16;
size_t format_hex(char *out, uint64_t value);
inline constexpr std::string_view kChunkEnd = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// A complete ready-made response for errors the server answers itself
// (400, 404, 408, 413, 414, 431, 500, 501, 503, 505), with Connection: close
// unless keep_alive is set.
// The body of error_response(status): the access log counts its length.
std::string_view error_body(int status);
std::string error_response(int status, bool keep_alive = false);

inline constexpr std::string_view kContinueResponse = "HTTP/1.1 100 Continue\r\n\r\n";

// RFC 9110 §5.6.2 token check on a header name, and §5.5 on its value.
bool valid_header_name(std::string_view name);
bool valid_header_value(std::string_view value);

}  // namespace pronghorn::http1
