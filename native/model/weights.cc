#include "model/weights.h"

#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "checkpoint/checkpoint_reader.h"

namespace qwen3 {
namespace {

at::ScalarType to_scalar_type(StoredDtype dtype) {
  switch (dtype) {
    case StoredDtype::Float32: return at::kFloat;
    case StoredDtype::Float16: return at::kHalf;
    case StoredDtype::BFloat16: return at::kBFloat16;
  }
  throw std::logic_error("unreachable stored dtype");
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// One tensor of the checkpoint: its key, where it goes, the shape the config gives it, and
// whether it is a norm scale (those stay float32).
struct Slot {
  std::string name;
  at::Tensor* dest;
  std::vector<int64_t> shape;
  bool is_norm;
};

// Every tensor a Qwen3 model with this config holds, in the reference's key names, pointing into
// `w` (whose blocks it sizes).
std::vector<Slot> weight_slots(const ModelConfig& c, Weights& w) {
  const int64_t q_out = c.n_heads * c.head_dim, kv_out = c.n_kv_groups * c.head_dim;
  w.blocks.resize(static_cast<size_t>(c.n_layers));
  std::vector<Slot> out{{"tok_emb.weight", &w.tok_emb, {c.vocab_size, c.emb_dim}, false}};
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "trf_blocks." + std::to_string(i) + ".";
    BlockWeights& b = w.blocks[static_cast<size_t>(i)];
    out.push_back({p + "att.W_query.weight", &b.w_query, {q_out, c.emb_dim}, false});
    out.push_back({p + "att.W_key.weight", &b.w_key, {kv_out, c.emb_dim}, false});
    out.push_back({p + "att.W_value.weight", &b.w_value, {kv_out, c.emb_dim}, false});
    out.push_back({p + "att.out_proj.weight", &b.out_proj, {c.emb_dim, q_out}, false});
    if (c.qk_norm) {
      out.push_back({p + "att.q_norm.scale", &b.q_norm, {c.head_dim}, true});
      out.push_back({p + "att.k_norm.scale", &b.k_norm, {c.head_dim}, true});
    }
    out.push_back({p + "ff.fc1.weight", &b.fc1, {c.hidden_dim, c.emb_dim}, false});
    out.push_back({p + "ff.fc2.weight", &b.fc2, {c.hidden_dim, c.emb_dim}, false});
    out.push_back({p + "ff.fc3.weight", &b.fc3, {c.emb_dim, c.hidden_dim}, false});
    out.push_back({p + "norm1.scale", &b.norm1, {c.emb_dim}, true});
    out.push_back({p + "norm2.scale", &b.norm2, {c.emb_dim}, true});
  }
  out.push_back({"final_norm.scale", &w.final_norm, {c.emb_dim}, true});
  out.push_back({"out_head.weight", &w.out_head, {c.vocab_size, c.emb_dim}, false});
  return out;
}

class FileHandle {
 public:
  explicit FileHandle(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error("Cannot open checkpoint " + path + ": " + std::strerror(errno));
  }
  ~FileHandle() { ::close(fd_); }
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;

  // Fill `size` bytes at `dest` from `offset`, looping over short reads.
  void read_at(void* dest, uint64_t size, uint64_t offset, const std::string& what) const {
    auto* out = static_cast<char*>(dest);
    while (size > 0) {
      const ssize_t got = ::pread(fd_, out, size > (1u << 30) ? (1u << 30) : size, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) throw std::runtime_error("Checkpoint is truncated or unreadable while reading " + what);
      out += got;
      size -= static_cast<uint64_t>(got);
      offset += static_cast<uint64_t>(got);
    }
  }

 private:
  int fd_;
};

// Reads one record into a CPU tensor of its stored dtype, honouring storage offset and strides.
at::Tensor read_tensor(const FileHandle& file, const TensorRecord& r) {
  const auto stored = to_scalar_type(r.dtype);
  const int64_t elem = static_cast<int64_t>(stored_dtype_size(r.dtype));
  bool contiguous = true;
  int64_t expected_stride = 1;
  for (size_t d = r.shape.size(); d-- > 0;) {
    if (r.shape[d] != 1 && r.stride[d] != expected_stride) contiguous = false;
    expected_stride *= r.shape[d];
  }
  if (contiguous || std::find(r.shape.begin(), r.shape.end(), 0) != r.shape.end()) {
    // The common case: read straight into the tensor, no staging copy.
    at::Tensor t = at::empty(r.shape, at::TensorOptions().dtype(stored));
    file.read_at(t.data_ptr(), static_cast<uint64_t>(t.numel() * elem),
                 r.data_offset + static_cast<uint64_t>(r.storage_offset * elem), r.name);
    return t;
  }
  // A view saved directly (transposed, sliced): read the span it covers, then gather.
  int64_t span = 1;
  for (size_t d = 0; d < r.shape.size(); ++d) span += (r.shape[d] - 1) * r.stride[d];
  at::Tensor flat = at::empty({span}, at::TensorOptions().dtype(stored));
  file.read_at(flat.data_ptr(), static_cast<uint64_t>(span * elem),
               r.data_offset + static_cast<uint64_t>(r.storage_offset * elem), r.name);
  return flat.as_strided(r.shape, r.stride).contiguous();
}

}  // namespace

Weights load_weights(const std::string& path, const ModelConfig& config, at::ScalarType dtype, c10::Device device) {
  const std::vector<TensorRecord> records = read_checkpoint_index(path);
  Weights w;
  const std::vector<Slot> slots = weight_slots(config, w);
  std::map<std::string, const Slot*> expected;
  for (const Slot& slot : slots) expected[slot.name] = &slot;

  // Every record must be a tensor of the model, in the shape the config gives it, and every
  // tensor of the model must be there.
  std::map<std::string, const TensorRecord*> by_name;
  for (const auto& r : records) {
    const auto it = expected.find(r.name);
    if (it == expected.end()) {
      throw std::runtime_error("Checkpoint has unexpected tensor '" + r.name + "' (not part of a Qwen3 model with this config)");
    }
    if (r.shape != it->second->shape) {
      throw std::runtime_error("Checkpoint tensor '" + r.name + "' has shape " + shape_string(r.shape) +
                               " but the config needs " + shape_string(it->second->shape));
    }
    by_name[r.name] = &r;
  }
  for (const Slot& slot : slots) {
    if (!by_name.count(slot.name)) throw std::runtime_error("Checkpoint is missing tensor '" + slot.name + "'");
  }

  const FileHandle file(path);
  for (const Slot& slot : slots) {
    // One conversion per tensor, dtype and device together, so at most one staging copy lives at a time.
    *slot.dest = read_tensor(file, *by_name.at(slot.name)).to(device, slot.is_norm ? at::kFloat : dtype);
  }
  return w;
}

}  // namespace qwen3
