// Restricted reader for the `data.pkl` pickle inside a torch.save checkpoint.
//
// This is not a general unpickler. It interprets the handful of opcodes that
// torch.save emits for a state dict (protocol 2 by default, 3-5 accepted),
// and knows only six globals: collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the
// Float/Half/BFloat16 storage types. Any other global is rejected the moment
// its GLOBAL / STACK_GLOBAL opcode is read, and nothing is ever called: REDUCE
// on a known global just builds a plain description of the tensor.
//
// Fuzz safety: iterative (no recursion on input depth), values live in an
// index-based arena (cycles and deep nesting cost nothing to free), and the
// stack, memo, value count and string lengths are all bounded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_reader.h"  // StoredDtype, CheckpointError

namespace qwen3 {

// One state-dict entry as the pickle describes it, before the zip is consulted.
struct PickledTensor {
  std::string name;
  StoredDtype dtype = StoredDtype::Float32;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;     // same length as shape; values not yet validated
  int64_t storage_offset = 0;      // not yet validated
  std::string storage_key;         // persistent-id key, names the record data/<key>
  int64_t storage_numel = 0;       // element count the persistent id declares (>= 0)
};

// Interprets `pickle` (the bytes of data.pkl). The top-level object must be a
// dict or OrderedDict mapping str to tensors; entries come back in pickle
// order. Errors are CheckpointError messages prefixed with `source` (the
// checkpoint's path).
std::vector<PickledTensor> parse_state_dict_pickle(const std::string& pickle, const std::string& source);

// Limits, exposed so the check driver can probe them.
constexpr size_t kPickleMaxStack = 1u << 20;        // stack entries and open MARKs, each
constexpr size_t kPickleMaxMemo = 1u << 20;         // memo entries
constexpr size_t kPickleMaxValues = 4u << 20;       // values created (a tensor needs ~20)
constexpr size_t kPickleMaxContainerItems = 16u << 20;  // items ever put into tuples/lists/dicts
// State-dict entries returned; the largest public models have under 100k tensors.
// Bounds the output a small hostile pickle can fan out to (one tensor under many names).
constexpr size_t kPickleMaxEntries = 1u << 20;

}  // namespace qwen3
