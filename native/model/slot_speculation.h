// Running the next slot step before it is asked for. A server's steady state is the same greedy
// decode rows step after step, each fed the token it just chose; between two such steps the
// engine would idle while the answer travels to JavaScript and the next request comes back
// (a third of a step at one row on an H200). So after a step whose rows all decode greedily,
// the engine thread runs the step that would follow it, and when the next request matches it
// (the same rows or some of them, each at its new length with its chosen token), the outcome is
// already there. A request that differs (a sequence joined, or sampled) undoes what the
// speculated step wrote and runs as asked: the outputs are those of the requested step either
// way. On by default on CUDA, where the step is short next to the round trip; QWEN3_SLOT_SPECULATION
// 1 or 0 forces it on or off (the tests force it on on the CPU).
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "model/slot_cache.h"
#include "model/step.h"

namespace qwen3 {

class SlotSpeculation {
 public:
  // Whether a model on `device_is_cuda` speculates (the environment can force either way).
  static bool wanted(bool device_is_cuda);

  // After a real step: plans the step that would follow it, when every row decodes greedily and
  // each has room for one more token under `context_length`.
  void plan(const SlotStepRequest& done, const SlotStepResult& out, int64_t context_length);
  // Runs the planned step, if any, with `step` (the engine's own step). A failure just drops it.
  void run(const std::function<SlotStepResult(const SlotStepRequest&)>& step);
  // The outputs for `request` if the speculated step covers it: every row of `request` is a
  // greedy decode row of the speculated step with the same slot, start and token, and the
  // request asks for the same log-probabilities and logits. Rows of the speculated step that
  // `request` leaves out are undone. Otherwise undoes the whole speculated step and returns
  // nothing. Either way nothing stays planned.
  std::optional<SlotStepResult> take(const SlotStepRequest& request, SlotCache& cache);
  // Undoes and forgets whatever was planned or run (before slots change by other means).
  void discard(SlotCache& cache);

  // Steps speculated so far, and how many of them served a request (whole or in part).
  int64_t run_count() const { return runs_; }
  int64_t used_count() const { return used_; }

 private:
  void undo_rows(const std::vector<bool>& keep, SlotCache& cache);

  std::optional<SlotStepRequest> planned_;
  std::optional<SlotStepResult> result_;  // set once planned_ has run
  int64_t runs_ = 0, used_ = 0;
};

}  // namespace qwen3
