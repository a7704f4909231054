// What the engine is asked to do (load, prompt and decode steps) and what it answers. No torch
// here: the N-API files include it and must stay cheap to compile.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace qwen3 {

// The kinds of step the engine runs; the binding names its calls after them.
enum class StepKind { Prefill, Decode, Uncached, DecodeSteps };

// One tensor of a Hugging Face safetensors checkpoint, where lib/ found it in the file's header.
// The binding checks every field again, and the loader checks the range against the file.
struct StoredTensor {
  std::string name;             // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  int64_t file = 0;             // index into LoadRequest::files
  std::string dtype;            // "F32", "F16" or "BF16"
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // absolute byte range in the file
};

// One rank of a model split over processes, as torchrun starts them (parallel/process_group.h):
// this process runs rank `rank` of `world` on LoadRequest::device, and the ranks meet through a
// c10d TCPStore that rank 0 hosts at master_addr:master_port. world 0: not split over processes.
struct ProcessGroupSpec {
  int rank = 0, world = 0;
  std::string master_addr;
  int master_port = 0;
};

struct LoadRequest {
  std::string path;    // a torch.save(state_dict) checkpoint, or the Hugging Face model folder (for messages)
  ModelConfig config;
  std::string device;  // "cpu", "cuda", "cuda:1", "mps", "xpu" (already resolved from "auto")
  // Tensor parallelism: one rank per device, in rank order (all CUDA, or "cpu" repeated for
  // ranks that are threads of this process); `device` is then devices[0]. Empty or one: one device.
  std::vector<std::string> devices;
  ProcessGroupSpec process_group;  // or one rank per process (then `devices` is empty)
  int64_t collective_timeout_ms = 600000;  // how long a rank waits for the others (meeting, collectives)
  std::string dtype;   // compute dtype: "float32", "bfloat16" or "float16"
  bool compile = false;  // fused weights, SDPA, CUDA graphs for decode steps
  // "int8" or "fp8": the block's matrices and the head quantized per row at load (int8: CPU only,
  // cpu/int8_weights.h; fp8: CUDA or the CPU, model/fp8_weights.h), always the fused block.
  // Empty: the weights as they are.
  std::string quantize;
  // Safetensors files and every tensor in them (Hugging Face layout); empty: `path` is a .pth.
  std::vector<std::string> files;
  std::vector<StoredTensor> tensors;
  // Weights drawn on the device from `seed` instead of read (then `path` only names them, and
  // `files` is empty).
  bool random_weights = false;
  uint64_t seed = 0;
};

// Which logits a step hands back to JS: none (generation), the last position's, or every position's.
enum class LogitsMode { None = 0, Last = 1, All = 2 };

// How the next token is chosen; temperature 0 means greedy argmax.
struct SamplingParams {
  double temperature = 0.0;
  int64_t top_k = 0;           // 0: no top-k filter
  double top_p = 1.0;          // 1: no nucleus filter
  std::vector<double> uniforms;  // one U[0,1) draw per batch row (and step), made by the caller's seeded RNG
};

struct StepRequest {
  std::vector<int32_t> ids;  // (batch, seq) row-major
  int64_t batch = 1;
  int64_t seq = 0;
  LogitsMode logits = LogitsMode::None;
  SamplingParams sampling;
  // Left padding per row (batch,), for prompts of different lengths: that many leading ids of
  // the row are padding, which no token attends to and which RoPE positions skip. Empty: none.
  // Only a step that starts an empty cache (or an uncached one) may set it; the cache keeps it.
  std::vector<int64_t> pad;
  // Qwen3Engine::decode_steps only: how many decode steps to run (uniforms then holds
  // steps * batch draws, step-major), and a token after which a row is finished: the steps end
  // once every row has produced it (-1: never).
  int64_t steps = 1;
  int64_t stop_id = -1;
};

// One step over sequence slots (Qwen3Engine::slot_step): each row continues its own slot at its
// own position. Rows with one new token are decode rows, rows with more are prompt chunks.
struct SlotStepRequest {
  std::vector<int32_t> slots;    // (rows,) distinct slot indices
  std::vector<int32_t> starts;   // (rows,) where the row's tokens go; the slot forgets what lies past it
  std::vector<int64_t> offsets;  // (rows + 1,) row r's tokens are ids[offsets[r] .. offsets[r + 1])
  std::vector<int32_t> ids;
  // Per row: temperature (0: greedy), top-k (0: off), top-p (1: off) and one U[0,1) draw.
  std::vector<double> temperature, top_p, uniforms;
  std::vector<int64_t> top_k;
  int64_t top_logprobs = -1;  // -1: none; else the chosen token's logprob and that many alternatives
  bool logits = false;        // also hand back each row's last-position logits
  int64_t rows() const { return static_cast<int64_t>(slots.size()); }
};

struct SlotStepResult {
  std::vector<int32_t> next;        // (rows,)
  std::vector<int32_t> lengths;     // (rows,) each slot's length after the step
  std::vector<float> logprobs;      // (rows,) when top_logprobs >= 0
  std::vector<int32_t> top_ids;     // (rows, top_logprobs)
  std::vector<float> top_logprobs;  // (rows, top_logprobs)
  std::vector<float> logits;        // (rows, vocab) float32 when asked for
  bool has_logprobs = false;
};

// Qwen3Engine::copy_slot: slot `to` gets the first `length` tokens of slot `from`.
struct CopySlotRequest {
  int32_t from = 0, to = 0, length = 0;
};

// The most slots a model may address; storage grows only up to the highest index used.
constexpr int32_t kMaxSlots = 4096;
// The most alternatives a slot step reports per row.
constexpr int64_t kMaxTopLogprobs = 20;

struct StepResult {
  std::vector<int32_t> next_ids;      // (batch,); (steps run, batch) from decode_steps
  std::vector<float> logits;          // float32, shape logits_shape
  std::vector<int64_t> logits_shape;  // (batch, seq or 1, vocab)
  int64_t cache_length = 0;           // tokens held in the KV cache after the step
};

}  // namespace qwen3
