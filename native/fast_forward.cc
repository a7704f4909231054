#include "fast_forward.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/silu.h>

#include "cpu_gemv.h"
#include "cpu_kernels.h"
#include "cuda_graph_decoder.h"
#include "layers.h"

#ifdef QWEN3_WITH_CUDA_KERNELS
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_kernels.h"
#endif

namespace qwen3 {

int kernel_dtype(at::ScalarType dtype) { return dtype == at::kFloat ? 0 : dtype == at::kBFloat16 ? 1 : 2; }

FastForward::FastForward(const ModelConfig& config, Weights&& w) : config_(config) {
  tok_emb_ = std::move(w.tok_emb);
  for (BlockWeights& b : w.blocks) {
    FusedBlock f;
    f.w_qkv = at::cat({b.w_query, b.w_key, b.w_value}, 0);
    b.w_query = b.w_key = b.w_value = at::Tensor();  // free each source as soon as it is copied
    f.w_gate_up = at::cat({b.fc1, b.fc2}, 0);
    b.fc1 = b.fc2 = at::Tensor();
    f.out_proj = std::move(b.out_proj);
    f.q_norm = std::move(b.q_norm);
    f.k_norm = std::move(b.k_norm);
    f.fc3 = std::move(b.fc3);
    f.norm1 = std::move(b.norm1);
    f.norm2 = std::move(b.norm2);
    blocks_.push_back(std::move(f));
  }
  w.blocks.clear();
  final_norm_ = std::move(w.final_norm);
  out_head_ = std::move(w.out_head);
  fused_ = tok_emb_.is_cpu();
#ifdef QWEN3_WITH_CUDA_KERNELS
  if (tok_emb_.is_cuda() && CudaGraphDecoder::fused_kernels(config_)) {
    fused_ = true;
    zero_position_ = at::zeros({1}, tok_emb_.options().dtype(at::kLong));
  }
#endif
}

at::Tensor FastForward::project(const at::Tensor& x, const at::Tensor& w) const {
  // A batch-1 bfloat16 step on the CPU streams the weights through the AVX512-BF16 kernel.
  if (x.device().is_cpu()) {
    at::Tensor y = cpu_gemv(x, w);
    if (y.defined()) return y;
  }
  return at::linear(x, w);
}

at::Tensor FastForward::norm(const at::Tensor& x, const at::Tensor& scale) const {
  if (!fused_) return rms_norm(x, scale);
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  const int64_t dim = in.size(-1), rows = in.numel() / dim;
  const int dt = kernel_dtype(in.scalar_type());
  const auto eps = static_cast<float>(kNormEps);
#ifdef QWEN3_WITH_CUDA_KERNELS
  if (in.is_cuda()) {
    cuda::rms_norm(dt, in.data_ptr(), scale.data_ptr<float>(), out.data_ptr(), static_cast<int>(rows), static_cast<int>(dim), eps,
                   c10::cuda::getCurrentCUDAStream().stream());
    return out;
  }
#endif
  cpu::rms_norm(dt, in.data_ptr(), scale.data_ptr<float>(), out.data_ptr(), rows, dim, eps);
  return out;
}

void FastForward::qk_norm_rope(const at::Tensor& qkv, const FusedBlock& b, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& q,
                               at::Tensor& k, at::Tensor& v) const {
  const int64_t batch = q.size(0), heads = q.size(1), seq = q.size(2), hd = q.size(3), groups = k.size(1);
  const int dt = kernel_dtype(qkv.scalar_type());
  const float* q_norm = config_.qk_norm ? b.q_norm.data_ptr<float>() : nullptr;
  const float* k_norm = config_.qk_norm ? b.k_norm.data_ptr<float>() : nullptr;
  const auto eps = static_cast<float>(kNormEps);
#ifdef QWEN3_WITH_CUDA_KERNELS
  if (qkv.is_cuda()) {
    // cos/sin start at the first token's position, so the kernel's position base is 0 and
    // token t lands in slot t of k and v.
    cuda::qk_norm_rope_cache(dt, qkv.data_ptr(), q_norm, k_norm, config_.qk_norm, cos.data_ptr<float>(), sin.data_ptr<float>(),
                             zero_position_.data_ptr<int64_t>(), static_cast<int>(seq), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                             static_cast<int>(batch), static_cast<int>(heads), static_cast<int>(groups), static_cast<int>(hd),
                             static_cast<int>(seq), eps, c10::cuda::getCurrentCUDAStream().stream());
    return;
  }
#endif
  cpu::qk_norm_rope(dt, qkv.data_ptr(), q_norm, k_norm, config_.qk_norm, cos.data_ptr<float>(), sin.data_ptr<float>(), q.data_ptr(),
                    k.data_ptr(), v.data_ptr(), batch, seq, heads, groups, hd, eps);
}

at::Tensor FastForward::silu_mul(const at::Tensor& gate_up) const {
  const int64_t hidden = gate_up.size(-1) / 2, rows = gate_up.numel() / gate_up.size(-1);
  if (gate_up.is_cpu() && rows > 1) {
    // A prompt's rows on the CPU: ATen's vectorised SiLU and product (each rounded, as in the
    // reference) beat the loop's scalar exp by about 2x there.
    return at::silu(gate_up.narrow(-1, 0, hidden)).mul_(gate_up.narrow(-1, hidden, hidden)).view({rows, hidden});
  }
  at::Tensor act = at::empty({rows, hidden}, gate_up.options());  // (rows, hidden_dim)
  const int dt = kernel_dtype(gate_up.scalar_type());
#ifdef QWEN3_WITH_CUDA_KERNELS
  if (gate_up.is_cuda()) {
    cuda::silu_mul(dt, gate_up.data_ptr(), act.data_ptr(), static_cast<int>(rows), static_cast<int>(hidden),
                   c10::cuda::getCurrentCUDAStream().stream());
    return act;
  }
#endif
  cpu::silu_mul(dt, gate_up.data_ptr(), act.data_ptr(), rows, hidden);
  return act;
}

void FastForward::add_projection(at::Tensor& residual, const at::Tensor& input, const at::Tensor& w) const {
  if (residual.is_cuda()) {
    residual.addmm_(input, w.t());  // cuBLAS adds the residual in its epilogue
  } else {
    residual.add_(project(input, w));  // rounded product, then the add: the reference's order
  }
}

at::Tensor FastForward::hidden(const at::Tensor& ids, const at::Tensor& cos, const at::Tensor& sin, const AttendFn& attend) const {
  const int64_t batch = ids.size(0), seq = ids.size(1), hd = config_.head_dim;
  const int64_t heads = config_.n_heads, groups = config_.n_kv_groups;
  // Token embeddings.
  at::Tensor x = at::embedding(tok_emb_, ids);  // (batch, seq, emb_dim)
  // Rows with their own positions (cos of 3 dims) take the ATen path.
  if (fused_ && cos.dim() == 2) return hidden_fused(x, cos, sin, attend);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const FusedBlock& b = blocks_[l];
    // One matrix product for queries, keys and values, then split heads.
    const at::Tensor qkv = project(norm(x, b.norm1), b.w_qkv);  // (batch, seq, (heads + 2 groups) * hd)
    const auto parts = qkv.split_with_sizes({heads * hd, groups * hd, groups * hd}, -1);
    at::Tensor q = parts[0].view({batch, seq, heads, hd}).transpose(1, 2);   // (batch, heads, seq, hd)
    at::Tensor k = parts[1].view({batch, seq, groups, hd}).transpose(1, 2);  // (batch, groups, seq, hd)
    const at::Tensor v = parts[2].view({batch, seq, groups, hd}).transpose(1, 2);  // (batch, groups, seq, hd)
    // Per-head RMSNorm and RoPE, as in the reference.
    if (config_.qk_norm) {
      q = rms_norm(q, b.q_norm);
      k = rms_norm(k, b.k_norm);
    }
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
    // Attention and output projection, with the residual connection.
    const at::Tensor context = attend(static_cast<int64_t>(l), q, k, v);  // (batch, heads, seq, hd)
    x = project(context.transpose(1, 2).reshape({batch, seq, heads * hd}), b.out_proj) + x;
    // SwiGLU with gate and up from one matrix product, with the residual connection.
    const auto gate_up = project(norm(x, b.norm2), b.w_gate_up).chunk(2, -1);  // 2 x (batch, seq, hidden_dim)
    x = project(at::silu(gate_up[0]) * gate_up[1], b.fc3) + x;
  }
  return x;
}

