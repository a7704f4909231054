// The batch-1 products over FP8 rows (model/fp8_weights.h) of wide inputs, on the tensor cores:
// gemv_fp8 launches it where the shape allows and it pays (fp8_mma_gemv below), stream_gemv.cuh or
// its per-row kernels elsewhere. Summed on the FMA units, 16 FP8 weights took about 60 instructions
// (each widened twice, each input value widened, one FMA each) where 16 bytes of bfloat16 take
// about 25, so FP8 rows streamed well under the copy rate (docs/performance.md). Here the weights
// widen to float16 two at a time (one exact instruction) and 256 of them go into one mma.
//
// The mma (m16n8k16, float16 inputs, float32 sums) multiplies a tile of 16 weight rows by the
// input: lane (g, t) (g = lane / 4, t = lane % 4) loads 16 bytes of rows g and g + 8 at offset 16t
// of each 64-weight chunk, and the same 16 positions of x' from shared memory; word s of each
// load is mma step s's pair of k positions, an assignment of the chunk's positions to the lanes
// that is the same for the weights and the input, so each step still sums every product once.
// All eight columns of the mma's input hold x', so every lane's sums are the row sums.
//
// x' must be float16 for the mma: each block scales x' (as the reference rounds it) by a power of
// two that brings its largest magnitude into [2^14, 2^15), converts it (exact for every value
// within 2^32 of the largest; smaller ones add less than float32's rounding of the sum), and
// multiplies the sums back. Work is dealt out as stream_gemv deals rows, in tiles: a contiguous
// run of tiles a block, one block a multiprocessor (a tile is a coarse unit; with one block an SM
// no SM holds more than one tile above the average), its warps in groups of `parts` over the k
// positions of each tile, the next kMmaDepth chunks in flight while the ones before are
// multiplied; each row's part sums meet in shared memory and are added in part order.
#pragma once

#include "cuda/stream_gemv.cuh"

namespace qwen3::cuda {
namespace {

// The compile-time constants' overrides are for scripts/cuda-host/gemv_bench.cu's comparisons.
#ifndef QWEN3_FP8_MMA_THREADS
#define QWEN3_FP8_MMA_THREADS 512
#endif
#ifndef QWEN3_FP8_MMA_BLOCKS
#define QWEN3_FP8_MMA_BLOCKS 1
#endif
#ifndef QWEN3_FP8_MMA_DEPTH
#define QWEN3_FP8_MMA_DEPTH 4
#endif
#ifndef QWEN3_FP8_MMA_MIN_K
#define QWEN3_FP8_MMA_MIN_K 4096
#endif
#ifndef QWEN3_FP8_MMA_MIN_TILES_PER_SM
#define QWEN3_FP8_MMA_MIN_TILES_PER_SM 4
#endif
constexpr int kMmaThreads = QWEN3_FP8_MMA_THREADS;
constexpr int kMmaWarps = kMmaThreads / 32;
constexpr int kMmaBlocksPerSm = QWEN3_FP8_MMA_BLOCKS;
constexpr int kMmaDepth = QWEN3_FP8_MMA_DEPTH;  // chunks in flight per lane, two 16-byte loads each
constexpr int kMmaMinK = QWEN3_FP8_MMA_MIN_K;   // narrower rows stay with the per-row kernels
// Products of fewer tiles (gate and up counted apart) than this many a multiprocessor stay with
// stream_gemv, which was faster there: each block's stream is short, and its rows are dealt out
// one at a time where tiles are 16.
constexpr int kMmaMinTilesPerSm = QWEN3_FP8_MMA_MIN_TILES_PER_SM;
constexpr int kMmaTile = 16;                    // weight rows per mma
constexpr int kMmaChunk = 64;                   // k positions per chunk: 4 lanes x 16 weights

// c += A B for a 16 x 16 float16 tile A (a: this lane's four pairs) and a 16 x 8 one (b).
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// x' into shared memory as float16 times 2^-s, by the whole block; returns 2^s. x lands in xs
// first (2 bytes a value, in 16-byte loads) and is replaced in place, each thread its own values.
// RMSNorm's statistics are block_rstd's, and x' is rounded to T as the reference rounds it before
// it is scaled. A float16 model's x' is float16 already: s = 0.
template <typename T, int kInput>
__device__ __forceinline__ float mma_input(const T* x, const float* ns, __half* xs, int k, float eps, float* scratch) {
  static_assert(sizeof(T) == 2, "the input shares its room with its float16 copy");
  T* xt = reinterpret_cast<T*>(xs);
  stream_input<T, kGemvPlain>(x, nullptr, xt, k, eps, scratch);  // x as it is
  __syncthreads();
  float sq = 0.f, top = 0.f;  // the sum of squares, as block_rstd sums it; the largest |x * norm|
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    const float v = to_f(xt[i]);
    sq += v * v;
    top = fmaxf(top, fabsf(kInput == kGemvRmsNorm ? v * ns[i] : v));
  }
  const float rstd = kInput == kGemvRmsNorm ? rms_scale(block_sum(sq, scratch), k, eps) : 1.f;
  int e = 0;
  frexpf(block_max(top, scratch) * rstd, &e);  // largest |x'| < 2^e (rounding to T adds at most 2^-8 of it)
  const int s = std::is_same_v<T, __half> ? 0 : max(e - 15, -100);  // -100: keeps 2^-s a float
  const float down = ldexpf(1.f, -s);
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    const float v = kInput == kGemvRmsNorm ? to_f(rms_normed<T>(to_f(xt[i]), rstd, ns[i])) : to_f(xt[i]);
    xs[i] = __float2half_rn(v * down);
  }
  return ldexpf(1.f, s);
}

