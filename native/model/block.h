// The Qwen3 transformer block, written once for every fast path: prompts and decode steps, on
// the CPU and on CUDA, launched eagerly or replayed from a CUDA graph. Each step of the block is
// a call on BlockOps, and each backend brings its kernels for it (model/aten_ops, cpu/cpu_ops,
// cuda/prefill_ops, cuda/decode_ops); the block never knows which ran. The reference pass
// (model/reference_forward) stays apart: its purpose is to match PyTorch to the last bit.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace qwen3 {

class Collectives;

// One block's weights for the fast paths: Q/K/V and gate/up fused into one matrix each.
struct FusedBlock {
  at::Tensor w_qkv;      // ((n_heads + 2 * n_kv_groups) * head_dim, emb_dim)
  at::Tensor out_proj;   // (emb_dim, n_heads * head_dim)
  at::Tensor q_norm;     // (head_dim,) float32
  at::Tensor k_norm;     // (head_dim,) float32
  at::Tensor w_gate_up;  // (2 * hidden_dim, emb_dim): gate rows, then up rows
  at::Tensor fc3;        // (emb_dim, hidden_dim)
  at::Tensor norm1;      // (emb_dim,) float32
  at::Tensor norm2;      // (emb_dim,) float32
};

struct FusedWeights {
  at::Tensor tok_emb;  // (vocab_size, emb_dim)
  std::vector<FusedBlock> blocks;
  at::Tensor final_norm;  // (emb_dim,) float32
  at::Tensor out_head;    // (vocab_size, emb_dim); one rank's (vocab_size / world, emb_dim)
  // Tensor parallelism (parallel/shard.h): how this rank's partial results meet the other
  // ranks'. Null: the whole model on one device.
  Collectives* ranks = nullptr;

  // Takes the eager weights apart: each unfused matrix is freed as soon as it is copied.
  static FusedWeights fuse(Weights&& weights);
  // Every block matrix and the head become int8 rows (cpu/int8_weights.h); the embedding table
  // stays as it is (a tied head gets an int8 copy of its own).
  void quantize_int8();
  // The same with FP8 rows (model/fp8_weights.h).
  void quantize_fp8();
  int64_t parameter_bytes() const;
};

// The logits of the whole vocabulary from the head's rows that this rank holds:
// local (rows, vocab / world) -> (rows, vocab), the same on every rank. Without ranks, local.
at::Tensor gather_vocab(const FusedWeights& weights, const at::Tensor& local);
// The same into `full` (rows, vocab), contiguous (a fixed buffer of a CUDA graph).
void gather_vocab_into(const FusedWeights& weights, const at::Tensor& local, at::Tensor& full);

// The element type code of the fused kernels (common/element_type.h) for a tensor dtype.
int kernel_dtype(at::ScalarType dtype);

// The operations a block is made of. x is the residual stream (rows, emb_dim), one row per token
// of the step (batch * seq), updated in place by linear_add.
class BlockOps {
 public:
  virtual ~BlockOps() = default;
  // RMSNorm (norm1), then the fused Q/K/V product: (rows, emb_dim) -> (rows, (heads + 2 groups) * hd).
  virtual at::Tensor qkv(const at::Tensor& x, const FusedBlock& w) = 0;
  // Per-head RMSNorm and RoPE of the step's queries and keys, its keys and values into the KV
  // cache, and attention over everything the queries may see: -> (rows, heads * hd).
  virtual at::Tensor attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) = 0;
  // x += input w^T.
  virtual void linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) = 0;
  // RMSNorm (norm2), the [gate | up] product and SiLU(gate) * up: (rows, emb_dim) -> (rows, hidden_dim).
  virtual at::Tensor swiglu(const at::Tensor& x, const FusedBlock& w) = 0;
};

// Every block of the model over the residual stream x (rows, emb_dim), in place. With ranks, the
// output and down projections are summed across them (x is the same on every rank after each).
void run_blocks(const FusedWeights& weights, BlockOps& ops, at::Tensor& x);

}  // namespace qwen3
