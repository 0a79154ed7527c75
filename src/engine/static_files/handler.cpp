#include "engine/static_files/handler.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "engine/http/target.h"
#include "engine/log.h"
#include "engine/static_files/media_types.h"
#include "engine/static_files/rules.h"

namespace pronghorn::static_files {

namespace {

constexpr int kReadFlags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;

// Errors that mean "nothing to serve here": answered 404 and logged at debug.
bool not_served(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
    case ELOOP:
    case EXDEV:
    case EACCES:
    case EPERM:
    case ENAMETOOLONG:
    case EISDIR:
    case ENXIO:
    case ENODEV: return true;
    default: return false;
  }
}

void close_fd(int fd) {
  if (fd >= 0 && ::close(fd) != 0) log_errno(LogLevel::Debug, errno, "static files: close(%d) failed", fd);
}

}  // namespace

std::unique_ptr<Handler> Handler::open(const Config &config, std::string &error) {
  if (config.mounts.empty()) {
    error = "--static-path-mount: no directory given";
    return nullptr;
  }
  std::unique_ptr<Handler> handler(new Handler(config.expires_s > 0 ? config.expires_s : -1));
  for (const auto &[route, directory] : config.mounts) {
    Mount mount;
    if (const char *why = normalise_route(route, mount.route)) {
      error = "--static-path-route '" + route + "': " + why;
      return nullptr;
    }
    mount.directory = directory;
    mount.dir_fd = ::open(directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (mount.dir_fd < 0) {
      int err = errno;
      error = "--static-path-mount '" + directory +
              "': " + (err == ENOTDIR ? std::string("not a directory") : std::string(strerror(err)));
      return nullptr;
    }
    char real[PATH_MAX];
    if (realpath(directory.c_str(), real) == nullptr) {
      int err = errno;
      close_fd(mount.dir_fd);
      error = "--static-path-mount '" + directory + "': " + strerror(err);
      return nullptr;
    }
    mount.real_path = real;
    handler->mounts_.push_back(std::move(mount));
  }
  handler->openat2_missing_ = !config.use_openat2;
  if (handler->expires_s_ > 0) handler->cache_control_ = "max-age=" + std::to_string(handler->expires_s_);
  return handler;
}

Handler::~Handler() {
  for (Mount &mount : mounts_) close_fd(mount.dir_fd);
}

void Handler::on_request(http::Exchange &exchange, const http::RequestHead &head) {
  if (serve(exchange, head)) return;
  next_->on_request(exchange, head);
}

bool Handler::serve(http::Exchange &exchange, const http::RequestHead &head) {
  http::TargetParts parts = http::split_target(head.target);
  if (parts.path.empty() || parts.path[0] != '/') return false;  // "*" (OPTIONS *)
  RequestPath path = decode_path(parts.path, decoded_);
  for (const Mount &mount : mounts_) {
    PathKind kind = classify_path(path, mount.route, relative_);
    if (kind == PathKind::NotUnderRoute) continue;
    if (kind == PathKind::Refused) {
      log(LogLevel::Debug, "static files: refused path under '%s'", mount.route.empty() ? "/" : mount.route.c_str());
      answer(exchange, 404, "Not Found");
      return true;
    }
    bool head_only = head.method == "HEAD";
    if (!head_only && head.method != "GET") {
      answer(exchange, 405, "Method Not Allowed", {{"allow", "GET, HEAD"}});
      return true;
    }
    if (kind == PathKind::Directory) {
      answer(exchange, 404, "Not Found");
      return true;
    }
    serve_file(exchange, head, mount, head_only);
    return true;
  }
  return false;
}

void Handler::answer(http::Exchange &exchange, int status, std::string_view body, const http::HeaderList &extra) {
  char length[24];
  snprintf(length, sizeof length, "%zu", body.size());
  http::HeaderList headers{{"content-type", "text/plain; charset=utf-8"}, {"content-length", length}};
  headers.insert(headers.end(), extra.begin(), extra.end());
  if (const char *error = exchange.start_response(status, headers)) {
    log(LogLevel::Error, "static files: invalid response head: %s", error);
    exchange.fail();
    return;
  }
  exchange.write_body(body.data(), body.size(), false);
}

std::string_view Handler::expires_header() {
  int64_t now = static_cast<int64_t>(::time(nullptr));
  if (now != expires_second_) {
    expires_second_ = now;
    format_http_date(now + expires_s_, expires_);
  }
  return {expires_, kHttpDateLength};
}

int Handler::open_beneath(const Mount &mount, const std::string &relative, struct stat &st) {
  if (!openat2_missing_) {
    open_how how{};
    how.flags = kReadFlags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    int fd = static_cast<int>(::syscall(SYS_openat2, mount.dir_fd, relative.c_str(), &how, sizeof how));
    if (fd >= 0) {
      if (::fstat(fd, &st) != 0) {
        int err = errno;
        log_errno(LogLevel::Warning, err, "static files: fstat of '%s' under '%s' failed", relative.c_str(),
                  mount.directory.c_str());
        close_fd(fd);
        errno = err;
        return -1;
      }
      if (!S_ISREG(st.st_mode)) {
        close_fd(fd);
        errno = ENOENT;  // directories, devices, FIFOs: nothing to serve
        return -1;
      }
      return fd;
    }
    int err = errno;
    if (err == ENOSYS || err == EPERM) {
      // No openat2 (Linux < 5.6), or a seccomp filter refuses it.
      openat2_missing_ = true;
      log_errno(LogLevel::Info, err, "static files: openat2 is not available; checking real paths instead");
    } else if (err != EXDEV) {
      errno = err;
      return -1;
    }
    // EXDEV: an absolute symlink (refused by RESOLVE_BENEATH even when it
    // points inside) or a link that leaves the mount: the real-path check
    // serves the first and refuses the second.
  }
  return open_checked(mount, relative, st);
}

int Handler::open_checked(const Mount &mount, const std::string &relative, struct stat &st) {
  // O_PATH opens nothing (no FIFO wait, no device side effect) until the
  // real path is known to be inside the mount.
  int path_fd = ::openat(mount.dir_fd, relative.c_str(), O_PATH | O_CLOEXEC);
  if (path_fd < 0) return -1;
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", path_fd);
  char real[PATH_MAX];
  ssize_t n = ::readlink(link, real, sizeof real - 1);
  if (n < 0) {
    int err = errno;
    log_errno(LogLevel::Warning, err, "static files: readlink(%s) failed (is /proc mounted?)", link);
    close_fd(path_fd);
    errno = EACCES;
    return -1;
  }
  std::string_view resolved(real, static_cast<size_t>(n));
  std::string_view root = mount.real_path;
  bool inside = root == "/" || (resolved.size() > root.size() && resolved.compare(0, root.size(), root) == 0 &&
                                resolved[root.size()] == '/');
  if (!inside) {
    close_fd(path_fd);
    errno = EXDEV;
    return -1;
  }
  if (::fstat(path_fd, &st) != 0) {
    int err = errno;
    log_errno(LogLevel::Warning, err, "static files: fstat of '%s' under '%s' failed", relative.c_str(),
              mount.directory.c_str());
    close_fd(path_fd);
    errno = err;
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    close_fd(path_fd);
    errno = ENOENT;
    return -1;
  }
  // Reopened through the O_PATH fd: the same inode that was checked.
  int fd = ::open(link, kReadFlags);
  int err = errno;
  close_fd(path_fd);
  if (fd < 0) {
    errno = err;
    return -1;
  }
  if (::fstat(fd, &st) != 0) {
    err = errno;
    log_errno(LogLevel::Warning, err, "static files: fstat of '%s' under '%s' failed", relative.c_str(),
              mount.directory.c_str());
    close_fd(fd);
    errno = err;
    return -1;
  }
  return fd;
}

bool Handler::exists_beneath(const Mount &mount, const std::string &relative) {
  // Only for Vary: a name that exists (even a link that would not be
  // served) makes the response vary; nothing is opened.
  struct stat st;
  return ::fstatat(mount.dir_fd, relative.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode));
}

