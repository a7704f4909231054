// Reading checkpoint files by offset from several threads at once. Copying from the page cache
// is bound by one core's memory copy, so a load goes as fast as the cores that read in
// parallel; the tensors themselves are placed by model/weights.cc.
//
// Plain C++ and POSIX, like the rest of checkpoint/: no ATen, no N-API.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace qwen3 {

// A checkpoint file open for reading; pread keeps no file position, so threads share it.
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error("Cannot open checkpoint " + path + ": " + std::strerror(errno));
  }
  ~ReadOnlyFile() { ::close(fd_); }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  const std::string& path() const { return path_; }

  uint64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw std::runtime_error("Cannot read the size of " + path_ + ": " + std::strerror(errno));
    return static_cast<uint64_t>(st.st_size);
  }

  // Fills `size` bytes at `dest` from `offset`, looping over short reads. A file that ends
  // early (truncated after its index was checked) is an error, never a partial tensor.
  void read_at(void* dest, uint64_t size, uint64_t offset, const std::string& what) const {
    auto* out = static_cast<char*>(dest);
    while (size > 0) {
      const ssize_t got = ::pread(fd_, out, size > (1u << 30) ? (1u << 30) : size, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) throw std::runtime_error("Checkpoint " + path_ + " is truncated or unreadable while reading " + what);
      out += got;
      size -= static_cast<uint64_t>(got);
      offset += static_cast<uint64_t>(got);
    }
  }

 private:
  std::string path_;
  int fd_;
};

// Items 0 .. count-1 handed out in order to the threads of run(); once one thread fails, the
// others take no new item, and run() rethrows the first failure after every thread has ended.
class WorkQueue {
 public:
  explicit WorkQueue(size_t count) : count_(count) {}

  // The next item to do; false once all are taken or a thread failed.
  bool take(size_t& item) {
    if (failed_.load(std::memory_order_relaxed)) return false;
    item = next_.fetch_add(1, std::memory_order_relaxed);
    return item < count_;
  }

  // Runs body(lane) on `lanes` threads, the calling one being lane 0. Each body loops on take().
  // Fewer lanes run if the system refuses a thread.
  void run(unsigned lanes, const std::function<void(unsigned lane)>& body) {
    auto guarded = [this, &body](unsigned lane) {
      try {
        body(lane);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    };
    std::vector<std::thread> threads;
    for (unsigned lane = 1; lane < lanes; ++lane) {
      try {
        threads.emplace_back(guarded, lane);
      } catch (const std::system_error&) {
        break;
      }
    }
    guarded(0);
    for (std::thread& t : threads) t.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  size_t count_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
};

// Threads for reading: one per core, at most `cap`.
inline unsigned reader_threads(unsigned cap) {
  return std::clamp(std::thread::hardware_concurrency(), 1u, cap);
}

}  // namespace qwen3
