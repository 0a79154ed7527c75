// Unit tests for the HTTP/1.1 request codec: RequestHeadParser and BodyDecoder.
#include "engine/http1/parser.h"

#include <gtest/gtest.h>

#include <cstring>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace pronghorn::http1 {
namespace {

using namespace std::string_literals;

// A copy of a parsed head that does not point into the parse buffer.
struct HeadSnapshot {
  std::string method, target;
  int version_minor = 1;
  std::vector<std::pair<std::string, std::string>> headers;
  BodyFraming framing = BodyFraming::None;
  uint64_t content_length = 0;
  bool keep_alive = true;
  bool expect_continue = false;
  bool upgrade = false;
  std::string host;
  size_t consumed = 0;

  bool operator==(const HeadSnapshot &) const = default;
};

HeadSnapshot snapshot(const RequestHead &head, size_t consumed) {
  HeadSnapshot s;
  s.method = head.method;
  s.target = head.target;
  s.version_minor = head.version_minor;
  for (const Header &h : head.headers) s.headers.emplace_back(h.name, h.value);
  s.framing = head.framing;
  s.content_length = head.content_length;
  s.keep_alive = head.keep_alive;
  s.expect_continue = head.expect_continue;
  s.upgrade = head.upgrade;
  s.host = head.host;
  s.consumed = consumed;
  return s;
}

std::ostream &operator<<(std::ostream &os, const HeadSnapshot &s) {
  os << "{" << s.method << " " << s.target << " 1." << s.version_minor << " framing=" << static_cast<int>(s.framing)
     << " cl=" << s.content_length << " ka=" << s.keep_alive << " expect=" << s.expect_continue
     << " upgrade=" << s.upgrade << " host=" << s.host << " consumed=" << s.consumed << " headers=[";
  for (const auto &[n, v] : s.headers) os << n << ": " << v << "; ";
  return os << "]}";
}

// Parses `input` in one call. Owns the buffer so that the head's views stay valid.
class OneShot {
 public:
  explicit OneShot(std::string input, Limits limits = Limits{}) : buf_(std::move(input)), parser_(limits) {
    result_ = parser_.parse(buf_.data(), buf_.size(), head_);
  }
  OneShot(const OneShot &) = delete;
  OneShot &operator=(const OneShot &) = delete;

  const Result &result() const { return result_; }
  const RequestHead &head() const { return head_; }
  const RequestHeadParser &parser() const { return parser_; }
  const std::string &buffer() const { return buf_; }
  HeadSnapshot snap() const { return snapshot(head_, result_.consumed); }

