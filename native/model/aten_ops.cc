#include "model/aten_ops.h"

#include <ATen/TensorIndexing.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/silu.h>

#include <algorithm>
#include <optional>

#include "cpu/int8_weights.h"
#include "model/fp8_weights.h"
#include "model/slot_cache.h"

namespace qwen3 {

void AtenOps::linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) { x = project(input, w) + x; }

at::Tensor AtenOps::project(const at::Tensor& x, const at::Tensor& w) {
  // Int8 rows (cpu/int8_weights.h): prompts and batched steps multiply in float32. FP8 rows
  // (model/fp8_weights.h): widened a slice at a time.
  if (is_int8_rows(w)) return int8_linear(x, w);
  return is_fp8_rows(w) ? fp8_linear(x, w) : at::linear(x, w);
}

at::Tensor AtenOps::silu_mul(const at::Tensor& gate_up) {
  const auto halves = gate_up.chunk(2, -1);  // 2 x (rows, hidden_dim)
  return at::silu(halves[0]) * halves[1];
}

void AtenOps::split_norm_rope(const at::Tensor& qkv, const FusedBlock& w, at::Tensor& q, at::Tensor& k, at::Tensor& v) const {
  const int64_t batch = step_.batch, seq = step_.seq, hd = config_.head_dim, heads = config_.n_heads, groups = config_.n_kv_groups;
  const auto parts = qkv.split_with_sizes({heads * hd, groups * hd, groups * hd}, -1);
  q = parts[0].view({batch, seq, heads, hd}).transpose(1, 2);   // (batch, heads, seq, hd)
  k = parts[1].view({batch, seq, groups, hd}).transpose(1, 2);  // (batch, groups, seq, hd)
  v = parts[2].view({batch, seq, groups, hd}).transpose(1, 2);  // (batch, groups, seq, hd)
  // Per-head RMSNorm and RoPE, as in the reference.
  if (config_.qk_norm) {
    q = rms_norm(q, w.q_norm);
    k = rms_norm(k, w.k_norm);
  }
  q = apply_rope(q, step_.cos, step_.sin);
  k = apply_rope(k, step_.cos, step_.sin);
}

void AtenOps::empty_heads(const at::Tensor& qkv, at::Tensor& q, at::Tensor& k, at::Tensor& v, bool token_major) const {
  const int64_t batch = step_.batch, seq = step_.seq, hd = config_.head_dim;
  q = token_major ? at::empty({batch, seq, config_.n_heads, hd}, qkv.options()).transpose(1, 2)  // (batch, heads, seq, hd)
                  : at::empty({batch, config_.n_heads, seq, hd}, qkv.options());                 // (batch, heads, seq, hd)
  k = at::empty({batch, config_.n_kv_groups, seq, hd}, qkv.options());  // (batch, groups, seq, hd)
  v = at::empty({batch, config_.n_kv_groups, seq, hd}, qkv.options());  // (batch, groups, seq, hd)
}

at::Tensor AtenOps::sdpa(const at::Tensor& q, at::Tensor keys, at::Tensor values) {
  if (!step_.visible.defined()) {
    if (step_.padding) {
      step_.visible = step_.padding->visible;  // (batch, 1, seq, start + seq)
    } else if (step_.seq > 1 && step_.start > 0) {
      // New tokens attend causally to themselves and to everything cached before them.
      step_.visible = future_keys(step_.seq, step_.start, step_.start + step_.seq, q.device()).logical_not();  // (seq, start + seq)
    }
  }
  const bool causal = step_.seq > 1 && step_.start == 0 && !step_.padding;
  // Repeating the key/value heads keeps a many-token step eligible for the flash kernels, which
  // not every libtorch offers together with enable_gqa; for one token it costs more than it saves.
  // A backend whose libtorch has them (grouped_sdpa_) passes the groups as they are to an
  // unmasked step in a 2-byte dtype, which the flash kernels take (float32 goes to a kernel that
  // may not take groups, and SDPA's fallback for it holds every score in memory).
  const int64_t repeat = config_.n_heads / config_.n_kv_groups;
  const bool grouped = step_.seq == 1 || (grouped_sdpa_ && !step_.visible.defined() && q.element_size() == 2);
  if (repeat > 1 && !grouped) {
    keys = keys.repeat_interleave(repeat, 1);      // (batch, heads, keys, hd)
    values = values.repeat_interleave(repeat, 1);  // (batch, heads, keys, hd)
  }
  return at::scaled_dot_product_attention(q, keys, values, step_.visible.defined() ? std::optional<at::Tensor>(step_.visible) : std::nullopt,
                                          0.0, causal, std::nullopt, /*enable_gqa=*/repeat > 1 && grouped);
}

at::Tensor AtenOps::merge_heads(const at::Tensor& context) const {
  return context.transpose(1, 2).reshape({step_.batch * step_.seq, config_.n_heads * config_.head_dim});
}

void AtenOps::store_slot_rows(int64_t layer, const at::Tensor& k, const at::Tensor& v) const {
  const SlotRows& s = *step_.slots;
  const int64_t rows = step_.batch, groups = config_.n_kv_groups, hd = config_.head_dim;
  // Advanced indices on dimensions 0 and 2: the indexed view is (rows, groups, hd).
  const std::initializer_list<at::indexing::TensorIndex> where = {s.slot_index, at::indexing::Slice(), s.position_index};
  at::Tensor keys = s.cache->keys(layer), values = s.cache->values(layer);  // handles on the slots' buffers
  keys.index_put_(where, k.reshape({rows, groups, hd}));
  values.index_put_(where, v.reshape({rows, groups, hd}));
}

at::Tensor AtenOps::slot_rows_sdpa(int64_t layer, const at::Tensor& q) {
  const SlotRows& s = *step_.slots;
  const int64_t longest = *std::max_element(s.positions.begin(), s.positions.end()) + 1;
  const at::Tensor keys = s.cache->keys(layer).narrow(2, 0, longest).index_select(0, s.slot_index);      // (rows, groups, longest, hd)
  const at::Tensor values = s.cache->values(layer).narrow(2, 0, longest).index_select(0, s.slot_index);  // (rows, groups, longest, hd)
  if (!step_.visible.defined()) {
    const at::Tensor key_positions = at::arange(longest, s.position_index.options());
    step_.visible = (key_positions.unsqueeze(0) <= s.position_index.unsqueeze(1)).view({step_.batch, 1, 1, longest});  // (rows, 1, 1, longest)
  }
  return merge_heads(sdpa(q, keys, values));
}

at::Tensor AtenOps::attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) {
  at::Tensor q, k, v;
  split_norm_rope(qkv, w, q, k, v);
  if (step_.slots) {
    store_slot_rows(layer, k, v);
    return slot_rows_sdpa(layer, q);
  }
  const auto [keys, values] = step_.store(layer, k, v);  // (batch, groups, keys, hd) each
  return merge_heads(sdpa(q, keys, values));
}

}  // namespace qwen3
