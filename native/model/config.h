// The architecture of a Qwen3 model. No torch here: the N-API files include it and must stay
// cheap to compile.
#pragma once

#include <cstdint>

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
  bool tie_word_embeddings = false;  // the vocabulary head is the embedding table (one tensor)
};

}  // namespace qwen3
