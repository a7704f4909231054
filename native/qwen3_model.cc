// The engine behind a loaded model: validates each step, keeps the KV cache and runs the
// reference-order forward pass or the fast one (compile, and eager on CUDA; see Impl).
#include "qwen3_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <cstring>
#include <stdexcept>

#include "cpu_kernels.h"
#include "cuda_graph_decoder.h"
#include "device.h"
#include "fast_forward.h"
#include "kv_cache.h"
#include "layers.h"
#include "reference_forward.h"
#include "weights.h"

namespace qwen3 {
namespace {

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  throw std::invalid_argument("Unsupported dtype '" + name + "': expected float32, bfloat16 or float16");
}

}  // namespace

struct Qwen3Engine::Impl {
  ModelConfig config;
  std::string device_name, dtype_name;
  c10::Device device;
  at::ScalarType dtype;
  KVCache cache;
  RopeTable rope;
  // Exactly one of these runs the model: the reference-order eager pass, or the fast one (fused
  // weights, SDPA, fused CUDA kernels) with, on CUDA, its own decode step: replayed from a CUDA
  // graph when compiled, launched kernel by kernel when eager. On CUDA the fast pass is the
  // eager one too, where the fused kernels are built: the reference order costs ~60 kernel
  // launches a block, which bounds a decode step at ~45 tokens/s.
  std::unique_ptr<ReferenceForward> reference;
  std::unique_ptr<FastForward> fast;
  std::unique_ptr<CudaGraphDecoder> graph;
  bool compiled = false;
  double compile_seconds = 0;
  std::vector<int64_t> row_pad;  // left padding of the rows the cache holds (empty: none)

