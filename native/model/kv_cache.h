// The growable KV cache: one key and one value buffer per layer, sized in one place (reserve),
// growing in chunks so memory follows the real context instead of the 40,960-token maximum.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace qwen3 {

class KVCache {
 public:
  KVCache(int64_t n_layers, int64_t n_kv_groups, int64_t head_dim, int64_t max_length);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t batch() const { return batch_; }

  // Make room for `new_tokens` more tokens of `batch` rows, growing every layer's buffers if
  // needed. A different batch size starts an empty cache. Throws past max_length.
  void reserve(int64_t batch, int64_t new_tokens, const at::TensorOptions& options);

  // Grow (never shrink) to at least `capacity` tokens in one step; the CUDA graph path sizes the
  // cache in a few large buckets so that it re-captures rarely.
  void reserve_capacity(int64_t batch, int64_t capacity, const at::TensorOptions& options);

  // The whole buffers of a layer, filled or not: (batch, n_kv_groups, capacity, head_dim) each.
  const at::Tensor& keys(int64_t layer) const { return keys_[layer]; }
  const at::Tensor& values(int64_t layer) const { return values_[layer]; }

  // Write this step's keys/values for `layer` after the cached ones and return views of
  // everything cached so far plus them. k_new, v_new: (batch, n_kv_groups, new_tokens, head_dim)
  // Returns: (batch, n_kv_groups, length + new_tokens, head_dim) each.
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k_new, const at::Tensor& v_new);

  // Commit the tokens appended by this step (call once, after the last layer).
  void advance(int64_t new_tokens) { length_ += new_tokens; }
  // Forgets the tokens past `length` (at most length()); their slots are overwritten later.
  void truncate(int64_t length) { length_ = length < length_ ? length : length_; }

  // Forget the content; `release` also frees the buffers.
  void reset(bool release);

 private:
  int64_t n_layers_, n_kv_groups_, head_dim_, max_length_;
  int64_t batch_ = 0, length_ = 0, capacity_ = 0;
  std::vector<at::Tensor> keys_;    // per layer: (batch, n_kv_groups, capacity, head_dim)
  std::vector<at::Tensor> values_;  // per layer: (batch, n_kv_groups, capacity, head_dim)
};

}  // namespace qwen3
