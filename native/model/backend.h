// Which kernels run a loaded model, chosen once at load: the one place that knows which
// backends this build has and which devices they serve.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "model/aten_ops.h"
#include "model/config.h"

namespace qwen3 {

enum class Backend {
  Reference,  // the reference pass, op for op (eager, where no fused kernels serve the device)
  Aten,       // the fast block through ATen alone (compiled on MPS or XPU; CUDA builds without the fused kernels)
  Cpu,        // the fast block with the CPU loops and GEMV (compiled, on the CPU)
  Cuda,       // the fast block with the fused CUDA kernels (eager and compiled)
};

Backend choose_backend(c10::Device device, const ModelConfig& config, bool compile);
const char* backend_name(Backend backend);

// The operations of a prompt (or uncached) step for a fast backend.
std::unique_ptr<AtenOps> make_prompt_ops(Backend backend, const ModelConfig& config, StepShape step);

}  // namespace qwen3
