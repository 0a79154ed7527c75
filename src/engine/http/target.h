// Protocol-neutral rules for a request-target (RFC 9112 §3.2, RFC 3986):
// the path and query of any target form, percent-decoding as Python's
// urllib.parse.unquote does, and the path as uvicorn's access log shows it.
// No I/O, no Python: the ASGI bridge builds the scope's `path` from these,
// and the access log of every protocol uses them.
#pragma once

#include <string>
#include <string_view>

namespace pronghorn::http {

struct TargetParts {
  std::string_view path;   // raw (still percent-encoded); "/" when the target has none
  std::string_view query;  // after '?', without it; empty when there is none
};

// Splits origin-form ("/a?b") and absolute-form ("http://h/a?b": the path
// starts after the authority); asterisk-form is returned as the path "*".
TargetParts split_target(std::string_view target);

// Appends `raw` percent-decoded: "%XX" with two hex digits becomes one byte,
// any other '%' stays as it is (urllib.parse.unquote's rule, on bytes).
void append_percent_decoded(std::string &out, std::string_view raw);

// Replaces every invalid UTF-8 sequence of `bytes` with U+FFFD, one per
// maximal invalid subpart (Python's bytes.decode("utf-8", "replace")).
std::string utf8_with_replacement(std::string_view bytes);

// The path and query as uvicorn's access log shows them:
// quote(root_path + unquote(path)) + "?" + query, where quote() leaves
// letters, digits, "_.-~" and "/" as they are and escapes every other byte of
// the UTF-8 form as %XX (urllib.parse.quote's defaults).
void append_log_target(std::string &out, std::string_view root_path, std::string_view target);

}  // namespace pronghorn::http
