// permessage-deflate (RFC 7692): the offer parser and the zlib streams.
#include "engine/ws/deflate.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "engine/text.h"

namespace pronghorn::ws {
namespace {

// RFC 7692 §7.2.1: every message compressed with Z_SYNC_FLUSH ends in an
// empty stored block, which the sender removes and the receiver adds back.
constexpr unsigned char kTail[4] = {0x00, 0x00, 0xff, 0xff};

// Output is produced this much at a time (and a zip bomb may cost this much
// beyond max_out before it is caught).
constexpr size_t kChunk = 16 * 1024;

// zlib counts in uInt: longer inputs go in slices.
constexpr size_t kMaxSlice = 1u << 30;

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

// RFC 9110 §5.6.2 tchar.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

// Splits `s` at each `sep` that is not inside a quoted-string. Calls
// f(piece) for every piece (empty ones too); stops early when f returns false.
template <typename F>
void split_unquoted(std::string_view s, char sep, F &&f) {
  size_t start = 0;
  bool quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quoted) {
      if (c == '\\')
        ++i;  // quoted-pair: skip the escaped character
      else if (c == '"')
        quoted = false;
    } else if (c == '"') {
      quoted = true;
    } else if (c == sep) {
      if (!f(s.substr(start, i - start))) return;
      start = i + 1;
    }
  }
  f(s.substr(start));
}

// A parameter value: a token or a quoted-string (RFC 6455 §9.1 says the
// unquoted value must then be a token). False if malformed.
bool param_value(std::string_view raw, std::string &value) {
  value.clear();
  if (!raw.empty() && raw.front() == '"') {
    if (raw.size() < 2 || raw.back() != '"') return false;
    for (size_t i = 1; i + 1 < raw.size(); ++i) {
      char c = raw[i];
      if (c == '\\') {
        if (i + 2 >= raw.size()) return false;  // a backslash escaping the closing quote
        c = raw[++i];
      } else if (c == '"') {
        return false;
      }
      value.push_back(c);
    }
  } else {
    value.assign(raw);
  }
  return is_token(value);
}

// Window bits as RFC 7692 §7.1.2 writes them: 8..15, no leading zero.
int window_bits(std::string_view v) {
  if (v.size() == 1 && v[0] >= '8' && v[0] <= '9') return v[0] - '0';
  if (v.size() == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + (v[1] - '0');
  return 0;
}

// One offer: "permessage-deflate; param; param=value". True and `params` /
// `response` filled if we accept it.
bool accept_offer(std::string_view element, DeflateParams &params, std::string &response) {
  bool first = true, ok = true, is_deflate = false;
  bool seen_snct = false, seen_cnct = false, seen_smwb = false, seen_cmwb = false;
  int server_bits = 0;  // as offered; 0: not offered
  int client_bits = 0;  // as offered; 0: offered without a value (or not at all: see seen_cmwb)
  std::string value;
  split_unquoted(element, ';', [&](std::string_view part) {
    part = trim_ows(part);
    if (first) {
      first = false;
      is_deflate = iequals(part, "permessage-deflate");
      return is_deflate;
    }
    std::string_view name = part, raw;
    bool has_value = false;
    if (size_t eq = part.find('='); eq != std::string_view::npos) {
      name = trim_ows(part.substr(0, eq));
      raw = trim_ows(part.substr(eq + 1));
      has_value = true;
      if (!param_value(raw, value)) return ok = false;
    }
    if (iequals(name, "server_no_context_takeover")) {
      if (seen_snct || has_value) return ok = false;
      seen_snct = true;
    } else if (iequals(name, "client_no_context_takeover")) {
      if (seen_cnct || has_value) return ok = false;
      seen_cnct = true;
    } else if (iequals(name, "server_max_window_bits")) {
      if (seen_smwb || !has_value) return ok = false;
      seen_smwb = true;
      server_bits = window_bits(value);
      if (server_bits == 0) return ok = false;
    } else if (iequals(name, "client_max_window_bits")) {
      if (seen_cmwb) return ok = false;
      seen_cmwb = true;
      if (has_value) {
        client_bits = window_bits(value);
        if (client_bits == 0) return ok = false;
      }
    } else {
      return ok = false;  // unknown parameter (RFC 7692 §5: decline the offer)
    }
    return true;
  });
  if (!is_deflate || !ok) return false;

  // Our policy (deflate.h): no context takeover either way, always, so that
  // the zlib streams are per worker, not per connection. zlib will not open a
  // raw stream with an 8-bit window, so 8 is used as 9: a 9-bit deflate never
  // emits a distance beyond 512 - 262 = 250 (zlib's MAX_DIST), which an 8-bit
  // window decodes, so echoing 8 stays truthful.
  params = DeflateParams{};
  response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
  if (seen_smwb) {
    params.server_max_window_bits = std::max(server_bits, 9);
    response += "; server_max_window_bits=";
    response += std::to_string(server_bits);
  }
  if (seen_cmwb) {
    // Told explicitly so the client need not guess; we inflate with a
    // 15-bit window, which decodes any smaller one.
    int bits = client_bits == 0 ? 15 : client_bits;
    params.client_max_window_bits = std::max(bits, 9);
    response += "; client_max_window_bits=";
    response += std::to_string(bits);
  }
  return true;
}

}  // namespace

