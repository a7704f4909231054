// The KV cache of sequence slots: independent sequences that join and leave a running batch,
// each at its own length. Per layer one key and one value buffer of (slots, groups, capacity,
// head_dim); both dimensions grow in buckets as steps need them, copying what they hold.
// Separate from the batch API's KVCache, whose rows all share one length.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace qwen3 {

class SlotCache {
 public:
  SlotCache(int64_t n_layers, int64_t n_kv_groups, int64_t head_dim, int64_t max_length);

  int64_t rows() const { return rows_; }          // slots with storage
  int64_t capacity() const { return capacity_; }  // positions each slot can hold
  // Tokens held by `slot` (0 for a slot without storage yet).
  int64_t length(int64_t slot) const { return slot < rows_ ? lengths_[static_cast<size_t>(slot)] : 0; }
  // Forgets the tokens of `slot` from `length` on (length <= this->length(slot)), or commits the
  // tokens a step wrote up to `length` (which must fit the storage).
  void set_length(int64_t slot, int64_t length) { lengths_[static_cast<size_t>(slot)] = length; }

  // Grows to at least `rows` slots and `capacity` positions: rows to a power of two, positions by
  // at least half again and in whole chunks, at most the context length. Never shrinks.
  void reserve(int64_t rows, int64_t capacity, const at::TensorOptions& options);

  // The whole buffers of a layer: (rows, groups, capacity, head_dim) each, contiguous.
  const at::Tensor& keys(int64_t layer) const { return keys_[static_cast<size_t>(layer)]; }
  const at::Tensor& values(int64_t layer) const { return values_[static_cast<size_t>(layer)]; }

  // Writes a step's keys/values of `layer` into `slot` at positions start.. and returns views of
  // the slot's first start + new_tokens positions. k_new, v_new: (1, groups, new_tokens, hd);
  // returns (1, groups, start + new_tokens, hd) each.
  std::pair<at::Tensor, at::Tensor> write(int64_t layer, int64_t slot, int64_t start, const at::Tensor& k_new, const at::Tensor& v_new);

  // Slot `to` gets the first `length` positions of slot `from` (both with storage).
  void copy(int64_t from, int64_t to, int64_t length);

  // Bytes held by the buffers: rows * capacity * bytes_per_token().
  int64_t bytes() const;
  // Keys and values of one token of one slot over every layer: 2 * layers * groups * head_dim * element size.
  int64_t bytes_per_token(int64_t element_size) const { return 2 * n_layers_ * n_kv_groups_ * head_dim_ * element_size; }

  // Empties every slot; `release` also frees the buffers.
  void reset(bool release);

 private:
  int64_t n_layers_, n_kv_groups_, head_dim_, max_length_;
  int64_t rows_ = 0, capacity_ = 0;
  std::vector<int64_t> lengths_;    // (rows,)
  std::vector<at::Tensor> keys_;    // per layer: (rows, groups, capacity, hd)
  std::vector<at::Tensor> values_;  // per layer: (rows, groups, capacity, hd)
};

}  // namespace qwen3
