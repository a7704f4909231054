#include "model/fp8_weights.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace qwen3 {
namespace {

constexpr float kE4M3Max = 448.f;
// Rows of W widened at a time by fp8_linear and by the quantization: bounds the widened copy (the
// head of a large vocabulary would otherwise need a second head's worth of memory or more).
constexpr int64_t kWidenRows = 16384;

// The float32 scales of W's rows: (n,), a strided view into the packed rows.
at::Tensor row_scales(const at::Tensor& w) { return w.view(at::kFloat).select(1, fp8_input_width(w) / 4); }

}  // namespace

at::Tensor quantize_rows_fp8(const at::Tensor& w) {
  const int64_t n = w.size(0), k = w.size(1);
  if (k % 16 != 0) {
    throw std::invalid_argument("FP8 weights need every product's input width to be a multiple of 16, but one is " + std::to_string(k));
  }
  at::Tensor packed = at::zeros({n, k + kFp8RowPad}, w.options().dtype(at::kFloat8_e4m3fn));
  for (int64_t r0 = 0; r0 < n; r0 += kWidenRows) {
    const int64_t m = std::min(kWidenRows, n - r0);
    const at::Tensor wf = w.narrow(0, r0, m).to(at::kFloat);  // (m, k); a view of w where w is float32 (a tied head: the table)
    // A true division by a tensor: CUDA divides by a host scalar as a product with its reciprocal,
    // a bit off in about half the rows, which moves values that sit on a rounding boundary.
    at::Tensor scale = at::amax(at::abs(wf), {1}, true).div_(at::scalar_tensor(kE4M3Max, wf.options()));  // (m, 1)
    scale.masked_fill_(scale == 0, 1.f);
    packed.narrow(0, r0, m).narrow(1, 0, k).copy_((wf / scale).to(at::kFloat8_e4m3fn));
    row_scales(packed).narrow(0, r0, m).copy_(scale.view({m}));
  }
  return packed;
}

void fp8_linear_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& w) {
  const int64_t n = w.size(0), k = fp8_input_width(w);
  const at::Tensor scales = row_scales(w);  // (n,)
  // The GPU multiplies x's dtype on its matrix units with float32 sums; E4M3 values widen to
  // bfloat16 or float16 exactly. Elsewhere (and for float32 x) the product is float32.
  const bool narrow = x.is_cuda() && x.scalar_type() != at::kFloat;
  const at::Tensor input = narrow ? x : x.to(at::kFloat);  // (rows, k)
  for (int64_t r0 = 0; r0 < n; r0 += kWidenRows) {
    const int64_t m = std::min(kWidenRows, n - r0);
    const at::Tensor q = w.narrow(0, r0, m).narrow(1, 0, k).to(input.scalar_type());  // (m, k)
    at::Tensor sums = narrow ? at::mm(input, q.t(), at::kFloat) : at::mm(input, q.t());  // (rows, m) float32
    out.narrow(1, r0, m).copy_(sums.mul_(scales.narrow(0, r0, m)));  // rounded once to out's dtype
  }
}

at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& w) {
  const int64_t k = fp8_input_width(w), rows = x.numel() / k;
  auto shape = x.sizes().vec();
  shape.back() = w.size(0);
  at::Tensor out = at::empty({rows, w.size(0)}, x.options());  // (rows, n)
  fp8_linear_out(out, x.reshape({rows, k}), w);
  return out.view(shape);
}

}  // namespace qwen3
