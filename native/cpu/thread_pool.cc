#include "cpu/thread_pool.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace qwen3 {
namespace {

// Helper threads that take parts of a loop. A decode step runs ~115 such short loops, so a
// helper spins for 100 us after each before it sleeps on `wake_`: waking a sleeping thread for
// every product (as libtorch's inter-op pool does) cost a good part of the bandwidth.
class PartPool {
 public:
  explicit PartPool(int helpers) {
    for (int h = 1; h <= helpers; ++h) threads_.emplace_back([this, h] { work(h); });
  }

  int helpers() const { return static_cast<int>(threads_.size()); }

  // Runs part(0) here and part(1..parts-1) on helpers; returns when all have finished.
  void run(int64_t parts, const std::function<void(int64_t)>& part) {
    const std::lock_guard<std::mutex> one_run(run_mutex_);
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      job_ = &part;
      parts_ = parts;
      pending_.store(helpers(), std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    part(0);
    // Every helper checks in, with a part or without, before `part` goes out of scope.
    while (pending_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
  }

 private:
  void work(int64_t index) {
    uint64_t seen = 0;
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
      uint64_t now_at = generation_.load(std::memory_order_acquire);
      while (now_at == seen && std::chrono::steady_clock::now() < spin_until) {
        std::this_thread::yield();
        now_at = generation_.load(std::memory_order_acquire);
      }
      if (now_at == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        now_at = generation_.load(std::memory_order_acquire);
      }
      seen = now_at;
      if (index < parts_) (*job_)(index);
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::mutex run_mutex_;  // one loop at a time (two models on two threads take turns)
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> pending_{0};
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t parts_ = 0;
  std::vector<std::thread> threads_;
};

PartPool& pool() {
  // As many threads in all as libtorch uses for its own operations, at most 8: a few cores
  // already take what memory gives, and every helper checks in after each loop. Never
  // destroyed: a step still running on another thread while the process exits must not find
  // it gone.
  static PartPool* instance = new PartPool(std::clamp(at::get_num_threads() - 1, 0, 7));
  return *instance;
}

}  // namespace

void parallel_parts(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t most = std::min<int64_t>(at::get_num_threads(), n / std::max<int64_t>(1, grain));
  if (most <= 1) {
    fn(0, n);
    return;
  }
  PartPool& p = pool();
  const int64_t parts = std::min<int64_t>(most, p.helpers() + 1);
  const int64_t per = (n + parts - 1) / parts;
  p.run(parts, [&](int64_t i) { fn(i * per, std::min(n, (i + 1) * per)); });
}

}  // namespace qwen3
