#include "model/weights.h"

#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <c10/core/Event.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/ScalarType.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/file_reader.h"

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

// A record whose elements lie in the file in row-major order (or that has none), so that it can
// be read in pieces straight to its place.
bool dense(const TensorRecord& r) {
  int64_t expected_stride = 1;
  for (size_t d = r.shape.size(); d-- > 0;) {
    if (r.shape[d] == 0) return true;
    if (r.shape[d] != 1 && r.stride[d] != expected_stride) return false;
    expected_stride *= r.shape[d];
  }
  return true;
}

// A view saved directly (transposed, sliced; only .pth files hold those): reads the span it
// covers into a CPU tensor of the stored dtype, then gathers it.
at::Tensor read_view(const ReadOnlyFile& file, const TensorRecord& r) {
  const int64_t elem = static_cast<int64_t>(stored_dtype_size(r.dtype));
  int64_t span = 1;
  for (size_t d = 0; d < r.shape.size(); ++d) span += (r.shape[d] - 1) * r.stride[d];
  at::Tensor flat = at::empty({span}, at::TensorOptions().dtype(to_scalar_type(r.dtype)));
  file.read_at(flat.data_ptr(), static_cast<uint64_t>(span * elem), r.data_offset + static_cast<uint64_t>(r.storage_offset * elem), r.name);
  return flat.as_strided(r.shape, r.stride).contiguous();
}

