// A helper thread that performs socket sends for the event-loop thread.
//
// Why: in a worker, the event-loop thread also runs the Python application.
// A send() on loopback or a fast network does the kernel's whole transmit
// path (and wakes the receiver) in the caller's time: about a tenth of a
// FastAPI request. Handing the bytes to this thread lets that work run on
// another core while the loop thread goes on with the next request.
//
// Contract:
// - submit() is called on the loop thread only. The thread makes one
//   non-blocking sendmsg() per job, never waits for a socket, and reports
//   every job back (Done: bytes written, or errno). The owner handles the
//   rest of a partial write itself (EPOLLOUT), so that slow clients never
//   hold this thread.
// - The owner must keep the fd open, and send nothing else on it, until the
//   job's Done has been delivered: an fd closed early could be reused by a
//   new connection and receive another client's bytes.
// - Done records are delivered on the loop thread, from the loop's epoll
//   (an eventfd), in submission order.
// - Nothing here touches Python, and the thread blocks every signal.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/loop.h"

namespace pronghorn {

class SendThread final : public IoHandler {
 public:
  struct Job {
    void *owner;  // returned untouched in Done
    int fd;
    std::string data;
  };
  struct Done {
    void *owner;
    std::string data;  // the job's bytes, for the owner to queue what was not written
    size_t written;
    int error;  // 0, or the errno of a failed send (EAGAIN is not a failure: written < size)
  };
  using DoneHandler = void (*)(void *ctx, Done &done);

  SendThread() = default;
  SendThread(const SendThread &) = delete;
  SendThread &operator=(const SendThread &) = delete;
  ~SendThread();

  // Registers the completion eventfd with the loop.
  bool open(EventLoop &loop, DoneHandler handler, void *ctx);
  // Starts the thread (else the first submit() does). False: logged, and
  // submit() will refuse.
  bool start();
  // False when the thread could not be started (logged once): the caller
  // writes directly instead.
  bool submit(Job job);
  // Finishes the queued jobs, joins the thread and delivers what is left.
  void stop();
  // Tests only: while held, jobs queue up unsent (to make "a send is in
  // flight" last as long as a test needs).
  void hold(bool held);

  void on_io(uint32_t events) override;  // the completion eventfd

 private:
  void run();
  void deliver();

  EventLoop *loop_ = nullptr;
  int event_fd_ = -1;
  DoneHandler handler_ = nullptr;
  void *ctx_ = nullptr;
  bool failed_ = false;   // the thread could not be started
  pid_t thread_pid_ = 0;  // the process the thread runs in (see stop())

  std::mutex mutex_;
  // On the heap: a forked child leaks it rather than destroy one that a
  // thread of the parent was waiting on (glibc would wait for that thread).
  std::unique_ptr<std::condition_variable> wake_ = std::make_unique<std::condition_variable>();
  std::vector<Job> jobs_;   // guarded by mutex_
  std::vector<Done> done_;  // guarded by mutex_
  bool stopping_ = false;   // guarded by mutex_
  bool held_ = false;       // guarded by mutex_
  std::thread thread_;
};

}  // namespace pronghorn