 private:
  std::string buf_;
  RequestHeadParser parser_;
  RequestHead head_;
  Result result_{Status::Error, 0};
};

// Feeds every prefix of `input` (k = 0 .. size-1) to a fresh parser, expecting
// Incomplete, then the whole input in a *different* buffer holding the same
// bytes (the parser must keep offsets, not pointers); the result must equal
// the one-shot parse. Also feeds the input one byte at a time to one parser.
void expect_same_at_every_split(const std::string &input, const Limits &limits = Limits{}) {
  OneShot reference(input, limits);
  ASSERT_EQ(reference.result().status, Status::Complete) << reference.parser().error().reason;
  const HeadSnapshot expected = reference.snap();
  const size_t head_len = reference.result().consumed;

  for (size_t k = 0; k < head_len; ++k) {
    std::string first = input;
    RequestHeadParser parser(limits);
    RequestHead head;
    Result r = parser.parse(first.data(), k, head);
    ASSERT_EQ(r.status, Status::Incomplete) << "prefix " << k << ": " << parser.error().reason;
    ASSERT_EQ(r.consumed, 0u) << "prefix " << k;
    std::string second = first;  // bytes as the first call left them, at another address
    r = parser.parse(second.data(), second.size(), head);
    ASSERT_EQ(r.status, Status::Complete) << "split at " << k << ": " << parser.error().reason;
    ASSERT_EQ(snapshot(head, r.consumed), expected) << "split at " << k;
    // The views point into the buffer of the last call.
    ASSERT_GE(head.method.data(), second.data());
    ASSERT_LT(head.method.data(), second.data() + second.size());
  }

  std::string buf = input;
  RequestHeadParser parser(limits);
  RequestHead head;
  for (size_t k = 0; k <= head_len; ++k) {
    Result r = parser.parse(buf.data(), k, head);
    if (k < head_len) {
      ASSERT_EQ(r.status, Status::Incomplete) << "byte-by-byte, length " << k << ": " << parser.error().reason;
    } else {
      ASSERT_EQ(r.status, Status::Complete) << parser.error().reason;
      ASSERT_EQ(snapshot(head, r.consumed), expected);
    }
  }
}

// Expects `input` to be rejected with `status`, both in one call and when fed
// one byte at a time (never Complete, and the same status once it fails).
void expect_rejected(const std::string &input, int status, const Limits &limits = Limits{}) {
  {
    OneShot one(input, limits);
    EXPECT_EQ(one.result().status, Status::Error) << "input: " << testing::PrintToString(input);
    EXPECT_EQ(one.parser().error().status, status)
        << "reason: " << one.parser().error().reason << " input: " << testing::PrintToString(input);
    EXPECT_STRNE(one.parser().error().reason, "");
  }
  if (input.size() > 4096) return;  // the byte-by-byte run is quadratic
  std::string buf = input;
  RequestHeadParser parser(limits);
  RequestHead head;
  for (size_t k = 1; k <= buf.size(); ++k) {
    Result r = parser.parse(buf.data(), k, head);
    ASSERT_NE(r.status, Status::Complete) << "byte-by-byte completed at " << k;
    if (r.status == Status::Error) {
      EXPECT_EQ(parser.error().status, status) << "byte-by-byte at " << k << ": " << parser.error().reason;
      return;
    }
  }
  ADD_FAILURE() << "byte-by-byte feeding never failed: " << testing::PrintToString(input);
}

std::string request_with_header(const std::string &header_line) {
  return "GET / HTTP/1.1\r\nHost: example.com\r\n" + header_line + "\r\n\r\n";
}

// ---------------------------------------------------------------- valid heads

TEST(RequestHeadParser, SimpleGet) {
  const std::string input = "GET /index.html?q=1&r=%20 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test/1.0\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.result().consumed, input.size());
  EXPECT_EQ(p.head().method, "GET");
  EXPECT_EQ(p.head().target, "/index.html?q=1&r=%20");
  EXPECT_EQ(p.head().version_minor, 1);
  ASSERT_EQ(p.head().headers.size(), 2u);
  EXPECT_EQ(p.head().headers[0].name, "host");
  EXPECT_EQ(p.head().headers[0].value, "example.com");
  EXPECT_EQ(p.head().headers[1].name, "user-agent");
  EXPECT_EQ(p.head().headers[1].value, "test/1.0");
  EXPECT_EQ(p.head().host, "example.com");
  EXPECT_EQ(p.head().framing, BodyFraming::None);
  EXPECT_EQ(p.head().content_length, 0u);
  EXPECT_TRUE(p.head().keep_alive);
  EXPECT_FALSE(p.head().expect_continue);
  EXPECT_FALSE(p.head().upgrade);
  expect_same_at_every_split(input);
}

TEST(RequestHeadParser, ConsumesOnlyTheHeadOfPipelinedInput) {
  const std::string first = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string input = first + "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.result().consumed, first.size());
  EXPECT_EQ(p.head().target, "/a");
}

TEST(RequestHeadParser, IncompleteHeadReportsNothingConsumed) {
  for (std::string input :
       {""s, "GET / HTTP/1.1"s, "GET / HTTP/1.1\r\nHost: h\r\n"s, "GET / HTTP/1.1\r\nHost: h\r\n\r"s}) {
    OneShot p(input);
    EXPECT_EQ(p.result().status, Status::Incomplete) << input;
    EXPECT_EQ(p.result().consumed, 0u);
  }
}

TEST(RequestHeadParser, PostWithContentLength) {
  const std::string input =
      "POST /submit HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.head().method, "POST");
  EXPECT_EQ(p.head().framing, BodyFraming::Length);
  EXPECT_EQ(p.head().content_length, 11u);
  expect_same_at_every_split(input);
}

TEST(RequestHeadParser, ContentLengthZeroAndLarge) {
  OneShot zero(request_with_header("Content-Length: 0"));
  ASSERT_EQ(zero.result().status, Status::Complete);
  EXPECT_EQ(zero.head().framing, BodyFraming::Length);
  EXPECT_EQ(zero.head().content_length, 0u);

  OneShot large(request_with_header("Content-Length: 999999999999999999"));  // 18 digits
  ASSERT_EQ(large.result().status, Status::Complete);
  EXPECT_EQ(large.head().content_length, 999999999999999999ull);

  OneShot padded(request_with_header("Content-Length: 000042"));
  ASSERT_EQ(padded.result().status, Status::Complete);
  EXPECT_EQ(padded.head().content_length, 42u);
}

TEST(RequestHeadParser, IdenticalContentLengthsAreAccepted) {
  OneShot list(request_with_header("Content-Length: 5, 5"));
  ASSERT_EQ(list.result().status, Status::Complete) << list.parser().error().reason;
  EXPECT_EQ(list.head().framing, BodyFraming::Length);
  EXPECT_EQ(list.head().content_length, 5u);

  OneShot repeated(request_with_header("Content-Length: 7\r\nContent-Length: 7"));
  ASSERT_EQ(repeated.result().status, Status::Complete) << repeated.parser().error().reason;
  EXPECT_EQ(repeated.head().content_length, 7u);
  EXPECT_EQ(repeated.head().headers.size(), 3u);
}

TEST(RequestHeadParser, Chunked) {
  const std::string input = "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.head().framing, BodyFraming::Chunked);
  EXPECT_EQ(p.head().content_length, 0u);
  expect_same_at_every_split(input);

  OneShot upper(request_with_header("Transfer-Encoding: CHUNKED"));
  ASSERT_EQ(upper.result().status, Status::Complete);
  EXPECT_EQ(upper.head().framing, BodyFraming::Chunked);

  // Empty list elements are ignored (RFC 9110 §5.6.1).
  OneShot empty_elements(request_with_header("Transfer-Encoding: , chunked ,"));
  ASSERT_EQ(empty_elements.result().status, Status::Complete) << empty_elements.parser().error().reason;
  EXPECT_EQ(empty_elements.head().framing, BodyFraming::Chunked);
}

TEST(RequestHeadParser, Http10WithoutKeepAlive) {
  const std::string input = "GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n";  // no Host needed in 1.0
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete) << p.parser().error().reason;
  EXPECT_EQ(p.head().version_minor, 0);
  EXPECT_FALSE(p.head().keep_alive);
  EXPECT_TRUE(p.head().host.empty());
  expect_same_at_every_split(input);
}

