#include "cuda_graph_decoder.h"

#include <stdexcept>

#ifdef QWEN3_WITH_CUDA
#include <ATen/TensorOperators.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <cmath>

#ifdef QWEN3_WITH_CUDA_KERNELS
#include <ATen/ops/addmm.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>

#include "cuda_kernels.h"
#endif
#endif

namespace qwen3 {

#ifdef QWEN3_WITH_CUDA

namespace {
// The KV buffer grows to the next power of two (at least this), so a generation of n tokens
// re-captures about log2(n / 256) times.
constexpr int64_t kMinGraphCapacity = 256;
}  // namespace

struct CudaGraphDecoder::State {
  const ModelConfig& config;
  const FastForward& forward;
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
  at::Tensor next;       // (batch,) int64

  State(const ModelConfig& c, const FastForward& f, KVCache& k, c10::Device d, at::ScalarType t)
      : config(c), forward(f), cache(k), device(d), dtype(t), rope(c.head_dim, c.rope_base, c.context_length, d) {}

  // The step as the graph records it: reads ids/position, writes K/V at position, logits, next.
  void run() {
#ifdef QWEN3_WITH_CUDA_KERNELS
    // The fused kernels give each lane head_dim / 32 (at most 8) dimensions.
    if (config.head_dim % 32 == 0 && config.head_dim <= 256) return run_fused();
#endif
    run_aten();
  }

#ifdef QWEN3_WITH_CUDA_KERNELS
  // Nine kernels a block: RMSNorm, QKV product, norm+RoPE+cache write, attention, output
  // product with the residual added by cuBLAS, RMSNorm, gate/up product, SiLU*up, down product
  // with the residual.
  void run_fused() {
    const int64_t D = config.emb_dim, H = config.n_heads, G = config.n_kv_groups, hd = config.head_dim, F = config.hidden_dim;
    const int dt = dtype == at::kFloat ? 0 : dtype == at::kBFloat16 ? 1 : 2;
    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    const auto eps = static_cast<float>(kNormEps);
    const int64_t* pos = position.data_ptr<int64_t>();
    const auto opts = at::TensorOptions().device(device).dtype(dtype);
    at::Tensor x = at::embedding(forward.tok_emb(), ids).view({batch, D});  // (batch, emb_dim) residual stream
    at::Tensor h = at::empty({batch, D}, opts);                             // (batch, emb_dim) normed
    at::Tensor q = at::empty({batch, H, hd}, opts);                         // (batch, heads, hd)
    at::Tensor context = at::empty({batch, H * hd}, opts);                  // (batch, heads * hd)
    at::Tensor act = at::empty({batch, F}, opts);                           // (batch, hidden_dim)
    const int b = static_cast<int>(batch);
    for (size_t l = 0; l < forward.blocks().size(); ++l) {
      const FusedBlock& w = forward.blocks()[l];
      const auto layer = static_cast<int64_t>(l);
      cuda::rms_norm(dt, x.data_ptr(), w.norm1.data_ptr<float>(), h.data_ptr(), b, D, eps, stream);
      const at::Tensor qkv = at::linear(h, w.w_qkv);  // (batch, (heads + 2 groups) * hd)
      cuda::qk_norm_rope_cache(dt, qkv.data_ptr(), config.qk_norm ? w.q_norm.data_ptr<float>() : nullptr,
                               config.qk_norm ? w.k_norm.data_ptr<float>() : nullptr, config.qk_norm, cos.data_ptr<float>(),
                               sin.data_ptr<float>(), pos, q.data_ptr(), cache.keys(layer).data_ptr(), cache.values(layer).data_ptr(), b,
                               H, G, hd, capacity, eps, stream);
      cuda::decode_attention(dt, q.data_ptr(), cache.keys(layer).data_ptr(), cache.values(layer).data_ptr(), pos, context.data_ptr(), b, H,
                             G, hd, capacity, static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))), stream);
      x.addmm_(context, w.out_proj.t());
      cuda::rms_norm(dt, x.data_ptr(), w.norm2.data_ptr<float>(), h.data_ptr(), b, D, eps, stream);
      const at::Tensor gate_up = at::linear(h, w.w_gate_up);  // (batch, 2 * hidden_dim)
      cuda::silu_mul(dt, gate_up.data_ptr(), act.data_ptr(), b, F, stream);
      x.addmm_(act, w.fc3.t());
    }
    cuda::rms_norm(dt, x.data_ptr(), forward.final_norm().data_ptr<float>(), h.data_ptr(), b, D, eps, stream);
    at::mm_out(logits, h, forward.out_head().t());
    next.copy_(at::argmax(logits, -1));
  }
