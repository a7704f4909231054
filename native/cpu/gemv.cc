#include "cpu/gemv.h"

#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QWEN3_CPU_GEMV 1
// GCC 12's _mm512_reduce_add_ps starts from an undefined vector it never reads.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace qwen3 {

#ifdef QWEN3_CPU_GEMV
namespace {

// Dot products of rows [begin, end) of w (n, k) with x, kRows rows at a time: kRows streams of
// weights in flight, and each 64-byte chunk of x loaded once for all of them (8 read faster than
// 4 or 16). Each row still sums its chunks in order, so the result does not depend on kRows.
constexpr int kRows = 8;
// The loops over the rows must be unrolled for the accumulators to live in registers (GCC 12
// does not, at -O3 or at node-gyp's -O2).
#if defined(__clang__)
#define QWEN3_UNROLL_ROWS _Pragma("unroll")
#else
#define QWEN3_UNROLL_ROWS _Pragma("GCC unroll 8")
#endif

__attribute__((target("avx512f,avx512bf16"))) void dot_rows(const uint16_t* w, const uint16_t* x, at::BFloat16* out, int64_t begin,
                                                             int64_t end, int64_t k) {
  int64_t n = begin;
  for (; n + kRows <= end; n += kRows) {
    __m512 acc[kRows];
    QWEN3_UNROLL_ROWS
    for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
    const uint16_t* rows = w + n * k;
    for (int64_t i = 0; i < k; i += 32) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i);
      QWEN3_UNROLL_ROWS
      for (int r = 0; r < kRows; ++r) acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_loadu_si512(rows + r * k + i), xv);
    }
    // Rounded once from the float32 sums (round to nearest even), as at::linear does.
    QWEN3_UNROLL_ROWS
    for (int r = 0; r < kRows; ++r) out[n + r] = c10::BFloat16(_mm512_reduce_add_ps(acc[r]));
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
  // Whole blocks of kRows rows per thread: a split inside a block would leave single-row tails.
  parallel_parts((n + kRows - 1) / kRows, 32, [&](int64_t begin, int64_t end) {
    dot_rows(wp, xp, op, begin * kRows, std::min(end * kRows, n), k);
  });
  return out;
}

#else  // not x86-64: the ATen path runs

bool cpu_gemv_available() { return false; }
at::Tensor cpu_gemv(const at::Tensor&, const at::Tensor&) { return at::Tensor(); }

#endif

}  // namespace qwen3
