// The batch-1 decode step's matrix-vector products and the vocabulary head with its argmax
// (declared in cuda/kernels.h).
#include "cuda/kernel_common.cuh"

namespace qwen3::cuda {
namespace {

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
constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvUnroll = 4;
constexpr int kGemvMinBlocks = 512;  // about four blocks per SM on a 132-SM Hopper GPU

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

template <typename T, int kInput>
__device__ __forceinline__ void gemv_input(const T* x, const float* norm, T* xs, int k, float eps, float* scratch) {
  if constexpr (kInput == kGemvRmsNorm) {
    block_rms_norm(x, norm, xs, k, eps, scratch);
  } else {
    for (int i = threadIdx.x; i < k; i += blockDim.x) xs[i] = x[i];
  }
}

// Argmax order: a NaN above all numbers, then the larger value, then the lower index.
__device__ __forceinline__ bool argmax_before(float v, int i, float best_v, int best_i) {
  const bool nan = isnan(v), best_nan = isnan(best_v);
  if (nan != best_nan) return nan;
  if (!nan && v != best_v) return v > best_v;
  return i < best_i;
}

// The (value, index) that comes first in argmax order among the block's threads; every thread gets it.
__device__ void block_argmax(float& v, int& i, float* vals, int* idx) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (argmax_before(ov, oi, v, i)) v = ov, i = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) vals[warp] = v, idx[warp] = i;
  __syncthreads();
  v = vals[0], i = idx[0];
  for (int w = 1; w < warps; ++w) {
    if (argmax_before(vals[w], idx[w], v, i)) v = vals[w], i = idx[w];
  }
}

// What the head's kernel needs beyond a gemv's arguments (device side of gemv_argmax).
struct HeadArgs {
  float* scratch;  // (blocks, 2): each block's best value and index (as float bits)
  int* done;
  int64_t* next;
  StepChain chain;
  bool chained;
};

// The head kernel's end: each block's best logit goes to head.scratch; the block that finishes
// last picks the overall best and ends the step (see gemv_argmax).
template <typename T>
__device__ void argmax_tail(float v, int i, const HeadArgs& head, int k) {
  __shared__ float vals[32];
  __shared__ int idx[32];
  __shared__ bool last_block;
  block_argmax(v, i, vals, idx);
  if (threadIdx.x == 0) {
    head.scratch[2 * blockIdx.x] = v;
    head.scratch[2 * blockIdx.x + 1] = __int_as_float(i);
    __threadfence();
    last_block = atomicAdd(head.done, 1) == static_cast<int>(gridDim.x) - 1;
  }
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  const StepChain& chain = head.chain;
  v = -INFINITY, i = INT_MAX;
  for (int b = threadIdx.x; b < static_cast<int>(gridDim.x); b += blockDim.x) {
    const float bv = __ldcg(head.scratch + 2 * b);
    const int bi = __float_as_int(__ldcg(head.scratch + 2 * b + 1));
    if (argmax_before(bv, bi, v, i)) v = bv, i = bi;
  }
  block_argmax(v, i, vals, idx);
  if (threadIdx.x == 0) {
    *head.next = i;
    *head.done = 0;  // ready for the next call
    if (head.chained) {
      *chain.ids = i;
      const int64_t column = *chain.counter;
      if (column < chain.max_steps) chain.history[column] = i;
      *chain.position += 1;
      *chain.counter = column + 1;
    }
  }
  if (head.chained) {
    const T* row = static_cast<const T*>(chain.table) + static_cast<size_t>(i) * k;
    T* x_next = static_cast<T*>(chain.x_next);
    for (int d = threadIdx.x; d < k; d += blockDim.x) x_next[d] = row[d];
  }
}

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
    const float rstd = rsqrtf(sq / k + eps);
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = begin + (lane + 32 * u) * V;
      T* r = reinterpret_cast<T*>(&xp[u]);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (i < end) r[e] = from_f<T>((to_f(r[e]) * rstd) * norm_s[i + e]);  // the reference rounds here
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
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = begin + (lane + 32 * u) * V;
      const float sum = dot_packed<T>(first[u], xp[u]);
      if (i < end) acc += sum;
    }
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
    if (unit < n_out) {
      const float g = to_f(from_f<T>(accs[0])), u = to_f(from_f<T>(accs[1]));
      y[unit] = from_f<T>(g / (1.f + __expf(-g)) * u);
    }
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
  pdl_launch_dependents();
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

// The batch-1 vocabulary head with its argmax: a grid that fits on the GPU at once, each warp
// taking rows n, n + (all warps), ..., with the next row's loads in flight while it sums the
// current one; RMSNorm of the input once per block. It streams the head near the copy
// bandwidth, where a GEMV grid (an RMSNorm per block) or cuBLAS with separate norm, argmax and
// chain kernels measured slower.
constexpr int kHeadBlocksPerSm = 4;

