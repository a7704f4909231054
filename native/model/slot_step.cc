#include "model/slot_step.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/topk.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "cuda/slot_decode.h"
#include "model/block.h"
#include "model/reference_forward.h"
#include "model/sampling.h"

namespace qwen3 {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

// A prompt chunk runs as decode rows up to this many tokens, and while its rows attend to at most
// this many positions in all: past that the prompt pass's matrix products and attention win.
constexpr int64_t kPromptRowsMaxTokens = 64;
constexpr int64_t kPromptRowsMaxPositions = 16384;
// The most rows a step's decode part takes on for prompt tokens.
constexpr int64_t kMaxDecodeRows = 256;

bool prompt_rows_wanted(bool cuda_steps) {
  const char* setting = std::getenv("QWEN3_PROMPT_ROWS");
  if (setting != nullptr && *setting != '\0') return std::string(setting) != "0";
  return cuda_steps;
}

// Copies a float32 tensor's elements to the host vector `out`.
void to_host(const at::Tensor& t, std::vector<float>& out) {
  const at::Tensor host = t.to(at::kCPU, at::kFloat).contiguous();
  out.resize(static_cast<size_t>(host.numel()));
  std::memcpy(out.data(), host.data_ptr<float>(), out.size() * sizeof(float));
}

}  // namespace

SlotSteps::SlotSteps(const ModelParts& parts, bool use_graphs)
    : m_(parts), cache_(parts.config.n_layers, parts.config.n_kv_groups, parts.config.head_dim, parts.config.context_length),
      kernels_(slot_kernels_enabled()),
      // A rank of a tensor-parallel model does not speculate: every rank would have to, in step.
      speculate_(SlotSpeculation::wanted(parts.device.is_cuda()) && !(parts.fast && parts.fast->ranks)) {
  if (m_.fast && kernels_ && CudaSlotDecoder::supports(m_.backend)) {
    cuda_ = std::make_unique<CudaSlotDecoder>(m_.config, *m_.fast, cache_, m_.device, m_.dtype, use_graphs);
  }
  prompt_rows_ = prompt_rows_wanted(cuda_ != nullptr);
}

bool SlotSteps::prompt_as_rows(int64_t start, int64_t count) const {
  return prompt_rows_ && count <= kPromptRowsMaxTokens && count * (start + count) <= kPromptRowsMaxPositions;
}

SlotSteps::~SlotSteps() = default;

double SlotSteps::capture_seconds() const { return cuda_ ? cuda_->capture_seconds() : 0.0; }
int SlotSteps::captures() const { return cuda_ ? cuda_->captures() : 0; }

at::Tensor SlotSteps::ids_tensor(const int32_t* ids, int64_t count) const {
  std::vector<int32_t> copy(ids, ids + count);
  return at::from_blob(copy.data(), {1, count}, at::kInt).to(m_.device, at::kLong);
}

StoreKV SlotSteps::slot_store(int64_t slot, int64_t start) {
  return [this, slot, start](int64_t layer, const at::Tensor& k, const at::Tensor& v) { return cache_.write(layer, slot, start, k, v); };
}

at::Tensor SlotSteps::prompt_row(int64_t slot, int64_t start, const int32_t* ids, int64_t count) {
  const at::Tensor tokens = ids_tensor(ids, count);  // (1, count)
  if (m_.reference) return m_.reference->forward(tokens, start, slot_store(slot, start), m_.rope).select(1, count - 1);
  StepShape step;
  step.batch = 1;
  step.seq = count;
  step.start = start;
  std::tie(step.cos, step.sin) = m_.rope.slice(start, count);
  step.store = slot_store(slot, start);
  return prompt_logits(m_.backend, m_.config, *m_.fast, tokens, std::move(step), /*all_logits=*/false).select(1, 0);  // (1, vocab)
}