bool negotiate_deflate(const std::vector<std::string> &offers, DeflateParams &params, std::string &response) {
  std::vector<std::string_view> views(offers.begin(), offers.end());
  return negotiate_deflate(views.data(), views.size(), params, response);
}

bool negotiate_deflate(const std::string_view *offers, size_t count, DeflateParams &params, std::string &response) {
  params = DeflateParams{};
  response.clear();
  for (size_t i = 0; i < count; ++i) {
    bool accepted = false;
    split_unquoted(offers[i], ',', [&](std::string_view element) {
      element = trim_ows(element);
      if (!element.empty() && accept_offer(element, params, response)) accepted = true;
      return !accepted;
    });
    if (accepted) return true;
  }
  return false;
}

Deflater::~Deflater() {
  if (window_bits_ != 0) deflateEnd(&stream_);
}

bool Deflater::compress(const char *data, size_t len, int window_bits, std::string &out) {
  window_bits = std::clamp(window_bits, 9, 15);  // raw deflate: zlib refuses 8
  if (window_bits != window_bits_) {
    if (window_bits_ != 0) deflateEnd(&stream_);
    window_bits_ = 0;
    stream_ = z_stream{};
    // memLevel 8: zlib's default; the stream is one per worker, so its
    // ~256 KiB does not multiply with connections.
    if (deflateInit2(&stream_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      return false;
    window_bits_ = window_bits;
  }
  const size_t base = out.size();
  size_t produced = 0;
  bool ok = true;
  // Room for the whole result in the usual case (deflateBound is for
  // Z_FINISH; the flush markers add a few bytes, the loop covers any rest).
  out.resize(base + deflateBound(&stream_, static_cast<uLong>(std::min(len, kMaxSlice))) + 16);
  size_t offset = 0;
  do {
    size_t slice = std::min(len - offset, kMaxSlice);
    stream_.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(data + offset));
    stream_.avail_in = static_cast<uInt>(slice);
    offset += slice;
    const int flush = offset == len ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    do {
      if (out.size() - base - produced < 64) out.resize(out.size() + std::max(kChunk, (out.size() - base) / 2));
      size_t room = std::min(out.size() - base - produced, kMaxSlice);
      stream_.next_out = reinterpret_cast<Bytef *>(out.data() + base + produced);
      stream_.avail_out = static_cast<uInt>(room);
      int rc = deflate(&stream_, flush);
      produced += room - stream_.avail_out;
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        ok = false;
        break;
      }
      // Done with this slice when zlib left output room unused: all input
      // taken and (for the flush) everything written out.
    } while (stream_.avail_out == 0 || stream_.avail_in != 0);
  } while (ok && offset < len);
  if (ok && produced >= 4 && std::memcmp(out.data() + base + produced - 4, kTail, 4) == 0) {
    produced -= 4;
  } else {
    ok = false;  // Z_SYNC_FLUSH always ends in the empty stored block
  }
  out.resize(ok ? base + produced : base);
  if (deflateReset(&stream_) != Z_OK) {
    deflateEnd(&stream_);
    window_bits_ = 0;
  }
  return ok;
}

