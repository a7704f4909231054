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

// The fast block over a prompt step: embeddings, every block through make_prompt_ops, the final
// norm and head. ids: (batch, seq). Returns logits (batch, seq or 1, vocab): every position's
// (all_logits) or each row's last.
at::Tensor prompt_logits(Backend backend, const ModelConfig& config, const FusedWeights& weights, const at::Tensor& ids, StepShape step,
                         bool all_logits);

// Whether ragged decode steps over sequence slots use the backend's own kernels (the CPU loops,
// the CUDA slot decoder): yes unless the environment sets QWEN3_SLOT_KERNELS=0, which leaves them
// to plain ATen on every device (to isolate a fault in those kernels).
bool slot_kernels_enabled();

// The operations of a ragged decode step over sequence slots (step.slots) where no fused slot
// decoder runs it: the CPU loops on the CPU (with `kernels`), else ATen.
std::unique_ptr<AtenOps> make_slot_rows_ops(Backend backend, const ModelConfig& config, StepShape step, bool kernels);

}  // namespace qwen3
