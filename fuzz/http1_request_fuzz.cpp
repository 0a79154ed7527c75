// libFuzzer target for the HTTP/1.1 request codec (engine/http1/parser.h).
//
// Input layout: byte 0 picks the split point and the feeding step, bit 7 of
// byte 1 picks small limits; the rest is the request. The head is parsed in
// two calls (a prefix, then all of it from a moved copy of the buffer) and
// compared with a one-shot parse; if the head completes, the bytes after it
// go to a BodyDecoder, fed piecewise and compared with a one-shot decode.
// Any disagreement or broken invariant aborts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "engine/http/target.h"
#include "engine/http1/parser.h"

using pronghorn::http1::BodyDecoder;
using pronghorn::http1::BodyFraming;
using pronghorn::http1::Limits;
using pronghorn::http1::RequestHead;
using pronghorn::http1::RequestHeadParser;
using pronghorn::http1::Result;
using pronghorn::http1::Status;

namespace {

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

bool within(std::string_view view, const char *buf, size_t len) {
  return view.empty() || (view.data() >= buf && view.data() + view.size() <= buf + len);
}

struct HeadCopy {
  std::string method, target, host;
  std::vector<std::string> headers;
  int version_minor;
  BodyFraming framing;
  uint64_t content_length;
  bool keep_alive, expect_continue, upgrade;

