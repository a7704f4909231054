#include "binding/runtime_info.h"

#include <c10/util/Exception.h>

#include <stdexcept>

#include "platform/device.h"
#include "binding/promise_worker.h"

namespace qwen3 {
namespace {

std::string DeviceArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "Expected device string");
  return info[0].As<Napi::String>().Utf8Value();
}

// Runs `fn`, turning C++ exceptions into JS errors (these calls run on the JS thread).
template <typename Fn>
auto Guard(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Napi::Error::New(env, e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  } catch (...) {
    throw Napi::Error::New(env, "Unknown native error");
  }
}

}  // namespace

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("torchVersion", QWEN3_TORCH_BUILT_VERSION);
  out.Set("torchRoot", QWEN3_TORCH_BUILT_ROOT);
  out.Set("torchSource", QWEN3_TORCH_BUILT_SOURCE);
#ifdef QWEN3_WITH_CUDA
  out.Set("cuda", true);
#ifdef QWEN3_CUDA_VERSION
  out.Set("cudaVersion", QWEN3_CUDA_VERSION);
#else
  out.Set("cudaVersion", env.Null());
#endif
#else
  out.Set("cuda", false);
  out.Set("cudaVersion", env.Null());
#endif
  out.Set("napiVersion", NAPI_VERSION);
  return out;
}

Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const DeviceReport r = Guard(env, [] { return probe_devices(); });
  Napi::Object out = Napi::Object::New(env);
  out.Set("cudaCount", r.cuda_count);
  auto names = Napi::Array::New(env, r.cuda_names.size());
  for (uint32_t i = 0; i < r.cuda_names.size(); ++i) names.Set(i, r.cuda_names[i]);
  out.Set("cudaNames", names);
  out.Set("mps", r.mps);
  out.Set("xpuCount", r.xpu_count);
  return out;
}

Napi::Value SetTensorCores(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) throw Napi::TypeError::New(info.Env(), "Expected boolean");
  const bool enabled = info[0].As<Napi::Boolean>().Value();
  Guard(info.Env(), [&] { set_tensor_cores(enabled); });
  return info.Env().Undefined();
}

Napi::Value TensorCoresEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), Guard(info.Env(), [] { return tensor_cores_enabled(); }));
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string device = DeviceArg(info);
  const MemoryUsage s = Guard(env, [&] { return memory_stats(device); });
  if (!s.available) return env.Null();
  Napi::Object out = Napi::Object::New(env);
  out.Set("currentBytes", static_cast<double>(s.current_bytes));
  out.Set("peakBytes", s.peak_bytes < 0 ? env.Null() : Napi::Number::New(env, static_cast<double>(s.peak_bytes)));
  out.Set("freeBytes", s.free_bytes < 0 ? env.Null() : Napi::Number::New(env, static_cast<double>(s.free_bytes)));
  out.Set("totalBytes", s.total_bytes < 0 ? env.Null() : Napi::Number::New(env, static_cast<double>(s.total_bytes)));
  return out;
}

Napi::Value ResetPeakMemory(const Napi::CallbackInfo& info) {
  const std::string device = DeviceArg(info);
  Guard(info.Env(), [&] { reset_peak_memory(device); });
  return info.Env().Undefined();
}

namespace {

class BandwidthWorker : public PromiseWorker {
 public:
  BandwidthWorker(Napi::Env env, std::string device, int64_t bytes)
      : PromiseWorker(env, "qwen3.bandwidth"), device_(std::move(device)), bytes_(bytes) {}

 protected:
  void Work() override { result_ = measure_copy_bandwidth(device_, bytes_); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, result_); }

 private:
  std::string device_;
  int64_t bytes_;
  double result_ = 0;
};

}  // namespace

Napi::Value MeasureBandwidth(const Napi::CallbackInfo& info) {
  const std::string device = DeviceArg(info);
  const double bytes = info.Length() >= 2 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  // Checked before the cast: NaN or 1e300 converted to an integer is undefined behaviour.
  if (!(bytes >= 1 && bytes <= 1e12)) throw Napi::RangeError::New(info.Env(), "Expected number of bytes between 1 and 1e12");
  auto* worker = new BandwidthWorker(info.Env(), device, static_cast<int64_t>(bytes));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace qwen3
