#include "binding/model_workers.h"

#include <c10/util/Exception.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "binding/model_wrap.h"
#include "binding/promise_worker.h"

namespace qwen3 {

void EngineStatus::Refresh(const Qwen3Engine& engine) {
  Values v;
  v.cache_length = engine.cache_length();
  v.cache_capacity = engine.cache_capacity();
  v.slot_cache_bytes = engine.slot_cache_bytes();
  v.compile_seconds = engine.compile_seconds();
  v.graph_captures = engine.graph_captures();
  v.speculated_slot_steps = engine.speculated_slot_steps();
  v.used_speculated_slot_steps = engine.used_speculated_slot_steps();
  v.prompt_chunks_as_rows = engine.prompt_chunks_as_rows();
  std::lock_guard<std::mutex> lock(mutex_);
  values_ = v;
}

EngineStatus::Values EngineStatus::Get() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return values_;
}

namespace {

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, LoadRequest request) : PromiseWorker(env, "qwen3.load"), request_(std::move(request)) {}

 protected:
  void Work() override { engine_ = std::make_shared<LoadedEngine>(Qwen3Engine::load(request_)); }
  // Hands the engine over only on success; if wrapping fails, the worker still owns it and
  // frees it when it is destroyed.
  Napi::Value Result(Napi::Env env) override { return ModelWrap::NewInstance(env, engine_); }

 private:
  LoadRequest request_;
  std::shared_ptr<LoadedEngine> engine_;
};

// A call that runs on the engine thread under the engine's lock and keeps the model busy from
// its call until its Promise settles.
class EngineWorker : public PromiseWorker {
 public:
  EngineWorker(Napi::Env env, const char* name, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status)
      : PromiseWorker(env, name), engine_(std::move(engine)), status_(std::move(status)) {
    status_->StepQueued();
  }

 protected:
  // The work itself, on the engine thread.
  virtual void Run(Qwen3Engine& engine) = 0;

  // Work to queue on the engine thread once this call's own work succeeded, ahead of any later
  // call (a slot step's speculation of the next one); empty: none. It runs after this worker
  // may be gone, so it captures only the engine (which outlives its thread's queue).
  virtual std::function<void()> Then(Qwen3Engine& engine) { return {}; }

  void Work() override {
    // This call's reference goes on the pool thread, whichever way Work ends: if dispose() ran
    // meanwhile, the engine's teardown runs here rather than on the JS thread.
    struct ReleaseOnExit {
      std::shared_ptr<LoadedEngine>& engine;
      ~ReleaseOnExit() { engine.reset(); }
    } release{engine_};
    std::lock_guard<std::mutex> lock(engine_->mutex);
    engine_->thread.run([this] {
      // The counters change even when a step fails half-way (a cache that grew), so refresh them
      // on every way out; on the engine thread, before anything queued after this call runs.
      struct RefreshOnExit {
        EngineStatus& status;
        const Qwen3Engine& engine;
        ~RefreshOnExit() { status.Refresh(engine); }
      } refresh{*status_, *engine_->engine};
      Run(*engine_->engine);
      if (std::function<void()> then = Then(*engine_->engine)) engine_->thread.post(then);
    });
  }

  void Finished() override { status_->StepSettled(); }

 private:
  std::shared_ptr<LoadedEngine> engine_;  // keeps the engine alive even if dispose() runs meanwhile; null after Work
  std::shared_ptr<EngineStatus> status_;
};

// Drops a disposed engine's reference on the libuv pool, which keeps Node running until it is
// done: a rank of a process group may wait there for the other ranks (process_group.h).
class ReleaseWorker : public Napi::AsyncWorker {
 public:
  ReleaseWorker(Napi::Env env, std::shared_ptr<LoadedEngine> engine) : Napi::AsyncWorker(env, "qwen3.release"), engine_(std::move(engine)) {}

 protected:
  void Execute() override {
    try {
      engine_.reset();
    } catch (...) {  // a teardown never throws into Node
    }
  }
  // Nothing to report; and nothing may touch JS if the environment is going away meanwhile.
  void OnWorkComplete(Napi::Env, napi_status) override {}

 private:
  std::shared_ptr<LoadedEngine> engine_;
};

