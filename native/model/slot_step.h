// Steps over sequence slots (Qwen3Engine::slot_step): many independent sequences, each at its
// own length, that join and leave a running decode batch. A step's decode rows run as one ragged
// decode step, each row at its own position over its own slot's keys (the Reference backend runs
// them row by row through its own pass instead). A short prompt chunk joins that step as one row
// per token, so that a sequence joining costs the running ones little more than a step; longer
// chunks run one at a time as batch-1 prompt passes into their slots (the code path of a prefill
// after cached tokens). Prompts run as rows where the CUDA ragged step runs (elsewhere the prompt
// pass keeps the CPU's logits equal to the reference's); QWEN3_PROMPT_ROWS=1 or 0 forces it.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "model/backend.h"
#include "model/config.h"
#include "model/layers.h"
#include "model/slot_cache.h"
#include "model/slot_speculation.h"
#include "model/step.h"

namespace qwen3 {

class ReferenceForward;
class CudaSlotDecoder;
struct FusedWeights;

// What slot steps use of the loaded model; the engine owns all of it.
struct ModelParts {
  const ModelConfig& config;
  c10::Device device;
  at::ScalarType dtype;
  Backend backend;
  RopeTable& rope;
  ReferenceForward* reference;  // the Reference backend's pass, else null
  const FusedWeights* fast;     // the fast backends' weights, else null
};

class SlotSteps {
 public:
  SlotSteps(const ModelParts& parts, bool use_graphs);
  ~SlotSteps();

  // Checks the request against the slots (each start at most its slot's length), runs it and
  // chooses each row's next token. A step that fails leaves each of its slots at its start.
  // The outputs may come from a step speculated before the request (model/slot_speculation.h).
  SlotStepResult step(const SlotStepRequest& request);
  // Runs the step that the last one suggests will follow, if any (between calls, on the engine thread).
  void speculate();
  void copy(const CopySlotRequest& request);
  // Empties every slot and frees the storage.
  void release();

  int64_t bytes() const { return cache_.bytes(); }
  const SlotSpeculation& speculation() const { return speculation_; }
  // Prompt chunks that ran as decode rows (prompt_as_rows) so far.
  int64_t prompt_chunks_as_rows() const { return prompt_chunks_as_rows_; }
  double capture_seconds() const;
  int captures() const;

 private:
  // The step as asked, without speculation.
  SlotStepResult run_step(const SlotStepRequest& request);
  // Whether a prompt chunk of `count` tokens after `start` joins the decode rows (one per token).
  bool prompt_as_rows(int64_t start, int64_t count) const;
  // Every row of a checked step into its slot, each slot's length then past its new tokens: the
  // last position's logits (1, vocab) of each row.
  std::vector<at::Tensor> run_rows(const SlotStepRequest& request);
  // Each row's next token (and logprobs, logits, lengths) from those logits.
  SlotStepResult results(const SlotStepRequest& request, const std::vector<at::Tensor>& last);
  // One prompt chunk after the slot's first `start` tokens: its last position's logits (1, vocab).
  at::Tensor prompt_row(int64_t slot, int64_t start, const int32_t* ids, int64_t count);
  // One token for each of several slots at their own positions: logits (rows, vocab).
  at::Tensor decode_rows(const std::vector<int64_t>& slots, const std::vector<int64_t>& positions, const std::vector<int32_t>& ids);
  // Where a batch-1 pass writes its keys and values: `slot` from position `start` on.
  StoreKV slot_store(int64_t slot, int64_t start);
  at::Tensor ids_tensor(const int32_t* ids, int64_t count) const;  // (1, count) int64 on the device

  ModelParts m_;
  SlotCache cache_;
  bool kernels_;  // the backend's own ragged kernels (slot_kernels_enabled), read once
  bool prompt_rows_;  // short prompt chunks run as decode rows
  int64_t prompt_chunks_as_rows_ = 0;
  std::unique_ptr<CudaSlotDecoder> cuda_;  // the fused ragged decode step, where it runs
  bool speculate_;                         // SlotSpeculation::wanted, and not a tensor-parallel rank
  SlotSpeculation speculation_;
};

}  // namespace qwen3
