// One long-lived thread per engine that runs all of its steps. libtorch keeps per-thread state
// on CUDA: cuBLAS handles and their workspaces, and cuDNN's attention plans (built on first use
// of each shape, tens of milliseconds each). Steps that wander across the libuv pool rebuild
// that state on every new thread; on one thread it is built once, and there is one workspace.
#pragma once

#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <queue>
#include <thread>

namespace qwen3 {

class EngineThread {
 public:
  EngineThread();
  ~EngineThread();  // finishes queued tasks, then joins
  EngineThread(const EngineThread&) = delete;
  EngineThread& operator=(const EngineThread&) = delete;

  // Runs `task` on the engine thread and waits for it; its exception is rethrown here.
  void run(const std::function<void()>& task);
  // Queues `task` to run on the engine thread after what is queued now, without waiting. It
  // must not throw (an exception is dropped).
  void post(const std::function<void()>& task);

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::queue<std::packaged_task<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace qwen3
