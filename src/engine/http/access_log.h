// --access-log-format: access log lines in a format of the user's, with
// gunicorn's named fields, or one JSON object per line. Protocol-neutral: a
// session fills an AccessRecord when an exchange ends and renders it with the
// compiled format (no Python on the way; lines are batched as uvicorn's are).
//
// Fields (gunicorn's atoms, written %(x)s): h remote address, l "-", u "-"
// (user), t time ([10/Oct/2000:13:55:36 +0000]), r request line, m method,
// U path, q query string, H protocol, s status, B response body bytes, b the
// same or "-" for none, f Referer, a User-Agent, T seconds (integer), M
// milliseconds (integer), D microseconds (integer), L seconds (decimal), p
// worker PID (<1234>), {name}i a request header, {name}o a response header.
// "%%" is a literal "%". The duration runs from the parsed head to the end of
// the response.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/net/listener.h"

namespace pronghorn::http {

// uvicorn's access line, 'INFO:     127.0.0.1:51234 - "GET / HTTP/1.1" 200 OK\n',
// appended to `line` (with its colours when `colours`): the default format
// of every protocol. `protocol` is "HTTP/1.1", "HTTP/1.0" or "HTTP/2".
void append_default_access_line(std::string &line, const SocketAddress &peer, std::string_view method,
                                std::string_view target, std::string_view protocol, int status, std::string_view reason,
                                bool colours);

struct AccessRecord {
  const SocketAddress *peer = nullptr;
  std::string_view method;
  std::string_view target;    // as sent (path and query)
  std::string_view protocol;  // "HTTP/1.1"
  int status = 0;
  uint64_t body_bytes = 0;
  uint64_t duration_ns = 0;
  int64_t start_unix_ns = 0;  // wall clock at the head, for %(t)s and "time"
  // Values of request_headers() / response_headers(), in that order (empty:
  // the header was absent).
  const std::vector<std::string> *request_values = nullptr;
  const std::vector<std::string> *response_values = nullptr;
};

class AccessLogFormat {
 public:
  // "json", or a format with %(x)s fields. nullptr with *error set when the
  // format has an unknown field or an unterminated one.
  static std::unique_ptr<AccessLogFormat> parse(std::string_view spec, std::string *error);

  // The request / response header names (lowercase) the format reads: a
  // session copies their values (the head's memory does not last until the
  // end of the exchange).
  const std::vector<std::string> &request_headers() const { return request_headers_; }
  const std::vector<std::string> &response_headers() const { return response_headers_; }

  // Appends the line for `record`, with its newline.
  void render(std::string &out, const AccessRecord &record) const;

 private:
  enum class Kind : uint8_t {
    Literal,
    RemoteAddress,
    Dash,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    Bytes,
    BytesOrDash,
    Seconds,
    Milliseconds,
    Microseconds,
    DecimalSeconds,
    Pid,
    RequestHeader,
    ResponseHeader
  };
  struct Part {
    Kind kind;
    std::string text;  // the literal
    size_t index = 0;  // into the header lists
  };
  size_t header_index(std::vector<std::string> &list, std::string name);
  void render_json(std::string &out, const AccessRecord &record) const;

  bool json_ = false;
  int pid_ = 0;  // the worker's (parsed in the worker)
  std::vector<Part> parts_;
  std::vector<std::string> request_headers_;
  std::vector<std::string> response_headers_;
};

}  // namespace pronghorn::http
