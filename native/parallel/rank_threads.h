// One long-lived thread per extra rank of a tensor-parallel model. run() calls a function for
// every rank at once (rank 0 on the calling thread, which is the model's engine thread) and
// returns when all are done: the ranks must enter their collectives together.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qwen3 {

class RankThreads {
 public:
  explicit RankThreads(int world);
  ~RankThreads();
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  // Runs fn(rank) for every rank concurrently. When a rank fails, calls on_failure once with its
  // error (to stop the others waiting in their collectives where needed), waits for every rank,
  // then rethrows that first failure (the others' are usually its consequence).
  void run(const std::function<void(int)>& fn, const std::function<void(std::exception_ptr)>& on_failure);

 private:
  void loop(int rank);

  std::vector<std::thread> threads_;  // ranks 1..world-1
  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  const std::function<void(int)>* job_ = nullptr;
  const std::function<void(std::exception_ptr)>* on_failure_ = nullptr;
  std::exception_ptr first_error_;
  uint64_t generation_ = 0;
  int running_ = 0;
  bool stopping_ = false;
};

}  // namespace qwen3
