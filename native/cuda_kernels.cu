// Fused kernels for the one-token decode step: each replaces 6-20 small ATen kernels, which is
// what bounds a batch-1 decode once the step is a CUDA graph (the weights stream in ~0.3 ms on
// an H200; each kernel costs ~2 us to launch and drain). Arithmetic is float32 throughout and
// rounds to the model dtype where the reference rounds.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <stdexcept>
#include <type_traits>
#include <string>

#include "cuda_kernels.h"

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
  pdl_wait();
  pdl_launch_dependents();
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

// One block of 16 warps per (row, query head); each warp runs an online softmax over every 16th
// position, then the warps' partial results are merged. Each lane holds hd/32 dims.
constexpr int kAttnWarps = 16;
constexpr int kMaxDimsPerLane = 8;  // head_dim up to 256

template <typename T>
__global__ void decode_attention_kernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                                        const int64_t* __restrict__ position, T* __restrict__ out, int heads, int groups, int hd,
                                        int capacity, float scale) {
  __shared__ float part_m[kAttnWarps], part_s[kAttnWarps];
  extern __shared__ float part_acc[];  // kAttnWarps * hd
  pdl_wait();
  pdl_launch_dependents();
  const int row = blockIdx.x / heads, head = blockIdx.x % heads, g = head / (heads / groups);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, per_lane = hd / 32;
  const int64_t length = *position + 1;
  float qv[kMaxDimsPerLane], acc[kMaxDimsPerLane];
  const T* qh = q + (static_cast<size_t>(row) * heads + head) * hd;
  // Loops over the lane's dimensions run to a compile-time bound so the arrays stay in registers.
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    qv[i] = i < per_lane ? to_f(qh[lane + 32 * i]) : 0.f;
    acc[i] = 0.f;
  }
  const size_t base = (static_cast<size_t>(row) * groups + g) * capacity * hd;
  float m = -INFINITY, s = 0.f;
  for (int64_t p = warp; p < length; p += kAttnWarps) {
    const T* kp = k_cache + base + p * hd;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) if (i < per_lane) dot += qv[i] * to_f(kp[lane + 32 * i]);
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float score = dot * scale;
    const float m_new = fmaxf(m, score);
    const float correction = __expf(m - m_new), weight = __expf(score - m_new);
    s = s * correction + weight;
    const T* vp = v_cache + base + p * hd;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) if (i < per_lane) acc[i] = acc[i] * correction + weight * to_f(vp[lane + 32 * i]);
    m = m_new;
  }
  if (lane == 0) {
    part_m[warp] = m;
    part_s[warp] = s;
  }
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) if (i < per_lane) part_acc[warp * hd + lane + 32 * i] = acc[i];
  __syncthreads();
  // Merge the warps' (max, sum, acc) with the usual rescaling; thread t finishes dimension t.
  float m_all = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) m_all = fmaxf(m_all, part_m[w]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float total = 0.f, sum = 0.f;
    for (int w = 0; w < kAttnWarps; ++w) {
      if (part_m[w] == -INFINITY) continue;  // a warp that saw no position
      const float f = __expf(part_m[w] - m_all);
      total += part_acc[w * hd + d] * f;
      sum += part_s[w] * f;
    }
    out[(static_cast<size_t>(row) * heads + head) * hd + d] = from_f<T>(total / sum);
  }
}

// One-row matrix-vector product y = x' W^T (+ residual), for a batch-1 decode step, where cuBLAS
// picks tile shapes meant for matrices and reaches well under half the memory bandwidth. Every
// block first prepares the input row x' in shared memory: x itself, RMSNorm(x) * norm, or
// silu(gate) * up from a [gate | up] row, rounded to T where the reference rounds; the weights
// its warps will need first are already in flight meanwhile (and, with programmatic dependent
// launch, while the kernel before is still finishing). Each output row is streamed by kParts
// warps (each a contiguous slice of k, 16-byte loads, float32 sums), so that a 1024-row matrix
// still fills about four blocks per SM; on an H200 that changed little: at 4-12 MB these
// products are bound by latency more than by how many loads are in flight.
constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvUnroll = 4;
constexpr int kGemvMinBlocks = 512;  // about four blocks per SM on an H100/H200
enum GemvInput { kGemvPlain = 0, kGemvRmsNorm = 1, kGemvSiluMul = 2 };

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

template <typename T, int kInput, int kParts>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const T* __restrict__ w, const T* __restrict__ x, const float* __restrict__ norm,
                                                            const T* residual, T* y, int n_out, int k, float eps) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = reinterpret_cast<T*>(gemv_smem);  // (k,) the prepared input row
  __shared__ float scratch[32];
  __shared__ float partial[kGemvWarps];
  constexpr int V = 16 / sizeof(T);  // elements per 16-byte load
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % kParts;
  const int n = blockIdx.x * (kGemvWarps / kParts) + warp / kParts;
  const bool active = n < n_out;
  const int slice = k / kParts;  // the host guarantees k % (kParts * V) == 0
  const int begin = part * slice, end = begin + slice;
  const T* row = w + static_cast<size_t>(active ? n : 0) * k;
  // Start this warp's first loads before the input is ready.
  uint4 first[kGemvUnroll];
