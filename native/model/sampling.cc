#include "model/sampling.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/where.h>

#include <limits>
#include <vector>

namespace qwen3 {

at::Tensor choose_next(const at::Tensor& last, const SamplingParams& p) {
  const at::Tensor greedy = at::argmax(last, -1, /*keepdim=*/true).squeeze(-1);  // (batch,)
  if (p.temperature <= 0.0) return greedy;
  const int64_t vocab = last.size(-1);
  at::Tensor logits = last.to(at::kFloat) / p.temperature;  // (batch, vocab)
  // As the temperature goes to 0 the distribution becomes the argmax. Where it is so small that
  // a row's largest scaled logit is no longer finite, softmax would give NaN: take the limit.
  const at::Tensor overflowed = std::get<0>(logits.max(-1)).isfinite().logical_not();  // (batch,) bool
  if (p.top_k > 0 && p.top_k < vocab) {
    const at::Tensor kth = std::get<0>(at::topk(logits, p.top_k, -1)).narrow(-1, p.top_k - 1, 1);  // (batch, 1)
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<double>::infinity());
  }
  const at::Tensor probs = at::softmax(logits, -1);
  auto [sorted, order] = at::sort(probs, -1, /*descending=*/true);  // (batch, vocab) each
  at::Tensor cdf = sorted.cumsum(-1);
  if (p.top_p < 1.0) {
    // Keep the smallest prefix whose mass reaches top_p; the first token always survives.
    sorted = sorted.masked_fill((cdf - sorted) >= p.top_p, 0.0);
    cdf = sorted.cumsum(-1);
  }
  std::vector<float> draws(p.uniforms.begin(), p.uniforms.end());
  const at::Tensor u = at::from_blob(draws.data(), {static_cast<int64_t>(draws.size()), 1}, at::kFloat)
                           .to(last.device()) * cdf.narrow(-1, vocab - 1, 1);  // (batch, 1)
  const at::Tensor index = at::searchsorted(cdf, u, /*out_int32=*/false, /*right=*/true).clamp_max(vocab - 1);
  const at::Tensor sampled = order.gather(-1, index).squeeze(-1);  // (batch,)
  return at::where(overflowed, greedy, sampled);
}

}  // namespace qwen3
