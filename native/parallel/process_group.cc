#include "parallel/process_group.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Device.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace qwen3 {

std::unique_ptr<Collectives> nccl_over_store(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world, int64_t timeout_ms);  // nccl_collectives.cc

namespace {

std::string str(int64_t v) { return std::to_string(v); }

// Collectives for CPU ranks in different processes: each rank puts its tensor in the store under
// the call's number, then reads every other rank's. Every rank sums in rank order, so all get
// bit-identical results, as the ranks that are threads do (parallel/thread_collectives.cc).
class StoreCollectives : public Collectives {
 public:
  StoreCollectives(c10::intrusive_ptr<c10d::Store> store, int rank, int world, int64_t timeout_ms)
      : Collectives(rank, world), store_(std::move(store)), timeout_(timeout_ms) {}

  // Rank 0 hosts the store: it waits (a little) until every rank is done with it, since a rank
  // still finishing its last collective (dropping its key) would fail on a store that is gone.
  ~StoreCollectives() override {
    try {
      store_->set("finished/" + str(rank()), std::vector<uint8_t>{1});
      if (rank() != 0 || store_->check({"abort"})) return;
      std::vector<std::string> everyone;
      for (int r = 1; r < world(); ++r) everyone.push_back("finished/" + str(r));
      store_->wait(everyone, std::min(timeout_, std::chrono::milliseconds(kFinishWaitMs)));
    } catch (...) {  // a rank that failed or left: nothing more to wait for
    }
  }

  void all_reduce_sum(at::Tensor& x) override {
    const std::vector<at::Tensor> parts = exchange(x);
    at::Tensor sum = parts[0].clone();
    for (size_t r = 1; r < parts.size(); ++r) sum.add_(parts[r]);
    x.copy_(sum);
  }

  void all_gather(at::Tensor& out, const at::Tensor& in) override {
    const std::vector<at::Tensor> parts = exchange(in);
    const int64_t n = in.numel();
    for (int r = 0; r < world(); ++r) out.view({-1}).narrow(0, r * n, n).copy_(parts[static_cast<size_t>(r)].reshape({-1}));
  }

  // The other ranks see the mark at their next wait and give up instead of waiting out the timeout.
  void abort() override {
    try {
      store_->set("abort", std::vector<uint8_t>{1});
    } catch (...) {
    }
  }

 private:
  // Every rank's `t`, rank by rank (this rank's own as it is, on the CPU).
  std::vector<at::Tensor> exchange(const at::Tensor& t) {
    const at::Tensor mine = t.contiguous();
    const auto* bytes = static_cast<const uint8_t*>(mine.data_ptr());
    const std::string call = str(calls_) + "/";
    store_->set(call + str(rank()), std::vector<uint8_t>(bytes, bytes + mine.nbytes()));
    std::vector<at::Tensor> parts(static_cast<size_t>(world()));
    for (int r = 0; r < world(); ++r) {
      if (r == rank()) {
        parts[static_cast<size_t>(r)] = mine;
        continue;
      }
      const std::vector<uint8_t> got = fetch(call + str(r), r);
      if (got.size() != mine.nbytes()) {
        throw std::runtime_error("tensor parallel: rank " + str(r) + " sent " + str(static_cast<int64_t>(got.size())) + " bytes where " +
                                 str(static_cast<int64_t>(mine.nbytes())) + " were expected (the processes did not make the same calls)");
      }
      parts[static_cast<size_t>(r)] = at::empty_like(mine);
      std::memcpy(parts[static_cast<size_t>(r)].data_ptr(), got.data(), got.size());
    }
    // Each rank wrote this call's key only after it had read every key of the call before, so
    // this rank's key of that call is read by all: drop it.
    if (calls_ > 0) store_->deleteKey(str(calls_ - 1) + "/" + str(rank()));
    ++calls_;
    return parts;
  }

  // The value at `key` once rank `from` has set it; fails once a rank aborted, or after the timeout.
  std::vector<uint8_t> fetch(const std::string& key, int from) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (;;) {
      try {
        store_->wait({key}, std::chrono::milliseconds(100));
        return store_->get(key);
      } catch (const c10::DistStoreError&) {  // not there within the 100 ms
      }
      if (store_->check({"abort"})) throw std::runtime_error("tensor parallel: another rank failed, so this collective was abandoned");
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("tensor parallel: a collective waited " + str(timeout_.count()) + " ms for rank " + str(from));
      }
    }
  }

  static constexpr int64_t kFinishWaitMs = 10000;
  c10::intrusive_ptr<c10d::Store> store_;
  std::chrono::milliseconds timeout_;
  int64_t calls_ = 0;
};

// Numbers the groups this process joins, so that each keeps its own keys in the store.
int next_join() {
  static std::mutex mutex;
  static int joins = 0;
  const std::lock_guard<std::mutex> lock(mutex);
  return joins++;
}

// Under torchrun, its agent already hosts the store at MASTER_ADDR:MASTER_PORT (then rank 0 only
// connects), and keeps it across restarts of the workers (then each attempt needs its own keys).
bool launcher_hosts_store() {
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  return agent != nullptr && std::string(agent) == "True";
}

std::string attempt() {
  const char* restarts = std::getenv("TORCHELASTIC_RESTART_COUNT");
  return restarts != nullptr && *restarts != '\0' ? restarts : "0";
}

}  // namespace

const char* process_group_transport(const std::string& device) { return c10::Device(device).is_cuda() ? "nccl" : "store"; }

std::unique_ptr<Collectives> join_process_group(const ProcessGroupSpec& spec, const std::string& device, int64_t timeout_ms) {
  const std::string where = spec.master_addr + ":" + str(spec.master_port);
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(spec.master_port);
  options.isServer = spec.rank == 0 && !launcher_hosts_store();
  options.waitWorkers = false;  // the meeting below waits, under this join's own keys
  options.multiTenant = true;   // several models of this process share rank 0's server
  options.timeout = std::chrono::milliseconds(timeout_ms);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::PrefixStore>("qwen3/" + attempt() + "/" + str(next_join()),
                                                   c10::make_intrusive<c10d::TCPStore>(spec.master_addr, options));
    // Every rank says it is here, then waits for the others.
    store->set("here/" + str(spec.rank), std::vector<uint8_t>{1});
    std::vector<std::string> everyone;
    for (int r = 0; r < spec.world; ++r) everyone.push_back("here/" + str(r));
    store->wait(everyone, std::chrono::milliseconds(timeout_ms));
  } catch (const c10::Error& e) {
    throw std::runtime_error("Process group: rank " + str(spec.rank) + " of " + str(spec.world) + " could not meet the others at " + where +
                             " within " + str(timeout_ms) + " ms (" + e.what_without_backtrace() + ")");
  }
  if (c10::Device(device).is_cuda()) return nccl_over_store(store, spec.rank, spec.world, timeout_ms);
  return std::make_unique<StoreCollectives>(std::move(store), spec.rank, spec.world, timeout_ms);
}

}  // namespace qwen3
