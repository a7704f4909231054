#include "model/kv_cache.h"

#include <ATen/ops/zeros.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace qwen3 {
namespace {
// Capacity grows by at least half its size and in whole chunks: few regrowths over a long
// generation, and never more than ~1.5x the tokens actually held.
constexpr int64_t kChunk = 64;
}  // namespace

KVCache::KVCache(int64_t n_layers, int64_t n_kv_groups, int64_t head_dim, int64_t max_length)
    : n_layers_(n_layers), n_kv_groups_(n_kv_groups), head_dim_(head_dim), max_length_(max_length) {}

void KVCache::reserve(int64_t batch, int64_t new_tokens, const at::TensorOptions& options) {
  if (batch != batch_) {
    reset(/*release=*/true);
    batch_ = batch;
  }
  const int64_t needed = length_ + new_tokens;
  if (needed > max_length_) {
    throw std::invalid_argument("Context length exceeded: the KV cache holds " + std::to_string(length_) + " tokens and " +
                                std::to_string(new_tokens) + " more would pass the model's context_length of " +
                                std::to_string(max_length_));
  }
  if (needed <= capacity_) return;
  const int64_t grown = std::max(needed, capacity_ + capacity_ / 2);
  reserve_capacity(batch, std::min(max_length_, (grown + kChunk - 1) / kChunk * kChunk), options);
}

void KVCache::reserve_capacity(int64_t batch, int64_t capacity, const at::TensorOptions& options) {
  if (batch != batch_) {
    reset(/*release=*/true);
    batch_ = batch;
  }
  const int64_t grown = std::min(capacity, max_length_);
  if (grown <= capacity_) return;
  keys_.resize(n_layers_);
  values_.resize(n_layers_);
  for (int64_t l = 0; l < n_layers_; ++l) {
    for (auto* buffers : {&keys_, &values_}) {
      // Zeroed, not empty: the CUDA graph path attends over the whole buffer with a mask, and a
      // NaN bit pattern left in an unfilled slot would survive the mask (0 * NaN).
      at::Tensor bigger = at::zeros({batch_, n_kv_groups_, grown, head_dim_}, options);
      at::Tensor& old = (*buffers)[l];
      if (length_ > 0) bigger.narrow(2, 0, length_).copy_(old.narrow(2, 0, length_));
      old = std::move(bigger);  // the old buffer is freed here, one layer at a time
    }
  }
  capacity_ = grown;
}

std::pair<at::Tensor, at::Tensor> KVCache::append(int64_t layer, const at::Tensor& k_new, const at::Tensor& v_new) {
  const int64_t n = k_new.size(2);
  at::Tensor& k = keys_[layer];
  at::Tensor& v = values_[layer];
  k.narrow(2, length_, n).copy_(k_new);
  v.narrow(2, length_, n).copy_(v_new);
  return {k.narrow(2, 0, length_ + n), v.narrow(2, 0, length_ + n)};
}

void KVCache::reset(bool release) {
  length_ = 0;
  if (release) {
    keys_.clear();
    values_.clear();
    capacity_ = 0;
    batch_ = 0;
  }
}

}  // namespace qwen3
