// libFuzzer target for the WebSocket frame decoder (engine/ws/frame.h).
//
// Input layout: byte 0 chooses whether an Inflater is set (bit 0) and, with
// the last byte, where the stream is split; the rest is the client's byte
// stream. It is decoded twice, whole and in two pieces, with max_message
// 64 KiB; both runs must report the same events, and every event must keep
// the decoder's promises (sizes, UTF-8, close codes).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "engine/ws/deflate.h"
#include "engine/ws/frame.h"
#include "engine/ws/utf8.h"

using pronghorn::ws::Inflater;
using pronghorn::ws::MessageDecoder;
using Event = MessageDecoder::Event;

namespace {

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

constexpr uint64_t kMaxMessage = 64 * 1024;

struct Record {
  Event type;
  std::string data;
  bool text;
  uint16_t code;
  bool operator==(const Record &) const = default;
};

std::vector<Record> run(const std::vector<std::string_view> &pieces, bool inflate) {
  MessageDecoder decoder(kMaxMessage);
  Inflater inflater;
  if (inflate) decoder.set_inflater(&inflater);
  std::vector<Record> records;
  for (std::string_view piece : pieces) {
    size_t off = 0;
    while (true) {
      size_t consumed = 0;
      Event e = decoder.decode(piece.data() + off, piece.size() - off, consumed);
      CHECK(consumed <= piece.size() - off);
      off += consumed;
      Record r{e, "", false, 0};
      switch (e) {
        case Event::None: CHECK(off == piece.size()); break;
        case Event::Message:
          CHECK(decoder.message().size() <= kMaxMessage);
          if (decoder.is_text()) CHECK(pronghorn::ws::valid_utf8(decoder.message()));
          r.data = decoder.message();
          r.text = decoder.is_text();
          break;
        case Event::Ping:
        case Event::Pong:
          CHECK(decoder.control_payload().size() <= 125);
          r.data = decoder.control_payload();
          break;
        case Event::Close:
          r.code = decoder.close_code();
          CHECK(r.code == 1005 || pronghorn::ws::valid_close_code(r.code));
          CHECK(decoder.close_reason().size() <= 123);
          CHECK(pronghorn::ws::valid_utf8(decoder.close_reason()));
          r.data = decoder.close_reason();
          break;
        case Event::Error:
          r.code = decoder.error_code();
          CHECK(r.code == 1002 || r.code == 1007 || r.code == 1009);
          CHECK(decoder.error_reason()[0] != '\0');
          records.push_back(r);
          return records;
      }
      if (e == Event::None) break;
      records.push_back(std::move(r));
    }
    // Bounded by max_message whatever the input (growth by doubling, for
    // both the message and its compressed form; a zip bomb stops at the limit).
    CHECK(decoder.buffered() <= 4 * kMaxMessage + 64 * 1024);
  }
  decoder.release_idle();
  return records;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const bool inflate = (data[0] & 1) != 0;
  std::string_view stream(reinterpret_cast<const char *>(data + 1), size - 1);
  const size_t split =
      stream.empty() ? 0 : (static_cast<size_t>(data[0] >> 1) * 257 + data[size - 1]) % (stream.size() + 1);
  std::vector<Record> whole = run({stream}, inflate);
  std::vector<Record> pieces = run({stream.substr(0, split), stream.substr(split)}, inflate);
  // Errors found inside a payload may be reported at different points of
  // the stream, but the same error and the events before it are the same.
  CHECK(whole == pieces);
  return 0;
}
