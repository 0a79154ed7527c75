// The rules of static file serving that need no I/O: which file a request
// path names beneath a route (and which paths are refused), byte ranges
// (RFC 9110 §14), conditional requests (§13: If-None-Match,
// If-Modified-Since, If-Range), HTTP dates (§5.6.7), entity-tags and
// Accept-Encoding (§12.5.3). The handler (handler.h) does the I/O; these are
// unit-tested and fuzzed on their own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pronghorn::static_files {

// ---- routes and paths ----

// A route as given (--static-path-route) in the form matching uses: it must
// start with '/'; trailing slashes are dropped ("/" becomes "", which every
// path is under). Returns nullptr, or why the route is refused.
const char *normalise_route(std::string_view route, std::string &out);

// The path of a request-target, percent-decoded.
struct RequestPath {
  std::string_view path;       // decoded (a view of the raw path, or of the caller's storage)
  bool encoded_slash = false;  // "%2F" was decoded: the client's segments are not the ones seen here
  bool nul = false;            // a NUL byte (only "%00" can make one)
};

// Decodes `raw` (the target's path, without the query) into `storage` when
// it has a '%', else returns a view of `raw` itself.
RequestPath decode_path(std::string_view raw, std::string &storage);

enum class PathKind {
  NotUnderRoute,  // another route's, or the application's
  Refused,        // under the route, in a form that could name something outside it: 404
  Directory,      // the route itself, or a path ending in '/': 404 (no listings)
  File            // `relative` names what to open beneath the mount
};

// Where `path` falls relative to `route` (normalised). A path is under the
// route when it equals it or continues it with '/'. Refused: an encoded
// slash, a NUL byte, a "." or ".." segment (decoded, so %2e%2e too), or a
// relative path longer than kMaxRelativePath. Empty segments ("a//b") are
// merged. `relative` gets the segments joined by '/' (no leading '/').
inline constexpr size_t kMaxRelativePath = 4000;
PathKind classify_path(const RequestPath &path, std::string_view route, std::string &relative);

// ---- byte ranges (RFC 9110 §14.1.2, §14.2) ----

enum class RangeKind {
  Full,          // no usable Range: the whole representation (absent, invalid, another unit, several ranges)
  Partial,       // one satisfiable range: [first, last], inclusive
  Unsatisfiable  // one range that selects nothing of `size` bytes: 416
};
struct ByteRange {
  uint64_t first = 0;
  uint64_t last = 0;  // inclusive
};
RangeKind parse_range(std::string_view value, uint64_t size, ByteRange &range);

// ---- validators and conditions ----

// A strong entity-tag for a representation: "\"<mtime ns hex>-<size hex><suffix>\"".
// `suffix` tells the precompressed variants apart ("-br", "-gz").
std::string format_etag(int64_t mtime_ns, uint64_t size, std::string_view suffix);

// If-None-Match (§13.1.2): "*" or a list of entity-tags, compared weakly
// with `etag`. True when it matches (GET/HEAD then answer 304). A value
// that does not parse matches nothing.
bool none_match(std::string_view if_none_match, std::string_view etag);

// If-Range (§13.1.5): true when the range may be applied: the value is
// `etag` (strong comparison: a weak tag never matches) or an HTTP-date equal
// to the representation's modification time.
bool if_range_holds(std::string_view if_range, std::string_view etag, int64_t mtime_s);

// ---- HTTP dates (§5.6.7) ----

inline constexpr size_t kHttpDateLength = 29;  // "Sun, 06 Nov 1994 08:49:37 GMT"
// Writes the IMF-fixdate of `unix_s` (0001..9999) to out[0..29) (no NUL).
void format_http_date(int64_t unix_s, char *out);
// IMF-fixdate, and the obsolete RFC 850 and asctime forms that recipients
// must accept. False when `value` is none of them.
bool parse_http_date(std::string_view value, int64_t &unix_s);

// ---- content codings (§12.5.3) ----

// The qualities (0..1000, thousandths) an Accept-Encoding value gives the
// precompressed codings served here. Several header lines may be fed in
// turn. A coding the client names gets its own q; one it does not name gets
// the q of "*" if present; "q=0" refuses it.
struct CodingPrefs {
  int br = -1;        // -1: not named
  int gzip = -1;      // ("x-gzip" too)
  int star = -1;      // "*"
  int identity = -1;  // -1: not named (acceptable)
  int quality_br() const { return br >= 0 ? br : star > 0 ? star : 0; }
  int quality_gzip() const { return gzip >= 0 ? gzip : star > 0 ? star : 0; }
};
void parse_accept_encoding(std::string_view value, CodingPrefs &prefs);

enum class Coding { Identity, Brotli, Gzip };
// The precompressed codings the client accepts, most preferred first (the
// higher q; br on a tie), leaving out those it likes less than identity.
// Returns how many were written to `out` (0..2).
size_t preferred_codings(const CodingPrefs &prefs, Coding out[2]);
// The coding to send among those available (a sibling file exists): the
// first of preferred_codings() that is available; Identity when none.
Coding choose_coding(const CodingPrefs &prefs, bool have_br, bool have_gzip);

}  // namespace pronghorn::static_files
