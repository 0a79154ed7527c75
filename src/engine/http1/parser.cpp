#include "engine/http1/parser.h"

#include <cstring>

#include "engine/text.h"

namespace pronghorn::http1 {

namespace {

// Calls fn(element) for each non-empty element of a comma-separated list
// (RFC 9110 §5.6.1: empty elements are allowed and ignored).
template <typename Fn>
void for_each_list_element(std::string_view value, Fn &&fn) {
  while (true) {
    size_t comma = value.find(',');
    std::string_view element = trim_ows(value.substr(0, comma));
    if (!element.empty()) fn(element);
    if (comma == std::string_view::npos) return;
    value.remove_prefix(comma + 1);
  }
}

constexpr size_t kMaxLeadingBlankLines = 4;

// RFC 3986 §3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ).
bool is_reg_name_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("-._~%!$&'()*+,;=").find(static_cast<char>(c)) != std::string_view::npos;
}

// Host = uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986 §3.2.2-3.2.3); an
// empty value is valid (a target without authority). IP literals are checked
// for their character set, not parsed.
bool valid_host(std::string_view host) {
  size_t i = 0;
  if (!host.empty() && host[0] == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (i = 1; i < close; ++i) {
      unsigned char c = static_cast<unsigned char>(host[i]);
      if (c != ':' && !is_reg_name_char(c)) return false;
    }
    i = close + 1;
  } else {
    while (i < host.size() && is_reg_name_char(static_cast<unsigned char>(host[i]))) ++i;
  }
  if (i == host.size()) return true;
  if (host[i] != ':') return false;
  for (++i; i < host.size(); ++i)
    if (host[i] < '0' || host[i] > '9') return false;
  return true;
}

}  // namespace

void RequestHead::clear() {
  method = {};
  target = {};
  http_version = "1.1";
  version_minor = 1;
  headers.clear();
  framing = BodyFraming::None;
  content_length = 0;
  keep_alive = true;
  expect_continue = false;
  upgrade = false;
  host = {};
}

void RequestHeadParser::reset() {
  error_ = {};
  pos_ = 0;
  line_count_ = 0;
  leading_blank_lines_ = 0;
  started_ = false;
  have_request_line_ = false;
  headers_.clear();
}

Result RequestHeadParser::fail(int status, const char *reason, size_t consumed) {
  error_ = {status, reason};
  return {Status::Error, consumed};
}

