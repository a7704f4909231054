// The persistent layer walk (persistent_walk.h) and the floors it is measured against; timed by
// persistent_bench.cu.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/kernels.h"
#include "cuda/weight_rows.cuh"
#include "persistent_walk.h"

#include <stdexcept>
#include <string>

#define CHECK_WALK(x)                                                                             \
  do {                                                                                            \
    const cudaError_t e = (x);                                                                    \
    if (e != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e)); \
  } while (0)

namespace qwen3::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kWalkThreads = walk::kThreads;
constexpr int kWalkWarps = kWalkThreads / 32;
constexpr int kV = 8;  // bfloat16 values per 16-byte load

using walk::kEmpty;
using walk::kNormedSwiGLU;
using walk::kPlainResidual;
using walk::Stage;

// This block's outputs [u0, u1) of a stage: the outputs dealt evenly over the grid.
__device__ __forceinline__ void block_units(const Stage& s, int& u0, int& u1) {
  u0 = static_cast<int>(static_cast<int64_t>(s.n_out) * blockIdx.x / gridDim.x);
  u1 = static_cast<int>(static_cast<int64_t>(s.n_out) * (blockIdx.x + 1) / gridDim.x);
}

__device__ __forceinline__ unsigned smem_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_address(dst)), "l"(src) : "memory");
}

// The region of shared memory a stage's rows take: its outputs' rows, for SwiGLU its gate rows
// then its up rows; RMSNorm's scales (float32) follow them.
__device__ __forceinline__ size_t stage_row_elems(const Stage& s, int count) {
  return static_cast<size_t>(s.kind == kNormedSwiGLU ? 2 : 1) * count * s.k;
}

// Starts copying this block's weight rows of stage s, and its RMSNorm scales, into `rows` (shared
// memory). One commit group per stage, even empty.
__device__ void prefetch_rows(const Stage& s, bf16* rows) {
  if (s.kind != kEmpty) {
    int u0, u1;
    block_units(s, u0, u1);
    const int count = u1 - u0, per_row = s.k / kV;
    for (int region = 0; region < (s.kind == kNormedSwiGLU ? 2 : 1); ++region) {
      const bf16* src = static_cast<const bf16*>(s.w) + (static_cast<size_t>(region) * s.n_out + u0) * s.k;
      bf16* dst = rows + static_cast<size_t>(region) * count * s.k;
      for (int c = threadIdx.x; c < count * per_row; c += kWalkThreads) cp_async16(dst + c * kV, src + c * kV);
    }
    if (s.norm != nullptr) {
      bf16* dst = rows + stage_row_elems(s, count);
      for (int c = threadIdx.x; c < s.k / 4; c += kWalkThreads) cp_async16(dst + c * kV, s.norm + c * 4);
    }
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// A grid-wide barrier in two halves: every block adds one to `counter` once its writes are done
// (release), and waits for `target` arrivals (acquire). Readers load what other blocks wrote with
// __ldcg (L2), never from a stale L1 line. A wait that never ends traps instead of hanging.
__device__ __forceinline__ void grid_arrive(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
}

__device__ __forceinline__ void grid_wait(const unsigned* counter, unsigned target) {
  if (threadIdx.x == 0) {
    unsigned seen = 0;
    for (long long spins = 0;; ++spins) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
      if (seen >= target) break;
      if (spins > (1ll << 24)) __trap();
    }
  }
  __syncthreads();
}

// 16 bytes of shared memory in one load (a plain dereference of the generic pointer compiled to
// four 4-byte loads, each with a four-way bank conflict).
__device__ __forceinline__ uint4 load_shared16(const void* p) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(smem_address(p)));
  return v;
}

