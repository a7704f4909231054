// A matrix-vector product for batch-1 bfloat16 decoding on x86-64 CPUs with AVX512-BF16. The
// step streams every weight once per token, so its speed is the memory bandwidth one gets;
// oneDNN's kernel for a 1-row product reaches a fraction of it, this one (split over the cores)
// most of it (docs/performance.md).
#pragma once

#include <ATen/core/Tensor.h>

namespace qwen3 {

// True when this CPU has AVX512-BF16 (checked once).
bool cpu_gemv_available();

// out = x W^T for x (..., k) with one row in all, W (n, k), both bfloat16 and contiguous on the
// CPU, k a multiple of 32: returns the (..., n) result, rounded once from float32 sums as
// at::linear does. Returns an undefined tensor when any of that does not hold.
at::Tensor cpu_gemv(const at::Tensor& x, const at::Tensor& w);

}  // namespace qwen3