template <typename T, int kInput, bool kSwiGLU>
__global__ void __launch_bounds__(kMmaThreads, kMmaBlocksPerSm)
    fp8_mma_gemv_kernel(const void* __restrict__ w, const T* __restrict__ x, const float* __restrict__ norm, const T* residual, T* y,
                        int n_out, int k, float eps, int parts, int loads) {
  constexpr int kRows = kSwiGLU ? 2 : 1;  // tiles a unit: SwiGLU's 16 gate rows and their 16 up rows
  extern __shared__ __align__(16) unsigned char mma_smem[];
  __half* xs = reinterpret_cast<__half*>(mma_smem);                                  // (k,) x' * 2^-s
  float* ns = reinterpret_cast<float*>(mma_smem + (k * 2 + 15) / 16 * 16);            // (k,) RMSNorm's scales
  float* partial = ns + (kInput == kGemvRmsNorm ? k : 0);                              // (block's units, kRows, 16, parts)
  __shared__ float scratch[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int groups = kMmaWarps / parts, group = warp / parts, part = warp % parts;
  // The block's tiles [u_lo, u_hi) and this warp's group's share [g_lo, g_hi).
  const auto [u_lo, u_hi, g_lo, g_hi] = stream_share(n_out / kMmaTile, group, groups);
  const size_t row_bytes = static_cast<size_t>(k) + kFp8RowPad;
  const int begin = part * (k / parts) + 16 * t;  // the lane's first weight in each chunk of its part; then every 64
  // Row g (h = 0) or g + 8 (h = 1) of tile `unit`, of the gate (j = 0) or the up rows (j = 1).
  const auto row_of = [&](int unit, int j, int h) {
    return static_cast<const uint8_t*>(w) + static_cast<size_t>(unit * kMmaTile + g + 8 * h + j * n_out) * row_bytes;
  };
  const auto fetch = [&](const StreamCursor& c, uint4 (&into)[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) into[h] = __ldcs(reinterpret_cast<const uint4*>(row_of(c.unit, c.j, h) + begin + kMmaChunk * c.l));
  };
  const int total = (g_hi - g_lo) * kRows * loads;  // the lane's chunks, the same for the whole warp
  // 1. The first chunks' loads, before the input is ready.
  uint4 cur[kMmaDepth][2], next[kMmaDepth][2];
  StreamCursor at_load{g_lo, 0, 0};
#pragma unroll
  for (int u = 0; u < kMmaDepth; ++u) {
    if (u < total) fetch(at_load, cur[u]), at_load.advance(loads, kRows);
  }
  stage_norm<kInput>(norm, ns, k);
  pdl_wait();  // the input (and the residual, for in-place updates) is the previous kernel's output
  pdl_launch_dependents();  // after the wait, which the decode attention's early phase needs (kernels.h)
  // The residual at the block's first outputs, read now rather than after the stream.
  const int first = u_lo * kMmaTile + static_cast<int>(threadIdx.x), end = u_hi * kMmaTile;
  T held = from_f<T>(0.f);
  if (residual != nullptr && first < end) held = residual[first];
  // 2. x' * 2^-s in shared memory.
  const float up = mma_input<T, kInput>(x, ns, xs, k, eps, scratch);
  __syncthreads();
  // 3. The stream: each tile's part sums into `partial`.
  StreamCursor at_sum{g_lo, 0, 0};
  float acc[4] = {};  // rows g, g + 8 of the tile (columns 2t, 2t + 1: all the same)
  for (int f0 = 0; f0 < total; f0 += kMmaDepth) {
#pragma unroll
    for (int u = 0; u < kMmaDepth; ++u) {
      if (f0 + kMmaDepth + u < total) fetch(at_load, next[u]), at_load.advance(loads, kRows);
    }
#pragma unroll
    for (int u = 0; u < kMmaDepth; ++u) {
      if (f0 + u < total) {
        uint4 xv[2];  // x' at the lane's 16 positions of the chunk
        xv[0] = reinterpret_cast<const uint4*>(xs + begin + kMmaChunk * at_sum.l)[0];
        xv[1] = reinterpret_cast<const uint4*>(xs + begin + kMmaChunk * at_sum.l)[1];
        const uint32_t* xw = reinterpret_cast<const uint32_t*>(xv);
        const uint32_t* lo = reinterpret_cast<const uint32_t*>(&cur[u][0]);
        const uint32_t* hi = reinterpret_cast<const uint32_t*>(&cur[u][1]);
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const uint32_t a[4] = {e4m3_pair(lo[s], 0), e4m3_pair(hi[s], 0), e4m3_pair(lo[s], 1), e4m3_pair(hi[s], 1)};
          mma_f16(acc, a, xw[2 * s], xw[2 * s + 1]);
        }
        if (at_sum.l == loads - 1) {  // the warp's part of this tile is summed
          if (t == 0) {
            float* p = partial + ((at_sum.unit - u_lo) * kRows + at_sum.j) * kMmaTile * parts + part;
            p[g * parts] = acc[0];
            p[(g + 8) * parts] = acc[2];
          }
          acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
        }
        at_sum.advance(loads, kRows);
      }
    }
#pragma unroll
    for (int u = 0; u < kMmaDepth; ++u) cur[u][0] = next[u][0], cur[u][1] = next[u][1];
  }
  __syncthreads();
  // 4. The block's outputs, a thread each: the parts added in order, scaled back, then the
  // reference's roundings, as gemv's.
  for (int n = first; n < end; n += blockDim.x) {
    const int unit = n / kMmaTile, m = n % kMmaTile;
    float sums[kRows];
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const float s = sum_parts(partial + (((unit - u_lo) * kRows + j) * kMmaTile + m) * parts, parts);
      sums[j] = s * up * fp8_scale(fp8_row(w, n + j * n_out, k), k);
    }
    store_block_output<T, kSwiGLU>(y, n, first, sums, residual, held);
  }
}

