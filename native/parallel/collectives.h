// How the ranks of a tensor-parallel model combine their partial results. Each rank owns one
// Collectives; every rank must make the same calls in the same order, as with any collective.
// CUDA devices talk through NCCL (c10d::ProcessGroupNCCL, meeting through a c10d store); CPU
// "devices" are threads of this process that sum through shared memory, which is what lets the
// CPU-only CI check the sharded model against the whole one.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace qwen3 {

class Collectives {
 public:
  Collectives(int rank, int world) : rank_(rank), world_(world) {}
  virtual ~Collectives() = default;
  int rank() const { return rank_; }
  int world() const { return world_; }

  // x = the sum of every rank's x, in place; every rank ends with the same values.
  virtual void all_reduce_sum(at::Tensor& x) = 0;
  // out (world * in.numel() elements, contiguous) = every rank's `in`, rank by rank.
  virtual void all_gather(at::Tensor& out, const at::Tensor& in) = 0;
  // Makes every rank's pending and future collectives fail instead of waiting for a rank that
  // will not come (called when one rank's step fails).
  virtual void abort() = 0;

 private:
  int rank_, world_;
};

// One Collectives per device, rank i on devices[i] (all CUDA or all CPU), for ranks that run as
// threads of this process. A collective that waits longer than timeout_ms for another rank fails.
// Construct each rank's on its own thread: NCCL binds a communicator to the device current there.
class CollectiveGroup {
 public:
  static std::unique_ptr<CollectiveGroup> create(const std::vector<std::string>& devices, int64_t timeout_ms);
  virtual ~CollectiveGroup() = default;
  // Rank `rank`'s Collectives (made on the calling thread).
  virtual std::unique_ptr<Collectives> join(int rank) = 0;
  // "nccl" or "threads".
  virtual const char* transport() const = 0;
};

// Whether this build can run ranks on CUDA devices (compiled with NCCL through c10d).
bool nccl_available();

}  // namespace qwen3
