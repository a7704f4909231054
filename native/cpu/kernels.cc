#include "cpu/kernels.h"

#include "common/element_type.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace qwen3::cpu {
namespace {

// Calls f with a null pointer of the element type that `dtype` names.
template <typename F>
void dispatch(int dtype, F&& f) {
  dispatch_element_type<float, c10::BFloat16, c10::Half>(dtype, "fused CPU kernels", std::forward<F>(f));
}

// a . b in float32, with 16 independent partial sums so that the compiler can vectorise it
// (a single running sum would have to stay in order).
template <typename T>
float dot(const float* a, const T* b, int64_t n) {
  float part[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) part[j] += a[i + j] * static_cast<float>(b[i + j]);
  }
  float sum = 0.f;
  for (const float p : part) sum += p;
  for (; i < n; ++i) sum += a[i] * static_cast<float>(b[i]);
  return sum;
}

template <typename T>
float rstd_of(const T* v, int64_t n, float eps) {
  float sq = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float f = static_cast<float>(v[i]);
    sq += f * f;
  }
  return 1.f / std::sqrt(sq / static_cast<float>(n) + eps);
}

// The element-wise loops of a many-token prompt, for bfloat16 through its bits: c10's
// conversions round the same way (to nearest even, NaN kept) but with a branch that keeps the
// compiler from vectorising. On x86-64 Linux each loop is also built for AVX2 and AVX-512, and
// the loader picks the widest the CPU has. Products and sums stay separately rounded (no fused
// multiply-add) in every version, so each CPU computes the same bits.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define QWEN3_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define QWEN3_VECTOR_CLONES
#endif

inline float bits_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7fc0u : rounded);
}

// dst = round((x * rstd) * w)
QWEN3_VECTOR_CLONES void scale_row_bf16(const uint16_t* x, float rstd, const float* w, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bits((bits_to_float(x[i]) * rstd) * w[i]);
}

// v = float(round((x * rstd) * w)): a normed head, rounded where the reference rounds
QWEN3_VECTOR_CLONES void norm_head_bf16(const uint16_t* x, float rstd, const float* w, float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = bits_to_float(float_to_bits((bits_to_float(x[i]) * rstd) * w[i]));
}

// dst = round(v * cos + rotate_half(v) * sin) for one head
QWEN3_VECTOR_CLONES void rope_head_bf16(const float* v, const float* cos, const float* sin, uint16_t* dst, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) dst[i] = float_to_bits(v[i] * cos[i] + -v[i + half] * sin[i]);
  for (int64_t i = half; i < hd; ++i) dst[i] = float_to_bits(v[i] * cos[i] + v[i - half] * sin[i]);
}

inline const uint16_t* bits(const c10::BFloat16* p) { return reinterpret_cast<const uint16_t*>(p); }
inline uint16_t* bits(c10::BFloat16* p) { return reinterpret_cast<uint16_t*>(p); }

}  // namespace

void rms_norm(int dtype, const void* x, const float* w, void* out, int64_t rows, int64_t dim, float eps) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = static_cast<const T*>(x) + r * dim;
      T* dst = static_cast<T*>(out) + r * dim;
      const float rstd = rstd_of(row, dim, eps);
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        scale_row_bf16(bits(row), rstd, w, bits(dst), dim);
      } else {
        for (int64_t i = 0; i < dim; ++i) dst[i] = static_cast<T>((static_cast<float>(row[i]) * rstd) * w[i]);
      }
    }
  });
}

