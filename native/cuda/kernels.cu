// Fused kernels for decode steps and prompts: each replaces 6-20 small ATen kernels, whose
// launches and drains, not the weight reads, bound a batch-1 decode once the step is a CUDA
// graph. Arithmetic is float32 throughout and rounds to the model dtype where the reference
// rounds. Measurements behind the choices here: docs/performance.md.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <type_traits>
#include <string>

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

// Sum over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// dst = cast(row * rsqrt(mean(row^2) + eps) * w) for one row, by the whole block.
template <typename T>
__device__ void block_rms_norm(const T* __restrict__ row, const float* __restrict__ w, T* __restrict__ dst, int dim, float eps,
                               float* scratch) {
  float sq = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_f(row[i]);
    sq += v * v;
  }
  const float rstd = rsqrtf(block_sum(sq, scratch) / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = from_f<T>((to_f(row[i]) * rstd) * w[i]);
}

template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, const float* __restrict__ w, T* __restrict__ out, int dim, float eps) {
  __shared__ float scratch[32];
  block_rms_norm(x + static_cast<size_t>(blockIdx.x) * dim, w, out + static_cast<size_t>(blockIdx.x) * dim, dim, eps, scratch);
}

// One block per (row, token, head) with hd threads. Heads [0, heads) are queries, then keys, then
// values. Token t of a row sits at position *position + t: its RoPE angle row and its slot in the
// key/value buffers (capacity slots each).
template <typename T>
__global__ void qk_norm_rope_cache_kernel(const T* __restrict__ qkv, const float* __restrict__ q_norm, const float* __restrict__ k_norm,
                                          bool qk_norm, const float* __restrict__ cos, const float* __restrict__ sin,
                                          const int64_t* __restrict__ position, int seq, T* __restrict__ q_out, T* __restrict__ k_cache,
                                          T* __restrict__ v_cache, int heads, int groups, int hd, int capacity, float eps) {
  extern __shared__ float smem[];  // hd floats, then 32 for the reduction
  const int total_heads = heads + 2 * groups;
  const int token = blockIdx.x / total_heads, head = blockIdx.x % total_heads, t = threadIdx.x;
  const int row = token / seq, step = token % seq;
  const int64_t pos = *position + step;
  float v = to_f(qkv[(static_cast<size_t>(token) * total_heads + head) * hd + t]);
  if (head >= heads + groups) {  // a value head: stored as it is
    const int g = head - heads - groups;
    v_cache[((static_cast<size_t>(row) * groups + g) * capacity + pos) * hd + t] = from_f<T>(v);
    return;
  }
  const bool is_query = head < heads;
  if (qk_norm) {
    const float rstd = rsqrtf(block_sum(v * v, smem + hd) / hd + eps);
    v = to_f(from_f<T>((v * rstd) * (is_query ? q_norm : k_norm)[t]));  // the reference rounds here
  }
  smem[t] = v;
  __syncthreads();
  const int half = hd / 2;
  const float rotated = t < half ? -smem[t + half] : smem[t - half];
  const T out = from_f<T>(v * cos[pos * hd + t] + rotated * sin[pos * hd + t]);
  if (is_query) {
    q_out[((static_cast<size_t>(row) * heads + head) * seq + step) * hd + t] = out;
  } else {
    const int g = head - heads;
    k_cache[((static_cast<size_t>(row) * groups + g) * capacity + pos) * hd + t] = out;
  }
}

// The decode step's attention with the step's own heads finished in the same kernel: one block
// per (row, key/value group, split of the positions). The block first applies the per-head
// RMSNorm and RoPE to the group's query heads and its key head, straight from the QKV product
// (same arithmetic and rounding as qk_norm_rope_cache); the split that holds the new position
// writes its key and value into the cache. Then each of the group's query heads attends over the
// split's positions: a team of lanes reads one position's key (16 bytes a lane), and each team
// keeps an online softmax, merged across teams, warps and (through `partials`, by the block
// that finishes last) splits. (A variant with no block barrier before the merge measured slower.)
constexpr int kGroupAttnThreads = 512;
constexpr int kGroupAttnWarps = kGroupAttnThreads / 32;
constexpr int kGroupAttnMaxSplits = 32;
// A split takes at least this many positions per row of the batch, up to 128: the fastest at
// batch 1; larger batches have blocks enough, and more splits there only repeat the prologue.
constexpr int kPositionsPerSplitPerRow = 32;
constexpr int kMaxPositionsPerSplit = 128;
constexpr int kLaneFloats = 16;  // at most two 16-byte loads of float32 a lane and position

