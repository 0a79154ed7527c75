// The static file handler (static_files/handler.h) against a real directory
// tree in a temporary directory, answering a recording Exchange: no sockets.
#include "engine/static_files/handler.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace pronghorn::static_files {
namespace {

// Records what the handler answers.
class RecordingExchange final : public http::Exchange {
 public:
  void attach(http::ExchangeObserver *) override {}
  const SocketAddress &peer() const override { return address; }
  const SocketAddress &local() const override { return address; }
  const SocketAddress &log_client() const override { return address; }
  void set_log_client(std::string_view) override {}
  const TlsInfo *tls() const override { return nullptr; }
  Buffer &body_buffer() override { return *body_in; }
  bool body_complete() const override { return true; }
  void body_taken() override {}
  const char *start_response(int code, const http::HeaderList &list) override {
    status = code;
    for (const auto &[name, value] : list) headers.emplace_back(std::string(name), std::string(value));
    return nullptr;
  }
  http::WriteStatus write_body(const char *data, size_t len, bool more) override {
    if (len > 0) body.append(data, len);
    complete = !more;
    return http::WriteStatus::Ok;
  }
  http::WriteStatus send_file(int fd, uint64_t offset, uint64_t len) override {
    std::string data(len, '\0');
    ssize_t n = pread(fd, data.data(), len, static_cast<off_t>(offset));
    close(fd);
    if (n > 0) body.append(data.data(), static_cast<size_t>(n));
    file_sent = true;
    complete = true;
    return http::WriteStatus::Ok;
  }
  void fail() override { failed = true; }
  void abort() override {}
  ws::Session *accept_websocket(std::string_view, const http::HeaderList &, const char **) override { return nullptr; }

  std::string header(std::string_view name) const {
    for (const auto &[n, v] : headers)
      if (n == name) return v;
    return "";
  }
  bool has(std::string_view name) const {
    for (const auto &[n, v] : headers)
      if (n == name) return true;
    return false;
  }

  SocketAddress address;
  std::shared_ptr<Buffer> body_in = std::make_shared<Buffer>();  // shared: the recording is copied
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool complete = false, file_sent = false, failed = false;
};

class NextDispatcher final : public http::RequestDispatcher {
 public:
  void on_request(http::Exchange &, const http::RequestHead &head) override { targets.emplace_back(head.target); }
  std::vector<std::string> targets;
};

// Run with openat2 (RESOLVE_BENEATH) and with the real-path check that
// replaces it where openat2 is missing: both must serve and refuse the same.
class StaticHandlerTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pronghorn-static-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root = tmpl;
    mount = root + "/public";
    ASSERT_EQ(mkdir(mount.c_str(), 0755), 0);
    ASSERT_EQ(mkdir((mount + "/css").c_str(), 0755), 0);
    write(mount + "/hello.txt", "hello, world\n");
    write(mount + "/css/app.css", "body{}");
    write(mount + "/css/app.css.gz", "GZ");
    write(mount + "/css/app.css.br", "BR");
    write(mount + "/big.bin", std::string(Handler::kInlineFileMax + 100, 'x'));
    write(mount + "/empty.txt", "");
    write(root + "/secret.txt", "secret");
    ASSERT_EQ(symlink("hello.txt", (mount + "/inside-link.txt").c_str()), 0);
    ASSERT_EQ(symlink("../secret.txt", (mount + "/escape-link.txt").c_str()), 0);
    ASSERT_EQ(symlink((root + "/secret.txt").c_str(), (mount + "/absolute-escape.txt").c_str()), 0);
    ASSERT_EQ(symlink((mount + "/hello.txt").c_str(), (mount + "/absolute-inside.txt").c_str()), 0);
    ASSERT_EQ(symlink(root.c_str(), (mount + "/escape-dir").c_str()), 0);
    Config config;
    config.mounts = {{"/static", mount}, {"/other/", mount + "/css"}};
    config.use_openat2 = GetParam();
    std::string error;
    handler = Handler::open(config, error);
    ASSERT_NE(handler, nullptr) << error;
    handler->set_next(&next);
  }
  void TearDown() override {
    handler.reset();
    std::string command = "rm -rf '" + root + "'";
    ASSERT_EQ(std::system(command.c_str()), 0);
  }
  static void write(const std::string &path, const std::string &content) {
    std::ofstream(path, std::ios::binary) << content;
  }

  RecordingExchange get(std::string_view target, std::vector<http::Header> headers = {},
                        std::string_view method = "GET") {
    http::RequestHead head;
    head.method = method;
    head.target = target;
    head.headers = std::move(headers);
    RecordingExchange exchange;
    handler->on_request(exchange, head);
    return exchange;
  }

  std::string root, mount;
  std::unique_ptr<Handler> handler;
  NextDispatcher next;
};

