// The ATen building blocks of the reference pass, which the fast paths fall back to: RMSNorm,
// RoPE, masked and causal attention, the RoPE table and left padding, written op for op like
// the reference implementation.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <utility>
#include <vector>

namespace qwen3 {

constexpr double kNormEps = 1e-6;

// Where a step's new keys and values go. k, v: (batch, groups, seq, hd); returns every key and
// value the step's queries attend to, (batch, groups, keys, hd) each: the KV cache's (or a
// slot's) content after appending them, or k and v themselves for an uncached step.
using StoreKV = std::function<std::pair<at::Tensor, at::Tensor>(int64_t layer, const at::Tensor& k, const at::Tensor& v)>;

// RMSNorm as the reference computes it: statistics and scale in float32, cast back at the end.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& scale);

// Split-halves RoPE. x: (batch, heads, seq, head_dim); cos, sin: (seq, head_dim) float32, or
// (batch, seq, head_dim) when rows sit at different positions (left padding).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// (rows, keys) bool, true where query i, at position first + i, must not see key j: j > first + i.
at::Tensor future_keys(int64_t rows, int64_t first, int64_t keys, c10::Device device);

// softmax(q k^T / sqrt(head_dim)) v with the scores masked to -inf where `hidden` is true (an
// undefined `hidden` masks nothing), in the reference's operations and order.
// q: (batch, heads, rows, hd); k, v: (batch, heads, keys, hd); hidden broadcasts to
// (batch, heads, rows, keys). Returns (batch, heads, rows, hd).
at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& hidden);

// Causal attention of `seq` new queries after `start` cached positions, through
// masked_attention a block of queries at a time over the keys that block can see.
// q: (batch, heads, seq, hd); k, v: (batch, heads, start + seq, hd). Returns (batch, heads, seq, hd).
// For prompts on the CPU, where SDPA's flash kernel converts bfloat16 to float32 for MKL and
// took 2-2.5x as long.
at::Tensor causal_attention_blocks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start);

// cos/sin of position * inverse frequency, computed on the CPU exactly as the reference builds
// its buffers, grown on demand instead of filled for all context_length positions up front.
class RopeTable {
 public:
  RopeTable(int64_t head_dim, double theta, int64_t max_length, c10::Device device);
  // cos, sin for positions [start, start + length): (length, head_dim) each, on the device.
  std::pair<at::Tensor, at::Tensor> slice(int64_t start, int64_t length);

 private:
  int64_t max_length_;
  c10::Device device_;
  at::Tensor inv_freq_;   // (head_dim / 2,) float32, CPU
  at::Tensor cos_, sin_;  // (rows, head_dim) float32, on the device
};

// What a step over left-padded rows needs: per-row positions and which keys each query sees.
struct Padding {
  at::Tensor cos, sin;  // (batch, seq, head_dim) float32 at each row's own positions
  at::Tensor visible;   // (batch, 1, seq, start + seq) bool: causal, minus the row's padding
};

// Builds the Padding of a step of `seq` tokens after `start` cached ones; pad: (batch,) counts.
Padding make_padding(const std::vector<int64_t>& pad, int64_t start, int64_t seq, RopeTable& rope, c10::Device device);

}  // namespace qwen3
