// Which devices this libtorch can run on, TF32 control and device memory statistics.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qwen3 {

struct DeviceReport {
  int cuda_count = 0;
  std::vector<std::string> cuda_names;
  bool mps = false;
  int xpu_count = 0;
};

DeviceReport probe_devices();

// Throws std::invalid_argument naming the device when this build or machine cannot use it.
void check_device(const std::string& device);

// TF32 for float32 matrix products on CUDA (the book's enable_tensor_cores).
void set_tensor_cores(bool enabled);

// Which kernels libtorch's scaled_dot_product_attention may pick for prompts on CUDA: not cuDNN's,
// which builds a plan for every new sequence length (a stall on the first prompt of each length,
// and a server sees prompts of every length), unless QWEN3_SDPA_CUDNN=1 asks for it; the flash
// kernels then run. Process-wide; the engine sets it at each load.
void choose_attention_backends();
bool tensor_cores_enabled();

// Allocated bytes on a device.
struct MemoryUsage {
  bool available = false;  // false where this libtorch reports nothing for the device
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;   // -1 where the device tracks no peak
  int64_t free_bytes = -1;  // what a new allocation could still get (CUDA: free plus cached but unused); -1 unknown
  int64_t total_bytes = -1;
};

// Allocated bytes now and at the peak since the last reset; unavailable for CPU.
MemoryUsage memory_stats(const std::string& device);
void reset_peak_memory(const std::string& device);

// Wait for queued device work (timing needs it on asynchronous devices).
void synchronize_device(const std::string& device);

// Memory bandwidth in bytes/s from timed copies of a `bytes`-sized buffer (bytes read plus
// bytes written), the ceiling a memory-bound decode step is measured against. Slow: worker only.
double measure_copy_bandwidth(const std::string& device, int64_t bytes);

// For an external profiler started with capture off (`ncu --profile-from-start off`):
// QWEN3_PROFILE="decode:5,prefill:2" asks for the 5th decode and the 2nd prefill call of the
// process. profile_wanted counts the calls of `kind` and says whether this one is asked for;
// profiler_range(true/false) then brackets it (after synchronising). No-op without CUDA.
bool profile_wanted(const char* kind);
void profiler_range(const std::string& device, bool start);

}  // namespace qwen3