TEST_P(StaticHandlerTest, ServesAFile) {
  RecordingExchange r = get("/static/hello.txt?v=1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello, world\n");
  EXPECT_TRUE(r.complete);
  EXPECT_FALSE(r.file_sent);  // small: from memory, with the head
  EXPECT_EQ(r.header("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r.header("content-length"), "13");
  EXPECT_EQ(r.header("accept-ranges"), "bytes");
  EXPECT_EQ(r.header("etag").front(), '"');
  EXPECT_EQ(r.header("last-modified").size(), 29u);
  EXPECT_FALSE(r.has("vary"));  // no sibling
  EXPECT_FALSE(r.has("cache-control"));
  EXPECT_TRUE(next.targets.empty());
}

TEST_P(StaticHandlerTest, LargeFilesGoBySendfile) {
  RecordingExchange r = get("/static/big.bin");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.file_sent);
  EXPECT_EQ(r.body.size(), Handler::kInlineFileMax + 100);
}

TEST_P(StaticHandlerTest, OtherPathsGoToTheNextDispatcher) {
  get("/api/x");
  get("/staticx/hello.txt");
  ASSERT_EQ(next.targets.size(), 2u);
  EXPECT_EQ(next.targets[0], "/api/x");
}

TEST_P(StaticHandlerTest, RoutesInOrder) {
  RecordingExchange r = get("/other/app.css");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "body{}");
}

TEST_P(StaticHandlerTest, Head) {
  RecordingExchange r = get("/static/hello.txt", {}, "HEAD");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "13");
  EXPECT_EQ(r.body, "");
  EXPECT_TRUE(r.complete);
}

TEST_P(StaticHandlerTest, OtherMethods405) {
  for (const char *method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
    RecordingExchange r = get("/static/hello.txt", {}, method);
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_EQ(r.header("allow"), "GET, HEAD");
  }
}

TEST_P(StaticHandlerTest, NotFoundAndDirectories) {
  for (const char *target : {"/static/missing.txt", "/static", "/static/", "/static/css", "/static/css/",
                             "/static/hello.txt/", "/static/hello.txt/x"}) {
    RecordingExchange r = get(target);
    EXPECT_EQ(r.status, 404) << target;
  }
  EXPECT_TRUE(next.targets.empty());  // a missing file is not the app's
}

TEST_P(StaticHandlerTest, TraversalAndEscapingLinks) {
  for (const char *target :
       {"/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/%2E%2E/secret.txt",
        "/static/css%2f..%2f..%2fsecret.txt", "/static/hello.txt%00.css", "/static/escape-link.txt",
        "/static/absolute-escape.txt", "/static/escape-dir/secret.txt"}) {
    RecordingExchange r = get(target);
    EXPECT_EQ(r.status, 404) << target;
    EXPECT_EQ(r.body.find("secret"), std::string::npos) << target;
  }
}

TEST_P(StaticHandlerTest, LinksInsideAreServed) {
  EXPECT_EQ(get("/static/inside-link.txt").body, "hello, world\n");
  EXPECT_EQ(get("/static/absolute-inside.txt").body, "hello, world\n");
}

