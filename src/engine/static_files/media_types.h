// Content-Type of a static file from its name's extension: a built-in table
// of the common web types (no /etc/mime.types, so every machine answers the
// same). Text types carry "; charset=utf-8". No I/O.
#pragma once

#include <string_view>

namespace pronghorn::static_files {

inline constexpr std::string_view kDefaultMediaType = "application/octet-stream";

// The media type for `name` (a file name or path; the extension after the
// last '.' of its last segment, case-insensitive), or kDefaultMediaType.
std::string_view media_type(std::string_view name);

}  // namespace pronghorn::static_files
