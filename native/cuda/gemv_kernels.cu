// The batch-1 decode step's matrix-vector products over bfloat16, float16 or float32 weights
// (declared in cuda/kernels.h; FP8 rows: fp8_gemv.cu; the head: head_kernel.cu).
#include "cuda/kernel_common.cuh"
#include "cuda/stream_gemv.cuh"
#include "cuda/weight_rows.cuh"

namespace qwen3::cuda {
namespace {

// One warp's sum for one weight row over the warp's slice [begin, end) of k, its first loads
// already in `first`: from the input in registers (kInRegs) or in shared memory, streaming the
// rest of the row. The lane partial sums are reduced over the warp.
template <typename T, bool kInRegs>
__device__ __forceinline__ float row_sum(const T* row, const uint4 (&first)[kGemvUnroll], const uint4 (&xp)[kGemvUnroll], const T* xs, int begin,
                                         int end) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
  float acc = 0.f;
  if constexpr (kInRegs) {
    acc = lane_row_sum<T>([&](int u, int) { return first[u]; }, xp, begin, end);
  } else {
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = begin + (lane + 32 * u) * V;
      if (i < end) acc += dot16<T>(first[u], xs + i);
    }
    int i = begin + (lane + 32 * kGemvUnroll) * V;
    for (; i + 32 * V * (kGemvUnroll - 1) < end; i += 32 * V * kGemvUnroll) {
      uint4 next[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) next[u] = __ldcs(reinterpret_cast<const uint4*>(row + i + 32 * V * u));
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) acc += dot16<T>(next[u], xs + i + 32 * V * u);
    }
    for (; i < end; i += 32 * V) acc += dot16<T>(__ldcs(reinterpret_cast<const uint4*>(row + i)), xs + i);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

// Lane 0 of a row's first warp writes the warp's outputs: silu(gate) * up from the rounded
// products, rounded once (kSwiGLU), or each product rounded, then plus the residual, rounded
// again: the reference's order.
template <typename T, int kRows, bool kInRegs, bool kSwiGLU, typename WeightRow>
__device__ __forceinline__ void store_outputs(const float (&accs)[kRows], const float (&res)[kRows], const T* residual, T* y, int unit, int n_out,
                                              WeightRow weight_row) {
  if constexpr (kSwiGLU) {
    if (unit < n_out) store_product<T, true>(y, unit, accs, nullptr);
  } else {
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int n = weight_row(j);
      if (n >= n_out) continue;
      T out = from_f<T>(accs[j]);
      if (residual != nullptr) out = from_f<T>(to_f(out) + (kInRegs ? res[j] : to_f(residual[n])));
      y[n] = out;
    }
  }
}

// One-row matrix-vector product y = x' W^T (+ residual), for a batch-1 decode step, where cuBLAS
// picks tile shapes meant for matrices and reaches well under half the memory bandwidth. Each
// warp starts the loads of its weights first, then waits for the previous kernel (programmatic
// dependent launch lets it start while that one is still finishing). Each output row is streamed
// by kParts warps (each a contiguous slice of k, 16-byte loads, float32 sums), so that a 1024-row
// matrix still fills about four blocks per SM.
// Where a warp's slice fits in its first loads (k up to 1,024 bf16 per slice: all of Qwen3-0.6B's
// products), every lane prepares the input x' for its own positions in registers: x itself, or
// RMSNorm(x) * norm with the sum of squares from warp shuffles: no block-wide barrier or load of
// the scales stands between the previous kernel's end and the sums. Larger k prepares x' once
// per block in shared memory. (More blocks, TMA staging, L2 prefetching and register caps all
// measured slower: docs/performance.md.)
template <typename T, int kInput, int kParts, int kRows, bool kInRegs, bool kSwiGLU>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const T* __restrict__ w, const T* __restrict__ x, const float* __restrict__ norm,
                                                            const T* residual, T* y, int n_out, int k, float eps) {
  static_assert(kRows == 1 || kParts == 1, "a warp takes several rows or a part of one");
  static_assert(!kInRegs || kInput == kGemvPlain || kParts == 1, "RMSNorm in registers needs whole rows per warp");
  static_assert(!kSwiGLU || (kRows == 2 && kInput == kGemvRmsNorm), "SwiGLU takes a gate and an up row per warp");
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = reinterpret_cast<T*>(gemv_smem);              // (k,) the prepared input row (shared-memory path)
  float* norm_s = reinterpret_cast<float*>(gemv_smem);  // (k,) the RMSNorm scales (register path)
  __shared__ float scratch[32];
  __shared__ float partial[kGemvWarps];
  constexpr int V = 16 / sizeof(T);  // elements per 16-byte load
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % kParts;
  const int unit = blockIdx.x * (kGemvWarps / kParts) + warp / kParts;  // this warp's output (pair), or first of kRows
  // The warp's weight rows: kRows consecutive ones, or for SwiGLU gate row `unit` and up row unit + n_out.
  auto weight_row = [&](int j) { return kSwiGLU ? unit + j * n_out : unit * kRows + j; };
  const int n_rows = kSwiGLU ? 2 * n_out : n_out;
  const int slice = k / kParts;  // the host guarantees k % (kParts * V) == 0
  const int begin = part * slice, end = begin + slice;
  // 1. Start this warp's first loads (of each of its rows) before the input is ready.
  uint4 first[kRows][kGemvUnroll];
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    const int n = weight_row(j);
    const T* row = w + static_cast<size_t>(n < n_rows ? n : 0) * k;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = begin + (lane + 32 * u) * V;
      if (n < n_rows && i < end) first[j][u] = __ldcs(reinterpret_cast<const uint4*>(row + i));
    }
  }
  if constexpr (kInRegs && kInput == kGemvRmsNorm) {
    // The scales are weights: staged before the wait.
    for (int i = threadIdx.x; i < k; i += blockDim.x) norm_s[i] = norm[i];
    __syncthreads();
  }
  pdl_wait();  // the input (and the residual, for in-place updates) is the previous kernel's output
  pdl_launch_dependents();  // after the wait, which the decode attention's early phase needs (kernels.h)
  // 2. The input x' (and each output's residual): in the lane's registers, or in shared memory.
  uint4 xp[kGemvUnroll];
  float res[kRows];
  if constexpr (kInRegs) {
    if (residual != nullptr && lane == 0 && part == 0) {
#pragma unroll
      for (int j = 0; j < kRows; ++j) res[j] = weight_row(j) < n_out ? to_f(__ldcg(residual + weight_row(j))) : 0.f;
    }
    gemv_input_regs<T, kInput>(x, norm_s, xp, begin, end, k, eps);
  } else {
    gemv_input<T, kInput>(x, norm, xs, k, eps, scratch);
    __syncthreads();
  }
  // 3. Each row's sum; a row split over kParts warps is added up by its first warp, in order.
  float accs[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    const int n = weight_row(j);
    const bool active = n < n_rows;
    float acc = active ? row_sum<T, kInRegs>(w + static_cast<size_t>(n) * k, first[j], xp, xs, begin, end) : 0.f;
    if constexpr (kParts > 1) {
      if (lane == 0) partial[warp] = acc;
      __syncthreads();
      if (part != 0) return;
      acc = 0.f;
#pragma unroll
      for (int p = 0; p < kParts; ++p) acc += partial[warp + p];
    }
    accs[j] = acc;
  }
  // 4. The outputs.
  if (lane != 0) return;
  store_outputs<T, kRows, kInRegs, kSwiGLU>(accs, res, residual, y, unit, n_out, weight_row);
}

}  // namespace

