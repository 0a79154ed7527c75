// Unit tests for the HTTP/1.1 response codec (response.h).
#include "engine/http1/response.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace pronghorn::http1 {
namespace {

using namespace std::string_literals;

constexpr std::string_view kDate = "Tue, 01 Jan 2030 00:00:00 GMT";

struct Built {
  const char *error = nullptr;
  std::string out;
  ResponsePlan plan;
};

DefaultHeaders no_defaults() {
  DefaultHeaders d;
  d.server = false;
  return d;
}

Built build(int status, const HeaderList &headers, const DefaultHeaders &defaults = no_defaults(),
            const RequestContext &request = RequestContext{}) {
  Built b;
  b.plan.framing = Framing::CloseDelimited;  // must be overwritten
  b.plan.content_length = 12345;
  b.plan.keep_alive = false;
  b.error = build_response_head(b.out, status, headers, defaults, request, b.plan);
  return b;
}

size_t count(const std::string &haystack, const std::string &needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

RequestContext http10(bool keep_alive) {
  RequestContext r;
  r.version_minor = 0;
  r.keep_alive = keep_alive;
  return r;
}

TEST(ResponseHead, StatusLineAndReason) {
  EXPECT_EQ(build(200, {{"content-length", "0"}}).out, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
  EXPECT_EQ(build(404, {{"content-length", "0"}}).out.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u);
  EXPECT_EQ(build(418, {{"content-length", "0"}}).out.rfind("HTTP/1.1 418 I'm a Teapot\r\n", 0), 0u);
  EXPECT_EQ(build(503, {{"content-length", "0"}}).out.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u);
  // Unknown codes get an empty reason (status-line = version SP code SP [reason]).
  EXPECT_EQ(build(299, {{"content-length", "0"}}).out.rfind("HTTP/1.1 299 \r\n", 0), 0u);
  EXPECT_EQ(build(999, {{"content-length", "0"}}).out.rfind("HTTP/1.1 999 \r\n", 0), 0u);
  EXPECT_STREQ(reason_phrase(201), "Created");
  EXPECT_STREQ(reason_phrase(431), "Request Header Fields Too Large");
  EXPECT_STREQ(reason_phrase(505), "HTTP Version Not Supported");
  EXPECT_STREQ(reason_phrase(600), "");
}

TEST(ResponseHead, InstalledReasonPhrasesReplaceTheBuiltInTable) {
  const char *table[500] = {};
  table[422 - 100] = "Unprocessable Content";
  table[200 - 100] = "OK";
  install_reason_phrases(table);
  EXPECT_EQ(build(422, {{"content-length", "0"}}).out.rfind("HTTP/1.1 422 Unprocessable Content\r\n", 0), 0u);
  EXPECT_EQ(build(200, {{"content-length", "0"}}).out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  // A code the installed table lacks has no phrase, even if the built-in table knows it.
  EXPECT_STREQ(reason_phrase(404), "");
  EXPECT_STREQ(reason_phrase(99), "");
  EXPECT_STREQ(reason_phrase(600), "");
  install_reason_phrases(nullptr);
  EXPECT_STREQ(reason_phrase(422), "Unprocessable Entity");
  EXPECT_STREQ(reason_phrase(404), "Not Found");
}

TEST(ResponseHead, InvalidStatusIsRejected) {
  for (int status : {-1, 0, 99, 1000, 12345}) {
    SCOPED_TRACE(status);
    std::string out = "previous";
    ResponsePlan plan;
    const char *error = build_response_head(out, status, {}, DefaultHeaders{}, RequestContext{}, plan);
    ASSERT_NE(error, nullptr);
    EXPECT_STREQ(error, "Invalid HTTP status code.");
    EXPECT_EQ(out, "previous");
  }
  EXPECT_EQ(build(100, {}).error, nullptr);
}

TEST(ResponseHead, DefaultHeadersInOrder) {
  std::vector<std::pair<std::string, std::string>> extra{{"X-Powered-By", "tests"}, {"alt-svc", "h3=\":443\""}};
  DefaultHeaders defaults;
  defaults.date = kDate;
  defaults.extra = &extra;
  Built b = build(200, {{"Content-Type", "text/plain"}, {"Content-Length", "5"}}, defaults);
  ASSERT_EQ(b.error, nullptr);
  EXPECT_EQ(b.out,
            "HTTP/1.1 200 OK\r\n"
            "date: Tue, 01 Jan 2030 00:00:00 GMT\r\n"
            "server: pronghorn\r\n"
            "x-powered-by: tests\r\n"
            "alt-svc: h3=\":443\"\r\n"
            "content-type: text/plain\r\n"
            "content-length: 5\r\n"
            "\r\n");
}

TEST(ResponseHead, DefaultHeaderSwitches) {
  DefaultHeaders defaults;  // server on, no date, no extra
  Built server_only = build(200, {{"content-length", "0"}}, defaults);
  EXPECT_EQ(count(server_only.out, "server: pronghorn\r\n"), 1u);
  EXPECT_EQ(server_only.out.find("date:"), std::string::npos);

  defaults.server = false;
  defaults.date = kDate;
  Built date_only = build(200, {{"content-length", "0"}}, defaults);
  EXPECT_EQ(date_only.out.find("server:"), std::string::npos);
  EXPECT_EQ(count(date_only.out, "date: "s + std::string(kDate) + "\r\n"), 1u);

  std::vector<std::pair<std::string, std::string>> no_extra;
  defaults.extra = &no_extra;
  EXPECT_EQ(build(200, {{"content-length", "0"}}, defaults).out, date_only.out);
}

TEST(ResponseHead, AppServerAndDateReplaceTheDefaults) {
  DefaultHeaders defaults;
  defaults.date = kDate;
  Built b = build(200, {{"Server", "custom/1"}, {"DATE", "Mon, 02 Feb 2032 00:00:00 GMT"}, {"content-length", "0"}},
                  defaults);
  ASSERT_EQ(b.error, nullptr);
  EXPECT_EQ(b.out.find("pronghorn"), std::string::npos);
  EXPECT_EQ(b.out.find(kDate), std::string::npos);
  EXPECT_EQ(count(b.out, "server: "), 1u);
  EXPECT_EQ(count(b.out, "date: "), 1u);
  EXPECT_NE(b.out.find("server: custom/1\r\n"), std::string::npos);
  EXPECT_NE(b.out.find("date: Mon, 02 Feb 2032 00:00:00 GMT\r\n"), std::string::npos);
  // A header that merely starts with "server" is not the server header.
  Built other = build(200, {{"server-timing", "db;dur=1"}, {"content-length", "0"}}, defaults);
  EXPECT_NE(other.out.find("server: pronghorn\r\n"), std::string::npos);
}

TEST(ResponseHead, NamesAreLowercasedValuesKept) {
  Built b = build(200, {{"X-Custom-HEADER", "Mixed Case"}, {"Content-Length", "0"}});
  ASSERT_EQ(b.error, nullptr);
  EXPECT_NE(b.out.find("\r\nx-custom-header: Mixed Case\r\n"), std::string::npos) << b.out;
  EXPECT_EQ(b.out.find("X-Custom"), std::string::npos);
}

TEST(ResponseHead, AppendsToExistingOutput) {
  std::string out = "HTTP/1.1 100 Continue\r\n\r\n";
  ResponsePlan plan;
  ASSERT_EQ(build_response_head(out, 204, {}, no_defaults(), RequestContext{}, plan), nullptr);
  EXPECT_EQ(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
}

TEST(ResponseHead, ContentLengthFraming) {
  Built b = build(200, {{"Content-Length", "1234567890123"}});
  ASSERT_EQ(b.error, nullptr);
  EXPECT_EQ(b.plan.framing, Framing::ContentLength);
  EXPECT_EQ(b.plan.content_length, 1234567890123u);
  EXPECT_TRUE(b.plan.keep_alive);
  EXPECT_EQ(b.out.find("transfer-encoding"), std::string::npos);
  EXPECT_EQ(b.out.find("connection"), std::string::npos);

  Built zero = build(200, {{"content-length", "0"}});
  EXPECT_EQ(zero.plan.framing, Framing::ContentLength);
  EXPECT_EQ(zero.plan.content_length, 0u);
}

TEST(ResponseHead, Http11WithoutLengthIsChunked) {
  Built b = build(200, {{"content-type", "text/html"}});
  ASSERT_EQ(b.error, nullptr);
  EXPECT_EQ(b.plan.framing, Framing::Chunked);
  EXPECT_TRUE(b.plan.keep_alive);
  EXPECT_EQ(b.out, "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\n\r\n");

  // The app's own chunked header is not repeated, and wins over content-length.
  Built app = build(200, {{"Transfer-Encoding", "chunked"}});
  EXPECT_EQ(app.plan.framing, Framing::Chunked);
  EXPECT_EQ(count(app.out, "transfer-encoding"), 1u);
}

TEST(ResponseHead, Http10WithoutLengthIsCloseDelimited) {
  Built b = build(200, {{"content-type", "text/html"}}, no_defaults(), http10(true));
  ASSERT_EQ(b.error, nullptr);
  EXPECT_EQ(b.plan.framing, Framing::CloseDelimited);
  EXPECT_FALSE(b.plan.keep_alive);
  EXPECT_EQ(b.out, "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n");
}

TEST(ResponseHead, Http10NeverGetsTransferEncoding) {
  // RFC 9112 §6.1: no Transfer-Encoding in a response to an HTTP/1.0 request;
  // the body is close-delimited, so the header would also misframe it.
  Built b = build(200, {{"Transfer-Encoding", "chunked"}}, no_defaults(), http10(true));
  ASSERT_EQ(b.error, nullptr);
  EXPECT_EQ(b.plan.framing, Framing::CloseDelimited);
  EXPECT_EQ(b.out.find("transfer-encoding"), std::string::npos) << b.out;
}

TEST(ResponseHead, Http10KeepAlive) {
  Built b = build(200, {{"content-length", "3"}}, no_defaults(), http10(true));
  ASSERT_EQ(b.error, nullptr);
  EXPECT_EQ(b.plan.framing, Framing::ContentLength);
  EXPECT_TRUE(b.plan.keep_alive);
  EXPECT_EQ(b.out, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n");

  Built closing = build(200, {{"content-length", "3"}}, no_defaults(), http10(false));
  EXPECT_FALSE(closing.plan.keep_alive);
  EXPECT_EQ(closing.out.find("keep-alive"), std::string::npos);
  EXPECT_EQ(count(closing.out, "connection: close\r\n"), 1u);
}

TEST(ResponseHead, NoBodyResponses) {
  RequestContext head_request;
  head_request.head_method = true;
  Built head = build(200, {{"content-type", "text/plain"}}, no_defaults(), head_request);
  ASSERT_EQ(head.error, nullptr);
  EXPECT_EQ(head.plan.framing, Framing::NoBody);
  EXPECT_TRUE(head.plan.keep_alive);
  EXPECT_EQ(head.out.find("transfer-encoding"), std::string::npos);
  // HEAD keeps the content-length the app gives (the GET body's size).
  Built head_length = build(200, {{"content-length", "42"}}, no_defaults(), head_request);
  EXPECT_EQ(head_length.plan.framing, Framing::NoBody);
  EXPECT_NE(head_length.out.find("content-length: 42\r\n"), std::string::npos);

  for (int status : {101, 103, 204, 304}) {
    SCOPED_TRACE(status);
    Built b = build(status, {{"etag", "\"x\""}});
    ASSERT_EQ(b.error, nullptr);
    EXPECT_EQ(b.plan.framing, Framing::NoBody);
    EXPECT_TRUE(b.plan.keep_alive);
    EXPECT_EQ(b.out.find("transfer-encoding"), std::string::npos);
    // HTTP/1.0 without content-length: still no body, so no forced close.
    Built old = build(status, {}, no_defaults(), http10(true));
    EXPECT_EQ(old.plan.framing, Framing::NoBody);
  }
  // 205 and 200 do have bodies.
  EXPECT_EQ(build(205, {}).plan.framing, Framing::Chunked);
}

TEST(ResponseHead, AppConnectionClose) {
  Built b = build(200, {{"Connection", "Close"}, {"content-length", "0"}});
  ASSERT_EQ(b.error, nullptr);
  EXPECT_FALSE(b.plan.keep_alive);
  EXPECT_EQ(count(b.out, "connection: "), 1u) << b.out;
  EXPECT_NE(b.out.find("connection: Close\r\n"), std::string::npos);

  Built other = build(200, {{"connection", "upgrade"}, {"content-length", "0"}});
  EXPECT_TRUE(other.plan.keep_alive);
}

TEST(ResponseHead, RequestNotKeepAlive) {
  RequestContext request;
  request.keep_alive = false;
  Built b = build(200, {{"content-length", "0"}}, no_defaults(), request);
  ASSERT_EQ(b.error, nullptr);
  EXPECT_FALSE(b.plan.keep_alive);
  EXPECT_EQ(b.plan.framing, Framing::ContentLength);
  EXPECT_EQ(b.out, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}

TEST(ResponseHead, InvalidHeaderNamesAreRejected) {
  for (std::string name :
       {""s, "X Y"s, "X\rY"s, "X\nY"s, "X\0Y"s, "X:Y"s, " X"s, "X\t"s, "X(Y"s, "X@Y"s, "\xc3\xa9"s}) {
    SCOPED_TRACE(testing::PrintToString(name));
    std::string out = "keep";
    ResponsePlan plan;
    const char *error =
        build_response_head(out, 200, {{"ok", "1"}, {name, "v"}}, DefaultHeaders{}, RequestContext{}, plan);
    ASSERT_NE(error, nullptr);
    EXPECT_STREQ(error, "Invalid HTTP header name.");
    EXPECT_EQ(out, "keep") << "nothing is appended on error";
    EXPECT_FALSE(valid_header_name(name));
  }
  EXPECT_TRUE(valid_header_name("x-ok_header.1~!#$%&'*+^`|"));
}

TEST(ResponseHead, InvalidHeaderValuesAreRejected) {
  for (std::string value : {"a\rb"s, "a\nb"s, "a\r\nx-injected: 1"s, "a\0b"s, "\x7f"s, "\x01"s, "\x1f"s}) {
    SCOPED_TRACE(testing::PrintToString(value));
    std::string out;
    ResponsePlan plan;
    const char *error = build_response_head(out, 200, {{"x-a", value}}, DefaultHeaders{}, RequestContext{}, plan);
    ASSERT_NE(error, nullptr);
    EXPECT_STREQ(error, "Invalid HTTP header value.");
    EXPECT_TRUE(out.empty());
    EXPECT_FALSE(valid_header_value(value));
  }
  // HTAB, SP and obs-text are fine; so is an empty value.
  Built ok = build(200, {{"x-a", "a\tb c \x80\xff"}, {"x-b", ""}, {"content-length", "0"}});
  ASSERT_EQ(ok.error, nullptr);
  EXPECT_NE(ok.out.find("x-a: a\tb c \x80\xff\r\n"), std::string::npos);
  EXPECT_NE(ok.out.find("x-b: \r\n"), std::string::npos);
}

TEST(ResponseHead, InvalidContentLengthIsRejected) {
  for (std::string value :
       {""s, "abc"s, "-1"s, "+1"s, "1 "s, " 1"s, "1,1"s, "0x10"s, "1.5"s, "1234567890123456789"s /* 19 digits */}) {
    SCOPED_TRACE(value);
    std::string out;
    ResponsePlan plan;
    const char *error =
        build_response_head(out, 200, {{"Content-Length", value}}, DefaultHeaders{}, RequestContext{}, plan);
    ASSERT_NE(error, nullptr);
    EXPECT_STREQ(error, "Invalid content-length header.");
    EXPECT_TRUE(out.empty());
  }
  Built max = build(200, {{"content-length", "999999999999999999"}});
  ASSERT_EQ(max.error, nullptr);
  EXPECT_EQ(max.plan.content_length, 999999999999999999u);
}

TEST(ResponseHead, AppendChunkSize) {
  std::string out = "x";
  append_chunk_size(out, 1);
  EXPECT_EQ(out, "x1\r\n");
  out.clear();
  append_chunk_size(out, 255);
  append_chunk_size(out, 4096);
  append_chunk_size(out, 0xdeadbeefcafeULL);
  append_chunk_size(out, UINT64_MAX);
  EXPECT_EQ(out, "ff\r\n1000\r\ndeadbeefcafe\r\nffffffffffffffff\r\n");
  EXPECT_EQ(kLastChunk, "0\r\n\r\n");
  EXPECT_EQ(kContinueResponse, "HTTP/1.1 100 Continue\r\n\r\n");
}

TEST(ErrorResponse, FramingAndClose) {
  for (int status : {400, 404, 408, 413, 414, 431, 500, 501, 503, 505}) {
    SCOPED_TRACE(status);
    std::string r = error_response(status);
    std::string status_line = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
    EXPECT_EQ(r.rfind(status_line, 0), 0u) << r;
    size_t end = r.find("\r\n\r\n");
    ASSERT_NE(end, std::string::npos);
    std::string head = r.substr(0, end + 2);
    std::string body = r.substr(end + 4);
    EXPECT_FALSE(body.empty());
    size_t cl = head.find("\r\ncontent-length: ");
    ASSERT_NE(cl, std::string::npos);
    size_t value_start = cl + 18;
    EXPECT_EQ(head.substr(value_start, head.find("\r\n", value_start) - value_start), std::to_string(body.size()));
    EXPECT_EQ(count(head, "\r\nconnection: close\r\n"), 1u);
    EXPECT_NE(head.find("\r\ncontent-type: text/plain; charset=utf-8\r\n"), std::string::npos);
    EXPECT_EQ(head.find("transfer-encoding"), std::string::npos);

    std::string kept = error_response(status, true);
    EXPECT_EQ(kept.find("connection"), std::string::npos);
    EXPECT_EQ(kept.substr(kept.find("\r\n\r\n") + 4), body);
  }
  EXPECT_EQ(error_response(400).substr(error_response(400).find("\r\n\r\n") + 4), "Invalid HTTP request received.");
  EXPECT_EQ(error_response(408).substr(error_response(408).find("\r\n\r\n") + 4), "Request Timeout");
}

}  // namespace
}  // namespace pronghorn::http1

namespace pronghorn::http1 {
namespace {

// RFC 9112 §6.2: when the app asks for chunked and also gives a length, the
// length is dropped (a message never carries both).
TEST(ResponseHead, AppChunkedDropsContentLength) {
  std::string out;
  ResponsePlan plan;
  HeaderList headers{{"Content-Length", "5"}, {"Transfer-Encoding", "chunked"}};
  ASSERT_EQ(
      build_response_head(out, 200, headers, DefaultHeaders{"", false, nullptr}, RequestContext{false, 1, true}, plan),
      nullptr);
  EXPECT_EQ(plan.framing, Framing::Chunked);
  EXPECT_EQ(out.find("content-length"), std::string::npos) << out;
  EXPECT_NE(out.find("transfer-encoding: chunked\r\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace pronghorn::http1