// On unless QWEN3_NO_FP8_MMA is set (to compare with the FMA kernels).
inline bool fp8_mma_enabled() {
  static const bool enabled = !env_set("QWEN3_NO_FP8_MMA");
  return enabled;
}

// Launches the tensor-core kernel for FP8 rows W (n_out or, for SwiGLU, 2 n_out rows of k) where
// the shape fits and pays: 2-byte T, k of at least kMmaMinK, at least kMmaMinTilesPerSm tiles a
// multiprocessor, every part at least kStreamMinLoads chunks where k allows, x' and the part sums
// within kStreamMaxShared. Returns false, launching nothing, where it does not.
template <typename T>
bool fp8_mma_gemv(GemvInput input, const void* w, const T* x, const float* norm, const T* residual, T* y, int n_out, int k, float eps,
                  void* stream) {
  if constexpr (sizeof(T) != 2) {
    return false;
  } else {
    if (!fp8_mma_enabled() || k < kMmaMinK || k % kMmaChunk != 0 || n_out % kMmaTile != 0 || k * 2 > kStreamMaxInputBytes) return false;
    if (!aligned16(x) || !aligned16(norm)) return false;
    const int chunks = k / kMmaChunk;
    const int parts = stream_parts(chunks, kMmaWarps);
    const int groups = kMmaWarps / parts, tiles = n_out / kMmaTile;
    const bool swiglu = input == kGemvRmsNormSwiGLU;
    if (tiles * (swiglu ? 2 : 1) < kMmaMinTilesPerSm * sm_count()) return false;
    const int blocks = std::max(1, std::min(sm_count() * kMmaBlocksPerSm, (tiles + groups - 1) / groups));
    const int units_max = (tiles + blocks - 1) / blocks;
    const size_t shared = static_cast<size_t>(k * 2 + 15) / 16 * 16 + (input == kGemvPlain ? 0 : k * sizeof(float)) +
                          static_cast<size_t>(units_max) * (swiglu ? 2 : 1) * kMmaTile * parts * sizeof(float);
    if (shared > kStreamMaxShared) return false;
    auto start = [&](auto kernel) {
      allow_stream_shared(kernel, shared, "fp8_mma_gemv");
      launch("fp8_mma_gemv", kernel, true, dim3(blocks), dim3(kMmaThreads), shared, stream, w, x, norm, residual, y, n_out, k, eps, parts,
             chunks / parts);
    };
    if (swiglu) {
      start(fp8_mma_gemv_kernel<T, kGemvRmsNorm, true>);
    } else if (input == kGemvRmsNorm) {
      start(fp8_mma_gemv_kernel<T, kGemvRmsNorm, false>);
    } else {
      start(fp8_mma_gemv_kernel<T, kGemvPlain, false>);
    }
    return true;
  }
}

}  // namespace
}  // namespace qwen3::cuda