void qk_norm_rope(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos, const float* sin,
                  void* q_out, void* k_out, void* v_out, int64_t rows, int64_t seq, int64_t heads, int64_t groups, int64_t hd, float eps) {
  const int64_t total_heads = heads + 2 * groups, half = hd / 2;
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int64_t token = 0; token < rows * seq; ++token) {
      const int64_t row = token / seq, t = token % seq;
      std::vector<float> v(static_cast<size_t>(hd));
      for (int64_t head = 0; head < total_heads; ++head) {
        const T* src = static_cast<const T*>(qkv) + (token * total_heads + head) * hd;
        if (head >= heads + groups) {  // a value head: stored as it is
          T* dst = static_cast<T*>(v_out) + ((row * groups + head - heads - groups) * seq + t) * hd;
          for (int64_t i = 0; i < hd; ++i) dst[i] = src[i];
          continue;
        }
        const bool is_query = head < heads;
        const float rstd = qk_norm ? rstd_of(src, hd, eps) : 1.f;
        const float* scale = is_query ? q_norm : k_norm;
        T* dst = is_query ? static_cast<T*>(q_out) + ((row * heads + head) * seq + t) * hd
                          : static_cast<T*>(k_out) + ((row * groups + head - heads) * seq + t) * hd;
        if constexpr (std::is_same_v<T, c10::BFloat16>) {
          if (qk_norm) {
            norm_head_bf16(bits(src), rstd, scale, v.data(), hd);
          } else {
            for (int64_t i = 0; i < hd; ++i) v[static_cast<size_t>(i)] = static_cast<float>(src[i]);
          }
          rope_head_bf16(v.data(), cos + t * hd, sin + t * hd, bits(dst), hd);
          continue;
        }
        for (int64_t i = 0; i < hd; ++i) {
          const float f = static_cast<float>(src[i]);
          v[static_cast<size_t>(i)] = qk_norm ? static_cast<float>(static_cast<T>((f * rstd) * scale[i])) : f;  // the reference rounds here
        }
        for (int64_t i = 0; i < hd; ++i) {
          const float rotated = i < half ? -v[static_cast<size_t>(i + half)] : v[static_cast<size_t>(i - half)];
          dst[i] = static_cast<T>(v[static_cast<size_t>(i)] * cos[t * hd + i] + rotated * sin[t * hd + i]);
        }
      }
    }
  });
}

void silu_mul(int dtype, const void* gate_up, void* out, int64_t rows, int64_t hidden) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = static_cast<const T*>(gate_up) + r * 2 * hidden;
      T* dst = static_cast<T*>(out) + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) {
        const float gf = static_cast<float>(g[i]);
        dst[i] = static_cast<T>(gf / (1.f + std::exp(-gf)) * static_cast<float>(g[hidden + i]));
      }
    }
  });
}

void decode_attention(int dtype, const void* q, const void* k, const void* v, void* out, int64_t rows, int64_t heads, int64_t groups,
                      int64_t length, int64_t hd, int64_t row_stride, int64_t group_stride, float scale) {
  const std::vector<int64_t> lengths(static_cast<size_t>(rows), length);
  std::vector<int64_t> bases(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) bases[static_cast<size_t>(r)] = r * row_stride;
  decode_attention_rows(dtype, q, k, v, out, rows, heads, groups, lengths.data(), bases.data(), hd, group_stride, scale);
}

void decode_attention_rows(int dtype, const void* q, const void* k, const void* v, void* out, int64_t rows, int64_t heads, int64_t groups,
                           const int64_t* lengths, const int64_t* bases, int64_t hd, int64_t group_stride, float scale) {
  const int64_t per_group = heads / groups;
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int64_t rh = 0; rh < rows * heads; ++rh) {
      const int64_t row = rh / heads, head = rh % heads, length = lengths[row];
      const T* qh = static_cast<const T*>(q) + rh * hd;
      const int64_t base = bases[row] + (head / per_group) * group_stride;
      std::vector<float> qf(static_cast<size_t>(hd)), acc(static_cast<size_t>(hd), 0.f), scores(static_cast<size_t>(length));
      for (int64_t i = 0; i < hd; ++i) qf[static_cast<size_t>(i)] = static_cast<float>(qh[i]);
      float max = -INFINITY;
      for (int64_t t = 0; t < length; ++t) {
        const float score = dot(qf.data(), static_cast<const T*>(k) + base + t * hd, hd) * scale;
        scores[static_cast<size_t>(t)] = score;
        max = std::max(max, score);
      }
      float sum = 0.f;
      for (int64_t t = 0; t < length; ++t) {
        const float p = std::exp(scores[static_cast<size_t>(t)] - max);
        sum += p;
        const T* vt = static_cast<const T*>(v) + base + t * hd;
        for (int64_t i = 0; i < hd; ++i) acc[static_cast<size_t>(i)] += p * static_cast<float>(vt[i]);
      }
      T* dst = static_cast<T*>(out) + rh * hd;
      for (int64_t i = 0; i < hd; ++i) dst[i] = static_cast<T>(acc[static_cast<size_t>(i)] / sum);
    }
  });
}

}  // namespace qwen3::cpu
