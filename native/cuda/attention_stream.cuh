// The decode step's attention for the shape every Qwen3 model has: 2-byte elements, heads of 128,
// up to eight query heads a key/value group. group_attention (attention_kernel.cu) launches it
// where it applies and its general kernel elsewhere: same contract, same splits of the positions.
//
// One block per (row, group, split): 128 threads in eight teams of 16 lanes, a lane holding 8 of
// a head's 128 dimensions. Each team takes all of the group's query heads at once, so a block
// reads each key and value once (the general kernel gives every query head its own warps, which
// read the same keys again). The teams walk the split's positions interleaved, so at any moment
// a block reads neighbouring positions, and a round's loads are issued before the round before
// it is summed. The step's own heads are finished in registers: RMSNorm's sum over the team's
// 16 lanes, RoPE's partner dimension from the lane 8 away. In the fused phase the split that
// holds the new position stores its key and value and attends to it from registers, so no block
// reads what another block writes.
#pragma once

#include "cuda/attention_splits.cuh"
#include "cuda/head_lanes.cuh"

namespace qwen3::cuda {
namespace {

constexpr int kStreamAttnThreads = 128;
constexpr int kStreamAttnWarps = kStreamAttnThreads / 32;
constexpr int kTeams = kStreamAttnThreads / kTeamLanes;
constexpr int kStreamMaxReps = 8;
static_assert(kStreamAttnThreads == kStreamHeadDim, "the warps' merge gives each thread one dimension");
// Positions a team loads per round: a lane keeps 2 * U 16-byte loads of keys and values in flight
// (twice that while the round before is summed); fewer where eight query heads take the registers.
// (QWEN3_ATTN_ROUND overrides U for scripts/cuda-host/attention_bench.cu's comparisons.)
#ifndef QWEN3_ATTN_ROUND
#define QWEN3_ATTN_ROUND 4
#endif
template <int REPS>
constexpr int kRoundPositions = REPS <= 4 ? QWEN3_ATTN_ROUND : 2;

// A round: the team's U positions first, first + kTeams, ... (zeros past `end`).
template <typename T, int U>
__device__ __forceinline__ void load_round(const T* k_cache, const T* v_cache, int64_t first, int64_t end, uint4 (&k)[U], uint4 (&v)[U],
                                           bool (&valid)[U]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t p = first + u * kTeams;
    valid[u] = p < end;
    k[u] = v[u] = make_uint4(0, 0, 0, 0);
    if (valid[u]) {
      k[u] = *reinterpret_cast<const uint4*>(k_cache + p * kStreamHeadDim);
      v[u] = *reinterpret_cast<const uint4*>(v_cache + p * kStreamHeadDim);
    }
  }
}

// Each query head's scaled score at the round's positions (-inf past the end); the whole warp calls it.
template <typename T, int REPS, int U>
__device__ __forceinline__ void score_round(const float (&q)[REPS][kLaneDims], const uint4 (&k)[U], const bool (&valid)[U], float scale,
                                            float (&score)[U][REPS]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    float kf[kLaneDims];
    unpack8<T>(k[u], kf);
#pragma unroll
    for (int r = 0; r < REPS; ++r) {
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < kLaneDims; ++e) dot += q[r][e] * kf[e];
      dot = team_sum(dot);
      score[u][r] = valid[u] ? dot * scale : -INFINITY;
    }
  }
}

// A lane's running softmax of each query head: max m, sum s, weighted values acc (its dimensions).
template <int REPS>
struct Softmax {
  float m[REPS], s[REPS], acc[REPS][kLaneDims];
};

