// What the decode attention kernels share (attention_kernel.cu's general one and
// attention_stream.cuh's): which positions a block's split covers, the zero context of a padding
// row, and the record of a split's partial softmax that the block finishing last merges. Included
// inside the file's anonymous namespace use, as kernel_common.cuh is.
#pragma once

#include "cuda/kernel_common.cuh"

namespace qwen3::cuda {
namespace {

// A row of up to this many positions is one split: one block reads them in a few rounds sooner
// than splits would be merged.
constexpr int64_t kOneSplitPositions = 128;

// The positions [lo, hi) of one split of a row at position `pos`. How the positions split depends
// on the length alone (not on the grid, which follows the buffer's capacity), so eager steps and
// graph replays add in the same order.
struct SplitRange {
  int64_t lo, hi;
  int active;  // splits that hold positions at this length
  bool owner;  // this split holds the new position
};

__device__ __forceinline__ SplitRange split_range(int64_t pos, int split, int split_limit, int min_per_split) {
  const int64_t length = pos + 1;
  const int64_t per =
      length <= kOneSplitPositions ? length : max(static_cast<int64_t>(min_per_split), (length + split_limit - 1) / split_limit);
  SplitRange s;
  s.active = static_cast<int>((length + per - 1) / per);
  s.lo = split * per;
  s.hi = min(s.lo + per, length);
  s.owner = s.lo <= pos && pos < s.hi;
  return s;
}

// A padding row of a batch-size bucket (negative position): no keys to attend to, and nothing to
// write but a zero context for the group's heads (whatever the row computes afterwards is never read).
template <typename T>
__device__ __forceinline__ void zero_padding_row(T* __restrict__ out, int row, int g, int reps, int heads, int hd) {
  T* dst = out + (static_cast<size_t>(row) * heads + g * reps) * hd;
  for (int i = threadIdx.x; i < reps * hd; i += blockDim.x) dst[i] = from_f<T>(0.f);
}

// A split's partial softmax of one head in `partials`: its max and sum, two floats of padding,
// then its weighted values (hd,), which start 16 bytes into a record of kPartialHeader + hd floats
// so that they can be read in 16-byte loads.
constexpr int kPartialHeader = 4;
__device__ __forceinline__ float* split_partial(float* partials, size_t head, int split, int splits, int hd) {
  return partials + (head * splits + split) * (kPartialHeader + hd);
}

// After every thread of the block has written its split's partials: whether this block is the
// last of the row and group's `active` splits to finish (every thread of the block gets the
// answer). The last one merges the splits and sets *counter back to zero for the next step.
__device__ __forceinline__ bool last_split_to_finish(int* counter, int active) {
  __shared__ bool last_block;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last_block = atomicAdd(counter, 1) == active - 1;
  __syncthreads();
  if (last_block) __threadfence();
  return last_block;
}

}  // namespace
}  // namespace qwen3::cuda
