#include "cuda/prefill_ops.h"

#ifdef QWEN3_WITH_CUDA_KERNELS
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "cuda/decode_ops.h"
#include "cuda/kernels.h"
#include "model/fp8_weights.h"

namespace qwen3 {
namespace {
void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
}  // namespace

CudaPrefillOps::CudaPrefillOps(const ModelConfig& config, StepShape step)
    : AtenOps(config, std::move(step)), zero_position_(at::zeros({1}, step_.cos.options().dtype(at::kLong))) {
  grouped_sdpa_ = true;  // the flash kernels read each key/value head for its whole group
}

void CudaPrefillOps::linear_add(at::Tensor& x, const at::Tensor& input, const at::Tensor& w) {
  if (is_fp8_rows(w)) {
    x.add_(project(input, w));  // the rounded product, then the sum (as the one-row kernel)
  } else {
    x.addmm_(input, w.t());
  }
}

at::Tensor CudaPrefillOps::project(const at::Tensor& x, const at::Tensor& w) {
  if (!is_fp8_rows(w)) return AtenOps::project(x, w);
  // FP8 rows for a prompt of up to kBatchProductMaxRows tokens in all: multiplied as they are on
  // the tensor cores, as a batched decode step multiplies them. fp8_linear would first widen W to
  // the compute dtype in memory, a slice at a time, for cuBLAS: five bytes moved for each of W's.
  const int64_t k = fp8_input_width(w), rows = x.numel() / k, n_out = w.size(0);
  const int dtype = kernel_dtype(x.scalar_type());
  // The rows and dtype first, so that a long or float32 prompt makes no copies below.
  if (rows > cuda::kBatchProductMaxRows ||
      !cuda::batch_product_supported(dtype, static_cast<int>(rows), static_cast<int>(n_out), static_cast<int>(k))) {
    return AtenOps::project(x, w);
  }
  const at::Tensor input = x.reshape({rows, k}).contiguous();  // (rows, k)
  at::Tensor out = at::empty({rows, n_out}, x.options());       // (rows, n_out)
  if (!batch_fits(dtype, w, input, out, n_out)) return AtenOps::project(x, w);
  cuda::batch_product(dtype, false, true, w.data_ptr(), input.data_ptr(), nullptr, out.data_ptr(), static_cast<int>(rows),
                      static_cast<int>(n_out), static_cast<int>(k), current_stream());
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = n_out;
  return out.view(shape);  // (..., n_out)
}

at::Tensor CudaPrefillOps::norm(const at::Tensor& x, const at::Tensor& scale) {
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  const int64_t dim = in.size(-1);
  cuda::rms_norm(kernel_dtype(in.scalar_type()), in.data_ptr(), scale.data_ptr<float>(), out.data_ptr(), static_cast<int>(in.numel() / dim),
                 static_cast<int>(dim), static_cast<float>(kNormEps), current_stream());
  return out;
}

at::Tensor CudaPrefillOps::silu_mul(const at::Tensor& gate_up) {
  const int64_t hidden = gate_up.size(-1) / 2, rows = gate_up.numel() / gate_up.size(-1);
  at::Tensor act = at::empty({rows, hidden}, gate_up.options());  // (rows, hidden_dim)
  cuda::silu_mul(kernel_dtype(gate_up.scalar_type()), gate_up.data_ptr(), act.data_ptr(), static_cast<int>(rows), static_cast<int>(hidden),
                 current_stream());
  return act;
}

at::Tensor CudaPrefillOps::attention(int64_t layer, const at::Tensor& qkv, const FusedBlock& w) {
  const int64_t batch = step_.batch, seq = step_.seq, hd = config_.head_dim, heads = config_.n_heads, groups = config_.n_kv_groups;
  at::Tensor q, k, v;
  if (step_.padding) {
    // Rows at their own positions: the ATen norm and RoPE take per-row cos/sin.
    split_norm_rope(qkv, w, q, k, v);
  } else {
    // Per-head norm and RoPE in one kernel; token t lands in slot t of k and v. The queries lie
    // token-major in memory, as the flash kernels lay out their output after them, so that
    // merge_heads below is a view instead of a copy of the whole context.
    empty_heads(qkv, q, k, v, /*token_major=*/true);
    cuda::qk_norm_rope_cache(kernel_dtype(qkv.scalar_type()), qkv.data_ptr(), config_.qk_norm ? w.q_norm.data_ptr<float>() : nullptr,
                             config_.qk_norm ? w.k_norm.data_ptr<float>() : nullptr, config_.qk_norm, step_.cos.data_ptr<float>(),
                             step_.sin.data_ptr<float>(), zero_position_.data_ptr<int64_t>(), static_cast<int>(seq), q.data_ptr(), k.data_ptr(),
                             v.data_ptr(), static_cast<int>(batch), static_cast<int>(heads), static_cast<int>(groups), static_cast<int>(hd),
                             static_cast<int>(seq), static_cast<float>(kNormEps), current_stream());
  }
  const auto [keys, values] = step_.store(layer, k, v);  // (batch, groups, keys, hd) each
  return merge_heads(sdpa(q, keys, values));
}

}  // namespace qwen3
#endif
