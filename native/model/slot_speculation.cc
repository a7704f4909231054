#include "model/slot_speculation.h"

#include <cstdlib>
#include <string>

namespace qwen3 {

bool SlotSpeculation::wanted(bool device_is_cuda) {
  const char* setting = std::getenv("QWEN3_SLOT_SPECULATION");
  if (setting != nullptr && *setting != '\0') return std::string(setting) != "0";
  return device_is_cuda;
}

namespace {

// Appends row j of `from` (k alternatives a row) to `out`.
void append_row(SlotStepResult& out, const SlotStepResult& from, size_t j, size_t k) {
  out.next.push_back(from.next[j]);
  out.lengths.push_back(from.lengths[j]);
  if (from.has_logprobs) {
    out.has_logprobs = true;
    out.logprobs.push_back(from.logprobs[j]);
    out.top_ids.insert(out.top_ids.end(), from.top_ids.begin() + j * k, from.top_ids.begin() + (j + 1) * k);
    out.top_logprobs.insert(out.top_logprobs.end(), from.top_logprobs.begin() + j * k, from.top_logprobs.begin() + (j + 1) * k);
  }
  if (!from.logits.empty()) {
    const size_t vocab = from.logits.size() / from.next.size();
    out.logits.insert(out.logits.end(), from.logits.begin() + j * vocab, from.logits.begin() + (j + 1) * vocab);
  }
}

size_t alternatives(const SlotStepRequest& r) { return r.top_logprobs > 0 ? static_cast<size_t>(r.top_logprobs) : 0; }

}  // namespace

void SlotSpeculation::plan(const SlotStepRequest& done, const SlotStepResult& out, int64_t context_length) {
  planned_.reset();
  result_.reset();
  const int64_t rows = done.rows();
  for (int64_t i = 0; i < rows; ++i) {
    const auto at = static_cast<size_t>(i);
    if (done.temperature[at] > 0 || out.lengths[at] + 1 > context_length) return;
  }
  // Every row, prompt chunks included, decodes the token it chose.
  SlotStepRequest next = done;
  next.starts = out.lengths;
  next.ids = out.next;
  next.offsets.resize(static_cast<size_t>(rows) + 1);
  for (int64_t i = 0; i <= rows; ++i) next.offsets[static_cast<size_t>(i)] = i;
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

std::optional<SlotSpeculation::Served> SlotSpeculation::take(const SlotStepRequest& request, SlotCache& cache) {
  if (!planned_ || !result_) {
    planned_.reset();
    return std::nullopt;
  }
  const SlotStepRequest& spec = *planned_;
  std::vector<bool> keep(static_cast<size_t>(spec.rows()), false);
  Served served;
  served.rows.assign(static_cast<size_t>(request.rows()), false);
  if (request.top_logprobs == spec.top_logprobs && request.logits == spec.logits) {
    for (int64_t i = 0; i < request.rows(); ++i) {
      const auto at = static_cast<size_t>(i);
      if (request.offsets[at + 1] - request.offsets[at] != 1 || request.temperature[at] > 0) continue;
      size_t j = 0;
      while (j < spec.slots.size() && spec.slots[j] != request.slots[at]) ++j;
      if (j == spec.slots.size() || keep[j] || spec.starts[j] != request.starts[at] ||
          spec.ids[j] != request.ids[static_cast<size_t>(request.offsets[at])]) {
        continue;
      }
      keep[j] = true;
      served.rows[at] = true;
      append_row(served.outputs, *result_, j, alternatives(spec));
    }
  }
  undo_rows(keep, cache);
  planned_.reset();
  result_.reset();
  if (served.outputs.next.empty()) return std::nullopt;
  ++used_;
  return served;
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

SlotStepRequest select_rows(const SlotStepRequest& r, const std::vector<bool>& keep) {
  SlotStepRequest out;
  out.top_logprobs = r.top_logprobs;
  out.logits = r.logits;
  out.offsets.push_back(0);
  for (size_t i = 0; i < keep.size(); ++i) {
    if (!keep[i]) continue;
    out.slots.push_back(r.slots[i]);
    out.starts.push_back(r.starts[i]);
    out.ids.insert(out.ids.end(), r.ids.begin() + r.offsets[i], r.ids.begin() + r.offsets[i + 1]);
    out.offsets.push_back(static_cast<int64_t>(out.ids.size()));
    out.temperature.push_back(r.temperature[i]);
    out.top_p.push_back(r.top_p[i]);
    out.uniforms.push_back(r.uniforms[i]);
    out.top_k.push_back(r.top_k[i]);
  }
  return out;
}

SlotStepResult interleave_rows(const SlotStepRequest& r, const std::vector<bool>& first, const SlotStepResult& a, const SlotStepResult& b) {
  SlotStepResult out;
  size_t from_a = 0, from_b = 0;
  for (const bool in_a : first) append_row(out, in_a ? a : b, in_a ? from_a++ : from_b++, alternatives(r));
  return out;
}

}  // namespace qwen3
