#include "parallel/shard.h"

#include <stdexcept>
#include <string>

namespace qwen3 {
namespace {

// Rows [rank * n / world, (rank + 1) * n / world) of dimension `dim`, as a tensor of their own
// (a slice of rows alone would keep the whole storage alive).
at::Tensor part(const at::Tensor& t, int64_t dim, int rank, int world) {
  const int64_t n = t.size(dim) / world;
  return t.narrow(dim, rank * n, n).clone(at::MemoryFormat::Contiguous);
}

void check_divides(int64_t value, const char* what, int world) {
  if (value % world != 0) {
    throw std::invalid_argument("Tensor parallelism over " + std::to_string(world) + " devices needs " + what + " (" + std::to_string(value) +
                                ") to be a multiple of " + std::to_string(world));
  }
}

}  // namespace

void check_shardable(const ModelConfig& config, int world) {
  check_divides(config.n_kv_groups, "the number of key/value heads", world);
  check_divides(config.hidden_dim, "the feed-forward width", world);
  check_divides(config.vocab_size, "the vocabulary size", world);
}

ModelConfig shard_config(const ModelConfig& config, int world) {
  ModelConfig c = config;
  c.n_heads /= world;
  c.n_kv_groups /= world;
  c.hidden_dim /= world;
  return c;
}

Weights shard_weights(Weights&& whole, const ModelConfig& config, int rank, int world) {
  Weights w;
  w.tok_emb = std::move(whole.tok_emb);
  w.final_norm = std::move(whole.final_norm);
  // A tied head is a slice of rows of the embedding table: a view, no copy.
  const bool tied = whole.out_head.is_same(w.tok_emb);
  const int64_t vocab_part = config.vocab_size / world;
  w.out_head = tied ? w.tok_emb.narrow(0, rank * vocab_part, vocab_part) : part(whole.out_head, 0, rank, world);
  whole.out_head = at::Tensor();
  for (BlockWeights& b : whole.blocks) {
    BlockWeights s;
    s.w_query = part(b.w_query, 0, rank, world);    // (heads / world * hd, emb_dim)
    s.w_key = part(b.w_key, 0, rank, world);        // (groups / world * hd, emb_dim)
    s.w_value = part(b.w_value, 0, rank, world);    // (groups / world * hd, emb_dim)
    s.out_proj = part(b.out_proj, 1, rank, world);  // (emb_dim, heads / world * hd)
    s.fc1 = part(b.fc1, 0, rank, world);            // (hidden / world, emb_dim)
    s.fc2 = part(b.fc2, 0, rank, world);            // (hidden / world, emb_dim)
    s.fc3 = part(b.fc3, 1, rank, world);            // (emb_dim, hidden / world)
    s.q_norm = std::move(b.q_norm);
    s.k_norm = std::move(b.k_norm);
    s.norm1 = std::move(b.norm1);
    s.norm2 = std::move(b.norm2);
    b = BlockWeights();  // frees the whole block's matrices before the next block is cut
    w.blocks.push_back(std::move(s));
  }
  return w;
}

}  // namespace qwen3
