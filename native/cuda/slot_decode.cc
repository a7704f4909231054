#include "cuda/slot_decode.h"

#include <stdexcept>

#ifdef QWEN3_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "cuda/decode_ops.h"
#include "cuda/decode_step.h"
#include "cuda/kernels.h"
#include "model/fp8_weights.h"
#include "model/layers.h"
#endif

namespace qwen3 {

#ifdef QWEN3_WITH_CUDA_KERNELS

namespace {
// Slot capacity in graph mode: powers of two from this, as the batch decoder's KV buffer.
constexpr int64_t kMinGraphCapacity = 256;

int64_t power_of_two_at_least(int64_t n, int64_t from) {
  int64_t p = from;
  while (p < n) p *= 2;
  return p;
}
}  // namespace

bool CudaSlotDecoder::supports(Backend backend) { return backend == Backend::Cuda; }

struct CudaSlotDecoder::State {
  const ModelConfig& config;
  const FusedWeights& weights;
  SlotCache& cache;
  c10::Device device;
  at::ScalarType dtype;
  RopeTable rope;

  // The fixed buffers (and the graph, when compiled) of one batch size.
  struct Bucket {
    int64_t batch = 0;
    bool shared = false;               // rows may share slots (buffers.rows_share_slots)
    at::Tensor ids, slots, positions;  // (batch,) int64 each: the step's inputs; padding rows at position -1
    at::Tensor logits;                 // (batch, vocab) compute dtype
    at::Tensor local_logits;           // (batch, vocab / world): this rank's rows of the head (tensor parallel)
    at::Tensor partials;               // float32 scratch of the split attention (cuda::attention_partials_floats)
    at::Tensor done;                   // (batch, groups) int32 split counters, back to zero after each step
    // Batch 1 (GEMVs): the head's kernel with its argmax, as in a batch-1 decode step.
    at::Tensor next;                   // (1,) int64
    at::Tensor head_scratch;           // float32 (cuda::head_scratch_floats)
    at::Tensor head_done;              // (1,) int32, back to zero after each step
    std::unique_ptr<at::cuda::CUDAGraph> graph;
  };
  std::map<std::pair<int64_t, bool>, Bucket> buckets;  // by (batch, shared)
  // The cache the buckets were made for: graphs record its buffers' addresses and capacity.
  int64_t rows = 0, capacity = 0;
  const void* keys = nullptr;
  at::Tensor cos, sin;  // (capacity, head_dim) float32

  State(const ModelConfig& c, const FusedWeights& w, SlotCache& k, c10::Device d, at::ScalarType t)
      : config(c), weights(w), cache(k), device(d), dtype(t), rope(c.head_dim, c.rope_base, c.context_length, d) {}

  // Starts over (every graph and scratch buffer) when the slot cache has been regrown since.
  void follow_cache() {
    if (cache.rows() == rows && cache.capacity() == capacity && cache.keys(0).data_ptr() == keys) return;
    buckets.clear();
    rows = cache.rows();
    capacity = cache.capacity();
    keys = cache.keys(0).data_ptr();
    std::tie(cos, sin) = rope.slice(0, capacity);
  }

  Bucket& bucket(int64_t batch, bool shared) {
    Bucket& b = buckets[{batch, shared}];
    if (b.batch == batch) return b;
    b.batch = batch;
    b.shared = shared;
    const auto opts = at::TensorOptions().device(device);
    b.ids = at::zeros({batch}, opts.dtype(at::kLong));
    b.slots = at::zeros({batch}, opts.dtype(at::kLong));
    b.positions = at::full({batch}, -1, opts.dtype(at::kLong));
    b.logits = at::empty({batch, config.vocab_size}, opts.dtype(dtype));
    if (weights.ranks) b.local_logits = at::empty({batch, weights.out_head.size(0)}, opts.dtype(dtype));
    const auto floats = cuda::attention_partials_floats(static_cast<int>(batch), static_cast<int>(config.n_heads),
                                                        static_cast<int>(config.head_dim), static_cast<int>(capacity));
    b.partials = at::empty({static_cast<int64_t>(floats)}, opts.dtype(at::kFloat));
    b.done = at::zeros({batch, config.n_kv_groups}, opts.dtype(at::kInt));
    if (one_row(batch)) {
      b.next = at::zeros({1}, opts.dtype(at::kLong));
      b.head_scratch = at::empty({static_cast<int64_t>(cuda::head_scratch_floats(static_cast<int>(config.vocab_size)))}, opts.dtype(at::kFloat));
      b.head_done = at::zeros({1}, opts.dtype(at::kInt));
    }
    return b;
  }

  // Batch 1 runs as GEMVs where every product fits them: the kernels of a batch-1 decode step.
  bool one_row(int64_t batch) const { return batch == 1 && CudaDecodeOps::gemv_fits(config, dtype, is_fp8_rows(weights.out_head)); }

