// JS functions about the runtime: what libtorch the addon was built against, which devices it
// sees, TF32 control and device memory statistics.
#pragma once

#include <napi.h>

namespace qwen3 {

Napi::Value BuildInfo(const Napi::CallbackInfo& info);
Napi::Value Devices(const Napi::CallbackInfo& info);
Napi::Value SetTensorCores(const Napi::CallbackInfo& info);
Napi::Value TensorCoresEnabled(const Napi::CallbackInfo& info);
Napi::Value MemoryStats(const Napi::CallbackInfo& info);
Napi::Value ResetPeakMemory(const Napi::CallbackInfo& info);
// measureBandwidth(device, bytes) -> Promise<bytes per second>, on the thread pool.
Napi::Value MeasureBandwidth(const Napi::CallbackInfo& info);

}  // namespace qwen3
