// What the matrix-vector kernels share (gemv_kernels.cu, fp8_gemv.cu, head_kernel.cu, and
// batch_product.cu): the block shape, the input's preparation in shared memory or in a lane's
// registers, the widening of E4M3 pairs, and the dot product of one 16-byte load of a weight row
// with the input, for rows in the compute dtype and for FP8 rows (model/fp8_weights.h).
// Included inside each file's anonymous namespace use, as kernel_common.cuh is.
#pragma once

#include <cuda_fp8.h>

#include "cuda/kernel_common.cuh"

namespace qwen3::cuda {
namespace {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvMinBlocks = 512;  // about four blocks per SM on a 132-SM Hopper GPU

// How many warps share each output row: doubled until the grid has kGemvMinBlocks blocks, while
// each part stays a whole number of 16-byte loads (`per_load` weights each). A SwiGLU warp takes a
// gate and an up row whole.
inline int gemv_row_parts(int n_out, int k, int per_load, bool swiglu) {
  int parts = 1;
  while (!swiglu && parts < kGemvWarps && (static_cast<int64_t>(n_out) * parts + kGemvWarps - 1) / kGemvWarps < kGemvMinBlocks &&
         k % (2 * parts * per_load) == 0) {
    parts *= 2;
  }
  return parts;
}

// x' into shared memory, by the whole block: x itself, or RMSNorm(x) * norm rounded to T.
template <typename T, int kInput>
__device__ __forceinline__ void gemv_input(const T* x, const float* norm, T* xs, int k, float eps, float* scratch) {
  if constexpr (kInput == kGemvRmsNorm) {
    block_rms_norm(x, norm, xs, k, eps, scratch);
  } else {
    for (int i = threadIdx.x; i < k; i += blockDim.x) xs[i] = x[i];
  }
}

// Two E4M3 values (bytes 2h and 2h + 1 of `word`) as a float16 pair, exactly (one instruction on
// sm_89 and newer).
__device__ __forceinline__ uint32_t e4m3_pair(uint32_t word, int h) {
  const uint16_t pair = static_cast<uint16_t>(h ? word >> 16 : word);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint32_t out;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(out) : "h"(pair));
  return out;
#else
  const __half2_raw out = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
  return static_cast<uint32_t>(out.x) | static_cast<uint32_t>(out.y) << 16;
#endif
}

// 16 / sizeof(T) weights of T against the input at xs (shared memory), in float32.
template <typename T>
__device__ __forceinline__ float dot16(const uint4& packed_w, const T* xs) {
  const uint4 packed_x = *reinterpret_cast<const uint4*>(xs);
  const T* w = reinterpret_cast<const T*>(&packed_w);
  const T* x = reinterpret_cast<const T*>(&packed_x);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < static_cast<int>(16 / sizeof(T)); ++j) sum += to_f(w[j]) * to_f(x[j]);
  return sum;
}

// 16 FP8 (E4M3) weights against the input at xs, in float32: each pair widened to float16 by one
// instruction on Hopper (exact: every E4M3 value is a float16 value), then to float32.
template <typename T>
__device__ __forceinline__ float dot_fp8(const uint4& packed_w, const T* xs) {
  constexpr int kInputLoads = 16 * sizeof(T) / 16;  // 16-byte loads of the input for 16 weights
  uint4 packed_x[kInputLoads];
#pragma unroll
  for (int j = 0; j < kInputLoads; ++j) packed_x[j] = reinterpret_cast<const uint4*>(xs)[j];
  const T* x = reinterpret_cast<const T*>(packed_x);
  const __nv_fp8x2_storage_t* w = reinterpret_cast<const __nv_fp8x2_storage_t*>(&packed_w);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float2 pair = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(w[j], __NV_E4M3)));
    sum += pair.x * to_f(x[2 * j]);
    sum += pair.y * to_f(x[2 * j + 1]);
  }
  return sum;
}

// Output n of a product from its float32 sums, with the reference's roundings: kSwiGLU (sums =
// {gate, up}): silu(g) * u from the rounded products, rounded once; else the product rounded,
// plus the residual's value at n (`held`) where there is one, rounded again.
template <typename T, bool kSwiGLU>
__device__ __forceinline__ void store_product_value(T* y, int n, const float* sums, bool has_residual, T held) {
  if constexpr (kSwiGLU) {
    const float g = to_f(from_f<T>(sums[0])), u = to_f(from_f<T>(sums[1]));
    y[n] = from_f<T>(silu_times(g, u));
  } else {
    T out = from_f<T>(sums[0]);
    if (has_residual) out = from_f<T>(to_f(out) + to_f(held));
    y[n] = out;
  }
}

