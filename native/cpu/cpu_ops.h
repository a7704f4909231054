// The block's operations on the CPU: the fused loops of cpu/kernels.h for RMSNorm, per-head
// norm with RoPE, SiLU*up and one-token attention; the AVX512-BF16 GEMV for one-row bfloat16
// products and the VNNI one for int8 weights (cpu/int8_weights.h); ATen (oneDNN) for the rest,
// rounding where the reference rounds.
#pragma once

#include "model/aten_ops.h"

namespace qwen3 {

class CpuOps : public AtenOps {
 public:
  using AtenOps::AtenOps;

  at::Tensor attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) override;
  // The rounded product, then the add: the reference's order.
  void linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) override { x.add_(project(input, w)); }

 protected:
  at::Tensor norm(const at::Tensor& x, const at::Tensor& scale) override;
  at::Tensor project(const at::Tensor& x, const at::Tensor& w) override;
  at::Tensor silu_mul(const at::Tensor& gate_up) override;

 private:
  // A ragged decode step over sequence slots: the fused loops at each row's own position and length.
  at::Tensor slot_rows_attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w);
};

}  // namespace qwen3
