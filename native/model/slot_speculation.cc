#include "model/slot_speculation.h"

#include <cstdlib>
#include <string>

namespace qwen3 {

bool SlotSpeculation::wanted(bool device_is_cuda) {
  const char* setting = std::getenv("QWEN3_SLOT_SPECULATION");
  if (setting != nullptr && *setting != '\0') return std::string(setting) != "0";
  return device_is_cuda;
}

void SlotSpeculation::plan(const SlotStepRequest& done, const SlotStepResult& out, int64_t context_length) {
  planned_.reset();
  result_.reset();
  const int64_t rows = done.rows();
  for (int64_t i = 0; i < rows; ++i) {
    const auto at = static_cast<size_t>(i);
    const bool decode = done.offsets[at + 1] - done.offsets[at] == 1;
    if (!decode || done.temperature[at] > 0 || out.lengths[at] + 1 > context_length) return;
  }
  SlotStepRequest next = done;
  next.starts = out.lengths;
  next.ids = out.next;
  planned_ = std::move(next);
}

void SlotSpeculation::run(const std::function<SlotStepResult(const SlotStepRequest&)>& step) {
  if (!planned_ || result_) return;
  try {
    result_ = step(*planned_);
    ++runs_;
  } catch (...) {
    // The step put its slots back at their starts; there is nothing to reuse.
    planned_.reset();
  }
}

std::optional<SlotStepResult> SlotSpeculation::take(const SlotStepRequest& request, SlotCache& cache) {
  if (!planned_ || !result_) {
    planned_.reset();
    return std::nullopt;
  }
  const SlotStepRequest& spec = *planned_;
  const SlotStepResult& got = *result_;
  std::vector<bool> keep(static_cast<size_t>(spec.rows()), false);
  std::vector<size_t> from;  // request row -> speculated row
  bool covered = request.top_logprobs == spec.top_logprobs && request.logits == spec.logits;
  for (int64_t i = 0; covered && i < request.rows(); ++i) {
    const auto at = static_cast<size_t>(i);
    covered = request.offsets[at + 1] - request.offsets[at] == 1 && request.temperature[at] <= 0;
    size_t j = 0;
    while (covered && j < spec.slots.size() && spec.slots[j] != request.slots[at]) ++j;
    covered = covered && j < spec.slots.size() && !keep[j] && spec.starts[j] == request.starts[at] &&
              spec.ids[j] == request.ids[static_cast<size_t>(request.offsets[at])];
    if (covered) {
      keep[j] = true;
      from.push_back(j);
    }
  }
  if (!covered) {
    keep.assign(keep.size(), false);
    undo_rows(keep, cache);
    planned_.reset();
    result_.reset();
    return std::nullopt;
  }
  undo_rows(keep, cache);
  ++used_;
  SlotStepResult out;
  out.has_logprobs = got.has_logprobs;
  const size_t k = spec.top_logprobs > 0 ? static_cast<size_t>(spec.top_logprobs) : 0;
  const size_t vocab = spec.logits && !spec.slots.empty() ? got.logits.size() / spec.slots.size() : 0;
  for (const size_t j : from) {
    out.next.push_back(got.next[j]);
    out.lengths.push_back(got.lengths[j]);
    if (got.has_logprobs) out.logprobs.push_back(got.logprobs[j]);
    if (got.has_logprobs && k > 0) {
      out.top_ids.insert(out.top_ids.end(), got.top_ids.begin() + j * k, got.top_ids.begin() + (j + 1) * k);
      out.top_logprobs.insert(out.top_logprobs.end(), got.top_logprobs.begin() + j * k, got.top_logprobs.begin() + (j + 1) * k);
    }
    if (vocab > 0) out.logits.insert(out.logits.end(), got.logits.begin() + j * vocab, got.logits.begin() + (j + 1) * vocab);
  }
  planned_.reset();
  result_.reset();
  return out;
}

void SlotSpeculation::discard(SlotCache& cache) {
  if (planned_ && result_) undo_rows(std::vector<bool>(planned_->slots.size(), false), cache);
  planned_.reset();
  result_.reset();
}

// Each speculated row not kept goes back to where the speculated step started it: the token it
// wrote lies past the slot's length again, as if never run.
void SlotSpeculation::undo_rows(const std::vector<bool>& keep, SlotCache& cache) {
  for (size_t j = 0; j < keep.size(); ++j) {
    if (!keep[j]) cache.set_length(planned_->slots[j], planned_->starts[j]);
  }
}

}  // namespace qwen3
