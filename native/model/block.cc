#include "model/block.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>

#include "common/element_type.h"
#include "cpu/int8_weights.h"
#include "model/fp8_weights.h"
#include "parallel/collectives.h"

namespace qwen3 {

FusedWeights FusedWeights::fuse(Weights&& w) {
  FusedWeights f;
  f.tok_emb = std::move(w.tok_emb);
  for (BlockWeights& b : w.blocks) {
    FusedBlock fb;
    fb.w_qkv = at::cat({b.w_query, b.w_key, b.w_value}, 0);
    b.w_query = b.w_key = b.w_value = at::Tensor();
    fb.w_gate_up = at::cat({b.fc1, b.fc2}, 0);
    b.fc1 = b.fc2 = at::Tensor();
    fb.out_proj = std::move(b.out_proj);
    fb.q_norm = std::move(b.q_norm);
    fb.k_norm = std::move(b.k_norm);
    fb.fc3 = std::move(b.fc3);
    fb.norm1 = std::move(b.norm1);
    fb.norm2 = std::move(b.norm2);
    f.blocks.push_back(std::move(fb));
  }
  w.blocks.clear();
  f.final_norm = std::move(w.final_norm);
  f.out_head = std::move(w.out_head);
  return f;
}

void FusedWeights::quantize_int8() {
  for (FusedBlock& b : blocks) {
    for (at::Tensor* m : {&b.w_qkv, &b.out_proj, &b.w_gate_up, &b.fc3}) *m = quantize_rows_int8(*m);
  }
  out_head = quantize_rows_int8(out_head);
}

void FusedWeights::quantize_fp8() {
  for (FusedBlock& b : blocks) {
    for (at::Tensor* m : {&b.w_qkv, &b.out_proj, &b.w_gate_up, &b.fc3}) *m = quantize_rows_fp8(*m);
  }
  out_head = quantize_rows_fp8(out_head);
}

int64_t FusedWeights::parameter_bytes() const {
  // A tied head is the embedding table or, on one rank, a slice of it.
  const bool tied = out_head.defined() && out_head.storage().is_alias_of(tok_emb.storage());
  int64_t total = tok_emb.nbytes() + final_norm.nbytes() + (tied ? 0 : out_head.nbytes());
  for (const FusedBlock& b : blocks) {
    for (const at::Tensor* t : {&b.w_qkv, &b.out_proj, &b.q_norm, &b.k_norm, &b.w_gate_up, &b.fc3, &b.norm1, &b.norm2}) {
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
    }
  }
  return total;
}

int kernel_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat ? kFloat32 : dtype == at::kBFloat16 ? kBFloat16 : kFloat16;
}

at::Tensor gather_vocab(const FusedWeights& weights, const at::Tensor& local) {
  if (!weights.ranks) return local;
  at::Tensor full = at::empty({local.size(0), local.size(1) * weights.ranks->world()}, local.options());
  gather_vocab_into(weights, local, full);
  return full;
}

void gather_vocab_into(const FusedWeights& weights, const at::Tensor& local, at::Tensor& full) {
  const int64_t world = weights.ranks->world(), rows = local.size(0), part = local.size(1);
  const at::Tensor mine = local.contiguous();
  if (rows == 1) {
    weights.ranks->all_gather(full, mine);  // one row: rank-major is the vocabulary's order
    return;
  }
  at::Tensor parts = at::empty({world, rows, part}, local.options());  // (world, rows, vocab / world)
  weights.ranks->all_gather(parts, mine);
  full.view({rows, world, part}).copy_(parts.permute({1, 0, 2}));
}

namespace {

// x += input w^T. With ranks, w holds this rank's columns (row-parallel): rank 0 adds its part to
// the residual stream, the others start from zero, and the sum across ranks is x plus every part.
void add_projection(const FusedWeights& weights, BlockOps& ops, at::Tensor& x, const at::Tensor& input, const at::Tensor& w) {
  if (weights.ranks && weights.ranks->rank() != 0) x.zero_();
  ops.linear_add(x, input, w);
  if (weights.ranks) weights.ranks->all_reduce_sum(x);
}

}  // namespace

void run_blocks(const FusedWeights& weights, BlockOps& ops, at::Tensor& x) {
  for (size_t l = 0; l < weights.blocks.size(); ++l) {
    const FusedBlock& w = weights.blocks[l];
    // Attention: queries, keys and values of the normed stream in one product.
    const at::Tensor qkv = ops.qkv(x, w);  // (rows, (heads + 2 groups) * hd)
    // Per-head norm and RoPE, the KV cache, attention.
    const at::Tensor context = ops.attention(static_cast<int64_t>(l), qkv, w);  // (rows, heads * hd)
    // Output projection onto the residual stream.
    add_projection(weights, ops, x, context, w.out_proj);
    // SwiGLU feed-forward: gate and up in one product of the normed stream, SiLU(gate) * up.
    const at::Tensor act = ops.swiglu(x, w);  // (rows, hidden_dim)
    // Down projection onto the residual stream.
    add_projection(weights, ops, x, act, w.fc3);
  }
}

}  // namespace qwen3
