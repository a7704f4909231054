// The CPU counterparts of the fused CUDA kernels (cuda/kernels.h), for the fast forward
// pass on the CPU: one loop each instead of 6-20 ATen operations, whose dispatch costs about as
// much as the arithmetic on one token's vectors. Plain pointers and sizes; `dtype` is 0 float32,
// 1 bfloat16, 2 float16; norm scales and cos/sin are float32. Arithmetic is float32 throughout
// and rounds to the model dtype where the reference rounds.
#pragma once

#include <cstdint>

namespace qwen3::cpu {

// out[r, :] = cast(x * rsqrt(mean(x^2) + eps) * w). x, out: (rows, dim)
void rms_norm(int dtype, const void* x, const float* w, void* out, int64_t rows, int64_t dim, float eps);

// From qkv (rows, seq, (heads + 2 groups) * hd): per-head RMSNorm (when qk_norm) and RoPE with
// row t of cos/sin (seq, hd) for token t; q_out (rows, heads, seq, hd), k_out and v_out
// (rows, groups, seq, hd).
void qk_norm_rope(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos, const float* sin,
                  void* q_out, void* k_out, void* v_out, int64_t rows, int64_t seq, int64_t heads, int64_t groups, int64_t hd, float eps);

// out = cast(silu(g) * u) where gate_up is (rows, 2 * hidden) = [g | u]; out: (rows, hidden)
void silu_mul(int dtype, const void* gate_up, void* out, int64_t rows, int64_t hidden);

// One query per row and head over `length` cached positions of its key/value group:
// out (rows, heads, hd) = softmax(q k^T * scale) v. q: (rows, heads, hd) contiguous; key/value
// position t of group g in row r starts at r * row_stride + g * group_stride + t * hd.
void decode_attention(int dtype, const void* q, const void* k, const void* v, void* out, int64_t rows, int64_t heads, int64_t groups,
                      int64_t length, int64_t hd, int64_t row_stride, int64_t group_stride, float scale);

// The same with each row at its own length and place: row r attends over lengths[r] positions
// whose group g starts at bases[r] + g * group_stride (sequence slots of different lengths).
void decode_attention_rows(int dtype, const void* q, const void* k, const void* v, void* out, int64_t rows, int64_t heads, int64_t groups,
                           const int64_t* lengths, const int64_t* bases, int64_t hd, int64_t group_stride, float scale);

}  // namespace qwen3::cpu
