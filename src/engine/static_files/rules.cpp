#include "engine/static_files/rules.h"

#include <cinttypes>
#include <cstdio>

#include "engine/text.h"

namespace pronghorn::static_files {

namespace {

constexpr uint64_t kSaturated = UINT64_MAX;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// 1*DIGIT, saturating at UINT64_MAX (a position past any file). False when
// empty or not all digits.
bool parse_digits(std::string_view s, uint64_t &value) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    v = v > (kSaturated - d) / 10 ? kSaturated : v * 10 + d;
  }
  value = v;
  return true;
}

}  // namespace

// ---- routes and paths ----

const char *normalise_route(std::string_view route, std::string &out) {
  if (route.empty() || route[0] != '/') return "a route must start with '/'";
  for (char c : route)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '?' || c == '#' || c == '%')
      return "a route must be a plain path (no control characters, '?', '#' or '%')";
  while (!route.empty() && route.back() == '/') route.remove_suffix(1);
  // "." and ".." segments would never match a request (they are refused).
  for (size_t start = 1; start <= route.size();) {
    size_t end = route.find('/', start);
    if (end == std::string_view::npos) end = route.size();
    std::string_view segment = route.substr(start, end - start);
    if (segment == "." || segment == "..") return "a route must not have '.' or '..' segments";
    start = end + 1;
  }
  out.assign(route);
  return nullptr;
}

RequestPath decode_path(std::string_view raw, std::string &storage) {
  RequestPath result;
  if (raw.find('%') == std::string_view::npos) {
    result.path = raw;
    result.nul = raw.find('\0') != std::string_view::npos;
    return result;
  }
  storage.clear();
  storage.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '%' && i + 2 < raw.size()) {
      int hi = hex_digit(static_cast<unsigned char>(raw[i + 1]));
      int lo = hex_digit(static_cast<unsigned char>(raw[i + 2]));
      if (hi >= 0 && lo >= 0) {
        c = static_cast<char>(hi * 16 + lo);
        if (c == '/') result.encoded_slash = true;
        i += 2;
      }
    }
    if (c == '\0') result.nul = true;
    storage.push_back(c);
  }
  result.path = storage;
  return result;
}

PathKind classify_path(const RequestPath &path, std::string_view route, std::string &relative) {
  std::string_view p = path.path;
  if (p.size() < route.size() || p.compare(0, route.size(), route) != 0) return PathKind::NotUnderRoute;
  std::string_view rest = p.substr(route.size());
  if (!rest.empty() && rest[0] != '/') return PathKind::NotUnderRoute;  // "/static2" is not under "/static"
  if (path.encoded_slash || path.nul) return PathKind::Refused;
  relative.clear();
  for (size_t start = 0; start < rest.size();) {
    size_t end = rest.find('/', start);
    if (end == std::string_view::npos) end = rest.size();
    std::string_view segment = rest.substr(start, end - start);
    start = end + 1;
    if (segment.empty()) continue;
    if (segment == "." || segment == "..") return PathKind::Refused;
    if (!relative.empty()) relative.push_back('/');
    relative.append(segment);
    if (relative.size() > kMaxRelativePath) return PathKind::Refused;
  }
  if (relative.empty() || rest.back() == '/') return PathKind::Directory;
  return PathKind::File;
}

// ---- byte ranges ----

RangeKind parse_range(std::string_view value, uint64_t size, ByteRange &range) {
  value = trim_ows(value);
  constexpr std::string_view kUnit = "bytes=";
  if (value.size() < kUnit.size() || !iequals(value.substr(0, kUnit.size()), kUnit)) return RangeKind::Full;
  value.remove_prefix(kUnit.size());
  // 1#range-spec: empty list elements are allowed and ignored (§5.6.1.2).
  std::string_view spec;
  size_t specs = 0;
  for (size_t start = 0; start <= value.size();) {
    size_t end = value.find(',', start);
    if (end == std::string_view::npos) end = value.size();
    std::string_view element = trim_ows(value.substr(start, end - start));
    start = end + 1;
    if (element.empty()) continue;
    spec = element;
    ++specs;
  }
  // Several ranges are answered with the whole representation (allowed: a
  // server may ignore Range), which also avoids multipart/byteranges.
  if (specs != 1) return RangeKind::Full;
  size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return RangeKind::Full;
  std::string_view first_text = spec.substr(0, dash), last_text = spec.substr(dash + 1);
  if (first_text.empty()) {
    uint64_t suffix = 0;
    if (!parse_digits(last_text, suffix)) return RangeKind::Full;
    if (suffix == 0) return RangeKind::Unsatisfiable;
    // A non-zero suffix of an empty representation is satisfiable (§14.1.2)
    // but has no bytes to select: the whole (empty) representation.
    if (size == 0) return RangeKind::Full;
    range.first = suffix >= size ? 0 : size - suffix;
    range.last = size - 1;
    return RangeKind::Partial;
  }
  uint64_t first = 0, last = kSaturated;
  if (!parse_digits(first_text, first)) return RangeKind::Full;
  if (!last_text.empty()) {
    if (!parse_digits(last_text, last)) return RangeKind::Full;
    if (last < first) return RangeKind::Full;  // invalid: ignored
  }
  if (first >= size) return RangeKind::Unsatisfiable;
  range.first = first;
  range.last = last >= size ? size - 1 : last;
  return RangeKind::Partial;
}