Result RequestHeadParser::parse(char *buf, size_t len, RequestHead &out) {
  base_ = buf;
  while (true) {
    char *start = buf + pos_;
    size_t available = len - pos_;
    char *newline = static_cast<char *>(memchr(start, '\n', available));
    // RFC 9112 §2.2: a bare CR must be rejected or replaced; we reject. A CR
    // followed by anything but LF can never end a line, so a head of bare
    // CRs is refused as soon as one is seen, not after the header timeout.
    // The same bytes are scanned whether the line is complete or not (those
    // before the length limit that applies to it, checked first), so that
    // the status does not depend on how reads split a line.
    size_t length_limit = limits_.max_head - pos_;
    if (!have_request_line_ && limits_.max_request_line < length_limit) length_limit = limits_.max_request_line;
    size_t bare_cr_scan = newline != nullptr ? static_cast<size_t>(newline - start) : available;
    bare_cr_scan = bare_cr_scan > 0 ? bare_cr_scan - 1 : 0;  // a final CR may be followed by its LF
    if (bare_cr_scan > length_limit) bare_cr_scan = length_limit;
    if (memchr(start, '\r', bare_cr_scan) != nullptr) return fail(400, "bare CR in request head", len);
    // The method is judged as its bytes arrive: a peer that sends NULs, a TLS
    // ClientHello or other binary on the plain port would otherwise wait for
    // a newline that never comes (until the header timeout). Any byte that
    // makes the line's method invalid fails here, before the length limits,
    // whether the line is complete or not, over the same bytes as the bare-CR
    // scan (so the status does not depend on how reads split the line). A
    // lone CR is a blank line's start.
    if (!have_request_line_) {
      size_t line_len = newline != nullptr ? static_cast<size_t>(newline - start) : available;
      if (newline != nullptr && line_len > 0 && start[line_len - 1] == '\r') --line_len;
      size_t scan = line_len < length_limit ? line_len : length_limit;
      if (scan > 0 && !(newline == nullptr && available == 1 && start[0] == '\r')) {
        size_t i = 0;
        while (i < scan && is_token_char(static_cast<unsigned char>(start[i]))) ++i;
        if (i < scan && (i == 0 || start[i] != ' ')) return fail(400, "invalid method", len);
      }
    }
    if (newline == nullptr) {
      // A byte of the request itself (not a blank line's CR) makes the parser started.
      if (available > 1 || (available == 1 && start[0] != '\r')) started_ = true;
      if (!have_request_line_ && available > limits_.max_request_line) {
        // A final CR may end the line (RFC 9112 §2.2: CRLF) with its LF still in
        // flight: it does not count, or a line of exactly max_request_line bytes
        // would be accepted or not depending on where the read split it.
        size_t line_len = start[available - 1] == '\r' ? available - 1 : available;
        if (line_len > limits_.max_request_line) return fail(414, "request line too long", len);
      }
      if (len > limits_.max_head) return fail(431, "request head too large", len);
      return {Status::Incomplete, 0};
    }
    size_t line_with_lf = static_cast<size_t>(newline - start) + 1;
    if (pos_ + line_with_lf > limits_.max_head) {
      if (!have_request_line_) return fail(414, "request line too long", len);
      return fail(431, "request head too large", len);
    }
    // The request line's length is judged before its line ending, as it is above
    // when its LF has not arrived: the status must not depend on how reads split it.
    if (!have_request_line_) {
      size_t line_len = line_with_lf - 1 - (newline > start && newline[-1] == '\r' ? 1 : 0);
      if (line_len > limits_.max_request_line) return fail(414, "request line too long", len);
    }
    // RFC 9112 §2.2: lines end in CRLF. A bare LF is accepted by some parsers,
    // which lets a front end and this server disagree on where a line ends.
    if (newline == start || newline[-1] != '\r') return fail(400, "bare LF in request head", len);
    size_t n = line_with_lf - 2;
    pos_ += line_with_lf;
    ++line_count_;

    if (!have_request_line_) {
      if (n == 0) {
        // RFC 9112 §2.2: ignore at least one empty line before the request line.
        if (++leading_blank_lines_ > kMaxLeadingBlankLines)
          return fail(400, "too many empty lines before request line", len);
        continue;
      }
      started_ = true;
      if (!parse_request_line(start, n)) return {Status::Error, len};
      have_request_line_ = true;
      continue;
    }
    if (n == 0) {
      if (!finish(buf, out)) return {Status::Error, pos_};
      return {Status::Complete, pos_};
    }
    if (!parse_header_line(start, n)) return {Status::Error, len};
  }
}

bool RequestHeadParser::parse_request_line(char *line, size_t n) {
  auto off = [&](const char *p) { return static_cast<uint32_t>(p - base_); };
  size_t i = 0;
  while (i < n && is_token_char(static_cast<unsigned char>(line[i]))) ++i;
  if (i == 0 || i == n || line[i] != ' ') {
    fail(400, "invalid method", 0);
    return false;
  }
  method_ = {off(line), static_cast<uint32_t>(i)};
  size_t target_start = ++i;
  // RFC 9112 §3.2: the request-target contains no whitespace or control bytes;
  // RFC 3986 allows only visible ASCII in a URI, and a fragment ('#') is never
  // part of a request-target.
  while (i < n && line[i] > 0x20 && line[i] < 0x7f && line[i] != '#') ++i;
  if (i == target_start || i == n || line[i] != ' ') {
    fail(400, i < n && line[i] != ' ' ? "invalid character in request target" : "invalid request line", 0);
    return false;
  }
  target_ = {off(line + target_start), static_cast<uint32_t>(i - target_start)};
  std::string_view version(line + i + 1, n - i - 1);
  if (version == "HTTP/1.1") {
    version_minor_ = 1;
  } else if (version == "HTTP/1.0") {
    version_minor_ = 0;
  } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && version[5] >= '0' && version[5] <= '9' &&
             version[6] == '.' && version[7] >= '0' && version[7] <= '9') {
    fail(505, "HTTP version not supported", 0);
    return false;
  } else {
    fail(400, "invalid HTTP version", 0);
    return false;
  }
  std::string_view method(line, method_.len);
  std::string_view target(line + target_start, target_.len);
  // RFC 9112 §3.2: origin-form, absolute-form and asterisk-form (OPTIONS
  // only); authority-form belongs to CONNECT, refused above.
  // CONNECT asks for a tunnel: this is not a proxy (nginx answers 405 too).
  if (method == "CONNECT") {
    fail(405, "CONNECT is not supported", 0);
    return false;
  }
  bool ok = target[0] == '/' || (target == "*" && method == "OPTIONS") ||
            (target.size() > 7 && iequals(target.substr(0, 7), "http://")) ||
            (target.size() > 8 && iequals(target.substr(0, 8), "https://"));
  if (!ok) {
    fail(400, "invalid request target", 0);
    return false;
  }
  return true;
}

