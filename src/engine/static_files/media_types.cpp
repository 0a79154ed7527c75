#include "engine/static_files/media_types.h"

namespace pronghorn::static_files {

namespace {

struct Entry {
  std::string_view extension;  // lower case, without the dot
  std::string_view type;
};

// The types browsers and web tooling need. text/* types (and JavaScript,
// which RFC 9239 registers as text/javascript) are declared UTF-8: what
// web assets are written in, and what a browser would otherwise guess at.
constexpr Entry kTypes[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"cjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"jsonld", "application/ld+json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"text", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"markdown", "text/markdown; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"tsv", "text/tab-separated-values; charset=utf-8"},
    {"xml", "text/xml; charset=utf-8"},
    {"ics", "text/calendar; charset=utf-8"},
    {"vtt", "text/vtt; charset=utf-8"},
    {"xhtml", "application/xhtml+xml"},
    {"atom", "application/atom+xml"},
    {"rss", "application/rss+xml"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"wasm", "application/wasm"},
    {"svg", "image/svg+xml"},
    {"svgz", "image/svg+xml"},
    {"png", "image/png"},
    {"apng", "image/apng"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"jpe", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"jxl", "image/jxl"},
    {"heic", "image/heic"},
    {"ico", "image/vnd.microsoft.icon"},
    {"bmp", "image/bmp"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"eot", "application/vnd.ms-fontobject"},
    {"mp4", "video/mp4"},
    {"m4v", "video/mp4"},
    {"webm", "video/webm"},
    {"ogv", "video/ogg"},
    {"mov", "video/quicktime"},
    {"mkv", "video/x-matroska"},
    {"mp3", "audio/mpeg"},
    {"m4a", "audio/mp4"},
    {"aac", "audio/aac"},
    {"ogg", "audio/ogg"},
    {"oga", "audio/ogg"},
    {"opus", "audio/ogg"},
    {"weba", "audio/webm"},
    {"wav", "audio/wav"},
    {"flac", "audio/flac"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tgz", "application/gzip"},
    {"tar", "application/x-tar"},
    {"bz2", "application/x-bzip2"},
    {"xz", "application/x-xz"},
    {"zst", "application/zstd"},
    {"7z", "application/x-7z-compressed"},
    {"epub", "application/epub+zip"},
    {"rtf", "application/rtf"},
};

constexpr size_t kMaxExtension = 16;

}  // namespace

std::string_view media_type(std::string_view name) {
  size_t slash = name.rfind('/');
  if (slash != std::string_view::npos) name.remove_prefix(slash + 1);
  size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot + 1 >= name.size() || name.size() - dot - 1 > kMaxExtension)
    return kDefaultMediaType;
  char lowered[kMaxExtension];
  size_t n = name.size() - dot - 1;
  for (size_t i = 0; i < n; ++i) {
    char c = name[dot + 1 + i];
    lowered[i] = c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
  }
  std::string_view extension(lowered, n);
  for (const Entry &entry : kTypes)
    if (entry.extension == extension) return entry.type;
  return kDefaultMediaType;
}

}  // namespace pronghorn::static_files