  Impl(const LoadRequest& r, c10::Device dev, at::ScalarType dt)
      : config(r.config), device_name(r.device), dtype_name(r.dtype), device(dev), dtype(dt),
        cache(r.config.n_layers, r.config.n_kv_groups, r.config.head_dim, r.config.context_length),
        rope(r.config.head_dim, r.config.rope_base, r.config.context_length, dev), compiled(r.compile) {
    Weights w = load_weights(r.path, r.config, dt, dev);
    const bool fused_cuda = CudaGraphDecoder::supported(dev) && CudaGraphDecoder::fused_kernels(config);
    if (!r.compile && !fused_cuda) {
      reference = std::make_unique<ReferenceForward>(config, std::move(w), dev, dt);
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    fast = std::make_unique<FastForward>(config, std::move(w));
    if (CudaGraphDecoder::supported(dev)) graph = std::make_unique<CudaGraphDecoder>(config, *fast, cache, dev, dt, /*use_graphs=*/r.compile);
    if (r.compile) compile_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  // Fast pass for a prefill or an uncached forward. ids: (batch, seq). Returns logits for
  // every position (all_logits) or only the last: (batch, seq or 1, vocab).
  at::Tensor fast_forward(const at::Tensor& ids, bool use_cache, bool all_logits, const Padding* padding) {
    const int64_t batch = ids.size(0), seq = ids.size(1);
    const int64_t start = use_cache ? cache.length() : 0;
    if (use_cache) cache.reserve(batch, seq, at::TensorOptions().device(device).dtype(dtype));
    // A block of new tokens attends causally to itself and to everything cached before it.
    at::Tensor visible;  // (seq, start + seq) bool, true where attention is allowed; only for start > 0
    if (padding) {
      visible = padding->visible;  // (batch, 1, seq, start + seq)
    } else if (seq > 1 && start > 0 && !device.is_cpu()) {  // the CPU's blocked attention builds its own
      visible = future_keys(seq, start, start + seq, device).logical_not();
    }
    auto attend = [&](int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      at::Tensor keys = k, values = v;
      if (use_cache) std::tie(keys, values) = cache.append(layer, k, v);
      // One new token on the CPU: a plain loop, where SDPA's blocked kernel spends ~0.1 ms a
      // layer setting up for a single query row.
      if (seq == 1 && !padding && q.is_cpu() && keys.stride(3) == 1 && keys.stride(2) == config.head_dim && q.is_contiguous()) {
        at::Tensor out = at::empty_like(q);  // (batch, heads, 1, hd)
        cpu::decode_attention(kernel_dtype(q.scalar_type()), q.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), batch,
                              config.n_heads, config.n_kv_groups, keys.size(2), config.head_dim, keys.stride(0), keys.stride(1),
                              static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.head_dim))));
        return out;
      }
      const bool causal = seq > 1 && start == 0 && !padding;
      // Repeating the key/value heads keeps a many-token step eligible for the flash kernels,
      // which not every libtorch offers together with enable_gqa; for one token it costs more
      // than it saves.
      const int64_t repeat = config.n_heads / config.n_kv_groups;
      if (seq > 1 && repeat > 1) {
        keys = keys.repeat_interleave(repeat, 1);
        values = values.repeat_interleave(repeat, 1);
      }
      if (q.is_cpu() && seq > 1 && !padding) return causal_attention_blocks(q, keys, values, start);
      return at::scaled_dot_product_attention(q, keys, values, visible.defined() ? std::optional<at::Tensor>(visible) : std::nullopt,
                                              0.0, causal, std::nullopt, /*enable_gqa=*/seq == 1 && repeat > 1);
    };
    const auto [cos, sin] = padding ? std::make_pair(padding->cos, padding->sin) : rope.slice(start, seq);
    const at::Tensor h = fast->hidden(ids, cos, sin, attend);  // (batch, seq, emb_dim)
    if (use_cache) cache.advance(seq);
    return fast->logits(all_logits ? h : h.narrow(1, seq - 1, 1));
  }

  enum class Kind { Prefill, Decode, Uncached };

  // A step that would hold `total` tokens must fit the context; one after cached tokens
  // (cache_batch > 0) must have the cache's batch size.
  void check_fits(int64_t total, int64_t cache_batch) const {
    if (total > config.context_length) {
      throw std::invalid_argument("Context length exceeded: " + std::to_string(total) + " tokens would pass the model's context_length of " +
                                  std::to_string(config.context_length));
    }
    if (cache_batch > 0 && cache.length() > 0 && cache_batch != cache.batch()) {
      throw std::invalid_argument("The KV cache holds " + std::to_string(cache.batch()) + " row(s), not " + std::to_string(cache_batch) +
                                  ": reset it before a step with another batch size");
    }
  }

  StepResult run(const StepRequest& r, Kind kind) {
    c10::InferenceMode guard;
    const c10::DeviceGuard on_device(device);  // the fused kernels launch on the current device's stream
    // Token ids and shapes were checked where the request was copied from JS (model_wrap.cc).
    const bool use_cache = kind != Kind::Uncached;
    const int64_t start = use_cache ? cache.length() : 0;
    check_fits(start + r.seq, use_cache ? r.batch : 0);
    // Left padding: set by the step that starts a cache (kept for its decode steps) or given to
    // an uncached step; all-zero padding is no padding, which keeps the fast paths.
    std::vector<int64_t> pad = r.pad;
    const bool padded_request = std::any_of(pad.begin(), pad.end(), [](int64_t p) { return p > 0; });
    if (padded_request) {
      if (static_cast<int64_t>(pad.size()) != r.batch) throw std::invalid_argument("pad needs one count per row");
      for (const int64_t p : pad) {
        if (p < 0 || p >= r.seq) throw std::invalid_argument("Each row's padding must leave at least one real token");
      }
      if (kind == Kind::Decode || (kind == Kind::Prefill && start > 0)) {
        throw std::invalid_argument("Padding is set by the step that starts the KV cache, not by later steps");
      }
    }
    if (kind == Kind::Prefill && start == 0) row_pad = padded_request ? pad : std::vector<int64_t>();
    if (kind != Kind::Uncached) pad = row_pad;
    std::optional<Padding> padding;
    if (kind == Kind::Uncached ? padded_request : !row_pad.empty()) padding = make_padding(pad, start, r.seq, rope, device);

    at::Tensor logits, next;  // (batch, seq or 1, vocab), (batch,)
    if (graph && kind == Kind::Decode && !padding) {
      at::Tensor greedy;
      std::tie(logits, greedy) = graph->step(r.ids, r.batch);
      next = r.sampling.temperature > 0 ? choose_next(logits, r.sampling) : greedy;
      logits = logits.unsqueeze(1);
    } else {
      std::vector<int32_t> ids_copy(r.ids);
      const at::Tensor ids = at::from_blob(ids_copy.data(), {r.batch, r.seq}, at::kInt).to(device, at::kLong);  // (batch, seq)
      const Padding* pads = padding ? &*padding : nullptr;
      logits = reference ? reference->forward(ids, use_cache ? &cache : nullptr, rope, pads)
                         : fast_forward(ids, use_cache, r.logits == LogitsMode::All, pads);
      next = choose_next(logits.select(1, logits.size(1) - 1), r.sampling);
    }

    StepResult out;
    const at::Tensor next_cpu = next.to(at::kCPU, at::kInt).contiguous();
    out.next_ids.assign(next_cpu.data_ptr<int32_t>(), next_cpu.data_ptr<int32_t>() + next_cpu.numel());
    if (r.logits != LogitsMode::None) {
      const at::Tensor chosen = r.logits == LogitsMode::All ? logits : logits.narrow(1, logits.size(1) - 1, 1);
      const at::Tensor host = chosen.to(at::kCPU, at::kFloat).contiguous();
      out.logits.resize(static_cast<size_t>(host.numel()));
      std::memcpy(out.logits.data(), host.data_ptr<float>(), out.logits.size() * sizeof(float));
      out.logits_shape = host.sizes().vec();
    }
    out.cache_length = cache.length();
    return out;
  }

  // Decode steps in one call (see Qwen3Engine::decode_steps).
  StepResult run_steps(const StepRequest& r) {
    c10::InferenceMode guard;
    const int64_t start = cache.length(), batch = r.batch;
    check_fits(start + r.steps, batch);
    const bool chained = graph && CudaGraphDecoder::can_chain(config) && row_pad.empty() && r.sampling.temperature <= 0;
    StepResult out;
    std::vector<bool> stopped(static_cast<size_t>(batch), false);
    int64_t stopped_rows = 0, done = 0;
    StepRequest one = r;  // a single step's request: this step's ids and draws
    one.logits = LogitsMode::None;
    one.steps = 1;
    std::vector<int32_t>& ids = one.ids;
    while (done < r.steps) {
      std::vector<int32_t> got;  // (n, batch)
      if (chained) {
        got = graph->chain(ids, batch, std::min(r.steps - done, CudaGraphDecoder::kMaxChain));
      } else {
        if (!r.sampling.uniforms.empty()) {
          const auto first = r.sampling.uniforms.begin() + done * batch;
          one.sampling.uniforms.assign(first, first + batch);
        }
        got = run(one, Kind::Decode).next_ids;
      }
      const int64_t n = static_cast<int64_t>(got.size()) / batch;
      for (int64_t i = 0; i < n && stopped_rows < batch; ++i) {
        for (int64_t row = 0; row < batch; ++row) {
          const int32_t token = got[static_cast<size_t>(i * batch + row)];
          out.next_ids.push_back(token);
          if (token == r.stop_id && !stopped[static_cast<size_t>(row)]) {
            stopped[static_cast<size_t>(row)] = true;
            ++stopped_rows;
          }
        }
        ++done;
      }
      if (stopped_rows == batch) break;
      ids.assign(got.end() - batch, got.end());
    }
    // A chain may have run past the step where the last row stopped: the cache keeps only the
    // tokens that the returned steps consumed.
    cache.truncate(start + done);
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

// Runs one step, bracketed for an external profiler when QWEN3_PROFILE asks for it (device.h).
StepResult Qwen3Engine::profiled(const char* what, const StepRequest& request, int kind) {
  const auto k = static_cast<Impl::Kind>(kind);
  if (!profile_wanted(what)) return impl_->run(request, k);
  profiler_range(impl_->device_name, true);
  StepResult out = impl_->run(request, k);
  profiler_range(impl_->device_name, false);
  return out;
}

StepResult Qwen3Engine::prefill(const StepRequest& request) { return profiled("prefill", request, static_cast<int>(Impl::Kind::Prefill)); }

StepResult Qwen3Engine::decode(const StepRequest& request) {
  if (request.seq != 1) throw std::invalid_argument("decode takes exactly one token per row");
  if (impl_->cache.length() == 0) throw std::invalid_argument("decode needs a prefilled KV cache: call prefill first");
  return profiled("decode", request, static_cast<int>(Impl::Kind::Decode));
}

StepResult Qwen3Engine::decode_steps(const StepRequest& request) {
  if (request.seq != 1) throw std::invalid_argument("decode_steps takes exactly one token per row");
  if (impl_->cache.length() == 0) throw std::invalid_argument("decode_steps needs a prefilled KV cache: call prefill first");
  if (request.logits != LogitsMode::None) throw std::invalid_argument("decode_steps returns no logits: use decode for them");
  return impl_->run_steps(request);
}

StepResult Qwen3Engine::forward_uncached(const StepRequest& request) { return impl_->run(request, Impl::Kind::Uncached); }

void Qwen3Engine::reset_cache(bool release) {
  impl_->cache.reset(release);
  impl_->row_pad.clear();
}
int64_t Qwen3Engine::cache_length() const { return impl_->cache.length(); }
int64_t Qwen3Engine::cache_capacity() const { return impl_->cache.capacity(); }
const ModelConfig& Qwen3Engine::config() const { return impl_->config; }
const std::string& Qwen3Engine::device() const { return impl_->device_name; }
const std::string& Qwen3Engine::dtype() const { return impl_->dtype_name; }

int64_t Qwen3Engine::parameter_bytes() const {
  return impl_->reference ? impl_->reference->parameter_bytes() : impl_->fast->parameter_bytes();
}

bool Qwen3Engine::compiled() const { return impl_->compiled; }

double Qwen3Engine::compile_seconds() const {
  return impl_->compile_seconds + (impl_->graph ? impl_->graph->capture_seconds() : 0.0);
}

int Qwen3Engine::graph_captures() const { return impl_->graph ? impl_->graph->captures() : 0; }

}  // namespace qwen3