  // The step as a graph records it: reads the bucket's inputs, writes each real row's key and
  // value into its slot and the logits of every row.
  void run(Bucket& b) {
    DecodeBuffers buffers;
    buffers.batch = b.batch;
    buffers.capacity = capacity;
    buffers.position = b.positions.data_ptr<int64_t>();
    buffers.cos = cos.data_ptr<float>();
    buffers.sin = sin.data_ptr<float>();
    buffers.partials = b.partials.data_ptr<float>();
    buffers.done = b.done.data_ptr<int>();
    buffers.slots = &cache;
    buffers.row_slots = b.slots.data_ptr<int64_t>();
    buffers.rows_share_slots = b.shared;
    const bool gemv = one_row(b.batch);
    CudaDecodeOps ops(config, dtype, buffers, gemv);
    at::Tensor x = at::embedding(weights.tok_emb, b.ids);  // (batch, emb_dim)
    run_blocks(weights, ops, x);
    HeadBuffers head{b.local_logits};
    if (gemv) head = {b.local_logits, b.head_scratch.data_ptr<float>(), b.head_done.data_ptr<int>(), b.next.data_ptr<int64_t>()};
    ops.head(weights, x, b.logits, head);
  }
};

CudaSlotDecoder::CudaSlotDecoder(const ModelConfig& config, const FusedWeights& weights, SlotCache& cache, c10::Device device,
                                 at::ScalarType dtype, bool use_graphs)
    : state_(std::make_unique<State>(config, weights, cache, device, dtype)), use_graphs_(use_graphs) {}

CudaSlotDecoder::~CudaSlotDecoder() = default;

void CudaSlotDecoder::reserve(int64_t rows, int64_t capacity) {
  State& s = *state_;
  int64_t want = capacity;
  if (use_graphs_ && capacity > s.cache.capacity()) {
    want = std::min(s.config.context_length, power_of_two_at_least(capacity, kMinGraphCapacity));
  }
  s.cache.reserve(rows, want, at::TensorOptions().device(s.device).dtype(s.dtype));
}

at::Tensor CudaSlotDecoder::step(const std::vector<int64_t>& slots, const std::vector<int64_t>& positions, const std::vector<int32_t>& ids) {
  State& s = *state_;
  const c10::cuda::CUDAGuard device_guard(s.device);
  s.follow_cache();
  const auto rows = static_cast<int64_t>(slots.size());
  // Batch sizes in powers of two, eager too: one set of buffers (and one graph) per size, and
  // the same kernels whichever way the step runs; a step whose rows share slots has its own.
  std::vector<int64_t> sorted(slots);
  std::sort(sorted.begin(), sorted.end());
  const bool shared = std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end();
  State::Bucket& b = s.bucket(power_of_two_at_least(rows, 1), shared);
  std::vector<int64_t> ids64(static_cast<size_t>(b.batch), 0), slots64(static_cast<size_t>(b.batch), 0),
      positions64(static_cast<size_t>(b.batch), -1);
  std::copy(ids.begin(), ids.end(), ids64.begin());
  std::copy(slots.begin(), slots.end(), slots64.begin());
  std::copy(positions.begin(), positions.end(), positions64.begin());
  b.ids.copy_(at::from_blob(ids64.data(), {b.batch}, at::kLong));
  b.slots.copy_(at::from_blob(slots64.data(), {b.batch}, at::kLong));
  b.positions.copy_(at::from_blob(positions64.data(), {b.batch}, at::kLong));
  if (!use_graphs_) {
    s.run(b);
  } else {
    if (!b.graph) {
      const auto t0 = std::chrono::steady_clock::now();
      b.graph = std::make_unique<at::cuda::CUDAGraph>();
      capture_graph(*b.graph, [&] { s.run(b); });  // its warm-up is this step, done once more by the replay
      capture_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++captures_;
    }
    b.graph->replay();
  }
  return b.logits.narrow(0, 0, rows);
}

void CudaSlotDecoder::release() {
  State& s = *state_;
  s.buckets.clear();
  s.cos = s.sin = at::Tensor();
  s.rows = s.capacity = 0;
  s.keys = nullptr;
}

#else  // no fused CUDA kernels in this build: Backend::Cuda is never chosen

bool CudaSlotDecoder::supports(Backend) { return false; }
struct CudaSlotDecoder::State {};
CudaSlotDecoder::CudaSlotDecoder(const ModelConfig&, const FusedWeights&, SlotCache&, c10::Device, at::ScalarType, bool) {
  throw std::logic_error("the CUDA slot decoder needs the fused CUDA kernels");
}
CudaSlotDecoder::~CudaSlotDecoder() = default;
void CudaSlotDecoder::reserve(int64_t, int64_t) {}
at::Tensor CudaSlotDecoder::step(const std::vector<int64_t>&, const std::vector<int64_t>&, const std::vector<int32_t>&) {
  throw std::logic_error("the CUDA slot decoder needs the fused CUDA kernels");
}
void CudaSlotDecoder::release() {}

#endif

}  // namespace qwen3
