// A growable byte buffer with a read position: bytes are appended at the tail
// (read() straight into prepare()) and consumed from the head. Consuming moves
// an index only; memory is compacted lazily in prepare(), so views into data()
// stay valid until the next prepare() or release().
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

namespace pronghorn {

class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer &) = delete;
  Buffer &operator=(const Buffer &) = delete;
  ~Buffer() { std::free(data_); }

  char *data() { return data_ + start_; }
  const char *data() const { return data_ + start_; }
  size_t size() const { return end_ - start_; }
  bool empty() const { return end_ == start_; }
  size_t capacity() const { return cap_; }

  // Returns room for at least n bytes at the tail; commit() what was written.
  char *prepare(size_t n) {
    if (cap_ - end_ < n) {
      if (start_ > 0) {
        std::memmove(data_, data_ + start_, end_ - start_);
        end_ -= start_;
        start_ = 0;
      }
      if (cap_ - end_ < n) {
        size_t want = cap_ * 2 > end_ + n ? cap_ * 2 : end_ + n;
        char *grown = static_cast<char *>(std::realloc(data_, want));
        if (grown == nullptr) throw std::bad_alloc();  // out of memory: not recoverable here
        data_ = grown;
        cap_ = want;
      }
    }
    return data_ + end_;
  }
  void commit(size_t n) { end_ += n; }
  void append(const char *p, size_t n) {
    if (n == 0) return;  // an empty buffer has no storage: memcpy must not get its null pointer
    std::memcpy(prepare(n), p, n);
    commit(n);
  }
  void consume(size_t n) {
    start_ += n;
    if (start_ == end_) start_ = end_ = 0;
  }
  // Gives back memory beyond twice the buffered size, so that a few bytes
  // left over from a large read do not keep the whole read's allocation.
  void shrink_to_fit() {
    size_t n = end_ - start_;
    if (data_ == nullptr || cap_ <= 4096 || cap_ <= 2 * n) return;
    if (start_ > 0) {
      std::memmove(data_, data_ + start_, n);
      start_ = 0;
      end_ = n;
    }
    size_t want = n < 256 ? 256 : n;
    char *smaller = static_cast<char *>(std::realloc(data_, want));
    if (smaller == nullptr) return;  // keeping the larger block is fine
    data_ = smaller;
    cap_ = want;
  }
  // Frees the memory when empty, so idle connections hold none.
  void release_if_empty() {
    if (empty() && data_ != nullptr) {
      std::free(data_);
      data_ = nullptr;
      cap_ = start_ = end_ = 0;
    }
  }

 private:
  char *data_ = nullptr;
  size_t start_ = 0, end_ = 0, cap_ = 0;
};

}  // namespace pronghorn
