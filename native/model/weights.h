// Qwen3 weights on the device, read from a torch.save(state_dict) checkpoint in the reference
// implementation's layout or from Hugging Face safetensors files, and checked key by key
// against the config; or drawn at random on the device.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "model/step.h"

namespace qwen3 {

struct BlockWeights {
  at::Tensor w_query;   // (n_heads * head_dim, emb_dim)
  at::Tensor w_key;     // (n_kv_groups * head_dim, emb_dim)
  at::Tensor w_value;   // (n_kv_groups * head_dim, emb_dim)
  at::Tensor out_proj;  // (emb_dim, n_heads * head_dim)
  at::Tensor q_norm;    // (head_dim,) float32, like the reference's RMSNorm scale
  at::Tensor k_norm;    // (head_dim,) float32
  at::Tensor fc1;       // gate (hidden_dim, emb_dim)
  at::Tensor fc2;       // up   (hidden_dim, emb_dim)
  at::Tensor fc3;       // down (emb_dim, hidden_dim)
  at::Tensor norm1;     // (emb_dim,) float32
  at::Tensor norm2;     // (emb_dim,) float32
};

struct Weights {
  at::Tensor tok_emb;     // (vocab_size, emb_dim)
  std::vector<BlockWeights> blocks;
  at::Tensor final_norm;  // (emb_dim,) float32
  at::Tensor out_head;    // (vocab_size, emb_dim); the same tensor as tok_emb when the config ties them
};

// Matrices are cast to `dtype`; norm scales stay float32 as in the reference, where RMSNorm
// parameters are created in float32 and only the Linear/Embedding layers take cfg["dtype"].
// request.random_weights: drawn on the device from request.seed, nothing read; else
// request.files empty: the .pth at request.path; else the safetensors tensors listed.
// Files are read by several threads, each piece straight into its tensor where the device
// allows (docs/performance.md, "Loading").
Weights load_weights(const LoadRequest& request, at::ScalarType dtype, c10::Device device);

}  // namespace qwen3
