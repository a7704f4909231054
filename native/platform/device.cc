#include "platform/device.h"

#include <ATen/Context.h>
#include <ATen/detail/MPSHooksInterface.h>
#include <ATen/detail/XPUHooksInterface.h>
#include <c10/core/Device.h>

#include <ATen/ops/empty.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <vector>

#ifdef QWEN3_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#endif
#ifdef QWEN3_WITH_CUDA_KERNELS
#include "cuda/kernels.h"
#endif

namespace qwen3 {

DeviceReport probe_devices() {
  DeviceReport report;
#ifdef QWEN3_WITH_CUDA
  if (at::hasCUDA()) {
    report.cuda_count = static_cast<int>(c10::cuda::device_count());
    for (int i = 0; i < report.cuda_count; ++i) {
      report.cuda_names.emplace_back(at::cuda::getDeviceProperties(i)->name);
    }
  }
#endif
  report.mps = at::hasMPS();
  report.xpu_count = at::hasXPU() ? static_cast<int>(at::detail::getXPUHooks().getNumGPUs()) : 0;
  return report;
}

void check_device(const std::string& device) {
  c10::Device parsed(c10::DeviceType::CPU);
  try {
    parsed = c10::Device(device);
  } catch (const std::exception&) {
    throw std::invalid_argument("Unknown device '" + device + "': expected cpu, cuda, cuda:N, mps or xpu");
  }
  const DeviceReport report = probe_devices();
  const auto index = parsed.has_index() ? parsed.index() : 0;
  switch (parsed.type()) {
    case c10::DeviceType::CPU:
      return;
    case c10::DeviceType::CUDA:
      if (report.cuda_count == 0) {
#ifdef QWEN3_WITH_CUDA
        throw std::invalid_argument("Device '" + device + "' is not available: this machine has no usable CUDA GPU");
#else
        throw std::invalid_argument("Device '" + device + "' is not available: this addon was built against a CPU-only libtorch (" QWEN3_TORCH_BUILT_VERSION ")");
#endif
      }
      if (index >= report.cuda_count) {
        throw std::invalid_argument("Device '" + device + "' is not available: only " + std::to_string(report.cuda_count) + " CUDA device(s)");
      }
      return;
    case c10::DeviceType::MPS:
      if (!report.mps) throw std::invalid_argument("Device '" + device + "' is not available: this libtorch or machine has no MPS (Apple GPU) support");
      return;
    case c10::DeviceType::XPU:
      if (index >= report.xpu_count) throw std::invalid_argument("Device '" + device + "' is not available: this libtorch or machine has no XPU (Intel GPU) support");
      return;
    default:
      throw std::invalid_argument("Unsupported device '" + device + "': expected cpu, cuda, cuda:N, mps or xpu");
  }
}

// PyTorch 2.9 replaced the allow_tf32 flags with per-backend fp32 precision settings, taken as
// strings at first and as enums later. CMakeLists.txt probes which one this libtorch has.
void set_tensor_cores(bool enabled) {
  auto& ctx = at::globalContext();
#if defined(QWEN3_FP32_PRECISION_ENUM)
  ctx.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL,
                          enabled ? at::Float32Precision::TF32 : at::Float32Precision::IEEE);
#elif defined(QWEN3_FP32_PRECISION_STRING)
  ctx.setFloat32Precision("cuda", "matmul", enabled ? "tf32" : "ieee");
#else
  ctx.setAllowTF32CuBLAS(enabled);
#endif
}

void choose_attention_backends() {
  const char* cudnn = std::getenv("QWEN3_SDPA_CUDNN");
  at::globalContext().setSDPUseCuDNN(cudnn != nullptr && std::string(cudnn) == "1");
}

bool tensor_cores_enabled() {
  const auto& ctx = at::globalContext();
#if defined(QWEN3_FP32_PRECISION_ENUM)
  return ctx.float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) == at::Float32Precision::TF32;
#elif defined(QWEN3_FP32_PRECISION_STRING)
  return ctx.float32Precision("cuda", "matmul") == "tf32";
#else
  return ctx.allowTF32CuBLAS();
#endif
}

MemoryUsage memory_stats(const std::string& device) {
  MemoryUsage stats;
  const c10::Device parsed(device);
#ifdef QWEN3_WITH_CUDA
  if (parsed.is_cuda()) {
    const auto index = parsed.has_index() ? parsed.index() : c10::cuda::current_device();
    stats.available = true;
    int64_t cached_unused = 0;
    try {
      const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
      const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
      stats.current_bytes = s.allocated_bytes[aggregate].current;
      stats.peak_bytes = s.allocated_bytes[aggregate].peak;
      cached_unused = s.reserved_bytes[aggregate].current - s.allocated_bytes[aggregate].current;
    } catch (const c10::Error&) {
      // The caching allocator starts with the first CUDA tensor; before that nothing is allocated.
    }
    size_t free = 0, total = 0;
    const c10::cuda::CUDAGuard guard(index);
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
      stats.free_bytes = static_cast<int64_t>(free) + cached_unused;
      stats.total_bytes = static_cast<int64_t>(total);
    }
    return stats;
  }
#endif
  if (parsed.is_mps() && at::hasMPS()) {
    // MPS reports current allocations only: no peak.
    stats.available = true;
    stats.current_bytes = static_cast<int64_t>(at::detail::getMPSHooks().getCurrentAllocatedMemory());
    stats.peak_bytes = -1;
  }
  return stats;
}

void reset_peak_memory(const std::string& device) {
#ifdef QWEN3_WITH_CUDA
  const c10::Device parsed(device);
  if (parsed.is_cuda()) {
    try {
      c10::cuda::CUDACachingAllocator::resetPeakStats(parsed.has_index() ? parsed.index() : c10::cuda::current_device());
    } catch (const c10::Error&) {
      // Not initialised yet: there is no peak to reset.
    }
  }
#endif
}

void synchronize_device(const std::string& device) {
  const c10::Device parsed(device);
#ifdef QWEN3_WITH_CUDA
  if (parsed.is_cuda()) c10::cuda::device_synchronize();
#endif
  if (parsed.is_mps() && at::hasMPS()) at::detail::getMPSHooks().deviceSynchronize();
}

double measure_copy_bandwidth(const std::string& device, int64_t bytes) {
  const auto opts = at::TensorOptions().device(c10::Device(device)).dtype(at::kByte);
  at::Tensor src = at::empty({bytes}, opts).fill_(1);
  at::Tensor dst = at::empty({bytes}, opts);
  dst.copy_(src);  // warm-up: page in both buffers
  synchronize_device(device);
  std::vector<double> seconds;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    dst.copy_(src);
    synchronize_device(device);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return 2.0 * static_cast<double>(bytes) / seconds[seconds.size() / 2];  // median
}

bool profile_wanted(const char* kind) {
  static const char* spec = std::getenv("QWEN3_PROFILE");
  if (spec == nullptr) return false;
  static std::mutex mutex;
  static std::map<std::string, int64_t> calls;
  const std::lock_guard<std::mutex> lock(mutex);
  const int64_t call = ++calls[kind];
  std::stringstream items(spec);
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto colon = item.find(':');
    if (colon != std::string::npos && item.substr(0, colon) == kind && std::atoll(item.c_str() + colon + 1) == call) return true;
  }
  return false;
}

void profiler_range(const std::string& device, bool start) {
  synchronize_device(device);
#ifdef QWEN3_WITH_CUDA_KERNELS
  if (c10::Device(device).is_cuda()) cuda::profiler(start);
#endif
}

}  // namespace qwen3
