// What the kernel microbenchmarks (gemv_bench.cu, attention_bench.cu, batch_bench.cu,
// persistent_bench.cu) share: the model shapes and a layer's products at each, the shapes a command
// line asks for, device buffers of hashed values, and the time of one replay of a CUDA graph.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "../checks/host_check.h"
#include "cuda/kernels.h"

namespace {

struct ModelShape {
  const char* name;
  int dim, heads, groups, hd, hidden, layers;
};
constexpr ModelShape kModelShapes[] = {{"0.6B", 1024, 16, 8, 128, 3072, 28}, {"1.7B", 2048, 16, 8, 128, 6144, 28},
                                       {"4B", 2560, 32, 8, 128, 9728, 36},    {"8B", 4096, 32, 8, 128, 12288, 36},
                                       {"32B", 5120, 64, 8, 128, 25600, 64}};

// One of a decoder layer's matrix products, as the one-row and batch kernels take it.
struct LayerProduct {
  const char* name;
  qwen3::cuda::GemvInput input;  // plain, RMSNorm on the input, or RMSNorm and SwiGLU (W = [gate | up])
  int n_out, k;
  bool residual;  // the output is added to in place
  bool swiglu() const { return input == qwen3::cuda::kGemvRmsNormSwiGLU; }
  int rows() const { return swiglu() ? 2 * n_out : n_out; }  // W's rows
};

// A layer's four products in their order: RMSNorm + QKV, the attention output plus the residual,
// RMSNorm + gate/up + SwiGLU, down plus the residual.
inline std::array<LayerProduct, 4> layer_products(const ModelShape& s) {
  namespace cuda = qwen3::cuda;
  const int q_out = (s.heads + 2 * s.groups) * s.hd, attn = s.heads * s.hd;
  return {{{"qkv", cuda::kGemvRmsNorm, q_out, s.dim, false},
           {"out", cuda::kGemvPlain, s.dim, attn, true},
           {"gate_up", cuda::kGemvRmsNormSwiGLU, s.hidden, s.dim, false},
           {"down", cuda::kGemvPlain, s.dim, s.hidden, true}}};
}

// Whether the shape names in argv[1..] (options starting with "--" and their values skipped) ask
// for `name`; none asks for every shape.
inline bool shape_wanted(const char* name, int argc, char** argv) {
  bool any = false, wanted = false;
  for (int a = 1; a < argc; ++a) {
    if (std::strncmp(argv[a], "--", 2) == 0) {
      ++a;
      continue;
    }
    any = true;
    wanted |= std::strcmp(argv[a], name) == 0;
  }
  return !any || wanted;
}

// Fills `bytes` with a hash of the position: bfloat16 values in about [-1, 1] (fp8: E4M3 bytes
// that are never NaN; each row's scale is whatever four such bytes read as, harmless to timing).
__global__ void fill(uint16_t* p, size_t n, uint32_t seed, bool fp8) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    p[i] = fp8 ? static_cast<uint16_t>(h & 0x3737) : static_cast<uint16_t>(0x3c00 | (h & 0x807f));
  }
}

void* device_random(size_t bytes, uint32_t seed, bool fp8) {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, bytes + 16));
  fill<<<1024, 256>>>(static_cast<uint16_t*>(p), bytes / 2, seed, fp8);
  CHECK(cudaGetLastError());
  return p;
}

// Microseconds per replay of a graph of `record`'s launches (median of 9 timed replays of 5).
double time_graph(const std::function<void(cudaStream_t)>& record, cudaStream_t stream) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  record(stream);
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) CHECK(cudaGraphLaunch(exec, stream));
  std::vector<float> times;
  for (int i = 0; i < 9; ++i) {
    CHECK(cudaEventRecord(start, stream));
    for (int r = 0; r < 5; ++r) CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms * 1000.f / 5.f);
  }
  std::sort(times.begin(), times.end());
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  return times[times.size() / 2];
}

}  // namespace
