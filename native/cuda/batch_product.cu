// The decode step's products for 2 to 64 rows (declared in cuda/kernels.h): the weights (in the
// compute dtype, or FP8 rows) read once for every row of the batch, multiplied on the tensor cores
// (mma.sync m16n8k16, float32 sums).
//
// One block per 16 output features (for SwiGLU, 16 gate and the matching 16 up features), its 8
// warps dealing the input's 32-wide chunks between them. In a chunk, lane (g, t) (g = lane / 4,
// t = lane % 4) loads 16 bytes of weight rows g and g + 8 and of input rows g, g + 8, ... at
// offset 8t; those 8 values feed two mma steps. The mma's own k order (its lanes hold k = 2t, 2t+1,
// 2t+8, 2t+9) is a different assignment of the same 16 positions to the same lanes, applied alike
// to the weights and the input, so each step still sums every product of the chunk once; loading
// whole 16-byte pieces per lane reads every weight row 64 contiguous bytes at a time. The first
// chunks' weights are in flight before the wait on the previous kernel; the warps' sums meet in
// shared memory and are added in warp order, then rounded as the one-row kernels round
// (store_product: the product, the residual, SiLU(gate) * up).
//
// FP8 rows (model/fp8_weights.h) take the same path with 8 bytes a lane a chunk: each E4M3 pair
// widens to float16 in one instruction, and for bfloat16 inputs on to bfloat16 through float32
// (exact: every E4M3 value is a bfloat16 value), just before its mma; each row's sum is multiplied
// by its scale before the roundings. The weights are read once for all rows, where the cuBLAS
// path widened every row to the compute dtype in memory first.
#include "cuda/weight_rows.cuh"

namespace qwen3::cuda {
namespace {

constexpr int kBatchThreads = 256;
constexpr int kBatchWarps = kBatchThreads / 32;
constexpr int kTileRows = 16;  // output features per mma tile
constexpr int kChunk = 32;     // input positions per chunk: 4 lanes x 8

template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// Chunks per batch of loads: two batches of weights (the next one in flight while this one is
// multiplied) and one of inputs take about kBatchLoadRegisters registers a lane, and two blocks
// fit a multiprocessor. (The QWEN3_BATCH_* overrides are for scripts/cuda-host/batch_bench.cu's
// comparisons.)
#ifndef QWEN3_BATCH_LOAD_REGISTERS
#define QWEN3_BATCH_LOAD_REGISTERS 80
#endif
#ifndef QWEN3_BATCH_MIN_BLOCKS
#define QWEN3_BATCH_MIN_BLOCKS 2
#endif
constexpr int kBatchLoadRegisters = QWEN3_BATCH_LOAD_REGISTERS;
// A lane's load of one weight row a chunk: 8 weights, in the compute dtype (2 bytes) or FP8.
template <bool kFp8>
using WeightLoad = std::conditional_t<kFp8, uint2, uint4>;
template <int TILES, int NT, bool kFp8>
constexpr int kBatchDepth = std::max(1, kBatchLoadRegisters / ((kFp8 ? 8 : 16) * TILES + 4 * NT));

// A warp's loads of DEPTH chunks (first, first + kBatchWarps, ...): the weights of TILES tiles
// (rows g and g + 8 of each; `rows` point at the lane's first weight), or the input rows g,
// g + 8, ... of NT tiles; zeros past the end.
template <typename L, int DEPTH, int TILES>
__device__ __forceinline__ void load_weight_chunks(L (&a)[DEPTH][TILES][2], const uint8_t* const (&rows)[TILES][2], int first, int chunks) {
#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    const int c = first + d * kBatchWarps;
#pragma unroll
    for (int i = 0; i < TILES; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) a[d][i][h] = c < chunks ? *reinterpret_cast<const L*>(rows[i][h] + c * sizeof(L) * 4) : L{};  // 4 lanes a chunk
    }
  }
}

// A lane's 8 weights as T: as loaded, or widened from E4M3 (exactly).
template <typename T>
__device__ __forceinline__ uint4 widen(const uint4& w) {
  return w;
}

template <typename T>
__device__ __forceinline__ uint4 widen(const uint2& w) {
  uint32_t out[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t h = e4m3_pair(j < 2 ? w.x : w.y, j & 1);
    if constexpr (std::is_same_v<T, __half>) {
      out[j] = h;
    } else {
      const __nv_bfloat162 b = __float22bfloat162_rn(__half22float2(*reinterpret_cast<const __half2*>(&h)));
      out[j] = *reinterpret_cast<const uint32_t*>(&b);
    }
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

template <typename T, int DEPTH, int NT>
__device__ __forceinline__ void load_input_chunks(uint4 (&b)[DEPTH][NT], const T* x, int rows, int k, int g, int t, int first, int chunks) {
#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    const int c = first + d * kBatchWarps;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const int r = n * 8 + g;
      b[d][n] = c < chunks && r < rows ? *reinterpret_cast<const uint4*>(x + static_cast<size_t>(r) * k + c * kChunk + 8 * t)
                                       : make_uint4(0, 0, 0, 0);
    }
  }
}

