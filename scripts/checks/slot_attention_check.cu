// The decode attention kernel (cuda::group_attention) against a double-precision host reference,
// in both of its uses: a batch step (every row at one position, row r in cache row r) and a
// ragged step over sequence slots (per-row positions, a row -> slot map, padding rows at position
// -1 that must touch nothing), and a ragged step whose rows include a prompt's tokens (several
// rows of one slot, run as a store-only and then a read-only launch). Positions long enough to
// split the attention several ways and each split into many rounds, rows whose lengths leave
// some splits empty, 2 to 8 query heads a group. bfloat16 takes the streaming kernel
// (attention_stream.cuh), float32 the general one; QWEN3_NO_STREAM_ATTENTION=1 checks the
// general kernel on bfloat16 too. Exits 1 on a mismatch. Needs a GPU; no libtorch:
//   nvcc -std=c++17 -arch=sm_90 -Inative scripts/checks/slot_attention_check.cu native/cuda/attention_kernel.cu -o /tmp/slot_check && /tmp/slot_check
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/kernels.h"
#include "host_check.h"

namespace {

constexpr int G = 8, HD = 128;
constexpr float EPS = 1e-6f;

struct Case {
  int rows;
  std::vector<int64_t> positions;  // per row (or one, with stride 0)
  std::vector<int64_t> slots;      // per row; empty: identity
  bool shared = false;             // rows share slots: store, then attend
  int capacity = 384;              // positions each slot holds
  int heads = 16;                  // query heads: heads / 8 a key/value group
  bool early = false;              // the one-row decode step's phase: the cache's first loads before the wait
};

// Runs one call of the kernel and compares its output and cache writes with the host reference.
template <typename T>
bool run_case(int dtype, const char* name, const Case& c, std::mt19937& rng) {
  const int capacity = c.capacity, H = c.heads, REPS = H / G;
  int slots = c.rows;  // slots in the caches: enough for every row's
  for (const int64_t s : c.slots) slots = std::max(slots, static_cast<int>(s) + 1);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int qkv_width = (H + 2 * G) * HD;
  const size_t cache_n = static_cast<size_t>(slots) * G * capacity * HD;
  std::vector<T> qkv(static_cast<size_t>(c.rows) * qkv_width), k_cache(cache_n), v_cache(cache_n);
  for (auto& x : qkv) x = from_f<T>(normal(rng));
  for (auto& x : k_cache) x = from_f<T>(normal(rng));
  for (auto& x : v_cache) x = from_f<T>(normal(rng));
  std::vector<float> q_norm(HD), k_norm(HD), cos, sin;
  for (int d = 0; d < HD; ++d) q_norm[d] = 1.f + 0.1f * normal(rng), k_norm[d] = 1.f + 0.1f * normal(rng);
  rope_tables(capacity, HD, cos, sin);
  const int stride = c.positions.size() == 1 ? 0 : 1;
  const float scale = 1.f / std::sqrt(static_cast<float>(HD));
  const size_t partial_n = qwen3::cuda::attention_partials_floats(c.rows, H, HD, capacity);

  T *d_qkv = upload(qkv), *d_k = upload(k_cache), *d_v = upload(v_cache);
  float *d_qn = upload(q_norm), *d_kn = upload(k_norm), *d_cos = upload(cos), *d_sin = upload(sin);
  int64_t* d_pos = upload(c.positions);
  int64_t* d_slots = c.slots.empty() ? nullptr : upload(c.slots);
  std::vector<T> out_init(static_cast<size_t>(c.rows) * H * HD, from_f<T>(1234.f));  // padding rows must overwrite it with 0
  T* d_out = upload(out_init);
  float* d_partials = nullptr;
  int* d_done = nullptr;
  CHECK(cudaMalloc(&d_partials, partial_n * sizeof(float)));
  CHECK(cudaMalloc(&d_done, static_cast<size_t>(c.rows) * G * sizeof(int)));
  CHECK(cudaMemset(d_done, 0, static_cast<size_t>(c.rows) * G * sizeof(int)));
  for (const int phase : c.shared ? std::vector<int>{qwen3::cuda::kAttendStoreOnly, qwen3::cuda::kAttendReadOnly}
                                  : std::vector<int>{c.early ? qwen3::cuda::kAttendFusedEarly : qwen3::cuda::kAttendFused}) {
    qwen3::cuda::group_attention(dtype, d_qkv, d_qn, d_kn, true, d_cos, d_sin, d_pos, stride, d_slots, d_k, d_v, d_out, d_partials, d_done,
                                 c.rows, H, G, HD, capacity, scale, EPS, phase, nullptr);
  }
  CHECK(cudaDeviceSynchronize());
  const std::vector<T> out = download(d_out, out_init.size()), k_after = download(d_k, cache_n), v_after = download(d_v, cache_n);
  const std::vector<int> done = download(d_done, static_cast<size_t>(c.rows) * G);

  // The host reference: the same roundings, sums in double. Rows run in order, each key stored
  // before the row attends, so a prompt's later rows see its earlier ones.
  std::vector<T> k_want = k_cache, v_want = v_cache;
  std::vector<bool> written(cache_n, false);  // new keys: the device may round its RoPE differently (fused multiply-adds)
  double worst = 0;
  bool ok = true;
  for (int r = 0; r < c.rows; ++r) {
    const int64_t pos = c.positions[stride * r];
    const int64_t slot = c.slots.empty() ? r : c.slots[r];
    const T* src = &qkv[static_cast<size_t>(r) * qkv_width];
    if (pos < 0) {
      for (int i = 0; i < H * HD; ++i) ok &= to_f(out[static_cast<size_t>(r) * H * HD + i]) == 0.f;
      continue;
    }
    auto finish = [&](int head, const float* scale_w) {  // RMSNorm (rounded), then RoPE (rounded)
      std::vector<float> v(HD), roped(HD);
      double sq = 0;
      for (int d = 0; d < HD; ++d) v[d] = to_f(src[head * HD + d]), sq += static_cast<double>(v[d]) * v[d];
      const float rstd = static_cast<float>(1.0 / std::sqrt(sq / HD + EPS));
      for (int d = 0; d < HD; ++d) v[d] = to_f(from_f<T>((v[d] * rstd) * scale_w[d]));
      for (int d = 0; d < HD; ++d) {
        const float rotated = d < HD / 2 ? -v[d + HD / 2] : v[d - HD / 2];
        roped[d] = to_f(from_f<T>(v[d] * cos[pos * HD + d] + rotated * sin[pos * HD + d]));
      }
      return roped;
    };
    for (int g = 0; g < G; ++g) {
      const size_t base = (static_cast<size_t>(slot) * G + g) * capacity * HD;
      const std::vector<float> k = finish(H + g, k_norm.data());
      for (int d = 0; d < HD; ++d) {
        k_want[base + pos * HD + d] = from_f<T>(k[d]);
        written[base + pos * HD + d] = true;
        v_want[base + pos * HD + d] = src[(H + G + g) * HD + d];
      }
      for (int j = 0; j < REPS; ++j) {
        const int head = g * REPS + j;
        const std::vector<float> q = finish(head, q_norm.data());
        std::vector<double> scores(static_cast<size_t>(pos + 1));
        double max = -INFINITY, sum = 0;
        for (int64_t t = 0; t <= pos; ++t) {
          double dot = 0;
          for (int d = 0; d < HD; ++d) dot += static_cast<double>(q[d]) * to_f(k_want[base + t * HD + d]);
          scores[t] = dot * scale;
          max = std::max(max, scores[t]);
        }
        for (auto& s : scores) sum += (s = std::exp(s - max));
        for (int d = 0; d < HD; ++d) {
          double acc = 0;
          for (int64_t t = 0; t <= pos; ++t) acc += scores[t] * to_f(v_want[base + t * HD + d]);
          const double want = acc / sum, got = to_f(out[(static_cast<size_t>(r) * H + head) * HD + d]);
          worst = std::max(worst, std::abs(got - want));
        }
      }
    }
  }
  const double tolerance = dtype == 0 ? 1e-4 : 2e-2;
  ok &= worst < tolerance;
  // Every key and value where it belongs, and nothing else touched (padding rows write nothing).
  const double key_tolerance = dtype == 0 ? 1e-4 : 3e-2;
  for (size_t i = 0; i < cache_n; ++i) {
    const double k_got = to_f(k_after[i]), k_ref = to_f(k_want[i]);
    ok &= written[i] ? std::abs(k_got - k_ref) <= key_tolerance * std::max(1.0, std::abs(k_ref)) : k_got == k_ref;
    ok &= to_f(v_after[i]) == to_f(v_want[i]);
  }
  for (const int d : done) ok &= d == 0;
  std::printf("%-40s %s  max |out - reference| %.3g\n", name, ok ? "ok  " : "FAIL", worst);
  for (void* p : {static_cast<void*>(d_qkv), static_cast<void*>(d_k), static_cast<void*>(d_v), static_cast<void*>(d_qn),
                  static_cast<void*>(d_kn), static_cast<void*>(d_cos), static_cast<void*>(d_sin), static_cast<void*>(d_pos),
                  static_cast<void*>(d_slots), static_cast<void*>(d_out), static_cast<void*>(d_partials), static_cast<void*>(d_done)}) {
    if (p) CHECK(cudaFree(p));
  }
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  bool ok = true;
  const Case batch{3, {300}, {}};                                               // a batch step at position 300
  const Case ragged{8, {299, 0, 37, 130, 383, -1, -1, -1}, {4, 0, 2, 5, 1, 3, 3, 3}};  // 5 rows, then padding
  const Case one{1, {200}, {2}};                                                // a bucket of one
  const Case short_one{1, {100}, {1}};                                          // 101 positions: one split
  const Case long_one{1, {4000}, {4}, false, 4096};       // one row at a long length: the most splits
  const Case long_rows{2, {4095, 2500}, {0, 5}, false, 4096};  // two rows at long lengths: the many-row split limit
  // A 6-token prompt after 250 cached tokens of slot 1 and a 3-token one from empty slot 5,
  // beside two decode rows, then padding.
  const Case prompts{16, {250, 251, 252, 253, 254, 255, 0, 1, 2, 90, 377, -1, -1, -1, -1, -1}, {1, 1, 1, 1, 1, 1, 5, 5, 5, 0, 3, 2, 2, 2, 2, 2}, true};
  // Every group size of the Qwen3 family (2, 4, 5 and 8 query heads a group), a length whose
  // splits take many rounds each, and a split that holds the new position alone; three of them
  // again in the one-row step's phase, whose first loads come before the wait.
  const Case longer{1, {16000}, {0}, false, 16384, 32};
  const Case wide_groups{8, {299, 0, 37, 130, 383, -1, -1, -1}, {4, 0, 2, 5, 1, 3, 3, 3}, false, 384, 64};
  const Case five{2, {4095, 31}, {1, 0}, false, 4096, 40};
  const Case alone{1, {128}, {0}, false, 384};  // 129 positions: four splits of 32, then the new one
  Case long_early = long_one, longer_early = longer, alone_early = alone;
  long_early.early = longer_early.early = alone_early.early = true;
  const Case prompts8{16, {250, 251, 252, 253, 254, 255, 0, 1, 2, 90, 377, -1, -1, -1, -1, -1}, {1, 1, 1, 1, 1, 1, 5, 5, 5, 0, 3, 2, 2, 2, 2, 2}, true, 384, 64};
  for (const auto& [name, c] : {std::pair{"batch", batch}, std::pair{"ragged", ragged}, std::pair{"one row", one},
                                 std::pair{"one row, one split", short_one}, std::pair{"prompt rows", prompts}, std::pair{"one long row", long_one},
                                 std::pair{"two long rows", long_rows}, std::pair{"16k, 4 a group", longer},
                                 std::pair{"ragged, 8 a group", wide_groups}, std::pair{"4k, 5 a group", five},
                                 std::pair{"new position alone", alone}, std::pair{"prompt rows, 8 a group", prompts8},
                                 std::pair{"one long row, early loads", long_early}, std::pair{"16k, 4 a group, early loads", longer_early},
                                 std::pair{"new position alone, early loads", alone_early}}) {
    ok &= run_case<float>(0, (std::string(name) + " float32").c_str(), c, rng);
    ok &= run_case<__nv_bfloat16>(1, (std::string(name) + " bfloat16").c_str(), c, rng);
  }
  std::printf(ok ? "all ok\n" : "FAILED\n");
  return ok ? 0 : 1;
}
