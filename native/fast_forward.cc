#include "fast_forward.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/silu.h>

#include "layers.h"

namespace qwen3 {

FastForward::FastForward(const ModelConfig& config, Weights&& w) : config_(config) {
  tok_emb_ = std::move(w.tok_emb);
  for (BlockWeights& b : w.blocks) {
    FusedBlock f;
    f.w_qkv = at::cat({b.w_query, b.w_key, b.w_value}, 0);
    b.w_query = b.w_key = b.w_value = at::Tensor();  // free each source as soon as it is copied
    f.w_gate_up = at::cat({b.fc1, b.fc2}, 0);
    b.fc1 = b.fc2 = at::Tensor();
    f.out_proj = std::move(b.out_proj);
    f.q_norm = std::move(b.q_norm);
    f.k_norm = std::move(b.k_norm);
    f.fc3 = std::move(b.fc3);
    f.norm1 = std::move(b.norm1);
    f.norm2 = std::move(b.norm2);
    blocks_.push_back(std::move(f));
  }
  w.blocks.clear();
  final_norm_ = std::move(w.final_norm);
  out_head_ = std::move(w.out_head);
}

at::Tensor FastForward::hidden(const at::Tensor& ids, const at::Tensor& cos, const at::Tensor& sin, const AttendFn& attend) const {
  const int64_t batch = ids.size(0), seq = ids.size(1), hd = config_.head_dim;
  const int64_t heads = config_.n_heads, groups = config_.n_kv_groups;
  // Token embeddings.
  at::Tensor x = at::embedding(tok_emb_, ids);  // (batch, seq, emb_dim)
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const FusedBlock& b = blocks_[l];
    // One matrix product for queries, keys and values, then split heads.
    const at::Tensor qkv = at::linear(rms_norm(x, b.norm1), b.w_qkv);  // (batch, seq, (heads + 2 groups) * hd)
    const auto parts = qkv.split_with_sizes({heads * hd, groups * hd, groups * hd}, -1);
    at::Tensor q = parts[0].view({batch, seq, heads, hd}).transpose(1, 2);   // (batch, heads, seq, hd)
    at::Tensor k = parts[1].view({batch, seq, groups, hd}).transpose(1, 2);  // (batch, groups, seq, hd)
    const at::Tensor v = parts[2].view({batch, seq, groups, hd}).transpose(1, 2);  // (batch, groups, seq, hd)
    // Per-head RMSNorm and RoPE, as in the reference.
    if (config_.qk_norm) {
      q = rms_norm(q, b.q_norm);
      k = rms_norm(k, b.k_norm);
    }
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
    // Attention and output projection, with the residual connection.
    const at::Tensor context = attend(static_cast<int64_t>(l), q, k, v);  // (batch, heads, seq, hd)
    x = at::linear(context.transpose(1, 2).reshape({batch, seq, heads * hd}), b.out_proj) + x;
    // SwiGLU with gate and up from one matrix product, with the residual connection.
    const auto gate_up = at::linear(rms_norm(x, b.norm2), b.w_gate_up).chunk(2, -1);  // 2 x (batch, seq, hidden_dim)
    x = at::linear(at::silu(gate_up[0]) * gate_up[1], b.fc3) + x;
  }
  return x;
}

at::Tensor FastForward::logits(const at::Tensor& hidden) const {
  return at::linear(rms_norm(hidden, final_norm_), out_head_);
}

int64_t FastForward::parameter_bytes() const {
  int64_t total = tok_emb_.nbytes() + final_norm_.nbytes() + out_head_.nbytes();
  for (const FusedBlock& b : blocks_) {
    for (const at::Tensor* t : {&b.w_qkv, &b.out_proj, &b.q_norm, &b.k_norm, &b.w_gate_up, &b.fc3, &b.norm1, &b.norm2}) {
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
    }
  }
  return total;
}

}  // namespace qwen3
