#include "engine/http/access_log.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <ctime>

#include "engine/http/target.h"
#include "engine/log.h"

namespace pronghorn::http {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char &c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void append_address(std::string &out, const SocketAddress *peer) {
  if (peer == nullptr || peer->is_unix || peer->host.empty())
    out.push_back('-');
  else
    out.append(peer->host);
}

// [10/Oct/2000:13:55:36 +0000] (gunicorn's %(t)s; UTC).
void append_clf_time(std::string &out, int64_t unix_ns) {
  time_t seconds = static_cast<time_t>(unix_ns / 1000000000);
  tm parts{};
  gmtime_r(&seconds, &parts);
  static const char *const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[40];
  int n = snprintf(buf, sizeof buf, "[%02d/%s/%04d:%02d:%02d:%02d +0000]", parts.tm_mday, kMonths[parts.tm_mon],
                   parts.tm_year + 1900, parts.tm_hour, parts.tm_min, parts.tm_sec);
  out.append(buf, static_cast<size_t>(n));
}

// 2000-10-10T13:55:36.123456Z (JSON's "time").
void append_iso_time(std::string &out, int64_t unix_ns) {
  time_t seconds = static_cast<time_t>(unix_ns / 1000000000);
  tm parts{};
  gmtime_r(&seconds, &parts);
  char buf[48];
  int n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                   parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
                   static_cast<int>((unix_ns % 1000000000) / 1000));
  out.append(buf, static_cast<size_t>(n));
}

// The length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
// surrogates, at most U+10FFFF) that starts s[i] (a byte >= 0x80), or 0.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char lead = byte(i);
  size_t len;
  unsigned char low = 0x80, high = 0xbf;  // the range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    len = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    len = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    len = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (i + len > s.size() || byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (size_t k = 2; k < len; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  return len;
}

void append_json_string(std::string &out, std::string_view s) {
  out.push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c >= 0x80) {
          // UTF-8 (a user agent's or a referer's) goes through as it is. Header
          // bytes are not necessarily UTF-8: any other byte is escaped as its
          // Latin-1 code point (what Python's ASGI servers decode headers as),
          // so that the line stays valid JSON.
          if (size_t len = utf8_sequence_length(s, i); len != 0) {
            out.append(s.substr(i, len));
            i += len - 1;
            break;
          }
        }
        if (c < 0x20 || c >= 0x7f) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\u%04x", c);
          out.append(buf);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

