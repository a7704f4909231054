// Fused CUDA kernels for the compiled decode step (native/cuda_kernels.cu). Plain pointers and
// sizes only, so this header needs neither torch nor the CUDA headers. `dtype` is 0 float32,
// 1 bfloat16, 2 float16; `stream` is a cudaStream_t. Norm scales and cos/sin are float32.
#pragma once

#include <cstdint>

namespace qwen3::cuda {

// out[r, :] = cast(x * rsqrt(mean(x^2) + eps) * w), statistics in float32. x, out: (rows, dim)
void rms_norm(int dtype, const void* x, const float* w, void* out, int rows, int dim, float eps, void* stream);

// One token per row: from qkv (rows, (heads + 2 groups) * hd), per-head RMSNorm and RoPE at
// *position on queries and keys; queries go to q_out (rows, heads, hd), keys and values into
// the caches (rows, groups, capacity, hd) at *position.
void qk_norm_rope_cache(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm,
                        const float* cos, const float* sin, const int64_t* position, void* q_out, void* k_cache,
                        void* v_cache, int rows, int heads, int groups, int hd, int capacity, float eps, void* stream);

// Attention of each query head over positions 0..*position of its key/value group.
// q: (rows, heads, hd); caches: (rows, groups, capacity, hd); out: (rows, heads * hd)
void decode_attention(int dtype, const void* q, const void* k_cache, const void* v_cache, const int64_t* position,
                      void* out, int rows, int heads, int groups, int hd, int capacity, float scale, void* stream);

// out = cast(silu(g) * u) where gate_up is (rows, 2 * hidden) = [g | u]; out: (rows, hidden)
void silu_mul(int dtype, const void* gate_up, void* out, int rows, int hidden, void* stream);

}  // namespace qwen3::cuda
