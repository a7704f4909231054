// Times the decode step's products for several rows (cuda::batch_product) at Qwen3-0.6B's and 8B's
// shapes, without libtorch: each layer's four products (QKV, the attention output with its
// residual, gate/up with SwiGLU, down with its residual) over every layer's own weights, as one
// CUDA graph, for 8, 32 and 64 rows, with weights in bfloat16 and as FP8 rows. Prints microseconds
// a layer and the rate at which the weights are read. Built and run by scripts/cuda-host/kernel-bench.sh batch; needs a GPU:
//   nvcc -O3 -std=c++17 -arch=sm_90 -Inative scripts/cuda-host/batch_bench.cu native/cuda/batch_product.cu \
//     -o /tmp/batch_bench && /tmp/batch_bench [0.6B|8B ...]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "../checks/host_check.h"
#include "bench_graph.h"
#include "cuda/kernels.h"

namespace cuda = qwen3::cuda;

namespace {

void bench(const ModelShape& s, int rows, bool fp8, cudaStream_t stream) {
  const int q_out = (s.heads + 2 * s.groups) * s.hd, attn = s.heads * s.hd;
  struct Product {
    int w_rows, n_out, k;
    bool swiglu, residual;
  };
  const Product products[] = {{q_out, q_out, s.dim, false, false},
                              {s.dim, s.dim, attn, false, true},
                              {2 * s.hidden, s.hidden, s.dim, true, false},
                              {s.dim, s.dim, s.hidden, false, true}};
  const auto bytes = [&](const Product& p) { return static_cast<size_t>(p.w_rows) * (fp8 ? p.k + 16 : p.k * 2); };
  std::vector<void*> weights[4];
  size_t layer_bytes = 0;
  for (const Product& p : products) layer_bytes += bytes(p);
  for (int l = 0; l < s.layers; ++l) {
    for (int i = 0; i < 4; ++i) weights[i].push_back(device_random(bytes(products[i]), 17 * l + i, fp8));
  }
  // Activations (rows of each): the residual stream, the normed input, QKV, the attention's output, the SwiGLU product.
  void* x = device_random(static_cast<size_t>(rows) * s.dim * 2, 1, false);
  void* normed = device_random(static_cast<size_t>(rows) * s.dim * 2, 2, false);
  void* qkv = device_random(static_cast<size_t>(rows) * q_out * 2, 3, false);
  void* ctx = device_random(static_cast<size_t>(rows) * attn * 2, 4, false);
  void* act = device_random(static_cast<size_t>(rows) * s.hidden * 2, 5, false);
  const void* ins[] = {normed, ctx, normed, act};
  void* outs[] = {qkv, x, act, x};
  CHECK(cudaDeviceSynchronize());
  const double us = time_graph([&](cudaStream_t st) {
    for (int l = 0; l < s.layers; ++l) {
      for (int i = 0; i < 4; ++i) {
        const Product& p = products[i];
        cuda::batch_product(1, p.swiglu, fp8, weights[i][l], ins[i], p.residual ? outs[i] : nullptr, outs[i], rows, p.n_out, p.k, st);
      }
    }
  }, stream);
  std::printf("%-4s %-5s %2d rows  %8.1f us a layer  %5.2f TB/s of weights\n", s.name, fp8 ? "fp8" : "bf16", rows, us / s.layers,
              layer_bytes * s.layers / us / 1e6);
  for (auto& list : weights) {
    for (void* w : list) CHECK(cudaFree(w));
  }
  for (void* a : {x, normed, qkv, ctx, act}) CHECK(cudaFree(a));
}

}  // namespace

int main(int argc, char** argv) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const ModelShape& s : kModelShapes) {
    if (std::strcmp(s.name, "32B") == 0 || !shape_wanted(s.name, argc, argv)) continue;  // 32B's 65 GB: left to one row
    for (const bool fp8 : {false, true}) {
      for (const int rows : {8, 32, 64}) bench(s, rows, fp8, stream);
    }
  }
  return 0;
}
