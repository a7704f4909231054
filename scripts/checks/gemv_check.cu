// The batch-1 matrix-vector kernels (cuda::gemv, cuda::gemv_fp8) against a double-precision host
// reference, at the widths of Qwen3-0.6B to Qwen3-32B, where the per-row kernels, the register
// path and the streaming kernel (stream_gemv.cuh) each take their share: plain products, RMSNorm
// inputs, SwiGLU pairs and residual updates in place, over float32 and bfloat16 rows and FP8 rows.
// Each output must be the reference's within the roundings the kernels share with it (the
// product rounded to the dtype, and for SwiGLU and residuals the roundings after it), for inputs
// of every magnitude (fp8_mma_gemv.cuh scales x' into float16's range). Exits 1 on
// a mismatch. Needs a GPU; no libtorch:
//   nvcc -O2 -std=c++17 -arch=sm_90 -Inative scripts/checks/gemv_check.cu native/cuda/gemv_kernels.cu native/cuda/fp8_gemv.cu \
//     native/cuda/head_kernel.cu -o /tmp/gemv_check && /tmp/gemv_check
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "host_check.h"

namespace cuda = qwen3::cuda;

namespace {

template <typename T> constexpr int dtype_of() { return sizeof(T) == 4 ? 0 : 1; }

struct Case {
  int n_out, k;
  cuda::GemvInput input;
  bool residual;
  float x_scale = 1.f;  // x's magnitude: beyond float16's range, or below its normal values
  int spread = 0;       // x's values spread over 2^-spread .. 2^spread times x_scale
};

// Runs one case; returns the largest error in units of the tolerance (pass: <= 1).
template <typename T>
double run_case(const Case& c, bool fp8, std::mt19937& rng) {
  const int rows = c.input == cuda::kGemvRmsNormSwiGLU ? 2 * c.n_out : c.n_out, k = c.k;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<T> x(k), residual(c.n_out);
  std::vector<float> norm(k), wf(static_cast<size_t>(rows) * k), scales(rows, 1.f);
  std::uniform_real_distribution<float> exponent(-c.spread, c.spread);
  for (auto& v : x) v = from_f<T>(normal(rng) * c.x_scale * std::exp2(exponent(rng)));
  for (auto& v : norm) v = 1.f + 0.1f * normal(rng);
  for (auto& v : residual) v = from_f<T>(normal(rng));
  // The weights as the kernel holds them, and their values for the reference.
  std::vector<T> w_t;
  std::vector<uint8_t> w_fp8;
  if (fp8) {
    w_fp8.assign(static_cast<size_t>(rows) * (k + 16), 0);
    for (int r = 0; r < rows; ++r) {
      scales[r] = 0.01f * (1 + r % 7);
      for (int i = 0; i < k; ++i) {
        uint8_t b = static_cast<uint8_t>(rng() & 0xff);
        if ((b & 0x7f) == 0x7f) b ^= 1;  // not NaN
        w_fp8[static_cast<size_t>(r) * (k + 16) + i] = b;
        wf[static_cast<size_t>(r) * k + i] = e4m3(b);
      }
      std::memcpy(&w_fp8[static_cast<size_t>(r) * (k + 16) + k], &scales[r], sizeof(float));
    }
  } else {
    w_t.resize(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) w_t[i] = from_f<T>(0.05f * normal(rng)), wf[i] = to_f(w_t[i]);
  }
  // The reference: x' as the kernels round it, sums in double, the kernels' roundings after.
  std::vector<float> xp(k);
  double sq = 0;
  for (int i = 0; i < k; ++i) sq += static_cast<double>(to_f(x[i])) * to_f(x[i]);
  const float rstd = 1.f / std::sqrt(static_cast<float>(sq / k) + 1e-6f);
  for (int i = 0; i < k; ++i) xp[i] = c.input == cuda::kGemvPlain ? to_f(x[i]) : to_f(from_f<T>((to_f(x[i]) * rstd) * norm[i]));
  std::vector<double> dot(rows);
  double dot_scale = 0;  // the sum of |w||x| of a row: the size of its rounding error
  for (int r = 0; r < rows; ++r) {
    double s = 0, a = 0;
    for (int i = 0; i < k; ++i) s += static_cast<double>(wf[static_cast<size_t>(r) * k + i]) * xp[i], a += std::fabs(wf[static_cast<size_t>(r) * k + i] * xp[i]);
    dot[r] = s * scales[r];
    dot_scale = std::max(dot_scale, a * scales[r]);
  }
  // Device run; y is the residual where there is one (the in-place update).
  T* d_x = upload(x);
  float* d_norm = upload(norm);
  T* d_y = upload(c.residual ? residual : std::vector<T>(c.n_out));
  void* d_w = fp8 ? static_cast<void*>(upload(w_fp8)) : static_cast<void*>(upload(w_t));
  const int dt = dtype_of<T>();
  if (fp8) {
    cuda::gemv_fp8(dt, c.input, d_w, d_x, d_norm, c.residual ? d_y : nullptr, d_y, c.n_out, k, 1e-6f, nullptr);
  } else {
    cuda::gemv(dt, c.input, d_w, d_x, d_norm, c.residual ? d_y : nullptr, d_y, c.n_out, k, 1e-6f, nullptr);
  }
  CHECK(cudaDeviceSynchronize());
  const std::vector<T> y = download(d_y, c.n_out);
  CHECK(cudaFree(d_x));
  CHECK(cudaFree(d_norm));
  CHECK(cudaFree(d_y));
  CHECK(cudaFree(d_w));
  // Float32 sums of k terms stray from the double ones by about k * 2^-24 of their magnitudes;
  // each rounding to T adds half an ulp of the value rounded.
  const double ulp = sizeof(T) == 4 ? std::ldexp(1.0, -23) : std::ldexp(1.0, -7);
  const double sum_tol = 4.0 * std::sqrt(static_cast<double>(k)) * std::ldexp(1.0, -24) * dot_scale;
  double worst = 0;
  for (int n = 0; n < c.n_out; ++n) {
    double want, tol;
    if (c.input == cuda::kGemvRmsNormSwiGLU) {
      const double g = to_f(from_f<T>(static_cast<float>(dot[n]))), u = to_f(from_f<T>(static_cast<float>(dot[c.n_out + n])));
      want = g / (1 + std::exp(-g)) * u;
      // g and u may each round the other way (an ulp of each), then the result rounds.
      tol = (std::fabs(g) + std::fabs(u) + 1) * (std::fabs(u) + std::fabs(g)) * ulp + std::fabs(want) * ulp + sum_tol * (std::fabs(g) + std::fabs(u) + 1);
    } else {
      const double p = dot[n];
      want = c.residual ? to_f(from_f<T>(static_cast<float>(p))) + static_cast<double>(to_f(residual[n])) : p;
      tol = sum_tol + (std::fabs(p) + std::fabs(want)) * ulp + 1e-30;
    }
    worst = std::max(worst, std::fabs(to_f(y[n]) - want) / tol);
  }
  return worst;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  // Qwen3 widths: 0.6B (1,024 / 3,072), 8B (4,096 / 12,288, and 2,048 for a half of its attention
  // output), 32B (5,120 / 8,192 / 25,600), and one that no warp takes in whole loads (the per-row
  // kernels).
  const std::vector<Case> cases = {
      {1024, 1024, cuda::kGemvRmsNorm, false},      {1024, 3072, cuda::kGemvPlain, true},
      {4096, 2048, cuda::kGemvPlain, true},  // 8B's attention output split over two GPUs
      {6144, 4096, cuda::kGemvRmsNorm, false},      {4096, 4096, cuda::kGemvPlain, true},
      {12288, 4096, cuda::kGemvRmsNormSwiGLU, false}, {4096, 12288, cuda::kGemvPlain, true},
      {5120, 8192, cuda::kGemvPlain, true},         {25600, 5120, cuda::kGemvRmsNormSwiGLU, false},
      {5120, 25600, cuda::kGemvPlain, true},        {777, 4160, cuda::kGemvRmsNorm, false},
      {3, 4096, cuda::kGemvPlain, false},
      // FP8 rows on the tensor cores take x' as float16, scaled: inputs past float16's largest
      // value, below its smallest normal one, and spread over 2^60.
      // (12,288 outputs: enough tiles for that kernel.)
      {12288, 4096, cuda::kGemvPlain, true, 3e5f},  {12288, 5120, cuda::kGemvPlain, true, 1e-7f},
      {12288, 4096, cuda::kGemvPlain, false, 1.f, 30},
  };
  bool ok = true;
  for (const Case& c : cases) {
    for (int kind = 0; kind < 3; ++kind) {  // bfloat16 rows, float32 rows, FP8 rows under bfloat16
      const bool f32 = kind == 1, fp8 = kind == 2;
      const int bytes = f32 ? 4 : 2;
      const bool supported = fp8 ? cuda::gemv_fp8_supported(1, c.k) : cuda::gemv_supported(f32 ? 0 : 1, c.k);
      if (!supported) {
        if (c.k * bytes <= cuda::kGemvMaxInputBytes) ok = false, std::printf("n_out %d k %d: refused\n", c.n_out, c.k);
        continue;
      }
      const double worst = f32 ? run_case<float>(c, false, rng) : run_case<__nv_bfloat16>(c, fp8, rng);
      const bool pass = worst <= 1.0;
      ok &= pass;
      std::printf("%-9s n_out %6d k %6d input %d residual %d: worst error %.3f of the tolerance %s\n", fp8 ? "fp8" : f32 ? "float32" : "bfloat16",
                  c.n_out, c.k, static_cast<int>(c.input), c.residual ? 1 : 0, worst, pass ? "ok" : "MISMATCH");
    }
  }
  std::printf(ok ? "all cases ok\n" : "MISMATCH\n");
  return ok ? 0 : 1;
}
