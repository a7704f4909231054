// Times the decode step's layer for several rows, without libtorch: its two RMSNorms and four
// products (QKV, the attention output with its residual, gate/up with SwiGLU, down with its
// residual) over every layer's own weights, as one CUDA graph, for 8, 16, 32 and 64 rows, with
// weights in bfloat16 and as FP8 rows, the way the decode step runs them:
//   batch_product  cuda::rms_norm, then cuda::batch_product;
//   cuBLAS         (bfloat16, with BATCH_BENCH_CUBLAS=1) cuda::rms_norm, cublasGemmEx (float32 sums;
//                  the residual as beta = 1) and cuda::silu_mul after gate/up.
// Prints microseconds a layer, the rate at which the weights are read, and the bfloat16 output
// head's product (151,936 rows) alone. Built and run by scripts/cuda-host/kernel-bench.sh batch;
// needs a GPU:
//   nvcc -O3 -std=c++17 -arch=sm_90 -Inative scripts/cuda-host/batch_bench.cu native/cuda/batch_product.cu \
//     native/cuda/norm_kernels.cu -lcublas -o /tmp/batch_bench && /tmp/batch_bench [0.6B|1.7B|4B|8B ...] [--rows 8,16]
#include <cuda_runtime.h>
#if __has_include(<cublas_v2.h>)  // kernel-bench.sh links cuBLAS where the toolkit has it
#include <cublas_v2.h>
#define BATCH_BENCH_HAS_CUBLAS 1
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../checks/host_check.h"
#include "bench_graph.h"
#include "cuda/kernels.h"

namespace cuda = qwen3::cuda;
#ifdef BATCH_BENCH_HAS_CUBLAS
constexpr bool kHasCublas = true;
#else
constexpr bool kHasCublas = false;
#endif

