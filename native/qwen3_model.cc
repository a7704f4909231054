// The Qwen3 forward pass, written op for op like the reference PyTorch implementation so that
// eager results match it to the last bit where the kernels are the same.
#include "qwen3_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/topk.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "device.h"
#include "kv_cache.h"
#include "weights.h"

namespace qwen3 {
namespace {

constexpr double kNormEps = 1e-6;

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  throw std::invalid_argument("Unsupported dtype '" + name + "': expected float32, bfloat16 or float16");
}

// RMSNorm as the reference computes it: statistics and scale in float32, cast back at the end.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& scale) {
  const auto input_dtype = x.scalar_type();
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor normed = xf * at::rsqrt(variance + kNormEps);
  normed = normed * scale;
  return normed.to(input_dtype);
}

// Split-halves RoPE. x: (batch, heads, seq, head_dim); cos, sin: (seq, head_dim) float32.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half);                  // (batch, heads, seq, head_dim / 2)
  const at::Tensor x2 = x.narrow(-1, half, half);               // (batch, heads, seq, head_dim / 2)
  const at::Tensor rotated = at::cat({-x2, x1}, -1);            // (batch, heads, seq, head_dim)
  const at::Tensor rotated_x = x * cos.unsqueeze(0).unsqueeze(0) + rotated * sin.unsqueeze(0).unsqueeze(0);
  return rotated_x.to(x.scalar_type());
}

// cos/sin of position * inverse frequency, computed on the CPU exactly as the reference builds
// its buffers, grown on demand instead of filled for all context_length positions up front.
class RopeTable {
 public:
  RopeTable(int64_t head_dim, double theta, int64_t max_length, c10::Device device)
      : max_length_(max_length), device_(device) {
    const at::Tensor exponents =
        at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kFloat)).narrow(0, 0, head_dim / 2) / head_dim;
    inv_freq_ = at::pow(theta, exponents).reciprocal() * 1.0;  // (head_dim / 2,)
  }

  // cos, sin for positions [start, start + length): (length, head_dim) each, on the device.
  std::pair<at::Tensor, at::Tensor> slice(int64_t start, int64_t length) {
    const int64_t needed = start + length;
    if (!cos_.defined() || cos_.size(0) < needed) {
      const int64_t filled = cos_.defined() ? cos_.size(0) : 0;
      const int64_t rows = std::min(max_length_, (std::max(needed, 2 * filled) + 1023) / 1024 * 1024);
      const at::Tensor positions = at::arange(rows, at::TensorOptions().dtype(at::kFloat));
      at::Tensor angles = positions.unsqueeze(1) * inv_freq_.unsqueeze(0);  // (rows, head_dim / 2)
      angles = at::cat({angles, angles}, 1);                                 // (rows, head_dim)
      cos_ = angles.cos().to(device_);
      sin_ = angles.sin().to(device_);
    }
    return {cos_.narrow(0, start, length), sin_.narrow(0, start, length)};
  }

 private:
  int64_t max_length_;
  c10::Device device_;
  at::Tensor inv_freq_;  // (head_dim / 2,) float32, CPU
  at::Tensor cos_, sin_;  // (rows, head_dim) float32
};

// Next token per row from the last position's logits (batch, vocab): greedy, or sampled by
// inverse CDF with the caller's uniform draws, so the same seed gives the same tokens anywhere.
at::Tensor choose_next(const at::Tensor& last, const SamplingParams& p) {
  if (p.temperature <= 0.0) return at::argmax(last, -1, /*keepdim=*/true).squeeze(-1);
  const int64_t vocab = last.size(-1);
  at::Tensor logits = last.to(at::kFloat) / p.temperature;  // (batch, vocab)
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
  return order.gather(-1, index).squeeze(-1);  // (batch,)
}

}  // namespace

struct Qwen3Engine::Impl {
  ModelConfig config;
  std::string device_name, dtype_name;
  c10::Device device;
  at::ScalarType dtype;
  Weights w;
  KVCache cache;
  RopeTable rope;

