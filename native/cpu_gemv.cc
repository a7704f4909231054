#include "cpu_gemv.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QWEN3_CPU_GEMV 1
// GCC 12's _mm512_reduce_add_ps starts from an undefined vector it never reads.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace qwen3 {

#ifdef QWEN3_CPU_GEMV
namespace {

// Dot products of rows [begin, end) of w (n, k) with x, 4 rows at a time so that 4 streams of
// weights are in flight and each 64-byte chunk of x is loaded once for all 4.
__attribute__((target("avx512f,avx512bf16"))) void dot_rows(const uint16_t* w, const uint16_t* x, at::BFloat16* out, int64_t begin,
                                                             int64_t end, int64_t k) {
  int64_t n = begin;
  for (; n + 4 <= end; n += 4) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const uint16_t* r = w + n * k;
    for (int64_t i = 0; i < k; i += 32) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i);
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(r + i), xv);
      a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(r + k + i), xv);
      a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(r + 2 * k + i), xv);
      a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(r + 3 * k + i), xv);
    }
    // Rounded once from the float32 sums (round to nearest even), as at::linear does.
    out[n] = c10::BFloat16(_mm512_reduce_add_ps(a0));
    out[n + 1] = c10::BFloat16(_mm512_reduce_add_ps(a1));
    out[n + 2] = c10::BFloat16(_mm512_reduce_add_ps(a2));
    out[n + 3] = c10::BFloat16(_mm512_reduce_add_ps(a3));
  }
  for (; n < end; ++n) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 32) {
      a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(w + n * k + i), (__m512bh)_mm512_loadu_si512(x + i));
    }
    out[n] = c10::BFloat16(_mm512_reduce_add_ps(a));
  }
}

}  // namespace

bool cpu_gemv_available() {
  static const bool available = __builtin_cpu_supports("avx512bf16");
  return available;
}

at::Tensor cpu_gemv(const at::Tensor& x, const at::Tensor& w) {
  const int64_t k = w.dim() == 2 ? w.size(1) : 0;
  if (!cpu_gemv_available() || !x.device().is_cpu() || !w.device().is_cpu() || x.scalar_type() != at::kBFloat16 ||
      w.scalar_type() != at::kBFloat16 || k == 0 || k % 32 != 0 || x.numel() != k || !x.is_contiguous() || !w.is_contiguous()) {
    return at::Tensor();
  }
  const int64_t n = w.size(0);
  const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = n;
  at::Tensor out = at::empty(shape, x.options());
  at::BFloat16* op = out.data_ptr<at::BFloat16>();
  // Whole blocks of 4 rows per thread: a split inside a block would leave single-row tails.
  at::parallel_for(0, (n + 3) / 4, 64, [&](int64_t begin, int64_t end) { dot_rows(wp, xp, op, begin * 4, std::min(end * 4, n), k); });
  return out;
}

#else  // not x86-64: the ATen path runs

bool cpu_gemv_available() { return false; }
at::Tensor cpu_gemv(const at::Tensor&, const at::Tensor&) { return at::Tensor(); }

#endif

}  // namespace qwen3
