#include "parallel/rank_threads.h"

namespace qwen3 {

RankThreads::RankThreads(int world) {
  for (int rank = 1; rank < world; ++rank) threads_.emplace_back([this, rank] { loop(rank); });
}

RankThreads::~RankThreads() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void RankThreads::loop(int rank) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
    }
    std::exception_ptr error;
    try {
      (*job)(rank);
    } catch (...) {
      error = std::current_exception();
    }
    const std::lock_guard<std::mutex> lock(mutex_);
    if (error && !first_error_) {
      first_error_ = error;
      (*on_failure_)(error);
    }
    if (--running_ == 0) finished_.notify_all();
  }
}

void RankThreads::run(const std::function<void(int)>& fn, const std::function<void(std::exception_ptr)>& on_failure) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    on_failure_ = &on_failure;
    first_error_ = nullptr;
    running_ = static_cast<int>(threads_.size());
    ++generation_;
  }
  wake_.notify_all();
  std::exception_ptr error;
  try {
    fn(0);
  } catch (...) {
    error = std::current_exception();
  }
  std::unique_lock<std::mutex> lock(mutex_);
  if (error && !first_error_) {
    first_error_ = error;
    on_failure(error);
  }
  finished_.wait(lock, [&] { return running_ == 0; });
  if (first_error_) std::rethrow_exception(first_error_);
}

}  // namespace qwen3