// One warp's sum of row `row` (shared memory) with the input pieces xp over [begin, end): the
// one-row kernel's register path (lane_row_sum, then row_sum's butterflies), in the same order.
__device__ __forceinline__ float warp_row_sum(const bf16* row, const uint4 (&xp)[kGemvUnroll], int begin, int end) {
  const auto piece = [&](int, int i) { return i < end ? load_shared16(row + i) : make_uint4(0, 0, 0, 0); };
  float acc = lane_row_sum<bf16>(piece, xp, begin, end);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

constexpr int kWalkMaxItems = 2;  // (row, slice) items a warp takes in a plain stage

// Stage s for this block, its weight rows (and scales) already in `rows`, its input complete.
__device__ void run_stage(const Stage& s, const bf16* rows, float* partial, float eps) {
  if (s.kind == kEmpty) return;
  int u0, u1;
  block_units(s, u0, u1);
  const int count = u1 - u0, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bf16* in = static_cast<const bf16*>(s.in);
  bf16* out = static_cast<bf16*>(s.out);
  if (s.kind != kPlainResidual) {
    // RMSNorm in each warp's registers, whole rows (cuda::gemv's parts == 1 for these).
    uint4 xp[kGemvUnroll];
    const float* norm_s = reinterpret_cast<const float*>(rows + stage_row_elems(s, count));
    gemv_input_regs<bf16, kGemvRmsNorm>(in, norm_s, xp, 0, s.k, s.k, eps);
    for (int u = u0 + warp; u < u1; u += kWalkWarps) {
      const bf16* gate = rows + static_cast<size_t>(u - u0) * s.k;
      float sums[2] = {warp_row_sum(gate, xp, 0, s.k), 0.f};
      if (s.kind == kNormedSwiGLU) sums[1] = warp_row_sum(gate + static_cast<size_t>(count) * s.k, xp, 0, s.k);
      if (lane != 0) continue;
      if (s.kind == kNormedSwiGLU) {
        store_product<bf16, true>(out, u, sums, nullptr);
      } else {
        store_product<bf16, false>(out, u, sums, nullptr);
      }
    }
    return;
  }
  // Plain rows plus the residual: (output, slice) items over the warps, every input piece and
  // residual value loaded at once; the slices' sums meet in shared memory and are added in slice
  // order, as cuda::gemv adds its warps' parts.
  const int slice = s.k / s.parts;
  uint4 xp[kWalkMaxItems][kGemvUnroll];
  bf16 held = from_f<bf16>(0.f);
  if (threadIdx.x < count) held = __ldcg(out + u0 + threadIdx.x);
#pragma unroll
  for (int t = 0; t < kWalkMaxItems; ++t) {
    const int begin = (warp + t * kWalkWarps) % s.parts * slice;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = begin + (lane + 32 * u) * kV;
      xp[t][u] = i < begin + slice ? __ldcg(reinterpret_cast<const uint4*>(in + i)) : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int t = 0; t < kWalkMaxItems; ++t) {
    const int item = warp + t * kWalkWarps;
    if (item >= count * s.parts) break;
    const int begin = item % s.parts * slice;
    const float sum = warp_row_sum(rows + static_cast<size_t>(item / s.parts) * s.k, xp[t], begin, begin + slice);
    if (lane == 0) partial[item] = sum;
  }
  __syncthreads();
  if (threadIdx.x < count) {
    const int r = threadIdx.x;
    float acc = s.parts == 1 ? partial[r] : 0.f;
    if (s.parts > 1) {
      for (int p = 0; p < s.parts; ++p) acc += partial[r * s.parts + p];
    }
    store_product_value<bf16, false>(out, u0 + r, &acc, true, held);
  }
}

// The walk: stage after stage, a grid-wide barrier between them; each stage's weights are on
// their way into shared memory (two buffers in turn) while the stage before runs and while the
// block waits for its input.
// The diagnostic switches (-D at compile time) leave out a part, to see what it costs: WALK_NO_BARRIER
// the waits, WALK_NO_ARRIVE the arrivals, WALK_NO_COMPUTE the products (the results are then wrong).
__global__ void __launch_bounds__(kWalkThreads, 1) persistent_walk(const Stage* stages, int n_stages, unsigned* counter, int ring_elems, float eps) {
  extern __shared__ __align__(16) unsigned char walk_smem[];
  bf16* ring[2] = {reinterpret_cast<bf16*>(walk_smem), reinterpret_cast<bf16*>(walk_smem) + ring_elems};
  float* partial = reinterpret_cast<float*>(ring[1] + ring_elems);
  prefetch_rows(stages[0], ring[0]);
  for (int s = 0; s < n_stages; ++s) {
    if (s + 1 < n_stages) {
      prefetch_rows(stages[s + 1], ring[(s + 1) & 1]);
    } else {
      asm volatile("cp.async.commit_group;" ::: "memory");
    }
#ifndef WALK_NO_BARRIER
    if (s > 0) grid_wait(counter, static_cast<unsigned>(s) * gridDim.x);
#endif
    asm volatile("cp.async.wait_group 1;" ::: "memory");  // this stage's rows have landed
    __syncthreads();
#ifndef WALK_NO_COMPUTE
    run_stage(stages[s], ring[s & 1], partial, eps);
#endif
#ifndef WALK_NO_ARRIVE
    grid_arrive(counter);
#else
    __syncthreads();
#endif
  }
}

// Empty kernels chained by programmatic dependent launch: the floor of a graph of kernels.
__global__ void empty_link(unsigned* sink) {
  pdl_wait();
  pdl_launch_dependents();
  if (threadIdx.x == 0 && blockIdx.x == 0) ++*sink;
}

// Barriers alone: the floor of the persistent kernel.
__global__ void __launch_bounds__(kWalkThreads, 1) barriers_only(unsigned* counter, int n) {
  for (int s = 0; s < n; ++s) {
    grid_arrive(counter);
    grid_wait(counter, static_cast<unsigned>(s + 1) * gridDim.x);
  }
}

}  // namespace
}  // namespace qwen3::cuda

namespace walk {

namespace cuda = qwen3::cuda;

int row_parts(int n_out, int k, bool swiglu) { return cuda::gemv_row_parts(n_out, k, cuda::kV, swiglu); }

int prepare_walk(size_t smem) {
  CHECK_WALK(cudaFuncSetAttribute(cuda::persistent_walk, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int resident = 0;
  CHECK_WALK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, cuda::persistent_walk, kThreads, smem));
  return resident;
}

void launch_walk(const Stage* stages, int n, unsigned* counter, int blocks, int ring_elems, size_t smem, float eps, cudaStream_t stream) {
  cuda::persistent_walk<<<blocks, kThreads, smem, stream>>>(stages, n, counter, ring_elems, eps);
  cuda::check("persistent walk");
}

void launch_empty_link(unsigned* sink, int blocks, cudaStream_t stream) {
  cuda::launch("empty link", cuda::empty_link, true, dim3(blocks), dim3(256), 0, stream, sink);
}

void launch_barriers(unsigned* counter, int blocks, int n, cudaStream_t stream) {
  cuda::barriers_only<<<blocks, kThreads, 0, stream>>>(counter, n);
  cuda::check("barriers");
}

}  // namespace walk
