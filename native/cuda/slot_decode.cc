#include "cuda/slot_decode.h"

#include <stdexcept>

namespace qwen3 {

bool CudaSlotDecoder::supports(Backend) { return false; }
struct CudaSlotDecoder::State {};
CudaSlotDecoder::CudaSlotDecoder(const ModelConfig&, const FusedWeights&, SlotCache&, c10::Device, at::ScalarType, bool) {
  throw std::logic_error("the CUDA slot decoder needs the fused CUDA kernels");
}
CudaSlotDecoder::~CudaSlotDecoder() = default;
void CudaSlotDecoder::reserve(int64_t, int64_t) {}
at::Tensor CudaSlotDecoder::step(const std::vector<int64_t>&, const std::vector<int64_t>&, const std::vector<int32_t>&) {
  throw std::logic_error("the CUDA slot decoder needs the fused CUDA kernels");
}
void CudaSlotDecoder::release() {}

}  // namespace qwen3
