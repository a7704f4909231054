// The decode step's attention (declared in cuda/kernels.h): group_attention launches the streaming
// kernel of attention_stream.cuh for 2-byte heads of 128 (every Qwen3 model in bf16 or fp16) and
// the general kernel below for the rest (float32, other head sizes); both split the positions
// alike and merge the splits in the block that finishes last (attention_splits.cuh).
#include "cuda/attention_splits.cuh"
#include "cuda/attention_stream.cuh"

namespace qwen3::cuda {
namespace {

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
// Splits of one row's positions at most: one row has only `groups` blocks per split, so it takes
// more of them to fill the GPU at long lengths; many rows fill it with fewer. (The QWEN3_ATTN_*
// overrides are for scripts/cuda-host/attention_bench.cu's comparisons.)
#ifndef QWEN3_ATTN_ONE_ROW_SPLITS
#define QWEN3_ATTN_ONE_ROW_SPLITS 64
#endif
#ifndef QWEN3_ATTN_PER_SPLIT_PER_ROW
#define QWEN3_ATTN_PER_SPLIT_PER_ROW 32
#endif
constexpr int kGroupAttnMaxSplits = 32;
constexpr int kOneRowMaxSplits = QWEN3_ATTN_ONE_ROW_SPLITS;
// A split takes at least this many positions per row of the batch, up to 128: the fastest at
// batch 1; larger batches have blocks enough, and more splits there only repeat the prologue.
constexpr int kPositionsPerSplitPerRow = QWEN3_ATTN_PER_SPLIT_PER_ROW;
constexpr int kMaxPositionsPerSplit = 128;
constexpr int kLaneFloats = 16;  // at most two 16-byte loads of float32 a lane and position
// Positions a lane loads before it sums the first (float32 has the registers for two).
template <typename T>
constexpr int kPositionsInFlight = sizeof(T) == 4 ? 2 : 4;
// 16-byte pieces of a position's key a lane reads: two only for float32 heads of 256 (a team is
// at most a warp, and a 2-byte head of up to 256 fits one piece a lane).
template <typename T>
constexpr int kMaxChunks = sizeof(T) == 4 ? 2 : 1;

// Where the block's work lies: its (row, group, split), the positions the split covers, and the
// shared-memory scratch of its steps.
struct GroupBlock {
  int row, g, split, reps;
  int64_t pos, lo, hi;  // the step's position; the split's positions [lo, hi)
  int active;           // splits that hold positions at this length
  bool owner;           // this split holds the new position: it writes the new key and value
  bool stores;          // owner, and the phase writes the cache
  size_t base;          // the (row, group)'s first element in the key/value buffers
  float *qs, *vec, *part_acc, *part_m, *part_s, *red;
};

// 1. RMSNorm and RoPE of the group's query heads (j < reps, into b.qs) and key head (j == reps,
// into the cache by the owner), then the owner stores the new value.
template <typename T>
__device__ __forceinline__ void norm_rope_group(const GroupBlock& b, const T* __restrict__ src, const float* __restrict__ q_norm,
                                                const float* __restrict__ k_norm, bool qk_norm, const float* __restrict__ cos,
                                                const float* __restrict__ sin, T* k_cache, T* v_cache, int heads, int groups, int hd, float eps) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, reps = b.reps, g = b.g;
  const int per_pass = kGroupAttnThreads / hd, head_warps = hd / 32;
  const int64_t pos = b.pos;
  for (int j0 = 0; j0 <= reps; j0 += per_pass) {
    const int j = j0 + threadIdx.x / hd, d = threadIdx.x % hd;
    const bool in_head = j <= reps;  // threads past the last head only join the reductions
    float v = in_head ? to_f(src[(j < reps ? g * reps + j : heads + g) * hd + d]) : 0.f;
    if (qk_norm) {
      float sq = v * v;
      for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
      if (lane == 0) b.red[warp] = sq;
      __syncthreads();
      // The head's warps summed pairwise, as block_sum's shuffles add them.
      float w_sums[8];
      const int w0 = (threadIdx.x / hd) * head_warps;
#pragma unroll
      for (int w = 0; w < 8; ++w) w_sums[w] = w < head_warps ? b.red[w0 + w] : 0.f;
#pragma unroll
      for (int stride = 4; stride > 0; stride >>= 1) {
#pragma unroll
        for (int w = 0; w < stride; ++w) w_sums[w] += w_sums[w + stride];
      }
      const float rstd = rms_scale(w_sums[0], hd, eps);
      if (in_head) v = to_f(rms_normed<T>(v, rstd, (j < reps ? q_norm : k_norm)[d]));  // the reference rounds here
    }
    b.vec[threadIdx.x] = v;
    __syncthreads();
    if (in_head) {
      const int half = hd / 2;
      const float rotated = d < half ? -b.vec[threadIdx.x + half] : b.vec[threadIdx.x - half];
      const T roped = from_f<T>(v * cos[pos * hd + d] + rotated * sin[pos * hd + d]);
      if (j < reps) {
        b.qs[j * hd + d] = to_f(roped);
      } else if (b.stores) {
        k_cache[b.base + pos * hd + d] = roped;
      }
    }
    __syncthreads();  // vec and red are reused by the next pass
  }
  if (b.stores) {
    for (int d = threadIdx.x; d < hd; d += blockDim.x) v_cache[b.base + pos * hd + d] = src[(heads + groups + g) * hd + d];
  }
}

// How the block's warps share the work of step 2: query head r gets warps_per_head warps; a
// team of `team` lanes takes one position at a time, each lane `chunks` 16-byte pieces of the
// key and value.
struct Teams {
  int team, chunks, teams, warps_per_head, r, t_id, t_lane;
};

template <typename T>
__device__ __forceinline__ Teams teams_of(int reps, int hd) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Teams t;
  t.team = min(32, hd / V);
  t.chunks = hd / (t.team * V);
  t.teams = 32 / t.team;
  t.warps_per_head = kGroupAttnWarps / reps;
  t.r = warp / t.warps_per_head;
  t.t_id = lane / t.team;
  t.t_lane = lane % t.team;
  return t;
}

