#include "cuda/decode_step.h"

#include <stdexcept>

#ifdef QWEN3_WITH_CUDA
#include <ATen/TensorOperators.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <cmath>
#include <map>
#include <mutex>

#include "model/aten_ops.h"

#ifdef QWEN3_WITH_CUDA_KERNELS
#include "cuda/decode_ops.h"
#include "cuda/kernels.h"
#include "model/fp8_weights.h"
#endif
#endif

namespace qwen3 {

#ifdef QWEN3_WITH_CUDA

namespace {
// Graphs are captured on one side stream per device for the whole process, one capture at a
// time. cuBLAS keeps a workspace (32 MiB on Hopper) per (handle, stream) for good, so a fresh
// pool stream per capture would leave another one behind each time, up to the pool's 32.
struct CaptureStream {
  std::mutex mutex;
  at::cuda::CUDAStream stream;
};

CaptureStream& capture_stream(c10::DeviceIndex device) {
  static std::mutex guard;
  static std::map<c10::DeviceIndex, std::unique_ptr<CaptureStream>> streams;
  const std::lock_guard<std::mutex> lock(guard);
  auto& slot = streams[device];
  if (!slot) slot.reset(new CaptureStream{{}, c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device)});
  return *slot;
}

// The KV buffer grows to the next power of two (at least this), so a generation of n tokens
// re-captures about log2(n / 256) times.
constexpr int64_t kMinGraphCapacity = 256;
}  // namespace

void capture_graph(at::cuda::CUDAGraph& graph, const std::function<void()>& step) {
  CaptureStream& capture = capture_stream(c10::cuda::current_device());
  const std::lock_guard<std::mutex> one_capture_at_a_time(capture.mutex);
  at::cuda::CUDAStream side = capture.stream;
  c10::cuda::getCurrentCUDAStream().synchronize();
  {
    c10::cuda::CUDAStreamGuard guard(side);
    step();
    side.synchronize();
    graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    step();
    graph.capture_end();
  }
  side.synchronize();
}

struct CudaDecoder::State {
  const ModelConfig& config;
  const FusedWeights& weights;
  KVCache& cache;
  c10::Device device;
  at::ScalarType dtype;
  RopeTable rope;

  std::unique_ptr<at::cuda::CUDAGraph> graph;
  int64_t batch = 0, capacity = 0;
  const void* captured_keys = nullptr;  // the buffer the graph writes into; a regrown cache invalidates it
  at::Tensor ids;        // (batch, 1) int64: this step's tokens
  at::Tensor position;   // (1,) int64: this step's position
  at::Tensor slots;      // (capacity,) int64: 0..capacity-1, compared with position for the mask
  at::Tensor cos, sin;   // (capacity, head_dim) float32
  at::Tensor logits;     // (batch, vocab) compute dtype
  at::Tensor local_logits;  // (batch, vocab / world): this rank's rows of the head (tensor parallel)
  at::Tensor next;       // (batch,) int64
  at::Tensor history;    // (batch, kMaxChain) int64: the tokens of a chain of steps
  at::Tensor counter;    // (1,) int64: the chain's next column of history
  at::Tensor partials;   // float32 scratch of the split attention (cuda::attention_partials_floats)
  at::Tensor done;       // (batch, groups) int32: splits finished per group, back to zero after each step
  at::Tensor x_row;         // (1, emb_dim): batch 1's residual stream, which the step starts from
  at::Tensor head_scratch;  // float32 scratch of the head's argmax (cuda::head_scratch_floats)
  at::Tensor head_done;     // (1,) int32: head blocks finished, back to zero after each step

  State(const ModelConfig& c, const FusedWeights& w, KVCache& k, c10::Device d, at::ScalarType t)
      : config(c), weights(w), cache(k), device(d), dtype(t), rope(c.head_dim, c.rope_base, c.context_length, d) {}

