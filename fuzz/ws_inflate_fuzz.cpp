// libFuzzer target for permessage-deflate (engine/ws/deflate.h): the input
// is inflated as a compressed message (max_out 1 MiB), and negotiated as a
// Sec-WebSocket-Extensions value (whole, and cut into two header lines).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/ws/deflate.h"

using pronghorn::ws::DeflateParams;
using pronghorn::ws::Deflater;
using pronghorn::ws::Inflater;

namespace {

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

constexpr size_t kMaxOut = 1 << 20;
constexpr size_t kChunk = 16 * 1024;  // deflate.cpp's output step

// One per process, as in a worker: every call must leave it reset.
Inflater inflater;
Deflater deflater;

void check_params(const DeflateParams &p, const std::string &response, bool accepted) {
  if (!accepted) {
    CHECK(response.empty());
    return;
  }
  CHECK(response.rfind("permessage-deflate; server_no_context_takeover; client_no_context_takeover", 0) == 0);
  CHECK(p.server_no_context_takeover && p.client_no_context_takeover);
  CHECK(p.server_max_window_bits >= 9 && p.server_max_window_bits <= 15);
  CHECK(p.client_max_window_bits >= 9 && p.client_max_window_bits <= 15);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *input = reinterpret_cast<const char *>(data);
  std::string out = "x";
  Inflater::Result r = inflater.decompress(input, size, kMaxOut, out);
  CHECK(out.capacity() <= 1 + kMaxOut + kChunk + 64);
  if (r == Inflater::Result::Ok) {
    CHECK(out.size() <= 1 + kMaxOut);
    CHECK(out[0] == 'x');
    // What came out goes back in and out again unchanged.
    std::string z;
    CHECK(deflater.compress(out.data() + 1, out.size() - 1, 9 + size % 7, z));
    std::string again;
    CHECK(inflater.decompress(z.data(), z.size(), kMaxOut, again) == Inflater::Result::Ok);
    CHECK(again == std::string_view(out).substr(1));
  } else {
    CHECK(out == "x");
  }

  std::string_view text(input, size);
  DeflateParams params;
  std::string response;
  bool accepted = pronghorn::ws::negotiate_deflate(&text, 1, params, response);
  check_params(params, response, accepted);
  // Cut at a comma, the same list on two lines is the same offer list.
  size_t comma = text.find(',');
  if (comma != std::string_view::npos && text.find('"') == std::string_view::npos) {
    std::string_view lines[2] = {text.substr(0, comma), text.substr(comma + 1)};
    DeflateParams params2;
    std::string response2;
    bool accepted2 = pronghorn::ws::negotiate_deflate(lines, 2, params2, response2);
    CHECK(accepted2 == accepted && response2 == response);
  }
  return 0;
}
