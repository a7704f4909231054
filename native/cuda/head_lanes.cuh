// A head of 128 dimensions in 2-byte elements held by a team of 16 lanes, 8 dimensions (one
// 16-byte load) a lane: the layout of the decode step's streaming attention (attention_stream.cuh)
// and of the prompt's per-head norm and RoPE (norm_kernels.cu), which finish new heads with the
// same arithmetic, so a key has the same bits whether a prompt or a decode step cached it. RoPE's
// partner dimension (d +- 64) is 8 lanes away, inside the team.
#pragma once

#include "cuda/kernel_common.cuh"

namespace qwen3::cuda {
namespace {

constexpr int kTeamLanes = 16;
constexpr int kLaneDims = 8;                            // one 16-byte load of 2-byte elements
constexpr int kStreamHeadDim = kTeamLanes * kLaneDims;  // 128

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&out)[kLaneDims]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kLaneDims; ++i) out[i] = to_f(e[i]);
}

template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&v)[kLaneDims]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < kLaneDims; ++i) e[i] = from_f<T>(v[i]);
  return raw;
}

__device__ __forceinline__ void load8(const float* p, float (&out)[kLaneDims]) {
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

// Sum over the lane's team (xor offsets below 16 stay inside it); the whole warp calls it.
__device__ __forceinline__ float team_sum(float v) {
#pragma unroll
  for (int o = kTeamLanes / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One new head from the QKV product (`raw`: the lane's dimensions d0..d0+7), finished as the
// reference finishes it: RMSNorm with the scales `norm` rounded to T, then RoPE rounded to T. The
// whole warp calls it.
template <typename T>
__device__ __forceinline__ void finish_head(const uint4& raw, bool qk_norm, const float (&norm)[kLaneDims], const float (&c)[kLaneDims],
                                            const float (&s)[kLaneDims], int d0, float eps, float (&out)[kLaneDims]) {
  float v[kLaneDims];
  unpack8<T>(raw, v);
  if (qk_norm) {
    float sq = 0.f;
#pragma unroll
    for (int e = 0; e < kLaneDims; ++e) sq += v[e] * v[e];
    const float rstd = rms_scale(team_sum(sq), kStreamHeadDim, eps);
#pragma unroll
    for (int e = 0; e < kLaneDims; ++e) v[e] = to_f(rms_normed<T>(v[e], rstd, norm[e]));
  }
  const bool low = d0 < kStreamHeadDim / 2;
#pragma unroll
  for (int e = 0; e < kLaneDims; ++e) {
    const float partner = __shfl_xor_sync(0xffffffffu, v[e], kTeamLanes / 2);  // dimension d +- 64
    const float rotated = low ? -partner : partner;
    out[e] = to_f(from_f<T>(v[e] * c[e] + rotated * s[e]));
  }
}

}  // namespace
}  // namespace qwen3::cuda
