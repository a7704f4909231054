// Off-thread work for the model: each worker owns a plain C++ request, runs it in Execute()
// without touching N-API, and settles a Promise. Every exception becomes a rejection, and a
// worker that finishes while its JS environment is being torn down (worker.terminate(),
// process.exit() inside a worker thread) drops its result quietly instead of aborting.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

#include "binding/engine_thread.h"
#include "model/engine.h"

namespace qwen3 {

// A loaded engine with the lock that serialises its steps (two calls' workers must never
// interleave) and the one thread that runs them (engine_thread.h).
struct LoadedEngine {
  explicit LoadedEngine(std::unique_ptr<Qwen3Engine> loaded) : engine(std::move(loaded)) {}
  std::unique_ptr<Qwen3Engine> engine;
  std::mutex mutex;
  EngineThread thread;
};

// The engine's changing counters as of its last step. JS getters read this copy instead of the
// engine, so a getter called while a step runs on the thread pool neither races with the step
// nor waits for it.
class EngineStatus {
 public:
  struct Values {
    int64_t cache_length = 0;
    int64_t cache_capacity = 0;
    int64_t slot_cache_bytes = 0;
    double compile_seconds = 0;
    int graph_captures = 0;
    int64_t speculated_slot_steps = 0, used_speculated_slot_steps = 0;
    int64_t prompt_chunks_as_rows = 0;
  };
  // Call on the engine thread, or before any step can run.
  void Refresh(const Qwen3Engine& engine);
  Values Get() const;

  // Steps queued whose Promise has not settled yet. Counted on the JS thread alone, from the
  // call to the settling, so "busy" does not depend on how far the engine thread has got.
  void StepQueued() { ++steps_in_flight_; }
  void StepSettled() { --steps_in_flight_; }
  bool Busy() const { return steps_in_flight_ > 0; }

 private:
  mutable std::mutex mutex_;
  Values values_;
  int steps_in_flight_ = 0;
};

// Starts loading; the Promise resolves to a ModelWrap object.
Napi::Promise QueueLoad(Napi::Env env, LoadRequest request);

// Starts one forward step; the Promise resolves to {next, logits, logitsShape, cacheLength}.
Napi::Promise QueueStep(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status,
                        StepKind kind, StepRequest request);

// Starts one step over sequence slots; the Promise resolves to {next, logprobs, topIds,
// topLogprobs, logits, lengths}.
Napi::Promise QueueSlotStep(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, SlotStepRequest request);

// Lets go of a disposed engine off the JS thread (its teardown may wait for other ranks); Node
// keeps running until that is done.
void QueueRelease(Napi::Env env, std::shared_ptr<LoadedEngine> engine);

// Starts a copy from one slot into another; the Promise resolves to undefined.
Napi::Promise QueueCopySlot(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, CopySlotRequest request);

}  // namespace qwen3
