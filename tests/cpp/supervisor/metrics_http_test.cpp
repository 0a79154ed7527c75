// supervisor/metrics_http.h: what the endpoint answers, and its bounds, over
// real sockets in an epoll set the test drives.
#include "supervisor/metrics_http.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace pronghorn::supervisor {
namespace {

const MetricsEndpoint::Render kRender = [] { return std::string("pronghorn_up 1\n"); };

TEST(MetricsResponse, GetMetricsIsTheRenderedText) {
  std::string out = metrics_response("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", kRender);
  EXPECT_EQ(out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_NE(out.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), std::string::npos);
  EXPECT_NE(out.find("Content-Length: 15\r\n"), std::string::npos);
  EXPECT_NE(out.find("Connection: close\r\n"), std::string::npos);
  EXPECT_EQ(out.substr(out.size() - 15), "pronghorn_up 1\n");
  // A query string is ignored; bare LF line ends are accepted.
  EXPECT_EQ(metrics_response("GET /metrics?x=1 HTTP/1.0\n\n", kRender).rfind("HTTP/1.1 200 OK", 0), 0u);
}

TEST(MetricsResponse, HeadHasNoBody) {
  std::string out = metrics_response("HEAD /metrics HTTP/1.1\r\n\r\n", kRender);
  EXPECT_NE(out.find("Content-Length: 15\r\n"), std::string::npos);
  EXPECT_EQ(out.substr(out.size() - 4), "\r\n\r\n");
}

TEST(MetricsResponse, OtherRequests) {
  int renders = 0;
  MetricsEndpoint::Render counting = [&] {
    ++renders;
    return std::string();
  };
  EXPECT_EQ(metrics_response("GET / HTTP/1.1\r\n\r\n", counting).rfind("HTTP/1.1 404 ", 0), 0u);
  EXPECT_EQ(metrics_response("GET /metricsx HTTP/1.1\r\n\r\n", counting).rfind("HTTP/1.1 404 ", 0), 0u);
  std::string post = metrics_response("POST /metrics HTTP/1.1\r\n\r\n", counting);
  EXPECT_EQ(post.rfind("HTTP/1.1 405 ", 0), 0u);
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(metrics_response("GET /metrics\r\n\r\n", counting).rfind("HTTP/1.1 400 ", 0), 0u);
  EXPECT_EQ(metrics_response("garbage\r\n\r\n", counting).rfind("HTTP/1.1 400 ", 0), 0u);
  EXPECT_EQ(metrics_response("GET /metrics SPDY/3\r\n\r\n", counting).rfind("HTTP/1.1 400 ", 0), 0u);
  EXPECT_EQ(renders, 0);
}

class MetricsEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(epoll_fd, 0);
    ASSERT_TRUE(endpoint.open(epoll_fd, "127.0.0.1", 0, kRender));
    ASSERT_GT(endpoint.port(), 0);
  }
  void TearDown() override { close(epoll_fd); }

  int connect_client() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(endpoint.port()));
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
    return fd;
  }
  // Runs the endpoint's events, as the supervisor's loop does, until none is ready.
  void pump() {
    epoll_event events[16];
    for (int round = 0; round < 50; ++round) {
      int n = epoll_wait(epoll_fd, events, 16, 20);
      if (n <= 0) return;
      for (int i = 0; i < n; ++i) {
        ASSERT_TRUE(endpoint.owns(events[i].data.fd));
        endpoint.on_event(events[i].data.fd, events[i].events);
      }
    }
  }
  // Everything the server sends until it closes (bounded by a poll timeout).
  static std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    while (true) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) return out + "<timeout>";
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  static void write_all(int fd, const std::string &data) {
    ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  }

  int epoll_fd = -1;
  MetricsEndpoint endpoint;
};

TEST_F(MetricsEndpointTest, AnswersAndCloses) {
  int client = connect_client();
  pump();
  write_all(client, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
  pump();
  write_all(client, "\r\n");  // the head, in two pieces
  pump();
  std::string out = read_all(client);
  EXPECT_EQ(out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << out;
  EXPECT_EQ(out.substr(out.size() - 15), "pronghorn_up 1\n");
  close(client);
}

TEST_F(MetricsEndpointTest, AHeadTooLargeIsRefused) {
  int client = connect_client();
  pump();
  std::string big = "GET /metrics HTTP/1.1\r\nX: " + std::string(MetricsEndpoint::kMaxHead, 'a');
  write_all(client, big);
  pump();
  std::string out = read_all(client);
  EXPECT_EQ(out.rfind("HTTP/1.1 431 ", 0), 0u) << out.substr(0, 80);
  close(client);
}

TEST_F(MetricsEndpointTest, ConnectionsAreBoundedInNumberAndTime) {
  std::vector<int> clients;
  for (size_t i = 0; i < MetricsEndpoint::kMaxConnections + 2; ++i) {
    clients.push_back(connect_client());
    pump();
  }
  // The ones beyond the limit were closed at once: they read the end of the stream.
  std::string over = read_all(clients.back());
  EXPECT_EQ(over, "");
  // The others wait for their heads until the deadline, then are closed.
  endpoint.on_tick(UINT64_MAX);
  EXPECT_EQ(read_all(clients.front()), "");
  // And the endpoint still answers.
  int client = connect_client();
  pump();
  write_all(client, "GET /metrics HTTP/1.1\r\n\r\n");
  pump();
  EXPECT_EQ(read_all(client).rfind("HTTP/1.1 200 OK", 0), 0u);
  close(client);
  for (int fd : clients) close(fd);
}

TEST(MetricsEndpointOpen, AnAddressInUseFails) {
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  MetricsEndpoint first;
  ASSERT_TRUE(first.open(epoll_fd, "127.0.0.1", 0, kRender));
  MetricsEndpoint second;
  EXPECT_FALSE(second.open(epoll_fd, "127.0.0.1", first.port(), kRender));
  MetricsEndpoint unresolvable;
  EXPECT_FALSE(unresolvable.open(epoll_fd, "no-such-host.invalid", 0, kRender));
  close(epoll_fd);
}

}  // namespace
}  // namespace pronghorn::supervisor
