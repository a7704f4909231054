// RMSNorm, the prompt's per-head norm with RoPE into the KV cache, SiLU*up, and the hand-over
// from one chained decode step to the next (declared in cuda/kernels.h).
#include <type_traits>

#include "cuda/head_lanes.cuh"

namespace qwen3::cuda {
namespace {

// Launched with programmatic dependent launch: the next product's weight loads start while rows
// are normed, and this kernel's launch overlaps the end of the one before.
template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, const float* __restrict__ w, T* __restrict__ out, int dim, float eps) {
  __shared__ float scratch[32];
  pdl_launch_dependents();
  pdl_wait();  // x is the previous kernel's output
  block_rms_norm(x + static_cast<size_t>(blockIdx.x) * dim, w, out + static_cast<size_t>(blockIdx.x) * dim, dim, eps, scratch);
}

// The same for rows of kNormThreads * PER elements (every Qwen3 width): each thread holds its PER
// elements and their scales in registers, the scales loaded before the wait, so the row is read
// once and no load waits on the sum. Thread t's elements are t, t + kNormThreads, ... as in
// block_rstd, summed in that order, and each output is rms_normed's: the same bits.
constexpr int kNormThreads = 256;
template <typename T, int PER>
__global__ void __launch_bounds__(kNormThreads) rms_norm_regs_kernel(const T* __restrict__ x, const float* __restrict__ w, T* __restrict__ out,
                                                                     float eps) {
  __shared__ float scratch[32];
  constexpr int dim = kNormThreads * PER;
  pdl_launch_dependents();
  float scale[PER], v[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) scale[i] = w[threadIdx.x + i * kNormThreads];
  pdl_wait();  // x is the previous kernel's output
  const T* row = x + static_cast<size_t>(blockIdx.x) * dim;
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    v[i] = to_f(row[threadIdx.x + i * kNormThreads]);
    sq += v[i] * v[i];
  }
  const float rstd = rms_scale(block_sum(sq, scratch), dim, eps);
  T* dst = out + static_cast<size_t>(blockIdx.x) * dim;
#pragma unroll
  for (int i = 0; i < PER; ++i) dst[threadIdx.x + i * kNormThreads] = rms_normed<T>(v[i], rstd, scale[i]);
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
    const float rstd = rms_scale(block_sum(v * v, smem + hd), hd, eps);
    v = to_f(rms_normed<T>(v, rstd, (is_query ? q_norm : k_norm)[t]));  // the reference rounds here
  }
  smem[t] = v;
  __syncthreads();
  const int half = hd / 2;
  const float rotated = t < half ? -smem[t + half] : smem[t - half];
  const T out = from_f<T>(v * cos[pos * hd + t] + rotated * sin[pos * hd + t]);
  if (is_query) {
    q_out[(static_cast<size_t>(token) * heads + head) * hd + t] = out;
  } else {
    const int g = head - heads;
    k_cache[((static_cast<size_t>(row) * groups + g) * capacity + pos) * hd + t] = out;
  }
}

// The same for heads of 128 in 2-byte elements (every Qwen3 model): a team of 16 lanes per
// (row, token, head), eight a block, each lane 8 dimensions in one 16-byte load and store, no
// block-wide barrier. Queries and keys are finished by finish_head, the decode step's own
// arithmetic (cuda/head_lanes.cuh). The kernel above takes float32 and other head sizes.
constexpr int kPromptHeadThreads = 128;
constexpr int kPromptHeadsPerBlock = kPromptHeadThreads / kTeamLanes;

template <typename T>
__global__ void __launch_bounds__(kPromptHeadThreads)
    prompt_heads_kernel(const T* __restrict__ qkv, const float* __restrict__ q_norm, const float* __restrict__ k_norm, bool qk_norm,
                        const float* __restrict__ cos, const float* __restrict__ sin, const int64_t* __restrict__ position, int seq,
                        T* __restrict__ q_out, T* __restrict__ k_cache, T* __restrict__ v_cache, int heads, int groups, int capacity,
                        int items, float eps) {
  constexpr int hd = kStreamHeadDim;
  const int total_heads = heads + 2 * groups, d0 = (threadIdx.x % kTeamLanes) * kLaneDims;
  const int item = blockIdx.x * kPromptHeadsPerBlock + threadIdx.x / kTeamLanes;
  // A team past the last item computes on item 0 and stores nothing: finish_head's shuffles need the whole warp.
  const bool valid = item < items;
  const int token = valid ? item / total_heads : 0, head = valid ? item % total_heads : 0;
  const int row = token / seq, step = token % seq;
  const int64_t pos = *position + step;
  const uint4 raw = *reinterpret_cast<const uint4*>(qkv + (static_cast<size_t>(token) * total_heads + head) * hd + d0);
  const bool is_query = head < heads, is_value = head >= heads + groups;
  float norm[kLaneDims] = {}, c[kLaneDims], s[kLaneDims], out[kLaneDims];
  if (qk_norm && !is_value) load8((is_query ? q_norm : k_norm) + d0, norm);
  load8(cos + pos * hd + d0, c);
  load8(sin + pos * hd + d0, s);
  finish_head<T>(raw, qk_norm, norm, c, s, d0, eps, out);
  if (!valid) return;
  if (is_value) {  // stored as it is
    *reinterpret_cast<uint4*>(v_cache + ((static_cast<size_t>(row) * groups + head - heads - groups) * capacity + pos) * hd + d0) = raw;
  } else if (is_query) {
    *reinterpret_cast<uint4*>(q_out + (static_cast<size_t>(token) * heads + head) * hd + d0) = pack8<T>(out);
  } else {
    *reinterpret_cast<uint4*>(k_cache + ((static_cast<size_t>(row) * groups + head - heads) * capacity + pos) * hd + d0) = pack8<T>(out);
  }
}