template <typename T>
__global__ void __launch_bounds__(kGroupAttnThreads)
    group_attention_kernel(const T* __restrict__ qkv, const float* __restrict__ q_norm, const float* __restrict__ k_norm, bool qk_norm,
                           const float* __restrict__ cos, const float* __restrict__ sin, const int64_t* __restrict__ position, T* k_cache,
                           T* v_cache, T* __restrict__ out, float* partials, int* done, int heads, int groups, int hd, int capacity, int splits,
                           int min_per_split, float scale, float eps) {
  extern __shared__ float group_smem[];
  constexpr int V = 16 / sizeof(T);
  const int reps = heads / groups;
  float* qs = group_smem;                          // (reps, hd) this step's finished queries
  float* vec = qs + reps * hd;                     // (threads,) staging for RoPE's rotation
  float* part_acc = vec + kGroupAttnThreads;       // (warps, hd)
  float* part_m = part_acc + kGroupAttnWarps * hd;  // (warps,)
  float* part_s = part_m + kGroupAttnWarps;        // (warps,)
  float* red = part_s + kGroupAttnWarps;           // (warps,)
  __shared__ bool last_block;
  pdl_launch_dependents();
  pdl_wait();
  const int split = blockIdx.x % splits, g = (blockIdx.x / splits) % groups, row = blockIdx.x / (splits * groups);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = *position, length = pos + 1;
  // How the positions split depends on the length alone (not on the grid, which follows the
  // buffer's capacity), so eager steps and graph replays add in the same order.
  const int64_t per = max(static_cast<int64_t>(min_per_split), (length + kGroupAttnMaxSplits - 1) / kGroupAttnMaxSplits);
  const int active = static_cast<int>((length + per - 1) / per);
  if (split >= active) return;  // the grid covers the longest length the cache can hold
  const int64_t lo = split * per, hi = min(lo + per, length);
  const bool owner = lo <= pos && pos < hi;
  const T* src = qkv + static_cast<size_t>(row) * (heads + 2 * groups) * hd;
  const size_t base = (static_cast<size_t>(row) * groups + g) * capacity * hd;

  // 1. RMSNorm and RoPE of the group's query heads (j < reps) and key head (j == reps).
  const int per_pass = kGroupAttnThreads / hd, head_warps = hd / 32;
  for (int j0 = 0; j0 <= reps; j0 += per_pass) {
    const int j = j0 + threadIdx.x / hd, d = threadIdx.x % hd;
    const bool in_head = j <= reps;  // threads past the last head only join the reductions
    float v = in_head ? to_f(src[(j < reps ? g * reps + j : heads + g) * hd + d]) : 0.f;
    if (qk_norm) {
      float sq = v * v;
      for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
      if (lane == 0) red[warp] = sq;
      __syncthreads();
      // The head's warps summed pairwise, as block_sum's shuffles add them.
      float w_sums[8];
      const int w0 = (threadIdx.x / hd) * head_warps;
#pragma unroll
      for (int w = 0; w < 8; ++w) w_sums[w] = w < head_warps ? red[w0 + w] : 0.f;
#pragma unroll
      for (int stride = 4; stride > 0; stride >>= 1) {
#pragma unroll
        for (int w = 0; w < stride; ++w) w_sums[w] += w_sums[w + stride];
      }
      const float rstd = rsqrtf(w_sums[0] / hd + eps);
      if (in_head) v = to_f(from_f<T>((v * rstd) * (j < reps ? q_norm : k_norm)[d]));  // the reference rounds here
    }
    vec[threadIdx.x] = v;
    __syncthreads();
    if (in_head) {
      const int half = hd / 2;
      const float rotated = d < half ? -vec[threadIdx.x + half] : vec[threadIdx.x - half];
      const T roped = from_f<T>(v * cos[pos * hd + d] + rotated * sin[pos * hd + d]);
      if (j < reps) {
        qs[j * hd + d] = to_f(roped);
      } else if (owner) {
        k_cache[base + pos * hd + d] = roped;
      }
    }
    __syncthreads();  // vec and red are reused by the next pass
  }
  if (owner) {
    for (int d = threadIdx.x; d < hd; d += blockDim.x) v_cache[base + pos * hd + d] = src[(heads + groups + g) * hd + d];
  }
  __syncthreads();  // the new key and value are in the cache for the loop below

  // 2. Each query head r of the group gets warps_per_head warps; a team of `team` lanes takes one
  // position at a time, each lane `chunks` 16-byte pieces of the key and value.
  const int team = min(32, hd / V), chunks = hd / (team * V), teams = 32 / team;
  const int warps_per_head = kGroupAttnWarps / reps, r = warp / warps_per_head;
  const int t_id = lane / team, t_lane = lane % team;
  float q[kLaneFloats], acc[kLaneFloats];
  float m = -INFINITY, s = 0.f;
#pragma unroll
  for (int i = 0; i < kLaneFloats; ++i) acc[i] = 0.f;
  if (r < reps) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
#pragma unroll
      for (int e = 0; e < V; ++e) q[c * V + e] = c < chunks ? qs[r * hd + (c * team + t_lane) * V + e] : 0.f;
    }
    const int stride = warps_per_head * teams;
    for (int64_t p0 = lo + (warp % warps_per_head) * teams; p0 < hi; p0 += stride) {  // the same trip count for the whole warp
      const int64_t p = p0 + t_id;
      const bool valid = p < hi;
      float dot = 0.f;
      uint4 kv[2], vv[2];
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        if (valid && c < chunks) {
          kv[c] = *reinterpret_cast<const uint4*>(k_cache + base + p * hd + (c * team + t_lane) * V);
          vv[c] = *reinterpret_cast<const uint4*>(v_cache + base + p * hd + (c * team + t_lane) * V);
          const T* kk = reinterpret_cast<const T*>(&kv[c]);
#pragma unroll
          for (int e = 0; e < V; ++e) dot += q[c * V + e] * to_f(kk[e]);
        }
      }
      for (int o = team / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (valid) {
        const float score = dot * scale, m_new = fmaxf(m, score);
        const float correction = __expf(m - m_new), weight = __expf(score - m_new);
        s = s * correction + weight;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          if (c < chunks) {
            const T* vp = reinterpret_cast<const T*>(&vv[c]);
#pragma unroll
            for (int e = 0; e < V; ++e) acc[c * V + e] = acc[c * V + e] * correction + weight * to_f(vp[e]);
          }
        }
        m = m_new;
      }
    }
  }
  // Merge the warp's teams (lanes t_lane of every team hold the same dims).
  for (int o = team; o < 32; o <<= 1) {
    const float m_o = __shfl_xor_sync(0xffffffffu, m, o), s_o = __shfl_xor_sync(0xffffffffu, s, o);
    const float m_new = fmaxf(m, m_o);
    const float a = m == -INFINITY ? 0.f : __expf(m - m_new), b = m_o == -INFINITY ? 0.f : __expf(m_o - m_new);
#pragma unroll
    for (int i = 0; i < kLaneFloats; ++i) acc[i] = acc[i] * a + __shfl_xor_sync(0xffffffffu, acc[i], o) * b;
    s = s * a + s_o * b;
    m = m_new;
  }
  if (lane < team) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
