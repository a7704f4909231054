// The ragged decode step over sequence slots on CUDA: one token for each of several slots, each
// at its own position, through the decode step's fused kernels (cuda/decode_ops.h) with a row ->
// slot map and per-row positions. Compiled, the step is captured once per batch-size bucket (1,
// 2, 4, 8, ...) as a CUDA graph and replayed; the rows of a bucket past the step's are padding,
// with no position (they touch no slot). Graphs are captured again when the slot cache grows.
// QWEN3_SLOT_KERNELS=0 turns this off: the ATen ragged step (model/aten_ops.h) runs instead.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "model/backend.h"
#include "model/block.h"
#include "model/config.h"
#include "model/slot_cache.h"

namespace qwen3 {

class CudaSlotDecoder {
 public:
  // True where ragged decode steps of `backend` can run here: the Cuda backend.
  static bool supports(Backend backend);

  CudaSlotDecoder(const ModelConfig& config, const FusedWeights& weights, SlotCache& cache, c10::Device device, at::ScalarType dtype,
                  bool use_graphs);
  ~CudaSlotDecoder();

  // Grows the slot cache to hold `rows` slots of `capacity` positions; compiled, in power-of-two
  // buckets of at least 256 positions, so that graphs are captured again rarely.
  void reserve(int64_t rows, int64_t capacity);
  // One token per row (ids), of slot slots[r] at position positions[r] (its length before the
  // step): writes the row's key and value there. Rows of one slot (a prompt's tokens) each
  // attend to the positions before their own, those of this step included. Returns the logits (rows, vocab) in the compute
  // dtype, a view of a fixed buffer that the next step overwrites.
  at::Tensor step(const std::vector<int64_t>& slots, const std::vector<int64_t>& positions, const std::vector<int32_t>& ids);
  // Drops the graphs and their buffers (before the slot cache is freed).
  void release();

  double capture_seconds() const { return capture_seconds_; }
  int captures() const { return captures_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  bool use_graphs_;
  double capture_seconds_ = 0;
  int captures_ = 0;
};

}  // namespace qwen3
