// A model split over processes, one rank each, as torchrun starts them: every process loads the
// same model with its own rank and makes the same calls in the same order (SPMD, as gpt-fast's
// generate does under torchrun). The ranks meet through a c10d::TCPStore that rank 0 hosts at
// master_addr:master_port; CUDA ranks then add through NCCL (c10d::ProcessGroupNCCL over that
// store, as PyTorch's init_process_group does), CPU ranks through the store itself, which is
// slow and meant for tests and tiny models (c10d's Gloo is out of reach of a CPU libtorch's
// headers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/step.h"
#include "parallel/collectives.h"

namespace qwen3 {

// This process's collectives in the group described by `spec`, on `device`. Every process of the
// group joins once per model it loads, in the same order: each join keeps its own keys in the
// store (the n-th join of this process). Waits up to timeout_ms for the others to arrive.
std::unique_ptr<Collectives> join_process_group(const ProcessGroupSpec& spec, const std::string& device, int64_t timeout_ms);

// How ranks on `device` talk: "nccl" (CUDA) or "store" (CPU).
const char* process_group_transport(const std::string& device);

}  // namespace qwen3
