// Would one persistent kernel per decode step beat the graph of kernels it replaces? Times, at
// Qwen3-0.6B's shapes in bfloat16 (whose products all take the one-row kernel's register path),
// without libtorch:
//  - the floor of each: a graph of empty kernels chained by programmatic dependent launch (µs a
//    kernel), and one kernel of as many grid-wide barriers (µs a barrier);
//  - the layer stack's four products (RMSNorm + QKV, the attention output plus its residual,
//    RMSNorm + gate/up + SwiGLU, down plus its residual) over every layer's own weights: as the
//    decode step's graph runs them (cuda::gemv, one kernel each), and as one persistent kernel
//    (persistent_walk.cu) that walks the same products with a grid-wide barrier after each, and
//    with a fifth, empty stage a layer where the attention would run.
// The walk repeats the one-row kernel's arithmetic (its register path: the same lanes, the same
// order of sums), so the bench also checks that both leave the same bits in the residual stream
// and the QKV and SwiGLU outputs, and exits 1 where they differ. Needs a GPU with sm_90; run by
//   bash scripts/cuda-host/kernel-bench.sh persistent
// (VARIANTS="name:-DWALK_NO_BARRIER,..." for the walk's diagnostic switches, persistent_walk.cu).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <utility>
#include <vector>

#include "../checks/host_check.h"
#include "bench_graph.h"
#include "cuda/kernels.h"
#include "persistent_walk.h"

namespace cuda = qwen3::cuda;
using walk::Stage;

