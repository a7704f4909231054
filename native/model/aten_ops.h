// The block's operations in plain ATen calls: the fallback every backend can take, and the
// base that the CPU and CUDA prompt backends override one operation at a time.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "model/layers.h"

namespace qwen3 {

class SlotCache;

// A ragged decode step over sequence slots: row r is one new token of slot slots[r] at position
// positions[r], attending to that slot's positions 0..positions[r].
struct SlotRows {
  std::vector<int64_t> slots, positions;  // (rows,) each, on the host
  at::Tensor slot_index, position_index;  // the same as int64 tensors on the step's device
  at::Tensor cos_table, sin_table;        // (positions up to the largest + 1, hd) float32, contiguous
  SlotCache* cache = nullptr;
};

// What attention needs to know about a step besides the weights.
struct StepShape {
  int64_t batch = 0, seq = 0;  // rows and new tokens per row
  int64_t start = 0;           // tokens before them in the keys (the cache's length)
  at::Tensor cos, sin;         // (seq, hd) float32 at the tokens' positions; (batch, seq, hd) with padding
  const Padding* padding = nullptr;  // left-padded rows: their own positions and visible keys
  at::Tensor visible;          // undefined, or bool broadcasting to (batch, heads, seq, keys): which keys each query sees
  StoreKV store;
  // A ragged decode step (seq 1; cos/sin then (batch, 1, hd) at each row's position): attention
  // writes into and reads from the slots instead of calling store.
  const SlotRows* slots = nullptr;
};

class AtenOps : public BlockOps {
 public:
  AtenOps(const ModelConfig& config, StepShape step) : config_(config), step_(std::move(step)) {}

  at::Tensor qkv(const at::Tensor& x, const FusedBlock& w) override { return project(norm(x, w.norm1), w.w_qkv); }
  at::Tensor attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) override;
  void linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) override;
  at::Tensor swiglu(const at::Tensor& x, const FusedBlock& w) override { return silu_mul(project(norm(x, w.norm2), w.w_gate_up)); }

  // The prompt's head: final RMSNorm and the vocabulary projection, (rows, emb_dim) -> (rows, vocab).
  at::Tensor logits(const at::Tensor& x, const at::Tensor& final_norm, const at::Tensor& out_head) {
    return project(norm(x, final_norm), out_head);
  }

 protected:
  // RMSNorm of the rows of x (..., emb_dim).
  virtual at::Tensor norm(const at::Tensor& x, const at::Tensor& scale) { return rms_norm(x, scale); }
  // x w^T.
  virtual at::Tensor project(const at::Tensor& x, const at::Tensor& w);
  // SiLU(gate) * up of gate_up (rows, 2 * hidden_dim) = [gate | up] -> (rows, hidden_dim).
  virtual at::Tensor silu_mul(const at::Tensor& gate_up);
  // Queries and keys of qkv split into heads, normed and rotated by ATen operations:
  // q (batch, heads, seq, hd), k and v (batch, groups, seq, hd).
  void split_norm_rope(const at::Tensor& qkv, const FusedBlock& w, at::Tensor& q, at::Tensor& k, at::Tensor& v) const;
  // Uninitialised q (batch, heads, seq, hd), k and v (batch, groups, seq, hd) for a fused kernel to fill;
  // with token_major, q is a view of memory laid out (batch, seq, heads, hd).
  void empty_heads(const at::Tensor& qkv, at::Tensor& q, at::Tensor& k, at::Tensor& v, bool token_major = false) const;
  // softmax(q k^T / sqrt(hd)) v through at::scaled_dot_product_attention: causal for a prompt on
  // an empty cache, masked by step_.visible otherwise (built on first use for a many-token step
  // after cached tokens). q: (batch, heads, seq, hd); keys, values: (batch, groups, keys, hd).
  // Returns (batch, heads, seq, hd).
  at::Tensor sdpa(const at::Tensor& q, at::Tensor keys, at::Tensor values);
  // The context (batch, heads, seq, hd) as the output projection's input (rows, heads * hd).
  at::Tensor merge_heads(const at::Tensor& context) const;
  // A ragged decode step's keys k and values v (rows, groups, 1, hd) into their slots at their rows' positions.
  void store_slot_rows(int64_t layer, const at::Tensor& k, const at::Tensor& v) const;
  // Attention of a ragged decode step through SDPA: each row's keys gathered from its slot up to
  // the longest row, the rest masked. q: (rows, heads, 1, hd). Returns (rows, heads * hd).
  at::Tensor slot_rows_sdpa(int64_t layer, const at::Tensor& q);

  ModelConfig config_;
  StepShape step_;
  // Whether an unmasked many-token step passes the key/value heads to SDPA as they are
  // (enable_gqa) instead of repeating them per query head: set by a backend whose libtorch's flash
  // kernels take the groups themselves.
  bool grouped_sdpa_ = false;
};

}  // namespace qwen3
