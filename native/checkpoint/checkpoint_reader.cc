// Joins the two halves of a torch.save checkpoint: the pickled description of
// each tensor (state_dict_pickle) and the raw storage records in the zip
// (zip_archive). Everything that relates one to the other is checked here:
// each storage exists, is the size its persistent id declares, and holds
// every element its tensors can address.
#include "checkpoint/checkpoint_reader.h"

#include <limits>
#include <unordered_map>

#include "checkpoint/state_dict_pickle.h"
#include "checkpoint/zip_archive.h"

namespace qwen3 {

const char* stored_dtype_name(StoredDtype dtype) {
  switch (dtype) {
    case StoredDtype::Float32: return "float32";
    case StoredDtype::Float16: return "float16";
    case StoredDtype::BFloat16: return "bfloat16";
  }
  return "unknown";
}

size_t stored_dtype_size(StoredDtype dtype) {
  switch (dtype) {
    case StoredDtype::Float32: return 4;
    case StoredDtype::Float16: return 2;
    case StoredDtype::BFloat16: return 2;
  }
  return 0;
}

namespace {

// data.pkl is tiny next to the tensors (about 200 bytes per entry); the cap
// only stops a hostile archive from making us read gigabytes into memory.
constexpr uint64_t kMaxPickleBytes = 64ull << 20;

// Names from the file go into messages; keep them short.
std::string quoted(const std::string& s) {
  return "'" + (s.size() <= 100 ? s : s.substr(0, 100) + "...") + "'";
}

std::string dims(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

// torch names the archive's single top folder after the file stem (or
// "archive"), so find it through its data.pkl rather than guessing.
std::string find_prefix(const ZipArchive& zip) {
  const std::string leaf = "/data.pkl";
  std::string prefix;
  bool found = false;
  for (const ZipEntry& e : zip.entries()) {
    const std::string& n = e.name;
    if (n.size() <= leaf.size() || n.compare(n.size() - leaf.size(), leaf.size(), leaf) != 0) continue;
    const std::string folder = n.substr(0, n.size() - leaf.size());
    if (folder.find('/') != std::string::npos) continue;
    if (found) throw CheckpointError(zip.path() + ": checkpoint has more than one top-level data.pkl");
    prefix = folder;
    found = true;
  }
  if (!found) throw CheckpointError(zip.path() + " is not a PyTorch checkpoint (no <folder>/data.pkl record in the zip)");
  return prefix;
}

// Storage bytes are read as little-endian; refuse files that say otherwise.
void check_byte_order(ZipArchive& zip, const std::string& prefix) {
  const ZipEntry* entry = zip.find(prefix + "/byteorder");
  if (!entry) return;  // older writers omit it and were little-endian only
  const std::string order = zip.read_entry(*entry, "byteorder", 16);
  if (order != "little") {
    throw CheckpointError(zip.path() + ": checkpoint stores tensors in " + quoted(order) +
                          " byte order; only little-endian checkpoints are supported");
  }
}

// a * b and a + b for non-negative values, false on int64 overflow.
bool mul_ok(uint64_t a, uint64_t b, uint64_t* out) {
  constexpr uint64_t kMax = uint64_t(std::numeric_limits<int64_t>::max());
  if (a != 0 && b > kMax / a) return false;
  *out = a * b;
  return true;
}
bool add_ok(uint64_t a, uint64_t b, uint64_t* out) {
  constexpr uint64_t kMax = uint64_t(std::numeric_limits<int64_t>::max());
  if (b > kMax - a) return false;
  *out = a + b;
  return true;
}

// The bytes from the storage start through the tensor's last addressable
// element must lie inside the storage record, or a later copy would read
// past it (or into the next record). Strides may be 0 (expanded tensors).
void check_extent(const TensorRecord& t, const std::string& path) {
  const std::string what = path + ": tensor " + quoted(t.name) + " (size " + dims(t.shape) + ", stride " +
                           dims(t.stride) + ", storage offset " + std::to_string(t.storage_offset) + ")";
  if (t.storage_offset < 0) throw CheckpointError(what + " has a negative storage offset");
  uint64_t numel = 1;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (t.shape[d] < 0 || t.stride[d] < 0) throw CheckpointError(what + " has a negative size or stride");
    if (!mul_ok(numel, uint64_t(t.shape[d]), &numel)) throw CheckpointError(what + " has too many elements");
  }
  if (numel == 0) {
    // torch would accept any offset for an empty tensor; holding it to the
    // storage keeps data_offset + storage_offset * size inside the record for
    // every tensor, so readers need no special case for the offset.
    if (uint64_t(t.storage_offset) > t.storage_bytes / stored_dtype_size(t.dtype)) {
      throw CheckpointError(what + " starts past the end of its storage " + quoted("data/" + t.storage_key));
    }
    return;
  }
  uint64_t last = uint64_t(t.storage_offset), span = 0, bytes = 0;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (!mul_ok(uint64_t(t.shape[d] - 1), uint64_t(t.stride[d]), &span) || !add_ok(last, span, &last)) {
      throw CheckpointError(what + " addresses elements beyond 2^63");
    }
  }
  if (!add_ok(last, 1, &last) || !mul_ok(last, stored_dtype_size(t.dtype), &bytes) || bytes > t.storage_bytes) {
    throw CheckpointError(what + " needs " + std::to_string(last) + " " + stored_dtype_name(t.dtype) +
                          " elements but its storage " + quoted("data/" + t.storage_key) + " has only " +
                          std::to_string(t.storage_bytes) + " bytes");
  }
}

struct Storage {
  StoredDtype dtype;
  uint64_t data_offset;
  uint64_t bytes;
};

}  // namespace

