#include "cpu/int8_weights.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/round.h>
#include <ATen/ops/where.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QWEN3_CPU_INT8 1
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace qwen3 {
namespace {

// Per-row (or per-block) symmetric quantization of t along its last dimension: the scales
// (..., 1) and the rounded values as float32.
std::pair<at::Tensor, at::Tensor> quantize_last_dim(const at::Tensor& t) {
  at::Tensor scale = at::amax(at::abs(t), {-1}, /*keepdim=*/true).div_(127.0);
  scale = at::where(scale == 0, at::ones_like(scale), scale);
  return {scale, at::round(t / scale).clamp_(-127, 127)};
}

}  // namespace

at::Tensor quantize_rows_int8(const at::Tensor& w) {
  const int64_t n = w.size(0), k = w.size(1);
  if (k % kInt8Block != 0) {
    throw std::invalid_argument("int8 weights need every product's input width to be a multiple of " + std::to_string(kInt8Block) +
                                ", but one is " + std::to_string(k));
  }
  const auto [scale, q] = quantize_last_dim(w.to(at::kFloat));  // (n, 1), (n, k)
  at::Tensor packed = at::empty({n, k + 4}, w.options().dtype(at::kByte));
  packed.narrow(1, 0, k).copy_((q + 128).to(at::kByte));
  packed.narrow(1, k, 4).copy_(scale.contiguous().view(at::kByte));  // (n, 4): the float's bytes
  return packed;
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w) {
  const int64_t n = w.size(0), k = w.size(1) - 4, blocks = k / kInt8Block, rows = x.numel() / k;
  const at::Tensor scale = w.narrow(1, k, 4).contiguous().view(at::kFloat).view({n});                   // (n,)
  const at::Tensor q = (w.narrow(1, 0, k).to(at::kFloat) - 128).view({n, blocks, kInt8Block}).permute({1, 2, 0});  // (blocks, 64, n)
  const auto [t, xq] = quantize_last_dim(x.reshape({rows, blocks, kInt8Block}).to(at::kFloat));         // (rows, blocks, 1), (rows, blocks, 64)
  // Each block's dot products are sums of integer products below 2^24: exact in float32.
  const at::Tensor dots = at::bmm(xq.permute({1, 0, 2}), q);  // (blocks, rows, n)
  const at::Tensor y = (dots * t.permute({1, 0, 2})).sum(0) * scale;  // (rows, n)
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = n;
  return y.to(x.scalar_type()).view(shape);
}

#ifdef QWEN3_CPU_INT8
namespace {

constexpr int kRows = 4;  // weight rows, and x rows, per group: up to 16 accumulators

// The float32 scale in the last 4 bytes of packed row `row`.
inline float row_scale(const uint8_t* w, int64_t stride, int64_t k, int64_t row) {
  float scale;
  std::memcpy(&scale, w + row * stride + k, sizeof scale);
  return scale;
}

// x quantized for the kernel: per block b, its scale t[b], its values xq (int8) and, per
// 32-bit lane of the block, -128 times the sum of the lane's four values: the VNNI product of
// the stored q + 128 starts from it, which leaves the exact x_q . q.
struct Activations {
  explicit Activations(int64_t k)
      : t(static_cast<size_t>(k / kInt8Block)), xq(static_cast<size_t>(k)), start(static_cast<size_t>(k / kInt8Block * 16)) {}
  std::vector<float> t;
  std::vector<int8_t> xq;
  std::vector<int32_t> start;  // (blocks, 16)
};

// Fills `a` (sized for k, its lane sums zero) from x; allocates nothing, so it may run on the pool.
void quantize_activations(const float* x, int64_t k, Activations& a) {
  const int64_t blocks = k / kInt8Block;
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * kInt8Block;
    float top = 0.f;
    for (int64_t i = 0; i < kInt8Block; ++i) top = std::max(top, std::fabs(xb[i]));
    float t = top / 127.0f;
    if (t == 0.f) t = 1.f;
    a.t[static_cast<size_t>(b)] = t;
    for (int64_t i = 0; i < kInt8Block; ++i) {
      const float v = std::min(127.f, std::max(-127.f, std::nearbyint(xb[i] / t)));
      a.xq[static_cast<size_t>(b * kInt8Block + i)] = static_cast<int8_t>(v);
      a.start[static_cast<size_t>(b * 16 + i / 4)] -= 128 * static_cast<int32_t>(v);
    }
  }
}

// Weight rows [n, n + R) against x rows [x0, x0 + XN): per block, one VNNI product per pair
// (64 weights), its 16 lanes widened and scaled by the block's t into a float32 accumulator. The
// bounds are template constants so that the accumulators live in registers.
template <int R, int XN, typename Out>
__attribute__((target("avx512f,avx512vnni"))) void int8_group(const uint8_t* w, int64_t stride, const Activations* xs, Out* out,
                                                               int64_t n_total, int64_t n, int64_t x0, int64_t k) {
  __m512 acc[R][XN];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < XN; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < k / kInt8Block; ++b) {
    __m512i wq[R];
    for (int r = 0; r < R; ++r) wq[r] = _mm512_loadu_si512(w + (n + r) * stride + b * kInt8Block);
    for (int j = 0; j < XN; ++j) {
      const Activations& a = xs[x0 + j];
      const __m512i xq = _mm512_loadu_si512(a.xq.data() + b * kInt8Block);
      const __m512i start = _mm512_loadu_si512(a.start.data() + b * 16);
      const __m512 t = _mm512_set1_ps(a.t[static_cast<size_t>(b)]);
      for (int r = 0; r < R; ++r) acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, wq[r], xq)), t, acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const float scale = row_scale(w, stride, k, n + r);
    for (int j = 0; j < XN; ++j) out[(x0 + j) * n_total + n + r] = static_cast<Out>(scale * _mm512_reduce_add_ps(acc[r][j]));
  }
}

