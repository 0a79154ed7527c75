// libFuzzer target for the static-file rules (engine/static_files/rules.h)
// and the media type table: the input is used as a request path, a Range
// value, If-None-Match / If-Range values, an HTTP date and an Accept-Encoding
// value. Each call checks the invariants a caller relies on:
// - a path classified as File names something strictly beneath the mount:
//   relative, no "." or ".." segment, no empty segment, no NUL, bounded;
//   and a path with an encoded slash or NUL under the route is never a File;
// - a Partial range lies inside the file, an Unsatisfiable one is for a
//   first position at or past its end (or a zero suffix);
// - a parsed date formats and parses back to itself;
// - qualities stay within 0..1000.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/static_files/media_types.h"
#include "engine/static_files/rules.h"

using namespace pronghorn::static_files;

namespace {

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

void check_path(std::string_view raw, std::string_view route) {
  std::string storage, relative;
  RequestPath path = decode_path(raw, storage);
  PathKind kind = classify_path(path, route, relative);
  if (kind == PathKind::NotUnderRoute) return;
  CHECK(path.path.substr(0, route.size()) == route);
  if (path.encoded_slash || path.nul) CHECK(kind == PathKind::Refused);
  if (kind != PathKind::File) return;
  CHECK(!relative.empty() && relative.size() <= kMaxRelativePath);
  CHECK(relative.front() != '/' && relative.back() != '/');
  CHECK(relative.find('\0') == std::string::npos);
  size_t start = 0;
  while (start <= relative.size()) {
    size_t end = relative.find('/', start);
    if (end == std::string::npos) end = relative.size();
    std::string_view segment(relative.data() + start, end - start);
    CHECK(!segment.empty() && segment != "." && segment != "..");
    start = end + 1;
  }
  (void)media_type(relative);
}

void check_range(std::string_view value, uint64_t size) {
  ByteRange range;
  RangeKind kind = parse_range(value, size, range);
  if (kind == RangeKind::Partial) {
    CHECK(size > 0);
    CHECK(range.first <= range.last);
    CHECK(range.last < size);
  }
  if (kind == RangeKind::Unsatisfiable) CHECK(value.find('=') != std::string_view::npos);
}

void check_date(std::string_view value) {
  int64_t t = 0;
  if (!parse_http_date(value, t)) return;
  char out[kHttpDateLength];
  format_http_date(t, out);
  int64_t back = -1;
  CHECK(parse_http_date(std::string_view(out, kHttpDateLength), back));
  CHECK(back == t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view input(reinterpret_cast<const char *>(data), size);
  check_path(input, "/static");
  check_path(input, "");
  check_path(input, "/a/b");
  for (uint64_t file_size : {uint64_t{0}, uint64_t{1}, uint64_t{1000}, uint64_t{1} << 40})
    check_range(input, file_size);
  const std::string etag = format_etag(1700000000123456789, 1000, "-br");
  // A match needs "*" or the tag itself in the value.
  if (none_match(input, etag))
    CHECK(input.find('*') != std::string_view::npos || input.find(etag) != std::string_view::npos);
  (void)if_range_holds(input, etag, 1700000000);
  check_date(input);
  CodingPrefs prefs;
  parse_accept_encoding(input, prefs);
  CHECK(prefs.quality_br() >= 0 && prefs.quality_br() <= 1000);
  CHECK(prefs.quality_gzip() >= 0 && prefs.quality_gzip() <= 1000);
  Coding coding = choose_coding(prefs, true, true);
  if (coding == Coding::Brotli) CHECK(prefs.quality_br() > 0);
  if (coding == Coding::Gzip) CHECK(prefs.quality_gzip() > 0);
  std::string route;
  (void)normalise_route(input, route);
  return 0;
}