  bool operator==(const HeadCopy &) const = default;
};

HeadCopy copy_head(const RequestHead &h) {
  HeadCopy c{std::string(h.method), std::string(h.target), std::string(h.host), {},       h.version_minor, h.framing,
             h.content_length,      h.keep_alive,          h.expect_continue,   h.upgrade};
  for (const auto &header : h.headers) {
    c.headers.emplace_back(header.name);
    c.headers.back().push_back(':');
    c.headers.back().append(header.value);
  }
  return c;
}

void check_head(const RequestHead &head, const char *buf, size_t len, const Limits &limits) {
  CHECK(!head.method.empty());
  CHECK(!head.target.empty());
  CHECK(within(head.method, buf, len) && within(head.target, buf, len) && within(head.host, buf, len));
  CHECK(head.version_minor == 0 || head.version_minor == 1);
  CHECK(head.headers.size() <= limits.max_headers);
  for (const auto &h : head.headers) {
    CHECK(!h.name.empty());
    CHECK(within(h.name, buf, len) && within(h.value, buf, len));
    for (char c : h.name) {
      CHECK(pronghorn::http1::is_token_char(static_cast<unsigned char>(c)));
      CHECK(!(c >= 'A' && c <= 'Z'));
    }
    for (char c : h.value) CHECK(pronghorn::http1::is_field_value_char(static_cast<unsigned char>(c)));
    if (!h.value.empty()) {
      CHECK(h.value.front() != ' ' && h.value.front() != '\t');
      CHECK(h.value.back() != ' ' && h.value.back() != '\t');
    }
  }
  // The target rules the bridge and the access log use (engine/http/target.h).
  pronghorn::http::TargetParts parts = pronghorn::http::split_target(head.target);
  CHECK(!parts.path.empty());
  std::string logged;
  pronghorn::http::append_log_target(logged, "/root", head.target);
  size_t query_at = parts.query.empty() ? logged.size() : logged.size() - parts.query.size() - 1;
  for (size_t i = 0; i < query_at; ++i) {
    char c = logged[i];
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                c == '-' || c == '~' || c == '/';
    if (c == '%') {
      CHECK(i + 2 < query_at);
      i += 2;
    } else {
      CHECK(safe);
    }
  }
  std::string decoded;
  pronghorn::http::append_percent_decoded(decoded, parts.path);
  CHECK(decoded.size() <= parts.path.size());
  std::string text = pronghorn::http::utf8_with_replacement(decoded);
  CHECK(pronghorn::http::utf8_with_replacement(text) == text);  // valid UTF-8: unchanged
  if (head.framing != BodyFraming::Length) CHECK(head.content_length == 0);
  if (head.framing == BodyFraming::None) CHECK(!head.expect_continue);
  if (head.version_minor == 1) {
    size_t hosts = 0;
    for (const auto &h : head.headers) hosts += h.name == "host";
    CHECK(hosts == 1);
  }
}

struct DecodeRun {
  Status status = Status::Incomplete;
  std::string data;
  size_t consumed = 0;
};

void start_decoder(BodyDecoder &decoder, const RequestHead &head) {
  switch (head.framing) {
    case BodyFraming::None: decoder.start_none(); break;
    case BodyFraming::Length: decoder.start_length(head.content_length); break;
    case BodyFraming::Chunked: decoder.start_chunked(); break;
  }
}

// Makes `step` more bytes available each time the decoder wants more.
DecodeRun decode(const RequestHead &head, const char *p, size_t len, size_t step) {
  BodyDecoder decoder;
  start_decoder(decoder, head);
  DecodeRun run;
  size_t avail = step < len ? step : len;
  while (true) {
    BodyDecoder::Output out;
    size_t n = avail - run.consumed;
    Result r = decoder.decode(p + run.consumed, n, out);
    CHECK(r.consumed <= n);
    if (out.data_len > 0) {
      CHECK(out.data_off + out.data_len <= r.consumed);
      run.data.append(p + run.consumed + out.data_off, out.data_len);
    }
    run.consumed += r.consumed;
    if (r.status == Status::Error) {
      int status = decoder.error().status;
      CHECK(status == 400);
      CHECK(!decoder.done());
      run.status = Status::Error;
      return run;
    }
    if (r.status == Status::Complete) {
      CHECK(decoder.done());
      run.status = Status::Complete;
      return run;
    }
    if (r.consumed == 0 || run.consumed == avail) {
      if (avail == len) return run;
      avail = avail + step < len ? avail + step : len;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  const uint8_t control = data[0];
  Limits limits;
  if (data[1] & 0x80) {
    limits.max_request_line = 64;
    limits.max_head = 512;
    limits.max_headers = 4;
  }
  const char *input = reinterpret_cast<const char *>(data + 1);
  const size_t len = size - 1;

  // One-shot parse of a copy (parse() lowercases header names in place).
  std::vector<char> whole(input, input + len);
  RequestHeadParser one_parser(limits);
  RequestHead one_head;
  Result one = one_parser.parse(whole.data(), whole.size(), one_head);

  // Two-step parse: a prefix, then everything from another buffer with the
  // same (partly lowercased) bytes.
  const size_t split = len == 0 ? 0 : (static_cast<size_t>(control) * 257 + data[len]) % (len + 1);
  std::vector<char> first(input, input + len);
  RequestHeadParser parser(limits);
  RequestHead head;
  Result r = parser.parse(first.data(), split, head);
  if (r.status == Status::Incomplete) {
    CHECK(r.consumed == 0);
    std::vector<char> second(first);
    r = parser.parse(second.data(), second.size(), head);
    first.swap(second);
  }
  CHECK(r.status == one.status);
  if (r.status == Status::Error) {
    int status = parser.error().status;
    CHECK(status == 400 || status == 405 || status == 414 || status == 431 || status == 501 || status == 505);
    CHECK(status == one_parser.error().status);
    CHECK(parser.error().reason != nullptr && parser.error().reason[0] != '\0');
    return 0;
  }
  if (r.status == Status::Incomplete) {
    CHECK(r.consumed == 0 && one.consumed == 0);
    return 0;
  }
  CHECK(r.consumed == one.consumed);
  CHECK(r.consumed > 0 && r.consumed <= len);
  check_head(head, first.data(), first.size(), limits);
  check_head(one_head, whole.data(), whole.size(), limits);
  CHECK(copy_head(head) == copy_head(one_head));

  // The body, all at once and in steps of 1..16 bytes.
  const char *body = whole.data() + one.consumed;
  const size_t body_len = len - one.consumed;
  DecodeRun all = decode(one_head, body, body_len, body_len == 0 ? 1 : body_len);
  DecodeRun steps = decode(one_head, body, body_len, 1 + (control & 0x0f));
  CHECK(all.status == steps.status);
  if (all.status != Status::Error) {
    CHECK(all.data == steps.data);
    CHECK(all.consumed == steps.consumed);
  }
  if (one_head.framing == BodyFraming::Length) {
    uint64_t expected = one_head.content_length < body_len ? one_head.content_length : body_len;
    CHECK(all.data.size() == expected);
    CHECK(all.data == std::string(body, expected));
    CHECK((all.status == Status::Complete) == (one_head.content_length <= body_len));
  }
  if (one_head.framing == BodyFraming::None) {
    CHECK(all.status == Status::Complete && all.consumed == 0 && all.data.empty());
  }
  if (all.status == Status::Complete) CHECK(all.consumed <= body_len);
  return 0;
}
