// The engine behind a loaded model: checks each step against its state, keeps the KV cache and
// runs the reference pass or the fast block (model/block.h) with the backend chosen at load.
#include "model/engine.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "cuda/decode_step.h"
#include "model/backend.h"
#include "model/block.h"
#include "model/kv_cache.h"
#include "model/layers.h"
#include "model/reference_forward.h"
#include "model/sampling.h"
#include "model/slot_step.h"
#include "model/weights.h"
#include "parallel/collectives.h"
#include "parallel/process_group.h"
#include "parallel/rank_threads.h"
#include "parallel/shard.h"
#include "platform/device.h"

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
  ModelConfig config;       // what this rank runs: the whole model, or its share of the heads and hidden units
  ModelConfig full_config;  // the whole model's
  std::string device_name, dtype_name;
  c10::Device device;
  at::ScalarType dtype;
  KVCache cache;
  RopeTable rope;
  Backend backend;
  // The reference pass, or the fused weights of the fast block with, on CUDA, its own decode
  // step (replayed from a CUDA graph when compiled, launched kernel by kernel when eager).
  std::unique_ptr<ReferenceForward> reference;
  std::unique_ptr<FusedWeights> fast;
  std::unique_ptr<CudaDecoder> graph;
  bool compiled = false;
  double compile_seconds = 0;
  std::vector<int64_t> row_pad;  // left padding of the rows the cache holds (empty: none)
  std::unique_ptr<SlotSteps> slot_steps;  // sequence slots (model/slot_step.h), made by the first slot call

  SlotSteps& slots() {
    if (!slot_steps) {
      slot_steps = std::make_unique<SlotSteps>(ModelParts{config, device, dtype, backend, rope, reference.get(), fast.get()}, compiled);
    }
    return *slot_steps;
  }

  // One rank of `world` (ranks: its collectives), or the whole model when world is 1. A rank
  // always runs the fast block, whose products it splits.
  Impl(const LoadRequest& r, c10::Device dev, at::ScalarType dt, int world = 1, Collectives* ranks = nullptr)
      : config(world > 1 ? shard_config(r.config, world) : r.config), full_config(r.config), device_name(dev.str()), dtype_name(r.dtype),
        device(dev), dtype(dt), cache(config.n_layers, config.n_kv_groups, config.head_dim, config.context_length),
        rope(config.head_dim, config.rope_base, config.context_length, dev),
        backend(choose_backend(dev, config, r.compile || world > 1 || !r.quantize.empty())),
        compiled(r.compile) {
    const c10::DeviceGuard on_device(dev);
    Weights w = load_weights(r, dt, dev);
    if (world > 1) w = shard_weights(std::move(w), r.config, ranks->rank(), world);
    if (backend == Backend::Reference) {
      reference = std::make_unique<ReferenceForward>(config, std::move(w), dev, dt);
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    fast = std::make_unique<FusedWeights>(FusedWeights::fuse(std::move(w)));
    fast->ranks = ranks;
    if (r.quantize == "int8") fast->quantize_int8();
    if (r.quantize == "fp8") fast->quantize_fp8();
    if (CudaDecoder::supported(dev)) graph = std::make_unique<CudaDecoder>(config, *fast, cache, dev, dt, /*use_graphs=*/r.compile);
    if (r.compile) compile_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  // The fast block over a prompt or an uncached step. ids: (batch, seq). Returns logits for
  // every position (all_logits) or only the last: (batch, seq or 1, vocab).
  at::Tensor prompt_forward(const at::Tensor& ids, bool use_cache, bool all_logits, const Padding* padding) {
    const int64_t batch = ids.size(0), seq = ids.size(1);
    StepShape step;
    step.batch = batch;
    step.seq = seq;
    step.start = use_cache ? cache.length() : 0;
    std::tie(step.cos, step.sin) = padding ? std::make_pair(padding->cos, padding->sin) : rope.slice(step.start, seq);
    step.padding = padding;
    if (use_cache) cache.reserve(batch, seq, at::TensorOptions().device(device).dtype(dtype));
    step.store = [&](int64_t layer, const at::Tensor& k, const at::Tensor& v) {
      return use_cache ? cache.append(layer, k, v) : std::make_pair(k, v);
    };
    at::Tensor logits = prompt_logits(backend, config, *fast, ids, std::move(step), all_logits);
    if (use_cache) cache.advance(seq);
    return logits;
  }

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

  StepResult run(const StepRequest& r, StepKind kind) {
    c10::InferenceMode guard;
    const c10::DeviceGuard on_device(device);  // the fused kernels launch on the current device's stream
    const bool use_cache = kind != StepKind::Uncached;
    const int64_t start = use_cache ? cache.length() : 0;
    check_fits(start + r.seq, use_cache ? r.batch : 0);
    // Left padding: set by the step that starts a cache (kept for its decode steps) or given to
    // an uncached step; all-zero padding is no padding, which keeps the fast paths.
    std::vector<int64_t> pad = r.pad;
    const bool padded_request = std::any_of(pad.begin(), pad.end(), [](int64_t p) { return p > 0; });
    // (The binding checked one count per row, each leaving a real token.)
    if (padded_request && (kind == StepKind::Decode || (kind == StepKind::Prefill && start > 0))) {
      throw std::invalid_argument("Padding is set by the step that starts the KV cache, not by later steps");
    }
    if (kind == StepKind::Prefill && start == 0) row_pad = padded_request ? pad : std::vector<int64_t>();
    if (kind != StepKind::Uncached) pad = row_pad;
    std::optional<Padding> padding;
    if (kind == StepKind::Uncached ? padded_request : !row_pad.empty()) padding = make_padding(pad, start, r.seq, rope, device);

    at::Tensor logits, next;  // (batch, seq or 1, vocab), (batch,)
    if (graph && kind == StepKind::Decode && !padding) {
      at::Tensor greedy;
      std::tie(logits, greedy) = graph->step(r.ids, r.batch);
      next = r.sampling.temperature > 0 ? choose_next(logits, r.sampling) : greedy;
      logits = logits.unsqueeze(1);
    } else {
      std::vector<int32_t> ids_copy(r.ids);
      const at::Tensor ids = at::from_blob(ids_copy.data(), {r.batch, r.seq}, at::kInt).to(device, at::kLong);  // (batch, seq)
      const Padding* pads = padding ? &*padding : nullptr;
      logits = reference ? reference->forward(ids, use_cache ? &cache : nullptr, rope, pads)
                         : prompt_forward(ids, use_cache, r.logits == LogitsMode::All, pads);
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
    const bool chained = graph && CudaDecoder::can_chain(config) && row_pad.empty() && r.sampling.temperature <= 0;
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
        got = graph->chain(ids, batch, std::min(r.steps - done, CudaDecoder::kMaxChain));
      } else {
        if (!r.sampling.uniforms.empty()) {
          const auto first = r.sampling.uniforms.begin() + done * batch;
          one.sampling.uniforms.assign(first, first + batch);
        }
        got = run(one, StepKind::Decode).next_ids;
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

// The other ranks of a tensor-parallel model: their engines, threads and collectives. One rank
// per process: only this process's collectives, and no other rank here.
struct Qwen3Engine::Ranks {
  std::vector<std::string> devices;  // the ranks in this process (empty: one rank per process)
  ProcessGroupSpec process_group;    // one rank per process: which (else world 0)
  std::string transport;
  std::unique_ptr<CollectiveGroup> group;  // ranks that are threads of this process
  std::vector<std::unique_ptr<Collectives>> collectives;  // (world,)
  std::vector<std::unique_ptr<Impl>> impls;              // ranks 1..world-1 (rank 0 is impl_)
  std::unique_ptr<RankThreads> threads;
  std::string failure;  // set once a rank failed mid-step: the ranks may no longer agree

  Impl& rank(int r, Impl& first) { return r == 0 ? first : *impls[static_cast<size_t>(r - 1)]; }

  // Runs fn on every rank. A request that one rank refuses, every rank refuses in the same way
  // before any collective (they hold the same state); any other failure may leave the others
  // waiting in a collective, so it aborts them, and the model refuses further steps.
  void run(const std::function<void(int)>& fn) {
    if (!failure.empty()) {
      throw std::runtime_error("A rank of this tensor-parallel model failed (" + failure + "); load the model again");
    }
    threads->run(fn, [this](std::exception_ptr error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::invalid_argument&) {
        return;
      } catch (const std::exception& e) {
        failure = e.what();
      } catch (...) {
        failure = "unknown error";
      }
      for (auto& c : collectives) {
        if (c) c->abort();
      }
    });
  }
};

std::unique_ptr<Qwen3Engine> Qwen3Engine::load(const LoadRequest& request) {
  c10::InferenceMode guard;
  choose_attention_backends();
  const at::ScalarType dtype = parse_dtype(request.dtype);
  if (request.quantize == "int8") {
    if (c10::Device(request.device).type() != c10::DeviceType::CPU) {
      throw std::invalid_argument("int8 weights run on the CPU, not on " + request.device + " (use FP8 weights on CUDA)");
    }
    if (dtype == at::kHalf) throw std::invalid_argument("int8 weights compute in float32 or bfloat16, not float16");
  } else if (request.quantize == "fp8") {
    const c10::DeviceType type = c10::Device(request.device).type();
    if (type != c10::DeviceType::CUDA && type != c10::DeviceType::CPU) {
      throw std::invalid_argument("FP8 weights run on CUDA (and on the CPU, without a kernel of their own), not on " + request.device);
    }
  } else if (!request.quantize.empty()) {
    throw std::invalid_argument("Unsupported quantize '" + request.quantize + "': expected int8 or fp8");
  }
  // The ranks in this process: one per device as threads, or this process's one rank of a group.
  const ProcessGroupSpec& group = request.process_group;
  const bool per_process = group.world > 1;
  const std::vector<std::string> here = per_process ? std::vector<std::string>{request.device} : request.devices;
  const int world = per_process ? group.world : static_cast<int>(request.devices.size());
  if (world <= 1) {
    check_device(request.device);
    auto impl = std::make_unique<Impl>(request, c10::Device(request.device), dtype);
    return std::unique_ptr<Qwen3Engine>(new Qwen3Engine(std::move(impl), nullptr));
  }
  check_shardable(request.config, world);
  for (const std::string& d : here) check_device(d);
  auto ranks = std::make_unique<Ranks>();
  if (per_process) {
    ranks->process_group = group;
    ranks->transport = process_group_transport(request.device);
  } else {
    ranks->devices = request.devices;
    ranks->group = CollectiveGroup::create(request.devices, request.collective_timeout_ms);
    ranks->transport = ranks->group->transport();
  }
  const auto local = static_cast<int>(here.size());
  ranks->collectives.resize(static_cast<size_t>(local));
  ranks->impls.resize(static_cast<size_t>(local - 1));
  ranks->threads = std::make_unique<RankThreads>(local);
  std::unique_ptr<Impl> first;
  // Each rank loads its share on its own thread, where its collectives are made.
  ranks->run([&](int r) {
    c10::InferenceMode rank_guard;
    const c10::Device device(here[static_cast<size_t>(r)]);
    const c10::DeviceGuard on_device(device);
    ranks->collectives[static_cast<size_t>(r)] =
        per_process ? join_process_group(group, request.device, request.collective_timeout_ms) : ranks->group->join(r);
    auto impl = std::make_unique<Impl>(request, device, dtype, world, ranks->collectives[static_cast<size_t>(r)].get());
    (r == 0 ? first : ranks->impls[static_cast<size_t>(r - 1)]) = std::move(impl);
  });
  return std::unique_ptr<Qwen3Engine>(new Qwen3Engine(std::move(first), std::move(ranks)));
}

Qwen3Engine::Qwen3Engine(std::unique_ptr<Impl> impl, std::unique_ptr<Ranks> ranks) : impl_(std::move(impl)), ranks_(std::move(ranks)) {}

Qwen3Engine::~Qwen3Engine() {
  if (!ranks_) return;
  // The ranks' engines go first, then each rank ends its collectives on its own thread, all at
  // once (ending a NCCL communicator may wait for the other ranks to end theirs).
  ranks_->impls.clear();
  impl_.reset();
  try {
    ranks_->threads->run([&](int r) { ranks_->collectives[static_cast<size_t>(r)].reset(); }, [](std::exception_ptr) {});
  } catch (...) {
  }
}

void Qwen3Engine::every_rank(const std::function<void(Impl&, bool)>& fn) {
  if (!ranks_) return fn(*impl_, true);
  ranks_->run([&](int r) {
    c10::InferenceMode guard;
    fn(ranks_->rank(r, *impl_), r == 0);
  });
}

// Runs one step, bracketed for an external profiler when QWEN3_PROFILE asks for it (platform/device.h).
StepResult Qwen3Engine::profiled(const char* what, const StepRequest& request, StepKind kind) {
  const bool profile = profile_wanted(what);
  if (profile) profiler_range(impl_->device_name, true);
  StepResult out;
  every_rank([&](Impl& impl, bool first) {
    StepResult mine = impl.run(request, kind);
    if (first) out = std::move(mine);
  });
  if (profile) profiler_range(impl_->device_name, false);
  return out;
}

StepResult Qwen3Engine::prefill(const StepRequest& request) { return profiled("prefill", request, StepKind::Prefill); }

StepResult Qwen3Engine::decode(const StepRequest& request) {
  if (request.seq != 1) throw std::invalid_argument("decode takes exactly one token per row");
  if (impl_->cache.length() == 0) throw std::invalid_argument("decode needs a prefilled KV cache: call prefill first");
  return profiled("decode", request, StepKind::Decode);
}

StepResult Qwen3Engine::decode_steps(const StepRequest& request) {
  if (request.seq != 1) throw std::invalid_argument("decode_steps takes exactly one token per row");
  if (impl_->cache.length() == 0) throw std::invalid_argument("decode_steps needs a prefilled KV cache: call prefill first");
  if (request.logits != LogitsMode::None) throw std::invalid_argument("decode_steps returns no logits: use decode for them");
  StepResult out;
  every_rank([&](Impl& impl, bool first) {
    StepResult mine = impl.run_steps(request);
    if (first) out = std::move(mine);
  });
  return out;
}

StepResult Qwen3Engine::forward_uncached(const StepRequest& request) { return profiled("forward", request, StepKind::Uncached); }

SlotStepResult Qwen3Engine::slot_step(const SlotStepRequest& request) {
  const bool profile = profile_wanted("slot_step");
  if (profile) profiler_range(impl_->device_name, true);
  SlotStepResult out;
  every_rank([&](Impl& impl, bool first) {
    SlotStepResult mine = impl.slots().step(request);
    if (first) out = std::move(mine);
  });
  if (profile) profiler_range(impl_->device_name, false);
  return out;
}

void Qwen3Engine::speculate_slot_step() {
  if (!ranks_ && impl_->slot_steps) impl_->slot_steps->speculate();
}

void Qwen3Engine::copy_slot(const CopySlotRequest& request) {
  every_rank([&](Impl& impl, bool) { impl.slots().copy(request); });
}

void Qwen3Engine::reset_cache(bool release) {
  every_rank([&](Impl& impl, bool) {
    impl.cache.reset(release);
    impl.row_pad.clear();
    if (release && impl.slot_steps) impl.slot_steps->release();
  });
}

int64_t Qwen3Engine::cache_length() const { return impl_->cache.length(); }
int64_t Qwen3Engine::cache_capacity() const { return impl_->cache.capacity(); }

int64_t Qwen3Engine::slot_cache_bytes() const {
  int64_t total = impl_->slot_steps ? impl_->slot_steps->bytes() : 0;
  if (ranks_) {
    for (const auto& impl : ranks_->impls) total += impl->slot_steps ? impl->slot_steps->bytes() : 0;
  }
  return total;
}

int64_t Qwen3Engine::speculated_slot_steps() const { return impl_->slot_steps ? impl_->slot_steps->speculation().run_count() : 0; }
int64_t Qwen3Engine::used_speculated_slot_steps() const { return impl_->slot_steps ? impl_->slot_steps->speculation().used_count() : 0; }
int64_t Qwen3Engine::prompt_chunks_as_rows() const { return impl_->slot_steps ? impl_->slot_steps->prompt_chunks_as_rows() : 0; }

const ModelConfig& Qwen3Engine::config() const { return impl_->full_config; }
const std::string& Qwen3Engine::device() const { return impl_->device_name; }

const std::vector<std::string>& Qwen3Engine::devices() const {
  static const std::vector<std::string> none;
  return ranks_ ? ranks_->devices : none;
}

const char* Qwen3Engine::transport() const { return ranks_ ? ranks_->transport.c_str() : ""; }

ProcessGroupSpec Qwen3Engine::process_group() const { return ranks_ ? ranks_->process_group : ProcessGroupSpec{}; }
const std::string& Qwen3Engine::dtype() const { return impl_->dtype_name; }

int64_t Qwen3Engine::parameter_bytes() const {
  const auto bytes = [](const Impl& impl) { return impl.reference ? impl.reference->parameter_bytes() : impl.fast->parameter_bytes(); };
  int64_t total = bytes(*impl_);
  if (ranks_) {
    for (const auto& impl : ranks_->impls) total += bytes(*impl);
  }
  return total;
}

bool Qwen3Engine::compiled() const { return impl_->compiled; }

double Qwen3Engine::compile_seconds() const {
  return impl_->compile_seconds + (impl_->graph ? impl_->graph->capture_seconds() : 0.0) +
         (impl_->slot_steps ? impl_->slot_steps->capture_seconds() : 0.0);
}

int Qwen3Engine::graph_captures() const {
  return (impl_->graph ? impl_->graph->captures() : 0) + (impl_->slot_steps ? impl_->slot_steps->captures() : 0);
}

}  // namespace qwen3
