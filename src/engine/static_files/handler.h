// Static files served by the engine (--static-path-route/--static-path-mount):
// a RequestDispatcher placed in front of the application's. A request whose
// path is under a route is answered here, on the loop thread, and never
// reaches the application (a missing file is a 404 from here, not the app's);
// every other request goes on to the next dispatcher.
//
// What is answered: GET and HEAD (other methods 405), one byte range (206,
// 416), ETag / Last-Modified with If-None-Match / If-Modified-Since (304) and
// If-Range, Content-Type from the extension, a precompressed ".br" or ".gz"
// sibling chosen by Accept-Encoding (with Vary), and Cache-Control / Expires
// with --static-path-expires. Directories are never listed (404).
//
// Files are opened beneath the mount with openat2(RESOLVE_BENEATH): the
// kernel refuses any resolution, ".." or symlink, that would leave the mount
// directory, with no window between a check and the open. Where openat2 is
// missing (Linux < 5.6, or a seccomp filter that refuses it) and for
// absolute symlinks (which RESOLVE_BENEATH refuses even when they point
// inside), the file is opened with O_PATH, its real path read from
// /proc/self/fd and checked to be inside the mount's real path, and only then
// opened for reading (the same inode). Request paths with "..", "." or
// encoded slashes never get that far (rules.h).
//
// Bodies: the first kInlineFileMax bytes (a small file: all of it) are read
// (pread) into one buffer of the handler's and sent with the head in one
// write; the rest of a larger file is queued as a file and sent with
// sendfile (over TLS: read and encrypted 64 KiB at a time by the transport),
// so memory per connection stays bounded whatever the size. (A head sent
// alone, in a packet of its own before the sendfile, made 1 MiB files about
// half as fast on loopback: docs/performance.md.) open/fstat/pread run on the loop thread: they are short on a local
// file system (a slow network file system would stall the worker, as it does
// nginx without aio).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/http/exchange.h"

namespace pronghorn::static_files {

struct Config {
  // (route, directory) pairs, matched in this order.
  std::vector<std::pair<std::string, std::string>> mounts;
  // Cache-Control: max-age and Expires, in seconds; negative: not sent.
  int64_t expires_s = -1;
  // false: every file goes through the real-path check, as on a kernel
  // without openat2 (the tests run both ways).
  bool use_openat2 = true;
};

class Handler final : public http::RequestDispatcher {
 public:
  // Checks the routes and opens the directories (an O_PATH fd each, kept for
  // the worker's life). nullptr with `error` (one line) when a route is
  // invalid or a directory cannot be opened.
  static std::unique_ptr<Handler> open(const Config &config, std::string &error);
  ~Handler();
  Handler(const Handler &) = delete;
  Handler &operator=(const Handler &) = delete;

  // Where requests outside every route go (the application).
  void set_next(http::RequestDispatcher *next) { next_ = next; }
  void on_request(http::Exchange &exchange, const http::RequestHead &head) override;
  // Answers the request if its path is under a route; false otherwise.
  bool serve(http::Exchange &exchange, const http::RequestHead &head);

  // Files up to this size go out from memory with the head, in one write;
  // larger ones send this much with the head, then the rest by sendfile.
  static constexpr uint64_t kInlineFileMax = 64 * 1024;

 private:
  struct Mount {
    std::string route;      // normalised (rules.h)
    std::string directory;  // as given, for messages
    std::string real_path;  // realpath(directory), for the /proc/self/fd check
    int dir_fd = -1;
  };
  // An open regular file (or variant) and its metadata.
  struct Opened {
    int fd = -1;
    struct stat st {};
  };
  explicit Handler(int64_t expires_s) : expires_s_(expires_s) {}

  // Opens `relative` beneath the mount for reading; a regular file only.
  // -1 with errno (ENOENT for anything that is not served: outside the
  // mount, not a regular file).
  int open_beneath(const Mount &mount, const std::string &relative, struct stat &st);
  int open_checked(const Mount &mount, const std::string &relative, struct stat &st);
  bool exists_beneath(const Mount &mount, const std::string &relative);
  void serve_file(http::Exchange &exchange, const http::RequestHead &head, const Mount &mount, bool head_only);
  void answer(http::Exchange &exchange, int status, std::string_view body, const http::HeaderList &extra = {});
  std::string_view expires_header();

  std::vector<Mount> mounts_;
  int64_t expires_s_;
  http::RequestDispatcher *next_ = nullptr;
  bool openat2_missing_ = false;
  // Scratch, reused by every request (the loop thread only).
  std::string decoded_;
  std::string relative_;
  std::string sibling_;
  std::vector<char> inline_body_;
  std::string cache_control_;
  int64_t expires_second_ = -1;
  char expires_[32] = {};
};

}  // namespace pronghorn::static_files
