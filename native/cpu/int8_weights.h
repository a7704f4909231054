// Int8 weights for the CPU. Each matrix row is quantized on its own (symmetric, per output
// channel): s = max |w[r, :]| / 127 (1 for an all-zero row), q = round(w / s) to nearest even,
// clamped to [-127, 127]. A quantized matrix is one uint8 tensor of (n, k + 4): row r holds q + 128
// for its k weights, then its float32 scale s in the last 4 bytes, so it travels wherever a
// matrix does (the fused block, the head); the uint8 dtype is what marks it.
//
// A product x W^T quantizes x too, per block of 64 values along k (the same rule, with the
// block's own scale t), so that each block's dot product is exact integer arithmetic on
// AVX512-VNNI: y[r] = s_r * sum over blocks of t_b * (x_q . q_r)_b, in float32, rounded once to
// x's dtype. scripts/python/int8_reference.py computes the same in PyTorch.
#pragma once

#include <ATen/core/Tensor.h>

namespace qwen3 {

// Values per block of the activations' quantization; k must be a multiple of it.
constexpr int64_t kInt8Block = 64;

// w (n, k), any floating dtype, k a multiple of kInt8Block: its packed rows.
at::Tensor quantize_rows_int8(const at::Tensor& w);

// Whether w is a packed int8 matrix.
inline bool is_int8_rows(const at::Tensor& w) { return w.defined() && w.scalar_type() == at::kByte; }

// x W^T for x (..., k) of any rows and a packed W, in ATen (float32 products of the integer
// values, exact): for CPUs without AVX512-VNNI, and the ATen backend.
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w);

// The same with AVX512-VNNI for x of float32 or bfloat16, the weights read once for all of x's
// rows, split over the cores. Undefined when the CPU or the arguments do not allow it.
at::Tensor int8_gemm(const at::Tensor& x, const at::Tensor& w);

}  // namespace qwen3
