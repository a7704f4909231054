#include "binding/engine_thread.h"

#include <utility>

namespace qwen3 {

EngineThread::EngineThread() : thread_([this] { loop(); }) {}

EngineThread::~EngineThread() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();  // the last reference was dropped by a task itself: nothing left to wait for
  } else {
    thread_.join();
  }
}

void EngineThread::run(const std::function<void()>& task) {
  if (std::this_thread::get_id() == thread_.get_id()) return task();  // already here: no self-wait
  std::packaged_task<void()> job(task);
  std::future<void> done = job.get_future();
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push(std::move(job));
  }
  wake_.notify_one();
  done.get();
}

void EngineThread::post(const std::function<void()>& task) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push(std::packaged_task<void()>(task));
  }
  wake_.notify_one();
}

void EngineThread::loop() {
  for (;;) {
    std::packaged_task<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and nothing left
      job = std::move(tasks_.front());
      tasks_.pop();
    }
    job();  // a task's exception is stored in its future, never thrown here
  }
}

}  // namespace qwen3