// 2. The lane's online softmax over its team's positions of the split: running max m, sum s, and
// the weighted values acc (its chunks' dimensions).
template <typename T>
__device__ __forceinline__ void attend_positions(const GroupBlock& b, const Teams& t, const T* k_cache, const T* v_cache, int hd, float scale,
                                                 float& m, float& s, float (&acc)[kLaneFloats]) {
  constexpr int V = 16 / sizeof(T);
  const int warp = threadIdx.x >> 5;
  float q[kLaneFloats];
#pragma unroll
  for (int c = 0; c < kMaxChunks<T>; ++c) {
#pragma unroll
    for (int e = 0; e < V; ++e) q[c * V + e] = c < t.chunks ? b.qs[t.r * hd + (c * t.team + t.t_lane) * V + e] : 0.f;
  }
  // Each lane walks the positions p0 + t_id, p0 + t_id + stride, ... in order; kPositionsInFlight
  // of them are loaded before the first is summed, so that a long split streams the cache with
  // several loads in flight per lane rather than one load, a reduction and an exp at a time.
  const int stride = t.warps_per_head * t.teams;
  // The same trip count for the whole warp.
  for (int64_t p0 = b.lo + (warp % t.warps_per_head) * t.teams; p0 < b.hi; p0 += stride * kPositionsInFlight<T>) {
    uint4 kv[kPositionsInFlight<T>][kMaxChunks<T>], vv[kPositionsInFlight<T>][kMaxChunks<T>];
#pragma unroll
    for (int u = 0; u < kPositionsInFlight<T>; ++u) {
      const int64_t p = p0 + u * stride + t.t_id;
#pragma unroll
      for (int c = 0; c < kMaxChunks<T>; ++c) {
        if (p < b.hi && c < t.chunks) {
          kv[u][c] = *reinterpret_cast<const uint4*>(k_cache + b.base + p * hd + (c * t.team + t.t_lane) * V);
          vv[u][c] = *reinterpret_cast<const uint4*>(v_cache + b.base + p * hd + (c * t.team + t.t_lane) * V);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kPositionsInFlight<T>; ++u) {
      const bool valid = p0 + u * stride + t.t_id < b.hi;
      float dot = 0.f;
#pragma unroll
      for (int c = 0; c < kMaxChunks<T>; ++c) {
        if (valid && c < t.chunks) {
          const T* kk = reinterpret_cast<const T*>(&kv[u][c]);
#pragma unroll
          for (int e = 0; e < V; ++e) dot += q[c * V + e] * to_f(kk[e]);
        }
      }
      for (int o = t.team / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (valid) {
        const float score = dot * scale, m_new = fmaxf(m, score);
        const float correction = __expf(m - m_new), weight = __expf(score - m_new);
        s = s * correction + weight;
#pragma unroll
        for (int c = 0; c < kMaxChunks<T>; ++c) {
          if (c < t.chunks) {
            const T* vp = reinterpret_cast<const T*>(&vv[u][c]);
#pragma unroll
            for (int e = 0; e < V; ++e) acc[c * V + e] = acc[c * V + e] * correction + weight * to_f(vp[e]);
          }
        }
        m = m_new;
      }
    }
  }
}

// Merges the warp's teams (lanes t_lane of every team hold the same dimensions) and leaves the
// warp's partial softmax in shared memory.
template <typename T>
__device__ __forceinline__ void store_warp_partial(const GroupBlock& b, const Teams& t, int hd, float m, float s, float (&acc)[kLaneFloats]) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = t.team; o < 32; o <<= 1) {
    const float m_o = __shfl_xor_sync(0xffffffffu, m, o), s_o = __shfl_xor_sync(0xffffffffu, s, o);
    const float m_new = fmaxf(m, m_o);
    const float a = m == -INFINITY ? 0.f : __expf(m - m_new), c = m_o == -INFINITY ? 0.f : __expf(m_o - m_new);
#pragma unroll
    for (int i = 0; i < kLaneFloats; ++i) acc[i] = acc[i] * a + __shfl_xor_sync(0xffffffffu, acc[i], o) * c;
    s = s * a + s_o * c;
    m = m_new;
  }
  if (lane < t.team) {
#pragma unroll
    for (int c = 0; c < kMaxChunks<T>; ++c) {
#pragma unroll
      for (int e = 0; e < V; ++e) if (c < t.chunks) b.part_acc[warp * hd + (c * t.team + lane) * V + e] = acc[c * V + e];
    }
  }
  if (lane == 0) {
    b.part_m[warp] = m;
    b.part_s[warp] = s;
  }
}

// 3. Merges each head's warps: with one split that is the answer (into out), else the split's
// partial (max, sum, weighted values) for the block that finishes last.
template <typename T>
__device__ __forceinline__ void merge_warps(const GroupBlock& b, const Teams& t, T* __restrict__ out, float* partials, int heads, int hd,
                                            int splits) {
  for (int i = threadIdx.x; i < b.reps * hd; i += blockDim.x) {
    const int rh = i / hd, d = i % hd, w0 = rh * t.warps_per_head;
    float m_all = -INFINITY;
    for (int w = w0; w < w0 + t.warps_per_head; ++w) m_all = fmaxf(m_all, b.part_m[w]);
    float total = 0.f, sum = 0.f;
    for (int w = w0; w < w0 + t.warps_per_head; ++w) {
      if (b.part_m[w] == -INFINITY) continue;  // a warp that saw no position
      const float f = __expf(b.part_m[w] - m_all);
      total += b.part_acc[w * hd + d] * f;
      sum += b.part_s[w] * f;
    }
    const size_t head = static_cast<size_t>(b.row) * heads + b.g * b.reps + rh;
    if (b.active == 1) {
      out[head * hd + d] = from_f<T>(total / sum);
    } else {
      float* pp = split_partial(partials, head, b.split, splits, hd);
      pp[kPartialHeader + d] = total;
      if (d == 0) {
        pp[0] = m_all;
        pp[1] = sum;
      }
    }
  }
}

// 4. The last block of a (row, group) to finish merges every split's partial into out.
template <typename T>
__device__ __forceinline__ void merge_splits(const GroupBlock& b, T* __restrict__ out, float* partials, int heads, int hd, int splits) {
  for (int i = threadIdx.x; i < b.reps * hd; i += blockDim.x) {
    const int rh = i / hd, d = i % hd;
    const size_t head = static_cast<size_t>(b.row) * heads + b.g * b.reps + rh;
    float m_all = -INFINITY;
    for (int sp = 0; sp < b.active; ++sp) m_all = fmaxf(m_all, __ldcg(split_partial(partials, head, sp, splits, hd)));
    float total = 0.f, sum = 0.f;
    for (int sp = 0; sp < b.active; ++sp) {
      const float* pp = split_partial(partials, head, sp, splits, hd);
      const float m_sp = __ldcg(pp);
      if (m_sp == -INFINITY) continue;  // a split with no positions
      const float f = __expf(m_sp - m_all);
      total += __ldcg(pp + kPartialHeader + d) * f;
      sum += __ldcg(pp + 1) * f;
    }
    out[head * hd + d] = from_f<T>(total / sum);
  }
}

template <typename T>
__global__ void __launch_bounds__(kGroupAttnThreads)
    group_attention_kernel(const T* __restrict__ qkv, const float* __restrict__ q_norm, const float* __restrict__ k_norm, bool qk_norm,
                           const float* __restrict__ cos, const float* __restrict__ sin, const int64_t* __restrict__ position,
                           int position_stride, const int64_t* __restrict__ row_slots, T* k_cache, T* v_cache, T* __restrict__ out,
                           float* partials, int* done, int heads, int groups, int hd, int capacity, int splits, int split_limit,
                           int min_per_split, float scale, float eps, int phase) {
  extern __shared__ float group_smem[];
  pdl_launch_dependents();
  pdl_wait();
  GroupBlock b;
  b.reps = heads / groups;
  b.qs = group_smem;                         // (reps, hd) this step's finished queries
  b.vec = b.qs + b.reps * hd;                // (threads,) staging for RoPE's rotation
  b.part_acc = b.vec + kGroupAttnThreads;    // (warps, hd)
  b.part_m = b.part_acc + kGroupAttnWarps * hd;  // (warps,)
  b.part_s = b.part_m + kGroupAttnWarps;     // (warps,)
  b.red = b.part_s + kGroupAttnWarps;        // (warps,)
  b.split = blockIdx.x % splits;
  b.g = (blockIdx.x / splits) % groups;
  b.row = blockIdx.x / (splits * groups);
  b.pos = position[static_cast<size_t>(b.row) * position_stride];
  if (b.pos < 0) {
    if (phase == kAttendStoreOnly) return;
    if (b.split == 0) zero_padding_row(out, b.row, b.g, b.reps, heads, hd);
    return;
  }
  const SplitRange range = split_range(b.pos, b.split, split_limit, min_per_split);
  b.active = range.active;
  if (b.split >= b.active) return;  // the grid covers the longest length the cache can hold
  b.lo = range.lo;
  b.hi = range.hi;
  b.owner = range.owner;
  b.stores = b.owner && phase != kAttendReadOnly;
  if (phase == kAttendStoreOnly && !b.owner) return;
  const int64_t slot = row_slots ? row_slots[b.row] : b.row;  // the row's place in the key/value buffers
  b.base = (static_cast<size_t>(slot) * groups + b.g) * capacity * hd;

  norm_rope_group<T>(b, qkv + static_cast<size_t>(b.row) * (heads + 2 * groups) * hd, q_norm, k_norm, qk_norm, cos, sin, k_cache, v_cache,
                     heads, groups, hd, eps);
  if (phase == kAttendStoreOnly) return;
  __syncthreads();  // the new key and value are in the cache for the loop below

  const Teams t = teams_of<T>(b.reps, hd);
  float m = -INFINITY, s = 0.f, acc[kLaneFloats];
#pragma unroll
  for (int i = 0; i < kLaneFloats; ++i) acc[i] = 0.f;
  if (t.r < b.reps) attend_positions<T>(b, t, k_cache, v_cache, hd, scale, m, s, acc);
  store_warp_partial<T>(b, t, hd, m, s, acc);
  __syncthreads();

  merge_warps<T>(b, t, out, partials, heads, hd, splits);
  if (b.active == 1) return;
  int* counter = done + static_cast<size_t>(b.row) * groups + b.g;
  if (!last_split_to_finish(counter, b.active)) return;
  merge_splits<T>(b, out, partials, heads, hd, splits);
  if (threadIdx.x == 0) *counter = 0;  // ready for the next step
}

}  // namespace