at::Tensor SlotSteps::decode_rows(const std::vector<int64_t>& slots, const std::vector<int64_t>& positions, const std::vector<int32_t>& ids) {
  const auto rows = static_cast<int64_t>(slots.size());
  if (m_.reference) {
    // Row by row through the reference's own pass: exactly a batch-1 decode step of that sequence.
    std::vector<at::Tensor> out;
    for (int64_t r = 0; r < rows; ++r) {
      const at::Tensor token = ids_tensor(&ids[static_cast<size_t>(r)], 1);
      out.push_back(m_.reference->forward(token, positions[static_cast<size_t>(r)], slot_store(slots[static_cast<size_t>(r)], positions[static_cast<size_t>(r)]), m_.rope)
                        .select(1, 0));  // (1, vocab)
    }
    return at::cat(out, 0);
  }
  if (cuda_) return cuda_->step(slots, positions, ids);
  SlotRows s;
  s.slots = slots;
  s.positions = positions;
  std::vector<int64_t> host_slots(slots), host_positions(positions);
  s.slot_index = at::from_blob(host_slots.data(), {rows}, at::kLong).to(m_.device);
  s.position_index = at::from_blob(host_positions.data(), {rows}, at::kLong).to(m_.device);
  const int64_t longest = *std::max_element(positions.begin(), positions.end()) + 1;
  std::tie(s.cos_table, s.sin_table) = m_.rope.slice(0, longest);  // (longest, hd)
  s.cache = &cache_;
  StepShape step;
  step.batch = rows;
  step.seq = 1;
  step.cos = s.cos_table.index_select(0, s.position_index).view({rows, 1, -1});  // (rows, 1, hd)
  step.sin = s.sin_table.index_select(0, s.position_index).view({rows, 1, -1});  // (rows, 1, hd)
  step.slots = &s;
  const std::unique_ptr<AtenOps> ops = make_slot_rows_ops(m_.backend, m_.config, std::move(step), kernels_);
  std::vector<int32_t> host_ids(ids);
  const at::Tensor tokens = at::from_blob(host_ids.data(), {rows}, at::kInt).to(m_.device, at::kLong);
  at::Tensor x = at::embedding(m_.fast->tok_emb, tokens);  // (rows, emb_dim)
  run_blocks(*m_.fast, *ops, x);
  return gather_vocab(*m_.fast, ops->logits(x, m_.fast->final_norm, m_.fast->out_head));  // (rows, vocab)
}

std::vector<at::Tensor> SlotSteps::run_rows(const SlotStepRequest& r) {
  const int64_t rows = r.rows();
  std::vector<at::Tensor> last(static_cast<size_t>(rows));  // (1, vocab) each
  // The decode step's rows: one per decode row and per token of each prompt that joins it.
  std::vector<int64_t> decode_slots, decode_positions;
  std::vector<int32_t> decode_ids;
  std::vector<std::pair<int64_t, size_t>> last_row;  // (request row, its last decode row)
  for (int64_t i = 0; i < rows; ++i) {
    const auto at = static_cast<size_t>(i);
    const int64_t slot = r.slots[at], start = r.starts[at], count = r.offsets[at + 1] - r.offsets[at];
    const int32_t* ids = &r.ids[static_cast<size_t>(r.offsets[at])];
    const auto taken = static_cast<int64_t>(decode_slots.size());
    if (count == 1 || (prompt_as_rows(start, count) && taken + count <= kMaxDecodeRows)) {
      for (int64_t t = 0; t < count; ++t) {  // in position order, as the slot's length follows them
        decode_slots.push_back(slot);
        decode_positions.push_back(start + t);
        decode_ids.push_back(ids[t]);
      }
      last_row.emplace_back(i, decode_slots.size() - 1);
      if (count > 1) ++prompt_chunks_as_rows_;
      continue;
    }
    last[at] = prompt_row(slot, start, ids, count);
    cache_.set_length(slot, start + count);
  }
  if (!decode_slots.empty()) {
    const at::Tensor logits = decode_rows(decode_slots, decode_positions, decode_ids);  // (decode rows, vocab)
    for (size_t j = 0; j < decode_slots.size(); ++j) cache_.set_length(decode_slots[j], decode_positions[j] + 1);
    for (const auto& [i, j] : last_row) last[static_cast<size_t>(i)] = logits.narrow(0, static_cast<int64_t>(j), 1);
  }
  return last;
}

SlotStepResult SlotSteps::step(const SlotStepRequest& r) {
  if (!speculate_) return run_step(r);
  std::optional<SlotSpeculation::Served> served = speculation_.take(r, cache_);
  SlotStepResult out;
  if (!served) {
    out = run_step(r);
  } else if (served->outputs.next.size() == static_cast<size_t>(r.rows())) {
    out = std::move(served->outputs);
  } else {
    // The rest of the request (a sequence that joined, say) as a step of its own. Should it fail,
    // the served rows go back to their starts as well: the whole step fails.
    std::vector<bool> rest(served->rows.size());
    for (size_t i = 0; i < rest.size(); ++i) rest[i] = !served->rows[i];
    try {
      out = interleave_rows(r, served->rows, served->outputs, run_step(select_rows(r, rest)));
    } catch (...) {
      for (size_t i = 0; i < rest.size(); ++i) {
        if (served->rows[i]) cache_.set_length(r.slots[i], r.starts[i]);
      }
      throw;
    }
  }
  speculation_.plan(r, out, m_.config.context_length);
  return out;
}

void SlotSteps::speculate() {
  if (speculate_) speculation_.run([this](const SlotStepRequest& next) { return run_step(next); });
}