#endif

  // The same step from ATen operations (builds without the fused kernels).
  void run_aten() {
    const at::Tensor cos_t = cos.index_select(0, position);  // (1, head_dim)
    const at::Tensor sin_t = sin.index_select(0, position);  // (1, head_dim)
    const at::Tensor visible = (slots <= position).view({1, 1, 1, capacity});  // (1, 1, 1, capacity) bool
    auto attend = [&](int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      at::Tensor keys = cache.keys(layer), values = cache.values(layer);  // (batch, groups, capacity, hd)
      keys.index_copy_(2, position, k);
      values.index_copy_(2, position, v);
      return at::scaled_dot_product_attention(q, keys, values, visible, 0.0, false, std::nullopt, /*enable_gqa=*/true);
    };
    const at::Tensor h = forward.hidden(ids, cos_t, sin_t, attend);  // (batch, 1, emb_dim)
    logits.copy_(forward.logits(h).select(1, 0));
    next.copy_(at::argmax(logits, -1));
  }

  // Points the fixed buffers at this step's tokens and position (before any run reads them).
  void set_inputs(std::vector<int64_t>& ids64, int64_t pos) {
    ids.copy_(at::from_blob(ids64.data(), {batch, 1}, at::kLong));
    position.fill_(pos);
  }

  void capture(int64_t new_batch, int64_t new_capacity, std::vector<int64_t>& ids64, int64_t pos) {
    graph.reset();  // frees the old graph's memory pool first
    batch = new_batch;
    capacity = new_capacity;
    const auto opts = at::TensorOptions().device(device);
    ids = at::zeros({batch, 1}, opts.dtype(at::kLong));
    position = at::zeros({1}, opts.dtype(at::kLong));
    slots = at::arange(capacity, opts.dtype(at::kLong));
    std::tie(cos, sin) = rope.slice(0, capacity);
    logits = at::empty({batch, config.vocab_size}, opts.dtype(dtype));
    next = at::empty({batch}, opts.dtype(at::kLong));
    set_inputs(ids64, pos);
    captured_keys = cache.keys(0).data_ptr();

    // Warm up on a side stream (lazy cuBLAS/attention setup must not happen during capture),
    // then record. Thread-local capture mode: other threads' CUDA calls do not break it.
    at::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    c10::cuda::getCurrentCUDAStream().synchronize();
    {
      c10::cuda::CUDAStreamGuard guard(side);
      run();
      side.synchronize();
      graph = std::make_unique<at::cuda::CUDAGraph>();
      graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      run();
      graph->capture_end();
    }
    side.synchronize();
  }
};

bool CudaGraphDecoder::supported(c10::Device device) { return device.is_cuda(); }

CudaGraphDecoder::CudaGraphDecoder(const ModelConfig& config, const FastForward& forward, KVCache& cache, c10::Device device,
                                   at::ScalarType dtype)
    : state_(std::make_unique<State>(config, forward, cache, device, dtype)) {}

CudaGraphDecoder::~CudaGraphDecoder() = default;

std::pair<at::Tensor, at::Tensor> CudaGraphDecoder::step(const std::vector<int32_t>& ids, int64_t batch) {
  State& s = *state_;
  const c10::cuda::CUDAGuard device_guard(s.device);
  const int64_t position = s.cache.length();
  // Size the KV buffer in power-of-two buckets and re-capture when it or the batch changes.
  int64_t want = kMinGraphCapacity;
  while (want < position + 1) want *= 2;
  s.cache.reserve_capacity(batch, std::max(want, s.cache.capacity()), at::TensorOptions().device(s.device).dtype(s.dtype));
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  if (!s.graph || s.batch != batch || s.capacity != s.cache.capacity() || s.captured_keys != s.cache.keys(0).data_ptr()) {
    // The warm-up run inside capture() is a real step at `position`: it writes the same K/V the
    // replay below writes again, so running it twice is harmless.
    const auto t0 = std::chrono::steady_clock::now();
    s.capture(batch, s.cache.capacity(), ids64, position);
    capture_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++captures_;
  } else {
    s.set_inputs(ids64, position);
  }
  s.graph->replay();
  s.cache.advance(1);
  return {s.logits, s.next};
}

#else  // no CUDA in this libtorch: the engine never constructs the decoder

struct CudaGraphDecoder::State {};
bool CudaGraphDecoder::supported(c10::Device) { return false; }
CudaGraphDecoder::CudaGraphDecoder(const ModelConfig&, const FastForward&, KVCache&, c10::Device, at::ScalarType) {
  throw std::logic_error("CUDA graphs need a CUDA build of libtorch");
}
CudaGraphDecoder::~CudaGraphDecoder() = default;
std::pair<at::Tensor, at::Tensor> CudaGraphDecoder::step(const std::vector<int32_t>&, int64_t) {
  throw std::logic_error("CUDA graphs need a CUDA build of libtorch");
}

#endif

}  // namespace qwen3