namespace {

size_t differing(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

// Times the walk against the graph; false where their results differ.
bool bench(const ModelShape& s, cudaStream_t stream) {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const auto products = layer_products(s);
  const int q_out = products[0].n_out, attn = products[1].k;
  // The walk's stage for each product: the plain products of a layer all add to the residual.
  const auto kind = [](const LayerProduct& p) {
    return p.input == cuda::kGemvPlain ? walk::kPlainResidual : p.swiglu() ? walk::kNormedSwiGLU : walk::kNormed;
  };
  std::vector<void*> weights[4];
  size_t layer_bytes = 0;
  for (const auto& p : products) layer_bytes += static_cast<size_t>(p.rows()) * p.k * 2;
  for (int l = 0; l < s.layers; ++l) {
    for (int i = 0; i < 4; ++i) weights[i].push_back(device_random(static_cast<size_t>(products[i].rows()) * products[i].k * 2, 17 * l + i, false));
  }
  auto* x = static_cast<__nv_bfloat16*>(device_random(2 * s.dim, 1, false));
  auto* qkv = static_cast<__nv_bfloat16*>(device_random(2 * q_out, 2, false));
  auto* ctx = static_cast<__nv_bfloat16*>(device_random(2 * attn, 3, false));
  auto* h = static_cast<__nv_bfloat16*>(device_random(2 * s.hidden, 4, false));
  void* x0 = device_random(2 * s.dim, 1, false);
  std::vector<float> scales(s.dim);
  for (int i = 0; i < s.dim; ++i) scales[i] = 0.5f + static_cast<float>(i % 7) / 8.f;
  float* norm = upload(scales);
  const void* ins[] = {x, ctx, x, h};
  void* outs[] = {qkv, x, h, x};
  const float eps = 1e-6f;

  // The graph of kernels, as the decode step runs them.
  const auto kernels = [&](cudaStream_t st) {
    for (int l = 0; l < s.layers; ++l) {
      for (int i = 0; i < 4; ++i) {
        const LayerProduct& p = products[i];
        cuda::gemv(1, p.input, weights[i][l], ins[i], p.input == cuda::kGemvPlain ? nullptr : norm, p.residual ? x : nullptr,
                   outs[i], p.n_out, p.k, eps, st);
      }
    }
  };
  // The same products as stages of the walk (with an empty stage after QKV where `attention`).
  unsigned* counter = nullptr;
  CHECK(cudaMalloc(&counter, sizeof(unsigned)));
  int ring_elems = 0, max_items = 0;
  const auto stages_for = [&](bool attention) {
    std::vector<Stage> stages;
    for (int l = 0; l < s.layers; ++l) {
      for (int i = 0; i < 4; ++i) {
        const LayerProduct& p = products[i];
        const int parts = walk::row_parts(p.n_out, p.k, p.swiglu());
        const int units = (p.n_out + sms - 1) / sms;
        ring_elems = std::max(ring_elems, units * (p.rows() / p.n_out) * p.k + (p.input == cuda::kGemvPlain ? 0 : 2 * p.k));
        max_items = std::max(max_items, units * parts);
        stages.push_back({weights[i][l], ins[i], p.input == cuda::kGemvPlain ? nullptr : norm, outs[i], kind(p), p.n_out, p.k, p.input == cuda::kGemvPlain ? parts : 1});
        if (i == 0 && attention) stages.push_back({nullptr, nullptr, nullptr, nullptr, walk::kEmpty, 0, 0, 1});
      }
    }
    Stage* device = nullptr;
    CHECK(cudaMalloc(&device, stages.size() * sizeof(Stage)));
    CHECK(cudaMemcpy(device, stages.data(), stages.size() * sizeof(Stage), cudaMemcpyHostToDevice));
    return std::make_pair(device, static_cast<int>(stages.size()));
  };
  const auto [plain_stages, n_plain] = stages_for(false);
  const auto [attn_stages, n_attn] = stages_for(true);
  const size_t smem = 2 * static_cast<size_t>(ring_elems) * 2 + static_cast<size_t>(max_items) * sizeof(float);
  if (max_items > 2 * walk::kThreads / 32 || max_items / 2 > walk::kThreads) {
    std::printf("%s: more items a block than the walk takes\n", s.name);
    return false;
  }
  const int resident = walk::prepare_walk(smem);
  if (resident < 1) {
    std::printf("%s: the walk's %zu bytes of shared memory do not fit an SM\n", s.name, smem);
    return false;
  }
  const auto walk_graph = [&](const Stage* stages, int n) {
    return [=](cudaStream_t st) {
      CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), st));
      walk::launch_walk(stages, n, counter, sms, ring_elems, smem, eps, st);
    };
  };

  // Same bits: from the same residual stream, one pass of each.
  std::vector<uint16_t> expected[3];
  const uint16_t* checked[] = {reinterpret_cast<const uint16_t*>(x), reinterpret_cast<const uint16_t*>(qkv), reinterpret_cast<const uint16_t*>(h)};
  const size_t checked_n[] = {static_cast<size_t>(s.dim), static_cast<size_t>(q_out), static_cast<size_t>(s.hidden)};
  CHECK(cudaDeviceSynchronize());  // the fills ran on the default stream
  CHECK(cudaMemcpy(x, x0, 2 * s.dim, cudaMemcpyDeviceToDevice));
  CHECK(cudaDeviceSynchronize());
  kernels(stream);
  CHECK(cudaStreamSynchronize(stream));
  for (int i = 0; i < 3; ++i) expected[i] = download(checked[i], checked_n[i]);
  CHECK(cudaMemcpy(x, x0, 2 * s.dim, cudaMemcpyDeviceToDevice));
  CHECK(cudaDeviceSynchronize());
  walk_graph(attn_stages, n_attn)(stream);
  CHECK(cudaStreamSynchronize(stream));
  size_t wrong = 0;
  for (int i = 0; i < 3; ++i) wrong += differing(expected[i], download(checked[i], checked_n[i]));
  std::printf("%-4s walk against the kernels after %d layers: %zu of %zu values differ\n", s.name, s.layers, wrong,
              checked_n[0] + checked_n[1] + checked_n[2]);

  const double graph_us = time_graph(kernels, stream);
  const double walk_us = time_graph(walk_graph(plain_stages, n_plain), stream);
  const double walk_attn_us = time_graph(walk_graph(attn_stages, n_attn), stream);
  const auto line = [&](const char* what, double us) {
    std::printf("%-4s %-44s %8.1f us a layer  %5.2f TB/s\n", s.name, what, us / s.layers, layer_bytes * s.layers / us / 1e6);
  };
  line("graph of kernels (4 a layer)", graph_us);
  line("persistent walk (4 stages a layer)", walk_us);
  line("persistent walk (5 stages: one empty)", walk_attn_us);
  std::printf("%-4s walk: %d blocks of %d threads, %zu bytes of shared memory each\n", s.name, sms, walk::kThreads, smem);

  for (auto& list : weights) {
    for (void* w : list) CHECK(cudaFree(w));
  }
  for (void* a : {static_cast<void*>(x), static_cast<void*>(qkv), static_cast<void*>(ctx), static_cast<void*>(h), x0}) CHECK(cudaFree(a));
  CHECK(cudaFree(norm));
  CHECK(cudaFree(plain_stages));
  CHECK(cudaFree(attn_stages));
  CHECK(cudaFree(counter));
  return wrong == 0;
}

// The floors: µs a link of a chain of empty kernels, µs a barrier of the walk's grid.
void floors(cudaStream_t stream) {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  unsigned* counter = nullptr;
  CHECK(cudaMalloc(&counter, sizeof(unsigned)));
  constexpr int kLinks = 140;
  for (const int blocks : {sms, 4 * sms}) {
    const double us = time_graph([&](cudaStream_t st) {
      for (int i = 0; i < kLinks; ++i) walk::launch_empty_link(counter, blocks, st);
    }, stream);
    std::printf("floor: empty kernels of %d blocks chained by programmatic dependent launch: %.2f us a kernel\n", blocks, us / kLinks);
  }
  const double us = time_graph([&](cudaStream_t st) {
    CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), st));
    walk::launch_barriers(counter, sms, kLinks, st);
  }, stream);
  std::printf("floor: grid-wide barriers of %d blocks in one kernel: %.2f us a barrier\n", sms, us / kLinks);
  CHECK(cudaFree(counter));
}

}  // namespace

int main() {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  floors(stream);
  const bool same = bench(kModelShapes[0], stream);
#if defined(WALK_NO_BARRIER) || defined(WALK_NO_ARRIVE) || defined(WALK_NO_COMPUTE)
  return 0;  // a diagnostic build: its results are wrong by design
#else
  return same ? 0 : 1;
#endif
}
