#include "model/weights.h"

#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <fcntl.h>
#include <sys/stat.h>
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

// One tensor of the model: its name in the checkpoint, where it goes, the shape the config gives
// it, and whether it is a norm scale (those stay float32).
struct Slot {
  std::string name;
  at::Tensor* dest;
  std::vector<int64_t> shape;
  bool is_norm;
};

// The two layouts' names for a block's tensors, in Slot order below.
struct Names {
  const char *prefix, *q, *k, *v, *o, *q_norm, *k_norm, *gate, *up, *down, *norm1, *norm2;
  const char *tok_emb, *final_norm, *out_head;
};
constexpr Names kReferenceNames{"trf_blocks.", "att.W_query.weight", "att.W_key.weight", "att.W_value.weight", "att.out_proj.weight",
                                "att.q_norm.scale", "att.k_norm.scale", "ff.fc1.weight", "ff.fc2.weight", "ff.fc3.weight",
                                "norm1.scale", "norm2.scale", "tok_emb.weight", "final_norm.scale", "out_head.weight"};
constexpr Names kHuggingFaceNames{"model.layers.", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                  "self_attn.o_proj.weight", "self_attn.q_norm.weight", "self_attn.k_norm.weight", "mlp.gate_proj.weight",
                                  "mlp.up_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight",
                                  "post_attention_layernorm.weight", "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};

// Every tensor a Qwen3 model with this config holds, pointing into `w` (whose blocks it sizes).
// A tied head has no tensor of its own.
std::vector<Slot> weight_slots(const ModelConfig& c, const Names& n, Weights& w) {
  const int64_t q_out = c.n_heads * c.head_dim, kv_out = c.n_kv_groups * c.head_dim;
  w.blocks.resize(static_cast<size_t>(c.n_layers));
  std::vector<Slot> out{{n.tok_emb, &w.tok_emb, {c.vocab_size, c.emb_dim}, false}};
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = n.prefix + std::to_string(i) + ".";
    BlockWeights& b = w.blocks[static_cast<size_t>(i)];
    out.push_back({p + n.q, &b.w_query, {q_out, c.emb_dim}, false});
    out.push_back({p + n.k, &b.w_key, {kv_out, c.emb_dim}, false});
    out.push_back({p + n.v, &b.w_value, {kv_out, c.emb_dim}, false});
    out.push_back({p + n.o, &b.out_proj, {c.emb_dim, q_out}, false});
    if (c.qk_norm) {
      out.push_back({p + n.q_norm, &b.q_norm, {c.head_dim}, true});
      out.push_back({p + n.k_norm, &b.k_norm, {c.head_dim}, true});
    }
    out.push_back({p + n.gate, &b.fc1, {c.hidden_dim, c.emb_dim}, false});
    out.push_back({p + n.up, &b.fc2, {c.hidden_dim, c.emb_dim}, false});
    out.push_back({p + n.down, &b.fc3, {c.emb_dim, c.hidden_dim}, false});
    out.push_back({p + n.norm1, &b.norm1, {c.emb_dim}, true});
    out.push_back({p + n.norm2, &b.norm2, {c.emb_dim}, true});
  }
  out.push_back({n.final_norm, &w.final_norm, {c.emb_dim}, true});
  if (!c.tie_word_embeddings) out.push_back({n.out_head, &w.out_head, {c.vocab_size, c.emb_dim}, false});
  return out;
}

StoredDtype safetensors_dtype(const StoredTensor& t) {
  if (t.dtype == "F32") return StoredDtype::Float32;
  if (t.dtype == "F16") return StoredDtype::Float16;
  if (t.dtype == "BF16") return StoredDtype::BFloat16;
  throw std::runtime_error("Safetensors tensor '" + t.name + "' has dtype " + t.dtype + ": expected F32, F16 or BF16");
}

class FileHandle {
 public:
  explicit FileHandle(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error("Cannot open checkpoint " + path + ": " + std::strerror(errno));
  }
  ~FileHandle() { ::close(fd_); }

  uint64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw std::runtime_error(std::string("Cannot read the size of a checkpoint file: ") + std::strerror(errno));
    return static_cast<uint64_t>(st.st_size);
  }
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

