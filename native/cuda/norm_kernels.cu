// RMSNorm, the prompt's per-head norm with RoPE into the KV cache, SiLU*up, and the hand-over
// from one chained decode step to the next (declared in cuda/kernels.h).
#include "cuda/kernel_common.cuh"

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

}  // namespace

void rms_norm(int dtype, const void* x, const float* w, void* out, int rows, int dim, float eps, void* stream) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch("rms_norm", rms_norm_kernel<T>, true, dim3(rows), dim3(256), 0, stream, static_cast<const T*>(x), w, static_cast<T*>(out), dim, eps);
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

void silu_mul(int dtype, const void* gate_up, void* out, int rows, int hidden, void* stream) {
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const int total = rows * hidden;
    silu_mul_kernel<T><<<(total + 255) / 256, 256, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<const T*>(gate_up), static_cast<T*>(out), hidden, total);
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