// The same blocks with fused kernels (CUDA or CPU): about 14 operations a block instead of
// about 55.
at::Tensor FastForward::hidden_fused(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin, const AttendFn& attend) const {
  const int64_t batch = x.size(0), seq = x.size(1), hd = config_.head_dim, D = config_.emb_dim;
  const int64_t heads = config_.n_heads, groups = config_.n_kv_groups;
  at::Tensor residual = x.view({batch * seq, D});  // (batch * seq, emb_dim), updated in place
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const FusedBlock& b = blocks_[l];
    // Queries, keys and values of the normed residual stream.
    const at::Tensor qkv = project(norm(x, b.norm1), b.w_qkv);  // (batch, seq, (heads + 2 groups) * hd)
    // Per-head norm and RoPE in one kernel.
    at::Tensor q = at::empty({batch, heads, seq, hd}, x.options());  // (batch, heads, seq, hd)
    at::Tensor k = at::empty({batch, groups, seq, hd}, x.options());  // (batch, groups, seq, hd)
    at::Tensor v = at::empty({batch, groups, seq, hd}, x.options());  // (batch, groups, seq, hd)
    qk_norm_rope(qkv, b, cos, sin, q, k, v);
    // Attention, then the output projection added onto the residual stream.
    const at::Tensor context = attend(static_cast<int64_t>(l), q, k, v);  // (batch, heads, seq, hd)
    add_projection(residual, context.transpose(1, 2).reshape({batch * seq, heads * hd}), b.out_proj);
    // SwiGLU: gate and up from one product, SiLU*up in one kernel, down added onto the stream.
    const at::Tensor gate_up = project(norm(x, b.norm2), b.w_gate_up);  // (batch, seq, 2 * hidden_dim)
    add_projection(residual, silu_mul(gate_up), b.fc3);
  }
  return x;
}

at::Tensor FastForward::logits(const at::Tensor& hidden) const {
  return project(norm(hidden, final_norm_), out_head_);
}

int64_t FastForward::parameter_bytes() const {
  int64_t total = tok_emb_.nbytes() + final_norm_.nbytes() + out_head_.nbytes();
  for (const FusedBlock& b : blocks_) {
    for (const at::Tensor* t : {&b.w_qkv, &b.out_proj, &b.q_norm, &b.k_norm, &b.w_gate_up, &b.fc3, &b.norm1, &b.norm2}) {
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
    }
  }
  return total;
}

}  // namespace qwen3