// A record for each stored tensor and the file it is in: from the .pth's own index, or from the
// safetensors headers lib/ read, each range checked against its file here.
std::vector<std::pair<TensorRecord, size_t>> stored_records(const LoadRequest& request, const std::vector<std::unique_ptr<FileHandle>>& files) {
  std::vector<std::pair<TensorRecord, size_t>> out;
  if (request.files.empty()) {
    for (TensorRecord& r : read_checkpoint_index(request.path)) out.emplace_back(std::move(r), 0);
    return out;
  }
  std::vector<uint64_t> sizes;
  for (const auto& f : files) sizes.push_back(f->size());
  for (const StoredTensor& t : request.tensors) {
    TensorRecord r;
    r.name = t.name;
    r.dtype = safetensors_dtype(t);
    r.shape = t.shape;
    r.stride.assign(t.shape.size(), 1);
    const std::string& file = request.files.at(static_cast<size_t>(t.file));
    uint64_t numel = 1;
    for (size_t d = t.shape.size(); d-- > 0;) {
      r.stride[d] = static_cast<int64_t>(numel);
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(t.shape[d]), &numel) || numel > (uint64_t(1) << 60)) {
        throw std::runtime_error("Safetensors tensor '" + t.name + "' in " + file + " has an impossible shape " + shape_string(t.shape));
      }
    }
    if (t.end < t.begin || t.end - t.begin != numel * stored_dtype_size(r.dtype)) {
      throw std::runtime_error("Safetensors tensor '" + t.name + "' in " + file + " spans " + std::to_string(t.end - t.begin) + " bytes, not the " +
                               std::to_string(numel * stored_dtype_size(r.dtype)) + " its shape and dtype need");
    }
    if (t.end > sizes[static_cast<size_t>(t.file)]) {
      throw std::runtime_error("Safetensors tensor '" + t.name + "' ends at byte " + std::to_string(t.end) + ", past the end of " + file + " (" +
                               std::to_string(sizes[static_cast<size_t>(t.file)]) + " bytes)");
    }
    r.data_offset = t.begin;
    r.storage_bytes = t.end - t.begin;
    out.emplace_back(std::move(r), static_cast<size_t>(t.file));
  }
  return out;
}

}  // namespace

Weights load_weights(const LoadRequest& request, at::ScalarType dtype, c10::Device device) {
  const ModelConfig& config = request.config;
  const bool safetensors = !request.files.empty();
  std::vector<std::unique_ptr<FileHandle>> files;
  if (safetensors) {
    for (const std::string& f : request.files) files.push_back(std::make_unique<FileHandle>(f));
  } else {
    files.push_back(std::make_unique<FileHandle>(request.path));
  }
  const auto records = stored_records(request, files);
  const char* what = safetensors ? "Safetensors checkpoint" : "Checkpoint";
  Weights w;
  const std::vector<Slot> slots = weight_slots(config, safetensors ? kHuggingFaceNames : kReferenceNames, w);
  std::map<std::string, const Slot*> expected;
  for (const Slot& slot : slots) expected[slot.name] = &slot;

  // Every record must be a tensor of the model, in the shape the config gives it, and every
  // tensor of the model must be there.
  std::map<std::string, const std::pair<TensorRecord, size_t>*> by_name;
  for (const auto& located : records) {
    const TensorRecord& r = located.first;
    const auto it = expected.find(r.name);
    if (it == expected.end()) {
      throw std::runtime_error(std::string(what) + " has unexpected tensor '" + r.name + "' (not part of a Qwen3 model with this config)");
    }
    if (r.shape != it->second->shape) {
      throw std::runtime_error(std::string(what) + " tensor '" + r.name + "' has shape " + shape_string(r.shape) + " but the config needs " +
                               shape_string(it->second->shape));
    }
    if (!by_name.emplace(r.name, &located).second) throw std::runtime_error(std::string(what) + " has tensor '" + r.name + "' twice");
  }
  for (const Slot& slot : slots) {
    if (!by_name.count(slot.name)) throw std::runtime_error(std::string(what) + " is missing tensor '" + slot.name + "'");
  }

  for (const Slot& slot : slots) {
    const auto& [record, file] = *by_name.at(slot.name);
    // One conversion per tensor, dtype and device together, so at most one staging copy lives at a time.
    *slot.dest = read_tensor(*files[file], record).to(device, slot.is_norm ? at::kFloat : dtype);
  }
  // A tied head is the embedding table itself, on the device once.
  if (config.tie_word_embeddings) w.out_head = w.tok_emb;
  return w;
}

}  // namespace qwen3