  Impl(const LoadRequest& r, c10::Device dev, at::ScalarType dt)
      : config(r.config), device_name(r.device), dtype_name(r.dtype), device(dev), dtype(dt),
        w(load_weights(r.path, r.config, dt, dev)),
        cache(r.config.n_layers, r.config.n_kv_groups, r.config.head_dim, r.config.context_length),
        rope(r.config.head_dim, r.config.rope_base, r.config.context_length, dev) {}

  // Grouped-query attention for one block. x: (batch, seq, emb_dim), positions start..start+seq.
  at::Tensor attention(const BlockWeights& b, int64_t layer, const at::Tensor& x, int64_t start, bool use_cache) {
    const int64_t batch = x.size(0), seq = x.size(1), hd = config.head_dim;
    const int64_t heads = config.n_heads, groups = config.n_kv_groups;
    // Project and split heads.
    at::Tensor q = at::linear(x, b.w_query).view({batch, seq, heads, hd}).transpose(1, 2);  // (batch, heads, seq, hd)
    at::Tensor k = at::linear(x, b.w_key).view({batch, seq, groups, hd}).transpose(1, 2);   // (batch, groups, seq, hd)
    at::Tensor v = at::linear(x, b.w_value).view({batch, seq, groups, hd}).transpose(1, 2); // (batch, groups, seq, hd)
    // Per-head RMSNorm on queries and keys.
    if (config.qk_norm) {
      q = rms_norm(q, b.q_norm);
      k = rms_norm(k, b.k_norm);
    }
    // Rotary position embedding at the tokens' absolute positions.
    const auto [cos, sin] = rope.slice(start, seq);  // (seq, hd) each
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
    // Keys/values of all positions so far: (batch, groups, start + seq, hd).
    at::Tensor keys = k, values = v;
    if (use_cache) std::tie(keys, values) = cache.append(layer, k, v);
    // Each key/value head serves heads / groups query heads.
    keys = keys.repeat_interleave(heads / groups, 1);      // (batch, heads, total, hd)
    values = values.repeat_interleave(heads / groups, 1);  // (batch, heads, total, hd)
    // Causal softmax(QK^T / sqrt(hd)) V; a single new token may see everything, so no mask.
    at::Tensor scores = at::matmul(q, keys.transpose(2, 3));  // (batch, heads, seq, total)
    if (seq > 1) {
      const int64_t total = keys.size(2);
      const auto opts = at::TensorOptions().device(device).dtype(at::kLong);
      const at::Tensor mask = at::arange(total, opts).unsqueeze(0) > (at::arange(seq, opts) + start).unsqueeze(1);  // (seq, total)
      scores = scores.masked_fill(mask, -std::numeric_limits<double>::infinity());
    }
    const at::Tensor weights = at::softmax(scores / std::sqrt(static_cast<double>(hd)), -1);
    const at::Tensor context = at::matmul(weights, values).transpose(1, 2).reshape({batch, seq, heads * hd});  // (batch, seq, heads * hd)
    return at::linear(context, b.out_proj);  // (batch, seq, emb_dim)
  }

  // ids: (batch, seq) int64 on the device. Returns logits (batch, seq, vocab) in the compute dtype.
  at::Tensor forward(const at::Tensor& ids, bool use_cache) {
    const int64_t batch = ids.size(0), seq = ids.size(1);
    const int64_t start = use_cache ? cache.length() : 0;
    if (use_cache) cache.reserve(batch, seq, at::TensorOptions().device(device).dtype(dtype));
    // Token embeddings.
    at::Tensor x = at::embedding(w.tok_emb, ids);  // (batch, seq, emb_dim)
    for (int64_t l = 0; l < config.n_layers; ++l) {
      const BlockWeights& b = w.blocks[static_cast<size_t>(l)];
      // Attention sub-block with a residual connection.
      x = attention(b, l, rms_norm(x, b.norm1), start, use_cache) + x;
      // SwiGLU feed-forward sub-block: fc3(silu(fc1(h)) * fc2(h)), with a residual connection.
      const at::Tensor h = rms_norm(x, b.norm2);
      x = at::linear(at::silu(at::linear(h, b.fc1)) * at::linear(h, b.fc2), b.fc3) + x;
    }
    if (use_cache) cache.advance(seq);
    // Final norm and the vocabulary projection.
    x = rms_norm(x, w.final_norm);
    return at::linear(x.to(dtype), w.out_head);  // (batch, seq, vocab)
  }