#pragma unroll
      for (int e = 0; e < V; ++e) if (c < chunks) part_acc[warp * hd + (c * team + lane) * V + e] = acc[c * V + e];
    }
  }
  if (lane == 0) {
    part_m[warp] = m;
    part_s[warp] = s;
  }
  __syncthreads();

  // 3. Merge each head's warps; with one split that is the answer, else a partial for the last block.
  const size_t stride_p = hd + 2;
  for (int t = threadIdx.x; t < reps * hd; t += blockDim.x) {
    const int rh = t / hd, d = t % hd, w0 = rh * warps_per_head;
    float m_all = -INFINITY;
    for (int w = w0; w < w0 + warps_per_head; ++w) m_all = fmaxf(m_all, part_m[w]);
    float total = 0.f, sum = 0.f;
    for (int w = w0; w < w0 + warps_per_head; ++w) {
      if (part_m[w] == -INFINITY) continue;  // a warp that saw no position
      const float f = __expf(part_m[w] - m_all);
      total += part_acc[w * hd + d] * f;
      sum += part_s[w] * f;
    }
    const size_t head = static_cast<size_t>(row) * heads + g * reps + rh;
    if (active == 1) {
      out[head * hd + d] = from_f<T>(total / sum);
    } else {
      float* pp = partials + (head * splits + split) * stride_p;
      pp[2 + d] = total;
      if (d == 0) {
        pp[0] = m_all;
        pp[1] = sum;
      }
    }
  }
  if (active == 1) return;
  __threadfence();
  __syncthreads();
  int* counter = done + static_cast<size_t>(row) * groups + g;
  if (threadIdx.x == 0) last_block = atomicAdd(counter, 1) == active - 1;
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  for (int t = threadIdx.x; t < reps * hd; t += blockDim.x) {
    const int rh = t / hd, d = t % hd;
    const size_t head = static_cast<size_t>(row) * heads + g * reps + rh;
    const float* pp = partials + head * splits * stride_p;
    float m_all = -INFINITY;
    for (int sp = 0; sp < active; ++sp) m_all = fmaxf(m_all, __ldcg(pp + sp * stride_p));
    float total = 0.f, sum = 0.f;
    for (int sp = 0; sp < active; ++sp) {
      const float m_sp = __ldcg(pp + sp * stride_p);
      if (m_sp == -INFINITY) continue;  // a split with no positions
      const float f = __expf(m_sp - m_all);
      total += __ldcg(pp + sp * stride_p + 2 + d) * f;
      sum += __ldcg(pp + sp * stride_p + 1) * f;
    }
    out[head * hd + d] = from_f<T>(total / sum);
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next step
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
  // Start this warp's first loads (of each of its rows) before the input is ready.
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
  uint4 xp[kGemvUnroll];
  float res[kRows];  // the residual of each output, read with the input
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
  float accs[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    const int n = weight_row(j);
    const bool active = n < n_rows;
    const T* row = w + static_cast<size_t>(active ? n : 0) * k;
    float acc = 0.f;
    if (active) {
      if constexpr (kInRegs) {
#pragma unroll
        for (int u = 0; u < kGemvUnroll; ++u) {
          const int i = begin + (lane + 32 * u) * V;
          const float sum = dot_packed<T>(first[j][u], xp[u]);
          if (i < end) acc += sum;
        }
      } else {
#pragma unroll
        for (int u = 0; u < kGemvUnroll; ++u) {
          const int i = begin + (lane + 32 * u) * V;
          if (i < end) acc += dot16<T>(first[j][u], xs + i);
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
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if constexpr (kParts > 1) {
      // The row's first warp adds the parts in a fixed order.
      if (lane == 0) partial[warp] = acc;
      __syncthreads();
      if (part != 0) return;
      acc = 0.f;
#pragma unroll
      for (int p = 0; p < kParts; ++p) acc += partial[warp + p];
    }
    accs[j] = acc;
  }
  if (lane != 0) return;
  if constexpr (kSwiGLU) {
    // silu(gate) * up from the rounded products, rounded once, as the reference's SiLU*up kernel.
    if (unit < n_out) {
      const float g = to_f(from_f<T>(accs[0])), u = to_f(from_f<T>(accs[1]));
      y[unit] = from_f<T>(g / (1.f + __expf(-g)) * u);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int n = weight_row(j);
      if (n >= n_out) continue;
      T out = from_f<T>(accs[j]);  // the product rounds before the residual add, as in the reference
      if (residual != nullptr) out = from_f<T>(to_f(out) + (kInRegs ? res[j] : to_f(residual[n])));
      y[n] = out;
    }
  }
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

template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int hidden, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int row = i / hidden, j = i % hidden;
  const float g = to_f(gate_up[static_cast<size_t>(row) * 2 * hidden + j]);
  const float u = to_f(gate_up[static_cast<size_t>(row) * 2 * hidden + hidden + j]);
  out[i] = from_f<T>(g / (1.f + __expf(-g)) * u);
}

// Links one decode step to the next without the host: this step's tokens become the next
// step's input and the history's column *counter; the position and the counter advance.
__global__ void chain_step_kernel(const int64_t* __restrict__ next, int64_t* __restrict__ ids, int64_t* __restrict__ position,
                                  int64_t* __restrict__ history, int64_t* __restrict__ counter, int rows, int max_steps) {
  const int64_t column = *counter;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    ids[r] = next[r];
    if (column < max_steps) history[static_cast<size_t>(r) * max_steps + column] = next[r];
  }
  __syncthreads();  // every thread has read the counter
  if (threadIdx.x == 0) {
    *position += 1;
    *counter = column + 1;
  }
}

void check(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " kernel failed: " + cudaGetErrorString(err));
}

// On sm_90 and newer, unless QWEN3_NO_PDL is set (to compare, or to rule it out).
bool pdl_enabled() {
  static const bool enabled = [] {
    const char* off = std::getenv("QWEN3_NO_PDL");
    if (off != nullptr && *off != '\0' && std::string(off) != "0") return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
    return major >= 9;
  }();
  return enabled;
}

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

void rms_norm(int dtype, const void* x, const float* w, void* out, int rows, int dim, float eps, void* stream) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    rms_norm_kernel<T><<<rows, 256, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<const T*>(x), w, static_cast<T*>(out), dim, eps);
  });
  check("rms_norm");
}

