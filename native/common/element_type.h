// The element types the fused kernels (CPU and CUDA) take as a plain int, and the one switch
// from that int to a backend's own types. No torch and no CUDA headers here.
#pragma once

#include <stdexcept>
#include <string>

namespace qwen3 {

enum ElementType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Calls f with a null pointer of the element type that `dtype` names, as the backend spells
// float32, bfloat16 and float16 (c10::BFloat16 on the CPU, __nv_bfloat16 on CUDA, ...).
template <typename Float32, typename BFloat16, typename Float16, typename F>
void dispatch_element_type(int dtype, const char* kernels, F&& f) {
  switch (dtype) {
    case kFloat32: f(static_cast<Float32*>(nullptr)); break;
    case kBFloat16: f(static_cast<BFloat16*>(nullptr)); break;
    case kFloat16: f(static_cast<Float16*>(nullptr)); break;
    default: throw std::invalid_argument("unsupported dtype " + std::to_string(dtype) + " for the " + kernels);
  }
}

}  // namespace qwen3
