// Unit tests for the static-file rules (static_files/rules.h): paths, ranges,
// conditions, dates and content codings. No I/O.
#include "engine/static_files/rules.h"

#include <gtest/gtest.h>

#include <string>

namespace pronghorn::static_files {
namespace {

// ---- routes and paths ----

TEST(StaticRoute, Normalise) {
  std::string out;
  EXPECT_EQ(normalise_route("/static", out), nullptr);
  EXPECT_EQ(out, "/static");
  EXPECT_EQ(normalise_route("/static///", out), nullptr);
  EXPECT_EQ(out, "/static");
  EXPECT_EQ(normalise_route("/", out), nullptr);
  EXPECT_EQ(out, "");
  EXPECT_EQ(normalise_route("/a/b", out), nullptr);
  EXPECT_EQ(out, "/a/b");
  EXPECT_NE(normalise_route("static", out), nullptr);
  EXPECT_NE(normalise_route("", out), nullptr);
  EXPECT_NE(normalise_route("/a/../b", out), nullptr);
  EXPECT_NE(normalise_route("/a?b", out), nullptr);
  EXPECT_NE(normalise_route("/a%2e", out), nullptr);
  EXPECT_NE(normalise_route(std::string_view("/a\0b", 4), out), nullptr);
}

struct Classified {
  PathKind kind;
  std::string relative;
};

Classified classify(std::string_view raw, std::string_view route = "/static") {
  std::string storage, relative;
  RequestPath path = decode_path(raw, storage);
  PathKind kind = classify_path(path, route, relative);
  return {kind, kind == PathKind::File ? relative : std::string()};
}

TEST(StaticPath, FilesUnderTheRoute) {
  EXPECT_EQ(classify("/static/app.css").kind, PathKind::File);
  EXPECT_EQ(classify("/static/app.css").relative, "app.css");
  EXPECT_EQ(classify("/static/css/app.css").relative, "css/app.css");
  EXPECT_EQ(classify("/static//css///app.css").relative, "css/app.css");  // empty segments merged
  EXPECT_EQ(classify("/static/my%20file.txt").relative, "my file.txt");
  EXPECT_EQ(classify("/st%61tic/app.css").relative, "app.css");            // matched after decoding
  EXPECT_EQ(classify("/static/.well-known/x").relative, ".well-known/x");  // a dot file is a name
  EXPECT_EQ(classify("/static/a..b").relative, "a..b");
  EXPECT_EQ(classify("/static/%2e%2e.txt").relative, "...txt");
  EXPECT_EQ(classify("/x.css", "").relative, "x.css");  // route "/"
}

TEST(StaticPath, OtherPathsAreNotUnderTheRoute) {
  EXPECT_EQ(classify("/").kind, PathKind::NotUnderRoute);
  EXPECT_EQ(classify("/api/static/x").kind, PathKind::NotUnderRoute);
  EXPECT_EQ(classify("/static2/x").kind, PathKind::NotUnderRoute);
  EXPECT_EQ(classify("/stati").kind, PathKind::NotUnderRoute);
  EXPECT_EQ(classify("/STATIC/x").kind, PathKind::NotUnderRoute);  // case-sensitive
  // An encoded slash outside the route goes to the application untouched.
  EXPECT_EQ(classify("/api/a%2Fb").kind, PathKind::NotUnderRoute);
}

TEST(StaticPath, Directories) {
  EXPECT_EQ(classify("/static").kind, PathKind::Directory);
  EXPECT_EQ(classify("/static/").kind, PathKind::Directory);
  EXPECT_EQ(classify("/static/css/").kind, PathKind::Directory);
  EXPECT_EQ(classify("/static//").kind, PathKind::Directory);
  EXPECT_EQ(classify("/", "").kind, PathKind::Directory);
}

TEST(StaticPath, TraversalIsRefused) {
  for (const char *raw :
       {"/static/../secret", "/static/..", "/static/a/../../secret", "/static/./a.css", "/static/%2e%2e/secret",
        "/static/%2E%2E/secret", "/static/.%2e/secret", "/static/%2e./secret", "/static/%2e/a.css",
        "/static/a%2f..%2f..%2fsecret", "/static/a%2F..%2F..%2Fsecret", "/static%2f..%2fsecret", "/static/a%00.css",
        "/static/%00", "/static/..%2f"}) {
    EXPECT_EQ(classify(raw).kind, PathKind::Refused) << raw;
  }
  // A raw NUL (the HTTP/1 parser refuses it first; another protocol might not).
  EXPECT_EQ(classify(std::string_view("/static/a\0b", 11)).kind, PathKind::Refused);
  std::string longest = "/static/" + std::string(kMaxRelativePath + 1, 'a');
  EXPECT_EQ(classify(longest).kind, PathKind::Refused);
}

TEST(StaticPath, DecodeKeepsInvalidEscapes) {
  std::string storage;
  RequestPath p = decode_path("/a%zz%4", storage);
  EXPECT_EQ(p.path, "/a%zz%4");
  EXPECT_FALSE(p.encoded_slash);
  p = decode_path("/plain", storage);
  EXPECT_EQ(p.path, "/plain");
  p = decode_path("/%2f", storage);
  EXPECT_TRUE(p.encoded_slash);
  p = decode_path("/%00", storage);
  EXPECT_TRUE(p.nul);
}

// ---- ranges ----

struct Parsed {
  RangeKind kind;
  uint64_t first = 0, last = 0;
};

Parsed range(std::string_view value, uint64_t size) {
  ByteRange r;
  RangeKind kind = parse_range(value, size, r);
  return kind == RangeKind::Partial ? Parsed{kind, r.first, r.last} : Parsed{kind};
}

TEST(StaticRange, SingleRanges) {
  Parsed p = range("bytes=0-99", 1000);
  EXPECT_EQ(p.kind, RangeKind::Partial);
  EXPECT_EQ(p.first, 0u);
  EXPECT_EQ(p.last, 99u);
  p = range("bytes=100-", 1000);
  EXPECT_EQ(p.first, 100u);
  EXPECT_EQ(p.last, 999u);
  p = range("bytes=-100", 1000);
  EXPECT_EQ(p.first, 900u);
  EXPECT_EQ(p.last, 999u);
  p = range("bytes=-5000", 1000);  // a suffix longer than the file: all of it
  EXPECT_EQ(p.first, 0u);
  EXPECT_EQ(p.last, 999u);
  p = range("bytes=990-5000", 1000);  // last clipped
  EXPECT_EQ(p.first, 990u);
  EXPECT_EQ(p.last, 999u);
  p = range("Bytes=5-5", 1000);  // the unit is case-insensitive
  EXPECT_EQ(p.first, 5u);
  EXPECT_EQ(p.last, 5u);
  p = range(" bytes= 1-2 ,", 1000);  // OWS and an empty list element
  EXPECT_EQ(p.kind, RangeKind::Partial);
  p = range("bytes=0-99999999999999999999999", 10);  // saturates, clipped
  EXPECT_EQ(p.last, 9u);
}

TEST(StaticRange, Unsatisfiable) {
  EXPECT_EQ(range("bytes=1000-", 1000).kind, RangeKind::Unsatisfiable);
  EXPECT_EQ(range("bytes=1000-2000", 1000).kind, RangeKind::Unsatisfiable);
  EXPECT_EQ(range("bytes=-0", 1000).kind, RangeKind::Unsatisfiable);
  EXPECT_EQ(range("bytes=0-", 0).kind, RangeKind::Unsatisfiable);
  EXPECT_EQ(range("bytes=99999999999999999999999-", 10).kind, RangeKind::Unsatisfiable);
  EXPECT_EQ(range("bytes=-5", 0).kind, RangeKind::Full);  // satisfiable, but nothing to select
}

TEST(StaticRange, IgnoredForms) {
  for (const char *value :
       {"", "bytes", "bytes=", "bytes=abc", "bytes=5-1", "bytes=1-2,3-4", "bytes=0-0,-1", "items=0-1", "bytes=--1",
        "bytes=1-2-3", "bytes=0x1-2", "bytes=-", "bytes 0-1", "bytes=1 -2"}) {
    EXPECT_EQ(range(value, 1000).kind, RangeKind::Full) << value;
  }
}

// ---- validators ----

TEST(StaticEtag, Format) {
  EXPECT_EQ(format_etag(0x10, 0x20, ""), "\"10-20\"");
  EXPECT_EQ(format_etag(1700000000123456789, 10240, "-br"), "\"17979cfe3d85cd15-2800-br\"");
}

TEST(StaticEtag, NoneMatch) {
  const std::string etag = "\"abc-1\"";
  EXPECT_TRUE(none_match("\"abc-1\"", etag));
  EXPECT_TRUE(none_match("W/\"abc-1\"", etag));  // weak comparison
  EXPECT_TRUE(none_match("\"x\", \"abc-1\"", etag));
  EXPECT_TRUE(none_match("\"x\",W/\"abc-1\"", etag));
  EXPECT_TRUE(none_match(" * ", etag));
  EXPECT_FALSE(none_match("\"abc-2\"", etag));
  EXPECT_FALSE(none_match("abc-1", etag));       // unquoted: malformed
  EXPECT_FALSE(none_match("\"abc-1", etag));     // unterminated
  EXPECT_FALSE(none_match("\"x\" junk", etag));  // malformed after a tag
  EXPECT_FALSE(none_match("", etag));
  EXPECT_FALSE(none_match("\"a b\"", etag));  // a space is not etagc
}

TEST(StaticEtag, IfRange) {
  const std::string etag = "\"abc-1\"";
  EXPECT_TRUE(if_range_holds("\"abc-1\"", etag, 0));
  EXPECT_FALSE(if_range_holds("W/\"abc-1\"", etag, 0));  // strong comparison only
  EXPECT_FALSE(if_range_holds("\"abc-2\"", etag, 0));
  EXPECT_FALSE(if_range_holds("\"abc-1\", \"x\"", etag, 0));
  EXPECT_TRUE(if_range_holds("Sun, 06 Nov 1994 08:49:37 GMT", etag, 784111777));
  EXPECT_FALSE(if_range_holds("Sun, 06 Nov 1994 08:49:38 GMT", etag, 784111777));
  EXPECT_FALSE(if_range_holds("tomorrow", etag, 784111777));
  EXPECT_FALSE(if_range_holds("", etag, 0));
}

// ---- dates ----

std::string formatted(int64_t t) {
  char out[kHttpDateLength];
  format_http_date(t, out);
  return std::string(out, kHttpDateLength);
}

TEST(StaticDate, Format) {
  EXPECT_EQ(formatted(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(formatted(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(formatted(951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
  EXPECT_EQ(formatted(4102444799), "Thu, 31 Dec 2099 23:59:59 GMT");
  EXPECT_EQ(formatted(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
}

TEST(StaticDate, ParseTheThreeForms) {
  int64_t t = 0;
  ASSERT_TRUE(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", t));
  EXPECT_EQ(t, 784111777);
  ASSERT_TRUE(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", t));
  EXPECT_EQ(t, 784111777);
  ASSERT_TRUE(parse_http_date("Sun Nov  6 08:49:37 1994", t));
  EXPECT_EQ(t, 784111777);
  ASSERT_TRUE(parse_http_date("Thu Nov 16 08:49:37 1994", t));
  ASSERT_TRUE(parse_http_date("Thursday, 01-Jan-26 00:00:00 GMT", t));
  EXPECT_EQ(formatted(t), "Thu, 01 Jan 2026 00:00:00 GMT");
  ASSERT_TRUE(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT", t));
  EXPECT_EQ(t, 951782400);
}

TEST(StaticDate, ParseRefusesOtherText) {
  int64_t t = 0;
  for (const char *value :
       {"", "yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT", "Mon, 29 Feb 1900 00:00:00 GMT", "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:60:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT extra", "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994", "Sun Nov  6 08:49:37 94"}) {
    EXPECT_FALSE(parse_http_date(value, t)) << value;
  }
}

TEST(StaticDate, RoundTrip) {
  for (int64_t t : {int64_t{0}, int64_t{86399}, int64_t{951868800}, int64_t{1700000000}, int64_t{253402300799}}) {
    int64_t back = -1;
    ASSERT_TRUE(parse_http_date(formatted(t), back)) << formatted(t);
    EXPECT_EQ(back, t);
  }
}

// ---- content codings ----

CodingPrefs prefs(std::string_view value) {
  CodingPrefs p;
  parse_accept_encoding(value, p);
  return p;
}

TEST(StaticCoding, Qualities) {
  CodingPrefs p = prefs("gzip, deflate, br, zstd");
  EXPECT_EQ(p.quality_br(), 1000);
  EXPECT_EQ(p.quality_gzip(), 1000);
  p = prefs("br;q=0, gzip;q=0.5");
  EXPECT_EQ(p.quality_br(), 0);
  EXPECT_EQ(p.quality_gzip(), 500);
  p = prefs("*");
  EXPECT_EQ(p.quality_br(), 1000);
  EXPECT_EQ(p.quality_gzip(), 1000);
  p = prefs("*;q=0.3, gzip;q=0");
  EXPECT_EQ(p.quality_br(), 300);
  EXPECT_EQ(p.quality_gzip(), 0);
  p = prefs("BR ; Q=0.25");
  EXPECT_EQ(p.quality_br(), 250);
  p = prefs("x-gzip");
  EXPECT_EQ(p.quality_gzip(), 1000);
  p = prefs("br;q=2, gzip;q=0.1234, deflate");  // invalid q: the element is dropped
  EXPECT_EQ(p.quality_br(), 0);
  EXPECT_EQ(p.quality_gzip(), 0);
  p = prefs("identity");
  EXPECT_EQ(p.quality_br(), 0);
  EXPECT_EQ(p.quality_gzip(), 0);
  p = prefs("");
  EXPECT_EQ(p.quality_br(), 0);
  p = prefs("br;level=5;q=0.9");
  EXPECT_EQ(p.quality_br(), 900);
}

TEST(StaticCoding, PreferenceOrder) {
  Coding order[2];
  ASSERT_EQ(preferred_codings(prefs("gzip, deflate, br"), order), 2u);
  EXPECT_EQ(order[0], Coding::Brotli);
  EXPECT_EQ(order[1], Coding::Gzip);
  ASSERT_EQ(preferred_codings(prefs("br;q=0.2, gzip;q=0.8"), order), 2u);
  EXPECT_EQ(order[0], Coding::Gzip);
  ASSERT_EQ(preferred_codings(prefs("br;q=0, gzip"), order), 1u);
  EXPECT_EQ(order[0], Coding::Gzip);
  EXPECT_EQ(preferred_codings(prefs("identity, gzip;q=0.5"), order), 0u);
  EXPECT_EQ(preferred_codings(prefs(""), order), 0u);
}

TEST(StaticCoding, Choice) {
  EXPECT_EQ(choose_coding(prefs("gzip, br"), true, true), Coding::Brotli);  // tie: br
  EXPECT_EQ(choose_coding(prefs("gzip, br;q=0.5"), true, true), Coding::Gzip);
  EXPECT_EQ(choose_coding(prefs("gzip, br"), false, true), Coding::Gzip);
  EXPECT_EQ(choose_coding(prefs("br"), false, true), Coding::Identity);
  EXPECT_EQ(choose_coding(prefs("br;q=0, gzip;q=0"), true, true), Coding::Identity);
  EXPECT_EQ(choose_coding(prefs(""), true, true), Coding::Identity);
  EXPECT_EQ(choose_coding(prefs("gzip;q=0.2, identity"), true, true), Coding::Identity);
}

}  // namespace
}  // namespace pronghorn::static_files
