// Off-thread work for the model: each worker owns a plain C++ request, runs it in Execute()
// without touching N-API, and settles a Promise. Every exception becomes a rejection, and a
// worker that finishes while its JS environment is being torn down (worker.terminate(),
// process.exit() inside a worker thread) drops its result quietly instead of aborting.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

#include "model/engine.h"

namespace qwen3 {

// The engine's changing counters as of its last step. JS getters read this copy instead of the
// engine, so a getter called while a step runs on the thread pool neither races with the step
// nor waits for it.
class EngineStatus {
 public:
  struct Values {
    int64_t cache_length = 0;
    int64_t cache_capacity = 0;
    double compile_seconds = 0;
    int graph_captures = 0;
  };
  // Call while holding the engine's mutex, or before any step can run.
  void Refresh(const Qwen3Engine& engine);
  Values Get() const;

 private:
  mutable std::mutex mutex_;
  Values values_;
};

// Starts loading; the Promise resolves to a ModelWrap object.
Napi::Promise QueueLoad(Napi::Env env, LoadRequest request);

// Starts one forward step; the Promise resolves to {next, logits, logitsShape, cacheLength}.
Napi::Promise QueueStep(Napi::Env env, std::shared_ptr<Qwen3Engine> engine, std::shared_ptr<EngineStatus> status,
                        StepKind kind, StepRequest request);

}  // namespace qwen3
