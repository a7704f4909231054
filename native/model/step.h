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

struct LoadRequest {
  std::string path;    // a torch.save(state_dict) checkpoint, or the Hugging Face model folder (for messages)
  ModelConfig config;
  std::string device;  // "cpu", "cuda", "cuda:1", "mps", "xpu" (already resolved from "auto")
  std::string dtype;   // compute dtype: "float32", "bfloat16" or "float16"
  bool compile = false;  // fused weights, SDPA, CUDA graphs for decode steps
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

struct StepResult {
  std::vector<int32_t> next_ids;      // (batch,); (steps run, batch) from decode_steps
  std::vector<float> logits;          // float32, shape logits_shape
  std::vector<int64_t> logits_shape;  // (batch, seq or 1, vocab)
  int64_t cache_length = 0;           // tokens held in the KV cache after the step
};

}  // namespace qwen3
