// Index of a PyTorch `torch.save(model.state_dict(), path)` checkpoint.
//
// The reader understands exactly what torch.save writes by default: a zip
// archive of STORED records holding `<prefix>/data.pkl` (a pickle describing
// the state dict) and one raw little-endian record `<prefix>/data/<key>` per
// storage. It never executes the pickle: a small interpreter accepts only the
// opcodes and globals a state dict of float32/float16/bfloat16 tensors needs,
// so a hostile file can at worst produce a CheckpointError.
//
// Plain C++17 and the standard library only (no ATen, no N-API), so the reader
// builds in a second and can run under sanitizers and fuzzers on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qwen3 {

enum class StoredDtype { Float32, Float16, BFloat16 };

// "float32", "float16", "bfloat16".
const char* stored_dtype_name(StoredDtype dtype);
// Bytes per element: 4, 2, 2.
size_t stored_dtype_size(StoredDtype dtype);

struct TensorRecord {
  std::string name;              // state-dict key, e.g. "trf_blocks.0.att.W_query.weight"
  StoredDtype dtype = StoredDtype::Float32;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;   // in elements
  int64_t storage_offset = 0;    // in elements
  std::string storage_key;       // the zip record name under data/, e.g. "0"
  uint64_t data_offset = 0;      // absolute byte offset in the file of the storage's first byte
  uint64_t storage_bytes = 0;    // byte size of that storage record
};

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads the zip central directory and the pickled state dict; never executes
// anything. Tensors come back in the order the state dict lists them. Every
// structural problem throws CheckpointError naming the problem and the file.
//
// Guarantees for each record: shape and stride are non-negative and of equal
// length; numel fits in int64; the bytes from data_offset + storage_offset *
// elem through the last addressable element lie inside the storage record,
// which lies inside the file (for an empty tensor, storage_offset is at most
// the storage's element count). Tensors may share a storage (views, tied
// weights) and the same name never appears twice.
std::vector<TensorRecord> read_checkpoint_index(const std::string& path);

}  // namespace qwen3