TEST_P(StaticHandlerTest, Ranges) {
  RecordingExchange r = get("/static/hello.txt", {{"range", "bytes=0-4"}});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(r.header("content-range"), "bytes 0-4/13");
  EXPECT_EQ(r.header("content-length"), "5");
  r = get("/static/hello.txt", {{"range", "bytes=-6"}});
  EXPECT_EQ(r.body, "world\n");
  r = get("/static/big.bin", {{"range", "bytes=65536-"}});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body.size(), 100u);
  r = get("/static/hello.txt", {{"range", "bytes=13-"}});
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(r.header("content-range"), "bytes */13");
  r = get("/static/hello.txt", {{"range", "bytes=0-1,3-4"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello, world\n");
  r = get("/static/hello.txt", {{"range", "bytes=0-4"}}, "HEAD");  // HEAD ignores Range
  EXPECT_EQ(r.status, 200);
}

TEST_P(StaticHandlerTest, IfRange) {
  std::string etag = get("/static/hello.txt").header("etag");
  RecordingExchange r = get("/static/hello.txt", {{"range", "bytes=0-4"}, {"if-range", etag}});
  EXPECT_EQ(r.status, 206);
  r = get("/static/hello.txt", {{"range", "bytes=0-4"}, {"if-range", "\"other\""}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello, world\n");
}

TEST_P(StaticHandlerTest, Conditionals) {
  RecordingExchange first = get("/static/hello.txt");
  std::string etag = first.header("etag"), modified = first.header("last-modified");
  RecordingExchange r = get("/static/hello.txt", {{"if-none-match", etag}});
  EXPECT_EQ(r.status, 304);
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.header("etag"), etag);
  EXPECT_FALSE(r.has("content-length"));
  r = get("/static/hello.txt", {{"if-none-match", "\"nope\""}});
  EXPECT_EQ(r.status, 200);
  r = get("/static/hello.txt", {{"if-modified-since", modified}});
  EXPECT_EQ(r.status, 304);
  r = get("/static/hello.txt", {{"if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT"}});
  EXPECT_EQ(r.status, 200);
  // If-None-Match decides when both are present.
  r = get("/static/hello.txt", {{"if-none-match", "\"nope\""}, {"if-modified-since", modified}});
  EXPECT_EQ(r.status, 200);
}

TEST_P(StaticHandlerTest, Precompressed) {
  RecordingExchange r = get("/static/css/app.css", {{"accept-encoding", "gzip, deflate, br"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "BR");
  EXPECT_EQ(r.header("content-encoding"), "br");
  EXPECT_EQ(r.header("vary"), "Accept-Encoding");
  EXPECT_EQ(r.header("content-type"), "text/css; charset=utf-8");
  std::string br_etag = r.header("etag");
  r = get("/static/css/app.css", {{"accept-encoding", "gzip"}});
  EXPECT_EQ(r.body, "GZ");
  EXPECT_EQ(r.header("content-encoding"), "gzip");
  EXPECT_NE(r.header("etag"), br_etag);
  r = get("/static/css/app.css", {{"accept-encoding", "br;q=0, gzip;q=0"}});
  EXPECT_EQ(r.body, "body{}");
  EXPECT_FALSE(r.has("content-encoding"));
  EXPECT_EQ(r.header("vary"), "Accept-Encoding");
  r = get("/static/css/app.css");
  EXPECT_EQ(r.body, "body{}");
  EXPECT_EQ(r.header("vary"), "Accept-Encoding");
}

TEST_P(StaticHandlerTest, EmptyFile) {
  RecordingExchange r = get("/static/empty.txt");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "0");
  EXPECT_TRUE(r.complete);
}

INSTANTIATE_TEST_SUITE_P(Resolution, StaticHandlerTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool> &info) {
                           return info.param ? "Openat2" : "RealPathCheck";
                         });

TEST(StaticHandlerOpen, BadMounts) {
  std::string error;
  Config config;
  config.mounts = {{"/static", "/nonexistent/pronghorn-test"}};
  EXPECT_EQ(Handler::open(config, error), nullptr);
  EXPECT_NE(error.find("/nonexistent/pronghorn-test"), std::string::npos) << error;
  config.mounts = {{"static", "/tmp"}};
  EXPECT_EQ(Handler::open(config, error), nullptr);
  EXPECT_NE(error.find("must start with '/'"), std::string::npos) << error;
  config.mounts = {{"/static", "/etc/hostname"}};
  EXPECT_EQ(Handler::open(config, error), nullptr);
  EXPECT_NE(error.find("not a directory"), std::string::npos) << error;
}

TEST(StaticHandlerOpen, Expires) {
  Config config;
  config.mounts = {{"/s", "/tmp"}};
  config.expires_s = 3600;
  std::string error;
  auto handler = Handler::open(config, error);
  ASSERT_NE(handler, nullptr);
  char name[] = "/tmp/pronghorn-expires-XXXXXX";
  int fd = mkstemp(name);
  ASSERT_GE(fd, 0);
  close(fd);
  std::string target = std::string("/s/") + (name + 5);
  http::RequestHead head;
  head.method = "GET";
  head.target = target;
  RecordingExchange r;
  handler->on_request(r, head);
  unlink(name);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("cache-control"), "max-age=3600");
  EXPECT_EQ(r.header("expires").size(), 29u);
}

}  // namespace
}  // namespace pronghorn::static_files