// Adds a round's positions to the running softmax: one rescale per head and round.
template <typename T, int REPS, int U>
__device__ __forceinline__ void add_round(Softmax<REPS>& st, const float (&score)[U][REPS], const uint4 (&v)[U]) {
  float w[REPS][U];
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    float m_new = st.m[r];
#pragma unroll
    for (int u = 0; u < U; ++u) m_new = fmaxf(m_new, score[u][r]);
    const bool none = m_new == -INFINITY;  // nothing seen yet: a round past the end
    const float correction = none ? 1.f : __expf(st.m[r] - m_new);
    float w_sum = 0.f;
#pragma unroll
    for (int u = 0; u < U; ++u) w_sum += (w[r][u] = none ? 0.f : __expf(score[u][r] - m_new));
    st.s[r] = st.s[r] * correction + w_sum;
#pragma unroll
    for (int e = 0; e < kLaneDims; ++e) st.acc[r][e] *= correction;
    st.m[r] = m_new;
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    float vf[kLaneDims];
    unpack8<T>(v[u], vf);
#pragma unroll
    for (int r = 0; r < REPS; ++r) {
#pragma unroll
      for (int e = 0; e < kLaneDims; ++e) st.acc[r][e] += w[r][u] * vf[e];
    }
  }
}

// Merges lane l's softmax with lane l ^ offset's (the same dimensions of another team).
template <int REPS>
__device__ __forceinline__ void merge_lanes(Softmax<REPS>& st, int offset) {
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    const float m_o = __shfl_xor_sync(0xffffffffu, st.m[r], offset), s_o = __shfl_xor_sync(0xffffffffu, st.s[r], offset);
    const float m_new = fmaxf(st.m[r], m_o);
    const float a = st.m[r] == -INFINITY ? 0.f : __expf(st.m[r] - m_new), b = m_o == -INFINITY ? 0.f : __expf(m_o - m_new);
#pragma unroll
    for (int e = 0; e < kLaneDims; ++e) st.acc[r][e] = st.acc[r][e] * a + __shfl_xor_sync(0xffffffffu, st.acc[r][e], offset) * b;
    st.s[r] = st.s[r] * a + s_o * b;
    st.m[r] = m_new;
  }
}

template <typename T>
struct StreamAttentionArgs {
  const T* qkv;  // (rows, (heads + 2 groups) * 128)
  const float *q_norm, *k_norm, *cos, *sin;
  bool qk_norm;
  const int64_t* position;
  int position_stride;
  const int64_t* row_slots;
  T *k_cache, *v_cache, *out;
  float* partials;
  int* done;
  int heads, groups, capacity;
  int splits;       // the partials' splits a head, from the capacity
  int grid_splits;  // the grid's blocks a row and group: as many as can hold positions, at most `splits`
  int split_limit, min_per_split, phase;
  float scale, eps;
};

// The splits of one row and group merged by the block that finished last, every thread at once:
// thread t first takes split t's max and sum of each head (a split count never passes the block's
// threads), then a quarter of the splits' weighted values for 4 of each head's dimensions, in
// 16-byte loads. `part` holds (4, REPS, 128) floats.
template <typename T, int REPS>
__device__ __forceinline__ void merge_stream_splits(const StreamAttentionArgs<T>& a, int row, int g, int active,
                                                    float (*part)[REPS][kStreamHeadDim]) {
  constexpr int HD = kStreamHeadDim, kParts = kStreamAttnThreads / (HD / 4);
  __shared__ float factor[REPS][kStreamAttnThreads], red_m[kStreamAttnWarps][REPS], red_s[kStreamAttnWarps][REPS];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const size_t head0 = static_cast<size_t>(row) * a.heads + g * REPS;
  float m[REPS], s[REPS];
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    const float* pp = split_partial(a.partials, head0 + r, min(t, active - 1), a.splits, HD);
    m[r] = t < active ? __ldcg(pp) : -INFINITY;
    s[r] = t < active ? __ldcg(pp + 1) : 0.f;
  }
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    float x = m[r];
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    if (lane == 0) red_m[warp][r] = x;
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    float m_all = red_m[0][r];
#pragma unroll
    for (int w = 1; w < kStreamAttnWarps; ++w) m_all = fmaxf(m_all, red_m[w][r]);
    const float f = t < active ? __expf(m[r] - m_all) : 0.f;
    factor[r][t] = f;
    float x = s[r] * f;
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    if (lane == 0) red_s[warp][r] = x;
  }
  __syncthreads();
  const int quad = t % (HD / 4), first = t / (HD / 4);
  float4 acc[REPS];