template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int hidden, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int row = i / hidden, j = i % hidden;
  const float g = to_f(gate_up[static_cast<size_t>(row) * 2 * hidden + j]);
  const float u = to_f(gate_up[static_cast<size_t>(row) * 2 * hidden + hidden + j]);
  out[i] = from_f<T>(silu_times(g, u));
}

// The same, 8 outputs a thread in 16-byte loads and stores (hidden a multiple of 8, aligned buffers).
template <typename T>
__global__ void silu_mul8_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int hidden, int total) {
  const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i >= total) return;
  const int row = i / hidden, j = i % hidden;
  const uint4 g8 = *reinterpret_cast<const uint4*>(gate_up + static_cast<size_t>(row) * 2 * hidden + j);
  const uint4 u8 = *reinterpret_cast<const uint4*>(gate_up + static_cast<size_t>(row) * 2 * hidden + hidden + j);
  float g[8], u[8], y[8];
  unpack8<T>(g8, g);
  unpack8<T>(u8, u);
#pragma unroll
  for (int e = 0; e < 8; ++e) y[e] = silu_times(g[e], u[e]);
  *reinterpret_cast<uint4*>(out + i) = pack8<T>(y);
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

}  // namespace

void rms_norm(int dtype, const void* x, const float* w, void* out, int rows, int dim, float eps, void* stream) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const auto* in = static_cast<const T*>(x);
    auto* y = static_cast<T*>(out);
    const auto regs = [&](auto per) {  // per: std::integral_constant, the elements a thread holds
      launch("rms_norm", rms_norm_regs_kernel<T, decltype(per)::value>, true, dim3(rows), dim3(kNormThreads), 0, stream, in, w, y, eps);
    };
    switch (dim) {  // Qwen3's widths: 0.6B, 1.7B, 4B, 8B, 14B and 32B
      case 4 * kNormThreads: return regs(std::integral_constant<int, 4>{});
      case 8 * kNormThreads: return regs(std::integral_constant<int, 8>{});
      case 10 * kNormThreads: return regs(std::integral_constant<int, 10>{});
      case 16 * kNormThreads: return regs(std::integral_constant<int, 16>{});
      case 20 * kNormThreads: return regs(std::integral_constant<int, 20>{});
      default: launch("rms_norm", rms_norm_kernel<T>, true, dim3(rows), dim3(kNormThreads), 0, stream, in, w, y, dim, eps);
    }
  });
  check("rms_norm");
}

void qk_norm_rope_cache(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos,
                        const float* sin, const int64_t* position, int seq, void* q_out, void* k_cache, void* v_cache, int rows,
                        int heads, int groups, int hd, int capacity, float eps, void* stream) {
  if (hd % 32 != 0 || hd > 1024) throw std::invalid_argument("fused kernels need head_dim a multiple of 32, at most 1024");
  const int items = rows * seq * (heads + 2 * groups);  // (row, token, head)
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const auto* in = static_cast<const T*>(qkv);
    auto *q = static_cast<T*>(q_out), *k = static_cast<T*>(k_cache), *v = static_cast<T*>(v_cache);
    // Prompts only (decode steps use group_attention), after cuBLAS products, which start no
    // kernel early: plain launches.
    if constexpr (sizeof(T) == 2) {
      static const bool enabled = !env_set("QWEN3_NO_PROMPT_HEAD_LANES");
      bool lanes = enabled && hd == kStreamHeadDim;  // and every buffer taken in 16-byte loads and stores
      for (const void* p : std::initializer_list<const void*>{qkv, q_out, k_cache, v_cache, cos, sin, q_norm, k_norm}) {
        lanes = lanes && aligned16(p);
      }
      if (lanes) {
        launch("qk_norm_rope_cache", prompt_heads_kernel<T>, false, dim3((items + kPromptHeadsPerBlock - 1) / kPromptHeadsPerBlock),
               dim3(kPromptHeadThreads), 0, stream, in, q_norm, k_norm, qk_norm, cos, sin, position, seq, q, k, v, heads, groups, capacity,
               items, eps);
        return;
      }
    }
    launch("qk_norm_rope_cache", qk_norm_rope_cache_kernel<T>, false, dim3(items), dim3(hd), (hd + 32) * sizeof(float), stream, in, q_norm,
           k_norm, qk_norm, cos, sin, position, seq, q, k, v, heads, groups, hd, capacity, eps);
  });
  check("qk_norm_rope_cache");
}

void silu_mul(int dtype, const void* gate_up, void* out, int rows, int hidden, void* stream) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const int total = rows * hidden;
    const auto* in = static_cast<const T*>(gate_up);
    auto* y = static_cast<T*>(out);
    if constexpr (sizeof(T) == 2) {
      if (hidden % 8 == 0 && aligned16(gate_up) && aligned16(out)) {
        const int threads = total / 8;
        silu_mul8_kernel<T><<<(threads + 255) / 256, 256, 0, static_cast<cudaStream_t>(stream)>>>(in, y, hidden, total);
        return;
      }
    }
    silu_mul_kernel<T><<<(total + 255) / 256, 256, 0, static_cast<cudaStream_t>(stream)>>>(in, y, hidden, total);
  });
  check("silu_mul");
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