// acc += the chunks' products. Words 2s and 2s + 1 of a lane's 16 bytes are mma step s's
// (k = 2t, 2t+1) and (k = 2t+8, 2t+9); chunks past the end hold zeros.
template <typename T, typename L, int DEPTH, int TILES, int NT>
__device__ __forceinline__ void multiply_chunks(float (&acc)[TILES][NT][4], const L (&a)[DEPTH][TILES][2], const uint4 (&b)[DEPTH][NT]) {
#pragma unroll
  for (int d = 0; d < DEPTH; ++d) {
    uint4 wide[TILES][2];
#pragma unroll
    for (int i = 0; i < TILES; ++i) wide[i][0] = widen<T>(a[d][i][0]), wide[i][1] = widen<T>(a[d][i][1]);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
#pragma unroll
      for (int i = 0; i < TILES; ++i) {
        const uint32_t* lo = reinterpret_cast<const uint32_t*>(&wide[i][0]);
        const uint32_t* hi = reinterpret_cast<const uint32_t*>(&wide[i][1]);
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          const uint32_t* in = reinterpret_cast<const uint32_t*>(&b[d][n]);
          mma16816<T>(acc[i][n], lo[2 * s], hi[2 * s], lo[2 * s + 1], hi[2 * s + 1], in[2 * s], in[2 * s + 1]);
        }
      }
    }
  }
}

// TILES weight tiles (1, or 2 for SwiGLU's gate and up) against NT tiles of 8 input rows; kFp8:
// W is FP8 rows.
template <typename T, int TILES, int NT, bool kFp8>
__global__ void __launch_bounds__(kBatchThreads, QWEN3_BATCH_MIN_BLOCKS)
    batch_product_kernel(const void* __restrict__ w, const T* __restrict__ x, const T* residual, T* y, int rows, int n_out, int k) {
  using L = WeightLoad<kFp8>;
  constexpr int DEPTH = kBatchDepth<TILES, NT, kFp8>, COLS = NT * 8, STRIDE = COLS + 1;  // STRIDE: a padded row of `sums`
  extern __shared__ float sums[];  // (warps, TILES, 16, STRIDE): each warp's partial sums
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * kTileRows, chunks = k / kChunk, step = kBatchWarps * DEPTH;
  const size_t row_bytes = kFp8 ? static_cast<size_t>(k) + kFp8RowPad : static_cast<size_t>(k) * sizeof(T);
  // The lane's two weight rows of each tile (tile 1: SwiGLU's up rows, n_out further), from weight 8t.
  const uint8_t* w_rows[TILES][2];
#pragma unroll
  for (int i = 0; i < TILES; ++i) {
    w_rows[i][0] = static_cast<const uint8_t*>(w) + (i * n_out + row0 + g) * row_bytes + t * sizeof(L);
    w_rows[i][1] = w_rows[i][0] + 8 * row_bytes;
  }
  float acc[TILES][NT][4] = {};
  L a0[DEPTH][TILES][2], a1[DEPTH][TILES][2];
  uint4 b[DEPTH][NT];
  pdl_launch_dependents();
  load_weight_chunks<L, DEPTH, TILES>(a0, w_rows, warp, chunks);  // in flight while the previous kernel finishes
  pdl_wait();
  // Two batches of weights alternate: the next is loaded while this one is multiplied.
  for (int first = warp; first < chunks; first += 2 * step) {  // the same trip count for the whole warp
    load_weight_chunks<L, DEPTH, TILES>(a1, w_rows, first + step, chunks);
    load_input_chunks<T, DEPTH, NT>(b, x, rows, k, g, t, first, chunks);
    multiply_chunks<T, L, DEPTH, TILES, NT>(acc, a0, b);
    if (first + step >= chunks) break;
    load_weight_chunks<L, DEPTH, TILES>(a0, w_rows, first + 2 * step, chunks);
    load_input_chunks<T, DEPTH, NT>(b, x, rows, k, g, t, first + step, chunks);
    multiply_chunks<T, L, DEPTH, TILES, NT>(acc, a1, b);
  }

  // The warps' partial sums into shared memory: lane (g, t) holds feature rows g and g + 8 and
  // input rows 2t and 2t + 1 of each input tile.
  float* mine = sums + static_cast<size_t>(warp) * TILES * kTileRows * STRIDE;
#pragma unroll
  for (int i = 0; i < TILES; ++i) {
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      float* tile = mine + i * kTileRows * STRIDE + n * 8 + 2 * t;
      tile[g * STRIDE] = acc[i][n][0];
      tile[g * STRIDE + 1] = acc[i][n][1];
      tile[(g + 8) * STRIDE] = acc[i][n][2];
      tile[(g + 8) * STRIDE + 1] = acc[i][n][3];
    }
  }
  __syncthreads();
  // Each output (input row r, feature row0 + m): the warps' sums in warp order, then rounded.
  for (int e = threadIdx.x; e < kTileRows * COLS; e += kBatchThreads) {
    const int r = e / kTileRows, m = e % kTileRows;
    if (r >= rows) break;
    float total[TILES];
#pragma unroll
    for (int i = 0; i < TILES; ++i) {
      total[i] = 0.f;
      for (int v = 0; v < kBatchWarps; ++v) total[i] += sums[((static_cast<size_t>(v) * TILES + i) * kTileRows + m) * STRIDE + r];
      if constexpr (kFp8) total[i] *= fp8_scale(fp8_row(w, i * n_out + row0 + m, k), k);
    }
    const size_t out = static_cast<size_t>(r) * n_out;
    store_product<T, (TILES == 2)>(y + out, row0 + m, total, residual != nullptr ? residual + out : nullptr);
  }
}

