// The batch-1 vocabulary head with its argmax, over rows in the compute dtype or FP8 rows
// (gemv_argmax, declared in cuda/kernels.h).
#include "cuda/kernel_common.cuh"
#include "cuda/weight_rows.cuh"

namespace qwen3::cuda {
namespace {

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

// The batch-1 vocabulary head with its argmax: a grid that fits on the GPU at once, each warp
// taking rows n, n + (all warps), ..., with the next row's loads in flight while it sums the
// current one; RMSNorm of the input once per block. It streams the head near the copy
// bandwidth, where a GEMV grid (an RMSNorm per block) or cuBLAS with separate norm, argmax and
// chain kernels measured slower. kFp8: the head is FP8 rows, each sum times its row's scale.
constexpr int kHeadBlocksPerSm = 4;
constexpr int kHeadUnroll = 4;

template <typename T, bool kFp8>
__global__ void __launch_bounds__(kGemvThreads) head_kernel(const void* __restrict__ w, const T* __restrict__ x, const float* __restrict__ norm,
                                                            T* __restrict__ logits, int n_out, int k, float eps, const HeadArgs head) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = reinterpret_cast<T*>(gemv_smem);  // (k,) RMSNorm(x) * norm
  __shared__ float scratch[32];
  constexpr int V = kFp8 ? 16 : 16 / sizeof(T);  // weights per 16-byte load
  const int lane = threadIdx.x & 31, stride = gridDim.x * kGemvWarps;
  const auto row_of = [&](int row) {
    return kFp8 ? fp8_row(w, row, k) : static_cast<const uint8_t*>(w) + static_cast<size_t>(row) * k * sizeof(T);
  };
  const auto load = [&](const uint8_t* row, int i) { return __ldcs(reinterpret_cast<const uint4*>(row + (kFp8 ? i : i * sizeof(T)))); };
  const auto dot = [&](const uint4& packed, int i) { return kFp8 ? dot_fp8<T>(packed, xs + i) : dot16<T>(packed, xs + i); };
  int n = blockIdx.x * kGemvWarps + (threadIdx.x >> 5);
  uint4 ahead[kHeadUnroll];  // the first loads of the warp's next row
  auto load_ahead = [&](int row) {
    if (row >= n_out) return;
#pragma unroll
    for (int u = 0; u < kHeadUnroll; ++u) {
      const int i = (lane + 32 * u) * V;
      if (i < k) ahead[u] = load(row_of(row), i);
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
    uint4 cur[kHeadUnroll];
#pragma unroll
    for (int u = 0; u < kHeadUnroll; ++u) cur[u] = ahead[u];
    load_ahead(n + stride);
    float acc = 0.f;
#pragma unroll
    for (int u = 0; u < kHeadUnroll; ++u) {
      const int i = (lane + 32 * u) * V;
      if (i < k) acc += dot(cur[u], i);
    }
    const uint8_t* row = row_of(n);
    for (int i = (lane + 32 * kHeadUnroll) * V; i < k; i += 32 * V) acc += dot(load(row, i), i);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if constexpr (kFp8) acc *= fp8_scale(row, k);
    const T out = from_f<T>(acc);
    if (lane == 0) logits[n] = out;
    const float v = to_f(out);  // argmax of the rounded logits, as the reference sees them
    if (argmax_before(v, n, best_v, best_i)) best_v = v, best_i = n;
  }
  argmax_tail<T>(best_v, best_i, head, k);
}

}  // namespace

int sm_count() { return multiprocessors(); }

int head_blocks(int n_out) { return std::max(1, std::min((n_out + kGemvWarps - 1) / kGemvWarps, sm_count() * kHeadBlocksPerSm)); }

size_t head_scratch_floats(int n_out) { return 2 * static_cast<size_t>(head_blocks(n_out)); }

void gemv_argmax(int dtype, bool fp8_rows, const void* w, const void* x, const float* norm, void* logits, int n_out, int k, float eps,
                 float* scratch, int* done, int64_t* next, const StepChain* chain, void* stream) {
  const int bytes = dtype == 0 ? 4 : 2;  // the input's, in shared memory
  if (!(fp8_rows ? gemv_fp8_supported(dtype, k) : gemv_supported(dtype, k)) || k * bytes > kGemvMaxInputBytes) {
    throw std::invalid_argument("gemv_argmax: unsupported input length " + std::to_string(k));
  }
  HeadArgs head{scratch, done, next, chain != nullptr ? *chain : StepChain{}, chain != nullptr};
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch("gemv_argmax", fp8_rows ? head_kernel<T, true> : head_kernel<T, false>, true, dim3(head_blocks(n_out)), dim3(kGemvThreads),
           static_cast<size_t>(k) * sizeof(T), stream, w, static_cast<const T*>(x), norm, static_cast<T*>(logits), n_out, k, eps, head);
  });
  check("gemv_argmax");
}

}  // namespace qwen3::cuda