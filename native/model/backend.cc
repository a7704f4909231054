#include "model/backend.h"

#include <stdexcept>

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

}  // namespace qwen3
