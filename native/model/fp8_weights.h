// FP8 weights (E4M3, weight-only). Each matrix row is quantized on its own: s = max |w[r, :]| / 448
// (1 for an all-zero row), q = w / s rounded to the nearest E4M3 value, ties to even (|w / s| is at
// most 448, E4M3's largest, so nothing saturates). A quantized matrix is one Float8_e4m3fn tensor
// of (n, k + kFp8RowPad): row r holds its k values, then its float32 scale in the next 4 bytes,
// then zeros, so every row starts 16-byte aligned and the matrix travels wherever a matrix does
// (the fused block, the head); the dtype is what marks it.
//
// A product x W^T keeps x as it is (bfloat16 on the GPU) and computes y[r] = s_r * sum_k q[r, k]
// x[k] in float32, rounded once to x's dtype: the CUDA GEMVs for a batch-1 step
// (cuda/fp8_gemv.cu, cuda/head_kernel.cu), fp8_linear for every other shape and device.
// scripts/python/quantized_reference.py computes the same in PyTorch.
#pragma once

#include <ATen/core/Tensor.h>

namespace qwen3 {

constexpr int64_t kFp8RowPad = 16;

// w (n, k), any floating dtype, k a multiple of 16: its FP8 rows, on w's device.
at::Tensor quantize_rows_fp8(const at::Tensor& w);

// Whether w is an FP8 matrix, and the width of its rows' input.
inline bool is_fp8_rows(const at::Tensor& w) { return w.defined() && w.scalar_type() == at::kFloat8_e4m3fn; }
inline int64_t fp8_input_width(const at::Tensor& w) { return w.size(1) - kFp8RowPad; }

// x W^T for x (..., k) of any rows: (..., n) in x's dtype. Widens a slice of rows of W at a time to
// x's dtype (exact) for the GPU's matrix product with float32 sums, or to float32 on the CPU.
at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& w);

// The same into out (rows, n), for x (rows, k).
void fp8_linear_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& w);

}  // namespace qwen3
