#include "engine/http1/response.h"

#include <cstring>

#include "engine/http1/parser.h"

namespace pronghorn::http1 {

namespace {

const char *const *installed_phrases = nullptr;  // 500 entries from status 100, or none

const char *builtin_reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Request Entity Too Large";
    case 414: return "Request-URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Requested Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a Teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Entity";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "";
  }
}

}  // namespace

const char *reason_phrase(int status) {
  if (installed_phrases == nullptr) return builtin_reason_phrase(status);
  if (status < 100 || status > 599) return "";
  const char *phrase = installed_phrases[status - 100];
  return phrase != nullptr ? phrase : "";
}

void install_reason_phrases(const char *const *phrases) {
  installed_phrases = phrases;
}

namespace {

// Appends "name: value\r\n" with the name in lower case, in one resize.
void append_header_line(std::string &out, std::string_view name, std::string_view value) {
  size_t at = out.size();
  out.resize(at + name.size() + value.size() + 4);
  char *p = out.data() + at;
  for (char c : name) *p++ = c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
  *p++ = ':';
  *p++ = ' ';
  if (!value.empty()) memcpy(p, value.data(), value.size());
  p += value.size();
  *p++ = '\r';
  *p = '\n';
}

// `status` is 100..999 (checked by the callers).
void append_status_line(std::string &out, int status) {
  if (status == 200) {
    out.append("HTTP/1.1 200 OK\r\n");
    return;
  }
  char code[13] = {'H',
                   'T',
                   'T',
                   'P',
                   '/',
                   '1',
                   '.',
                   '1',
                   ' ',
                   static_cast<char>('0' + status / 100),
                   static_cast<char>('0' + status / 10 % 10),
                   static_cast<char>('0' + status % 10),
                   ' '};
  out.append(code, sizeof code);
  out.append(reason_phrase(status));
  out.append("\r\n");
}

}  // namespace

bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!is_token_char(static_cast<unsigned char>(c))) return false;
  return true;
}

bool valid_header_value(std::string_view value) {
  for (char c : value)
    if (!is_field_value_char(static_cast<unsigned char>(c))) return false;
  return true;
}

const char *build_response_head(std::string &out, int status, const HeaderList &headers, const DefaultHeaders &defaults,
                                const RequestContext &request, ResponsePlan &plan) {
  if (status < 100 || status > 999) return "Invalid HTTP status code.";
  bool has_length = false, app_chunked = false, app_close = false, app_server = false, app_date = false;
  uint64_t length = 0;
  for (const auto &[name, value] : headers) {
    // The app's headers go to the wire as given: a CR or LF in them would let
    // the app's input split the response.
    if (!valid_header_name(name)) return "Invalid HTTP header name.";
    if (!valid_header_value(value)) return "Invalid HTTP header value.";
    switch (name.size()) {
      case 4:
        if (iequals(name, "date")) app_date = true;
        break;
      case 6:
        if (iequals(name, "server")) app_server = true;
        break;
      case 10:
        if (iequals(name, "connection") && iequals(value, "close")) app_close = true;
        break;
      case 14:
        if (iequals(name, "content-length")) {
          if (value.empty() || value.size() > 18) return "Invalid content-length header.";
          uint64_t v = 0;
          for (char c : value) {
            if (c < '0' || c > '9') return "Invalid content-length header.";
            v = v * 10 + static_cast<uint64_t>(c - '0');
          }
          has_length = true;
          length = v;
        }
        break;
      case 17:
        if (iequals(name, "transfer-encoding") && iequals(value, "chunked")) app_chunked = true;
        break;
      default: break;
    }
  }

  plan = {};
  plan.keep_alive = request.keep_alive && !app_close;
  bool no_body_status = status < 200 || status == 204 || status == 304;
  if (request.head_method || no_body_status) {
    plan.framing = Framing::NoBody;
  } else if (has_length && !app_chunked) {
    plan.framing = Framing::ContentLength;
    plan.content_length = length;
  } else if (request.version_minor >= 1) {
    plan.framing = Framing::Chunked;
  } else {
    plan.framing = Framing::CloseDelimited;
    plan.keep_alive = false;
  }

  out.reserve(out.size() + 128 + headers.size() * 48);
  append_status_line(out, status);
  // A --header server:... or date:... replaces the built-in one, as in uvicorn.
  if (defaults.extra != nullptr) {
    for (const auto &[name, value] : *defaults.extra) {
      if (iequals(name, "server")) app_server = true;
      if (iequals(name, "date")) app_date = true;
    }
  }
  if (!defaults.date.empty() && !app_date) {
    out.append("date: ");
    out.append(defaults.date);
    out.append("\r\n");
  }
  if (defaults.server && !app_server) out.append("server: pronghorn\r\n");
  if (defaults.extra != nullptr) {
    for (const auto &[name, value] : *defaults.extra) append_header_line(out, name, value);
  }
  for (const auto &[name, value] : headers) {
    // RFC 9112 §6.2: no Content-Length together with Transfer-Encoding.
    if (app_chunked && plan.framing == Framing::Chunked && iequals(name, "content-length")) continue;
    // RFC 9112 §6.1: no Transfer-Encoding in a response to an HTTP/1.0 request.
    // The body is close-delimited then, so the app's "chunked" would misframe it.
    if (plan.framing == Framing::CloseDelimited && iequals(name, "transfer-encoding")) continue;
    append_header_line(out, name, value);
  }
  if (plan.framing == Framing::Chunked && !app_chunked) out.append("transfer-encoding: chunked\r\n");
  if (!plan.keep_alive && !app_close) out.append("connection: close\r\n");
  // An HTTP/1.0 client keeps the connection only when told so (RFC 9112 §9.3).
  if (plan.keep_alive && request.version_minor == 0) out.append("connection: keep-alive\r\n");
  out.append("\r\n");
  return nullptr;
}

size_t format_hex(char *out, uint64_t value) {
  char digits[16];
  size_t n = 0;
  do {
    digits[n++] = "0123456789abcdef"[value & 0xf];
    value >>= 4;
  } while (value != 0);
  for (size_t i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  return n;
}

void append_chunk_size(std::string &out, uint64_t size) {
  char buf[kMaxHexDigits + 2];
  size_t n = format_hex(buf, size);
  buf[n++] = '\r';
  buf[n++] = '\n';
  out.append(buf, n);
}

std::string_view error_body(int status) {
  switch (status) {
    case 400: return "Invalid HTTP request received.";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return reason_phrase(status);
  }
}

std::string error_response(int status, bool keep_alive) {
  std::string out;
  append_status_line(out, status);
  out.append("content-type: text/plain; charset=utf-8\r\ncontent-length: ");
  std::string_view body_view = error_body(status);
  out.append(std::to_string(body_view.size()));
  // RFC 9110 §15.5.6: a 405 lists the methods that are allowed (405 is the
  // answer to CONNECT; the application decides the rest).
  if (status == 405) out.append("\r\nallow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH");
  out.append(keep_alive ? "\r\n\r\n" : "\r\nconnection: close\r\n\r\n");
  out.append(body_view);
  return out;
}

}  // namespace pronghorn::http1
