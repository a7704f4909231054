// Plain description of a Qwen3 model and of the requests the engine serves. No torch here: this
// header is included by the N-API files, which must stay cheap to compile.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qwen3 {

// Architecture hyper-parameters, with the reference implementation's key names.
struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  int64_t emb_dim = 0;
  int64_t n_heads = 0;
  int64_t n_layers = 0;
  int64_t hidden_dim = 0;
  int64_t head_dim = 0;
  bool qk_norm = true;
  int64_t n_kv_groups = 0;
  double rope_base = 1e6;
};

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

struct MemoryUsage {
  bool available = false;  // false where this libtorch reports nothing for the device
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;   // -1 where the device tracks no peak
};

}  // namespace qwen3
