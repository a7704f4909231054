// The eager forward pass, written op for op like the reference PyTorch implementation so that
// its results match the reference to the last bit where the kernels are the same.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/kv_cache.h"
#include "model/layers.h"
#include "model/config.h"
#include "model/weights.h"

namespace qwen3 {

class ReferenceForward {
 public:
  ReferenceForward(const ModelConfig& config, Weights&& weights, c10::Device device, at::ScalarType dtype)
      : config_(config), w_(std::move(weights)), device_(device), dtype_(dtype) {}

  // ids: (batch, seq) int64 at positions start..start+seq, where start is the cache's length
  // (or 0 without a cache, which is then left untouched). Returns logits (batch, seq, vocab).
  // `padding` (left-padded rows) replaces the shared positions and causal mask when given.
  at::Tensor forward(const at::Tensor& ids, KVCache* cache, RopeTable& rope, const Padding* padding = nullptr);
  // The same pass at positions start..start+seq with its keys and values going through `store`
  // (a sequence slot's storage): ids (1, seq). Returns logits (1, seq, vocab).
  at::Tensor forward(const at::Tensor& ids, int64_t start, const StoreKV& store, RopeTable& rope);

  int64_t parameter_bytes() const;

 private:
  // The blocks, final norm and head over x (batch, seq, emb_dim); store: null without a cache.
  at::Tensor run(at::Tensor x, int64_t start, const StoreKV* store, RopeTable& rope, const Padding* padding);
  at::Tensor attention(const BlockWeights& b, int64_t layer, const at::Tensor& x, int64_t start, const StoreKV* store, RopeTable& rope,
                       const Padding* padding);

  ModelConfig config_;
  Weights w_;
  c10::Device device_;
  at::ScalarType dtype_;
};

}  // namespace qwen3
