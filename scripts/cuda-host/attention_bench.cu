// Times the batch-1 decode attention (cuda::group_attention, in the one-row step's early phase;
// QWEN3_NO_EARLY_ATTENTION=1 for the phase batch steps use) after long prompts, at
// Qwen3-0.6B's, 8B's and 32B's head counts, without libtorch: every layer's call over that
// layer's own key/value cache, as one CUDA graph, the way a decode step's graph runs them. Prints
// microseconds a call and the rate at which the calls read the cache. The streaming kernel
// (attention_stream.cuh) unless QWEN3_NO_STREAM_ATTENTION=1 picks the general one. Compiled once
// per variant of the split constants by scripts/cuda-host/kernel-bench.sh; needs a GPU:
//   nvcc -O3 -std=c++17 -arch=sm_90 -Inative scripts/cuda-host/attention_bench.cu native/cuda/attention_kernel.cu \
//     -o /tmp/attention_bench && /tmp/attention_bench [0.6B|8B|32B ...] [--context N,N,...]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../checks/host_check.h"
#include "bench_graph.h"
#include "cuda/kernels.h"

namespace cuda = qwen3::cuda;

namespace {

constexpr int kGroups = 8, kHeadDim = 128;  // every shape's

void bench(const ModelShape& s, int context, cudaStream_t stream) {
  const int capacity = context, qkv_width = (s.heads + 2 * kGroups) * kHeadDim;
  const size_t cache_bytes = static_cast<size_t>(kGroups) * capacity * kHeadDim * 2;
  std::vector<void*> keys, values;
  for (int l = 0; l < s.layers; ++l) {
    keys.push_back(device_random(cache_bytes, 31 * l + 1, false));
    values.push_back(device_random(cache_bytes, 31 * l + 2, false));
  }
  void* qkv = device_random(static_cast<size_t>(qkv_width) * 2, 3, false);
  void* out = device_random(static_cast<size_t>(s.heads) * kHeadDim * 2, 4, false);
  const std::vector<float> ones(kHeadDim, 1.f), angles(static_cast<size_t>(capacity) * kHeadDim, 0.5f);
  float *norm = upload(ones), *cos = upload(angles), *sin = upload(angles);
  const std::vector<int64_t> position{context - 1};
  int64_t* d_position = upload(position);
  std::vector<float> zeros(cuda::attention_partials_floats(1, s.heads, kHeadDim, capacity), 0.f);
  float* partials = upload(zeros);
  const std::vector<int> counters(kGroups, 0);
  int* done = upload(counters);
  CHECK(cudaDeviceSynchronize());
  // In the one-row decode step's phase. Here the kernel before each call is another call, which
  // does not wait before its dependents start, but no call writes what another reads early: only
  // the timing matters.
  const double us = time_graph([&](cudaStream_t st) {
    for (int l = 0; l < s.layers; ++l) {
      cuda::group_attention(1, qkv, norm, norm, true, cos, sin, d_position, 0, nullptr, keys[l], values[l], out, partials, done, 1, s.heads,
                            kGroups, kHeadDim, capacity, 1.f / std::sqrt(static_cast<float>(kHeadDim)), 1e-6f, cuda::kAttendFusedEarly, st);
    }
  }, stream);
  const double per_call = us / s.layers, read = 2.0 * kGroups * context * kHeadDim * 2;
  std::printf("%-4s context %6d  %8.1f us a call  %5.2f TB/s of keys and values\n", s.name, context, per_call, read / per_call / 1e6);
  for (void* p : keys) CHECK(cudaFree(p));
  for (void* p : values) CHECK(cudaFree(p));
  for (void* p : {qkv, out, static_cast<void*>(norm), static_cast<void*>(cos), static_cast<void*>(sin), static_cast<void*>(d_position),
                  static_cast<void*>(partials), static_cast<void*>(done)}) {
    CHECK(cudaFree(p));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> contexts{128, 1024, 4096, 16384, 32768};
  for (int a = 1; a + 1 < argc; ++a) {
    if (std::strcmp(argv[a], "--context") != 0) continue;
    contexts.clear();
    for (char* p = argv[a + 1]; *p != '\0';) {
      contexts.push_back(static_cast<int>(std::strtol(p, &p, 10)));
      if (*p == ',') ++p;
    }
  }
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const ModelShape& s : kModelShapes) {
    if (!shape_wanted(s.name, argc, argv)) continue;
    for (const int context : contexts) bench(s, context, stream);
  }
  return 0;
}
