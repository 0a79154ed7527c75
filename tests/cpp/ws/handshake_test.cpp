// Unit tests for the server side of the opening handshake (ws/handshake.h).
#include "engine/ws/handshake.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pronghorn::ws {
namespace {

// A browser's upgrade request; tests edit its header lines.
struct Request {
  std::vector<std::pair<std::string, std::string>> headers = {
      {"host", "example.com"},
      {"connection", "Upgrade"},
      {"upgrade", "websocket"},
      {"sec-websocket-version", "13"},
      {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="},
  };
  std::string method = "GET";
  std::string version = "1.1";

  http::RequestHead head() const {
    http::RequestHead h;
    h.method = method;
    h.target = "/chat";
    h.http_version = version;
    h.host = "example.com";
    for (const auto &[name, value] : headers) h.headers.push_back({name, value});
    return h;
  }
  void remove(const std::string &name) {
    std::erase_if(headers, [&](const auto &h) { return h.first == name; });
  }
  void set(const std::string &name, const std::string &value) {
    remove(name);
    headers.emplace_back(name, value);
  }
};

TEST(HandshakeAccept, RfcVector) {
  // RFC 6455 §1.3 (and §4.2.2's example response).
  EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(HandshakeUpgrade, BrowserRequest) {
  Request r;
  EXPECT_TRUE(is_upgrade_request(r.head()));
  HandshakeCheck c = check_handshake(r.head());
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.key, "dGhlIHNhbXBsZSBub25jZQ==");
  EXPECT_TRUE(c.subprotocols.empty());
  EXPECT_TRUE(c.extensions.empty());
}

TEST(HandshakeUpgrade, TokenListsAnyCase) {
  Request r;
  r.set("connection", "keep-alive, Upgrade");
  r.set("upgrade", "WebSocket");
  EXPECT_TRUE(is_upgrade_request(r.head()));
  r.set("connection", "keep-alive,upgrade");
  r.set("upgrade", "h2c, websocket");
  EXPECT_TRUE(is_upgrade_request(r.head()));
  // On two lines.
  r.remove("connection");
  r.headers.emplace_back("connection", "keep-alive");
  r.headers.emplace_back("connection", "UPGRADE");
  EXPECT_TRUE(is_upgrade_request(r.head()));
}

TEST(HandshakeUpgrade, NotAnUpgrade) {
  Request r;
  r.method = "POST";
  EXPECT_FALSE(is_upgrade_request(r.head()));
  r = Request{};
  r.version = "1.0";
  EXPECT_FALSE(is_upgrade_request(r.head()));
  r = Request{};
  r.set("connection", "keep-alive");
  EXPECT_FALSE(is_upgrade_request(r.head()));
  r = Request{};
  r.remove("connection");
  EXPECT_FALSE(is_upgrade_request(r.head()));
  r = Request{};
  r.set("upgrade", "h2c");
  EXPECT_FALSE(is_upgrade_request(r.head()));
  r = Request{};
  r.set("upgrade", "websocket2");
  EXPECT_FALSE(is_upgrade_request(r.head()));
  r = Request{};
  r.set("connection", "upgrades");
  EXPECT_FALSE(is_upgrade_request(r.head()));
}

TEST(HandshakeCheck, Key) {
  Request r;
  r.remove("sec-websocket-key");
  HandshakeCheck c = check_handshake(r.head());
  EXPECT_EQ(c.status, 400);
  EXPECT_STREQ(c.reason, "Invalid Sec-WebSocket-Key");
  for (std::string key : {
           "dGhlIHNhbXBsZSBub25jZQ",      // no padding
           "dGhlIHNhbXBsZSBub25jZQ=",     // short
           "dGhlIHNhbXBsZSBub25jZQ===",   // long
           "dGhlIHNhbXBsZSBub25jZXg=",    // 17 bytes
           "dGhlIHNhbXBsZSBub25j",        // 15 bytes
           "dGhlIHNhbXBsZSBub25jZQ==AA",  // more after the padding
           "dGhlIHNhbXBsZSBub25j*Q==",    // not base64
           "dGhlIHNhbXBsZSBub2 jZQ==",
           "",
       }) {
    r.set("sec-websocket-key", key);
    c = check_handshake(r.head());
    EXPECT_EQ(c.status, 400) << key;
    EXPECT_STREQ(c.reason, "Invalid Sec-WebSocket-Key") << key;
  }
  r.set("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA==");
  EXPECT_EQ(check_handshake(r.head()).status, 0);
  r.set("sec-websocket-key", "x3JJHMbDL1EzLkh9GBhXDw==");
  EXPECT_EQ(check_handshake(r.head()).status, 0);
  EXPECT_EQ(accept_key("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

TEST(HandshakeCheck, DuplicateKey) {
  Request r;
  r.headers.emplace_back("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
  HandshakeCheck c = check_handshake(r.head());
  EXPECT_EQ(c.status, 400);
  EXPECT_STREQ(c.reason, "Invalid Sec-WebSocket-Key");
}

TEST(HandshakeCheck, Version) {
  Request r;
  for (std::string v : {"8", "12", "14", "13, 8", " ", "013"}) {
    r.set("sec-websocket-version", v);
    HandshakeCheck c = check_handshake(r.head());
    EXPECT_EQ(c.status, 426) << v;
    EXPECT_STREQ(c.reason, "Unsupported WebSocket version");
  }
  r.remove("sec-websocket-version");
  EXPECT_EQ(check_handshake(r.head()).status, 426);
  r.set("sec-websocket-version", "13");
  EXPECT_EQ(check_handshake(r.head()).status, 0);
}

TEST(HandshakeCheck, Subprotocols) {
  Request r;
  r.headers.emplace_back("sec-websocket-protocol", "chat, superchat");
  r.headers.emplace_back("sec-websocket-protocol", "v2.example ,, graphql-ws");
  HandshakeCheck c = check_handshake(r.head());
  ASSERT_EQ(c.status, 0);
  EXPECT_EQ(c.subprotocols, (std::vector<std::string_view>{"chat", "superchat", "v2.example", "graphql-ws"}));
}

TEST(HandshakeCheck, Extensions) {
  Request r;
  r.headers.emplace_back("sec-websocket-extensions", "permessage-deflate; client_max_window_bits");
  r.headers.emplace_back("sec-websocket-extensions", "x-webkit-deflate-frame");
  HandshakeCheck c = check_handshake(r.head());
  ASSERT_EQ(c.status, 0);
  EXPECT_EQ(c.extensions,
            (std::vector<std::string_view>{"permessage-deflate; client_max_window_bits", "x-webkit-deflate-frame"}));
}

TEST(HandshakeCheck, Body) {
  Request r;
  r.set("content-length", "0");
  EXPECT_EQ(check_handshake(r.head()).status, 0);
  r.set("content-length", "5");
  HandshakeCheck c = check_handshake(r.head());
  EXPECT_EQ(c.status, 400);
  EXPECT_NE(std::string(c.reason), "");
  r.remove("content-length");
  r.set("transfer-encoding", "chunked");
  EXPECT_EQ(check_handshake(r.head()).status, 400);
}

}  // namespace
}  // namespace pronghorn::ws
