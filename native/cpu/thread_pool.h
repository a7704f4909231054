// Splitting the decode step's matrix-vector products over CPU threads. at::parallel_for cannot
// do it for this addon: its OpenMP loop is expanded in the caller's translation unit, and built
// without OpenMP (as this addon is) it runs on one thread. Compiling with OpenMP made decoding
// faster but every prompt about 8% slower, even in the reference path that never entered our
// loops; libtorch's inter-op pool (at::launch) sleeps between tasks, and waking it for each of
// the ~115 products of a step was slow. So the parts run on a small pool of our own whose
// threads spin for 100 us after each task before they sleep.
#pragma once

#include <cstdint>
#include <functional>

namespace qwen3 {

// Calls fn(begin, end) on contiguous parts of [0, n), at most at::get_num_threads() of them
// (and at most 8) and each at least `grain` long; part 0 runs on the calling thread. Returns when every part
// is done. fn must not throw. One call at a time runs (others wait their turn).
void parallel_parts(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace qwen3