SlotStepResult SlotSteps::run_step(const SlotStepRequest& r) {
  c10::InferenceMode guard;
  const c10::DeviceGuard on_device(m_.device);
  const int64_t rows = r.rows();
  // What depends on the slots' state (the binding checked everything else).
  int64_t needed_rows = 0, needed_capacity = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const auto at = static_cast<size_t>(i);
    const int64_t slot = r.slots[at], start = r.starts[at], count = r.offsets[at + 1] - r.offsets[at];
    if (start > cache_.length(slot)) {
      throw std::invalid_argument("Expected integer between 0 and " + str(cache_.length(slot)) + " (the length of slot " + str(slot) +
                                  ") for starts[" + str(i) + "] but received " + str(start));
    }
    if (start + count > m_.config.context_length) {
      throw std::invalid_argument("Context length exceeded: row " + str(i) + " (slot " + str(slot) + ") would hold " + str(start + count) +
                                  " tokens, past the model's context_length of " + str(m_.config.context_length));
    }
    needed_rows = std::max(needed_rows, slot + 1);
    needed_capacity = std::max(needed_capacity, start + count);
  }
  if (cuda_) {
    cuda_->reserve(needed_rows, needed_capacity);
  } else {
    cache_.reserve(needed_rows, needed_capacity, at::TensorOptions().device(m_.device).dtype(m_.dtype));
  }
  // Each slot forgets what lies past its start before anything is written; should the step fail
  // half-way, each stays there (the rows that finished forget their new tokens again).
  const auto back_to_starts = [&] {
    for (int64_t i = 0; i < rows; ++i) cache_.set_length(r.slots[static_cast<size_t>(i)], r.starts[static_cast<size_t>(i)]);
  };
  back_to_starts();
  try {
    return results(r, run_rows(r));
  } catch (...) {
    back_to_starts();
    throw;
  }
}

SlotStepResult SlotSteps::results(const SlotStepRequest& r, const std::vector<at::Tensor>& last) {
  const int64_t rows = r.rows();
  // Each row's choice as choose_next makes it for that row alone with its own settings and draw.
  const at::Tensor stacked = rows == 1 ? last[0] : at::cat(last, 0);  // (rows, vocab), compute dtype
  const at::Tensor greedy = at::argmax(stacked, -1).to(at::kCPU, at::kLong);
  SlotStepResult out;
  out.next.resize(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    const auto at = static_cast<size_t>(i);
    int64_t chosen = greedy.data_ptr<int64_t>()[i];
    if (r.temperature[at] > 0) {
      SamplingParams p;
      p.temperature = r.temperature[at];
      p.top_k = r.top_k[at];
      p.top_p = r.top_p[at];
      p.uniforms = {r.uniforms[at]};
      chosen = choose_next(stacked.narrow(0, i, 1), p).to(at::kCPU).item<int64_t>();
    }
    out.next[at] = static_cast<int32_t>(chosen);
    out.lengths.push_back(static_cast<int32_t>(cache_.length(r.slots[at])));
  }
  if (r.top_logprobs >= 0) {
    out.has_logprobs = true;
    const at::Tensor logprobs = at::log_softmax(stacked.to(at::kFloat), -1);  // (rows, vocab)
    std::vector<int64_t> next64(out.next.begin(), out.next.end());
    const at::Tensor index = at::from_blob(next64.data(), {rows, 1}, at::kLong).to(logprobs.device());
    to_host(logprobs.gather(1, index), out.logprobs);
    if (r.top_logprobs > 0) {
      const auto [values, ids] = at::topk(logprobs, r.top_logprobs, -1);  // (rows, k) each, best first
      to_host(values, out.top_logprobs);
      const at::Tensor host_ids = ids.to(at::kCPU, at::kInt).contiguous();
      out.top_ids.assign(host_ids.data_ptr<int32_t>(), host_ids.data_ptr<int32_t>() + host_ids.numel());
    }
  }
  if (r.logits) to_host(stacked, out.logits);
  return out;
}

void SlotSteps::copy(const CopySlotRequest& r) {
  speculation_.discard(cache_);
  c10::InferenceMode guard;
  const c10::DeviceGuard on_device(m_.device);
  if (r.length > cache_.length(r.from)) {
    throw std::invalid_argument("Expected integer between 0 and " + str(cache_.length(r.from)) + " (the length of slot " + str(r.from) +
                                ") for length but received " + str(r.length));
  }
  const int64_t rows = std::max<int64_t>(r.from, r.to) + 1;
  if (cuda_) {
    cuda_->reserve(rows, 0);
  } else {
    cache_.reserve(rows, 0, at::TensorOptions().device(m_.device).dtype(m_.dtype));
  }
  cache_.copy(r.from, r.to, r.length);
}

void SlotSteps::release() {
  speculation_.discard(cache_);
  if (cuda_) cuda_->release();
  cache_.reset(/*release=*/true);
}

}  // namespace qwen3
