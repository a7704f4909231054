// What every fused CUDA kernel file shares: element conversions, programmatic dependent launch,
// block reductions, and the host side's launch, error check and dtype switch. Each .cu file
// includes it inside its own anonymous namespace use, so nothing here crosses files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/element_type.h"
#include "cuda/kernels.h"

namespace qwen3::cuda {
namespace {

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }

// SiLU(g) * u in float32, as every kernel that ends a SwiGLU computes it.
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + __expf(-g)) * u; }

// Programmatic dependent launch (Hopper): a kernel launched with it may start while the one
// before is still running. It must wait (pdl_wait) before it reads what that kernel wrote or
// writes anything at all; what it does before (a GEMV's first weight loads) overlaps the
// previous kernel. pdl_launch_dependents lets the next kernel start early in turn. Both are
// no-ops for a kernel launched without the attribute, or below sm_90.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// op(v) over the block, op a commutative, associative pair function whose identity is `none`
// (the value of the lanes past the last warp); every thread gets it. `scratch` holds 32 floats.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch, Op op, float none) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : none;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ float block_sum(float v, float* scratch) {
  return block_reduce(v, scratch, [](float a, float b) { return a + b; }, 0.f);
}

// The largest v over the block; every thread gets it. `scratch` holds 32 floats.
__device__ float block_max(float v, float* scratch) {
  return block_reduce(v, scratch, [](float a, float b) { return fmaxf(a, b); }, -INFINITY);
}

// The RMSNorm scale, rsqrt(mean + eps), from a row's sum of squares over `dim` elements.
__device__ __forceinline__ float rms_scale(float sum_sq, int dim, float eps) { return rsqrtf(sum_sq / dim + eps); }

// One element of RMSNorm(x) * w, rounded to T where the reference rounds it. w is taken by
// reference so that it is loaded after x * rstd is formed: by value, the GEMVs compile to other
// machine code.
template <typename T>
__device__ __forceinline__ T rms_normed(float x, float rstd, const float& w) {
  return from_f<T>((x * rstd) * w);
}

// rsqrt(mean(row^2) + eps) for one row, by the whole block; every thread gets it. Each thread
// sums the squares of elements threadIdx.x, + blockDim.x, ... in order, so any caller gets the
// same bits.
template <typename T>
__device__ float block_rstd(const T* row, int dim, float eps, float* scratch) {
  float sq = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_f(row[i]);
    sq += v * v;
  }
  return rms_scale(block_sum(sq, scratch), dim, eps);
}

// dst = cast(row * rsqrt(mean(row^2) + eps) * w) for one row, by the whole block.
template <typename T>
__device__ void block_rms_norm(const T* __restrict__ row, const float* __restrict__ w, T* __restrict__ dst, int dim, float eps,
                               float* scratch) {
  const float rstd = block_rstd(row, dim, eps, scratch);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = rms_normed<T>(to_f(row[i]), rstd, w[i]);
}

inline void check(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " kernel failed: " + cudaGetErrorString(err));
}

// Whether the environment variable `name` is set to anything but "" or "0" (the switches that
// turn a fast path off, to compare).
inline bool env_set(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' && std::string(value) != "0";
}

// An attribute of the current GPU, or `fallback` where it cannot be read.
inline int device_attribute(cudaDeviceAttr attribute, int fallback) {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&value, attribute, device) != cudaSuccess) return fallback;
  return value;
}

// On sm_90 and newer, unless QWEN3_NO_PDL is set (to compare, or to rule it out).
inline bool pdl_enabled() {
  static const bool enabled = !env_set("QWEN3_NO_PDL") && device_attribute(cudaDevAttrComputeCapabilityMajor, 0) >= 9;
  return enabled;
}

// The current GPU's multiprocessor count (cuda::sm_count), read once per file and process.
inline int multiprocessors() {
  static const int count = device_attribute(cudaDevAttrMultiProcessorCount, 132);
  return count;
}

// Whether p may be read and written in 16-byte loads and stores.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Launches `kernel`, with programmatic dependent launch where `pdl` asks and the GPU has it.
template <typename... Params, typename... Args>
void launch(const char* what, void (*kernel)(Params...), bool pdl, dim3 grid, dim3 block, size_t shared, void* stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared;
  config.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = pdl && pdl_enabled() ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " launch failed: " + cudaGetErrorString(err));
}

// Calls f with a null pointer of the element type that `dtype` names.
template <typename F>
void dispatch(int dtype, F&& f) {
  dispatch_element_type<float, __nv_bfloat16, __half>(dtype, "fused CUDA kernels", std::forward<F>(f));
}

}  // namespace
}  // namespace qwen3::cuda