// Weight rows [n, n + R) against every x row, kRows x rows at a time.
template <int R, typename Out>
void int8_rows_of(const uint8_t* w, int64_t stride, const std::vector<Activations>& xs, Out* out, int64_t n_total, int64_t n, int64_t k) {
  const auto x_rows = static_cast<int64_t>(xs.size());
  int64_t x0 = 0;
  for (; x0 + kRows <= x_rows; x0 += kRows) int8_group<R, kRows>(w, stride, xs.data(), out, n_total, n, x0, k);
  switch (x_rows - x0) {
    case 1: int8_group<R, 1>(w, stride, xs.data(), out, n_total, n, x0, k); break;
    case 2: int8_group<R, 2>(w, stride, xs.data(), out, n_total, n, x0, k); break;
    case 3: int8_group<R, 3>(w, stride, xs.data(), out, n_total, n, x0, k); break;
    default: break;
  }
}

// Output columns [begin, end) for every row of x: a group's weights are read from memory once,
// and the other x rows find them in the L1 cache.
template <typename Out>
void int8_rows(const uint8_t* w, int64_t stride, const std::vector<Activations>& xs, Out* out, int64_t n_total, int64_t begin, int64_t end,
               int64_t k) {
  int64_t n = begin;
  for (; n + kRows <= end; n += kRows) int8_rows_of<kRows>(w, stride, xs, out, n_total, n, k);
  for (; n < end; ++n) int8_rows_of<1>(w, stride, xs, out, n_total, n, k);
}

}  // namespace

at::Tensor int8_gemm(const at::Tensor& x, const at::Tensor& w) {
  static const bool available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
  const int64_t k = is_int8_rows(w) && w.dim() == 2 ? w.size(1) - 4 : 0;
  const auto dtype = x.scalar_type();
  if (!available || !x.device().is_cpu() || !w.device().is_cpu() || (dtype != at::kFloat && dtype != at::kBFloat16) || k <= 0 ||
      k % kInt8Block != 0 || x.size(-1) != k || !w.is_contiguous()) {
    return at::Tensor();
  }
  const int64_t n = w.size(0), rows = x.numel() / k;
  const at::Tensor xf = x.reshape({rows, k}).to(at::kFloat).contiguous();  // bfloat16 widens exactly
  // A prompt's rows are quantized over the cores too (a decode step's one row on this thread).
  std::vector<Activations> xs(static_cast<size_t>(rows), Activations(k));
  const float* xp = xf.data_ptr<float>();
  parallel_parts(rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) quantize_activations(xp + r * k, k, xs[static_cast<size_t>(r)]);
  });
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = n;
  at::Tensor out = at::empty(shape, x.options());
  const auto* wp = w.data_ptr<uint8_t>();
  parallel_parts((n + kRows - 1) / kRows, 16, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * kRows, last = std::min(end * kRows, n);
    if (dtype == at::kFloat) {
      int8_rows(wp, k + 4, xs, out.data_ptr<float>(), n, first, last, k);
    } else {
      int8_rows(wp, k + 4, xs, out.data_ptr<at::BFloat16>(), n, first, last, k);
    }
  });
  return out;
}

#else  // not x86-64: every product takes the ATen path (int8_linear)

at::Tensor int8_gemm(const at::Tensor&, const at::Tensor&) { return at::Tensor(); }

#endif

}  // namespace qwen3