template <typename T>
__global__ void __launch_bounds__(kGemvThreads) head_kernel(const T* __restrict__ w, const T* __restrict__ x, const float* __restrict__ norm,
                                                            T* __restrict__ logits, int n_out, int k, float eps, const HeadArgs head) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = reinterpret_cast<T*>(gemv_smem);  // (k,) RMSNorm(x) * norm
  __shared__ float scratch[32];
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31, stride = gridDim.x * kGemvWarps;
  int n = blockIdx.x * kGemvWarps + (threadIdx.x >> 5);
  uint4 ahead[kGemvUnroll];  // the first loads of the warp's next row
  auto load_ahead = [&](int row) {
    if (row >= n_out) return;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = (lane + 32 * u) * V;
      if (i < k) ahead[u] = __ldcs(reinterpret_cast<const uint4*>(w + static_cast<size_t>(row) * k + i));
    }
  };
  load_ahead(n);
  pdl_wait();
  pdl_launch_dependents();
  block_rms_norm(x, norm, xs, k, eps, scratch);
  __syncthreads();
  float best_v = -INFINITY;
  int best_i = INT_MAX;
  for (; n < n_out; n += stride) {  // the same trip count for the whole warp
    uint4 cur[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) cur[u] = ahead[u];
    load_ahead(n + stride);
    float acc = 0.f;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = (lane + 32 * u) * V;
      if (i < k) acc += dot16<T>(cur[u], xs + i);
    }
    const T* row = w + static_cast<size_t>(n) * k;
    for (int i = (lane + 32 * kGemvUnroll) * V; i < k; i += 32 * V) acc += dot16<T>(__ldcs(reinterpret_cast<const uint4*>(row + i)), xs + i);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    const T out = from_f<T>(acc);
    if (lane == 0) logits[n] = out;
    const float v = to_f(out);  // argmax of the rounded logits, as the reference sees them
    if (argmax_before(v, n, best_v, best_i)) best_v = v, best_i = n;
  }
  argmax_tail<T>(best_v, best_i, head, k);
}

}  // namespace

bool gemv_supported(int dtype, int k) {
  const int bytes = dtype == 0 ? 4 : 2;
  return k % (16 / bytes) == 0 && k * bytes <= kGemvMaxInputBytes;
}

void gemv(int dtype, GemvInput input, const void* w, const void* x, const float* norm, const void* residual, void* y, int n_out, int k,
          float eps, void* stream) {
  if (!gemv_supported(dtype, k)) throw std::invalid_argument("gemv: unsupported input length " + std::to_string(k));
  if (input < kGemvPlain || input > kGemvRmsNormSwiGLU) throw std::invalid_argument("gemv: unknown input kind");
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int V = 16 / sizeof(T);
    const bool swiglu = input == kGemvRmsNormSwiGLU;
    // Split rows over more warps until there are enough blocks (each part a whole number of loads).
    int parts = 1;
    while (!swiglu && parts < kGemvWarps && (static_cast<int64_t>(n_out) * parts + kGemvWarps - 1) / kGemvWarps < kGemvMinBlocks &&
           k % (2 * parts * V) == 0) {
      parts *= 2;
    }
    // Where rows are many enough that each has a warp to itself, a warp takes two: half the
    // blocks, so more of the next kernel's blocks fit beside them and start their loads early.
    // A SwiGLU warp takes a gate row and its up row.
    const int outputs_per_block = swiglu ? kGemvWarps : kGemvWarps / parts * (parts == 1 ? 2 : 1);
    const int blocks = (n_out + outputs_per_block - 1) / outputs_per_block;
    // The register path where the warp's slice fits in its first loads (and, for RMSNorm, is the whole row).
    const bool normed = input != kGemvPlain;
    const bool in_regs = k / parts <= 32 * kGemvUnroll * V && (!normed || parts == 1);
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

int sm_count() {
  static const int count = [] {
    int device = 0, n = 0;
    if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 132;
    return n;
  }();
  return count;
}

int head_blocks(int n_out) { return std::max(1, std::min((n_out + kGemvWarps - 1) / kGemvWarps, sm_count() * kHeadBlocksPerSm)); }

size_t head_scratch_floats(int n_out) { return 2 * static_cast<size_t>(head_blocks(n_out)); }

void gemv_argmax(int dtype, const void* w, const void* x, const float* norm, void* logits, int n_out, int k, float eps, float* scratch,
                 int* done, int64_t* next, const StepChain* chain, void* stream) {
  if (!gemv_supported(dtype, k)) throw std::invalid_argument("gemv_argmax: unsupported input length " + std::to_string(k));
  HeadArgs head{scratch, done, next, chain != nullptr ? *chain : StepChain{}, chain != nullptr};
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch("gemv_argmax", head_kernel<T>, true, dim3(head_blocks(n_out)), dim3(kGemvThreads), static_cast<size_t>(k) * sizeof(T), stream,
           static_cast<const T*>(w), static_cast<const T*>(x), norm, static_cast<T*>(logits), n_out, k, eps, head);
  });
  check("gemv_argmax");
}

}  // namespace qwen3::cuda
