// Collectives for ranks that are CPU threads of this process: each rank publishes its tensor,
// and after a barrier every rank reads all of them. Every rank sums in rank order, so all ranks
// get bit-identical results (as NCCL's ring does for its own order).
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>

#include "parallel/collectives.h"

namespace qwen3 {
namespace {

// What the ranks share: the published tensors and a reusable barrier with a timeout.
struct SharedState {
  explicit SharedState(int world, int64_t timeout_ms) : published(static_cast<size_t>(world)), world(world), timeout(timeout_ms) {}

  // Returns once every rank has arrived; throws after the timeout or once a rank aborted.
  void barrier() {
    std::unique_lock<std::mutex> lock(mutex);
    if (aborted) throw std::runtime_error("tensor parallel: another rank failed, so this collective was abandoned");
    const uint64_t generation = this->generation;
    if (++arrived == world) {
      arrived = 0;
      ++this->generation;
      changed.notify_all();
      return;
    }
    const bool met = changed.wait_for(lock, timeout, [&] { return this->generation != generation || aborted; });
    if (aborted) throw std::runtime_error("tensor parallel: another rank failed, so this collective was abandoned");
    if (!met) {
      aborted = true;
      changed.notify_all();
      throw std::runtime_error("tensor parallel: a collective waited " + std::to_string(timeout.count()) + " ms for the other ranks");
    }
  }

  void abort() {
    const std::lock_guard<std::mutex> lock(mutex);
    aborted = true;
    changed.notify_all();
  }

  std::vector<at::Tensor> published;  // (world,) each rank's input of the current collective
  std::mutex mutex;
  std::condition_variable changed;
  int world, arrived = 0;
  uint64_t generation = 0;
  bool aborted = false;
  std::chrono::milliseconds timeout;
};

class ThreadCollectives : public Collectives {
 public:
  ThreadCollectives(int rank, int world, std::shared_ptr<SharedState> shared) : Collectives(rank, world), shared_(std::move(shared)) {}

  void all_reduce_sum(at::Tensor& x) override {
    publish(x);
    at::Tensor sum = shared_->published[0].clone();
    for (int r = 1; r < world(); ++r) sum.add_(shared_->published[static_cast<size_t>(r)]);
    shared_->barrier();  // every rank has read every input: now each may overwrite its own
    x.copy_(sum);
  }

  void all_gather(at::Tensor& out, const at::Tensor& in) override {
    publish(in);
    const int64_t n = in.numel();
    for (int r = 0; r < world(); ++r) out.view({-1}).narrow(0, r * n, n).copy_(shared_->published[static_cast<size_t>(r)].reshape({-1}));
    shared_->barrier();
  }

  void abort() override { shared_->abort(); }

 private:
  // Puts `t` where the other ranks read it, then waits for them to do the same.
  void publish(const at::Tensor& t) {
    shared_->published[static_cast<size_t>(rank())] = t;
    shared_->barrier();
  }

  std::shared_ptr<SharedState> shared_;
};

class ThreadGroup : public CollectiveGroup {
 public:
  ThreadGroup(int world, int64_t timeout_ms) : world_(world), shared_(std::make_shared<SharedState>(world, timeout_ms)) {}
  std::unique_ptr<Collectives> join(int rank) override { return std::make_unique<ThreadCollectives>(rank, world_, shared_); }
  const char* transport() const override { return "threads"; }

 private:
  int world_;
  std::shared_ptr<SharedState> shared_;
};

}  // namespace

std::unique_ptr<CollectiveGroup> make_nccl_group(const std::vector<std::string>& devices, int64_t timeout_ms);  // nccl_collectives.cc

std::unique_ptr<CollectiveGroup> CollectiveGroup::create(const std::vector<std::string>& devices, int64_t timeout_ms) {
  const bool cuda = devices.front().rfind("cuda", 0) == 0;
  for (const std::string& d : devices) {
    if ((d.rfind("cuda", 0) == 0) != cuda || (!cuda && d != "cpu")) {
      throw std::invalid_argument("Tensor parallel devices must all be CUDA devices or all \"cpu\", but received \"" + d + "\" among them");
    }
  }
  if (cuda) {
    std::vector<std::string> seen;
    for (const std::string& d : devices) {
      if (!c10::Device(d).has_index() || std::find(seen.begin(), seen.end(), d) != seen.end()) {
        throw std::invalid_argument("Tensor parallel CUDA devices must each be named once with their index (\"cuda:0\", \"cuda:1\", ...), but received \"" + d + "\"");
      }
      seen.push_back(d);
    }
    return make_nccl_group(devices, timeout_ms);
  }
  return std::make_unique<ThreadGroup>(static_cast<int>(devices.size()), timeout_ms);
}

}  // namespace qwen3
