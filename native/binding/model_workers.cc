#include "binding/model_workers.h"

#include <c10/util/Exception.h>

#include <cstring>
#include <string>

#include "binding/model_wrap.h"
#include "binding/promise_worker.h"

namespace qwen3 {

void EngineStatus::Refresh(const Qwen3Engine& engine) {
  Values v;
  v.cache_length = engine.cache_length();
  v.cache_capacity = engine.cache_capacity();
  v.compile_seconds = engine.compile_seconds();
  v.graph_captures = engine.graph_captures();
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

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status, StepKind kind,
             StepRequest request)
      : PromiseWorker(env, "qwen3.step"), engine_(std::move(engine)), status_(std::move(status)), kind_(kind),
        request_(std::move(request)) {
    status_->StepQueued();
  }

 protected:
  void Work() override {
    std::lock_guard<std::mutex> lock(engine_->mutex);
    // The counters change even when a step fails half-way (a cache that grew), so refresh them
    // on every way out.
    struct RefreshOnExit {
      EngineStatus& status;
      const Qwen3Engine& engine;
      ~RefreshOnExit() { status.Refresh(engine); }
    } refresh{*status_, *engine_->engine};
    engine_->thread.run([this] {
      switch (kind_) {
        case StepKind::Prefill: result_ = engine_->engine->prefill(request_); break;
        case StepKind::Decode: result_ = engine_->engine->decode(request_); break;
        case StepKind::Uncached: result_ = engine_->engine->forward_uncached(request_); break;
        case StepKind::DecodeSteps: result_ = engine_->engine->decode_steps(request_); break;
      }
    });
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    auto next = Napi::Int32Array::New(env, result_.next_ids.size());
    std::memcpy(next.Data(), result_.next_ids.data(), result_.next_ids.size() * sizeof(int32_t));
    out.Set("next", next);
    if (result_.logits_shape.empty()) {
      out.Set("logits", env.Null());
    } else {
      auto logits = Napi::Float32Array::New(env, result_.logits.size());
      std::memcpy(logits.Data(), result_.logits.data(), result_.logits.size() * sizeof(float));
      out.Set("logits", logits);
    }
    auto shape = Napi::Array::New(env, result_.logits_shape.size());
    for (uint32_t i = 0; i < result_.logits_shape.size(); ++i) shape.Set(i, static_cast<double>(result_.logits_shape[i]));
    out.Set("logitsShape", shape);
    out.Set("cacheLength", static_cast<double>(result_.cache_length));
    return out;
  }

  void Finished() override { status_->StepSettled(); }

 private:
  std::shared_ptr<LoadedEngine> engine_;  // keeps the engine alive even if dispose() runs meanwhile
  std::shared_ptr<EngineStatus> status_;
  StepKind kind_;
  StepRequest request_;
  StepResult result_;
};

}  // namespace

Napi::Promise QueueLoad(Napi::Env env, LoadRequest request) {
  auto* worker = new LoadWorker(env, std::move(request));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Promise QueueStep(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::shared_ptr<EngineStatus> status,
                        StepKind kind, StepRequest request) {
  auto* worker = new StepWorker(env, std::move(engine), std::move(status), kind, std::move(request));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace qwen3
