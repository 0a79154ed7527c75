// UTF-8 validation: an ASCII fast path eight bytes at a time, and a small
// DFA (byte class → state transition, in the style of Bjoern Hoehrmann's
// decoder, with tables of our own) for the multibyte sequences. The DFA only
// validates; it never computes code points, so each byte costs two loads.
#include "engine/ws/utf8.h"

#include <array>
#include <cstring>

namespace pronghorn::ws {
namespace {

// Byte classes: what a byte may be in a well-formed sequence (RFC 3629 §4).
enum : uint8_t {
  kAscii = 0,    // 00..7F
  kCont80 = 1,   // 80..8F
  kCont90 = 2,   // 90..9F
  kContA0 = 3,   // A0..BF
  kInvalid = 4,  // C0, C1 (overlong 2-byte leads), F5..FF (beyond U+10FFFF)
  kLead2 = 5,    // C2..DF
  kLeadE0 = 6,   // E0: the next byte must be A0..BF (else overlong)
  kLead3 = 7,    // E1..EC, EE..EF
  kLeadED = 8,   // ED: the next byte must be 80..9F (else a surrogate)
  kLeadF0 = 9,   // F0: the next byte must be 90..BF (else overlong)
  kLead4 = 10,   // F1..F3
  kLeadF4 = 11,  // F4: the next byte must be 80..8F (else above U+10FFFF)
};
constexpr size_t kClasses = 16;  // row width of the transition table (a power of two)

// States. kAccept must be 0: Utf8Validator::complete() tests state_ == 0.
enum : uint8_t {
  kAccept = 0,
  kReject = 1,
  kNeed1 = 2,    // one continuation byte (80..BF) left
  kNeed2 = 3,    // two left
  kAfterE0 = 4,  // two left, the first A0..BF
  kAfterED = 5,  // two left, the first 80..9F
  kNeed3 = 6,    // three left
  kAfterF0 = 7,  // three left, the first 90..BF
  kAfterF4 = 8,  // three left, the first 80..8F
};
constexpr size_t kStates = 9;

constexpr std::array<uint8_t, 256> make_classes() {
  std::array<uint8_t, 256> c{};
  for (int b = 0; b < 256; ++b) {
    uint8_t k;
    if (b < 0x80)
      k = kAscii;
    else if (b < 0x90)
      k = kCont80;
    else if (b < 0xA0)
      k = kCont90;
    else if (b < 0xC0)
      k = kContA0;
    else if (b < 0xC2)
      k = kInvalid;
    else if (b < 0xE0)
      k = kLead2;
    else if (b == 0xE0)
      k = kLeadE0;
    else if (b == 0xED)
      k = kLeadED;
    else if (b < 0xF0)
      k = kLead3;
    else if (b == 0xF0)
      k = kLeadF0;
    else if (b < 0xF4)
      k = kLead4;
    else if (b == 0xF4)
      k = kLeadF4;
    else
      k = kInvalid;
    c[b] = k;
  }
  return c;
}

constexpr std::array<uint8_t, kStates * kClasses> make_transitions() {
  std::array<uint8_t, kStates * kClasses> t{};
  for (auto &s : t) s = kReject;  // every transition not listed below
  auto set = [&t](uint8_t state, uint8_t cls, uint8_t next) { t[state * kClasses + cls] = next; };
  set(kAccept, kAscii, kAccept);
  set(kAccept, kLead2, kNeed1);
  set(kAccept, kLeadE0, kAfterE0);
  set(kAccept, kLead3, kNeed2);
  set(kAccept, kLeadED, kAfterED);
  set(kAccept, kLeadF0, kAfterF0);
  set(kAccept, kLead4, kNeed3);
  set(kAccept, kLeadF4, kAfterF4);
  for (uint8_t cls : {kCont80, kCont90, kContA0}) {
    set(kNeed1, cls, kAccept);
    set(kNeed2, cls, kNeed1);
    set(kNeed3, cls, kNeed2);
  }
  set(kAfterE0, kContA0, kNeed1);
  set(kAfterED, kCont80, kNeed1);
  set(kAfterED, kCont90, kNeed1);
  set(kAfterF0, kCont90, kNeed2);
  set(kAfterF0, kContA0, kNeed2);
  set(kAfterF4, kCont80, kNeed2);
  return t;
}

constexpr std::array<uint8_t, 256> kClass = make_classes();
constexpr std::array<uint8_t, kStates *kClasses> kNext = make_transitions();

constexpr uint64_t kHighBits = 0x8080808080808080ULL;

}  // namespace

bool Utf8Validator::feed(const char *data, size_t len) {
  const auto *p = reinterpret_cast<const unsigned char *>(data);
  const unsigned char *end = p + len;
  uint32_t state = state_;
  while (p < end) {
    if (state == kAccept) {
      // At a code point boundary: skip whole words of ASCII.
      while (end - p >= 8) {
        uint64_t word;
        std::memcpy(&word, p, 8);
        if (word & kHighBits) break;
        p += 8;
      }
      while (p < end && *p < 0x80) ++p;
      if (p == end) break;
    }
    // A multibyte sequence (or its continuation from the last call): run the
    // DFA until it is back on a boundary.
    do {
      state = kNext[state * kClasses + kClass[*p++]];
    } while (state > kReject && p < end);
    if (state == kReject) break;
  }
  state_ = state;
  return state != kReject;
}

bool valid_utf8(std::string_view text) {
  Utf8Validator v;
  return v.feed(text.data(), text.size()) && v.complete();
}

}  // namespace pronghorn::ws