std::string_view path_of(std::string_view target) {
  size_t q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

std::string_view query_of(std::string_view target) {
  size_t q = target.find('?');
  return q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

std::string_view value_at(const std::vector<std::string> *values, size_t index) {
  return values != nullptr && index < values->size() ? std::string_view((*values)[index]) : std::string_view();
}

}  // namespace

size_t AccessLogFormat::header_index(std::vector<std::string> &list, std::string name) {
  name = lower(name);
  for (size_t i = 0; i < list.size(); ++i)
    if (list[i] == name) return i;
  list.push_back(std::move(name));
  return list.size() - 1;
}

std::unique_ptr<AccessLogFormat> AccessLogFormat::parse(std::string_view spec, std::string *error) {
  auto format = std::unique_ptr<AccessLogFormat>(new AccessLogFormat());
  format->pid_ = getpid();
  if (spec == "json") {
    format->json_ = true;
    format->header_index(format->request_headers_, "referer");
    format->header_index(format->request_headers_, "user-agent");
    return format;
  }
  std::string literal;
  auto flush = [&] {
    if (!literal.empty()) format->parts_.push_back({Kind::Literal, std::move(literal), 0});
    literal.clear();
  };
  size_t i = 0;
  while (i < spec.size()) {
    char c = spec[i];
    if (c != '%') {
      literal.push_back(c);
      ++i;
      continue;
    }
    if (i + 1 < spec.size() && spec[i + 1] == '%') {
      literal.push_back('%');
      i += 2;
      continue;
    }
    if (i + 1 >= spec.size() || spec[i + 1] != '(') {
      *error = "a '%' must start a field %(x)s (or be written %%)";
      return nullptr;
    }
    size_t close = spec.find(")s", i + 2);
    if (close == std::string_view::npos) {
      *error = "unterminated field: " + std::string(spec.substr(i));
      return nullptr;
    }
    std::string_view name = spec.substr(i + 2, close - (i + 2));
    i = close + 2;
    flush();
    if (name.size() >= 3 && name.front() == '{' && (name.back() == 'i' || name.back() == 'o') &&
        name[name.size() - 2] == '}') {
      std::string header(name.substr(1, name.size() - 3));
      if (header.empty()) {
        *error = "empty header name in %(" + std::string(name) + ")s";
        return nullptr;
      }
      bool request = name.back() == 'i';
      size_t index = format->header_index(request ? format->request_headers_ : format->response_headers_, header);
      format->parts_.push_back({request ? Kind::RequestHeader : Kind::ResponseHeader, {}, index});
      continue;
    }
    Kind kind;
    if (name == "h")
      kind = Kind::RemoteAddress;
    else if (name == "l" || name == "u")
      kind = Kind::Dash;
    else if (name == "t")
      kind = Kind::Time;
    else if (name == "r")
      kind = Kind::RequestLine;
    else if (name == "m")
      kind = Kind::Method;
    else if (name == "U")
      kind = Kind::Path;
    else if (name == "q")
      kind = Kind::Query;
    else if (name == "H")
      kind = Kind::Protocol;
    else if (name == "s")
      kind = Kind::Status;
    else if (name == "B")
      kind = Kind::Bytes;
    else if (name == "b")
      kind = Kind::BytesOrDash;
    else if (name == "T")
      kind = Kind::Seconds;
    else if (name == "M")
      kind = Kind::Milliseconds;
    else if (name == "D")
      kind = Kind::Microseconds;
    else if (name == "L")
      kind = Kind::DecimalSeconds;
    else if (name == "p")
      kind = Kind::Pid;
    else if (name == "f" || name == "a") {
      size_t index = format->header_index(format->request_headers_, name == "f" ? "referer" : "user-agent");
      format->parts_.push_back({Kind::RequestHeader, {}, index});
      continue;
    } else {
      *error = "unknown field %(" + std::string(name) + ")s";
      return nullptr;
    }
    format->parts_.push_back({kind, {}, 0});
  }
  flush();
  return format;
}

void AccessLogFormat::render(std::string &out, const AccessRecord &r) const {
  if (json_) {
    render_json(out, r);
    return;
  }
  char buf[64];
  for (const Part &part : parts_) {
    switch (part.kind) {
      case Kind::Literal: out.append(part.text); break;
      case Kind::RemoteAddress: append_address(out, r.peer); break;
      case Kind::Dash: out.push_back('-'); break;
      case Kind::Time: append_clf_time(out, r.start_unix_ns); break;
      case Kind::RequestLine:
        out.append(r.method);
        out.push_back(' ');
        out.append(r.target);
        out.push_back(' ');
        out.append(r.protocol);
        break;
      case Kind::Method: out.append(r.method); break;
      case Kind::Path: out.append(path_of(r.target)); break;
      case Kind::Query: out.append(query_of(r.target)); break;
      case Kind::Protocol: out.append(r.protocol); break;
      case Kind::Status: out.append(std::to_string(r.status)); break;
      case Kind::Bytes: out.append(std::to_string(r.body_bytes)); break;
      case Kind::BytesOrDash:
        if (r.body_bytes == 0)
          out.push_back('-');
        else
          out.append(std::to_string(r.body_bytes));
        break;
      case Kind::Seconds: out.append(std::to_string(r.duration_ns / 1000000000)); break;
      case Kind::Milliseconds: out.append(std::to_string(r.duration_ns / 1000000)); break;
      case Kind::Microseconds: out.append(std::to_string(r.duration_ns / 1000)); break;
      case Kind::DecimalSeconds: {
        int n = snprintf(buf, sizeof buf, "%.6f", static_cast<double>(r.duration_ns) / 1e9);
        out.append(buf, static_cast<size_t>(n));
        break;
      }
      case Kind::Pid:
        out.push_back('<');
        out.append(std::to_string(pid_));
        out.push_back('>');
        break;
      case Kind::RequestHeader: {
        std::string_view v = value_at(r.request_values, part.index);
        if (v.empty())
          out.push_back('-');
        else
          out.append(v);
        break;
      }
      case Kind::ResponseHeader: {
        std::string_view v = value_at(r.response_values, part.index);
        if (v.empty())
          out.push_back('-');
        else
          out.append(v);
        break;
      }
    }
  }
  out.push_back('\n');
}

void AccessLogFormat::render_json(std::string &out, const AccessRecord &r) const {
  out.append("{\"time\": \"");
  append_iso_time(out, r.start_unix_ns);
  out.append("\", \"remote_addr\": ");
  if (r.peer == nullptr || r.peer->is_unix || r.peer->host.empty()) {
    out.append("null, \"remote_port\": null");
  } else {
    append_json_string(out, r.peer->host);
    out.append(", \"remote_port\": ");
    out.append(std::to_string(r.peer->port));
  }
  out.append(", \"method\": ");
  append_json_string(out, r.method);
  out.append(", \"path\": ");
  append_json_string(out, path_of(r.target));
  out.append(", \"query\": ");
  append_json_string(out, query_of(r.target));
  out.append(", \"protocol\": ");
  append_json_string(out, r.protocol);
  out.append(", \"status\": ");
  out.append(std::to_string(r.status));
  out.append(", \"bytes\": ");
  out.append(std::to_string(r.body_bytes));
  out.append(", \"duration_us\": ");
  out.append(std::to_string(r.duration_ns / 1000));
  out.append(", \"referer\": ");
  std::string_view referer = value_at(r.request_values, 0), agent = value_at(r.request_values, 1);
  if (referer.empty())
    out.append("null");
  else
    append_json_string(out, referer);
  out.append(", \"user_agent\": ");
  if (agent.empty())
    out.append("null");
  else
    append_json_string(out, agent);
  out.append(", \"pid\": ");
  out.append(std::to_string(pid_));
  out.append("}\n");
}

void append_default_access_line(std::string &line, const SocketAddress &peer, std::string_view method,
                                std::string_view target, std::string_view protocol, int status, std::string_view reason,
                                bool colours) {
  line.append(level_prefix(LogLevel::Info, colours));
  if (peer.is_unix || peer.host.empty()) {
    line.append("unix socket");
  } else {
    line.append(peer.host);
    line.push_back(':');
    line.append(std::to_string(peer.port));
  }
  line.append(colours ? " - \"\033[1m" : " - \"");
  line.append(method);
  line.push_back(' ');
  line.append(target);
  line.push_back(' ');
  line.append(protocol);
  line.append(colours ? "\033[0m\" " : "\" ");
  if (colours) line.append(status < 300 ? "\033[32m" : status < 400 ? "\033[33m" : "\033[31m");
  line.append(std::to_string(status));
  line.push_back(' ');
  line.append(reason);
  if (colours) line.append("\033[0m");
  line.push_back('\n');
}

}  // namespace pronghorn::http
