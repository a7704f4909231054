// Entry point of the qwen3-torch addon: registers the functions and the model class, nothing more.
#include <napi.h>

#include "binding/model_wrap.h"
#include "binding/runtime_info.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function model_class = qwen3::ModelWrap::Init(env);
  env.SetInstanceData(new Napi::FunctionReference(Napi::Persistent(model_class)));
  exports.Set("NativeModel", model_class);
  exports.Set("loadModel", Napi::Function::New<qwen3::LoadModel>(env, "loadModel"));
  exports.Set("buildInfo", Napi::Function::New<qwen3::BuildInfo>(env, "buildInfo"));
  exports.Set("devices", Napi::Function::New<qwen3::Devices>(env, "devices"));
  exports.Set("setTensorCores", Napi::Function::New<qwen3::SetTensorCores>(env, "setTensorCores"));
  exports.Set("tensorCoresEnabled", Napi::Function::New<qwen3::TensorCoresEnabled>(env, "tensorCoresEnabled"));
  exports.Set("memoryStats", Napi::Function::New<qwen3::MemoryStats>(env, "memoryStats"));
  exports.Set("resetPeakMemory", Napi::Function::New<qwen3::ResetPeakMemory>(env, "resetPeakMemory"));
  exports.Set("measureBandwidth", Napi::Function::New<qwen3::MeasureBandwidth>(env, "measureBandwidth"));
  return exports;
}

}  // namespace

NODE_API_MODULE(qwen3_torch, Init)
