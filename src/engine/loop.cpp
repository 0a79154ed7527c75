#include "engine/loop.h"

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "engine/log.h"

namespace pronghorn {

EventLoop::~EventLoop() {
  if (timer_fd_ >= 0) close(timer_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

bool EventLoop::open(IoHandler *tick, int tick_ms) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    log_errno(LogLevel::Error, errno, "epoll_create1 failed");
    return false;
  }
  update_time();
  if (tick == nullptr) return true;
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timer_fd_ < 0) {
    log_errno(LogLevel::Error, errno, "timerfd_create failed");
    return false;
  }
  itimerspec spec{};
  spec.it_interval.tv_sec = tick_ms / 1000;
  spec.it_interval.tv_nsec = (tick_ms % 1000) * 1000000L;
  spec.it_value = spec.it_interval;
  if (timerfd_settime(timer_fd_, 0, &spec, nullptr) < 0) {
    log_errno(LogLevel::Error, errno, "timerfd_settime failed");
    return false;
  }
  tick_ = tick;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // nullptr marks the timer
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &ev) < 0) {
    log_errno(LogLevel::Error, errno, "epoll_ctl(ADD timerfd) failed");
    return false;
  }
  return true;
}

bool EventLoop::add(int fd, uint32_t events, IoHandler *handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
    log_errno(LogLevel::Error, errno, "epoll_ctl(ADD fd %d) failed", fd);
    return false;
  }
  return true;
}

bool EventLoop::modify(int fd, uint32_t events, IoHandler *handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) < 0) {
    log_errno(LogLevel::Error, errno, "epoll_ctl(MOD fd %d) failed", fd);
    return false;
  }
  return true;
}

void EventLoop::remove(int fd) {
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr) < 0 && errno != EBADF && errno != ENOENT)
    log_errno(LogLevel::Error, errno, "epoll_ctl(DEL fd %d) failed", fd);
}

void EventLoop::update_time() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  now_ms_ = static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

int EventLoop::poll(int timeout_ms) {
  epoll_event events[128];
  int n = epoll_wait(epoll_fd_, events, 128, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return 0;
    log_errno(LogLevel::Error, errno, "epoll_wait failed");
    return -1;
  }
  update_time();
  for (int i = 0; i < n; ++i) {
    auto *handler = static_cast<IoHandler *>(events[i].data.ptr);
    if (handler == nullptr) {
      uint64_t expirations = 0;
      if (read(timer_fd_, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        log_errno(LogLevel::Error, errno, "read(timerfd) failed");
      if (tick_) tick_->on_io(EPOLLIN);
      continue;
    }
    handler->on_io(events[i].events);
  }
  return n;
}

}  // namespace pronghorn
