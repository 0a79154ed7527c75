// Unit tests for the built-in media type table (static_files/media_types.h).
#include "engine/static_files/media_types.h"

#include <gtest/gtest.h>

namespace pronghorn::static_files {
namespace {

TEST(StaticMediaType, CommonWebTypes) {
  EXPECT_EQ(media_type("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(media_type("css/app.css"), "text/css; charset=utf-8");
  EXPECT_EQ(media_type("app.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(media_type("module.mjs"), "text/javascript; charset=utf-8");
  EXPECT_EQ(media_type("data.json"), "application/json");
  EXPECT_EQ(media_type("notes.txt"), "text/plain; charset=utf-8");
  EXPECT_EQ(media_type("logo.svg"), "image/svg+xml");
  EXPECT_EQ(media_type("a.png"), "image/png");
  EXPECT_EQ(media_type("a.jpg"), "image/jpeg");
  EXPECT_EQ(media_type("a.webp"), "image/webp");
  EXPECT_EQ(media_type("font.woff2"), "font/woff2");
  EXPECT_EQ(media_type("app.wasm"), "application/wasm");
  EXPECT_EQ(media_type("doc.pdf"), "application/pdf");
  EXPECT_EQ(media_type("clip.mp4"), "video/mp4");
}

TEST(StaticMediaType, ExtensionRules) {
  EXPECT_EQ(media_type("PHOTO.JPG"), "image/jpeg");             // case-insensitive
  EXPECT_EQ(media_type("archive.tar.gz"), "application/gzip");  // the last extension
  EXPECT_EQ(media_type("dir.css/file"), kDefaultMediaType);     // the last segment's
  EXPECT_EQ(media_type("Makefile"), kDefaultMediaType);
  EXPECT_EQ(media_type("trailing."), kDefaultMediaType);
  EXPECT_EQ(media_type(".bashrc"), kDefaultMediaType);
  EXPECT_EQ(media_type("a.unknownextension"), kDefaultMediaType);
  EXPECT_EQ(media_type("a.averyveryverylongextension"), kDefaultMediaType);
  EXPECT_EQ(media_type(""), kDefaultMediaType);
}

}  // namespace
}  // namespace pronghorn::static_files
