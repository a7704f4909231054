// Collectives between CUDA devices through NCCL, as PyTorch's own distributed package runs them:
// one c10d::ProcessGroupNCCL per rank, the ranks meeting through a c10d store: a HashStore for
// ranks that are threads of this process, rank 0's TCPStore for ranks in several processes
// (parallel/process_group.h). The collectives are queued on the current stream's device and joined back to it
// without blocking the host, so a decode step that contains them is still captured as one CUDA
// graph. Built only where libtorch has CUDA and the NCCL headers were found (USE_C10D_NCCL).
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <stdexcept>

#include "parallel/collectives.h"

#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace qwen3 {

#ifdef USE_C10D_NCCL

namespace {

class NcclCollectives : public Collectives {
 public:
  NcclCollectives(int rank, int world, c10::intrusive_ptr<c10d::ProcessGroupNCCL> group)
      : Collectives(rank, world), group_(std::move(group)) {}
  // Ends the communicator as destroy_process_group() would (each rank's on its own thread, all
  // at once: see Qwen3Engine's destructor); a group that already failed is past caring.
  ~NcclCollectives() override {
    try {
      group_->shutdown();
    } catch (...) {
    }
  }

  void all_reduce_sum(at::Tensor& x) override {
    std::vector<at::Tensor> tensors{x};
    group_->allreduce(tensors)->wait();
  }

  void all_gather(at::Tensor& out, const at::Tensor& in) override {
    at::Tensor input = in;
    group_->_allgather_base(out, input)->wait();
  }

  void abort() override { group_->abort(); }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> group_;
};

class NcclGroup : public CollectiveGroup {
 public:
  NcclGroup(int world, int64_t timeout_ms) : world_(world), timeout_ms_(timeout_ms), store_(c10::make_intrusive<c10d::HashStore>()) {
    store_->setTimeout(std::chrono::milliseconds(timeout_ms));
  }

  std::unique_ptr<Collectives> join(int rank) override;
  const char* transport() const override { return "nccl"; }

 private:
  int world_;
  int64_t timeout_ms_;
  c10::intrusive_ptr<c10d::HashStore> store_;
};

}  // namespace

std::unique_ptr<Collectives> nccl_over_store(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world, int64_t timeout_ms) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = std::chrono::milliseconds(timeout_ms);
  auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
  return std::make_unique<NcclCollectives>(rank, world, std::move(group));
}

std::unique_ptr<Collectives> NcclGroup::join(int rank) { return nccl_over_store(store_, rank, world_, timeout_ms_); }

bool nccl_available() { return true; }

std::unique_ptr<CollectiveGroup> make_nccl_group(const std::vector<std::string>& devices, int64_t timeout_ms) {
  return std::make_unique<NcclGroup>(static_cast<int>(devices.size()), timeout_ms);
}

#else

namespace {
[[noreturn]] void no_nccl() {
  throw std::invalid_argument(
      "Tensor parallelism over CUDA devices needs NCCL, and this build of qwen3-torch has none (a CPU-only libtorch, or a CUDA "
      "libtorch whose NCCL headers were not found at build time: pip install nvidia-nccl-cu13 and rebuild)");
}
}  // namespace

bool nccl_available() { return false; }
std::unique_ptr<CollectiveGroup> make_nccl_group(const std::vector<std::string>&, int64_t) { no_nccl(); }
std::unique_ptr<Collectives> nccl_over_store(const c10::intrusive_ptr<c10d::Store>&, int, int, int64_t) { no_nccl(); }

#endif

}  // namespace qwen3