namespace {

constexpr int kVocab = 151936;

enum class Mode { kBatchProduct, kCublas };
constexpr const char* kModeNames[] = {"batch_product", "cuBLAS"};
constexpr float kEps = 1e-6f;

// One line: the layer's microseconds for `rows` rows in `mode`.
void bench(const ModelShape& s, int rows, bool fp8, Mode mode, cudaStream_t stream) {
  const bool with_cublas = mode == Mode::kCublas;
  const auto products = layer_products(s);
  const int q_out = products[0].n_out, attn = products[1].k;
  const auto bytes = [&](const LayerProduct& p) { return static_cast<size_t>(p.rows()) * (fp8 ? p.k + 16 : p.k * 2); };
  std::vector<void*> weights[4];
  size_t layer_bytes = 0;
  for (const LayerProduct& p : products) layer_bytes += bytes(p);
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
  float* norm_w = static_cast<float*>(device_random(static_cast<size_t>(s.dim) * 4, 8, false));  // bfloat16 bits: finite floats
  CHECK(cudaDeviceSynchronize());
  void* gate_up = with_cublas ? device_random(static_cast<size_t>(rows) * 2 * s.hidden * 2, 6, false) : nullptr;
#ifdef BATCH_BENCH_HAS_CUBLAS
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;  // set beforehand: cuBLAS must not allocate while the graph is captured
  constexpr size_t kWorkspaceBytes = 32 << 20;
  if (with_cublas) {
    CHECK(cudaMalloc(&workspace, kWorkspaceBytes));
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS || cublasSetStream(handle, stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(handle, workspace, kWorkspaceBytes) != CUBLAS_STATUS_SUCCESS) {
      std::abort();
    }
  }
#endif
  // One product of `p` for weights w: batch_product or cuBLAS.
  const auto multiply = [&](const LayerProduct& p, const void* w, const void* in, void* out, cudaStream_t st) {
    if (!with_cublas) {
      cuda::batch_product(1, p.swiglu(), fp8, w, in, p.residual ? out : nullptr, out, rows, p.n_out, p.k, st);
      return;
    }
#ifdef BATCH_BENCH_HAS_CUBLAS
    // Column-major: out^T (w_rows, rows) = W (w_rows, k) x in^T (k, rows).
    const float one = 1.f, beta = p.residual ? 1.f : 0.f;
    if (cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, p.rows(), rows, p.k, &one, w, CUDA_R_16BF, p.k, in, CUDA_R_16BF, p.k, &beta,
                     p.swiglu() ? gate_up : out, CUDA_R_16BF, p.rows(), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      std::abort();
    }
    if (p.swiglu()) cuda::silu_mul(1, gate_up, out, rows, p.n_out, st);
#endif
  };
  const double us = time_graph([&](cudaStream_t st) {
    for (int l = 0; l < s.layers; ++l) {
      for (int i = 0; i < 4; ++i) {
        if (products[i].input != cuda::kGemvPlain) cuda::rms_norm(1, x, norm_w, normed, rows, s.dim, kEps, st);
        multiply(products[i], weights[i][l], ins[i], outs[i], st);
      }
    }
  }, stream);
  // The output head (151,936 rows of the vocabulary), in bfloat16 only: the decode step keeps FP8 heads on batch_product.
  const LayerProduct head{"head", cuda::kGemvPlain, kVocab, s.dim, false};
  void* head_w = fp8 ? nullptr : device_random(bytes(head), 99, false);
  void* logits = fp8 ? nullptr : device_random(static_cast<size_t>(rows) * kVocab * 2, 7, false);
  const double head_us = fp8 ? 0 : time_graph([&](cudaStream_t st) { multiply(head, head_w, normed, logits, st); }, stream);
  std::printf("%-4s %-5s %2d rows  %-13s %8.1f us a layer  %5.2f TB/s of weights", s.name, fp8 ? "fp8" : "bf16", rows,
              kModeNames[static_cast<int>(mode)], us / s.layers, layer_bytes * s.layers / us / 1e6);
  if (!fp8) std::printf("   head %7.1f us  %5.2f TB/s", head_us, bytes(head) / head_us / 1e6);
  std::printf("\n");
  for (void* p : {head_w, logits}) {
    if (p != nullptr) CHECK(cudaFree(p));
  }
#ifdef BATCH_BENCH_HAS_CUBLAS
  if (handle != nullptr) cublasDestroy(handle);
  if (workspace != nullptr) CHECK(cudaFree(workspace));
#endif
  if (gate_up != nullptr) CHECK(cudaFree(gate_up));
  for (auto& list : weights) {
    for (void* w : list) CHECK(cudaFree(w));
  }
  for (void* a : {x, normed, qkv, ctx, act, static_cast<void*>(norm_w)}) CHECK(cudaFree(a));
}

}  // namespace

int main(int argc, char** argv) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const char* cublas = std::getenv("BATCH_BENCH_CUBLAS");
  std::vector<int> wanted_rows = {8, 16, 32, 64};  // --rows 8,64 picks
  for (int a = 1; a + 1 < argc; ++a) {
    if (std::strcmp(argv[a], "--rows") != 0) continue;
    wanted_rows.clear();
    for (const char* p = argv[a + 1]; *p != '\0'; p = std::strchr(p, ',') != nullptr ? std::strchr(p, ',') + 1 : p + std::strlen(p)) {
      wanted_rows.push_back(std::atoi(p));
    }
  }
  for (const ModelShape& s : kModelShapes) {
    if (std::strcmp(s.name, "32B") == 0 || !shape_wanted(s.name, argc, argv)) continue;  // 32B's 65 GB: left to one row
    for (const bool fp8 : {false, true}) {
      for (const int rows : wanted_rows) {
        bench(s, rows, fp8, Mode::kBatchProduct, stream);
        if (!fp8 && cublas != nullptr && *cublas == '1' && kHasCublas) bench(s, rows, fp8, Mode::kCublas, stream);
      }
    }
  }
  return 0;
}
