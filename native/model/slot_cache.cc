#include "model/slot_cache.h"

#include <ATen/ops/zeros.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace qwen3 {
namespace {
// As KVCache: positions grow by at least half and in whole chunks.
constexpr int64_t kChunk = 64;
}  // namespace

SlotCache::SlotCache(int64_t n_layers, int64_t n_kv_groups, int64_t head_dim, int64_t max_length)
    : n_layers_(n_layers), n_kv_groups_(n_kv_groups), head_dim_(head_dim), max_length_(max_length) {}

void SlotCache::reserve(int64_t rows, int64_t capacity, const at::TensorOptions& options) {
  if (capacity > max_length_) {
    throw std::invalid_argument("Context length exceeded: a slot would hold " + std::to_string(capacity) +
                                " tokens, past the model's context_length of " + std::to_string(max_length_));
  }
  int64_t new_rows = rows_, new_capacity = capacity_;
  if (rows > rows_) {
    new_rows = 1;
    while (new_rows < rows) new_rows *= 2;
  }
  if (capacity > capacity_) {
    const int64_t grown = std::max(capacity, capacity_ + capacity_ / 2);
    new_capacity = std::min(max_length_, (grown + kChunk - 1) / kChunk * kChunk);
  }
  if (new_rows == rows_ && new_capacity == capacity_) return;
  keys_.resize(static_cast<size_t>(n_layers_));
  values_.resize(static_cast<size_t>(n_layers_));
  for (int64_t l = 0; l < n_layers_; ++l) {
    for (auto* buffers : {&keys_, &values_}) {
      // Zeroed, not empty: batched attention reads past a slot's length under a mask, and a NaN
      // bit pattern there would survive the mask (0 * NaN).
      at::Tensor bigger = at::zeros({new_rows, n_kv_groups_, new_capacity, head_dim_}, options);
      at::Tensor& old = (*buffers)[static_cast<size_t>(l)];
      if (rows_ > 0) bigger.narrow(0, 0, rows_).narrow(2, 0, capacity_).copy_(old);
      old = std::move(bigger);  // the old buffer is freed here, one layer at a time
    }
  }
  lengths_.resize(static_cast<size_t>(new_rows), 0);
  rows_ = new_rows;
  capacity_ = new_capacity;
}

std::pair<at::Tensor, at::Tensor> SlotCache::write(int64_t layer, int64_t slot, int64_t start, const at::Tensor& k_new, const at::Tensor& v_new) {
  const int64_t n = k_new.size(2);
  const at::Tensor k = keys_[static_cast<size_t>(layer)].narrow(0, slot, 1);    // (1, groups, capacity, hd)
  const at::Tensor v = values_[static_cast<size_t>(layer)].narrow(0, slot, 1);  // (1, groups, capacity, hd)
  k.narrow(2, start, n).copy_(k_new);
  v.narrow(2, start, n).copy_(v_new);
  return {k.narrow(2, 0, start + n), v.narrow(2, 0, start + n)};
}

void SlotCache::copy(int64_t from, int64_t to, int64_t length) {
  if (length > 0) {
    for (int64_t l = 0; l < n_layers_; ++l) {
      for (auto* buffers : {&keys_, &values_}) {
        const at::Tensor& b = (*buffers)[static_cast<size_t>(l)];
        b.narrow(0, to, 1).narrow(2, 0, length).copy_(b.narrow(0, from, 1).narrow(2, 0, length));
      }
    }
  }
  lengths_[static_cast<size_t>(to)] = length;
}

int64_t SlotCache::bytes() const {
  int64_t total = 0;
  for (const auto* buffers : {&keys_, &values_}) {
    for (const at::Tensor& t : *buffers) total += static_cast<int64_t>(t.nbytes());
  }
  return total;
}

void SlotCache::reset(bool release) {
  std::fill(lengths_.begin(), lengths_.end(), 0);
  if (release) {
    keys_.clear();
    values_.clear();
    lengths_.clear();
    rows_ = capacity_ = 0;
  }
}

}  // namespace qwen3
