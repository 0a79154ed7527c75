// The opening handshake's checks (RFC 6455 §4.2.1) and Sec-WebSocket-Accept.
#include "engine/ws/handshake.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>

#include "engine/text.h"

namespace pronghorn::ws {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Calls f(element) for every non-empty element of the comma lists in all
// the header lines named `name` (RFC 9110 §5.3: several lines are one list).
template <typename F>
void for_each_element(const http::RequestHead &head, std::string_view name, F &&f) {
  for (const http::Header &h : head.headers) {
    if (h.name != name) continue;
    std::string_view rest = h.value;
    while (true) {
      size_t comma = rest.find(',');
      std::string_view element = trim_ows(rest.substr(0, comma));
      if (!element.empty()) f(element);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
}

bool list_contains(const http::RequestHead &head, std::string_view name, std::string_view token) {
  bool found = false;
  for_each_element(head, name, [&](std::string_view element) { found = found || iequals(element, token); });
  return found;
}

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// 16 bytes in base64: 22 characters of the alphabet and "==" (RFC 6455
// §4.1). EVP_DecodeBlock does not strip padding from its count (24
// characters always give 18), so the shape is checked here first.
bool valid_key(std::string_view key) {
  if (key.size() != 24 || key[22] != '=' || key[23] != '=') return false;
  for (size_t i = 0; i < 22; ++i)
    if (!is_base64_char(key[i])) return false;
  unsigned char decoded[18];
  return EVP_DecodeBlock(decoded, reinterpret_cast<const unsigned char *>(key.data()), 24) == 18;
}

}  // namespace

bool is_upgrade_request(const http::RequestHead &head) {
  return head.method == "GET" && head.http_version == "1.1" && list_contains(head, "connection", "upgrade") &&
         list_contains(head, "upgrade", "websocket");
}

HandshakeCheck check_handshake(const http::RequestHead &head) {
  HandshakeCheck check;
  size_t versions = 0, keys = 0;
  bool version_ok = false, body = false;
  for (const http::Header &h : head.headers) {
    if (h.name == "sec-websocket-version") {
      ++versions;
      version_ok = h.value == "13";
    } else if (h.name == "sec-websocket-key") {
      ++keys;
      check.key = h.value;
    } else if (h.name == "sec-websocket-extensions") {
      check.extensions.push_back(h.value);
    } else if (h.name == "content-length") {
      body = body || h.value != "0";
    } else if (h.name == "transfer-encoding") {
      body = true;
    }
  }
  // The version first: a client of another version learns from the 426 (and
  // its Sec-WebSocket-Version: 13) which one to speak.
  if (versions != 1 || !version_ok) {
    check.status = 426;
    check.reason = "Unsupported WebSocket version";
  } else if (keys != 1 || !valid_key(check.key)) {
    check.status = 400;
    check.reason = "Invalid Sec-WebSocket-Key";
  } else if (body) {
    check.status = 400;
    check.reason = "WebSocket handshake with a request body";
  }
  if (check.status != 0) {
    check.key = {};
    check.extensions.clear();
    return check;
  }
  for_each_element(head, "sec-websocket-protocol",
                   [&](std::string_view element) { check.subprotocols.push_back(element); });
  return check;
}

HandshakeCheck check_extended_connect(const http::RequestHead &head) {
  HandshakeCheck check;
  size_t versions = 0;
  bool version_ok = false;
  for (const http::Header &h : head.headers) {
    if (h.name == "sec-websocket-version") {
      ++versions;
      version_ok = h.value == "13";
    } else if (h.name == "sec-websocket-extensions") {
      check.extensions.push_back(h.value);
    }
  }
  if (versions != 1 || !version_ok) {
    check.status = 426;
    check.reason = "Unsupported WebSocket version";
    check.extensions.clear();
    return check;
  }
  for_each_element(head, "sec-websocket-protocol",
                   [&](std::string_view element) { check.subprotocols.push_back(element); });
  return check;
}

std::string accept_key(std::string_view key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char input[128];
  unsigned char digest[SHA_DIGEST_LENGTH];
  if (key.size() <= sizeof(input) - kGuid.size()) {
    // The usual case (a checked key is 24 bytes): no allocation.
    std::copy(key.begin(), key.end(), input);
    std::copy(kGuid.begin(), kGuid.end(), input + key.size());
    SHA1(input, key.size() + kGuid.size(), digest);
  } else {
    std::string joined(key);
    joined.append(kGuid);
    SHA1(reinterpret_cast<const unsigned char *>(joined.data()), joined.size(), digest);
  }
  unsigned char encoded[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(encoded, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char *>(encoded), static_cast<size_t>(n));
}

}  // namespace pronghorn::ws
