#include "cpu/cpu_ops.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/silu.h>

#include <cmath>
#include <vector>

#include "cpu/gemv.h"
#include "cpu/int8_weights.h"
#include "cpu/kernels.h"
#include "model/fp8_weights.h"
#include "model/slot_cache.h"

namespace qwen3 {

at::Tensor CpuOps::norm(const at::Tensor& x, const at::Tensor& scale) {
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  const int64_t dim = in.size(-1);
  cpu::rms_norm(kernel_dtype(in.scalar_type()), in.data_ptr(), scale.data_ptr<float>(), out.data_ptr(), in.numel() / dim, dim,
                static_cast<float>(kNormEps));
  return out;
}

at::Tensor CpuOps::project(const at::Tensor& x, const at::Tensor& w) {
  // The AVX512 kernels where they apply: a batch-1 step streams bfloat16 weights through the BF16
  // dot products; int8 rows go through the VNNI ones for any number of rows. FP8 rows have no
  // CPU kernel: ATen's path.
  if (is_fp8_rows(w)) return AtenOps::project(x, w);
  at::Tensor y = is_int8_rows(w) ? int8_gemm(x, w) : cpu_gemv(x, w);
  return y.defined() ? y : AtenOps::project(x, w);
}

at::Tensor CpuOps::silu_mul(const at::Tensor& gate_up) {
  const int64_t hidden = gate_up.size(-1) / 2, rows = gate_up.numel() / gate_up.size(-1);
  if (rows > 1) {
    // A prompt's rows: ATen's vectorised SiLU and product (each rounded, as in the reference)
    // beat the loop's scalar exp there.
    return at::silu(gate_up.narrow(-1, 0, hidden)).mul_(gate_up.narrow(-1, hidden, hidden)).view({rows, hidden});
  }
  at::Tensor act = at::empty({rows, hidden}, gate_up.options());  // (rows, hidden_dim)
  cpu::silu_mul(kernel_dtype(gate_up.scalar_type()), gate_up.data_ptr(), act.data_ptr(), rows, hidden);
  return act;
}

at::Tensor CpuOps::slot_rows_attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) {
  const SlotRows& s = *step_.slots;
  const int64_t rows = step_.batch, hd = config_.head_dim, heads = config_.n_heads, groups = config_.n_kv_groups;
  const int dt = kernel_dtype(qkv.scalar_type());
  at::Tensor q, k, v;
  empty_heads(qkv, q, k, v);  // (rows, heads or groups, 1, hd)
  const float* q_norm = config_.qk_norm ? w.q_norm.data_ptr<float>() : nullptr;
  const float* k_norm = config_.qk_norm ? w.k_norm.data_ptr<float>() : nullptr;
  const float* cos = s.cos_table.data_ptr<float>();
  const float* sin = s.sin_table.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    // Each row as a one-token step of its own: the same loop and rounding as a batch decode step.
    const int64_t at = s.positions[static_cast<size_t>(r)] * hd;
    cpu::qk_norm_rope(dt, qkv.narrow(0, r, 1).data_ptr(), q_norm, k_norm, config_.qk_norm, cos + at, sin + at, q.narrow(0, r, 1).data_ptr(),
                      k.narrow(0, r, 1).data_ptr(), v.narrow(0, r, 1).data_ptr(), 1, 1, heads, groups, hd, static_cast<float>(kNormEps));
  }
  store_slot_rows(layer, k, v);
  const at::Tensor& keys = s.cache->keys(layer);  // (slots, groups, capacity, hd), contiguous
  std::vector<int64_t> lengths(s.positions.size()), bases(s.slots.size());
  for (size_t r = 0; r < lengths.size(); ++r) {
    lengths[r] = s.positions[r] + 1;
    bases[r] = s.slots[r] * keys.stride(0);
  }
  at::Tensor out = at::empty_like(q);  // (rows, heads, 1, hd)
  cpu::decode_attention_rows(dt, q.data_ptr(), keys.data_ptr(), s.cache->values(layer).data_ptr(), out.data_ptr(), rows, heads, groups,
                             lengths.data(), bases.data(), hd, keys.stride(1), static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))));
  return out.view({rows, heads * hd});
}

at::Tensor CpuOps::attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) {
  if (step_.slots) return slot_rows_attention(layer, qkv, w);
  const int64_t batch = step_.batch, seq = step_.seq, hd = config_.head_dim, heads = config_.n_heads, groups = config_.n_kv_groups;
  const int dt = kernel_dtype(qkv.scalar_type());
  at::Tensor q, k, v;
  if (step_.padding) {
    // Rows at their own positions: the ATen norm and RoPE take per-row cos/sin.
    split_norm_rope(qkv, w, q, k, v);
  } else {
    // Per-head norm and RoPE in one loop.
    empty_heads(qkv, q, k, v);
    const float* q_norm = config_.qk_norm ? w.q_norm.data_ptr<float>() : nullptr;
    const float* k_norm = config_.qk_norm ? w.k_norm.data_ptr<float>() : nullptr;
    cpu::qk_norm_rope(dt, qkv.data_ptr(), q_norm, k_norm, config_.qk_norm, step_.cos.data_ptr<float>(), step_.sin.data_ptr<float>(),
                      q.data_ptr(), k.data_ptr(), v.data_ptr(), batch, seq, heads, groups, hd, static_cast<float>(kNormEps));
  }
  const auto [keys, values] = step_.store(layer, k, v);  // (batch, groups, keys, hd) each
  if (step_.padding) return merge_heads(sdpa(q, keys, values));
  if (seq > 1) {
    // A prompt: causal attention a block of queries at a time, over whole query heads.
    const int64_t repeat = heads / groups;
    return merge_heads(repeat > 1 ? causal_attention_blocks(q, keys.repeat_interleave(repeat, 1), values.repeat_interleave(repeat, 1), step_.start)
                                  : causal_attention_blocks(q, keys, values, step_.start));
  }
  // One new token: a plain loop, where SDPA's blocked kernel spends ~0.1 ms a layer setting up
  // for a single query row.
  if (keys.stride(3) != 1 || keys.stride(2) != hd) return merge_heads(sdpa(q, keys, values));
  at::Tensor out = at::empty_like(q);  // (batch, heads, 1, hd)
  cpu::decode_attention(dt, q.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), batch, heads, groups, keys.size(2), hd,
                        keys.stride(0), keys.stride(1), static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))));
  return out.view({batch, heads * hd});
}

}  // namespace qwen3
