// The streaming matrix-vector product for inputs too wide for gemv's register path (Qwen3-8B and
// up), over rows in the compute dtype or FP8 rows: gemv and gemv_fp8 launch it where the shape
// allows (stream_gemv below) and their own kernels elsewhere. Included inside each file's
// anonymous namespace use, as weight_rows.cuh is.
//
// A grid that fits on the GPU at once (a StreamShape's blocks a multiprocessor) with the
// outputs dealt out evenly: each block a contiguous run of units (rows, or SwiGLU's gate/up row
// pairs), its warps in groups of `parts`, each group an even share of the block's units, each
// warp of a group one `parts`-th of every row of them. A lane walks its loads as one stream over
// its units, the next `depth` 16-byte loads in flight while it sums the ones before, so
// that no wave of blocks or row boundary drains the memory pipe. Each row's part sums meet in
// shared memory and are added in part order: the same order on every call. What comes between
// the previous kernel's end and the stream (the wait, x' into shared memory, the residual's
// first reads) is kept short: the norm's scales are staged before the wait, x is copied in
// 16-byte loads, each block's first residual values are read with it.
#pragma once

#include "cuda/weight_rows.cuh"

namespace qwen3::cuda {
namespace {

// Two grid shapes (kStreamShapes): four blocks a multiprocessor with four 16-byte loads in flight
// per lane, and, for products whose rows and outputs both number at least kStreamWideMin (Qwen3-
// 32B's), three blocks with six loads each, which leaves room beside them for the next kernel's
// first blocks (measured: docs/performance.md). QWEN3_STREAM_WIDE_MIN overrides the bound at
// compile time, for scripts/cuda-host/gemv_bench.cu's comparisons.
#ifndef QWEN3_STREAM_WIDE_MIN
#define QWEN3_STREAM_WIDE_MIN 5120
#endif
constexpr int kStreamWideMin = QWEN3_STREAM_WIDE_MIN;
struct StreamShape {
  int depth, blocks_per_sm;
};
constexpr StreamShape kStreamShapes[] = {{4, 4}, {6, 3}};
// Narrower rows stay with the per-row kernels (faster there: docs/performance.md); the override is
// for gemv_bench.cu's comparisons too.
#ifndef QWEN3_STREAM_MIN_ROW_BYTES
#define QWEN3_STREAM_MIN_ROW_BYTES 4096
#endif
constexpr int kStreamMinRowBytes = QWEN3_STREAM_MIN_ROW_BYTES;
constexpr int kStreamMinLoads = 4;  // a warp's loads per row and lane, where the width allows
constexpr size_t kStreamMaxShared = 96 * 1024;  // the input (kStreamMaxInputBytes), RMSNorm's scales and the part sums

// RMSNorm's scales into shared memory (ns), before the wait: they are weights, not the previous
// kernel's output.
template <int kInput>
__device__ __forceinline__ void stage_norm(const float* norm, float* ns, int k) {
  if constexpr (kInput == kGemvRmsNorm) {
    for (int i = threadIdx.x; i < k / 4; i += blockDim.x) reinterpret_cast<float4*>(ns)[i] = reinterpret_cast<const float4*>(norm)[i];
  }
}

// x' into shared memory, by the whole block: x copied in 16-byte loads (k * sizeof(T) is a
// multiple of 16 here), then for RMSNorm x' written over x, with block_rms_norm's statistics.
template <typename T, int kInput>
__device__ __forceinline__ void stream_input(const T* x, const float* ns, T* xs, int k, float eps, float* scratch) {
  const int loads = k * static_cast<int>(sizeof(T)) / 16;
  for (int i = threadIdx.x; i < loads; i += blockDim.x) reinterpret_cast<uint4*>(xs)[i] = reinterpret_cast<const uint4*>(x)[i];
  if constexpr (kInput == kGemvRmsNorm) {
    __syncthreads();
    const float rstd = block_rstd(xs, k, eps, scratch);
    for (int i = threadIdx.x; i < k; i += blockDim.x) xs[i] = from_f<T>((to_f(xs[i]) * rstd) * ns[i]);
  }
}

// The sum of a row's `parts` part sums (shared memory), in part order: the same on every call.
__device__ __forceinline__ float sum_parts(const float* p, int parts) {
  float s = 0.f;
  for (int q = 0; q < parts; ++q) s += p[q];
  return s;
}

// Output n of a block whose first output, `first`, had its residual value read before the
// stream (`held`); the others read theirs here.
template <typename T, bool kSwiGLU>
__device__ __forceinline__ void store_block_output(T* y, int n, int first, const float* sums, const T* residual, T held) {
  if (n == first) {
    store_product_value<T, kSwiGLU>(y, n, sums, residual != nullptr, held);
  } else {
    store_product<T, kSwiGLU>(y, n, sums, residual);
  }
}

// Where a lane's stream stands: the unit, its row j (of `rows`) and the load l (of `loads`).
struct StreamCursor {
  int unit, j, l;
  // The next load: the next of the row, else the unit's next row, else the next unit's first.
  __device__ __forceinline__ void advance(int loads, int rows) {
    if (++l == loads) {
      l = 0;
      if (++j == rows) j = 0, ++unit;
    }
  }
};

// The units [lo, hi) of the block (of `units` dealt evenly over the grid), and the share [g_lo,
// g_hi) of its warps' group `group` of `groups`.
struct StreamShare {
  int lo, hi, g_lo, g_hi;
};

__device__ __forceinline__ StreamShare stream_share(int units, int group, int groups) {
  StreamShare s;
  s.lo = static_cast<int>(static_cast<int64_t>(blockIdx.x) * units / gridDim.x);
  s.hi = static_cast<int>(static_cast<int64_t>(blockIdx.x + 1) * units / gridDim.x);
  s.g_lo = s.lo + (s.hi - s.lo) * group / groups;
  s.g_hi = s.lo + (s.hi - s.lo) * (group + 1) / groups;
  return s;
}

// The most warps (up to `most`) that can share a row of `loads` loads a lane, doubled while each
// part stays a whole number of at least kStreamMinLoads loads.
inline int stream_parts(int loads, int most) {
  int parts = 1;
  while (parts < most && loads % (2 * parts) == 0 && loads / (2 * parts) >= kStreamMinLoads) parts *= 2;
  return parts;
}

template <typename T, bool kFp8, int kInput, bool kSwiGLU, int kShape>
__global__ void __launch_bounds__(kGemvThreads, kStreamShapes[kShape].blocks_per_sm)
    stream_gemv_kernel(const void* __restrict__ w, const T* __restrict__ x, const float* __restrict__ norm, const T* residual, T* y,
                       int n_out, int k, float eps, int parts, int loads) {
  constexpr int kRows = kSwiGLU ? 2 : 1;
  constexpr int kStreamDepth = kStreamShapes[kShape].depth;
  constexpr int V = kFp8 ? 16 : 16 / sizeof(T);  // weights per 16-byte load
  constexpr int kWeightBytes = kFp8 ? 1 : sizeof(T);
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = reinterpret_cast<T*>(gemv_smem);                                     // (k,) x'
  float* ns = reinterpret_cast<float*>(gemv_smem + (k * sizeof(T) + 15) / 16 * 16);  // (k,) RMSNorm's scales (kGemvRmsNorm)
  float* partial = ns + (kInput == kGemvRmsNorm ? k : 0);                           // (block's units, kRows, parts)
  __shared__ float scratch[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int groups = kGemvWarps / parts, group = warp / parts, part = warp % parts;
  // The block's units [u_lo, u_hi) and this warp's group's share [g_lo, g_hi).
  const auto [u_lo, u_hi, g_lo, g_hi] = stream_share(n_out, group, groups);
  const size_t row_bytes = kFp8 ? static_cast<size_t>(k) + kFp8RowPad : static_cast<size_t>(k) * sizeof(T);
  const int begin = part * (k / parts) + lane * V;  // the lane's first weight in every row; then every 32 V
  const auto row_of = [&](int unit, int j) { return static_cast<const uint8_t*>(w) + static_cast<size_t>(unit + j * n_out) * row_bytes; };
  const auto fetch = [&](const StreamCursor& c) {
    return __ldcs(reinterpret_cast<const uint4*>(row_of(c.unit, c.j) + static_cast<size_t>(begin + 32 * V * c.l) * kWeightBytes));
  };
  const int total = (g_hi - g_lo) * kRows * loads;  // the lane's loads, the same for the whole warp
  // 1. The stream's first loads, before the input is ready.
  uint4 cur[kStreamDepth], next[kStreamDepth];
  StreamCursor at_load{g_lo, 0, 0};
#pragma unroll
  for (int u = 0; u < kStreamDepth; ++u) {
    if (u < total) cur[u] = fetch(at_load), at_load.advance(loads, kRows);
  }
  stage_norm<kInput>(norm, ns, k);
  pdl_wait();  // the input (and the residual, for in-place updates) is the previous kernel's output
  pdl_launch_dependents();  // after the wait, which the decode attention's early phase needs (kernels.h)
  // The residual at the block's first outputs, read now rather than after the stream.
  const int first = u_lo + static_cast<int>(threadIdx.x);
  T held = from_f<T>(0.f);
  if (residual != nullptr && first < u_hi) held = residual[first];
  // 2. x' in shared memory.
  stream_input<T, kInput>(x, ns, xs, k, eps, scratch);
  __syncthreads();
  // 3. The stream: each row's part sum, reduced over the warp, into `partial`.
  StreamCursor at_sum{g_lo, 0, 0};
  float acc = 0.f;
  for (int f0 = 0; f0 < total; f0 += kStreamDepth) {
#pragma unroll
    for (int u = 0; u < kStreamDepth; ++u) {
      if (f0 + kStreamDepth + u < total) next[u] = fetch(at_load), at_load.advance(loads, kRows);
    }
#pragma unroll
    for (int u = 0; u < kStreamDepth; ++u) {
      if (f0 + u < total) {
        const T* xi = xs + begin + 32 * V * at_sum.l;
        if constexpr (kFp8) {
          acc += dot_fp8<T>(cur[u], xi);
        } else {
          acc += dot16<T>(cur[u], xi);
        }
        if (at_sum.l == loads - 1) {  // the warp's part of this row is summed
          for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
          if (lane == 0) partial[((at_sum.unit - u_lo) * kRows + at_sum.j) * parts + part] = acc;
          acc = 0.f;
        }
        at_sum.advance(loads, kRows);
      }
    }
#pragma unroll
    for (int u = 0; u < kStreamDepth; ++u) cur[u] = next[u];
  }
  __syncthreads();
  // 4. The block's outputs, a thread each: the parts added in order, then the reference's roundings, as gemv's.
  for (int unit = first; unit < u_hi; unit += blockDim.x) {
    float sums[kRows];
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      float s = sum_parts(partial + ((unit - u_lo) * kRows + j) * parts, parts);
      if constexpr (kFp8) s *= fp8_scale(row_of(unit, j), k);
      sums[j] = s;
    }
    store_block_output<T, kSwiGLU>(y, unit, first, sums, residual, held);
  }
}

// On unless QWEN3_NO_STREAM_GEMV is set (to compare with the per-row kernels).
inline bool stream_gemv_enabled() {
  static const bool enabled = !env_set("QWEN3_NO_STREAM_GEMV");
  return enabled;
}

// Whether the streaming kernel takes inputs of k weights (`per_load` to a 16-byte load) of
// `bytes` each: whole loads for every lane of a warp, the input within kStreamMaxInputBytes.
inline bool stream_gemv_fits(int k, int bytes, int per_load) {
  return stream_gemv_enabled() && k % (32 * per_load) == 0 && static_cast<int64_t>(k) * bytes <= kStreamMaxInputBytes;
}

// Lets `kernel` take kStreamMaxShared bytes of shared memory where `shared` is above the default;
// set on each call, since each GPU keeps its own.
template <typename Kernel>
void allow_stream_shared(Kernel kernel, size_t shared, const char* what) {
  if (shared <= 48 * 1024) return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kStreamMaxShared));
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Blocks of `shared` bytes a multiprocessor holds at once, up to `most` (the system keeps 1 KB a
// block).
inline int stream_blocks_per_sm(size_t shared, int most) {
  static const int per_sm = device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, 228 * 1024);
  return std::max(1, std::min(most, static_cast<int>(per_sm / (shared + 1024))));
}

// Launches the streaming kernel for W (n_out or, for SwiGLU, 2 n_out rows of k weights; kFp8: FP8
// rows) where its shape fits: every part a whole number of 16-byte loads per lane, the input and
// the part sums within kStreamMaxShared. Returns false, launching nothing, where it does not.
template <typename T, bool kFp8>
bool stream_gemv(GemvInput input, const void* w, const T* x, const float* norm, const T* residual, T* y, int n_out, int k, float eps,
                 void* stream) {
  constexpr int V = kFp8 ? 16 : 16 / sizeof(T);
  if (!stream_gemv_fits(k, sizeof(T), V) || k * (kFp8 ? 1 : static_cast<int>(sizeof(T))) < kStreamMinRowBytes) return false;
  // The input and RMSNorm's scales are read in 16-byte loads.
  if (!aligned16(x) || !aligned16(norm)) return false;
  const int warp_loads = k / (32 * V);  // a whole row's loads per lane, for one warp
  const int parts = stream_parts(warp_loads, kGemvWarps);
  const int groups = kGemvWarps / parts;
  const bool swiglu = input == kGemvRmsNormSwiGLU;
  // x' and, for RMSNorm, its scales.
  const size_t input_bytes = (static_cast<size_t>(k) * sizeof(T) + 15) / 16 * 16 + (input == kGemvPlain ? 0 : k * sizeof(float));
  // A first guess of the part sums' room sizes the grid; the grid then sizes the room.
  const size_t guess = input_bytes + static_cast<size_t>((n_out + sm_count() - 1) / sm_count()) * (swiglu ? 2 : 1) * parts * sizeof(float);
  const int shape = std::min(n_out, k) >= kStreamWideMin ? 1 : 0;
  const int blocks = std::max(1, std::min(sm_count() * stream_blocks_per_sm(guess, kStreamShapes[shape].blocks_per_sm), (n_out + groups - 1) / groups));
  const int units_max = (n_out + blocks - 1) / blocks;
  const size_t shared = input_bytes + static_cast<size_t>(units_max) * (swiglu ? 2 : 1) * parts * sizeof(float);
  if (shared > kStreamMaxShared) return false;
  auto start = [&](auto kernel) {
    allow_stream_shared(kernel, shared, "stream_gemv");
    launch("stream_gemv", kernel, true, dim3(blocks), dim3(kGemvThreads), shared, stream, w, x, norm, residual, y, n_out, k, eps, parts,
           warp_loads / parts);
  };
  auto start_shape = [&](auto shape) {
    constexpr int kShape = decltype(shape)::value;
    if (swiglu) {
      start(stream_gemv_kernel<T, kFp8, kGemvRmsNorm, true, kShape>);
    } else if (input == kGemvRmsNorm) {
      start(stream_gemv_kernel<T, kFp8, kGemvRmsNorm, false, kShape>);
    } else {
      start(stream_gemv_kernel<T, kFp8, kGemvPlain, false, kShape>);
    }
  };
  if (shape == 1) {
    start_shape(std::integral_constant<int, 1>{});
  } else {
    start_shape(std::integral_constant<int, 0>{});
  }
  return true;
}

}  // namespace
}  // namespace qwen3::cuda
