#include "cuda/decode_ops.h"

#ifdef QWEN3_WITH_CUDA_KERNELS
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>

#include "cuda/kernels.h"
#include "model/layers.h"

namespace qwen3 {

bool CudaDecodeOps::gemv_fits(const ModelConfig& config, at::ScalarType dtype) {
  for (const int64_t k : {config.emb_dim, config.n_heads * config.head_dim, config.hidden_dim}) {
    if (!cuda::gemv_supported(kernel_dtype(dtype), static_cast<int>(k))) return false;
  }
  return true;
}

CudaDecodeOps::CudaDecodeOps(const ModelConfig& config, at::ScalarType dtype, const DecodeBuffers& buffers, bool one_row)
    : config_(config), buffers_(buffers), one_row_(one_row), dtype_(kernel_dtype(dtype)),
      stream_(c10::cuda::getCurrentCUDAStream().stream()) {
  const int64_t batch = buffers.batch, hd = config.head_dim;
  const at::TensorOptions opts = keys(0).options();  // the cache is in the compute dtype, on the step's device
  qkv_ = at::empty({batch, (config.n_heads + 2 * config.n_kv_groups) * hd}, opts);
  context_ = at::empty({batch, config.n_heads * hd}, opts);
  act_ = at::empty({batch, config.hidden_dim}, opts);
  if (!one_row) {
    normed_ = at::empty({batch, config.emb_dim}, opts);
    gate_up_ = at::empty({batch, 2 * config.hidden_dim}, opts);
  }
}

const at::Tensor& CudaDecodeOps::norm(const at::Tensor& x, const at::Tensor& scale) {
  cuda::rms_norm(dtype_, x.data_ptr(), scale.data_ptr<float>(), normed_.data_ptr(), static_cast<int>(buffers_.batch),
                 static_cast<int>(config_.emb_dim), static_cast<float>(kNormEps), stream_);
  return normed_;
}

void CudaDecodeOps::head(const FusedWeights& weights, const at::Tensor& x, at::Tensor& logits, const HeadBuffers& head) {
  at::Tensor out = weights.ranks ? head.local : logits;  // (batch, rows of the head): a handle on the same storage
  if (one_row_) {
    cuda::gemv_argmax(dtype_, weights.out_head.data_ptr(), x.data_ptr(), weights.final_norm.data_ptr<float>(), out.data_ptr(),
                      static_cast<int>(out.size(1)), static_cast<int>(config_.emb_dim), static_cast<float>(kNormEps), head.scratch, head.done,
                      head.next, nullptr, stream_);
  } else {
    at::mm_out(out, norm(x, weights.final_norm), weights.out_head.t());
  }
  if (weights.ranks) gather_vocab_into(weights, out, logits);
}

at::Tensor CudaDecodeOps::qkv(const at::Tensor& x, const FusedBlock& w) {
  if (one_row_) {
    cuda::gemv(dtype_, cuda::kGemvRmsNorm, w.w_qkv.data_ptr(), x.data_ptr(), w.norm1.data_ptr<float>(), nullptr, qkv_.data_ptr(),
               static_cast<int>(qkv_.size(1)), static_cast<int>(config_.emb_dim), static_cast<float>(kNormEps), stream_);
  } else {
    at::mm_out(qkv_, norm(x, w.norm1), w.w_qkv.t());
  }
  return qkv_;
}

at::Tensor CudaDecodeOps::attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) {
  const int64_t hd = config_.head_dim;
  const auto run = [&](int phase) {
    cuda::group_attention(dtype_, qkv.data_ptr(), config_.qk_norm ? w.q_norm.data_ptr<float>() : nullptr,
                          config_.qk_norm ? w.k_norm.data_ptr<float>() : nullptr, config_.qk_norm, buffers_.cos, buffers_.sin,
                          buffers_.position, buffers_.slots ? 1 : 0, buffers_.row_slots, keys(layer).data_ptr(), values(layer).data_ptr(),
                          context_.data_ptr(), buffers_.partials, buffers_.done, static_cast<int>(buffers_.batch),
                          static_cast<int>(config_.n_heads), static_cast<int>(config_.n_kv_groups), static_cast<int>(hd),
                          static_cast<int>(buffers_.capacity), static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))),
                          static_cast<float>(kNormEps), phase, stream_);
  };
  if (buffers_.rows_share_slots) {
    run(cuda::kAttendStoreOnly);
    run(cuda::kAttendReadOnly);
  } else {
    run(cuda::kAttendFused);
  }
  return context_;
}

void CudaDecodeOps::linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) {
  if (one_row_) {
    cuda::gemv(dtype_, cuda::kGemvPlain, w.data_ptr(), input.data_ptr(), nullptr, x.data_ptr(), x.data_ptr(), static_cast<int>(w.size(0)),
               static_cast<int>(w.size(1)), static_cast<float>(kNormEps), stream_);
  } else {
    x.addmm_(input, w.t());
  }
}

at::Tensor CudaDecodeOps::swiglu(const at::Tensor& x, const FusedBlock& w) {
  const int64_t F = config_.hidden_dim;
  if (one_row_) {
    cuda::gemv(dtype_, cuda::kGemvRmsNormSwiGLU, w.w_gate_up.data_ptr(), x.data_ptr(), w.norm2.data_ptr<float>(), nullptr, act_.data_ptr(),
               static_cast<int>(F), static_cast<int>(config_.emb_dim), static_cast<float>(kNormEps), stream_);
  } else {
    at::mm_out(gate_up_, norm(x, w.norm2), w.w_gate_up.t());
    cuda::silu_mul(dtype_, gate_up_.data_ptr(), act_.data_ptr(), static_cast<int>(buffers_.batch), static_cast<int>(F), stream_);
  }
  return act_;
}

}  // namespace qwen3
#endif