std::vector<TensorRecord> read_checkpoint_index(const std::string& path) {
  ZipArchive zip(path);
  const std::string prefix = find_prefix(zip);
  check_byte_order(zip, prefix);
  const std::string pickle = zip.read_entry(*zip.find(prefix + "/data.pkl"), "data.pkl", kMaxPickleBytes);
  std::vector<PickledTensor> pickled = parse_state_dict_pickle(pickle, path);

  // Storages shared by several tensors (views, tied weights) are resolved once.
  std::unordered_map<std::string, Storage> storages;
  std::vector<TensorRecord> out;
  out.reserve(pickled.size());
  for (PickledTensor& p : pickled) {
    const std::string label = "data/" + p.storage_key;
    auto it = storages.find(p.storage_key);
    if (it == storages.end()) {
      const ZipEntry* entry = zip.find(prefix + "/" + label);
      if (!entry) {
        throw CheckpointError(path + ": tensor " + quoted(p.name) + " uses storage " + quoted(label) +
                              ", which is not in the checkpoint");
      }
      const uint64_t data_offset = zip.data_offset(*entry, label);  // first: a truncated file says so
      const uint64_t elem = stored_dtype_size(p.dtype);
      if (entry->size % elem != 0 || entry->size / elem != uint64_t(p.storage_numel)) {
        throw CheckpointError(path + ": storage " + quoted(label) + " should hold " + std::to_string(p.storage_numel) +
                              " " + stored_dtype_name(p.dtype) + " elements but its record has " +
                              std::to_string(entry->size) + " bytes");
      }
      it = storages.emplace(p.storage_key, Storage{p.dtype, data_offset, entry->size}).first;
    } else if (it->second.dtype != p.dtype || it->second.bytes / stored_dtype_size(p.dtype) != uint64_t(p.storage_numel)) {
      throw CheckpointError(path + ": storage " + quoted(label) + " is used with different dtypes or sizes");
    }

    TensorRecord r;
    r.name = std::move(p.name);
    r.dtype = p.dtype;
    r.shape = std::move(p.shape);
    r.stride = std::move(p.stride);
    r.storage_offset = p.storage_offset;
    r.storage_key = std::move(p.storage_key);
    r.data_offset = it->second.data_offset;
    r.storage_bytes = it->second.bytes;
    check_extent(r, path);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace qwen3