#pragma unroll
  for (int r = 0; r < REPS; ++r) acc[r] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
  for (int sp = first; sp < active; sp += kParts) {
#pragma unroll
    for (int r = 0; r < REPS; ++r) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(split_partial(a.partials, head0 + r, sp, a.splits, HD) + kPartialHeader) + quad);
      const float f = factor[r][sp];
      acc[r].x += v.x * f, acc[r].y += v.y * f, acc[r].z += v.z * f, acc[r].w += v.w * f;
    }
  }
#pragma unroll
  for (int r = 0; r < REPS; ++r) reinterpret_cast<float4*>(part[first][r])[quad] = acc[r];
  __syncthreads();
  const int d = t;
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    float sum = red_s[0][r], total = part[0][r][d];
#pragma unroll
    for (int w = 1; w < kStreamAttnWarps; ++w) sum += red_s[w][r];
#pragma unroll
    for (int p = 1; p < kParts; ++p) total += part[p][r][d];
    a.out[(head0 + r) * HD + d] = from_f<T>(total / sum);
  }
}

template <typename T, int REPS>
__global__ void __launch_bounds__(kStreamAttnThreads) stream_attention_kernel(const StreamAttentionArgs<T> a) {
  constexpr int U = kRoundPositions<REPS>, HD = kStreamHeadDim;
  __shared__ float warp_m[kStreamAttnWarps][REPS], warp_s[kStreamAttnWarps][REPS];
  __shared__ __align__(16) float warp_acc[kStreamAttnWarps][REPS][HD];
  pdl_launch_dependents();
  // In the early phase the split's cached keys and values (written by earlier steps) load before
  // the wait for the kernel before: kernels.h says why that is safe there. Every block waits
  // before it returns, so that this kernel never finishes before the one before it.
  const bool early = a.phase == kAttendFusedEarly;
  if (!early) pdl_wait();
  const int split = blockIdx.x % a.grid_splits, g = (blockIdx.x / a.grid_splits) % a.groups, row = blockIdx.x / (a.grid_splits * a.groups);
  const int64_t pos = a.position[static_cast<size_t>(row) * a.position_stride];
  if (pos < 0) {
    if (early) pdl_wait();
    if (a.phase != kAttendStoreOnly && split == 0) zero_padding_row(a.out, row, g, REPS, a.heads, HD);
    return;
  }
  const SplitRange range = split_range(pos, split, a.split_limit, a.min_per_split);
  if (split >= range.active || (a.phase == kAttendStoreOnly && !range.owner)) {
    if (early) pdl_wait();
    return;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, team = threadIdx.x / kTeamLanes, d0 = (lane % kTeamLanes) * kLaneDims;
  const int64_t slot = a.row_slots ? a.row_slots[row] : row;  // the row's place in the key/value buffers
  const size_t base = (static_cast<size_t>(slot) * a.groups + g) * a.capacity * HD + d0;
  T* k_cache = a.k_cache + base;  // (capacity, 128) from the lane's dimensions
  T* v_cache = a.v_cache + base;
  const bool stores = range.owner && a.phase != kAttendReadOnly;
  // In the fused phases the owner takes the new position from registers: its rounds stop before it.
  const bool new_in_registers = range.owner && (a.phase == kAttendFused || early);
  const int64_t end = new_in_registers ? pos : range.hi;

  // 1. The first round's loads, then the step's heads' (queries, new key and value, scales, cos
  // and sin), all in flight before any is used.
  uint4 k_round[U], v_round[U];
  bool valid[U];
  if (a.phase != kAttendStoreOnly) load_round<T, U>(k_cache, v_cache, range.lo + team, end, k_round, v_round, valid);
  if (early) pdl_wait();
  const T* src = a.qkv + static_cast<size_t>(row) * (a.heads + 2 * a.groups) * HD + d0;
  uint4 q_raw[REPS], k_raw = make_uint4(0, 0, 0, 0), v_new = make_uint4(0, 0, 0, 0);
  if (a.phase != kAttendStoreOnly) {
#pragma unroll
    for (int r = 0; r < REPS; ++r) q_raw[r] = *reinterpret_cast<const uint4*>(src + (g * REPS + r) * HD);
  }
  const bool new_head = stores && warp == 0;  // warp 0 finishes the new key; its first team stores it
  if (new_head) {
    k_raw = *reinterpret_cast<const uint4*>(src + (a.heads + g) * HD);
    v_new = *reinterpret_cast<const uint4*>(src + (a.heads + a.groups + g) * HD);
  }
  float c[kLaneDims], s[kLaneDims], qn[kLaneDims] = {}, kn[kLaneDims] = {}, k_new[kLaneDims];
  load8(a.cos + pos * HD + d0, c);
  load8(a.sin + pos * HD + d0, s);
  if (a.qk_norm) {
    load8(a.q_norm + d0, qn);
    load8(a.k_norm + d0, kn);
  }

  // 2. The new key and value into the cache; the queries into registers.
  if (new_head) {
    finish_head<T>(k_raw, a.qk_norm, kn, c, s, d0, a.eps, k_new);
    if (lane < kTeamLanes) {
      *reinterpret_cast<uint4*>(k_cache + pos * HD) = pack8<T>(k_new);
      *reinterpret_cast<uint4*>(v_cache + pos * HD) = v_new;
    }
  }
  if (a.phase == kAttendStoreOnly) return;
  float q[REPS][kLaneDims];
#pragma unroll
  for (int r = 0; r < REPS; ++r) finish_head<T>(q_raw[r], a.qk_norm, qn, c, s, d0, a.eps, q[r]);

  // 3. The split's cached positions, a round at a time, the next round's loads issued first.
  Softmax<REPS> st;
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    st.m[r] = -INFINITY;
    st.s[r] = 0.f;
#pragma unroll
    for (int e = 0; e < kLaneDims; ++e) st.acc[r][e] = 0.f;
  }
  for (int64_t first = range.lo; first < end; first += kTeams * U) {  // the same trip count for the whole block
    uint4 k_next[U], v_next[U];
    bool valid_next[U];
    load_round<T, U>(k_cache, v_cache, first + kTeams * U + team, end, k_next, v_next, valid_next);
    float score[U][REPS];
    score_round<T, REPS, U>(q, k_round, valid, a.scale, score);
    add_round<T, REPS, U>(st, score, v_round);
#pragma unroll
    for (int u = 0; u < U; ++u) k_round[u] = k_next[u], v_round[u] = v_next[u], valid[u] = valid_next[u];
  }
  // The new position, from warp 0's first team's registers.
  if (new_in_registers && warp == 0) {
    const uint4 k_one[1] = {pack8<T>(k_new)}, v_one[1] = {v_new};
    const bool one[1] = {true};
    float score[1][REPS];
    score_round<T, REPS, 1>(q, k_one, one, a.scale, score);
    if (lane < kTeamLanes) add_round<T, REPS, 1>(st, score, v_one);
  }

  // 4. The warp's two teams merged, then the warps through shared memory: thread d ends with
  // dimension d of every query head.
  merge_lanes(st, kTeamLanes);
  if (lane < kTeamLanes) {
#pragma unroll
    for (int r = 0; r < REPS; ++r) {
      float4* dst = reinterpret_cast<float4*>(&warp_acc[warp][r][d0]);
      dst[0] = make_float4(st.acc[r][0], st.acc[r][1], st.acc[r][2], st.acc[r][3]);
      dst[1] = make_float4(st.acc[r][4], st.acc[r][5], st.acc[r][6], st.acc[r][7]);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < REPS; ++r) warp_m[warp][r] = st.m[r], warp_s[warp][r] = st.s[r];
  }
  __syncthreads();
  const int d = threadIdx.x;
#pragma unroll
  for (int r = 0; r < REPS; ++r) {
    float m_all = -INFINITY, total = 0.f, sum = 0.f;
#pragma unroll
    for (int w = 0; w < kStreamAttnWarps; ++w) m_all = fmaxf(m_all, warp_m[w][r]);
#pragma unroll
    for (int w = 0; w < kStreamAttnWarps; ++w) {
      if (warp_m[w][r] == -INFINITY) continue;  // a warp that saw no position
      const float f = __expf(warp_m[w][r] - m_all);
      total += warp_acc[w][r][d] * f;
      sum += warp_s[w][r] * f;
    }
    const size_t head = static_cast<size_t>(row) * a.heads + g * REPS + r;
    if (range.active == 1) {
      a.out[head * HD + d] = from_f<T>(total / sum);
    } else {
      float* pp = split_partial(a.partials, head, split, a.splits, HD);
      pp[kPartialHeader + d] = total;
      if (d == 0) pp[0] = m_all, pp[1] = sum;
    }
  }
  if (range.active == 1) return;

  // 5. The split that finishes last merges the splits (warp_acc is free again for it).
  int* counter = a.done + static_cast<size_t>(row) * a.groups + g;
  if (!last_split_to_finish(counter, range.active)) return;
  merge_stream_splits<T, REPS>(a, row, g, range.active, warp_acc);
  if (threadIdx.x == 0) *counter = 0;  // ready for the next step
}