void Handler::serve_file(http::Exchange &exchange, const http::RequestHead &head, const Mount &mount, bool head_only) {
  struct stat st;
  int fd = open_beneath(mount, relative_, st);
  if (fd < 0) {
    int err = errno;
    if (not_served(err)) {
      log_errno(LogLevel::Debug, err, "static files: '%s' under '%s' not served", relative_.c_str(),
                mount.directory.c_str());
      answer(exchange, 404, "Not Found");
    } else {
      log_errno(LogLevel::Warning, err, "static files: open of '%s' under '%s' failed", relative_.c_str(),
                mount.directory.c_str());
      answer(exchange, 500, "Internal Server Error");
    }
    return;
  }

  std::string_view range_value, if_range, if_modified_since;
  size_t range_count = 0;
  bool has_none_match = false, none_match_hit = false, has_if_range = false;
  CodingPrefs prefs;
  std::string_view content_type = media_type(relative_);
  for (const http::Header &h : head.headers) {
    switch (h.name.size()) {
      case 5:
        if (h.name == "range") {
          range_value = h.value;
          ++range_count;
        }
        break;
      case 8:
        if (h.name == "if-range") {
          if_range = h.value;
          has_if_range = true;
        }
        break;
      case 13:
        if (h.name == "if-none-match") has_none_match = true;
        break;
      case 15:
        if (h.name == "accept-encoding") parse_accept_encoding(h.value, prefs);
        break;
      case 17:
        if (h.name == "if-modified-since") if_modified_since = h.value;
        break;
      default: break;
    }
  }

  // A precompressed sibling: tried in the client's order of preference; the
  // first that opens is sent. Any sibling that exists makes the response
  // vary on Accept-Encoding, whichever variant this client gets.
  Coding order[2];
  size_t accepted = preferred_codings(prefs, order);
  Coding chosen = Coding::Identity;
  bool vary = false;
  for (size_t i = 0; i < accepted && !vary; ++i) {
    sibling_.assign(relative_).append(order[i] == Coding::Brotli ? ".br" : ".gz");
    struct stat variant_st;
    int variant_fd = open_beneath(mount, sibling_, variant_st);
    if (variant_fd < 0) continue;
    close_fd(fd);
    fd = variant_fd;
    st = variant_st;
    chosen = order[i];
    vary = true;
  }
  for (Coding other : {Coding::Brotli, Coding::Gzip}) {
    if (vary) break;
    bool tried = false;
    for (size_t i = 0; i < accepted; ++i) tried = tried || order[i] == other;
    if (tried) continue;  // it did not open: it is not there to vary on
    sibling_.assign(relative_).append(other == Coding::Brotli ? ".br" : ".gz");
    vary = exists_beneath(mount, sibling_);
  }

  const int64_t mtime_s = static_cast<int64_t>(st.st_mtim.tv_sec);
  const int64_t mtime_ns = mtime_s * 1000000000 + static_cast<int64_t>(st.st_mtim.tv_nsec);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::string etag = format_etag(mtime_ns, size,
                                 chosen == Coding::Identity ? ""
                                 : chosen == Coding::Brotli ? "-br"
                                                            : "-gz");
  char last_modified[kHttpDateLength];
  format_http_date(mtime_s, last_modified);
  std::string_view last_modified_value(last_modified, kHttpDateLength);

  http::HeaderList headers;
  headers.reserve(12);
  auto add_validators = [&]() {
    headers.emplace_back("etag", etag);
    headers.emplace_back("last-modified", last_modified_value);
    if (vary) headers.emplace_back("vary", "Accept-Encoding");
    if (expires_s_ > 0) {
      headers.emplace_back("cache-control", cache_control_);
      headers.emplace_back("expires", expires_header());
    }
  };

  // Conditional GET/HEAD (RFC 9110 §13.2.2): If-None-Match decides when
  // present, else If-Modified-Since.
  if (has_none_match) {
    for (const http::Header &h : head.headers)
      if (h.name == "if-none-match" && none_match(h.value, etag)) none_match_hit = true;
  }
  bool not_modified = none_match_hit;
  if (!has_none_match && !if_modified_since.empty()) {
    int64_t since = 0;
    not_modified = parse_http_date(if_modified_since, since) && mtime_s <= since;
  }
  if (not_modified) {
    close_fd(fd);
    add_validators();
    if (const char *error = exchange.start_response(304, headers)) {
      log(LogLevel::Error, "static files: invalid response head: %s", error);
      exchange.fail();
      return;
    }
    exchange.write_body(nullptr, 0, false);
    return;
  }

  // One byte range, for GET (§14.2: other methods ignore Range).
  ByteRange range{0, size == 0 ? 0 : size - 1};
  RangeKind range_kind = RangeKind::Full;
  if (!head_only && range_count == 1 && (!has_if_range || if_range_holds(if_range, etag, mtime_s)))
    range_kind = parse_range(range_value, size, range);
  char content_range[64];
  if (range_kind == RangeKind::Unsatisfiable) {
    close_fd(fd);
    snprintf(content_range, sizeof content_range, "bytes */%llu", static_cast<unsigned long long>(size));
    http::HeaderList extra{{"content-range", content_range}, {"accept-ranges", "bytes"}};
    answer(exchange, 416, "Range Not Satisfiable", extra);
    return;
  }
  uint64_t offset = 0, length = size;
  if (range_kind == RangeKind::Partial) {
    offset = range.first;
    length = range.last - range.first + 1;
    snprintf(content_range, sizeof content_range, "bytes %llu-%llu/%llu", static_cast<unsigned long long>(range.first),
             static_cast<unsigned long long>(range.last), static_cast<unsigned long long>(size));
  }

  // The body's first kInlineFileMax bytes (a small file: all of it) are read
  // now, before anything is sent: a failed read can still be answered with
  // 500, and they go out with the head in one write (the head never travels
  // alone in a packet of its own); the rest of a large file follows by
  // sendfile.
  size_t lead = head_only ? 0 : static_cast<size_t>(length < kInlineFileMax ? length : kInlineFileMax);
  bool inline_body = lead > 0 && lead == length;
  size_t got = 0;
  if (lead > 0) {
    if (inline_body_.size() < kInlineFileMax) inline_body_.resize(kInlineFileMax);
    while (got < lead) {
      ssize_t n = ::pread(fd, inline_body_.data() + got, lead - got, static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (n < 0)
          log_errno(LogLevel::Warning, errno, "static files: pread of '%s' under '%s' failed", relative_.c_str(),
                    mount.directory.c_str());
        else
          log(LogLevel::Warning, "static files: '%s' under '%s' shrank while being read", relative_.c_str(),
              mount.directory.c_str());
        close_fd(fd);
        answer(exchange, 500, "Internal Server Error");
        return;
      }
      got += static_cast<size_t>(n);
    }
    if (inline_body) {
      close_fd(fd);
      fd = -1;
    }
  }

  char content_length[24];
  snprintf(content_length, sizeof content_length, "%llu", static_cast<unsigned long long>(length));
  headers.emplace_back("content-type", content_type);
  headers.emplace_back("content-length", content_length);
  headers.emplace_back("accept-ranges", "bytes");
  if (chosen != Coding::Identity) headers.emplace_back("content-encoding", chosen == Coding::Brotli ? "br" : "gzip");
  if (range_kind == RangeKind::Partial) headers.emplace_back("content-range", content_range);
  add_validators();
  if (const char *error = exchange.start_response(range_kind == RangeKind::Partial ? 206 : 200, headers)) {
    log(LogLevel::Error, "static files: invalid response head: %s", error);
    close_fd(fd);
    exchange.fail();
    return;
  }
  if (inline_body) {
    exchange.write_body(inline_body_.data(), got, false);
    return;
  }
  if (head_only || length == 0) {
    close_fd(fd);
    exchange.write_body(nullptr, 0, false);
    return;
  }
  if (exchange.write_body(inline_body_.data(), got, true) == http::WriteStatus::Closed) {
    close_fd(fd);
    return;
  }
  exchange.send_file(fd, offset + got, length - got);  // takes the fd
}

}  // namespace pronghorn::static_files
