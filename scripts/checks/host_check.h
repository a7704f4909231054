// What the standalone kernel checks (scripts/checks/*_check.cu) share on the host: a CUDA error
// check that ends the program, the element conversions of float32, bfloat16 and float16 (and of
// E4M3 bytes to their values), and copies of vectors to and from the device.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                        \
  do {                                                                                  \
    cudaError_t e = (x);                                                                \
    if (e != cudaSuccess) {                                                             \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); \
      std::exit(2);                                                                     \
    }                                                                                   \
  } while (0)

template <typename T> float to_f(T v);
template <> inline float to_f<float>(float v) { return v; }
template <> inline float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> inline float to_f<__half>(__half v) { return __half2float(v); }
template <typename T> T from_f(float v);
template <> inline float from_f<float>(float v) { return v; }
template <> inline __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> inline __half from_f<__half>(float v) { return __float2half(v); }

// E4M3 bits to their value (the checks never make NaN).
inline float e4m3(uint8_t b) {
  const int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
  const float v = exp == 0 ? std::ldexp(man / 8.f, -6) : std::ldexp(1.f + man / 8.f, exp - 7);
  return sign ? -v : v;
}

// RoPE's tables for positions 0..positions-1 of heads of hd (base 10^6, Qwen3's): cos and sin,
// (positions, hd) each, the angle of dimension d that of d - hd/2 past the half.
inline void rope_tables(int positions, int hd, std::vector<float>& cos, std::vector<float>& sin) {
  cos.assign(static_cast<size_t>(positions) * hd, 0.f);
  sin.assign(cos.size(), 0.f);
  for (int p = 0; p < positions; ++p) {
    for (int d = 0; d < hd; ++d) {
      const double angle = p * std::pow(1e6, -static_cast<double>(2 * (d % (hd / 2))) / hd);
      cos[static_cast<size_t>(p) * hd + d] = static_cast<float>(std::cos(angle));
      sin[static_cast<size_t>(p) * hd + d] = static_cast<float>(std::sin(angle));
    }
  }
}

// A device copy of `host` (16 bytes of slack past its end, for kernels' last vector loads).
template <typename T>
T* upload(const std::vector<T>& host) {
  T* dev = nullptr;
  CHECK(cudaMalloc(&dev, host.size() * sizeof(T) + 16));
  CHECK(cudaMemcpy(dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return dev;
}

template <typename T>
std::vector<T> download(const T* dev, size_t n) {
  std::vector<T> host(n);
  CHECK(cudaMemcpy(host.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}
