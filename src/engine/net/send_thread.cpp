#include "engine/net/send_thread.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

#include "engine/log.h"

namespace pronghorn {

SendThread::~SendThread() {
  stop();
  if (event_fd_ >= 0) {
    if (loop_ != nullptr && loop_->fd() >= 0) loop_->remove(event_fd_);
    ::close(event_fd_);
  }
}

bool SendThread::open(EventLoop &loop, DoneHandler handler, void *ctx) {
  loop_ = &loop;
  handler_ = handler;
  ctx_ = ctx;
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) {
    log_errno(LogLevel::Error, errno, "eventfd for the send thread failed");
    return false;
  }
  return loop.add(event_fd_, EPOLLIN, this);
}

bool SendThread::start() {
  if (failed_ || event_fd_ < 0) return false;
  if (!thread_.joinable()) {
    // The thread takes no signal: they stay with the loop thread (Python's
    // handlers, the supervisor's SIGTERM/SIGQUIT/SIGUSR2).
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      thread_ = std::thread(&SendThread::run, this);
      thread_pid_ = getpid();
    } catch (const std::system_error &e) {
      log(LogLevel::Warning, "cannot start the send thread (%s); sending from the event loop", e.what());
      failed_ = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  return !failed_;
}

bool SendThread::submit(Job job) {
  if (!start()) return false;
  bool was_idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    was_idle = jobs_.empty();
    jobs_.push_back(std::move(job));
  }
  // A thread busy with a batch picks the job up without a wake-up.
  if (was_idle) wake_->notify_one();
  return true;
}

void SendThread::run() {
  std::vector<Job> batch;
  std::vector<Done> results;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_->wait(lock, [this] { return (!jobs_.empty() && !held_) || stopping_; });
      if (jobs_.empty()) return;  // stopping, and nothing left to send
      batch.swap(jobs_);
    }
    results.clear();
    for (Job &job : batch) {
      ssize_t n;
      do {
        n = ::send(job.fd, job.data.data(), job.data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      int error = 0;
      if (n < 0) {
        error = errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno;
        n = 0;
      }
      results.push_back(Done{job.owner, std::move(job.data), static_cast<size_t>(n), error});
    }
    batch.clear();
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      was_empty = done_.empty();
      for (Done &done : results) done_.push_back(std::move(done));
    }
    // One wake-up of the loop per batch: it takes everything queued by then.
    if (was_empty) {
      uint64_t one = 1;
      if (::write(event_fd_, &one, sizeof one) < 0 && errno != EAGAIN)
        log_errno(LogLevel::Error, errno, "writing the send thread's eventfd failed");
    }
  }
}

void SendThread::on_io(uint32_t) {
  uint64_t count;
  // Read (reset) the eventfd before taking the list: a batch queued after
  // the take writes the eventfd again.
  if (::read(event_fd_, &count, sizeof count) < 0 && errno != EAGAIN)
    log_errno(LogLevel::Error, errno, "reading the send thread's eventfd failed");
  deliver();
}

void SendThread::deliver() {
  std::vector<Done> ready;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ready.swap(done_);
  }
  for (Done &done : ready) handler_(ctx_, done);
}

void SendThread::hold(bool held) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ = held;
  }
  wake_->notify_one();
}

void SendThread::stop() {
  if (thread_.joinable() && thread_pid_ != getpid()) {
    // A child forked by the application: the thread does not exist here, and
    // the mutex may have been copied locked. Touch nothing.
    thread_.detach();
    (void)wake_.release();
    failed_ = true;
    return;
  }
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_->notify_one();
    thread_.join();
  }
  failed_ = true;  // later sends are made directly
  if (handler_ != nullptr) deliver();
}

}  // namespace pronghorn
