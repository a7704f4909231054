#include "model/backend.h"

#include <ATen/ops/embedding.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cpu/cpu_ops.h"
#include "cuda/decode_step.h"
#include "cuda/prefill_ops.h"

namespace qwen3 {

Backend choose_backend(c10::Device device, const ModelConfig& config, bool compile) {
  // On CUDA the fused kernels serve eager too: the reference order costs ~60 kernel launches a
  // block, which bounds a decode step far below what the same kernels give compiled.
  if (CudaDecoder::supported(device) && CudaDecoder::fused_kernels(config)) return Backend::Cuda;
  if (!compile) return Backend::Reference;
  return device.is_cpu() ? Backend::Cpu : Backend::Aten;
}

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::Reference: return "reference";
    case Backend::Aten: return "aten";
    case Backend::Cpu: return "cpu";
    case Backend::Cuda: return "cuda";
  }
  return "unknown";
}

std::unique_ptr<AtenOps> make_prompt_ops(Backend backend, const ModelConfig& config, StepShape step) {
  switch (backend) {
    case Backend::Cpu: return std::make_unique<CpuOps>(config, std::move(step));
#ifdef QWEN3_WITH_CUDA_KERNELS
    case Backend::Cuda: return std::make_unique<CudaPrefillOps>(config, std::move(step));
#endif
    case Backend::Aten: return std::make_unique<AtenOps>(config, std::move(step));
    default: throw std::logic_error(std::string("no prompt operations for the ") + backend_name(backend) + " backend");
  }
}

at::Tensor prompt_logits(Backend backend, const ModelConfig& config, const FusedWeights& weights, const at::Tensor& ids, StepShape step,
                         bool all_logits) {
  const int64_t batch = ids.size(0), seq = ids.size(1), D = config.emb_dim;
  const std::unique_ptr<AtenOps> ops = make_prompt_ops(backend, config, std::move(step));
  at::Tensor x = at::embedding(weights.tok_emb, ids).view({batch * seq, D});  // (batch * seq, emb_dim)
  run_blocks(weights, *ops, x);
  // Logits of every position, or of each row's last.
  const at::Tensor h = all_logits ? x : x.view({batch, seq, D}).select(1, seq - 1);  // (batch * seq or batch, emb_dim)
  return gather_vocab(weights, ops->logits(h, weights.final_norm, weights.out_head)).view({batch, all_logits ? seq : 1, config.vocab_size});
}

bool slot_kernels_enabled() {
  const char* setting = std::getenv("QWEN3_SLOT_KERNELS");
  return setting == nullptr || std::string(setting) != "0";
}

std::unique_ptr<AtenOps> make_slot_rows_ops(Backend backend, const ModelConfig& config, StepShape step, bool kernels) {
  if (backend == Backend::Cpu && kernels) return std::make_unique<CpuOps>(config, std::move(step));
  return std::make_unique<AtenOps>(config, std::move(step));
}

}  // namespace qwen3
