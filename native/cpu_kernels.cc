#include "cpu_kernels.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace qwen3::cpu {
namespace {

// Calls f with a null pointer of the element type that `dtype` names.
template <typename F>
void dispatch(int dtype, F&& f) {
  switch (dtype) {
    case 0: f(static_cast<float*>(nullptr)); break;
    case 1: f(static_cast<c10::BFloat16*>(nullptr)); break;
    case 2: f(static_cast<c10::Half*>(nullptr)); break;
    default: throw std::invalid_argument("unsupported dtype for the fused CPU kernels");
  }
}

// Rows are independent: split them over libtorch's threads when there are enough of them.
template <typename F>
void for_rows(int64_t rows, int64_t work_per_row, F&& f) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_row)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r);
  });
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

}  // namespace

void rms_norm(int dtype, const void* x, const float* w, void* out, int64_t rows, int64_t dim, float eps) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for_rows(rows, dim, [&](int64_t r) {
      const T* row = static_cast<const T*>(x) + r * dim;
      T* dst = static_cast<T*>(out) + r * dim;
      const float rstd = rstd_of(row, dim, eps);
      for (int64_t i = 0; i < dim; ++i) dst[i] = static_cast<T>((static_cast<float>(row[i]) * rstd) * w[i]);
    });
  });
}

void qk_norm_rope(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos, const float* sin,
                  void* q_out, void* k_out, void* v_out, int64_t rows, int64_t seq, int64_t heads, int64_t groups, int64_t hd, float eps) {
  const int64_t total_heads = heads + 2 * groups, half = hd / 2;
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for_rows(rows * seq, total_heads * hd, [&](int64_t token) {
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
        for (int64_t i = 0; i < hd; ++i) {
          const float f = static_cast<float>(src[i]);
          v[static_cast<size_t>(i)] = qk_norm ? static_cast<float>(static_cast<T>((f * rstd) * scale[i])) : f;  // the reference rounds here
        }
        T* dst = is_query ? static_cast<T*>(q_out) + ((row * heads + head) * seq + t) * hd
                          : static_cast<T*>(k_out) + ((row * groups + head - heads) * seq + t) * hd;
        for (int64_t i = 0; i < hd; ++i) {
          const float rotated = i < half ? -v[static_cast<size_t>(i + half)] : v[static_cast<size_t>(i - half)];
          dst[i] = static_cast<T>(v[static_cast<size_t>(i)] * cos[t * hd + i] + rotated * sin[t * hd + i]);
        }
      }
    });
  });
}

void silu_mul(int dtype, const void* gate_up, void* out, int64_t rows, int64_t hidden) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for_rows(rows, hidden, [&](int64_t r) {
      const T* g = static_cast<const T*>(gate_up) + r * 2 * hidden;
      T* dst = static_cast<T*>(out) + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) {
        const float gf = static_cast<float>(g[i]);
        dst[i] = static_cast<T>(gf / (1.f + std::exp(-gf)) * static_cast<float>(g[hidden + i]));
      }
    });
  });
}

void decode_attention(int dtype, const void* q, const void* k, const void* v, void* out, int64_t rows, int64_t heads, int64_t groups,
                      int64_t length, int64_t hd, int64_t row_stride, int64_t group_stride, float scale) {
  const int64_t per_group = heads / groups;
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for_rows(rows * heads, length * hd * 2, [&](int64_t rh) {
      const int64_t row = rh / heads, head = rh % heads;
      const T* qh = static_cast<const T*>(q) + rh * hd;
      const int64_t base = row * row_stride + (head / per_group) * group_stride;
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
    });
  });
}

}  // namespace qwen3::cpu
