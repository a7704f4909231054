// The block's operations for a prompt on CUDA: the fused RMSNorm, per-head norm with RoPE and
// SiLU*up kernels of cuda/kernels.h, cuBLAS products with the residual added in their epilogue
// (FP8 rows of short prompts: the batch product kernel), and flash or cuDNN attention through SDPA.
// Built only where the fused kernels are.
#pragma once

#include "model/aten_ops.h"

namespace qwen3 {

class CudaPrefillOps : public AtenOps {
 public:
  CudaPrefillOps(const ModelConfig& config, StepShape step);

  at::Tensor attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) override;
  // cuBLAS adds the residual in its epilogue (FP8 rows: the rounded product, then the sum).
  void linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) override;

 protected:
  at::Tensor norm(const at::Tensor& x, const at::Tensor& scale) override;
  // FP8 rows on the tensor cores for prompts of up to kBatchProductMaxRows tokens (cuda::batch_product).
  at::Tensor project(const at::Tensor& x, const at::Tensor& w) override;
  at::Tensor silu_mul(const at::Tensor& gate_up) override;

 private:
  at::Tensor zero_position_;  // (1,) int64 0: the RoPE kernel's position base, since cos/sin start at the step's first token
};

}  // namespace qwen3