bool RequestHeadParser::parse_header_line(char *line, size_t n) {
  // RFC 9112 §5.2: obs-fold (a line starting with whitespace) is rejected
  // with 400 rather than unfolded: peers disagree on how to unfold it.
  if (line[0] == ' ' || line[0] == '\t') {
    fail(400, "obsolete line folding in header", 0);
    return false;
  }
  size_t i = 0;
  for (; i < n && line[i] != ':'; ++i) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    if (!is_token_char(c)) {
      // RFC 9112 §5.1: no whitespace is allowed between the field name and the
      // colon; a server MUST reject such a request with 400.
      fail(400, c == ' ' || c == '\t' ? "whitespace before colon in header" : "invalid character in header name", 0);
      return false;
    }
    if (c >= 'A' && c <= 'Z') line[i] = static_cast<char>(c + 32);
  }
  if (i == n) {
    fail(400, "header line without colon", 0);
    return false;
  }
  if (i == 0) {
    fail(400, "empty header name", 0);
    return false;
  }
  size_t name_len = i++;
  while (i < n && (line[i] == ' ' || line[i] == '\t')) ++i;
  size_t value_start = i;
  size_t value_end = n;
  while (value_end > value_start && (line[value_end - 1] == ' ' || line[value_end - 1] == '\t')) --value_end;
  for (size_t j = value_start; j < value_end; ++j) {
    // RFC 9110 §5.5: NUL, CR, LF and other control bytes are invalid in values.
    if (!is_field_value_char(static_cast<unsigned char>(line[j]))) {
      fail(400, "invalid character in header value", 0);
      return false;
    }
  }
  if (headers_.size() >= limits_.max_headers) {
    fail(431, "too many headers", 0);
    return false;
  }
  uint32_t base = static_cast<uint32_t>(line - base_);
  headers_.push_back({{base, static_cast<uint32_t>(name_len)},
                      {base + static_cast<uint32_t>(value_start), static_cast<uint32_t>(value_end - value_start)}});
  return true;
}