Inflater::~Inflater() {
  if (ready_) inflateEnd(&stream_);
}

namespace {

// Makes room in `out` for at least `want` bytes of capacity, never beyond
// `limit`: std::string's own growth doubles, which past max_out would let a
// zip bomb cost twice the bound.
void grow(std::string &out, size_t limit) {
  size_t cap = out.capacity();
  size_t want = std::min(std::max(cap * 2, out.size() + kChunk), limit);
  if (want <= cap) return;
  if (want >= cap * 2) {
    out.reserve(want);  // exactly `want`: no doubling past it
  } else {
    std::string bigger;
    bigger.reserve(want);
    bigger.append(out);
    out.swap(bigger);
  }
}

}  // namespace

Inflater::Result Inflater::decompress(const char *data, size_t len, size_t max_out, std::string &out) {
  if (!ready_) {
    stream_ = z_stream{};
    // Window 15 inflates whatever window the client compressed with.
    if (inflateInit2(&stream_, -15) != Z_OK) return Result::Invalid;
    ready_ = true;
  }
  const size_t base = out.size();
  // One byte more than allowed is the proof that the message is too big.
  const size_t limit = base + (max_out > SIZE_MAX - base - 1 ? SIZE_MAX - base - 1 : max_out) + 1;
  size_t produced = 0;
  Result result = Result::Ok;
  bool finished = false;  // the stream ended (a final block) or the input is used up
  size_t offset = 0;
  bool tail_fed = false;
  while (!finished && result == Result::Ok) {
    // The next input: the message in slices, then the 00 00 ff ff tail.
    if (offset < len) {
      size_t slice = std::min(len - offset, kMaxSlice);
      stream_.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(data + offset));
      stream_.avail_in = static_cast<uInt>(slice);
      offset += slice;
    } else {
      stream_.next_in = const_cast<Bytef *>(kTail);
      stream_.avail_in = 4;
      tail_fed = true;
    }
    while (true) {
      if (out.size() == out.capacity()) grow(out, limit);
      size_t room = std::min({out.capacity() - out.size(), limit - std::min(limit, out.size()), kMaxSlice});
      if (room == 0) {  // at limit: max_out + 1 bytes produced
        result = Result::TooBig;
        break;
      }
      size_t old = out.size();
      out.resize(old + room);  // within capacity: no allocation
      stream_.next_out = reinterpret_cast<Bytef *>(out.data() + old);
      stream_.avail_out = static_cast<uInt>(room);
      int rc = inflate(&stream_, Z_SYNC_FLUSH);
      size_t got = room - stream_.avail_out;
      out.resize(old + got);
      produced += got;
      if (produced > max_out) {
        result = Result::TooBig;
        break;
      }
      if (rc == Z_STREAM_END) {  // the client ended the stream with a final block
        finished = true;
        break;
      }
      if (rc == Z_BUF_ERROR) break;  // no progress possible: needs more input
      if (rc != Z_OK) {
        result = Result::Invalid;  // Z_DATA_ERROR, Z_NEED_DICT, Z_MEM_ERROR, Z_STREAM_ERROR
        break;
      }
      if (stream_.avail_in == 0 && stream_.avail_out != 0) break;  // input used, output flushed
    }
    if (tail_fed) finished = true;
  }
  if (result != Result::Ok) out.resize(base);
  if (inflateReset(&stream_) != Z_OK) {
    inflateEnd(&stream_);
    ready_ = false;
  }
  return result;
}

}  // namespace pronghorn::ws