// On unless QWEN3_NO_STREAM_ATTENTION is set (to compare with the general kernel).
inline bool stream_attention_applies(int dtype, int heads, int groups, int hd, bool qk_norm, int max_splits,
                                     std::initializer_list<const void*> buffers, const float* q_norm, const float* k_norm) {
  static const bool enabled = !env_set("QWEN3_NO_STREAM_ATTENTION");
  bool ok = enabled && (dtype == kBFloat16 || dtype == kFloat16) && hd == kStreamHeadDim && groups > 0 && heads % groups == 0 &&
            heads / groups <= kStreamMaxReps && max_splits <= kStreamAttnThreads && (!qk_norm || (aligned16(q_norm) && aligned16(k_norm)));
  for (const void* p : buffers) ok = ok && aligned16(p);
  return ok;
}

// Launches the kernel for `reps` query heads a group (REPS, REPS + 1, ... up to kStreamMaxReps).
// One row's positions split at most as many ways as fill the GPU's multiprocessors once with the
// row's blocks, so that no second wave and no more partials than that wait on the last block.
template <typename T, int REPS = 1>
void launch_stream_attention(int reps, int rows, int splits, StreamAttentionArgs<T> args, void* stream) {
  if constexpr (REPS <= kStreamMaxReps) {
    if (reps != REPS) return launch_stream_attention<T, REPS + 1>(reps, rows, splits, args, stream);
    static const int resident = [] {
      int blocks = 0;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, stream_attention_kernel<T, REPS>, kStreamAttnThreads, 0) != cudaSuccess) blocks = 1;
      return std::max(1, blocks) * multiprocessors();
    }();
    if (rows == 1) args.split_limit = std::max(1, std::min(args.split_limit, resident / args.groups));
    args.grid_splits = std::min(splits, args.split_limit);  // no split past split_limit ever holds positions
    launch("stream_attention", stream_attention_kernel<T, REPS>, true, dim3(rows * args.groups * args.grid_splits), dim3(kStreamAttnThreads), 0,
           stream, args);
  }
}

}  // namespace
}  // namespace qwen3::cuda
