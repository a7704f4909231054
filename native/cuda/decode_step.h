// The one-token decode step on CUDA. Compiled, the whole step (the blocks, the head, the argmax
// and the hand-over to the next step) is captured once per (batch, KV capacity) as a CUDA graph
// and replayed per token, so the host launches one graph instead of 141 kernels (batch 1);
// eager, the same kernels are launched one by one. Inputs go through fixed buffers and the
// kernels read the position from the device.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace at::cuda {
struct CUDAGraph;
}

namespace qwen3 {

// Runs `step` once on the current device's capture stream (lazy cuBLAS and attention set-up must
// not happen during a capture), then records it into `graph`; one capture per device at a time,
// in thread-local capture mode so that other threads' CUDA calls do not break it. CUDA builds only.
void capture_graph(at::cuda::CUDAGraph& graph, const std::function<void()>& step);

class CudaDecoder {
 public:
  // True when this build has CUDA and the device is a CUDA device.
  static bool supported(c10::Device device);
  // True when this build has the fused kernels (cuda/kernels.cu) and they fit the model
  // (head_dim a power of two from 32 to 256, at most 16 query heads per key/value group).
  static bool fused_kernels(const ModelConfig& config);

  CudaDecoder(const ModelConfig& config, const FusedWeights& weights, KVCache& cache, c10::Device device, at::ScalarType dtype,
              bool use_graphs);
  ~CudaDecoder();

  // One token per row after the cache's content; the cache advances by one.
  // Returns (logits (batch, vocab) in the compute dtype, greedy next ids (batch,) int64), both
  // fixed buffers on the device that the next step overwrites.
  std::pair<at::Tensor, at::Tensor> step(const std::vector<int32_t>& ids, int64_t batch);

  // Greedy steps chained on the device: each step's argmax is the next one's input, and the
  // tokens are read back once at the end. Returns them as (steps, batch) row-major; the cache
  // advances by `steps` (1..kMaxChain). Needs can_chain().
  static constexpr int64_t kMaxChain = 64;
  static bool can_chain(const ModelConfig& config);
  std::vector<int32_t> chain(const std::vector<int32_t>& ids, int64_t batch, int64_t steps);

  double capture_seconds() const { return capture_seconds_; }
  int captures() const { return captures_; }

 private:
  struct State;
  // Makes room in the cache for `steps` more tokens, (re)captures or (re)allocates the fixed
  // buffers as needed, and sets the inputs of the first step.
  void prepare_steps(int64_t batch, int64_t steps, std::vector<int64_t>& ids64);
  std::unique_ptr<State> state_;
  bool use_graphs_;
  double capture_seconds_ = 0;
  int captures_ = 0;
};

}  // namespace qwen3
