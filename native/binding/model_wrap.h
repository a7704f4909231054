// The JS-visible model object: a thin handle on a Qwen3Engine. Its async methods copy their
// arguments into plain structs here, on the JS thread, and hand them to workers (model_workers.h).
#pragma once

#include <napi.h>

#include <memory>

#include "binding/model_workers.h"
#include "model/engine.h"

namespace qwen3 {

// loadModel({path, config, device, dtype, compile}) -> Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo& info);

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps a loaded engine in a new JS object (called when a load completes).
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<LoadedEngine> engine);
  explicit ModelWrap(const Napi::CallbackInfo& info);
  ~ModelWrap() override;

 private:
  std::shared_ptr<LoadedEngine> engine(const Napi::Env& env) const;
  Napi::Value Step(const Napi::CallbackInfo& info, StepKind kind);

  Napi::Value Prefill(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value DecodeSteps(const Napi::CallbackInfo& info);
  Napi::Value SlotStep(const Napi::CallbackInfo& info);
  Napi::Value CopySlot(const Napi::CallbackInfo& info);
  Napi::Value ResetCache(const Napi::CallbackInfo& info);
  Napi::Value CacheLength(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<LoadedEngine> engine_;  // null once disposed
  std::shared_ptr<EngineStatus> status_;  // what the getters report; steps refresh it
};

}  // namespace qwen3
