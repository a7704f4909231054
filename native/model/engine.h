// The Qwen3 engine: weights, KV cache and the forward pass. The header is torch-free (pimpl)
// so the N-API files that include it compile quickly.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/step.h"

namespace qwen3 {

class Qwen3Engine {
 public:
  // Reads and checks the checkpoint, then moves the weights to the device. Slow: call off the JS thread.
  // With several request.devices, each holds one rank's share of a tensor-parallel model
  // (parallel/shard.h), every step runs on all of them at once, and the answers are rank 0's.
  // With request.process_group, this process holds one rank's share and the other processes
  // of the group make the same calls (parallel/process_group.h); every rank gets the answers.
  static std::unique_ptr<Qwen3Engine> load(const LoadRequest& request);
  ~Qwen3Engine();

  // Run a prompt of request.seq tokens per row after whatever the KV cache holds (empty: a prefill).
  StepResult prefill(const StepRequest& request);
  // One new token per row after the cache (request.seq == 1).
  StepResult decode(const StepRequest& request);
  // Up to request.steps decode steps (request.seq == 1), each consuming the token the one before
  // chose, in one call; ends early once every row has produced request.stop_id. next_ids holds
  // (steps run, batch) tokens, and the cache holds exactly the tokens those steps consumed. On
  // CUDA, greedy steps of unpadded rows are chained on the device (CudaDecoder::chain).
  StepResult decode_steps(const StepRequest& request);
  // No cache: run the whole sequence from position 0, leaving the cache untouched.
  StepResult forward_uncached(const StepRequest& request);

  // One step over sequence slots: each row continues its own slot from its own start
  // (model/slot_step.h). Independent of the batch steps' KV cache.
  SlotStepResult slot_step(const SlotStepRequest& request);
  // Runs the slot step that the last one suggests will follow, so that a matching next call
  // finds its outputs ready (model/slot_speculation.h). For the engine thread between calls.
  void speculate_slot_step();
  // Slot `to` gets the first `length` tokens of slot `from`.
  void copy_slot(const CopySlotRequest& request);

  // Empties the batch steps' KV cache; `release` also frees it and the slots' storage.
  void reset_cache(bool release);
  int64_t cache_length() const;
  int64_t cache_capacity() const;
  // Bytes allocated for the slots' keys and values.
  int64_t slot_cache_bytes() const;
  // Slot steps speculated so far, and how many of them served a request.
  int64_t speculated_slot_steps() const;
  int64_t used_speculated_slot_steps() const;
  int64_t prompt_chunks_as_rows() const;
  const ModelConfig& config() const;
  const std::string& device() const;
  // The tensor-parallel ranks' devices in rank order (empty on one device, and with one rank per
  // process), and how the ranks talk ("nccl", "threads" or "store"; "" on one device).
  const std::vector<std::string>& devices() const;
  const char* transport() const;
  // This process's rank and the group's size with one rank per process (world 0 otherwise).
  ProcessGroupSpec process_group() const;
  const std::string& dtype() const;
  // Bytes of weights on all devices together.
  int64_t parameter_bytes() const;
  bool compiled() const;
  // Seconds spent fusing weights and capturing CUDA graphs so far.
  double compile_seconds() const;
  int graph_captures() const;

 private:
  struct Impl;
  struct Ranks;
  Qwen3Engine(std::unique_ptr<Impl> impl, std::unique_ptr<Ranks> ranks);
  StepResult profiled(const char* what, const StepRequest& request, StepKind kind);
  // Calls fn on every rank's engine at once (fn(impl, true) for rank 0, whose results are the answer).
  void every_rank(const std::function<void(Impl&, bool)>& fn);
  std::unique_ptr<Impl> impl_;    // rank 0 (the only one on one device)
  std::unique_ptr<Ranks> ranks_;  // the other ranks, their threads and collectives; null on one device
};

}  // namespace qwen3
