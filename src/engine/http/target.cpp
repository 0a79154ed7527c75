#include "engine/http/target.h"

#include "engine/text.h"

namespace pronghorn::http {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0; `*subpart` gets the
// length of the longest prefix of a valid sequence (at least 1) when invalid.
size_t utf8_sequence(std::string_view s, size_t i, size_t *subpart) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  *subpart = 1;
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;  // no surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) return 0;
    unsigned char b = byte(i + k);
    bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xbf);
    if (!ok) return 0;
    *subpart = k + 1;
  }
  return len;
}

bool quote_safe(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-' || c == '~' || c == '/';
}

}  // namespace

TargetParts split_target(std::string_view target) {
  // absolute-form (RFC 9112 §3.2.2): the path starts after the authority.
  if (!target.empty() && target[0] != '/' && target != "*") {
    size_t scheme_end = target.find("://");
    if (scheme_end != std::string_view::npos) {
      size_t path_start = target.find_first_of("/?", scheme_end + 3);
      target = path_start == std::string_view::npos ? std::string_view("/") : target.substr(path_start);
    }
  }
  TargetParts parts{target, {}};
  size_t q = target.find('?');
  if (q != std::string_view::npos) {
    parts.path = target.substr(0, q);
    parts.query = target.substr(q + 1);
  }
  if (parts.path.empty()) parts.path = "/";
  return parts;
}

void append_percent_decoded(std::string &out, std::string_view raw) {
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '%' && i + 2 < raw.size()) {
      int hi = hex_digit(static_cast<unsigned char>(raw[i + 1])),
          lo = hex_digit(static_cast<unsigned char>(raw[i + 2]));
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(raw[i]);
  }
}

std::string utf8_with_replacement(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    size_t subpart = 1;
    size_t len = utf8_sequence(bytes, i, &subpart);
    if (len > 0) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      out.append("\xef\xbf\xbd");
      i += subpart;
    }
  }
  return out;
}

void append_log_target(std::string &out, std::string_view root_path, std::string_view target) {
  TargetParts parts = split_target(target);
  std::string decoded(root_path);
  append_percent_decoded(decoded, parts.path);
  static const char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : utf8_with_replacement(decoded)) {
    if (quote_safe(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (!parts.query.empty()) {
    out.push_back('?');
    out.append(parts.query);
  }
}

}  // namespace pronghorn::http