bool gemv_supported(int dtype, int k) {
  const int bytes = dtype == 0 ? 4 : 2;
  return (k % (16 / bytes) == 0 && k * bytes <= kGemvMaxInputBytes) || stream_gemv_fits(k, bytes, 16 / bytes);
}

void gemv(int dtype, GemvInput input, const void* w, const void* x, const float* norm, const void* residual, void* y, int n_out, int k,
          float eps, void* stream) {
  if (!gemv_supported(dtype, k)) throw std::invalid_argument("gemv: unsupported input length " + std::to_string(k));
  if (input < kGemvPlain || input > kGemvRmsNormSwiGLU) throw std::invalid_argument("gemv: unknown input kind");
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int V = 16 / sizeof(T);
    const bool swiglu = input == kGemvRmsNormSwiGLU;
    const int parts = gemv_row_parts(n_out, k, V, swiglu);
    // Where rows are many enough that each has a warp to itself, a warp takes two: half the
    // blocks, so more of the next kernel's blocks fit beside them and start their loads early.
    // A SwiGLU warp takes a gate row and its up row.
    const int outputs_per_block = swiglu ? kGemvWarps : kGemvWarps / parts * (parts == 1 ? 2 : 1);
    const int blocks = (n_out + outputs_per_block - 1) / outputs_per_block;
    // The register path where the warp's slice fits in its first loads (and, for RMSNorm, is the whole row).
    const bool normed = input != kGemvPlain;
    const bool in_regs = k / parts <= 32 * kGemvUnroll * V && (!normed || parts == 1);
    if (!in_regs && stream_gemv<T, false>(input, w, static_cast<const T*>(x), norm, static_cast<const T*>(residual), static_cast<T*>(y), n_out, k,
                                          eps, stream)) {
      return;
    }
    if (k * sizeof(T) > kGemvMaxInputBytes) throw std::invalid_argument("gemv: input length " + std::to_string(k) + " too wide for the per-row kernels");
    const size_t shared = static_cast<size_t>(k) * (in_regs ? (normed ? sizeof(float) : 0) : sizeof(T));
    auto start = [&](auto kernel) {
      launch("gemv", kernel, true, dim3(blocks), dim3(kGemvThreads), shared, stream, static_cast<const T*>(w), static_cast<const T*>(x), norm,
             static_cast<const T*>(residual), static_cast<T*>(y), n_out, k, eps);
    };
    // One instantiation per (input kind, parts, path).
    auto by_parts = [&](auto regs_tag) {
      constexpr bool R = decltype(regs_tag)::value;
      if (swiglu) return start(gemv_kernel<T, kGemvRmsNorm, 1, 2, R, true>);
      if (normed) {
        switch (parts) {
          case 1: return start(gemv_kernel<T, kGemvRmsNorm, 1, 2, R, false>);
          case 2: if constexpr (!R) return start(gemv_kernel<T, kGemvRmsNorm, 2, 1, R, false>); break;
          case 4: if constexpr (!R) return start(gemv_kernel<T, kGemvRmsNorm, 4, 1, R, false>); break;
          default: if constexpr (!R) return start(gemv_kernel<T, kGemvRmsNorm, 8, 1, R, false>); break;
        }
        throw std::logic_error("gemv: RMSNorm in registers needs whole rows");
      }
      switch (parts) {
        case 1: return start(gemv_kernel<T, kGemvPlain, 1, 2, R, false>);
        case 2: return start(gemv_kernel<T, kGemvPlain, 2, 1, R, false>);
        case 4: return start(gemv_kernel<T, kGemvPlain, 4, 1, R, false>);
        default: return start(gemv_kernel<T, kGemvPlain, 8, 1, R, false>);
      }
    };
    if (in_regs) {
      by_parts(std::true_type());
    } else {
      by_parts(std::false_type());
    }
  });
  check("gemv");
}

}  // namespace qwen3::cuda
