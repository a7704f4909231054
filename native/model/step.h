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

struct LoadRequest {
  std::string path;    // a torch.save(state_dict) checkpoint
  ModelConfig config;
  std::string device;  // "cpu", "cuda", "cuda:1", "mps", "xpu" (already resolved from "auto")
  std::string dtype;   // compute dtype: "float32", "bfloat16" or "float16"
  bool compile = false;  // fused weights, SDPA, CUDA graphs for decode steps
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