  StepResult run(const StepRequest& r, bool use_cache) {
    c10::InferenceMode guard;
    for (const int32_t id : r.ids) {
      if (id < 0 || id >= config.vocab_size) {
        throw std::invalid_argument("Token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                    std::to_string(config.vocab_size) + ")");
      }
    }
    const int64_t start = use_cache ? cache.length() : 0;
    if (start + r.seq > config.context_length) {
      throw std::invalid_argument("Context length exceeded: " + std::to_string(start + r.seq) +
                                  " tokens would pass the model's context_length of " + std::to_string(config.context_length));
    }
    std::vector<int32_t> ids_copy(r.ids);
    const at::Tensor ids = at::from_blob(ids_copy.data(), {r.batch, r.seq}, at::kInt).to(device, at::kLong);  // (batch, seq)
    const at::Tensor logits = forward(ids, use_cache);                        // (batch, seq, vocab)
    const at::Tensor next = choose_next(logits.select(1, r.seq - 1), r.sampling);  // (batch,)

    StepResult out;
    const at::Tensor next_cpu = next.to(at::kCPU, at::kInt).contiguous();
    out.next_ids.assign(next_cpu.data_ptr<int32_t>(), next_cpu.data_ptr<int32_t>() + next_cpu.numel());
    if (r.logits != LogitsMode::None) {
      const at::Tensor chosen = r.logits == LogitsMode::All ? logits : logits.narrow(1, r.seq - 1, 1);
      const at::Tensor host = chosen.to(at::kCPU, at::kFloat).contiguous();
      out.logits.resize(static_cast<size_t>(host.numel()));
      std::memcpy(out.logits.data(), host.data_ptr<float>(), out.logits.size() * sizeof(float));
      out.logits_shape = host.sizes().vec();
    }
    out.cache_length = cache.length();
    return out;
  }
};

std::unique_ptr<Qwen3Engine> Qwen3Engine::load(const LoadRequest& request) {
  c10::InferenceMode guard;
  check_device(request.device);
  const at::ScalarType dtype = parse_dtype(request.dtype);
  auto impl = std::make_unique<Impl>(request, c10::Device(request.device), dtype);
  return std::unique_ptr<Qwen3Engine>(new Qwen3Engine(std::move(impl)));
}

Qwen3Engine::Qwen3Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Qwen3Engine::~Qwen3Engine() = default;

StepResult Qwen3Engine::prefill(const StepRequest& request) { return impl_->run(request, /*use_cache=*/true); }

StepResult Qwen3Engine::decode(const StepRequest& request) {
  if (request.seq != 1) throw std::invalid_argument("decode takes exactly one token per row");
  if (impl_->cache.length() == 0) throw std::invalid_argument("decode needs a prefilled KV cache: call prefill first");
  if (request.batch != impl_->cache.batch()) throw std::invalid_argument("decode batch size differs from the prefilled one");
  return impl_->run(request, /*use_cache=*/true);
}

StepResult Qwen3Engine::forward_uncached(const StepRequest& request) { return impl_->run(request, /*use_cache=*/false); }

void Qwen3Engine::reset_cache(bool release) { impl_->cache.reset(release); }
int64_t Qwen3Engine::cache_length() const { return impl_->cache.length(); }
int64_t Qwen3Engine::cache_capacity() const { return impl_->cache.capacity(); }
const ModelConfig& Qwen3Engine::config() const { return impl_->config; }
const std::string& Qwen3Engine::device() const { return impl_->device_name; }
const std::string& Qwen3Engine::dtype() const { return impl_->dtype_name; }

int64_t Qwen3Engine::parameter_bytes() const {
  const Weights& w = impl_->w;
  int64_t total = w.tok_emb.nbytes() + w.final_norm.nbytes() + w.out_head.nbytes();
  for (const auto& b : w.blocks) {
    for (const at::Tensor* t : {&b.w_query, &b.w_key, &b.w_value, &b.out_proj, &b.q_norm, &b.k_norm, &b.fc1, &b.fc2,
                                &b.fc3, &b.norm1, &b.norm2}) {
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
    }
  }
  return total;
}

}  // namespace qwen3
