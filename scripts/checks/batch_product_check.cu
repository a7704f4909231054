// The decode step's products for several rows (cuda::batch_product) against a double-precision
// host reference with the same roundings: plain, with a residual added in place, and SwiGLU over
// [gate | up] rows, for 1 to 64 rows (every tile count of the kernel, rows that leave a tile part
// empty) at the widths of Qwen3-0.6B and 8B, in bfloat16 and float16, with weights in the compute
// dtype and as FP8 rows (E4M3 values and a float32 scale a row); the row after the last must stay
// untouched; with a normed input, cuda::rms_norm first, its rows also against the norm in double
// precision. Exits 1 on a mismatch. Needs a GPU; no libtorch:
//   nvcc -std=c++17 -arch=sm_90 -Inative scripts/checks/batch_product_check.cu native/cuda/batch_product.cu native/cuda/norm_kernels.cu \
//     -o /tmp/batch_check && /tmp/batch_check
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/kernels.h"
#include "host_check.h"

namespace {

constexpr float kEps = 1e-6f;

enum class Kind { kPlain, kResidual, kSwiGLU };

struct Case {
  const char* name;
  int rows, n_out, k;
  Kind kind;
  bool norm = false;  // the input normed by cuda::rms_norm first
};

template <typename T>
bool run_case(int dtype, const Case& c, bool fp8, std::mt19937& rng) {
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  const int w_rows = c.kind == Kind::kSwiGLU ? 2 * c.n_out : c.n_out;
  const float x_scale = 2.f / std::sqrt(static_cast<float>(c.k));  // sums of about 0.7
  std::vector<T> w, x(static_cast<size_t>(c.rows) * c.k);
  std::vector<uint8_t> w_fp8;                  // (w_rows, k + 16): E4M3 values, then the row's scale
  std::vector<float> wf(static_cast<size_t>(w_rows) * c.k), xf(x.size());  // the weights' and inputs' values
  std::vector<T> y(static_cast<size_t>(c.rows + 1) * c.n_out);  // one row more: it must stay as it is
  if (fp8) {
    w_fp8.assign(static_cast<size_t>(w_rows) * (c.k + 16), 0);
    for (int r = 0; r < w_rows; ++r) {
      const float scale = (1 + r % 5) / 448.f;  // rows of up to 1-5 in magnitude
      uint8_t* row = &w_fp8[static_cast<size_t>(r) * (c.k + 16)];
      for (int i = 0; i < c.k; ++i) {
        uint8_t b = static_cast<uint8_t>(rng() & 0xff);
        if ((b & 0x7f) == 0x7f) b ^= 1;  // not NaN
        row[i] = b;
        wf[static_cast<size_t>(r) * c.k + i] = e4m3(b) * scale;
      }
      std::memcpy(row + c.k, &scale, sizeof(float));
    }
  } else {
    w.resize(wf.size());
    for (size_t i = 0; i < w.size(); ++i) w[i] = from_f<T>(unit(rng)), wf[i] = to_f(w[i]);
  }
  for (auto& v : x) v = from_f<T>(unit(rng) * (c.norm ? 3.f : x_scale));
  for (auto& v : y) v = from_f<T>(c.kind == Kind::kResidual ? 4.f * unit(rng) : 1234.f);
  std::vector<float> norm_w(c.k);  // normed inputs of the plain cases' size
  if (c.norm) {
    for (auto& v : norm_w) v = x_scale * (1.f + 0.5f * unit(rng));
  }
  void* d_w = fp8 ? static_cast<void*>(upload(w_fp8)) : static_cast<void*>(upload(w));
  T *d_x = upload(x), *d_y = upload(y);
  float* d_norm = upload(norm_w);
  const bool swiglu = c.kind == Kind::kSwiGLU;
  // With c.norm the input is the rms_norm kernel's output, as the decode step runs them.
  T* d_normed = c.norm ? upload(x) : nullptr;
  if (c.norm) qwen3::cuda::rms_norm(dtype, d_x, d_norm, d_normed, c.rows, c.k, kEps, nullptr);
  qwen3::cuda::batch_product(dtype, swiglu, fp8, d_w, c.norm ? d_normed : d_x, c.kind == Kind::kResidual ? d_y : nullptr, d_y, c.rows, c.n_out,
                             c.k, nullptr);
  CHECK(cudaDeviceSynchronize());
  const std::vector<T> got = download(d_y, y.size());
  bool ok = true;
  if (c.norm) {
    // The normed rows against the norm in double precision (within one step of T's rounding);
    // the reference's input is that norm rounded to T.
    const std::vector<T> normed = download(d_normed, x.size());
    for (int r = 0; r < c.rows; ++r) {
      double sq = 0;
      for (int i = 0; i < c.k; ++i) sq += static_cast<double>(to_f(x[static_cast<size_t>(r) * c.k + i])) * to_f(x[static_cast<size_t>(r) * c.k + i]);
      const double rstd = 1.0 / std::sqrt(sq / c.k + kEps);
      for (int i = 0; i < c.k; ++i) {
        const size_t at = static_cast<size_t>(r) * c.k + i;
        const double want = to_f(x[at]) * rstd * norm_w[i];
        ok &= std::abs(to_f(normed[at]) - want) <= (dtype == 1 ? 1.0 / 128 : 1.0 / 1024) * std::abs(want) + 1e-6;
        xf[at] = to_f(from_f<T>(static_cast<float>(want)));
      }
    }
    if (!ok) std::printf("  rms_norm's rows differ from the reference\n");
    CHECK(cudaFree(d_normed));
  } else {
    for (size_t i = 0; i < x.size(); ++i) xf[i] = to_f(x[i]);
  }
  const auto dot = [&](int r, int row) {
    const float *xr = &xf[static_cast<size_t>(r) * c.k], *wr = &wf[static_cast<size_t>(row) * c.k];
    double s = 0;
    for (int i = 0; i < c.k; ++i) s += static_cast<double>(xr[i]) * wr[i];
    return s;
  };
  double worst = 0;
  for (int r = 0; r < c.rows; ++r) {
    for (int n = 0; n < c.n_out; ++n) {
      const size_t at = static_cast<size_t>(r) * c.n_out + n;
      double want = to_f(from_f<T>(static_cast<float>(dot(r, n))));  // the product, rounded
      if (c.kind == Kind::kResidual) want = to_f(from_f<T>(static_cast<float>(want + to_f(y[at]))));
      if (c.kind == Kind::kSwiGLU) {
        const double u = to_f(from_f<T>(static_cast<float>(dot(r, c.n_out + n))));
        want = want / (1 + std::exp(-want)) * u;
      }
      const double err = std::abs(to_f(got[at]) - want);
      worst = std::max(worst, err);
      ok &= err <= 0.01 * std::abs(want) + 0.01;
    }
  }
  for (int n = 0; n < c.n_out; ++n) {
    const size_t at = static_cast<size_t>(c.rows) * c.n_out + n;
    ok &= to_f(got[at]) == to_f(y[at]);
  }
  std::printf("%-50s %-8s %-4s %s  max |y - reference| %.3g\n", c.name, dtype == 1 ? "bfloat16" : "float16", fp8 ? "fp8" : "", ok ? "ok  " : "FAIL",
              worst);
  CHECK(cudaFree(d_w));
  CHECK(cudaFree(d_norm));
  CHECK(cudaFree(d_x));
  CHECK(cudaFree(d_y));
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(11);
  const Case cases[] = {
      {"1 row, 1024 x 1024", 1, 1024, 1024, Kind::kPlain},
      {"2 rows, 1024 x 1024", 2, 1024, 1024, Kind::kPlain},
      {"5 rows, QKV 4096 x 1024", 5, 4096, 1024, Kind::kPlain},
      {"8 rows, output 1024 x 2048 + residual", 8, 1024, 2048, Kind::kResidual},
      {"17 rows, gate/up 2 x 3072 x 1024, SwiGLU", 17, 3072, 1024, Kind::kSwiGLU},
      {"32 rows, down 1024 x 3072 + residual", 32, 1024, 3072, Kind::kResidual},
      {"32 rows, 8B down 4096 x 12288 + residual", 32, 4096, 12288, Kind::kResidual},
      {"40 rows, 1024 x 1056", 40, 1024, 1056, Kind::kPlain},
      {"64 rows, 2 x 2048 x 4096, SwiGLU", 64, 2048, 4096, Kind::kSwiGLU},
      {"64 rows, 8B QKV 6144 x 4096", 64, 6144, 4096, Kind::kPlain},
      // Odd shapes: 9 and 33 rows (a tile part empty), 1,040 and 272 outputs, inputs of 3 chunks and
      // of one.
      {"9 rows, 1040 x 1056", 9, 1040, 1056, Kind::kPlain},
      {"16 rows, 1024 x 2048 + residual", 16, 1024, 2048, Kind::kResidual},
      {"24 rows, gate/up 2 x 1552 x 96, SwiGLU", 24, 1552, 96, Kind::kSwiGLU},
      {"33 rows, 272 x 32 + residual", 33, 272, 32, Kind::kResidual},
      {"48 rows, 8B output 4096 x 4096 + residual", 48, 4096, 4096, Kind::kResidual},
      // The input normed first: Qwen3's widths take rms_norm's register kernel, 1,056 its general one.
      {"1 row, QKV 4096 x 1024, norm", 1, 4096, 1024, Kind::kPlain, true},
      {"3 rows, gate/up 2 x 3072 x 1024, SwiGLU, norm", 3, 3072, 1024, Kind::kSwiGLU, true},
      {"2 rows, 1024 x 1056, norm", 2, 1024, 1056, Kind::kPlain, true},
      {"4 rows, 8B QKV 6144 x 4096, norm", 4, 6144, 4096, Kind::kPlain, true},
      {"4 rows, 8B gate/up 2 x 12288 x 4096, SwiGLU, norm", 4, 12288, 4096, Kind::kSwiGLU, true},
  };
  bool ok = true;
  for (const bool fp8 : {false, true}) {
    for (const Case& c : cases) ok &= run_case<__nv_bfloat16>(1, c, fp8, rng);
    for (const Case& c : {cases[3], cases[4], cases[7], cases[10], cases[12], cases[16], cases[17]}) ok &= run_case<__half>(2, c, fp8, rng);
  }
  std::printf(ok ? "all ok\n" : "FAILED\n");
  return ok ? 0 : 1;
}
