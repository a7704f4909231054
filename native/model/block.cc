#include "model/block.h"

#include <ATen/ops/cat.h>

#include "common/element_type.h"

namespace qwen3 {

FusedWeights FusedWeights::fuse(Weights&& w) {
  FusedWeights f;
  f.tok_emb = std::move(w.tok_emb);
  for (BlockWeights& b : w.blocks) {
    FusedBlock fb;
    fb.w_qkv = at::cat({b.w_query, b.w_key, b.w_value}, 0);
    b.w_query = b.w_key = b.w_value = at::Tensor();
    fb.w_gate_up = at::cat({b.fc1, b.fc2}, 0);
    b.fc1 = b.fc2 = at::Tensor();
    fb.out_proj = std::move(b.out_proj);
    fb.q_norm = std::move(b.q_norm);
    fb.k_norm = std::move(b.k_norm);
    fb.fc3 = std::move(b.fc3);
    fb.norm1 = std::move(b.norm1);
    fb.norm2 = std::move(b.norm2);
    f.blocks.push_back(std::move(fb));
  }
  w.blocks.clear();
  f.final_norm = std::move(w.final_norm);
  f.out_head = std::move(w.out_head);
  return f;
}

int64_t FusedWeights::parameter_bytes() const {
  int64_t total = tok_emb.nbytes() + final_norm.nbytes() + (out_head.is_same(tok_emb) ? 0 : out_head.nbytes());
  for (const FusedBlock& b : blocks) {
    for (const at::Tensor* t : {&b.w_qkv, &b.out_proj, &b.q_norm, &b.k_norm, &b.w_gate_up, &b.fc3, &b.norm1, &b.norm2}) {
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
    }
  }
  return total;
}

int kernel_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat ? kFloat32 : dtype == at::kBFloat16 ? kBFloat16 : kFloat16;
}

void run_blocks(const FusedWeights& weights, BlockOps& ops, at::Tensor& x) {
  for (size_t l = 0; l < weights.blocks.size(); ++l) {
    const FusedBlock& w = weights.blocks[l];
    // Attention: queries, keys and values of the normed stream in one product.
    const at::Tensor qkv = ops.qkv(x, w);  // (rows, (heads + 2 groups) * hd)
    // Per-head norm and RoPE, the KV cache, attention.
    const at::Tensor context = ops.attention(static_cast<int64_t>(l), qkv, w);  // (rows, heads * hd)
    // Output projection onto the residual stream.
    ops.linear_add(x, context, w.out_proj);
    // SwiGLU feed-forward: gate and up in one product of the normed stream, SiLU(gate) * up.
    const at::Tensor act = ops.swiglu(x, w);  // (rows, hidden_dim)
    // Down projection onto the residual stream.
    ops.linear_add(x, act, w.fc3);
  }
}

}  // namespace qwen3