// ---- validators and conditions ----

std::string format_etag(int64_t mtime_ns, uint64_t size, std::string_view suffix) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, "\"%" PRIx64 "-%" PRIx64, static_cast<uint64_t>(mtime_ns), size);
  std::string etag(buf, static_cast<size_t>(n));
  etag.append(suffix);
  etag.push_back('"');
  return etag;
}

namespace {

// One entity-tag at the start of `s` (§8.8.3: [ "W/" ] DQUOTE *etagc DQUOTE);
// its opaque part (with the quotes) and whether it is weak. Returns the
// length taken, 0 when there is none.
size_t take_entity_tag(std::string_view s, std::string_view &opaque, bool &weak) {
  size_t i = 0;
  weak = false;
  if (s.size() >= 2 && s[0] == 'W' && s[1] == '/') {
    weak = true;
    i = 2;
  }
  if (i >= s.size() || s[i] != '"') return 0;
  size_t close = i + 1;
  while (close < s.size() && s[close] != '"') {
    unsigned char c = static_cast<unsigned char>(s[close]);
    // etagc = %x21 / %x23-7E / obs-text
    if (c < 0x21 || c == 0x7f) return 0;
    ++close;
  }
  if (close >= s.size()) return 0;
  opaque = s.substr(i, close + 1 - i);
  return close + 1;
}

}  // namespace

bool none_match(std::string_view if_none_match, std::string_view etag) {
  std::string_view value = trim_ows(if_none_match);
  if (value == "*") return true;
  std::string_view ours = etag;
  if (ours.size() >= 2 && ours[0] == 'W' && ours[1] == '/') ours.remove_prefix(2);
  while (!value.empty()) {
    // List separators and whitespace between the tags.
    if (value[0] == ',' || value[0] == ' ' || value[0] == '\t') {
      value.remove_prefix(1);
      continue;
    }
    std::string_view opaque;
    bool weak = false;
    size_t n = take_entity_tag(value, opaque, weak);
    if (n == 0) return false;  // malformed: match nothing (send the representation)
    if (opaque == ours) return true;
    value.remove_prefix(n);
  }
  return false;
}

bool if_range_holds(std::string_view if_range, std::string_view etag, int64_t mtime_s) {
  std::string_view value = trim_ows(if_range);
  if (value.empty()) return false;
  if (value[0] == '"' || (value.size() >= 2 && value[0] == 'W' && value[1] == '/')) {
    std::string_view opaque;
    bool weak = false;
    size_t n = take_entity_tag(value, opaque, weak);
    return n == value.size() && !weak && opaque == etag;
  }
  int64_t date = 0;
  return parse_http_date(value, date) && date == mtime_s;
}

// ---- HTTP dates ----