void qk_norm_rope_cache(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos,
                        const float* sin, const int64_t* position, int seq, void* q_out, void* k_cache, void* v_cache, int rows,
                        int heads, int groups, int hd, int capacity, float eps, void* stream) {
  if (hd % 32 != 0 || hd > 1024) throw std::invalid_argument("fused kernels need head_dim a multiple of 32, at most 1024");
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const size_t shared = (hd + 32) * sizeof(float);
    // Prompts only (decode steps use group_attention), after cuBLAS products, which start no
    // kernel early: a plain launch.
    launch("qk_norm_rope_cache", qk_norm_rope_cache_kernel<T>, false, dim3(rows * seq * (heads + 2 * groups)), dim3(hd), shared, stream,
           static_cast<const T*>(qkv), q_norm, k_norm, qk_norm, cos, sin, position, seq, static_cast<T*>(q_out), static_cast<T*>(k_cache),
           static_cast<T*>(v_cache), heads, groups, hd, capacity, eps);
  });
  check("qk_norm_rope_cache");
}

int min_positions_per_split(int rows) { return std::min(kMaxPositionsPerSplit, kPositionsPerSplitPerRow * std::max(1, rows)); }

int attention_splits(int rows, int capacity) {
  const int per = min_positions_per_split(rows);
  return std::max(1, std::min(kGroupAttnMaxSplits, (capacity + per - 1) / per));
}

