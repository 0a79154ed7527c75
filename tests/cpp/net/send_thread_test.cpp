// SendThread on its own: real sockets (socketpair), a real EventLoop, and the
// Done records it delivers through the loop.
#include "engine/net/send_thread.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

namespace pronghorn {
namespace {

class NoTick final : public IoHandler {
 public:
  void on_io(uint32_t) override {}
};

struct Delivered {
  std::vector<SendThread::Done> done;
  static void handler(void *ctx, SendThread::Done &d) { static_cast<Delivered *>(ctx)->done.push_back(std::move(d)); }
};

class SendThreadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(loop.open(&tick, 1000));
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    ASSERT_TRUE(thread.open(loop, &Delivered::handler, &delivered));
  }
  void TearDown() override {
    thread.stop();
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  // Polls the loop until `count` Done records have arrived (or 5 s).
  void wait_for(size_t count) {
    auto start = std::chrono::steady_clock::now();
    while (delivered.done.size() < count && std::chrono::steady_clock::now() - start < std::chrono::seconds(5))
      loop.poll(100);
    ASSERT_EQ(delivered.done.size(), count);
  }
  std::string read_all(int fd) {
    std::string out;
    char buf[65536];
    while (true) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  NoTick tick;
  EventLoop loop;
  SendThread thread;
  Delivered delivered;
  int fds[2] = {-1, -1};
  int owner_a = 0, owner_b = 0;  // addresses used as owner tokens
};

TEST_F(SendThreadTest, SendsInOrderAndReportsEachJobThroughTheLoop) {
  ASSERT_TRUE(thread.submit({&owner_a, fds[0], "first,"}));
  ASSERT_TRUE(thread.submit({&owner_b, fds[0], "second"}));
  wait_for(2);
  EXPECT_EQ(delivered.done[0].owner, &owner_a);
  EXPECT_EQ(delivered.done[0].written, 6u);
  EXPECT_EQ(delivered.done[0].error, 0);
  EXPECT_EQ(delivered.done[1].owner, &owner_b);
  EXPECT_EQ(delivered.done[1].written, 6u);
  EXPECT_EQ(read_all(fds[1]), "first,second");
}

TEST_F(SendThreadTest, FullSocketGivesAPartialWriteAndTheBytesBack) {
  int small = 4096;
  ASSERT_EQ(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  std::string big(4 << 20, 'x');
  ASSERT_TRUE(thread.submit({&owner_a, fds[0], big}));
  wait_for(1);
  const SendThread::Done &done = delivered.done[0];
  EXPECT_EQ(done.error, 0);
  EXPECT_LT(done.written, big.size());  // the thread never waits for the socket
  EXPECT_EQ(done.data, big);            // the owner gets the bytes to queue the rest
  EXPECT_EQ(read_all(fds[1]).size(), done.written);
}

TEST_F(SendThreadTest, PeerGoneIsReportedAsAnErrorWithoutSignal) {
  ::close(fds[1]);
  fds[1] = -1;
  ASSERT_TRUE(thread.submit({&owner_a, fds[0], "nobody reads this"}));
  wait_for(1);
  EXPECT_EQ(delivered.done[0].written, 0u);
  EXPECT_EQ(delivered.done[0].error, EPIPE);  // MSG_NOSIGNAL: no SIGPIPE killed the test
}

TEST_F(SendThreadTest, StopFinishesQueuedJobsAndDeliversThem) {
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(thread.submit({&owner_a, fds[0], std::to_string(i) + ";"}));
  thread.stop();  // no loop poll: stop() itself delivers
  ASSERT_EQ(delivered.done.size(), 100u);
  std::string expected;
  for (int i = 0; i < 100; ++i) expected += std::to_string(i) + ";";
  EXPECT_EQ(read_all(fds[1]), expected);
  // After stop() the owner is told to write directly.
  EXPECT_FALSE(thread.submit({&owner_a, fds[0], "late"}));
}

TEST(SendThreadFork, AChildForkedByTheAppCanDestroyItsCopy) {
  NoTick tick;
  EventLoop loop;
  ASSERT_TRUE(loop.open(&tick, 1000));
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  Delivered delivered;
  auto thread = std::make_unique<SendThread>();
  ASSERT_TRUE(thread->open(loop, &Delivered::handler, &delivered));
  ASSERT_TRUE(thread->submit({&delivered, fds[0], "x"}));
  // Once its job is reported, the thread is back waiting on its condition
  // variable: the state the child inherits.
  for (int i = 0; i < 50 && delivered.done.empty(); ++i) loop.poll(100);
  ASSERT_EQ(delivered.done.size(), 1u);
  usleep(20 * 1000);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(5);  // a hang (joining a thread that is not here) ends as SIGALRM
    thread.reset();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  // The parent's thread is unharmed.
  ASSERT_TRUE(thread->submit({&delivered, fds[0], "y"}));
  thread->stop();
  EXPECT_EQ(delivered.done.size(), 2u);
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace pronghorn
