// The batch-1 decode step's matrix-vector products over FP8 weight rows (model/fp8_weights.h):
// gemv_fp8, declared in cuda/kernels.h.
#include "cuda/kernel_common.cuh"
#include "cuda/fp8_mma_gemv.cuh"
#include "cuda/stream_gemv.cuh"
#include "cuda/weight_rows.cuh"

namespace qwen3::cuda {
namespace {

// y[n] = s_n * (x' . q_n) in float32, rounded once (then plus the residual, rounded again), as
// gemv does for rows in the compute dtype; a row is half the bytes, so the step reads about half.
// The layout follows gemv's shared-memory path: each warp starts its row's first loads (16
// weights a lane) before it waits for the previous kernel, the block prepares x' in shared
// memory, and a row is split over kParts warps where rows are too few to fill the GPU. A SwiGLU
// warp takes gate row n and up row n_out + n.
constexpr int kFp8Unroll = 4;

template <typename T, int kInput, int kParts, bool kSwiGLU>
__global__ void __launch_bounds__(kGemvThreads) gemv_fp8_kernel(const void* __restrict__ w, const T* __restrict__ x, const float* __restrict__ norm,
                                                                const T* residual, T* y, int n_out, int k, float eps) {
  static_assert(!kSwiGLU || (kParts == 1 && kInput == kGemvRmsNorm), "SwiGLU takes a gate and an up row per warp");
  constexpr int kRows = kSwiGLU ? 2 : 1;
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = reinterpret_cast<T*>(gemv_smem);  // (k,) the prepared input row
  __shared__ float scratch[32];
  __shared__ float partial[kGemvWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % kParts;
  const int unit = blockIdx.x * (kGemvWarps / kParts) + warp / kParts;  // this warp's output
  const bool active = unit < n_out;
  const int slice = k / kParts;  // the host guarantees k % (kParts * 16) == 0
  const int begin = part * slice, end = begin + slice;
  const uint8_t* rows[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) rows[j] = fp8_row(w, active ? unit + j * n_out : 0, k);
  // 1. This warp's first loads, before the input is ready.
  uint4 first[kRows][kFp8Unroll];
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
#pragma unroll
    for (int u = 0; u < kFp8Unroll; ++u) {
      const int i = begin + (lane + 32 * u) * 16;
      if (active && i < end) first[j][u] = __ldcs(reinterpret_cast<const uint4*>(rows[j] + i));
    }
  }
  pdl_wait();  // the input (and the residual, for in-place updates) is the previous kernel's output
  pdl_launch_dependents();  // after the wait, which the decode attention's early phase needs (kernels.h)
  // 2. The input x' in shared memory.
  gemv_input<T, kInput>(x, norm, xs, k, eps, scratch);
  __syncthreads();
  // 3. Each row's sum over the warp's slice, the rest of the slice streamed.
  float accs[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    float acc = 0.f;
    if (active) {
#pragma unroll
      for (int u = 0; u < kFp8Unroll; ++u) {
        const int i = begin + (lane + 32 * u) * 16;
        if (i < end) acc += dot_fp8<T>(first[j][u], xs + i);
      }
      for (int i = begin + (lane + 32 * kFp8Unroll) * 16; i < end; i += 32 * 16 * kFp8Unroll) {
        uint4 next[kFp8Unroll];
#pragma unroll
        for (int u = 0; u < kFp8Unroll; ++u) {
          if (i + 32 * 16 * u < end) next[u] = __ldcs(reinterpret_cast<const uint4*>(rows[j] + i + 32 * 16 * u));
        }
#pragma unroll
        for (int u = 0; u < kFp8Unroll; ++u) {
          if (i + 32 * 16 * u < end) acc += dot_fp8<T>(next[u], xs + i + 32 * 16 * u);
        }
      }
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if constexpr (kParts > 1) {
      // A row split over kParts warps: its first warp adds the parts up, in order.
      if (lane == 0) partial[warp] = acc;
      __syncthreads();
      if (part != 0) return;
      acc = 0.f;
#pragma unroll
      for (int p = 0; p < kParts; ++p) acc += partial[warp + p];
    }
    accs[j] = active ? acc * fp8_scale(rows[j], k) : 0.f;
  }
  // 4. The output: the reference's roundings, as gemv's.
  if (lane != 0 || !active) return;
  store_product<T, kSwiGLU>(y, unit, accs, residual);
}

}  // namespace

bool gemv_fp8_supported(int dtype, int k) {
  const int bytes = dtype == 0 ? 4 : 2;
  return (k % 16 == 0 && k * bytes <= kGemvMaxInputBytes) || stream_gemv_fits(k, bytes, 16);
}

void gemv_fp8(int dtype, GemvInput input, const void* w, const void* x, const float* norm, const void* residual, void* y, int n_out, int k,
              float eps, void* stream) {
  if (!gemv_fp8_supported(dtype, k)) throw std::invalid_argument("gemv_fp8: unsupported input length " + std::to_string(k));
  if (input < kGemvPlain || input > kGemvRmsNormSwiGLU) throw std::invalid_argument("gemv_fp8: unknown input kind");
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (fp8_mma_gemv<T>(input, w, static_cast<const T*>(x), norm, static_cast<const T*>(residual), static_cast<T*>(y), n_out, k, eps, stream)) {
      return;
    }
    if (stream_gemv<T, true>(input, w, static_cast<const T*>(x), norm, static_cast<const T*>(residual), static_cast<T*>(y), n_out, k, eps, stream)) {
      return;
    }
    if (k * sizeof(T) > kGemvMaxInputBytes) throw std::invalid_argument("gemv_fp8: input length " + std::to_string(k) + " too wide for the per-row kernels");
    const bool swiglu = input == kGemvRmsNormSwiGLU;
    const int parts = gemv_row_parts(n_out, k, 16, swiglu);
    const int blocks = (n_out * parts + kGemvWarps - 1) / kGemvWarps;
    const size_t shared = static_cast<size_t>(k) * sizeof(T);
    auto start = [&](auto kernel) {
      launch("gemv_fp8", kernel, true, dim3(blocks), dim3(kGemvThreads), shared, stream, w, static_cast<const T*>(x), norm,
             static_cast<const T*>(residual), static_cast<T*>(y), n_out, k, eps);
    };
    if (swiglu) return start(gemv_fp8_kernel<T, kGemvRmsNorm, 1, true>);
    auto by_parts = [&](auto input_tag) {
      constexpr int I = decltype(input_tag)::value;
      switch (parts) {
        case 1: return start(gemv_fp8_kernel<T, I, 1, false>);
        case 2: return start(gemv_fp8_kernel<T, I, 2, false>);
        case 4: return start(gemv_fp8_kernel<T, I, 4, false>);
        default: return start(gemv_fp8_kernel<T, I, 8, false>);
      }
    };
    if (input == kGemvRmsNorm) {
      by_parts(std::integral_constant<int, kGemvRmsNorm>());
    } else {
      by_parts(std::integral_constant<int, kGemvPlain>());
    }
  });
  check("gemv_fp8");
}

}  // namespace qwen3::cuda