// A record for each stored tensor and the file it is in: from the .pth's own index, or from the
// safetensors headers lib/ read, each range checked against its file here.
std::vector<std::pair<TensorRecord, size_t>> stored_records(const LoadRequest& request, const std::vector<std::unique_ptr<ReadOnlyFile>>& files) {
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

// A run of one dense record's elements: where its bytes lie and where they go.
struct Piece {
  const ReadOnlyFile* file;
  const std::string* name;  // the record's, for messages
  uint64_t offset;          // file offset of the first element
  StoredDtype stored;
  at::Tensor* dest;         // contiguous, on the target device, in its final dtype
  int64_t first, count;     // elements of dest
};

// Splits a dense record bound for `dest` into pieces of at most `piece_bytes` stored bytes.
void add_pieces(std::vector<Piece>& out, const ReadOnlyFile& file, const TensorRecord& r, at::Tensor* dest, uint64_t piece_bytes) {
  const uint64_t elem = stored_dtype_size(r.dtype);
  const int64_t per_piece = static_cast<int64_t>(std::max<uint64_t>(1, piece_bytes / elem));
  const uint64_t start = r.data_offset + static_cast<uint64_t>(r.storage_offset) * elem;
  for (int64_t first = 0, n = dest->numel(); first < n; first += per_piece) {
    out.push_back({&file, &r.name, start + static_cast<uint64_t>(first) * elem, r.dtype, dest, first, std::min(per_piece, n - first)});
  }
}

// Element-wise conversion between the stored and the compute dtype, rounding to nearest even
// through float32 as ATen's casts do (bfloat16 and float16 widen to float32 exactly).
template <class From, class To>
void convert_run(const void* src, void* dst, int64_t count) {
  const From* in = static_cast<const From*>(src);
  To* out = static_cast<To*>(dst);
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<To>(static_cast<float>(in[i]));
}

template <class From>
void convert_from(const void* src, void* dst, at::ScalarType to, int64_t count) {
  switch (to) {
    case at::kFloat: return convert_run<From, float>(src, dst, count);
    case at::kBFloat16: return convert_run<From, c10::BFloat16>(src, dst, count);
    case at::kHalf: return convert_run<From, c10::Half>(src, dst, count);
    default: throw std::logic_error("unsupported compute dtype");
  }
}

void convert(const void* src, StoredDtype from, void* dst, at::ScalarType to, int64_t count) {
  switch (from) {
    case StoredDtype::Float32: return convert_from<float>(src, dst, to, count);
    case StoredDtype::BFloat16: return convert_from<c10::BFloat16>(src, dst, to, count);
    case StoredDtype::Float16: return convert_from<c10::Half>(src, dst, to, count);
  }
}

// Maps the pages of [dest, dest + bytes) before a read fills them. Fresh memory costs a page
// fault per 4 KB page, and one taken inside pread's copy costs more than the kernel's own loop
// over the range; the reader threads do this each for their piece, so it runs in parallel too.
// Only advice: on kernels before 5.14, or elsewhere, the read faults the pages in as before.
void populate(void* dest, uint64_t bytes) {
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  constexpr uintptr_t kPage = 4096;
  const auto begin = reinterpret_cast<uintptr_t>(dest);
  const uintptr_t from = (begin + kPage - 1) & ~(kPage - 1), to = (begin + bytes) & ~(kPage - 1);
  if (to > from) ::madvise(reinterpret_cast<void*>(from), to - from, MADV_POPULATE_WRITE);
#endif
}

// Host destinations: each reader thread preads its pieces straight into place, or, where the
// dtype changes, into a small buffer of its own that it converts from.
void fill_on_host(const std::vector<Piece>& pieces) {
  WorkQueue queue(pieces.size());
  queue.run(reader_threads(8), [&](unsigned) {
    std::vector<char> buffer;
    size_t i;
    while (queue.take(i)) {
      const Piece& p = pieces[i];
      const uint64_t bytes = static_cast<uint64_t>(p.count) * stored_dtype_size(p.stored);
      const int64_t out = static_cast<int64_t>(p.dest->element_size());
      char* dst = static_cast<char*>(p.dest->data_ptr()) + p.first * out;
      populate(dst, static_cast<uint64_t>(p.count * out));
      if (to_scalar_type(p.stored) == p.dest->scalar_type()) {
        p.file->read_at(dst, bytes, p.offset, *p.name);
        continue;
      }
      buffer.resize(bytes);
      p.file->read_at(buffer.data(), bytes, p.offset, *p.name);
      convert(buffer.data(), p.stored, dst, p.dest->scalar_type(), p.count);
    }
  });
}

// CUDA destinations: each reader thread has two pinned host buffers and a stream of its own.
// It reads a piece into one buffer while the other's copy to the device runs (non_blocking,
// so the disk, the host copy and the DMA overlap); before a buffer is read into again, the
// event recorded after its last copy is waited for. A change of dtype happens on the device,
// from a staging tensor in the stored dtype that the stream's order lets each piece reuse.
// Every thread drains its stream before it ends, on success or failure, so no copy outlives
// the buffers or the load.
void fill_on_cuda(const std::vector<Piece>& pieces, c10::Device device, uint64_t piece_bytes) {
  WorkQueue queue(pieces.size());
  queue.run(reader_threads(4), [&](unsigned) {
    const c10::InferenceMode inference;  // the destinations are inference tensors
    const c10::impl::VirtualGuardImpl impl(device.type());
    const c10::Stream stream = impl.getStreamFromGlobalPool(device);
    const c10::StreamGuard on_stream(stream);
    at::Tensor pinned[2], staging;
    c10::Event copied[2]{c10::Event(device.type()), c10::Event(device.type())};
    struct Drain {
      const c10::impl::VirtualGuardImpl& impl;
      const c10::Stream& stream;
      ~Drain() {
        try {
          impl.synchronizeStream(stream);
        } catch (...) {  // a failed device: the error that caused it is already on its way
        }
      }
    } drain{impl, stream};
    size_t i, turn = 0;
    while (queue.take(i)) {
      const Piece& p = pieces[i];
      const int64_t bytes = p.count * static_cast<int64_t>(stored_dtype_size(p.stored));
      at::Tensor& buffer = pinned[turn % 2];
      c10::Event& done = copied[turn++ % 2];
      done.synchronize();
      if (!buffer.defined()) buffer = at::empty({static_cast<int64_t>(piece_bytes)}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
      p.file->read_at(buffer.data_ptr(), static_cast<uint64_t>(bytes), p.offset, *p.name);
      const at::Tensor src = buffer.narrow(0, 0, bytes).view(to_scalar_type(p.stored));
      at::Tensor dst = p.dest->view({-1}).narrow(0, p.first, p.count);
      if (src.scalar_type() == dst.scalar_type()) {
        dst.copy_(src, /*non_blocking=*/true);
      } else {
        if (!staging.defined()) staging = at::empty({static_cast<int64_t>(piece_bytes)}, at::TensorOptions().dtype(at::kByte).device(device));
        const at::Tensor raw = staging.narrow(0, 0, bytes).view(src.scalar_type());
        raw.copy_(src, /*non_blocking=*/true);
        dst.copy_(raw);
      }
      done.record(stream);
    }
  });
}

// splitmix64's mixing: a generator seed for each piece of the random weights, so that the draws
// depend on the seed alone, not on how many threads make them or in which order.
uint64_t piece_seed(uint64_t seed, uint64_t piece) {
  uint64_t z = seed + (piece + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A model-sized set of weights drawn on the device: matrices normal(0, 0.02) like transformers'
// initialisation, norm scales 1. Matrices are drawn in pieces of 4M elements, each from a
// generator of the device's kind seeded from `seed` and the piece's number; on the host the
// reader threads share the pieces out (the CPU's generator is one thread's work).
Weights random_weights(const ModelConfig& config, at::ScalarType dtype, c10::Device device, uint64_t seed) {
  constexpr int64_t kPieceElements = int64_t(1) << 22;
  Weights w;
  struct Draw {
    at::Tensor* dest;
    int64_t first, count;
  };
  std::vector<Draw> draws;
  for (const Slot& slot : weight_slots(config, kHuggingFaceNames, w)) {
    if (slot.is_norm) {
      *slot.dest = at::ones(slot.shape, at::TensorOptions().dtype(at::kFloat).device(device));
      continue;
    }
    *slot.dest = at::empty(slot.shape, at::TensorOptions().dtype(dtype).device(device));
    for (int64_t first = 0, n = slot.dest->numel(); first < n; first += kPieceElements) {
      draws.push_back({slot.dest, first, std::min(kPieceElements, n - first)});
    }
  }
  at::Generator prototype;
  {
    at::Generator global = at::globalContext().defaultGenerator(device);  // a handle on the one generator
    std::lock_guard<std::mutex> lock(global.mutex());
    prototype = global.clone();
  }
  WorkQueue queue(draws.size());
  queue.run(device.is_cpu() ? reader_threads(8) : 1, [&](unsigned) {
    const c10::InferenceMode inference;  // the weights are inference tensors
    size_t i;
    while (queue.take(i)) {
      at::Generator generator = prototype.clone();
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        generator.set_current_seed(piece_seed(seed, i));
      }
      draws[i].dest->view({-1}).narrow(0, draws[i].first, draws[i].count).normal_(0.0, 0.02, generator);
    }
  });
  if (config.tie_word_embeddings) w.out_head = w.tok_emb;
  return w;
}

}  // namespace

Weights load_weights(const LoadRequest& request, at::ScalarType dtype, c10::Device device) {
  const ModelConfig& config = request.config;
  if (request.random_weights) return random_weights(config, dtype, device, request.seed);
  const bool safetensors = !request.files.empty();
  std::vector<std::unique_ptr<ReadOnlyFile>> files;
  if (safetensors) {
    for (const std::string& f : request.files) files.push_back(std::make_unique<ReadOnlyFile>(f));
  } else {
    files.push_back(std::make_unique<ReadOnlyFile>(request.path));
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

  // Every tensor gets its final place first; dense records are then read into it in pieces
  // by several threads. On the host and on CUDA they go there directly; other devices take
  // each tensor from a host copy, one tensor at a time.
  const bool host = device.is_cpu(), cuda = device.is_cuda();
  if (cuda && !device.has_index()) device = c10::Device(device.type(), c10::impl::VirtualGuardImpl(device.type()).getDevice().index());
  // Pieces that change dtype on the host are kept small, so that the buffer they are read into
  // is still in the cache when they are converted.
  constexpr uint64_t kPieceBytes = uint64_t(32) << 20, kConvertedPieceBytes = uint64_t(4) << 20;
  std::vector<Piece> pieces;
  for (const Slot& slot : slots) {
    const auto& [record, file] = *by_name.at(slot.name);
    const at::ScalarType target = slot.is_norm ? at::kFloat : dtype;
    if (!dense(record)) {
      *slot.dest = read_view(*files[file], record).to(device, target);
      continue;
    }
    if (!host && !cuda) {
      at::Tensor staged = at::empty(record.shape, at::TensorOptions().dtype(target));
      std::vector<Piece> one;
      add_pieces(one, *files[file], record, &staged, to_scalar_type(record.dtype) != target ? kConvertedPieceBytes : kPieceBytes);
      fill_on_host(one);
      *slot.dest = staged.to(device);
      continue;
    }
    *slot.dest = at::empty(record.shape, at::TensorOptions().dtype(target).device(device));
    add_pieces(pieces, *files[file], record, slot.dest, host && to_scalar_type(record.dtype) != target ? kConvertedPieceBytes : kPieceBytes);
  }
  // In file order, which a cold disk's read-ahead rewards.
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) {
    return a.file != b.file ? std::less<const ReadOnlyFile*>()(a.file, b.file) : a.offset < b.offset;
  });
  if (host) fill_on_host(pieces);
  if (cuda) fill_on_cuda(pieces, device, kPieceBytes);
  // A tied head is the embedding table itself, on the device once.
  if (config.tie_word_embeddings) w.out_head = w.tok_emb;
  return w;
}

}  // namespace qwen3