#pragma unroll
  for (int u = 0; u < kGemvUnroll; ++u) {
    const int i = begin + (lane + 32 * u) * V;
    if (active && i < end) first[u] = __ldcs(reinterpret_cast<const uint4*>(row + i));
  }
  pdl_wait();  // the input (and the residual, for in-place updates) is the previous kernel's output
  pdl_launch_dependents();
  if constexpr (kInput == kGemvRmsNorm) {
    block_rms_norm(x, norm, xs, k, eps, scratch);
  } else if constexpr (kInput == kGemvSiluMul) {
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
      const float g = to_f(x[i]), u = to_f(x[k + i]);
      xs[i] = from_f<T>(g / (1.f + __expf(-g)) * u);
    }
  } else {
    for (int i = threadIdx.x; i < k; i += blockDim.x) xs[i] = x[i];
  }
  __syncthreads();
  float acc = 0.f;
  if (active) {
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
  if constexpr (kParts > 1) {
    // The row's first warp adds the parts in a fixed order.
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (part != 0) return;
    acc = 0.f;
#pragma unroll
    for (int p = 0; p < kParts; ++p) acc += partial[warp + p];
  }
  if (lane == 0 && active) {
    T out = from_f<T>(acc);  // the product rounds before the residual add, as in the reference
    if (residual != nullptr) out = from_f<T>(to_f(out) + to_f(residual[n]));
    y[n] = out;
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
  switch (dtype) {
    case 0: f(static_cast<float*>(nullptr)); break;
    case 1: f(static_cast<__nv_bfloat16*>(nullptr)); break;
    case 2: f(static_cast<__half*>(nullptr)); break;
    default: throw std::invalid_argument("unsupported dtype for the fused CUDA kernels");
  }
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
    // A decode step (one token) overlaps its launch with the product before; a prefill's many
    // waves of blocks are better left to run on their own.
    launch("qk_norm_rope_cache", qk_norm_rope_cache_kernel<T>, seq == 1, dim3(rows * seq * (heads + 2 * groups)), dim3(hd), shared, stream,
           static_cast<const T*>(qkv), q_norm, k_norm, qk_norm, cos, sin, position, seq, static_cast<T*>(q_out), static_cast<T*>(k_cache),
           static_cast<T*>(v_cache), heads, groups, hd, capacity, eps);
  });
  check("qk_norm_rope_cache");
}

void decode_attention(int dtype, const void* q, const void* k_cache, const void* v_cache, const int64_t* position, void* out,
                      int rows, int heads, int groups, int hd, int capacity, float scale, void* stream) {
  if (hd % 32 != 0 || hd / 32 > kMaxDimsPerLane) throw std::invalid_argument("fused attention needs head_dim a multiple of 32, at most 256");
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch("decode_attention", decode_attention_kernel<T>, true, dim3(rows * heads), dim3(32 * kAttnWarps), kAttnWarps * hd * sizeof(float),
           stream, static_cast<const T*>(q), static_cast<const T*>(k_cache), static_cast<const T*>(v_cache), position, static_cast<T*>(out),
           heads, groups, hd, capacity, scale);
  });
  check("decode_attention");
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

void gemv(int dtype, int input, const void* w, const void* x, const float* norm, const void* residual, void* y, int n_out, int k,
          float eps, void* stream) {
  if (!gemv_supported(dtype, k)) throw std::invalid_argument("gemv: unsupported input length " + std::to_string(k));
  if (input < kGemvPlain || input > kGemvSiluMul) throw std::invalid_argument("gemv: unknown input kind");
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int V = 16 / sizeof(T);
    // Split rows over more warps until there are enough blocks (each part a whole number of loads).
    int parts = 1;
    while (parts < kGemvWarps && (static_cast<int64_t>(n_out) * parts + kGemvWarps - 1) / kGemvWarps < kGemvMinBlocks &&
           k % (2 * parts * V) == 0) {
      parts *= 2;
    }
    const int rows_per_block = kGemvWarps / parts;
    const int blocks = (n_out + rows_per_block - 1) / rows_per_block;
    const size_t shared = static_cast<size_t>(k) * sizeof(T);
    auto start = [&](auto kernel) {
      launch("gemv", kernel, true, dim3(blocks), dim3(kGemvThreads), shared, stream, static_cast<const T*>(w), static_cast<const T*>(x), norm,
             static_cast<const T*>(residual), static_cast<T*>(y), n_out, k, eps);
    };
    // One instantiation per (input kind, parts).
    auto by_parts = [&](auto input_tag) {
      constexpr int I = decltype(input_tag)::value;
      switch (parts) {
        case 1: start(gemv_kernel<T, I, 1>); break;
        case 2: start(gemv_kernel<T, I, 2>); break;
        case 4: start(gemv_kernel<T, I, 4>); break;
        default: start(gemv_kernel<T, I, 8>); break;
      }
    };
    switch (input) {
      case kGemvPlain: by_parts(std::integral_constant<int, kGemvPlain>()); break;
      case kGemvRmsNorm: by_parts(std::integral_constant<int, kGemvRmsNorm>()); break;
      default: by_parts(std::integral_constant<int, kGemvSiluMul>()); break;
    }
  });
  check("gemv");
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
