#include "cuda/decode_ops.h"

#ifdef QWEN3_WITH_CUDA_KERNELS
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>

#include "cuda/kernels.h"
#include "model/fp8_weights.h"
#include "model/layers.h"

namespace qwen3 {

namespace {

// The batch-1 product of W's format: cuda::gemv, or cuda::gemv_fp8 for FP8 rows.
void gemv(int dtype, cuda::GemvInput input, const at::Tensor& w, const void* x, const float* norm, const void* residual, void* y, int n_out,
          int k, float eps, void* stream) {
  (is_fp8_rows(w) ? cuda::gemv_fp8 : cuda::gemv)(dtype, input, w.data_ptr(), x, norm, residual, y, n_out, k, eps, stream);
}

// out = input W^T for any rows (cuBLAS; FP8 rows widened a slice at a time).
void product(at::Tensor& out, const at::Tensor& input, const at::Tensor& w) {
  if (is_fp8_rows(w)) {
    fp8_linear_out(out, input, w);
  } else {
    at::mm_out(out, input, w.t());
  }
}

// The input width of W's products (FP8 rows carry their scale after the weights).
int64_t input_width(const at::Tensor& w) { return is_fp8_rows(w) ? fp8_input_width(w) : w.size(1); }

}  // namespace

bool batch_fits(int dtype, const at::Tensor& w, const at::Tensor& input, const at::Tensor& out, int64_t n_out) {
  const auto aligned = [](const at::Tensor& t) { return t.is_contiguous() && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; };
  const int64_t most = is_fp8_rows(w) ? cuda::kBatchProductMaxRows : cuda::kBatchProductFasterRows;
  return aligned(w) && aligned(input) && aligned(out) && input.dim() == 2 && input.size(0) <= most &&
         cuda::batch_product_supported(dtype, static_cast<int>(input.size(0)), static_cast<int>(n_out), static_cast<int>(input_width(w)));
}

bool CudaDecodeOps::gemv_fits(const ModelConfig& config, at::ScalarType dtype, bool fp8_rows) {
  for (const int64_t k : {config.emb_dim, config.n_heads * config.head_dim, config.hidden_dim}) {
    const int dt = kernel_dtype(dtype), width = static_cast<int>(k);
    if (!(fp8_rows ? cuda::gemv_fp8_supported(dt, width) : cuda::gemv_supported(dt, width))) return false;
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

bool CudaDecodeOps::batch_normed(at::Tensor& out, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& w, bool swiglu, int64_t n_out,
                                 bool use_kernel) {
  const at::Tensor& input = norm(x, scale);  // (batch, emb_dim)
  if (!use_kernel || !batch_fits(dtype_, w, input, out, n_out)) return false;
  cuda::batch_product(dtype_, swiglu, is_fp8_rows(w), w.data_ptr(), input.data_ptr(), nullptr, out.data_ptr(), static_cast<int>(buffers_.batch),
                      static_cast<int>(n_out), static_cast<int>(config_.emb_dim), stream_);
  return true;
}

void CudaDecodeOps::head(const FusedWeights& weights, const at::Tensor& x, at::Tensor& logits, const HeadBuffers& head) {
  at::Tensor out = weights.ranks ? head.local : logits;  // (batch, rows of the head): a handle on the same storage
  if (one_row_) {
    cuda::gemv_argmax(dtype_, is_fp8_rows(weights.out_head), weights.out_head.data_ptr(), x.data_ptr(), weights.final_norm.data_ptr<float>(),
                      out.data_ptr(), static_cast<int>(out.size(1)), static_cast<int>(config_.emb_dim), static_cast<float>(kNormEps),
                      head.scratch, head.done, head.next, nullptr, stream_);
  } else if (!batch_normed(out, x, weights.final_norm, weights.out_head, false, out.size(1),
                           // FP8 rows only: a head in the compute dtype keeps cuBLAS, which the
                           // batch kernel was not measured against at the head's width.
                           is_fp8_rows(weights.out_head))) {
    product(out, normed_, weights.out_head);
  }
  if (weights.ranks) gather_vocab_into(weights, out, logits);
}

at::Tensor CudaDecodeOps::qkv(const at::Tensor& x, const FusedBlock& w) {
  if (one_row_) {
    gemv(dtype_, cuda::kGemvRmsNorm, w.w_qkv, x.data_ptr(), w.norm1.data_ptr<float>(), nullptr, qkv_.data_ptr(), static_cast<int>(qkv_.size(1)),
         static_cast<int>(config_.emb_dim), static_cast<float>(kNormEps), stream_);
  } else if (!batch_normed(qkv_, x, w.norm1, w.w_qkv, false, qkv_.size(1), true)) {
    product(qkv_, normed_, w.w_qkv);
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
    // The one-row QKV products let their dependents start only after their own wait, which is
    // what the early phase needs (kernels.h).
    run(one_row_ ? cuda::kAttendFusedEarly : cuda::kAttendFused);
  }
  return context_;
}

void CudaDecodeOps::linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) {
  if (one_row_) {
    gemv(dtype_, cuda::kGemvPlain, w, input.data_ptr(), nullptr, x.data_ptr(), x.data_ptr(), static_cast<int>(w.size(0)),
         static_cast<int>(input_width(w)), static_cast<float>(kNormEps), stream_);
  } else if (batch_fits(dtype_, w, input, x, w.size(0))) {
    // The rounded product, then the sum, rounded again (as the one-row kernel).
    cuda::batch_product(dtype_, false, is_fp8_rows(w), w.data_ptr(), input.data_ptr(), x.data_ptr(), x.data_ptr(),
                        static_cast<int>(buffers_.batch), static_cast<int>(w.size(0)), static_cast<int>(input_width(w)), stream_);
  } else if (is_fp8_rows(w)) {
    x.add_(fp8_linear(input, w));  // the rounded product, then the sum (as the one-row kernel)
  } else {
    x.addmm_(input, w.t());
  }
}

at::Tensor CudaDecodeOps::swiglu(const at::Tensor& x, const FusedBlock& w) {
  const int64_t F = config_.hidden_dim;
  if (one_row_) {
    gemv(dtype_, cuda::kGemvRmsNormSwiGLU, w.w_gate_up, x.data_ptr(), w.norm2.data_ptr<float>(), nullptr, act_.data_ptr(), static_cast<int>(F),
         static_cast<int>(config_.emb_dim), static_cast<float>(kNormEps), stream_);
  } else if (!batch_normed(act_, x, w.norm2, w.w_gate_up, true, F, true)) {
    product(gate_up_, normed_, w.w_gate_up);
    cuda::silu_mul(dtype_, gate_up_.data_ptr(), act_.data_ptr(), static_cast<int>(buffers_.batch), static_cast<int>(F), stream_);
  }
  return act_;
}

}  // namespace qwen3
#endif
