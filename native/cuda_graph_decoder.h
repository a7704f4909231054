// Decode steps replayed from a CUDA graph: the whole one-token forward pass (embedding, 28
// blocks, head, argmax) is captured once per (batch, KV capacity) and replayed per token, so the
// host launches one graph instead of ~1,500 kernels. Inputs go through fixed buffers; attention
// reads the whole KV buffer under a mask built on the device from the position buffer.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <utility>
#include <vector>

#include "fast_forward.h"
#include "kv_cache.h"
#include "layers.h"
#include "model_config.h"

namespace qwen3 {

class CudaGraphDecoder {
 public:
  // True when this build has CUDA and the device is a CUDA device.
  static bool supported(c10::Device device);

  CudaGraphDecoder(const ModelConfig& config, const FastForward& forward, KVCache& cache, c10::Device device, at::ScalarType dtype);
  ~CudaGraphDecoder();

  // One token per row after the cache's content; the cache advances by one.
  // Returns (logits (batch, vocab) in the compute dtype, greedy next ids (batch,) int64), both
  // static buffers on the device that the next step overwrites.
  std::pair<at::Tensor, at::Tensor> step(const std::vector<int32_t>& ids, int64_t batch);

  double capture_seconds() const { return capture_seconds_; }
  int captures() const { return captures_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  double capture_seconds_ = 0;
  int captures_ = 0;
};

}  // namespace qwen3