// The same with the residual read here (residual: null, or the vector to add).
template <typename T, bool kSwiGLU>
__device__ __forceinline__ void store_product(T* y, int n, const float* sums, const T* residual) {
  store_product_value<T, kSwiGLU>(y, n, sums, residual != nullptr, residual != nullptr ? residual[n] : from_f<T>(0.f));
}

// The register path of the one-row products (gemv_kernels.cu) and of the persistent layer walk
// (scripts/cuda-host/persistent_bench.cu): 16-byte loads a lane keeps in flight per row.
constexpr int kGemvUnroll = 4;

// The lane's input values at the positions of its first loads, begin + (lane + 32 u) * V for
// u < kGemvUnroll, straight from global memory (kInRegs: the warp's slice fits in those loads),
// packed as T like the weights (RMSNorm rounds x' to T, so nothing is lost). No shared memory and
// no block-wide barrier stand between the previous kernel's end and the sums. RMSNorm needs the
// whole row in the warp's slice (kParts == 1); `norm_s` holds its scales.
template <typename T, int kInput>
__device__ __forceinline__ void gemv_input_regs(const T* x, const float* norm_s, uint4 (&xp)[kGemvUnroll], int begin, int end, int k,
                                                float eps) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int u = 0; u < kGemvUnroll; ++u) {
    const int i = begin + (lane + 32 * u) * V;
    xp[u] = i < end ? __ldcg(reinterpret_cast<const uint4*>(x + i)) : make_uint4(0, 0, 0, 0);
  }
  if constexpr (kInput == kGemvRmsNorm) {
    float sq = 0.f;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const T* r = reinterpret_cast<const T*>(&xp[u]);
#pragma unroll
      for (int e = 0; e < V; ++e) sq += to_f(r[e]) * to_f(r[e]);
    }
    for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
    const float rstd = rms_scale(sq, k, eps);
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = begin + (lane + 32 * u) * V;
      T* r = reinterpret_cast<T*>(&xp[u]);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (i < end) r[e] = rms_normed<T>(to_f(r[e]), rstd, norm_s[i + e]);  // the reference rounds here
      }
    }
  }
}

// dot16 with both operands in registers. For bfloat16 the input's halves are widened by opaque
// instructions, so the compiler re-widens them for each row instead of holding 32 floats for a
// warp's two rows (which cost the kernel a block per SM, or spills).
template <typename T>
__device__ __forceinline__ float dot_packed(const uint4& packed_w, const uint4& packed_x) {
  float sum = 0.f;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t* w = &packed_w.x;
    const uint32_t* x = &packed_x.x;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      uint32_t lo, hi;
      asm volatile("shl.b32 %0, %1, 16;" : "=r"(lo) : "r"(x[q]));
      asm volatile("and.b32 %0, %1, 0xffff0000;" : "=r"(hi) : "r"(x[q]));
      sum += __uint_as_float(w[q] << 16) * __uint_as_float(lo);  // element 2q sits in the low half
      sum += __uint_as_float(w[q] & 0xffff0000u) * __uint_as_float(hi);
    }
  } else {
    const T* w = reinterpret_cast<const T*>(&packed_w);
    const T* x = reinterpret_cast<const T*>(&packed_x);
#pragma unroll
    for (int e = 0; e < static_cast<int>(16 / sizeof(T)); ++e) sum += to_f(w[e]) * to_f(x[e]);
  }
  return sum;
}

// A lane's part of one row's sum over its warp's slice [begin, end) of the input, in order: its
// weight pieces weights(u, i) (16 bytes at position i) against its input pieces xp (the one-row
// kernels' register path, and the persistent layer walk's).
template <typename T, typename Weights>
__device__ __forceinline__ float lane_row_sum(Weights weights, const uint4 (&xp)[kGemvUnroll], int begin, int end) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
  float acc = 0.f;
#pragma unroll
  for (int u = 0; u < kGemvUnroll; ++u) {
    const int i = begin + (lane + 32 * u) * V;
    const float sum = dot_packed<T>(weights(u, i), xp[u]);  // past `end`, weights(u, i) need not be read
    if (i < end) acc += sum;
  }
  return acc;
}

// FP8 rows: row r's k weights, then its float32 scale, then padding to kFp8RowPad more bytes.
constexpr int kFp8RowPad = 16;

__device__ __forceinline__ const uint8_t* fp8_row(const void* w, size_t row, int k) {
  return static_cast<const uint8_t*>(w) + row * (static_cast<size_t>(k) + kFp8RowPad);
}

__device__ __forceinline__ float fp8_scale(const uint8_t* row, int k) { return __ldg(reinterpret_cast<const float*>(row + k)); }

}  // namespace
}  // namespace qwen3::cuda
