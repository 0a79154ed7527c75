// The event loop: one epoll instance and a periodic timerfd tick. It never
// blocks when driven by the ASGI bridge (poll(0) from asyncio's add_reader
// callback); a standalone program may poll with a timeout instead.
#pragma once

#include <cstdint>

namespace pronghorn {

class IoHandler {
 public:
  virtual void on_io(uint32_t events) = 0;

 protected:
  ~IoHandler() = default;
};

class EventLoop {
 public:
  EventLoop() = default;
  EventLoop(const EventLoop &) = delete;
  EventLoop &operator=(const EventLoop &) = delete;
  ~EventLoop();

  // Creates the epoll instance and a timerfd that calls `tick` every
  // `tick_ms`. Returns false (and logs) on failure.
  bool open(IoHandler *tick, int tick_ms);
  int fd() const { return epoll_fd_; }

  bool add(int fd, uint32_t events, IoHandler *handler);
  bool modify(int fd, uint32_t events, IoHandler *handler);
  void remove(int fd);

  // Waits at most timeout_ms (0: not at all) and dispatches ready events.
  // Returns the number of events dispatched, or -1 on failure.
  int poll(int timeout_ms);

  // Monotonic milliseconds, refreshed by poll().
  uint64_t now_ms() const { return now_ms_; }
  void update_time();
  // Tests drive the clock (timeouts measured from now_ms()).
  void set_now_ms_for_testing(uint64_t now_ms) { now_ms_ = now_ms; }

 private:
  class TickHandler;

  int epoll_fd_ = -1;
  int timer_fd_ = -1;
  IoHandler *tick_ = nullptr;
  uint64_t now_ms_ = 0;
};

}  // namespace pronghorn