bool RequestHeadParser::finish(const char *buf, RequestHead &out) {
  auto view = [buf](Span s) { return std::string_view(buf + s.off, s.len); };
  out.clear();
  out.method = view(method_);
  out.target = view(target_);
  out.version_minor = version_minor_;
  out.http_version = version_minor_ == 1 ? "1.1" : "1.0";
  out.headers.reserve(headers_.size());

  bool have_length = false, have_te = false, chunked_final = false, other_coding = false;
  bool conn_close = false, conn_keep_alive = false, conn_upgrade = false, have_upgrade = false;
  int chunked_count = 0, host_count = 0;
  uint64_t length = 0;
  for (const HeaderSpan &h : headers_) {
    std::string_view name = view(h.name), value = view(h.value);
    out.headers.push_back({name, value});
    switch (name.size()) {
      case 4:
        if (name == "host") {
          ++host_count;
          out.host = value;
        }
        break;
      case 6:
        if (name == "expect" && iequals(value, "100-continue")) out.expect_continue = true;
        break;
      case 7:
        if (name == "upgrade") have_upgrade = true;
        break;
      case 10:
        if (name == "connection") {
          for_each_list_element(value, [&](std::string_view token) {
            if (iequals(token, "close"))
              conn_close = true;
            else if (iequals(token, "keep-alive"))
              conn_keep_alive = true;
            else if (iequals(token, "upgrade"))
              conn_upgrade = true;
          });
        }
        break;
      case 14:
        if (name == "content-length") {
          // RFC 9112 §6.3 (5) and RFC 9110 §8.6: a list of identical values may be
          // collapsed; differing or malformed values make the length unknowable.
          // An empty element ("3," or ", 3") is not a list of identical
          // values but a malformed one: peers would disagree on it.
          bool bad = false, any = false;
          for_each_list_element(value, [&](std::string_view element) {
            any = true;
            uint64_t v = 0;
            if (element.size() > 18) {
              bad = true;
              return;
            }
            for (char c : element) {
              if (c < '0' || c > '9') {
                bad = true;
                return;
              }
              v = v * 10 + static_cast<uint64_t>(c - '0');
            }
            if (have_length && v != length) {
              error_ = {400, "conflicting Content-Length values"};
              bad = true;
              return;
            }
            have_length = true;
            length = v;
          });
          if (!bad) {
            std::string_view rest = value;
            while (!rest.empty()) {
              size_t comma = rest.find(',');
              if (trim_ows(rest.substr(0, comma)).empty()) bad = true;
              if (comma == std::string_view::npos) break;
              rest.remove_prefix(comma + 1);
              if (rest.empty()) bad = true;  // a trailing comma
            }
          }
          if (bad || !any) {
            if (error_.status == 0) error_ = {400, "invalid Content-Length"};
            return false;
          }
        }
        break;
      case 17:
        if (name == "transfer-encoding") {
          have_te = true;
          for_each_list_element(value, [&](std::string_view coding) {
            chunked_final = false;
            if (iequals(coding, "chunked")) {
              ++chunked_count;
              chunked_final = true;
            } else {
              other_coding = true;
            }
          });
        }
        break;
      default: break;
    }
  }

  if (have_te) {
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing.
    if (version_minor_ == 0) {
      error_ = {400, "Transfer-Encoding in HTTP/1.0 request"};
      return false;
    }
    // RFC 9112 §6.1 and §11.2: a request with both is a smuggling attempt or an
    // error; the server may reject it, and we always do.
    if (have_length) {
      error_ = {400, "both Transfer-Encoding and Content-Length"};
      return false;
    }
    // RFC 9112 §6.3 (4): if chunked is not the final coding of a request, the
    // length cannot be determined: respond 400 and close.
    if (!chunked_final) {
      error_ = {400, "Transfer-Encoding does not end in chunked"};
      return false;
    }
    // RFC 9112 §7.1: chunked must not be applied more than once.
    if (chunked_count > 1) {
      error_ = {400, "chunked applied more than once"};
      return false;
    }
    // RFC 9112 §6.1: a transfer coding we do not implement gets 501.
    if (other_coding) {
      error_ = {501, "unsupported transfer coding"};
      return false;
    }
    out.framing = BodyFraming::Chunked;
  } else if (have_length) {
    out.framing = BodyFraming::Length;
    out.content_length = length;
  }
  // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host gets 400.
  if (host_count > 1) {
    error_ = {400, "multiple Host headers"};
    return false;
  }
  if (host_count == 0 && version_minor_ == 1) {
    error_ = {400, "missing Host header"};
    return false;
  }
  // RFC 9112 §3.2: a Host that is not a valid uri-host [ ":" port ] MUST get 400.
  if (host_count == 1 && !valid_host(out.host)) {
    error_ = {400, "invalid Host header"};
    return false;
  }
  out.keep_alive = version_minor_ == 1 ? !conn_close : (conn_keep_alive && !conn_close);
  out.upgrade = conn_upgrade && have_upgrade;
  // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
  if (out.framing == BodyFraming::None || version_minor_ == 0) out.expect_continue = false;
  return true;
}

void BodyDecoder::start_length(uint64_t length) {
  remaining_ = length;
  error_ = {};
  state_ = length == 0 ? State::Done : State::Length;
}

void BodyDecoder::start_chunked() {
  remaining_ = 0;
  size_digits_ = 0;
  line_len_ = 0;
  trailer_bytes_ = 0;
  error_ = {};
  state_ = State::Size;
}

Result BodyDecoder::fail(const char *reason, size_t consumed) {
  state_ = State::Error;
  error_ = {400, reason};
  return {Status::Error, consumed};
}

