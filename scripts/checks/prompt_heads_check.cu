// The prompt's per-head RMSNorm and RoPE into the KV cache (cuda::qk_norm_rope_cache) against a
// double-precision host reference: queries to (rows, seq, heads, hd), keys and values into their
// cache slots at *position + token, every other cache slot untouched. Heads of 128 in bfloat16 and
// float16 take the kernel of 16-lane teams (cuda/head_lanes.cuh); float32, heads of 64 and
// QWEN3_NO_PROMPT_HEAD_LANES=1 take the block-per-head kernel. Exits 1 on a mismatch. Needs a GPU; no libtorch:
//   nvcc -std=c++17 -arch=sm_90 -Inative scripts/checks/prompt_heads_check.cu native/cuda/norm_kernels.cu -o /tmp/prompt_heads_check && /tmp/prompt_heads_check
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

#include "common/element_type.h"
#include "cuda/kernels.h"
#include "host_check.h"

namespace {

constexpr float EPS = 1e-6f;

struct Case {
  int rows, seq, heads, groups, hd, capacity;
  int64_t start;  // the first token's position
  bool qk_norm;
};

template <typename T>
bool run_case(int dtype, const char* type, const Case& c, std::mt19937& rng) {
  const int total = c.heads + 2 * c.groups, hd = c.hd, positions = static_cast<int>(c.start) + c.seq;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<T> qkv(static_cast<size_t>(c.rows) * c.seq * total * hd);
  for (auto& x : qkv) x = from_f<T>(3.f * normal(rng));
  std::vector<float> q_norm(hd), k_norm(hd), cos, sin;
  for (int d = 0; d < hd; ++d) q_norm[d] = 1.f + 0.1f * normal(rng), k_norm[d] = 1.f + 0.1f * normal(rng);
  rope_tables(positions, hd, cos, sin);
  const T sentinel = from_f<T>(1234.f);
  const size_t q_n = static_cast<size_t>(c.rows) * c.heads * c.seq * hd, cache_n = static_cast<size_t>(c.rows) * c.groups * c.capacity * hd;
  std::vector<T> q_init(q_n, sentinel), cache_init(cache_n, sentinel);
  T *d_qkv = upload(qkv), *d_q = upload(q_init), *d_k = upload(cache_init), *d_v = upload(cache_init);
  float *d_qn = upload(q_norm), *d_kn = upload(k_norm), *d_cos = upload(cos), *d_sin = upload(sin);
  int64_t* d_pos = upload(std::vector<int64_t>{c.start});
  qwen3::cuda::qk_norm_rope_cache(dtype, d_qkv, d_qn, d_kn, c.qk_norm, d_cos, d_sin, d_pos, c.seq, d_q, d_k, d_v, c.rows, c.heads, c.groups,
                                  hd, c.capacity, EPS, nullptr);
  CHECK(cudaDeviceSynchronize());
  const std::vector<T> q = download(d_q, q_n), k = download(d_k, cache_n), v = download(d_v, cache_n);

  // The reference: RMSNorm rounded to T, then RoPE rounded to T, sums in double. The device sums
  // in another order in float32, so the norm's rounding may land one step of T (relative) away,
  // which RoPE carries into both dimensions it mixes, and RoPE's own rounding another step.
  const float step = sizeof(T) == 4 ? 1e-6f : std::is_same_v<T, __half> ? 1.f / 1024 : 1.f / 128;
  std::vector<T> q_want(q_n, sentinel), k_want(cache_n, sentinel), v_want(cache_n, sentinel);
  std::vector<float> q_tol(q_n, 0.f), k_tol(cache_n, 0.f);
  for (int r = 0; r < c.rows; ++r) {
    for (int t = 0; t < c.seq; ++t) {
      const int64_t pos = c.start + t;
      const T* src = &qkv[(static_cast<size_t>(r) * c.seq + t) * total * hd];
      for (int h = 0; h < total; ++h) {
        std::vector<float> x(hd);
        for (int d = 0; d < hd; ++d) x[d] = to_f(src[h * hd + d]);
        if (h >= c.heads + c.groups) {
          const size_t base = ((static_cast<size_t>(r) * c.groups + h - c.heads - c.groups) * c.capacity + pos) * hd;
          for (int d = 0; d < hd; ++d) v_want[base + d] = src[h * hd + d];
          continue;
        }
        if (c.qk_norm) {
          double sq = 0;
          for (const float e : x) sq += static_cast<double>(e) * e;
          const float rstd = static_cast<float>(1.0 / std::sqrt(sq / hd + EPS));
          const float* w = h < c.heads ? q_norm.data() : k_norm.data();
          for (int d = 0; d < hd; ++d) x[d] = to_f(from_f<T>((x[d] * rstd) * w[d]));
        }
        const size_t base = h < c.heads ? ((static_cast<size_t>(r) * c.seq + t) * c.heads + h) * hd
                                        : ((static_cast<size_t>(r) * c.groups + h - c.heads) * c.capacity + pos) * hd;
        for (int d = 0; d < hd; ++d) {
          const float rotated = d < hd / 2 ? -x[d + hd / 2] : x[d - hd / 2];
          const float c_d = cos[pos * hd + d], s_d = sin[pos * hd + d], want = x[d] * c_d + rotated * s_d;
          (h < c.heads ? q_want : k_want)[base + d] = from_f<T>(want);
          (h < c.heads ? q_tol : k_tol)[base + d] = step * (std::fabs(x[d] * c_d) + std::fabs(rotated * s_d) + std::fabs(want) + 1e-3f);
        }
      }
    }
  }
  double worst = 0;
  bool ok = true;
  // tol: empty for values and untouched slots, which must be equal.
  const auto compare = [&](const std::vector<T>& got, const std::vector<T>& want, const std::vector<float>* tol) {
    for (size_t i = 0; i < got.size(); ++i) {
      const float g = to_f(got[i]), w = to_f(want[i]), bound = tol ? (*tol)[i] : 0.f;
      const bool equal = g == w;
      worst = std::max(worst, equal ? 0.0 : bound > 0 ? std::fabs(static_cast<double>(g) - w) / bound : 1e9);
      ok &= equal || (bound > 0 && std::fabs(g - w) <= bound);
    }
  };
  compare(q, q_want, &q_tol);
  compare(k, k_want, &k_tol);
  compare(v, v_want, nullptr);
  std::printf("%-4s rows %d seq %4d heads %2d/%d hd %3d start %3lld norm %d: worst %.2f of the tolerance  %s\n", type, c.rows, c.seq, c.heads,
              c.groups, hd, static_cast<long long>(c.start), c.qk_norm, worst, ok ? "ok" : "MISMATCH");
  for (void* p : {static_cast<void*>(d_qkv), static_cast<void*>(d_q), static_cast<void*>(d_k), static_cast<void*>(d_v),
                  static_cast<void*>(d_qn), static_cast<void*>(d_kn), static_cast<void*>(d_cos), static_cast<void*>(d_sin),
                  static_cast<void*>(d_pos)}) {
    CHECK(cudaFree(p));
  }
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  // Qwen3-0.6B's heads (16 / 8), 8B's (32 / 8), an odd number of (token, head) items (the last
  // block part empty), a prompt after cached tokens, two rows, no per-head norm, heads of 64.
  const Case cases[] = {{1, 300, 16, 8, 128, 512, 0, true},  {1, 37, 32, 8, 128, 64, 0, true}, {1, 5, 3, 1, 128, 16, 0, true},
                        {1, 40, 16, 8, 128, 256, 200, true}, {2, 64, 8, 4, 128, 80, 3, true},  {1, 50, 16, 8, 128, 64, 0, false},
                        {2, 30, 8, 2, 64, 40, 5, true}};
  int failed = 0, total = 0;
  for (const Case& c : cases) {
    failed += !run_case<__nv_bfloat16>(qwen3::kBFloat16, "bf16", c, rng);
    failed += !run_case<__half>(qwen3::kFloat16, "fp16", c, rng);
    failed += !run_case<float>(qwen3::kFloat32, "f32", c, rng);
    total += 3;
  }
  std::printf("%d of %d cases within tolerance\n", total - failed, total);
  return failed == 0 ? 0 : 1;
}
