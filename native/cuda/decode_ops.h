// The block's operations for one decode step on CUDA. Batch 1: five kernels a block, GEMVs that
// fold RMSNorm into their input and the residual add or SwiGLU into their output, and one
// attention kernel that also norms, ropes and caches the step's heads. 2 to 8 rows (FP8 rows: 2
// to 64): products on the tensor cores that read the weights once for all rows
// (cuda::batch_product, with the residual add or SwiGLU in their output; up to 4 rows the RMSNorm
// made inside the product, else by a separate kernel), and the same attention kernel; more rows
// and float32: cuBLAS products (the residual added by cuBLAS) and a separate SiLU*up kernel.
// Built only where the fused kernels are.
#pragma once

#include "model/block.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/slot_cache.h"

namespace qwen3 {

// The decode step's fixed buffers that the kernels read besides the weights; the decoder owns
// them, and a CUDA graph records their addresses.
struct DecodeBuffers {
  int64_t batch = 0, capacity = 0;
  const int64_t* position = nullptr;  // (1,): this step's position; (batch,) for a ragged step
  const float* cos = nullptr;         // (capacity, head_dim)
  const float* sin = nullptr;         // (capacity, head_dim)
  KVCache* cache = nullptr;           // (batch, groups, capacity, head_dim) per layer
  float* partials = nullptr;          // split attention scratch (cuda::attention_partials_floats)
  int* done = nullptr;                // (batch, groups) split counters, zero between steps
  // A ragged step over sequence slots instead of `cache`: row r is one token of slot
  // row_slots[r] at position[r] (negative: a padding row).
  SlotCache* slots = nullptr;          // (slots, groups, capacity, head_dim) per layer
  const int64_t* row_slots = nullptr;  // (batch,)
  // Several rows may be tokens of one slot (a prompt run as rows, each attending to the ones
  // before it): every row's key and value are stored before any row attends.
  bool rows_share_slots = false;
};

// What the vocabulary head of a decode step writes besides the logits: a tensor-parallel rank's
// own rows of them, and for batch 1 the head GEMV's scratch and its argmax (cuda::gemv_argmax).
struct HeadBuffers {
  at::Tensor local;       // (batch, this rank's rows of the head); undefined on one device
  float* scratch = nullptr;  // batch 1: cuda::head_scratch_floats(vocab) floats
  int* done = nullptr;       // batch 1: (1,), zero between steps
  int64_t* next = nullptr;   // batch 1: (1,) the argmax of this rank's rows
};

// Whether cuda::batch_product takes the product of `input` (rows, k) by W into out (rows, n_out):
// every buffer contiguous and 16-byte aligned; W in the compute dtype up to the rows where it
// beats cuBLAS, FP8 rows up to the kernel's most (cuBLAS would take them only widened in memory,
// a slice at a time). Batched decode steps and short prompts (CudaPrefillOps) ask it.
bool batch_fits(int dtype, const at::Tensor& w, const at::Tensor& input, const at::Tensor& out, int64_t n_out);

class CudaDecodeOps : public BlockOps {
 public:
  // True where a batch-1 step can run as GEMVs (every product's input fits the kernel for the
  // weights' format: the compute dtype, or FP8 rows).
  static bool gemv_fits(const ModelConfig& config, at::ScalarType dtype, bool fp8_rows);

  // Allocates the step's activations; one_row picks the batch-1 GEMV path.
  CudaDecodeOps(const ModelConfig& config, at::ScalarType dtype, const DecodeBuffers& buffers, bool one_row);

  at::Tensor qkv(const at::Tensor& x, const FusedBlock& w) override;
  at::Tensor attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) override;
  void linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) override;
  at::Tensor swiglu(const at::Tensor& x, const FusedBlock& w) override;

  // RMSNorm of x (batch, emb_dim) into the step's normed buffer (the cuBLAS path's head uses it).
  const at::Tensor& norm(const at::Tensor& x, const at::Tensor& scale);
  // out = (RMSNorm(x) * scale) W^T (swiglu: SwiGLU of [gate | up] products): the rms_norm kernel
  // into the normed buffer, then cuda::batch_product where `use_kernel` allows it and the shapes
  // fit. False where the product did not run: the normed buffer is then ready for cuBLAS.
  bool batch_normed(at::Tensor& out, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& w, bool swiglu, int64_t n_out,
                    bool use_kernel);
  // The final norm and the vocabulary head of x (batch, emb_dim) into logits (batch, vocab):
  // batch 1 through the head's GEMV kernel, FP8 rows for up to 64 rows through
  // cuda::batch_product, else cuBLAS; a tensor-parallel rank computes its own rows into head.local
  // and gathers them from every rank.
  void head(const FusedWeights& weights, const at::Tensor& x, at::Tensor& logits, const HeadBuffers& head);

 private:
  const at::Tensor& keys(int64_t layer) const { return buffers_.slots ? buffers_.slots->keys(layer) : buffers_.cache->keys(layer); }
  const at::Tensor& values(int64_t layer) const { return buffers_.slots ? buffers_.slots->values(layer) : buffers_.cache->values(layer); }

  ModelConfig config_;
  DecodeBuffers buffers_;
  bool one_row_;
  int dtype_;
  void* stream_;
  at::Tensor qkv_;      // (batch, (heads + 2 groups) * hd)
  at::Tensor context_;  // (batch, heads * hd)
  at::Tensor act_;      // (batch, hidden_dim)
  at::Tensor normed_;   // (batch, emb_dim); cuBLAS path only (batch 1 norms inside its GEMVs)
  at::Tensor gate_up_;  // (batch, 2 * hidden_dim); cuBLAS path only
};

}  // namespace qwen3
