#include "model_workers.h"

#include <c10/util/Exception.h>

#include <cstring>
#include <functional>
#include <string>

#include "model_wrap.h"

namespace qwen3 {
namespace {

// Base for promise-returning workers: runs `Work()` on the libuv pool and turns every kind of
// C++ exception into a rejection, so no libtorch error can abort the process.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name) : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  virtual void Work() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

  void Execute() override {
    try {
      Work();
    } catch (const c10::Error& e) {
      SetError(e.what_without_backtrace());
    } catch (const std::bad_alloc&) {
      SetError("Out of memory");
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("Unknown native error");
    }
  }
  void OnOK() override { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, LoadRequest request) : PromiseWorker(env, "qwen3.load"), request_(std::move(request)) {}

 protected:
  void Work() override { engine_ = Qwen3Engine::load(request_); }
  Napi::Value Result(Napi::Env env) override { return ModelWrap::NewInstance(env, std::move(engine_)); }

 private:
  LoadRequest request_;
  std::shared_ptr<Qwen3Engine> engine_;
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<Qwen3Engine> engine, StepKind kind, StepRequest request)
      : PromiseWorker(env, "qwen3.step"), engine_(std::move(engine)), kind_(kind), request_(std::move(request)) {}

 protected:
  void Work() override {
    std::lock_guard<std::mutex> lock(engine_->mutex());
    switch (kind_) {
      case StepKind::Prefill: result_ = engine_->prefill(request_); break;
      case StepKind::Decode: result_ = engine_->decode(request_); break;
      case StepKind::Uncached: result_ = engine_->forward_uncached(request_); break;
    }
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

 private:
  std::shared_ptr<Qwen3Engine> engine_;  // keeps the engine alive even if dispose() runs meanwhile
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

Napi::Promise QueueStep(Napi::Env env, std::shared_ptr<Qwen3Engine> engine, StepKind kind, StepRequest request) {
  auto* worker = new StepWorker(env, std::move(engine), kind, std::move(request));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace qwen3
