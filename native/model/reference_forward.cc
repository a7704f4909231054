#include "model/reference_forward.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/silu.h>

namespace qwen3 {

// Grouped-query attention for one block. x: (batch, seq, emb_dim), positions start..start+seq.
at::Tensor ReferenceForward::attention(const BlockWeights& b, int64_t layer, const at::Tensor& x, int64_t start, const StoreKV* store,
                                       RopeTable& rope, const Padding* padding) {
  const int64_t batch = x.size(0), seq = x.size(1), hd = config_.head_dim;
  const int64_t heads = config_.n_heads, groups = config_.n_kv_groups;
  // Project and split heads.
  at::Tensor q = at::linear(x, b.w_query).view({batch, seq, heads, hd}).transpose(1, 2);  // (batch, heads, seq, hd)
  at::Tensor k = at::linear(x, b.w_key).view({batch, seq, groups, hd}).transpose(1, 2);   // (batch, groups, seq, hd)
  at::Tensor v = at::linear(x, b.w_value).view({batch, seq, groups, hd}).transpose(1, 2); // (batch, groups, seq, hd)
  // Per-head RMSNorm on queries and keys.
  if (config_.qk_norm) {
    q = rms_norm(q, b.q_norm);
    k = rms_norm(k, b.k_norm);
  }
  // Rotary position embedding at the tokens' absolute positions.
  const auto [cos, sin] = padding ? std::make_pair(padding->cos, padding->sin) : rope.slice(start, seq);  // (seq or batch x seq, hd)
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  // Keys/values of all positions so far: (batch, groups, start + seq, hd).
  at::Tensor keys = k, values = v;
  if (store) std::tie(keys, values) = (*store)(layer, k, v);
  // Each key/value head serves heads / groups query heads.
  keys = keys.repeat_interleave(heads / groups, 1);      // (batch, heads, total, hd)
  values = values.repeat_interleave(heads / groups, 1);  // (batch, heads, total, hd)
  // Causal softmax(QK^T / sqrt(hd)) V; a single new token may see everything, so no mask.
  at::Tensor hidden;  // (seq, total) or (batch, 1, seq, total) bool
  if (padding) {
    hidden = padding->visible.logical_not();
  } else if (seq > 1) {
    hidden = future_keys(seq, start, keys.size(2), device_);
  }
  const at::Tensor context = masked_attention(q, keys, values, hidden).transpose(1, 2).reshape({batch, seq, heads * hd});  // (batch, seq, heads * hd)
  return at::linear(context, b.out_proj);  // (batch, seq, emb_dim)
}

at::Tensor ReferenceForward::forward(const at::Tensor& ids, KVCache* cache, RopeTable& rope, const Padding* padding) {
  const int64_t batch = ids.size(0), seq = ids.size(1);
  if (!cache) return run(at::embedding(w_.tok_emb, ids), 0, nullptr, rope, padding);
  const int64_t start = cache->length();
  cache->reserve(batch, seq, at::TensorOptions().device(device_).dtype(dtype_));
  const StoreKV store = [cache](int64_t layer, const at::Tensor& k, const at::Tensor& v) { return cache->append(layer, k, v); };
  at::Tensor logits = run(at::embedding(w_.tok_emb, ids), start, &store, rope, padding);
  cache->advance(seq);
  return logits;
}

at::Tensor ReferenceForward::forward(const at::Tensor& ids, int64_t start, const StoreKV& store, RopeTable& rope) {
  return run(at::embedding(w_.tok_emb, ids), start, &store, rope, nullptr);
}

at::Tensor ReferenceForward::run(at::Tensor x, int64_t start, const StoreKV* store, RopeTable& rope, const Padding* padding) {
  // x: the token embeddings (batch, seq, emb_dim).
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const BlockWeights& b = w_.blocks[static_cast<size_t>(l)];
    // Attention sub-block with a residual connection.
    x = attention(b, l, rms_norm(x, b.norm1), start, store, rope, padding) + x;
    // SwiGLU feed-forward sub-block: fc3(silu(fc1(h)) * fc2(h)), with a residual connection.
    const at::Tensor h = rms_norm(x, b.norm2);
    x = at::linear(at::silu(at::linear(h, b.fc1)) * at::linear(h, b.fc2), b.fc3) + x;
  }
  // Final norm and the vocabulary projection.
  x = rms_norm(x, w_.final_norm);
  return at::linear(x.to(dtype_), w_.out_head);  // (batch, seq, vocab)
}

int64_t ReferenceForward::parameter_bytes() const {
  int64_t total = w_.tok_emb.nbytes() + w_.final_norm.nbytes() + (w_.out_head.is_same(w_.tok_emb) ? 0 : w_.out_head.nbytes());
  for (const auto& b : w_.blocks) {
    for (const at::Tensor* t : {&b.w_query, &b.w_key, &b.w_value, &b.out_proj, &b.q_norm, &b.k_norm, &b.fc1, &b.fc2,
                                &b.fc3, &b.norm1, &b.norm2}) {
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
    }
  }
  return total;
}

}  // namespace qwen3