namespace {

constexpr const char *kDayNames[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char *kLongDayNames[7] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
constexpr const char *kMonthNames[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Days since 1970-01-01 of a proleptic Gregorian date (month 1..12).
int64_t days_from_civil(int64_t year, int64_t month, int64_t day) {
  year -= month <= 2;
  int64_t era = (year >= 0 ? year : year - 399) / 400;
  int64_t year_of_era = year - era * 400;
  int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

void civil_from_days(int64_t days, int64_t &year, int &month, int &day) {
  days += 719468;
  int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  int64_t day_of_era = days - era * 146097;
  int64_t year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  int64_t mp = (5 * day_of_year + 2) / 153;
  day = static_cast<int>(day_of_year - (153 * mp + 2) / 5 + 1);
  month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  year = year_of_era + era * 400 + (month <= 2);
}

bool leap_year(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int days_in_month(int64_t year, int month) {
  static const int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && leap_year(year) ? 29 : kDays[month - 1];
}

void put2(char *out, int v) {
  out[0] = static_cast<char>('0' + v / 10 % 10);
  out[1] = static_cast<char>('0' + v % 10);
}

// A fixed number of digits at s[at..at+n).
bool fixed_digits(std::string_view s, size_t at, size_t n, int &value) {
  if (at + n > s.size()) return false;
  int v = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (!is_digit(s[i])) return false;
    v = v * 10 + (s[i] - '0');
  }
  value = v;
  return true;
}

int month_index(std::string_view s) {
  for (int i = 0; i < 12; ++i)
    if (s == kMonthNames[i]) return i + 1;
  return 0;
}

// "HH:MM:SS" at s[at..at+8).
bool time_of_day(std::string_view s, size_t at, int &h, int &m, int &sec) {
  if (at + 8 > s.size() || s[at + 2] != ':' || s[at + 5] != ':') return false;
  return fixed_digits(s, at, 2, h) && fixed_digits(s, at + 3, 2, m) && fixed_digits(s, at + 6, 2, sec) && h < 24 &&
         m < 60 && sec <= 60;
}

bool assemble(int64_t year, int month, int day, int h, int m, int sec, int64_t &unix_s) {
  if (month < 1 || day < 1 || day > days_in_month(year, month)) return false;
  if (sec == 60) sec = 59;  // a leap second: the same second for our purposes
  unix_s = days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec;
  return true;
}

}  // namespace

void format_http_date(int64_t unix_s, char *out) {
  int64_t days = unix_s >= 0 ? unix_s / 86400 : (unix_s - 86399) / 86400;
  int64_t secs = unix_s - days * 86400;
  int64_t year = 0;
  int month = 1, day = 1;
  civil_from_days(days, year, month, day);
  if (year < 1) year = 1;
  if (year > 9999) year = 9999;
  int weekday = static_cast<int>(((days % 7) + 11) % 7);  // 1970-01-01 was a Thursday (4)
  const char *name = kDayNames[weekday];
  out[0] = name[0];
  out[1] = name[1];
  out[2] = name[2];
  out[3] = ',';
  out[4] = ' ';
  put2(out + 5, day);
  out[7] = ' ';
  const char *mon = kMonthNames[month - 1];
  out[8] = mon[0];
  out[9] = mon[1];
  out[10] = mon[2];
  out[11] = ' ';
  put2(out + 12, static_cast<int>(year / 100));
  put2(out + 14, static_cast<int>(year % 100));
  out[16] = ' ';
  put2(out + 17, static_cast<int>(secs / 3600));
  out[19] = ':';
  put2(out + 20, static_cast<int>(secs / 60 % 60));
  out[22] = ':';
  put2(out + 23, static_cast<int>(secs % 60));
  out[25] = ' ';
  out[26] = 'G';
  out[27] = 'M';
  out[28] = 'T';
}

bool parse_http_date(std::string_view value, int64_t &unix_s) {
  std::string_view s = trim_ows(value);
  int day = 0, year4 = 0, h = 0, m = 0, sec = 0;
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  if (s.size() == 29 && s[3] == ',' && s[4] == ' ' && s[7] == ' ' && s[11] == ' ' && s[16] == ' ' &&
      s.substr(25) == " GMT") {
    bool known_day = false;
    for (const char *name : kDayNames) known_day = known_day || s.substr(0, 3) == name;
    int month = month_index(s.substr(8, 3));
    if (!known_day || month == 0 || !fixed_digits(s, 5, 2, day) || !fixed_digits(s, 12, 4, year4) ||
        !time_of_day(s, 17, h, m, sec))
      return false;
    return assemble(year4, month, day, h, m, sec, unix_s);
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
  size_t comma = s.find(',');
  if (comma != std::string_view::npos && comma >= 6) {
    bool known_day = false;
    for (const char *name : kLongDayNames) known_day = known_day || s.substr(0, comma) == name;
    std::string_view rest = s.substr(comma + 1);
    int year2 = 0;
    if (!known_day || rest.size() != 23 || rest[0] != ' ' || rest[3] != '-' || rest[7] != '-' || rest[10] != ' ' ||
        rest.substr(19) != " GMT")
      return false;
    int month = month_index(rest.substr(4, 3));
    if (month == 0 || !fixed_digits(rest, 1, 2, day) || !fixed_digits(rest, 8, 2, year2) ||
        !time_of_day(rest, 11, h, m, sec))
      return false;
    // Two-digit years (§5.6.7): 70..99 are the 1900s, the rest the 2000s.
    return assemble(year2 >= 70 ? 1900 + year2 : 2000 + year2, month, day, h, m, sec, unix_s);
  }
  // asctime: "Sun Nov  6 08:49:37 1994"
  if (s.size() == 24 && s[3] == ' ' && s[7] == ' ' && s[10] == ' ' && s[19] == ' ') {
    bool known_day = false;
    for (const char *name : kDayNames) known_day = known_day || s.substr(0, 3) == name;
    int month = month_index(s.substr(4, 3));
    if (s[8] == ' ') {
      if (!fixed_digits(s, 9, 1, day)) return false;
    } else if (!fixed_digits(s, 8, 2, day)) {
      return false;
    }
    if (!known_day || month == 0 || !time_of_day(s, 11, h, m, sec) || !fixed_digits(s, 20, 4, year4)) return false;
    return assemble(year4, month, day, h, m, sec, unix_s);
  }
  return false;
}

// ---- content codings ----

namespace {

// qvalue (§12.4.2): "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ], in thousandths; -1 when invalid.
int parse_qvalue(std::string_view s) {
  if (s.empty() || (s[0] != '0' && s[0] != '1')) return -1;
  int whole = s[0] - '0';
  if (s.size() == 1) return whole * 1000;
  if (s[1] != '.' || s.size() > 5) return -1;
  int frac = 0, digits = 0;
  for (size_t i = 2; i < s.size(); ++i) {
    if (!is_digit(s[i])) return -1;
    frac = frac * 10 + (s[i] - '0');
    ++digits;
  }
  for (; digits < 3; ++digits) frac *= 10;
  if (whole == 1 && frac != 0) return -1;
  return whole * 1000 + frac;
}

}  // namespace

void parse_accept_encoding(std::string_view value, CodingPrefs &prefs) {
  for (size_t start = 0; start <= value.size();) {
    size_t end = value.find(',', start);
    if (end == std::string_view::npos) end = value.size();
    std::string_view element = trim_ows(value.substr(start, end - start));
    start = end + 1;
    if (element.empty()) continue;
    size_t semi = element.find(';');
    std::string_view coding = trim_ows(element.substr(0, semi));
    int q = 1000;
    // Parameters: only "q" means anything here; an invalid q drops the element.
    bool valid = true;
    while (semi != std::string_view::npos) {
      std::string_view rest = element.substr(semi + 1);
      size_t next = rest.find(';');
      std::string_view param = trim_ows(rest.substr(0, next));
      semi = next == std::string_view::npos ? next : semi + 1 + next;
      size_t eq = param.find('=');
      if (eq == std::string_view::npos) continue;
      if (iequals(trim_ows(param.substr(0, eq)), "q")) {
        q = parse_qvalue(trim_ows(param.substr(eq + 1)));
        if (q < 0) valid = false;
      }
    }
    if (!valid || coding.empty()) continue;
    if (iequals(coding, "br"))
      prefs.br = q;
    else if (iequals(coding, "gzip") || iequals(coding, "x-gzip"))
      prefs.gzip = q;
    else if (coding == "*")
      prefs.star = q;
    else if (iequals(coding, "identity"))
      prefs.identity = q;
  }
}

size_t preferred_codings(const CodingPrefs &prefs, Coding out[2]) {
  int br = prefs.quality_br(), gzip = prefs.quality_gzip();
  // A client that prefers the uncompressed form says so with a higher q.
  auto wanted = [&prefs](int q) { return q > 0 && prefs.identity <= q; };
  size_t n = 0;
  if (br >= gzip) {
    if (wanted(br)) out[n++] = Coding::Brotli;
    if (wanted(gzip)) out[n++] = Coding::Gzip;
  } else {
    if (wanted(gzip)) out[n++] = Coding::Gzip;
    if (wanted(br)) out[n++] = Coding::Brotli;
  }
  return n;
}

Coding choose_coding(const CodingPrefs &prefs, bool have_br, bool have_gzip) {
  Coding order[2];
  size_t n = preferred_codings(prefs, order);
  for (size_t i = 0; i < n; ++i)
    if ((order[i] == Coding::Brotli && have_br) || (order[i] == Coding::Gzip && have_gzip)) return order[i];
  return Coding::Identity;
}

}  // namespace pronghorn::static_files