Result BodyDecoder::decode(const char *p, size_t len, Output &out) {
  out = {};
  if (state_ == State::Done) return {Status::Complete, 0};
  if (state_ == State::Error) return {Status::Error, 0};
  if (state_ == State::Length) {
    size_t take = len < remaining_ ? len : static_cast<size_t>(remaining_);
    out.data_len = take;
    remaining_ -= take;
    if (remaining_ == 0) {
      state_ = State::Done;
      return {Status::Complete, take};
    }
    return {Status::Incomplete, take};
  }
  // Chunked coding, RFC 9112 §7.1:
  //   chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
  //   last-chunk = 1*("0") [ chunk-ext ] CRLF, then trailer-section CRLF
  size_t i = 0;
  while (i < len) {
    unsigned char c = static_cast<unsigned char>(p[i]);
    switch (state_) {
      case State::Size: {
        int v = hex_digit(c);
        if (v >= 0) {
          // 15 hex digits keep the size below 2^60: no overflow is possible.
          if (++size_digits_ > 15) return fail("chunk size too large", i);
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(v);
          ++line_len_;
          ++i;
          break;
        }
        if (size_digits_ == 0) return fail("invalid chunk size", i);
        if (c == ';')
          state_ = State::Ext;
        else if (c == ' ' || c == '\t')
          state_ = State::SizeWs;
        else if (c == '\r')
          state_ = State::SizeLF;
        else
          return fail("invalid chunk size", i);
        ++i;
        break;
      }
      case State::SizeWs:
        // BWS before a chunk extension (RFC 9112 §7.1.1).
        // Only a chunk extension may follow whitespace: "5 \r\n" is invalid,
        // and peers disagree on it.
        if (c == ';')
          state_ = State::Ext;
        else if (c != ' ' && c != '\t')
          return fail("whitespace after chunk size", i);
        if (++line_len_ > kMaxChunkLine) return fail("chunk extension too long", i);
        ++i;
        break;
      case State::Ext:
        // Chunk extensions are tolerated and ignored (RFC 9112 §7.1.1).
        if (c == '\r')
          state_ = State::SizeLF;
        else if ((c < 0x20 && c != '\t') || c == 0x7f)
          return fail("invalid character in chunk extension", i);
        if (++line_len_ > kMaxChunkLine) return fail("chunk extension too long", i);
        ++i;
        break;
      case State::SizeLF:
        if (c != '\n') return fail("bare CR in chunk size line", i);
        ++i;
        state_ = remaining_ == 0 ? State::TrailerStart : State::Data;
        line_len_ = 0;
        break;
      case State::Data: {
        size_t take = len - i < remaining_ ? len - i : static_cast<size_t>(remaining_);
        out.data_off = i;
        out.data_len = take;
        remaining_ -= take;
        i += take;
        if (remaining_ == 0) state_ = State::DataCR;
        return {Status::Incomplete, i};
      }
      case State::DataCR:
        if (c != '\r') return fail("chunk data not followed by CRLF", i);
        state_ = State::DataLF;
        ++i;
        break;
      case State::DataLF:
        if (c != '\n') return fail("chunk data not followed by CRLF", i);
        state_ = State::Size;
        size_digits_ = 0;
        line_len_ = 0;
        remaining_ = 0;
        ++i;
        break;
      case State::TrailerStart:
        if (c == '\r') {
          state_ = State::LastLF;
          ++i;
          break;
        }
        state_ = State::TrailerName;
        [[fallthrough]];
      case State::TrailerName:
        // A trailer field is field-name ":" field-value (RFC 9112 §7.1.2).
        if (c == ':' && line_len_ > 0) {
          state_ = State::Trailer;
        } else if (!is_token_char(c)) {
          return fail(c == '\r' ? "trailer line without colon" : "invalid character in trailer name", i);
        }
        ++line_len_;
        if (++trailer_bytes_ > kMaxTrailers) return fail("trailer section too large", i);
        ++i;
        break;
      case State::Trailer:
        // Trailer fields are read and discarded (RFC 9112 §7.1.2 allows that).
        if (c == '\r')
          state_ = State::TrailerLF;
        else if (c == '\n')
          return fail("bare LF in trailer section", i);
        else if ((c < 0x20 && c != '\t') || c == 0x7f)
          return fail("invalid character in trailer section", i);
        if (++trailer_bytes_ > kMaxTrailers) return fail("trailer section too large", i);
        ++i;
        break;
      case State::TrailerLF:
        if (c != '\n') return fail("bare CR in trailer section", i);
        state_ = State::TrailerStart;
        line_len_ = 0;
        ++i;
        break;
      case State::LastLF:
        if (c != '\n') return fail("bare CR after last chunk", i);
        state_ = State::Done;
        return {Status::Complete, i + 1};
      case State::Length:
      case State::Done:
      case State::Error: return {Status::Error, i};
    }
  }
  return {Status::Incomplete, i};
}

}  // namespace pronghorn::http1