  // The step as the graph records it: reads ids/position, writes K/V at position, logits, next.
  // With `chained`, it also hands its tokens to the next step (cuda::chain_step); graphs
  // always record that tail, so a plain replay is preceded by set_inputs.
  void run(bool chained) {
#ifdef QWEN3_WITH_CUDA_KERNELS
    if (fused_kernels(config)) {
      if (run_fused(chained)) return;
      if (chained) {
        cuda::chain_step(next.data_ptr<int64_t>(), ids.data_ptr<int64_t>(), position.data_ptr<int64_t>(), history.data_ptr<int64_t>(),
                         counter.data_ptr<int64_t>(), static_cast<int>(batch), static_cast<int>(kMaxChain),
                         c10::cuda::getCurrentCUDAStream().stream());
      }
      return;
    }
#endif
    run_aten();
  }

#ifdef QWEN3_WITH_CUDA_KERNELS
  bool one_row() const { return batch == 1 && CudaDecodeOps::gemv_fits(config, dtype, is_fp8_rows(weights.out_head)); }
  // Batch 1 on one device starts from x_row and ends in the head kernel that also chains the
  // step; a rank of a tensor-parallel model must gather the logits before the argmax instead.
  bool row_input() const { return one_row() && !weights.ranks; }

  // The blocks through the decode kernels (cuda/decode_ops.h), then the head. Returns whether
  // it also ended the step for a chain (batch 1 does, in the head's kernel).
  bool run_fused(bool chained) {
    const int64_t D = config.emb_dim;
    const int dt = kernel_dtype(dtype);
    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    const auto eps = static_cast<float>(kNormEps);
    const bool one_row = this->one_row();
    const DecodeBuffers buffers{batch, capacity, position.data_ptr<int64_t>(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                &cache, partials.data_ptr<float>(), done.data_ptr<int>()};
    CudaDecodeOps ops(config, dtype, buffers, one_row);
    // (batch, emb_dim) residual stream: batch 1 starts from x_row, which set_inputs or the step
    // before wrote.
    const bool row_input = this->row_input();
    at::Tensor x = row_input ? x_row : at::embedding(weights.tok_emb, ids).view({batch, D});
    run_blocks(weights, ops, x);
    if (row_input) {
      // Final norm, the vocabulary head and argmax in one kernel; in a chain it also moves the
      // step on (as chain_step) and writes the next token's embedding into x_row.
      cuda::StepChain chain{ids.data_ptr<int64_t>(), position.data_ptr<int64_t>(), history.data_ptr<int64_t>(), counter.data_ptr<int64_t>(),
                            static_cast<int>(kMaxChain), weights.tok_emb.data_ptr(), x_row.data_ptr()};
      cuda::gemv_argmax(dt, is_fp8_rows(weights.out_head), weights.out_head.data_ptr(), x.data_ptr(), weights.final_norm.data_ptr<float>(),
                        logits.data_ptr(), static_cast<int>(config.vocab_size), static_cast<int>(D), eps, head_scratch.data_ptr<float>(),
                        head_done.data_ptr<int>(), next.data_ptr<int64_t>(), chained ? &chain : nullptr, stream);
      return true;
    }
    // Final norm and the vocabulary head (this rank's rows of it, gathered across ranks), then
    // the argmax over every rank's rows.
    HeadBuffers buffers_of_head{local_logits};
    if (one_row) buffers_of_head = {local_logits, head_scratch.data_ptr<float>(), head_done.data_ptr<int>(), next.data_ptr<int64_t>()};
    ops.head(weights, x, logits, buffers_of_head);
    next.copy_(at::argmax(logits, -1));
    return false;
  }
#endif

  // The same step from ATen operations (builds without the fused kernels), writing the step's
  // keys and values into the fixed buffers at the device-side position.
  void run_aten() {
    StepShape step;
    step.batch = batch;
    step.seq = 1;
    step.cos = cos.index_select(0, position);  // (1, head_dim)
    step.sin = sin.index_select(0, position);  // (1, head_dim)
    step.visible = (slots <= position).view({1, 1, 1, capacity});  // (1, 1, 1, capacity) bool
    step.store = [&](int64_t layer, const at::Tensor& k, const at::Tensor& v) {
      at::Tensor keys = cache.keys(layer), values = cache.values(layer);  // (batch, groups, capacity, hd)
      keys.index_copy_(2, position, k);
      values.index_copy_(2, position, v);
      return std::make_pair(keys, values);
    };
    AtenOps ops(config, std::move(step));
    at::Tensor x = at::embedding(weights.tok_emb, ids).view({batch, config.emb_dim});  // (batch, emb_dim)
    run_blocks(weights, ops, x);
    logits.copy_(gather_vocab(weights, ops.logits(x, weights.final_norm, weights.out_head)));
    next.copy_(at::argmax(logits, -1));
  }

  // Points the fixed buffers at this step's tokens and position (before any run reads them).
  void set_inputs(std::vector<int64_t>& ids64, int64_t pos) {
    ids.copy_(at::from_blob(ids64.data(), {batch, 1}, at::kLong));
    position.fill_(pos);
    counter.zero_();
#ifdef QWEN3_WITH_CUDA_KERNELS
    if (x_row.defined()) x_row.copy_(at::embedding(weights.tok_emb, ids).view({1, config.emb_dim}));
#endif
  }

  // Fixed buffers for this batch size and KV capacity.
  void prepare(int64_t new_batch, int64_t new_capacity) {
    batch = new_batch;
    capacity = new_capacity;
    const auto opts = at::TensorOptions().device(device);
    ids = at::zeros({batch, 1}, opts.dtype(at::kLong));
    position = at::zeros({1}, opts.dtype(at::kLong));
    slots = at::arange(capacity, opts.dtype(at::kLong));
    std::tie(cos, sin) = rope.slice(0, capacity);
    logits = at::empty({batch, config.vocab_size}, opts.dtype(dtype));
    local_logits = weights.ranks ? at::empty({batch, weights.out_head.size(0)}, opts.dtype(dtype)) : at::Tensor();
    next = at::empty({batch}, opts.dtype(at::kLong));
    history = at::zeros({batch, kMaxChain}, opts.dtype(at::kLong));
    counter = at::zeros({1}, opts.dtype(at::kLong));
#ifdef QWEN3_WITH_CUDA_KERNELS
    const auto floats = cuda::attention_partials_floats(static_cast<int>(batch), static_cast<int>(config.n_heads),
                                                        static_cast<int>(config.head_dim), static_cast<int>(capacity));
    partials = at::empty({static_cast<int64_t>(floats)}, opts.dtype(at::kFloat));
    done = at::zeros({batch, config.n_kv_groups}, opts.dtype(at::kInt));
    x_row = head_scratch = head_done = at::Tensor();
    if (fused_kernels(config) && one_row()) {
      if (row_input()) x_row = at::empty({1, config.emb_dim}, opts.dtype(dtype));
      head_scratch = at::empty({static_cast<int64_t>(cuda::head_scratch_floats(static_cast<int>(config.vocab_size)))}, opts.dtype(at::kFloat));
      head_done = at::zeros({1}, opts.dtype(at::kInt));
    }
#endif
  }

  // Records the step (with its chain tail). The warm-up run is a real step at `pos`: it writes
  // the K/V that the replay after it writes again, and moves the inputs on, so callers set the
  // inputs again before replaying.
  void capture(int64_t new_batch, int64_t new_capacity, std::vector<int64_t>& ids64, int64_t pos) {
    graph.reset();  // frees the old graph's memory pool first
    prepare(new_batch, new_capacity);
    set_inputs(ids64, pos);
    captured_keys = cache.keys(0).data_ptr();
    const bool chained = can_chain(config);
    graph = std::make_unique<at::cuda::CUDAGraph>();
    capture_graph(*graph, [&] { run(chained); });
  }
};

bool CudaDecoder::supported(c10::Device device) { return device.is_cuda(); }

bool CudaDecoder::fused_kernels(const ModelConfig& config) {
#ifdef QWEN3_WITH_CUDA_KERNELS
  const auto H = static_cast<int>(config.n_heads), G = static_cast<int>(config.n_kv_groups), hd = static_cast<int>(config.head_dim);
  return cuda::group_attention_supported(0, H, G, hd) && cuda::group_attention_supported(1, H, G, hd);
#else
  return false;
#endif
}

CudaDecoder::CudaDecoder(const ModelConfig& config, const FusedWeights& weights, KVCache& cache, c10::Device device, at::ScalarType dtype,
                         bool use_graphs)
    : state_(std::make_unique<State>(config, weights, cache, device, dtype)), use_graphs_(use_graphs) {}

CudaDecoder::~CudaDecoder() = default;

bool CudaDecoder::can_chain(const ModelConfig& config) { return fused_kernels(config); }

void CudaDecoder::prepare_steps(int64_t batch, int64_t steps, std::vector<int64_t>& ids64) {
  State& s = *state_;
  const int64_t position = s.cache.length();
  const auto opts = at::TensorOptions().device(s.device).dtype(s.dtype);
  if (!use_graphs_) {
    // Eager: the same kernels launched one by one over the cache as it grows.
    s.cache.reserve(batch, steps, opts);
    if (!s.ids.defined() || s.batch != batch || s.capacity != s.cache.capacity()) s.prepare(batch, s.cache.capacity());
  } else {
    // Size the KV buffer in power-of-two buckets and re-capture when it or the batch changes.
    int64_t want = kMinGraphCapacity;
    while (want < position + steps) want *= 2;
    s.cache.reserve_capacity(batch, std::max(want, s.cache.capacity()), opts);
    if (!s.graph || s.batch != batch || s.capacity != s.cache.capacity() || s.captured_keys != s.cache.keys(0).data_ptr()) {
      const auto t0 = std::chrono::steady_clock::now();
      s.capture(batch, s.cache.capacity(), ids64, position);
      capture_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++captures_;
    }
  }
  s.set_inputs(ids64, position);
}

std::pair<at::Tensor, at::Tensor> CudaDecoder::step(const std::vector<int32_t>& ids, int64_t batch) {
  State& s = *state_;
  const c10::cuda::CUDAGuard device_guard(s.device);
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  prepare_steps(batch, 1, ids64);
  if (use_graphs_) {
    s.graph->replay();
  } else {
    s.run(/*chained=*/false);
  }
  s.cache.advance(1);
  return {s.logits, s.next};
}

std::vector<int32_t> CudaDecoder::chain(const std::vector<int32_t>& ids, int64_t batch, int64_t steps) {
  if (steps < 1 || steps > kMaxChain || !can_chain(state_->config)) throw std::logic_error("chain: unsupported");
  State& s = *state_;
  const c10::cuda::CUDAGuard device_guard(s.device);
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  prepare_steps(batch, steps, ids64);
  // Queue every step before reading anything back: the GPU runs them back to back while the
  // host is still queueing.
  for (int64_t i = 0; i < steps; ++i) {
    if (use_graphs_) {
      s.graph->replay();
    } else {
      s.run(/*chained=*/true);
    }
  }
  s.cache.advance(steps);
  const at::Tensor host = s.history.narrow(1, 0, steps).to(at::kCPU).contiguous();  // (batch, steps)
  const int64_t* h = host.data_ptr<int64_t>();
  std::vector<int32_t> out(static_cast<size_t>(steps * batch));  // (steps, batch)
  for (int64_t r = 0; r < batch; ++r) {
    for (int64_t i = 0; i < steps; ++i) out[static_cast<size_t>(i * batch + r)] = static_cast<int32_t>(h[r * steps + i]);
  }
  return out;
}

#else  // no CUDA in this libtorch: the engine never constructs the decoder

void capture_graph(at::cuda::CUDAGraph&, const std::function<void()>&) { throw std::logic_error("CUDA graphs need a CUDA build of libtorch"); }
struct CudaDecoder::State {};
bool CudaDecoder::supported(c10::Device) { return false; }
bool CudaDecoder::fused_kernels(const ModelConfig&) { return false; }
CudaDecoder::CudaDecoder(const ModelConfig&, const FusedWeights&, KVCache&, c10::Device, at::ScalarType, bool) {
  throw std::logic_error("CUDA graphs need a CUDA build of libtorch");
}
CudaDecoder::~CudaDecoder() = default;
std::pair<at::Tensor, at::Tensor> CudaDecoder::step(const std::vector<int32_t>&, int64_t) {
  throw std::logic_error("CUDA graphs need a CUDA build of libtorch");
}
bool CudaDecoder::can_chain(const ModelConfig&) { return false; }
std::vector<int32_t> CudaDecoder::chain(const std::vector<int32_t>&, int64_t, int64_t) {
  throw std::logic_error("CUDA graphs need a CUDA build of libtorch");
}

#endif

}  // namespace qwen3
