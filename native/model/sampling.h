// How the next token is chosen from a step's last logits: greedy, or sampled with temperature,
// top-k and top-p from the caller's uniform draws.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/step.h"

namespace qwen3 {

// Next token per row from the last position's logits (batch, vocab): greedy, or sampled by
// inverse CDF with the caller's uniform draws, so the same seed gives the same tokens anywhere.
// A temperature so small that the scaled logits overflow samples from the limit, the greedy choice.
at::Tensor choose_next(const at::Tensor& last, const SamplingParams& p);  // (batch,) int64

}  // namespace qwen3