size_t attention_partials_floats(int rows, int heads, int hd, int capacity) {
  return static_cast<size_t>(rows) * heads * attention_splits(rows, capacity) * (hd + 2);
}

bool group_attention_supported(int dtype, int heads, int groups, int hd) {
  const int bytes = dtype == 0 ? 4 : 2, team = std::min(32, hd * bytes / 16);
  const bool pow2 = hd >= 32 && (hd & (hd - 1)) == 0;
  return pow2 && hd <= 256 && groups > 0 && heads % groups == 0 && heads / groups <= kGroupAttnWarps && hd / (team * (16 / bytes)) <= 2;
}

void group_attention(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos, const float* sin,
                     const int64_t* position, void* k_cache, void* v_cache, void* out, float* partials, int* done, int rows, int heads,
                     int groups, int hd, int capacity, float scale, float eps, void* stream) {
  if (!group_attention_supported(dtype, heads, groups, hd)) throw std::invalid_argument("group_attention: unsupported head layout");
  const int splits = attention_splits(rows, capacity), reps = heads / groups;
  const size_t shared = (static_cast<size_t>(reps) * hd + kGroupAttnThreads + kGroupAttnWarps * hd + 3 * kGroupAttnWarps) * sizeof(float);
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch("group_attention", group_attention_kernel<T>, true, dim3(rows * groups * splits), dim3(kGroupAttnThreads), shared, stream,
           static_cast<const T*>(qkv), q_norm, k_norm, qk_norm, cos, sin, position, static_cast<T*>(k_cache), static_cast<T*>(v_cache),
           static_cast<T*>(out), partials, done, heads, groups, hd, capacity, splits, min_positions_per_split(rows), scale, eps);
  });
  check("group_attention");
}

void silu_mul(int dtype, const void* gate_up, void* out, int rows, int hidden, void* stream) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const int total = rows * hidden;
    silu_mul_kernel<T><<<(total + 255) / 256, 256, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<const T*>(gate_up), static_cast<T*>(out), hidden, total);
  });
  check("silu_mul");
}

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

void chain_step(const int64_t* next, int64_t* ids, int64_t* position, int64_t* history, int64_t* counter, int rows, int max_steps,
                void* stream) {
  chain_step_kernel<<<1, 256, 0, static_cast<cudaStream_t>(stream)>>>(next, ids, position, history, counter, rows, max_steps);
  check("chain_step");
}

void profiler(bool start) {
  if (start) {
    cudaProfilerStart();
  } else {
    cudaProfilerStop();
  }
}

}  // namespace qwen3::cuda
