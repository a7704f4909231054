// The persistent layer walk that persistent_bench.cu times against the graph of one-row kernels:
// one kernel that runs a list of products (stages) with a grid-wide barrier after each
// (persistent_walk.cu). Kept apart from the bench so that the kernels' element conversions and
// the host checks' do not meet in one file.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace walk {

enum StageKind : int { kPlainResidual = 0, kNormed = 1, kNormedSwiGLU = 2, kEmpty = 3 };

// One stage of the walk over bfloat16 values: a product, or an empty stage (a barrier alone).
struct Stage {
  const void* w;      // (rows, k): n_out rows, or for SwiGLU n_out gate rows then n_out up rows
  const void* in;     // (k,) the input
  const float* norm;  // (k,) RMSNorm's scales (kNormed, kNormedSwiGLU)
  void* out;          // (n_out,) the output; for kPlainResidual added to in place
  int kind, n_out, k, parts;  // parts: the slices of a row, as cuda::gemv splits it (plain rows only)
};

#ifndef WALK_THREADS
#define WALK_THREADS 512  // a block's threads (one block an SM)
#endif
constexpr int kThreads = WALK_THREADS;

// How many warps cuda::gemv gives each row of a bfloat16 product.
int row_parts(int n_out, int k, bool swiglu);
// Allows the walk `smem` bytes of shared memory a block; returns how many such blocks an SM holds.
int prepare_walk(size_t smem);
// The walk over `n` stages on `blocks` blocks (each holding `ring_elems` weights twice); `counter`
// must be zero.
void launch_walk(const Stage* stages, int n, unsigned* counter, int blocks, int ring_elems, size_t smem, float eps, cudaStream_t stream);
// An empty kernel launched with programmatic dependent launch.
void launch_empty_link(unsigned* sink, int blocks, cudaStream_t stream);
// `n` grid-wide barriers in one kernel; `counter` must be zero.
void launch_barriers(unsigned* counter, int blocks, int n, cudaStream_t stream);

}  // namespace walk