template <typename T>
Napi::Value TypedArrayOf(Napi::Env env, const std::vector<T>& values) {
  auto array = Napi::TypedArrayOf<T>::New(env, values.size());
  if (!values.empty()) std::memcpy(array.Data(), values.data(), values.size() * sizeof(T));
  return array;
}

class StepWorker : public EngineWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, StepKind kind, StepRequest request)
      : EngineWorker(env, "qwen3.step", std::move(engine), std::move(status)), kind_(kind), request_(std::move(request)) {}

 protected:
  void Run(Qwen3Engine& engine) override {
    switch (kind_) {
      case StepKind::Prefill: result_ = engine.prefill(request_); break;
      case StepKind::Decode: result_ = engine.decode(request_); break;
      case StepKind::Uncached: result_ = engine.forward_uncached(request_); break;
      case StepKind::DecodeSteps: result_ = engine.decode_steps(request_); break;
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("next", TypedArrayOf(env, result_.next_ids));
    out.Set("logits", result_.logits_shape.empty() ? env.Null() : TypedArrayOf(env, result_.logits));
    auto shape = Napi::Array::New(env, result_.logits_shape.size());
    for (uint32_t i = 0; i < result_.logits_shape.size(); ++i) shape.Set(i, static_cast<double>(result_.logits_shape[i]));
    out.Set("logitsShape", shape);
    out.Set("cacheLength", static_cast<double>(result_.cache_length));
    return out;
  }

 private:
  StepKind kind_;
  StepRequest request_;
  StepResult result_;
};

class SlotStepWorker : public EngineWorker {
 public:
  SlotStepWorker(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, SlotStepRequest request)
      : EngineWorker(env, "qwen3.slot_step", std::move(engine), std::move(status)), request_(std::move(request)) {}

 protected:
  void Run(Qwen3Engine& engine) override { result_ = engine.slot_step(request_); }
  std::function<void()> Then(Qwen3Engine& engine) override {
    return [&engine] { engine.speculate_slot_step(); };
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("next", TypedArrayOf(env, result_.next));
    out.Set("logprobs", result_.has_logprobs ? TypedArrayOf(env, result_.logprobs) : env.Null());
    const bool top = result_.has_logprobs && request_.top_logprobs > 0;
    out.Set("topIds", top ? TypedArrayOf(env, result_.top_ids) : env.Null());
    out.Set("topLogprobs", top ? TypedArrayOf(env, result_.top_logprobs) : env.Null());
    out.Set("logits", request_.logits ? TypedArrayOf(env, result_.logits) : env.Null());
    out.Set("lengths", TypedArrayOf(env, result_.lengths));
    return out;
  }

 private:
  SlotStepRequest request_;
  SlotStepResult result_;
};

class CopySlotWorker : public EngineWorker {
 public:
  CopySlotWorker(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, CopySlotRequest request)
      : EngineWorker(env, "qwen3.copy_slot", std::move(engine), std::move(status)), request_(request) {}

 protected:
  void Run(Qwen3Engine& engine) override { engine.copy_slot(request_); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  CopySlotRequest request_;
};

// Queues a worker and returns its Promise.
template <typename Worker, typename... Args>
Napi::Promise Queue(Napi::Env env, Args&&... args) {
  auto* worker = new Worker(env, std::forward<Args>(args)...);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

Napi::Promise QueueLoad(Napi::Env env, LoadRequest request) { return Queue<LoadWorker>(env, std::move(request)); }

Napi::Promise QueueStep(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status,
                        StepKind kind, StepRequest request) {
  return Queue<StepWorker>(env, std::move(engine), std::move(status), kind, std::move(request));
}

Napi::Promise QueueSlotStep(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, SlotStepRequest request) {
  return Queue<SlotStepWorker>(env, std::move(engine), std::move(status), std::move(request));
}

Napi::Promise QueueCopySlot(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, CopySlotRequest request) {
  return Queue<CopySlotWorker>(env, std::move(engine), std::move(status), request);
}

void QueueRelease(Napi::Env env, std::shared_ptr<LoadedEngine> engine) { (new ReleaseWorker(env, std::move(engine)))->Queue(); }

}  // namespace qwen3
