// The fast forward pass (compile, and eager on CUDA): Q/K/V and gate/up weights fused into one
// matrix each at load time, attention through at::scaled_dot_product_attention (flash or cuDNN
// kernels where eligible), and the vocabulary projection only for the positions whose logits
// are wanted. On CUDA with the fused kernels (native/cuda_kernels.cu), RMSNorm, the per-head
// norm with RoPE, and SiLU*up are one kernel each, and the residual adds ride on the products.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "model_config.h"
#include "weights.h"

namespace qwen3 {

struct FusedBlock {
  at::Tensor w_qkv;      // ((n_heads + 2 * n_kv_groups) * head_dim, emb_dim)
  at::Tensor out_proj;   // (emb_dim, n_heads * head_dim)
  at::Tensor q_norm;     // (head_dim,) float32
  at::Tensor k_norm;     // (head_dim,) float32
  at::Tensor w_gate_up;  // (2 * hidden_dim, emb_dim)
  at::Tensor fc3;        // (emb_dim, hidden_dim)
  at::Tensor norm1;      // (emb_dim,) float32
  at::Tensor norm2;      // (emb_dim,) float32
};

// Attention over this step's queries given its new keys/values; returns the context
// (batch, n_heads, seq, head_dim). How keys/values are stored (appended, written into a static
// buffer) is the caller's business.
using AttendFn = std::function<at::Tensor(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>;

// The element type code of the fused kernels (CUDA and CPU): 0 float32, 1 bfloat16, 2 float16.
int kernel_dtype(at::ScalarType dtype);

class FastForward {
 public:
  // Takes the eager weights apart: the unfused matrices are freed as the fused ones are built.
  FastForward(const ModelConfig& config, Weights&& weights);

  // x: (batch, seq) int64 ids -> hidden states (batch, seq, emb_dim) after the last block.
  // cos, sin: (seq, head_dim) float32 for the tokens' positions, or (batch, seq, head_dim) when
  // rows have their own positions (left padding).
  at::Tensor hidden(const at::Tensor& ids, const at::Tensor& cos, const at::Tensor& sin, const AttendFn& attend) const;

  // Final norm and vocabulary projection: (batch, n, emb_dim) -> (batch, n, vocab).
  at::Tensor logits(const at::Tensor& hidden) const;

  int64_t parameter_bytes() const;

  // The fused CUDA decode step (cuda_graph_decoder.cc) drives the weights directly.
  const std::vector<FusedBlock>& blocks() const { return blocks_; }
  const at::Tensor& tok_emb() const { return tok_emb_; }
  const at::Tensor& final_norm() const { return final_norm_; }
  const at::Tensor& out_head() const { return out_head_; }

 private:
  at::Tensor hidden_fused(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin, const AttendFn& attend) const;
  // The fused steps, on whichever device the tensors are (cuda_kernels.h, cpu_kernels.h).
  void qk_norm_rope(const at::Tensor& qkv, const FusedBlock& b, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& q, at::Tensor& k,
                    at::Tensor& v) const;
  at::Tensor silu_mul(const at::Tensor& gate_up) const;                                        // (rows, 2F) -> (rows, F)
  void add_projection(at::Tensor& residual, const at::Tensor& input, const at::Tensor& w) const;  // residual += input W^T
  // x W^T: at::linear, or for one bfloat16 row on a CPU with AVX512-BF16 the faster cpu_gemv.
  at::Tensor project(const at::Tensor& x, const at::Tensor& w) const;
  // RMSNorm of the rows of x (..., emb_dim), through the fused kernel where there is one.
  at::Tensor norm(const at::Tensor& x, const at::Tensor& scale) const;

  ModelConfig config_;
  bool fused_ = false;         // fused kernels for this device: always on the CPU; on CUDA where built and fitting
  at::Tensor zero_position_;   // (1,) int64 0 on the device: the fused RoPE kernel's position base
  at::Tensor tok_emb_;  // (vocab_size, emb_dim)
  std::vector<FusedBlock> blocks_;
  at::Tensor final_norm_;  // (emb_dim,) float32
  at::Tensor out_head_;    // (vocab_size, emb_dim)
};

}  // namespace qwen3