// Picks the kernel for `rows` (NT = 1, 2, 4, 8 tiles of 8 input rows).
template <typename T, int TILES, bool kFp8, int NT = 1>
void launch_batch_product(const void* w, const T* x, const T* residual, T* y, int rows, int n_out, int k, void* stream) {
  if constexpr (NT <= 8) {
    if (rows > NT * 8) return launch_batch_product<T, TILES, kFp8, NT * 2>(w, x, residual, y, rows, n_out, k, stream);
    const size_t shared = static_cast<size_t>(kBatchWarps) * TILES * kTileRows * (NT * 8 + 1) * sizeof(float);
    auto* kernel = batch_product_kernel<T, TILES, NT, kFp8>;
    static const bool configured =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)) == cudaSuccess;
    if (!configured) throw std::runtime_error("batch_product: shared memory of " + std::to_string(shared) + " bytes refused");
    launch("batch_product", kernel, true, dim3(n_out / kTileRows), dim3(kBatchThreads), shared, stream, w, x, residual, y, rows, n_out, k);
  }
}

}  // namespace

bool batch_product_supported(int dtype, int rows, int n_out, int k) {
  static const bool enabled = !env_set("QWEN3_NO_BATCH_PRODUCT");
  return enabled && (dtype == kBFloat16 || dtype == kFloat16) && rows >= 1 && rows <= kBatchProductMaxRows && n_out > 0 &&
         n_out % kTileRows == 0 && k > 0 && k % kChunk == 0;
}

void batch_product(int dtype, bool swiglu, bool fp8_rows, const void* w, const void* x, const void* residual, void* y, int rows, int n_out, int k,
                   void* stream) {
  if (!batch_product_supported(dtype, rows, n_out, k)) {
    throw std::invalid_argument("batch_product: unsupported shape (" + std::to_string(rows) + " rows, " + std::to_string(n_out) + " x " +
                                std::to_string(k) + ")");
  }
  for (const void* p : {w, x, residual, static_cast<const void*>(y)}) {
    if (!aligned16(p)) throw std::invalid_argument("batch_product: buffers must be 16-byte aligned");
  }
  if (swiglu && residual != nullptr) throw std::invalid_argument("batch_product: SwiGLU takes no residual");
  dispatch(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (sizeof(T) == 2) {
      const auto* xt = static_cast<const T*>(x);
      const auto* rt = static_cast<const T*>(residual);
      auto* yt = static_cast<T*>(y);
      const auto start = [&](auto fp8) {
        constexpr bool kFp8 = decltype(fp8)::value;
        if (swiglu) {
          launch_batch_product<T, 2, kFp8>(w, xt, rt, yt, rows, n_out, k, stream);
        } else {
          launch_batch_product<T, 1, kFp8>(w, xt, rt, yt, rows, n_out, k, stream);
        }
      };
      if (fp8_rows) {
        start(std::true_type{});
      } else {
        start(std::false_type{});
      }
    }
  });
  check("batch_product");
}

}  // namespace qwen3::cuda
