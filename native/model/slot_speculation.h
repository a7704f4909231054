// Running the next slot step before it is asked for. A server's steady state is the same greedy
// decode rows step after step, each fed the token it just chose; between two such steps the
// engine would idle while the answer travels to JavaScript and the next request comes back
// (a third of a step at one row on an H200). So after a step whose rows are all greedy, the
// engine thread runs the step that would follow it (each row decoding the token it chose), and
// the next request takes the outputs of its rows that match (same slot, length and token); its
// other rows (a sequence that joined, or one that samples) run as a step of their own, and the
// speculated rows it leaves out are undone. The outputs are those of the requested step either
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

  // After a real step: plans the step that would follow it, when every row is greedy and each
  // has room for one more token under `context_length`.
  void plan(const SlotStepRequest& done, const SlotStepResult& out, int64_t context_length);
  // Runs the planned step, if any, with `step` (the engine's own step). A failure just drops it.
  void run(const std::function<SlotStepResult(const SlotStepRequest&)>& step);
  // The rows of `request` that the speculated step ran: greedy decode rows with the same slot,
  // start and token as one of its rows, when the request asks for the same log-probabilities
  // and logits. Speculated rows that no request row takes are undone. Nothing when no row
  // matches (all undone). Either way nothing stays planned.
  struct Served {
    std::vector<bool> rows;  // (request rows,) served here
    SlotStepResult outputs;  // the served rows' outputs, in request order
  };
  std::optional<Served> take(const SlotStepRequest& request, SlotCache& cache);
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

// The request's rows where `keep[r]`, as a request of their own.
SlotStepRequest select_rows(const SlotStepRequest& request, const std::vector<bool>& keep);
// The outputs of a whole request from those of its rows where `first[r]` (in order) and of the
// others (in order); `request` says how many alternatives and logits each row has.
SlotStepResult interleave_rows(const SlotStepRequest& request, const std::vector<bool>& first, const SlotStepResult& a,
                               const SlotStepResult& b);

}  // namespace qwen3