TEST(RequestHeadParser, Http10WithKeepAlive) {
  const std::string input = "GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.head().version_minor, 0);
  EXPECT_TRUE(p.head().keep_alive);
  expect_same_at_every_split(input);

  OneShot both(std::string("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
  ASSERT_EQ(both.result().status, Status::Complete);
  EXPECT_FALSE(both.head().keep_alive);
}

TEST(RequestHeadParser, ConnectionClose) {
  const std::string input = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_FALSE(p.head().keep_alive);
  expect_same_at_every_split(input);

  OneShot in_list(request_with_header("Connection: foo, CLOSE"));
  ASSERT_EQ(in_list.result().status, Status::Complete);
  EXPECT_FALSE(in_list.head().keep_alive);

  OneShot other(request_with_header("Connection: closed"));  // not the token "close"
  ASSERT_EQ(other.result().status, Status::Complete);
  EXPECT_TRUE(other.head().keep_alive);
}

TEST(RequestHeadParser, ExpectContinue) {
  const std::string input = "PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_TRUE(p.head().expect_continue);
  expect_same_at_every_split(input);

  OneShot chunked(request_with_header("Transfer-Encoding: chunked\r\nExpect: 100-continue"));
  ASSERT_EQ(chunked.result().status, Status::Complete);
  EXPECT_TRUE(chunked.head().expect_continue);

  // Without a body there is nothing to continue with.
  OneShot no_body(request_with_header("Expect: 100-continue"));
  ASSERT_EQ(no_body.result().status, Status::Complete);
  EXPECT_FALSE(no_body.head().expect_continue);

  OneShot other(request_with_header("Content-Length: 3\r\nExpect: 200-ok"));
  ASSERT_EQ(other.result().status, Status::Complete);
  EXPECT_FALSE(other.head().expect_continue);
}

TEST(RequestHeadParser, Upgrade) {
  OneShot p(request_with_header("Connection: keep-alive, Upgrade\r\nUpgrade: websocket"));
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_TRUE(p.head().upgrade);
  EXPECT_TRUE(p.head().keep_alive);

  OneShot header_only(request_with_header("Upgrade: websocket"));
  ASSERT_EQ(header_only.result().status, Status::Complete);
  EXPECT_FALSE(header_only.head().upgrade);

  OneShot token_only(request_with_header("Connection: upgrade"));
  ASSERT_EQ(token_only.result().status, Status::Complete);
  EXPECT_FALSE(token_only.head().upgrade);
}

TEST(RequestHeadParser, AbsoluteFormTarget) {
  const std::string input = "GET http://example.com:8080/path?x HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete) << p.parser().error().reason;
  EXPECT_EQ(p.head().target, "http://example.com:8080/path?x");
  expect_same_at_every_split(input);

  OneShot https(std::string("GET HTTPS://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"));
  ASSERT_EQ(https.result().status, Status::Complete);
  EXPECT_EQ(https.head().target, "HTTPS://example.com/");
}

TEST(RequestHeadParser, AsteriskFormAndConnect) {
  const std::string input = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.head().method, "OPTIONS");
  EXPECT_EQ(p.head().target, "*");
  expect_same_at_every_split(input);

  // CONNECT (authority-form) asks for a tunnel: this is not a proxy.
  expect_rejected("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405);

  expect_rejected("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET example.com HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET http:// HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET ftp://example.com/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestHeadParser, OtherTokenMethods) {
  OneShot purge(std::string("PURGE /cache HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_EQ(purge.result().status, Status::Complete);
  EXPECT_EQ(purge.head().method, "PURGE");
  // Methods are case-sensitive and passed on unchanged.
  OneShot lower(std::string("get / HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_EQ(lower.result().status, Status::Complete);
  EXPECT_EQ(lower.head().method, "get");
}

TEST(RequestHeadParser, LeadingEmptyLinesAreSkipped) {
  const std::string input = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.result().consumed, input.size());
  EXPECT_EQ(p.head().method, "GET");
  expect_same_at_every_split(input);

  OneShot four(std::string("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_EQ(four.result().status, Status::Complete);
  expect_rejected("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestHeadParser, StartedIgnoresLeadingBlankLines) {
  std::string buf = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
  RequestHeadParser parser;
  RequestHead head;
  EXPECT_FALSE(parser.started());
  ASSERT_EQ(parser.parse(buf.data(), 4, head).status, Status::Incomplete);
  EXPECT_FALSE(parser.started()) << "only blank lines were seen";
  ASSERT_EQ(parser.parse(buf.data(), 5, head).status, Status::Incomplete);
  EXPECT_TRUE(parser.started()) << "the first byte of the request line was seen";
  ASSERT_EQ(parser.parse(buf.data(), buf.size(), head).status, Status::Complete);
  EXPECT_TRUE(parser.started());
  parser.reset();
  EXPECT_FALSE(parser.started());
}

TEST(RequestHeadParser, HeaderNamesAreLowercasedInPlace) {
  const std::string input = "GET / HTTP/1.1\r\nHOST: h\r\nX-Custom-HEADER: MixedCase Value\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete);
  ASSERT_EQ(p.head().headers.size(), 2u);
  EXPECT_EQ(p.head().headers[0].name, "host");
  EXPECT_EQ(p.head().headers[1].name, "x-custom-header");
  EXPECT_EQ(p.head().headers[1].value, "MixedCase Value");  // values keep their case
  EXPECT_EQ(p.head().host, "h");
  // The view points into the caller's buffer, which now holds the lowercased name.
  EXPECT_NE(p.buffer().find("x-custom-header: MixedCase Value"), std::string::npos);
  expect_same_at_every_split(input);
}

TEST(RequestHeadParser, OwsIsTrimmedFromValues) {
  const std::string input = "GET / HTTP/1.1\r\nHost:h\r\nX-A: \t  a  b \t \r\nX-B:\r\nX-C:   \r\nX-D:\tx\t\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete) << p.parser().error().reason;
  ASSERT_EQ(p.head().headers.size(), 5u);
  EXPECT_EQ(p.head().headers[0].value, "h");
  EXPECT_EQ(p.head().headers[1].value, "a  b");  // inner whitespace kept
  EXPECT_EQ(p.head().headers[2].value, "");
  EXPECT_EQ(p.head().headers[3].value, "");
  EXPECT_EQ(p.head().headers[4].value, "x");
  expect_same_at_every_split(input);
}

TEST(RequestHeadParser, ObsTextInValuesIsAccepted) {
  const std::string value = "caf\xc3\xa9 \x80\xff";
  const std::string input = "GET / HTTP/1.1\r\nHost: h\r\nX-Name: " + value + "\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete) << p.parser().error().reason;
  ASSERT_EQ(p.head().headers.size(), 2u);
  EXPECT_EQ(p.head().headers[1].value, value);
  expect_same_at_every_split(input);
}

TEST(RequestHeadParser, ValueMayContainColonsAndVisibleAscii) {
  OneShot p(request_with_header("X-Url: http://a:b@c/d?e=f;g,h \"q\" ~!"));
  ASSERT_EQ(p.result().status, Status::Complete);
  EXPECT_EQ(p.head().headers[1].value, "http://a:b@c/d?e=f;g,h \"q\" ~!");
}

TEST(RequestHeadParser, HundredHeadersAreAccepted) {
  std::string input = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 1; i < 100; ++i) input += "X-" + std::to_string(i) + ": v\r\n";
  input += "\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete) << p.parser().error().reason;
  EXPECT_EQ(p.head().headers.size(), 100u);
}

TEST(RequestHeadParser, RequestLineAtTheLimitIsAcceptedAtEverySplit) {
  // The request line is exactly max_request_line bytes (CRLF not counted).
  const std::string prefix = "GET /";
  const std::string suffix = " HTTP/1.1";
  const std::string line = prefix + std::string(8192 - prefix.size() - suffix.size(), 'a') + suffix;
  ASSERT_EQ(line.size(), 8192u);
  const std::string input = line + "\r\nHost: h\r\n\r\n";
  OneShot p(input);
  ASSERT_EQ(p.result().status, Status::Complete) << p.parser().error().reason;
  // Every split point around the end of the line, including between its CR and LF.
  for (size_t k = 8180; k < input.size(); ++k) {
    std::string buf = input;
    RequestHeadParser parser;
    RequestHead head;
    Result r = parser.parse(buf.data(), k, head);
    ASSERT_EQ(r.status, Status::Incomplete)
        << "prefix " << k << ": " << parser.error().status << " " << parser.error().reason;
    r = parser.parse(buf.data(), buf.size(), head);
    ASSERT_EQ(r.status, Status::Complete) << "split at " << k;
  }
  expect_rejected("GET /" + std::string(8192 - prefix.size() - suffix.size() + 1, 'a') + suffix + "\r\nHost: h\r\n\r\n",
                  414);
}

TEST(RequestHeadParser, ResetAllowsParsingTheNextRequest) {
  std::string buf = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.0\r\nContent-Length: 2\r\n\r\nxx";
  RequestHeadParser parser;
  RequestHead head;
  Result r = parser.parse(buf.data(), buf.size(), head);
  ASSERT_EQ(r.status, Status::Complete);
  EXPECT_EQ(head.target, "/a");
  parser.reset();
  char *next = buf.data() + r.consumed;
  r = parser.parse(next, buf.size() - (next - buf.data()), head);
  ASSERT_EQ(r.status, Status::Complete);
  EXPECT_EQ(head.method, "POST");
  EXPECT_EQ(head.target, "/b");
  EXPECT_EQ(head.version_minor, 0);
  EXPECT_EQ(head.framing, BodyFraming::Length);
  EXPECT_EQ(head.content_length, 2u);
  EXPECT_TRUE(head.host.empty()) << "clear() must drop the previous request's Host";
  EXPECT_EQ(head.headers.size(), 1u);
}

// ------------------------------------------------- framing and smuggling

TEST(RequestHeadParserReject, TransferEncodingWithContentLength) {
  expect_rejected(request_with_header("Transfer-Encoding: chunked\r\nContent-Length: 5"), 400);
  expect_rejected(request_with_header("Content-Length: 5\r\nTransfer-Encoding: chunked"), 400);
  expect_rejected(request_with_header("Content-Length: 0\r\nTransfer-Encoding: chunked"), 400);
}

TEST(RequestHeadParserReject, ConflictingContentLengths) {
  expect_rejected(request_with_header("Content-Length: 5\r\nContent-Length: 6"), 400);
  expect_rejected(request_with_header("Content-Length: 5, 6"), 400);
  expect_rejected(request_with_header("Content-Length: 5,5,6"), 400);
  expect_rejected(request_with_header("Content-Length: 5\r\nContent-Length: 5, 6"), 400);
}

TEST(RequestHeadParserReject, MalformedContentLength) {
  for (const char *value : {"abc", "-1", "+5", "5a", "0x10", "1 2", "1.0", "", " ", ",", "5;", "99999999999999999999",
                            "18446744073709551616", "1000000000000000000" /* 19 digits */}) {
    SCOPED_TRACE(value);
    expect_rejected(request_with_header(std::string("Content-Length: ") + value), 400);
  }
}

TEST(RequestHeadParserReject, TransferCodings) {
  expect_rejected(request_with_header("Transfer-Encoding: gzip"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: identity"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: chunked, gzip"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: gzip, chunked"), 501);
  expect_rejected(request_with_header("Transfer-Encoding: chunked, chunked"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"), 501);
  expect_rejected(request_with_header("Transfer-Encoding:"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: xchunked"), 400);
  expect_rejected(request_with_header("Transfer-Encoding: chunked;q=1"), 400);
}

TEST(RequestHeadParserReject, TransferEncodingInHttp10) {
  expect_rejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

TEST(RequestHeadParserReject, ObsFold) {
  expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n", 400);
  // Whitespace before the first header line is a fold of the request line.
  expect_rejected("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400);
}

TEST(RequestHeadParserReject, WhitespaceBeforeColon) {
  expect_rejected("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400);
  expect_rejected(request_with_header("Transfer-Encoding : chunked"), 400);
}

TEST(RequestHeadParserReject, BareCr) {
  expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400);
  expect_rejected("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nX\r: a\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestHeadParserReject, BareLf) {
  expect_rejected("GET / HTTP/1.1\nHost: h\n\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nHost: h\n\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
  expect_rejected("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestHeadParserReject, ControlCharactersInNamesAndValues) {
  expect_rejected(request_with_header("X\0Y: a"s), 400);
  expect_rejected(request_with_header("X-A: a\0b"s), 400);
  expect_rejected(request_with_header("X-A: \0"s), 400);
  for (char c : {'\x01', '\x08', '\x0b', '\x0c', '\x1b', '\x1f', '\x7f'}) {
    SCOPED_TRACE(static_cast<int>(c));
    expect_rejected(request_with_header(std::string("X-A: a") + c + "b"), 400);
    expect_rejected(request_with_header(std::string("X") + c + "A: b"), 400);
  }
  // HTAB is allowed inside a value.
  OneShot tab(request_with_header("X-A: a\tb"));
  ASSERT_EQ(tab.result().status, Status::Complete);
  EXPECT_EQ(tab.head().headers[1].value, "a\tb");
}

TEST(RequestHeadParserReject, NonTokenBytesInNames) {
  for (const char *name :
       {"X(A", "X)A", "X@A", "X,A", "X;A", "X/A", "X[A", "X]A", "X{A", "X}A", "X\"A", "X=A", "X?A", "X\\A", "X<A",
        "X\x80"
        "A",
        "\xff"}) {
    SCOPED_TRACE(name);
    expect_rejected(request_with_header(std::string(name) + ": v"), 400);
  }
}

TEST(RequestHeadParserReject, EmptyNameAndMissingColon) {
  expect_rejected(request_with_header(": value"), 400);
  expect_rejected(request_with_header("NoColonHere"), 400);
  expect_rejected(request_with_header("No colon here"), 400);
}

TEST(RequestHeadParserReject, HostHeader) {
  expect_rejected("GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  expect_rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
  expect_rejected("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  // An empty Host is allowed (RFC 9112 §3.2: URIs without an authority).
  OneShot empty(std::string("GET / HTTP/1.1\r\nHost:\r\n\r\n"));
  EXPECT_EQ(empty.result().status, Status::Complete);
}

TEST(RequestHeadParserReject, InvalidMethod) {
  expect_rejected(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET\r\nHost: h\r\n\r\n", 400);
  expect_rejected("/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestHeadParserReject, BinaryBeforeAnyNewlineFailsAtOnce) {
  // NULs, a TLS ClientHello on the plain port, a method cut by a CR: refused
  // with the bytes that show it, not after the header timeout.
  for (std::string input : {std::string(24, '\0'), std::string("\x16\x03\x01\x00\xa5\x01", 6), std::string("GET\r"),
                            std::string(" "), std::string("GE\x01")}) {
    OneShot one(input);
    EXPECT_EQ(one.result().status, Status::Error) << testing::PrintToString(input);
    EXPECT_EQ(one.parser().error().status, 400) << testing::PrintToString(input);
    EXPECT_STREQ(one.parser().error().reason, "invalid method");
  }
  // A bad method byte decides before the line's length: the same 400 whether
  // the line is seen whole (and too long) or byte by byte (found by the fuzzer).
  Limits small;
  small.max_request_line = 64;
  expect_rejected(std::string(80, '\x95') + " / HTTP/1.1\r\nHost: h\r\n\r\n", 400, small);
  expect_rejected("GET\x01" + std::string(80, 'a') + " / HTTP/1.1\r\nHost: h\r\n\r\n", 400, small);
  // A method still arriving, a method and its space, a blank line's CR: wait.
  for (std::string input : {"G", "GET", "GET ", "GET /partial", "\r", "\r\nGE"}) {
    OneShot one(input);
    EXPECT_EQ(one.result().status, Status::Incomplete) << testing::PrintToString(input);
  }
}

TEST(RequestHeadParserReject, InvalidTarget) {
  expect_rejected("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET / \r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET /\t HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_rejected("GET HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  for (char c : {'\0', '\x01', '\x1f', '\x7f', '\x80', '\xff'}) {
    SCOPED_TRACE(static_cast<int>(static_cast<unsigned char>(c)));
    expect_rejected(std::string("GET /a") + c + "b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  }
}

TEST(RequestHeadParserReject, Version) {
  expect_rejected("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
  expect_rejected("GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505);
  expect_rejected("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505);
  for (const char *version : {"HTTP/1", "http/1.1", "HTTP/1.1 ", "HTTP/11.1", "HTTP/1.10", "HTTP/a.b", "FOO",
                              "HTTP/1.1x", "HTTPS/1.1", " HTTP/1.1"}) {
    SCOPED_TRACE(version);
    expect_rejected(std::string("GET / ") + version + "\r\nHost: h\r\n\r\n", 400);
  }
}

TEST(RequestHeadParserReject, RequestLineTooLong) {
  const std::string long_target = "/" + std::string(9000, 'a');
  expect_rejected("GET " + long_target + " HTTP/1.1\r\nHost: h\r\n\r\n", 414);
  // Rejected before the line's LF arrives.
  OneShot no_lf("GET " + long_target);
  EXPECT_EQ(no_lf.result().status, Status::Error);
  EXPECT_EQ(no_lf.parser().error().status, 414);
  // Also when leading blank lines came first.
  OneShot blank("\r\n\r\nGET " + long_target);
  EXPECT_EQ(blank.result().status, Status::Error);
  EXPECT_EQ(blank.parser().error().status, 414);
  // Far beyond the head limit, it is still a request-line problem.
  expect_rejected("GET /" + std::string(70000, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", 414);
  // Long headers are not a request-line problem.
  OneShot long_header_partial("GET / HTTP/1.1\r\nX-Long: " + std::string(9000, 'a'));
  EXPECT_EQ(long_header_partial.result().status, Status::Incomplete);
}

TEST(RequestHeadParserReject, HeadTooLarge) {
  std::string input = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 70; ++i) input += "X-" + std::to_string(i) + ": " + std::string(1000, 'v') + "\r\n";
  input += "\r\n";
  ASSERT_GT(input.size(), 64u * 1024);
  expect_rejected(input, 431);
  // Also a single line that never ends.
  OneShot no_lf("GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(70000, 'v'));
  EXPECT_EQ(no_lf.result().status, Status::Error);
  EXPECT_EQ(no_lf.parser().error().status, 431);
}

TEST(RequestHeadParserReject, TooManyHeaders) {
  std::string input = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 1; i <= 100; ++i) input += "X-" + std::to_string(i) + ": v\r\n";
  input += "\r\n";
  expect_rejected(input, 431);
}

TEST(RequestHeadParserReject, CustomLimits) {
  Limits limits;
  limits.max_request_line = 64;
  limits.max_head = 256;
  limits.max_headers = 3;

  const std::string line_ok = "GET /" + std::string(64 - 14, 'a') + " HTTP/1.1";
  ASSERT_EQ(line_ok.size(), 64u);
  OneShot ok(line_ok + "\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", limits);
  EXPECT_EQ(ok.result().status, Status::Complete) << ok.parser().error().reason;

  expect_rejected("GET /" + std::string(64 - 13, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", 414, limits);
  OneShot no_lf("GET /" + std::string(100, 'a'), limits);
  EXPECT_EQ(no_lf.parser().error().status, 414);
  // An over-long request line gets 414 however the bytes are split, even when
  // its line ending is also broken (fed byte by byte, 414 comes before the LF).
  expect_rejected("GET /" + std::string(70, 'a') + "\rb HTTP/1.1\r\nHost: h\r\n\r\n", 414, limits);
  expect_rejected("GET /" + std::string(70, 'a') + " HTTP/1.1\nHost: h\r\n\r\n", 414, limits);
  expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431, limits);
  expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nA: " + std::string(250, 'x') + "\r\n\r\n", 431, limits);
  // The defaults would have accepted all of these.
  OneShot defaults("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: " + std::string(250, 'x') + "\r\n\r\n");
  EXPECT_EQ(defaults.result().status, Status::Complete);
}

// ---------------------------------------------------------------- BodyDecoder

struct Decoded {
  Status status = Status::Incomplete;
  std::string data;
  size_t consumed = 0;  // total bytes taken from the input
  int error_status = 0;
};

// Runs `decoder` over `input`, making bytes available in steps: first
// input[0, feed[0]), then [0, feed[1]), ..., finally all of it. Within each step
// decode() is called until it takes nothing more.
Decoded run_decoder(BodyDecoder &decoder, const std::string &input, std::vector<size_t> feed) {
  feed.push_back(input.size());
  Decoded d;
  size_t step = 0;
  size_t avail = feed[0];
  for (int guard = 0; guard < 10000000; ++guard) {
    BodyDecoder::Output out;
    size_t len = avail - d.consumed;
    Result r = decoder.decode(input.data() + d.consumed, len, out);
    EXPECT_LE(r.consumed, len);
    if (out.data_len > 0) {
      EXPECT_LE(out.data_off + out.data_len, r.consumed) << "data span outside the consumed bytes";
      d.data.append(input, d.consumed + out.data_off, out.data_len);
    }
    d.consumed += r.consumed;
    if (r.status != Status::Incomplete) {
      d.status = r.status;
      d.error_status = decoder.error().status;
      return d;
    }
    if (r.consumed == 0 || d.consumed == avail) {
      if (avail == input.size()) return d;
      while (step + 1 < feed.size() && feed[step] <= avail) ++step;
      avail = feed[step] > avail ? feed[step] : input.size();
    }
  }
  ADD_FAILURE() << "decoder made no progress";
  return d;
}

std::vector<size_t> one_byte_steps(size_t n) {
  std::vector<size_t> v;
  for (size_t i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

// Decodes `input` in one go, one byte at a time and split at every point;
// each run must complete after exactly `body_len` input bytes with `expected`.
void expect_decodes(const std::string &input, size_t body_len, const std::string &expected, bool chunked,
                    uint64_t length = 0) {
  auto fresh = [&] {
    BodyDecoder d;
    if (chunked)
      d.start_chunked();
    else
      d.start_length(length);
    return d;
  };
  {
    BodyDecoder d = fresh();
    Decoded r = run_decoder(d, input, {});
    ASSERT_EQ(r.status, Status::Complete) << d.error().reason;
    EXPECT_EQ(r.data, expected);
    EXPECT_EQ(r.consumed, body_len);
    EXPECT_TRUE(d.done());
  }
  {
    BodyDecoder d = fresh();
    Decoded r = run_decoder(d, input, one_byte_steps(input.size()));
    ASSERT_EQ(r.status, Status::Complete) << "byte by byte: " << d.error().reason;
    EXPECT_EQ(r.data, expected) << "byte by byte";
    EXPECT_EQ(r.consumed, body_len) << "byte by byte";
  }
  for (size_t k = 0; k <= input.size(); ++k) {
    BodyDecoder d = fresh();
    Decoded r = run_decoder(d, input, {k});
    ASSERT_EQ(r.status, Status::Complete) << "split at " << k << ": " << d.error().reason;
    ASSERT_EQ(r.data, expected) << "split at " << k;
    ASSERT_EQ(r.consumed, body_len) << "split at " << k;
  }
}

void expect_chunked_error(const std::string &input) {
  {
    BodyDecoder d;
    d.start_chunked();
    Decoded r = run_decoder(d, input, {});
    EXPECT_EQ(r.status, Status::Error) << testing::PrintToString(input);
    EXPECT_EQ(r.error_status, 400);
    EXPECT_STRNE(d.error().reason, "");
    // An error is sticky.
    BodyDecoder::Output out;
    Result again = d.decode("0\r\n\r\n", 5, out);
    EXPECT_EQ(again.status, Status::Error);
    EXPECT_EQ(again.consumed, 0u);
    EXPECT_FALSE(d.done());
  }
  if (input.size() > 8192) return;
  BodyDecoder d;
  d.start_chunked();
  Decoded r = run_decoder(d, input, one_byte_steps(input.size()));
  EXPECT_EQ(r.status, Status::Error) << "byte by byte: " << testing::PrintToString(input);
  EXPECT_EQ(r.error_status, 400);
}

TEST(BodyDecoder, ContentLength) {
  const std::string body = "hello world";
  expect_decodes(body + "GET / HTTP/1.1\r\n", body.size(), body, false, body.size());
  BodyDecoder d;
  d.start_length(body.size());
  EXPECT_FALSE(d.done());
  EXPECT_EQ(d.remaining(), 11u);
  BodyDecoder::Output out;
  Result r = d.decode(body.data(), 4, out);
  EXPECT_EQ(r.status, Status::Incomplete);
  EXPECT_EQ(r.consumed, 4u);
  EXPECT_EQ(out.data_off, 0u);
  EXPECT_EQ(out.data_len, 4u);
  EXPECT_EQ(d.remaining(), 7u);
  r = d.decode(body.data() + 4, 0, out);
  EXPECT_EQ(r.status, Status::Incomplete);
  EXPECT_EQ(r.consumed, 0u);
  r = d.decode(body.data() + 4, 7, out);
  EXPECT_EQ(r.status, Status::Complete);
  EXPECT_EQ(r.consumed, 7u);
  EXPECT_EQ(out.data_len, 7u);
  EXPECT_TRUE(d.done());
  r = d.decode(body.data(), body.size(), out);
  EXPECT_EQ(r.status, Status::Complete);
  EXPECT_EQ(r.consumed, 0u);
  EXPECT_EQ(out.data_len, 0u);
}

TEST(BodyDecoder, EmptyBodies) {
  BodyDecoder zero;
  zero.start_length(0);
  EXPECT_TRUE(zero.done());
  BodyDecoder::Output out;
  Result r = zero.decode("abc", 3, out);
  EXPECT_EQ(r.status, Status::Complete);
  EXPECT_EQ(r.consumed, 0u);

  BodyDecoder none;
  none.start_none();
  EXPECT_TRUE(none.done());
  r = none.decode("abc", 3, out);
  EXPECT_EQ(r.status, Status::Complete);
  EXPECT_EQ(r.consumed, 0u);

  const std::string last = "0\r\n\r\n";
  expect_decodes(last + "NEXT", last.size(), "", true);
}

TEST(BodyDecoder, Chunked) {
  const std::string input = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  expect_decodes(input + "GET / HTTP/1.1\r\n", input.size(), "hello world", true);
}

TEST(BodyDecoder, ChunkedHexSizes) {
  const std::string data(0x1a, 'z');
  const std::string input = "1A\r\n" + data + "\r\n000a\r\n0123456789\r\n00\r\n\r\n";
  expect_decodes(input, input.size(), data + "0123456789", true);
  const std::string big(4096, 'q');
  const std::string big_input = "1000\r\n" + big + "\r\n0\r\n\r\n";
  BodyDecoder d;
  d.start_chunked();
  Decoded r = run_decoder(d, big_input, {});
  ASSERT_EQ(r.status, Status::Complete);
  EXPECT_EQ(r.data, big);
}

TEST(BodyDecoder, ChunkExtensionsAndTrailers) {
  const std::string input =
      "5;name=value\r\nhello\r\n"
      "6 ; a=\"quoted;x\" ;b\r\n world\r\n"
      "1\t;ext\r\n!\r\n"
      "0;last=1\r\n"
      "Expires: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
      "X-Trailer: \t v \x80\r\n"
      "\r\n";
  expect_decodes(input + "POST", input.size(), "hello world!", true);
}

TEST(BodyDecoder, ChunkedReusesDecoder) {
  BodyDecoder d;
  d.start_chunked();
  Decoded first = run_decoder(d, "3\r\nabc\r\n0\r\n\r\n", {});
  ASSERT_EQ(first.status, Status::Complete);
  d.start_chunked();
  Decoded second = run_decoder(d, "2\r\nxy\r\n0\r\n\r\n", {});
  ASSERT_EQ(second.status, Status::Complete);
  EXPECT_EQ(second.data, "xy");
  d.start_length(2);
  Decoded third = run_decoder(d, "pq", {});
  ASSERT_EQ(third.status, Status::Complete);
  EXPECT_EQ(third.data, "pq");
}

TEST(BodyDecoder, LargestChunkSizeIsAccepted) {
  BodyDecoder d;
  d.start_chunked();
  BodyDecoder::Output out;
  const std::string size = "fffffffffffffff\r\nab";  // 15 hex digits
  Result r = d.decode(size.data(), size.size(), out);
  EXPECT_EQ(r.status, Status::Incomplete);
  EXPECT_EQ(r.consumed, size.size());
  EXPECT_EQ(out.data_len, 2u);
  EXPECT_EQ(out.data_off, size.size() - 2);
}

TEST(BodyDecoderReject, InvalidChunkSize) {
  expect_chunked_error("x\r\nabc\r\n0\r\n\r\n");
  expect_chunked_error("\r\n");
  expect_chunked_error(";ext\r\n");
  expect_chunked_error(" 5\r\nhello\r\n0\r\n\r\n");
  expect_chunked_error("-5\r\n");
  expect_chunked_error("+5\r\n");
  expect_chunked_error("0x5\r\nhello\r\n");
  expect_chunked_error("5 x\r\nhello\r\n");
  expect_chunked_error("5g\r\n");
  expect_chunked_error("1000000000000000\r\n");    // 16 hex digits
  expect_chunked_error("00000000000000001\r\n");   // 17 digits, even with leading zeros
  expect_chunked_error("ffffffffffffffffff\r\n");  // would overflow 64 bits
}

TEST(BodyDecoderReject, MissingCrlfAfterChunkData) {
  expect_chunked_error("5\r\nhelloX\r\n0\r\n\r\n");
  expect_chunked_error("5\r\nhello\rX0\r\n\r\n");
  expect_chunked_error("5\r\nhello\n0\r\n\r\n");
  expect_chunked_error("5\r\nhello world\r\n0\r\n\r\n");  // data longer than its size
}

TEST(BodyDecoderReject, BareLfOrCrInChunkLines) {
  expect_chunked_error("5\nhello\r\n0\r\n\r\n");
  expect_chunked_error("5\rhello\r\n0\r\n\r\n");
  expect_chunked_error("5;ext\nhello\r\n0\r\n\r\n");
  expect_chunked_error("5;ext\rhello\r\n0\r\n\r\n");
  expect_chunked_error("5 \nhello\r\n0\r\n\r\n");
  expect_chunked_error("0\n\r\n");
  expect_chunked_error("0\r\n\n");
  expect_chunked_error("0\r\n\rX");
  expect_chunked_error("0\r\nX-T: a\nb\r\n\r\n");
  expect_chunked_error("0\r\nX-T: a\rb\r\n\r\n");
}

TEST(BodyDecoderReject, ControlCharacters) {
  expect_chunked_error("5;a\x01\r\nhello\r\n0\r\n\r\n");
  expect_chunked_error("5;a\x7f\r\nhello\r\n0\r\n\r\n");
  expect_chunked_error("5;a\0b\r\nhello\r\n0\r\n\r\n"s);
  expect_chunked_error("0\r\nX-T: \x1b\r\n\r\n");
  expect_chunked_error("0\r\nX-T: \0\r\n\r\n"s);
}

TEST(BodyDecoderReject, OversizedChunkExtension) {
  expect_chunked_error("5;" + std::string(BodyDecoder::kMaxChunkLine, 'a') + "\r\nhello\r\n0\r\n\r\n");
  expect_chunked_error("5" + std::string(BodyDecoder::kMaxChunkLine, ' ') + "\r\nhello\r\n0\r\n\r\n");
  // Just below the limit is fine.
  BodyDecoder d;
  d.start_chunked();
  Decoded r = run_decoder(d, "5;" + std::string(BodyDecoder::kMaxChunkLine - 10, 'a') + "\r\nhello\r\n0\r\n\r\n", {});
  EXPECT_EQ(r.status, Status::Complete) << d.error().reason;
  EXPECT_EQ(r.data, "hello");
}

TEST(BodyDecoderReject, OversizedTrailerSection) {
  std::string input = "0\r\n";
  while (input.size() < BodyDecoder::kMaxTrailers + 100) input += "X-Trailer: " + std::string(1000, 't') + "\r\n";
  input += "\r\n";
  expect_chunked_error(input);
}

}  // namespace
}  // namespace pronghorn::http1

namespace pronghorn::http1 {
namespace {

// RFC 9110 §10.1.1: an HTTP/1.0 request's 100-continue expectation is ignored.
TEST(RequestHeadParser, Http10IgnoresExpectContinue) {
  std::string req = "POST / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
  RequestHeadParser parser;
  RequestHead head;
  ASSERT_EQ(parser.parse(req.data(), req.size(), head).status, Status::Complete);
  EXPECT_FALSE(head.expect_continue);
}

// A fragment is never part of a request-target (RFC 9112 §3.2, RFC 3986 §3.5).
TEST(RequestHeadParser, FragmentInTargetIsRejected) {
  std::string req = "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n";
  RequestHeadParser parser;
  RequestHead head;
  EXPECT_EQ(parser.parse(req.data(), req.size(), head).status, Status::Error);
  EXPECT_EQ(parser.error().status, 400);
}

}  // namespace
}  // namespace pronghorn::http1

namespace pronghorn::http1 {
namespace {

// Cases a hostile-client battery found accepted (issue 14): each is refused
// with 400 (405 for CONNECT), in one call and byte by byte.
TEST(RequestHeadParserReject, ContentLengthWithEmptyListElement) {
  expect_rejected(request_with_header("Content-Length: 3,") + "abc", 400);
  expect_rejected(request_with_header("Content-Length: ,3") + "abc", 400);
  expect_rejected(request_with_header("Content-Length: 3,,3") + "abc", 400);
  expect_rejected(request_with_header("Content-Length: 3, ") + "abc", 400);
  // A list of identical values stays accepted (RFC 9110 §8.6).
  OneShot same(request_with_header("Content-Length: 3, 3") + "abc");
  ASSERT_EQ(same.result().status, Status::Complete) << same.parser().error().reason;
  EXPECT_EQ(same.head().content_length, 3u);
}

TEST(RequestHeadParserReject, InvalidHostValues) {
  for (const char *host :
       {"a b", "a@b/c", "a, b", "a\tb", "a/b", "a:b", "a:80:90", "[::1", "[]", "a?b", "a#b", "\"a\"", "a\\b"}) {
    SCOPED_TRACE(host);
    expect_rejected(std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n", 400);
  }
}

TEST(RequestHeadParser, ValidHostValues) {
  for (const char *host : {"example.com", "example.com:8080", "127.0.0.1:80", "[::1]", "[::1]:8000", "a-b_c~d",
                           "xn--bcher-kva.example", "h:", "%41b", "a!$&'()*+,;=b"}) {
    SCOPED_TRACE(host);
    std::string input = std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n";
    OneShot p(input);
    ASSERT_EQ(p.result().status, Status::Complete) << p.parser().error().reason;
    EXPECT_EQ(p.head().host, host);
  }
  // An empty Host is valid (a target without authority, RFC 9112 §3.2).
  OneShot empty(std::string("GET / HTTP/1.1\r\nHost:\r\n\r\n"));
  EXPECT_EQ(empty.result().status, Status::Complete);
}

TEST(RequestHeadParserReject, HeadWithBareCrsOnly) {
  // No LF ever comes: refused as soon as a CR is followed by another byte,
  // not after the header timeout.
  expect_rejected("GET / HTTP/1.1\rHost: a\r\r", 400);
  OneShot partial(std::string("GET / HTTP/1.1\rH"));
  EXPECT_EQ(partial.result().status, Status::Error);
  // A final CR may still be followed by its LF.
  OneShot waiting(std::string("GET / HTTP/1.1\r"));
  EXPECT_EQ(waiting.result().status, Status::Incomplete);
}

TEST(BodyDecoderReject, WhitespaceAfterChunkSize) {
  expect_chunked_error("5 \r\nhello\r\n0\r\n\r\n");
  expect_chunked_error("5\t\r\nhello\r\n0\r\n\r\n");
  expect_chunked_error("0 \r\n\r\n");
  // Whitespace before a chunk extension (BWS) stays valid.
  expect_decodes("5 ;a\r\nhello\r\n0\r\n\r\n", 18, "hello", true);
}

TEST(BodyDecoderReject, TrailerLineWithoutColon) {
  expect_chunked_error("0\r\nX-Trailer\r\n\r\n");
  expect_chunked_error("0\r\nX Trailer: v\r\n\r\n");
  expect_chunked_error("0\r\n: v\r\n\r\n");
  expect_decodes("0\r\nX-Trailer:v\r\n\r\n", 18, "", true);
}

}  // namespace
}  // namespace pronghorn::http1