int min_positions_per_split(int rows) { return std::min(kMaxPositionsPerSplit, kPositionsPerSplitPerRow * std::max(1, rows)); }

int max_splits(int rows) { return rows == 1 ? kOneRowMaxSplits : kGroupAttnMaxSplits; }

int attention_splits(int rows, int capacity) {
  const int per = min_positions_per_split(rows);
  return std::max(1, std::min(max_splits(rows), (capacity + per - 1) / per));
}

size_t attention_partials_floats(int rows, int heads, int hd, int capacity) {
  return static_cast<size_t>(rows) * heads * attention_splits(rows, capacity) * (kPartialHeader + hd);
}

bool group_attention_supported(int dtype, int heads, int groups, int hd) {
  const int bytes = dtype == 0 ? 4 : 2, team = std::min(32, hd * bytes / 16);
  const bool pow2 = hd >= 32 && (hd & (hd - 1)) == 0;
  return pow2 && hd <= 256 && groups > 0 && heads % groups == 0 && heads / groups <= kGroupAttnWarps &&
         hd / (team * (16 / bytes)) <= (bytes == 4 ? 2 : 1);
}

void group_attention(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos, const float* sin,
                     const int64_t* position, int position_stride, const int64_t* row_slots, void* k_cache, void* v_cache, void* out,
                     float* partials, int* done, int rows, int heads, int groups, int hd, int capacity, float scale, float eps, int phase,
                     void* stream) {
  if (!group_attention_supported(dtype, heads, groups, hd)) throw std::invalid_argument("group_attention: unsupported head layout");
  static const bool no_early = env_set("QWEN3_NO_EARLY_ATTENTION");  // to compare
  if (phase == kAttendFusedEarly && no_early) phase = kAttendFused;
  const int splits = attention_splits(rows, capacity), reps = heads / groups;
  if (stream_attention_applies(dtype, heads, groups, hd, qk_norm, max_splits(rows), {qkv, k_cache, v_cache, cos, sin, partials}, q_norm,
                               k_norm)) {
    dispatch(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      if constexpr (sizeof(T) == 2) {
        const StreamAttentionArgs<T> args{static_cast<const T*>(qkv), q_norm, k_norm, cos, sin, qk_norm, position, position_stride, row_slots,
                                          static_cast<T*>(k_cache), static_cast<T*>(v_cache), static_cast<T*>(out), partials, done, heads,
                                          groups, capacity, splits, splits, max_splits(rows), min_positions_per_split(rows), phase, scale, eps};
        launch_stream_attention<T>(reps, rows, splits, args, stream);
      }
    });
    check("stream_attention");
    return;
  }
  if (phase == kAttendFusedEarly) phase = kAttendFused;  // the general kernel loads nothing before its wait
  const size_t shared = (static_cast<size_t>(reps) * hd + kGroupAttnThreads + kGroupAttnWarps * hd + 3 * kGroupAttnWarps) * sizeof(float);
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch("group_attention", group_attention_kernel<T>, true, dim3(rows * groups * splits), dim3(kGroupAttnThreads), shared, stream,
           static_cast<const T*>(qkv), q_norm, k_norm, qk_norm, cos, sin, position, position_stride, row_slots, static_cast<T*>(k_cache),
           static_cast<T*>(v_cache),
           static_cast<T*>(out), partials, done, heads, groups, hd, capacity, splits, max_splits(rows), min_positions_per_split(rows), scale, eps,
           phase);
  });
  check("group_attention");
}

}  // namespace qwen3::cuda
