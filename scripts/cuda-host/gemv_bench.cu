// Times the batch-1 matrix-vector products of a decode step (cuda::gemv, cuda::gemv_fp8) at
// Qwen3-0.6B's, 8B's and 32B's shapes, without libtorch: each layer's four products (RMSNorm + QKV,
// the attention output with its residual, RMSNorm + gate/up + SwiGLU, down with its residual)
// over every layer's own weights, as one CUDA graph per measurement, the way a decode step's
// graph runs them back to back. Prints microseconds and bytes read per second for the whole
// layer stack and for each product alone (each alone is a graph of that product over every
// layer's weights). Compiled once per variant of
// stream_gemv.cuh's constants by scripts/cuda-host/kernel-bench.sh; needs a GPU:
//   nvcc -O3 -std=c++17 -arch=sm_90 -Inative scripts/cuda-host/gemv_bench.cu native/cuda/gemv_kernels.cu \
//     native/cuda/fp8_gemv.cu native/cuda/head_kernel.cu -o /tmp/gemv_bench && /tmp/gemv_bench [0.6B|8B|32B ...]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../checks/host_check.h"
#include "bench_graph.h"
#include "cuda/kernels.h"

namespace cuda = qwen3::cuda;

namespace {


void bench(const ModelShape& s, bool fp8, cudaStream_t stream) {
  const auto products = layer_products(s);
  const int q_out = products[0].n_out, attn = products[1].k;
  const auto row_bytes = [&](const LayerProduct& p) { return fp8 ? static_cast<size_t>(p.k) + 16 : static_cast<size_t>(p.k) * 2; };
  std::vector<void*> weights[4];
  for (int l = 0; l < s.layers; ++l) {
    for (int i = 0; i < 4; ++i) weights[i].push_back(device_random(row_bytes(products[i]) * products[i].rows(), 17 * l + i, fp8));
  }
  // Activations: the residual stream x, the QKV product, the attention's output (left as filled),
  // the SwiGLU product; RMSNorm scales of one.
  void* x = device_random(2 * s.dim, 1, false);
  void* qkv = device_random(2 * q_out, 2, false);
  void* ctx = device_random(2 * attn, 3, false);
  void* h = device_random(2 * s.hidden, 4, false);
  std::vector<float> ones(s.dim, 1.f);
  float* norm = upload(ones);
  void* outs[] = {qkv, x, h, x};
  const void* ins[] = {x, ctx, x, h};
  const auto product = [&](int i, int l, cudaStream_t st) {
    const LayerProduct& p = products[i];
    auto* run = fp8 ? cuda::gemv_fp8 : cuda::gemv;
    run(1, p.input, weights[i][l], ins[i], p.input == cuda::kGemvPlain ? nullptr : norm, p.residual ? x : nullptr, outs[i], p.n_out, p.k,
        1e-6f, st);
  };
  size_t layer_bytes = 0;
  for (const LayerProduct& p : products) layer_bytes += row_bytes(p) * p.rows();
  CHECK(cudaDeviceSynchronize());
  const double all = time_graph([&](cudaStream_t st) {
    for (int l = 0; l < s.layers; ++l) {
      for (int i = 0; i < 4; ++i) product(i, l, st);
    }
  }, stream);
  std::printf("%-4s %-5s layers   %8.1f us a layer  %5.2f TB/s\n", s.name, fp8 ? "fp8" : "bf16", all / s.layers, layer_bytes * s.layers / all / 1e6);
  for (int i = 0; i < 4; ++i) {
    const double us = time_graph([&](cudaStream_t st) {
      for (int l = 0; l < s.layers; ++l) product(i, l, st);
    }, stream);
    const LayerProduct& p = products[i];
    std::printf("%-4s %-5s %-8s %8.1f us a call   %5.2f TB/s  (%d x %d)\n", s.name, fp8 ? "fp8" : "bf16", p.name, us / s.layers,
                row_bytes(p) * p.rows() * s.layers / us / 1e6, p.rows(), p.k);
  }
  for (auto& list : weights) {
    for (void* w : list) CHECK(cudaFree(w));
  }
  for (void* a : {x, qkv, ctx, h}) CHECK(cudaFree(a));
  CHECK(cudaFree(norm));
}

}  // namespace

int main(int argc, char** argv) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const ModelShape& s : kModelShapes) {
    if (!shape_wanted(s.name, argc, argv)) continue;
    bench(s, false, stream);
    bench(s, true, stream);
  }
  return 0;
}
